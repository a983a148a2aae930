//! The DSR worker on the embedded stores: people are built by the real stitch handler (two devices, a login, a
//! merge), then requests are carried out and the table is searched for anything left of the subject.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lambda_events::sqs::SqsEvent;
use serde_json::{json, Value};
use tributary_core::config::WorkspaceConfig;
use tributary_core::dsr::{
    parse_create, request_key, waiting_key, Api, DsrRecord, DsrTask, RequestStatus, ResultLinks, Signer,
};
use tributary_core::metrics::MemoryMetrics;
use tributary_core::ports::{Condition, Item, ObjectStore, PortError, Queue, TableStore, WriteOp};
use tributary_core::profile::read::{self, Lookup};
use tributary_core::sha256_hex;
use tributary_core::testing::{FaultyTable, MemoryObjects, MemoryTable, StoredVersion};
use tributary_dsr_worker::{DsrWorker, ForwardError, Holdings, Http, ObjectPlace, Outcome, WorkerSettings};
use tributary_local::dir_store::DirStore;
use tributary_local::sqlite_queue::{QueueOptions, SqliteQueue};
use tributary_stitch::{Stitch, StitchSettings};

/// 2026-11-02T10:00:00Z.
const T0: i64 = 1_793_613_600_000;
const DAY: i64 = 86_400_000;

const ANN_EMAIL: &str = "ann.erasable@example.com";
const ANN_USER: &str = "user-ann-4711";
const ANN_PHONE_ANON: &str = "anon-ann-phone-7f3a";
const ANN_LAPTOP_ANON: &str = "anon-ann-laptop-c21e";
const BOB_EMAIL: &str = "bob.keeper@example.com";
const BOB_USER: &str = "user-bob-0815";
const BOB_ANON: &str = "anon-bob-9d9d";

fn workspace() -> Arc<WorkspaceConfig> {
    let yaml = r#"
workspace: dsr
consent:
  purposes: [{ id: analytics }, { id: advertising }]
sources:
  - { id: web, write_key_sha256: ["6b86b273ff34fce19d6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b"], class: 1P }
destinations:
  - { id: hook, kind: webhook, essential: true, transport: { url: "https://hooks.example.com/in" } }
  - { id: ads, kind: webhook, essential: true, transport: { url: "https://ads.example.com/in" } }
dsr:
  processor_domain: dsr.example.com
  controller_id: acme
"#;
    Arc::new(tributary_core::config::load(yaml).unwrap_or_else(|e| panic!("workspace: {e:?}")))
}

/// Signs with a digest; the RSA signer has its own tests, here only "signed with the body" matters.
struct DigestSigner;

impl Signer for DigestSigner {
    fn sign(&self, body: &[u8]) -> Result<String, PortError> {
        Ok(sha256_hex(body))
    }
    fn certificate_pem(&self) -> &str {
        "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"
    }
}

struct Links;

impl ResultLinks for Links {
    async fn link(&self, key: &str, expires_at_ms: i64) -> Result<String, PortError> {
        Ok(format!("https://results.example/{key}?expires={expires_at_ms}"))
    }
}

/// One callback: URL, headers, body.
type Call = (String, BTreeMap<String, String>, Value);

/// Records callbacks; answers `status` (shared, so a test can make the controller fail).
#[derive(Clone, Default)]
struct Controller {
    calls: Arc<Mutex<Vec<Call>>>,
    deletions: Arc<Mutex<Vec<(String, String, Value)>>>,
    status: Arc<AtomicU32>,
}

impl Http for Controller {
    async fn forward_deletion(
        &self,
        dest: &tributary_core::delivery::DestinationConfig,
        message_id: &str,
        event: serde_json::Map<String, Value>,
    ) -> Result<(), ForwardError> {
        self.deletions.lock().expect("lock").push((dest.id.clone(), message_id.to_string(), Value::Object(event)));
        Ok(())
    }

    async fn post_callback(
        &self,
        url: &str,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    ) -> Result<u16, String> {
        let headers = headers.into_iter().map(|(k, v)| (k.to_string(), v)).collect::<BTreeMap<_, _>>();
        assert_eq!(headers.get("x-opendsr-signature"), Some(&sha256_hex(&body)), "signed over the exact body");
        let body: Value = serde_json::from_slice(&body).expect("json body");
        self.calls.lock().expect("lock").push((url.to_string(), headers, body));
        match self.status.load(Ordering::SeqCst) {
            0 => Ok(202),
            n => Ok(n as u16),
        }
    }
}

/// The worker's view of the table: the same items, with writes that fail once a budget is spent (a crash in the
/// middle of an erasure).
type Worker = WorkerOn<DirStore>;
/// The worker on another object store (a versioned one, standing in for the versioned S3 buckets).
type WorkerOn<O> = DsrWorker<FaultyTable<MemoryTable>, SqliteQueue, O, DigestSigner, Links, Controller>;

const DLQS: [&str; 3] = ["events-dlq", "delivery-dlq", "profile-changes-dlq"];

