//! Spoofing, measured: from one guest, 40,000 randomized requests claiming
//! another instance (its signed headers with and without a valid
//! signature, `X-Forwarded-For` variants, network-id headers, letter case,
//! repeated and folded headers, encoded paths) against `meta169 serve` in
//! each identity mode, sent directly and through a haproxy-style proxy
//! that sets the network header and appends `X-Forwarded-For` but passes
//! the guest's other headers on. Both instances have the address 10.0.0.5,
//! on different networks. No answer may carry the other instance's data,
//! and no POST may set its password. Counts are printed
//! (`cargo test --test spoofing -- --nocapture`).

mod common;

use meta169_testkit::spoof::{self, Tally, Victim};
use meta169_testkit::temp_dir;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

const SECRET: &str = "spoofing-secret";
const NETWORK_A: &str = "11111111-0000-4000-8000-00000000000a";
const NETWORK_B: &str = "22222222-0000-4000-8000-00000000000b";
const GUEST: &str = "aaaaaaaa-0000-4000-8000-00000000000a";
const VICTIM: &str = "bbbbbbbb-0000-4000-8000-00000000000b";
/// The guest's own address on loopback, and the victim's.
const GUEST_SOURCE: &str = "127.0.0.2";
const VICTIM_SOURCE: &str = "127.0.0.3";
/// The address both instances have, each on its own network.
const SHARED_ADDRESS: &str = "10.0.0.5";
/// The trusted proxy's address.
const PROXY_SOURCE: &str = "127.0.0.9";
const GUEST_PASSWORD: &str = "guest-a-password";
const VICTIM_PASSWORD: &str = "victim-b-password";
/// Only the guest's answers hold these; only the victim's hold those.
const OWN: &[&str] = &["guest-a", "i-0000000a", GUEST_PASSWORD];
const THEIRS: &[&str] = &["victim-b", "i-0000000b", VICTIM_PASSWORD];
/// Requests per identity mode, in all.
const REQUESTS_PER_MODE: usize = 10_000;
/// Client threads per run.
const THREADS: usize = 4;
/// Share of the attacks that are password POSTs.
const POST_SHARE: f64 = 0.1;

fn record(uuid: &str, name: &str, project: &str, ec2: &str, network: &str, source: &str) -> String {
    serde_json::json!({
        "uuid": uuid, "name": name, "hostname": name, "project_id": project,
        "ec2_instance_id": ec2,
        "ports": [{"id": format!("port-{name}"), "network_id": network,
                   "mac": if name == "guest-a" { "fa:16:3e:00:00:0a" } else { "fa:16:3e:00:00:0b" },
                   "ips": [source, SHARED_ADDRESS]}],
    })
    .to_string()
}

/// How the attacker's requests reach serve.
#[derive(Clone, Copy, Debug)]
enum Route {
    /// From the guest's own address.
    Direct,
    /// Through a trusted haproxy: the guest's `X-OVN-Network-ID` removed,
    /// the guest's network set and its address appended as the last
    /// `X-Forwarded-For`, everything else passed on.
    Haproxy,
}

fn run(target: SocketAddr, way: Route, count: usize, seed: u64) -> Tally {
    let victim = std::sync::Arc::new(Victim {
        instance_id: VICTIM.into(),
        project_id: "project-b".into(),
        valid_signature: meta169_http::signing::sign_instance_id(SECRET.as_bytes(), VICTIM),
        addresses: vec![VICTIM_SOURCE.into(), SHARED_ADDRESS.into()],
        network_id: NETWORK_B.into(),
    });
    let mut barrage = spoof::Barrage {
        target,
        source: Some(GUEST_SOURCE.parse().unwrap()),
        count,
        threads: THREADS,
        seed,
        post_share: POST_SHARE,
        removed: Vec::new(),
        appended: Vec::new(),
    };
    if let Route::Haproxy = way {
        barrage.source = Some(PROXY_SOURCE.parse().unwrap());
        barrage.removed = vec!["X-OVN-Network-ID"];
        barrage.appended = vec![
            ("X-OVN-Network-ID".into(), NETWORK_A.into()),
            ("X-Forwarded-For".into(), SHARED_ADDRESS.into()),
        ];
    }
    barrage.run(&victim, OWN, THEIRS)
}

