//! A monitor that stays current: connects, reads the schema, monitors the
//! requested tables (with conditions where the server supports
//! `monitor_cond`, plain `monitor` otherwise), applies updates to a local
//! replica and publishes each new state. On a broken connection it
//! reconnects with backoff and starts from a fresh full snapshot, so the
//! replica never holds stale or duplicate rows.

use crate::datum::Row;
use crate::remote::Remote;
use crate::rpc::{Notification, Rpc};
use crate::schema::Schema;
use crate::OvsdbError;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// One table to monitor.
#[derive(Clone, Debug)]
pub struct TableMonitor {
    pub table: String,
    /// Columns to receive; empty for all.
    pub columns: Vec<String>,
    /// `monitor_cond` clauses (a row is sent if any clause holds); `None`
    /// for every row.
    pub conditions: Option<Vec<Value>>,
}

impl TableMonitor {
    pub fn all(table: &str) -> Self {
        TableMonitor {
            table: table.to_string(),
            columns: Vec::new(),
            conditions: None,
        }
    }

    pub fn columns(mut self, columns: &[&str]) -> Self {
        self.columns = columns.iter().map(|c| c.to_string()).collect();
        self
    }

    pub fn when(mut self, clauses: Vec<Value>) -> Self {
        self.conditions = Some(clauses);
        self
    }
}

#[derive(Clone, Debug)]
pub struct MonitorOptions {
    pub db: String,
    pub tables: Vec<TableMonitor>,
    /// Send an echo when the server has been silent this long (0 = never);
    /// no answer within the same time drops the connection.
    pub probe_interval: Duration,
    /// Longest wait between reconnection attempts.
    pub max_backoff: Duration,
    /// Timeout of each request.
    pub request_timeout: Duration,
}

impl MonitorOptions {
    pub fn new(db: &str, tables: Vec<TableMonitor>) -> Self {
        MonitorOptions {
            db: db.to_string(),
            tables,
            probe_interval: Duration::from_secs(5),
            max_backoff: Duration::from_secs(4),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// The monitored rows: table → uuid → row.
#[derive(Clone, Debug, Default)]
pub struct Replica {
    tables: HashMap<String, HashMap<String, Row>>,
    /// Increases with every published change.
    pub generation: u64,
    /// Increases with every (re)connection's full snapshot.
    pub snapshots: u64,
    /// The conditions whose rows this replica holds, by table: those of the
    /// snapshot, then of each `monitor_cond_change` the server acknowledged,
    /// recorded once the rows it brought are applied.
    conditions: HashMap<String, Vec<Value>>,
    /// Monitored with plain `monitor` (a server without `monitor_cond`):
    /// every row arrives, whatever the conditions.
    unconditional: bool,
}

impl Replica {
    /// Rows of a table.
    pub fn rows(&self, table: &str) -> impl Iterator<Item = (&String, &Row)> {
        self.tables.get(table).into_iter().flat_map(|t| t.iter())
    }

    pub fn row(&self, table: &str, uuid: &str) -> Option<&Row> {
        self.tables.get(table)?.get(uuid)
    }

    pub fn len(&self, table: &str) -> usize {
        self.tables.get(table).map_or(0, HashMap::len)
    }

    pub fn is_empty(&self) -> bool {
        self.tables.values().all(HashMap::is_empty)
    }

    /// Does this replica hold every row of `table` that `clauses` select?
    /// A reader that derives a table's conditions from the rows it has
    /// knows its picture is whole when this holds for what it derived.
    pub fn reflects_conditions(&self, table: &str, clauses: &[Value]) -> bool {
        self.unconditional
            || self
                .conditions
                .get(table)
                .is_some_and(|c| c.as_slice() == clauses)
    }

    /// Apply an `update2` (or, with `version2` false, an `update`)
    /// table-updates object: what the monitor does with each notification,
    /// public so recorded notifications can be played back.
    pub fn apply_update(&mut self, schema: &Schema, updates: &Value, version2: bool) {
        apply(self, schema, updates, version2);
    }

    /// Record that the rows of `clauses` on `table` are now applied (the
    /// server acknowledged the condition, and its updates are in).
    pub fn record_conditions(&mut self, table: &str, clauses: Vec<Value>) {
        self.conditions.insert(table.to_string(), clauses);
    }
}

/// Connection state, for logs and `trace`.
#[derive(Clone, Debug, PartialEq)]
pub enum ConnectionState {
    Connecting,
    Connected,
    Disconnected(String),
    /// Given up: the remote is not what it should be (see
    /// [`OvsdbError::NoSuchDatabase`]).
    Failed(String),
}

impl std::fmt::Display for ConnectionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectionState::Connecting => f.write_str("connecting"),
            ConnectionState::Connected => f.write_str("connected"),
            ConnectionState::Disconnected(why) => write!(f, "disconnected: {why}"),
            ConnectionState::Failed(why) => write!(f, "failed: {why}"),
        }
    }
}

