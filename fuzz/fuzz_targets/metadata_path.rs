//! A request path as serve reads it: percent-decoded, then normalised.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meta169_tree::MetadataPath;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(decoded) = percent_encoding::percent_decode_str(raw).decode_utf8() else {
        return;
    };
    if let Ok(path) = MetadataPath::parse(&decoded) {
        let _ = path.is_token_request();
        if let MetadataPath::Item(segments) = &path {
            assert!(segments.len() <= meta169_tree::path::MAX_SEGMENTS + 1);
            assert!(segments
                .iter()
                .all(|s| !s.is_empty() && *s != "." && *s != ".."));
        }
    }
});
