//! `meta169-bench crowd`: a normal guest's latency while a crowd of 1,000
//! slow clients (a request head sent one byte a second, reconnecting when
//! the head timeout cuts it) and 1,000 idle connections sits on the same
//! listener, against the same guest alone in the same run:
//! (a) `meta169 serve` standalone (identity by source address; the guest
//!     at 127.0.0.2, the crowd from 40 other loopback addresses), and
//! (b) one namespace listener of `meta169 agent` (the guest 10.0.0.5 and
//!     the crowd from 40 other addresses on the same network).
//! The guest's requests each open a fresh connection, as cloud-init's do.
//! Every crowd connection and every loop ends at a deadline.

use crate::agent::rig::{network_id, vm_namespace, Rig};
use crate::measure::{meta169_binary, percentile};
use crate::pinned::pinned;
use anyhow::{bail, Context, Result};
use clap::Args;
use meta169_agent::netns;
use meta169_store::Store;
use meta169_testkit::{free_port, wait_for_tcp, Process};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Args)]
pub struct CrowdBenchArgs {
    /// Slow clients in the crowd.
    #[arg(long, default_value_t = 1000)]
    slow: usize,
    /// Idle connections in the crowd.
    #[arg(long, default_value_t = 1000)]
    idle: usize,
    /// The guest's requests in each measurement (one every few ms: long
    /// enough for the head timeout to cut and reconnect the crowd).
    #[arg(long, default_value_t = 3000)]
    requests: usize,
    /// Which parts to run (a: serve, b: the agent's namespace listener).
    #[arg(long, default_value = "ab")]
    parts: String,
}

/// Addresses the crowd comes from: each holds fewer connections than the
/// per-source limit (64), as many guests would.
const CROWD_SOURCES: usize = 40;
/// What a slow client sends, one byte a second: never a whole head.
const SLOW_HEAD: &[u8] =
    b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\nUser-Agent: slow\r\n";
/// Time for the crowd to connect before the guest is measured.
const CROWD_SETTLE: Duration = Duration::from_secs(3);
/// Longest a crowd lives, whatever happens to the measurement.
const CROWD_DEADLINE: Duration = Duration::from_secs(300);
/// A guest's connect and read timeouts.
const GUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The guest's p99 the crowd must leave it under.
const P99_TARGET: Duration = Duration::from_millis(10);
/// How long a server or namespace may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between two of the guest's requests, as a guest's boot spreads
/// them; 3,000 requests then span about 12 s, past serve's and the
/// agent's 10 s head timeout, so the crowd is cut and reconnects meanwhile.
const GUEST_PAUSE: Duration = Duration::from_millis(3);
/// The guest's path.
const PATH: &str = "/latest/meta-data/instance-id";

/// What the crowd did.
#[derive(Default)]
struct CrowdCounts {
    opened: AtomicUsize,
    /// Connections the server closed (head timeout), reopened.
    cut: AtomicUsize,
    /// Connects that failed.
    refused: AtomicUsize,
}

/// A running crowd, stopped on drop.
struct Crowd {
    stop: Arc<AtomicBool>,
    counts: Arc<CrowdCounts>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Crowd {
    /// Start `slow` slow clients and `idle` idle connections to `target`
    /// from `sources`, inside namespace `ns` (or this one).
    fn start(
        ns: Option<String>,
        sources: Vec<IpAddr>,
        target: SocketAddr,
        slow: usize,
        idle: usize,
    ) -> Crowd {
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(CrowdCounts::default());
        let (stop2, counts2) = (stop.clone(), counts.clone());
        let work = move || -> std::io::Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let deadline = tokio::time::Instant::now() + CROWD_DEADLINE;
                let mut tasks = Vec::new();
                for n in 0..slow + idle {
                    let source = sources[n % sources.len()];
                    let (stop, counts) = (stop2.clone(), counts2.clone());
                    tasks.push(tokio::spawn(async move {
                        member(source, target, n < slow, &stop, &counts, deadline).await
                    }));
                }
                for task in tasks {
                    let _ = task.await;
                }
            });
            Ok(())
        };
        let thread = std::thread::spawn(move || {
            let result = match ns {
                Some(ns) => netns::run_in(&ns, work),
                None => work(),
            };
            if let Err(e) = result {
                eprintln!("the crowd failed: {e}");
            }
        });
        Crowd {
            stop,
            counts,
            thread: Some(thread),
        }
    }

    fn summary(&self) -> String {
        format!(
            "crowd: {} connections opened, {} cut by the head timeout and reopened, {} refused",
            self.counts.opened.load(Ordering::SeqCst),
            self.counts.cut.load(Ordering::SeqCst),
            self.counts.refused.load(Ordering::SeqCst)
        )
    }
}

