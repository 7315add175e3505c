//! A request's head as a handler reads it, whichever way it was read:
//! hyper's request ([`http::request::Parts`]) or the quick path's httparse
//! headers ([`crate::quick`]). The metadata side reads a handful of
//! headers by name and needs no header map, which costs hyper more to
//! build than the rest of a cached request.

use http::{HeaderMap, HeaderName, Method};

/// A header as httparse read it: name as sent, value's bytes.
pub use httparse::Header as RawHeader;

/// A request's headers, in the order they came: hyper's map, or the
/// headers httparse found in the request head.
#[derive(Clone, Copy, Debug)]
pub enum HeaderView<'a> {
    /// hyper's header map (names lower-case).
    Map(&'a HeaderMap),
    /// httparse's headers (names as the client spelled them).
    Raw(&'a [RawHeader<'a>]),
}

/// Does a header name as sent match `name`? Header names are
/// case-insensitive; [`HeaderName`]s are lower-case, so only the sent
/// name is folded (`eq_ignore_ascii_case` folds both, and showed in the
/// profile: every header of a request is compared with six names).
pub fn is_named(sent: &[u8], name: &HeaderName) -> bool {
    let name = name.as_str().as_bytes();
    sent.len() == name.len()
        && sent
            .iter()
            .zip(name)
            .all(|(s, n)| s.to_ascii_lowercase() == *n)
}

impl<'a> HeaderView<'a> {
    /// Call `each` with every header's name and value, in order.
    pub fn for_each(self, mut each: impl FnMut(&'a [u8], &'a [u8])) {
        match self {
            HeaderView::Map(map) => {
                for (name, value) in map {
                    each(name.as_str().as_bytes(), value.as_bytes());
                }
            }
            HeaderView::Raw(raw) => {
                for header in raw {
                    each(header.name.as_bytes(), header.value);
                }
            }
        }
    }

    /// The first value of `name`.
    pub fn first(self, name: &HeaderName) -> Option<&'a [u8]> {
        match self {
            HeaderView::Map(map) => map.get(name).map(|v| v.as_bytes()),
            HeaderView::Raw(raw) => raw
                .iter()
                .find(|h| is_named(h.name.as_bytes(), name))
                .map(|h| h.value),
        }
    }

    /// The last value of `name` (what a proxy appended last).
    pub fn last(self, name: &HeaderName) -> Option<&'a [u8]> {
        match self {
            HeaderView::Map(map) => map.get_all(name).iter().next_back().map(|v| v.as_bytes()),
            HeaderView::Raw(raw) => raw
                .iter()
                .rev()
                .find(|h| is_named(h.name.as_bytes(), name))
                .map(|h| h.value),
        }
    }

    /// Is `name` there?
    pub fn contains(self, name: &HeaderName) -> bool {
        self.first(name).is_some()
    }
}

/// What a handler reads of a request: method, path (without the query)
/// and headers.
#[derive(Clone, Copy, Debug)]
pub struct RequestHead<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub headers: HeaderView<'a>,
}

impl<'a> RequestHead<'a> {
    /// The head of a request hyper parsed.
    pub fn of(parts: &'a http::request::Parts) -> Self {
        RequestHead {
            method: &parts.method,
            path: parts.uri.path(),
            headers: HeaderView::Map(&parts.headers),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn both_views_find_the_same_values() {
        let mut map = HeaderMap::new();
        map.append("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        map.append("host", HeaderValue::from_static("h"));
        map.append("x-forwarded-for", HeaderValue::from_static("10.0.0.2"));
        let raw = [
            httparse::Header {
                name: "X-Forwarded-For",
                value: b"10.0.0.1",
            },
            httparse::Header {
                name: "Host",
                value: b"h",
            },
            httparse::Header {
                name: "x-FORWARDED-for",
                value: b"10.0.0.2",
            },
        ];
        let name = HeaderName::from_static("x-forwarded-for");
        for view in [HeaderView::Map(&map), HeaderView::Raw(&raw)] {
            assert_eq!(view.first(&name), Some(&b"10.0.0.1"[..]));
            assert_eq!(view.last(&name), Some(&b"10.0.0.2"[..]));
            assert!(view.contains(&http::header::HOST));
            assert!(!view.contains(&http::header::COOKIE));
            let mut seen = 0;
            view.for_each(|_, _| seen += 1);
            assert_eq!(seen, 3);
        }
    }
}
