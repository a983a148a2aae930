//! `tributary import FILE --source ID`: puts a partner or broker file through the local stack — the same import,
//! stitch and delivery handlers as `tributary serve`, on the same data directory — with a progress bar, and prints
//! the import's summary once every row has been applied (the events queue is empty).
//!
//! The file is copied under `objects/imports/<source-id>/` (as a hidden file first, then renamed, so the watcher
//! never sees half a file); the local platform's watcher turns it into an S3 notification. A `tributary serve`
//! running on the same data directory may pick the work up instead: the import state says who holds it, and this
//! command follows the state either way.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use tributary_core::import::{state_key, FileId, ImportState, ImportStatus};
use tributary_core::ports::{Queue, TableStore};
use tributary_local::runtime::{
    local_etag, DataDir, PlatformOptions, EVENTS_QUEUE, LOCAL_IMPORT_BUCKET, PROFILES_TABLE,
};
use tributary_local::sqlite_queue::{QueueOptions, SqliteQueue};
use tributary_local::sqlite_table::SqliteTable;

/// How long the import may take to start before the command gives up (the watcher scans every second).
const START_WITHIN: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(200);

#[derive(clap::Args)]
pub struct ImportArgs {
    /// The file: CSV (`.csv`, `.tsv`, `.txt`) or JSON Lines (`.jsonl`, `.ndjson`), optionally gzip (`.gz`).
    file: PathBuf,
    /// The source whose import mapping reads the file (its `import:` in the workspace file).
    #[arg(long)]
    source: String,
    /// Workspace file (YAML). Without one, the demo workspace (which has no import source).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where queues, tables and objects are kept (the same as `tributary serve`'s).
    #[arg(long, default_value = ".tributary")]
    data_dir: PathBuf,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: ImportArgs) -> anyhow::Result<ExitCode> {
    let file = &args.file;
    let meta = std::fs::metadata(file).with_context(|| format!("{}: cannot read the file", file.display()))?;
    if !meta.is_file() {
        bail!("{}: not a file", file.display());
    }
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.starts_with('.'))
        .with_context(|| format!("{}: the file name must be UTF-8 and not hidden", file.display()))?
        .to_string();
    std::fs::create_dir_all(&args.data_dir).with_context(|| format!("creating {}", args.data_dir.display()))?;
    let data = DataDir(args.data_dir.clone());
    let (workspace, config_name) = match &args.config {
        Some(path) => (tributary_local::runtime::load_workspace(path)?, path.display().to_string()),
        None => (tributary_local::runtime::demo_workspace(&data)?.0, "the demo workspace".to_string()),
    };
    let Some(source) = workspace.sources.iter().find(|s| s.id.as_str() == args.source) else {
        bail!("source {:?} is not in {config_name}", args.source);
    };
    if source.import.is_none() {
        bail!("source {:?} has no import mapping (`import:`) in {config_name}", args.source);
    }
    let key = format!("imports/{}/{name}", args.source);

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let platform = tributary_local::runtime::start(
            PlatformOptions {
                data_dir: args.data_dir.clone(),
                addr: "127.0.0.1:0".parse().context("loopback address")?,
                workspace,
            },
            crate::LogMetrics,
        )
        .await?;
        let result = follow(&data, &args.file, &key, meta.len(), args.json).await;
        platform.stop().await;
        result
    })
}

