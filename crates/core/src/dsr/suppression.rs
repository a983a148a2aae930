//! The suppression list: the identity items erasure turned into tombstones, held in memory so that ingest, import
//! and redrive can drop the events of erased subjects before they are queued.
//!
//! Stitch is the authoritative check: it reads the identity item of every identifier of every event anyway, so a
//! tombstone costs it nothing extra, and it drops what reaches it. This list is an early, cheap filter in front of
//! it, so that events of erased people are not queued, quarantined, counted as accepted or held in a queue at all.
//!
//! ## Cost
//! Reading the identity item of each identifier of each event in ingest would repeat stitch's reads: two to four
//! point reads per event (half a read unit each on DynamoDB, eventually consistent), billed per event and paid in
//! latency on the request path. Instead every container keeps the list and reloads it at most once per refresh
//! interval ([`DEFAULT_REFRESH`], a minute): a keys-only scan of the sparse [`SUPPRESSED_IDENTITIES`] index, which
//! lists the tombstones and nothing else (live identity items, profiles and events never carry `sup`), in
//! [`LOAD_SEGMENTS`] concurrent segments. An index entry (the key, `sup`, the names) is about 120 bytes, and a scan
//! is billed by the bytes it reads (4 KB per half read unit, at least that per call), so a reload costs about one
//! read unit per 60 erased identifiers, and 2 read units for a small or empty index: a few read units per container
//! per minute whatever the traffic, where 1,000 events a minute would cost 1,000 to 2,000 read units read one by
//! one. The list is loaded lazily, on the first event that needs it, so a cold start does not pay for it, and an
//! empty list (the common case) costs nothing per event: identifiers are only extracted when there is something to
//! look them up in. Memory: a hash per erased identifier (~100 bytes with the set's overhead).
//!
//! ## Staleness and failures
//! An erasure takes up to one refresh interval (plus the index's replication lag, usually well under a second) to
//! reach every container; until then stitch drops the events. When a reload fails, the last list stays in use and
//! the failure is reported to the [`Suppressions::on_reload_error`] hook (the functions log it); the next attempt
//! waits [`RETRY_AFTER_FAILURE`], so a table outage does not turn into a scan per event. Only the very first load
//! has nothing to fall back on: [`Suppressions::current`] returns its error and the caller decides (ingest lets the
//! events through to stitch, import retries the file later).
//!
//! Nothing here holds or logs an identifier: the list holds hashes of `type:value` (the identity items' keys).

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::task::Poll;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::config::WorkspaceConfig;
use crate::identity::{extract, CompiledRules, ExtractOptions, Identifier};
use crate::ports::{PortError, TableStore, SUPPRESSED_IDENTITIES};
use crate::profile::layout::{identity_key, IDENTITY_SK};

/// How long a loaded list is used before the next event reloads it.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(60);
/// How long after a failed load the next one is tried (meanwhile the last list, if any, stays in use).
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);
/// Segments a load scans concurrently.
pub const LOAD_SEGMENTS: u32 = 4;
/// Keys per scan page.
const PAGE: usize = 1000;
/// The partition key prefix of identity items.
const IDENTITY_PREFIX: &str = "id#";

/// The suppressed identity items: the hex SHA-256 of `type:value` of every erased identifier (what follows `id#`
/// in the identity item's key). Holds no identifier.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SuppressionList {
    hashes: HashSet<String>,
}

impl SuppressionList {
    /// A list of these identity-item hashes (the hex after `id#`).
    pub fn from_hashes(hashes: impl IntoIterator<Item = String>) -> SuppressionList {
        SuppressionList { hashes: hashes.into_iter().collect() }
    }

    /// Reads the whole [`SUPPRESSED_IDENTITIES`] index, [`LOAD_SEGMENTS`] segments at once, every page of each.
    pub async fn load<T: TableStore>(table: &T) -> Result<SuppressionList, PortError> {
        Self::load_segments(table, LOAD_SEGMENTS).await
    }

    /// [`load`](Self::load) split into `segments` concurrent scans (1 scans in sequence). Keys that are not
    /// identity items (another partition or sort key) are not suppressions and are skipped.
    pub async fn load_segments<T: TableStore>(table: &T, segments: u32) -> Result<SuppressionList, PortError> {
        let segments = segments.max(1);
        let scans: Vec<_> = (0..segments).map(|segment| scan_segment(table, segment, segments)).collect();
        let mut hashes = HashSet::new();
        for keys in join_all(scans).await {
            hashes.extend(keys?);
        }
        Ok(SuppressionList { hashes })
    }

