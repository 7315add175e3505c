//! The operations listeners of both daemons, scraped after known traffic
//! with the Prometheus project's own parser, and their readiness.

mod common;

use common::node::Node;
use common::{get, start_serve, BIN};
use meta169_testkit::{free_port, read_log, sample, scrape, temp_dir, wait_until, Process};
use std::process::Command;
use std::time::Duration;

#[test]
fn serve_counts_known_traffic_and_readyz_follows_the_store() {
    let dir = temp_dir();
    let (store, _) = common::example_store(dir.path());
    let config = dir.path().join("meta169.toml");
    std::fs::write(
        &config,
        "[serve]\nmax_staleness_seconds = 1\n[serve.identity]\nby_source = true\nsigned = false\nby_address = false\n",
    )
    .unwrap();
    let (listen, admin, ops) = (free_port(), free_port(), free_port());
    let (listen, admin, ops) = (
        format!("127.0.0.1:{listen}"),
        format!("127.0.0.1:{admin}"),
        format!("127.0.0.1:{ops}"),
    );
    let _serve = start_serve(
        "serve",
        &[
            "--config",
            &config.display().to_string(),
            "--store",
            &store,
            "--listen",
            &listen,
            "--admin-listen",
            &admin,
            "--ops-listen",
            &ops,
        ],
        None,
        dir.path(),
    );
    // The example instance has 127.0.0.1: every request below is its own.
    for _ in 0..3 {
        assert_eq!(
            get(&format!("http://{listen}/openstack/latest/meta_data.json")).0,
            200
        );
    }
    for _ in 0..2 {
        assert_eq!(
            get(&format!("http://{listen}/latest/meta-data/nothing-here")).0,
            404
        );
    }
    assert_eq!(get(&format!("http://{listen}/")).0, 200);
    assert_eq!(get(&format!("http://{ops}/healthz")), (200, "ok\n".into()));
    // Ready once the store's change feed is first confirmed: at once on an
    // idle machine, a moment later on a busy one.
    assert!(wait_until(Duration::from_secs(10), || get(&format!(
        "http://{ops}/readyz"
    ))
    .0 == 200));
    assert_eq!(
        get(&format!("http://{ops}/readyz")),
        (200, "ready\n".into())
    );

    let samples = scrape(&format!("http://{ops}/metrics"));
    let requests = |status: &str, tree: &str, identity: &str| {
        sample(
            &samples,
            "meta169_serve_requests_total",
            &[("status", status), ("tree", tree), ("identity", identity)],
        )
    };
    assert_eq!(requests("200", "openstack", "by_source"), 3.0);
    assert_eq!(requests("404", "ec2", "by_source"), 2.0);
    assert_eq!(requests("200", "root", "none"), 1.0);
    assert_eq!(
        sample(
            &samples,
            "meta169_serve_request_duration_seconds_count",
            &[]
        ),
        6.0
    );
    // Five identified requests: the first loads the record, four hit the cache.
    assert_eq!(
        sample(&samples, "meta169_serve_cache_misses_total", &[]),
        1.0
    );
    assert_eq!(sample(&samples, "meta169_serve_cache_hits_total", &[]), 4.0);
    assert_eq!(sample(&samples, "meta169_serve_cache_instances", &[]), 1.0);
    assert_eq!(sample(&samples, "meta169_serve_ready", &[]), 1.0);

    // The store file gone: not ready once the staleness bound (1 s here)
    // has passed, and it says why.
    let file = store.strip_prefix("sqlite://").unwrap();
    std::fs::remove_file(file).unwrap();
    assert!(wait_until(Duration::from_secs(5), || get(&format!(
        "http://{ops}/readyz"
    ))
    .0 == 503));
    let (status, body) = get(&format!("http://{ops}/readyz"));
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("cannot open"), "{body}");
    assert!(body.starts_with("not ready: store unreachable"), "{body}");
    assert_eq!(
        sample(
            &scrape(&format!("http://{ops}/metrics")),
            "meta169_serve_ready",
            &[]
        ),
        0.0
    );
}

#[test]
fn the_agent_counts_its_guests_and_is_ready_once_synced() {
    let mut node = Node::start();
    // The Southbound is down when the agent starts: alive, not ready.
    node.sb.kill();
    let mut command = Command::new(BIN);
    command
        .arg("agent")
        .args(&node.agent_args)
        .env("RUST_LOG", "info");
    let _agent = Process::start("agent", command, node.dir.path());
    let ops = node.ops.clone();
    assert!(wait_until(Duration::from_secs(10), || get(&format!(
        "http://{ops}/healthz"
    ))
    .0 == 200));
    let (status, body) = get(&format!("http://{ops}/readyz"));
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("not been read in full"), "{body}");

    node.sb.restart();
    let log = || read_log(&node.dir.path().join("agent.log"));
    assert!(
        wait_until(Duration::from_secs(20), || get(&format!(
            "http://{ops}/readyz"
        ))
        .0 == 200),
        "{}",
        log()
    );
    assert!(
        wait_until(Duration::from_secs(10), || node.fetch() == "demo.novalocal"),
        "{}",
        log()
    );
    for _ in 0..2 {
        assert_eq!(node.fetch(), "demo.novalocal");
    }
    let samples = scrape(&format!("http://{ops}/metrics"));
    let network = node.network.clone();
    assert_eq!(
        sample(
            &samples,
            "meta169_agent_network_requests_total",
            &[("network", &network)]
        ),
        3.0
    );
    assert_eq!(
        sample(
            &samples,
            "meta169_agent_responses_total",
            &[("status", "200")]
        ),
        3.0
    );
    assert_eq!(
        sample(
            &samples,
            "meta169_agent_upstream_duration_seconds_count",
            &[]
        ),
        3.0
    );
    assert_eq!(
        sample(&samples, "meta169_agent_southbound_connected", &[]),
        1.0
    );
    assert_eq!(sample(&samples, "meta169_agent_networks", &[]), 1.0);
    assert_eq!(
        sample(&samples, "meta169_agent_namespaces_created_total", &[]),
        1.0
    );
    assert_eq!(sample(&samples, "meta169_agent_listeners", &[]), 1.0);
    assert_eq!(sample(&samples, "meta169_agent_index_entries", &[]), 1.0);
    assert_eq!(sample(&samples, "meta169_agent_ready", &[]), 1.0);

    // The Southbound going away later does not make it unready (it serves
    // from its index); the reconnect is counted.
    node.sb.kill();
    assert_eq!(get(&format!("http://{ops}/readyz")).0, 200);
    node.sb.restart();
    assert!(wait_until(Duration::from_secs(20), || {
        sample(
            &scrape(&format!("http://{ops}/metrics")),
            "meta169_agent_southbound_reconnects_total",
            &[],
        ) == 1.0
    }));
}
