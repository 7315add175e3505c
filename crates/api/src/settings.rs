//! Runtime settings of the API, resolved from configuration by the binary.

use crate::cache::{CacheLimits, DEFAULT_MAX_BYTES, DEFAULT_MAX_INSTANCES};
use ipnet::IpNet;
use meta169_http::access_log::AccessLog;
use meta169_http::address::canonical_ip;
use meta169_tree::RenderOptions;
use std::net::IpAddr;
use std::time::Duration;

/// Which ways of identifying a caller a listener accepts. Configuration,
/// never a guess: a guest must not choose its identity by sending headers.
#[derive(Clone, Debug)]
pub struct IdentitySettings {
    /// Signed `X-Instance-ID` headers from a trusted proxy (Nova mode 1).
    pub signed: bool,
    /// `X-OVN-Network-ID` / `X-Neutron-Network-ID` + `X-Forwarded-For`
    /// from a trusted proxy, looked up in the store's ports.
    pub by_address: bool,
    /// The TCP peer address (standalone, flat networks).
    pub by_source: bool,
    /// The TCP peer's MAC, from the kernel's neighbour table (standalone,
    /// flat networks where guests take any address by DHCP). Tried after
    /// `by_source` when both are on.
    pub by_mac: bool,
    /// Peers whose identity headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// `metadata_proxy_shared_secret`.
    pub shared_secret: Vec<u8>,
}

impl IdentitySettings {
    /// Whether a caller may be identified by its TCP peer (address or MAC).
    pub fn by_peer(&self) -> bool {
        self.by_source || self.by_mac
    }
}

impl Default for IdentitySettings {
    fn default() -> Self {
        IdentitySettings {
            signed: true,
            by_address: true,
            by_source: false,
            by_mac: false,
            trusted_proxies: default_trusted_proxies(),
            shared_secret: Vec::new(),
        }
    }
}

/// Loopback only: the proxy usually runs on the same host.
pub fn default_trusted_proxies() -> Vec<IpNet> {
    vec![
        "127.0.0.0/8".parse().expect("valid network"),
        "::1/128".parse().expect("valid network"),
    ]
}

impl IdentitySettings {
    pub fn is_trusted(&self, peer: IpAddr) -> bool {
        let peer = canonical_ip(peer);
        self.trusted_proxies.iter().any(|net| within(net, peer))
    }
}

/// Is `address` in `net`? Compared by the prefix's bits: ipnet's
/// `contains` builds the network's first and last addresses for every
/// test, ~20 ns of every signed request in the profile.
fn within(net: &IpNet, address: IpAddr) -> bool {
    match (net, address) {
        (IpNet::V4(net), IpAddr::V4(address)) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(net.prefix_len()))
                .unwrap_or(0);
            (u32::from(net.addr()) ^ u32::from(address)) & mask == 0
        }
        (IpNet::V6(net), IpAddr::V6(address)) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(net.prefix_len()))
                .unwrap_or(0);
            (u128::from(net.addr()) ^ u128::from(address)) & mask == 0
        }
        _ => false,
    }
}

/// One dynamic vendordata target (`name@url`).
#[derive(Clone, Debug, PartialEq)]
pub struct DynamicTarget {
    pub name: String,
    pub url: String,
}

impl DynamicTarget {
    /// Parse Nova's `name@url` form.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (name, url) = text
            .split_once('@')
            .ok_or_else(|| format!("vendordata target {text:?} is not of the form name@url"))?;
        if name.is_empty() || url.is_empty() {
            return Err(format!(
                "vendordata target {text:?} needs both a name and a url"
            ));
        }
        if name == "static" {
            return Err("a vendordata target cannot be named \"static\": that key holds the static document".into());
        }
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!(
                "vendordata target {name}: url {url:?} must start with http:// or https://"
            ));
        }
        Ok(DynamicTarget {
            name: name.to_string(),
            url: url.to_string(),
        })
    }
}

/// Nova's default `metadata_cache_expiration`.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(15);

/// Default of [`ApiSettings::max_staleness`].
pub const DEFAULT_MAX_STALENESS: Duration = Duration::from_secs(10);

/// Everything the metadata handler needs to know.
#[derive(Clone, Debug)]
pub struct ApiSettings {
    pub identity: IdentitySettings,
    pub render: RenderOptions,
    /// How long a loaded record (and its dynamic vendordata) is served
    /// before the store is asked again (Nova's `metadata_cache_expiration`),
    /// and how much is cached.
    pub cache: CacheLimits,
    /// Readiness fails once the cache may have missed changes for longer
    /// than this (the store unreachable): a load balancer then stops
    /// sending guests to a replica that could be serving stale trees.
    pub max_staleness: Duration,
    pub dynamic_targets: Vec<DynamicTarget>,
    pub dynamic_connect_timeout: Duration,
    pub dynamic_read_timeout: Duration,
    /// Which guest requests get a log line.
    pub access_log: AccessLog,
    /// IMDSv2-style session tokens.
    pub tokens: crate::token::TokenSettings,
    /// The format of NoCloud's `network-config` at `/nocloud/`.
    pub nocloud_network_config: meta169_tree::nocloud::NetworkConfigVersion,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            identity: IdentitySettings::default(),
            render: RenderOptions::default(),
            cache: CacheLimits {
                ttl: DEFAULT_CACHE_TTL,
                max_instances: DEFAULT_MAX_INSTANCES,
                max_bytes: DEFAULT_MAX_BYTES,
            },
            max_staleness: DEFAULT_MAX_STALENESS,
            dynamic_targets: Vec::new(),
            dynamic_connect_timeout: Duration::from_secs(5),
            dynamic_read_timeout: Duration::from_secs(5),
            access_log: AccessLog::default(),
            tokens: crate::token::TokenSettings::default(),
            nocloud_network_config: Default::default(),
        }
    }
}

pub use meta169_http::ServerLimits;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_like_nova() {
        assert_eq!(
            DynamicTarget::parse("testing@http://127.0.0.1:9000/a@b").unwrap(),
            DynamicTarget {
                name: "testing".into(),
                url: "http://127.0.0.1:9000/a@b".into()
            }
        );
        assert!(DynamicTarget::parse("nourl").is_err());
        assert!(DynamicTarget::parse("static@http://x").is_err());
        assert!(DynamicTarget::parse("x@ftp://x").is_err());
    }

    #[test]
    fn trust_covers_mapped_addresses() {
        let s = IdentitySettings::default();
        assert!(s.is_trusted("127.0.0.1".parse().unwrap()));
        assert!(s.is_trusted("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!s.is_trusted("10.0.0.5".parse().unwrap()));
        // The prefix's bits, as ipnet counts them.
        for net in [
            "0.0.0.0/0",
            "10.0.0.0/8",
            "10.1.2.3/32",
            "10.1.2.0/23",
            "::/0",
            "fd00::/8",
            "fd00::1/128",
            "fd00:0:0:1::/63",
        ] {
            let net: IpNet = net.parse().unwrap();
            for address in [
                "10.0.0.5",
                "10.1.2.3",
                "10.1.3.255",
                "10.1.4.0",
                "11.0.0.0",
                "fd00::1",
                "fd00:0:0:1::9",
                "fd00:0:0:2::",
                "fe80::1",
            ] {
                let address: IpAddr = address.parse().unwrap();
                assert_eq!(
                    within(&net, address),
                    net.contains(&address),
                    "{address} in {net}"
                );
            }
        }
    }
}
