//! Real OVN on the userspace datapath, started by hand in a private run
//! directory (see shared/real-ovn.md): ovsdb-server for Open_vSwitch,
//! OVN_Northbound and OVN_Southbound, ovs-vswitchd, ovn-northd and
//! ovn-controller. Every daemon runs in the foreground as a child and is
//! stopped by its pid. The integration bridge gets a name of its own, so a
//! real br-int on the machine is never touched.

use crate::{run, wait_until, OvsdbServer, Process, OVN_NB_SCHEMA, OVN_SB_SCHEMA, VSWITCH_SCHEMA};
use std::path::{Path, PathBuf};
use std::process::Command;
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
