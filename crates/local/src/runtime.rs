//! The local runtime behind `tributary serve`: one process that plays API Gateway and Lambda's SQS trigger for the
//! real handlers.
//!
//! - HTTP requests become `ApiGatewayV2httpRequest`s (payload format 2.0, body base64-encoded when binary) and go to
//!   the same handlers that run on Lambda: `/v1/profiles/…` and `/v1/sources/…` to the profile API, the rest to
//!   ingest.
//! - The events queue feeds the stitch function, which hands events to the delivery queue; the deliver function
//!   consumes that and sends to the workspace's destinations. `POST /_local/sink` is a webhook receiver of our own
//!   (what it got is listed at `GET /_local/events`); a workspace points a destination at it with
//!   `url: "${TRIBUTARY_LOCAL_URL}/_local/sink"` and allow-lists `127.0.0.1`, as the demo workspace does.
//! - Files dropped under `objects/imports/<source-id>/` become S3 `ObjectCreated` notifications on the import queue
//!   (once their size and modification time hold still for a scan), which feeds the import function.
//! - When the workspace has audiences, stitch writes the profile change feed and a timer plays the EventBridge
//!   schedules of the audience refresh: an incremental run every [`AUDIENCE_INTERVAL`] (or
//!   `TRIBUTARY_AUDIENCE_INTERVAL_SECS`), a full pass every day. `POST /_local/audiences/refresh` runs one at
//!   once, optionally with the audience clock moved ahead (`{"full": false, "advance_ms": 0}`), to see what time
//!   alone does to windowed audiences; it answers with the run's report.
//! - Each registered SQS trigger polls a durable SQLite queue and delivers `SqsEvent` batches exactly as Lambda does:
//!   records carry receive counts, `batchItemFailures` keeps the failed ones for redelivery after the visibility
//!   timeout, a handler error returns the whole batch, and the queue's redrive policy moves poison messages to its
//!   DLQ.
//!
//! Nothing here knows what the handlers do.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body as LambdaBody;
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine;
use serde_json::{json, Value};
use tokio::sync::watch;
use tributary_audiences::{Audiences, RefreshRequest, RefreshSettings};
use tributary_core::config::{Sha256Hex, SourceConfig, SourceId, WorkspaceConfig};
use tributary_core::delivery::{DeliverySettings, DestinationConfig, DestinationKind, Transport};
use tributary_core::ingest::CEILING;
use tributary_core::ports::{Condition, Item, ItemKey, PortError, Queue, ReceivedMessage, TableStore, WriteOp};
use tributary_deliver::export::ExportSender;
use tributary_deliver::http::HttpSender;
use tributary_deliver::{resolve_destinations, Deliver, DeliverSettings, Senders};
use tributary_dsr_api::{DsrApi, RsaSigner};
use tributary_dsr_worker::{DsrWorker, Holdings, HttpClient, ObjectPlace, WorkerSettings};
use tributary_ingest::{AuthMode, Ingest, IngestSettings, MetricsSink};
use tributary_profile_api::ProfileApi;
use tributary_stitch::{Stitch, StitchSettings};

use crate::dir_store::DirStore;
use crate::dsr::LocalLinks;
use crate::faults::{Faults, Faulty};
use crate::sqlite_queue::{now_ms, QueueOptions, SqliteQueue};
use crate::sqlite_table::SqliteTable;

/// Names of the local queues, as the SAM template names them on AWS.
pub const EVENTS_QUEUE: &str = "events";
pub const EVENTS_DLQ: &str = "events-dlq";
pub const DELIVERY_QUEUE: &str = "delivery";
pub const DELIVERY_DLQ: &str = "delivery-dlq";
pub const IMPORT_QUEUE: &str = "imports";
pub const IMPORT_DLQ: &str = "imports-dlq";
/// The profile change feed stitch writes and the audience refresh drains.
pub const CHANGES_QUEUE: &str = "profile-changes";
pub const CHANGES_DLQ: &str = "profile-changes-dlq";
/// The DSR worker's queue and its DLQ, as the SAM template names them.
pub const DSR_QUEUE: &str = "dsr";
pub const DSR_DLQ: &str = "dsr-dlq";
/// How often the waiting list of data subject requests is swept (the AWS schedule: every hour).
pub const DSR_SWEEP: Duration = Duration::from_secs(60);
/// How often the local audience refresh runs (the AWS schedule defaults to 15 minutes; locally, sooner is handier).
pub const AUDIENCE_INTERVAL: Duration = Duration::from_secs(15);
/// How often a local run is a full pass.
pub const AUDIENCE_FULL_PASS: Duration = Duration::from_secs(24 * 3600);
/// Furthest `/_local/audiences/refresh` moves the audience clock in one call (ten years).
const MAX_CLOCK_ADVANCE_MS: i64 = 10 * 366 * 86_400_000;
/// The bucket name of `objects/` in import notifications (files dropped under `objects/imports/<source-id>/`).
pub const LOCAL_IMPORT_BUCKET: &str = "local";
/// How often the objects directory is scanned for new import files.
const IMPORT_SCAN_EVERY: Duration = Duration::from_secs(1);
/// The profile table (identities, profiles, ledger, events, dedup), as the SAM template names it.
pub const PROFILES_TABLE: &str = "profiles";
/// Receives before a message moves to the DLQ (the template's `maxReceiveCount`).
pub const MAX_RECEIVE_COUNT: u32 = 5;
/// The delivery queue's `maxReceiveCount`: high, because each receive may be one backoff step and the deliver
/// function dead-letters with a reason after `delivery.max_attempts` itself.
pub const DELIVERY_MAX_RECEIVE_COUNT: u32 = 100;
/// The variable a destination URL uses to reach this process (`http://127.0.0.1:<port>`).
pub const LOCAL_URL_VAR: &str = "TRIBUTARY_LOCAL_URL";
/// Most entries kept in the request log of `/_local/requests`.
const REQUEST_LOG_CAP: usize = 10_000;

