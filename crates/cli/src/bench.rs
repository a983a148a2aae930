//! Benchmarks that print a ratio against a baseline measured in the same run, on the same input, alternating
//! rounds so that machine noise hits both sides alike. Build with `--release` for meaningful numbers. Each ends its
//! report with its result lines (tributary_core::benchmark), which `bench table` gathers from saved outputs.

use std::hint::black_box;
use std::time::{Duration, Instant};

use clap::Subcommand;
use tributary_core::benchmark::BenchRow;
use tributary_core::ingest::{self, Limits, RequestContext, Route};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Ingest core (parse + validate + normalize + pack) vs `serde_json::from_slice::<Value>` on the same batch.
    Ingest {
        /// Events per batch.
        #[arg(long, default_value_t = 100)]
        events: usize,
        /// Rounds per side; each round runs for `--round-ms`.
        #[arg(long, default_value_t = 5)]
        rounds: u32,
        #[arg(long, default_value_t = 400)]
        round_ms: u64,
    },
    /// The deliver handler to a local webhook vs a plain `reqwest` loop with the same concurrency.
    Deliver {
        /// Events per round.
        #[arg(long, default_value_t = 5_000)]
        events: usize,
        #[arg(long, default_value_t = 7)]
        rounds: u32,
        /// Requests in flight (both sides).
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
    },
    /// The import handler (parse, map, pack, send) vs a plain `csv::Reader` read of the same file; with
    /// `--memory-mb`, the peak resident memory while importing a file of that size (use `--rounds 0` for it alone).
    Import {
        /// CSV rows of the throughput file.
        #[arg(long, default_value_t = 200_000)]
        rows: u64,
        #[arg(long, default_value_t = 5)]
        rounds: u32,
        /// Size in MiB of the file imported for the memory reading (e.g. 1024).
        #[arg(long)]
        memory_mb: Option<u64>,
    },
    /// A full audience pass (read, evaluate, memberships) vs a plain read of the same root profiles.
    Audiences {
        /// Root profiles in the store.
        #[arg(long, default_value_t = 20_000)]
        profiles: u64,
        #[arg(long, default_value_t = 5)]
        rounds: u32,
    },
    /// Ingest core with governance (a 20-event tracking plan + every PII detector, hashing) vs the same without.
    Governance {
        /// Events per batch.
        #[arg(long, default_value_t = 100)]
        events: usize,
        #[arg(long, default_value_t = 5)]
        rounds: u32,
        #[arg(long, default_value_t = 400)]
        round_ms: u64,
    },
    /// One table of the result lines in saved benchmark outputs (what scripts/bench.sh prints at the end).
    Table {
        /// Benchmark outputs; none, or `-`, reads standard input.
        files: Vec<std::path::PathBuf>,
    },
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Ingest { events, rounds, round_ms } => {
            ingest_bench(events, rounds, Duration::from_millis(round_ms))
        }
        BenchCommand::Governance { events, rounds, round_ms } => {
            governance_bench(events, rounds, Duration::from_millis(round_ms))
        }
        BenchCommand::Import { rows, rounds, memory_mb } => {
            crate::bench_import::import_bench(rows.max(1), rounds, memory_mb)
        }
        BenchCommand::Audiences { profiles, rounds } => {
            crate::bench_audiences::audiences_bench(profiles.max(1), rounds.max(1))
        }
        BenchCommand::Deliver { events, rounds, concurrency } => {
            crate::bench_deliver::deliver_bench(events, rounds.max(1), concurrency.clamp(1, 512))
        }
        BenchCommand::Table { files } => crate::bench_table::run(&files),
    }
}

