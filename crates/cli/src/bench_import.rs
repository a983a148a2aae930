//! `tributary bench import`: rows per second through the import handler (ranged reads from the object store, the
//! bounded row parser, the source's mapping, packing into events-queue messages, checkpoints) next to a plain
//! `csv::Reader` read of the same file, rounds alternating; and, with `--memory-mb`, the peak resident memory of
//! this process while importing a file of that size.
//!
//! The file is a local directory object (the embedded bucket) and the events queue a counting sink: what is
//! measured is the import path's own work, not SQS's latency, which this machine cannot stand in for.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use aws_lambda_events::sqs::SqsEvent;
use tributary_core::benchmark::BenchRow;
use tributary_core::config::WorkspaceConfig;
use tributary_core::metrics::MemoryMetrics;
use tributary_core::ports::ReceivedMessage;
use tributary_core::testing::{partner_row, CountingQueue, MemoryTable, IMPORT_WORKSPACE, PARTNER_HEADER};
use tributary_import::{Import, ImportSettings};
use tributary_local::dir_store::DirStore;
use tributary_local::runtime::{local_notification, sqs_event};

const BUCKET: &str = tributary_local::runtime::LOCAL_IMPORT_BUCKET;

/// Writes a partner CSV of at least `rows` rows (or `bytes` bytes, whichever is given) to `path`; the row count.
fn write_csv(path: &Path, rows: Option<u64>, bytes: Option<u64>) -> anyhow::Result<u64> {
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    w.write_all(PARTNER_HEADER.as_bytes())?;
    let (mut n, mut written) = (0u64, 0u64);
    while rows.is_some_and(|r| n < r) || bytes.is_some_and(|b| written < b) {
        let line = partner_row(n);
        w.write_all(line.as_bytes())?;
        written += line.len() as u64;
        n += 1;
    }
    w.flush()?;
    Ok(n)
}

/// Peak resident set of this process (Linux `VmHWM`), in KiB.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Resets the peak (Linux: writing 5 to `clear_refs`), so the next reading covers what follows only.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

struct Bench {
    _dir: tempfile::TempDir,
    store: DirStore,
    workspace: Arc<WorkspaceConfig>,
    file: std::path::PathBuf,
    rows: u64,
}

impl Bench {
    fn new(rows: Option<u64>, bytes: Option<u64>) -> anyhow::Result<Bench> {
        let dir = tempfile::tempdir()?;
        let root = dir.path().join(BUCKET);
        let file = root.join("imports/partner/bench.csv");
        std::fs::create_dir_all(file.parent().unwrap_or(&root))?;
        let rows = write_csv(&file, rows, bytes)?;
        let store = DirStore::open(&root).map_err(|e| anyhow::anyhow!("{e}"))?;
        let workspace = Arc::new(tributary_core::config::load(IMPORT_WORKSPACE).map_err(|e| anyhow::anyhow!("{e:?}"))?);
        Ok(Bench { _dir: dir, store, workspace, file, rows })
    }

    /// One import of the file, start to end; rows per second.
    async fn import(&self, round: u32) -> anyhow::Result<f64> {
        let queue = CountingQueue::default();
        let import = Import::new(
            MemoryTable::default(),
            queue.clone(),
            CountingQueue::default(),
            self.store.clone(),
            MemoryMetrics::default(),
            self.workspace.clone(),
            ImportSettings::new(BUCKET),
        );
        let size = std::fs::metadata(&self.file)?.len();
        // A new version each round, so each round imports afresh.
        let body = local_notification("imports/partner/bench.csv", size, &format!("round-{round}"));
        let event: SqsEvent = sqs_event(
            &[ReceivedMessage {
                message_id: "m".into(),
                receipt_handle: "h".into(),
                body,
                receive_count: 1,
                sent_timestamp_ms: 0,
            }],
            "arn:aws:sqs:local:000000000000:imports",
        )?;
        let start = Instant::now();
        let resp = import.handle(event, None).await;
        let secs = start.elapsed().as_secs_f64();
        anyhow::ensure!(resp.batch_item_failures.is_empty(), "the import failed");
        anyhow::ensure!(queue.sent() > 0, "nothing was sent");
        Ok(self.rows as f64 / secs)
    }

    /// The baseline: every record of the same file through `csv::Reader`.
    fn plain(&self) -> anyhow::Result<f64> {
        let start = Instant::now();
        let mut reader = csv::Reader::from_path(&self.file)?;
        let mut record = csv::StringRecord::new();
        let mut n = 0u64;
        while reader.read_record(&mut record)? {
            std::hint::black_box(&record);
            n += 1;
        }
        anyhow::ensure!(n == self.rows, "csv read {n} of {} rows", self.rows);
        Ok(n as f64 / start.elapsed().as_secs_f64())
    }

