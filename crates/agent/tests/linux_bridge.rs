//! The agent without OVN daemons: a real ovsdb-server with the Southbound
//! schema (rows written by the test), a Linux bridge instead of br-int, VMs
//! in namespaces, and meta169's API as the upstream.

mod common;

use common::{network_id, signature, Api, LinuxBridge, Sb, Vm, T};
use meta169_agent::{Agent, AgentSettings, BridgeMode};
use meta169_testkit::{agent_slot, temp_dir, wait_until, OvsdbServer, OVN_SB_SCHEMA};
use serde_json::Value;
use std::time::Duration;

const CHASSIS: &str = "chassis-under-test";
/// Most requests a polling guest makes while a fault is injected.
const MAX_POLLS: usize = 1_000;

fn settings(sb: &OvsdbServer, api: &Api, bridge: &LinuxBridge) -> AgentSettings {
    let upstream = api.upstream();
    let mut s = AgentSettings::new(
        sb.remote().parse().unwrap(),
        "unix:/nonexistent".parse().unwrap(),
        upstream,
    );
    s.chassis = Some(CHASSIS.into());
    s.bridge = BridgeMode::Linux(bridge.name.clone());
    s.sb_cfg_max_delay = Duration::ZERO;
    s.resync_interval = Duration::from_secs(1);
    s
}

