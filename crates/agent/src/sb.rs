//! The Southbound rows, read as Neutron's OVN metadata agent reads them:
//! which networks need metadata on this chassis, with what addresses, and
//! which (network, address) belongs to which instance.

use ipnet::IpNet;
use meta169_ovsdb::{Replica, Row};
use meta169_tree::model::parse_mac;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

/// Port_Binding types that are VM ports (Neutron's VIF types, less the
/// localport that is the metadata port itself).
pub const VM_PORT_TYPES: &[&str] = &["", "external"];
pub const METADATA_OWNER: &str = "network:distributed";
pub const NAMESPACE_PREFIX: &str = "ovnmeta-";
pub const METADATA_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
pub const METADATA_V6: std::net::Ipv6Addr =
    std::net::Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0xa9fe, 0xa9fe);

/// Who a (network, address) belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub instance_id: String,
    pub project_id: String,
}

/// (network, IP) and (network, MAC) → instance; kept in memory so the
/// request path never waits on the database. Keyed by network first, so a
/// lookup borrows the network id instead of allocating a key.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Index {
    networks: HashMap<String, NetworkIndex>,
}

#[derive(Clone, Debug, Default, PartialEq)]
struct NetworkIndex {
    by_ip: HashMap<IpAddr, Arc<Target>>,
    by_mac: HashMap<[u8; 6], Arc<Target>>,
}

impl Index {
    pub fn by_ip(&self, network: &str, ip: IpAddr) -> Option<&Arc<Target>> {
        self.networks.get(network)?.by_ip.get(&ip)
    }

    pub fn by_mac(&self, network: &str, mac: [u8; 6]) -> Option<&Arc<Target>> {
        self.networks.get(network)?.by_mac.get(&mac)
    }

    /// Number of (network, IP) entries.
    pub fn len(&self) -> usize {
        self.networks.values().map(|n| n.by_ip.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Add a port's addresses (the reconcile loop builds the index from the
    /// Southbound; benchmarks and tests build one directly).
    pub fn insert(&mut self, network: &str, mac: [u8; 6], ips: &[IpAddr], target: Target) {
        let target = Arc::new(target);
        let entry = self.networks.entry(network.to_string()).or_default();
        entry.by_mac.insert(mac, target.clone());
        for ip in ips {
            entry.by_ip.insert(*ip, target.clone());
        }
    }

    /// Every target, for precomputing signatures.
    pub fn targets(&self) -> impl Iterator<Item = &Arc<Target>> {
        self.networks
            .values()
            .flat_map(|n| n.by_ip.values().chain(n.by_mac.values()))
    }
}

/// The metadata localport of a network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetadataPort {
    pub logical_port: String,
    pub mac: [u8; 6],
    pub cidrs: Vec<IpNet>,
    pub mtu: u32,
}

/// What one network needs on this chassis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkSpec {
    pub network_id: String,
    pub metadata: MetadataPort,
    /// IPv4 addresses of this chassis' VM ports on the network.
    pub local_ipv4: Vec<Ipv4Addr>,
    /// Whether any of them has IPv6.
    pub any_ipv6: bool,
}

impl NetworkSpec {
    pub fn namespace(&self) -> String {
        format!("{NAMESPACE_PREFIX}{}", self.network_id)
    }

    /// Neutron's veth names: `tap` + 10 characters of the network id + 0 (outer) / 1 (inner).
    pub fn veth_names(&self) -> (String, String) {
        veth_names(&self.network_id)
    }

    /// The addresses of the inner end (Neutron's provisioning step 6).
    pub fn addresses(&self, ipv6: bool) -> Vec<(IpAddr, u8)> {
        let mut out = vec![(IpAddr::V4(METADATA_V4), 32)];
        for cidr in &self.metadata.cidrs {
            if let IpNet::V4(net) = cidr {
                if self.local_ipv4.iter().any(|ip| net.contains(ip)) {
                    out.push((IpAddr::V4(net.addr()), net.prefix_len()));
                }
            }
        }
        if ipv6 && self.any_ipv6 {
            out.push((IpAddr::V6(METADATA_V6), 64));
            out.push((IpAddr::V6(eui64_link_local(self.metadata.mac)), 64));
        }
        out
    }
}

pub fn veth_names(network_id: &str) -> (String, String) {
    let short: String = network_id.chars().take(10).collect();
    (format!("tap{short}0"), format!("tap{short}1"))
}

