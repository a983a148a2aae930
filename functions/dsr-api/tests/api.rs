//! The DSR API handler over an in-memory table, a recording queue and fake result links: every route, every
//! refusal, the signature on every JSON answer checked as a controller checks it (the certificate's key, with
//! rustls-webpki), the audit log, and no identity value anywhere in what is stored.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use base64::Engine as _;
use http::{HeaderValue, Method};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use serde_json::{json, Value};
use time::macros::datetime;
use time::OffsetDateTime;
use tributary_core::config::WorkspaceConfig;
use tributary_core::dsr::record::{AUDIT_PK_PREFIX, WAITING_PK};
use tributary_core::dsr::{
    request_key, waiting_key, AuditRow, DsrRecord, DsrTask, ExportResult, RequestStatus, ResultLinks, Signer,
};
use tributary_core::ports::{FailedEntry, Item, OutgoingMessage, PortError, Queue, ReceivedMessage};
use tributary_core::testing::{FaultyTable, MemoryTable};
use tributary_dsr_api::{DsrApi, RsaSigner};

const FIXTURE: &str = include_str!("../../../events/dsr/signing.pem");
const DSR_KEY: &str = "dsr-secret-key";
const ADMIN_KEY: &str = "admin-secret-key";
const READER_KEY: &str = "reader-secret-key";
const ID: &str = "a7551968-d5d6-44b2-9831-815ac9017798";
const ID2: &str = "0b7f7c3e-8f5e-4a8e-9d55-2a1a3b4c5d6e";
const NOW: OffsetDateTime = datetime!(2026-03-10 12:00:00 UTC);
const DAY_MS: i64 = 86_400_000;
const EMAIL: &str = "JohnDoe@Example.com";
/// Values of the subject that must never be stored, in any spelling.
const SECRETS: [&str; 4] = ["johndoe", "JohnDoe", "2079460958", "u-42"];

fn now_ms() -> i64 {
    (NOW.unix_timestamp_nanos() / 1_000_000) as i64
}

fn workspace(waiting_days: u32) -> WorkspaceConfig {
    let sha = |k: &str| tributary_core::sha256_hex(k.as_bytes());
    let text = format!(
        "workspace: test\n\
         management_keys:\n\
         \x20 - {{id: reader, key_sha256: {}, scopes: [\"profiles:read\"]}}\n\
         \x20 - {{id: admin, key_sha256: {}, scopes: [admin]}}\n\
         \x20 - {{id: controller, key_sha256: {}, scopes: [dsr]}}\n\
         profiles:\n\
         \x20 default_country_code: \"44\"\n\
         dsr:\n\
         \x20 processor_domain: dsr.example.com\n\
         \x20 controller_id: ctrl-1\n\
         \x20 waiting_period_days: {waiting_days}\n\
         \x20 expected_completion_days: 30\n",
        sha(READER_KEY),
        sha(ADMIN_KEY),
        sha(DSR_KEY),
    );
    tributary_core::config::load(&text).expect("test workspace is valid")
}

/// Keeps what it is sent; refuses everything while `fail` is set.
#[derive(Clone, Default)]
struct RecordingQueue {
    sent: Arc<Mutex<Vec<String>>>,
    fail: Arc<Mutex<bool>>,
}

impl RecordingQueue {
    fn tasks(&self) -> Vec<DsrTask> {
        let sent = self.sent.lock().expect("lock");
        sent.iter().map(|b| serde_json::from_str(b).expect("a task")).collect()
    }
}

