//! Plain-HTTP requests on pooled keep-alive connections: hyper's client,
//! which expires idle connections and retries a request a pooled
//! connection dropped before sending it. A GET that was sent on a
//! connection the API had just closed (it answers, then closes) is sent
//! again: hyper does not resend what it wrote, and a GET may repeat.

use super::{Answer, SendError, CONNECT_TIMEOUT, MAX_UPSTREAM_BODY_BYTES};
use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Method};
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use meta169_http::headers::METADATA_TOKEN_TTL;
use std::time::Duration;

/// Idle connections kept per upstream.
const MAX_IDLE_CONNECTIONS: usize = 256;
/// An idle connection is closed after this long (the API may close it first).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Tries of a GET whose connection broke under it (each may meet another
/// connection the API has just closed).
const GET_ATTEMPTS: usize = 3;

/// The pool for one upstream `host:port`.
pub struct Pooled {
    client: Client<HttpConnector, Full<Bytes>>,
    authority: String,
    body_timeout: Duration,
}

impl Pooled {
    /// Answers are read within `body_timeout` (the upstream timeout).
    pub fn new(authority: &str, body_timeout: Duration) -> Pooled {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(IDLE_TIMEOUT)
            .pool_max_idle_per_host(MAX_IDLE_CONNECTIONS)
            .pool_timer(TokioTimer::new())
            .build(connector);
        Pooled {
            client,
            authority: authority.to_string(),
            body_timeout,
        }
    }

    /// The upstream's `host:port`.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// Send one request; the answer and the upstream's `Server` header.
    pub async fn send(
        &self,
        method: Method,
        target: &str,
        headers: &[(HeaderName, HeaderValue)],
        body: Bytes,
    ) -> Result<(Answer, Option<HeaderValue>), SendError> {
        let uri = http::Uri::builder()
            .scheme("http")
            .authority(self.authority.as_str())
            .path_and_query(target)
            .build()
            .map_err(|e| SendError::Connect(format!("bad request target {target:?}: {e}")))?;
        let attempts = if method == Method::GET {
            GET_ATTEMPTS
        } else {
            1
        };
        let mut attempt = 0;
        let answer = loop {
            let mut request = http::Request::builder()
                .method(method.clone())
                .uri(uri.clone());
            for (name, value) in headers {
                request = request.header(name, value);
            }
            let request = request
                .body(Full::new(body.clone()))
                .map_err(|e| SendError::Connect(e.to_string()))?;
            attempt += 1;
            match self.client.request(request).await {
                Ok(answer) => break answer,
                // Not a refused connection: one that broke under the request.
                Err(e) if !e.is_connect() && attempt < attempts => {
                    tracing::debug!(%target, "the connection broke under the request ({}); sending it again", error_chain(&e));
                }
                Err(e) => return Err(SendError::Connect(error_chain(&e))),
            }
        };
        let status = answer.status();
        let content_type = answer.headers().get(header::CONTENT_TYPE).cloned();
        let token_ttl = answer.headers().get(METADATA_TOKEN_TTL).cloned();
        let server = answer.headers().get(header::SERVER).cloned();
        let body = meta169_http::body::read_bounded(
            answer.into_body(),
            MAX_UPSTREAM_BODY_BYTES,
            self.body_timeout,
        )
        .await
        .map_err(|e| SendError::Read(e.to_string()))?;
        Ok((
            Answer {
                status,
                content_type,
                token_ttl,
                body,
            },
            server,
        ))
    }
}

/// hyper's client error with its causes: its own message is only
/// "client error (Connect)" and the like.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
