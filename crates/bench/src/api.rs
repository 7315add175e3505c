//! `meta169-bench api`: the metadata API against a bare hyper server
//! returning a body of the same size, in the same run.

use crate::measure::{bare_server, load, median, percentile, Round};
use anyhow::{bail, Result};
use bytes::Bytes;
use clap::Args;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use meta169_api::{metadata_router, server, ApiSettings, MetadataService, ServerLimits};
use meta169_store::{SqliteStore, Store};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args)]
pub struct ApiBenchArgs {
    /// Requests per server, path and round.
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Rounds per server and path (alternating; the median of the
    /// per-round ratios is reported).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
}

/// The OpenStack document and an EC2 leaf.
const PATHS: &[&str] = &[
    "/openstack/latest/meta_data.json",
    "/latest/meta-data/instance-id",
];

pub async fn run(args: ApiBenchArgs) -> Result<()> {
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
    let router = metadata_router(service);
    servers.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
        server::serve(
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
        let sample = load_sample(meta_addr, path).await?;
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

async fn load_sample(addr: SocketAddr, path: &str) -> Result<(Bytes, String)> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let response = sender
        .send_request(
            http::Request::get(path)
                .header(http::header::HOST, "x")
                .body(http_body_util::Empty::<Bytes>::new())?,
        )
        .await?;
    if response.status() != http::StatusCode::OK {
        bail!("meta169 answered {path} with {}", response.status());
    }
    let ctype = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("text/plain")
        .to_string();
    Ok((response.into_body().collect().await?.to_bytes(), ctype))
}
