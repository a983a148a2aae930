//! Keys and item shapes of the profile table. Every key that is derived from an identifier or a message id is a
//! SHA-256, so keys never carry personal data and are bounded in length whatever the input.
//!
//! | item | pk | sk | attributes |
//! |---|---|---|---|
//! | identity → profile | `id#<sha256(type:value)>` | `id` | `p` (profile it was linked to), `t` (type name) |
//! | profile | `p#<profile>` | `profile` | [`ProfileDoc`] |
//! | ledger row | `p#<profile>` | `l#<at ms, 13 digits>#<hash>#<n>` | [`LedgerRow`] |
//! | event | `p#<profile>` | `e#<inverted event ms>#<hash>` | [`EventRow`]; newest first in a query |
//! | dedup | `d#<sha256(source, messageId)>` | `d` | [`DedupRow`]; expires after the dedup window |
//!
//! An identity item points at the profile it was linked to, which may since have been merged: readers follow
//! `merged_into` to the root (union-find) and writers compress the path when they pass by.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::audience::EventCounters;
use crate::config::DataPartyClass;
use crate::identity::Identifier;
use crate::ports::ItemKey;
use crate::sha256_hex;

/// Sort key of the profile document in its partition.
pub const PROFILE_SK: &str = "profile";
/// Sort key of an identity item.
pub const IDENTITY_SK: &str = "id";
/// Sort key of a dedup item.
pub const DEDUP_SK: &str = "d";
/// Sort-key prefix of ledger rows.
pub const LEDGER_PREFIX: &str = "l#";
/// Sort-key prefix of event rows.
pub const EVENT_PREFIX: &str = "e#";
/// Most refusals kept in [`ProfileDoc::refusals`] (the newest); older ones are only counted.
pub const MAX_RECENT_REFUSALS: usize = 20;
/// Largest event kept whole in the history, serialized; bigger ones are kept without their payload fields.
pub const MAX_EVENT_ROW_BYTES: usize = 8 * 1024;

const INVERT_BASE: i64 = 9_999_999_999_999;

/// Partition key of a profile.
pub fn profile_pk(profile: &str) -> String {
    format!("p#{profile}")
}

/// Key of a profile document.
pub fn profile_key(profile: &str) -> ItemKey {
    ItemKey::new(profile_pk(profile), PROFILE_SK)
}

/// Key of the identity item of `id` (its normalized `type:value`, hashed).
pub fn identity_key(id: &Identifier) -> ItemKey {
    ItemKey::new(format!("id#{}", sha256_hex(id.key().as_bytes())), IDENTITY_SK)
}

/// Key of the dedup item of one event.
pub fn dedup_key(source: &str, message_id: &str) -> ItemKey {
    ItemKey::new(format!("d#{}", message_hash(source, message_id)), DEDUP_SK)
}

/// SHA-256 of `(source, messageId)`, hex: how an event is named in keys and logs.
pub fn message_hash(source: &str, message_id: &str) -> String {
    let mut bytes = Vec::with_capacity(source.len() + message_id.len() + 1);
    bytes.extend_from_slice(source.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(message_id.as_bytes());
    sha256_hex(&bytes)
}

/// Sort key of ledger row `n` written for the event `message_hash` at ingest-processing time `at_ms`.
/// Ascending sort keys list a profile's ledger in the order it was written.
pub fn ledger_sk(at_ms: i64, message_hash: &str, n: usize) -> String {
    format!("{LEDGER_PREFIX}{:013}#{}#{n:03}", at_ms.clamp(0, INVERT_BASE), &message_hash[..message_hash.len().min(16)])
}

/// Sort key of an event row: inverted event time, so an ascending query lists the newest first.
pub fn event_sk(event_ms: i64, message_hash: &str) -> String {
    format!(
        "{EVENT_PREFIX}{:013}#{}",
        INVERT_BASE - event_ms.clamp(0, INVERT_BASE),
        &message_hash[..message_hash.len().min(16)]
    )
}

/// The id of a profile created by an event: deterministic, so a retried creation names the same profile.
pub fn new_profile_id(message_hash: &str) -> String {
    format!("prof_{}", &sha256_hex(format!("profile\0{message_hash}").as_bytes())[..24])
}

/// The order of two facts about a person: event time, then ingest time, then source and message id (so the
/// order is total and every store, in any arrival order, picks the same winner).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Stamp {
    /// Event time (the event's `timestamp`), epoch milliseconds.
    pub ts: i64,
    /// Ingest time (`receivedAt`), epoch milliseconds.
    pub received: i64,
    /// Source id.
    pub source: String,
    pub message_id: String,
}

/// One resolved trait: its value and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraitEntry {
    pub value: Value,
    /// The fact that set the value (for `set_once` traits, the earliest one).
    pub at: Stamp,
    /// Data-party class of the source that set the value.
    pub class: DataPartyClass,
    /// The trait keeps its earliest value (`set_once` in the profile settings).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub set_once: bool,
}

/// One purpose's consent state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentEntry {
    pub granted: bool,
    pub at: Stamp,
}

/// A link that was not made, recorded on the profile the event attached to. No raw values: the identifier is
/// named by its type and the hash of its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusalRecord {
    /// Identifier type name.
    pub kind: String,
    /// SHA-256 of the identifier's `type:value`.
    pub id_hash: String,
    /// `limit_exceeded`, `merge_refused`, `merge_limit`, `identity_limit`, `too_many_identifiers`.
    pub reason: String,
    /// The profile the identifier belongs to, when the refusal is a merge that was not made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other: Option<String>,
    /// The identifier type whose limit the refusal protects, when it is not `kind`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    pub message_hash: String,
    /// Processing time, epoch ms.
    pub at: i64,
}

