//! Contract of [`Queue`]: SQS standard-queue semantics (at-least-once, no order, visibility timeout, receive
//! count, dead-letter queue by redrive policy).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::now_epoch_ms;
use crate::ports::{OutgoingMessage, Queue, ReceivedMessage, MAX_SEND_BATCH};

/// Short visibility timeout for the steps that wait for a message to come back (SQS counts in whole seconds).
const VIS_SHORT: Duration = Duration::from_secs(1);
/// Visibility timeout that outlasts any step: a message received with it stays hidden until deleted or changed.
const VIS_LONG: Duration = Duration::from_secs(30);
/// Long-poll wait of one receive call inside the loops.
const POLL_WAIT: Duration = Duration::from_secs(1);
/// How long a step waits for messages it expects before declaring them lost.
const EXPECT_WITHIN: Duration = Duration::from_secs(5);
/// Allowed difference between the adapter's `sent_timestamp_ms` and the test's clock.
const CLOCK_SLACK_MS: i64 = 60_000;

fn out(id: &str, body: &str) -> OutgoingMessage {
    OutgoingMessage { id: id.to_string(), body: body.to_string() }
}

async fn send_ok<Q: Queue>(q: &Q, messages: &[OutgoingMessage], ctx: &str) {
    let failed = q
        .send_batch(messages)
        .await
        .unwrap_or_else(|e| panic!("queue contract [{ctx}]: send_batch of {} messages failed: {e}", messages.len()));
    assert!(failed.is_empty(), "queue contract [{ctx}]: send_batch reported failed entries: {failed:?}");
}

/// Receives until `n` messages arrived or `within` passed, hiding them for `vis`; asks for no more than are still
/// missing so that nothing extra is hidden behind the test's back.
async fn receive_n<Q: Queue>(q: &Q, n: usize, vis: Duration, within: Duration, ctx: &str) -> Vec<ReceivedMessage> {
    let deadline = Instant::now() + within;
    let mut got: Vec<ReceivedMessage> = Vec::new();
    while got.len() < n && Instant::now() < deadline {
        let max = (n - got.len()).clamp(1, MAX_SEND_BATCH);
        let batch = q
            .receive(max, vis, POLL_WAIT)
            .await
            .unwrap_or_else(|e| panic!("queue contract [{ctx}]: receive failed: {e}"));
        assert!(batch.len() <= max, "queue contract [{ctx}]: receive(max = {max}) returned {} messages", batch.len());
        got.extend(batch);
    }
    assert_eq!(
        got.len(),
        n,
        "queue contract [{ctx}]: expected {n} messages within {within:?}, got {}: {:?}",
        got.len(),
        bodies_preview(&got)
    );
    got
}

/// One receive that must come back empty (every message is hidden, deleted or moved).
async fn expect_empty<Q: Queue>(q: &Q, wait: Duration, ctx: &str) {
    let got = q
        .receive(MAX_SEND_BATCH, VIS_SHORT, wait)
        .await
        .unwrap_or_else(|e| panic!("queue contract [{ctx}]: receive failed: {e}"));
    assert!(got.is_empty(), "queue contract [{ctx}]: expected no visible message, got {:?}", bodies_preview(&got));
}

async fn expect_len<Q: Queue>(q: &Q, expected: u64, ctx: &str) {
    let len =
        q.approximate_len().await.unwrap_or_else(|e| panic!("queue contract [{ctx}]: approximate_len failed: {e}"));
    assert_eq!(len, expected, "queue contract [{ctx}]: approximate_len (visible + in flight) on an idle queue");
}

async fn delete_ok<Q: Queue>(q: &Q, receipt_handle: &str, ctx: &str) {
    q.delete(receipt_handle).await.unwrap_or_else(|e| panic!("queue contract [{ctx}]: delete failed: {e}"));
}

async fn delete_all<Q: Queue>(q: &Q, messages: &[ReceivedMessage], ctx: &str) {
    for m in messages {
        delete_ok(q, &m.receipt_handle, ctx).await;
    }
}

