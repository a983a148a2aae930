//! The audience refresh on the embedded stores, driven with a controllable clock: events go through the real
//! stitch handler (which keeps counters and writes the change feed), then a run evaluates what changed.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::sqs::SqsEvent;
use serde_json::{json, Value};
use tributary_audiences::{Audiences, RefreshReport, RefreshRequest, RefreshSettings};
use tributary_core::audience::AudienceSet;
use tributary_core::config::WorkspaceConfig;
use tributary_core::delivery::DeliveryEnvelope;
use tributary_core::metrics::MemoryMetrics;
use tributary_core::ports::{ItemKey, Queue, TableStore};
use tributary_core::profile::layout::profile_key;
use tributary_core::profile::membership::{membership_key, Membership, RUN_PK, RUN_SK};
use tributary_core::profile::ProfileDoc;
use tributary_core::testing::{FaultyTable, MemoryTable};
use tributary_local::sqlite_queue::{QueueOptions, SqliteQueue};
use tributary_stitch::{Stitch, StitchSettings};

const DAY: i64 = 86_400_000;
/// 2026-11-02T00:00:00Z.
const T0: i64 = 1_793_577_600_000;

fn workspace(extra_audience: bool) -> Arc<WorkspaceConfig> {
    let mut yaml = r#"
workspace: audiences
consent:
  purposes: [{ id: analytics }, { id: advertising }]
sources:
  - { id: web, write_key_sha256: ["6b86b273ff34fce19d6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b"], class: 1P }
destinations:
  - id: hook
    kind: webhook
    essential: true
    transport: { url: "https://hooks.example.com/audiences" }
audiences:
  - id: pro
    name: Pro plan
    rule: { trait: plan, equals: pro }
    destinations: [hook]
  - id: active
    rule: { performed: Viewed, at_least: 2, in_last_days: 7 }
    destinations: [hook]
"#
    .to_string();
    if extra_audience {
        yaml.push_str("  - id: has-email\n    rule: { has_identifier: email }\n");
    }
    Arc::new(tributary_core::config::load(&yaml).unwrap_or_else(|e| panic!("workspace: {e:?}")))
}

struct World {
    _dir: tempfile::TempDir,
    table: MemoryTable,
    delivery: SqliteQueue,
    changes: SqliteQueue,
    clock: Arc<AtomicI64>,
    stitch: Stitch<MemoryTable, SqliteQueue, MemoryMetrics>,
    sent: u32,
    /// The refresher's view of the table: the same items, with transactions that can be made to fail.
    faults: FaultyTable<MemoryTable>,
}