struct Shared {
    rpc: RwLock<Option<Arc<Rpc>>>,
    conditions: Mutex<HashMap<String, Vec<Value>>>,
}

/// A running monitor; dropping it stops the background task.
pub struct Monitor {
    replica: watch::Receiver<Arc<Replica>>,
    state: watch::Receiver<ConnectionState>,
    shared: Arc<Shared>,
    changes: mpsc::UnboundedSender<(String, Vec<Value>)>,
    db: String,
    request_timeout: Duration,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const MONITOR_ID: &str = "meta169";

impl Monitor {
    /// Start monitoring; returns at once, the first snapshot follows.
    pub fn start(remote: Remote, options: MonitorOptions) -> Monitor {
        Self::start_any(vec![remote], options)
    }

    /// Like [`Monitor::start`] with several remotes (the members of a
    /// clustered database, as `ovn_sb_connection` lists them): a failed or
    /// lost connection moves on to the next one.
    pub fn start_any(remotes: Vec<Remote>, options: MonitorOptions) -> Monitor {
        let (replica_tx, replica) = watch::channel(Arc::new(Replica::default()));
        let (state_tx, state) = watch::channel(ConnectionState::Connecting);
        let (changes, changes_rx) = mpsc::unbounded_channel();
        let conditions = options
            .tables
            .iter()
            .filter_map(|t| t.conditions.clone().map(|c| (t.table.clone(), c)))
            .collect();
        let shared = Arc::new(Shared {
            rpc: RwLock::new(None),
            conditions: Mutex::new(conditions),
        });
        let db = options.db.clone();
        let request_timeout = options.request_timeout;
        let task = tokio::spawn(run(
            remotes,
            options,
            shared.clone(),
            replica_tx,
            state_tx,
            changes_rx,
        ));
        Monitor {
            replica,
            state,
            shared,
            changes,
            db,
            request_timeout,
            task,
        }
    }

    /// The current replica.
    pub fn replica(&self) -> Arc<Replica> {
        self.replica.borrow().clone()
    }

    /// A receiver that wakes on every new replica.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Replica>> {
        self.replica.clone()
    }

    pub fn state(&self) -> watch::Receiver<ConnectionState> {
        self.state.clone()
    }

