//! The configuration file: one TOML file, a section per subcommand. Every
//! key has a default, so an empty file (or none) is a working setup.

use anyhow::{bail, Context, Result};
use ipnet::IpNet;
use meta169_api::{ApiSettings, DynamicTarget, IdentitySettings, ServerLimits};
use meta169_tree::RenderOptions;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub const DEFAULT_LISTEN: &str = "0.0.0.0:8775";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8776";
pub const DEFAULT_STORE: &str = "sqlite:///var/lib/meta169/meta169.db";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub serve: ServeSection,
    #[serde(default)]
    pub agent: crate::agent::AgentSection,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeSection {
    pub listen: String,
    pub store: String,
    pub dhcp_domain: String,
    pub cache_seconds: u64,
    pub identity: IdentitySection,
    pub admin: AdminSection,
    pub vendordata: VendordataSection,
    pub limits: LimitsSection,
}

impl Default for ServeSection {
    fn default() -> Self {
        ServeSection {
            listen: DEFAULT_LISTEN.into(),
            store: DEFAULT_STORE.into(),
            dhcp_domain: "novalocal".into(),
            cache_seconds: 15,
            identity: IdentitySection::default(),
            admin: AdminSection::default(),
            vendordata: VendordataSection::default(),
            limits: LimitsSection::default(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentitySection {
    pub signed: bool,
    pub by_address: bool,
    pub by_source: bool,
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
}

impl Default for LimitsSection {
    fn default() -> Self {
        let d = ServerLimits::default();
        LimitsSection {
            header_read_timeout_ms: d.header_read_timeout.as_millis() as u64,
            body_read_timeout_ms: d.body_read_timeout.as_millis() as u64,
            max_head_bytes: d.max_head_bytes,
            max_connections: d.max_connections,
        }
    }
}

/// Load the file, or defaults when no file is given.
pub fn load(path: Option<&Path>) -> Result<ConfigFile> {
    let Some(path) = path else {
        return Ok(ConfigFile::default());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("config file {} is not valid", path.display()))
}

/// Read a secret file: its content without the trailing newline.
pub fn read_secret(path: &Path, what: &str) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {what} from {}", path.display()))?;
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

pub fn parse_addr(text: &str, what: &str) -> Result<SocketAddr> {
    text.parse().with_context(|| {
        format!("{what} {text:?} is not an address like 0.0.0.0:8775 or [::]:8775")
    })
}

impl ServeSection {
    pub fn limits(&self) -> ServerLimits {
        ServerLimits {
            header_read_timeout: Duration::from_millis(self.limits.header_read_timeout_ms),
            body_read_timeout: Duration::from_millis(self.limits.body_read_timeout_ms),
            max_head_bytes: self.limits.max_head_bytes,
            max_connections: self.limits.max_connections,
            batch_pipelined_answers: false,
        }
    }

    /// Resolve files and validate into the API's settings.
    pub fn api_settings(&self) -> Result<ApiSettings> {
        let id = &self.identity;
        if !(id.signed || id.by_address || id.by_source) {
            bail!("[serve.identity] enables no way to identify callers: set signed, by_address or by_source to true");
        }
        let shared_secret = match &id.shared_secret_file {
            Some(path) => read_secret(path, "the shared secret")?.into_bytes(),
            None => Vec::new(),
        };
        if id.signed && shared_secret.is_empty() {
            tracing::warn!("signed identification is on with an empty shared secret: anyone who can reach the API as a trusted proxy can sign; set [serve.identity] shared_secret_file");
        }
        let vendor_static = if self.vendordata.static_enabled {
            let doc = match &self.vendordata.static_file {
                Some(path) => {
                    let text = std::fs::read_to_string(path).with_context(|| {
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
                trusted_proxies: id.trusted_proxies.clone(),
                shared_secret,
            },
            render: RenderOptions {
                dhcp_domain: self.dhcp_domain.clone(),
                vendor_static,
            },
            cache_ttl: Duration::from_secs(self.cache_seconds),
            dynamic_targets,
            // Nova's floor for the connect timeout is 3 s; we accept less for tests.
            dynamic_connect_timeout: Duration::from_millis(
                self.vendordata.dynamic_connect_timeout_ms,
            ),
            dynamic_read_timeout: Duration::from_millis(self.vendordata.dynamic_read_timeout_ms),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_parses() {
        let text = include_str!("../../../docs/meta169.example.toml");
        let config: ConfigFile = toml::from_str(text).unwrap();
        assert_eq!(config.serve.listen, "0.0.0.0:8775");
        assert!(
            config.agent.ovn_sb.is_none(),
            "agent keys are commented examples"
        );
    }

    #[test]
    fn every_commented_example_key_exists() {
        // Uncomment the example settings ("# key = value", "# [table]"),
        // leave the prose: unknown keys are refused, so a documented key
        // that does not exist fails here.
        let text: String = include_str!("../../../docs/meta169.example.toml")
            .lines()
            .map(|line| {
                let rest = line.strip_prefix("# ").unwrap_or("");
                let is_table = rest.starts_with('[') && rest.ends_with(']') && !rest.contains(' ');
                let is_setting = is_table
                    || rest.split_once(" = ").is_some_and(|(key, _)| {
                        key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                    });
                if is_setting {
                    format!("{rest}\n")
                } else {
                    format!("{line}\n")
                }
            })
            .collect();
        let config: ConfigFile = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(config.agent.rate_limit.rate_limit_enabled, Some(true));
        assert_eq!(config.agent.upstream_pipelining.as_deref(), Some("auto"));
    }

    #[test]
    fn typos_are_reported() {
        let err = toml::from_str::<ConfigFile>("[serve]\nlisen = \"x\"\n").unwrap_err();
        assert!(err.to_string().contains("unknown field `lisen`"), "{err}");
    }
}
