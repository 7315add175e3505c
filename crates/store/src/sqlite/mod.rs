//! The embedded SQLite backend: one file, WAL journal, `synchronous=FULL`
//! so a write that returned survives a crash or power loss. The schema's
//! version is kept in `user_version`. Other processes' writes (`meta169
//! instance` beside `serve`) are found by [`watch`] in the change log.

mod watch;

use crate::changes::{ChangeFeed, ChangeHub};
use crate::schema::{too_new, MIGRATIONS};
use crate::{InstanceSummary, Store, StoreError, StoredInstance, MAX_PASSWORD_LEN};
use async_trait::async_trait;
use meta169_http::mac::{format_mac, parse_mac};
use meta169_tree::Instance;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a writer waits for another process (e.g. `meta169 instance add`
/// while `serve` runs) to release the database.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Change-log entries kept; older ones are pruned by writers. A reader
/// that fell further behind than this starts over.
pub const CHANGE_LOG_KEEP: i64 = 10_000;

/// SQLite-backed [`Store`].
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    /// The database file (`None` in memory).
    path: Option<Arc<std::path::PathBuf>>,
    hub: Arc<ChangeHub>,
}

impl SqliteStore {
    /// Open (creating if needed) the database file and migrate it.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            if !parent.exists() {
                return Err(StoreError::Backend(format!(
                    "directory {} does not exist; create it or choose another store path",
                    parent.display()
                )));
            }
        }
        let conn = Connection::open(path)
            .map_err(|e| StoreError::Backend(format!("cannot open {}: {e}", path.display())))?;
        let mut store = Self::setup(conn)?;
        store.path = Some(Arc::new(path.to_path_buf()));
        Ok(store)
    }

    /// A private database that lives as long as the store (demo, tests).
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::setup(Connection::open_in_memory()?)
    }

    fn setup(mut conn: Connection) -> Result<Self, StoreError> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // WAL keeps readers off the writer's back; FULL makes commits durable.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrate(&mut conn)?;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            path: None,
            hub: Arc::new(ChangeHub::new()),
        })
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        let conn = self.lock()?;
        Ok(conn.pragma_query_value(None, "user_version", |r| r.get(0))?)
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Connection>, StoreError> {
        self.conn
            .lock()
            .map_err(|_| StoreError::Backend("store lock poisoned by an earlier panic".into()))
    }

    /// Run blocking database work off the async runtime.
    async fn with_conn<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = this.lock()?;
            work(&mut conn)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("store task failed: {e}")))?
    }
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let current: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if current > MIGRATIONS.len() as i64 {
        return Err(too_new(current));
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(migration.sqlite)?;
        tx.pragma_update(None, "user_version", index as i64 + 1)?;
        tx.commit()?;
        tracing::info!(
            version = index + 1,
            step = migration.what,
            "store schema migrated"
        );
    }
    Ok(())
}

/// Keep the change log short; run inside every writing transaction.
fn prune_change_log(tx: &rusqlite::Transaction<'_>) -> Result<(), StoreError> {
    tx.prepare_cached("DELETE FROM changes WHERE seq <= (SELECT max(seq) FROM changes) - ?1")?
        .execute([CHANGE_LOG_KEEP])?;
    Ok(())
}

