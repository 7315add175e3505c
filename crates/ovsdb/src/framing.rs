//! Splitting an OVSDB stream into messages. JSON-RPC over OVSDB has no
//! framing: messages are JSON objects one after another. The framer tracks
//! nesting depth and strings as bytes arrive, so it knows where a message
//! ends without parsing it, and each message is parsed once when it is
//! whole. (Re-parsing the buffer from its start after every read would be
//! quadratic in the size of a message, and the first snapshot of a large
//! Southbound is one message of many megabytes.)
//!
//! Written here because serde_json's stream deserializer can only restart
//! from the beginning of an incomplete value.

use serde_json::Value;

/// Why the stream cannot be read further.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// A message is larger than the limit.
    #[error("OVSDB message larger than {0} bytes")]
    TooLarge(usize),
    /// A message is not a JSON object, or not valid JSON.
    #[error("OVSDB server sent malformed JSON: {0}")]
    Malformed(String),
}

/// The messages in a byte stream, one at a time.
#[derive(Debug)]
pub struct Framer {
    buffer: Vec<u8>,
    /// Start of the message being framed (everything before is consumed).
    start: usize,
    /// Bytes of it already scanned.
    scanned: usize,
    depth: usize,
    in_string: bool,
    escaped: bool,
    max_message: usize,
    /// Bytes looked at by the scanner, over the framer's life.
    examined: u64,
}

impl Framer {
    pub fn new(max_message: usize) -> Framer {
        Framer {
            buffer: Vec::new(),
            start: 0,
            scanned: 0,
            depth: 0,
            in_string: false,
            escaped: false,
            max_message,
            examined: 0,
        }
    }

