//! An existing `neutron_ovn_metadata_agent.ini`, read for the keys
//! meta169's agent understands, so it can replace Neutron's agent in place.

use super::agent::RateLimitSection;
use anyhow::{Context, Result};
use meta169_ovsdb::TlsFiles;
use std::path::{Path, PathBuf};

/// What Neutron's ini says, in meta169's terms.
#[derive(Debug, Default, PartialEq)]
pub struct NeutronIni {
    pub upstream: Option<String>,
    pub insecure: Option<bool>,
    pub ca_cert: Option<PathBuf>,
    /// Mutual TLS to Nova (`nova_client_cert`, `nova_client_priv_key`).
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub shared_secret: Option<String>,
    pub haproxy_socket: Option<PathBuf>,
    pub haproxy_socket_mode: Option<String>,
    pub ovn_sb: Option<String>,
    pub tls: TlsFiles,
    pub ovs_db: Option<String>,
    pub rate_limit: RateLimitSection,
}

/// Read the keys of `neutron_ovn_metadata_agent.ini` meta169 understands.
pub fn read_neutron_ini(path: &Path) -> Result<NeutronIni> {
    let text = super::files::read_text(path, super::files::MAX_CONFIG_BYTES)
        .with_context(|| format!("cannot read {}", path.display()))?;
    parse_neutron_ini(&text, &path.display().to_string())
}

/// The keys of an ini file's `text` meta169 understands; `origin` names
/// the file in messages.
pub fn parse_neutron_ini(text: &str, origin: &str) -> Result<NeutronIni> {
    let ini = ini::Ini::load_from_str(text)
        .with_context(|| format!("{origin} is not a valid ini file"))?;
    let get = |section: Option<&str>, key: &str| -> Option<String> {
        ini.section(section)
            .and_then(|s| s.get(key))
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let default = |key: &str| get(Some("DEFAULT"), key).or_else(|| get(None, key));
    let host = default("nova_metadata_host");
    let port = default("nova_metadata_port");
    let protocol = default("nova_metadata_protocol");
    let upstream = if host.is_some() || port.is_some() || protocol.is_some() {
        let host = host.unwrap_or_else(|| "127.0.0.1".into());
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host
        };
        Some(format!(
            "{}://{}:{}",
            protocol.unwrap_or_else(|| "http".into()),
            host,
            port.unwrap_or_else(|| "8775".into())
        ))
    } else {
        None
    };
    let state_path = default("state_path").unwrap_or_else(|| "/var/lib/neutron".into());
    let sb = get(Some("ovn"), "ovn_sb_connection");
    let ignored = unused_keys(&ini);
    if !ignored.is_empty() {
        tracing::warn!(
            "{origin}: meta169 does not use {}; they are ignored (docs/agent.md lists the keys it reads)",
            ignored.join(", ")
        );
    }
    Ok(NeutronIni {
        upstream,
        insecure: default("nova_metadata_insecure").map(|v| v.eq_ignore_ascii_case("true")),
        ca_cert: default("auth_ca_cert").map(PathBuf::from),
        client_cert: default("nova_client_cert").map(PathBuf::from),
        client_key: default("nova_client_priv_key").map(PathBuf::from),
        shared_secret: default("metadata_proxy_shared_secret"),
        haproxy_socket: default("metadata_proxy_socket")
            .map(|s| PathBuf::from(s.replace("$state_path", &state_path))),
        haproxy_socket_mode: default("metadata_proxy_socket_mode"),
        ovn_sb: sb,
        tls: TlsFiles {
            private_key: get(Some("ovn"), "ovn_sb_private_key").map(PathBuf::from),
            certificate: get(Some("ovn"), "ovn_sb_certificate").map(PathBuf::from),
            ca_cert: get(Some("ovn"), "ovn_sb_ca_cert").map(PathBuf::from),
        },
        ovs_db: get(Some("ovs"), "ovsdb_connection"),
        rate_limit: neutron_rate_limit(&|key| get(Some("metadata_rate_limiting"), key))?,
    })
}

