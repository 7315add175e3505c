//! Store reads under way, shared: a request that needs what another
//! request is already reading from the store waits for that read instead
//! of making its own, or, for an expired cache entry, is answered from
//! that entry while one request holds its [`RefreshClaim`]. Without this,
//! an instance missing from the cache under load (its entry invalidated by
//! a change, or a first boot's burst of requests) sent every request in
//! flight to the store, each on a thread of the blocking pool.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::OnceCell;

type Hasher = foldhash::fast::RandomState;

/// Reads under way by key; each delivers one `T` to all who waited for it.
pub(crate) struct UnderWay<K, T> {
    reads: Mutex<HashMap<K, Arc<OnceCell<T>>, Hasher>>,
}

impl<K, T> Default for UnderWay<K, T> {
    fn default() -> Self {
        UnderWay {
            reads: Mutex::default(),
        }
    }
}

impl<K: Hash + Eq + Clone, T: Clone> UnderWay<K, T> {
    /// The result of `read` for `key`, or of the read of `key` already
    /// under way. A read whose request is cancelled is taken over by one
    /// of those waiting for it (`tokio::sync::OnceCell`).
    pub(crate) async fn join<F, Fut>(&self, key: K, read: F) -> T
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        let cell = self
            .reads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.clone())
            .or_default()
            .clone();
        let _leave = Leave {
            under_way: self,
            key: &key,
            cell: &cell,
        };
        cell.get_or_init(read).await.clone()
    }

    /// Reads under way now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.reads.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Takes a finished read (or one nobody waits for any more) off the map
/// when a waiter leaves, however it leaves.
struct Leave<'a, K: Hash + Eq, T> {
    under_way: &'a UnderWay<K, T>,
    key: &'a K,
    cell: &'a Arc<OnceCell<T>>,
}

impl<K: Hash + Eq, T> Drop for Leave<'_, K, T> {
    fn drop(&mut self) {
        let mut reads = self
            .under_way
            .reads
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // Clones are only made under this lock: a count of two (the map's
        // and this waiter's) means no one else is waiting.
        let done = self.cell.initialized() || Arc::strong_count(self.cell) == 2;
        if done
            && reads
                .get(self.key)
                .is_some_and(|cell| Arc::ptr_eq(cell, self.cell))
        {
            reads.remove(self.key);
        }
    }
}

/// One request's right to reload an expired entry from the store. The
/// others that find the entry expired meanwhile serve it as it is rather
/// than each asking the store: when an entry under load expired, every
/// request in flight used to load and render it again, each on a thread
/// of the blocking pool (32 under `wrk -c32`). Those threads then stayed
/// for the pool's keep-alive, and while a process has more than one
/// thread the kernel takes and drops a reference on the socket's file in
/// every send and receive. Ends when dropped, also when the request
/// holding it is cancelled, so a failed or abandoned reload leaves the
/// entry to the next request.
pub struct RefreshClaim(Arc<AtomicBool>);

impl RefreshClaim {
    pub(crate) fn take(flag: &Arc<AtomicBool>) -> Option<RefreshClaim> {
        flag.compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
            .ok()
            .map(|_| RefreshClaim(flag.clone()))
    }
}

impl Drop for RefreshClaim {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::future::join_all;
    use futures_util::FutureExt;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn waiters_share_one_read_and_the_map_empties() {
        let under_way = UnderWay::<&str, usize>::default();
        let reads = AtomicUsize::new(0);
        let read = || async {
            tokio::task::yield_now().await;
            reads.fetch_add(1, Ordering::Relaxed) + 41
        };
        let got = join_all((0..8).map(|_| under_way.join("a", read))).await;
        assert_eq!(got, vec![41; 8]);
        assert_eq!(reads.load(Ordering::Relaxed), 1);
        assert_eq!(under_way.len(), 0);
        // The next read is a new one.
        assert_eq!(under_way.join("a", read).await, 42);
        assert_eq!(under_way.join("b", read).await, 43);
        assert_eq!(under_way.len(), 0);
    }

    #[tokio::test]
    async fn a_cancelled_read_is_taken_over_or_forgotten() {
        let under_way = UnderWay::<&str, &str>::default();
        let slow = || async {
            tokio::task::yield_now().await;
            "first"
        };
        // Polled once, then dropped: nobody else waits, nothing stays.
        assert!(under_way.join("a", slow).now_or_never().is_none());
        assert_eq!(under_way.len(), 0);
        // A waiter takes over when the reader is dropped.
        let mut first = Box::pin(under_way.join("a", slow));
        assert!((&mut first).now_or_never().is_none());
        let mut second = Box::pin(under_way.join("a", || async { "second" }));
        assert!(
            (&mut second).now_or_never().is_none(),
            "waits for the first"
        );
        drop(first);
        assert_eq!(second.await, "second");
        assert_eq!(under_way.len(), 0);
    }
}
