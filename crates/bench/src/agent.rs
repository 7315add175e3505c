//! `meta169 bench agent`: the agent measured against baselines in the same
//! run. Needs root, ovsdb-server and the OVN schemas (scripts/test installs
//! them). Every loop is bounded by a count and a deadline.
//!
//! (a) requests through the agent's proxy vs straight to the API;
//! (b) time from a VM port bound to this chassis to its first answer;
//! (c) agent memory with 1, 100 and 1,000 provisioned networks;
//! (d) a boot storm: many instances, each cloud-init's 29 requests on
//!     fresh connections through the agent, vs a bare hyper server.

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Args;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use meta169_agent::netns;
use meta169_agent::sb::{Index, Target};
use meta169_api::{metadata_router, ApiSettings, MetadataService, ServerLimits};
use meta169_store::{SqliteStore, Store};
use meta169_testkit::{OvsdbServer, Process, OVN_SB_SCHEMA};
use serde_json::{json, Value};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct AgentBenchArgs {
    /// Requests per round in (a).
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Port bindings timed in (b).
    #[arg(long, default_value_t = 20)]
    bindings: usize,
    /// Largest network count in (c) (1, 100 and this).
    #[arg(long, default_value_t = 1000)]
    networks: usize,
    /// Instances in the boot storm (d).
    #[arg(long, default_value_t = 1000)]
    instances: usize,
    /// Concurrent instances booting in (d).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Which parts to run (a, b, c, d).
    #[arg(long, default_value = "abcd")]
    parts: String,
}

const SECRET: &str = "bench-secret";
const CHASSIS: &str = "bench-chassis";

fn sign(id: &str) -> String {
    meta169_api::signing::sign_instance_id(SECRET.as_bytes(), id)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[(((sorted.len() - 1) as f64) * p).round() as usize]
}

/// A metadata API in signed mode on loopback, with `count` instances `inst-N`.
async fn start_api(count: usize) -> Result<(String, Arc<MetadataService>)> {
    let mut settings = ApiSettings::default();
    settings.identity.shared_secret = SECRET.as_bytes().to_vec();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory()?);
    for n in 0..count {
        let mut i = meta169_tree::example_instance();
        i.uuid = format!("inst-{n}");
        i.project_id = "bench".into();
        i.ports.clear();
        store.put_instance(&i).await?;
    }
    let limits = meta169_api::metadata_listener_limits(&settings, ServerLimits::default());
    let service = Arc::new(MetadataService::new(store, settings, limits.clone())?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(meta169_api::server::serve(
        listener,
        metadata_router(service.clone()),
        limits,
        std::future::pending(),
    ));
    Ok((url, service))
}

/// GET over keep-alive connections; returns (req/s, sorted latencies).
async fn keepalive_load(
    addr: SocketAddr,
    path: &str,
    headers: Vec<(String, String)>,
    requests: usize,
    connections: usize,
) -> Result<(f64, Vec<Duration>)> {
    let per = requests.div_ceil(connections);
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let (path, headers) = (path.to_string(), headers.clone());
        set.spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let mut lat = Vec::with_capacity(per);
            for _ in 0..per {
                let mut req = http::Request::get(path.as_str()).header("host", "169.254.169.254");
                for (k, v) in &headers {
                    req = req.header(k.as_str(), v.as_str());
                }
                let t = Instant::now();
                let resp = sender
                    .send_request(req.body(http_body_util::Empty::<Bytes>::new())?)
                    .await?;
                let status = resp.status();
                resp.into_body().collect().await?;
                if status != 200 {
                    bail!("{path}: {status}");
                }
                lat.push(t.elapsed());
            }
            anyhow::Ok(lat)
        });
    }
    let mut all = Vec::new();
    while let Some(r) = set.join_next().await {
        all.extend(r??);
    }
    let rps = all.len() as f64 / started.elapsed().as_secs_f64();
    all.sort_unstable();
    Ok((rps, all))
}

