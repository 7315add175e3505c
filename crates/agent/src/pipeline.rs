//! HTTP/1.1 pipelining of bodiless GETs to the metadata API.
//!
//! On one compute node many guests ask at once (a boot storm), and most of
//! their requests are GETs that meta169 serve answers from memory in
//! microseconds. Sent one per connection round trip, each costs the agent
//! a write and a read on the upstream socket, and the API the same; on
//! loopback and on a real NIC that per-call kernel work is most of a
//! request's cost. A lane writes every request queued since its last write
//! in one call and reads the answers, in order, as they come, so a batch
//! of guests costs one write and (often) one read on each side.
//!
//! hyper's client does not pipeline, and no maintained crate does, so the
//! lane is written here; it is deliberately narrow: GET without a body,
//! answers framed by `Content-Length` (which meta169 serve always sends).
//! Anything else (a chunked or unframed answer, a connection closed with
//! requests outstanding) ends the lane and hands the unanswered requests
//! back to the caller, which sends them again on a plain connection: a GET
//! may be repeated.

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderValue, StatusCode};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Requests outstanding on one lane before another lane is opened: a slow
/// answer delays at most this many others.
pub const MAX_DEPTH: usize = 8;
/// Lanes (connections) to one upstream.
pub const MAX_LANES: usize = 64;
/// Largest answer head read.
const MAX_ANSWER_HEAD_BYTES: usize = 64 * 1024;
/// Answer headers parsed.
const MAX_ANSWER_HEADERS: usize = 64;
/// Shortest period between checks for overdue answers.
const MIN_CHECK_PERIOD: Duration = Duration::from_millis(100);

/// Status, `Content-Type` and body of an answer.
pub type Answer = (StatusCode, Option<HeaderValue>, Bytes);

/// Why a pipelined request has no answer.
#[derive(Debug, thiserror::Error)]
pub enum LaneError {
    /// The upstream could not be reached.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// Not answered on this lane (it ended first); the request may be sent
    /// again elsewhere.
    #[error("not answered: {0}")]
    Unanswered(String),
    /// The answer could not be read.
    #[error("unreadable answer: {0}")]
    Unreadable(String),
}

struct Job {
    head: Bytes,
    reply: oneshot::Sender<Result<Answer, LaneError>>,
}

struct Lane {
    jobs: mpsc::UnboundedSender<Job>,
    outstanding: Arc<AtomicUsize>,
    ended: Arc<AtomicBool>,
}

/// Pipelined lanes to one upstream `host:port`.
pub struct Pipeline {
    authority: String,
    connect_timeout: Duration,
    lanes: Mutex<Vec<Lane>>,
    /// Cleared when the upstream answers in a way lanes cannot follow.
    usable: AtomicBool,
    max_body_bytes: usize,
    answer_timeout: Duration,
}

impl Pipeline {
    /// Lanes to `authority`; one whose oldest request has waited
    /// `answer_timeout` for its answer is given up (a frozen API must not
    /// hold requests, nor the memory of their queue, forever).
    pub fn new(authority: &str, max_body_bytes: usize, answer_timeout: Duration) -> Pipeline {
        Pipeline {
            authority: authority.to_string(),
            connect_timeout: Duration::from_secs(5),
            lanes: Mutex::new(Vec::new()),
            usable: AtomicBool::new(true),
            max_body_bytes,
            answer_timeout,
        }
    }

    /// False once the upstream answered without `Content-Length`; callers
    /// then use plain connections.
    pub fn usable(&self) -> bool {
        self.usable.load(Ordering::Relaxed)
    }

    /// The upstream's `host:port`.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// Send a GET whose whole head (request line, headers, blank line) is
    /// `head`, and wait for its answer. Must be called inside a tokio
    /// runtime (a new lane is a task).
    pub async fn get(self: &Arc<Self>, head: Bytes) -> Result<Answer, LaneError> {
        let (reply, answer) = oneshot::channel();
        self.submit(Job { head, reply });
        answer
            .await
            .unwrap_or_else(|_| Err(LaneError::Unanswered("the lane ended".into())))
    }

