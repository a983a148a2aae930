//! The read path over the profile table: find a profile by an identifier or a profile id ([`parse_lookup`],
//! [`resolve`]), describe it with its provenance ([`view`]) and page through its history ([`events`]). Shared by
//! the profile API and, later, the DSR and audience functions. Pure: any [`TableStore`], no runtime.
//!
//! Nothing here puts an identifier value into an error: lookups come from URLs and end up in logs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::layout::{
    self, EventRow, LedgerOp, LedgerRow, Overflow, ProfileDoc, EVENT_PREFIX, LEDGER_PREFIX, MAX_RECENT_REFUSALS,
};
use crate::config::DataPartyClass;
use crate::identity::{IdType, Identifier};
use crate::ports::{Item, PortError, TableStore};

/// Most `merged_into` hops followed before the chain is declared corrupt. A tree holds at most 1,000 merged
/// profiles (`max_merges`), so a longer chain can only be a loop or a broken writer.
pub const MAX_HOPS: usize = 1_100;
/// Events per page when the caller does not say.
pub const DEFAULT_EVENTS_LIMIT: usize = 50;
/// Most events per page.
pub const MAX_EVENTS_LIMIT: usize = 100;
/// Longest accepted events cursor (an event sort key is 47 bytes).
const MAX_CURSOR_BYTES: usize = 64;
/// Longest accepted profile id in a lookup (ours are 29 bytes).
const MAX_PROFILE_ID_BYTES: usize = 128;
/// Rows per ledger query.
const LEDGER_PAGE: usize = 500;
/// Partitions read at once: enough to hide latency on a large tree without a burst of hundreds of requests.
const CONCURRENCY: usize = 16;

/// What a caller asked for: a profile by id, or whatever profile an identifier belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Profile(String),
    Identifier(Identifier),
}

impl Lookup {
    /// A string naming the lookup that is safe to log: SHA-256 of `profile_id:<id>` or of the normalized
    /// identifier key (the latter is also the hash in the identity item's key).
    pub fn log_hash(&self) -> String {
        match self {
            Lookup::Profile(id) => crate::sha256_hex(format!("profile_id:{id}").as_bytes()),
            Lookup::Identifier(id) => crate::sha256_hex(id.key().as_bytes()),
        }
    }
}

/// Parses `type:value`: `profile_id:<id>` or an identifier (`email:ann@example.com`, `ext:braze_id:42`), the value
/// normalized as ingest normalizes it. The error names what is wrong, never the value.
pub fn parse_lookup(s: &str, default_country_code: Option<&str>) -> Result<Lookup, String> {
    // `ext:<name>:<value>`: the type ends at the second `:`.
    let (kind, value) = match s.strip_prefix("ext:") {
        Some(rest) => match rest.split_once(':') {
            Some((name, value)) => (format!("ext:{name}"), value),
            None => return Err("an external identifier lookup looks like ext:<name>:<value>".into()),
        },
        None => match s.split_once(':') {
            Some((kind, value)) => (kind.to_string(), value),
            None => return Err("a lookup looks like <type>:<value>, e.g. user_id:<id> or email:<address>".into()),
        },
    };
    if kind == "profile_id" {
        let id = value.trim();
        let ok = !id.is_empty()
            && id.len() <= MAX_PROFILE_ID_BYTES
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        return if ok {
            Ok(Lookup::Profile(id.to_string()))
        } else {
            Err("a profile id is 1-128 characters of a-z, A-Z, 0-9, '_' and '-'".into())
        };
    }
    let id_type: IdType = match kind.parse() {
        Ok(IdType::External(name)) if name == "*" => return Err("ext:* is not an identifier type".into()),
        Ok(t) => t,
        // The type is ours to name (it is not the value), and telling it back helps the caller.
        Err(e) => return Err(format!("unknown lookup type: {e}, or profile_id")),
    };
    match Identifier::new(id_type.clone(), value, default_country_code) {
        Ok(id) => Ok(Lookup::Identifier(id)),
        Err(reason) => Err(format!("the {id_type} value is not usable: {reason}")),
    }
}

/// Why a read failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Port(#[from] PortError),
    /// The stored graph cannot be read: an undecodable profile document or a `merged_into` loop. The message names
    /// profile ids at most, never identifier values.
    #[error("profile data is corrupt: {0}")]
    Corrupt(String),
    /// An events cursor that is not one we handed out.
    #[error("invalid events cursor")]
    InvalidCursor,
}