/// The EUI-64 link-local address of a MAC.
pub fn eui64_link_local(mac: [u8; 6]) -> std::net::Ipv6Addr {
    std::net::Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        mac[0] ^ 0x02,
        mac[1],
        mac[2],
        0xff,
        0xfe,
        mac[3],
        mac[4],
        mac[5],
    ])
}

/// The agent's reading of the Southbound replica.
#[derive(Clone, Debug, Default)]
pub struct SbView {
    pub chassis_uuid: Option<String>,
    /// (row uuid, external_ids, nb_cfg) of our Chassis_Private row.
    pub chassis_private: Option<(String, HashMap<String, String>, i64)>,
    pub sb_nb_cfg: Option<i64>,
    /// Datapath uuid → network id, for every datapath with a VM port here.
    pub local_datapaths: BTreeMap<String, String>,
    /// Networks that need metadata here, by network id.
    pub networks: BTreeMap<String, NetworkSpec>,
    pub index: Index,
}

/// `neutron-<uuid>` → `<uuid>`; a non-Neutron switch keeps its name.
fn network_id_of(datapath: &Row) -> Option<String> {
    let ids = datapath.get("external_ids")?.string_map();
    let name = ids.get("name")?;
    Some(name.strip_prefix("neutron-").unwrap_or(name).to_string())
}

/// A port's MAC and addresses, from its `mac` column.
type PortAddresses = ([u8; 6], Vec<IpAddr>);

/// `mac[0]` = "MAC IP IP ..."; `None` for "unknown" or empty, an error for a bad MAC.
fn parse_addresses(row: &Row) -> Result<Option<PortAddresses>, String> {
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
    if mac_text == "unknown" || mac_text == "router" || mac_text == "dynamic" {
        return Ok(None);
    }
    let mac = parse_mac(mac_text)
        .ok_or_else(|| format!("mac column {first:?} does not start with a MAC address"))?;
    let ips = tokens.filter_map(|t| t.parse::<IpAddr>().ok()).collect();
    Ok(Some((mac, ips)))
}

