//! cloud-init's NoCloud datasource, which libvirt tooling, Proxmox and
//! KubeVirt use: the four files of a `cidata` volume and of the HTTP seed
//! (`meta-data`, `user-data`, `vendor-data`, `network-config`), from the
//! same record and renderer as the OpenStack tree. `network-config` is
//! converted from the record's `network_data.json` into network config
//! version 1 (as Proxmox writes it: interfaces `eth0`, `eth1`... matched by
//! MAC) or version 2. The YAML documents are written as JSON, which is
//! YAML too and leaves no quoting to chance.

use crate::openstack::{network_data, vendor_cloud_init};
use crate::tree::{full_hostname, RenderOptions};
use crate::Instance;
use bytes::Bytes;
use serde_json::{json, Map, Value};
use std::net::{IpAddr, Ipv4Addr};

/// The files, in the order cloud-init reads them.
pub const FILES: [&str; 4] = ["meta-data", "user-data", "vendor-data", "network-config"];

/// The volume label cloud-init's NoCloud datasource looks for.
pub const VOLUME_LABEL: &str = "cidata";

/// Which network config format `network-config` is written in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "u8")]
pub enum NetworkConfigVersion {
    #[default]
    V1,
    V2,
}

impl TryFrom<u8> for NetworkConfigVersion {
    type Error = String;

    fn try_from(n: u8) -> Result<Self, String> {
        match n {
            1 => Ok(NetworkConfigVersion::V1),
            2 => Ok(NetworkConfigVersion::V2),
            n => Err(format!("network config version {n}: use 1 or 2")),
        }
    }
}

impl std::str::FromStr for NetworkConfigVersion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        s.parse::<u8>()
            .map_err(|_| format!("network config version {s:?}: use 1 or 2"))?
            .try_into()
    }
}

/// Why `network_data.json` has no NoCloud equivalent.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NetworkConfigError {
    #[error("network_data link {0:?} has type {1:?}; NoCloud network-config covers physical links and VLANs only")]
    UnsupportedLink(String, String),
    #[error("network_data network {0:?} has type {1:?}, which has no NoCloud equivalent")]
    UnsupportedNetwork(String, String),
    #[error("network_data {0}")]
    Malformed(String),
}

/// `meta-data`: the instance id, its host name and its SSH keys.
pub fn meta_data(instance: &Instance, options: &RenderOptions) -> Bytes {
    let keys: Vec<&str> = instance
        .public_keys
        .values()
        .map(|k| k.trim_end())
        .collect();
    let mut doc = json!({
        "instance-id": instance.uuid,
        "local-hostname": full_hostname(instance, options),
    });
    if !keys.is_empty() {
        doc["public-keys"] = json!(keys);
    }
    pretty(&doc)
}

/// `user-data`: the record's, as is (empty when it has none: NoCloud
/// needs the file).
pub fn user_data(instance: &Instance) -> Bytes {
    instance.user_data.clone().unwrap_or_default()
}

/// `vendor-data`: the static vendor data's `cloud-init` part, as the
/// OpenStack datasource takes it from `vendor_data.json`, and the record's
/// injected files as `write_files` (NoCloud has no `files` of its own);
/// both as a `#cloud-config-archive`; empty without either.
pub fn vendor_data(instance: &Instance, options: &RenderOptions) -> Bytes {
    match vendor_cloud_init(instance, options) {
        None => Bytes::new(),
        Some(Value::String(text)) => Bytes::from(text),
        Some(Value::Array(parts)) => {
            let parts: Vec<Value> = parts
                .into_iter()
                .map(|part| match part {
                    Value::String(text) => json!({ "content": text }),
                    other => json!({ "content": other.to_string() }),
                })
                .collect();
            let mut text = String::from("#cloud-config-archive\n");
            text.push_str(&serde_json::to_string_pretty(&parts).unwrap_or_default());
            text.push('\n');
            Bytes::from(text)
        }
        Some(other) => pretty(&other),
    }
}

