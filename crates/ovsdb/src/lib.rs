//! An OVSDB client (RFC 7047 plus the `monitor_cond` extension) for the
//! agent: connect over `tcp:`, `unix:` or `ssl:`, `transact`, keep a local
//! replica of monitored tables current through conditional monitors,
//! answer and send `echo`, reconnect with backoff and resync.
//!
//! Written here because no maintained Rust crate does this: the crates.io
//! OVSDB clients found either lack conditional monitoring and update2
//! diffs, or are unmaintained. The protocol is small (JSON-RPC 1.0 over a
//! stream); what is subtle is applying `update2` diffs, which needs the
//! schema's column types ([`schema`]).

pub mod datum;
pub mod framing;
mod monitor;
mod remote;
mod rpc;
pub mod schema;

pub use datum::{Datum, Row};
pub use monitor::{ConnectionState, Monitor, MonitorOptions, Replica, TableMonitor};
pub use remote::{Remote, TlsFiles};
pub use rpc::{Notification, Rpc};

/// What can go wrong talking to an OVSDB server.
#[derive(Debug, thiserror::Error)]
pub enum OvsdbError {
    /// The remote string is not `tcp:HOST:PORT`, `unix:PATH` or `ssl:HOST:PORT`.
    #[error("bad OVSDB remote {0:?}: use tcp:HOST:PORT, unix:PATH or ssl:HOST:PORT")]
    BadRemote(String),
    /// Connecting failed.
    #[error("cannot connect to {remote}: {reason}")]
    Connect { remote: String, reason: String },
    /// TLS files could not be used.
    #[error("TLS setup for {remote}: {reason}")]
    Tls { remote: String, reason: String },
    /// The connection closed or broke.
    #[error("connection to the OVSDB server closed")]
    Closed,
    /// The server answered a request with an error.
    #[error("OVSDB {method} failed: {error}")]
    Server { method: String, error: String },
    /// A transaction operation failed.
    #[error("transaction failed: {0}")]
    Transaction(String),
    /// The server sent something that is not OVSDB.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// No answer in time.
    #[error("no answer from the OVSDB server within {0:?}")]
    Timeout(std::time::Duration),
    /// Not connected right now (a monitor is reconnecting).
    #[error("not connected to the OVSDB server (reconnecting)")]
    NotConnected,
    /// The server answers but holds no such database: the wrong address,
    /// which retrying will not fix.
    #[error("{remote} answers but has no {db} database (it has: {found}); check the remote")]
    NoSuchDatabase {
        remote: String,
        db: String,
        found: String,
    },
}
