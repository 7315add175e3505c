//! Per-guest request rate limits, as Neutron's haproxy applies them when
//! `[metadata_rate_limiting] rate_limit_enabled` is set: two sliding
//! windows per source address (a base one and a shorter burst one); a
//! request that takes either rate over its limit is refused with 429.
//! Refused requests count too, as with haproxy's `track-sc` before `deny`,
//! so a guest that keeps hammering stays refused. The table is an LRU map:
//! a new guest in a full table forgets the one seen longest ago, in
//! constant time.

use lru::LruCache;
use meta169_http::address::canonical_ip;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Neutron's `[metadata_rate_limiting]` settings.
#[derive(Clone, Debug, PartialEq)]
pub struct RateLimits {
    pub base_window: Duration,
    pub base_limit: u32,
    pub burst_window: Duration,
    pub burst_limit: u32,
    /// Address families limited (Neutron's `ip_versions`, default 4 only).
    pub ipv4: bool,
    pub ipv6: bool,
}

impl Default for RateLimits {
    /// Neutron's defaults: 10 requests in 10 s, both windows, IPv4 only.
    fn default() -> Self {
        RateLimits {
            base_window: Duration::from_secs(10),
            base_limit: 10,
            burst_window: Duration::from_secs(10),
            burst_limit: 10,
            ipv4: true,
            ipv6: false,
        }
    }
}

/// Guests tracked at once (haproxy's stick tables hold 10k); past it, the
/// guest seen longest ago is forgotten.
pub const MAX_TRACKED_GUESTS: usize = 10_000;

/// A request rate over a sliding period, computed as haproxy does: the
/// requests of the current period plus the previous period's, weighted by
/// how much of it still lies inside the window.
#[derive(Clone, Copy, Debug)]
struct SlidingRate {
    period_start: Instant,
    current: u32,
    previous: u32,
}

impl SlidingRate {
    fn new(now: Instant) -> Self {
        SlidingRate {
            period_start: now,
            current: 0,
            previous: 0,
        }
    }

    /// Count one request at `now`; the rate including it.
    fn hit(&mut self, now: Instant, period: Duration) -> f64 {
        let elapsed = now.saturating_duration_since(self.period_start);
        if elapsed >= period * 2 {
            *self = SlidingRate::new(now);
        } else if elapsed >= period {
            self.previous = self.current;
            self.current = 0;
            self.period_start += period;
        }
        self.current = self.current.saturating_add(1);
        let into = now
            .saturating_duration_since(self.period_start)
            .as_secs_f64()
            / period.as_secs_f64().max(f64::MIN_POSITIVE);
        f64::from(self.current) + f64::from(self.previous) * (1.0 - into.min(1.0))
    }
}

#[derive(Debug)]
struct Guest {
    base: SlidingRate,
    burst: SlidingRate,
    refused: bool,
}

/// What [`RateLimiter::admit`] decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    /// Over a limit; `first` on the first refusal after admitted requests
    /// (worth a log line; the following ones are not).
    Refused {
        first: bool,
    },
}

/// The rate table of one agent, keyed by (network, guest address).
pub struct RateLimiter {
    limits: RateLimits,
    guests: Mutex<LruCache<(Arc<str>, IpAddr), Guest>>,
}

impl RateLimiter {
    pub fn new(limits: RateLimits) -> Self {
        Self::with_capacity(limits, MAX_TRACKED_GUESTS)
    }

