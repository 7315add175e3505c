//! `meta169-bench store`: `meta169 serve` over SQLite and over a real
//! PostgreSQL server, with the pinned method: cache hits (which should not
//! tell the two apart) and cache misses (caching off: every request loads
//! the record from the store and renders its version). PostgreSQL runs
//! unpinned; its CPU per request (all its processes) is shown apart.

use crate::pinned::{self, median_run, Method, Run};
use crate::serve_process::{signed_headers, start_serve};
use anyhow::{bail, Context, Result};
use clap::Args;
use meta169_testkit::postgres::Postgres;
use std::time::Duration;

/// The path measured: the document cloud-init reads first.
const PATH: &str = "/openstack/latest/meta_data.json";

#[derive(Args)]
pub struct StoreBenchArgs {
    /// Seconds per wrk run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Measured runs per configuration (the median run counts).
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

/// utime + stime of a process and its children, in clock ticks.
fn tree_ticks(root: u32) -> u64 {
    let mut total = 0;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // After the name: state, ppid, ..., utime (12th), stime (13th).
        let ppid = fields.get(1).and_then(|f| f.parse::<u32>().ok());
        if pid == root || ppid == Some(root) {
            total += fields
                .iter()
                .skip(11)
                .take(2)
                .filter_map(|f| f.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    total
}

struct Row {
    store: &'static str,
    mode: &'static str,
    run: Run,
    database_cpu: Option<Duration>,
}

pub async fn run(args: StoreBenchArgs) -> Result<()> {
    pinned::check_tools()?;
    if args.runs == 0 || args.seconds == 0 {
        bail!("--runs and --seconds must be at least 1");
    }
    let method = Method {
        seconds: args.seconds,
        runs: args.runs,
        ..Method::default()
    };
    let instance = meta169_tree::example_instance();
    let dir = meta169_testkit::temp_dir();
    let script = pinned::header_script(dir.path(), "signed", &signed_headers(&instance))?;

    let sqlite = format!("sqlite:{}", dir.path().join("bench.db").display());
    meta169_store::open(&sqlite)
        .await?
        .put_instance(&instance)
        .await?;
    let pg = Postgres::start();
    let postgres = pg.create_database("bench");
    meta169_store::open(&postgres)
        .await?
        .put_instance(&instance)
        .await?;
    let pg_pid = pg.pid().context("PostgreSQL is not running")?;

    println!(
        "meta169 bench store: {PATH}, serve on CPU {} (PostgreSQL unpinned), wrk -t1 -c{} on CPU {}, {} runs of {} s, median run\n",
        pinned::SERVER_CPU, method.connections, pinned::LOAD_CPU, method.runs, method.seconds
    );
    let mut rows = Vec::new();
    for (mode, keys) in [
        ("hits", "cache_seconds = 3600"),
        ("misses", "cache_seconds = 0"),
    ] {
        for (store, url, database) in [
            ("sqlite", &sqlite, None),
            ("postgres", &postgres, Some(pg_pid)),
        ] {
            let name = format!("serve-{store}-{mode}");
            let serve = start_serve(dir.path(), &name, url, keys)?;
            let pid = serve.pid()?;
            let url = serve.url(PATH);
            pinned::measure(pid, &url, &script, Method { runs: 0, ..method })?;
            let mut runs = Vec::new();
            let mut database_ticks = Vec::new();
            for _ in 0..method.runs {
                let before = database.map(tree_ticks);
                let run = pinned::one_run(pid, &url, &script, method)?;
                if let (Some(root), Some(before)) = (database, before) {
                    database_ticks.push((tree_ticks(root).saturating_sub(before), run));
                }
                runs.push(run);
            }
            let run = median_run(&runs);
            // The database's CPU in the run whose req/s was the median.
            let database_cpu = database_ticks
                .iter()
                .find(|(_, r)| r.requests_per_second == run.requests_per_second)
                .map(|(ticks, r)| {
                    Duration::from_millis(*ticks * 10)
                        / (r.requests_per_second * method.seconds as f64).max(1.0) as u32
                });
            rows.push(Row {
                store,
                mode,
                run,
                database_cpu,
            });
        }
    }
    println!(
        "{:<9} {:<7} {:>9} {:>12} {:>8} {:>8} {:>12}",
        "store", "cache", "req/s", "serve CPU/req", "p50", "p99", "db CPU/req"
    );
    for row in &rows {
        println!(
            "{:<9} {:<7} {:>9.0} {:>10.1}us {:>6}us {:>6}us {:>12}",
            row.store,
            row.mode,
            row.run.requests_per_second,
            row.run.cpu_per_request.as_secs_f64() * 1e6,
            row.run.p50.as_micros(),
            row.run.p99.as_micros(),
            row.database_cpu.map_or("-".to_string(), |d| format!(
                "{:.1}us",
                d.as_secs_f64() * 1e6
            ))
        );
    }
    let rps = |store: &str, mode: &str| {
        rows.iter()
            .find(|r| r.store == store && r.mode == mode)
            .map_or(0.0, |r| r.run.requests_per_second)
    };
    println!(
        "\ncache hits, PostgreSQL / SQLite: {:.2} (the store is not on this path: expect 1.00 within noise)",
        rps("postgres", "hits") / rps("sqlite", "hits").max(1.0)
    );
    println!(
        "cache misses, PostgreSQL / SQLite: {:.2}",
        rps("postgres", "misses") / rps("sqlite", "misses").max(1.0)
    );
    Ok(())
}
