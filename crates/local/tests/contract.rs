//! The port contract suites on the embedded adapters, plus what only the embedded adapters promise (durability
//! across handles and processes, exclusive receives across connections, directory layout).

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tributary_core::ports::{
    Condition, Item, ItemKey, ObjectStore, OutgoingMessage, PortError, Queue, TableStore, TransactError, WriteOp,
};
use tributary_core::testing::{object_store_contract, queue_contract, queue_dlq_contract, table_store_contract};
use tributary_local::dir_store::{DirStore, TEMP_SUFFIX};
use tributary_local::sqlite_queue::{QueueOptions, SqliteQueue};
use tributary_local::sqlite_table::SqliteTable;

fn tmp() -> tempfile::TempDir {
    match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("cannot create a temporary directory: {e}"),
    }
}

fn open_queue(db: &Path, name: &str) -> SqliteQueue {
    SqliteQueue::open(db, name, QueueOptions::default()).unwrap_or_else(|e| panic!("open queue {name}: {e}"))
}

fn msg(id: &str, body: &str) -> OutgoingMessage {
    OutgoingMessage { id: id.to_string(), body: body.to_string() }
}

async fn send(q: &SqliteQueue, bodies: &[&str]) {
    for chunk in bodies.chunks(10) {
        let batch: Vec<OutgoingMessage> = chunk.iter().enumerate().map(|(i, b)| msg(&format!("m{i}"), b)).collect();
        let failed = q.send_batch(&batch).await.unwrap_or_else(|e| panic!("send_batch: {e}"));
        assert!(failed.is_empty(), "failed entries: {failed:?}");
    }
}

// ------------------------------------------------------------------------------------------------------------
// Contract suites.
// ------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn sqlite_queue_passes_queue_contract() {
    let dir = tmp();
    let q = open_queue(&dir.path().join("queues.db"), "events");
    queue_contract(&q).await;
}

#[tokio::test]
async fn sqlite_queue_passes_dlq_contract() {
    let dir = tmp();
    let db = dir.path().join("queues.db");
    let q = SqliteQueue::open(&db, "delivery", QueueOptions { dead_letter: Some(("delivery-dlq".into(), 2)) })
        .unwrap_or_else(|e| panic!("open: {e}"));
    let dlq = open_queue(&db, "delivery-dlq");
    queue_dlq_contract(&q, &dlq, 2).await;
}

#[tokio::test]
async fn dir_store_passes_object_store_contract() {
    let dir = tmp();
    let s = DirStore::open(&dir.path().join("objects")).unwrap_or_else(|e| panic!("open: {e}"));
    object_store_contract(&s).await;
}

#[tokio::test]
async fn sqlite_table_passes_table_store_contract() {
    let dir = tmp();
    let t = SqliteTable::open(&dir.path().join("tables.db"), "main").unwrap_or_else(|e| panic!("open: {e}"));
    table_store_contract(&t).await;
}

// ------------------------------------------------------------------------------------------------------------
// SqliteQueue.
// ------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_sent_message_survives_closing_the_handle() {
    let dir = tmp();
    let db = dir.path().join("queues.db");
    let first = open_queue(&db, "events");
    send(&first, &["durable ✓"]).await;
    let sent = first.peek_all().await.unwrap_or_else(|e| panic!("peek: {e}"));
    drop(first);

    let second = open_queue(&db, "events");
    let got =
        second.receive(10, Duration::from_secs(30), Duration::from_secs(1)).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, "durable ✓");
    assert_eq!(got[0].message_id, sent[0].message_id);
    assert_eq!(got[0].receive_count, 1);
}

/// Child half of the SIGKILL test: only acts when the parent test starts this binary with the variable set.
#[tokio::test]
async fn sigkill_child_sends_then_waits() {
    let Ok(db) = std::env::var("TRIBUTARY_SIGKILL_CHILD_DB") else {
        return;
    };
    let q = open_queue(Path::new(&db), "events");
    send(&q, &["survives SIGKILL"]).await;
    let sent = q.peek_all().await.unwrap_or_else(|e| panic!("peek: {e}"));
    println!("SENT {}", sent[0].message_id);
    use std::io::Write;
    let _ = std::io::stdout().flush();
    tokio::time::sleep(Duration::from_secs(60)).await;
}

