//! Guest addresses as proxies report them: IPv4-mapped IPv6 folded to
//! IPv4, and the guest taken from `X-Forwarded-For`.

use crate::headers::{visible_text, FORWARDED_FOR};
use http::HeaderMap;
use std::net::IpAddr;

/// Longest piece of a bad header value quoted back in an error message.
const MAX_QUOTED_CHARS: usize = 64;

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.5`) as the IPv4 they carry,
/// as Neutron and Nova compare them.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Why `X-Forwarded-For` gives no address.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ForwardedForError {
    /// The header's bytes are not text.
    #[error("X-Forwarded-For header is not valid text.")]
    NotText,
    /// Its last element is not an IP address.
    #[error("X-Forwarded-For value {0:?} is not an IP address.")]
    NotAnAddress(String),
}

/// The guest address a proxy reports: the last element of the last
/// `X-Forwarded-For` header, which the nearest proxy added (anything before
/// it may have come from the guest); canonical. `None` without the header.
pub fn forwarded_for(headers: &HeaderMap) -> Result<Option<IpAddr>, ForwardedForError> {
    forwarded_address(
        headers
            .get_all(FORWARDED_FOR)
            .iter()
            .next_back()
            .map(|v| v.as_bytes()),
    )
}

/// [`forwarded_for`] from the last `X-Forwarded-For` value itself.
pub fn forwarded_address(last_header: Option<&[u8]>) -> Result<Option<IpAddr>, ForwardedForError> {
    let Some(last_header) = last_header else {
        return Ok(None);
    };
    let text = visible_text(last_header).ok_or(ForwardedForError::NotText)?;
    let last = text.rsplit(',').next().unwrap_or("").trim();
    last.parse::<IpAddr>()
        .map(|ip| Some(canonical_ip(ip)))
        .map_err(|_| ForwardedForError::NotAnAddress(last.chars().take(MAX_QUOTED_CHARS).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn the_nearest_proxys_element_counts() {
        let mut h = HeaderMap::new();
        assert_eq!(forwarded_for(&h), Ok(None));
        h.append(FORWARDED_FOR, HeaderValue::from_static("6.6.6.6, 10.0.0.7"));
        assert_eq!(forwarded_for(&h), Ok(Some("10.0.0.7".parse().unwrap())));
        h.append(FORWARDED_FOR, HeaderValue::from_static("::ffff:10.0.0.8"));
        assert_eq!(forwarded_for(&h), Ok(Some("10.0.0.8".parse().unwrap())));
        h.append(FORWARDED_FOR, HeaderValue::from_static("nonsense"));
        assert_eq!(
            forwarded_for(&h),
            Err(ForwardedForError::NotAnAddress("nonsense".into()))
        );
        assert_eq!(
            canonical_ip("::ffff:127.0.0.1".parse().unwrap()),
            "127.0.0.1".parse::<IpAddr>().unwrap()
        );
    }
}
