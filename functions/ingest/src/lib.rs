//! The ingest function: API Gateway HTTP API (payload 2.0) → authenticate → decode → the pure pipeline in
//! `tributary_core::ingest` → events queue. It answers 200 only once every accepted event is durably queued.
//!
//! The handler is generic over the [`Queue`] port, so the Lambda binary (SQS) and `tributary serve` (SQLite) run
//! exactly this code.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use base64::Engine;
use http::{HeaderMap, HeaderValue, Method};
use serde_json::json;
use time::OffsetDateTime;
use tributary_core::config::{SourceConfig, WorkspaceConfig};
use tributary_core::ingest::{self, Limits, Processed, RequestContext, RequestError, Route};
use tributary_core::metrics::Emf;
use tributary_core::ports::{OutgoingMessage, Queue, MAX_SEND_BATCH};

/// Largest events-queue message we write. SQS accepts 1 MiB, but each 64 KiB chunk is billed as one request;
/// 256 KiB keeps a message to 4 chunks and under the Lambda async payload limit with room to spare.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 256 * 1024;

pub use tributary_core::metrics::{MemoryMetrics, MetricsSink, StdoutMetrics};

/// Tunables of the handler that are not part of the workspace file.
#[derive(Debug, Clone)]
pub struct IngestSettings {
    pub max_message_bytes: usize,
    /// Attempts per SendMessageBatch chunk before answering 503.
    pub send_attempts: u32,
    /// First retry delay; doubles each attempt.
    pub send_backoff: Duration,
}

impl Default for IngestSettings {
    fn default() -> Self {
        IngestSettings {
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            send_attempts: 4,
            send_backoff: Duration::from_millis(50),
        }
    }
}

type Clock = Arc<dyn Fn() -> OffsetDateTime + Send + Sync>;

pub struct Ingest<Q, M> {
    queue: Q,
    metrics: M,
    workspace: Arc<WorkspaceConfig>,
    settings: IngestSettings,
    clock: Clock,
    buckets: Mutex<HashMap<String, TokenBucket>>,
}

/// How the caller authenticated, recorded for the local runtime's request log (never the key itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    Basic,
    Bearer,
    None,
}

impl AuthMode {
    pub fn as_str(&self) -> &'static str {
        match self {
            AuthMode::Basic => "basic",
            AuthMode::Bearer => "bearer",
            AuthMode::None => "none",
        }
    }

    pub fn of(headers: &HeaderMap) -> AuthMode {
        match header(headers, "authorization").map(|a| a.split_once(' ').map_or(a, |(s, _)| s).to_ascii_lowercase()) {
            Some(s) if s == "basic" => AuthMode::Basic,
            Some(s) if s == "bearer" => AuthMode::Bearer,
            _ => AuthMode::None,
        }
    }
}

