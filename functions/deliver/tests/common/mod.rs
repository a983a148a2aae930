//! Helpers for the deliver function's integration tests: a scripted local HTTP destination that records every
//! request, workspace and destination builders, events and envelopes, and a harness that wires the real
//! [`Deliver`] handler to embedded adapters (SQLite queues, an in-memory table, a directory as export bucket).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use aws_lambda_events::sqs::SqsBatchResponse;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use hmac::{Hmac, Mac};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use tempfile::TempDir;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tributary_core::config::{DataPartyClass, WorkspaceConfig};
use tributary_core::delivery::{
    receipt_key, DeliveryEnvelope, DeliverySettings, DestinationConfig, DestinationKind, DlqMessage, Handoff, Receipt,
    Transport,
};
use tributary_core::metrics::MemoryMetrics;
use tributary_core::ports::{ObjectStore, OutgoingMessage, Queue, ReceivedMessage, TableStore};
use tributary_core::testing::MemoryTable;
use tributary_deliver::export::ExportSender;
use tributary_deliver::http::HttpSender;
use tributary_deliver::{resolve_destinations, Deliver, DeliverSettings, Senders};
use tributary_local::dir_store::DirStore;
use tributary_local::runtime::{run_trigger, sqs_event, SqsHandler, TriggerSettings};
use tributary_local::sqlite_queue::{QueueOptions, SqliteQueue};

pub const SOURCE: &str = "web";
pub const EXPORT_BUCKET: &str = "exports";
pub const DELIVERY_QUEUE: &str = "delivery";
pub const DELIVERY_DLQ: &str = "delivery-dlq";
pub const META_ACCOUNT: &str = "1234567890";
pub const GOOGLE_ACCOUNT: &str = "9876543210";

// ---------------------------------------------------------------------------------------------------------------
// The scripted destination
// ---------------------------------------------------------------------------------------------------------------

/// One request as the destination received it.
#[derive(Debug, Clone)]
pub struct Hit {
    pub at: Instant,
    /// Path without the query.
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// What the script answered.
    pub status: u16,
}

impl Hit {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn idempotency_key(&self) -> &str {
        self.header("idempotency-key").unwrap_or("")
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The destination id a request was addressed to: every URL the builders below make is `/d/<id>…`.
    pub fn destination(&self) -> &str {
        self.path.strip_prefix("/d/").and_then(|rest| rest.split('/').next()).unwrap_or("")
    }

    /// The messageIds a request carried, whatever the destination kind: a webhook's event (or `batch`), Meta's
    /// `data[].event_id`, Google's `conversions[].orderId` (events without `order_id` use their messageId).
    pub fn message_ids(&self) -> Vec<String> {
        let body = self.json();
        let ids = |items: &Value, key: &str| -> Vec<String> {
            items
                .as_array()
                .map(|a| a.iter().filter_map(|e| e[key].as_str().map(str::to_string)).collect())
                .unwrap_or_default()
        };
        if body.get("data").is_some() {
            ids(&body["data"], "event_id")
        } else if body.get("conversions").is_some() {
            ids(&body["conversions"], "orderId")
        } else if body.get("batch").is_some() {
            ids(&body["batch"], "messageId")
        } else {
            body["messageId"].as_str().map(|s| vec![s.to_string()]).unwrap_or_default()
        }
    }
}

/// What the destination answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply { status, headers: Vec::new(), body: "{}".into() }
    }

    pub fn ok() -> Reply {
        Reply::status(200)
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// A request as the script sees it, with how many earlier requests carried the same path and idempotency key.
pub struct Incoming<'a> {
    pub hit: &'a Hit,
    pub previous: usize,
}

