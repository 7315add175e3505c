//! Serving a guest: (network of the listener, peer address) → index →
//! instance → forward to the metadata API with Neutron's signed headers,
//! and relay the answer with the statuses Neutron's agent gives.

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
        })
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
    Plain(ConnectionPool),
    Tls(reqwest::Client),
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
    /// Send one request and read the whole answer, polling the connection
    /// alongside. Also says whether the connection can be used again.
    async fn exchange(
        &mut self,
        request: http::Request<http_body_util::Full<Bytes>>,
    ) -> (Result<Answer, SendError>, bool) {
        let UpstreamConnection { sender, driver } = self;
        let work = async {
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
            let bytes = http_body_util::Limited::new(answer.into_body(), MAX_UPSTREAM_BODY_BYTES)
                .collect()
                .await
                .map_err(|e| SendError::Read(e.to_string()))?
                .to_bytes();
            Ok((status, content_type, bytes))
        };
        tokio::pin!(work);
        tokio::select! {
            biased;
            result = &mut work => (result, true),
            // The connection ended (the API closed it, perhaps right after
            // answering): the answer may be complete all the same, and the
            // connection is done either way.
            _ = driver => (work.await, false),
        }
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
            return Ok(UpstreamClient::Plain(ConnectionPool {
                authority,
                idle: std::sync::Mutex::new(Vec::new()),
            }));
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
            UpstreamClient::Plain(pool) => {
                // Over an HTTP/1 connection the request target is the path.
                let target = url
                    .strip_prefix("http://")
                    .and_then(|r| r.find('/').map(|i| &r[i..]))
                    .unwrap_or("/");
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
                let (mut connection, reused) =
                    pool.checkout(false).await.map_err(SendError::Connect)?;
                let (mut result, mut alive) = connection.exchange(request.clone()).await;
                if reused && matches!(result, Err(SendError::Connect(_))) {
                    // A pooled connection the API closed meanwhile: once more on a new one.
                    let (fresh, _) = pool.checkout(true).await.map_err(SendError::Connect)?;
                    connection = fresh;
                    (result, alive) = connection.exchange(request).await;
                }
                if alive && result.is_ok() {
                    pool.checkin(connection);
                }
                result
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

/// The handler behind 169.254.169.254:80 in a namespace.
pub async fn handle_guest(State(state): State<ListenerState>, request: Request) -> Response {
    let Some(peer) = request.extensions().get::<PeerAddr>().map(|p| p.0.ip()) else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "No peer address.");
    };
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