/// Bodies shortened for assertion messages (a 200 KB body would drown the report).
fn bodies_preview(messages: &[ReceivedMessage]) -> Vec<String> {
    messages
        .iter()
        .map(|m| {
            let mut s: String = m.body.chars().take(60).collect();
            if s.len() < m.body.len() {
                s.push_str(&format!("…({} bytes)", m.body.len()));
            }
            s
        })
        .collect()
}

fn sorted_bodies(messages: &[ReceivedMessage]) -> Vec<String> {
    let mut v: Vec<String> = messages.iter().map(|m| m.body.clone()).collect();
    v.sort();
    v
}

fn assert_fresh_delivery(m: &ReceivedMessage, sent_after_ms: i64, sent_before_ms: i64, ctx: &str) {
    assert!(!m.message_id.is_empty(), "queue contract [{ctx}]: empty message_id");
    assert!(!m.receipt_handle.is_empty(), "queue contract [{ctx}]: empty receipt_handle");
    assert_eq!(m.receive_count, 1, "queue contract [{ctx}]: receive_count of a first delivery");
    assert!(
        m.sent_timestamp_ms >= sent_after_ms - CLOCK_SLACK_MS && m.sent_timestamp_ms <= sent_before_ms + CLOCK_SLACK_MS,
        "queue contract [{ctx}]: sent_timestamp_ms {} is not near the send time {sent_after_ms}..{sent_before_ms} \
         (epoch milliseconds expected)",
        m.sent_timestamp_ms
    );
}

/// Runs the queue contract on `q`, a fresh empty queue without a dead-letter queue. Panics on the first
/// violation. Takes about 8 s.
pub async fn queue_contract<Q: Queue>(q: &Q) {
    expect_len(q, 0, "fresh queue").await;
    empty_receive_waits(q).await;
    round_trip(q).await;
    batch_of_ten(q).await;
    visibility_timeout(q).await;
    change_visibility(q).await;
    long_poll_wakes_up(q).await;
    expect_len(q, 0, "end of queue contract").await;
}

async fn empty_receive_waits<Q: Queue>(q: &Q) {
    let ctx = "empty receive";
    let wait = Duration::from_secs(1);
    let started = Instant::now();
    let got = q
        .receive(MAX_SEND_BATCH, VIS_SHORT, wait)
        .await
        .unwrap_or_else(|e| panic!("queue contract [{ctx}]: receive failed: {e}"));
    let elapsed = started.elapsed();
    assert!(got.is_empty(), "queue contract [{ctx}]: a fresh queue returned {:?}", bodies_preview(&got));
    assert!(
        elapsed >= wait.mul_f64(0.9),
        "queue contract [{ctx}]: an empty long poll of {wait:?} returned after {elapsed:?} (it must wait)"
    );
    assert!(elapsed < wait + Duration::from_secs(5), "queue contract [{ctx}]: an empty long poll took {elapsed:?}");
}

