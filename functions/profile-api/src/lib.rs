//! The profile API: API Gateway HTTP API (payload 2.0) → management-key auth → the read path in
//! `tributary_core::profile::read` → JSON.
//!
//! - `GET /v1/profiles/{type}:{value}`: the profile ([`ProfileView`]).
//! - `GET /v1/profiles/{type}:{value}/events?limit=N&cursor=C`: its history, newest first (`{"events","next"}`).
//! - `GET /v1/profiles/{type}:{value}/deliveries?limit=N&cursor=C`: what was delivered where — one receipt per
//!   (destination, event) with status, attempts and last error (`{"deliveries","next"}`).
//! - `GET /v1/sources/{id}/stats?since=T&until=T`: what governance did to the source's events over a window (RFC 3339
//!   bounds, default the last 24 hours), per event name and in total ([`Report`]).
//!
//! The handler is generic over the [`TableStore`] port, so the Lambda binary (DynamoDB) and `tributary serve`
//! (SQLite) run exactly this code. Lookups hold personal data: they never appear in errors or logs, only their
//! SHA-256 does.

use std::sync::Arc;
use std::time::Instant;

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use http::{HeaderMap, HeaderValue, Method};
use percent_encoding::percent_decode_str;
use serde_json::json;
use time::OffsetDateTime;
use tributary_core::config::{ManagementKey, Scope, WorkspaceConfig};
use tributary_core::governance::stats::{self, Window};
use tributary_core::ports::{PortError, TableStore};
use tributary_core::profile::read::{self, Lookup, ReadError, DEFAULT_EVENTS_LIMIT};

pub use tributary_core::governance::stats::Report;
pub use tributary_core::profile::read::{EventsPage, ProfileView};

/// The path prefix of the profile routes; anything before it (an API Gateway stage) is ignored.
const PREFIX: &str = "/v1/profiles/";
const EVENTS_SUFFIX: &str = "/events";
const DELIVERIES_SUFFIX: &str = "/deliveries";
/// The path prefix of the source routes.
const SOURCES_PREFIX: &str = "/v1/sources/";
const STATS_SUFFIX: &str = "/stats";
const IMPORTS_SUFFIX: &str = "/imports";
/// Imports listed by `GET /v1/sources/{id}/imports` unless `limit` says otherwise.
const DEFAULT_IMPORTS_LIMIT: usize = 50;

/// An error answer: status and the `{"code","message"}` body. Messages never hold a lookup value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Profile,
    Events,
    Deliveries,
    SourceStats,
    SourceImports,
}

impl Route {
    fn as_str(self) -> &'static str {
        match self {
            Route::Profile => "profile",
            Route::Events => "profile_events",
            Route::Deliveries => "profile_deliveries",
            Route::SourceStats => "source_stats",
            Route::SourceImports => "source_imports",
        }
    }
}

type Clock = Arc<dyn Fn() -> OffsetDateTime + Send + Sync>;

pub struct ProfileApi<T: TableStore> {
    table: T,
    workspace: Arc<WorkspaceConfig>,
    clock: Clock,
}

impl<T: TableStore> ProfileApi<T> {
    pub fn new(table: T, workspace: Arc<WorkspaceConfig>) -> Self {
        ProfileApi { table, workspace, clock: Arc::new(OffsetDateTime::now_utc) }
    }

