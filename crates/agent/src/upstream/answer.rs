//! Reading pipelined answers off a byte stream: one answer at a time,
//! framed by `Content-Length` (which meta169 serve always sends). Written
//! with `httparse` because hyper's client does not pipeline (see
//! [`super::pipeline`]).

use super::Answer;
use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use meta169_http::headers::METADATA_TOKEN_TTL;

/// Largest answer head read.
pub const MAX_ANSWER_HEAD_BYTES: usize = 64 * 1024;
/// Answer headers parsed.
const MAX_ANSWER_HEADERS: usize = 64;

/// Why an answer cannot be read off the stream.
#[derive(Debug)]
pub enum AnswerError {
    /// No `Content-Length` (chunked or read to the end).
    Unframed,
    Malformed(String),
}

/// Parse one answer at the start of `buffer`: the answer, the bytes it
/// took, and whether the connection closes after it; `None` while it is
/// incomplete.
pub fn parse_answer(
    buffer: &[u8],
    max_body: usize,
) -> Result<Option<(Answer, usize, bool)>, AnswerError> {
    let mut start = 0;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_ANSWER_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        let head_len = match response.parse(&buffer[start..]) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => {
                if buffer.len() - start > MAX_ANSWER_HEAD_BYTES {
                    return Err(AnswerError::Malformed(format!(
                        "answer head larger than {MAX_ANSWER_HEAD_BYTES} bytes"
                    )));
                }
                return Ok(None);
            }
            Err(e) => return Err(AnswerError::Malformed(format!("bad answer head: {e}"))),
        };
        let code = response.code.unwrap_or(0);
        // An interim answer (100 Continue and the like) precedes the real one.
        if (100..200).contains(&code) {
            start += head_len;
            continue;
        }
        let status = StatusCode::from_u16(code)
            .map_err(|_| AnswerError::Malformed(format!("bad status {code}")))?;
        let mut content_length: Option<usize> = None;
        let mut content_type = None;
        let mut token_ttl = None;
        let mut close = response.version == Some(0);
        for header in response.headers.iter() {
            if header.name.eq_ignore_ascii_case("content-length") {
                let length = std::str::from_utf8(header.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .ok_or_else(|| AnswerError::Malformed("bad Content-Length".into()))?;
                if content_length.is_some_and(|seen| seen != length) {
                    return Err(AnswerError::Malformed(
                        "two different Content-Length headers".into(),
                    ));
                }
                content_length = Some(length);
            } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(AnswerError::Unframed);
            } else if header.name.eq_ignore_ascii_case("content-type") {
                content_type = HeaderValue::from_bytes(header.value).ok();
            } else if header
                .name
                .eq_ignore_ascii_case(METADATA_TOKEN_TTL.as_str())
            {
                token_ttl = HeaderValue::from_bytes(header.value).ok();
            } else if header.name.eq_ignore_ascii_case("connection") {
                let value = String::from_utf8_lossy(header.value).to_ascii_lowercase();
                if value.split(',').any(|t| t.trim() == "close") {
                    close = true;
                } else if value.split(',').any(|t| t.trim() == "keep-alive") {
                    close = false;
                }
            }
        }
        let body_length = if code == 204 || code == 304 {
            0
        } else {
            content_length.ok_or(AnswerError::Unframed)?
        };
        if body_length > max_body {
            return Err(AnswerError::Malformed(format!(
                "answer body of {body_length} bytes is over the {max_body}-byte limit"
            )));
        }
        let body_start = start + head_len;
        if buffer.len() < body_start + body_length {
            return Ok(None);
        }
        let body = Bytes::copy_from_slice(&buffer[body_start..body_start + body_length]);
        let answer = Answer {
            status,
            content_type,
            token_ttl,
            body,
        };
        return Ok(Some((answer, body_start + body_length, close)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 1 << 20;

    #[test]
    fn answers_are_split_by_content_length() {
        let two = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\ncontent-length: 3\r\n\r\nabcHTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";
        let (
            Answer {
                status,
                content_type: ct,
                token_ttl,
                body,
            },
            used,
            close,
        ) = parse_answer(two, LIMIT).unwrap().unwrap();
        assert_eq!(
            (status.as_u16(), &body[..], close),
            (200, &b"abc"[..], false)
        );
        assert_eq!(token_ttl.as_ref().map(|v| v.as_bytes()), Some(&b"60"[..]));
        assert_eq!(ct.unwrap(), "text/plain");
        let (Answer { status, body, .. }, rest, _) =
            parse_answer(&two[used..], LIMIT).unwrap().unwrap();
        assert_eq!(
            (status.as_u16(), body.len(), used + rest),
            (404, 0, two.len())
        );
    }

    #[test]
    fn partial_answers_wait_for_more() {
        let full = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
        for cut in 0..full.len() {
            assert!(
                parse_answer(&full[..cut], LIMIT).unwrap().is_none(),
                "cut at {cut}"
            );
        }
        assert!(parse_answer(full, LIMIT).unwrap().is_some());
    }

    #[test]
    fn interim_answers_are_skipped_and_close_is_seen() {
        let text = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nConnection: close\r\ncontent-length: 2\r\n\r\nok";
        let (Answer { status, body, .. }, used, close) =
            parse_answer(text, LIMIT).unwrap().unwrap();
        assert_eq!(
            (status.as_u16(), &body[..], used, close),
            (200, &b"ok"[..], text.len(), true)
        );
        let old = b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert!(parse_answer(old, LIMIT).unwrap().unwrap().2);
    }

    #[test]
    fn unframed_and_malformed_answers_are_refused() {
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n";
        assert!(matches!(
            parse_answer(chunked, LIMIT),
            Err(AnswerError::Unframed)
        ));
        let unframed = b"HTTP/1.1 200 OK\r\n\r\nbody";
        assert!(matches!(
            parse_answer(unframed, LIMIT),
            Err(AnswerError::Unframed)
        ));
        for bad in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 99999999\r\n\r\n",
            b"garbage\r\n\r\n",
        ] {
            assert!(
                matches!(parse_answer(bad, LIMIT), Err(AnswerError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let endless = vec![b'a'; MAX_ANSWER_HEAD_BYTES + 10];
        let mut head = b"HTTP/1.1 200 OK\r\nx: ".to_vec();
        head.extend(endless);
        assert!(matches!(
            parse_answer(&head, LIMIT),
            Err(AnswerError::Malformed(_))
        ));
    }
}