/// Read the replica. `warned` remembers rows already reported as malformed,
/// so each is logged once.
pub fn read(replica: &Replica, chassis_name: &str, warned: &mut HashSet<String>) -> SbView {
    let mut view = SbView {
        chassis_uuid: replica
            .rows("Chassis")
            .find(|(_, r)| r.get("name").and_then(|n| n.as_str()) == Some(chassis_name))
            .map(|(uuid, _)| uuid.clone()),
        ..SbView::default()
    };
    view.chassis_private = replica
        .rows("Chassis_Private")
        .find(|(_, r)| r.get("name").and_then(|n| n.as_str()) == Some(chassis_name))
        .map(|(uuid, r)| {
            (
                uuid.clone(),
                r.get("external_ids")
                    .map(|d| d.string_map())
                    .unwrap_or_default(),
                r.get("nb_cfg").and_then(|d| d.as_i64()).unwrap_or(0),
            )
        });
    view.sb_nb_cfg = replica
        .rows("SB_Global")
        .next()
        .and_then(|(_, r)| r.get("nb_cfg")?.as_i64());

    let Some(me) = view.chassis_uuid.clone() else {
        return view;
    };
    let datapaths: HashMap<&String, &Row> = replica.rows("Datapath_Binding").collect();
    let mut local_ports: BTreeMap<String, Vec<(PortAddresses, Target)>> = BTreeMap::new();
    let mut metadata_ports: HashMap<String, MetadataPort> = HashMap::new();
    let mut warn = |uuid: &str, name: &str, why: String| {
        if warned.insert(uuid.to_string()) {
            tracing::warn!(port = %name, "Port_Binding skipped: {why}");
        }
    };

    for (uuid, row) in replica.rows("Port_Binding") {
        let name = row
            .get("logical_port")
            .and_then(|d| d.as_str())
            .unwrap_or("?");
        let kind = row.get("type").and_then(|d| d.as_str()).unwrap_or("");
        let Some(datapath) = row
            .get("datapath")
            .and_then(|d| d.uuids().first().map(|s| s.to_string()))
        else {
            continue;
        };
        let ids = row
            .get("external_ids")
            .map(|d| d.string_map())
            .unwrap_or_default();
        if kind == "localport"
            && ids.get("neutron:device_owner").map(String::as_str) == Some(METADATA_OWNER)
        {
            match parse_addresses(row) {
                Ok(Some((mac, _))) => {
                    let cidrs = ids
                        .get("neutron:cidrs")
                        .map(|c| {
                            c.split_whitespace()
                                .filter_map(|t| t.parse::<IpNet>().ok())
                                .collect()
                        })
                        .unwrap_or_default();
                    let mtu = ids
                        .get("neutron:mtu")
                        .and_then(|m| m.parse().ok())
                        .unwrap_or(0);
                    metadata_ports.insert(
                        datapath,
                        MetadataPort {
                            logical_port: name.to_string(),
                            mac,
                            cidrs,
                            mtu,
                        },
                    );
                }
                Ok(None) => warn(uuid, name, "metadata port has no MAC".into()),
                Err(why) => warn(uuid, name, why),
            }
            continue;
        }
        if !VM_PORT_TYPES.contains(&kind) {
            continue;
        }
        let here = row
            .get("chassis")
            .is_some_and(|c| c.uuids().contains(&me.as_str()))
            || row
                .get("additional_chassis")
                .is_some_and(|c| c.uuids().contains(&me.as_str()));
        if !here {
            continue;
        }
        let (mac, ips) = match parse_addresses(row) {
            Ok(Some(a)) => a,
            Ok(None) => continue,
            Err(why) => {
                warn(uuid, name, why);
                continue;
            }
        };
        let (Some(instance), Some(project)) =
            (ids.get("neutron:device_id"), ids.get("neutron:project_id"))
        else {
            warn(
                uuid,
                name,
                "external_ids lacks neutron:device_id or neutron:project_id".into(),
            );
            continue;
        };
        local_ports.entry(datapath).or_default().push((
            (mac, ips),
            Target {
                instance_id: instance.clone(),
                project_id: project.clone(),
            },
        ));
    }

    for (datapath, ports) in local_ports {
        let Some(network_id) = datapaths.get(&datapath).and_then(|d| network_id_of(d)) else {
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
        if let Some(metadata) = metadata_ports.remove(&datapath) {
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
    }
    view
}

/// Monitor conditions that bring exactly what this chassis needs: its own
/// chassis rows, its bound ports, the metadata ports and datapaths of the
/// networks those ports are on.
pub fn port_binding_conditions(
    chassis_uuid: Option<&str>,
    networks: &BTreeSet<String>,
) -> Vec<serde_json::Value> {
    use serde_json::json;
    let Some(me) = chassis_uuid else {
        return vec![json!(false)];
    };
    let mut clauses = vec![
        json!(["chassis", "==", ["uuid", me]]),
        json!(["additional_chassis", "includes", ["set", [["uuid", me]]]]),
    ];
    for network in networks.iter().filter(|n| !n.is_empty()) {
        clauses.push(json!([
            "external_ids",
            "includes",
            [
                "map",
                [["neutron:device_id", format!("{NAMESPACE_PREFIX}{network}")]]
            ]
        ]));
    }
    clauses
}

pub fn datapath_conditions(datapaths: &BTreeMap<String, String>) -> Vec<serde_json::Value> {
    use serde_json::json;
    if datapaths.is_empty() {
        return vec![json!(false)];
    }
    datapaths
        .keys()
        .map(|uuid| json!(["_uuid", "==", ["uuid", uuid]]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_addresses_follow_neutron() {
        assert_eq!(
            veth_names("6cc81cae-8c5f-4c09-aaf2-35d0aa95c084"),
            ("tap6cc81cae-80".to_string(), "tap6cc81cae-81".to_string())
        );
        assert_eq!(
            eui64_link_local([0xfa, 0x16, 0x3e, 0xaa, 0xbb, 0xcc]).to_string(),
            "fe80::f816:3eff:feaa:bbcc"
        );
        let spec = NetworkSpec {
            network_id: "n".into(),
            metadata: MetadataPort {
                logical_port: "m".into(),
                mac: [0xfa, 0x16, 0x3e, 0xaa, 0xbb, 0xcc],
                cidrs: vec![
                    "10.0.0.2/24".parse().unwrap(),
                    "10.1.0.2/24".parse().unwrap(),
                    "fd00::2/64".parse().unwrap(),
                ],
                mtu: 1442,
            },
            local_ipv4: vec!["10.0.0.5".parse().unwrap()],
            any_ipv6: true,
        };
        let addrs: Vec<String> = spec
            .addresses(true)
            .iter()
            .map(|(ip, p)| format!("{ip}/{p}"))
            .collect();
        assert_eq!(
            addrs,
            [
                "169.254.169.254/32",
                "10.0.0.2/24",
                "fe80::a9fe:a9fe/64",
                "fe80::f816:3eff:feaa:bbcc/64"
            ]
        );
        assert_eq!(spec.addresses(false).len(), 2);
    }
}
