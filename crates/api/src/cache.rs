//! Loaded instances and address lookups, kept in memory so that serving a
//! request is a lookup, not a database round trip and not a render.
//!
//! An entry goes when the store announces a change to it (any process,
//! any replica: see `meta169_store::ChangeFeed`), when it is older than
//! the TTL (Nova's `metadata_cache_expiration`; an expired entry is still
//! served while the store cannot be reached, and while another request
//! reloads it), or when the cache is over its bounds, least recently used
//! first. A load that raced with a change is served but not kept, so an
//! announcement is never undone by a read that started before it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

mod loaded_instance;

pub use crate::under_way::RefreshClaim;
pub use loaded_instance::LoadedInstance;

/// Default bound on cached instances.
pub const DEFAULT_MAX_INSTANCES: usize = 100_000;

/// Default bound on the cache's estimated size.
pub const DEFAULT_MAX_BYTES: usize = 1 << 30;

/// Address mappings kept per cached instance at most (ports per instance
/// are few; a flood of unknown addresses cannot grow the map past this).
const ADDRESSES_PER_INSTANCE: usize = 4;

/// An eviction removes at least this fraction (1/N) of the entries, so the
/// scan it takes is paid once per many inserts.
const EVICTION_BATCH_DIVISOR: usize = 16;

/// The cache's bounds.
#[derive(Clone, Copy, Debug)]
pub struct CacheLimits {
    /// How long an entry is served before the store is asked again; zero
    /// turns caching off.
    pub ttl: Duration,
    pub max_instances: usize,
    /// Estimated bytes (see [`LoadedInstance::weight`]).
    pub max_bytes: usize,
}

/// A cache answer.
pub enum Cached {
    Fresh(Arc<LoadedInstance>),
    /// Older than the TTL: ask the store, and serve this if it cannot answer.
    Expired(Arc<LoadedInstance>),
}

/// What an address lookup is keyed by: a network (or any network, for
/// source-address mode) and an address or MAC.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum AddressKey {
    NetworkIp(String, IpAddr),
    NetworkMac(String, [u8; 6]),
    AnyNetworkIp(IpAddr),
    /// A MAC on any network (identity by MAC).
    AnyNetworkMac([u8; 6]),
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
            AddressKey::AnyNetworkMac(mac) => {
                write!(f, "MAC {}", meta169_http::mac::format_mac(mac))
            }
        }
    }
}

/// foldhash: seeded per process like the standard SipHash, several times
/// faster on the uuids and addresses looked up on every request.
type Hasher = foldhash::fast::RandomState;

struct Slot {
    loaded: Arc<LoadedInstance>,
    /// When it stops being fresh (`None`: a TTL past the clock's range);
    /// kept as an instant so each hit is one comparison, not a subtraction.
    fresh_until: Option<Instant>,
    /// Milliseconds after the cache's start of the last use.
    used_ms: AtomicU64,
}

struct Timed {
    uuid: Arc<str>,
    at: Instant,
    /// Set while one request looks the address up again once expired.
    refreshing: Arc<AtomicBool>,
}

/// Both caches of the metadata side.
pub struct Caches {
    limits: CacheLimits,
    start: Instant,
    instances: RwLock<HashMap<Box<str>, Slot, Hasher>>,
    bytes: AtomicUsize,
    addresses: RwLock<HashMap<AddressKey, Timed, Hasher>>,
    /// Bumped by every invalidation; loads that saw another value drop
    /// their result instead of caching it.
    generation: AtomicU64,
}

