//! Request paths, normalised the way Nova normalises them: leading `/`
//! optional, `//` and `.` collapsed, trailing `/` dropped, anything that is
//! not under `ec2` or `openstack` is under `ec2`. Unlike Nova, `..` is
//! refused instead of resolved: no real client sends it, and a path that
//! climbs is a probe, not a request.

/// Longest decoded path accepted.
pub const MAX_PATH_LEN: usize = 1024;
/// Most segments accepted in one path.
pub const MAX_SEGMENTS: usize = 16;

/// What a request path asks for; segments borrow from the decoded path.
// Lives on the stack for one request; boxing the segments would be the
// allocation this type exists to avoid.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataPath<'a> {
    /// `/`: the EC2 version list, served before identification.
    Root,
    /// `/ec2`: the EC2 version list, after identification.
    Ec2Versions,
    /// `/openstack`: the OpenStack version list.
    OpenStackVersions,
    /// Anything below: segments starting with `ec2` or `openstack`, or
    /// `nocloud` (NoCloud's HTTP seed, `nocloud` alone included).
    Item(Segments<'a>),
}

/// A path's segments, kept inline: parsing a request path allocates nothing.
#[derive(Clone, Copy)]
pub struct Segments<'a> {
    items: [&'a str; MAX_SEGMENTS + 1],
    len: usize,
    /// The segments after the version joined by `/`, when the request
    /// path has them that way (no `//` or `.` among them), so a lookup
    /// need not join them again.
    below_version: Option<&'a str>,
}

impl<'a> Segments<'a> {
    fn new() -> Self {
        Segments {
            items: [""; MAX_SEGMENTS + 1],
            len: 0,
            below_version: None,
        }
    }

    fn push(&mut self, segment: &'a str) {
        self.items[self.len] = segment;
        self.len += 1;
    }

    /// The segments after the root and the version, joined by `/`, as
    /// they appear in the request path; `None` when they do not appear so
    /// (join them from the segments then).
    pub fn below_version(&self) -> Option<&'a str> {
        self.below_version
    }
}

impl<'a> std::ops::Deref for Segments<'a> {
    type Target = [&'a str];

    fn deref(&self) -> &[&'a str] {
        &self.items[..self.len]
    }
}

impl PartialEq for Segments<'_> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for Segments<'_> {}

impl std::fmt::Debug for Segments<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Why a path was refused; each message tells the client what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The decoded path is longer than [`MAX_PATH_LEN`].
    #[error("path is longer than {MAX_PATH_LEN} bytes")]
    TooLong,
    /// More than [`MAX_SEGMENTS`] segments.
    #[error("path has more than {MAX_SEGMENTS} segments")]
    TooDeep,
    /// A NUL or other control character.
    #[error("path contains a control character")]
    ControlCharacter,
    /// A `..` segment.
    #[error("path must not contain '..' segments")]
    ParentSegment,
}

/// Could this byte start a control character? C0 and DEL are single
/// bytes; C1 controls (U+0080..U+009F) are written 0xC2 0x80..0x9F, so a
/// 0xC2 byte sends the text to the character-wise check.
fn maybe_control(b: u8) -> bool {
    (b < 0x20) | (b == 0x7f) | (b == 0xc2)
}

/// One byte in each lane of a word.
const LANES: u64 = u64::from_ne_bytes([0x01; 8]);
/// Each lane's high bit.
const HIGH_BITS: u64 = u64::from_ne_bytes([0x80; 8]);

/// High bits set if some byte of `word` is zero: a borrow starts only at
/// a zero byte, so "any" is exact (which lane is not).
fn zero_lanes(word: u64) -> u64 {
    word.wrapping_sub(LANES) & !word & HIGH_BITS
}

/// Whether any byte of `bytes` is one `lane` finds (high bits of a word
/// set), eight bytes at a time: a byte-wise loop cost ~3 instructions a
/// byte on every request path, and paths are too short for a vectorised
/// search to pay for its set-up.
fn any_lane(bytes: &[u8], lane: impl Fn(u64) -> u64, byte: impl Fn(u8) -> bool) -> bool {
    let (words, tail) = bytes.as_chunks::<8>();
    let found = words
        .iter()
        .fold(0, |found, word| found | lane(u64::from_ne_bytes(*word)));
    found != 0 || tail.iter().any(|b| byte(*b))
}