impl Queue for RecordingQueue {
    async fn send_batch(&self, messages: &[OutgoingMessage]) -> Result<Vec<FailedEntry>, PortError> {
        if *self.fail.lock().expect("lock") {
            return Err(PortError::Unavailable("queue down".into()));
        }
        self.sent.lock().expect("lock").extend(messages.iter().map(|m| m.body.clone()));
        Ok(Vec::new())
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

struct FakeLinks;

impl ResultLinks for FakeLinks {
    async fn link(&self, key: &str, expires_at_ms: i64) -> Result<String, PortError> {
        Ok(format!("https://results.example/{key}?expires={expires_at_ms}"))
    }
}

/// The API's view of the table: the same items, with writes to the audit log that can be made to fail and
/// transactions that can be made to lose their race (another writer got there first).
type Api = DsrApi<FaultyTable<MemoryTable>, RecordingQueue, RsaSigner, FakeLinks>;

struct Setup {
    api: Api,
    table: MemoryTable,
    faults: FaultyTable<MemoryTable>,
    queue: RecordingQueue,
    cert: String,
}

fn setup_with(waiting_days: u32, certificate_url: Option<&str>) -> Setup {
    let signer = RsaSigner::from_pem(FIXTURE).expect("fixture key");
    let cert = signer.certificate_pem().to_string();
    let table = FaultyTable::new(MemoryTable::default());
    let queue = RecordingQueue::default();
    let api = DsrApi::new(
        table.clone(),
        queue.clone(),
        signer,
        FakeLinks,
        Arc::new(workspace(waiting_days)),
        certificate_url.map(str::to_string),
    )
    .with_clock(|| NOW);
    Setup { api, table: table.inner().clone(), faults: table, queue, cert }
}

/// A 7-day waiting period: requests stay pending (cancellable) and nothing is queued at create.
fn setup() -> Setup {
    setup_with(7, None)
}

fn request(method: Method, path: &str, auth: Option<&str>, body: Option<&str>) -> ApiGatewayV2httpRequest {
    let mut req = ApiGatewayV2httpRequest::default();
    req.raw_path = Some(path.to_string());
    req.request_context.http.method = method;
    req.request_context.domain_name = Some("abc123.execute-api.eu-west-1.amazonaws.com".into());
    if let Some(a) = auth {
        req.headers.insert("authorization", HeaderValue::from_str(a).expect("header"));
    }
    req.body = body.map(str::to_string);
    req
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

fn create_body() -> Value {
    json!({
        "regulation": "gdpr",
        "subject_request_id": ID,
        "subject_request_type": "erasure",
        "submitted_time": "2026-03-10T11:59:00Z",
        "subject_identities": [{"identity_type": "email", "identity_value": EMAIL, "identity_format": "raw"}],
        "api_version": "2.0",
        "status_callback_urls": ["https://controller.example/callbacks", "https://backup.example/cb"],
    })
}

async fn create(s: &Setup, body: &Value) -> ApiGatewayV2httpResponse {
    let text = body.to_string();
    s.api.handle(request(Method::POST, "/opendsr/v2/requests", Some(&bearer(DSR_KEY)), Some(&text))).await
}

fn text(resp: &ApiGatewayV2httpResponse) -> &str {
    match &resp.body {
        Some(Body::Text(t)) => t,
        other => panic!("a text body, got {other:?}"),
    }
}

fn header<'a>(resp: &'a ApiGatewayV2httpResponse, name: &str) -> Option<&'a str> {
    resp.headers.get(name).and_then(|v| v.to_str().ok())
}

/// The body, after checking the status and that the answer is signed as a controller verifies it (§8.8): the
/// processor domain header, and the signature header over the exact body bytes with the certificate's key.
fn signed_json(resp: &ApiGatewayV2httpResponse, status: i64, legacy: bool, cert: &str) -> Value {
    let body = text(resp);
    assert_eq!(resp.status_code, status, "{body}");
    let (domain, sig, other_domain, other_sig) = if legacy {
        ("x-opengdpr-processor-domain", "x-opengdpr-signature", "x-opendsr-processor-domain", "x-opendsr-signature")
    } else {
        ("x-opendsr-processor-domain", "x-opendsr-signature", "x-opengdpr-processor-domain", "x-opengdpr-signature")
    };
    assert_eq!(header(resp, domain), Some("dsr.example.com"));
    assert!(header(resp, other_domain).is_none() && header(resp, other_sig).is_none());
    assert_eq!(header(resp, "content-type"), Some("application/json"));
    let signature = header(resp, sig).expect("signature header");
    verify_with_webpki(cert, body.as_bytes(), signature).expect("the signature verifies");
    // The same signature over anything else does not.
    assert!(verify_with_webpki(cert, format!("{body} ").as_bytes(), signature).is_err());
    serde_json::from_str(body).expect("JSON body")
}

/// What a controller does: the certificate's public key, RSA PKCS#1 v1.5 with SHA-256.
fn verify_with_webpki(cert_pem: &str, body: &[u8], signature_b64: &str) -> Result<(), webpki::Error> {
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("certificate");
    let cert = webpki::EndEntityCert::try_from(&der).expect("parses");
    let signature = base64::engine::general_purpose::STANDARD.decode(signature_b64).expect("base64");
    cert.verify_signature(webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA256, body, &signature)
}

fn stored(table: &MemoryTable, id: &str) -> (Item, DsrRecord) {
    let item = table.items().into_iter().find(|i| i.key == request_key(id)).expect("stored request");
    let record = DsrRecord::from_attrs(&item.attrs).expect("record");
    (item, record)
}

fn audit_rows(table: &MemoryTable) -> Vec<AuditRow> {
    table
        .items()
        .iter()
        .filter(|i| i.key.pk.starts_with(AUDIT_PK_PREFIX))
        .map(|i| AuditRow::from_attrs(&i.attrs).expect("audit row"))
        .collect()
}

fn waiting_entries(table: &MemoryTable) -> Vec<Item> {
    table.items().into_iter().filter(|i| i.key.pk == WAITING_PK).collect()
}

/// No stored key or attribute holds a value of the subject.
fn assert_no_identity_stored(table: &MemoryTable) {
    for item in table.items() {
        let raw = format!("{} {} {}", item.key.pk, item.key.sk, Value::Object(item.attrs.clone()));
        for secret in SECRETS {
            assert!(!raw.contains(secret), "{secret:?} stored in {raw}");
        }
    }
}

#[tokio::test]
async fn create_stores_a_pending_request_and_answers_201_signed() {
    let s = setup();
    let body = create_body();
    let resp = create(&s, &body).await;
    let answer = signed_json(&resp, 201, false, &s.cert);
    assert_eq!(answer["controller_id"], "ctrl-1");
    assert_eq!(answer["subject_request_id"], ID);
    assert_eq!(answer["received_time"], "2026-03-10T12:00:00Z");
    // 7 days of waiting, then 30 to complete.
    assert_eq!(answer["expected_completion_time"], "2026-04-16T12:00:00Z");
    let encoded = answer["encoded_request"].as_str().expect("encoded_request");
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded).expect("base64");
    assert_eq!(decoded, body.to_string().as_bytes());
    assert_eq!(header(&resp, "cache-control"), Some("no-store"));

