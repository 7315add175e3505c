//! Reading the replica into an [`SbView`], row by row as Neutron's agent
//! does. The row helpers are public so `diagnose` explains a guest's path
//! with the same reading.

use super::view::{MetadataPort, NetworkSpec, SbView};
use crate::index::Target;
use crate::neutron::{METADATA_OWNER, VM_PORT_TYPES};
use ipnet::IpNet;
use meta169_http::mac::parse_mac;
use meta169_ovsdb::{Replica, Row};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

/// A port's MAC and addresses, from its `mac` column.
pub type PortAddresses = ([u8; 6], Vec<IpAddr>);

/// Why a Port_Binding row is skipped (logged once per row).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RowError {
    /// The `mac` column does not start with a MAC.
    #[error("mac column {0:?} does not start with a MAC address")]
    BadMac(String),
    /// A metadata port without an address.
    #[error("metadata port has no MAC")]
    MetadataWithoutMac,
    /// A VM port Neutron did not label.
    #[error("external_ids lacks neutron:device_id or neutron:project_id")]
    Unlabelled,
}

fn text<'a>(row: &'a Row, column: &str) -> Option<&'a str> {
    row.get(column).and_then(|d| d.as_str())
}

fn string_map(row: &Row, column: &str) -> HashMap<String, String> {
    row.get(column).map(|d| d.string_map()).unwrap_or_default()
}

/// `neutron-<uuid>` → `<uuid>`; a non-Neutron switch keeps its name.
pub fn network_id_of(datapath: &Row) -> Option<String> {
    let ids = string_map(datapath, "external_ids");
    let name = ids.get("name")?;
    Some(name.strip_prefix("neutron-").unwrap_or(name).to_string())
}

/// `mac[0]` = "MAC IP IP ..."; `None` for "unknown", "router", "dynamic"
/// or an empty column.
pub fn port_addresses(row: &Row) -> Result<Option<PortAddresses>, RowError> {
    let Some(first) = row
        .get("mac")
        .and_then(|m| m.strings().first().map(|s| s.to_string()))
    else {
        return Ok(None);
    };
    let mut tokens = first.split_whitespace();
    let Some(mac_text) = tokens.next() else {
        return Ok(None);
    };
    if matches!(mac_text, "unknown" | "router" | "dynamic") {
        return Ok(None);
    }
    let mac = parse_mac(mac_text).ok_or_else(|| RowError::BadMac(first.clone()))?;
    let ips = tokens.filter_map(|t| t.parse::<IpAddr>().ok()).collect();
    Ok(Some((mac, ips)))
}

/// Is this row a network's metadata port (a localport Neutron owns)?
pub fn is_metadata_port(row: &Row) -> bool {
    text(row, "type") == Some("localport")
        && string_map(row, "external_ids")
            .get("neutron:device_owner")
            .map(String::as_str)
            == Some(METADATA_OWNER)
}

/// The metadata port a row describes.
pub fn metadata_port(row: &Row) -> Result<MetadataPort, RowError> {
    let ids = string_map(row, "external_ids");
    let (mac, _) = port_addresses(row)?.ok_or(RowError::MetadataWithoutMac)?;
    Ok(MetadataPort {
        logical_port: text(row, "logical_port").unwrap_or("?").to_string(),
        mac,
        cidrs: ids
            .get("neutron:cidrs")
            .map(|c| {
                c.split_whitespace()
                    .filter_map(|t| t.parse::<IpNet>().ok())
                    .collect()
            })
            .unwrap_or_default(),
        mtu: ids
            .get("neutron:mtu")
            .and_then(|m| m.parse().ok())
            .unwrap_or(0),
    })
}

/// Is this row a VM port (not the metadata port, not a router port)?
pub fn is_vm_port(row: &Row) -> bool {
    VM_PORT_TYPES.contains(&text(row, "type").unwrap_or(""))
}

