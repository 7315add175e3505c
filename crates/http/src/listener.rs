//! The HTTP/1 listener of guest-facing servers: hyper with the limits
//! hostile clients call for (bounded request head, header read timeout,
//! bounded number of connections), each request handed to a tower service
//! with the peer address attached as [`PeerAddr`]. One accept loop for TCP
//! and UNIX sockets ([`Accept`]), so both get the same limits.

use crate::head_timeout::{HeadClock, HeadTimeout};
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
    /// Time allowed to send a request body (password POST, admin JSON).
    pub body_read_timeout: Duration,
    /// Write the answers to requests a client pipelined together, in one
    /// write (hyper's `pipeline_flush`): what makes a pipelining proxy
    /// (meta169's agent) cheap to serve. Only for listeners whose callers
    /// are proxies: with it, hyper may close the connection of a malformed
    /// or oversized request without sending its 400 or 431.
    pub batch_pipelined_answers: bool,
}

/// hyper's smallest read buffer: a head limit below it is raised to it.
const MIN_HEAD_BYTES: usize = 8 * 1024;

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_read_timeout: Duration::from_secs(10),
            max_head_bytes: MIN_HEAD_BYTES,
            max_connections: 4096,
            body_read_timeout: Duration::from_secs(10),
            batch_pipelined_answers: false,
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
pub trait PeerHandler: Clone + Send + 'static {
    fn handle(
        &self,
        request: http::Request<Incoming>,
        peer: SocketAddr,
    ) -> impl Future<Output = Answer> + Send;
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
    ) -> impl Future<Output = Answer> + Send {
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
}

impl Accept for tokio::net::TcpListener {
    type Stream = tokio::net::TcpStream;

    async fn accept(&self) -> std::io::Result<(Self::Stream, SocketAddr)> {
        let (stream, peer) = tokio::net::TcpListener::accept(self).await?;
        // Answers are small and whole: send them at once.
        let _ = stream.set_nodelay(true);
        Ok((stream, peer))
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
        let handler = handler.clone();
        let limits = limits.clone();
        tokio::spawn(async move {
            serve_connection(TokioIo::new(stream), peer, handler, &limits).await;
            drop(permit);
        });
    }
}

/// Serve one accepted connection.
async fn serve_connection<I>(
    io: I,
    peer: SocketAddr,
    handler: impl PeerHandler,
    limits: &ServerLimits,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let clock = HeadClock::new();
    let io = HeadTimeout::new(io, clock.clone(), limits.header_read_timeout);
    let handler_clock = clock.clone();
    let service = hyper::service::service_fn(move |request: http::Request<Incoming>| {
        let handler = handler.clone();
        let clock = handler_clock.clone();
        clock.begin();
        async move {
            let answer = handler.handle(request, peer).await;
            clock.end();
            Ok::<_, std::convert::Infallible>(answer)
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .max_buf_size(limits.max_head_bytes.max(MIN_HEAD_BYTES))
        .keep_alive(true)
        .pipeline_flush(limits.batch_pipelined_answers);
    if let Err(e) = builder.serve_connection(io, service).await {
        // Malformed or oversized heads and clients too slow to send one are
        // worth a line (hyper has already answered 400/431 or closed); a
        // client hanging up is not.
        if clock.timed_out() {
            tracing::info!(%peer, "request refused: request head not received in time");
        } else if e.is_parse() || e.is_parse_too_large() {
            tracing::info!(%peer, "request refused: {e}");
        } else {
            tracing::debug!(%peer, "connection ended: {e}");
        }
    }
}
