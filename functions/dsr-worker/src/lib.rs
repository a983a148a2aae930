//! The DSR worker: carries out data subject requests from the DSR queue, and sweeps the waiting list on a schedule.
//!
//! - `Process { id }`: a pending request whose waiting period is over becomes `in_progress` (callbacks are
//!   queued), the subject is resolved through the identity graph ([`subject`]), then
//!   - access / portability: everything about the subject goes into a `.tar.gz` of JSON Lines in the results
//!     store ([`export`]); the status then carries a 7-day link and the record count;
//!   - erasure: the resolution is saved on the request, identity items become suppression tombstones, and every
//!     profile partition of the subject is emptied, with dedup records, audience schedule items and earlier exports
//!     ([`erase`]); one receipt per store goes into the request's status and the audit log.
//!
//!   Then the request is `completed` and callbacks are queued. Every step can run twice: a retried message
//!   finds the request `in_progress` with its saved resolution and finishes the same work.
//! - `Callback { id, status, url }`: one signed POST to one callback URL ([`callback`]); a failure is retried
//!   with exponential backoff (the message's visibility), then dead-lettered by the queue.
//! - [`DsrWorker::sweep`] (scheduled): queues `Process` for each waiting request whose time has come. The API
//!   queues requests without a waiting period itself; the sweep also heals a create whose queue send failed.
//!
//! The handler is generic over the ports, so Lambda (DynamoDB, SQS, S3) and `tributary serve` (SQLite, files) run
//! exactly this code. Logs name request ids and counts, never an identifier.

// The Lambda function's wiring on the AWS adapters: the binary's `main` and the emulator deployment test
// (tests/tests/aws_stack.rs) build the handler through it.
#[cfg(feature = "lambda")]
pub mod lambda;

pub mod callback;
pub mod erase;
pub mod export;
pub mod purge;
pub mod subject;

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use serde_json::Value;
use time::OffsetDateTime;
use tributary_core::config::WorkspaceConfig;
use tributary_core::dsr::record::WAITING_PK;
use tributary_core::dsr::{
    request_key, signature_headers, waiting_key, AuditRow, DsrRecord, DsrTask, ExportResult, RequestStatus,
    RequestType, ResultLinks, Signer, StoreReceipt, TransitionError, RESULTS_TTL_MS,
};
use tributary_core::lambda::{send_all, SendRetry};
use tributary_core::ports::{
    Condition, Item, ItemKey, ObjectStore, OutgoingMessage, PortError, Queue, TableStore, TransactError, WriteOp,
};
use tributary_core::profile::layout;
use tributary_core::profile::read::ReadError;

pub use callback::{ForwardError, Http, HttpClient};

/// Most waiting requests one sweep queues (the next sweep takes the rest).
const MAX_SWEEP: usize = 1_000;

/// How the worker stores exports and retries callbacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSettings {
    /// Key prefix of exports in the results store.
    pub results_prefix: String,
    /// First wait before a failed callback is tried again; doubled per attempt.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// How long an export and its link last (7 days; shorter only to see a link expire).
    pub results_ttl: Duration,
    /// How long a receive waits before a searched queue counts as empty (SQS long polling; see `purge_queue`).
    pub queue_empty_wait: Duration,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            results_prefix: "dsr-results/".into(),
            backoff_base: Duration::from_secs(30),
            backoff_max: Duration::from_secs(3600),
            results_ttl: Duration::from_millis(RESULTS_TTL_MS as u64),
            queue_empty_wait: Duration::from_secs(1),
        }
    }
}

/// Why a task failed. Every failure is retried by the queue (and dead-lettered after its receive limit).
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Port(#[from] PortError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("request {0}: the stored record cannot be read")]
    Corrupt(String),
    #[error("request {0} changed while it was being worked on")]
    Contention(String),
    #[error(transparent)]
    Transition(#[from] TransitionError),
    #[error("callback: {0}")]
    Callback(String),
    #[error("task body is not a DSR task")]
    BadTask,
    /// Something the task waits for (a running import, a destination that asked us to retry).
    #[error("{0}")]
    Busy(String),
}

/// What one task did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// No such request (or no such callback URL): nothing to do.
    Unknown,
    /// The request had already ended (completed or cancelled).
    AlreadyDone(RequestStatus),
    /// Its waiting period is not over; the sweep queues it again.
    Waiting,
    /// Carried out, with this many receipts.
    Completed { receipts: usize },
    /// A callback was answered with this status.
    Called(u16),
}

