//! Following a SQLite store's change log. SQLite has no notifications
//! across processes, so a task polls the log (an indexed read of the
//! rows past the last one seen) a few times a second. Each poll opens the
//! file afresh: an open connection keeps working on a file that was deleted
//! or replaced, and a fresh one notices, so a failed poll is also what
//! makes readiness report an unreachable store.
//!
//! The polls run on the async runtime, not on a thread of their own: a
//! poll blocks its runtime thread for a file open and two indexed reads
//! (about 0.1 ms, four times a second), while a thread alive for
//! the whole life of a one-CPU `meta169 serve` made every socket call of
//! the process take and drop a reference on its file (the kernel skips
//! that only while one thread uses the file table): ~60 ns of a 5 µs
//! cached answer.

use crate::changes::{Announcer, Change};
use crate::sqlite::CHANGE_LOG_KEEP;
use rusqlite::{Connection, OpenFlags};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Time between polls: how late another process's change may reach a
/// cache, at the cost of a file open and an indexed read per poll.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Where the log is read from.
pub(crate) enum Source {
    /// A database file, opened afresh for every poll.
    File(PathBuf),
    /// The in-memory database's one connection.
    Memory(Arc<Mutex<Connection>>),
}

/// Start following the log; needs a tokio runtime, as every subscriber of
/// a change feed has one.
pub(crate) fn spawn(source: Source, announcer: Announcer) {
    tokio::spawn(run(source, announcer));
}

async fn run(source: Source, announcer: Announcer) {
    let mut last: Option<i64> = None;
    // The first tick is at once: the first poll finds where the log is.
    let mut ticks = tokio::time::interval(POLL_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while announcer.wanted() {
        ticks.tick().await;
        let started = Instant::now();
        let polled = match &source {
            Source::File(path) => {
                Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
                    .map_err(|e| format!("cannot open {}: {e}", path.display()))
                    .and_then(|conn| poll(&conn, last))
            }
            Source::Memory(conn) => match conn.lock() {
                Ok(conn) => poll(&conn, last),
                Err(_) => Err("store lock poisoned by an earlier panic".into()),
            },
        };
        match polled {
            Ok((seen, changes)) => {
                for change in changes {
                    announcer.announce(change);
                }
                last = Some(seen);
                announcer.freshness.confirm(started);
            }
            Err(why) => announcer.freshness.fail(why),
        }
    }
}

/// Changes past `last` (`None`: first poll, nothing to report) and the
/// newest sequence number seen.
fn poll(conn: &Connection, last: Option<i64>) -> Result<(i64, Vec<Change>), String> {
    let fail = |e: rusqlite::Error| format!("reading the change log failed: {e}");
    let (newest, oldest): (Option<i64>, Option<i64>) = conn
        .query_row("SELECT max(seq), min(seq) FROM changes", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .map_err(fail)?;
    let newest = newest.unwrap_or(0);
    let Some(last) = last else {
        return Ok((newest, Vec::new()));
    };
    if newest == last {
        return Ok((newest, Vec::new()));
    }
    // Going backwards means another file took this one's place; a gap
    // means the log was pruned past us. Either way, start over.
    if newest < last || oldest.is_some_and(|o| o > last + 1) {
        return Ok((newest, vec![Change::Everything]));
    }
    let mut stmt = conn
        .prepare_cached("SELECT seq, uuid, kind FROM changes WHERE seq > ?1 ORDER BY seq LIMIT ?2")
        .map_err(fail)?;
    let rows = stmt
        .query_map([last, CHANGE_LOG_KEEP], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .map_err(fail)?;
    let mut seen = last;
    let mut changes = Vec::new();
    for row in rows {
        let (seq, uuid, kind) = row.map_err(fail)?;
        seen = seq;
        changes.push(Change::parse(&kind, &uuid));
    }
    Ok((seen, changes))
}
