//! Captures the Southbound payloads `recorded_southbound.rs` plays back:
//! a real ovsdb-server with OVN's schema, rows written as ovn-northd,
//! ovn-controller and Neutron write them, and a monitor that follows its
//! conditions exactly as the agent does (`sb::Conditions::for_view`),
//! recording every answer and notification. Run it (as root, with OVN's
//! packages installed) to refresh the fixtures:
//!
//!     cargo test -p meta169-agent --test capture_southbound -- --ignored
//!
//! Ignored in the normal run: the fixtures are committed, and the playback
//! tests need neither root nor a daemon.

use meta169_agent::sb::{self, Conditions};
use meta169_ovsdb::schema::Schema;
use meta169_ovsdb::{Notification, Remote, Replica, Rpc};
use meta169_testkit::sb::{self as rows, RowRef, VmPort};
use meta169_testkit::{temp_dir, OvsdbServer, OVN_SB_SCHEMA};
use serde_json::{json, Map, Value};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;

const ME: &str = "chassis-here";
const OTHER: &str = "chassis-elsewhere";
const T: Duration = Duration::from_secs(10);
/// Quiet time after which a write's notifications are taken to be all in.
const SETTLE: Duration = Duration::from_millis(300);

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/southbound")
}

/// The monitor request the agent's `Monitor` sends for these options.
fn monitor_request(conditions: &Conditions) -> Value {
    let mut request = Map::new();
    for t in sb::monitor_options(ME).tables {
        let mut one = json!({"columns": t.columns});
        let clauses = match t.table.as_str() {
            "Port_Binding" => Some(conditions.port_binding.clone()),
            "Datapath_Binding" => Some(conditions.datapath_binding.clone()),
            _ => t.conditions.clone(),
        };
        if let Some(clauses) = clauses {
            one["where"] = json!(clauses);
        }
        request.insert(t.table.clone(), json!([one]));
    }
    Value::Object(request)
}

/// The monitored tables and columns of the server's schema.
fn trimmed_schema(full: &Value) -> Value {
    let mut tables = Map::new();
    for t in sb::monitor_options(ME).tables {
        let columns = &full["tables"][&t.table]["columns"];
        let kept: Map<String, Value> = t
            .columns
            .iter()
            .filter_map(|c| Some((c.clone(), columns.get(c)?.clone())))
            .collect();
        tables.insert(t.table.clone(), json!({"columns": kept}));
    }
    json!({"name": full["name"], "version": full["version"], "tables": tables})
}

/// A recording monitor that follows conditions as the agent does.
struct Recorder {
    rpc: Arc<Rpc>,
    notes: UnboundedReceiver<Notification>,
    schema: Schema,
    replica: Replica,
    conditions: Conditions,
    events: Vec<Value>,
}

impl Recorder {
    async fn start(remote: &str) -> (Recorder, Value) {
        let remote: Remote = remote.parse().unwrap();
        let (rpc, notes) = Rpc::connect(&remote).await.unwrap();
        let full = rpc.call("get_schema", json!([sb::SB_DB]), T).await.unwrap();
        let schema_json = trimmed_schema(&full);
        let conditions = Conditions::initial();
        let initial = rpc
            .call(
                "monitor_cond",
                json!([sb::SB_DB, "meta169", monitor_request(&conditions)]),
                T,
            )
            .await
            .unwrap();
        let mut recorder = Recorder {
            rpc,
            notes,
            schema: Schema::from_json(&schema_json),
            replica: Replica::default(),
            conditions: conditions.clone(),
            events: Vec::new(),
        };
        recorder
            .replica
            .apply_update(&recorder.schema, &initial, true);
        for (table, clauses) in [
            ("Port_Binding", conditions.port_binding),
            ("Datapath_Binding", conditions.datapath_binding),
        ] {
            recorder.replica.record_conditions(table, clauses);
        }
        recorder.events.push(json!({"initial": initial, "conditions": {
            "Port_Binding": recorder.conditions.port_binding, "Datapath_Binding": recorder.conditions.datapath_binding}}));
        (recorder, schema_json)
    }

    fn mark(&mut self, step: &str) {
        self.events.push(json!({"step": step}));
    }

    /// Record the notifications that arrive until the server is quiet.
    async fn settle(&mut self) {
        while let Ok(Some(note)) = tokio::time::timeout(SETTLE, self.notes.recv()).await {
            if note.method == "update2" {
                let updates = note.params[1].clone();
                self.replica.apply_update(&self.schema, &updates, true);
                self.events.push(json!({"update2": updates}));
            }
        }
    }

    /// Change conditions as the agent would until the view is complete.
    async fn follow(&mut self) {
        for _ in 0..10 {
            self.settle().await;
            let view = sb::read(&self.replica, ME, &mut HashSet::new());
            let wanted = Conditions::for_view(&view);
            let changes: Vec<(&str, Vec<Value>)> = self.conditions.changes_to(&wanted);
            if changes.is_empty() {
                return;
            }
            for (table, clauses) in changes {
                let update = json!({ table: [{"where": clauses}] });
                self.rpc
                    .call(
                        "monitor_cond_change",
                        json!(["meta169", "meta169", update]),
                        T,
                    )
                    .await
                    .unwrap();
                // The rows the new condition brings come before the reply.
                let mut brought = Vec::new();
                while let Ok(note) = self.notes.try_recv() {
                    brought.push(note.params[1].clone());
                }
                for updates in &brought {
                    self.replica.apply_update(&self.schema, updates, true);
                }
                self.replica.record_conditions(table, clauses.clone());
                self.events.push(
                    json!({"cond_change": {"table": table, "where": clauses}, "update2": brought}),
                );
            }
            self.conditions = wanted;
        }
        panic!("conditions did not settle");
    }