type Refresher = Audiences<FaultyTable<MemoryTable>, SqliteQueue, MemoryMetrics>;

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().expect("dir");
        let db = dir.path().join("queues.sqlite");
        let open = |n: &str| SqliteQueue::open(&db, n, QueueOptions::default()).expect("queue");
        let (delivery, changes) = (open("delivery"), open("changes"));
        let table = MemoryTable::default();
        let clock = Arc::new(AtomicI64::new(T0 + 10 * 3_600_000));
        let c = clock.clone();
        let stitch = Stitch::new(
            table.clone(),
            delivery.clone(),
            MemoryMetrics::default(),
            workspace(false),
            StitchSettings::default(),
        )
        .expect("stitch")
        .with_changes(changes.clone())
        .with_clock(move || c.load(Ordering::SeqCst));
        World { _dir: dir, faults: FaultyTable::new(table.clone()), table, delivery, changes, clock, stitch, sent: 0 }
    }

    fn now(&self) -> i64 {
        self.clock.load(Ordering::SeqCst)
    }

    fn advance(&self, ms: i64) {
        self.clock.fetch_add(ms, Ordering::SeqCst);
    }

    fn refresher(&self, ws: Arc<WorkspaceConfig>) -> Refresher {
        let c = self.clock.clone();
        let settings = RefreshSettings {
            segments: 3,
            page: 2,
            change_visibility: Duration::from_millis(200),
            ..RefreshSettings::default()
        };
        Audiences::new(
            self.faults.clone(),
            self.changes.clone(),
            self.delivery.clone(),
            MemoryMetrics::default(),
            ws,
            settings,
        )
        .expect("audiences")
        .with_clock(move || c.load(Ordering::SeqCst))
    }

    /// Sends one event of `user` through stitch at the current time.
    async fn send(&mut self, user: &str, kind: &str, body: Value) {
        self.sent += 1;
        let at = tributary_core::profile::read::rfc3339(self.now()).expect("time");
        let mut event = json!({
            "type": kind, "messageId": format!("m{}", self.sent), "userId": user,
            "timestamp": at, "receivedAt": at,
        });
        if let (Value::Object(e), Value::Object(b)) = (&mut event, body) {
            e.extend(b);
        }
        let records = json!({ "Records": [{
            "messageId": format!("r{}", self.sent),
            "body": json!({"v": 1, "sourceId": "web", "events": [event]}).to_string(),
            "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {}, "eventSource": "aws:sqs",
        }]});
        let sqs: SqsEvent = serde_json::from_value(records).expect("sqs event");
        assert!(self.stitch.handle(sqs).await.batch_item_failures.is_empty());
    }

    async fn identify(&mut self, user: &str, traits: Value) {
        self.send(user, "identify", json!({ "traits": traits })).await;
    }

    async fn track(&mut self, user: &str, name: &str) {
        self.send(user, "track", json!({ "event": name })).await;
    }

    /// The audience events on the delivery queue since the last call: (event name, audience, userId, messageId,
    /// destinations).
    async fn audience_events(&self) -> Vec<(String, String, String, String, Vec<String>)> {
        let mut out = Vec::new();
        loop {
            let got = self.delivery.receive(10, Duration::from_secs(60), Duration::ZERO).await.expect("receive");
            if got.is_empty() {
                return out;
            }
            for m in got {
                self.delivery.delete(&m.receipt_handle).await.expect("delete");
                let env: DeliveryEnvelope = serde_json::from_str(&m.body).expect("envelope");
                if env.source_id != "audiences" {
                    continue;
                }
                for item in env.items {
                    let e = &item.event;
                    out.push((
                        e["event"].as_str().unwrap_or_default().to_string(),
                        e["properties"]["audience_key"].as_str().unwrap_or_default().to_string(),
                        e["userId"].as_str().unwrap_or_default().to_string(),
                        e["messageId"].as_str().unwrap_or_default().to_string(),
                        env.destinations.clone().unwrap_or_default(),
                    ));
                }
            }
        }
    }

    async fn membership(&self, profile: &str) -> BTreeSet<String> {
        match self.table.get(&membership_key(profile)).await.expect("get") {
            Some(item) => Membership::from_attrs(&item.attrs).expect("membership").members.into_keys().collect(),
            None => BTreeSet::new(),
        }
    }

    /// Every root profile id in the table.
    async fn roots(&self) -> Vec<String> {
        let mut out = Vec::new();
        for item in self.table.items() {
            if item.key.sk == "profile" {
                let doc = ProfileDoc::from_attrs(&item.attrs).expect("doc");
                if doc.merged_into.is_none() {
                    out.push(item.key.pk.trim_start_matches("p#").to_string());
                }
            }
        }
        out
    }
}

fn names(events: &[(String, String, String, String, Vec<String>)]) -> Vec<(&str, &str, &str)> {
    events.iter().map(|(e, a, u, _, _)| (e.as_str(), a.as_str(), u.as_str())).collect()
}

async fn run(a: &Refresher, full: bool) -> RefreshReport {
    a.handle(RefreshRequest { full }, None).await.expect("refresh")
}

