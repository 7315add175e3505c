use super::*;
use crate::signing::sign_instance_id;
use http::{HeaderMap, HeaderValue};
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

fn identify<'a>(
    headers: &'a HeaderMap,
    peer: IpAddr,
    settings: &IdentitySettings,
) -> Result<Caller<'a>, ApiError> {
    super::identify(
        HeaderView::Map(headers),
        peer,
        settings,
        &SignatureMemo::new(&settings.shared_secret),
    )
}

const LOCAL: &str = "127.0.0.1";

#[test]
fn a_signature_that_is_not_text_does_not_match() {
    let mut h = headers(&[(INSTANCE_ID, "abc"), (TENANT_ID, "p")]);
    let mut bad = sign_instance_id(b"s3cret", "abc").into_bytes();
    bad[0] = 0xff;
    h.append(SIGNATURE, HeaderValue::from_bytes(&bad).unwrap());
    let refused = identify(&h, LOCAL.parse().unwrap(), &settings()).unwrap_err();
    assert!(matches!(refused, ApiError::BadSignature), "{refused:?}");
    // Surrounding blanks are not part of it, as for the other headers.
    let sig = format!(" {}\t", sign_instance_id(b"s3cret", "abc"));
    let h = headers(&[(INSTANCE_ID, "abc"), (TENANT_ID, "p"), (SIGNATURE, &sig)]);
    assert!(identify(&h, LOCAL.parse().unwrap(), &settings()).is_ok());
}

#[test]
fn the_session_token_is_found_in_every_mode() {
    let sig = sign_instance_id(b"s3cret", "abc");
    let h = headers(&[
        (TOKEN_HEADER, "first"),
        (INSTANCE_ID, "abc"),
        (SIGNATURE, &sig),
        (TENANT_ID, "p"),
        (TOKEN_HEADER, "second"),
    ]);
    let token = |caller: Caller<'_>| {
        caller
            .session_token
            .map(|v| std::str::from_utf8(v).unwrap().to_string())
    };
    let signed = identify(&h, LOCAL.parse().unwrap(), &settings()).unwrap();
    assert_eq!(token(signed).as_deref(), Some("first"));
    let by_source = IdentitySettings {
        signed: false,
        by_address: false,
        by_source: true,
        ..settings()
    };
    let guest = identify(&h, "10.0.0.5".parse().unwrap(), &by_source).unwrap();
    assert_eq!(token(guest).as_deref(), Some("first"));
    let empty = headers(&[]);
    let none = identify(&empty, "10.0.0.5".parse().unwrap(), &by_source).unwrap();
    assert_eq!(none.session_token, None);
}

#[test]
fn header_text_is_visible_ascii_trimmed() {
    let text = |bytes: &[u8]| {
        let value = HeaderValue::from_bytes(bytes).unwrap();
        Found::Once(value.as_bytes())
            .text(&INSTANCE_ID)
            .map(|t| t.map(str::to_string))
            .map_err(|e| e.to_string())
    };
    assert_eq!(text(b" \tabc def\t ").unwrap().as_deref(), Some("abc def"));
    assert_eq!(text(b"").unwrap().as_deref(), Some(""));
    // Control characters never make a header value; bytes above ASCII do.
    for bad in [&b"caf\xc3\xa9"[..], b"a\xff", b"\x80"] {
        assert!(text(bad).unwrap_err().contains("not valid text"), "{bad:?}");
        // The rule is `HeaderValue::to_str`'s.
        assert!(HeaderValue::from_bytes(bad).unwrap().to_str().is_err());
    }
    // Every byte a value can hold, alone and after text: accepted exactly
    // where `to_str` accepts it.
    for byte in 0..=u8::MAX {
        for bytes in [vec![byte], vec![b'a', byte, b'b']] {
            if let Ok(value) = HeaderValue::from_bytes(&bytes) {
                assert_eq!(
                    header_text(value.as_bytes()).is_some(),
                    value.to_str().is_ok(),
                    "{byte}"
                );
            }
        }
    }
}

#[test]
fn signed_headers_follow_novas_checks() {
    let s = settings();
    let peer = LOCAL.parse().unwrap();
    let sig = sign_instance_id(b"s3cret", "abc");
    let h1 = headers(&[
        (INSTANCE_ID, "abc"),
        (SIGNATURE, &sig),
        (TENANT_ID, "p"),
        (FORWARDED_FOR, "10.0.0.5"),
    ]);
    let ok = identify(&h1, peer, &s).unwrap();
    assert_eq!(
        ok.identity,
        Identity::Signed {
            instance_id: "abc",
            project_id: "p"
        }
    );
    assert_eq!(
        ok.requester(HeaderView::Map(&h1)),
        "10.0.0.5".parse::<IpAddr>().unwrap()
    );
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
    let h2 = headers(&[(INSTANCE_ID, "abc"), (SIGNATURE, "00"), (TENANT_ID, "p")]);
    let bad = identify(&h2, peer, &s);
    assert!(matches!(bad, Err(ApiError::BadSignature)));
    let h3 = headers(&[
        (INSTANCE_ID, "abc"),
        (INSTANCE_ID, "def"),
        (SIGNATURE, &sig),
        (TENANT_ID, "p"),
    ]);
    let twice = identify(&h3, peer, &s);
    assert!(matches!(twice, Err(ApiError::DuplicateHeader(_))));
}