type Clock = Arc<dyn Fn() -> OffsetDateTime + Send + Sync>;

pub struct DsrWorker<T, Q, O, S, L, C> {
    table: T,
    queue: Q,
    results: O,
    signer: S,
    links: L,
    callbacks: C,
    workspace: Arc<WorkspaceConfig>,
    settings: WorkerSettings,
    holdings: Holdings<Q, O>,
    /// The workspace's destinations with `${NAME}` references resolved, as the deliver function sends to them.
    destinations: Vec<tributary_core::delivery::DestinationConfig>,
    clock: Clock,
}

/// The stores an erasure searches besides the profile table. Queues and buckets are of the same kinds as the DSR
/// queue and the results store (one deployment uses one kind of each).
pub struct Holdings<Q, O> {
    /// (receipt name, queue): the dead-letter queues, which keep messages for days.
    pub queues: Vec<(String, Q)>,
    pub objects: Vec<ObjectPlace<O>>,
}

impl<Q, O> Default for Holdings<Q, O> {
    fn default() -> Self {
        Holdings { queues: Vec::new(), objects: Vec::new() }
    }
}

/// Objects under one prefix of one store.
pub struct ObjectPlace<O> {
    /// Receipt name (`quarantine`, `import_files`, `import_reports`, `export:<destination>`).
    pub name: String,
    pub store: O,
    pub prefix: String,
    /// Delete a file that mentions the subject instead of rewriting it: a rewritten partner file would be imported
    /// again as a new version.
    pub whole_files: bool,
    /// Partner files: wait while an import is reading any of them (the task fails and is retried).
    pub imports: bool,
}

