//! meta169's agent, one per compute node: it watches the OVN Southbound
//! database for the VM ports bound to this chassis, plumbs an
//! `ovnmeta-<network>` namespace with a veth into the integration bridge
//! for each network that needs metadata, listens on 169.254.169.254:80 in
//! it (no haproxy), and forwards each guest's request to the metadata API
//! with Neutron's signed headers. It renders nothing itself.

pub mod agent;
pub mod net;
pub mod netns;
pub mod ovs;
pub mod pipeline;
pub mod proxy;
pub mod ratelimit;
pub mod sb;
pub mod status;

pub use agent::{Agent, AgentSettings, BridgeMode};
pub use proxy::{Pipelining, Upstream};
pub use ratelimit::RateLimits;

/// The runtime the agent runs on: one thread. Its work is system calls
/// (guest sockets, the upstream, netlink, OVSDB); with more threads each
/// request would hop between them (a guest's task and the upstream lane),
/// which `meta169 bench agent` measured at about a third more CPU per
/// request. One thread proxies tens of thousands of requests a second,
/// far beyond a compute node's guests. Blocking work (namespace switches)
/// runs on the runtime's blocking threads.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// What stops the agent. Each message says what to check.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A database could not be reached or refused a write.
    #[error("{what}: {reason}")]
    Database { what: String, reason: String },
    /// Configuration that cannot work.
    #[error("{0}")]
    Config(String),
    /// Netlink, namespaces or sockets failed.
    #[error("{0}")]
    Netlink(#[from] std::io::Error),
}