/// Whether `decoded` may hold a control character: some byte for which
/// [`maybe_control`] holds.
fn may_hold_control(decoded: &str) -> bool {
    let lane = |word: u64| {
        // Below 0x20: borrows into a clear high bit (exact for "any").
        (word.wrapping_sub(LANES * 0x20) & !word & HIGH_BITS)
            | zero_lanes(word ^ (LANES * 0x7f))
            | zero_lanes(word ^ (LANES * 0xc2))
    };
    any_lane(decoded.as_bytes(), lane, maybe_control)
}

/// Whether a raw request path has percent escapes to decode.
pub fn has_escapes(raw: &str) -> bool {
    any_lane(
        raw.as_bytes(),
        |word| zero_lanes(word ^ (LANES * u64::from(b'%'))),
        |b| b == b'%',
    )
}

/// The pieces of `decoded` between `/`s, as `str::split('/')` gives them.
/// A plain byte scan: request paths are a few dozen bytes, and `split`
/// sets up a `memchr` search for every piece (~140 instructions each).
fn parts(decoded: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(decoded);
    std::iter::from_fn(move || {
        let text = rest?;
        match text.bytes().position(|b| b == b'/') {
            // `/` is ASCII: both sides of it are character boundaries.
            Some(at) => {
                rest = text.get(at + 1..);
                text.get(..at)
            }
            None => {
                rest = None;
                Some(text)
            }
        }
    })
}

impl<'a> MetadataPath<'a> {
    /// `/latest/api/token`: a request for a session token.
    pub fn is_token_request(&self) -> bool {
        matches!(self, MetadataPath::Item(s) if **s == ["ec2", "latest", "api", "token"])
    }

