//! What only the PostgreSQL backend has: TLS with libpq's sslmode
//! meanings, replicas migrating together, and a change feed that reports
//! an outage and starts over after it. Against real servers from testkit.

use meta169_store::{Change, PostgresStore, Store, StoreUrl};
use meta169_testkit::postgres::{Options, Postgres};
use std::time::Duration;

async fn open(url: &str) -> Result<std::sync::Arc<dyn Store>, String> {
    meta169_store::open(url).await.map_err(|e| e.to_string())
}

/// The message of an open that must fail.
async fn refusal(url: &str) -> String {
    match open(url).await {
        Ok(_) => panic!("{url} opened"),
        Err(e) => e,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_modes_mean_what_libpq_says() {
    let pki = meta169_testkit::temp_dir();
    meta169_testkit::make_pki(pki.path(), &["server", "other"], Some("IP:127.0.0.1"));
    // A second CA that signed nothing the server has.
    let stranger = meta169_testkit::temp_dir();
    meta169_testkit::make_pki(stranger.path(), &[], None);
    let pg = Postgres::start_with(Options {
        tls: Some((pki.path().join("server.pem"), pki.path().join("server.key"))),
    });
    let base = pg.create_database("tls");
    let ca = pki.path().join("ca.pem");

    // The server takes TLS only; a plain connection is refused by it.
    let err = refusal(&format!("{base}?sslmode=disable")).await;
    assert!(
        err.contains("pg_hba.conf") && err.contains("no encryption"),
        "{err}"
    );
    // require: encrypted, any certificate.
    let store = open(&format!("{base}?sslmode=require"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    store
        .put_instance(&meta169_tree::example_instance())
        .await
        .unwrap();
    // verify-full with the right CA, to the name (IP) in the certificate.
    let store = open(&format!(
        "{base}?sslmode=verify-full&sslrootcert={}",
        ca.display()
    ))
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(store.list_instances().await.unwrap().len(), 1);
    // verify-full against a CA that did not sign it fails, and says why.
    let err = refusal(&format!(
        "{base}?sslmode=verify-full&sslrootcert={}",
        stranger.path().join("ca.pem").display()
    ))
    .await;
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    // verify-full by a name the certificate does not carry fails;
    // verify-ca, which checks only the chain, connects.
    let by_name = base.replace("127.0.0.1", "localhost");
    let err = refusal(&format!(
        "{by_name}?sslmode=verify-full&sslrootcert={}",
        ca.display()
    ))
    .await;
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    open(&format!(
        "{by_name}?sslmode=verify-ca&sslrootcert={}",
        ca.display()
    ))
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    // A missing CA file is named at start.
    let err = refusal(&format!(
        "{base}?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem"
    ))
    .await;
    assert!(err.contains("/nonexistent/ca.pem"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_credentials_and_absent_servers_get_one_clear_message() {
    let pg = Postgres::start();
    let url = pg.create_database("creds");
    let wrong = url.replace(meta169_testkit::postgres::PASSWORD, "wrong");
    let err = refusal(&wrong).await;
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(!err.contains("wrong"), "the password leaked: {err}");
    let nobody = format!(
        "postgres://meta169@127.0.0.1:{}/x?connect_timeout=2",
        meta169_testkit::free_port()
    );
    let err = refusal(&nobody).await;
    assert!(err.to_lowercase().contains("connect"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_starting_together_migrate_once() {
    let pg = Postgres::start();
    let url = pg.create_database("together");
    let opens = (0..6).map(|_| {
        let url = url.clone();
        tokio::spawn(async move {
            let StoreUrl::Postgres(parsed) = StoreUrl::parse(&url).unwrap() else {
                unreachable!()
            };
            PostgresStore::connect(*parsed).await
        })
    });
    for open in opens {
        let store = open.await.unwrap().unwrap();
        assert_eq!(
            store.schema_version().await.unwrap(),
            meta169_store::latest_version()
        );
    }
    assert_eq!(
        pg.psql("together", "SELECT count(*) FROM meta169_schema"),
        "1"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_feed_reports_an_outage_and_starts_over_after_it() {
    let mut pg = Postgres::start();
    let url = pg.create_database("outage");
    let store = open(&url).await.unwrap_or_else(|e| panic!("{e}"));
    let mut feed = store.changes();
    let wait = |secs| Duration::from_secs(secs);
    let up = async {
        while feed.freshness.age().is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(wait(5), up).await.unwrap();
    assert_eq!(feed.changes.recv().await.unwrap(), Change::Everything);

    pg.kill();
    // No confirmation any more: the age grows and the reason is kept.
    let stale = async {
        while feed.freshness.last_error().is_none()
            || feed.freshness.age().unwrap() < Duration::from_secs(2)
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(wait(10), stale).await.unwrap();
    assert!(store.ping().await.is_err());

    pg.start_again();
    // Back: everything cached is suspect, and the age is small again.
    let change = tokio::time::timeout(wait(10), feed.changes.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(change, Change::Everything);
    // Confirmed right after the announcement.
    let fresh = async {
        while feed.freshness.age().unwrap() > Duration::from_secs(1) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(wait(2), fresh).await.unwrap();
    assert_eq!(feed.freshness.last_error(), None);
    store.ping().await.unwrap();
    // And it follows changes again, made by hand in SQL too.
    store
        .put_instance(&meta169_tree::example_instance())
        .await
        .unwrap();
    let uuid = meta169_tree::example_instance().uuid;
    let next = tokio::time::timeout(wait(5), feed.changes.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next, Change::Record(uuid.clone()));
    pg.psql(
        "outage",
        &format!("UPDATE instances SET password = 'x' WHERE uuid = '{uuid}'"),
    );
    let next = tokio::time::timeout(wait(5), feed.changes.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next, Change::Password(uuid));
}
