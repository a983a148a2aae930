//! `tributary redrive`: the deliveries given up on, in the delivery DLQ — listed (`--dry-run`) or moved back to the
//! delivery queue, for one destination and from a point in time. Locally it works on the data dir of
//! `tributary serve` (safely beside a running server); with `--queue-url` and `--dlq-url` (a build with the `aws`
//! feature) on the SQS queues of a deployed stack.
//!
//! With `--events`, the events DLQ (event batches stitch could not process) is moved back to the events queue
//! instead. On the way, the events of erased subjects are dropped: each batch is checked against the suppression
//! list (the `suppressed` index of the profile table, read once per run); a batch that loses events is rewritten
//! without them, and one left empty is deleted instead of moved. The report counts them (`suppressed`), never says
//! which they were.
//!
//! Nothing printed holds event content: destination, reason code, attempts, times, messageIds.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tributary_core::dsr::suppression::{EventIdentifiers, SuppressionList};
use tributary_core::ingest::Envelope;
use tributary_core::ports::{OutgoingMessage, PortError, Queue, ReceivedMessage, TableStore};
use tributary_deliver::redrive::{self, Filter, Report};
use tributary_local::runtime::{
    DataDir, DELIVERY_DLQ, DELIVERY_MAX_RECEIVE_COUNT, DELIVERY_QUEUE, EVENTS_DLQ, EVENTS_QUEUE, MAX_RECEIVE_COUNT,
    PROFILES_TABLE,
};
use tributary_local::sqlite_queue::{QueueOptions, SqliteQueue};
use tributary_local::sqlite_table::SqliteTable;

#[derive(Args)]
pub struct RedriveArgs {
    /// The events DLQ instead: move event batches back to the events queue, dropping the events of erased subjects.
    #[arg(long, conflicts_with = "destination")]
    events: bool,
    /// With --events: the workspace file `tributary serve` runs with, for how identifiers are read (default
    /// country code, blocked values); without it, the data dir's demo workspace, or the defaults.
    #[arg(long, requires = "events")]
    config: Option<PathBuf>,
    /// With --events on a deployed stack: the profile table, whose `suppressed` index lists erased identifiers.
    #[arg(long, requires = "events")]
    table: Option<String>,
    /// Only deliveries to this destination (dead letters name theirs; a raw envelope is re-sent to this one only).
    #[arg(long)]
    destination: Option<String>,
    /// Only deliveries given up on at or after this instant (RFC 3339) or UTC day (YYYY-MM-DD).
    #[arg(long, value_parser = parse_since)]
    since: Option<i64>,
    /// List what would be moved, move nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// The data dir of `tributary serve`.
    #[arg(long, default_value = ".tributary")]
    data_dir: PathBuf,
    /// The delivery queue (the events queue with --events) of a deployed stack (with --dlq-url; needs a build with
    /// `--features aws`).
    #[arg(long, requires = "dlq_url")]
    queue_url: Option<String>,
    /// The delivery DLQ (the events DLQ with --events) of a deployed stack.
    #[arg(long, requires = "queue_url")]
    dlq_url: Option<String>,
}

/// Epoch milliseconds of an RFC 3339 instant or the start of a UTC day.
fn parse_since(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let t = OffsetDateTime::parse(text, &Rfc3339).or_else(|_| {
        let day = time::macros::format_description!("[year]-[month]-[day]");
        time::Date::parse(text, day).map(|d| d.midnight().assume_utc())
    });
    t.map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .map_err(|_| format!("expected YYYY-MM-DD or an RFC 3339 timestamp, got {text:?}"))
}

