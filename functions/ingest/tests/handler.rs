//! The ingest handler driven by the API Gateway events in `events/`: every route, auth mode and encoding, and the
//! hostile corpus, and governance (tracking plans, PII) with `events/governance/workspace.yaml`. A recording queue
//! stands in for SQS and an in-memory store for the quarantine bucket, so the tests see exactly what was kept.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use base64::Engine;
use serde_json::{json, Value};
use time::macros::datetime;
use time::OffsetDateTime;
use tributary_core::config::WorkspaceConfig;
use tributary_core::governance::quarantine::QuarantineRecord;
use tributary_core::governance::stats;
use tributary_core::governance::ViolationKind;
use tributary_core::ingest::Envelope;
use tributary_core::ports::{
    validate_object_key, FailedEntry, Item, ItemKey, ObjectMeta, ObjectStore, OutgoingMessage, PortError, QueryPage,
    Queue, ReceivedMessage, TableStore, TransactError, WriteOp,
};
use tributary_core::profile::layout::message_hash;
use tributary_ingest::{Ingest, IngestSettings, MemoryMetrics};

const NOW: OffsetDateTime = datetime!(2025-03-10 12:00:10 UTC);
const WRITE_KEY: &str = "test-write-key";

fn events_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../events")
}

fn read_json(rel: &str) -> Value {
    let path = events_dir().join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn workspace() -> WorkspaceConfig {
    let text = std::fs::read_to_string(events_dir().join("workspace.yaml")).expect("workspace.yaml");
    tributary_core::config::load(&text).expect("fixture workspace is valid")
}

/// What the queue did on each call.
#[derive(Clone, Copy)]
enum Behaviour {
    Accept,
    /// Refuse every entry of the first `n` calls as retryable, then accept.
    FailFirst(usize),
    /// Fail every call with a retryable error.
    Down,
}

/// In-memory stand-in for SQS that records every accepted message.
#[derive(Clone)]
struct RecordingQueue {
    sent: Arc<Mutex<Vec<String>>>,
    calls: Arc<Mutex<Vec<usize>>>,
    behaviour: Behaviour,
}

impl RecordingQueue {
    fn new(behaviour: Behaviour) -> Self {
        RecordingQueue { sent: Default::default(), calls: Default::default(), behaviour }
    }

    fn envelopes(&self) -> Vec<Envelope> {
        self.sent.lock().unwrap().iter().map(|b| serde_json::from_str(b).expect("envelope")).collect()
    }

    fn events(&self) -> Vec<Value> {
        self.envelopes().into_iter().flat_map(|e| e.events).collect()
    }
}

impl Queue for RecordingQueue {
    async fn send_batch(&self, messages: &[OutgoingMessage]) -> Result<Vec<FailedEntry>, PortError> {
        assert!(messages.len() <= 10, "SendMessageBatch takes at most 10 entries");
        let call = {
            let mut calls = self.calls.lock().unwrap();
            calls.push(messages.len());
            calls.len()
        };
        match self.behaviour {
            Behaviour::Down => Err(PortError::Unavailable("queue down".into())),
            Behaviour::FailFirst(n) if call <= n => Ok(messages
                .iter()
                .map(|m| FailedEntry { id: m.id.clone(), retryable: true, reason: "InternalError".into() })
                .collect()),
            _ => {
                let mut sent = self.sent.lock().unwrap();
                for m in messages {
                    assert!(m.body.len() <= 256 * 1024, "message of {} bytes", m.body.len());
                    sent.push(m.body.clone());
                }
                Ok(vec![])
            }
        }
    }
    async fn receive(&self, _: usize, _: Duration, _: Duration) -> Result<Vec<ReceivedMessage>, PortError> {
        Ok(vec![])
    }
    async fn delete(&self, _: &str) -> Result<(), PortError> {
        Ok(())
    }
    async fn change_visibility(&self, _: &str, _: Duration) -> Result<(), PortError> {
        Ok(())
    }
    async fn approximate_len(&self) -> Result<u64, PortError> {
        Ok(self.sent.lock().unwrap().len() as u64)
    }
}

struct World {
    ingest: Ingest<RecordingQueue, Arc<MemoryMetrics>>,
    queue: RecordingQueue,
    metrics: Arc<MemoryMetrics>,
}

fn world_with(behaviour: Behaviour, workspace: WorkspaceConfig) -> World {
    let queue = RecordingQueue::new(behaviour);
    let metrics = Arc::new(MemoryMetrics::default());
    let settings = IngestSettings { send_backoff: Duration::from_millis(1), ..Default::default() };
    let ingest = Ingest::new(queue.clone(), metrics.clone(), Arc::new(workspace), settings).with_clock(|| NOW);
    World { ingest, queue, metrics }
}

fn world() -> World {
    world_with(Behaviour::Accept, workspace())
}

fn body_json(resp: &ApiGatewayV2httpResponse) -> Value {
    match &resp.body {
        Some(Body::Text(t)) => serde_json::from_str(t).unwrap_or_else(|e| panic!("response body not JSON ({e}): {t}")),
        other => panic!("unexpected body {other:?}"),
    }
}

fn request(v: Value) -> ApiGatewayV2httpRequest {
    serde_json::from_value(v).expect("valid API Gateway v2 event")
}

#[tokio::test]
async fn every_fixture_gets_its_documented_outcome() {
    let cases = read_json("apigw/cases.json");
    for case in cases["cases"].as_array().unwrap() {
        let file = case["file"].as_str().unwrap();
        let w = world();
        let resp = w.ingest.handle(request(read_json(&format!("apigw/{file}")))).await;
        let body = body_json(&resp);
        assert_eq!(resp.status_code, case["status"].as_i64().unwrap(), "{file}: {body}");
        assert_eq!(resp.headers.get("content-type").unwrap(), "application/json", "{file}");
        if resp.status_code != 200 || file == "health.json" {
            if let Some(code) = case.get("code") {
                assert_eq!(&body["code"], code, "{file}");
                assert!(body["message"].is_string(), "{file}");
            }
            assert!(w.queue.events().is_empty(), "{file}: refused request queued events");
            continue;
        }
        assert_eq!(body["success"], true, "{file}");
        assert_eq!(body["accepted"], case["accepted"], "{file}: {body}");
        assert_eq!(body["rejected"].as_array().unwrap().len() as u64, case["rejected"].as_u64().unwrap(), "{file}");
        let events = w.queue.events();
        let ids: Vec<&str> = events.iter().map(|e| e["messageId"].as_str().unwrap()).collect();
        let expected: Vec<&str> = case["messageIds"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        assert_eq!(ids, expected, "{file}: queued events in order");
        for env in w.queue.envelopes() {
            assert_eq!(env.source_id, "web", "{file}");
        }
        for e in &events {
            assert_eq!(e["receivedAt"], "2025-03-10T12:00:10.000Z", "{file}");
            assert!(e.get("writeKey").is_none(), "{file}: the write key must never be stored");
            assert!(e["type"].is_string() && e["timestamp"].is_string(), "{file}");
            // Segment's explicit context.ip wins over the caller's address.
            let expected_ip = if e["messageId"] == "fixture-track-1" { "24.5.68.47" } else { "198.51.100.23" };
            assert_eq!(e["context"]["ip"], expected_ip, "{file}");
            assert!(e["context"]["userAgent"].is_string(), "{file}");
        }
    }
}

#[tokio::test]
async fn clock_skew_is_corrected_and_batch_context_merged() {
    let w = world();
    let resp = w.ingest.handle(request(read_json("apigw/track.json"))).await;
    assert_eq!(resp.status_code, 200);
    let e = &w.queue.events()[0];
    // timestamp = receivedAt − (sentAt − originalTimestamp) = 12:00:10 − (11:59:59 − 11:59:58)
    assert_eq!(e["timestamp"], "2025-03-10T12:00:09.000Z");
    assert_eq!(e["originalTimestamp"], "2025-03-10T11:59:58.000Z");
    assert_eq!(e["sentAt"], "2025-03-10T11:59:59.000Z");
    assert_eq!(e["properties"]["revenue"], 14.99);
    assert_eq!(e["type"], "track");

    let w = world();
    w.ingest.handle(request(read_json("apigw/batch-gzip-form-content-type.json"))).await;
    let events = w.queue.events();
    assert_eq!(events.len(), 6);
    for e in &events {
        assert_eq!(e["context"]["device"]["type"], "phone", "batch context merged into {}", e["messageId"]);
        assert_eq!(e["integrations"]["All"], true);
        assert_eq!(e["context"]["userAgent"], "analytics-node/3.0.13");
    }
    // A numeric userId becomes a string; batch-level sentAt applies to each item.
    assert_eq!(events[3]["userId"], "42");
    assert_eq!(events[0]["sentAt"], "2025-03-10T11:59:59.000Z");
    assert!(events[0].get("anonymousId").is_none(), "null anonymousId is dropped");
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// Builds the body a corpus case describes.
fn generate(spec: &Value) -> Vec<u8> {
    let n = |k: &str| spec[k].as_u64().unwrap() as usize;
    match spec["kind"].as_str().unwrap() {
        "gzip_zeros" => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            let chunk = vec![0u8; 1 << 20];
            for _ in 0..n("bytes") >> 20 {
                enc.write_all(&chunk).unwrap();
            }
            enc.finish().unwrap()
        }
        "gzip_batch_padded" => gzip(&padded_batch(n("bytes"))),
        "truncated_gzip" => {
            let full = gzip(br#"{"batch":[{"type":"track","userId":"u1","event":"E"}]}"#);
            full[..full.len() / 2].to_vec()
        }
        "deep_array" => {
            let d = n("depth");
            let mut s = String::from(r#"{"userId":"u1","event":"E","properties":{"x":"#);
            s.push_str(&"[".repeat(d));
            s.push_str(&"]".repeat(d));
            s.push_str("}}");
            s.into_bytes()
        }
        "long_string" => {
            json!({"userId": "u1", "event": "E", "properties": {"s": "a".repeat(n("bytes"))}}).to_string().into_bytes()
        }
        "big_batch" => {
            let items: Vec<Value> =
                (0..n("events")).map(|i| json!({"type": "track", "userId": i, "event": "E"})).collect();
            json!({ "batch": items }).to_string().into_bytes()
        }
        "padded_batch" => padded_batch(n("bytes")),
        "wide_event" => {
            let props: serde_json::Map<String, Value> =
                (0..n("bytes") / 100).map(|i| (format!("p{i}"), Value::String("v".repeat(90)))).collect();
            json!({"userId": "u1", "event": "E", "properties": props}).to_string().into_bytes()
        }
        other => panic!("unknown generator {other}"),
    }
}

/// A valid batch of small events whose JSON is at least `bytes` long.
fn padded_batch(bytes: usize) -> Vec<u8> {
    let item = json!({"type": "track", "userId": "u1", "event": "E", "properties": {"pad": "x".repeat(1000)}});
    let per = item.to_string().len() + 1;
    let items: Vec<Value> = (0..bytes / per + 1).map(|_| item.clone()).collect();
    json!({ "batch": items }).to_string().into_bytes()
}

#[tokio::test]
async fn hostile_corpus_gets_documented_status_and_code_and_queues_nothing_rejected() {
    let corpus = read_json("hostile/corpus.json");
    let cases = corpus["cases"].as_array().unwrap();
    assert!(cases.len() >= 25, "the corpus must hold at least 25 requests");
    let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{WRITE_KEY}:")));
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let mut headers = serde_json::Map::new();
        headers.insert("content-type".into(), json!("application/json"));
        if case["auth"] != "none" {
            headers.insert("authorization".into(), json!(basic));
        }
        if let Some(h) = case["headers"].as_object() {
            headers.extend(h.clone());
        }
        let (body, b64) = if case["noBody"] == true {
            (Value::Null, false)
        } else if let Some(spec) = case.get("generate") {
            let bytes = generate(spec);
            let binary = case["headers"]["content-encoding"].is_string() || std::str::from_utf8(&bytes).is_err();
            if binary {
                (json!(base64::engine::general_purpose::STANDARD.encode(&bytes)), true)
            } else {
                (json!(String::from_utf8(bytes).unwrap()), false)
            }
        } else if let Some(b) = case["bodyBase64"].as_str() {
            (json!(b), true)
        } else {
            let b = case["body"].as_str().unwrap();
            if case["headers"]["content-encoding"].is_string() {
                (json!(base64::engine::general_purpose::STANDARD.encode(b)), true)
            } else {
                (json!(b), case["isBase64Encoded"] == true)
            }
        };
        let method = case["method"].as_str().unwrap_or("POST");
        let path = case["path"].as_str().unwrap();
        let event = json!({
            "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": "",
            "headers": headers,
            "requestContext": {"http": {"method": method, "path": path, "sourceIp": "198.51.100.7", "userAgent": "corpus"},
                               "requestId": "r", "routeKey": "$default", "stage": "$default", "timeEpoch": 0},
            "body": body, "isBase64Encoded": b64,
        });
        let w = world();
        let resp = w.ingest.handle(request(event)).await;
        let out = body_json(&resp);
        assert_eq!(resp.status_code, case["status"].as_i64().unwrap(), "{name}: {out}");
        let queued = w.queue.events();
        if resp.status_code == 200 {
            assert_eq!(out["accepted"], case["accepted"], "{name}");
            let codes: Vec<&str> =
                out["rejected"].as_array().unwrap().iter().map(|r| r["code"].as_str().unwrap()).collect();
            let expected: Vec<&str> =
                case["rejectedCodes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
            assert_eq!(codes, expected, "{name}");
            assert_eq!(queued.len() as u64, case["accepted"].as_u64().unwrap(), "{name}: only accepted events queued");
        } else {
            assert_eq!(out["code"], case["code"], "{name}: {out}");
            assert!(out["message"].as_str().is_some_and(|m| !m.is_empty()), "{name}: message");
            assert!(queued.is_empty(), "{name}: nothing may be queued for a refused request");
        }
    }
}

#[tokio::test]
async fn transient_queue_failures_are_retried_and_a_dead_queue_gives_503() {
    let w = world_with(Behaviour::FailFirst(2), workspace());
    let resp = w.ingest.handle(request(read_json("apigw/batch-basic.json"))).await;
    assert_eq!(resp.status_code, 200, "{:?}", resp.body);
    assert_eq!(w.queue.events().len(), 6);
    assert_eq!(w.queue.calls.lock().unwrap().len(), 3);

    let w = world_with(Behaviour::Down, workspace());
    let resp = w.ingest.handle(request(read_json("apigw/batch-basic.json"))).await;
    assert_eq!(resp.status_code, 503);
    assert_eq!(body_json(&resp)["code"], "queue_unavailable");
    assert_eq!(w.queue.calls.lock().unwrap().len(), 4, "default settings try four times");
}

#[tokio::test]
async fn large_batches_are_packed_into_bounded_messages_at_most_ten_per_call() {
    let items: Vec<Value> = (0..2_500)
        .map(|i| {
            json!({"type": "track", "userId": format!("user-{i}"), "event": "Viewed", "messageId": format!("m-{i}"),
                        "properties": {"pad": "y".repeat(60)}})
        })
        .collect();
    let body = json!({ "batch": items }).to_string();
    assert!(body.len() < 500 * 1024);
    let mut ev = read_json("apigw/batch-basic.json");
    ev["body"] = json!(body);
    let w = world();
    let resp = w.ingest.handle(request(ev)).await;
    assert_eq!(resp.status_code, 200, "{:?}", resp.body);
    let events = w.queue.events();
    assert_eq!(events.len(), 2_500);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["messageId"], format!("m-{i}"), "order kept");
    }
    let calls = w.queue.calls.lock().unwrap().clone();
    assert!(calls.iter().all(|&n| n <= 10), "{calls:?}");
    assert!(w.queue.envelopes().len() > 1, "more than one message for ~450 KB of events");
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let mut ws = workspace();
    ws.sources[0].rate_limit = Some(tributary_core::config::RateLimit { requests_per_second: 0.5, burst: 2 });
    let w = world_with(Behaviour::Accept, ws);
    let statuses: Vec<i64> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(w.ingest.handle(request(read_json("apigw/track.json"))).await.status_code);
        }
        v
    };
    assert_eq!(statuses, vec![200, 200, 429]);
    let resp = w.ingest.handle(request(read_json("apigw/track.json"))).await;
    assert_eq!(resp.status_code, 429);
    assert_eq!(body_json(&resp)["code"], "rate_limited");
    let retry: u64 = resp.headers.get("retry-after").unwrap().to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "retry-after {retry}");
    assert!(resp.headers.contains_key("x-ratelimit-reset"));
    assert_eq!(w.queue.events().len(), 2);
}

