//! The guest-facing side: identify, load, serve a path. Mirrors Nova's
//! handler: `/` needs no identity, any method but on `password` is served
//! as GET, absent data is a fast 404.

use crate::cache::{AddressKey, Caches, LoadedInstance};
use crate::error::ApiError;
use crate::identity::{identify, Caller, Identity};
use crate::metrics::{IdentityLabel, ServeMetrics, TreeLabel};
use crate::settings::{ApiSettings, ServerLimits};
use crate::vendordata::VendorData;
use crate::PeerAddr;
use axum::body::Body as AxumBody;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use http::{header, HeaderValue};
use meta169_http::mac::{format_mac, mac_from_eui64};
use meta169_store::Store;
use meta169_tree::versions::{ec2_version_listing, openstack_version_listing};
use meta169_tree::{Body, ContentType, MetadataPath, Tree};
use rand::RngCore;
use std::net::IpAddr;
use std::sync::Arc;
use tracing::Instrument;

/// Size of Nova's random seed, before base64.
const RANDOM_SEED_BYTES: usize = 512;

/// Shared state of the metadata side.
pub struct MetadataService {
    pub store: Arc<dyn Store>,
    pub settings: ApiSettings,
    pub limits: ServerLimits,
    pub caches: Caches,
    pub vendor: VendorData,
    pub metrics: ServeMetrics,
}

impl MetadataService {
    pub fn new(
        store: Arc<dyn Store>,
        settings: ApiSettings,
        limits: ServerLimits,
    ) -> Result<Self, reqwest::Error> {
        Ok(MetadataService {
            caches: Caches::new(settings.cache_ttl),
            vendor: VendorData::new(&settings)?,
            metrics: ServeMetrics::new(),
            store,
            settings,
            limits,
        })
    }

    /// Load (or take from the cache) an instance and its tree.
    pub async fn load(&self, uuid: &str) -> Result<Option<Arc<LoadedInstance>>, ApiError> {
        if let Some(hit) = self.caches.instance(uuid) {
            self.metrics.cache_hits.inc();
            return Ok(Some(hit));
        }
        self.metrics.cache_misses.inc();
        let stored = self.store.get_instance(uuid).await.map_err(|e| {
            self.metrics.store_errors.inc();
            tracing::error!(instance = %uuid, "loading instance failed: {e}");
            ApiError::Internal
        })?;
        let Some(stored) = stored else {
            return Ok(None);
        };
        let tree = Tree::render(&stored.instance, &self.settings.render);
        let loaded = Arc::new(LoadedInstance::new(
            stored.instance,
            tree,
            stored.password,
            stored.revision,
        ));
        self.caches.put_instance(loaded.clone());
        self.metrics
            .cache_instances
            .set(self.caches.instances() as i64);
        Ok(Some(loaded))
    }

