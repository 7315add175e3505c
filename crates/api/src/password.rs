//! Nova's password endpoint: GET reads the password the guest posted,
//! POST sets it once (durably, before the 200), anything else is 400.

use crate::answer::plain;
use crate::cache::LoadedInstance;
use crate::error::ApiError;
use crate::metadata::MetadataService;
use bytes::Bytes;
use http::{header, Method, StatusCode};
use hyper::body::Incoming;
use meta169_http::body::BodyError;
use meta169_http::Answer;
use meta169_store::{StoreError, MAX_PASSWORD_LEN};
use meta169_tree::ContentType;

/// Nova's password endpoint: GET reads, POST sets once, anything else is 400.
pub async fn answer(
    service: &MetadataService,
    loaded: &LoadedInstance,
    request: &http::request::Parts,
    body: Option<Incoming>,
) -> Result<Answer, ApiError> {
    match request.method {
        Method::GET => Ok(plain(ContentType::Text, loaded.password.clone())),
        Method::POST => {
            let too_large = || ApiError::BadRequest("Request is too large.".into());
            let declared = request
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|n| n > MAX_PASSWORD_LEN as u64) {
                return Err(too_large());
            }
            if !loaded.password.is_empty() {
                return Err(ApiError::PasswordConflict);
            }
            // Only hyper's requests carry a body (the quick path takes GETs).
            let body = match body {
                Some(body) => axum::body::Body::new(body),
                None => axum::body::Body::empty(),
            };
            let body = meta169_http::body::read_bounded(
                body,
                MAX_PASSWORD_LEN,
                service.limits.body_read_timeout,
            )
            .await
            .map_err(|e| match e {
                BodyError::TooSlow(_) => {
                    ApiError::BadRequest("The request body was not received in time.".into())
                }
                BodyError::TooLarge(_) => too_large(),
                // A malformed chunked body, or the client gone mid-body.
                BodyError::Broken(why) => {
                    ApiError::BadRequest(format!("The request body could not be read: {why}."))
                }
            })?;
            let text = String::from_utf8(body.to_vec())
                .map_err(|_| ApiError::BadRequest("The password must be UTF-8 text.".into()))?;
            let uuid = loaded.uuid.to_string();
            match service.store.set_password_once(&uuid, &text).await {
                Ok(()) => {
                    service.caches.forget_instance(&uuid);
                    tracing::info!(instance = %uuid, "password stored");
                    let mut response = plain(ContentType::Text, Bytes::new());
                    *response.status_mut() = StatusCode::OK;
                    Ok(response)
                }
                Err(StoreError::PasswordAlreadySet(_)) => {
                    service.caches.forget_instance(&uuid);
                    Err(ApiError::PasswordConflict)
                }
                Err(StoreError::PasswordTooLong(_)) => Err(too_large()),
                Err(StoreError::NotFound(_)) => Err(ApiError::BadRequest(
                    "The instance no longer exists.".into(),
                )),
                Err(e) => {
                    service.metrics.store_errors.inc();
                    tracing::error!(instance = %uuid, "storing password failed: {e}");
                    Err(ApiError::Internal)
                }
            }
        }
        _ => Err(ApiError::BadRequest(
            "GET and POST only are supported.".into(),
        )),
    }
}
