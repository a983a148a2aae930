//! The import function: partner (2P) and broker (3P) files dropped under `imports/<source-id>/` in the import
//! bucket become events on the events queue, as if the source had sent them.
//!
//! S3 announces each object on the import queue (an `ObjectCreated` notification); the function takes one record
//! at a time. Per object version:
//!
//! 1. The state item (`imp#<source>` / `f#<hash of bucket, key, version>`) says whether it is new, finished (a
//!    duplicate notification: nothing to do), or running. A running import is held by a lease; a message that
//!    finds the lease free resumes from the checkpoint, one that finds it held does nothing.
//! 2. The file is streamed with ranged GETs (gunzipped when `.gz`) through the bounded row parser of
//!    `tributary_core::import` on a blocking thread; each row becomes an event with a deterministic messageId
//!    (hash of bucket, key, version, row), so reading a row twice changes nothing downstream.
//! 3. Events are packed into events-queue messages as they come. Every `checkpoint_rows` rows, and when the
//!    invocation's time runs low, the checkpoint (byte offset, row, counts, CSV header) is written with the
//!    rejects read since the last one. Out of time, the function queues a continuation of itself.
//! 4. At the end, the reject report and a summary go to `import-reports/<source-id>/`, then the state says done
//!    or failed, with a message that quotes nothing from the file.
//!
//! With a suppression list ([`Import::with_suppressions`]), a row whose event has an identifier of an erased subject
//! (see [`tributary_core::dsr::suppression`]) is skipped before governance and before it is queued. It is counted
//! as `suppressed` in the state item and the summary, never as a reject: the reject report lists no such row, so it
//! cannot point at who was erased. The list is loaded once per invocation and refreshed (at most once a minute) at
//! the checkpoints; an invocation that cannot load it at all retries later, like one whose table fails.

// The Lambda function's wiring on the AWS adapters: the binary's `main` and the emulator deployment test
// (tests/tests/aws_stack.rs) build the handler through it.
#[cfg(feature = "lambda")]
pub mod lambda;

pub mod reader;
pub mod report;

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use time::OffsetDateTime;
use tokio::runtime::Handle;
use tributary_core::config::WorkspaceConfig;
use tributary_core::dsr::suppression::{EventIdentifiers, SuppressionList, Suppressions};
use tributary_core::governance::policy::{Governance, Outcome as GovernOutcome};
use tributary_core::import::{
    file_hash, import_object, reason, state_key, CheckedMapping, EventBuffers, FileMapping, Format, Header,
    ImportError, ImportObject, ImportState, ImportStatus, Row, RowReject, Rows,
};
use tributary_core::ingest::Envelope;
use tributary_core::lambda::{send_all, SendRetry};
use tributary_core::metrics::{Emf, MetricsSink};
use tributary_core::ports::{Condition, Item, ObjectStore, OutgoingMessage, PortError, Queue, TableStore, WriteOp};

use report::{part_key, parts_prefix, reject_lines, report_key, Summary, REJECTS_HEADER};

type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// How imports run. The defaults suit Lambda; tests shrink them to force continuations.
#[derive(Debug, Clone)]
pub struct ImportSettings {
    /// The bucket imports arrive in; notifications from any other are ignored.
    pub bucket: String,
    /// Bytes per ranged GET.
    pub chunk_bytes: u64,
    /// Events per flush to the events queue.
    pub batch_rows: usize,
    /// Rows between checkpoints.
    pub checkpoint_rows: u64,
    /// Time kept in reserve: with less left, the import checkpoints and continues in a new invocation.
    pub reserve: Duration,
    /// Rows one invocation reads at most before continuing (tests force continuations with it).
    pub max_rows_per_run: Option<u64>,
    /// Lease of an invocation without a deadline (the local runtime), renewed at each checkpoint.
    pub lease: Duration,
    /// Rejected rows the report lists at most (every reject is counted).
    pub max_listed_rejects: u64,
    /// Largest events-queue message.
    pub max_message_bytes: usize,
    /// A file whose first this-many rows are all unreadable (not UTF-8, not JSON, broken quoting…) is failed.
    pub unreadable_rows: u64,
}

impl ImportSettings {
    pub fn new(bucket: impl Into<String>) -> ImportSettings {
        ImportSettings {
            bucket: bucket.into(),
            chunk_bytes: 8 * 1024 * 1024,
            batch_rows: 500,
            checkpoint_rows: 10_000,
            reserve: Duration::from_secs(60),
            max_rows_per_run: None,
            lease: Duration::from_secs(15 * 60),
            max_listed_rejects: 100_000,
            max_message_bytes: 256 * 1024,
            unreadable_rows: 1_000,
        }
    }
}

/// A continuation of an import, queued on the import queue by the invocation that ran out of time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Continuation {
    pub bucket: String,
    /// As S3 notifications carry it (form-encoded).
    pub key: String,
    pub version: Option<String>,
    pub size: u64,
    /// The continuation's number (1 for the first).
    pub part: u32,
}

