//! The stitch function: consumes the events queue, resolves each event's identifiers into a unified profile and
//! hands the event on to delivery with its profile context.
//!
//! Per event (see `tributary_core::profile::layout` for the items):
//! 1. if its dedup record exists, it was applied before: hand it off again (delivery is idempotent) and stop —
//!    unless one of its identifiers has been erased since (below);
//! 2. read the identity items of its identifiers and follow `merged_into` to their roots (a snapshot); a
//!    suppression tombstone among them drops the event (below);
//! 3. plan links, merges and refusals ([`tributary_core::identity::plan`]), fold in traits, consent and history;
//! 4. write everything as **one conditional transaction**: the dedup record (`NotExists`), the root profile
//!    (version check), each merged profile (version check), new identity items (`NotExists`), ledger rows and the
//!    event row. A failed condition means another worker changed what we read: read again and re-plan.
//!
//! So an event's effect happens exactly once, whatever the redeliveries, arrival order or concurrency.
//!
//! ## Suppressed (erased) subjects
//! Erasure turns each identity item of the subject into a tombstone: an item with `t`, `sup` (the request) and
//! `sup_at` but no profile pointer (see `tributary_core::dsr`). An event with **any** usable identifier whose
//! identity item is a tombstone is dropped whole: nothing is written for it (no profile, identity, event, ledger or
//! dedup item), it is not handed to delivery, and it is acknowledged (not retried) and counted as
//! [`Applied::Suppressed`] (metric `Suppressed`), logged by its message hash only. Step 2 reads the identity items
//! anyway, so the check costs nothing for the identifiers that take part in resolution; the rest of an event's
//! usable identifiers (past [`MAX_EVENT_IDENTIFIERS`]) and the identifiers of a duplicate are checked with point
//! reads. Blocked values (`null`, `anonymous`, …) are never linked and are not checked.
//!
//! A tombstone is never overwritten by a link: a tombstone is never taken for an orphan (an identity item without a
//! profile, which is re-linked), and every write of an identity item is conditioned on what was read — `NotExists`
//! where the item was absent, the version read where it was overwritten (an orphan re-linked, a pointer compressed).
//! An eraser that writes a tombstone over an item therefore makes such a transaction fail, and the re-read drops
//! the event; this holds as long as the eraser writes the tombstone with a version above the one it replaces (every
//! writer of the table bumps versions). Dropped events write no dedup item, so a redelivery is checked again; a
//! lifted suppression (its tombstones deleted) lets new events stitch normally.

// The Lambda function's wiring on the AWS adapters: the binary's `main` and the emulator deployment test
// (tests/tests/aws_stack.rs) build the handler through it.
#[cfg(feature = "lambda")]
pub mod lambda;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use rand::Rng;
use serde_json::{Map, Value};
use tributary_core::audience::{event_day, AudienceSet, MAX_COUNTER_KEYS};
use tributary_core::config::{DataPartyClass, SourceConfig, WorkspaceConfig};
use tributary_core::dsr::suppressed_by;
use tributary_core::identity::plan::{self, Bounds, Plan, Refused, RootInfo, Snapshot, Target, MAX_EVENT_IDENTIFIERS};
use tributary_core::identity::{extract, CompiledRules, ExtractOptions, IdType, Identifier};
use tributary_core::ingest::timestamp::parse_timestamp;
use tributary_core::ingest::Envelope;
use tributary_core::lambda::SendRetry;
use tributary_core::metrics::{Emf, MetricsSink};
use tributary_core::ports::{
    check_transaction, Condition, Item, ItemKey, OutgoingMessage, PortError, Queue, TableStore, TransactError, WriteOp,
    MAX_TRANSACT_ITEMS, ROOT_PROFILES,
};
use tributary_core::profile::changes::ProfileChanges;
use tributary_core::profile::layout::{
    dedup_key, event_sk, identity_attrs, identity_key, identity_profile, ledger_sk, message_hash, new_profile_id,
    profile_key, profile_pk, MAX_EVENT_ROW_BYTES, MAX_RECENT_REFUSALS,
};
use tributary_core::profile::{
    consent, traits, DedupRow, EventRow, LedgerOp, LedgerRow, ProfileDoc, RefusalRecord, Stamp,
};
use tributary_core::sha256_hex;

/// Longest `merged_into` chain followed before the graph is declared corrupt (merges per profile are bounded far
/// below this).
pub const MAX_HOPS: usize = 1_100;
/// Largest delivery-queue message written (see the ingest function for why 256 KiB).
pub const MAX_HANDOFF_BYTES: usize = 256 * 1024;

