//! The seeds' random bytes: AES-128 in counter mode from a zero counter
//! under a key from the operating system, one generator per thread (a
//! CTR_DRBG without its reseeding).
//!
//! The `aes` crate runs it on most CPUs, on their AES instructions.
//! The crate takes its 256-bit VAES path only where the operating system
//! saves AVX-512 state: its feature check asks for that even for 256-bit
//! VAES. CPUs with VAES and AVX2 alone (AMD Zen 3, such as the EPYC
//! machines CI runs on) get AES-NI, one block per instruction. There the
//! stream is made here with VAES, two blocks per instruction: the same
//! cipher and the same stream as the crate's `Ctr128LE` (the tests
//! compare them). A batch of 32 seeds' bytes (21,888) took 1.33 µs
//! against 2.9-4.0 µs through the crate: ~42 ns per `meta_data.json`
//! request against 90-125 ns (a micro-benchmark on such an EPYC).
//! Valgrind does not emulate VAES, so under callgrind the crate's path
//! runs.

use aes::cipher::{KeyIvInit, StreamCipher};
use rand::RngCore;

/// Bytes of one AES block: the stream is drawn in whole blocks.
pub(super) const BLOCK: usize = 16;

/// AES-128 in counter mode, through the `aes` crate.
type Portable = ctr::Ctr128LE<aes::Aes128>;

/// A thread's generator of random bytes.
pub(super) struct Keystream(Engine);

enum Engine {
    #[cfg(target_arch = "x86_64")]
    Vaes(vaes::Vaes),
    Portable(Portable),
}

/// A fresh key from the operating system.
fn fresh_key() -> [u8; 16] {
    let mut key = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut key);
    key
}

impl Keystream {
    /// A generator under a fresh key. The counter starts at zero: with a
    /// random key no two generators share a stream.
    pub(super) fn new() -> Self {
        Keystream(Engine::new(&fresh_key()))
    }

    /// `out`, whole blocks of the stream, filled with the next random
    /// bytes. Should the counter run out, a fresh key starts a new
    /// stream.
    pub(super) fn fill(&mut self, out: &mut [u8]) {
        assert!(
            out.len().is_multiple_of(BLOCK),
            "whole blocks of the stream"
        );
        if !self.0.fill(out) {
            *self = Keystream::new();
            // A fresh counter from zero has room for any slice.
            let filled = self.0.fill(out);
            debug_assert!(filled);
        }
    }
}

impl Engine {
    fn new(key: &[u8; 16]) -> Self {
        #[cfg(target_arch = "x86_64")]
        if let Some(vaes) = vaes::Vaes::new(key) {
            return Engine::Vaes(vaes);
        }
        Engine::Portable(Portable::new(key.into(), &[0u8; 16].into()))
    }

