//! The stitch handler on the embedded adapters (SQLite table and queue): identity stitching, exactly-once effects,
//! refusals and the hand-off to delivery.

use std::sync::Arc;

use aws_lambda_events::sqs::SqsEvent;
use serde_json::{json, Map, Value};
use tributary_core::config::WorkspaceConfig;
use tributary_core::identity::{IdType, Identifier};
use tributary_core::metrics::MemoryMetrics;
use tributary_core::ports::{Item, TableStore};
use tributary_core::profile::layout::{identity_key, profile_key, LEDGER_PREFIX};
use tributary_core::profile::{LedgerOp, LedgerRow, ProfileDoc};
use tributary_local::sqlite_queue::{QueueOptions, SqliteQueue};
use tributary_local::sqlite_table::SqliteTable;
use tributary_stitch::{Applied, DeliveryEnvelope, Stitch, StitchSettings};

const WORKSPACE: &str = r#"
workspace: test
sources:
  - id: web
    write_key_sha256: [2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b]
    class: 1P
  - id: broker
    write_key_sha256: [81b637d8fcd2c6da6359e6963113a1170de795e4b725b84d1e0b4cfd9ec58ce9]
    class: 3P
    consent_basis: consent
    permitted_purposes: [advertising]
consent:
  purposes:
    - id: advertising
      aliases: [Advertising, C0004]
profiles:
  set_once: [first_plan]
"#;

struct Fixture {
    _dir: tempfile::TempDir,
    stitch: Stitch<SqliteTable, SqliteQueue, Arc<MemoryMetrics>>,
    table: SqliteTable,
    delivery: SqliteQueue,
    metrics: Arc<MemoryMetrics>,
}

fn fixture() -> Fixture {
    fixture_with(WORKSPACE)
}

fn fixture_with(yaml: &str) -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let workspace: WorkspaceConfig = tributary_core::config::load(yaml).expect("workspace");
    let table = SqliteTable::open(&dir.path().join("t.sqlite"), "profiles").expect("table");
    let delivery = SqliteQueue::open(&dir.path().join("q.sqlite"), "delivery", QueueOptions::default()).expect("q");
    let metrics = Arc::new(MemoryMetrics::default());
    let stitch = Stitch::new(
        SqliteTable::open(&dir.path().join("t.sqlite"), "profiles").expect("table"),
        SqliteQueue::open(&dir.path().join("q.sqlite"), "delivery", QueueOptions::default()).expect("q"),
        metrics.clone(),
        Arc::new(workspace),
        StitchSettings::default(),
    )
    .expect("rules compile");
    Fixture { _dir: dir, stitch, table, delivery, metrics }
}

/// A normalized event as ingest emits it.
fn event(kind: &str, message_id: &str, at: &str, fields: Value) -> Value {
    let mut m = Map::new();
    m.insert("type".into(), json!(kind));
    m.insert("messageId".into(), json!(message_id));
    m.insert("timestamp".into(), json!(at));
    m.insert("originalTimestamp".into(), json!(at));
    m.insert("receivedAt".into(), json!(at));
    m.insert("context".into(), json!({}));
    if let Value::Object(f) = fields {
        m.extend(f);
    }
    Value::Object(m)
}

fn sqs(records: &[(&str, &str, Vec<Value>)]) -> SqsEvent {
    let records: Vec<Value> = records
        .iter()
        .map(|(id, source, events)| {
            json!({
                "messageId": id,
                "body": json!({"v": 1, "sourceId": source, "events": events}).to_string(),
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "eventSource": "aws:sqs",
            })
        })
        .collect();
    serde_json::from_value(json!({ "Records": records })).expect("sqs event")
}

fn id(kind: IdType, v: &str) -> Identifier {
    Identifier::new(kind, v, None).expect("identifier")
}

