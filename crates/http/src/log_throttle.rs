//! Log lines about refused requests, throttled per source: a client that
//! sends thousands of bad requests gets one line per interval, the next
//! one saying how many were left out, instead of a line per request.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One line per source per this long.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Sources remembered at most; past this the table starts over (a few
/// extra lines, never unbounded memory).
pub const MAX_TRACKED_SOURCES: usize = 4096;

struct Seen {
    last: Instant,
    suppressed: u64,
}

/// Which sources may log now.
pub struct LogThrottle {
    interval: Duration,
    seen: Mutex<HashMap<IpAddr, Seen, foldhash::fast::RandomState>>,
}

impl LogThrottle {
    pub fn new(interval: Duration) -> Self {
        LogThrottle {
            interval,
            seen: Mutex::new(HashMap::default()),
        }
    }

    /// `Some(n)` if a line about `source` may be written now (`n` lines
    /// about it were left out since the last one), `None` to leave it out.
    pub fn allow(&self, source: IpAddr) -> Option<u64> {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= MAX_TRACKED_SOURCES && !seen.contains_key(&source) {
            seen.retain(|_, s| now.duration_since(s.last) < self.interval);
            if seen.len() >= MAX_TRACKED_SOURCES {
                seen.clear();
            }
        }
        match seen.get_mut(&source) {
            Some(s) if now.duration_since(s.last) < self.interval => {
                s.suppressed += 1;
                None
            }
            Some(s) => {
                let left_out = s.suppressed;
                *s = Seen {
                    last: now,
                    suppressed: 0,
                };
                Some(left_out)
            }
            None => {
                seen.insert(
                    source,
                    Seen {
                        last: now,
                        suppressed: 0,
                    },
                );
                Some(0)
            }
        }
    }
}

/// The throttle shared by every listener and handler of the process.
pub fn refusals() -> &'static LogThrottle {
    static THROTTLE: std::sync::OnceLock<LogThrottle> = std::sync::OnceLock::new();
    THROTTLE.get_or_init(|| LogThrottle::new(LOG_INTERVAL))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_source_per_interval() {
        let throttle = LogThrottle::new(Duration::from_millis(200));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(throttle.allow(a), Some(0));
        let written = (0..12_000).filter(|_| throttle.allow(a).is_some()).count();
        assert_eq!(written, 0);
        assert_eq!(throttle.allow(b), Some(0), "sources are throttled apart");
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(
            throttle.allow(a),
            Some(12_000),
            "the next line counts what was left out"
        );
    }

    #[test]
    fn the_table_is_bounded() {
        let throttle = LogThrottle::new(Duration::from_secs(60));
        for n in 0..(MAX_TRACKED_SOURCES as u32 * 3) {
            throttle.allow(IpAddr::from(n.to_be_bytes()));
        }
        assert!(throttle.seen.lock().unwrap().len() <= MAX_TRACKED_SOURCES);
    }
}