    /// Append bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        // Drop consumed bytes once they are most of the buffer, so a long
        // session does not grow it and compaction stays linear.
        if self.start > 0 && self.start >= self.buffer.len() / 2 {
            self.buffer.drain(..self.start);
            self.scanned -= self.start;
            self.start = 0;
        }
        self.buffer.extend_from_slice(bytes);
    }

    /// Bytes the scanner has looked at so far (each byte once).
    pub fn examined(&self) -> u64 {
        self.examined
    }

    /// Scan on from `scanned`: the end of the message, if it is in the
    /// buffer (or the byte found where a message should start), and the
    /// bytes looked at. Inside strings, memchr skips to the next quote or
    /// backslash: most of an OVSDB message is string contents.
    fn scan(&mut self) -> (Result<Option<usize>, u8>, u64) {
        let bytes = &self.buffer;
        let (mut depth, mut in_string, mut escaped) = (self.depth, self.in_string, self.escaped);
        let mut at = self.scanned;
        let mut end = Ok(None);
        while at < bytes.len() {
            if in_string {
                if escaped {
                    escaped = false;
                    at += 1;
                    continue;
                }
                match memchr::memchr2(b'"', b'\\', &bytes[at..]) {
                    None => at = bytes.len(),
                    Some(offset) => {
                        at += offset;
                        if bytes[at] == b'\\' {
                            escaped = true;
                        } else {
                            in_string = false;
                        }
                        at += 1;
                    }
                }
                continue;
            }
            match bytes[at] {
                b'"' if depth > 0 => in_string = true,
                b'{' | b'[' => depth += 1,
                b'}' | b']' if depth > 0 => {
                    depth -= 1;
                    if depth == 0 {
                        at += 1;
                        end = Ok(Some(at));
                        break;
                    }
                }
                byte if depth == 0 => {
                    end = Err(byte);
                    break;
                }
                _ => {}
            }
            at += 1;
        }
        let examined = (at - self.scanned) as u64;
        (self.depth, self.in_string, self.escaped) = (depth, in_string, escaped);
        if !matches!(end, Ok(Some(_))) {
            self.scanned = at;
        }
        (end, examined)
    }

    /// The next whole message, if one has arrived.
    pub fn next_message(&mut self) -> Result<Option<Value>, FrameError> {
        // Whitespace between messages.
        while self.depth == 0
            && self.scanned < self.buffer.len()
            && self.buffer[self.scanned].is_ascii_whitespace()
        {
            self.scanned += 1;
            self.start = self.scanned;
            self.examined += 1;
        }
        let (end, examined) = self.scan();
        self.examined += examined;
        let end = match end {
            Ok(end) => end,
            Err(byte) => {
                return Err(FrameError::Malformed(format!(
                    "unexpected byte {:?} between messages",
                    char::from(byte)
                )))
            }
        };
        let Some(end) = end else {
            self.scanned = self.buffer.len();
            if self.buffer.len() - self.start > self.max_message {
                return Err(FrameError::TooLarge(self.max_message));
            }
            return Ok(None);
        };
        if end - self.start > self.max_message {
            return Err(FrameError::TooLarge(self.max_message));
        }
        let message = serde_json::from_slice::<Value>(&self.buffer[self.start..end])
            .map_err(|e| FrameError::Malformed(e.to_string()))?;
        self.start = end;
        self.scanned = end;
        if !message.is_object() {
            return Err(FrameError::Malformed(
                "a message is not a JSON object".into(),
            ));
        }
        Ok(Some(message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn all(framer: &mut Framer) -> Vec<Value> {
        let mut out = Vec::new();
        while let Some(m) = framer.next_message().unwrap() {
            out.push(m);
        }
        out
    }

    #[test]
    fn messages_split_anywhere_are_framed() {
        let messages = [
            json!({"id": 1, "result": {"tricky": "}]{[\"\\", "more": [1, [2, {"x": "y"}]]}}),
            json!({"method": "echo", "params": [], "id": "echo"}),
            json!({"id": 2, "result": "a\\\"b{"}),
        ];
        let text: String = messages.iter().map(|m| format!("{m}\n ")).collect();
        for cut in 1..text.len() {
            let mut framer = Framer::new(1 << 20);
            framer.push(&text.as_bytes()[..cut]);
            let mut got = all(&mut framer);
            framer.push(&text.as_bytes()[cut..]);
            got.extend(all(&mut framer));
            assert_eq!(got, messages, "cut at {cut}");
        }
    }

    #[test]
    fn a_large_message_in_small_chunks_is_scanned_once() {
        // A snapshot-like message of several megabytes.
        let rows: serde_json::Map<String, Value> = (0..40_000)
            .map(|i| {
                (
                    format!("{i:08x}-0000-4000-8000-000000000000"),
                    json!({"initial": {"logical_port": format!("port-{i} \"quoted\" {{brace}}"), "mac": ["set", [format!("fa:16:3e:00:{:02x}:{:02x} 10.0.{}.{}", i / 256 % 256, i % 256, i / 250 % 250, i % 250)]]}}),
                )
            })
            .collect();
        let message =
            json!({"method": "update2", "params": ["m", {"Port_Binding": rows}], "id": null});
        let bytes = message.to_string().into_bytes();
        assert!(bytes.len() > 4 * 1024 * 1024, "{}", bytes.len());
        let mut framer = Framer::new(256 << 20);
        let mut got = Vec::new();
        for chunk in bytes.chunks(4096) {
            framer.push(chunk);
            got.extend(all(&mut framer));
        }
        assert_eq!(got, [message]);
        assert_eq!(
            framer.examined(),
            bytes.len() as u64,
            "every byte looked at once"
        );
    }

    #[test]
    fn bad_streams_are_refused() {
        let mut framer = Framer::new(16);
        framer.push(br#"{"a": "0123456789abcdef"}"#);
        assert_eq!(framer.next_message(), Err(FrameError::TooLarge(16)));
        let mut framer = Framer::new(1 << 20);
        framer.push(b"42 ");
        assert!(matches!(
            framer.next_message(),
            Err(FrameError::Malformed(_))
        ));
        let mut framer = Framer::new(1 << 20);
        framer.push(b"[1, 2]");
        assert!(matches!(
            framer.next_message(),
            Err(FrameError::Malformed(_))
        ));
        let mut framer = Framer::new(1 << 20);
        framer.push(b"{\"a\": tru}");
        assert!(matches!(
            framer.next_message(),
            Err(FrameError::Malformed(_))
        ));
        // An incomplete message over the limit is refused before it ends.
        let mut framer = Framer::new(8);
        framer.push(b"{\"aaaaaaaaaaaa");
        assert_eq!(framer.next_message(), Err(FrameError::TooLarge(8)));
    }
}
