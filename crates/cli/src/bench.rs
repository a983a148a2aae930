//! Benchmarks that print a ratio against a baseline measured in the same run, on the same input, alternating
//! rounds so that machine noise hits both sides alike. Build with `--release` for meaningful numbers.

use std::hint::black_box;
use std::time::{Duration, Instant};

use clap::Subcommand;
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
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Ingest { events, rounds, round_ms } => {
            ingest_bench(events, rounds, Duration::from_millis(round_ms))
        }
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
    Ok(())
}