#[tokio::test]
async fn a_committed_send_survives_sigkill_of_the_process() {
    let dir = tmp();
    let db = dir.path().join("queues.db");
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    let mut child = std::process::Command::new(exe)
        .args(["--exact", "sigkill_child_sends_then_waits", "--nocapture", "--test-threads=1"])
        .env("TRIBUTARY_SIGKILL_CHILD_DB", &db)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn child: {e}"));
    let mut sent_id = None;
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            // The harness may print "test name ... " on the same line first.
            if let Some((_, id)) = line.split_once("SENT ") {
                sent_id = Some(id.trim().to_string());
                break;
            }
        }
    }
    // `Child::kill` is SIGKILL on Unix: no destructors, no flush, no checkpoint.
    let _ = child.kill();
    let _ = child.wait();
    let Some(sent_id) = sent_id else {
        panic!("the child process never reported its send");
    };

    let q = open_queue(&db, "events");
    let all = q.peek_all().await.unwrap_or_else(|e| panic!("peek: {e}"));
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].message_id, sent_id);
    assert_eq!(all[0].body, "survives SIGKILL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_receivers_never_get_the_same_message() {
    let dir = tmp();
    let db = dir.path().join("queues.db");
    let producer = open_queue(&db, "events");
    let bodies: Vec<String> = (0..120).map(|i| format!("message {i}")).collect();
    let refs: Vec<&str> = bodies.iter().map(String::as_str).collect();
    send(&producer, &refs).await;

    // Six receivers: four with their own connection, two sharing one.
    let shared = open_queue(&db, "events");
    let mut receivers: Vec<SqliteQueue> = (0..4).map(|_| open_queue(&db, "events")).collect();
    receivers.push(shared.clone());
    receivers.push(shared);
    let mut tasks = Vec::new();
    for q in receivers {
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let batch = q
                    .receive(3, Duration::from_secs(60), Duration::from_millis(200))
                    .await
                    .unwrap_or_else(|e| panic!("receive: {e}"));
                if batch.is_empty() {
                    return got;
                }
                got.extend(batch);
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap_or_else(|e| panic!("receiver task: {e}")));
    }
    let ids: HashSet<&str> = all.iter().map(|m| m.message_id.as_str()).collect();
    assert_eq!(all.len(), 120, "every message received exactly once while hidden");
    assert_eq!(ids.len(), 120, "a message was handed to two receivers");
    assert!(all.iter().all(|m| m.receive_count == 1));
}

#[tokio::test]
async fn receive_is_oldest_first() {
    let dir = tmp();
    let q = open_queue(&dir.path().join("q.db"), "events");
    for i in 0..5 {
        send(&q, &[&format!("batch {i} a"), &format!("batch {i} b")]).await;
    }
    let got = q.receive(10, Duration::from_secs(30), Duration::ZERO).await.unwrap_or_else(|e| panic!("{e}"));
    let bodies: Vec<&str> = got.iter().map(|m| m.body.as_str()).collect();
    let expected: Vec<String> = (0..5).flat_map(|i| [format!("batch {i} a"), format!("batch {i} b")]).collect();
    assert_eq!(bodies, expected);
}

#[tokio::test]
async fn queues_in_one_file_are_separate() {
    let dir = tmp();
    let db = dir.path().join("all.db");
    let a = open_queue(&db, "a");
    let b = open_queue(&db, "b");
    send(&a, &["for a"]).await;
    assert_eq!(b.approximate_len().await, Ok(0));
    assert!(b.receive(10, Duration::from_secs(1), Duration::ZERO).await.unwrap_or_default().is_empty());
    let got = a.receive(10, Duration::from_secs(30), Duration::ZERO).await.unwrap_or_default();
    assert_eq!(got.len(), 1);
    // A receipt handle of queue `a` does nothing on queue `b`.
    assert_eq!(b.delete(&got[0].receipt_handle).await, Ok(()));
    assert_eq!(a.approximate_len().await, Ok(1));
    // Tables can live in the same file.
    let t = SqliteTable::open(&db, "main").unwrap_or_else(|e| panic!("open table: {e}"));
    assert_eq!(t.get(&ItemKey::new("p", "s")).await, Ok(None));
}

