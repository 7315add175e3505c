//! One version's entries packed for a cache of many instances: every key
//! and small body in one allocation, a sorted index of fixed-size slots
//! into it, and bodies too large to copy (user data) shared by reference.
//! A hash map of boxed keys and separately allocated bodies cost about
//! four times as much per version, and a lookup here is a binary search
//! over a few dozen keys, which is as fast as hashing the path.

use crate::tree::{Body, ContentType, Entry, Found};
use bytes::{Bytes, BytesMut};

/// Paths below a version up to this long are joined without allocating.
const JOIN_BUFFER: usize = 256;

/// Bodies at least this large are kept by reference instead of copied
/// into the block (user data is shared with the record this way).
const SHARE_AT: usize = 1024;

#[derive(Clone, Copy, Debug)]
struct Span {
    start: u32,
    len: u32,
}

#[derive(Debug)]
enum Stored {
    Inline(Span),
    Shared(u32),
    MetaData { before: Span, after: Span },
    RequesterAddress,
    VendorData2,
    Password,
}

#[derive(Debug)]
struct Slot {
    key: Span,
    body: Stored,
    content_type: ContentType,
}

/// A version's entries, keyed by the path below the version
/// (`meta-data/instance-id`; `""` is the version's own listing).
#[derive(Debug)]
pub struct Packed {
    block: Bytes,
    slots: Box<[Slot]>,
    shared: Box<[Bytes]>,
}