async fn part_a(requests: usize) -> Result<()> {
    const ROUNDS: usize = 7;
    println!(
        "(a) requests through the agent's proxy vs straight to the API, same client, loopback"
    );
    // The API and the agent get runtimes of their own, as they are separate
    // processes in a deployment; the load generator runs on the main one.
    let runtime = |name: &str, threads: usize| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name(name)
            .enable_all()
            .build()
    };
    let api_rt = runtime("bench-api", 2)?;
    // The agent's own runtime (one thread), driven by a thread of its own
    // until the bench ends.
    let (agent_rt, stop_agent) = {
        let runtime = meta169_agent::runtime()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("bench-agent".into())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
                runtime.shutdown_background();
            })?;
        (handle, stop)
    };
    let (api_url, _service) = api_rt.spawn(start_api(1)).await??;
    let upstream_url = api_url.clone();
    let agent_addr = agent_rt
        .spawn(async move {
            let proxy = Arc::new(meta169_agent::proxy::Proxy::new(
                &meta169_agent::Upstream {
                    url: upstream_url,
                    shared_secret: SECRET.as_bytes().to_vec(),
                    timeout: Duration::from_secs(10),
                    insecure: false,
                    ca_cert: None,
                    pipelining: meta169_agent::Pipelining::Auto,
                },
            )?);
            let mut index = Index::default();
            index.insert(
                "bench-net",
                [0xfa, 0x16, 0x3e, 0, 0, 1],
                &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
                Target {
                    instance_id: "inst-0".into(),
                    project_id: "bench".into(),
                },
            );
            proxy.set_index(index);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            let router = meta169_agent::proxy::guest_service(meta169_agent::proxy::ListenerState {
                proxy,
                network_id: Arc::from("bench-net"),
            });
            tokio::spawn(meta169_http::serve(
                listener,
                router,
                meta169_http::ServerLimits::default(),
                std::future::pending(),
            ));
            anyhow::Ok(addr)
        })
        .await??;
    let api_addr: SocketAddr = api_url.trim_start_matches("http://").parse()?;
    let signed = vec![
        ("X-Instance-ID".to_string(), "inst-0".to_string()),
        ("X-Tenant-ID".to_string(), "bench".to_string()),
        ("X-Instance-ID-Signature".to_string(), sign("inst-0")),
    ];
    let path = "/latest/meta-data/instance-id";
    keepalive_load(api_addr, path, signed.clone(), 2000, 16).await?;
    keepalive_load(agent_addr, path, vec![], 2000, 16).await?;
    let (mut direct, mut through) = (Vec::new(), Vec::new());
    let (mut dl, mut tl) = (Vec::new(), Vec::new());
    let (mut direct_cpu, mut through_cpu) = (CpuByThread::default(), CpuByThread::default());
    for _ in 0..ROUNDS {
        let before = CpuByThread::now();
        let (r, l) = keepalive_load(api_addr, path, signed.clone(), requests, 16).await?;
        direct_cpu.add_since(&before);
        direct.push(r);
        dl.extend(l);
        let before = CpuByThread::now();
        let (r, l) = keepalive_load(agent_addr, path, vec![], requests, 16).await?;
        through_cpu.add_since(&before);
        through.push(r);
        tl.extend(l);
    }
    // Each round's ratio against the direct round just before it, so that
    // the machine's drift over the run cancels out.
    let mut ratios: Vec<f64> = through.iter().zip(&direct).map(|(t, d)| t / d).collect();
    ratios.sort_by(f64::total_cmp);
    direct.sort_by(f64::total_cmp);
    through.sort_by(f64::total_cmp);
    dl.sort_unstable();
    tl.sort_unstable();
    println!(
        "    straight to the API   {:>9.0} req/s   p50 {:>5} us   p99 {:>6} us",
        direct[ROUNDS / 2],
        percentile(&dl, 0.5).as_micros(),
        percentile(&dl, 0.99).as_micros()
    );
    println!(
        "    through the agent     {:>9.0} req/s   p50 {:>5} us   p99 {:>6} us",
        through[ROUNDS / 2],
        percentile(&tl, 0.5).as_micros(),
        percentile(&tl, 0.99).as_micros()
    );
    println!(
        "    ratio {:.2} (agent / direct, median of {ROUNDS} paired rounds: {}; target >= 0.50)",
        ratios[ROUNDS / 2],
        ratios
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let total = (ROUNDS * requests) as f64;
    for (label, cpu) in [("straight", &direct_cpu), ("through ", &through_cpu)] {
        println!(
            "    CPU per request, {label}: client {:>5.1} us   agent {:>5.1} us   API {:>5.1} us",
            cpu.micros("tokio-rt-worker") / total,
            cpu.micros("bench-agent") / total,
            cpu.micros("bench-api") / total,
        );
    }
    println!();
    api_rt.shutdown_background();
    let _ = stop_agent.send(());
    Ok(())
}