/// Where `serve` keeps its state: `queues.sqlite`, `tables.sqlite`, `objects/`.
#[derive(Debug, Clone)]
pub struct DataDir(pub PathBuf);

impl DataDir {
    pub fn queues(&self) -> PathBuf {
        self.0.join("queues.sqlite")
    }
    pub fn tables(&self) -> PathBuf {
        self.0.join("tables.sqlite")
    }
    pub fn objects(&self) -> PathBuf {
        self.0.join("objects")
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Demo workspace
// ---------------------------------------------------------------------------------------------------------------

/// The keys of the demo workspace, kept in the data dir so a restart keeps them.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DemoKeys {
    pub write_key: String,
    pub management_key: String,
}

/// Loads or creates the demo keys and the workspace that accepts them.
pub fn demo_workspace(data: &DataDir) -> anyhow::Result<(WorkspaceConfig, DemoKeys)> {
    let path = data.0.join("demo-keys.json");
    let keys = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| format!("reading {}", path.display()))?,
        Err(_) => {
            let keys = DemoKeys {
                write_key: format!("wk_{}", uuid::Uuid::new_v4().simple()),
                management_key: format!("mk_{}", uuid::Uuid::new_v4().simple()),
            };
            std::fs::write(&path, serde_json::to_vec_pretty(&keys)?)
                .with_context(|| format!("writing {}", path.display()))?;
            keys
        }
    };
    let cfg = WorkspaceConfig {
        workspace: "demo".into(),
        sources: vec![SourceConfig {
            id: SourceId::try_from("demo".to_string()).map_err(anyhow::Error::msg)?,
            name: Some("Demo source".into()),
            write_key_sha256: vec![Sha256Hex::of(&keys.write_key)],
            class: tributary_core::config::DataPartyClass::FirstParty,
            limits: Default::default(),
            rate_limit: None,
            enabled: true,
            tracking_plan: None,
            pii: None,
            import: None,
            consent_basis: None,
            permitted_purposes: None,
        }],
        management_keys: vec![tributary_core::config::ManagementKey {
            id: "demo-admin".into(),
            key_sha256: Sha256Hex::of(&keys.management_key),
            scopes: vec![
                tributary_core::config::Scope::ProfilesRead,
                tributary_core::config::Scope::Dsr,
                tributary_core::config::Scope::Admin,
            ],
        }],
        identity: Default::default(),
        profiles: Default::default(),
        consent: Default::default(),
        // Our own sink, reached over HTTP through the same guard as any destination: loopback is refused unless
        // allow-listed, and the demo allow-lists exactly the address it listens on.
        destinations: vec![local_sink_destination()],
        delivery: DeliverySettings { allow_private_hosts: vec!["127.0.0.1".into()], ..Default::default() },
        audiences: Vec::new(),
        dsr: Default::default(),
    };
    Ok((cfg, keys))
}

/// The demo's destination: every event to `POST /_local/sink`, without consent (it never leaves the machine).
pub fn local_sink_destination() -> DestinationConfig {
    DestinationConfig {
        id: "local-sink".into(),
        kind: DestinationKind::Webhook,
        purposes: Vec::new(),
        essential: true,
        event_types: None,
        event_names: None,
        sources: None,
        allowed_classes: None,
        drop_fields: Vec::new(),
        hashing: None,
        transport: Transport { url: Some(format!("${{{LOCAL_URL_VAR}}}/_local/sink")), ..Default::default() },
    }
}

// ---------------------------------------------------------------------------------------------------------------
// SQS trigger emulation
// ---------------------------------------------------------------------------------------------------------------

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A Lambda function subscribed to a queue: takes an `SqsEvent`, returns the partial batch response.
pub type SqsHandler = Arc<dyn Fn(SqsEvent) -> BoxFuture<anyhow::Result<SqsBatchResponse>> + Send + Sync>;

#[derive(Debug, Clone)]
pub struct TriggerSettings {
    pub batch_size: usize,
    pub visibility_timeout: Duration,
    pub wait: Duration,
    /// Shown as `eventSourceARN` on every record.
    pub queue_arn: String,
}

impl TriggerSettings {
    pub fn for_queue(name: &str) -> Self {
        TriggerSettings {
            batch_size: 10,
            visibility_timeout: Duration::from_secs(30),
            wait: Duration::from_millis(500),
            queue_arn: format!("arn:aws:sqs:local:000000000000:{name}"),
        }
    }
}

/// The `SqsEvent` Lambda would deliver for these messages, built from the same JSON shape.
pub fn sqs_event(messages: &[ReceivedMessage], queue_arn: &str) -> anyhow::Result<SqsEvent> {
    let records: Vec<Value> = messages
        .iter()
        .map(|m| {
            json!({
                "messageId": m.message_id,
                "receiptHandle": m.receipt_handle,
                "body": m.body,
                "md5OfBody": null,
                "attributes": {
                    "ApproximateReceiveCount": m.receive_count.to_string(),
                    "SentTimestamp": m.sent_timestamp_ms.to_string(),
                    "SenderId": "local",
                    "ApproximateFirstReceiveTimestamp": m.sent_timestamp_ms.to_string(),
                },
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": "local",
            })
        })
        .collect();
    Ok(serde_json::from_value(json!({ "Records": records }))?)
}

