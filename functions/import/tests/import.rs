//! The import handler on the embedded adapters (SQLite queues, a directory as the bucket, the memory table):
//! whole files, forced continuations, duplicate notifications, reject reports and malformed files.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::sqs::SqsEvent;
use serde_json::{json, Value};
use tributary_core::config::WorkspaceConfig;
use tributary_core::import::{encode_notification_key, state_key, FileId, ImportState, ImportStatus};
use tributary_core::ingest::Envelope;
use tributary_core::metrics::MemoryMetrics;
use tributary_core::ports::{ObjectStore, Queue, ReceivedMessage, TableStore};
use tributary_core::testing::{gzip, partner_csv, MemoryTable, IMPORT_WORKSPACE};
use tributary_import::{Import, ImportSettings};
use tributary_local::dir_store::DirStore;
use tributary_local::runtime::sqs_event;
use tributary_local::sqlite_queue::{QueueOptions, SqliteQueue};

const BUCKET: &str = "drop";

type Handler = Import<MemoryTable, SqliteQueue, DirStore, MemoryMetrics>;

struct Stack {
    _dir: tempfile::TempDir,
    import: Handler,
    events: SqliteQueue,
    imports: SqliteQueue,
    store: DirStore,
}

/// Epoch milliseconds of the fixed clock of [`stack_at`].
const NOW: i64 = 1_795_000_000_000;

fn stack(tune: impl FnOnce(&mut ImportSettings)) -> Stack {
    stack_at(None, tune)
}

/// A stack whose import clock is `now` (or the real clock).
fn stack_at(now: Option<i64>, tune: impl FnOnce(&mut ImportSettings)) -> Stack {
    build(now, false, tune)
}

/// A stack whose import skips the rows of erased subjects, with the tombstones of the profile table.
fn stack_suppressing(tune: impl FnOnce(&mut ImportSettings)) -> Stack {
    build(None, true, tune)
}

fn build(now: Option<i64>, suppress: bool, tune: impl FnOnce(&mut ImportSettings)) -> Stack {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("queues.sqlite");
    let queue = |name: &str| SqliteQueue::open(&db, name, QueueOptions::default()).expect("queue");
    let root = dir.path().join("objects").join(BUCKET);
    std::fs::create_dir_all(&root).expect("bucket dir");
    let workspace: WorkspaceConfig = tributary_core::config::load(IMPORT_WORKSPACE).expect("workspace");
    let mut settings = ImportSettings::new(BUCKET);
    tune(&mut settings);
    let table = MemoryTable::default();
    let import = Import::new(
        table.clone(),
        queue("events"),
        queue("imports"),
        DirStore::open(&root).expect("store"),
        MemoryMetrics::default(),
        Arc::new(workspace),
        settings,
    );
    let import = match now {
        Some(t) => import.with_clock(move || t),
        None => import,
    };
    let import = if suppress { import.with_suppressions(table) } else { import };
    Stack {
        import,
        events: queue("events"),
        imports: queue("imports"),
        store: DirStore::open(&root).expect("store"),
        _dir: dir,
    }
}

fn notification(key: &str, size: usize, etag: &str) -> String {
    json!({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": BUCKET}, "object": {"key": encode_notification_key(key), "size": size, "eTag": etag}}
    }]})
    .to_string()
}

fn records(bodies: &[String]) -> SqsEvent {
    let messages: Vec<ReceivedMessage> = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| ReceivedMessage {
            message_id: format!("m{i}"),
            receipt_handle: format!("h{i}"),
            body: body.clone(),
            receive_count: 1,
            sent_timestamp_ms: 0,
        })
        .collect();
    sqs_event(&messages, "arn:aws:sqs:local:000000000000:imports").expect("sqs event")
}

async fn drain(q: &SqliteQueue) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let got = q.receive(10, Duration::from_secs(30), Duration::ZERO).await.expect("receive");
        if got.is_empty() {
            return out;
        }
        for m in got {
            q.delete(&m.receipt_handle).await.expect("delete");
            out.push(m.body);
        }
    }
}

