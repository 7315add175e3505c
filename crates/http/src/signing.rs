//! The proxy signature Nova and Neutron share: lowercase hex of
//! HMAC-SHA256 over the instance id, keyed with `metadata_proxy_shared_secret`.
//! A server checks the same few instance ids over and over, so
//! [`SignatureMemo`] keeps each one's expected signature (and a server's
//! cache may keep it with the instance, [`SignatureMemo::expected`]).

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::RwLock;
use subtle::ConstantTimeEq;

/// Expected signatures remembered at most; past this the memo starts over
/// (ids come from trusted proxies only, but their number is not ours to trust).
pub const MAX_REMEMBERED_SIGNATURES: usize = 100_000;

/// Length of a signature: hex of a SHA-256 MAC.
pub const SIGNATURE_LEN: usize = 64;

/// A signature as expected: its hex text.
pub type Signature = [u8; SIGNATURE_LEN];

/// Constant-time check of a received signature against the expected one:
/// word-wise and branch-free (subtle's byte-wise comparison cost as much
/// as the rest of the check).
pub fn same_signature(expected: &Signature, received: &[u8]) -> bool {
    received.len() == SIGNATURE_LEN && constant_time_eq::constant_time_eq(expected, received)
}

type HmacSha256 = Hmac<Sha256>;

/// `X-Instance-ID-Signature` for `instance_id`.
pub fn sign_instance_id(secret: &[u8], instance_id: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(instance_id.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Constant-time check of a received signature. An empty signature never
/// matches, as in Nova.
pub fn signature_matches(secret: &[u8], instance_id: &str, signature: &str) -> bool {
    if signature.is_empty() {
        return false;
    }
    let expected = sign_instance_id(secret, instance_id);
    expected.as_bytes().ct_eq(signature.as_bytes()).into()
}

/// Signature checks with the expected value of each instance id computed
/// once: the check is then a lookup and a constant-time comparison.
pub struct SignatureMemo {
    secret: Vec<u8>,
    /// foldhash: seeded per process like SipHash, several times faster on
    /// the short ids checked on every request.
    expected: RwLock<HashMap<Box<str>, [u8; SIGNATURE_LEN], foldhash::fast::RandomState>>,
}

impl SignatureMemo {
    pub fn new(secret: &[u8]) -> Self {
        SignatureMemo {
            secret: secret.to_vec(),
            expected: RwLock::new(HashMap::default()),
        }
    }

    /// As [`signature_matches`] with this memo's secret. The signature is
    /// taken as bytes: it is only compared, and a byte that is not text
    /// simply does not match.
    pub fn matches(&self, instance_id: &str, signature: &[u8]) -> bool {
        if signature.len() != SIGNATURE_LEN {
            return false;
        }
        let known = self
            .expected
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(instance_id)
            .copied();
        let expected = match known {
            Some(expected) => expected,
            None => {
                let expected = self.expected(instance_id);
                let mut memo = self.expected.write().unwrap_or_else(|e| e.into_inner());
                if memo.len() >= MAX_REMEMBERED_SIGNATURES {
                    memo.clear();
                }
                memo.insert(instance_id.into(), expected);
                expected
            }
        };
        same_signature(&expected, signature)
    }

    /// The signature expected for `instance_id`, computed (not taken from
    /// or kept in the memo): for a caller that keeps it itself.
    pub fn expected(&self, instance_id: &str) -> Signature {
        let mut expected = [0u8; SIGNATURE_LEN];
        expected.copy_from_slice(sign_instance_id(&self.secret, instance_id).as_bytes());
        expected
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_worked_example() {
        let id = "6ca6d4c8-0f4e-4d54-8a07-7c21c7b5bd02";
        assert_eq!(
            sign_instance_id(b"s3cret", id),
            "60e0efa2cd11da96ac3d69b2e8a73f1dd65120de30ade68d9855240a38d65514"
        );
        assert_eq!(
            sign_instance_id(b"", id),
            "568d2ce9112c1b1424bd5e1df8a05de4a6d8e3a695cb48251764418eb603caf2"
        );
        assert!(signature_matches(
            b"s3cret",
            id,
            "60e0efa2cd11da96ac3d69b2e8a73f1dd65120de30ade68d9855240a38d65514"
        ));
        assert!(!signature_matches(b"s3cret", id, ""));
        assert!(!signature_matches(
            b"other",
            id,
            &sign_instance_id(b"s3cret", id)
        ));
    }

    #[test]
    fn the_memo_answers_as_the_computation_does() {
        let memo = SignatureMemo::new(b"s3cret");
        let id = "6ca6d4c8-0f4e-4d54-8a07-7c21c7b5bd02";
        let good = sign_instance_id(b"s3cret", id);
        for _ in 0..2 {
            assert!(memo.matches(id, good.as_bytes()));
            assert!(!memo.matches(id, sign_instance_id(b"other", id).as_bytes()));
            assert!(!memo.matches(id, b""));
            assert!(!memo.matches(id, &good.as_bytes()[..63]));
            assert!(!memo.matches("another", good.as_bytes()));
        }
    }
}
