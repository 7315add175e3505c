//! An instance whose cache entry expires, or goes, while many of its
//! requests are in flight is read from the store once, not once per
//! request.

mod common;

use common::{TestApi, SECRET};
use futures_util::future::join_all;
use meta169_api::{ApiSettings, ServerLimits};
use meta169_tree::example_instance;
use std::time::{Duration, Instant};

/// Short enough to wait out in a test.
const TTL: Duration = Duration::from_millis(100);
/// Requests that find the entry expired at the same moment.
const CONCURRENT: usize = 32;

#[tokio::test]
async fn an_expired_entry_is_reloaded_once_while_its_requests_are_answered() {
    let mut settings = ApiSettings::default();
    settings.identity.by_source = true;
    settings.identity.signed = false;
    settings.identity.by_address = false;
    settings.identity.shared_secret = SECRET.to_vec();
    settings.cache.ttl = TTL;
    let api = TestApi::start(settings, ServerLimits::default()).await;
    let instance = example_instance();
    api.add(&instance).await;
    let service = &api.service;
    let misses = || service.metrics.cache_misses.get();

    assert!(service
        .load(&instance.uuid, Instant::now())
        .await
        .unwrap()
        .is_some());
    assert_eq!(misses(), 1);
    for round in 1..=3 {
        match round {
            // Gone, as a change announced by the store takes it.
            3 => service.caches.invalidate(&instance.uuid),
            _ => tokio::time::sleep(TTL * 2).await,
        }
        // Polled together on one task: the first to find the entry expired
        // or missing reads the store, the others find the read under way
        // (and are answered from the expired entry, or wait for the read).
        let now = Instant::now();
        let loads = join_all((0..CONCURRENT).map(|_| service.load(&instance.uuid, now))).await;
        for load in loads {
            let loaded = load.unwrap().expect("every request is answered");
            assert_eq!(&*loaded.uuid, instance.uuid);
        }
        assert_eq!(misses(), 1 + round, "one store read in round {round}");
    }
}
