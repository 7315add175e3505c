//! How a request ends: its answer made into a response, counted in the
//! metrics and written to the access log.

use crate::answer::plain;
use crate::cache::LoadedInstance;
use crate::error::{text_error, ApiError};
use crate::metadata::MetadataService;
use crate::metrics::{IdentityLabel, TreeLabel};
use bytes::Bytes;
use http::header;
use meta169_http::{Answer, ResponseBody};
use meta169_tree::ContentType;
use std::sync::Arc;
use std::time::Instant;

/// An answer ready to go out.
pub(super) enum Ready {
    /// A body of one content type, made into a response only by
    /// [`finish`]: a response is ~170 bytes, copied by each function it
    /// is returned through. Built late, a cached `meta_data.json` request
    /// runs ~60 fewer instructions (callgrind), two of its memmoves gone.
    Body(ContentType, Bytes),
    /// A response with headers of its own.
    Response(Answer),
}

/// The answer (an error turned into its response), counted and logged.
pub(super) fn finish(
    service: &MetadataService,
    path: &str,
    result: Result<Ready, ApiError>,
    started: Instant,
    outcome: &Outcome,
) -> Answer {
    match settle(service, path, result, started, outcome) {
        Ready::Body(content_type, body) => plain(content_type, body),
        Ready::Response(response) => response,
    }
}

/// The answer, counted and logged; a body is left a body (for the
/// listener's quick path, which writes it without a response).
pub(super) fn settle(
    service: &MetadataService,
    path: &str,
    result: Result<Ready, ApiError>,
    started: Instant,
    outcome: &Outcome,
) -> Ready {
    // An error is made into its response here, a body after counting.
    let (why, ready) = match result {
        Ok(ready) => (None, ready),
        Err(error) => {
            let why = error.to_string();
            let mut response = text_error(error.status(), &why).map(ResponseBody::Right);
            response
                .headers_mut()
                .insert(header::SERVER, meta169_http::headers::SERVER);
            (Some(why), Ready::Response(response))
        }
    };
    let status = match &ready {
        Ready::Body(..) => http::StatusCode::OK,
        Ready::Response(response) => {
            debug_assert!(
                response.headers().contains_key(header::SERVER),
                "answers are built by `plain`, which names the server"
            );
            response.status()
        }
    }
    .as_u16();
    let took = started.elapsed();
    if outcome.tokenless {
        service.metrics.tokenless.inc();
    }
    service
        .metrics
        .request(status, TreeLabel::of(path), outcome.identity, took);
    let instance = outcome.instance().unwrap_or("-");
    service
        .settings
        .access_log
        .record(path, status, instance, took, why.as_deref());
    ready
}

/// What a request turned out to be, for its metrics and access log line.
pub(super) struct Outcome {
    pub(super) instance: Option<Arc<LoadedInstance>>,
    pub(super) identity: IdentityLabel,
    /// It came without a session token.
    pub(super) tokenless: bool,
}

impl Default for Outcome {
    fn default() -> Self {
        Outcome {
            instance: None,
            identity: IdentityLabel::None,
            tokenless: false,
        }
    }
}

impl Outcome {
    fn instance(&self) -> Option<&str> {
        self.instance.as_ref().map(|i| &*i.uuid)
    }
}