#[tokio::test]
async fn a_trait_change_enters_and_exits_once_each() {
    let mut w = World::new();
    let a = w.refresher(workspace(false));
    // The first run sees new audiences: a full pass over nothing yet.
    let first = run(&a, false).await;
    assert!(first.full_pass && first.full_pass_done, "{first:?}");

    w.identify("ann", json!({ "plan": "pro" })).await;
    w.identify("bob", json!({ "plan": "free" })).await;
    let r = run(&a, false).await;
    assert!(!r.full_pass, "no full pass once the config is unchanged: {r:?}");
    assert_eq!((r.changed, r.entered, r.exited), (2, 1, 0), "{r:?}");
    let events = w.audience_events().await;
    assert_eq!(names(&events), [("Audience Entered", "pro", "ann")]);
    assert_eq!(events[0].4, ["hook"], "aimed at the audience's destinations");

    // Nothing changed: nothing evaluated, nothing sent.
    let r = run(&a, false).await;
    assert_eq!((r.evaluated, r.entered, r.exited), (0, 0, 0), "{r:?}");
    assert!(w.audience_events().await.is_empty());

    // An unrelated trait: evaluated, no event.
    w.identify("ann", json!({ "color": "red" })).await;
    let r = run(&a, false).await;
    assert_eq!((r.evaluated, r.entered, r.exited), (1, 0, 0), "{r:?}");
    assert!(w.audience_events().await.is_empty());

    w.identify("ann", json!({ "plan": "free" })).await;
    let r = run(&a, false).await;
    assert_eq!((r.entered, r.exited), (0, 1));
    assert_eq!(names(&w.audience_events().await), [("Audience Exited", "pro", "ann")]);
}

#[tokio::test]
async fn a_time_window_exit_needs_no_new_event() {
    let mut w = World::new();
    let a = w.refresher(workspace(false));
    run(&a, false).await;
    w.track("cy", "Viewed").await;
    w.advance(DAY);
    w.track("cy", "Viewed").await;
    let r = run(&a, false).await;
    assert_eq!(r.entered, 1, "{r:?}");
    assert_eq!(names(&w.audience_events().await), [("Audience Entered", "active", "cy")]);
    let profile = w.roots().await.pop().expect("cy's profile");
    assert_eq!(w.membership(&profile).await, BTreeSet::from(["active".to_string()]));

    // Six days after the first view both are still in the 7-day window.
    w.advance(5 * DAY);
    let r = run(&a, false).await;
    assert_eq!((r.due, r.exited), (0, 0), "not due yet: {r:?}");
    // The first view leaves the window at the start of its 8th day: the profile is due and exits.
    w.advance(DAY);
    let r = run(&a, false).await;
    assert_eq!((r.due, r.exited, r.changed), (1, 1, 0), "{r:?}");
    assert_eq!(names(&w.audience_events().await), [("Audience Exited", "active", "cy")]);
    assert!(w.membership(&profile).await.is_empty());
    // Nothing further is due.
    w.advance(30 * DAY);
    let r = run(&a, false).await;
    assert_eq!((r.due, r.evaluated), (0, 0), "{r:?}");
}

#[tokio::test]
async fn a_new_audience_is_filled_by_a_full_pass_over_parallel_segments() {
    let mut w = World::new();
    run(&w.refresher(workspace(false)), false).await;
    for (i, user) in ["a", "b", "c", "d", "e", "f", "g"].iter().enumerate() {
        let email = format!("{user}@example.com");
        let traits = if i % 2 == 0 { json!({ "email": email }) } else { json!({ "plan": "free" }) };
        w.identify(user, traits).await;
    }
    run(&w.refresher(workspace(false)), false).await;
    w.audience_events().await;

    // The config gains an audience: the next run passes over every root (3 segments, pages of 2).
    let a = w.refresher(workspace(true));
    let r = run(&a, false).await;
    assert!(r.full_pass && r.full_pass_done, "{r:?}");
    assert_eq!(r.evaluated, 7, "{r:?}");
    let mut with_email = 0;
    for p in w.roots().await {
        with_email += usize::from(w.membership(&p).await.contains("has-email"));
    }
    assert_eq!(with_email, 4);
    // It has no destinations: nothing is sent.
    assert!(w.audience_events().await.is_empty());
    // Done: the next run does no full pass, unless the schedule asks for one.
    assert!(!run(&a, false).await.full_pass);
    let r = run(&a, true).await;
    assert!(r.full_pass_done && r.evaluated == 7 && r.entered == 0, "{r:?}");
}