impl Drop for Crowd {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One member of the crowd: connect, then trickle the head (slow) or wait
/// (idle); reconnect when the server cuts it; until stopped.
async fn member(
    source: IpAddr,
    target: SocketAddr,
    slow: bool,
    stop: &AtomicBool,
    counts: &CrowdCounts,
    deadline: tokio::time::Instant,
) {
    while !stop.load(Ordering::SeqCst) && tokio::time::Instant::now() < deadline {
        let connected = async {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(SocketAddr::new(source, 0))?;
            socket.connect(target).await
        }
        .await;
        let mut stream = match connected {
            Ok(stream) => stream,
            Err(_) => {
                counts.refused.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        counts.opened.fetch_add(1, Ordering::SeqCst);
        let mut byte = [0u8; 1];
        let mut sent = 0;
        loop {
            if stop.load(Ordering::SeqCst) || tokio::time::Instant::now() >= deadline {
                return;
            }
            if slow {
                let next = SLOW_HEAD[sent % SLOW_HEAD.len()];
                if stream.write_all(&[next]).await.is_err() {
                    break;
                }
                sent += 1;
            }
            // A read that ends (EOF or error) means the server cut us.
            match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut byte)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                _ => {}
            }
        }
        counts.cut.fetch_add(1, Ordering::SeqCst);
    }
}

/// The guest's fresh-connection GETs, one after another: sorted latencies
/// of the 200s, and how many were not 200.
fn guest(source: IpAddr, target: SocketAddr, requests: usize) -> (Vec<Duration>, usize) {
    let mut latencies = Vec::with_capacity(requests);
    let mut failed = 0;
    for _ in 0..requests {
        let started = Instant::now();
        match meta169_testkit::http_get_from(source, target, PATH, GUEST_TIMEOUT, GUEST_TIMEOUT) {
            Ok((200, _)) => latencies.push(started.elapsed()),
            _ => failed += 1,
        }
        std::thread::sleep(GUEST_PAUSE);
    }
    latencies.sort_unstable();
    (latencies, failed)
}

fn guest_in(
    ns: Option<&str>,
    source: IpAddr,
    target: SocketAddr,
    requests: usize,
) -> Result<(Vec<Duration>, usize)> {
    match ns {
        Some(ns) => Ok(netns::run_in(ns, move || {
            Ok(guest(source, target, requests))
        })?),
        None => Ok(guest(source, target, requests)),
    }
}

fn line(label: &str, latencies: &[Duration], failed: usize) -> String {
    let ms = |p: f64| percentile(latencies, p).as_secs_f64() * 1000.0;
    format!(
        "    {label:<11} p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>7.2} ms  ({} answered, {failed} failed)",
        ms(0.5),
        ms(0.99),
        ms(1.0),
        latencies.len()
    )
}

/// Measure the guest alone, then among the crowd; print both and the
/// verdict on the p99 target. Fails when the guest missed an answer.
fn measure(
    args: &CrowdBenchArgs,
    ns: Option<&str>,
    guest_source: IpAddr,
    crowd_sources: Vec<IpAddr>,
    target: SocketAddr,
) -> Result<()> {
    // Warm up: the first connections pay for caches and page faults.
    guest_in(ns, guest_source, target, 100)?;
    let (alone, alone_failed) = guest_in(ns, guest_source, target, args.requests)?;
    println!("{}", line("alone", &alone, alone_failed));
    let crowd = Crowd::start(
        ns.map(str::to_string),
        crowd_sources,
        target,
        args.slow,
        args.idle,
    );
    std::thread::sleep(CROWD_SETTLE);
    let (among, among_failed) = guest_in(ns, guest_source, target, args.requests)?;
    let summary = crowd.summary();
    drop(crowd);
    println!("{}", line("among crowd", &among, among_failed));
    println!("    {summary}");
    let (p99_alone, p99_among) = (percentile(&alone, 0.99), percentile(&among, 0.99));
    let verdict = match p99_among <= P99_TARGET {
        true => "met",
        false => "MISSED",
    };
    println!(
        "    p99 ratio {:.2} (among the crowd / alone); target p99 under {} ms among the crowd: {verdict}\n",
        p99_among.as_secs_f64() / p99_alone.as_secs_f64().max(1e-9),
        P99_TARGET.as_millis()
    );
    // A refused guest is a fault, not a speed: that fails the run.
    if among_failed > 0 || alone_failed > 0 {
        bail!("the guest's requests failed: {alone_failed} alone, {among_failed} among the crowd");
    }
    Ok(())
}

fn loopback_crowd() -> Vec<IpAddr> {
    (0..CROWD_SOURCES)
        .map(|n| IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1 + n as u8)))
        .collect()
}

