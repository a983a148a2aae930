//! The DSR API: OpenDSR 2.0 (and legacy OpenGDPR) data subject requests over API Gateway HTTP API (payload 2.0).
//!
//! - `GET /opendsr/v2/discovery` (no auth): what this processor supports and where its certificate is.
//! - `GET /opendsr/v2/cert.pem` (no auth): the certificate whose key signs every answer.
//! - `POST /opendsr/v2/requests`: a new request (201), stored pending with its waiting-list entry and audit row in
//!   one transaction, then queued for the worker when there is no waiting period.
//! - `GET /opendsr/v2/requests/{id}`: its status (audited before answering; no audit, no answer).
//! - `DELETE /opendsr/v2/requests/{id}`: cancels a pending request (202) and queues its callbacks.
//! - `POST /opengdpr_requests`, `GET|DELETE /opengdpr_requests/{id}`: the same on OpenGDPR's names (§10.1):
//!   `regulation` optional, `X-OpenGDPR-*` headers.
//!
//! Every JSON answer, errors included, is signed: `X-OpenDSR-Processor-Domain` and `X-OpenDSR-Signature` (base64
//! RSA PKCS#1 v1.5 SHA-256 over the exact body bytes). Requests carry a management key with the `dsr` or `admin`
//! scope, as `Authorization: Bearer <key>` or `Basic base64(<anything>:<key>)` (mParticle's controllers use Basic).
//!
//! The handler is generic over the ports, so the Lambda binary (DynamoDB, SQS, S3) and `tributary serve` run
//! exactly this code. Identity values never reach the store, a log line or an error message: records keep only the
//! identity items' keys, and logs name request ids, key ids and status codes.

// The Lambda function's wiring on the AWS adapters: the binary's `main` and the emulator deployment test
// (tests/tests/aws_stack.rs) build the handler through it.
#[cfg(feature = "lambda")]
pub mod lambda;

pub mod signing;

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use base64::Engine as _;
use http::{HeaderMap, HeaderValue, Method};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use tributary_core::config::{ManagementKey, Scope, WorkspaceConfig};
use tributary_core::dsr::request::{error_body, is_lowercase_uuid_v4, MAX_BODY_BYTES};
use tributary_core::dsr::{
    discovery_body, parse_create, request_key, signature_headers, waiting_key, Api, AuditRow, DsrRecord, DsrTask,
    FieldError, RequestStatus, ResultLinks, Signer,
};
use tributary_core::lambda::{send_all, SendRetry};
use tributary_core::ports::{
    Condition, Item, ItemKey, OutgoingMessage, PortError, Queue, TableStore, TransactError, WriteOp,
};

pub use signing::{generate_self_signed, verify, RsaSigner};

/// The OpenDSR routes' prefix; anything before it (an API Gateway stage) is ignored.
const V2_PREFIX: &str = "/opendsr/v2/";
/// The legacy OpenGDPR route.
const LEGACY_PREFIX: &str = "/opengdpr_requests";
/// Where the certificate is served, under the same stage as discovery.
const CERT_PATH: &str = "/opendsr/v2/cert.pem";
/// Reads and writes of a cancel that may lose a race with the worker before giving up.
const CANCEL_TRIES: usize = 3;
/// The create's duplicate answer, worded as mParticle's controllers expect it.
const DUPLICATE_MESSAGE: &str = "Subject request already exists.";

/// An error answer: status, code, message and the OpenDSR `errors[]` list. Messages never hold an identity value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    pub errors: Vec<FieldError>,
}

impl ApiError {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), errors: Vec::new() }
    }

    fn not_found() -> Self {
        ApiError::new(404, "not_found", "no subject request has this id")
    }

    fn unavailable(what: &str) -> Self {
        ApiError::new(503, "unavailable", format!("{what} is unavailable, retry shortly"))
    }

    fn internal(what: &str) -> Self {
        ApiError::new(500, "internal", what.to_string())
    }

    /// The OpenDSR error body, with the platform's `code`/`message` pair beside it.
    pub fn body(&self) -> Value {
        error_body(self.status, self.code, &self.message, &self.errors)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Discovery,
    Certificate,
    /// `POST` a new request.
    Requests,
    /// One request, by its (still unchecked) id.
    Request(String),
}

