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
//! may be repeated. Answers are read by [`super::answer`].

use super::answer::{parse_answer, AnswerError};
use super::Answer;
use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderName, HeaderValue};
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
/// Shortest period between checks for overdue answers.
const MIN_CHECK_PERIOD: Duration = Duration::from_millis(100);
/// Time allowed to connect a lane.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// First sizes of a lane's read and write buffers (they grow as needed).
const READ_BUFFER_BYTES: usize = 16 * 1024;
const WRITE_BUFFER_BYTES: usize = 4 * 1024;
/// First size of a request head.
const HEAD_BYTES: usize = 256;

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
            connect_timeout: CONNECT_TIMEOUT,
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
        let mut received = BytesMut::with_capacity(READ_BUFFER_BYTES);
        let mut batch = BytesMut::with_capacity(WRITE_BUFFER_BYTES);
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

/// The head of a bodiless GET of `target` as written on the wire.
pub fn request_head(target: &str, authority: &str, headers: &[(HeaderName, HeaderValue)]) -> Bytes {
    let mut head = BytesMut::with_capacity(HEAD_BYTES);
    head.extend_from_slice(b"GET ");
    head.extend_from_slice(target.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    head.extend_from_slice(authority.as_bytes());
    for (name, value) in headers {
        head.extend_from_slice(b"\r\n");
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
    }
    head.extend_from_slice(b"\r\n\r\n");
    head.freeze()
}
