//! The guest-facing side: identify, load, serve a path. Mirrors Nova's
//! handler: `/` needs no identity, any method but on `password` is served
//! as GET, absent data is a fast 404.

use crate::answer::plain;
use crate::cache::{AddressKey, Cached, Caches, LoadedInstance};
use crate::cache_feed::{follow, AbortOnDrop};
use crate::error::ApiError;
use crate::identity::{identify, Caller, Identity};
use crate::metrics::{IdentityLabel, ServeMetrics, TreeLabel};
use crate::neighbours::{NeighbourError, Neighbours};
use crate::settings::{ApiSettings, ServerLimits};
use crate::vendordata::VendorData;
use axum::response::IntoResponse;
use bytes::Bytes;
use futures_util::future::Either;
use http::header;
use http_body_util::Either as HttpEither;
use hyper::body::Incoming;
use meta169_http::mac::{format_mac, mac_from_eui64};
use meta169_http::signing::SignatureMemo;
use meta169_http::Answer;
use meta169_http::PeerHandler;
use meta169_store::{Freshness, Store};
use meta169_tree::versions::{ec2_version_listing, openstack_version_listing};
use meta169_tree::{Body, ContentType, MetadataPath, RenderOptions};
use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

/// Shared state of the metadata side.
pub struct MetadataService {
    pub store: Arc<dyn Store>,
    pub settings: ApiSettings,
    pub limits: ServerLimits,
    pub caches: Arc<Caches>,
    pub vendor: VendorData,
    pub metrics: Arc<ServeMetrics>,
    render: Arc<RenderOptions>,
    /// Expected proxy signatures, computed once per instance id.
    signatures: SignatureMemo,
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
        let stale = match self.caches.instance(uuid, now) {
            Some(Cached::Fresh(hit)) => {
                self.metrics.cache_hits.inc();
                return Ok(Some(hit));
            }
            Some(Cached::Expired(stale)) if self.store_down() => {
                self.metrics.stale_answers.inc();
                return Ok(Some(stale));
            }
            Some(Cached::Expired(stale)) => Some(stale),
            None => None,
        };
        self.metrics.cache_misses.inc();
        let generation = self.caches.generation();
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

    async fn lookup_address(
        &self,
        key: AddressKey,
        now: Instant,
    ) -> Result<Option<Arc<str>>, ApiError> {
        let stale = match self.caches.address(&key, now) {
            Some((uuid, false)) => return Ok(Some(uuid)),
            Some((uuid, true)) if self.store_down() => return Ok(Some(uuid)),
            Some((uuid, true)) => Some(uuid),
            None => None,
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
            [] => Ok(None),
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
        let found;
        let (uuid, expected_project) = match caller.identity {
            Identity::Signed {
                instance_id,
                project_id,
            } => (instance_id, Some(project_id)),
            Identity::ByAddress {
                network_id,
                address,
            } => {
                let key = address_key(network_id, address)?;
                found = self.lookup_address(key, now).await?.ok_or_else(|| {
                    ApiError::NotFound(format!("Instance was not found on network {network_id}."))
                })?;
                (&*found, None)
            }
            Identity::BySource { address } => {
                found = self.resolve_peer(address, now).await?;
                (&*found, None)
            }
        };
        let loaded = self
            .load(uuid, now)
            .await?
            .ok_or_else(|| ApiError::NotFound("Instance was not found.".into()))?;
        check_project(loaded, expected_project)
    }

    /// The caller's instance when the caches hold it fresh, found without
    /// waiting for anything; `None` sends the request the async way
    /// ([`Self::resolve`]), which also reports what made it miss.
    fn resolve_cached(
        &self,
        caller: &Caller<'_>,
        now: Instant,
    ) -> Option<Result<Arc<LoadedInstance>, ApiError>> {
        let fresh_address = |key: &AddressKey| match self.caches.address(key, now) {
            Some((uuid, false)) => Some(uuid),
            _ => None,
        };
        let found;
        let (uuid, expected_project) = match caller.identity {
            Identity::Signed {
                instance_id,
                project_id,
            } => (instance_id, Some(project_id)),
            Identity::ByAddress {
                network_id,
                address,
            } => {
                found = fresh_address(&address_key(network_id, address).ok()?)?;
                (&*found, None)
            }
            Identity::BySource { address } if self.settings.identity.by_source => {
                found = fresh_address(&AddressKey::AnyNetworkIp(address))?;
                (&*found, None)
            }
            Identity::BySource { .. } => return None,
        };
        match self.caches.instance(uuid, now)? {
            Cached::Fresh(loaded) => Some(check_project(loaded, expected_project)),
            Cached::Expired(_) => None,
        }
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

/// `YYYY-MM-DD` of now, UTC, for hiding future versions.
pub fn today_utc() -> String {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() / 86_400)
        .unwrap_or(0) as i64;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// Percent-decode the request path (without copying when there is
/// nothing to decode); refuse what cannot be a metadata path.
fn decode_path(raw: &str) -> Result<Cow<'_, str>, ApiError> {
    if raw.len() > 3 * meta169_tree::path::MAX_PATH_LEN {
        return Err(ApiError::BadRequest("The request path is too long.".into()));
    }
    // A fold, not `contains`: it vectorises, and paths are too short for
    // a search to pay for its set-up.
    if !raw.bytes().fold(false, |seen, b| seen | (b == b'%')) {
        return Ok(Cow::Borrowed(raw));
    }
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| ApiError::BadRequest("The request path is not valid UTF-8.".into()))
}

fn parse_path(decoded: &str) -> Result<MetadataPath<'_>, ApiError> {
    MetadataPath::parse(decoded)
        .map_err(|e| ApiError::BadRequest(format!("Bad request path: {e}.")))
}

