//! End to end on real OVN (userspace datapath): Northbound written as
//! Neutron writes it, ovn-northd and ovn-controller doing their part, the
//! agent plugging its veths into the integration bridge over OVSDB, VMs
//! getting their address and the 169.254.169.254 route from OVN's own
//! DHCP, and cloud-init's own reader fetching each VM's metadata.

mod common;

use common::{network_id, Api, T};
use meta169_agent::{Agent, AgentSettings, BridgeMode};
use meta169_testkit::ovn::OvnStack;
use meta169_testkit::{clients_dir, python, temp_dir, wait_until, Netns, Process};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

static VM_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A Neutron network in the Northbound: switch, DHCP options with the
/// metadata route, and the metadata localport at 10.0.0.2.
fn add_network(stack: &OvnStack, net: &str, metadata_mac: &str) -> String {
    let ls = format!("neutron-{net}");
    stack.nbctl(&[
        "ls-add",
        &ls,
        "--",
        "set",
        "Logical_Switch",
        &ls,
        r#"external_ids:"neutron:network_name"=private"#,
    ]);
    let dhcp = stack
        .nbctl(&[
            "create", "DHCP_Options", "cidr=10.0.0.0/24",
            r#"options="server_id"="10.0.0.1" "server_mac"="fa:16:3e:00:00:01" "lease_time"="43200" "router"="10.0.0.1" "mtu"="1442" "classless_static_route"="{169.254.169.254/32,10.0.0.2, 0.0.0.0/0,10.0.0.1}""#,
        ])
        .trim()
        .to_string();
    let meta = format!("meta-{net}");
    stack.nbctl(&[
        "lsp-add",
        &ls,
        &meta,
        "--",
        "lsp-set-type",
        &meta,
        "localport",
        "--",
        "lsp-set-addresses",
        &meta,
        &format!("{metadata_mac} 10.0.0.2"),
        "--",
        "set",
        "Logical_Switch_Port",
        &meta,
        r#"external_ids:"neutron:device_owner"="network:distributed""#,
        &format!(r#"external_ids:"neutron:device_id"="ovnmeta-{net}""#),
        r#"external_ids:"neutron:cidrs"="10.0.0.2/24""#,
        r#"external_ids:"neutron:mtu"="1442""#,
    ]);
    dhcp
}

fn add_vm_port(
    stack: &OvnStack,
    net: &str,
    port: &str,
    mac: &str,
    ip: &str,
    instance: &str,
    dhcp: &str,
) {
    let ls = format!("neutron-{net}");
    let address = format!("{mac} {ip}");
    stack.nbctl(&[
        "lsp-add",
        &ls,
        port,
        "--",
        "lsp-set-addresses",
        port,
        &address,
        "--",
        "lsp-set-port-security",
        port,
        &address,
        "--",
        "lsp-set-dhcpv4-options",
        port,
        dhcp,
        "--",
        "set",
        "Logical_Switch_Port",
        port,
        &format!(r#"external_ids:"neutron:device_id"="{instance}""#),
        r#"external_ids:"neutron:project_id"="proj-e2e""#,
        &format!(r#"external_ids:"neutron:cidrs"="{ip}/24""#),
        r#"external_ids:"neutron:device_owner"="compute:nova""#,
    ]);
}

/// A VM: a namespace whose veth is an OVS port bound to `port`, configured by dhclient.
struct OvnVm {
    ns: Netns,
    host_if: String,
    _dhclient: Process,
}

impl OvnVm {
    fn boot(stack: &OvnStack, port: &str, mac: &str, dir: &Path) -> OvnVm {
        let n = VM_COUNTER.fetch_add(1, Ordering::SeqCst);
        let ns = Netns::new(&format!("ovm{n}"));
        let host_if = format!("oh{}x{n}", std::process::id() % 100_000);
        let guest_if = "eth0";
        let ip = |args: &[&str]| {
            meta169_testkit::ip(args);
        };
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", guest_if, "netns", &ns.name,
        ]);
        ns.ip(&["link", "set", guest_if, "address", mac]);
        ns.ip(&["link", "set", guest_if, "up"]);
        ip(&["link", "set", &host_if, "up"]);
        stack.vsctl(&[
            "add-port",
            &stack.bridge,
            &host_if,
            "--",
            "set",
            "Interface",
            &host_if,
            &format!("external_ids:iface-id={port}"),
        ]);
        let lsp_up = || stack.nbctl(&["lsp-get-up", port]).trim() == "up";
        assert!(wait_until(T, lsp_up), "{port} did not come up");
        let mut dhclient = ns.command("dhclient");
        dhclient.args([
            "-d",
            "-v",
            "-pf",
            &dir.join(format!("dhclient-{n}.pid")).to_string_lossy(),
            "-lf",
            &dir.join(format!("dhclient-{n}.leases")).to_string_lossy(),
            guest_if,
        ]);
        let dhclient = Process::start(&format!("dhclient-{n}"), dhclient, dir);
        let routed = wait_until(T, || {
            ns.ip(&["route"]).contains("169.254.169.254 via 10.0.0.2")
        });
        assert!(
            routed,
            "no metadata route from OVN's DHCP: {}",
            ns.ip(&["route"])
        );
        OvnVm {
            ns,
            host_if,
            _dhclient: dhclient,
        }
    }

    /// cloud-init's OpenStack reader inside the VM.
    fn cloud_init_read(&self) -> Value {
        let out = python(
            &clients_dir().join("cloudinit_read.py"),
            &["http://169.254.169.254"],
            Some(&self.ns),
        );
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_init_reads_metadata_through_real_ovn() {
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

    let dhcp_a = add_network(&stack, &net_a, "fa:16:3e:aa:00:02");
    let dhcp_b = add_network(&stack, &net_b, "fa:16:3e:bb:00:02");
    // Overlapping subnets, the same VM address on both networks.
    add_vm_port(
        &stack,
        &net_a,
        "vm-a-port",
        "fa:16:3e:a1:00:05",
        "10.0.0.5",
        inst_a,
        &dhcp_a,
    );
    add_vm_port(
        &stack,
        &net_b,
        "vm-b-port",
        "fa:16:3e:b1:00:05",
        "10.0.0.5",
        inst_b,
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
    let (vm_b, read) = blocking(move || {
        let r = vm_b.cloud_init_read();
        (vm_b, r)
    })
    .await;
    assert_eq!(
        read["openstack"]["metadata"]["uuid"], inst_b,
        "same IP, other network, other instance"
    );

    // A new VM port bound later is served without restarting anything.
    add_vm_port(
        &stack,
        &net_a,
        "vm-a2-port",
        "fa:16:3e:a2:00:06",
        "10.0.0.6",
        inst_a2,
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
