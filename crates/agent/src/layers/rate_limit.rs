//! Refusing a guest over its request rate (see [`crate::ratelimit`]):
//! Neutron's haproxy limits per guest address, which tower's global
//! `RateLimit` does not.

use super::{peer_of, BoxError};
use crate::ratelimit::{Admission, RateLimiter};
use axum::extract::Request;
use axum::response::Response;
use futures::future::{Either, MapErr, Ready, TryFutureExt};
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// A guest over its request rate (429).
#[derive(Debug, thiserror::Error)]
#[error("You have sent too many requests in a given amount of time.")]
pub struct RateLimited;

/// Refuses a guest over its rate (see [`crate::ratelimit`]); no limiter,
/// no limit.
#[derive(Clone)]
pub struct RateLimitLayer {
    pub limiter: Option<Arc<RateLimiter>>,
    pub network: Arc<str>,
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit {
            inner,
            limiter: self.limiter.clone(),
            network: self.network.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    limiter: Option<Arc<RateLimiter>>,
    network: Arc<str>,
}

fn boxed<E: Into<BoxError>>(error: E) -> BoxError {
    error.into()
}

impl<S> Service<Request> for RateLimit<S>
where
    S: Service<Request, Response = Response>,
    S::Error: Into<BoxError>,
{
    type Response = Response;
    type Error = BoxError;
    #[allow(clippy::type_complexity)]
    type Future =
        Either<Ready<Result<Response, BoxError>>, MapErr<S::Future, fn(S::Error) -> BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if let (Some(limiter), Some(peer)) = (&self.limiter, peer_of(&request)) {
            let admission = limiter.admit(&self.network, peer, std::time::Instant::now());
            if let Admission::Refused { first } = admission {
                if first {
                    tracing::info!(network = %self.network, %peer, "guest over the metadata request rate limit: answering 429 until it slows down");
                }
                return Either::Left(futures::future::ready(Err(Box::new(RateLimited))));
            }
        }
        Either::Right(
            self.inner
                .call(request)
                .map_err(boxed::<S::Error> as fn(S::Error) -> BoxError),
        )
    }
}
