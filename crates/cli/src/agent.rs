//! `meta169 agent` and `meta169 trace`: configuration (TOML `[agent]`, an
//! existing `neutron_ovn_metadata_agent.ini`, flags), running the agent,
//! and explaining one VM's metadata path.

use crate::config::{self, ConfigFile};
use anyhow::{bail, Context, Result};
use clap::Args;
use meta169_agent::{Agent, AgentSettings, BridgeMode, Pipelining, RateLimits, Upstream};
use meta169_ovsdb::{Remote, TlsFiles};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `[agent]` in the TOML file. Every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentSection {
    pub ovn_sb: Option<String>,
    pub ovn_sb_private_key: Option<PathBuf>,
    pub ovn_sb_certificate: Option<PathBuf>,
    pub ovn_sb_ca_cert: Option<PathBuf>,
    pub ovs_db: Option<String>,
    pub chassis: Option<String>,
    pub bridge: Option<String>,
    pub upstream: Option<String>,
    pub upstream_timeout_seconds: Option<u64>,
    pub upstream_insecure: Option<bool>,
    pub upstream_ca_cert: Option<PathBuf>,
    /// auto (pipeline once the upstream is meta169 serve), on, off.
    pub upstream_pipelining: Option<String>,
    pub shared_secret_file: Option<PathBuf>,
    pub haproxy_socket: Option<PathBuf>,
    /// user (0644), group (0664), all (0666), or an octal mode.
    pub haproxy_socket_mode: Option<String>,
    pub status_socket: Option<PathBuf>,
    pub ipv6: Option<bool>,
    /// Neutron's `[metadata_rate_limiting]`, same key names.
    pub rate_limit: RateLimitSection,
}

/// Per-guest request rate limits; keys as in Neutron's
/// `[metadata_rate_limiting]` (durations in seconds).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitSection {
    pub rate_limit_enabled: Option<bool>,
    pub ip_versions: Option<Vec<u8>>,
    pub base_window_duration: Option<u64>,
    pub base_query_rate_limit: Option<u32>,
    pub burst_window_duration: Option<u64>,
    pub burst_query_rate_limit: Option<u32>,
}

impl RateLimitSection {
    /// Each key from `self`, else from `fallback`.
    fn or(&self, fallback: &RateLimitSection) -> RateLimitSection {
        RateLimitSection {
            rate_limit_enabled: self.rate_limit_enabled.or(fallback.rate_limit_enabled),
            ip_versions: self.ip_versions.clone().or(fallback.ip_versions.clone()),
            base_window_duration: self.base_window_duration.or(fallback.base_window_duration),
            base_query_rate_limit: self
                .base_query_rate_limit
                .or(fallback.base_query_rate_limit),
            burst_window_duration: self
                .burst_window_duration
                .or(fallback.burst_window_duration),
            burst_query_rate_limit: self
                .burst_query_rate_limit
                .or(fallback.burst_query_rate_limit),
        }
    }

    /// The limits, if enabled; Neutron's defaults for keys not given.
    fn limits(&self) -> Result<Option<RateLimits>> {
        if !self.rate_limit_enabled.unwrap_or(false) {
            return Ok(None);
        }
        let defaults = RateLimits::default();
        let versions = self.ip_versions.clone().unwrap_or_else(|| vec![4]);
        if versions.is_empty() || versions.iter().any(|v| *v != 4 && *v != 6) {
            bail!("rate limit ip_versions {versions:?}: list 4, 6 or both");
        }
        let seconds = |value: Option<u64>, default: Duration, key: &str| -> Result<Duration> {
            match value {
                None => Ok(default),
                Some(0) => bail!("rate limit {key} must be at least 1 second"),
                Some(s) => Ok(Duration::from_secs(s)),
            }
        };
        let count = |value: Option<u32>, default: u32, key: &str| -> Result<u32> {
            match value {
                None => Ok(default),
                Some(0) => bail!("rate limit {key} must be at least 1 request"),
                Some(n) => Ok(n),
            }
        };
        Ok(Some(RateLimits {
            base_window: seconds(
                self.base_window_duration,
                defaults.base_window,
                "base_window_duration",
            )?,
            base_limit: count(
                self.base_query_rate_limit,
                defaults.base_limit,
                "base_query_rate_limit",
            )?,
            burst_window: seconds(
                self.burst_window_duration,
                defaults.burst_window,
                "burst_window_duration",
            )?,
            burst_limit: count(
                self.burst_query_rate_limit,
                defaults.burst_limit,
                "burst_query_rate_limit",
            )?,
            ipv4: versions.contains(&4),
            ipv6: versions.contains(&6),
        }))
    }
}

