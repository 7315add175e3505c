//! Nova's `random_seed`: 512 fresh random bytes, base64, in every render of
//! `meta_data.json` (guests feed it to their entropy pool at boot).
//!
//! The text is drawn directly: one random byte per character, its low six
//! bits picking the character ([`alphabet`]), which is the base64 of
//! uniformly random bytes without an encoder's regrouping of bits. The
//! bytes are AES-128 in counter mode under a key from the operating
//! system, one per thread ([`keystream`]). A batch of eight seeds' bytes
//! took 632 ns through the `aes` crate where ChaCha8's took 1,100 ns
//! before base64-simd encoded them (a micro-benchmark).
//!
//! Seeds are made [`SEEDS_PER_BATCH`] at a time and each is used once:
//! every call of the generator and the mapping costs a set-up and a
//! scalar tail beside its vectorised middle.

mod alphabet;
mod keystream;

use bytes::{Bytes, BytesMut};
use keystream::Keystream;
use std::cell::RefCell;

/// Size of Nova's random seed, before base64.
const RANDOM_SEED_BYTES: usize = 512;
/// Its base64 text, padded (what Nova's `base64.b64encode` gives).
const RANDOM_SEED_TEXT: usize = RANDOM_SEED_BYTES.div_ceil(3) * 4;
/// Characters that carry bits: 512 bytes end two bytes into a base64
/// group, so the text ends in three characters and one `=`.
const SEED_CHARS: usize = (RANDOM_SEED_BYTES * 8).div_ceil(6);
/// Bits of the last character that belong to the seed: its top four.
/// Its low two are zero, as an encoder leaves them.
const LAST_CHAR_BITS: u8 = 0b11_1100;
/// Seeds made at once. A batch of 8 spent ~104 ns of AES-NI per
/// `meta_data.json` request, one of 32 ~90 ns (perf, under the pinned
/// benchmark): a batch has a cost of its own beside its bytes. 32 keep
/// 22 KiB per thread.
const SEEDS_PER_BATCH: usize = 32;
/// Random bytes (and characters) of one batch.
const BATCH_BYTES: usize = RANDOM_SEED_TEXT * SEEDS_PER_BATCH;
const _: () = assert!(
    BATCH_BYTES.is_multiple_of(keystream::BLOCK),
    "whole blocks of the stream"
);
/// One block that documents are written into and split off, about ten
/// `meta_data.json` bodies. A document allocated on its own (1.6 KiB, too
/// large for the allocator's per-thread cache) cost ~350 instructions of
/// allocation and release per request; split off a block it costs a
/// reference count, and the block is reused once its documents are gone.
const BLOCK_BYTES: usize = 16 * 1024;

/// A thread's generator, its seeds made ahead, and the block its
/// documents are written into.
struct Writer {
    keystream: Keystream,
    /// One batch's text, drawn as random bytes and mapped in place (kept
    /// here so a batch does not clear a buffer on its stack first): seed
    /// `i` is `RANDOM_SEED_TEXT` characters from `i * RANDOM_SEED_TEXT`.
    text: [u8; BATCH_BYTES],
    /// Seeds of the batch already used; each is used once.
    used: usize,
    block: BytesMut,
}

thread_local! {
    static WRITER: RefCell<Writer> = RefCell::new(Writer {
        keystream: Keystream::new(),
        text: [0; BATCH_BYTES],
        used: SEEDS_PER_BATCH,
        block: BytesMut::with_capacity(BLOCK_BYTES),
    });
}

/// `before`, a fresh seed's text, `after`: one body.
pub(crate) fn document(before: &[u8], after: &[u8]) -> Bytes {
    WRITER.with(|writer| writer.borrow_mut().document(before, after))
}

impl Writer {
    /// Where the next unused seed's text starts in `text`, a new batch
    /// made first if none is left.
    fn next_seed(&mut self) -> usize {
        if self.used == SEEDS_PER_BATCH {
            self.keystream.fill(&mut self.text);
            // The last character carries four bits of the seed: its
            // random byte's low two go before the mapping reads it.
            for seed in self.text.chunks_exact_mut(RANDOM_SEED_TEXT) {
                seed[SEED_CHARS - 1] &= LAST_CHAR_BITS;
            }
            alphabet::map(&mut self.text);
            for seed in self.text.chunks_exact_mut(RANDOM_SEED_TEXT) {
                seed[SEED_CHARS..].fill(b'=');
            }
            self.used = 0;
        }
        self.used += 1;
        (self.used - 1) * RANDOM_SEED_TEXT
    }

    fn document(&mut self, before: &[u8], after: &[u8]) -> Bytes {
        let seed = self.next_seed();
        // Goes on in the block while it has room; at its end starts it
        // over if every document split off it is gone (hyper drops each
        // as it is written), else takes a new block and the old one goes
        // with its last document.
        self.block
            .reserve(before.len() + RANDOM_SEED_TEXT + after.len());
        self.block.extend_from_slice(before);
        self.block
            .extend_from_slice(&self.text[seed..seed + RANDOM_SEED_TEXT]);
        self.block.extend_from_slice(after);
        self.block.split().freeze()
    }
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
        // Canonical text, as Nova's encoder writes it: it is what encoding
        // its bytes again gives, in every seed of several batches.
        for _ in 0..3 * SEEDS_PER_BATCH {
            let doc = document(b"[\"", b"\"]");
            let again = base64::engine::general_purpose::STANDARD.encode(seed_of(&doc));
            assert_eq!(again.as_bytes(), &doc[2..doc.len() - 2]);
        }
    }

    #[test]
    fn documents_kept_alive_stay_intact_across_blocks() {
        // More documents than one block holds, all kept: each must still
        // read as written, and no two share a seed.
        let docs: Vec<Bytes> = (0..3 * BLOCK_BYTES / RANDOM_SEED_TEXT)
            .map(|_| document(b"{\"a\": \"", b"\"}"))
            .collect();
        let mut seeds = std::collections::HashSet::new();
        for doc in &docs {
            assert!(doc.starts_with(b"{\"a\": \"") && doc.ends_with(b"\"}"));
            let text = &doc[7..doc.len() - 2];
            let seed = base64::engine::general_purpose::STANDARD
                .decode(text)
                .unwrap();
            assert_eq!(seed.len(), RANDOM_SEED_BYTES);
            assert!(seeds.insert(seed));
        }
    }

    #[test]
    fn a_block_is_reused_once_its_documents_are_gone() {
        // Each dropped before the next: they follow one another in one
        // block, from its start again once its end is reached.
        let len = document(b"[\"", b"\"]").len();
        let starts: Vec<usize> = (0..3 * BLOCK_BYTES / len)
            .map(|_| document(b"[\"", b"\"]").as_ptr() as usize)
            .collect();
        let (low, high) = (starts.iter().min().unwrap(), starts.iter().max().unwrap());
        assert!(high - low < BLOCK_BYTES, "{low:#x}..{high:#x}");
        let adjacent = starts.windows(2).filter(|w| w[1] == w[0] + len).count();
        assert!(
            adjacent * 10 >= starts.len() * 8,
            "{adjacent} of {}",
            starts.len()
        );
    }
}
