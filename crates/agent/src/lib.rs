//! meta169's agent, one per compute node: it watches the OVN Southbound
//! for the VM ports bound to this chassis, plumbs an `ovnmeta-<network>`
//! namespace with a veth into the integration bridge for each network
//! that needs metadata, listens on 169.254.169.254:80 in it (no haproxy),
//! and forwards each guest's request to the metadata API with Neutron's
//! signed headers. It renders nothing itself.
//!
//! Two loops, apart:
//! - reconcile ([`reconcile`]): Southbound rows ([`sb`]) → a pure [`plan`]
//!   → side effects ([`plumb`]: [`netns`], [`net`], [`ovs`], [`listeners`]),
//!   plus Chassis_Private registration ([`register`]);
//! - serve ([`guest`]): listener → [`index`] → sign → [`upstream`], inside
//!   the tower stack of [`layers`] (error pages, [`ratelimit`], timeout,
//!   trace).
//!
//! [`diagnose`] explains one guest's path for `meta169 trace`.

pub mod capabilities;
pub mod diagnose;
pub mod error;
pub mod guest;
pub mod guest_error;
pub mod index;
pub mod layers;
pub mod listeners;
pub mod metrics;
pub mod net;
pub mod netns;
pub mod neutron;
pub mod ovs;
pub mod plan;
pub mod plumb;
pub mod port_holder;
pub mod proxy;
pub mod ratelimit;
pub mod reconcile;
pub mod register;
pub mod sb;
pub mod settings;
pub mod status;
pub mod upstream;

pub use error::AgentError;
pub use guest::{guest_service, haproxy_service};
pub use proxy::Proxy;
pub use ratelimit::RateLimits;
pub use reconcile::Agent;
pub use settings::{AgentSettings, BridgeMode};
pub use upstream::{Pipelining, Upstream};

/// The runtime the agent runs on: one thread. Its work is system calls
/// (guest sockets, the upstream, netlink, OVSDB); with more threads each
/// request would hop between them (a guest's task and the upstream lane),
/// which `meta169-bench agent` measured at about a third more CPU per
/// request. One thread proxies tens of thousands of requests a second,
/// far beyond a compute node's guests. Blocking work (namespace switches)
/// runs on the runtime's blocking threads.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}