#[tokio::test]
async fn peek_all_and_purge() {
    let dir = tmp();
    let q = open_queue(&dir.path().join("q.db"), "events");
    send(&q, &["one", "two", "three"]).await;
    let first = q.receive(1, Duration::from_secs(30), Duration::ZERO).await.unwrap_or_default();
    assert_eq!(first.len(), 1);
    let peeked = q.peek_all().await.unwrap_or_else(|e| panic!("{e}"));
    let summary: Vec<(&str, u32)> = peeked.iter().map(|m| (m.body.as_str(), m.receive_count)).collect();
    assert_eq!(summary, vec![("one", 1), ("two", 0), ("three", 0)]);
    assert_eq!(peeked[0].receipt_handle, first[0].receipt_handle);
    assert!(peeked[1].receipt_handle.is_empty());
    // Peeking changed no visibility.
    let rest = q.receive(10, Duration::from_secs(30), Duration::ZERO).await.unwrap_or_default();
    assert_eq!(rest.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(), vec!["two", "three"]);
    q.purge().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(q.approximate_len().await, Ok(0));
    assert!(q.peek_all().await.unwrap_or_default().is_empty());
}

#[tokio::test]
async fn stale_receipt_handles_are_ignored() {
    let dir = tmp();
    let q = open_queue(&dir.path().join("q.db"), "events");
    send(&q, &["x"]).await;
    let first = q.receive(1, Duration::from_secs(30), Duration::ZERO).await.unwrap_or_default();
    q.change_visibility(&first[0].receipt_handle, Duration::ZERO).await.unwrap_or_else(|e| panic!("{e}"));
    let second = q.receive(1, Duration::from_secs(30), Duration::ZERO).await.unwrap_or_default();
    assert_eq!(second[0].receive_count, 2);
    assert_eq!(q.delete(&first[0].receipt_handle).await, Ok(()));
    assert_eq!(q.change_visibility(&first[0].receipt_handle, Duration::ZERO).await, Ok(()));
    assert_eq!(q.approximate_len().await, Ok(1), "a stale handle must not delete");
    assert!(q.receive(1, Duration::from_secs(30), Duration::ZERO).await.unwrap_or_default().is_empty());
    assert_eq!(q.delete(&second[0].receipt_handle).await, Ok(()));
    assert_eq!(q.approximate_len().await, Ok(0));
}

#[tokio::test]
async fn dead_letter_keeps_identity_and_resets_count() {
    let dir = tmp();
    let db = dir.path().join("q.db");
    let q = SqliteQueue::open(&db, "work", QueueOptions { dead_letter: Some(("work-dlq".into(), 1)) })
        .unwrap_or_else(|e| panic!("{e}"));
    let dlq = open_queue(&db, "work-dlq");
    send(&q, &["poison", "fine"]).await;
    let got = q.receive(10, Duration::from_secs(30), Duration::ZERO).await.unwrap_or_default();
    assert_eq!(got.len(), 2);
    let fine = got.iter().find(|m| m.body == "fine").map(|m| m.receipt_handle.clone()).unwrap_or_default();
    q.delete(&fine).await.unwrap_or_else(|e| panic!("{e}"));
    for m in &got {
        q.change_visibility(&m.receipt_handle, Duration::ZERO).await.unwrap_or_else(|e| panic!("{e}"));
    }
    assert!(q.receive(10, Duration::from_secs(30), Duration::ZERO).await.unwrap_or_default().is_empty());
    let moved = dlq.peek_all().await.unwrap_or_default();
    assert_eq!(moved.len(), 1);
    let poison = got.iter().find(|m| m.body == "poison").cloned();
    let Some(poison) = poison else { panic!("poison not received") };
    assert_eq!(moved[0].message_id, poison.message_id);
    assert_eq!(moved[0].sent_timestamp_ms, poison.sent_timestamp_ms);
    assert_eq!(moved[0].receive_count, 0);
    // The old receipt handle no longer reaches the moved message.
    assert_eq!(q.delete(&poison.receipt_handle).await, Ok(()));
    assert_eq!(dlq.approximate_len().await, Ok(1));
}

