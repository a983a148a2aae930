//! The AWS tier of data subject requests: `dsr_e2e.rs` (through `tributary serve`) reproduced on the AWS adapters
//! against moto. Every function is built as its Lambda `main.rs` builds it (ingest, stitch, deliver, import, the
//! DSR API and worker, the profile API) on one fresh DynamoDB table, SQS queues with their DLQs and S3 buckets, and
//! driven the way Lambda drives it: HTTP requests as API Gateway payloads, SQS triggers as receive → `SqsEvent` →
//! `handle` → delete what is not in `batchItemFailures`.
//!
//! Ann browses on a phone and a laptop, logs in on both (which merges them), one of her events is quarantined by
//! the tracking plan, and a partner file names her; her events reach a webhook and an S3 export. Bob does much the
//! same. Poisoned messages naming her sit in the events, delivery and profile-change DLQs. Then:
//! - an access request for Bob gives an export behind a presigned S3 link that works, and once the export's
//!   `expires_at` is past the status no longer carries the link;
//! - an erasure of Ann **by email only** completes with a receipt per store, signed answers and callbacks, and a
//!   deletion forwarded to the webhook that had her; afterwards a scan of every table item, every version of every
//!   object of every bucket (the archive, import and export buckets keep versions, as the SAM template's do) and
//!   every message of every queue and DLQ finds none of her identifiers, raw or hashed;
//! - new events and new partner rows of hers are dropped (by stitch behind containers whose suppression list
//!   predates the erasure, by ingest and import themselves in containers started since), while Bob's land; Bob
//!   is untouched throughout.
//!
//! moto gap: it serves a presigned GET whatever its `X-Amz-Expires` says (5.2.5), so the link's own lifetime is
//! checked against the export's `expires_at` instead of fetching an expired link.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use base64::Engine as _;
use serde_json::{json, Value};
use tributary_aws::{admin, AwsClients, DynamoTable, S3Links, S3Store, SqsQueue};
use tributary_core::config::{DataPartyClass, WorkspaceConfig};
use tributary_core::delivery::{DeliveryEnvelope, DestinationKind, Handoff};
use tributary_core::import::encode_notification_key;
use tributary_core::ingest::Envelope;
use tributary_core::metrics::MemoryMetrics;
use tributary_core::ports::{ObjectStore, OutgoingMessage, Queue, ReceivedMessage};
use tributary_core::profile::changes::ProfileChanges;
use tributary_core::testing::{object_store_contract, object_store_versions_contract};
use tributary_deliver::export::ExportSender;
use tributary_deliver::http::HttpSender;
use tributary_deliver::{resolve_destinations, Deliver, DeliverSettings, Senders};
use tributary_dsr_api::{DsrApi, RsaSigner};
use tributary_dsr_worker::{DsrWorker, Holdings, HttpClient, ObjectPlace, WorkerSettings};
use tributary_import::{Import, ImportSettings};
use tributary_ingest::{Ingest, IngestSettings};
use tributary_profile_api::ProfileApi;
use tributary_stitch::{Stitch, StitchSettings};
use tributary_tests::aws_env;
use tributary_tests::erasure::{
    ann_traces, assert_receipts, every_object_version, receipts, untar, Receiver, ANN_EMAIL, ANN_LAPTOP, ANN_PHONE,
    ANN_USER, BOB_ANON, BOB_EMAIL, BOB_USER,
};
use tributary_tests::support::{body_bytes, http_request, PARTNER_SOURCE};

const WRITE_KEY: &str = "aws-dsr-write-key";
const MANAGEMENT_KEY: &str = "aws-dsr-management-key";
const DOMAIN: &str = "dsr.tributary.test";
/// The redrive policies' `maxReceiveCount` (as the SAM template's queues).
const MAX_RECEIVE_COUNT: u32 = 5;
/// Hidden this long once received: longer than the test, so nothing comes back while it runs.
const HIDDEN: Duration = Duration::from_secs(600);
/// How long the pipeline may take to settle, or a queue to give up what it holds.
const SETTLE_WITHIN: Duration = Duration::from_secs(120);
/// The queues' visibility timeout as the trigger receives: a failed record without a backoff of its own comes back
/// after it.
const TRIGGER_VISIBILITY: Duration = Duration::from_secs(20);
/// What a Lambda invocation is given at most (the import handler sees this deadline).
const INVOCATION: Duration = Duration::from_secs(15 * 60);
/// How long an access export and its link last here (seven days on AWS): short, to see the link go.
const RESULTS_TTL: Duration = Duration::from_secs(5);

type IngestFn = Ingest<SqsQueue, Arc<MemoryMetrics>, S3Store, DynamoTable>;
type StitchFn = Stitch<DynamoTable, SqsQueue, MemoryMetrics>;
type DeliverFn = Deliver<DynamoTable, SqsQueue, Senders<S3Store>, MemoryMetrics>;
type ImportFn = Import<DynamoTable, SqsQueue, S3Store, MemoryMetrics>;
type DsrApiFn = DsrApi<DynamoTable, SqsQueue, RsaSigner, S3Links>;
type DsrWorkerFn = DsrWorker<DynamoTable, SqsQueue, S3Store, RsaSigner, S3Links, HttpClient>;

