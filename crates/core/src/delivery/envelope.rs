//! What travels on the delivery queue and its dead-letter queue, and the receipt kept per (destination, event).
//!
//! - [`DeliveryEnvelope`]: the stitch function's hand-offs of one events-queue record, optionally aimed at some
//!   destinations only (a redrive re-queues an event for the destination that failed it, not for all).
//! - [`DeadLetter`]: one (destination, event) the deliver function gave up on, with the reason — written by the
//!   deliver function itself so the reason survives; a raw envelope can also reach the DLQ through the queue's
//!   redrive policy when the function itself keeps failing.
//! - [`Receipt`]: the delivery state of one event at one destination, kept in the profile table under the
//!   profile's partition (so the profile API and a subject request find every destination that holds the
//!   subject's data) and used for idempotency: an event delivered once is never sent to that destination again.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::config::DataPartyClass;
use crate::ports::{Item, ItemKey};
use crate::profile::layout::profile_pk;

/// One event handed to delivery: the event and the profile context routing needs. The event is a `Value` unless a
/// reader wants it in another form (the deliver function keeps its text).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Handoff<E = Value> {
    pub profile_id: Option<String>,
    /// Data-party class of the event's source.
    pub class: DataPartyClass,
    /// The profile's consent per purpose after this event (empty when unknown: delivery treats that as "no").
    pub consent: BTreeMap<String, bool>,
    /// Whether this event changed the profile's consent (destinations with `consent_updates` are told).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub consent_changed: bool,
    /// The profile the event was applied to, when that profile has since been merged into `profile_id` (a
    /// replayed event): its receipts live there, so the replay finds what was already delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_to: Option<String>,
    pub event: E,
}

impl<E> Handoff<E> {
    /// The profile whose partition holds this event's receipts.
    pub fn receipt_profile(&self) -> Option<&str> {
        self.applied_to.as_deref().or(self.profile_id.as_deref())
    }

    /// The hand-off with another event (the same event in another form).
    pub fn with_event<F>(self, event: F) -> Handoff<F> {
        let Handoff { profile_id, class, consent, consent_changed, applied_to, event: _ } = self;
        Handoff { profile_id, class, consent, consent_changed, applied_to, event }
    }

    /// The event, and the rest of the hand-off.
    pub fn split(self) -> (Handoff<()>, E) {
        let Handoff { profile_id, class, consent, consent_changed, applied_to, event } = self;
        (Handoff { profile_id, class, consent, consent_changed, applied_to, event: () }, event)
    }
}

impl Handoff {
    /// The event's messageId (ingest guarantees one).
    pub fn message_id(&self) -> &str {
        self.event.get("messageId").and_then(Value::as_str).unwrap_or("")
    }
}

/// A delivery-queue message: the hand-offs of one events-queue record (or part of it when large).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryEnvelope<E = Value> {
    pub v: u32,
    pub source_id: String,
    pub items: Vec<Handoff<E>>,
    /// Deliver to these destinations only (a redrive); every destination when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only: Option<Vec<String>>,
    /// The destinations the events are for (an audience's connected destinations); every destination when
    /// absent. Unlike `only`, not a redrive: a dead-lettered event stays where it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destinations: Option<Vec<String>>,
}

/// One (destination, event) given up on, as the deliver function writes it to the delivery DLQ.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    /// Always 1; tells a dead letter from a raw [`DeliveryEnvelope`] moved by the queue's redrive policy.
    pub dead_letter: u32,
    pub destination_id: String,
    pub source_id: String,
    /// Stable code (`http_400`, `retries_exhausted:http_503`, …); never a value from the event or the response.
    pub reason: String,
    /// Attempts made before giving up.
    pub attempts: u32,
    /// When it was given up, epoch milliseconds.
    pub failed_at: i64,
    pub item: Handoff,
}

/// A DLQ message body: a dead letter or a raw envelope.
#[derive(Debug, Clone, PartialEq)]
pub enum DlqMessage {
    DeadLetter(Box<DeadLetter>),
    Envelope(DeliveryEnvelope),
}

impl DlqMessage {
    pub fn parse(body: &str) -> Result<DlqMessage, serde_json::Error> {
        let value: Value = serde_json::from_str(body)?;
        if value.get("deadLetter").is_some() {
            Ok(DlqMessage::DeadLetter(Box::new(serde_json::from_value(value)?)))
        } else {
            Ok(DlqMessage::Envelope(serde_json::from_value(value)?))
        }
    }
}

/// Where a (destination, event) stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptStatus {
    /// The destination accepted it; it is never sent there again.
    Delivered,
    /// A retryable failure; the message comes back after a backoff.
    Retrying,
    /// Given up on and put in the DLQ (a redrive starts a new round of attempts).
    Failed,
}

impl ReceiptStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ReceiptStatus::Delivered => "delivered",
            ReceiptStatus::Retrying => "retrying",
            ReceiptStatus::Failed => "failed",
        }
    }
}

/// The delivery state of one event at one destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    /// Destination id.
    pub d: String,
    /// The event's messageId.
    pub m: String,
    /// Source id.
    pub src: String,
    /// Event type and name (for the profile API; never a property value).
    pub t: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub s: ReceiptStatus,
    /// Attempts in all.
    pub n: u32,
    /// Attempts since the last time it was dead-lettered (what the retry limit counts).
    pub r: u32,
    /// Last error code, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    /// First attempt and last change, epoch milliseconds.
    pub first: i64,
    pub at: i64,
}

