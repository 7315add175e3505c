//! Tying a request to an instance. Three ways, one type ([`Identity`]);
//! which ways a listener accepts is configuration ([`IdentitySettings`]),
//! and identity headers count only when the peer is a trusted proxy.

use crate::error::ApiError;
use crate::settings::IdentitySettings;
use crate::signing::SignatureMemo;
use crate::token::TOKEN_HEADER;
use http::HeaderName;
use meta169_http::address::{canonical_ip, forwarded_address};
use meta169_http::headers::{
    display_name, INSTANCE_ID, NEUTRON_NETWORK_ID, OVN_NETWORK_ID, SIGNATURE, TENANT_ID,
};
use meta169_http::log_throttle::refusals;
use meta169_http::request_head::{is_named, HeaderView};
use std::net::IpAddr;

/// Longest piece of a caller's instance id quoted in a log line.
const MAX_LOGGED_ID_CHARS: usize = 64;

/// How the caller was identified (borrowing from the request's headers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity<'a> {
    /// Signed headers from a trusted proxy: the instance and its project.
    Signed {
        instance_id: &'a str,
        project_id: &'a str,
    },
    /// A network id and the guest's address from a trusted proxy.
    ByAddress {
        network_id: &'a str,
        address: IpAddr,
    },
    /// The TCP peer itself.
    BySource { address: IpAddr },
}

/// An identified caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller<'a> {
    pub identity: Identity<'a>,
    /// The TCP peer (canonical).
    pub peer: IpAddr,
    /// The request's session token header (the first, if repeated),
    /// found in the same pass as the identity headers.
    pub session_token: Option<&'a [u8]>,
}

impl Caller<'_> {
    /// The guest's address as best known, Nova's fallback `local-ipv4`:
    /// for signed requests the proxy's `X-Forwarded-For` (read only when a
    /// path needs it), else the address the caller was identified by.
    pub fn requester(&self, headers: HeaderView<'_>) -> IpAddr {
        match self.identity {
            Identity::Signed { .. } => signed_requester(headers, self.peer),
            Identity::ByAddress { address, .. } | Identity::BySource { address } => address,
        }
    }
}

/// The requester of a signed request: `X-Forwarded-For`, else the peer.
pub fn signed_requester(headers: HeaderView<'_>, peer: IpAddr) -> IpAddr {
    forwarded_for(headers).ok().flatten().unwrap_or(peer)
}

/// A header as found in one pass: absent, once, or more than once.
#[derive(Clone, Copy)]
enum Found<'a> {
    Absent,
    Once(&'a [u8]),
    Repeated,
}

impl<'a> Found<'a> {
    fn add(&mut self, value: &'a [u8]) {
        *self = match self {
            Found::Absent => Found::Once(value),
            _ => Found::Repeated,
        };
    }

    /// The value's bytes, trimmed, for a value that is only compared:
    /// checking it is text first would cost more than the comparison.
    fn bytes(self, name: &HeaderName) -> Result<Option<&'a [u8]>, ApiError> {
        match self {
            Found::Absent => Ok(None),
            Found::Repeated => Err(ApiError::DuplicateHeader(display_name(name).to_string())),
            Found::Once(value) => Ok(Some(value.trim_ascii())),
        }
    }

    /// The value as text, or why it cannot be used.
    fn text(self, name: &HeaderName) -> Result<Option<&'a str>, ApiError> {
        match self {
            Found::Absent => Ok(None),
            Found::Repeated => Err(ApiError::DuplicateHeader(display_name(name).to_string())),
            // `trim_ascii`: the text is ASCII, and `trim` looks for
            // Unicode spaces (these values are read on every signed request).
            Found::Once(value) => match header_text(value) {
                Some(text) => Ok(Some(text.trim_ascii())),
                None => Err(ApiError::BadHeader(format!(
                    "{} header is not valid text.",
                    display_name(name)
                ))),
            },
        }
    }
}

/// A header value as text: what `HeaderValue::to_str` accepts. A value
/// holds no control character but tab, so its text is exactly its ASCII,
/// which is checked a word at a time; `to_str` checks byte by byte, and
/// `str::from_utf8` as well for values this short: ~220 instructions of
/// each signed request (callgrind).
fn header_text(bytes: &[u8]) -> Option<&str> {
    // SAFETY: ASCII is valid UTF-8.
    bytes
        .is_ascii()
        .then(|| unsafe { std::str::from_utf8_unchecked(bytes) })
}

/// The identity headers (signed mode's three, then the two network ids)
/// and the session token, found in one pass over the request's headers:
/// six lookups by name cost more on every request.
fn identity_headers(headers: HeaderView<'_>) -> ([Found<'_>; 5], Option<&[u8]>) {
    let mut found = [Found::Absent; 5];
    let mut token = None;
    headers.for_each(|name, value| {
        let slot = if is_named(name, &INSTANCE_ID) {
            0
        } else if is_named(name, &SIGNATURE) {
            1
        } else if is_named(name, &TENANT_ID) {
            2
        } else if is_named(name, &OVN_NETWORK_ID) {
            3
        } else if is_named(name, &NEUTRON_NETWORK_ID) {
            4
        } else {
            if token.is_none() && is_named(name, &TOKEN_HEADER) {
                token = Some(value);
            }
            return;
        };
        found[slot].add(value);
    });
    (found, token)
}