    /// Replaces the wall clock (the default stats window ends now; tests pin it).
    pub fn with_clock(mut self, clock: impl Fn() -> OffsetDateTime + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Handles one API Gateway HTTP API request. Never fails: every outcome is an HTTP response.
    pub async fn handle(&self, req: ApiGatewayV2httpRequest) -> ApiGatewayV2httpResponse {
        let started = Instant::now();
        let path = req.raw_path.clone().or_else(|| req.request_context.http.path.clone()).unwrap_or_default();
        let Some((route, raw_lookup)) = split_route(&path) else {
            return error_response(&ApiError::new(404, "not_found", "no such route"));
        };
        if req.request_context.http.method != Method::GET {
            let mut resp = error_response(&ApiError::new(405, "method_not_allowed", "these routes accept GET only"));
            insert_header(&mut resp.headers, "allow", "GET");
            return resp;
        }
        let mut audit = Audit { key_id: None, lookup_sha256: None, source_id: None };
        let outcome = match route {
            Route::SourceStats => self.source_stats(raw_lookup, &req, &mut audit).await,
            Route::SourceImports => self.source_imports(raw_lookup, &req, &mut audit).await,
            Route::Profile | Route::Events | Route::Deliveries => self.serve(route, raw_lookup, &req, &mut audit).await,
        };
        let status = outcome.as_ref().map_or_else(|e| e.status, |_| 200);
        let code = outcome.as_ref().err().map_or("ok", |e| e.code);
        // Reading a profile is reading personal data: say who read which (hashed) lookup.
        tracing::info!(
            route = route.as_str(),
            status,
            code,
            key_id = audit.key_id.as_deref().unwrap_or("none"),
            lookup_sha256 = audit.lookup_sha256.as_deref().unwrap_or("none"),
            source_id = audit.source_id.as_deref().unwrap_or("none"),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "Profile request."
        );
        match outcome {
            Ok(body) => respond(200, body),
            Err(e) => {
                let mut resp = error_response(&e);
                match e.status {
                    401 => insert_header(&mut resp.headers, "www-authenticate", "Bearer"),
                    503 => insert_header(&mut resp.headers, "retry-after", "1"),
                    _ => {}
                }
                resp
            }
        }
    }

    async fn serve(
        &self,
        route: Route,
        raw_lookup: &str,
        req: &ApiGatewayV2httpRequest,
        audit: &mut Audit,
    ) -> Result<serde_json::Value, ApiError> {
        // Authenticate before looking at the lookup, so strangers learn nothing about what exists.
        let key = self.authorize(&req.headers)?;
        audit.key_id = Some(key.id.clone());

        // `tributary serve` hands over the path as sent (encoded). If a front hands it over decoded, decoding again
        // changes nothing unless the value itself holds `%` and two hex digits; such ids are rare enough to accept.
        let decoded = percent_decode_str(raw_lookup).decode_utf8().map_err(|_| {
            audit.lookup_sha256 = Some(tributary_core::sha256_hex(raw_lookup.as_bytes()));
            ApiError::new(400, "invalid_lookup", "the lookup is not UTF-8 once percent-decoded")
        })?;
        let cc = self.workspace.profiles.default_country_code.as_deref();
        let lookup = read::parse_lookup(&decoded, cc).map_err(|message| {
            audit.lookup_sha256 = Some(tributary_core::sha256_hex(decoded.as_bytes()));
            ApiError::new(400, "invalid_lookup", message)
        })?;
        audit.lookup_sha256 = Some(lookup.log_hash());

        // Query parameters before any read, so a bad one costs nothing.
        let page = match route {
            // The source routes are served by their own methods, never here.
            Route::Profile | Route::SourceStats | Route::SourceImports => None,
            Route::Events => Some(events_params(req, read::valid_cursor)?),
            Route::Deliveries => Some(events_params(req, read::valid_deliveries_cursor)?),
        };
        let resolved = read::resolve(&self.table, &lookup).await.map_err(|e| store_error(e, &lookup))?;
        let Some(resolved) = resolved else {
            return Err(ApiError::new(404, "profile_not_found", "no profile matches this lookup"));
        };
        let body = match (route, page) {
            (Route::Deliveries, Some((limit, cursor))) => {
                read::deliveries(&self.table, &resolved, limit, cursor.as_deref()).await.map(serde_json::to_value)
            }
            (_, Some((limit, cursor))) => {
                read::events(&self.table, &resolved, limit, cursor.as_deref()).await.map(serde_json::to_value)
            }
            (_, None) => read::view(&self.table, &resolved).await.map(serde_json::to_value),
        };
        body.map_err(|e| store_error(e, &lookup))?
            .map_err(|_| ApiError::new(500, "internal", "the profile could not be encoded"))
    }

    /// The configured source a source route names, once the key is checked. Only a configured id reaches the
    /// log; anything else is just "not found".
    fn source(
        &self,
        raw_id: &str,
        req: &ApiGatewayV2httpRequest,
        audit: &mut Audit,
    ) -> Result<&tributary_core::config::SourceConfig, ApiError> {
        let key = self.authorize(&req.headers)?;
        audit.key_id = Some(key.id.clone());
        let id = percent_decode_str(raw_id).decode_utf8().ok();
        let source = id
            .as_deref()
            .and_then(|id| self.workspace.sources.iter().find(|s| s.id.as_str() == id))
            .ok_or_else(|| ApiError::new(404, "source_not_found", "no source has this id"))?;
        audit.source_id = Some(source.id.to_string());
        Ok(source)
    }

    /// `GET /v1/sources/{id}/stats`: the source's governance counters over the requested window.
    async fn source_stats(
        &self,
        raw_id: &str,
        req: &ApiGatewayV2httpRequest,
        audit: &mut Audit,
    ) -> Result<serde_json::Value, ApiError> {
        let source = self.source(raw_id, req, audit)?;
        let since = query_param(req, "since");
        let until = query_param(req, "until");
        let window = Window::parse(since.as_deref(), until.as_deref(), (self.clock)())
            .map_err(|e| ApiError::new(400, "invalid_time", e.to_string()))?;
        let report = stats::read(&self.table, source.id.as_str(), &window)
            .await
            .map_err(|e| stats_error(e, source.id.as_str()))?;
        serde_json::to_value(report).map_err(|_| ApiError::new(500, "internal", "the report could not be encoded"))
    }

    /// `GET /v1/sources/{id}/imports`: the source's file imports, newest first — status, counts, rejects per
    /// reason, and where the reports are.
    async fn source_imports(
        &self,
        raw_id: &str,
        req: &ApiGatewayV2httpRequest,
        audit: &mut Audit,
    ) -> Result<serde_json::Value, ApiError> {
        let source = self.source(raw_id, req, audit)?;
        let limit =
            match query_param(req, "limit") {
                None => DEFAULT_IMPORTS_LIMIT,
                Some(s) => s.trim().parse::<usize>().ok().filter(|n| (1..=1000).contains(n)).ok_or_else(|| {
                    ApiError::new(400, "invalid_limit", "limit must be a whole number from 1 to 1000")
                })?,
            };
        let states =
            tributary_core::import::source_states(&self.table, source.id.as_str(), limit).await.map_err(|e| {
                if e.is_retryable() {
                    tracing::warn!(error = %e, source_id = source.id.as_str(), "Import states unavailable.");
                    ApiError::new(503, "unavailable", "the import states are unavailable, retry shortly")
                } else {
                    tracing::error!(error = %e, source_id = source.id.as_str(), "Import states read failed.");
                    ApiError::new(500, "internal", "the import states could not be read")
                }
            })?;
        let imports: Vec<serde_json::Value> = states.iter().map(import_view).collect();
        Ok(serde_json::json!({ "sourceId": source.id.as_str(), "imports": imports }))
    }

    /// The management key named by `Authorization: Bearer <key>`, if it may read profiles.
    fn authorize(&self, headers: &HeaderMap) -> Result<&ManagementKey, ApiError> {
        let unauthorized =
            || ApiError::new(401, "unauthorized", "send a management key as `Authorization: Bearer <key>`");
        let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).ok_or_else(unauthorized)?;
        let (scheme, token) = auth.trim().split_once(' ').ok_or_else(unauthorized)?;
        let token = token.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
            return Err(unauthorized());
        }
        let hash = tributary_core::sha256_hex(token.as_bytes());
        // Every key is compared, in constant time, so timing says nothing about which hash prefix matched.
        let mut found = None;
        for key in &self.workspace.management_keys {
            if hashes_equal(hash.as_bytes(), key.key_sha256.as_str().as_bytes()) && found.is_none() {
                found = Some(key);
            }
        }
        let key = found.ok_or_else(unauthorized)?;
        if !key.scopes.iter().any(|s| matches!(s, Scope::ProfilesRead | Scope::Admin)) {
            return Err(ApiError::new(403, "forbidden", "this key lacks the profiles:read scope"));
        }
        Ok(key)
    }
}

