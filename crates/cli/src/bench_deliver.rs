//! `tributary bench deliver`: deliveries per second through the deliver handler (routing, consent, preparation,
//! receipts, batching, the guarded HTTP client) to a local webhook, next to a plain `reqwest` loop posting the
//! same events (`.json(&event)`) to the same server with the same concurrency — and, for reference, the same loop
//! with bodies serialized before the clock starts. Rounds alternate so machine noise hits every side alike.
//!
//! Receipts go to the in-memory table: the store is DynamoDB on AWS, whose latency this machine cannot stand in
//! for; what is compared is the work of the delivery path itself.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use futures::stream::{self, StreamExt};
use serde_json::{json, Value};
use tributary_core::benchmark::BenchRow;
use tributary_core::config::{DataPartyClass, WorkspaceConfig};
use tributary_core::delivery::{DeliveryEnvelope, DeliverySettings, Handoff};
use tributary_core::metrics::MemoryMetrics;
use tributary_core::testing::MemoryTable;
use tributary_deliver::export::ExportSender;
use tributary_deliver::http::HttpSender;
use tributary_deliver::{resolve_destinations, Deliver, DeliverSettings, Outbound, SendResult, Senders};
use tributary_local::dir_store::DirStore;
use tributary_local::runtime::{local_sink_destination, sqs_event, LOCAL_URL_VAR};
use tributary_local::sqlite_queue::{QueueOptions, SqliteQueue};

pub fn deliver_bench(events: usize, rounds: u32, concurrency: usize) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(events, rounds, concurrency))
}

