//! (d) A boot storm: many instances, each cloud-init's request sequence
//! on fresh connections through the agent, vs a bare hyper server in the
//! same namespace.

use super::rig::{get_from, network_id, vm_namespace, Rig};
use crate::measure::bare_server;
use anyhow::{bail, Result};
use bytes::Bytes;
use meta169_agent::netns;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// cloud-init's request sequence against one metadata server.
fn boot_paths() -> Vec<&'static str> {
    let mut p = vec![
        "/openstack",
        "/openstack",
        "/openstack/2018-08-27/meta_data.json",
        "/openstack/2018-08-27/user_data",
        "/openstack/2018-08-27/vendor_data.json",
        "/openstack/2018-08-27/vendor_data2.json",
        "/openstack/2018-08-27/network_data.json",
        "/latest/meta-data/",
    ];
    for leaf in [
        "ami-id",
        "ami-launch-index",
        "ami-manifest-path",
        "block-device-mapping/",
        "block-device-mapping/ami",
        "block-device-mapping/ephemeral0",
        "block-device-mapping/root",
        "hostname",
        "instance-action",
        "instance-id",
        "instance-type",
        "local-hostname",
        "local-ipv4",
        "placement/",
        "placement/availability-zone",
        "public-hostname",
        "public-ipv4",
        "public-keys/",
        "public-keys/0/openssh-key",
        "reservation-id",
        "security-groups",
    ] {
        p.push(Box::leak(
            format!("/latest/meta-data/{leaf}").into_boxed_str(),
        ));
    }
    p
}

/// Failed requests of a storm by kind ("status 502", "TimedOut", ...).
#[derive(Default)]
struct Failures(std::collections::BTreeMap<String, usize>);

impl Failures {
    fn total(&self) -> usize {
        self.0.values().sum()
    }

    fn add(&mut self, other: Failures) {
        for (kind, count) in other.0 {
            *self.0.entry(kind).or_insert(0) += count;
        }
    }
}

impl std::fmt::Display for Failures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} failed", self.total())?;
        let kinds: Vec<String> = self.0.iter().map(|(k, n)| format!("{n} {k}")).collect();
        if !kinds.is_empty() {
            write!(f, ": {}", kinds.join(", "))?;
        }
        Ok(())
    }
}

/// Every instance's whole sequence on fresh connections, from its own address.
fn storm(
    ns: &str,
    sources: Vec<Ipv4Addr>,
    target: SocketAddr,
    concurrency: usize,
) -> Result<(Duration, Failures)> {
    let paths = Arc::new(boot_paths());
    let sources = Arc::new(sources);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Failures::default()));
    let started = Instant::now();
    let mut threads = Vec::new();
    for _ in 0..concurrency {
        let (ns, paths, sources, next, failures) = (
            ns.to_string(),
            paths.clone(),
            sources.clone(),
            next.clone(),
            failures.clone(),
        );
        threads.push(std::thread::spawn(move || {
            netns::run_in(&ns, move || loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(source) = sources.get(i).copied() else {
                    return Ok(());
                };
                for path in paths.iter() {
                    let failure = match get_from(source, target, path) {
                        Ok(200) => None,
                        // The bench's instances have no user data.
                        Ok(404) if path.ends_with("user_data") => None,
                        Ok(status) => Some(format!("status {status}")),
                        Err(e) => Some(format!("{:?} on {path}", e.kind())),
                    };
                    if let (Some(kind), Ok(mut failures)) = (failure, failures.lock()) {
                        *failures.0.entry(kind).or_insert(0) += 1;
                    }
                }
            })
        }));
    }
    for t in threads {
        t.join()
            .map_err(|_| anyhow::anyhow!("storm thread panicked"))??;
    }
    let elapsed = started.elapsed();
    let failures = std::mem::take(&mut *failures.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    Ok((elapsed, failures))
}

