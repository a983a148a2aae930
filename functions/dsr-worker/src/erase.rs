//! Erasing a resolved subject from the profile table, store by store, with a count for each receipt.
//!
//! Order matters for concurrency with stitch:
//! 1. every identity item becomes a tombstone, so an event read from now on is dropped instead of linked;
//! 2. every profile document is deleted, so a stitch transaction planned before step 1 fails its version
//!    condition, re-reads and finds the tombstones;
//! 3. the partitions are emptied page by page (ledger, events, receipts, memberships, export markers), with the
//!    dedup records of their events and the audience schedule's due items, until a read finds nothing left.

use std::collections::{BTreeMap, BTreeSet};

use tributary_core::delivery::envelope::RECEIPT_PREFIX;
use tributary_core::dsr::{tombstone_attrs, StoreReceipt};
use tributary_core::ports::{
    Condition, Item, ItemKey, PortError, TableStore, TransactError, WriteOp, MAX_TRANSACT_ITEMS,
};
use tributary_core::profile::layout::{self, dedup_key, EVENT_PREFIX, IDENTITY_SK, LEDGER_PREFIX, PROFILE_SK};
use tributary_core::profile::membership::{due_key, Membership, MEMBERSHIP_SK};
use tributary_core::profile::{EventRow, LedgerRow};

use crate::subject::Subject;

/// Sort-key prefix of the marker an access export leaves in the root's partition (`x#<request id>`, attribute
/// `key`: the export's object key), so a later erasure finds and deletes old exports.
pub const EXPORT_MARKER_PREFIX: &str = "x#";
/// Pages deleted from one partition before the erasure gives up on it (and is retried): far above any history the
/// profile bounds allow (retention × events kept per day), so only a partition that keeps filling reaches it.
const MAX_PAGES: usize = 100_000;
const PAGE: usize = 500;

/// What the table part of an erasure deleted, per store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableCounts {
    pub identities: u64,
    pub profiles: u64,
    pub ledger: u64,
    pub events: u64,
    pub receipts: u64,
    pub memberships: u64,
    pub dedup: u64,
    pub schedule: u64,
    pub other: u64,
    /// Object keys of earlier exports found in the partitions (the caller deletes the objects).
    pub exports: Vec<String>,
}

impl TableCounts {
    pub fn receipts(&self, at: i64) -> Vec<StoreReceipt> {
        let mut out = vec![
            StoreReceipt::new("identities", "suppressed", self.identities, at),
            StoreReceipt::new("profiles", "deleted", self.profiles, at),
            StoreReceipt::new("ledger", "deleted", self.ledger, at),
            StoreReceipt::new("events", "deleted", self.events, at),
            StoreReceipt::new("delivery_receipts", "deleted", self.receipts, at),
            StoreReceipt::new("audience_memberships", "deleted", self.memberships, at),
            StoreReceipt::new("audience_schedule", "deleted", self.schedule, at),
            StoreReceipt::new("dedup_records", "deleted", self.dedup, at),
        ];
        if self.other > 0 {
            out.push(StoreReceipt::new("profile_partition_other", "deleted", self.other, at));
        }
        out
    }
}

/// Step 1: tombstones over every identity item of the subject. Returns how many were written.
pub async fn tombstone<T: TableStore>(
    table: &T,
    subject: &Subject,
    request_id: &str,
    now_ms: i64,
) -> Result<u64, PortError> {
    let ops: Vec<WriteOp> = subject
        .identities
        .iter()
        .map(|(pk, kind)| WriteOp::Put {
            item: Item {
                key: ItemKey::new(pk.clone(), IDENTITY_SK),
                attrs: tombstone_attrs(kind, request_id, now_ms),
                // Above any version a link wrote, so a writer that read the live item fails its condition.
                version: 1 << 62,
                expires_at: None,
            },
            condition: Condition::None,
        })
        .collect();
    let n = ops.len() as u64;
    write_all(table, ops).await?;
    Ok(n)
}

/// Object keys of the earlier exports the subject's partitions name (their markers). Read before step 3 empties
/// the partitions, so that the caller deletes the objects while the markers still lead to them: a run that stops
/// in between finds the markers again on retry.
pub async fn export_keys<T: TableStore>(table: &T, subject: &Subject) -> Result<BTreeSet<String>, PortError> {
    let mut keys = BTreeSet::new();
    for profile in &subject.profiles {
        let pk = layout::profile_pk(profile);
        let mut after: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let page = table.query(&pk, EXPORT_MARKER_PREFIX, after.as_deref(), PAGE).await?;
            for item in &page.items {
                if let Some(key) = item.attrs.get("key").and_then(|v| v.as_str()) {
                    keys.insert(key.to_string());
                }
            }
            match page.next {
                Some(next) if after.as_deref().is_none_or(|a| next.as_str() > a) => after = Some(next),
                _ => break,
            }
        }
    }
    Ok(keys)
}

