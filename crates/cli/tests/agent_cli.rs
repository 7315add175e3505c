//! `meta169 agent` as a process (Linux-bridge mode, Southbound rows written
//! by the test) next to `meta169 serve`, and `meta169 trace` explaining the
//! path of a VM it serves and of one it cannot.

mod common;

use common::BIN;
use meta169_testkit::{temp_dir, wait_until, Netns, OvsdbServer, Process, OVN_SB_SCHEMA};
use serde_json::json;
use std::process::Command;
use std::time::Duration;

fn ip(args: &[&str]) {
    meta169_testkit::ip(args);
}

#[test]
fn agent_process_serves_and_trace_explains() {
    let dir = temp_dir();
    let tag = std::process::id() % 10_000;
    let network = format!("c{:07x}-1111-4000-8000-000000000001", std::process::id());
    let chassis = format!("cli-chassis-{tag}");
    let sb = OvsdbServer::start("sb", OVN_SB_SCHEMA, dir.path());
    let r = sb.transact(
        "OVN_Southbound",
        &json!([
            {"op": "insert", "table": "Encap", "uuid-name": "e", "row": {"type": "geneve", "ip": "127.0.0.1", "chassis_name": chassis}},
            {"op": "insert", "table": "Chassis", "uuid-name": "c", "row": {"name": chassis, "hostname": "h", "encaps": ["named-uuid", "e"]}},
            {"op": "insert", "table": "Chassis_Private", "row": {"name": chassis, "chassis": ["named-uuid", "c"]}},
            {"op": "insert", "table": "Datapath_Binding", "uuid-name": "d", "row": {"tunnel_key": 1, "external_ids": ["map", [["name", format!("neutron-{network}")]]]}},
            {"op": "insert", "table": "Port_Binding", "row": {"logical_port": "meta-port", "type": "localport", "datapath": ["named-uuid", "d"], "tunnel_key": 1,
                "mac": ["set", ["fa:16:3e:cc:00:02 10.0.0.2"]],
                "external_ids": ["map", [["neutron:device_owner", "network:distributed"], ["neutron:device_id", format!("ovnmeta-{network}")], ["neutron:cidrs", "10.0.0.2/24"]]]}},
            {"op": "insert", "table": "Port_Binding", "row": {"logical_port": "vm-port", "type": "", "datapath": ["named-uuid", "d"], "tunnel_key": 2,
                "mac": ["set", ["fa:16:3e:cc:00:05 10.0.0.5"]], "chassis": ["named-uuid", "c"],
                "external_ids": ["map", [["neutron:device_id", "6ca6d4c8-0f4e-4d54-8a07-7c21c7b5bd02"], ["neutron:project_id", "f7ac731cc11f40efbc03a9f9e1d1d21f"]]]}}
        ]),
    );
    assert!(r[1]["uuid"].is_array());

    // The API with the example instance, signed mode.
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "cli-secret\n").unwrap();
    let (store, _) = common::example_store(dir.path());
    let (_api, listen) = common::serve_on_loopback(
        "serve",
        dir.path(),
        &format!(
            "[serve.identity]\nshared_secret_file = \"{}\"\n",
            secret.display()
        ),
        &store,
    );

    let bridge = format!("m169cb{tag}");
    ip(&["link", "add", &bridge, "type", "bridge"]);
    ip(&["link", "set", &bridge, "up"]);
    let vm = Netns::new("clivm");
    let host_if = format!("ch{tag}");
    ip(&[
        "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", &vm.name,
    ]);
    ip(&["link", "set", &host_if, "master", &bridge, "up"]);
    vm.ip(&["link", "set", "eth0", "address", "fa:16:3e:cc:00:05", "up"]);
    vm.ip(&["addr", "add", "10.0.0.5/24", "dev", "eth0"]);
    vm.ip(&["route", "add", "169.254.169.254/32", "via", "10.0.0.2"]);

    let status = dir.path().join("agent.sock");
    let agent_args: Vec<String> = vec![
        "--ovn-sb".into(),
        sb.remote(),
        "--chassis".into(),
        chassis.clone(),
        "--bridge".into(),
        format!("linux:{bridge}"),
        "--upstream".into(),
        format!("http://{listen}"),
        "--shared-secret-file".into(),
        secret.display().to_string(),
        "--status-socket".into(),
        status.display().to_string(),
        "--ovs-db".into(),
        "unix:/nonexistent".into(),
    ];
    let mut agent_cmd = Command::new(BIN);
    agent_cmd
        .arg("agent")
        .args(&agent_args)
        .env("RUST_LOG", "info");
    let mut agent = Process::start("agent", agent_cmd, dir.path());
    let ns = format!("ovnmeta-{network}");
    assert!(
        wait_until(Duration::from_secs(20), || meta169_agent::netns::exists(
            &ns
        )),
        "{}",
        meta169_testkit::read_log(&dir.path().join("agent.log"))
    );

    let fetch = || {
        let out = vm
            .command("python3")
            .args(["-c", "import urllib.request;print(urllib.request.urlopen('http://169.254.169.254/latest/meta-data/hostname', timeout=5).read().decode())"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert!(
        wait_until(Duration::from_secs(10), || fetch() == "demo.novalocal"),
        "{}",
        meta169_testkit::read_log(&dir.path().join("agent.log"))
    );

    // `sb`: the --ovn-sb list trace is given instead of the agent's.
    let trace_with_sb = |ip_addr: &str, sb: &str| {
        let mut args = vec![
            "trace".to_string(),
            "--network".into(),
            network.clone(),
            "--ip".into(),
            ip_addr.into(),
        ];
        args.extend(agent_args.iter().cloned());
        assert_eq!(args[5], "--ovn-sb");
        args[6] = sb.to_string();
        let out = Command::new(BIN)
            .args(&args)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let trace = |ip_addr: &str| trace_with_sb(ip_addr, &sb.remote());
    let (ok, text) = trace("10.0.0.5");
    assert!(ok, "{text}");
    for step in [
        "port vm-port belongs to instance 6ca6d4c8",
        "namespace ovnmeta-",
        "has 169.254.169.254/32",
        "is a port of Linux bridge",
        "something listens on 169.254.169.254:80",
        "the agent maps it to instance",
        "answers",
        "every step holds",
    ] {
        assert!(text.contains(step), "missing {step:?} in:\n{text}");
    }
    let (ok, text) = trace("10.0.0.77");
    assert!(!ok);
    assert!(
        text.contains("[FAIL] no port with 10.0.0.77 on the network"),
        "{text}"
    );
    assert!(text.contains("the agent's index has no entry"), "{text}");
    // A cluster whose first member is down: trace goes on with the next.
    let dead = format!("unix:{}", dir.path().join("no-such.sock").display());
    let (ok, text) = trace_with_sb("10.0.0.5", &format!("{dead},{}", sb.remote()));
    assert!(ok, "{text}");
    assert!(
        text.contains(&format!("[info] OVN Southbound member {dead} unreachable")),
        "{text}"
    );
    let (ok, text) = trace_with_sb("10.0.0.5", &dead);
    assert!(!ok);
    assert!(text.contains("[FAIL] OVN Southbound unreachable"), "{text}");

    agent.stop();
    // The agent leaves its namespaces for the next start to adopt; this test removes them.
    let _ = meta169_agent::netns::delete(&ns);
    let _ = Command::new("ip").args(["link", "del", &bridge]).output();
    let _ = Command::new("ip").args(["link", "del", &host_if]).output();
}