    /// Wait until a snapshot has arrived (or the timeout passes).
    /// Fails at once when the monitor has given up (the remote holds no
    /// such database).
    pub async fn ready(&self, timeout: Duration) -> Result<Arc<Replica>, OvsdbError> {
        let mut rx = self.replica.clone();
        let mut state = self.state.clone();
        let wait = async {
            loop {
                if rx.borrow().snapshots > 0 {
                    return Ok(rx.borrow().clone());
                }
                if let ConnectionState::Failed(why) = &*state.borrow() {
                    return Err(OvsdbError::Protocol(why.clone()));
                }
                let ended = tokio::select! {
                    changed = rx.changed() => changed.is_err(),
                    changed = state.changed() => changed.is_err(),
                };
                if ended {
                    // The monitor has stopped: say why, if it said.
                    return Err(match &*state.borrow() {
                        ConnectionState::Failed(why) => OvsdbError::Protocol(why.clone()),
                        _ => OvsdbError::Closed,
                    });
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| OvsdbError::Timeout(timeout))?
    }

    /// Replace a table's conditions (`monitor_cond_change`); kept for reconnections.
    pub fn set_conditions(&self, table: &str, clauses: Vec<Value>) {
        let _ = self.changes.send((table.to_string(), clauses));
    }

    /// `transact` on this monitor's database over the current connection.
    pub async fn transact(&self, operations: Vec<Value>) -> Result<Vec<Value>, OvsdbError> {
        let rpc = self
            .shared
            .rpc
            .read()
            .ok()
            .and_then(|r| r.clone())
            .ok_or(OvsdbError::NotConnected)?;
        rpc.transact(&self.db, operations, self.request_timeout)
            .await
    }
}

fn monitor_requests(
    options: &MonitorOptions,
    schema: &Schema,
    conditions: &HashMap<String, Vec<Value>>,
    with_conditions: bool,
) -> Value {
    let mut requests = Map::new();
    for t in &options.tables {
        if !schema.has_table(&t.table) {
            tracing::warn!(table = %t.table, db = %options.db, "table not in the server's schema; not monitored");
            continue;
        }
        let mut request = Map::new();
        if !t.columns.is_empty() {
            request.insert("columns".into(), json!(t.columns));
        }
        if with_conditions {
            if let Some(clauses) = conditions.get(&t.table) {
                request.insert("where".into(), json!(clauses));
            }
        }
        requests.insert(t.table.clone(), json!([request]));
    }
    Value::Object(requests)
}

/// Apply an `update` (v1) or `update2` table-updates object.
fn apply(replica: &mut Replica, schema: &Schema, updates: &Value, version2: bool) {
    let Some(tables) = updates.as_object() else {
        return;
    };
    for (table, rows) in tables {
        let Some(rows) = rows.as_object() else {
            continue;
        };
        let target = replica.tables.entry(table.clone()).or_default();
        for (uuid, change) in rows {
            let parse_row = |row: &Value| -> Row {
                row.as_object()
                    .map(|cols| {
                        cols.iter()
                            .map(|(c, v)| (c.clone(), schema.datum(table, c, v)))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            if version2 {
                if let Some(row) = change.get("initial").or_else(|| change.get("insert")) {
                    target.insert(uuid.clone(), parse_row(row));
                } else if let Some(diff) = change.get("modify").and_then(Value::as_object) {
                    let row = target.entry(uuid.clone()).or_default();
                    for (column, value) in diff {
                        let new = schema.apply_diff(table, column, row.get(column), value);
                        row.insert(column.clone(), new);
                    }
                } else if change.get("delete").is_some() {
                    target.remove(uuid);
                }
            } else {
                match change.get("new") {
                    Some(row) if !row.is_null() => {
                        // "new" carries every monitored column of the row.
                        target.insert(uuid.clone(), parse_row(row));
                    }
                    _ => {
                        target.remove(uuid);
                    }
                }
            }
        }
    }
}

/// Apply `first` and every notification already queued behind it; whether
/// any changed the replica.
fn apply_notifications(
    replica: &mut Replica,
    schema: &Schema,
    first: Notification,
    queued: &mut mpsc::UnboundedReceiver<Notification>,
) -> bool {
    let mut changed = false;
    let mut next = Some(first);
    while let Some(Notification { method, params }) = next {
        let version2 = match method.as_str() {
            "update" => Some(false),
            "update2" => Some(true),
            _ => None,
        };
        if let (Some(version2), Some(updates)) = (version2, params.get(1)) {
            apply(replica, schema, updates, version2);
            changed = true;
        }
        next = queued.try_recv().ok();
    }
    changed
}

async fn run(
    remotes: Vec<Remote>,
    options: MonitorOptions,
    shared: Arc<Shared>,
    replica_tx: watch::Sender<Arc<Replica>>,
    state_tx: watch::Sender<ConnectionState>,
    mut changes: mpsc::UnboundedReceiver<(String, Vec<Value>)>,
) {
    let mut backoff = Duration::from_millis(100);
    let mut snapshots = 0u64;
    let mut next = 0usize;
    loop {
        let Some(remote) = remotes.get(next % remotes.len().max(1)).cloned() else {
            let _ = state_tx.send(ConnectionState::Disconnected("no remote configured".into()));
            return;
        };
        next += 1;
        let _ = state_tx.send(ConnectionState::Connecting);
        let result = session(
            &remote,
            &options,
            &shared,
            &replica_tx,
            &state_tx,
            &mut changes,
            &mut snapshots,
            &mut backoff,
        )
        .await;
        if let Ok(mut rpc) = shared.rpc.write() {
            *rpc = None;
        }
        let reason = match result {
            Ok(()) => "closed".to_string(),
            Err(e @ OvsdbError::NoSuchDatabase { .. }) => {
                tracing::error!(db = %options.db, "{e}");
                let _ = state_tx.send(ConnectionState::Failed(e.to_string()));
                return;
            }
            Err(e) => e.to_string(),
        };
        tracing::warn!(remote = %remote, db = %options.db, "OVSDB connection lost ({reason}); reconnecting in {backoff:?}");
        let _ = state_tx.send(ConnectionState::Disconnected(reason));
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(options.max_backoff);
    }
}

#[allow(clippy::too_many_arguments)]
async fn session(
    remote: &Remote,
    options: &MonitorOptions,
    shared: &Shared,
    replica_tx: &watch::Sender<Arc<Replica>>,
    state_tx: &watch::Sender<ConnectionState>,
    changes: &mut mpsc::UnboundedReceiver<(String, Vec<Value>)>,
    snapshots: &mut u64,
    backoff: &mut Duration,
) -> Result<(), OvsdbError> {
    let timeout = options.request_timeout;
    let (rpc, mut notes) = Rpc::connect(remote).await?;
    let schema = match rpc.call("get_schema", json!([options.db]), timeout).await {
        Ok(schema) => Schema::from_json(&schema),
        Err(OvsdbError::Server { error, .. }) if error.contains("unknown database") => {
            return Err(OvsdbError::NoSuchDatabase {
                remote: remote.to_string(),
                db: options.db.clone(),
                found: rpc.databases(timeout).await.join(", "),
            })
        }
        Err(e) => return Err(e),
    };
    // Conditions changed while disconnected are part of the new request.
    while let Ok((table, clauses)) = changes.try_recv() {
        if let Ok(mut c) = shared.conditions.lock() {
            c.insert(table, clauses);
        }
    }
    let conditions = shared
        .conditions
        .lock()
        .map(|c| c.clone())
        .unwrap_or_default();
    let request = monitor_requests(options, &schema, &conditions, true);
    let (initial, version2) = match rpc
        .call(
            "monitor_cond",
            json!([options.db, MONITOR_ID, request]),
            timeout,
        )
        .await
    {
        Ok(initial) => (initial, true),
        Err(OvsdbError::Server { error, .. }) if error.contains("unknown method") => {
            tracing::info!(db = %options.db, "server lacks monitor_cond; monitoring every row with monitor");
            let request = monitor_requests(options, &schema, &conditions, false);
            (
                rpc.call("monitor", json!([options.db, MONITOR_ID, request]), timeout)
                    .await?,
                false,
            )
        }
        Err(e) => return Err(e),
    };
    // A fresh snapshot replaces everything: nothing stale, nothing twice.
    let mut replica = Replica {
        conditions: conditions.clone(),
        unconditional: !version2,
        ..Replica::default()
    };
    apply(&mut replica, &schema, &initial, version2);
    *snapshots += 1;
    replica.snapshots = *snapshots;
    replica.generation = replica_tx.borrow().generation + 1;
    let _ = replica_tx.send(Arc::new(replica.clone()));
    if let Ok(mut slot) = shared.rpc.write() {
        *slot = Some(rpc.clone());
    }
    let _ = state_tx.send(ConnectionState::Connected);
    *backoff = Duration::from_millis(100);
    tracing::info!(remote = %remote, db = %options.db, rows = replica.tables.values().map(HashMap::len).sum::<usize>(), "OVSDB monitor synchronised");

    let mut probe = tokio::time::interval(if options.probe_interval.is_zero() {
        Duration::from_secs(3600)
    } else {
        options.probe_interval
    });
    probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            note = notes.recv() => {
                let Some(note) = note else { return Ok(()) };
                if apply_notifications(&mut replica, &schema, note, &mut notes) {
                    replica.generation += 1;
                    let _ = replica_tx.send(Arc::new(replica.clone()));
                }
            }
            change = changes.recv() => {
                let Some(first) = change else { return Ok(()) };
                // Changes queued meanwhile supersede earlier ones for their
                // table: one request carries the latest of each.
                let mut latest: Vec<(String, Vec<Value>)> = vec![first];
                while let Ok((table, clauses)) = changes.try_recv() {
                    match latest.iter_mut().find(|(t, _)| *t == table) {
                        Some(slot) => slot.1 = clauses,
                        None => latest.push((table, clauses)),
                    }
                }
                if let Ok(mut c) = shared.conditions.lock() {
                    for (table, clauses) in &latest {
                        c.insert(table.clone(), clauses.clone());
                    }
                }
                if version2 {
                    let update: Map<String, Value> = latest
                        .iter()
                        .map(|(table, clauses)| (table.clone(), json!([{"where": clauses}])))
                        .collect();
                    rpc.call("monitor_cond_change", json!([MONITOR_ID, MONITOR_ID, update]), timeout).await?;
                    // The server sends the rows new conditions bring before
                    // its reply: they are queued now. Apply them, then say
                    // the replica reflects the new conditions.
                    if let Ok(note) = notes.try_recv() {
                        apply_notifications(&mut replica, &schema, note, &mut notes);
                    }
                    for (table, clauses) in latest {
                        replica.record_conditions(&table, clauses);
                    }
                    replica.generation += 1;
                    let _ = replica_tx.send(Arc::new(replica.clone()));
                }
            }
            _ = probe.tick(), if !options.probe_interval.is_zero() => {
                if rpc.idle_for() >= options.probe_interval {
                    rpc.call("echo", json!(["meta169"]), options.probe_interval).await?;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Schema {
        Schema::from_json(
            &json!({"name": "T", "tables": {"Port_Binding": {"columns": {
                "chassis": {"type": {"key": {"type": "uuid"}, "min": 0, "max": 1}},
                "logical_port": {"type": "string"}
            }}}}),
        )
    }

    #[test]
    fn plain_monitor_updates_replace_rows() {
        // The `monitor` (v1) form, used where the server lacks monitor_cond.
        let mut replica = Replica::default();
        let s = schema();
        apply(
            &mut replica,
            &s,
            &json!({"Port_Binding": {"u1": {"new": {"logical_port": "a", "chassis": ["uuid", "c1"]}}}}),
            false,
        );
        assert_eq!(
            replica.row("Port_Binding", "u1").unwrap()["chassis"].uuids(),
            vec!["c1"]
        );
        apply(
            &mut replica,
            &s,
            &json!({"Port_Binding": {"u1": {"old": {"chassis": ["uuid", "c1"]}, "new": {"logical_port": "a", "chassis": ["set", []]}}}}),
            false,
        );
        assert!(replica.row("Port_Binding", "u1").unwrap()["chassis"]
            .uuids()
            .is_empty());
        apply(
            &mut replica,
            &s,
            &json!({"Port_Binding": {"u1": {"old": {"logical_port": "a"}}}}),
            false,
        );
        assert!(replica.row("Port_Binding", "u1").is_none());
    }

    #[test]
    fn update2_modify_and_delete() {
        let mut replica = Replica::default();
        let s = schema();
        apply(
            &mut replica,
            &s,
            &json!({"Port_Binding": {"u1": {"initial": {"logical_port": "a"}}}}),
            true,
        );
        apply(
            &mut replica,
            &s,
            &json!({"Port_Binding": {"u1": {"modify": {"chassis": ["uuid", "c2"]}}}}),
            true,
        );
        assert_eq!(
            replica.row("Port_Binding", "u1").unwrap()["chassis"].uuids(),
            vec!["c2"]
        );
        assert_eq!(
            replica.row("Port_Binding", "u1").unwrap()["logical_port"].as_str(),
            Some("a")
        );
        apply(
            &mut replica,
            &s,
            &json!({"Port_Binding": {"u1": {"delete": null}}}),
            true,
        );
        assert_eq!(replica.len("Port_Binding"), 0);
    }
}

#[cfg(test)]
mod remote_list_tests {
    use super::*;

    #[tokio::test]
    async fn an_empty_remote_list_reports_instead_of_spinning() {
        let monitor = Monitor::start_any(Vec::new(), MonitorOptions::new("X", Vec::new()));
        let mut state = monitor.state();
        let reached = tokio::time::timeout(
            Duration::from_secs(5),
            state.wait_for(|s| matches!(s, ConnectionState::Disconnected(_))),
        )
        .await;
        assert!(reached.is_ok());
    }
}