impl Stack {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> String {
        let n = bytes.len();
        self.store.put(key, bytes).await.expect("put");
        notification(key, n, "e1")
    }

    /// Handles a notification and every continuation it leads to; how many invocations it took.
    async fn run(&self, body: String) -> usize {
        let mut pending = vec![body];
        let mut invocations = 0;
        while !pending.is_empty() {
            for body in std::mem::take(&mut pending) {
                invocations += 1;
                let resp = self.import.handle(records(&[body]), None).await;
                assert!(resp.batch_item_failures.is_empty(), "no record should fail");
            }
            pending = drain(&self.imports).await;
        }
        invocations
    }

    /// Every event sent, by messageId.
    async fn events(&self) -> BTreeMap<String, Value> {
        let mut out = BTreeMap::new();
        for body in drain(&self.events).await {
            let env: Envelope = serde_json::from_str(&body).expect("envelope");
            for e in env.events {
                let id = e["messageId"].as_str().expect("messageId").to_string();
                assert!(out.insert(id, e).is_none(), "each row is sent once per run");
            }
        }
        out
    }

    async fn state(&self, source: &str, key: &str) -> ImportState {
        let file = FileId { bucket: BUCKET.into(), key: key.into(), version: Some("etag:e1".into()) };
        let item = self.import.table().get(&state_key(source, &file)).await.expect("get").expect("state");
        serde_json::from_value(Value::Object(item.attrs)).expect("state")
    }

    async fn text(&self, key: &str) -> String {
        String::from_utf8(self.store.get(key).await.expect("get").expect("object")).expect("utf8")
    }
}

