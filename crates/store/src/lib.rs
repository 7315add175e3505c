//! Where meta169 keeps instance records, their ports ((network, IP, MAC) →
//! instance) and guest-posted passwords: one trait, [`Store`], with an
//! embedded SQLite backend (the default, one process) and a PostgreSQL
//! backend (replicas sharing one database), the same schema and behaviour
//! on both. A store also tells its users what other processes changed
//! ([`ChangeFeed`]), so caches in front of it stay fresh.

mod changes;
mod error;
mod postgres;
mod schema;
mod sqlite;
mod url;

use async_trait::async_trait;
use meta169_tree::Instance;
use std::net::IpAddr;
use std::sync::Arc;

pub use changes::{Change, ChangeFeed, Freshness, CHANGE_BACKLOG};
pub use error::StoreError;
pub use postgres::tls::SslMode;
pub use postgres::{PostgresStore, POOL_SIZE};
pub use schema::latest_version;
pub use sqlite::SqliteStore;
pub use url::{redact, StoreUrl, DEFAULT_CONNECT_TIMEOUT};

/// Longest password a guest may store: Nova keeps 4 chunks of 255 characters.
pub const MAX_PASSWORD_LEN: usize = 1020;

/// A record as stored, with what the guest or the store added to it.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredInstance {
    pub instance: Instance,
    /// The guest-posted password; empty when none.
    pub password: String,
    /// Increases on every write of the record.
    pub revision: i64,
}

/// One line of `instance list`.
#[derive(Clone, Debug, PartialEq)]
pub struct InstanceSummary {
    pub uuid: String,
    pub name: String,
    pub project_id: String,
    pub addresses: Vec<String>,
    pub revision: i64,
}

/// The operations the API, the admin side and the command line need.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Create or replace a record and its ports, durably. Returns the new revision.
    async fn put_instance(&self, instance: &Instance) -> Result<i64, StoreError>;
    /// Create or replace many records in one transaction (imports): all
    /// are written or none.
    async fn put_instances(&self, instances: &[Instance]) -> Result<(), StoreError>;
    /// Load a record.
    async fn get_instance(&self, uuid: &str) -> Result<Option<StoredInstance>, StoreError>;
    /// Delete a record and its ports; `false` when there was none.
    async fn delete_instance(&self, uuid: &str) -> Result<bool, StoreError>;
    /// Every record, briefly, ordered by uuid.
    async fn list_instances(&self) -> Result<Vec<InstanceSummary>, StoreError>;
    /// Instances that have `ip` on `network_id`.
    async fn find_by_network_ip(
        &self,
        network_id: &str,
        ip: IpAddr,
    ) -> Result<Vec<String>, StoreError>;
    /// Instances that have a port with `mac` on `network_id` (IPv6 link-local guests).
    async fn find_by_network_mac(
        &self,
        network_id: &str,
        mac: &str,
    ) -> Result<Vec<String>, StoreError>;
    /// Instances that have `ip` on any network (standalone mode).
    async fn find_by_ip(&self, ip: IpAddr) -> Result<Vec<String>, StoreError>;
    /// Instances that have a port with `mac` on any network (standalone
    /// mode, identity by MAC).
    async fn find_by_mac(&self, mac: &str) -> Result<Vec<String>, StoreError>;
    /// Store a guest's password unless one is set; durable before it returns.
    async fn set_password_once(&self, uuid: &str, password: &str) -> Result<(), StoreError>;
    /// Clear the password (administrator side); `false` when no such instance.
    async fn clear_password(&self, uuid: &str) -> Result<bool, StoreError>;
    /// Is the store there and answering?
    async fn ping(&self) -> Result<(), StoreError>;
    /// Follow changes made by any process, this one included. The watcher
    /// behind the feed starts with the first subscriber.
    fn changes(&self) -> ChangeFeed;
}

/// Open a store from its URL (see [`StoreUrl`]): connect, and bring the
/// schema up to date.
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match StoreUrl::parse(url)? {
        StoreUrl::SqliteMemory => Arc::new(SqliteStore::open_in_memory()?),
        StoreUrl::SqliteFile(path) => Arc::new(
            tokio::task::spawn_blocking(move || SqliteStore::open(path))
                .await
                .map_err(|e| StoreError::Backend(format!("opening the store failed: {e}")))??,
        ),
        StoreUrl::Postgres(pg) => Arc::new(PostgresStore::connect(*pg).await?),
    })
}