async fn root_of(table: &SqliteTable, ident: &Identifier) -> (String, ProfileDoc) {
    let item = table.get(&identity_key(ident)).await.expect("get").expect("identity is linked");
    let mut p = item.attrs["p"].as_str().expect("pointer").to_string();
    loop {
        let doc = ProfileDoc::from_attrs(&table.get(&profile_key(&p)).await.expect("get").expect("profile").attrs)
            .expect("doc");
        match doc.merged_into.clone() {
            Some(next) => p = next,
            None => return (p, doc),
        }
    }
}

async fn dump(table: &SqliteTable) -> Vec<Item> {
    let mut items = table.scan_all().await.expect("scan");
    items.sort_by(|a, b| a.key.cmp(&b.key));
    items
}

fn login_story() -> Vec<Value> {
    vec![
        event("page", "m1", "2026-01-05T10:00:00.000Z", json!({"anonymousId": "anon-laptop", "name": "Home"})),
        event(
            "track",
            "m2",
            "2026-01-05T10:01:00.000Z",
            json!({"anonymousId": "anon-laptop", "event": "Viewed", "context": {"consent": {"categoryPreferences": {"Advertising": true}}}}),
        ),
        event("page", "m3", "2026-01-06T08:00:00.000Z", json!({"anonymousId": "anon-phone", "name": "Pricing"})),
        event(
            "identify",
            "m4",
            "2026-01-06T08:05:00.000Z",
            json!({"anonymousId": "anon-phone", "userId": "user-1", "traits": {"email": " Ann@Example.COM ", "plan": "free", "first_plan": "free"}}),
        ),
        event(
            "identify",
            "m5",
            "2026-01-07T09:00:00.000Z",
            json!({"anonymousId": "anon-laptop", "userId": "user-1", "traits": {"plan": "pro", "first_plan": "pro"}}),
        ),
    ]
}

#[tokio::test]
async fn an_anonymous_visitor_who_logs_in_on_a_second_device_is_one_profile() {
    let f = fixture();
    let resp = f.stitch.handle(sqs(&[("r1", "web", login_story())])).await;
    assert!(resp.batch_item_failures.is_empty());

    let (root, doc) = root_of(&f.table, &id(IdType::UserId, "user-1")).await;
    for other in [
        id(IdType::AnonymousId, "anon-laptop"),
        id(IdType::AnonymousId, "anon-phone"),
        id(IdType::Email, "ann@example.com"),
    ] {
        assert_eq!(root_of(&f.table, &other).await.0, root, "{other:?}");
    }
    // The broker's hashed email finds the same profile.
    assert_eq!(root_of(&f.table, &id(IdType::Email, "ann@example.com").hashed()).await.0, root);
    assert_eq!(doc.traits["plan"].value, json!("pro"));
    assert_eq!(doc.traits["first_plan"].value, json!("free"), "set_once keeps the earliest");
    assert_eq!(doc.traits["plan"].at.message_id, "m5");
    assert!(doc.consent["advertising"].granted);
    assert_eq!(doc.events, 5);
    assert_eq!(doc.members.len(), 1, "the laptop's anonymous profile was merged in");
    assert_eq!(doc.counts["anonymous_id"], 2);

    // The ledger explains it: links and one merge naming the event.
    let ledger = f.table.query(&format!("p#{root}"), LEDGER_PREFIX, None, 100).await.expect("query");
    let rows: Vec<LedgerRow> = ledger.items.iter().map(|i| LedgerRow::from_attrs(&i.attrs).expect("row")).collect();
    let merges: Vec<&LedgerRow> = rows.iter().filter(|r| matches!(r.op, LedgerOp::Merge { .. })).collect();
    assert_eq!(merges.len(), 1);
    assert_eq!(merges[0].message_id, "m5");

    // Every event was handed to delivery with its profile and consent.
    let handed: Vec<DeliveryEnvelope> = f
        .delivery
        .peek_all()
        .await
        .expect("peek")
        .iter()
        .map(|m| serde_json::from_str(&m.body).expect("envelope"))
        .collect();
    let items: Vec<_> = handed.iter().flat_map(|e| e.items.iter()).collect();
    assert_eq!(items.len(), 5);
    assert_eq!(items[4].profile_id.as_deref(), Some(root.as_str()));
    assert_eq!(items[4].consent.get("advertising"), Some(&true));
    // Only m2 changed consent (it granted advertising); destinations that ask are told of that one.
    let changed: Vec<bool> = items.iter().map(|i| i.consent_changed).collect();
    assert_eq!(changed, vec![false, true, false, false, false]);
    assert!(f.metrics.0.lock().expect("metrics").iter().any(|l| l.contains("\"Merges\":1")));
}

