//! Reading the files an operator names (configuration, secrets, records,
//! files to inject): regular files only, and never more than a bound, so a
//! FIFO, a device or `/dev/zero` given by mistake is refused at once
//! instead of hanging or filling memory.

use anyhow::{bail, Context, Result};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Largest configuration file (TOML, Neutron ini, vendordata JSON).
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;
/// Largest secret (shared secret, token, admin password).
pub const MAX_SECRET_BYTES: u64 = 64 * 1024;
/// Largest instance record file: user data's 64 KiB in base64 and far
/// more than any other field needs.
pub const MAX_RECORD_BYTES: u64 = 4 * 1024 * 1024;

/// The whole of a regular file of at most `limit` bytes.
pub fn read_bytes(path: &Path, limit: u64) -> Result<Vec<u8>> {
    // O_NONBLOCK: opening a FIFO would otherwise wait for a writer. It
    // changes nothing for a regular file's reads.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        bail!(
            "{} is not a regular file (a directory, FIFO, socket or device); give a file",
            path.display()
        );
    }
    if meta.len() > limit {
        bail!(
            "{} is {} bytes; the limit is {limit} bytes",
            path.display(),
            meta.len()
        );
    }
    let mut data = Vec::with_capacity(meta.len() as usize);
    // The file may grow while read: read one byte past the limit to notice.
    file.take(limit + 1).read_to_end(&mut data)?;
    if data.len() as u64 > limit {
        bail!("{} grew past {limit} bytes while read", path.display());
    }
    Ok(data)
}

/// As [`read_bytes`], as UTF-8 text.
pub fn read_text(path: &Path, limit: u64) -> Result<String> {
    String::from_utf8(read_bytes(path, limit)?)
        .with_context(|| format!("{} is not UTF-8 text", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bounded_regular_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let small = dir.path().join("small");
        std::fs::write(&small, b"abc").unwrap();
        assert_eq!(read_bytes(&small, 3).unwrap(), b"abc");
        let error = read_bytes(&small, 2).unwrap_err().to_string();
        assert!(
            error.contains("is 3 bytes; the limit is 2 bytes"),
            "{error}"
        );
        let error = read_bytes(Path::new("/dev/zero"), 10)
            .unwrap_err()
            .to_string();
        assert!(error.contains("not a regular file"), "{error}");
        let error = read_bytes(dir.path(), 10).unwrap_err().to_string();
        assert!(error.contains("not a regular file"), "{error}");
        // A FIFO with no writer: refused at once, not waited on.
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let error = read_bytes(&fifo, 10).unwrap_err().to_string();
        assert!(error.contains("not a regular file"), "{error}");
    }
}
