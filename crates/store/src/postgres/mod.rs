//! The PostgreSQL backend: replicas of `meta169 serve` share one database
//! that operators already run highly available. A pool of connections
//! (deadpool) serves the queries; one more connection per process
//! `LISTEN`s for the changes other replicas make ([`watch`]). Writes are
//! single transactions, and what must happen once (a guest's password) is
//! decided by the database, not by a replica.

pub(crate) mod tls;
mod watch;

use crate::changes::{ChangeFeed, ChangeHub};
use crate::error::postgres_message;
use crate::schema::{too_new, MIGRATIONS};
use crate::url::PostgresUrl;
use crate::{InstanceSummary, Store, StoreError, StoredInstance, MAX_PASSWORD_LEN};
use async_trait::async_trait;
use deadpool_postgres::{
    GenericClient, Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime, Timeouts,
};
use meta169_http::mac::{format_mac, parse_mac};
use meta169_tree::Instance;
use std::net::IpAddr;
use std::time::Duration;
use tokio_postgres_rustls::MakeRustlsConnect;

/// Connections a process keeps to the database at most. A request served
/// from the cache takes none; a miss takes one for a query or two.
pub const POOL_SIZE: usize = 16;

/// Longest a query waits for a free pooled connection before failing (the
/// request then gets a 500 or, if cached, its cached answer).
const POOL_WAIT: Duration = Duration::from_secs(2);

/// Longest a pooled connection's liveness check may take.
const POOL_RECYCLE: Duration = Duration::from_secs(1);

/// Migrations of replicas starting together take this advisory lock, so
/// one migrates and the others find the work done ("meta169" in ASCII).
const MIGRATION_LOCK: i64 = 0x006d_6574_6131_3639;

/// PostgreSQL-backed [`Store`].
pub struct PostgresStore {
    pool: Pool,
    /// What the change watcher connects with (a connection of its own).
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    hub: ChangeHub,
}

