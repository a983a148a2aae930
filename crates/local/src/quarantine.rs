//! Operating on quarantined events (see [`tributary_core::governance::quarantine`]) held in an object store:
//! finding a source's held events, reading their records, and redriving the ones that pass the source's current
//! governance into the events queue.
//!
//! Redrive puts an accepted event on the events queue in the envelope ingest uses ([`tributary_core::ingest::pack`]),
//! with its original `messageId` and `receivedAt`, and deletes its quarantine object only once the queue has
//! accepted the message carrying it. A crash between the two leaves the object in place: the next redrive queues the
//! event again and stitch's deduplication by `(source, messageId)` keeps it from counting twice. Errors name object
//! keys (which carry only hashes), never event values.

use std::time::Duration;

use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::{Date, OffsetDateTime, UtcOffset};
use tributary_core::governance::policy::{Governance, Outcome};
use tributary_core::governance::quarantine::{self, QuarantineRecord};
use tributary_core::governance::Violation;
use tributary_core::ingest::{self, Envelope};
use tributary_core::ports::{ObjectStore, OutgoingMessage, PortError, Queue, MAX_SEND_BATCH};

/// Records read, governed and queued together: bounds memory, and how much a failure mid-way leaves to redo.
const CHUNK: usize = 200;

/// Only events held from this point on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// From this UTC day (whole days, as the keys are partitioned).
    Day(Date),
    /// From this instant: the keys' days from its UTC day, then the records' `receivedAt`.
    Instant(OffsetDateTime),
}

impl Since {
    /// `YYYY-MM-DD` or an RFC 3339 timestamp.
    pub fn parse(text: &str) -> Option<Since> {
        let text = text.trim();
        if let Ok(t) = OffsetDateTime::parse(text, &Rfc3339) {
            return Some(Since::Instant(t));
        }
        let day = time::macros::format_description!("[year]-[month]-[day]");
        Date::parse(text, day).ok().map(Since::Day)
    }

    /// The first UTC day whose partition can hold matching events.
    pub fn day(&self) -> Date {
        match self {
            Since::Day(d) => *d,
            Since::Instant(t) => t.to_offset(UtcOffset::UTC).date(),
        }
    }

    /// Whether a record of a partition from [`Since::day`] on is recent enough. A `receivedAt` that does not parse
    /// is admitted: its partition already matched.
    pub fn admits(&self, record: &QuarantineRecord) -> bool {
        match self {
            Since::Day(_) => true,
            Since::Instant(since) => {
                OffsetDateTime::parse(&record.received_at, &Rfc3339).map_or(true, |received| received >= *since)
            }
        }
    }
}

impl std::fmt::Display for Since {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Since::Day(d) => write!(f, "{d}"),
            Since::Instant(t) => write!(f, "{}", t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())),
        }
    }
}

/// One quarantine object of a source, as its key names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldKey {
    pub key: String,
    /// UTC day the event was received.
    pub day: Date,
    /// [`message_hash`](tributary_core::profile::layout::message_hash) of `(source, messageId)`, 64 hex digits.
    pub hash: String,
}

/// The objects under a source's quarantine prefix.
#[derive(Debug, Default)]
pub struct Listing {
    /// Quarantine objects of the source (from the `since` day on), in key order: by day, then hash.
    pub held: Vec<HeldKey>,
    /// Keys under the prefix that are not quarantine keys (never read, never deleted).
    pub foreign: Vec<String>,
}

/// Lists the quarantine objects of `source_id`, from the day of `since` on.
pub async fn list_held<S: ObjectStore>(store: &S, source_id: &str, since: Option<Since>) -> Result<Listing, PortError> {
    let mut out = Listing::default();
    for meta in store.list(&quarantine::prefix(source_id)).await? {
        match quarantine::parse_key(&meta.key) {
            Some((source, day, hash)) if source == source_id => {
                if since.is_none_or(|s| day >= s.day()) {
                    out.held.push(HeldKey { key: meta.key, day, hash });
                }
            }
            _ => out.foreign.push(meta.key),
        }
    }
    Ok(out)
}