/// Counts of things a bound held back, so nothing is dropped silently.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overflow {
    /// Trait updates refused because of the trait count or size bound.
    #[serde(default)]
    pub traits: u64,
    /// Merges refused because the profile holds the maximum number of merged profiles.
    #[serde(default)]
    pub merges: u64,
    /// Links refused because the profile holds the maximum number of identifiers.
    #[serde(default)]
    pub identities: u64,
    /// Events not kept in the history because of the per-day bound.
    #[serde(default)]
    pub history: u64,
    /// Event counts not kept because the profile holds the most counter keys.
    #[serde(default)]
    pub counters: u64,
}

/// The profile document, the attributes of the `p#<id>`/`profile` item. Only a root (not merged) profile's
/// document is current; a merged one keeps its state at the time of the merge plus `merged_into`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProfileDoc {
    /// Ingest time (ms) of the event that created the profile; the oldest profile survives a merge.
    pub created_at: i64,
    /// Set once the profile has been merged into another one (union-find parent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_into: Option<String>,
    /// Root only: every profile merged into this one, directly or not, in merge order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<String>,
    /// Root only: identifiers per type name over the profile and its members.
    #[serde(default)]
    pub counts: BTreeMap<String, u32>,
    /// Trait name → resolved value.
    #[serde(default)]
    pub traits: BTreeMap<String, TraitEntry>,
    /// Purpose → consent state.
    #[serde(default)]
    pub consent: BTreeMap<String, ConsentEntry>,
    /// The newest refusals (at most [`MAX_RECENT_REFUSALS`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refusals: Vec<RefusalRecord>,
    /// Every refusal ever recorded, including those no longer in `refusals`.
    #[serde(default)]
    pub refusal_count: u64,
    #[serde(default)]
    pub overflow: Overflow,
    /// Earliest and latest event time seen (ms).
    #[serde(default)]
    pub first_seen: i64,
    #[serde(default)]
    pub last_seen: i64,
    /// Events attached to this profile (and its members before they were merged).
    #[serde(default)]
    pub events: u64,
    /// UTC day number (days since the epoch, processing time) of `history_today`.
    #[serde(default)]
    pub history_day: i64,
    /// Events kept in the history on `history_day`.
    #[serde(default)]
    pub history_today: u32,
    /// Daily counts of the events that configured audiences' `performed` conditions count.
    #[serde(default, skip_serializing_if = "EventCounters::is_empty")]
    pub counters: EventCounters,
}

impl ProfileDoc {
    pub fn to_attrs(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        }
    }

    pub fn from_attrs(attrs: &Map<String, Value>) -> Result<ProfileDoc, serde_json::Error> {
        serde_json::from_value(Value::Object(attrs.clone()))
    }

    /// Total identifiers over the tree.
    pub fn identity_total(&self) -> u32 {
        self.counts.values().sum()
    }
}

/// What a ledger row records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum LedgerOp {
    /// An identifier was linked to this profile. The raw normalized value is kept here (and only here, besides the
    /// events) so the profile can list its identities; erasure deletes these rows.
    Link { kind: String, value: String },
    /// Profile `loser` was merged into this profile because the event held identifiers of both.
    Merge { loser: String, via_kind: String, via_hash: String },
    /// This profile was merged into `survivor` (written on the loser's partition).
    MergedInto { survivor: String },
    /// This profile was created by the event.
    Create,
}

/// One append-only ledger row: which event, which rule, when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerRow {
    #[serde(flatten)]
    pub op: LedgerOp,
    pub source: String,
    pub message_id: String,
    /// The rule that allowed it (`new_identifier`, `shared_identifier`, `new_profile`, …).
    pub rule: String,
    /// Event time (ms).
    pub event_ts: i64,
    /// Processing time (ms).
    pub at: i64,
}

impl LedgerRow {
    pub fn to_attrs(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        }
    }

    pub fn from_attrs(attrs: &Map<String, Value>) -> Result<LedgerRow, serde_json::Error> {
        serde_json::from_value(Value::Object(attrs.clone()))
    }
}

/// One event in a profile's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRow {
    pub source: String,
    pub message_id: String,
    /// Segment type (`track`, `identify`, …).
    #[serde(rename = "type")]
    pub kind: String,
    /// Track event name or page/screen name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Event time (ms).
    pub ts: i64,
    /// Ingest time (ms).
    pub received: i64,
    /// The normalized event; without `properties`, `traits` and `context` when it was larger than
    /// [`MAX_EVENT_ROW_BYTES`] (then `truncated` is set).
    pub event: Value,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

impl EventRow {
    pub fn to_attrs(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        }
    }

    pub fn from_attrs(attrs: &Map<String, Value>) -> Result<EventRow, serde_json::Error> {
        serde_json::from_value(Value::Object(attrs.clone()))
    }
}

/// The dedup record of one processed event: the profile it went to (to hand it off again on redelivery).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupRow {
    /// The profile the event attached to (follow merges to find its root now); `None` for an event without a
    /// usable identifier.
    #[serde(default)]
    pub p: Option<String>,
    /// Processing time (ms).
    pub at: i64,
}

impl DedupRow {
    pub fn to_attrs(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        }
    }

    pub fn from_attrs(attrs: &Map<String, Value>) -> Result<DedupRow, serde_json::Error> {
        serde_json::from_value(Value::Object(attrs.clone()))
    }
}

/// Attributes of an identity item.
pub fn identity_attrs(id: &Identifier, profile: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("p".into(), Value::String(profile.to_string()));
    m.insert("t".into(), Value::String(id.kind.name().into_owned()));
    m
}

/// The profile an identity item points at.
pub fn identity_profile(attrs: &Map<String, Value>) -> Option<&str> {
    attrs.get("p").and_then(Value::as_str)
}