/// A profile found by [`resolve`]: the root of its merge tree.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// The root profile (not merged into any other).
    pub profile_id: String,
    /// Version of the root's document item.
    pub version: u64,
    pub doc: ProfileDoc,
    /// The profile id that was asked for, when it was a merged one (a `profile_id:` lookup of a non-root).
    pub requested: Option<String>,
}

/// Finds the root profile of a lookup: identity item → the profile it was linked to → `merged_into` up to the root.
/// `Ok(None)` when the identifier is unknown or a profile on the way is missing (e.g. erased).
pub async fn resolve<T: TableStore>(table: &T, lookup: &Lookup) -> Result<Option<Resolved>, ReadError> {
    let start = match lookup {
        Lookup::Profile(id) => id.clone(),
        Lookup::Identifier(id) => {
            let Some(item) = table.get(&layout::identity_key(id)).await? else {
                return Ok(None);
            };
            match layout::identity_profile(&item.attrs) {
                Some(p) => p.to_string(),
                // An erased identifier: its item is kept as a suppression tombstone and names no profile.
                None if crate::dsr::suppressed_by(&item.attrs).is_some() => return Ok(None),
                None => return Err(ReadError::Corrupt("an identity item names no profile".into())),
            }
        }
    };
    let mut current = start.clone();
    let mut seen = HashSet::new();
    for _ in 0..=MAX_HOPS {
        if !seen.insert(current.clone()) {
            return Err(ReadError::Corrupt(format!("merged_into loop through profile {current}")));
        }
        let Some(item) = table.get(&layout::profile_key(&current)).await? else {
            return Ok(None);
        };
        let doc = ProfileDoc::from_attrs(&item.attrs)
            .map_err(|_| ReadError::Corrupt(format!("profile {current} has an undecodable document")))?;
        match &doc.merged_into {
            Some(parent) => current = parent.clone(),
            None => {
                let requested = (matches!(lookup, Lookup::Profile(_)) && current != start).then_some(start);
                return Ok(Some(Resolved { profile_id: current, version: item.version, doc, requested }));
            }
        }
    }
    Err(ReadError::Corrupt(format!("merged_into chain from profile {start} is longer than {MAX_HOPS} hops")))
}

