//! The quick path: plain GET requests read with httparse and answered
//! without hyper's request and response types, for handlers that answer
//! most requests from memory ([`PeerHandler::QUICK`]).
//!
//! hyper turns every request head into a `Uri` and a `HeaderMap`: each
//! header name parsed and hashed, each non-standard one copied into an
//! allocation. For a cached metadata answer that cost more than the
//! answer itself: about a third of a bare hyper server's ~10,900
//! instructions per request are the map, the URI and their allocations
//! (callgrind). The metadata side reads five headers by name and needs
//! none of it. httparse is the parser hyper itself uses, so a head is
//! read here exactly as hyper reads it; what is hand-written is only
//! the framing of the simplest exchange HTTP/1.1 has, below.
//!
//! A request is taken here only when nothing about it needs hyper: GET,
//! HTTP/1.1, an origin-form target of plain characters, a `Host`, no body
//! (no `Content-Length`, no `Transfer-Encoding`), no `Expect` or
//! `Upgrade`, and no `Connection` but `keep-alive`; and when the handler
//! takes it ([`PeerHandler::handle_head`]). Anything else (another method,
//! a malformed or oversized head, a request the handler leaves) goes to
//! hyper with every byte not yet answered put back in front of its stream,
//! and hyper serves the rest of the connection as it serves any other.
//! The answer is written as hyper writes it: status line, the answer's
//! headers in order, `content-length`, `date`.

use crate::head_timeout::HeadClock;
use crate::hop_limit::HopControl;
use crate::listener::{answered, Answer, PeerHandler};
use crate::request_head::{is_named, HeaderView, RequestHead};
use crate::rewind::Rewind;
use bytes::Bytes;
use http::header;
use http_body_util::BodyExt;
use hyper::rt::{Read, Write};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Poll};

/// Headers a quick request may carry; a head with more goes to hyper
/// (which takes up to 100).
pub const MAX_QUICK_HEADERS: usize = 32;

/// Answers to pipelined requests held before they are written: past
/// this, they go out before the next request is answered.
const MAX_HELD_ANSWER_BYTES: usize = 256 * 1024;

/// Length of an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`).
const HTTP_DATE_LEN: usize = 29;

/// The method every quick request has.
static GET: http::Method = http::Method::GET;

/// A request head the quick path took.
pub struct Head<'a> {
    /// The request target: path and query.
    target: &'a str,
    /// The target's path (before any `?`).
    path: &'a str,
    headers: &'a [httparse::Header<'a>],
}

impl<'a> Head<'a> {
    /// What a handler reads of it.
    pub fn view(&self) -> RequestHead<'_> {
        RequestHead {
            method: &GET,
            path: self.path,
            headers: HeaderView::Raw(self.headers),
        }
    }

    /// The head as hyper would have made it, for a handler that answers
    /// some requests by hyper's types; `None` if one of its headers is not
    /// one the `http` crate takes (then hyper refuses it as well).
    pub fn to_parts(&self) -> Option<http::request::Parts> {
        let mut request = http::Request::new(());
        *request.uri_mut() = self.target.parse().ok()?;
        *request.version_mut() = http::Version::HTTP_11;
        let headers = request.headers_mut();
        headers.reserve(self.headers.len());
        for h in self.headers {
            headers.append(
                http::HeaderName::from_bytes(h.name.as_bytes()).ok()?,
                http::HeaderValue::from_bytes(h.value).ok()?,
            );
        }
        Some(request.into_parts().0)
    }
}

/// A 200 answer whose header lines are fixed (rendered once by the
/// handler, as hyper renders them: `name: value\r\n`, lower-case names).
pub struct PlainAnswer {
    pub header_lines: &'static [u8],
    pub body: Bytes,
}

/// A quick request as a handler takes it.
pub enum Quick<F> {
    /// A 200 answer with fixed headers (the hot path).
    Plain(PlainAnswer),
    /// Any answer, at once.
    Now(Answer),
    /// An answer on its way.
    Later(F),
}

/// Is `byte` one the quick path takes in a request target? RFC 3986's
/// unreserved and sub-delimiter characters, `%`, `:`, `@`, `/` and `?`:
/// what every client sends for a metadata path, and a set on which the
/// `http` crate's URI parser and a plain split at `?` agree.
fn is_plain_target_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%:@/?".contains(&byte)
}

