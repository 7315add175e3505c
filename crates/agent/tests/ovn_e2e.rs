//! End to end on real OVN (userspace datapath): Northbound written as
//! Neutron writes it, ovn-northd and ovn-controller doing their part, the
//! agent plugging its veths into the integration bridge over OVSDB, VMs
//! getting their address and the 169.254.169.254 route from OVN's own
//! DHCP, cloud-init's own readers fetching each VM's metadata (OpenStack,
//! and EC2 in its AWS mode with a session token), and 10,000 spoofing
//! attempts from one VM at another with the same address on another network.

mod common;

use common::{network_id, Api, T};
use meta169_agent::{Agent, AgentSettings, BridgeMode};
use meta169_testkit::ovn::{OvnStack, OvnVm};
use meta169_testkit::spoof;
use meta169_testkit::{temp_dir, wait_until};
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

/// The metadata address the VMs reach through their DHCP route.
const METADATA: std::net::SocketAddr = std::net::SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::new(169, 254, 169, 254),
    80,
));
/// Hostile requests from VM A claiming VM B.
const SPOOF_REQUESTS: usize = 10_000;

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_init_reads_metadata_through_real_ovn() {
    let _slot = meta169_testkit::agent_slot();
    let dir = temp_dir();
    let run_dir = dir.path().to_path_buf();
    let stack = std::sync::Arc::new(blocking(move || OvnStack::start(&run_dir)).await);
    let api = Api::start().await;
    let (net_a, net_b) = (network_id(), network_id());
    let (inst_a, inst_b, inst_a2) = (
        "11111111-aaaa-4000-8000-000000000001",
        "22222222-bbbb-4000-8000-000000000002",
        "33333333-aaaa-4000-8000-000000000003",
    );
    api.add(inst_a, "proj-e2e", "vm-a").await;
    api.add(inst_b, "proj-e2e", "vm-b").await;
    api.add(inst_a2, "proj-e2e", "vm-a2").await;

    let dhcp_a = stack.add_network(&net_a, "fa:16:3e:aa:00:02");
    let dhcp_b = stack.add_network(&net_b, "fa:16:3e:bb:00:02");
    // Overlapping subnets, the same VM address on both networks.
    stack.add_vm_port(
        &net_a,
        "vm-a-port",
        "fa:16:3e:a1:00:05",
        "10.0.0.5",
        inst_a,
        "proj-e2e",
        &dhcp_a,
    );
    stack.add_vm_port(
        &net_b,
        "vm-b-port",
        "fa:16:3e:b1:00:05",
        "10.0.0.5",
        inst_b,
        "proj-e2e",
        &dhcp_b,
    );

    let upstream = api.upstream();
    let mut settings = AgentSettings::new(
        stack.sb.remote().parse().unwrap(),
        stack.ovs_db.remote().parse().unwrap(),
        upstream,
    );
    settings.bridge = BridgeMode::Ovs(None);
    settings.sb_cfg_max_delay = Duration::ZERO;
    let agent = Agent::start(settings).await.unwrap();
    assert_eq!(agent.chassis(), stack.chassis);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(agent.run(async {
        let _ = stopped.await;
    }));

    let (s, d) = (stack.clone(), dir.path().to_path_buf());
    let vm_a = blocking(move || OvnVm::boot(&s, "vm-a-port", "fa:16:3e:a1:00:05", &d)).await;
    let (s, d) = (stack.clone(), dir.path().to_path_buf());
    let vm_b = blocking(move || OvnVm::boot(&s, "vm-b-port", "fa:16:3e:b1:00:05", &d)).await;
    for ns in [format!("ovnmeta-{net_a}"), format!("ovnmeta-{net_b}")] {
        assert!(
            blocking(move || wait_until(T, || meta169_agent::netns::exists(&ns))).await,
            "namespace missing"
        );
    }
    // On the userspace datapath the inner end computes its own checksums.
    let (_, inner) = meta169_agent::neutron::veth_names(&net_a);
    let features = Command::new("ip")
        .args([
            "netns",
            "exec",
            &format!("ovnmeta-{net_a}"),
            "ethtool",
            "-k",
            &inner,
        ])
        .output()
        .unwrap();
    let features = String::from_utf8_lossy(&features.stdout);
    assert!(features.contains("tx-checksumming: off"), "{features}");

    // The agent's veth is an OVS port bound by ovn-controller to the metadata localport.
    let (outer, _) = meta169_agent::neutron::veth_names(&net_a);
    let iface_id = stack.vsctl(&["get", "Interface", &outer, "external_ids:iface-id"]);
    assert_eq!(iface_id.trim().trim_matches('"'), format!("meta-{net_a}"));

    let read_a = blocking(move || {
        let r = vm_a.cloud_init_read();
        (vm_a, r)
    })
    .await;
    let (vm_a, read) = read_a;
    assert_eq!(read["openstack"]["metadata"]["uuid"], inst_a, "{read}");
    assert_eq!(read["openstack"]["metadata"]["hostname"], "vm-a.novalocal");
    // The EC2 crawl from cloud-init's fixed address works too; the record has
    // no ports, so local-ipv4 is the guest address the agent forwarded.
    assert_eq!(read["openstack"]["ec2-metadata"]["local-ipv4"], "10.0.0.5");
    // cloud-init's EC2 datasource in its AWS mode: a session token through
    // the agent (its answer sent with TTL 1, which reaches the VM on its
    // own logical switch), then everything read with it.
    let (vm_a, aws) = blocking(move || {
        let out = meta169_testkit::python(
            &meta169_testkit::clients_dir().join("cloudinit_ec2_aws.py"),
            &["http://169.254.169.254"],
            Some(&vm_a.ns),
        );
        (vm_a, out)
    })
    .await;
    let aws: Value = serde_json::from_str(aws.trim()).unwrap_or_else(|e| panic!("{e}: {aws}"));
    assert_eq!(aws["found"], true, "{aws}");
    assert_eq!(aws["token"], true, "{aws}");
    assert_eq!(aws["hostname"], "vm-a.novalocal", "{aws}");
    assert_eq!(aws["identity"]["privateIp"], "10.0.0.5", "{aws}");
    let (vm_b, read) = blocking(move || {
        let r = vm_b.cloud_init_read();
        (vm_b, r)
    })
    .await;
    assert_eq!(
        read["openstack"]["metadata"]["uuid"], inst_b,
        "same IP, other network, other instance"
    );

    // Spoofing, measured: each VM posts its password, then VM A (10.0.0.5
    // on network A) claims instance B (10.0.0.5 on network B) with every
    // header trick, 10,000 times. Nothing of B's may come back.
    for (vm, password) in [(&vm_a, "guest-a-password"), (&vm_b, "victim-b-password")] {
        let ns = vm.ns.name.clone();
        let status = blocking(move || {
            meta169_agent::netns::run_in(&ns, move || {
                meta169_testkit::send_from(
                    None,
                    METADATA,
                    format!("POST /openstack/latest/password HTTP/1.1\r\nHost: 169.254.169.254\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{password}", password.len()).as_bytes(),
                    Duration::from_secs(10),
                    Duration::from_secs(10),
                )
            })
        })
        .await
        .unwrap()
        .0;
        assert_eq!(status, 200);
    }
    let victim = std::sync::Arc::new(spoof::Victim {
        instance_id: inst_b.into(),
        project_id: "proj-e2e".into(),
        valid_signature: common::signature(inst_b),
        addresses: vec!["10.0.0.5".into()],
        network_id: net_b.clone(),
    });
    let ns = vm_a.ns.name.clone();
    let tally = blocking(move || {
        meta169_agent::netns::run_in(&ns, move || {
            let barrage = spoof::Barrage {
                target: METADATA,
                source: None,
                count: SPOOF_REQUESTS,
                threads: 4,
                seed: u64::from(std::process::id()),
                post_share: 0.1,
                removed: Vec::new(),
                appended: Vec::new(),
            };
            Ok(barrage.run(
                &victim,
                &["vm-a.novalocal", "guest-a-password"],
                &["vm-b", "victim-b-password"],
            ))
        })
    })
    .await
    .unwrap();
    println!("through the agent: {tally}");
    assert_eq!(tally.crossed, 0, "{tally}");
    assert!(tally.own > 0, "{tally}");

    // A new VM port bound later is served without restarting anything.
    stack.add_vm_port(
        &net_a,
        "vm-a2-port",
        "fa:16:3e:a2:00:06",
        "10.0.0.6",
        inst_a2,
        "proj-e2e",
        &dhcp_a,
    );
    let (s, d) = (stack.clone(), dir.path().to_path_buf());
    let (vm_a2, read) = blocking(move || {
        let vm = OvnVm::boot(&s, "vm-a2-port", "fa:16:3e:a2:00:06", &d);
        let mut last = Value::Null;
        for _ in 0..50 {
            last = vm.cloud_init_read();
            if last["openstack"]["metadata"]["uuid"].is_string() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        (vm, last)
    })
    .await;
    assert_eq!(read["openstack"]["metadata"]["uuid"], inst_a2);

    // Unbinding the last VM port of network B removes its namespace.
    stack.vsctl(&["del-port", &stack.bridge, &vm_b.host_if]);
    let ns_b = format!("ovnmeta-{net_b}");
    assert!(
        blocking(move || wait_until(T, || !meta169_agent::netns::exists(&ns_b))).await,
        "namespace of network B kept after its last port left"
    );
    let ns_a = format!("ovnmeta-{net_a}");
    assert!(
        meta169_agent::netns::exists(&ns_a),
        "network A still has VMs"
    );

    let _ = stop.send(());
    task.await.unwrap().unwrap();
    // Leave nothing behind: the agent keeps namespaces across restarts, so the test removes them.
    for ns in [format!("ovnmeta-{net_a}"), format!("ovnmeta-{net_b}")] {
        let _ = meta169_agent::netns::delete(&ns);
    }
    for vm in [&vm_a, &vm_a2] {
        let _ = Command::new("ip")
            .args(["link", "del", &vm.host_if])
            .output();
    }
    let _ = Command::new("ip")
        .args(["link", "del", &vm_b.host_if])
        .output();
    let (outer, _) = meta169_agent::neutron::veth_names(&net_a);
    let _ = Command::new("ip").args(["link", "del", &outer]).output();
}
