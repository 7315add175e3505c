//! The SQLite store against a real database file.

use meta169_store::{SqliteStore, Store, StoreError};
use meta169_tree::example_instance;
use std::net::IpAddr;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[tokio::test]
async fn records_ports_and_passwords_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta169.db");
    let instance = example_instance();
    {
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), 1);
        assert_eq!(store.put_instance(&instance).await.unwrap(), 1);
        assert_eq!(store.put_instance(&instance).await.unwrap(), 2);
        store
            .set_password_once(&instance.uuid, "c2VjcmV0")
            .await
            .unwrap();
        // Dropped without any shutdown: what returned must be on disk.
    }
    let store = SqliteStore::open(&path).unwrap();
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
    let list = store.list_instances().await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].addresses, vec!["127.0.0.1"]);
}

#[tokio::test]
async fn password_is_set_once_and_cleared_by_admin() {
    let store = SqliteStore::open_in_memory().unwrap();
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

#[tokio::test]
async fn an_address_belongs_to_one_instance_per_network() {
    let store = SqliteStore::open_in_memory().unwrap();
    let first = example_instance();
    store.put_instance(&first).await.unwrap();
    let mut second = example_instance();
    second.uuid = "second".into();
    let err = store.put_instance(&second).await.unwrap_err();
    assert!(matches!(err, StoreError::AddressTaken { .. }), "{err}");
    assert!(err.to_string().contains(&first.uuid));
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

#[tokio::test]
async fn invalid_records_and_urls_are_refused() {
    let store = SqliteStore::open_in_memory().unwrap();
    let mut bad = example_instance();
    bad.ports[0].mac = "not-a-mac".into();
    assert!(matches!(
        store.put_instance(&bad).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        meta169_store::open("mysql://x"),
        Err(StoreError::UnsupportedUrl(_))
    ));
    let err = meta169_store::open("/nonexistent-dir/x.db").err().unwrap();
    assert!(err.to_string().contains("does not exist"), "{err}");
}