    fn save(&self, name: &str, schema: &Value, about: &str) {
        let doc = json!({"about": about, "chassis": ME, "schema": schema, "events": self.events});
        std::fs::write(
            fixtures().join(name),
            serde_json::to_string_pretty(&doc).unwrap() + "\n",
        )
        .unwrap();
    }
}

/// Two networks on the same subnet (10.0.0.5 on each, other instances),
/// their VM ports already bound here, and on network A a bound port with
/// `mac` `unknown` and one with no `mac` at all; another chassis.
fn prepare(server: &OvsdbServer) {
    server.transact(
        rows::SB_DB,
        &Value::Array(rows::chassis_at(OTHER, "127.0.0.2")),
    );
    let mut ops = rows::chassis(ME);
    ops.push(rows::sb_global(3));
    for (n, network) in ["net-a", "net-b"].iter().enumerate() {
        let dp = format!("dp{n}");
        let key = n as i64 + 1;
        ops.push(rows::datapath(network, key, Some(&dp)));
        ops.push(rows::metadata_port(
            network,
            RowRef::Named(&dp),
            &format!("fa:16:3e:aa:00:0{n}"),
            "10.0.0.2/24",
            1,
        ));
        ops.push(rows::vm_port(&VmPort {
            name: &format!("vm-{network}"),
            datapath: RowRef::Named(&dp),
            mac: &format!("fa:16:3e:00:00:0{n}"),
            ips: "10.0.0.5 fd00::5",
            instance: &format!("instance-{network}"),
            project: "project-1",
            chassis: Some(RowRef::Named("chassis")),
            key: 2,
        }));
    }
    ops.push(json!({"op": "insert", "table": "Port_Binding", "row": {"logical_port": "unknown-mac", "type": "", "datapath": ["named-uuid", "dp0"], "tunnel_key": 3,
        "mac": ["set", ["unknown"]], "chassis": ["named-uuid", "chassis"],
        "external_ids": ["map", [["neutron:device_id", "instance-unknown"], ["neutron:project_id", "project-1"]]]}}));
    ops.push(json!({"op": "insert", "table": "Port_Binding", "row": {"logical_port": "no-mac", "type": "", "datapath": ["named-uuid", "dp0"], "tunnel_key": 4,
        "mac": ["set", []], "chassis": ["named-uuid", "chassis"],
        "external_ids": ["map", [["neutron:device_id", "instance-nomac"], ["neutron:project_id", "project-1"]]]}}));
    server.transact(rows::SB_DB, &Value::Array(ops));
}

fn chassis_uuid(server: &OvsdbServer, name: &str) -> String {
    let r = server.transact(rows::SB_DB, &json!([{"op": "select", "table": "Chassis", "where": [["name", "==", name]], "columns": ["_uuid"]}]));
    r[0]["rows"][0]["_uuid"][1].as_str().unwrap().to_string()
}

#[tokio::test]
#[ignore = "refreshes the committed fixtures; needs OVN's packages"]
async fn capture() {
    let dir = temp_dir();
    let server = OvsdbServer::start("sb", OVN_SB_SCHEMA, dir.path());
    prepare(&server);

    // An agent starting on a node that already serves these networks.
    let (mut start, schema) = Recorder::start(&server.remote()).await;
    start.follow().await;
    start.save(
        "restart.json",
        &schema,
        "An agent (re)starting: the first snapshot, then each monitor condition round until the view is complete. Ports arrive already bound; network A also has bound ports whose mac is unknown or empty; networks A and B both hold 10.0.0.5.",
    );

    // Changes while running, from the complete view on.
    let (mut churn, schema) = Recorder::start(&server.remote()).await;
    churn.follow().await;
    let (me, other) = (chassis_uuid(&server, ME), chassis_uuid(&server, OTHER));
    churn.mark("network C appears with a VM port bound here from its first row");
    server.transact(
        rows::SB_DB,
        &Value::Array(vec![
            rows::datapath("net-c", 3, Some("dpc")),
            rows::metadata_port(
                "net-c",
                RowRef::Named("dpc"),
                "fa:16:3e:aa:00:0c",
                "10.1.0.2/24",
                1,
            ),
            rows::vm_port(&VmPort {
                name: "vm-net-c",
                datapath: RowRef::Named("dpc"),
                mac: "fa:16:3e:00:00:0c",
                ips: "10.1.0.7",
                instance: "instance-net-c",
                project: "project-1",
                chassis: Some(RowRef::Uuid(&me)),
                key: 2,
            }),
        ]),
    );
    churn.follow().await;
    churn.mark("network A's VM moves to the other chassis (its last usable port here)");
    server.transact(
        rows::SB_DB,
        &Value::Array(vec![rows::bind("vm-net-a", Some(RowRef::Uuid(&other)))]),
    );
    churn.follow().await;
    churn.mark("network B's VM is unbound (its last port here leaves)");
    server.transact(
        rows::SB_DB,
        &Value::Array(vec![rows::bind("vm-net-b", None)]),
    );
    churn.follow().await;
    churn.save(
        "churn.json",
        &schema,
        "A running agent's complete view, then: a network arriving with a port already bound here; a port moving to another chassis; a network's last port leaving.",
    );
}