#[test]
fn headers_from_untrusted_peers_are_ignored() {
    let mut s = settings();
    s.by_source = true;
    let sig = sign_instance_id(b"s3cret", "abc");
    let guest: IpAddr = "10.0.0.5".parse().unwrap();
    let h4 = headers(&[
        (INSTANCE_ID, "abc"),
        (SIGNATURE, &sig),
        (TENANT_ID, "p"),
        (OVN_NETWORK_ID, "n"),
    ]);
    let caller = identify(&h4, guest, &s).unwrap();
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
    let h5 = headers(&[
        (OVN_NETWORK_ID, "net1"),
        (FORWARDED_FOR, "6.6.6.6, 10.0.0.7"),
    ]);
    let caller = identify(&h5, peer, &s).unwrap();
    assert_eq!(
        caller.identity,
        Identity::ByAddress {
            network_id: "net1",
            address: "10.0.0.7".parse().unwrap()
        }
    );
    let h6 = headers(&[
        (NEUTRON_NETWORK_ID, "net1"),
        (FORWARDED_FOR, "::ffff:10.0.0.8"),
    ]);
    let caller = identify(&h6, peer, &s).unwrap();
    assert_eq!(
        caller.identity,
        Identity::ByAddress {
            network_id: "net1",
            address: "10.0.0.8".parse().unwrap()
        }
    );
    let h7 = headers(&[(OVN_NETWORK_ID, "net1")]);
    assert!(matches!(
        identify(&h7, peer, &s),
        Err(ApiError::MissingHeader("X-Forwarded-For"))
    ));
    let h8 = headers(&[(OVN_NETWORK_ID, "net1"), (FORWARDED_FOR, "nonsense")]);
    assert!(matches!(
        identify(&h8, peer, &s),
        Err(ApiError::BadHeader(_))
    ));
}

#[test]
fn signed_headers_next_to_a_network_id_are_the_guests() {
    // A haproxy sets the network id and passes the guest's headers on:
    // a guest's (even validly) signed headers for another instance must
    // not win over the address the proxy vouches for.
    let s = settings();
    let peer = LOCAL.parse().unwrap();
    let other = sign_instance_id(b"s3cret", "other-instance");
    let h = headers(&[
        (INSTANCE_ID, "other-instance"),
        (TENANT_ID, "other-project"),
        (SIGNATURE, &other),
        (OVN_NETWORK_ID, "net1"),
        (FORWARDED_FOR, "10.0.0.7"),
    ]);
    assert_eq!(
        identify(&h, peer, &s).unwrap().identity,
        Identity::ByAddress {
            network_id: "net1",
            address: "10.0.0.7".parse().unwrap()
        }
    );
    // Signed only: the headers are a metadata agent's, as before.
    let signed_only = IdentitySettings {
        by_address: false,
        ..settings()
    };
    assert!(matches!(
        identify(&h, peer, &signed_only).unwrap().identity,
        Identity::Signed {
            instance_id: "other-instance",
            ..
        }
    ));
}

#[test]
fn headers_as_sent_identify_as_hyper_map_them() {
    let sig = sign_instance_id(b"s3cret", "abc");
    let sent = [
        ("X-INSTANCE-ID", "abc"),
        ("x-Instance-Id-Signature", sig.as_str()),
        ("X-Tenant-Id", "p"),
        ("X-Forwarded-For", "10.0.0.9"),
        ("X-AWS-EC2-Metadata-Token", "t"),
    ];
    let raw: Vec<meta169_http::request_head::RawHeader<'_>> = sent
        .iter()
        .map(|(name, value)| meta169_http::request_head::RawHeader {
            name,
            value: value.as_bytes(),
        })
        .collect();
    let mut map = HeaderMap::new();
    for (name, value) in sent {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    let memo = SignatureMemo::new(&settings().shared_secret);
    let peer = LOCAL.parse().unwrap();
    let from_map = super::identify(HeaderView::Map(&map), peer, &settings(), &memo).unwrap();
    let from_raw = super::identify(HeaderView::Raw(&raw), peer, &settings(), &memo).unwrap();
    assert_eq!(from_map, from_raw);
    assert_eq!(from_raw.session_token, Some(&b"t"[..]));
    assert_eq!(
        from_raw.requester(HeaderView::Raw(&raw)),
        "10.0.0.9".parse::<IpAddr>().unwrap()
    );
}
