//! What `meta169 serve` counts, for its operations listener: requests by
//! status, tree and identity mode, their latency, the cache's hits,
//! misses and size, store errors, and readiness.

mod export;
mod per_thread;

use export::{CacheHits, Latency, Requests};
use per_thread::PerThread;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::fmt::Write;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

/// Latency buckets: 25 us doubling to about 0.8 s (a cached answer takes
/// tens of microseconds; dynamic vendor data may take a second). Doubling,
/// so a latency's bucket is found from its bits.
const LATENCY_BUCKET_START_NS: u64 = 25_000;
const LATENCY_BUCKET_FACTOR: f64 = 2.0;
const LATENCY_BUCKETS: usize = 16;

/// Which tree a path is in.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum TreeLabel {
    /// `/`: the version listing.
    Root,
    Ec2,
    Openstack,
    /// Anything else (refused paths).
    Other,
}

impl TreeLabel {
    /// The tree of a request path, from its first segment.
    pub fn of(path: &str) -> TreeLabel {
        let rest = path.trim_start_matches('/');
        // A byte loop: the first segment is a few bytes.
        let end = rest.bytes().position(|b| b == b'/').unwrap_or(rest.len());
        let first = rest.get(..end).unwrap_or("");
        match first {
            "" => TreeLabel::Root,
            "openstack" => TreeLabel::Openstack,
            "latest" | "ec2" => TreeLabel::Ec2,
            version if version.len() == 10 && version.as_bytes()[4] == b'-' => TreeLabel::Ec2,
            _ => TreeLabel::Other,
        }
    }
}

/// How the caller was identified.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum IdentityLabel {
    Signed,
    ByAddress,
    BySource,
    /// Not identified (the root listing, or refused before).
    None,
}

impl EncodeLabelValue for TreeLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(match self {
            TreeLabel::Root => "root",
            TreeLabel::Ec2 => "ec2",
            TreeLabel::Openstack => "openstack",
            TreeLabel::Other => "other",
        })
    }
}

impl EncodeLabelValue for IdentityLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(match self {
            IdentityLabel::Signed => "signed",
            IdentityLabel::ByAddress => "by_address",
            IdentityLabel::BySource => "by_source",
            IdentityLabel::None => "none",
        })
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    status: u16,
    tree: TreeLabel,
    identity: IdentityLabel,
}

/// Trees and identity modes, for the 200 answers' slots.
const TREES: [TreeLabel; 4] = [
    TreeLabel::Root,
    TreeLabel::Ec2,
    TreeLabel::Openstack,
    TreeLabel::Other,
];
const IDENTITIES: [IdentityLabel; 4] = [
    IdentityLabel::Signed,
    IdentityLabel::ByAddress,
    IdentityLabel::BySource,
    IdentityLabel::None,
];

/// The per-thread slots ([`per_thread`]): 200 answers by tree and
/// identity, cache hits, latency buckets (the last one +Inf) and the
/// latencies' sum in nanoseconds.
const OK_SLOTS: usize = TREES.len() * IDENTITIES.len();
const CACHE_HITS_SLOT: usize = OK_SLOTS;
const LATENCY_SLOTS: usize = CACHE_HITS_SLOT + 1;
const LATENCY_SUM_SLOT: usize = LATENCY_SLOTS + LATENCY_BUCKETS + 1;
const SLOTS: usize = LATENCY_SUM_SLOT + 1;

fn ok_slot(tree: TreeLabel, identity: IdentityLabel) -> usize {
    tree as usize * IDENTITIES.len() + identity as usize
}

/// The bucket of a latency: the first whose bound (25 us doubled `i`
/// times) it does not exceed, or +Inf.
fn latency_bucket(took: Duration) -> usize {
    let quanta = took
        .as_nanos()
        .div_ceil(u128::from(LATENCY_BUCKET_START_NS));
    if quanta <= 1 {
        return 0;
    }
    // ceil(log2(quanta))
    let doublings = (u128::BITS - (quanta - 1).leading_zeros()) as usize;
    doublings.min(LATENCY_BUCKETS)
}

