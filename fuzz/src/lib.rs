//! What the fuzz targets that drive a real listener share: connections
//! handed over in-memory pipes from a fixed peer address, one runtime
//! for the whole run, the client's side of an exchange, and the metadata
//! API over an in-memory store holding the example record.

use meta169_api::{metadata_listener_limits, ApiSettings, MetadataService, ServerLimits};
use meta169_http::Accept;
use meta169_store::{SqliteStore, Store};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::{mpsc, Mutex};

/// How long a connection may take to end once the client has sent
/// everything and closed its side: far beyond any answer.
const PATIENCE: Duration = Duration::from_secs(5);
/// Room in the in-memory pipe each way.
const PIPE_BYTES: usize = 1 << 20;

/// Connections for a listener under test, all from `peer`.
pub struct Pipes {
    peer: SocketAddr,
    pending: Mutex<mpsc::UnboundedReceiver<DuplexStream>>,
}

impl Accept for Pipes {
    type Stream = DuplexStream;

    async fn accept(&self) -> std::io::Result<(DuplexStream, SocketAddr)> {
        match self.pending.lock().await.recv().await {
            Some(pipe) => Ok((pipe, self.peer)),
            None => std::future::pending().await,
        }
    }
}

/// A listener under test on its own runtime, for the whole fuzzing run.
pub struct Rig {
    runtime: tokio::runtime::Runtime,
    connect: mpsc::UnboundedSender<DuplexStream>,
}

impl Rig {
    /// A current-thread runtime on which `start` sets up the listener,
    /// handed the [`Pipes`] its connections arrive on (from `peer`).
    pub fn start<F, Fut>(peer: SocketAddr, start: F) -> Rig
    where
        F: FnOnce(Pipes) -> Fut,
        Fut: Future<Output = ()>,
    {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let (connect, pending) = mpsc::unbounded_channel();
        runtime.block_on(start(Pipes {
            peer,
            pending: Mutex::new(pending),
        }));
        Rig { runtime, connect }
    }

    /// One connection: send `data`, close the sending side, read to the
    /// end. The connection must end by itself within [`PATIENCE`].
    pub fn exchange(&self, data: &[u8]) {
        self.runtime.block_on(async {
            let (mut client, pipe) = tokio::io::duplex(PIPE_BYTES);
            self.connect.send(pipe).expect("the listener runs");
            let _ = client.write_all(data).await;
            let _ = client.shutdown().await;
            let mut answers = Vec::new();
            let ended = tokio::time::timeout(PATIENCE, client.read_to_end(&mut answers)).await;
            assert!(
                ended.is_ok(),
                "the connection did not end after the client closed"
            );
        });
    }
}

/// The metadata API with `settings` over an in-memory SQLite store that
/// holds the example record, and its listener limits.
pub async fn example_api(settings: ApiSettings) -> (Arc<MetadataService>, ServerLimits) {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().expect("SQLite"));
    store
        .put_instance(&meta169_tree::example_instance())
        .await
        .expect("the example record");
    let limits = metadata_listener_limits(&settings, ServerLimits::default());
    let service = Arc::new(MetadataService::new(store, settings, limits.clone()).expect("service"));
    (service, limits)
}