/// The head of a plain keep-alive GET, as the quick path takes it;
/// `None` for one that needs hyper.
fn quick_head<'h, 'b: 'h>(request: &'h httparse::Request<'h, 'b>) -> Option<Head<'h>> {
    if request.method? != "GET" || request.version? != 1 {
        return None;
    }
    let target = request.path?;
    if !target.starts_with('/') || !target.bytes().all(is_plain_target_byte) {
        return None;
    }
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    let mut host = false;
    for h in request.headers.iter() {
        let name = h.name.as_bytes();
        // Most headers (the proxy's `X-…`) are passed over on their
        // first byte.
        match name.first().map(u8::to_ascii_lowercase) {
            Some(b'h') if is_named(name, &header::HOST) => host = true,
            Some(b'c') if is_named(name, &header::CONTENT_LENGTH) => return None,
            Some(b'c')
                if is_named(name, &header::CONNECTION)
                    && !h.value.trim_ascii().eq_ignore_ascii_case(b"keep-alive") =>
            {
                return None
            }
            Some(b't') if is_named(name, &header::TRANSFER_ENCODING) => return None,
            Some(b'e') if is_named(name, &header::EXPECT) => return None,
            Some(b'u') if is_named(name, &header::UPGRADE) => return None,
            _ => {}
        }
    }
    host.then_some(Head {
        target,
        path,
        headers: request.headers,
    })
}

/// The `date` value of now, as hyper writes it, made once a second.
fn http_date() -> [u8; HTTP_DATE_LEN] {
    thread_local! {
        static DATE: std::cell::Cell<(u64, [u8; HTTP_DATE_LEN])> =
            const { std::cell::Cell::new((u64::MAX, [0; HTTP_DATE_LEN])) };
    }
    // The coarse clock, as the head timeout reads it: a fine clock read
    // costs ~16 ns on a virtual machine, and the value changes once a second.
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_REALTIME_COARSE)
        .map(|t| std::time::Duration::from(t).as_secs())
        .unwrap_or_default();
    DATE.with(|date| {
        let (second, text) = date.get();
        if second == now {
            return text;
        }
        let mut text = [b' '; HTTP_DATE_LEN];
        let rendered =
            httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(now));
        let n = rendered.len().min(text.len());
        text[..n].copy_from_slice(&rendered.as_bytes()[..n]);
        date.set((now, text));
        text
    })
}

