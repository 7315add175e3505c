//! A read-only status socket for `meta169 trace`: what the running agent
//! has provisioned and what its index says about one guest.

use crate::metrics::AgentMetrics;
use crate::proxy::Proxy;
use crate::sb::NetworkSpec;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

/// What the operations listener reads from an agent, available before it
/// has connected (so `/healthz` and `/readyz` answer while it waits).
#[derive(Clone, Default)]
pub struct Health {
    pub metrics: Arc<AgentMetrics>,
    pub status: Arc<RwLock<Status>>,
}

impl Health {
    /// Ready, or why not.
    pub fn readiness(&self) -> Result<(), String> {
        match self.status.read() {
            Ok(status) => status.readiness(),
            Err(_) => Err("the agent's status is poisoned by an earlier panic".into()),
        }
    }
}

/// What `trace`, `/readyz` and tests can ask a running agent.
#[derive(Clone, Debug, Default)]
pub struct Status {
    pub chassis: String,
    pub networks: BTreeMap<String, NetworkSpec>,
    pub sb_connected: bool,
    /// A complete Southbound view has been acted on at least once.
    pub synced: bool,
    /// Networks whose listeners are not serving.
    pub listeners_down: Vec<String>,
}

impl Status {
    /// Ready: the Southbound read in full at least once, and every
    /// provisioned network's listeners up. (A Southbound that goes away
    /// later does not make the agent unready: it serves from its index.)
    pub fn readiness(&self) -> Result<(), String> {
        if !self.synced {
            return Err("the OVN Southbound has not been read in full yet".into());
        }
        if !self.listeners_down.is_empty() {
            return Err(format!(
                "no listener in the namespaces of {}",
                self.listeners_down.join(", ")
            ));
        }
        Ok(())
    }
}

#[derive(Clone)]
struct StatusState {
    proxy: Arc<Proxy>,
    status: Arc<RwLock<Status>>,
}

pub fn router(proxy: Arc<Proxy>, status: Arc<RwLock<Status>>) -> Router {
    Router::new()
        .route("/v1/status", get(show_status))
        .route("/v1/lookup", get(lookup))
        .with_state(StatusState { proxy, status })
}

async fn show_status(State(s): State<StatusState>) -> Json<Value> {
    let status = s.status.read().map(|s| s.clone()).unwrap_or_default();
    let ready = status.readiness();
    Json(json!({
        "chassis": status.chassis,
        "sb_connected": status.sb_connected,
        "synced": status.synced,
        "ready": ready.is_ok(),
        "not_ready_because": ready.err(),
        "index_entries": s.proxy.index().len(),
        "networks": status.networks.values().map(|n| json!({
            "network_id": n.network_id,
            "namespace": n.namespace(),
            "metadata_port": n.metadata.logical_port,
            "local_ipv4": n.local_ipv4,
        })).collect::<Vec<_>>(),
    }))
}

async fn lookup(
    State(s): State<StatusState>,
    Query(q): Query<HashMap<String, String>>,
) -> Json<Value> {
    let (Some(network), Some(ip)) = (
        q.get("network"),
        q.get("ip").and_then(|i| i.parse::<IpAddr>().ok()),
    ) else {
        return Json(json!({"error": "give network= and ip="}));
    };
    match s.proxy.lookup(network, ip) {
        Some(t) => {
            Json(json!({"found": true, "instance_id": t.instance_id, "project_id": t.project_id}))
        }
        None => Json(json!({"found": false})),
    }
}
