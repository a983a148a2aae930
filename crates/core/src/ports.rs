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

/// An earlier (noncurrent) version of an object, in a store that keeps versions (an S3 bucket with versioning):
/// the bytes an overwrite or a delete left behind. Delete markers hold no bytes and are not listed as such.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EarlierVersion {
    pub key: String,
    /// Opaque, as the store gave it; only [`ObjectStore::get_version`] reads it.
    pub version_id: String,
    pub size: u64,
}

/// Keys are `/`-separated relative paths of printable characters; `..` segments, empty segments and a leading
/// `/` are refused with [`PortError::Invalid`] by every adapter.
///
/// Versions: a store may keep what an overwrite or a delete replaced (S3 versioning). `get`, `head` and `list`
/// see current objects only; the last three methods reach the earlier versions, so that an erasure can remove
/// them too. Their defaults are those of a store without versions (nothing to list, read or remove); a store
/// that keeps versions must implement all three.
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

    /// Every earlier version of every object whose key starts with `prefix` (delete markers left out), sorted by
    /// key, newest first within a key. A key may have earlier versions and no current object (it was deleted).
    fn list_earlier_versions(
        &self,
        prefix: &str,
    ) -> impl Future<Output = Result<Vec<EarlierVersion>, PortError>> + Send {
        let _ = prefix;
        std::future::ready(Ok(Vec::new()))
    }

    /// The bytes of one version of `key` (earlier or current), `None` if there is no such version or it is a
    /// delete marker.
    fn get_version(
        &self,
        key: &str,
        version_id: &str,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, PortError>> + Send {
        let _ = version_id;
        std::future::ready(validate_object_key(key).map(|()| None))
    }

    /// Removes every earlier version and every delete marker of exactly `key` (not of longer keys it prefixes),
    /// keeping the current object if there is one: after it, `key` has its current object or nothing at all, and
    /// [`list_earlier_versions`](Self::list_earlier_versions) lists nothing for it. Returns how many versions and
    /// markers were removed. Idempotent; a store without versions removes nothing. An error may come after part
    /// of the removal: calling it again finishes it.
    fn delete_earlier_versions(&self, key: &str) -> impl Future<Output = Result<usize, PortError>> + Send {
        std::future::ready(validate_object_key(key).map(|()| 0))
    }
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
    /// Attributes other than the key. Names `pk`, `sk`, `v` and `ttl` are reserved; the attribute of a sparse
    /// index ([`SPARSE_INDEXES`]) holds a non-empty string when present ([`check_index_values`]).
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

/// Most keys one [`TableStore::get_many`] may ask for (DynamoDB BatchGetItem limit).
pub const MAX_GET_MANY: usize = 100;

/// The shape rules every adapter applies before [`TableStore::get_many`] (DynamoDB's own for BatchGetItem): at most
/// [`MAX_GET_MANY`] keys, no key twice. An empty slice is allowed (it asks for nothing). Errors name positions,
/// never keys (keys may hold identifiers).
pub fn check_get_many(keys: &[ItemKey]) -> Result<(), PortError> {
    if keys.len() > MAX_GET_MANY {
        return Err(PortError::Invalid(format!("a get_many asks for at most {MAX_GET_MANY} keys, got {}", keys.len())));
    }
    let mut seen = std::collections::HashSet::with_capacity(keys.len());
    if let Some(index) = keys.iter().position(|key| !seen.insert(key)) {
        return Err(PortError::Invalid(format!(
            "a get_many may not ask for one key twice (key {index} repeats an earlier key)"
        )));
    }
    Ok(())
}

/// Attribute names an [`Item`]'s `attrs` (and [`TableStore::add`]) may not use: the stored key, version and expiry.
pub const RESERVED_ATTRIBUTES: [&str; 4] = ["pk", "sk", "v", "ttl"];

/// The shape rules every adapter applies before [`TableStore::add`]: something to do, no reserved or empty
/// attribute name, no name twice (DynamoDB refuses overlapping paths in one update), no delta on an index attribute
/// and nothing but an index value set on one ([`check_index_values`]). Errors name attributes (chosen by the
/// caller's code), never values or keys.
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
    if let Some(index) = SPARSE_INDEXES.iter().find(|i| deltas.iter().any(|(n, _)| n == i.attribute)) {
        return Err(PortError::Invalid(format!(
            "attribute {:?} keys the index {:?}: it holds a string, not a number to add to",
            index.attribute, index.name
        )));
    }
    check_index_values(set)
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

/// Most segments one parallel [`TableStore::scan_index`] may be split into. A port limit, far above any useful
/// number of workers; DynamoDB itself accepts up to 1,000,000.
pub const MAX_SCAN_SEGMENTS: u32 = 1000;

/// Longest value an index attribute may hold, in UTF-8 bytes (DynamoDB's limit for a partition key, which the
/// attribute is in the index).
pub const MAX_INDEX_VALUE_BYTES: usize = 2048;

/// A sparse secondary index of the table: it lists the items whose `attrs` hold `attribute` as a string, and no
/// others. On DynamoDB it is the global secondary index `name`, hashed on `attribute`, which holds only keys (and
/// `ttl`), so that it is written only when the attribute (or the expiry) changes, not on every write of the item.
///
/// The attribute is a key of the index, so every adapter refuses, with [`PortError::Invalid`], a write that would
/// give it anything but a non-empty string of at most [`MAX_INDEX_VALUE_BYTES`] (DynamoDB refuses such writes with a
/// `ValidationException`): see [`check_index_values`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SparseIndex {
    /// The attribute the index is keyed on; an item is listed while its `attrs` hold it.
    pub attribute: &'static str,
    /// The index's name (on DynamoDB, the global secondary index's `IndexName`).
    pub name: &'static str,
}

