//! The AWS tier of the audience refresh: the same events stitched into the DynamoDB adapter (moto) and into the
//! embedded table, then a full pass over 4 parallel scan segments of the DynamoDB sparse root index, give the same
//! memberships as a one-segment pass over the embedded table.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use aws_lambda_events::sqs::SqsEvent;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tributary_audiences::{Audiences, RefreshRequest, RefreshSettings};
use tributary_aws::admin;
use tributary_core::config::WorkspaceConfig;
use tributary_core::metrics::MemoryMetrics;
use tributary_core::ports::{TableStore, ROOT_PROFILES};
use tributary_core::profile::membership::{membership_key, Membership};
use tributary_core::testing::MemoryTable;
use tributary_local::sqlite_queue::{QueueOptions, SqliteQueue};
use tributary_stitch::{Stitch, StitchSettings};
use tributary_tests::aws_env;

const DAY: i64 = 86_400_000;

fn workspace() -> Arc<WorkspaceConfig> {
    let yaml = r#"
workspace: aws-audiences
consent:
  purposes: [{ id: analytics, aliases: [Analytics] }]
sources:
  - { id: web, write_key_sha256: ["6b86b273ff34fce19d6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b"], class: 1P }
audiences:
  - id: pro
    rule: { trait: plan, equals: pro }
  - id: engaged
    rule: { all: [{ performed: Viewed, at_least: 2, in_last_days: 7 }, { consent: analytics }] }
  - id: reachable
    rule: { any: [{ has_identifier: email }, { trait: score, gte: 50 }] }
"#;
    Arc::new(tributary_core::config::load(yaml).unwrap_or_else(|e| panic!("workspace: {e:?}")))
}

/// A day of random traffic from 30 people, in records of up to 5 events.
fn traffic(seed: u64, start: i64) -> Vec<Vec<Value>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut records = Vec::new();
    let mut n = 0;
    for _ in 0..40 {
        let mut record = Vec::new();
        for _ in 0..rng.random_range(1..=5) {
            n += 1;
            let user = format!("user-{}", rng.random_range(0..30));
            let at = tributary_core::profile::read::rfc3339(start + rng.random_range(0..DAY / 2)).expect("time");
            let mut e = json!({ "messageId": format!("m{n}"), "userId": user, "timestamp": at, "receivedAt": at,
                "context": { "consent": { "categoryPreferences": { "Analytics": rng.random_bool(0.7) } } } });
            match rng.random_range(0..4) {
                0 => {
                    e["type"] = json!("identify");
                    let plan = ["pro", "free"][rng.random_range(0..2)];
                    e["traits"] = json!({ "plan": plan, "score": rng.random_range(0..100) });
                }
                1 => {
                    e["type"] = json!("identify");
                    e["traits"] = json!({ "email": format!("{user}@example.com") });
                }
                _ => {
                    e["type"] = json!("track");
                    e["event"] = json!("Viewed");
                }
            }
            record.push(e);
        }
        records.push(record);
    }
    records
}

fn sqs(records: &[Vec<Value>]) -> SqsEvent {
    let records: Vec<Value> = records
        .iter()
        .enumerate()
        .map(|(i, events)| {
            json!({ "messageId": format!("r{i}"),
                "body": json!({"v": 1, "sourceId": "web", "events": events}).to_string(),
                "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {}, "eventSource": "aws:sqs" })
        })
        .collect();
    serde_json::from_value(json!({ "Records": records })).expect("sqs event")
}

/// Stitches the traffic into `table` and runs a full audience pass over `segments` segments; the memberships.
async fn stitch_and_refresh<T: TableStore + Clone + 'static>(
    table: T,
    dir: &tempfile::TempDir,
    segments: u32,
    traffic: &[Vec<Value>],
    now: i64,
) -> (BTreeMap<String, BTreeSet<String>>, u64) {
    let ws = workspace();
    let db = dir.path().join(format!("queues-{segments}.sqlite"));
    let open = |n: &str| SqliteQueue::open(&db, n, QueueOptions::default()).expect("queue");
    let clock = Arc::new(AtomicI64::new(now));
    let c = clock.clone();
    let stitch =
        Stitch::new(table.clone(), open("delivery"), MemoryMetrics::default(), ws.clone(), StitchSettings::default())
            .expect("stitch")
            .with_clock(move || c.load(Ordering::SeqCst));
    for chunk in traffic.chunks(10) {
        let resp = stitch.handle(sqs(chunk)).await;
        assert!(resp.batch_item_failures.is_empty(), "stitch failed records");
    }
    let c = clock.clone();
    let settings = RefreshSettings { segments, page: 7, ..RefreshSettings::default() };
    let refresh =
        Audiences::new(table.clone(), open("changes"), open("delivery"), MemoryMetrics::default(), ws, settings)
            .expect("audiences")
            .with_clock(move || c.load(Ordering::SeqCst));
    let report = refresh.handle(RefreshRequest { full: true }, None).await.expect("refresh");
    assert!(report.full_pass_done, "{report:?}");

    // Every root, listed through the index (one segment), and its membership.
    let mut out = BTreeMap::new();
    let mut cursor = None;
    loop {
        let page = table.scan_index(&ROOT_PROFILES, 0, 1, cursor.as_deref(), 100).await.expect("scan");
        for key in page.keys {
            let profile = key.pk.trim_start_matches("p#").to_string();
            let members = match table.get(&membership_key(&profile)).await.expect("get") {
                Some(item) => Membership::from_attrs(&item.attrs).expect("membership").members.into_keys().collect(),
                None => BTreeSet::new(),
            };
            out.insert(profile, members);
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    (out, report.evaluated)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_parallel_pass_on_dynamodb_gives_the_embedded_memberships() {
    let aws = aws_env::clients().await;
    let name = aws_env::unique("audiences");
    admin::create_table(&aws, &name).await.expect("create table");
    let dir = tempfile::tempdir().expect("dir");
    // 2026-11-02T00:00:00Z, and the refresh a few days later so some views have left their window.
    let start = 1_793_577_600_000;
    let traffic = traffic(5, start);
    let now = start + 3 * DAY;

    let (embedded, evaluated_embedded) = stitch_and_refresh(MemoryTable::default(), &dir, 1, &traffic, now).await;
    let (dynamo, evaluated_dynamo) = stitch_and_refresh(aws.dynamo_table(&name), &dir, 4, &traffic, now).await;

    assert!(embedded.len() >= 20, "the traffic makes many profiles: {}", embedded.len());
    assert_eq!(evaluated_embedded, embedded.len() as u64, "the embedded pass evaluates every root once");
    assert_eq!(evaluated_dynamo, dynamo.len() as u64, "4 segments evaluate every root once");
    assert_eq!(dynamo, embedded, "DynamoDB (4 segments) and the embedded table (1 segment) agree");
    let sizes: BTreeMap<&str, usize> = ["pro", "engaged", "reachable"]
        .iter()
        .map(|a| (*a, embedded.values().filter(|m| m.contains(*a)).count()))
        .collect();
    assert!(sizes.values().all(|n| *n > 0), "every audience has members, or the comparison proves little: {sizes:?}");
    assert!(sizes.values().all(|n| *n < embedded.len()), "and non-members: {sizes:?}");
}