#[tokio::test]
async fn long_poll_wakes_on_a_send_through_another_handle() {
    let dir = tmp();
    let db = dir.path().join("q.db");
    let receiver = open_queue(&db, "events");
    let sender = open_queue(&db, "events");
    let started = Instant::now();
    let (got, ()) = tokio::join!(receiver.receive(10, Duration::from_secs(30), Duration::from_secs(10)), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        send(&sender, &["wake up"]).await;
    });
    let got = got.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got.len(), 1);
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
}

#[tokio::test]
async fn send_batch_validates_like_sqs() {
    let dir = tmp();
    let q = open_queue(&dir.path().join("q.db"), "events");
    let eleven: Vec<OutgoingMessage> = (0..11).map(|i| msg(&format!("m{i}"), "x")).collect();
    assert!(matches!(q.send_batch(&eleven).await, Err(PortError::Invalid(_))));
    assert!(matches!(q.send_batch(&[msg("a", "x"), msg("a", "y")]).await, Err(PortError::Invalid(_))));
    // Any caller id is fine (the SQS adapter maps ids too).
    assert_eq!(q.send_batch(&[msg("any id: ✓", "x")]).await, Ok(vec![]));
    let too_big = "x".repeat(1024 * 1024 + 1);
    let failed = q
        .send_batch(&[msg("ok", "fine"), msg("empty", ""), msg("ctl", "bad \u{0} char"), msg("big", &too_big)])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let ids: Vec<(&str, bool)> = failed.iter().map(|f| (f.id.as_str(), f.retryable)).collect();
    assert_eq!(ids, vec![("empty", false), ("ctl", false), ("big", false)]);
    assert_eq!(q.approximate_len().await, Ok(2));
    // Several large bodies together are fine.
    let large = "y".repeat(900 * 1024);
    assert_eq!(q.send_batch(&[msg("l1", &large), msg("l2", &large)]).await, Ok(vec![]));
    // `max` is clamped to 1..=10.
    let got = q.receive(0, Duration::from_secs(30), Duration::ZERO).await.unwrap_or_default();
    assert_eq!(got.len(), 1);
    let got = q.receive(11, Duration::from_secs(30), Duration::ZERO).await.unwrap_or_default();
    assert_eq!(got.len(), 3);
    assert_eq!(q.send_batch(&[]).await, Ok(vec![]));
}

#[test]
fn queue_options_are_checked() {
    let dir = tmp();
    let db = dir.path().join("q.db");
    let bad = |dead_letter| SqliteQueue::open(&db, "q", QueueOptions { dead_letter }).map(|_| ());
    assert!(matches!(bad(Some(("q".into(), 2))), Err(PortError::Invalid(_))));
    assert!(matches!(bad(Some(("dlq".into(), 0))), Err(PortError::Invalid(_))));
    assert!(matches!(SqliteQueue::open(&db, "", QueueOptions::default()), Err(PortError::Invalid(_))));
}

// ------------------------------------------------------------------------------------------------------------
// SqliteTable.
// ------------------------------------------------------------------------------------------------------------

