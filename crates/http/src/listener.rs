//! The HTTP/1 listener of guest-facing servers: hyper with the limits
//! hostile clients call for (bounded request head, header read timeout,
//! bounded number of connections), each request handed to a tower service
//! with the peer address attached as [`PeerAddr`]. One accept loop for TCP
//! and UNIX sockets ([`Accept`]), so both get the same limits.

use crate::batch::Batch;
use crate::direct_socket::DirectStream;
use crate::head_timeout::{HeadClock, HeadTimeout};
use crate::hop_limit::{HopControl, HopLimit};
use crate::log_throttle;
use crate::per_source::PerSource;
use futures_util::future::Either;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// Pause after a failed accept (out of file descriptors and the like), so
/// the loop does not spin.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(50);

/// The TCP peer of a request, attached by the listener (`[::]:0` on a UNIX socket).
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

/// Limits of a listener against slow or hostile clients.
#[derive(Clone, Debug)]
pub struct ServerLimits {
    /// Time allowed to send the request line and headers.
    pub header_read_timeout: Duration,
    /// Largest request head (line + headers); at least 8 KiB (hyper's floor).
    pub max_head_bytes: usize,
    /// Connections served at once; further ones wait in the backlog.
    pub max_connections: usize,
    /// Connections one source address may hold at once (0: no limit), so
    /// that one client cannot fill `max_connections`; further ones from it
    /// are closed at once.
    pub max_connections_per_source: usize,
    /// Sources without that limit: proxies that carry many guests'
    /// requests. UNIX-socket peers (local proxies) never have it.
    pub unlimited_sources: Vec<ipnet::IpNet>,
    /// Time allowed to send a request body (password POST, admin JSON).
    pub body_read_timeout: Duration,
    /// Write the answers to requests a client pipelined together, in one
    /// write ([`crate::batch`]): what makes a pipelining proxy (meta169's
    /// agent) cheap to serve. For listeners whose callers are proxies.
    pub batch_pipelined_answers: bool,
    /// Set a TCP connection's hop limit when an answer asks for one
    /// ([`crate::hop_limit`]; costs a duplicated descriptor per connection).
    pub honour_hop_limits: bool,
}

/// A guest's connections at once: cloud-init uses one, a few tools at
/// boot a handful more.
pub const DEFAULT_MAX_CONNECTIONS_PER_SOURCE: usize = 64;

/// hyper's smallest read buffer: a head limit below it is raised to it.
const MIN_HEAD_BYTES: usize = 8 * 1024;

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_read_timeout: Duration::from_secs(10),
            max_head_bytes: MIN_HEAD_BYTES,
            max_connections: 4096,
            max_connections_per_source: DEFAULT_MAX_CONNECTIONS_PER_SOURCE,
            unlimited_sources: Vec::new(),
            body_read_timeout: Duration::from_secs(10),
            batch_pipelined_answers: false,
            honour_hop_limits: false,
        }
    }
}

/// What a listener hands each request to: an axum [`Router`](axum::Router),
/// or a tower stack around a plain function where a router's matching is
/// not needed (the agent's guest listeners).
pub trait Handler:
    tower::Service<
        http::Request<axum::body::Body>,
        Response = axum::response::Response,
        Error = std::convert::Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S> Handler for S where
    S: tower::Service<
            http::Request<axum::body::Body>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// A handler that takes each request as hyper delivers it, with its TCP