#[tokio::test]
async fn disabled_source_answers_404_and_per_source_limits_apply() {
    let mut ws = workspace();
    ws.sources[0].enabled = false;
    let w = world_with(Behaviour::Accept, ws);
    let resp = w.ingest.handle(request(read_json("apigw/track.json"))).await;
    assert_eq!((resp.status_code, body_json(&resp)["code"].clone()), (404, json!("source_disabled")));

    let mut ws = workspace();
    ws.sources[0].limits.max_batch_events = 5;
    let w = world_with(Behaviour::Accept, ws);
    let resp = w.ingest.handle(request(read_json("apigw/batch-body-write-key.json"))).await;
    assert_eq!((resp.status_code, body_json(&resp)["code"].clone()), (400, json!("batch_too_large")));
}

#[tokio::test]
async fn metrics_are_emf_lines_without_pii() {
    let w = world();
    w.ingest.handle(request(read_json("apigw/batch-partial.json"))).await;
    w.ingest.handle(request(read_json("apigw/unknown-write-key.json"))).await;
    let lines = w.metrics.0.lock().unwrap().clone();
    assert_eq!(lines.len(), 2);
    let ok: Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(ok["EventsAccepted"], 4);
    assert_eq!(ok["EventsRejected"], 3);
    assert_eq!(ok["EventsRejected.missing_event"], 1);
    assert_eq!(ok["EventsRejected.missing_id"], 1);
    assert_eq!(ok["EventsRejected.unknown_type"], 1);
    assert_eq!(ok["SourceId"], "web");
    assert_eq!(ok["Route"], "batch");
    let refused: Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(refused["RequestsRefused.invalid_write_key"], 1);
    for l in &lines {
        assert!(!l.contains("jake@example.com") && !l.contains("019mr8mf4r") && !l.contains(WRITE_KEY), "PII in {l}");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Governance: tracking plans and PII policies of `events/governance/workspace.yaml`.
// ---------------------------------------------------------------------------------------------------------------

/// In-memory object store for quarantined events; `down` makes every put fail as S3 would when unreachable.
#[derive(Clone, Default)]
struct MemoryStore {
    objects: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
    puts: Arc<Mutex<usize>>,
    down: Arc<AtomicBool>,
}

impl MemoryStore {
    fn records(&self) -> BTreeMap<String, Value> {
        let objects = self.objects.lock().unwrap();
        objects.iter().map(|(k, v)| (k.clone(), serde_json::from_slice(v).expect("record is JSON"))).collect()
    }
}

impl ObjectStore for MemoryStore {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), PortError> {
        validate_object_key(key)?;
        *self.puts.lock().unwrap() += 1;
        if self.down.load(Ordering::SeqCst) {
            return Err(PortError::Unavailable("store down".into()));
        }
        self.objects.lock().unwrap().insert(key.to_string(), bytes);
        Ok(())
    }
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, PortError> {
        Ok(self.objects.lock().unwrap().get(key).cloned())
    }
    async fn get_range(&self, key: &str, start: u64, end: Option<u64>) -> Result<Option<Vec<u8>>, PortError> {
        Ok(self.objects.lock().unwrap().get(key).map(|b| {
            let end = end.map_or(b.len(), |e| (e as usize).min(b.len()));
            b.get(start as usize..end).unwrap_or_default().to_vec()
        }))
    }
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, PortError> {
        let objects = self.objects.lock().unwrap();
        Ok(objects.get(key).map(|b| ObjectMeta { key: key.to_string(), size: b.len() as u64 }))
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, PortError> {
        let objects = self.objects.lock().unwrap();
        Ok(objects
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, b)| ObjectMeta { key: k.clone(), size: b.len() as u64 })
            .collect())
    }
    async fn delete(&self, key: &str) -> Result<(), PortError> {
        self.objects.lock().unwrap().remove(key);
        Ok(())
    }
}