/// `network-config` in `version`, or `None` when the instance has no
/// network (cloud-init then configures DHCP on the first interface).
pub fn network_config(
    instance: &Instance,
    version: NetworkConfigVersion,
) -> Result<Option<Bytes>, NetworkConfigError> {
    let doc = network_data(instance);
    let links = doc.get("links").and_then(Value::as_array);
    if links.is_none_or(|l| l.is_empty()) {
        return Ok(None);
    }
    let interfaces = interfaces(&doc)?;
    let dns = global_dns(&doc);
    Ok(Some(pretty(&match version {
        NetworkConfigVersion::V1 => v1(&interfaces, &dns),
        NetworkConfigVersion::V2 => v2(&interfaces, &dns),
    })))
}

/// Every NoCloud file for `instance`; `network-config` only when it has a
/// network.
pub fn files(
    instance: &Instance,
    options: &RenderOptions,
    version: NetworkConfigVersion,
) -> Result<Vec<(String, Bytes)>, NetworkConfigError> {
    let mut files = vec![
        ("meta-data".to_string(), meta_data(instance, options)),
        ("user-data".to_string(), user_data(instance)),
        ("vendor-data".to_string(), vendor_data(instance, options)),
    ];
    if let Some(config) = network_config(instance, version)? {
        files.push(("network-config".to_string(), config));
    }
    Ok(files)
}

fn pretty(doc: &Value) -> Bytes {
    let mut text = serde_json::to_string_pretty(doc).unwrap_or_else(|_| "{}".into());
    text.push('\n');
    Bytes::from(text)
}

/// One interface: a physical link or a VLAN on one, with its addresses.
struct Interface {
    name: String,
    mac: Option<String>,
    mtu: Option<u64>,
    /// `Some((parent name, vlan id))` for a VLAN.
    vlan: Option<(String, u64)>,
    subnets: Vec<Subnet>,
}

enum Subnet {
    Dhcp4,
    Dhcp6,
    Slaac,
    Dhcp6Stateless,
    Static {
        address: IpAddr,
        prefix: u8,
        routes: Vec<Route>,
        dns: Vec<String>,
    },
}

struct Route {
    network: IpAddr,
    prefix: u8,
    gateway: IpAddr,
}

fn text<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

/// A prefix length from a netmask (`255.255.255.0`, `ffff:ffff::`) or a
/// number.
fn prefix_of(netmask: &Value) -> Result<u8, NetworkConfigError> {
    if let Some(n) = netmask.as_u64() {
        return u8::try_from(n).map_err(|_| NetworkConfigError::Malformed(format!("netmask {n}")));
    }
    let text = netmask.as_str().unwrap_or_default();
    if let Ok(n) = text.parse::<u8>() {
        return Ok(n);
    }
    let bits: u128 = match text.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => u128::from(u32::from(v4)) << 96,
        Ok(IpAddr::V6(v6)) => u128::from(v6),
        Err(_) => return Err(NetworkConfigError::Malformed(format!("netmask {text:?}"))),
    };
    if bits.leading_ones() + bits.trailing_zeros() != 128 && bits != 0 {
        return Err(NetworkConfigError::Malformed(format!(
            "netmask {text:?} is not contiguous"
        )));
    }
    Ok(bits.leading_ones() as u8)
}

fn address(value: &Value, key: &str, what: &str) -> Result<IpAddr, NetworkConfigError> {
    text(value, key)
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| NetworkConfigError::Malformed(format!("{what} has no valid {key}")))
}

fn static_subnet(network: &Value, id: &str) -> Result<Subnet, NetworkConfigError> {
    let what = format!("network {id:?}");
    let address = address(network, "ip_address", &what)?;
    let prefix = match network.get("netmask") {
        Some(mask) => prefix_of(mask)?,
        None => match address {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        },
    };
    let mut routes = Vec::new();
    for route in network
        .get("routes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        routes.push(Route {
            network: self::address(route, "network", &what)?,
            prefix: route
                .get("netmask")
                .map(prefix_of)
                .transpose()?
                .unwrap_or(0),
            gateway: self::address(route, "gateway", &what)?,
        });
    }
    let dns = network
        .get("services")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|s| text(s, "type") == Some("dns"))
        .filter_map(|s| text(s, "address").map(str::to_string))
        .collect();
    Ok(Subnet::Static {
        address,
        prefix,
        routes,
        dns,
    })
}

