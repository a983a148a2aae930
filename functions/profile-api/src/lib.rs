//! The profile API: API Gateway HTTP API (payload 2.0) → management-key auth → the read path in
//! `tributary_core::profile::read` → JSON. Every route is a management route: it needs
//! `Authorization: Bearer <management key>`, and each route names the scopes that may call it.
//!
//! | route | scopes | audit row |
//! |---|---|---|
//! | `GET /v1/profiles/{type}:{value}` | `profiles:read`, `admin` | `profile.read` |
//! | `GET /v1/profiles/{type}:{value}/events` | `profiles:read`, `admin` | `profile.events` |
//! | `GET /v1/profiles/{type}:{value}/deliveries` | `profiles:read`, `admin` | `profile.deliveries` |
//! | `GET /v1/sources/{id}/stats` | `profiles:read`, `admin` | — |
//! | `GET /v1/sources/{id}/imports` | `profiles:read`, `admin` | — |
//! | `GET /v1/audit?date=&cursor=&limit=` | `admin` | — |
//! | `GET /v1/suppressions/{type}:{value}` | `admin`, `dsr` | `suppression.read` |
//! | `DELETE /v1/suppressions/{type}:{value}` | `admin` | `suppression.lift` |
//!
//! - `GET /v1/profiles/{type}:{value}`: the profile ([`ProfileView`]).
//! - `GET /v1/profiles/{type}:{value}/events?limit=N&cursor=C`: its history, newest first (`{"events","next"}`).
//! - `GET /v1/profiles/{type}:{value}/deliveries?limit=N&cursor=C`: what was delivered where — one receipt per
//!   (destination, event) with status, attempts and last error (`{"deliveries","next"}`).
//! - `GET /v1/sources/{id}/stats?since=T&until=T`: what governance did to the source's events over a window (RFC 3339
//!   bounds, default the last 24 hours), per event name and in total ([`Report`]).
//! - `GET /v1/sources/{id}/imports?limit=N`: the source's file imports, newest first.
//! - `GET /v1/audit?date=YYYY-MM-DD&limit=N&cursor=C`: the audit rows of one UTC day (default: today), **oldest
//!   first** (the order they were written), `limit` clamped to 1..=100 (default 50), paged like the events route:
//!   pass the answer's `next` back as `cursor` (`{"date","rows","next"}`).
//! - `GET /v1/suppressions/{type}:{value}`: whether the identifier (normalized as profile lookups are) was erased —
//!   its identity item, or for an email or phone that of its hashed form, is a suppression tombstone:
//!   `{"suppressed":true,"request","at","identifiers":[{"type","request","at"}]}`, else 404 `not_suppressed`.
//! - `DELETE /v1/suppressions/{type}:{value}`: lifts the suppression — deletes the tombstones of the identifier and
//!   of its hashed form, each only if it is still the tombstone read (version check: a live identity item is never
//!   deleted), in one transaction with the `suppression.lift` audit row; answers `{"lifted":[…]}`, or 404
//!   `not_suppressed` when there is nothing to lift. New events with the identifier then stitch normally.
//!
//! Scopes: `profiles:read` reads personal data and what the pipeline did with it; the source routes hold no
//! personal data but describe the pipeline's traffic, so they need the same scope (or `admin`) rather than none;
//! a `dsr`-only key reaches the suppression lookup and nothing else here. A missing or unknown key is 401, a known
//! key without a scope the route accepts is 403, both before the route's parameter is looked at.
//!
//! ## Audit log
//! Every request to an audited route that passed authorization (whatever its outcome: 200, 400, 404, 5xx) appends
//! an [`AuditRow`]: actor = the management key id, target = `sha256:<hex>` of the lookup's normalized `type:value`
//! (for an identifier, the hash in its identity item's key; for `profile_id:<id>`, of that string; for a lookup that
//! does not parse, of what was sent), outcome = the HTTP status, at = now. The row is written with a random nonce
//! and `NotExists` **before** the answer is sent; if it cannot be written the answer is 503 `audit_unavailable`
//! instead (fail closed: no unaudited read of personal data). A lift writes its row in the lift's own transaction.
//! Rows are never updated or deleted by this API.
//!
//! The handler is generic over the [`TableStore`] port, so the Lambda binary (DynamoDB) and `tributary serve`
//! (SQLite) run exactly this code. Lookups hold personal data: they never appear in errors, logs or audit rows,
//! only their SHA-256 does.