impl Caches {
    pub fn new(limits: CacheLimits) -> Self {
        Caches {
            limits,
            start: Instant::now(),
            instances: RwLock::new(HashMap::default()),
            bytes: AtomicUsize::new(0),
            addresses: RwLock::new(HashMap::default()),
            generation: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// A cached instance, fresh or expired as of `now` (the request's
    /// arrival: one clock read per request serves every check).
    pub fn instance(&self, uuid: &str, now: Instant) -> Option<Cached> {
        let map = self.instances.read().unwrap_or_else(|e| e.into_inner());
        let slot = map.get(uuid)?;
        let now_ms = now.saturating_duration_since(self.start).as_millis() as u64;
        // Writing only when the millisecond changed keeps the hot path
        // from bouncing the slot's cache line between cores.
        if slot.used_ms.load(Ordering::Relaxed) != now_ms {
            slot.used_ms.store(now_ms, Ordering::Relaxed);
        }
        let loaded = slot.loaded.clone();
        Some(match slot.fresh_until {
            Some(until) if now >= until => Cached::Expired(loaded),
            _ => Cached::Fresh(loaded),
        })
    }

    /// The current generation, read before a load from the store.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Keep a loaded instance unless something was invalidated since
    /// `generation`. Returns how many instances were evicted for room.
    pub fn put_instance(&self, loaded: Arc<LoadedInstance>, generation: u64) -> usize {
        if self.limits.ttl.is_zero() {
            return 0;
        }
        let mut map = self.instances.write().unwrap_or_else(|e| e.into_inner());
        if self.generation() != generation {
            return 0;
        }
        let weight = loaded.weight();
        let slot = Slot {
            fresh_until: loaded.loaded_at().checked_add(self.limits.ttl),
            loaded,
            used_ms: AtomicU64::new(self.now_ms()),
        };
        let key = slot.loaded.uuid.clone();
        if let Some(old) = map.insert(key, slot) {
            self.bytes.fetch_sub(old.loaded.weight(), Ordering::Relaxed);
        }
        self.bytes.fetch_add(weight, Ordering::Relaxed);
        self.evict_if_over(&mut map)
    }

    fn over(&self, map: &HashMap<Box<str>, Slot, Hasher>) -> bool {
        map.len() > self.limits.max_instances
            || self.bytes.load(Ordering::Relaxed) > self.limits.max_bytes
    }

    /// Drop the least recently used entries, a batch at a time, until
    /// within bounds.
    fn evict_if_over(&self, map: &mut HashMap<Box<str>, Slot, Hasher>) -> usize {
        let mut evicted = 0;
        while self.over(map) && !map.is_empty() {
            let mut used: Vec<u64> = map
                .values()
                .map(|slot| slot.used_ms.load(Ordering::Relaxed))
                .collect();
            let excess = map.len().saturating_sub(self.limits.max_instances);
            let count = excess.max(map.len() / EVICTION_BATCH_DIVISOR).max(1);
            let (_, threshold, _) = used.select_nth_unstable(count - 1);
            let threshold = *threshold;
            // Many entries may share the threshold's millisecond (a boot
            // storm): of those, only as many go as the batch needs.
            let mut at_threshold = count - used.iter().filter(|u| **u < threshold).count();
            let before = map.len();
            let mut freed = 0;
            map.retain(|_, slot| {
                let used = slot.used_ms.load(Ordering::Relaxed);
                let keep = used > threshold || (used == threshold && at_threshold == 0);
                if used == threshold && !keep {
                    at_threshold -= 1;
                }
                if !keep {
                    freed += slot.loaded.weight();
                }
                keep
            });
            self.bytes.fetch_sub(freed, Ordering::Relaxed);
            evicted += before - map.len();
        }
        evicted
    }

    /// Instances cached now.
    pub fn instances(&self) -> usize {
        self.instances
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Estimated bytes cached now.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The instance an address belongs to, and whether the mapping is
    /// older than the TTL as of `now`.
    pub fn address(&self, key: &AddressKey, now: Instant) -> Option<(Arc<str>, bool)> {
        let map = self.addresses.read().unwrap_or_else(|e| e.into_inner());
        map.get(key).map(|t| {
            (
                t.uuid.clone(),
                now.saturating_duration_since(t.at) >= self.limits.ttl,
            )
        })
    }

    /// The right to look an expired address up again, unless another
    /// request holds it (see [`RefreshClaim`]).
    pub fn claim_address_refresh(&self, key: &AddressKey) -> Option<RefreshClaim> {
        let map = self.addresses.read().unwrap_or_else(|e| e.into_inner());
        RefreshClaim::take(&map.get(key)?.refreshing)
    }

    /// An address that no longer belongs to any instance.
    pub fn forget_address(&self, key: &AddressKey) {
        let mut map = self.addresses.write().unwrap_or_else(|e| e.into_inner());
        self.bump();
        map.remove(key);
    }

    pub fn put_address(&self, key: AddressKey, uuid: Arc<str>, generation: u64) {
        if self.limits.ttl.is_zero() {
            return;
        }
        let mut map = self.addresses.write().unwrap_or_else(|e| e.into_inner());
        if self.generation() != generation {
            return;
        }
        let cap = self
            .limits
            .max_instances
            .saturating_mul(ADDRESSES_PER_INSTANCE);
        if map.len() >= cap {
            let ttl = self.limits.ttl;
            map.retain(|_, t| t.at.elapsed() < ttl);
            if map.len() >= cap {
                map.clear();
            }
        }
        map.insert(
            key,
            Timed {
                uuid,
                at: Instant::now(),
                refreshing: Arc::default(),
            },
        );
    }

    fn bump(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    fn remove_instance(&self, uuid: &str) {
        let mut map = self.instances.write().unwrap_or_else(|e| e.into_inner());
        self.bump();
        if let Some(old) = map.remove(uuid) {
            self.bytes.fetch_sub(old.loaded.weight(), Ordering::Relaxed);
        }
    }

    /// The record changed (or went): its tree and its addresses go.
    pub fn invalidate(&self, uuid: &str) {
        self.remove_instance(uuid);
        self.addresses
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, t| &*t.uuid != uuid);
    }

    /// Only the password changed: the addresses stay.
    pub fn forget_instance(&self, uuid: &str) {
        self.remove_instance(uuid);
    }

    /// Anything may have changed.
    pub fn clear(&self) {
        let mut map = self.instances.write().unwrap_or_else(|e| e.into_inner());
        self.bump();
        map.clear();
        self.bytes.store(0, Ordering::Relaxed);
        drop(map);
        self.addresses
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

#[cfg(test)]
mod tests;
