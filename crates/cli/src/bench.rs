//! `meta169 bench`: throughput and latency of meta169 next to a baseline
//! measured in the same run on the same machine, printed as ratios because
//! these machines are noisy. Every loop is bounded by a request count.

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::{Args, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use meta169_api::{metadata_router, server, ApiSettings, MetadataService, ServerLimits};
use meta169_store::{SqliteStore, Store};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// The metadata API vs a bare hyper server returning a body of the same size.
    Api(ApiBenchArgs),
}

#[derive(Args)]
pub struct ApiBenchArgs {
    /// Requests per server, path and round.
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Rounds per server and path (alternating; the median is reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

pub async fn run(command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Api(args) => api(args).await,
    }
}

/// The paths the issue names: the OpenStack document and an EC2 leaf.
const PATHS: &[&str] = &[
    "/openstack/latest/meta_data.json",
    "/latest/meta-data/instance-id",
];

/// One measured round.
struct Round {
    requests_per_second: f64,
    latencies: Vec<Duration>,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// `requests` GETs of `path` over `connections` keep-alive connections.
async fn load(addr: SocketAddr, path: &str, requests: usize, connections: usize) -> Result<Round> {
    let per_connection = requests.div_ceil(connections);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let path = path.to_string();
        tasks.spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(connection);
            let mut latencies = Vec::with_capacity(per_connection);
            for _ in 0..per_connection {
                let request = http::Request::get(path.as_str())
                    .header(http::header::HOST, "169.254.169.254")
                    .body(http_body_util::Empty::<Bytes>::new())?;
                let sent = Instant::now();
                let response = sender.send_request(request).await?;
                let status = response.status();
                let body = response.into_body().collect().await?.to_bytes();
                if status != http::StatusCode::OK || body.is_empty() {
                    anyhow::bail!("{path} answered {status}");
                }
                latencies.push(sent.elapsed());
            }
            anyhow::Ok(latencies)
        });
    }
    let mut latencies = Vec::with_capacity(per_connection * connections);
    while let Some(joined) = tasks.join_next().await {
        latencies.extend(joined.context("load task panicked")??);
    }
    let elapsed = started.elapsed();
    Ok(Round {
        requests_per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        latencies,
    })
}

/// The baseline: hyper answering every request with the same fixed body.
async fn bare_server(listener: tokio::net::TcpListener, body: Bytes, content_type: String) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (body, content_type) = (body.clone(), content_type.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |_request: http::Request<Incoming>| {
                let response = http::Response::builder()
                    .header(http::header::CONTENT_TYPE, content_type.as_str())
                    .body(Full::new(body.clone()));
                async move { response }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn api(args: ApiBenchArgs) -> Result<()> {
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
        load(bare_addr, path, 2_000.min(args.requests), args.connections).await?;
        load(meta_addr, path, 2_000.min(args.requests), args.connections).await?;
        let (mut bare_rounds, mut meta_rounds) = (Vec::new(), Vec::new());
        for _ in 0..args.rounds {
            bare_rounds.push(load(bare_addr, path, args.requests, args.connections).await?);
            meta_rounds.push(load(meta_addr, path, args.requests, args.connections).await?);
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
        let bare_rps = line("bare", &bare_rounds);
        let meta_rps = line("meta169", &meta_rounds);
        let ratio = meta_rps / bare_rps;
        println!(
            "{:<36} {:<8} {:>10.2}  (meta169 / bare, median req/s; target >= 0.80)",
            "", "ratio", ratio
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
