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
    /// Config-drive images (64 KiB user data, 100 injected files) vs
    /// genisoimage / mkfs.vfat + mcopy, the tools Nova runs.
    Configdrive(ConfigDriveBenchArgs),
    /// The agent: proxy overhead, bind-to-answer time, memory per network,
    /// and a boot storm, each against a baseline (needs root and OVN's packages).
    Agent(crate::bench_agent::AgentBenchArgs),
}

#[derive(Args)]
pub struct ConfigDriveBenchArgs {
    /// Builds per tool and format (the median is reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

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

pub async fn run(command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Api(args) => api(args).await,
        BenchCommand::Configdrive(args) => configdrive(args),
        BenchCommand::Agent(args) => crate::bench_agent::run(args).await,
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

/// Wall time and peak resident memory (KiB) of one child process.
fn measured(command: &mut std::process::Command) -> Result<(Duration, u64)> {
    let started = Instant::now();
    let child = command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {command:?}"))?;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on the pid of the child just spawned, with valid pointers.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let elapsed = started.elapsed();
    if pid < 0 || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("{command:?} failed (status {status})");
    }
    Ok((elapsed, usage.ru_maxrss as u64))
}

fn have(program: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Median wall time and the largest peak memory over `runs` runs of `make`.
fn repeat(
    runs: usize,
    mut make: impl FnMut() -> Result<(Duration, u64)>,
) -> Result<(Duration, u64)> {
    let mut times = Vec::new();
    let mut peak = 0;
    for _ in 0..runs {
        let (t, m) = make()?;
        times.push(t);
        peak = peak.max(m);
    }
    times.sort_unstable();
    Ok((times[times.len() / 2], peak))
}

fn configdrive(args: ConfigDriveBenchArgs) -> Result<()> {
    use meta169_configdrive::{drive_files, DriveInput, InjectedFile, RandomSeed};
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let dir = tempfile::tempdir()?;
    let mut instance = meta169_tree::example_instance();
    let pattern = b"#cloud-config abcdefghijklmnopqrstuvwxyz\n";
    instance.user_data = Some((0..64 * 1024).map(|i| pattern[i % pattern.len()]).collect());
    let record = dir.path().join("instance.json");
    std::fs::write(&record, serde_json::to_vec(&instance)?)?;
    let mut file_args = Vec::new();
    let mut injected = Vec::new();
    for i in 0..100 {
        let path = dir.path().join(format!("file{i:03}"));
        let data: Vec<u8> = (0..4096u32)
            .map(|b| (b.wrapping_mul(31) ^ i) as u8)
            .collect();
        std::fs::write(&path, &data)?;
        file_args.push("--file".to_string());
        file_args.push(format!("/etc/injected/file{i:03}.conf={}", path.display()));
        injected.push(InjectedFile {
            guest_path: format!("/etc/injected/file{i:03}.conf"),
            data: Bytes::from(data),
        });
    }
    // The same tree, staged as files, for the baseline tools.
    let render = meta169_tree::RenderOptions::default();
    let tree = drive_files(&DriveInput {
        instance: &instance,
        render: &render,
        vendor_data2: None,
        files: injected,
        admin_pass: None,
        random_seed: RandomSeed::Derived,
    })?;
    let staging = dir.path().join("staging");
    for (path, bytes) in &tree {
        let target = staging.join(path);
        std::fs::create_dir_all(target.parent().unwrap_or(&staging))?;
        std::fs::write(target, bytes)?;
    }
    let me = std::env::current_exe()?;
    println!(
        "meta169 bench configdrive: 64 KiB user data, 100 injected files of 4 KiB ({} files on the drive), {} runs each, median time, peak RSS of the building process\n",
        tree.len(),
        args.runs
    );
    println!(
        "{:<8} {:<28} {:>10} {:>14}",
        "format", "tool", "time ms", "peak RSS MiB"
    );
    let show = |format: &str, tool: &str, (t, kib): (Duration, u64)| {
        println!(
            "{:<8} {:<28} {:>10.1} {:>14.1}",
            format,
            tool,
            t.as_secs_f64() * 1e3,
            kib as f64 / 1024.0
        );
    };
    for format in ["iso9660", "vfat"] {
        let out = dir.path().join(format!("meta169.{format}"));
        let ours = repeat(args.runs, || {
            measured(
                std::process::Command::new(&me)
                    .args(["configdrive", "--from-json"])
                    .arg(&record)
                    .args(["--format", format, "-o"])
                    .arg(&out)
                    .args(&file_args)
                    .env("RUST_LOG", "warn"),
            )
        })?;
        show(format, "meta169 configdrive", ours);
        let baseline = if format == "iso9660" && have("genisoimage") {
            let out = dir.path().join("genisoimage.iso");
            Some((
                "genisoimage -J -r (Nova)",
                repeat(args.runs, || {
                    measured(
                        std::process::Command::new("genisoimage")
                            .args(["-o"])
                            .arg(&out)
                            .args([
                                "-ldots",
                                "-allow-lowercase",
                                "-allow-multidot",
                                "-l",
                                "-publisher",
                                "meta169",
                                "-quiet",
                                "-J",
                                "-r",
                                "-V",
                                "config-2",
                            ])
                            .arg(&staging),
                    )
                })?,
            ))
        } else if format == "vfat" && have("mkfs.vfat") && have("mcopy") {
            let out = dir.path().join("mkfs.img");
            Some((
                "mkfs.vfat + mcopy (Nova)",
                repeat(args.runs, || {
                    let _ = std::fs::remove_file(&out);
                    let (t1, m1) = measured(
                        std::process::Command::new("mkfs.vfat")
                            .args(["-C", "-n", "config-2"])
                            .arg(&out)
                            .arg("65536"),
                    )?;
                    let (t2, m2) = measured(
                        std::process::Command::new("mcopy")
                            .args(["-s", "-i"])
                            .arg(&out)
                            .arg(staging.join("ec2"))
                            .arg(staging.join("openstack"))
                            .arg("::/"),
                    )?;
                    Ok((t1 + t2, m1.max(m2)))
                })?,
            ))
        } else {
            None
        };
        match baseline {
            Some((name, result)) => {
                show(format, name, result);
                println!(
                    "{:<8} {:<28} {:>10.2} {:>14.2}",
                    format,
                    "ratio (meta169 / baseline)",
                    ours.0.as_secs_f64() / result.0.as_secs_f64(),
                    ours.1 as f64 / result.1.max(1) as f64
                );
            }
            None => println!("{format:<8} (baseline tool not installed; install genisoimage, dosfstools and mtools for ratios)"),
        }
    }
    Ok(())
}
