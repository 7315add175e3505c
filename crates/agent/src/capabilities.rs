//! The Linux capabilities the agent needs, checked at start so a unit that
//! grants too few fails with a message naming what is missing, instead of
//! failing on every network later.

use caps::{CapSet, Capability};

/// What the agent needs, and what for (the meta169-agent unit grants
/// exactly these).
pub const NEEDED: &[(Capability, &str)] = &[
    (
        Capability::CAP_NET_ADMIN,
        "veths, addresses and bridge ports (netlink), checksum offload (ethtool)",
    ),
    (
        Capability::CAP_SYS_ADMIN,
        "creating and entering network namespaces and bind-mounting them under /run/netns",
    ),
    (
        Capability::CAP_NET_BIND_SERVICE,
        "listening on port 80 in each namespace",
    ),
];

/// Why the agent cannot run with its capabilities.
#[derive(Debug, thiserror::Error)]
pub enum CapabilityError {
    /// One or more are missing from the effective set.
    #[error("meta169 agent needs {0}; grant them (the meta169-agent unit's AmbientCapabilities=), or run it as root")]
    Missing(String),
    /// The effective set cannot be read.
    #[error("cannot read this process' capabilities: {0}")]
    Unreadable(String),
}

/// Fail unless every capability in [`NEEDED`] is effective.
pub fn check() -> Result<(), CapabilityError> {
    let effective = caps::read(None, CapSet::Effective)
        .map_err(|e| CapabilityError::Unreadable(e.to_string()))?;
    let missing: Vec<String> = NEEDED
        .iter()
        .filter(|(cap, _)| !effective.contains(cap))
        .map(|(cap, why)| format!("{cap} ({why})"))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(CapabilityError::Missing(missing.join(", ")))
    }
}
