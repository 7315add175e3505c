//! HTTPS to the upstream (a Nova API behind TLS), with Neutron's
//! `auth_ca_cert` and `nova_metadata_insecure`: reqwest's client.

use super::{Answer, SendError, Upstream, UpstreamError, CONNECT_TIMEOUT, MAX_UPSTREAM_BODY_BYTES};
use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Method};
use meta169_http::headers::METADATA_TOKEN_TTL;
use std::time::Duration;

/// Idle connections kept.
const MAX_IDLE_CONNECTIONS: usize = 256;
/// An idle connection is closed after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The client certificate and key, read once at start.
fn identity(upstream: &Upstream) -> Result<Option<reqwest::Identity>, UpstreamError> {
    let (cert, key) =
        match (&upstream.client_cert, &upstream.client_key) {
            (None, None) => return Ok(None),
            (Some(cert), Some(key)) => (cert, key),
            _ => return Err(UpstreamError::ClientCert(
                "give both the certificate and its key (nova_client_cert and nova_client_priv_key)"
                    .into(),
            )),
        };
    let read = |path: &std::path::Path| {
        std::fs::read(path)
            .map_err(|e| UpstreamError::ClientCert(format!("cannot read {}: {e}", path.display())))
    };
    let mut pem = read(cert)?;
    pem.push(b'\n');
    pem.extend(read(key)?);
    reqwest::Identity::from_pem(&pem).map(Some).map_err(|e| {
        UpstreamError::ClientCert(format!("{} with {}: {e}", cert.display(), key.display()))
    })
}

pub struct Https {
    client: reqwest::Client,
    body_timeout: Duration,
}

impl Https {
    pub fn new(upstream: &Upstream) -> Result<Https, UpstreamError> {
        let builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(IDLE_TIMEOUT)
            .pool_max_idle_per_host(MAX_IDLE_CONNECTIONS)
            .danger_accept_invalid_certs(upstream.insecure);
        let mut builder =
            meta169_http::ca::trusting(builder, upstream.ca_cert.as_deref(), "upstream CA bundle")?;
        if let Some(identity) = identity(upstream)? {
            builder = builder.identity(identity);
        }
        let client = builder
            .build()
            .map_err(|e| UpstreamError::Tls(e.to_string()))?;
        Ok(Https {
            client,
            body_timeout: upstream.timeout,
        })
    }

    pub async fn send(
        &self,
        method: Method,
        base: &str,
        target: &str,
        headers: &[(HeaderName, HeaderValue)],
        body: Bytes,
    ) -> Result<Answer, SendError> {
        let mut request = self.client.request(method, format!("{base}{target}"));
        for (name, value) in headers {
            request = request.header(name, value);
        }
        if !body.is_empty() {
            request = request.body(body);
        }
        let answer = request
            .send()
            .await
            .map_err(|e| SendError::Connect(e.to_string()))?;
        let status = answer.status();
        let content_type = answer.headers().get(header::CONTENT_TYPE).cloned();
        let token_ttl = answer.headers().get(METADATA_TOKEN_TTL).cloned();
        let body = meta169_http::body::read_response_bounded(
            answer,
            MAX_UPSTREAM_BODY_BYTES,
            self.body_timeout,
        )
        .await
        .map_err(|e| SendError::Read(e.to_string()))?;
        Ok(Answer {
            status,
            content_type,
            token_ttl,
            body,
        })
    }
}