fn governed_workspace() -> WorkspaceConfig {
    let text = std::fs::read_to_string(events_dir().join("governance/workspace.yaml")).expect("workspace.yaml");
    tributary_core::config::load(&text).expect("governance fixture workspace is valid")
}

/// In-memory stand-in for the profile table, as far as the governance counters go: `add` only (the handler never
/// reads, puts or deletes). Counts the adds; can be made to fail them.
#[derive(Clone, Default)]
struct StatsTable {
    items: Arc<Mutex<BTreeMap<ItemKey, Item>>>,
    adds: Arc<Mutex<usize>>,
    down: Arc<AtomicBool>,
}

impl StatsTable {
    fn adds(&self) -> usize {
        *self.adds.lock().unwrap()
    }

    /// Every counter item of `source`, by event name.
    fn by_name(&self, source: &str) -> BTreeMap<String, stats::Counts> {
        let pk = stats::partition(source);
        let items = self.items.lock().unwrap();
        items
            .values()
            .filter(|i| i.key.pk == pk)
            .map(|i| (i.attrs["name"].as_str().unwrap().to_string(), stats::Counts::from_attrs(&i.attrs)))
            .collect()
    }
}

impl TableStore for StatsTable {
    async fn get(&self, key: &ItemKey) -> Result<Option<Item>, PortError> {
        Ok(self.items.lock().unwrap().get(key).cloned())
    }
    async fn get_many(&self, keys: &[ItemKey]) -> Result<Vec<Option<Item>>, PortError> {
        tributary_core::ports::check_get_many(keys)?;
        let items = self.items.lock().unwrap();
        Ok(keys.iter().map(|key| items.get(key).cloned()).collect())
    }
    async fn query(&self, _: &str, _: &str, _: Option<&str>, _: usize) -> Result<QueryPage, PortError> {
        panic!("ingest never queries the table")
    }
    async fn transact(&self, _: Vec<WriteOp>) -> Result<(), TransactError> {
        panic!("ingest never writes the table transactionally")
    }
    async fn write(&self, _: WriteOp) -> Result<(), PortError> {
        panic!("ingest never puts or deletes in the table")
    }
    async fn scan_index(
        &self,
        _: &tributary_core::ports::SparseIndex,
        _: u32,
        _: u32,
        _: Option<&str>,
        _: usize,
    ) -> Result<tributary_core::ports::KeyPage, PortError> {
        panic!("ingest never scans the table")
    }
    async fn add(
        &self,
        key: &ItemKey,
        deltas: &[(String, i64)],
        set: serde_json::Map<String, Value>,
        expires_at: Option<i64>,
    ) -> Result<(), PortError> {
        *self.adds.lock().unwrap() += 1;
        if self.down.load(Ordering::SeqCst) {
            return Err(PortError::Throttled("dynamodb UpdateItem: ThrottlingException (http 400)".into()));
        }
        let mut items = self.items.lock().unwrap();
        let item = items.entry(key.clone()).or_insert_with(|| Item {
            key: key.clone(),
            attrs: serde_json::Map::new(),
            version: 0,
            expires_at: None,
        });
        for (name, d) in deltas {
            let old = item.attrs.get(name).and_then(Value::as_i64).unwrap_or(0);
            item.attrs.insert(name.clone(), json!(old + d));
        }
        item.attrs.extend(set);
        item.expires_at = expires_at.or(item.expires_at);
        Ok(())
    }
}