/// The workspace: a 1P web source with a tracking plan that quarantines unplanned track events, a 2P partner
/// import, an essential webhook (`${CRM_URL}`) and an essential S3 export into `exports_bucket`, and OpenDSR.
fn workspace(exports_bucket: &str) -> WorkspaceConfig {
    let yaml = format!(
        r#"workspace: tributary-aws-dsr
consent:
  purposes: [{{ id: analytics }}]
sources:
  - id: web
    name: Web (tests)
    write_key_sha256:
      - "{write_key}"
    class: "1P"
    tracking_plan:
      version: "1"
      events:
        Viewed: {{ type: object }}
      unplanned: quarantine
{PARTNER_SOURCE}management_keys:
  - id: tests
    key_sha256: "{management_key}"
    scopes: ["profiles:read", "dsr", "admin"]
destinations:
  - id: crm
    kind: webhook
    essential: true
    transport: {{ url: "${{CRM_URL}}" }}
  - id: lake
    kind: s3_export
    essential: true
    transport: {{ bucket: "{exports_bucket}", prefix: lake }}
dsr:
  processor_domain: {DOMAIN}
  controller_id: acme-controller
delivery:
  allow_private_hosts: ["127.0.0.1"]
"#,
        write_key = tributary_core::sha256_hex(WRITE_KEY.as_bytes()),
        management_key = tributary_core::sha256_hex(MANAGEMENT_KEY.as_bytes()),
    );
    tributary_core::config::load(&yaml).expect("the test workspace must load")
}

fn bearer() -> String {
    format!("Bearer {MANAGEMENT_KEY}")
}

