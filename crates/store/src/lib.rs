//! Where meta169 keeps instance records, their ports ((network, IP, MAC) →
//! instance) and guest-posted passwords. One trait, [`Store`], so that
//! other backends can follow; today the embedded SQLite backend is the only
//! one, and a `postgres://` URL is refused with a message saying so.

mod sqlite;

use async_trait::async_trait;
use meta169_tree::{Instance, InvalidInstance};
use std::net::IpAddr;
use std::sync::Arc;

pub use sqlite::SqliteStore;

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

/// What can go wrong in a store. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The record failed validation.
    #[error("invalid instance record: {0}")]
    Invalid(#[from] InvalidInstance),
    /// No instance with that uuid.
    #[error("no instance with uuid {0}")]
    NotFound(String),
    /// A port address already belongs to another instance.
    #[error("address {ip} on network {network_id} already belongs to instance {owner}; remove it there first")]
    AddressTaken {
        network_id: String,
        ip: String,
        owner: String,
    },
    /// A password is already set; Nova answers 409 to a second POST.
    #[error("a password is already set for instance {0}; an administrator must clear it first")]
    PasswordAlreadySet(String),
    /// Password over [`MAX_PASSWORD_LEN`].
    #[error("password is {0} characters; the limit is {MAX_PASSWORD_LEN}")]
    PasswordTooLong(usize),
    /// The store URL is not understood.
    #[error("unsupported store URL {0:?}: use sqlite:///path/to/meta169.db, a plain file path, or sqlite::memory:")]
    UnsupportedUrl(String),
    /// The database failed.
    #[error("store backend error: {0}")]
    Backend(String),
    /// A stored record no longer parses (written by a newer meta169?).
    #[error("stored record of {uuid} is unreadable: {reason}")]
    Corrupt { uuid: String, reason: String },
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}

/// The operations the API, the admin side and the command line need.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Create or replace a record and its ports, durably. Returns the new revision.
    async fn put_instance(&self, instance: &Instance) -> Result<i64, StoreError>;
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
    /// Store a guest's password unless one is set; durable before it returns.
    async fn set_password_once(&self, uuid: &str, password: &str) -> Result<(), StoreError>;
    /// Clear the password (administrator side); `false` when no such instance.
    async fn clear_password(&self, uuid: &str) -> Result<bool, StoreError>;
    /// Is the store there and answering? (Readiness.)
    async fn ping(&self) -> Result<(), StoreError>;
}

/// Open a store from its URL: `sqlite:///abs/path.db`, `sqlite://rel.db`,
/// `sqlite::memory:`, or a plain file path.
pub fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    if url == "sqlite::memory:" {
        return Ok(Arc::new(SqliteStore::open_in_memory()?));
    }
    if let Some(path) = url.strip_prefix("sqlite://") {
        return Ok(Arc::new(SqliteStore::open(path)?));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Err(StoreError::Backend(
            "the PostgreSQL backend is not available in this build yet; use sqlite:///path".into(),
        ));
    }
    if url.contains("://") {
        return Err(StoreError::UnsupportedUrl(url.to_string()));
    }
    Ok(Arc::new(SqliteStore::open(url)?))
}
