//! The metadata API the agent forwards to (meta169 serve or Nova), behind
//! one [`UpstreamClient::send`]. Three transports, one file each: pooled
//! keep-alive connections for plain HTTP ([`pooled`], hyper's client),
//! pipelined lanes for bodiless GETs to meta169 serve ([`pipeline`]), and
//! HTTPS ([`https`]).

pub mod answer;
pub mod https;
pub mod pipeline;
pub mod pooled;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, StatusCode};
use pipeline::{LaneError, Pipeline};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Largest upstream answer relayed.
pub const MAX_UPSTREAM_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Time allowed to open a connection to the upstream.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The port of an `http://` upstream that names none.
const DEFAULT_HTTP_PORT: u16 = 80;

/// The upstream metadata API, as configured.
#[derive(Clone, Debug)]
pub struct Upstream {
    /// `http://host:port` or `https://host:port`, no trailing slash.
    pub url: String,
    pub shared_secret: Vec<u8>,
    pub timeout: Duration,
    /// Skip TLS verification (Neutron's `nova_metadata_insecure`).
    pub insecure: bool,
    /// Extra CA bundle (Neutron's `auth_ca_cert`).
    pub ca_cert: Option<std::path::PathBuf>,
    /// A client certificate and its key, both PEM, for mutual TLS
    /// (Neutron's `nova_client_cert`, `nova_client_priv_key`).
    pub client_cert: Option<std::path::PathBuf>,
    pub client_key: Option<std::path::PathBuf>,
    /// Whether bodiless GETs to a plain-HTTP upstream are pipelined.
    pub pipelining: Pipelining,
}

/// HTTP/1.1 pipelining to the upstream (see [`pipeline`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Pipelining {
    /// Once the upstream answers as meta169 serve (`Server: meta169`); a
    /// Nova API keeps one request per connection: its workers serve a
    /// connection's requests one after another, so a queue behind a slow
    /// one would cost more than the saved system calls.
    #[default]
    Auto,
    On,
    Off,
}

impl std::str::FromStr for Pipelining {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "auto" => Ok(Pipelining::Auto),
            "on" => Ok(Pipelining::On),
            "off" => Ok(Pipelining::Off),
            other => Err(format!(
                "upstream pipelining {other:?} is not one of auto, on, off"
            )),
        }
    }
}

/// Status, `Content-Type` and body of an upstream answer.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub content_type: Option<HeaderValue>,
    /// A session token's lifetime (answer to `PUT /latest/api/token`).
    pub token_ttl: Option<HeaderValue>,
    pub body: Bytes,
}

/// Why an upstream request has no answer.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The upstream could not be reached, or dropped the request.
    #[error("metadata API unreachable: {0}")]
    Connect(String),
    /// Its answer could not be read.
    #[error("reading the metadata API's answer failed: {0}")]
    Read(String),
}

/// Why the upstream cannot be used at all (a configuration error).
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The URL is not `http://` or `https://`.
    #[error("upstream {0:?} must start with http:// or https://")]
    Scheme(String),
    /// The CA bundle cannot be read.
    #[error(transparent)]
    CaBundle(#[from] meta169_http::ca::CaBundleError),
    /// The client certificate or key cannot be used.
    #[error("upstream client certificate: {0}")]
    ClientCert(String),
    /// The HTTPS client cannot be set up.
    #[error("cannot set up the HTTPS client: {0}")]
    Tls(String),
}

/// Whether GETs go through the pipeline now.
struct PipelineUse {
    pipeline: Arc<Pipeline>,
    mode: Pipelining,
    /// Set in `On` mode, or in `Auto` once the upstream named itself.
    active: AtomicBool,
}

impl PipelineUse {
    fn active(&self) -> bool {
        self.active.load(Ordering::Relaxed) && self.pipeline.usable()
    }

