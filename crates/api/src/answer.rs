//! How the metadata side's answers are built: a body and the headers
//! every answer of its content type carries.

use bytes::Bytes;
use http::{header, HeaderValue};
use http_body_util::{Either, Full};
use meta169_http::Answer;
use meta169_tree::ContentType;

/// The headers of every answer of one content type, built once: cloning
/// them costs half of building a header map per request.
static ANSWER_HEADERS: std::sync::LazyLock<[http::HeaderMap; 2]> =
    std::sync::LazyLock::new(|| [ContentType::Text, ContentType::Json].map(answer_headers));

fn answer_headers(content_type: ContentType) -> http::HeaderMap {
    let mut headers = http::HeaderMap::with_capacity(2);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type.as_str()),
    );
    // Tells meta169's agent it may pipeline requests (Nova's API does
    // not get them).
    headers.insert(header::SERVER, meta169_http::headers::SERVER);
    headers
}

pub(crate) fn plain(content_type: ContentType, body: impl Into<Bytes>) -> Answer {
    let mut response = Answer::new(Either::Left(Full::new(body.into())));
    let template = match content_type {
        ContentType::Text => &ANSWER_HEADERS[0],
        ContentType::Json => &ANSWER_HEADERS[1],
    };
    *response.headers_mut() = template.clone();
    response
}
