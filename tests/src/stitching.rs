//! Running the stitch handler over generated streams and comparing what a store holds with the reference model.
//!
//! - [`Recorder`] wraps any `TableStore` and logs which event each committed transaction applied, in commit order,
//!   so the reference can be replayed in exactly the order the store decided (identity resolution with limits is
//!   order-dependent, as in Segment; see `tributary_core::identity::model`).
//! - [`run_workers`] feeds events to N concurrent stitch handlers sharing one store, each event as its own SQS
//!   record, like concurrent Lambda invocations.
//! - [`store_profiles`] reads the store back through identity lookups only (so it works on DynamoDB, which has no
//!   cheap scan here) and gives profiles in the reference's shape.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};

use aws_lambda_events::sqs::SqsEvent;
use serde_json::{json, Value};
use tributary_core::config::WorkspaceConfig;
use tributary_core::identity::Identifier;
use tributary_core::metrics::MemoryMetrics;
use tributary_core::ports::{Item, ItemKey, PortError, QueryPage, TableStore, TransactError, WriteOp};
use tributary_core::profile::layout::{identity_key, identity_profile, message_hash, profile_key};
use tributary_core::profile::ProfileDoc;
use tributary_core::testing::CountingQueue;
use tributary_stitch::{Stitch, StitchSettings};

use crate::people::{self, GenEvent};
use crate::reference::{RefProfile, Reference};

/// A workspace with the generator's three sources and consent purposes, and `set_once` on its set-once trait.
pub fn workspace() -> WorkspaceConfig {
    let key = |n: u8| tributary_core::sha256_hex(&[n]);
    let yaml = format!(
        r#"
workspace: stitching
sources:
  - {{ id: {web}, write_key_sha256: ["{k1}"], class: 1P }}
  - {{ id: {app}, write_key_sha256: ["{k2}"], class: 1P }}
  - {{ id: {broker}, write_key_sha256: ["{k3}"], class: 3P, consent_basis: consent, permitted_purposes: [] }}
profiles:
  set_once: [{set_once}]
"#,
        web = people::WEB,
        app = people::APP,
        broker = people::BROKER,
        k1 = key(1),
        k2 = key(2),
        k3 = key(3),
        set_once = people::SET_ONCE_TRAIT,
    );
    let mut cfg = tributary_core::config::load(&yaml).unwrap_or_else(|e| panic!("stitching workspace: {e:?}"));
    cfg.consent = people::consent_settings();
    cfg
}

/// A fresh reference with the workspace's rules.
pub fn reference(cfg: &WorkspaceConfig) -> Reference {
    Reference::new(&cfg.identity, &cfg.profiles, &cfg.consent)
}

/// Applies `events` to the reference in the given order.
pub fn reference_of(cfg: &WorkspaceConfig, events: &[GenEvent]) -> Reference {
    let mut r = reference(cfg);
    for e in events {
        r.apply(&e.source, people::class_of(&e.source), &e.event);
    }
    r
}

/// Logs the dedup key (`d#<hash>`) of every committed transaction, in commit order. Transactions are serialized
/// through the recorder so the log order is the commit order; reads stay concurrent, so workers still race.
pub struct Recorder<T> {
    inner: T,
    gate: tokio::sync::Mutex<()>,
    log: Mutex<Vec<String>>,
}

impl<T: TableStore> Recorder<T> {
    pub fn new(inner: T) -> Self {
        Recorder { inner, gate: tokio::sync::Mutex::new(()), log: Mutex::new(Vec::new()) }
    }

    pub fn inner(&self) -> &T {
        &self.inner
    }