#[derive(Debug, Deserialize)]
struct ContinuationBody {
    continuation: Continuation,
}

/// One object to work on, from a notification or a continuation.
#[derive(Debug, Clone)]
struct Job {
    bucket: String,
    raw_key: String,
    version: Option<String>,
    size: u64,
}

/// What became of one object in one invocation.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Done,
    Failed,
    /// Handed to a continuation.
    Continued,
    /// Nothing to do: a duplicate, an import someone else holds, or not an import at all.
    Skipped(&'static str),
    /// Could not go on now (the store or the queue failed); the record comes back and resumes from the checkpoint.
    Retry(String),
}

struct Ports<T, Q, O, M> {
    table: T,
    events: Q,
    imports: Q,
    objects: O,
    metrics: M,
    workspace: Arc<WorkspaceConfig>,
    mappings: BTreeMap<String, CheckedMapping>,
    /// Each source's tracking plan and PII policy, applied to imported events as ingest applies them to SDK
    /// events; `Err` when they do not compile (the source's files fail).
    governance: BTreeMap<String, Result<Governance, String>>,
    settings: ImportSettings,
    /// The suppressed identity items, cached; `None`: no row is checked.
    suppressions: Option<Suppressions<T>>,
    /// How an event's identifiers are read for the suppression check (as stitch reads them).
    event_ids: EventIdentifiers,
}

/// The handler, generic over its ports: the profile table (import states), the events queue, the import queue
/// (for continuations), the import bucket and the metrics sink.
pub struct Import<T, Q, O, M> {
    ports: Arc<Ports<T, Q, O, M>>,
    clock: Clock,
}

/// Why an import stopped, decided on the blocking thread.
enum End {
    Done,
    Failed(String),
    Continue,
    Retry(String),
    /// Another invocation took the import over (the lease was lost): stop without writing.
    Lost,
}