/// One import as the API shows it.
fn import_view(s: &tributary_core::import::ImportState) -> serde_json::Value {
    let time = |ms: i64| tributary_core::profile::read::rfc3339(ms);
    let name = s.file.key.splitn(3, '/').nth(2).unwrap_or_default();
    serde_json::json!({
        "file": s.file.key,
        "version": s.file.version,
        "id": tributary_core::import::file_hash(&s.file),
        "status": s.status,
        "rows": s.rows,
        "accepted": s.accepted,
        "rejected": s.rejected,
        "reasons": s.reasons,
        "continuations": s.continuations,
        "bytesRead": s.offset,
        "size": s.size,
        "startedAt": time(s.started_at),
        "updatedAt": time(s.updated_at),
        "finishedAt": s.finished_at.and_then(time),
        "error": s.error,
        "rejectsReport": format!("import-reports/{}/{name}.rejects.csv", s.source_id),
        "summary": format!("import-reports/{}/{name}.summary.json", s.source_id),
    })
}

/// Who asked for what, for the request log.
struct Audit {
    key_id: Option<String>,
    lookup_sha256: Option<String>,
    /// The source of a stats request, once known to be configured.
    source_id: Option<String>,
}

/// The route and its still-encoded parameter: the `{type}:{value}` of a profile route, the source id of
/// `/v1/sources/{id}/stats`. Everything after `/v1/profiles/` is the lookup (up to a final `/events`): HTTP APIs may
/// hand over `rawPath` already decoded, so a value's own `/` must not split it.
fn split_route(path: &str) -> Option<(Route, &str)> {
    let profiles = path.find(PREFIX);
    if let Some(at) = path.find(SOURCES_PREFIX).filter(|at| profiles.is_none_or(|p| *at < p)) {
        let rest = &path[at + SOURCES_PREFIX.len()..];
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (route, id) = match (rest.strip_suffix(STATS_SUFFIX), rest.strip_suffix(IMPORTS_SUFFIX)) {
            (Some(id), _) => (Route::SourceStats, id),
            (_, Some(id)) => (Route::SourceImports, id),
            _ => return None,
        };
        return (!id.is_empty() && !id.contains('/')).then_some((route, id));
    }
    let (_, rest) = path.split_once(PREFIX)?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (route, lookup) = match (rest.strip_suffix(EVENTS_SUFFIX), rest.strip_suffix(DELIVERIES_SUFFIX)) {
        (Some(lookup), _) => (Route::Events, lookup),
        (_, Some(lookup)) => (Route::Deliveries, lookup),
        _ => (Route::Profile, rest),
    };
    (!lookup.is_empty()).then_some((route, lookup))
}

