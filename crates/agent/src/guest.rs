//! The handlers behind the agent's sockets, which only look up, sign and
//! forward: one for 169.254.169.254:80 in a namespace (the guest is the TCP
//! peer, the network is the listener's), one for the haproxy-compatible
//! UNIX socket (network and guest from haproxy's headers). Each is wrapped
//! in the same [`crate::layers`] stack.

use crate::guest_error::GuestError;
use crate::layers::{stack, Observe};
use crate::proxy::Proxy;
use axum::extract::Request;
use axum::response::Response;
use meta169_http::address::forwarded_for;
use meta169_http::headers::{FORWARDED_FOR, OVN_NETWORK_ID};
use meta169_http::{Handler, PeerAddr};
use std::sync::Arc;

/// The service behind 169.254.169.254:80 in `network`'s namespace.
pub fn guest_service(proxy: Arc<Proxy>, network: Arc<str>) -> impl Handler {
    let limiter = proxy.rate_limiter().cloned();
    let timeout = proxy.timeout();
    let metrics = proxy.metrics().clone();
    let requests = metrics.network_requests(&network);
    let proxy_access_log = proxy.access_log();
    let handler = {
        let network = network.clone();
        tower::service_fn(move |request: Request| {
            let (proxy, network) = (proxy.clone(), network.clone());
            async move { guest(&proxy, &network, request).await }
        })
    };
    let observe = Observe {
        metrics,
        requests: Some(requests),
        access_log: proxy_access_log,
    };
    stack(handler, network, limiter, timeout, observe)
}

async fn guest(
    proxy: &Proxy,
    network: &Arc<str>,
    request: Request,
) -> Result<Response, GuestError> {
    let peer = request
        .extensions()
        .get::<PeerAddr>()
        .map(|p| p.0.ip())
        .ok_or(GuestError::NoPeer)?;
    // What a forged token request from an application in the guest looks
    // like (the guest's own headers do not go upstream, so this is the
    // only place to see it).
    if request.method() == http::Method::PUT && request.headers().contains_key(FORWARDED_FOR) {
        return Err(GuestError::ForwardedPut);
    }
    let Some((target, signature)) = proxy.guests().lookup(network, peer) else {
        tracing::info!(%network, %peer, path = %request.uri().path(), "no instance with this address on this network");
        return Err(GuestError::UnknownGuest(network.clone()));
    };
    proxy.forward(request, &target, signature, peer).await
}

/// The service behind the haproxy-compatible UNIX socket. haproxy has
/// its own rate limits; this one has none.
pub fn haproxy_service(proxy: Arc<Proxy>) -> impl Handler {
    let timeout = proxy.timeout();
    let observe = Observe {
        metrics: proxy.metrics().clone(),
        requests: None,
        access_log: proxy.access_log(),
    };
    let handler = tower::service_fn(move |request: Request| {
        let proxy = proxy.clone();
        async move { haproxy(&proxy, request).await }
    });
    stack(handler, Arc::from("haproxy"), None, timeout, observe)
}

/// Network and guest from haproxy's `X-OVN-Network-ID` and
/// `X-Forwarded-For` (the last: haproxy's own).
async fn haproxy(proxy: &Proxy, request: Request) -> Result<Response, GuestError> {
    let network = request
        .headers()
        .get_all(OVN_NETWORK_ID)
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .map(Arc::<str>::from)
        .ok_or(GuestError::NoNetworkHeader)?;
    let guest = forwarded_for(request.headers())
        .ok()
        .flatten()
        .ok_or(GuestError::NoForwardedFor)?;
    let Some((target, signature)) = proxy.guests().lookup(&network, guest) else {
        return Err(GuestError::UnknownGuest(network));
    };
    proxy.forward(request, &target, signature, guest).await
}
