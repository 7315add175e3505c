//! One source cannot hold the whole connection cap: with a client holding
//! every connection it may (and trying for ten times more), another
//! client is still answered at once.

mod common;

use bytes::Bytes;
use common::Server;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use meta169_http::{Answer, PeerHandler, ServerLimits};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CAP: usize = 100;
const PER_SOURCE: usize = 10;
/// How long the well-behaved client waits for its answer before the test
/// fails (the hostile connections would hold the cap for the 30 s head
/// timeout without the per-source limit).
const PATIENCE: Duration = Duration::from_secs(5);

#[derive(Clone)]
struct Ok200;

impl PeerHandler for Ok200 {
    fn handle(
        &self,
        _request: http::Request<Incoming>,
        _peer: SocketAddr,
    ) -> impl std::future::Future<Output = Answer> + Send + 'static + use<> {
        async move { Answer::new(Either::Left(Full::new(Bytes::from_static(b"ok")))) }
    }
}

async fn connect_from(source: &str, server: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(format!("{source}:0").parse().unwrap())?;
    socket.connect(server).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_source_holding_its_limit_does_not_starve_others() {
    let limits = ServerLimits {
        max_connections: CAP,
        max_connections_per_source: PER_SOURCE,
        header_read_timeout: Duration::from_secs(30),
        ..ServerLimits::default()
    };
    let server = Server::start(Ok200, limits).await;
    let addr = server.addr;

    // The hostile client: ten times the cap, all idle.
    let mut held = Vec::new();
    for _ in 0..CAP * 10 {
        if let Ok(stream) = connect_from("127.0.0.2", addr).await {
            held.push(stream);
        }
    }
    // Its connections past the limit are closed by the server.
    let mut open = 0;
    for stream in &mut held {
        let mut byte = [0u8; 1];
        // Still open when there is nothing to read yet; closed or reset
        // answers at once.
        let waited = tokio::time::timeout(Duration::from_millis(20), stream.read(&mut byte)).await;
        if waited.is_err() {
            open += 1;
        }
    }
    assert_eq!(open, PER_SOURCE, "connections the hostile source kept");

    // Another client is answered at once.
    let answered = tokio::time::timeout(PATIENCE, async {
        let mut stream = connect_from("127.0.0.3", addr).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        String::from_utf8_lossy(&answer).into_owned()
    })
    .await
    .expect("the other client waited");
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");

    drop(held);
    server.stop().await;
}