/// `limit` and `cursor` of the events and deliveries routes.
fn events_params(
    req: &ApiGatewayV2httpRequest,
    valid_cursor: fn(&str) -> bool,
) -> Result<(usize, Option<String>), ApiError> {
    let limit = match query_param(req, "limit") {
        None => DEFAULT_EVENTS_LIMIT,
        Some(s) => s
            .trim()
            .parse::<usize>()
            .map_err(|_| ApiError::new(400, "invalid_limit", "limit must be a whole number from 1 to 100"))?,
    };
    let cursor = query_param(req, "cursor").filter(|c| !c.is_empty());
    if cursor.as_deref().is_some_and(|c| !valid_cursor(c)) {
        return Err(invalid_cursor());
    }
    Ok((limit, cursor))
}

fn invalid_cursor() -> ApiError {
    ApiError::new(400, "invalid_cursor", "cursor must be a `next` value from an earlier page")
}

/// A query parameter, from `rawQueryString` (what `tributary serve` fills in) or else the parsed map.
fn query_param(req: &ApiGatewayV2httpRequest, name: &str) -> Option<String> {
    match req.raw_query_string.as_deref().filter(|q| !q.is_empty()) {
        Some(raw) => raw.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (form_decode(k) == name).then(|| form_decode(v))
        }),
        None => req.query_string_parameters.first(name).map(str::to_string),
    }
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, then percent escapes.
fn form_decode(s: &str) -> String {
    percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned()
}

