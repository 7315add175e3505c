//! Real OVN on the userspace datapath, started by hand in a private run
//! directory (see shared/real-ovn.md): ovsdb-server for Open_vSwitch,
//! OVN_Northbound and OVN_Southbound, ovs-vswitchd, ovn-northd and
//! ovn-controller. Every daemon runs in the foreground as a child and is
//! stopped by its pid. The integration bridge gets a name of its own, so a
//! real br-int on the machine is never touched.

use crate::{
    clients_dir, python, run, wait_until, Netns, OvsdbServer, Process, OVN_NB_SCHEMA,
    OVN_SB_SCHEMA, VSWITCH_SCHEMA,
};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

pub struct OvnStack {
    pub dir: PathBuf,
    pub ovs_db: OvsdbServer,
    pub nb: OvsdbServer,
    pub sb: OvsdbServer,
    pub bridge: String,
    pub chassis: String,
    daemons: Vec<Process>,
}

impl OvnStack {
    pub fn start(dir: &Path) -> OvnStack {
        let tag = std::process::id() % 100_000;
        let bridge = format!("brint{tag}");
        let chassis = format!("chassis-{tag}");
        let ovs_db = OvsdbServer::start("ovs", VSWITCH_SCHEMA, dir);
        let nb = OvsdbServer::start("nb", OVN_NB_SCHEMA, dir);
        let sb = OvsdbServer::start("sb", OVN_SB_SCHEMA, dir);
        let mut stack = OvnStack {
            dir: dir.to_path_buf(),
            ovs_db,
            nb,
            sb,
            bridge,
            chassis,
            daemons: Vec::new(),
        };
        stack.vsctl(&["--no-wait", "init"]);
        // Before ovs-vswitchd starts: TSO on (else TCP through veths fails
        // checksums) and the chassis identity ovn-controller reads.
        stack.vsctl(&[
            "--no-wait",
            "set",
            "Open_vSwitch",
            ".",
            "other_config:userspace-tso-enable=true",
            &format!("external_ids:system-id={}", stack.chassis),
            &format!("external_ids:ovn-remote={}", stack.sb.remote()),
            "external_ids:ovn-encap-type=geneve",
            "external_ids:ovn-encap-ip=127.0.0.1",
            "external_ids:ovn-bridge-datapath-type=netdev",
            &format!("external_ids:ovn-bridge={}", stack.bridge),
        ]);
        let mut vswitchd = Command::new("ovs-vswitchd");
        vswitchd
            .arg(stack.ovs_db.remote())
            .arg(format!(
                "--unixctl={}",
                dir.join("ovs-vswitchd.ctl").display()
            ))
            .arg(format!(
                "--log-file={}",
                dir.join("ovs-vswitchd.log").display()
            ))
            .arg("--no-chdir")
            .envs(stack.env());
        stack
            .daemons
            .push(Process::start("ovs-vswitchd", vswitchd, dir));
        stack.nbctl(&["--no-wait", "init"]);
        let mut northd = Command::new("ovn-northd");
        northd
            .arg(format!("--ovnnb-db={}", stack.nb.remote()))
            .arg(format!("--ovnsb-db={}", stack.sb.remote()))
            .arg(format!(
                "--unixctl={}",
                dir.join("ovn-northd.ctl").display()
            ))
            .arg(format!(
                "--log-file={}",
                dir.join("ovn-northd.log").display()
            ))
            .arg("--no-chdir")
            .envs(stack.env());
        stack
            .daemons
            .push(Process::start("ovn-northd", northd, dir));
        stack.vsctl(&[
            "add-br",
            &stack.bridge.clone(),
            "--",
            "set",
            "Bridge",
            &stack.bridge.clone(),
            "datapath_type=netdev",
            "fail-mode=secure",
            "other_config:disable-in-band=true",
        ]);
        let mut controller = Command::new("ovn-controller");
        controller
            .arg(stack.ovs_db.remote())
            .arg(format!(
                "--log-file={}",
                dir.join("ovn-controller.log").display()
            ))
            .arg("--no-chdir")
            .envs(stack.env());
        stack
            .daemons
            .push(Process::start("ovn-controller", controller, dir));
        let sb = stack.sb.remote();
        assert!(
            wait_until(Duration::from_secs(20), || {
                Command::new("ovn-sbctl")
                    .args(["--db", &sb, "--bare", "--columns=name", "list", "Chassis"])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).contains(&stack.chassis))
                    .unwrap_or(false)
            }),
            "ovn-controller did not register its chassis; see {}",
            dir.display()
        );
        stack
    }

    fn env(&self) -> Vec<(String, String)> {
        let d = self.dir.display().to_string();
        vec![
            ("OVS_RUNDIR".into(), d.clone()),
            ("OVS_DBDIR".into(), d.clone()),
            ("OVS_LOGDIR".into(), d.clone()),
            ("OVN_RUNDIR".into(), d.clone()),
            ("OVN_DBDIR".into(), d.clone()),
            ("OVN_LOGDIR".into(), d),
        ]
    }

    pub fn vsctl(&self, args: &[&str]) -> String {
        run(Command::new("ovs-vsctl")
            .arg(format!("--db={}", self.ovs_db.remote()))
            .args(args)
            .envs(self.env()))
    }

    pub fn nbctl(&self, args: &[&str]) -> String {
        run(Command::new("ovn-nbctl")
            .arg(format!("--db={}", self.nb.remote()))
            .args(args)
            .envs(self.env()))
    }

    pub fn sbctl(&self, args: &[&str]) -> String {
        run(Command::new("ovn-sbctl")
            .arg(format!("--db={}", self.sb.remote()))
            .args(args)
            .envs(self.env()))
    }

    /// Wait until ovn-controller has caught up with the Northbound.
    pub fn sync(&self) {
        self.nbctl(&["--timeout=30", "--wait=hv", "sync"]);
    }
}