impl<Q: Queue, M: MetricsSink> Ingest<Q, M> {
    pub fn new(queue: Q, metrics: M, workspace: Arc<WorkspaceConfig>, settings: IngestSettings) -> Self {
        Ingest {
            queue,
            metrics,
            workspace,
            settings,
            clock: Arc::new(OffsetDateTime::now_utc),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Replaces the wall clock (tests pin `receivedAt`).
    pub fn with_clock(mut self, clock: impl Fn() -> OffsetDateTime + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Handles one API Gateway HTTP API request. Never fails: every outcome is an HTTP response.
    pub async fn handle(&self, req: ApiGatewayV2httpRequest) -> ApiGatewayV2httpResponse {
        let path = req.raw_path.clone().or_else(|| req.request_context.http.path.clone()).unwrap_or_default();
        let method = req.request_context.http.method.clone();
        if path.trim_end_matches('/').ends_with("/health") && (method == Method::GET || method == Method::HEAD) {
            return respond(200, json!({"status": "ok"}));
        }
        let Some(route) = Route::from_path(&path) else {
            return error_response(&RequestError { status: 404, code: "not_found", message: "no such route".into() });
        };
        if method != Method::POST {
            return error_response(&RequestError {
                status: 405,
                code: "method_not_allowed",
                message: "tracking routes accept POST only".into(),
            });
        }
        let started = Instant::now();
        let outcome = self.ingest(route, &req).await;
        let (status, source) = match &outcome {
            Ok(o) => (200, o.source_id.as_str()),
            Err(f) => (f.error.status, f.source_id.as_deref().unwrap_or("unknown")),
        };
        match &outcome {
            Ok(o) => tracing::info!(
                source_id = source,
                route = route.as_str(),
                status,
                accepted = o.accepted,
                rejected = o.rejected.len(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "Request ingested."
            ),
            Err(f) => tracing::info!(
                source_id = source,
                route = route.as_str(),
                status,
                code = f.error.code,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "Request refused."
            ),
        }
        self.emit_metrics(route, &outcome);
        match outcome {
            Ok(o) => respond(200, json!({"success": true, "accepted": o.accepted, "rejected": o.rejected})),
            Err(f) => {
                let mut resp = error_response(&f.error);
                if let Some(secs) = f.retry_after {
                    insert_header(&mut resp.headers, "retry-after", &secs.to_string());
                    let reset = (self.clock)().unix_timestamp() + secs as i64;
                    insert_header(&mut resp.headers, "x-ratelimit-reset", &reset.to_string());
                }
                resp
            }
        }
    }

    async fn ingest(&self, route: Route, req: &ApiGatewayV2httpRequest) -> Result<Accepted, Failure> {
        let received_at = (self.clock)();
        // 1. Raw bytes. API Gateway hands binary (gzip) bodies over as base64.
        let raw: Vec<u8> = match &req.body {
            None => Vec::new(),
            Some(b) if req.is_base64_encoded => base64::engine::general_purpose::STANDARD
                .decode(b.trim_end())
                .map_err(|_| Failure::new(RequestError::bad_request("invalid_base64", "body is not valid base64")))?,
            Some(b) => b.as_bytes().to_vec(),
        };

        // 2. The source, from Basic auth when present (checked before any decompression or parsing).
        let basic_key = basic_write_key(&req.headers).map_err(Failure::new)?;
        let mut source = match &basic_key {
            Some(key) => Some(self.source_for(key)?),
            None => None,
        };
        if let Some(s) = source {
            self.admit(s)?;
        }
        // Before the source is known (body write key), read with the loosest limits of any source.
        let read_limits = source.map_or_else(|| self.workspace.widest_limits(), |s| s.limits);
        let mut body = self.decode(&raw, &req.headers, &read_limits).map_err(|e| self.fail(e, source))?;

        // 3. Otherwise the write key in the body (with or without a Bearer token, which we do not interpret).
        if source.is_none() {
            let key = ingest::body_write_key(&body).ok_or_else(|| {
                Failure::new(RequestError {
                    status: 401,
                    code: "missing_write_key",
                    message: "send the write key as Basic auth username or as writeKey in the body".into(),
                })
            })?;
            let s = self.source_for(key)?;
            self.admit(s)?;
            if s.limits != read_limits {
                body = self.decode(&raw, &req.headers, &s.limits).map_err(|e| self.fail(e, Some(s)))?;
            }
            source = Some(s);
        }
        let Some(source) = source else {
            return Err(Failure::new(RequestError { status: 401, code: "missing_write_key", message: String::new() }));
        };

        // 4. The pure pipeline.
        let ctx = RequestContext {
            received_at,
            source_ip: req.request_context.http.source_ip.clone(),
            user_agent: header(&req.headers, "user-agent")
                .map(str::to_string)
                .or_else(|| req.request_context.http.user_agent.clone()),
        };
        let Processed { accepted, rejected } =
            ingest::process(route, body, &ctx, &source.limits).map_err(|e| self.fail(e, Some(source)))?;
        if !route.is_batch() {
            // One event and it was refused: say so with a 400, there is nothing to accept.
            if let Some(r) = rejected.first() {
                return Err(self.fail(RequestError::bad_request(r.code, r.message.clone()), Some(source)));
            }
        }

        // 5. Durably queued before we answer.
        let bodies = ingest::pack(source.id.as_str(), &accepted, self.settings.max_message_bytes);
        self.enqueue(bodies).await.map_err(|e| self.fail(e, Some(source)))?;
        Ok(Accepted { source_id: source.id.to_string(), accepted: accepted.len(), rejected })
    }

    fn decode(&self, raw: &[u8], headers: &HeaderMap, limits: &Limits) -> Result<serde_json::Value, RequestError> {
        if raw.len() > limits.max_request_bytes {
            return Err(too_large(raw.len(), limits));
        }
        let encoding = header(headers, "content-encoding").unwrap_or("").trim().to_ascii_lowercase();
        let decoded;
        let bytes = match encoding.as_str() {
            "" | "identity" => raw,
            "gzip" | "x-gzip" => {
                decoded = ingest::gunzip_bounded(raw, limits.max_request_bytes)?;
                &decoded[..]
            }
            _ => {
                return Err(RequestError {
                    status: 415,
                    code: "unsupported_encoding",
                    message: "Content-Encoding must be gzip or absent".into(),
                })
            }
        };
        ingest::parse_body(bytes, limits)
    }

    fn source_for(&self, key: &str) -> Result<&SourceConfig, Failure> {
        let source = self.workspace.source_for_write_key(key).ok_or_else(|| {
            Failure::new(RequestError { status: 401, code: "invalid_write_key", message: "unknown write key".into() })
        })?;
        if !source.enabled {
            return Err(self.fail(
                RequestError { status: 404, code: "source_disabled", message: "this source is disabled".into() },
                Some(source),
            ));
        }
        Ok(source)
    }

    /// Token bucket per source (per running instance: each Lambda environment keeps its own).
    fn admit(&self, source: &SourceConfig) -> Result<(), Failure> {
        let Some(limit) = source.rate_limit else {
            return Ok(());
        };
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = buckets
            .entry(source.id.to_string())
            .or_insert_with(|| TokenBucket { tokens: limit.burst as f64, last: Instant::now() });
        let now = Instant::now();
        bucket.tokens = (bucket.tokens + now.duration_since(bucket.last).as_secs_f64() * limit.requests_per_second)
            .min(limit.burst as f64);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait = ((1.0 - bucket.tokens) / limit.requests_per_second).ceil().max(1.0) as u64;
        let mut f = self.fail(
            RequestError { status: 429, code: "rate_limited", message: "too many requests for this source".into() },
            Some(source),
        );
        f.retry_after = Some(wait);
        Err(f)
    }

    /// Sends every packed message, ≤ 10 per call, retrying the entries the queue refused with backoff.
    async fn enqueue(&self, bodies: Vec<String>) -> Result<(), RequestError> {
        let mut pending: Vec<OutgoingMessage> =
            bodies.into_iter().enumerate().map(|(i, body)| OutgoingMessage { id: i.to_string(), body }).collect();
        let mut delay = self.settings.send_backoff;
        for attempt in 1..=self.settings.send_attempts.max(1) {
            let mut failed_ids = Vec::new();
            let mut fatal = false;
            for chunk in pending.chunks(MAX_SEND_BATCH) {
                match self.queue.send_batch(chunk).await {
                    Ok(failures) => {
                        fatal |= failures.iter().any(|f| !f.retryable);
                        failed_ids.extend(failures.into_iter().map(|f| f.id));
                    }
                    Err(e) => {
                        fatal |= !e.is_retryable();
                        failed_ids.extend(chunk.iter().map(|m| m.id.clone()));
                    }
                }
            }
            if failed_ids.is_empty() {
                return Ok(());
            }
            tracing::warn!(attempt, failed = failed_ids.len(), fatal, "Events queue refused messages.");
            pending.retain(|m| failed_ids.contains(&m.id));
            if fatal {
                break;
            }
            if attempt < self.settings.send_attempts {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
        Err(RequestError {
            status: 503,
            code: "queue_unavailable",
            message: "events could not be queued; retry the request".into(),
        })
    }

    fn fail(&self, error: RequestError, source: Option<&SourceConfig>) -> Failure {
        Failure { error, source_id: source.map(|s| s.id.to_string()), retry_after: None }
    }

    fn emit_metrics(&self, route: Route, outcome: &Result<Accepted, Failure>) {
        let ts = (self.clock)().unix_timestamp() * 1000;
        let emf = match outcome {
            Ok(o) => {
                let mut emf = Emf::new()
                    .dimension("SourceId", &o.source_id)
                    .count("EventsAccepted", o.accepted as u64)
                    .count("EventsRejected", o.rejected.len() as u64);
                let mut by_code: Vec<(&str, u64)> = Vec::new();
                for r in &o.rejected {
                    match by_code.iter_mut().find(|(c, _)| *c == r.code) {
                        Some((_, n)) => *n += 1,
                        None => by_code.push((r.code, 1)),
                    }
                }
                for (code, n) in by_code {
                    emf = emf.count(&format!("EventsRejected.{code}"), n);
                }
                emf
            }
            Err(f) => Emf::new()
                .dimension("SourceId", f.source_id.as_deref().unwrap_or("unknown"))
                .count("RequestsRefused", 1)
                .count(&format!("RequestsRefused.{}", f.error.code), 1),
        };
        let emf = emf.dimension("Route", route.as_str());
        if let Some(line) = emf.line(ts) {
            self.metrics.emit(line);
        }
    }
}

struct Accepted {
    source_id: String,
    accepted: usize,
    rejected: Vec<ingest::Rejection>,
}

struct Failure {
    error: RequestError,
    source_id: Option<String>,
    retry_after: Option<u64>,
}

impl Failure {
    fn new(error: RequestError) -> Self {
        Failure { error, source_id: None, retry_after: None }
    }
}

struct TokenBucket {
    tokens: f64,
    last: Instant,
}

fn too_large(len: usize, limits: &Limits) -> RequestError {
    RequestError::bad_request(
        "request_too_large",
        format!("body of {len} bytes exceeds the limit of {} bytes", limits.max_request_bytes),
    )
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The write key of a `Basic` Authorization header: the username, with or without the trailing colon.
fn basic_write_key(headers: &HeaderMap) -> Result<Option<String>, RequestError> {
    let Some(auth) = header(headers, "authorization") else {
        return Ok(None);
    };
    let Some((scheme, creds)) = auth.trim().split_once(' ') else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(None);
    }
    let unauthorized =
        || RequestError { status: 401, code: "invalid_auth_header", message: "malformed Basic authorization".into() };
    let decoded = base64::engine::general_purpose::STANDARD.decode(creds.trim()).map_err(|_| unauthorized())?;
    let text = String::from_utf8(decoded).map_err(|_| unauthorized())?;
    let user = text.split_once(':').map_or(text.as_str(), |(u, _)| u);
    if user.is_empty() {
        return Err(unauthorized());
    }
    Ok(Some(user.to_string()))
}

fn insert_header(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

fn respond(status: u16, body: serde_json::Value) -> ApiGatewayV2httpResponse {
    let mut resp = ApiGatewayV2httpResponse::default();
    resp.status_code = status as i64;
    insert_header(&mut resp.headers, "content-type", "application/json");
    resp.body = Some(Body::Text(body.to_string()));
    resp
}

/// The `{"code","message"}` body every SDK knows how to read.
pub fn error_response(e: &RequestError) -> ApiGatewayV2httpResponse {
    respond(e.status, json!({"code": e.code, "message": e.message}))
}
