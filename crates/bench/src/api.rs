//! `meta169-bench api`: the metadata API against a bare hyper server
//! returning a body of the same size, in the same run. By default with the
//! pinned method of perf-method.md (separate processes, `meta169 serve`
//! as shipped, wrk, signed headers); `--in-process` is a quicker check
//! without wrk, both servers in this process and a hyper client.
//! `--control` measures the bare server against a second bare server the
//! same way: what the method reads for two identical servers on this
//! machine, so a ratio's distance from 1 can be told from the host's noise.

use crate::measure::{bare_server, load, median, percentile, Round};
use crate::pinned::{self, median_run, Method, Run};
use crate::serve_process::{sample, signed_headers, start_bare, start_serve};
use anyhow::{bail, Result};
use clap::Args;
use meta169_api::{metadata_handler, server, ApiSettings, MetadataService, ServerLimits};
use meta169_store::{SqliteStore, Store};
use std::sync::Arc;
use std::time::Duration;

/// What the pinned method asks of meta169 serve: at least this fraction of
/// the bare server's requests per second.
const PINNED_TARGET: f64 = 0.90;

#[derive(Args)]
pub struct ApiBenchArgs {
    /// The quick variant: both servers in this process, a hyper client.
    #[arg(long)]
    in_process: bool,
    /// Pinned method: seconds per wrk run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Pinned method: measured runs per server and path (the median run counts).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Pinned method: wrk connections.
    #[arg(long, default_value_t = 32)]
    wrk_connections: usize,
    /// Pinned method: a second bare server in place of meta169 serve, to
    /// read the method's own noise on this machine.
    #[arg(long)]
    control: bool,
    /// In-process: requests per server, path and round.
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// In-process: concurrent keep-alive connections.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// In-process: rounds per server and path (alternating; the median of
    /// the per-round ratios is reported).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
}

/// The pinned method: `meta169 serve` and the bare server each on CPU 1,
/// wrk on CPU 0, the signed headers on every request.
async fn run_pinned(args: &ApiBenchArgs) -> Result<()> {
    pinned::check_tools()?;
    if args.runs == 0 || args.seconds == 0 || args.wrk_connections == 0 {
        bail!("--runs, --seconds and --wrk-connections must be at least 1");
    }
    let method = Method {
        connections: args.wrk_connections,
        seconds: args.seconds,
        runs: args.runs,
        ..Method::default()
    };
    let dir = meta169_testkit::temp_dir();
    let store_path = dir.path().join("bench.db");
    let instance = meta169_tree::example_instance();
    SqliteStore::open(&store_path)?
        .put_instance(&instance)
        .await?;
    let serve = start_serve(
        dir.path(),
        "serve",
        &format!("sqlite:{}", store_path.display()),
        "",
    )?;
    let headers = signed_headers(&instance);
    let script = pinned::header_script(dir.path(), "signed", &headers)?;
    println!(
        "meta169 bench api (pinned): servers on CPU {}, wrk -t1 -c{} on CPU {}, {} s warm-up, {} runs of {} s, median run; signed headers on every request",
        pinned::SERVER_CPU, method.connections, pinned::LOAD_CPU, method.warmup_seconds, method.runs, method.seconds
    );
    println!("baseline: a bare hyper server (current-thread runtime) answering with a fixed body of the same size\n");
    // Under test: meta169 serve, or for the control a second bare server.
    let tested = if args.control { "control" } else { "meta169" };
    if args.control {
        println!("control: a second bare server in place of meta169 serve; the ratios are the method's noise on this machine\n");
    }
    println!(
        "{:<34} {:<8} {:>9} {:>8} {:>8} {:>8} {:>8}",
        "path", "server", "req/s", "CPU/req", "p50", "p99", "RSS"
    );
    let mut worst = f64::INFINITY;
    for path in PATHS {
        let (body, content_type) = sample(serve.addr, path, &headers).await?;
        let bare = start_bare(dir.path(), "bare", &body, &content_type)?;
        let control = match args.control {
            true => Some(start_bare(dir.path(), "control", &body, &content_type)?),
            false => None,
        };
        let under_test = control.as_ref().unwrap_or(&serve);
        let (bare_pid, tested_pid) = (bare.pid()?, under_test.pid()?);
        let (bare_url, tested_url) = (bare.url(path), under_test.url(path));
        // Warm both, then alternate runs so drift hits both alike.
        pinned::measure(bare_pid, &bare_url, &script, Method { runs: 0, ..method })?;
        pinned::measure(
            tested_pid,
            &tested_url,
            &script,
            Method { runs: 0, ..method },
        )?;
        let (mut bare_runs, mut tested_runs) = (Vec::new(), Vec::new());
        for _ in 0..method.runs {
            bare_runs.push(pinned::one_run(bare_pid, &bare_url, &script, method)?);
            tested_runs.push(pinned::one_run(tested_pid, &tested_url, &script, method)?);
        }
        let show = |name: &str, shown: &str, run: Run, rss_kib: u64| {
            println!(
                "{:<34} {:<8} {:>9.0} {:>6.1}us {:>6}us {:>6}us {:>5.1}MiB",
                shown,
                name,
                run.requests_per_second,
                run.cpu_per_request.as_secs_f64() * 1e6,
                run.p50.as_micros(),
                run.p99.as_micros(),
                rss_kib as f64 / 1024.0
            );
        };
        let (b, m) = (median_run(&bare_runs), median_run(&tested_runs));
        show("bare", path, b, pinned::rss_kib(bare_pid)?);
        show(tested, "", m, pinned::rss_kib(tested_pid)?);
        let ratio = m.requests_per_second / b.requests_per_second;
        worst = worst.min(ratio);
        let target = match args.control {
            true => String::new(),
            false => format!("; target >= {PINNED_TARGET:.2}"),
        };
        println!(
            "{:<34} {:<8} {:>9.2}  (req/s {tested} / bare; CPU per request {:.2}x the bare server's{target})",
            "",
            "ratio",
            ratio,
            m.cpu_per_request.as_secs_f64() / b.cpu_per_request.as_secs_f64().max(1e-9)
        );
        // Each run against the bare run just before it: how far the
        // machine moved between runs, beside the medians' ratio.
        let paired: Vec<String> = tested_runs
            .iter()
            .zip(&bare_runs)
            .map(|(m, b)| format!("{:.2}", m.requests_per_second / b.requests_per_second))
            .collect();
        println!(
            "{:<34} {:<8} {:>9}  (each run against the bare run before it)",
            "",
            "runs",
            paired.join(" ")
        );
        drop((bare, control));
    }
    if args.control {
        println!("\nworst ratio: {worst:.2} (two identical servers: how far this machine moves the method's ratio)");
    } else {
        println!(
            "\nworst ratio: {worst:.2} ({} the {PINNED_TARGET:.2} target)",
            if worst >= PINNED_TARGET {
                "meets"
            } else {
                "below"
            }
        );
    }
    Ok(())
}

