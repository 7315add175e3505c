//! `meta169-bench cache`: what a cached instance costs `meta169 serve` in
//! resident memory. For each count, a store of that many instances (the
//! example record, each its own uuid and address), a fresh serve process,
//! its RSS after one warm-up request, then every instance fetched once
//! with signed headers, and its RSS again: the growth per instance. The
//! cache's own estimate (`meta169_serve_cache_bytes`) is shown beside it.

use crate::serve_process::{signed_headers, start_serve, Server};
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Args;
use meta169_store::{SqliteStore, Store};
use meta169_tree::Instance;
use std::time::Instant;

/// Records written per store transaction while filling the store.
const FILL_BATCH: usize = 5_000;

/// Concurrent connections fetching.
const FETCH_CONNECTIONS: usize = 16;

#[derive(Args)]
pub struct CacheBenchArgs {
    /// Instance counts to measure, comma-separated.
    #[arg(long, default_value = "1000,10000,100000", value_delimiter = ',')]
    counts: Vec<usize>,
    /// Paths fetched once per instance (a boot reads both trees).
    #[arg(
        long,
        default_value = "/openstack/latest/meta_data.json",
        value_delimiter = ','
    )]
    paths: Vec<String>,
}

/// Instance `n`: the example record with its own uuid, name and address.
fn instance(n: usize) -> Instance {
    let mut instance = meta169_tree::example_instance();
    instance.uuid = format!("00000000-0000-4000-8000-{n:012x}");
    instance.name = format!("bench-{n}");
    instance.ec2_instance_id = None;
    instance.ports[0].ips = vec![std::net::IpAddr::from([
        10,
        (n >> 16) as u8,
        (n >> 8) as u8,
        n as u8,
    ])];
    instance
}

pub async fn run(args: CacheBenchArgs) -> Result<()> {
    if args.counts.is_empty() || args.counts.contains(&0) || args.paths.is_empty() {
        bail!("--counts must list counts of at least 1, and --paths at least one path");
    }
    let record = serde_json::to_string(&instance(0))?.len();
    println!(
        "meta169 bench cache: RSS of meta169 serve before and after fetching each instance once ({}); record {record} bytes, user data {} bytes\n",
        args.paths.join(" and "),
        instance(0).user_data.map_or(0, |d| d.len())
    );
    println!(
        "{:>9} {:>11} {:>11} {:>13} {:>15} {:>9}",
        "instances", "RSS before", "RSS after", "per instance", "cache estimate", "fetch s"
    );
    for &count in &args.counts {
        let dir = meta169_testkit::temp_dir();
        let path = dir.path().join("bench.db");
        fill(&path, count + 1).await?;
        let serve = start_serve(
            dir.path(),
            "serve",
            &format!("sqlite:{}", path.display()),
            &format!(
                "ops_listen = \"127.0.0.1:{}\"\ncache_max_instances = {}\ncache_seconds = 3600",
                meta169_testkit::free_port(),
                count + 1
            ),
        )?;
        // Instance `count` is the warm-up, not counted.
        fetch(&serve, &args.paths, count..count + 1).await?;
        let pid = serve.pid()?;
        let before = crate::pinned::rss_kib(pid)?;
        let started = Instant::now();
        fetch(&serve, &args.paths, 0..count).await?;
        let took = started.elapsed();
        let after = crate::pinned::rss_kib(pid)?;
        let estimate = cache_estimate(dir.path())?;
        println!(
            "{count:>9} {:>8.1}MiB {:>8.1}MiB {:>10.2}KiB {:>12.2}KiB {:>9.1}",
            before as f64 / 1024.0,
            after as f64 / 1024.0,
            (after.saturating_sub(before)) as f64 / count as f64,
            estimate / 1024.0 / (count + 1) as f64,
            took.as_secs_f64()
        );
    }
    println!("\n(cache estimate: meta169_serve_cache_bytes per cached instance; target: at most 8 KiB per instance beyond its user data)");
    Ok(())
}

async fn fill(path: &std::path::Path, count: usize) -> Result<()> {
    let store = SqliteStore::open(path)?;
    let mut n = 0;
    while n < count {
        let batch: Vec<Instance> = (n..(n + FILL_BATCH).min(count)).map(instance).collect();
        store.put_instances(&batch).await?;
        n += batch.len();
    }
    Ok(())
}

/// GET every path for every instance in `range`, spread over connections.
async fn fetch(serve: &Server, paths: &[String], range: std::ops::Range<usize>) -> Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for lane in 0..FETCH_CONNECTIONS {
        let (addr, paths) = (serve.addr, paths.to_vec());
        let numbers: Vec<usize> = range
            .clone()
            .skip(lane)
            .step_by(FETCH_CONNECTIONS)
            .collect();
        tasks.spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
            tokio::spawn(connection);
            for n in numbers {
                let headers = signed_headers(&instance(n));
                for path in &paths {
                    let mut request = http::Request::get(path.as_str())
                        .header(http::header::HOST, "169.254.169.254");
                    for (name, value) in &headers {
                        request = request.header(name.as_str(), value.as_str());
                    }
                    let response = sender
                        .send_request(request.body(http_body_util::Empty::<Bytes>::new())?)
                        .await?;
                    if response.status() != http::StatusCode::OK {
                        bail!("instance {n}: {path} answered {}", response.status());
                    }
                    http_body_util::BodyExt::collect(response.into_body()).await?;
                }
            }
            anyhow::Ok(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.context("fetch task panicked")??;
    }
    Ok(())
}

/// `meta169_serve_cache_bytes` from the serve process's operations listener.
fn cache_estimate(dir: &std::path::Path) -> Result<f64> {
    let config = std::fs::read_to_string(dir.join("serve.toml"))?;
    let ops = config
        .lines()
        .find_map(|l| l.strip_prefix("ops_listen = \""))
        .and_then(|l| l.strip_suffix('"'))
        .context("no ops_listen")?;
    let text = plain_get(ops, "/metrics")?;
    text.lines()
        .find_map(|l| l.strip_prefix("meta169_serve_cache_bytes "))
        .and_then(|v| v.trim().parse().ok())
        .context("no meta169_serve_cache_bytes in /metrics")
}

/// A plain blocking GET (the operations listener is on loopback).
fn plain_get(addr: &str, path: &str) -> Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    Ok(text)
}
