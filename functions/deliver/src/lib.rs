//! The deliver function: consumes the delivery queue and sends each stitched event to every destination that may
//! have it.
//!
//! Per batch of records: route every (event, destination) (filters, data-party class, fail-closed consent),
//! skip what a receipt says was delivered, prepare (drop fields, scrub, hash), send in batches with up to
//! `delivery.max_in_flight` requests in flight, then write one receipt per (destination, event). Retryable failures
//! come back after an exponential backoff with jitter (the record's visibility is changed; `Retry-After` is
//! honoured); refusals and exhausted retries go to the DLQ at once with their reason, one dead letter per
//! (destination, event), which `tributary redrive` moves back.

// The Lambda function's wiring on the AWS adapters: the binary's `main` and the emulator deployment test
// (tests/tests/aws_stack.rs) build the handler through it.
#[cfg(feature = "lambda")]
pub mod lambda;

pub mod event;
pub mod export;
pub mod http;
pub mod payload;
pub mod redrive;
pub mod ssrf;
pub mod types;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use futures::stream::{self, StreamExt};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use tributary_core::config::{DataPartyClass, WorkspaceConfig};
use tributary_core::delivery::routing::source_permits;
use tributary_core::delivery::settings::MAX_BACKOFF_MS;
use tributary_core::delivery::{
    backoff_ms, interpolate, prepare, receipt_key, route, DeadLetter, DeliveryEnvelope, DestinationConfig,
    DestinationKind, Handoff, Receipt, ReceiptStatus, Route, Scrubber,
};
use tributary_core::metrics::{Emf, MetricsSink};
use tributary_core::ports::{
    Condition, ItemKey, ObjectStore, OutgoingMessage, PortError, Queue, TableStore, WriteOp, MAX_SEND_BATCH,
};
use tributary_core::profile::layout::profile_key;
use tributary_core::profile::{consent, ProfileDoc};

pub use event::Event;
pub use types::{Outbound, SendResult};

/// Receipt and profile reads or writes in flight within one batch.
const RECEIPT_READS_IN_FLIGHT: usize = 16;
/// Largest dead letter written (SQS's message limit).
pub const MAX_DEAD_LETTER_BYTES: usize = 256 * 1024;
/// Name of the event sent to destinations with `consent_updates` when a profile's consent changes.
pub const CONSENT_UPDATED: &str = "Consent Updated";

type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;
type Jitter = Arc<dyn Fn() -> f64 + Send + Sync>;

/// Sends one batch of prepared events to one destination.
pub trait Sender: Send + Sync {
    fn send(&self, dest: &DestinationConfig, batch: &[Outbound]) -> impl Future<Output = SendResult> + Send;
}

/// HTTP destinations through the [`http::HttpSender`], S3 exports through [`export::ExportSender`].
pub struct Senders<E: ObjectStore> {
    pub http: http::HttpSender,
    pub exports: export::ExportSender<E>,
}

impl<E: ObjectStore> Sender for Senders<E> {
    async fn send(&self, dest: &DestinationConfig, batch: &[Outbound]) -> SendResult {
        match dest.kind {
            DestinationKind::S3Export => self.exports.send(dest, batch).await,
            _ => self.http.send(dest, batch).await,
        }
    }
}

/// A problem found when the function starts: it refuses to run rather than send with a broken config.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("destinations[{0}] ({1}): {2}")]
    Destination(usize, String, String),
    #[error("delivery: {0}")]
    Settings(String),
}