/// CPU time (user + system) of this process' threads, summed by thread
/// name, so the bench can say which party a request's cost falls on.
#[derive(Default)]
struct CpuByThread(std::collections::HashMap<String, u64>);

impl CpuByThread {
    fn now() -> CpuByThread {
        let mut by_name = std::collections::HashMap::new();
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return CpuByThread(by_name);
        };
        for task in tasks.flatten() {
            let path = task.path();
            let (Ok(name), Ok(stat)) = (
                std::fs::read_to_string(path.join("comm")),
                std::fs::read_to_string(path.join("stat")),
            ) else {
                continue;
            };
            // Fields after the parenthesised name: utime and stime are the
            // 12th and 13th of them.
            let Some((_, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            let ticks: u64 = rest
                .split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|f| f.parse::<u64>().ok())
                .sum();
            *by_name.entry(name.trim().to_string()).or_insert(0) += ticks;
        }
        CpuByThread(by_name)
    }

    fn add_since(&mut self, before: &CpuByThread) {
        for (name, ticks) in CpuByThread::now().0 {
            let earlier = before.0.get(&name).copied().unwrap_or(0);
            *self.0.entry(name).or_insert(0) += ticks.saturating_sub(earlier);
        }
    }

    /// Microseconds spent by threads called `name`.
    fn micros(&self, name: &str) -> f64 {
        // Linux reports these in clock ticks of 1/100 s (USER_HZ).
        self.0.get(name).copied().unwrap_or(0) as f64 * 10_000.0
    }
}

/// A Southbound with this chassis, a Linux bridge, the API, and the agent
/// running as its own process.
struct Rig {
    dir: tempfile::TempDir,
    sb: OvsdbServer,
    chassis_uuid: String,
    bridge: String,
    api_url: String,
    agent: Option<Process>,
    next_key: i64,
}