    let (item, record) = stored(&s.table, ID);
    assert_eq!(item.version, 1);
    assert_eq!(record.status, RequestStatus::Pending);
    assert_eq!(record.created_by, "controller");
    assert!(!record.legacy);
    assert_eq!(record.not_before, Some(now_ms() + 7 * DAY_MS));
    assert_eq!(record.callbacks.len(), 2);
    assert_eq!(record.subject.len(), 1);
    assert!(record.subject[0].pk.starts_with("id#"));

    // The waiting entry the worker's sweep reads, at the end of the waiting period.
    let waiting = waiting_entries(&s.table);
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].key, waiting_key(now_ms() + 7 * DAY_MS, ID));
    assert_eq!(waiting[0].attrs.get("id"), Some(&json!(ID)));

    let audit = audit_rows(&s.table);
    assert_eq!(audit.len(), 1);
    assert_eq!(
        audit[0],
        AuditRow {
            actor: "controller".into(),
            action: "dsr.create".into(),
            target: ID.into(),
            outcome: "201".into(),
            at: now_ms(),
            receipts: Vec::new(),
        }
    );
    // Waiting: the sweep queues it when the period ends, not the create.
    assert!(s.queue.tasks().is_empty());
    assert_no_identity_stored(&s.table);
}

#[tokio::test]
async fn without_a_waiting_period_the_request_is_queued_and_survives_a_failed_enqueue() {
    let s = setup_with(0, None);
    signed_json(&create(&s, &create_body()).await, 201, false, &s.cert);
    assert_eq!(s.queue.tasks(), vec![DsrTask::Process { id: ID.into() }]);
    assert_eq!(waiting_entries(&s.table)[0].key, waiting_key(now_ms(), ID));
    assert_eq!(stored(&s.table, ID).1.not_before, None);

    // The queue is down: still 201, and the waiting entry lets the sweep start it.
    *s.queue.fail.lock().expect("lock") = true;
    let mut body = create_body();
    body["subject_request_id"] = json!(ID2);
    signed_json(&create(&s, &body).await, 201, false, &s.cert);
    assert!(waiting_entries(&s.table).iter().any(|i| i.key == waiting_key(now_ms(), ID2)));
    assert_eq!(s.queue.tasks().len(), 1);
}