/// Steps 2 and 3.
pub async fn erase_partitions<T: TableStore>(table: &T, subject: &Subject) -> Result<TableCounts, PortError> {
    let mut counts = TableCounts::default();
    let docs: Vec<WriteOp> = subject
        .profiles
        .iter()
        .map(|p| WriteOp::Delete { key: layout::profile_key(p), condition: Condition::None })
        .collect();
    write_all(table, docs).await?;

    let mut exports: BTreeSet<String> = BTreeSet::new();
    for profile in &subject.profiles {
        let pk = layout::profile_pk(profile);
        // Page by page, each page deleted before the next is read (so memory stays one page whatever the history),
        // until the partition reads empty: rows a concurrent writer slips in are read and deleted too.
        let mut pages = 0usize;
        loop {
            let items = table.query(&pk, "", None, PAGE).await?.items;
            if items.is_empty() {
                break;
            }
            pages += 1;
            if pages > MAX_PAGES {
                return Err(PortError::Unavailable(format!(
                    "profile {profile}'s partition still holds rows after {MAX_PAGES} pages; the erasure is retried"
                )));
            }
            let mut dedup: BTreeSet<ItemKey> = BTreeSet::new();
            let mut due: BTreeSet<ItemKey> = BTreeSet::new();
            let mut ops = Vec::with_capacity(items.len());
            for item in items {
                let sk = item.key.sk.as_str();
                if sk == PROFILE_SK {
                    // Recreated by a writer that raced step 2; counted with the documents below.
                } else if sk.starts_with(LEDGER_PREFIX) {
                    counts.ledger += 1;
                    if let Ok(row) = LedgerRow::from_attrs(&item.attrs) {
                        dedup.insert(dedup_key(&row.source, &row.message_id));
                    }
                } else if sk.starts_with(EVENT_PREFIX) {
                    counts.events += 1;
                    if let Ok(row) = EventRow::from_attrs(&item.attrs) {
                        dedup.insert(dedup_key(&row.source, &row.message_id));
                    }
                } else if sk.starts_with(RECEIPT_PREFIX) {
                    counts.receipts += 1;
                } else if sk == MEMBERSHIP_SK {
                    counts.memberships += 1;
                    if let Some(at) = Membership::from_attrs(&item.attrs).ok().and_then(|m| m.recheck_at) {
                        due.insert(due_key(profile, at));
                    }
                } else if sk.starts_with(EXPORT_MARKER_PREFIX) {
                    if let Some(key) = item.attrs.get("key").and_then(|v| v.as_str()) {
                        exports.insert(key.to_string());
                    }
                } else {
                    counts.other += 1;
                }
                ops.push(WriteOp::Delete { key: item.key, condition: Condition::None });
            }
            write_all(table, ops).await?;
            // Dedup records and due items only exist for some keys; count the ones that did.
            counts.dedup += delete_existing(table, dedup.into_iter().collect()).await?;
            counts.schedule += delete_existing(table, due.into_iter().collect()).await?;
        }
    }
    // A document deleted in step 2 counts as a profile; one a concurrent writer recreated is deleted above too.
    counts.profiles = subject.profiles.len() as u64;

    counts.exports = exports.into_iter().collect();
    Ok(counts)
}

/// Deletes the keys that exist; returns how many did.
async fn delete_existing<T: TableStore>(table: &T, keys: Vec<ItemKey>) -> Result<u64, PortError> {
    let mut n = 0;
    for chunk in keys.chunks(tributary_core::ports::MAX_GET_MANY) {
        let found: Vec<ItemKey> = table.get_many(chunk).await?.into_iter().flatten().map(|item| item.key).collect();
        n += found.len() as u64;
        write_all(table, found.into_iter().map(|key| WriteOp::Delete { key, condition: Condition::None }).collect())
            .await?;
    }
    Ok(n)
}

/// Writes unconditional operations in transactions of at most [`MAX_TRANSACT_ITEMS`] (keys are distinct).
async fn write_all<T: TableStore>(table: &T, ops: Vec<WriteOp>) -> Result<(), PortError> {
    let mut by_key: BTreeMap<ItemKey, WriteOp> = BTreeMap::new();
    for op in ops {
        by_key.insert(op.key().clone(), op);
    }
    let ops: Vec<WriteOp> = by_key.into_values().collect();
    for chunk in ops.chunks(MAX_TRANSACT_ITEMS) {
        match table.transact(chunk.to_vec()).await {
            Ok(()) => {}
            Err(TransactError::Port(e)) => return Err(e),
            // Unconditional operations cannot fail a condition; an adapter that says so is broken.
            Err(TransactError::ConditionFailed { .. }) => {
                return Err(PortError::Invalid("an unconditional write reported a failed condition".into()))
            }
        }
    }
    Ok(())
}