impl Rig {
    async fn start(instances: usize) -> Result<Rig> {
        let dir = tempfile::Builder::new()
            .prefix("meta169-bench-")
            .tempdir()?;
        let sb = OvsdbServer::start("sb", OVN_SB_SCHEMA, dir.path());
        let r = sb.transact(
            "OVN_Southbound",
            &json!([
                {"op": "insert", "table": "Encap", "uuid-name": "e", "row": {"type": "geneve", "ip": "127.0.0.1", "chassis_name": CHASSIS}},
                {"op": "insert", "table": "Chassis", "uuid-name": "c", "row": {"name": CHASSIS, "hostname": CHASSIS, "encaps": ["named-uuid", "e"]}},
                {"op": "insert", "table": "Chassis_Private", "row": {"name": CHASSIS, "chassis": ["named-uuid", "c"]}},
                {"op": "insert", "table": "SB_Global", "row": {"nb_cfg": 1}}
            ]),
        );
        let chassis_uuid = r[1]["uuid"][1]
            .as_str()
            .context("chassis uuid")?
            .to_string();
        let bridge = format!("m169bb{}", std::process::id() % 10_000);
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&["link", "set", &bridge, "up"])?;
        let (api_url, _) = start_api(instances).await?;
        Ok(Rig {
            dir,
            sb,
            chassis_uuid,
            bridge,
            api_url,
            agent: None,
            next_key: 1,
        })
    }

    fn start_agent(&mut self) -> Result<()> {
        let secret = self.dir.path().join("secret");
        std::fs::write(&secret, SECRET)?;
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.args([
            "agent",
            "--ovn-sb",
            &self.sb.remote(),
            "--chassis",
            CHASSIS,
            "--bridge",
            &format!("linux:{}", self.bridge),
        ])
        .args(["--upstream", &self.api_url, "--ovs-db", "unix:/nonexistent"])
        .arg("--shared-secret-file")
        .arg(&secret)
        .arg("--status-socket")
        .arg(self.dir.path().join("agent.sock"))
        .env("RUST_LOG", "warn");
        self.agent = Some(Process::start("agent", cmd, self.dir.path()));
        Ok(())
    }

    fn agent_rss_kib(&self) -> u64 {
        let pid = self.agent.as_ref().map(|p| p.pid()).unwrap_or(0);
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0)
    }

    /// A network with its metadata port at 10.0.0.2/16 (or as given).
    fn network(&mut self, id: &str) -> String {
        let key = self.next_key;
        self.next_key += 1;
        let r = self.sb.transact(
            "OVN_Southbound",
            &json!([{"op": "insert", "table": "Datapath_Binding", "row": {"tunnel_key": key, "external_ids": ["map", [["name", format!("neutron-{id}")]]]}}]),
        );
        let dp = r[0]["uuid"][1].as_str().unwrap_or_default().to_string();
        self.sb.transact(
            "OVN_Southbound",
            &json!([{"op": "insert", "table": "Port_Binding", "row": {"logical_port": format!("meta-{id}"), "type": "localport",
                "datapath": ["uuid", dp], "tunnel_key": 1, "mac": ["set", ["fa:16:3e:aa:00:02 10.0.0.2"]],
                "external_ids": ["map", [["neutron:device_owner", "network:distributed"], ["neutron:device_id", format!("ovnmeta-{id}")], ["neutron:cidrs", "10.0.0.2/16"]]]}}]),
        );
        dp
    }

    /// VM ports (name, mac, ip, instance), bound here or not, in one transaction.
    fn ports(&self, dp: &str, ports: &[(String, String, String, String)], bound: bool) {
        let ops: Vec<Value> = ports
            .iter()
            .enumerate()
            .map(|(n, (name, mac, ipaddr, inst))| {
                let mut row = json!({"logical_port": name, "datapath": ["uuid", dp], "tunnel_key": n as i64 + 2,
                    "mac": ["set", [format!("{mac} {ipaddr}")]],
                    "external_ids": ["map", [["neutron:device_id", inst], ["neutron:project_id", "bench"]]]});
                if bound {
                    row["chassis"] = json!(["uuid", self.chassis_uuid]);
                }
                json!({"op": "insert", "table": "Port_Binding", "row": row})
            })
            .collect();
        for chunk in ops.chunks(200) {
            self.sb
                .transact("OVN_Southbound", &Value::Array(chunk.to_vec()));
        }
    }

    fn bind(&self, port: &str) {
        self.sb.transact(
            "OVN_Southbound",
            &json!([{"op": "update", "table": "Port_Binding", "where": [["logical_port", "==", port]], "row": {"chassis": ["uuid", self.chassis_uuid]}}]),
        );
    }

    fn unbind_all(&self) {
        self.sb.transact(
            "OVN_Southbound",
            &json!([{"op": "update", "table": "Port_Binding", "where": [["type", "==", ""]], "row": {"chassis": ["set", []]}}]),
        );
    }

    fn provisioned(&self) -> usize {
        netns::list("ovnmeta-bench").map(|l| l.len()).unwrap_or(0)
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(mut a) = self.agent.take() {
            a.stop();
        }
        for ns in netns::list("ovnmeta-bench").unwrap_or_default() {
            let _ = netns::delete(&ns);
        }
        for ns in netns::list("m169bench").unwrap_or_default() {
            let _ = netns::delete(&ns);
        }
        let _ = ip(&["link", "del", &self.bridge]);
        // Outer veth ends die with their namespaces' inner ends.
    }
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output()?;
    if !out.status.success() {
        bail!("ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// A VM namespace on the bridge: returns (namespace, host-side veth).
fn vm_namespace(bridge: &str, tag: &str, addresses: &[String]) -> Result<(String, String)> {
    let ns = format!("m169bench-{tag}");
    netns::create(&ns)?;
    let host = format!("bh{tag}");
    ip(&[
        "link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", &ns,
    ])?;
    ip(&["link", "set", &host, "master", bridge, "up"])?;
    ip(&[
        "-n",
        &ns,
        "link",
        "set",
        "eth0",
        "address",
        "fa:16:3e:99:00:01",
        "up",
    ])?;
    ip(&["-n", &ns, "link", "set", "lo", "up"])?;
    for a in addresses {
        ip(&["-n", &ns, "addr", "add", a, "dev", "eth0"])?;
    }
    ip(&[
        "-n",
        &ns,
        "route",
        "add",
        "169.254.169.254/32",
        "via",
        "10.0.0.2",
    ])?;
    // A static neighbour entry for the metadata port: without it, the
    // first SYN sent before the agent has plumbed the namespace leaves a
    // FAILED ARP entry that the kernel retries only after a second, which
    // would measure the guest's ARP timer rather than the agent.
    ip(&[
        "-n",
        &ns,
        "neigh",
        "replace",
        "10.0.0.2",
        "lladdr",
        "fa:16:3e:aa:00:02",
        "dev",
        "eth0",
        "nud",
        "permanent",
    ])?;
    Ok((ns, host))
}

fn network_id(n: usize) -> String {
    format!("bench{n:05}-0000-4000-8000-000000000000")
}

/// One GET from inside a namespace, bound to a source address: the status.
fn get_from(source: Ipv4Addr, target: SocketAddr, path: &str) -> std::io::Result<u16> {
    get_from_within(source, target, path, Duration::from_secs(2))
}

fn get_from_within(
    source: Ipv4Addr,
    target: SocketAddr,
    path: &str,
    connect_timeout: Duration,
) -> std::io::Result<u16> {
    let (status, _) = meta169_testkit::http_get_from(
        source.into(),
        target,
        path,
        connect_timeout,
        Duration::from_secs(5),
    )?;
    Ok(status)
}

async fn part_b(bindings: usize) -> Result<()> {
    println!("(b) time from a VM Port_Binding bound to this chassis to the first answer in its namespace");
    let mut rig = Rig::start(bindings).await?;
    rig.start_agent()?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut times = Vec::new();
    for n in 0..bindings {
        let id = network_id(n);
        let dp = rig.network(&id);
        let port = format!("vm-b{n}");
        rig.ports(
            &dp,
            &[(
                port.clone(),
                "fa:16:3e:99:00:01".into(),
                "10.0.0.5".into(),
                format!("inst-{n}"),
            )],
            false,
        );
        let (ns, host) = vm_namespace(&rig.bridge, &format!("b{n}"), &["10.0.0.5/16".to_string()])?;
        let started = Instant::now();
        rig.bind(&port);
        let answered = netns::run_in(&ns, move || {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                // A short connect timeout: a SYN sent before the namespace
                // exists is lost, and waiting for TCP's 1 s retransmission
                // would measure TCP, not the agent.
                let target = SocketAddr::from(([169, 254, 169, 254], 80));
                if get_from_within(
                    Ipv4Addr::new(10, 0, 0, 5),
                    target,
                    "/latest/meta-data/instance-id",
                    Duration::from_millis(20),
                )
                .unwrap_or(0)
                    == 200
                {
                    return Ok(true);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(false)
        })?;
        if !answered {
            bail!(
                "binding {n} got no answer within 10 s; see {}",
                rig.dir.path().display()
            );
        }
        times.push(started.elapsed());
        rig.unbind_all();
        let _ = ip(&["link", "del", &host]);
        let _ = netns::delete(&ns);
        let deadline = Instant::now() + Duration::from_secs(10);
        while rig.provisioned() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    times.sort_unstable();
    println!(
        "    {} bindings: median {} ms, p90 {} ms, max {} ms (target median <= 100 ms)\n",
        times.len(),
        percentile(&times, 0.5).as_millis(),
        percentile(&times, 0.9).as_millis(),
        times.last().map_or(0, |t| t.as_millis())
    );
    Ok(())
}

async fn part_c(max: usize) -> Result<()> {
    println!(
        "(c) agent memory (RSS of the agent process) with 1, 100 and {max} provisioned networks"
    );
    let mut rig = Rig::start(1).await?;
    rig.start_agent()?;
    let mut created = 0;
    let mut rss = Vec::new();
    for target in [1usize, 100.min(max), max] {
        let started = Instant::now();
        while created < target {
            let id = network_id(created);
            let dp = rig.network(&id);
            rig.ports(
                &dp,
                &[(
                    format!("vm-c{created}"),
                    "fa:16:3e:99:00:01".into(),
                    "10.0.0.5".into(),
                    "inst-0".into(),
                )],
                true,
            );
            created += 1;
        }
        let deadline = Instant::now() + Duration::from_secs(600);
        while rig.provisioned() < target && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if rig.provisioned() < target {
            bail!(
                "only {} of {target} networks provisioned",
                rig.provisioned()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let kib = rig.agent_rss_kib();
        println!(
            "    {target:>5} networks: {:>8} KiB RSS   (provisioned in {:.1} s)",
            kib,
            started.elapsed().as_secs_f64()
        );
        rss.push((target, kib));
    }
    if let (Some((n1, r1)), Some((nmax, rmax))) = (rss.first(), rss.last()) {
        if nmax > n1 {
            let per = (*rmax as f64 - *r1 as f64) / (*nmax - *n1) as f64;
            println!("    {per:.1} KiB per network beyond the first (target <= 64 KiB)\n");
        }
    }
    Ok(())
}

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

/// The baseline: hyper answering 200 with a small fixed body.
fn bare_server_in(ns: &str, addr: SocketAddr) -> Result<tokio::task::JoinHandle<()>> {
    let listener = netns::run_in(ns, move || {
        let l = std::net::TcpListener::bind(addr)?;
        l.set_nonblocking(true)?;
        Ok(l)
    })?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(|_r: http::Request<hyper::body::Incoming>| async {
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(Bytes::from_static(b"i-00000042")),
                        ))
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }))
}

async fn part_d(instances: usize, concurrency: usize) -> Result<()> {
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

pub async fn run(args: AgentBenchArgs) -> Result<()> {
    if !meta169_testkit::is_root() {
        bail!("meta169 bench agent needs root (namespaces, veths)");
    }
    println!("meta169 bench agent\n");
    if args.parts.contains('a') {
        part_a(args.requests).await?;
    }
    if args.parts.contains('b') {
        part_b(args.bindings).await?;
    }
    if args.parts.contains('c') {
        part_c(args.networks).await?;
    }
    if args.parts.contains('d') {
        part_d(args.instances, args.concurrency).await?;
    }
    Ok(())
}