    /// Whether `id`'s identity item is suppressed.
    pub fn contains(&self, id: &Identifier) -> bool {
        if self.hashes.is_empty() {
            return false;
        }
        let key = identity_key(id);
        key.pk.strip_prefix(IDENTITY_PREFIX).is_some_and(|hash| self.hashes.contains(hash))
    }

    /// Whether any of `ids` is suppressed.
    pub fn contains_any(&self, ids: &[Identifier]) -> bool {
        !self.hashes.is_empty() && ids.iter().any(|id| self.contains(id))
    }

    /// Whether the event (a normalized Segment event) has a suppressed identifier, as `ids` reads them. An empty
    /// list answers at once, without reading the event.
    pub fn suppresses(&self, event: &Map<String, Value>, ids: &EventIdentifiers) -> bool {
        !self.hashes.is_empty() && self.contains_any(&ids.of(event))
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    pub fn len(&self) -> usize {
        self.hashes.len()
    }
}

/// The identity-item hashes of one segment, every page.
async fn scan_segment<T: TableStore>(table: &T, segment: u32, total: u32) -> Result<Vec<String>, PortError> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = table.scan_index(&SUPPRESSED_IDENTITIES, segment, total, cursor.as_deref(), PAGE).await?;
        out.extend(page.keys.into_iter().filter(|k| k.sk == IDENTITY_SK).filter_map(|k| {
            let hash = k.pk.strip_prefix(IDENTITY_PREFIX)?;
            (!hash.is_empty()).then(|| hash.to_owned())
        }));
        match page.next {
            Some(next) => cursor = Some(next),
            None => return Ok(out),
        }
    }
}

/// Polls every future until all are done (core has no async runtime to spawn on; the scans only wait on I/O).
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

/// Which identifiers of an event are looked up: the ones stitch resolves and checks for a tombstone, read with the
/// workspace's options (raw emails and phones followed by their hashed forms, the workspace's default country code)
/// and without the identity rules' blocked values (stitch ignores those).
#[derive(Debug, Clone)]
pub struct EventIdentifiers {
    options: ExtractOptions,
    /// `None` when the rules do not compile (a workspace `config::load` refuses): every identifier is looked up.
    rules: Option<CompiledRules>,
}

impl Default for EventIdentifiers {
    /// As a workspace without identity rules or a default country code reads events.
    fn default() -> EventIdentifiers {
        EventIdentifiers {
            options: ExtractOptions::default(),
            rules: crate::identity::IdentityRules::default().compile().ok(),
        }
    }
}

impl EventIdentifiers {
    pub fn for_workspace(workspace: &WorkspaceConfig) -> EventIdentifiers {
        EventIdentifiers {
            options: ExtractOptions {
                default_country_code: workspace.profiles.default_country_code.clone(),
                include_hashed: true,
            },
            rules: workspace.identity.compile().ok(),
        }
    }

    /// The identifiers of `event`, as stitch reads them.
    pub fn of(&self, event: &Map<String, Value>) -> Vec<Identifier> {
        let ids = extract(event, &self.options).ids;
        match &self.rules {
            Some(rules) => rules.split_blocked(&ids).0,
            None => ids,
        }
    }
}

type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;
type OnReloadError = Arc<dyn Fn(&PortError, bool) + Send + Sync>;

/// What the cache holds.
#[derive(Default)]
struct Cached {
    list: Option<Arc<SuppressionList>>,
    /// When the list in use was loaded (epoch ms, the clock's reading as its load started).
    loaded_at: i64,
    /// After a failure: no load before this (epoch ms).
    next_attempt: Option<i64>,
    /// The last load's failure, returned while there is no list to fall back on.
    error: Option<PortError>,
}

