//! The audience refresh: a scheduled function that keeps every profile's audience memberships current and tells
//! destinations about each change with an `Audience Entered` or `Audience Exited` event.
//!
//! A run (one scheduled invocation; see `tributary_core::profile::membership` for the items):
//! 1. takes the run lease, so two runs never evaluate at once (a slow run can overlap the next schedule);
//! 2. drains the profile change feed stitch writes: the profiles that took events since the last run;
//! 3. reads the due items up to now: profiles whose membership may change with time alone;
//! 4. on a full pass (asked for by the schedule, or because the audiences in the config changed), pages through
//!    every root profile over parallel scan segments of the sparse root index, resuming where the previous run
//!    stopped when a pass does not fit in one invocation;
//! 5. evaluates each of those profiles against every audience and, where membership changed, sends the enter/exit
//!    events through delivery (consent applies there as for any event) and then writes the new membership.
//!
//! Exactly once at the destination: the events of a change are named by the membership's sequence number
//! ([`transition_message_id`]), so a run that sent them but failed before writing the membership sends the same
//! ids again and delivery's receipts drop the repeats.

// The Lambda function's wiring on the AWS adapters: the binary's `main` and the emulator deployment test
// (tests/tests/aws_stack.rs) build the handler through it.
#[cfg(feature = "lambda")]
pub mod lambda;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tributary_core::audience::{AudienceSet, CompiledAudience, AUDIENCE_SOURCE};
use tributary_core::config::{DataPartyClass, WorkspaceConfig};
use tributary_core::delivery::{DeliveryEnvelope, Handoff};
use tributary_core::lambda::{send_all, SendRetry};
use tributary_core::metrics::{Emf, MetricsSink};
use tributary_core::ports::{
    Condition, Item, ItemKey, OutgoingMessage, PortError, Queue, TableStore, TransactError, WriteOp, MAX_GET_MANY,
    ROOT_PROFILES,
};
use tributary_core::profile::changes::ProfileChanges;
use tributary_core::profile::layout::{profile_key, PROFILE_SK};
use tributary_core::profile::membership::{
    due_key, due_pk, membership_key, parse_due_sk, transition_message_id, Membership, DUE_SHARDS, RUN_PK, RUN_SK,
};
use tributary_core::profile::read::{self, Resolved};
use tributary_core::profile::ProfileDoc;

/// `context.library.name` of audience events.
pub const LIBRARY_NAME: &str = "tributary-audiences";

type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// Tunables that are not part of the workspace file.
#[derive(Debug, Clone)]
pub struct RefreshSettings {
    /// Parallel scan segments of a full pass.
    pub segments: u32,
    /// Keys per scan page and due items per query.
    pub page: usize,
    /// Profiles evaluated at once.
    pub concurrency: usize,
    /// Stop starting new work when less than this is left of the invocation.
    pub reserve: Duration,
    /// How long the run lease holds when the invocation has no deadline (the Lambda timeout otherwise).
    pub lease: Duration,
    /// Most change-feed messages read per run (the rest wait for the next run).
    pub max_change_messages: usize,
    /// How long a change-feed message being worked on stays hidden; one a failed run leaves undeleted comes
    /// back after it.
    pub change_visibility: Duration,
    /// Attempts per send to the delivery queue.
    pub send_attempts: u32,
}

impl Default for RefreshSettings {
    fn default() -> Self {
        RefreshSettings {
            segments: 4,
            page: 100,
            concurrency: 16,
            reserve: Duration::from_secs(30),
            lease: Duration::from_secs(15 * 60),
            max_change_messages: 10_000,
            change_visibility: Duration::from_secs(15 * 60),
            send_attempts: 4,
        }
    }
}

/// What the schedule asks for. The incremental schedule sends `{}`; the periodic full pass `{"full": true}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshRequest {
    #[serde(default)]
    pub full: bool,
}

/// What one run did. Returned to the scheduler (and the CLI) and emitted as metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshReport {
    /// Another run held the lease: this one did nothing.
    pub busy: bool,
    /// A full pass ran (or continued) in this run.
    pub full_pass: bool,
    /// The full pass finished in this run (false: the next run continues it).
    pub full_pass_done: bool,
    /// Profiles evaluated.
    pub evaluated: u64,
    pub entered: u64,
    pub exited: u64,
    /// Profiles named by the change feed, and due items read.
    pub changed: u64,
    pub due: u64,
    /// Profiles left for the next run because this one ran out of time.
    pub deferred: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error(transparent)]
    Port(#[from] PortError),
    #[error("profile data is corrupt: {0}")]
    Corrupt(String),
}