    /// For reference: the same read, each record turned into a JSON object (header → text) and serialized — the
    /// least a loop producing events from the file does, without typing, validation, ids or identifiers.
    fn naive_json(&self) -> anyhow::Result<f64> {
        let start = Instant::now();
        let mut reader = csv::Reader::from_path(&self.file)?;
        let headers = reader.headers()?.clone();
        let mut record = csv::StringRecord::new();
        let mut out = Vec::with_capacity(1024);
        let mut n = 0u64;
        while reader.read_record(&mut record)? {
            let object: serde_json::Map<String, serde_json::Value> =
                headers.iter().zip(record.iter()).map(|(k, v)| (k.to_string(), v.into())).collect();
            out.clear();
            serde_json::to_writer(&mut out, &object)?;
            std::hint::black_box(&out);
            n += 1;
        }
        anyhow::ensure!(n == self.rows, "csv read {n} of {} rows", self.rows);
        Ok(n as f64 / start.elapsed().as_secs_f64())
    }
}

pub fn import_bench(rows: u64, rounds: u32, memory_mb: Option<u64>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        if rounds > 0 {
            throughput(rows, rounds).await?;
        }
        if let Some(mb) = memory_mb {
            memory(mb).await?;
        }
        anyhow::Ok(())
    })
}

async fn throughput(rows: u64, rounds: u32) -> anyhow::Result<()> {
    let bench = Bench::new(Some(rows), None)?;
    let (mut ours, mut base, mut naive) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        base.push(bench.plain()?);
        naive.push(bench.naive_json()?);
        ours.push(bench.import(round).await?);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let paired = |base: &[f64]| {
        let mut r: Vec<f64> = ours.iter().zip(base).map(|(o, b)| o / b).collect();
        let (lo, hi) = r.iter().fold((f64::MAX, f64::MIN), |(l, h), x| (l.min(*x), h.max(*x)));
        (median(&mut r), lo, hi)
    };
    let (r, lo, hi) = paired(&base);
    let (nr, nlo, nhi) = paired(&naive);
    let (b, j, o) = (median(&mut base), median(&mut naive), median(&mut ours));
    println!("bench import: {rows} CSV rows ({} MB), {rounds} rounds per side (medians)", file_mb(&bench.file));
    println!("  baseline: csv::Reader, every record          {b:>12.0} rows/s");
    println!("  reference: csv::Reader + JSON object per row {j:>12.0} rows/s");
    println!("  tributary import handler (map, pack, send)   {o:>12.0} rows/s");
    println!("  ratio vs baseline, median of rounds          {r:>12.2}  ({lo:.2}-{hi:.2})  target >= 0.5");
    println!("  ratio vs the JSON-per-row reference          {nr:>12.2}  ({nlo:.2}-{nhi:.2})");
    let handler = "import handler (map, pack, send)";
    let row = BenchRow::against("import", handler, "rows/s", o, "csv::Reader, every record", b, None);
    println!("{}", row.with_ratio(r, Some((0.5, true))).line());
    let row = BenchRow::against("import", handler, "rows/s", o, "csv::Reader + JSON object per row", j, None);
    println!("{}", row.with_ratio(nr, None).line());
    Ok(())
}

/// Imports a file of `mb` MiB and prints the peak resident memory while doing so. Run it in a process of its own
/// (`--rounds 0`) for a reading that nothing else inflated.
async fn memory(mb: u64) -> anyhow::Result<()> {
    let big = Bench::new(None, Some(mb * 1024 * 1024))?;
    let before = peak_rss_kib();
    reset_peak_rss();
    let rate = big.import(0).await?;
    let peak = peak_rss_kib();
    println!(
        "  memory: {} MB file ({} rows) imported at {rate:.0} rows/s; peak resident {} (before: {})",
        file_mb(&big.file),
        big.rows,
        peak.map_or("unknown".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0)),
        before.map_or("unknown".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0)),
    );
    println!("  target: peak resident < 64 MiB");
    // Without a reading (not Linux) there is no figure to report.
    if let Some(kib) = peak {
        let measure = format!("peak resident, {} MiB file", file_mb(&big.file));
        println!("{}", BenchRow::target_only("import", &measure, "MiB", kib as f64 / 1024.0, 64.0, false).line());
    }
    Ok(())
}

fn file_mb(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len() / (1024 * 1024))
}
