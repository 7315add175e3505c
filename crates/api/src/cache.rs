//! Loaded instances and address lookups, kept in memory so that serving a
//! request is a lookup, not a database round trip and not a render. Entries
//! live for the configured TTL (Nova's `metadata_cache_expiration`) and are
//! dropped at once when this process changes the record.

use bytes::Bytes;
use meta169_tree::{Instance, Tree};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Most entries kept; past this, expired entries are swept and, if that is
/// not enough, the cache starts over (a flood of distinct guests cannot
/// grow memory without bound).
pub const MAX_CACHED_INSTANCES: usize = 100_000;

/// One instance with its rendered tree.
#[derive(Debug)]
pub struct LoadedInstance {
    pub instance: Instance,
    pub tree: Tree,
    pub password: String,
    pub revision: i64,
    loaded_at: Instant,
    /// `vendor_data2.json`, built on first request (it calls the dynamic targets).
    pub vendor_data2: tokio::sync::OnceCell<Bytes>,
}

impl LoadedInstance {
    pub fn new(instance: Instance, tree: Tree, password: String, revision: i64) -> Self {
        LoadedInstance {
            instance,
            tree,
            password,
            revision,
            loaded_at: Instant::now(),
            vendor_data2: tokio::sync::OnceCell::new(),
        }
    }
}

/// What an address lookup is keyed by: a network (or any network, for
/// source-address mode) and an address or MAC.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum AddressKey {
    NetworkIp(String, IpAddr),
    NetworkMac(String, [u8; 6]),
    AnyNetworkIp(IpAddr),
}

impl std::fmt::Display for AddressKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AddressKey::NetworkIp(network, ip) => write!(f, "{ip} on network {network}"),
            AddressKey::NetworkMac(network, mac) => {
                write!(
                    f,
                    "MAC {} on network {network}",
                    meta169_http::mac::format_mac(mac)
                )
            }
            AddressKey::AnyNetworkIp(ip) => write!(f, "{ip}"),
        }
    }
}

struct Timed<T> {
    value: T,
    at: Instant,
}

/// A small TTL map; reads take a shared lock and clone an `Arc` or a `String`.
struct TtlMap<K, V> {
    ttl: Duration,
    map: RwLock<HashMap<K, Timed<V>>>,
}

impl<K: std::hash::Hash + Eq + Clone, V: Clone> TtlMap<K, V> {
    fn new(ttl: Duration) -> Self {
        TtlMap {
            ttl,
            map: RwLock::new(HashMap::new()),
        }
    }

    fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        map.get(key)
            .filter(|t| t.at.elapsed() < self.ttl)
            .map(|t| t.value.clone())
    }

    fn insert(&self, key: K, value: V, at: Instant) {
        if self.ttl.is_zero() {
            return;
        }
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_CACHED_INSTANCES {
            let ttl = self.ttl;
            map.retain(|_, t| t.at.elapsed() < ttl);
            if map.len() >= MAX_CACHED_INSTANCES {
                map.clear();
            }
        }
        map.insert(key, Timed { value, at });
    }

    fn remove<Q>(&self, key: &Q)
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.map
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    fn len(&self) -> usize {
        self.map.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn clear(&self) {
        self.map.write().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// Both caches of the metadata side.
pub struct Caches {
    instances: TtlMap<String, Arc<LoadedInstance>>,
    addresses: TtlMap<AddressKey, String>,
}

impl Caches {
    pub fn new(ttl: Duration) -> Self {
        Caches {
            instances: TtlMap::new(ttl),
            addresses: TtlMap::new(ttl),
        }
    }

    pub fn instance(&self, uuid: &str) -> Option<Arc<LoadedInstance>> {
        self.instances.get(uuid)
    }

    pub fn put_instance(&self, loaded: Arc<LoadedInstance>) {
        let at = loaded.loaded_at;
        self.instances
            .insert(loaded.instance.uuid.clone(), loaded, at);
    }

    /// Instances cached now (expired ones included until swept).
    pub fn instances(&self) -> usize {
        self.instances.len()
    }

    pub fn address(&self, key: &AddressKey) -> Option<String> {
        self.addresses.get(key)
    }

    pub fn put_address(&self, key: AddressKey, uuid: String) {
        self.addresses.insert(key, uuid, Instant::now());
    }

    /// Forget an instance after this process changed it; address mappings
    /// may have moved too, so they all go.
    pub fn invalidate(&self, uuid: &str) {
        self.instances.remove(uuid);
        self.addresses.clear();
    }
}