    /// False, `out` untouched, when the counter has no room for it.
    fn fill(&mut self, out: &mut [u8]) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Engine::Vaes(vaes) => vaes.fill(out),
            Engine::Portable(portable) => portable.try_write_keystream(out).is_ok(),
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod vaes {
    use std::arch::x86_64::{
        __m128i, __m256i, _mm256_add_epi64, _mm256_aesenc_epi128, _mm256_aesenclast_epi128,
        _mm256_broadcastsi128_si256, _mm256_set_epi64x, _mm256_setzero_si256, _mm256_storeu_si256,
        _mm256_xor_si256, _mm_aeskeygenassist_si128, _mm_loadu_si128, _mm_shuffle_epi32,
        _mm_slli_si128, _mm_xor_si128,
    };

    use super::BLOCK;
    /// Registers of two blocks each in flight per loop: VAES issues two
    /// a cycle with a latency of four (Zen 3), so eight keep it busy.
    const REGISTERS: usize = 8;
    /// Bytes one loop makes.
    const STRIDE: usize = REGISTERS * 2 * BLOCK;
    /// AES-128's rounds; the schedule has one key more.
    const ROUNDS: usize = 10;

    /// AES-128 in counter mode with 256-bit VAES.
    pub(super) struct Vaes {
        /// The round keys, each in both halves of a register.
        round_keys: [__m256i; ROUNDS + 1],
        /// The next block's counter: the low half of the little-endian
        /// 128-bit counter, whose high half stays zero.
        counter: u64,
    }

    impl Vaes {
        /// None where the CPU lacks VAES, AVX2 or AES-NI.
        pub(super) fn new(key: &[u8; 16]) -> Option<Self> {
            let usable = std::arch::is_x86_feature_detected!("vaes")
                && std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("aes");
            // SAFETY: the CPU has AES-NI and AVX2.
            usable.then(|| Vaes {
                round_keys: unsafe { expand(key) },
                counter: 0,
            })
        }

        /// `out`, whole blocks, filled; false, `out` untouched, when the
        /// counter has no room for it.
        pub(super) fn fill(&mut self, out: &mut [u8]) -> bool {
            let blocks = (out.len() / BLOCK) as u64;
            // The last block's number must fit too: the two blocks of a
            // register are counted within the low half, without a carry.
            let Some(end) = self.counter.checked_add(blocks + 1) else {
                return false;
            };
            // SAFETY: a `Vaes` exists only where the CPU has VAES, AVX2
            // and AES-NI (`new`).
            unsafe { fill(&self.round_keys, self.counter, out) };
            self.counter = end - 1;
            true
        }
    }

    /// The key schedule's next round key from the last and its
    /// `aeskeygenassist`.
    #[target_feature(enable = "aes,avx2")]
    fn next_round_key(key: __m128i, assist: __m128i) -> __m128i {
        let assist = _mm_shuffle_epi32::<0xff>(assist);
        let mut key = key;
        for _ in 0..3 {
            key = _mm_xor_si128(key, _mm_slli_si128::<4>(key));
        }
        _mm_xor_si128(key, assist)
    }

    /// AES-128's key schedule (FIPS 197), each round key in both halves.
    #[target_feature(enable = "aes,avx2")]
    fn expand(key: &[u8; 16]) -> [__m256i; ROUNDS + 1] {
        let mut keys = [_mm256_setzero_si256(); ROUNDS + 1];
        // SAFETY: `key` is 16 bytes, one unaligned load.
        let mut round_key = unsafe { _mm_loadu_si128(key.as_ptr().cast::<__m128i>()) };
        keys[0] = _mm256_broadcastsi128_si256(round_key);
        // `aeskeygenassist` takes its round constant as an immediate.
        macro_rules! round {
            ($($i:literal: $rcon:literal),*) => {$(
                round_key = next_round_key(
                    round_key,
                    _mm_aeskeygenassist_si128::<$rcon>(round_key),
                );
                keys[$i] = _mm256_broadcastsi128_si256(round_key);
            )*};
        }
        round!(1: 0x01, 2: 0x02, 3: 0x04, 4: 0x08, 5: 0x10, 6: 0x20, 7: 0x40, 8: 0x80, 9: 0x1b, 10: 0x36);
        keys
    }

    /// A register of two counter blocks, encrypted.
    #[target_feature(enable = "aes,avx2,vaes")]
    fn encrypt(keys: &[__m256i; ROUNDS + 1], counters: __m256i) -> __m256i {
        let mut state = _mm256_xor_si256(counters, keys[0]);
        for key in &keys[1..ROUNDS] {
            state = _mm256_aesenc_epi128(state, *key);
        }
        _mm256_aesenclast_epi128(state, keys[ROUNDS])
    }

    /// The stream from block `counter` on into `out`, whole blocks. The
    /// caller makes sure no block's number passes `u64::MAX`.
    #[target_feature(enable = "aes,avx2,vaes")]
    fn fill(keys: &[__m256i; ROUNDS + 1], counter: u64, out: &mut [u8]) {
        // Block numbers are little-endian in the low half of each block.
        let two = _mm256_set_epi64x(0, 2, 0, 2);
        let mut counters = _mm256_set_epi64x(0, (counter + 1) as i64, 0, counter as i64);
        let mut chunks = out.chunks_exact_mut(STRIDE);
        for chunk in &mut chunks {
            // Rounds across the registers, so their latencies overlap.
            let mut state = [_mm256_setzero_si256(); REGISTERS];
            for lane in &mut state {
                *lane = _mm256_xor_si256(counters, keys[0]);
                counters = _mm256_add_epi64(counters, two);
            }
            for key in &keys[1..ROUNDS] {
                for lane in &mut state {
                    *lane = _mm256_aesenc_epi128(*lane, *key);
                }
            }
            for (lane, to) in state.iter().zip(chunk.chunks_exact_mut(2 * BLOCK)) {
                // SAFETY: `to` is 32 bytes, one unaligned store.
                unsafe {
                    _mm256_storeu_si256(
                        to.as_mut_ptr().cast::<__m256i>(),
                        _mm256_aesenclast_epi128(*lane, keys[ROUNDS]),
                    )
                };
            }
        }
        // What is left: whole registers, then perhaps one block.
        for to in chunks.into_remainder().chunks_mut(2 * BLOCK) {
            let mut pair = [0u8; 2 * BLOCK];
            // SAFETY: `pair` is 32 bytes, one unaligned store.
            unsafe {
                _mm256_storeu_si256(pair.as_mut_ptr().cast::<__m256i>(), encrypt(keys, counters))
            };
            to.copy_from_slice(&pair[..to.len()]);
            counters = _mm256_add_epi64(counters, two);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The crate's stream: what every engine must give.
    fn portable_stream(key: &[u8; 16], len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        Portable::new(key.into(), &[0u8; 16].into()).apply_keystream(&mut out);
        out
    }

    #[test]
    fn every_engine_gives_the_crates_stream() {
        // Lengths across the loop's stride, its tail of registers and a
        // single block; consecutive calls continue one stream.
        let lengths = [16, 32, 48, 240, 256, 272, 512, 21_888, 4_096 + 16];
        let total: usize = lengths.iter().sum();
        for _ in 0..4 {
            let key = fresh_key();
            let want = portable_stream(&key, total);
            let mut engine = Engine::new(&key);
            let mut got = Vec::with_capacity(total);
            for len in lengths {
                let mut out = vec![0xAAu8; len];
                assert!(engine.fill(&mut out));
                got.extend_from_slice(&out);
            }
            assert_eq!(got, want);
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vaes_gives_the_crates_stream_where_the_cpu_has_it() {
        let key = fresh_key();
        let Some(mut vaes) = vaes::Vaes::new(&key) else {
            eprintln!("this CPU has no VAES with AVX2: the portable engine is the one in use");
            return;
        };
        let want = portable_stream(&key, 3 * 21_888);
        let mut got = vec![0u8; 3 * 21_888];
        for part in got.chunks_mut(21_888) {
            assert!(vaes.fill(part));
        }
        assert_eq!(got, want);
    }
}
