//! Who a guest is: (network, IP) and (network, MAC) → instance, kept in
//! memory so the request path never waits on a database, published whole
//! after each Southbound change with every instance's signature computed
//! once.

use http::HeaderValue;
use meta169_http::address::canonical_ip;
use meta169_http::mac::mac_from_eui64;
use meta169_http::signing::sign_instance_id;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

/// Who a (network, address) belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub instance_id: String,
    pub project_id: String,
}

/// The index itself. Keyed by network first, so a lookup borrows the
/// network id instead of allocating a key.
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

    /// Add a port's addresses (the Southbound reader builds the index;
    /// benchmarks and tests build one directly).
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

    /// Who is `address` on `network`? IPv6 link-local guests by the MAC in
    /// their EUI-64 address, IPv4-mapped addresses as IPv4, as Neutron does.
    pub fn lookup(&self, network: &str, address: IpAddr) -> Option<&Arc<Target>> {
        match canonical_ip(address) {
            IpAddr::V6(v6) if v6.is_unicast_link_local() => {
                self.by_mac(network, mac_from_eui64(v6)?)
            }
            address => self.by_ip(network, address),
        }
    }
}

/// A published index with the signature of every instance in it.
#[derive(Debug, Default)]
struct Published {
    index: Arc<Index>,
    signatures: HashMap<String, HeaderValue>,
}

/// The index the listeners read, replaced whole after each change.
pub struct Guests {
    secret: Vec<u8>,
    published: RwLock<Arc<Published>>,
}

impl Guests {
    /// Signatures are made with `metadata_proxy_shared_secret`.
    pub fn new(secret: &[u8]) -> Guests {
        Guests {
            secret: secret.to_vec(),
            published: RwLock::new(Arc::default()),
        }
    }

    /// Publish a new index; an unchanged one costs nothing.
    pub fn publish(&self, index: Index) {
        if self.index().as_ref() == &index {
            return;
        }
        let signatures = index
            .targets()
            .filter_map(|t| {
                let signature = sign_instance_id(&self.secret, &t.instance_id);
                Some((
                    t.instance_id.clone(),
                    HeaderValue::from_str(&signature).ok()?,
                ))
            })
            .collect();
        let published = Arc::new(Published {
            index: Arc::new(index),
            signatures,
        });
        if let Ok(mut slot) = self.published.write() {
            *slot = published;
        }
    }

    fn current(&self) -> Arc<Published> {
        self.published.read().map(|p| p.clone()).unwrap_or_default()
    }

    /// The index now.
    pub fn index(&self) -> Arc<Index> {
        self.current().index.clone()
    }

    /// The instance at `address` on `network`, with its signature.
    pub fn lookup(&self, network: &str, address: IpAddr) -> Option<(Arc<Target>, HeaderValue)> {
        let current = self.current();
        let target = current.index.lookup(network, address)?.clone();
        let signature = match current.signatures.get(&target.instance_id) {
            Some(signature) => signature.clone(),
            // Only an instance id that is not header text has none; it
            // cannot be forwarded either.
            None => {
                HeaderValue::from_str(&sign_instance_id(&self.secret, &target.instance_id)).ok()?
            }
        };
        Some((target, signature))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(id: &str) -> Target {
        Target {
            instance_id: id.into(),
            project_id: "p".into(),
        }
    }

    #[test]
    fn lookups_follow_neutrons_rules() {
        let mut index = Index::default();
        let mac = [0xfa, 0x16, 0x3e, 0x12, 0x34, 0x56];
        index.insert("n1", mac, &["10.0.0.5".parse().unwrap()], target("a"));
        index.insert(
            "n2",
            [0xfa, 0x16, 0x3e, 0, 0, 9],
            &["10.0.0.5".parse().unwrap()],
            target("b"),
        );
        let guests = Guests::new(b"s3cret");
        guests.publish(index);
        let id = |n: &str, a: &str| {
            guests
                .lookup(n, a.parse().unwrap())
                .map(|(t, _)| t.instance_id.clone())
        };
        assert_eq!(id("n1", "10.0.0.5").as_deref(), Some("a"));
        assert_eq!(
            id("n2", "10.0.0.5").as_deref(),
            Some("b"),
            "same IP, other network"
        );
        assert_eq!(id("n1", "::ffff:10.0.0.5").as_deref(), Some("a"));
        assert_eq!(id("n1", "fe80::f816:3eff:fe12:3456").as_deref(), Some("a"));
        assert_eq!(id("n1", "fe80::1c2d:3a4b:5c6d:7e8f"), None, "not EUI-64");
        assert_eq!(id("n3", "10.0.0.5"), None);
        let (_, signature) = guests.lookup("n1", "10.0.0.5".parse().unwrap()).unwrap();
        assert_eq!(signature, sign_instance_id(b"s3cret", "a").as_str());
    }
}
