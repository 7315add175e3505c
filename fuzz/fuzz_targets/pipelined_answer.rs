//! The agent's parser of pipelined answers from the metadata API.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meta169_agent::upstream::answer::parse_answer;

/// The largest body the fuzzer's answers may claim.
const MAX_BODY: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    // Each answer consumes at least its head: the loop ends.
    while let Ok(Some((_answer, used, close))) = parse_answer(rest, MAX_BODY) {
        assert!(used > 0 && used <= rest.len());
        rest = &rest[used..];
        if close {
            break;
        }
    }
});