struct World {
    dir: tempfile::TempDir,
    table: MemoryTable,
    dsr: SqliteQueue,
    results: DirStore,
    clock: Arc<AtomicI64>,
    stitch: Stitch<MemoryTable, SqliteQueue, MemoryMetrics>,
    controller: Controller,
    /// The worker's table (shares `table`'s items).
    faults: FaultyTable<MemoryTable>,
    sent: u32,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().expect("dir");
        let db = dir.path().join("queues.sqlite");
        let open = |n: &str| SqliteQueue::open(&db, n, QueueOptions::default()).expect("queue");
        let table = MemoryTable::default();
        let clock = Arc::new(AtomicI64::new(T0));
        let c = clock.clone();
        let stitch = Stitch::new(
            table.clone(),
            open("delivery"),
            MemoryMetrics::default(),
            workspace(),
            StitchSettings::default(),
        )
        .expect("stitch")
        .with_clock(move || c.load(Ordering::SeqCst));
        let results = DirStore::open(&dir.path().join("objects")).expect("objects");
        World {
            faults: FaultyTable::new(table.clone()),
            table,
            dsr: open("dsr"),
            results,
            clock,
            stitch,
            controller: Controller::default(),
            sent: 0,
            dir,
        }
    }

    fn now(&self) -> i64 {
        self.clock.load(Ordering::SeqCst)
    }

    fn worker(&self) -> Worker {
        self.worker_on(self.results.clone())
    }

    /// The worker with `store` for exports and for every searched place.
    fn worker_on<O: ObjectStore + Clone>(&self, store: O) -> WorkerOn<O> {
        let c = self.clock.clone();
        let table = self.faults.clone();
        let settings = WorkerSettings {
            backoff_base: Duration::from_secs(1),
            queue_empty_wait: Duration::ZERO,
            ..WorkerSettings::default()
        };
        let db = self.dir.path().join("queues.sqlite");
        let queues = DLQS
            .iter()
            .map(|n| (n.to_string(), SqliteQueue::open(&db, n, QueueOptions::default()).expect("queue")))
            .collect();
        let place = |name: &str, prefix: &str, whole_files: bool| ObjectPlace {
            name: name.into(),
            store: store.clone(),
            prefix: prefix.into(),
            whole_files,
            imports: whole_files,
        };
        let objects = vec![
            place("quarantine", "quarantine/", false),
            place("import_files", "imports/", true),
            place("import_reports", "import-reports/", false),
            place("export:archive", "exports/", false),
        ];
        DsrWorker::new(
            table,
            self.dsr.clone(),
            store,
            DigestSigner,
            Links,
            self.controller.clone(),
            workspace(),
            settings,
        )
        .with_holdings(Holdings { queues, objects })
        .with_clock(move || {
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(c.load(Ordering::SeqCst)) * 1_000_000)
                .expect("time")
        })
    }

    /// One event through stitch at the current time.
    async fn send(&mut self, mut event: Value) {
        self.sent += 1;
        self.clock.fetch_add(1_000, Ordering::SeqCst);
        let at = read::rfc3339(self.now()).expect("time");
        event["messageId"] = json!(format!("m-{}", self.sent));
        event["timestamp"] = json!(at);
        event["receivedAt"] = json!(at);
        let records = json!({ "Records": [{
            "messageId": format!("r{}", self.sent),
            "body": json!({"v": 1, "sourceId": "web", "events": [event]}).to_string(),
            "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {}, "eventSource": "aws:sqs",
        }]});
        let sqs: SqsEvent = serde_json::from_value(records).expect("sqs event");
        assert!(self.stitch.handle(sqs).await.batch_item_failures.is_empty());
    }

    /// Ann: a phone and a laptop browse anonymously, she logs in on both (merging them), with consent on the way.
    /// Bob: his own login and browsing.
    async fn people(&mut self) {
        self.send(json!({"type": "track", "event": "Viewed", "anonymousId": ANN_PHONE_ANON,
            "context": {"consent": {"categoryPreferences": {"analytics": true}}}}))
            .await;
        self.send(json!({"type": "page", "name": "Home", "anonymousId": ANN_LAPTOP_ANON})).await;
        self.send(json!({"type": "identify", "userId": ANN_USER, "anonymousId": ANN_PHONE_ANON,
            "traits": {"email": ANN_EMAIL, "plan": "pro", "name": "Ann Erasable"}}))
            .await;
        self.send(json!({"type": "identify", "userId": ANN_USER, "anonymousId": ANN_LAPTOP_ANON})).await;
        self.send(json!({"type": "track", "event": "Order Completed", "userId": ANN_USER,
            "properties": {"total": 42}}))
            .await;
        self.send(json!({"type": "identify", "userId": BOB_USER, "anonymousId": BOB_ANON,
            "traits": {"email": BOB_EMAIL, "plan": "free"}}))
            .await;
        self.send(json!({"type": "track", "event": "Viewed", "userId": BOB_USER})).await;
    }

    /// A request stored as the API stores it (record and waiting entry).
    fn request(&self, kind: &str, identities: Value, callbacks: &[&str], waiting_ms: i64) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        let body = json!({
            "regulation": "gdpr", "subject_request_id": id, "subject_request_type": kind,
            "submitted_time": "2026-11-01T10:00:00Z", "subject_identities": identities,
            "status_callback_urls": callbacks,
        });
        let req = parse_create(&serde_json::to_vec(&body).expect("json"), Api::V2, None).expect("valid request");
        let rec = DsrRecord::new(&req, "ops", false, self.now(), 30 * DAY, waiting_ms);
        self.table.put(request_key(&id), rec.to_attrs());
        let mut w = serde_json::Map::new();
        w.insert("id".into(), json!(id));
        self.table.put(waiting_key(rec.not_before.unwrap_or(rec.received), &id), w);
        id
    }

    fn record(&self, id: &str) -> DsrRecord {
        let item = self.table.items().into_iter().find(|i| i.key == request_key(id)).expect("record");
        DsrRecord::from_attrs(&item.attrs).expect("record decodes")
    }

    /// Every item's key and attributes as text, lowercased.
    fn dump(&self) -> String {
        let mut out = String::new();
        for item in self.table.items() {
            out.push_str(&format!("{} {} {}\n", item.key.pk, item.key.sk, Value::Object(item.attrs)).to_lowercase());
        }
        out
    }

    /// Drains the DSR queue into tasks.
    async fn tasks(&self) -> Vec<DsrTask> {
        let mut out = Vec::new();
        loop {
            let got = self.dsr.receive(10, Duration::from_secs(30), Duration::ZERO).await.expect("receive");
            if got.is_empty() {
                return out;
            }
            for m in got {
                out.push(serde_json::from_str(&m.body).expect("task"));
                self.dsr.delete(&m.receipt_handle).await.expect("delete");
            }
        }
    }
}