/// The links of `network_data.json` with their networks, named `eth0`,
/// `eth1`... in link order (VLANs `<parent>.<id>`).
fn interfaces(doc: &Value) -> Result<Vec<Interface>, NetworkConfigError> {
    let empty = Vec::new();
    let links = doc.get("links").and_then(Value::as_array).unwrap_or(&empty);
    let mut interfaces: Vec<(String, Interface)> = Vec::new();
    let mut physical = 0;
    for link in links {
        let id = text(link, "id").unwrap_or_default().to_string();
        let kind = text(link, "type").unwrap_or("phy");
        let mtu = link.get("mtu").and_then(Value::as_u64);
        let interface = if kind == "vlan" {
            let parent_id = text(link, "vlan_link").unwrap_or_default();
            let parent = interfaces
                .iter()
                .find(|(i, _)| i == parent_id)
                .map(|(_, p)| p.name.clone())
                .ok_or_else(|| {
                    NetworkConfigError::Malformed(format!(
                        "VLAN link {id:?} names vlan_link {parent_id:?}, which is not an earlier link"
                    ))
                })?;
            let vlan_id = link.get("vlan_id").and_then(Value::as_u64).ok_or_else(|| {
                NetworkConfigError::Malformed(format!("VLAN link {id:?} has no vlan_id"))
            })?;
            Interface {
                name: format!("{parent}.{vlan_id}"),
                mac: text(link, "vlan_mac_address").map(str::to_ascii_lowercase),
                mtu,
                vlan: Some((parent, vlan_id)),
                subnets: Vec::new(),
            }
        } else if matches!(
            kind,
            "phy"
                | "ethernet"
                | "ovs"
                | "bridge"
                | "tap"
                | "vif"
                | "hw_veb"
                | "hyperv"
                | "vhostuser"
                | "macvtap"
                | "dvs"
                | "vrouter"
                | "agilio_ovs"
                | "other"
        ) {
            let name = format!("eth{physical}");
            physical += 1;
            Interface {
                name,
                mac: text(link, "ethernet_mac_address").map(str::to_ascii_lowercase),
                mtu,
                vlan: None,
                subnets: Vec::new(),
            }
        } else {
            return Err(NetworkConfigError::UnsupportedLink(id, kind.to_string()));
        };
        interfaces.push((id, interface));
    }
    for network in doc
        .get("networks")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let id = text(network, "id").unwrap_or_default();
        let link = text(network, "link").unwrap_or_default();
        let subnet = match text(network, "type").unwrap_or_default() {
            "ipv4_dhcp" => Subnet::Dhcp4,
            "ipv6_dhcp" | "ipv6_dhcpv6-stateful" => Subnet::Dhcp6,
            "ipv6_slaac" => Subnet::Slaac,
            "ipv6_dhcpv6-stateless" => Subnet::Dhcp6Stateless,
            "ipv4" | "ipv6" => static_subnet(network, id)?,
            other => {
                return Err(NetworkConfigError::UnsupportedNetwork(
                    id.to_string(),
                    other.to_string(),
                ))
            }
        };
        let interface = interfaces
            .iter_mut()
            .find(|(i, _)| i == link)
            .map(|(_, interface)| interface)
            .ok_or_else(|| {
                NetworkConfigError::Malformed(format!(
                    "network {id:?} is on link {link:?}, which is not in links"
                ))
            })?;
        interface.subnets.push(subnet);
    }
    Ok(interfaces.into_iter().map(|(_, i)| i).collect())
}

/// The addresses of `services` of type `dns` at the top of the document.
fn global_dns(doc: &Value) -> Vec<String> {
    doc.get("services")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|s| text(s, "type") == Some("dns"))
        .filter_map(|s| text(s, "address").map(str::to_string))
        .collect()
}

