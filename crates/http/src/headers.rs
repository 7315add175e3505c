//! The header names meta169 reads and writes, in one place: Neutron's
//! proxy headers, haproxy's network header, and the `Server` value that
//! tells meta169's agent it talks to meta169 serve; and what counts as a
//! header value's text.

use http::{HeaderName, HeaderValue};

/// `X-Instance-ID`: the instance a trusted proxy vouches for.
pub const INSTANCE_ID: HeaderName = HeaderName::from_static("x-instance-id");
/// `X-Tenant-ID`: the instance's project, as the proxy knows it.
pub const TENANT_ID: HeaderName = HeaderName::from_static("x-tenant-id");
/// `X-Instance-ID-Signature`: HMAC-SHA256 of the instance id (see [`crate::signing`]).
pub const SIGNATURE: HeaderName = HeaderName::from_static("x-instance-id-signature");
/// `X-Forwarded-For`: the guest's address; the last element is the nearest proxy's.
pub const FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-OVN-Network-ID`: the network haproxy (or the agent) serves, OVN's agent.
pub const OVN_NETWORK_ID: HeaderName = HeaderName::from_static("x-ovn-network-id");
/// `X-Neutron-Network-ID`: the same from the DHCP agent's haproxy.
pub const NEUTRON_NETWORK_ID: HeaderName = HeaderName::from_static("x-neutron-network-id");
/// `X-aws-ec2-metadata-token`: a session token (IMDSv2).
pub const METADATA_TOKEN: HeaderName = HeaderName::from_static("x-aws-ec2-metadata-token");
/// `X-aws-ec2-metadata-token-ttl-seconds`: a session token's lifetime,
/// asked for and answered.
pub const METADATA_TOKEN_TTL: HeaderName =
    HeaderName::from_static("x-aws-ec2-metadata-token-ttl-seconds");

/// The `Server` value of every answer of `meta169 serve`'s metadata side:
/// meta169's agent pipelines requests only to an upstream that sends it.
pub const SERVER: HeaderValue = HeaderValue::from_static("meta169");

/// Does a `Server` value name meta169 serve?
pub fn is_meta169(server: &HeaderValue) -> bool {
    server.as_bytes().starts_with(SERVER.as_bytes())
}

/// A header value as text, by [`HeaderValue::to_str`]'s rule: visible
/// ASCII and tabs only.
pub fn visible_text(value: &[u8]) -> Option<&str> {
    match value
        .iter()
        .all(|b| *b == b'\t' || (0x20..0x7f).contains(b))
    {
        // Visible ASCII is UTF-8.
        true => std::str::from_utf8(value).ok(),
        false => None,
    }
}

/// How a header is spelled in messages to people (Nova's spelling).
pub fn display_name(name: &HeaderName) -> &str {
    const SPELLED: [(HeaderName, &str); 6] = [
        (INSTANCE_ID, "X-Instance-ID"),
        (TENANT_ID, "X-Tenant-ID"),
        (SIGNATURE, "X-Instance-ID-Signature"),
        (FORWARDED_FOR, "X-Forwarded-For"),
        (OVN_NETWORK_ID, "X-OVN-Network-ID"),
        (NEUTRON_NETWORK_ID, "X-Neutron-Network-ID"),
    ];
    SPELLED
        .iter()
        .find(|(known, _)| known == name)
        .map_or(name.as_str(), |(_, spelled)| spelled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_spelled_as_nova_spells_them() {
        assert_eq!(display_name(&INSTANCE_ID), "X-Instance-ID");
        assert_eq!(display_name(&OVN_NETWORK_ID), "X-OVN-Network-ID");
        assert_eq!(display_name(&http::header::HOST), "host");
        assert!(is_meta169(&HeaderValue::from_static("meta169/0.1")));
        assert!(!is_meta169(&HeaderValue::from_static("nginx")));
    }

    #[test]
    fn text_is_what_header_values_call_text() {
        for value in [&b"abc def"[..], b"a\tb", b"caf\xc3\xa9", b"\x7f", b""] {
            let reference = HeaderValue::from_bytes(value)
                .ok()
                .and_then(|v| v.to_str().ok().map(str::to_owned));
            assert_eq!(visible_text(value).map(str::to_owned), reference);
        }
    }
}
