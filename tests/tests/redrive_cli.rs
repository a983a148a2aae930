//! `tributary redrive` against a running `tributary serve`: a webhook that refuses one event with a 400 gets the
//! others; the refused one sits in the delivery DLQ with its reason, is listed by `--dry-run` without its content,
//! left alone by a `--since` after it failed, and delivered once by a redrive after the endpoint is fixed; a
//! second redrive finds nothing. And `tributary redrive --events` on a data dir: event batches go back to the
//! events queue without the events of erased subjects (a batch left empty is deleted), counted in the report.

use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::{json, Value};
use tributary_tests::erasure::Receiver;
use tributary_tests::support::{test_config, tributary_bin, Serve, TEST_WRITE_KEY};

const TIMEOUT: Duration = Duration::from_secs(30);
const POISON: &str = "redrive-poison";

/// The destination refuses the poison event (400) until `fixed`.
async fn start_hook(fixed: Arc<AtomicBool>) -> Receiver {
    Receiver::answering(move |p| {
        let poison = p.json()["messageId"] == POISON;
        if poison && !fixed.load(Ordering::SeqCst) {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::OK
        }
    })
    .await
}

/// (messageId, status answered) per request.
fn seen(hook: &Receiver) -> Vec<(String, u16)> {
    hook.posts().iter().map(|p| (p.json()["messageId"].as_str().unwrap_or_default().to_string(), p.status)).collect()
}

