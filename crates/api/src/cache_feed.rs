//! The store's change feed applied to the caches: a record changed, its
//! cached tree goes; a feed that lagged or restarted clears everything.
//! Also keeps the feed's age and the caches' sizes in the metrics.

use crate::cache::Caches;
use crate::metrics::ServeMetrics;
use meta169_store::{Change, Freshness};
use std::sync::Arc;

/// Apply the store's announcements to the caches, and keep the feed's age
/// in the metrics.
pub(crate) async fn follow(
    mut changes: tokio::sync::broadcast::Receiver<Change>,
    freshness: Arc<Freshness>,
    caches: Arc<Caches>,
    metrics: Arc<ServeMetrics>,
) {
    use tokio::sync::broadcast::error::RecvError;
    let mut tick = tokio::time::interval(FEED_AGE_UPDATE);
    loop {
        tokio::select! {
            change = changes.recv() => match change {
                Ok(Change::Record(uuid)) => caches.invalidate(&uuid),
                Ok(Change::Password(uuid)) => caches.forget_instance(&uuid),
                Ok(Change::Everything) | Err(RecvError::Lagged(_)) => caches.clear(),
                Err(RecvError::Closed) => return,
            },
            _ = tick.tick() => {
                // Before a first confirmation: how long it has been awaited.
                let age = freshness.age().unwrap_or_else(|| freshness.running_for());
                metrics.store_feed_age.set(age.as_secs_f64());
                metrics.cache_sizes(&caches);
            }
        }
    }
}

/// How often the feed's age and the cache's size are refreshed in the metrics.
const FEED_AGE_UPDATE: std::time::Duration = std::time::Duration::from_secs(1);

pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
