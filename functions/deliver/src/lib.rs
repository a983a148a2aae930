//! The deliver function: consumes the delivery queue and sends each stitched event to every destination that may
//! have it.
//!
//! Per batch of records: route every (event, destination) (filters, data-party class, fail-closed consent),
//! skip what a receipt says was delivered, prepare (drop fields, scrub, hash), send in batches with up to
//! `delivery.max_in_flight` requests in flight, then write one receipt per (destination, event). Retryable failures
//! come back after an exponential backoff with jitter (the record's visibility is changed; `Retry-After` is
//! honoured); refusals and exhausted retries go to the DLQ at once with their reason, one dead letter per
//! (destination, event), which `tributary redrive` moves back.

pub mod export;
pub mod http;
pub mod payload;
pub mod redrive;
pub mod ssrf;
pub mod types;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use futures::stream::{self, StreamExt};
use serde_json::{json, Map, Value};
use tributary_core::config::{DataPartyClass, WorkspaceConfig};
use tributary_core::delivery::{
    backoff_ms, interpolate, prepare, receipt_key, route, DeadLetter, DeliveryEnvelope, DestinationConfig,
    DestinationKind, Handoff, Receipt, ReceiptStatus, Route, Scrubber,
};
use tributary_core::metrics::{Emf, MetricsSink};
use tributary_core::ports::{ObjectStore, OutgoingMessage, PortError, Queue, TableStore, WriteOp};
use tributary_core::profile::layout::profile_key;
use tributary_core::profile::{consent, ProfileDoc};

pub use types::{Outbound, SendResult};

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
    item: Arc<Handoff>,
    source_id: Arc<str>,
    /// The messageId receipts and idempotency use (`<id>:consent` for a consent update).
    message_id: String,
    /// The consent update made for this job; `None`: the item's own event (not copied until it is prepared).
    made: Option<Map<String, Value>>,
    /// From the receipt: attempts in all and in this round.
    attempts: u32,
    round: u32,
    first: Option<i64>,
    /// Sent by a redrive (an envelope aimed at some destinations): a dead-lettered event may go again.
    redrive: bool,
}

impl Job {
    fn event(&self) -> &Map<String, Value> {
        static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
        match &self.made {
            Some(m) => m,
            None => self.item.event.as_object().unwrap_or_else(|| EMPTY.get_or_init(Map::new)),
        }
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
        let mut jobs = Vec::new();
        for (r, record) in records.iter().enumerate() {
            let receive_count =
                record.attributes.get("ApproximateReceiveCount").and_then(|v| v.parse::<u32>().ok()).unwrap_or(1);
            match serde_json::from_str::<DeliveryEnvelope>(record.body.as_deref().unwrap_or("")) {
                Ok(envelope) => self.plan(r, envelope, &mut jobs, &mut counters),
                Err(_) if receive_count >= self.settings.max_receive_count => {
                    // Nothing to dead-letter by destination; the queue's redrive policy moves it as it is.
                    outcome[r] = Err("record body is not a delivery envelope".into());
                }
                Err(_) => outcome[r] = Err("record body is not a delivery envelope".into()),
            }
        }

        let jobs = self.with_receipts(jobs, &mut outcome, &mut counters).await;
        let results = self.send_all(&jobs).await;
        self.settle(jobs, results, &records, &mut outcome, &mut counters).await;

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
        let mut resp = SqsBatchResponse::default();
        resp.batch_item_failures = failures
            .into_iter()
            .filter_map(|id| serde_json::from_value(json!({ "itemIdentifier": id })).ok())
            .collect();
        resp
    }

