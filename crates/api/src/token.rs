//! IMDSv2-compatible session tokens: `PUT /latest/api/token` with
//! `X-aws-ec2-metadata-token-ttl-seconds` returns a token; requests carry
//! it in `X-aws-ec2-metadata-token`. A web application in a guest that can
//! be made to fetch an attacker's URL (server-side request forgery) sends
//! a GET, not a PUT with a custom header, so with tokens required it gets
//! nothing.
//!
//! Tokens are stateless: ChaCha20-Poly1305 over the expiry, with the
//! instance's uuid as associated data, so a token opens only for the
//! instance it was issued to, on any replica holding the key, after any
//! restart, with no table. Keys come from a file of one or two lines of
//! 64 hex digits: the first seals and opens, the second (the previous key,
//! kept for one TTL after a rotation, six hours at most) only opens.

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use meta169_http::headers::{METADATA_TOKEN as TOKEN_HEADER, METADATA_TOKEN_TTL as TTL_HEADER};
/// Longest lifetime a token may be asked for (AWS's limit).
pub const MAX_TTL_SECONDS: u64 = 21_600;
/// Key length in bytes (hex in the key file: twice this).
pub const KEY_BYTES: usize = 32;
/// Longest token accepted in a header (a valid one is 49 characters).
pub const MAX_TOKEN_CHARS: usize = 128;

const NONCE_BYTES: usize = 12;
const EXPIRY_BYTES: usize = 8;
const TAG_BYTES: usize = 16;
const SEALED_BYTES: usize = NONCE_BYTES + EXPIRY_BYTES + TAG_BYTES;
/// What every token starts with, so a later format can be told apart.
const VERSION_PREFIX: &str = "v1.";

pub use meta169_tree::TokenMode;

/// Why a key file or a token was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TokenError {
    #[error("the token key file must hold one or two lines of {} hex digits (the current key, then optionally the previous one), e.g. from `openssl rand -hex 32`; line {line} is not", KEY_BYTES * 2)]
    BadKeyFile { line: usize },
    #[error("the token key file holds no key")]
    EmptyKeyFile,
    #[error("X-aws-ec2-metadata-token-ttl-seconds must be a whole number of seconds from 1 to {MAX_TTL_SECONDS}")]
    BadTtl,
    #[error("the metadata token is not valid for this instance")]
    Invalid,
    #[error("the metadata token has expired")]
    Expired,
}

/// Session tokens as configured.
#[derive(Clone, Debug)]
pub struct TokenSettings {
    /// Whether requests must carry a token, unless an instance's record
    /// says otherwise.
    pub mode: TokenMode,
    pub keys: std::sync::Arc<TokenKeys>,
}

impl Default for TokenSettings {
    fn default() -> Self {
        TokenSettings {
            mode: TokenMode::Optional,
            keys: std::sync::Arc::new(TokenKeys::ephemeral()),
        }
    }
}

/// The keys tokens are sealed and opened with.
pub struct TokenKeys {
    current: ChaCha20Poly1305,
    previous: Option<ChaCha20Poly1305>,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("previous", &self.previous.is_some())
            .finish_non_exhaustive()
    }
}

impl TokenKeys {
    /// Keys from a key file's text.
    pub fn parse(text: &str) -> Result<Self, TokenError> {
        let mut keys = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bytes = hex_key(line).ok_or(TokenError::BadKeyFile { line: index + 1 })?;
            keys.push(ChaCha20Poly1305::new(Key::from_slice(&bytes)));
        }
        let mut keys = keys.into_iter();
        let current = keys.next().ok_or(TokenError::EmptyKeyFile)?;
        let previous = keys.next();
        if keys.next().is_some() {
            return Err(TokenError::BadKeyFile { line: 3 });
        }
        Ok(TokenKeys { current, previous })
    }

    /// A random key for this process only: tokens then do not survive a
    /// restart and are not accepted by other replicas.
    pub fn ephemeral() -> Self {
        TokenKeys {
            current: ChaCha20Poly1305::new(&ChaCha20Poly1305::generate_key(&mut OsRng)),
            previous: None,
        }
    }

    /// A token for `instance`, valid for `ttl`.
    pub fn issue(&self, instance: &str, ttl: Duration) -> String {
        let expiry = unix_now().saturating_add(ttl.as_secs());
        let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
        let payload = Payload {
            msg: &expiry.to_be_bytes(),
            aad: instance.as_bytes(),
        };
        // Sealing 8 bytes cannot fail (the limit is 2^38 bytes).
        let sealed = self
            .current
            .encrypt(&nonce, payload)
            .expect("ChaCha20-Poly1305 seals 8 bytes");
        let mut raw = Vec::with_capacity(SEALED_BYTES);
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&sealed);
        format!(
            "{VERSION_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
        )
    }

    /// Check a token for `instance`.
    pub fn check(&self, token: &str, instance: &str) -> Result<(), TokenError> {
        let raw = token
            .strip_prefix(VERSION_PREFIX)
            .filter(|t| t.len() <= MAX_TOKEN_CHARS)
            .and_then(|t| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(t)
                    .ok()
            })
            .filter(|raw| raw.len() == SEALED_BYTES)
            .ok_or(TokenError::Invalid)?;
        let (nonce, sealed) = raw.split_at(NONCE_BYTES);
        let open = |key: &ChaCha20Poly1305| {
            key.decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: instance.as_bytes(),
                },
            )
            .ok()
        };
        let plain = open(&self.current)
            .or_else(|| self.previous.as_ref().and_then(open))
            .ok_or(TokenError::Invalid)?;
        let expiry = u64::from_be_bytes(plain.try_into().map_err(|_| TokenError::Invalid)?);
        if unix_now() >= expiry {
            return Err(TokenError::Expired);
        }
        Ok(())
    }
}

