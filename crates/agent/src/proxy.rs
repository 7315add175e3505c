//! Serving a guest: (network of the listener, peer address) → index →
//! instance → forward to the metadata API with Neutron's signed headers,
//! and relay the answer with the statuses Neutron's agent gives.

use crate::pipeline::{LaneError, Pipeline};
use crate::ratelimit::{Admission, RateLimiter, RateLimits};
use crate::sb::{Index, Target};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, StatusCode};
use http_body_util::BodyExt;
use meta169_http::PeerAddr;
use meta169_tree::model::mac_from_eui64;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Largest guest request body forwarded (a password POST is at most 1020 bytes).
pub const MAX_GUEST_BODY_BYTES: usize = 64 * 1024;
/// Largest upstream answer relayed.
pub const MAX_UPSTREAM_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Statuses Neutron's agent relays; anything else becomes 502.
const RELAYED: &[u16] = &[200, 400, 403, 404, 409, 500, 502, 503, 504];

/// Shared by every listener.
pub struct Proxy {
    index: RwLock<Arc<Index>>,
    /// `X-Instance-ID-Signature` per instance, computed when the index changes.
    signatures: RwLock<Arc<HashMap<String, HeaderValue>>>,
    client: UpstreamClient,
    upstream: String,
    secret: Vec<u8>,
    timeout: Duration,
    rate_limiter: Option<RateLimiter>,
}

/// The upstream metadata API (meta169 serve or Nova).
#[derive(Clone, Debug)]
pub struct Upstream {
    /// `http://host:port` or `https://host:port`, no trailing slash.
    pub url: String,
    pub shared_secret: Vec<u8>,
    pub timeout: Duration,
    /// Skip TLS verification (Neutron's `nova_metadata_insecure`).
    pub insecure: bool,
    /// Extra CA bundle (Neutron's `auth_ca_cert`).
    pub ca_cert: Option<std::path::PathBuf>,
    /// Whether bodiless GETs to a plain-HTTP upstream are pipelined.
    pub pipelining: Pipelining,
}

/// HTTP/1.1 pipelining to the upstream (see [`crate::pipeline`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Pipelining {
    /// Once the upstream answers as meta169 serve (`Server: meta169`); a
    /// Nova API keeps one request per connection: its workers serve a
    /// connection's requests one after another, so a queue behind a slow
    /// one would cost more than the saved system calls.
    #[default]
    Auto,
    On,
    Off,
}

impl std::str::FromStr for Pipelining {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "auto" => Ok(Pipelining::Auto),
            "on" => Ok(Pipelining::On),
            "off" => Ok(Pipelining::Off),
            other => Err(format!(
                "upstream pipelining {other:?} is not one of auto, on, off"
            )),
        }
    }
}

pub use meta169_http::signing::sign_instance_id as sign;

/// An error answer the agent gives itself: Neutron's texts, never empty.
pub fn error(status: StatusCode, message: &str) -> Response {
    let title = format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let body = format!("<html>\n <head>\n  <title>{title}</title>\n </head>\n <body>\n  <h1>{title}</h1>\n  {message}<br /><br />\n\n\n </body>\n</html>");
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=UTF-8"),
    );
    r
}

impl Proxy {
    /// Fails when the upstream's TLS settings cannot be used (an unreadable
    /// or invalid CA bundle), saying which.
    pub fn new(upstream: &Upstream) -> Result<Proxy, std::io::Error> {
        Ok(Proxy {
            index: RwLock::new(Arc::new(Index::default())),
            signatures: RwLock::new(Arc::new(HashMap::new())),
            client: UpstreamClient::new(upstream)?,
            upstream: upstream.url.trim_end_matches('/').to_string(),
            secret: upstream.shared_secret.clone(),
            timeout: upstream.timeout,
            rate_limiter: None,
        })
    }

    /// Refuse guests over these request rates with 429, as Neutron's
    /// haproxy does when rate limiting is enabled.
    pub fn with_rate_limits(mut self, limits: RateLimits) -> Proxy {
        self.rate_limiter = Some(RateLimiter::new(limits));
        self
    }

    /// Publish a new index (after a Southbound change).
    pub fn set_index(&self, index: Index) {
        if self.index.read().is_ok_and(|current| **current == index) {
            return;
        }
        let signatures: HashMap<String, HeaderValue> = index
            .targets()
            .filter_map(|t| {
                Some((
                    t.instance_id.clone(),
                    HeaderValue::from_str(&sign(&self.secret, &t.instance_id)).ok()?,
                ))
            })
            .collect();
        if let Ok(mut slot) = self.signatures.write() {
            *slot = Arc::new(signatures);
        }
        if let Ok(mut slot) = self.index.write() {
            *slot = Arc::new(index);
        }
    }