/// Polls `queue` and feeds `handler` until `shutdown` flips, with Lambda's partial-batch rules. The batch in hand
/// when shutdown arrives is finished first; anything not deleted is redelivered on the next start.
pub async fn run_trigger<Q: Queue>(
    queue: Q,
    handler: SqsHandler,
    settings: TriggerSettings,
    shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(100);
    // A receive is never abandoned half-way (that would hide its messages for a whole visibility timeout); it is
    // bounded by `settings.wait`, so shutdown is noticed within that time.
    while !*shutdown.borrow() {
        let messages = match queue.receive(settings.batch_size, settings.visibility_timeout, settings.wait).await {
            Ok(m) => {
                backoff = Duration::from_millis(100);
                m
            }
            Err(e) => {
                tracing::warn!(error = %e, "Queue receive failed.");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        if messages.is_empty() {
            continue;
        }
        let failed = match sqs_event(&messages, &settings.queue_arn) {
            Ok(event) => match handler(event).await {
                Ok(resp) => failed_ids(&messages, &resp),
                Err(e) => {
                    tracing::warn!(error = %e, records = messages.len(), "Handler failed; whole batch returns.");
                    messages.iter().map(|m| m.message_id.clone()).collect()
                }
            },
            Err(e) => {
                tracing::error!(error = %e, "Could not build SqsEvent.");
                messages.iter().map(|m| m.message_id.clone()).collect()
            }
        };
        for m in &messages {
            if !failed.contains(&m.message_id) {
                if let Err(e) = queue.delete(&m.receipt_handle).await {
                    tracing::warn!(error = %e, "Delete after success failed; message will be redelivered.");
                }
            }
        }
    }
}

/// Lambda's reading of a partial batch response: an identifier that names no record of the batch fails all of it.
fn failed_ids(messages: &[ReceivedMessage], resp: &SqsBatchResponse) -> Vec<String> {
    let ids: Vec<String> = resp.batch_item_failures.iter().map(|f| f.item_identifier.clone()).collect();
    if ids.iter().any(|id| !messages.iter().any(|m| &m.message_id == id)) {
        return messages.iter().map(|m| m.message_id.clone()).collect();
    }
    ids
}

// ---------------------------------------------------------------------------------------------------------------
// The local sink: a webhook receiver
// ---------------------------------------------------------------------------------------------------------------

/// Stores what a webhook delivery carried, once per (source, messageId) as an idempotent receiver would. Items: pk
/// `sink`, sk `<sourceId>/<messageId>`, attrs `{sourceId, profileId, event, seq}`; the source comes from the
/// `X-Tributary-Source` header, the profile from `context.profile.id` (removed from the stored event).
pub async fn sink_store<T: TableStore>(table: &T, source_id: &str, body: &[u8]) -> anyhow::Result<usize> {
    let body: Value = serde_json::from_slice(body).context("body is not JSON")?;
    let events = match body {
        Value::Object(mut m) if m.contains_key("batch") => match m.remove("batch") {
            Some(Value::Array(events)) => events,
            _ => anyhow::bail!("batch is not an array"),
        },
        one @ Value::Object(_) => vec![one],
        _ => anyhow::bail!("body is not an object"),
    };
    let n = events.len();
    for mut event in events {
        let profile = event.get_mut("context").and_then(Value::as_object_mut).and_then(|c| c.remove("profile"));
        let profile_id = profile.as_ref().and_then(|p| p.get("id").cloned()).unwrap_or(Value::Null);
        // The sender made `context` to hold the profile: take it away again.
        if profile.is_some() && event.get("context").and_then(Value::as_object).is_some_and(|c| c.is_empty()) {
            if let Some(m) = event.as_object_mut() {
                m.remove("context");
            }
        }
        let message_id = event.get("messageId").and_then(Value::as_str).unwrap_or_default().to_string();
        let seq = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64;
        let mut attrs = serde_json::Map::new();
        attrs.insert("sourceId".into(), Value::String(source_id.to_string()));
        attrs.insert("profileId".into(), profile_id);
        attrs.insert("event".into(), event);
        attrs.insert("seq".into(), json!(seq));
        let item = Item {
            key: ItemKey::new("sink", format!("{source_id}/{message_id}")),
            attrs,
            version: 1,
            expires_at: None,
        };
        match table.write(WriteOp::Put { item, condition: Condition::NotExists }).await {
            Ok(()) | Err(PortError::ConditionFailed(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(n)
}

/// Everything the sink holds, in consumption order.
pub async fn sink_contents<T: TableStore>(table: &T) -> Result<Vec<Value>, PortError> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = table.query("sink", "", after.as_deref(), 1000).await?;
        for item in page.items {
            let seq = item.attrs.get("seq").and_then(Value::as_i64).unwrap_or(0);
            out.push((
                seq,
                json!({
                    "sourceId": item.attrs.get("sourceId"),
                    "profileId": item.attrs.get("profileId"),
                    "event": item.attrs.get("event"),
                }),
            ));
        }
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    out.sort_by_key(|(seq, _)| *seq);
    Ok(out.into_iter().map(|(_, v)| v).collect())
}

// ---------------------------------------------------------------------------------------------------------------
// HTTP front: API Gateway HTTP API, payload format 2.0
// ---------------------------------------------------------------------------------------------------------------

/// The event API Gateway would hand to the function for this request.
pub fn apigw_request(
    method: &http::Method,
    uri: &http::Uri,
    headers: &http::HeaderMap,
    body: &[u8],
    peer: SocketAddr,
    now: time::OffsetDateTime,
) -> anyhow::Result<ApiGatewayV2httpRequest> {
    let mut hdrs = serde_json::Map::new();
    for (name, value) in headers {
        let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
        // Payload 2.0 joins repeated headers with commas.
        match hdrs.get_mut(name.as_str()) {
            Some(Value::String(prev)) => {
                prev.push(',');
                prev.push_str(&v);
            }
            _ => {
                hdrs.insert(name.as_str().to_string(), Value::String(v));
            }
        }
    }
    // Binary bodies (gzip, non-UTF-8) arrive base64-encoded, as on API Gateway.
    let encoded = headers.contains_key(http::header::CONTENT_ENCODING) || std::str::from_utf8(body).is_err();
    let body_field = if body.is_empty() {
        Value::Null
    } else if encoded {
        Value::String(base64::engine::general_purpose::STANDARD.encode(body))
    } else {
        Value::String(String::from_utf8_lossy(body).into_owned())
    };
    let path = uri.path();
    let user_agent = headers.get(http::header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let request_id = uuid::Uuid::new_v4().to_string();
    let time_epoch = (now.unix_timestamp_nanos() / 1_000_000) as i64;
    let event = json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": uri.query().unwrap_or(""),
        "headers": hdrs,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "local",
            "domainName": "localhost",
            "domainPrefix": "localhost",
            "http": {
                "method": method.as_str(),
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": peer.ip().to_string(),
                "userAgent": user_agent,
            },
            "requestId": request_id,
            "routeKey": "$default",
            "stage": "$default",
            "time": now.format(&time::format_description::well_known::Rfc2822).unwrap_or_default(),
            "timeEpoch": time_epoch,
        },
        "body": body_field,
        "isBase64Encoded": encoded && !body.is_empty(),
    });
    Ok(serde_json::from_value(event)?)
}

/// Turns the function's response back into HTTP.
pub fn http_response(resp: ApiGatewayV2httpResponse) -> Response {
    let status = http::StatusCode::from_u16(resp.status_code as u16).unwrap_or(http::StatusCode::BAD_GATEWAY);
    let body = match resp.body {
        Some(LambdaBody::Text(t)) if resp.is_base64_encoded => {
            Body::from(base64::engine::general_purpose::STANDARD.decode(t).unwrap_or_default())
        }
        Some(LambdaBody::Text(t)) => Body::from(t),
        Some(LambdaBody::Binary(b)) => Body::from(b),
        _ => Body::empty(),
    };
    let mut out = Response::new(body);
    *out.status_mut() = status;
    *out.headers_mut() = resp.headers;
    out
}

/// One tracking request as the local runtime answered it (for `/_local/requests`); never the body or the key.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    pub status: u16,
    pub user_agent: Option<String>,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub auth: &'static str,
}

/// The profile table, queues and object store of the pipeline, each failing now and then when `TRIBUTARY_FAULTS`
/// asks for it (crate::faults); otherwise they only forward.
type Table = Faulty<SqliteTable>;
type LocalQueue = Faulty<SqliteQueue>;
type Objects = Faulty<DirStore>;

type LocalAudiences<M> = Audiences<Table, LocalQueue, Arc<M>>;

struct AppState<M: MetricsSink> {
    ingest: Arc<Ingest<LocalQueue, Arc<M>, Objects, Table>>,
    profiles: ProfileApi<Table>,
    sink: SqliteTable,
    requests: Mutex<Vec<RequestRecord>>,
    /// The audience refresh and how far its clock runs ahead of the wall clock (ms); `None` without audiences.
    audiences: Option<(Arc<LocalAudiences<M>>, Arc<AtomicI64>)>,
    dsr: LocalDsrApi,
    /// Checks `/_local/results/…` links; the objects they point into.
    links: LocalLinks,
    objects: Objects,
}

type LocalDsrApi = DsrApi<Table, LocalQueue, Arc<RsaSigner>, LocalLinks>;
type LocalDsrWorker = DsrWorker<Table, LocalQueue, Objects, Arc<RsaSigner>, LocalLinks, HttpClient>;

/// A running local platform.
pub struct Platform {
    pub addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Options for [`start`].
pub struct PlatformOptions {
    pub data_dir: PathBuf,
    pub addr: SocketAddr,
    pub workspace: WorkspaceConfig,
}

/// Opens the stores under the data dir, binds the HTTP listener and starts the SQS triggers.
pub async fn start<M: MetricsSink + 'static>(opts: PlatformOptions, metrics: M) -> anyhow::Result<Platform> {
    let data = DataDir(opts.data_dir.clone());
    std::fs::create_dir_all(&data.0).with_context(|| format!("creating data dir {}", data.0.display()))?;
    // Bound first, so `${TRIBUTARY_LOCAL_URL}` and the DSR links name the real port.
    let listener = tokio::net::TcpListener::bind(opts.addr).await.with_context(|| format!("binding {}", opts.addr))?;
    let addr = listener.local_addr()?;
    let local_url = format!("http://127.0.0.1:{}", addr.port());
    let faults = Faults::from_env().map_err(anyhow::Error::msg)?;
    if faults.any() {
        tracing::warn!(?faults, "Fault injection is on: store and queue calls will fail on purpose.");
    }
    let table = || -> anyhow::Result<Table> {
        let t = SqliteTable::open(&data.tables(), PROFILES_TABLE).map_err(|e| anyhow::anyhow!("profile table: {e}"))?;
        Ok(Faulty::new(t, "table", faults.table.clone()))
    };
    let object_store = || -> anyhow::Result<Objects> {
        let o = DirStore::open(&data.objects()).map_err(|e| anyhow::anyhow!("object store: {e}"))?;
        Ok(Faulty::new(o, "objects", faults.objects.clone()))
    };
    let objects = object_store()?;
    let open_queue = |name: &str, options: QueueOptions| -> anyhow::Result<LocalQueue> {
        let q = SqliteQueue::open(&data.queues(), name, options).map_err(|e| anyhow::anyhow!("queue {name}: {e}"))?;
        Ok(Faulty::new(q, "queue", faults.queue.clone()))
    };
    let events_options = || QueueOptions { dead_letter: Some((EVENTS_DLQ.to_string(), MAX_RECEIVE_COUNT)) };
    let delivery_options =
        || QueueOptions { dead_letter: Some((DELIVERY_DLQ.to_string(), DELIVERY_MAX_RECEIVE_COUNT)) };
    let events = open_queue(EVENTS_QUEUE, events_options())?;
    let sink = SqliteTable::open(&data.tables(), "sink").map_err(|e| anyhow::anyhow!("sink table: {e}"))?;
    let profiles = table()?;

    let metrics = Arc::new(metrics);
    let workspace = Arc::new(opts.workspace);
    // Quarantined events go under `objects/quarantine/`, as they go under the archive bucket's prefix on AWS;
    // governed sources' counters go to the profile table (a handle of its own, as each Lambda has its own client).
    let stats_table = table()?;
    let ingest = Arc::new(
        Ingest::new(events, metrics.clone(), workspace.clone(), IngestSettings::default())
            .with_quarantine(objects)
            .with_stats(stats_table)
            .with_suppressions(table()?),
    );
    let profile_api = ProfileApi::new(table()?, workspace.clone());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut tasks = Vec::new();

    // The audience refresh, when there are audiences: stitch names changed profiles on the feed it drains.
    let changes_options = || QueueOptions { dead_letter: Some((CHANGES_DLQ.to_string(), MAX_RECEIVE_COUNT)) };
    let audiences = if workspace.audiences.is_empty() {
        None
    } else {
        let offset = Arc::new(AtomicI64::new(0));
        let clock_offset = offset.clone();
        let refresh = Audiences::new(
            table()?,
            open_queue(CHANGES_QUEUE, changes_options())?,
            open_queue(DELIVERY_QUEUE, delivery_options())?,
            metrics.clone(),
            workspace.clone(),
            RefreshSettings::default(),
        )
        .map_err(|e| anyhow::anyhow!("workspace audiences: {e}"))?
        .with_clock(move || now_ms() + clock_offset.load(Ordering::SeqCst));
        let refresh = Arc::new(refresh);
        tasks.push(tokio::spawn(schedule_audiences(refresh.clone(), shutdown_rx.clone())));
        Some((refresh, offset))
    };
    // Data subject requests: the API answers on the HTTP front, the worker runs on the `dsr` queue.
    let dsr_options = || QueueOptions { dead_letter: Some((DSR_DLQ.to_string(), MAX_RECEIVE_COUNT)) };
    let signer = Arc::new(
        RsaSigner::from_pem(&crate::dsr::signing_pem(&data.0, &workspace.dsr.processor_domain)?)
            .map_err(|e| anyhow::anyhow!("DSR signing key in {}: {e}", data.0.display()))?,
    );
    let links = LocalLinks::new(local_url.clone(), crate::dsr::links_secret(&data.0)?);
    let dsr = DsrApi::new(
        table()?,
        open_queue(DSR_QUEUE, dsr_options())?,
        signer.clone(),
        links.clone(),
        workspace.clone(),
        None,
    );
    let state = Arc::new(AppState {
        ingest,
        profiles: profile_api,
        sink,
        requests: Mutex::new(Vec::new()),
        audiences,
        dsr,
        links: links.clone(),
        objects: object_store()?,
    });

    // events → stitch → delivery.
    let stitch = Stitch::new(
        profiles,
        open_queue(DELIVERY_QUEUE, delivery_options())?,
        metrics.clone(),
        workspace.clone(),
        StitchSettings::default(),
    )
    .map_err(|e| anyhow::anyhow!("workspace identity rules: {e}"))?;
    let stitch = match &state.audiences {
        Some(_) => stitch.with_changes(open_queue(CHANGES_QUEUE, changes_options())?),
        None => stitch,
    };
    let stitch = Arc::new(stitch);
    let handler: SqsHandler = Arc::new(move |event| {
        let s = stitch.clone();
        Box::pin(async move { Ok(s.handle(event).await) })
    });
    tasks.push(tokio::spawn(run_trigger(
        open_queue(EVENTS_QUEUE, events_options())?,
        handler,
        TriggerSettings::for_queue(EVENTS_QUEUE),
        shutdown_rx.clone(),
    )));

    // delivery → destinations.
    let sink_url = local_url.clone();
    let lookup =
        move |name: &str| if name == LOCAL_URL_VAR { Some(sink_url.clone()) } else { std::env::var(name).ok() };
    let destinations = resolve_destinations(&workspace, &lookup).map_err(|e| anyhow::anyhow!("{e}"))?;
    // Export buckets are directories under `objects/exports/`.
    let mut exports = std::collections::BTreeMap::new();
    for bucket in destinations.iter().filter_map(|d| d.transport.bucket.clone()) {
        let store = DirStore::open(&data.objects().join("exports").join(&bucket))
            .map_err(|e| anyhow::anyhow!("export bucket {bucket}: {e}"))?;
        exports.insert(bucket, Faulty::new(store, "objects", faults.objects.clone()));
    }
    let http = HttpSender::new(&workspace.delivery.allow_private_hosts).map_err(anyhow::Error::msg)?;
    let dsr_destinations = destinations.clone();
    let deliver = Deliver::new(
        table()?,
        open_queue(DELIVERY_QUEUE, delivery_options())?,
        open_queue(DELIVERY_DLQ, QueueOptions::default())?,
        Senders { http, exports: ExportSender::new(exports) },
        metrics.clone(),
        workspace.clone(),
        destinations,
        DeliverSettings { max_receive_count: DELIVERY_MAX_RECEIVE_COUNT },
    );
    let deliver = Arc::new(deliver);
    let handler: SqsHandler = Arc::new(move |event| {
        let d = deliver.clone();
        Box::pin(async move { Ok(d.handle(event).await) })
    });
    tasks.push(tokio::spawn(run_trigger(
        open_queue(DELIVERY_QUEUE, delivery_options())?,
        handler,
        TriggerSettings::for_queue(DELIVERY_QUEUE),
        shutdown_rx.clone(),
    )));

    // objects/imports/… → notifications → import → events. Locally an invocation has no deadline: the lease is
    // renewed at each checkpoint and the record stays hidden as long as the trigger's visibility timeout.
    let import_options = || QueueOptions { dead_letter: Some((IMPORT_DLQ.to_string(), MAX_RECEIVE_COUNT)) };
    let import = tributary_import::Import::new(
        table()?,
        open_queue(EVENTS_QUEUE, events_options())?,
        open_queue(IMPORT_QUEUE, import_options())?,
        object_store()?,
        metrics.clone(),
        workspace.clone(),
        tributary_import::ImportSettings::new(LOCAL_IMPORT_BUCKET),
    )
    .with_suppressions(table()?);
    let import = Arc::new(import);
    let handler: SqsHandler = Arc::new(move |event| {
        let i = import.clone();
        Box::pin(async move { Ok(i.handle(event, None).await) })
    });
    let import_trigger = TriggerSettings {
        batch_size: 1,
        visibility_timeout: Duration::from_secs(30 * 60),
        ..TriggerSettings::for_queue(IMPORT_QUEUE)
    };
    tasks.push(tokio::spawn(run_trigger(
        open_queue(IMPORT_QUEUE, import_options())?,
        handler,
        import_trigger,
        shutdown_rx.clone(),
    )));
    tasks.push(tokio::spawn(watch_imports(
        data.objects(),
        open_queue(IMPORT_QUEUE, import_options())?,
        shutdown_rx.clone(),
    )));

    // The DSR worker: every store it searches is this process's own (DLQs, and under `objects/` the quarantine,
    // partner files, import reports and export buckets).
    let mut holdings = Holdings::default();
    for name in [EVENTS_DLQ, DELIVERY_DLQ, CHANGES_DLQ] {
        holdings.queues.push((name.to_string(), open_queue(name, QueueOptions::default())?));
    }
    // Deliveries still waiting would reach destinations after the erasure (and after their deletion call).
    holdings.queues.push((DELIVERY_QUEUE.to_string(), open_queue(DELIVERY_QUEUE, delivery_options())?));
    for (name, prefix, partner_files) in [
        ("quarantine", "quarantine/", false),
        ("import_files", "imports/", true),
        ("import_reports", "import-reports/", false),
        ("exports", "exports/", false),
    ] {
        holdings.objects.push(ObjectPlace {
            name: name.into(),
            store: object_store()?,
            prefix: prefix.into(),
            whole_files: partner_files,
            imports: partner_files,
        });
    }
    let worker: LocalDsrWorker = DsrWorker::new(
        table()?,
        open_queue(DSR_QUEUE, dsr_options())?,
        object_store()?,
        signer,
        links,
        HttpClient::new(&workspace.delivery.allow_private_hosts).map_err(anyhow::Error::msg)?,
        workspace.clone(),
        WorkerSettings {
            backoff_base: Duration::from_secs(2),
            // Shorter only to watch a link expire (tests); never longer than the 7 days of the AWS lifecycle rule.
            results_ttl: std::env::var("TRIBUTARY_DSR_RESULTS_TTL_SECS")
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .map_or(WorkerSettings::default().results_ttl, Duration::from_secs),
            ..WorkerSettings::default()
        },
    )
    .with_holdings(holdings)
    .with_destinations(dsr_destinations);
    let worker = Arc::new(worker);
    let w = worker.clone();
    let handler: SqsHandler = Arc::new(move |event| {
        let w = w.clone();
        Box::pin(async move { Ok(w.handle(event).await) })
    });
    tasks.push(tokio::spawn(run_trigger(
        open_queue(DSR_QUEUE, dsr_options())?,
        handler,
        TriggerSettings::for_queue(DSR_QUEUE),
        shutdown_rx.clone(),
    )));
    tasks.push(tokio::spawn(sweep_dsr(worker, shutdown_rx.clone())));

    let app = Router::new()
        .route("/_local/events", get(local_events::<M>))
        .route("/_local/sink", axum::routing::post(local_sink::<M>))
        .route("/_local/requests", get(local_requests::<M>))
        .route("/_local/audiences/refresh", axum::routing::post(local_audience_refresh::<M>))
        .route("/_local/results/{*key}", get(local_results::<M>))
        .fallback(front::<M>)
        .with_state(state);
    let mut rx = shutdown_rx.clone();
    tasks.push(tokio::spawn(async move {
        let server = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move {
                let _ = rx.wait_for(|stop| *stop).await;
            });
        if let Err(e) = server.await {
            tracing::error!(error = %e, "HTTP server failed.");
        }
    }));
    Ok(Platform { addr, shutdown: shutdown_tx, tasks })
}

// ---------------------------------------------------------------------------------------------------------------
// The audience schedules
// ---------------------------------------------------------------------------------------------------------------

/// Plays the two EventBridge schedules: an incremental run every interval, a full pass once a day.
async fn schedule_audiences<M: MetricsSink + 'static>(
    refresh: Arc<LocalAudiences<M>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let interval = std::env::var("TRIBUTARY_AUDIENCE_INTERVAL_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map_or(AUDIENCE_INTERVAL, Duration::from_secs);
    let mut last_full = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let full = last_full.elapsed() >= AUDIENCE_FULL_PASS;
        match refresh.handle(RefreshRequest { full }, None).await {
            Ok(report) => {
                if full && !report.busy {
                    last_full = tokio::time::Instant::now();
                }
            }
            Err(e) => tracing::warn!(error = %e, "Audience refresh failed; the next run tries again."),
        }
    }
}