/// Why a quarantine object could not be used. The messages quote no event value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// Deleted since it was listed (another redrive, an expiry rule).
    #[error("the object is gone")]
    Gone,
    #[error("cannot read the object: {0}")]
    Store(PortError),
    #[error("not a quarantine record: {0}")]
    Format(String),
}

/// Reads and checks the record of `held`: valid JSON of the record format, of this source, with an event object
/// whose `messageId` is the one the key's hash names.
pub async fn read_record<S: ObjectStore>(
    store: &S,
    source_id: &str,
    held: &HeldKey,
) -> Result<QuarantineRecord, ReadError> {
    let bytes = store.get(&held.key).await.map_err(ReadError::Store)?.ok_or(ReadError::Gone)?;
    parse_record(&bytes, source_id, &held.hash)
}

fn parse_record(bytes: &[u8], source_id: &str, hash: &str) -> Result<QuarantineRecord, ReadError> {
    // serde_json's messages may quote the offending value: keep only its category and position.
    let record: QuarantineRecord = serde_json::from_slice(bytes).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Data => "a JSON value of the wrong shape",
            serde_json::error::Category::Eof => "truncated JSON",
            serde_json::error::Category::Syntax | serde_json::error::Category::Io => "invalid JSON",
        };
        ReadError::Format(format!("{what} at line {}, column {}", e.line(), e.column()))
    })?;
    if record.v != quarantine::RECORD_VERSION {
        return Err(ReadError::Format(format!(
            "record format version {} (this tool reads {})",
            record.v,
            quarantine::RECORD_VERSION
        )));
    }
    if record.source_id != source_id {
        return Err(ReadError::Format("the record names another source than its key".into()));
    }
    let Value::Object(event) = &record.event else {
        return Err(ReadError::Format("the record's event is not a JSON object".into()));
    };
    let message_id = event.get("messageId").and_then(Value::as_str).unwrap_or_default();
    if message_id.is_empty() || message_id != record.message_id {
        return Err(ReadError::Format("the event's messageId is missing or differs from the record's".into()));
    }
    if tributary_core::profile::layout::message_hash(source_id, message_id) != hash {
        return Err(ReadError::Format("the event's messageId does not match the hash in the key".into()));
    }
    Ok(record)
}

/// How redrive writes to the events queue.
#[derive(Debug, Clone)]
pub struct RedriveOptions {
    /// Largest envelope (as ingest writes them).
    pub max_message_bytes: usize,
    /// Attempts per message before it is reported and its events stay held.
    pub send_attempts: u32,
    /// First retry delay; doubles each attempt.
    pub send_backoff: Duration,
}

impl Default for RedriveOptions {
    fn default() -> Self {
        RedriveOptions {
            max_message_bytes: tributary_ingest::DEFAULT_MAX_MESSAGE_BYTES,
            send_attempts: 4,
            send_backoff: Duration::from_millis(50),
        }
    }
}

/// A held event that the current governance still quarantines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StillHeld {
    pub held: HeldKey,
    pub plan_version: String,
    pub violations: Vec<Violation>,
}

