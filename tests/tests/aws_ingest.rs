//! End to end on the AWS adapters: the ingest handler with the SQS adapter against moto, then the messages read
//! back from SQS exactly as the stitch function's trigger would receive them (feature `aws-integration`).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tributary_aws::admin;
use tributary_core::ingest::Envelope;
use tributary_core::ports::Queue;
use tributary_ingest::{Ingest, IngestSettings, MemoryMetrics};
use tributary_tests::aws_env;

fn fixture(rel: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../events").join(rel);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

#[tokio::test]
async fn ingest_on_sqs_queues_every_accepted_event_and_they_read_back_intact() {
    let aws = aws_env::clients().await;
    let dlq = admin::create_queue(&aws, &aws_env::unique("events-dlq"), None).await.unwrap();
    let url = admin::create_queue(&aws, &aws_env::unique("events"), Some((&dlq, 5))).await.unwrap();
    let workspace = tributary_core::config::load(
        &std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../events/workspace.yaml")).unwrap(),
    )
    .unwrap();
    let ingest = Ingest::new(
        aws.sqs_queue(url.clone()),
        Arc::new(MemoryMetrics::default()),
        Arc::new(workspace),
        IngestSettings::default(),
    );

    let mut expected = BTreeSet::new();
    // Fixtures with distinct message ids (the batch fixtures share theirs).
    for file in ["batch-gzip-form-content-type.json", "track.json", "identify.json", "alias.json"] {
        let cases = fixture("apigw/cases.json");
        let case = cases["cases"].as_array().unwrap().iter().find(|c| c["file"] == file).unwrap().clone();
        let resp = ingest.handle(serde_json::from_value(fixture(&format!("apigw/{file}"))).unwrap()).await;
        assert_eq!(resp.status_code, 200, "{file}");
        for id in case["messageIds"].as_array().unwrap() {
            expected.insert((file, id.as_str().unwrap().to_string()));
        }
    }
    // A 2,500-event batch must split into several bounded messages and ≤ 10-entry SendMessageBatch calls.
    let items: Vec<Value> = (0..2_500)
        .map(|i| serde_json::json!({"type": "track", "userId": "bulk", "event": "E", "messageId": format!("bulk-{i}")}))
        .collect();
    let mut big = fixture("apigw/batch-basic.json");
    big["body"] = Value::String(serde_json::json!({ "batch": items }).to_string());
    let resp = ingest.handle(serde_json::from_value(big).unwrap()).await;
    assert_eq!(resp.status_code, 200);

    let queue = aws.sqs_queue(url);
    let mut got: Vec<Value> = Vec::new();
    let mut messages = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        let batch = queue.receive(10, Duration::from_secs(30), Duration::from_secs(1)).await.unwrap();
        if batch.is_empty() {
            break;
        }
        for m in batch {
            assert!(m.body.len() <= tributary_ingest::DEFAULT_MAX_MESSAGE_BYTES);
            let env: Envelope = serde_json::from_str(&m.body).expect("envelope");
            assert_eq!(env.source_id, "web");
            got.extend(env.events);
            messages += 1;
            queue.delete(&m.receipt_handle).await.unwrap();
        }
    }
    let ids: BTreeSet<String> = got.iter().map(|e| e["messageId"].as_str().unwrap().to_string()).collect();
    assert_eq!(got.len(), ids.len(), "each event queued once");
    for (file, id) in &expected {
        assert!(ids.contains(id), "{file}: {id} not in SQS");
    }
    assert_eq!(ids.iter().filter(|i| i.starts_with("bulk-")).count(), 2_500);
    assert!(messages >= 3, "bulk batch packed into several messages, got {messages}");
    let track = got.iter().find(|e| e["messageId"] == "fixture-track-1").unwrap();
    assert_eq!(track["properties"]["revenue"], 14.99);
    assert_eq!(track["userId"], "019mr8mf4r");
    assert!(track.get("writeKey").is_none());
    assert_eq!(queue.approximate_len().await.unwrap(), 0);
}
