//! One metadata agent per node, as in production. An agent owns every
//! `ovnmeta-` namespace on its machine: at start it removes the ones its
//! Southbound does not know (as Neutron's agent does), so a second test's
//! agent starting meanwhile would take away the first one's namespace.
//! Tests that run an agent hold the slot while it runs; an exclusive file
//! lock serialises them across the threads of a test binary and across
//! binaries run side by side.

use std::fs::{File, OpenOptions};
use std::path::PathBuf;

/// The lock file's name in the system's temporary directory.
const LOCK_FILE: &str = "meta169-tests-agent.lock";

/// Held while a test's agent runs; released on drop (closing the file).
pub struct AgentSlot {
    _lock: File,
}

/// Wait until no other test runs an agent on this machine, then hold the
/// slot. Blocks the calling thread.
pub fn agent_slot() -> AgentSlot {
    let path: PathBuf = std::env::temp_dir().join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    file.lock()
        .unwrap_or_else(|e| panic!("cannot lock {}: {e}", path.display()));
    AgentSlot { _lock: file }
}