/// What a redrive did.
#[derive(Debug, Default)]
pub struct RedriveReport {
    /// Events put on the events queue (their objects deleted unless an error says otherwise).
    pub redriven: usize,
    /// Still quarantined by the current plan; their records now carry its version and violations.
    pub still_held: Vec<StillHeld>,
    /// Dropped by the current governance (objects deleted), with the reason code.
    pub dropped: Vec<(HeldKey, &'static str)>,
    /// Keys that could not be handled, and why; everything else was still handled.
    pub errors: Vec<(String, String)>,
    /// Keys under the source's prefix that are not quarantine keys: left alone.
    pub ignored: Vec<String>,
}

/// Re-runs `governance` over every held event of `source_id` (from `since` on): accepted events go to `queue` and
/// their objects are deleted, still-quarantined ones stay (with their record brought up to date), dropped ones are
/// deleted. Only a failure to list the objects is an `Err`; per-object problems are in the report.
pub async fn redrive<S: ObjectStore, Q: Queue>(
    store: &S,
    queue: &Q,
    source_id: &str,
    governance: &Governance,
    since: Option<Since>,
    options: &RedriveOptions,
) -> Result<RedriveReport, PortError> {
    let listing = list_held(store, source_id, since).await?;
    let mut report = RedriveReport { ignored: listing.foreign, ..RedriveReport::default() };
    for chunk in listing.held.chunks(CHUNK) {
        let mut accepted: Vec<(HeldKey, Map<String, Value>)> = Vec::new();
        for held in chunk {
            let record = match read_record(store, source_id, held).await {
                Ok(r) => r,
                Err(ReadError::Gone) => continue,
                Err(e) => {
                    report.errors.push((held.key.clone(), e.to_string()));
                    continue;
                }
            };
            if !since.is_none_or(|s| s.admits(&record)) {
                continue;
            }
            let Value::Object(mut event) = record.event.clone() else {
                continue; // `read_record` checked it is an object.
            };
            let governed = governance.govern(&mut event);
            match governed.outcome {
                Outcome::Accept => accepted.push((held.clone(), event)),
                Outcome::Drop { reason } => match store.delete(&held.key).await {
                    Ok(()) => report.dropped.push((held.clone(), reason)),
                    Err(e) => report
                        .errors
                        .push((held.key.clone(), format!("dropped by the policy ({reason}) but not deleted: {e}"))),
                },
                Outcome::Quarantine { plan_version } => {
                    if plan_version != record.plan_version || governed.violations != record.violations {
                        let updated = QuarantineRecord {
                            plan_version: plan_version.clone(),
                            violations: governed.violations.clone(),
                            ..record
                        };
                        if let Err(e) = put_record(store, &held.key, &updated).await {
                            report.errors.push((held.key.clone(), format!("still held; record not updated: {e}")));
                        }
                    }
                    report.still_held.push(StillHeld {
                        held: held.clone(),
                        plan_version,
                        violations: governed.violations,
                    });
                }
            }
        }
        enqueue_and_delete(store, queue, source_id, accepted, options, &mut report).await;
    }
    Ok(report)
}

async fn put_record<S: ObjectStore>(store: &S, key: &str, record: &QuarantineRecord) -> Result<(), PortError> {
    let bytes = serde_json::to_vec(record).map_err(|_| PortError::Invalid("record is not serializable".into()))?;
    store.put(key, bytes).await
}

/// Packs the accepted events as ingest does, sends the envelopes, and deletes the objects of the events of each
/// envelope the queue accepted.
async fn enqueue_and_delete<S: ObjectStore, Q: Queue>(
    store: &S,
    queue: &Q,
    source_id: &str,
    accepted: Vec<(HeldKey, Map<String, Value>)>,
    options: &RedriveOptions,
    report: &mut RedriveReport,
) {
    if accepted.is_empty() {
        return;
    }
    let (keys, events): (Vec<HeldKey>, Vec<Map<String, Value>>) = accepted.into_iter().unzip();
    let (bodies, counts) = pack_counted(source_id, &events, options.max_message_bytes);
    let results = send_all(queue, &bodies, options).await;
    let mut start = 0;
    for (count, result) in counts.into_iter().zip(results) {
        let of_message = &keys[start..start + count];
        start += count;
        if let Err(reason) = result {
            for held in of_message {
                report.errors.push((held.key.clone(), format!("the events queue refused it ({reason}); still held")));
            }
            continue;
        }
        for held in of_message {
            report.redriven += 1;
            if let Err(e) = store.delete(&held.key).await {
                report.errors.push((
                    held.key.clone(),
                    format!("queued but not removed from quarantine ({e}); a rerun queues it again, deduplicated"),
                ));
            }
        }
    }
}

/// [`ingest::pack`], with the number of events in each envelope (in order). Should an envelope not read back (it
/// always does), every event gets an envelope of its own instead, so the counts are always exact.
fn pack_counted(source_id: &str, events: &[Map<String, Value>], max_bytes: usize) -> (Vec<String>, Vec<usize>) {
    let bodies = ingest::pack(source_id, events, max_bytes);
    let counts: Option<Vec<usize>> =
        bodies.iter().map(|b| serde_json::from_str::<Envelope>(b).ok().map(|e| e.events.len())).collect();
    match counts {
        Some(counts) if counts.iter().sum::<usize>() == events.len() => (bodies, counts),
        _ => {
            let bodies: Vec<String> =
                events.iter().flat_map(|e| ingest::pack(source_id, std::slice::from_ref(e), max_bytes)).collect();
            let counts = vec![1; bodies.len()];
            (bodies, counts)
        }
    }
}

/// Sends every body (≤ [`MAX_SEND_BATCH`] per call), retrying retryable refusals with backoff. One result per body:
/// `Err` with the last reason if the queue never accepted it.
async fn send_all<Q: Queue>(queue: &Q, bodies: &[String], options: &RedriveOptions) -> Vec<Result<(), String>> {
    let mut results: Vec<Result<(), String>> = vec![Err("not sent".into()); bodies.len()];
    let mut pending: Vec<usize> = (0..bodies.len()).collect();
    let mut delay = options.send_backoff;
    let attempts = options.send_attempts.max(1);
    for attempt in 1..=attempts {
        let mut retry = Vec::new();
        for chunk in pending.chunks(MAX_SEND_BATCH) {
            let messages: Vec<OutgoingMessage> =
                chunk.iter().map(|&i| OutgoingMessage { id: i.to_string(), body: bodies[i].clone() }).collect();
            match queue.send_batch(&messages).await {
                Ok(failures) => {
                    for &i in chunk {
                        results[i] = Ok(());
                    }
                    for f in failures {
                        let Some(i) = f.id.parse::<usize>().ok().filter(|i| chunk.contains(i)) else { continue };
                        results[i] = Err(f.reason);
                        if f.retryable {
                            retry.push(i);
                        }
                    }
                }
                Err(e) => {
                    for &i in chunk {
                        results[i] = Err(e.to_string());
                        if e.is_retryable() {
                            retry.push(i);
                        }
                    }
                }
            }
        }
        if retry.is_empty() || attempt == attempts {
            break;
        }
        tokio::time::sleep(delay).await;
        delay *= 2;
        pending = retry;
    }
    results
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use time::macros::{date, datetime};
    use tributary_core::governance::{TrackingPlan, ViolationKind};

    use super::*;
    use crate::dir_store::DirStore;
    use crate::sqlite_queue::{QueueOptions, SqliteQueue};

    const SOURCE: &str = "web";

    struct Fixture {
        store: DirStore,
        queue: SqliteQueue,
        _dir: tempfile::TempDir,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = DirStore::open(&dir.path().join("objects")).expect("store");
        let queue =
            SqliteQueue::open(&dir.path().join("queues.sqlite"), "events", QueueOptions::default()).expect("queue");
        Fixture { store, queue, _dir: dir }
    }

    fn plan(events: &[&str], version: &str) -> Governance {
        let plan: TrackingPlan = serde_json::from_value(json!({
            "version": version,
            "events": events.iter().map(|e| (e.to_string(), json!({"type": "object"}))).collect::<Map<_, _>>(),
            "unplanned": "quarantine",
        }))
        .expect("plan");
        Governance::new(Some(&plan), None).expect("compiles")
    }

    fn event(message_id: &str, name: &str) -> Map<String, Value> {
        let Value::Object(m) = json!({"type": "track", "event": name, "messageId": message_id, "userId": "u-1",
                                      "receivedAt": "2025-03-10T12:00:00.000Z", "properties": {"n": 1}})
        else {
            unreachable!()
        };
        m
    }

    /// Holds `event` as ingest would, with plan version "v1".
    async fn hold(store: &DirStore, event: Map<String, Value>) -> String {
        let at = datetime!(2025-03-10 12:00 UTC);
        let message_id = event["messageId"].as_str().unwrap_or_default().to_owned();
        let key = quarantine::key_for(SOURCE, at, &message_id);
        let violations = vec![Violation { kind: ViolationKind::UnplannedEvent, path: "/event".into() }];
        let record = QuarantineRecord::new(SOURCE, at, "v1".into(), violations, event);
        put_record(store, &key, &record).await.expect("put");
        key
    }

    fn queued_message_ids(messages: &[tributary_core::ports::ReceivedMessage]) -> Vec<String> {
        let mut ids = Vec::new();
        for m in messages {
            let env: Envelope = serde_json::from_str(&m.body).expect("an envelope");
            assert_eq!(env.source_id, SOURCE);
            ids.extend(env.events.iter().map(|e| e["messageId"].as_str().unwrap_or_default().to_owned()));
        }
        ids
    }

    #[tokio::test]
    async fn accepted_events_are_queued_once_and_the_rest_stay_held() {
        let f = fixture();
        hold(&f.store, event("m-1", "Wishlist Viewed")).await;
        hold(&f.store, event("m-2", "Wishlist Viewed")).await;
        let other = hold(&f.store, event("m-3", "Something Else")).await;

        let g = plan(&["Wishlist Viewed"], "v2");
        let report = redrive(&f.store, &f.queue, SOURCE, &g, None, &RedriveOptions::default()).await.expect("ok");
        assert_eq!((report.redriven, report.still_held.len(), report.dropped.len()), (2, 1, 0), "{report:?}");
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!(report.still_held[0].held.key, other);
        assert_eq!(report.still_held[0].plan_version, "v2");

        let queued = f.queue.peek_all().await.expect("peek");
        assert_eq!(queued.len(), 1, "both events in one envelope");
        let mut ids = queued_message_ids(&queued);
        ids.sort();
        assert_eq!(ids, ["m-1", "m-2"]);
        let env: Envelope = serde_json::from_str(&queued[0].body).expect("envelope");
        assert_eq!(env.events[0]["receivedAt"], "2025-03-10T12:00:00.000Z", "the original event, unchanged");

        // The held one now names the plan that holds it; nothing else is left.
        let listing = list_held(&f.store, SOURCE, None).await.expect("list");
        assert_eq!(listing.held.len(), 1);
        let record = read_record(&f.store, SOURCE, &listing.held[0]).await.expect("record");
        assert_eq!(record.plan_version, "v2");

        // A second run redrives nothing.
        let again = redrive(&f.store, &f.queue, SOURCE, &g, None, &RedriveOptions::default()).await.expect("ok");
        assert_eq!((again.redriven, again.still_held.len()), (0, 1));
        assert_eq!(f.queue.peek_all().await.expect("peek").len(), 1);
    }

    #[tokio::test]
    async fn unreadable_and_foreign_objects_are_reported_and_the_rest_still_handled() {
        let f = fixture();
        let good = hold(&f.store, event("m-1", "Wishlist Viewed")).await;
        let hash = "0".repeat(64);
        let garbage = format!("quarantine/{SOURCE}/2025-03-10/{hash}.json");
        f.store.put(&garbage, b"{\"v\": 1, \"sourceId\": \"secret-value\"".to_vec()).await.expect("put");
        let forged = format!("quarantine/{SOURCE}/2025-03-11/{hash}.json");
        let record =
            QuarantineRecord::new(SOURCE, datetime!(2025-03-11 0:00 UTC), "v1".into(), vec![], event("m-9", "X"));
        put_record(&f.store, &forged, &record).await.expect("put");
        f.store.put(&format!("quarantine/{SOURCE}/notes.txt"), b"hi".to_vec()).await.expect("put");

        let g = plan(&["Wishlist Viewed", "X"], "v2");
        let report = redrive(&f.store, &f.queue, SOURCE, &g, None, &RedriveOptions::default()).await.expect("ok");
        assert_eq!(report.redriven, 1);
        let keys: Vec<&str> = report.errors.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, [garbage.as_str(), forged.as_str()], "{:?}", report.errors);
        assert_eq!(report.ignored, ["quarantine/web/notes.txt"]);
        for (_, why) in &report.errors {
            assert!(!why.contains("secret"), "no event value in {why}");
        }
        assert_eq!(f.store.get(&good).await.expect("get"), None, "the good one was redriven and deleted");
        assert!(f.store.get(&garbage).await.expect("get").is_some(), "unreadable objects are left alone");
    }

