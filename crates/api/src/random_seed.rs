//! Nova's `random_seed`: 512 fresh random bytes, base64, in every render of
//! `meta_data.json` (guests feed it to their entropy pool at boot).
//!
//! The bytes come from ChaCha8, seeded from the operating system once per
//! thread: a cryptographically strong generator (eight rounds have no known
//! weakness), at two thirds of the cost of the twelve-round default on the
//! most-requested OpenStack document.

use bytes::{Bytes, BytesMut};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cell::RefCell;

/// Size of Nova's random seed, before base64.
const RANDOM_SEED_BYTES: usize = 512;
/// Its base64 text, padded (what Nova's `base64.b64encode` gives).
const RANDOM_SEED_TEXT: usize = RANDOM_SEED_BYTES.div_ceil(3) * 4;

thread_local! {
    static GENERATOR: RefCell<ChaCha8Rng> = RefCell::new(ChaCha8Rng::from_entropy());
}

/// `before`, a fresh seed's text, `after`: one body.
pub(crate) fn document(before: &[u8], after: &[u8]) -> Bytes {
    let mut seed = [0u8; RANDOM_SEED_BYTES];
    GENERATOR.with(|generator| generator.borrow_mut().fill_bytes(&mut seed));
    let mut text = [0u8; RANDOM_SEED_TEXT];
    let text = base64_simd::STANDARD.encode(&seed, base64_simd::Out::from_slice(&mut text));
    let mut body = BytesMut::with_capacity(before.len() + text.len() + after.len());
    body.extend_from_slice(before);
    body.extend_from_slice(text);
    body.extend_from_slice(after);
    body.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    #[test]
    fn each_document_has_512_fresh_bytes() {
        let seed_of = |doc: &Bytes| {
            let text = std::str::from_utf8(&doc[2..doc.len() - 2])
                .unwrap()
                .to_string();
            base64::engine::general_purpose::STANDARD
                .decode(&text)
                .unwrap()
        };
        let (a, b) = (document(b"[\"", b"\"]"), document(b"[\"", b"\"]"));
        assert_eq!(a.len(), 4 + RANDOM_SEED_TEXT);
        assert_eq!(seed_of(&a).len(), RANDOM_SEED_BYTES);
        assert_ne!(seed_of(&a), seed_of(&b));
    }
}
