//! The AWS tier of imports: the import handler on the DynamoDB, SQS and S3 adapters (moto), driven the way Lambda
//! drives it (the S3 notification on the import queue; receive, `handle`, delete what is not in
//! `batchItemFailures`; continuations come back on the same queue). A 100,000-row gzip CSV imports in one
//! invocation with every row on the events queue once; an import forced to continue three times gives exactly the
//! events of a single pass; a duplicate notification changes nothing; bad rows give the exact reject report.
//! Mirrors `functions/import/tests/import.rs` (the embedded adapters).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tributary_aws::{admin, AwsClients, DynamoTable, S3Store, SqsQueue};
use tributary_core::config::WorkspaceConfig;
use tributary_core::import::{encode_notification_key, state_key, FileId, ImportState, ImportStatus};
use tributary_core::ingest::Envelope;
use tributary_core::metrics::MemoryMetrics;
use tributary_core::ports::{ObjectStore, OutgoingMessage, Queue, ReceivedMessage, TableStore};
use tributary_core::testing::{gzip, partner_csv, IMPORT_WORKSPACE};
use tributary_import::{Import, ImportSettings};
use tributary_tests::aws_env;

type Handler = Import<DynamoTable, SqsQueue, S3Store, MemoryMetrics>;

/// Epoch milliseconds of the fixed clock of the continuation test.
const NOW: i64 = 1_795_000_000_000;
/// How long draining a queue may take before the test gives up (moto may show messages a few at a time).
const DRAIN_WITHIN: Duration = Duration::from_secs(60);
/// Hidden this long once received: longer than any test, so nothing comes back while it runs.
const HIDDEN: Duration = Duration::from_secs(600);
/// What a Lambda invocation is given at most; the handler sees this deadline, as in Lambda.
const INVOCATION: Duration = Duration::from_secs(15 * 60);

/// One import function on moto: its own profile table, events queue and import queue, on a shared bucket (the
/// bucket is part of every messageId, so two stacks importing one object must share it).
struct Stack {
    import: Handler,
    events: SqsQueue,
    imports: SqsQueue,
    imports_arn: String,
    store: S3Store,
    bucket: String,
}

/// A fresh import bucket.
async fn bucket(aws: &AwsClients) -> String {
    admin::create_bucket(aws, &aws_env::unique("imports")).await.expect("create the import bucket")
}

/// The import function on fresh resources in `bucket`, with the real clock or `now`, settings tuned by `tune`.
async fn stack(aws: &AwsClients, bucket: &str, now: Option<i64>, tune: impl FnOnce(&mut ImportSettings)) -> Stack {
    let table = admin::create_table(aws, &aws_env::unique("import-profiles")).await.expect("create the table");
    let events = admin::create_queue(aws, &aws_env::unique("events"), None).await.expect("create the events queue");
    let imports = admin::create_queue(aws, &aws_env::unique("import"), None).await.expect("create the import queue");
    let imports_arn = admin::queue_arn(aws, &imports).await.expect("import queue ARN");
    let workspace: WorkspaceConfig = tributary_core::config::load(IMPORT_WORKSPACE).expect("workspace");
    let mut settings = ImportSettings::new(bucket);
    tune(&mut settings);
    // Built as the Lambda builds it (functions/import/src/main.rs): the bucket root as the object store.
    let import = Import::new(
        aws.dynamo_table(&table),
        aws.sqs_queue(&events),
        aws.sqs_queue(&imports),
        aws.s3_store(bucket, ""),
        MemoryMetrics::default(),
        Arc::new(workspace),
        settings,
    );
    let import = match now {
        Some(t) => import.with_clock(move || t),
        None => import,
    };
    Stack {
        import,
        events: aws.sqs_queue(&events),
        imports: aws.sqs_queue(&imports),
        imports_arn,
        store: aws.s3_store(bucket, ""),
        bucket: bucket.to_owned(),
    }
}

/// Receives what `queue` holds, up to 10 messages; empty only once the queue holds nothing at all (moto may answer
/// a receive with fewer messages than it holds, or none).
async fn receive_some(queue: &SqsQueue, what: &str) -> Vec<ReceivedMessage> {
    let deadline = Instant::now() + DRAIN_WITHIN;
    loop {
        let got = queue.receive(10, HIDDEN, Duration::ZERO).await.expect("receive");
        if !got.is_empty() {
            return got;
        }
        let left = queue.approximate_len().await.expect("approximate_len");
        if left == 0 {
            return got;
        }
        assert!(Instant::now() < deadline, "{what}: {left} messages left that no receive returns");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Receives and deletes every message on `queue`; their bodies.
async fn drain(queue: &SqsQueue, what: &str) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let got = receive_some(queue, what).await;
        if got.is_empty() {
            return out;
        }
        for m in got {
            queue.delete(&m.receipt_handle).await.expect("delete");
            out.push(m.body);
        }
    }
}