    /// In `Auto` mode: does this answer come from meta169 serve?
    fn learn(&self, server: Option<&HeaderValue>) {
        if self.mode == Pipelining::Auto
            && !self.active.load(Ordering::Relaxed)
            && server.is_some_and(meta169_http::headers::is_meta169)
            && !self.active.swap(true, Ordering::Relaxed)
        {
            tracing::info!(
                upstream = %self.pipeline.authority(),
                "the metadata API is meta169 serve: pipelining GETs to it"
            );
        }
    }
}

enum Transport {
    Plain {
        pooled: pooled::Pooled,
        pipelining: PipelineUse,
    },
    Https(https::Https),
}

/// The client for one upstream.
pub struct UpstreamClient {
    transport: Transport,
    url: String,
}

/// `host:port` of an `http://` URL's authority.
fn authority_of(rest: &str) -> String {
    let authority = rest.split('/').next().unwrap_or(rest);
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        && !authority.ends_with(']');
    if has_port {
        authority.to_string()
    } else {
        format!("{authority}:{DEFAULT_HTTP_PORT}")
    }
}

impl UpstreamClient {
    /// Fails when the upstream cannot be used (a bad URL, an unreadable or
    /// invalid CA bundle), saying which.
    pub fn new(upstream: &Upstream) -> Result<UpstreamClient, UpstreamError> {
        let url = upstream.url.trim_end_matches('/').to_string();
        let transport = if let Some(rest) = url.strip_prefix("http://") {
            let authority = authority_of(rest);
            Transport::Plain {
                pooled: pooled::Pooled::new(&authority, upstream.timeout),
                pipelining: PipelineUse {
                    pipeline: Arc::new(Pipeline::new(
                        &authority,
                        MAX_UPSTREAM_BODY_BYTES,
                        upstream.timeout,
                    )),
                    mode: upstream.pipelining,
                    active: (upstream.pipelining == Pipelining::On).into(),
                },
            }
        } else if url.starts_with("https://") {
            Transport::Https(https::Https::new(upstream)?)
        } else {
            return Err(UpstreamError::Scheme(upstream.url.clone()));
        };
        Ok(UpstreamClient { transport, url })
    }

    /// The upstream's URL, for logs.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether GETs are being pipelined now.
    pub fn pipelining(&self) -> bool {
        matches!(&self.transport, Transport::Plain { pipelining, .. } if pipelining.active())
    }

    /// Send one request for `target` (path and query) with exactly these
    /// headers, and read the whole answer.
    pub async fn send(
        &self,
        method: Method,
        target: &str,
        headers: &[(HeaderName, HeaderValue)],
        body: Bytes,
    ) -> Result<Answer, SendError> {
        match &self.transport {
            Transport::Https(https) => https.send(method, &self.url, target, headers, body).await,
            Transport::Plain { pooled, pipelining } => {
                // Dynamic vendor data may take the API seconds (it asks
                // other services): not worth holding a lane for.
                if method == Method::GET
                    && body.is_empty()
                    && pipelining.active()
                    && !target.ends_with("vendor_data2.json")
                {
                    let head = pipeline::request_head(target, pooled.authority(), headers);
                    match pipelining.pipeline.get(head).await {
                        Ok(answer) => return Ok(answer),
                        Err(LaneError::Unreadable(why)) => return Err(SendError::Read(why)),
                        Err(LaneError::Connect(why)) => return Err(SendError::Connect(why)),
                        // Not answered: once more on a pooled connection.
                        Err(LaneError::Unanswered(why)) => {
                            tracing::debug!(%target, "pipelined request not answered ({why}); sending it again")
                        }
                    }
                }
                let (answer, server) = pooled.send(method, target, headers, body).await?;
                pipelining.learn(server.as_ref());
                Ok(answer)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities_get_a_port() {
        assert_eq!(authority_of("127.0.0.1:8775"), "127.0.0.1:8775");
        assert_eq!(authority_of("nova/"), "nova:80");
        assert_eq!(authority_of("[::1]"), "[::1]:80");
        assert_eq!(authority_of("[::1]:8775/x"), "[::1]:8775");
    }
}
