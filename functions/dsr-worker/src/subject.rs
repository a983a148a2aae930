//! Resolving a data subject through the identity graph: the subject's identity items lead to profiles, each
//! profile to the root of its merge tree, the root to every profile merged into it; the ledgers of those profiles
//! list every identifier ever linked to them. The result is everything the platform holds about the person.

use std::collections::{BTreeMap, BTreeSet};

use tributary_core::delivery::envelope::RECEIPT_PREFIX;
use tributary_core::dsr::{suppressed_by, Resolution, SubjectKey};
use tributary_core::identity::{IdType, Identifier};
use tributary_core::ports::{Item, ItemKey, TableStore};
use tributary_core::profile::layout::{self, IDENTITY_SK, LEDGER_PREFIX};
use tributary_core::profile::read::{self, Lookup, ReadError};
use tributary_core::profile::{LedgerOp, LedgerRow};

/// Rows read per page of a partition.
const PAGE: usize = 500;
/// Most distinct destinations looked for in one profile's receipts (far above any workspace's).
const MAX_DESTINATIONS: usize = 1_000;

/// Everything a subject resolved to. Identifier values live only in memory, for matching stored blobs.
#[derive(Debug, Clone, Default)]
pub struct Subject {
    /// Every profile of the subject's trees.
    pub profiles: BTreeSet<String>,
    /// Roots among them (one per tree), for the export's profile views.
    pub roots: BTreeSet<String>,
    /// Identity item partition key → type name.
    pub identities: BTreeMap<String, String>,
    /// The normalized identifiers found in the ledgers (and their hashed forms).
    pub identifiers: BTreeSet<Identifier>,
    /// Identity items that were already tombstones when resolution started (an earlier erasure).
    pub already_suppressed: u64,
    /// Destinations with delivery receipts for the subject's profiles.
    pub destinations: BTreeSet<String>,
}

impl Subject {
    /// What is saved on the request before anything is deleted.
    pub fn resolution(&self) -> Resolution {
        Resolution {
            profiles: self.profiles.iter().cloned().collect(),
            identities: self
                .identities
                .iter()
                .map(|(pk, kind)| SubjectKey { kind: kind.clone(), pk: pk.clone() })
                .collect(),
            destinations: self.destinations.iter().cloned().collect(),
        }
    }

    /// Whether `id` (normalized) is one of the subject's identifiers, directly or through its hashed form.
    pub fn has(&self, id: &Identifier) -> bool {
        self.identifiers.contains(id) || self.identifiers.contains(&id.hashed())
    }

    fn add_identifier(&mut self, id: Identifier) {
        for id in [id.hashed(), id] {
            let key = layout::identity_key(&id);
            self.identities.entry(key.pk).or_insert_with(|| id.kind.name().into_owned());
            self.identifiers.insert(id);
        }
    }
}

/// Resolves the subject of `keys` (and of a saved earlier resolution, when a run is retried).
pub async fn resolve<T: TableStore>(
    table: &T,
    keys: &[SubjectKey],
    saved: Option<&Resolution>,
) -> Result<Subject, ReadError> {
    let mut subject = Subject::default();
    let mut starts: BTreeSet<String> = BTreeSet::new();
    for k in keys.iter().chain(saved.map(|r| r.identities.as_slice()).unwrap_or_default()) {
        subject.identities.entry(k.pk.clone()).or_insert_with(|| k.kind.clone());
    }
    for chunk in keys.chunks(tributary_core::ports::MAX_GET_MANY) {
        let item_keys: Vec<ItemKey> = chunk.iter().map(|k| ItemKey::new(k.pk.clone(), IDENTITY_SK)).collect();
        for item in table.get_many(&item_keys).await?.into_iter().flatten() {
            match layout::identity_profile(&item.attrs) {
                Some(p) => {
                    starts.insert(p.to_string());
                }
                None if suppressed_by(&item.attrs).is_some() => subject.already_suppressed += 1,
                None => {}
            }
        }
    }
    if let Some(saved) = saved {
        starts.extend(saved.profiles.iter().cloned());
        subject.destinations.extend(saved.destinations.iter().cloned());
    }
    // Each start leads to a root; each root names its whole tree. A saved profile that is already gone (a retried
    // run deleted it) still counts: its partition may hold rows.
    for start in &starts {
        match read::resolve(table, &Lookup::Profile(start.clone())).await? {
            Some(r) => {
                subject.roots.insert(r.profile_id.clone());
                subject.profiles.extend(read::tree(&r));
                subject.profiles.insert(start.clone());
            }
            None => {
                subject.profiles.insert(start.clone());
            }
        }
    }
    // The ledgers name every identifier linked to the trees; the receipts, every destination that got events.
    for profile in subject.profiles.clone() {
        let pk = layout::profile_pk(&profile);
        for item in read::query_all(table, &pk, LEDGER_PREFIX, PAGE).await? {
            if let Some(id) = linked_identifier(&item) {
                subject.add_identifier(id);
            }
        }
        // Receipts are `r#<destination>#<hash>`: one read per destination, each starting past the previous
        // destination's receipts (hashes are hex, below `~`), however many events were delivered.
        let mut after: Option<String> = None;
        for _ in 0..MAX_DESTINATIONS {
            let page = table.query(&pk, RECEIPT_PREFIX, after.as_deref(), 1).await?;
            let Some(item) = page.items.first() else { break };
            let Some((dest, _)) = item.key.sk.strip_prefix(RECEIPT_PREFIX).and_then(|r| r.rsplit_once('#')) else {
                break;
            };
            subject.destinations.insert(dest.to_string());
            after = Some(format!("{RECEIPT_PREFIX}{dest}#~"));
        }
    }
    Ok(subject)
}

/// The identifier a ledger `link` row records, normalized again (rows hold normalized values already).
fn linked_identifier(item: &Item) -> Option<Identifier> {
    let row = LedgerRow::from_attrs(&item.attrs).ok()?;
    match row.op {
        LedgerOp::Link { kind, value } => {
            let kind: IdType = kind.parse().ok()?;
            Some(Identifier { kind, value })
        }
        _ => None,
    }
}