/// `POST /_local/audiences/refresh`: one run now, after moving the audience clock ahead by `advance_ms`.
async fn local_audience_refresh<M: MetricsSink + 'static>(
    State(state): State<Arc<AppState<M>>>,
    body: axum::body::Bytes,
) -> Response {
    #[derive(serde::Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    struct Ask {
        #[serde(default)]
        full: bool,
        #[serde(default)]
        advance_ms: i64,
    }
    let bad = |message: String| {
        (axum::http::StatusCode::BAD_REQUEST, axum::Json(json!({"code": "invalid_request", "message": message})))
            .into_response()
    };
    let ask: Ask = if body.is_empty() {
        Ask::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(a) => a,
            Err(e) => return bad(format!("body must be {{\"full\": bool, \"advance_ms\": int}}: {e}")),
        }
    };
    if !(0..=MAX_CLOCK_ADVANCE_MS).contains(&ask.advance_ms) {
        return bad(format!("advance_ms must be between 0 and {MAX_CLOCK_ADVANCE_MS}"));
    }
    let Some((refresh, offset)) = &state.audiences else {
        let body = json!({"code": "no_audiences", "message": "the workspace has no audiences"});
        return (axum::http::StatusCode::NOT_FOUND, axum::Json(body)).into_response();
    };
    offset.fetch_add(ask.advance_ms, Ordering::SeqCst);
    // A scheduled run may hold the lease: wait for it rather than answer "busy".
    for _ in 0..200 {
        match refresh.handle(RefreshRequest { full: ask.full }, None).await {
            Ok(report) if report.busy => tokio::time::sleep(Duration::from_millis(50)).await,
            Ok(report) => return axum::Json(report).into_response(),
            Err(e) => {
                let body = json!({"code": "refresh_failed", "message": e.to_string()});
                return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, axum::Json(body)).into_response();
            }
        }
    }
    let body = json!({"code": "busy", "message": "another audience run held the lease for 10 s"});
    (axum::http::StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
}