const BIG: &str = "imports/partner/2026/full list.csv.gz";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100k_row_gzip_csv_imports_fully_and_a_duplicate_notification_changes_nothing() {
    let s = stack(|_| {});
    let note = s.put(BIG, gzip(&partner_csv(100_000))).await;
    assert_eq!(s.run(note.clone()).await, 1);
    let state = s.state("partner", BIG).await;
    assert_eq!(state.status, ImportStatus::Done, "{:?}", state.error);
    assert_eq!((state.rows, state.accepted, state.rejected), (100_000, 100_000, 0));
    let events = s.events().await;
    assert_eq!(events.len(), 100_000);
    let e = events.values().find(|e| e["traits"]["email"] == "user7@example.com").expect("row 8");
    assert_eq!(e["type"], "identify");
    assert_eq!(e["traits"]["plan"], "pro");
    assert_eq!(e["traits"]["score"], 7.5);
    assert_eq!(e["traits"]["vip"], false);
    assert_eq!(e["traits"]["signup"], "2026-08-17");
    assert_eq!(e["context"]["library"]["name"], "tributary-import");

    // The same notification again (S3 delivers at least once): nothing is read or sent.
    assert_eq!(s.run(note).await, 1);
    assert!(s.events().await.is_empty());
    assert_eq!(s.state("partner", BIG).await, state);

    let summary: Value =
        serde_json::from_str(&s.text("import-reports/partner/2026/full list.csv.gz.summary.json").await)
            .expect("summary");
    assert_eq!(summary["status"], "done");
    assert_eq!(summary["accepted"], 100_000);
    assert_eq!(s.text("import-reports/partner/2026/full list.csv.gz.rejects.csv").await, "row,column,reason\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuing_three_times_mid_file_gives_what_one_pass_gives() {
    let file = gzip(&partner_csv(20_000));
    // One clock for both, as both runs of one object share the time it started (it is in its state).
    let once = stack_at(Some(NOW), |s| s.checkpoint_rows = 3_000);
    let note = once.put(BIG, file.clone()).await;
    once.run(note).await;
    let whole = once.events().await;

    // 6,000 rows per invocation: the fourth invocation finishes the file; checkpoints fall mid-run too.
    let parts = stack_at(Some(NOW), |s| {
        s.max_rows_per_run = Some(6_000);
        s.checkpoint_rows = 2_500;
        s.batch_rows = 333;
    });
    let note = parts.put(BIG, file).await;
    assert_eq!(parts.run(note).await, 4);
    let state = parts.state("partner", BIG).await;
    assert_eq!(state.status, ImportStatus::Done);
    assert_eq!(state.continuations, 3);
    assert_eq!((state.rows, state.accepted), (20_000, 20_000));
    let split = parts.events().await;
    assert_eq!(split.len(), whole.len());
    for (id, event) in &whole {
        assert!(split.get(id) == Some(event), "event {id} differs between one pass and four");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rows_give_the_exact_reject_report() {
    let s = stack(|_| {});
    let mut text = b"email,plan,score,vip,signup\n".to_vec();
    text.extend_from_slice(b"good1@example.com,pro,1,true,2026-01-02\n"); // 1
    text.extend_from_slice(b"not-an-email,pro,1,true,2026-01-02\n"); // 2 bad email
    text.extend_from_slice(b",pro,1,true,2026-01-02\n"); // 3 no identifier
    text.extend_from_slice(b"a@example.com,pro,lots,true,2026-01-02\n"); // 4 wrong type
    text.extend_from_slice(b"b@example.com,\"pro,1,true,2026-01-02\n"); // 5 broken quoting (to the end of the file)
    let s2 = stack(|_| {});
    let mut tail = b"email,plan,score,vip,signup\n".to_vec();
    tail.extend_from_slice(b"c@example.com,pro,1,true,2026-01-02\n"); // 1
    tail.extend_from_slice(b"d@example.com,pr\xff,1,true,2026-01-02\n"); // 2 invalid UTF-8
    tail.extend_from_slice(b"e@example.com,pro,1,true,2026-01-02,extra\n"); // 3 too many columns
    tail.extend_from_slice(b"f@example.com,pro,1,yes-ish,2026-01-02\n"); // 4 wrong type (bool)
    tail.extend_from_slice(b"g@example.com,pro,1,true,02/01/2026\n"); // 5 bad date
    tail.extend_from_slice(b"h@example.com,team,2,false,2026-03-04\n"); // 6

    let note = s.put("imports/partner/a.csv", text).await;
    s.run(note).await;
    assert_eq!(
        s.text("import-reports/partner/a.csv.rejects.csv").await,
        "row,column,reason\n2,email,bad_email\n3,,no_identifier\n4,score,wrong_type\n5,,broken_quoting\n"
    );
    let state = s.state("partner", "imports/partner/a.csv").await;
    assert_eq!((state.status, state.rows, state.accepted, state.rejected), (ImportStatus::Done, 5, 1, 4));

    let note = s2.put("imports/partner/b.csv", tail).await;
    s2.run(note).await;
    assert_eq!(
        s2.text("import-reports/partner/b.csv.rejects.csv").await,
        "row,column,reason\n2,,invalid_utf8\n3,,wrong_column_count\n4,vip,wrong_type\n5,signup,bad_date\n"
    );
    let state = s2.state("partner", "imports/partner/b.csv").await;
    assert_eq!((state.accepted, state.rejected), (2, 4));
    assert_eq!(state.reasons.get("wrong_type"), Some(&1));
    let report = s2.text("import-reports/partner/b.csv.rejects.csv").await
        + &s2.text("import-reports/partner/b.csv.summary.json").await;
    for value in ["e@example.com", "yes-ish", "02/01/2026", "extra"] {
        assert!(!report.contains(value), "reports carry no values: {value}");
    }
    assert_eq!(s2.events().await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_files_fail_with_a_clear_message() {
    let s = stack(|_| {});
    let garbage: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("imports/partner/garbage.csv", garbage.clone(), "bad_header"),
        ("imports/partner/garbage.csv.gz", garbage, "not_gzip"),
        (
            "imports/partner/semicolons.csv",
            b"email;plan;score;vip;signup\na@example.com;pro;1;true;2026-01-01\n".to_vec(),
            "header_mismatch",
        ),
        ("imports/partner/header-only.csv", b"email,plan,score,vip,signup\n".to_vec(), "no_rows"),
        ("imports/partner/empty.csv", Vec::new(), "empty_file"),
        ("imports/partner/one-line.csv", vec![b'x'; 10 * 1024 * 1024], "bad_header"),
        ("imports/feed/one-line.jsonl", vec![b'{'; 10 * 1024 * 1024], "all_rejected"),
        ("imports/feed/wrong.csv", b"uid,amount\n1,2\n".to_vec(), "format_mismatch"),
        ("imports/nobody/x.csv", b"a\n1\n".to_vec(), "unknown_source"),
    ];
    for (key, bytes, code) in cases {
        let note = s.put(key, bytes).await;
        s.run(note).await;
        let source = key.split('/').nth(1).unwrap_or_default();
        let state = s.state(source, key).await;
        assert_eq!(state.status, ImportStatus::Failed, "{key}");
        let error = state.error.clone().unwrap_or_default();
        assert!(error.starts_with(code), "{key}: {error}");
        assert_eq!(state.lease_until, 0, "{key}: nothing left held");
        let name = key.strip_prefix("imports/").unwrap_or_default();
        let summary = s.text(&format!("import-reports/{name}.summary.json")).await;
        assert!(summary.contains("\"failed\""), "{key}: {summary}");
    }
    assert!(s.events().await.is_empty(), "nothing from a malformed file reached the pipeline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jsonl_feed_of_garbage_lines_fails_early() {
    let s = stack(|s| s.unreadable_rows = 50);
    let text: String = (0..10_000).map(|i| format!("not json {i}\n")).collect();
    let note = s.put("imports/feed/bad.jsonl", text.into_bytes()).await;
    s.run(note).await;
    let state = s.state("feed", "imports/feed/bad.jsonl").await;
    assert_eq!(state.status, ImportStatus::Failed);
    assert!(state.error.as_deref().unwrap_or("").starts_with("unreadable"), "{:?}", state.error);
    assert_eq!(state.rows, 50, "stopped after the first rows");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sources_pii_policy_applies_to_imported_rows() {
    let s = stack(|_| {});
    let text =
        "email,note\na@example.com,called twice\nb@example.com,paid with 4111 1111 1111 1111\nc@example.com,ok\n";
    let note = s.put("imports/leads/week.csv", text.as_bytes().to_vec()).await;
    s.run(note).await;
    let state = s.state("leads", "imports/leads/week.csv").await;
    assert_eq!((state.status, state.accepted, state.rejected), (ImportStatus::Done, 2, 1));
    assert_eq!(s.text("import-reports/leads/week.csv.rejects.csv").await, "row,column,reason\n2,,pii_dropped\n");
    let events = s.events().await;
    assert_eq!(events.len(), 2);
    assert!(events.values().all(|e| !e.to_string().contains("4111")), "the card never reaches the pipeline");
}

// ---------------------------------------------------------------------------------------------------------------
// Suppression: rows of erased subjects are skipped and counted, never rejected.
// ---------------------------------------------------------------------------------------------------------------

use tributary_core::dsr::suppression::Suppressions;
use tributary_core::identity::{IdType, Identifier};
use tributary_core::ports::PortError;
use tributary_core::profile::layout::identity_key;
use tributary_core::testing::{Call, FaultyTable};

impl Stack {
    /// Writes the tombstone erasure leaves for `kind:raw`.
    fn erase(&self, kind: IdType, raw: &str) {
        let id = Identifier::new(kind, raw, None).expect("a valid identifier");
        let attrs = tributary_core::dsr::tombstone_attrs(&id.kind.to_string(), "req-erase-1", 1);
        self.import.table().put(identity_key(&id), attrs);
    }

    async fn suppressed_rows(&self, source: &str, key: &str) -> u64 {
        let file = FileId { bucket: BUCKET.into(), key: key.into(), version: Some("etag:e1".into()) };
        let item = self.import.table().get(&state_key(source, &file)).await.expect("get").expect("state");
        item.attrs.get(tributary_import::SUPPRESSED_ROWS_ATTR).and_then(Value::as_u64).unwrap_or(0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_of_erased_subjects_are_skipped_counted_and_never_reported_as_rejects() {
    let s = stack_suppressing(|_| {});
    s.erase(IdType::Email, "user3@example.com");
    // Erased under the hashed form only: the raw email of the row still hits it.
    let hashed = Identifier::new(IdType::Email, "USER5@example.com", None).expect("email").hashed();
    s.import.table().put(identity_key(&hashed), tributary_core::dsr::tombstone_attrs("email_sha256", "req-2", 1));
    let mut text = partner_csv(8);
    text.extend_from_slice(b"not-an-email,pro,1,true,2026-01-02\n"); // row 9: a reject
    let key = "imports/partner/erased.csv";
    let note = s.put(key, text).await;
    s.run(note).await;

    let state = s.state("partner", key).await;
    assert_eq!(state.status, ImportStatus::Done, "{:?}", state.error);
    assert_eq!((state.rows, state.accepted, state.rejected), (9, 6, 1));
    assert_eq!(s.suppressed_rows("partner", key).await, 2);
    let events = s.events().await;
    let emails: Vec<&str> = events.values().filter_map(|e| e["traits"]["email"].as_str()).collect();
    assert_eq!(emails.len(), 6);
    assert!(!emails.contains(&"user3@example.com") && !emails.contains(&"user5@example.com"), "{emails:?}");

    // The reject report lists the one bad row only; the summary counts the skipped rows apart.
    assert_eq!(s.text("import-reports/partner/erased.csv.rejects.csv").await, "row,column,reason\n9,email,bad_email\n");
    let summary: Value =
        serde_json::from_str(&s.text("import-reports/partner/erased.csv.summary.json").await).expect("summary");
    assert_eq!((summary["rows"].clone(), summary["accepted"].clone()), (json!(9), json!(6)));
    assert_eq!((summary["rejected"].clone(), summary["suppressed"].clone()), (json!(1), json!(2)));
    assert_eq!(summary["reasons"], json!({"bad_email": 1}));
    assert!(!summary.to_string().contains("user3") && !summary.to_string().contains("req-erase"), "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suppressed_counts_survive_checkpoints_and_continuations() {
    let s = stack_suppressing(|s| {
        s.max_rows_per_run = Some(700);
        s.checkpoint_rows = 300;
        s.batch_rows = 128;
    });
    // Every tenth user erased: 200 of 2,000 rows.
    for i in (0..2_000).step_by(10) {
        s.erase(IdType::Email, &format!("user{i}@example.com"));
    }
    let note = s.put(BIG, gzip(&partner_csv(2_000))).await;
    assert_eq!(s.run(note).await, 3);
    let state = s.state("partner", BIG).await;
    assert_eq!((state.status, state.continuations), (ImportStatus::Done, 2));
    assert_eq!((state.rows, state.accepted, state.rejected), (2_000, 1_800, 0));
    assert_eq!(s.suppressed_rows("partner", BIG).await, 200, "each row counted once across invocations");
    assert_eq!(s.events().await.len(), 1_800);
    let summary: Value =
        serde_json::from_str(&s.text("import-reports/partner/2026/full list.csv.gz.summary.json").await)
            .expect("summary");
    assert_eq!(summary["suppressed"], 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_of_erased_subjects_only_is_done_and_a_governed_source_rejects_none_of_them() {
    let s = stack_suppressing(|_| {});
    for i in 0..3 {
        s.erase(IdType::Email, &format!("user{i}@example.com"));
    }
    // Before the first import: the list is loaded once and then kept for a minute.
    s.erase(IdType::Email, "b@example.com");
    let key = "imports/partner/all-erased.csv";
    let note = s.put(key, partner_csv(3)).await;
    s.run(note).await;
    let state = s.state("partner", key).await;
    assert_eq!(state.status, ImportStatus::Done, "not `all_rejected`: {:?}", state.error);
    assert_eq!((state.rows, state.accepted, state.rejected), (3, 0, 0));
    assert!(s.events().await.is_empty());

    // The leads source drops rows with a card number; an erased subject's row is skipped before that.
    let text = "email,note\na@example.com,ok\nb@example.com,paid with 4111 1111 1111 1111\nc@example.com,ok\n";
    let note = s.put("imports/leads/erased.csv", text.as_bytes().to_vec()).await;
    s.run(note).await;
    let state = s.state("leads", "imports/leads/erased.csv").await;
    assert_eq!((state.status, state.accepted, state.rejected), (ImportStatus::Done, 2, 0));
    assert_eq!(s.suppressed_rows("leads", "imports/leads/erased.csv").await, 1);
    assert_eq!(s.text("import-reports/leads/erased.csv.rejects.csv").await, "row,column,reason\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_waits_while_no_suppression_list_can_be_loaded() {
    use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("queues.sqlite");
    let queue = |name: &str| SqliteQueue::open(&db, name, QueueOptions::default()).expect("queue");
    let root = dir.path().join("objects").join(BUCKET);
    std::fs::create_dir_all(&root).expect("bucket dir");
    // The memory table, whose index scans fail while `down` is set (everything else answers).
    let down = Arc::new(AtomicBool::new(true));
    let scans_down = down.clone();
    let table = FaultyTable::new(MemoryTable::default()).with_rule(move |call| {
        let failing = matches!(call, Call::ScanIndex { .. }) && scans_down.load(Ordering::SeqCst);
        failing.then(|| PortError::Unavailable("dynamodb Scan: unavailable".into()))
    });
    let id = Identifier::new(IdType::Email, "user1@example.com", None).expect("email");
    table.inner().put(identity_key(&id), tributary_core::dsr::tombstone_attrs("email", "req-1", 1));
    let now = Arc::new(AtomicI64::new(0));
    let clock = now.clone();
    let cache = Suppressions::new(table.clone()).with_clock(move || clock.load(Ordering::SeqCst));
    let workspace: WorkspaceConfig = tributary_core::config::load(IMPORT_WORKSPACE).expect("workspace");
    let import = Import::new(
        table.clone(),
        queue("events"),
        queue("imports"),
        DirStore::open(&root).expect("store"),
        MemoryMetrics::default(),
        Arc::new(workspace),
        ImportSettings::new(BUCKET),
    )
    .with_suppression_cache(cache);
    let key = "imports/partner/later.csv";
    let store = DirStore::open(&root).expect("store");
    let bytes = partner_csv(4);
    let note = notification(key, bytes.len(), "e1");
    store.put(key, bytes).await.expect("put");

    // Only the index scan fails: the record comes back, nothing of the file is queued.
    let resp = import.handle(records(std::slice::from_ref(&note)), None).await;
    assert_eq!(resp.batch_item_failures.len(), 1, "the record comes back");
    assert!(drain(&queue("events")).await.is_empty(), "nothing queued before the list is known");
    let file = FileId { bucket: BUCKET.into(), key: key.into(), version: Some("etag:e1".into()) };
    let state_item = table.inner().get(&state_key("partner", &file)).await.expect("get").expect("state");
    let state: ImportState = serde_json::from_value(Value::Object(state_item.attrs)).expect("state");
    assert_eq!((state.status, state.rows, state.lease_until), (ImportStatus::Running, 0, 0), "free to resume");

    // The table answers again and the retry wait is over: the record's next delivery imports the file.
    down.store(false, Ordering::SeqCst);
    now.fetch_add(5_000, Ordering::SeqCst);
    let resp = import.handle(records(&[note]), None).await;
    assert!(resp.batch_item_failures.is_empty());
    let item = table.inner().get(&state_key("partner", &file)).await.expect("get").expect("state");
    assert_eq!(item.attrs.get(tributary_import::SUPPRESSED_ROWS_ATTR), Some(&json!(1)));
    let state: ImportState = serde_json::from_value(Value::Object(item.attrs)).expect("state");
    assert_eq!((state.status, state.rows, state.accepted), (ImportStatus::Done, 4, 3));
    assert_eq!(drain(&queue("events")).await.len(), 1, "one message of 3 events");
}