    fn submit(self: &Arc<Self>, job: Job) {
        let Ok(mut lanes) = self.lanes.lock() else {
            let _ = job
                .reply
                .send(Err(LaneError::Unanswered("lane table poisoned".into())));
            return;
        };
        lanes.retain(|lane| !lane.ended.load(Ordering::Relaxed));
        // The first lane with room: load gathers on few connections, so
        // batches are large, and spreads once they are deep.
        let chosen = lanes
            .iter()
            .position(|lane| lane.outstanding.load(Ordering::Relaxed) < MAX_DEPTH)
            .or_else(|| {
                (lanes.len() >= MAX_LANES)
                    .then(|| {
                        (0..lanes.len())
                            .min_by_key(|&i| lanes[i].outstanding.load(Ordering::Relaxed))
                    })
                    .flatten()
            });
        let index = match chosen {
            Some(index) => index,
            None => {
                lanes.push(self.open_lane());
                lanes.len() - 1
            }
        };
        let lane = &lanes[index];
        lane.outstanding.fetch_add(1, Ordering::Relaxed);
        if let Err(mpsc::error::SendError(job)) = lane.jobs.send(job) {
            lane.outstanding.fetch_sub(1, Ordering::Relaxed);
            let _ = job
                .reply
                .send(Err(LaneError::Unanswered("the lane ended".into())));
        }
    }

    fn open_lane(self: &Arc<Self>) -> Lane {
        let (jobs, queue) = mpsc::unbounded_channel();
        let lane = Lane {
            jobs,
            outstanding: Arc::new(AtomicUsize::new(0)),
            ended: Arc::new(AtomicBool::new(false)),
        };
        let (outstanding, ended) = (lane.outstanding.clone(), lane.ended.clone());
        let pipeline = Arc::downgrade(self);
        let (authority, connect_timeout) = (self.authority.clone(), self.connect_timeout);
        let (max_body, answer_timeout) = (self.max_body_bytes, self.answer_timeout);
        tokio::spawn(async move {
            let mut run = LaneRun {
                queue,
                waiting: VecDeque::new(),
                outstanding,
                max_body,
                answer_timeout,
            };
            let end = run.drive(&authority, connect_timeout).await;
            ended.store(true, Ordering::Relaxed);
            let why = match end {
                Ok(()) => "the lane closed".to_string(),
                Err(LaneEnd::Connect(why)) => {
                    run.fail_all(|| LaneError::Connect(why.clone()));
                    return;
                }
                Err(LaneEnd::Unframed) => {
                    if let Some(pipeline) = pipeline.upgrade() {
                        if pipeline.usable.swap(false, Ordering::Relaxed) {
                            tracing::info!(upstream = %authority, "the metadata API answered without Content-Length; pipelining switched off");
                        }
                    }
                    "the answer had no Content-Length".to_string()
                }
                Err(LaneEnd::Broken(why)) => why,
            };
            run.fail_all(|| LaneError::Unanswered(why.clone()));
        });
        lane
    }
}

enum LaneEnd {
    Connect(String),
    Broken(String),
    Unframed,
}

struct LaneRun {
    queue: mpsc::UnboundedReceiver<Job>,
    /// Repliers of requests written and not yet answered, with when they
    /// were written, oldest first.
    waiting: VecDeque<(Instant, oneshot::Sender<Result<Answer, LaneError>>)>,
    outstanding: Arc<AtomicUsize>,
    max_body: usize,
    answer_timeout: Duration,
}