    fn signature(&self, instance_id: &str) -> HeaderValue {
        self.signatures
            .read()
            .ok()
            .and_then(|s| s.get(instance_id).cloned())
            .or_else(|| HeaderValue::from_str(&sign(&self.secret, instance_id)).ok())
            .unwrap_or_else(|| HeaderValue::from_static(""))
    }

    /// Whether GETs to the upstream are being pipelined now.
    pub fn pipelining(&self) -> bool {
        matches!(&self.client, UpstreamClient::Plain(_, pipelining) if pipelining.active())
    }

    pub fn index(&self) -> Arc<Index> {
        self.index.read().map(|i| i.clone()).unwrap_or_default()
    }

    /// Who is `address` on `network`? IPv6 link-local guests by the MAC in
    /// their EUI-64 address, IPv4-mapped addresses as IPv4, as Neutron does.
    pub fn lookup(&self, network: &str, address: IpAddr) -> Option<Arc<Target>> {
        let index = self.index();
        let address = match address {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
            v4 => v4,
        };
        if let IpAddr::V6(v6) = address {
            if v6.is_unicast_link_local() {
                return mac_from_eui64(v6).and_then(|mac| index.by_mac(network, mac).cloned());
            }
        }
        index.by_ip(network, address).cloned()
    }

    /// Forward one guest request on behalf of `target`.
    pub async fn forward(&self, request: Request, target: &Target, guest: IpAddr) -> Response {
        let (parts, body) = request.into_parts();
        // Most guest requests are GETs without a body: skip collecting.
        let body = if http_body::Body::size_hint(&body).exact() == Some(0) {
            Bytes::new()
        } else {
            match tokio::time::timeout(
                self.timeout,
                http_body_util::Limited::new(body, MAX_GUEST_BODY_BYTES).collect(),
            )
            .await
            {
                Ok(Ok(collected)) => collected.to_bytes(),
                Ok(Err(_)) => return error(StatusCode::BAD_REQUEST, "Request is too large."),
                Err(_) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "The request body was not received in time.",
                    )
                }
            }
        };
        let path_and_query = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let url = format!("{}{}", self.upstream, path_and_query);
        // Only these headers go upstream; the guest's own are dropped, so it
        // cannot choose its identity.
        let text =
            |s: &str| HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""));
        let headers = [
            (
                HeaderName::from_static("x-forwarded-for"),
                text(&guest.to_string()),
            ),
            (
                HeaderName::from_static("x-instance-id"),
                text(&target.instance_id),
            ),
            (
                HeaderName::from_static("x-tenant-id"),
                text(&target.project_id),
            ),
            (
                HeaderName::from_static("x-instance-id-signature"),
                self.signature(&target.instance_id),
            ),
        ];
        let answer = match tokio::time::timeout(
            self.timeout,
            self.client.send(parts.method, &url, &headers, body),
        )
        .await
        {
            Err(_) => {
                tracing::warn!(%url, instance = %target.instance_id, "metadata API did not answer in {:?}", self.timeout);
                return error(
                    StatusCode::GATEWAY_TIMEOUT,
                    "The remote metadata server did not answer in time.",
                );
            }
            Ok(Err(SendError::Connect(why))) => {
                tracing::warn!(%url, instance = %target.instance_id, "metadata API unreachable: {why}");
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The remote metadata server is temporarily unavailable. Please try again later.",
                );
            }
            Ok(Err(SendError::Read(why))) => {
                tracing::warn!(%url, "reading the metadata API's answer failed: {why}");
                return error(
                    StatusCode::BAD_GATEWAY,
                    "The remote metadata server's answer could not be read.",
                );
            }
            Ok(Ok(answer)) => answer,
        };
        let (status, content_type, bytes) = answer;
        if status == StatusCode::FORBIDDEN {
            tracing::warn!(instance = %target.instance_id, "the metadata API refused the signature: metadata_proxy_shared_secret differs between the agent and the API");
        }
        if !RELAYED.contains(&status.as_u16()) {
            tracing::warn!(%url, "metadata API answered {status}, which Neutron's agent does not relay; answering 502");
            return error(
                StatusCode::BAD_GATEWAY,
                "The remote metadata server gave an unexpected answer.",
            );
        }
        let mut response = Response::new(Body::from(bytes));
        *response.status_mut() = status;
        if let Some(ct) = content_type {
            response.headers_mut().insert(header::CONTENT_TYPE, ct);
        }
        response
    }
}

