//! The SAM template proved against the emulator: infra/template.yaml is translated to plain CloudFormation and
//! created on moto by infra/emulator.py, then every function is built by its own wiring (`<crate>::lambda::build`,
//! what its Lambda binary runs) from exactly the environment variables the stack gives it, and the pipeline is
//! driven by the stack's wiring only: HTTP requests go to the function the HTTP API routes them to, each queue's
//! messages to the function its event source mapping names (receive with the queue's visibility timeout and the
//! mapping's batch size → `SqsEvent` → handler → delete what is not in `batchItemFailures`), partner files reach the
//! import queue through the import bucket's S3 notification, schedules invoke with their template input.
//!
//! Ann and Bob send events (Bob once without consent), a partner file adds a trait, an audience refresh tells the
//! webhook Ann entered "gold", the profile API shows her, and an OpenDSR erasure of Ann by email (dsr-api → DSR
//! queue → dsr-worker) leaves none of her identifiers in the table, the stack's buckets or its queues.
//!
//! moto cannot run Lambda code and does not implement every resource type; infra/emulator.py explains what it
//! leaves out or applies itself (the report's `emulator` section, printed below).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use aws_lambda_events::apigw::ApiGatewayV2httpResponse;
use base64::Engine as _;
use serde_json::{json, Value};
use tributary_audiences::RefreshRequest;
use tributary_aws::{admin, AwsClients, SqsQueue};
use tributary_core::import::object::decode_notification_key;
use tributary_core::import::IMPORTS_PREFIX;
use tributary_core::ports::{ObjectStore, Queue, ReceivedMessage, SPARSE_INDEXES};
use tributary_tests::aws_env;
use tributary_tests::erasure::{
    ann_traces, assert_receipts, every_object_version, receipts, Receiver, ANN_EMAIL, ANN_LAPTOP, ANN_PHONE, ANN_USER,
    BOB_ANON, BOB_EMAIL, BOB_USER,
};
use tributary_tests::pipeline::{self, Functions, Poller};
use tributary_tests::stack::Deployment;
use tributary_tests::support::{body_bytes, http_request, PARTNER_SOURCE};

const WRITE_KEY: &str = "aws-stack-write-key";
const MANAGEMENT_KEY: &str = "aws-stack-management-key";
const DOMAIN: &str = "stack.tributary.test";
/// The Lambda binaries of the workspace (`[[bin]]` of functions/*): the stack must deploy each exactly once.
const BINARIES: [&str; 8] =
    ["ingest", "stitch", "deliver", "import", "audiences", "dsr-api", "dsr-worker", "profile-api"];
/// How long the pipeline may take to drain its queues.
const SETTLE_WITHIN: Duration = Duration::from_secs(60);
/// Hidden this long while a scan looks at a queue's messages (made visible again right after).
const SCAN_HIDDEN: Duration = Duration::from_secs(300);

/// The workspace: a 1P web source, a 2P partner import, a webhook that needs analytics consent, an audience told to
/// the webhook, OpenDSR. The webhook's URL is literal: the template gives deliver no destination secrets.
fn workspace_yaml(crm_url: &str) -> String {
    format!(
        r#"workspace: tributary-aws-stack
consent:
  purposes: [{{ id: analytics }}]
sources:
  - id: web
    write_key_sha256: ["{write_key}"]
    class: "1P"
{PARTNER_SOURCE}management_keys:
  - id: tests
    key_sha256: "{management_key}"
    scopes: ["profiles:read", "dsr", "admin"]
destinations:
  - id: crm
    kind: webhook
    purposes: [analytics]
    transport: {{ url: "{crm_url}" }}
audiences:
  - id: gold
    rule: {{ trait: tier, equals: gold }}
    destinations: [crm]
dsr:
  processor_domain: {DOMAIN}
  controller_id: acme-controller
delivery:
  allow_private_hosts: ["127.0.0.1"]
"#,
        write_key = tributary_core::sha256_hex(WRITE_KEY.as_bytes()),
        management_key = tributary_core::sha256_hex(MANAGEMENT_KEY.as_bytes()),
    )
}

/// The deployed stack and the functions built on it.
struct Pipeline {
    stack: Deployment,
    aws: AwsClients,
    f: Functions,
    pollers: Vec<Poller>,
    hooks: Receiver,
    /// (binary, body) of every SQS record handed to a function, in order.
    handled: std::sync::Mutex<Vec<(String, String)>>,
    cert: String,
}

