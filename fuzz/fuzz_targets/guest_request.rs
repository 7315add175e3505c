//! Bytes from a guest, through the agent's namespace listener (hyper's
//! parsing, the head timeout, the Host check, the guest lookup, body
//! limits, the token-PUT rules, error pages) and on to a real meta169
//! API over loopback TCP, signed: whatever a guest sends, its connection
//! ends with answers or is closed, and nothing panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meta169_agent::index::{Index, Target};
use meta169_agent::{guest_service, Pipelining, Proxy, Upstream};
use meta169_api::{
    metadata_handler, metadata_listener_limits, server, ApiSettings, MetadataService,
};
use meta169_http::{Accept, ServerLimits};
use meta169_store::{SqliteStore, Store};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::{mpsc, Mutex};

/// How long a connection may take to end once the guest has sent
/// everything and closed its side: far beyond any answer.
const PATIENCE: Duration = Duration::from_secs(5);
/// Room in the in-memory pipe each way.
const PIPE_BYTES: usize = 1 << 20;
const SECRET: &[u8] = b"fuzz";
const NETWORK: &str = "fuzz-network";
/// The guest's address: the example record's instance on NETWORK.
const GUEST: [u8; 4] = [10, 0, 0, 5];

/// Connections handed to the listener, all from the guest's address.
struct Pipes(Mutex<mpsc::UnboundedReceiver<DuplexStream>>);

impl Accept for Pipes {
    type Stream = DuplexStream;

    async fn accept(&self) -> std::io::Result<(DuplexStream, SocketAddr)> {
        match self.0.lock().await.recv().await {
            Some(pipe) => Ok((pipe, SocketAddr::from((GUEST, 40_000)))),
            None => std::future::pending().await,
        }
    }
}

struct Node {
    runtime: tokio::runtime::Runtime,
    connect: mpsc::UnboundedSender<DuplexStream>,
}

fn node() -> &'static Node {
    static NODE: OnceLock<Node> = OnceLock::new();
    NODE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let (connect, pipes) = mpsc::unbounded_channel();
        runtime.block_on(async {
            // The metadata API, signed mode, on loopback.
            let mut settings = ApiSettings::default();
            settings.identity.shared_secret = SECRET.to_vec();
            let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().expect("SQLite"));
            let instance = meta169_tree::example_instance();
            store
                .put_instance(&instance)
                .await
                .expect("the example record");
            let limits = metadata_listener_limits(&settings, ServerLimits::default());
            let service =
                Arc::new(MetadataService::new(store, settings, limits.clone()).expect("service"));
            let api = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let url = format!("http://{}", api.local_addr().expect("address"));
            tokio::spawn(server::serve_direct(
                api,
                metadata_handler(service),
                limits,
                std::future::pending(),
            ));
            // The agent's side: the guest known on NETWORK.
            let proxy = Proxy::new(&Upstream {
                url,
                shared_secret: SECRET.to_vec(),
                timeout: Duration::from_secs(2),
                insecure: false,
                ca_cert: None,
                client_cert: None,
                client_key: None,
                pipelining: Pipelining::Auto,
            })
            .expect("a proxy");
            let mut index = Index::default();
            index.insert(
                NETWORK,
                [0xfa, 0x16, 0x3e, 0x12, 0x34, 0x56],
                &[IpAddr::from(GUEST)],
                Target {
                    instance_id: instance.uuid.clone(),
                    project_id: instance.project_id.clone(),
                },
            );
            proxy.set_index(index);
            tokio::spawn(meta169_http::serve(
                Pipes(Mutex::new(pipes)),
                guest_service(Arc::new(proxy), Arc::from(NETWORK)),
                ServerLimits::default(),
                std::future::pending(),
            ));
        });
        Node { runtime, connect }
    })
}

fuzz_target!(|data: &[u8]| {
    let node = node();
    node.runtime.block_on(async {
        let (mut guest, pipe) = tokio::io::duplex(PIPE_BYTES);
        node.connect.send(pipe).expect("the listener runs");
        let _ = guest.write_all(data).await;
        let _ = guest.shutdown().await;
        let mut answers = Vec::new();
        let ended = tokio::time::timeout(PATIENCE, guest.read_to_end(&mut answers)).await;
        assert!(
            ended.is_ok(),
            "the connection did not end after the guest closed"
        );
    });
});