/// The metadata side as a listener's handler: every request, whatever its
/// path, goes to [`handle`] (no router: there is nothing to route).
#[derive(Clone)]
pub struct MetadataHandler(pub Arc<MetadataService>);

impl PeerHandler for MetadataHandler {
    fn handle(
        &self,
        request: http::Request<Incoming>,
        peer: SocketAddr,
    ) -> impl std::future::Future<Output = Answer> + Send + 'static + use<> {
        handle(&self.0, request, peer)
    }
}

/// The metadata handler: every path goes through here.
///
/// Most requests are answered from the caches without waiting for
/// anything ([`serve_cached`]): their future is the ready answer, with no
/// state machine, span or allocation, since hyper moves each request's
/// future a few times and its size showed in the profile. The rest (cache
/// misses, passwords, the first vendordata call) and every request while
/// debug logging is on take the async way, boxed, in a span.
///
/// The per-request span is at debug level: an enabled span costs more than
/// the rest of a cached request. Error events carry path and instance
/// themselves, so logs at info level lose nothing.
pub fn handle(
    service: &Arc<MetadataService>,
    request: http::Request<Incoming>,
    peer: SocketAddr,
) -> impl std::future::Future<Output = Answer> + Send + 'static + use<> {
    let started = Instant::now();
    // The head stays here, borrowed by the request's handling and read
    // again for its metrics and log line; only the body moves on.
    let (parts, body) = request.into_parts();
    if !tracing::enabled!(tracing::Level::DEBUG) {
        let mut outcome = Outcome::default();
        let result = match serve_cached(service, &parts, peer.ip(), started, &mut outcome) {
            Ok(None) => None,
            Ok(Some(answer)) => Some(Ok(answer)),
            Err(error) => Some(Err(error)),
        };
        if let Some(result) = result {
            let answer = finish(service, &parts, result, started, &outcome);
            crate::answer::recycle(parts.headers);
            return Either::Left(std::future::ready(answer));
        }
    }
    let span = tracing::debug_span!("metadata", path = %parts.uri.path(), method = %parts.method, instance = tracing::field::Empty);
    let service = service.clone();
    Either::Right(Box::pin(
        async move {
            let mut outcome = Outcome::default();
            let result = serve(&service, &parts, body, peer.ip(), started, &mut outcome).await;
            finish(&service, &parts, result, started, &outcome)
        }
        .instrument(span),
    ))
}