/// Write one record and its ports inside `tx`; the new revision.
fn write_instance(tx: &rusqlite::Transaction<'_>, instance: &Instance) -> Result<i64, StoreError> {
    instance.validate()?;
    let record = serde_json::to_string(instance)
        .map_err(|e| StoreError::Backend(format!("cannot encode record: {e}")))?;
    let revision: i64 = tx
        .prepare_cached(
            "INSERT INTO instances (uuid, record, revision) VALUES (?1, ?2, 1)
             ON CONFLICT(uuid) DO UPDATE SET record = excluded.record, revision = revision + 1
             RETURNING revision",
        )?
        .query_row(params![instance.uuid, record], |r| r.get(0))?;
    tx.prepare_cached("DELETE FROM ports WHERE instance_uuid = ?1")?
        .execute([&instance.uuid])?;
    for port in &instance.ports {
        let mac = parse_mac(&port.mac)
            .map(|m| format_mac(&m))
            .unwrap_or_default();
        if port.ips.is_empty() {
            tx.prepare_cached(
                "INSERT INTO ports (instance_uuid, network_id, mac, ip) VALUES (?1, ?2, ?3, NULL)",
            )?
            .execute(params![instance.uuid, port.network_id, mac])?;
        }
        for ip in &port.ips {
            let ip = ip.to_string();
            let owner: Option<String> = tx
                .prepare_cached(
                    "SELECT instance_uuid FROM ports WHERE network_id = ?1 AND ip = ?2",
                )?
                .query_row(params![port.network_id, ip], |r| r.get(0))
                .optional()?;
            if let Some(owner) = owner {
                return Err(StoreError::AddressTaken {
                    network_id: port.network_id.clone(),
                    ip,
                    owner,
                });
            }
            tx.prepare_cached(
                "INSERT INTO ports (instance_uuid, network_id, mac, ip) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![instance.uuid, port.network_id, mac, ip])?;
        }
    }
    Ok(revision)
}

fn parse_record(uuid: &str, text: &str) -> Result<Instance, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
        uuid: uuid.to_string(),
        reason: e.to_string(),
    })
}