/// A profile as the profile API shows it: current state with where each fact came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileView {
    pub profile_id: String,
    /// The merged profile id that was asked for, when the lookup named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_profile_id: Option<String>,
    /// Every profile merged into this one, directly or not, in merge order.
    pub merged_profiles: Vec<String>,
    pub created_at: Option<String>,
    /// Sorted by type, then value.
    pub identities: Vec<IdentityView>,
    pub traits: BTreeMap<String, TraitView>,
    pub consent: BTreeMap<String, ConsentView>,
    /// Oldest first.
    pub merges: Vec<MergeView>,
    /// The most recent refusals (at most [`MAX_RECENT_REFUSALS`]); `refusal_count` counts all of them.
    pub refusals: Vec<RefusalView>,
    pub refusal_count: u64,
    pub overflow: Overflow,
    /// Identifiers per type over the whole tree.
    pub counts: BTreeMap<String, u32>,
    pub first_seen: Option<String>,
    pub last_seen: Option<String>,
    pub event_count: u64,
    /// The audiences the profile is in, by id, as of the last audience refresh.
    pub audiences: Vec<AudienceView>,
    /// Ledger rows that could not be decoded (written by a newer version?) and were left out.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skipped_ledger_rows: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One audience the profile is in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AudienceView {
    pub id: String,
    /// When the profile entered it.
    pub entered_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityView {
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
    pub linked_at: Option<String>,
    pub source: String,
    pub message_id: String,
    /// The profile the identifier was linked to (a merged profile for identities that came in a merge).
    pub linked_to: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraitView {
    pub value: Value,
    /// Event time of the fact that set the value.
    pub event_time: Option<String>,
    pub received_at: Option<String>,
    pub source: String,
    pub message_id: String,
    /// Data-party class of the source (`0P`, `1P`, `2P`, `3P`).
    pub class: DataPartyClass,
    pub set_once: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentView {
    pub granted: bool,
    pub event_time: Option<String>,
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergeView {
    /// The profile that was merged away.
    pub loser: String,
    /// The profile it was merged into (the root, or a profile merged into the root later).
    pub into: String,
    /// Processing time of the merge.
    pub at: Option<String>,
    pub source: String,
    pub message_id: String,
    /// Type of the identifier the two profiles shared.
    pub via: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusalView {
    pub kind: String,
    pub reason: String,
    pub other: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    pub at: Option<String>,
}

/// Builds the [`ProfileView`] of a resolved profile, reading the ledger of the root and of every member.
pub async fn view<T: TableStore>(table: &T, r: &Resolved) -> Result<ProfileView, ReadError> {
    let partitions = tree(r);
    let reads = partitions.iter().map(|p| async move {
        let pk = layout::profile_pk(p);
        query_all(table, &pk, LEDGER_PREFIX, LEDGER_PAGE).await.map(|items| (p.as_str(), items))
    });
    let mut identities: HashMap<(String, String), (i64, IdentityView)> = HashMap::new();
    let mut merges: Vec<(i64, MergeView)> = Vec::new();
    let mut skipped = 0u64;
    for result in join_bounded(reads.collect()).await {
        let (profile, items) = result?;
        for item in items {
            let Ok(row) = LedgerRow::from_attrs(&item.attrs) else {
                skipped += 1;
                continue;
            };
            match row.op {
                LedgerOp::Link { kind, value } => {
                    let entry = IdentityView {
                        kind: kind.clone(),
                        value: value.clone(),
                        linked_at: rfc3339(row.at),
                        source: row.source,
                        message_id: row.message_id,
                        linked_to: profile.to_string(),
                    };
                    // A value linked twice (relinked after an erasure, say) shows its first link.
                    match identities.get(&(kind.clone(), value.clone())) {
                        Some((at, _)) if *at <= row.at => {}
                        _ => {
                            identities.insert((kind, value), (row.at, entry));
                        }
                    }
                }
                LedgerOp::Merge { loser, via_kind, .. } => merges.push((
                    row.at,
                    MergeView {
                        loser,
                        into: profile.to_string(),
                        at: rfc3339(row.at),
                        source: row.source,
                        message_id: row.message_id,
                        via: via_kind,
                    },
                )),
                LedgerOp::MergedInto { .. } | LedgerOp::Create => {}
            }
        }
    }
    let membership = match table.get(&super::membership::membership_key(&r.profile_id)).await? {
        Some(item) => super::membership::Membership::from_attrs(&item.attrs)
            .map_err(|_| ReadError::Corrupt(format!("profile {} has an undecodable membership", r.profile_id)))?,
        None => Default::default(),
    };
    let audiences =
        membership.members.iter().map(|(id, at)| AudienceView { id: id.clone(), entered_at: rfc3339(*at) }).collect();
    let mut identities: Vec<IdentityView> = identities.into_values().map(|(_, v)| v).collect();
    identities.sort_by(|a, b| (&a.kind, &a.value).cmp(&(&b.kind, &b.value)));
    merges.sort_by(|a, b| (a.0, &a.1.loser).cmp(&(b.0, &b.1.loser)));

    let doc = &r.doc;
    let traits = doc
        .traits
        .iter()
        .map(|(name, t)| {
            let view = TraitView {
                value: t.value.clone(),
                event_time: rfc3339(t.at.ts),
                received_at: rfc3339(t.at.received),
                source: t.at.source.clone(),
                message_id: t.at.message_id.clone(),
                class: t.class,
                set_once: t.set_once,
            };
            (name.clone(), view)
        })
        .collect();
    let consent = doc
        .consent
        .iter()
        .map(|(purpose, c)| {
            (
                purpose.clone(),
                ConsentView { granted: c.granted, event_time: rfc3339(c.at.ts), source: c.at.source.clone() },
            )
        })
        .collect();
    let refusals = doc
        .refusals
        .iter()
        .take(MAX_RECENT_REFUSALS)
        .map(|f| RefusalView {
            kind: f.kind.clone(),
            reason: f.reason.clone(),
            other: f.other.clone(),
            limit: f.limit.clone(),
            at: rfc3339(f.at),
        })
        .collect();
    // Zero means "never set" in the document.
    let seen = |ms: i64| if ms == 0 { None } else { rfc3339(ms) };
    Ok(ProfileView {
        profile_id: r.profile_id.clone(),
        requested_profile_id: r.requested.clone(),
        merged_profiles: doc.members.clone(),
        created_at: seen(doc.created_at),
        identities,
        traits,
        consent,
        merges: merges.into_iter().map(|(_, m)| m).collect(),
        refusals,
        refusal_count: doc.refusal_count,
        overflow: doc.overflow.clone(),
        counts: doc.counts.clone(),
        first_seen: seen(doc.first_seen),
        last_seen: seen(doc.last_seen),
        event_count: doc.events,
        audiences,
        skipped_ledger_rows: skipped,
    })
}

/// One page of a profile's history, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventsPage {
    pub events: Vec<EventRow>,
    /// Pass as `cursor` for the next page; `None` on the last one.
    pub next: Option<String>,
}

/// Whether `cursor` could be an events cursor (an event sort key); anything else is refused before it reaches the
/// store, where an oversized key would be an error.
pub fn valid_cursor(cursor: &str) -> bool {
    cursor.len() <= MAX_CURSOR_BYTES
        && cursor.starts_with(EVENT_PREFIX)
        && cursor.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'#')
}

/// The newest `limit` (clamped to 1..=[`MAX_EVENTS_LIMIT`]) events of the tree after `cursor`. Event sort keys
/// order events the same way in every partition, so each partition's first `limit` rows after the cursor are
/// merged and the smallest keys win.
pub async fn events<T: TableStore>(
    table: &T,
    r: &Resolved,
    limit: usize,
    cursor: Option<&str>,
) -> Result<EventsPage, ReadError> {
    if cursor.is_some_and(|c| !valid_cursor(c)) {
        return Err(ReadError::InvalidCursor);
    }
    let (rows, next) = tree_page(table, r, EVENT_PREFIX, limit, cursor).await?;
    // A row that does not decode is left out rather than failing the page; the cursor still moves past it.
    let events = rows.iter().filter_map(|i| EventRow::from_attrs(&i.attrs).ok()).collect();
    Ok(EventsPage { events, next })
}

/// One page of the delivery receipts of a profile and the profiles merged into it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeliveriesPage {
    /// Per (destination, event): status, attempts, last error, times (see [`crate::delivery::Receipt::view`]).
    pub deliveries: Vec<Value>,
    pub next: Option<String>,
}

/// Whether `cursor` could be a deliveries cursor (a receipt sort key).
pub fn valid_deliveries_cursor(cursor: &str) -> bool {
    cursor.len() <= MAX_CURSOR_BYTES
        && cursor.starts_with(crate::delivery::envelope::RECEIPT_PREFIX)
        && cursor.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'#' || b == b'-' || b == b'_')
}

