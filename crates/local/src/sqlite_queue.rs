//! Durable queues in one SQLite file, with SQS standard-queue semantics: at-least-once delivery, visibility timeout,
//! receive count, dead-letter move by redrive policy, receipt handles that change on every receive.
//!
//! Many queues share one database file (a `queue` column), so one file holds the whole local platform's queues and a
//! redrive is a single-file operation. The file runs in WAL mode with `synchronous=NORMAL`: a committed send survives
//! a crash of the process (not necessarily of the machine), and readers never block the writer.
//!
//! Also home to the SQLite plumbing shared with [`crate::sqlite_table`] (opening, error mapping, blocking calls),
//! since `lib.rs` declares no module for it.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use rusqlite::{params, Connection, ErrorCode, OpenFlags, TransactionBehavior};
use tokio::sync::Notify;
use tributary_core::ports::{
    check_send_batch, FailedEntry, OutgoingMessage, PortError, Queue, ReceivedMessage, MAX_SEND_BATCH,
};

/// SQS's limit for one message body (1 MiB); enforced locally so oversized payloads fail in development, not first
/// in production. As in the SQS adapter, a batch may total more (that adapter splits it into several requests).
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// SQS's longest visibility timeout (12 hours).
const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 3600);
/// How often a long poll looks at the file when no in-process send woke it: sends from other processes, and
/// messages whose visibility timeout runs out, are noticed within this delay.
const POLL_INTERVAL: Duration = Duration::from_millis(25);
/// How long a statement waits for another connection's write lock before giving up with `Unavailable`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Per-queue configuration, set by whoever opens the handle (as SQS's redrive policy is set on the queue).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueOptions {
    /// Dead-letter queue name (in the same database file) and `max_receive_count`: a message received that many
    /// times without a delete is moved there on its next receive.
    pub dead_letter: Option<(String, u32)>,
}

/// One named queue in a SQLite database file. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct SqliteQueue {
    db: Arc<Db>,
    name: Arc<str>,
    dead_letter: Option<(Arc<str>, u32)>,
}

impl std::fmt::Debug for SqliteQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteQueue")
            .field("path", &self.db.path)
            .field("name", &self.name)
            .field("dead_letter", &self.dead_letter)
            .finish()
    }
}

const QUEUE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tributary_queue_messages (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    queue         TEXT    NOT NULL,
    message_id    TEXT    NOT NULL,
    body          TEXT    NOT NULL,
    sent_ms       INTEGER NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    visible_at_ms INTEGER NOT NULL,
    receipt       TEXT
);
CREATE INDEX IF NOT EXISTS tributary_queue_messages_by_queue ON tributary_queue_messages (queue, seq);
CREATE UNIQUE INDEX IF NOT EXISTS tributary_queue_messages_by_receipt
    ON tributary_queue_messages (receipt) WHERE receipt IS NOT NULL;
";

impl SqliteQueue {
    /// Opens (creating if needed) the database at `db_path` and the queue `name` in it.
    pub fn open(db_path: &Path, name: &str, options: QueueOptions) -> Result<Self, PortError> {
        if name.is_empty() {
            return Err(PortError::Invalid("queue name must not be empty".into()));
        }
        let dead_letter = match options.dead_letter {
            None => None,
            Some((dlq, max)) => {
                if dlq.is_empty() || dlq == name {
                    return Err(PortError::Invalid(format!(
                        "dead-letter queue of {name:?} must be another, non-empty queue name"
                    )));
                }
                if max == 0 {
                    return Err(PortError::Invalid("max_receive_count must be at least 1".into()));
                }
                Some((Arc::from(dlq), max))
            }
        };
        let db = Db::open(db_path, QUEUE_SCHEMA)?;
        Ok(SqliteQueue { db: Arc::new(db), name: Arc::from(name), dead_letter })
    }

