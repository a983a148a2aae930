//! The local SQS trigger behaves as Lambda's: records carry receive counts, `batchItemFailures` keeps exactly the
//! failed records for redelivery, a handler error or an unknown identifier returns the whole batch, and the queue's
//! redrive policy moves a poison message to the DLQ.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use tokio::sync::watch;
use tributary_core::ports::{OutgoingMessage, Queue};
use tributary_local::runtime::{run_trigger, SqsHandler, TriggerSettings};
use tributary_local::sqlite_queue::{QueueOptions, SqliteQueue};

/// What the handler saw: per body, the receive counts of each delivery.
type Seen = Arc<Mutex<HashMap<String, Vec<u32>>>>;

fn failures(ids: Vec<String>) -> SqsBatchResponse {
    serde_json::from_value(serde_json::json!({
        "batchItemFailures": ids.into_iter().map(|id| serde_json::json!({"itemIdentifier": id})).collect::<Vec<_>>()
    }))
    .unwrap()
}

/// A handler that records every delivery and decides per body: `ok…` succeeds, `poison…` always fails,
/// `flaky…` fails on its first receive only, `boom` makes the whole invocation error on first receive,
/// `stranger` answers with an identifier that is not in the batch on first receive.
fn handler(seen: Seen) -> SqsHandler {
    Arc::new(move |event: SqsEvent| {
        let seen = seen.clone();
        Box::pin(async move {
            let mut failed = Vec::new();
            let mut error = false;
            for r in &event.records {
                let body = r.body.clone().unwrap();
                let count: u32 = r.attributes["ApproximateReceiveCount"].parse().unwrap();
                assert_eq!(r.event_source.as_deref(), Some("aws:sqs"));
                assert!(r.attributes.contains_key("SentTimestamp"));
                seen.lock().unwrap().entry(body.clone()).or_default().push(count);
                let id = r.message_id.clone().unwrap();
                if body.starts_with("poison") || (body.starts_with("flaky") && count == 1) {
                    failed.push(id);
                } else if body == "boom" && count == 1 {
                    error = true;
                } else if body == "stranger" && count == 1 {
                    failed.push("not-in-this-batch".to_string());
                }
            }
            if error {
                anyhow::bail!("handler crashed");
            }
            Ok(failures(failed))
        })
    })
}

/// Sends `bodies` as one batch to a fresh queue (DLQ after 3 receives), runs the trigger until the queue is empty
/// and the DLQ holds `dead` messages, and returns what the handler saw and the DLQ's bodies.
async fn run(bodies: &[&str], dead: usize) -> (HashMap<String, Vec<u32>>, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("queues.sqlite");
    let opts = QueueOptions { dead_letter: Some(("dlq".into(), 3)) };
    let q = SqliteQueue::open(&db, "events", opts.clone()).unwrap();
    let dlq = SqliteQueue::open(&db, "dlq", QueueOptions::default()).unwrap();
    let msgs: Vec<OutgoingMessage> =
        bodies.iter().enumerate().map(|(i, b)| OutgoingMessage { id: i.to_string(), body: b.to_string() }).collect();
    assert!(q.send_batch(&msgs).await.unwrap().is_empty());

    let seen: Seen = Default::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    let settings = TriggerSettings {
        batch_size: 10,
        visibility_timeout: Duration::from_secs(1),
        wait: Duration::from_millis(100),
        queue_arn: "arn:aws:sqs:local:000000000000:events".into(),
    };
    let consumer = SqliteQueue::open(&db, "events", opts).unwrap();
    let task = tokio::spawn(run_trigger(consumer, handler(seen.clone()), settings, stop_rx));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = q.peek_all().await.unwrap().len();
        let in_dlq = dlq.peek_all().await.unwrap().len();
        if left == 0 && in_dlq == dead {
            break;
        }
        assert!(Instant::now() < deadline, "queue still holds {left}, dlq {in_dlq}: {:?}", seen.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop_tx.send(true).unwrap();
    task.await.unwrap();
    let dead_bodies = dlq.peek_all().await.unwrap().into_iter().map(|m| m.body).collect();
    let seen = seen.lock().unwrap().clone();
    (seen, dead_bodies)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_failures_redeliver_only_the_failed_and_poison_ends_in_the_dlq() {
    let (seen, dead) = run(&["ok-1", "ok-2", "flaky-1", "poison-1"], 1).await;
    // Succeeded records are deleted after one delivery.
    assert_eq!(seen["ok-1"], vec![1], "{seen:?}");
    assert_eq!(seen["ok-2"], vec![1], "{seen:?}");
    // Failed once, redelivered with receive count 2, then deleted.
    assert_eq!(seen["flaky-1"], vec![1, 2]);
    // Poison: received max_receive_count (3) times, then moved to the DLQ instead of a fourth delivery.
    assert_eq!(seen["poison-1"], vec![1, 2, 3]);
    assert_eq!(dead, vec!["poison-1".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_error_returns_the_whole_batch() {
    let (seen, dead) = run(&["ok-3", "boom"], 0).await;
    assert_eq!(seen["ok-3"], vec![1, 2], "{seen:?}");
    assert_eq!(seen["boom"], vec![1, 2]);
    assert!(dead.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identifier_outside_the_batch_fails_the_whole_batch() {
    let (seen, _) = run(&["ok-4", "stranger"], 0).await;
    assert_eq!(seen["ok-4"], vec![1, 2], "{seen:?}");
    assert_eq!(seen["stranger"], vec![1, 2]);
}
