//! `[serve]` of the configuration file, resolved into the API's settings.

use super::read_secret;
use anyhow::{bail, Context, Result};
use ipnet::IpNet;
use meta169_api::cache::{CacheLimits, DEFAULT_MAX_BYTES, DEFAULT_MAX_INSTANCES};
use meta169_api::settings::{DEFAULT_CACHE_TTL, DEFAULT_MAX_STALENESS};
use meta169_api::token::{TokenKeys, TokenMode, TokenSettings};
use meta169_api::{ApiSettings, DynamicTarget, IdentitySettings, ServerLimits};
use meta169_tree::nocloud::NetworkConfigVersion;
use meta169_tree::RenderOptions;
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub const DEFAULT_LISTEN: &str = "0.0.0.0:8775";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8776";
/// Metrics, health and readiness, for the machine's own monitoring.
pub const DEFAULT_OPS_LISTEN: &str = "127.0.0.1:8777";
const MIB: usize = 1 << 20;
pub const DEFAULT_STORE: &str = "sqlite:///var/lib/meta169/meta169.db";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeSection {
    pub listen: String,
    /// `/metrics`, `/healthz`, `/readyz`; empty for none.
    pub ops_listen: String,
    /// Guest requests logged: off, errors, all.
    pub access_log: String,
    pub store: String,
    pub dhcp_domain: String,
    pub cache_seconds: u64,
    pub cache_max_instances: usize,
    pub cache_max_mib: usize,
    pub max_staleness_seconds: u64,
    pub identity: IdentitySection,
    pub admin: AdminSection,
    pub vendordata: VendordataSection,
    pub limits: LimitsSection,
    pub tokens: TokensSection,
    /// NoCloud's `network-config` at `/nocloud/`: network config version
    /// 1 (default) or 2.
    pub nocloud_network_config: NetworkConfigVersion,
}

/// `[serve.tokens]`: IMDSv2-style session tokens.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokensSection {
    /// `optional` (default) or `required`; a record's `metadata_tokens`
    /// overrides it for that instance.
    pub mode: TokenMode,
    /// One or two lines of 64 hex digits (current key, then the previous
    /// one during a rotation). Without it, a random key per process:
    /// tokens then end with a restart and differ between replicas.
    pub key_file: Option<PathBuf>,
}