#[tokio::test]
async fn skip_waiting_period_queues_at_once() {
    let s = setup();
    let mut body = create_body();
    body["extensions"] = json!({"opendsr.mparticle.com": {"skip_waiting_period": true}});
    let answer = signed_json(&create(&s, &body).await, 201, false, &s.cert);
    assert_eq!(answer["expected_completion_time"], "2026-04-09T12:00:00Z");
    assert_eq!(s.queue.tasks(), vec![DsrTask::Process { id: ID.into() }]);
    assert_eq!(waiting_entries(&s.table)[0].key, waiting_key(now_ms(), ID));
}

#[tokio::test]
async fn a_duplicate_is_refused_with_409() {
    let s = setup();
    signed_json(&create(&s, &create_body()).await, 201, false, &s.cert);
    let answer = signed_json(&create(&s, &create_body()).await, 409, false, &s.cert);
    assert_eq!(answer["code"], "duplicate_request");
    assert_eq!(answer["message"], "Subject request already exists.");
    assert_eq!(answer["error"]["code"], 409);
    // Nothing written twice.
    assert_eq!(audit_rows(&s.table).len(), 1);
    assert_eq!(waiting_entries(&s.table).len(), 1);
}

#[tokio::test]
async fn an_invalid_request_lists_every_problem_without_echoing_values() {
    let s = setup();
    let mut body = create_body();
    body.as_object_mut().expect("object").remove("regulation");
    body["subject_request_type"] = json!("rectification");
    body["subject_identities"] =
        json!([{"identity_type": "email", "identity_value": "not-an-email-johndoe", "identity_format": "raw"}]);
    let resp = create(&s, &body).await;
    let answer = signed_json(&resp, 400, false, &s.cert);
    assert_eq!(answer["code"], "invalid_request");
    assert_eq!(answer["error"]["code"], 400);
    let errors = answer["error"]["errors"].as_array().expect("errors");
    let locations: Vec<&str> = errors.iter().filter_map(|e| e["location"].as_str()).collect();
    for expected in ["regulation", "subject_request_type", "subject_identities[0].identity_value"] {
        assert!(locations.contains(&expected), "{locations:?}");
    }
    assert!(errors.iter().all(|e| e["domain"] == "OpenDSR" && e["reason"].is_string() && e["message"].is_string()));
    assert!(!text(&resp).contains("johndoe"));
    assert!(s.table.items().is_empty());

    for bad in ["", "{", "[]", "null"] {
        let resp = s.api.handle(request(Method::POST, "/opendsr/v2/requests", Some(&bearer(DSR_KEY)), Some(bad))).await;
        assert_eq!(signed_json(&resp, 400, false, &s.cert)["code"], "invalid_request", "{bad:?}");
    }
}

#[tokio::test]
async fn bodies_may_come_base64_encoded_and_are_bounded() {
    let s = setup();
    let encoded = base64::engine::general_purpose::STANDARD.encode(create_body().to_string());
    let mut req = request(Method::POST, "/opendsr/v2/requests", Some(&bearer(DSR_KEY)), Some(&encoded));
    req.is_base64_encoded = true;
    let answer = signed_json(&s.api.handle(req).await, 201, false, &s.cert);
    assert_eq!(answer["subject_request_id"], ID);

    let mut req = request(Method::POST, "/opendsr/v2/requests", Some(&bearer(DSR_KEY)), Some("%%% not base64"));
    req.is_base64_encoded = true;
    assert_eq!(signed_json(&s.api.handle(req).await, 400, false, &s.cert)["code"], "invalid_request");

    let mut big = create_body();
    big["padding"] = json!("x".repeat(70 * 1024));
    let answer = signed_json(&create(&s, &big).await, 413, false, &s.cert);
    assert_eq!(answer["error"]["code"], 413);
    let mut req = request(Method::POST, "/opendsr/v2/requests", Some(&bearer(DSR_KEY)), Some(&"QUFB".repeat(30_000)));
    req.is_base64_encoded = true;
    signed_json(&s.api.handle(req).await, 413, false, &s.cert);
}