/// peer beside it: no extension map, no boxed request body, no service
/// clone per request. For the metadata API's hot path; tower services go
/// through [`serve`], which adapts them to this.
///
/// `handle` is called as hyper hands the request over, and its future
/// owns what it needs (`'static`): a handler that answers at once drops
/// the request there. hyper reads on before it polls that future, and a
/// request still alive holds its read buffer, which then cannot be
/// reused: a fresh buffer per request showed in the profile.
pub trait PeerHandler: Clone + Send + 'static {
    fn handle(
        &self,
        request: http::Request<Incoming>,
        peer: SocketAddr,
    ) -> impl Future<Output = Answer> + Send + 'static + use<Self>;

    /// What the listener calls: [`Self::handle`], unless the handler has
    /// the answer at once ([`Handled::Now`]). The listener then finishes
    /// the request there, without a future of its own to move and poll
    /// and the shared state that future would have to hold.
    fn handle_now(
        &self,
        request: http::Request<Incoming>,
        peer: SocketAddr,
    ) -> Handled<impl Future<Output = Answer> + Send + 'static + use<Self>> {
        Handled::Later(self.handle(request, peer))
    }
}

/// A request as a [`PeerHandler`] takes it: answered, or on its way.
pub enum Handled<F> {
    /// Answered without waiting (the hot path).
    Now(Answer),
    /// The answer's future.
    Later(F),
}

/// What a [`PeerHandler`] answers with: a fixed body, unboxed (the hot
/// path), or any axum body.
pub type ResponseBody =
    http_body_util::Either<http_body_util::Full<bytes::Bytes>, axum::body::Body>;

/// A [`PeerHandler`]'s response.
pub type Answer = http::Response<ResponseBody>;

/// A tower [`Handler`] as a [`PeerHandler`]: the peer goes into the
/// request's extensions as [`PeerAddr`].
#[derive(Clone)]
struct Tower<S>(S);

impl<S: Handler> PeerHandler for Tower<S> {
    fn handle(
        &self,
        mut request: http::Request<Incoming>,
        peer: SocketAddr,
    ) -> impl Future<Output = Answer> + Send + 'static + use<S> {
        request.extensions_mut().insert(PeerAddr(peer));
        let service = self.0.clone();
        async move {
            match service.oneshot(request.map(axum::body::Body::new)).await {
                Ok(response) => response.map(http_body_util::Either::Right),
                Err(never) => match never {},
            }
        }
    }
}

/// A socket that accepts connections: TCP or UNIX.
pub trait Accept: Send + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// The next connection and its peer.
    fn accept(&self) -> impl Future<Output = std::io::Result<(Self::Stream, SocketAddr)>> + Send;

    /// A handle to set `stream`'s hop limit, where that means something.
    fn hop_control(&self, _stream: &Self::Stream, _peer: SocketAddr) -> Option<HopControl> {
        None
    }
}

impl Accept for tokio::net::TcpListener {
    type Stream = DirectStream;

    async fn accept(&self) -> std::io::Result<(Self::Stream, SocketAddr)> {
        let (stream, peer) = tokio::net::TcpListener::accept(self).await?;
        // Answers are small and whole: send them at once.
        let _ = stream.set_nodelay(true);
        Ok((DirectStream::new(stream)?, peer))
    }

    fn hop_control(&self, stream: &Self::Stream, peer: SocketAddr) -> Option<HopControl> {
        HopControl::of(stream.socket(), peer)
    }
}

impl Accept for tokio::net::UnixListener {
    type Stream = tokio::net::UnixStream;

    async fn accept(&self) -> std::io::Result<(Self::Stream, SocketAddr)> {
        let (stream, _) = tokio::net::UnixListener::accept(self).await?;
        Ok((stream, SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))))
    }
}

/// Serve `handler` (a router or a tower stack) on `listener` until
/// `shutdown` completes.
pub async fn serve(
    listener: impl Accept,
    handler: impl Handler,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()>,
) {
    serve_direct(listener, Tower(handler), limits, shutdown).await
}