/// The guest address the nearest proxy reports.
fn forwarded_for(headers: HeaderView<'_>) -> Result<Option<IpAddr>, ApiError> {
    forwarded_address(headers.last(&meta169_http::headers::FORWARDED_FOR))
        .map_err(|e| ApiError::BadHeader(e.to_string()))
}

fn truncate(s: &str) -> String {
    s.chars().take(MAX_LOGGED_ID_CHARS).collect()
}

/// The network a haproxy-style proxy names (`X-OVN-Network-ID` or
/// `X-Neutron-Network-ID`; both must agree); empty counts as absent.
fn network_header<'a>(ovn: Found<'a>, neutron: Found<'a>) -> Result<Option<&'a str>, ApiError> {
    let ovn = ovn.text(&OVN_NETWORK_ID)?;
    let neutron = neutron.text(&NEUTRON_NETWORK_ID)?;
    let network = match (ovn, neutron) {
        (Some(a), Some(b)) if a != b => {
            return Err(ApiError::BadHeader(format!(
                "X-OVN-Network-ID {a:?} and X-Neutron-Network-ID {b:?} disagree."
            )))
        }
        (Some(a), _) | (None, Some(a)) => Some(a),
        (None, None) => None,
    };
    Ok(network.filter(|n| !n.is_empty()))
}

/// Identify a request from its headers and its TCP peer; signatures are
/// checked with `signatures` (made with the settings' shared secret).
pub fn identify<'a>(
    headers: HeaderView<'a>,
    peer: IpAddr,
    settings: &IdentitySettings,
    signatures: &SignatureMemo,
) -> Result<Caller<'a>, ApiError> {
    identify_with(headers, peer, settings, |instance_id, signature| {
        signatures.matches(instance_id, signature)
    })
}

/// [`identify`], a signature checked by `signed`: whether the signature
/// (second) is the instance id's (first) under the shared secret.
pub fn identify_with<'a>(
    headers: HeaderView<'a>,
    peer: IpAddr,
    settings: &IdentitySettings,
    signed: impl FnOnce(&str, &[u8]) -> bool,
) -> Result<Caller<'a>, ApiError> {
    let peer = canonical_ip(peer);
    let by_source = |session_token| Caller {
        identity: Identity::BySource { address: peer },
        peer,
        session_token,
    };
    if !settings.is_trusted(peer) {
        if settings.by_peer() {
            return Ok(by_source(headers.first(&TOKEN_HEADER)));
        }
        if let Some(left_out) = refusals().allow(peer) {
            tracing::warn!(%peer, left_out, "request from a peer that is not a trusted proxy refused");
        }
        return Err(ApiError::NotAccepted(format!(
            "Requests from {peer} are not accepted: it is not a trusted proxy and identification by source address is off."
        )));
    }

    // A request naming a network came through a proxy that passes the
    // guest's other headers on (haproxy): metadata agents send no network
    // id. Signed headers in it are the guest's, so they are not believed.
    let (found, session_token) = match settings.signed || settings.by_address {
        true => identity_headers(headers),
        false => ([Found::Absent; 5], headers.first(&TOKEN_HEADER)),
    };
    let [instance_id, signature, project_id, ovn, neutron] = found;
    let network = match settings.by_address {
        true => network_header(ovn, neutron)?,
        false => None,
    };
    if let Some(network_id) = network {
        let address = forwarded_for(headers)?.ok_or(ApiError::MissingHeader("X-Forwarded-For"))?;
        return Ok(Caller {
            identity: Identity::ByAddress {
                network_id,
                address,
            },
            peer,
            session_token,
        });
    }

    // Signed mode answers when any of its three headers is there.
    if settings.signed
        && [instance_id, signature, project_id]
            .iter()
            .any(|f| !matches!(f, Found::Absent))
    {
        // Nova's checks, in Nova's order.
        let instance_id = instance_id
            .text(&INSTANCE_ID)?
            .ok_or(ApiError::MissingHeader("X-Instance-ID"))?;
        let signature = signature
            .bytes(&SIGNATURE)?
            .ok_or(ApiError::MissingHeader("X-Instance-ID-Signature"))?;
        let project_id = project_id
            .text(&TENANT_ID)?
            .ok_or(ApiError::MissingHeader("X-Tenant-ID"))?;
        if !signed(instance_id, signature) {
            if let Some(left_out) = refusals().allow(peer) {
                tracing::warn!(
                    proxy = %peer,
                    instance_id = %truncate(instance_id),
                    left_out,
                    "X-Instance-ID-Signature does not match: compare metadata_proxy_shared_secret on that proxy with meta169's shared secret"
                );
            }
            return Err(ApiError::BadSignature);
        }
        return Ok(Caller {
            identity: Identity::Signed {
                instance_id,
                project_id,
            },
            peer,
            session_token,
        });
    }

    if settings.by_peer() {
        return Ok(by_source(session_token));
    }
    if settings.signed {
        return Err(ApiError::MissingHeader("X-Instance-ID"));
    }
    Err(ApiError::NotAccepted(
        "The request carries no identity this server accepts (expected X-OVN-Network-ID or X-Neutron-Network-ID with X-Forwarded-For).".into(),
    ))
}

#[cfg(test)]
mod tests;
