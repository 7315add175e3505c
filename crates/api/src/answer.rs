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

/// [`ANSWER_HEADERS`] as hyper writes them (`name: value\r\n`), for the
/// listener's quick path: rendered from the same maps, so both ways
/// write the same bytes.
static HEADER_LINES: std::sync::LazyLock<[Vec<u8>; 2]> = std::sync::LazyLock::new(|| {
    ANSWER_HEADERS.each_ref().map(|headers| {
        let mut lines = Vec::new();
        for (name, value) in headers {
            lines.extend_from_slice(name.as_str().as_bytes());
            lines.extend_from_slice(b": ");
            lines.extend_from_slice(value.as_bytes());
            lines.extend_from_slice(b"\r\n");
        }
        lines
    })
});

/// The header lines of a 200 answer of `content_type`.
pub(crate) fn header_lines(content_type: ContentType) -> &'static [u8] {
    match content_type {
        ContentType::Text => &HEADER_LINES[0],
        ContentType::Json => &HEADER_LINES[1],
    }
}

/// The `Content-Type` value of each content type, built at compile time:
/// `HeaderValue::from_static` called at run time checks every byte.
const TEXT: HeaderValue = HeaderValue::from_static(ContentType::Text.as_str());
const JSON: HeaderValue = HeaderValue::from_static(ContentType::Json.as_str());

fn content_type_value(content_type: ContentType) -> HeaderValue {
    match content_type {
        ContentType::Text => TEXT,
        ContentType::Json => JSON,
    }
}

fn answer_headers(content_type: ContentType) -> http::HeaderMap {
    let mut headers = http::HeaderMap::with_capacity(2);
    headers.insert(header::CONTENT_TYPE, content_type_value(content_type));
    // Tells meta169's agent it may pipeline requests (Nova's API does
    // not get them).
    headers.insert(header::SERVER, meta169_http::headers::SERVER);
    headers
}

/// Largest request header map kept for an answer (in entries): a
/// request with more headers than any client sends is not worth keeping.
const MAX_RECYCLED_HEADERS: usize = 64;

thread_local! {
    /// A finished request's header map, emptied, for the next answer.
    static SPARE_HEADERS: std::cell::Cell<Option<http::HeaderMap>> =
        const { std::cell::Cell::new(None) };
}

/// Keep a finished request's header map for the next answer on this
/// thread. hyper hands each answer's map, emptied, to the next request
/// on its connection, so a map sized by a request serves both without
/// an allocation; a map sized for the answer's two headers had to grow
/// for every request.
pub(crate) fn recycle(mut headers: http::HeaderMap) {
    if headers.capacity() <= MAX_RECYCLED_HEADERS {
        headers.clear();
        SPARE_HEADERS.with(|spare| spare.set(Some(headers)));
    }
}

pub(crate) fn plain(content_type: ContentType, body: impl Into<Bytes>) -> Answer {
    let mut response = Answer::new(Either::Left(Full::new(body.into())));
    let headers = match SPARE_HEADERS.with(|spare| spare.take()) {
        Some(mut headers) => {
            headers.insert(header::CONTENT_TYPE, content_type_value(content_type));
            headers.insert(header::SERVER, meta169_http::headers::SERVER);
            headers
        }
        None => match content_type {
            ContentType::Text => ANSWER_HEADERS[0].clone(),
            ContentType::Json => ANSWER_HEADERS[1].clone(),
        },
    };
    *response.headers_mut() = headers;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recycled_map_carries_only_the_answers_headers() {
        let fresh = plain(ContentType::Json, "{}");
        let mut request = http::HeaderMap::new();
        for i in 0..10 {
            request.insert(
                http::HeaderName::from_bytes(format!("x-request-{i}").as_bytes()).unwrap(),
                HeaderValue::from_static("v"),
            );
        }
        recycle(request);
        let recycled = plain(ContentType::Json, "{}");
        assert_eq!(recycled.headers(), fresh.headers());
        assert!(
            recycled.headers().capacity() >= 10,
            "the request's map, reused"
        );
        // Taken once: the next answer builds its own.
        assert_eq!(plain(ContentType::Text, "x").headers(), &ANSWER_HEADERS[0]);
        // Oversized maps are not kept.
        let mut huge = http::HeaderMap::with_capacity(MAX_RECYCLED_HEADERS * 4);
        huge.insert(header::HOST, HeaderValue::from_static("h"));
        recycle(huge);
        assert!(plain(ContentType::Text, "x").headers().capacity() < MAX_RECYCLED_HEADERS);
    }
}
