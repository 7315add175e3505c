//! JSON-RPC 1.0 over one OVSDB stream: requests matched to replies by id,
//! `echo` requests from the server answered, notifications handed on.
//! Messages are framed by [`crate::framing`].

use crate::framing::Framer;
use crate::remote::{Remote, Stream};
use crate::OvsdbError;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot};

/// Largest single message accepted from a server (a full Southbound dump of
/// a large cloud fits; a runaway peer does not exhaust memory).
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;
/// Bytes read from the socket at a time.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// A notification from the server (`update`, `update2`, `locked`, ...).
#[derive(Debug, Clone)]
pub struct Notification {
    pub method: String,
    pub params: Value,
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, OvsdbError>>>>>;

/// One connection.
pub struct Rpc {
    writer: tokio::sync::Mutex<WriteHalf<Box<dyn Stream>>>,
    pending: Pending,
    next_id: AtomicU64,
    /// When the last message arrived, for inactivity probes.
    last_seen: Arc<Mutex<Instant>>,
    remote: String,
}

impl Rpc {
    /// Connect and start reading. Notifications arrive on the receiver; it
    /// closes when the connection does.
    pub async fn connect(
        remote: &Remote,
    ) -> Result<(Arc<Rpc>, mpsc::UnboundedReceiver<Notification>), OvsdbError> {
        let stream = remote.open().await?;
        let (reader, writer) = tokio::io::split(stream);
        let (tx, rx) = mpsc::unbounded_channel();
        let rpc = Arc::new(Rpc {
            writer: tokio::sync::Mutex::new(writer),
            pending: Arc::new(Mutex::new(HashMap::new())),
            next_id: AtomicU64::new(1),
            last_seen: Arc::new(Mutex::new(Instant::now())),
            remote: remote.to_string(),
        });
        tokio::spawn(read_loop(
            reader,
            Arc::downgrade(&rpc),
            rpc.pending.clone(),
            rpc.last_seen.clone(),
            tx,
        ));
        Ok((rpc, rx))
    }

    pub fn remote(&self) -> &str {
        &self.remote
    }

    /// Time since the server last sent anything.
    pub fn idle_for(&self) -> Duration {
        self.last_seen
            .lock()
            .map(|t| t.elapsed())
            .unwrap_or_default()
    }

    pub(crate) async fn send(&self, message: &Value) -> Result<(), OvsdbError> {
        let mut bytes =
            serde_json::to_vec(message).map_err(|e| OvsdbError::Protocol(e.to_string()))?;
        bytes.push(b'\n');
        let mut writer = self.writer.lock().await;
        writer
            .write_all(&bytes)
            .await
            .map_err(|_| OvsdbError::Closed)?;
        writer.flush().await.map_err(|_| OvsdbError::Closed)
    }

    /// Call `method` and wait for its result.
    pub async fn call(
        &self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, OvsdbError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .map_err(|_| OvsdbError::Closed)?
            .insert(id, tx);
        let sent = self
            .send(&json!({"method": method, "params": params, "id": id}))
            .await;
        if let Err(e) = sent {
            if let Ok(mut p) = self.pending.lock() {
                p.remove(&id);
            }
            return Err(e);
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Ok(result))) => Ok(result),
            Ok(Ok(Err(OvsdbError::Server { error, .. }))) => Err(OvsdbError::Server {
                method: method.to_string(),
                error,
            }),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(OvsdbError::Closed),
            Err(_) => {
                if let Ok(mut p) = self.pending.lock() {
                    p.remove(&id);
                }
                Err(OvsdbError::Timeout(timeout))
            }
        }
    }

    /// The server's databases (`list_dbs`); empty if it does not say.
    pub async fn databases(&self, timeout: Duration) -> Vec<String> {
        match self.call("list_dbs", json!([]), timeout).await {
            Ok(Value::Array(names)) => names
                .into_iter()
                .filter_map(|n| n.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// `transact` on `db`; fails if any operation failed.
    pub async fn transact(
        &self,
        db: &str,
        operations: Vec<Value>,
        timeout: Duration,
    ) -> Result<Vec<Value>, OvsdbError> {
        let mut params = vec![json!(db)];
        let count = operations.len();
        params.extend(operations);
        let result = self.call("transact", Value::Array(params), timeout).await?;
        let results = result
            .as_array()
            .cloned()
            .ok_or_else(|| OvsdbError::Protocol("transact result is not an array".into()))?;
        for (i, r) in results.iter().enumerate() {
            if let Some(error) = r.get("error").filter(|e| !e.is_null()) {
                let details = r.get("details").and_then(Value::as_str).unwrap_or("");
                let which = if i < count {
                    format!("operation {i}")
                } else {
                    "commit".to_string()
                };
                return Err(OvsdbError::Transaction(
                    format!("{which}: {error} {details}").trim().to_string(),
                ));
            }
        }
        Ok(results)
    }
}

async fn read_loop(
    mut reader: ReadHalf<Box<dyn Stream>>,
    rpc: std::sync::Weak<Rpc>,
    pending: Pending,
    last_seen: Arc<Mutex<Instant>>,
    notifications: mpsc::UnboundedSender<Notification>,
) {
    let mut framer = Framer::new(MAX_MESSAGE_BYTES);
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    'read: loop {
        let n = match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Ok(mut t) = last_seen.lock() {
            *t = Instant::now();
        }
        framer.push(&chunk[..n]);
        loop {
            match framer.next_message() {
                Ok(Some(message)) => {
                    if !dispatch(message, &rpc, &pending, &notifications).await {
                        break 'read;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!("{e}; dropping the connection");
                    break 'read;
                }
            }
        }
    }
    // Wake everyone still waiting.
    if let Ok(mut p) = pending.lock() {
        for (_, tx) in p.drain() {
            let _ = tx.send(Err(OvsdbError::Closed));
        }
    }
}

/// Handle one message; `false` ends the connection.
async fn dispatch(
    message: Value,
    rpc: &std::sync::Weak<Rpc>,
    pending: &Pending,
    notifications: &mpsc::UnboundedSender<Notification>,
) -> bool {
    // Fields are moved out, not copied: a snapshot is one large message.
    let Value::Object(mut message) = message else {
        return true; // the framer hands on objects only
    };
    let mut take = |key: &str| message.remove(key).unwrap_or(Value::Null);
    let method = match take("method") {
        Value::String(method) => Some(method),
        _ => None,
    };
    let id = take("id");
    match method {
        Some(method) if method == "echo" => {
            // The server's inactivity probe: answer with the same params.
            if let Some(rpc) = rpc.upgrade() {
                let params = match take("params") {
                    Value::Null => json!([]),
                    params => params,
                };
                let reply = json!({"result": params, "error": null, "id": id});
                return rpc.send(&reply).await.is_ok();
            }
            false
        }
        Some(method) => {
            let params = take("params");
            let _ = notifications.send(Notification { method, params });
            true
        }
        None => {
            let Some(id) = id.as_u64() else {
                return true; // a reply to something we did not send with a numeric id
            };
            let tx = pending.lock().ok().and_then(|mut p| p.remove(&id));
            if let Some(tx) = tx {
                let error = take("error");
                let result = if error.is_null() {
                    Ok(take("result"))
                } else {
                    Err(OvsdbError::Server {
                        method: String::new(),
                        error: error.to_string(),
                    })
                };
                let _ = tx.send(result);
            }
            true
        }
    }
}
