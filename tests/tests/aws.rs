//! The AWS tier: the port contract suites on the SQS, S3 and DynamoDB adapters of `tributary-aws`, against the
//! moto server named by `AWS_ENDPOINT_URL` (feature `aws-integration`).
//!
//! ```text
//! moto_server -H 127.0.0.1 -p 5055 &
//! AWS_ENDPOINT_URL=http://127.0.0.1:5055 cargo test -p tributary-tests --features aws-integration --test aws
//! ```
//!
//! Without `AWS_ENDPOINT_URL` every test panics: this tier never skips. Credentials and region default to dummy
//! values when unset. Each test creates its own uniquely named queue, bucket or table.

use std::time::Duration;

use tributary_aws::{admin, AwsClients};
use tributary_core::ports::{
    Condition, Item, ItemKey, ObjectStore, OutgoingMessage, PortError, Queue, TableStore, TransactError, WriteOp,
};
use tributary_core::testing::{
    object_store_contract, queue_contract, queue_dlq_contract, table_store_contract_with, ContractOptions,
};
use tributary_tests::aws_env;

/// Clients for this test (one per test: connection pools belong to the test's runtime), and the endpoint.
async fn clients() -> (AwsClients, String) {
    let url = aws_env::init();
    (aws_env::clients().await, url)
}

fn unique(kind: &str) -> String {
    aws_env::unique(&format!("tributary-{kind}"))
}

fn unreachable(what: &str, url: &str, e: PortError) -> ! {
    panic!("{what} failed against {url} (is moto_server running there?): {e}")
}

async fn new_queue(aws: &AwsClients, url: &str, dlq: Option<(&str, u32)>) -> String {
    let name = unique("queue");
    admin::create_queue(aws, &name, dlq).await.unwrap_or_else(|e| unreachable("create_queue", url, e))
}

// ---------------------------------------------------------------------------------------------------------------
// Contract suites.
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn sqs_queue_contract() {
    let (aws, url) = clients().await;
    let q = aws.sqs_queue(new_queue(&aws, &url, None).await);
    queue_contract(&q).await;
}

#[tokio::test]
async fn sqs_queue_dlq_contract() {
    let (aws, url) = clients().await;
    let dlq_url = new_queue(&aws, &url, None).await;
    let q_url = new_queue(&aws, &url, Some((&dlq_url, 2))).await;
    queue_dlq_contract(&aws.sqs_queue(q_url), &aws.sqs_queue(dlq_url), 2).await;
}

#[tokio::test]
async fn s3_store_contract_at_bucket_root() {
    let (aws, url) = clients().await;
    let bucket =
        admin::create_bucket(&aws, &unique("bucket")).await.unwrap_or_else(|e| unreachable("create_bucket", &url, e));
    object_store_contract(&aws.s3_store(bucket, "")).await;
}

#[tokio::test]
async fn s3_store_contract_under_a_prefix() {
    let (aws, url) = clients().await;
    let bucket =
        admin::create_bucket(&aws, &unique("bucket")).await.unwrap_or_else(|e| unreachable("create_bucket", &url, e));
    // Neighbours outside the prefix, including one that shares its first characters, must stay invisible.
    let root = aws.s3_store(bucket.clone(), "");
    for key in ["outside.txt", "tenant-a-sibling/x.txt", "tenant/x.txt"] {
        root.put(key, b"not yours".to_vec()).await.unwrap_or_else(|e| unreachable("put", &url, e));
    }
    let store = aws.s3_store(bucket.clone(), "/tenant-a/");
    assert_eq!(store.prefix(), "tenant-a/");
    object_store_contract(&store).await;

    store.put("inside.txt", b"mine".to_vec()).await.unwrap_or_else(|e| unreachable("put", &url, e));
    let all: Vec<String> =
        root.list("").await.unwrap_or_else(|e| unreachable("list", &url, e)).into_iter().map(|m| m.key).collect();
    assert_eq!(all, ["outside.txt", "tenant-a-sibling/x.txt", "tenant-a/inside.txt", "tenant/x.txt"]);
}

#[tokio::test]
async fn dynamo_table_contract() {
    let (aws, url) = clients().await;
    let table =
        admin::create_table(&aws, &unique("table")).await.unwrap_or_else(|e| unreachable("create_table", &url, e));
    // moto applies concurrent UpdateItem calls without isolation; DynamoDB's are atomic per item.
    table_store_contract_with(&aws.dynamo_table(table), ContractOptions { atomic_concurrent_adds: false }).await;
}

