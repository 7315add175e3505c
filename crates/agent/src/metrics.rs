//! What the agent counts, for its operations listener: the Southbound
//! connection, provisioned networks and namespaces, listeners, requests
//! and answers (per network, with a bounded number of network labels),
//! upstream errors and latency, rate-limited guests, the index's size.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::collections::HashSet;
use std::fmt::Write;
use std::sync::{Arc, Mutex};

/// Networks counted under their own label; beyond, they share "other",
/// so a node with many networks cannot grow the exported series without
/// bound.
pub const MAX_NETWORK_LABELS: usize = 256;
/// The label of networks past [`MAX_NETWORK_LABELS`].
const OTHER_NETWORKS: &str = "other";
/// Upstream latency buckets: 100 us doubling to about 6.5 s.
const LATENCY_BUCKET_START: f64 = 100e-6;
const LATENCY_BUCKET_FACTOR: f64 = 2.0;
const LATENCY_BUCKETS: u16 = 17;

/// Why an upstream request gave the guest no relayed answer.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum UpstreamFailure {
    Unreachable,
    Unreadable,
    Timeout,
    UnexpectedStatus,
}

impl EncodeLabelValue for UpstreamFailure {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(match self {
            UpstreamFailure::Unreachable => "unreachable",
            UpstreamFailure::Unreadable => "unreadable",
            UpstreamFailure::Timeout => "timeout",
            UpstreamFailure::UnexpectedStatus => "unexpected_status",
        })
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    kind: UpstreamFailure,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NetworkLabels {
    network: String,
}

/// The agent's metrics and the registry they are exported from.
pub struct AgentMetrics {
    pub sb_connected: Gauge,
    pub sb_reconnects: Counter,
    pub networks: Gauge,
    pub namespaces_created: Counter,
    pub namespaces_removed: Counter,
    pub listeners: Gauge,
    pub index_entries: Gauge,
    pub rate_limited: Counter,
    pub upstream_duration: Histogram,
    pub ready: Gauge,
    upstream_failures: Family<FailureLabels, Counter>,
    responses: Family<StatusLabels, Counter>,
    network_requests: Family<NetworkLabels, Counter>,
    labelled_networks: Mutex<HashSet<String>>,
    registry: Arc<Registry>,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl AgentMetrics {
    pub fn new() -> AgentMetrics {
        let mut r = Registry::default();
        let metrics = AgentMetrics {
            sb_connected: Gauge::default(),
            sb_reconnects: Counter::default(),
            networks: Gauge::default(),
            namespaces_created: Counter::default(),
            namespaces_removed: Counter::default(),
            listeners: Gauge::default(),
            index_entries: Gauge::default(),
            rate_limited: Counter::default(),
            upstream_duration: Histogram::new(exponential_buckets(
                LATENCY_BUCKET_START,
                LATENCY_BUCKET_FACTOR,
                LATENCY_BUCKETS,
            )),
            ready: Gauge::default(),
            upstream_failures: Family::default(),
            responses: Family::default(),
            network_requests: Family::default(),
            labelled_networks: Mutex::new(HashSet::new()),
            registry: Arc::new(Registry::default()),
        };
        let m = &metrics;
        r.register(
            "meta169_agent_southbound_connected",
            "1 while connected to the OVN Southbound",
            m.sb_connected.clone(),
        );
        r.register(
            "meta169_agent_southbound_reconnects",
            "Connections to the Southbound after the first",
            m.sb_reconnects.clone(),
        );
        r.register(
            "meta169_agent_networks",
            "Networks provisioned on this chassis",
            m.networks.clone(),
        );
        r.register(
            "meta169_agent_namespaces_created",
            "ovnmeta- namespaces created",
            m.namespaces_created.clone(),
        );
        r.register(
            "meta169_agent_namespaces_removed",
            "ovnmeta- namespaces removed",
            m.namespaces_removed.clone(),
        );
        r.register(
            "meta169_agent_listeners",
            "Listeners serving guests",
            m.listeners.clone(),
        );
        r.register(
            "meta169_agent_index_entries",
            "(network, IP) entries in the guest index",
            m.index_entries.clone(),
        );
        r.register(
            "meta169_agent_rate_limited",
            "Guest requests refused with 429",
            m.rate_limited.clone(),
        );
        r.register(
            "meta169_agent_upstream_duration_seconds",
            "Time the metadata API took to answer",
            m.upstream_duration.clone(),
        );
        r.register(
            "meta169_agent_upstream_failures",
            "Guest requests the metadata API did not answer usably, by kind",
            m.upstream_failures.clone(),
        );
        r.register(
            "meta169_agent_responses",
            "Answers to guests, by status",
            m.responses.clone(),
        );
        r.register(
            "meta169_agent_network_requests",
            "Guest requests, by network (at most 256 networks by name, the rest as other)",
            m.network_requests.clone(),
        );
        r.register(
            "meta169_agent_ready",
            "1 when /readyz answers ready",
            m.ready.clone(),
        );
        AgentMetrics {
            registry: Arc::new(r),
            ..metrics
        }
    }

    /// The registry the operations listener exports.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.clone()
    }