impl LaneRun {
    async fn drive(&mut self, authority: &str, connect_timeout: Duration) -> Result<(), LaneEnd> {
        let stream =
            tokio::time::timeout(connect_timeout, tokio::net::TcpStream::connect(authority))
                .await
                .map_err(|_| LaneEnd::Connect("connect timed out".into()))?
                .map_err(|e| LaneEnd::Connect(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let (mut reader, mut writer) = stream.into_split();
        let mut received = BytesMut::with_capacity(16 * 1024);
        let mut batch = BytesMut::with_capacity(4 * 1024);
        // One timer for the lane's life, checked a few times per timeout,
        // rather than a timer per request or per batch.
        let mut check = tokio::time::interval((self.answer_timeout / 4).max(MIN_CHECK_PERIOD));
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = check.tick(), if !self.waiting.is_empty() => {
                    let overdue = self
                        .waiting
                        .front()
                        .is_some_and(|(sent, _)| sent.elapsed() >= self.answer_timeout);
                    if overdue {
                        return Err(LaneEnd::Broken(format!(
                            "the metadata API did not answer in {:?}",
                            self.answer_timeout
                        )));
                    }
                }
                job = self.queue.recv() => {
                    let Some(job) = job else { return Ok(()) };
                    self.take(job, &mut batch);
                    // Everything queued meanwhile goes in the same write.
                    while let Ok(job) = self.queue.try_recv() {
                        self.take(job, &mut batch);
                    }
                    writer
                        .write_all(&batch)
                        .await
                        .map_err(|e| LaneEnd::Broken(format!("writing to the metadata API: {e}")))?;
                    batch.clear();
                }
                read = reader.read_buf(&mut received) => {
                    let count = read.map_err(|e| LaneEnd::Broken(format!("reading from the metadata API: {e}")))?;
                    if count == 0 {
                        if self.waiting.is_empty() {
                            return Ok(());
                        }
                        return Err(LaneEnd::Broken("the metadata API closed the connection".into()));
                    }
                    while let Some((answer, close)) = self.next_answer(&mut received)? {
                        self.answer(Ok(answer));
                        if close {
                            return Err(LaneEnd::Broken("the metadata API closed the connection".into()));
                        }
                    }
                }
            }
        }
    }

    fn take(&mut self, job: Job, batch: &mut BytesMut) {
        batch.extend_from_slice(&job.head);
        self.waiting.push_back((Instant::now(), job.reply));
    }

    fn answer(&mut self, result: Result<Answer, LaneError>) {
        if let Some((_, reply)) = self.waiting.pop_front() {
            self.outstanding.fetch_sub(1, Ordering::Relaxed);
            // The guest may have given up (timeout): nothing to do then.
            let _ = reply.send(result);
        }
    }

    /// One complete answer off the front of `received`, and whether the
    /// API closes the connection after it.
    fn next_answer(&mut self, received: &mut BytesMut) -> Result<Option<(Answer, bool)>, LaneEnd> {
        if self.waiting.is_empty() {
            if received.is_empty() {
                return Ok(None);
            }
            return Err(LaneEnd::Broken(
                "the metadata API sent data nobody asked for".into(),
            ));
        }
        let parsed = match parse_answer(received, self.max_body) {
            Ok(parsed) => parsed,
            Err(AnswerError::Unframed) => return Err(LaneEnd::Unframed),
            Err(AnswerError::Malformed(why)) => {
                self.answer(Err(LaneError::Unreadable(why.clone())));
                return Err(LaneEnd::Broken(why));
            }
        };
        Ok(parsed.map(|(answer, consumed, close)| {
            received.advance(consumed);
            (answer, close)
        }))
    }

    fn fail_all(&mut self, error: impl Fn() -> LaneError) {
        self.queue.close();
        while let Ok(job) = self.queue.try_recv() {
            self.waiting.push_back((Instant::now(), job.reply));
        }
        while !self.waiting.is_empty() {
            self.answer(Err(error()));
        }
    }
}

#[derive(Debug)]
enum AnswerError {
    /// No `Content-Length` (chunked or read to the end).
    Unframed,
    Malformed(String),
}

/// Parse one answer at the start of `buffer`: the answer, the bytes it
/// took, and whether the connection closes after it; `None` while it is
/// incomplete.
fn parse_answer(
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
        return Ok(Some((
            (status, content_type, body),
            body_start + body_length,
            close,
        )));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 1 << 20;

    #[test]
    fn answers_are_split_by_content_length() {
        let two = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 3\r\n\r\nabcHTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";
        let ((status, ct, body), used, close) = parse_answer(two, LIMIT).unwrap().unwrap();
        assert_eq!(
            (status.as_u16(), &body[..], close),
            (200, &b"abc"[..], false)
        );
        assert_eq!(ct.unwrap(), "text/plain");
        let ((status, _, body), rest, _) = parse_answer(&two[used..], LIMIT).unwrap().unwrap();
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
        let ((status, _, body), used, close) = parse_answer(text, LIMIT).unwrap().unwrap();
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
