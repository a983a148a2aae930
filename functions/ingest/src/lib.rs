//! The ingest function: API Gateway HTTP API (payload 2.0) → authenticate → decode → the pure pipeline in
//! `tributary_core::ingest` → events queue. It answers 200 only once every accepted event is durably queued.
//!
//! The handler is generic over the [`Queue`] port, so the Lambda binary (SQS) and `tributary serve` (SQLite) run
//! exactly this code.
//!
//! Governance (a source's tracking plan and PII policy) is applied to every normalized event before anything is
//! queued: accepted events are queued (possibly minimized or with PII hashed/redacted), dropped ones are only counted,
//! and quarantined ones are written to the quarantine [`ObjectStore`] (see
//! [`tributary_core::governance::quarantine`]) before the answer, so a 200 means every event is either queued, held
//! or deliberately dropped.
//!
//! For governed sources, once the events are queued, what governance did is added to per-hour, per-event-name
//! counters in the profile [`TableStore`] (see [`tributary_core::governance::stats`]): one `add` per distinct event
//! name of the request. A failed counter write is logged and counted (`StatsWritesFailed`) but never fails the
//! request; ungoverned sources write nothing.
//!
//! Events of erased subjects are dropped right after normalization, before governance, when the handler has a
//! suppression list ([`Ingest::with_suppressions`]): an event with an identifier whose identity item is a
//! suppression tombstone (see [`tributary_core::dsr::suppression`]) is neither queued nor quarantined, only counted
//! (the `EventsSuppressed` metric, and the `suppressed` governance counter of a governed source). The answer is the
//! one any accepted event gets (a 200 whose `accepted` counts it), as Segment answers for suppressed users, so the
//! API does not tell a caller who was erased. The list is a per-container cache reloaded at most once a minute
//! (lazily: the first request after a cold start pays one small scan); if it cannot be loaded at all, events go
//! through and stitch, the authoritative check, drops them.

// The Lambda function's wiring on the AWS adapters: the binary's `main` and the emulator deployment test
// (tests/tests/aws_stack.rs) build the handler through it.
#[cfg(feature = "lambda")]
pub mod lambda;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use base64::Engine;
use futures::{StreamExt, TryStreamExt};
use http::{HeaderMap, HeaderValue, Method};
use serde_json::json;
use time::OffsetDateTime;
use tributary_core::config::{SourceConfig, WorkspaceConfig};
use tributary_core::dsr::suppression::{EventIdentifiers, Suppressions};
use tributary_core::governance::policy::{Governance, Governed, Outcome};
use tributary_core::governance::quarantine::{self, QuarantineRecord};
use tributary_core::governance::stats::{self, RequestStats};
use tributary_core::governance::{PiiKind, ViolationKind};
use tributary_core::ingest::{self, Limits, Processed, RequestContext, RequestError, Route};
use tributary_core::lambda::{send_all, SendRetry};
use tributary_core::metrics::Emf;
use tributary_core::ports::{
    Item, ItemKey, ObjectMeta, ObjectStore, OutgoingMessage, PortError, QueryPage, Queue, TableStore, TransactError,
    WriteOp,
};

/// Largest events-queue message we write. SQS accepts 1 MiB, but each 64 KiB chunk is billed as one request;
/// 256 KiB keeps a message to 4 chunks and under the Lambda async payload limit with room to spare.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// Quarantine puts in flight at once for one request: a large batch of held events must not take one round trip
/// each in sequence (the function has 10 s), nor open thousands of connections.
const QUARANTINE_PUT_CONCURRENCY: usize = 16;

/// Counter writes in flight at once for one request (one per distinct event name).
const STATS_WRITE_CONCURRENCY: usize = 16;

/// Longest a request waits for its counter writes: they must never hold the answer up for long (the function has
/// 10 s). Writes still pending then are abandoned and counted as failed.
const STATS_WRITE_BUDGET: Duration = Duration::from_secs(2);

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

