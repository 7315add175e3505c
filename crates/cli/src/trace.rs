//! `meta169 trace --network N --ip A`: walk one VM's metadata path on this
//! node and say, for each step, whether it holds and what to do if not.

use crate::agent::{settings, AgentArgs};
use anyhow::Result;
use bytes::Bytes;
use clap::Args;
use http_body_util::BodyExt;
use meta169_agent::sb::{veth_names, METADATA_OWNER, METADATA_V4};
use meta169_agent::BridgeMode;
use meta169_ovsdb::datum::Datum;
use meta169_ovsdb::Rpc;
use serde_json::{json, Value};
use std::net::IpAddr;
use std::time::Duration;

#[derive(Args)]
pub struct TraceArgs {
    /// The Neutron network id (the part after neutron- in the logical switch name).
    #[arg(long)]
    network: String,
    /// The VM's address on that network.
    #[arg(long)]
    ip: IpAddr,
    #[command(flatten)]
    agent: AgentArgs,
}

struct Report {
    failures: usize,
}

impl Report {
    fn ok(&self, what: &str) {
        println!("[ ok ] {what}");
    }
    fn fail(&mut self, what: &str, fix: &str) {
        self.failures += 1;
        println!("[FAIL] {what}\n       -> {fix}");
    }
    fn note(&self, what: &str) {
        println!("[info] {what}");
    }
}

const T: Duration = Duration::from_secs(10);

fn rows(result: &[Value]) -> Vec<serde_json::Map<String, Value>> {
    result
        .first()
        .and_then(|r| r["rows"].as_array())
        .map(|rows| rows.iter().filter_map(|r| r.as_object().cloned()).collect())
        .unwrap_or_default()
}

async fn unix_get(socket: &std::path::Path, path: &str) -> Result<Value> {
    let stream = tokio::net::UnixStream::connect(socket).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let request = http::Request::get(path)
        .header("host", "agent")
        .body(http_body_util::Empty::<Bytes>::new())?;
    let body = sender
        .send_request(request)
        .await?
        .into_body()
        .collect()
        .await?
        .to_bytes();
    Ok(serde_json::from_slice(&body)?)
}