#[tokio::test]
async fn a_merged_profile_leaves_its_audiences_silently_and_the_root_carries_on() {
    let mut w = World::new();
    let a = w.refresher(workspace(false));
    run(&a, false).await;
    // Two anonymous visitors, each in `pro`; then one login merges them.
    for (anon, n) in [("dev-1", 1), ("dev-2", 2)] {
        w.sent += 1;
        let at = tributary_core::profile::read::rfc3339(w.now()).expect("time");
        let event = json!({"type": "identify", "messageId": format!("anon{n}"), "anonymousId": anon,
            "traits": {"plan": "pro"}, "timestamp": at, "receivedAt": at});
        let sqs: SqsEvent = serde_json::from_value(json!({ "Records": [{
            "messageId": format!("a{n}"), "body": json!({"v": 1, "sourceId": "web", "events": [event]}).to_string(),
            "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {}, "eventSource": "aws:sqs" }]}))
        .expect("sqs");
        assert!(w.stitch.handle(sqs).await.batch_item_failures.is_empty());
    }
    assert_eq!(run(&a, false).await.entered, 2);
    w.audience_events().await;
    let at = tributary_core::profile::read::rfc3339(w.now()).expect("time");
    let login: Vec<Value> = ["dev-1", "dev-2"]
        .iter()
        .enumerate()
        .map(|(i, d)| {
            json!({"type": "track", "event": "Signed In", "messageId": format!("login{i}"),
            "anonymousId": d, "userId": "dee", "timestamp": at, "receivedAt": at})
        })
        .collect();
    let sqs: SqsEvent = serde_json::from_value(json!({ "Records": [{
        "messageId": "login", "body": json!({"v": 1, "sourceId": "web", "events": login}).to_string(),
        "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {}, "eventSource": "aws:sqs" }]}))
    .expect("sqs");
    assert!(w.stitch.handle(sqs).await.batch_item_failures.is_empty());
    let r = run(&a, false).await;
    assert_eq!((r.entered, r.exited), (0, 0), "the person stayed in `pro`: {r:?}");
    assert!(w.audience_events().await.is_empty());
    let roots = w.roots().await;
    assert_eq!(roots.len(), 1);
    assert_eq!(w.membership(&roots[0]).await, BTreeSet::from(["pro".to_string()]));
    let memberships = w.table.items().into_iter().filter(|i| i.key.sk == "aud").map(|i| i.key.pk).collect::<Vec<_>>();
    assert_eq!(memberships, [format!("p#{}", roots[0])], "the merged profile's membership is gone");
}

#[tokio::test]
async fn a_run_retried_after_sending_sends_the_same_message_ids() {
    let mut w = World::new();
    let a = w.refresher(workspace(false));
    run(&a, false).await;
    w.identify("eve", json!({ "plan": "pro" })).await;
    // The run sends, then cannot write the membership (the store is down for writes).
    w.faults.fail_next_transactions(1);
    assert!(a.handle(RefreshRequest::default(), None).await.is_err());
    let first = w.audience_events().await;
    assert_eq!(names(&first), [("Audience Entered", "pro", "eve")]);
    // The change message was not deleted; once its visibility ends, the next run sends the same event again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = run(&a, false).await;
    assert_eq!(r.entered, 1, "{r:?}");
    let second = w.audience_events().await;
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].3, first[0].3, "the same messageId: delivery's receipts drop the repeat");
    // And once written, it is not sent a third time.
    w.identify("eve", json!({ "color": "blue" })).await;
    assert_eq!(run(&a, false).await.entered, 0);
    assert!(w.audience_events().await.is_empty());
}

#[tokio::test]
async fn a_run_waits_for_another_runs_lease_and_takes_over_an_expired_one() {
    let w = World::new();
    let a = w.refresher(workspace(false));
    // A run elsewhere holds the lease for ten more minutes.
    let mut state = serde_json::Map::new();
    state.insert("lease_until".into(), json!(w.now() + 600_000));
    w.table.put(ItemKey::new(RUN_PK, RUN_SK), state);
    let r = run(&a, false).await;
    assert!(r.busy && r.evaluated == 0 && !r.full_pass, "{r:?}");
    // That run died without giving the lease back: once it has expired, the next run works.
    w.advance(600_001);
    let r = run(&a, false).await;
    assert!(!r.busy && r.full_pass_done, "{r:?}");
    assert!(!run(&a, false).await.busy, "a finished run gives the lease back");
}

/// Incremental refreshes over a random sequence of updates keep the same memberships a full evaluation gives.
#[tokio::test]
async fn incremental_refreshes_match_a_full_evaluation() {
    use rand::{Rng, SeedableRng};
    let ws = workspace(true);
    let set = AudienceSet::from_config(&ws).expect("audiences");
    for seed in 0..4u64 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut w = World::new();
        let a = w.refresher(ws.clone());
        run(&a, false).await;
        let users = ["u0", "u1", "u2", "u3", "u4"];
        for _step in 0..40 {
            let user = users[rng.random_range(0..users.len())];
            match rng.random_range(0..5) {
                0 => {
                    let plan = ["pro", "free"][rng.random_range(0..2)];
                    w.identify(user, json!({ "plan": plan })).await
                }
                1 => w.identify(user, json!({ "email": format!("{user}@example.com") })).await,
                2 | 3 => w.track(user, "Viewed").await,
                _ => w.advance(rng.random_range(0..3 * DAY)),
            }
            if rng.random_bool(0.3) {
                run(&a, false).await;
                let now = w.now();
                for p in w.roots().await {
                    let item = w.table.get(&profile_key(&p)).await.expect("get").expect("doc");
                    let doc = ProfileDoc::from_attrs(&item.attrs).expect("doc");
                    let want: BTreeSet<String> = set
                        .audiences()
                        .iter()
                        .filter(|x| x.evaluate(&doc, now).member)
                        .map(|x| x.id().to_string())
                        .collect();
                    assert_eq!(w.membership(&p).await, want, "seed {seed}: profile {p} at {now}");
                }
            }
        }
        // After the last incremental run, a full pass over every root finds nothing to change.
        run(&a, false).await;
        let before: Vec<(String, BTreeSet<String>)> = {
            let mut v = Vec::new();
            for p in w.roots().await {
                let m = w.membership(&p).await;
                v.push((p, m));
            }
            v
        };
        let full = run(&a, true).await;
        assert!(full.full_pass_done, "seed {seed}: {full:?}");
        assert_eq!(full.evaluated as usize, before.len(), "seed {seed}: every root evaluated");
        assert_eq!((full.entered, full.exited), (0, 0), "seed {seed}: the full pass agrees with the incremental runs");
        for (p, m) in before {
            assert_eq!(w.membership(&p).await, m, "seed {seed}: profile {p}");
        }
    }
}

/// The scheduler's payloads (`events/scheduler/`, also what `cargo lambda invoke` sends) read as the handler expects.
#[test]
fn scheduler_payloads_are_refresh_requests() {
    let read = |name: &str| {
        let path = format!("{}/../../events/scheduler/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str::<RefreshRequest>(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
    };
    assert_eq!(read("audiences-refresh.json"), RefreshRequest { full: false });
    assert_eq!(read("audiences-full-pass.json"), RefreshRequest { full: true });
}