fn email_identity(email: &str) -> Value {
    json!([{"identity_type": "email", "identity_value": email, "identity_format": "raw"}])
}

/// Ann's identifiers and the forms a store might hold them in: raw, and SHA-256 of the value.
fn ann_traces() -> Vec<String> {
    let mut out = Vec::new();
    for v in [ANN_EMAIL, ANN_USER, ANN_PHONE_ANON, ANN_LAPTOP_ANON, "ann erasable"] {
        out.push(v.to_lowercase());
        out.push(sha256_hex(v.as_bytes()));
    }
    out
}

#[tokio::test]
async fn erasure_by_email_removes_every_trace_of_the_person_and_leaves_others() {
    let mut w = World::new();
    w.people().await;
    let before = w.dump();
    for t in ann_traces().iter().take(8) {
        assert!(before.contains(t.as_str()) || t.len() == 64, "the fixture should hold {t} before");
    }
    let bob_before = read::resolve(&w.table, &Lookup::Identifier(email(BOB_EMAIL))).await.expect("read");
    let bob_before = read::view(&w.table, &bob_before.expect("bob")).await.expect("view");

    let id = w.request("erasure", email_identity(ANN_EMAIL), &["https://controller.example/cb"], 0);
    let outcome = w.worker().process(&id).await.expect("process");
    assert!(matches!(outcome, Outcome::Completed { .. }), "{outcome:?}");

    let after = w.dump();
    for t in ann_traces() {
        assert!(!after.contains(t.as_str()), "{t} is still stored:\n{after}");
    }
    // Nothing of Ann resolves any more; Bob is exactly as he was.
    for id in [email(ANN_EMAIL), user(ANN_USER), anon(ANN_PHONE_ANON), anon(ANN_LAPTOP_ANON)] {
        assert!(read::resolve(&w.table, &Lookup::Identifier(id)).await.expect("read").is_none());
    }
    let bob = read::resolve(&w.table, &Lookup::Identifier(email(BOB_EMAIL))).await.expect("read").expect("bob");
    assert_eq!(read::view(&w.table, &bob).await.expect("view"), bob_before);

    let rec = w.record(&id);
    assert_eq!(rec.status, RequestStatus::Completed);
    let receipts: BTreeMap<&str, (&str, u64)> =
        rec.receipts.iter().map(|r| (r.store.as_str(), (r.action.as_str(), r.count))).collect();
    // email, email_sha256, user id and two anonymous ids.
    assert_eq!(receipts["identities"], ("suppressed", 5), "{receipts:?}");
    assert_eq!(receipts["profiles"], ("deleted", 2), "two devices' profiles, one merged into the other");
    assert_eq!(receipts["events"], ("deleted", 5));
    assert_eq!(receipts["dedup_records"], ("deleted", 5));
    assert!(receipts["ledger"].1 >= 5, "{receipts:?}");
    let text = serde_json::to_string(&rec.to_attrs()).expect("json").to_lowercase();
    assert!(!text.contains("ann"), "the request holds no identifier: {text}");

    // Audit rows for the start and the end; callbacks queued for in_progress and completed.
    let audit: Vec<String> = w
        .table
        .items()
        .into_iter()
        .filter(|i| i.key.pk.starts_with("audit#"))
        .filter_map(|i| i.attrs.get("action").and_then(Value::as_str).map(str::to_string))
        .collect();
    for a in ["dsr.start", "dsr.resolve", "dsr.complete"] {
        assert!(audit.iter().any(|x| x == a), "{a} not in {audit:?}");
    }
    // The completion's audit row holds the same receipts as the final status.
    let completion = w
        .table
        .items()
        .into_iter()
        .filter(|i| i.key.pk.starts_with("audit#"))
        .filter_map(|i| tributary_core::dsr::AuditRow::from_attrs(&i.attrs).ok())
        .find(|r| r.action == "dsr.complete")
        .expect("a completion row");
    assert_eq!(completion.receipts, rec.receipts);
    assert_eq!(completion.target, id);
    let tasks = w.tasks().await;
    assert_eq!(
        tasks,
        vec![
            DsrTask::Callback { id: id.clone(), status: RequestStatus::InProgress, url: 0 },
            DsrTask::Callback { id: id.clone(), status: RequestStatus::Completed, url: 0 },
        ]
    );

    // Ann comes back with the same email and a known device: stitch drops it.
    w.send(json!({"type": "identify", "anonymousId": ANN_PHONE_ANON, "traits": {"email": ANN_EMAIL}})).await;
    w.send(json!({"type": "track", "event": "Viewed", "userId": ANN_USER})).await;
    let later = w.dump();
    for t in ann_traces() {
        assert!(!later.contains(t.as_str()), "{t} came back:\n{later}");
    }
    // Another run of the same task changes nothing.
    assert_eq!(w.worker().process(&id).await.expect("again"), Outcome::AlreadyDone(RequestStatus::Completed));
}