/// A netmask's text for version 1 (dotted for IPv4, a length for IPv6).
fn netmask_v1(address: IpAddr, prefix: u8) -> Value {
    match address {
        IpAddr::V4(_) => {
            let bits = u32::MAX
                .checked_shl(32 - u32::from(prefix.min(32)))
                .unwrap_or(0);
            json!(Ipv4Addr::from(bits).to_string())
        }
        IpAddr::V6(_) => json!(prefix),
    }
}

fn v1(interfaces: &[Interface], dns: &[String]) -> Value {
    let mut config = Vec::new();
    for interface in interfaces {
        let mut entry = Map::new();
        match &interface.vlan {
            Some((parent, id)) => {
                entry.insert("type".into(), json!("vlan"));
                entry.insert("name".into(), json!(interface.name));
                entry.insert("vlan_link".into(), json!(parent));
                entry.insert("vlan_id".into(), json!(id));
            }
            None => {
                entry.insert("type".into(), json!("physical"));
                entry.insert("name".into(), json!(interface.name));
            }
        }
        if let Some(mac) = &interface.mac {
            entry.insert("mac_address".into(), json!(mac));
        }
        if let Some(mtu) = interface.mtu {
            entry.insert("mtu".into(), json!(mtu));
        }
        let subnets: Vec<Value> = interface
            .subnets
            .iter()
            .map(|subnet| match subnet {
                Subnet::Dhcp4 => json!({"type": "dhcp4"}),
                Subnet::Dhcp6 => json!({"type": "dhcp6"}),
                Subnet::Slaac => json!({"type": "ipv6_slaac"}),
                Subnet::Dhcp6Stateless => json!({"type": "ipv6_dhcpv6-stateless"}),
                Subnet::Static {
                    address,
                    prefix,
                    routes,
                    dns,
                } => {
                    let mut s = json!({
                        "type": "static",
                        "address": address.to_string(),
                        "netmask": netmask_v1(*address, *prefix),
                    });
                    if !routes.is_empty() {
                        s["routes"] = routes
                            .iter()
                            .map(|r| {
                                json!({
                                    "network": r.network.to_string(),
                                    "netmask": netmask_v1(r.network, r.prefix),
                                    "gateway": r.gateway.to_string(),
                                })
                            })
                            .collect();
                    }
                    if !dns.is_empty() {
                        s["dns_nameservers"] = json!(dns);
                    }
                    s
                }
            })
            .collect();
        if !subnets.is_empty() {
            entry.insert("subnets".into(), Value::Array(subnets));
        }
        config.push(Value::Object(entry));
    }
    if !dns.is_empty() {
        config.push(json!({"type": "nameserver", "address": dns}));
    }
    json!({"version": 1, "config": config})
}

