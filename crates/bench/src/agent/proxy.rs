//! (a) Requests through the agent's proxy vs straight to the API, same
//! client, loopback; with the CPU each party spends per request.

use super::{start_api, SECRET};
use crate::measure::{load, percentile, CpuByThread};
use anyhow::Result;
use meta169_agent::index::{Index, Target};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

fn sign(id: &str) -> String {
    meta169_http::signing::sign_instance_id(SECRET.as_bytes(), id)
}

pub async fn run(requests: usize) -> Result<()> {
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
            let proxy = Arc::new(meta169_agent::Proxy::new(&meta169_agent::Upstream {
                url: upstream_url,
                shared_secret: SECRET.as_bytes().to_vec(),
                timeout: Duration::from_secs(10),
                insecure: false,
                ca_cert: None,
                client_cert: None,
                client_key: None,
                pipelining: meta169_agent::Pipelining::Auto,
            })?);
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
            let router = meta169_agent::guest_service(proxy, Arc::from("bench-net"));
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
    load(api_addr, path, &signed, 2000, 16).await?;
    load(agent_addr, path, &[], 2000, 16).await?;
    let (mut direct, mut through) = (Vec::new(), Vec::new());
    let (mut dl, mut tl) = (Vec::new(), Vec::new());
    let (mut direct_cpu, mut through_cpu) = (CpuByThread::default(), CpuByThread::default());
    for _ in 0..ROUNDS {
        let before = CpuByThread::now();
        let round = load(api_addr, path, &signed, requests, 16).await?;
        direct_cpu.add_since(&before);
        direct.push(round.requests_per_second);
        dl.extend(round.latencies);
        let before = CpuByThread::now();
        let round = load(agent_addr, path, &[], requests, 16).await?;
        through_cpu.add_since(&before);
        through.push(round.requests_per_second);
        tl.extend(round.latencies);
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