#[tokio::test]
async fn a_long_history_is_erased_page_by_page() {
    let mut w = World::new();
    w.people().await;
    let ann = read::resolve(&w.table, &Lookup::Identifier(email(ANN_EMAIL))).await.expect("read").expect("ann");
    // Far more rows than one page: the erasure must keep reading until the partition is empty.
    for i in 0..1_234i64 {
        let row = tributary_core::profile::EventRow {
            source: "web".into(),
            message_id: format!("old-{i}"),
            kind: "track".into(),
            name: Some("Viewed".into()),
            ts: T0 - DAY - i * 1_000,
            received: T0 - DAY,
            event: json!({"type": "track", "event": "Viewed", "userId": ANN_USER, "messageId": format!("old-{i}")}),
            truncated: false,
        };
        let key = tributary_core::ports::ItemKey::new(
            tributary_core::profile::layout::profile_pk(&ann.profile_id),
            tributary_core::profile::layout::event_sk(
                row.ts,
                &tributary_core::profile::layout::message_hash("web", &row.message_id),
            ),
        );
        w.table.put(key, row.to_attrs());
    }
    let id = w.request("erasure", email_identity(ANN_EMAIL), &[], 0);
    assert!(matches!(w.worker().process(&id).await.expect("process"), Outcome::Completed { .. }));
    let rec = w.record(&id);
    let events = rec.receipts.iter().find(|r| r.store == "events").expect("events receipt");
    assert_eq!(events.count, 5 + 1_234);
    let after = w.dump();
    for t in ann_traces() {
        assert!(!after.contains(t.as_str()), "{t} is still stored");
    }
}

#[tokio::test]
async fn an_erasure_interrupted_anywhere_finishes_on_retry() {
    // Crash after each write in turn, until a run has room to finish.
    for (crashes, crash_after) in (0u64..).enumerate() {
        let mut w = World::new();
        w.people().await;
        // An export Ann was given earlier: its marker in her partition is what leads the erasure to it.
        let access = w.request("access", email_identity(ANN_EMAIL), &[], 0);
        assert!(matches!(w.worker().process(&access).await.expect("access"), Outcome::Completed { .. }));
        let export_key = w.record(&access).result.expect("an export").key;
        let id = w.request("erasure", email_identity(ANN_EMAIL), &[], 0);
        w.faults.crash_after_writes(Some(crash_after));
        if w.worker().process(&id).await.is_ok() {
            assert!(crashes >= 5, "an erasure takes more than {crashes} writes");
            break;
        }
        w.faults.crash_after_writes(None);
        let outcome = w.worker().process(&id).await.expect("retry");
        assert!(matches!(outcome, Outcome::Completed { .. }), "crash_after {crash_after}: {outcome:?}");
        let export = w.results.get(&export_key).await.expect("get");
        assert!(export.is_none(), "crash_after {crash_after}: the export is left");
        let after = w.dump();
        for t in ann_traces() {
            assert!(!after.contains(t.as_str()), "crash_after {crash_after}: {t} is still stored");
        }
        assert!(read::resolve(&w.table, &Lookup::Identifier(email(BOB_EMAIL))).await.expect("read").is_some());
    }
}

#[tokio::test]
async fn access_exports_everything_and_a_later_erasure_deletes_the_export() {
    let mut w = World::new();
    w.people().await;
    let id = w.request(
        "access",
        json!([{"identity_type": "controller_customer_id", "identity_value": ANN_USER,
        "identity_format": "raw"}]),
        &["https://controller.example/cb"],
        0,
    );
    let worker = w.worker();
    assert!(matches!(worker.process(&id).await.expect("process"), Outcome::Completed { .. }));
    let rec = w.record(&id);
    let result = rec.result.clone().expect("an export");
    assert_eq!(result.expires_at, w.now() + 7 * DAY);

    let archive = w.results.get(&result.key).await.expect("get").expect("the export exists");
    let files = untar(&archive);
    let lines = |f: &str| -> Vec<Value> {
        files[&format!("{f}.jsonl")].lines().map(|l| serde_json::from_str(l).expect("json line")).collect()
    };
    let total: usize = files.iter().filter(|(k, _)| k.ends_with(".jsonl")).map(|(_, v)| v.lines().count()).sum();
    assert_eq!(result.count, total as u64, "results_count counts every line");
    let ids: Vec<String> = lines("identities")
        .iter()
        .map(|i| format!("{}:{}", i["type"].as_str().unwrap_or(""), i["value"].as_str().unwrap_or("")))
        .collect();
    for want in [
        format!("email:{ANN_EMAIL}"),
        format!("user_id:{ANN_USER}"),
        format!("anonymous_id:{ANN_PHONE_ANON}"),
        format!("anonymous_id:{ANN_LAPTOP_ANON}"),
    ] {
        assert!(ids.contains(&want), "{want} not in {ids:?}");
    }
    assert!(!ids.iter().any(|i| i.contains("bob")), "only Ann: {ids:?}");
    assert_eq!(lines("events").len(), 5);
    assert_eq!(lines("profile").len(), 1);
    assert_eq!(lines("profile")[0]["traits"]["plan"]["value"], "pro");
    let traits = lines("traits");
    let plan = traits.iter().find(|t| t["name"] == "plan").expect("plan trait");
    assert_eq!(plan["source"], "web", "traits carry their provenance");
    let consent = lines("consent");
    assert!(
        consent.iter().any(|c| c["purpose"] == "analytics" && c["granted"] == true && c.get("current").is_none()),
        "history: {consent:?}"
    );
    assert!(consent.iter().any(|c| c["purpose"] == "analytics" && c["current"] == true), "current: {consent:?}");
    assert!(lines("ledger").len() >= 5);
    let manifest: Value = serde_json::from_str(&files["manifest.json"]).expect("manifest");
    assert_eq!(manifest["subject_request_id"], id.as_str());

    // The callback of `completed` carries the link and the count.
    let tasks = w.tasks().await;
    assert_eq!(tasks.len(), 2);
    for t in &tasks {
        let DsrTask::Callback { id, status, url } = t else { panic!("{t:?}") };
        assert!(matches!(worker.callback(id, *status, *url).await.expect("callback"), Outcome::Called(202)));
    }
    let calls = w.controller.calls.lock().expect("lock").clone();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].1.get("x-opendsr-processor-domain").map(String::as_str), Some("dsr.example.com"));
    assert_eq!(calls[0].2["request_status"], "in_progress");
    assert!(calls[0].2.get("results_url").is_none());
    assert_eq!(calls[1].2["request_status"], "completed");
    assert_eq!(calls[1].2["status_callback_url"], "https://controller.example/cb");
    assert_eq!(calls[1].2["results_count"], total);
    assert!(calls[1].2["results_url"].as_str().is_some_and(|u| u.contains(&result.key)));

    // Erasing Ann afterwards also deletes the export she was given.
    let erase = w.request("erasure", email_identity(ANN_EMAIL), &[], 0);
    assert!(matches!(w.worker().process(&erase).await.expect("erase"), Outcome::Completed { .. }));
    let rec = w.record(&erase);
    assert!(w.results.get(&result.key).await.expect("get").is_none(), "the old export is gone: {:?}", rec.receipts);
    assert!(rec.receipts.iter().any(|r| r.store == "dsr_exports" && r.count == 1), "{:?}", rec.receipts);
    let _ = w.dir.path();
}