/// Serve a [`PeerHandler`] on `listener` until `shutdown` completes.
pub async fn serve_direct(
    listener: impl Accept,
    handler: impl PeerHandler,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let sources = PerSource::new(&limits);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(ACCEPT_RETRY_DELAY).await;
                    continue;
                }
            },
        };
        let Some(slot) = sources.admit(peer.ip()) else {
            if let Some(left_out) = log_throttle::refusals().allow(peer.ip()) {
                tracing::warn!(%peer, left_out, "connection refused: this source already holds {} connections ([limits] max_connections_per_source)", limits.max_connections_per_source);
            }
            continue;
        };
        let handler = handler.clone();
        let limits = limits.clone();
        let hops = match limits.honour_hop_limits {
            true => listener.hop_control(&stream, peer).map(Arc::new),
            false => None,
        };
        tokio::spawn(async move {
            let clock = HeadClock::new();
            let connection = Connection { clock, peer, hops };
            if limits.batch_pipelined_answers {
                let io = TokioIo::new(Batch::new(stream, connection.clock.clone()));
                serve_connection(io, connection, handler, &limits).await;
            } else {
                serve_connection(TokioIo::new(stream), connection, handler, &limits).await;
            }
            drop(slot);
            drop(permit);
        });
    }
}

/// An answer handed over to hyper: its hop limit applied, and the wait
/// for the connection's next request head started.
fn answered(answer: &Answer, hops: Option<&HopControl>, clock: &HeadClock) {
    if let Some(hops) = hops {
        if let Some(limit) = answer.extensions().get::<HopLimit>() {
            hops.apply(*limit);
        }
    }
    clock.end();
}

/// RFC 9112 §3.2: a server must answer 400 to an HTTP/1.1 request
/// without a Host header (hyper leaves that to the application).
fn missing_host(request: &http::Request<Incoming>) -> Option<Answer> {
    if request.version() != http::Version::HTTP_11
        || request.headers().contains_key(http::header::HOST)
    {
        return None;
    }
    let mut answer = Answer::new(http_body_util::Either::Left(http_body_util::Full::new(
        bytes::Bytes::from_static(b"HTTP/1.1 requests must carry a Host header.\n"),
    )));
    *answer.status_mut() = http::StatusCode::BAD_REQUEST;
    answer.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=UTF-8"),
    );
    Some(answer)
}

/// What one accepted connection carries besides its stream.
struct Connection {
    clock: Arc<HeadClock>,
    peer: SocketAddr,
    /// Set when the listener honours answers' hop limits.
    hops: Option<Arc<HopControl>>,
}

/// Serve one accepted connection.
async fn serve_connection<I>(
    io: I,
    connection: Connection,
    handler: impl PeerHandler,
    limits: &ServerLimits,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let Connection { clock, peer, hops } = connection;
    let io = HeadTimeout::new(io, clock.clone(), limits.header_read_timeout);
    let handler_clock = clock.clone();
    let service = hyper::service::service_fn(move |request: http::Request<Incoming>| {
        handler_clock.begin();
        let handled = match missing_host(&request) {
            Some(refusal) => Handled::Now(refusal),
            None => handler.handle_now(request, peer),
        };
        match handled {
            Handled::Now(answer) => {
                answered(&answer, hops.as_deref(), &handler_clock);
                Either::Left(std::future::ready(Ok(answer)))
            }
            Handled::Later(handling) => {
                let (clock, hops) = (handler_clock.clone(), hops.clone());
                Either::Right(async move {
                    let answer = handling.await;
                    answered(&answer, hops.as_deref(), &clock);
                    Ok::<_, std::convert::Infallible>(answer)
                })
            }
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .max_buf_size(limits.max_head_bytes.max(MIN_HEAD_BYTES))
        .keep_alive(true);
    if let Err(e) = builder.serve_connection(io, service).await {
        // Malformed or oversized heads and clients too slow to send one are
        // worth a line (hyper has already answered 400/431 or closed); a
        // client hanging up is not.
        let refused = clock.timed_out() || e.is_parse() || e.is_parse_too_large();
        if refused {
            if let Some(left_out) = log_throttle::refusals().allow(peer.ip()) {
                let why = match clock.timed_out() {
                    true => "request head not received in time".to_string(),
                    false => e.to_string(),
                };
                tracing::info!(%peer, left_out, "request refused: {why}");
            }
        } else {
            tracing::debug!(%peer, "connection ended: {e}");
        }
    }
}
