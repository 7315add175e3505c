//! The Southbound reader, the monitor conditions and `plan`, on payloads
//! recorded from a real ovsdb-server (tests/fixtures/southbound, captured
//! by `capture_southbound.rs`): played into a replica event by event, as
//! the agent's monitor applies them. No root, no daemon.

use meta169_agent::plan::{plan, Action, Existing, Removal};
use meta169_agent::sb::{self, Conditions, NetworkSpec, SbView};
use meta169_ovsdb::schema::Schema;
use meta169_ovsdb::Replica;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::IpAddr;

/// A recording, played one event at a time.
struct Playback {
    chassis: String,
    schema: Schema,
    events: Vec<Value>,
    next: usize,
    replica: Replica,
}

impl Playback {
    fn load(name: &str) -> Playback {
        let path = format!(
            "{}/tests/fixtures/southbound/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        Playback {
            chassis: doc["chassis"].as_str().unwrap().to_string(),
            schema: Schema::from_json(&doc["schema"]),
            events: doc["events"].as_array().unwrap().clone(),
            next: 0,
            replica: Replica::default(),
        }
    }

    /// Apply the next event as the monitor does; false when none is left.
    /// A step marker is returned as `Some(text)`.
    fn step(&mut self) -> Option<Option<String>> {
        let event = self.events.get(self.next)?.clone();
        self.next += 1;
        if let Some(step) = event.get("step") {
            return Some(step.as_str().map(str::to_string));
        }
        if let Some(initial) = event.get("initial") {
            self.replica.apply_update(&self.schema, initial, true);
            for (table, clauses) in event["conditions"].as_object().unwrap() {
                self.replica
                    .record_conditions(table, clauses.as_array().unwrap().clone());
            }
        } else if let Some(change) = event.get("cond_change") {
            for updates in event["update2"].as_array().unwrap() {
                self.replica.apply_update(&self.schema, updates, true);
            }
            let table = change["table"].as_str().unwrap();
            self.replica
                .record_conditions(table, change["where"].as_array().unwrap().clone());
        } else {
            self.replica
                .apply_update(&self.schema, &event["update2"], true);
        }
        Some(None)
    }

    /// Play up to and including the marker `step` (or to the end).
    fn until_step(&mut self, wanted: &str) {
        while let Some(marker) = self.step() {
            if marker.as_deref() == Some(wanted) {
                return;
            }
        }
        panic!("no step {wanted:?}");
    }

    /// The agent's reading now: the view and whether it is complete.
    fn view(&self) -> (SbView, bool) {
        let view = sb::read(&self.replica, &self.chassis, &mut HashSet::new());
        let complete = Conditions::for_view(&view).reflected_by(&self.replica);
        (view, complete)
    }
}

fn instance(view: &SbView, network: &str, address: &str) -> Option<String> {
    let address: IpAddr = address.parse().unwrap();
    view.index
        .lookup(network, address)
        .map(|t| t.instance_id.clone())
}

/// What the node has after the actions are carried out.
fn carry_out(existing: &mut Existing, actions: &[Action]) {
    for action in actions {
        match action {
            Action::Provision(spec) => {
                existing
                    .provisioned
                    .insert(spec.network_id.clone(), (spec.clone(), true));
            }
            Action::Remove { network, .. } => {
                existing.provisioned.remove(network);
            }
        }
    }
    existing.namespaces = None;
}

/// Play the events up to the next step marker (or the end), planning
/// after each: a partial view removes nothing. The last plan.
fn plan_through_step(playback: &mut Playback, existing: &Existing) -> Vec<Action> {
    let mut last = Vec::new();
    while let Some(None) = playback.step() {
        let (view, complete) = playback.view();
        last = plan(&view, complete, existing);
        if !complete {
            assert!(removals(&last).is_empty(), "a partial view removes nothing");
        }
    }
    last
}

fn provisions(actions: &[Action]) -> Vec<&str> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Provision(spec) => Some(spec.network_id.as_str()),
            _ => None,
        })
        .collect()
}