/// The slots' order: most comparisons in a lookup are settled by the
/// lengths, without comparing bytes.
fn by_length_then_bytes(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

impl Packed {
    pub fn new(mut entries: Vec<(String, Entry)>) -> Packed {
        entries.sort_unstable_by(|a, b| by_length_then_bytes(a.0.as_bytes(), b.0.as_bytes()));
        entries.dedup_by(|a, b| a.0 == b.0);
        let size: usize = entries
            .iter()
            .map(|(key, entry)| {
                key.len()
                    + match &entry.body {
                        Body::Static(b) if b.len() < SHARE_AT => b.len(),
                        Body::MetaData { before, after } => before.len() + after.len(),
                        _ => 0,
                    }
            })
            .sum();
        let mut block = BytesMut::with_capacity(size);
        let mut shared = Vec::new();
        let mut push = |bytes: &[u8]| {
            let span = Span {
                start: block.len() as u32,
                len: bytes.len() as u32,
            };
            block.extend_from_slice(bytes);
            span
        };
        let mut slots = Vec::with_capacity(entries.len());
        for (key, entry) in entries {
            let key = push(key.as_bytes());
            let body = match entry.body {
                Body::Static(b) if b.len() >= SHARE_AT => {
                    shared.push(b);
                    Stored::Shared(shared.len() as u32 - 1)
                }
                Body::Static(b) => Stored::Inline(push(&b)),
                Body::MetaData { before, after } => Stored::MetaData {
                    before: push(&before),
                    after: push(&after),
                },
                Body::RequesterAddress => Stored::RequesterAddress,
                Body::VendorData2 => Stored::VendorData2,
                Body::Password => Stored::Password,
            };
            slots.push(Slot {
                key,
                body,
                content_type: entry.content_type,
            });
        }
        Packed {
            block: block.freeze(),
            slots: slots.into_boxed_slice(),
            shared: shared.into_boxed_slice(),
        }
    }

    fn bytes(&self, span: Span) -> &[u8] {
        &self.block[span.start as usize..(span.start + span.len) as usize]
    }

    fn slice(&self, span: Span) -> Bytes {
        self.block
            .slice(span.start as usize..(span.start + span.len) as usize)
    }

    /// The entry at `key` (`meta-data/instance-id`).
    pub fn get(&self, key: &str) -> Option<Found<'_>> {
        self.find(key.as_bytes())
    }

    /// The entry at `segments` joined by `/` (joined on the stack: the
    /// paths guests ask for are short).
    pub fn get_path(&self, segments: &[&str]) -> Option<Found<'_>> {
        match segments {
            [] => self.find(b""),
            [one] => self.find(one.as_bytes()),
            many => {
                let len = many.iter().map(|s| s.len()).sum::<usize>() + many.len() - 1;
                if len > JOIN_BUFFER {
                    return self.find(many.join("/").as_bytes());
                }
                let mut buffer = [0u8; JOIN_BUFFER];
                let mut at = 0;
                for (i, segment) in many.iter().enumerate() {
                    if i > 0 {
                        buffer[at] = b'/';
                        at += 1;
                    }
                    buffer[at..at + segment.len()].copy_from_slice(segment.as_bytes());
                    at += segment.len();
                }
                self.find(&buffer[..len])
            }
        }
    }

    fn find(&self, key: &[u8]) -> Option<Found<'_>> {
        let at = self
            .slots
            .binary_search_by(|slot| by_length_then_bytes(self.bytes(slot.key), key))
            .ok()?;
        let slot = &self.slots[at];
        let body = match &slot.body {
            Stored::Inline(span) => Body::Static(self.slice(*span)),
            Stored::Shared(i) => Body::Static(self.shared[*i as usize].clone()),
            Stored::MetaData { before, after } => Body::MetaData {
                before: self.bytes(*before),
                after: self.bytes(*after),
            },
            Stored::RequesterAddress => Body::RequesterAddress,
            Stored::VendorData2 => Body::VendorData2,
            Stored::Password => Body::Password,
        };
        Some(Entry {
            body,
            content_type: slot.content_type,
        })
    }

    /// Keys, shortest first (the lookup order).
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.slots
            .iter()
            .map(|slot| std::str::from_utf8(self.bytes(slot.key)).unwrap_or(""))
    }

    /// Heap bytes held, shared bodies included.
    pub fn heap_bytes(&self) -> usize {
        self.block.len()
            + self.slots.len() * std::mem::size_of::<Slot>()
            + self.shared.iter().map(Bytes::len).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_body_comes_back() {
        let big = Bytes::from(vec![b'u'; SHARE_AT + 1]);
        let packed = Packed::new(vec![
            ("meta-data/hostname".into(), Entry::text("h.novalocal")),
            ("".into(), Entry::text("meta-data/\nuser-data")),
            ("user-data".into(), Entry::text(big.clone())),
            (
                "meta_data.json".into(),
                Entry {
                    body: Body::MetaData {
                        before: Bytes::from_static(b"{\"a\": \""),
                        after: Bytes::from_static(b"\"}"),
                    },
                    content_type: ContentType::Json,
                },
            ),
            (
                "password".into(),
                Entry {
                    body: Body::Password,
                    content_type: ContentType::Text,
                },
            ),
        ]);
        assert_eq!(packed.keys().count(), 5);
        assert_eq!(
            packed.get("meta-data/hostname").unwrap(),
            Entry::text("h.novalocal")
        );
        assert_eq!(
            packed.get("").unwrap(),
            Entry::text("meta-data/\nuser-data")
        );
        // Shared, not copied: the same allocation comes back.
        match packed.get("user-data").unwrap().body {
            Body::Static(b) => assert_eq!(b.as_ptr(), big.as_ptr()),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            packed.get("meta_data.json").unwrap().body,
            Body::MetaData { .. }
        ));
        assert_eq!(packed.get("password").unwrap().body, Body::Password);
        assert!(packed.get("meta-data").is_none());
        assert_eq!(
            packed.get_path(&["meta-data", "hostname"]),
            packed.get("meta-data/hostname")
        );
        assert!(packed.get_path(&["meta-data", "hostnam"]).is_none());
        let long = "x".repeat(JOIN_BUFFER);
        assert!(packed.get_path(&[&long, "y"]).is_none());
        assert!(packed.get("zzz").is_none());
        assert_eq!(
            packed.keys().collect::<Vec<_>>(),
            [
                "",
                "password",
                "user-data",
                "meta_data.json",
                "meta-data/hostname",
            ]
        );
    }
}