/// The tracking API handler: queue `Q` for accepted events, metrics sink `M`, object store `S` for quarantined
/// events ([`NoQuarantineStore`] until [`Ingest::with_quarantine`] gives it one), table `T` for the governance
/// counters (none until [`Ingest::with_stats`] gives it one) and for the suppression list (none until
/// [`Ingest::with_suppressions`] gives it one).
pub struct Ingest<Q, M, S = NoQuarantineStore, T = NoStatsTable> {
    queue: Q,
    metrics: M,
    quarantine: S,
    stats: Option<T>,
    /// The suppressed identity items, cached; `None`: no event is checked.
    suppressions: Option<Suppressions<T>>,
    /// How an event's identifiers are read for the suppression check (as stitch reads them).
    event_ids: EventIdentifiers,
    workspace: Arc<WorkspaceConfig>,
    settings: IngestSettings,
    clock: Clock,
    buckets: Mutex<HashMap<String, TokenBucket>>,
    /// Source id → compiled governance, for the sources that configure any (compiled once, not per request).
    governance: HashMap<String, SourceGovernance>,
}

enum SourceGovernance {
    Ready(Governance),
    /// The source's tracking plan did not compile. `config::load` refuses such a file, so this only happens with a
    /// workspace built some other way; the source then answers 503 rather than letting ungoverned events through.
    Broken,
}

/// The quarantine store of a handler that was given none: every put is refused as unavailable, so a source that
/// quarantines answers 503 (and its events are retried by the SDK) instead of losing events.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoQuarantineStore;

impl ObjectStore for NoQuarantineStore {
    async fn put(&self, _: &str, _: Vec<u8>) -> Result<(), PortError> {
        Err(PortError::Unavailable("no quarantine store is configured".into()))
    }
    async fn get(&self, _: &str) -> Result<Option<Vec<u8>>, PortError> {
        Ok(None)
    }
    async fn get_range(&self, _: &str, _: u64, _: Option<u64>) -> Result<Option<Vec<u8>>, PortError> {
        Ok(None)
    }
    async fn head(&self, _: &str) -> Result<Option<ObjectMeta>, PortError> {
        Ok(None)
    }
    async fn list(&self, _: &str) -> Result<Vec<ObjectMeta>, PortError> {
        Ok(Vec::new())
    }
    async fn delete(&self, _: &str) -> Result<(), PortError> {
        Ok(())
    }
}

/// The type of the stats table of a handler that was given none ([`Ingest::with_stats`] was not called). It is never
/// asked anything: without a table, no counter is written. Reads find nothing, writes are refused.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoStatsTable;