fn removals(actions: &[Action]) -> Vec<(&str, Removal)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Remove { network, why } => Some((network.as_str(), *why)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_restarted_agent_removes_nothing_while_its_view_is_partial() {
    let mut playback = Playback::load("restart.json");
    // The node as a killed agent left it: both networks' namespaces, and
    // one of a network that is gone.
    let existing = Existing {
        namespaces: Some(BTreeSet::from([
            "net-a".into(),
            "net-b".into(),
            "net-gone".into(),
        ])),
        provisioned: BTreeMap::new(),
    };
    let mut rounds = 0;
    while playback.step().is_some() {
        rounds += 1;
        let (view, complete) = playback.view();
        let actions = plan(&view, complete, &existing);
        if rounds < playback.events.len() {
            // The first snapshot knows this chassis but none of its ports;
            // each condition round brings more, and no network is whole
            // before the last: nothing is created, nothing removed.
            assert!(!complete, "round {rounds} is not the last");
            assert_eq!(actions, [], "round {rounds} of a partial view");
        } else {
            assert!(complete);
            assert_eq!(removals(&actions), [("net-gone", Removal::Stale)]);
            assert_eq!(provisions(&actions), ["net-a", "net-b"]);
        }
    }
    assert_eq!(rounds, 4, "a snapshot and three condition rounds");
}

#[test]
fn bound_ports_are_indexed_by_network_and_unusable_macs_skipped() {
    let mut playback = Playback::load("restart.json");
    while playback.step().is_some() {}
    let (view, complete) = playback.view();
    assert!(complete);
    // The ports arrived bound: indexed from their first row.
    // 10.0.0.5 is on both networks: each network has its own instance.
    assert_eq!(
        instance(&view, "net-a", "10.0.0.5").as_deref(),
        Some("instance-net-a")
    );
    assert_eq!(
        instance(&view, "net-b", "10.0.0.5").as_deref(),
        Some("instance-net-b")
    );
    assert_eq!(instance(&view, "net-c", "10.0.0.5"), None);
    // IPv6 link-local guests by the MAC in their EUI-64 address.
    assert_eq!(
        instance(&view, "net-b", "fe80::f816:3eff:fe00:1").as_deref(),
        Some("instance-net-b")
    );
    // `mac` of "unknown" or empty: skipped, not an error and not indexed.
    let indexed: BTreeSet<String> = view
        .index
        .targets()
        .map(|t| t.instance_id.clone())
        .collect();
    assert_eq!(
        indexed,
        BTreeSet::from(["instance-net-a".into(), "instance-net-b".into()])
    );
    let spec: &NetworkSpec = &view.networks["net-a"];
    assert_eq!(spec.metadata.logical_port, "meta-net-a");
    assert_eq!(spec.metadata.mtu, 1442);
    assert_eq!(
        spec.local_ipv4,
        ["10.0.0.5".parse::<std::net::Ipv4Addr>().unwrap()]
    );
    assert!(spec.any_ipv6);
    let addresses: Vec<String> = spec
        .addresses(true)
        .iter()
        .map(|(ip, p)| format!("{ip}/{p}"))
        .collect();
    assert_eq!(
        addresses,
        [
            "169.254.169.254/32",
            "10.0.0.2/24",
            "fe80::a9fe:a9fe/64",
            "fe80::f816:3eff:feaa:0/64"
        ]
    );
    let private = view.chassis_private.as_ref().unwrap();
    assert_eq!((view.sb_nb_cfg, private.2), (Some(3), 0));
}

#[test]
fn a_running_agent_follows_arrivals_moves_and_departures() {
    let mut playback = Playback::load("churn.json");
    playback.until_step("network C appears with a VM port bound here from its first row");
    let (view, complete) = playback.view();
    assert!(complete);
    let mut existing = Existing {
        namespaces: Some(BTreeSet::new()),
        provisioned: BTreeMap::new(),
    };
    let actions = plan(&view, complete, &existing);
    assert_eq!(provisions(&actions), ["net-a", "net-b"]);
    carry_out(&mut existing, &actions);
    assert_eq!(plan(&view, complete, &existing), [], "nothing left to do");

    // A network whose port is bound here in its first row: provisioned
    // once its datapath and metadata port have come in.
    let last = plan_through_step(&mut playback, &existing);
    assert_eq!(provisions(&last), ["net-c"]);
    assert!(removals(&last).is_empty());
    carry_out(&mut existing, &last);
    let (view, _) = playback.view();
    assert_eq!(
        instance(&view, "net-c", "10.1.0.7").as_deref(),
        Some("instance-net-c")
    );

    // Network A's VM moves to the other chassis: A's only usable port here
    // is gone, so A's namespace goes, once the view is complete again.
    let last = plan_through_step(&mut playback, &existing);
    assert_eq!(removals(&last), [("net-a", Removal::Unneeded)]);
    assert!(provisions(&last).is_empty());
    carry_out(&mut existing, &last);
    let (view, _) = playback.view();
    assert_eq!(instance(&view, "net-a", "10.0.0.5"), None);
    assert_eq!(
        instance(&view, "net-b", "10.0.0.5").as_deref(),
        Some("instance-net-b")
    );

    // Network B's last port is unbound: B goes too.
    let last = plan_through_step(&mut playback, &existing);
    assert_eq!(removals(&last), [("net-b", Removal::Unneeded)]);
    carry_out(&mut existing, &last);
    let kept: Vec<&String> = existing.provisioned.keys().collect();
    assert_eq!(kept, ["net-c"]);
}