    /// The queue's name inside the database file.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Every message of the queue, oldest first, without changing visibility (for tests and tooling).
    /// `receipt_handle` is the latest one handed out, or empty if the message was never received.
    pub async fn peek_all(&self) -> Result<Vec<ReceivedMessage>, PortError> {
        let name = self.name.clone();
        self.db
            .call(move |conn| {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT message_id, receipt, body, receive_count, sent_ms FROM tributary_queue_messages
                         WHERE queue = ?1 ORDER BY seq",
                    )
                    .map_err(|e| sqlite_error("peek", e))?;
                let rows = stmt
                    .query_map(params![&*name], |r| {
                        Ok(ReceivedMessage {
                            message_id: r.get(0)?,
                            receipt_handle: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                            body: r.get(2)?,
                            receive_count: r.get(3)?,
                            sent_timestamp_ms: r.get(4)?,
                        })
                    })
                    .map_err(|e| sqlite_error("peek", e))?;
                rows.collect::<Result<Vec<_>, _>>().map_err(|e| sqlite_error("peek", e))
            })
            .await
    }

    /// Deletes every message of the queue (visible or in flight).
    pub async fn purge(&self) -> Result<(), PortError> {
        let name = self.name.clone();
        self.db
            .call(move |conn| {
                conn.execute("DELETE FROM tributary_queue_messages WHERE queue = ?1", params![&*name])
                    .map_err(|e| sqlite_error("purge", e))?;
                Ok(())
            })
            .await
    }

    /// One non-waiting receive attempt, in one IMMEDIATE transaction so two receivers (threads or processes)
    /// never take the same message.
    async fn try_receive(&self, max: usize, visibility_ms: i64) -> Result<Vec<ReceivedMessage>, PortError> {
        let name = self.name.clone();
        let dead_letter = self.dead_letter.clone();
        let (received, moved) =
            self.db.call(move |conn| receive_in_tx(conn, &name, dead_letter.as_ref(), max, visibility_ms)).await?;
        if moved {
            self.db.notify.notify_waiters();
        }
        Ok(received)
    }
}

fn receive_in_tx(
    conn: &mut Connection,
    name: &str,
    dead_letter: Option<&(Arc<str>, u32)>,
    max: usize,
    visibility_ms: i64,
) -> Result<(Vec<ReceivedMessage>, bool), PortError> {
    let err = |e| sqlite_error("receive", e);
    // Idle long polls look often; a plain read first keeps them from taking the write lock for nothing.
    let any_visible = conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM tributary_queue_messages WHERE queue = ?1 AND visible_at_ms <= ?2)",
        )
        .and_then(|mut s| s.query_row(params![name, now_ms()], |r| r.get::<_, bool>(0)))
        .map_err(err)?;
    if !any_visible {
        return Ok((Vec::new(), false));
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
    let now = now_ms();
    let mut received = Vec::new();
    let mut moved = false;
    loop {
        let want = max - received.len();
        let candidates: Vec<(i64, String, String, i64, u32)> = {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT seq, message_id, body, sent_ms, receive_count FROM tributary_queue_messages
                     WHERE queue = ?1 AND visible_at_ms <= ?2 ORDER BY seq LIMIT ?3",
                )
                .map_err(err)?;
            let rows = stmt
                .query_map(params![name, now, want as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })
                .map_err(err)?;
            rows.collect::<Result<_, _>>().map_err(err)?
        };
        if candidates.is_empty() {
            break;
        }
        for (seq, message_id, body, sent_ms, count) in candidates {
            if let Some((dlq, max_receive_count)) = dead_letter {
                if count >= *max_receive_count {
                    // SQS semantics: the move happens instead of the receive that would exceed the limit; the
                    // message keeps its id, body and sent time, and starts over in the dead-letter queue.
                    tx.execute(
                        "UPDATE tributary_queue_messages
                         SET queue = ?1, receive_count = 0, visible_at_ms = ?2, receipt = NULL WHERE seq = ?3",
                        params![&**dlq, now, seq],
                    )
                    .map_err(err)?;
                    moved = true;
                    continue;
                }
            }
            let receipt = uuid::Uuid::new_v4().simple().to_string();
            tx.execute(
                "UPDATE tributary_queue_messages
                 SET receive_count = receive_count + 1, visible_at_ms = ?1, receipt = ?2 WHERE seq = ?3",
                params![now.saturating_add(visibility_ms), &receipt, seq],
            )
            .map_err(err)?;
            received.push(ReceivedMessage {
                message_id,
                receipt_handle: receipt,
                body,
                receive_count: count.saturating_add(1),
                sent_timestamp_ms: sent_ms,
            });
        }
        if received.len() >= max {
            break;
        }
    }
    tx.commit().map_err(err)?;
    Ok((received, moved))
}

/// SQS refuses bodies with characters outside XML's range; refusing them here keeps local and AWS alike.
fn body_problem(body: &str) -> Option<String> {
    if body.is_empty() {
        return Some("message body must not be empty".into());
    }
    if body.len() > MAX_MESSAGE_BYTES {
        return Some(format!("message body of {} bytes exceeds {MAX_MESSAGE_BYTES}", body.len()));
    }
    let bad = body.chars().any(|c| {
        let c = c as u32;
        (c < 0x20 && c != 0x9 && c != 0xA && c != 0xD) || c == 0xFFFE || c == 0xFFFF
    });
    bad.then(|| "message body contains characters SQS does not accept".into())
}