    /// Every metric name the agent exports once each labelled family has
    /// a series (an empty family exports nothing), for dashboards and alerts.
    pub fn all_names() -> Vec<String> {
        let metrics = AgentMetrics::new();
        metrics.network_requests("any").inc();
        metrics.response(200);
        metrics.upstream_failure(UpstreamFailure::Timeout);
        meta169_http::ops::exported_names(&metrics.registry)
    }

    /// The request counter of a network's listener, taken once when the
    /// listener opens (no label lookup per request).
    pub fn network_requests(&self, network: &str) -> Counter {
        let label = match self.labelled_networks.lock() {
            Ok(mut labelled)
                if labelled.contains(network) || labelled.len() < MAX_NETWORK_LABELS =>
            {
                labelled.insert(network.to_string());
                network
            }
            _ => OTHER_NETWORKS,
        };
        self.network_requests.get_or_create_owned(&NetworkLabels {
            network: label.to_string(),
        })
    }

    /// Drop a removed network's series, making room for another's.
    pub fn forget_network(&self, network: &str) {
        let removed = self
            .labelled_networks
            .lock()
            .map(|mut labelled| labelled.remove(network))
            .unwrap_or(false);
        if removed {
            self.network_requests.remove(&NetworkLabels {
                network: network.to_string(),
            });
        }
    }

    /// Count an answer to a guest.
    pub fn response(&self, status: u16) {
        self.responses.get_or_create(&StatusLabels { status }).inc();
    }

    /// Count an upstream failure.
    pub fn upstream_failure(&self, kind: UpstreamFailure) {
        self.upstream_failures
            .get_or_create(&FailureLabels { kind })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_labels_are_bounded() {
        let metrics = AgentMetrics::new();
        for n in 0..MAX_NETWORK_LABELS + 10 {
            metrics.network_requests(&format!("net-{n}")).inc();
        }
        let names = meta169_http::ops::exported_names(&metrics.registry());
        assert!(names.contains(&"meta169_agent_network_requests_total".to_string()));
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &metrics.registry())
            .unwrap();
        let series = text
            .lines()
            .filter(|l| l.starts_with("meta169_agent_network_requests_total{"))
            .count();
        assert_eq!(
            series,
            MAX_NETWORK_LABELS + 1,
            "{MAX_NETWORK_LABELS} networks and other"
        );
        assert!(text.contains("meta169_agent_network_requests_total{network=\"other\"} 10"));
        // A removed network frees its label.
        metrics.forget_network("net-0");
        metrics.network_requests("net-new").inc();
        assert!(
            text.contains("net-0")
                && !{
                    let mut now = String::new();
                    prometheus_client::encoding::prometheus_text::encode(
                        &mut now,
                        &metrics.registry(),
                    )
                    .unwrap();
                    now.contains("\"net-0\"")
                }
        );
    }
}
