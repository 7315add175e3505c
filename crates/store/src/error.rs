//! What can go wrong in a store, each message saying what to do.

use crate::MAX_PASSWORD_LEN;
use meta169_tree::InvalidInstance;

/// What can go wrong in a store.
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
    /// The store URL is not understood; the message names the accepted forms.
    #[error("store URL {url:?}: {why}; use sqlite:/path/to/meta169.db (or sqlite:///path/to/meta169.db), sqlite::memory:, or postgres://user@host/database")]
    BadUrl { url: String, why: String },
    /// The database failed or cannot be reached.
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

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        StoreError::Backend(postgres_message(&e))
    }
}

/// A PostgreSQL error with its cause: tokio-postgres's own text is often
/// only "db error" or "error connecting to server", the useful part
/// (which user, which host, what the server said) is in the source chain.
pub(crate) fn postgres_message(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut text = format!("PostgreSQL: {}", db.message());
        if let Some(detail) = db.detail() {
            text.push_str(&format!(" ({detail})"));
        }
        return text;
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