/// Runs `f` repeatedly for `budget`, returning iterations per second.
fn rate(budget: Duration, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        for _ in 0..8 {
            f();
        }
        n += 8;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn ingest_bench(events: usize, rounds: u32, round: Duration) -> anyhow::Result<()> {
    let body = ingest::sample::realistic_batch(events);
    let limits = Limits::default();
    let ctx = RequestContext {
        received_at: time::OffsetDateTime::now_utc(),
        source_ip: Some("203.0.113.9".into()),
        user_agent: Some("analytics-python/2.4.0".into()),
    };
    // Check once that the pipeline accepts every event, so we time real work.
    let parsed = ingest::parse_body(&body, &limits).map_err(|e| anyhow::anyhow!("sample batch refused: {e}"))?;
    let processed = ingest::process(Route::Batch, parsed, &ctx, &limits).map_err(|e| anyhow::anyhow!("{e}"))?;
    anyhow::ensure!(
        processed.accepted.len() == events && processed.rejected.is_empty(),
        "sample batch: {} accepted, {} rejected",
        processed.accepted.len(),
        processed.rejected.len()
    );

    let pipeline = || {
        let v = ingest::parse_body(black_box(&body), &limits).ok();
        if let Some(v) = v {
            if let Ok(p) = ingest::process(Route::Batch, v, &ctx, &limits) {
                black_box(ingest::pack("web", &p.accepted, tributary_ingest::DEFAULT_MAX_MESSAGE_BYTES));
            }
        }
    };
    let baseline = || {
        black_box(serde_json::from_slice::<serde_json::Value>(black_box(&body)).ok());
    };
    // Warm up both.
    rate(round / 4, baseline);
    rate(round / 4, pipeline);
    let (mut base, mut ours) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        base.push(rate(round, baseline));
        ours.push(rate(round, pipeline));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (b, o) = (median(&mut base), median(&mut ours));
    let mb = body.len() as f64 / 1e6;
    println!("ingest core benchmark: {events}-event batch, {} bytes, median of {rounds} rounds", body.len());
    println!("{:<44} {:>12} {:>12} {:>10}", "", "batches/s", "events/s", "MB/s");
    println!(
        "{:<44} {:>12.0} {:>12.0} {:>10.1}",
        "baseline serde_json::from_slice::<Value>",
        b,
        b * events as f64,
        b * mb
    );
    println!(
        "{:<44} {:>12.0} {:>12.0} {:>10.1}",
        "tributary parse+validate+normalize+pack",
        o,
        o * events as f64,
        o * mb
    );
    println!("ratio (tributary / baseline): {:.2}  (target ≥ 0.50)", o / b);
    if cfg!(debug_assertions) {
        println!("note: debug build; run `cargo run --release -p tributary-cli -- bench ingest` for real figures");
    }
    let ev = events as f64;
    let row = BenchRow::against(
        "ingest",
        "parse+validate+normalize+pack",
        "events/s",
        o * ev,
        "serde_json::from_slice::<Value>",
        b * ev,
        Some((0.5, true)),
    );
    println!("{}", row.line());
    Ok(())
}

/// The plan of the governance benchmark: the sample's six track events with realistic schemas, plus fourteen more
/// planned names (20 in all), identify traits, `drop_properties` for violations and unplanned events.
fn bench_plan() -> anyhow::Result<tributary_core::governance::TrackingPlan> {
    let order = serde_json::json!({
        "type": "object",
        "properties": {
            "order_id": {"type": "string"},
            "revenue": {"type": "number", "minimum": 0},
            "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
            "coupon": {"type": ["string", "null"]},
            "products": {"type": "array", "items": {"type": "object", "required": ["sku", "price"],
                "properties": {"sku": {"type": "string"}, "price": {"type": "number"}, "quantity": {"type": "integer"}}}},
            "shipping": {"type": "object"},
            "first_purchase": {"type": "boolean"}
        },
        "required": ["order_id", "revenue"],
        "additionalProperties": false
    });
    let mut events = serde_json::Map::new();
    for name in
        ["Product Viewed", "Product Added", "Checkout Started", "Order Completed", "Signed In", "Newsletter Subscribed"]
    {
        events.insert(name.to_string(), order.clone());
    }
    for i in 0..14 {
        events.insert(format!("Planned Event {i:02}"), serde_json::json!({"type": "object"}));
    }
    let plan = serde_json::json!({
        "version": "bench-1",
        "events": events,
        "identify": {"type": "object", "properties": {"email": {"type": "string"}, "logins": {"type": "integer"}}},
        "unplanned": "drop_properties",
        "violations": "drop_properties"
    });
    Ok(serde_json::from_value(plan)?)
}

fn governance_bench(events: usize, rounds: u32, round: Duration) -> anyhow::Result<()> {
    use tributary_core::governance::pii::{PiiAction, PiiKind};
    use tributary_core::governance::policy::{Governance, PiiPolicy};

    let body = ingest::sample::realistic_batch(events);
    let limits = Limits::default();
    let ctx = RequestContext {
        received_at: time::OffsetDateTime::now_utc(),
        source_ip: Some("203.0.113.9".into()),
        user_agent: Some("analytics-python/2.4.0".into()),
    };
    let plan = bench_plan()?;
    let pii = PiiPolicy { detect: PiiKind::ALL.to_vec(), action: PiiAction::Hash, allow_properties: None };
    let governance = Governance::new(Some(&plan), Some(&pii)).map_err(|e| anyhow::anyhow!("bench plan: {e}"))?;
    let off = Governance::new(None, None).map_err(|e| anyhow::anyhow!("{e}"))?;

    // Check once that governance really acts on this batch (hashes the identify emails), so we time real work.
    let parsed = ingest::parse_body(&body, &limits).map_err(|e| anyhow::anyhow!("sample batch refused: {e}"))?;
    let mut processed = ingest::process(Route::Batch, parsed, &ctx, &limits).map_err(|e| anyhow::anyhow!("{e}"))?;
    let findings: usize = processed.accepted.iter_mut().map(|e| governance.govern(e).pii.total()).sum();
    anyhow::ensure!(findings > 0, "the sample batch gave the PII detectors nothing to find");

    let run = |g: &Governance| {
        if let Ok(v) = ingest::parse_body(black_box(&body), &limits) {
            if let Ok(mut p) = ingest::process(Route::Batch, v, &ctx, &limits) {
                for e in p.accepted.iter_mut() {
                    black_box(g.govern(e));
                }
                black_box(ingest::pack("web", &p.accepted, tributary_ingest::DEFAULT_MAX_MESSAGE_BYTES));
            }
        }
    };
    rate(round / 4, || run(&off));
    rate(round / 4, || run(&governance));
    let (mut base, mut ours) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        base.push(rate(round, || run(&off)));
        ours.push(rate(round, || run(&governance)));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (b, o) = (median(&mut base), median(&mut ours));
    println!(
        "governance benchmark: {events}-event batch, 20-event plan, {} PII detectors (hash), {findings} findings per batch",
        PiiKind::ALL.len()
    );
    println!("{:<44} {:>12} {:>12}", "", "batches/s", "events/s");
    println!("{:<44} {:>12.0} {:>12.0}", "ingest core, governance off (baseline)", b, b * events as f64);
    println!("{:<44} {:>12.0} {:>12.0}", "ingest core, plan + PII detection", o, o * events as f64);
    println!("cost of governance: {:.0} % of baseline throughput (target ≤ 30 %)", (1.0 - o / b) * 100.0);
    if cfg!(debug_assertions) {
        println!("note: debug build; run `cargo run --release -p tributary-cli -- bench governance` for real figures");
    }
    // A cost of at most 30 % is a throughput ratio of at least 0.7.
    let ev = events as f64;
    let row = BenchRow::against(
        "governance",
        "ingest core, plan + PII detection",
        "events/s",
        o * ev,
        "governance off",
        b * ev,
        Some((0.7, true)),
    );
    println!("{}", row.line());
    Ok(())
}
