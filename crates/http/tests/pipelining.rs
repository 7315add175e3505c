//! Pipelined requests on a listener that batches their answers: they go
//! out in one write, and valid requests before a malformed one are always
//! answered; the same whether hyper or the quick path reads the heads.

mod common;

use bytes::Bytes;
use common::{QuickOk, Server};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use meta169_http::{Answer, PeerHandler, ServerLimits};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// How long the client waits for the server before the test gives up.
const CLIENT_PATIENCE: Duration = Duration::from_secs(5);

/// How long `/slow` takes to answer.
const SLOW: Duration = Duration::from_millis(1500);

/// Answers `ok`, `/slow` after [`SLOW`]; reads a body if there is one.
#[derive(Clone)]
struct Ok200;

impl PeerHandler for Ok200 {
    fn handle(
        &self,
        request: http::Request<Incoming>,
        _peer: SocketAddr,
    ) -> impl std::future::Future<Output = Answer> + Send + 'static + use<> {
        async move {
            if request.uri().path() == "/slow" {
                tokio::time::sleep(SLOW).await;
            }
            let _ = http_body_util::BodyExt::collect(request.into_body()).await;
            Answer::new(Either::Left(Full::new(Bytes::from_static(b"ok"))))
        }
    }
}

/// [`Ok200`], its plain GETs on the quick path if `quick`, served with `limits`.
async fn start(quick: bool, limits: ServerLimits) -> Server {
    match quick {
        true => {
            let quick = QuickOk {
                hyper: Ok200,
                slow: SLOW,
            };
            Server::start(quick, limits).await
        }
        false => Server::start(Ok200, limits).await,
    }
}

fn batching(batched: bool) -> ServerLimits {
    ServerLimits {
        batch_pipelined_answers: batched,
        ..ServerLimits::default()
    }
}

async fn answers_to(quick: bool, batched: bool, requests: &'static [u8]) -> Vec<u16> {
    let server = start(quick, batching(batched)).await;
    let addr = server.addr;
    let text = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(CLIENT_PATIENCE)).unwrap();
        stream.write_all(requests).unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    })
    .await
    .unwrap();
    server.stop().await;
    text.match_indices("HTTP/1.1 ")
        .filter_map(|(at, _)| text.get(at + 9..at + 12)?.parse().ok())
        .collect()
}

const VALID_THEN_MALFORMED: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n\
GET /b HTTP/1.1\r\nHost: x\r\n\r\n\
GET /c HTTP/1.1\r\nHost: x\r\n\r\n\
GET /d HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n";

#[tokio::test(flavor = "multi_thread")]
async fn valid_requests_before_a_malformed_one_are_answered() {
    for quick in [false, true] {
        for batched in [false, true] {
            let statuses = answers_to(quick, batched, VALID_THEN_MALFORMED).await;
            assert_eq!(
                statuses.iter().filter(|s| **s == 200).count(),
                3,
                "quick={quick} batched={batched}: {statuses:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pipelined_batch_is_answered_in_one_write() {
    for quick in [false, true] {
        a_pipelined_batch_is_answered_in_one_write_by(quick).await;
    }
}

async fn a_pipelined_batch_is_answered_in_one_write_by(quick: bool) {
    const BATCH: usize = 10;
    let server = start(quick, batching(true)).await;
    let addr = server.addr;
    let first_read = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(CLIENT_PATIENCE)).unwrap();
        let requests = "GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(BATCH);
        stream.write_all(requests.as_bytes()).unwrap();
        // One write from the server arrives whole on loopback: the first
        // read holds every answer.
        let mut chunk = vec![0u8; 64 * 1024];
        let n = stream.read(&mut chunk).unwrap();
        String::from_utf8_lossy(&chunk[..n]).into_owned()
    })
    .await
    .unwrap();
    assert_eq!(
        first_read.matches("HTTP/1.1 200").count(),
        BATCH,
        "{first_read}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_answer_does_not_hold_back_the_ones_before_it() {
    for quick in [false, true] {
        a_slow_answer_does_not_hold_back_the_ones_before_it_by(quick).await;
    }
}

async fn a_slow_answer_does_not_hold_back_the_ones_before_it_by(quick: bool) {
    const REQUESTS: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n\
GET /b HTTP/1.1\r\nHost: x\r\n\r\n\
GET /slow HTTP/1.1\r\nHost: x\r\n\r\n";
    let server = start(quick, batching(true)).await;
    let addr = server.addr;
    let (early, all) = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.write_all(REQUESTS).unwrap();
        // The first two answers arrive well before the slow one is ready.
        stream.set_read_timeout(Some(SLOW / 3)).unwrap();
        let mut text = Vec::new();
        let mut chunk = [0u8; 4096];
        while let Ok(n @ 1..) = stream.read(&mut chunk) {
            text.extend_from_slice(&chunk[..n]);
        }
        let early = String::from_utf8_lossy(&text)
            .matches("HTTP/1.1 200")
            .count();
        stream.set_read_timeout(Some(CLIENT_PATIENCE)).unwrap();
        while !String::from_utf8_lossy(&text).ends_with("ok")
            || String::from_utf8_lossy(&text)
                .matches("HTTP/1.1 200")
                .count()
                < 3
        {
            let n = stream.read(&mut chunk).unwrap();
            assert!(n > 0, "closed early");
            text.extend_from_slice(&chunk[..n]);
        }
        (
            early,
            String::from_utf8_lossy(&text)
                .matches("HTTP/1.1 200")
                .count(),
        )
    })
    .await
    .unwrap();
    assert_eq!((early, all), (2, 3));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_holding_a_blank_line_does_not_stall_its_answer() {
    // The body's blank lines look like ends of heads to the counter.
    for quick in [false, true] {
        let statuses = answers_to(
            quick,
            true,
            b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\
GET /q HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(statuses, [200, 200], "quick={quick}");
    }
}
