//! `[agent]` of the configuration file: the agent's keys, and
//! `[agent.rate_limit]` with the names of Neutron's
//! `[metadata_rate_limiting]`.

use anyhow::{bail, Result};
use meta169_agent::RateLimits;
use serde::Deserialize;
use std::path::PathBuf;
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
    /// Mutual TLS to the upstream: a PEM certificate and its key (Neutron's
    /// `nova_client_cert`, `nova_client_priv_key`).
    pub upstream_client_cert: Option<PathBuf>,
    pub upstream_client_key: Option<PathBuf>,
    /// auto (pipeline once the upstream is meta169 serve), on, off.
    pub upstream_pipelining: Option<String>,
    pub shared_secret_file: Option<PathBuf>,
    pub haproxy_socket: Option<PathBuf>,
    /// user (0644), group (0664), all (0666), or an octal mode.
    pub haproxy_socket_mode: Option<String>,
    pub status_socket: Option<PathBuf>,
    /// `/metrics`, `/healthz`, `/readyz`; empty for none.
    pub ops_listen: Option<String>,
    /// Guest requests logged: off, errors, all.
    pub access_log: Option<String>,
    pub ipv6: Option<bool>,
    /// IP TTL / hop limit of session-token answers (default 1; 0: the
    /// system's default).
    pub token_hop_limit: Option<u8>,
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
    pub fn or(&self, fallback: &RateLimitSection) -> RateLimitSection {
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
    pub fn limits(&self) -> Result<Option<RateLimits>> {
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
