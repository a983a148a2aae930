//! The AWS tier of delivery: the deliver handler on the DynamoDB and SQS adapters (moto), with a delivery queue
//! whose redrive policy names its DLQ, driven the way Lambda drives it (receive, `handle`, delete what is not in
//! `batchItemFailures`). A webhook that refuses one poison event sends it to the DLQ with its reason and a
//! `failed` receipt; once the webhook is fixed, `redrive::run` moves it back and the next round delivers it, while
//! the good events are delivered once each, redeliveries included.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use tributary_aws::{admin, AwsClients, DynamoTable, S3Store, SqsQueue};
use tributary_core::config::DataPartyClass;
use tributary_core::delivery::{
    receipt_key, DeadLetter, DeliveryEnvelope, DlqMessage, Handoff, Receipt, ReceiptStatus,
};
use tributary_core::metrics::MemoryMetrics;
use tributary_core::ports::{OutgoingMessage, Queue, ReceivedMessage, TableStore};
use tributary_deliver::export::ExportSender;
use tributary_deliver::http::HttpSender;
use tributary_deliver::redrive::{self, Filter};
use tributary_deliver::{resolve_destinations, Deliver, DeliverSettings, Senders};
use tributary_tests::aws_env;

const DESTINATION: &str = "hook";
const PROFILE: &str = "p-aws-deliver";
/// The delivery queue's `maxReceiveCount` (its redrive policy) and the handler's.
const MAX_RECEIVE_COUNT: u32 = 5;
/// How long one receive waits for messages moto may not show at once.
const RECEIVE_WITHIN: Duration = Duration::from_secs(15);

type Handler = Deliver<DynamoTable, SqsQueue, Senders<S3Store>, MemoryMetrics>;

/// What the webhook receiver was sent and answered: (messageId, status) in arrival order; a request whose
/// `Idempotency-Key` is not its messageId is logged under another name, so it matches nothing expected.
#[derive(Default)]
struct Receiver {
    poison: String,
    fixed: AtomicBool,
    /// messageId → how many more times to answer 503.
    flaky: Mutex<BTreeMap<String, u32>>,
    log: Mutex<Vec<(String, u16)>>,
}

impl Receiver {
    fn answered(&self) -> Vec<(String, u16)> {
        self.log.lock().expect("receiver log").clone()
    }

    fn count(&self, id: &str, status: u16) -> usize {
        self.answered().iter().filter(|(m, s)| m == id && *s == status).count()
    }
}

/// A webhook on a loopback port: 503 while a messageId is `flaky`, 400 for the poison messageId until `fixed`, 200
/// for everything else.
async fn start_receiver(poison: &str) -> (String, Arc<Receiver>) {
    async fn hook(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
        let event: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let mut id = event["messageId"].as_str().unwrap_or("").to_owned();
        if headers.get("idempotency-key").and_then(|v| v.to_str().ok()) != Some(id.as_str()) {
            // Never panic in here (the sender would see a broken connection); the test sees the mismatch.
            id = format!("{id} (Idempotency-Key {:?})", headers.get("idempotency-key"));
        }
        let unavailable = match r.flaky.lock().expect("flaky").get_mut(&id) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        };
        let status = if unavailable {
            StatusCode::SERVICE_UNAVAILABLE
        } else if id == r.poison && !r.fixed.load(Ordering::SeqCst) {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::OK
        };
        r.log.lock().expect("receiver log").push((id, status.as_u16()));
        status
    }
    let receiver = Arc::new(Receiver { poison: poison.to_owned(), ..Receiver::default() });
    let app = Router::new().route("/hook", post(hook)).with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the webhook receiver");
    let url = format!("http://127.0.0.1:{}/hook", listener.local_addr().expect("receiver address").port());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, receiver)
}