fn visibility_ms(visibility: Duration) -> Result<i64, PortError> {
    if visibility > MAX_VISIBILITY {
        return Err(PortError::Invalid(format!("visibility timeout {visibility:?} exceeds 12 hours")));
    }
    Ok(i64::try_from(visibility.as_millis()).unwrap_or(i64::MAX))
}

impl Queue for SqliteQueue {
    async fn send_batch(&self, messages: &[OutgoingMessage]) -> Result<Vec<FailedEntry>, PortError> {
        check_send_batch(messages)?;
        // Entry ids are the caller's own (any text, as the SQS adapter maps them), but failures are reported by id,
        // so they must be unique.
        let mut seen = HashSet::new();
        for m in messages {
            if !seen.insert(m.id.as_str()) {
                return Err(PortError::Invalid(format!("batch entry id {:?} is not unique", m.id)));
            }
        }
        let mut failed = Vec::new();
        let mut accepted = Vec::new();
        for m in messages {
            match body_problem(&m.body) {
                Some(reason) => failed.push(FailedEntry { id: m.id.clone(), retryable: false, reason }),
                None => accepted.push(m.body.clone()),
            }
        }
        if accepted.is_empty() {
            return Ok(failed);
        }
        let name = self.name.clone();
        self.db
            .call(move |conn| {
                let err = |e| sqlite_error("send", e);
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
                let now = now_ms();
                {
                    let mut stmt = tx
                        .prepare_cached(
                            "INSERT INTO tributary_queue_messages (queue, message_id, body, sent_ms, visible_at_ms)
                             VALUES (?1, ?2, ?3, ?4, ?4)",
                        )
                        .map_err(err)?;
                    for body in &accepted {
                        let id = uuid::Uuid::new_v4().to_string();
                        stmt.execute(params![&*name, id, body, now]).map_err(err)?;
                    }
                }
                tx.commit().map_err(err)
            })
            .await?;
        self.db.notify.notify_waiters();
        Ok(failed)
    }

    /// Long polls by waking on in-process sends (a [`Notify`] shared by every handle on the same file) and by
    /// looking every [`POLL_INTERVAL`] for everything else. If the returned future is dropped mid-call, messages
    /// already taken stay hidden until their visibility timeout runs out (at-least-once, as on SQS).
    async fn receive(
        &self,
        max: usize,
        visibility_timeout: Duration,
        wait: Duration,
    ) -> Result<Vec<ReceivedMessage>, PortError> {
        // Clamped, not refused, as the SQS adapter does.
        let max = max.clamp(1, MAX_SEND_BATCH);
        let vis = visibility_ms(visibility_timeout)?;
        let deadline = tokio::time::Instant::now() + wait;
        let notify = self.db.notify.clone();
        loop {
            // Registered before looking, so a send between the look and the sleep still wakes us.
            let mut notified = pin!(notify.notified());
            notified.as_mut().enable();
            let got = self.try_receive(max, vis).await?;
            let now = tokio::time::Instant::now();
            if !got.is_empty() || now >= deadline {
                return Ok(got);
            }
            let nap = (deadline - now).min(POLL_INTERVAL);
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(nap) => {}
            }
        }
    }

    /// Deletes by the latest receipt handle; a stale or unknown handle deletes nothing and is not an error.
    async fn delete(&self, receipt_handle: &str) -> Result<(), PortError> {
        let name = self.name.clone();
        let receipt = receipt_handle.to_string();
        self.db
            .call(move |conn| {
                conn.execute(
                    "DELETE FROM tributary_queue_messages WHERE queue = ?1 AND receipt = ?2",
                    params![&*name, receipt],
                )
                .map_err(|e| sqlite_error("delete", e))?;
                Ok(())
            })
            .await
    }

    /// A stale or unknown handle changes nothing and is not an error.
    async fn change_visibility(&self, receipt_handle: &str, visibility_timeout: Duration) -> Result<(), PortError> {
        let vis = visibility_ms(visibility_timeout)?;
        let name = self.name.clone();
        let receipt = receipt_handle.to_string();
        self.db
            .call(move |conn| {
                conn.execute(
                    "UPDATE tributary_queue_messages SET visible_at_ms = ?1 WHERE queue = ?2 AND receipt = ?3",
                    params![now_ms().saturating_add(vis), &*name, receipt],
                )
                .map_err(|e| sqlite_error("change_visibility", e))?;
                Ok(())
            })
            .await?;
        if vis == 0 {
            self.db.notify.notify_waiters();
        }
        Ok(())
    }

    async fn approximate_len(&self) -> Result<u64, PortError> {
        let name = self.name.clone();
        self.db
            .call(move |conn| {
                conn.query_row("SELECT COUNT(*) FROM tributary_queue_messages WHERE queue = ?1", params![&*name], |r| {
                    r.get::<_, i64>(0)
                })
                .map(|n| u64::try_from(n).unwrap_or(0))
                .map_err(|e| sqlite_error("approximate_len", e))
            })
            .await
    }
}

