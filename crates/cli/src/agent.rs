//! `meta169 agent`: its flags, resolved over the TOML `[agent]` section
//! and an existing `neutron_ovn_metadata_agent.ini` into the agent's
//! settings, and running it.

use crate::config::neutron_ini::{read_neutron_ini, NeutronIni};
use crate::config::{self, ConfigFile};
use anyhow::{bail, Context, Result};
use clap::Args;
use meta169_agent::status::Health;
use meta169_agent::{Agent, AgentSettings, BridgeMode, Pipelining, Upstream};
use meta169_http::ops::ReadyCheck;
use meta169_ovsdb::{Remote, TlsFiles};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub const DEFAULT_SB: &str = "tcp:127.0.0.1:6642";
pub const DEFAULT_OVS: &str = "unix:/var/run/openvswitch/db.sock";
pub const DEFAULT_UPSTREAM: &str = "http://127.0.0.1:8775";
pub const DEFAULT_STATUS_SOCKET: &str = "/run/meta169/agent.sock";
/// Metrics, health and readiness, for the machine's own monitoring.
pub const DEFAULT_OPS_LISTEN: &str = "127.0.0.1:8778";
/// Neutron's default for how long the metadata API may take.
pub const DEFAULT_UPSTREAM_TIMEOUT_SECONDS: u64 = 60;

#[derive(Args, Clone)]
pub struct AgentArgs {
    /// meta169 configuration file (its [agent] section) [default: /etc/meta169/meta169.toml if it exists].
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
    /// Address for /metrics, /healthz and /readyz; "" for none [default: 127.0.0.1:8778].
    #[arg(long)]
    pub ops_listen: Option<String>,
}

/// Flags over TOML over Neutron's ini over defaults.
pub fn settings(args: &AgentArgs) -> Result<AgentSettings> {
    resolve(args).map(|(settings, _)| settings)
}

/// The agent's settings and the operations listener's address.
fn resolve(args: &AgentArgs) -> Result<(AgentSettings, String)> {
    let file: ConfigFile = config::load(args.config.as_deref())?;
    let toml = file.agent;
    let ops_listen = args
        .ops_listen
        .clone()
        .or(toml.ops_listen.clone())
        .unwrap_or_else(|| DEFAULT_OPS_LISTEN.into());
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
        timeout: Duration::from_secs(
            toml.upstream_timeout_seconds
                .unwrap_or(DEFAULT_UPSTREAM_TIMEOUT_SECONDS),
        ),
        insecure: toml.upstream_insecure.or(neutron.insecure).unwrap_or(false),
        ca_cert: toml.upstream_ca_cert.clone().or(neutron.ca_cert.clone()),
        client_cert: toml
            .upstream_client_cert
            .clone()
            .or(neutron.client_cert.clone()),
        client_key: toml
            .upstream_client_key
            .clone()
            .or(neutron.client_key.clone()),
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
    // 0 leaves the system's default TTL.
    s.token_hop_limit = match toml.token_hop_limit {
        Some(0) => None,
        Some(hops) => Some(hops),
        None => s.token_hop_limit,
    };
    s.rate_limits = toml.rate_limit.or(&neutron.rate_limit).limits()?;
    if let Some(level) = &toml.access_log {
        s.access_log = level
            .parse()
            .map_err(|e: String| anyhow::anyhow!("[agent] {e}"))?;
    }
    Ok((s, ops_listen))
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

pub async fn run(args: AgentArgs) -> Result<()> {
    let (settings, ops_listen) = resolve(&args)?;
    // Every guest connection on every network's listener is a descriptor;
    // there is no fixed total to check, only the most to allow.
    let open_files = crate::fd_limit::raise()?;
    if open_files < crate::fd_limit::FD_RESERVE * 16 {
        tracing::warn!(open_files, "the hard open-file limit is low for guest connections on many networks: raise LimitNOFILE= in the systemd unit");
    }
    // Metrics and readiness answer from the start, while the databases are
    // still being waited for.
    let health = Health::default();
    let ready: ReadyCheck = {
        let health = health.clone();
        Arc::new(move || {
            let answer = health.readiness();
            health.metrics.ready.set(i64::from(answer.is_ok()));
            Box::pin(async move { answer })
        })
    };
    let _ops = crate::ops::open(&ops_listen, health.metrics.registry(), ready).await?;
    tracing::info!(sb = %settings.sb, upstream = %settings.upstream.url, bridge = %settings.bridge, "starting agent");
    // SIGTERM while still connecting (a database that is not up yet) ends
    // cleanly too.
    let shutdown = crate::signals::shutdown();
    tokio::pin!(shutdown);
    let agent = tokio::select! {
        agent = Agent::start_with(settings, health) => agent?,
        _ = &mut shutdown => {
            tracing::info!("stopped while connecting to the databases");
            return Ok(());
        }
    };
    crate::ops::notify_ready();
    agent.run(shutdown).await?;
    Ok(())
}

#[cfg(test)]
mod tests;