impl<T, Q, O, M> Import<T, Q, O, M>
where
    T: TableStore + 'static,
    Q: Queue + 'static,
    O: ObjectStore + 'static,
    M: MetricsSink + 'static,
{
    /// Mappings are checked here; a source whose mapping does not check has none (its files fail with a message).
    pub fn new(
        table: T,
        events: Q,
        imports: Q,
        objects: O,
        metrics: M,
        workspace: Arc<WorkspaceConfig>,
        settings: ImportSettings,
    ) -> Self {
        let mappings = workspace
            .sources
            .iter()
            .filter_map(|s| Some((s.id.as_str().to_string(), s.import.as_ref()?.check().ok()?)))
            .collect();
        let governance = workspace
            .sources
            .iter()
            .filter(|s| s.import.is_some())
            .map(|s| {
                let g = Governance::new(s.tracking_plan.as_ref(), s.pii.as_ref()).map_err(|e| e.to_string());
                (s.id.as_str().to_string(), g)
            })
            .collect();
        let clock: Clock = Arc::new(|| (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64);
        let event_ids = EventIdentifiers::for_workspace(&workspace);
        let ports = Ports {
            table,
            events,
            imports,
            objects,
            metrics,
            workspace,
            mappings,
            governance,
            settings,
            suppressions: None,
            event_ids,
        };
        Import { ports: Arc::new(ports), clock }
    }

    /// Skips the rows of erased subjects: the suppression list is read from `table` (the profile table; a scan of
    /// its `suppressed` index, at most once a minute) and failed reloads are logged.
    pub fn with_suppressions(self, table: T) -> Self {
        let cache = Suppressions::new(table).on_reload_error(|error, stale| {
            if stale {
                tracing::warn!(error = %error, "Suppression list not reloaded; the last one stays in use.");
            } else {
                tracing::warn!(error = %error, "Suppression list not loaded; imports wait until it is.");
            }
        });
        self.with_suppression_cache(cache)
    }

    /// [`with_suppressions`](Self::with_suppressions) with a cache configured by the caller (refresh interval,
    /// clock, failure hook).
    pub fn with_suppression_cache(mut self, cache: Suppressions<T>) -> Self {
        match Arc::get_mut(&mut self.ports) {
            Some(ports) => ports.suppressions = Some(cache),
            // Only while an import runs is the handler shared, and builders are called before any does.
            None => tracing::error!("Suppression list set on a running import handler; ignored."),
        }
        self
    }

    /// Replaces the clock (epoch milliseconds), for tests.
    pub fn with_clock(mut self, clock: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    pub fn table(&self) -> &T {
        &self.ports.table
    }

    /// The Lambda handler. `deadline`: when the invocation ends (Lambda's context); `None` runs without a limit
    /// (the local runtime). A record fails only when it should come back (the store or a queue failed).
    pub async fn handle(&self, event: SqsEvent, deadline: Option<Instant>) -> SqsBatchResponse {
        let mut failures = Vec::new();
        for record in event.records {
            let id = record.message_id.clone().unwrap_or_default();
            let jobs = match parse_body(record.body.as_deref().unwrap_or("")) {
                Ok(jobs) => jobs,
                Err(e) => {
                    // Left to the queue's redrive policy: it ends in the DLQ for someone to look at.
                    tracing::warn!(record = %id, error = e, "Import queue record is neither a notification nor a continuation.");
                    failures.push(id);
                    continue;
                }
            };
            let mut retry = false;
            for job in jobs {
                if let Outcome::Retry(e) = self.run(job, deadline).await {
                    tracing::warn!(record = %id, error = %e, "Import interrupted; the record comes back.");
                    retry = true;
                }
            }
            if retry {
                failures.push(id);
            }
        }
        tributary_core::lambda::batch_response(failures)
    }

    async fn run(&self, job: Job, deadline: Option<Instant>) -> Outcome {
        let outcome = self.run_object(job, deadline).await;
        let (name, n) = match &outcome {
            Outcome::Done => ("ImportsDone", 1),
            Outcome::Failed => ("ImportsFailed", 1),
            Outcome::Continued => ("ImportContinuations", 1),
            Outcome::Skipped(_) => ("ImportsSkipped", 1),
            Outcome::Retry(_) => ("ImportRetries", 1),
        };
        if let Some(line) = Emf::new().dimension("Function", "import").count(name, n).line((self.clock)()) {
            self.ports.metrics.emit(line);
        }
        outcome
    }

    /// One object: claim it, read it on a blocking thread, then continue, finish or fail it.
    async fn run_object(&self, job: Job, deadline: Option<Instant>) -> Outcome {
        let p = &self.ports;
        let clock = Arc::clone(&self.clock);
        let object = match import_object(&job.bucket, &job.raw_key, job.version.as_deref(), job.size) {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(reason = %e, "Notification for an object that is not an import.");
                return Outcome::Skipped("not_an_import");
            }
        };
        if object.file.bucket != p.settings.bucket {
            tracing::warn!("Notification from a bucket other than the import bucket.");
            return Outcome::Skipped("other_bucket");
        }
        let source = object.source_id.as_str().to_string();
        let key = state_key(&source, &object.file);
        let file = file_hash(&object.file);
        let now = clock();
        let (mut state, version, suppressed) = match p.table.get(&key).await {
            Err(e) => return Outcome::Retry(format!("import state unavailable: {e}")),
            Ok(Some(item)) => {
                let suppressed = item.attrs.get(SUPPRESSED_ROWS_ATTR).and_then(Value::as_u64).unwrap_or(0);
                match serde_json::from_value::<ImportState>(Value::Object(item.attrs)) {
                    Ok(s) => (s, item.version, suppressed),
                    Err(_) => return Outcome::Retry("import state unreadable".into()),
                }
            }
            Ok(None) => (ImportState::start(&object, now), 0, 0),
        };
        if state.is_finished() {
            tracing::info!(source = %source, file = %file, "Import already finished; duplicate notification ignored.");
            return Outcome::Skipped("already_finished");
        }
        if state.lease_until > now {
            tracing::info!(source = %source, file = %file, "Import held by another invocation.");
            return Outcome::Skipped("held");
        }
        // Claim it: the lease covers this invocation (and a margin) so a duplicate message leaves it alone.
        let lease_ms = match deadline {
            Some(d) => d.saturating_duration_since(Instant::now()).as_millis() as i64 + 60_000,
            None => p.settings.lease.as_millis() as i64,
        };
        state.lease_until = now + lease_ms;
        state.updated_at = now;
        let version = match write_state(&p.table, &state, suppressed, version).await {
            Ok(v) => v,
            Err(WriteFail::Conflict) => return Outcome::Skipped("held"),
            Err(WriteFail::Store(e)) => return Outcome::Retry(e),
        };

        // Problems with the source or its mapping fail the file at once, with a message.
        let checked = match source_problem(&p.workspace, &p.mappings, &object) {
            Ok(m) => m.clone(),
            Err(message) => return self.finish(state, version, suppressed, End::Failed(message), &file).await,
        };
        if let Some(Err(e)) = p.governance.get(&source) {
            let message = format!("bad_governance: the source's tracking plan does not compile: {e}");
            return self.finish(state, version, suppressed, End::Failed(message), &file).await;
        }
        // The suppression list, before any row is read; without one, the import waits rather than queue the events
        // of erased subjects (the table failing, it could not keep its state either).
        let list = match &p.suppressions {
            None => None,
            Some(cache) => match cache.current().await {
                Ok(list) => Some(list),
                Err(e) => {
                    let end = End::Retry(format!("suppression list unavailable: {e}"));
                    return self.finish(state, version, suppressed, end, &file).await;
                }
            },
        };
        tracing::info!(source = %source, file = %file, offset = state.offset, rows = state.rows, "Import running.");

        let ports = Arc::clone(&self.ports);
        let handle = Handle::current();
        let joined = tokio::task::spawn_blocking(move || {
            let mut run = Run {
                p: &ports,
                handle: &handle,
                clock,
                object: &object,
                mapping: &checked,
                deadline,
                version,
                suppressed,
                list,
            };
            let end = run.read(&mut state);
            (state, run.version, run.suppressed, end)
        })
        .await;
        let (state, version, suppressed, end) = match joined {
            Ok(x) => x,
            Err(_) => return Outcome::Retry("the import thread stopped".into()),
        };
        self.finish(state, version, suppressed, end, &file).await
    }

    /// Writes what an ending needs: a continuation, or the reports and the final state. `suppressed`: the rows
    /// skipped as suppressed up to the state's checkpoint.
    async fn finish(&self, mut state: ImportState, version: u64, suppressed: u64, end: End, file: &str) -> Outcome {
        let p = &self.ports;
        let now = (self.clock)();
        match end {
            End::Lost => Outcome::Skipped("taken_over"),
            End::Retry(e) => {
                // Let the redelivered record resume at once rather than wait for the lease.
                state.lease_until = 0;
                let _ = write_state(&p.table, &state, suppressed, version).await;
                Outcome::Retry(e)
            }
            End::Continue => {
                state.continuations += 1;
                state.lease_until = 0;
                state.updated_at = now;
                let version = match write_state(&p.table, &state, suppressed, version).await {
                    Ok(v) => v,
                    Err(WriteFail::Conflict) => return Outcome::Skipped("taken_over"),
                    Err(WriteFail::Store(e)) => return Outcome::Retry(e),
                };
                let next = Continuation {
                    bucket: state.file.bucket.clone(),
                    key: tributary_core::import::encode_notification_key(&state.file.key),
                    version: state.file.version.clone(),
                    size: state.size,
                    part: state.continuations,
                };
                let body = json!({ "continuation": next }).to_string();
                match p.imports.send_batch(&[OutgoingMessage { id: "0".into(), body }]).await {
                    Ok(failed) if failed.is_empty() => {
                        tracing::info!(source = %state.source_id, file = %file, rows = state.rows, part = state.continuations, "Import continues in a new invocation.");
                        Outcome::Continued
                    }
                    // The state is free and says where to resume: the record coming back picks it up.
                    _ => {
                        let _ = version;
                        Outcome::Retry("continuation not queued".into())
                    }
                }
            }
            End::Done | End::Failed(_) => {
                if let End::Failed(message) = &end {
                    state.status = ImportStatus::Failed;
                    state.error = Some(message.clone());
                } else {
                    state.status = ImportStatus::Done;
                }
                state.finished_at = Some(now);
                state.updated_at = now;
                state.lease_until = 0;
                if let Err(e) = self.write_reports(&state, suppressed).await {
                    return Outcome::Retry(e);
                }
                match write_state(&p.table, &state, suppressed, version).await {
                    Ok(_) => {}
                    Err(WriteFail::Conflict) => return Outcome::Skipped("taken_over"),
                    Err(WriteFail::Store(e)) => return Outcome::Retry(e),
                }
                tracing::info!(
                    source = %state.source_id, file = %file, status = ?state.status, rows = state.rows,
                    accepted = state.accepted, rejected = state.rejected, suppressed,
                    error = state.error.as_deref().unwrap_or(""),
                    "Import finished."
                );
                let counts = Emf::new()
                    .dimension("Function", "import")
                    .count("ImportRows", state.rows)
                    .count("ImportRowsAccepted", state.accepted)
                    .count("ImportRowsRejected", state.rejected)
                    .count("ImportRowsSuppressed", suppressed);
                if let Some(line) = counts.line(now) {
                    p.metrics.emit(line);
                }
                if state.status == ImportStatus::Done {
                    Outcome::Done
                } else {
                    Outcome::Failed
                }
            }
        }
    }

    /// Joins the reject parts into the report, writes the summary, removes the parts.
    async fn write_reports(&self, state: &ImportState, suppressed: u64) -> Result<(), String> {
        let store = &self.ports.objects;
        let fail = |e: PortError| format!("import report not written: {e}");
        let parts = store.list(&parts_prefix(state)).await.map_err(fail)?;
        let mut rejects = REJECTS_HEADER.as_bytes().to_vec();
        for part in &parts {
            if let Some(bytes) = store.get(&part.key).await.map_err(fail)? {
                rejects.extend_from_slice(&bytes);
            }
        }
        let rejects_key = report_key(&state.source_id, &state.name, ".rejects.csv");
        store.put(&rejects_key, rejects).await.map_err(fail)?;
        let summary = Summary { suppressed, ..Summary::of(state, &rejects_key) };
        let summary = serde_json::to_vec_pretty(&summary).unwrap_or_default();
        store.put(&report_key(&state.source_id, &state.name, ".summary.json"), summary).await.map_err(fail)?;
        for part in parts {
            store.delete(&part.key).await.map_err(fail)?;
        }
        Ok(())
    }
}

/// The checked mapping of the object's source, or why its file cannot be imported.
fn source_problem<'a>(
    ws: &WorkspaceConfig,
    mappings: &'a BTreeMap<String, CheckedMapping>,
    object: &ImportObject,
) -> Result<&'a CheckedMapping, String> {
    let id = object.source_id.as_str();
    let Some(source) = ws.sources.iter().find(|s| s.id.as_str() == id) else {
        return Err("unknown_source: no source with this id in the workspace".into());
    };
    if !source.enabled {
        return Err("source_disabled: the source is disabled".into());
    }
    let Some(mapping) = source.import.as_ref() else {
        return Err("no_import_mapping: the source declares no import mapping".into());
    };
    let checked = match mappings.get(id) {
        Some(m) => m,
        None => return Err(format!("bad_import_mapping: {}", mapping.check().err().map(|e| e.0).unwrap_or_default())),
    };
    if let Some(format) = object.format {
        if format != mapping.format {
            return Err(format!(
                "format_mismatch: the file's name says {}, the source's mapping reads {}",
                format_name(format),
                format_name(mapping.format)
            ));
        }
    }
    Ok(checked)
}