/// Every root profile document, for periodic full passes over the profiles (audiences). The attribute holds the
/// profile id and is set only on root profile documents: identities, events, ledger rows, dedup items and merged
/// profiles do not carry it, so a scan of this index reads none of them.
pub const ROOT_PROFILES: SparseIndex = SparseIndex { attribute: "root", name: "roots" };

/// Every suppressed identity item: the tombstones erasure leaves in place of an erased subject's identity items
/// (`crate::dsr`). The attribute holds the erasing request's id and is set only on tombstones: live identity items,
/// profiles and everything else never carry it, so the index stays as small as the number of erased identifiers and
/// a scan of it reads nothing else (`crate::dsr::suppression` keeps it in memory in ingest and import).
pub const SUPPRESSED_IDENTITIES: SparseIndex = SparseIndex { attribute: "sup", name: "suppressed" };

/// Every sparse index a table has. Adapters create exactly these (`tributary-aws`'s `admin::create_table`, the SAM
/// template, SQLite's partial indexes), scan no other and check their attributes on every write.
pub const SPARSE_INDEXES: [SparseIndex; 2] = [ROOT_PROFILES, SUPPRESSED_IDENTITIES];

/// The rule every adapter applies to the attributes of a put (and to what an add sets): an attribute of a
/// [`SPARSE_INDEXES`] index, when present, holds a non-empty string of at most [`MAX_INDEX_VALUE_BYTES`]. Errors
/// name the attribute, never its value.
pub fn check_index_values(attrs: &serde_json::Map<String, serde_json::Value>) -> Result<(), PortError> {
    for index in &SPARSE_INDEXES {
        let ok = match attrs.get(index.attribute) {
            None => true,
            Some(serde_json::Value::String(s)) => !s.is_empty() && s.len() <= MAX_INDEX_VALUE_BYTES,
            Some(_) => false,
        };
        if !ok {
            return Err(PortError::Invalid(format!(
                "attribute {:?} keys the index {:?}: it must hold a non-empty string of at most \
                 {MAX_INDEX_VALUE_BYTES} bytes",
                index.attribute, index.name
            )));
        }
    }
    Ok(())
}

/// The argument rules every adapter applies before [`TableStore::scan_index`]: a known index,
/// `1 <= total_segments <= MAX_SCAN_SEGMENTS`, `segment < total_segments`, `limit >= 1`.
pub fn check_scan(index: &SparseIndex, segment: u32, total_segments: u32, limit: usize) -> Result<(), PortError> {
    if !SPARSE_INDEXES.contains(index) {
        return Err(PortError::Invalid(format!("the table has no index {:?} on {:?}", index.name, index.attribute)));
    }
    if total_segments == 0 || total_segments > MAX_SCAN_SEGMENTS {
        return Err(PortError::Invalid(format!(
            "a scan is split into 1 to {MAX_SCAN_SEGMENTS} segments, got {total_segments}"
        )));
    }
    if segment >= total_segments {
        return Err(PortError::Invalid(format!("segment {segment} is not below the {total_segments} segments")));
    }
    if limit == 0 {
        return Err(PortError::Invalid("scan limit must be at least 1".into()));
    }
    Ok(())
}