/// One essential webhook whose URL comes from `${HOOK_URL}`; short backoffs.
fn workspace() -> tributary_core::config::WorkspaceConfig {
    let yaml = format!(
        r#"workspace: tributary-aws-deliver
sources:
  - id: web
    name: Web (tests)
    write_key_sha256:
      - "{}"
    class: "1P"
destinations:
  - id: {DESTINATION}
    kind: webhook
    essential: true
    transport:
      url: "${{HOOK_URL}}"
delivery:
  allow_private_hosts: ["127.0.0.1"]
  backoff_base_ms: 200
  backoff_max_ms: 1000
"#,
        tributary_core::sha256_hex(b"aws-deliver-write-key")
    );
    tributary_core::config::load(&yaml).expect("the test workspace must load")
}

fn handoff(message_id: &str) -> Handoff {
    Handoff {
        profile_id: Some(PROFILE.into()),
        class: DataPartyClass::FirstParty,
        consent: BTreeMap::new(),
        consent_changed: false,
        applied_to: None,
        event: json!({
            "type": "track",
            "event": "Order Completed",
            "messageId": message_id,
            "userId": "aws-deliver-user",
            "timestamp": "2026-01-02T03:04:05.000Z",
            "properties": {"revenue": 12.5, "currency": "EUR"},
        }),
    }
}

fn envelope(items: Vec<Handoff>) -> OutgoingMessage {
    let env = DeliveryEnvelope { v: 1, source_id: "web".into(), items, only: None, destinations: None };
    OutgoingMessage { id: uuid::Uuid::new_v4().simple().to_string(), body: serde_json::to_string(&env).expect("JSON") }
}

/// Receives until `n` messages are in hand (moto may show them a few at a time), hidden for 60 s.
async fn receive(queue: &SqsQueue, n: usize) -> Vec<ReceivedMessage> {
    let deadline = tokio::time::Instant::now() + RECEIVE_WITHIN;
    let mut got: Vec<ReceivedMessage> = Vec::new();
    while got.len() < n {
        assert!(tokio::time::Instant::now() < deadline, "{} of {n} messages within {RECEIVE_WITHIN:?}", got.len());
        let batch = queue.receive(10, Duration::from_secs(60), Duration::from_secs(1)).await.expect("receive");
        got.extend(batch);
    }
    assert_eq!(got.len(), n, "exactly {n} messages expected");
    got
}

/// One Lambda invocation on `messages`: the handler's answer, then the delete of every record it did not fail.
/// Returns the failed message ids.
async fn invoke(deliver: &Handler, queue: &SqsQueue, arn: &str, messages: &[ReceivedMessage]) -> Vec<String> {
    let event = tributary_local::runtime::sqs_event(messages, arn).expect("SqsEvent");
    let resp = deliver.handle(event).await;
    let failed: Vec<String> = resp.batch_item_failures.iter().map(|f| f.item_identifier.clone()).collect();
    for m in messages.iter().filter(|m| !failed.contains(&m.message_id)) {
        queue.delete(&m.receipt_handle).await.expect("delete a handled record");
    }
    failed
}

async fn receipt(table: &DynamoTable, message_id: &str) -> Receipt {
    let item = table
        .get(&receipt_key(Some(PROFILE), DESTINATION, message_id))
        .await
        .expect("read the receipt")
        .unwrap_or_else(|| panic!("no receipt for {message_id}"));
    Receipt::from_attrs(&item.attrs).expect("a receipt")
}

async fn assert_empty(queue: &SqsQueue, what: &str) {
    let left = queue.receive(10, Duration::from_secs(1), Duration::from_secs(1)).await.expect("receive");
    let bodies: Vec<&str> = left.iter().map(|m| m.body.as_str()).collect();
    assert!(left.is_empty(), "{what} should be empty: {bodies:?}");
    assert_eq!(queue.approximate_len().await.expect("approximate_len"), 0, "{what}");
}

/// The resources of one test on moto, and the handler on them.
struct Env {
    table: DynamoTable,
    queue: SqsQueue,
    dlq: SqsQueue,
    queue_arn: String,
    deliver: Handler,
    receiver: Arc<Receiver>,
    /// Prefix of this test's messageIds.
    run: String,
}

