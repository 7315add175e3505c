//! What `meta169 serve` counts, for its operations listener: requests by
//! status, tree and identity mode, their latency, the cache's hits,
//! misses and size, store errors, and readiness.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::fmt::Write;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Latency buckets: 25 us doubling to about 0.8 s (a cached answer takes
/// tens of microseconds; dynamic vendor data may take a second).
const LATENCY_BUCKET_START: f64 = 25e-6;
const LATENCY_BUCKET_FACTOR: f64 = 2.0;
const LATENCY_BUCKETS: u16 = 16;

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

/// Trees and identity modes, for the 200 fast path's table.
const TREES: usize = 4;
const IDENTITIES: usize = 4;

/// The serve daemon's metrics and the registry they are exported from.
pub struct ServeMetrics {
    requests: Family<RequestLabels, Counter>,
    /// The series of 200 answers by tree and identity, taken from
    /// `requests` on first use: the family's lookup (a lock and a hash of
    /// the labels) is then skipped on the common path.
    ok: [[OnceLock<Counter>; IDENTITIES]; TREES],
    duration: Histogram,
    pub cache_hits: Counter,
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
        let duration = Histogram::new(exponential_buckets(
            LATENCY_BUCKET_START,
            LATENCY_BUCKET_FACTOR,
            LATENCY_BUCKETS,
        ));
        let (cache_hits, cache_misses, store_errors) =
            (Counter::default(), Counter::default(), Counter::default());
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
            requests.clone(),
        );
        registry.register(
            "meta169_serve_request_duration_seconds",
            "Time to answer a guest request",
            duration.clone(),
        );
        registry.register(
            "meta169_serve_cache_hits",
            "Instance loads answered from the cache",
            cache_hits.clone(),
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
            ok: Default::default(),
            duration,
            cache_hits,
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

    /// Count one answered request.
    pub fn request(&self, status: u16, tree: TreeLabel, identity: IdentityLabel, took: Duration) {
        let labels = || RequestLabels {
            status,
            tree,
            identity,
        };
        if status == 200 {
            self.ok[tree as usize][identity as usize]
                .get_or_init(|| self.requests.get_or_create(&labels()).clone())
                .inc();
        } else {
            self.requests.get_or_create(&labels()).inc();
        }
        self.duration.observe(took.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
