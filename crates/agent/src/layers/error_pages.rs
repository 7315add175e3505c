//! The outermost layer: every error of the layers below becomes Neutron's
//! page with its status, and a timeout or an unexpected failure a log line
//! naming the guest.

use super::rate_limit::RateLimited;
use super::{peer_of, BoxError};
use crate::guest_error::{error_page, GuestError};
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{StatusCode, Uri};
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tower::{Layer, Service};

/// Turns every error of the layers below into Neutron's page.
#[derive(Clone)]
pub struct ErrorPagesLayer {
    pub network: Arc<str>,
    pub timeout: Duration,
}

impl<S> Layer<S> for ErrorPagesLayer {
    type Service = ErrorPages<S>;

    fn layer(&self, inner: S) -> ErrorPages<S> {
        ErrorPages {
            inner,
            network: self.network.clone(),
            timeout: self.timeout,
        }
    }
}

#[derive(Clone)]
pub struct ErrorPages<S> {
    inner: S,
    network: Arc<str>,
    timeout: Duration,
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
        let context = FailureContext {
            network: self.network.clone(),
            peer: peer_of(&request),
            uri: request.uri().clone(),
            timeout: self.timeout,
        };
        ErrorPagesFuture {
            inner: self.inner.call(request),
            context: Some(context),
        }
    }
}

/// What a failure's log line names.
struct FailureContext {
    network: Arc<str>,
    peer: Option<IpAddr>,
    uri: Uri,
    timeout: Duration,
}

impl FailureContext {
    fn page(&self, error: BoxError) -> Response {
        let error = match error.downcast::<GuestError>() {
            Ok(guest) => return guest.into_response(),
            Err(other) => other,
        };
        let (network, path, timeout) = (&self.network, self.uri.path(), self.timeout);
        let peer = self.peer.map(|p| p.to_string()).unwrap_or_default();
        if error.is::<tower::timeout::error::Elapsed>() {
            tracing::warn!(%network, %peer, %path, "the metadata API did not answer in {timeout:?}");
            return error_page(
                StatusCode::GATEWAY_TIMEOUT,
                "The remote metadata server did not answer in time.",
            );
        }
        if error.is::<RateLimited>() {
            return error_page(StatusCode::TOO_MANY_REQUESTS, &error.to_string());
        }
        tracing::error!(%network, %peer, %path, "request failed: {error}");
        error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "An unknown error has occurred. Please try your request again.",
        )
    }
}

pin_project_lite::pin_project! {
    pub struct ErrorPagesFuture<F> {
        #[pin]
        inner: F,
        context: Option<FailureContext>,
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
        Poll::Ready(Ok(match result {
            Ok(response) => response,
            Err(error) => match this.context.take() {
                Some(context) => context.page(error.into()),
                None => error_page(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Polled after completion.",
                ),
            },
        }))
    }
}
