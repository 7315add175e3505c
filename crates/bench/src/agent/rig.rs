//! The bench's node: a Southbound with this chassis, a Linux bridge, the
//! API, the agent as its own process, and VMs in namespaces.

use super::{start_api, CHASSIS, SECRET};
use crate::measure::meta169_binary;
use anyhow::{bail, Context, Result};
use meta169_agent::netns;
use meta169_testkit::sb::{self, RowRef, VmPort};
use meta169_testkit::{OvsdbServer, Process, OVN_SB_SCHEMA};
use serde_json::Value;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

/// VM ports written per Southbound transaction.
const PORTS_PER_TRANSACTION: usize = 200;

/// A Southbound with this chassis, a Linux bridge, the API, and the agent
/// running as its own process.
pub struct Rig {
    pub dir: tempfile::TempDir,
    sb: OvsdbServer,
    chassis_uuid: String,
    pub bridge: String,
    api_url: String,
    agent: Option<Process>,
    next_key: i64,
}

impl Rig {
    pub async fn start(instances: usize) -> Result<Rig> {
        let dir = tempfile::Builder::new()
            .prefix("meta169-bench-")
            .tempdir()?;
        let sb = OvsdbServer::start("sb", OVN_SB_SCHEMA, dir.path());
        let mut ops = sb::chassis(CHASSIS);
        ops.push(sb::sb_global(1));
        let r = sb.transact(sb::SB_DB, &Value::Array(ops));
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

    pub fn start_agent(&mut self) -> Result<()> {
        let secret = self.dir.path().join("secret");
        std::fs::write(&secret, SECRET)?;
        let mut cmd = Command::new(meta169_binary()?);
        cmd.args([
            "agent",
            "--ovn-sb",
            &self.sb.remote(),
            "--chassis",
            CHASSIS,
            "--bridge",
            &format!("linux:{}", self.bridge),
        ])
        .args([
            "--upstream",
            &self.api_url,
            "--ovs-db",
            "unix:/nonexistent",
            "--ops-listen",
            "",
        ])
        .arg("--shared-secret-file")
        .arg(&secret)
        .arg("--status-socket")
        .arg(self.dir.path().join("agent.sock"))
        .env("RUST_LOG", "warn");
        self.agent = Some(Process::start("agent", cmd, self.dir.path()));
        Ok(())
    }

    pub fn agent_rss_kib(&self) -> u64 {
        let Some(pid) = self.agent.as_ref().and_then(Process::pid) else {
            return 0;
        };
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0)
    }

    /// A network with its metadata port at 10.0.0.2/16.
    pub fn network(&mut self, id: &str) -> String {
        let key = self.next_key;
        self.next_key += 1;
        let r = self
            .sb
            .transact(sb::SB_DB, &Value::Array(vec![sb::datapath(id, key, None)]));
        let dp = r[0]["uuid"][1].as_str().unwrap_or_default().to_string();
        let port = sb::metadata_port(id, RowRef::Uuid(&dp), "fa:16:3e:aa:00:02", "10.0.0.2/16", 1);
        self.sb.transact(sb::SB_DB, &Value::Array(vec![port]));
        dp
    }

    /// VM ports (name, mac, ip, instance), bound here or not, in batches.
    pub fn ports(&self, dp: &str, ports: &[(String, String, String, String)], bound: bool) {
        let ops: Vec<Value> = ports
            .iter()
            .enumerate()
            .map(|(n, (name, mac, address, instance))| {
                sb::vm_port(&VmPort {
                    name,
                    datapath: RowRef::Uuid(dp),
                    mac,
                    ips: address,
                    instance,
                    project: "bench",
                    chassis: bound.then_some(RowRef::Uuid(&self.chassis_uuid)),
                    key: n as i64 + 2,
                })
            })
            .collect();
        for chunk in ops.chunks(PORTS_PER_TRANSACTION) {
            self.sb.transact(sb::SB_DB, &Value::Array(chunk.to_vec()));
        }
    }

    pub fn bind(&self, port: &str) {
        let op = sb::bind(port, Some(RowRef::Uuid(&self.chassis_uuid)));
        self.sb.transact(sb::SB_DB, &Value::Array(vec![op]));
    }

    pub fn unbind_all(&self) {
        self.sb.transact(
            sb::SB_DB,
            &serde_json::json!([{"op": "update", "table": "Port_Binding", "where": [["type", "==", ""]], "row": {"chassis": ["set", []]}}]),
        );
    }

    pub fn provisioned(&self) -> usize {
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

pub fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output()?;
    if !out.status.success() {
        bail!("ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// A VM namespace on the bridge: returns (namespace, host-side veth).
pub fn vm_namespace(bridge: &str, tag: &str, addresses: &[String]) -> Result<(String, String)> {
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

pub fn network_id(n: usize) -> String {
    format!("bench{n:05}-0000-4000-8000-000000000000")
}

/// One GET from inside a namespace, bound to a source address: the status.
pub fn get_from(source: Ipv4Addr, target: SocketAddr, path: &str) -> std::io::Result<u16> {
    get_from_within(source, target, path, Duration::from_secs(2))
}

pub fn get_from_within(
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
