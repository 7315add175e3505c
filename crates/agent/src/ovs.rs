//! The local Open_vSwitch database: this chassis' name (`system-id`), its
//! integration bridge, and plugging the outer veth end into that bridge as
//! a Port/Interface with `external_ids:iface-id` = the metadata localport,
//! so ovn-controller binds it.

use meta169_ovsdb::datum::{string_map, uuid};
use meta169_ovsdb::{Monitor, MonitorOptions, OvsdbError, Remote, Replica, TableMonitor};
use serde_json::json;
use std::sync::Arc;

pub const DB: &str = "Open_vSwitch";

pub fn start(remote: Remote) -> Monitor {
    Monitor::start(
        remote,
        MonitorOptions::new(
            DB,
            vec![
                TableMonitor::all("Open_vSwitch").columns(&["external_ids", "bridges"]),
                TableMonitor::all("Bridge").columns(&["name", "ports", "datapath_type"]),
                TableMonitor::all("Port").columns(&["name", "interfaces"]),
                TableMonitor::all("Interface").columns(&["name", "external_ids"]),
            ],
        ),
    )
}

/// `external_ids` of the Open_vSwitch row.
fn system_ids(replica: &Replica) -> std::collections::HashMap<String, String> {
    replica
        .rows("Open_vSwitch")
        .next()
        .and_then(|(_, r)| r.get("external_ids").map(|d| d.string_map()))
        .unwrap_or_default()
}

/// This chassis' name, as ovn-controller uses it.
pub fn system_id(replica: &Replica) -> Option<String> {
    system_ids(replica).get("system-id").cloned()
}

/// The integration bridge (`ovn-bridge`, default `br-int`).
pub fn integration_bridge(replica: &Replica) -> String {
    system_ids(replica)
        .get("ovn-bridge")
        .cloned()
        .unwrap_or_else(|| "br-int".into())
}

/// `datapath_type` of a bridge (`netdev` for the userspace datapath).
pub fn datapath_type(replica: &Replica, bridge_name: &str) -> Option<String> {
    bridge(replica, bridge_name)
        .and_then(|(_, r)| r.get("datapath_type"))
        .and_then(|d| d.as_str())
        .map(str::to_string)
}

fn bridge<'a>(replica: &'a Replica, name: &str) -> Option<(&'a String, &'a meta169_ovsdb::Row)> {
    replica
        .rows("Bridge")
        .find(|(_, r)| r.get("name").and_then(|n| n.as_str()) == Some(name))
}

fn port_named<'a>(
    replica: &'a Replica,
    name: &str,
) -> Option<(&'a String, &'a meta169_ovsdb::Row)> {
    replica
        .rows("Port")
        .find(|(_, r)| r.get("name").and_then(|n| n.as_str()) == Some(name))
}

/// Is `port` on `bridge` with an interface whose iface-id is `iface_id`?
pub fn is_plugged(replica: &Replica, bridge_name: &str, port: &str, iface_id: &str) -> bool {
    let (Some((_, br)), Some((port_uuid, port_row))) =
        (bridge(replica, bridge_name), port_named(replica, port))
    else {
        return false;
    };
    let on_bridge = br
        .get("ports")
        .is_some_and(|p| p.uuids().contains(&port_uuid.as_str()));
    let iface_ok = port_row.get("interfaces").is_some_and(|ifaces| {
        ifaces.uuids().iter().any(|i| {
            replica
                .row("Interface", i)
                .and_then(|r| r.get("external_ids"))
                .is_some_and(|ids| {
                    ids.string_map().get("iface-id").map(String::as_str) == Some(iface_id)
                })
        })
    });
    on_bridge && iface_ok
}

/// Plug `port` into `bridge_name` with `iface-id`, removing it from any
/// other bridge first. One transaction.
pub async fn plug(
    monitor: &Monitor,
    bridge_name: &str,
    port: &str,
    iface_id: &str,
) -> Result<(), OvsdbError> {
    let replica: Arc<Replica> = monitor.replica();
    if is_plugged(&replica, bridge_name, port, iface_id) {
        return Ok(());
    }
    if bridge(&replica, bridge_name).is_none() {
        return Err(OvsdbError::Transaction(format!(
            "integration bridge {bridge_name} does not exist"
        )));
    }
    let mut ops = Vec::new();
    if let Some((port_uuid, _)) = port_named(&replica, port) {
        for (_, br) in replica.rows("Bridge") {
            if br
                .get("ports")
                .is_some_and(|p| p.uuids().contains(&port_uuid.as_str()))
            {
                let name = br.get("name").and_then(|n| n.as_str()).unwrap_or_default();
                ops.push(
                    json!({"op": "mutate", "table": "Bridge", "where": [["name", "==", name]],
                    "mutations": [["ports", "delete", ["set", [uuid(port_uuid)]]]]}),
                );
            }
        }
    }
    ops.push(
        json!({"op": "insert", "table": "Interface", "uuid-name": "iface",
        "row": {"name": port, "external_ids": string_map([("iface-id", iface_id)])}}),
    );
    ops.push(json!({"op": "insert", "table": "Port", "uuid-name": "port",
        "row": {"name": port, "interfaces": ["named-uuid", "iface"]}}));
    ops.push(
        json!({"op": "mutate", "table": "Bridge", "where": [["name", "==", bridge_name]],
        "mutations": [["ports", "insert", ["set", [["named-uuid", "port"]]]]]}),
    );
    monitor.transact(ops).await.map(|_| ())
}

/// Remove `port` from every bridge (OVS garbage-collects the rows).
pub async fn unplug(monitor: &Monitor, port: &str) -> Result<(), OvsdbError> {
    let replica = monitor.replica();
    let Some((port_uuid, _)) = port_named(&replica, port) else {
        return Ok(());
    };
    let ops: Vec<_> = replica
        .rows("Bridge")
        .filter(|(_, br)| br.get("ports").is_some_and(|p| p.uuids().contains(&port_uuid.as_str())))
        .map(|(_, br)| {
            json!({"op": "mutate", "table": "Bridge", "where": [["name", "==", br.get("name").and_then(|n| n.as_str()).unwrap_or_default()]],
                "mutations": [["ports", "delete", ["set", [uuid(port_uuid)]]]]})
        })
        .collect();
    if ops.is_empty() {
        return Ok(());
    }
    monitor.transact(ops).await.map(|_| ())
}