#[tokio::test]
async fn replaying_a_processed_batch_changes_nothing() {
    let f = fixture();
    let batch = sqs(&[("r1", "web", login_story())]);
    assert!(f.stitch.handle(batch.clone()).await.batch_item_failures.is_empty());
    let before = dump(&f.table).await;
    assert!(f.stitch.handle(batch).await.batch_item_failures.is_empty());
    assert_eq!(dump(&f.table).await, before);
    // The replay is handed off again (delivery checks its receipts); events applied to a profile merged since
    // name it, so their receipts are found.
    let handed: Vec<DeliveryEnvelope> = f
        .delivery
        .peek_all()
        .await
        .expect("peek")
        .iter()
        .map(|m| serde_json::from_str(&m.body).expect("envelope"))
        .collect();
    let replayed: Vec<_> = handed.iter().skip(1).flat_map(|e| e.items.iter()).collect();
    assert_eq!(replayed.len(), 5);
    let root = replayed[4].profile_id.clone().expect("root");
    assert!(replayed.iter().all(|i| i.profile_id.as_deref() == Some(root.as_str())), "routing uses the root");
    let first = &handed[0].items;
    for (before, again) in first.iter().zip(&replayed) {
        assert_eq!(again.receipt_profile(), before.profile_id.as_deref(), "{:?}", again.event["messageId"]);
    }
    // Exactly the events applied to the profile that was merged away name it.
    let applied: Vec<bool> = replayed.iter().map(|i| i.applied_to.is_some()).collect();
    let merged_away: Vec<bool> = first.iter().map(|i| i.profile_id.as_deref() != Some(root.as_str())).collect();
    assert_eq!(applied, merged_away);
    assert!(merged_away.contains(&true), "the story merges one profile into the other");
    // The same events re-sent one by one (another envelope) are duplicates too.
    for e in login_story() {
        let applied = f
            .stitch
            .apply_event(&tributary_core::config::load(WORKSPACE).expect("ws").sources[0], e.as_object().expect("obj"))
            .await
            .expect("apply");
        assert!(matches!(applied, Applied::Duplicate { profile: Some(_) }), "{applied:?}");
    }
    assert_eq!(dump(&f.table).await, before);
}

#[tokio::test]
async fn a_shared_device_does_not_merge_two_users() {
    let f = fixture();
    let events = vec![
        event("identify", "s1", "2026-01-05T10:00:00.000Z", json!({"userId": "mum", "anonymousId": "tablet"})),
        event("identify", "s2", "2026-01-05T11:00:00.000Z", json!({"userId": "kid", "anonymousId": "tablet"})),
        event(
            "track",
            "s3",
            "2026-01-05T11:01:00.000Z",
            json!({"userId": "kid", "anonymousId": "tablet", "event": "Played"}),
        ),
    ];
    assert!(f.stitch.handle(sqs(&[("r1", "web", events)])).await.batch_item_failures.is_empty());
    let (mum, _) = root_of(&f.table, &id(IdType::UserId, "mum")).await;
    let (kid, kid_doc) = root_of(&f.table, &id(IdType::UserId, "kid")).await;
    assert_ne!(mum, kid);
    assert_eq!(
        root_of(&f.table, &id(IdType::AnonymousId, "tablet")).await.0,
        mum,
        "the device stays with its first user"
    );
    assert_eq!(kid_doc.refusal_count, 2);
    assert_eq!(kid_doc.refusals[0].reason, "merge_refused");
    assert_eq!(kid_doc.refusals[0].other.as_deref(), Some(mum.as_str()));
    assert_eq!(kid_doc.events, 2);
}

