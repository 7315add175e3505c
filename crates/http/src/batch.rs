//! Answers to pipelined requests written together, for listeners whose
//! callers are proxies that pipeline (meta169's agent): one `write` for a
//! batch instead of one per answer.
//!
//! hyper's own `pipeline_flush` holds answers in hyper's buffer while its
//! read buffer is not empty, and drops them when the connection then ends
//! with an error: three valid requests followed by a malformed one in the
//! same write got no answer at all. Here the held answers are this
//! layer's, and go out before the connection is shut down. An answer is
//! held while a complete request head already read is still unanswered
//! (heads are counted by their blank line as bytes are read; a request
//! head begun is counted by the handler side through [`HeadClock`]); the
//! last of a batch sends them all. Anything held also goes out once there
//! is nothing more to read and no handler is running (or one poll later,
//! for a slow handler); the count is corrected then, so a miscount (a body
//! holding a blank line) costs a wake-up, never an answer.

use crate::head_timeout::HeadClock;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The end of a request head.
const BLANK_LINE: &[u8] = b"\r\n\r\n";
/// Bytes of one read kept to find a blank line split with the next.
const KEEP: usize = BLANK_LINE.len() - 1;

/// The searcher for [`BLANK_LINE`], built once: building one per read
/// cost more than the search.
fn blank_lines() -> &'static memchr::memmem::Finder<'static> {
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(BLANK_LINE));
    &FINDER
}

/// A vectorised searcher for [`BLANK_LINE`] keyed on its middle `\n\r`,
/// where the CPU has one. In a request head that pair occurs only in the
/// blank line (every other line end is followed by a header name), so
/// nearly every candidate is a match; memmem's own choice of pair stops
/// at every line end, and cost more than the rest of the read.
#[cfg(target_arch = "x86_64")]
fn blank_line_pairs() -> Option<&'static memchr::arch::x86_64::avx2::packedpair::Finder> {
    use memchr::arch::{all::packedpair::Pair, x86_64::avx2::packedpair::Finder};
    static FINDER: std::sync::LazyLock<Option<Finder>> = std::sync::LazyLock::new(|| {
        Finder::with_pair(BLANK_LINE, Pair::with_indices(BLANK_LINE, 1, 2)?)
    });
    FINDER.as_ref()
}

/// Blank lines in `data`, counted without overlaps.
fn count_blank_lines(data: &[u8]) -> usize {
    #[cfg(target_arch = "x86_64")]
    if let Some(pairs) = blank_line_pairs() {
        let (mut count, mut at) = (0, 0);
        while data.len() - at >= pairs.min_haystack_len() {
            match pairs.find(&data[at..], BLANK_LINE) {
                Some(found) => {
                    count += 1;
                    at += found + BLANK_LINE.len();
                }
                None => return count,
            }
        }
        // Most reads end with the blank line just found: nothing is left
        // to search, and setting up the search would cost more than it.
        if data.len() - at < BLANK_LINE.len() {
            return count;
        }
        return count + blank_lines().find_iter(&data[at..]).count();
    }
    blank_lines().find_iter(data).count()
}
/// Answers held at most; past this they go out without waiting for the
/// rest of the batch.
pub const MAX_HELD_BYTES: usize = 256 * 1024;

/// A connection's stream with answers to pipelined requests batched.
pub(crate) struct Batch<S> {
    inner: S,
    clock: Arc<HeadClock>,
    /// Request heads read so far.
    heads_read: u64,
    /// The last bytes read, for a blank line split between two reads.
    last: [u8; KEEP],
    held: Vec<u8>,
    /// Held answers already waited one poll for a busy handler.
    waited: bool,
}

impl<S> Batch<S> {
    pub(crate) fn new(inner: S, clock: Arc<HeadClock>) -> Self {
        Batch {
            inner,
            clock,
            heads_read: 0,
            last: [0; KEEP],
            held: Vec::new(),
            waited: false,
        }
    }

    /// Is an answer to another request already read on its way?
    fn more_coming(&self) -> bool {
        self.heads_read > self.clock.requests()
    }

