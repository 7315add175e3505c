//! The open-file limit. Every connection is a file descriptor; under the
//! common soft limit of 1024 a listener capped at 4096 connections really
//! stops near 1,000, with `accept` failing "Too many open files". The soft
//! limit is raised to the hard limit at start (what the kernel lets any
//! process do), and a server whose configured connection cap cannot fit
//! even then refuses to start, saying which two numbers to reconcile.

use anyhow::{bail, Result};

/// Descriptors kept beside the connections: store and log files, the
/// database pool, the runtime's own, other listeners.
pub const FD_RESERVE: u64 = 256;

/// Raise the soft open-file limit to the hard one; the limit now in force.
pub fn raise() -> Result<u64> {
    let (soft, hard) = rlimit::Resource::NOFILE.get()?;
    if soft < hard {
        rlimit::Resource::NOFILE.set(hard, hard)?;
        tracing::debug!(from = soft, to = hard, "open-file limit raised");
    }
    Ok(hard)
}

/// [`raise`], then check that `connections` (plus [`FD_RESERVE`]) fit.
pub fn ensure(connections: usize, setting: &str) -> Result<()> {
    let limit = raise()?;
    let needed = connections as u64 + FD_RESERVE;
    if limit < needed {
        bail!(
            "{setting} = {connections} needs about {needed} open files, but the hard open-file limit is {limit}: \
             raise it (LimitNOFILE= in the systemd unit, or `ulimit -Hn`) or lower {setting}"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_reaches_the_hard_one() {
        let hard = raise().unwrap();
        let (soft, now_hard) = rlimit::Resource::NOFILE.get().unwrap();
        assert_eq!((soft, now_hard), (hard, hard));
        assert!(ensure(1, "max_connections").is_ok());
        let error = ensure(usize::MAX / 2, "[serve.limits] max_connections")
            .unwrap_err()
            .to_string();
        assert!(error.contains("hard open-file limit is"), "{error}");
    }
}