    /// A table of `capacity` guests (at least one).
    pub fn with_capacity(limits: RateLimits, capacity: usize) -> Self {
        RateLimiter {
            limits,
            guests: Mutex::new(LruCache::new(
                NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN),
            )),
        }
    }

    /// Count a request from `guest` on `network` at `now` and decide.
    pub fn admit(&self, network: &Arc<str>, guest: IpAddr, now: Instant) -> Admission {
        let limited_family = match canonical_ip(guest) {
            IpAddr::V4(_) => self.limits.ipv4,
            IpAddr::V6(_) => self.limits.ipv6,
        };
        if !limited_family {
            return Admission::Admitted;
        }
        let Ok(mut guests) = self.guests.lock() else {
            return Admission::Admitted;
        };
        let entry = guests.get_or_insert_mut((network.clone(), guest), || Guest {
            base: SlidingRate::new(now),
            burst: SlidingRate::new(now),
            refused: false,
        });
        let base = entry.base.hit(now, self.limits.base_window);
        let burst = entry.burst.hit(now, self.limits.burst_window);
        let over =
            base > f64::from(self.limits.base_limit) || burst > f64::from(self.limits.burst_limit);
        if over {
            let first = !entry.refused;
            entry.refused = true;
            Admission::Refused { first }
        } else {
            entry.refused = false;
            Admission::Admitted
        }
    }

    /// Guests tracked now.
    pub fn tracked(&self) -> usize {
        self.guests.lock().map(|g| g.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: Instant, millis: u64) -> Instant {
        start + Duration::from_millis(millis)
    }

    #[test]
    fn the_eleventh_request_in_ten_seconds_is_refused_and_then_forgiven() {
        let limiter = RateLimiter::new(RateLimits::default());
        let net: Arc<str> = Arc::from("n");
        let guest: IpAddr = "10.0.0.5".parse().unwrap();
        let start = Instant::now();
        for i in 0..10 {
            assert_eq!(
                limiter.admit(&net, guest, at(start, i * 100)),
                Admission::Admitted
            );
        }
        assert_eq!(
            limiter.admit(&net, guest, at(start, 1_000)),
            Admission::Refused { first: true }
        );
        assert_eq!(
            limiter.admit(&net, guest, at(start, 1_100)),
            Admission::Refused { first: false }
        );
        // Another guest, or the same address on another network, is not affected.
        let other: IpAddr = "10.0.0.6".parse().unwrap();
        assert_eq!(
            limiter.admit(&net, other, at(start, 1_100)),
            Admission::Admitted
        );
        assert_eq!(
            limiter.admit(&Arc::from("m"), guest, at(start, 1_100)),
            Admission::Admitted
        );
        // 12 requests counted in the first period; by 19 s its weight is
        // down to 1.2, and one more request makes 2.2: admitted.
        assert_eq!(
            limiter.admit(&net, guest, at(start, 19_000)),
            Admission::Admitted
        );
        // Long quiet: a clean slate.
        assert_eq!(
            limiter.admit(&net, guest, at(start, 60_000)),
            Admission::Admitted
        );
    }

    #[test]
    fn a_short_burst_window_limits_bursts_only() {
        let limits = RateLimits {
            base_window: Duration::from_secs(60),
            base_limit: 100,
            burst_window: Duration::from_secs(1),
            burst_limit: 5,
            ..RateLimits::default()
        };
        let limiter = RateLimiter::new(limits);
        let net: Arc<str> = Arc::from("n");
        let guest: IpAddr = "10.0.0.5".parse().unwrap();
        let start = Instant::now();
        let admitted = (0..10)
            .filter(|i| limiter.admit(&net, guest, at(start, i * 10)) == Admission::Admitted)
            .count();
        assert_eq!(admitted, 5);
        // Spread out, 40 requests over 40 s pass the burst window.
        let spread = (0..40)
            .filter(|i| {
                limiter.admit(&net, guest, at(start, 5_000 + i * 1_000)) == Admission::Admitted
            })
            .count();
        assert_eq!(spread, 40);
    }

    #[test]
    fn only_the_configured_families_are_limited() {
        let limiter = RateLimiter::new(RateLimits {
            base_limit: 1,
            burst_limit: 1,
            ..RateLimits::default()
        });
        let net: Arc<str> = Arc::from("n");
        let v6: IpAddr = "fe80::f816:3eff:fe00:1".parse().unwrap();
        let now = Instant::now();
        for _ in 0..5 {
            assert_eq!(limiter.admit(&net, v6, now), Admission::Admitted);
        }
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(limiter.admit(&net, mapped, now), Admission::Admitted);
        assert!(matches!(
            limiter.admit(&net, mapped, now),
            Admission::Refused { .. }
        ));
    }

    #[test]
    fn the_table_stays_bounded() {
        let limiter = RateLimiter::new(RateLimits::default());
        let net: Arc<str> = Arc::from("n");
        let start = Instant::now();
        for i in 0..(MAX_TRACKED_GUESTS as u32 + 500) {
            let guest = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            limiter.admit(&net, guest, at(start, u64::from(i)));
        }
        assert!(limiter.tracked() <= MAX_TRACKED_GUESTS);
    }

    #[test]
    fn a_full_table_forgets_the_guest_seen_longest_ago() {
        let limits = RateLimits {
            base_limit: 1,
            burst_limit: 1,
            ..RateLimits::default()
        };
        let limiter = RateLimiter::with_capacity(limits, 2);
        let net: Arc<str> = Arc::from("n");
        let ip = |last: u8| IpAddr::from([10, 0, 0, last]);
        let now = Instant::now();
        assert_eq!(limiter.admit(&net, ip(1), now), Admission::Admitted);
        assert_eq!(limiter.admit(&net, ip(2), now), Admission::Admitted);
        // Guest 1 is seen again (refused: over its limit of one), so guest
        // 2 is now the one seen longest ago and makes room for guest 3.
        assert!(matches!(
            limiter.admit(&net, ip(1), now),
            Admission::Refused { .. }
        ));
        assert_eq!(limiter.admit(&net, ip(3), now), Admission::Admitted);
        assert_eq!(limiter.tracked(), 2);
        assert!(
            matches!(limiter.admit(&net, ip(1), now), Admission::Refused { .. }),
            "still tracked"
        );
        assert_eq!(
            limiter.admit(&net, ip(2), now),
            Admission::Admitted,
            "forgotten"
        );
    }
}
