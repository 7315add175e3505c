//! Random bytes as base64 characters: each byte's low six bits pick one.
//!
//! A seed's text has to be the base64 of uniformly random bytes, nothing
//! more: drawing one random byte per character and mapping its low six
//! bits gives exactly that distribution, without an encoder's regrouping
//! of bits. No crate maps bytes onto the alphabet like this (encoders
//! regroup; base64-simd, the vectorised one, has no AVX-512 path), and
//! with AVX-512 VBMI the mapping is one byte permute per 64 characters, so
//! it is written here: the permute where the CPU has it, with AVX2 a
//! byte shuffle of steps, elsewhere a branch-free formula.

/// Base64's standard alphabet (RFC 4648, what Nova's `b64encode` uses).
pub(crate) const ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Each byte of `bytes` replaced by the character of its low six bits:
/// in place, so a batch of random bytes needs no second buffer for its
/// text.
pub(crate) fn map(bytes: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512vbmi") {
            // SAFETY: the CPU has AVX-512 VBMI (and with it F and BW).
            unsafe { map_vbmi(bytes) };
            return;
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2.
            unsafe { map_avx2(bytes) };
            return;
        }
    }
    map_any(bytes);
}

/// The character of `byte`'s low six bits, by ranges of the alphabet
/// instead of a table lookup, so that a loop of it vectorises.
#[inline(always)]
fn char_of(byte: u8) -> u8 {
    let index = byte & 63;
    let mut c = index + b'A';
    // From each range's first index on, the step to its first character.
    c = c.wrapping_add(if index >= 26 { b'a' - b'A' - 26 } else { 0 });
    c = c.wrapping_sub(if index >= 52 { b'a' - b'0' + 26 } else { 0 });
    c = c.wrapping_sub(if index >= 62 {
        b'0' + 62 - 52 - b'+'
    } else {
        0
    });
    c.wrapping_add(if index >= 63 { b'/' - b'+' - 1 } else { 0 })
}

fn map_any(bytes: &mut [u8]) {
    for byte in bytes {
        *byte = char_of(*byte);
    }
}

/// What [`map_avx2`] adds to an index to make its character, by the
/// class the index falls in (see there): `a`..`z`, `0`..`9` (ten
/// classes, one step), `+`, `/`, `A`..`Z`; the last two entries are
/// unused.
#[cfg(target_arch = "x86_64")]
const STEPS: [u8; 16] = {
    let digit = b'0'.wrapping_sub(52);
    [
        b'a' - 26,
        digit,
        digit,
        digit,
        digit,
        digit,
        digit,
        digit,
        digit,
        digit,
        digit,
        b'+'.wrapping_sub(62),
        b'/'.wrapping_sub(63),
        b'A',
        0,
        0,
    ]
};

/// The [`char_of`] formula in five vector steps per 32 characters, the
/// way vectorised base64 encoders map: each index's class (0 below 52,
/// 1..12 above it by a saturating subtraction; 13 below 26) picks the
/// step to add from [`STEPS`] with one byte shuffle. The compiler's
/// vectorisation of `char_of` took ~17 instructions per 32 characters.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn map_avx2(bytes: &mut [u8]) {
    use std::arch::x86_64::{
        __m256i, _mm256_add_epi8, _mm256_and_si256, _mm256_broadcastsi128_si256, _mm256_cmpgt_epi8,
        _mm256_loadu_si256, _mm256_or_si256, _mm256_set1_epi8, _mm256_shuffle_epi8,
        _mm256_storeu_si256, _mm256_subs_epu8, _mm_loadu_si128,
    };
    const LANES: usize = 32;
    // SAFETY: STEPS is 16 bytes, one unaligned load.
    let steps = _mm256_broadcastsi128_si256(unsafe { _mm_loadu_si128(STEPS.as_ptr().cast()) });
    let (six_bits, last_letter) = (_mm256_set1_epi8(63), _mm256_set1_epi8(51));
    let (upper_end, upper_class) = (_mm256_set1_epi8(26), _mm256_set1_epi8(13));
    let mut chunks = bytes.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        // SAFETY: the chunk is LANES bytes; an unaligned load and store.
        unsafe {
            let index = _mm256_and_si256(
                _mm256_loadu_si256(chunk.as_ptr().cast::<__m256i>()),
                six_bits,
            );
            let above = _mm256_subs_epu8(index, last_letter);
            // Indices are below 64: a signed comparison is exact.
            let upper = _mm256_and_si256(_mm256_cmpgt_epi8(upper_end, index), upper_class);
            let step = _mm256_shuffle_epi8(steps, _mm256_or_si256(above, upper));
            _mm256_storeu_si256(
                chunk.as_mut_ptr().cast::<__m256i>(),
                _mm256_add_epi8(index, step),
            );
        }
    }
    map_any(chunks.into_remainder());
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
fn map_vbmi(bytes: &mut [u8]) {
    use std::arch::x86_64::{
        __m512i, _mm512_loadu_si512, _mm512_permutexvar_epi8, _mm512_storeu_si512,
    };
    const LANES: usize = 64;
    // SAFETY: ALPHABET is 64 bytes, one unaligned load.
    let alphabet = unsafe { _mm512_loadu_si512(ALPHABET.as_ptr().cast::<__m512i>()) };
    let mut chunks = bytes.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        // SAFETY: the chunk is LANES bytes; an unaligned load and store.
        unsafe {
            let random = _mm512_loadu_si512(chunk.as_ptr().cast::<__m512i>());
            // The permute reads each index byte's low six bits only.
            let chars = _mm512_permutexvar_epi8(random, alphabet);
            _mm512_storeu_si512(chunk.as_mut_ptr().cast::<__m512i>(), chars);
        }
    }
    map_any(chunks.into_remainder());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(random: &[u8]) -> Vec<u8> {
        random
            .iter()
            .map(|b| ALPHABET[usize::from(b & 63)])
            .collect()
    }

    #[test]
    fn every_byte_maps_to_its_low_bits_character() {
        for byte in 0..=255u8 {
            assert_eq!(char_of(byte), ALPHABET[usize::from(byte & 63)], "{byte}");
        }
    }

    #[test]
    fn every_path_maps_every_length_alike() {
        // Lengths around the vector widths, every byte value at every lane.
        let random: Vec<u8> = (0..700u32).map(|i| (i * 7 + i / 256) as u8).collect();
        for len in (0..200).chain([511, 512, 513, 683, 684, 700]) {
            let want = reference(&random[..len]);
            let mut text = random[..len].to_vec();
            map(&mut text);
            assert_eq!(text, want, "dispatched, {len} bytes");
            let mut text = random[..len].to_vec();
            map_any(&mut text);
            assert_eq!(text, want, "portable, {len} bytes");
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx2") {
                    let mut text = random[..len].to_vec();
                    // SAFETY: the CPU has AVX2.
                    unsafe { map_avx2(&mut text) };
                    assert_eq!(text, want, "avx2, {len} bytes");
                }
                if std::arch::is_x86_feature_detected!("avx512vbmi") {
                    let mut text = random[..len].to_vec();
                    // SAFETY: the CPU has AVX-512 VBMI.
                    unsafe { map_vbmi(&mut text) };
                    assert_eq!(text, want, "avx512vbmi, {len} bytes");
                }
            }
        }
    }
}
