//! Two `meta169 serve` replicas on one real PostgreSQL server: a change
//! through either reaches the other's cache within a second, a guest's
//! password POST is decided once across both, and while the database is
//! down both keep answering from their caches, turn not ready after the
//! staleness bound, and recover by themselves when it returns.

mod common;

use common::{get, http, run_ok, start_serve};
use meta169_testkit::postgres::Postgres;
use meta169_testkit::{free_port, temp_dir, wait_until, Process};
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// The staleness bound the replicas run with here.
const STALENESS_SECONDS: u64 = 2;

/// The bound: a change through one replica served by the other.
const PROPAGATION_BOUND: Duration = Duration::from_secs(1);
/// How long a replica may take to become ready after it listens.
const STARTUP_BOUND: Duration = Duration::from_secs(10);

const TOKEN: &str = "replica-admin-token";

struct Replica {
    _process: Process,
    api: String,
    admin: String,
    ops: String,
}

impl Replica {
    fn start(name: &str, dir: &Path, store: &str) -> Replica {
        let token = dir.join("token");
        std::fs::write(&token, TOKEN).unwrap();
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "[serve]\ncache_seconds = 2\nmax_staleness_seconds = {STALENESS_SECONDS}\n\
                 [serve.identity]\nby_source = true\nsigned = false\nby_address = false\n\
                 [serve.admin]\ntoken_file = \"{}\"\n",
                token.display()
            ),
        )
        .unwrap();
        let (api, admin, ops) = (
            format!("127.0.0.1:{}", free_port()),
            format!("127.0.0.1:{}", free_port()),
            format!("127.0.0.1:{}", free_port()),
        );
        let process = start_serve(
            name,
            &[
                "--config",
                &config.display().to_string(),
                "--store",
                store,
                "--listen",
                &api,
                "--admin-listen",
                &admin,
                "--ops-listen",
                &ops,
            ],
            None,
            dir,
        );
        Replica {
            _process: process,
            api,
            admin,
            ops,
        }
    }

    fn hostname(&self) -> String {
        let (status, body) = get(&format!("http://{}/latest/meta-data/hostname", self.api));
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Read the hostname and say whether it came from the cache.
    fn hostname_from_cache(&self) -> bool {
        let hits = || {
            let samples = meta169_testkit::scrape(&format!("http://{}/metrics", self.ops));
            meta169_testkit::sample(&samples, "meta169_serve_cache_hits_total", &[])
        };
        let before = hits();
        self.hostname();
        hits() > before
    }

    fn ready(&self) -> u16 {
        get(&format!("http://{}/readyz", self.ops)).0
    }

    fn admin(&self, method: &str, path: &str, body: &[u8]) -> u16 {
        let auth = format!("Bearer {TOKEN}");
        http(
            method,
            &format!("http://{}{path}", self.admin),
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            body,
        )
        .0
    }

    fn post_password(&self, password: &str) -> u16 {
        http(
            "POST",
            &format!("http://{}/openstack/latest/password", self.api),
            &[],
            password.as_bytes(),
        )
        .0
    }
}

fn rename(replica: &Replica, hostname: &str) {
    let mut instance = meta169_tree::example_instance();
    instance.hostname = hostname.into();
    let body = serde_json::to_vec(&instance).unwrap();
    let status = replica.admin("PUT", &format!("/v1/instances/{}", instance.uuid), &body);
    assert_eq!(status, 200);
}

/// How long until `replica` serves `hostname`, at most `limit`.
fn until_served(replica: &Replica, hostname: &str, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let expected = format!("{hostname}.novalocal");
    wait_until(limit, || replica.hostname() == expected).then(|| started.elapsed())
}