/// Copies the file in, then follows its import to the end and the events queue until it is empty.
async fn follow(data: &DataDir, file: &Path, key: &str, size: u64, json: bool) -> anyhow::Result<ExitCode> {
    let dest = data.objects().join(key);
    let dir = dest.parent().context("import path has a parent")?.to_path_buf();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let partial = dir.join(format!(".{}.partial", dest.file_name().and_then(|n| n.to_str()).unwrap_or("import")));
    let (from, to) = (file.to_path_buf(), partial.clone());
    tokio::task::spawn_blocking(move || std::fs::copy(&from, &to))
        .await?
        .with_context(|| format!("{}: copying into {}", file.display(), dir.display()))?;
    std::fs::rename(&partial, &dest).with_context(|| format!("moving the copy to {}", dest.display()))?;
    let etag = local_etag(&dest).with_context(|| format!("reading {}", dest.display()))?;
    let id = FileId { bucket: LOCAL_IMPORT_BUCKET.into(), key: key.to_string(), version: Some(format!("etag:{etag}")) };
    let source = key.split('/').nth(1).unwrap_or_default().to_string();
    let state_key = state_key(&source, &id);
    let table = SqliteTable::open(&data.tables(), PROFILES_TABLE).map_err(|e| anyhow::anyhow!("profile table: {e}"))?;

    let gzip = key.ends_with(".gz");
    let bar = if gzip { ProgressBar::new_spinner() } else { ProgressBar::new(size) };
    let template = if gzip {
        "{spinner} {bytes} read (decompressed) · {msg}"
    } else {
        "{spinner} [{bar:30}] {bytes}/{total_bytes} · {msg}"
    };
    bar.set_style(ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()));
    bar.set_message("waiting for the import to start");
    let started = Instant::now();
    let state = loop {
        let state = read_state(&table, &state_key).await?;
        match &state {
            None if started.elapsed() > START_WITHIN => {
                bar.abandon();
                bail!("the import of {} did not start within {}s", file.display(), START_WITHIN.as_secs());
            }
            None => {}
            Some(s) => {
                let secs = started.elapsed().as_secs_f64().max(0.001);
                bar.set_position(s.offset);
                bar.set_message(format!("{} rows · {:.0} rows/s", s.rows, s.rows as f64 / secs));
                if s.is_finished() {
                    break s.clone();
                }
            }
        }
        bar.tick();
        tokio::time::sleep(POLL).await;
    };
    // Every row applied: what the import queued has been taken by stitch.
    let events = SqliteQueue::open(&data.queues(), EVENTS_QUEUE, QueueOptions::default())
        .map_err(|e| anyhow::anyhow!("events queue: {e}"))?;
    loop {
        let left = events.approximate_len().await.map_err(|e| anyhow::anyhow!("events queue: {e}"))?;
        if left == 0 {
            break;
        }
        bar.set_message(format!("{} rows read · applying ({left} queue messages left)", state.rows));
        bar.tick();
        tokio::time::sleep(POLL).await;
    }
    bar.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    let reports = data.objects().join("import-reports").join(&source);
    let name = key.splitn(3, '/').nth(2).unwrap_or_default();
    let rejects = reports.join(format!("{name}.rejects.csv"));
    if json {
        let mut v = serde_json::to_value(&state)?;
        v["rejectsReport"] = Value::from(rejects.display().to_string());
        v["seconds"] = Value::from(elapsed);
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print_summary(&state, &rejects, elapsed);
    }
    Ok(if state.status == ImportStatus::Done { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn read_state(table: &SqliteTable, key: &tributary_core::ports::ItemKey) -> anyhow::Result<Option<ImportState>> {
    let item = table.get(key).await.map_err(|e| anyhow::anyhow!("import state: {e}"))?;
    Ok(item.and_then(|i| serde_json::from_value(Value::Object(i.attrs)).ok()))
}

fn print_summary(state: &ImportState, rejects: &Path, seconds: f64) {
    let status = match state.status {
        ImportStatus::Done => "done",
        ImportStatus::Failed => "failed",
        ImportStatus::Running => "running",
    };
    println!("import {status}: {} ({})", state.file.key, state.source_id);
    println!(
        "  rows {}  accepted {}  rejected {}  in {seconds:.1}s ({:.0} rows/s)",
        state.rows,
        state.accepted,
        state.rejected,
        state.rows as f64 / seconds.max(0.001)
    );
    for (reason, n) in &state.reasons {
        println!("    {reason}: {n}");
    }
    if state.continuations > 0 {
        println!("  continued {} times", state.continuations);
    }
    if let Some(e) = &state.error {
        println!("  error: {e}");
    }
    println!("  rejects report: {}", rejects.display());
}

#[derive(clap::Args)]
pub struct ImportsArgs {
    /// The source whose imports to list.
    #[arg(long)]
    source: String,
    /// Where queues, tables and objects are kept (the same as `tributary serve`'s).
    #[arg(long, default_value = ".tributary")]
    data_dir: PathBuf,
    /// At most this many, newest first.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// Print JSON lines (one import state per line).
    #[arg(long)]
    json: bool,
}

/// `tributary imports --source ID`: the source's imports in the local data directory, newest first.
pub fn list(args: ImportsArgs) -> anyhow::Result<ExitCode> {
    let data = DataDir(args.data_dir.clone());
    if !data.tables().exists() {
        bail!(
            "{}: no tables here (run `tributary serve` or `tributary import` with this --data-dir)",
            data.0.display()
        );
    }
    let table = SqliteTable::open(&data.tables(), PROFILES_TABLE).map_err(|e| anyhow::anyhow!("profile table: {e}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let states = runtime
        .block_on(tributary_core::import::source_states(&table, &args.source, args.limit))
        .map_err(|e| anyhow::anyhow!("import states: {e}"))?;
    if states.is_empty() && !args.json {
        println!("no imports for source {:?}", args.source);
    }
    for s in &states {
        if args.json {
            println!("{}", serde_json::to_string(s)?);
            continue;
        }
        let status = match s.status {
            ImportStatus::Done => "done",
            ImportStatus::Failed => "failed",
            ImportStatus::Running => "running",
        };
        let started = tributary_core::profile::read::rfc3339(s.started_at).unwrap_or_default();
        println!(
            "{started}  {status:<7}  rows {:>9}  accepted {:>9}  rejected {:>7}  {}",
            s.rows, s.accepted, s.rejected, s.file.key
        );
        if let Some(e) = &s.error {
            println!("    error: {e}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