impl Stack {
    /// Puts the object and returns the S3 notification of it (unversioned bucket: the ETag names the version).
    async fn put(&self, key: &str, bytes: Vec<u8>, etag: &str) -> String {
        let size = bytes.len();
        self.store.put(key, bytes).await.expect("put the import file");
        json!({"Records": [{
            "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
            "eventName": "ObjectCreated:Put",
            "s3": {
                "s3SchemaVersion": "1.0",
                "bucket": {"name": self.bucket, "arn": format!("arn:aws:s3:::{}", self.bucket)},
                "object": {"key": encode_notification_key(key), "size": size, "eTag": etag, "sequencer": "0A1B2C3D4E5F"}
            }
        }]})
        .to_string()
    }

    /// Sends the notification to the import queue, then runs invocations as Lambda would (receive, handle, delete
    /// what did not fail) until the import queue is empty, continuations included; how many invocations it took.
    async fn run(&self, notification: &str) -> usize {
        let failed = self
            .imports
            .send_batch(&[OutgoingMessage { id: "n".into(), body: notification.to_owned() }])
            .await
            .expect("send the notification");
        assert!(failed.is_empty(), "{failed:?}");
        let mut invocations = 0;
        loop {
            let messages = receive_some(&self.imports, "import queue").await;
            if messages.is_empty() {
                return invocations;
            }
            invocations += 1;
            let event = tributary_local::runtime::sqs_event(&messages, &self.imports_arn).expect("SqsEvent");
            let resp = self.import.handle(event, Some(Instant::now() + INVOCATION)).await;
            let failed: Vec<&str> = resp.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
            assert!(failed.is_empty(), "no record should fail: {failed:?}");
            for m in &messages {
                self.imports.delete(&m.receipt_handle).await.expect("delete a handled record");
            }
        }
    }

    /// Every event on the events queue, by messageId (each exactly once); drains the queue.
    async fn events(&self) -> BTreeMap<String, Value> {
        let mut out = BTreeMap::new();
        for body in drain(&self.events, "events queue").await {
            let env: Envelope = serde_json::from_str(&body).expect("envelope");
            assert_eq!(env.source_id, "partner");
            for e in env.events {
                let id = e["messageId"].as_str().expect("messageId").to_string();
                assert!(out.insert(id.clone(), e).is_none(), "event {id} sent twice");
            }
        }
        out
    }

    fn file(&self, key: &str, etag: &str) -> FileId {
        FileId { bucket: self.bucket.clone(), key: key.into(), version: Some(format!("etag:{etag}")) }
    }

    async fn state(&self, source: &str, key: &str, etag: &str) -> ImportState {
        let item = self
            .import
            .table()
            .get(&state_key(source, &self.file(key, etag)))
            .await
            .expect("read the import state")
            .expect("an import state");
        serde_json::from_value(Value::Object(item.attrs)).expect("import state")
    }

    async fn text(&self, key: &str) -> String {
        let bytes = self.store.get(key).await.expect("get").unwrap_or_else(|| panic!("no object {key}"));
        String::from_utf8(bytes).expect("utf8")
    }
}