/// The answer (an error turned into its response), counted and logged.
fn finish(
    service: &MetadataService,
    request: &http::request::Parts,
    result: Result<Answer, ApiError>,
    started: Instant,
    outcome: &Outcome,
) -> Answer {
    let (response, why) = match result {
        Ok(response) => {
            debug_assert!(
                response.headers().contains_key(header::SERVER),
                "answers are built by `plain`, which names the server"
            );
            (response, None)
        }
        Err(error) => {
            let why = error.to_string();
            let mut response = error.into_response().map(HttpEither::Right);
            response
                .headers_mut()
                .insert(header::SERVER, meta169_http::headers::SERVER);
            (response, Some(why))
        }
    };
    let (status, took) = (response.status().as_u16(), started.elapsed());
    let path = request.uri.path();
    service
        .metrics
        .request(status, TreeLabel::of(path), outcome.identity, took);
    let instance = outcome.instance().unwrap_or("-");
    service
        .settings
        .access_log
        .record(path, status, instance, took, why.as_deref());
    response
}

/// What a request turned out to be, for its metrics and access log line.
struct Outcome {
    instance: Option<Arc<LoadedInstance>>,
    identity: IdentityLabel,
}

impl Default for Outcome {
    fn default() -> Self {
        Outcome {
            instance: None,
            identity: IdentityLabel::None,
        }
    }
}

impl Outcome {
    fn instance(&self) -> Option<&str> {
        self.instance.as_ref().map(|i| &*i.uuid)
    }
}

/// A request answered from the caches without waiting: `Ok(None)` when
/// it needs the store, the vendordata service or a password write, and
/// goes the async way ([`serve`]) from the start.
fn serve_cached(
    service: &MetadataService,
    request: &http::request::Parts,
    peer: IpAddr,
    started: Instant,
    outcome: &mut Outcome,
) -> Result<Option<Answer>, ApiError> {
    let decoded = decode_path(request.uri.path())?;
    let path = parse_path(&decoded)?;
    if path == MetadataPath::Root {
        return Ok(Some(plain(ContentType::Text, ec2_version_listing())));
    }
    let caller = caller_of(service, request, peer, outcome)?;
    let Some(found) = service.resolve_cached(&caller, started) else {
        return Ok(None);
    };
    let reply =
        found.and_then(|loaded| reply_for(service, &loaded, &path, request, &caller, outcome));
    match reply {
        Ok(Reply::VendorData2(_) | Reply::Password) => Ok(None),
        // Counted as the async way's `load` counts a hit.
        reply => {
            service.metrics.cache_hits.inc();
            reply.map(|reply| match reply {
                Reply::Now(answer) => Some(answer),
                Reply::VendorData2(_) | Reply::Password => None,
            })
        }
    }
}

/// Any request, waiting for the store and services as needed.
async fn serve(
    service: &MetadataService,
    request: &http::request::Parts,
    body: Incoming,
    peer: IpAddr,
    started: Instant,
    outcome: &mut Outcome,
) -> Result<Answer, ApiError> {
    let decoded = decode_path(request.uri.path())?;
    let path = parse_path(&decoded)?;
    if path == MetadataPath::Root {
        return Ok(plain(ContentType::Text, ec2_version_listing()));
    }
    let caller = caller_of(service, request, peer, outcome)?;
    let loaded = service.resolve(&caller, started).await?;
    match reply_for(service, &loaded, &path, request, &caller, outcome)? {
        Reply::Now(answer) => Ok(answer),
        Reply::VendorData2(content_type) => {
            let doc = loaded
                .vendor_data2
                .get_or_init(|| async {
                    match loaded.tree.instance() {
                        Some(instance) => service.vendor.document(&instance, &service.settings).await,
                        None => {
                            tracing::error!(instance = %loaded.uuid, "cached record unreadable; vendor_data2.json left empty");
                            Bytes::from_static(b"{}")
                        }
                    }
                })
                .await;
            Ok(plain(content_type, doc.clone()))
        }
        Reply::Password => crate::password::answer(service, &loaded, request, body).await,
    }
}