type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// Tunables that are not part of the workspace file.
#[derive(Debug, Clone)]
pub struct StitchSettings {
    /// Attempts per event when other workers keep changing the same profiles (then the record is retried by SQS).
    pub max_attempts: u32,
    /// Attempts to put the hand-off on the delivery queue.
    pub send_attempts: u32,
}

impl Default for StitchSettings {
    fn default() -> Self {
        StitchSettings { max_attempts: 16, send_attempts: 3 }
    }
}

/// Why an event or record could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum StitchError {
    /// The record or event can never be applied as it is (it ends in the DLQ after its retries).
    #[error("invalid record: {0}")]
    Invalid(String),
    #[error(transparent)]
    Port(#[from] PortError),
    /// Other workers kept winning the race for the same profiles.
    #[error("gave up after {0} conflicting attempts")]
    Contention(u32),
}

/// What applying one event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Stitched {
        profile: String,
        created: bool,
        /// The profiles merged into `profile` by this event.
        merged: Vec<String>,
        linked: usize,
        refused: usize,
        attempts: u32,
        /// The profile's consent per purpose as this event's transaction wrote it (what the hand-off carries).
        consent: BTreeMap<String, bool>,
        /// Whether this event changed that consent.
        consent_changed: bool,
    },
    /// Applied before (dedup record found); nothing changed.
    Duplicate { profile: Option<String> },
    /// No usable identifier (all blocked or invalid): the event is recorded as seen and belongs to no profile.
    NoIdentity,
    /// An identifier of the event belongs to an erased subject (its identity item is a suppression tombstone): the
    /// event was dropped. Nothing was written and nothing is handed off; the record is acknowledged.
    Suppressed,
}

pub use tributary_core::delivery::{DeliveryEnvelope, Handoff};

#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    stitched: u64,
    duplicates: u64,
    no_identity: u64,
    /// Events dropped because an identifier belongs to an erased subject.
    suppressed: u64,
    created: u64,
    merged: u64,
    linked: u64,
    refused: u64,
    conflicts: u64,
    failed_records: u64,
    /// Profiles named on the change feed (0 when it is off or its send failed).
    changes: u64,
}

pub struct Stitch<T: TableStore, Q: Queue, M: MetricsSink> {
    table: T,
    delivery: Q,
    /// The profile change feed the audience refresh drains; `None` when the workspace has no audiences.
    changes: Option<Q>,
    metrics: M,
    workspace: Arc<WorkspaceConfig>,
    rules: CompiledRules,
    /// What the audiences count per profile (their `performed` conditions).
    audiences: AudienceSet,
    extract: ExtractOptions,
    settings: StitchSettings,
    clock: Clock,
}

/// A profile document as read, with its version.
#[derive(Debug, Clone)]
struct Loaded {
    version: u64,
    doc: ProfileDoc,
}