    /// Routes every item of a record to every destination.
    fn plan(&self, record: usize, envelope: DeliveryEnvelope, jobs: &mut Vec<Job>, c: &mut Counters) {
        let source_id: Arc<str> = Arc::from(envelope.source_id.as_str());
        let redrive = envelope.only.is_some();
        for item in envelope.items {
            let item = Arc::new(item);
            let Value::Object(event) = &item.event else {
                *c.skipped.entry("not_an_object").or_default() += 1;
                continue;
            };
            if is_consent_update(event) {
                // A redriven consent update: it goes (again) only where consent updates go.
                for (d, dest) in self.destinations.iter().enumerate() {
                    let wanted = envelope.only.as_ref().is_none_or(|only| only.iter().any(|o| o == &dest.id));
                    if wanted
                        && dest.transport.consent_updates
                        && self.takes_consent_update(dest, &source_id, item.class)
                    {
                        jobs.push(Job {
                            record,
                            dest: d,
                            item: item.clone(),
                            source_id: source_id.clone(),
                            message_id: item.message_id().to_string(),
                            made: None,
                            attempts: 0,
                            round: 0,
                            first: None,
                            redrive,
                        });
                    }
                }
                continue;
            }
            let event_consent = consent::extract(event, &self.workspace.consent);
            for (d, dest) in self.destinations.iter().enumerate() {
                if envelope.only.as_ref().is_some_and(|only| !only.iter().any(|o| o == &dest.id)) {
                    continue;
                }
                match route(dest, &source_id, item.class, event, &item.consent, &event_consent) {
                    Route::Send => jobs.push(Job {
                        record,
                        dest: d,
                        item: item.clone(),
                        source_id: source_id.clone(),
                        message_id: item.message_id().to_string(),
                        made: None,
                        attempts: 0,
                        round: 0,
                        first: None,
                        redrive,
                    }),
                    Route::Skip(reason) => *c.skipped.entry(reason.as_str()).or_default() += 1,
                }
                if item.consent_changed
                    && dest.transport.consent_updates
                    && self.takes_consent_update(dest, &source_id, item.class)
                {
                    c.consent_updates += 1;
                    jobs.push(Job {
                        record,
                        dest: d,
                        item: item.clone(),
                        source_id: source_id.clone(),
                        message_id: format!("{}:consent", item.message_id()),
                        made: Some(consent_update_event(event, &item.consent)),
                        attempts: 0,
                        round: 0,
                        first: None,
                        redrive,
                    });
                }
            }
        }
    }

    /// A consent update goes to a destination that asked for them whatever the consent now says (a withdrawal is
    /// exactly what it must hear), but still only from the sources and classes it takes.
    fn takes_consent_update(&self, dest: &DestinationConfig, source_id: &str, class: DataPartyClass) -> bool {
        dest.sources.as_ref().is_none_or(|s| s.iter().any(|x| x == source_id)) && dest.allows_class(class)
    }

    /// Reads the receipts of every job: delivered ones are dropped (idempotency), the others carry their attempt
    /// counts. A record whose receipts cannot be read fails as a whole (nothing sent twice by guesswork).
    async fn with_receipts(
        &self,
        jobs: Vec<Job>,
        outcome: &mut [Result<Option<u64>, String>],
        c: &mut Counters,
    ) -> Vec<Job> {
        let limit = self.workspace.delivery.max_in_flight;
        let read: Vec<(Job, Result<Option<Receipt>, PortError>)> = stream::iter(jobs)
            .map(|job| async move {
                let dest = &self.destinations[job.dest].id;
                let key = receipt_key(job.item.profile_id.as_deref(), dest, &job.message_id);
                let receipt = match self.table.get(&key).await {
                    Ok(Some(item)) => Ok(Receipt::from_attrs(&item.attrs).ok()),
                    Ok(None) => Ok(None),
                    Err(e) => Err(e),
                };
                (job, receipt)
            })
            .buffered(limit)
            .collect()
            .await;
        let mut out = Vec::with_capacity(read.len());
        for (mut job, receipt) in read {
            match receipt {
                Err(e) => {
                    if outcome[job.record].is_ok() {
                        outcome[job.record] = Err(format!("receipts unavailable: {e}"));
                    }
                }
                Ok(Some(r)) if r.s == ReceiptStatus::Delivered => c.already_delivered += 1,
                // Already in the DLQ with its reason: only a redrive sends it again (its record may come back for
                // another event's retry).
                Ok(Some(r)) if r.s == ReceiptStatus::Failed && !job.redrive => {
                    *c.skipped.entry("dead_lettered").or_default() += 1
                }
                Ok(Some(r)) => {
                    job.attempts = r.n;
                    job.round = if r.s == ReceiptStatus::Failed { 0 } else { r.r };
                    job.first = Some(r.first);
                    out.push(job);
                }
                Ok(None) => out.push(job),
            }
        }
        // A record that failed outright sends nothing now; it all comes back.
        out.retain(|j| outcome[j.record].is_ok());
        out
    }

