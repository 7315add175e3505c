//! What every listener shares: the index of guests, and the forwarding of
//! a guest's request to the metadata API with Neutron's signed headers,
//! relaying the answer with the statuses Neutron's agent gives.

use crate::guest_error::GuestError;
use crate::index::{Guests, Index, Target};
use crate::metrics::{AgentMetrics, UpstreamFailure};
use crate::ratelimit::{RateLimiter, RateLimits};
use crate::settings::DEFAULT_TOKEN_HOP_LIMIT;
use crate::upstream::{SendError, Upstream, UpstreamClient, UpstreamError};
use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};
use meta169_http::access_log::AccessLog;
use meta169_http::body::BodyError;
use meta169_http::headers::{
    FORWARDED_FOR, INSTANCE_ID, METADATA_TOKEN, METADATA_TOKEN_TTL, SIGNATURE, TENANT_ID,
};
use meta169_http::hop_limit::HopLimit;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// Largest guest request body forwarded (a password POST is at most 1020 bytes).
pub const MAX_GUEST_BODY_BYTES: usize = 64 * 1024;
/// Statuses Neutron's agent relays; anything else becomes 502.
/// Neutron's set, and the session tokens' 401 and 405 (only meta169 serve
/// answers them, to guests that use tokens).
const RELAYED: &[u16] = &[200, 400, 401, 403, 404, 405, 409, 500, 502, 503, 504];

/// Shared by every listener.
pub struct Proxy {
    guests: Guests,
    upstream: UpstreamClient,
    timeout: Duration,
    rate_limiter: Option<Arc<RateLimiter>>,
    metrics: Arc<AgentMetrics>,
    access_log: AccessLog,
    token_hop_limit: Option<HopLimit>,
}

impl Proxy {
    /// Fails when the upstream cannot be used (a bad URL, an unreadable or
    /// invalid CA bundle), saying which.
    pub fn new(upstream: &Upstream) -> Result<Proxy, UpstreamError> {
        Ok(Proxy {
            guests: Guests::new(&upstream.shared_secret),
            upstream: UpstreamClient::new(upstream)?,
            timeout: upstream.timeout,
            rate_limiter: None,
            metrics: Arc::new(AgentMetrics::new()),
            access_log: AccessLog::default(),
            token_hop_limit: Some(HopLimit(DEFAULT_TOKEN_HOP_LIMIT)),
        })
    }

    /// Send session-token answers with this IP TTL / hop limit (`None`:
    /// the system's default); namespace listeners apply it.
    pub fn with_token_hop_limit(mut self, hops: Option<u8>) -> Proxy {
        self.token_hop_limit = hops.map(HopLimit);
        self
    }

    /// Refuse guests over these request rates with 429, as Neutron's
    /// haproxy does when rate limiting is enabled.
    pub fn with_rate_limits(mut self, limits: RateLimits) -> Proxy {
        self.rate_limiter = Some(Arc::new(RateLimiter::new(limits)));
        self
    }

    /// Count into these metrics (shared with the operations listener).
    pub fn with_metrics(mut self, metrics: Arc<AgentMetrics>) -> Proxy {
        self.metrics = metrics;
        self
    }

    /// Log guest requests at this level.
    pub fn with_access_log(mut self, access_log: AccessLog) -> Proxy {
        self.access_log = access_log;
        self
    }

    pub fn access_log(&self) -> AccessLog {
        self.access_log
    }

    /// Publish a new index (after a Southbound change).
    pub fn set_index(&self, index: Index) {
        self.metrics.index_entries.set(index.len() as i64);
        self.guests.publish(index);
    }

    /// The agent's metrics.
    pub fn metrics(&self) -> &Arc<AgentMetrics> {
        &self.metrics
    }

    pub fn index(&self) -> Arc<Index> {
        self.guests.index()
    }

    /// Who is `address` on `network`?
    pub fn lookup(&self, network: &str, address: IpAddr) -> Option<Arc<Target>> {
        self.guests
            .lookup(network, address)
            .map(|(target, _)| target)
    }