impl Route {
    fn as_str(&self) -> &'static str {
        match self {
            Route::Discovery => "discovery",
            Route::Certificate => "certificate",
            Route::Requests => "requests",
            Route::Request(_) => "request",
        }
    }

    fn allow(&self) -> &'static str {
        match self {
            Route::Discovery | Route::Certificate => "GET",
            Route::Requests => "POST",
            Route::Request(_) => "GET, DELETE",
        }
    }
}

/// A route, whether it is a legacy (OpenGDPR) one, and the path before the route (an API Gateway stage).
fn split_route(path: &str) -> Option<(Route, bool, &str)> {
    if let Some(at) = path.find(V2_PREFIX) {
        let rest = &path[at + V2_PREFIX.len()..];
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let route = match rest {
            "discovery" => Route::Discovery,
            "cert.pem" => Route::Certificate,
            "requests" => Route::Requests,
            _ => match rest.strip_prefix("requests/") {
                Some(id) if !id.is_empty() && !id.contains('/') => Route::Request(id.to_string()),
                _ => return None,
            },
        };
        return Some((route, false, &path[..at]));
    }
    let at = path.find(LEGACY_PREFIX)?;
    let rest = &path[at + LEGACY_PREFIX.len()..];
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let route = match rest {
        "" => Route::Requests,
        _ => match rest.strip_prefix('/') {
            Some(id) if !id.is_empty() && !id.contains('/') => Route::Request(id.to_string()),
            _ => return None,
        },
    };
    Some((route, true, &path[..at]))
}

/// What the request log says about one request.
#[derive(Default)]
struct Log {
    key_id: Option<String>,
    /// The subject request id, once known to be a well-formed one.
    request_id: Option<String>,
}

type Clock = Arc<dyn Fn() -> OffsetDateTime + Send + Sync>;

pub struct DsrApi<T: TableStore, Q: Queue, S: Signer, L: ResultLinks> {
    table: T,
    queue: Q,
    signer: S,
    links: L,
    workspace: Arc<WorkspaceConfig>,
    certificate_url: Option<String>,
    clock: Clock,
}

impl<T: TableStore, Q: Queue, S: Signer, L: ResultLinks> DsrApi<T, Q, S, L> {
    /// `certificate_url` is discovery's `processor_certificate`; `None` serves this API's own `cert.pem` route at
    /// the domain the request came to.
    pub fn new(
        table: T,
        queue: Q,
        signer: S,
        links: L,
        workspace: Arc<WorkspaceConfig>,
        certificate_url: Option<String>,
    ) -> Self {
        DsrApi { table, queue, signer, links, workspace, certificate_url, clock: Arc::new(OffsetDateTime::now_utc) }
    }

