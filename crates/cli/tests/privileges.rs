//! The agent as the meta169-agent unit runs it: an unprivileged user
//! holding only CAP_NET_ADMIN, CAP_SYS_ADMIN and CAP_NET_BIND_SERVICE
//! (set with util-linux's setpriv), on real OVN, serving a VM; and without
//! CAP_SYS_ADMIN, stopping at start with a message that names it.

mod common;

use common::BIN;
use meta169_testkit::ovn::{OvnStack, OvnVm};
use meta169_testkit::{read_log, temp_dir, wait_until, Process};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The unprivileged user (Debian's `nobody`).
const USER: u32 = 65534;
/// What the unit grants, in setpriv's spelling.
const UNIT_CAPS: &str = "net_admin,sys_admin,net_bind_service";

/// /run/netns writable by the agent's group for the test, as the
/// package's tmpfiles.d entry makes it; put back afterwards.
struct NetnsDirAccess {
    mode: u32,
    gid: u32,
}

impl NetnsDirAccess {
    fn grant(gid: u32) -> NetnsDirAccess {
        let dir = Path::new(meta169_agent::netns::NETNS_DIR);
        std::fs::create_dir_all(dir).unwrap();
        let meta = std::fs::metadata(dir).unwrap();
        let before = NetnsDirAccess {
            mode: meta.mode() & 0o7777,
            gid: meta.gid(),
        };
        std::os::unix::fs::chown(dir, None, Some(gid)).unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o775)).unwrap();
        before
    }
}

impl Drop for NetnsDirAccess {
    fn drop(&mut self) {
        let dir = Path::new(meta169_agent::netns::NETNS_DIR);
        let _ = std::os::unix::fs::chown(dir, None, Some(self.gid));
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(self.mode));
    }
}

/// `meta169 agent` as `USER` with exactly `caps`.
fn agent_as_user(caps: &str, args: &[String]) -> Command {
    let mut command = Command::new("setpriv");
    command
        .args([
            format!("--reuid={USER}"),
            format!("--regid={USER}"),
            "--clear-groups".into(),
            format!("--bounding-set=-all,+{}", caps.replace(',', ",+")),
            format!("--inh-caps=-all,+{}", caps.replace(',', ",+")),
            format!("--ambient-caps=-all,+{}", caps.replace(',', ",+")),
            BIN.into(),
            "agent".into(),
        ])
        .args(args)
        .env("RUST_LOG", "info");
    command
}

#[test]
fn the_agent_serves_with_only_the_units_capabilities_and_names_a_missing_one() {
    let _slot = meta169_testkit::agent_slot();
    let dir = temp_dir();
    // The user reaches the databases' sockets and its own run directory.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let run_dir = dir.path().join("run");
    std::fs::create_dir(&run_dir).unwrap();
    std::os::unix::fs::chown(&run_dir, Some(USER), Some(USER)).unwrap();
    let stack = OvnStack::start(dir.path());
    for socket in [&stack.sb.socket, &stack.ovs_db.socket] {
        std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    }

    let secret = dir.path().join("secret");
    std::fs::write(&secret, "unit-secret\n").unwrap();
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
    let example = meta169_tree::example_instance();
    let net = format!("d{:07x}-1111-4000-8000-000000000003", std::process::id());
    let dhcp = stack.add_network(&net, "fa:16:3e:dd:00:02");
    stack.add_vm_port(
        &net,
        "vm-unit-port",
        "fa:16:3e:dd:00:05",
        "10.0.0.5",
        &example.uuid,
        &example.project_id,
        &dhcp,
    );

    let args: Vec<String> = [
        "--ovn-sb",
        &stack.sb.remote(),
        "--ovs-db",
        &stack.ovs_db.remote(),
        "--upstream",
        &format!("http://{listen}"),
        "--shared-secret-file",
        &secret.display().to_string(),
        "--status-socket",
        &run_dir.join("agent.sock").display().to_string(),
        "--ops-listen",
        "",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();

    // Without CAP_SYS_ADMIN: it stops at start and says what is missing.
    let refused = agent_as_user("net_admin,net_bind_service", &args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("meta169 agent needs CAP_SYS_ADMIN"),
        "{stderr}"
    );

    // With exactly the unit's capabilities: the VM gets its metadata.
    let _access = NetnsDirAccess::grant(USER);
    let agent = Process::start("agent", agent_as_user(UNIT_CAPS, &args), dir.path());
    let vm = OvnVm::boot(&stack, "vm-unit-port", "fa:16:3e:dd:00:05", dir.path());
    let log = || read_log(&dir.path().join("agent.log"));
    let fetch = || {
        let out = vm
            .ns
            .command("python3")
            .args(["-c", "import urllib.request;print(urllib.request.urlopen('http://169.254.169.254/openstack/latest/meta_data.json', timeout=5).read().decode())"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        wait_until(Duration::from_secs(30), || fetch().contains(&example.uuid)),
        "{}",
        log()
    );
    // Served by the unprivileged user (setpriv execs the agent in place).
    let pid = agent.pid().unwrap();
    assert_eq!(
        std::fs::metadata(format!("/proc/{pid}")).unwrap().uid(),
        USER
    );
    drop(agent);
    let _ = meta169_agent::netns::delete(&format!("ovnmeta-{net}"));
}