    pub(crate) fn guests(&self) -> &Guests {
        &self.guests
    }

    /// Whether GETs to the upstream are being pipelined now.
    pub fn pipelining(&self) -> bool {
        self.upstream.pipelining()
    }

    /// How long a guest's request may take upstream.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn rate_limiter(&self) -> Option<&Arc<RateLimiter>> {
        self.rate_limiter.as_ref()
    }

    /// Forward one guest request on behalf of `target`, signed.
    pub async fn forward(
        &self,
        request: Request,
        target: &Target,
        signature: HeaderValue,
        guest: IpAddr,
    ) -> Result<Response, GuestError> {
        let (parts, body) = request.into_parts();
        let token_request = parts.method == http::Method::PUT;
        // Most guest requests are GETs without a body: skip collecting.
        let body = if http_body::Body::size_hint(&body).exact() == Some(0) {
            Bytes::new()
        } else {
            meta169_http::body::read_bounded(body, MAX_GUEST_BODY_BYTES, self.timeout)
                .await
                .map_err(|e| match e {
                    BodyError::TooSlow(_) => GuestError::BodyTooSlow,
                    BodyError::TooLarge(_) | BodyError::Broken(_) => GuestError::BodyTooLarge,
                })?
        };
        let target_path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        // Only these headers go upstream; the guest's own are dropped, so it
        // cannot choose its identity.
        let text =
            |s: &str| HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""));
        let mut headers = [
            (FORWARDED_FOR, text(&guest.to_string())),
            (INSTANCE_ID, text(&target.instance_id)),
            (TENANT_ID, text(&target.project_id)),
            (SIGNATURE, signature),
            (METADATA_TOKEN, HeaderValue::from_static("")),
            (METADATA_TOKEN_TTL, HeaderValue::from_static("")),
        ];
        // Besides, only a session token and a token's lifetime pass.
        let mut count = 4;
        for name in [METADATA_TOKEN, METADATA_TOKEN_TTL] {
            if let Some(value) = parts.headers.get(&name) {
                headers[count] = (name, value.clone());
                count += 1;
            }
        }
        let headers = &headers[..count];
        let started = std::time::Instant::now();
        let answer = self
            .upstream
            .send(parts.method, target_path, headers, body)
            .await
            .map_err(|e| {
                let url = self.upstream.url();
                tracing::warn!(%url, path = %target_path, instance = %target.instance_id, "{e}");
                let (failure, error) = match e {
                    SendError::Connect(_) => {
                        (UpstreamFailure::Unreachable, GuestError::Unreachable)
                    }
                    SendError::Read(_) => (UpstreamFailure::Unreadable, GuestError::Unreadable),
                };
                self.metrics.upstream_failure(failure);
                error
            })?;
        self.metrics
            .upstream_duration
            .observe(started.elapsed().as_secs_f64());
        if answer.status == StatusCode::FORBIDDEN {
            tracing::warn!(instance = %target.instance_id, "the metadata API refused the signature: metadata_proxy_shared_secret differs between the agent and the API");
        }
        if !RELAYED.contains(&answer.status.as_u16()) {
            tracing::warn!(path = %target_path, status = %answer.status, "the metadata API answered a status Neutron's agent does not relay; answering 502");
            self.metrics
                .upstream_failure(UpstreamFailure::UnexpectedStatus);
            return Err(GuestError::UnexpectedStatus);
        }
        let mut response = Response::new(Body::from(answer.body));
        *response.status_mut() = answer.status;
        if let Some(content_type) = answer.content_type {
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, content_type);
        }
        if let Some(ttl) = answer.token_ttl {
            response.headers_mut().insert(METADATA_TOKEN_TTL, ttl);
            if let (true, Some(hops)) = (token_request, self.token_hop_limit) {
                response.extensions_mut().insert(hops);
            }
        }
        Ok(response)
    }
}