fn item(pk: &str, sk: &str, attrs: serde_json::Value) -> Item {
    let attrs = match attrs {
        serde_json::Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    Item { key: ItemKey::new(pk, sk), attrs, version: 1, expires_at: None }
}

#[tokio::test]
async fn tables_in_one_file_are_separate_and_durable() {
    let dir = tmp();
    let db = dir.path().join("t.db");
    let a = SqliteTable::open(&db, "a").unwrap_or_else(|e| panic!("{e}"));
    let b = SqliteTable::open(&db, "b").unwrap_or_else(|e| panic!("{e}"));
    let it = item("p", "s", json!({"x": 1}));
    a.write(WriteOp::Put { item: it.clone(), condition: Condition::NotExists }).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(b.get(&it.key).await, Ok(None));
    assert!(b.scan_all().await.unwrap_or_default().is_empty());
    drop(a);
    let reopened = SqliteTable::open(&db, "a").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(reopened.get(&it.key).await, Ok(Some(it)));
}

#[tokio::test]
async fn reserved_names_empty_keys_and_oversized_items_are_refused() {
    let dir = tmp();
    let t = SqliteTable::open(&dir.path().join("t.db"), "main").unwrap_or_else(|e| panic!("{e}"));
    for name in ["pk", "sk", "v", "ttl"] {
        let r = t.write(WriteOp::Put { item: item("p", "s", json!({ name: 1 })), condition: Condition::None }).await;
        assert!(matches!(r, Err(PortError::Invalid(_))), "{name}: {r:?}");
    }
    let r = t.write(WriteOp::Put { item: item("", "s", json!({})), condition: Condition::None }).await;
    assert!(matches!(r, Err(PortError::Invalid(_))), "{r:?}");
    let r = t
        .write(WriteOp::Put {
            item: item("p", "s", json!({"big": "x".repeat(401 * 1024)})),
            condition: Condition::None,
        })
        .await;
    assert!(matches!(r, Err(PortError::Invalid(_))), "{r:?}");
    assert!(matches!(t.query("p", "", None, 0).await, Err(PortError::Invalid(_))));
    assert_eq!(
        t.transact(vec![]).await,
        Err(TransactError::Port(PortError::Invalid("a transaction needs at least one operation".into())))
    );
    assert!(t.scan_all().await.unwrap_or_default().is_empty());
}

#[tokio::test]
async fn expired_items_stay_until_purged() {
    let dir = tmp();
    let t = SqliteTable::open(&dir.path().join("t.db"), "main").unwrap_or_else(|e| panic!("{e}"));
    let mut old = item("p", "old", json!({}));
    old.expires_at = Some(1);
    t.write(WriteOp::Put { item: old, condition: Condition::None }).await.unwrap_or_else(|e| panic!("{e}"));
    t.write(WriteOp::Put { item: item("p", "new", json!({})), condition: Condition::None })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(t.scan_all().await.unwrap_or_default().len(), 2);
    assert_eq!(t.purge_expired().await, Ok(1));
    let left: Vec<String> = t.scan_all().await.unwrap_or_default().into_iter().map(|i| i.key.sk).collect();
    assert_eq!(left, vec!["new"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_conditional_increments_never_lose_an_update() {
    let dir = tmp();
    let db = dir.path().join("t.db");
    let key = ItemKey::new("counter", "c");
    let seed = SqliteTable::open(&db, "main").unwrap_or_else(|e| panic!("{e}"));
    seed.write(WriteOp::Put {
        item: Item { key: key.clone(), attrs: Default::default(), version: 0, expires_at: None },
        condition: Condition::NotExists,
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let t = SqliteTable::open(&db, "main").unwrap_or_else(|e| panic!("{e}"));
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let mut done = 0;
            while done < 25 {
                let Ok(Some(cur)) = t.get(&key).await else { panic!("counter vanished") };
                let next = Item { version: cur.version + 1, ..cur.clone() };
                match t.write(WriteOp::Put { item: next, condition: Condition::VersionIs(cur.version) }).await {
                    Ok(()) => done += 1,
                    Err(PortError::ConditionFailed(_)) => {}
                    Err(e) => panic!("{e}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(seed.get(&key).await.ok().flatten().map(|i| i.version), Some(100));
}

// ------------------------------------------------------------------------------------------------------------
// DirStore.
// ------------------------------------------------------------------------------------------------------------

fn files_under(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(root).map(|r| r.display().to_string()).unwrap_or_default());
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn dir_store_lays_out_plain_files_and_cleans_up() {
    let dir = tmp();
    let s = DirStore::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    s.put("imports/2024/file.csv", b"a,b\n".to_vec()).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(files_under(dir.path()), vec!["imports/2024/file.csv"], "no temporary file may remain");
    assert_eq!(std::fs::read(dir.path().join("imports/2024/file.csv")).ok(), Some(b"a,b\n".to_vec()));
    s.delete("imports/2024/file.csv").await.unwrap_or_else(|e| panic!("{e}"));
    assert!(!dir.path().join("imports").exists(), "empty directories are pruned after delete");
    assert!(dir.path().exists(), "the root itself stays");
}

#[tokio::test]
async fn dir_store_lists_dropped_files_and_skips_temporary_ones() {
    let dir = tmp();
    let s = DirStore::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    std::fs::create_dir_all(dir.path().join("drop")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.path().join("drop/partner.csv"), b"x").unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.path().join(format!("drop/.abc{TEMP_SUFFIX}")), b"partial").unwrap_or_else(|e| panic!("{e}"));
    let keys: Vec<String> = s.list("").await.unwrap_or_default().into_iter().map(|m| m.key).collect();
    assert_eq!(keys, vec!["drop/partner.csv"]);
    assert_eq!(s.key_of(&s.root().join("drop/partner.csv")).as_deref(), Some("drop/partner.csv"));
    assert_eq!(s.key_of(&s.root().join(format!("drop/.abc{TEMP_SUFFIX}"))), None);
    let r = s.put(&format!("x/y{TEMP_SUFFIX}"), b"no".to_vec()).await;
    assert!(matches!(r, Err(PortError::Invalid(_))), "{r:?}");
    // List prefixes never escape the root.
    assert!(s.list("../").await.unwrap_or_default().is_empty());
}

#[tokio::test]
async fn dir_store_refuses_a_key_that_is_also_a_directory() {
    let dir = tmp();
    let s = DirStore::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    s.put("a/b", b"file".to_vec()).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(s.put("a/b/c", b"x".to_vec()).await, Err(PortError::Invalid(_))));
    s.put("d/e/f", b"x".to_vec()).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(s.put("d/e", b"x".to_vec()).await, Err(PortError::Invalid(_))));
    assert_eq!(s.get("d/e").await, Ok(None));
    assert_eq!(s.get("a/b/c").await, Ok(None));
    assert_eq!(s.delete("d/e").await, Ok(()));
    assert_eq!(s.get("d/e/f").await, Ok(Some(b"x".to_vec())));
    assert_eq!(files_under(dir.path()), vec!["a/b", "d/e/f"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dir_store_readers_never_see_a_torn_object() {
    let dir = tmp();
    let s = Arc::new(DirStore::open(dir.path()).unwrap_or_else(|e| panic!("{e}")));
    s.put("hot/object", vec![b'a'; 1 << 20]).await.unwrap_or_else(|e| panic!("{e}"));
    let writer = {
        let s = s.clone();
        tokio::spawn(async move {
            for i in 0..30u32 {
                let byte = if i % 2 == 0 { b'b' } else { b'a' };
                let len = (1 << 20) + (i as usize) * 1000;
                s.put("hot/object", vec![byte; len]).await.unwrap_or_else(|e| panic!("{e}"));
            }
        })
    };
    let reader = {
        let s = s.clone();
        tokio::spawn(async move {
            for _ in 0..60 {
                let Ok(Some(bytes)) = s.get("hot/object").await else { panic!("object vanished during overwrite") };
                let first = bytes[0];
                assert!(bytes.iter().all(|b| *b == first), "torn read of {} bytes", bytes.len());
            }
        })
    };
    writer.await.unwrap_or_else(|e| panic!("{e}"));
    reader.await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(files_under(dir.path()), vec!["hot/object"]);
}