pub async fn run(args: TraceArgs) -> Result<()> {
    let s = settings(&args.agent)?;
    let mut report = Report { failures: 0 };
    let network = args.network.trim_start_matches("neutron-").to_string();
    println!("meta169 trace: network {network}, address {}\n", args.ip);

    // 1. The Southbound (the first member of a cluster that answers):
    //    datapath, port, binding, metadata port.
    let mut rpc = None;
    let mut unreachable = Vec::new();
    for remote in std::iter::once(&s.sb).chain(&s.sb_more) {
        match Rpc::connect(remote).await {
            Ok((connected, _)) => {
                for (other, why) in &unreachable {
                    report.note(&format!("OVN Southbound member {other} unreachable: {why}"));
                }
                report.ok(&format!("OVN Southbound reachable at {remote}"));
                rpc = Some(connected);
                break;
            }
            Err(e) => unreachable.push((remote.to_string(), e.to_string())),
        }
    }
    if rpc.is_none() {
        let tried: Vec<String> = unreachable
            .iter()
            .map(|(remote, why)| format!("{remote}: {why}"))
            .collect();
        report.fail(
            &format!("OVN Southbound unreachable ({})", tried.join("; ")),
            "check [ovn] ovn_sb_connection / --ovn-sb and that ovsdb-server listens there",
        );
    }
    let mut metadata_port: Option<String> = None;
    if let Some(rpc) = &rpc {
        let dps = rows(&rpc
            .transact("OVN_Southbound", vec![json!({"op": "select", "table": "Datapath_Binding",
                "where": [["external_ids", "includes", ["map", [["name", format!("neutron-{network}")]]]]]})], T)
            .await?);
        match dps.first() {
            None => report.fail(
                &format!("no Datapath_Binding named neutron-{network}"),
                "is the network in OVN (ovn-nbctl ls-list) and is ovn-northd running?",
            ),
            Some(dp) => {
                let dp_uuid = dp["_uuid"][1].as_str().unwrap_or_default().to_string();
                report.ok(&format!("datapath {dp_uuid} is network {network}"));
                let ports = rows(&rpc
                    .transact("OVN_Southbound", vec![json!({"op": "select", "table": "Port_Binding", "where": [["datapath", "==", ["uuid", dp_uuid]]]})], T)
                    .await?);
                let ip = args.ip.to_string();
                let vm = ports.iter().find(|p| {
                    Datum::from_wire(&p["mac"])
                        .strings()
                        .iter()
                        .any(|m| m.split_whitespace().skip(1).any(|t| t == ip))
                        && Datum::from_wire(&p["type"]).as_str().unwrap_or("") != "localport"
                });
                match vm {
                    None => report.fail(&format!("no port with {ip} on the network"), "check the port's fixed IPs in Neutron (openstack port list --fixed-ip ip-address=...)"),
                    Some(p) => {
                        let ids = Datum::from_wire(&p["external_ids"]).string_map();
                        report.ok(&format!(
                            "port {} belongs to instance {} (project {})",
                            p["logical_port"].as_str().unwrap_or("?"),
                            ids.get("neutron:device_id").map(String::as_str).unwrap_or("?"),
                            ids.get("neutron:project_id").map(String::as_str).unwrap_or("?")
                        ));
                        let chassis = Datum::from_wire(&p["chassis"]).uuids().first().map(|c| c.to_string());
                        match chassis {
                            None => report.fail("the port is not bound to any chassis", "is the VM running and ovn-controller up on its host?"),
                            Some(c) => {
                                let ch = rows(&rpc
                                    .transact("OVN_Southbound", vec![json!({"op": "select", "table": "Chassis", "where": [["_uuid", "==", ["uuid", c]]]})], T)
                                    .await?);
                                let name = ch.first().and_then(|r| r["name"].as_str()).unwrap_or("?").to_string();
                                match &s.chassis {
                                    Some(me) if *me != name => report.fail(
                                        &format!("the port is bound to chassis {name}, not this one ({me})"),
                                        &format!("run meta169 trace on {name}"),
                                    ),
                                    _ => report.ok(&format!("the port is bound to chassis {name}")),
                                }
                            }
                        }
                    }
                }
                let meta = ports.iter().find(|p| {
                    Datum::from_wire(&p["type"]).as_str() == Some("localport")
                        && Datum::from_wire(&p["external_ids"])
                            .string_map()
                            .get("neutron:device_owner")
                            .map(String::as_str)
                            == Some(METADATA_OWNER)
                });
                match meta {
                    None => report.fail("the network has no metadata port (localport, device_owner network:distributed)", "set [ovn] ovn_metadata_enabled = true in Neutron and resync the network"),
                    Some(m) => {
                        metadata_port = m["logical_port"].as_str().map(str::to_string);
                        report.ok(&format!(
                            "metadata port {} ({})",
                            metadata_port.as_deref().unwrap_or("?"),
                            Datum::from_wire(&m["mac"]).strings().first().copied().unwrap_or("no address")
                        ));
                    }
                }
            }
        }
    }

    // 2. The namespace and its plumbing.
    let ns = format!("ovnmeta-{network}");
    let (outer, inner) = veth_names(&network);
    if !meta169_agent::netns::exists(&ns) {
        report.fail(
            &format!("namespace {ns} does not exist"),
            "is meta169 agent running here? Its log says why it did not provision the network",
        );
    } else {
        report.ok(&format!("namespace {ns} exists"));
        match meta169_agent::net::Net::inside(&ns) {
            Ok(inside) => match inside.link(&inner).await? {
                None => report.fail(
                    &format!("{inner} is missing in {ns}"),
                    "restart meta169 agent; it recreates the veth",
                ),
                Some(link) => {
                    if link.up {
                        report.ok(&format!("{inner} is up in {ns}"));
                    } else {
                        report.fail(
                            &format!("{inner} is down"),
                            "ip -n {ns} link set {inner} up, and check the agent's log",
                        );
                    }
                    let addrs = inside.addresses(link.index).await?;
                    if addrs
                        .iter()
                        .any(|(ip, p)| *ip == IpAddr::V4(METADATA_V4) && *p == 32)
                    {
                        report.ok(&format!("{inner} has 169.254.169.254/32"));
                    } else {
                        report.fail(
                            &format!("{inner} lacks 169.254.169.254/32"),
                            "restart meta169 agent",
                        );
                    }
                    report.note(&format!(
                        "addresses: {}",
                        addrs
                            .iter()
                            .map(|(ip, p)| format!("{ip}/{p}"))
                            .collect::<Vec<_>>()
                            .join(" ")
                    ));
                }
            },
            Err(e) => report.fail(&format!("cannot enter {ns}: {e}"), "run trace as root"),
        }
        // 3. The bridge.
        match &s.bridge {
            BridgeMode::Linux(name) => {
                let root = meta169_agent::net::Net::root()?;
                let bridge = root.link(name).await?;
                let port = root.link(&outer).await?;
                match (bridge, port) {
                    (Some(b), Some(p)) if p.controller == Some(b.index) => {
                        report.ok(&format!("{outer} is a port of Linux bridge {name}"))
                    }
                    _ => report.fail(
                        &format!("{outer} is not plugged into Linux bridge {name}"),
                        "restart meta169 agent, or check --bridge",
                    ),
                }
            }
            BridgeMode::Ovs(_) => match Rpc::connect(&s.ovs).await {
                Err(e) => report.fail(
                    &format!("local Open_vSwitch database at {}: {e}", s.ovs),
                    "check [ovs] ovsdb_connection / --ovs-db",
                ),
                Ok((ovs, _)) => {
                    let ifaces = rows(&ovs
                        .transact("Open_vSwitch", vec![json!({"op": "select", "table": "Interface", "where": [["name", "==", outer]]})], T)
                        .await?);
                    let iface_id = ifaces.first().map(|i| {
                        Datum::from_wire(&i["external_ids"])
                            .string_map()
                            .get("iface-id")
                            .cloned()
                    });
                    match (iface_id, &metadata_port) {
                        (Some(Some(id)), Some(m)) if id == *m => {
                            report.ok(&format!("{outer} is on OVS with iface-id {id}"))
                        }
                        (Some(id), _) => report.fail(
                            &format!("{outer} has iface-id {id:?}, expected {metadata_port:?}"),
                            "restart meta169 agent",
                        ),
                        (None, _) => report.fail(
                            &format!("{outer} is not an OVS interface"),
                            "restart meta169 agent; check the integration bridge exists",
                        ),
                    }
                }
            },
        }
        // 4. The listener.
        let listening = meta169_agent::netns::run_in(&ns, || {
            std::net::TcpStream::connect_timeout(
                &std::net::SocketAddr::from((METADATA_V4, 80)),
                Duration::from_secs(2),
            )
            .map(|_| ())
        });
        match listening {
            Ok(()) => report.ok(&format!("something listens on 169.254.169.254:80 in {ns}")),
            Err(e) => report.fail(
                &format!("nothing answers on 169.254.169.254:80 in {ns}: {e}"),
                "is meta169 agent running? (haproxy sites: is haproxy running in the namespace?)",
            ),
        }
    }

    // 5. The agent's index.
    match &s.status_socket {
        Some(sock) => match unix_get(sock, &format!("/v1/lookup?network={network}&ip={}", args.ip)).await {
            Ok(v) if v["found"] == true => report.ok(&format!("the agent maps it to instance {} (project {})", v["instance_id"], v["project_id"])),
            Ok(_) => report.fail("the agent's index has no entry for this address", "is the port bound here with neutron:device_id and neutron:project_id in its external_ids?"),
            Err(e) => report.fail(&format!("agent status socket {}: {e}", sock.display()), "is meta169 agent running (with this --status-socket)?"),
        },
        None => report.note("no status socket configured; index not checked"),
    }

    // 6. The upstream.
    let mut builder = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .danger_accept_invalid_certs(s.upstream.insecure);
    // The same trust as the agent's: its CA bundle, if one is configured.
    if let Some(ca) = &s.upstream.ca_cert {
        for cert in reqwest::Certificate::from_pem_bundle(&std::fs::read(ca)?)? {
            builder = builder.add_root_certificate(cert);
        }
    }
    let client = builder.build()?;
    match client
        .get(format!("{}/", s.upstream.url.trim_end_matches('/')))
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => {
            report.ok(&format!("metadata API {} answers", s.upstream.url))
        }
        Ok(r) => report.fail(
            &format!("metadata API {} answered {}", s.upstream.url, r.status()),
            "check the API's log",
        ),
        Err(e) => report.fail(
            &format!("metadata API {} unreachable: {e}", s.upstream.url),
            "is meta169 serve (or nova-api-metadata) running there? check nova_metadata_host/port",
        ),
    }

    println!();
    if report.failures == 0 {
        println!("every step holds");
        Ok(())
    } else {
        anyhow::bail!("{} step(s) failed", report.failures)
    }
}