fn format_name(f: Format) -> &'static str {
    match f {
        Format::Csv => "csv",
        Format::Jsonl => "jsonl",
    }
}

/// The jobs a record body names: the objects of an S3 notification, or a continuation.
fn parse_body(body: &str) -> Result<Vec<Job>, &'static str> {
    if let Ok(c) = serde_json::from_str::<ContinuationBody>(body) {
        let c = c.continuation;
        return Ok(vec![Job { bucket: c.bucket, raw_key: c.key, version: c.version, size: c.size }]);
    }
    let value: Value = serde_json::from_str(body).map_err(|_| "not JSON")?;
    // S3 sends a test event when a notification is configured: nothing to import.
    if value.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
        return Ok(Vec::new());
    }
    let event: Notification = serde_json::from_value(value).map_err(|_| "not an S3 notification")?;
    Ok(event
        .records
        .into_iter()
        .filter(|r| r.event_name.as_deref().is_some_and(|n| n.starts_with("ObjectCreated:")))
        .filter_map(|r| {
            let o = r.s3.object;
            Some(Job {
                bucket: r.s3.bucket.name?,
                raw_key: o.key?,
                // An unversioned bucket: the ETag tells a rewritten object from the one already imported.
                version: o.version_id.filter(|v| !v.is_empty() && v != "null").or(o.e_tag.map(|e| format!("etag:{e}"))),
                size: o.size.unwrap_or(0),
            })
        })
        .collect())
}