impl Default for ServeSection {
    fn default() -> Self {
        ServeSection {
            listen: DEFAULT_LISTEN.into(),
            ops_listen: DEFAULT_OPS_LISTEN.into(),
            access_log: "errors".into(),
            store: DEFAULT_STORE.into(),
            dhcp_domain: "novalocal".into(),
            cache_seconds: DEFAULT_CACHE_TTL.as_secs(),
            cache_max_instances: DEFAULT_MAX_INSTANCES,
            cache_max_mib: DEFAULT_MAX_BYTES / MIB,
            max_staleness_seconds: DEFAULT_MAX_STALENESS.as_secs(),
            identity: IdentitySection::default(),
            admin: AdminSection::default(),
            vendordata: VendordataSection::default(),
            limits: LimitsSection::default(),
            tokens: TokensSection::default(),
            nocloud_network_config: NetworkConfigVersion::default(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentitySection {
    pub signed: bool,
    pub by_address: bool,
    pub by_source: bool,
    /// The peer's MAC from the neighbour table (guests on a flat network
    /// with addresses from DHCP).
    pub by_mac: bool,
    pub trusted_proxies: Vec<IpNet>,
    pub shared_secret_file: Option<PathBuf>,
}

impl Default for IdentitySection {
    fn default() -> Self {
        let d = IdentitySettings::default();
        IdentitySection {
            signed: d.signed,
            by_address: d.by_address,
            by_source: d.by_source,
            by_mac: d.by_mac,
            trusted_proxies: d.trusted_proxies,
            shared_secret_file: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    pub listen: String,
    pub token_file: Option<PathBuf>,
}

impl Default for AdminSection {
    fn default() -> Self {
        AdminSection {
            listen: DEFAULT_ADMIN_LISTEN.into(),
            token_file: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VendordataSection {
    pub static_enabled: bool,
    pub static_file: Option<PathBuf>,
    pub dynamic_targets: Vec<String>,
    pub dynamic_connect_timeout_ms: u64,
    pub dynamic_read_timeout_ms: u64,
}

impl Default for VendordataSection {
    fn default() -> Self {
        VendordataSection {
            static_enabled: true,
            static_file: None,
            dynamic_targets: Vec::new(),
            dynamic_connect_timeout_ms: 5000,
            dynamic_read_timeout_ms: 5000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    pub header_read_timeout_ms: u64,
    pub body_read_timeout_ms: u64,
    pub max_head_bytes: usize,
    pub max_connections: usize,
    pub max_connections_per_source: usize,
}

impl Default for LimitsSection {
    fn default() -> Self {
        let d = ServerLimits::default();
        LimitsSection {
            header_read_timeout_ms: d.header_read_timeout.as_millis() as u64,
            body_read_timeout_ms: d.body_read_timeout.as_millis() as u64,
            max_head_bytes: d.max_head_bytes,
            max_connections: d.max_connections,
            max_connections_per_source: d.max_connections_per_source,
        }
    }
}

impl ServeSection {
    pub fn limits(&self) -> ServerLimits {
        ServerLimits {
            header_read_timeout: Duration::from_millis(self.limits.header_read_timeout_ms),
            body_read_timeout: Duration::from_millis(self.limits.body_read_timeout_ms),
            max_head_bytes: self.limits.max_head_bytes,
            max_connections: self.limits.max_connections,
            max_connections_per_source: self.limits.max_connections_per_source,
            unlimited_sources: Vec::new(),
            batch_pipelined_answers: false,
            honour_hop_limits: false,
            quick_path: true,
        }
    }

    /// Resolve files and validate into the API's settings.
    pub fn api_settings(&self) -> Result<ApiSettings> {
        let id = &self.identity;
        if !(id.signed || id.by_address || id.by_source || id.by_mac) {
            bail!("[serve.identity] enables no way to identify callers: set signed, by_address, by_source or by_mac to true");
        }
        if self.cache_max_instances == 0 || self.cache_max_mib == 0 {
            bail!("[serve] cache_max_instances and cache_max_mib must be at least 1; to turn caching off set cache_seconds = 0");
        }
        if self.max_staleness_seconds == 0 {
            bail!("[serve] max_staleness_seconds must be at least 1 (the store's change feed is confirmed about once a second)");
        }
        let shared_secret = match &id.shared_secret_file {
            Some(path) => read_secret(path, "the shared secret")?.into_bytes(),
            None => Vec::new(),
        };
        let vendor_static = if self.vendordata.static_enabled {
            let doc = match &self.vendordata.static_file {
                Some(path) => {
                    let text = super::files::read_text(path, super::files::MAX_CONFIG_BYTES)
                        .with_context(|| {
                            format!("cannot read vendordata static_file {}", path.display())
                        })?;
                    serde_json::from_str(&text).with_context(|| {
                        format!(
                            "vendordata static_file {} is not valid JSON",
                            path.display()
                        )
                    })?
                }
                None => serde_json::json!({}),
            };
            Some(Arc::new(doc))
        } else {
            None
        };
        let mut dynamic_targets: Vec<DynamicTarget> = Vec::new();
        for text in &self.vendordata.dynamic_targets {
            let target = DynamicTarget::parse(text).map_err(anyhow::Error::msg)?;
            if dynamic_targets.iter().any(|t| t.name == target.name) {
                bail!("vendordata target name {:?} is used twice", target.name);
            }
            dynamic_targets.push(target);
        }
        Ok(ApiSettings {
            identity: IdentitySettings {
                signed: id.signed,
                by_address: id.by_address,
                by_source: id.by_source,
                by_mac: id.by_mac,
                trusted_proxies: id.trusted_proxies.clone(),
                shared_secret,
            },
            render: RenderOptions {
                dhcp_domain: self.dhcp_domain.clone(),
                vendor_static,
            },
            cache: CacheLimits {
                ttl: Duration::from_secs(self.cache_seconds),
                max_instances: self.cache_max_instances,
                max_bytes: self.cache_max_mib.saturating_mul(MIB),
            },
            max_staleness: Duration::from_secs(self.max_staleness_seconds),
            dynamic_targets,
            // Nova's floor for the connect timeout is 3 s; we accept less for tests.
            dynamic_connect_timeout: Duration::from_millis(
                self.vendordata.dynamic_connect_timeout_ms,
            ),
            dynamic_read_timeout: Duration::from_millis(self.vendordata.dynamic_read_timeout_ms),
            access_log: self
                .access_log
                .parse()
                .map_err(|e: String| anyhow::anyhow!("[serve] {e}"))?,
            tokens: self.tokens.settings()?,
            nocloud_network_config: self.nocloud_network_config,
        })
    }
}

impl TokensSection {
    fn settings(&self) -> Result<TokenSettings> {
        let keys = match &self.key_file {
            Some(path) => {
                let text = super::files::read_text(path, super::files::MAX_SECRET_BYTES)
                    .with_context(|| {
                        format!("cannot read [serve.tokens] key_file {}", path.display())
                    })?;
                TokenKeys::parse(&text).with_context(|| {
                    format!("[serve.tokens] key_file {} is not valid", path.display())
                })?
            }
            None => TokenKeys::ephemeral(),
        };
        Ok(TokenSettings {
            mode: self.mode,
            keys: Arc::new(keys),
        })
    }
}