/// Receipts' sort keys start with this.
pub const RECEIPT_PREFIX: &str = "r#";

/// The key of the receipt of `message_id` at `destination` for a profile (or for an event without one).
pub fn receipt_key(profile: Option<&str>, destination: &str, message_id: &str) -> ItemKey {
    let h = hex::encode(&Sha256::digest(message_id.as_bytes())[..16]);
    let pk = match profile {
        Some(p) => profile_pk(p),
        None => format!("nr#{h}"),
    };
    ItemKey::new(pk, format!("{RECEIPT_PREFIX}{destination}#{h}"))
}

impl Receipt {
    pub fn to_attrs(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        }
    }

    pub fn from_attrs(attrs: &Map<String, Value>) -> Result<Receipt, serde_json::Error> {
        Receipt::deserialize(attrs)
    }

    pub fn to_item(&self, key: ItemKey, version: u64) -> Item {
        Item { key, attrs: self.to_attrs(), version, expires_at: None }
    }

    /// The profile API's view of a receipt.
    pub fn view(&self) -> Value {
        let mut v = serde_json::json!({
            "destination": self.d,
            "messageId": self.m,
            "sourceId": self.src,
            "type": self.t,
            "status": self.s.as_str(),
            "attempts": self.n,
            "firstAttemptAt": crate::profile::read::rfc3339(self.first),
            "updatedAt": crate::profile::read::rfc3339(self.at),
        });
        if let Some(name) = &self.name {
            v["event"] = Value::from(name.as_str());
        }
        if let Some(e) = &self.e {
            v["lastError"] = Value::from(e.as_str());
        }
        v
    }
}

/// Backoff before attempt `attempt + 1` after `attempt` (≥ 1) failed attempts: exponential from `base_ms`,
/// capped at `max_ms`, with "equal jitter" (half fixed, half random by `jitter` in 0..1) so a burst of failures
/// does not come back as a burst; never shorter than the destination's `Retry-After`.
pub fn backoff_ms(attempt: u32, base_ms: u64, max_ms: u64, jitter: f64, retry_after_ms: Option<u64>) -> u64 {
    let exp = base_ms.saturating_mul(1u64 << attempt.saturating_sub(1).min(32)).min(max_ms);
    let half = exp / 2;
    let jittered = half + ((exp - half) as f64 * jitter.clamp(0.0, 1.0)) as u64;
    jittered.max(retry_after_ms.unwrap_or(0)).min(max_ms.max(retry_after_ms.unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        let no_jitter: Vec<u64> = (1..=6).map(|a| backoff_ms(a, 100, 2_000, 1.0, None)).collect();
        assert_eq!(no_jitter, vec![100, 200, 400, 800, 1_600, 2_000]);
        // Equal jitter keeps at least half.
        assert_eq!(backoff_ms(3, 100, 2_000, 0.0, None), 200);
        // Retry-After wins when longer, even beyond the cap; a shorter one changes nothing.
        assert_eq!(backoff_ms(1, 100, 2_000, 1.0, Some(5_000)), 5_000);
        assert_eq!(backoff_ms(4, 100, 2_000, 1.0, Some(10)), 800);
        // Huge attempt numbers do not overflow.
        assert_eq!(backoff_ms(u32::MAX, 100, 2_000, 1.0, None), 2_000);
    }

    #[test]
    fn dlq_bodies_are_told_apart() {
        let item = Handoff {
            profile_id: Some("p1".into()),
            class: DataPartyClass::FirstParty,
            consent: BTreeMap::new(),
            consent_changed: false,
            applied_to: None,
            event: json!({"type": "track", "messageId": "m1"}),
        };
        let dl = DeadLetter {
            dead_letter: 1,
            destination_id: "hook".into(),
            source_id: "web".into(),
            reason: "http_400".into(),
            attempts: 1,
            failed_at: 5,
            item: item.clone(),
        };
        let body = serde_json::to_string(&dl).unwrap();
        assert_eq!(DlqMessage::parse(&body).unwrap(), DlqMessage::DeadLetter(Box::new(dl)));
        let env = DeliveryEnvelope { v: 1, source_id: "web".into(), items: vec![item], only: None, destinations: None };
        let body = serde_json::to_string(&env).unwrap();
        assert!(!body.contains("only"), "{body}");
        assert_eq!(DlqMessage::parse(&body).unwrap(), DlqMessage::Envelope(env));
        assert!(DlqMessage::parse("{}").is_err());
    }

    #[test]
    fn receipt_keys_hold_no_message_id_and_live_with_the_profile() {
        let k = receipt_key(Some("p1"), "hook", "user@example.com");
        assert_eq!(k.pk, profile_pk("p1"));
        assert!(k.sk.starts_with("r#hook#") && !k.sk.contains("example"), "{}", k.sk);
        assert_ne!(receipt_key(Some("p1"), "other", "user@example.com").sk, k.sk);
        assert!(receipt_key(None, "hook", "m").pk.starts_with("nr#"));
    }
}