/// The OpenStack document and an EC2 leaf.
const PATHS: &[&str] = &[
    "/openstack/latest/meta_data.json",
    "/latest/meta-data/instance-id",
];

pub async fn run(args: ApiBenchArgs) -> Result<()> {
    if !args.in_process {
        return run_pinned(&args).await;
    }
    if args.requests == 0 || args.connections == 0 || args.rounds == 0 {
        bail!("--requests, --connections and --rounds must be at least 1");
    }
    // Servers get their own runtime, so the load generator does not steal
    // their worker threads differently for the two servers.
    let servers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench-server")
        .enable_all()
        .build()?;

    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory()?);
    store
        .put_instance(&meta169_tree::example_instance())
        .await?;
    let mut settings = ApiSettings::default();
    settings.identity.by_source = true;
    settings.identity.signed = false;
    settings.identity.by_address = false;
    let service = Arc::new(MetadataService::new(
        store,
        settings,
        ServerLimits::default(),
    )?);
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let meta_addr = listener.local_addr()?;
    let router = metadata_handler(service);
    servers.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
        server::serve_direct(
            listener,
            router,
            ServerLimits::default(),
            std::future::pending(),
        )
        .await;
    });

    println!(
        "meta169 bench api: {} requests x {} rounds per server and path, {} keep-alive connections, loopback",
        args.requests, args.rounds, args.connections
    );
    println!("baseline: a bare hyper server answering the same path with a fixed body of the same size\n");
    println!(
        "{:<36} {:<8} {:>10} {:>9} {:>9}",
        "path", "server", "req/s", "p50 us", "p99 us"
    );
    let mut ratios = Vec::new();
    for path in PATHS {
        // The bare server returns exactly what meta169 returns for this path.
        let sample = sample(meta_addr, path, &[]).await?;
        let bare_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        bare_listener.set_nonblocking(true)?;
        let bare_addr = bare_listener.local_addr()?;
        let (body, ctype) = sample;
        let bare = servers.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(bare_listener).expect("listener");
            bare_server(listener, body, ctype).await;
        });
        // Warm both up.
        load(
            bare_addr,
            path,
            &[],
            2_000.min(args.requests),
            args.connections,
        )
        .await?;
        load(
            meta_addr,
            path,
            &[],
            2_000.min(args.requests),
            args.connections,
        )
        .await?;
        let (mut bare_rounds, mut meta_rounds) = (Vec::new(), Vec::new());
        for _ in 0..args.rounds {
            bare_rounds.push(load(bare_addr, path, &[], args.requests, args.connections).await?);
            meta_rounds.push(load(meta_addr, path, &[], args.requests, args.connections).await?);
        }
        bare.abort();
        let line = |name: &str, rounds: &[Round]| -> f64 {
            let rps = median(rounds.iter().map(|r| r.requests_per_second).collect());
            let mut all: Vec<Duration> = rounds
                .iter()
                .flat_map(|r| r.latencies.iter().copied())
                .collect();
            all.sort_unstable();
            let shown = if name == "bare" { path } else { "" };
            println!(
                "{:<36} {:<8} {:>10.0} {:>9} {:>9}",
                shown,
                name,
                rps,
                percentile(&all, 0.50).as_micros(),
                percentile(&all, 0.99).as_micros()
            );
            rps
        };
        line("bare", &bare_rounds);
        line("meta169", &meta_rounds);
        // Each meta169 round against the bare round just before it, so the
        // machine's drift over the run cancels out.
        let mut paired: Vec<f64> = meta_rounds
            .iter()
            .zip(&bare_rounds)
            .map(|(m, b)| m.requests_per_second / b.requests_per_second)
            .collect();
        paired.sort_by(f64::total_cmp);
        let ratio = median(paired.clone());
        println!(
            "{:<36} {:<8} {:>10.2}  (meta169 / bare, median of paired rounds: {}; target >= 0.80)",
            "",
            "ratio",
            ratio,
            paired
                .iter()
                .map(|r| format!("{r:.2}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        ratios.push(ratio);
    }
    servers.shutdown_background();
    let worst = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    println!(
        "\nworst ratio: {worst:.2} ({})",
        if worst >= 0.8 {
            "meets the 0.80 target"
        } else {
            "below the 0.80 target"
        }
    );
    Ok(())
}
