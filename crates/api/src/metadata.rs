//! The metadata side's state (store, caches, settings) and how a caller's
//! instance is found (loaded through the caches: `loading`); the request
//! path itself is in [`crate::request`]. Mirrors Nova's lookups: a signed
//! request names its instance, an unsigned one is found by its address on
//! a network.

use crate::cache::{AddressKey, Cached, Caches, LoadedInstance};
use crate::cache_feed::{follow, AbortOnDrop};
use crate::error::ApiError;
use crate::identity::{Caller, Identity};
use crate::metrics::ServeMetrics;
use crate::neighbours::{NeighbourError, Neighbours};
use crate::settings::{ApiSettings, ServerLimits};
use crate::under_way::UnderWay;
use crate::vendordata::VendorData;
use meta169_http::mac::{format_mac, mac_from_eui64};
use meta169_http::signing::SignatureMemo;
use meta169_store::{Freshness, Store};
use meta169_tree::RenderOptions;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

mod loading;

/// What a store read of an instance gives those who waited for it (the
/// error is logged by the one that read).
type SharedRead = Result<Option<Arc<LoadedInstance>>, ()>;

/// Shared state of the metadata side.
pub struct MetadataService {
    pub store: Arc<dyn Store>,
    pub settings: ApiSettings,
    pub limits: ServerLimits,
    pub caches: Arc<Caches>,
    pub vendor: VendorData,
    pub metrics: Arc<ServeMetrics>,
    render: Arc<RenderOptions>,
    /// Store reads of instances missing from the cache, by instance id.
    under_way: UnderWay<(u64, Box<str>), SharedRead>,
    /// Expected proxy signatures, computed once per instance id.
    pub(crate) signatures: SignatureMemo,
    /// Until when the store's change feed is known complete.
    freshness: Arc<Freshness>,
    /// The neighbour table, when callers may be identified by MAC.
    neighbours: Option<Neighbours>,
    /// Applies the feed to the caches; stops with the service.
    _follower: AbortOnDrop,
}

