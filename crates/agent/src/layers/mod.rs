//! The tower stack around the agent's handlers, outermost first: error
//! pages (every failure becomes Neutron's page with its status) → per
//! guest rate limit → upstream timeout → a trace span → the handler. Each
//! concern is one layer, so a handler only looks up, signs and forwards.

mod error_pages;
mod rate_limit;
mod trace;

pub use error_pages::{ErrorPagesLayer, Observe};
pub use rate_limit::{RateLimitLayer, RateLimited};
pub use trace::TraceLayer;

use crate::guest_error::GuestError;
use crate::ratelimit::RateLimiter;
use axum::extract::Request;
use axum::response::Response;
use meta169_http::{Handler, PeerAddr};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tower::{Service, ServiceBuilder};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Wrap `handler` (the handler of the listener for `network`) in the stack.
pub fn stack<S>(
    handler: S,
    network: Arc<str>,
    limiter: Option<Arc<RateLimiter>>,
    timeout: Duration,
    observe: Observe,
) -> impl Handler
where
    S: Service<Request, Response = Response, Error = GuestError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    ServiceBuilder::new()
        .layer(ErrorPagesLayer {
            network: network.clone(),
            timeout,
            observe,
        })
        .layer(RateLimitLayer {
            limiter,
            network: network.clone(),
        })
        .layer(tower::timeout::TimeoutLayer::new(timeout))
        .layer(TraceLayer { network })
        .service(handler)
}

fn peer_of(request: &Request) -> Option<IpAddr> {
    request.extensions().get::<PeerAddr>().map(|p| p.0.ip())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::RateLimits;
    use axum::response::IntoResponse;
    use http_body_util::BodyExt;
    use std::net::SocketAddr;
    use tower::ServiceExt;

    fn request(peer: &str) -> Request {
        let mut request = Request::new(axum::body::Body::empty());
        *request.uri_mut() = "/latest/meta-data/hostname".parse().unwrap();
        let peer: SocketAddr = format!("{peer}:40000").parse().unwrap();
        request.extensions_mut().insert(PeerAddr(peer));
        request
    }

    async fn text(response: Response) -> (u16, String) {
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// A handler that answers after `delay`, or fails with `error`.
    fn handler(
        delay: Duration,
        error: Option<fn() -> GuestError>,
    ) -> impl Service<Request, Response = Response, Error = GuestError, Future: Send> + Clone + Send
    {
        tower::service_fn(move |_request: Request| async move {
            tokio::time::sleep(delay).await;
            match error {
                Some(make) => Err(make()),
                None => Ok("hello".into_response()),
            }
        })
    }

    #[tokio::test]
    async fn answers_pass_and_errors_become_neutrons_pages() {
        let net: Arc<str> = Arc::from("net");
        let service = stack(
            handler(Duration::ZERO, None),
            net.clone(),
            None,
            Duration::from_secs(5),
            Observe::default(),
        );
        assert_eq!(
            text(service.oneshot(request("10.0.0.5")).await.unwrap()).await,
            (200, "hello".into())
        );

        let unknown = stack(
            handler(
                Duration::ZERO,
                Some(|| GuestError::UnknownGuest(Arc::from("net"))),
            ),
            net.clone(),
            None,
            Duration::from_secs(5),
            Observe::default(),
        );
        let (status, body) = text(unknown.oneshot(request("10.0.0.5")).await.unwrap()).await;
        assert_eq!(status, 404);
        assert!(
            body.contains("<title>404 Not Found</title>")
                && body.contains("Instance was not found on network net."),
            "{body}"
        );

        let down = stack(
            handler(Duration::ZERO, Some(|| GuestError::Unreachable)),
            net,
            None,
            Duration::from_secs(5),
            Observe::default(),
        );
        let (status, body) = text(down.oneshot(request("10.0.0.5")).await.unwrap()).await;
        assert_eq!(status, 503);
        assert!(body.contains("temporarily unavailable"), "{body}");
    }

    #[tokio::test]
    async fn a_slow_upstream_is_cut_at_the_timeout() {
        let service = stack(
            handler(Duration::from_secs(30), None),
            Arc::from("net"),
            None,
            Duration::from_millis(50),
            Observe::default(),
        );
        let (status, body) = text(service.oneshot(request("10.0.0.5")).await.unwrap()).await;
        assert_eq!(status, 504);
        assert!(body.contains("did not answer in time"), "{body}");
    }

    #[tokio::test]
    async fn a_guest_over_its_rate_gets_429_and_others_do_not() {
        let limiter = Arc::new(RateLimiter::new(RateLimits {
            base_limit: 2,
            burst_limit: 2,
            ..RateLimits::default()
        }));
        let service = stack(
            handler(Duration::ZERO, None),
            Arc::from("net"),
            Some(limiter),
            Duration::from_secs(5),
            Observe::default(),
        );
        for _ in 0..2 {
            let answer = service.clone().oneshot(request("10.0.0.5")).await.unwrap();
            assert_eq!(answer.status(), 200);
        }
        let (status, body) =
            text(service.clone().oneshot(request("10.0.0.5")).await.unwrap()).await;
        assert_eq!(status, 429);
        assert!(body.contains("too many requests"), "{body}");
        let other = service.oneshot(request("10.0.0.6")).await.unwrap();
        assert_eq!(other.status(), 200);
    }
}