/// The destinations of a workspace with every `${NAME}` resolved, checked once at start.
pub fn resolve_destinations(
    ws: &WorkspaceConfig,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<DestinationConfig>, SetupError> {
    ws.delivery.check().map_err(SetupError::Settings)?;
    let mut out = Vec::with_capacity(ws.destinations.len());
    for (i, d) in ws.destinations.iter().enumerate() {
        let fail = |m: String| SetupError::Destination(i, d.id.clone(), m);
        d.check().map_err(|e| fail(e.to_string()))?;
        let mut d = d.clone();
        let t = &mut d.transport;
        for field in [&mut t.url, &mut t.secret, &mut t.account, &mut t.conversion_action, &mut t.developer_token] {
            if let Some(v) = field.as_mut() {
                *v = interpolate(v, lookup).map_err(fail)?;
            }
        }
        out.push(d);
    }
    Ok(out)
}

/// One (event, destination) to deliver.
struct Job {
    record: usize,
    dest: usize,
    item: Arc<Handoff<()>>,
    source_id: Arc<str>,
    /// The messageId receipts and idempotency use (`<id>:consent` for a consent update).
    message_id: String,
    /// The event: the item's own (shared by its jobs, copied only by a destination that changes it) or the
    /// consent update made for this job.
    event: Arc<Event>,
    /// From the receipt: attempts in all and in this round.
    attempts: u32,
    round: u32,
    first: Option<i64>,
    /// Sent by a redrive (an envelope aimed at some destinations): a dead-lettered event may go again.
    redrive: bool,
    /// The receipt's key, once computed.
    key: Option<ItemKey>,
}

impl Job {
    /// A job not attempted yet (its receipt, if any, is read before sending).
    fn new(
        record: usize,
        dest: usize,
        item: &Arc<Handoff<()>>,
        source_id: &Arc<str>,
        message_id: String,
        event: Arc<Event>,
        redrive: bool,
    ) -> Job {
        Job {
            record,
            dest,
            item: item.clone(),
            source_id: source_id.clone(),
            message_id,
            event,
            attempts: 0,
            round: 0,
            first: None,
            redrive,
            key: None,
        }
    }

    /// The fields of the event routing and receipts read.
    fn fields(&self) -> &Map<String, Value> {
        self.event.fields()
    }
}

/// What became of one job.
#[derive(Debug, Clone, PartialEq)]
enum Fate {
    Delivered,
    AlreadyDelivered,
    AlreadyDeadLettered,
    /// Comes back after this many milliseconds.
    Retry(u64),
    DeadLettered,
    /// A receipt or dead letter could not be read or written: the whole record comes back.
    StoreFailed(String),
}

struct Done {
    record: usize,
    dest: usize,
    fate: Fate,
}

impl Done {
    fn of(job: &Job, fate: Fate) -> Done {
        Done { record: job.record, dest: job.dest, fate }
    }
}

#[derive(Debug, Default, Clone)]
struct Counters {
    sent: u64,
    delivered: u64,
    already_delivered: u64,
    retried: u64,
    dead_lettered: u64,
    consent_updates: u64,
    failed_records: u64,
    skipped: BTreeMap<&'static str, u64>,
    per_destination: BTreeMap<String, (u64, u64, u64)>,
}

impl Counters {
    fn count(&mut self, done: &Done, dest: &str) {
        if !self.per_destination.contains_key(dest) {
            self.per_destination.insert(dest.to_string(), (0, 0, 0));
        }
        let Some(per) = self.per_destination.get_mut(dest) else { return };
        match done.fate {
            Fate::Delivered => {
                self.sent += 1;
                self.delivered += 1;
                per.0 += 1;
            }
            Fate::Retry(_) => {
                self.sent += 1;
                self.retried += 1;
                per.1 += 1;
            }
            Fate::DeadLettered => {
                self.sent += 1;
                self.dead_lettered += 1;
                per.2 += 1;
            }
            Fate::AlreadyDelivered => self.already_delivered += 1,
            Fate::AlreadyDeadLettered => *self.skipped.entry("dead_lettered").or_default() += 1,
            Fate::StoreFailed(_) => {}
        }
    }
}

/// What the deliver function needs beyond the workspace file.
#[derive(Debug, Clone)]
pub struct DeliverSettings {
    /// The delivery queue's own `maxReceiveCount` (so the function dead-letters with a reason before SQS moves the
    /// message without one); a record received this often gives up on what still fails.
    pub max_receive_count: u32,
}

impl Default for DeliverSettings {
    fn default() -> Self {
        DeliverSettings { max_receive_count: 100 }
    }
}

/// The handler, generic over its ports: the profile table (receipts, profile traits), the delivery queue (to
/// change a record's visibility) and its DLQ, the senders and the metrics sink.
pub struct Deliver<T: TableStore, Q: Queue, S: Sender, M: MetricsSink> {
    table: T,
    queue: Q,
    dlq: Q,
    sender: S,
    metrics: M,
    workspace: Arc<WorkspaceConfig>,
    destinations: Vec<DestinationConfig>,
    scrubber: Scrubber,
    settings: DeliverSettings,
    clock: Clock,
    jitter: Jitter,
}

impl<T: TableStore, Q: Queue, S: Sender, M: MetricsSink> Deliver<T, Q, S, M> {
    /// `destinations` come from [`resolve_destinations`].
    #[allow(clippy::too_many_arguments)] // one per port plus config, as the Lambda main and the local runtime build them
    pub fn new(
        table: T,
        queue: Q,
        dlq: Q,
        sender: S,
        metrics: M,
        workspace: Arc<WorkspaceConfig>,
        destinations: Vec<DestinationConfig>,
        settings: DeliverSettings,
    ) -> Self {
        let scrubber = workspace.delivery.sensitive.compile();
        let clock: Clock = Arc::new(|| (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64);
        let jitter: Jitter = Arc::new(rand::random::<f64>);
        Deliver { table, queue, dlq, sender, metrics, workspace, destinations, scrubber, settings, clock, jitter }
    }

    /// Replaces the clock (epoch milliseconds) and the jitter source (0..1), for tests.
    pub fn with_clock(mut self, clock: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    pub fn with_jitter(mut self, jitter: impl Fn() -> f64 + Send + Sync + 'static) -> Self {
        self.jitter = Arc::new(jitter);
        self
    }

    pub fn table(&self) -> &T {
        &self.table
    }

    pub fn sender(&self) -> &S {
        &self.sender
    }

    /// The Lambda handler. Records whose events all reached a final state (delivered, skipped or dead-lettered)
    /// succeed; the others are reported failed after their visibility was set to the backoff.
    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        let mut counters = Counters::default();
        let records = event.records;
        // Per record: Ok(backoff to wait, if any job must be retried) or Err (failed outright).
        let mut outcome: Vec<Result<Option<u64>, String>> = vec![Ok(None); records.len()];
        let receive_counts: Vec<u32> = records
            .iter()
            .map(|r| r.attributes.get("ApproximateReceiveCount").and_then(|v| v.parse().ok()).unwrap_or(1))
            .collect();
        // Records are parsed and routed as the batches they fill are taken: the first requests leave while later
        // records are still being read, instead of after the whole invocation's input.
        let mut done = Vec::new();
        {
            let sizes: Vec<usize> = self.destinations.iter().map(|d| d.transport.batch_size(d.kind).max(1)).collect();
            let mut open: Vec<Vec<Job>> = sizes.iter().map(|_| Vec::new()).collect();
            let mut full: std::collections::VecDeque<Vec<Job>> = Default::default();
            let mut planned = Vec::new();
            let (mut next, mut flushed) = (0, 0);
            let batches = std::iter::from_fn(|| loop {
                if let Some(batch) = full.pop_front() {
                    return Some(batch);
                }
                if let Some(record) = records.get(next) {
                    let r = next;
                    next += 1;
                    match serde_json::from_str::<DeliveryEnvelope<Box<RawValue>>>(record.body.as_deref().unwrap_or(""))
                    {
                        Ok(envelope) => self.plan(r, envelope, &mut planned, &mut counters),
                        // Nothing to dead-letter by destination: it fails until the queue's redrive policy moves it.
                        Err(_) => outcome[r] = Err("record body is not a delivery envelope".into()),
                    }
                    for job in planned.drain(..) {
                        let d = job.dest;
                        open[d].push(job);
                        if open[d].len() >= sizes[d] {
                            full.push_back(std::mem::take(&mut open[d]));
                        }
                    }
                    continue;
                }
                // Every record read: what is left of each destination's last batch.
                while let Some(batch) = open.get_mut(flushed) {
                    flushed += 1;
                    if !batch.is_empty() {
                        return Some(std::mem::take(batch));
                    }
                }
                return None;
            });
            let receive_counts = &receive_counts;
            done.extend(
                stream::iter(batches)
                    .map(|batch| self.run_batch(batch, receive_counts))
                    .buffer_unordered(self.workspace.delivery.max_in_flight)
                    .flat_map(stream::iter)
                    .collect::<Vec<Done>>()
                    .await,
            );
        }
        for done in done {
            counters.count(&done, &self.destinations[done.dest].id);
            let record = &mut outcome[done.record];
            // The longest wait of a record's retries; a store failure fails the record outright.
            match (done.fate, &*record) {
                (Fate::Retry(wait), Ok(prev)) => *record = Ok(Some(prev.unwrap_or(0).max(wait))),
                (Fate::StoreFailed(e), Ok(_)) => *record = Err(e),
                _ => {}
            }
        }

        let mut failures = Vec::new();
        for (r, record) in records.iter().enumerate() {
            let id = record.message_id.clone().unwrap_or_default();
            match &outcome[r] {
                Ok(None) => {}
                Ok(Some(wait_ms)) => {
                    let handle = record.receipt_handle.as_deref().unwrap_or("");
                    if let Err(e) = self.queue.change_visibility(handle, Duration::from_millis(*wait_ms)).await {
                        tracing::warn!(error = %e, record = %id, "Could not set the backoff; the queue's timeout applies.");
                    }
                    failures.push(id);
                }
                Err(e) => {
                    counters.failed_records += 1;
                    tracing::warn!(error = %e, record = %id, "Record not delivered; it will be redelivered.");
                    failures.push(id);
                }
            }
        }
        self.emit(&counters);
        tributary_core::lambda::batch_response(failures)
    }

    /// Routes every item of a record to every destination.
    fn plan(&self, record: usize, envelope: DeliveryEnvelope<Box<RawValue>>, jobs: &mut Vec<Job>, c: &mut Counters) {
        let source_id: Arc<str> = Arc::from(envelope.source_id.as_str());
        let redrive = envelope.only.is_some();
        // A redrive names the destinations it is for; otherwise every destination may take the event. A partner
        // or broker source's data goes only where its permitted purposes allow (consent comes on top of that).
        let only = &envelope.only;
        let permitted = self
            .workspace
            .sources
            .iter()
            .find(|s| s.id.as_str() == envelope.source_id)
            .and_then(|s| s.permitted_purposes.as_deref());
        let aimed = |list: &Option<Vec<String>>, dest: &DestinationConfig| {
            list.as_ref().is_none_or(|l| l.iter().any(|id| id == &dest.id))
        };
        // An audience's events go only to the destinations it is connected to.
        let wanted = |dest: &DestinationConfig| aimed(only, dest) && aimed(&envelope.destinations, dest);
        let permits = |dest: &DestinationConfig| source_permits(permitted, &dest.purposes);
        for item in envelope.items {
            // The event's text goes into an `Event` its jobs share; the hand-off keeps the rest.
            let (item, text) = item.split();
            let Some(event) = Event::from_raw(text) else {
                *c.skipped.entry("not_an_object").or_default() += 1;
                continue;
            };
            let event = Arc::new(event);
            let item = Arc::new(item);
            let fields = event.fields();
            let message_id = fields.get("messageId").and_then(Value::as_str).unwrap_or("");
            if is_consent_update(fields) {
                // A redriven consent update: it goes (again) only where consent updates go.
                for (d, dest) in self.destinations.iter().enumerate() {
                    if wanted(dest)
                        && permits(dest)
                        && dest.transport.consent_updates
                        && self.takes_consent_update(dest, &source_id, item.class)
                    {
                        jobs.push(Job::new(
                            record,
                            d,
                            &item,
                            &source_id,
                            message_id.to_string(),
                            event.clone(),
                            redrive,
                        ));
                    }
                }
                continue;
            }
            let event_consent = consent::extract(fields, &self.workspace.consent);
            for (d, dest) in self.destinations.iter().enumerate() {
                if !wanted(dest) {
                    continue;
                }
                if !permits(dest) {
                    *c.skipped.entry("source_purposes").or_default() += 1;
                    continue;
                }
                match route(dest, &source_id, item.class, fields, &item.consent, &event_consent) {
                    Route::Send => jobs.push(Job::new(
                        record,
                        d,
                        &item,
                        &source_id,
                        message_id.to_string(),
                        event.clone(),
                        redrive,
                    )),
                    Route::Skip(reason) => *c.skipped.entry(reason.as_str()).or_default() += 1,
                }
                if item.consent_changed
                    && dest.transport.consent_updates
                    && self.takes_consent_update(dest, &source_id, item.class)
                {
                    c.consent_updates += 1;
                    jobs.push(Job::new(
                        record,
                        d,
                        &item,
                        &source_id,
                        format!("{message_id}:consent"),
                        Arc::new(Event::from_map(consent_update_event(fields, &item.consent))),
                        redrive,
                    ));
                }
            }
        }
    }

    /// A consent update goes to a destination that asked for them whatever the consent now says (a withdrawal is
    /// exactly what it must hear), but still only from the sources and classes it takes.
    fn takes_consent_update(&self, dest: &DestinationConfig, source_id: &str, class: DataPartyClass) -> bool {
        dest.sources.as_ref().is_none_or(|s| s.iter().any(|x| x == source_id)) && dest.allows_class(class)
    }

    /// One batch to one destination, start to end.
    async fn run_batch(&self, jobs: Vec<Job>, receive_counts: &[u32]) -> Vec<Done> {
        let Some(first) = jobs.first() else { return Vec::new() };
        let dest = &self.destinations[first.dest];
        let mut done = Vec::with_capacity(jobs.len());

        // 1. Receipts: what was delivered is never sent again; what was dead-lettered waits for a redrive.
        // Owned keys: a stream of borrowed jobs would not be `Send` for every lifetime the runtime may pick.
        let keys: Vec<ItemKey> =
            jobs.iter().map(|job| receipt_key(job.item.receipt_profile(), &dest.id, &job.message_id)).collect();
        let read = |key: ItemKey| async move {
            let item = retried(|| self.table.get(&key)).await;
            (key, item.map(|item| item.and_then(|i| Receipt::from_attrs(&i.attrs).ok())))
        };
        // Most batches are small (a webhook's is one event): joining them costs less than a bounded stream.
        let reads: Vec<(ItemKey, Result<Option<Receipt>, PortError>)> = if keys.len() <= RECEIPT_READS_IN_FLIGHT {
            futures::future::join_all(keys.into_iter().map(read)).await
        } else {
            stream::iter(keys).map(read).buffered(RECEIPT_READS_IN_FLIGHT).collect().await
        };
        let mut pending = Vec::with_capacity(jobs.len());
        for (mut job, (key, read)) in jobs.into_iter().zip(reads) {
            job.key = Some(key);
            match read {
                Err(e) => done.push(Done::of(&job, Fate::StoreFailed(format!("receipts unavailable: {e}")))),
                Ok(Some(r)) if r.s == ReceiptStatus::Delivered => done.push(Done::of(&job, Fate::AlreadyDelivered)),
                Ok(Some(r)) if r.s == ReceiptStatus::Failed && !job.redrive => {
                    done.push(Done::of(&job, Fate::AlreadyDeadLettered))
                }
                Ok(r) => {
                    if let Some(r) = r {
                        job.attempts = r.n;
                        job.round = if r.s == ReceiptStatus::Failed { 0 } else { r.r };
                        job.first = Some(r.first);
                    }
                    pending.push(job);
                }
            }
        }
        if pending.is_empty() {
            return done;
        }

        // 2. Prepare and send; a refused batch of several may hold one poison event, so it is sent one by one.
        let profiles = self.profiles_for(dest, &pending).await;
        let out: Vec<Outbound> = pending.iter().map(|job| self.outbound(job, &profiles)).collect();
        let results: Vec<SendResult> = match self.sender.send(dest, &out).await {
            SendResult::Rejected { .. } if out.len() > 1 => {
                let mut each = Vec::with_capacity(out.len());
                for o in out.chunks(1) {
                    each.push(self.sender.send(dest, o).await);
                }
                each
            }
            r => vec![r; out.len()],
        };

        // 3. Decide each job's fate; dead letters are written before any receipt says "failed".
        let now = (self.clock)();
        let d = &self.workspace.delivery;
        let mut settled = Vec::with_capacity(pending.len());
        let mut letters = Vec::new();
        for (job, result) in pending.into_iter().zip(results) {
            let round = job.round + 1;
            let fate = match &result {
                SendResult::Delivered => Fate::Delivered,
                SendResult::Retry { reason, after }
                    if round < d.max_attempts && receive_counts[job.record] < self.settings.max_receive_count =>
                {
                    let wait = backoff_ms(
                        round,
                        d.backoff_base_ms,
                        d.backoff_max_ms,
                        (self.jitter)(),
                        after.map(|a| a.as_millis() as u64),
                    )
                    .min(MAX_BACKOFF_MS);
                    tracing::info!(destination = %dest.id, reason = %reason, attempt = round, wait_ms = wait, "Delivery will be retried.");
                    Fate::Retry(wait)
                }
                SendResult::Retry { reason, .. } | SendResult::Rejected { reason } => {
                    let reason = match result {
                        SendResult::Retry { .. } => format!("retries_exhausted:{reason}"),
                        _ => reason.clone(),
                    };
                    tracing::warn!(destination = %dest.id, reason = %reason, attempts = job.attempts + 1, "Delivery dead-lettered.");
                    // The event as it came (or the consent update itself), so a redrive sends what failed.
                    let item = (*job.item).clone().with_event(Value::Object(job.event.to_map()));
                    letters.push((
                        settled.len(),
                        DeadLetter {
                            dead_letter: 1,
                            destination_id: dest.id.clone(),
                            source_id: job.source_id.to_string(),
                            reason,
                            attempts: job.attempts + 1,
                            failed_at: now,
                            item,
                        },
                    ));
                    Fate::DeadLettered
                }
            };
            settled.push((job, result, fate));
        }
        let mut lost = vec![false; settled.len()];
        for chunk in letters.chunks(MAX_SEND_BATCH) {
            let messages: Vec<OutgoingMessage> = chunk
                .iter()
                .map(|(i, l)| OutgoingMessage {
                    id: format!("l{i}"),
                    body: serde_json::to_string(l).unwrap_or_default(),
                })
                .collect();
            let failed: Vec<usize> = match self.dlq.send_batch(&messages).await {
                Ok(f) => f.iter().filter_map(|f| f.id.strip_prefix('l').and_then(|n| n.parse().ok())).collect(),
                Err(_) => chunk.iter().map(|(i, _)| *i).collect(),
            };
            for i in failed {
                lost[i] = true;
            }
        }

        // 4. Receipts.
        let writes = settled.into_iter().zip(lost).map(|((job, result, fate), lost)| async move {
            if lost {
                return Done::of(&job, Fate::StoreFailed("the DLQ did not take a dead letter".into()));
            }
            let status = match fate {
                Fate::Delivered => ReceiptStatus::Delivered,
                Fate::Retry(_) => ReceiptStatus::Retrying,
                _ => ReceiptStatus::Failed,
            };
            let receipt = Receipt {
                d: dest.id.clone(),
                m: job.message_id.clone(),
                src: job.source_id.to_string(),
                t: job.fields().get("type").and_then(Value::as_str).unwrap_or("").to_string(),
                name: event_name(job.fields()),
                s: status,
                n: job.attempts + 1,
                r: job.round + 1,
                e: result.reason().map(str::to_string),
                first: job.first.unwrap_or(now),
                at: now,
            };
            let key = match job.key.clone() {
                Some(k) => k,
                None => receipt_key(job.item.receipt_profile(), &dest.id, &job.message_id),
            };
            let item = receipt.to_item(key, 1);
            // Unconditional, so writing it again is harmless.
            match retried(|| self.table.write(WriteOp::Put { item: item.clone(), condition: Condition::None })).await {
                Ok(()) => Done::of(&job, fate),
                // Sent but not recorded: the record comes back; the receipt check and the destination's
                // idempotency key keep it from counting twice.
                Err(e) => Done::of(&job, Fate::StoreFailed(format!("receipt not written: {e}"))),
            }
        });
        let writes: Vec<_> = writes.collect();
        if writes.len() <= RECEIPT_READS_IN_FLIGHT {
            done.extend(futures::future::join_all(writes).await);
        } else {
            done.extend(stream::iter(writes).buffer_unordered(RECEIPT_READS_IN_FLIGHT).collect::<Vec<_>>().await);
        }
        done
    }

    /// The profiles whose traits `dest` asked for, read once per batch.
    async fn profiles_for(&self, dest: &DestinationConfig, jobs: &[Job]) -> HashMap<String, ProfileDoc> {
        if !dest.transport.profile_traits {
            return HashMap::new();
        }
        let ids: BTreeSet<String> = jobs.iter().filter_map(|j| j.item.profile_id.clone()).collect();
        stream::iter(ids)
            .map(|p| async move {
                match self.table.get(&profile_key(&p)).await {
                    Ok(Some(item)) => ProfileDoc::from_attrs(&item.attrs).ok().map(|d| (p, d)),
                    // Without the profile the event still goes, with `context.profile.id` only.
                    _ => None,
                }
            })
            .buffer_unordered(RECEIPT_READS_IN_FLIGHT)
            .filter_map(|x| async move { x })
            .collect()
            .await
    }

    /// The event as `dest` receives it.
    fn outbound(&self, job: &Job, profiles: &HashMap<String, ProfileDoc>) -> Outbound {
        let dest = &self.destinations[job.dest];
        let cc = self.workspace.profiles.default_country_code.as_deref();
        // A destination that drops, scrubs or hashes nothing shares the event; the others change a copy.
        let changes = !dest.drop_fields.is_empty() || dest.kind.is_ad_platform() || dest.hashes();
        let (event, user_data) = if changes {
            let mut event = job.event.to_map();
            let prepared = prepare(dest, &self.scrubber, &mut event, cc);
            (Arc::new(Event::from_map(event)), prepared.user_data)
        } else {
            (job.event.clone(), None)
        };
        let profile = job.item.profile_id.as_ref().map(|id| {
            let mut p = Map::new();
            p.insert("id".into(), Value::from(id.as_str()));
            if dest.transport.profile_traits {
                if let Some(doc) = profiles.get(id) {
                    let traits: Map<String, Value> = doc
                        .traits
                        .iter()
                        .filter(|(_, t)| dest.allows_class(t.class))
                        .map(|(k, t)| (k.clone(), t.value.clone()))
                        .collect();
                    let mut wrapper = Map::new();
                    wrapper.insert("traits".into(), Value::Object(traits));
                    if dest.hashes() {
                        tributary_core::delivery::hash_identifiers(&mut wrapper, cc);
                    }
                    if let Some(t) = wrapper.remove("traits") {
                        p.insert("traits".into(), t);
                    }
                }
            }
            Value::Object(p)
        });
        Outbound { message_id: job.message_id.clone(), source_id: job.source_id.to_string(), event, user_data, profile }
    }

    fn emit(&self, c: &Counters) {
        let mut emf = Emf::new()
            .dimension("Function", "deliver")
            .count("DeliveriesSent", c.sent)
            .count("Delivered", c.delivered)
            .count("AlreadyDelivered", c.already_delivered)
            .count("DeliveriesRetried", c.retried)
            .count("DeadLettered", c.dead_lettered)
            .count("ConsentUpdates", c.consent_updates)
            .count("FailedRecords", c.failed_records);
        for (reason, n) in &c.skipped {
            emf = emf.count(&format!("Skipped.{reason}"), *n);
        }
        for (dest, (ok, retry, dead)) in &c.per_destination {
            emf = emf
                .count(&format!("Delivered.{dest}"), *ok)
                .count(&format!("Retried.{dest}"), *retry)
                .count(&format!("DeadLettered.{dest}"), *dead);
        }
        if let Some(line) = emf.line((self.clock)()) {
            self.metrics.emit(line);
        }
    }
}

/// A track's `event`, a page's or screen's `name`.
fn event_name(event: &Map<String, Value>) -> Option<String> {
    let key = match event.get("type").and_then(Value::as_str)? {
        "track" => "event",
        "page" | "screen" => "name",
        _ => return None,
    };
    event.get(key).and_then(Value::as_str).map(|s| s.chars().take(200).collect())
}

/// Whether `event` is a consent update this function made (and a redrive brought back).
fn is_consent_update(event: &Map<String, Value>) -> bool {
    event.get("event").and_then(Value::as_str) == Some(CONSENT_UPDATED)
        && event.get("messageId").and_then(Value::as_str).is_some_and(|m| m.ends_with(":consent"))
}

/// The `Consent Updated` track event sent for a consent change: who (the event's ids), when, and the profile's
/// consent per purpose now — nothing else from the event.
pub fn consent_update_event(event: &Map<String, Value>, consent: &BTreeMap<String, bool>) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("type".into(), Value::from("track"));
    out.insert("event".into(), Value::from(CONSENT_UPDATED));
    for key in ["userId", "anonymousId", "timestamp", "receivedAt"] {
        if let Some(v) = event.get(key) {
            out.insert(key.into(), v.clone());
        }
    }
    let id = event.get("messageId").and_then(Value::as_str).unwrap_or("");
    out.insert("messageId".into(), Value::from(format!("{id}:consent")));
    let purposes: Map<String, Value> = consent.iter().map(|(k, v)| (k.clone(), Value::Bool(*v))).collect();
    out.insert("properties".into(), json!({ "purposes": purposes }));
    let mut context = Map::new();
    if let Some(Value::Object(c)) = event.get("context") {
        // Identifiers only, so ad platforms can match the person (hashed by the destination's policy).
        if let Some(t) = c.get("traits") {
            let ids: Map<String, Value> = t
                .as_object()
                .map(|t| {
                    t.iter()
                        .filter(|(k, _)| *k == "email" || *k == "phone")
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect()
                })
                .unwrap_or_default();
            if !ids.is_empty() {
                context.insert("traits".into(), Value::Object(ids));
            }
        }
    }
    context.insert("consent".into(), json!({ "categoryPreferences": Value::Object(consent.iter().map(|(k, v)| (k.clone(), Value::Bool(*v))).collect()) }));
    out.insert("context".into(), Value::Object(context));
    out
}

/// Tries of a receipt read or write that fails with a retryable error, and the wait before the second.
const STORE_RETRY: tributary_core::lambda::SendRetry =
    tributary_core::lambda::SendRetry { attempts: 4, backoff: Duration::from_millis(50) };

/// A receipt read or write, tried again briefly while the table refuses it for now (throttled, unavailable, timed
/// out): a passing failure would otherwise send the whole record back to wait out its visibility timeout. Both
/// calls are safe to repeat (a read, an unconditional put).
async fn retried<T, F, Fut>(call: F) -> Result<T, PortError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, PortError>>,
{
    tributary_core::lambda::retried(STORE_RETRY, tokio::time::sleep, call).await
}

#[cfg(test)]
mod store_retry_tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    // Found by the chaos test (tests/tests/chaos.rs): one throttled receipt read used to send the whole record back
    // to wait out its visibility timeout.
    #[tokio::test]
    async fn receipt_calls_refused_for_now_are_tried_again_briefly() {
        let calls = AtomicU32::new(0);
        let flaky = || async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0 => Err(PortError::Throttled("t".into())),
                1 => Err(PortError::Unavailable("u".into())),
                n => Ok(n),
            }
        };
        assert_eq!(retried(flaky).await.expect("third try"), 2);

        calls.store(0, Ordering::SeqCst);
        let invalid = || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(PortError::Invalid("bad key".into()))
        };
        assert!(matches!(retried(invalid).await, Err(PortError::Invalid(_))));
        assert_eq!(calls.load(Ordering::SeqCst), 1, "a request that cannot succeed is not repeated");

        calls.store(0, Ordering::SeqCst);
        let down = || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(PortError::Unavailable("down".into()))
        };
        assert!(matches!(retried(down).await, Err(PortError::Unavailable(_))));
        assert_eq!(calls.load(Ordering::SeqCst), STORE_RETRY.attempts, "bounded");
    }
}
