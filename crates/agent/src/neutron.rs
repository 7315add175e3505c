//! Names and identifiers the agent shares with Neutron, so that either can
//! take over the other's namespaces and Neutron's server recognises the
//! agent: namespace and veth names, the metadata addresses, the chassis
//! and agent UUIDs, and the Chassis_Private keys.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Namespaces are `ovnmeta-<network id>`.
pub const NAMESPACE_PREFIX: &str = "ovnmeta-";
/// `neutron:device_owner` of a network's metadata port (a localport).
pub const METADATA_OWNER: &str = "network:distributed";
/// Port_Binding types that are VM ports (Neutron's VIF types, less the
/// localport that is the metadata port itself).
pub const VM_PORT_TYPES: &[&str] = &["", "external"];
/// The metadata address on IPv4.
pub const METADATA_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
/// The metadata address on IPv6 (link-local).
pub const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0xa9fe, 0xa9fe);
/// The port listeners take in a namespace.
pub const METADATA_PORT: u16 = 80;

/// Characters of the network id in a veth name (interface names are at
/// most 15 characters: `tap` + 10 + `0`/`1`).
const VETH_ID_CHARS: usize = 10;

/// Chassis_Private key: the agent's id, as Neutron's server lists agents.
pub const KEY_AGENT_ID: &str = "neutron:ovn-metadata-id";
/// Chassis_Private key: the integration bridge the agent plugs into.
pub const KEY_BRIDGE: &str = "neutron:ovn-bridge";
/// Chassis_Private key: the last SB_Global nb_cfg the agent has seen
/// (Neutron's liveness check).
pub const KEY_SB_CFG: &str = "neutron:ovn-metadata-sb-cfg";

/// Neutron's namespace UUID for chassis names that are not UUIDs.
const CHASSIS_NAMESPACE: uuid::Uuid = uuid::uuid!("d34bf9f6-da32-4871-9af8-15a4626b41ab");

/// The namespace of a network.
pub fn namespace_of(network_id: &str) -> String {
    format!("{NAMESPACE_PREFIX}{network_id}")
}

/// The network of a namespace name, if it is one of ours.
pub fn network_of_namespace(namespace: &str) -> Option<&str> {
    namespace.strip_prefix(NAMESPACE_PREFIX)
}

/// Neutron's veth names: `tap` + 10 characters of the network id + `0`
/// (outer end, on the bridge) / `1` (inner end, in the namespace).
pub fn veth_names(network_id: &str) -> (String, String) {
    let short: String = network_id.chars().take(VETH_ID_CHARS).collect();
    (format!("tap{short}0"), format!("tap{short}1"))
}

/// Neutron's chassis UUID: the name if it is a UUID, else UUIDv5 of it.
pub fn chassis_uuid(name: &str) -> uuid::Uuid {
    uuid::Uuid::parse_str(name)
        .unwrap_or_else(|_| uuid::Uuid::new_v5(&CHASSIS_NAMESPACE, name.as_bytes()))
}

/// Neutron's agent id for this chassis: UUIDv5(chassis UUID, "metadata_agent").
pub fn metadata_agent_id(chassis: &str) -> String {
    uuid::Uuid::new_v5(&chassis_uuid(chassis), b"metadata_agent").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_neutron() {
        assert_eq!(
            veth_names("6cc81cae-8c5f-4c09-aaf2-35d0aa95c084"),
            ("tap6cc81cae-80".to_string(), "tap6cc81cae-81".to_string())
        );
        assert_eq!(namespace_of("n1"), "ovnmeta-n1");
        assert_eq!(network_of_namespace("ovnmeta-n1"), Some("n1"));
        assert_eq!(network_of_namespace("qdhcp-n1"), None);
        let id = "6ca6d4c8-0f4e-4d54-8a07-7c21c7b5bd02";
        assert_eq!(chassis_uuid(id).to_string(), id);
        assert_ne!(chassis_uuid("compute-1").to_string(), "compute-1");
    }
}