// The Lambda function's wiring on the AWS adapters: the binary's `main` and the emulator deployment test
// (tests/tests/aws_stack.rs) build the handler through it.
#[cfg(feature = "lambda")]
pub mod lambda;

use std::sync::Arc;
use std::time::Instant;

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use http::{HeaderMap, HeaderValue, Method};
use percent_encoding::percent_decode_str;
use serde_json::{json, Value};
use time::OffsetDateTime;
use tributary_core::config::{ManagementKey, Scope, WorkspaceConfig};
use tributary_core::dsr::record::AUDIT_PK_PREFIX;
use tributary_core::dsr::{suppressed_by, AuditRow, SUPPRESSED_AT_ATTR};
use tributary_core::governance::stats::{self, Window};
use tributary_core::identity::Identifier;
use tributary_core::ports::{Condition, Item, ItemKey, PortError, TableStore, TransactError, WriteOp};
use tributary_core::profile::layout::identity_key;
use tributary_core::profile::read::{self, Lookup, ReadError, DEFAULT_EVENTS_LIMIT, MAX_EVENTS_LIMIT};

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
/// The path prefix of the suppression routes.
const SUPPRESSIONS_PREFIX: &str = "/v1/suppressions/";
/// The audit log route.
const AUDIT_PATH: &str = "/v1/audit";
/// Where the management API's OpenAPI document is served (no key: it describes routes, not data).
const OPENAPI_PATH: &str = "/openapi.json";
/// The OpenAPI 3.1 document of the management API: this handler's routes and the DSR API's. Checked in beside the
/// workspace schema; `tests/tests/schemathesis.rs` runs schemathesis against `tributary serve` with it, and the tests
/// below check that every route is in it.
pub const OPENAPI_DOCUMENT: &str = include_str!("../../../schemas/openapi.json");
/// Imports listed by `GET /v1/sources/{id}/imports` unless `limit` says otherwise.
const DEFAULT_IMPORTS_LIMIT: usize = 50;
/// Longest accepted audit cursor (an audit sort key: 13 digits, `#`, a nonce).
const MAX_AUDIT_CURSOR_BYTES: usize = 96;
/// Attempts at appending one audit row (a fresh nonce each time).
const AUDIT_ATTEMPTS: usize = 3;
/// Attempts at lifting a suppression whose items change under it.
const LIFT_ATTEMPTS: usize = 3;

/// Audit actions written by this API.
pub const ACTION_PROFILE_READ: &str = "profile.read";
pub const ACTION_PROFILE_EVENTS: &str = "profile.events";
pub const ACTION_PROFILE_DELIVERIES: &str = "profile.deliveries";
pub const ACTION_SUPPRESSION_READ: &str = "suppression.read";
pub const ACTION_SUPPRESSION_LIFT: &str = "suppression.lift";

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
    AuditLog,
    Suppression,
}

impl Route {
    fn as_str(self) -> &'static str {
        match self {
            Route::Profile => "profile",
            Route::Events => "profile_events",
            Route::Deliveries => "profile_deliveries",
            Route::SourceStats => "source_stats",
            Route::SourceImports => "source_imports",
            Route::AuditLog => "audit_log",
            Route::Suppression => "suppression",
        }
    }

    /// The methods the route answers (its `Allow` header).
    fn allow(self) -> &'static str {
        match self {
            Route::Suppression => "GET, DELETE",
            _ => "GET",
        }
    }

    fn accepts(self, method: &Method) -> bool {
        method == Method::GET || (self == Route::Suppression && method == Method::DELETE)
    }

    /// The scopes that may call the route with `method` (any one of them suffices).
    fn scopes(self, method: &Method) -> &'static [Scope] {
        match self {
            Route::Profile | Route::Events | Route::Deliveries => &[Scope::ProfilesRead, Scope::Admin],
            Route::SourceStats | Route::SourceImports => &[Scope::ProfilesRead, Scope::Admin],
            Route::AuditLog => &[Scope::Admin],
            Route::Suppression if method == Method::DELETE => &[Scope::Admin],
            Route::Suppression => &[Scope::Admin, Scope::Dsr],
        }
    }

    /// The audit action of an authorized request, for the audited routes.
    fn audit_action(self, method: &Method) -> Option<&'static str> {
        match self {
            Route::Profile => Some(ACTION_PROFILE_READ),
            Route::Events => Some(ACTION_PROFILE_EVENTS),
            Route::Deliveries => Some(ACTION_PROFILE_DELIVERIES),
            Route::Suppression if method == Method::DELETE => Some(ACTION_SUPPRESSION_LIFT),
            Route::Suppression => Some(ACTION_SUPPRESSION_READ),
            Route::SourceStats | Route::SourceImports | Route::AuditLog => None,
        }
    }
}