impl<T, Q, O, S, L, C> DsrWorker<T, Q, O, S, L, C>
where
    T: TableStore,
    Q: Queue,
    O: ObjectStore,
    S: Signer,
    L: ResultLinks,
    C: Http,
{
    /// `queue` is the DSR queue itself (callbacks and swept requests go back onto it); `results` is where exports
    /// are written.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        table: T,
        queue: Q,
        results: O,
        signer: S,
        links: L,
        callbacks: C,
        workspace: Arc<WorkspaceConfig>,
        settings: WorkerSettings,
    ) -> Self {
        DsrWorker {
            table,
            queue,
            results,
            signer,
            links,
            callbacks,
            settings,
            holdings: Holdings::default(),
            destinations: workspace.destinations.clone(),
            workspace,
            clock: Arc::new(OffsetDateTime::now_utc),
        }
    }

    /// The destinations as the deliver function resolves them (`${NAME}` references replaced).
    pub fn with_destinations(mut self, destinations: Vec<tributary_core::delivery::DestinationConfig>) -> Self {
        self.destinations = destinations;
        self
    }

    /// The queues and buckets an erasure searches.
    pub fn with_holdings(mut self, holdings: Holdings<Q, O>) -> Self {
        self.holdings = holdings;
        self
    }

    pub fn with_clock(mut self, clock: impl Fn() -> OffsetDateTime + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    fn now_ms(&self) -> i64 {
        i64::try_from((self.clock)().unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
    }

    /// The SQS entry point: every record is one task; failed ones are reported for redelivery, callbacks after a
    /// backoff that grows with the receive count.
    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        let mut failures = Vec::new();
        for record in event.records {
            let id = record.message_id.clone().unwrap_or_default();
            let task = record.body.as_deref().and_then(|b| serde_json::from_str::<DsrTask>(b).ok());
            let result = match &task {
                Some(DsrTask::Process { id }) => self.process(id).await,
                Some(DsrTask::Callback { id, status, url }) => self.callback(id, *status, *url).await,
                None => Err(WorkerError::BadTask),
            };
            match result {
                Ok(outcome) => tracing::info!(task = ?task, outcome = ?outcome, "dsr task done"),
                Err(e) => {
                    tracing::warn!(task = ?task, error = %e, "dsr task failed");
                    if matches!(task, Some(DsrTask::Callback { .. })) {
                        let receives: u32 =
                            record.attributes.get("ApproximateReceiveCount").and_then(|v| v.parse().ok()).unwrap_or(1);
                        let wait = self.backoff(receives);
                        if let Some(handle) = record.receipt_handle.as_deref() {
                            if let Err(e) = self.queue.change_visibility(handle, wait).await {
                                tracing::warn!(error = %e, "could not delay the callback's retry");
                            }
                        }
                    }
                    failures.push(id);
                }
            }
        }
        tributary_core::lambda::batch_response(failures)
    }

    fn backoff(&self, receives: u32) -> Duration {
        let factor = 1u32.checked_shl(receives.saturating_sub(1).min(20)).unwrap_or(u32::MAX);
        self.settings.backoff_base.saturating_mul(factor).min(self.settings.backoff_max)
    }

    /// Queues every waiting request whose time has come. Returns how many were queued.
    pub async fn sweep(&self) -> Result<usize, WorkerError> {
        let now = self.now_ms();
        let mut ids = Vec::new();
        let mut after: Option<String> = None;
        'pages: loop {
            let page = self.table.query(WAITING_PK, "", after.as_deref(), 100).await?;
            for item in &page.items {
                let due = item.key.sk.split_once('#').and_then(|(t, _)| t.parse::<i64>().ok()).unwrap_or(0);
                if due > now || ids.len() >= MAX_SWEEP {
                    break 'pages;
                }
                if let Some(id) = item.attrs.get("id").and_then(Value::as_str) {
                    ids.push(id.to_string());
                }
            }
            match page.next {
                Some(next) if after.as_deref().is_none_or(|a| next.as_str() > a) => after = Some(next),
                _ => break,
            }
        }
        let tasks: Vec<DsrTask> = ids.iter().map(|id| DsrTask::Process { id: id.clone() }).collect();
        self.enqueue(&tasks).await?;
        Ok(ids.len())
    }

    async fn load(&self, id: &str) -> Result<Option<(DsrRecord, u64)>, WorkerError> {
        let Some(item) = self.table.get(&request_key(id)).await? else { return Ok(None) };
        let rec = DsrRecord::from_attrs(&item.attrs).map_err(|_| WorkerError::Corrupt(id.to_string()))?;
        Ok(Some((rec, item.version)))
    }

    /// Writes the record over `version`, with `extra` operations and an audit row, in one transaction.
    async fn save(&self, rec: &DsrRecord, version: u64, extra: Vec<WriteOp>, action: &str) -> Result<u64, WorkerError> {
        let now = self.now_ms();
        let audit = AuditRow {
            actor: "system".into(),
            action: action.into(),
            target: rec.id.clone(),
            outcome: rec.status.as_str().into(),
            at: now,
            // The completion's row carries the proof: what each store lost, as the final status shows it.
            receipts: if rec.status == RequestStatus::Completed { rec.receipts.clone() } else { Vec::new() },
        };
        let nonce = uuid_like(&rec.id, action, now);
        let mut ops = vec![WriteOp::Put {
            item: Item { key: request_key(&rec.id), attrs: rec.to_attrs(), version: version + 1, expires_at: None },
            condition: Condition::VersionIs(version),
        }];
        ops.extend(extra);
        ops.push(WriteOp::Put {
            item: Item { key: audit.key(&nonce), attrs: audit.to_attrs(), version: 1, expires_at: None },
            condition: Condition::None,
        });
        match self.table.transact(ops).await {
            Ok(()) => Ok(version + 1),
            Err(TransactError::ConditionFailed { .. }) => Err(WorkerError::Contention(rec.id.clone())),
            Err(TransactError::Port(e)) => Err(e.into()),
        }
    }

    fn waiting_deletes(rec: &DsrRecord) -> Vec<WriteOp> {
        vec![WriteOp::Delete {
            key: waiting_key(rec.not_before.unwrap_or(rec.received), &rec.id),
            condition: Condition::None,
        }]
    }

    async fn enqueue(&self, tasks: &[DsrTask]) -> Result<(), WorkerError> {
        if tasks.is_empty() {
            return Ok(());
        }
        let messages: Vec<OutgoingMessage> =
            tasks.iter().enumerate().map(|(i, t)| OutgoingMessage { id: i.to_string(), body: t.to_body() }).collect();
        let retry = SendRetry { attempts: 3, backoff: Duration::from_millis(100) };
        send_all(&self.queue, messages, retry, tokio::time::sleep).await?;
        Ok(())
    }

    /// Queues one callback task per callback URL of `rec` for `status`.
    async fn notify(&self, rec: &DsrRecord, status: RequestStatus) -> Result<(), WorkerError> {
        let tasks: Vec<DsrTask> =
            (0..rec.callbacks.len()).map(|url| DsrTask::Callback { id: rec.id.clone(), status, url }).collect();
        self.enqueue(&tasks).await
    }

    /// Carries out request `id` (see the module docs).
    pub async fn process(&self, id: &str) -> Result<Outcome, WorkerError> {
        let now = self.now_ms();
        let Some((mut rec, mut version)) = self.load(id).await? else {
            tracing::warn!(request = id, "no such request");
            return Ok(Outcome::Unknown);
        };
        match rec.status {
            RequestStatus::Cancelled | RequestStatus::Completed => {
                // A stray waiting entry (the sweep raced a cancel) goes.
                self.table.write(Self::waiting_deletes(&rec).remove(0)).await?;
                return Ok(Outcome::AlreadyDone(rec.status));
            }
            RequestStatus::Pending if rec.not_before.is_some_and(|t| t > now) => return Ok(Outcome::Waiting),
            RequestStatus::Pending => {
                rec.transition(RequestStatus::InProgress, now)?;
                // Callbacks are queued before the change is saved, so a failed send fails the task instead of
                // losing them; a callback that arrives first waits for the change (see `callback`).
                self.notify(&rec, RequestStatus::InProgress).await?;
                version = self.save(&rec, version, Self::waiting_deletes(&rec), "dsr.start").await?;
            }
            RequestStatus::InProgress => {}
        }

        let subject = subject::resolve(&self.table, &rec.subject, rec.resolved.as_ref()).await?;
        tracing::info!(
            request = id,
            kind = rec.kind.as_str(),
            profiles = subject.profiles.len(),
            identities = subject.identities.len(),
            "subject resolved"
        );
        let receipts = match rec.kind {
            RequestType::Access | RequestType::Portability => {
                let export = export::build(&self.table, &subject, &self.workspace, id, now).await?;
                let key = format!("{}{id}.tar.gz", self.settings.results_prefix);
                let count = export.total();
                self.results.put(&key, export.archive).await?;
                // A marker in each root's partition, so an erasure of the subject deletes this export too.
                for root in &subject.roots {
                    let mut attrs = serde_json::Map::new();
                    attrs.insert("key".into(), Value::String(key.clone()));
                    let item = Item {
                        key: ItemKey::new(layout::profile_pk(root), format!("{}{id}", erase::EXPORT_MARKER_PREFIX)),
                        attrs,
                        version: 1,
                        // No expiry: it lives as long as the profile (one small item per export).
                        expires_at: None,
                    };
                    self.table.write(WriteOp::Put { item, condition: Condition::None }).await?;
                }
                let ttl =
                    i64::try_from(self.settings.results_ttl.as_millis()).unwrap_or(RESULTS_TTL_MS).min(RESULTS_TTL_MS);
                rec.result = Some(ExportResult { key, count, expires_at: now + ttl });
                export.counts.iter().map(|(f, n)| StoreReceipt::new(*f, "exported", *n, now)).collect()
            }
            RequestType::Erasure => {
                // Saved first: once identity items are tombstones, only this leads a retried run to the profiles.
                if rec.resolved.as_ref() != Some(&subject.resolution()) {
                    rec.resolved = Some(subject.resolution());
                    version = self.save(&rec, version, Vec::new(), "dsr.resolve").await?;
                }
                let identities = erase::tombstone(&self.table, &subject, id, now).await?;
                // Queues, files and destinations before the partitions: their matching needs the identifiers the
                // ledgers hold, and a retry after a failure here still finds them.
                let mut outside = self.purge_holdings(&subject, now).await?;
                outside.extend(self.forward_deletions(&rec, &subject, now).await?);
                // Earlier exports before the partitions, which hold the markers that lead to them.
                let mut exports = erase::export_keys(&self.table, &subject).await?;
                let mut earlier_removed = 0;
                for key in &exports {
                    earlier_removed += self.delete_export(key).await?;
                }
                let mut counts = erase::erase_partitions(&self.table, &subject).await?;
                counts.identities = identities;
                let mut receipts = counts.receipts(now);
                // An export whose marker was written meanwhile (an access request of the subject racing this one).
                for key in &counts.exports {
                    if exports.insert(key.clone()) {
                        earlier_removed += self.delete_export(key).await?;
                    }
                }
                let mut r = StoreReceipt::new("dsr_exports", "deleted", exports.len() as u64, now);
                if earlier_removed > 0 {
                    r.detail = Some(format!("{earlier_removed} earlier versions removed"));
                }
                receipts.push(r);
                receipts.extend(outside);
                receipts
            }
        };
        rec.receipts = receipts;
        rec.transition(RequestStatus::Completed, self.now_ms())?;
        self.notify(&rec, RequestStatus::Completed).await?;
        self.save(&rec, version, Vec::new(), "dsr.complete").await?;
        Ok(Outcome::Completed { receipts: rec.receipts.len() })
    }

    /// Deletes an export and, in a results bucket that keeps versions, every earlier version of it (one left
    /// behind would still hold the subject). Returns how many earlier versions and delete markers went.
    async fn delete_export(&self, key: &str) -> Result<u64, WorkerError> {
        self.results.delete(key).await?;
        Ok(self.results.delete_earlier_versions(key).await? as u64)
    }

    /// Removes the subject from the dead-letter queues and the object stores; one receipt per store.
    async fn purge_holdings(&self, subject: &subject::Subject, now: i64) -> Result<Vec<StoreReceipt>, WorkerError> {
        let matcher = purge::Matcher::new(subject, self.workspace.profiles.default_country_code.as_deref());
        let mut out = Vec::new();
        for (name, queue) in &self.holdings.queues {
            let p = purge::purge_queue(queue, &matcher, self.settings.queue_empty_wait).await?;
            let mut r = StoreReceipt::new(name.clone(), "deleted", p.touched(), now);
            r.detail = Some(format!("{} messages inspected, {} rewritten without the subject", p.scanned, p.rewritten));
            out.push(r);
        }
        for place in &self.holdings.objects {
            if place.imports && self.imports_running().await? {
                return Err(WorkerError::Busy(
                    "an import is reading partner files; the erasure resumes after it".into(),
                ));
            }
            let p = purge::purge_objects(&place.store, &place.prefix, &matcher, place.whole_files).await?;
            let mut r = StoreReceipt::new(place.name.clone(), "deleted", p.touched(), now);
            r.detail = Some(format!(
                "{} objects and {} earlier versions inspected, {} rewritten without the subject, {} earlier versions \
                 removed",
                p.scanned, p.earlier_scanned, p.rewritten, p.earlier_removed
            ));
            out.push(r);
        }
        Ok(out)
    }

    /// Whether any source's import is running now.
    async fn imports_running(&self) -> Result<bool, WorkerError> {
        for source in &self.workspace.sources {
            let states = tributary_core::import::source_states(&self.table, source.id.as_str(), 1000).await?;
            if states.iter().any(|s| s.status == tributary_core::import::ImportStatus::Running) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Tells every destination that received the subject's events to delete them. Only those: a destination that
    /// never had the person must not learn their identifiers from the deletion.
    async fn forward_deletions(
        &self,
        rec: &DsrRecord,
        subject: &subject::Subject,
        now: i64,
    ) -> Result<Vec<StoreReceipt>, WorkerError> {
        let mut out = Vec::new();
        for dest_id in &subject.destinations {
            let store = format!("destination:{dest_id}");
            let Some(dest) = self.destinations.iter().find(|d| &d.id == dest_id) else {
                let mut r = StoreReceipt::new(store, "not_supported", 0, now);
                r.detail = Some("the destination is no longer configured".into());
                out.push(r);
                continue;
            };
            let message_id = format!("dsr-{}-{dest_id}", rec.id);
            match self
                .callbacks
                .forward_deletion(dest, &message_id, deletion_event(rec, subject, &message_id, now))
                .await
            {
                Ok(()) => out.push(StoreReceipt::new(store, "forwarded", 1, now)),
                Err(ForwardError::NotSupported) => {
                    let mut r = StoreReceipt::new(store, "not_supported", 0, now);
                    r.detail = Some(format!("{} has no deletion call", dest.kind.as_str()));
                    out.push(r);
                }
                Err(ForwardError::Rejected(reason)) => {
                    let mut r = StoreReceipt::new(store, "failed", 0, now);
                    r.detail = Some(reason);
                    out.push(r);
                }
                Err(ForwardError::Retry(reason)) => {
                    return Err(WorkerError::Busy(format!("destination {dest_id}: {reason}")))
                }
            }
        }
        Ok(out)
    }

    /// Sends the callback of `status` to URL number `url` of request `id`.
    pub async fn callback(&self, id: &str, status: RequestStatus, url: usize) -> Result<Outcome, WorkerError> {
        let Some((rec, _)) = self.load(id).await? else { return Ok(Outcome::Unknown) };
        let Some(target) = rec.callbacks.get(url) else { return Ok(Outcome::Unknown) };
        if !rec.history.iter().any(|h| h.status == status) {
            return match rec.status {
                // The change this callback announces was never saved (a cancel won the race): nothing to say.
                RequestStatus::Completed | RequestStatus::Cancelled => Ok(Outcome::Unknown),
                _ => Err(WorkerError::Callback("status_not_reached_yet".into())),
            };
        }
        let now = self.now_ms();
        let link = match &rec.result {
            Some(r) if status == RequestStatus::Completed && r.expires_at > now => {
                Some(self.links.link(&r.key, r.expires_at).await?)
            }
            _ => None,
        };
        // The status the task names, not the current one: callbacks report each change in turn.
        let mut at_status = rec.clone();
        at_status.status = status;
        let body = at_status.callback_body(&self.workspace.dsr.controller_id, target, link.as_deref());
        let bytes = serde_json::to_vec(&body).map_err(|_| WorkerError::Corrupt(id.to_string()))?;
        let (domain_header, signature_header) = signature_headers(rec.legacy);
        let headers = vec![
            (domain_header, self.workspace.dsr.processor_domain.clone()),
            (signature_header, self.signer.sign(&bytes)?),
        ];
        match self.callbacks.post_callback(target, headers, bytes).await {
            Ok(code) if (200..300).contains(&code) => Ok(Outcome::Called(code)),
            Ok(code) => Err(WorkerError::Callback(format!("http_{code}"))),
            Err(code) => Err(WorkerError::Callback(code)),
        }
    }
}

/// The deletion a webhook destination receives: a Segment-style `delete` call naming the subject's identifiers
/// (raw forms; hashed ones only when no raw form is known), so the receiver can find the person.
fn deletion_event(
    rec: &DsrRecord,
    subject: &subject::Subject,
    message_id: &str,
    now: i64,
) -> serde_json::Map<String, Value> {
    use tributary_core::identity::IdType;
    let raw: Vec<&tributary_core::identity::Identifier> =
        subject.identifiers.iter().filter(|i| i.kind.raw_form().is_none()).collect();
    let first = |kind: IdType| raw.iter().find(|i| i.kind == kind).map(|i| Value::String(i.value.clone()));
    let identities: Vec<Value> =
        raw.iter().map(|i| serde_json::json!({"type": i.kind.name(), "value": i.value})).collect();
    let mut traits = serde_json::Map::new();
    if let Some(email) = first(IdType::Email) {
        traits.insert("email".into(), email);
    }
    if let Some(phone) = first(IdType::Phone) {
        traits.insert("phone".into(), phone);
    }
    let event = serde_json::json!({
        "type": "delete",
        "messageId": message_id,
        "timestamp": tributary_core::dsr::rfc3339(now),
        "userId": first(IdType::UserId).unwrap_or(Value::Null),
        "anonymousId": first(IdType::AnonymousId).unwrap_or(Value::Null),
        "traits": traits,
        "context": {
            "dsr": {
                "subject_request_id": rec.id,
                "regulation": rec.regulation,
                "subject_request_type": rec.kind.as_str(),
            },
            "identities": identities,
        },
    });
    match event {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    }
}

/// A nonce for an audit row of the worker: stable for one (request, action, time), distinct otherwise.
fn uuid_like(id: &str, action: &str, at: i64) -> String {
    tributary_core::sha256_hex(format!("{id}\0{action}\0{at}").as_bytes())[..16].to_string()
}