// ---------------------------------------------------------------------------------------------------------------
// SQLite plumbing shared with `sqlite_table`.
// ---------------------------------------------------------------------------------------------------------------

/// One connection to a database file plus the in-process wake-up signal for that file. Each handle owns its
/// connection (SQLite serialises writers with the busy timeout, WAL lets readers run alongside).
pub(crate) struct Db {
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
    pub(crate) notify: Arc<Notify>,
}

impl Db {
    pub(crate) fn open(path: &Path, schema: &str) -> Result<Db, PortError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| PortError::Unavailable(format!("cannot create directory {}: {e}", parent.display())))?;
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| sqlite_error("open", e))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| sqlite_error("open", e))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(|e| sqlite_error("open (journal_mode)", e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(PortError::Invalid(format!("{} cannot use WAL journal mode (got {mode})", path.display())));
        }
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(|e| sqlite_error("open (synchronous)", e))?;
        // Erasure must not leave deleted rows readable in free pages: FAST zeroes what a delete frees whenever that
        // costs no extra I/O (the page is written anyway), which covers the rows of a deleted item or message.
        conn.pragma_update(None, "secure_delete", "FAST").map_err(|e| sqlite_error("open (secure_delete)", e))?;
        conn.execute_batch(schema).map_err(|e| sqlite_error("open (schema)", e))?;
        let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let notify = notifier_for(&canonical);
        Ok(Db { path: canonical, conn: Arc::new(Mutex::new(conn)), notify })
    }

    /// Runs `f` on the connection on the blocking pool, so SQLite's waits (disk, busy timeout) never stall the
    /// async runtime.
    pub(crate) async fn call<T, F>(&self, f: F) -> Result<T, PortError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, PortError> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            // A poisoned lock only means another call panicked; any transaction it held was rolled back on drop.
            let mut guard = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| PortError::Unavailable(format!("sqlite worker task failed: {e}")))?
    }
}

/// One [`Notify`] per database file in this process, so a send through any handle wakes long polls on every other
/// handle of the same file. Entries die with their last handle.
fn notifier_for(path: &Path) -> Arc<Notify> {
    static NOTIFIERS: OnceLock<Mutex<HashMap<PathBuf, Weak<Notify>>>> = OnceLock::new();
    let map = NOTIFIERS.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = map.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(existing) = map.get(path).and_then(Weak::upgrade) {
        return existing;
    }
    map.retain(|_, weak| weak.strong_count() > 0);
    let fresh = Arc::new(Notify::new());
    map.insert(path.to_path_buf(), Arc::downgrade(&fresh));
    fresh
}

/// Maps a SQLite error to the port's taxonomy: lock contention and I/O trouble are worth retrying, everything else
/// (constraint misuse, corrupt data, type mismatches) is not.
pub(crate) fn sqlite_error(context: &str, e: rusqlite::Error) -> PortError {
    let retryable = match &e {
        rusqlite::Error::SqliteFailure(f, _) => matches!(
            f.code,
            ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::SystemIoFailure
                | ErrorCode::DiskFull
                | ErrorCode::OutOfMemory
                | ErrorCode::CannotOpen
                | ErrorCode::FileLockingProtocolFailed
                | ErrorCode::SchemaChanged
                | ErrorCode::OperationInterrupted
        ),
        _ => false,
    };
    if retryable {
        PortError::Unavailable(format!("sqlite {context}: {e}"))
    } else {
        PortError::Invalid(format!("sqlite {context}: {e}"))
    }
}

/// Wall-clock epoch milliseconds: shared by every process using the file, unlike a monotonic clock.
pub(crate) fn now_ms() -> i64 {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}