    /// Replaces the wall clock (tests pin it).
    pub fn with_clock(mut self, clock: impl Fn() -> OffsetDateTime + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    fn now_ms(&self) -> i64 {
        i64::try_from((self.clock)().unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
    }

    /// Handles one API Gateway HTTP API request. Never fails: every outcome is an HTTP response.
    pub async fn handle(&self, req: ApiGatewayV2httpRequest) -> ApiGatewayV2httpResponse {
        let started = Instant::now();
        let path = req.raw_path.clone().or_else(|| req.request_context.http.path.clone()).unwrap_or_default();
        let Some((route, legacy, base)) = split_route(&path) else {
            return self.signed(404, &ApiError::new(404, "not_found", "no such route").body(), false);
        };
        let method = req.request_context.http.method.clone();
        let allowed = match &route {
            Route::Discovery | Route::Certificate => method == Method::GET,
            Route::Requests => method == Method::POST,
            Route::Request(_) => method == Method::GET || method == Method::DELETE,
        };
        if !allowed {
            let e = ApiError::new(405, "method_not_allowed", format!("this route accepts {}", route.allow()));
            let mut resp = self.signed(405, &e.body(), legacy);
            insert_header(&mut resp.headers, "allow", route.allow());
            return resp;
        }
        if route == Route::Certificate {
            return certificate_response(self.signer.certificate_pem());
        }

        let mut log = Log::default();
        let outcome = match &route {
            Route::Discovery => Ok((200, discovery_body(&self.certificate_url(&req, base)))),
            Route::Requests => self.create(&req, legacy, &mut log).await.map(|b| (201, b)),
            Route::Request(id) if method == Method::DELETE => self.cancel(id, &req, &mut log).await.map(|b| (202, b)),
            Route::Request(id) => self.status(id, &req, &mut log).await.map(|b| (200, b)),
            // Served above.
            Route::Certificate => Err(ApiError::internal("unreachable route")),
        };
        let status = outcome.as_ref().map_or_else(|e| e.status, |(s, _)| *s);
        let code = outcome.as_ref().err().map_or("ok", |e| e.code);
        tracing::info!(
            route = route.as_str(),
            method = method.as_str(),
            legacy,
            status,
            code,
            key_id = log.key_id.as_deref().unwrap_or("none"),
            request_id = log.request_id.as_deref().unwrap_or("none"),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "DSR request."
        );
        match outcome {
            Ok((status, body)) => self.signed(status, &body, legacy),
            Err(e) => {
                let mut resp = self.signed(e.status, &e.body(), legacy);
                match e.status {
                    401 => insert_header(&mut resp.headers, "www-authenticate", "Bearer"),
                    503 => insert_header(&mut resp.headers, "retry-after", "1"),
                    _ => {}
                }
                resp
            }
        }
    }

    /// `POST /opendsr/v2/requests` and `POST /opengdpr_requests`.
    async fn create(&self, req: &ApiGatewayV2httpRequest, legacy: bool, log: &mut Log) -> Result<Value, ApiError> {
        let key = self.authorize(&req.headers)?;
        log.key_id = Some(key.id.clone());
        let body = body_bytes(req)?;
        let api = if legacy { Api::LegacyV1 } else { Api::V2 };
        let cc = self.workspace.profiles.default_country_code.as_deref();
        let parsed = parse_create(&body, api, cc).map_err(|errors| ApiError {
            status: 400,
            code: "invalid_request",
            message: "the request is not valid; error.errors lists every problem".into(),
            errors,
        })?;
        log.request_id = Some(parsed.subject_request_id.clone());

        let dsr = &self.workspace.dsr;
        let now = self.now_ms();
        let waiting = if parsed.skip_waiting_period { 0 } else { dsr.waiting_ms() };
        let record = DsrRecord::new(&parsed, &key.id, legacy, now, dsr.completion_ms(), waiting);
        let mut waiting_attrs = Map::new();
        waiting_attrs.insert("id".into(), Value::String(record.id.clone()));
        // One transaction: the waiting entry is how the worker's sweep finds a request whose enqueue below failed.
        let ops = vec![
            put(request_key(&record.id), record.to_attrs(), 1, Condition::NotExists),
            put(waiting_key(record.not_before.unwrap_or(now), &record.id), waiting_attrs, 1, Condition::None),
            self.audit_op(&key.id, "dsr.create", &record.id, "201", now),
        ];
        match self.table.transact(ops).await {
            Ok(()) => {}
            Err(TransactError::ConditionFailed { index: 0 }) => {
                return Err(ApiError::new(409, "duplicate_request", DUPLICATE_MESSAGE));
            }
            // The audit row's random key already taken: vanishingly rare, and a retry picks another.
            Err(TransactError::ConditionFailed { .. }) => return Err(ApiError::unavailable("the request store")),
            Err(TransactError::Port(e)) => return Err(store_error(e, "create", &record.id)),
        }
        if waiting == 0 {
            if let Err(e) = self.enqueue(&[DsrTask::Process { id: record.id.clone() }]).await {
                // Stored with its waiting entry: the worker's sweep starts it anyway.
                tracing::warn!(error = %e, request_id = %record.id, "DSR task not queued; the sweep will start it.");
            }
        }
        Ok(record.created_body(&dsr.controller_id, &body))
    }

    /// `GET .../requests/{id}`.
    async fn status(&self, id: &str, req: &ApiGatewayV2httpRequest, log: &mut Log) -> Result<Value, ApiError> {
        let key = self.authorize(&req.headers)?;
        log.key_id = Some(key.id.clone());
        let (_, record) = self.load(id).await?;
        log.request_id = Some(record.id.clone());
        let now = self.now_ms();
        let results_url = match &record.result {
            Some(r) if r.expires_at > now => match self.links.link(&r.key, r.expires_at).await {
                Ok(url) => Some(url),
                Err(e) if e.is_retryable() => {
                    tracing::warn!(error = %e, request_id = %record.id, "Results link unavailable.");
                    return Err(ApiError::unavailable("the results link"));
                }
                Err(e) => {
                    // The status is still true without the link; the count stays.
                    tracing::error!(error = %e, request_id = %record.id, "Results link failed.");
                    None
                }
            },
            _ => None,
        };
        // Reading a request is reading about a person: no audit row, no answer.
        self.table.write(self.audit_op(&key.id, "dsr.status", &record.id, "200", now)).await.map_err(|e| {
            tracing::warn!(error = %e, request_id = %record.id, "Audit write failed; status refused.");
            ApiError::unavailable("the audit log")
        })?;
        let dsr = &self.workspace.dsr;
        Ok(record.status_body(&dsr.controller_id, results_url.as_deref(), &dsr.processor_domain))
    }

    /// `DELETE .../requests/{id}`: only a pending request can be cancelled.
    async fn cancel(&self, id: &str, req: &ApiGatewayV2httpRequest, log: &mut Log) -> Result<Value, ApiError> {
        let key = self.authorize(&req.headers)?;
        log.key_id = Some(key.id.clone());
        let mut cancelled = None;
        for attempt in 1..=CANCEL_TRIES {
            let (item, mut record) = self.load(id).await?;
            log.request_id = Some(record.id.clone());
            let now = self.now_ms();
            if record.transition(RequestStatus::Cancelled, now).is_err() {
                return Err(not_pending(record.status));
            }
            let stored = Item {
                key: item.key,
                attrs: record.to_attrs(),
                version: item.version + 1,
                expires_at: item.expires_at,
            };
            let ops = vec![
                WriteOp::Put { item: stored, condition: Condition::VersionIs(item.version) },
                WriteOp::Delete {
                    key: waiting_key(record.not_before.unwrap_or(record.received), &record.id),
                    condition: Condition::None,
                },
                self.audit_op(&key.id, "dsr.cancel", &record.id, "202", now),
            ];
            match self.table.transact(ops).await {
                Ok(()) => {
                    cancelled = Some(record);
                    break;
                }
                // The worker (or another cancel) changed it meanwhile: read it again.
                Err(TransactError::ConditionFailed { .. }) if attempt < CANCEL_TRIES => continue,
                Err(TransactError::ConditionFailed { .. }) => break,
                Err(TransactError::Port(e)) => return Err(store_error(e, "cancel", &record.id)),
            }
        }
        let Some(record) = cancelled else {
            return Err(ApiError::new(503, "unavailable", "the request is changing right now, retry shortly"));
        };
        let tasks: Vec<DsrTask> = (0..record.callbacks.len())
            .map(|url| DsrTask::Callback { id: record.id.clone(), status: RequestStatus::Cancelled, url })
            .collect();
        if let Err(e) = self.enqueue(&tasks).await {
            // The cancellation stands; the controller sees it on its next status read.
            tracing::error!(error = %e, request_id = %record.id, callbacks = tasks.len(), "Cancel callbacks not queued.");
        }
        let dsr = &self.workspace.dsr;
        Ok(record.status_body(&dsr.controller_id, None, &dsr.processor_domain))
    }

    /// The stored request `id` and its item (for the version). Ids that are not lowercase UUIDs were never stored.
    async fn load(&self, id: &str) -> Result<(Item, DsrRecord), ApiError> {
        if !is_lowercase_uuid_v4(id) {
            return Err(ApiError::not_found());
        }
        let item = match self.table.get(&request_key(id)).await {
            Ok(Some(item)) => item,
            Ok(None) => return Err(ApiError::not_found()),
            Err(e) => return Err(store_error(e, "read", id)),
        };
        let record = DsrRecord::from_attrs(&item.attrs).map_err(|e| {
            tracing::error!(error = %e, request_id = id, "Stored DSR record unreadable.");
            ApiError::internal("the request could not be read")
        })?;
        Ok((item, record))
    }

    fn audit_op(&self, actor: &str, action: &str, target: &str, outcome: &str, at: i64) -> WriteOp {
        let row = AuditRow {
            actor: actor.to_string(),
            action: action.to_string(),
            target: target.to_string(),
            outcome: outcome.to_string(),
            at,
            receipts: Vec::new(),
        };
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        put(row.key(&nonce), row.to_attrs(), 1, Condition::NotExists)
    }

    async fn enqueue(&self, tasks: &[DsrTask]) -> Result<(), PortError> {
        if tasks.is_empty() {
            return Ok(());
        }
        let messages: Vec<OutgoingMessage> =
            tasks.iter().enumerate().map(|(i, t)| OutgoingMessage { id: i.to_string(), body: t.to_body() }).collect();
        // One quick second try, no sleep: the handler has no runtime of its own, and a create is safe anyway.
        let retry = SendRetry { attempts: 2, backoff: Duration::ZERO };
        send_all(&self.queue, messages, retry, |_| std::future::ready(())).await
    }

    /// Discovery's `processor_certificate`: the configured URL, or this API's `cert.pem` at the domain (and stage)
    /// the request came to. API Gateway is HTTPS only; `tributary serve` (`apiId` `local`) is plain HTTP unless a
    /// proxy says otherwise, and its `domainName` is a placeholder, so the `Host` header names it.
    fn certificate_url(&self, req: &ApiGatewayV2httpRequest, base: &str) -> String {
        if let Some(url) = &self.certificate_url {
            return url.clone();
        }
        let ctx = &req.request_context;
        let local = ctx.apiid.as_deref() == Some("local");
        let header = |name: &str| req.headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
        let host_header = header("host").filter(|h| is_host(h));
        let domain = ctx.domain_name.as_deref().filter(|h| is_host(h));
        let host = if local { host_header.or(domain) } else { domain.or(host_header) };
        let scheme = match header("x-forwarded-proto") {
            Some(p) if local && p.eq_ignore_ascii_case("https") => "https",
            _ if local => "http",
            _ => "https",
        };
        let base = if base.bytes().all(|b| b.is_ascii_alphanumeric() || b"/-_.".contains(&b)) { base } else { "" };
        format!("{scheme}://{}{base}{CERT_PATH}", host.unwrap_or("localhost"))
    }

    /// The management key of `Authorization`, if it may handle data subject requests.
    fn authorize(&self, headers: &HeaderMap) -> Result<&ManagementKey, ApiError> {
        let unauthorized = || {
            ApiError::new(
                401,
                "unauthorized",
                "send a management key as `Authorization: Bearer <key>` or `Basic base64(<id>:<key>)`",
            )
        };
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_or_basic)
            .ok_or_else(unauthorized)?;
        let key = self.workspace.management_key(&token).ok_or_else(unauthorized)?;
        if !key.scopes.iter().any(|s| matches!(s, Scope::Dsr | Scope::Admin)) {
            return Err(ApiError::new(403, "forbidden", "this key lacks the dsr scope"));
        }
        Ok(key)
    }

    /// A JSON answer with the processor's signature over its exact bytes.
    fn signed(&self, status: u16, body: &Value, legacy: bool) -> ApiGatewayV2httpResponse {
        let text = body.to_string();
        let signature = match self.signer.sign(text.as_bytes()) {
            Ok(s) => s,
            Err(e) => {
                // An unsigned answer would be refused by the controller anyway; say what went wrong instead.
                tracing::error!(error = %e, status, "Answer could not be signed.");
                let e = ApiError::internal("the answer could not be signed");
                return respond(500, e.body().to_string());
            }
        };
        let (domain_header, signature_header) = signature_headers(legacy);
        let mut resp = respond(status, text);
        insert_header(&mut resp.headers, domain_header, &self.workspace.dsr.processor_domain);
        insert_header(&mut resp.headers, signature_header, &signature);
        resp
    }
}

fn not_pending(status: RequestStatus) -> ApiError {
    ApiError::new(
        409,
        "not_pending",
        format!("the request is {}; only a pending request can be cancelled", status.as_str()),
    )
}

fn put(key: ItemKey, attrs: Map<String, Value>, version: u64, condition: Condition) -> WriteOp {
    WriteOp::Put { item: Item { key, attrs, version, expires_at: None }, condition }
}

/// The request body as bytes: API Gateway hands binary bodies over base64-encoded. Bounded before and after
/// decoding, so an oversized body costs no parse.
fn body_bytes(req: &ApiGatewayV2httpRequest) -> Result<Vec<u8>, ApiError> {
    let too_large = || ApiError::new(413, "too_large", format!("the body is larger than {MAX_BODY_BYTES} bytes"));
    let Some(body) = req.body.as_deref() else { return Ok(Vec::new()) };
    let bytes = if req.is_base64_encoded {
        if body.len() > (MAX_BODY_BYTES / 3 + 2) * 4 {
            return Err(too_large());
        }
        base64::engine::general_purpose::STANDARD
            .decode(body.trim())
            .map_err(|_| ApiError::new(400, "invalid_request", "the body is marked base64 but is not"))?
    } else {
        body.as_bytes().to_vec()
    };
    if bytes.len() > MAX_BODY_BYTES {
        return Err(too_large());
    }
    Ok(bytes)
}

/// The key of `Bearer <key>`, or the password of `Basic base64(<id>:<key>)` (the user name when the password is
/// empty, as in Segment's `<key>:`).
fn bearer_or_basic(header: &str) -> Option<String> {
    let (scheme, rest) = header.trim().split_once(' ')?;
    let rest = rest.trim();
    let token = if scheme.eq_ignore_ascii_case("bearer") {
        rest.to_string()
    } else if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD.decode(rest).ok()?;
        let text = String::from_utf8(decoded).ok()?;
        match text.split_once(':') {
            Some((user, "")) => user.to_string(),
            Some((_, password)) => password.to_string(),
            None => text,
        }
    } else {
        return None;
    };
    (!token.is_empty()).then_some(token)
}