/// The serve daemon's metrics and the registry they are exported from.
pub struct ServeMetrics {
    /// Answers other than 200 (the 200s are in `counts`).
    requests: Family<RequestLabels, Counter>,
    /// What every request updates, per thread.
    counts: Arc<PerThread>,
    pub cache_misses: Counter,
    pub cache_instances: Gauge,
    pub cache_bytes: Gauge,
    pub cache_evictions: Counter,
    /// Answers from expired cache entries while the store was unreachable.
    pub stale_answers: Counter,
    /// Seconds since the store's change feed was last confirmed complete.
    pub store_feed_age: Gauge<f64, AtomicU64>,
    pub store_errors: Counter,
    pub ready: Gauge,
    /// Session tokens issued (`PUT /latest/api/token`).
    pub tokens_issued: Counter,
    /// Requests served without a session token (under `optional`): who
    /// would break if tokens became required.
    pub tokenless: Counter,
    registry: Arc<Registry>,
}

impl Default for ServeMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ServeMetrics {
    pub fn new() -> ServeMetrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let counts = Arc::new(PerThread::new(SLOTS));
        let (cache_misses, store_errors) = (Counter::default(), Counter::default());
        let (cache_instances, cache_bytes, ready) =
            (Gauge::default(), Gauge::default(), Gauge::default());
        let (cache_evictions, stale_answers) = (Counter::default(), Counter::default());
        let store_feed_age = Gauge::<f64, AtomicU64>::default();
        let (tokens_issued, tokenless) = (Counter::default(), Counter::default());
        registry.register(
            "meta169_serve_tokens_issued",
            "Session tokens issued (PUT /latest/api/token)",
            tokens_issued.clone(),
        );
        registry.register(
            "meta169_serve_tokenless_requests",
            "Identified requests served without a session token (those that would get 401 with tokens required)",
            tokenless.clone(),
        );
        registry.register(
            "meta169_serve_requests",
            "Guest requests answered, by status, tree and identity mode",
            Requests {
                others: requests.clone(),
                counts: counts.clone(),
            },
        );
        registry.register(
            "meta169_serve_request_duration_seconds",
            "Time to answer a guest request",
            Latency(counts.clone()),
        );
        registry.register(
            "meta169_serve_cache_hits",
            "Instance loads answered from the cache",
            CacheHits(counts.clone()),
        );
        registry.register(
            "meta169_serve_cache_misses",
            "Instance loads that went to the store",
            cache_misses.clone(),
        );
        registry.register(
            "meta169_serve_cache_instances",
            "Instances in the cache",
            cache_instances.clone(),
        );
        registry.register(
            "meta169_serve_cache_bytes",
            "Estimated bytes held by the cache",
            cache_bytes.clone(),
        );
        registry.register(
            "meta169_serve_cache_evictions",
            "Instances dropped from the cache to stay within its bounds",
            cache_evictions.clone(),
        );
        registry.register(
            "meta169_serve_stale_answers",
            "Instance loads answered from an expired cache entry because the store was unreachable",
            stale_answers.clone(),
        );
        registry.register(
            "meta169_serve_store_feed_age_seconds",
            "Seconds since the store's change feed was last confirmed complete, or since it started before a first confirmation (readiness fails past max_staleness_seconds)",
            store_feed_age.clone(),
        );
        registry.register(
            "meta169_serve_store_errors",
            "Store operations that failed",
            store_errors.clone(),
        );
        registry.register(
            "meta169_serve_ready",
            "1 when /readyz answers ready",
            ready.clone(),
        );
        ServeMetrics {
            requests,
            counts,
            cache_misses,
            cache_instances,
            cache_bytes,
            cache_evictions,
            stale_answers,
            store_feed_age,
            store_errors,
            ready,
            tokens_issued,
            tokenless,
            registry: Arc::new(registry),
        }
    }

    /// The registry the operations listener exports.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.clone()
    }

    /// Every metric name serve exports once each labelled family has a
    /// series (an empty family exports nothing), for dashboards and alerts.
    pub fn all_names() -> Vec<String> {
        let metrics = ServeMetrics::new();
        metrics.request(200, TreeLabel::Root, IdentityLabel::None, Duration::ZERO);
        meta169_http::ops::exported_names(&metrics.registry)
    }

    /// The cache's size gauges.
    pub fn cache_sizes(&self, caches: &crate::cache::Caches) {
        self.cache_instances.set(caches.instances() as i64);
        self.cache_bytes.set(caches.bytes() as i64);
    }

    /// Count one instance load answered from the cache.
    pub fn cache_hit(&self) {
        self.counts.add(CACHE_HITS_SLOT, 1);
    }

    /// Count one answered request.
    pub fn request(&self, status: u16, tree: TreeLabel, identity: IdentityLabel, took: Duration) {
        let latency = (LATENCY_SLOTS + latency_bucket(took), 1);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let sum = (LATENCY_SUM_SLOT, nanos);
        if status == 200 {
            self.counts
                .add_all(&[(ok_slot(tree, identity), 1), latency, sum]);
            return;
        }
        self.counts.add_all(&[latency, sum]);
        let labels = RequestLabels {
            status,
            tree,
            identity,
        };
        self.requests.get_or_create(&labels).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::histogram::exponential_buckets;

    #[test]
    fn paths_are_sorted_into_trees() {
        assert_eq!(TreeLabel::of("/"), TreeLabel::Root);
        assert_eq!(
            TreeLabel::of("/openstack/latest/meta_data.json"),
            TreeLabel::Openstack
        );
        assert_eq!(TreeLabel::of("/latest/meta-data/"), TreeLabel::Ec2);
        assert_eq!(
            TreeLabel::of("/2009-04-04/meta-data/instance-id"),
            TreeLabel::Ec2
        );
        assert_eq!(TreeLabel::of("/etc/passwd"), TreeLabel::Other);
    }

    #[test]
    fn latencies_fall_in_the_buckets_prometheus_client_would_pick() {
        let bounds: Vec<f64> = exponential_buckets(
            LATENCY_BUCKET_START_NS as f64 / 1e9,
            LATENCY_BUCKET_FACTOR,
            LATENCY_BUCKETS as u16,
        )
        .collect();
        let mut latencies = vec![0, 1, 24_999, 25_000, 25_001, 50_000, 50_001, u64::MAX];
        for bound in &bounds {
            let ns = (bound * 1e9).round() as u64;
            latencies.extend([ns - 1, ns, ns + 1]);
        }
        for ns in latencies {
            let took = Duration::from_nanos(ns);
            let expected = bounds
                .iter()
                .position(|bound| *bound >= took.as_secs_f64())
                .unwrap_or(LATENCY_BUCKETS);
            assert_eq!(latency_bucket(took), expected, "{ns} ns");
        }
    }

    #[test]
    fn counts_are_exported_as_counters_and_a_histogram() {
        let metrics = ServeMetrics::new();
        let ms = Duration::from_millis(1);
        metrics.request(200, TreeLabel::Ec2, IdentityLabel::Signed, ms);
        metrics.request(200, TreeLabel::Ec2, IdentityLabel::Signed, ms);
        metrics.request(404, TreeLabel::Openstack, IdentityLabel::Signed, ms * 2);
        metrics.cache_hit();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &metrics.registry).unwrap();
        for line in [
            r#"meta169_serve_requests_total{status="200",tree="ec2",identity="signed"} 2"#,
            r#"meta169_serve_requests_total{status="404",tree="openstack",identity="signed"} 1"#,
            "meta169_serve_cache_hits_total 1",
            "meta169_serve_request_duration_seconds_sum 0.004",
            "meta169_serve_request_duration_seconds_count 3",
            r#"meta169_serve_request_duration_seconds_bucket{le="0.0008"} 0"#,
            r#"meta169_serve_request_duration_seconds_bucket{le="0.0016"} 2"#,
            r#"meta169_serve_request_duration_seconds_bucket{le="+Inf"} 3"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
    }

    #[test]
    fn every_metric_has_its_exported_name() {
        let names = ServeMetrics::all_names();
        for name in [
            "meta169_serve_requests_total",
            "meta169_serve_request_duration_seconds_bucket",
            "meta169_serve_cache_hits_total",
            "meta169_serve_ready",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} not in {names:?}");
        }
    }
}