/// The baseline: hyper answering 200 with a small fixed body, in `ns`.
fn bare_server_in(ns: &str, addr: SocketAddr) -> Result<tokio::task::JoinHandle<()>> {
    let listener = netns::run_in(ns, move || {
        let l = std::net::TcpListener::bind(addr)?;
        l.set_nonblocking(true)?;
        Ok(l)
    })?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    Ok(tokio::spawn(bare_server(
        listener,
        Bytes::from_static(b"i-00000042"),
        "text/plain".into(),
    )))
}

pub async fn run(instances: usize, concurrency: usize) -> Result<()> {
    let per = boot_paths().len();
    println!("(d) boot storm: {instances} instances x {per} requests (cloud-init's sequence), fresh connections, {concurrency} at a time, one network");
    let mut rig = Rig::start(instances).await?;
    rig.start_agent()?;
    let id = network_id(90_000);
    let dp = rig.network(&id);
    let mut ports = Vec::new();
    let mut sources = Vec::new();
    let mut cidrs = Vec::new();
    for n in 0..instances {
        let addr = Ipv4Addr::new(10, 0, 1 + (n / 250) as u8, 1 + (n % 250) as u8);
        sources.push(addr);
        cidrs.push(format!("{addr}/16"));
        ports.push((
            format!("vm-d{n}"),
            format!("fa:16:3e:98:{:02x}:{:02x}", n / 256, n % 256),
            addr.to_string(),
            format!("inst-{n}"),
        ));
    }
    rig.ports(&dp, &ports, true);
    let (vm_ns, _host) = vm_namespace(&rig.bridge, "storm", &cidrs)?;
    let meta_ns = format!("ovnmeta-{id}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !netns::exists(&meta_ns) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let bare_addr = SocketAddr::from(([169, 254, 169, 254], 8080));
    let _bare = bare_server_in(&meta_ns, bare_addr)?;
    let agent_addr = SocketAddr::from(([169, 254, 169, 254], 80));
    // Warm up both.
    let warm: Vec<Ipv4Addr> = sources.iter().take(10).copied().collect();
    let (ns2, w2) = (vm_ns.clone(), warm.clone());
    tokio::task::spawn_blocking(move || storm(&ns2, w2, agent_addr, 4)).await??;
    let (ns2, w2) = (vm_ns.clone(), warm);
    tokio::task::spawn_blocking(move || storm(&ns2, w2, bare_addr, 4)).await??;
    // Three rounds each, alternating, medians compared: these machines are noisy.
    let (mut bare_times, mut agent_times) = (Vec::new(), Vec::new());
    let (mut bare_fail, mut agent_fail) = (Failures::default(), Failures::default());
    for _ in 0..3 {
        let (ns2, s2) = (vm_ns.clone(), sources.clone());
        let (t, f) =
            tokio::task::spawn_blocking(move || storm(&ns2, s2, bare_addr, concurrency)).await??;
        bare_times.push(t);
        bare_fail.add(f);
        let (ns2, s2) = (vm_ns.clone(), sources.clone());
        let (t, f) =
            tokio::task::spawn_blocking(move || storm(&ns2, s2, agent_addr, concurrency)).await??;
        agent_times.push(t);
        agent_fail.add(f);
    }
    bare_times.sort_unstable();
    agent_times.sort_unstable();
    let show = |ts: &[Duration]| {
        ts.iter()
            .map(|t| format!("{:.2}", t.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "    bare hyper server      median {:>6.2} s  (rounds: {} s; {bare_fail})",
        bare_times[1].as_secs_f64(),
        show(&bare_times)
    );
    println!(
        "    agent + meta169 API    median {:>6.2} s  (rounds: {} s; {agent_fail})",
        agent_times[1].as_secs_f64(),
        show(&agent_times)
    );
    println!(
        "    ratio {:.2} (agent / bare, median wall time of 3 rounds; target <= 1.5)\n",
        agent_times[1].as_secs_f64() / bare_times[1].as_secs_f64()
    );
    if agent_fail.total() > 0 {
        // The agent's log stays for the reader.
        rig.dir.disable_cleanup(true);
        bail!(
            "requests through the agent: {agent_fail}; see {}",
            rig.dir.path().display()
        );
    }
    Ok(())
}