/// Why an upstream request failed.
enum SendError {
    Connect(String),
    Read(String),
}

type Answer = (StatusCode, Option<HeaderValue>, Bytes);

/// The upstream client: a small pool of keep-alive HTTP/1 connections for
/// plain HTTP (the common case, and the cheapest per request), reqwest for
/// HTTPS.
enum UpstreamClient {
    Plain(ConnectionPool, PipelineUse),
    Tls(reqwest::Client),
}

/// The pipeline to a plain-HTTP upstream and whether it is in use.
struct PipelineUse {
    pipeline: Arc<Pipeline>,
    mode: Pipelining,
    /// Set in `On` mode, or in `Auto` once the upstream named itself.
    active: std::sync::atomic::AtomicBool,
}

impl PipelineUse {
    fn active(&self) -> bool {
        self.active.load(std::sync::atomic::Ordering::Relaxed) && self.pipeline.usable()
    }

    /// In `Auto` mode: does this plain answer come from meta169 serve?
    fn learn(&self, server: Option<&HeaderValue>) {
        if self.mode == Pipelining::Auto
            && !self.active.load(std::sync::atomic::Ordering::Relaxed)
            && server.is_some_and(|s| s.as_bytes().starts_with(b"meta169"))
            && !self.active.swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::info!(
                upstream = %self.pipeline.authority(),
                "the metadata API is meta169 serve: pipelining GETs to it"
            );
        }
    }
}

/// Idle keep-alive connections to one upstream. A request takes one (or
/// opens one), drives it in its own task (no hop to a connection task and
/// back), and gives it back once the answer is read.
struct ConnectionPool {
    authority: String,
    idle: std::sync::Mutex<Vec<UpstreamConnection>>,
}

type UpstreamSender = hyper::client::conn::http1::SendRequest<http_body_util::Full<Bytes>>;
type UpstreamDriver = hyper::client::conn::http1::Connection<
    hyper_util::rt::TokioIo<tokio::net::TcpStream>,
    http_body_util::Full<Bytes>,
>;

/// One HTTP/1 connection: the handle requests go through and the state
/// machine that must be polled for them to make progress.
struct UpstreamConnection {
    sender: UpstreamSender,
    driver: UpstreamDriver,
}

/// Most idle upstream connections kept.
const MAX_IDLE_UPSTREAM: usize = 256;

impl ConnectionPool {
    /// A connection, and whether it was reused from the pool.
    async fn checkout(&self, fresh: bool) -> Result<(UpstreamConnection, bool), String> {
        if !fresh {
            if let Some(connection) = self.idle.lock().ok().and_then(|mut idle| idle.pop()) {
                return Ok((connection, true));
            }
        }
        let stream = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::TcpStream::connect(self.authority.as_str()),
        )
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        let (sender, driver) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
        Ok((UpstreamConnection { sender, driver }, false))
    }

    fn checkin(&self, connection: UpstreamConnection) {
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < MAX_IDLE_UPSTREAM {
                idle.push(connection);
            }
        }
    }
}

impl UpstreamConnection {
    /// Send one request and read the whole answer (with the `Server`
    /// header), polling the connection alongside. Gives the connection back
    /// when it can be used again.
    async fn exchange(
        self,
        request: http::Request<http_body_util::Full<Bytes>>,
    ) -> (
        Result<(Answer, Option<HeaderValue>), SendError>,
        Option<UpstreamConnection>,
    ) {
        let UpstreamConnection {
            mut sender,
            mut driver,
        } = self;
        let result = {
            let work = Self::send_on(&mut sender, request);
            tokio::pin!(work);
            let finished = tokio::select! {
                biased;
                result = &mut work => Some(result),
                _ = &mut driver => None,
            };
            match finished {
                Some(result) => result,
                None => {
                    // The connection ended (the API closed it, perhaps
                    // right after answering, perhaps long before while it
                    // sat in the pool). An answer already read completes;
                    // a request still queued fails once the connection is
                    // dropped, instead of waiting for a connection that
                    // will never take it.
                    drop(driver);
                    return (work.await, None);
                }
            }
        };
        (result, Some(UpstreamConnection { sender, driver }))
    }

