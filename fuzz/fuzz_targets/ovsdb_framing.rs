//! OVSDB's JSON-RPC framing: a stream of JSON texts cut at arbitrary
//! points (the first byte of the input chooses the read size).
#![no_main]

use libfuzzer_sys::fuzz_target;
use meta169_ovsdb::framing::Framer;

/// Largest message the framer accepts here.
const MAX_MESSAGE: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&step, stream)) = data.split_first() else {
        return;
    };
    let step = usize::from(step).max(1);
    let mut framer = Framer::new(MAX_MESSAGE);
    for chunk in stream.chunks(step) {
        framer.push(chunk);
        loop {
            match framer.next_message() {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