/// The lifetime asked for in `X-aws-ec2-metadata-token-ttl-seconds`.
pub fn parse_ttl(value: Option<&[u8]>) -> Result<Duration, TokenError> {
    let seconds: u64 = value
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.trim().parse().ok())
        .ok_or(TokenError::BadTtl)?;
    if !(1..=MAX_TTL_SECONDS).contains(&seconds) {
        return Err(TokenError::BadTtl);
    }
    Ok(Duration::from_secs(seconds))
}

fn hex_key(text: &str) -> Option<[u8; KEY_BYTES]> {
    let mut key = [0u8; KEY_BYTES];
    hex::decode_to_slice(text, &mut key).ok().map(|()| key)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const KEY_B: &str = "1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100";

    #[test]
    fn a_token_opens_for_its_instance_only_and_until_it_expires() {
        let keys = TokenKeys::parse(KEY_A).unwrap();
        let token = keys.issue("uuid-1", Duration::from_secs(60));
        assert_eq!(keys.check(&token, "uuid-1"), Ok(()));
        assert_eq!(keys.check(&token, "uuid-2"), Err(TokenError::Invalid));
        // Another process with the same key accepts it (replicas, restarts).
        assert_eq!(
            TokenKeys::parse(KEY_A).unwrap().check(&token, "uuid-1"),
            Ok(())
        );
        let expired = keys.issue("uuid-1", Duration::ZERO);
        assert_eq!(keys.check(&expired, "uuid-1"), Err(TokenError::Expired));
        for bad in [
            "",
            "v1.",
            "v1.!!!!",
            "v2.AAAA",
            &token[..token.len() - 1],
            &"v1.A".repeat(100),
        ] {
            assert_eq!(
                keys.check(bad, "uuid-1"),
                Err(TokenError::Invalid),
                "{bad:?}"
            );
        }
        let mut flipped = token.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert_eq!(keys.check(&flipped, "uuid-1"), Err(TokenError::Invalid));
    }

    #[test]
    fn a_rotated_key_keeps_opening_old_tokens() {
        let old = TokenKeys::parse(KEY_A).unwrap();
        let token = old.issue("u", Duration::from_secs(60));
        let rotated = TokenKeys::parse(&format!("{KEY_B}\n{KEY_A}\n")).unwrap();
        assert_eq!(rotated.check(&token, "u"), Ok(()));
        let fresh = rotated.issue("u", Duration::from_secs(60));
        assert_eq!(
            old.check(&fresh, "u"),
            Err(TokenError::Invalid),
            "sealed with the new key"
        );
        assert_eq!(
            TokenKeys::parse(KEY_B).unwrap().check(&token, "u"),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn key_files_and_ttls_are_checked() {
        assert_eq!(TokenKeys::parse("").unwrap_err(), TokenError::EmptyKeyFile);
        assert_eq!(
            TokenKeys::parse("abc").unwrap_err(),
            TokenError::BadKeyFile { line: 1 }
        );
        assert!(TokenKeys::parse(&format!("# current\n{KEY_A}\n")).is_ok());
        assert!(TokenKeys::parse(&format!("{KEY_A}\n{KEY_B}\n{KEY_A}")).is_err());
        assert_eq!(parse_ttl(Some(b"21600")), Ok(Duration::from_secs(21_600)));
        for bad in [
            None,
            Some(&b"0"[..]),
            Some(b"21601"),
            Some(b"-1"),
            Some(b"ten"),
            Some(b""),
        ] {
            assert_eq!(parse_ttl(bad), Err(TokenError::BadTtl), "{bad:?}");
        }
    }
}
