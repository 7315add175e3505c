//! The embedded SQLite backend: one file, WAL journal, `synchronous=FULL`
//! so a write that returned survives a crash or power loss. Schema changes
//! are numbered migrations applied in order and recorded in `user_version`.

use crate::{InstanceSummary, Store, StoreError, StoredInstance, MAX_PASSWORD_LEN};
use async_trait::async_trait;
use meta169_http::mac::{format_mac, parse_mac};
use meta169_tree::Instance;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Migrations, oldest first; index + 1 is the schema version they produce.
const MIGRATIONS: &[&str] = &[
    // 1: records and ports.
    "CREATE TABLE instances (
        uuid TEXT PRIMARY KEY,
        record TEXT NOT NULL,
        password TEXT NOT NULL DEFAULT '',
        revision INTEGER NOT NULL
     );
     CREATE TABLE ports (
        instance_uuid TEXT NOT NULL REFERENCES instances(uuid) ON DELETE CASCADE,
        network_id TEXT NOT NULL,
        mac TEXT NOT NULL,
        ip TEXT
     );
     CREATE UNIQUE INDEX ports_network_ip ON ports(network_id, ip) WHERE ip IS NOT NULL;
     CREATE INDEX ports_ip ON ports(ip);
     CREATE INDEX ports_network_mac ON ports(network_id, mac);
     CREATE INDEX ports_instance ON ports(instance_uuid);",
];

/// How long a writer waits for another process (e.g. `meta169 instance add`
/// while `serve` runs) to release the database.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// SQLite-backed [`Store`].
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    /// The database file (`None` in memory).
    path: Option<Arc<std::path::PathBuf>>,
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
    let known = MIGRATIONS.len() as i64;
    if current > known {
        return Err(StoreError::Backend(format!(
            "database schema version {current} is newer than this meta169 knows ({known}); upgrade meta169"
        )));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", index as i64 + 1)?;
        tx.commit()?;
        tracing::info!(version = index + 1, "store schema migrated");
    }
    Ok(())
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
        let record = serde_json::to_string(&instance)
            .map_err(|e| StoreError::Backend(format!("cannot encode record: {e}")))?;
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let revision: i64 = tx
                .query_row(
                    "SELECT revision FROM instances WHERE uuid = ?1",
                    [&instance.uuid],
                    |r| r.get(0),
                )
                .optional()?
                .unwrap_or(0)
                + 1;
            tx.execute(
                "INSERT INTO instances (uuid, record, revision) VALUES (?1, ?2, ?3)
                 ON CONFLICT(uuid) DO UPDATE SET record = excluded.record, revision = excluded.revision",
                params![instance.uuid, record, revision],
            )?;
            tx.execute("DELETE FROM ports WHERE instance_uuid = ?1", [&instance.uuid])?;
            for port in &instance.ports {
                let mac = parse_mac(&port.mac).map(|m| format_mac(&m)).unwrap_or_default();
                if port.ips.is_empty() {
                    tx.execute(
                        "INSERT INTO ports (instance_uuid, network_id, mac, ip) VALUES (?1, ?2, ?3, NULL)",
                        params![instance.uuid, port.network_id, mac],
                    )?;
                }
                for ip in &port.ips {
                    let ip = ip.to_string();
                    let owner: Option<String> = tx
                        .query_row(
                            "SELECT instance_uuid FROM ports WHERE network_id = ?1 AND ip = ?2",
                            params![port.network_id, ip],
                            |r| r.get(0),
                        )
                        .optional()?;
                    if let Some(owner) = owner {
                        return Err(StoreError::AddressTaken {
                            network_id: port.network_id.clone(),
                            ip,
                            owner,
                        });
                    }
                    tx.execute(
                        "INSERT INTO ports (instance_uuid, network_id, mac, ip) VALUES (?1, ?2, ?3, ?4)",
                        params![instance.uuid, port.network_id, mac, ip],
                    )?;
                }
            }
            tx.commit()?;
            Ok(revision)
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
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn clear_password(&self, uuid: &str) -> Result<bool, StoreError> {
        let uuid = uuid.to_string();
        self.with_conn(move |conn| {
            let n = conn.execute(
                "UPDATE instances SET password = '', revision = revision + 1 WHERE uuid = ?1",
                [&uuid],
            )?;
            Ok(n > 0)
        })
        .await
    }
}