pub type Script = Arc<dyn Fn(&Incoming<'_>) -> Reply + Send + Sync>;

struct ServerState {
    hits: Mutex<Vec<Hit>>,
    script: Mutex<Script>,
}

/// A local HTTP destination (axum on 127.0.0.1:0) that records every request and answers by a script.
pub struct Server {
    pub base: String,
    state: Arc<ServerState>,
    task: JoinHandle<()>,
}

impl Server {
    /// A server that accepts everything.
    pub async fn accepting() -> Server {
        Server::start(|_| Reply::ok()).await
    }

    pub async fn start(script: impl Fn(&Incoming<'_>) -> Reply + Send + Sync + 'static) -> Server {
        let state = Arc::new(ServerState { hits: Mutex::new(Vec::new()), script: Mutex::new(Arc::new(script)) });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the test destination");
        let addr = listener.local_addr().expect("local addr");
        let app = axum::Router::new().fallback(record).with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Server { base: format!("http://{addr}"), state, task }
    }

    /// Replaces the script (say, once the endpoint is "fixed").
    pub fn script(&self, script: impl Fn(&Incoming<'_>) -> Reply + Send + Sync + 'static) {
        *self.state.script.lock().unwrap_or_else(PoisonError::into_inner) = Arc::new(script);
    }

    /// The URL of destination `id` on this server.
    pub fn url(&self, id: &str) -> String {
        format!("{}/d/{id}", self.base)
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.state.hits.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub fn hits_for(&self, destination: &str) -> Vec<Hit> {
        self.hits().into_iter().filter(|h| h.destination() == destination).collect()
    }

    /// messageId → how many accepted requests carried it, for one destination.
    pub fn accepted(&self, destination: &str) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for hit in self.hits_for(destination).iter().filter(|h| h.ok()) {
            for id in hit.message_ids() {
                *out.entry(id).or_default() += 1;
            }
        }
        out
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn record(State(state): State<Arc<ServerState>>, request: Request) -> Response {
    let at = Instant::now();
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 16 << 20).await.map(|b| b.to_vec()).unwrap_or_default();
    let mut hit = Hit {
        at,
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers: parts.headers,
        body,
        status: 0,
    };
    let script = state.script.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let reply = {
        let mut hits = state.hits.lock().unwrap_or_else(PoisonError::into_inner);
        let previous =
            hits.iter().filter(|h| h.path == hit.path && h.idempotency_key() == hit.idempotency_key()).count();
        let reply = script(&Incoming { hit: &hit, previous });
        hit.status = reply.status;
        hits.push(hit);
        reply
    };
    let mut response = Response::new(Body::from(reply.body));
    *response.status_mut() = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in reply.headers {
        if let (Ok(n), Ok(v)) = (name.parse::<axum::http::HeaderName>(), value.parse()) {
            response.headers_mut().insert(n, v);
        }
    }
    response
}

/// Checks `X-Tributary-Signature: t=<ts>,v1=<hex>` as a receiver would: HMAC-SHA256 with `secret` over
/// `"<ts>." + body`, and a timestamp within five minutes of now.
pub fn verify_signature(hit: &Hit, secret: &str) -> Result<(), String> {
    let header = hit.header("x-tributary-signature").ok_or("no X-Tributary-Signature header")?;
    let (t, v1) = header.split_once(',').ok_or_else(|| format!("malformed signature {header:?}"))?;
    let ts = t.strip_prefix("t=").ok_or_else(|| format!("no t= in {header:?}"))?;
    let v1 = v1.strip_prefix("v1=").ok_or_else(|| format!("no v1= in {header:?}"))?;
    let ts_num: i64 = ts.parse().map_err(|_| format!("timestamp {ts:?} is not a number"))?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if (now - ts_num).abs() > 300 {
        return Err(format!("timestamp {ts_num} is too far from now ({now})"));
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).map_err(|e| e.to_string())?;
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(&hit.body);
    let given = hex::decode(v1).map_err(|_| format!("v1 is not hex: {v1:?}"))?;
    mac.verify_slice(&given).map_err(|_| "signature does not match the body".to_string())
}

pub fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

// ---------------------------------------------------------------------------------------------------------------
// Workspace and destinations
// ---------------------------------------------------------------------------------------------------------------

/// Delivery settings for tests: the local server allow-listed, small backoffs.
pub fn delivery_settings() -> DeliverySettings {
    DeliverySettings {
        allow_private_hosts: vec!["127.0.0.1".into()],
        max_attempts: 4,
        backoff_base_ms: 200,
        backoff_max_ms: 2_000,
        ..Default::default()
    }
}

/// A workspace with the purposes `advertising` (alias `Advertising`, `C0004`) and `analytics` (alias
/// `Analytics`), the given destinations and delivery settings. Built from JSON, as a workspace file would be.
pub fn workspace(destinations: &[DestinationConfig], delivery: DeliverySettings) -> WorkspaceConfig {
    serde_json::from_value(json!({
        "workspace": "deliver-tests",
        "consent": {
            "purposes": [
                { "id": "advertising", "aliases": ["Advertising", "C0004"] },
                { "id": "analytics", "aliases": ["Analytics"] },
            ]
        },
        "destinations": destinations,
        "delivery": delivery,
    }))
    .expect("a valid workspace")
}

fn destination(id: &str, kind: DestinationKind, purposes: &[&str], transport: Transport) -> DestinationConfig {
    DestinationConfig {
        id: id.into(),
        kind,
        purposes: purposes.iter().map(|p| p.to_string()).collect(),
        essential: false,
        event_types: None,
        event_names: None,
        sources: None,
        allowed_classes: None,
        drop_fields: Vec::new(),
        hashing: None,
        transport,
    }
}

/// A webhook at `server.url(id)`.
pub fn webhook(id: &str, server: &Server, purposes: &[&str]) -> DestinationConfig {
    let t = Transport { url: Some(server.url(id)), ..Default::default() };
    destination(id, DestinationKind::Webhook, purposes, t)
}

/// Meta CAPI with its base URL at `server.url(id)` (requests go to `/d/<id>/<pixel>/events`).
pub fn meta(id: &str, server: &Server, purposes: &[&str]) -> DestinationConfig {
    let t = Transport {
        url: Some(server.url(id)),
        account: Some(META_ACCOUNT.into()),
        secret: Some("meta-access-token".into()),
        ..Default::default()
    };
    destination(id, DestinationKind::MetaCapi, purposes, t)
}

/// Google Ads with its base URL at `server.url(id)`.
pub fn google(id: &str, server: &Server, purposes: &[&str]) -> DestinationConfig {
    let t = Transport {
        url: Some(server.url(id)),
        account: Some(GOOGLE_ACCOUNT.into()),
        secret: Some("google-oauth-token".into()),
        conversion_action: Some(format!("customers/{GOOGLE_ACCOUNT}/conversionActions/7")),
        developer_token: Some("google-dev-token".into()),
        ..Default::default()
    };
    destination(id, DestinationKind::GoogleAds, purposes, t)
}

/// An S3 export into [`EXPORT_BUCKET`] under the prefix `id`.
pub fn export(id: &str, purposes: &[&str]) -> DestinationConfig {
    let t = Transport { bucket: Some(EXPORT_BUCKET.into()), prefix: Some(id.into()), ..Default::default() };
    destination(id, DestinationKind::S3Export, purposes, t)
}

/// The destination made essential (no purposes).
pub fn essential(mut d: DestinationConfig) -> DestinationConfig {
    d.purposes.clear();
    d.essential = true;
    d
}

// ---------------------------------------------------------------------------------------------------------------
// Events and envelopes
// ---------------------------------------------------------------------------------------------------------------

/// A track event with an email trait, as stitch hands it over (normalized, with a messageId).
pub fn track(message_id: &str, user_id: &str, name: &str, properties: Value) -> Value {
    json!({
        "type": "track",
        "event": name,
        "messageId": message_id,
        "userId": user_id,
        "timestamp": "2025-03-04T05:06:07.000Z",
        "receivedAt": "2025-03-04T05:06:08.000Z",
        "properties": properties,
        "context": {
            "ip": "198.51.100.23",
            "userAgent": "Mozilla/5.0 (tests)",
            "traits": { "email": format!("{user_id}@example.com") },
        },
    })
}

/// Sets the event's own consent (`context.consent.categoryPreferences`).
pub fn with_event_consent(mut event: Value, prefs: &[(&str, bool)]) -> Value {
    let prefs: Map<String, Value> = prefs.iter().map(|(k, v)| (k.to_string(), Value::Bool(*v))).collect();
    event["context"]["consent"] = json!({ "categoryPreferences": prefs });
    event
}

pub fn consent(pairs: &[(&str, bool)]) -> BTreeMap<String, bool> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// A first-party hand-off of `event` for `profile` with the profile's consent.
pub fn handoff(profile: Option<&str>, profile_consent: &[(&str, bool)], event: Value) -> Handoff {
    Handoff {
        profile_id: profile.map(str::to_string),
        class: DataPartyClass::FirstParty,
        consent: consent(profile_consent),
        consent_changed: false,
        applied_to: None,
        event,
    }
}

pub fn envelope(items: Vec<Handoff>) -> DeliveryEnvelope {
    DeliveryEnvelope { v: 1, source_id: SOURCE.into(), items, only: None, destinations: None }
}

pub fn body(envelope: &DeliveryEnvelope) -> String {
    serde_json::to_string(envelope).expect("envelope serializes")
}

// ---------------------------------------------------------------------------------------------------------------
// The harness
// ---------------------------------------------------------------------------------------------------------------

pub type Handler = Deliver<MemoryTable, SqliteQueue, Senders<DirStore>, Arc<MemoryMetrics>>;

/// The deliver function on embedded adapters: a `delivery` queue (redrive policy to `delivery-dlq`), the profile
/// table, an export bucket directory and in-memory metrics.
pub struct Harness {
    pub dir: TempDir,
    pub table: MemoryTable,
    pub queue: SqliteQueue,
    pub dlq: SqliteQueue,
    pub exports: DirStore,
    pub metrics: Arc<MemoryMetrics>,
    pub deliver: Arc<Handler>,
}

pub struct Options {
    pub max_receive_count: u32,
    pub jitter: Option<f64>,
}

impl Default for Options {
    fn default() -> Self {
        Options { max_receive_count: 50, jitter: None }
    }
}

impl Harness {
    /// The workspace's destinations, resolved and checked as the function does when it starts.
    pub fn new(ws: WorkspaceConfig) -> Harness {
        Harness::with(ws, Options::default())
    }

    pub fn with(ws: WorkspaceConfig, options: Options) -> Harness {
        let destinations = resolve_destinations(&ws, &|_| None).expect("destinations resolve");
        Harness::unchecked(ws, destinations, options)
    }

    /// Destinations handed to the handler as they are, past the start-up check (to see that an invalid one
    /// still fails closed).
    pub fn unchecked(ws: WorkspaceConfig, destinations: Vec<DestinationConfig>, options: Options) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("queues.sqlite");
        let queue = SqliteQueue::open(
            &db,
            DELIVERY_QUEUE,
            QueueOptions { dead_letter: Some((DELIVERY_DLQ.into(), options.max_receive_count)) },
        )
        .expect("delivery queue");
        let dlq = SqliteQueue::open(&db, DELIVERY_DLQ, QueueOptions::default()).expect("delivery dlq");
        let exports = DirStore::open(&dir.path().join("exports")).expect("export bucket");
        let table = MemoryTable::default();
        let metrics = Arc::new(MemoryMetrics::default());
        let http = HttpSender::new(&ws.delivery.allow_private_hosts).expect("http sender");
        let senders = Senders {
            http,
            exports: ExportSender::new(BTreeMap::from([(EXPORT_BUCKET.to_string(), exports.clone())])),
        };
        let mut deliver = Deliver::new(
            table.clone(),
            queue.clone(),
            dlq.clone(),
            senders,
            metrics.clone(),
            Arc::new(ws),
            destinations,
            DeliverSettings { max_receive_count: options.max_receive_count },
        );
        if let Some(j) = options.jitter {
            deliver = deliver.with_jitter(move || j);
        }
        Harness { dir, table, queue, dlq, exports, metrics, deliver: Arc::new(deliver) }
    }

    /// Calls the handler directly with one record per body (`rec-<n>`, first receive).
    pub async fn handle(&self, bodies: &[String]) -> SqsBatchResponse {
        let messages: Vec<ReceivedMessage> = bodies
            .iter()
            .enumerate()
            .map(|(i, b)| ReceivedMessage {
                message_id: format!("rec-{i}"),
                receipt_handle: format!("handle-{i}"),
                body: b.clone(),
                receive_count: 1,
                sent_timestamp_ms: 0,
            })
            .collect();
        let event = sqs_event(&messages, "arn:aws:sqs:local:000000000000:delivery").expect("sqs event");
        self.deliver.handle(event).await
    }

    /// Sends envelopes to the delivery queue (one message each).
    pub async fn enqueue(&self, envelopes: &[DeliveryEnvelope]) {
        for (n, chunk) in envelopes.chunks(10).enumerate() {
            let messages: Vec<OutgoingMessage> = chunk
                .iter()
                .enumerate()
                .map(|(i, e)| OutgoingMessage { id: format!("m{n}-{i}"), body: body(e) })
                .collect();
            let failed = self.queue.send_batch(&messages).await.expect("send to the delivery queue");
            assert!(failed.is_empty(), "the delivery queue refused {failed:?}");
        }
    }

    /// Runs the Lambda SQS-trigger emulation on the delivery queue until the returned trigger is stopped.
    pub fn start_trigger(&self, batch_size: usize, visibility_timeout: Duration) -> Trigger {
        let deliver = self.deliver.clone();
        let handler: SqsHandler = Arc::new(move |event| {
            let d = deliver.clone();
            Box::pin(async move { Ok(d.handle(event).await) })
        });
        let settings = TriggerSettings {
            batch_size,
            visibility_timeout,
            wait: Duration::from_millis(100),
            ..TriggerSettings::for_queue(DELIVERY_QUEUE)
        };
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(run_trigger(self.queue.clone(), handler, settings, rx));
        Trigger { stop, task }
    }

    pub async fn receipt(&self, profile: Option<&str>, destination: &str, message_id: &str) -> Option<Receipt> {
        let item = self.table.get(&receipt_key(profile, destination, message_id)).await.expect("table get")?;
        Some(Receipt::from_attrs(&item.attrs).expect("a receipt"))
    }

    /// Every DLQ message, parsed, without receiving them.
    pub async fn dead_letters(&self) -> Vec<DlqMessage> {
        let all = self.dlq.peek_all().await.expect("peek the dlq");
        all.iter().map(|m| DlqMessage::parse(&m.body).expect("a dlq message")).collect()
    }

    /// Messages left on the delivery queue (visible or in flight).
    pub async fn pending(&self) -> usize {
        self.queue.peek_all().await.expect("peek the delivery queue").len()
    }

    /// The events exported under `prefix` (one per JSON line), and how many objects hold them.
    pub async fn exported(&self, prefix: &str) -> (usize, Vec<Value>) {
        let objects = self.exports.list(&format!("{prefix}/")).await.expect("list exports");
        let mut events = Vec::new();
        for o in &objects {
            let bytes = self.exports.get(&o.key).await.expect("get export").expect("listed object exists");
            for line in String::from_utf8(bytes).expect("utf-8 export").lines() {
                events.push(serde_json::from_str(line).expect("a JSON line"));
            }
        }
        (objects.len(), events)
    }

    /// The metric lines the handler emitted.
    pub fn metric_lines(&self) -> Vec<String> {
        self.metrics.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

pub struct Trigger {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Trigger {
    /// Stops polling once the batch in hand is finished.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Polls `check` every 20 ms until it holds or `within` passes; the last state is returned either way.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The ids of the records a batch response reports failed.
pub fn failed_records(resp: &SqsBatchResponse) -> Vec<String> {
    let mut ids: Vec<String> = resp.batch_item_failures.iter().map(|f| f.item_identifier.clone()).collect();
    ids.sort();
    ids
}
