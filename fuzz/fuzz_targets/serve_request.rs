//! Bytes from a client, through serve's real listener and metadata
//! handler (the quick path's reading of plain GETs and its hand-over to
//! hyper, hyper's parsing, the head timeout, the Host check, path
//! decoding, identification in every mode, the tree, the password
//! endpoint, session tokens): whatever arrives, the connection ends with
//! answers or is closed, and nothing panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meta169_api::{metadata_handler, server, ApiSettings};
use meta169_fuzz::{example_api, Rig};
use std::net::SocketAddr;
use std::sync::OnceLock;

fn rig() -> &'static Rig {
    static RIG: OnceLock<Rig> = OnceLock::new();
    // The peer is loopback: a trusted proxy, and the example instance's
    // own address.
    RIG.get_or_init(|| {
        Rig::start(SocketAddr::from(([127, 0, 0, 1], 40_000)), |pipes| async {
            let mut settings = ApiSettings::default();
            settings.identity.by_source = true;
            settings.identity.shared_secret = b"fuzz".to_vec();
            let (service, limits) = example_api(settings).await;
            tokio::spawn(server::serve_direct(
                pipes,
                metadata_handler(service),
                limits,
                std::future::pending(),
            ));
        })
    })
}

fuzz_target!(|data: &[u8]| {
    rig().exchange(data);
});