fn uuids(
    conn: &Connection,
    sql: &str,
    args: &[&dyn rusqlite::ToSql],
) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(args, |r| r.get::<_, String>(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        // An open connection keeps working on a file that was deleted or
        // made unreadable; a fresh read-only open notices.
        let path = self.path.clone();
        self.with_conn(move |conn| {
            if let Some(path) = path {
                let fresh = Connection::open_with_flags(
                    path.as_path(),
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
                )
                .map_err(|e| StoreError::Backend(format!("cannot open {}: {e}", path.display())))?;
                fresh.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))?;
            }
            conn.query_row("SELECT 1", [], |_| Ok(()))?;
            Ok(())
        })
        .await
    }

    async fn put_instance(&self, instance: &Instance) -> Result<i64, StoreError> {
        instance.validate()?;
        let instance = instance.clone();
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let revision = write_instance(&tx, &instance)?;
            prune_change_log(&tx)?;
            tx.commit()?;
            Ok(revision)
        })
        .await
    }

    async fn put_instances(&self, instances: &[Instance]) -> Result<(), StoreError> {
        for instance in instances {
            instance.validate()?;
        }
        let instances = instances.to_vec();
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            for instance in &instances {
                write_instance(&tx, instance)?;
            }
            prune_change_log(&tx)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn get_instance(&self, uuid: &str) -> Result<Option<StoredInstance>, StoreError> {
        let uuid = uuid.to_string();
        self.with_conn(move |conn| {
            let row: Option<(String, String, i64)> = conn
                .prepare_cached("SELECT record, password, revision FROM instances WHERE uuid = ?1")?
                .query_row([&uuid], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()?;
            row.map(|(record, password, revision)| {
                Ok(StoredInstance {
                    instance: parse_record(&uuid, &record)?,
                    password,
                    revision,
                })
            })
            .transpose()
        })
        .await
    }

    async fn delete_instance(&self, uuid: &str) -> Result<bool, StoreError> {
        let uuid = uuid.to_string();
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute("DELETE FROM ports WHERE instance_uuid = ?1", [&uuid])?;
            let n = tx.execute("DELETE FROM instances WHERE uuid = ?1", [&uuid])?;
            prune_change_log(&tx)?;
            tx.commit()?;
            Ok(n > 0)
        })
        .await
    }

    async fn list_instances(&self) -> Result<Vec<InstanceSummary>, StoreError> {
        self.with_conn(|conn| {
            let mut stmt =
                conn.prepare("SELECT uuid, record, revision FROM instances ORDER BY uuid")?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (uuid, record, revision) = row?;
                let instance = parse_record(&uuid, &record)?;
                out.push(InstanceSummary {
                    addresses: instance
                        .ports
                        .iter()
                        .flat_map(|p| p.ips.iter().map(|ip| ip.to_string()))
                        .collect(),
                    uuid,
                    name: instance.name,
                    project_id: instance.project_id,
                    revision,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn find_by_network_ip(
        &self,
        network_id: &str,
        ip: IpAddr,
    ) -> Result<Vec<String>, StoreError> {
        let (network_id, ip) = (network_id.to_string(), ip.to_string());
        self.with_conn(move |conn| {
            uuids(
                conn,
                "SELECT DISTINCT instance_uuid FROM ports WHERE network_id = ?1 AND ip = ?2",
                &[&network_id, &ip],
            )
        })
        .await
    }

    async fn find_by_network_mac(
        &self,
        network_id: &str,
        mac: &str,
    ) -> Result<Vec<String>, StoreError> {
        let Some(mac) = parse_mac(mac).map(|m| format_mac(&m)) else {
            return Ok(Vec::new());
        };
        let network_id = network_id.to_string();
        self.with_conn(move |conn| {
            uuids(
                conn,
                "SELECT DISTINCT instance_uuid FROM ports WHERE network_id = ?1 AND mac = ?2",
                &[&network_id, &mac],
            )
        })
        .await
    }

    async fn find_by_mac(&self, mac: &str) -> Result<Vec<String>, StoreError> {
        let Some(mac) = parse_mac(mac).map(|m| format_mac(&m)) else {
            return Ok(Vec::new());
        };
        self.with_conn(move |conn| {
            uuids(
                conn,
                "SELECT DISTINCT instance_uuid FROM ports WHERE mac = ?1",
                &[&mac],
            )
        })
        .await
    }

    async fn find_by_ip(&self, ip: IpAddr) -> Result<Vec<String>, StoreError> {
        let ip = ip.to_string();
        self.with_conn(move |conn| {
            uuids(
                conn,
                "SELECT DISTINCT instance_uuid FROM ports WHERE ip = ?1",
                &[&ip],
            )
        })
        .await
    }

    async fn set_password_once(&self, uuid: &str, password: &str) -> Result<(), StoreError> {
        if password.chars().count() > MAX_PASSWORD_LEN {
            return Err(StoreError::PasswordTooLong(password.chars().count()));
        }
        let (uuid, password) = (uuid.to_string(), password.to_string());
        self.with_conn(move |conn| {
            // Immediate: the check and the write are one step, so two
            // concurrent POSTs cannot both succeed (Nova's cache allows it).
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let current: Option<String> = tx
                .query_row(
                    "SELECT password FROM instances WHERE uuid = ?1",
                    [&uuid],
                    |r| r.get(0),
                )
                .optional()?;
            match current {
                None => return Err(StoreError::NotFound(uuid)),
                Some(p) if !p.is_empty() => return Err(StoreError::PasswordAlreadySet(uuid)),
                Some(_) => {}
            }
            tx.execute(
                "UPDATE instances SET password = ?2, revision = revision + 1 WHERE uuid = ?1",
                params![uuid, password],
            )?;
            prune_change_log(&tx)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn clear_password(&self, uuid: &str) -> Result<bool, StoreError> {
        let uuid = uuid.to_string();
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n = tx.execute(
                "UPDATE instances SET password = '', revision = revision + 1 WHERE uuid = ?1",
                [&uuid],
            )?;
            prune_change_log(&tx)?;
            tx.commit()?;
            Ok(n > 0)
        })
        .await
    }

    fn changes(&self) -> ChangeFeed {
        let source = match &self.path {
            Some(path) => watch::Source::File(path.as_ref().clone()),
            None => watch::Source::Memory(self.conn.clone()),
        };
        self.hub
            .subscribe(|announcer| watch::spawn(source, announcer))
    }
}