fn v2(interfaces: &[Interface], dns: &[String]) -> Value {
    let (mut ethernets, mut vlans) = (Map::new(), Map::new());
    for interface in interfaces {
        let mut entry = Map::new();
        match &interface.vlan {
            Some((parent, id)) => {
                entry.insert("id".into(), json!(id));
                entry.insert("link".into(), json!(parent));
                if let Some(mac) = &interface.mac {
                    entry.insert("macaddress".into(), json!(mac));
                }
            }
            None => {
                if let Some(mac) = &interface.mac {
                    entry.insert("match".into(), json!({"macaddress": mac}));
                    entry.insert("set-name".into(), json!(interface.name));
                }
            }
        }
        if let Some(mtu) = interface.mtu {
            entry.insert("mtu".into(), json!(mtu));
        }
        let (mut addresses, mut routes, mut nameservers) = (Vec::new(), Vec::new(), Vec::new());
        for subnet in &interface.subnets {
            match subnet {
                Subnet::Dhcp4 => {
                    entry.insert("dhcp4".into(), json!(true));
                }
                Subnet::Dhcp6 | Subnet::Dhcp6Stateless => {
                    entry.insert("dhcp6".into(), json!(true));
                }
                Subnet::Slaac => {
                    entry.insert("accept-ra".into(), json!(true));
                }
                Subnet::Static {
                    address,
                    prefix,
                    routes: r,
                    dns: d,
                } => {
                    addresses.push(json!(format!("{address}/{prefix}")));
                    routes.extend(r.iter().map(|r| {
                        json!({"to": format!("{}/{}", r.network, r.prefix), "via": r.gateway.to_string()})
                    }));
                    nameservers.extend(d.iter().cloned());
                }
            }
        }
        nameservers.extend(dns.iter().cloned());
        nameservers.dedup();
        if !addresses.is_empty() {
            entry.insert("addresses".into(), Value::Array(addresses));
        }
        if !routes.is_empty() {
            entry.insert("routes".into(), Value::Array(routes));
        }
        if !nameservers.is_empty() {
            entry.insert("nameservers".into(), json!({"addresses": nameservers}));
        }
        match interface.vlan {
            Some(_) => vlans.insert(interface.name.clone(), Value::Object(entry)),
            None => ethernets.insert(interface.name.clone(), Value::Object(entry)),
        };
    }
    let mut doc = json!({"version": 2, "ethernets": ethernets});
    if !vlans.is_empty() {
        doc["vlans"] = Value::Object(vlans);
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::example_instance;

    fn parsed(bytes: &Bytes) -> Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn meta_data_names_the_instance_and_its_keys() {
        let md = parsed(&meta_data(&example_instance(), &RenderOptions::default()));
        assert_eq!(md["instance-id"], "6ca6d4c8-0f4e-4d54-8a07-7c21c7b5bd02");
        assert_eq!(md["local-hostname"], "demo.novalocal");
        assert!(md["public-keys"][0]
            .as_str()
            .unwrap()
            .ends_with("demo@meta169"));
    }

    #[test]
    fn the_example_network_in_both_versions() {
        let i = example_instance();
        let v1 = parsed(
            &network_config(&i, NetworkConfigVersion::V1)
                .unwrap()
                .unwrap(),
        );
        assert_eq!(v1["version"], 1);
        assert_eq!(v1["config"][0]["type"], "physical");
        assert_eq!(v1["config"][0]["name"], "eth0");
        assert_eq!(v1["config"][0]["mac_address"], "fa:16:3e:12:34:56");
        assert_eq!(v1["config"][0]["mtu"], 1442);
        assert_eq!(v1["config"][0]["subnets"][0]["type"], "dhcp4");
        assert_eq!(v1["config"][1]["type"], "nameserver");
        let v2 = parsed(
            &network_config(&i, NetworkConfigVersion::V2)
                .unwrap()
                .unwrap(),
        );
        assert_eq!(
            v2["ethernets"]["eth0"]["match"]["macaddress"],
            "fa:16:3e:12:34:56"
        );
        assert_eq!(v2["ethernets"]["eth0"]["dhcp4"], true);
        assert_eq!(
            v2["ethernets"]["eth0"]["nameservers"]["addresses"][0],
            "10.0.0.53"
        );
    }

    #[test]
    fn static_addresses_routes_and_vlans() {
        let mut i = example_instance();
        i.network_data = Some(json!({
            "links": [
                {"id": "l0", "type": "phy", "ethernet_mac_address": "FA:16:3E:00:00:01"},
                {"id": "l1", "type": "vlan", "vlan_link": "l0", "vlan_id": 42, "vlan_mac_address": "fa:16:3e:00:00:02"}
            ],
            "networks": [
                {"id": "n0", "type": "ipv4", "link": "l0", "ip_address": "192.0.2.10", "netmask": "255.255.255.0",
                 "routes": [{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "192.0.2.1"}],
                 "services": [{"type": "dns", "address": "192.0.2.53"}]},
                {"id": "n1", "type": "ipv6", "link": "l1", "ip_address": "2001:db8::10", "netmask": "ffff:ffff:ffff:ffff::"},
                {"id": "n2", "type": "ipv6_slaac", "link": "l0"}
            ],
            "services": []
        }));
        let v1 = parsed(
            &network_config(&i, NetworkConfigVersion::V1)
                .unwrap()
                .unwrap(),
        );
        let eth0 = &v1["config"][0];
        assert_eq!(eth0["mac_address"], "fa:16:3e:00:00:01");
        assert_eq!(eth0["subnets"][0]["address"], "192.0.2.10");
        assert_eq!(eth0["subnets"][0]["netmask"], "255.255.255.0");
        assert_eq!(eth0["subnets"][0]["routes"][0]["gateway"], "192.0.2.1");
        assert_eq!(eth0["subnets"][0]["routes"][0]["netmask"], "0.0.0.0");
        assert_eq!(eth0["subnets"][0]["dns_nameservers"][0], "192.0.2.53");
        assert_eq!(eth0["subnets"][1]["type"], "ipv6_slaac");
        let vlan = &v1["config"][1];
        assert_eq!(vlan["type"], "vlan");
        assert_eq!(vlan["name"], "eth0.42");
        assert_eq!(vlan["vlan_link"], "eth0");
        assert_eq!(vlan["subnets"][0]["netmask"], 64);
        let v2 = parsed(
            &network_config(&i, NetworkConfigVersion::V2)
                .unwrap()
                .unwrap(),
        );
        assert_eq!(v2["ethernets"]["eth0"]["addresses"][0], "192.0.2.10/24");
        assert_eq!(v2["ethernets"]["eth0"]["routes"][0]["to"], "0.0.0.0/0");
        assert_eq!(v2["ethernets"]["eth0"]["accept-ra"], true);
        assert_eq!(v2["vlans"]["eth0.42"]["id"], 42);
        assert_eq!(v2["vlans"]["eth0.42"]["addresses"][0], "2001:db8::10/64");
    }

    #[test]
    fn injected_files_become_write_files_in_vendor_data() {
        let mut i = example_instance();
        let options = RenderOptions::default();
        assert!(
            vendor_data(&i, &options).is_empty(),
            "no files, no static part"
        );
        i.files = vec![crate::model::InjectedFile {
            path: "/etc/motd".into(),
            content: Bytes::from_static(b"hi\n"),
        }];
        let text = String::from_utf8(vendor_data(&i, &options).to_vec()).unwrap();
        let doc: Value =
            serde_json::from_str(text.strip_prefix("#cloud-config\n").unwrap()).unwrap();
        assert_eq!(doc["write_files"][0]["path"], "/etc/motd");
        assert_eq!(doc["write_files"][0]["content"], "aGkK");
        assert_eq!(doc["write_files"][0]["encoding"], "b64");
        // With a static part too: both, as an archive of parts.
        let options = RenderOptions {
            vendor_static: Some(std::sync::Arc::new(
                json!({"cloud-init": "#cloud-config\nntp: {enabled: true}\n"}),
            )),
            ..RenderOptions::default()
        };
        let text = String::from_utf8(vendor_data(&i, &options).to_vec()).unwrap();
        let parts: Value =
            serde_json::from_str(text.strip_prefix("#cloud-config-archive\n").unwrap()).unwrap();
        assert!(parts[0]["content"].as_str().unwrap().contains("ntp"));
        assert!(parts[1]["content"]
            .as_str()
            .unwrap()
            .contains("write_files"));
        // And in vendor_data.json for the OpenStack datasource.
        let doc: Value =
            serde_json::from_str(&crate::openstack::vendor_data_json(&i, &options).unwrap())
                .unwrap();
        assert_eq!(doc["cloud-init"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn what_has_no_equivalent_is_named() {
        let mut i = example_instance();
        i.network_data = Some(json!({"links": [{"id": "b0", "type": "bond"}], "networks": []}));
        assert_eq!(
            network_config(&i, NetworkConfigVersion::V1).unwrap_err(),
            NetworkConfigError::UnsupportedLink("b0".into(), "bond".into())
        );
        i.network_data = Some(json!({"links": [{"id": "l0", "type": "phy"}],
            "networks": [{"id": "n0", "type": "ipv4", "link": "l0", "ip_address": "10.0.0.1", "netmask": "255.0.255.0"}]}));
        assert!(network_config(&i, NetworkConfigVersion::V1).is_err());
        i.network_data = None;
        i.ports.clear();
        assert_eq!(network_config(&i, NetworkConfigVersion::V1).unwrap(), None);
    }
}