/// The instance a VM port belongs to, from Neutron's labels.
pub fn target_of(row: &Row) -> Result<Target, RowError> {
    let ids = string_map(row, "external_ids");
    match (ids.get("neutron:device_id"), ids.get("neutron:project_id")) {
        (Some(instance), Some(project)) => Ok(Target {
            instance_id: instance.clone(),
            project_id: project.clone(),
        }),
        _ => Err(RowError::Unlabelled),
    }
}

/// Is the port bound to chassis `me` (as main or additional chassis)?
pub fn is_bound_to(row: &Row, me: &str) -> bool {
    ["chassis", "additional_chassis"]
        .iter()
        .any(|column| row.get(*column).is_some_and(|c| c.uuids().contains(&me)))
}

/// Read the replica. `warned` remembers rows already reported as malformed,
/// so each is logged once.
pub fn read(replica: &Replica, chassis_name: &str, warned: &mut HashSet<String>) -> SbView {
    let named = |table: &str| {
        replica
            .rows(table)
            .find(|(_, r)| text(r, "name") == Some(chassis_name))
    };
    let mut view = SbView {
        chassis_uuid: named("Chassis").map(|(uuid, _)| uuid.clone()),
        chassis_private: named("Chassis_Private").map(|(uuid, r)| {
            (
                uuid.clone(),
                string_map(r, "external_ids"),
                r.get("nb_cfg").and_then(|d| d.as_i64()).unwrap_or(0),
            )
        }),
        sb_nb_cfg: replica
            .rows("SB_Global")
            .next()
            .and_then(|(_, r)| r.get("nb_cfg")?.as_i64()),
        ..SbView::default()
    };
    let Some(me) = view.chassis_uuid.clone() else {
        return view;
    };
    let mut local_ports: BTreeMap<String, Vec<(PortAddresses, Target)>> = BTreeMap::new();
    let mut metadata_ports: HashMap<String, MetadataPort> = HashMap::new();
    let mut warn = |uuid: &str, row: &Row, why: RowError| {
        if warned.insert(uuid.to_string()) {
            let port = text(row, "logical_port").unwrap_or("?");
            tracing::warn!(%port, "Port_Binding skipped: {why}");
        }
    };
    for (uuid, row) in replica.rows("Port_Binding") {
        let Some(datapath) = row
            .get("datapath")
            .and_then(|d| d.uuids().first().map(|s| s.to_string()))
        else {
            continue;
        };
        if is_metadata_port(row) {
            match metadata_port(row) {
                Ok(port) => {
                    metadata_ports.insert(datapath, port);
                }
                Err(why) => warn(uuid, row, why),
            }
            continue;
        }
        if !is_vm_port(row) || !is_bound_to(row, &me) {
            continue;
        }
        let addresses = match port_addresses(row) {
            Ok(Some(a)) => a,
            Ok(None) => continue,
            Err(why) => {
                warn(uuid, row, why);
                continue;
            }
        };
        match target_of(row) {
            Ok(target) => local_ports
                .entry(datapath)
                .or_default()
                .push((addresses, target)),
            Err(why) => warn(uuid, row, why),
        }
    }
    for (datapath, ports) in local_ports {
        let Some(network_id) = replica
            .row("Datapath_Binding", &datapath)
            .and_then(network_id_of)
        else {
            // The datapath row arrives after the monitor condition follows.
            view.local_datapaths.insert(datapath, String::new());
            continue;
        };
        view.local_datapaths
            .insert(datapath.clone(), network_id.clone());
        let mut local_ipv4 = Vec::new();
        let mut any_ipv6 = false;
        for ((mac, ips), target) in ports {
            for ip in &ips {
                match ip {
                    IpAddr::V4(v4) => local_ipv4.push(*v4),
                    IpAddr::V6(_) => any_ipv6 = true,
                }
            }
            view.index.insert(&network_id, mac, &ips, target);
        }
        let Some(metadata) = metadata_ports.remove(&datapath) else {
            continue;
        };
        if !local_ipv4.is_empty() || any_ipv6 {
            local_ipv4.sort();
            view.networks.insert(
                network_id.clone(),
                NetworkSpec {
                    network_id,
                    metadata,
                    local_ipv4,
                    any_ipv6,
                },
            );
        }
    }
    view
}
