//! The outermost layer: every error of the layers below becomes Neutron's
//! page with its status, a timeout or an unexpected failure a log line
//! naming the guest, and every answer is counted (and logged at the
//! access log's level).

use super::rate_limit::RateLimited;
use super::{peer_of, BoxError};
use crate::guest_error::{error_page, GuestError};
use crate::metrics::{AgentMetrics, UpstreamFailure};
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{StatusCode, Uri};
use meta169_http::access_log::AccessLog;
use prometheus_client::metrics::counter::Counter;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};
use tower::{Layer, Service};

/// How answers are counted and logged.
#[derive(Clone, Default)]
pub struct Observe {
    pub metrics: Arc<AgentMetrics>,
    /// The listener's request counter, if it counts per network.
    pub requests: Option<Counter>,
    pub access_log: AccessLog,
}

/// Turns every error of the layers below into Neutron's page.
#[derive(Clone)]
pub struct ErrorPagesLayer {
    pub network: Arc<str>,
    pub timeout: Duration,
    pub observe: Observe,
}

impl<S> Layer<S> for ErrorPagesLayer {
    type Service = ErrorPages<S>;

    fn layer(&self, inner: S) -> ErrorPages<S> {
        ErrorPages {
            inner,
            network: self.network.clone(),
            timeout: self.timeout,
            observe: self.observe.clone(),
        }
    }
}

#[derive(Clone)]
pub struct ErrorPages<S> {
    inner: S,
    network: Arc<str>,
    timeout: Duration,
    observe: Observe,
}

impl<S> Service<Request> for ErrorPages<S>
where
    S: Service<Request, Response = Response>,
    S::Error: Into<BoxError>,
{
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = ErrorPagesFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The stack's services are always ready; an error here would be a
        // bug below, answered per request.
        let _ = ready!(self.inner.poll_ready(cx));
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if let Some(requests) = &self.observe.requests {
            requests.inc();
        }
        let context = RequestContext {
            network: self.network.clone(),
            peer: peer_of(&request),
            uri: request.uri().clone(),
            timeout: self.timeout,
            metrics: self.observe.metrics.clone(),
            access_log: self.observe.access_log,
            started: Instant::now(),
        };
        ErrorPagesFuture {
            inner: self.inner.call(request),
            context: Some(context),
        }
    }
}

/// What an answer's log line and counters name.
struct RequestContext {
    network: Arc<str>,
    peer: Option<IpAddr>,
    uri: Uri,
    timeout: Duration,
    metrics: Arc<AgentMetrics>,
    access_log: AccessLog,
    started: Instant,
}

impl RequestContext {
    fn page(&self, error: BoxError) -> Response {
        let error = match error.downcast::<GuestError>() {
            Ok(guest) => return guest.into_response(),
            Err(other) => other,
        };
        let (network, path, timeout) = (&self.network, self.uri.path(), self.timeout);
        let peer = self.peer.map(|p| p.to_string()).unwrap_or_default();
        if error.is::<tower::timeout::error::Elapsed>() {
            self.metrics.upstream_failure(UpstreamFailure::Timeout);
            tracing::warn!(%network, %peer, %path, "the metadata API did not answer in {timeout:?}");
            return error_page(
                StatusCode::GATEWAY_TIMEOUT,
                "The remote metadata server did not answer in time.",
            );
        }
        if error.is::<RateLimited>() {
            self.metrics.rate_limited.inc();
            return error_page(StatusCode::TOO_MANY_REQUESTS, &error.to_string());
        }
        tracing::error!(%network, %peer, %path, "request failed: {error}");
        error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "An unknown error has occurred. Please try your request again.",
        )
    }

    /// Count the answer, and log it if the access log wants it.
    fn observe(&self, status: u16, why: Option<&str>) {
        self.metrics.response(status);
        if self.access_log.wants(status) {
            let peer = self.peer.map(|p| p.to_string()).unwrap_or_default();
            let guest = format!("{peer} on {}", self.network);
            let took = self.started.elapsed();
            self.access_log
                .record(self.uri.path(), status, &guest, took, why);
        }
    }
}

pin_project_lite::pin_project! {
    pub struct ErrorPagesFuture<F> {
        #[pin]
        inner: F,
        context: Option<RequestContext>,
    }
}

impl<F, E> Future for ErrorPagesFuture<F>
where
    F: Future<Output = Result<Response, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response, std::convert::Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let Some(context) = this.context.take() else {
            return Poll::Ready(Ok(error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Polled after completion.",
            )));
        };
        let response = match result {
            Ok(response) => {
                context.observe(response.status().as_u16(), None);
                response
            }
            Err(error) => {
                let error = error.into();
                let why = error.to_string();
                let response = context.page(error);
                context.observe(response.status().as_u16(), Some(&why));
                response
            }
        };
        Poll::Ready(Ok(response))
    }
}