    pub fn committed(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl<T: TableStore> TableStore for Recorder<T> {
    async fn get(&self, key: &ItemKey) -> Result<Option<Item>, PortError> {
        self.inner.get(key).await
    }

    async fn get_many(&self, keys: &[ItemKey]) -> Result<Vec<Option<Item>>, PortError> {
        self.inner.get_many(keys).await
    }

    async fn query(
        &self,
        pk: &str,
        sk_prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<QueryPage, PortError> {
        self.inner.query(pk, sk_prefix, start_after, limit).await
    }

    async fn transact(&self, ops: Vec<WriteOp>) -> Result<(), TransactError> {
        let first = ops.first().map(|op| op.key().pk.clone()).unwrap_or_default();
        let _turn = self.gate.lock().await;
        let result = self.inner.transact(ops).await;
        if result.is_ok() && first.starts_with("d#") {
            if let Ok(mut log) = self.log.lock() {
                log.push(first);
            }
        }
        result
    }

    async fn write(&self, op: WriteOp) -> Result<(), PortError> {
        self.inner.write(op).await
    }

    async fn add(
        &self,
        key: &ItemKey,
        deltas: &[(String, i64)],
        set: serde_json::Map<String, serde_json::Value>,
        expires_at: Option<i64>,
    ) -> Result<(), PortError> {
        self.inner.add(key, deltas, set, expires_at).await
    }

    async fn scan_index(
        &self,
        index: &tributary_core::ports::SparseIndex,
        segment: u32,
        total_segments: u32,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<tributary_core::ports::KeyPage, PortError> {
        self.inner.scan_index(index, segment, total_segments, cursor, limit).await
    }
}

/// One store shared by several handlers.
pub struct Shared<T>(pub Arc<T>);

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared(self.0.clone())
    }
}

impl<T: TableStore> TableStore for Shared<T> {
    async fn get(&self, key: &ItemKey) -> Result<Option<Item>, PortError> {
        self.0.get(key).await
    }

    async fn get_many(&self, keys: &[ItemKey]) -> Result<Vec<Option<Item>>, PortError> {
        self.0.get_many(keys).await
    }

    async fn query(
        &self,
        pk: &str,
        sk_prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<QueryPage, PortError> {
        self.0.query(pk, sk_prefix, start_after, limit).await
    }

    async fn transact(&self, ops: Vec<WriteOp>) -> Result<(), TransactError> {
        self.0.transact(ops).await
    }

    async fn write(&self, op: WriteOp) -> Result<(), PortError> {
        self.0.write(op).await
    }

    async fn add(
        &self,
        key: &ItemKey,
        deltas: &[(String, i64)],
        set: serde_json::Map<String, serde_json::Value>,
        expires_at: Option<i64>,
    ) -> Result<(), PortError> {
        self.0.add(key, deltas, set, expires_at).await
    }

    async fn scan_index(
        &self,
        index: &tributary_core::ports::SparseIndex,
        segment: u32,
        total_segments: u32,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<tributary_core::ports::KeyPage, PortError> {
        self.0.scan_index(index, segment, total_segments, cursor, limit).await
    }
}

/// An SQS event with one record per event (each its own envelope).
pub fn sqs_event(events: &[GenEvent]) -> SqsEvent {
    let records: Vec<Value> = events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            json!({
                "messageId": format!("r{i}"),
                "body": json!({"v": 1, "sourceId": e.source, "events": [e.event]}).to_string(),
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "eventSource": "aws:sqs",
            })
        })
        .collect();
    serde_json::from_value(json!({ "Records": records })).unwrap_or_else(|e| panic!("sqs event: {e}"))
}

/// Runs `events` through `workers` concurrent stitch handlers on `table`, `batch` events per invocation. Every
/// record must succeed (a failure would be redelivered by SQS; here it is retried at once, at most 5 times).
pub async fn run_workers<T: TableStore + 'static>(
    table: Arc<T>,
    cfg: &WorkspaceConfig,
    events: Vec<GenEvent>,
    workers: usize,
    batch: usize,
) {
    let work = Arc::new(Mutex::new(VecDeque::from(events)));
    let cfg = Arc::new(cfg.clone());
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let stitch = Stitch::new(
            Shared(table.clone()),
            CountingQueue::default(),
            Arc::new(MemoryMetrics::default()),
            cfg.clone(),
            StitchSettings { max_attempts: 64, ..StitchSettings::default() },
        )
        .unwrap_or_else(|e| panic!("stitch: {e}"));
        let work = work.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let next: Vec<GenEvent> = {
                    let mut q = work.lock().unwrap_or_else(|e| e.into_inner());
                    let n = batch.min(q.len());
                    q.drain(..n).collect()
                };
                if next.is_empty() {
                    break;
                }
                let mut pending = next;
                for attempt in 1..=5 {
                    let resp = stitch.handle(sqs_event(&pending)).await;
                    let failed: BTreeSet<usize> = resp
                        .batch_item_failures
                        .iter()
                        .filter_map(|f| f.item_identifier.strip_prefix('r').and_then(|n| n.parse().ok()))
                        .collect();
                    if failed.is_empty() {
                        break;
                    }
                    assert!(attempt < 5, "records kept failing: {failed:?}");
                    pending =
                        pending.into_iter().enumerate().filter(|(i, _)| failed.contains(i)).map(|(_, e)| e).collect();
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap_or_else(|e| panic!("worker panicked: {e}"));
    }
}

/// The events in the order the recorder saw their transactions commit.
pub fn commit_order(log: &[String], events: &[GenEvent]) -> Vec<GenEvent> {
    let mut by_key: BTreeMap<String, &GenEvent> = BTreeMap::new();
    for e in events {
        let id = e.event.get("messageId").and_then(Value::as_str).unwrap_or_default();
        by_key.entry(format!("d#{}", message_hash(&e.source, id))).or_insert(e);
    }
    log.iter().map(|k| (*by_key.get(k).unwrap_or_else(|| panic!("committed an unknown event {k}"))).clone()).collect()
}

/// The store's profiles for the identifiers the reference knows, in the reference's shape (sorted by ids).
/// Also checks that each root's identifier counts match exactly what was found (no stray links).
pub async fn store_profiles<T: TableStore>(table: &T, ids: &BTreeSet<Identifier>) -> Vec<RefProfile> {
    let mut groups: BTreeMap<String, (BTreeSet<Identifier>, ProfileDoc)> = BTreeMap::new();
    for id in ids {
        let Some(item) = table.get(&identity_key(id)).await.unwrap_or_else(|e| panic!("get identity: {e}")) else {
            continue;
        };
        let mut p = identity_profile(&item.attrs).unwrap_or_else(|| panic!("identity without pointer")).to_string();
        let mut hops = 0;
        let doc = loop {
            let item = table
                .get(&profile_key(&p))
                .await
                .unwrap_or_else(|e| panic!("get profile: {e}"))
                .unwrap_or_else(|| panic!("identity points at a missing profile"));
            let doc = ProfileDoc::from_attrs(&item.attrs).unwrap_or_else(|e| panic!("profile doc: {e}"));
            match doc.merged_into.clone() {
                Some(next) => p = next,
                None => break doc,
            }
            hops += 1;
            assert!(hops < 1_000, "merge pointer loop");
        };
        groups.entry(p).or_insert_with(|| (BTreeSet::new(), doc)).0.insert(id.clone());
    }
    let mut out: Vec<RefProfile> = groups
        .into_iter()
        .map(|(root, (ids, doc))| {
            let mut counts: BTreeMap<String, u32> = BTreeMap::new();
            for id in &ids {
                *counts.entry(id.kind.name().into_owned()).or_default() += 1;
            }
            assert_eq!(doc.counts, counts, "profile {root}: stored identifier counts differ from its identities");
            RefProfile {
                ids,
                traits: doc.traits.iter().map(|(k, t)| (k.clone(), (t.value.clone(), t.at.clone()))).collect(),
                consent: doc.consent.iter().map(|(k, c)| (k.clone(), (c.granted, c.at.clone()))).collect(),
                trait_classes: doc.traits.iter().map(|(k, t)| (k.clone(), t.class)).collect(),
            }
        })
        .collect();
    out.sort_by(|a, b| a.ids.cmp(&b.ids));
    out
}

/// Every identifier the reference holds.
pub fn all_ids(r: &Reference) -> BTreeSet<Identifier> {
    r.partition().into_iter().flatten().collect()
}

/// Compares profiles one by one so a failure names the first difference instead of printing everything.
pub fn assert_same_profiles(store: &[RefProfile], reference: &[RefProfile], what: &str) {
    let store_ids: Vec<&BTreeSet<Identifier>> = store.iter().map(|p| &p.ids).collect();
    let ref_ids: Vec<&BTreeSet<Identifier>> = reference.iter().map(|p| &p.ids).collect();
    if store_ids != ref_ids {
        let only_store: Vec<_> = store_ids.iter().filter(|s| !ref_ids.contains(s)).take(3).collect();
        let only_ref: Vec<_> = ref_ids.iter().filter(|s| !store_ids.contains(s)).take(3).collect();
        panic!(
            "{what}: partitions differ ({} store profiles, {} reference profiles)\nonly in store: {only_store:#?}\nonly in reference: {only_ref:#?}",
            store.len(),
            reference.len()
        );
    }
    for (s, r) in store.iter().zip(reference) {
        assert_eq!(s.traits, r.traits, "{what}: traits of profile {:?}", s.ids);
        assert_eq!(s.consent, r.consent, "{what}: consent of profile {:?}", s.ids);
        assert_eq!(s.trait_classes, r.trait_classes, "{what}: trait classes of profile {:?}", s.ids);
    }
}