#[tokio::test]
async fn the_legacy_route_needs_no_regulation_and_answers_with_opengdpr_headers() {
    let s = setup();
    let mut body = create_body();
    body.as_object_mut().expect("object").remove("regulation");
    let resp = s
        .api
        .handle(request(Method::POST, "/opengdpr_requests", Some(&bearer(DSR_KEY)), Some(&body.to_string())))
        .await;
    let answer = signed_json(&resp, 201, true, &s.cert);
    assert_eq!(answer["subject_request_id"], ID);
    let (_, record) = stored(&s.table, ID);
    assert!(record.legacy);

    let resp =
        s.api.handle(request(Method::GET, &format!("/opengdpr_requests/{ID}"), Some(&bearer(DSR_KEY)), None)).await;
    assert_eq!(signed_json(&resp, 200, true, &s.cert)["request_status"], "pending");
    // Errors on the legacy routes are signed with its names too.
    let resp =
        s.api.handle(request(Method::GET, &format!("/opengdpr_requests/{ID2}"), Some(&bearer(DSR_KEY)), None)).await;
    assert_eq!(signed_json(&resp, 404, true, &s.cert)["code"], "not_found");
    let resp =
        s.api.handle(request(Method::DELETE, &format!("/opengdpr_requests/{ID}"), Some(&bearer(DSR_KEY)), None)).await;
    assert_eq!(signed_json(&resp, 202, true, &s.cert)["request_status"], "cancelled");
}

#[tokio::test]
async fn mparticle_dictionary_identities_are_accepted() {
    let s = setup();
    let mut body = create_body();
    body["api_version"] = json!("3.0");
    body["group_id"] = json!("household-7");
    body["subject_identities"] = json!({
        "email": {"value": EMAIL, "encoding": "raw"},
        "controller_customer_id": {"value": "u-42", "encoding": "raw"},
    });
    body["extensions"] = json!({"opendsr.mparticle.com": {
        "subject_identities": {"mobile_number": {"value": "+44 20 7946 0958", "encoding": "raw"}},
    }});
    let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("mp-key:{DSR_KEY}")));
    let resp = s.api.handle(request(Method::POST, "/opendsr/v2/requests", Some(&basic), Some(&body.to_string()))).await;
    let answer = signed_json(&resp, 201, false, &s.cert);
    assert_eq!(answer["group_id"], "household-7");
    let (_, record) = stored(&s.table, ID);
    assert_eq!(record.subject.len(), 3);
    assert_eq!(record.api_version.as_deref(), Some("3.0"));
    assert_no_identity_stored(&s.table);
}