pub const DEFAULT_SB: &str = "tcp:127.0.0.1:6642";
pub const DEFAULT_OVS: &str = "unix:/var/run/openvswitch/db.sock";
pub const DEFAULT_UPSTREAM: &str = "http://127.0.0.1:8775";
pub const DEFAULT_STATUS_SOCKET: &str = "/run/meta169/agent.sock";

#[derive(Args, Clone)]
pub struct AgentArgs {
    /// meta169 configuration file (its [agent] section).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// An existing neutron_ovn_metadata_agent.ini to take settings from.
    #[arg(long)]
    pub neutron_config: Option<PathBuf>,
    /// OVN Southbound remote(s), comma-separated for a cluster (tcp:HOST:PORT,
    /// ssl:HOST:PORT, unix:PATH) [default: tcp:127.0.0.1:6642].
    #[arg(long)]
    pub ovn_sb: Option<String>,
    /// Local Open_vSwitch database remote [default: unix:/var/run/openvswitch/db.sock].
    #[arg(long)]
    pub ovs_db: Option<String>,
    /// This chassis' name [default: the Open_vSwitch system-id].
    #[arg(long)]
    pub chassis: Option<String>,
    /// The metadata API to forward to (meta169 serve or Nova), http:// or
    /// https:// [default: http://127.0.0.1:8775].
    #[arg(long)]
    pub upstream: Option<String>,
    /// File holding metadata_proxy_shared_secret (never on the command line).
    #[arg(long)]
    pub shared_secret_file: Option<PathBuf>,
    /// ovs:NAME, linux:NAME, or ovs (the chassis' ovn-bridge) [default: ovs].
    #[arg(long)]
    pub bridge: Option<String>,
    /// Also serve haproxy's X-OVN-Network-ID requests on this UNIX socket.
    #[arg(long)]
    pub haproxy_socket: Option<PathBuf>,
    /// Status socket `meta169 trace` reads [default: /run/meta169/agent.sock].
    #[arg(long)]
    pub status_socket: Option<PathBuf>,
}

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
fn neutron_rate_limit(get: &dyn Fn(&str) -> Option<String>) -> Result<RateLimitSection> {
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

/// Flags over TOML over Neutron's ini over defaults.
pub fn settings(args: &AgentArgs) -> Result<AgentSettings> {
    let file: ConfigFile = config::load(args.config.as_deref())?;
    let toml = file.agent;
    let neutron = match &args.neutron_config {
        Some(p) => read_neutron_ini(p)?,
        None => NeutronIni::default(),
    };
    let sb_text = args
        .ovn_sb
        .clone()
        .or(toml.ovn_sb.clone())
        .or(neutron.ovn_sb.clone())
        .unwrap_or_else(|| DEFAULT_SB.into());
    let tls = TlsFiles {
        private_key: toml
            .ovn_sb_private_key
            .clone()
            .or(neutron.tls.private_key.clone()),
        certificate: toml
            .ovn_sb_certificate
            .clone()
            .or(neutron.tls.certificate.clone()),
        ca_cert: toml.ovn_sb_ca_cert.clone().or(neutron.tls.ca_cert.clone()),
    };
    // A clustered Southbound is a comma-separated list, as in Neutron's ini.
    let mut sb_remotes = Vec::new();
    for text in sb_text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        sb_remotes.push(text.parse::<Remote>()?.with_tls(tls.clone()));
    }
    if sb_remotes.is_empty() {
        bail!("no OVN Southbound remote given");
    }
    let sb = sb_remotes.remove(0);
    let ovs: Remote = args
        .ovs_db
        .clone()
        .or(toml.ovs_db.clone())
        .or(neutron.ovs_db.clone())
        .unwrap_or_else(|| DEFAULT_OVS.into())
        .parse()?;
    let secret = match args
        .shared_secret_file
        .as_ref()
        .or(toml.shared_secret_file.as_ref())
    {
        Some(path) => config::read_secret(path, "the shared secret")?,
        None => neutron.shared_secret.clone().unwrap_or_default(),
    };
    if secret.is_empty() {
        tracing::warn!("no metadata_proxy_shared_secret configured: signatures use an empty key (set --shared-secret-file)");
    }
    let upstream_url = args
        .upstream
        .clone()
        .or(toml.upstream.clone())
        .or(neutron.upstream.clone())
        .unwrap_or_else(|| DEFAULT_UPSTREAM.into());
    if !(upstream_url.starts_with("http://") || upstream_url.starts_with("https://")) {
        bail!("upstream {upstream_url:?} must start with http:// or https://");
    }
    let bridge = match args.bridge.clone().or(toml.bridge.clone()).as_deref() {
        None | Some("ovs") => BridgeMode::Ovs(None),
        Some(b) => match b.split_once(':') {
            Some(("ovs", name)) if !name.is_empty() => BridgeMode::Ovs(Some(name.to_string())),
            Some(("linux", name)) if !name.is_empty() => BridgeMode::Linux(name.to_string()),
            _ => bail!("bridge {b:?} must be ovs, ovs:NAME or linux:NAME"),
        },
    };
    let upstream = Upstream {
        url: upstream_url,
        shared_secret: secret.into_bytes(),
        timeout: Duration::from_secs(toml.upstream_timeout_seconds.unwrap_or(60)),
        insecure: toml.upstream_insecure.or(neutron.insecure).unwrap_or(false),
        ca_cert: toml.upstream_ca_cert.clone().or(neutron.ca_cert.clone()),
        pipelining: match toml.upstream_pipelining.as_deref() {
            None => Pipelining::Auto,
            Some(text) => text.parse().map_err(anyhow::Error::msg)?,
        },
    };
    let mut s = AgentSettings::new(sb, ovs, upstream);
    s.sb_more = sb_remotes;
    s.chassis = args.chassis.clone().or(toml.chassis.clone());
    s.bridge = bridge;
    s.haproxy_socket_mode = socket_mode(
        toml.haproxy_socket_mode
            .as_deref()
            .or(neutron.haproxy_socket_mode.as_deref()),
    )?;
    s.haproxy_socket = args
        .haproxy_socket
        .clone()
        .or(toml.haproxy_socket.clone())
        .or(neutron.haproxy_socket.clone());
    s.status_socket = Some(
        args.status_socket
            .clone()
            .or(toml.status_socket.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATUS_SOCKET)),
    );
    s.ipv6 = toml.ipv6.unwrap_or(true);
    s.rate_limits = toml.rate_limit.or(&neutron.rate_limit).limits()?;
    Ok(s)
}

