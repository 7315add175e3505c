//! `meta169 agent` as a process (Linux-bridge mode, Southbound rows written
//! by the test) next to `meta169 serve`, and `meta169 trace` explaining the
//! path of a VM it serves and of one it cannot.

mod common;

use common::BIN;
use meta169_testkit::sb::{self, RowRef, VmPort};
use meta169_testkit::{temp_dir, wait_until, Netns, OvsdbServer, Process, OVN_SB_SCHEMA};
use std::process::Command;
use std::time::Duration;

fn ip(args: &[&str]) {
    meta169_testkit::ip(args);
}

static NODES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A node: a Southbound with one network, its metadata port and one VM
/// port bound to this chassis; `meta169 serve` with the example instance;
/// a Linux bridge with the VM on it.
struct Node {
    dir: tempfile::TempDir,
    network: String,
    bridge: String,
    host_if: String,
    sb: OvsdbServer,
    vm: Netns,
    agent_args: Vec<String>,
    _api: Process,
}

impl Node {
    fn start() -> Node {
        let dir = temp_dir();
        // Unique per test: both tests of this file run in one process.
        let n = NODES.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let tag = (std::process::id() % 1_000) * 10 + n;
        let network = format!(
            "c{n}{:06x}-1111-4000-8000-000000000001",
            std::process::id() & 0xff_ffff
        );
        let chassis = format!("cli-chassis-{tag}");
        let sb = OvsdbServer::start("sb", OVN_SB_SCHEMA, dir.path());
        let mut ops = sb::chassis(&chassis);
        ops.push(sb::datapath(&network, 1, Some("dp")));
        ops.push(sb::metadata_port(
            &network,
            RowRef::Named("dp"),
            "fa:16:3e:cc:00:02",
            "10.0.0.2/24",
            1,
        ));
        ops.push(sb::vm_port(&VmPort {
            name: "vm-port",
            datapath: RowRef::Named("dp"),
            mac: "fa:16:3e:cc:00:05",
            ips: "10.0.0.5",
            instance: "6ca6d4c8-0f4e-4d54-8a07-7c21c7b5bd02",
            project: "f7ac731cc11f40efbc03a9f9e1d1d21f",
            chassis: Some(RowRef::Named("chassis")),
            key: 2,
        }));
        let r = sb.transact(sb::SB_DB, &serde_json::Value::Array(ops));
        assert!(r[1]["uuid"].is_array());

        // The API with the example instance, signed mode.
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "cli-secret\n").unwrap();
        let (store, _) = common::example_store(dir.path());
        let (api, listen) = common::serve_on_loopback(
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
        Node {
            dir,
            network,
            bridge,
            host_if,
            sb,
            vm,
            agent_args,
            _api: api,
        }
    }

    fn namespace(&self) -> String {
        format!("ovnmeta-{}", self.network)
    }

    /// `meta169 agent` as a process, logging to `<name>.log`; returns once
    /// the network's namespace exists.
    fn start_agent(&self, name: &str) -> Process {
        let mut command = Command::new(BIN);
        command
            .arg("agent")
            .args(&self.agent_args)
            .env("RUST_LOG", "info");
        let agent = Process::start(name, command, self.dir.path());
        let ns = self.namespace();
        assert!(
            wait_until(Duration::from_secs(20), || meta169_agent::netns::exists(
                &ns
            )),
            "{}",
            self.log(name)
        );
        agent
    }

    fn log(&self, name: &str) -> String {
        meta169_testkit::read_log(&self.dir.path().join(format!("{name}.log")))
    }

    /// The VM's hostname, read through 169.254.169.254 ("" on failure).
    fn fetch(&self) -> String {
        let out = self
            .vm
            .command("python3")
            .args(["-c", "import urllib.request;print(urllib.request.urlopen('http://169.254.169.254/latest/meta-data/hostname', timeout=5).read().decode())"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The interface index of the inner veth end, in the namespace.
    fn inner_ifindex(&self) -> Option<u32> {
        let (_, inner) = meta169_agent::neutron::veth_names(&self.network);
        let out = Command::new("ip")
            .args(["-n", &self.namespace(), "-o", "link", "show", &inner])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .split(':')
            .next()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // The agent leaves its namespaces for the next start to adopt; the test removes them.
        let _ = meta169_agent::netns::delete(&self.namespace());
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
    }
}

#[test]
fn agent_process_serves_and_trace_explains() {
    let node = Node::start();
    let (network, sb, agent_args, dir) = (&node.network, &node.sb, &node.agent_args, &node.dir);
    let mut agent = node.start_agent("agent");
    let fetch = || node.fetch();
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
    // A link that is down: the fix names the namespace and the link.
    let ns = node.namespace();
    let (_, inner) = meta169_agent::neutron::veth_names(network);
    ip(&["-n", &ns, "link", "set", &inner, "down"]);
    let (ok, text) = trace("10.0.0.5");
    ip(&["-n", &ns, "link", "set", &inner, "up"]);
    assert!(!ok, "{text}");
    assert!(
        text.contains(&format!("-> ip -n {ns} link set {inner} up")),
        "{text}"
    );
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
}

/// Guests ask through the kill and the restart; their answers, in order.
fn poll_through(node: &Node, stop: &std::sync::atomic::AtomicBool) -> Vec<bool> {
    let mut answers = Vec::new();
    // Bounded: a poll takes at most the connect timeout.
    for _ in 0..MAX_POLLS {
        if stop.load(std::sync::atomic::Ordering::SeqCst) {
            break;
        }
        answers.push(node.fetch() == "demo.novalocal");
        std::thread::sleep(Duration::from_millis(20));
    }
    answers
}

const MAX_POLLS: usize = 2_000;

#[test]
fn a_killed_agent_restarts_without_touching_the_namespace() {
    let node = Node::start();
    let mut first = node.start_agent("agent");
    assert!(
        wait_until(Duration::from_secs(10), || node.fetch() == "demo.novalocal"),
        "{}",
        node.log("agent")
    );
    let ifindex = node.inner_ifindex();
    assert!(ifindex.is_some());

    let stop = std::sync::atomic::AtomicBool::new(false);
    let answers = std::thread::scope(|scope| {
        let poller = scope.spawn(|| poll_through(&node, &stop));
        std::thread::sleep(Duration::from_millis(300));
        // As an operator's kill -9 or a crash: no chance to clean up.
        first.kill_hard();
        let _second = node.start_agent("agent-restarted");
        assert!(wait_until(Duration::from_secs(20), || node
            .log("agent-restarted")
            .contains("agent connected")));
        // Long enough for the restarted agent's monitor condition rounds
        // and a few reconcile passes.
        std::thread::sleep(Duration::from_secs(3));
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        poller.join().unwrap()
    });
    let log = node.log("agent-restarted");
    assert!(!log.contains("removing stale metadata namespace"), "{log}");
    assert_eq!(
        node.inner_ifindex(),
        ifindex,
        "the veth was recreated:\n{log}"
    );
    // Requests fail only while no agent runs: once the restarted one
    // answers, every later request is answered.
    let answered_again = answers
        .iter()
        .rposition(|ok| !ok)
        .map_or(0, |last_failure| last_failure + 1);
    assert!(
        answered_again < answers.len(),
        "no answer after the restart: {answers:?}\n{log}"
    );
    assert!(answers[answered_again..].iter().all(|ok| *ok));
    let failures = answers.iter().filter(|ok| !**ok).count();
    eprintln!(
        "{} requests during the restart, {failures} unanswered while no agent ran",
        answers.len()
    );
}