/// A host name with an optional port: nothing that could change the URL it is put in.
fn is_host(h: &str) -> bool {
    !h.is_empty() && h.len() <= 255 && h.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
}

fn store_error(e: PortError, op: &str, request_id: &str) -> ApiError {
    if e.is_retryable() {
        tracing::warn!(error = %e, op, request_id, "DSR store unavailable.");
        ApiError::unavailable("the request store")
    } else {
        tracing::error!(error = %e, op, request_id, "DSR store failed.");
        ApiError::internal("the request store failed")
    }
}

fn insert_header(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

fn respond(status: u16, body: String) -> ApiGatewayV2httpResponse {
    let mut resp = ApiGatewayV2httpResponse::default();
    resp.status_code = i64::from(status);
    insert_header(&mut resp.headers, "content-type", "application/json");
    // Answers are about people: no shared cache may keep them.
    insert_header(&mut resp.headers, "cache-control", "no-store");
    resp.body = Some(Body::Text(body));
    resp
}

fn certificate_response(pem: &str) -> ApiGatewayV2httpResponse {
    let mut resp = ApiGatewayV2httpResponse::default();
    resp.status_code = 200;
    insert_header(&mut resp.headers, "content-type", "application/x-pem-file");
    // Public, and controllers cache it for the certificate's lifetime anyway.
    insert_header(&mut resp.headers, "cache-control", "public, max-age=3600");
    resp.body = Some(Body::Text(pem.to_string()));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_routes() {
        let r = |p: &str| split_route(p).map(|(r, l, b)| (r, l, b.to_string()));
        assert_eq!(r("/opendsr/v2/discovery"), Some((Route::Discovery, false, String::new())));
        assert_eq!(r("/prod/opendsr/v2/cert.pem"), Some((Route::Certificate, false, "/prod".into())));
        assert_eq!(r("/opendsr/v2/requests/"), Some((Route::Requests, false, String::new())));
        assert_eq!(r("/opendsr/v2/requests/abc"), Some((Route::Request("abc".into()), false, String::new())));
        assert_eq!(r("/opendsr/v2/requests/abc/x"), None);
        assert_eq!(r("/opendsr/v2/requests//"), None);
        assert_eq!(r("/opendsr/v2/other"), None);
        assert_eq!(r("/opengdpr_requests"), Some((Route::Requests, true, String::new())));
        assert_eq!(r("/stage/opengdpr_requests/abc/"), Some((Route::Request("abc".into()), true, "/stage".into())));
        assert_eq!(r("/opengdpr_requestsx"), None);
        assert_eq!(r("/opengdpr_requests/a/b"), None);
        assert_eq!(r("/v1/profiles/x"), None);
    }

    /// The management API's published document (served by the profile API) lists exactly these routes and methods,
    /// on both the OpenDSR and the legacy OpenGDPR names.
    #[test]
    fn the_openapi_document_describes_exactly_these_routes() {
        let doc: Value = serde_json::from_str(include_str!("../../../schemas/openapi.json")).expect("JSON");
        let mut documented = std::collections::BTreeSet::new();
        for (template, item) in doc["paths"].as_object().expect("paths") {
            if !(template.starts_with("/opendsr/") || template.starts_with("/opengdpr_requests")) {
                continue;
            }
            let path = template.replace("{id}", "r-1");
            let (route, legacy, _) = split_route(&path).unwrap_or_else(|| panic!("{template} is not a route"));
            for method in item.as_object().expect("path item").keys().filter(|k| k.as_str() != "parameters") {
                let method = method.to_ascii_uppercase();
                assert!(route.allow().split(", ").any(|m| m == method), "{method} {template}: not accepted");
                documented.insert((route.as_str(), legacy, method));
            }
        }
        let all = [
            (Route::Discovery, false),
            (Route::Certificate, false),
            (Route::Requests, false),
            (Route::Request("r-1".into()), false),
            (Route::Requests, true),
            (Route::Request("r-1".into()), true),
        ];
        for (route, legacy) in all {
            for method in route.allow().split(", ") {
                let key = (route.as_str(), legacy, method.to_string());
                assert!(documented.contains(&key), "{key:?} is not documented");
            }
        }
    }

    #[test]
    fn reads_bearer_and_basic() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        assert_eq!(bearer_or_basic("Bearer k1").as_deref(), Some("k1"));
        assert_eq!(bearer_or_basic("bearer  k1 ").as_deref(), Some("k1"));
        assert_eq!(bearer_or_basic(&format!("Basic {}", b64("id:k2"))).as_deref(), Some("k2"));
        assert_eq!(bearer_or_basic(&format!("Basic {}", b64("k3:"))).as_deref(), Some("k3"));
        assert_eq!(bearer_or_basic(&format!("Basic {}", b64("id:k:4"))).as_deref(), Some("k:4"));
        assert_eq!(bearer_or_basic("Basic !!!"), None);
        assert_eq!(bearer_or_basic("Bearer "), None);
        assert_eq!(bearer_or_basic("Token k1"), None);
        assert_eq!(bearer_or_basic("k1"), None);
    }
}