/// Who is calling (counted in `outcome`).
fn caller_of<'a>(
    service: &MetadataService,
    request: &'a http::request::Parts,
    peer: IpAddr,
    outcome: &mut Outcome,
) -> Result<Caller<'a>, ApiError> {
    let caller = identify(
        &request.headers,
        peer,
        &service.settings.identity,
        &service.signatures,
    )?;
    outcome.identity = match caller.identity {
        Identity::Signed { .. } => IdentityLabel::Signed,
        Identity::ByAddress { .. } => IdentityLabel::ByAddress,
        Identity::BySource { .. } => IdentityLabel::BySource,
    };
    Ok(caller)
}

/// What a path of a loaded instance needs.
enum Reply {
    /// Answered from memory.
    Now(Answer),
    /// `vendor_data2.json`, not built yet: the vendordata call.
    VendorData2(ContentType),
    /// `password`: read or written through the store.
    Password,
}

/// The answer for `path` of the caller's `loaded` instance, or what it
/// has to wait for.
fn reply_for(
    service: &MetadataService,
    loaded: &Arc<LoadedInstance>,
    path: &MetadataPath<'_>,
    request: &http::request::Parts,
    caller: &Caller<'_>,
    outcome: &mut Outcome,
) -> Result<Reply, ApiError> {
    // The span is at debug level; finding it costs more than the check.
    if tracing::enabled!(tracing::Level::DEBUG) {
        tracing::Span::current().record("instance", &*loaded.uuid);
    }
    outcome.instance = Some(loaded.clone());
    if path.is_token_request() {
        let direct = matches!(outcome.identity, IdentityLabel::BySource);
        return crate::session_token::answer(service, loaded, request, direct).map(Reply::Now);
    }
    crate::session_token::check(service, loaded, caller.session_token)?;
    let segments = match path {
        MetadataPath::Ec2Versions => {
            return Ok(Reply::Now(plain(ContentType::Text, ec2_version_listing())))
        }
        MetadataPath::OpenStackVersions => {
            return Ok(Reply::Now(plain(
                ContentType::Text,
                openstack_version_listing(&today_utc()),
            )))
        }
        MetadataPath::Item(segments) => segments,
        MetadataPath::Root => unreachable!("answered before identification"),
    };
    // A signed request's X-Forwarded-For is read only if the path needs it.
    let guest = || caller.requester(&request.headers);
    if let Some(answer) = crate::instance_identity::answer(loaded, segments, guest) {
        return answer.map(Reply::Now);
    }
    if let Some(answer) = crate::nocloud::answer(service, loaded, segments) {
        return answer.map(Reply::Now);
    }
    let entry = loaded
        .tree
        .lookup_joined(segments, segments.below_version())
        .ok_or_else(ApiError::not_found)?;
    let body = match &entry.body {
        Body::Static(bytes) => bytes.clone(),
        Body::MetaData { before, after } => crate::random_seed::document(before, after),
        Body::RequesterAddress => guest().to_string().into(),
        Body::VendorData2 => match loaded.vendor_data2.get() {
            Some(doc) => doc.clone(),
            None => return Ok(Reply::VendorData2(entry.content_type)),
        },
        Body::Password => return Ok(Reply::Password),
    };
    Ok(Reply::Now(plain(entry.content_type, body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn today_is_a_date() {
        let today = today_utc();
        assert_eq!(today.len(), 10);
        assert!(today.as_str() > "2024-01-01");
    }

    #[test]
    fn paths_are_decoded_and_checked() {
        assert!(
            matches!(parse_path(&decode_path("/latest/meta%2Ddata").unwrap()), Ok(MetadataPath::Item(s)) if s[2] == "meta-data")
        );
        assert!(matches!(
            decode_path("/latest/meta-data"),
            Ok(Cow::Borrowed(_))
        ));
        assert!(parse_path(&decode_path("/latest/%00").unwrap()).is_err());
        assert!(decode_path("/latest/%ff%fe").is_err());
        assert!(parse_path(&decode_path("/latest/%2e%2e/x").unwrap()).is_err());
        assert!(decode_path(&"/a".repeat(3000)).is_err());
    }
}