fn serve(dir: &Path, name: &str, identity: &str) -> (meta169_testkit::Process, SocketAddr) {
    let config = format!(
        "[serve.identity]\n{identity}\nshared_secret_file = {:?}\ntrusted_proxies = [\"{PROXY_SOURCE}/32\"]\n",
        dir.join("secret").display().to_string()
    );
    let store = format!("sqlite://{}/store.db", dir.display());
    let (process, listen) = common::serve_on_loopback(name, dir, &config, &store);
    (process, listen.parse().unwrap())
}

fn get_from(source: &str, target: SocketAddr, path: &str) -> (u16, String) {
    meta169_testkit::http_get_from(
        source.parse().unwrap(),
        target,
        path,
        Duration::from_secs(5),
        Duration::from_secs(5),
    )
    .unwrap()
}

fn post_from(source: &str, target: SocketAddr, body: &str) -> u16 {
    let request = format!(
        "POST /openstack/latest/password HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    meta169_testkit::send_from(
        Some(source.parse().unwrap()),
        target,
        request.as_bytes(),
        Duration::from_secs(5),
        Duration::from_secs(5),
    )
    .unwrap()
    .0
}

#[test]
fn no_spoofed_request_reaches_another_instance() {
    let dir = temp_dir();
    std::fs::write(dir.path().join("secret"), SECRET).unwrap();
    let store = format!("sqlite://{}/store.db", dir.path().display());
    for (i, text) in [
        record(
            GUEST,
            "guest-a",
            "project-a",
            "i-0000000a",
            NETWORK_A,
            GUEST_SOURCE,
        ),
        record(
            VICTIM,
            "victim-b",
            "project-b",
            "i-0000000b",
            NETWORK_B,
            VICTIM_SOURCE,
        ),
    ]
    .iter()
    .enumerate()
    {
        let file = dir.path().join(format!("record-{i}.json"));
        std::fs::write(&file, text).unwrap();
        common::run_ok(&[
            "instance",
            "--store",
            &store,
            "add",
            &file.to_string_lossy(),
        ]);
    }

    let modes = [
        (
            "by_source",
            "signed = false\nby_address = false\nby_source = true",
            &[Route::Direct][..],
        ),
        (
            "signed",
            "signed = true\nby_address = false\nby_source = false",
            &[Route::Direct],
        ),
        (
            "by_address",
            "signed = false\nby_address = true\nby_source = false",
            &[Route::Direct, Route::Haproxy],
        ),
        (
            "all three",
            "signed = true\nby_address = true\nby_source = true",
            &[Route::Direct, Route::Haproxy],
        ),
    ];
    let mut total = Tally::default();
    let mut seed = u64::from(std::process::id());
    println!("seed {seed}");
    for (n, (mode, identity, ways)) in modes.iter().enumerate() {
        let (mut server, target) = serve(dir.path(), &format!("serve-{n}"), identity);
        if n == 0 {
            // Each instance posts its own password, as a guest would.
            assert_eq!(post_from(GUEST_SOURCE, target, GUEST_PASSWORD), 200);
            assert_eq!(post_from(VICTIM_SOURCE, target, VICTIM_PASSWORD), 200);
        }
        for way in *ways {
            let tally = run(target, *way, REQUESTS_PER_MODE / ways.len(), seed);
            seed += THREADS as u64;
            println!("{mode}, {way:?}: {tally}");
            total.merge(tally);
            assert_eq!(tally.crossed, 0, "{mode}, {way:?}: {tally}");
        }
        server.stop();
    }
    println!("in all: {total}");

    // The victim's own view is intact: its password was not replaced.
    let (mut server, target) = serve(
        dir.path(),
        "serve-check",
        "signed = false\nby_address = false\nby_source = true",
    );
    let (status, body) = get_from(VICTIM_SOURCE, target, "/openstack/latest/password");
    assert_eq!((status, body.as_str()), (200, VICTIM_PASSWORD));
    let (status, body) = get_from(GUEST_SOURCE, target, "/openstack/latest/password");
    assert_eq!((status, body.as_str()), (200, GUEST_PASSWORD));
    server.stop();
    assert_eq!(total.crossed, 0);
    assert!(total.sent >= 4 * REQUESTS_PER_MODE);
    assert!(
        total.own > 0,
        "some attacks were answered with the guest's own data: {total}"
    );
}