async fn round_trip<Q: Queue>(q: &Q) {
    let ctx = "round trip";
    let unicode = "Grüße, 世界! 🎉 \"quoted\" <tag attr='x'> & ampersand\nsecond line\ttab — ünïcödé";
    let json = r#"{"type":"track","event":"Order Completed","properties":{"total":12.5,"items":[1,2,3]}}"#;
    // ~200 KB, below SQS's 256 KiB limit, with multi-byte characters so byte and char lengths differ.
    let mut large = String::with_capacity(200_100);
    while large.len() < 200_000 {
        large.push_str("tributary-ünïcode-");
    }
    let sent = [out("plain", "hello"), out("unicode", unicode), out("json", json), out("large", &large)];
    let before = now_epoch_ms();
    send_ok(q, &sent, ctx).await;
    let after = now_epoch_ms();

    let got = receive_n(q, sent.len(), VIS_LONG, EXPECT_WITHIN, ctx).await;
    let mut expected: Vec<String> = sent.iter().map(|m| m.body.clone()).collect();
    expected.sort();
    let actual = sorted_bodies(&got);
    for (i, (a, e)) in actual.iter().zip(&expected).enumerate() {
        assert!(
            a == e,
            "queue contract [{ctx}]: body #{i} (sorted) differs: got {} bytes starting {:?}, sent {} bytes starting {:?}",
            a.len(),
            a.chars().take(40).collect::<String>(),
            e.len(),
            e.chars().take(40).collect::<String>()
        );
    }
    let ids: BTreeSet<&str> = got.iter().map(|m| m.message_id.as_str()).collect();
    assert_eq!(ids.len(), got.len(), "queue contract [{ctx}]: message ids are not distinct: {ids:?}");
    for m in &got {
        assert_fresh_delivery(m, before, after, ctx);
    }

    expect_len(q, sent.len() as u64, "round trip: in-flight messages count").await;
    expect_empty(q, Duration::from_secs(1), "round trip: received messages stay hidden").await;
    delete_all(q, &got, ctx).await;
    expect_len(q, 0, "round trip: after delete").await;
    // Deleting again with the same (now stale) handles is not an error.
    delete_all(q, &got, "round trip: second delete of the same handles").await;
}

async fn batch_of_ten<Q: Queue>(q: &Q) {
    let ctx = "batch of 10";
    let sent: Vec<OutgoingMessage> =
        (0..MAX_SEND_BATCH).map(|i| out(&format!("entry-{i}"), &format!("batch body {i} ✓"))).collect();
    let before = now_epoch_ms();
    send_ok(q, &sent, ctx).await;
    let after = now_epoch_ms();
    expect_len(q, MAX_SEND_BATCH as u64, "batch of 10: after send").await;

    // `max` is an upper bound.
    let first = q
        .receive(1, VIS_LONG, POLL_WAIT)
        .await
        .unwrap_or_else(|e| panic!("queue contract [{ctx}]: receive(1) failed: {e}"));
    assert!(first.len() <= 1, "queue contract [{ctx}]: receive(max = 1) returned {} messages", first.len());
    let rest = receive_n(q, MAX_SEND_BATCH - first.len(), VIS_LONG, EXPECT_WITHIN, ctx).await;
    let got: Vec<ReceivedMessage> = first.into_iter().chain(rest).collect();

    let mut expected: Vec<String> = sent.iter().map(|m| m.body.clone()).collect();
    expected.sort();
    assert_eq!(sorted_bodies(&got), expected, "queue contract [{ctx}]: bodies (sorted)");
    let ids: BTreeSet<&str> = got.iter().map(|m| m.message_id.as_str()).collect();
    assert_eq!(ids.len(), MAX_SEND_BATCH, "queue contract [{ctx}]: message ids are not distinct: {ids:?}");
    for m in &got {
        assert_fresh_delivery(m, before, after, ctx);
    }
    expect_empty(q, Duration::ZERO, "batch of 10: nothing visible while all are in flight").await;
    delete_all(q, &got, ctx).await;
    expect_len(q, 0, "batch of 10: after delete").await;
}

