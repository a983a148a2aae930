//! `bench-cost`: what a million events cost on AWS, measured on the emulator. The SAM template is deployed on the
//! moto server at `AWS_ENDPOINT_URL` (infra/emulator.py), every function is built as its Lambda binary builds it,
//! and a mixed workload runs through the stack's own wiring (crates/tests `pipeline`):
//!
//! 1. **1 event per request**: identify, track and page calls on `/v1/identify|track|page`;
//! 2. **10 events per request**: `/v1/batch` calls, each one user's next ten events (what a client SDK flushes);
//! 3. **an import**: a partner CSV dropped in the import bucket, one identify per row.
//!
//! Every event is consented and goes on to two destinations, a webhook (on loopback) and an `s3_export`. Each phase
//! is counted apart:
//! - API Gateway requests (one per HTTP call);
//! - Lambda invocations per function, and GB-seconds: each invocation's duration, rounded up to the millisecond as
//!   Lambda bills it, times the function's `MemorySize` in the template. The duration is modelled, because moto's
//!   answers are far slower than AWS's (a DynamoDB transaction takes tens to hundreds of milliseconds there, growing
//!   with the table): the CPU time the invocation used (the runtime is single-threaded, so the thread's CPU clock is
//!   the handler's) plus a typical in-region round trip per AWS call it made ([`DYNAMODB_CALL`], [`SQS_CALL`],
//!   [`S3_CALL`]), as if no two calls overlapped (they sometimes do: an upper bound). The wall time on moto is
//!   printed beside it;
//! - SQS billed requests (per started 64 KiB): what the functions send and receive (the adapters' meters,
//!   `AwsClients::usage`) plus what Lambda's event source mappings do for them (one ReceiveMessage per batch,
//!   billed by its payload, and one DeleteMessageBatch);
//! - DynamoDB read and write request units as billed (the adapter's estimate from item sizes, `billing.rs`);
//! - S3 requests by price class.
//!
//! and priced at the list prices of ../shared/reference/perf-anchors.md §3.1 (us-east-1, arm64, free tiers
//! ignored). Not counted: storage, data transfer, CloudWatch, KMS requests, and the event source mappings' polls
//! of empty queues (a fixed cost per queue, not per event).
//!
//! ```text
//! AWS_ENDPOINT_URL=http://127.0.0.1:5055 \
//!   cargo run --release -p tributary-tests --features aws-integration --bin bench-cost -- [--quick]
//!   [--users 100] [--single 500] [--batched 1000] [--rows 500]
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_lambda_events::apigw::ApiGatewayV2httpResponse;
use base64::Engine as _;
use serde_json::{json, Value};
use tributary_aws::{admin, AwsClients, AwsUsage, SqsUsage};
use tributary_core::benchmark::BenchRow;
use tributary_core::ports::ObjectStore;
use tributary_tests::aws_env;
use tributary_tests::erasure::Receiver;
use tributary_tests::pipeline::{self, Functions, Poller};
use tributary_tests::stack::Deployment;
use tributary_tests::support::{body_bytes, http_request, PARTNER_SOURCE};

const WRITE_KEY: &str = "bench-cost-write-key";
/// How long the pipeline may take to drain after a phase.
const SETTLE_WITHIN: Duration = Duration::from_secs(600);

/// List prices, us-east-1 (perf-anchors §3.1): HTTP API per million requests (first 300 M).
const API_GATEWAY_USD_PER_MILLION: f64 = 1.00;
/// Lambda per million requests (x86 and arm64).
const LAMBDA_USD_PER_MILLION_REQUESTS: f64 = 0.20;
/// Lambda duration on arm64 (the template's default architecture), per GB-second, first tier.
const LAMBDA_USD_PER_GB_S: f64 = 0.000_013_333_4;
/// Assumed round trip of one DynamoDB call from Lambda in the same region (single-digit milliseconds).
const DYNAMODB_CALL: Duration = Duration::from_millis(5);
/// Assumed round trip of one SQS call.
const SQS_CALL: Duration = Duration::from_millis(10);
/// Assumed round trip of one S3 call (small objects).
const S3_CALL: Duration = Duration::from_millis(20);
/// The target of issue 9 at ten events per request.
const TARGET_USD_PER_MILLION: f64 = 0.50;

struct Args {
    users: usize,
    single: usize,
    batched: usize,
    rows: usize,
}