/// The refresh's own state item.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct RunState {
    /// A run holds the lease until this time (ms); 0 when free.
    #[serde(default)]
    lease_until: i64,
    /// Fingerprint of the audiences the last completed full pass evaluated.
    #[serde(default)]
    config: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    full: Option<FullPass>,
    #[serde(default)]
    last_full_at: i64,
}

/// A full pass in progress: where each scan segment stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct FullPass {
    started_at: i64,
    /// The fingerprint of the audiences this pass evaluates.
    config: String,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Segment {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cursor: Option<String>,
    #[serde(default)]
    done: bool,
}

/// What evaluating some profiles did: how many, and the memberships entered and exited.
#[derive(Debug, Default, Clone, Copy)]
struct Changed {
    evaluated: u64,
    entered: u64,
    exited: u64,
}

impl std::ops::AddAssign for Changed {
    fn add_assign(&mut self, other: Changed) {
        self.evaluated += other.evaluated;
        self.entered += other.entered;
        self.exited += other.exited;
    }
}

impl RefreshReport {
    fn count(&mut self, c: Changed) {
        self.evaluated += c.evaluated;
        self.entered += c.entered;
        self.exited += c.exited;
    }
}

pub struct Audiences<T: TableStore, Q: Queue, M: MetricsSink> {
    table: T,
    changes: Q,
    delivery: Q,
    metrics: M,
    audiences: AudienceSet,
    fingerprint: String,
    settings: RefreshSettings,
    clock: Clock,
}

