//! What the handler hands a sender and what a sender answers.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::event::Event;

/// One event, ready for one destination: routed, dropped, scrubbed and hashed by its policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Outbound {
    /// The event's messageId (the webhook's `Idempotency-Key`, Meta's `event_id`, the export's dedup key).
    pub message_id: String,
    pub source_id: String,
    /// The prepared event (a normalized Segment-spec event); shared with other destinations when unchanged.
    pub event: Arc<Event>,
    /// Meta CAPI: the `user_data` object; Google Ads: the `user_identifiers` array (hashed); `None` otherwise.
    pub user_data: Option<Value>,
    /// `{"id": …}` plus `"traits": {…}` when the destination asks for them; `None` for events without a profile.
    pub profile: Option<Value>,
}

/// What became of one request (a batch of [`Outbound`]s to one destination).
#[derive(Debug, Clone, PartialEq)]
pub enum SendResult {
    /// Accepted (2xx; the export object written).
    Delivered,
    /// Worth trying again later: 5xx, 408, 425, 429, timeouts, connection errors, a platform's rate-limit code.
    /// `after` is the destination's `Retry-After`, when it gave one.
    Retry { reason: String, after: Option<Duration> },
    /// Refused for good (other 4xx, an endpoint the SSRF guard refuses): goes to the DLQ at once.
    Rejected { reason: String },
}

impl SendResult {
    /// The stable reason code (no value from the event or the response), `None` when delivered.
    pub fn reason(&self) -> Option<&str> {
        match self {
            SendResult::Delivered => None,
            SendResult::Retry { reason, .. } | SendResult::Rejected { reason } => Some(reason),
        }
    }
}