fn store_error(e: ReadError, lookup: &Lookup) -> ApiError {
    match e {
        ReadError::InvalidCursor => invalid_cursor(),
        ReadError::Port(p) if p.is_retryable() => {
            tracing::warn!(error = %p, lookup_sha256 = %lookup.log_hash(), "Profile table unavailable.");
            ApiError::new(503, "unavailable", "the profile store is unavailable, retry shortly")
        }
        other => {
            tracing::error!(error = %other, lookup_sha256 = %lookup.log_hash(), "Profile read failed.");
            ApiError::new(500, "internal", "the profile could not be read")
        }
    }
}

fn stats_error(e: PortError, source_id: &str) -> ApiError {
    if e.is_retryable() {
        tracing::warn!(error = %e, source_id, "Stats table unavailable.");
        ApiError::new(503, "unavailable", "the stats store is unavailable, retry shortly")
    } else {
        tracing::error!(error = %e, source_id, "Stats read failed.");
        ApiError::new(500, "internal", "the stats could not be read")
    }
}

/// Equality of two equal-length hashes without an early exit.
fn hashes_equal(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

fn insert_header(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

fn respond(status: u16, body: serde_json::Value) -> ApiGatewayV2httpResponse {
    let mut resp = ApiGatewayV2httpResponse::default();
    resp.status_code = i64::from(status);
    insert_header(&mut resp.headers, "content-type", "application/json");
    // Profiles are personal data: no shared cache may keep them.
    insert_header(&mut resp.headers, "cache-control", "no-store");
    resp.body = Some(Body::Text(body.to_string()));
    resp
}

/// The `{"code","message"}` body of every error.
pub fn error_response(e: &ApiError) -> ApiGatewayV2httpResponse {
    respond(e.status, json!({"code": e.code, "message": e.message}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_routes() {
        assert_eq!(split_route("/v1/profiles/email:a%40b.co"), Some((Route::Profile, "email:a%40b.co")));
        assert_eq!(split_route("/prod/v1/profiles/user_id:42/events"), Some((Route::Events, "user_id:42")));
        assert_eq!(split_route("/v1/profiles/user_id:42/deliveries"), Some((Route::Deliveries, "user_id:42")));
        assert_eq!(split_route("/v1/profiles/user_id:42/"), Some((Route::Profile, "user_id:42")));
        assert_eq!(split_route("/v1/profiles/ext:x:a/b"), Some((Route::Profile, "ext:x:a/b")));
        assert_eq!(split_route("/v1/profiles/"), None);
        assert_eq!(split_route("/v1/profiles//events"), None);
        assert_eq!(split_route("/v1/profiles"), None);
        assert_eq!(split_route("/v1/track"), None);
        assert_eq!(split_route("/v1/sources/web/stats"), Some((Route::SourceStats, "web")));
        assert_eq!(split_route("/v1/sources/broker/imports"), Some((Route::SourceImports, "broker")));
        assert_eq!(split_route("/v1/sources/broker/imports/x"), None);
        assert_eq!(split_route("/prod/v1/sources/web/stats/"), Some((Route::SourceStats, "web")));
        assert_eq!(split_route("/v1/sources/web"), None);
        assert_eq!(split_route("/v1/sources//stats"), None);
        assert_eq!(split_route("/v1/sources/a/b/stats"), None);
        assert_eq!(split_route("/v1/sources/web/stats/x"), None);
        // A profile lookup that happens to hold the other prefix is still a lookup.
        assert_eq!(
            split_route("/v1/profiles/ext:x:/v1/sources/web/stats"),
            Some((Route::Profile, "ext:x:/v1/sources/web/stats"))
        );
    }

    #[test]
    fn compares_hashes() {
        assert!(hashes_equal(b"abcd", b"abcd"));
        assert!(!hashes_equal(b"abcd", b"abce"));
        assert!(!hashes_equal(b"abcd", b"abc"));
    }
}
