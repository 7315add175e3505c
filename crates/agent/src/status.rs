//! A read-only status socket for `meta169 trace`: what the running agent
//! has provisioned and what its index says about one guest.

use crate::proxy::Proxy;
use crate::sb::NetworkSpec;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

/// What `trace` and tests can ask a running agent.
#[derive(Clone, Debug, Default)]
pub struct Status {
    pub chassis: String,
    pub networks: BTreeMap<String, NetworkSpec>,
    pub sb_connected: bool,
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
    Json(json!({
        "chassis": status.chassis,
        "sb_connected": status.sb_connected,
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
