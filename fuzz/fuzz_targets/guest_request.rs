//! Bytes from a guest, through the agent's namespace listener (hyper's
//! parsing, the head timeout, the Host check, the guest lookup, body
//! limits, the token-PUT rules, error pages) and on to a real meta169
//! API over loopback TCP, signed: whatever a guest sends, its connection
//! ends with answers or is closed, and nothing panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meta169_agent::index::{Index, Target};
use meta169_agent::{guest_service, Pipelining, Proxy, Upstream};
use meta169_api::{metadata_handler, server, ApiSettings};
use meta169_fuzz::{example_api, Rig};
use meta169_http::ServerLimits;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

const SECRET: &[u8] = b"fuzz";
const NETWORK: &str = "fuzz-network";
/// The guest's address: the example record's instance on NETWORK.
const GUEST: [u8; 4] = [10, 0, 0, 5];

fn rig() -> &'static Rig {
    static RIG: OnceLock<Rig> = OnceLock::new();
    RIG.get_or_init(|| {
        Rig::start(SocketAddr::from((GUEST, 40_000)), |pipes| async {
            // The metadata API, signed mode, on loopback.
            let mut settings = ApiSettings::default();
            settings.identity.shared_secret = SECRET.to_vec();
            let (service, limits) = example_api(settings).await;
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
            let instance = meta169_tree::example_instance();
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
                pipes,
                guest_service(Arc::new(proxy), Arc::from(NETWORK)),
                ServerLimits::default(),
                std::future::pending(),
            ));
        })
    })
}

fuzz_target!(|data: &[u8]| {
    rig().exchange(data);
});