#[tokio::test]
async fn a_waiting_period_holds_the_request_until_the_sweep_queues_it() {
    let mut w = World::new();
    w.people().await;
    let id = w.request("erasure", email_identity(ANN_EMAIL), &[], 3 * DAY);
    let worker = w.worker();
    assert_eq!(worker.process(&id).await.expect("early"), Outcome::Waiting);
    assert_eq!(worker.sweep().await.expect("sweep"), 0, "not due yet");
    assert!(w.tasks().await.is_empty());
    w.clock.fetch_add(3 * DAY, Ordering::SeqCst);
    assert_eq!(worker.sweep().await.expect("sweep"), 1);
    assert_eq!(w.tasks().await, vec![DsrTask::Process { id: id.clone() }]);
    assert!(matches!(worker.process(&id).await.expect("due"), Outcome::Completed { .. }));
    assert_eq!(worker.sweep().await.expect("sweep"), 0, "the waiting entry went with the start");
    assert!(!w.table.items().iter().any(|i| i.key.pk == "dsr#waiting"));
}

#[tokio::test]
async fn a_cancelled_request_is_left_alone() {
    let mut w = World::new();
    w.people().await;
    let id = w.request("erasure", email_identity(ANN_EMAIL), &[], 0);
    let key = request_key(&id);
    let item = w.table.items().into_iter().find(|i| i.key == key).expect("record");
    let mut rec = DsrRecord::from_attrs(&item.attrs).expect("decode");
    rec.transition(RequestStatus::Cancelled, w.now()).expect("cancel");
    w.table
        .transact(vec![WriteOp::Put {
            item: Item { key, attrs: rec.to_attrs(), version: item.version + 1, expires_at: None },
            condition: Condition::VersionIs(item.version),
        }])
        .await
        .expect("write");
    assert_eq!(w.worker().process(&id).await.expect("process"), Outcome::AlreadyDone(RequestStatus::Cancelled));
    assert!(read::resolve(&w.table, &Lookup::Identifier(email(ANN_EMAIL))).await.expect("read").is_some());
}

#[tokio::test]
async fn failed_callbacks_are_retried_later_and_wait_for_their_status() {
    let mut w = World::new();
    w.people().await;
    let id = w.request("erasure", email_identity(ANN_EMAIL), &["https://controller.example/cb"], 0);
    let worker = w.worker();
    // Before the request has started, an in_progress callback has nothing to announce yet.
    assert!(worker.callback(&id, RequestStatus::InProgress, 0).await.is_err());
    worker.process(&id).await.expect("process");
    w.controller.status.store(500, Ordering::SeqCst);
    let body = DsrTask::Callback { id: id.clone(), status: RequestStatus::Completed, url: 0 }.to_body();
    w.dsr.send_batch(&[tributary_core::ports::OutgoingMessage { id: "0".into(), body }]).await.expect("send");
    let _ = w.tasks().await;
    let got = w.dsr.receive(10, Duration::from_secs(1), Duration::ZERO).await.expect("receive");
    assert!(got.is_empty());
    let records = json!({ "Records": [{
        "messageId": "cb-1", "receiptHandle": "nope",
        "body": DsrTask::Callback { id: id.clone(), status: RequestStatus::Completed, url: 0 }.to_body(),
        "attributes": {"ApproximateReceiveCount": "3"}, "messageAttributes": {}, "eventSource": "aws:sqs",
    }]});
    let resp = worker.handle(serde_json::from_value(records).expect("event")).await;
    assert_eq!(resp.batch_item_failures.len(), 1, "a 500 from the controller is retried");
    w.controller.status.store(0, Ordering::SeqCst);
    assert_eq!(worker.callback(&id, RequestStatus::Completed, 0).await.expect("retry"), Outcome::Called(202));
    // A callback URL index the request does not have is nothing to do.
    assert_eq!(worker.callback(&id, RequestStatus::Completed, 5).await.expect("none"), Outcome::Unknown);
}