/// The delivery receipts of the tree, by destination, `limit` (clamped like events) at a time.
pub async fn deliveries<T: TableStore>(
    table: &T,
    r: &Resolved,
    limit: usize,
    cursor: Option<&str>,
) -> Result<DeliveriesPage, ReadError> {
    if cursor.is_some_and(|c| !valid_deliveries_cursor(c)) {
        return Err(ReadError::InvalidCursor);
    }
    let (rows, next) = tree_page(table, r, crate::delivery::envelope::RECEIPT_PREFIX, limit, cursor).await?;
    let deliveries =
        rows.iter().filter_map(|i| crate::delivery::Receipt::from_attrs(&i.attrs).ok()).map(|r| r.view()).collect();
    Ok(DeliveriesPage { deliveries, next })
}

/// The first `limit` rows under `prefix` after `cursor` over every partition of the tree, in sort-key order, and
/// the cursor of the next page.
async fn tree_page<T: TableStore>(
    table: &T,
    r: &Resolved,
    prefix: &str,
    limit: usize,
    cursor: Option<&str>,
) -> Result<(Vec<Item>, Option<String>), ReadError> {
    let limit = limit.clamp(1, MAX_EVENTS_LIMIT);
    let partitions = tree(r);
    let reads = partitions.iter().map(|p| async move {
        let pk = layout::profile_pk(p);
        first_rows(table, &pk, prefix, cursor, limit).await
    });
    let mut rows: Vec<Item> = Vec::new();
    let mut more = false;
    for result in join_bounded(reads.collect()).await {
        let (items, has_more) = result?;
        more |= has_more;
        rows.extend(items);
    }
    rows.sort_by(|a, b| a.key.sk.cmp(&b.key.sk));
    // One event recorded on two partitions would share its key; show it once.
    rows.dedup_by(|a, b| a.key.sk == b.key.sk);
    if rows.len() > limit {
        rows.truncate(limit);
        more = true;
    }
    let next = if more { rows.last().map(|i| i.key.sk.clone()) } else { None };
    Ok((rows, next))
}