struct GovWorld {
    ingest: Ingest<RecordingQueue, Arc<MemoryMetrics>, MemoryStore, StatsTable>,
    queue: RecordingQueue,
    metrics: Arc<MemoryMetrics>,
    store: MemoryStore,
    stats: StatsTable,
}

fn gov_world_with(workspace: WorkspaceConfig) -> GovWorld {
    gov_world_on(Behaviour::Accept, workspace)
}

fn gov_world_on(behaviour: Behaviour, workspace: WorkspaceConfig) -> GovWorld {
    let queue = RecordingQueue::new(behaviour);
    let metrics = Arc::new(MemoryMetrics::default());
    let store = MemoryStore::default();
    let stats = StatsTable::default();
    let settings = IngestSettings { send_backoff: Duration::from_millis(1), ..Default::default() };
    let ingest = Ingest::new(queue.clone(), metrics.clone(), Arc::new(workspace), settings)
        .with_clock(|| NOW)
        .with_quarantine(store.clone())
        .with_stats(stats.clone());
    GovWorld { ingest, queue, metrics, store, stats }
}

fn gov_world() -> GovWorld {
    gov_world_with(governed_workspace())
}

/// A request on `route` for the source whose write key is `write_key`, built from the batch fixture.
fn request_for(write_key: &str, route: &str, body: Value) -> ApiGatewayV2httpRequest {
    let mut ev = read_json("apigw/batch-basic.json");
    let auth = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{write_key}:")));
    ev["headers"]["authorization"] = json!(auth);
    ev["rawPath"] = json!(format!("/v1/{route}"));
    ev["requestContext"]["http"]["path"] = json!(format!("/v1/{route}"));
    ev["body"] = json!(body.to_string());
    request(ev)
}

fn last_metrics(m: &MemoryMetrics) -> Value {
    let lines = m.0.lock().unwrap();
    serde_json::from_str(lines.last().expect("a metrics line")).unwrap()
}

fn order(id: &str, properties: Value) -> Value {
    json!({"type": "track", "userId": "u1", "event": "Order Completed", "messageId": id, "properties": properties})
}

