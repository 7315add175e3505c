//! Session tokens at the HTTP seam: `PUT /latest/api/token` answered,
//! and each request's token checked against its instance's mode. Sealing
//! and opening are in [`crate::token`].

use crate::answer::plain;
use crate::cache::LoadedInstance;
use crate::error::ApiError;
use crate::metadata::MetadataService;
use crate::token;
use http::HeaderValue;
use meta169_http::headers::{visible_text, FORWARDED_FOR};
use meta169_http::request_head::RequestHead;
use meta169_http::Answer;
use meta169_tree::ContentType;

/// `PUT /latest/api/token`: a session token for the caller's instance.
/// `direct`: the caller is the guest itself (identified by its address),
/// not a trusted proxy.
pub(crate) fn answer(
    service: &MetadataService,
    loaded: &LoadedInstance,
    request: &RequestHead<'_>,
    direct: bool,
) -> Result<Answer, ApiError> {
    if *request.method != http::Method::PUT {
        return Err(ApiError::MethodNotAllowed(
            "A session token is requested with PUT.".into(),
        ));
    }
    // A token request relayed by a proxy inside the guest (what a forged
    // request from a guest's web application looks like) is refused, as
    // AWS does. From a trusted proxy, X-Forwarded-For is that proxy's.
    if direct && request.headers.contains(&FORWARDED_FOR) {
        return Err(ApiError::NotAccepted(
            "A session token request must not carry X-Forwarded-For.".into(),
        ));
    }
    let ttl = token::parse_ttl(request.headers.first(&token::TTL_HEADER))
        .map_err(|e| ApiError::BadRequest(format!("{e}.")))?;
    let mut answer = plain(
        ContentType::Text,
        service.settings.tokens.keys.issue(&loaded.uuid, ttl),
    );
    answer
        .headers_mut()
        .insert(token::TTL_HEADER, HeaderValue::from(ttl.as_secs()));
    service.metrics.tokens_issued.inc();
    Ok(answer)
}

/// A request's session token: checked when sent, required where the
/// instance's record or the server says so. `Ok(true)` for a request
/// without one, which the caller counts once the request is answered (a
/// request tried from the caches first is checked twice).
pub(crate) fn check(
    service: &MetadataService,
    loaded: &LoadedInstance,
    token: Option<&[u8]>,
) -> Result<bool, ApiError> {
    match token {
        Some(value) => {
            let text = visible_text(value).unwrap_or_default();
            service
                .settings
                .tokens
                .keys
                .check(text, &loaded.uuid)
                .map(|()| false)
                .map_err(|e| {
                    ApiError::Unauthorized(format!(
                        "{e}: request a new one with PUT /latest/api/token."
                    ))
                })
        }
        None => {
            let mode = loaded.tokens.unwrap_or(service.settings.tokens.mode);
            if mode == token::TokenMode::Required {
                return Err(ApiError::Unauthorized(
                    "This instance requires a session token: PUT /latest/api/token with X-aws-ec2-metadata-token-ttl-seconds, then send it as X-aws-ec2-metadata-token.".into(),
                ));
            }
            Ok(true)
        }
    }
}
