//! What a node switched from Neutron's agent may still hold: a haproxy in
//! an `ovnmeta-` namespace on 169.254.169.254:80. The agent names it and
//! what to do, keeps retrying, and serves as soon as it is gone.

mod common;

use common::node::Node;
use common::BIN;
use meta169_testkit::{wait_until, Process};
use std::process::Command;
use std::time::Duration;

#[test]
fn a_leftover_haproxy_is_named_and_the_agent_serves_once_it_is_gone() {
    let node = Node::start();
    let ns = node.namespace();
    // The namespace as Neutron's agent left it: haproxy bound to the
    // metadata address (Neutron's haproxy.cfg binds 169.254.169.254:80).
    meta169_agent::netns::create(&ns).unwrap();
    meta169_testkit::ip(&["-n", &ns, "link", "set", "lo", "up"]);
    meta169_testkit::ip(&["-n", &ns, "addr", "add", "169.254.169.254/32", "dev", "lo"]);
    let config = node.dir.path().join("haproxy.cfg");
    std::fs::write(
        &config,
        "global\n    maxconn 32\n\ndefaults\n    mode http\n    timeout connect 1s\n    timeout client 5s\n    timeout server 5s\n\n\
         listen listener\n    bind 169.254.169.254:80\n    server metadata /nonexistent/metadata_proxy\n",
    )
    .unwrap();
    let mut haproxy_command = Command::new("ip");
    haproxy_command
        .args(["netns", "exec", &ns, "haproxy", "-db", "-f"])
        .arg(&config);
    let mut haproxy = Process::start("haproxy", haproxy_command, node.dir.path());
    let holding = || {
        let ns = ns.clone();
        meta169_agent::netns::run_in(&ns, || {
            std::net::TcpStream::connect_timeout(
                &"169.254.169.254:80".parse().unwrap(),
                Duration::from_millis(200),
            )
        })
        .is_ok()
    };
    assert!(
        wait_until(Duration::from_secs(10), holding),
        "{}",
        node.log("haproxy")
    );
    let pid = haproxy.pid().unwrap();

    let mut command = Command::new(BIN);
    command
        .arg("agent")
        .args(&node.agent_args)
        .env("RUST_LOG", "info");
    let _agent = Process::start("agent", command, node.dir.path());
    let named = format!("169.254.169.254:80 in {ns} is held by haproxy (pid {pid})");
    assert!(
        wait_until(Duration::from_secs(20), || node
            .log("agent")
            .contains(&named)),
        "{}",
        node.log("agent")
    );
    assert!(node
        .log("agent")
        .contains("stop that agent and its haproxy"));
    // Retried every second, said once.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        node.log("agent").matches("is held by").count(),
        1,
        "{}",
        node.log("agent")
    );

    haproxy.stop();
    assert!(
        wait_until(Duration::from_secs(10), || node.fetch() == "demo.novalocal"),
        "{}",
        node.log("agent")
    );
}
