//! Instances and addresses through the caches: a hit is a lookup; a miss
//! or an expired entry is one store read, shared by the requests that
//! need it (the others wait for a missing entry, and are answered from an
//! expired one meanwhile).

use super::MetadataService;
use crate::cache::{AddressKey, Cached, LoadedInstance};
use crate::error::ApiError;
use meta169_http::mac::format_mac;
use std::sync::Arc;
use std::time::Instant;

impl MetadataService {
    /// Is the store known unreachable right now? Then expired entries are
    /// served without waiting for it.
    fn store_down(&self) -> bool {
        self.freshness.last_error().is_some()
    }

    /// Load (or take from the cache) an instance and its tree.
    pub async fn load(
        &self,
        uuid: &str,
        now: Instant,
    ) -> Result<Option<Arc<LoadedInstance>>, ApiError> {
        let (stale, _claim) = match self.caches.instance(uuid, now) {
            Some(Cached::Fresh(hit)) => {
                self.metrics.cache_hit();
                return Ok(Some(hit));
            }
            Some(Cached::Expired(stale)) if self.store_down() => {
                self.metrics.stale_answers.inc();
                return Ok(Some(stale));
            }
            Some(Cached::Expired(stale)) => match stale.claim_refresh() {
                Some(claim) => (Some(stale), Some(claim)),
                // Another request is reloading it; its TTL just ran out.
                None => {
                    self.metrics.cache_hit();
                    return Ok(Some(stale));
                }
            },
            None => {
                // Joined only by requests that arrived before any change
                // since: one that arrives after a change reads anew.
                let generation = self.caches.generation();
                let read = || async {
                    self.read_instance(uuid, None, generation)
                        .await
                        .map_err(|_| ())
                };
                return self
                    .under_way
                    .join((generation, uuid.into()), read)
                    .await
                    .map_err(|()| ApiError::Internal);
            }
        };
        self.read_instance(uuid, stale, self.caches.generation())
            .await
    }

    /// Read an instance from the store into the cache (unless something
    /// changed since `generation`); `stale` is its expired entry, served
    /// if the store cannot be reached.
    async fn read_instance(
        &self,
        uuid: &str,
        stale: Option<Arc<LoadedInstance>>,
        generation: u64,
    ) -> Result<Option<Arc<LoadedInstance>>, ApiError> {
        self.metrics.cache_misses.inc();
        let stored = match self.store.get_instance(uuid).await {
            Ok(stored) => stored,
            Err(e) => {
                self.metrics.store_errors.inc();
                if let Some(stale) = stale {
                    self.metrics.stale_answers.inc();
                    tracing::debug!(instance = %uuid, "store unreachable, serving the cached record: {e}");
                    return Ok(Some(stale));
                }
                tracing::error!(instance = %uuid, "loading instance failed: {e}");
                return Err(ApiError::Internal);
            }
        };
        let Some(stored) = stored else {
            // Gone from the store: its cached tree and addresses go too,
            // or requests arriving meanwhile would still be served them.
            if stale.is_some() {
                self.caches.invalidate(uuid);
            }
            return Ok(None);
        };
        let loaded = Arc::new(LoadedInstance::new(
            stored.instance,
            self.render.clone(),
            stored.password,
            stored.revision,
        ));
        let evicted = self.caches.put_instance(loaded.clone(), generation);
        self.metrics.cache_evictions.inc_by(evicted as u64);
        self.metrics.cache_sizes(&self.caches);
        Ok(Some(loaded))
    }

    /// The instance an address belongs to (none: `None`), through the
    /// address cache.
    pub(super) async fn lookup_address(
        &self,
        key: AddressKey,
        now: Instant,
    ) -> Result<Option<Arc<str>>, ApiError> {
        let (stale, _claim) = match self.caches.address(&key, now) {
            Some((uuid, false)) => return Ok(Some(uuid)),
            Some((uuid, true)) if self.store_down() => return Ok(Some(uuid)),
            Some((uuid, true)) => match self.caches.claim_address_refresh(&key) {
                Some(claim) => (Some(uuid), Some(claim)),
                // Another request is looking it up again.
                None => return Ok(Some(uuid)),
            },
            None => (None, None),
        };
        let generation = self.caches.generation();
        let found = match &key {
            AddressKey::NetworkIp(network, ip) => self.store.find_by_network_ip(network, *ip).await,
            AddressKey::NetworkMac(network, mac) => {
                self.store
                    .find_by_network_mac(network, &format_mac(mac))
                    .await
            }
            AddressKey::AnyNetworkIp(ip) => self.store.find_by_ip(*ip).await,
            AddressKey::AnyNetworkMac(mac) => self.store.find_by_mac(&format_mac(mac)).await,
        };
        let found = match found {
            Ok(found) => found,
            Err(e) => {
                self.metrics.store_errors.inc();
                if stale.is_some() {
                    return Ok(stale);
                }
                tracing::error!("address lookup failed: {e}");
                return Err(ApiError::Internal);
            }
        };
        match found.as_slice() {
            [] => {
                if stale.is_some() {
                    self.caches.forget_address(&key);
                }
                Ok(None)
            }
            [uuid] => {
                let uuid: Arc<str> = uuid.as_str().into();
                self.caches.put_address(key, uuid.clone(), generation);
                Ok(Some(uuid))
            }
            many => {
                tracing::error!(address = %key, instances = %many.join(", "), "address belongs to several instances; register the ports with their network ids");
                Err(ApiError::Ambiguous(format!(
                    "The address belongs to {} instances; the operator must make it unique.",
                    many.len()
                )))
            }
        }
    }
}