/// A fresh profile table, DLQ and delivery queue (redrive policy to the DLQ after [`MAX_RECEIVE_COUNT`]
/// receives), the webhook receiver, and the handler built as the Lambda builds it.
async fn setup(poison: &str) -> Env {
    let aws: AwsClients = aws_env::clients().await;
    let table_name = admin::create_table(&aws, &aws_env::unique("deliver-profiles")).await.expect("create table");
    let dlq_url = admin::create_queue(&aws, &aws_env::unique("delivery-dlq"), None).await.expect("create the DLQ");
    let queue_url = admin::create_queue(&aws, &aws_env::unique("delivery"), Some((&dlq_url, MAX_RECEIVE_COUNT)))
        .await
        .expect("create the delivery queue with its redrive policy");
    let queue_arn = admin::queue_arn(&aws, &queue_url).await.expect("queue ARN");
    let (hook_url, receiver) = start_receiver(poison).await;

    let ws = workspace();
    let lookup = move |name: &str| (name == "HOOK_URL").then(|| hook_url.clone());
    let destinations = resolve_destinations(&ws, &lookup).expect("destinations resolve");
    let http = HttpSender::new(&ws.delivery.allow_private_hosts).expect("HTTP sender");
    let deliver: Handler = Deliver::new(
        aws.dynamo_table(&table_name),
        aws.sqs_queue(&queue_url),
        aws.sqs_queue(&dlq_url),
        Senders { http, exports: ExportSender::<S3Store>::new(BTreeMap::new()) },
        MemoryMetrics::default(),
        Arc::new(ws),
        destinations,
        DeliverSettings { max_receive_count: MAX_RECEIVE_COUNT },
    );
    Env {
        table: aws.dynamo_table(&table_name),
        queue: aws.sqs_queue(&queue_url),
        dlq: aws.sqs_queue(&dlq_url),
        queue_arn,
        deliver,
        receiver,
        run: poison.rsplit_once('-').map_or(poison, |(run, _)| run).to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_queue_dlq_and_redrive_on_the_aws_adapters() {
    let run = aws_env::unique("m");
    let (good_1, good_2, poison) = (format!("{run}-good-1"), format!("{run}-good-2"), format!("{run}-poison"));
    let Env { table, queue, dlq, queue_arn, deliver, receiver, .. } = setup(&poison).await;

    // Round 1: one envelope with a good event, one with a good event and the poison one.
    let first = envelope(vec![handoff(&good_1)]);
    let second = envelope(vec![handoff(&good_2), handoff(&poison)]);
    let failed = queue.send_batch(&[first.clone(), second]).await.expect("send envelopes");
    assert!(failed.is_empty(), "{failed:?}");
    let messages = receive(&queue, 2).await;
    let failed = invoke(&deliver, &queue, &queue_arn, &messages).await;
    assert!(failed.is_empty(), "every event reached a final state (delivered or dead-lettered): {failed:?}");
    assert_eq!(receiver.count(&good_1, 200), 1, "{:?}", receiver.answered());
    assert_eq!(receiver.count(&good_2, 200), 1, "{:?}", receiver.answered());
    assert_eq!(receiver.count(&poison, 400), 1, "refused once, not retried: {:?}", receiver.answered());
    assert_empty(&queue, "the delivery queue after round 1").await;

    // The poison event is in the DLQ as a dead letter with its reason, and its receipt says failed.
    let letters = receive(&dlq, 1).await;
    let letter: DeadLetter = match DlqMessage::parse(&letters[0].body).expect("a DLQ message") {
        DlqMessage::DeadLetter(dl) => *dl,
        DlqMessage::Envelope(env) => panic!("a dead letter expected, got a raw envelope: {env:?}"),
    };
    assert_eq!(
        (letter.destination_id.as_str(), letter.reason.as_str(), letter.attempts, letter.item.message_id()),
        (DESTINATION, "http_400", 1, poison.as_str()),
        "{letter:?}"
    );
    assert_eq!(letter.source_id, "web");
    dlq.change_visibility(&letters[0].receipt_handle, Duration::ZERO).await.expect("release the dead letter");
    let r = receipt(&table, &poison).await;
    assert_eq!((r.s, r.e.as_deref(), r.n), (ReceiptStatus::Failed, Some("http_400"), 1), "{r:?}");
    for id in [&good_1, &good_2] {
        let r = receipt(&table, id).await;
        assert_eq!((r.s, r.e.as_deref(), r.n), (ReceiptStatus::Delivered, None, 1), "{id}: {r:?}");
    }

    // A dry run lists it without moving it; another destination's filter does not take it.
    let report = redrive::run(&dlq, &queue, &Filter { destination: Some(DESTINATION.into()), since_ms: None }, true)
        .await
        .expect("dry run");
    assert_eq!((report.moved, report.kept, report.entries.len()), (0, 1, 1), "{report:?}");
    assert_eq!(report.entries[0].reason.as_deref(), Some("http_400"), "{report:?}");
    assert_eq!(report.entries[0].message_ids, vec![poison.clone()], "{report:?}");
    let report = redrive::run(&dlq, &queue, &Filter { destination: Some("other".into()), since_ms: None }, false)
        .await
        .expect("redrive of another destination");
    assert_eq!((report.moved, report.kept), (0, 1), "{report:?}");
    assert_eq!(queue.approximate_len().await.expect("approximate_len"), 0, "nothing moved yet");

    // Fixed: the redrive moves it back, aimed at its destination only.
    receiver.fixed.store(true, Ordering::SeqCst);
    let report = redrive::run(&dlq, &queue, &Filter { destination: Some(DESTINATION.into()), since_ms: None }, false)
        .await
        .expect("redrive");
    assert_eq!((report.moved, report.kept, report.unreadable), (1, 0, 0), "{report:?}");
    assert_empty(&dlq, "the DLQ after the redrive").await;

    // Round 2: the redriven event, plus a redelivery of the first envelope (receipts keep it from going twice).
    let failed = queue.send_batch(&[first]).await.expect("send the redelivery");
    assert!(failed.is_empty(), "{failed:?}");
    let messages = receive(&queue, 2).await;
    let redriven: Vec<DeliveryEnvelope> = messages
        .iter()
        .filter_map(|m| serde_json::from_str::<DeliveryEnvelope>(&m.body).ok())
        .filter(|e| e.only.is_some())
        .collect();
    assert_eq!(redriven.len(), 1, "one redriven envelope: {messages:?}");
    assert_eq!(redriven[0].only, Some(vec![DESTINATION.to_string()]));
    assert_eq!(redriven[0].items.iter().map(Handoff::message_id).collect::<Vec<_>>(), vec![poison.as_str()]);
    let failed = invoke(&deliver, &queue, &queue_arn, &messages).await;
    assert!(failed.is_empty(), "{failed:?}");

    assert_eq!(receiver.count(&poison, 200), 1, "delivered after the fix: {:?}", receiver.answered());
    let answered = receiver.answered();
    let ids: BTreeSet<&str> = answered.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(ids, BTreeSet::from([good_1.as_str(), good_2.as_str(), poison.as_str()]));
    assert_eq!(answered.len(), 4, "good events once each, the poison one refused then delivered: {answered:?}");
    let r = receipt(&table, &poison).await;
    assert_eq!((r.s, r.e.as_deref(), r.n), (ReceiptStatus::Delivered, None, 2), "{r:?}");
    assert_eq!(receipt(&table, &good_1).await.n, 1, "the redelivery sent nothing");
    assert_empty(&queue, "the delivery queue after round 2").await;
    assert_empty(&dlq, "the DLQ at the end").await;
}

/// A 503 comes back after the backoff (the record's visibility) and is delivered at the second attempt; an
/// envelope the function never finishes (it crashes, nothing is deleted) is moved to the DLQ by the queue's own
/// redrive policy, and `redrive::run` brings that raw envelope back, aimed at the chosen destination.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_back_off_and_the_queue_redrive_policy_feeds_the_same_redrive() {
    let env = setup(&format!("{}-poison", aws_env::unique("m"))).await;
    let Env { table, queue, dlq, queue_arn, deliver, receiver, run } = &env;
    let (flaky, crashed) = (format!("{run}-flaky"), format!("{run}-crashed"));
    receiver.flaky.lock().expect("flaky").insert(flaky.clone(), 1);

    // 503: the record is reported failed, hidden for the backoff, and comes back by itself.
    queue.send_batch(&[envelope(vec![handoff(&flaky)])]).await.expect("send");
    let messages = receive(queue, 1).await;
    let failed = invoke(deliver, queue, queue_arn, &messages).await;
    assert_eq!(failed, vec![messages[0].message_id.clone()], "a retryable failure fails the record");
    let r = receipt(table, &flaky).await;
    assert_eq!((r.s, r.e.as_deref(), r.n), (ReceiptStatus::Retrying, Some("http_503"), 1), "{r:?}");
    let again = receive(queue, 1).await;
    assert_eq!((again[0].message_id.as_str(), again[0].receive_count), (messages[0].message_id.as_str(), 2));
    let failed = invoke(deliver, queue, queue_arn, &again).await;
    assert!(failed.is_empty(), "{failed:?}");
    let r = receipt(table, &flaky).await;
    assert_eq!((r.s, r.e.as_deref(), r.n), (ReceiptStatus::Delivered, None, 2), "{r:?}");
    assert_eq!((receiver.count(&flaky, 503), receiver.count(&flaky, 200)), (1, 1), "{:?}", receiver.answered());
    assert_empty(queue, "the delivery queue after the retry").await;

    // A function that crashes on every receive: after MAX_RECEIVE_COUNT receives SQS moves the envelope itself.
    queue.send_batch(&[envelope(vec![handoff(&crashed)])]).await.expect("send");
    for n in 1..=MAX_RECEIVE_COUNT {
        let m = receive(queue, 1).await;
        assert_eq!(m[0].receive_count, n, "receive {n}");
        queue.change_visibility(&m[0].receipt_handle, Duration::ZERO).await.expect("crash: visible again");
    }
    // The receive after the last one is when SQS applies the redrive policy.
    let none = queue.receive(10, Duration::from_secs(30), Duration::from_secs(1)).await.expect("receive");
    assert!(none.is_empty(), "moved to the DLQ, not delivered again: {none:?}");
    let raw = receive(dlq, 1).await;
    match DlqMessage::parse(&raw[0].body).expect("a DLQ message") {
        DlqMessage::Envelope(env) => assert_eq!(env.items[0].message_id(), crashed, "{env:?}"),
        DlqMessage::DeadLetter(dl) => panic!("the queue moves the envelope as it was, got a dead letter: {dl:?}"),
    }
    dlq.change_visibility(&raw[0].receipt_handle, Duration::ZERO).await.expect("release");
    assert!(receiver.answered().iter().all(|(m, _)| *m != crashed), "never sent");

    let report = redrive::run(dlq, queue, &Filter { destination: Some(DESTINATION.into()), since_ms: None }, false)
        .await
        .expect("redrive");
    assert_eq!((report.moved, report.kept, report.unreadable), (1, 0, 0), "{report:?}");
    assert_eq!(report.entries[0].destination, None, "a raw envelope: {report:?}");
    assert_empty(dlq, "the DLQ after the redrive").await;
    let messages = receive(queue, 1).await;
    let back: DeliveryEnvelope = serde_json::from_str(&messages[0].body).expect("an envelope");
    assert_eq!(back.only, Some(vec![DESTINATION.to_string()]), "aimed at the chosen destination");
    let failed = invoke(deliver, queue, queue_arn, &messages).await;
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(receiver.count(&crashed, 200), 1, "{:?}", receiver.answered());
    assert_eq!(receipt(table, &crashed).await.s, ReceiptStatus::Delivered);
    assert_empty(queue, "the delivery queue at the end").await;
}
