//! The header read timeout, kept per connection instead of per request.
//!
//! A client gets [`ServerLimits::header_read_timeout`] from the moment the
//! server waits for its next request (connection accepted, or previous
//! answer handed over) until that request's head is complete; an idle
//! keep-alive connection runs out the same way. hyper's own
//! `header_read_timeout` does this by arming and dropping a boxed timer on
//! every request, which costs about 1,500 instructions of a cached request's
//! 19,000 (callgrind). Here one timer lives as long as the connection and is
//! moved lazily: finishing a request only records when the wait started
//! (an atomic store), and the timer is re-armed only when it fires early,
//! at most once per timeout. Once it holds the connection task's waker it
//! is not polled again until it fires.
//!
//! The wait's start is read off the coarse monotonic clock: a fine clock
//! read cost ~16 ns on every request (a virtual machine's vDSO), the
//! coarse one ~4 ns. It lags by at most one kernel tick (1-10 ms), so a
//! client may be cut that much before its timeout (seconds) is up.
//!
//! The handler side marks requests busy ([`HeadClock::begin`] /
//! [`HeadClock::end`]): while a handler runs, the clock does not count (a
//! slow upstream is the upstream timeout's business, a slow body the body
//! timeout's).
//!
//! [`ServerLimits::header_read_timeout`]: crate::ServerLimits::header_read_timeout

use hyper::rt::{Read, ReadBufCursor, Write};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// The coarse monotonic clock: time since boot, to the last kernel tick.
fn coarse_now() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC_COARSE)
        .map(Duration::from)
        // Linux always has this clock; were it missing, every wait would
        // look as if it had just started, and a head timeout would then
        // be enforced from the connection's last answer written.
        .unwrap_or_default()
}

/// When a connection's wait for a request head started, and whether a
/// request is being handled; shared by the connection's I/O and its handler.
#[derive(Debug)]
pub(crate) struct HeadClock {
    /// When the connection opened, on the coarse clock.
    opened: Duration,
    /// Nanoseconds after `opened` when the current wait started.
    waiting_since: AtomicU64,
    busy: AtomicBool,
    timed_out: AtomicBool,
    /// Requests handed to the handler so far (what [`crate::batch`]
    /// compares with the heads it has seen read).
    requests: AtomicU64,
}

impl HeadClock {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(HeadClock {
            opened: coarse_now(),
            waiting_since: AtomicU64::new(0),
            busy: AtomicBool::new(false),
            timed_out: AtomicBool::new(false),
            requests: AtomicU64::new(0),
        })
    }

    /// A request head arrived: the handler runs, the clock stops.
    pub(crate) fn begin(&self) {
        self.busy.store(true, Ordering::Relaxed);
        // Only the connection's own service begins requests: a load and a
        // store, not a locked add.
        let begun = self.requests.load(Ordering::Relaxed);
        self.requests.store(begun + 1, Ordering::Relaxed);
    }

    /// Whether a handler is running.
    pub(crate) fn busy(&self) -> bool {
        self.busy.load(Ordering::Relaxed)
    }

    /// Requests begun so far.
    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The handler answered: the wait for the next head starts now.
    pub(crate) fn end(&self) {
        let since = coarse_now().saturating_sub(self.opened).as_nanos();
        self.waiting_since
            .store(u64::try_from(since).unwrap_or(u64::MAX), Ordering::Relaxed);
        self.busy.store(false, Ordering::Relaxed);
    }

    /// Whether this connection was closed for taking too long over a head.
    pub(crate) fn timed_out(&self) -> bool {
        self.timed_out.load(Ordering::Relaxed)
    }

    /// How much of `timeout` is left of the current wait (on the coarse
    /// clock); zero once it is up.
    fn left(&self, timeout: Duration) -> Duration {
        let since = self.opened + Duration::from_nanos(self.waiting_since.load(Ordering::Relaxed));
        timeout.saturating_sub(coarse_now().saturating_sub(since))
    }
}

/// A connection's I/O with the head clock enforced on reads.
pub(crate) struct HeadTimeout<I> {
    inner: I,
    clock: Arc<HeadClock>,
    timeout: Duration,
    /// Armed at or before the deadline; re-armed when it fires early.
    timer: Pin<Box<Sleep>>,
    /// The timer was found pending, so it holds this task's waker, and
    /// keeps it until it fires (a connection is polled by one task).
    registered: bool,
}

impl<I> HeadTimeout<I> {
    pub(crate) fn new(inner: I, clock: Arc<HeadClock>, timeout: Duration) -> Self {
        let timer = Box::pin(tokio::time::sleep(clock.left(timeout)));
        HeadTimeout {
            inner,
            clock,
            timeout,
            timer,
            registered: false,
        }
    }

    /// After writing (an answer is going out, so the wait for the next head
    /// has started): keep the timer registered with this task. hyper may
    /// not read again before going idle, and then only the timer wakes the
    /// task to find the client out of time.
    fn watch(&mut self, cx: &mut Context<'_>) {
        if self.out_of_time(cx) {
            cx.waker().wake_by_ref();
        }
    }

    /// With no data to read: is the client out of time? Keeps the timer
    /// registered with this task so an idle connection is woken to be cut.
    fn out_of_time(&mut self, cx: &mut Context<'_>) -> bool {
        if self.clock.busy() {
            return false;
        }
        // Still holding this task's waker: when it fires it wakes the
        // task, whose next read comes here and finds it elapsed. Polling
        // it on every request only registered the same waker again.
        if self.registered && !self.timer.is_elapsed() {
            return false;
        }
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                self.registered = true;
                return false;
            }
            self.registered = false;
            let left = self.clock.left(self.timeout);
            if left.is_zero() {
                self.clock.timed_out.store(true, Ordering::Relaxed);
                return true;
            }
            // Fired for an earlier wait: move it to this one's deadline.
            self.timer.as_mut().reset(Instant::now() + left);
        }
    }
}

impl<I: Read + Unpin> Read for HeadTimeout<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Pending if this.out_of_time(cx) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "request head not received in time",
            ))),
            other => other,
        }
    }
}

impl<I: Write + Unpin> Write for HeadTimeout<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        this.watch(cx);
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        this.watch(cx);
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