/// The root followed by its members, each once.
/// The profiles of a resolved tree: the root, then its members in merge order.
pub fn tree(r: &Resolved) -> Vec<String> {
    let mut seen = HashSet::new();
    std::iter::once(&r.profile_id).chain(&r.doc.members).filter(|p| seen.insert(p.as_str())).cloned().collect()
}

/// Every row of `pk` under `prefix`, page by page.
pub async fn query_all<T: TableStore>(table: &T, pk: &str, prefix: &str, page: usize) -> Result<Vec<Item>, PortError> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let got = table.query(pk, prefix, after.as_deref(), page).await?;
        out.extend(got.items);
        match got.next {
            // A cursor that does not move forward would loop forever; treat it as the end.
            Some(next) if after.as_deref().is_none_or(|a| next.as_str() > a) => after = Some(next),
            _ => return Ok(out),
        }
    }
}

/// The first `limit` rows of `pk` under `prefix` after `start_after`, and whether there are more.
async fn first_rows<T: TableStore>(
    table: &T,
    pk: &str,
    prefix: &str,
    start_after: Option<&str>,
    limit: usize,
) -> Result<(Vec<Item>, bool), PortError> {
    let mut out: Vec<Item> = Vec::new();
    let mut after = start_after.map(str::to_string);
    // A store may return a short page with a `next` (expired rows, size caps): keep going until full.
    while out.len() < limit {
        let got = table.query(pk, prefix, after.as_deref(), limit - out.len()).await?;
        out.extend(got.items);
        match got.next {
            Some(next) if after.as_deref().is_none_or(|a| next.as_str() > a) => after = Some(next),
            _ => return Ok((out, false)),
        }
    }
    Ok((out, true))
}

/// Runs the futures with at most [`CONCURRENCY`] in flight, results in input order.
async fn join_bounded<F: Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut out = Vec::with_capacity(futs.len());
    let mut futs = futs.into_iter().peekable();
    while futs.peek().is_some() {
        out.extend(join_all(futs.by_ref().take(CONCURRENCY).collect()).await);
    }
    out
}

/// Polls every future until all are done (a minimal `join_all`, so the core crate needs no async library).
async fn join_all<F: Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut futs: Vec<Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut outs: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (fut, out) in futs.iter_mut().zip(outs.iter_mut()) {
            if out.is_none() {
                match fut.as_mut().poll(cx) {
                    Poll::Ready(v) => *out = Some(v),
                    Poll::Pending => done = false,
                }
            }
        }
        if done {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    outs.into_iter().flatten().collect()
}