/// The parts of an S3 event notification (the `S3Event` shape) the import reads; everything else may be absent.
#[derive(Debug, Deserialize)]
struct Notification {
    #[serde(rename = "Records")]
    records: Vec<NotificationRecord>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NotificationRecord {
    #[serde(default)]
    event_name: Option<String>,
    s3: NotificationS3,
}

#[derive(Debug, Deserialize)]
struct NotificationS3 {
    bucket: NotificationBucket,
    object: NotificationObject,
}

#[derive(Debug, Deserialize)]
struct NotificationBucket {
    #[serde(default)]
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NotificationObject {
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    version_id: Option<String>,
    #[serde(default)]
    e_tag: Option<String>,
}

enum WriteFail {
    Conflict,
    Store(String),
}

/// The attribute of the state item counting the rows skipped as suppressed, next to [`ImportState`]'s own.
pub const SUPPRESSED_ROWS_ATTR: &str = "suppressed";

/// Writes the state, with the count of rows skipped as suppressed, if it is still at `version`; the new version.
async fn write_state<T: TableStore>(
    table: &T,
    state: &ImportState,
    suppressed: u64,
    version: u64,
) -> Result<u64, WriteFail> {
    let Ok(Value::Object(mut attrs)) = serde_json::to_value(state) else {
        return Err(WriteFail::Store("import state not serializable".into()));
    };
    if suppressed > 0 {
        attrs.insert(SUPPRESSED_ROWS_ATTR.into(), Value::from(suppressed));
    }
    let condition = if version == 0 { Condition::NotExists } else { Condition::VersionIs(version) };
    let item = Item { key: state_key(&state.source_id, &state.file), attrs, version: version + 1, expires_at: None };
    match table.write(WriteOp::Put { item, condition }).await {
        Ok(()) => Ok(version + 1),
        Err(PortError::ConditionFailed(_)) => Err(WriteFail::Conflict),
        Err(e) => Err(WriteFail::Store(format!("import state not written: {e}"))),
    }
}

/// Parser rejects: the row could not be read at all (as opposed to a value that does not fit its column).
fn unreadable(reason: &str) -> bool {
    matches!(
        reason,
        reason::INVALID_UTF8
            | reason::INVALID_JSON
            | reason::NOT_AN_OBJECT
            | reason::BROKEN_QUOTING
            | reason::WRONG_COLUMN_COUNT
            | reason::LINE_TOO_LONG
            | reason::TOO_MANY_COLUMNS
    )
}

/// One invocation's reading of one file, on a blocking thread.
struct Run<'a, T, Q, O, M> {
    p: &'a Ports<T, Q, O, M>,
    handle: &'a Handle,
    clock: Clock,
    object: &'a ImportObject,
    mapping: &'a CheckedMapping,
    deadline: Option<Instant>,
    version: u64,
    /// Rows skipped as suppressed, as of the last checkpoint (written with the state).
    suppressed: u64,
    /// The suppression list in use, refreshed at the checkpoints; `None` without one.
    list: Option<Arc<SuppressionList>>,
}

impl<T: TableStore, Q: Queue, O: ObjectStore, M: MetricsSink> Run<'_, T, Q, O, M> {
    fn read(&mut self, state: &mut ImportState) -> End {
        let s = &self.p.settings;
        let key = self.object.file.key.clone();
        let opts = self.mapping.parse_options();
        let source = self.object.source_id.as_str().to_string();
        let received = OffsetDateTime::from_unix_timestamp_nanos(state.started_at as i128 * 1_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let reader = match reader::open(
            &self.p.objects,
            self.handle,
            &key,
            self.object.size,
            self.object.gzip,
            state.offset,
            s.chunk_bytes,
        ) {
            Ok(r) => r,
            Err(e) => return io_end(&e, self.object.gzip),
        };
        let started = state.offset == 0 && state.rows == 0;
        let rows = if started {
            Rows::new(reader, opts)
        } else {
            let header = state.header.clone().map(|(names, d)| Header::new(names, d));
            match header.transpose() {
                Ok(h) => Rows::resume(reader, opts, h, state.offset, state.rows),
                Err(e) => return End::Failed(format!("bad_header: {e}")),
            }
        };
        let mut rows = match rows {
            Ok(r) => r,
            Err(e) => return import_error_end(e, self.object.gzip),
        };
        if started {
            match rows.header() {
                Some(h) => {
                    if let Err(e) = self.mapping.check_header(h) {
                        return End::Failed(format!("header_mismatch: {}", e.0));
                    }
                    state.header = Some((h.names().to_vec(), h.delimiter()));
                }
                None if opts.format == Format::Csv => return End::Failed("empty_file: the file is empty".into()),
                None => {}
            }
            // The header (and a byte order mark) are behind us: the first checkpoint starts after them.
            state.offset = rows.position().0;
        }

        let mapping = self.mapping.for_file(rows.header(), &self.object.file, received);
        // Only a source with a tracking plan or a PII policy needs its events as JSON objects.
        let governance = self.p.governance.get(&source).and_then(|g| g.as_ref().ok()).filter(|g| !g.is_noop());
        let mut row = Row::default();
        let mut buffers = EventBuffers::default();
        let mut events = Pending::default();
        let mut rejects: Vec<RowReject> = Vec::new();
        let mut since_checkpoint = 0u64;
        let mut this_run = 0u64;
        // The rows the current reject part starts after.
        let mut part_start = state.rows;
        // Rows read, accepted, rejected, suppressed.
        let mut counts = (state.rows, state.accepted, state.rejected, self.suppressed);
        let mut reasons = state.reasons.clone();
        let mut listed = state.listed;
        loop {
            let out_of_time = self.deadline.is_some_and(|d| d.saturating_duration_since(Instant::now()) < s.reserve)
                || s.max_rows_per_run.is_some_and(|m| this_run >= m);
            if out_of_time {
                return match self.checkpoint(
                    state,
                    &rows,
                    &mut events,
                    &mut rejects,
                    part_start,
                    counts,
                    &reasons,
                    listed,
                ) {
                    Ok(()) => End::Continue,
                    Err(end) => end,
                };
            }
            let read = match rows.read_into(&mut row) {
                Ok(Some(read)) => read,
                Ok(None) => break,
                Err(e) => return import_error_end(e, self.object.gzip),
            };
            let suppression = self.list.as_deref().map(|list| (list, &self.p.event_ids));
            match read.and_then(|()| event(&mapping, governance, suppression, &row, &mut events, &mut buffers)) {
                Ok(Fate::Queued) => counts.1 += 1,
                // Neither accepted nor rejected: not in the reject report, only counted.
                Ok(Fate::Suppressed) => counts.3 += 1,
                Err(r) => {
                    counts.2 += 1;
                    *reasons.entry(r.reason.to_string()).or_default() += 1;
                    if listed < s.max_listed_rejects {
                        listed += 1;
                        rejects.push(r);
                    }
                }
            }
            counts.0 += 1;
            this_run += 1;
            since_checkpoint += 1;
            // A file that cannot be read as its format is failed early, not rejected row by row to its end.
            if counts.1 == 0
                && counts.0 >= s.unreadable_rows
                && reasons.keys().all(|r| unreadable(r))
                && counts.2 == counts.0
            {
                let _ = self.checkpoint(state, &rows, &mut events, &mut rejects, part_start, counts, &reasons, listed);
                return End::Failed(format!(
                    "unreadable: the first {} rows cannot be read as {}",
                    counts.0,
                    format_name(opts.format)
                ));
            }
            if events.len() >= s.batch_rows {
                if let Err(e) = self.send(&source, &mut events) {
                    return End::Retry(e);
                }
            }
            if since_checkpoint >= s.checkpoint_rows {
                if let Err(end) =
                    self.checkpoint(state, &rows, &mut events, &mut rejects, part_start, counts, &reasons, listed)
                {
                    return end;
                }
                part_start = state.rows;
                since_checkpoint = 0;
            }
        }
        if let Err(end) = self.checkpoint(state, &rows, &mut events, &mut rejects, part_start, counts, &reasons, listed)
        {
            return end;
        }
        if state.rows == 0 {
            return End::Failed(match opts.format {
                Format::Csv => "no_rows: the file has a header but no rows".into(),
                Format::Jsonl => "no_rows: the file has no rows".into(),
            });
        }
        // Rows skipped as suppressed were read as they should be: a file of nothing else is done, not failed.
        if state.accepted == 0 && self.suppressed == 0 {
            return End::Failed("all_rejected: every row was rejected (see the reject report)".into());
        }
        End::Done
    }

    /// Sends the pending events, then writes the rejects part and the checkpoint (renewing the lease).
    #[allow(clippy::too_many_arguments)] // the run's running totals, kept apart from the stored state until written
    fn checkpoint<R: io::BufRead>(
        &mut self,
        state: &mut ImportState,
        rows: &Rows<R>,
        events: &mut Pending,
        rejects: &mut Vec<RowReject>,
        part_start: u64,
        counts: (u64, u64, u64, u64),
        reasons: &BTreeMap<String, u64>,
        listed: u64,
    ) -> Result<(), End> {
        let source = state.source_id.clone();
        self.send(&source, events).map_err(End::Retry)?;
        if !rejects.is_empty() {
            let key = part_key(state, part_start);
            let lines = reject_lines(rejects);
            self.handle
                .block_on(self.p.objects.put(&key, lines))
                .map_err(|e| End::Retry(format!("reject report part not written: {e}")))?;
            rejects.clear();
        }
        let now = (self.clock)();
        state.offset = rows.position().0;
        (state.rows, state.accepted, state.rejected, self.suppressed) = counts;
        state.reasons = reasons.clone();
        state.listed = listed;
        state.updated_at = now;
        state.lease_until = match self.deadline {
            Some(d) => now + d.saturating_duration_since(Instant::now()).as_millis() as i64 + 60_000,
            None => now + self.p.settings.lease.as_millis() as i64,
        };
        match self.handle.block_on(write_state(&self.p.table, state, self.suppressed, self.version)) {
            Ok(v) => {
                self.version = v;
                // The list for the rows to come: reloaded when due (a failed reload keeps this one).
                if let Some(cache) = &self.p.suppressions {
                    if let Ok(list) = self.handle.block_on(cache.current()) {
                        self.list = Some(list);
                    }
                }
                Ok(())
            }
            Err(WriteFail::Conflict) => Err(End::Lost),
            Err(WriteFail::Store(e)) => Err(End::Retry(e)),
        }
    }

    /// Packs and sends the events (≤ 10 messages per call), retrying what the queue refused a few times.
    fn send(&self, source: &str, events: &mut Pending) -> Result<(), String> {
        if events.is_empty() {
            return Ok(());
        }
        let bodies = Envelope::pack_with(source, events.iter(), self.p.settings.max_message_bytes, |buf, event| {
            buf.extend_from_slice(event);
            Ok(())
        });
        let messages: Vec<OutgoingMessage> =
            bodies.into_iter().enumerate().map(|(i, body)| OutgoingMessage { id: i.to_string(), body }).collect();
        let retry = SendRetry { attempts: 4, backoff: Duration::from_millis(100) };
        // On the blocking reader thread: the runtime's handle drives the sends and the backoff's timer.
        match self.handle.block_on(send_all(&self.p.events, messages, retry, tokio::time::sleep)) {
            Ok(()) => {
                events.clear();
                Ok(())
            }
            Err(e) => Err(format!("the events queue refused messages: {e}")),
        }
    }
}

/// What became of a row that made an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Queued,
    /// An identifier of the event is suppressed (its subject erased): skipped.
    Suppressed,
}