/// The keys read, by section (`DEFAULT` also holds keys outside any section).
const READ: &[(&str, &[&str])] = &[
    (
        "DEFAULT",
        &[
            "nova_metadata_host",
            "nova_metadata_port",
            "nova_metadata_protocol",
            "nova_metadata_insecure",
            "auth_ca_cert",
            "nova_client_cert",
            "nova_client_priv_key",
            "metadata_proxy_shared_secret",
            "metadata_proxy_socket",
            "metadata_proxy_socket_mode",
            "state_path",
        ],
    ),
    (
        "ovn",
        &[
            "ovn_sb_connection",
            "ovn_sb_private_key",
            "ovn_sb_certificate",
            "ovn_sb_ca_cert",
        ],
    ),
    ("ovs", &["ovsdb_connection"]),
    (
        "metadata_rate_limiting",
        &[
            "rate_limit_enabled",
            "ip_versions",
            "base_window_duration",
            "base_query_rate_limit",
            "burst_window_duration",
            "burst_query_rate_limit",
        ],
    ),
];

/// oslo.log's options: how Neutron's agent logs, not what it does; meta169
/// logs its own way (RUST_LOG, --log-format), so these are not worth a warning.
fn is_logging_key(key: &str) -> bool {
    const PREFIXES: &[&str] = &["log_", "logging_", "syslog_", "use_", "rate_limit_"];
    const KEYS: &[&str] = &[
        "debug",
        "verbose",
        "default_log_levels",
        "publish_errors",
        "instance_format",
        "instance_uuid_format",
        "fatal_deprecations",
        "watch_log_file",
    ];
    KEYS.contains(&key) || PREFIXES.iter().any(|p| key.starts_with(p))
}

/// `[section] key` of every key in the file meta169 does not read.
fn unused_keys(ini: &ini::Ini) -> Vec<String> {
    let mut unused = Vec::new();
    for (section, properties) in ini.iter() {
        let section = section.unwrap_or("DEFAULT");
        let read = READ
            .iter()
            .find(|(name, _)| *name == section)
            .map_or(&[][..], |(_, keys)| *keys);
        for (key, _) in properties.iter() {
            let logging = section == "DEFAULT" && is_logging_key(key);
            if !(read.contains(&key) || logging) {
                unused.push(format!("[{section}] {key}"));
            }
        }
    }
    unused
}

/// `[metadata_rate_limiting]` of Neutron's ini (oslo.config's spellings:
/// True/False, `4,6`).
pub fn neutron_rate_limit(get: &dyn Fn(&str) -> Option<String>) -> Result<RateLimitSection> {
    fn number<T: std::str::FromStr>(key: &str, text: Option<String>) -> Result<Option<T>> {
        text.map(|t| {
            t.parse::<T>().map_err(|_| {
                anyhow::anyhow!("[metadata_rate_limiting] {key} = {t:?} is not a number")
            })
        })
        .transpose()
    }
    let versions = get("ip_versions")
        .map(|text| {
            text.split(',')
                .map(|v| {
                    v.trim().parse::<u8>().map_err(|_| {
                        anyhow::anyhow!(
                            "[metadata_rate_limiting] ip_versions = {text:?}: list 4, 6 or both"
                        )
                    })
                })
                .collect::<Result<Vec<u8>>>()
        })
        .transpose()?;
    Ok(RateLimitSection {
        rate_limit_enabled: get("rate_limit_enabled").map(|v| v.eq_ignore_ascii_case("true")),
        ip_versions: versions,
        base_window_duration: number("base_window_duration", get("base_window_duration"))?,
        base_query_rate_limit: number("base_query_rate_limit", get("base_query_rate_limit"))?,
        burst_window_duration: number("burst_window_duration", get("burst_window_duration"))?,
        burst_query_rate_limit: number("burst_query_rate_limit", get("burst_query_rate_limit"))?,
    })
}
