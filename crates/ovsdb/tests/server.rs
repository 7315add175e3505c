//! The client against a real ovsdb-server holding OVN's Southbound schema;
//! rows are written with `transact` as ovn-northd and ovn-controller would.

use meta169_ovsdb::{ConnectionState, Monitor, MonitorOptions, Remote, Replica, Rpc, TableMonitor};
use meta169_testkit::{temp_dir, OvsdbServer, OVN_SB_SCHEMA};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

async fn rpc(server: &OvsdbServer) -> Arc<Rpc> {
    Rpc::connect(&server.remote().parse::<Remote>().unwrap())
        .await
        .unwrap()
        .0
}

/// Insert a chassis (with its encap) and return its row uuid.
async fn add_chassis(rpc: &Rpc, name: &str) -> String {
    let r = rpc
        .transact(
            "OVN_Southbound",
            vec![
                json!({"op": "insert", "table": "Encap", "uuid-name": "e", "row": {"type": "geneve", "ip": format!("192.0.2.{}", name.len()), "chassis_name": name}}),
                json!({"op": "insert", "table": "Chassis", "row": {"name": name, "hostname": name, "encaps": ["named-uuid", "e"]}}),
            ],
            T,
        )
        .await
        .unwrap();
    r[1]["uuid"][1].as_str().unwrap().to_string()
}

async fn add_datapath(rpc: &Rpc, network: &str, key: i64) -> String {
    let r = rpc
        .transact(
            "OVN_Southbound",
            vec![json!({"op": "insert", "table": "Datapath_Binding", "row": {"tunnel_key": key, "external_ids": ["map", [["name", format!("neutron-{network}")]]]}})],
            T,
        )
        .await
        .unwrap();
    r[0]["uuid"][1].as_str().unwrap().to_string()
}

async fn add_port(rpc: &Rpc, name: &str, datapath: &str, key: i64, chassis: Option<&str>) {
    let mut row = json!({"logical_port": name, "datapath": ["uuid", datapath], "tunnel_key": key, "mac": ["set", [format!("fa:16:3e:00:00:{key:02x} 10.0.0.{key}")]]});
    if let Some(c) = chassis {
        row["chassis"] = json!(["uuid", c]);
    }
    rpc.transact(
        "OVN_Southbound",
        vec![json!({"op": "insert", "table": "Port_Binding", "row": row})],
        T,
    )
    .await
    .unwrap();
}

async fn set_chassis(rpc: &Rpc, port: &str, chassis: Option<&str>) {
    let value = match chassis {
        Some(c) => json!(["uuid", c]),
        None => json!(["set", []]),
    };
    rpc.transact(
        "OVN_Southbound",
        vec![json!({"op": "update", "table": "Port_Binding", "where": [["logical_port", "==", port]], "row": {"chassis": value}})],
        T,
    )
    .await
    .unwrap();
}

fn port_names(replica: &Replica) -> Vec<String> {
    let mut names: Vec<String> = replica
        .rows("Port_Binding")
        .filter_map(|(_, r)| {
            r.get("logical_port")
                .and_then(|d| d.as_str())
                .map(str::to_string)
        })
        .collect();
    names.sort();
    names
}

/// Wait until the monitor's replica satisfies `check`.
async fn until(monitor: &Monitor, what: &str, check: impl Fn(&Replica) -> bool) -> Arc<Replica> {
    let mut rx = monitor.subscribe();
    let wait = async {
        loop {
            let current = rx.borrow_and_update().clone();
            if check(&current) {
                return current;
            }
            rx.changed().await.unwrap();
        }
    };
    tokio::time::timeout(T, wait).await.unwrap_or_else(|_| {
        panic!(
            "timed out waiting for {what}: {:?}",
            port_names(&monitor.replica())
        )
    })
}

