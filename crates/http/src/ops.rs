//! The operations listener both daemons open beside their guest-facing
//! one (loopback by default, no token): `/metrics` in Prometheus' text
//! format, `/healthz` (the process answers) and `/readyz` (it can do its
//! job: what that means is the daemon's, given as a check).

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// Whether the daemon is ready, and if not, why (shown on `/readyz`).
pub type ReadyCheck =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

#[derive(Clone)]
struct Ops {
    registry: Arc<Registry>,
    ready: ReadyCheck,
}

/// The operations router.
pub fn router(registry: Arc<Registry>, ready: ReadyCheck) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(Ops { registry, ready })
}

async fn metrics(axum::extract::State(ops): axum::extract::State<Ops>) -> Response {
    let mut text = String::new();
    match prometheus_client::encoding::prometheus_text::encode(&mut text, &ops.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            )],
            text,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the metrics: {e}\n"),
        )
            .into_response(),
    }
}

async fn readyz(axum::extract::State(ops): axum::extract::State<Ops>) -> Response {
    match (ops.ready)().await {
        Ok(()) => "ready\n".into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

/// Every metric name (as a scraper sees it) a registry exports: counters
/// with `_total`, histograms with `_bucket`, `_sum` and `_count`.
pub fn exported_names(registry: &Registry) -> Vec<String> {
    let mut text = String::new();
    if prometheus_client::encoding::prometheus_text::encode(&mut text, registry).is_err() {
        return Vec::new();
    }
    let mut names = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
            continue;
        };
        match kind {
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.push(format!("{name}{suffix}"));
                }
            }
            _ => names.push(name.to_string()),
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::histogram::Histogram;
    use tower::ServiceExt;

    #[tokio::test]
    async fn metrics_health_and_readiness_answer() {
        let mut registry = Registry::default();
        let hits: Counter = Counter::default();
        registry.register("demo_hits", "Hits", hits.clone());
        registry.register("demo_seconds", "Time", Histogram::new([0.1, 1.0]));
        hits.inc();
        let registry = Arc::new(registry);
        assert_eq!(
            exported_names(&registry),
            [
                "demo_hits_total",
                "demo_seconds_bucket",
                "demo_seconds_sum",
                "demo_seconds_count"
            ]
        );
        let ready: ReadyCheck =
            Arc::new(|| Box::pin(async { Err("the store is away".to_string()) }));
        let ops = router(registry, ready);
        let get = |path: &str| {
            let request = http::Request::get(path)
                .body(axum::body::Body::empty())
                .unwrap();
            ops.clone().oneshot(request)
        };
        let metrics = get("/metrics").await.unwrap();
        assert_eq!(metrics.status(), 200);
        let body = http_body_util::BodyExt::collect(metrics.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert!(String::from_utf8_lossy(&body).contains("demo_hits_total 1"));
        assert_eq!(get("/healthz").await.unwrap().status(), 200);
        let readyz = get("/readyz").await.unwrap();
        assert_eq!(readyz.status(), 503);
        let body = http_body_util::BodyExt::collect(readyz.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(&body[..], b"not ready: the store is away\n");
    }
}