/// Every message `queue` holds, each received once and hidden for [`HIDDEN`]: receives until as many messages are
/// in hand as the queue counts (moto may answer a receive with fewer messages than it holds, or none).
async fn receive_all(queue: &SqsQueue, what: &str) -> Vec<ReceivedMessage> {
    let deadline = Instant::now() + SETTLE_WITHIN;
    let mut got: Vec<ReceivedMessage> = Vec::new();
    loop {
        let batch = queue.receive(10, HIDDEN, Duration::ZERO).await.expect("receive");
        if batch.is_empty() {
            let total = queue.approximate_len().await.expect("approximate_len") as usize;
            if got.len() >= total {
                return got;
            }
            assert!(Instant::now() < deadline, "{what}: {} of {total} messages received", got.len());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        got.extend(batch);
    }
}

/// Makes received messages visible again (the scan only looks).
async fn release(queue: &SqsQueue, messages: &[ReceivedMessage]) {
    for m in messages {
        queue.change_visibility(&m.receipt_handle, Duration::ZERO).await.expect("release a message");
    }
}

/// The ingest function as functions/ingest/src/main.rs builds it (one container: its suppression list is loaded
/// on the first request that needs it and kept for a minute).
fn ingest_fn(aws: &AwsClients, ws: &WorkspaceConfig, table: &str, events: &SqsQueue, archive: &str) -> IngestFn {
    Ingest::new(events.clone(), Arc::new(MemoryMetrics::default()), Arc::new(ws.clone()), IngestSettings::default())
        .with_quarantine(aws.s3_store(archive, ""))
        .with_stats(aws.dynamo_table(table))
        .with_suppressions(aws.dynamo_table(table))
}

/// The import function as functions/import/src/main.rs builds it.
fn import_fn(
    aws: &AwsClients,
    ws: &WorkspaceConfig,
    table: &str,
    events: &SqsQueue,
    imports: &SqsQueue,
    bucket: &str,
) -> ImportFn {
    Import::new(
        aws.dynamo_table(table),
        events.clone(),
        imports.clone(),
        aws.s3_store(bucket, ""),
        MemoryMetrics::default(),
        Arc::new(ws.clone()),
        ImportSettings::new(bucket),
    )
    .with_suppressions(aws.dynamo_table(table))
}

/// POSTs a batch to the tracking API through one ingest container.
async fn send_via(ingest: &IngestFn, events: Vec<Value>) {
    let auth = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{WRITE_KEY}:")));
    let body = json!({ "batch": events }).to_string();
    let resp = ingest.handle(http_request("POST", "/v1/batch", &auth, Some(body))).await;
    assert_eq!(resp.status_code, 200, "{}", String::from_utf8_lossy(&body_bytes(&resp)));
}

/// One queue and its ARN (an SQS trigger's records name it).
struct Trigger {
    queue: SqsQueue,
    arn: String,
}

/// The whole deployment on moto: the resources, and every function built as its `main.rs` builds it.
struct Stack {
    aws: AwsClients,
    table_name: String,
    /// (name in reports, queue): every queue and DLQ of the stack.
    queues: Vec<(String, SqsQueue)>,
    /// Every bucket of the stack.
    buckets: Vec<String>,
    import_bucket: String,
    events: Trigger,
    events_dlq: SqsQueue,
    delivery: Trigger,
    delivery_dlq: SqsQueue,
    changes_dlq: SqsQueue,
    imports: Trigger,
    dsr: Trigger,
    ingest: IngestFn,
    stitch: StitchFn,
    deliver: DeliverFn,
    import: ImportFn,
    api: DsrApiFn,
    worker: DsrWorkerFn,
    profiles: ProfileApi<DynamoTable>,
    hooks: Receiver,
    /// The processor's certificate, as discovery's `cert.pem` serves it.
    cert: String,
    ws: WorkspaceConfig,
    archive: String,
    exports_bucket: String,
}

async fn queue_pair(aws: &AwsClients, name: &str, queues: &mut Vec<(String, SqsQueue)>) -> (Trigger, SqsQueue) {
    let dlq_url = admin::create_queue(aws, &aws_env::unique(&format!("{name}-dlq")), None).await.expect("create a DLQ");
    let url = admin::create_queue(aws, &aws_env::unique(name), Some((&dlq_url, MAX_RECEIVE_COUNT)))
        .await
        .expect("create a queue with its redrive policy");
    let arn = admin::queue_arn(aws, &url).await.expect("queue ARN");
    queues.push((name.to_string(), aws.sqs_queue(&url)));
    queues.push((format!("{name}-dlq"), aws.sqs_queue(&dlq_url)));
    (Trigger { queue: aws.sqs_queue(&url), arn }, aws.sqs_queue(&dlq_url))
}

impl Stack {
    async fn new() -> Stack {
        let aws = aws_env::clients().await;
        let table_name = admin::create_table(&aws, &aws_env::unique("dsr-profiles")).await.expect("create the table");
        let mut queues = Vec::new();
        let (events, events_dlq) = queue_pair(&aws, "events", &mut queues).await;
        let (delivery, delivery_dlq) = queue_pair(&aws, "delivery", &mut queues).await;
        let (imports, _) = queue_pair(&aws, "import", &mut queues).await;
        let (dsr, _) = queue_pair(&aws, "dsr", &mut queues).await;
        // No audiences here, so no change feed; its DLQ is searched all the same (main.rs's CHANGES_DLQ_URL).
        let changes_dlq_url =
            admin::create_queue(&aws, &aws_env::unique("profile-changes-dlq"), None).await.expect("create a DLQ");
        queues.push(("profile-changes-dlq".to_string(), aws.sqs_queue(&changes_dlq_url)));
        let mut buckets = Vec::new();
        for name in ["archive", "imports", "results", "exports"] {
            buckets.push(admin::create_bucket(&aws, &aws_env::unique(name)).await.expect("create a bucket"));
        }
        let [archive, import_bucket, results_bucket, exports_bucket] =
            <[String; 4]>::try_from(buckets.clone()).expect("four buckets");
        // Versioned as infra/template.yaml's ArchiveBucket and ImportBucket are, and the export destination's
        // bucket (the workspace's own) may be: a delete or a rewrite there leaves the old bytes as an earlier
        // version. The results bucket keeps none, as in the template.
        for bucket in [&archive, &import_bucket, &exports_bucket] {
            aws.s3_store(bucket, "").enable_versioning().await.expect("enable versioning");
        }

        let hooks = Receiver::start().await;
        let crm_url = format!("{}/crm", hooks.url());
        let lookup = move |name: &str| (name == "CRM_URL").then(|| crm_url.clone());
        let ws = workspace(&exports_bucket);
        let pem = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../events/dsr/signing.pem"))
            .expect("the signing key fixture");
        let signer = || RsaSigner::from_pem(&pem).expect("the signing key");

        let ingest = ingest_fn(&aws, &ws, &table_name, &events.queue, &archive);
        // functions/stitch/src/main.rs (no audiences: no change feed)
        let stitch = Stitch::new(
            aws.dynamo_table(&table_name),
            delivery.queue.clone(),
            MemoryMetrics::default(),
            Arc::new(ws.clone()),
            StitchSettings::default(),
        )
        .expect("stitch");
        // functions/deliver/src/main.rs
        let destinations = resolve_destinations(&ws, &lookup).expect("destinations resolve");
        let exports: BTreeMap<_, _> = destinations
            .iter()
            .filter(|d| d.kind == DestinationKind::S3Export)
            .filter_map(|d| d.transport.bucket.clone())
            .map(|b| (b.clone(), aws.s3_store(b, "")))
            .collect();
        let deliver = Deliver::new(
            aws.dynamo_table(&table_name),
            delivery.queue.clone(),
            delivery_dlq.clone(),
            Senders {
                http: HttpSender::new(&ws.delivery.allow_private_hosts).expect("HTTP sender"),
                exports: ExportSender::new(exports),
            },
            MemoryMetrics::default(),
            Arc::new(ws.clone()),
            destinations.clone(),
            DeliverSettings { max_receive_count: MAX_RECEIVE_COUNT },
        );
        let import = import_fn(&aws, &ws, &table_name, &events.queue, &imports.queue, &import_bucket);
        // functions/dsr-api/src/main.rs
        let api = DsrApi::new(
            aws.dynamo_table(&table_name),
            dsr.queue.clone(),
            signer(),
            aws.s3_links(&results_bucket, ""),
            Arc::new(ws.clone()),
            None,
        );
        // functions/dsr-worker/src/main.rs
        let mut holdings = Holdings::default();
        holdings.queues.push(("events-dlq".to_string(), events_dlq.clone()));
        holdings.queues.push(("delivery-dlq".to_string(), delivery_dlq.clone()));
        holdings.queues.push(("profile-changes-dlq".to_string(), aws.sqs_queue(&changes_dlq_url)));
        let place = |name: &str, bucket: &str, prefix: &str, partner_files: bool| ObjectPlace {
            name: name.to_string(),
            store: aws.s3_store(bucket, ""),
            prefix: prefix.to_string(),
            whole_files: partner_files,
            imports: partner_files,
        };
        holdings.objects.push(place("quarantine", &archive, "quarantine/", false));
        holdings.objects.push(place("import_files", &import_bucket, "imports/", true));
        holdings.objects.push(place("import_reports", &import_bucket, "import-reports/", false));
        for d in &destinations {
            if let Some(bucket) = &d.transport.bucket {
                let prefix = d.transport.prefix.clone().unwrap_or_default();
                holdings.objects.push(place(&format!("export:{}", d.id), bucket, &prefix, false));
            }
        }
        let worker = DsrWorker::new(
            aws.dynamo_table(&table_name),
            dsr.queue.clone(),
            aws.s3_store(&results_bucket, ""),
            signer(),
            aws.s3_links(&results_bucket, ""),
            HttpClient::new(&ws.delivery.allow_private_hosts).expect("HTTP client"),
            Arc::new(ws.clone()),
            // Only the export's lifetime and the callbacks' first backoff are shorter than on AWS.
            WorkerSettings {
                results_ttl: RESULTS_TTL,
                backoff_base: Duration::from_secs(1),
                ..WorkerSettings::default()
            },
        )
        .with_holdings(holdings)
        .with_destinations(destinations);
        // functions/profile-api/src/main.rs
        let profiles = ProfileApi::new(aws.dynamo_table(&table_name), Arc::new(ws.clone()));

        let changes_dlq = aws.sqs_queue(&changes_dlq_url);
        let mut stack = Stack {
            aws,
            table_name,
            queues,
            buckets,
            import_bucket,
            events,
            events_dlq,
            delivery,
            delivery_dlq,
            changes_dlq,
            imports,
            dsr,
            ingest,
            stitch,
            deliver,
            import,
            api,
            worker,
            profiles,
            hooks,
            cert: String::new(),
            ws,
            archive,
            exports_bucket,
        };
        let resp = stack.api.handle(http_request("GET", "/opendsr/v2/cert.pem", "", None)).await;
        assert_eq!(resp.status_code, 200);
        stack.cert = String::from_utf8(body_bytes(&resp)).expect("PEM");
        assert!(stack.cert.contains("BEGIN CERTIFICATE") && !stack.cert.contains("PRIVATE KEY"));
        stack
    }

    /// POSTs a batch to the tracking API (the ingest function).
    async fn send(&self, events: Vec<Value>) {
        send_via(&self.ingest, events).await;
    }

    /// A new ingest container (cold start: it loads the suppression list on its first request).
    fn new_ingest(&self) -> IngestFn {
        ingest_fn(&self.aws, &self.ws, &self.table_name, &self.events.queue, &self.archive)
    }

    /// A new import container.
    fn new_import(&self) -> ImportFn {
        import_fn(&self.aws, &self.ws, &self.table_name, &self.events.queue, &self.imports.queue, &self.import_bucket)
    }

    /// The messageIds of the events on the events queue (left there).
    async fn queued_events(&self) -> BTreeSet<String> {
        let messages = receive_all(&self.events.queue, "events queue").await;
        release(&self.events.queue, &messages).await;
        let mut ids = BTreeSet::new();
        for m in &messages {
            let env: Envelope = serde_json::from_str(&m.body).expect("an envelope");
            ids.extend(env.events.iter().map(|e| e["messageId"].as_str().unwrap_or("").to_string()));
        }
        ids
    }

    /// Puts a partner file under `imports/partner/` and queues its S3 notification, as S3 would.
    async fn upload(&self, name: &str, csv: &str) {
        let key = format!("imports/partner/{name}");
        self.aws.s3_store(&self.import_bucket, "").put(&key, csv.as_bytes().to_vec()).await.expect("put the file");
        let note = json!({"Records": [{
            "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
            "eventName": "ObjectCreated:Put",
            "s3": {
                "s3SchemaVersion": "1.0",
                "bucket": {"name": self.import_bucket, "arn": format!("arn:aws:s3:::{}", self.import_bucket)},
                "object": {
                    "key": encode_notification_key(&key), "size": csv.len(),
                    "eTag": tributary_core::sha256_hex(csv.as_bytes())[..32].to_string(), "sequencer": "0A1B2C3D4E5F"
                }
            }
        }]});
        let failed = self
            .imports
            .queue
            .send_batch(&[OutgoingMessage { id: "n".into(), body: note.to_string() }])
            .await
            .expect("send the notification");
        assert!(failed.is_empty(), "{failed:?}");
    }

    /// Runs every function on what its queue holds until every queue of the pipeline is empty (failed records come
    /// back after their backoff and are run again).
    async fn settle(&self) {
        let deadline = Instant::now() + SETTLE_WITHIN;
        loop {
            let mut ran = 0;
            ran += drive(&self.imports, |e| self.import.handle(e, Some(Instant::now() + INVOCATION))).await;
            ran += drive(&self.events, |e| self.stitch.handle(e)).await;
            ran += drive(&self.delivery, |e| self.deliver.handle(e)).await;
            ran += drive(&self.dsr, |e| self.worker.handle(e)).await;
            if ran > 0 {
                continue;
            }
            let mut left = 0;
            for t in [&self.imports, &self.events, &self.delivery, &self.dsr] {
                left += t.queue.approximate_len().await.expect("approximate_len");
            }
            if left == 0 {
                return;
            }
            assert!(Instant::now() < deadline, "the pipeline did not settle: {left} messages left");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Calls the DSR API; checks the answer is signed with the key of the certificate. Returns (status, body).
    async fn dsr(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let resp = self.api.handle(http_request(method, path, &bearer(), body.map(|b| b.to_string()))).await;
        let header = |name: &str| resp.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        assert_eq!(header("x-opendsr-processor-domain").as_deref(), Some(DOMAIN));
        let raw = body_bytes(&resp);
        let sig = header("x-opendsr-signature").expect("a signed answer");
        tributary_dsr_api::verify(&self.cert, &raw, &sig).expect("the answer's signature verifies");
        (u16::try_from(resp.status_code).expect("status"), serde_json::from_slice(&raw).expect("a JSON answer"))
    }

    /// Creates a request; its id.
    async fn create(&self, kind: &str, identities: Value) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        let body = json!({
            "regulation": "gdpr", "subject_request_id": id, "subject_request_type": kind,
            "submitted_time": "2026-11-30T10:00:00Z", "api_version": "2.0",
            "subject_identities": identities, "status_callback_urls": [format!("{}/callbacks", self.hooks.url())],
        });
        let (status, created) = self.dsr("POST", "/opendsr/v2/requests", Some(body)).await;
        assert_eq!(status, 201, "{created}");
        id
    }

    async fn status(&self, id: &str) -> Value {
        let (status, body) = self.dsr("GET", &format!("/opendsr/v2/requests/{id}"), None).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// GET on the profile API (status, body).
    async fn profile_api(&self, path: &str) -> (u16, Value) {
        let resp = self.profiles.handle(http_request("GET", path, &bearer(), None)).await;
        let raw = body_bytes(&resp);
        (u16::try_from(resp.status_code).expect("status"), serde_json::from_slice(&raw).unwrap_or(Value::Null))
    }

    async fn profile(&self, lookup: &str) -> (u16, Value) {
        self.profile_api(&format!("/v1/profiles/{lookup}")).await
    }

    async fn events_of(&self, lookup: &str) -> Vec<Value> {
        let (status, body) = self.profile_api(&format!("/v1/profiles/{lookup}/events")).await;
        assert_eq!(status, 200, "{body}");
        body["events"].as_array().expect("events").clone()
    }

    /// Everything the stack stores, one lowercase line per table item, object version and message, each prefixed
    /// with where it was found: every item of the table (a full scan), every version of every object of every
    /// bucket, earlier versions included (`ListObjectVersions`, then `GetObject` by version id; gzip opened, so
    /// export archives read as tar text), every message of every queue and DLQ (received once, then made visible
    /// again).
    async fn everything_stored(&self) -> Vec<String> {
        let mut out = Vec::new();
        for item in admin::scan_all(&self.aws, &self.table_name).await.expect("scan the table") {
            out.push(format!("table {}: {}", self.table_name, item.to_lowercase()));
        }
        for bucket in &self.buckets {
            out.extend(every_object_version(&self.aws.s3_store(bucket, ""), &format!("s3://{bucket}")).await);
        }
        for (name, queue) in &self.queues {
            let messages = receive_all(queue, name).await;
            for m in &messages {
                out.push(format!("sqs {name}: {}", m.body.to_lowercase()));
            }
            release(queue, &messages).await;
        }
        out
    }
}

/// One round of Lambda invocations on what `trigger`'s queue shows now: receive, `handle`, delete every record not
/// in `batchItemFailures`. Returns how many records were handed to the function.
async fn drive<F, Fut>(trigger: &Trigger, handle: F) -> usize
where
    F: Fn(SqsEvent) -> Fut,
    Fut: Future<Output = SqsBatchResponse>,
{
    let mut ran = 0;
    loop {
        let messages = trigger.queue.receive(10, TRIGGER_VISIBILITY, Duration::ZERO).await.expect("receive");
        if messages.is_empty() {
            return ran;
        }
        ran += messages.len();
        let event = tributary_local::runtime::sqs_event(&messages, &trigger.arn).expect("SqsEvent");
        let resp = handle(event).await;
        let failed: BTreeSet<&str> = resp.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
        for m in messages.iter().filter(|m| !failed.contains(m.message_id.as_str())) {
            trigger.queue.delete(&m.receipt_handle).await.expect("delete a handled record");
        }
        if !failed.is_empty() {
            // Visible again when the trigger's visibility ends, or after the backoff the handler set.
            println!("{} of {} records failed (retried later)", failed.len(), messages.len());
        }
    }
}

fn assert_clean(all: &[String], when: &str, skip: impl Fn(&str) -> bool) {
    for t in ann_traces() {
        if let Some(line) = all.iter().filter(|l| !skip(l)).find(|l| l.contains(t.as_str())) {
            panic!("{when}: {t} is still stored: {}", &line[..line.len().min(800)]);
        }
    }
    for bob in [BOB_EMAIL, BOB_USER] {
        assert!(
            all.iter().any(|l| l.contains(bob)),
            "{when}: the scan should see Bob's {bob} (is it reading the stores?)"
        );
    }
}

fn handoff(profile_id: &str, message_id: &str, user_id: &str, email: &str) -> Handoff {
    Handoff {
        profile_id: Some(profile_id.into()),
        class: DataPartyClass::FirstParty,
        consent: BTreeMap::new(),
        consent_changed: false,
        applied_to: None,
        event: json!({
            "type": "identify", "messageId": message_id, "userId": user_id,
            "timestamp": "2026-01-02T03:04:05.000Z", "traits": {"email": email},
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_person_is_gone_from_every_aws_store_and_stays_gone() {
    let started = Instant::now();
    let s = Stack::new().await;
    let consent = json!({"consent": {"categoryPreferences": {"analytics": true}}});

    // Ann on two devices, logging in on both; Bob; one unplanned (quarantined) event each.
    s.send(vec![
        json!({"type": "page", "name": "Home", "anonymousId": ANN_PHONE, "messageId": "a1", "context": consent}),
        json!({"type": "track", "event": "Viewed", "anonymousId": ANN_LAPTOP, "messageId": "a2", "context": consent}),
        json!({"type": "identify", "userId": ANN_USER, "anonymousId": ANN_PHONE, "messageId": "a3",
               "traits": {"email": ANN_EMAIL, "plan": "pro"}, "context": consent}),
        json!({"type": "identify", "userId": ANN_USER, "anonymousId": ANN_LAPTOP, "messageId": "a4", "context": consent}),
        json!({"type": "track", "event": "Secret Plan Viewed", "userId": ANN_USER, "anonymousId": ANN_LAPTOP,
               "messageId": "a-q", "properties": {"contact": ANN_EMAIL}, "context": consent}),
        json!({"type": "identify", "userId": BOB_USER, "anonymousId": BOB_ANON, "messageId": "b1",
               "traits": {"email": BOB_EMAIL, "plan": "free"}, "context": consent}),
        json!({"type": "track", "event": "Viewed", "userId": BOB_USER, "messageId": "b2", "context": consent}),
        json!({"type": "track", "event": "Secret Plan Viewed", "userId": BOB_USER, "messageId": "b-q",
               "properties": {"contact": BOB_EMAIL}, "context": consent}),
    ])
    .await;
    s.settle().await;
    assert_eq!(s.events_of(&format!("user_id:{ANN_USER}")).await.len(), 4);
    assert_eq!(s.events_of(&format!("user_id:{BOB_USER}")).await.len(), 2);
    let quarantined = s.aws.s3_store(&s.archive, "").list("quarantine/").await.expect("list the quarantine");
    assert_eq!(quarantined.len(), 2, "one unplanned event each is held: {quarantined:?}");

    // The partner file names both (Ann's address in capitals).
    s.upload("partners.csv", &format!("email,tier\n{},gold\n{BOB_EMAIL},silver\n", ANN_EMAIL.to_uppercase())).await;
    s.settle().await;
    let (_, ann) = s.profile(&format!("user_id:{ANN_USER}")).await;
    let (_, bob) = s.profile(&format!("user_id:{BOB_USER}")).await;
    assert_eq!(ann["traits"]["tier"]["value"], "gold", "{ann}");
    assert_eq!(bob["traits"]["tier"]["value"], "silver", "{bob}");
    let ann_profile = ann["profile_id"].as_str().expect("Ann's profile id").to_string();
    let bob_profile = bob["profile_id"].as_str().expect("Bob's profile id").to_string();
    let mut ann_profiles: BTreeSet<String> = BTreeSet::from([ann_profile.clone()]);
    for m in ann["merges"].as_array().into_iter().flatten() {
        if let Some(loser) = m["loser"].as_str() {
            ann_profiles.insert(loser.to_string());
        }
    }
    assert!(ann_profiles.len() >= 2, "the phone and the laptop were merged: {ann}");
    // Every event reached the webhook; the S3 export holds them too.
    let crm: Vec<Value> = s.hooks.to("/crm").iter().map(|p| p.json()).collect();
    assert_eq!(crm.len(), 8, "4 + 2 web events and 2 partner rows: {crm:?}");
    let exported = s.aws.s3_store(&s.exports_bucket, "").list("lake/").await.expect("list the export");
    assert!(!exported.is_empty(), "the S3 export wrote its objects");

    // Poisoned messages naming her in the DLQs (as a redrive policy or the deliver function would leave them).
    let ann_event = json!({"type": "identify", "userId": ANN_USER, "anonymousId": ANN_PHONE, "messageId": "a-dlq",
                           "traits": {"email": ANN_EMAIL}});
    let bob_event = json!({"type": "track", "event": "Viewed", "userId": BOB_USER, "messageId": "b-dlq"});
    let envelope = Envelope { v: 1, source_id: "web".into(), events: vec![ann_event, bob_event] };
    let sent = s
        .events_dlq
        .send_batch(&[OutgoingMessage { id: "0".into(), body: serde_json::to_string(&envelope).expect("JSON") }])
        .await
        .expect("send to the events DLQ");
    assert!(sent.is_empty());
    let delivery_envelope = |items: Vec<Handoff>| {
        let env = DeliveryEnvelope { v: 1, source_id: "web".into(), items, only: None, destinations: None };
        serde_json::to_string(&env).expect("JSON")
    };
    let sent = s
        .delivery_dlq
        .send_batch(&[
            OutgoingMessage {
                id: "ann".into(),
                body: delivery_envelope(vec![handoff(&ann_profile, "a-dlq-2", ANN_USER, ANN_EMAIL)]),
            },
            OutgoingMessage {
                id: "bob".into(),
                body: delivery_envelope(vec![handoff(&bob_profile, "b-dlq-2", BOB_USER, BOB_EMAIL)]),
            },
        ])
        .await
        .expect("send to the delivery DLQ");
    assert!(sent.is_empty());
    let changes = ProfileChanges::messages(&BTreeSet::from([ann_profile.clone(), bob_profile.clone()]));
    assert!(s.changes_dlq.send_batch(&changes).await.expect("send to the change feed DLQ").is_empty());

    // Access for Bob: a presigned S3 link that works until the export expires, then no link at all.
    let bob_req = s
        .create(
            "access",
            json!([{"identity_type": "controller_customer_id", "identity_value": BOB_USER, "identity_format": "raw"}]),
        )
        .await;
    s.settle().await;
    let done = s.status(&bob_req).await;
    assert_eq!(done["request_status"], "completed", "{done}");
    let url = done["results_url"].as_str().expect("a results link").to_string();
    assert!(url.contains("X-Amz-Signature="), "a presigned link: {url}");
    // moto (5.2.5) serves a presigned GET whatever its X-Amz-Expires says, so the expiry S3 enforces is checked
    // on the link itself: it ends no later than the export does.
    let lifetime: u64 = url
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("X-Amz-Expires="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no X-Amz-Expires in {url}"));
    assert!((1..=RESULTS_TTL.as_secs()).contains(&lifetime), "the link lasts {lifetime}s, the export {RESULTS_TTL:?}");
    let http = reqwest::Client::new();
    let archive = http.get(&url).send().await.expect("GET the export");
    assert_eq!(archive.status().as_u16(), 200);
    let files = untar(&archive.bytes().await.expect("the export's bytes"));
    let exported: Value =
        serde_json::from_str(files["profile.jsonl"].lines().next().expect("a profile")).expect("JSON");
    let (_, bob_now) = s.profile(&format!("user_id:{BOB_USER}")).await;
    for field in ["profile_id", "traits", "identities", "consent", "merges", "audiences"] {
        assert_eq!(exported[field], bob_now[field], "{field}: the export shows what the profile API shows");
    }
    assert_eq!(files["events.jsonl"].lines().count(), 3, "his two events and the partner row");
    assert!(files["imports.jsonl"].contains("partner"), "import provenance");
    tokio::time::sleep(RESULTS_TTL + Duration::from_secs(1)).await;
    let later = s.status(&bob_req).await;
    assert!(later.get("results_url").is_none(), "no link once the export has expired: {later}");
    assert_eq!(later["results_count"], done["results_count"], "the count stays");

    // Access for Ann too: an export of hers that the erasure must delete.
    let ann_access = s
        .create("access", json!([{"identity_type": "email", "identity_value": ANN_EMAIL, "identity_format": "raw"}]))
        .await;
    s.settle().await;
    assert_eq!(s.status(&ann_access).await["request_status"], "completed");

    // Each quarantined record rewritten in place, as the quarantine redrive does when it re-checks a held event
    // against a newer tracking plan (crates/local/src/quarantine.rs): in the versioned archive the first record
    // stays as an earlier version.
    let quarantine = s.aws.s3_store(&s.archive, "");
    for held in quarantine.list("quarantine/").await.expect("list the quarantine") {
        let record = quarantine.get(&held.key).await.expect("get a record").expect("the record");
        quarantine.put(&held.key, record).await.expect("rewrite a record");
    }

    let before = s.everything_stored().await;
    let earlier = |lines: &[String], who: &str| {
        lines.iter().any(|l| {
            l.starts_with(&format!("s3://{}/quarantine/", s.archive)) && l.contains(" (earlier ") && l.contains(who)
        })
    };
    assert!(earlier(&before, ANN_USER) && earlier(&before, BOB_USER), "the scan reads earlier versions");
    // The scan sees her before the erasure, raw and hashed (stitch keeps the SHA-256 of her email): it reads
    // what the stores hold.
    let hashed_email = tributary_core::sha256_hex(ANN_EMAIL.as_bytes());
    for t in [ANN_EMAIL, ANN_USER, ANN_PHONE, ANN_LAPTOP, hashed_email.as_str()] {
        assert!(before.iter().any(|l| l.contains(t)), "before the erasure the scan sees Ann's {t}");
    }
    for (place, t) in
        [("table ", ANN_USER), ("s3://", ANN_EMAIL), ("sqs events-dlq", ANN_PHONE), ("sqs delivery-dlq", ANN_USER)]
    {
        assert!(before.iter().any(|l| l.starts_with(place) && l.contains(t)), "before the erasure: {t} in {place}");
    }

    // Erasure of Ann, by email only.
    let erase_started = Instant::now();
    let ann_req = s
        .create("erasure", json!([{"identity_type": "email", "identity_value": ANN_EMAIL, "identity_format": "raw"}]))
        .await;
    s.settle().await;
    let done = s.status(&ann_req).await;
    assert_eq!(done["request_status"], "completed", "{done}");
    println!("erasure completed in {:?}", erase_started.elapsed());
    let receipts = receipts(&done, DOMAIN);
    println!("receipts: {receipts:?}");
    assert_receipts(
        &receipts,
        &[
            ("identities", "suppressed", 5),
            ("profiles", "deleted", 2),
            ("events", "deleted", 5),
            ("ledger", "deleted", 5),
            ("dedup_records", "deleted", 5),
            ("delivery_receipts", "deleted", 1),
            ("import_files", "deleted", 1),
            ("destination:crm", "forwarded", 1),
            ("destination:lake", "not_supported", 0),
            ("events-dlq", "deleted", 1),
            ("delivery-dlq", "deleted", 1),
            ("profile-changes-dlq", "deleted", 1),
            ("quarantine", "deleted", 1),
            ("import_reports", "deleted", 0),
            ("export:lake", "deleted", 1),
            ("dsr_exports", "deleted", 1),
        ],
    );

    // Callbacks for each change of each request, signed with the certificate's key.
    let statuses: Vec<(String, String)> = s
        .hooks
        .to("/callbacks")
        .iter()
        .map(|p| {
            let sig = p.headers.get("x-opendsr-signature").and_then(|v| v.to_str().ok()).unwrap_or("");
            tributary_dsr_api::verify(&s.cert, &p.body, sig).expect("the callback's signature verifies");
            let body = p.json();
            (
                body["subject_request_id"].as_str().unwrap_or("").into(),
                body["request_status"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    for id in [&bob_req, &ann_access, &ann_req] {
        for status in ["in_progress", "completed"] {
            assert!(statuses.contains(&(id.clone(), status.to_string())), "{id} {status}: {statuses:?}");
        }
    }
    // The webhook got one deletion naming Ann.
    let deletions: Vec<Value> = s.hooks.to("/crm").iter().map(|p| p.json()).filter(|e| e["type"] == "delete").collect();
    assert_eq!(deletions.len(), 1, "{deletions:?}");
    assert_eq!(deletions[0]["userId"], ANN_USER);
    assert_eq!(deletions[0]["context"]["dsr"]["subject_request_id"], ann_req.as_str());

    // Nothing of Ann's anywhere: table, every version in the buckets, queues and DLQs. Bob's quarantined record
    // keeps its earlier version (the erasure removes only the history of objects that named her).
    let after = s.everything_stored().await;
    assert_clean(&after, "after the erasure", |_| false);
    assert!(earlier(&after, BOB_USER), "Bob's earlier version stays");
    let (status, _) = s.profile(&format!("user_id:{ANN_USER}")).await;
    assert_eq!(status, 404);
    let (status, _) = s.profile(&format!("email:{}", ANN_EMAIL.replace('@', "%40"))).await;
    assert_eq!(status, 404);
    let (status, sup) = s.profile_api(&format!("/v1/suppressions/email:{}", ANN_EMAIL.replace('@', "%40"))).await;
    assert_eq!(status, 200, "{sup}");
    assert_eq!(sup["request"], ann_req.as_str());
    // Bob's part of every DLQ stays: the mixed events envelope lost only Ann's event, the change feed only her
    // profiles.
    let dlq = receive_all(&s.events_dlq, "events DLQ").await;
    release(&s.events_dlq, &dlq).await;
    let bodies: Vec<Envelope> = dlq.iter().map(|m| serde_json::from_str(&m.body).expect("an envelope")).collect();
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    assert_eq!(bodies[0].events.len(), 1);
    assert_eq!(bodies[0].events[0]["messageId"], "b-dlq");
    let dlq = receive_all(&s.delivery_dlq, "delivery DLQ").await;
    release(&s.delivery_dlq, &dlq).await;
    assert_eq!(dlq.len(), 1, "Bob's dead letter stays");
    assert!(dlq[0].body.contains("b-dlq-2"));
    let dlq = receive_all(&s.changes_dlq, "change feed DLQ").await;
    release(&s.changes_dlq, &dlq).await;
    let feed: Vec<String> =
        dlq.iter().flat_map(|m| ProfileChanges::parse(&m.body).expect("a change message").profiles).collect();
    assert_eq!(feed, vec![bob_profile.clone()]);
    // Her (pseudonymous) profile ids remain only in the erasure's own request record: its saved resolution, which
    // leads a retried run to the partitions once her identity items are tombstones.
    let record = format!("table {}: pk=dsr#{ann_req} sk=req ", s.table_name);
    for p in &ann_profiles {
        if let Some(line) = after.iter().find(|l| l.contains(p.as_str()) && !l.starts_with(&record)) {
            panic!("Ann's profile id {p} is still stored: {}", &line[..line.len().min(800)]);
        }
    }

    // She comes back. A container running since before the erasure (its suppression list up to a minute old) may
    // let her events through, and stitch drops them; a container started since drops them itself.
    s.send(vec![
        json!({"type": "track", "event": "Viewed", "anonymousId": ANN_PHONE, "messageId": "a5"}),
        json!({"type": "identify", "userId": ANN_USER, "messageId": "a6", "traits": {"email": ANN_EMAIL}}),
        json!({"type": "track", "event": "Viewed", "userId": BOB_USER, "messageId": "b3"}),
    ])
    .await;
    s.upload("partners-2.csv", &format!("email,tier\n{ANN_EMAIL},platinum\n{BOB_EMAIL},gold\n")).await;
    s.settle().await;
    let fresh = s.new_ingest();
    send_via(
        &fresh,
        vec![
            json!({"type": "identify", "anonymousId": "anon-ann-new-tablet", "messageId": "a7",
                   "traits": {"email": ANN_EMAIL.to_uppercase()}}),
            json!({"type": "track", "event": "Secret Plan Viewed", "userId": ANN_USER, "messageId": "a-q2",
                   "properties": {"contact": ANN_EMAIL}}),
            json!({"type": "track", "event": "Viewed", "userId": BOB_USER, "messageId": "b4"}),
        ],
    )
    .await;
    assert_eq!(s.queued_events().await, BTreeSet::from(["b4".to_string()]), "a new container queues Bob's only");
    let held = s.aws.s3_store(&s.archive, "").list("quarantine/").await.expect("list the quarantine");
    assert_eq!(held.len(), 1, "Bob's quarantined event only; hers is neither held nor queued: {held:?}");
    s.upload("partners-3.csv", &format!("email,tier\n{ANN_EMAIL},diamond\n{BOB_EMAIL},gold\n")).await;
    let fresh_import = s.new_import();
    drive(&s.imports, |e| fresh_import.handle(e, Some(Instant::now() + INVOCATION))).await;
    let queued = s.queued_events().await;
    assert_eq!(queued.len(), 2, "b4 and Bob's row of the third file, not hers: {queued:?}");
    s.settle().await;
    for lookup in [format!("user_id:{ANN_USER}"), format!("email:{}", ANN_EMAIL.replace('@', "%40"))] {
        let (status, body) = s.profile(&lookup).await;
        assert_eq!(status, 404, "Ann stays gone: {body}");
    }
    let (_, bob) = s.profile(&format!("user_id:{BOB_USER}")).await;
    assert_eq!(bob["traits"]["tier"]["value"], "gold", "Bob's new rows landed: {bob}");
    assert_eq!(bob["traits"]["plan"]["value"], "free", "Bob is untouched: {bob}");
    assert_eq!(bob["traits"]["email"]["value"], BOB_EMAIL);
    assert_eq!(bob["profile_id"], bob_profile.as_str());
    let bob_events = s.events_of(&format!("user_id:{BOB_USER}")).await;
    assert_eq!(bob_events.len(), 7, "2 events and a row, then 2 events and 2 rows: {bob_events:?}");
    // The scan again: only the partner file she is named in (it goes with her next erasure) may name her.
    let partner_files = format!("s3://{}/imports/", s.import_bucket);
    let again = s.everything_stored().await;
    assert_clean(&again, "after she came back", |l| l.starts_with(&partner_files));
    assert!(again.iter().any(|l| l.starts_with(&partner_files) && l.contains(ANN_EMAIL)), "the new file is there");
    println!("the AWS DSR acceptance took {:?}", started.elapsed());
}

/// The S3 adapter on buckets with versioning, as the archive and import buckets are deployed: the object store
/// contract (current objects) and the contract of earlier versions, at the bucket root and under a prefix, with
/// listing pages of two entries so that every listing and removal goes over several pages.
#[tokio::test]
async fn s3_store_keeps_both_object_store_contracts_on_a_versioned_bucket() {
    let aws = aws_env::clients().await;
    let versioned = || async {
        let bucket = admin::create_bucket(&aws, &aws_env::unique("versioned")).await.expect("create a bucket");
        aws.s3_store(&bucket, "").enable_versioning().await.expect("enable versioning");
        bucket
    };
    let a = versioned().await;
    object_store_versions_contract(&aws.s3_store(&a, "").with_page_size(2)).await;
    object_store_versions_contract(&aws.s3_store(&a, "/tenant-a/").with_page_size(3)).await;
    object_store_contract(&aws.s3_store(&a, "tenant-b")).await;
    let b = versioned().await;
    object_store_contract(&aws.s3_store(&b, "").with_page_size(2)).await;
    // The stores under a prefix saw nothing of each other's versions; the whole bucket sees what they left.
    let left = aws.s3_store(&a, "").all_versions("").await.expect("list every version");
    assert!(left.iter().all(|v| v.key.starts_with("tenant-b/")), "{left:?}");
    assert!(left.iter().any(|v| !v.latest), "the contract's overwrites left earlier versions: {left:?}");
}
