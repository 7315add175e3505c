//! The one store suite, run against a SQLite file and against a real
//! PostgreSQL server (testkit starts one per test): both backends must
//! behave the same.

use meta169_store::{Change, Store, StoreError};
use meta169_testkit::postgres::Postgres;
use meta169_tree::{example_instance, Instance};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// How long a change may take to reach another connection's feed here
/// (SQLite polls every 250 ms; PostgreSQL notifies at commit).
const FEED_WAIT: Duration = Duration::from_secs(3);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A database both backends can open several times.
struct Backend {
    url: String,
    _pg: Option<Postgres>,
    _dir: tempfile::TempDir,
}

impl Backend {
    fn sqlite() -> Backend {
        let dir = meta169_testkit::temp_dir();
        Backend {
            url: format!("sqlite:{}", dir.path().join("meta169.db").display()),
            _pg: None,
            _dir: dir,
        }
    }

    fn postgres() -> Backend {
        let pg = Postgres::start();
        Backend {
            url: pg.create_database("meta169"),
            _pg: Some(pg),
            _dir: meta169_testkit::temp_dir(),
        }
    }

    async fn open(&self) -> Arc<dyn Store> {
        meta169_store::open(&self.url)
            .await
            .unwrap_or_else(|e| panic!("open {}: {e}", self.url))
    }
}

/// Each case as a test on each backend.
macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread")]
            async fn $case() { super::$case(super::Backend::sqlite()).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread")]
            async fn $case() { super::$case(super::Backend::postgres()).await })*
        }
    };
}

suite!(
    records_ports_and_passwords_survive_reopening,
    password_is_set_once_and_cleared_by_admin,
    an_address_belongs_to_one_instance_per_network,
    invalid_records_are_refused,
    a_batch_is_written_whole_or_not_at_all,
    concurrent_password_posts_have_one_winner,
    concurrent_claims_of_one_address_have_one_winner,
    another_connections_writes_reach_the_feed,
);

async fn records_ports_and_passwords_survive_reopening(backend: Backend) {
    let instance = example_instance();
    {
        let store = backend.open().await;
        assert_eq!(store.put_instance(&instance).await.unwrap(), 1);
        assert_eq!(store.put_instance(&instance).await.unwrap(), 2);
        store
            .set_password_once(&instance.uuid, "c2VjcmV0")
            .await
            .unwrap();
        // Dropped without any shutdown: what returned must be stored.
    }
    let store = backend.open().await;
    store.ping().await.unwrap();
    let stored = store.get_instance(&instance.uuid).await.unwrap().unwrap();
    assert_eq!(stored.instance, instance);
    assert_eq!(stored.password, "c2VjcmV0");
    assert_eq!(stored.revision, 3);
    let net = &instance.ports[0].network_id;
    assert_eq!(
        store
            .find_by_network_ip(net, ip("127.0.0.1"))
            .await
            .unwrap(),
        vec![instance.uuid.clone()]
    );
    assert!(store
        .find_by_network_ip("other", ip("127.0.0.1"))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store.find_by_ip(ip("127.0.0.1")).await.unwrap(),
        vec![instance.uuid.clone()]
    );
    assert_eq!(
        store
            .find_by_network_mac(net, "FA:16:3E:12:34:56")
            .await
            .unwrap(),
        vec![instance.uuid.clone()]
    );
    assert_eq!(
        store.find_by_mac("fa:16:3e:12:34:56").await.unwrap(),
        vec![instance.uuid.clone()]
    );
    assert!(store
        .find_by_mac("fa:16:3e:00:00:00")
        .await
        .unwrap()
        .is_empty());
    assert!(store.find_by_mac("not a mac").await.unwrap().is_empty());
    let list = store.list_instances().await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].addresses, vec!["127.0.0.1"]);
    assert_eq!(list[0].revision, 3);
    assert!(store.get_instance("missing").await.unwrap().is_none());
}

