//! [`Queue`] on an SQS standard queue.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName, SendMessageBatchRequestEntry};
use tributary_core::ports::{check_send_batch, FailedEntry, OutgoingMessage, PortError, Queue, ReceivedMessage};

use crate::billing::{Bodies, Meters};
use crate::error;

/// Largest message body, and largest total of bodies in one SendMessageBatch call (1 MiB each).
pub(crate) const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// Longest long poll SQS allows.
const MAX_WAIT_SECS: u64 = 20;
/// Longest visibility timeout SQS allows (12 hours).
const MAX_VISIBILITY_SECS: u64 = 12 * 60 * 60;
/// Most messages one ReceiveMessage call returns.
const MAX_RECEIVE: usize = 10;

/// One SQS queue, addressed by URL.
#[derive(Clone, Debug)]
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    url: String,
    /// The last path segment of the URL; the only queue identifier in logs and errors.
    name: String,
    meters: Arc<Meters>,
}

impl SqsQueue {
    pub(crate) fn new(client: aws_sdk_sqs::Client, url: String, meters: Arc<Meters>) -> Self {
        let name = url.trim_end_matches('/').rsplit('/').next().unwrap_or_default().to_owned();
        SqsQueue { client, url, name, meters }
    }

    /// The queue URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The queue name (last segment of the URL).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// One SendMessageBatch call. Entry ids on the wire are the positions in `messages` (`m0`…`m9`), so callers'
    /// ids need not follow SQS's id alphabet; failures are mapped back to the callers' ids.
    async fn send_chunk(&self, messages: &[(usize, &OutgoingMessage)]) -> Result<Vec<FailedEntry>, PortError> {
        let mut entries = Vec::with_capacity(messages.len());
        for (pos, m) in messages {
            let entry = SendMessageBatchRequestEntry::builder()
                .id(format!("m{pos}"))
                .message_body(m.body.clone())
                .build()
                .map_err(|_| PortError::Invalid("sqs SendMessageBatch: entry could not be built".into()))?;
            entries.push(entry);
        }
        let out = self
            .client
            .send_message_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| error::sqs("SendMessageBatch", &e))?;
        self.meters.sqs_call(Bodies::of(messages.iter().map(|(_, m)| m.body.len())), Bodies::NONE);
        let mut failed = Vec::new();
        for f in out.failed() {
            let original = f
                .id()
                .strip_prefix('m')
                .and_then(|p| p.parse::<usize>().ok())
                .and_then(|p| messages.iter().find(|(pos, _)| *pos == p))
                .map(|(_, m)| m.id.clone());
            let Some(id) = original else {
                tracing::warn!(queue = %self.name, "SQS reported a failure for an entry it was not sent.");
                continue;
            };
            failed.push(FailedEntry { id, retryable: !f.sender_fault(), reason: format!("sqs {}", f.code()) });
        }
        Ok(failed)
    }
}

/// Why SQS would refuse this body, checked before sending so that one bad body does not fail the whole batch.
fn body_problem(body: &str) -> Option<&'static str> {
    if body.is_empty() {
        return Some("empty message body");
    }
    if body.len() > MAX_MESSAGE_BYTES {
        return Some("message body larger than 1 MiB");
    }
    // SQS accepts #x9 | #xA | #xD | #x20 to #xD7FF | #xE000 to #xFFFD | #x10000 to #x10FFFF.
    let allowed = |c: char| matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && c != '\u{FFFE}' && c != '\u{FFFF}');
    if !body.chars().all(allowed) {
        return Some("message body holds characters SQS does not accept");
    }
    None
}

/// Whole seconds for SQS, rounded up so that a sub-second timeout does not become zero, capped at `max`.
fn secs_ceil(d: Duration, max: u64) -> i32 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i32::try_from(secs.min(max)).unwrap_or(i32::MAX)
}