#[test]
fn two_replicas_on_one_postgresql_agree() {
    let mut pg = Postgres::start();
    let store = pg.create_database("replicas");
    let dir = temp_dir();
    // The record comes in through `meta169 instance`, straight to the database.
    let record = dir.path().join("instance.json");
    std::fs::write(&record, run_ok(&["instance", "example"])).unwrap();
    run_ok(&[
        "instance",
        "--store",
        &store,
        "add",
        &record.display().to_string(),
    ]);
    let a = Replica::start("serve-a", dir.path(), &store);
    let b = Replica::start("serve-b", dir.path(), &store);
    for replica in [&a, &b] {
        assert_eq!(replica.hostname(), "demo.novalocal");
        // Ready once the store's change feed is first confirmed (its
        // listener connected): at once on an idle machine, later on a
        // busy one.
        assert!(
            wait_until(STARTUP_BOUND, || replica.ready() == 200),
            "a replica did not become ready"
        );
    }

    // Through A's admin API: B, which has the record cached, follows.
    rename(&a, "renamed-by-a");
    let took = until_served(&b, "renamed-by-a", PROPAGATION_BOUND)
        .expect("replica B served A's change within 1 s");
    eprintln!("A's change served by B after {took:?}");
    // Through `meta169 instance` against the database: both follow.
    let mut instance = meta169_tree::example_instance();
    instance.hostname = "renamed-by-cli".into();
    std::fs::write(&record, serde_json::to_vec(&instance).unwrap()).unwrap();
    run_ok(&[
        "instance",
        "--store",
        &store,
        "add",
        &record.display().to_string(),
    ]);
    for replica in [&a, &b] {
        let took = until_served(replica, "renamed-by-cli", PROPAGATION_BOUND)
            .expect("the command line's change served within 1 s");
        eprintln!("the command line's change served after {took:?}");
    }

    // The same guest posts its password to both at once, 100 times: one
    // 200 and one 409 every round, decided by the database.
    let uuid = instance.uuid.clone();
    let (a, b) = (Arc::new(a), Arc::new(b));
    for round in 0..100 {
        let barrier = Arc::new(Barrier::new(2));
        let posts: Vec<_> = [(a.clone(), "from-a"), (b.clone(), "from-b")]
            .into_iter()
            .map(|(replica, password)| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    replica.post_password(password)
                })
            })
            .collect();
        let mut statuses: Vec<u16> = posts.into_iter().map(|p| p.join().unwrap()).collect();
        statuses.sort();
        assert_eq!(statuses, [200, 409], "round {round}");
        assert_eq!(
            a.admin("DELETE", &format!("/v1/instances/{uuid}/password"), b""),
            204
        );
    }

    // The database goes away: both keep answering what they have cached
    // (past their 2 s cache time too), and turn not ready after the bound.
    // First each must hold the record: the password changes' notifications
    // may still be arriving, and a load they overtake is not kept.
    for replica in [&a, &b] {
        assert_eq!(replica.hostname(), "renamed-by-cli.novalocal");
        assert!(
            wait_until(Duration::from_secs(10), || replica.hostname_from_cache()),
            "the record never stayed in a replica's cache"
        );
    }
    pg.stop();
    let stopped = Instant::now();
    for replica in [&a, &b] {
        assert!(
            wait_until(Duration::from_secs(10), || replica.ready() == 503),
            "not ready after the bound"
        );
    }
    eprintln!(
        "both not ready {:?} after the database stopped",
        stopped.elapsed()
    );
    std::thread::sleep(Duration::from_secs(2));
    for replica in [&a, &b] {
        assert_eq!(replica.hostname(), "renamed-by-cli.novalocal");
    }
    let (_, why) = get(&format!("http://{}/readyz", a.ops));
    assert!(why.contains("store unreachable"), "{why}");

    // It returns: both become ready and follow changes again, no restart.
    pg.start_again();
    let back = Instant::now();
    for replica in [&a, &b] {
        assert!(
            wait_until(Duration::from_secs(15), || replica.ready() == 200),
            "not ready again"
        );
    }
    eprintln!(
        "both ready {:?} after the database returned",
        back.elapsed()
    );
    rename(&b, "after-the-outage");
    until_served(&a, "after-the-outage", PROPAGATION_BOUND)
        .expect("A follows B's change after the outage");
}
