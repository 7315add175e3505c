//! Every answer the metadata side gives that is not a 200. Statuses stay in
//! the set Neutron's agent relays (400, 403, 404, 409, 500, 502, 503, 504),
//! except the session tokens' 401 and 405, which only a guest using tokens
//! sees; and every body is non-empty: an empty error body makes Neutron's
//! agent lose the blank line after the headers and the guest gets a 502.

use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Nova's messages for missing proxy headers (400).
    #[error("{0} header is missing from request.")]
    MissingHeader(&'static str),
    /// More than one value of an identity header (400).
    #[error("More than one {0} header in request.")]
    DuplicateHeader(String),
    /// Header value that is not text or not an address (400).
    #[error("{0}")]
    BadHeader(String),
    /// Signature mismatch (403), Nova's message.
    #[error("Invalid proxy request signature.")]
    BadSignature,
    /// Identity headers or peer not accepted by configuration (403).
    #[error("{0}")]
    NotAccepted(String),
    /// Nothing at that path, or no such instance (404).
    #[error("{0}")]
    NotFound(String),
    /// Bad request path or body (400).
    #[error("{0}")]
    BadRequest(String),
    /// Password already set (409).
    #[error("A password has already been set for this instance.")]
    PasswordConflict,
    /// Something failed on our side (500), Nova's message.
    #[error("An unknown error has occurred. Please try your request again.")]
    Internal,
    /// An address maps to more than one instance (500).
    #[error("{0}")]
    Ambiguous(String),
    /// A session token missing where required, invalid or expired (401).
    #[error("{0}")]
    Unauthorized(String),
    /// A method the path does not take (405).
    #[error("{0}")]
    MethodNotAllowed(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::MissingHeader(_)
            | ApiError::DuplicateHeader(_)
            | ApiError::BadHeader(_)
            | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::BadSignature | ApiError::NotAccepted(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::PasswordConflict => StatusCode::CONFLICT,
            ApiError::Internal | ApiError::Ambiguous(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    pub fn not_found() -> Self {
        ApiError::NotFound("The resource could not be found.".into())
    }
}

/// A plain-text error answer.
pub fn text_error(status: StatusCode, message: &str) -> Response {
    let body = format!(
        "{} {}\n\n{}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        message
    );
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=UTF-8"),
    );
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        text_error(self.status(), &self.to_string())
    }
}