/// The segment of `total` that the embedded adapters place partition `pk` in: the first 8 bytes of SHA-256 of
/// `pk`, big-endian, modulo `total` (a `total` of 0 counts as 1). Stable across runs and versions, so that a cursor
/// stays valid.
pub fn scan_segment(pk: &str, total: u32) -> u32 {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(pk.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // The remainder is below `total`, a u32.
    (u64::from_be_bytes(first) % u64::from(total.max(1))) as u32
}

/// One page of a [`TableStore::scan_index`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPage {
    pub keys: Vec<ItemKey>,
    /// Opaque cursor for the next page of the same segment (same index, segment and segment count); `None` when
    /// the segment is done.
    pub next: Option<String>,
}

/// Where a scan of one segment stopped: the adapters' shared cursor format, opaque to callers (URL-safe base64 of
/// JSON). It names the index, the segment and the segment count it belongs to, so that a cursor handed to another
/// scan is refused rather than silently skipping items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanCursor {
    pub segment: u32,
    pub total_segments: u32,
    /// The last key returned; the next page starts after it.
    pub after: ItemKey,
    /// The index attribute's value on that item, for adapters that need it to resume (DynamoDB's
    /// `ExclusiveStartKey` on an index holds the index key too).
    pub value: Option<String>,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CursorWire {
    i: String,
    s: u32,
    t: u32,
    pk: String,
    sk: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    a: Option<String>,
}