/// Why the service could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("cannot set up the vendordata HTTP client: {0}")]
    Vendor(#[from] reqwest::Error),
    #[error("identity by MAC: {0}")]
    Neighbours(#[from] NeighbourError),
}

impl MetadataService {
    /// The service, following the store's changes from now on (needs a
    /// Tokio runtime).
    pub fn new(
        store: Arc<dyn Store>,
        settings: ApiSettings,
        limits: ServerLimits,
    ) -> Result<Self, ServiceError> {
        let neighbours = match settings.identity.by_mac {
            true => Some(Neighbours::open()?),
            false => None,
        };
        let caches = Arc::new(Caches::new(settings.cache));
        let metrics = Arc::new(ServeMetrics::new());
        let feed = store.changes();
        let freshness = feed.freshness.clone();
        let follower = tokio::spawn(follow(
            feed.changes,
            freshness.clone(),
            caches.clone(),
            metrics.clone(),
        ));
        Ok(MetadataService {
            vendor: VendorData::new(&settings)?,
            render: Arc::new(settings.render.clone()),
            under_way: UnderWay::default(),
            signatures: SignatureMemo::new(&settings.identity.shared_secret),
            neighbours,
            caches,
            metrics,
            freshness,
            _follower: AbortOnDrop(follower),
            store,
            settings,
            limits,
        })
    }

    /// Ready while the cache cannot have missed changes for longer than
    /// the staleness bound; the reason otherwise.
    pub fn readiness(&self) -> Result<(), String> {
        let bound = self.settings.max_staleness;
        let why = || {
            self.freshness
                .last_error()
                .unwrap_or_else(|| "no answer yet".to_string())
        };
        match self.freshness.age() {
            Some(age) if age <= bound => Ok(()),
            Some(age) => Err(format!(
                "store unreachable: {}; cached answers may be {:.1} s behind, over the {:.1} s bound",
                why(),
                age.as_secs_f64(),
                bound.as_secs_f64()
            )),
            None => Err(format!("store unreachable: {}", why())),
        }
    }

    /// The instance at TCP peer `address`: by the address itself
    /// (`by_source`), else by its MAC in the neighbour table (`by_mac`).
    async fn resolve_peer(&self, address: IpAddr, now: Instant) -> Result<Arc<str>, ApiError> {
        let identity = &self.settings.identity;
        if identity.by_source {
            if let Some(uuid) = self
                .lookup_address(AddressKey::AnyNetworkIp(address), now)
                .await?
            {
                return Ok(uuid);
            }
        }
        let Some(neighbours) = &self.neighbours else {
            return Err(ApiError::NotFound(format!(
                "No instance has the address {address}."
            )));
        };
        let mac = neighbours.mac_of(address).await.map_err(|e| {
            tracing::error!("identity by MAC: {e}");
            ApiError::Internal
        })?;
        let Some(mac) = mac else {
            return Err(ApiError::NotFound(format!(
                "No instance has the address {address}, and the neighbour table has no MAC for it (identity by MAC needs guests on a directly attached network)."
            )));
        };
        self.lookup_address(AddressKey::AnyNetworkMac(mac), now)
            .await?
            .ok_or_else(|| {
                ApiError::NotFound(format!(
                    "No instance has the address {address} or its MAC {}.",
                    format_mac(&mac)
                ))
            })
    }

    /// The instance a caller is, or Nova's 404; caches judged as of `now`.
    pub async fn resolve(
        &self,
        caller: &Caller<'_>,
        now: Instant,
    ) -> Result<Arc<LoadedInstance>, ApiError> {
        let found = match caller.identity {
            Identity::Signed { .. } => None,
            Identity::ByAddress {
                network_id,
                address,
            } => {
                let key = address_key(network_id, address)?;
                let found = self.lookup_address(key, now).await?.ok_or_else(|| {
                    ApiError::NotFound(format!("Instance was not found on network {network_id}."))
                })?;
                Some(found)
            }
            Identity::BySource { address } => Some(self.resolve_peer(address, now).await?),
        };
        let not_found = || ApiError::NotFound("Instance was not found.".into());
        let (uuid, expected_project) =
            claimed(&caller.identity, found.as_deref()).ok_or_else(not_found)?;
        let loaded = self.load(uuid, now).await?.ok_or_else(not_found)?;
        check_project(loaded, expected_project)
    }

    /// Whether `signature` is `instance_id`'s: checked against the cached
    /// instance's own when it is cached and fresh (then kept in `found`,
    /// for [`Self::resolve_cached`]), else against the memo.
    pub(crate) fn signed(
        &self,
        instance_id: &str,
        signature: &[u8],
        now: Instant,
        found: &mut Option<Arc<LoadedInstance>>,
    ) -> bool {
        match self.caches.instance(instance_id, now) {
            Some(Cached::Fresh(loaded)) => {
                let matches = loaded.signature_matches(&self.signatures, signature);
                if matches {
                    *found = Some(loaded);
                }
                matches
            }
            _ => self.signatures.matches(instance_id, signature),
        }
    }

    /// The caller's instance when the caches hold it fresh, found without
    /// waiting for anything; `None` sends the request the async way
    /// ([`Self::resolve`]), which also reports what made it miss. `signed`
    /// is the instance a signed caller's signature was checked against
    /// ([`Self::signed`]), already looked up.
    pub(crate) fn resolve_cached(
        &self,
        caller: &Caller<'_>,
        now: Instant,
        signed: Option<Arc<LoadedInstance>>,
    ) -> Option<Result<Arc<LoadedInstance>, ApiError>> {
        let key = match caller.identity {
            Identity::Signed { .. } => None,
            Identity::ByAddress {
                network_id,
                address,
            } => Some(address_key(network_id, address).ok()?),
            // By MAC needs the neighbour table: the async way.
            Identity::BySource { address } if self.settings.identity.by_source => {
                Some(AddressKey::AnyNetworkIp(address))
            }
            Identity::BySource { .. } => return None,
        };
        let found = match key.map(|key| self.caches.address(&key, now)) {
            None => None,
            Some(Some((uuid, false))) => Some(uuid),
            Some(_) => return None,
        };
        let (uuid, expected_project) = claimed(&caller.identity, found.as_deref())?;
        let loaded = match (&caller.identity, signed) {
            (Identity::Signed { .. }, Some(loaded)) => loaded,
            _ => match self.caches.instance(uuid, now)? {
                Cached::Fresh(loaded) => loaded,
                Cached::Expired(_) => return None,
            },
        };
        Some(check_project(loaded, expected_project))
    }
}

/// The instance id a caller stands for and the project it must belong
/// to: what signed headers name, else the instance `found` at the
/// caller's address (none found: none).
fn claimed<'a>(
    identity: &Identity<'a>,
    found: Option<&'a str>,
) -> Option<(&'a str, Option<&'a str>)> {
    match identity {
        Identity::Signed {
            instance_id,
            project_id,
        } => Some((instance_id, Some(project_id))),
        Identity::ByAddress { .. } | Identity::BySource { .. } => found.map(|uuid| (uuid, None)),
    }
}

/// The cache key of a guest address on a network: an IPv6 link-local
/// address stands for the MAC it embeds.
fn address_key(network_id: &str, address: IpAddr) -> Result<AddressKey, ApiError> {
    match address {
        IpAddr::V6(v6) if v6.is_unicast_link_local() => match mac_from_eui64(v6) {
            Some(mac) => Ok(AddressKey::NetworkMac(network_id.to_string(), mac)),
            None => Err(ApiError::NotFound(format!(
                "Instance was not found on network {network_id}: {address} is not an EUI-64 link-local address."
            ))),
        },
        ip => Ok(AddressKey::NetworkIp(network_id.to_string(), ip)),
    }
}

/// Signed requests name the project too; another project's instance is
/// Nova's 404.
fn check_project(
    loaded: Arc<LoadedInstance>,
    expected: Option<&str>,
) -> Result<Arc<LoadedInstance>, ApiError> {
    match expected {
        Some(project) if &*loaded.project_id != project => {
            tracing::warn!(instance = %loaded.uuid, "X-Tenant-ID does not match the instance's project");
            Err(ApiError::NotFound("Instance was not found.".into()))
        }
        _ => Ok(loaded),
    }
}