// ---------------------------------------------------------------------------------------------------------------
// S3 notifications for files dropped under objects/imports/
// ---------------------------------------------------------------------------------------------------------------

/// The ETag a local notification carries for a file: its size and modification time, so a file rewritten under the
/// same name is a new object version while the same file seen again is not.
pub fn local_etag(path: &Path) -> std::io::Result<String> {
    let meta = std::fs::metadata(path)?;
    let modified = meta.modified()?.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let digest = tributary_core::sha256_hex(format!("{}:{modified}", meta.len()).as_bytes());
    Ok(digest[..32].to_string())
}

/// The S3 `ObjectCreated:Put` notification for an object of the local bucket, as S3 writes it to a queue.
pub fn local_notification(key: &str, size: u64, etag: &str) -> String {
    let now =
        time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    json!({"Records": [{
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "local",
        "eventTime": now,
        "eventName": "ObjectCreated:Put",
        "userIdentity": {"principalId": "local"},
        "requestParameters": {"sourceIPAddress": "127.0.0.1"},
        "responseElements": {},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "imports",
            "bucket": {"name": LOCAL_IMPORT_BUCKET, "arn": format!("arn:aws:s3:::{LOCAL_IMPORT_BUCKET}")},
            "object": {
                "key": tributary_core::import::encode_notification_key(key),
                "size": size,
                "eTag": etag,
                "sequencer": "0",
            },
        },
    }]})
    .to_string()
}