/// Epoch milliseconds as RFC 3339 (UTC); `None` outside the representable range.
pub fn rfc3339(ms: i64) -> Option<String> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok().and_then(|t| t.format(&Rfc3339).ok())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::config::DataPartyClass;
    use crate::ports::ItemKey;
    use crate::profile::layout::{ConsentEntry, RefusalRecord, Stamp, TraitEntry};

    use crate::testing::MemoryTable as MemTable;

    const ROOT: &str = "prof_root";
    const LOSER: &str = "prof_loser";
    const T0: i64 = 1_741_608_000_000; // 2025-03-10T12:00:00Z

    fn id(kind: IdType, raw: &str) -> Identifier {
        Identifier::new(kind, raw, None).unwrap()
    }

    fn stamp(ts: i64, source: &str, message_id: &str) -> Stamp {
        Stamp { ts, received: ts + 500, source: source.into(), message_id: message_id.into() }
    }

    fn ledger(table: &MemTable, profile: &str, op: LedgerOp, message_id: &str, at: i64, n: usize) {
        let row = LedgerRow {
            op,
            source: "web".into(),
            message_id: message_id.into(),
            rule: "test".into(),
            event_ts: at - 1_000,
            at,
        };
        let hash = layout::message_hash("web", message_id);
        table.put(ItemKey::new(layout::profile_pk(profile), layout::ledger_sk(at, &hash, n)), row.to_attrs());
    }

    fn link(table: &MemTable, profile: &str, identifier: &Identifier, message_id: &str, at: i64) {
        table.put(layout::identity_key(identifier), layout::identity_attrs(identifier, profile));
        let op = LedgerOp::Link { kind: identifier.kind.name().into_owned(), value: identifier.value.clone() };
        ledger(table, profile, op, message_id, at, 0);
    }

    fn event(table: &MemTable, profile: &str, message_id: &str, ts: i64) {
        let row = EventRow {
            source: "web".into(),
            message_id: message_id.into(),
            kind: "track".into(),
            name: Some("Clicked".into()),
            ts,
            received: ts + 500,
            event: json!({"type": "track", "messageId": message_id}),
            truncated: false,
        };
        let hash = layout::message_hash("web", message_id);
        table.put(ItemKey::new(layout::profile_pk(profile), layout::event_sk(ts, &hash)), row.to_attrs());
    }

    /// Two profiles, the loser merged into the root through a shared email; identities, ledger rows and events on
    /// both partitions.
    fn merged_graph() -> MemTable {
        let table = MemTable::default();
        let mut root = ProfileDoc { created_at: T0, members: vec![LOSER.into()], events: 5, ..Default::default() };
        root.counts = BTreeMap::from([("user_id".into(), 1), ("anonymous_id".into(), 1), ("email".into(), 1)]);
        root.traits.insert(
            "name".into(),
            TraitEntry {
                value: json!("Ann"),
                at: stamp(T0 + 2_000, "web", "m-name"),
                class: DataPartyClass::FirstParty,
                set_once: false,
            },
        );
        root.consent.insert("analytics".into(), ConsentEntry { granted: true, at: stamp(T0 + 3_000, "web", "m-c") });
        root.refusals.push(RefusalRecord {
            kind: "user_id".into(),
            id_hash: "ab".repeat(32),
            reason: "limit_exceeded".into(),
            other: None,
            limit: None,
            message_hash: "cd".repeat(32),
            at: T0 + 9_000,
        });
        root.refusal_count = 1;
        root.first_seen = T0 - 1_000;
        root.last_seen = T0 + 8_000;
        table.put(layout::profile_key(ROOT), root.to_attrs());
        let loser = ProfileDoc { created_at: T0 + 1_000, merged_into: Some(ROOT.into()), ..Default::default() };
        table.put(layout::profile_key(LOSER), loser.to_attrs());

        ledger(&table, ROOT, LedgerOp::Create, "m1", T0, 1);
        link(&table, ROOT, &id(IdType::UserId, "u-42"), "m1", T0);
        link(&table, LOSER, &id(IdType::AnonymousId, "anon-1"), "m2", T0 + 1_000);
        link(&table, ROOT, &id(IdType::Email, "ann@example.com"), "m3", T0 + 4_000);
        let merge = LedgerOp::Merge { loser: LOSER.into(), via_kind: "email".into(), via_hash: "ef".repeat(32) };
        ledger(&table, ROOT, merge, "m3", T0 + 4_000, 1);
        ledger(&table, LOSER, LedgerOp::MergedInto { survivor: ROOT.into() }, "m3", T0 + 4_000, 2);

        // Interleaved event times across the partitions.
        for (profile, message_id, ts) in [
            (ROOT, "e1", T0 + 1_000),
            (LOSER, "e2", T0 + 2_000),
            (ROOT, "e3", T0 + 3_000),
            (LOSER, "e4", T0 + 4_000),
            (ROOT, "e5", T0 + 5_000),
        ] {
            event(&table, profile, message_id, ts);
        }
        table
    }

    fn lookup(s: &str) -> Lookup {
        parse_lookup(s, None).unwrap()
    }

    #[test]
    fn parses_lookups() {
        assert_eq!(lookup("profile_id:prof_abc"), Lookup::Profile("prof_abc".into()));
        assert_eq!(lookup("email: Ann@Example.com "), Lookup::Identifier(id(IdType::Email, "ann@example.com")));
        assert_eq!(lookup("ext:Braze_ID:42"), Lookup::Identifier(id(IdType::External("braze_id".into()), "42")));
        assert_eq!(lookup("user_id:a:b"), Lookup::Identifier(id(IdType::UserId, "a:b")));
        assert_eq!(
            parse_lookup("phone:0612345678", Some("33")).unwrap(),
            Lookup::Identifier(id(IdType::Phone, "+33612345678"))
        );
    }

    #[test]
    fn refuses_bad_lookups_without_echoing_values() {
        for bad in [
            "ann@example.com",
            "mail:ann@example.com",
            "email:not-an-email",
            "email:",
            "phone:0612345678",
            "email_sha256:secret-value",
            "ext:*:secret-value",
            "ext:secret-value",
            "profile_id:",
            "profile_id:secret value",
            "",
        ] {
            let err = parse_lookup(bad, None).expect_err(bad);
            for fragment in ["ann@", "0612345678", "secret", "not-an-email"] {
                assert!(!err.contains(fragment), "{bad:?} → {err:?} echoes the value");
            }
        }
    }

    #[tokio::test]
    async fn resolves_an_identifier_of_the_loser_to_the_root() {
        let table = merged_graph();
        let r = resolve(&table, &lookup("anonymous_id:anon-1")).await.unwrap().unwrap();
        assert_eq!(r.profile_id, ROOT);
        assert_eq!(r.requested, None);
        assert_eq!(r.doc.members, vec![LOSER.to_string()]);

        let r = resolve(&table, &lookup("email:ANN@example.com")).await.unwrap().unwrap();
        assert_eq!(r.profile_id, ROOT);

        let r = resolve(&table, &lookup(&format!("profile_id:{LOSER}"))).await.unwrap().unwrap();
        assert_eq!((r.profile_id.as_str(), r.requested.as_deref()), (ROOT, Some(LOSER)));
        let r = resolve(&table, &lookup(&format!("profile_id:{ROOT}"))).await.unwrap().unwrap();
        assert_eq!(r.requested, None);

        assert_eq!(resolve(&table, &lookup("email:nobody@example.com")).await.unwrap(), None);
        assert_eq!(resolve(&table, &lookup("profile_id:prof_missing")).await.unwrap(), None);
    }

    #[tokio::test]
    async fn detects_loops_and_corrupt_documents() {
        let table = MemTable::default();
        for (a, b) in [("prof_a", "prof_b"), ("prof_b", "prof_c"), ("prof_c", "prof_a")] {
            let doc = ProfileDoc { merged_into: Some(b.into()), ..Default::default() };
            table.put(layout::profile_key(a), doc.to_attrs());
        }
        let anon = id(IdType::AnonymousId, "looped");
        table.put(layout::identity_key(&anon), layout::identity_attrs(&anon, "prof_a"));
        let err = resolve(&table, &Lookup::Identifier(anon)).await.unwrap_err();
        assert!(matches!(err, ReadError::Corrupt(_)), "{err:?}");
        assert!(!err.to_string().contains("looped"));

        let mut bad = serde_json::Map::new();
        bad.insert("created_at".into(), json!("yesterday"));
        table.put(layout::profile_key("prof_bad"), bad);
        let err = resolve(&table, &lookup("profile_id:prof_bad")).await.unwrap_err();
        assert!(matches!(err, ReadError::Corrupt(_)), "{err:?}");
    }

    #[tokio::test]
    async fn a_long_chain_is_followed_and_an_endless_one_refused() {
        let table = MemTable::default();
        let chain = |n: usize| format!("prof_{n}");
        for n in 0..MAX_HOPS + 5 {
            let doc = ProfileDoc { merged_into: Some(chain(n + 1)), ..Default::default() };
            table.put(layout::profile_key(&chain(n)), doc.to_attrs());
        }
        table.put(layout::profile_key(&chain(MAX_HOPS + 5)), ProfileDoc::default().to_attrs());
        let err = resolve(&table, &lookup("profile_id:prof_0")).await.unwrap_err();
        assert!(matches!(err, ReadError::Corrupt(_)), "{err:?}");
        let r = resolve(&table, &lookup("profile_id:prof_10")).await.unwrap().unwrap();
        assert_eq!(r.profile_id, chain(MAX_HOPS + 5));
    }

    #[tokio::test]
    async fn view_lists_the_whole_tree_with_provenance() {
        let table = merged_graph();
        let r = resolve(&table, &lookup("user_id:u-42")).await.unwrap().unwrap();
        let v = view(&table, &r).await.unwrap();
        assert_eq!(v.profile_id, ROOT);
        assert_eq!(v.merged_profiles, vec![LOSER.to_string()]);
        let ids: Vec<(&str, &str, &str)> =
            v.identities.iter().map(|i| (i.kind.as_str(), i.value.as_str(), i.linked_to.as_str())).collect();
        assert_eq!(
            ids,
            vec![("anonymous_id", "anon-1", LOSER), ("email", "ann@example.com", ROOT), ("user_id", "u-42", ROOT)]
        );
        assert_eq!(v.identities[0].linked_at.as_deref(), Some("2025-03-10T12:00:01Z"));
        assert_eq!(v.identities[0].message_id, "m2");
        let name = &v.traits["name"];
        assert_eq!(name.value, json!("Ann"));
        assert_eq!(name.event_time.as_deref(), Some("2025-03-10T12:00:02Z"));
        assert_eq!(name.received_at.as_deref(), Some("2025-03-10T12:00:02.5Z"));
        assert_eq!((name.source.as_str(), name.class, name.set_once), ("web", DataPartyClass::FirstParty, false));
        assert!(v.consent["analytics"].granted);
        assert_eq!(v.merges.len(), 1);
        assert_eq!((v.merges[0].loser.as_str(), v.merges[0].via.as_str()), (LOSER, "email"));
        assert_eq!(v.refusals.len(), 1);
        assert_eq!(v.refusal_count, 1);
        assert_eq!(v.event_count, 5);
        assert_eq!(v.first_seen.as_deref(), Some("2025-03-10T11:59:59Z"));

        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["traits"]["name"]["class"], "1P");
        assert_eq!(json["identities"][0]["type"], "anonymous_id");
        assert_eq!(json["audiences"], json!([]));
        assert!(json["refusals"][0].get("id_hash").is_none(), "refusals carry no identifier hashes");
        assert!(json.get("skipped_ledger_rows").is_none());
    }

    #[tokio::test]
    async fn events_are_newest_first_across_partitions_with_cursors() {
        let table = merged_graph();
        let r = resolve(&table, &lookup("user_id:u-42")).await.unwrap().unwrap();
        let all = events(&table, &r, 100, None).await.unwrap();
        let ids: Vec<&str> = all.events.iter().map(|e| e.message_id.as_str()).collect();
        assert_eq!(ids, ["e5", "e4", "e3", "e2", "e1"]);
        assert_eq!(all.next, None);

        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let page = events(&table, &r, 2, cursor.as_deref()).await.unwrap();
            assert!(page.events.len() <= 2);
            seen.extend(page.events.into_iter().map(|e| e.message_id));
            pages += 1;
            match page.next {
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
        assert_eq!(seen, ["e5", "e4", "e3", "e2", "e1"]);
        assert_eq!(pages, 3);

        // Exactly one full page: no dangling cursor to an empty page.
        let page = events(&table, &r, 5, None).await.unwrap();
        assert_eq!((page.events.len(), page.next), (5, None));
        // Limits are clamped.
        assert_eq!(events(&table, &r, 0, None).await.unwrap().events.len(), 1);

        assert_eq!(events(&table, &r, 10, Some("l#0000")).await.unwrap_err(), ReadError::InvalidCursor);
        assert_eq!(events(&table, &r, 10, Some(&"e#1".repeat(40))).await.unwrap_err(), ReadError::InvalidCursor);
    }

    #[tokio::test]
    async fn joins_many_partitions() {
        let table = MemTable::default();
        let members: Vec<String> = (0..40).map(|n| format!("prof_m{n:02}")).collect();
        let root = ProfileDoc { members: members.clone(), ..Default::default() };
        table.put(layout::profile_key(ROOT), root.to_attrs());
        for (n, m) in members.iter().enumerate() {
            let doc = ProfileDoc { merged_into: Some(ROOT.into()), ..Default::default() };
            table.put(layout::profile_key(m), doc.to_attrs());
            link(&table, m, &id(IdType::DeviceId, &format!("dev-{n:02}")), &format!("m{n}"), T0 + n as i64);
            event(&table, m, &format!("e{n:02}"), T0 + n as i64);
        }
        let r = resolve(&table, &lookup("device_id:dev-07")).await.unwrap().unwrap();
        assert_eq!(view(&table, &r).await.unwrap().identities.len(), 40);
        let page = events(&table, &r, 3, None).await.unwrap();
        let ids: Vec<&str> = page.events.iter().map(|e| e.message_id.as_str()).collect();
        assert_eq!(ids, ["e39", "e38", "e37"]);
    }
}
