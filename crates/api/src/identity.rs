//! Tying a request to an instance. Three ways, one type ([`Identity`]);
//! which ways a listener accepts is configuration ([`IdentitySettings`]),
//! and identity headers count only when the peer is a trusted proxy.

use crate::error::ApiError;
use crate::settings::IdentitySettings;
use crate::signing::signature_matches;
use http::{HeaderMap, HeaderName};
use meta169_http::address::{canonical_ip, forwarded_for as forwarded_address};
use meta169_http::headers::{
    display_name, INSTANCE_ID, NEUTRON_NETWORK_ID, OVN_NETWORK_ID, SIGNATURE, TENANT_ID,
};
use std::net::IpAddr;

/// Longest piece of a caller's instance id quoted in a log line.
const MAX_LOGGED_ID_CHARS: usize = 64;

/// How the caller was identified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// Signed headers from a trusted proxy: the instance and its project.
    Signed {
        instance_id: String,
        project_id: String,
    },
    /// A network id and the guest's address from a trusted proxy.
    ByAddress { network_id: String, address: IpAddr },
    /// The TCP peer itself.
    BySource { address: IpAddr },
}

/// An identified caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub identity: Identity,
    /// The guest's address as best known: Nova's fallback `local-ipv4`.
    pub requester: IpAddr,
}

fn single<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<Option<&'a str>, ApiError> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::DuplicateHeader(display_name(name).to_string()));
    }
    first.to_str().map(|s| Some(s.trim())).map_err(|_| {
        ApiError::BadHeader(format!("{} header is not valid text.", display_name(name)))
    })
}

/// The guest address the nearest proxy reports.
fn forwarded_for(headers: &HeaderMap) -> Result<Option<IpAddr>, ApiError> {
    forwarded_address(headers).map_err(|e| ApiError::BadHeader(e.to_string()))
}

fn truncate(s: &str) -> String {
    s.chars().take(MAX_LOGGED_ID_CHARS).collect()
}