impl TableStore for NoStatsTable {
    async fn get(&self, _: &ItemKey) -> Result<Option<Item>, PortError> {
        Ok(None)
    }
    /// Finds nothing, like `get`; the shapes every store refuses are refused.
    async fn get_many(&self, keys: &[ItemKey]) -> Result<Vec<Option<Item>>, PortError> {
        tributary_core::ports::check_get_many(keys)?;
        Ok(vec![None; keys.len()])
    }
    async fn query(&self, _: &str, _: &str, _: Option<&str>, _: usize) -> Result<QueryPage, PortError> {
        Ok(QueryPage { items: Vec::new(), next: None })
    }
    async fn transact(&self, _: Vec<WriteOp>) -> Result<(), TransactError> {
        Err(no_stats_table().into())
    }
    async fn write(&self, _: WriteOp) -> Result<(), PortError> {
        Err(no_stats_table())
    }
    async fn add(
        &self,
        _: &ItemKey,
        _: &[(String, i64)],
        _: serde_json::Map<String, serde_json::Value>,
        _: Option<i64>,
    ) -> Result<(), PortError> {
        Err(no_stats_table())
    }
    /// Finds nothing, like the other reads; bad arguments and cursors (it never hands one out) are refused.
    async fn scan_index(
        &self,
        index: &tributary_core::ports::SparseIndex,
        segment: u32,
        total_segments: u32,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<tributary_core::ports::KeyPage, PortError> {
        tributary_core::ports::check_scan(index, segment, total_segments, limit)?;
        if cursor.is_some() {
            return Err(PortError::Invalid("scan cursor is not one this store produced".into()));
        }
        Ok(tributary_core::ports::KeyPage { keys: Vec::new(), next: None })
    }
}

fn no_stats_table() -> PortError {
    PortError::Unavailable("no stats table is configured".into())
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
    /// Compiles each source's governance. A source whose governance does not compile is logged and answers 503
    /// `governance_unavailable`; the other sources keep working.
    pub fn new(queue: Q, metrics: M, workspace: Arc<WorkspaceConfig>, settings: IngestSettings) -> Self {
        let governance = compile_governance(&workspace);
        let event_ids = EventIdentifiers::for_workspace(&workspace);
        Ingest {
            queue,
            metrics,
            quarantine: NoQuarantineStore,
            stats: None,
            suppressions: None,
            event_ids,
            workspace,
            settings,
            clock: Arc::new(OffsetDateTime::now_utc),
            buckets: Mutex::new(HashMap::new()),
            governance,
        }
    }
}

fn compile_governance(workspace: &WorkspaceConfig) -> HashMap<String, SourceGovernance> {
    let mut out = HashMap::new();
    for s in &workspace.sources {
        // Sources without either setting skip governance entirely: their path is exactly the ungoverned one.
        if s.tracking_plan.is_none() && s.pii.is_none() {
            continue;
        }
        match Governance::new(s.tracking_plan.as_ref(), s.pii.as_ref()) {
            Ok(g) if g.is_noop() => {}
            Ok(g) => {
                out.insert(s.id.to_string(), SourceGovernance::Ready(g));
            }
            Err(e) => {
                // The error names the schema and quotes only the plan, never event data.
                tracing::error!(source_id = s.id.as_str(), error = %e, "Tracking plan does not compile; source refused.");
                out.insert(s.id.to_string(), SourceGovernance::Broken);
            }
        }
    }
    out
}

impl<Q: Queue, M: MetricsSink, S: ObjectStore, T: TableStore> Ingest<Q, M, S, T> {
    /// Where quarantined events are written (the archive bucket on AWS, the data dir's objects locally).
    pub fn with_quarantine<S2: ObjectStore>(self, store: S2) -> Ingest<Q, M, S2, T> {
        Ingest {
            queue: self.queue,
            metrics: self.metrics,
            quarantine: store,
            stats: self.stats,
            suppressions: self.suppressions,
            event_ids: self.event_ids,
            workspace: self.workspace,
            settings: self.settings,
            clock: self.clock,
            buckets: self.buckets,
            governance: self.governance,
        }
    }

    /// Where the governance counters of governed sources are kept (the profile table on AWS and locally). Call it
    /// before [`with_suppressions`](Self::with_suppressions): a suppression list over a table of another type is
    /// not kept.
    pub fn with_stats<T2: TableStore>(self, table: T2) -> Ingest<Q, M, S, T2> {
        Ingest {
            queue: self.queue,
            metrics: self.metrics,
            quarantine: self.quarantine,
            stats: Some(table),
            suppressions: None,
            event_ids: self.event_ids,
            workspace: self.workspace,
            settings: self.settings,
            clock: self.clock,
            buckets: self.buckets,
            governance: self.governance,
        }
    }

    /// Drops the events of erased subjects: the suppression list is read from `table` (the profile table; a scan
    /// of its `suppressed` index, lazily, then at most once a minute) and failed reloads are logged.
    pub fn with_suppressions(self, table: T) -> Self {
        let cache = Suppressions::new(table).on_reload_error(|error, stale| {
            if stale {
                tracing::warn!(error = %error, "Suppression list not reloaded; the last one stays in use.");
            } else {
                tracing::warn!(error = %error, "Suppression list not loaded; events are not checked until it is.");
            }
        });
        self.with_suppression_cache(cache)
    }