fn args() -> Result<Args, String> {
    let mut a = Args { users: 100, single: 500, batched: 1_000, rows: 500 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--quick" {
            a = Args { users: 20, single: 100, batched: 200, rows: 50 };
            continue;
        }
        let mut number = || -> Result<usize, String> {
            let v = it.next().ok_or_else(|| format!("{flag} takes a number"))?;
            v.parse::<usize>()
                .ok()
                .filter(|n| (1..=1_000_000).contains(n))
                .ok_or_else(|| format!("{flag}: {v:?} is not 1..=1000000"))
        };
        match flag.as_str() {
            "--users" => a.users = number()?,
            "--single" => a.single = number()?,
            "--batched" => a.batched = number()?,
            "--rows" => a.rows = number()?,
            other => return Err(format!("unknown argument {other:?} (see the header of tests/src/bin/bench_cost.rs)")),
        }
    }
    Ok(a)
}

/// The workspace: a 1P web source, a 2P partner import, a webhook and an S3 export that need analytics consent.
fn workspace_yaml(hook: &str, exports: &str) -> String {
    format!(
        r#"workspace: tributary-bench-cost
consent:
  purposes: [{{ id: analytics }}]
sources:
  - id: web
    write_key_sha256: ["{write_key}"]
    class: "1P"
{PARTNER_SOURCE}destinations:
  - id: crm
    kind: webhook
    purposes: [analytics]
    transport: {{ url: "{hook}" }}
  - id: lake
    kind: s3_export
    purposes: [analytics]
    transport: {{ bucket: "{exports}", prefix: lake }}
delivery:
  allow_private_hosts: ["127.0.0.1"]
"#,
        write_key = tributary_core::sha256_hex(WRITE_KEY.as_bytes()),
    )
}

/// One function's invocations in a phase.
#[derive(Debug, Clone, Copy, Default)]
struct Invocations {
    count: u64,
    /// Modelled, rounded up per invocation.
    billed_ms: u64,
    gb_s: f64,
    cpu: Duration,
    calls: u64,
    wall_on_moto: Duration,
}

/// The CPU time the calling thread has used (Linux: `/proc/thread-self/schedstat`, in nanoseconds).
fn thread_cpu() -> Duration {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat")
        .expect("/proc/thread-self/schedstat (bench-cost measures CPU time on Linux)");
    let ns = text.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()).expect("a CPU time in nanoseconds");
    Duration::from_nanos(ns)
}

/// AWS calls in a usage snapshot, by round-trip time.
fn call_time(u: &AwsUsage) -> (u64, Duration) {
    let dynamodb = u.dynamodb.requests_read + u.dynamodb.requests_write + u.dynamodb.requests_transact;
    let s3 = u.s3.write_requests + u.s3.read_requests + u.s3.delete_requests;
    let time = DYNAMODB_CALL * dynamodb as u32 + SQS_CALL * u.sqs.calls as u32 + S3_CALL * s3 as u32;
    (dynamodb + u.sqs.calls + s3, time)
}

/// What an invocation used, measured around it.
struct Mark {
    wall: Instant,
    cpu: Duration,
    usage: AwsUsage,
}

/// What a phase cost, beside the adapters' meters.
#[derive(Debug, Clone, Default)]
struct Tally {
    api_requests: u64,
    lambda: BTreeMap<String, Invocations>,
    /// ReceiveMessage and DeleteMessageBatch requests of the event source mappings, as billed.
    esm_requests: u64,
}

struct Bench {
    stack: Deployment,
    /// The functions' clients: their meters count what the functions ask of AWS.
    aws: AwsClients,
    f: Functions,
    /// Lambda's side of each queue, on clients of their own (what the pollers cost is modelled, not metered).
    pollers: Vec<Poller>,
    memory_mb: BTreeMap<String, u64>,
    tally: Mutex<Tally>,
}

impl Bench {
    fn mark(&self) -> Mark {
        Mark { wall: Instant::now(), cpu: thread_cpu(), usage: self.aws.usage() }
    }

    /// Records one invocation of `binary` that started at `start`.
    fn record(&self, binary: &str, start: Mark) {
        let (wall, cpu) = (start.wall.elapsed(), thread_cpu().saturating_sub(start.cpu));
        let (calls_before, time_before) = call_time(&start.usage);
        let (calls_after, time_after) = call_time(&self.aws.usage());
        let calls = calls_after - calls_before;
        let modelled = cpu + time_after.saturating_sub(time_before);
        let billed_ms = u64::try_from(modelled.as_micros().div_ceil(1000)).unwrap_or(u64::MAX).max(1);
        let mb = self.memory_mb.get(binary).copied().unwrap_or_else(|| panic!("no MemorySize for {binary}"));
        let mut t = self.tally.lock().expect("tally");
        let inv = t.lambda.entry(binary.to_string()).or_default();
        inv.count += 1;
        inv.billed_ms += billed_ms;
        inv.gb_s += mb as f64 / 1024.0 * billed_ms as f64 / 1000.0;
        inv.cpu += cpu;
        inv.calls += calls;
        inv.wall_on_moto += wall;
    }

