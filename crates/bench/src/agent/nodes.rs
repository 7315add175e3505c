//! (b) time from a VM port bound here to its first answer, and (c) the
//! agent's memory per provisioned network.

use super::rig::{get_from_within, ip, network_id, vm_namespace, Rig};
use crate::measure::percentile;
use anyhow::{bail, Result};
use meta169_agent::netns;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

pub async fn bind_to_answer(bindings: usize) -> Result<()> {
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

pub async fn memory(max: usize) -> Result<()> {
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