#[tokio::test]
async fn erasure_reaches_dead_letters_files_and_the_destinations_that_had_the_person() {
    let mut w = World::new();
    w.people().await;
    let ann = read::resolve(&w.table, &Lookup::Identifier(email(ANN_EMAIL))).await.expect("read").expect("ann");
    let bob = read::resolve(&w.table, &Lookup::Identifier(email(BOB_EMAIL))).await.expect("read").expect("bob");
    let (ann_id, bob_id) = (ann.profile_id.clone(), bob.profile_id.clone());
    // Ann's events reached `hook`; nothing of hers reached `ads`.
    // Ann's events reached `hook` (several receipts) and `lake`, a destination no longer configured.
    for m in ["m-1", "m-2", "m-3", "m-4"] {
        w.table.put(tributary_core::delivery::receipt_key(Some(&ann_id), "hook", m), serde_json::Map::new());
    }
    w.table.put(tributary_core::delivery::receipt_key(Some(&ann_id), "lake", "m-5"), serde_json::Map::new());
    w.table.put(tributary_core::delivery::receipt_key(Some(&bob_id), "ads", "m-6"), serde_json::Map::new());

    let db = w.dir.path().join("queues.sqlite");
    let dlq = |n: &str| SqliteQueue::open(&db, n, QueueOptions::default()).expect("queue");
    let send = |q: SqliteQueue, body: Value| async move {
        q.send_batch(&[tributary_core::ports::OutgoingMessage { id: "0".into(), body: body.to_string() }])
            .await
            .expect("send");
    };
    send(
        dlq("events-dlq"),
        json!({"v": 1, "sourceId": "web", "events": [
        {"type": "identify", "userId": ANN_USER, "traits": {"email": ANN_EMAIL}},
        {"type": "identify", "userId": BOB_USER, "traits": {"email": BOB_EMAIL}}]}),
    )
    .await;
    send(dlq("events-dlq"), json!({"v": 1, "sourceId": "web", "events": [{"type": "track", "anonymousId": BOB_ANON}]}))
        .await;
    send(
        dlq("delivery-dlq"),
        json!({"envelope": {"profile": ann_id, "event": {"type": "track"}}, "reason": "http_500"}),
    )
    .await;
    send(dlq("profile-changes-dlq"), json!({"v": 1, "profiles": [ann_id, bob_id]})).await;

    let put = |key: &str, text: String| {
        let store = w.results.clone();
        let key = key.to_string();
        async move { store.put(&key, text.into_bytes()).await.expect("put") }
    };
    put("quarantine/web/2026-11-02/a.json", json!({"anonymousId": ANN_LAPTOP_ANON, "event": "Bad"}).to_string()).await;
    put("quarantine/web/2026-11-02/b.json", json!({"anonymousId": BOB_ANON, "event": "Bad"}).to_string()).await;
    put("imports/web/partners.csv", format!("email,plan\n{BOB_EMAIL},free\n{},pro\n", ANN_EMAIL.to_uppercase())).await;
    put("imports/web/others.csv", format!("email,plan\n{BOB_EMAIL},free\n")).await;
    put("import-reports/web/partners.csv.rejects.csv", "line,reason\n3,bad_email\n".into()).await;
    put(
        "exports/hook/dt=2026-11-02/x.jsonl",
        format!("{}\n{}\n", json!({"userId": ANN_USER}), json!({"userId": BOB_USER})),
    )
    .await;

    let id = w.request("erasure", email_identity(ANN_EMAIL), &[], 0);
    assert!(matches!(w.worker().process(&id).await.expect("process"), Outcome::Completed { .. }));

    let rec = w.record(&id);
    let receipts: BTreeMap<&str, (&str, u64)> =
        rec.receipts.iter().map(|r| (r.store.as_str(), (r.action.as_str(), r.count))).collect();
    assert_eq!(receipts["events-dlq"], ("deleted", 1), "{receipts:?}");
    assert_eq!(receipts["delivery-dlq"], ("deleted", 1));
    assert_eq!(receipts["profile-changes-dlq"], ("deleted", 1));
    assert_eq!(receipts["quarantine"], ("deleted", 1));
    assert_eq!(receipts["import_files"], ("deleted", 1));
    assert_eq!(receipts["import_reports"], ("deleted", 0));
    assert_eq!(receipts["export:archive"], ("deleted", 1));
    assert_eq!(receipts["destination:hook"], ("forwarded", 1));
    assert!(!receipts.contains_key("destination:ads"), "ads never had Ann: {receipts:?}");
    assert_eq!(receipts["destination:lake"], ("not_supported", 0), "a destination gone from the config is named");

    // The deletion names Ann to `hook`, and only `hook` got one.
    let deletions = w.controller.deletions.lock().expect("lock").clone();
    assert_eq!(deletions.len(), 1);
    let (dest, message_id, event) = &deletions[0];
    assert_eq!(dest, "hook");
    assert_eq!(message_id, &format!("dsr-{id}-hook"));
    assert_eq!(event["type"], "delete");
    assert_eq!(event["userId"], ANN_USER);
    assert_eq!(event["traits"]["email"], ANN_EMAIL);
    assert_eq!(event["context"]["dsr"]["subject_request_id"], id.as_str());

    // What is left: Bob everywhere, Ann nowhere.
    let mut left = String::new();
    for n in DLQS {
        let q = dlq(n);
        loop {
            let got = q.receive(10, Duration::from_secs(60), Duration::ZERO).await.expect("receive");
            if got.is_empty() {
                break;
            }
            for m in got {
                left.push_str(&m.body);
                left.push('\n');
            }
        }
    }
    for meta in w.results.list("").await.expect("list") {
        let bytes = w.results.get(&meta.key).await.expect("get").expect("object");
        left.push_str(&format!("{} {}\n", meta.key, String::from_utf8_lossy(&bytes)));
    }
    let left = left.to_lowercase();
    for t in ann_traces().into_iter().chain([ann_id.to_lowercase()]) {
        assert!(!left.contains(t.as_str()), "{t} is still in:\n{left}");
    }
    for t in [BOB_USER.to_lowercase(), BOB_ANON.to_lowercase(), BOB_EMAIL.to_lowercase(), bob_id.to_lowercase()] {
        assert!(left.contains(t.as_str()), "{t} should be left:\n{left}");
    }
    assert!(left.contains("imports/web/others.csv"), "a partner file without Ann stays");
    assert!(!left.contains("imports/web/partners.csv "), "a partner file with Ann goes whole");
}

