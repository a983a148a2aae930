//! The stitch step's profile change feed: every invocation names the profiles it changed (merged ones too) on
//! the change queue; a redelivered batch names them again; a feed that cannot be written fails the batch, so
//! SQS redelivers it rather than the audience refresh missing a change.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::sqs::SqsEvent;
use serde_json::{json, Value};
use tributary_core::metrics::MemoryMetrics;
use tributary_core::ports::{FailedEntry, OutgoingMessage, PortError, Queue, ReceivedMessage};
use tributary_core::profile::changes::ProfileChanges;
use tributary_core::testing::MemoryTable;
use tributary_local::sqlite_queue::{QueueOptions, SqliteQueue};
use tributary_stitch::{Stitch, StitchSettings};

const WORKSPACE: &str = r#"
workspace: changes
sources:
  - { id: web, write_key_sha256: ["6b86b273ff34fce19d6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b"], class: 1P }
"#;

fn event(id: &str, anonymous: &str, user: Option<&str>) -> Value {
    let mut e = json!({
        "type": "track", "event": "Viewed", "messageId": id, "anonymousId": anonymous,
        "timestamp": "2026-11-01T10:00:00.000Z", "receivedAt": "2026-11-01T10:00:01.000Z",
    });
    if let Some(u) = user {
        e["userId"] = json!(u);
    }
    e
}

fn batch(records: &[Vec<Value>]) -> SqsEvent {
    let records: Vec<Value> = records
        .iter()
        .enumerate()
        .map(|(i, events)| {
            json!({
                "messageId": format!("r{i}"),
                "body": json!({"v": 1, "sourceId": "web", "events": events}).to_string(),
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "eventSource": "aws:sqs",
            })
        })
        .collect();
    serde_json::from_value(json!({ "Records": records })).expect("sqs event")
}

fn queue(dir: &tempfile::TempDir, name: &str) -> SqliteQueue {
    SqliteQueue::open(&dir.path().join("queues.sqlite"), name, QueueOptions::default()).expect("queue")
}

/// Every profile named by the messages on `q` (draining it).
async fn named(q: &SqliteQueue) -> Vec<BTreeSet<String>> {
    let mut out = Vec::new();
    loop {
        let got = q.receive(10, Duration::from_secs(60), Duration::ZERO).await.expect("receive");
        if got.is_empty() {
            return out;
        }
        for m in got {
            let changes = ProfileChanges::parse(&m.body).expect("a change-feed message");
            out.push(changes.profiles.into_iter().collect());
            q.delete(&m.receipt_handle).await.expect("delete");
        }
    }
}

fn stitch<Q: Queue>(table: MemoryTable, delivery: Q, changes: Q) -> Stitch<MemoryTable, Q, MemoryMetrics> {
    let workspace = Arc::new(tributary_core::config::load(WORKSPACE).expect("workspace"));
    Stitch::new(table, delivery, MemoryMetrics::default(), workspace, StitchSettings::default())
        .expect("stitch")
        .with_changes(changes)
}

#[tokio::test]
async fn an_invocation_names_the_profiles_it_changed_merged_ones_included() {
    let dir = tempfile::tempdir().expect("dir");
    let (delivery, changes) = (queue(&dir, "delivery"), queue(&dir, "changes"));
    let table = MemoryTable::default();
    let s = stitch(table.clone(), delivery.clone(), changes.clone());

    // Two devices, two profiles, in one invocation: one message naming both.
    let first = batch(&[vec![event("m1", "dev-a", None)], vec![event("m2", "dev-b", None)]]);
    assert!(s.handle(first.clone()).await.batch_item_failures.is_empty());
    let one = named(&changes).await;
    assert_eq!(one.len(), 1, "one message per invocation");
    assert_eq!(one[0].len(), 2);

    // A login on each device merges them: the survivor and the merged profile are both named.
    let login = batch(&[vec![event("m3", "dev-a", Some("u1")), event("m4", "dev-b", Some("u1"))]]);
    assert!(s.handle(login).await.batch_item_failures.is_empty());
    let two = named(&changes).await;
    assert_eq!(two.len(), 1);
    assert_eq!(two[0], one[0], "the root and the profile merged into it");

    // A redelivery changes nothing but names the (root) profile again.
    assert!(s.handle(first).await.batch_item_failures.is_empty());
    let again = named(&changes).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].len(), 1, "both events now lead to one root");
    assert!(one[0].is_superset(&again[0]));
}

