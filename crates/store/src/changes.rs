//! How a process learns that another one changed the store: a feed of
//! [`Change`]s and a [`Freshness`] saying until when the feed is known to
//! have missed nothing. A cache that drops what the feed names is exactly
//! as fresh as the feed; when the feed cannot be confirmed (database
//! unreachable) the cache's age grows and readiness can say so.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// Changes a slow reader may fall behind by before it is told to start
/// over ([`broadcast`] reports the gap as `Lagged`, taken as
/// [`Change::Everything`]).
pub const CHANGE_BACKLOG: usize = 4096;

/// One change, as announced by the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// The record (and so its tree and maybe its addresses) changed, or it
    /// was created or deleted.
    Record(String),
    /// Only the password changed.
    Password(String),
    /// Anything may have changed (the feed reconnected or fell behind).
    Everything,
}

impl Change {
    /// `record <uuid>` / `password <uuid>`, as both change logs write them.
    pub(crate) fn parse(kind: &str, uuid: &str) -> Change {
        match kind {
            "password" => Change::Password(uuid.to_string()),
            _ => Change::Record(uuid.to_string()),
        }
    }
}

/// Until when the feed is known complete.
#[derive(Debug)]
pub struct Freshness {
    base: Instant,
    /// One plus the milliseconds after `base` of the last confirmation;
    /// `NEVER` before one.
    confirmed_ms: AtomicU64,
    last_error: Mutex<Option<String>>,
}

const NEVER: u64 = 0;

impl Freshness {
    pub(crate) fn new() -> Self {
        Freshness {
            base: Instant::now(),
            confirmed_ms: AtomicU64::new(NEVER),
            last_error: Mutex::new(None),
        }
    }

    /// Every change committed before `at` has been delivered.
    pub(crate) fn confirm(&self, at: Instant) {
        let ms = at.saturating_duration_since(self.base).as_millis() as u64;
        self.confirmed_ms
            .fetch_max(ms.saturating_add(1), Ordering::Release);
        if let Ok(mut error) = self.last_error.lock() {
            *error = None;
        }
    }

    /// The feed could not be confirmed; `why` is kept for readiness.
    pub(crate) fn fail(&self, why: String) {
        if let Ok(mut error) = self.last_error.lock() {
            *error = Some(why);
        }
    }

    /// How long ago the feed was last confirmed; `None` if never.
    pub fn age(&self) -> Option<Duration> {
        let ms = self.confirmed_ms.load(Ordering::Acquire);
        (ms != NEVER).then(|| {
            Instant::now().saturating_duration_since(self.base + Duration::from_millis(ms - 1))
        })
    }

    /// How long the feed has been running (the age to report before a
    /// first confirmation).
    pub fn running_for(&self) -> Duration {
        self.base.elapsed()
    }

    /// Why the last confirmation failed, while it keeps failing.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }
}

/// What a subscriber holds.
pub struct ChangeFeed {
    pub changes: broadcast::Receiver<Change>,
    pub freshness: Arc<Freshness>,
}

/// The sending side, one per store; its watcher starts with the first
/// subscriber and stops once none is left.
pub(crate) struct ChangeHub {
    sender: broadcast::Sender<Change>,
    freshness: Arc<Freshness>,
    started: std::sync::Once,
}

impl ChangeHub {
    pub(crate) fn new() -> Self {
        ChangeHub {
            sender: broadcast::channel(CHANGE_BACKLOG).0,
            freshness: Arc::new(Freshness::new()),
            started: std::sync::Once::new(),
        }
    }

    /// Subscribe; `start` runs once, with the watcher's side.
    pub(crate) fn subscribe(&self, start: impl FnOnce(Announcer)) -> ChangeFeed {
        let changes = self.sender.subscribe();
        self.started.call_once(|| {
            start(Announcer {
                sender: self.sender.clone(),
                freshness: self.freshness.clone(),
            })
        });
        ChangeFeed {
            changes,
            freshness: self.freshness.clone(),
        }
    }
}

/// The watcher's side of a hub.
#[derive(Clone)]
pub(crate) struct Announcer {
    sender: broadcast::Sender<Change>,
    pub(crate) freshness: Arc<Freshness>,
}

impl Announcer {
    pub(crate) fn announce(&self, change: Change) {
        // No subscriber left is not an error; the watcher notices and ends.
        let _ = self.sender.send(change);
    }

    /// Is anyone still listening?
    pub(crate) fn wanted(&self) -> bool {
        self.sender.receiver_count() > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freshness_ages_from_the_last_confirmation() {
        let f = Freshness::new();
        assert_eq!(f.age(), None);
        f.confirm(Instant::now());
        assert!(f.age().unwrap() < Duration::from_secs(1));
        f.fail("down".into());
        assert_eq!(f.last_error().as_deref(), Some("down"));
        // An older confirmation never moves it back.
        f.confirm(Instant::now() - Duration::from_secs(60));
        assert!(f.age().unwrap() < Duration::from_secs(1));
        assert_eq!(f.last_error(), None);
    }
}