async fn visibility_timeout<Q: Queue>(q: &Q) {
    let ctx = "visibility timeout";
    send_ok(q, &[out("vis", "comes back after the visibility timeout")], ctx).await;
    let first = receive_n(q, 1, VIS_SHORT, EXPECT_WITHIN, ctx).await.remove(0);
    let hidden_at = Instant::now();
    assert_eq!(first.receive_count, 1, "queue contract [{ctx}]: first receive_count");
    expect_empty(q, Duration::ZERO, "visibility timeout: hidden right after receive").await;

    let second = receive_n(q, 1, VIS_LONG, EXPECT_WITHIN, "visibility timeout: redelivery").await.remove(0);
    let hidden_for = hidden_at.elapsed();
    assert!(
        hidden_for >= VIS_SHORT.mul_f64(0.8),
        "queue contract [{ctx}]: redelivered after {hidden_for:?}, before the {VIS_SHORT:?} visibility timeout"
    );
    assert_eq!(second.message_id, first.message_id, "queue contract [{ctx}]: message_id must survive redelivery");
    assert_eq!(second.body, first.body, "queue contract [{ctx}]: body of the redelivery");
    assert_eq!(second.receive_count, 2, "queue contract [{ctx}]: receive_count of the redelivery");
    assert_eq!(
        second.sent_timestamp_ms, first.sent_timestamp_ms,
        "queue contract [{ctx}]: sent_timestamp_ms must survive redelivery"
    );
    assert_ne!(
        second.receipt_handle, first.receipt_handle,
        "queue contract [{ctx}]: every receive must hand out a new receipt handle"
    );

    // A stale handle is not an error (whether it still deletes is up to the service); the newest one deletes.
    delete_ok(q, &first.receipt_handle, "visibility timeout: delete with the stale handle").await;
    delete_ok(q, &second.receipt_handle, "visibility timeout: delete with the newest handle").await;
    expect_len(q, 0, "visibility timeout: after delete with the newest handle").await;
}

async fn change_visibility<Q: Queue>(q: &Q) {
    let ctx = "change_visibility";
    send_ok(q, &[out("cv", "made visible again")], ctx).await;
    let first = receive_n(q, 1, VIS_LONG, EXPECT_WITHIN, ctx).await.remove(0);
    q.change_visibility(&first.receipt_handle, Duration::ZERO)
        .await
        .unwrap_or_else(|e| panic!("queue contract [{ctx}]: change_visibility(0) failed: {e}"));
    let started = Instant::now();
    let second =
        receive_n(q, 1, VIS_LONG, Duration::from_secs(3), "change_visibility(0): visible at once").await.remove(0);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "queue contract [{ctx}]: the message took {:?} to come back after change_visibility(0)",
        started.elapsed()
    );
    assert_eq!(second.message_id, first.message_id, "queue contract [{ctx}]: same message after change_visibility(0)");
    assert_eq!(second.receive_count, 2, "queue contract [{ctx}]: receive_count after change_visibility(0)");

    // Shortening a long timeout makes the message come back after the new, shorter one.
    q.change_visibility(&second.receipt_handle, VIS_SHORT)
        .await
        .unwrap_or_else(|e| panic!("queue contract [{ctx}]: change_visibility(1 s) failed: {e}"));
    let third = receive_n(q, 1, VIS_LONG, EXPECT_WITHIN, "change_visibility(1 s): comes back").await.remove(0);
    assert_eq!(third.message_id, first.message_id, "queue contract [{ctx}]: same message after change_visibility(1 s)");
    assert_eq!(third.receive_count, 3, "queue contract [{ctx}]: receive_count after change_visibility(1 s)");
    delete_ok(q, &third.receipt_handle, ctx).await;
    expect_len(q, 0, "change_visibility: after delete").await;
}

async fn long_poll_wakes_up<Q: Queue>(q: &Q) {
    let ctx = "long poll";
    let wait = Duration::from_secs(4);
    let send_after = Duration::from_millis(500);
    let started = Instant::now();
    let (received, ()) = tokio::join!(q.receive(MAX_SEND_BATCH, VIS_LONG, wait), async {
        tokio::time::sleep(send_after).await;
        send_ok(q, &[out("late", "sent while a receive was waiting")], ctx).await;
    });
    let elapsed = started.elapsed();
    let mut got = received.unwrap_or_else(|e| panic!("queue contract [{ctx}]: receive failed: {e}"));
    if got.is_empty() {
        // A service may answer a long poll just before the send lands; the message must then be there next time.
        got = receive_n(q, 1, VIS_LONG, EXPECT_WITHIN, ctx).await;
    }
    assert_eq!(got.len(), 1, "queue contract [{ctx}]: {:?}", bodies_preview(&got));
    assert_eq!(got[0].body, "sent while a receive was waiting", "queue contract [{ctx}]: body");
    assert!(elapsed < wait + Duration::from_secs(5), "queue contract [{ctx}]: receive took {elapsed:?}");
    delete_all(q, &got, ctx).await;
}

