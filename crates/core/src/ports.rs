//! Port traits: the only way handlers touch queues, object stores and tables. Each has an embedded adapter
//! (`tributary-local`) and an AWS adapter (`tributary-aws`), and one contract suite (`testing`, feature `test-util`)
//! that both must pass.

use std::future::Future;
use std::time::Duration;

/// What can go wrong at a port. Retryability is decided here, where the error is born, and nowhere else.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    /// A conditional write found the item in another state than required. Never retried blindly.
    #[error("condition failed: {0}")]
    ConditionFailed(String),
    /// The service asked us to slow down. Retryable.
    #[error("throttled: {0}")]
    Throttled(String),
    /// Network errors, 5xx, timeouts. Retryable.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The request itself is wrong (bad key, too large, missing resource). Retrying will not help.
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl PortError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, PortError::Throttled(_) | PortError::Unavailable(_))
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Queue (SQS standard queue semantics: at-least-once, visibility timeout, receive count, DLQ by redrive policy).
// ---------------------------------------------------------------------------------------------------------------

/// Most entries one `send_batch` call may carry (SQS SendMessageBatch limit).
pub const MAX_SEND_BATCH: usize = 10;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    /// Unique within one `send_batch` call; failures are reported by this id.
    pub id: String,
    pub body: String,
}