/// A change queue that refuses everything, as a throttled or missing queue would.
#[derive(Clone)]
struct Down;

impl Queue for Down {
    async fn send_batch(&self, _: &[OutgoingMessage]) -> Result<Vec<FailedEntry>, PortError> {
        Err(PortError::Invalid("queue does not exist".into()))
    }
    async fn receive(&self, _: usize, _: Duration, _: Duration) -> Result<Vec<ReceivedMessage>, PortError> {
        Ok(Vec::new())
    }
    async fn delete(&self, _: &str) -> Result<(), PortError> {
        Ok(())
    }
    async fn change_visibility(&self, _: &str, _: Duration) -> Result<(), PortError> {
        Ok(())
    }
    async fn approximate_len(&self) -> Result<u64, PortError> {
        Ok(0)
    }
}

/// Delivery works; only the change feed is down.
#[derive(Clone)]
enum Either {
    Up(SqliteQueue),
    Down(Down),
}

impl Queue for Either {
    async fn send_batch(&self, m: &[OutgoingMessage]) -> Result<Vec<FailedEntry>, PortError> {
        match self {
            Either::Up(q) => q.send_batch(m).await,
            Either::Down(q) => q.send_batch(m).await,
        }
    }
    async fn receive(&self, n: usize, w: Duration, v: Duration) -> Result<Vec<ReceivedMessage>, PortError> {
        match self {
            Either::Up(q) => q.receive(n, w, v).await,
            Either::Down(q) => q.receive(n, w, v).await,
        }
    }
    async fn delete(&self, h: &str) -> Result<(), PortError> {
        match self {
            Either::Up(q) => q.delete(h).await,
            Either::Down(q) => q.delete(h).await,
        }
    }
    async fn change_visibility(&self, h: &str, v: Duration) -> Result<(), PortError> {
        match self {
            Either::Up(q) => q.change_visibility(h, v).await,
            Either::Down(q) => q.change_visibility(h, v).await,
        }
    }
    async fn approximate_len(&self) -> Result<u64, PortError> {
        match self {
            Either::Up(q) => q.approximate_len().await,
            Either::Down(q) => q.approximate_len().await,
        }
    }
}

#[tokio::test]
async fn a_feed_that_cannot_be_written_sends_the_batch_back() {
    let dir = tempfile::tempdir().expect("dir");
    let table = MemoryTable::default();
    let down = stitch(table.clone(), Either::Up(queue(&dir, "delivery")), Either::Down(Down));
    let resp = down.handle(batch(&[vec![event("m1", "dev-a", None)], vec![event("m2", "dev-b", None)]])).await;
    let failed: BTreeSet<String> = resp.batch_item_failures.into_iter().map(|f| f.item_identifier).collect();
    assert_eq!(failed, BTreeSet::from(["r0".to_string(), "r1".to_string()]));

    // Redelivered to a stitch whose feed is up: the events are duplicates now, and their profiles are named.
    let changes = queue(&dir, "changes");
    let up = stitch(table, Either::Up(queue(&dir, "delivery")), Either::Up(changes.clone()));
    let resp = up.handle(batch(&[vec![event("m1", "dev-a", None)], vec![event("m2", "dev-b", None)]])).await;
    assert!(resp.batch_item_failures.is_empty());
    let got = named(&changes).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].len(), 2);
}