impl<T: TableStore, Q: Queue, M: MetricsSink> Stitch<T, Q, M> {
    /// Fails when the workspace's identity rules do not compile (the config check refuses such files already).
    pub fn new(
        table: T,
        delivery: Q,
        metrics: M,
        workspace: Arc<WorkspaceConfig>,
        settings: StitchSettings,
    ) -> Result<Self, String> {
        let rules = workspace.identity.compile().map_err(|e| e.to_string())?;
        let audiences = AudienceSet::from_config(&workspace)
            .map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))?;
        let extract = ExtractOptions {
            default_country_code: workspace.profiles.default_country_code.clone(),
            include_hashed: true,
        };
        let clock: Clock = Arc::new(|| (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64);
        Ok(Stitch { table, delivery, changes: None, metrics, workspace, rules, audiences, extract, settings, clock })
    }

    /// Names every profile an invocation changed on `queue` (see [`ProfileChanges`]). Only worth it when the
    /// workspace has audiences: nothing else reads the feed.
    pub fn with_changes(mut self, queue: Q) -> Self {
        self.changes = Some(queue);
        self
    }

    /// Replaces the clock (epoch milliseconds), for tests.
    pub fn with_clock(mut self, clock: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    pub fn table(&self) -> &T {
        &self.table
    }

    /// The Lambda handler: every record is applied; failed ones are reported for redelivery (partial batch).
    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        let mut counters = Counters::default();
        let mut failures = Vec::new();
        let mut applied = Vec::new();
        let mut changed = BTreeSet::new();
        for record in event.records {
            let id = record.message_id.clone().unwrap_or_default();
            match self.process_record(record.body.as_deref().unwrap_or(""), &mut counters, &mut changed).await {
                Ok(()) => applied.push(id),
                Err(e) => {
                    counters.failed_records += 1;
                    tracing::warn!(error = %e, record = %id, "Record not applied; it will be redelivered.");
                    failures.push(id);
                }
            }
        }
        if let Some(queue) = &self.changes {
            if !changed.is_empty() {
                match send_all(queue, ProfileChanges::messages(&changed), self.settings.send_attempts).await {
                    Ok(()) => counters.changes = changed.len() as u64,
                    // The records come back as duplicates, which name their profiles again: nothing is missed.
                    Err(e) => {
                        tracing::warn!(error = %e, "Change feed not written; the batch will be redelivered.");
                        counters.failed_records += applied.len() as u64;
                        failures.append(&mut applied);
                    }
                }
            }
        }
        self.emit(&counters);
        tributary_core::lambda::batch_response(failures)
    }

    /// Applies every event of one events-queue record, then hands them all off in as few messages as fit.
    async fn process_record(
        &self,
        body: &str,
        counters: &mut Counters,
        changed: &mut BTreeSet<String>,
    ) -> Result<(), StitchError> {
        let envelope: Envelope = serde_json::from_str(body)
            .map_err(|e| StitchError::Invalid(format!("record body is not an events envelope: {e}")))?;
        let source = self
            .workspace
            .sources
            .iter()
            .find(|s| s.id.as_str() == envelope.source_id)
            .ok_or_else(|| StitchError::Invalid("the envelope's source is not in the workspace".into()))?;
        let mut handoffs = Vec::with_capacity(envelope.events.len());
        for event in envelope.events {
            let Value::Object(event) = event else {
                return Err(StitchError::Invalid("an envelope event is not an object".into()));
            };
            let applied = self.apply_event(source, &event).await?;
            let (profile_id, consent, consent_changed, applied_to) = match applied {
                // The transaction just wrote the root and its consent: no need to read them back.
                Applied::Stitched { profile, created, merged, linked, refused, attempts, consent, consent_changed } => {
                    counters.stitched += 1;
                    counters.created += u64::from(created);
                    counters.merged += merged.len() as u64;
                    changed.extend(merged);
                    counters.linked += linked as u64;
                    counters.refused += refused as u64;
                    counters.conflicts += u64::from(attempts.saturating_sub(1));
                    changed.insert(profile.clone());
                    (Some(profile), consent, consent_changed, None)
                }
                // Applied earlier: the profile may have been merged since, so follow it to its root now.
                Applied::Duplicate { profile } => {
                    counters.duplicates += 1;
                    match profile {
                        // The change (if any) was handed off when the event was applied.
                        // Receipts stay with the profile the event was applied to.
                        // Named on the change feed again: a redelivered batch may be one whose feed write failed.
                        Some(p) => match self.resolve_root(&p).await? {
                            Some((root, loaded)) => {
                                changed.insert(root.clone());
                                let applied_to = (root != p).then_some(p);
                                (Some(root), granted(&loaded.doc), false, applied_to)
                            }
                            None => (Some(p), BTreeMap::new(), false, None),
                        },
                        None => (None, BTreeMap::new(), false, None),
                    }
                }
                Applied::NoIdentity => {
                    counters.no_identity += 1;
                    (None, BTreeMap::new(), false, None)
                }
                // Dropped: not handed off (apply_event logged it by its message hash).
                Applied::Suppressed => {
                    counters.suppressed += 1;
                    continue;
                }
            };
            handoffs.push(Handoff {
                profile_id,
                class: source.class,
                consent,
                consent_changed,
                applied_to,
                event: Value::Object(event),
            });
        }
        self.hand_off(source.id.as_str(), handoffs).await
    }

    /// Applies one normalized event exactly once.
    pub async fn apply_event(&self, source: &SourceConfig, event: &Map<String, Value>) -> Result<Applied, StitchError> {
        let message_id = event
            .get("messageId")
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty())
            .ok_or_else(|| StitchError::Invalid("an event has no messageId".into()))?;
        let source_id = source.id.as_str();
        let mh = message_hash(source_id, message_id);
        let ts =
            time_ms(event.get("timestamp")).ok_or_else(|| StitchError::Invalid("an event has no timestamp".into()))?;
        let received = time_ms(event.get("receivedAt")).unwrap_or(ts);
        let stamp = Stamp { ts, received, source: source_id.to_string(), message_id: message_id.to_string() };
        let extracted = extract(event, &self.extract);
        let (usable, _) = self.rules.split_blocked(&extracted.ids);
        let mut by_priority: Vec<(u32, usize)> =
            usable.iter().enumerate().map(|(i, id)| (self.rules.priority(&id.kind), i)).collect();
        by_priority.sort();
        let to_read: Vec<Identifier> =
            by_priority.iter().take(MAX_EVENT_IDENTIFIERS).map(|&(_, i)| usable[i].clone()).collect();
        // Identifiers that take no part in resolution (past the bound) are only checked for a tombstone.
        let beyond: Vec<Identifier> =
            by_priority.iter().skip(MAX_EVENT_IDENTIFIERS).map(|&(_, i)| usable[i].clone()).collect();
        let signals = consent::extract(event, &self.workspace.consent);
        let incoming_traits = (event.get("type").and_then(Value::as_str) == Some("identify"))
            .then(|| event.get("traits").and_then(Value::as_object))
            .flatten();

        let mut attempt = 0u32;
        // The store error of the last attempt, if that is how it failed (rather than by a conflict).
        let mut refused: Option<PortError>;
        loop {
            attempt += 1;
            // One attempt: `Some` when the event is settled, `None` when another worker changed what was read.
            let step: Result<Option<Applied>, StitchError> = async {
                let dedup = dedup_key(source_id, message_id);
                if let Some(item) = self.table.get(&dedup).await? {
                    // Applied before the subject was erased: a redelivery must not hand it to delivery again.
                    if self.any_tombstone(&usable).await? {
                        return Ok(Some(suppressed(&mh)));
                    }
                    let row = DedupRow::from_attrs(&item.attrs).unwrap_or(DedupRow { p: None, at: 0 });
                    return Ok(Some(Applied::Duplicate { profile: row.p }));
                }
                let now = (self.clock)();
                let snapshot = self.snapshot(&to_read).await?;
                if snapshot.suppressed || self.any_tombstone(&beyond).await? {
                    return Ok(Some(suppressed(&mh)));
                }
                let bounds = Bounds {
                    max_merges: self.workspace.profiles.max_merges,
                    max_identities: self.workspace.profiles.max_identities,
                };
                let planned = plan::plan(&extracted.ids, &self.rules, bounds, &snapshot.graph);
                let (ops, (consent, consent_changed)) = match &planned {
                    None => (
                        vec![dedup_op(dedup, None, now, self.workspace.profiles.dedup_window_days)],
                        (BTreeMap::new(), false),
                    ),
                    Some(p) => {
                        self.build(p, &snapshot, event, &mh, &stamp, source.class, incoming_traits, &signals, now)?
                    }
                };
                if let Err(e) = check_transaction(&ops) {
                    return Err(StitchError::Invalid(format!("event transaction: {e}")));
                }
                match self.table.transact(ops).await {
                    Ok(()) => Ok(Some(match planned {
                        None => Applied::NoIdentity,
                        Some(p) => Applied::Stitched {
                            profile: match &p.target {
                                Target::Existing(id) => id.clone(),
                                Target::New => new_profile_id(&mh),
                            },
                            created: p.target == Target::New,
                            merged: p.losers.iter().map(|(l, _)| l.clone()).collect(),
                            linked: p.new_ids.len(),
                            refused: p.refused.len(),
                            attempts: attempt,
                            consent,
                            consent_changed,
                        },
                    })),
                    // Index 0 is the dedup record: the event was applied concurrently; the next read says so.
                    Err(TransactError::ConditionFailed { .. }) => Ok(None),
                    Err(TransactError::Port(e)) => Err(e.into()),
                }
            }
            .await;
            match step {
                Ok(Some(applied)) => return Ok(applied),
                Ok(None) => refused = None,
                // A read or write the store refused for now (throttled, unavailable, timed out, possibly after it
                // took effect): the next attempt reads again, so a write that did land is seen as applied.
                Err(StitchError::Port(e)) if e.is_retryable() => {
                    tracing::debug!(error = %e, attempt, "Store call failed; trying the event again.");
                    refused = Some(e);
                }
                Err(e) => return Err(e),
            }
            if attempt >= self.settings.max_attempts {
                // Say which it was: a store that kept refusing is not contention between workers.
                return Err(refused.map_or(StitchError::Contention(attempt), StitchError::Port));
            }
            let cap = (4u64 << attempt.min(6)).min(250);
            let wait = rand::rng().random_range(1..=cap);
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
    }

    /// Reads the identity items of `ids` and the profiles they lead to.
    async fn snapshot(&self, ids: &[Identifier]) -> Result<Read, StitchError> {
        let items = futures::future::try_join_all(ids.iter().map(|id| self.table.get_owned(identity_key(id)))).await?;
        let mut read = Read::default();
        if items.iter().flatten().any(|item| suppressed_by(&item.attrs).is_some()) {
            // The event is dropped: no need to read any profile.
            read.suppressed = true;
            return Ok(read);
        }
        for (id, item) in ids.iter().zip(items) {
            let Some(item) = item else { continue };
            let pointer = identity_profile(&item.attrs).map(str::to_string);
            let root = match &pointer {
                Some(p) => self.follow(p, &mut read.profiles).await?,
                None => None,
            };
            match root {
                Some(root) => {
                    read.graph.linked.insert(id.clone(), root.clone());
                    read.identities.insert(id.clone(), (item.version, pointer.unwrap_or_default()));
                }
                // An identity whose profile is gone (or unreadable) is linked afresh over its stale item, on the
                // version read: a tombstone written meanwhile fails the transaction. (Tombstones never get here.)
                None => {
                    read.orphans.insert(id.clone(), item.version);
                }
            }
        }
        for root in read.graph.linked.values() {
            if let Some(l) = read.profiles.get(root) {
                let counts =
                    l.doc.counts.iter().filter_map(|(k, n)| k.parse::<IdType>().ok().map(|k| (k, *n))).collect();
                let members = u32::try_from(l.doc.members.len()).unwrap_or(u32::MAX);
                read.graph.roots.insert(root.clone(), RootInfo { created_at: l.doc.created_at, counts, members });
            }
        }
        Ok(read)
    }

    /// Whether any of `ids` has a suppression tombstone: point reads, [`MAX_EVENT_IDENTIFIERS`] at a time (the
    /// reads step 2 makes, so the function needs no other permission than it has).
    async fn any_tombstone(&self, ids: &[Identifier]) -> Result<bool, StitchError> {
        let keys: BTreeSet<ItemKey> = ids.iter().map(identity_key).collect();
        let keys: Vec<ItemKey> = keys.into_iter().collect();
        for chunk in keys.chunks(MAX_EVENT_IDENTIFIERS) {
            let items = futures::future::try_join_all(chunk.iter().map(|k| self.table.get_owned(k.clone()))).await?;
            if items.iter().flatten().any(|item| suppressed_by(&item.attrs).is_some()) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Follows `merged_into` from `profile` to its root, loading documents into `cache`. `None`: no such profile.
    async fn follow(&self, profile: &str, cache: &mut BTreeMap<String, Loaded>) -> Result<Option<String>, StitchError> {
        let mut current = profile.to_string();
        for _ in 0..MAX_HOPS {
            if !cache.contains_key(&current) {
                let Some(item) = self.table.get(&profile_key(&current)).await? else {
                    return Ok(None);
                };
                let doc = ProfileDoc::from_attrs(&item.attrs)
                    .map_err(|e| StitchError::Invalid(format!("a stored profile cannot be read: {e}")))?;
                cache.insert(current.clone(), Loaded { version: item.version, doc });
            }
            match cache.get(&current).and_then(|l| l.doc.merged_into.clone()) {
                Some(next) => current = next,
                None => return Ok(Some(current)),
            }
        }
        Err(StitchError::Invalid("a merge chain is longer than any bound allows (a pointer loop?)".into()))
    }

    async fn resolve_root(&self, profile: &str) -> Result<Option<(String, Loaded)>, StitchError> {
        let mut cache = BTreeMap::new();
        Ok(match self.follow(profile, &mut cache).await? {
            Some(root) => cache.remove(&root).map(|l| (root, l)),
            None => None,
        })
    }

    /// The transaction for one planned event. Operation 0 is always the dedup record.
    #[allow(clippy::too_many_arguments)]
    fn build(
        &self,
        plan: &Plan,
        read: &Read,
        event: &Map<String, Value>,
        mh: &str,
        stamp: &Stamp,
        class: DataPartyClass,
        incoming_traits: Option<&Map<String, Value>>,
        signals: &BTreeMap<String, bool>,
        now: i64,
    ) -> Result<(Vec<WriteOp>, HandedConsent), StitchError> {
        let settings = &self.workspace.profiles;
        let (root_id, mut doc, root_condition) = match &plan.target {
            Target::Existing(id) => {
                let l =
                    read.profiles.get(id).ok_or_else(|| StitchError::Invalid("planned root was not read".into()))?;
                (id.clone(), l.doc.clone(), Condition::VersionIs(l.version))
            }
            Target::New => {
                let doc = ProfileDoc {
                    created_at: stamp.received,
                    first_seen: stamp.ts,
                    last_seen: stamp.ts,
                    ..ProfileDoc::default()
                };
                (new_profile_id(mh), doc, Condition::NotExists)
            }
        };
        let root_version = match root_condition {
            Condition::VersionIs(v) => v + 1,
            _ => 1,
        };
        let mut ops = vec![dedup_op(
            dedup_key(&stamp.source, &stamp.message_id),
            Some(root_id.clone()),
            now,
            settings.dedup_window_days,
        )];
        let mut ledger = Vec::new();
        let row = |op: LedgerOp, rule: &str| LedgerRow {
            op,
            source: stamp.source.clone(),
            message_id: stamp.message_id.clone(),
            rule: rule.to_string(),
            event_ts: stamp.ts,
            at: now,
        };
        if plan.target == Target::New {
            ledger.push(row(LedgerOp::Create, "new_profile"));
        }

        // Merges: fold each loser into the root and point it at the root.
        for (loser, via) in &plan.losers {
            let l =
                read.profiles.get(loser).ok_or_else(|| StitchError::Invalid("planned loser was not read".into()))?;
            absorb(&mut doc, loser, &l.doc, settings);
            let mut loser_doc = l.doc.clone();
            loser_doc.merged_into = Some(root_id.clone());
            ops.push(WriteOp::Put {
                item: Item {
                    key: profile_key(loser),
                    attrs: loser_doc.to_attrs(),
                    version: l.version + 1,
                    expires_at: None,
                },
                condition: Condition::VersionIs(l.version),
            });
            ledger.push(row(
                LedgerOp::Merge {
                    loser: loser.clone(),
                    via_kind: via.kind.name().into_owned(),
                    via_hash: sha256_hex(via.key().as_bytes()),
                },
                "shared_identifier",
            ));
        }

        // New links: over an absent item only if it is still absent, over an orphan only if it is unchanged, so a
        // tombstone written since the read fails the transaction (and the re-read drops the event).
        for id in &plan.new_ids {
            let condition = match read.orphans.get(id) {
                Some(v) => Condition::VersionIs(*v),
                None => Condition::NotExists,
            };
            let version = read.orphans.get(id).map(|v| v + 1).unwrap_or(1);
            ops.push(WriteOp::Put {
                item: Item { key: identity_key(id), attrs: identity_attrs(id, &root_id), version, expires_at: None },
                condition,
            });
            *doc.counts.entry(id.kind.name().into_owned()).or_default() += 1;
            ledger.push(row(
                LedgerOp::Link { kind: id.kind.name().into_owned(), value: id.value.clone() },
                "new_identifier",
            ));
        }

        // Refusals, recorded on the profile (hashed, never raw).
        for (id, why) in &plan.refused {
            let (other, limit) = match why {
                Refused::MergeRefused { other, kind } => (Some(other.clone()), Some(kind.clone())),
                Refused::MergeLimit { other } => {
                    doc.overflow.merges += 1;
                    (Some(other.clone()), None)
                }
                Refused::IdentityLimit { other } => {
                    doc.overflow.identities += 1;
                    (other.clone(), None)
                }
                Refused::LimitExceeded { kind } => (None, Some(kind.clone())),
                Refused::TooManyIdentifiers => (None, None),
            };
            doc.refusal_count += 1;
            doc.refusals.push(RefusalRecord {
                kind: id.kind.name().into_owned(),
                id_hash: sha256_hex(id.key().as_bytes()),
                reason: why.reason().to_string(),
                other,
                limit,
                message_hash: mh.to_string(),
                at: now,
            });
        }
        trim_refusals(&mut doc);

        // Traits, consent, activity.
        if let Some(incoming) = incoming_traits {
            let applied = traits::apply(&mut doc.traits, incoming, stamp, class, settings);
            doc.overflow.traits += applied.overflow;
        }
        let consent_before = granted(&doc);
        consent::apply(&mut doc.consent, signals, stamp);
        self.count(&mut doc, event, stamp, now);
        doc.events += 1;
        doc.first_seen = if doc.events == 1 { stamp.ts } else { doc.first_seen.min(stamp.ts) };
        doc.last_seen = doc.last_seen.max(stamp.ts);
        let day = now.div_euclid(86_400_000);
        if doc.history_day != day {
            doc.history_day = day;
            doc.history_today = 0;
        }
        let keep_event = doc.history_today < settings.history_per_day;
        if keep_event {
            doc.history_today += 1;
        } else {
            doc.overflow.history += 1;
        }

        let consent = granted(&doc);
        let consent_changed = consent != consent_before;
        // A root carries the sparse index attribute (a full audience pass lists roots through it); a merged
        // profile's document is written without it, which takes it out of the index.
        let mut attrs = doc.to_attrs();
        attrs.insert(ROOT_PROFILES.attribute.into(), Value::String(root_id.clone()));
        ops.push(WriteOp::Put {
            item: Item { key: profile_key(&root_id), attrs, version: root_version, expires_at: None },
            condition: root_condition,
        });
        let pk = profile_pk(&root_id);
        for (n, r) in ledger.into_iter().enumerate() {
            ops.push(WriteOp::Put {
                item: Item {
                    key: ItemKey::new(pk.clone(), ledger_sk(now, mh, n)),
                    attrs: r.to_attrs(),
                    version: 1,
                    expires_at: None,
                },
                condition: Condition::None,
            });
        }
        if keep_event {
            let expires = now / 1000 + i64::from(settings.history_retention_days) * 86_400;
            ops.push(WriteOp::Put {
                item: Item {
                    key: ItemKey::new(pk, event_sk(stamp.ts, mh)),
                    attrs: event_row(event, stamp).to_attrs(),
                    version: 1,
                    expires_at: Some(expires),
                },
                condition: Condition::None,
            });
        }

        // Path compression: identities seen pointing at a merged profile now point at the root, while room lasts.
        for (id, (version, pointer)) in &read.identities {
            if ops.len() >= MAX_TRANSACT_ITEMS {
                break;
            }
            let in_tree =
                read.graph.linked.get(id).is_some_and(|r| r == &root_id || plan.losers.iter().any(|(l, _)| l == r));
            if in_tree && pointer != &root_id {
                ops.push(WriteOp::Put {
                    item: Item {
                        key: identity_key(id),
                        attrs: identity_attrs(id, &root_id),
                        version: version + 1,
                        expires_at: None,
                    },
                    condition: Condition::VersionIs(*version),
                });
            }
        }
        Ok((ops, (consent, consent_changed)))
    }

    /// Counts the event for the audiences' `performed` conditions (on its event day, bounded in days and keys).
    /// Counters of conditions no longer configured are dropped as the profile passes by.
    fn count(&self, doc: &mut ProfileDoc, event: &Map<String, Value>, stamp: &Stamp, now: i64) {
        if doc.counters.keys().any(|k| !self.audiences.is_counted(k)) {
            doc.counters.retain_keys(|k| self.audiences.is_counted(k));
        }
        let day = event_day(stamp.ts, now);
        for key in self.audiences.counter_keys(event) {
            if !doc.counters.record(&key, day, self.audiences.keep_days(), MAX_COUNTER_KEYS) {
                doc.overflow.counters += 1;
            }
        }
    }

    /// Puts hand-offs on the delivery queue, packed into messages of at most [`MAX_HANDOFF_BYTES`].
    async fn hand_off(&self, source_id: &str, items: Vec<Handoff>) -> Result<(), StitchError> {
        if items.is_empty() {
            return Ok(());
        }
        let mut messages: Vec<OutgoingMessage> = Vec::new();
        let mut current: Vec<Handoff> = Vec::new();
        let mut size = 64 + source_id.len();
        for item in items {
            let item_size = serde_json::to_vec(&item).map(|v| v.len() + 1).unwrap_or(0);
            if !current.is_empty() && size + item_size > MAX_HANDOFF_BYTES {
                messages.push(self.message(source_id, std::mem::take(&mut current), messages.len()));
                size = 64 + source_id.len();
            }
            size += item_size;
            current.push(item);
        }
        messages.push(self.message(source_id, current, messages.len()));

        Ok(send_all(&self.delivery, messages, self.settings.send_attempts).await?)
    }

    fn message(&self, source_id: &str, items: Vec<Handoff>, n: usize) -> OutgoingMessage {
        let envelope =
            DeliveryEnvelope { v: 1, source_id: source_id.to_string(), items, only: None, destinations: None };
        OutgoingMessage { id: format!("m{n}"), body: serde_json::to_string(&envelope).unwrap_or_default() }
    }

    fn emit(&self, c: &Counters) {
        let emf = Emf::new()
            .dimension("Function", "stitch")
            .count("EventsStitched", c.stitched)
            .count("Duplicates", c.duplicates)
            .count("NoIdentity", c.no_identity)
            .count("Suppressed", c.suppressed)
            .count("ProfilesCreated", c.created)
            .count("Merges", c.merged)
            .count("Links", c.linked)
            .count("Refusals", c.refused)
            .count("Conflicts", c.conflicts)
            .count("FailedRecords", c.failed_records)
            .count("ProfileChanges", c.changes);
        if let Some(line) = emf.line((self.clock)()) {
            self.metrics.emit(line);
        }
    }
}

/// Sends on a queue, trying refused messages again with a short backoff.
async fn send_all<Q: Queue>(queue: &Q, messages: Vec<OutgoingMessage>, attempts: u32) -> Result<(), PortError> {
    let retry = SendRetry { attempts, backoff: Duration::from_millis(100) };
    tributary_core::lambda::send_all(queue, messages, retry, tokio::time::sleep).await
}

/// The profile's consent per purpose after an event, and whether the event changed it.
type HandedConsent = (BTreeMap<String, bool>, bool);

/// What one event read from the table.
#[derive(Debug, Default)]
struct Read {
    graph: Snapshot,
    /// Profile documents read (roots and the chain to them).
    profiles: BTreeMap<String, Loaded>,
    /// Linked identities: item version and the profile the item points at.
    identities: BTreeMap<Identifier, (u64, String)>,
    /// Identity items whose profile does not exist: their version. Never a tombstone.
    orphans: BTreeMap<Identifier, u64>,
    /// An identity item read is a suppression tombstone: the event is dropped (nothing else is read).
    suppressed: bool,
}

/// Logs a dropped event by its message hash (never an identifier, never the request: the request names the
/// subject's erasure) and names the outcome.
fn suppressed(message_hash: &str) -> Applied {
    tracing::info!(message_hash, "Event of an erased subject dropped (suppressed identifier).");
    Applied::Suppressed
}

/// `get` taking the key by value, so a batch of reads can be joined.
trait GetOwned: TableStore {
    fn get_owned(&self, key: ItemKey) -> impl std::future::Future<Output = Result<Option<Item>, PortError>> + Send {
        async move { self.get(&key).await }
    }
}

impl<T: TableStore> GetOwned for T {}

fn dedup_op(key: ItemKey, profile: Option<String>, now: i64, window_days: u32) -> WriteOp {
    let row = DedupRow { p: profile, at: now };
    WriteOp::Put {
        item: Item {
            key,
            attrs: row.to_attrs(),
            version: 1,
            expires_at: Some(now / 1000 + i64::from(window_days) * 86_400),
        },
        condition: Condition::NotExists,
    }
}

/// Folds a merged profile's state into the root's document.
pub fn absorb(
    root: &mut ProfileDoc,
    loser_id: &str,
    loser: &ProfileDoc,
    settings: &tributary_core::profile::ProfileSettings,
) {
    let t = traits::merge(&mut root.traits, &loser.traits, settings);
    root.overflow.traits += t.overflow;
    consent::merge(&mut root.consent, &loser.consent);
    for (k, n) in &loser.counts {
        *root.counts.entry(k.clone()).or_default() += n;
    }
    root.members.push(loser_id.to_string());
    root.members.extend(loser.members.iter().cloned());
    root.refusals.extend(loser.refusals.iter().cloned());
    root.refusal_count += loser.refusal_count;
    root.overflow.merges += loser.overflow.merges;
    root.overflow.identities += loser.overflow.identities;
    root.overflow.history += loser.overflow.history;
    root.overflow.counters += loser.overflow.counters;
    root.overflow.counters += root.counters.merge(&loser.counters, MAX_COUNTER_KEYS) as u64;
    root.overflow.traits += loser.overflow.traits;
    if loser.events > 0 {
        root.first_seen = if root.events == 0 { loser.first_seen } else { root.first_seen.min(loser.first_seen) };
        root.last_seen = root.last_seen.max(loser.last_seen);
    }
    root.events += loser.events;
    root.created_at = root.created_at.min(loser.created_at);
    trim_refusals(root);
}

/// Purpose → granted, as handed to delivery.
fn granted(doc: &ProfileDoc) -> BTreeMap<String, bool> {
    doc.consent.iter().map(|(k, v)| (k.clone(), v.granted)).collect()
}

fn trim_refusals(doc: &mut ProfileDoc) {
    if doc.refusals.len() > MAX_RECENT_REFUSALS {
        doc.refusals.sort_by_key(|r| r.at);
        let excess = doc.refusals.len() - MAX_RECENT_REFUSALS;
        doc.refusals.drain(..excess);
    }
}

/// The history row of an event: whole when small, without its payload when large (flagged, never silent).
fn event_row(event: &Map<String, Value>, stamp: &Stamp) -> EventRow {
    let kind = event.get("type").and_then(Value::as_str).unwrap_or("track").to_string();
    let name = event.get("event").or_else(|| event.get("name")).and_then(Value::as_str).map(str::to_string);
    let size = serde_json::to_vec(event).map(|v| v.len()).unwrap_or(usize::MAX);
    let (event, truncated) = if size <= MAX_EVENT_ROW_BYTES {
        (Value::Object(event.clone()), false)
    } else {
        let mut slim = event.clone();
        for field in ["properties", "traits", "context"] {
            slim.remove(field);
        }
        (Value::Object(slim), true)
    };
    EventRow {
        source: stamp.source.clone(),
        message_id: stamp.message_id.clone(),
        kind,
        name,
        ts: stamp.ts,
        received: stamp.received,
        event,
        truncated,
    }
}

fn time_ms(value: Option<&Value>) -> Option<i64> {
    let t = parse_timestamp(value?.as_str()?)?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}