/// The batch rule every adapter applies before sending (SQS's own limit).
pub fn check_send_batch(messages: &[OutgoingMessage]) -> Result<(), PortError> {
    if messages.len() > MAX_SEND_BATCH {
        return Err(PortError::Invalid(format!(
            "a batch holds at most {MAX_SEND_BATCH} messages, got {}",
            messages.len()
        )));
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedEntry {
    pub id: String,
    pub retryable: bool,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// Stable across redeliveries of the same message.
    pub message_id: String,
    /// Changes on every receive; needed to delete or change visibility.
    pub receipt_handle: String,
    pub body: String,
    /// How many times this message has been received, this receive included (SQS `ApproximateReceiveCount`).
    pub receive_count: u32,
    /// When the message was first sent, epoch milliseconds (SQS `SentTimestamp`).
    pub sent_timestamp_ms: i64,
}

/// One queue. A queue with a dead-letter queue moves a message there once it has been received more than
/// `max_receive_count` times without being deleted (configured on the queue, as SQS's redrive policy is).
pub trait Queue: Send + Sync {
    /// Sends at most [`MAX_SEND_BATCH`] messages. `Ok` lists the entries that were not accepted; an `Err` means
    /// none were.
    fn send_batch(
        &self,
        messages: &[OutgoingMessage],
    ) -> impl Future<Output = Result<Vec<FailedEntry>, PortError>> + Send;

    /// Receives up to `max` (1..=10) visible messages, hiding them for `visibility_timeout`. Waits up to `wait`
    /// for at least one message (long polling); returns an empty vector if none arrived.
    fn receive(
        &self,
        max: usize,
        visibility_timeout: Duration,
        wait: Duration,
    ) -> impl Future<Output = Result<Vec<ReceivedMessage>, PortError>> + Send;

    /// Deletes a received message. Deleting with a stale receipt handle is not an error.
    fn delete(&self, receipt_handle: &str) -> impl Future<Output = Result<(), PortError>> + Send;

    /// Changes how long a received message stays hidden (zero makes it visible at once).
    fn change_visibility(
        &self,
        receipt_handle: &str,
        visibility_timeout: Duration,
    ) -> impl Future<Output = Result<(), PortError>> + Send;

    /// Approximate number of messages held (visible plus in flight).
    fn approximate_len(&self) -> impl Future<Output = Result<u64, PortError>> + Send;
}

// ---------------------------------------------------------------------------------------------------------------
// Object store (S3 semantics).
// ---------------------------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
}

/// Keys are `/`-separated relative paths of printable characters; `..` segments, empty segments and a leading
/// `/` are refused with [`PortError::Invalid`] by every adapter.
pub trait ObjectStore: Send + Sync {
    /// Writes the whole object atomically: readers see the old or the new bytes, never a mix.
    fn put(&self, key: &str, bytes: Vec<u8>) -> impl Future<Output = Result<(), PortError>> + Send;
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Vec<u8>>, PortError>> + Send;
    /// Bytes `start..end` (end exclusive, `None` = to the end). A start at or past the end gives an empty vector.
    fn get_range(
        &self,
        key: &str,
        start: u64,
        end: Option<u64>,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, PortError>> + Send;
    fn head(&self, key: &str) -> impl Future<Output = Result<Option<ObjectMeta>, PortError>> + Send;
    /// Every object whose key starts with `prefix`, sorted by key.
    fn list(&self, prefix: &str) -> impl Future<Output = Result<Vec<ObjectMeta>, PortError>> + Send;
    /// Deleting a missing object is not an error.
    fn delete(&self, key: &str) -> impl Future<Output = Result<(), PortError>> + Send;
}

/// Shared key check, so that adapters refuse the same keys.
pub fn validate_object_key(key: &str) -> Result<(), PortError> {
    let bad = key.is_empty()
        || key.len() > 1024
        || key.starts_with('/')
        || key.split('/').any(|seg| seg.is_empty() || seg == "." || seg == "..")
        || key.chars().any(|c| c.is_control() || c == '\\');
    if bad {
        return Err(PortError::Invalid(format!("object key is not allowed ({} bytes)", key.len())));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// Table store (one DynamoDB-style table: partition key + sort key, JSON attributes, conditional transactions).
// The shape the identity, delivery and DSR issues build on.
// ---------------------------------------------------------------------------------------------------------------

/// Most operations one transaction may carry (DynamoDB TransactWriteItems limit).
pub const MAX_TRANSACT_ITEMS: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ItemKey {
    pub pk: String,
    pub sk: String,
}

impl ItemKey {
    pub fn new(pk: impl Into<String>, sk: impl Into<String>) -> Self {
        ItemKey { pk: pk.into(), sk: sk.into() }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub key: ItemKey,
    /// Attributes other than the key. Names `pk`, `sk`, `v` and `ttl` are reserved.
    pub attrs: serde_json::Map<String, serde_json::Value>,
    /// Optimistic-concurrency version, stored as attribute `v`. Writers bump it themselves.
    pub version: u64,
    /// Expiry, epoch seconds, stored as attribute `ttl`. Expired items are invisible to `get` and `query`
    /// even before the store removes them (DynamoDB deletes within days, not at once).
    pub expires_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    None,
    /// No (unexpired) item has this key.
    NotExists,
    /// An (unexpired) item has this key.
    Exists,
    /// The item exists with exactly this version.
    VersionIs(u64),
}

#[derive(Debug, Clone, PartialEq)]
pub enum WriteOp {
    Put { item: Item, condition: Condition },
    Delete { key: ItemKey, condition: Condition },
    Check { key: ItemKey, condition: Condition },
}

impl WriteOp {
    pub fn key(&self) -> &ItemKey {
        match self {
            WriteOp::Put { item, .. } => &item.key,
            WriteOp::Delete { key, .. } | WriteOp::Check { key, .. } => key,
        }
    }

    pub fn condition(&self) -> &Condition {
        match self {
            WriteOp::Put { condition, .. } | WriteOp::Delete { condition, .. } | WriteOp::Check { condition, .. } => {
                condition
            }
        }
    }
}

/// The shape rules every adapter applies before a transaction (DynamoDB's own): at least one operation, at most
/// [`MAX_TRANSACT_ITEMS`], no two on one key. Errors name positions, never keys (keys may hold identifiers).
pub fn check_transaction(ops: &[WriteOp]) -> Result<(), PortError> {
    if ops.is_empty() {
        return Err(PortError::Invalid("a transaction needs at least one operation".into()));
    }
    if ops.len() > MAX_TRANSACT_ITEMS {
        return Err(PortError::Invalid(format!(
            "a transaction holds at most {MAX_TRANSACT_ITEMS} operations, got {}",
            ops.len()
        )));
    }
    let mut seen = std::collections::HashSet::with_capacity(ops.len());
    if let Some(index) = ops.iter().position(|op| !seen.insert(op.key())) {
        return Err(PortError::Invalid(format!(
            "a transaction may not hold two operations on one key (operation {index} repeats an earlier key)"
        )));
    }
    Ok(())
}

/// Attribute names an [`Item`]'s `attrs` (and [`TableStore::add`]) may not use: the stored key, version and expiry.
pub const RESERVED_ATTRIBUTES: [&str; 4] = ["pk", "sk", "v", "ttl"];

/// The shape rules every adapter applies before [`TableStore::add`]: something to do, no reserved or empty
/// attribute name, no name twice (DynamoDB refuses overlapping paths in one update). Errors name attributes (chosen
/// by the caller's code), never values or keys.
pub fn check_add(deltas: &[(String, i64)], set: &serde_json::Map<String, serde_json::Value>) -> Result<(), PortError> {
    if deltas.is_empty() && set.is_empty() {
        return Err(PortError::Invalid("an add needs at least one delta or attribute to set".into()));
    }
    let mut seen = std::collections::HashSet::with_capacity(deltas.len() + set.len());
    for name in deltas.iter().map(|(n, _)| n.as_str()).chain(set.keys().map(String::as_str)) {
        if name.is_empty() {
            return Err(PortError::Invalid("attribute names must not be empty".into()));
        }
        if RESERVED_ATTRIBUTES.contains(&name) {
            return Err(PortError::Invalid(format!("attribute name {name:?} is reserved")));
        }
        if !seen.insert(name) {
            return Err(PortError::Invalid(format!("attribute {name:?} appears twice in one add")));
        }
    }
    Ok(())
}

/// `current + delta`, a missing attribute counting as 0; `None` when the attribute is not a number or the sum does
/// not fit (DynamoDB refuses both too). Integers stay exact; a stored float stays a float.
pub fn add_number(current: Option<&serde_json::Value>, delta: i64) -> Option<serde_json::Value> {
    let n = match current {
        None => return Some(serde_json::Value::from(delta)),
        Some(serde_json::Value::Number(n)) => n,
        Some(_) => return None,
    };
    if let Some(i) = n.as_i64() {
        return Some(match i.checked_add(delta) {
            Some(sum) => serde_json::Value::from(sum),
            None => serde_json::Value::from(u64::try_from(i128::from(i) + i128::from(delta)).ok()?),
        });
    }
    if let Some(u) = n.as_u64() {
        let sum = i128::from(u) + i128::from(delta);
        return Some(match i64::try_from(sum) {
            Ok(i) => serde_json::Value::from(i),
            Err(_) => serde_json::Value::from(u64::try_from(sum).ok()?),
        });
    }
    serde_json::Number::from_f64(n.as_f64()? + delta as f64).map(serde_json::Value::Number)
}

#[derive(Debug, Clone, PartialEq)]
pub struct QueryPage {
    pub items: Vec<Item>,
    /// Sort key to pass as `start_after` for the next page, if there may be more.
    pub next: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransactError {
    /// The operation at `index` failed its condition; nothing was written.
    #[error("condition failed on operation {index}")]
    ConditionFailed { index: usize },
    #[error(transparent)]
    Port(#[from] PortError),
}

pub trait TableStore: Send + Sync {
    fn get(&self, key: &ItemKey) -> impl Future<Output = Result<Option<Item>, PortError>> + Send;
    /// Items of partition `pk` whose sort key starts with `sk_prefix`, ascending by sort key, at most `limit`.
    fn query(
        &self,
        pk: &str,
        sk_prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<QueryPage, PortError>> + Send;
    /// All operations or none, at most [`MAX_TRANSACT_ITEMS`], no two on the same key.
    fn transact(&self, ops: Vec<WriteOp>) -> impl Future<Output = Result<(), TransactError>> + Send;
    /// A single conditional write; `ConditionFailed` comes back as `PortError::ConditionFailed`.
    fn write(&self, op: WriteOp) -> impl Future<Output = Result<(), PortError>> + Send;
    /// Atomic counter update of one item, with no read by the caller and no version check: creates the item if
    /// missing, adds each delta to its numeric attribute (a missing attribute counts as 0), sets the `set`
    /// attributes and, when `expires_at` is `Some`, the expiry (`None` leaves the expiry as it is). The version is
    /// never touched (an item created here has version 0). An expired item counts as absent: the add starts from an
    /// empty item. Concurrent adds to one item all count. Refused with [`PortError::Invalid`]: the shapes
    /// [`check_add`] refuses, and a delta on an attribute that holds something other than a number.
    fn add(
        &self,
        key: &ItemKey,
        deltas: &[(String, i64)],
        set: serde_json::Map<String, serde_json::Value>,
        expires_at: Option<i64>,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
}

#[cfg(test)]
mod add_number_tests {
    use super::add_number;
    use serde_json::json;
    #[test]
    fn numbers_add_exactly_and_refuse_what_is_not_a_number() {
        assert_eq!(add_number(None, 3), Some(json!(3)));
        assert_eq!(add_number(Some(&json!(40)), -2), Some(json!(38)));
        assert_eq!(add_number(Some(&json!(i64::MAX)), 1), Some(json!(i64::MAX as u64 + 1)));
        assert_eq!(add_number(Some(&json!(u64::MAX)), -1), Some(json!(u64::MAX - 1)));
        assert_eq!(add_number(Some(&json!(u64::MAX)), 1), None);
        assert_eq!(add_number(Some(&json!(1.5)), 1), Some(json!(2.5)));
        assert_eq!(add_number(Some(&json!("7")), 1), None);
        assert_eq!(add_number(Some(&json!(null)), 1), None);
    }
}