impl Pipeline {
    /// Calls the function the HTTP API routes `method path` to.
    async fn http(&self, method: &str, path: &str, auth: &str, body: Option<String>) -> ApiGatewayV2httpResponse {
        self.f.http(&self.stack.route(method, path), http_request(method, path, auth, body)).await
    }

    async fn send(&self, events: Vec<Value>) {
        let auth = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{WRITE_KEY}:")));
        let resp = self.http("POST", "/v1/batch", &auth, Some(json!({ "batch": events }).to_string())).await;
        let body: Value = serde_json::from_slice(&body_bytes(&resp)).expect("a JSON answer");
        assert_eq!(resp.status_code, 200, "{body}");
        assert_eq!(body["rejected"], json!([]), "{body}");
    }

    async fn profile_api(&self, path: &str) -> (i64, Value) {
        let resp = self.http("GET", path, &format!("Bearer {MANAGEMENT_KEY}"), None).await;
        (resp.status_code, serde_json::from_slice(&body_bytes(&resp)).unwrap_or(Value::Null))
    }

    /// Calls the DSR API; checks the answer is signed with the key the stack's `DSR_SIGNING_KEY` names.
    async fn dsr(&self, method: &str, path: &str, body: Option<Value>) -> (i64, Value) {
        let resp = self.http(method, path, &format!("Bearer {MANAGEMENT_KEY}"), body.map(|b| b.to_string())).await;
        let raw = body_bytes(&resp);
        let sig = resp.headers.get("x-opendsr-signature").and_then(|v| v.to_str().ok()).expect("a signed answer");
        tributary_dsr_api::verify(&self.cert, &raw, sig).expect("the answer's signature verifies");
        (resp.status_code, serde_json::from_slice(&raw).expect("a JSON answer"))
    }

    /// Plays Lambda's pollers until every mapped queue is empty. A record a function reports as failed fails the
    /// test: nothing in this scenario should need a retry, and its queue would hide it for the visibility timeout.
    async fn settle(&self) {
        // No redelivery: every record of this test must be handled the first time.
        let redelivery = pipeline::Redelivery { max_redeliveries: 0, within: SETTLE_WITHIN };
        pipeline::drain(&self.pollers, redelivery, async |p, messages| {
            let resp = self.f.consume(p, pipeline::sqs_event(p, messages)).await;
            let bodies = messages.iter().map(|m| (p.trigger.binary.clone(), m.body.clone()));
            self.handled.lock().expect("log").extend(bodies);
            resp
        })
        .await;
    }

    /// Records handed to the function built from `binary` so far.
    fn handled_by(&self, binary: &str) -> Vec<String> {
        let handled = self.handled.lock().expect("log");
        handled.iter().filter(|(b, _)| b == binary).map(|(_, body)| body.clone()).collect()
    }
}

/// Every message `queue` holds, received once (hidden meanwhile) and made visible again.
async fn peek_all(queue: &SqsQueue) -> Vec<ReceivedMessage> {
    let mut got: Vec<ReceivedMessage> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let batch = queue.receive(10, SCAN_HIDDEN, Duration::ZERO).await.expect("receive");
        if batch.is_empty() {
            let total = queue.approximate_len().await.expect("approximate_len") as usize;
            if got.len() >= total {
                break;
            }
            assert!(Instant::now() < deadline, "{}: {} of {total} messages received", queue.name(), got.len());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        got.extend(batch);
    }
    for m in &got {
        queue.change_visibility(&m.receipt_handle, Duration::ZERO).await.expect("release a message");
    }
    got
}