/// Writes the row's event to `events`, governed by the source's tracking plan and PII policy when it has them,
/// unless an identifier of it is in the suppression list.
fn event(
    mapping: &FileMapping<'_>,
    governance: Option<&Governance>,
    suppression: Option<(&SuppressionList, &EventIdentifiers)>,
    row: &Row,
    events: &mut Pending,
    buffers: &mut EventBuffers,
) -> Result<Fate, RowReject> {
    let event = mapping.event_in(row, buffers)?;
    // An empty list (the common case) costs nothing per row.
    let suppression = suppression.filter(|(list, _)| !list.is_empty());
    if governance.is_none() && suppression.is_none() {
        events.push(|buf| event.write_json(buf));
        event.recycle(buffers);
        return Ok(Fate::Queued);
    }
    let map = event.to_map();
    if suppression.is_some_and(|(list, ids)| list.suppresses(&map, ids)) {
        event.recycle(buffers);
        return Ok(Fate::Suppressed);
    }
    let Some(g) = governance else {
        events.push(|buf| event.write_json(buf));
        event.recycle(buffers);
        return Ok(Fate::Queued);
    };
    event.recycle(buffers);
    let mut event = map;
    match g.govern(&mut event).outcome {
        GovernOutcome::Accept => {}
        GovernOutcome::Drop { .. } => {
            return Err(RowReject { row: row.number(), column: None, reason: reason::PII_DROPPED })
        }
        GovernOutcome::Quarantine { .. } => {
            return Err(RowReject { row: row.number(), column: None, reason: reason::TRACKING_PLAN })
        }
    }
    events.push(|buf| serde_json::to_writer(buf, &event));
    Ok(Fate::Queued)
}