/// Neutron's `metadata_proxy_socket_mode` (or an octal mode) as file
/// permissions. `deduce` and unset mean `user`: meta169 runs no haproxy of
/// its own, and one run by root can write a 0644 socket.
fn socket_mode(text: Option<&str>) -> Result<u32> {
    Ok(match text.map(str::trim) {
        None | Some("deduce") | Some("user") => 0o644,
        Some("group") => 0o664,
        Some("all") => 0o666,
        Some(octal) => u32::from_str_radix(octal.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .with_context(|| {
                format!("socket mode {octal:?}: use user, group, all or an octal mode like 0660")
            })?,
    })
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}

pub async fn run(args: AgentArgs) -> Result<()> {
    let settings = settings(&args)?;
    tracing::info!(sb = %settings.sb, upstream = %settings.upstream.url, bridge = ?settings.bridge, "starting agent");
    let agent = Agent::start(settings).await?;
    agent.run(shutdown_signal()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neutron_ini_keys_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("neutron_ovn_metadata_agent.ini");
        std::fs::write(
            &path,
            "[DEFAULT]\nnova_metadata_host = 10.1.2.3\nnova_metadata_port = 8775\nnova_metadata_protocol = https\n\
             metadata_proxy_shared_secret = s3cret\nnova_metadata_insecure = True\nstate_path = /var/lib/neutron\n\
             metadata_proxy_socket = $state_path/metadata_proxy\n\n[ovs]\novsdb_connection = unix:/run/openvswitch/db.sock\n\n\
             [ovn]\novn_sb_connection = ssl:10.0.0.1:6642,ssl:10.0.0.2:6642\novn_sb_private_key = /etc/k.pem\n\n\
             [metadata_rate_limiting]\nrate_limit_enabled = True\nip_versions = 4,6\nbase_query_rate_limit = 30\n",
        )
        .unwrap();
        let ini = read_neutron_ini(&path).unwrap();
        assert_eq!(ini.upstream.as_deref(), Some("https://10.1.2.3:8775"));
        assert_eq!(ini.shared_secret.as_deref(), Some("s3cret"));
        assert_eq!(ini.insecure, Some(true));
        assert_eq!(
            ini.ovn_sb.as_deref(),
            Some("ssl:10.0.0.1:6642,ssl:10.0.0.2:6642")
        );
        assert_eq!(
            ini.haproxy_socket,
            Some(PathBuf::from("/var/lib/neutron/metadata_proxy"))
        );
        assert_eq!(ini.ovs_db.as_deref(), Some("unix:/run/openvswitch/db.sock"));
        assert_eq!(ini.tls.private_key, Some(PathBuf::from("/etc/k.pem")));
        let args = AgentArgs {
            config: None,
            neutron_config: Some(path),
            ovn_sb: Some("tcp:127.0.0.1:16642".into()),
            ovs_db: None,
            chassis: None,
            upstream: None,
            shared_secret_file: None,
            bridge: Some("linux:br-meta".into()),
            haproxy_socket: None,
            status_socket: None,
        };
        let s = settings(&args).unwrap();
        assert_eq!(
            s.sb.to_string(),
            "tcp:127.0.0.1:16642",
            "flags win over the ini"
        );
        assert!(s.sb_more.is_empty());
        let from_ini = settings(&AgentArgs {
            ovn_sb: None,
            ..args.clone()
        })
        .unwrap();
        assert_eq!(from_ini.sb.to_string(), "ssl:10.0.0.1:6642");
        let more: Vec<String> = from_ini.sb_more.iter().map(|r| r.to_string()).collect();
        assert_eq!(more, ["ssl:10.0.0.2:6642"]);
        assert_eq!(s.upstream.url, "https://10.1.2.3:8775");
        assert_eq!(s.upstream.shared_secret, b"s3cret");
        assert_eq!(s.bridge, BridgeMode::Linux("br-meta".into()));
        assert_eq!(socket_mode(Some("all")).unwrap(), 0o666);
        assert_eq!(socket_mode(Some("0660")).unwrap(), 0o660);
        assert_eq!(socket_mode(None).unwrap(), 0o644);
        assert!(socket_mode(Some("everyone")).is_err());
        assert_eq!(s.upstream.pipelining, Pipelining::Auto);
        assert_eq!(
            s.rate_limits,
            Some(RateLimits {
                base_limit: 30,
                ipv6: true,
                ..RateLimits::default()
            })
        );
    }

    #[test]
    fn upstream_pipelining_comes_from_the_toml_file() {
        let dir = tempfile::tempdir().unwrap();
        let args = |text: &str| {
            let path = dir.path().join("meta169.toml");
            std::fs::write(&path, format!("[agent]\n{text}\n")).unwrap();
            AgentArgs {
                config: Some(path),
                neutron_config: None,
                ovn_sb: None,
                ovs_db: None,
                chassis: None,
                upstream: None,
                shared_secret_file: None,
                bridge: None,
                haproxy_socket: None,
                status_socket: None,
            }
        };
        let off = settings(&args("upstream_pipelining = \"off\"")).unwrap();
        assert_eq!(off.upstream.pipelining, Pipelining::Off);
        assert_eq!(off.rate_limits, None, "no rate limits unless enabled");
        let wrong = settings(&args("upstream_pipelining = \"sometimes\""))
            .err()
            .unwrap()
            .to_string();
        assert!(wrong.contains("not one of auto, on, off"), "{wrong}");
    }

    #[test]
    fn rate_limits_take_neutrons_keys_and_refuse_nonsense() {
        let section = |text: &str| -> RateLimitSection {
            let file: ConfigFile = toml::from_str(&format!("[agent.rate_limit]\n{text}")).unwrap();
            file.agent.rate_limit
        };
        let limits = section(
            "rate_limit_enabled = true\nburst_window_duration = 2\nburst_query_rate_limit = 4",
        )
        .limits()
        .unwrap()
        .unwrap();
        assert_eq!(limits.burst_window, Duration::from_secs(2));
        assert_eq!((limits.burst_limit, limits.base_limit), (4, 10));
        assert!((limits.ipv4, limits.ipv6) == (true, false));
        for bad in [
            "rate_limit_enabled = true\nip_versions = [5]",
            "rate_limit_enabled = true\nip_versions = []",
            "rate_limit_enabled = true\nbase_window_duration = 0",
            "rate_limit_enabled = true\nburst_query_rate_limit = 0",
        ] {
            assert!(section(bad).limits().is_err(), "{bad}");
        }
        // The TOML file wins key by key over Neutron's ini.
        let ini = RateLimitSection {
            rate_limit_enabled: Some(true),
            base_query_rate_limit: Some(50),
            ..RateLimitSection::default()
        };
        let merged = section("base_query_rate_limit = 7")
            .or(&ini)
            .limits()
            .unwrap()
            .unwrap();
        assert_eq!(merged.base_limit, 7);
        let junk = |key: &str, value: &str| {
            let (key, value) = (key.to_string(), value.to_string());
            neutron_rate_limit(&move |k| (k == key).then(|| value.clone()))
        };
        assert!(junk("ip_versions", "4,x").is_err());
        assert!(junk("base_window_duration", "ten").is_err());
    }
}
