//! What the Southbound says this chassis needs: [`SbView`].

use crate::index::Index;
use crate::neutron::{namespace_of, veth_names, METADATA_V4, METADATA_V6};
use ipnet::IpNet;
use meta169_http::mac::eui64_link_local;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};

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
        namespace_of(&self.network_id)
    }

    /// The veth ends (outer, inner).
    pub fn veth_names(&self) -> (String, String) {
        veth_names(&self.network_id)
    }

    /// The addresses of the inner end (Neutron's provisioning step 6): the
    /// metadata address, the metadata port's address on each subnet with a
    /// VM here, and the IPv6 link-local ones where a VM has IPv6.
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

/// The agent's reading of the Southbound replica.
#[derive(Clone, Debug, Default)]
pub struct SbView {
    pub chassis_uuid: Option<String>,
    /// (row uuid, external_ids, nb_cfg) of our Chassis_Private row.
    pub chassis_private: Option<(String, HashMap<String, String>, i64)>,
    pub sb_nb_cfg: Option<i64>,
    /// Datapath uuid → network id, for every datapath with a VM port here
    /// (an empty id until the datapath's row has arrived).
    pub local_datapaths: BTreeMap<String, String>,
    /// Networks that need metadata here, by network id.
    pub networks: BTreeMap<String, NetworkSpec>,
    pub index: Index,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_follow_neutron() {
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
