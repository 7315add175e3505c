//! The operations listener of either daemon (`/metrics`, `/healthz`,
//! `/readyz`), and telling systemd the daemon is ready (`Type=notify`).

use crate::config::parse_addr;
use anyhow::{Context, Result};
use meta169_http::ops::ReadyCheck;
use meta169_http::ServerLimits;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use tokio::task::JoinHandle;

/// Open the operations listener on `listen` ("" for none).
pub async fn open(
    listen: &str,
    registry: Arc<Registry>,
    ready: ReadyCheck,
) -> Result<Option<JoinHandle<()>>> {
    if listen.trim().is_empty() {
        tracing::info!("operations listener off");
        return Ok(None);
    }
    let address = parse_addr(listen, "operations listen address")?;
    let listener = meta169_http::bind::bind_tcp(address).with_context(|| {
        format!("cannot listen on {address} for /metrics and /readyz (in use? set ops_listen)")
    })?;
    tracing::info!(%address, "operations listener (/metrics, /healthz, /readyz) listening");
    Ok(Some(tokio::spawn(meta169_http::serve(
        listener,
        meta169_http::ops::router(registry, ready),
        // Scrapers and probes are few and known: no per-source limit.
        ServerLimits {
            max_connections_per_source: 0,
            ..ServerLimits::default()
        },
        std::future::pending(),
    ))))
}

/// Tell systemd the daemon is up (a no-op outside a `Type=notify` unit).
pub fn notify_ready() {
    if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
        tracing::warn!("cannot tell systemd the daemon is ready: {e}");
    }
}