#[tokio::test]
async fn quarantine_policy_holds_unplanned_and_invalid_events_and_queues_planned_ones() {
    let w = gov_world();
    let body = json!({"batch": [
        order("m-planned", json!({"total": 10, "currency": "EUR"})),
        {"type": "track", "userId": "u1", "event": "Secret Thing", "messageId": "m-unplanned",
         "properties": {"note": "free text"}},
        order("m-invalid", json!({"total": "ten"})),
    ]});
    let resp = w.ingest.handle(request_for("quarantine-write-key", "batch", body)).await;
    let out = body_json(&resp);
    assert_eq!(resp.status_code, 200, "{out}");
    assert_eq!(
        (out["accepted"].clone(), out["quarantined"].clone(), out["dropped"].clone()),
        (json!(1), json!(2), json!(0))
    );

    let queued = w.queue.events();
    assert_eq!(queued.len(), 1, "only the planned event is queued");
    assert_eq!(queued[0]["messageId"], "m-planned");

    let records = w.store.records();
    assert_eq!(records.len(), 2, "{records:?}");
    let key = tributary_core::governance::quarantine::key_for("quarantine", NOW, "m-unplanned");
    assert_eq!(key, format!("quarantine/quarantine/2025-03-10/{}.json", message_hash("quarantine", "m-unplanned")));
    let r = &records[&key];
    assert_eq!(r["v"], 1);
    assert_eq!(r["sourceId"], "quarantine");
    assert_eq!(r["messageId"], "m-unplanned");
    assert_eq!(r["receivedAt"], "2025-03-10T12:00:10.000Z");
    assert_eq!(r["planVersion"], "2025-03-01");
    assert_eq!(r["violations"], json!([{"kind": "unplanned_event", "path": "/event"}]));
    assert_eq!(r["event"]["event"], "Secret Thing");
    assert_eq!(r["event"]["properties"]["note"], "free text", "the held event is complete, for redrive");
    let record: QuarantineRecord = serde_json::from_value(r.clone()).expect("a QuarantineRecord");
    assert_eq!(record.violations[0].kind, ViolationKind::UnplannedEvent);

    let key = tributary_core::governance::quarantine::key_for("quarantine", NOW, "m-invalid");
    let kinds: Vec<&Value> = records[&key]["violations"].as_array().unwrap().iter().map(|v| &v["kind"]).collect();
    assert!(kinds.contains(&&json!("wrong_type")), "{kinds:?}");
    for key in records.keys() {
        assert!(!key.contains("m-") && key.starts_with("quarantine/quarantine/2025-03-10/"), "{key}");
    }

    let m = last_metrics(&w.metrics);
    assert_eq!(m["EventsAccepted"], 1);
    assert_eq!(m["EventsQuarantined"], 2);
    assert_eq!(m["EventsDropped"], 0);
    assert_eq!(m["Violations.unplanned_event"], 1);
    assert!(m["Violations.wrong_type"].as_u64() >= Some(1), "{m}");
    assert_eq!(m["SourceId"], "quarantine");

    // A single unplanned event is held too: a 200 (the SDK must not retry it) that queues nothing.
    let w = gov_world();
    let one = json!({"userId": "u1", "event": "Secret Thing", "messageId": "m-one"});
    let resp = w.ingest.handle(request_for("quarantine-write-key", "track", one)).await;
    let out = body_json(&resp);
    assert_eq!((resp.status_code, out["accepted"].clone(), out["quarantined"].clone()), (200, json!(0), json!(1)));
    assert!(w.queue.events().is_empty());
    assert_eq!(w.store.records().len(), 1);
}

#[tokio::test]
async fn drop_properties_policy_removes_unplanned_and_invalid_properties() {
    let w = gov_world();
    let body = json!({"batch": [
        order("m-extra", json!({"total": 10, "coupon": "SPRING"})),
        order("m-wrong", json!({"total": 10, "currency": 3})),
        {"type": "track", "userId": "u1", "event": "Secret Thing", "messageId": "m-unplanned",
         "properties": {"a": 1, "b": 2}},
    ]});
    let resp = w.ingest.handle(request_for("drop-properties-write-key", "batch", body)).await;
    let out = body_json(&resp);
    assert_eq!(resp.status_code, 200, "{out}");
    assert_eq!(
        (out["accepted"].clone(), out["quarantined"].clone(), out["dropped"].clone()),
        (json!(3), json!(0), json!(0))
    );
    let queued = w.queue.events();
    let ids: Vec<&str> = queued.iter().map(|e| e["messageId"].as_str().unwrap()).collect();
    assert_eq!(ids, ["m-extra", "m-wrong", "m-unplanned"]);
    assert_eq!(queued[0]["properties"], json!({"total": 10}));
    assert_eq!(queued[1]["properties"], json!({"total": 10}));
    assert!(queued[2]["properties"].as_object().is_none_or(|p| p.is_empty()), "{}", queued[2]);
    assert!(w.store.records().is_empty(), "nothing is quarantined");
    let m = last_metrics(&w.metrics);
    assert_eq!(m["PropertiesDropped"], 4);
    assert_eq!(m["Violations.additional_property"], 1);
    assert_eq!(m["Violations.wrong_type"], 1);
    assert_eq!(m["Violations.unplanned_event"], 1);
    assert_eq!(m["EventsQuarantined"], 0);
}

#[tokio::test]
async fn pii_hash_leaves_no_raw_email_in_what_is_queued() {
    const EMAIL: &str = "Jake.Peterson@Example.com";
    let w = gov_world();
    let body = json!({"batch": [
        {"type": "track", "userId": "u1", "event": "Note Written", "messageId": "m-note",
         "properties": {"note": format!("please write to {EMAIL} today")}},
        {"type": "identify", "userId": "u1", "messageId": "m-identify", "traits": {"email": EMAIL, "plan": "pro"}},
    ]});
    let resp = w.ingest.handle(request_for("pii-hash-write-key", "batch", body)).await;
    let out = body_json(&resp);
    assert_eq!(resp.status_code, 200, "{out}");
    assert_eq!(out["accepted"], 2);
    let hashed = format!("sha256:{}", tributary_core::sha256_hex(EMAIL.to_lowercase().as_bytes()));
    let queued = w.queue.events();
    assert_eq!(queued[0]["properties"]["note"], format!("please write to {hashed} today"));
    assert_eq!(queued[1]["traits"]["email"], hashed);
    assert_eq!(queued[1]["traits"]["plan"], "pro");
    for body in w.queue.sent.lock().unwrap().iter() {
        let lower = body.to_lowercase();
        assert!(
            !lower.contains("jake.peterson@example.com") && !lower.contains("jake.peterson"),
            "raw email in {body}"
        );
    }
    let m = last_metrics(&w.metrics);
    assert_eq!(m["PiiFindings.email"], 2);
    for line in w.metrics.0.lock().unwrap().iter() {
        assert!(!line.to_lowercase().contains("jake.peterson"), "PII in {line}");
    }
}

#[tokio::test]
async fn pii_drop_event_drops_only_the_events_carrying_pii() {
    let w = gov_world();
    let body = json!({"batch": [
        {"type": "track", "userId": "u1", "event": "Clean", "messageId": "m-clean", "properties": {"n": 1}},
        {"type": "track", "userId": "u1", "event": "Dirty", "messageId": "m-dirty",
         "properties": {"note": "mail jake@example.com"}},
    ]});
    let resp = w.ingest.handle(request_for("pii-drop-write-key", "batch", body)).await;
    let out = body_json(&resp);
    assert_eq!(resp.status_code, 200, "{out}");
    assert_eq!(
        (out["accepted"].clone(), out["quarantined"].clone(), out["dropped"].clone()),
        (json!(1), json!(0), json!(1))
    );
    let queued = w.queue.events();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0]["messageId"], "m-clean");
    assert!(w.store.records().is_empty(), "a dropped event is not kept anywhere");
    let m = last_metrics(&w.metrics);
    assert_eq!(m["EventsDropped"], 1);
    assert_eq!(m["EventsDropped.pii"], 1);
    assert_eq!(m["PiiFindings.email"], 1);
}

