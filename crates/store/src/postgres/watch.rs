//! Following a PostgreSQL store: one connection per process `LISTEN`s on
//! the channel the schema's trigger notifies, whoever wrote (a replica's
//! admin API, `meta169 instance`, a hand-written `UPDATE`). A heartbeat on
//! the same connection confirms nothing was missed; after a lost
//! connection every cached answer is suspect, so a reconnect announces
//! [`Change::Everything`].

use crate::changes::{Announcer, Change};
use crate::error::postgres_message;
use crate::schema::NOTIFY_CHANNEL;
use futures_util::StreamExt;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;
use tokio_postgres_rustls::MakeRustlsConnect;

/// Time between heartbeats on the listening connection.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

/// A heartbeat not answered within this means the connection is gone.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(3);

/// First wait before reconnecting, doubled per failure up to the maximum.
const RECONNECT_MIN: Duration = Duration::from_millis(250);
const RECONNECT_MAX: Duration = Duration::from_secs(2);

pub(crate) fn spawn(config: tokio_postgres::Config, tls: MakeRustlsConnect, announcer: Announcer) {
    tokio::spawn(run(config, tls, announcer));
}

async fn run(config: tokio_postgres::Config, tls: MakeRustlsConnect, announcer: Announcer) {
    let mut backoff = RECONNECT_MIN;
    let mut down_since: Option<Instant> = None;
    while announcer.wanted() {
        let mut on_listening = || {
            backoff = RECONNECT_MIN;
            if let Some(since) = down_since.take() {
                tracing::info!(
                    after = ?since.elapsed(),
                    "PostgreSQL change notifications resumed; every cached instance is revalidated"
                );
            }
        };
        match session(&config, &tls, &announcer, &mut on_listening).await {
            Ok(()) => return,
            Err(why) => {
                if down_since.is_none() {
                    tracing::warn!("PostgreSQL change notifications lost: {why}; cached answers are served until the database is back");
                    down_since = Some(Instant::now());
                }
                announcer.freshness.fail(why);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RECONNECT_MAX);
            }
        }
    }
}

/// One connection's life: `Ok` when nobody listens any more, `Err` with
/// the reason the connection ended.
async fn session(
    config: &tokio_postgres::Config,
    tls: &MakeRustlsConnect,
    announcer: &Announcer,
    on_listening: &mut impl FnMut(),
) -> Result<(), String> {
    let (client, mut connection) = config
        .connect(tls.clone())
        .await
        .map_err(|e| postgres_message(&e))?;
    let (sender, mut notifications) = mpsc::unbounded_channel();
    // The connection delivers notifications as it reads; it ends when the
    // client is dropped or the server goes away.
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if sender.send(n.payload().to_string()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!("listening connection ended: {}", postgres_message(&e));
                    return;
                }
            }
        }
    });
    let _stop_driver = AbortOnDrop(driver);
    let listening_from = Instant::now();
    client
        .batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}"))
        .await
        .map_err(|e| postgres_message(&e))?;
    announcer.announce(Change::Everything);
    announcer.freshness.confirm(listening_from);
    on_listening();

    let mut heartbeat = tokio::time::interval(HEARTBEAT_INTERVAL);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A notification committed before a heartbeat was sent may arrive just
    // after that heartbeat's answer, but not after the next one's: each
    // answered heartbeat confirms the one before it.
    let mut previous = listening_from;
    loop {
        tokio::select! {
            payload = notifications.recv() => match payload {
                Some(payload) => announcer.announce(parse(&payload)),
                None => return Err("the listening connection closed".into()),
            },
            _ = heartbeat.tick() => {
                if !announcer.wanted() {
                    return Ok(());
                }
                let sent = Instant::now();
                match tokio::time::timeout(HEARTBEAT_TIMEOUT, client.simple_query("SELECT 1")).await {
                    Ok(Ok(_)) => {
                        while let Ok(payload) = notifications.try_recv() {
                            announcer.announce(parse(&payload));
                        }
                        announcer.freshness.confirm(previous);
                        previous = sent;
                    }
                    Ok(Err(e)) => return Err(postgres_message(&e)),
                    Err(_) => return Err(format!("no heartbeat answer within {HEARTBEAT_TIMEOUT:?}")),
                }
            }
        }
    }
}

/// `record <uuid>` or `password <uuid>`; anything else (a hand-sent
/// `NOTIFY` on the channel) makes every cached answer suspect.
fn parse(payload: &str) -> Change {
    match payload.split_once(' ') {
        Some((kind @ ("record" | "password"), uuid)) if !uuid.is_empty() => {
            Change::parse(kind, uuid)
        }
        _ => Change::Everything,
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_name_what_changed() {
        assert_eq!(parse("record u-1"), Change::Record("u-1".into()));
        assert_eq!(parse("password u-1"), Change::Password("u-1".into()));
        assert_eq!(parse("record "), Change::Everything);
        assert_eq!(parse("hello"), Change::Everything);
    }
}