#[tokio::test]
async fn conditional_monitor_follows_bindings() {
    let dir = temp_dir();
    let server = OvsdbServer::start("sb", OVN_SB_SCHEMA, dir.path());
    let rpc = rpc(&server).await;
    let here = add_chassis(&rpc, "here").await;
    let there = add_chassis(&rpc, "there").await;
    let dp = add_datapath(&rpc, "net1", 1).await;
    add_port(&rpc, "vm-a", &dp, 1, Some(&here)).await;
    add_port(&rpc, "vm-b", &dp, 2, Some(&there)).await;
    add_port(&rpc, "vm-c", &dp, 3, None).await;

    let options = MonitorOptions::new(
        "OVN_Southbound",
        vec![
            TableMonitor::all("Port_Binding")
                .columns(&["logical_port", "chassis", "mac", "datapath"])
                .when(vec![json!(["chassis", "==", ["uuid", here]])]),
            TableMonitor::all("Datapath_Binding"),
        ],
    );
    let monitor = Monitor::start(server.remote().parse().unwrap(), options);
    let replica = monitor.ready(T).await.unwrap();
    assert_eq!(
        port_names(&replica),
        vec!["vm-a"],
        "only rows bound here arrive"
    );
    assert_eq!(replica.len("Datapath_Binding"), 1);
    let (_, a) = replica.rows("Port_Binding").next().unwrap();
    assert_eq!(a["mac"].strings(), vec!["fa:16:3e:00:00:01 10.0.0.1"]);
    assert_eq!(a["datapath"].uuids(), vec![dp.as_str()]);

    // Binding and moving ports updates the view, through update2 diffs.
    set_chassis(&rpc, "vm-c", Some(&here)).await;
    until(&monitor, "vm-c bound", |r| {
        port_names(r) == ["vm-a", "vm-c"]
    })
    .await;
    set_chassis(&rpc, "vm-a", Some(&there)).await;
    until(&monitor, "vm-a moved away", |r| port_names(r) == ["vm-c"]).await;
    set_chassis(&rpc, "vm-c", None).await;
    until(&monitor, "vm-c unbound", |r| port_names(r).is_empty()).await;

    // Changing the conditions changes what is received.
    monitor.set_conditions(
        "Port_Binding",
        vec![json!(["chassis", "==", ["uuid", there]])],
    );
    until(&monitor, "ports of 'there'", |r| {
        port_names(r) == ["vm-a", "vm-b"]
    })
    .await;

    // transact through the monitor's own connection.
    monitor
        .transact(vec![json!({"op": "delete", "table": "Port_Binding", "where": [["logical_port", "==", "vm-b"]]})])
        .await
        .unwrap();
    until(&monitor, "vm-b deleted", |r| port_names(r) == ["vm-a"]).await;
    let err = monitor
        .transact(vec![
            json!({"op": "insert", "table": "Port_Binding", "row": {"logical_port": "bad"}}),
        ])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("transaction failed"), "{err}");
}

#[tokio::test]
async fn the_replica_says_which_conditions_its_rows_reflect() {
    let dir = temp_dir();
    let server = OvsdbServer::start("sb", OVN_SB_SCHEMA, dir.path());
    let rpc = rpc(&server).await;
    let dp = add_datapath(&rpc, "net1", 1).await;
    for (key, name) in ["p1", "p2", "p3"].iter().enumerate() {
        add_port(&rpc, name, &dp, key as i64 + 1, None).await;
    }
    let nothing = vec![json!(false)];
    let options = MonitorOptions::new(
        "OVN_Southbound",
        vec![TableMonitor::all("Port_Binding")
            .columns(&["logical_port"])
            .when(nothing.clone())],
    );
    let monitor = Monitor::start(server.remote().parse().unwrap(), options);
    let replica = monitor.ready(T).await.unwrap();
    assert!(replica.reflects_conditions("Port_Binding", &nothing));
    assert!(port_names(&replica).is_empty());

    // Changes queued together: the latest is what the replica ends with,
    // and it says so only once its rows are in.
    let one = vec![json!(["logical_port", "==", "p1"])];
    let two = vec![
        json!(["logical_port", "==", "p2"]),
        json!(["logical_port", "==", "p3"]),
    ];
    monitor.set_conditions("Port_Binding", one.clone());
    monitor.set_conditions("Port_Binding", two.clone());
    let replica = until(&monitor, "the latest conditions reflected", |r| {
        r.reflects_conditions("Port_Binding", &two)
    })
    .await;
    assert_eq!(port_names(&replica), ["p2", "p3"]);
    assert!(!replica.reflects_conditions("Port_Binding", &one));
    assert!(
        !replica.reflects_conditions("Datapath_Binding", &nothing),
        "not monitored"
    );
}

#[tokio::test]
async fn restart_resyncs_without_duplicates() {
    let dir = temp_dir();
    let mut server = OvsdbServer::start("sb", OVN_SB_SCHEMA, dir.path());
    let first = rpc(&server).await;
    let here = add_chassis(&first, "here").await;
    let dp = add_datapath(&first, "net1", 1).await;
    add_port(&first, "vm-a", &dp, 1, Some(&here)).await;
    let mut options = MonitorOptions::new(
        "OVN_Southbound",
        vec![
            TableMonitor::all("Port_Binding"),
            TableMonitor::all("Chassis"),
        ],
    );
    options.max_backoff = Duration::from_millis(200);
    let monitor = Monitor::start(server.remote().parse().unwrap(), options);
    let before = monitor.ready(T).await.unwrap();
    assert_eq!(before.snapshots, 1);

    server.kill();
    let mut state = monitor.state();
    tokio::time::timeout(
        T,
        state.wait_for(|s| {
            matches!(
                s,
                ConnectionState::Disconnected(_) | ConnectionState::Connecting
            )
        }),
    )
    .await
    .unwrap()
    .unwrap();
    // The replica is kept while disconnected: readers keep serving from it.
    assert_eq!(port_names(&monitor.replica()), vec!["vm-a"]);
    server.restart();
    let after = until(&monitor, "second snapshot", |r| r.snapshots == 2).await;
    assert_eq!(
        port_names(&after),
        vec!["vm-a"],
        "no duplicates after resync"
    );
    assert_eq!(after.len("Chassis"), 1);
    // Changes after the restart arrive.
    let second = rpc(&server).await;
    add_port(&second, "vm-b", &dp, 2, Some(&here)).await;
    until(&monitor, "vm-b after restart", |r| {
        port_names(r) == ["vm-a", "vm-b"]
    })
    .await;
}