    /// [`with_suppressions`](Self::with_suppressions) with a cache configured by the caller (refresh interval,
    /// clock, failure hook).
    pub fn with_suppression_cache(mut self, cache: Suppressions<T>) -> Self {
        self.suppressions = Some(cache);
        self
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
                suppressed = o.suppressed,
                quarantined = o.governance.as_ref().map_or(0, |g| g.quarantined),
                dropped = o.governance.as_ref().map_or(0, |g| g.dropped),
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
            Ok(o) => {
                let (quarantined, dropped) = o.governance.as_ref().map_or((0, 0), |g| (g.quarantined, g.dropped));
                // Suppressed events are answered as accepted ones: the answer does not tell who was erased.
                respond(
                    200,
                    json!({"success": true, "accepted": o.accepted + o.suppressed, "rejected": o.rejected,
                           "quarantined": quarantined, "dropped": dropped}),
                )
            }
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
        let governance = self.governance_for(source)?;

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

        // 5. Events of erased subjects: dropped before governance (never queued nor quarantined), only counted.
        let (accepted, mut suppressed) = self.drop_suppressed(source, accepted).await;

        // 6. Governance: accept (possibly modified), drop, or hold. Held events are stored before anything is
        // queued, so a store failure leaves nothing of the request queued and the SDK's retry starts clean.
        let (accepted, tally) = match governance {
            None => (accepted, None),
            Some(g) => {
                let (kept, held, mut tally) = govern_all(g, source.id.as_str(), received_at, accepted);
                let held = self.drop_erased_held(held).await.map_err(|e| self.fail(e, Some(source)))?;
                suppressed.extend(held.1);
                self.hold(held.0).await.map_err(|e| self.fail(e, Some(source)))?;
                for name in &suppressed {
                    tally.stats.record(name.clone(), stats::Counts::suppressed());
                }
                (kept, Some(tally))
            }
        };

        // 7. Durably queued before we answer.
        let bodies = ingest::pack(source.id.as_str(), &accepted, self.settings.max_message_bytes);
        self.enqueue(bodies).await.map_err(|e| self.fail(e, Some(source)))?;

        // 8. Governance counters, only now that the events are queued (or held), and never failing the request.
        let mut tally = tally;
        if let Some(t) = tally.as_mut() {
            t.stats_failed = self.write_stats(source.id.as_str(), received_at, &t.stats).await;
        }
        Ok(Accepted {
            source_id: source.id.to_string(),
            accepted: accepted.len(),
            rejected,
            suppressed: suppressed.len(),
            governance: tally,
        })
    }

    /// Splits off the events with a suppressed identifier: the events to go on with, and the stats name of each
    /// one dropped. Without a suppression list, or with an empty one, the events are not even read. When no list
    /// could be loaded yet, nothing is dropped (stitch drops them; the cache logged why).
    async fn drop_suppressed(&self, source: &SourceConfig, events: Vec<Event>) -> (Vec<Event>, Vec<String>) {
        let Some(cache) = &self.suppressions else {
            return (events, Vec::new());
        };
        let list = match cache.current().await {
            Ok(list) => list,
            Err(e) => {
                tracing::debug!(source_id = source.id.as_str(), error = %e, "Suppression list unavailable; not checked.");
                return (events, Vec::new());
            }
        };
        if list.is_empty() {
            return (events, Vec::new());
        }
        let mut kept = Vec::with_capacity(events.len());
        let mut dropped = Vec::new();
        for event in events {
            if list.suppresses(&event, &self.event_ids) {
                dropped.push(stats::event_name(&event));
            } else {
                kept.push(event);
            }
        }
        if !dropped.is_empty() {
            // A count only: which events, and whose, is exactly what must not be logged.
            tracing::info!(
                source_id = source.id.as_str(),
                suppressed = dropped.len(),
                "Events of erased subjects dropped."
            );
        }
        (kept, dropped)
    }