    async fn lookup_address(&self, key: AddressKey) -> Result<Option<String>, ApiError> {
        if let Some(uuid) = self.caches.address(&key) {
            return Ok(Some(uuid));
        }
        let found = match &key {
            AddressKey::NetworkIp(network, ip) => self.store.find_by_network_ip(network, *ip).await,
            AddressKey::NetworkMac(network, mac) => {
                self.store
                    .find_by_network_mac(network, &format_mac(mac))
                    .await
            }
            AddressKey::AnyNetworkIp(ip) => self.store.find_by_ip(*ip).await,
        }
        .map_err(|e| {
            self.metrics.store_errors.inc();
            tracing::error!("address lookup failed: {e}");
            ApiError::Internal
        })?;
        match found.as_slice() {
            [] => Ok(None),
            [uuid] => {
                self.caches.put_address(key, uuid.clone());
                Ok(Some(uuid.clone()))
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

    /// The instance a caller is, or Nova's 404.
    pub async fn resolve(&self, caller: &Caller) -> Result<Arc<LoadedInstance>, ApiError> {
        let (uuid, expected_project) = match &caller.identity {
            Identity::Signed {
                instance_id,
                project_id,
            } => (instance_id.clone(), Some(project_id.as_str())),
            Identity::ByAddress {
                network_id,
                address,
            } => {
                let key = match address {
                    IpAddr::V6(v6) if v6.is_unicast_link_local() => match mac_from_eui64(*v6) {
                        Some(mac) => AddressKey::NetworkMac(network_id.clone(), mac),
                        None => {
                            return Err(ApiError::NotFound(format!(
                                "Instance was not found on network {network_id}: {address} is not an EUI-64 link-local address."
                            )))
                        }
                    },
                    ip => AddressKey::NetworkIp(network_id.clone(), *ip),
                };
                let uuid = self.lookup_address(key).await?.ok_or_else(|| {
                    ApiError::NotFound(format!("Instance was not found on network {network_id}."))
                })?;
                (uuid, None)
            }
            Identity::BySource { address } => {
                let uuid = self
                    .lookup_address(AddressKey::AnyNetworkIp(*address))
                    .await?
                    .ok_or_else(|| {
                        ApiError::NotFound(format!("No instance has the address {address}."))
                    })?;
                (uuid, None)
            }
        };
        let loaded = self
            .load(&uuid)
            .await?
            .ok_or_else(|| ApiError::NotFound("Instance was not found.".into()))?;
        if let Some(project) = expected_project {
            if loaded.instance.project_id != project {
                tracing::warn!(instance = %uuid, "X-Tenant-ID does not match the instance's project");
                return Err(ApiError::NotFound("Instance was not found.".into()));
            }
        }
        Ok(loaded)
    }
}

pub(crate) fn plain(content_type: ContentType, body: impl Into<Bytes>) -> Response {
    let mut response = Response::new(AxumBody::from(body.into()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type.as_str()),
    );
    response
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

/// Percent-decode the request path; refuse what cannot be a metadata path.
fn decode_path(raw: &str) -> Result<MetadataPath, ApiError> {
    if raw.len() > 3 * meta169_tree::path::MAX_PATH_LEN {
        return Err(ApiError::BadRequest("The request path is too long.".into()));
    }
    let bytes: Vec<u8> = percent_encoding::percent_decode_str(raw).collect();
    let text = String::from_utf8(bytes)
        .map_err(|_| ApiError::BadRequest("The request path is not valid UTF-8.".into()))?;
    MetadataPath::parse(&text).map_err(|e| ApiError::BadRequest(format!("Bad request path: {e}.")))
}

/// The metadata handler: every path goes through here.
///
/// The per-request span is at debug level: an enabled span costs more than
/// the rest of a cached request. Error events carry path and instance
/// themselves, so logs at info level lose nothing.
pub async fn handle(State(service): State<Arc<MetadataService>>, request: Request) -> Response {
    let started = std::time::Instant::now();
    let span = tracing::debug_span!("metadata", path = %request.uri().path(), method = %request.method(), instance = tracing::field::Empty);
    let path = request.uri().path().to_string();
    async move {
        let mut outcome = Outcome::default();
        let (mut response, why) = match serve(&service, request, &mut outcome).await {
            Ok(response) => (response, None),
            Err(error) => {
                let why = error.to_string();
                (error.into_response(), Some(why))
            }
        };
        // Tells meta169's agent it may pipeline requests (Nova's API does
        // not get them).
        response
            .headers_mut()
            .insert(http::header::SERVER, meta169_http::headers::SERVER);
        let (status, took) = (response.status().as_u16(), started.elapsed());
        service
            .metrics
            .request(status, TreeLabel::of(&path), outcome.identity, took);
        let instance = outcome.instance.as_deref().unwrap_or("-");
        service
            .settings
            .access_log
            .record(&path, status, instance, took, why.as_deref());
        response
    }
    .instrument(span)
    .await
}

/// What a request turned out to be, for its metrics and access log line.
struct Outcome {
    instance: Option<String>,
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

async fn serve(
    service: &MetadataService,
    request: Request,
    outcome: &mut Outcome,
) -> Result<Response, ApiError> {
    let path = decode_path(request.uri().path())?;
    let items = match path {
        MetadataPath::Root => return Ok(plain(ContentType::Text, ec2_version_listing())),
        MetadataPath::Ec2Versions | MetadataPath::OpenStackVersions | MetadataPath::Item(_) => path,
    };
    let peer = request
        .extensions()
        .get::<PeerAddr>()
        .map(|p| p.0.ip())
        .ok_or_else(|| {
            tracing::error!("request without a peer address; the listener must set PeerAddr");
            ApiError::Internal
        })?;
    let caller = identify(request.headers(), peer, &service.settings.identity)?;
    outcome.identity = match caller.identity {
        Identity::Signed { .. } => IdentityLabel::Signed,
        Identity::ByAddress { .. } => IdentityLabel::ByAddress,
        Identity::BySource { .. } => IdentityLabel::BySource,
    };
    let loaded = service.resolve(&caller).await?;
    tracing::Span::current().record("instance", loaded.instance.uuid.as_str());
    outcome.instance = Some(loaded.instance.uuid.clone());
    let segments = match items {
        MetadataPath::Ec2Versions => return Ok(plain(ContentType::Text, ec2_version_listing())),
        MetadataPath::OpenStackVersions => {
            return Ok(plain(
                ContentType::Text,
                openstack_version_listing(&today_utc()),
            ))
        }
        MetadataPath::Item(segments) => segments,
        MetadataPath::Root => unreachable!("answered above"),
    };
    let entry = loaded
        .tree
        .lookup(&segments)
        .ok_or_else(ApiError::not_found)?;
    Ok(match &entry.body {
        Body::Static(bytes) => plain(entry.content_type, bytes.clone()),
        Body::MetaData { before, after } => {
            let mut seed = [0u8; RANDOM_SEED_BYTES];
            rand::thread_rng().fill_bytes(&mut seed);
            let seed = base64::engine::general_purpose::STANDARD.encode(seed);
            let mut body = BytesMut::with_capacity(before.len() + seed.len() + after.len());
            body.extend_from_slice(before);
            body.extend_from_slice(seed.as_bytes());
            body.extend_from_slice(after);
            plain(entry.content_type, body.freeze())
        }
        Body::RequesterAddress => plain(entry.content_type, caller.requester.to_string()),
        Body::VendorData2 => {
            let doc = loaded
                .vendor_data2
                .get_or_init(|| service.vendor.document(&loaded.instance, &service.settings))
                .await;
            plain(entry.content_type, doc.clone())
        }
        Body::Password => return crate::password::answer(service, &loaded, request).await,
    })
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
            matches!(decode_path("/latest/meta%2Ddata"), Ok(MetadataPath::Item(s)) if s[2] == "meta-data")
        );
        assert!(decode_path("/latest/%00").is_err());
        assert!(decode_path("/latest/%ff%fe").is_err());
        assert!(decode_path("/latest/%2e%2e/x").is_err());
        assert!(decode_path(&"/a".repeat(3000)).is_err());
    }
}
