//! The configuration file: one TOML file, a section per daemon. Every
//! key has a default, so an empty file (or none) is a working setup.

pub mod agent;
pub mod files;
pub mod neutron_ini;
pub mod serve;

use anyhow::{Context, Result};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::Path;

pub use serve::ServeSection;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub serve: ServeSection,
    #[serde(default)]
    pub agent: agent::AgentSection,
}

/// The configuration file used when none is given, if it exists.
pub const DEFAULT_CONFIG: &str = "/etc/meta169/meta169.toml";

/// Load `path`; without one, [`DEFAULT_CONFIG`] if it exists, else the
/// defaults.
pub fn load(path: Option<&Path>) -> Result<ConfigFile> {
    let default = Path::new(DEFAULT_CONFIG);
    let path = match path {
        Some(path) => path,
        None if default.exists() => default,
        None => return Ok(ConfigFile::default()),
    };
    tracing::debug!(config = %path.display(), "reading the configuration");
    let text = files::read_text(path, files::MAX_CONFIG_BYTES)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    parse(&text).with_context(|| format!("config file {} is not valid", path.display()))
}

/// A configuration file's text; unknown keys are refused.
pub fn parse(text: &str) -> Result<ConfigFile, toml::de::Error> {
    toml::from_str(text)
}

/// Open the store at `url` for a command; the message names the store
/// without its password.
pub async fn open_store(url: &str) -> Result<std::sync::Arc<dyn meta169_store::Store>> {
    meta169_store::open(url)
        .await
        .with_context(|| format!("cannot open store {}", meta169_store::redact(url)))
}

/// Read a secret file: its content without the trailing newline.
pub fn read_secret(path: &Path, what: &str) -> Result<String> {
    let text = files::read_text(path, files::MAX_SECRET_BYTES)
        .with_context(|| format!("cannot read {what} from {}", path.display()))?;
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

pub fn parse_addr(text: &str, what: &str) -> Result<SocketAddr> {
    text.parse().with_context(|| {
        format!("{what} {text:?} is not an address like 0.0.0.0:8775 or [::]:8775")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_parses() {
        let text = include_str!("../../../../docs/meta169.example.toml");
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
        let text: String = include_str!("../../../../docs/meta169.example.toml")
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