/// Objects as the versioned buckets hold them before Ann's erasure, with history: Ann's quarantined event, a
/// partner file and an S3 export naming her and Bob, Bob's own objects, a report whose earlier version named her
/// (overwritten by its writer before the erasure), and a file of Bob's overwritten twice (its history is his).
async fn versioned_holdings(store: &MemoryObjects) {
    let put = |key: &'static str, text: String| async move { store.put(key, text.into_bytes()).await.expect("put") };
    put("quarantine/web/2026-11-02/a.json", json!({"anonymousId": ANN_LAPTOP_ANON, "event": "Bad"}).to_string()).await;
    put("quarantine/web/2026-11-02/b.json", json!({"anonymousId": BOB_ANON, "event": "Bad"}).to_string()).await;
    put("quarantine/web/2026-11-02/c.json", json!({"anonymousId": BOB_ANON, "event": "First"}).to_string()).await;
    put("quarantine/web/2026-11-02/c.json", json!({"anonymousId": BOB_ANON, "event": "Second"}).to_string()).await;
    // Re-uploaded: the first upload named only Bob, the second names Ann too.
    put("imports/web/partners.csv", format!("email,plan\n{BOB_EMAIL},free\n")).await;
    put("imports/web/partners.csv", format!("email,plan\n{BOB_EMAIL},free\n{},pro\n", ANN_EMAIL.to_uppercase())).await;
    put("imports/web/others.csv", format!("email,plan\n{BOB_EMAIL},free\n")).await;
    put("import-reports/web/partners.csv.rejects.csv", format!("line,reason,value\n3,bad_plan,{ANN_EMAIL}\n")).await;
    put("import-reports/web/partners.csv.rejects.csv", "line,reason,value\n".into()).await;
    put(
        "exports/hook/dt=2026-11-02/x.jsonl",
        format!("{}\n{}\n", json!({"userId": ANN_USER}), json!({"userId": BOB_USER})),
    )
    .await;
}

/// Every version the store holds (current and earlier), as `key@version: text` lines, lowercased.
fn every_version(store: &MemoryObjects) -> Vec<String> {
    store
        .all_versions()
        .into_iter()
        .filter_map(|v| {
            let bytes = v.bytes?;
            Some(format!("{}@{}: {}", v.key, v.version_id, String::from_utf8_lossy(&bytes)).to_lowercase())
        })
        .collect()
}

/// The earlier versions holding bytes (delete markers left out) of `key`.
fn earlier_of(versions: &[StoredVersion], key: &str) -> usize {
    versions.iter().filter(|v| v.key == key && !v.latest && v.bytes.is_some()).count()
}

/// What an erasure of Ann must leave in the versioned store: no version of anything names her, what it deleted or
/// rewrote kept no earlier version, and Bob's objects keep theirs.
fn assert_versioned_store_clean(store: &MemoryObjects, ann_profile: &str, when: &str) {
    let versions = store.all_versions();
    let text = every_version(store);
    for t in ann_traces().into_iter().chain([ann_profile.to_lowercase()]) {
        if let Some(line) = text.iter().find(|l| l.contains(t.as_str())) {
            panic!("{when}: {t} is still in a version: {line}\nevery version:\n{}", text.join("\n"));
        }
    }
    for changed in [
        "quarantine/web/2026-11-02/a.json",
        "imports/web/partners.csv",
        "import-reports/web/partners.csv.rejects.csv",
        "exports/hook/dt=2026-11-02/x.jsonl",
    ] {
        assert_eq!(earlier_of(&versions, changed), 0, "{when}: {changed} kept an earlier version: {versions:?}");
    }
    assert!(
        !versions.iter().any(|v| v.key == "quarantine/web/2026-11-02/a.json" && v.latest && v.bytes.is_some()),
        "{when}: Ann's quarantined event is gone"
    );
    let current = |key: &str| versions.iter().find(|v| v.key == key && v.latest).and_then(|v| v.bytes.clone());
    assert_eq!(
        current("exports/hook/dt=2026-11-02/x.jsonl").map(|b| String::from_utf8_lossy(&b).into_owned()),
        Some(format!("{}\n", json!({"userId": BOB_USER}))),
        "{when}: the export keeps Bob's line"
    );
    assert_eq!(earlier_of(&versions, "quarantine/web/2026-11-02/c.json"), 1, "{when}: Bob's history stays");
    for t in [BOB_EMAIL.to_lowercase(), BOB_ANON.to_lowercase(), BOB_USER.to_lowercase()] {
        assert!(text.iter().any(|l| l.contains(t.as_str())), "{when}: Bob's {t} should be left");
    }
}