/// Scans `objects/imports/` and queues a notification for each new or rewritten file once its size and
/// modification time held still between two scans (a file still being copied waits).
async fn watch_imports(objects: PathBuf, queue: LocalQueue, mut shutdown: watch::Receiver<bool>) {
    use std::collections::HashMap;
    // key → (etag, notified)
    let mut seen: HashMap<String, (String, bool)> = HashMap::new();
    let root = objects.clone();
    while !*shutdown.borrow() {
        let scan = {
            let root = root.clone();
            tokio::task::spawn_blocking(move || scan_imports(&root)).await.unwrap_or_default()
        };
        for (key, size, etag) in scan {
            let entry = seen.entry(key.clone()).or_insert_with(|| (String::new(), false));
            if entry.0 != etag {
                // New or changed since the last scan: wait for it to hold still.
                *entry = (etag, false);
                continue;
            }
            if entry.1 {
                continue;
            }
            let body = local_notification(&key, size, &etag);
            match queue.send_batch(&[tributary_core::ports::OutgoingMessage { id: "0".into(), body }]).await {
                Ok(failed) if failed.is_empty() => entry.1 = true,
                _ => tracing::warn!("Import notification not queued; retrying at the next scan."),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(IMPORT_SCAN_EVERY) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Every file under `objects/imports/<source>/…`: (key, size, etag).
fn scan_imports(objects: &Path) -> Vec<(String, u64, String)> {
    let mut out = Vec::new();
    let mut dirs = vec![objects.join("imports")];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else { continue };
            if kind.is_dir() {
                dirs.push(path);
                continue;
            }
            // Hidden files are partial copies (editors, `tributary import`): not imports.
            if !kind.is_file() || entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let Ok(rel) = path.strip_prefix(objects) else { continue };
            let key = rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
            if let (Ok(meta), Ok(etag)) = (entry.metadata(), local_etag(&path)) {
                out.push((key, meta.len(), etag));
            }
        }
    }
    out
}

impl Platform {
    /// Stops accepting requests, lets in-flight requests and batches finish, and waits for every task.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

async fn front<M: MetricsSink + 'static>(
    State(state): State<Arc<AppState<M>>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: http::Request<Body>,
) -> Response {
    let (parts, body) = req.into_parts();
    // API Gateway's own cap is 10 MB; ours is the hard ceiling of any source, and the handler applies the rest.
    let bytes = match axum::body::to_bytes(body, CEILING.max_request_bytes + 1).await {
        Ok(b) => b,
        Err(_) => {
            return (
                http::StatusCode::BAD_REQUEST,
                [(http::header::CONTENT_TYPE, "application/json")],
                json!({"code": "request_too_large", "message": "request body too large"}).to_string(),
            )
                .into_response()
        }
    };
    let event =
        match apigw_request(&parts.method, &parts.uri, &parts.headers, &bytes, peer, time::OffsetDateTime::now_utc()) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, "Could not build the API Gateway event.");
                return http::StatusCode::INTERNAL_SERVER_ERROR.into_response();
            }
        };
    // The routes API Gateway sends to the profile and DSR APIs; everything else is the tracking API's.
    let path = parts.uri.path();
    if path.starts_with("/v1/profiles/")
        || path.starts_with("/v1/sources/")
        || path.starts_with("/v1/suppressions/")
        || path == "/v1/audit"
        || path == "/openapi.json"
    {
        return http_response(state.profiles.handle(event).await);
    }
    if path.starts_with("/opendsr/") || path.starts_with("/opengdpr_requests") {
        return http_response(state.dsr.handle(event).await);
    }
    let resp = state.ingest.handle(event).await;
    if parts.uri.path().contains("/v1/") {
        let h = |n: http::header::HeaderName| parts.headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
        let record = RequestRecord {
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
            status: resp.status_code as u16,
            user_agent: h(http::header::USER_AGENT),
            content_type: h(http::header::CONTENT_TYPE),
            content_encoding: h(http::header::CONTENT_ENCODING),
            auth: AuthMode::of(&parts.headers).as_str(),
        };
        if let Ok(mut log) = state.requests.lock() {
            if log.len() >= REQUEST_LOG_CAP {
                log.remove(0);
            }
            log.push(record);
        }
    }
    http_response(resp)
}