fn scope_name(scope: Scope) -> &'static str {
    match scope {
        Scope::ProfilesRead => "profiles:read",
        Scope::Dsr => "dsr",
        Scope::Admin => "admin",
    }
}

type Clock = Arc<dyn Fn() -> OffsetDateTime + Send + Sync>;

pub struct ProfileApi<T: TableStore> {
    table: T,
    workspace: Arc<WorkspaceConfig>,
    clock: Clock,
}

/// What a handler produced, and whether its audit row is already written (a lift writes it in its transaction).
struct Answer {
    outcome: Result<Value, ApiError>,
    audited: bool,
}

impl From<Result<Value, ApiError>> for Answer {
    fn from(outcome: Result<Value, ApiError>) -> Self {
        Answer { outcome, audited: false }
    }
}

impl<T: TableStore> ProfileApi<T> {
    pub fn new(table: T, workspace: Arc<WorkspaceConfig>) -> Self {
        ProfileApi { table, workspace, clock: Arc::new(OffsetDateTime::now_utc) }
    }

    /// Replaces the wall clock (the default stats window ends now, audit rows are stamped now; tests pin it).
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
        if path.ends_with(OPENAPI_PATH) {
            return openapi(&req.request_context.http.method);
        }
        let Some((route, param)) = split_route(&path) else {
            return error_response(&ApiError::new(404, "not_found", "no such route"));
        };
        let method = req.request_context.http.method.clone();
        if !route.accepts(&method) {
            let message = format!("this route accepts {} only", route.allow());
            let mut resp = error_response(&ApiError::new(405, "method_not_allowed", message));
            insert_header(&mut resp.headers, "allow", route.allow());
            return resp;
        }
        let mut log = RequestLog::default();
        let outcome = self.dispatch(route, &method, param, &req, &mut log).await;
        let status = outcome.as_ref().map_or_else(|e| e.status, |_| 200);
        let code = outcome.as_ref().err().map_or("ok", |e| e.code);
        // Reading a profile is reading personal data: say who read which (hashed) lookup.
        tracing::info!(
            route = route.as_str(),
            method = method.as_str(),
            status,
            code,
            key_id = log.key_id.as_deref().unwrap_or("none"),
            lookup_sha256 = log.lookup_sha256.as_deref().unwrap_or("none"),
            source_id = log.source_id.as_deref().unwrap_or("none"),
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

    /// Authenticates and authorizes, runs the route, and appends the audit row of an audited route before the
    /// answer leaves (or answers 503 `audit_unavailable` if it cannot be written).
    async fn dispatch(
        &self,
        route: Route,
        method: &Method,
        param: &str,
        req: &ApiGatewayV2httpRequest,
        log: &mut RequestLog,
    ) -> Result<Value, ApiError> {
        // Authenticate before looking at the parameter, so strangers learn nothing about what exists.
        let key = self.authenticate(&req.headers)?;
        log.key_id = Some(key.id.clone());
        let allowed = route.scopes(method);
        if !key.scopes.iter().any(|s| allowed.contains(s)) {
            let names: Vec<&str> = allowed.iter().map(|s| scope_name(*s)).collect();
            return Err(ApiError::new(
                403,
                "forbidden",
                format!("this route needs a key with the {} scope", names.join(" or ")),
            ));
        }
        let answer: Answer = match route {
            Route::SourceStats => self.source_stats(param, req, log).await.into(),
            Route::SourceImports => self.source_imports(param, req, log).await.into(),
            Route::AuditLog => self.audit_log(req).await.into(),
            Route::Profile | Route::Events | Route::Deliveries => self.serve(route, param, req, log).await.into(),
            Route::Suppression if method == Method::DELETE => self.lift(param, &key.id, log).await,
            Route::Suppression => self.suppression(param, log).await.into(),
        };
        let Some(action) = route.audit_action(method) else {
            return answer.outcome;
        };
        if answer.audited {
            return answer.outcome;
        }
        let status = answer.outcome.as_ref().map_or_else(|e| e.status, |_| 200);
        let row = AuditRow {
            actor: key.id.clone(),
            action: action.to_string(),
            target: audit_target(log, param),
            outcome: status.to_string(),
            at: self.now_ms(),
            receipts: Vec::new(),
        };
        match self.append_audit(&row).await {
            Ok(()) => answer.outcome,
            Err(e) => {
                tracing::error!(error = %e, action, key_id = %key.id, "Audit row not written; the answer is withheld.");
                Err(audit_unavailable())
            }
        }
    }

    /// Appends one audit row under a fresh random nonce; never overwrites a row.
    async fn append_audit(&self, row: &AuditRow) -> Result<(), PortError> {
        let mut last = PortError::Unavailable("no attempt made".into());
        for _ in 0..AUDIT_ATTEMPTS {
            match self.table.write(audit_put(row)).await {
                Ok(()) => return Ok(()),
                // A taken nonce (never in practice), or a store that asks to try again: another nonce.
                Err(e) if e.is_retryable() || matches!(e, PortError::ConditionFailed(_)) => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    async fn serve(
        &self,
        route: Route,
        raw_lookup: &str,
        req: &ApiGatewayV2httpRequest,
        log: &mut RequestLog,
    ) -> Result<Value, ApiError> {
        let lookup = self.lookup(raw_lookup, log)?;

        // Query parameters before any read, so a bad one costs nothing.
        let page = match route {
            Route::Events => Some(events_params(req, read::valid_cursor)?),
            Route::Deliveries => Some(events_params(req, read::valid_deliveries_cursor)?),
            // Only the profile routes are served here.
            _ => None,
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

    /// Decodes and parses a `{type}:{value}` path parameter, noting its hash for the log and the audit row.
    fn lookup(&self, raw_lookup: &str, log: &mut RequestLog) -> Result<Lookup, ApiError> {
        // `tributary serve` hands over the path as sent (encoded). If a front hands it over decoded, decoding again
        // changes nothing unless the value itself holds `%` and two hex digits; such ids are rare enough to accept.
        let decoded = percent_decode_str(raw_lookup).decode_utf8().map_err(|_| {
            log.lookup_sha256 = Some(tributary_core::sha256_hex(raw_lookup.as_bytes()));
            ApiError::new(400, "invalid_lookup", "the lookup is not UTF-8 once percent-decoded")
        })?;
        let cc = self.workspace.profiles.default_country_code.as_deref();
        let lookup = read::parse_lookup(&decoded, cc).map_err(|message| {
            log.lookup_sha256 = Some(tributary_core::sha256_hex(decoded.as_bytes()));
            ApiError::new(400, "invalid_lookup", message)
        })?;
        log.lookup_sha256 = Some(lookup.log_hash());
        Ok(lookup)
    }

    /// The identifier a suppression route names (a profile id is not one).
    fn suppression_identifier(&self, raw_lookup: &str, log: &mut RequestLog) -> Result<Identifier, ApiError> {
        match self.lookup(raw_lookup, log)? {
            Lookup::Identifier(id) => Ok(id),
            Lookup::Profile(_) => Err(ApiError::new(
                400,
                "invalid_lookup",
                "a suppression names an identifier (<type>:<value>), not a profile id",
            )),
        }
    }

    /// The tombstones among the identity items of `id` and of its hashed form, as read now.
    async fn tombstones(&self, id: &Identifier) -> Result<Vec<Tombstone>, PortError> {
        let mut forms = vec![id.clone()];
        if id.hashed() != *id {
            forms.push(id.hashed());
        }
        // Point reads (`GetItem`), like every other read of this function.
        let keys: Vec<ItemKey> = forms.iter().map(identity_key).collect();
        let items = futures::future::try_join_all(keys.iter().map(|k| self.table.get(k))).await?;
        Ok(forms
            .into_iter()
            .zip(items)
            .filter_map(|(form, item)| {
                let item = item?;
                let request = suppressed_by(&item.attrs)?.to_string();
                let at = item.attrs.get(SUPPRESSED_AT_ATTR).and_then(Value::as_i64).unwrap_or(0);
                Some(Tombstone {
                    kind: form.kind.name().into_owned(),
                    key: item.key,
                    version: item.version,
                    request,
                    at,
                })
            })
            .collect())
    }

    /// `GET /v1/suppressions/{type}:{value}`.
    async fn suppression(&self, raw_lookup: &str, log: &mut RequestLog) -> Result<Value, ApiError> {
        let id = self.suppression_identifier(raw_lookup, log)?;
        let found = self.tombstones(&id).await.map_err(|e| suppression_store_error(&e))?;
        let Some(first) = found.first() else {
            return Err(not_suppressed());
        };
        Ok(json!({
            "suppressed": true,
            "request": first.request,
            "at": tributary_core::dsr::rfc3339(first.at),
            "identifiers": found.iter().map(Tombstone::view).collect::<Vec<_>>(),
        }))
    }

    /// `DELETE /v1/suppressions/{type}:{value}`: deletes the tombstones still as read, with the audit row, in one
    /// transaction.
    async fn lift(&self, raw_lookup: &str, actor: &str, log: &mut RequestLog) -> Answer {
        let id = match self.suppression_identifier(raw_lookup, log) {
            Ok(id) => id,
            Err(e) => return Err(e).into(),
        };
        for _ in 0..LIFT_ATTEMPTS {
            let found = match self.tombstones(&id).await {
                Ok(found) => found,
                Err(e) => return Err(suppression_store_error(&e)).into(),
            };
            if found.is_empty() {
                return Err(not_suppressed()).into();
            }
            let row = AuditRow {
                actor: actor.to_string(),
                action: ACTION_SUPPRESSION_LIFT.to_string(),
                target: audit_target(log, raw_lookup),
                outcome: "200".into(),
                at: self.now_ms(),
                receipts: Vec::new(),
            };
            let mut ops: Vec<WriteOp> = found
                .iter()
                .map(|t| WriteOp::Delete { key: t.key.clone(), condition: Condition::VersionIs(t.version) })
                .collect();
            ops.push(audit_put(&row));
            match self.table.transact(ops).await {
                Ok(()) => {
                    tracing::info!(
                        lookup_sha256 = log.lookup_sha256.as_deref().unwrap_or("none"),
                        lifted = found.len(),
                        "Suppression lifted."
                    );
                    let lifted: Vec<Value> = found.iter().map(Tombstone::view).collect();
                    return Answer { outcome: Ok(json!({ "lifted": lifted })), audited: true };
                }
                // A tombstone changed (or the nonce was taken) since the read: read again.
                Err(TransactError::ConditionFailed { .. }) => {}
                Err(TransactError::Port(e)) => return Err(suppression_store_error(&e)).into(),
            }
        }
        Err(ApiError::new(409, "conflict", "the suppression kept changing while being lifted; retry")).into()
    }

    /// `GET /v1/audit?date=YYYY-MM-DD&limit=N&cursor=C`: one day's audit rows, oldest first.
    async fn audit_log(&self, req: &ApiGatewayV2httpRequest) -> Result<Value, ApiError> {
        let date = match query_param(req, "date").filter(|d| !d.trim().is_empty()) {
            None => (self.clock)().date(),
            Some(d) => time::Date::parse(d.trim(), time::macros::format_description!("[year]-[month]-[day]"))
                .map_err(|_| ApiError::new(400, "invalid_date", "date must be a day as YYYY-MM-DD"))?,
        };
        let (limit, cursor) = events_params(req, valid_audit_cursor)?;
        let limit = limit.clamp(1, MAX_EVENTS_LIMIT);
        let pk = format!("{AUDIT_PK_PREFIX}{date}");
        let mut items: Vec<Item> = Vec::new();
        let mut after = cursor;
        let mut more = false;
        // A store may return a short page with a `next` (size caps): keep going until the page is full.
        while items.len() < limit {
            let page = self
                .table
                .query(&pk, "", after.as_deref(), limit - items.len())
                .await
                .map_err(|e| audit_store_error(&e))?;
            items.extend(page.items);
            match page.next {
                Some(next) if after.as_deref().is_none_or(|a| next.as_str() > a) => {
                    after = Some(next);
                    more = true;
                }
                _ => {
                    more = false;
                    break;
                }
            }
        }
        let next = if more { items.last().map(|i| i.key.sk.clone()) } else { None };
        let rows: Vec<Value> = items
            .iter()
            .filter_map(|i| AuditRow::from_attrs(&i.attrs).ok())
            .map(|r| {
                json!({
                    "actor": r.actor,
                    "action": r.action,
                    "target": r.target,
                    "outcome": r.outcome,
                    "at": read::rfc3339(r.at),
                })
            })
            .collect();
        Ok(json!({ "date": date.to_string(), "rows": rows, "next": next }))
    }

    /// The configured source a source route names. Only a configured id reaches the log; anything else is just
    /// "not found".
    fn source(&self, raw_id: &str, log: &mut RequestLog) -> Result<&tributary_core::config::SourceConfig, ApiError> {
        let id = percent_decode_str(raw_id).decode_utf8().ok();
        let source = id
            .as_deref()
            .and_then(|id| self.workspace.sources.iter().find(|s| s.id.as_str() == id))
            .ok_or_else(|| ApiError::new(404, "source_not_found", "no source has this id"))?;
        log.source_id = Some(source.id.to_string());
        Ok(source)
    }

    /// `GET /v1/sources/{id}/stats`: the source's governance counters over the requested window.
    async fn source_stats(
        &self,
        raw_id: &str,
        req: &ApiGatewayV2httpRequest,
        log: &mut RequestLog,
    ) -> Result<Value, ApiError> {
        let source = self.source(raw_id, log)?;
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
        log: &mut RequestLog,
    ) -> Result<Value, ApiError> {
        let source = self.source(raw_id, log)?;
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
        let imports: Vec<Value> = states.iter().map(import_view).collect();
        Ok(json!({ "sourceId": source.id.as_str(), "imports": imports }))
    }

    /// The management key named by `Authorization: Bearer <key>`; its scopes are checked per route.
    fn authenticate(&self, headers: &HeaderMap) -> Result<&ManagementKey, ApiError> {
        let unauthorized =
            || ApiError::new(401, "unauthorized", "send a management key as `Authorization: Bearer <key>`");
        let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).ok_or_else(unauthorized)?;
        let (scheme, token) = auth.trim().split_once(' ').ok_or_else(unauthorized)?;
        let token = token.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
            return Err(unauthorized());
        }
        self.workspace.management_key(token).ok_or_else(unauthorized)
    }
}

/// One suppression tombstone as read.
struct Tombstone {
    /// The identifier type of the form (`email`, `email_sha256`).
    kind: String,
    key: ItemKey,
    version: u64,
    request: String,
    /// Epoch ms.
    at: i64,
}

impl Tombstone {
    fn view(&self) -> Value {
        json!({"type": self.kind, "request": self.request, "at": tributary_core::dsr::rfc3339(self.at)})
    }
}

/// The put of an audit row under a fresh random nonce, which only a free key accepts.
fn audit_put(row: &AuditRow) -> WriteOp {
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    WriteOp::Put {
        item: Item { key: row.key(&nonce), attrs: row.to_attrs(), version: 1, expires_at: None },
        condition: Condition::NotExists,
    }
}

/// `sha256:<hex>` of the lookup as the request log names it (never the value itself).
fn audit_target(log: &RequestLog, raw: &str) -> String {
    let hash = log.lookup_sha256.clone().unwrap_or_else(|| tributary_core::sha256_hex(raw.as_bytes()));
    format!("sha256:{hash}")
}

/// Whether `cursor` could be an audit cursor (an audit row's sort key).
fn valid_audit_cursor(cursor: &str) -> bool {
    let Some((at, nonce)) = cursor.split_once('#') else { return false };
    cursor.len() <= MAX_AUDIT_CURSOR_BYTES
        && at.len() == 13
        && at.bytes().all(|b| b.is_ascii_digit())
        && !nonce.is_empty()
        && nonce.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn audit_unavailable() -> ApiError {
    ApiError::new(503, "audit_unavailable", "the audit log cannot be written, so nothing is answered; retry shortly")
}

fn not_suppressed() -> ApiError {
    ApiError::new(404, "not_suppressed", "this identifier is not suppressed")
}

fn suppression_store_error(e: &PortError) -> ApiError {
    if e.is_retryable() {
        tracing::warn!(error = %e, "Identity items unavailable.");
        ApiError::new(503, "unavailable", "the profile store is unavailable, retry shortly")
    } else {
        tracing::error!(error = %e, "Identity items read or write failed.");
        ApiError::new(500, "internal", "the suppression could not be read or changed")
    }
}

fn audit_store_error(e: &PortError) -> ApiError {
    if e.is_retryable() {
        tracing::warn!(error = %e, "Audit log unavailable.");
        ApiError::new(503, "unavailable", "the audit log is unavailable, retry shortly")
    } else {
        tracing::error!(error = %e, "Audit log read failed.");
        ApiError::new(500, "internal", "the audit log could not be read")
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

/// Who asked for what, for the request log (and the audit row's target).
#[derive(Default)]
struct RequestLog {
    key_id: Option<String>,
    lookup_sha256: Option<String>,
    /// The source of a stats request, once known to be configured.
    source_id: Option<String>,
}

/// The route and its still-encoded parameter: the `{type}:{value}` of a profile or suppression route, the source id
/// of a source route, nothing for the audit log. Everything after `/v1/profiles/` is the lookup (up to a final
/// `/events`): HTTP APIs may hand over `rawPath` already decoded, so a value's own `/` must not split it. The
/// earliest route prefix in the path wins, so a lookup that holds another route's prefix stays a lookup.
fn split_route(path: &str) -> Option<(Route, &str)> {
    let profiles = path.find(PREFIX);
    let sources = path.find(SOURCES_PREFIX);
    let suppressions = path.find(SUPPRESSIONS_PREFIX);
    let audit = [AUDIT_PATH.to_string(), format!("{AUDIT_PATH}/")]
        .iter()
        .find_map(|p| path.strip_suffix(p.as_str()).map(str::len));
    let earliest = [profiles, sources, suppressions, audit].into_iter().flatten().min()?;
    if audit == Some(earliest) {
        return Some((Route::AuditLog, ""));
    }
    if suppressions == Some(earliest) {
        let rest = &path[earliest + SUPPRESSIONS_PREFIX.len()..];
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        return (!rest.is_empty()).then_some((Route::Suppression, rest));
    }
    if let Some(at) = sources.filter(|at| *at == earliest) {
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

/// `GET /openapi.json`: the document as checked in, byte for byte. Unlike the data routes it may be cached.
fn openapi(method: &Method) -> ApiGatewayV2httpResponse {
    if method != Method::GET {
        let mut resp = error_response(&ApiError::new(405, "method_not_allowed", "this route accepts GET only"));
        insert_header(&mut resp.headers, "allow", "GET");
        return resp;
    }
    let mut resp = ApiGatewayV2httpResponse::default();
    resp.status_code = 200;
    insert_header(&mut resp.headers, "content-type", "application/json");
    insert_header(&mut resp.headers, "cache-control", "public, max-age=300");
    resp.body = Some(Body::Text(OPENAPI_DOCUMENT.to_string()));
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
        assert_eq!(split_route("/v1/audit"), Some((Route::AuditLog, "")));
        assert_eq!(split_route("/prod/v1/audit/"), Some((Route::AuditLog, "")));
        assert_eq!(split_route("/v1/audit/x"), None);
        assert_eq!(split_route("/v1/auditx"), None);
        assert_eq!(split_route("/v1/suppressions/email:a%40b.co"), Some((Route::Suppression, "email:a%40b.co")));
        assert_eq!(split_route("/prod/v1/suppressions/ext:x:a/b/"), Some((Route::Suppression, "ext:x:a/b")));
        assert_eq!(split_route("/v1/suppressions/"), None);
        assert_eq!(split_route("/v1/suppressions"), None);
        // A lookup that happens to hold another route's prefix is still a lookup.
        assert_eq!(split_route("/v1/profiles/ext:x:/v1/audit"), Some((Route::Profile, "ext:x:/v1/audit")));
        assert_eq!(
            split_route("/v1/suppressions/ext:x:/v1/profiles/a"),
            Some((Route::Suppression, "ext:x:/v1/profiles/a"))
        );
        assert_eq!(
            split_route("/v1/profiles/ext:x:/v1/suppressions/a/events"),
            Some((Route::Events, "ext:x:/v1/suppressions/a"))
        );
        // A profile lookup that happens to hold the other prefix is still a lookup.
        assert_eq!(
            split_route("/v1/profiles/ext:x:/v1/sources/web/stats"),
            Some((Route::Profile, "ext:x:/v1/sources/web/stats"))
        );
    }

    #[test]
    fn audit_cursors_are_sort_keys() {
        assert!(valid_audit_cursor("1741608000000#0f3a9c"));
        assert!(valid_audit_cursor("1741608000000#a-b_c"));
        for bad in ["", "#", "1741608000000#", "174160800000#ab", "1741608000000ab", "e#123", "1741608000000#a b"] {
            assert!(!valid_audit_cursor(bad), "{bad:?}");
        }
        assert!(!valid_audit_cursor(&format!("1741608000000#{}", "a".repeat(100))));
    }

    #[test]
    fn every_route_names_its_scopes() {
        for route in [Route::Profile, Route::Events, Route::Deliveries, Route::SourceStats, Route::SourceImports] {
            assert_eq!(route.scopes(&Method::GET), [Scope::ProfilesRead, Scope::Admin]);
        }
        assert_eq!(Route::AuditLog.scopes(&Method::GET), [Scope::Admin]);
        assert_eq!(Route::Suppression.scopes(&Method::GET), [Scope::Admin, Scope::Dsr]);
        assert_eq!(Route::Suppression.scopes(&Method::DELETE), [Scope::Admin]);
        assert!(!Route::Profile.accepts(&Method::DELETE));
        assert!(Route::Suppression.accepts(&Method::DELETE));
    }

    /// The published document and the router agree: every documented `/v1` operation is a route that accepts its
    /// method, and every route and method is documented (the DSR API's routes are checked in its own crate).
    #[test]
    fn the_openapi_document_describes_exactly_these_routes() {
        let doc: Value = serde_json::from_str(OPENAPI_DOCUMENT).expect("schemas/openapi.json is JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        let mut documented = std::collections::BTreeSet::new();
        for (template, item) in doc["paths"].as_object().expect("paths") {
            if !template.starts_with("/v1/") {
                continue;
            }
            let path = template.replace("{lookup}", "user_id:x").replace("{source}", "web");
            let (route, _) = split_route(&path).unwrap_or_else(|| panic!("{template} is not a route"));
            for method in item.as_object().expect("path item").keys().filter(|k| k.as_str() != "parameters") {
                let m = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).expect("a method");
                assert!(route.accepts(&m), "{method} {template}: the route does not accept it");
                documented.insert((route.as_str(), m.to_string()));
            }
        }
        let all = [
            Route::Profile,
            Route::Events,
            Route::Deliveries,
            Route::SourceStats,
            Route::SourceImports,
            Route::AuditLog,
            Route::Suppression,
        ];
        for route in all {
            for method in route.allow().split(", ") {
                assert!(documented.contains(&(route.as_str(), method.to_string())), "{method} {route:?} undocumented");
            }
        }
        assert!(doc["paths"]["/openapi.json"]["get"].is_object(), "the document describes itself");
    }
}