#[tokio::test]
async fn on_versioned_buckets_erasure_leaves_no_earlier_version_that_names_the_person() {
    let mut w = World::new();
    w.people().await;
    let store = MemoryObjects::versioned();
    versioned_holdings(&store).await;
    let ann = read::resolve(&w.table, &Lookup::Identifier(email(ANN_EMAIL))).await.expect("read").expect("ann");
    // An access export of Ann first, overwritten once (a retried export writes it again): the erasure deletes it
    // with its earlier version.
    let access = w.request("access", email_identity(ANN_EMAIL), &[], 0);
    assert!(matches!(w.worker_on(store.clone()).process(&access).await.expect("access"), Outcome::Completed { .. }));
    let export_key = w.record(&access).result.expect("an export").key;
    let archive = store.get(&export_key).await.expect("get").expect("the export");
    store.put(&export_key, archive).await.expect("overwrite the export");
    let before = every_version(&store);
    assert!(before.iter().any(|l| l.contains(&ANN_EMAIL.to_lowercase())), "the fixture names Ann");

    let id = w.request("erasure", email_identity(ANN_EMAIL), &[], 0);
    assert!(matches!(w.worker_on(store.clone()).process(&id).await.expect("erase"), Outcome::Completed { .. }));

    assert_versioned_store_clean(&store, &ann.profile_id, "after the erasure");
    let versions = store.all_versions();
    assert!(!versions.iter().any(|v| v.key == export_key), "the export left no version: {versions:?}");
    // A deleted object leaves nothing at all, not even a delete marker.
    assert!(!versions.iter().any(|v| v.key == "quarantine/web/2026-11-02/a.json"), "{versions:?}");
    let rec = w.record(&id);
    let receipt = |store: &str| rec.receipts.iter().find(|r| r.store == store).expect("a receipt").clone();
    assert_eq!(receipt("quarantine").count, 1);
    assert_eq!(receipt("import_files").count, 1, "the partner file naming Ann goes whole");
    assert_eq!(receipt("export:archive").count, 1);
    assert_eq!(receipt("dsr_exports").count, 1);
    // Earlier versions: the partner file's first upload and the version its delete left, and its marker; the
    // rewritten export's old bytes; the quarantined event's bytes and marker; the report's old version.
    let detail = |store: &str| receipt(store).detail.unwrap_or_default();
    assert!(detail("import_files").ends_with(", 3 earlier versions removed"), "{}", detail("import_files"));
    assert!(detail("export:archive").ends_with(", 1 earlier versions removed"), "{}", detail("export:archive"));
    assert!(detail("quarantine").ends_with(", 2 earlier versions removed"), "{}", detail("quarantine"));
    assert!(
        detail("import_reports").contains("0 rewritten")
            && detail("import_reports").ends_with(", 1 earlier versions removed"),
        "the report's current version never named her, its earlier one did: {}",
        detail("import_reports")
    );
    assert_eq!(receipt("dsr_exports").detail.as_deref(), Some("3 earlier versions removed"), "two puts and a marker");
}

#[tokio::test]
async fn on_versioned_buckets_an_erasure_interrupted_at_any_object_write_finishes_on_retry() {
    // Crash before each object write in turn (a put, a delete, one version removed), until a run has room to finish.
    for (crashes, crash_after) in (0u64..).enumerate() {
        let mut w = World::new();
        w.people().await;
        let store = MemoryObjects::versioned();
        versioned_holdings(&store).await;
        let ann = read::resolve(&w.table, &Lookup::Identifier(email(ANN_EMAIL))).await.expect("read").expect("ann");
        let id = w.request("erasure", email_identity(ANN_EMAIL), &[], 0);
        store.crash_after_writes(Some(crash_after));
        if w.worker_on(store.clone()).process(&id).await.is_ok() {
            assert!(crashes >= 8, "an erasure of these objects takes more than {crashes} object writes");
            break;
        }
        store.crash_after_writes(None);
        let outcome = w.worker_on(store.clone()).process(&id).await.expect("retry");
        assert!(matches!(outcome, Outcome::Completed { .. }), "crash_after {crash_after}: {outcome:?}");
        assert_versioned_store_clean(&store, &ann.profile_id, &format!("crash after {crash_after} object writes"));
    }
}

fn email(v: &str) -> tributary_core::identity::Identifier {
    tributary_core::identity::Identifier::new(tributary_core::identity::IdType::Email, v, None).expect("email")
}

fn user(v: &str) -> tributary_core::identity::Identifier {
    tributary_core::identity::Identifier::new(tributary_core::identity::IdType::UserId, v, None).expect("user")
}

fn anon(v: &str) -> tributary_core::identity::Identifier {
    tributary_core::identity::Identifier::new(tributary_core::identity::IdType::AnonymousId, v, None).expect("anon")
}

fn untar(bytes: &[u8]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let name = entry.path().expect("path").to_string_lossy().into_owned();
        let mut text = String::new();
        entry.read_to_string(&mut text).expect("utf-8");
        out.insert(name, text);
    }
    out
}