#[tokio::test]
async fn status_shows_the_lifecycle_and_the_results_link_while_it_works() {
    let s = setup();
    signed_json(&create(&s, &create_body()).await, 201, false, &s.cert);
    let get = || request(Method::GET, &format!("/opendsr/v2/requests/{ID}"), Some(&bearer(DSR_KEY)), None);

    let answer = signed_json(&s.api.handle(get()).await, 200, false, &s.cert);
    assert_eq!(answer["request_status"], "pending");
    assert_eq!(answer["controller_id"], "ctrl-1");
    assert_eq!(answer["subject_request_id"], ID);
    assert_eq!(answer["subject_request_type"], "erasure");
    assert_eq!(answer["api_version"], "2.0");
    assert!(answer.get("results_url").is_none() && answer.get("results_count").is_none());
    assert_eq!(answer["extensions"]["dsr.example.com"]["history"][0]["status"], "pending");

    // The worker has carried it out and left an export.
    let (item, mut record) = stored(&s.table, ID);
    record.transition(RequestStatus::InProgress, now_ms()).expect("start");
    record.transition(RequestStatus::Completed, now_ms()).expect("complete");
    record.result = Some(ExportResult { key: "dsr/exports/a.json".into(), count: 12, expires_at: now_ms() + DAY_MS });
    s.table.put(item.key.clone(), record.to_attrs());
    let answer = signed_json(&s.api.handle(get()).await, 200, false, &s.cert);
    assert_eq!(answer["request_status"], "completed");
    assert_eq!(
        answer["results_url"],
        format!("https://results.example/dsr/exports/a.json?expires={}", now_ms() + DAY_MS)
    );
    assert_eq!(answer["results_count"], 12);

    // Expired: no link, the count stays.
    record.result = Some(ExportResult { key: "dsr/exports/a.json".into(), count: 12, expires_at: now_ms() - 1 });
    s.table.put(item.key, record.to_attrs());
    let answer = signed_json(&s.api.handle(get()).await, 200, false, &s.cert);
    assert!(answer.get("results_url").is_none(), "{answer}");
    assert_eq!(answer["results_count"], 12);

    let reads: Vec<AuditRow> = audit_rows(&s.table).into_iter().filter(|r| r.action == "dsr.status").collect();
    assert_eq!(reads.len(), 3);
    assert!(reads.iter().all(|r| r.actor == "controller" && r.target == ID && r.outcome == "200"));
    assert_no_identity_stored(&s.table);
}

#[tokio::test]
async fn status_fails_closed_when_the_audit_log_cannot_be_written() {
    let s = setup();
    signed_json(&create(&s, &create_body()).await, 201, false, &s.cert);
    s.faults.fail_writes_with_prefix(AUDIT_PK_PREFIX, Some(PortError::Unavailable("audit partition throttled".into())));
    let resp =
        s.api.handle(request(Method::GET, &format!("/opendsr/v2/requests/{ID}"), Some(&bearer(DSR_KEY)), None)).await;
    let answer = signed_json(&resp, 503, false, &s.cert);
    assert_eq!(answer["code"], "unavailable");
    assert!(answer.get("request_status").is_none());
    assert_eq!(header(&resp, "retry-after"), Some("1"));
    assert!(audit_rows(&s.table).iter().all(|r| r.action != "dsr.status"));
}

#[tokio::test]
async fn cancel_while_pending_then_only_once() {
    let s = setup();
    signed_json(&create(&s, &create_body()).await, 201, false, &s.cert);
    let delete = || request(Method::DELETE, &format!("/opendsr/v2/requests/{ID}"), Some(&bearer(DSR_KEY)), None);

    let answer = signed_json(&s.api.handle(delete()).await, 202, false, &s.cert);
    assert_eq!(answer["request_status"], "cancelled");
    assert_eq!(answer["subject_request_id"], ID);
    let (item, record) = stored(&s.table, ID);
    assert_eq!(record.status, RequestStatus::Cancelled);
    assert_eq!(item.version, 2);
    assert!(waiting_entries(&s.table).is_empty(), "the sweep must not start a cancelled request");
    assert_eq!(
        s.queue.tasks(),
        vec![
            DsrTask::Callback { id: ID.into(), status: RequestStatus::Cancelled, url: 0 },
            DsrTask::Callback { id: ID.into(), status: RequestStatus::Cancelled, url: 1 },
        ]
    );
    let cancels: Vec<AuditRow> = audit_rows(&s.table).into_iter().filter(|r| r.action == "dsr.cancel").collect();
    assert_eq!(cancels.len(), 1);
    assert_eq!((cancels[0].actor.as_str(), cancels[0].outcome.as_str()), ("controller", "202"));

    let answer = signed_json(&s.api.handle(delete()).await, 409, false, &s.cert);
    assert_eq!(answer["code"], "not_pending");
    assert_eq!(answer["message"], "the request is cancelled; only a pending request can be cancelled");
    assert_eq!(s.queue.tasks().len(), 2);

    // A request the worker has started cannot be cancelled either.
    let mut body = create_body();
    body["subject_request_id"] = json!(ID2);
    signed_json(&create(&s, &body).await, 201, false, &s.cert);
    let (item, mut record) = stored(&s.table, ID2);
    record.transition(RequestStatus::InProgress, now_ms()).expect("start");
    s.table.put(item.key, record.to_attrs());
    let resp = s
        .api
        .handle(request(Method::DELETE, &format!("/opendsr/v2/requests/{ID2}"), Some(&bearer(DSR_KEY)), None))
        .await;
    let answer = signed_json(&resp, 409, false, &s.cert);
    assert_eq!(answer["message"], "the request is in_progress; only a pending request can be cancelled");
    assert_no_identity_stored(&s.table);
}