    async fn http(&self, path: &str, body: String) -> ApiGatewayV2httpResponse {
        let auth = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{WRITE_KEY}:")));
        let binary = self.stack.route("POST", path);
        let start = self.mark();
        let resp = self.f.http(&binary, http_request("POST", path, &auth, Some(body))).await;
        self.record(&binary, start);
        self.tally.lock().expect("tally").api_requests += 1;
        let answer: Value = serde_json::from_slice(&body_bytes(&resp)).unwrap_or(Value::Null);
        assert_eq!(resp.status_code, 200, "{path}: {answer}");
        assert_eq!(answer.get("rejected").cloned().unwrap_or(json!([])), json!([]), "{path}: {answer}");
        resp
    }

    /// Plays Lambda's pollers until every mapped queue is empty; counts what the pollers are billed.
    async fn settle(&self) {
        // Lambda hands a failed record back after the visibility timeout; so does this, at once, a few times.
        let redelivery = pipeline::Redelivery { max_redeliveries: 3, within: SETTLE_WITHIN };
        pipeline::drain(&self.pollers, redelivery, async |p, messages| {
            let payload: u64 = messages.iter().map(|m| m.body.len() as u64).sum();
            // The receive that found this batch, and the DeleteMessageBatch of what the function handled.
            self.tally.lock().expect("tally").esm_requests += SqsUsage::billed_requests_for(payload) + 1;
            let event = pipeline::sqs_event(p, messages);
            let start = self.mark();
            let resp = self.f.consume(p, event).await;
            self.record(&p.trigger.binary, start);
            resp
        })
        .await;
    }

    fn reset(&self) {
        self.aws.reset_usage();
        *self.tally.lock().expect("tally") = Tally::default();
    }

    fn phase(&self, name: &str, events: u64, unit: &'static str, since: Instant) -> Phase {
        let (tally, aws) = (self.tally.lock().expect("tally").clone(), self.aws.usage());
        Phase { name: name.to_string(), events, tally, aws, seconds: since.elapsed().as_secs_f64(), unit }
    }
}

/// The events of user `user`'s session, content from the ingest benchmark's realistic mix, with consent. A user's
/// first session starts with an identify carrying their email (so that partner rows find them).
fn session(user: usize, events: &[Value], phase: &str, first: bool) -> Vec<Value> {
    events
        .iter()
        .enumerate()
        .map(|(k, e)| {
            let mut e = e.clone();
            if first && k == 0 {
                let o = e.as_object_mut().expect("an event object");
                for field in ["event", "name", "category", "properties"] {
                    o.remove(field);
                }
                e["type"] = json!("identify");
                e["traits"] = json!({"name": "Ann Lee", "plan": "pro", "logins": 3});
            }
            e["userId"] = json!(format!("user-{user:05}"));
            e["anonymousId"] = json!(format!("anon-{user:05}"));
            e["messageId"] = json!(format!("{phase}-{user}-{k}-{}", e["messageId"].as_str().unwrap_or("")));
            e["context"]["consent"] = json!({"categoryPreferences": {"analytics": true}});
            if e["type"] == "identify" {
                e["traits"]["email"] = json!(format!("user{user:05}@example.com"));
            }
            e
        })
        .collect()
}

/// `n` events spread over `users` users, in sessions of `per_user` consecutive events each; with `introduce`, each
/// user's first session starts with an identify.
fn workload(n: usize, users: usize, per_user: usize, phase: &str, offset: usize, introduce: bool) -> Vec<Vec<Value>> {
    let content = tributary_core::ingest::sample::realistic_events(n + offset);
    content[offset..]
        .chunks(per_user.max(1))
        .enumerate()
        .map(|(i, chunk)| session(i % users.max(1), chunk, phase, introduce && i < users))
        .collect()
}

/// What one phase counted.
struct Phase {
    name: String,
    events: u64,
    tally: Tally,
    aws: AwsUsage,
    seconds: f64,
    /// What the phase counts per million of: events, or rows of a file.
    unit: &'static str,
}

/// One line item of the bill: its name, the units per event and the dollars per million events.
struct Item {
    name: &'static str,
    units: String,
    usd_per_million: f64,
}

