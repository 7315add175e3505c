//! What goes wrong for a guest ([`GuestError`]), and what it looks like to
//! the guest: Neutron's agent's HTML page with its texts and statuses,
//! never an empty body.

use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};
use std::sync::Arc;

/// Seconds a guest is told to wait (`Retry-After`) when the metadata API
/// cannot be reached: cloud-init 25.1 and later wait that long before
/// retrying instead of spending its own back-off; the agent reconnects on
/// the next request, so a short wait is enough.
pub const UNAVAILABLE_RETRY_AFTER_SECONDS: u32 = 2;

/// An error answer the agent gives itself.
pub fn error_page(status: StatusCode, message: &str) -> Response {
    let title = format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let body = format!("<html>\n <head>\n  <title>{title}</title>\n </head>\n <body>\n  <h1>{title}</h1>\n  {message}<br /><br />\n\n\n </body>\n</html>");
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=UTF-8"),
    );
    response
}

/// Why a guest gets an error page; each message is Neutron's.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    /// Nobody with this address on this network (404).
    #[error("Instance was not found on network {0}.")]
    UnknownGuest(Arc<str>),
    /// The listener did not attach the peer (500; a bug).
    #[error("No peer address.")]
    NoPeer,
    /// A body over the limit, or one that broke off (400).
    #[error("Request is too large.")]
    BodyTooLarge,
    /// A body that did not arrive in time (400).
    #[error("The request body was not received in time.")]
    BodyTooSlow,
    /// haproxy's network header is missing (400).
    #[error("X-OVN-Network-ID header is missing from request.")]
    NoNetworkHeader,
    /// haproxy's X-Forwarded-For is missing or not an address (400).
    #[error("X-Forwarded-For header is missing or not an address.")]
    NoForwardedFor,
    /// The metadata API cannot be reached (503).
    #[error("The remote metadata server is temporarily unavailable. Please try again later.")]
    Unreachable,
    /// Its answer could not be read (502).
    #[error("The remote metadata server's answer could not be read.")]
    Unreadable,
    /// It answered a status Neutron's agent does not relay (502).
    #[error("The remote metadata server gave an unexpected answer.")]
    UnexpectedStatus,
    /// A guest's PUT (a session token request) relayed by a proxy inside
    /// the guest, as AWS refuses it (403).
    #[error("A session token request must not carry X-Forwarded-For.")]
    ForwardedPut,
}

impl GuestError {
    pub fn status(&self) -> StatusCode {
        match self {
            GuestError::UnknownGuest(_) => StatusCode::NOT_FOUND,
            GuestError::ForwardedPut => StatusCode::FORBIDDEN,
            GuestError::NoPeer => StatusCode::INTERNAL_SERVER_ERROR,
            GuestError::BodyTooLarge
            | GuestError::BodyTooSlow
            | GuestError::NoNetworkHeader
            | GuestError::NoForwardedFor => StatusCode::BAD_REQUEST,
            GuestError::Unreachable => StatusCode::SERVICE_UNAVAILABLE,
            GuestError::Unreadable | GuestError::UnexpectedStatus => StatusCode::BAD_GATEWAY,
        }
    }
}

impl IntoResponse for GuestError {
    fn into_response(self) -> Response {
        let mut response = error_page(self.status(), &self.to_string());
        if matches!(self, GuestError::Unreachable) {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(UNAVAILABLE_RETRY_AFTER_SECONDS),
            );
        }
        response
    }
}