    /// Prepares and sends every job, grouped per destination into batches, many requests in flight.
    async fn send_all(&self, jobs: &[Job]) -> Vec<SendResult> {
        let mut profiles: HashMap<String, Option<ProfileDoc>> = HashMap::new();
        for job in jobs {
            if self.destinations[job.dest].transport.profile_traits {
                if let Some(p) = &job.item.profile_id {
                    if !profiles.contains_key(p) {
                        profiles.insert(p.clone(), None);
                    }
                }
            }
        }
        let limit = self.workspace.delivery.max_in_flight;
        let ids: Vec<String> = profiles.keys().cloned().collect();
        let loaded: Vec<(String, Option<ProfileDoc>)> = stream::iter(ids)
            .map(|p| async move {
                let doc = match self.table.get(&profile_key(&p)).await {
                    Ok(Some(item)) => ProfileDoc::from_attrs(&item.attrs).ok(),
                    _ => None,
                };
                (p, doc)
            })
            .buffer_unordered(limit)
            .collect()
            .await;
        profiles.extend(loaded);

        // Batches: per destination, in job order, `batch_size` at a time.
        let mut by_dest: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (i, job) in jobs.iter().enumerate() {
            by_dest.entry(job.dest).or_default().push(i);
        }
        let mut batches: Vec<(usize, Vec<usize>)> = Vec::new();
        for (d, idx) in by_dest {
            let size = self.destinations[d].transport.batch_size(self.destinations[d].kind).max(1);
            for chunk in idx.chunks(size) {
                batches.push((d, chunk.to_vec()));
            }
        }
        let prepared: Vec<(usize, Vec<usize>, Vec<Outbound>)> = batches
            .into_iter()
            .map(|(d, idx)| {
                let out = idx.iter().map(|&i| self.outbound(&jobs[i], &profiles)).collect();
                (d, idx, out)
            })
            .collect();
        let sent: Vec<(Vec<usize>, SendResult)> = stream::iter(prepared)
            .map(|(d, idx, out)| async move {
                let dest = &self.destinations[d];
                let result = self.sender.send(dest, &out).await;
                // A refused batch of several may hold one poison event: send them one by one so only it fails.
                if out.len() > 1 && matches!(result, SendResult::Rejected { .. }) {
                    let mut each = Vec::with_capacity(out.len());
                    for o in out.chunks(1) {
                        each.push(self.sender.send(dest, o).await);
                    }
                    return idx.into_iter().zip(each).map(|(i, r)| (vec![i], r)).collect::<Vec<_>>();
                }
                vec![(idx, result)]
            })
            .buffer_unordered(limit)
            .flat_map(stream::iter)
            .collect()
            .await;
        let mut results = vec![SendResult::Retry { reason: "not_sent".into(), after: None }; jobs.len()];
        for (idx, r) in sent {
            for i in idx {
                results[i] = r.clone();
            }
        }
        results
    }

