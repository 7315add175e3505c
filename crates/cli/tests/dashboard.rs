//! The Grafana dashboard in docs/ asks only for metrics the daemons export.

use std::collections::BTreeSet;

fn expressions(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                    _ => expressions(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| expressions(v, out)),
        _ => {}
    }
}

/// The `meta169_*` names in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("meta169_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.push(name);
    }
    names
}

#[test]
fn every_metric_the_dashboard_queries_is_exported() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/grafana-dashboard.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut exprs = Vec::new();
    expressions(&dashboard, &mut exprs);
    assert!(exprs.len() >= 15, "{exprs:?}");
    let exported: BTreeSet<String> = meta169_api::metrics::ServeMetrics::all_names()
        .into_iter()
        .chain(meta169_agent::metrics::AgentMetrics::all_names())
        .collect();
    let queried: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    let unknown: Vec<&String> = queried.difference(&exported).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard queries {unknown:?}, which no daemon exports ({exported:?})"
    );
    // And every exported metric has a panel.
    let bare = |name: &str| {
        ["_bucket", "_sum", "_count"]
            .iter()
            .fold(name.to_string(), |n, s| {
                n.strip_suffix(s).map_or(n.clone(), str::to_string)
            })
    };
    let shown: BTreeSet<String> = queried.iter().map(|n| bare(n)).collect();
    let unshown: Vec<String> = exported
        .iter()
        .map(|n| bare(n))
        .filter(|n| !shown.contains(n))
        .collect();
    assert!(unshown.is_empty(), "no panel for {unshown:?}");
}