/// The events read since the last flush, each serialized as it was read (a row's event borrows from the row,
/// which the next row overwrites), packed into events-queue messages at the flush.
#[derive(Debug, Default)]
struct Pending {
    bytes: Vec<u8>,
    /// Where each event ends in `bytes`.
    ends: Vec<usize>,
}

impl Pending {
    /// Adds the event that `write` appends to the buffer.
    fn push(&mut self, write: impl FnOnce(&mut Vec<u8>) -> serde_json::Result<()>) {
        let start = self.bytes.len();
        if write(&mut self.bytes).is_err() {
            // Cannot happen for an event written to memory; keep its place valid regardless, as packing does.
            self.bytes.truncate(start);
            self.bytes.extend_from_slice(b"{}");
        }
        self.ends.push(self.bytes.len());
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(&self.ends).map(|(start, &end)| self.bytes.get(start..end).unwrap_or_default())
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }
}

/// How an I/O error ends the import: the store failing is worth a retry; anything else is the file's fault.
fn io_end(e: &io::Error, gzip: bool) -> End {
    if let Some(store) = e.get_ref().and_then(|inner| inner.downcast_ref::<reader::StoreError>()) {
        return if store.0 {
            End::Retry("the object store failed while reading the file".into())
        } else {
            End::Failed("unreadable_object: the object store refused to read the file".into())
        };
    }
    match e.kind() {
        io::ErrorKind::NotFound => End::Failed("file_gone: the file was deleted before it was read".into()),
        _ if gzip => End::Failed("not_gzip: the file is not valid gzip".into()),
        _ => End::Failed("unreadable_object: the file could not be read".into()),
    }
}

