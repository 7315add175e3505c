//! How the per-thread counts ([`super::per_thread`]) are exported: as
//! the ordinary counters and histogram they stand for, with the names,
//! labels and buckets the shared metrics had.

use super::per_thread::PerThread;
use super::{
    ok_slot, RequestLabels, CACHE_HITS_SLOT, IDENTITIES, LATENCY_BUCKETS, LATENCY_BUCKET_FACTOR,
    LATENCY_BUCKET_START_NS, LATENCY_SLOTS, LATENCY_SUM_SLOT, TREES,
};
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::metrics::MetricType;
use std::sync::Arc;

/// `meta169_serve_requests`: the 200s from the per-thread slots, the rest
/// from their family.
#[derive(Debug)]
pub(super) struct Requests {
    pub(super) others: Family<RequestLabels, Counter>,
    pub(super) counts: Arc<PerThread>,
}

impl EncodeMetric for Requests {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for tree in TREES {
            for identity in IDENTITIES {
                let answered = self.counts.sum(ok_slot(tree, identity));
                if answered == 0 {
                    continue;
                }
                let labels = RequestLabels {
                    status: 200,
                    tree,
                    identity,
                };
                encoder
                    .encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&answered, None)?;
            }
        }
        self.others.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }

    fn is_empty(&self) -> bool {
        self.others.is_empty()
            && TREES.iter().all(|tree| {
                IDENTITIES
                    .iter()
                    .all(|identity| self.counts.sum(ok_slot(*tree, *identity)) == 0)
            })
    }
}

/// `meta169_serve_request_duration_seconds`, from the per-thread slots.
#[derive(Debug)]
pub(super) struct Latency(pub(super) Arc<PerThread>);

impl EncodeMetric for Latency {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let bounds = exponential_buckets(
            LATENCY_BUCKET_START_NS as f64 / 1e9,
            LATENCY_BUCKET_FACTOR,
            LATENCY_BUCKETS as u16,
        )
        // prometheus-client's +Inf.
        .chain(std::iter::once(f64::INFINITY));
        let buckets: Vec<(f64, u64)> = bounds
            .enumerate()
            .map(|(i, bound)| (bound, self.0.sum(LATENCY_SLOTS + i)))
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let seconds = self.0.sum(LATENCY_SUM_SLOT) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(seconds, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// `meta169_serve_cache_hits`, from the per-thread slots.
#[derive(Debug)]
pub(super) struct CacheHits(pub(super) Arc<PerThread>);

impl EncodeMetric for CacheHits {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.0.sum(CACHE_HITS_SLOT), None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}