#[tokio::test]
async fn a_hung_server_is_detected_by_echo_and_recovered() {
    let dir = temp_dir();
    let server = OvsdbServer::start("sb", OVN_SB_SCHEMA, dir.path());
    let mut options = MonitorOptions::new("OVN_Southbound", vec![TableMonitor::all("SB_Global")]);
    options.probe_interval = Duration::from_millis(300);
    options.max_backoff = Duration::from_millis(200);
    let monitor = Monitor::start(server.remote().parse().unwrap(), options);
    monitor.ready(T).await.unwrap();
    // Idle well past the probe interval: echoes keep the connection up.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(*monitor.state().borrow(), ConnectionState::Connected);
    assert_eq!(monitor.replica().snapshots, 1, "no reconnection while idle");
    server.freeze(true);
    let mut state = monitor.state();
    tokio::time::timeout(
        T,
        state.wait_for(|s| !matches!(s, ConnectionState::Connected)),
    )
    .await
    .expect("an unanswered echo drops the connection")
    .unwrap();
    server.freeze(false);
    until(&monitor, "reconnected", |r| r.snapshots >= 2).await;
}

#[tokio::test]
async fn server_errors_are_reported() {
    let dir = temp_dir();
    let server = OvsdbServer::start("sb", OVN_SB_SCHEMA, dir.path());
    let rpc = rpc(&server).await;
    let err = rpc
        .call("get_schema", json!(["No_Such_DB"]), T)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unknown database"), "{err}");
    let echo: Value = rpc.call("echo", json!(["x"]), T).await.unwrap();
    assert_eq!(echo, json!(["x"]));
    let err = Rpc::connect(&"unix:/nonexistent.sock".parse::<Remote>().unwrap())
        .await
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .contains("cannot connect to unix:/nonexistent.sock"),
        "{err}"
    );
}

#[tokio::test]
async fn ssl_remotes_work_with_ovs_style_certificates() {
    let dir = temp_dir();
    // X.509 v3 without subject alternative names, like ovs-pki's.
    meta169_testkit::make_pki(dir.path(), &["server", "client"], None);
    let port = meta169_testkit::free_port();
    let d = dir.path().display();
    let server = OvsdbServer::start_with(
        "sb",
        OVN_SB_SCHEMA,
        dir.path(),
        vec![
            format!("--remote=pssl:{port}:127.0.0.1"),
            format!("--private-key={d}/server.key"),
            format!("--certificate={d}/server.pem"),
            format!("--ca-cert={d}/ca.pem"),
        ],
    );
    assert!(meta169_testkit::wait_for_tcp(
        format!("127.0.0.1:{port}").parse().unwrap(),
        T
    ));
    let files = meta169_ovsdb::TlsFiles {
        private_key: Some(dir.path().join("client.key")),
        certificate: Some(dir.path().join("client.pem")),
        ca_cert: Some(dir.path().join("ca.pem")),
    };
    let remote = format!("ssl:127.0.0.1:{port}")
        .parse::<Remote>()
        .unwrap()
        .with_tls(files);
    let (rpc, _) = Rpc::connect(&remote).await.unwrap();
    let monitor = Monitor::start(
        remote,
        MonitorOptions::new("OVN_Southbound", vec![TableMonitor::all("Chassis")]),
    );
    monitor.ready(T).await.unwrap();
    add_chassis(&rpc, "tls-chassis").await;
    until(&monitor, "chassis over TLS", |r| r.len("Chassis") == 1).await;
    // A CA that did not sign the server is refused.
    std::fs::copy(
        dir.path().join("client.pem"),
        dir.path().join("wrong-ca.pem"),
    )
    .unwrap();
    let wrong = meta169_ovsdb::TlsFiles {
        private_key: Some(dir.path().join("client.key")),
        certificate: Some(dir.path().join("client.pem")),
        ca_cert: Some(dir.path().join("wrong-ca.pem")),
    };
    let err = Rpc::connect(
        &format!("ssl:127.0.0.1:{port}")
            .parse::<Remote>()
            .unwrap()
            .with_tls(wrong),
    )
    .await
    .err()
    .unwrap();
    assert!(err.to_string().contains("cannot connect"), "{err}");
    drop(server);
}

#[tokio::test]
async fn a_list_of_remotes_moves_on_to_one_that_answers() {
    let dir = temp_dir();
    let server = OvsdbServer::start("sb", OVN_SB_SCHEMA, dir.path());
    let dead: Remote = format!("unix:{}/nothing-here.sock", dir.path().display())
        .parse()
        .unwrap();
    let mut options = MonitorOptions::new("OVN_Southbound", vec![TableMonitor::all("Chassis")]);
    options.max_backoff = Duration::from_millis(200);
    let monitor = Monitor::start_any(vec![dead, server.remote().parse().unwrap()], options);
    monitor.ready(T).await.unwrap();
    assert_eq!(*monitor.state().borrow(), ConnectionState::Connected);
}