/// The wiring the code assumes, read from the deployed stack: which queue feeds which function, who writes to it,
/// dead-letter queues, the table's keys and indexes, the buckets, the schedules.
fn check_wiring(stack: &Deployment, workspace_uri: &str, key_uri: &str) {
    let deployed: BTreeSet<String> = stack.functions().keys().map(|id| stack.binary_of(id)).collect();
    assert_eq!(deployed, BINARIES.iter().map(|b| b.to_string()).collect(), "one function per Lambda binary");

    // Every queue trigger: the function it invokes answers with batchItemFailures, which Lambda honours only with
    // ReportBatchItemFailures (otherwise a partial failure would delete the failed records with the rest).
    let triggers = stack.triggers();
    let consumers: BTreeSet<&str> = triggers.iter().map(|t| t.binary.as_str()).collect();
    assert_eq!(consumers, BTreeSet::from(["stitch", "deliver", "import", "dsr-worker"]), "{triggers:?}");
    for t in &triggers {
        assert_eq!(t.function_response_types, ["ReportBatchItemFailures"], "{t:?}");
        let timeout = stack.functions()[&stack.function_id(&t.binary)]["timeout"].as_u64().expect("a timeout");
        let visibility: u64 = stack.queue(&t.queue)["attributes"]["VisibilityTimeout"]
            .as_str()
            .and_then(|v| v.parse().ok())
            .expect("a visibility timeout");
        // AWS refuses an SQS event source whose visibility timeout is shorter than the function's timeout.
        assert!(visibility >= timeout, "{}: visibility {visibility}s < {} timeout {timeout}s", t.queue, t.binary);
    }
    // Producers and consumers of each queue agree.
    let consumed = |binary: &str| stack.trigger_of(binary).queue_url;
    for (writer, variable, reader) in [
        ("ingest", "EVENTS_QUEUE_URL", "stitch"),
        ("import", "EVENTS_QUEUE_URL", "stitch"),
        ("stitch", "DELIVERY_QUEUE_URL", "deliver"),
        ("audiences", "DELIVERY_QUEUE_URL", "deliver"),
        ("deliver", "DELIVERY_QUEUE_URL", "deliver"),
        ("dsr-worker", "DELIVERY_QUEUE_URL", "deliver"),
        ("import", "IMPORT_QUEUE_URL", "import"),
        ("dsr-api", "DSR_QUEUE_URL", "dsr-worker"),
        ("dsr-worker", "DSR_QUEUE_URL", "dsr-worker"),
    ] {
        assert_eq!(stack.var(writer, variable), consumed(reader), "{writer}'s {variable} is the queue {reader} is on");
    }
    // The change feed: stitch writes what audiences drains; no trigger (each scheduled run drains it).
    let changes = stack.var("stitch", "CHANGES_QUEUE_URL");
    assert_eq!(stack.var("audiences", "CHANGES_QUEUE_URL"), changes);
    assert!(triggers.iter().all(|t| t.queue_url != changes), "nothing is triggered by the change feed");
    // Dead-letter queues: the ones deliver and the erasure use are the redrive targets of their queues.
    let dlq_of = |queue_url: &str| {
        let policy = &stack.queue(&stack.queue_id_by_url(queue_url))["attributes"]["RedrivePolicy"];
        let target = policy["deadLetterTargetArn"].as_str().unwrap_or_else(|| panic!("{queue_url}: {policy}"));
        let dlq = stack.queue(&stack.queue_id_by_arn(target))["url"].as_str().expect("a URL").to_string();
        (dlq, policy["maxReceiveCount"].as_u64().expect("maxReceiveCount"))
    };
    let (delivery_dlq, delivery_max) = dlq_of(&consumed("deliver"));
    assert_eq!(stack.var("deliver", "DELIVERY_DLQ_URL"), delivery_dlq);
    assert_eq!(stack.var("dsr-worker", "DELIVERY_DLQ_URL"), delivery_dlq);
    assert_eq!(
        stack.var("deliver", "DELIVERY_MAX_RECEIVE_COUNT"),
        delivery_max.to_string(),
        "deliver dead-letters first"
    );
    assert_eq!(stack.var("dsr-worker", "EVENTS_DLQ_URL"), dlq_of(&consumed("stitch")).0);
    assert_eq!(stack.var("dsr-worker", "CHANGES_DLQ_URL"), dlq_of(&changes).0);

    // One table for all, keyed as the DynamoDB adapter keys it, with the sparse indexes the code scans.
    let table_name = stack.var("stitch", "PROFILES_TABLE");
    for binary in BINARIES {
        assert_eq!(stack.var(binary, "PROFILES_TABLE"), table_name, "{binary}");
    }
    let table = stack.table_by_name(&table_name);
    assert_eq!(
        table["key_schema"],
        json!([{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}])
    );
    let attribute_type = |name: &str| {
        let defs = table["attribute_definitions"].as_array().expect("attribute definitions");
        defs.iter().find(|d| d["AttributeName"] == name).map(|d| d["AttributeType"].clone())
    };
    for index in SPARSE_INDEXES {
        assert_eq!(attribute_type(index.attribute), Some(json!("S")), "{}", index.attribute);
        let gsi = table["global_secondary_indexes"]
            .as_array()
            .and_then(|all| all.iter().find(|g| g["IndexName"] == index.name).cloned());
        let gsi = gsi.unwrap_or_else(|| panic!("the table has no index {}: {table}", index.name));
        assert_eq!(gsi["KeySchema"], json!([{"AttributeName": index.attribute, "KeyType": "HASH"}]), "{}", index.name);
    }
    assert_eq!(attribute_type("pk"), Some(json!("S")));
    assert_eq!(attribute_type("sk"), Some(json!("S")));
    // Dedup records and event history expire by the attribute the DynamoDB adapter writes (crates/aws/src/dynamo.rs).
    assert_eq!(table["time_to_live"]["AttributeName"], "ttl", "{table}");

    // Buckets: the quarantine is the archive the erasure searches; partner files arrive where import reads them and
    // are announced on the import queue; exports are written and presigned in one results bucket.
    let archive = stack.var("ingest", "QUARANTINE_BUCKET");
    assert_eq!(stack.var("dsr-worker", "ARCHIVE_BUCKET"), archive);
    stack.bucket_id_by_name(&archive);
    let imports = stack.var("import", "IMPORT_BUCKET");
    assert_eq!(stack.var("dsr-worker", "IMPORT_BUCKET"), imports);
    let notifications = &stack.bucket(&stack.bucket_id_by_name(&imports))["notification_configuration"];
    let to_import: Vec<&Value> = notifications["QueueConfigurations"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["QueueArn"] == stack.trigger_of("import").queue_arn.as_str())
        .collect();
    assert_eq!(to_import.len(), 1, "the import bucket announces new objects on the import queue: {notifications}");
    assert!(to_import[0]["Events"].as_array().is_some_and(|e| e.contains(&json!("s3:ObjectCreated:*"))));
    assert_eq!(
        to_import[0]["Filter"]["Key"]["FilterRules"],
        json!([{"Name": "prefix", "Value": IMPORTS_PREFIX}]),
        "only partner files are announced (not the reports the function writes)"
    );
    let results = stack.var("dsr-api", "RESULTS_BUCKET");
    assert_eq!(stack.var("dsr-worker", "RESULTS_BUCKET"), results);
    stack.bucket_id_by_name(&results);

    // The locations given as parameters.
    for binary in BINARIES {
        assert_eq!(stack.var(binary, "WORKSPACE_CONFIG"), workspace_uri, "{binary}");
    }
    for binary in ["dsr-api", "dsr-worker"] {
        assert_eq!(stack.var(binary, "DSR_SIGNING_KEY"), key_uri, "{binary}");
    }

    // Schedules: the audience refresh's inputs are refresh requests (one incremental, one full); the DSR worker's
    // is not an SQS batch, so it sweeps.
    let refreshes: Vec<RefreshRequest> = stack
        .schedule_inputs("audiences")
        .into_iter()
        .map(|v| serde_json::from_value(v).expect("a refresh request"))
        .collect();
    assert_eq!(
        refreshes.iter().map(|r| r.full).collect::<BTreeSet<_>>(),
        BTreeSet::from([false, true]),
        "{refreshes:?}"
    );
    let sweeps = stack.schedule_inputs("dsr-worker");
    assert_eq!(sweeps.len(), 1, "{sweeps:?}");
    assert!(sweeps[0].get("Records").is_none());

    // The public routes (README, DESIGN.md §2) are on the HTTP API, each to the function that serves it.
    for (method, path, binary) in ROUTES {
        assert_eq!(stack.route(method, path), binary, "{method} {path}");
    }
}