// ---------------------------------------------------------------------------------------------------------------
// Adapter-specific behaviour the suites do not cover.
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn missing_resources_are_invalid_not_retryable() {
    let (aws, url) = clients().await;
    aws.warm().await;
    aws.s3_store(unique("missing"), "").warm().await;

    let gone = format!("{}/000000000000/{}", url.trim_end_matches('/'), unique("missing"));
    let q = aws.sqs_queue(gone);
    let e = q.approximate_len().await.expect_err("a missing queue has no length");
    assert!(matches!(e, PortError::Invalid(_)), "missing queue: {e:?}");
    let e = q.send_batch(&[OutgoingMessage { id: "a".into(), body: "x".into() }]).await.expect_err("missing queue");
    assert!(matches!(e, PortError::Invalid(_)), "send to a missing queue: {e:?}");

    let s = aws.s3_store(unique("missing"), "");
    let e = s.get("a/b.txt").await.expect_err("a missing bucket is not a missing object");
    assert!(matches!(e, PortError::Invalid(_)), "missing bucket: {e:?}");
    assert!(e.to_string().contains("NoSuchBucket"), "error names the code: {e}");

    let t = aws.dynamo_table(unique("missing"));
    let e = t.get(&ItemKey::new("p", "s")).await.expect_err("a missing table");
    assert!(matches!(e, PortError::Invalid(_)), "missing table: {e:?}");
    let e = t.query("p", "", None, 10).await.expect_err("a missing table");
    assert!(matches!(e, PortError::Invalid(_)), "missing table: {e:?}");
}

#[tokio::test]
async fn sqs_refuses_bad_entries_one_by_one_and_accepts_any_entry_id() {
    let (aws, url) = clients().await;
    let q = aws.sqs_queue(new_queue(&aws, &url, None).await);
    let messages = [
        // Ids outside SQS's alphabet are fine: the adapter numbers entries on the wire.
        OutgoingMessage { id: "event 1/ü".into(), body: "good".into() },
        OutgoingMessage { id: "nul".into(), body: "bad \u{0} body".into() },
        OutgoingMessage { id: "huge".into(), body: "x".repeat(1024 * 1024 + 1) },
        OutgoingMessage { id: "event#2".into(), body: "also good".into() },
    ];
    let failed = q.send_batch(&messages).await.unwrap_or_else(|e| unreachable("send_batch", &url, e));
    let mut ids: Vec<&str> = failed.iter().map(|f| f.id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["huge", "nul"]);
    assert!(failed.iter().all(|f| !f.retryable), "{failed:?}");
    assert!(failed.iter().all(|f| f.reason.len() < 200), "no bodies in reasons: {failed:?}");

    let got = q.receive(10, Duration::from_secs(30), Duration::from_secs(1)).await.expect("receive");
    let mut bodies: Vec<&str> = got.iter().map(|m| m.body.as_str()).collect();
    bodies.sort();
    assert_eq!(bodies, ["also good", "good"]);

    let too_many: Vec<OutgoingMessage> =
        (0..11).map(|i| OutgoingMessage { id: format!("m{i}"), body: "b".into() }).collect();
    assert!(matches!(q.send_batch(&too_many).await, Err(PortError::Invalid(_))));
    assert_eq!(q.send_batch(&[]).await, Ok(vec![]));
}

#[tokio::test]
async fn sqs_splits_a_batch_larger_than_one_request() {
    let (aws, url) = clients().await;
    let q = aws.sqs_queue(new_queue(&aws, &url, None).await);
    // Three 400 KiB bodies: each fits, together they exceed the 1 MiB request limit.
    let messages: Vec<OutgoingMessage> = (0..3)
        .map(|i| OutgoingMessage { id: format!("big-{i}"), body: format!("{i}{}", "y".repeat(400 * 1024)) })
        .collect();
    let failed = q.send_batch(&messages).await.unwrap_or_else(|e| unreachable("send_batch", &url, e));
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(q.approximate_len().await, Ok(3));
}

fn item(pk: &str, sk: &str, attrs: serde_json::Value) -> Item {
    let serde_json::Value::Object(attrs) = attrs else { panic!("attrs must be an object") };
    Item { key: ItemKey::new(pk, sk), attrs, version: 1, expires_at: None }
}