    async fn send_on(
        sender: &mut UpstreamSender,
        request: http::Request<http_body_util::Full<Bytes>>,
    ) -> Result<(Answer, Option<HeaderValue>), SendError> {
        sender
            .ready()
            .await
            .map_err(|e| SendError::Connect(e.to_string()))?;
        let answer = sender
            .send_request(request)
            .await
            .map_err(|e| SendError::Connect(e.to_string()))?;
        let status = answer.status();
        let content_type = answer.headers().get(header::CONTENT_TYPE).cloned();
        let server = answer.headers().get(header::SERVER).cloned();
        let bytes = http_body_util::Limited::new(answer.into_body(), MAX_UPSTREAM_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| SendError::Read(e.to_string()))?
            .to_bytes();
        Ok(((status, content_type, bytes), server))
    }
}

impl UpstreamClient {
    fn new(upstream: &Upstream) -> Result<UpstreamClient, std::io::Error> {
        if let Some(rest) = upstream.url.strip_prefix("http://") {
            let authority = rest.split('/').next().unwrap_or(rest);
            let authority = if authority
                .rsplit_once(':')
                .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
                && !authority.ends_with(']')
            {
                authority.to_string()
            } else {
                format!("{authority}:80")
            };
            let pipeline = PipelineUse {
                pipeline: Arc::new(Pipeline::new(
                    &authority,
                    MAX_UPSTREAM_BODY_BYTES,
                    upstream.timeout,
                )),
                mode: upstream.pipelining,
                active: (upstream.pipelining == Pipelining::On).into(),
            };
            return Ok(UpstreamClient::Plain(
                ConnectionPool {
                    authority,
                    idle: std::sync::Mutex::new(Vec::new()),
                },
                pipeline,
            ));
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .danger_accept_invalid_certs(upstream.insecure);
        if let Some(path) = &upstream.ca_cert {
            let pem = std::fs::read(path).map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot read the upstream CA bundle {}: {e}", path.display()),
                )
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                std::io::Error::other(format!("{} is not a PEM CA bundle: {e}", path.display()))
            })?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder
            .build()
            .map_err(|e| std::io::Error::other(format!("cannot set up the HTTPS client: {e}")))?;
        Ok(UpstreamClient::Tls(client))
    }

    async fn send(
        &self,
        method: http::Method,
        url: &str,
        headers: &[(HeaderName, HeaderValue)],
        body: Bytes,
    ) -> Result<Answer, SendError> {
        match self {
            UpstreamClient::Plain(pool, pipelining) => {
                // Over an HTTP/1 connection the request target is the path.
                let target = url
                    .strip_prefix("http://")
                    .and_then(|r| r.find('/').map(|i| &r[i..]))
                    .unwrap_or("/");
                // Dynamic vendor data may take the API seconds (it asks
                // other services): not worth holding a lane for.
                if method == http::Method::GET
                    && body.is_empty()
                    && pipelining.active()
                    && !target.ends_with("vendor_data2.json")
                {
                    let head = request_head(target, &pool.authority, headers);
                    match pipelining.pipeline.get(head).await {
                        Ok(answer) => return Ok(answer),
                        Err(LaneError::Unreadable(why)) => return Err(SendError::Read(why)),
                        Err(LaneError::Connect(why)) => return Err(SendError::Connect(why)),
                        // Not answered: once more on a plain connection below.
                        Err(LaneError::Unanswered(why)) => {
                            tracing::debug!(%url, "pipelined request not answered ({why}); sending it again")
                        }
                    }
                }
                let mut request = http::Request::builder()
                    .method(method)
                    .uri(target)
                    .header(header::HOST, pool.authority.as_str());
                for (k, v) in headers {
                    request = request.header(k.clone(), v.clone());
                }
                let request = request
                    .body(http_body_util::Full::new(body))
                    .map_err(|e| SendError::Connect(e.to_string()))?;
                let (connection, reused) =
                    pool.checkout(false).await.map_err(SendError::Connect)?;
                let (mut result, mut reusable) = connection.exchange(request.clone()).await;
                if reused && matches!(result, Err(SendError::Connect(_))) {
                    // A pooled connection the API closed meanwhile: once more on a new one.
                    let (fresh, _) = pool.checkout(true).await.map_err(SendError::Connect)?;
                    (result, reusable) = fresh.exchange(request).await;
                }
                if let (Ok(_), Some(connection)) = (&result, reusable) {
                    pool.checkin(connection);
                }
                result.map(|(answer, server)| {
                    pipelining.learn(server.as_ref());
                    answer
                })
            }
            UpstreamClient::Tls(client) => {
                let mut request = client.request(method, url);
                for (k, v) in headers {
                    request = request.header(k.clone(), v.clone());
                }
                if !body.is_empty() {
                    request = request.body(body);
                }
                let answer = request
                    .send()
                    .await
                    .map_err(|e| SendError::Connect(e.to_string()))?;
                let status = answer.status();
                let content_type = answer.headers().get(header::CONTENT_TYPE).cloned();
                let bytes = read_bounded(answer).await.map_err(SendError::Read)?;
                Ok((status, content_type, bytes))
            }
        }
    }
}