async fn run(events: usize, rounds: u32, concurrency: usize) -> anyhow::Result<()> {
    // The receiver: accepts every POST, counts it.
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let c = counter.clone();
            async move {
                c.fetch_add(1, Ordering::Relaxed);
                let _ = body.len();
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let url = format!("http://127.0.0.1:{}/hook", addr.port());

    let mut dest = local_sink_destination();
    dest.id = "bench-hook".into();
    dest.transport.url = Some(format!("${{{LOCAL_URL_VAR}}}/hook"));
    let workspace = WorkspaceConfig {
        workspace: "bench".into(),
        sources: Vec::new(),
        management_keys: Vec::new(),
        identity: Default::default(),
        profiles: Default::default(),
        consent: Default::default(),
        destinations: vec![dest],
        delivery: DeliverySettings {
            allow_private_hosts: vec!["127.0.0.1".into()],
            max_in_flight: concurrency,
            ..Default::default()
        },
        audiences: Vec::new(),
        dsr: Default::default(),
    };
    let base = format!("http://127.0.0.1:{}", addr.port());
    let destinations = resolve_destinations(&workspace, &|n| (n == LOCAL_URL_VAR).then(|| base.clone()))?;
    let dir = tempfile::tempdir()?;
    let queues = dir.path().join("queues.sqlite");
    let open = |name: &str| SqliteQueue::open(&queues, name, QueueOptions::default()).map_err(anyhow::Error::from);
    let workspace = Arc::new(workspace);

    let sample = sample_event();
    let plain = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    let mut ours = Vec::new();
    let mut json_loop = Vec::new();
    let mut bytes_loop = Vec::new();
    let mut handler_alone = Vec::new();
    let mut naive = Vec::new();
    // The HTTP client is built once, as a Lambda builds it at init and keeps its connections warm across
    // invocations (the baseline's client is reused across rounds too). Receipt tables are new each round, as
    // DynamoDB's latency does not grow with the table.
    let http = HttpSender::new(&workspace.delivery.allow_private_hosts).map_err(anyhow::Error::msg)?;
    for round in 0..rounds {
        // Baseline: a plain reqwest loop over the same events (`.json(&event)`), the same concurrency.
        let events_plain: Vec<Value> = (0..events).map(|i| with_id(&sample, &format!("plain-{round}-{i}"))).collect();
        let rate =
            plain_loop(&plain, &url, events_plain, concurrency, &received, |c, url, e: Value| c.post(url).json(&e))
                .await?;
        json_loop.push(rate);
        // Stricter, for reference: the bodies serialized before the clock starts.
        let bodies: Vec<Vec<u8>> = (0..events)
            .map(|i| serde_json::to_vec(&with_id(&sample, &format!("bytes-{round}-{i}"))).unwrap_or_default())
            .collect();
        let rate = plain_loop(&plain, &url, bodies, concurrency, &received, |c, url, b: Vec<u8>| {
            c.post(url).header("content-type", "application/json").body(b)
        })
        .await?;
        bytes_loop.push(rate);
        // The naive consumer: the same queue records, each envelope parsed and every event posted as it is —
        // the same input and output as the handler, without routing, consent, receipts, guard or retries.
        let bodies = envelope_bodies(&sample, &format!("naive-{round}"), events);
        let start = Instant::now();
        let parsed: Vec<Value> = bodies
            .iter()
            .filter_map(|b| serde_json::from_str::<DeliveryEnvelope>(b).ok())
            .flat_map(|e| e.items.into_iter().map(|i| i.event))
            .collect();
        let parse = start.elapsed().as_secs_f64();
        anyhow::ensure!(parsed.len() == events, "naive consumer: {} of {events} events parsed", parsed.len());
        let rate =
            plain_loop(&plain, &url, parsed, concurrency, &received, |c, url, e: Value| c.post(url).json(&e)).await?;
        naive.push(events as f64 / (parse + events as f64 / rate));

        // Ours: the same events as delivery-queue records (10 per envelope, one SqsEvent of all records, as a
        // large Lambda batch would be), fresh ids each round.
        let messages: Vec<tributary_core::ports::ReceivedMessage> =
            envelope_bodies(&sample, &format!("ours-{round}"), events)
                .into_iter()
                .enumerate()
                .map(|(n, body)| tributary_core::ports::ReceivedMessage {
                    message_id: format!("m{n}"),
                    receipt_handle: format!("h{n}"),
                    body,
                    receive_count: 1,
                    sent_timestamp_ms: 0,
                })
                .collect();
        // Lambda hands the handler a parsed `SqsEvent`: build it before the clock starts.
        let event = sqs_event(&messages, "arn:aws:sqs:local:000000000000:delivery")?;
        let deliver = Deliver::new(
            MemoryTable::default(),
            open("delivery")?,
            open("delivery-dlq")?,
            Senders { http: http.clone(), exports: ExportSender::<DirStore>::new(BTreeMap::new()) },
            MemoryMetrics::default(),
            workspace.clone(),
            destinations.clone(),
            DeliverSettings::default(),
        );
        // The handler's own work (routing, receipts, preparation, bodies) with a sender that only serializes.
        let alone = Deliver::new(
            MemoryTable::default(),
            open("delivery")?,
            open("delivery-dlq")?,
            SerializeOnly,
            MemoryMetrics::default(),
            workspace.clone(),
            destinations.clone(),
            DeliverSettings::default(),
        );
        let copy = event.clone();
        let start = Instant::now();
        let resp = alone.handle(copy).await;
        handler_alone.push(events as f64 / start.elapsed().as_secs_f64());
        anyhow::ensure!(resp.batch_item_failures.is_empty(), "handler alone: records failed");
        let before = received.load(Ordering::Relaxed);
        let start = Instant::now();
        let resp = deliver.handle(event).await;
        ours.push(events as f64 / start.elapsed().as_secs_f64());
        anyhow::ensure!(
            resp.batch_item_failures.is_empty(),
            "tributary: {} records failed",
            resp.batch_item_failures.len()
        );
        anyhow::ensure!(received.load(Ordering::Relaxed) - before == events as u64, "tributary lost deliveries");
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    // Ratios per round (each side ran back to back, so a noisy moment hits both), then their median and range.
    let paired = |base: &[f64]| {
        let mut r: Vec<f64> = ours.iter().zip(base).map(|(o, b)| o / b).collect();
        let (lo, hi) = r.iter().fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
        (median(&mut r), lo, hi)
    };
    let (vs_json, vs_naive, vs_bytes) = (paired(&json_loop), paired(&naive), paired(&bytes_loop));
    let (t, j, b) = (median(&mut ours), median(&mut json_loop), median(&mut bytes_loop));
    println!("bench deliver: {events} events per round, {rounds} rounds per side (medians), {concurrency} in flight, webhook on loopback");
    let n = median(&mut naive);
    println!("  baseline: reqwest loop, .json(&event)          {j:>10.0} deliveries/s");
    println!("  naive consumer: parse queue records + loop     {n:>10.0} deliveries/s");
    println!("  reference: reqwest loop, pre-serialized bodies {b:>10.0} deliveries/s");
    println!("  tributary deliver handler                      {t:>10.0} deliveries/s");
    println!("  tributary handler, no network (body only)      {:>10.0} deliveries/s", median(&mut handler_alone));
    println!("  ratios, median of rounds (lowest-highest):");
    let line = |name: &str, (m, lo, hi): (f64, f64, f64), target: &str| {
        println!("  {name:<46} {m:>10.2}  ({lo:.2}-{hi:.2}){target}");
    };
    line("ratio vs baseline", vs_json, "  target >= 0.7");
    line("ratio vs naive consumer (same input)", vs_naive, "");
    line("ratio vs pre-serialized reference", vs_bytes, "");
    let handler = "deliver handler";
    let row = BenchRow::against("deliver", handler, "deliveries/s", t, "reqwest loop, .json(&event)", j, None);
    println!("{}", row.with_ratio(vs_json.0, Some((0.7, true))).line());
    let row = BenchRow::against("deliver", handler, "deliveries/s", t, "naive queue consumer", n, None);
    println!("{}", row.with_ratio(vs_naive.0, None).line());
    Ok(())
}

/// A sender that builds the webhook body and sends nothing: the handler's cost without the network.
struct SerializeOnly;

impl tributary_deliver::Sender for SerializeOnly {
    async fn send(&self, _dest: &tributary_core::delivery::DestinationConfig, batch: &[Outbound]) -> SendResult {
        std::hint::black_box(tributary_deliver::payload::webhook_body(batch));
        SendResult::Delivered
    }
}

/// Posts every item with `concurrency` requests in flight; deliveries per second. Fails unless every request got a
/// 2xx and the server counted each one.
async fn plain_loop<T: Send + 'static>(
    client: &reqwest::Client,
    url: &str,
    items: Vec<T>,
    concurrency: usize,
    received: &AtomicU64,
    request: impl Fn(&reqwest::Client, &str, T) -> reqwest::RequestBuilder + Copy,
) -> anyhow::Result<f64> {
    let n = items.len();
    let before = received.load(Ordering::Relaxed);
    let start = Instant::now();
    let ok: usize = stream::iter(items)
        .map(|item| async move {
            let r = request(client, url, item).send().await;
            usize::from(r.is_ok_and(|r| r.status().is_success()))
        })
        .buffer_unordered(concurrency)
        .fold(0, |a, b| async move { a + b })
        .await;
    let rate = n as f64 / start.elapsed().as_secs_f64();
    anyhow::ensure!(ok == n, "baseline: {ok} of {n} accepted");
    anyhow::ensure!(received.load(Ordering::Relaxed) - before == n as u64, "baseline lost requests");
    Ok(rate)
}

/// Delivery-queue bodies holding `events` copies of `sample` (10 per envelope, ids `<tag>-<n>`), as stitch
/// writes them.
fn envelope_bodies(sample: &Value, tag: &str, events: usize) -> Vec<String> {
    (0..events)
        .collect::<Vec<_>>()
        .chunks(10)
        .map(|ids| {
            let items = ids
                .iter()
                .map(|i| Handoff {
                    profile_id: Some(format!("p{}", i % 97)),
                    class: DataPartyClass::FirstParty,
                    consent: Default::default(),
                    consent_changed: false,
                    applied_to: None,
                    event: with_id(sample, &format!("{tag}-{i}")),
                })
                .collect();
            let env = DeliveryEnvelope { v: 1, source_id: "web".into(), items, only: None, destinations: None };
            serde_json::to_string(&env).unwrap_or_default()
        })
        .collect()
}

fn sample_event() -> Value {
    json!({
        "type": "track",
        "event": "Order Completed",
        "userId": "user-1",
        "anonymousId": "anon-1",
        "timestamp": "2026-11-30T10:00:00.000Z",
        "receivedAt": "2026-11-30T10:00:00.100Z",
        "properties": {
            "order_id": "o-1", "revenue": 42.5, "currency": "EUR",
            "products": [{"product_id": "p1", "sku": "S-1", "price": 21.25, "quantity": 2}]
        },
        "context": {
            "ip": "203.0.113.9",
            "userAgent": "Mozilla/5.0",
            "library": {"name": "analytics-python", "version": "2.4.0"},
            "page": {"url": "https://shop.example/checkout", "path": "/checkout"}
        }
    })
}

fn with_id(sample: &Value, id: &str) -> Value {
    let mut e = sample.clone();
    e["messageId"] = Value::from(id);
    e
}
