//! Inspecting the delivery DLQ and moving messages back to the delivery queue (`tributary redrive`), over the
//! queue port so the same code runs on the embedded queues and on SQS.
//!
//! A dead letter goes back as an envelope aimed at its destination only; a raw envelope (moved by the queue's
//! redrive policy) goes back as it was, aimed at the chosen destination when one is given. Receipts make either
//! safe: what a destination already has is not sent again. A message is deleted from the DLQ only after the
//! delivery queue accepted its copy.

use std::time::Duration;

use serde::Serialize;
use tributary_core::delivery::{DeliveryEnvelope, DlqMessage};
use tributary_core::ports::{OutgoingMessage, PortError, Queue, ReceivedMessage};

/// Which DLQ messages a redrive takes.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only dead letters of this destination (raw envelopes match any destination: they may hold its events).
    pub destination: Option<String>,
    /// Only messages given up on (dead letters) or sent (raw envelopes) at or after this time, epoch ms.
    pub since_ms: Option<i64>,
}

/// One DLQ message as `tributary redrive --dry-run` lists it: no event content.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub queue_message_id: String,
    pub destination: Option<String>,
    pub source_id: String,
    pub reason: Option<String>,
    pub attempts: Option<u32>,
    pub at_ms: i64,
    pub events: usize,
    pub message_ids: Vec<String>,
    /// Whether the filter takes it.
    pub selected: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    /// Messages moved back to the delivery queue.
    pub moved: usize,
    /// Messages left in the DLQ (not selected, or the delivery queue did not take them).
    pub kept: usize,
    /// Messages that are neither a dead letter nor an envelope (left in place).
    pub unreadable: usize,
    pub entries: Vec<Entry>,
}

/// Most messages looked at in one run (bounds a run against a DLQ that is being filled at the same time).
pub const MAX_MESSAGES: usize = 100_000;

/// Lists (`dry_run`) or moves the DLQ messages `filter` selects. Messages not moved are made visible again when
/// the run ends.
pub async fn run<Q: Queue>(dlq: &Q, queue: &Q, filter: &Filter, dry_run: bool) -> Result<Report, PortError> {
    let mut report = Report::default();
    let mut held: Vec<String> = Vec::new();
    let result = sweep(dlq, queue, filter, dry_run, &mut report, &mut held).await;
    for handle in held {
        // Best effort: if this fails the message reappears when its visibility timeout ends.
        let _ = dlq.change_visibility(&handle, Duration::ZERO).await;
    }
    result.map(|()| report)
}

async fn sweep<Q: Queue>(
    dlq: &Q,
    queue: &Q,
    filter: &Filter,
    dry_run: bool,
    report: &mut Report,
    held: &mut Vec<String>,
) -> Result<(), PortError> {
    let mut seen = 0;
    while seen < MAX_MESSAGES {
        // Hidden long enough for the whole run; released at the end.
        let batch = dlq.receive(10, Duration::from_secs(900), Duration::from_secs(1)).await?;
        if batch.is_empty() {
            return Ok(());
        }
        seen += batch.len();
        for m in batch {
            match entry(&m, filter) {
                None => {
                    report.unreadable += 1;
                    held.push(m.receipt_handle);
                }
                Some((entry, envelope)) => {
                    let selected = entry.selected;
                    report.entries.push(entry);
                    if !selected || dry_run {
                        report.kept += 1;
                        held.push(m.receipt_handle);
                        continue;
                    }
                    let body = serde_json::to_string(&envelope).map_err(|e| PortError::Invalid(e.to_string()))?;
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
        }
    }
    Ok(())
}

/// What a DLQ message is, whether `filter` takes it, and the envelope a redrive would send.
fn entry(m: &ReceivedMessage, filter: &Filter) -> Option<(Entry, DeliveryEnvelope)> {
    let since = |at: i64| filter.since_ms.is_none_or(|s| at >= s);
    match DlqMessage::parse(&m.body).ok()? {
        DlqMessage::DeadLetter(dl) => {
            let selected = filter.destination.as_ref().is_none_or(|d| d == &dl.destination_id) && since(dl.failed_at);
            let entry = Entry {
                queue_message_id: m.message_id.clone(),
                destination: Some(dl.destination_id.clone()),
                source_id: dl.source_id.clone(),
                reason: Some(dl.reason.clone()),
                attempts: Some(dl.attempts),
                at_ms: dl.failed_at,
                events: 1,
                message_ids: vec![dl.item.message_id().to_string()],
                selected,
            };
            let envelope = DeliveryEnvelope {
                v: 1,
                source_id: dl.source_id,
                items: vec![dl.item],
                only: Some(vec![dl.destination_id]),
                destinations: None,
            };
            Some((entry, envelope))
        }
        DlqMessage::Envelope(mut env) => {
            let entry = Entry {
                queue_message_id: m.message_id.clone(),
                destination: None,
                source_id: env.source_id.clone(),
                reason: None,
                attempts: Some(m.receive_count),
                at_ms: m.sent_timestamp_ms,
                events: env.items.len(),
                message_ids: env.items.iter().map(|i| i.message_id().to_string()).collect(),
                selected: since(m.sent_timestamp_ms),
            };
            if let Some(d) = &filter.destination {
                env.only = Some(vec![d.clone()]);
            }
            Some((entry, env))
        }
    }
}