/// The head of a bodiless GET as written on the wire.
fn request_head(target: &str, authority: &str, headers: &[(HeaderName, HeaderValue)]) -> Bytes {
    let mut head = bytes::BytesMut::with_capacity(256);
    head.extend_from_slice(b"GET ");
    head.extend_from_slice(target.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    head.extend_from_slice(authority.as_bytes());
    for (name, value) in headers {
        head.extend_from_slice(b"\r\n");
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
    }
    head.extend_from_slice(b"\r\n\r\n");
    head.freeze()
}

async fn read_bounded(mut answer: reqwest::Response) -> Result<Bytes, String> {
    let mut out = Vec::new();
    while let Some(chunk) = answer.chunk().await.map_err(|e| e.to_string())? {
        if out.len() + chunk.len() > MAX_UPSTREAM_BODY_BYTES {
            return Err(format!(
                "answer larger than {MAX_UPSTREAM_BODY_BYTES} bytes"
            ));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(out))
}

/// State of one namespace listener: the proxy and the network it serves.
#[derive(Clone)]
pub struct ListenerState {
    pub proxy: Arc<Proxy>,
    pub network_id: Arc<str>,
}

/// The service behind 169.254.169.254:80 in a namespace: [`handle_guest`]
/// without a router around it (there is nothing to route, and a router's
/// matching costs on every request).
pub fn guest_service(state: ListenerState) -> impl meta169_http::Handler {
    tower::service_fn(move |request: Request| {
        let state = state.clone();
        async move { Ok::<_, std::convert::Infallible>(handle_guest(State(state), request).await) }
    })
}

/// The handler behind 169.254.169.254:80 in a namespace.
pub async fn handle_guest(State(state): State<ListenerState>, request: Request) -> Response {
    let Some(peer) = request.extensions().get::<PeerAddr>().map(|p| p.0.ip()) else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "No peer address.");
    };
    if let Some(limiter) = &state.proxy.rate_limiter {
        if let Admission::Refused { first } =
            limiter.admit(&state.network_id, peer, std::time::Instant::now())
        {
            if first {
                tracing::info!(network = %state.network_id, %peer, "guest over the metadata request rate limit: answering 429 until it slows down");
            }
            return error(
                StatusCode::TOO_MANY_REQUESTS,
                "You have sent too many requests in a given amount of time.",
            );
        }
    }
    match state.proxy.lookup(&state.network_id, peer) {
        Some(target) => state.proxy.forward(request, &target, peer).await,
        None => {
            tracing::info!(network = %state.network_id, %peer, path = %request.uri().path(), "no instance with this address on this network");
            error(
                StatusCode::NOT_FOUND,
                &format!("Instance was not found on network {}.", state.network_id),
            )
        }
    }
}

/// The handler behind the haproxy-compatible UNIX socket: network and
/// guest address come from haproxy's `X-OVN-Network-ID` and
/// `X-Forwarded-For` (the last one: haproxy's own).
pub async fn handle_haproxy(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    let (network, guest) = {
        let header = |name: &str| {
            request
                .headers()
                .get_all(name)
                .iter()
                .next_back()
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        (
            header("x-ovn-network-id"),
            header("x-forwarded-for").and_then(|v| {
                v.rsplit(',')
                    .next()
                    .and_then(|a| a.trim().parse::<IpAddr>().ok())
            }),
        )
    };
    let Some(network) = network else {
        return error(
            StatusCode::BAD_REQUEST,
            "X-OVN-Network-ID header is missing from request.",
        );
    };
    let Some(guest) = guest else {
        return error(
            StatusCode::BAD_REQUEST,
            "X-Forwarded-For header is missing or not an address.",
        );
    };
    match proxy.lookup(&network, guest) {
        Some(target) => proxy.forward(request, &target, guest).await,
        None => error(
            StatusCode::NOT_FOUND,
            &format!("Instance was not found on network {network}."),
        ),
    }
}