    /// Adds the request's counts to the stats table, one `add` per distinct event name, concurrently and within
    /// [`STATS_WRITE_BUDGET`]. Returns how many adds failed (or were abandoned); failures are logged, not returned.
    async fn write_stats(&self, source_id: &str, received_at: OffsetDateTime, counts: &RequestStats) -> u64 {
        let Some(table) = &self.stats else {
            return 0;
        };
        let updates = counts.updates(source_id, received_at);
        let total = updates.len() as u64;
        if total == 0 {
            return 0;
        }
        let done = std::sync::atomic::AtomicU64::new(0);
        let failed = std::sync::atomic::AtomicU64::new(0);
        let writes = futures::stream::iter(updates).for_each_concurrent(STATS_WRITE_CONCURRENCY, |u| {
            let (done, failed) = (&done, &failed);
            async move {
                let result = table.add(&u.key, &u.deltas, u.set, Some(u.expires_at)).await;
                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let Err(e) = result {
                    failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    // Port errors name services and codes, never keys' event names or event values.
                    tracing::warn!(source_id, error = %e, "Governance counters could not be written.");
                }
            }
        });
        if tokio::time::timeout(STATS_WRITE_BUDGET, writes).await.is_err() {
            tracing::warn!(
                source_id,
                pending = total - done.load(std::sync::atomic::Ordering::Relaxed),
                "Governance counter writes took too long; abandoned."
            );
        }
        let finished = done.load(std::sync::atomic::Ordering::Relaxed);
        failed.load(std::sync::atomic::Ordering::Relaxed) + (total - finished)
    }

    fn governance_for(&self, source: &SourceConfig) -> Result<Option<&Governance>, Failure> {
        match self.governance.get(source.id.as_str()) {
            None => Ok(None),
            Some(SourceGovernance::Ready(g)) => Ok(Some(g)),
            Some(SourceGovernance::Broken) => Err(self.fail(
                RequestError {
                    status: 503,
                    code: "governance_unavailable",
                    message: "this source's tracking plan could not be loaded".into(),
                },
                Some(source),
            )),
        }
    }

    /// Writes the quarantine records. Keys are deterministic, so a retried request overwrites rather than
    /// duplicates; any failure refuses the request (the adapter has already retried transient errors).
    /// Events about to be quarantined are checked against the identity items themselves, not the cached list:
    /// a quarantined event never reaches stitch, so an erasure newer than the cache would otherwise leave the
    /// person in the archive. Quarantine is rare, so the reads are few. Returns the records to store and the event
    /// names of those dropped.
    async fn drop_erased_held(
        &self,
        held: Vec<(String, QuarantineRecord)>,
    ) -> Result<(Vec<(String, QuarantineRecord)>, Vec<String>), RequestError> {
        let Some(cache) = &self.suppressions else {
            return Ok((held, Vec::new()));
        };
        let unavailable = |e: PortError| {
            tracing::warn!(error = %e, "Identity items could not be read before quarantining.");
            RequestError {
                status: 503,
                code: "quarantine_unavailable",
                message: "events could not be quarantined; retry the request".into(),
            }
        };
        let mut kept = Vec::with_capacity(held.len());
        let mut dropped = Vec::new();
        for (key, record) in held {
            let keys: Vec<ItemKey> = record
                .subjects
                .iter()
                .take(tributary_core::ports::MAX_GET_MANY)
                .map(|h| ItemKey::new(format!("id#{h}"), tributary_core::profile::layout::IDENTITY_SK))
                .collect();
            let erased = if keys.is_empty() {
                false
            } else {
                let items = cache.table().get_many(&keys).await.map_err(unavailable)?;
                items.iter().flatten().any(|i| tributary_core::dsr::suppressed_by(&i.attrs).is_some())
            };
            if erased {
                dropped.push(
                    record.event.get("event").and_then(serde_json::Value::as_str).unwrap_or("(held)").to_string(),
                );
            } else {
                kept.push((key, record));
            }
        }
        Ok((kept, dropped))
    }