const BIG: &str = "imports/partner/2026/full list.csv.gz";
const BIG_ROWS: u64 = 100_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100k_row_gzip_csv_imports_fully_on_aws_and_a_duplicate_notification_changes_nothing() {
    let aws = aws_env::clients().await;
    let bucket = bucket(&aws).await;
    let s = stack(&aws, &bucket, None, |_| {}).await;
    let note = s.put(BIG, gzip(&partner_csv(BIG_ROWS)), "9f3c4b1e0d2a5f6e7d8c9b0a1f2e3d4c").await;

    let started = Instant::now();
    assert_eq!(s.run(&note).await, 1, "one invocation, no continuation");
    let state = s.state("partner", BIG, "9f3c4b1e0d2a5f6e7d8c9b0a1f2e3d4c").await;
    assert_eq!(state.status, ImportStatus::Done, "{:?}", state.error);
    assert_eq!((state.rows, state.accepted, state.rejected), (BIG_ROWS, BIG_ROWS, 0));
    assert_eq!((state.continuations, state.lease_until), (0, 0));
    let imported = started.elapsed();

    let events = s.events().await;
    println!("100,000 rows imported in {imported:?}, events drained after {:?}", started.elapsed());
    assert_eq!(events.len() as u64, BIG_ROWS);
    // Exactly the rows' messageIds: every row once, nothing else.
    let file = s.file(BIG, "9f3c4b1e0d2a5f6e7d8c9b0a1f2e3d4c");
    let expected: BTreeSet<String> = (1..=BIG_ROWS).map(|row| file.message_id(row)).collect();
    assert!(events.keys().cloned().collect::<BTreeSet<_>>() == expected, "the messageIds are those of the rows");
    let e = &events[&file.message_id(8)];
    assert_eq!(e["type"], "identify");
    assert_eq!(e["traits"]["email"], "user7@example.com");
    assert_eq!(e["traits"]["plan"], "pro");
    assert_eq!(e["traits"]["score"], 7.5);
    assert_eq!(e["traits"]["vip"], false);
    assert_eq!(e["traits"]["signup"], "2026-08-17");
    assert_eq!(e["context"]["library"]["name"], "tributary-import");

    // The reports, and nothing else: the reject parts are gone.
    let summary_text = s.text("import-reports/partner/2026/full list.csv.gz.summary.json").await;
    let summary: Value = serde_json::from_str(&summary_text).expect("summary");
    assert_eq!(summary["status"], "done");
    assert_eq!((summary["rows"].as_u64(), summary["accepted"].as_u64()), (Some(BIG_ROWS), Some(BIG_ROWS)));
    assert_eq!(summary["rejected"], 0);
    assert_eq!(summary["rejectsReport"], "import-reports/partner/2026/full list.csv.gz.rejects.csv");
    assert_eq!(s.text("import-reports/partner/2026/full list.csv.gz.rejects.csv").await, "row,column,reason\n");
    let reports: Vec<String> =
        s.store.list("import-reports/partner/").await.expect("list reports").into_iter().map(|o| o.key).collect();
    assert_eq!(
        reports,
        [
            "import-reports/partner/2026/full list.csv.gz.rejects.csv",
            "import-reports/partner/2026/full list.csv.gz.summary.json"
        ]
    );

    // The same notification again (S3 delivers at least once): nothing is read, sent or written.
    assert_eq!(s.run(&note).await, 1);
    assert!(s.events().await.is_empty(), "a duplicate notification sends nothing");
    assert_eq!(s.state("partner", BIG, "9f3c4b1e0d2a5f6e7d8c9b0a1f2e3d4c").await, state);
    assert_eq!(s.text("import-reports/partner/2026/full list.csv.gz.summary.json").await, summary_text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuing_three_times_on_aws_gives_what_one_pass_gives() {
    let aws = aws_env::clients().await;
    // One bucket, key and ETag for both stacks: the messageIds name them.
    let bucket = bucket(&aws).await;
    let key = "imports/partner/parts 2026.csv.gz";
    let etag = "1b2c3d4e5f60718293a4b5c6d7e8f901";
    let file = gzip(&partner_csv(20_000));

    // One clock for both, as both runs of one object share the time it started (it is in its state).
    let once = stack(&aws, &bucket, Some(NOW), |s| s.checkpoint_rows = 3_000).await;
    let note = once.put(key, file, etag).await;
    assert_eq!(once.run(&note).await, 1);
    let single = once.state("partner", key, etag).await;
    assert_eq!((single.status, single.rows, single.continuations), (ImportStatus::Done, 20_000, 0));
    let whole = once.events().await;
    assert_eq!(whole.len(), 20_000);

    // 6,000 rows per invocation: the fourth invocation finishes the file; checkpoints fall mid-run too, and the
    // gzip file is read back from its start in 64 KiB ranged GETs at each resume.
    let parts = stack(&aws, &bucket, Some(NOW), |s| {
        s.max_rows_per_run = Some(6_000);
        s.checkpoint_rows = 2_500;
        s.batch_rows = 333;
        s.chunk_bytes = 64 * 1024;
    })
    .await;
    assert_eq!(parts.run(&note).await, 4, "the notification and three continuations");
    let state = parts.state("partner", key, etag).await;
    assert_eq!(state.status, ImportStatus::Done, "{:?}", state.error);
    assert_eq!(state.continuations, 3);
    assert_eq!((state.rows, state.accepted, state.rejected), (20_000, 20_000, 0));
    let split = parts.events().await;
    assert_eq!(split.len(), whole.len());
    for (id, event) in &whole {
        assert!(split.get(id) == Some(event), "event {id} differs between one pass and four");
    }
    let summary: Value =
        serde_json::from_str(&parts.text("import-reports/partner/parts 2026.csv.gz.summary.json").await)
            .expect("summary");
    assert_eq!((summary["status"].as_str(), summary["continuations"].as_u64()), (Some("done"), Some(3)));
    assert_eq!(parts.text("import-reports/partner/parts 2026.csv.gz.rejects.csv").await, "row,column,reason\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rows_give_the_exact_reject_report_on_aws() {
    let aws = aws_env::clients().await;
    let bucket = bucket(&aws).await;
    let s = stack(&aws, &bucket, None, |_| {}).await;

    let mut text = b"email,plan,score,vip,signup\n".to_vec();
    text.extend_from_slice(b"good1@example.com,pro,1,true,2026-01-02\n"); // 1
    text.extend_from_slice(b"not-an-email,pro,1,true,2026-01-02\n"); // 2 bad email
    text.extend_from_slice(b",pro,1,true,2026-01-02\n"); // 3 no identifier
    text.extend_from_slice(b"a@example.com,pro,lots,true,2026-01-02\n"); // 4 wrong type
    text.extend_from_slice(b"b@example.com,\"pro,1,true,2026-01-02\n"); // 5 broken quoting (to the end of the file)
    let mut tail = b"email,plan,score,vip,signup\n".to_vec();
    tail.extend_from_slice(b"c@example.com,pro,1,true,2026-01-02\n"); // 1
    tail.extend_from_slice(b"d@example.com,pr\xff,1,true,2026-01-02\n"); // 2 invalid UTF-8
    tail.extend_from_slice(b"e@example.com,pro,1,true,2026-01-02,extra\n"); // 3 too many columns
    tail.extend_from_slice(b"f@example.com,pro,1,yes-ish,2026-01-02\n"); // 4 wrong type (bool)
    tail.extend_from_slice(b"g@example.com,pro,1,true,02/01/2026\n"); // 5 bad date
    tail.extend_from_slice(b"h@example.com,team,2,false,2026-03-04\n"); // 6

    let note = s.put("imports/partner/a.csv", text, "e1").await;
    assert_eq!(s.run(&note).await, 1);
    assert_eq!(
        s.text("import-reports/partner/a.csv.rejects.csv").await,
        "row,column,reason\n2,email,bad_email\n3,,no_identifier\n4,score,wrong_type\n5,,broken_quoting\n"
    );
    let state = s.state("partner", "imports/partner/a.csv", "e1").await;
    assert_eq!((state.status, state.rows, state.accepted, state.rejected), (ImportStatus::Done, 5, 1, 4));
    let events = s.events().await;
    assert_eq!(events.len(), 1);
    assert!(events.contains_key(&s.file("imports/partner/a.csv", "e1").message_id(1)), "row 1 is the good one");

    let note = s.put("imports/partner/b.csv", tail, "e1").await;
    assert_eq!(s.run(&note).await, 1);
    assert_eq!(
        s.text("import-reports/partner/b.csv.rejects.csv").await,
        "row,column,reason\n2,,invalid_utf8\n3,,wrong_column_count\n4,vip,wrong_type\n5,signup,bad_date\n"
    );
    let state = s.state("partner", "imports/partner/b.csv", "e1").await;
    assert_eq!((state.status, state.accepted, state.rejected), (ImportStatus::Done, 2, 4));
    assert_eq!(state.reasons.get("wrong_type"), Some(&1));
    let report = s.text("import-reports/partner/b.csv.rejects.csv").await
        + &s.text("import-reports/partner/b.csv.summary.json").await;
    for value in ["e@example.com", "yes-ish", "02/01/2026", "extra"] {
        assert!(!report.contains(value), "reports carry no values: {value}");
    }
    let file = s.file("imports/partner/b.csv", "e1");
    let ids: BTreeSet<String> = s.events().await.into_keys().collect();
    assert_eq!(ids, BTreeSet::from([file.message_id(1), file.message_id(6)]));
    // No reject part is left behind.
    let reports: Vec<String> =
        s.store.list("import-reports/partner/").await.expect("list reports").into_iter().map(|o| o.key).collect();
    assert_eq!(
        reports,
        [
            "import-reports/partner/a.csv.rejects.csv",
            "import-reports/partner/a.csv.summary.json",
            "import-reports/partner/b.csv.rejects.csv",
            "import-reports/partner/b.csv.summary.json"
        ]
    );
}