impl<T: TableStore, Q: Queue, M: MetricsSink> Audiences<T, Q, M> {
    /// Fails when the workspace's audiences do not compile (the config check refuses such files already).
    pub fn new(
        table: T,
        changes: Q,
        delivery: Q,
        metrics: M,
        workspace: Arc<WorkspaceConfig>,
        settings: RefreshSettings,
    ) -> Result<Self, String> {
        let audiences = AudienceSet::from_config(&workspace)
            .map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))?;
        let fingerprint =
            tributary_core::sha256_hex(serde_json::to_string(&workspace.audiences).unwrap_or_default().as_bytes());
        let clock: Clock = Arc::new(|| (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64);
        Ok(Audiences { table, changes, delivery, metrics, audiences, fingerprint, settings, clock })
    }

    /// Replaces the clock (epoch milliseconds), for tests.
    pub fn with_clock(mut self, clock: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    pub fn table(&self) -> &T {
        &self.table
    }

    /// One scheduled run. `deadline`: when the invocation ends (`None`: no limit, as in `tributary serve`).
    pub async fn handle(
        &self,
        request: RefreshRequest,
        deadline: Option<Instant>,
    ) -> Result<RefreshReport, RefreshError> {
        let mut report = RefreshReport::default();
        let Some((mut state, version)) = self.take_lease(deadline).await? else {
            report.busy = true;
            return Ok(report);
        };
        let outcome = self.run(request, deadline, &mut state, &mut report).await;
        // The lease is given back whatever happened; progress made is kept.
        state.lease_until = 0;
        let released = self.write_state(&state, version + 1).await;
        self.emit(&report);
        outcome?;
        released?;
        Ok(report)
    }

    async fn run(
        &self,
        request: RefreshRequest,
        deadline: Option<Instant>,
        state: &mut RunState,
        report: &mut RefreshReport,
    ) -> Result<(), RefreshError> {
        let now = (self.clock)();
        let out_of_time =
            || deadline.is_some_and(|d| d.saturating_duration_since(Instant::now()) < self.settings.reserve);

        // Changes and due profiles first: they are what the schedule promises to keep fresh.
        self.refresh_changed(now, &out_of_time, report).await?;
        self.refresh_due(now, &out_of_time, report).await?;

        let config_changed = state.config != self.fingerprint;
        let stale_pass = state.full.as_ref().is_some_and(|f| f.config != self.fingerprint);
        // A pass begun for other audiences starts over: its evaluations so far answered another question.
        if stale_pass || (state.full.is_none() && (request.full || config_changed)) {
            state.full = Some(FullPass {
                started_at: now,
                config: self.fingerprint.clone(),
                segments: vec![Segment::default(); self.settings.segments.max(1) as usize],
            });
        }
        if let Some(pass) = state.full.as_mut() {
            report.full_pass = true;
            let total = pass.segments.len() as u32;
            let changed = std::sync::Mutex::new(Changed::default());
            let segments = pass.segments.iter_mut().enumerate().map(|(n, segment)| {
                let changed = &changed;
                async move {
                    while !segment.done && !out_of_time() {
                        let page = self
                            .table
                            .scan_index(&ROOT_PROFILES, n as u32, total, segment.cursor.as_deref(), self.settings.page)
                            .await?;
                        let ids: Vec<String> = page.keys.iter().filter_map(profile_of_key).collect();
                        let c = self.refresh_all(ids, now).await?;
                        if let Ok(mut total) = changed.lock() {
                            *total += c;
                        }
                        segment.done = page.next.is_none();
                        segment.cursor = page.next;
                    }
                    Ok::<_, RefreshError>(())
                }
            });
            let results = futures::future::join_all(segments).await;
            if let Ok(c) = changed.into_inner() {
                report.count(c);
            }
            results.into_iter().collect::<Result<Vec<()>, _>>()?;
            if pass.segments.iter().all(|s| s.done) {
                report.full_pass_done = true;
                state.config = pass.config.clone();
                state.last_full_at = pass.started_at;
                state.full = None;
            } else {
                report.deferred = true;
            }
        }
        Ok(())
    }

    /// Drains the change feed: each message's profiles are evaluated before the message is deleted.
    async fn refresh_changed(
        &self,
        now: i64,
        out_of_time: &impl Fn() -> bool,
        report: &mut RefreshReport,
    ) -> Result<(), RefreshError> {
        let mut read = 0usize;
        let visibility = self.settings.change_visibility;
        while read < self.settings.max_change_messages {
            if out_of_time() {
                report.deferred = true;
                return Ok(());
            }
            let messages = self.changes.receive(10, visibility, Duration::ZERO).await?;
            if messages.is_empty() {
                return Ok(());
            }
            read += messages.len();
            let ids: BTreeSet<String> =
                messages.iter().filter_map(|m| ProfileChanges::parse(&m.body)).flat_map(|c| c.profiles).collect();
            report.changed += ids.len() as u64;
            report.count(self.refresh_all(ids.into_iter().collect(), now).await?);
            // Foreign bodies are dropped too: they can never be read as changes.
            for m in &messages {
                self.changes.delete(&m.receipt_handle).await?;
            }
        }
        report.deferred = true;
        Ok(())
    }

    /// Evaluates the profiles whose due time has come, shard by shard, oldest first.
    async fn refresh_due(
        &self,
        now: i64,
        out_of_time: &impl Fn() -> bool,
        report: &mut RefreshReport,
    ) -> Result<(), RefreshError> {
        for shard in 0..DUE_SHARDS {
            let pk = due_pk(shard);
            let mut after: Option<String> = None;
            loop {
                if out_of_time() {
                    report.deferred = true;
                    return Ok(());
                }
                let page = self.table.query(&pk, "", after.as_deref(), self.settings.page).await?;
                let due: Vec<(ItemKey, String)> = page
                    .items
                    .iter()
                    .filter_map(|i| {
                        let (at, profile) = parse_due_sk(&i.key.sk)?;
                        (at <= now).then(|| (i.key.clone(), profile.to_string()))
                    })
                    .collect();
                let reached_future = due.len() < page.items.len();
                report.due += due.len() as u64;
                report.count(self.refresh_all(due.iter().map(|(_, p)| p.clone()).collect(), now).await?);
                // An evaluation moves the profile's due item; one left behind (a stale time) goes now.
                for (key, _) in &due {
                    let delete = WriteOp::Delete { key: key.clone(), condition: Condition::None };
                    self.table.write(delete).await?;
                }
                match page.next {
                    Some(next) if !reached_future => after = Some(next),
                    _ => break,
                }
            }
        }
        Ok(())
    }

    /// Evaluates `profiles`, a few at a time.
    /// Each profile's document and membership are read in batches (one `get_many` per 50 profiles); a profile
    /// whose membership moved under the evaluation is read again on its own.
    async fn refresh_all(&self, profiles: Vec<String>, now: i64) -> Result<Changed, RefreshError> {
        let mut total = Changed { evaluated: profiles.len() as u64, ..Changed::default() };
        let batches: Vec<Vec<String>> = profiles.chunks(MAX_GET_MANY / 2).map(<[String]>::to_vec).collect();
        let mut results = stream::iter(batches)
            .map(|batch| async move {
                let keys: Vec<ItemKey> = batch.iter().flat_map(|p| [profile_key(p), membership_key(p)]).collect();
                let mut items = self.table.get_many(&keys).await?.into_iter();
                let mut changed = Changed::default();
                for profile in &batch {
                    let (doc, state) = (items.next().flatten(), items.next().flatten());
                    changed += match self.try_refresh(profile, doc, state, now).await {
                        Err(RefreshError::Port(PortError::ConditionFailed(_))) => self.refresh(profile, now).await?,
                        other => other?,
                    };
                }
                Ok::<_, RefreshError>(changed)
            })
            .buffer_unordered(self.settings.concurrency.max(1));
        let mut first_error = None;
        while let Some(r) = results.next().await {
            match r {
                Ok(c) => total += c,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(total),
        }
    }

    /// Brings one profile's memberships up to date. Retries when a concurrent write moved its membership item.
    async fn refresh(&self, profile: &str, now: i64) -> Result<Changed, RefreshError> {
        for _ in 0..5 {
            let (doc_key, state_key) = (profile_key(profile), membership_key(profile));
            let (doc, state) = futures::try_join!(self.table.get(&doc_key), self.table.get(&state_key))?;
            match self.try_refresh(profile, doc, state, now).await {
                Err(RefreshError::Port(PortError::ConditionFailed(_))) => continue,
                other => return other,
            }
        }
        Err(RefreshError::Port(PortError::Unavailable("membership kept changing under the refresh".into())))
    }

    /// Evaluates one profile from its document and membership items as read; `ConditionFailed` when the
    /// membership changed since.
    async fn try_refresh(
        &self,
        profile: &str,
        doc_item: Option<Item>,
        state_item: Option<Item>,
        now: i64,
    ) -> Result<Changed, RefreshError> {
        let doc = match &doc_item {
            Some(item) => Some(
                ProfileDoc::from_attrs(&item.attrs)
                    .map_err(|_| RefreshError::Corrupt(format!("profile {profile} has an undecodable document")))?,
            ),
            None => None,
        };
        let (old, version) = match &state_item {
            Some(item) => (
                Membership::from_attrs(&item.attrs)
                    .map_err(|_| RefreshError::Corrupt(format!("profile {profile} has an undecodable membership")))?,
                Some(item.version),
            ),
            None => (Membership::default(), None),
        };

        // A merged (or erased) profile is in no audience: the person now lives on as the root profile, which is
        // evaluated on its own. Its memberships are dropped without exit events, so a destination never sees an
        // exit that races the root's enter for the same person.
        let Some(doc) = doc.filter(|d| d.merged_into.is_none()) else {
            if state_item.is_some() {
                let mut ops = vec![WriteOp::Delete {
                    key: membership_key(profile),
                    condition: version.map_or(Condition::None, Condition::VersionIs),
                }];
                if let Some(at) = old.recheck_at {
                    ops.push(WriteOp::Delete { key: due_key(profile, at), condition: Condition::None });
                }
                self.commit(ops).await?;
            }
            return Ok(Changed::default());
        };

        let mut new = Membership { members: BTreeMap::new(), recheck_at: None, seq: old.seq };
        for audience in self.audiences.audiences() {
            let verdict = audience.evaluate(&doc, now);
            if verdict.member {
                let since = old.members.get(audience.id()).copied().unwrap_or(now);
                new.members.insert(audience.id().to_string(), since);
            }
            new.recheck_at = match (new.recheck_at, verdict.recheck_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        let entered: Vec<&str> =
            new.members.keys().filter(|a| !old.members.contains_key(*a)).map(String::as_str).collect();
        // Memberships of audiences no longer configured are dropped without an event: nothing routes them now.
        let exited: Vec<&str> = old
            .members
            .keys()
            .filter(|a| !new.members.contains_key(*a) && self.audiences.get(a).is_some())
            .map(String::as_str)
            .collect();
        let members_same = new.members.keys().eq(old.members.keys());
        if members_same && new.recheck_at == old.recheck_at {
            return Ok(Changed::default());
        }
        if !entered.is_empty() || !exited.is_empty() {
            new.seq = old.seq + 1;
            self.announce(profile, &doc, &entered, &exited, new.seq, now).await?;
        }

        let mut ops = vec![WriteOp::Put {
            item: Item {
                key: membership_key(profile),
                attrs: new.to_attrs(),
                version: version.map_or(1, |v| v + 1),
                expires_at: None,
            },
            condition: version.map_or(Condition::NotExists, Condition::VersionIs),
        }];
        if old.recheck_at != new.recheck_at {
            if let Some(at) = old.recheck_at {
                ops.push(WriteOp::Delete { key: due_key(profile, at), condition: Condition::None });
            }
            if let Some(at) = new.recheck_at {
                let key = due_key(profile, at);
                ops.push(WriteOp::Put {
                    item: Item { key, attrs: Map::new(), version: 1, expires_at: None },
                    condition: Condition::None,
                });
            }
        }
        self.commit(ops).await?;
        // `evaluated` is counted once per profile by `refresh_all`.
        Ok(Changed { entered: entered.len() as u64, exited: exited.len() as u64, ..Changed::default() })
    }

    async fn commit(&self, ops: Vec<WriteOp>) -> Result<(), RefreshError> {
        match self.table.transact(ops).await {
            Ok(()) => Ok(()),
            Err(TransactError::ConditionFailed { .. }) => {
                Err(RefreshError::Port(PortError::ConditionFailed("membership".into())))
            }
            Err(TransactError::Port(e)) => Err(e.into()),
        }
    }

    /// Sends the enter and exit events of one change, each to its audience's destinations.
    async fn announce(
        &self,
        profile: &str,
        doc: &ProfileDoc,
        entered: &[&str],
        exited: &[&str],
        seq: u64,
        now: i64,
    ) -> Result<(), RefreshError> {
        // An audience without destinations is only computed: there is no one to tell.
        let told: Vec<(&CompiledAudience, bool)> = entered
            .iter()
            .map(|a| (*a, true))
            .chain(exited.iter().map(|a| (*a, false)))
            .filter_map(|(id, entered)| self.audiences.get(id).map(|a| (a, entered)))
            .filter(|(a, _)| !a.destinations().is_empty())
            .collect();
        if told.is_empty() {
            return Ok(());
        }
        let resolved = Resolved { profile_id: profile.to_string(), version: 0, doc: doc.clone(), requested: None };
        let view = read::view(&self.table, &resolved).await.map_err(|e| match e {
            read::ReadError::Port(p) => RefreshError::Port(p),
            other => RefreshError::Corrupt(other.to_string()),
        })?;
        let first = |kind: &str| view.identities.iter().find(|i| i.kind == kind).map(|i| i.value.clone());
        let ids = Identity {
            user_id: first("user_id"),
            anonymous_id: first("anonymous_id"),
            email: first("email"),
            phone: first("phone"),
        };
        let consent: BTreeMap<String, bool> = doc.consent.iter().map(|(k, v)| (k.clone(), v.granted)).collect();
        let mut messages = Vec::new();
        for (audience, entered) in told {
            let audience_id = audience.id();
            let event = audience_event(profile, audience_id, audience.name(), entered, seq, now, &ids);
            let envelope = DeliveryEnvelope {
                v: 1,
                source_id: AUDIENCE_SOURCE.to_string(),
                items: vec![Handoff {
                    profile_id: Some(profile.to_string()),
                    // Memberships are computed by us from the profile: first-party data.
                    class: DataPartyClass::FirstParty,
                    consent: consent.clone(),
                    consent_changed: false,
                    applied_to: None,
                    event,
                }],
                only: None,
                destinations: Some(audience.destinations().to_vec()),
            };
            messages.push(OutgoingMessage {
                id: format!("m{}", messages.len()),
                body: serde_json::to_string(&envelope).unwrap_or_default(),
            });
        }
        let retry = SendRetry { attempts: self.settings.send_attempts, backoff: Duration::from_millis(100) };
        send_all(&self.delivery, messages, retry, tokio::time::sleep).await?;
        Ok(())
    }

    /// Takes the run lease; `None` when another run holds it.
    async fn take_lease(&self, deadline: Option<Instant>) -> Result<Option<(RunState, u64)>, RefreshError> {
        let now = (self.clock)();
        let key = ItemKey::new(RUN_PK, RUN_SK);
        let (mut state, version) = match self.table.get(&key).await? {
            Some(item) => (serde_json::from_value(Value::Object(item.attrs)).unwrap_or_default(), Some(item.version)),
            None => (RunState::default(), None),
        };
        if state.lease_until > now {
            return Ok(None);
        }
        let hold = deadline.map_or(self.settings.lease, |d| d.saturating_duration_since(Instant::now()));
        state.lease_until = now + hold.as_millis() as i64 + 60_000;
        let next = version.map_or(1, |v| v + 1);
        let condition = version.map_or(Condition::NotExists, Condition::VersionIs);
        let item = Item { key, attrs: state_attrs(&state), version: next, expires_at: None };
        match self.table.write(WriteOp::Put { item, condition }).await {
            Ok(()) => Ok(Some((state, next))),
            Err(PortError::ConditionFailed(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn write_state(&self, state: &RunState, version: u64) -> Result<(), RefreshError> {
        let key = ItemKey::new(RUN_PK, RUN_SK);
        let item = Item { key, attrs: state_attrs(state), version, expires_at: None };
        // Only the lease holder writes between taking and giving back the lease.
        self.table.write(WriteOp::Put { item, condition: Condition::VersionIs(version - 1) }).await?;
        Ok(())
    }

    fn emit(&self, r: &RefreshReport) {
        let emf = Emf::new()
            .dimension("Function", "audiences")
            .count("ProfilesEvaluated", r.evaluated)
            .count("AudienceEntered", r.entered)
            .count("AudienceExited", r.exited)
            .count("ProfilesChanged", r.changed)
            .count("ProfilesDue", r.due)
            .count("RunsBusy", u64::from(r.busy))
            .count("RunsDeferred", u64::from(r.deferred));
        if let Some(line) = emf.line((self.clock)()) {
            self.metrics.emit(line);
        }
    }
}

fn state_attrs(state: &RunState) -> Map<String, Value> {
    match serde_json::to_value(state) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

/// The profile id of a root index key (`p#<profile>` / `profile`).
fn profile_of_key(key: &ItemKey) -> Option<String> {
    (key.sk == PROFILE_SK).then(|| key.pk.strip_prefix("p#").map(str::to_string)).flatten()
}

/// The identifiers an audience event carries, so destinations can match the person.
#[derive(Debug, Default)]
struct Identity {
    user_id: Option<String>,
    anonymous_id: Option<String>,
    email: Option<String>,
    phone: Option<String>,
}

/// An `Audience Entered` / `Audience Exited` track event, shaped like Segment Engage's: the audience key as a
/// property and as a boolean property named after it.
fn audience_event(
    profile: &str,
    audience: &str,
    name: Option<&str>,
    entered: bool,
    seq: u64,
    now: i64,
    ids: &Identity,
) -> Value {
    let at = read::rfc3339(now).unwrap_or_default();
    let mut properties = Map::new();
    properties.insert("audience_key".into(), json!(audience));
    if let Some(name) = name {
        properties.insert("audience_name".into(), json!(name));
    }
    properties.insert(audience.to_string(), json!(entered));
    let mut traits = Map::new();
    if let Some(e) = &ids.email {
        traits.insert("email".into(), json!(e));
    }
    if let Some(p) = &ids.phone {
        traits.insert("phone".into(), json!(p));
    }
    let mut event = json!({
        "type": "track",
        "event": if entered { "Audience Entered" } else { "Audience Exited" },
        "messageId": transition_message_id(profile, audience, entered, seq),
        "timestamp": at,
        "receivedAt": at,
        "properties": properties,
        "context": { "library": { "name": LIBRARY_NAME }, "traits": traits },
    });
    if let Some(u) = &ids.user_id {
        event["userId"] = json!(u);
    }
    if let Some(a) = &ids.anonymous_id {
        event["anonymousId"] = json!(a);
    }
    event
}
