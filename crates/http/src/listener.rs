//! The HTTP/1 listener of guest-facing servers: hyper with the limits
//! hostile clients call for (bounded request head, header read timeout,
//! bounded number of connections), each request handed to a tower service
//! with the peer address attached as [`PeerAddr`]. One accept loop for TCP
//! and UNIX sockets ([`Accept`]), so both get the same limits. A handler
//! with a quick path has its plain GETs read before hyper, under the same
//! limits ([`crate::quick`]).

use crate::batch::Batch;
use crate::direct_socket::DirectStream;
use crate::head_timeout::{HeadClock, HeadTimeout};
use crate::hop_limit::{HopControl, HopLimit};
use crate::log_throttle;
use crate::per_source::PerSource;
use crate::quick::{Head, Quick};
use crate::rewind::Rewind;
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
    /// Read plain GET requests on the quick path ([`crate::quick`]) when
    /// the handler has one; off, hyper reads every request.
    pub quick_path: bool,
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
            quick_path: true,
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

    /// Whether [`Self::handle_head`] takes requests: then the listener
    /// reads a connection's plain GET requests itself ([`crate::quick`])
    /// until one it does not take.
    const QUICK: bool = false;

    /// A plain GET request, as the quick path read it: answered, or on
    /// its way; `None` leaves it, with nothing done for it yet, to hyper,
    /// which then calls [`Self::handle_now`] with it and serves the rest
    /// of its connection.
    fn handle_head(
        &self,
        _head: &Head<'_>,
        _peer: SocketAddr,
    ) -> Option<Quick<impl Future<Output = Answer> + Send + 'static + use<Self>>> {
        None::<Quick<std::future::Ready<Answer>>>
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

/// An answer handed over to be written: its hop limit applied, and the
/// wait for the connection's next request head started.
pub(crate) fn answered(answer: &Answer, hops: Option<&HopControl>, clock: &HeadClock) {
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

/// Serve one accepted connection: on the quick path while the handler
/// takes its requests there, then by hyper.
async fn serve_connection<I>(
    io: I,
    connection: Connection,
    handler: impl PeerHandler,
    limits: &ServerLimits,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let io = HeadTimeout::new(io, connection.clock.clone(), limits.header_read_timeout);
    let max_head_bytes = limits.max_head_bytes.max(MIN_HEAD_BYTES);
    let io = if quick_path(&handler, limits) {
        let quick = crate::quick::Connection {
            clock: &connection.clock,
            hops: connection.hops.as_deref(),
            peer: connection.peer,
            max_head_bytes,
        };
        match crate::quick::serve(io, quick, handler.clone()).await {
            crate::quick::Left::Closed => return,
            crate::quick::Left::ToHyper(io) => io,
        }
    } else {
        Rewind::new(bytes::Bytes::new(), io)
    };
    serve_by_hyper(io, connection, handler, max_head_bytes).await
}

/// Whether `handler`'s connections start on the quick path.
fn quick_path<H: PeerHandler>(_handler: &H, limits: &ServerLimits) -> bool {
    H::QUICK && limits.quick_path
}

/// Serve the rest of a connection with hyper.
async fn serve_by_hyper<I>(
    io: I,
    connection: Connection,
    handler: impl PeerHandler,
    max_head_bytes: usize,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let Connection { clock, peer, hops } = connection;
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
    builder.max_buf_size(max_head_bytes).keep_alive(true);
    if let Err(e) = builder.serve_connection(io, service).await {
        // Malformed or oversized heads and clients too slow to send one are
        // worth a line (hyper has already answered 400/431 or closed); a
        // client hanging up is not.
        let refused = clock.timed_out() || e.is_parse() || e.is_parse_too_large();
        if refused {
            refusal(peer, &clock, &e);
        } else {
            tracing::debug!(%peer, "connection ended: {e}");
        }
    }
}

/// A refused request's line (throttled per source).
fn refusal(peer: SocketAddr, clock: &HeadClock, error: &dyn std::fmt::Display) {
    if let Some(left_out) = log_throttle::refusals().allow(peer.ip()) {
        let why = match clock.timed_out() {
            true => "request head not received in time".to_string(),
            false => error.to_string(),
        };
        tracing::info!(%peer, left_out, "request refused: {why}");
    }
}

/// A connection the quick path was reading ended with `error`: a line
/// if its client ran out of time for a head, as hyper's ending gets.
pub(crate) fn connection_ended(peer: SocketAddr, clock: &HeadClock, error: &std::io::Error) {
    match clock.timed_out() {
        true => refusal(peer, clock, error),
        false => tracing::debug!(%peer, "connection ended: {error}"),
    }
}
