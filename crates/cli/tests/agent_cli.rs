//! `meta169 agent` as a process (Linux-bridge mode, Southbound rows written
//! by the test) next to `meta169 serve`, and `meta169 trace` explaining the
//! path of a VM it serves and of one it cannot.

mod common;

use common::node::Node;
use common::BIN;
use meta169_testkit::wait_until;
use std::process::Command;
use std::time::Duration;

fn ip(args: &[&str]) {
    meta169_testkit::ip(args);
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
        "the agent is ready",
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