/// Runs the dead-letter contract: `q` is fresh and empty and moves a message to `dlq` (fresh, empty) once it has
/// been received `max_receive_count` times without a delete (callers use 2). Takes about `max_receive_count` + 4 s.
pub async fn queue_dlq_contract<Q: Queue>(q: &Q, dlq: &Q, max_receive_count: u32) {
    assert!(max_receive_count >= 1, "queue dlq contract: max_receive_count must be at least 1");
    expect_len(q, 0, "dlq: fresh source queue").await;
    expect_len(dlq, 0, "dlq: fresh dead-letter queue").await;

    // A message deleted within the limit never reaches the dead-letter queue.
    let ctx = "dlq: healthy message";
    send_ok(q, &[out("healthy", "processed in time")], ctx).await;
    let mut last = None;
    for attempt in 1..=max_receive_count {
        let m = receive_n(q, 1, VIS_LONG, EXPECT_WITHIN, ctx).await.remove(0);
        assert_eq!(m.receive_count, attempt, "queue dlq contract [{ctx}]: receive_count");
        if attempt < max_receive_count {
            q.change_visibility(&m.receipt_handle, Duration::ZERO)
                .await
                .unwrap_or_else(|e| panic!("queue dlq contract [{ctx}]: change_visibility(0) failed: {e}"));
        }
        last = Some(m);
    }
    if let Some(m) = last {
        delete_ok(q, &m.receipt_handle, ctx).await;
    }
    expect_len(q, 0, "dlq: healthy message deleted").await;
    expect_empty(dlq, Duration::ZERO, "dlq: a deleted message is not dead-lettered").await;

    // A poison message: received max_receive_count times, never deleted, then moved on the next receive.
    let ctx = "dlq: poison message";
    let body = "poison ☠ {\"bad\": true}";
    send_ok(q, &[out("poison", body)], ctx).await;
    let mut first: Option<ReceivedMessage> = None;
    for attempt in 1..=max_receive_count {
        let m = receive_n(q, 1, VIS_SHORT, EXPECT_WITHIN, ctx).await.remove(0);
        assert_eq!(m.receive_count, attempt, "queue dlq contract [{ctx}]: receive_count before the move");
        assert_eq!(m.body, body, "queue dlq contract [{ctx}]: body before the move");
        if let Some(f) = &first {
            assert_eq!(m.message_id, f.message_id, "queue dlq contract [{ctx}]: message_id across redeliveries");
        } else {
            first = Some(m);
        }
    }
    let Some(first) = first else {
        panic!("queue dlq contract [{ctx}]: no receive happened");
    };
    // Let the last visibility timeout run out, then receive: the message must not come back to `q`.
    tokio::time::sleep(VIS_SHORT + Duration::from_millis(300)).await;
    expect_empty(q, Duration::from_secs(1), "dlq: poison message is not delivered again from the source queue").await;

    let moved = receive_n(dlq, 1, VIS_LONG, EXPECT_WITHIN, "dlq: poison message arrives in the dead-letter queue")
        .await
        .remove(0);
    assert_eq!(moved.body, body, "queue dlq contract [{ctx}]: body in the dead-letter queue");
    assert_eq!(moved.message_id, first.message_id, "queue dlq contract [{ctx}]: message_id in the dead-letter queue");
    assert_eq!(
        moved.sent_timestamp_ms, first.sent_timestamp_ms,
        "queue dlq contract [{ctx}]: sent_timestamp_ms in the dead-letter queue"
    );
    assert!(moved.receive_count >= 1, "queue dlq contract [{ctx}]: receive_count in the dead-letter queue");
    expect_len(q, 0, "dlq: source queue after the move").await;
    expect_len(dlq, 1, "dlq: dead-letter queue after the move").await;
    delete_ok(dlq, &moved.receipt_handle, ctx).await;
    expect_len(dlq, 0, "dlq: dead-letter queue after delete").await;
}