#[tokio::test]
async fn cancel_reads_again_after_losing_a_race_and_gives_up_after_a_few() {
    let s = setup();
    signed_json(&create(&s, &create_body()).await, 201, false, &s.cert);
    let delete = || request(Method::DELETE, &format!("/opendsr/v2/requests/{ID}"), Some(&bearer(DSR_KEY)), None);

    s.faults.lose_next_races(10);
    let resp = s.api.handle(delete()).await;
    assert_eq!(signed_json(&resp, 503, false, &s.cert)["code"], "unavailable");
    assert_eq!(stored(&s.table, ID).1.status, RequestStatus::Pending);
    assert!(s.queue.tasks().is_empty());

    s.faults.lose_next_races(1);
    let answer = signed_json(&s.api.handle(delete()).await, 202, false, &s.cert);
    assert_eq!(answer["request_status"], "cancelled");
    assert_eq!(stored(&s.table, ID).1.status, RequestStatus::Cancelled);
}

#[tokio::test]
async fn unknown_requests_are_404() {
    let s = setup();
    for (method, id) in [
        (Method::GET, ID),
        (Method::DELETE, ID),
        (Method::GET, "not-a-uuid"),
        (Method::GET, "A7551968-D5D6-44B2-9831-815AC9017798"),
    ] {
        let resp =
            s.api.handle(request(method, &format!("/opendsr/v2/requests/{id}"), Some(&bearer(DSR_KEY)), None)).await;
        let answer = signed_json(&resp, 404, false, &s.cert);
        assert_eq!(answer["code"], "not_found");
        assert_eq!(answer["error"]["code"], 404);
    }
    assert!(s.table.items().is_empty(), "no audit row for what does not exist");
}

#[tokio::test]
async fn keys_are_checked_before_anything_else() {
    let s = setup();
    let body = create_body().to_string();
    let post = |auth: Option<&str>| request(Method::POST, "/opendsr/v2/requests", auth, Some(&body));

    for auth in [None, Some("Bearer wrong-key"), Some("Bearer "), Some("Token x"), Some("Basic !!")] {
        let resp = s.api.handle(post(auth)).await;
        assert_eq!(signed_json(&resp, 401, false, &s.cert)["code"], "unauthorized", "{auth:?}");
        assert_eq!(header(&resp, "www-authenticate"), Some("Bearer"));
    }
    let resp = s.api.handle(post(Some(&bearer(READER_KEY)))).await;
    assert_eq!(signed_json(&resp, 403, false, &s.cert)["code"], "forbidden");
    let resp = s.api.handle(request(Method::GET, &format!("/opendsr/v2/requests/{ID}"), None, None)).await;
    signed_json(&resp, 401, false, &s.cert);
    let resp = s
        .api
        .handle(request(Method::DELETE, &format!("/opendsr/v2/requests/{ID}"), Some(&bearer(READER_KEY)), None))
        .await;
    signed_json(&resp, 403, false, &s.cert);
    assert!(s.table.items().is_empty());

    // Basic, as mParticle's controllers send it, and an admin key.
    let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("controller:{DSR_KEY}")));
    signed_json(&s.api.handle(post(Some(&basic))).await, 201, false, &s.cert);
    let resp =
        s.api.handle(request(Method::GET, &format!("/opendsr/v2/requests/{ID}"), Some(&bearer(ADMIN_KEY)), None)).await;
    signed_json(&resp, 200, false, &s.cert);
    let actors: Vec<String> = audit_rows(&s.table).into_iter().map(|r| r.actor).collect();
    assert!(actors.contains(&"controller".to_string()) && actors.contains(&"admin".to_string()), "{actors:?}");
}

