//! A compute node for `meta169 agent` as a process: a Southbound with one
//! network, its metadata port and one VM port bound here; `meta169 serve`
//! with the example instance; a Linux bridge with the VM on it.

use super::BIN;
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
pub struct Node {
    pub dir: tempfile::TempDir,
    pub network: String,
    bridge: String,
    host_if: String,
    pub sb: OvsdbServer,
    pub vm: Netns,
    pub agent_args: Vec<String>,
    /// The agent's operations listener.
    pub ops: String,
    _api: Process,
    /// Last, so it is released after everything else: one agent per node.
    _slot: meta169_testkit::AgentSlot,
}

impl Node {
    pub fn start() -> Node {
        let slot = meta169_testkit::agent_slot();
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
        let (store, _) = super::example_store(dir.path());
        let (api, listen) = super::serve_on_loopback(
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
        let ops = format!("127.0.0.1:{}", meta169_testkit::free_port());
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
            "--ops-listen".into(),
            ops.clone(),
        ];
        Node {
            dir,
            network,
            bridge,
            host_if,
            sb,
            vm,
            agent_args,
            ops,
            _api: api,
            _slot: slot,
        }
    }

    pub fn namespace(&self) -> String {
        format!("ovnmeta-{}", self.network)
    }

    /// `meta169 agent` as a process, logging to `<name>.log`; returns once
    /// the network's namespace exists.
    pub fn start_agent(&self, name: &str) -> Process {
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

    pub fn log(&self, name: &str) -> String {
        meta169_testkit::read_log(&self.dir.path().join(format!("{name}.log")))
    }

    /// The VM's hostname, read through 169.254.169.254 ("" on failure).
    pub fn fetch(&self) -> String {
        let out = self
            .vm
            .command("python3")
            .args(["-c", "import urllib.request;print(urllib.request.urlopen('http://169.254.169.254/latest/meta-data/hostname', timeout=5).read().decode())"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The interface index of the inner veth end, in the namespace.
    pub fn inner_ifindex(&self) -> Option<u32> {
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
