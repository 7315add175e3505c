//! What a running agent is told: where the databases are, which bridge,
//! which upstream, which sockets, which limits.

use crate::ratelimit::RateLimits;
use crate::upstream::Upstream;
use meta169_http::access_log::AccessLog;
use meta169_http::ServerLimits;
use meta169_ovsdb::Remote;
use std::path::PathBuf;
use std::time::Duration;

/// Where the outer veth ends go.
#[derive(Clone, Debug, PartialEq)]
pub enum BridgeMode {
    /// An OVS bridge, through the local Open_vSwitch database; `None`: the
    /// chassis' `ovn-bridge` (default `br-int`).
    Ovs(Option<String>),
    /// A Linux bridge, by name.
    Linux(String),
}

impl std::fmt::Display for BridgeMode {
    /// As `--bridge` takes it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BridgeMode::Ovs(None) => write!(f, "ovs (the chassis' ovn-bridge)"),
            BridgeMode::Ovs(Some(name)) => write!(f, "ovs:{name}"),
            BridgeMode::Linux(name) => write!(f, "linux:{name}"),
        }
    }
}

/// Most random delay before writing a new sb-cfg (Neutron's herd guard).
pub const DEFAULT_SB_CFG_MAX_DELAY: Duration = Duration::from_secs(3);
/// A full re-check of everything this often, besides every change.
pub const DEFAULT_RESYNC_INTERVAL: Duration = Duration::from_secs(60);
/// The haproxy socket's mode when none is configured (Neutron's `user`).
pub const DEFAULT_HAPROXY_SOCKET_MODE: u32 = 0o644;
/// The IP TTL / hop limit of session-token answers at the guest
/// listeners: AWS's default `HttpPutResponseHopLimit`, so a container or
/// proxy inside the guest (one routed hop further) never receives a token.
pub const DEFAULT_TOKEN_HOP_LIMIT: u8 = 1;

#[derive(Clone, Debug)]
pub struct AgentSettings {
    pub sb: Remote,
    /// Further members of a clustered Southbound, tried in turn.
    pub sb_more: Vec<Remote>,
    pub ovs: Remote,
    /// This chassis' name; `None`: `system-id` from the Open_vSwitch database.
    pub chassis: Option<String>,
    pub bridge: BridgeMode,
    pub upstream: Upstream,
    /// haproxy-compatible UNIX socket (`X-OVN-Network-ID`), if wanted.
    pub haproxy_socket: Option<PathBuf>,
    /// Its file mode: haproxy must be able to write to it (Neutron's
    /// `metadata_proxy_socket_mode`: user 0644, group 0664, all 0666).
    pub haproxy_socket_mode: u32,
    /// Status socket for `meta169 trace`.
    pub status_socket: Option<PathBuf>,
    pub limits: ServerLimits,
    /// Configure fe80::a9fe:a9fe where a network has IPv6 guests.
    pub ipv6: bool,
    /// Most random delay before writing a new sb-cfg (Neutron's herd guard).
    pub sb_cfg_max_delay: Duration,
    /// A full re-check of everything this often, besides every change.
    pub resync_interval: Duration,
    /// Per-guest request rate limits (Neutron's `[metadata_rate_limiting]`);
    /// none by default, as in Neutron.
    pub rate_limits: Option<RateLimits>,
    /// Which guest requests get a log line.
    pub access_log: AccessLog,
    /// IP TTL / hop limit of session-token answers at the namespace
    /// listeners; `None` leaves the system's default.
    pub token_hop_limit: Option<u8>,
}

impl AgentSettings {
    pub fn new(sb: Remote, ovs: Remote, upstream: Upstream) -> Self {
        AgentSettings {
            sb,
            sb_more: Vec::new(),
            ovs,
            chassis: None,
            bridge: BridgeMode::Ovs(None),
            upstream,
            haproxy_socket: None,
            haproxy_socket_mode: DEFAULT_HAPROXY_SOCKET_MODE,
            status_socket: None,
            limits: ServerLimits::default(),
            ipv6: true,
            sb_cfg_max_delay: DEFAULT_SB_CFG_MAX_DELAY,
            resync_interval: DEFAULT_RESYNC_INTERVAL,
            rate_limits: None,
            access_log: AccessLog::default(),
            token_hop_limit: Some(DEFAULT_TOKEN_HOP_LIMIT),
        }
    }

    /// Every Southbound remote, the first first.
    pub fn sb_remotes(&self) -> Vec<Remote> {
        std::iter::once(self.sb.clone())
            .chain(self.sb_more.iter().cloned())
            .collect()
    }
}
