//! What meta169's API and agent share on the wire: the HTTP/1 listener for
//! guest-facing servers (hyper with the limits hostile clients call for:
//! bounded request head, header read timeout, bounded number of
//! connections; each request handed to an axum router with the TCP peer
//! address attached as [`PeerAddr`]), and the proxy signature ([`signing`]).

pub mod signing;

use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// The TCP peer of a request, attached by the listener.
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

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_read_timeout: Duration::from_secs(10),
            max_head_bytes: 8 * 1024,
            max_connections: 4096,
            body_read_timeout: Duration::from_secs(10),
            batch_pipelined_answers: false,
        }
    }
}

/// What a listener hands each request to: an axum [`Router`](axum::Router),
/// or a plain function made a service with `tower::service_fn` where a
/// router's matching is not needed (the agent's guest listeners).
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

/// Serve `handler` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    handler: impl Handler,
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
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let limits = limits.clone();
        tokio::spawn(async move {
            serve_connection(TokioIo::new(stream), peer, handler, &limits).await;
            drop(permit);
        });
    }
}

/// Serve one accepted connection (TCP or anything else that is a stream).
pub async fn serve_connection<I>(
    io: I,
    peer: SocketAddr,
    handler: impl Handler,
    limits: &ServerLimits,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request: http::Request<Incoming>| {
        request.extensions_mut().insert(PeerAddr(peer));
        handler.clone().oneshot(request.map(axum::body::Body::new))
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_head_bytes.max(8192))
        .keep_alive(true)
        .pipeline_flush(limits.batch_pipelined_answers);
    if let Err(e) = builder.serve_connection(io, service).await {
        // Malformed or oversized heads and clients too slow to send one are
        // worth a line (hyper has already answered 400/431/408 or closed);
        // a client hanging up is not.
        if e.is_parse() || e.is_parse_too_large() || e.is_timeout() {
            tracing::info!(%peer, "request refused: {e}");
        } else {
            tracing::debug!(%peer, "connection ended: {e}");
        }
    }
}