async fn local_events<M: MetricsSink + 'static>(State(state): State<Arc<AppState<M>>>) -> Response {
    match sink_contents(&state.sink).await {
        Ok(events) => axum::Json(json!({ "events": events })).into_response(),
        Err(e) => (
            http::StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"code": "store_unavailable", "message": e.to_string()})),
        )
            .into_response(),
    }
}

async fn local_sink<M: MetricsSink + 'static>(
    State(state): State<Arc<AppState<M>>>,
    headers: http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let source = headers.get("x-tributary-source").and_then(|v| v.to_str().ok()).unwrap_or("unknown");
    // A forwarded erasure: this receiver supports deletion, and deletes what it holds of the person.
    if let Ok(v) = serde_json::from_slice::<Value>(&body) {
        if v.get("type").and_then(Value::as_str) == Some("delete") {
            return match crate::dsr::sink_delete(&state.sink, &v).await {
                Ok(n) => axum::Json(json!({ "deleted": n })).into_response(),
                Err(e) => (
                    http::StatusCode::SERVICE_UNAVAILABLE,
                    axum::Json(json!({"code": "store_unavailable", "message": e.to_string()})),
                )
                    .into_response(),
            };
        }
    }
    match sink_store(&state.sink, source, &body).await {
        Ok(n) => axum::Json(json!({ "received": n })).into_response(),
        Err(e) => {
            (http::StatusCode::BAD_REQUEST, axum::Json(json!({"code": "invalid_delivery", "message": e.to_string()})))
                .into_response()
        }
    }
}