/// Every HTTP route the functions serve, with an example path, and the function that serves it.
const ROUTES: [(&str, &str, &str); 26] = [
    ("POST", "/v1/track", "ingest"),
    ("POST", "/v1/identify", "ingest"),
    ("POST", "/v1/page", "ingest"),
    ("POST", "/v1/screen", "ingest"),
    ("POST", "/v1/group", "ingest"),
    ("POST", "/v1/alias", "ingest"),
    ("POST", "/v1/batch", "ingest"),
    ("POST", "/v1/import", "ingest"),
    ("GET", "/health", "ingest"),
    ("GET", "/v1/profiles/user_id:x", "profile-api"),
    ("GET", "/v1/profiles/user_id:x/events", "profile-api"),
    ("GET", "/v1/profiles/user_id:x/deliveries", "profile-api"),
    ("GET", "/v1/sources/web/stats", "profile-api"),
    ("GET", "/v1/sources/web/imports", "profile-api"),
    ("GET", "/v1/audit", "profile-api"),
    ("GET", "/v1/suppressions/email:x", "profile-api"),
    ("DELETE", "/v1/suppressions/email:x", "profile-api"),
    ("GET", "/openapi.json", "profile-api"),
    ("GET", "/opendsr/v2/discovery", "dsr-api"),
    ("GET", "/opendsr/v2/cert.pem", "dsr-api"),
    ("POST", "/opendsr/v2/requests", "dsr-api"),
    ("GET", "/opendsr/v2/requests/r-1", "dsr-api"),
    ("DELETE", "/opendsr/v2/requests/r-1", "dsr-api"),
    ("POST", "/opengdpr_requests", "dsr-api"),
    ("GET", "/opengdpr_requests/r-1", "dsr-api"),
    ("DELETE", "/opengdpr_requests/r-1", "dsr-api"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sam_template_deployed_on_moto_runs_the_whole_pipeline() {
    let started = Instant::now();
    let endpoint = aws_env::init();
    let aws = AwsClients::from_env().await;

    // The operator's side: a config bucket with the workspace file and the DSR signing key (the template's
    // parameters point at them), and the webhook the workspace names.
    let hooks = Receiver::start().await;
    let config_bucket = admin::create_bucket(&aws, &aws_env::unique("stack-config")).await.expect("config bucket");
    let config = aws.s3_store(&config_bucket, "");
    config
        .put("workspace.yaml", workspace_yaml(&format!("{}/crm", hooks.url())).into_bytes())
        .await
        .expect("put the workspace");
    let pem = std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../events/dsr/signing.pem"))
        .expect("events/dsr/signing.pem");
    config.put("dsr/signing.pem", pem).await.expect("put the signing key");
    let workspace_uri = format!("s3://{config_bucket}/workspace.yaml");
    let key_uri = format!("s3://{config_bucket}/dsr/signing.pem");

    let stack_name = aws_env::unique("tributary-stack");
    let (w, k) = (workspace_uri.clone(), key_uri.clone());
    let stack = tokio::task::spawn_blocking(move || {
        let params = [("WorkspaceConfigUri", w.as_str()), ("DsrSigningKeyUri", k.as_str()), ("Architecture", "x86_64")];
        Deployment::create(&endpoint, &stack_name, &params)
    })
    .await
    .expect("the deployment");
    println!("emulator: {}", serde_json::to_string_pretty(&stack.report["emulator"]).unwrap_or_default());
    println!("deployed in {:?}", started.elapsed());
    check_wiring(&stack, &workspace_uri, &key_uri);

    let f = Functions::new(&stack, &aws).await;
    let pollers = pipeline::pollers(&stack, &aws);
    let mut p = Pipeline { stack, aws, f, pollers, hooks, handled: Default::default(), cert: String::new() };
    let resp = p.http("GET", "/opendsr/v2/cert.pem", "", None).await;
    assert_eq!(resp.status_code, 200);
    p.cert = String::from_utf8(body_bytes(&resp)).expect("PEM");
    assert!(p.cert.contains("BEGIN CERTIFICATE") && !p.cert.contains("PRIVATE KEY"));

    // Every route of the HTTP API reaches a handler that serves it (a stranger gets 401 or an answer, never a 404 or
    // 405 from the function: API Gateway would be forwarding a path the function does not know).
    let routes: Vec<(String, String)> = p.stack.report["http_routes"]
        .as_array()
        .expect("routes")
        .iter()
        .map(|r| (r["method"].as_str().unwrap_or("").to_string(), r["path"].as_str().unwrap_or("").to_string()))
        .collect();
    assert_eq!(routes.len(), ROUTES.len(), "the HTTP API has exactly the documented routes: {routes:?}");
    for (method, template) in &routes {
        let path: Vec<String> =
            template.split('/').map(|s| if s.starts_with('{') { "x".to_string() } else { s.to_string() }).collect();
        let resp = p.http(method, &path.join("/"), "", None).await;
        assert!(![404, 405].contains(&resp.status_code), "{method} {template}: {}", resp.status_code);
    }

    // The S3 test event the import bucket's notification configuration sent is taken and ignored.
    p.settle().await;
    let first = p.handled_by("import");
    assert!(first.iter().any(|b| b.contains("s3:TestEvent")), "S3's test event reached the import function: {first:?}");

    // Tracking API → ingest → events queue → stitch → delivery queue → deliver → webhook.
    let consent = |granted: bool| json!({"consent": {"categoryPreferences": {"analytics": granted}}});
    p.send(vec![
        json!({"type": "page", "name": "Home", "anonymousId": ANN_PHONE, "messageId": "a1", "context": consent(true)}),
        json!({"type": "identify", "userId": ANN_USER, "anonymousId": ANN_PHONE, "messageId": "a2",
               "traits": {"email": ANN_EMAIL, "plan": "pro"}, "context": consent(true)}),
        json!({"type": "identify", "userId": ANN_USER, "anonymousId": ANN_LAPTOP, "messageId": "a3",
               "context": consent(true)}),
        json!({"type": "identify", "userId": BOB_USER, "anonymousId": BOB_ANON, "messageId": "b1",
               "traits": {"email": BOB_EMAIL}, "context": consent(true)}),
        json!({"type": "track", "event": "Viewed", "userId": BOB_USER, "messageId": "b2", "context": consent(false)}),
    ])
    .await;
    p.settle().await;
    assert!(p.handled_by("stitch").iter().any(|b| b.contains("\"a1\"")), "stitch took the events queue");
    let crm: Vec<Value> = p.hooks.to("/crm").iter().map(|x| x.json()).collect();
    let ids: BTreeSet<&str> = crm.iter().filter_map(|e| e["messageId"].as_str()).collect();
    assert_eq!(ids, BTreeSet::from(["a1", "a2", "a3", "b1"]), "consented events only: {crm:?}");

    // A partner file: S3 notification → import queue → import → events queue → stitch.
    let imports = p.stack.var("import", "IMPORT_BUCKET");
    let csv = format!("email,tier\n{},gold\n{BOB_EMAIL},silver\n", ANN_EMAIL.to_uppercase());
    p.aws.s3_store(&imports, "").put("imports/partner/q4.csv", csv.into_bytes()).await.expect("drop a partner file");
    p.settle().await;
    let notes: Vec<Value> =
        p.handled_by("import").iter().filter_map(|b| serde_json::from_str(b).ok()).collect::<Vec<Value>>();
    assert!(
        notes.iter().any(|n| n["Records"][0]["eventSource"] == "aws:s3"
            // URL-encoded as in S3's notifications (moto encodes the slashes too).
            && n["Records"][0]["s3"]["object"]["key"].as_str().and_then(|k| decode_notification_key(k).ok())
                == Some("imports/partner/q4.csv".to_string())
            && n["Records"][0]["s3"]["bucket"]["name"] == imports.as_str()),
        "the bucket's notification reached the import function: {notes:?}"
    );
    let (status, ann) = p.profile_api(&format!("/v1/profiles/user_id:{ANN_USER}")).await;
    assert_eq!(status, 200, "{ann}");
    assert_eq!(ann["traits"]["tier"]["value"], "gold", "{ann}");
    assert_eq!(ann["traits"]["plan"]["value"], "pro", "{ann}");
    let (_, bob) = p.profile_api(&format!("/v1/profiles/user_id:{BOB_USER}")).await;
    assert_eq!(bob["traits"]["tier"]["value"], "silver", "{bob}");
    let (status, events) = p.profile_api(&format!("/v1/profiles/user_id:{ANN_USER}/events")).await;
    assert_eq!(status, 200, "{events}");
    assert_eq!(events["events"].as_array().map(Vec::len), Some(4), "3 events and a partner row: {events}");

    // The incremental schedule: audiences drains the change feed stitch wrote, Ann enters "gold", the webhook is told.
    let incremental = p
        .stack
        .schedule_inputs("audiences")
        .into_iter()
        .map(|v| serde_json::from_value::<RefreshRequest>(v).expect("a refresh request"))
        .find(|r| !r.full)
        .expect("an incremental schedule");
    let timeout = p.stack.functions()[&p.stack.function_id("audiences")]["timeout"].as_u64().expect("timeout");
    let run =
        p.f.audiences
            .handle(incremental, Some(Instant::now() + Duration::from_secs(timeout)))
            .await
            .expect("an audience refresh");
    assert_eq!(run.entered, 1, "{run:?}");
    p.settle().await;
    let entered: Vec<Value> =
        p.hooks.to("/crm").iter().map(|x| x.json()).filter(|e| e["event"] == "Audience Entered").collect();
    assert_eq!(entered.len(), 1, "{entered:?}");
    assert_eq!(entered[0]["userId"], ANN_USER);

    // OpenDSR erasure of Ann by email: dsr-api → DSR queue → dsr-worker, signed callbacks to the controller.
    let request_id = uuid::Uuid::new_v4().to_string();
    let (status, created) = p
        .dsr(
            "POST",
            "/opendsr/v2/requests",
            Some(json!({
                "regulation": "gdpr", "subject_request_id": request_id, "subject_request_type": "erasure",
                "submitted_time": "2026-11-30T10:00:00Z", "api_version": "2.0",
                "subject_identities": [
                    {"identity_type": "email", "identity_value": ANN_EMAIL, "identity_format": "raw"}
                ],
                "status_callback_urls": [format!("{}/callbacks", p.hooks.url())],
            })),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    p.settle().await;
    assert!(p.handled_by("dsr-worker").iter().any(|b| b.contains(&request_id)), "the worker took the DSR queue");
    let (status, done) = p.dsr("GET", &format!("/opendsr/v2/requests/{request_id}"), None).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["request_status"], "completed", "{done}");
    assert_receipts(
        &receipts(&done, DOMAIN),
        &[
            ("identities", "suppressed", 4),
            ("profiles", "deleted", 1),
            ("events", "deleted", 4),
            ("import_files", "deleted", 1),
            ("destination:crm", "forwarded", 1),
        ],
    );
    let callbacks: Vec<String> = p
        .hooks
        .to("/callbacks")
        .iter()
        .map(|x| {
            let sig = x.headers.get("x-opendsr-signature").and_then(|v| v.to_str().ok()).unwrap_or("");
            tributary_dsr_api::verify(&p.cert, &x.body, sig).expect("the callback's signature verifies");
            x.json()["request_status"].as_str().unwrap_or("").to_string()
        })
        .collect();
    assert!(callbacks.contains(&"completed".to_string()), "{callbacks:?}");
    let (status, _) = p.profile_api(&format!("/v1/profiles/user_id:{ANN_USER}")).await;
    assert_eq!(status, 404, "Ann is gone");

    // The sweep schedule's input is dispatched as a sweep (nothing is waiting).
    for input in p.stack.schedule_inputs("dsr-worker") {
        let out = tributary_dsr_worker::lambda::invoke(&p.f.dsr_worker, input).await.expect("a sweep");
        assert_eq!(out, json!({"queued": 0}));
    }

    // Nothing of Ann's anywhere the stack stores: every table item, every version of every object of its buckets
    // (the archive and import buckets are versioned: what the erasure deleted or rewrote must not live on as an
    // earlier version), every message of its queues and dead-letter queues.
    let mut stored: Vec<String> = Vec::new();
    let table = p.stack.var("stitch", "PROFILES_TABLE");
    for item in admin::scan_all(&p.aws, &table).await.expect("scan the table") {
        stored.push(format!("table: {}", item.to_lowercase()));
    }
    let buckets: BTreeMap<String, Value> =
        p.stack.report["buckets"].as_object().expect("buckets").iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    for (id, bucket) in &buckets {
        let store = p.aws.s3_store(bucket["name"].as_str().expect("a bucket name"), "");
        stored.extend(every_object_version(&store, id).await);
    }
    let queues: Vec<(String, String)> = p.stack.report["queues"]
        .as_object()
        .expect("queues")
        .iter()
        .map(|(id, q)| (id.clone(), q["url"].as_str().expect("a queue URL").to_string()))
        .collect();
    for (id, url) in &queues {
        for m in peek_all(&p.aws.sqs_queue(url)).await {
            stored.push(format!("{id}: {}", m.body.to_lowercase()));
        }
    }
    for t in ann_traces() {
        if let Some(line) = stored.iter().find(|l| l.contains(t.as_str())) {
            panic!("after the erasure {t} is still stored: {}", &line[..line.len().min(600)]);
        }
    }
    assert!(stored.iter().any(|l| l.contains(BOB_EMAIL)), "the scan reads the stores: Bob is still there");
    println!("the emulator deployment test took {:?}", started.elapsed());
}