#[tokio::test]
async fn blocked_values_never_link_and_bad_records_fail_alone() {
    let f = fixture();
    let junk = vec![
        event(
            "track",
            "j1",
            "2026-01-05T10:00:00.000Z",
            json!({"userId": "null", "anonymousId": "anonymous", "event": "X"}),
        ),
        event(
            "track",
            "j2",
            "2026-01-05T10:00:01.000Z",
            json!({"userId": "u9", "anonymousId": "undefined", "event": "X"}),
        ),
    ];
    let mut batch = sqs(&[("good", "web", junk)]);
    batch.records.extend(sqs(&[("unknown-source", "nope", vec![])]).records);
    let mut broken = sqs(&[("broken", "web", vec![])]).records;
    broken[0].body = Some("not json".into());
    batch.records.extend(broken);

    let resp = f.stitch.handle(batch).await;
    let failed: Vec<String> = resp.batch_item_failures.iter().map(|f| f.item_identifier.clone()).collect();
    assert_eq!(failed, vec!["unknown-source".to_string(), "broken".to_string()]);
    assert!(f.table.get(&identity_key(&id(IdType::UserId, "u9"))).await.expect("get").is_some());
    for junk in [id(IdType::UserId, "null"), id(IdType::AnonymousId, "anonymous"), id(IdType::AnonymousId, "undefined")]
    {
        assert!(f.table.get(&identity_key(&junk)).await.expect("get").is_none(), "{junk:?} must not be linked");
    }
}

#[tokio::test]
async fn traits_resolve_by_event_time_whatever_the_arrival_order() {
    let late = event("identify", "t2", "2026-01-06T00:00:00.000Z", json!({"userId": "u1", "traits": {"plan": "pro"}}));
    let early =
        event("identify", "t1", "2026-01-05T00:00:00.000Z", json!({"userId": "u1", "traits": {"plan": "free"}}));
    for order in [vec![early.clone(), late.clone()], vec![late.clone(), early.clone()]] {
        let f = fixture();
        assert!(f.stitch.handle(sqs(&[("r", "web", order)])).await.batch_item_failures.is_empty());
        let (_, doc) = root_of(&f.table, &id(IdType::UserId, "u1")).await;
        assert_eq!(doc.traits["plan"].value, json!("pro"));
    }
}

#[tokio::test]
async fn a_merge_past_the_bound_is_refused_and_counted() {
    let f = fixture_with(&WORKSPACE.replace("  set_once: [first_plan]", "  set_once: [first_plan]\n  max_merges: 1"));
    let t = |n: u32| format!("2026-01-05T10:00:0{n}.000Z");
    let events = vec![
        event("page", "b1", &t(1), json!({"anonymousId": "a1"})),
        event("page", "b2", &t(2), json!({"anonymousId": "a2"})),
        event("page", "b3", &t(3), json!({"anonymousId": "a3"})),
        event("identify", "b4", &t(4), json!({"userId": "u", "anonymousId": "a1"})),
        event("identify", "b5", &t(5), json!({"userId": "u", "anonymousId": "a2"})),
        event("identify", "b6", &t(6), json!({"userId": "u", "anonymousId": "a3"})),
    ];
    assert!(f.stitch.handle(sqs(&[("r", "web", events)])).await.batch_item_failures.is_empty());
    let (root, doc) = root_of(&f.table, &id(IdType::UserId, "u")).await;
    assert_eq!(root_of(&f.table, &id(IdType::AnonymousId, "a2")).await.0, root, "the first merge is made");
    assert_ne!(root_of(&f.table, &id(IdType::AnonymousId, "a3")).await.0, root, "the second is refused");
    assert_eq!(doc.members.len(), 1);
    assert_eq!(doc.overflow.merges, 1);
    assert_eq!(doc.refusals.last().map(|r| r.reason.as_str()), Some("merge_limit"));
}