async fn password_is_set_once_and_cleared_by_admin(backend: Backend) {
    let store = backend.open().await;
    let instance = example_instance();
    store.put_instance(&instance).await.unwrap();
    store
        .set_password_once(&instance.uuid, "first")
        .await
        .unwrap();
    assert!(matches!(
        store.set_password_once(&instance.uuid, "second").await,
        Err(StoreError::PasswordAlreadySet(_))
    ));
    assert!(matches!(
        store
            .set_password_once(&instance.uuid, &"x".repeat(1021))
            .await,
        Err(StoreError::PasswordTooLong(1021))
    ));
    assert!(matches!(
        store.set_password_once("missing", "x").await,
        Err(StoreError::NotFound(_))
    ));
    assert!(store.clear_password(&instance.uuid).await.unwrap());
    store
        .set_password_once(&instance.uuid, "second")
        .await
        .unwrap();
    assert_eq!(
        store
            .get_instance(&instance.uuid)
            .await
            .unwrap()
            .unwrap()
            .password,
        "second"
    );
    assert!(!store.clear_password("missing").await.unwrap());
}

async fn an_address_belongs_to_one_instance_per_network(backend: Backend) {
    let store = backend.open().await;
    let first = example_instance();
    store.put_instance(&first).await.unwrap();
    let mut second = example_instance();
    second.uuid = "second".into();
    let err = store.put_instance(&second).await.unwrap_err();
    assert!(matches!(err, StoreError::AddressTaken { .. }), "{err}");
    assert!(err.to_string().contains(&first.uuid), "{err}");
    // The failed write left nothing behind.
    assert!(store.get_instance("second").await.unwrap().is_none());
    // Same address on another network is fine (overlapping subnets).
    second.ports[0].network_id = "another-network".into();
    store.put_instance(&second).await.unwrap();
    assert_eq!(store.find_by_ip(ip("127.0.0.1")).await.unwrap().len(), 2);
    assert!(store.delete_instance("second").await.unwrap());
    assert!(!store.delete_instance("second").await.unwrap());
    assert_eq!(store.find_by_ip(ip("127.0.0.1")).await.unwrap().len(), 1);
}

