//! The listener's quick path on real loopback sockets: its answers are
//! hyper's, byte for byte but the date; pipelined requests are answered
//! in order across both ways; whatever it does not take (another method,
//! HTTP/1.0, a malformed, oversized or host-less head, a request the
//! handler leaves) gets hyper's answer; and no input stops the server.

mod common;

use bytes::Bytes;
use common::Server;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use meta169_http::quick::{Head, PlainAnswer, Quick};
use meta169_http::{Answer, Handled, PeerHandler, ServerLimits};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// How long a client socket waits for the server before the test gives up.
const CLIENT_PATIENCE: Duration = Duration::from_secs(5);

const HEADER_LINES: &[u8] = b"content-type: text/plain\r\nserver: test\r\n";

/// `/plain` and `/` answered with fixed headers, `/missing` a 404 with a
/// header of its own, `/later` after a pause, `/leave` left to hyper. On
/// the quick path or from hyper, the same answers; with `mark_hyper`,
/// hyper's carry `x-by: hyper` as well.
#[derive(Clone)]
struct Paths {
    mark_hyper: bool,
}

/// The body of `/big`: answers that outgrow their requests.
const BIG: usize = 100 * 1024;

fn plain(path: &str) -> PlainAnswer {
    let body = match path {
        "/big" => Bytes::from(vec![b'b'; BIG]),
        _ => Bytes::from(format!("plain {path}")),
    };
    PlainAnswer {
        header_lines: HEADER_LINES,
        body,
    }
}

fn missing() -> Answer {
    let mut answer = Answer::new(Either::Left(Full::new(Bytes::from_static(
        b"nothing here\n",
    ))));
    *answer.status_mut() = http::StatusCode::NOT_FOUND;
    answer
        .headers_mut()
        .insert("x-reason", http::HeaderValue::from_static("missing"));
    answer
}

async fn later(path: String) -> Answer {
    tokio::time::sleep(Duration::from_millis(20)).await;
    Answer::new(Either::Left(Full::new(Bytes::from(format!(
        "later {path}"
    )))))
}

impl PeerHandler for Paths {
    fn handle(
        &self,
        request: http::Request<Incoming>,
        _peer: SocketAddr,
    ) -> impl std::future::Future<Output = Answer> + Send + 'static + use<> {
        let path = request.uri().path().to_string();
        let mark = self.mark_hyper;
        async move {
            let mut answer = match path.as_str() {
                "/missing" => missing(),
                "/later" => later(path).await,
                _ => {
                    let mut answer = Answer::new(Either::Left(Full::new(Bytes::from(format!(
                        "plain {path}"
                    )))));
                    let headers = answer.headers_mut();
                    headers.insert("content-type", http::HeaderValue::from_static("text/plain"));
                    headers.insert("server", http::HeaderValue::from_static("test"));
                    answer
                }
            };
            if mark {
                answer
                    .headers_mut()
                    .insert("x-by", http::HeaderValue::from_static("hyper"));
            }
            answer
        }
    }

    fn handle_now(
        &self,
        request: http::Request<Incoming>,
        peer: SocketAddr,
    ) -> Handled<impl std::future::Future<Output = Answer> + Send + 'static + use<>> {
        Handled::Later(self.handle(request, peer))
    }

    const QUICK: bool = true;

    fn handle_head(
        &self,
        head: &Head<'_>,
        _peer: SocketAddr,
    ) -> Option<Quick<impl std::future::Future<Output = Answer> + Send + 'static + use<>>> {
        let path = head.view().path;
        Some(match path {
            "/leave" => return None,
            "/missing" => Quick::Now(missing()),
            "/later" => Quick::Later(later(path.to_string())),
            _ => Quick::Plain(plain(path)),
        })
    }
}

fn limits(quick_path: bool) -> ServerLimits {
    ServerLimits {
        quick_path,
        ..ServerLimits::default()
    }
}

/// Send `bytes` in one write, then read until the server closes or
/// `answers` answers (counted by their status lines) are in.
fn send(addr: SocketAddr, bytes: Vec<u8>, answers: usize) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(CLIENT_PATIENCE)).unwrap();
    stream.write_all(&bytes).unwrap();
    read_answers(&mut stream, answers)
}