#[tokio::test]
async fn dynamo_refuses_reserved_attribute_names_and_pages_past_expired_items() {
    let (aws, url) = clients().await;
    let t = aws.dynamo_table(
        admin::create_table(&aws, &unique("table")).await.unwrap_or_else(|e| unreachable("create_table", &url, e)),
    );

    let bad = item("p", "s", serde_json::json!({"ttl": 5}));
    let r = t.write(WriteOp::Put { item: bad.clone(), condition: Condition::None }).await;
    assert!(matches!(r, Err(PortError::Invalid(_))), "{r:?}");
    let r = t.transact(vec![WriteOp::Put { item: bad, condition: Condition::None }]).await;
    assert!(matches!(r, Err(TransactError::Port(PortError::Invalid(_)))), "{r:?}");

    // Expired items between live ones: pages stay full and `next` is exact.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    for i in 0..9 {
        let mut it = item("page", &format!("e#{i}"), serde_json::json!({"i": i}));
        if i % 3 != 2 {
            it.expires_at = Some(now - 60);
        }
        t.write(WriteOp::Put { item: it, condition: Condition::None }).await.expect("put");
    }
    let first = t.query("page", "e#", None, 2).await.expect("query");
    let sks: Vec<&str> = first.items.iter().map(|i| i.key.sk.as_str()).collect();
    assert_eq!(sks, ["e#2", "e#5"]);
    assert_eq!(first.next.as_deref(), Some("e#5"));
    let second = t.query("page", "e#", first.next.as_deref(), 2).await.expect("query");
    let sks: Vec<&str> = second.items.iter().map(|i| i.key.sk.as_str()).collect();
    assert_eq!(sks, ["e#8"]);
    assert_eq!(second.next, None);

    // Same refusals as the embedded adapter.
    assert!(matches!(t.query("page", "e#", None, 0).await, Err(PortError::Invalid(_))));
    assert!(matches!(t.transact(vec![]).await, Err(TransactError::Port(PortError::Invalid(_)))));

    // A start key before or after the prefix range.
    assert_eq!(t.query("page", "e#", Some("a"), 10).await.expect("query").items.len(), 3);
    assert!(t.query("page", "e#", Some("f"), 10).await.expect("query").items.is_empty());
}

#[tokio::test]
async fn admin_is_idempotent() {
    let (aws, url) = clients().await;
    let name = unique("again");
    let first = admin::create_queue(&aws, &name, None).await.unwrap_or_else(|e| unreachable("create_queue", &url, e));
    assert_eq!(admin::create_queue(&aws, &name, None).await.as_deref(), Ok(first.as_str()));
    let arn = admin::queue_arn(&aws, &first).await.expect("queue_arn");
    assert!(arn.starts_with("arn:aws:sqs:") && arn.ends_with(&name), "{arn}");
    // A redrive target given by ARN works like one given by URL.
    admin::create_queue(&aws, &unique("src"), Some((&arn, 3))).await.expect("create_queue with a DLQ ARN");

    assert_eq!(admin::create_bucket(&aws, &name).await.as_deref(), Ok(name.as_str()));
    assert_eq!(admin::create_bucket(&aws, &name).await.as_deref(), Ok(name.as_str()));
    assert_eq!(admin::create_table(&aws, &name).await.as_deref(), Ok(name.as_str()));
    assert_eq!(admin::create_table(&aws, &name).await.as_deref(), Ok(name.as_str()));
}

#[tokio::test]
async fn unreachable_endpoint_is_retryable() {
    let url = aws_env::init();
    // An explicit endpoint wins over AWS_ENDPOINT_URL: port 1 on loopback refuses connections.
    let aws = AwsClients::with_endpoint("http://127.0.0.1:1").await;
    let queue = aws.sqs_queue(format!("{url}/000000000000/q"));
    let store = aws.s3_store("bucket", "");
    let table = aws.dynamo_table("t");
    let key = ItemKey::new("p", "s");
    // Concurrently: each one goes through the SDK's retries with backoff first.
    let (q, s, t) = tokio::join!(queue.approximate_len(), store.get("a.txt"), table.get(&key));
    for e in [q.map(|_| ()), s.map(|_| ()), t.map(|_| ())] {
        let e = e.expect_err("nothing listens");
        assert!(matches!(e, PortError::Unavailable(_)), "{e:?}");
        assert!(e.is_retryable());
    }

    // And the same constructor reaches the emulator when pointed at it.
    let aws = AwsClients::with_endpoint(&url).await;
    let q = admin::create_queue(&aws, &unique("explicit"), None)
        .await
        .unwrap_or_else(|e| unreachable("create_queue", &url, e));
    assert_eq!(aws.sqs_queue(q).approximate_len().await, Ok(0));
}