    #[tokio::test]
    async fn dropped_events_are_deleted_and_since_filters_by_day_and_instant() {
        let f = fixture();
        hold(&f.store, event("m-1", "Wishlist Viewed")).await;
        let pii: tributary_core::governance::policy::PiiPolicy =
            serde_json::from_value(json!({"detect": ["email"], "action": "drop_event"})).expect("pii");
        let mut e = event("m-2", "Wishlist Viewed");
        e.insert("properties".into(), json!({"note": "write to a@example.com"}));
        hold(&f.store, e).await;
        let g = Governance::new(None, Some(&pii)).expect("governance");

        let later = Since::parse("2025-03-11").expect("a day");
        let r = redrive(&f.store, &f.queue, SOURCE, &g, Some(later), &RedriveOptions::default()).await.expect("ok");
        assert_eq!((r.redriven, r.dropped.len()), (0, 0), "nothing from the 11th on");
        let after_noon = Since::parse("2025-03-10T12:00:01Z").expect("an instant");
        assert_eq!(after_noon.day(), date!(2025 - 03 - 10));
        let r =
            redrive(&f.store, &f.queue, SOURCE, &g, Some(after_noon), &RedriveOptions::default()).await.expect("ok");
        assert_eq!((r.redriven, r.dropped.len()), (0, 0), "both were received at noon");

        let r = redrive(&f.store, &f.queue, SOURCE, &g, Since::parse("2025-03-10"), &RedriveOptions::default())
            .await
            .expect("ok");
        assert_eq!((r.redriven, r.dropped.len(), r.errors.len()), (1, 1, 0), "{r:?}");
        assert_eq!(r.dropped[0].1, "pii");
        assert!(list_held(&f.store, SOURCE, None).await.expect("list").held.is_empty());
        assert_eq!(queued_message_ids(&f.queue.peek_all().await.expect("peek")), ["m-1"]);
    }

    #[test]
    fn since_parses_days_and_rfc3339_only() {
        assert_eq!(Since::parse("2025-03-10"), Some(Since::Day(date!(2025 - 03 - 10))));
        assert_eq!(Since::parse("2025-03-10T01:00:00+02:00").map(|s| s.day()), Some(date!(2025 - 03 - 09)));
        for bad in ["", "yesterday", "2025-3-10", "2025-02-30", "2025-03-10 12:00"] {
            assert_eq!(Since::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn pack_counted_matches_pack() {
        let events: Vec<_> = (0..50).map(|i| event(&format!("m-{i}"), "E")).collect();
        let (bodies, counts) = pack_counted(SOURCE, &events, 2_000);
        assert!(bodies.len() > 1);
        assert_eq!(bodies, ingest::pack(SOURCE, &events, 2_000));
        assert_eq!(counts.iter().sum::<usize>(), 50);
    }
}
