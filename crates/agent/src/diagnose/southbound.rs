//! The Southbound's part: the network's datapath, the guest's port, where
//! it is bound, and the network's metadata port.

use super::{Diagnosis, Step, QUERY_TIMEOUT};
use crate::sb::read::{is_metadata_port, is_vm_port, port_addresses, target_of};
use crate::sb::SB_DB;
use crate::settings::AgentSettings;
use meta169_ovsdb::{Datum, Row, Rpc};
use serde_json::{json, Value};
use std::net::IpAddr;
use std::sync::Arc;

/// The rows a `select` returned, as the replica holds rows.
async fn select(rpc: &Rpc, table: &str, condition: Value) -> Result<Vec<(String, Row)>, String> {
    let result = rpc
        .transact(
            SB_DB,
            vec![json!({"op": "select", "table": table, "where": condition})],
            QUERY_TIMEOUT,
        )
        .await
        .map_err(|e| e.to_string())?;
    let rows = result
        .first()
        .and_then(|r| r["rows"].as_array())
        .cloned()
        .unwrap_or_default();
    Ok(rows
        .iter()
        .filter_map(Value::as_object)
        .map(|columns| {
            let uuid = columns
                .get("_uuid")
                .and_then(|u| u.get(1))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let row = columns
                .iter()
                .map(|(name, value)| (name.clone(), Datum::from_wire(value)))
                .collect();
            (uuid, row)
        })
        .collect())
}

/// The first member of the Southbound that answers.
async fn connect(settings: &AgentSettings, diagnosis: &mut Diagnosis) -> Option<Arc<Rpc>> {
    let mut unreachable = Vec::new();
    for remote in settings.sb_remotes() {
        match Rpc::connect(&remote).await {
            Ok((rpc, _)) => {
                for (other, why) in &unreachable {
                    diagnosis.push(Step::note(format!(
                        "OVN Southbound member {other} unreachable: {why}"
                    )));
                }
                let databases = rpc.databases(QUERY_TIMEOUT).await;
                if !databases.iter().any(|d| d == SB_DB) {
                    diagnosis.push(Step::fails(
                        format!(
                            "{remote} answers but is not OVN_Southbound (it has: {})",
                            databases.join(", ")
                        ),
                        "check [ovn] ovn_sb_connection / --ovn-sb: it names another database (the Northbound listens on 6641, the Southbound on 6642)",
                    ));
                    return None;
                }
                diagnosis.push(Step::holds(format!("OVN Southbound reachable at {remote}")));
                return Some(rpc);
            }
            Err(e) => unreachable.push((remote.to_string(), e.to_string())),
        }
    }
    let tried: Vec<String> = unreachable
        .iter()
        .map(|(remote, why)| format!("{remote}: {why}"))
        .collect();
    diagnosis.push(Step::fails(
        format!("OVN Southbound unreachable ({})", tried.join("; ")),
        "check [ovn] ovn_sb_connection / --ovn-sb and that ovsdb-server listens there",
    ));
    None
}

/// Check the Southbound; the network's metadata port, if found.
pub async fn check(
    settings: &AgentSettings,
    network: &str,
    ip: IpAddr,
    diagnosis: &mut Diagnosis,
) -> Option<String> {
    let rpc = connect(settings, diagnosis).await?;
    match rows(&rpc, settings, network, ip, diagnosis).await {
        Ok(metadata_port) => metadata_port,
        Err(why) => {
            diagnosis.push(Step::fails(
                format!("reading the Southbound failed: {why}"),
                "check the Southbound's log",
            ));
            None
        }
    }
}

async fn rows(
    rpc: &Rpc,
    settings: &AgentSettings,
    network: &str,
    ip: IpAddr,
    diagnosis: &mut Diagnosis,
) -> Result<Option<String>, String> {
    let name = format!("neutron-{network}");
    let datapaths = select(
        rpc,
        "Datapath_Binding",
        json!([["external_ids", "includes", ["map", [["name", name]]]]]),
    )
    .await?;
    let Some((datapath, _)) = datapaths.first() else {
        diagnosis.push(Step::fails(
            format!("no Datapath_Binding named neutron-{network}"),
            "is the network in OVN (ovn-nbctl ls-list) and is ovn-northd running?",
        ));
        return Ok(None);
    };
    diagnosis.push(Step::holds(format!(
        "datapath {datapath} is network {network}"
    )));
    let ports = select(
        rpc,
        "Port_Binding",
        json!([["datapath", "==", ["uuid", datapath]]]),
    )
    .await?;
    let vm = ports.iter().find(|(_, row)| {
        is_vm_port(row) && matches!(port_addresses(row), Ok(Some((_, ips))) if ips.contains(&ip))
    });
    match vm {
        None => diagnosis.push(Step::fails(
            format!("no port with {ip} on the network"),
            "check the port's fixed IPs in Neutron (openstack port list --fixed-ip ip-address=...)",
        )),
        Some((_, row)) => {
            let port = row
                .get("logical_port")
                .and_then(|d| d.as_str())
                .unwrap_or("?");
            match target_of(row) {
                Ok(t) => diagnosis.push(Step::holds(format!(
                    "port {port} belongs to instance {} (project {})",
                    t.instance_id, t.project_id
                ))),
                Err(why) => diagnosis.push(Step::fails(
                    format!("port {port}: {why}"),
                    "is the port managed by Neutron?",
                )),
            }
            binding(rpc, settings, row, diagnosis).await?;
        }
    }
    let metadata = ports.iter().find(|(_, row)| is_metadata_port(row));
    let Some((_, row)) = metadata else {
        diagnosis.push(Step::fails(
            "the network has no metadata port (localport, device_owner network:distributed)",
            "set [ovn] ovn_metadata_enabled = true in Neutron and resync the network",
        ));
        return Ok(None);
    };
    let port = row
        .get("logical_port")
        .and_then(|d| d.as_str())
        .map(str::to_string);
    let mac = row
        .get("mac")
        .and_then(|d| d.strings().first().map(|m| m.to_string()));
    diagnosis.push(Step::holds(format!(
        "metadata port {} ({})",
        port.as_deref().unwrap_or("?"),
        mac.as_deref().unwrap_or("no address")
    )));
    Ok(port)
}

/// Where the guest's port is bound.
async fn binding(
    rpc: &Rpc,
    settings: &AgentSettings,
    port: &Row,
    diagnosis: &mut Diagnosis,
) -> Result<(), String> {
    let Some(chassis) = port
        .get("chassis")
        .and_then(|c| c.uuids().first().map(|u| u.to_string()))
    else {
        diagnosis.push(Step::fails(
            "the port is not bound to any chassis",
            "is the VM running and ovn-controller up on its host?",
        ));
        return Ok(());
    };
    let rows = select(rpc, "Chassis", json!([["_uuid", "==", ["uuid", chassis]]])).await?;
    let name = rows
        .first()
        .and_then(|(_, r)| r.get("name").and_then(|n| n.as_str()).map(str::to_string))
        .unwrap_or_else(|| "?".into());
    match &settings.chassis {
        Some(me) if *me != name => diagnosis.push(Step::fails(
            format!("the port is bound to chassis {name}, not this one ({me})"),
            format!("run meta169 trace on {name}"),
        )),
        _ => diagnosis.push(Step::holds(format!("the port is bound to chassis {name}"))),
    }
    Ok(())
}