    async fn hold(&self, held: Vec<(String, QuarantineRecord)>) -> Result<(), RequestError> {
        if held.is_empty() {
            return Ok(());
        }
        let count = held.len();
        futures::stream::iter(held.into_iter().map(Ok::<_, PortError>))
            .try_for_each_concurrent(QUARANTINE_PUT_CONCURRENCY, |(key, record)| async move {
                // Cannot fail for JSON values; the error text is not kept in case it ever quoted one.
                let bytes = serde_json::to_vec(&record)
                    .map_err(|_| PortError::Invalid("quarantine record is not serializable".into()))?;
                self.quarantine.put(&key, bytes).await
            })
            .await
            .map_err(|e| {
                // Port errors name keys (hashed) and services, never event values.
                tracing::warn!(held = count, error = %e, "Quarantine store refused an event.");
                RequestError {
                    status: 503,
                    code: "quarantine_unavailable",
                    message: "events could not be quarantined; retry the request".into(),
                }
            })
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
        let messages =
            bodies.into_iter().enumerate().map(|(i, body)| OutgoingMessage { id: i.to_string(), body }).collect();
        let retry = SendRetry { attempts: self.settings.send_attempts, backoff: self.settings.send_backoff };
        send_all(&self.queue, messages, retry, tokio::time::sleep).await.map_err(|e| {
            tracing::warn!(error = %e, "Events queue refused messages.");
            RequestError {
                status: 503,
                code: "queue_unavailable",
                message: "events could not be queued; retry the request".into(),
            }
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
                    .count("EventsRejected", o.rejected.len() as u64)
                    .count("EventsSuppressed", o.suppressed as u64);
                if let Some(g) = &o.governance {
                    emf = g.metrics(emf);
                }
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
    /// Events queued.
    accepted: usize,
    rejected: Vec<ingest::Rejection>,
    /// Events of erased subjects, dropped.
    suppressed: usize,
    /// `None` when the source has no governance.
    governance: Option<Tally>,
}

/// What governance did to one request's events, for the answer and the metrics (counts only, never values).
#[derive(Default)]
struct Tally {
    quarantined: usize,
    dropped: usize,
    dropped_by_reason: BTreeMap<&'static str, u64>,
    properties_dropped: u64,
    pii_findings: BTreeMap<PiiKind, u64>,
    violations: BTreeMap<ViolationKind, u64>,
    /// By event name, for the stats table.
    stats: RequestStats,
    /// Counter writes that failed.
    stats_failed: u64,
}

impl Tally {
    fn record(&mut self, g: &Governed) {
        self.properties_dropped += g.dropped_properties as u64;
        for (kind, n) in &g.pii.findings_by_kind {
            *self.pii_findings.entry(*kind).or_insert(0) += *n as u64;
        }
        for v in &g.violations {
            *self.violations.entry(v.kind).or_insert(0) += 1;
        }
    }

    fn metrics(&self, mut emf: Emf) -> Emf {
        emf = emf
            .count("EventsQuarantined", self.quarantined as u64)
            .count("EventsDropped", self.dropped as u64)
            .count("PropertiesDropped", self.properties_dropped)
            .count("StatsWritesFailed", self.stats_failed);
        for (reason, n) in &self.dropped_by_reason {
            emf = emf.count(&format!("EventsDropped.{reason}"), *n);
        }
        for (kind, n) in &self.pii_findings {
            emf = emf.count(&format!("PiiFindings.{}", kind.as_str()), *n);
        }
        for (kind, n) in &self.violations {
            emf = emf.count(&format!("Violations.{}", kind.as_str()), *n);
        }
        emf
    }
}

type Event = serde_json::Map<String, serde_json::Value>;

/// Governs each event: the events to queue, the quarantine records to write (with their keys) and the tally.
fn govern_all(
    governance: &Governance,
    source_id: &str,
    received_at: OffsetDateTime,
    events: Vec<Event>,
) -> (Vec<Event>, Vec<(String, QuarantineRecord)>, Tally) {
    let mut kept = Vec::with_capacity(events.len());
    let mut held = Vec::new();
    let mut tally = Tally::default();
    for mut event in events {
        // The name before governance, which may rewrite the event (never its type or name, but read it first).
        let name = stats::event_name(&event);
        let governed = governance.govern(&mut event);
        tally.record(&governed);
        tally.stats.record(name, stats::Counts::of(&governed));
        match governed.outcome {
            Outcome::Accept => kept.push(event),
            Outcome::Drop { reason } => {
                tally.dropped += 1;
                *tally.dropped_by_reason.entry(reason).or_insert(0) += 1;
            }
            Outcome::Quarantine { plan_version } => {
                let message_id = event.get("messageId").and_then(serde_json::Value::as_str).unwrap_or_default();
                let key = quarantine::key_for(source_id, received_at, message_id);
                let record = QuarantineRecord::new(source_id, received_at, plan_version, governed.violations, event);
                held.push((key, record));
                tally.quarantined += 1;
            }
        }
    }
    (kept, held, tally)
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