/// Serves an export behind a link the DSR API handed out, while the link is valid.
async fn local_results<M: MetricsSink + 'static>(
    State(state): State<Arc<AppState<M>>>,
    axum::extract::Path(key): axum::extract::Path<String>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    let refuse = |status: http::StatusCode, code: &str, message: &str| {
        (status, axum::Json(json!({"code": code, "message": message}))).into_response()
    };
    let expires = q.get("expires").and_then(|e| e.parse::<i64>().ok());
    let (Some(expires), Some(sig)) = (expires, q.get("sig")) else {
        return refuse(http::StatusCode::FORBIDDEN, "bad_signature", "the link is incomplete");
    };
    match state.links.check(&key, expires, sig, now_ms()) {
        Ok(()) => {}
        Err(code) => return refuse(http::StatusCode::FORBIDDEN, code, "this link is not valid (or no longer)"),
    }
    use tributary_core::ports::ObjectStore;
    match state.objects.get(&key).await {
        Ok(Some(bytes)) => ([(http::header::CONTENT_TYPE, "application/gzip")], bytes).into_response(),
        Ok(None) => refuse(http::StatusCode::NOT_FOUND, "not_found", "the export no longer exists"),
        Err(e) => refuse(http::StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", &e.to_string()),
    }
}

/// Plays the schedule that sweeps the DSR waiting list.
async fn sweep_dsr(worker: Arc<LocalDsrWorker>, mut shutdown: watch::Receiver<bool>) {
    let every = std::env::var("TRIBUTARY_DSR_SWEEP_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map_or(DSR_SWEEP, Duration::from_secs);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        if let Err(e) = worker.sweep().await {
            tracing::warn!(error = %e, "DSR sweep failed; the next one tries again.");
        }
    }
}

async fn local_requests<M: MetricsSink + 'static>(State(state): State<Arc<AppState<M>>>) -> Response {
    let log = state.requests.lock().map(|l| l.clone()).unwrap_or_default();
    axum::Json(json!({ "requests": log })).into_response()
}

/// Reads and checks a workspace file, naming the file in every error.
pub fn load_workspace(path: &Path) -> anyhow::Result<WorkspaceConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    tributary_core::config::load(&text).map_err(|errs| {
        let lines: Vec<String> = errs.iter().map(|e| format!("{}: {e}", path.display())).collect();
        anyhow::anyhow!(lines.join("\n"))
    })
}