pub fn run(args: RedriveArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    if args.events {
        return runtime.block_on(run_events(args));
    }
    runtime.block_on(async move {
        let filter = Filter { destination: args.destination.clone(), since_ms: args.since };
        let report = match (&args.queue_url, &args.dlq_url) {
            (Some(queue), Some(dlq)) => on_aws(queue, dlq, &filter, args.dry_run).await?,
            _ => {
                let data = DataDir(args.data_dir.clone());
                let queue = local_queue(
                    &data,
                    DELIVERY_QUEUE,
                    QueueOptions { dead_letter: Some((DELIVERY_DLQ.to_string(), DELIVERY_MAX_RECEIVE_COUNT)) },
                )?;
                let dlq = local_queue(&data, DELIVERY_DLQ, QueueOptions::default())?;
                sweep(&dlq, &queue, &filter, args.dry_run).await?
            }
        };
        print(&report, args.dry_run, args.json)?;
        Ok(ExitCode::SUCCESS)
    })
}

/// A queue of the data dir `tributary serve` uses; an error naming the place when there is none.
fn local_queue(data: &DataDir, name: &str, options: QueueOptions) -> anyhow::Result<SqliteQueue> {
    if !data.queues().is_file() {
        anyhow::bail!("{}: no queues here (pass --data-dir, the one `tributary serve` uses)", data.queues().display());
    }
    SqliteQueue::open(&data.queues(), name, options)
        .map_err(|e| anyhow::anyhow!("{}: queue {name}: {e}", data.queues().display()))
}

async fn sweep<Q: Queue>(dlq: &Q, queue: &Q, filter: &Filter, dry_run: bool) -> anyhow::Result<Report> {
    redrive::run(dlq, queue, filter, dry_run).await.map_err(|e| anyhow::anyhow!("redrive stopped: {e}"))
}

#[cfg(feature = "aws")]
async fn on_aws(queue: &str, dlq: &str, filter: &Filter, dry_run: bool) -> anyhow::Result<Report> {
    let clients = tributary_aws::AwsClients::from_env().await;
    sweep(&clients.sqs_queue(dlq), &clients.sqs_queue(queue), filter, dry_run).await
}

#[cfg(not(feature = "aws"))]
async fn on_aws(_queue: &str, _dlq: &str, _filter: &Filter, _dry_run: bool) -> anyhow::Result<Report> {
    anyhow::bail!("this build has no AWS support: build with `cargo build -p tributary-cli --features aws`")
}