// ---------------------------------------------------------------------------------------------------------------
// Usage metering: the adapter counts what DynamoDB bills (crates/aws/src/billing.rs). Every number below is worked
// out by hand from DynamoDB's item-size rules.
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn dynamo_usage_counts_what_dynamodb_bills() {
    let (aws, url) = clients().await;
    let t = aws.dynamo_table(
        admin::create_table(&aws, &unique("table")).await.unwrap_or_else(|e| unreachable("create_table", &url, e)),
    );
    assert_eq!(t.usage(), tributary_aws::Usage::default());

    // Every item holds pk "p" (2+1), a three-byte sk (2+3) and v = 1 (1+2): 11 bytes before its own attributes.
    // a: 11 + blob 4+1010 = 1,025 bytes, one byte over 1 KB.
    let a = item("p", "s#1", serde_json::json!({"blob": "a".repeat(1010)}));
    // b: 11 + n 1+3 (12.5 is the base-100 digits 12|50, plus 1) + ok 2+1 + tags 4+(3+2+2) + m 1+(3+1+1+1) = 36.
    let b = item("p", "s#2", serde_json::json!({"n": 12.5, "ok": true, "tags": ["a", "b"], "m": {"k": null}}));
    // c: 11 + blob 4+3085 = 3,100 bytes.
    let c = item("p", "s#3", serde_json::json!({"blob": "c".repeat(3085)}));

    // 1,025 bytes: 2 WRU.
    t.write(WriteOp::Put { item: a.clone(), condition: Condition::NotExists }).await.expect("put");
    // A failed condition is billed too, on the new item's size (the item exists): 2 WRU.
    let r = t.write(WriteOp::Put { item: a.clone(), condition: Condition::NotExists }).await;
    assert!(matches!(r, Err(PortError::ConditionFailed(_))), "{r:?}");
    // Strongly consistent reads: 1,025 bytes is 1 RRU, and a miss still costs the 1 RRU minimum.
    assert_eq!(t.get(&a.key).await.expect("get"), Some(a.clone()));
    assert_eq!(t.get(&ItemKey::new("p", "missing")).await.expect("get"), None);
    // One Query call returning a: 1 RRU.
    assert_eq!(t.query("p", "s#", None, 10).await.expect("query").items, std::slice::from_ref(&a));
    // 2 × per item: b 1 WRU → 2, c 4 WRU → 8, the check on a (sized at the 1 KB minimum) → 2. 12 WRU.
    t.transact(vec![
        WriteOp::Put { item: b.clone(), condition: Condition::NotExists },
        WriteOp::Put { item: c.clone(), condition: Condition::None },
        WriteOp::Check { key: a.key.clone(), condition: Condition::Exists },
    ])
    .await
    .expect("transact");
    // One Query call returning a, b and c: 1,025 + 36 + 3,100 = 4,161 bytes, summed then rounded: 2 RRU (3 if each
    // item were rounded on its own).
    assert_eq!(t.query("p", "s#", None, 10).await.expect("query").items, [a, b, c]);

    let u = t.usage();
    let expected = tributary_aws::Usage {
        requests_read: 4,
        requests_write: 2,
        requests_transact: 1,
        rru: 5.0,
        wru: 2 + 2 + 12,
        transact_items: 3,
        // What DynamoDB reports is checked below, not predicted: moto answers with fixed placeholders.
        reported_rcu: u.reported_rcu,
        reported_wcu: u.reported_wcu,
        requests_reported: u.requests_reported,
    };
    assert_eq!(u, expected);
    // 16 WRU at $0.625 per million plus 5 RRU at $0.125 per million.
    assert!((u.dollars() - 10.625e-6).abs() < 1e-15, "{}", u.dollars());
    // Six calls were answered (the failed put was not); at most those carry a ConsumedCapacity.
    assert!(u.requests_reported <= 6, "{u:?}");
    assert!(u.reported_rcu >= 0.0 && u.reported_wcu >= 0.0, "{u:?}");
    eprintln!("dynamodb usage against {url}: {u:?}");

    // Clones share the counter; a reset clears it for all of them.
    let clone = t.clone();
    clone.reset_usage();
    assert_eq!(t.usage(), tributary_aws::Usage::default());
}