    /// The event as `dest` receives it.
    fn outbound(&self, job: &Job, profiles: &HashMap<String, Option<ProfileDoc>>) -> Outbound {
        let dest = &self.destinations[job.dest];
        let mut event = job.event().clone();
        let cc = self.workspace.profiles.default_country_code.as_deref();
        let prepared = prepare(dest, &self.scrubber, &mut event, cc);
        let profile = job.item.profile_id.as_ref().map(|id| {
            let mut p = Map::new();
            p.insert("id".into(), Value::from(id.as_str()));
            if dest.transport.profile_traits {
                if let Some(Some(doc)) = profiles.get(id) {
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
        Outbound {
            message_id: job.message_id.clone(),
            source_id: job.source_id.to_string(),
            event,
            user_data: prepared.user_data,
            profile,
        }
    }

    /// Writes dead letters, then receipts, and decides each record's fate.
    async fn settle(
        &self,
        jobs: Vec<Job>,
        results: Vec<SendResult>,
        records: &[aws_lambda_events::sqs::SqsMessage],
        outcome: &mut [Result<Option<u64>, String>],
        c: &mut Counters,
    ) {
        let now = (self.clock)();
        let max_attempts = self.workspace.delivery.max_attempts;
        let receive_counts: Vec<u32> = records
            .iter()
            .map(|r| r.attributes.get("ApproximateReceiveCount").and_then(|v| v.parse().ok()).unwrap_or(1))
            .collect();
        let mut receipts = Vec::with_capacity(jobs.len());
        let mut letters: Vec<(usize, DeadLetter)> = Vec::new();
        for (job, result) in jobs.into_iter().zip(results) {
            let dest = &self.destinations[job.dest];
            let attempts = job.attempts + 1;
            let round = job.round + 1;
            c.sent += 1;
            let per = c.per_destination.entry(dest.id.clone()).or_default();
            let status = match &result {
                SendResult::Delivered => {
                    c.delivered += 1;
                    per.0 += 1;
                    ReceiptStatus::Delivered
                }
                SendResult::Retry { reason, after }
                    if round < max_attempts && receive_counts[job.record] < self.settings.max_receive_count =>
                {
                    c.retried += 1;
                    per.1 += 1;
                    let d = self.workspace.delivery.clone();
                    let wait = backoff_ms(
                        round,
                        d.backoff_base_ms,
                        d.backoff_max_ms,
                        (self.jitter)(),
                        after.map(|a| a.as_millis() as u64),
                    )
                    .min(tributary_core::delivery::settings::MAX_BACKOFF_MS);
                    tracing::info!(destination = %dest.id, reason = %reason, attempt = round, wait_ms = wait, "Delivery will be retried.");
                    if let Ok(prev) = &outcome[job.record] {
                        outcome[job.record] = Ok(Some(prev.unwrap_or(0).max(wait)));
                    }
                    ReceiptStatus::Retrying
                }
                SendResult::Retry { reason, .. } | SendResult::Rejected { reason } => {
                    c.dead_lettered += 1;
                    per.2 += 1;
                    let reason = if matches!(result, SendResult::Retry { .. }) {
                        format!("retries_exhausted:{reason}")
                    } else {
                        reason.clone()
                    };
                    tracing::warn!(destination = %dest.id, reason = %reason, attempts = attempts, "Delivery dead-lettered.");
                    let mut item = (*job.item).clone();
                    if job.message_id.ends_with(":consent")
                        && !job.item.event.as_object().is_some_and(is_consent_update)
                    {
                        // The consent update itself, so a redrive sends what failed.
                        item.event = Value::Object(job.event().clone());
                    }
                    letters.push((
                        receipts.len(),
                        DeadLetter {
                            dead_letter: 1,
                            destination_id: dest.id.clone(),
                            source_id: job.source_id.to_string(),
                            reason,
                            attempts,
                            failed_at: now,
                            item,
                        },
                    ));
                    ReceiptStatus::Failed
                }
            };
            let receipt = Receipt {
                d: dest.id.clone(),
                m: job.message_id.clone(),
                src: job.source_id.to_string(),
                t: job.event().get("type").and_then(Value::as_str).unwrap_or("").to_string(),
                name: event_name(job.event()),
                s: status,
                n: attempts,
                r: round,
                e: result.reason().map(str::to_string),
                first: job.first.unwrap_or(now),
                at: now,
            };
            receipts.push((
                job.record,
                receipt_key(job.item.profile_id.as_deref(), &dest.id, &job.message_id),
                receipt,
            ));
        }

        // Dead letters first: a receipt must never say "failed" for something the DLQ does not hold.
        let mut lost = vec![false; receipts.len()];
        for chunk in letters.chunks(tributary_core::ports::MAX_SEND_BATCH) {
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
        let limit = self.workspace.delivery.max_in_flight;
        let written: Vec<(usize, bool)> = stream::iter(receipts.into_iter().enumerate())
            .map(|(i, (record, key, receipt))| {
                let skip = lost[i];
                async move {
                    if skip {
                        return (record, false);
                    }
                    let op = WriteOp::Put {
                        item: receipt.to_item(key, 1),
                        condition: tributary_core::ports::Condition::None,
                    };
                    (record, self.table.write(op).await.is_ok())
                }
            })
            .buffer_unordered(limit)
            .collect()
            .await;
        for (record, ok) in written {
            if !ok && outcome[record].is_ok() {
                // Sent but not recorded (or not dead-lettered): the record comes back; idempotency keys and the
                // receipt check keep destinations from counting it twice.
                outcome[record] = Err("a receipt or dead letter could not be written".into());
            }
        }
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