impl Queue for SqsQueue {
    #[tracing::instrument(skip_all, fields(queue = %self.name, count = messages.len()))]
    async fn send_batch(&self, messages: &[OutgoingMessage]) -> Result<Vec<FailedEntry>, PortError> {
        check_send_batch(messages)?;
        let mut failed = Vec::new();
        // Chunks whose bodies together stay within the request size limit.
        let mut chunks: Vec<Vec<(usize, &OutgoingMessage)>> = Vec::new();
        let mut chunk_bytes = 0usize;
        for (pos, m) in messages.iter().enumerate() {
            if let Some(problem) = body_problem(&m.body) {
                failed.push(FailedEntry { id: m.id.clone(), retryable: false, reason: problem.to_owned() });
                continue;
            }
            match chunks.last_mut() {
                Some(chunk) if chunk_bytes + m.body.len() <= MAX_MESSAGE_BYTES => {
                    chunk.push((pos, m));
                    chunk_bytes += m.body.len();
                }
                _ => {
                    chunks.push(vec![(pos, m)]);
                    chunk_bytes = m.body.len();
                }
            }
        }
        let mut first_err = None;
        let mut any_sent = false;
        for chunk in &chunks {
            match self.send_chunk(chunk).await {
                Ok(f) => {
                    any_sent = true;
                    failed.extend(f);
                }
                Err(e) => {
                    failed.extend(chunk.iter().map(|(_, m)| FailedEntry {
                        id: m.id.clone(),
                        retryable: e.is_retryable(),
                        reason: e.to_string(),
                    }));
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            // Nothing was accepted: say so with the error itself.
            Some(e) if !any_sent => Err(e),
            _ => {
                if !failed.is_empty() {
                    tracing::debug!(failed = failed.len(), "Some messages were not accepted.");
                }
                Ok(failed)
            }
        }
    }

    #[tracing::instrument(skip_all, fields(queue = %self.name, max = max, received))]
    async fn receive(
        &self,
        max: usize,
        visibility_timeout: Duration,
        wait: Duration,
    ) -> Result<Vec<ReceivedMessage>, PortError> {
        let max = max.clamp(1, MAX_RECEIVE);
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(i32::try_from(max).unwrap_or(1))
            .visibility_timeout(secs_ceil(visibility_timeout, MAX_VISIBILITY_SECS))
            .wait_time_seconds(secs_ceil(wait, MAX_WAIT_SECS))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .send()
            .await
            .map_err(|e| error::sqs("ReceiveMessage", &e))?;
        self.meters.sqs_call(Bodies::NONE, Bodies::of(out.messages().iter().map(|m| m.body().map_or(0, str::len))));
        let mut received = Vec::with_capacity(out.messages().len());
        for m in out.messages() {
            let (Some(message_id), Some(receipt_handle)) = (m.message_id(), m.receipt_handle()) else {
                return Err(PortError::Unavailable("sqs ReceiveMessage: message without id or receipt handle".into()));
            };
            let attr = |name: &MessageSystemAttributeName| m.attributes().and_then(|a| a.get(name));
            let receive_count = attr(&MessageSystemAttributeName::ApproximateReceiveCount)
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(1);
            let sent_timestamp_ms =
                attr(&MessageSystemAttributeName::SentTimestamp).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
            received.push(ReceivedMessage {
                message_id: message_id.to_owned(),
                receipt_handle: receipt_handle.to_owned(),
                body: m.body().unwrap_or_default().to_owned(),
                receive_count,
                sent_timestamp_ms,
            });
        }
        tracing::Span::current().record("received", received.len());
        Ok(received)
    }

    #[tracing::instrument(skip_all, fields(queue = %self.name))]
    async fn delete(&self, receipt_handle: &str) -> Result<(), PortError> {
        match self.client.delete_message().queue_url(&self.url).receipt_handle(receipt_handle).send().await {
            Ok(_) => {
                self.meters.sqs_call(Bodies::NONE, Bodies::NONE);
                Ok(())
            }
            Err(e) => {
                let err = error::sqs("DeleteMessage", &e);
                let (code, _) = error::code_and_status(&e);
                // A stale or unknown receipt handle means the message is gone or someone else holds it: not ours
                // to delete any more, and not an error by the port's contract.
                match code.as_deref().map(|c| c.strip_prefix("AWS.SimpleQueueService.").unwrap_or(c)) {
                    Some("ReceiptHandleIsInvalid") => {
                        tracing::debug!("Delete with a stale receipt handle ignored.");
                        Ok(())
                    }
                    _ => Err(err),
                }
            }
        }
    }

    #[tracing::instrument(skip_all, fields(queue = %self.name, visibility_secs = visibility_timeout.as_secs()))]
    async fn change_visibility(&self, receipt_handle: &str, visibility_timeout: Duration) -> Result<(), PortError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(secs_ceil(visibility_timeout, MAX_VISIBILITY_SECS))
            .send()
            .await
            .map_err(|e| error::sqs("ChangeMessageVisibility", &e))?;
        self.meters.sqs_call(Bodies::NONE, Bodies::NONE);
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(queue = %self.name))]
    async fn approximate_len(&self) -> Result<u64, PortError> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .map_err(|e| error::sqs("GetQueueAttributes", &e))?;
        self.meters.sqs_call(Bodies::NONE, Bodies::NONE);
        let attrs = out.attributes();
        let count = |name: QueueAttributeName| -> Result<u64, PortError> {
            match attrs.and_then(|a| a.get(&name)) {
                None => Ok(0),
                Some(v) => v.parse::<u64>().map_err(|_| {
                    PortError::Unavailable(format!("sqs GetQueueAttributes: {} is not a number", name.as_str()))
                }),
            }
        };
        Ok(count(QueueAttributeName::ApproximateNumberOfMessages)?
            + count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_sqs_would_refuse() {
        assert_eq!(body_problem("{\"a\":1}\n\t\r"), None);
        assert_eq!(body_problem("ünïcödé 🎉"), None);
        assert!(body_problem("").is_some());
        assert!(body_problem("a\u{0}b").is_some());
        assert!(body_problem("\u{FFFF}").is_some());
        assert!(body_problem(&"x".repeat(MAX_MESSAGE_BYTES + 1)).is_some());
        assert_eq!(body_problem(&"x".repeat(MAX_MESSAGE_BYTES)), None);
    }

    #[test]
    fn seconds_round_up_and_cap() {
        assert_eq!(secs_ceil(Duration::ZERO, 20), 0);
        assert_eq!(secs_ceil(Duration::from_millis(1), 20), 1);
        assert_eq!(secs_ceil(Duration::from_millis(1500), 20), 2);
        assert_eq!(secs_ceil(Duration::from_secs(60), 20), 20);
    }
}
