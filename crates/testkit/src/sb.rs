//! Southbound rows as ovn-northd, ovn-controller and Neutron write them,
//! as OVSDB operations: the one place tests and benchmarks build them,
//! each sending them with the client it has (meta169's, or `ovsdb-client`
//! through [`crate::OvsdbServer::transact`]).

use serde_json::{json, Value};

/// The Southbound database's name.
pub const SB_DB: &str = "OVN_Southbound";

/// A row named in an operation: one that exists, or one inserted earlier
/// in the same transaction under a `uuid-name`.
#[derive(Clone, Copy, Debug)]
pub enum RowRef<'a> {
    Uuid(&'a str),
    Named(&'a str),
}

impl RowRef<'_> {
    fn json(self) -> Value {
        match self {
            RowRef::Uuid(uuid) => json!(["uuid", uuid]),
            RowRef::Named(name) => json!(["named-uuid", name]),
        }
    }
}

/// Encap, Chassis (named `chassis` in the transaction) and
/// Chassis_Private, as ovn-controller registers; the Chassis row's uuid is
/// in the second result.
pub fn chassis(name: &str) -> Vec<Value> {
    chassis_at(name, "127.0.0.1")
}

/// [`chassis`] with its tunnel endpoint at `encap_ip` (each chassis needs
/// its own).
pub fn chassis_at(name: &str, encap_ip: &str) -> Vec<Value> {
    vec![
        json!({"op": "insert", "table": "Encap", "uuid-name": "encap", "row": {"type": "geneve", "ip": encap_ip, "chassis_name": name}}),
        json!({"op": "insert", "table": "Chassis", "uuid-name": "chassis", "row": {"name": name, "hostname": name, "encaps": ["named-uuid", "encap"]}}),
        json!({"op": "insert", "table": "Chassis_Private", "row": {"name": name, "chassis": ["named-uuid", "chassis"], "nb_cfg": 0}}),
    ]
}

/// The SB_Global row.
pub fn sb_global(nb_cfg: i64) -> Value {
    json!({"op": "insert", "table": "SB_Global", "row": {"nb_cfg": nb_cfg}})
}

/// The Datapath_Binding of Neutron network `network` (ovn-northd names it
/// `neutron-<id>`), optionally under a `uuid-name`.
pub fn datapath(network: &str, key: i64, uuid_name: Option<&str>) -> Value {
    let mut op = json!({"op": "insert", "table": "Datapath_Binding", "row": {"tunnel_key": key,
        "external_ids": ["map", [["name", format!("neutron-{network}")], ["name2", "private"]]]}});
    if let Some(name) = uuid_name {
        op["uuid-name"] = json!(name);
    }
    op
}

/// The network's metadata localport (`meta-<network>`) with address `cidr`.
pub fn metadata_port(network: &str, datapath: RowRef, mac: &str, cidr: &str, key: i64) -> Value {
    let ip = cidr.split('/').next().unwrap_or(cidr);
    json!({"op": "insert", "table": "Port_Binding", "row": {
        "logical_port": format!("meta-{network}"), "type": "localport", "datapath": datapath.json(), "tunnel_key": key,
        "mac": ["set", [format!("{mac} {ip}")]],
        "external_ids": ["map", [["neutron:device_owner", "network:distributed"], ["neutron:device_id", format!("ovnmeta-{network}")],
            ["neutron:cidrs", cidr], ["neutron:mtu", "1442"], ["neutron:project_id", "p"]]]}})
}

/// A VM port.
#[derive(Clone, Copy, Debug)]
pub struct VmPort<'a> {
    pub name: &'a str,
    pub datapath: RowRef<'a>,
    pub mac: &'a str,
    /// Space-separated addresses.
    pub ips: &'a str,
    pub instance: &'a str,
    pub project: &'a str,
    /// Bound to this chassis, or to none.
    pub chassis: Option<RowRef<'a>>,
    pub key: i64,
}

/// Insert a VM port, labelled as Neutron labels it.
pub fn vm_port(port: &VmPort) -> Value {
    let mut row = json!({"logical_port": port.name, "type": "", "datapath": port.datapath.json(), "tunnel_key": port.key,
        "mac": ["set", [format!("{} {}", port.mac, port.ips)]],
        "external_ids": ["map", [["neutron:device_id", port.instance], ["neutron:project_id", port.project],
            ["neutron:cidrs", cidrs(port.ips)]]]});
    if let Some(chassis) = port.chassis {
        row["chassis"] = chassis.json();
    }
    json!({"op": "insert", "table": "Port_Binding", "row": row})
}

/// Bind a port to a chassis (`None`: unbind), as ovn-controller does.
pub fn bind(port: &str, chassis: Option<RowRef>) -> Value {
    let value = chassis.map_or(json!(["set", []]), RowRef::json);
    json!({"op": "update", "table": "Port_Binding", "where": [["logical_port", "==", port]], "row": {"chassis": value}})
}

/// `neutron:cidrs` of space-separated addresses: /24 for IPv4, /64 for IPv6.
fn cidrs(addresses: &str) -> String {
    addresses
        .split_whitespace()
        .map(|a| {
            if a.contains(':') {
                format!("{a}/64")
            } else {
                format!("{a}/24")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
