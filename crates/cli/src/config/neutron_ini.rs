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
    let ini = ini::Ini::load_from_file(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
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
    Ok(NeutronIni {
        upstream,
        insecure: default("nova_metadata_insecure").map(|v| v.eq_ignore_ascii_case("true")),
        ca_cert: default("auth_ca_cert").map(PathBuf::from),
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

/// `[metadata_rate_limiting]` of Neutron's ini (oslo.config's spellings:
/// True/False, `4,6`).
pub(crate) fn neutron_rate_limit(get: &dyn Fn(&str) -> Option<String>) -> Result<RateLimitSection> {
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