fn put_content_length(out: &mut Vec<u8>, length: usize) {
    out.extend_from_slice(b"content-length: ");
    out.extend_from_slice(itoa::Buffer::new().format(length).as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn put_date(out: &mut Vec<u8>) {
    out.extend_from_slice(b"date: ");
    out.extend_from_slice(&http_date());
    out.extend_from_slice(b"\r\n");
}

/// A plain answer, as hyper writes a 200 with these headers and body.
fn put_plain(out: &mut Vec<u8>, answer: &PlainAnswer) {
    out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    out.extend_from_slice(answer.header_lines);
    put_content_length(out, answer.body.len());
    put_date(out);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&answer.body);
}

/// Any answer, as hyper writes it; whether the connection stays open
/// (`Connection: close` in the answer closes it). `Err` when its body
/// fails.
async fn put_answer(out: &mut Vec<u8>, answer: Answer) -> Result<bool, axum::Error> {
    let (parts, body) = answer.into_parts();
    let body = match body {
        http_body_util::Either::Left(full) => match full.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(never) => match never {},
        },
        http_body_util::Either::Right(body) => body.collect().await?.to_bytes(),
    };
    let status = parts.status;
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut keep_alive = true;
    for (name, value) in &parts.headers {
        if name == header::CONNECTION
            && value
                .as_bytes()
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
        {
            keep_alive = false;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    // hyper sends neither length nor body with these.
    let bodiless = status.is_informational()
        || status == http::StatusCode::NO_CONTENT
        || status == http::StatusCode::NOT_MODIFIED;
    if !bodiless && !parts.headers.contains_key(header::CONTENT_LENGTH) {
        put_content_length(out, body.len());
    }
    if !parts.headers.contains_key(header::DATE) {
        put_date(out);
    }
    out.extend_from_slice(b"\r\n");
    if !bodiless {
        out.extend_from_slice(&body);
    }
    Ok(keep_alive)
}

/// Write all of `out` and flush; `out` is left empty.
async fn send<I: Write + Unpin>(io: &mut I, out: &mut Vec<u8>) -> io::Result<()> {
    let mut sent = 0;
    std::future::poll_fn(|cx| {
        while sent < out.len() {
            let n = ready!(Pin::new(&mut *io).poll_write(cx, &out[sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            sent += n;
        }
        Pin::new(&mut *io).poll_flush(cx)
    })
    .await?;
    out.clear();
    Ok(())
}

/// Read what comes into `spare`: the bytes read, 0 at the end.
async fn receive<I: Read + Unpin>(io: &mut I, spare: &mut [u8]) -> io::Result<usize> {
    std::future::poll_fn(|cx| {
        let mut buf = hyper::rt::ReadBuf::new(spare);
        ready!(Pin::new(&mut *io).poll_read(cx, buf.unfilled()))?;
        Poll::Ready(Ok(buf.filled().len()))
    })
    .await
}

/// What one connection shares with the quick path.
pub(crate) struct Connection<'c> {
    pub(crate) clock: &'c HeadClock,
    pub(crate) hops: Option<&'c HopControl>,
    pub(crate) peer: SocketAddr,
    /// The largest request head taken (hyper's read buffer limit).
    pub(crate) max_head_bytes: usize,
}

/// How the quick path left a connection.
pub(crate) enum Left<I> {
    /// Closed, or broken (already logged).
    Closed,
    /// For hyper, with the bytes read and not answered in front.
    ToHyper(Rewind<I>),
}

/// What the quick path does once the heads it has read are answered.
enum Next {
    /// Read more: no complete head is left.
    Read,
    /// Write what is held, then answer the heads left.
    Send,
    /// Leave the rest to hyper.
    ToHyper,
}

/// Serve `io`'s requests on the quick path until one is not for it.
pub(crate) async fn serve<I, H>(mut io: I, connection: Connection<'_>, handler: H) -> Left<I>
where
    I: Read + Write + Unpin,
    H: PeerHandler,
{
    let Connection {
        clock,
        hops,
        peer,
        max_head_bytes,
    } = connection;
    let mut buf = vec![0u8; max_head_bytes];
    let (mut start, mut end) = (0, 0);
    let mut out = Vec::new();
    loop {
        // Every complete head read so far, answered in order.
        let next = loop {
            if out.len() > MAX_HELD_ANSWER_BYTES {
                break Next::Send;
            }
            if start == end {
                break Next::Read;
            }
            let mut headers = [httparse::EMPTY_HEADER; MAX_QUICK_HEADERS];
            let mut request = httparse::Request::new(&mut headers);
            let length = match request.parse(&buf[start..end]) {
                Ok(httparse::Status::Complete(length)) => length,
                Ok(httparse::Status::Partial) => break Next::Read,
                // Malformed, or more headers than taken here: hyper
                // answers or takes it.
                Err(_) => break Next::ToHyper,
            };
            let Some(head) = quick_head(&request) else {
                break Next::ToHyper;
            };
            let Some(quick) = handler.handle_head(&head, peer) else {
                break Next::ToHyper;
            };
            start += length;
            clock.begin();
            let keep_alive = match quick {
                Quick::Plain(answer) => {
                    put_plain(&mut out, &answer);
                    clock.end();
                    true
                }
                Quick::Now(answer) => {
                    answered(&answer, hops, clock);
                    put(&mut out, answer, peer).await
                }
                Quick::Later(answering) => {
                    // What is answered goes out before the wait.
                    if let Err(e) = send(&mut io, &mut out).await {
                        tracing::debug!(%peer, "connection ended: {e}");
                        return Left::Closed;
                    }
                    let answer = answering.await;
                    answered(&answer, hops, clock);
                    put(&mut out, answer, peer).await
                }
            };
            if !keep_alive {
                if let Err(e) = send(&mut io, &mut out).await {
                    tracing::debug!(%peer, "connection ended: {e}");
                }
                let _ = std::future::poll_fn(|cx| Pin::new(&mut io).poll_shutdown(cx)).await;
                return Left::Closed;
            }
        };
        if !out.is_empty() {
            if let Err(e) = send(&mut io, &mut out).await {
                tracing::debug!(%peer, "connection ended: {e}");
                return Left::Closed;
            }
        }
        match next {
            Next::ToHyper => {
                let rest = Bytes::copy_from_slice(&buf[start..end]);
                return Left::ToHyper(Rewind::new(rest, io));
            }
            Next::Send => continue,
            Next::Read => {}
        }
        if start == end {
            (start, end) = (0, 0);
        } else if end == buf.len() {
            if start == 0 {
                // A head larger than the limit: hyper refuses it (431).
                let rest = Bytes::copy_from_slice(&buf[..end]);
                return Left::ToHyper(Rewind::new(rest, io));
            }
            buf.copy_within(start..end, 0);
            (start, end) = (0, end - start);
        }
        match receive(&mut io, &mut buf[end..]).await {
            Ok(0) => return Left::Closed,
            Ok(n) => end += n,
            Err(e) => {
                crate::listener::connection_ended(peer, clock, &e);
                return Left::Closed;
            }
        }
    }
}

/// [`put_answer`], a broken body logged: whether to keep the connection.
async fn put(out: &mut Vec<u8>, answer: Answer, peer: SocketAddr) -> bool {
    match put_answer(out, answer).await {
        Ok(keep_alive) => keep_alive,
        Err(e) => {
            tracing::warn!(%peer, "an answer's body failed: {e}");
            false
        }
    }
}