#[tokio::test]
async fn quarantine_store_down_gives_503_and_queues_nothing_and_the_retry_succeeds() {
    let w = gov_world();
    w.store.down.store(true, Ordering::SeqCst);
    let body = json!({"batch": [
        order("m-planned", json!({"total": 10})),
        {"type": "track", "userId": "u1", "event": "Secret Thing", "messageId": "m-unplanned"},
    ]});
    let resp = w.ingest.handle(request_for("quarantine-write-key", "batch", body.clone())).await;
    let out = body_json(&resp);
    assert_eq!((resp.status_code, out["code"].clone()), (503, json!("quarantine_unavailable")), "{out}");
    assert!(w.queue.calls.lock().unwrap().is_empty(), "nothing of the request may be queued");
    assert_eq!(last_metrics(&w.metrics)["RequestsRefused.quarantine_unavailable"], 1);

    // The SDK retries: the same key is written, so a second success does not duplicate the held event.
    w.store.down.store(false, Ordering::SeqCst);
    for _ in 0..2 {
        let resp = w.ingest.handle(request_for("quarantine-write-key", "batch", body.clone())).await;
        assert_eq!(resp.status_code, 200);
    }
    assert_eq!(w.store.records().len(), 1);
    assert_eq!(w.queue.events().len(), 2, "the planned event, once per successful request");

    // A handler given no quarantine store refuses rather than losing the event.
    let queue = RecordingQueue::new(Behaviour::Accept);
    let ingest = Ingest::new(
        queue.clone(),
        Arc::new(MemoryMetrics::default()),
        Arc::new(governed_workspace()),
        Default::default(),
    );
    let resp = ingest.handle(request_for("quarantine-write-key", "batch", body)).await;
    assert_eq!((resp.status_code, body_json(&resp)["code"].clone()), (503, json!("quarantine_unavailable")));
    assert!(queue.events().is_empty());
}

#[tokio::test]
async fn a_plan_that_does_not_compile_refuses_only_its_source() {
    let mut ws = governed_workspace();
    let plan = ws.sources[0].tracking_plan.as_mut().unwrap();
    plan.events.insert("Broken".into(), json!({"type": 12}));
    let w = gov_world_with(ws);
    let resp = w.ingest.handle(request_for("quarantine-write-key", "track", order("m-1", json!({"total": 1})))).await;
    assert_eq!((resp.status_code, body_json(&resp)["code"].clone()), (503, json!("governance_unavailable")));
    assert!(w.queue.events().is_empty());
    let resp = w.ingest.handle(request_for("pii-hash-write-key", "track", order("m-2", json!({"total": 1})))).await;
    assert_eq!(resp.status_code, 200);
}