    fn count_heads(&mut self, data: &[u8]) {
        let edge = data.len().min(KEEP);
        // A blank line split between the previous read (its final three
        // bytes, `last`) and this one; its end would begin this read with
        // a line end. A request line does not, so most reads skip this.
        let split = if matches!(data.first(), Some(b'\r' | b'\n')) {
            let mut joined = [0u8; 2 * KEEP];
            joined[..KEEP].copy_from_slice(&self.last);
            joined[KEEP..KEEP + edge].copy_from_slice(&data[..edge]);
            (0..KEEP)
                .filter(|at| joined[*at..KEEP + edge].starts_with(BLANK_LINE))
                .count()
        } else {
            0
        };
        let whole = count_blank_lines(data);
        self.heads_read += (split + whole) as u64;
        if let Some(end) = data.last_chunk::<KEEP>() {
            self.last = *end;
        } else {
            for byte in data {
                self.last = [self.last[1], self.last[2], *byte];
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> Batch<S> {
    /// Send what is held; Ready once all of it is out.
    fn poll_send_held(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.waited = false;
        while !self.held.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.held))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.held.drain(..n);
        }
        Poll::Ready(Ok(()))
    }

    /// Hold `bufs` if more answers are coming or some are held already
    /// (then all go out together); the bytes taken, or `None` to write
    /// them directly.
    fn hold(
        &mut self,
        bufs: &[io::IoSlice<'_>],
        cx: &mut Context<'_>,
    ) -> Option<io::Result<usize>> {
        if !self.more_coming() && self.held.is_empty() {
            return None;
        }
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        if self.held.len() + len > MAX_HELD_BYTES {
            return match self.poll_send_held(cx) {
                Poll::Ready(Ok(())) => None,
                Poll::Ready(Err(e)) => Some(Err(e)),
                // Not taken: hyper offers it again once writable.
                Poll::Pending => Some(Err(io::ErrorKind::WouldBlock.into())),
            };
        }
        for buf in bufs {
            self.held.extend_from_slice(buf);
        }
        Some(Ok(len))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Batch<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.count_heads(&buf.filled()[before..]);
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                // hyper reads the socket only once its buffer holds no
                // complete head: every head read has been begun. (This
                // also corrects a count thrown off by a body.)
                this.heads_read = this.clock.requests();
                if this.held.is_empty() {
                    return Poll::Pending;
                }
                // A request is still being handled: its answer may come in
                // this same poll and go out with the held ones. If it does
                // not (a slow handler), they go out on the next poll.
                if this.clock.busy() && !this.waited {
                    this.waited = true;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                this.waited = false;
                if let Poll::Ready(Err(e)) = this.poll_send_held(cx) {
                    return Poll::Ready(Err(e));
                }
                Poll::Pending
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Batch<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match this.hold(&[io::IoSlice::new(buf)], cx) {
            Some(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
            Some(taken) => Poll::Ready(taken),
            None => Pin::new(&mut this.inner).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match this.hold(bufs, cx) {
            Some(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
            Some(taken) => Poll::Ready(taken),
            None => Pin::new(&mut this.inner).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        // hyper then copies an answer's head and body into one buffer:
        // cheaper for small answers than gathering them, and what is held
        // is one buffer anyway.
        false
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.more_coming() {
            // The rest of the batch is already read; hyper answers it
            // without waiting for the socket, so make sure it is polled.
            cx.waker().wake_by_ref();
            return Poll::Ready(Ok(()));
        }
        ready!(this.poll_send_held(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_send_held(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_lines_are_counted_as_memmem_counts_them() {
        let head = b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\nX-Instance-ID: 6ca6d4c8\r\n\r\n";
        let mut inputs: Vec<Vec<u8>> = vec![
            Vec::new(),
            head.to_vec(),
            head.repeat(7),
            b"\r\n\r\n\r\n\r\n\r\n".to_vec(),
            b"\n\r\n\r".repeat(40),
            [&head[..], b"body\r\n\r\nmore"].concat(),
        ];
        // Every cut of a batch, so matches fall on each side of the
        // vectorised search's minimum length.
        let batch = head.repeat(3);
        inputs.extend((0..batch.len()).map(|cut| batch[cut..].to_vec()));
        for input in &inputs {
            assert_eq!(
                count_blank_lines(input),
                blank_lines().find_iter(input).count(),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    fn counted(reads: &[&[u8]]) -> u64 {
        let mut batch = Batch::new((), HeadClock::new());
        for read in reads {
            batch.count_heads(read);
        }
        batch.heads_read
    }

    #[test]
    fn heads_are_counted_across_reads() {
        let head: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(counted(&[head]), 1);
        assert_eq!(counted(&[&[head, head, head].concat()]), 3);
        for split in 1..head.len() {
            let (a, b) = head.split_at(split);
            assert_eq!(counted(&[a, b]), 1, "split at {split}");
        }
        // A byte at a time.
        let bytes: Vec<&[u8]> = head.chunks(1).collect();
        assert_eq!(counted(&bytes), 1);
        assert_eq!(counted(&[b"\r\n", b"\r", b"\n"]), 1);
    }
}
