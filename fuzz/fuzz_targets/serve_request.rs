//! Bytes from a client, through serve's real listener and metadata
//! handler (hyper's parsing, the head timeout, the Host check, path
//! decoding, identification in every mode, the tree, the password
//! endpoint, session tokens): whatever arrives, the connection ends with
//! answers or is closed, and nothing panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meta169_api::{
    metadata_handler, metadata_listener_limits, server, ApiSettings, MetadataService, ServerLimits,
};
use meta169_http::Accept;
use meta169_store::{SqliteStore, Store};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::{mpsc, Mutex};

/// How long a connection may take to end once the client has sent
/// everything and closed its side: far beyond any answer.
const PATIENCE: Duration = Duration::from_secs(5);
/// Room in the in-memory pipe each way.
const PIPE_BYTES: usize = 1 << 20;

/// Connections handed to the listener; the peer is loopback (a trusted
/// proxy, and the example instance's own address).
struct Pipes(Mutex<mpsc::UnboundedReceiver<DuplexStream>>);

impl Accept for Pipes {
    type Stream = DuplexStream;

    async fn accept(&self) -> std::io::Result<(DuplexStream, SocketAddr)> {
        match self.0.lock().await.recv().await {
            Some(pipe) => Ok((pipe, SocketAddr::from(([127, 0, 0, 1], 40_000)))),
            None => std::future::pending().await,
        }
    }
}

struct Server {
    runtime: tokio::runtime::Runtime,
    connect: mpsc::UnboundedSender<DuplexStream>,
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let (connect, pipes) = mpsc::unbounded_channel();
        runtime.block_on(async {
            let mut settings = ApiSettings::default();
            settings.identity.by_source = true;
            settings.identity.shared_secret = b"fuzz".to_vec();
            let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().expect("SQLite"));
            store
                .put_instance(&meta169_tree::example_instance())
                .await
                .expect("the example record");
            let limits = metadata_listener_limits(&settings, ServerLimits::default());
            let service =
                Arc::new(MetadataService::new(store, settings, limits.clone()).expect("service"));
            tokio::spawn(server::serve_direct(
                Pipes(Mutex::new(pipes)),
                metadata_handler(service),
                limits,
                std::future::pending(),
            ));
        });
        Server { runtime, connect }
    })
}

fuzz_target!(|data: &[u8]| {
    let server = server();
    server.runtime.block_on(async {
        let (mut client, pipe) = tokio::io::duplex(PIPE_BYTES);
        server.connect.send(pipe).expect("the listener runs");
        let _ = client.write_all(data).await;
        let _ = client.shutdown().await;
        let mut answers = Vec::new();
        let ended = tokio::time::timeout(PATIENCE, client.read_to_end(&mut answers)).await;
        assert!(
            ended.is_ok(),
            "the connection did not end after the client closed"
        );
    });
});