fn read_answers(stream: &mut TcpStream, answers: usize) -> String {
    let mut got = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let text = String::from_utf8_lossy(&got).to_string();
        if complete_answers(&text) >= answers {
            return text;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return text,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Answers in `text` whose bodies are all there.
fn complete_answers(text: &str) -> usize {
    let mut count = 0;
    let mut rest = text;
    while let Some(end) = rest.find("\r\n\r\n") {
        let head = &rest[..end];
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or(0);
        let body_start = end + 4;
        if rest.len() < body_start + length {
            break;
        }
        count += 1;
        rest = &rest[body_start + length..];
    }
    count
}

fn without_date(text: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with("date: "))
        .collect::<Vec<_>>()
        .join("\n")
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: h\r\nX-Instance-ID: i\r\n\r\n")
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// The same requests, answered with the quick path on and off.
async fn both_ways(requests: String, answers: usize) -> (String, String) {
    let mut texts = Vec::new();
    for quick in [true, false] {
        let server = Server::start(Paths { mark_hyper: false }, limits(quick)).await;
        let (addr, bytes) = (server.addr, requests.clone().into_bytes());
        texts.push(blocking(move || send(addr, bytes, answers)).await);
        server.stop().await;
    }
    let hyper = texts.pop().unwrap();
    (texts.pop().unwrap(), hyper)
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_are_hypers_byte_for_byte() {
    let requests = [
        get("/plain"),
        get("/missing"),
        get("/later"),
        get("/x?query=1"),
    ]
    .concat();
    let (quick, hyper) = both_ways(requests, 4).await;
    assert_eq!(complete_answers(&quick), 4, "{quick}");
    assert!(quick.contains("\r\ndate: "), "{quick}");
    assert_eq!(without_date(&quick), without_date(&hyper));
    assert!(
        quick.starts_with(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nserver: test\r\ncontent-length: 12\r\n"
        ),
        "{quick}"
    );
    assert!(
        quick.contains("HTTP/1.1 404 Not Found\r\nx-reason: missing\r\ncontent-length: 13\r\n"),
        "{quick}"
    );
    assert!(
        quick.contains("plain /x"),
        "the query is not part of the path: {quick}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn what_the_quick_path_leaves_gets_hypers_answer() {
    let server = Server::start(Paths { mark_hyper: true }, limits(true)).await;
    let addr = server.addr;
    let cases: Vec<(String, usize, &str)> = vec![
        // Left by the handler: hyper answers it and what follows.
        (
            [get("/plain"), get("/leave"), get("/plain")].concat(),
            3,
            "plain /plain|plain /leave x-by|plain /plain x-by",
        ),
        // Another method, with a body.
        (
            [
                get("/plain"),
                "POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nbody".into(),
                get("/plain"),
            ]
            .concat(),
            3,
            "plain /plain|plain /p x-by|plain /plain x-by",
        ),
        // HTTP/1.0, and a head that asks to close.
        (
            "GET /old HTTP/1.0\r\nHost: h\r\n\r\n".into(),
            1,
            "plain /old x-by",
        ),
        (
            [
                get("/a"),
                "GET /b HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n".into(),
            ]
            .concat(),
            2,
            "plain /a|plain /b x-by",
        ),
        // More headers than the quick path reads.
        (
            format!(
                "GET /many HTTP/1.1\r\nHost: h\r\n{}\r\n",
                "X-A: b\r\n".repeat(40)
            ),
            1,
            "plain /many x-by",
        ),
        // A target outside the plain characters.
        (
            "GET /a%20b\"c HTTP/1.1\r\nHost: h\r\n\r\n".into(),
            1,
            "plain /a%20b\"c x-by",
        ),
        // Refusals are hyper's (and the listener's).
        (
            [get("/plain"), "GET / HTTP/1.1\r\n\r\n".into()].concat(),
            2,
            "plain /plain|400",
        ),
        (
            [
                get("/plain"),
                "GET /\x01 HTTP/1.1\r\nHost: h\r\n\r\n".into(),
            ]
            .concat(),
            2,
            "plain /plain|400",
        ),
        (
            format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", "a".repeat(9000)),
            1,
            "431",
        ),
    ];
    for (requests, answers, expected) in cases {
        let text = blocking(move || send(addr, requests.into_bytes(), answers)).await;
        let mut rest = text.as_str();
        for want in expected.split('|') {
            let (body, marked) = match want.strip_suffix(" x-by") {
                Some(body) => (body, true),
                None => (want, false),
            };
            let end = rest
                .find("\r\n\r\n")
                .unwrap_or_else(|| panic!("no answer for {want:?} in {text:?}"));
            let head = &rest[..end];
            if let Ok(status) = body.parse::<u16>() {
                assert!(
                    head.starts_with(&format!("HTTP/1.1 {status}")),
                    "{want:?}: {text:?}"
                );
                rest = &rest[end + 4..];
                let skip = rest.find("HTTP/1.1").unwrap_or(rest.len());
                rest = &rest[skip..];
                continue;
            }
            assert_eq!(head.contains("x-by: hyper"), marked, "{want:?}: {text:?}");
            rest = &rest[end + 4..];
            assert!(rest.starts_with(body), "{want:?}: {text:?}");
            rest = &rest[body.len()..];
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn heads_split_and_batched_are_all_answered() {
    let server = Server::start(Paths { mark_hyper: true }, limits(true)).await;
    let addr = server.addr;
    // A byte at a time.
    let text = blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(CLIENT_PATIENCE)).unwrap();
        stream.set_nodelay(true).unwrap();
        for byte in get("/slowly").bytes() {
            stream.write_all(&[byte]).unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
        read_answers(&mut stream, 1)
    })
    .await;
    assert!(
        text.ends_with("plain /slowly") && !text.contains("x-by"),
        "{text}"
    );
    // 300 heads in one write: more than the 8 KiB a head may take, so the
    // read buffer is refilled with heads cut at its end.
    let batch: String = (0..300).map(|i| get(&format!("/n{i}"))).collect();
    let text = blocking(move || send(addr, batch.into_bytes(), 300)).await;
    assert_eq!(complete_answers(&text), 300);
    assert!(!text.contains("x-by"));
    let bodies: Vec<&str> = text
        .split("\r\n\r\n")
        .skip(1)
        .map(|b| b.split("HTTP/1.1").next().unwrap_or(""))
        .collect();
    for (i, body) in bodies.iter().enumerate() {
        assert_eq!(*body, format!("plain /n{i}"));
    }
    // Answers past what is held before writing (256 KiB): written, and
    // the heads already read still answered.
    let batch = get("/big").repeat(10);
    let text = blocking(move || send(addr, batch.into_bytes(), 10)).await;
    assert_eq!(complete_answers(&text), 10);
    server.stop().await;
}

/// A small deterministic generator (xorshift), for inputs that are the
/// same on every run.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_input_stops_the_server() {
    let server = Server::start(Paths { mark_hyper: false }, limits(true)).await;
    let addr = server.addr;
    blocking(move || {
        let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
        let valid = [get("/a"), get("/later"), get("/leave"), get("/missing")]
            .concat()
            .into_bytes();
        // Bounded: 300 connections of mangled heads.
        for _ in 0..300 {
            let mut bytes = valid.clone();
            let cut = (noise.next() as usize) % bytes.len();
            bytes.truncate(cut.max(1));
            for _ in 0..(noise.next() % 4) {
                let at = (noise.next() as usize) % bytes.len();
                bytes[at] = noise.next() as u8;
            }
            let mut stream = TcpStream::connect(addr).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let _ = stream.write_all(&bytes);
            let _ = stream.shutdown(std::net::Shutdown::Write);
            let mut sink = Vec::new();
            let _ = stream.read_to_end(&mut sink);
        }
        // Still serving.
        let text = send(addr, get("/after").into_bytes(), 1);
        assert!(text.ends_with("plain /after"), "{text}");
    })
    .await;
    server.stop().await;
}
