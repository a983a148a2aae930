//! The handler on a recorded `SqsEvent` (`events/sqs/delivery-batch.json`, the shape Lambda delivers) with a
//! recording sender in place of the network: the port boundary is all it takes to see what would leave.

use std::sync::{Arc, Mutex};

use aws_lambda_events::sqs::SqsEvent;
use serde_json::Value;
use tributary_core::config::WorkspaceConfig;
use tributary_core::delivery::hashing::sha256_hex;
use tributary_core::metrics::MemoryMetrics;
use tributary_core::testing::MemoryTable;
use tributary_deliver::{resolve_destinations, Deliver, DeliverSettings, Outbound, SendResult, Sender};
use tributary_local::sqlite_queue::{QueueOptions, SqliteQueue};

#[derive(Default, Clone)]
struct Recording(Arc<Mutex<Vec<(String, Outbound)>>>);

impl Sender for Recording {
    async fn send(&self, dest: &tributary_core::delivery::DestinationConfig, batch: &[Outbound]) -> SendResult {
        let mut log = self.0.lock().expect("log");
        log.extend(batch.iter().map(|o| (dest.id.clone(), o.clone())));
        SendResult::Delivered
    }
}

const WORKSPACE: &str = r#"
workspace: fixture
consent:
  purposes:
    - { id: advertising, aliases: [Advertising] }
    - { id: analytics, aliases: [Analytics] }
destinations:
  - id: meta
    kind: meta_capi
    purposes: [advertising]
    transport: { account: "1234567890", secret: "${META_TOKEN}" }
  - id: hook
    kind: webhook
    purposes: [analytics]
    transport: { url: "https://hooks.example.com/t" }
"#;

#[tokio::test]
async fn a_recorded_batch_goes_where_consent_allows_and_a_broken_record_fails_alone() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../events/sqs/delivery-batch.json");
    let event: SqsEvent = serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("SqsEvent");
    let ws: WorkspaceConfig = tributary_core::config::load(WORKSPACE).expect("workspace");
    let destinations =
        resolve_destinations(&ws, &|n| (n == "META_TOKEN").then(|| "token".to_string())).expect("destinations");
    let dir = tempfile::tempdir().expect("tempdir");
    let queue =
        |name: &str| SqliteQueue::open(&dir.path().join("q.sqlite"), name, QueueOptions::default()).expect("queue");
    let sender = Recording::default();
    let deliver = Deliver::new(
        MemoryTable::default(),
        queue("delivery"),
        queue("delivery-dlq"),
        sender.clone(),
        MemoryMetrics::default(),
        Arc::new(ws),
        destinations,
        DeliverSettings::default(),
    );

    let resp = deliver.handle(event).await;
    let failed: Vec<&str> = resp.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
    assert_eq!(failed, ["22222222-2222-4222-8222-222222222222"], "only the record without items fails");

    let sent = sender.0.lock().expect("log").clone();
    let to = |dest: &str| -> Vec<String> {
        sent.iter().filter(|(d, _)| d == dest).map(|(_, o)| o.message_id.clone()).collect()
    };
    assert_eq!(to("meta"), ["m-ann-1"], "bob denied advertising");
    let mut hook = to("hook");
    hook.sort();
    assert_eq!(hook, ["m-ann-1", "m-bob-1"], "both granted analytics");

    let (_, ann) = sent.iter().find(|(d, _)| d == "meta").expect("meta");
    let em = sha256_hex("ann@example.com");
    assert_eq!(ann.user_data.as_ref().and_then(|u| u.get("em")), Some(&Value::from(em.clone())));
    assert_eq!(ann.event.map()["context"]["traits"]["email"], Value::from(format!("sha256:{em}")));
    assert!(!serde_json::to_string(ann.event.map()).expect("json").contains("ann@example.com"));
    assert_eq!(ann.profile.as_ref().and_then(|p| p.get("id")), Some(&Value::from("prof_ann")));

    // Handled again (a redelivery): the receipts say delivered, nothing is sent twice.
    let again: SqsEvent = serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("SqsEvent");
    deliver.handle(again).await;
    assert_eq!(sender.0.lock().expect("log").len(), sent.len());

    // Replayed by stitch after ann's profile was merged into another: routed as the root, receipts found where
    // they were written (`appliedTo`) — still nothing twice. Without `appliedTo` the receipts would be missed.
    let replay = |applied_to: bool| {
        let mut event: SqsEvent =
            serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("SqsEvent");
        let record = &mut event.records[0];
        let mut body: Value = serde_json::from_str(record.body.as_deref().expect("body")).expect("envelope");
        body["items"][0]["profileId"] = Value::from("prof_merged_root");
        if applied_to {
            body["items"][0]["appliedTo"] = Value::from("prof_ann");
        }
        record.body = Some(body.to_string());
        event.records.truncate(1);
        event
    };
    deliver.handle(replay(true)).await;
    assert_eq!(sender.0.lock().expect("log").len(), sent.len(), "a replay with appliedTo finds its receipts");
    deliver.handle(replay(false)).await;
    assert_eq!(sender.0.lock().expect("log").len(), sent.len() + 2, "without it, ann's event would go again");
}