impl Drop for OvnStack {
    fn drop(&mut self) {
        while let Some(mut p) = self.daemons.pop() {
            p.stop();
        }
        // The userspace datapath leaves its tap devices behind.
        for dev in [self.bridge.as_str(), "ovs-netdev"] {
            let _ = Command::new("ip").args(["link", "del", dev]).output();
        }
    }
}

/// How long a VM's port and DHCP may take to come up.
const VM_WAIT: Duration = Duration::from_secs(20);

static VM_COUNTER: AtomicU32 = AtomicU32::new(0);

impl OvnStack {
    /// A Neutron network in the Northbound: switch, DHCP options with the
    /// metadata route, and the metadata localport at 10.0.0.2; the DHCP
    /// options' uuid.
    pub fn add_network(&self, net: &str, metadata_mac: &str) -> String {
        let stack = self;
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

    /// A VM port as Neutron writes it, with the network's DHCP options.
    #[allow(clippy::too_many_arguments)]
    pub fn add_vm_port(
        &self,
        net: &str,
        port: &str,
        mac: &str,
        ip: &str,
        instance: &str,
        project: &str,
        dhcp: &str,
    ) {
        let stack = self;
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
            &format!(r#"external_ids:"neutron:project_id"="{project}""#),
            &format!(r#"external_ids:"neutron:cidrs"="{ip}/24""#),
            r#"external_ids:"neutron:device_owner"="compute:nova""#,
        ]);
    }
}

/// A VM: a namespace whose veth is an OVS port bound to `port`, configured by dhclient.
pub struct OvnVm {
    pub ns: Netns,
    pub host_if: String,
    _dhclient: Process,
}

impl OvnVm {
    pub fn boot(stack: &OvnStack, port: &str, mac: &str, dir: &Path) -> OvnVm {
        let n = VM_COUNTER.fetch_add(1, Ordering::SeqCst);
        let ns = Netns::new(&format!("ovm{n}"));
        let host_if = format!("oh{}x{n}", std::process::id() % 100_000);
        let guest_if = "eth0";
        let ip = |args: &[&str]| {
            crate::ip(args);
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
        assert!(wait_until(VM_WAIT, lsp_up), "{port} did not come up");
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
        let routed = wait_until(VM_WAIT, || {
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
    pub fn cloud_init_read(&self) -> Value {
        let out = python(
            &clients_dir().join("cloudinit_read.py"),
            &["http://169.254.169.254"],
            Some(&self.ns),
        );
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }
}