#[tokio::test]
async fn a_source_without_governance_reports_nothing_held() {
    let w = world();
    let resp = w.ingest.handle(request(read_json("apigw/batch-basic.json"))).await;
    let out = body_json(&resp);
    assert_eq!((out["quarantined"].clone(), out["dropped"].clone()), (json!(0), json!(0)));
    let m = last_metrics(&w.metrics);
    for name in ["EventsQuarantined", "EventsDropped", "PropertiesDropped"] {
        assert!(m.get(name).is_none(), "{name} is only reported for governed sources");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Governance counters (the stats table).
// ---------------------------------------------------------------------------------------------------------------

fn counts(accepted: u64, dropped_properties: u64, quarantined: u64, pii_actioned: u64, dropped: u64) -> stats::Counts {
    stats::Counts { accepted, dropped_properties, quarantined, pii_actioned, dropped, suppressed: 0 }
}

#[tokio::test]
async fn governed_requests_add_to_the_counters_of_each_event_name() {
    let w = gov_world();
    let body = json!({"batch": [
        order("m-planned", json!({"total": 10, "currency": "EUR"})),
        {"type": "track", "userId": "u1", "event": "Secret Thing", "messageId": "m-unplanned"},
        order("m-invalid", json!({"total": "ten"})),
    ]});
    let resp = w.ingest.handle(request_for("quarantine-write-key", "batch", body.clone())).await;
    assert_eq!(resp.status_code, 200, "{}", body_json(&resp));
    assert_eq!(w.stats.adds(), 2, "one add per distinct event name");
    let expected = BTreeMap::from([
        ("Order Completed".to_string(), counts(1, 0, 1, 0, 0)),
        ("Secret Thing".to_string(), counts(0, 0, 1, 0, 0)),
    ]);
    assert_eq!(w.stats.by_name("quarantine"), expected);
    // Keyed by the hour the request was received and the name's hash, expiring 400 days after that hour.
    let item = w.stats.items.lock().unwrap()[&stats::key("quarantine", NOW, "Secret Thing")].clone();
    assert!(item.key.sk.starts_with("2025-03-10T12#"), "{}", item.key.sk);
    assert!(!item.key.sk.contains("Secret"), "{}", item.key.sk);
    assert_eq!(item.expires_at, Some(datetime!(2025-03-10 12:00 UTC).unix_timestamp() + 400 * 86_400));
    assert_eq!(last_metrics(&w.metrics)["StatsWritesFailed"], 0);

    // A second request adds to the same hour's counters.
    let resp = w.ingest.handle(request_for("quarantine-write-key", "batch", body)).await;
    assert_eq!(resp.status_code, 200);
    assert_eq!(w.stats.by_name("quarantine")["Order Completed"], counts(2, 0, 2, 0, 0));

    // Properties dropped by the plan, PII hashed, events dropped for PII: each counted under its event name.
    let body = json!({"batch": [
        order("m-extra", json!({"total": 10, "coupon": "SPRING"})),
        order("m-clean", json!({"total": 10})),
        {"type": "track", "userId": "u1", "event": "Secret Thing", "messageId": "m-unplanned", "properties": {"a": 1}},
    ]});
    let resp = w.ingest.handle(request_for("drop-properties-write-key", "batch", body)).await;
    assert_eq!(resp.status_code, 200);
    let expected = BTreeMap::from([
        ("Order Completed".to_string(), counts(2, 1, 0, 0, 0)),
        ("Secret Thing".to_string(), counts(1, 1, 0, 0, 0)),
    ]);
    assert_eq!(w.stats.by_name("drop-properties"), expected);

    let body = json!({"batch": [
        {"type": "track", "userId": "u1", "event": "Note Written", "messageId": "m-note",
         "properties": {"note": "write to jake@example.com"}},
        {"type": "identify", "userId": "u1", "messageId": "m-identify", "traits": {"email": "jake@example.com"}},
        {"type": "page", "userId": "u1", "name": "Home", "messageId": "m-page"},
    ]});
    let resp = w.ingest.handle(request_for("pii-hash-write-key", "batch", body.clone())).await;
    assert_eq!(resp.status_code, 200);
    let expected = BTreeMap::from([
        ("(identify)".to_string(), counts(1, 0, 0, 1, 0)),
        ("(page)".to_string(), counts(1, 0, 0, 0, 0)),
        ("Note Written".to_string(), counts(1, 0, 0, 1, 0)),
    ]);
    assert_eq!(w.stats.by_name("pii-hash"), expected);
    let resp = w.ingest.handle(request_for("pii-drop-write-key", "batch", body)).await;
    assert_eq!(resp.status_code, 200);
    assert_eq!(w.stats.by_name("pii-drop")["Note Written"], counts(0, 0, 0, 1, 1));
    assert_eq!(w.stats.by_name("pii-drop")["(page)"], counts(1, 0, 0, 0, 0));

    // No event value reaches the table: only names and counts.
    for item in w.stats.items.lock().unwrap().values() {
        let text = serde_json::to_string(&item.attrs).unwrap();
        assert!(!text.contains("jake") && !text.contains("SPRING"), "{text}");
    }
}

#[tokio::test]
async fn ungoverned_sources_write_no_counters() {
    let queue = RecordingQueue::new(Behaviour::Accept);
    let stats = StatsTable::default();
    let ingest =
        Ingest::new(queue.clone(), Arc::new(MemoryMetrics::default()), Arc::new(workspace()), Default::default())
            .with_stats(stats.clone());
    let resp = ingest.handle(request(read_json("apigw/batch-basic.json"))).await;
    assert_eq!(resp.status_code, 200, "{}", body_json(&resp));
    assert!(!queue.events().is_empty());
    assert_eq!(stats.adds(), 0, "an ungoverned source must not pay a write per request");
}

#[tokio::test]
async fn a_failing_stats_table_never_fails_the_request() {
    let w = gov_world();
    w.stats.down.store(true, Ordering::SeqCst);
    let body = json!({"batch": [
        order("m-planned", json!({"total": 10})),
        {"type": "track", "userId": "u1", "event": "Secret Thing", "messageId": "m-unplanned"},
    ]});
    let resp = w.ingest.handle(request_for("quarantine-write-key", "batch", body)).await;
    let out = body_json(&resp);
    assert_eq!((resp.status_code, out["accepted"].clone(), out["quarantined"].clone()), (200, json!(1), json!(1)));
    assert_eq!(w.queue.events().len(), 1);
    assert_eq!(w.stats.adds(), 2, "both names were tried");
    assert_eq!(last_metrics(&w.metrics)["StatsWritesFailed"], 2);
}

#[tokio::test]
async fn counters_are_written_only_once_the_events_are_queued() {
    let w = gov_world_on(Behaviour::Down, governed_workspace());
    let resp = w.ingest.handle(request_for("pii-hash-write-key", "track", order("m-1", json!({"total": 1})))).await;
    assert_eq!((resp.status_code, body_json(&resp)["code"].clone()), (503, json!("queue_unavailable")));
    assert_eq!(w.stats.adds(), 0, "a refused request counts nothing");

    let w = gov_world();
    w.store.down.store(true, Ordering::SeqCst);
    let one = json!({"userId": "u1", "event": "Secret Thing", "messageId": "m-one"});
    let resp = w.ingest.handle(request_for("quarantine-write-key", "track", one)).await;
    assert_eq!(resp.status_code, 503);
    assert_eq!(w.stats.adds(), 0, "a refused request counts nothing");
}

// ---------------------------------------------------------------------------------------------------------------
// Suppression: events of erased subjects (identity items turned into tombstones) are dropped before anything else.
// ---------------------------------------------------------------------------------------------------------------

use tributary_core::dsr::suppression::Suppressions;
use tributary_core::identity::{IdType, Identifier};
use tributary_core::profile::layout::identity_key;
use tributary_core::testing::MemoryTable;

/// Writes the tombstone erasure leaves for `kind:raw` (normalized as stitch normalizes it).
fn erase(table: &MemoryTable, kind: IdType, raw: &str) {
    let id = Identifier::new(kind, raw, None).expect("a valid identifier");
    table.put(identity_key(&id), tributary_core::dsr::tombstone_attrs(&id.kind.to_string(), "req-erase-1", 1));
}

fn track(id: &str, user: &str, event: &str) -> Value {
    json!({"type": "track", "userId": user, "event": event, "messageId": id, "properties": {"total": 1}})
}

struct SupWorld {
    ingest: Ingest<RecordingQueue, Arc<MemoryMetrics>, MemoryStore, MemoryTable>,
    queue: RecordingQueue,
    metrics: Arc<MemoryMetrics>,
    store: MemoryStore,
    table: MemoryTable,
}

fn sup_world(workspace: WorkspaceConfig) -> SupWorld {
    let queue = RecordingQueue::new(Behaviour::Accept);
    let metrics = Arc::new(MemoryMetrics::default());
    let store = MemoryStore::default();
    let table = MemoryTable::default();
    let settings = IngestSettings { send_backoff: Duration::from_millis(1), ..Default::default() };
    let ingest = Ingest::new(queue.clone(), metrics.clone(), Arc::new(workspace), settings)
        .with_clock(|| NOW)
        .with_quarantine(store.clone())
        .with_stats(table.clone())
        .with_suppressions(table.clone());
    SupWorld { ingest, queue, metrics, store, table }
}

fn queued_ids(queue: &RecordingQueue) -> Vec<String> {
    queue.events().iter().map(|e| e["messageId"].as_str().unwrap_or_default().to_string()).collect()
}

#[tokio::test]
async fn events_of_erased_subjects_are_dropped_counted_and_answered_like_the_others() {
    let w = sup_world(workspace());
    erase(&w.table, IdType::UserId, "erased-user");
    // Erased as a hashed email (as a broker knows it): the raw email of an event is looked up hashed too.
    let hashed = Identifier::new(IdType::Email, "Gone@Example.com", None).expect("email").hashed();
    w.table.put(identity_key(&hashed), tributary_core::dsr::tombstone_attrs("email_sha256", "req-erase-2", 1));
    let body = json!({"batch": [
        track("m-erased", "erased-user", "Order Completed"),
        track("m-kept", "kept-user", "Order Completed"),
        {"type": "identify", "userId": "other", "messageId": "m-email", "traits": {"email": "gone@example.com"}},
        {"type": "page", "anonymousId": "anon-1", "name": "Docs", "messageId": "m-anon",
         "context": {"traits": {"email": "GONE@example.com"}}},
        {"type": "track", "anonymousId": "anon-2", "event": "Viewed", "messageId": "m-anon-kept"},
    ]});
    let resp = w.ingest.handle(request_for(WRITE_KEY, "batch", body)).await;
    let out = body_json(&resp);
    assert_eq!(resp.status_code, 200, "{out}");
    // The answer is the one any accepted event gets: it does not say who was erased.
    assert_eq!(out["accepted"], 5, "{out}");
    assert_eq!((out["quarantined"].clone(), out["dropped"].clone()), (json!(0), json!(0)));
    assert!(!out.to_string().contains("suppress"), "{out}");
    assert_eq!(queued_ids(&w.queue), ["m-kept", "m-anon-kept"]);
    let m = last_metrics(&w.metrics);
    assert_eq!((m["EventsAccepted"].clone(), m["EventsSuppressed"].clone()), (json!(2), json!(3)));
    // An ungoverned source writes no counters, suppressed events or not.
    assert!(w.table.items().iter().all(|i| !i.key.pk.starts_with("stats#")));

    // A single-event route answers 200 as well, and queues nothing.
    let resp = w.ingest.handle(request_for(WRITE_KEY, "track", track("m-one", "erased-user", "Order Completed"))).await;
    assert_eq!((resp.status_code, body_json(&resp)["accepted"].clone()), (200, json!(1)));
    assert_eq!(w.queue.events().len(), 2, "nothing more was queued");
    assert_eq!(last_metrics(&w.metrics)["EventsSuppressed"], 1);
    // No identifier reaches the metrics.
    for line in w.metrics.0.lock().unwrap().iter() {
        assert!(!line.contains("erased-user") && !line.contains("gone@"), "{line}");
    }
}

#[tokio::test]
async fn a_governed_source_counts_suppressed_events_and_never_quarantines_them() {
    let w = sup_world(governed_workspace());
    erase(&w.table, IdType::UserId, "erased-user");
    let body = json!({"batch": [
        // Unplanned: it would be quarantined (and stored with its content) were it not suppressed.
        {"type": "track", "userId": "erased-user", "event": "Secret Thing", "messageId": "m-secret"},
        track("m-erased", "erased-user", "Order Completed"),
        track("m-kept", "u1", "Order Completed"),
    ]});
    let resp = w.ingest.handle(request_for("quarantine-write-key", "batch", body)).await;
    let out = body_json(&resp);
    assert_eq!(resp.status_code, 200, "{out}");
    assert_eq!((out["accepted"].clone(), out["quarantined"].clone()), (json!(3), json!(0)), "{out}");
    assert!(w.store.records().is_empty(), "nothing of an erased subject is quarantined");
    assert_eq!(queued_ids(&w.queue), ["m-kept"]);
    let by_name = |name: &str| {
        let key = stats::key("quarantine", NOW, name);
        let item = w.table.items().into_iter().find(|i| i.key == key).expect("a counter item");
        stats::Counts::from_attrs(&item.attrs)
    };
    assert_eq!(by_name("Secret Thing"), stats::Counts { suppressed: 1, ..Default::default() });
    assert_eq!(by_name("Order Completed"), stats::Counts { accepted: 1, suppressed: 1, ..Default::default() });
    // As a report sums them (the items themselves: the fixed 2025 hour is past its TTL by the wall clock).
    let window = stats::Window::parse(Some("2025-03-10T00:00:00Z"), Some("2025-03-11T00:00:00Z"), NOW).expect("window");
    let (_, totals) = stats::aggregate(&w.table.items(), &window);
    assert_eq!(totals, stats::Counts { accepted: 1, suppressed: 2, ..Default::default() });
    assert_eq!(last_metrics(&w.metrics)["EventsSuppressed"], 2);
}

#[tokio::test]
async fn an_erasure_newer_than_the_cached_list_still_keeps_the_person_out_of_quarantine() {
    let w = sup_world(governed_workspace());
    // The list is loaded (empty) by a first request, then the erasure happens within the cache's minute.
    let first = json!({"batch": [track("m-0", "u1", "Order Completed")]});
    assert_eq!(w.ingest.handle(request_for("quarantine-write-key", "batch", first)).await.status_code, 200);
    erase(&w.table, IdType::UserId, "erased-user");
    let body = json!({"batch": [
        // Unplanned, so held for quarantine: checked against the identity items themselves, not the stale list.
        {"type": "track", "userId": "erased-user", "event": "Secret Thing", "messageId": "m-secret"},
        {"type": "track", "userId": "u2", "event": "Other Thing", "messageId": "m-other"},
        // Planned: the stale list lets it through to the queue, where stitch drops it.
        track("m-erased", "erased-user", "Order Completed"),
    ]});
    let resp = w.ingest.handle(request_for("quarantine-write-key", "batch", body)).await;
    assert_eq!(resp.status_code, 200, "{}", body_json(&resp));
    let held: Vec<String> =
        w.store.records().values().map(|r| r["event"]["messageId"].as_str().unwrap_or_default().to_string()).collect();
    assert_eq!(held, ["m-other"], "only the other person's unplanned event is quarantined");
    assert_eq!(queued_ids(&w.queue), ["m-0", "m-erased"]);
    assert_eq!(last_metrics(&w.metrics)["EventsSuppressed"], 1);
}

#[tokio::test]
async fn suppression_is_lazy_cached_and_fails_open_to_stitch() {
    let queue = RecordingQueue::new(Behaviour::Accept);
    let table = MemoryTable::default();
    let down = PortError::Unavailable("dynamodb Scan: unavailable".into());
    // The table is down from the start: building the handler reads nothing, so it cannot fail.
    table.fail_with(Some(down));
    let now = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let clock = now.clone();
    let cache = Suppressions::new(table.clone()).with_clock(move || clock.load(Ordering::SeqCst));
    let ingest =
        Ingest::new(queue.clone(), Arc::new(MemoryMetrics::default()), Arc::new(workspace()), Default::default())
            .with_stats(table.clone())
            .with_suppression_cache(cache);
    erase(&table, IdType::UserId, "erased-user");
    // No list could be loaded: the events go on to stitch (which drops them), the request does not fail.
    let body = json!({"batch": [track("m-1", "erased-user", "A"), track("m-2", "u2", "A")]});
    let resp = ingest.handle(request_for(WRITE_KEY, "batch", body.clone())).await;
    assert_eq!(resp.status_code, 200, "{}", body_json(&resp));
    assert_eq!(queued_ids(&queue), ["m-1", "m-2"]);

    // The table answers again: after the retry wait, the list is loaded and applied.
    table.fail_with(None);
    now.fetch_add(5_000, Ordering::SeqCst);
    let resp = ingest.handle(request_for(WRITE_KEY, "batch", body.clone())).await;
    assert_eq!(resp.status_code, 200);
    assert_eq!(queued_ids(&queue), ["m-1", "m-2", "m-2"]);

    // Down again: the last list stays in use after the refresh interval.
    table.fail_with(Some(PortError::Throttled("slow".into())));
    now.fetch_add(120_000, Ordering::SeqCst);
    let resp = ingest.handle(request_for(WRITE_KEY, "batch", body)).await;
    assert_eq!(resp.status_code, 200);
    assert_eq!(queued_ids(&queue), ["m-1", "m-2", "m-2", "m-2"]);
}

#[tokio::test]
async fn without_a_suppression_list_nothing_is_looked_up() {
    // StatsTable panics on any scan: a handler without `with_suppressions` never reads the index.
    let w = gov_world();
    let resp = w.ingest.handle(request_for("quarantine-write-key", "track", order("m-1", json!({"total": 1})))).await;
    assert_eq!(resp.status_code, 200);
    assert_eq!(last_metrics(&w.metrics)["EventsSuppressed"], 0);
}