#[tokio::test]
async fn discovery_and_the_certificate_need_no_key() {
    let s = setup();
    let resp = s.api.handle(request(Method::GET, "/opendsr/v2/discovery", None, None)).await;
    let answer = signed_json(&resp, 200, false, &s.cert);
    assert_eq!(answer["api_version"], "2.0");
    assert_eq!(
        answer["processor_certificate"],
        "https://abc123.execute-api.eu-west-1.amazonaws.com/opendsr/v2/cert.pem"
    );
    assert!(answer["supported_subject_request_types"].as_array().is_some_and(|t| !t.is_empty()));
    assert!(answer["supported_identities"].as_array().is_some_and(|t| !t.is_empty()));

    // Under a stage, the certificate is under it too.
    let resp = s.api.handle(request(Method::GET, "/prod/opendsr/v2/discovery", None, None)).await;
    let answer = signed_json(&resp, 200, false, &s.cert);
    assert_eq!(
        answer["processor_certificate"],
        "https://abc123.execute-api.eu-west-1.amazonaws.com/prod/opendsr/v2/cert.pem"
    );

    // `tributary serve`: plain HTTP at the address the caller used.
    let mut req = request(Method::GET, "/opendsr/v2/discovery", None, None);
    req.request_context.apiid = Some("local".into());
    req.request_context.domain_name = Some("localhost".into());
    req.headers.insert("host", HeaderValue::from_static("127.0.0.1:3000"));
    let answer = signed_json(&s.api.handle(req).await, 200, false, &s.cert);
    assert_eq!(answer["processor_certificate"], "http://127.0.0.1:3000/opendsr/v2/cert.pem");

    // A configured URL wins.
    let configured = setup_with(0, Some("https://static.example.com/dsr/cert.pem"));
    let resp = configured.api.handle(request(Method::GET, "/opendsr/v2/discovery", None, None)).await;
    let answer = signed_json(&resp, 200, false, &configured.cert);
    assert_eq!(answer["processor_certificate"], "https://static.example.com/dsr/cert.pem");

    let resp = s.api.handle(request(Method::GET, "/opendsr/v2/cert.pem", None, None)).await;
    assert_eq!(resp.status_code, 200);
    assert_eq!(header(&resp, "content-type"), Some("application/x-pem-file"));
    assert_eq!(text(&resp), s.cert);
    assert!(text(&resp).starts_with("-----BEGIN CERTIFICATE-----") && !text(&resp).contains("PRIVATE"));
    // The served certificate verifies what the API signs.
    let answer = s.api.handle(request(Method::GET, "/opendsr/v2/discovery", None, None)).await;
    tributary_dsr_api::verify(
        text(&resp),
        text(&answer).as_bytes(),
        header(&answer, "x-opendsr-signature").expect("sig"),
    )
    .expect("verifies");
}

#[tokio::test]
async fn unknown_routes_and_methods() {
    let s = setup();
    for path in ["/opendsr/v2/other", "/v1/profiles/x", "/opendsr/v2/requests/a/b", "/"] {
        let resp = s.api.handle(request(Method::GET, path, Some(&bearer(DSR_KEY)), None)).await;
        assert_eq!(signed_json(&resp, 404, false, &s.cert)["code"], "not_found", "{path}");
    }
    for (method, path, allow) in [
        (Method::GET, "/opendsr/v2/requests", "POST"),
        (Method::POST, "/opendsr/v2/discovery", "GET"),
        (Method::PUT, &format!("/opendsr/v2/requests/{ID}") as &str, "GET, DELETE"),
        (Method::DELETE, "/opengdpr_requests", "POST"),
    ] {
        let legacy = path.starts_with("/opengdpr");
        let resp = s.api.handle(request(method, path, Some(&bearer(DSR_KEY)), None)).await;
        assert_eq!(signed_json(&resp, 405, legacy, &s.cert)["code"], "method_not_allowed");
        assert_eq!(header(&resp, "allow"), Some(allow));
    }
}