impl Phase {
    fn items(&self) -> Vec<Item> {
        let n = self.events.max(1) as f64;
        let per = |v: f64| v / n;
        let invocations: u64 = self.tally.lambda.values().map(|i| i.count).sum();
        let gb_s: f64 = self.tally.lambda.values().map(|i| i.gb_s).sum();
        let sqs = self.aws.sqs.billed_requests + self.tally.esm_requests;
        let d = &self.aws.dynamodb;
        let by_function: Vec<String> =
            self.tally.lambda.iter().map(|(b, i)| format!("{b} {:.3}", per(i.count as f64))).collect();
        vec![
            Item {
                name: "API Gateway (HTTP API)",
                units: format!("{:.3} requests", per(self.tally.api_requests as f64)),
                usd_per_million: per(self.tally.api_requests as f64) * API_GATEWAY_USD_PER_MILLION,
            },
            Item {
                name: "Lambda requests",
                units: format!("{:.3} invocations ({})", per(invocations as f64), by_function.join(", ")),
                usd_per_million: per(invocations as f64) * LAMBDA_USD_PER_MILLION_REQUESTS,
            },
            Item {
                name: "Lambda duration (arm64)",
                units: format!("{:.6} GB-s", per(gb_s)),
                usd_per_million: per(gb_s) * LAMBDA_USD_PER_GB_S * 1e6,
            },
            Item {
                name: "SQS (64 KiB requests)",
                units: format!(
                    "{:.3} requests ({:.3} by functions, {:.3} by pollers)",
                    per(sqs as f64),
                    per(self.aws.sqs.billed_requests as f64),
                    per(self.tally.esm_requests as f64)
                ),
                usd_per_million: per(sqs as f64) * SqsUsage::USD_PER_MILLION_REQUESTS,
            },
            Item {
                name: "DynamoDB writes",
                units: format!(
                    "{:.2} WRU ({:.2} transactions of {:.1} items, {:.2} writes)",
                    per(d.wru as f64),
                    per(d.requests_transact as f64),
                    d.transact_items as f64 / d.requests_transact.max(1) as f64,
                    per(d.requests_write as f64)
                ),
                usd_per_million: per(d.wru as f64) * tributary_aws::Usage::USD_PER_MILLION_WRU,
            },
            Item {
                name: "DynamoDB reads",
                units: format!("{:.2} RRU ({:.2} requests)", per(d.rru), per(d.requests_read as f64)),
                usd_per_million: per(d.rru) * tributary_aws::Usage::USD_PER_MILLION_RRU,
            },
            Item {
                name: "S3 requests",
                units: format!(
                    "{:.4} PUT/LIST, {:.4} GET/HEAD",
                    per(self.aws.s3.write_requests as f64),
                    per(self.aws.s3.read_requests as f64)
                ),
                usd_per_million: per(self.aws.s3.dollars()) * 1e6,
            },
        ]
    }

    fn total(&self) -> f64 {
        self.items().iter().map(|i| i.usd_per_million).sum()
    }

    fn print(&self) {
        println!();
        println!("{} ({} {} in {:.0} s; dollars per million)", self.name, self.events, self.unit, self.seconds);
        println!("{:<26} {:>10}  per {}", "", "$ / M", self.unit.trim_end_matches('s'));
        for item in self.items() {
            println!("{:<26} {:>10.4}  {}", item.name, item.usd_per_million, item.units);
        }
        println!("{:<26} {:>10.4}", "total", self.total());
        for (binary, inv) in &self.tally.lambda {
            let n = inv.count.max(1) as f64;
            println!(
                "  {binary}: {} invocations; on average {:.1} ms billed (modelled) = {:.2} ms CPU + {:.1} AWS calls; \
                 {:.0} ms on moto",
                inv.count,
                inv.billed_ms as f64 / n,
                inv.cpu.as_secs_f64() * 1000.0 / n,
                inv.calls as f64 / n,
                inv.wall_on_moto.as_secs_f64() * 1000.0 / n,
            );
        }
    }
}