    /// Normalise a decoded path, without allocating.
    pub fn parse(decoded: &'a str) -> Result<Self, PathError> {
        if decoded.len() > MAX_PATH_LEN {
            return Err(PathError::TooLong);
        }
        // A control character anywhere is reported before the segments.
        // The character-wise check runs only when the byte-wise screen
        // finds a candidate.
        if may_hold_control(decoded) && decoded.chars().any(char::is_control) {
            return Err(PathError::ControlCharacter);
        }
        let mut segments = Segments::new();
        let mut implied = false;
        // Where the segments below the version start in `decoded`, and
        // whether they are still written exactly as joined.
        let mut below: Option<usize> = None;
        let (mut below_verbatim, mut skipped) = (true, false);
        for part in parts(decoded) {
            if part.is_empty() || part == "." {
                // Only between two segments below the version does a
                // skipped part change the joined text.
                skipped |= below.is_some();
                continue;
            }
            if part == ".." {
                return Err(PathError::ParentSegment);
            }
            if segments.len == 0 && part != "ec2" && part != "openstack" && part != "nocloud" {
                // Anything not under a known tree is under `ec2`; that
                // implied segment does not count against the limit.
                implied = true;
                segments.push("ec2");
            }
            if segments.len - usize::from(implied) >= MAX_SEGMENTS {
                return Err(PathError::TooDeep);
            }
            if segments.len == 2 {
                // `part` is a piece of `decoded`: its offset is where it starts.
                below = Some(part.as_ptr() as usize - decoded.as_ptr() as usize);
            }
            below_verbatim &= !skipped;
            segments.push(part);
        }
        if let (Some(from), true) = (below, below_verbatim) {
            let last = segments.items[segments.len - 1];
            // The last segment is a piece of `decoded`; where it ends is
            // where the joined text ends.
            let to = last.as_ptr() as usize - decoded.as_ptr() as usize + last.len();
            segments.below_version = decoded.get(from..to);
        }
        match segments.len {
            0 => Ok(MetadataPath::Root),
            1 if segments.items[0] == "ec2" => Ok(MetadataPath::Ec2Versions),
            1 if segments.items[0] == "openstack" => Ok(MetadataPath::OpenStackVersions),
            _ => Ok(MetadataPath::Item(segments)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(parts: &[&'static str]) -> MetadataPath<'static> {
        let mut segments = Segments::new();
        for part in parts {
            segments.push(part);
        }
        MetadataPath::Item(segments)
    }

    #[test]
    fn parts_are_those_of_split() {
        for path in [
            "",
            "/",
            "//",
            "a",
            "/a/b/",
            "a//b/./c",
            "/é/ü//",
            "/latest/meta-data/instance-id",
        ] {
            assert_eq!(
                parts(path).collect::<Vec<_>>(),
                path.split('/').collect::<Vec<_>>(),
                "{path:?}"
            );
        }
    }

    #[test]
    fn normalises_like_nova() {
        assert_eq!(MetadataPath::parse("/"), Ok(MetadataPath::Root));
        assert_eq!(MetadataPath::parse(""), Ok(MetadataPath::Root));
        assert_eq!(MetadataPath::parse("/ec2/"), Ok(MetadataPath::Ec2Versions));
        assert_eq!(
            MetadataPath::parse("/openstack"),
            Ok(MetadataPath::OpenStackVersions)
        );
        assert_eq!(
            MetadataPath::parse("/latest/meta-data/"),
            Ok(item(&["ec2", "latest", "meta-data"]))
        );
        assert_eq!(
            MetadataPath::parse("//latest/./meta-data//hostname/"),
            Ok(item(&["ec2", "latest", "meta-data", "hostname"]))
        );
        assert_eq!(
            MetadataPath::parse("/openstack/latest/meta_data.json"),
            Ok(item(&["openstack", "latest", "meta_data.json"]))
        );
    }

    #[test]
    fn finds_the_text_below_the_version() {
        let below = |path: &str| match MetadataPath::parse(path) {
            Ok(MetadataPath::Item(segments)) => {
                if let Some(joined) = segments.below_version() {
                    assert_eq!(joined, segments[2..].join("/"), "{path}");
                }
                segments.below_version().map(str::to_string)
            }
            other => panic!("{path}: {other:?}"),
        };
        assert_eq!(
            below("/latest/meta-data/instance-id").as_deref(),
            Some("meta-data/instance-id")
        );
        assert_eq!(
            below("/openstack/latest/meta_data.json/").as_deref(),
            Some("meta_data.json")
        );
        assert_eq!(
            below("//2009-04-04//meta-data/hostname").as_deref(),
            Some("meta-data/hostname")
        );
        assert_eq!(below("/latest"), None);
        assert_eq!(below("/latest/meta-data//hostname"), None);
        assert_eq!(below("/latest/meta-data/./hostname"), None);
        assert_eq!(
            below("/latest/meta-data/hostname/./").as_deref(),
            Some("meta-data/hostname")
        );
    }

    #[test]
    fn word_wise_screens_find_what_byte_wise_ones_find() {
        let base = b"/openstack/latest/meta_data.json/x".to_vec();
        for len in 0..=base.len() {
            for at in 0..len {
                for byte in 0..=255u8 {
                    let mut path = base[..len].to_vec();
                    path[at] = byte;
                    let text = String::from_utf8_lossy(&path);
                    assert_eq!(
                        may_hold_control(&text),
                        text.bytes().any(maybe_control),
                        "{text:?}"
                    );
                    assert_eq!(has_escapes(&text), text.contains('%'), "{text:?}");
                }
            }
        }
    }

    #[test]
    fn refuses_probes() {
        assert_eq!(
            MetadataPath::parse("/latest/../x"),
            Err(PathError::ParentSegment)
        );
        assert_eq!(
            MetadataPath::parse("/latest\0"),
            Err(PathError::ControlCharacter)
        );
        assert_eq!(
            MetadataPath::parse("/latest/\u{85}"),
            Err(PathError::ControlCharacter)
        );
        assert_eq!(
            MetadataPath::parse("/latest/\u{7f}"),
            Err(PathError::ControlCharacter)
        );
        assert!(MetadataPath::parse("/latest/caf\u{e9}").is_ok());
        assert!(MetadataPath::parse("/latest/\u{a0}").is_ok());
        assert_eq!(
            MetadataPath::parse(&"a".repeat(2000)),
            Err(PathError::TooLong)
        );
        assert_eq!(
            MetadataPath::parse(&"/a".repeat(40)),
            Err(PathError::TooDeep)
        );
    }
}