/// Runs `tributary redrive <args> --data-dir …`.
fn redrive(server: &Serve, args: &[&str]) -> Output {
    let out = Command::new(tributary_bin())
        .arg("redrive")
        .args(args)
        .arg("--data-dir")
        .arg(server.data_dir())
        .output()
        .expect("run tributary redrive");
    eprintln!(
        "$ tributary redrive {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "tributary redrive {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

fn report(server: &Serve, args: &[&str]) -> Value {
    let out = redrive(server, args);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("--json printed no JSON ({e})"))
}

fn selected(report: &Value) -> Vec<Value> {
    report["entries"].as_array().into_iter().flatten().filter(|e| e["selected"] == json!(true)).cloned().collect()
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_event_waits_in_the_dlq_and_a_redrive_after_the_fix_delivers_it_once() {
    let fixed = Arc::new(AtomicBool::new(false));
    let hook = start_hook(fixed.clone()).await;
    let url = format!("{}/hook", hook.url());
    let config = test_config().replace(
        "destinations:\n",
        &format!("destinations:\n  - id: hook\n    kind: webhook\n    essential: true\n    transport: {{ url: \"{url}\" }}\n"),
    );
    let server = Serve::start_with_config(&config);
    let ids = ["redrive-good-1", POISON, "redrive-good-2"];
    for id in ids {
        let resp = server
            .http()
            .post(format!("{}/v1/track", server.base_url()))
            .basic_auth(TEST_WRITE_KEY, Some(""))
            .json(&json!({"userId": "redrive-user", "event": "Order Completed", "messageId": id}))
            .send()
            .await
            .expect("track");
        assert_eq!(resp.status(), 200);
    }

    // The good ones arrive; the poison one is refused once and dead-lettered at once (a 400 is not retried).
    wait_until("the good events and one refusal", || {
        let seen = seen(&hook);
        seen.iter().filter(|(_, s)| *s == 200).count() == 2 && seen.iter().any(|(id, s)| id == POISON && *s == 400)
    })
    .await;
    let mut listed = Vec::new();
    wait_until("the dead letter", || {
        listed = selected(&report(&server, &["--destination", "hook", "--dry-run", "--json"]));
        !listed.is_empty()
    })
    .await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["destination"], "hook");
    assert_eq!(listed[0]["reason"], "http_400");
    assert_eq!(listed[0]["messageIds"], json!([POISON]));
    assert!(!listed[0].to_string().contains("Order Completed"), "no event content is listed: {}", listed[0]);
    // Another destination's filter and a --since after the failure select nothing; a dry run moved nothing.
    assert!(selected(&report(&server, &["--destination", "other", "--dry-run", "--json"])).is_empty());
    assert!(selected(&report(&server, &["--since", "2999-01-01", "--dry-run", "--json"])).is_empty());
    assert_eq!(seen(&hook).iter().filter(|(id, _)| id == POISON).count(), 1, "no retry of a 400, no redrive yet");

    fixed.store(true, Ordering::SeqCst);
    let moved = report(&server, &["--destination", "hook", "--json"]);
    assert_eq!(moved["moved"], 1, "{moved}");
    wait_until("the poison event delivered", || seen(&hook).iter().any(|(id, s)| id == POISON && *s == 200)).await;
    let again = report(&server, &["--destination", "hook", "--json"]);
    assert_eq!(again["moved"], 0, "{again}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = seen(&hook);
    for id in ids {
        assert_eq!(
            seen.iter().filter(|(i, s)| i == id && *s == 200).count(),
            1,
            "{id} accepted exactly once: {seen:?}"
        );
    }
    // The text form names the count too.
    let text = String::from_utf8_lossy(&redrive(&server, &["--destination", "hook", "--dry-run"]).stdout).into_owned();
    assert!(text.contains("would move 0 message(s)"), "{text}");
}

// ---------------------------------------------------------------------------------------------------------------
// --events: the events DLQ, without the events of erased subjects.
// ---------------------------------------------------------------------------------------------------------------

use tributary_core::identity::{IdType, Identifier};
use tributary_core::ingest::Envelope;
use tributary_core::ports::{OutgoingMessage, Queue};
use tributary_core::profile::layout::identity_key;
use tributary_local::runtime::{DataDir, EVENTS_DLQ, EVENTS_QUEUE, MAX_RECEIVE_COUNT, PROFILES_TABLE};
use tributary_local::sqlite_queue::{QueueOptions, SqliteQueue};
use tributary_local::sqlite_table::SqliteTable;

/// Runs `tributary redrive --events <args> --data-dir <dir>`.
fn redrive_events(dir: &std::path::Path, args: &[&str]) -> Output {
    let out = Command::new(tributary_bin())
        .args(["redrive", "--events"])
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .output()
        .expect("run tributary redrive --events");
    eprintln!(
        "$ tributary redrive --events {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn events_report(dir: &std::path::Path, args: &[&str]) -> Value {
    let out = redrive_events(dir, args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("--json printed no JSON ({e})"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_events_redrive_drops_the_events_of_erased_subjects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = DataDir(dir.path().to_path_buf());
    let dlq = SqliteQueue::open(&data.queues(), EVENTS_DLQ, QueueOptions::default()).expect("events dlq");
    let options = QueueOptions { dead_letter: Some((EVENTS_DLQ.to_string(), MAX_RECEIVE_COUNT)) };
    let events = SqliteQueue::open(&data.queues(), EVENTS_QUEUE, options).expect("events queue");
    // The subject of `erased@example.com` was erased: its identity item is a tombstone.
    let table = SqliteTable::open(&data.tables(), PROFILES_TABLE).expect("profile table");
    let id = Identifier::new(IdType::Email, "erased@example.com", None).expect("email");
    let tombstone = tributary_core::ports::Item {
        key: identity_key(&id),
        attrs: tributary_core::dsr::tombstone_attrs("email", "req-erase", 1),
        version: 2,
        expires_at: None,
    };
    let put =
        tributary_core::ports::WriteOp::Put { item: tombstone, condition: tributary_core::ports::Condition::None };
    tributary_core::ports::TableStore::write(&table, put).await.expect("tombstone");

    let batch = |events: Value| json!({"v": 1, "sourceId": "web", "events": events}).to_string();
    let bodies = [
        batch(json!([
            {"type": "identify", "userId": "erased-1", "messageId": "ev-erased", "traits": {"email": "Erased@Example.com"}},
            {"type": "track", "userId": "kept-1", "event": "Order Completed", "messageId": "ev-kept"},
        ])),
        batch(json!([{"type": "track", "anonymousId": "a-1", "event": "Viewed", "messageId": "ev-erased-2",
                      "context": {"traits": {"email": "erased@example.com"}}}])),
    ];
    let messages: Vec<OutgoingMessage> =
        bodies.iter().enumerate().map(|(i, b)| OutgoingMessage { id: i.to_string(), body: b.clone() }).collect();
    assert!(dlq.send_batch(&messages).await.expect("send").is_empty());

    // A dry run lists counts and the messageIds that would go back, never the dropped events.
    let dry = events_report(dir.path(), &["--dry-run", "--json"]);
    assert_eq!((dry["moved"].clone(), dry["suppressed"].clone()), (json!(0), json!(2)), "{dry}");
    let text = dry.to_string();
    assert!(!text.contains("ev-erased") && !text.contains("erased@") && !text.contains("Order"), "{text}");
    let out = redrive_events(dir.path(), &["--dry-run"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("would move 1 message(s) and drop 2 event(s) of erased subjects"), "{text}");

    let moved = events_report(dir.path(), &["--json"]);
    assert_eq!(
        (moved["moved"].clone(), moved["emptied"].clone(), moved["suppressed"].clone()),
        (json!(1), json!(1), json!(2)),
        "{moved}"
    );
    let got = events.receive(10, Duration::from_secs(30), Duration::ZERO).await.expect("receive");
    assert_eq!(got.len(), 1);
    let envelope: Envelope = serde_json::from_str(&got[0].body).expect("an envelope");
    let ids: Vec<&str> = envelope.events.iter().filter_map(|e| e["messageId"].as_str()).collect();
    assert_eq!((envelope.source_id.as_str(), ids), ("web", vec!["ev-kept"]));
    assert_eq!(dlq.approximate_len().await.expect("len"), 0, "both batches left the DLQ");

    // Nothing left: the text form says so.
    let out = redrive_events(dir.path(), &[]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("moved 0 message(s); dropped 0 event(s) of erased subjects"), "{text}");
    // --events moves event batches: a destination filter makes no sense there.
    let out = redrive_events(dir.path(), &["--destination", "hook"]);
    assert!(!out.status.success(), "--events with --destination must be refused");
}
