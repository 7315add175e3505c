//! Connections per source address: a guest that opens thousands of
//! connections (and reconnects as the timeouts cut them) would otherwise
//! hold the whole connection cap while everyone else waits.

use crate::address::canonical_ip;
use crate::listener::ServerLimits;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

type Counts = Mutex<HashMap<IpAddr, usize, foldhash::fast::RandomState>>;

/// The open connections of each limited source.
pub(crate) struct PerSource {
    limit: usize,
    unlimited: Vec<ipnet::IpNet>,
    counts: Arc<Counts>,
}

/// One admitted connection; its source's count drops with it.
pub(crate) struct Slot {
    counts: Option<(Arc<Counts>, IpAddr)>,
}

impl PerSource {
    pub(crate) fn new(limits: &ServerLimits) -> Self {
        PerSource {
            limit: limits.max_connections_per_source,
            unlimited: limits.unlimited_sources.clone(),
            counts: Arc::default(),
        }
    }

    /// A slot for a new connection from `source`, or `None` if it holds
    /// its limit already.
    pub(crate) fn admit(&self, source: IpAddr) -> Option<Slot> {
        let source = canonical_ip(source);
        if self.limit == 0
            || source.is_unspecified()
            || self.unlimited.iter().any(|net| net.contains(&source))
        {
            return Some(Slot { counts: None });
        }
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(source).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(Slot {
            counts: Some((self.counts.clone(), source)),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some((counts, source)) = self.counts.take() {
            let mut counts = counts.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(count) = counts.get_mut(&source) {
                *count -= 1;
                if *count == 0 {
                    counts.remove(&source);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_source_has_its_own_limit_and_proxies_none() {
        let limits = ServerLimits {
            max_connections_per_source: 2,
            unlimited_sources: vec!["10.9.0.0/16".parse().unwrap()],
            ..ServerLimits::default()
        };
        let per = PerSource::new(&limits);
        let guest: IpAddr = "10.0.0.5".parse().unwrap();
        let other: IpAddr = "10.0.0.6".parse().unwrap();
        let (a, b) = (per.admit(guest).unwrap(), per.admit(guest).unwrap());
        assert!(per.admit(guest).is_none(), "a third from the same source");
        // The same guest written as IPv4-mapped IPv6 is the same source.
        assert!(per.admit("::ffff:10.0.0.5".parse().unwrap()).is_none());
        assert!(per.admit(other).is_some());
        drop(a);
        assert!(
            per.admit(guest).is_some(),
            "a slot frees when its connection ends"
        );
        drop(b);
        let proxy: Vec<_> = (0..100)
            .map(|_| per.admit("10.9.1.1".parse().unwrap()))
            .collect();
        assert!(proxy.iter().all(Option::is_some));
        assert!(
            per.admit("::".parse().unwrap()).is_some(),
            "UNIX-socket peers"
        );
    }
}