/// A [`SuppressionList`] kept per container and reloaded from `table` when older than the refresh interval, lazily:
/// nothing is read until the first [`current`](Self::current) or [`suppressed`](Self::suppressed). One reload runs
/// at a time; meanwhile other callers use the list they have. Safe to share between concurrent requests.
pub struct Suppressions<T> {
    table: T,
    refresh_ms: i64,
    retry_ms: i64,
    segments: u32,
    clock: Clock,
    on_reload_error: OnReloadError,
    cached: RwLock<Cached>,
    loading: AtomicBool,
}

impl<T> std::fmt::Debug for Suppressions<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Suppressions").field("refresh_ms", &self.refresh_ms).finish_non_exhaustive()
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn now_ms() -> i64 {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

/// Clears the loading flag when the load ends, also when the future doing it is dropped half-way.
struct Loading<'a>(&'a AtomicBool);

impl Drop for Loading<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl<T: TableStore> Suppressions<T> {
    /// A cache over `table` with the default refresh interval ([`DEFAULT_REFRESH`]), the wall clock and no hook
    /// for reload failures. Reads nothing yet.
    pub fn new(table: T) -> Suppressions<T> {
        Suppressions {
            table,
            refresh_ms: millis(DEFAULT_REFRESH),
            retry_ms: millis(RETRY_AFTER_FAILURE),
            segments: LOAD_SEGMENTS,
            clock: Arc::new(now_ms),
            on_reload_error: Arc::new(|_, _| {}),
            cached: RwLock::new(Cached::default()),
            loading: AtomicBool::new(false),
        }
    }

    /// How long a loaded list is used (zero reloads on every call). The wait after a failed load is at most this.
    pub fn with_refresh(mut self, refresh: Duration) -> Self {
        self.refresh_ms = millis(refresh);
        self.retry_ms = self.retry_ms.min(self.refresh_ms);
        self
    }

    /// Segments each load scans concurrently (at least 1).
    pub fn with_segments(mut self, segments: u32) -> Self {
        self.segments = segments.max(1);
        self
    }