fn import_error_end(e: ImportError, gzip: bool) -> End {
    match e {
        ImportError::Io(e) => io_end(&e, gzip),
        ImportError::Header { .. } => End::Failed(format!("bad_header: {e}")),
        other => End::Failed(format!("bad_file: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_name_objects_or_continuations() {
        let s3 = r#"{"Records":[{"eventVersion":"2.1","eventSource":"aws:s3","eventName":"ObjectCreated:Put",
            "s3":{"bucket":{"name":"drop"},"object":{"key":"imports/crm/a+b.csv","size":12,"eTag":"abc"}}},
            {"eventName":"ObjectRemoved:Delete","s3":{"bucket":{"name":"drop"},"object":{"key":"imports/crm/x.csv"}}}]}"#;
        let jobs = parse_body(s3).unwrap();
        assert_eq!(jobs.len(), 1, "only ObjectCreated");
        assert_eq!(
            (jobs[0].bucket.as_str(), jobs[0].raw_key.as_str(), jobs[0].size),
            ("drop", "imports/crm/a+b.csv", 12)
        );
        assert_eq!(jobs[0].version.as_deref(), Some("etag:abc"));
        let versioned = s3.replace(r#""eTag":"abc""#, r#""eTag":"abc","versionId":"v7""#);
        assert_eq!(parse_body(&versioned).unwrap()[0].version.as_deref(), Some("v7"));

        let c = json!({"continuation": {"bucket": "drop", "key": "imports/crm/a.csv", "version": "v1", "size": 5, "part": 2}});
        let jobs = parse_body(&c.to_string()).unwrap();
        assert_eq!((jobs[0].raw_key.as_str(), jobs[0].version.as_deref()), ("imports/crm/a.csv", Some("v1")));

        assert!(parse_body(r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"drop"}"#).unwrap().is_empty());
        assert!(parse_body("garbage").is_err());
        assert!(parse_body(r#"{"foo":1}"#).is_err());
    }
}