async fn invalid_records_are_refused(backend: Backend) {
    let store = backend.open().await;
    let mut bad = example_instance();
    bad.ports[0].mac = "not-a-mac".into();
    assert!(matches!(
        store.put_instance(&bad).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.put_instances(&[example_instance(), bad]).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(store.list_instances().await.unwrap().is_empty());
}

fn numbered(i: usize) -> Instance {
    let mut instance = example_instance();
    instance.uuid = format!("instance-{i:05}");
    instance.ports[0].ips = vec![ip(&format!("10.0.{}.{}", i / 250, 1 + i % 250))];
    instance
}

async fn a_batch_is_written_whole_or_not_at_all(backend: Backend) {
    let store = backend.open().await;
    let batch: Vec<Instance> = (0..500).map(numbered).collect();
    store.put_instances(&batch).await.unwrap();
    assert_eq!(store.list_instances().await.unwrap().len(), 500);
    assert_eq!(
        store.find_by_ip(ip("10.0.1.8")).await.unwrap(),
        vec!["instance-00257".to_string()]
    );
    // The last record takes an address of the first: nothing of it lands.
    let mut clash: Vec<Instance> = (500..510).map(numbered).collect();
    let mut thief = numbered(600);
    thief.ports[0].ips = batch[0].ports[0].ips.clone();
    clash.push(thief);
    let err = store.put_instances(&clash).await.unwrap_err();
    assert!(matches!(err, StoreError::AddressTaken { .. }), "{err}");
    assert_eq!(store.list_instances().await.unwrap().len(), 500);
}

async fn concurrent_password_posts_have_one_winner(backend: Backend) {
    let (a, b) = (backend.open().await, backend.open().await);
    let instance = example_instance();
    a.put_instance(&instance).await.unwrap();
    for round in 0..20 {
        let (x, y) = tokio::join!(
            a.set_password_once(&instance.uuid, "from-a"),
            b.set_password_once(&instance.uuid, "from-b"),
        );
        let winners = [&x, &y].iter().filter(|r| r.is_ok()).count();
        assert_eq!(winners, 1, "round {round}: {x:?} {y:?}");
        for result in [x, y] {
            assert!(
                matches!(result, Ok(()) | Err(StoreError::PasswordAlreadySet(_))),
                "round {round}: {result:?}"
            );
        }
        assert!(a.clear_password(&instance.uuid).await.unwrap());
    }
}

async fn concurrent_claims_of_one_address_have_one_winner(backend: Backend) {
    let (a, b) = (backend.open().await, backend.open().await);
    for round in 0..20 {
        let mut first = numbered(2 * round);
        let mut second = numbered(2 * round + 1);
        second.ports[0].ips = first.ports[0].ips.clone();
        first.name = "first".into();
        second.name = "second".into();
        let (x, y) = tokio::join!(a.put_instance(&first), b.put_instance(&second));
        let winners = [&x, &y].iter().filter(|r| r.is_ok()).count();
        assert_eq!(winners, 1, "round {round}: {x:?} {y:?}");
        let owners = a.find_by_ip(first.ports[0].ips[0]).await.unwrap();
        assert_eq!(owners.len(), 1, "round {round}");
    }
}

async fn next_change(feed: &mut meta169_store::ChangeFeed) -> Change {
    tokio::time::timeout(FEED_WAIT, feed.changes.recv())
        .await
        .expect("a change within the wait")
        .expect("feed open")
}

async fn another_connections_writes_reach_the_feed(backend: Backend) {
    let watcher = backend.open().await;
    let mut feed = watcher.changes();
    // The feed confirms itself soon after it starts.
    let confirmed = async {
        while feed.freshness.age().is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(FEED_WAIT, confirmed)
        .await
        .expect("the feed confirms itself");
    // PostgreSQL's feed starts with a revalidation; drain it.
    while let Ok(Ok(Change::Everything)) =
        tokio::time::timeout(Duration::from_millis(300), feed.changes.recv()).await
    {}

    let writer = backend.open().await;
    let instance = example_instance();
    let uuid = instance.uuid.clone();
    writer.put_instance(&instance).await.unwrap();
    assert_eq!(next_change(&mut feed).await, Change::Record(uuid.clone()));
    writer.set_password_once(&uuid, "pw").await.unwrap();
    assert_eq!(next_change(&mut feed).await, Change::Password(uuid.clone()));
    // The same record again changes nothing a guest reads but the revision.
    writer.put_instance(&instance).await.unwrap();
    assert_eq!(next_change(&mut feed).await, Change::Password(uuid.clone()));
    writer.delete_instance(&uuid).await.unwrap();
    assert_eq!(next_change(&mut feed).await, Change::Record(uuid.clone()));
    assert!(feed.freshness.age().unwrap() < FEED_WAIT);
}

#[tokio::test]
async fn urls_that_cannot_work_say_which_form_does() {
    for url in ["mysql://x", "sqlite:///m.db?mode=ro", "sqlite:"] {
        let err = meta169_store::open(url).await.err().unwrap().to_string();
        assert!(
            err.contains("use sqlite:/path/to/meta169.db"),
            "{url}: {err}"
        );
    }
    let err = meta169_store::open("/nonexistent-dir/x.db")
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("does not exist"), "{err}");
    let err = meta169_store::open("sqlite:/nonexistent-dir/x.db")
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("/nonexistent-dir does not exist"), "{err}");
}

#[tokio::test]
async fn sqlite_schema_is_at_the_latest_version() {
    let dir = meta169_testkit::temp_dir();
    let store = meta169_store::SqliteStore::open(dir.path().join("m.db")).unwrap();
    assert_eq!(
        store.schema_version().unwrap(),
        meta169_store::latest_version()
    );
}