fn print(report: &Report, dry_run: bool, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    for e in report.entries.iter().filter(|e| e.selected) {
        let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(e.at_ms) * 1_000_000)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_default();
        println!(
            "{at}  {:<20} {:<28} attempts={:<3} events={} {}",
            e.destination.as_deref().unwrap_or("(any)"),
            e.reason.as_deref().unwrap_or("(moved by the queue)"),
            e.attempts.map(|a| a.to_string()).unwrap_or_default(),
            e.events,
            e.message_ids.join(","),
        );
    }
    let verb = if dry_run { "would move" } else { "moved" };
    println!(
        "{verb} {} message(s); {} left in the DLQ; {} unreadable",
        if dry_run { report.entries.iter().filter(|e| e.selected).count() } else { report.moved },
        report.kept.saturating_sub(if dry_run { report.entries.iter().filter(|e| e.selected).count() } else { 0 }),
        report.unreadable
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// --events: the events DLQ back to the events queue, without the events of erased subjects.
// ---------------------------------------------------------------------------------------------------------------

async fn run_events(args: RedriveArgs) -> anyhow::Result<ExitCode> {
    let data = DataDir(args.data_dir.clone());
    let ids = event_identifiers(args.config.as_deref(), &data)?;
    let report = match (&args.queue_url, &args.dlq_url) {
        (Some(queue), Some(dlq)) => {
            let Some(table) = &args.table else {
                anyhow::bail!("--events on a deployed stack needs --table, the profile table (for erased subjects)")
            };
            events_on_aws(queue, dlq, table, &ids, args.since, args.dry_run).await?
        }
        _ => {
            let queue = local_queue(
                &data,
                EVENTS_QUEUE,
                QueueOptions { dead_letter: Some((EVENTS_DLQ.to_string(), MAX_RECEIVE_COUNT)) },
            )?;
            let dlq = local_queue(&data, EVENTS_DLQ, QueueOptions::default())?;
            let table = SqliteTable::open(&data.tables(), PROFILES_TABLE)
                .map_err(|e| anyhow::anyhow!("{}: profile table: {e}", data.tables().display()))?;
            sweep_events(&dlq, &queue, &table, &ids, args.since, args.dry_run).await?
        }
    };
    print_events(&report, args.dry_run, args.json)?;
    Ok(ExitCode::SUCCESS)
}

/// How identifiers are read: as the workspace of `--config` reads them, or the data dir's demo workspace, or the
/// defaults (a workspace without identity rules).
fn event_identifiers(config: Option<&std::path::Path>, data: &DataDir) -> anyhow::Result<EventIdentifiers> {
    if let Some(path) = config {
        return Ok(EventIdentifiers::for_workspace(&tributary_local::runtime::load_workspace(path)?));
    }
    // Only an existing demo workspace: making one up (new keys) is `serve`'s business.
    if data.0.join("demo-keys.json").is_file() {
        let (workspace, _) = tributary_local::runtime::demo_workspace(data)?;
        return Ok(EventIdentifiers::for_workspace(&workspace));
    }
    Ok(EventIdentifiers::default())
}

/// Loads the suppression list (the whole index, once), then moves or lists the events DLQ.
async fn sweep_events<Q: Queue, T: TableStore>(
    dlq: &Q,
    queue: &Q,
    table: &T,
    ids: &EventIdentifiers,
    since_ms: Option<i64>,
    dry_run: bool,
) -> anyhow::Result<EventsReport> {
    // Nothing is moved without the list: a redrive must not bring back what an erasure removed.
    let list = SuppressionList::load(table)
        .await
        .map_err(|e| anyhow::anyhow!("the suppression list (erased subjects) could not be read: {e}"))?;
    redrive_events(dlq, queue, &list, ids, since_ms, dry_run).await.map_err(|e| anyhow::anyhow!("redrive stopped: {e}"))
}

#[cfg(feature = "aws")]
async fn events_on_aws(
    queue: &str,
    dlq: &str,
    table: &str,
    ids: &EventIdentifiers,
    since_ms: Option<i64>,
    dry_run: bool,
) -> anyhow::Result<EventsReport> {
    let clients = tributary_aws::AwsClients::from_env().await;
    let table = clients.dynamo_table(table);
    sweep_events(&clients.sqs_queue(dlq), &clients.sqs_queue(queue), &table, ids, since_ms, dry_run).await
}

#[cfg(not(feature = "aws"))]
async fn events_on_aws(
    _queue: &str,
    _dlq: &str,
    _table: &str,
    _ids: &EventIdentifiers,
    _since_ms: Option<i64>,
    _dry_run: bool,
) -> anyhow::Result<EventsReport> {
    anyhow::bail!("this build has no AWS support: build with `cargo build -p tributary-cli --features aws`")
}

/// One events-DLQ message as listed: counts and messageIds, no event content, nothing of the dropped events but
/// how many there were.
#[derive(Debug, Clone, PartialEq)]
pub struct EventsEntry {
    pub queue_message_id: String,
    pub source_id: String,
    /// When the batch was first sent (epoch ms).
    pub at_ms: i64,
    pub receives: u32,
    /// Events that go back (or would).
    pub events: usize,
    /// Events of erased subjects, dropped (or that would be).
    pub suppressed: usize,
    /// The messageIds of the events that go back.
    pub message_ids: Vec<String>,
    /// Whether `--since` takes it.
    pub selected: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventsReport {
    /// Messages moved back to the events queue (rewritten without the suppressed events).
    pub moved: usize,
    /// Messages deleted because every event in them was suppressed.
    pub emptied: usize,
    /// Events of erased subjects dropped (with `--dry-run`: that would be) from the selected messages.
    pub suppressed: usize,
    /// Messages left in the DLQ (not selected, or the events queue did not take them).
    pub kept: usize,
    /// Messages that are not event batches (left in place).
    pub unreadable: usize,
    pub entries: Vec<EventsEntry>,
}

impl EventsEntry {
    fn to_json(&self) -> Value {
        json!({
            "queueMessageId": self.queue_message_id,
            "sourceId": self.source_id,
            "atMs": self.at_ms,
            "receives": self.receives,
            "events": self.events,
            "suppressed": self.suppressed,
            "messageIds": self.message_ids,
            "selected": self.selected,
        })
    }
}

impl EventsReport {
    /// The `--json` form (camelCase, as the delivery report's).
    pub fn to_json(&self) -> Value {
        json!({
            "moved": self.moved,
            "emptied": self.emptied,
            "suppressed": self.suppressed,
            "kept": self.kept,
            "unreadable": self.unreadable,
            "entries": self.entries.iter().map(EventsEntry::to_json).collect::<Vec<_>>(),
        })
    }
}

/// Lists (`dry_run`) or moves the events-DLQ messages sent at or after `since_ms`, without the events `list`
/// suppresses. A message is deleted from the DLQ only after the events queue accepted its copy (or, left empty,
/// at once). Messages not moved are made visible again when the run ends.
pub async fn redrive_events<Q: Queue>(
    dlq: &Q,
    queue: &Q,
    list: &SuppressionList,
    ids: &EventIdentifiers,
    since_ms: Option<i64>,
    dry_run: bool,
) -> Result<EventsReport, PortError> {
    let mut report = EventsReport::default();
    let mut held: Vec<String> = Vec::new();
    let result = sweep_events_dlq(dlq, queue, list, ids, since_ms, dry_run, &mut report, &mut held).await;
    for handle in held {
        // Best effort: if this fails the message reappears when its visibility timeout ends.
        let _ = dlq.change_visibility(&handle, Duration::ZERO).await;
    }
    result.map(|()| report)
}

#[allow(clippy::too_many_arguments)] // the run's inputs and its two accumulators
async fn sweep_events_dlq<Q: Queue>(
    dlq: &Q,
    queue: &Q,
    list: &SuppressionList,
    ids: &EventIdentifiers,
    since_ms: Option<i64>,
    dry_run: bool,
    report: &mut EventsReport,
    held: &mut Vec<String>,
) -> Result<(), PortError> {
    let mut seen = 0;
    while seen < redrive::MAX_MESSAGES {
        // Hidden long enough for the whole run; released at the end.
        let batch = dlq.receive(10, Duration::from_secs(900), Duration::from_secs(1)).await?;
        if batch.is_empty() {
            return Ok(());
        }
        seen += batch.len();
        for m in batch {
            let Some((entry, rewritten)) = events_entry(&m, list, ids, since_ms) else {
                report.unreadable += 1;
                held.push(m.receipt_handle);
                continue;
            };
            let (selected, events, suppressed) = (entry.selected, entry.events, entry.suppressed);
            report.entries.push(entry);
            if !selected {
                report.kept += 1;
                held.push(m.receipt_handle);
                continue;
            }
            report.suppressed += suppressed;
            if dry_run {
                report.kept += 1;
                held.push(m.receipt_handle);
                continue;
            }
            if events == 0 {
                // Nothing left to process: the batch goes, nothing comes back.
                dlq.delete(&m.receipt_handle).await?;
                report.emptied += 1;
                continue;
            }
            let body = rewritten.unwrap_or(m.body);
            let failed = queue.send_batch(&[OutgoingMessage { id: "r".into(), body }]).await?;
            if failed.is_empty() {
                dlq.delete(&m.receipt_handle).await?;
                report.moved += 1;
            } else {
                report.kept += 1;
                held.push(m.receipt_handle);
            }
        }
    }
    Ok(())
}

/// What an events-DLQ message is, and the body to send back when events of erased subjects leave it (`None`: the
/// body goes back as it is). `None` when it is not an event batch.
fn events_entry(
    m: &ReceivedMessage,
    list: &SuppressionList,
    ids: &EventIdentifiers,
    since_ms: Option<i64>,
) -> Option<(EventsEntry, Option<String>)> {
    let mut envelope: Envelope = serde_json::from_str(&m.body).ok()?;
    let total = envelope.events.len();
    if !list.is_empty() {
        // An event that is not an object is left for stitch to refuse, as it would have been.
        envelope.events.retain(|e| !e.as_object().is_some_and(|event| list.suppresses(event, ids)));
    }
    let suppressed = total - envelope.events.len();
    let message_ids =
        envelope.events.iter().map(|e| e.get("messageId").and_then(Value::as_str).unwrap_or("").to_string()).collect();
    let entry = EventsEntry {
        queue_message_id: m.message_id.clone(),
        source_id: envelope.source_id.clone(),
        at_ms: m.sent_timestamp_ms,
        receives: m.receive_count,
        events: envelope.events.len(),
        suppressed,
        message_ids,
        selected: since_ms.is_none_or(|s| m.sent_timestamp_ms >= s),
    };
    // A batch only loses events, so the rewritten one is no larger than the original.
    let rewritten =
        (suppressed > 0 && !envelope.events.is_empty()).then(|| serde_json::to_string(&envelope)).transpose();
    Some((entry, rewritten.ok()?))
}

fn print_events(report: &EventsReport, dry_run: bool, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
        return Ok(());
    }
    for e in report.entries.iter().filter(|e| e.selected) {
        let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(e.at_ms) * 1_000_000)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_default();
        println!(
            "{at}  {:<20} receives={:<3} events={} suppressed={} {}",
            e.source_id,
            e.receives,
            e.events,
            e.suppressed,
            e.message_ids.join(","),
        );
    }
    let selected = report.entries.iter().filter(|e| e.selected).count();
    if dry_run {
        println!(
            "would move {} message(s) and drop {} event(s) of erased subjects; {} left in the DLQ; {} unreadable",
            report.entries.iter().filter(|e| e.selected && e.events > 0).count(),
            report.suppressed,
            report.kept.saturating_sub(selected),
            report.unreadable
        );
    } else {
        println!(
            "moved {} message(s); dropped {} event(s) of erased subjects ({} message(s) left empty, deleted); {} left \
             in the DLQ; {} unreadable",
            report.moved, report.suppressed, report.emptied, report.kept, report.unreadable
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_core::identity::{IdType, Identifier};
    use tributary_core::profile::layout::identity_key;
    use tributary_core::testing::MemoryTable;

    fn erased(kind: IdType, raw: &str) -> SuppressionList {
        let id = Identifier::new(kind, raw, None).expect("identifier");
        SuppressionList::from_hashes([identity_key(&id).pk.trim_start_matches("id#").to_owned()])
    }

    fn batch(events: Value) -> String {
        json!({"v": 1, "sourceId": "web", "events": events}).to_string()
    }

    async fn drain(q: &SqliteQueue) -> Vec<Envelope> {
        let mut out = Vec::new();
        loop {
            let got = q.receive(10, Duration::from_secs(30), Duration::ZERO).await.expect("receive");
            if got.is_empty() {
                return out;
            }
            for m in got {
                q.delete(&m.receipt_handle).await.expect("delete");
                out.push(serde_json::from_str(&m.body).expect("an envelope"));
            }
        }
    }

    fn queues() -> (tempfile::TempDir, SqliteQueue, SqliteQueue) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("queues.sqlite");
        let dlq = SqliteQueue::open(&db, "events-dlq", QueueOptions::default()).expect("dlq");
        let queue = SqliteQueue::open(&db, "events", QueueOptions::default()).expect("queue");
        (dir, dlq, queue)
    }

    async fn send(q: &SqliteQueue, bodies: &[String]) {
        let messages: Vec<OutgoingMessage> =
            bodies.iter().enumerate().map(|(i, b)| OutgoingMessage { id: i.to_string(), body: b.clone() }).collect();
        assert!(q.send_batch(&messages).await.expect("send").is_empty());
    }

    #[tokio::test]
    async fn batches_go_back_without_the_events_of_erased_subjects() {
        let (_dir, dlq, queue) = queues();
        let list = erased(IdType::Email, "gone@example.com");
        let ids = EventIdentifiers::default();
        let mixed = batch(json!([
            {"type": "identify", "userId": "u1", "messageId": "m-1", "traits": {"email": "GONE@example.com"}},
            {"type": "track", "userId": "u2", "event": "A", "messageId": "m-2"},
        ]));
        let only_erased = batch(json!([
            {"type": "track", "anonymousId": "a", "event": "A", "messageId": "m-3",
             "context": {"traits": {"email": "gone@example.com"}}},
        ]));
        let clean = batch(json!([{"type": "track", "userId": "u3", "event": "B", "messageId": "m-4"}]));
        send(&dlq, &[mixed, only_erased, clean.clone(), "not a batch".into()]).await;

        // A dry run counts, moves nothing, and leaves every message where it was.
        let dry = redrive_events(&dlq, &queue, &list, &ids, None, true).await.expect("dry run");
        assert_eq!((dry.moved, dry.emptied, dry.suppressed, dry.kept, dry.unreadable), (0, 0, 2, 3, 1));
        assert!(drain(&queue).await.is_empty());

        let report = redrive_events(&dlq, &queue, &list, &ids, None, false).await.expect("redrive");
        assert_eq!((report.moved, report.emptied, report.suppressed, report.kept, report.unreadable), (2, 1, 2, 0, 1));
        let mut moved = drain(&queue).await;
        moved.sort_by_key(|e| e.events[0]["messageId"].as_str().unwrap_or_default().to_string());
        let ids_of = |e: &Envelope| e.events.iter().map(|e| e["messageId"].clone()).collect::<Vec<_>>();
        assert_eq!(moved.iter().map(ids_of).collect::<Vec<_>>(), vec![vec![json!("m-2")], vec![json!("m-4")]]);
        assert!(moved.iter().all(|e| e.source_id == "web" && e.v == 1));
        // The report names the kept events only, and nothing of their content.
        let text = report.to_json().to_string();
        assert!(!text.contains("m-1") && !text.contains("m-3") && !text.contains("gone@"), "{text}");
        let emptied = report.entries.iter().find(|e| e.events == 0).expect("the emptied batch");
        assert_eq!((emptied.suppressed, emptied.message_ids.len()), (1, 0));

        // Only the unreadable message stays; a second run moves nothing more.
        let again = redrive_events(&dlq, &queue, &list, &ids, None, false).await.expect("again");
        assert_eq!((again.moved, again.emptied, again.suppressed, again.unreadable), (0, 0, 0, 1));
        // An untouched batch goes back byte for byte.
        send(&dlq, std::slice::from_ref(&clean)).await;
        redrive_events(&dlq, &queue, &list, &ids, None, false).await.expect("clean");
        let got = queue.receive(10, Duration::from_secs(30), Duration::ZERO).await.expect("receive");
        assert_eq!(got.iter().map(|m| m.body.clone()).collect::<Vec<_>>(), vec![clean]);
    }

    #[tokio::test]
    async fn since_leaves_older_batches_and_an_unreadable_list_moves_nothing() {
        let (_dir, dlq, queue) = queues();
        let list = erased(IdType::UserId, "u-erased");
        let ids = EventIdentifiers::default();
        send(&dlq, &[batch(json!([{"type": "track", "userId": "u-erased", "event": "A", "messageId": "m-1"}]))]).await;
        let later = redrive_events(&dlq, &queue, &list, &ids, Some(i64::MAX), false).await.expect("since");
        assert_eq!((later.moved, later.emptied, later.suppressed, later.kept), (0, 0, 0, 1));

        // The table failing: the run stops before touching the DLQ.
        let table = MemoryTable::default();
        table.fail_with(Some(PortError::Unavailable("down".into())));
        let r = sweep_events(&dlq, &queue, &table, &ids, None, false).await;
        assert!(r.is_err(), "no list, no redrive");
        table.fail_with(None);
        let id = Identifier::new(IdType::UserId, "u-erased", None).expect("identifier");
        table.put(identity_key(&id), tributary_core::dsr::tombstone_attrs("user_id", "req-1", 1));
        let report = sweep_events(&dlq, &queue, &table, &ids, None, false).await.expect("redrive");
        assert_eq!((report.moved, report.emptied, report.suppressed), (0, 1, 1));
        assert!(drain(&queue).await.is_empty());
    }
}
