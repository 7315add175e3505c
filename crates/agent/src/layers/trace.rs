//! A span per request: all whole-body answers need (tower-http's trace
//! layer would wrap every response body to watch for its end).

use axum::extract::Request;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, Service};
use tracing::instrument::Instrumented;
use tracing::Instrument;

/// A span per request, at debug level (an enabled span costs more than
/// the rest of a proxied request, so it is off at the default level).
#[derive(Clone)]
pub struct TraceLayer {
    pub network: Arc<str>,
}

impl<S> Layer<S> for TraceLayer {
    type Service = Trace<S>;

    fn layer(&self, inner: S) -> Trace<S> {
        Trace {
            inner,
            network: self.network.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Trace<S> {
    inner: S,
    network: Arc<str>,
}

impl<S: Service<Request>> Service<Request> for Trace<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = Instrumented<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let span =
            tracing::debug_span!("guest", network = %self.network, path = %request.uri().path());
        self.inner.call(request).instrument(span)
    }
}
