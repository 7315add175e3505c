//! The listener's header read timeout, on real loopback sockets: a client
//! that dribbles its head or sits idle is cut off, one whose handler is
//! slow or who pauses between requests for less than the timeout is not;
//! the same whether hyper or the quick path reads the heads.

mod common;

use bytes::Bytes;
use common::{QuickOk, Server};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use meta169_http::{Answer, Handled, PeerHandler, ServerLimits};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_millis(300);
/// How long a client socket waits for the server before the test gives up.
const CLIENT_PATIENCE: Duration = Duration::from_secs(5);

/// Answers `ok`; `/slow` after twice the head timeout.
#[derive(Clone)]
struct Echo;

impl PeerHandler for Echo {
    fn handle(
        &self,
        request: http::Request<Incoming>,
        _peer: SocketAddr,
    ) -> impl std::future::Future<Output = Answer> + Send + 'static + use<> {
        async move {
            if request.uri().path() == "/slow" {
                tokio::time::sleep(TIMEOUT * 2).await;
            }
            Answer::new(Either::Left(Full::new(Bytes::from_static(b"ok"))))
        }
    }

    /// Answers at once but for `/slow`: both ways a listener finishes a
    /// request are timed.
    fn handle_now(
        &self,
        request: http::Request<Incoming>,
        peer: SocketAddr,
    ) -> Handled<impl std::future::Future<Output = Answer> + Send + 'static + use<>> {
        match request.uri().path() {
            "/slow" => Handled::Later(self.handle(request, peer)),
            _ => Handled::Now(Answer::new(Either::Left(Full::new(Bytes::from_static(
                b"ok",
            ))))),
        }
    }
}

fn limits() -> ServerLimits {
    ServerLimits {
        header_read_timeout: TIMEOUT,
        ..ServerLimits::default()
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(CLIENT_PATIENCE)).unwrap();
    stream
}

/// Send one request and read its answer (which is small and has a body of
/// 2 bytes); the status code.
fn exchange(stream: &mut TcpStream, path: &str) -> u16 {
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 1024];
    while !answer.ends_with(b"\r\n\r\nok") {
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&answer[9..12]).parse().unwrap()
}

/// Whether the server closed the connection (rather than the client's
/// patience running out).
fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut chunk = [0u8; 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_head_sent_a_byte_at_a_time_is_cut_off() {
    a_head_sent_a_byte_at_a_time_is_cut_off_by(Echo).await;
    a_head_sent_a_byte_at_a_time_is_cut_off_by(QuickOk {
        hyper: Echo,
        slow: TIMEOUT * 2,
    })
    .await;
}

async fn a_head_sent_a_byte_at_a_time_is_cut_off_by(handler: impl PeerHandler) {
    let server = Server::start(handler, limits()).await;
    let addr = server.addr;
    let (cut, sent) = blocking(move || {
        let mut stream = connect(addr);
        let head =
            b"GET / HTTP/1.1\r\nHost: x\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
        let mut sent = 0;
        // Each byte resets nothing: the head as a whole must arrive in time.
        for byte in head.iter() {
            if stream.write_all(&[*byte]).is_err() {
                break;
            }
            sent += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
        (closed_by_server(&mut stream), sent)
    })
    .await;
    assert!(cut, "the connection stayed open");
    assert!(sent < 70, "all {sent} bytes were accepted");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_keep_alive_connection_is_closed() {
    an_idle_keep_alive_connection_is_closed_by(Echo).await;
    an_idle_keep_alive_connection_is_closed_by(QuickOk {
        hyper: Echo,
        slow: TIMEOUT * 2,
    })
    .await;
}

async fn an_idle_keep_alive_connection_is_closed_by(handler: impl PeerHandler) {
    let server = Server::start(handler, limits()).await;
    let addr = server.addr;
    let (status, idle) = blocking(move || {
        let mut stream = connect(addr);
        let status = exchange(&mut stream, "/");
        let started = Instant::now();
        assert!(closed_by_server(&mut stream), "still open");
        (status, started.elapsed())
    })
    .await;
    assert_eq!(status, 200);
    assert!(idle >= TIMEOUT / 2, "closed after {idle:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_handlers_and_short_pauses_are_not_cut() {
    slow_handlers_and_short_pauses_are_not_cut_by(Echo).await;
    slow_handlers_and_short_pauses_are_not_cut_by(QuickOk {
        hyper: Echo,
        slow: TIMEOUT * 2,
    })
    .await;
}

async fn slow_handlers_and_short_pauses_are_not_cut_by(handler: impl PeerHandler) {
    let server = Server::start(handler, limits()).await;
    let addr = server.addr;
    let statuses = blocking(move || {
        let mut stream = connect(addr);
        let mut statuses = vec![exchange(&mut stream, "/slow")];
        // Pauses shorter than the timeout, adding up to several of it: the
        // clock starts over with every request.
        for _ in 0..4 {
            std::thread::sleep(TIMEOUT * 2 / 3);
            statuses.push(exchange(&mut stream, "/"));
        }
        statuses
    })
    .await;
    assert_eq!(statuses, [200; 5]);
    server.stop().await;
}