impl PostgresStore {
    /// Connect, check the server answers, and bring the schema up to date.
    pub async fn connect(url: PostgresUrl) -> Result<Self, StoreError> {
        let PostgresUrl { mut config, tls } = url;
        config.ssl_mode(tls.postgres_mode());
        let connector = tls
            .connector()
            .map_err(|e| StoreError::Backend(format!("PostgreSQL TLS: {e}")))?;
        let create = config
            .get_connect_timeout()
            .copied()
            .unwrap_or(crate::DEFAULT_CONNECT_TIMEOUT);
        let manager = Manager::from_config(
            config.clone(),
            connector.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .timeouts(Timeouts {
                wait: Some(POOL_WAIT),
                create: Some(create),
                recycle: Some(POOL_RECYCLE),
            })
            .build()
            .map_err(|e| StoreError::Backend(format!("PostgreSQL pool: {e}")))?;
        let store = PostgresStore {
            pool,
            config,
            tls: connector,
            hub: ChangeHub::new(),
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(pool_error)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS meta169_schema (version BIGINT NOT NULL)")
            .await?;
        let current: i64 = match tx
            .query_opt("SELECT version FROM meta169_schema", &[])
            .await?
        {
            Some(row) => row.get(0),
            None => {
                tx.execute("INSERT INTO meta169_schema (version) VALUES (0)", &[])
                    .await?;
                0
            }
        };
        if current > MIGRATIONS.len() as i64 {
            return Err(too_new(current));
        }
        for (index, migration) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            tx.batch_execute(migration.postgres).await?;
            tracing::info!(
                version = index + 1,
                step = migration.what,
                "store schema migrated"
            );
        }
        tx.execute(
            "UPDATE meta169_schema SET version = $1",
            &[&(MIGRATIONS.len() as i64)],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The schema version of the database.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        let client = self.client().await?;
        Ok(client
            .query_one("SELECT version FROM meta169_schema", &[])
            .await?
            .get(0))
    }

    async fn uuids(
        &self,
        sql: &str,
        args: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<String>, StoreError> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(sql).await?;
        Ok(client
            .query(&stmt, args)
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect())
    }
}

fn pool_error(e: PoolError) -> StoreError {
    StoreError::Backend(match e {
        PoolError::Backend(e) => postgres_message(&e),
        PoolError::Timeout(_) => {
            "PostgreSQL did not answer in time (connecting, or waiting for a free connection)"
                .to_string()
        }
        other => format!("PostgreSQL pool: {other}"),
    })
}

/// Write one record and its ports inside a transaction; the new revision.
async fn write_instance(
    tx: &deadpool_postgres::Transaction<'_>,
    instance: &Instance,
) -> Result<i64, StoreError> {
    let record = serde_json::to_string(instance)
        .map_err(|e| StoreError::Backend(format!("cannot encode record: {e}")))?;
    let upsert = tx
        .prepare_cached(
            "INSERT INTO instances (uuid, record, revision) VALUES ($1, $2, 1)
             ON CONFLICT (uuid) DO UPDATE SET record = excluded.record, revision = instances.revision + 1
             RETURNING revision",
        )
        .await?;
    let revision: i64 = tx
        .query_one(&upsert, &[&instance.uuid, &record])
        .await?
        .get(0);
    tx.execute(
        "DELETE FROM ports WHERE instance_uuid = $1",
        &[&instance.uuid],
    )
    .await?;
    let without_ip = tx
        .prepare_cached(
            "INSERT INTO ports (instance_uuid, network_id, mac, ip) VALUES ($1, $2, $3, NULL)",
        )
        .await?;
    // The unique index decides between concurrent writers: a second one
    // inserts nothing and learns the owner below.
    let with_ip = tx
        .prepare_cached(
            "INSERT INTO ports (instance_uuid, network_id, mac, ip) VALUES ($1, $2, $3, $4)
             ON CONFLICT (network_id, ip) WHERE ip IS NOT NULL DO NOTHING",
        )
        .await?;
    for port in &instance.ports {
        let mac = parse_mac(&port.mac)
            .map(|m| format_mac(&m))
            .unwrap_or_default();
        if port.ips.is_empty() {
            tx.execute(&without_ip, &[&instance.uuid, &port.network_id, &mac])
                .await?;
        }
        for ip in &port.ips {
            let ip = ip.to_string();
            let inserted = tx
                .execute(&with_ip, &[&instance.uuid, &port.network_id, &mac, &ip])
                .await?;
            if inserted == 0 {
                let owner: String = tx
                    .query_opt(
                        "SELECT instance_uuid FROM ports WHERE network_id = $1 AND ip = $2",
                        &[&port.network_id, &ip],
                    )
                    .await?
                    .map(|row| row.get(0))
                    .unwrap_or_default();
                return Err(StoreError::AddressTaken {
                    network_id: port.network_id.clone(),
                    ip,
                    owner,
                });
            }
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

#[async_trait]
impl Store for PostgresStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.client().await?.simple_query("SELECT 1").await?;
        Ok(())
    }

    async fn put_instance(&self, instance: &Instance) -> Result<i64, StoreError> {
        instance.validate()?;
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let revision = write_instance(&tx, instance).await?;
        tx.commit().await?;
        Ok(revision)
    }

    async fn put_instances(&self, instances: &[Instance]) -> Result<(), StoreError> {
        for instance in instances {
            instance.validate()?;
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        for instance in instances {
            write_instance(&tx, instance).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn get_instance(&self, uuid: &str) -> Result<Option<StoredInstance>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT record, password, revision FROM instances WHERE uuid = $1")
            .await?;
        let Some(row) = client.query_opt(&stmt, &[&uuid]).await? else {
            return Ok(None);
        };
        let record: &str = row.get(0);
        Ok(Some(StoredInstance {
            instance: parse_record(uuid, record)?,
            password: row.get(1),
            revision: row.get(2),
        }))
    }

    async fn delete_instance(&self, uuid: &str) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute("DELETE FROM ports WHERE instance_uuid = $1", &[&uuid])
            .await?;
        let n = tx
            .execute("DELETE FROM instances WHERE uuid = $1", &[&uuid])
            .await?;
        tx.commit().await?;
        Ok(n > 0)
    }

    async fn list_instances(&self) -> Result<Vec<InstanceSummary>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT uuid, record, revision FROM instances ORDER BY uuid",
                &[],
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let uuid: String = row.get(0);
            let instance = parse_record(&uuid, row.get(1))?;
            out.push(InstanceSummary {
                addresses: instance
                    .ports
                    .iter()
                    .flat_map(|p| p.ips.iter().map(|ip| ip.to_string()))
                    .collect(),
                uuid,
                name: instance.name,
                project_id: instance.project_id,
                revision: row.get(2),
            });
        }
        Ok(out)
    }

    async fn find_by_network_ip(
        &self,
        network_id: &str,
        ip: IpAddr,
    ) -> Result<Vec<String>, StoreError> {
        self.uuids(
            "SELECT DISTINCT instance_uuid FROM ports WHERE network_id = $1 AND ip = $2",
            &[&network_id, &ip.to_string()],
        )
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
        self.uuids(
            "SELECT DISTINCT instance_uuid FROM ports WHERE network_id = $1 AND mac = $2",
            &[&network_id, &mac],
        )
        .await
    }

    async fn find_by_mac(&self, mac: &str) -> Result<Vec<String>, StoreError> {
        let Some(mac) = parse_mac(mac).map(|m| format_mac(&m)) else {
            return Ok(Vec::new());
        };
        self.uuids(
            "SELECT DISTINCT instance_uuid FROM ports WHERE mac = $1",
            &[&mac],
        )
        .await
    }

    async fn find_by_ip(&self, ip: IpAddr) -> Result<Vec<String>, StoreError> {
        self.uuids(
            "SELECT DISTINCT instance_uuid FROM ports WHERE ip = $1",
            &[&ip.to_string()],
        )
        .await
    }

    async fn set_password_once(&self, uuid: &str, password: &str) -> Result<(), StoreError> {
        if password.chars().count() > MAX_PASSWORD_LEN {
            return Err(StoreError::PasswordTooLong(password.chars().count()));
        }
        let client = self.client().await?;
        // One statement: of two replicas racing, the row lock makes the
        // second re-check `password = ''` after the first commits, and
        // it updates nothing.
        let stmt = client
            .prepare_cached(
                "UPDATE instances SET password = $2, revision = revision + 1
                 WHERE uuid = $1 AND password = ''",
            )
            .await?;
        if client.execute(&stmt, &[&uuid, &password]).await? == 1 {
            return Ok(());
        }
        let exists = client
            .query_opt("SELECT 1 FROM instances WHERE uuid = $1", &[&uuid])
            .await?
            .is_some();
        Err(if exists {
            StoreError::PasswordAlreadySet(uuid.to_string())
        } else {
            StoreError::NotFound(uuid.to_string())
        })
    }

    async fn clear_password(&self, uuid: &str) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE instances SET password = '', revision = revision + 1 WHERE uuid = $1",
                &[&uuid],
            )
            .await?;
        Ok(n > 0)
    }

    fn changes(&self) -> ChangeFeed {
        self.hub
            .subscribe(|announcer| watch::spawn(self.config.clone(), self.tls.clone(), announcer))
    }
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").finish_non_exhaustive()
    }
}