#[tokio::test]
async fn dynamo_index_scans_are_metered_as_eventually_consistent_reads() {
    let (aws, url) = clients().await;
    let t = aws.dynamo_table(
        admin::create_table(&aws, &unique("table")).await.unwrap_or_else(|e| unreachable("create_table", &url, e)),
    );
    for i in 0..3 {
        let it = item(&format!("p#{i}"), "profile", serde_json::json!({"root": format!("{i}")}));
        t.write(WriteOp::Put { item: it, condition: Condition::None }).await.expect("put");
    }
    t.reset_usage();
    let page = t.scan_index(&tributary_core::ports::ROOT_PROFILES, 0, 1, None, 10).await.expect("scan");
    assert_eq!(page.keys.len(), 3);
    assert_eq!(page.next, None);
    // One Scan call returning three small index entries: the 4 KB minimum, halved (a global secondary index is
    // read eventually consistently).
    let u = t.usage();
    assert_eq!((u.requests_read, u.rru, u.wru), (1, 0.5, 0), "{u:?}");
    // A full page asks for one entry more, to know whether the segment goes on: still one call.
    let page = t.scan_index(&tributary_core::ports::ROOT_PROFILES, 0, 1, None, 2).await.expect("scan");
    assert_eq!((page.keys.len(), page.next.is_some()), (2, true));
    assert_eq!(t.usage().requests_read, 2);
}

#[tokio::test]
async fn clients_meter_sqs_s3_and_every_table_they_made() {
    let (aws, url) = clients().await;
    let queue = aws.sqs_queue(new_queue(&aws, &url, None).await);
    let bucket = admin::create_bucket(&aws, &unique("bucket")).await.unwrap_or_else(|e| unreachable("bucket", &url, e));
    let store = aws.s3_store(&bucket, "meter");
    let table_name =
        admin::create_table(&aws, &unique("table")).await.unwrap_or_else(|e| unreachable("create_table", &url, e));
    // Two handles on one table and a clone of the clients: all count into the same total.
    let (t1, t2) = (aws.dynamo_table(&table_name), aws.clone().dynamo_table(&table_name));
    aws.reset_usage();

    // 70,000 + 10 bytes of bodies in one SendMessageBatch: two started 64 KiB chunks, 2 billed requests.
    let big = OutgoingMessage { id: "big".into(), body: "x".repeat(70_000) };
    let small = OutgoingMessage { id: "small".into(), body: "y".repeat(10) };
    assert!(queue.send_batch(&[big, small]).await.expect("send").is_empty());
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while got.len() < 2 && std::time::Instant::now() < deadline {
        got.extend(queue.receive(10, Duration::from_secs(30), Duration::ZERO).await.expect("receive"));
    }
    assert_eq!(got.len(), 2, "both messages come back");
    for m in &got {
        queue.delete(&m.receipt_handle).await.expect("delete");
    }
    let u = aws.usage().sqs;
    assert_eq!((u.messages_sent, u.bytes_sent, u.messages_received, u.bytes_received), (2, 70_010, 2, 70_010));
    // The send (2) + each receive (1 per call, 2 when one call returned both) + 2 deletes.
    let receives = u.calls - 3;
    assert!((1..=10).contains(&receives), "{u:?}");
    let receive_billed = u.billed_requests - 2 - 2;
    assert!(receive_billed >= receives && receive_billed <= receives + 1, "{u:?}");

    store.put("a.json", b"{}".to_vec()).await.expect("put");
    assert_eq!(store.get("a.json").await.expect("get"), Some(b"{}".to_vec()));
    assert!(store.head("missing.json").await.expect("head").is_none());
    assert_eq!(store.list("").await.expect("list").len(), 1);
    store.delete("a.json").await.expect("delete");
    let s3 = aws.usage().s3;
    assert_eq!((s3.write_requests, s3.read_requests, s3.delete_requests, s3.bytes_put), (2, 2, 1, 2), "{s3:?}");

    t1.write(WriteOp::Put { item: item("p", "s#1", serde_json::json!({})), condition: Condition::None })
        .await
        .expect("put");
    t2.write(WriteOp::Put { item: item("p", "s#2", serde_json::json!({})), condition: Condition::None })
        .await
        .expect("put");
    assert_eq!((t1.usage().wru, t2.usage().wru, aws.usage().dynamodb.wru), (1, 1, 2));
    let total = aws.usage();
    let expected = total.dynamodb.dollars() + total.sqs.dollars() + total.s3.dollars();
    assert!((total.dollars() - expected).abs() < 1e-15 && total.dollars() > 0.0);
    aws.reset_usage();
    assert_eq!(aws.usage(), tributary_aws::AwsUsage::default());
    assert_eq!(t1.usage().wru, 1, "a table's own count is not reset with the clients'");
}