impl ScanCursor {
    /// The opaque form handed to callers, for a scan of `index`.
    pub fn encode(&self, index: &SparseIndex) -> String {
        use base64::Engine as _;
        let wire = CursorWire {
            i: index.name.to_owned(),
            s: self.segment,
            t: self.total_segments,
            pk: self.after.pk.clone(),
            sk: self.after.sk.clone(),
            a: self.value.clone(),
        };
        // Serialising plain strings and integers cannot fail.
        let json = serde_json::to_vec(&wire).unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    /// Reads a cursor handed back for a scan of `segment` of `total_segments` of `index`; refused with
    /// [`PortError::Invalid`] when it is not a cursor of that scan. Errors never echo the cursor (it holds keys).
    pub fn decode(cursor: &str, index: &SparseIndex, segment: u32, total_segments: u32) -> Result<Self, PortError> {
        use base64::Engine as _;
        let invalid = || PortError::Invalid("scan cursor is not one this store produced".into());
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
        let wire: CursorWire = serde_json::from_slice(&json).map_err(|_| invalid())?;
        if wire.i != index.name || wire.s != segment || wire.t != total_segments {
            return Err(PortError::Invalid(format!(
                "scan cursor belongs to another scan (index {:?}, segment {} of {}), not to segment {segment} of \
                 {total_segments} of index {:?}",
                wire.i, wire.s, wire.t, index.name
            )));
        }
        Ok(ScanCursor { segment, total_segments, after: ItemKey { pk: wire.pk, sk: wire.sk }, value: wire.a })
    }
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
    /// The items of `keys`, in the order asked: `None` for a missing or expired item, like [`get`](Self::get) for
    /// each key, but in as few round trips as the store allows (one SQL statement; one DynamoDB BatchGetItem, plus
    /// retries of the keys it leaves unprocessed). An empty slice gives an empty vector without a call. Reads are as
    /// consistent as `get`'s. Refused with [`PortError::Invalid`] (see [`check_get_many`]): more than
    /// [`MAX_GET_MANY`] keys, and a key asked for twice.
    fn get_many(&self, keys: &[ItemKey]) -> impl Future<Output = Result<Vec<Option<Item>>, PortError>> + Send;
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

    /// One page of one segment of a parallel scan over the sparse `index`: keys of unexpired items whose `attrs`
    /// hold `index.attribute` as a string. Segments `0..total_segments` partition those items (no item in two
    /// segments; together, all of them), so workers can scan the segments concurrently; which segment an item
    /// falls in is the store's choice. A page holds at most `limit` keys (fewer only on a segment's last page), in
    /// no promised order; pass `next` back as `cursor`, with the same index, segment and segment count, to
    /// continue.
    ///
    /// Items written, changed or deleted while a scan runs may or may not be listed, but an item unchanged
    /// throughout is listed exactly once. On DynamoDB the index is eventually consistent (a global secondary index
    /// trails the table, usually by well under a second), so an item written just before a scan starts may be
    /// missing from it too; the embedded stores list it at once.
    ///
    /// Refused with [`PortError::Invalid`] (see [`check_scan`]): an index not in [`SPARSE_INDEXES`],
    /// `total_segments` 0 or above [`MAX_SCAN_SEGMENTS`], `segment >= total_segments`, `limit` 0, and a cursor that
    /// is not one this adapter produced for this same scan.
    fn scan_index(
        &self,
        index: &SparseIndex,
        segment: u32,
        total_segments: u32,
        cursor: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<KeyPage, PortError>> + Send;
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

#[cfg(test)]
mod get_many_tests {
    use super::*;

    #[test]
    fn get_many_shapes() {
        let keys: Vec<ItemKey> = (0..=MAX_GET_MANY).map(|i| ItemKey::new(format!("p#{i}"), "s")).collect();
        assert_eq!(check_get_many(&[]), Ok(()));
        assert_eq!(check_get_many(&keys[..MAX_GET_MANY]), Ok(()));
        assert!(matches!(check_get_many(&keys), Err(PortError::Invalid(_))));
        let mut twice = keys[..3].to_vec();
        twice.push(ItemKey::new("p#secret@example.com", "s"));
        twice.push(ItemKey::new("p#secret@example.com", "s"));
        let Err(PortError::Invalid(why)) = check_get_many(&twice) else { panic!("a repeated key must be refused") };
        assert!(why.contains("key 4"), "{why}");
        assert!(!why.contains("secret"), "errors must not name keys: {why}");
        // Same partition, other sort key, or the other way round: different keys.
        assert_eq!(check_get_many(&[ItemKey::new("a", "b"), ItemKey::new("a", "c"), ItemKey::new("b", "b")]), Ok(()));
    }
}

#[cfg(test)]
mod scan_tests {
    use super::*;
    use serde_json::json;

    fn attrs(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        match v {
            serde_json::Value::Object(m) => m,
            _ => panic!("an object"),
        }
    }

    #[test]
    fn segments_are_stable_and_in_range() {
        // Pinned: a cursor or a worker assignment must not move between versions.
        assert_eq!(scan_segment("p#a", 1), 0);
        assert_eq!(scan_segment("p#a", 0), 0);
        let first: Vec<u32> = (0..50).map(|i| scan_segment(&format!("p#{i}"), 4)).collect();
        assert!(first.iter().all(|s| *s < 4));
        assert_eq!(first, (0..50).map(|i| scan_segment(&format!("p#{i}"), 4)).collect::<Vec<_>>());
        assert!((0..4).all(|s| first.contains(&s)), "50 partitions spread over 4 segments: {first:?}");
        // The first 8 bytes of SHA-256, big-endian, modulo the count.
        use sha2::Digest as _;
        let d = sha2::Sha256::digest(b"p#a");
        let n = u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
        assert_eq!(u64::from(scan_segment("p#a", 1000)), n % 1000);
    }

    #[test]
    fn scan_arguments() {
        assert_eq!(check_scan(&ROOT_PROFILES, 0, 1, 1), Ok(()));
        assert_eq!(check_scan(&ROOT_PROFILES, 999, MAX_SCAN_SEGMENTS, 1), Ok(()));
        for (segment, total, limit) in [(0, 0, 1), (0, MAX_SCAN_SEGMENTS + 1, 1), (4, 4, 1), (5, 4, 1), (0, 1, 0)] {
            assert!(matches!(check_scan(&ROOT_PROFILES, segment, total, limit), Err(PortError::Invalid(_))));
        }
        let other = SparseIndex { attribute: "root", name: "other" };
        assert!(matches!(check_scan(&other, 0, 1, 1), Err(PortError::Invalid(_))));
        assert_eq!(check_scan(&SUPPRESSED_IDENTITIES, 0, 4, 1000), Ok(()));
        // An index is its attribute and its name: a known name on another attribute is not an index.
        let mixed = SparseIndex { attribute: "root", name: SUPPRESSED_IDENTITIES.name };
        assert!(matches!(check_scan(&mixed, 0, 1, 1), Err(PortError::Invalid(_))));
    }

    #[test]
    fn indexes_have_distinct_names_and_attributes_and_agree_with_the_dsr_module() {
        let names: std::collections::BTreeSet<_> = SPARSE_INDEXES.iter().map(|i| i.name).collect();
        let attributes: std::collections::BTreeSet<_> = SPARSE_INDEXES.iter().map(|i| i.attribute).collect();
        assert_eq!((names.len(), attributes.len()), (SPARSE_INDEXES.len(), SPARSE_INDEXES.len()));
        for index in SPARSE_INDEXES {
            assert!(!RESERVED_ATTRIBUTES.contains(&index.attribute), "{index:?}");
        }
        assert_eq!(SUPPRESSED_IDENTITIES.attribute, crate::dsr::SUPPRESSED_ATTR);
    }

    #[test]
    fn cursors_round_trip_and_belong_to_one_scan() {
        let c = ScanCursor {
            segment: 2,
            total_segments: 4,
            after: ItemKey::new("p#ünï", "profile"),
            value: Some("ünï".into()),
        };
        let text = c.encode(&ROOT_PROFILES);
        assert!(text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{text}");
        assert_eq!(ScanCursor::decode(&text, &ROOT_PROFILES, 2, 4), Ok(c.clone()));
        let bare = ScanCursor { value: None, ..c };
        assert_eq!(ScanCursor::decode(&bare.encode(&ROOT_PROFILES), &ROOT_PROFILES, 2, 4), Ok(bare));
        for (segment, total) in [(1, 4), (2, 3)] {
            assert!(matches!(ScanCursor::decode(&text, &ROOT_PROFILES, segment, total), Err(PortError::Invalid(_))));
        }
        let other = SparseIndex { attribute: "root", name: "other" };
        assert!(matches!(ScanCursor::decode(&text, &other, 2, 4), Err(PortError::Invalid(_))));
        for bad in ["", "not a cursor", "e30", "!!!", &text[1..]] {
            assert!(matches!(ScanCursor::decode(bad, &ROOT_PROFILES, 2, 4), Err(PortError::Invalid(_))), "{bad:?}");
        }
    }

    #[test]
    fn index_attributes_hold_non_empty_strings() {
        assert_eq!(check_index_values(&attrs(json!({"name": 1}))), Ok(()));
        assert_eq!(check_index_values(&attrs(json!({"root": "p1"}))), Ok(()));
        assert_eq!(check_index_values(&attrs(json!({"root": "x".repeat(MAX_INDEX_VALUE_BYTES)}))), Ok(()));
        for bad in [json!(1), json!(null), json!(""), json!(true), json!(["a"]), json!({"a": "b"})] {
            let r = check_index_values(&attrs(json!({ "root": bad })));
            assert!(matches!(r, Err(PortError::Invalid(_))), "{bad}");
        }
        let long = json!({"root": "x".repeat(MAX_INDEX_VALUE_BYTES + 1)});
        assert!(matches!(check_index_values(&attrs(long)), Err(PortError::Invalid(_))));
        // Every index's attribute, the suppression tombstones' `sup` too.
        assert_eq!(check_index_values(&attrs(json!({"t": "email", "sup": "req-1", "sup_at": 5}))), Ok(()));
        for bad in [json!(1), json!(null), json!(""), json!({"id": "req-1"})] {
            let r = check_index_values(&attrs(json!({ "t": "email", "sup": bad })));
            assert!(matches!(r, Err(PortError::Invalid(_))), "sup = {bad}");
        }
        assert!(matches!(check_add(&[("sup".into(), 1)], &serde_json::Map::new()), Err(PortError::Invalid(_))));
        // Adds: no delta on the attribute, and only a valid value set on it.
        assert!(matches!(check_add(&[("root".into(), 1)], &serde_json::Map::new()), Err(PortError::Invalid(_))));
        assert!(matches!(check_add(&[], &attrs(json!({"root": 5}))), Err(PortError::Invalid(_))));
        assert_eq!(check_add(&[("n".into(), 1)], &attrs(json!({"root": "p1"}))), Ok(()));
    }
}
