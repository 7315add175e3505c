//! The proxy signature Nova and Neutron share: lowercase hex of
//! HMAC-SHA256 over the instance id, keyed with `metadata_proxy_shared_secret`.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

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
}