    /// Replaces the clock (epoch milliseconds), for tests.
    pub fn with_clock(mut self, clock: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Called when a load fails, with the error and whether an older list stays in use (core does not log; the
    /// functions pass a hook that does).
    pub fn on_reload_error(mut self, hook: impl Fn(&PortError, bool) + Send + Sync + 'static) -> Self {
        self.on_reload_error = Arc::new(hook);
        self
    }

    pub fn table(&self) -> &T {
        &self.table
    }

    /// Whether any of `ids` is suppressed, by the list in use (reloaded first when it is due).
    pub async fn suppressed(&self, ids: &[Identifier]) -> Result<bool, PortError> {
        Ok(self.current().await?.contains_any(ids))
    }

    /// The list in use, reloaded first when it is older than the refresh interval. A failed reload keeps the last
    /// list (reported to the hook); the error is returned only when no list was ever loaded.
    pub async fn current(&self) -> Result<Arc<SuppressionList>, PortError> {
        let now = (self.clock)();
        let (list, due, error) = {
            let cached = self.cached.read().unwrap_or_else(PoisonError::into_inner);
            // A clock that went back counts as an age too, so a list is never kept for long by a clock jump.
            let fresh = cached.list.is_some() && now.abs_diff(cached.loaded_at) < self.refresh_ms.unsigned_abs();
            // The wait after a failure is over, or the clock went back past the failure.
            let waited = cached.next_attempt.is_none_or(|t| now >= t || now < t.saturating_sub(self.retry_ms));
            (cached.list.clone(), !fresh && waited, cached.error.clone())
        };
        if !due {
            return match (list, error) {
                (Some(list), _) => Ok(list),
                (None, Some(e)) => Err(e),
                (None, None) => Err(PortError::Unavailable("the suppression list is not loaded".into())),
            };
        }
        // One reload at a time: while one runs, the others keep the list they have (only before the first load
        // has anyone nothing to keep, and then they load too).
        let guard = if self.loading.swap(true, Ordering::AcqRel) {
            if let Some(list) = list {
                return Ok(list);
            }
            None
        } else {
            Some(Loading(&self.loading))
        };
        let loaded = SuppressionList::load_segments(&self.table, self.segments).await;
        drop(guard);
        let mut cached = self.cached.write().unwrap_or_else(PoisonError::into_inner);
        match loaded {
            Ok(list) => {
                // (A slower concurrent load may replace a newer list: it is at most as old as the interval.)
                let list = Arc::new(list);
                cached.list = Some(Arc::clone(&list));
                cached.loaded_at = now;
                cached.next_attempt = None;
                cached.error = None;
                Ok(list)
            }
            Err(e) => {
                cached.next_attempt = Some(now.saturating_add(self.retry_ms));
                cached.error = Some(e.clone());
                let stale = cached.list.clone();
                drop(cached);
                (self.on_reload_error)(&e, stale.is_some());
                stale.ok_or(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicI64;
    use std::sync::Mutex;

    use serde_json::json;

    use super::*;
    use crate::identity::IdType;
    use crate::ports::{Condition, ItemKey, WriteOp, ROOT_PROFILES};
    use crate::testing::{Call, FaultyTable, MemoryTable, Method};

    fn id(kind: IdType, raw: &str) -> Identifier {
        Identifier::new(kind, raw, None).expect("a valid identifier")
    }

    fn tombstone(table: &MemoryTable, id: &Identifier, request: &str) {
        let attrs = crate::dsr::tombstone_attrs(&id.kind.to_string(), request, 1_700_000_000_000);
        table.put(identity_key(id), attrs);
    }

    fn live(table: &MemoryTable, id: &Identifier, profile: &str) {
        let mut attrs = Map::new();
        attrs.insert("t".into(), json!(id.kind.to_string()));
        attrs.insert("p".into(), json!(profile));
        table.put(identity_key(id), attrs);
    }

    fn event(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("an object"),
        }
    }

    /// A table that counts index scans (pages), over a [`MemoryTable`], and checks that only the suppression index
    /// is scanned.
    type Counting = FaultyTable<MemoryTable>;

    fn counting() -> Counting {
        FaultyTable::new(MemoryTable::default()).with_rule(|call| {
            if let Call::ScanIndex { index, .. } = call {
                assert_eq!(**index, SUPPRESSED_IDENTITIES, "only the suppression index is scanned");
            }
            None
        })
    }

    #[tokio::test]
    async fn a_list_holds_every_tombstone_over_pages_and_segments_and_nothing_else() {
        let table = MemoryTable::default();
        let mut erased = Vec::new();
        for n in 0..2_345 {
            let e = id(IdType::Email, &format!("gone{n}@example.com"));
            tombstone(&table, &e, &format!("req-{n}"));
            erased.push(e);
        }
        let kept = id(IdType::Email, "kept@example.com");
        live(&table, &kept, "p1");
        // Not identity items: another sort key, another partition; and a root profile (another index).
        let mut other = crate::dsr::tombstone_attrs("email", "req-x", 1);
        table.put(ItemKey::new("id#abc", "profile"), other.clone());
        table.put(ItemKey::new("p#abc", "id"), other.clone());
        other.insert(ROOT_PROFILES.attribute.into(), json!("p1"));
        other.remove(crate::dsr::SUPPRESSED_ATTR);
        table.put(ItemKey::new("p#p1", "profile"), other);

        for segments in [1, 4, 7] {
            let list = SuppressionList::load_segments(&table, segments).await.expect("load");
            assert_eq!(list.len(), erased.len(), "{segments} segments");
            assert!(erased.iter().all(|e| list.contains(e)));
            assert!(!list.contains(&kept));
            assert!(!list.contains(&id(IdType::Email, "never@example.com")));
        }
        let list = SuppressionList::load(&table).await.expect("load");
        assert!(!list.is_empty());
        assert!(list.contains_any(&[kept.clone(), erased[17].clone()]));
        assert!(!list.contains_any(&[kept]));
        assert!(!list.contains_any(&[]));
        // The hashes are the identity items' keys, nothing more.
        let hash = identity_key(&erased[0]).pk.trim_start_matches("id#").to_owned();
        assert_eq!(SuppressionList::from_hashes([hash]).len(), 1);
        assert!(SuppressionList::from_hashes(Vec::new()).is_empty());

        let empty = SuppressionList::load(&MemoryTable::default()).await.expect("load");
        assert!(empty.is_empty());
        assert_eq!(empty.len(), 0);
    }

    #[tokio::test]
    async fn a_load_fails_when_the_table_does() {
        let table = MemoryTable::default();
        let down = PortError::Unavailable("down".into());
        table.fail_with(Some(down.clone()));
        assert_eq!(SuppressionList::load(&table).await, Err(down));
    }

    #[test]
    fn events_are_read_as_stitch_reads_them() {
        let ws: WorkspaceConfig = serde_json::from_value(json!({"workspace": "test"})).expect("a workspace");
        let ids = EventIdentifiers::for_workspace(&ws);
        let email = id(IdType::Email, "Erased@Example.com");
        // Erased as a hashed email (a broker's form): a raw email in an event still hits it.
        let list =
            SuppressionList::from_hashes([identity_key(&email.hashed()).pk.trim_start_matches("id#").to_owned()]);
        let ev = event(json!({"type": "identify", "userId": "u1", "traits": {"email": "erased@example.com"}}));
        assert!(list.suppresses(&ev, &ids));
        let other = event(json!({"type": "identify", "userId": "u1", "traits": {"email": "other@example.com"}}));
        assert!(!list.suppresses(&other, &ids));
        // A track event: context.traits, and external ids too.
        let ev = event(json!({"type": "track", "event": "x", "anonymousId": "a1",
                              "context": {"traits": {"email": "ERASED@example.com"}}}));
        assert!(list.suppresses(&ev, &ids));
        // A blocked value is never stitched, so never looked up: a tombstone of it suppresses nothing.
        let blocked = id(IdType::UserId, "undefined");
        let list = SuppressionList::from_hashes([identity_key(&blocked).pk.trim_start_matches("id#").to_owned()]);
        assert!(ids.of(&event(json!({"type": "track", "userId": "undefined"}))).is_empty());
        assert!(!list.suppresses(&event(json!({"type": "track", "userId": "undefined", "anonymousId": "a"})), &ids));
        assert!(!SuppressionList::default().suppresses(&ev, &ids));
        // The defaults are those of a workspace that sets nothing.
        let defaults = EventIdentifiers::default();
        let ev = event(json!({"type": "track", "userId": "undefined", "anonymousId": "a1"}));
        assert_eq!(defaults.of(&ev), ids.of(&ev));
    }

    fn clocked(table: &Counting, now: &Arc<AtomicI64>) -> Suppressions<Counting> {
        let now = Arc::clone(now);
        Suppressions::new(table.clone()).with_segments(2).with_clock(move || now.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn the_cache_loads_lazily_and_reloads_after_the_refresh_interval() {
        let table = counting();
        let now = Arc::new(AtomicI64::new(1_000_000));
        let erased = id(IdType::UserId, "erased-user");
        let later = id(IdType::Email, "later@example.com");
        tombstone(table.inner(), &erased, "req-1");
        let cache = clocked(&table, &now);
        assert_eq!(table.calls(Method::ScanIndex), 0, "nothing is read before the first use");

        assert_eq!(cache.suppressed(std::slice::from_ref(&erased)).await, Ok(true));
        assert_eq!(table.calls(Method::ScanIndex), 2, "one page of each of the 2 segments");
        assert_eq!(cache.suppressed(std::slice::from_ref(&later)).await, Ok(false));
        // Erased meanwhile: the list in use does not know yet.
        tombstone(table.inner(), &later, "req-2");
        now.fetch_add(59_999, Ordering::SeqCst);
        assert_eq!(cache.suppressed(std::slice::from_ref(&later)).await, Ok(false));
        assert_eq!(table.calls(Method::ScanIndex), 2, "no read within the interval");
        now.fetch_add(1, Ordering::SeqCst);
        assert_eq!(cache.suppressed(std::slice::from_ref(&later)).await, Ok(true));
        assert_eq!(table.calls(Method::ScanIndex), 4, "one reload");
        assert_eq!(cache.current().await.map(|l| l.len()), Ok(2));
        assert_eq!(table.calls(Method::ScanIndex), 4);
        // A clock that jumps back a long way counts as an age too.
        now.fetch_sub(3_600_000, Ordering::SeqCst);
        assert!(cache.current().await.is_ok());
        assert_eq!(table.calls(Method::ScanIndex), 6);

        // Configurable interval; zero reloads every time.
        let every = clocked(&table, &now).with_refresh(Duration::ZERO);
        for _ in 0..3 {
            assert_eq!(every.suppressed(std::slice::from_ref(&erased)).await, Ok(true));
        }
        assert_eq!(table.calls(Method::ScanIndex), 12);
        let defaults = Suppressions::new(table.inner().clone());
        assert_eq!(defaults.refresh_ms, 60_000);
        assert!(format!("{defaults:?}").contains("60000"));
    }

    #[tokio::test]
    async fn a_failed_reload_keeps_the_last_list_and_says_so() {
        let table = counting();
        let now = Arc::new(AtomicI64::new(5_000_000));
        let erased = id(IdType::DeviceId, "device-1");
        tombstone(table.inner(), &erased, "req-1");
        let reports: Arc<Mutex<Vec<(PortError, bool)>>> = Arc::default();
        let hook = Arc::clone(&reports);
        let cache =
            clocked(&table, &now).on_reload_error(move |e, stale| hook.lock().expect("hook").push((e.clone(), stale)));
        assert_eq!(cache.suppressed(std::slice::from_ref(&erased)).await, Ok(true));

        let down = PortError::Throttled("slow down".into());
        table.inner().fail_with(Some(down.clone()));
        now.fetch_add(61_000, Ordering::SeqCst);
        assert_eq!(cache.suppressed(std::slice::from_ref(&erased)).await, Ok(true), "the last list stays in use");
        assert_eq!(reports.lock().expect("hook").clone(), vec![(down.clone(), true)]);
        let scans = table.calls(Method::ScanIndex);
        // No new attempt until the retry wait is over, however many events come.
        for _ in 0..10 {
            assert_eq!(cache.suppressed(std::slice::from_ref(&erased)).await, Ok(true));
        }
        assert_eq!(table.calls(Method::ScanIndex), scans);
        now.fetch_add(millis(RETRY_AFTER_FAILURE), Ordering::SeqCst);
        table.inner().fail_with(None);
        let lifted = identity_key(&erased);
        table.inner().write(WriteOp::Delete { key: lifted, condition: Condition::Exists }).await.expect("lift");
        assert_eq!(cache.suppressed(&[erased]).await, Ok(false), "reloaded once the table answers again");
        assert_eq!(reports.lock().expect("hook").len(), 1);
    }

    #[tokio::test]
    async fn a_first_load_that_fails_is_an_error_until_one_succeeds() {
        let table = counting();
        let now = Arc::new(AtomicI64::new(0));
        let erased = id(IdType::UserId, "u-erased");
        tombstone(table.inner(), &erased, "req-1");
        let down = PortError::Unavailable("down".into());
        table.inner().fail_with(Some(down.clone()));
        let stale = Arc::new(Mutex::new(Vec::new()));
        let hook = Arc::clone(&stale);
        let cache = clocked(&table, &now).on_reload_error(move |_, s| hook.lock().expect("hook").push(s));
        assert_eq!(cache.suppressed(std::slice::from_ref(&erased)).await, Err(down.clone()));
        assert_eq!(cache.current().await, Err(down), "the same error, without another scan, during the wait");
        assert_eq!(stale.lock().expect("hook").clone(), vec![false]);
        let scans = table.calls(Method::ScanIndex);
        table.inner().fail_with(None);
        now.fetch_add(millis(RETRY_AFTER_FAILURE), Ordering::SeqCst);
        assert_eq!(cache.suppressed(&[erased]).await, Ok(true));
        assert!(table.calls(Method::ScanIndex) > scans);
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_reload() {
        let table = counting();
        let now = Arc::new(AtomicI64::new(0));
        tombstone(table.inner(), &id(IdType::UserId, "x"), "req-1");
        let cache = Arc::new(clocked(&table, &now).with_segments(1));
        cache.current().await.expect("first load");
        now.fetch_add(120_000, Ordering::SeqCst);
        let calls: Vec<_> = (0..8)
            .map(|_| {
                let c = Arc::clone(&cache);
                tokio::spawn(async move { c.current().await.map(|l| l.len()) })
            })
            .collect();
        for call in calls {
            assert_eq!(call.await.expect("task"), Ok(1));
        }
        // The first load, then at most one reload per caller that found none running: never more than the callers.
        assert!(table.calls(Method::ScanIndex) <= 1 + 8, "{}", table.calls(Method::ScanIndex));
        assert!(!cache.loading.load(Ordering::SeqCst), "the flag is cleared after a load");
    }
}