/// Identify a request from its headers and its TCP peer.
pub fn identify(
    headers: &HeaderMap,
    peer: IpAddr,
    settings: &IdentitySettings,
) -> Result<Caller, ApiError> {
    let peer = canonical_ip(peer);
    let by_source = || Caller {
        identity: Identity::BySource { address: peer },
        requester: peer,
    };
    if !settings.is_trusted(peer) {
        if settings.by_source {
            return Ok(by_source());
        }
        tracing::warn!(%peer, "request from a peer that is not a trusted proxy refused");
        return Err(ApiError::NotAccepted(format!(
            "Requests from {peer} are not accepted: it is not a trusted proxy and identification by source address is off."
        )));
    }

    if settings.signed
        && [INSTANCE_ID, SIGNATURE, TENANT_ID]
            .iter()
            .any(|h| headers.contains_key(h))
    {
        // Nova's checks, in Nova's order.
        let instance_id =
            single(headers, &INSTANCE_ID)?.ok_or(ApiError::MissingHeader("X-Instance-ID"))?;
        let signature = single(headers, &SIGNATURE)?
            .ok_or(ApiError::MissingHeader("X-Instance-ID-Signature"))?;
        let project_id =
            single(headers, &TENANT_ID)?.ok_or(ApiError::MissingHeader("X-Tenant-ID"))?;
        if !signature_matches(&settings.shared_secret, instance_id, signature) {
            tracing::warn!(
                proxy = %peer,
                instance_id = %truncate(instance_id),
                "X-Instance-ID-Signature does not match: compare metadata_proxy_shared_secret on that proxy with meta169's shared secret"
            );
            return Err(ApiError::BadSignature);
        }
        let requester = forwarded_for(headers).ok().flatten().unwrap_or(peer);
        return Ok(Caller {
            identity: Identity::Signed {
                instance_id: instance_id.to_string(),
                project_id: project_id.to_string(),
            },
            requester,
        });
    }

    if settings.by_address {
        let ovn = single(headers, &OVN_NETWORK_ID)?;
        let neutron = single(headers, &NEUTRON_NETWORK_ID)?;
        let network = match (ovn, neutron) {
            (Some(a), Some(b)) if a != b => {
                return Err(ApiError::BadHeader(format!(
                    "X-OVN-Network-ID {a:?} and X-Neutron-Network-ID {b:?} disagree."
                )))
            }
            (Some(a), _) | (None, Some(a)) => Some(a),
            (None, None) => None,
        };
        if let Some(network_id) = network.filter(|n| !n.is_empty()) {
            let address =
                forwarded_for(headers)?.ok_or(ApiError::MissingHeader("X-Forwarded-For"))?;
            return Ok(Caller {
                identity: Identity::ByAddress {
                    network_id: network_id.to_string(),
                    address,
                },
                requester: address,
            });
        }
    }

    if settings.by_source {
        return Ok(by_source());
    }
    if settings.signed {
        return Err(ApiError::MissingHeader("X-Instance-ID"));
    }
    Err(ApiError::NotAccepted(
        "The request carries no identity this server accepts (expected X-OVN-Network-ID or X-Neutron-Network-ID with X-Forwarded-For).".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::sign_instance_id;
    use http::HeaderValue;
    use meta169_http::headers::FORWARDED_FOR;

    fn headers(pairs: &[(HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn settings() -> IdentitySettings {
        IdentitySettings {
            shared_secret: b"s3cret".to_vec(),
            ..IdentitySettings::default()
        }
    }

    const LOCAL: &str = "127.0.0.1";

    #[test]
    fn signed_headers_follow_novas_checks() {
        let s = settings();
        let peer = LOCAL.parse().unwrap();
        let sig = sign_instance_id(b"s3cret", "abc");
        let ok = identify(
            &headers(&[
                (INSTANCE_ID, "abc"),
                (SIGNATURE, &sig),
                (TENANT_ID, "p"),
                (FORWARDED_FOR, "10.0.0.5"),
            ]),
            peer,
            &s,
        )
        .unwrap();
        assert_eq!(
            ok.identity,
            Identity::Signed {
                instance_id: "abc".into(),
                project_id: "p".into()
            }
        );
        assert_eq!(ok.requester, "10.0.0.5".parse::<IpAddr>().unwrap());
        let missing = |h: HeaderMap| identify(&h, peer, &s).unwrap_err().to_string();
        assert_eq!(
            missing(headers(&[(SIGNATURE, &sig)])),
            "X-Instance-ID header is missing from request."
        );
        assert_eq!(
            missing(headers(&[(INSTANCE_ID, "abc")])),
            "X-Instance-ID-Signature header is missing from request."
        );
        assert_eq!(
            missing(headers(&[(INSTANCE_ID, "abc"), (SIGNATURE, &sig)])),
            "X-Tenant-ID header is missing from request."
        );
        assert_eq!(
            missing(headers(&[])),
            "X-Instance-ID header is missing from request."
        );
        let bad = identify(
            &headers(&[(INSTANCE_ID, "abc"), (SIGNATURE, "00"), (TENANT_ID, "p")]),
            peer,
            &s,
        );
        assert!(matches!(bad, Err(ApiError::BadSignature)));
        let twice = identify(
            &headers(&[
                (INSTANCE_ID, "abc"),
                (INSTANCE_ID, "def"),
                (SIGNATURE, &sig),
                (TENANT_ID, "p"),
            ]),
            peer,
            &s,
        );
        assert!(matches!(twice, Err(ApiError::DuplicateHeader(_))));
    }

    #[test]
    fn headers_from_untrusted_peers_are_ignored() {
        let mut s = settings();
        s.by_source = true;
        let sig = sign_instance_id(b"s3cret", "abc");
        let guest: IpAddr = "10.0.0.5".parse().unwrap();
        let caller = identify(
            &headers(&[
                (INSTANCE_ID, "abc"),
                (SIGNATURE, &sig),
                (TENANT_ID, "p"),
                (OVN_NETWORK_ID, "n"),
            ]),
            guest,
            &s,
        )
        .unwrap();
        assert_eq!(caller.identity, Identity::BySource { address: guest });
        s.by_source = false;
        assert!(matches!(
            identify(&HeaderMap::new(), guest, &s),
            Err(ApiError::NotAccepted(_))
        ));
    }

    #[test]
    fn network_headers_need_forwarded_for() {
        let s = settings();
        let peer = LOCAL.parse().unwrap();
        let caller = identify(
            &headers(&[
                (OVN_NETWORK_ID, "net1"),
                (FORWARDED_FOR, "6.6.6.6, 10.0.0.7"),
            ]),
            peer,
            &s,
        )
        .unwrap();
        assert_eq!(
            caller.identity,
            Identity::ByAddress {
                network_id: "net1".into(),
                address: "10.0.0.7".parse().unwrap()
            }
        );
        let caller = identify(
            &headers(&[
                (NEUTRON_NETWORK_ID, "net1"),
                (FORWARDED_FOR, "::ffff:10.0.0.8"),
            ]),
            peer,
            &s,
        )
        .unwrap();
        assert_eq!(
            caller.identity,
            Identity::ByAddress {
                network_id: "net1".into(),
                address: "10.0.0.8".parse().unwrap()
            }
        );
        assert!(matches!(
            identify(&headers(&[(OVN_NETWORK_ID, "net1")]), peer, &s),
            Err(ApiError::MissingHeader("X-Forwarded-For"))
        ));
        assert!(matches!(
            identify(
                &headers(&[(OVN_NETWORK_ID, "net1"), (FORWARDED_FOR, "nonsense")]),
                peer,
                &s
            ),
            Err(ApiError::BadHeader(_))
        ));
    }
}