// One thread: the thread's CPU clock is then the handlers' CPU time (see `thread_cpu`).
#[tokio::main(flavor = "current_thread")]
async fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench-cost: {e}");
            std::process::exit(2);
        }
    };
    // The functions' warnings (a failed record says why) on stderr; RUST_LOG widens it.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let started = Instant::now();
    let endpoint = aws_env::init();
    let harness = AwsClients::from_env().await;

    let hooks = Receiver::start().await;
    let config_bucket = admin::create_bucket(&harness, &aws_env::unique("cost-config")).await.expect("config bucket");
    let exports = admin::create_bucket(&harness, &aws_env::unique("cost-exports")).await.expect("export bucket");
    let config = harness.s3_store(&config_bucket, "");
    let hook = format!("{}/crm", hooks.url());
    config.put("workspace.yaml", workspace_yaml(&hook, &exports).into_bytes()).await.expect("put the workspace");
    let pem = std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../events/dsr/signing.pem"))
        .expect("events/dsr/signing.pem");
    config.put("dsr/signing.pem", pem).await.expect("put the signing key");
    let (w, k) = (format!("s3://{config_bucket}/workspace.yaml"), format!("s3://{config_bucket}/dsr/signing.pem"));
    let stack_name = aws_env::unique("tributary-cost");
    let e = exports.clone();
    let stack = tokio::task::spawn_blocking(move || {
        let params = [
            ("WorkspaceConfigUri", w.as_str()),
            ("DsrSigningKeyUri", k.as_str()),
            ("ExportBucketName", e.as_str()),
            ("Architecture", "arm64"),
        ];
        Deployment::create(&endpoint, &stack_name, &params)
    })
    .await
    .expect("the deployment");
    eprintln!("stack deployed on the emulator in {:.1} s", started.elapsed().as_secs_f64());

    let aws = AwsClients::from_env().await;
    let f = Functions::new(&stack, &aws).await;
    let pollers = pipeline::pollers(&stack, &harness);
    let memory_mb = stack
        .functions()
        .values()
        .map(|f| {
            let binary = f["binary"].as_str().expect("binary").to_string();
            let mb = f["memory_size"].as_u64().unwrap_or_else(|| panic!("{binary}: no MemorySize in {f}"));
            (binary, mb)
        })
        .collect();
    let b = Bench { stack, aws, f, pollers, memory_mb, tally: Mutex::default() };
    // The S3 test event the import bucket's notification sent at deployment, and anything else left over.
    b.settle().await;

    let mut phases = Vec::new();
    let mut delivered = 0usize;
    let mut check_delivered = |phase: &str, n: usize| {
        let ids: BTreeSet<String> =
            hooks.to("/crm").iter().filter_map(|p| p.json()["messageId"].as_str().map(str::to_string)).collect();
        assert_eq!(ids.len(), delivered + n, "{phase}: every event reached the webhook once");
        delivered += n;
    };

    // 1. One event per request, on the single-event routes.
    b.reset();
    let t = Instant::now();
    let single = workload(a.single, a.users, 1, "single", 0, true);
    for event in single.iter().flatten() {
        let route = format!("/v1/{}", event["type"].as_str().unwrap_or("track"));
        b.http(&route, event.to_string()).await;
    }
    b.settle().await;
    check_delivered("1 event per request", a.single);
    phases.push(b.phase("1 event per request", a.single as u64, "events", t));

    // 2. Ten events per request: each request one user's next ten events.
    b.reset();
    let t = Instant::now();
    let batched = workload(a.batched, a.users, 10, "batched", a.single, false);
    for events in &batched {
        b.http("/v1/batch", json!({ "batch": events }).to_string()).await;
    }
    b.settle().await;
    check_delivered("10 events per request", a.batched);
    phases.push(b.phase("10 events per request", a.batched as u64, "events", t));

    // 3. A partner file about known users (a row about someone without consent would not be delivered).
    b.reset();
    let t = Instant::now();
    let imports = b.stack.var("import", "IMPORT_BUCKET");
    let mut csv = String::from("email,tier\n");
    for i in 0..a.rows {
        csv.push_str(&format!("user{:05}@example.com,{}\n", i % a.users, ["gold", "silver"][i % 2]));
    }
    harness.s3_store(&imports, "").put("imports/partner/cost.csv", csv.into_bytes()).await.expect("drop a file");
    b.settle().await;
    check_delivered("import", a.rows);
    phases.push(b.phase("import", a.rows as u64, "rows", t));

    let exported = harness.s3_store(&exports, "lake").list("").await.expect("list the exports");
    assert!(!exported.is_empty(), "the s3_export destination wrote objects");

    println!("cost benchmark: the SAM stack on moto, {} users, two destinations (webhook, s3_export)", a.users);
    for p in &phases {
        p.print();
    }
    println!();
    println!(
        "prices: perf-anchors §3.1 (us-east-1, arm64, no free tier); not counted: storage, transfer, CloudWatch, KMS, \
         idle polling; ran in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    for p in &phases {
        let row = if p.name.starts_with("10 events") {
            BenchRow::target_only("cost", &p.name, "USD per million events", p.total(), TARGET_USD_PER_MILLION, false)
        } else {
            BenchRow {
                bench: "cost".into(),
                measure: p.name.clone(),
                unit: format!("USD per million {}", p.unit),
                ours: p.total(),
                baseline_name: None,
                baseline: None,
                ratio: None,
                target: None,
                met: None,
            }
        };
        println!("{}", row.line());
    }
}