fn inner_ifindex(network: &str) -> Option<String> {
    let ns = format!("ovnmeta-{network}");
    let (_, inner) = meta169_agent::neutron::veth_names(network);
    let out = std::process::Command::new("ip")
        .args(["-n", &ns, "-o", "link", "show", &inner])
        .output()
        .ok()?;
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .split(':')
            .next()
            .unwrap_or("")
            .to_string()
    })
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linux_bridge_agent_serves_plumbs_and_cleans_up() {
    let _slot = agent_slot();
    let dir = temp_dir();
    let mut sb_server = OvsdbServer::start("sb", OVN_SB_SCHEMA, dir.path());
    let sb = Sb::connect(&sb_server.remote()).await;
    let api = Api::start().await;
    let bridge = LinuxBridge::new();
    let net = network_id();
    let vm_uuid = format!("{}-vm", &net[..8]);
    api.add(&vm_uuid, "proj-1", "vm-one").await;
    api.add("other-instance", "proj-1", "other").await;

    let me = sb.chassis(CHASSIS).await;
    sb.sb_global(5).await;
    let dp = sb.datapath(&net, 1).await;
    sb.metadata_port(&net, &dp, "fa:16:3e:aa:00:02", "10.0.0.2/24", 1)
        .await;
    sb.vm_port(
        "vm-port-1",
        &dp,
        "fa:16:3e:00:00:05",
        "10.0.0.5 fd00::5",
        &vm_uuid,
        "proj-1",
        Some(&me),
        2,
    )
    .await;
    // A bound row with a broken mac column and one without external_ids: logged and skipped.
    sb.tx(vec![serde_json::json!({"op": "insert", "table": "Port_Binding", "row": {"logical_port": "broken", "datapath": ["uuid", dp], "tunnel_key": 3,
        "mac": ["set", ["not-a-mac 10.0.0.7"]], "chassis": ["uuid", me]}})]).await;

    // A stale namespace from an earlier run is removed at start.
    let stale = format!("ovnmeta-{}", network_id());
    meta169_agent::netns::create(&stale).unwrap();

    let vm = Vm::new("vm", "fa:16:3e:00:00:05", "10.0.0.5/24", "10.0.0.2");
    bridge.attach(&vm.host_if);
    let stranger = Vm::new("stranger", "fa:16:3e:00:00:09", "10.0.0.9/24", "10.0.0.2");
    bridge.attach(&stranger.host_if);

    let agent = Agent::start(settings(&sb_server, &api, &bridge))
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(agent.run(async {
        let _ = stopped.await;
    }));

    let ns = format!("ovnmeta-{net}");
    assert!(
        blocking({
            let ns = ns.clone();
            move || wait_until(T, || meta169_agent::netns::exists(&ns))
        })
        .await,
        "namespace {ns} not created"
    );
    assert!(
        blocking({
            let s = stale.clone();
            move || wait_until(T, || !meta169_agent::netns::exists(&s))
        })
        .await,
        "stale namespace kept"
    );

    // The VM reads its own metadata through 169.254.169.254.
    let vm = std::sync::Arc::new(vm);
    let get = |vm: std::sync::Arc<Vm>, url: &'static str, headers: Vec<(&'static str, String)>| async move {
        blocking(move || {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            vm.get(url, &h)
        })
        .await
    };
    let mut answer = (0, String::new());
    for _ in 0..100 {
        answer = get(
            vm.clone(),
            "http://169.254.169.254/openstack/latest/meta_data.json",
            vec![],
        )
        .await;
        if answer.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(answer.0, 200, "{}", answer.1);
    let md: Value = serde_json::from_str(&answer.1).unwrap();
    assert_eq!(md["uuid"], vm_uuid);
    assert_eq!(md["hostname"], "vm-one.novalocal");

    // Identity headers sent by the guest are dropped.
    let spoofed = get(
        vm.clone(),
        "http://169.254.169.254/openstack/latest/meta_data.json",
        vec![
            ("X-Instance-ID", "other-instance".into()),
            ("X-Tenant-ID", "proj-1".into()),
            ("X-Instance-ID-Signature", signature("other-instance")),
        ],
    )
    .await;
    let md: Value = serde_json::from_str(&spoofed.1).unwrap();
    assert_eq!(md["uuid"], vm_uuid, "a guest cannot choose its identity");

    // IPv6: the guest asks fe80::a9fe:a9fe from its EUI-64 link-local
    // address and is known by the MAC inside it.
    let mut answer6 = (0, String::new());
    for _ in 0..30 {
        answer6 = blocking({
            let vm = vm.clone();
            move || vm.get6("/latest/meta-data/hostname")
        })
        .await;
        if answer6.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        answer6,
        (200, "vm-one.novalocal".to_string()),
        "IPv6 link-local guest"
    );

    // An address with no port on this network: Neutron's 404.
    let stranger = std::sync::Arc::new(stranger);
    let (code, body) = blocking({
        let s = stranger.clone();
        move || s.get("http://169.254.169.254/latest/meta-data/instance-id", &[])
    })
    .await;
    assert_eq!(code, 404, "{body}");
    assert!(
        body.contains(&format!("Instance was not found on network {net}.")),
        "{body}"
    );

    // The namespace is plumbed as Neutron plumbs it.
    let addrs = std::process::Command::new("ip")
        .args(["-n", &ns, "-o", "addr"])
        .output()
        .unwrap();
    let addrs = String::from_utf8_lossy(&addrs.stdout);
    assert!(
        addrs.contains("169.254.169.254/32") && addrs.contains("10.0.0.2/24"),
        "{addrs}"
    );
    let link = std::process::Command::new("ip")
        .args([
            "-n",
            &ns,
            "link",
            "show",
            &meta169_agent::neutron::veth_names(&net).1,
        ])
        .output()
        .unwrap();
    let link = String::from_utf8_lossy(&link.stdout);
    assert!(
        link.contains("fa:16:3e:aa:00:02") && link.contains("mtu 1442"),
        "{link}"
    );

    // Registered in Chassis_Private like Neutron's agent; sb-cfg follows SB_Global.
    let ids = sb.chassis_private_ids(CHASSIS).await;
    assert_eq!(
        ids["neutron:ovn-metadata-id"],
        meta169_agent::neutron::metadata_agent_id(CHASSIS)
    );
    assert_eq!(ids["neutron:ovn-bridge"], bridge.name.as_str());
    assert_eq!(ids["neutron:ovn-metadata-sb-cfg"], "5");
    sb.sb_global(6).await;
    let mut cfg = String::new();
    for _ in 0..100 {
        cfg = sb.chassis_private_ids(CHASSIS).await["neutron:ovn-metadata-sb-cfg"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if cfg == "6" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(cfg, "6");

    // ovsdb-server killed and restarted while the guest keeps asking:
    // every request is answered (from the agent's index), and the
    // namespace and veth are not recreated.
    let before = inner_ifindex(&net).unwrap();
    let polling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let poller = {
        let (vm, polling) = (vm.clone(), polling.clone());
        tokio::task::spawn_blocking(move || {
            let mut answers = Vec::new();
            // Bounded by a count as well as by the flag.
            for _ in 0..MAX_POLLS {
                if !polling.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let (code, body) = vm.get("http://169.254.169.254/latest/meta-data/hostname", &[]);
                answers.push(code == 200 && body == "vm-one.novalocal");
            }
            answers
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    sb_server.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    sb_server.restart();
    tokio::time::sleep(Duration::from_secs(2)).await;
    polling.store(false, std::sync::atomic::Ordering::SeqCst);
    let answers = poller.await.unwrap();
    let failed = answers.iter().filter(|ok| !**ok).count();
    println!(
        "ovsdb-server killed for 2 s and restarted: {} guest requests, {failed} failed",
        answers.len()
    );
    assert!(answers.len() >= 10, "the guest kept asking: {answers:?}");
    assert_eq!(
        failed, 0,
        "requests failed while the database was down or back"
    );
    assert_eq!(
        inner_ifindex(&net).unwrap(),
        before,
        "namespace and veth were kept across the restart"
    );

    // The metadata API down: 503, as Neutron's agent answers.
    // (Checked by pointing at a closed port in a second agent would double the setup; covered in proxy tests.)

    // Someone deletes the namespace: the next resync puts it back. (Its
    // listener keeps the unnamed namespace alive and answering meanwhile,
    // so the answer alone does not show the rebuild.)
    meta169_agent::netns::delete(&ns).unwrap();
    assert!(
        blocking({
            let ns = ns.clone();
            move || wait_until(T, || meta169_agent::netns::exists(&ns))
        })
        .await,
        "namespace not restored"
    );
    let mut back = (0, String::new());
    for _ in 0..100 {
        back = get(
            vm.clone(),
            "http://169.254.169.254/latest/meta-data/hostname",
            vec![],
        )
        .await;
        if back.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        back,
        (200, "vm-one.novalocal".to_string()),
        "namespace not restored"
    );

    // Unbinding the last VM port of the network removes its namespace.
    let sb = Sb::connect(&sb_server.remote()).await;
    sb.bind("vm-port-1", None).await;
    assert!(
        blocking({
            let ns = ns.clone();
            move || wait_until(T, || !meta169_agent::netns::exists(&ns))
        })
        .await,
        "namespace kept after unbinding"
    );
    let (outer, _) = meta169_agent::neutron::veth_names(&net);
    let gone = std::process::Command::new("ip")
        .args(["link", "show", &outer])
        .output()
        .unwrap();
    assert!(!gone.status.success(), "outer veth {outer} left behind");

    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_waits_for_a_southbound_that_starts_late() {
    let dir = temp_dir();
    let api = Api::start().await;
    let bridge = LinuxBridge::new();
    let remote = format!("unix:{}", dir.path().join("sb.sock").display());
    let upstream = api.upstream();
    let mut s = AgentSettings::new(
        remote.parse().unwrap(),
        "unix:/nonexistent".parse().unwrap(),
        upstream,
    );
    s.chassis = Some(CHASSIS.into());
    s.bridge = BridgeMode::Linux(bridge.name.clone());
    let starting = tokio::spawn(Agent::start(s));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !starting.is_finished(),
        "the agent gave up instead of waiting"
    );
    let _sb = OvsdbServer::start("sb", OVN_SB_SCHEMA, dir.path());
    let agent = tokio::time::timeout(T, starting)
        .await
        .expect("started once the database came")
        .unwrap();
    assert!(agent.is_ok(), "{:?}", agent.err());
}

/// Packets from 169.254.169.254:80 seen by tcpdump (`-v -A`) in a VM:
/// (IP TTL, the packet's text), data-carrying packets only.
fn server_packets(capture: &str) -> Vec<(u8, String)> {
    let mut packets: Vec<(u8, String)> = Vec::new();
    let mut current: Option<(u8, String)> = None;
    for line in capture.lines() {
        let starts_packet =
            line.chars().next().is_some_and(|c| c.is_ascii_digit()) && line.contains(" IP (");
        if starts_packet {
            packets.extend(current.take());
            let ttl = line
                .split("ttl ")
                .nth(1)
                .and_then(|rest| rest.split(',').next())
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0);
            current = Some((ttl, String::new()));
        } else if let Some((_, text)) = current.as_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    packets.extend(current);
    packets
        .into_iter()
        .filter(|(_, text)| text.contains("169.254.169.254.80 >") && !text.contains("length 0"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_answers_leave_with_hop_limit_one() {
    let _slot = agent_slot();
    let dir = temp_dir();
    let sb_server = OvsdbServer::start("sb", OVN_SB_SCHEMA, dir.path());
    let sb = Sb::connect(&sb_server.remote()).await;
    let api = Api::start().await;
    let bridge = LinuxBridge::new();
    let net = network_id();
    let vm_uuid = format!("{}-vm", &net[..8]);
    api.add(&vm_uuid, "proj-1", "vm-hops").await;
    let me = sb.chassis(CHASSIS).await;
    sb.sb_global(1).await;
    let dp = sb.datapath(&net, 1).await;
    sb.metadata_port(&net, &dp, "fa:16:3e:aa:00:02", "10.0.0.2/24", 1)
        .await;
    sb.vm_port(
        "vm-port-hops",
        &dp,
        "fa:16:3e:00:00:05",
        "10.0.0.5",
        &vm_uuid,
        "proj-1",
        Some(&me),
        2,
    )
    .await;
    let vm = Vm::new("hops", "fa:16:3e:00:00:05", "10.0.0.5/24", "10.0.0.2");
    bridge.attach(&vm.host_if);
    let agent = Agent::start(settings(&sb_server, &api, &bridge))
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(agent.run(async {
        let _ = stopped.await;
    }));
    let ns_name = vm.ns.name.clone();
    let request = |text: String| {
        let ns = ns_name.clone();
        blocking(move || {
            meta169_agent::netns::run_in(&ns, move || {
                meta169_testkit::send_from(
                    None,
                    "169.254.169.254:80".parse().unwrap(),
                    text.as_bytes(),
                    Duration::from_secs(5),
                    Duration::from_secs(5),
                )
            })
            .unwrap_or((0, String::new()))
        })
    };
    let get_hostname = || {
        request("GET /latest/meta-data/hostname HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n\r\n".into())
    };
    let mut answer = (0, String::new());
    for _ in 0..100 {
        answer = get_hostname().await;
        if answer.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(answer, (200, "vm-hops.novalocal".to_string()));

    // Capture inside the guest while it takes a token and reads a value.
    let mut tcpdump = vm.ns.command("tcpdump");
    tcpdump.args([
        "-i",
        &vm.guest_if,
        "-n",
        "-v",
        "-A",
        "-l",
        "tcp src port 80",
    ]);
    let mut capture = meta169_testkit::Process::start("tcpdump", tcpdump, dir.path());
    let log = dir.path().join("tcpdump.log");
    assert!(
        blocking({
            let log = log.clone();
            move || {
                wait_until(T, || {
                    meta169_testkit::read_log(&log).contains("listening on")
                })
            }
        })
        .await,
        "tcpdump did not start: {}",
        meta169_testkit::read_log(&log)
    );
    let (status, token) = request(
        "PUT /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into(),
    )
    .await;
    assert_eq!(status, 200, "{token}");
    let (status, body) = request(format!(
        "GET /latest/meta-data/hostname HTTP/1.1\r\nHost: 169.254.169.254\r\nX-aws-ec2-metadata-token: {token}\r\nConnection: close\r\n\r\n"
    ))
    .await;
    assert_eq!((status, body.as_str()), (200, "vm-hops.novalocal"));
    let packets = blocking({
        let log = log.clone();
        move || {
            let mut packets = Vec::new();
            wait_until(T, || {
                packets = server_packets(&meta169_testkit::read_log(&log));
                packets.iter().any(|(_, t)| t.contains("vm-hops.novalocal"))
            });
            packets
        }
    })
    .await;
    capture.stop();
    let token_packets: Vec<u8> = packets
        .iter()
        .filter(|(_, t)| {
            t.to_ascii_lowercase()
                .contains("x-aws-ec2-metadata-token-ttl-seconds")
        })
        .map(|(ttl, _)| *ttl)
        .collect();
    let other_packets: Vec<u8> = packets
        .iter()
        .filter(|(_, t)| t.contains("vm-hops.novalocal"))
        .map(|(ttl, _)| *ttl)
        .collect();
    assert_eq!(token_packets, [1], "the token answer's TTL: {packets:?}");
    assert_eq!(other_packets, [64], "an ordinary answer's TTL: {packets:?}");

    let _ = stop.send(());
    task.await.unwrap().unwrap();
    let _ = meta169_agent::netns::delete(&format!("ovnmeta-{net}"));
}