/// (a) serve standalone on the server core, the example record at 127.0.0.2.
async fn serve_part(args: &CrowdBenchArgs) -> Result<()> {
    println!(
        "(a) meta169 serve (identity by source): a guest's GETs on fresh connections, alone and among {} slow + {} idle clients",
        args.slow, args.idle
    );
    let dir = tempfile::Builder::new()
        .prefix("meta169-bench-crowd-")
        .tempdir()?;
    let db = dir.path().join("store.db");
    let store = meta169_store::SqliteStore::open(&db)?;
    let mut instance = meta169_tree::example_instance();
    for port in &mut instance.ports {
        port.ips = vec!["127.0.0.2".parse()?];
    }
    store.put_instance(&instance).await?;
    drop(store);
    let config = dir.path().join("serve.toml");
    std::fs::write(
        &config,
        "[serve]\naccess_log = \"off\"\nops_listen = \"\"\n\
         [serve.identity]\nsigned = false\nby_address = false\nby_source = true\n",
    )?;
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
    let admin = format!("127.0.0.1:{}", free_port());
    let mut command = pinned(&meta169_binary()?);
    command
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .arg("--store")
        .arg(format!("sqlite://{}", db.display()))
        .args(["--listen", &addr.to_string(), "--admin-listen", &admin])
        .env("RUST_LOG", "warn");
    let mut server = Process::start("serve", command, dir.path());
    if !wait_for_tcp(addr, START_TIMEOUT) || server.exited().is_some() {
        bail!(
            "meta169 serve did not start: {}",
            meta169_testkit::read_log(&dir.path().join("serve.log"))
        );
    }
    let result = measure(args, None, "127.0.0.2".parse()?, loopback_crowd(), addr);
    server.stop();
    result
}

/// (b) one namespace listener of the agent (its own process).
async fn agent_part(args: &CrowdBenchArgs) -> Result<()> {
    println!(
        "(b) meta169 agent, one namespace listener: a guest's GETs on fresh connections, alone and among {} slow + {} idle clients",
        args.slow, args.idle
    );
    let mut rig = Rig::start(1).await?;
    rig.start_agent()?;
    let id = network_id(80_000);
    let dp = rig.network(&id);
    let guest_address = Ipv4Addr::new(10, 0, 0, 5);
    rig.ports(
        &dp,
        &[(
            "vm-crowd-guest".into(),
            "fa:16:3e:97:00:05".into(),
            guest_address.to_string(),
            "inst-0".into(),
        )],
        true,
    );
    let crowd: Vec<IpAddr> = (0..CROWD_SOURCES)
        .map(|n| IpAddr::V4(Ipv4Addr::new(10, 0, 2, 1 + n as u8)))
        .collect();
    let mut cidrs = vec![format!("{guest_address}/16")];
    cidrs.extend(crowd.iter().map(|a| format!("{a}/16")));
    // One namespace holds the guest's and the crowd's addresses.
    let (vm_ns, _host) = vm_namespace(&rig.bridge, "crowd", &cidrs)?;
    let target = SocketAddr::from(([169, 254, 169, 254], 80));
    let source = IpAddr::V4(guest_address);
    let deadline = Instant::now() + START_TIMEOUT;
    let ns = vm_ns.clone();
    let serving = move || {
        netns::run_in(&ns, move || {
            Ok(meta169_testkit::http_get_from(
                source,
                target,
                PATH,
                Duration::from_secs(1),
                Duration::from_secs(1),
            )
            .map(|(status, _)| status)
            .unwrap_or(0))
        })
        .unwrap_or(0)
            == 200
    };
    while !serving() {
        if Instant::now() > deadline {
            bail!("the agent did not answer the guest within {START_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let result = measure(args, Some(&vm_ns), source, crowd, target);
    // Deleting the namespace deletes the veth pair too.
    let _ = netns::delete(&vm_ns);
    let _ = netns::delete(&format!("ovnmeta-{id}"));
    result.context("the agent's namespace listener")
}

pub async fn run(args: CrowdBenchArgs) -> Result<()> {
    if !meta169_testkit::is_root() && args.parts.contains('b') {
        bail!("meta169-bench crowd (b) needs root (namespaces, veths); run --parts a without it");
    }
    // The crowd holds thousands of sockets in this process.
    let (_, hard) = rlimit::Resource::NOFILE.get()?;
    rlimit::Resource::NOFILE.set(hard, hard)?;
    println!("meta169 bench crowd\n");
    if args.parts.contains('a') {
        serve_part(&args).await?;
    }
    if args.parts.contains('b') {
        agent_part(&args).await?;
    }
    Ok(())
}
