//! A listener on loopback for the listener's tests, stopped at the end,
//! and a handler that reads on the quick path.
#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use meta169_http::quick::{Head, PlainAnswer, Quick};
use meta169_http::{serve_direct, Answer, PeerHandler, ServerLimits};
use std::net::SocketAddr;
use std::time::Duration;

/// `hyper` with its plain GETs taken on the quick path: answered `ok`,
/// `/slow` after `slow`.
#[derive(Clone)]
pub struct QuickOk<H> {
    pub hyper: H,
    pub slow: Duration,
}

fn ok() -> Answer {
    Answer::new(Either::Left(Full::new(Bytes::from_static(b"ok"))))
}

impl<H: PeerHandler + Sync> PeerHandler for QuickOk<H> {
    fn handle(
        &self,
        request: http::Request<Incoming>,
        peer: SocketAddr,
    ) -> impl std::future::Future<Output = Answer> + Send + 'static + use<H> {
        self.hyper.handle(request, peer)
    }

    const QUICK: bool = true;

    fn handle_head(
        &self,
        head: &Head<'_>,
        _peer: SocketAddr,
    ) -> Option<Quick<impl std::future::Future<Output = Answer> + Send + 'static + use<H>>> {
        let slow = self.slow;
        Some(match head.view().path {
            "/slow" => Quick::Later(async move {
                tokio::time::sleep(slow).await;
                ok()
            }),
            _ => Quick::Plain(PlainAnswer {
                header_lines: b"",
                body: Bytes::from_static(b"ok"),
            }),
        })
    }
}

pub struct Server {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// `handler` served with `limits` on a free loopback port.
    pub async fn start(handler: impl PeerHandler, limits: ServerLimits) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve_direct(listener, handler, limits, async {
            let _ = stopped.await;
        }));
        Server {
            addr,
            stop: Some(stop),
            task,
        }
    }

    /// Stop accepting and wait for the accept loop to end.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = self.task.await;
    }
}
