//! `tributary redrive`: the deliveries given up on, in the delivery DLQ — listed (`--dry-run`) or moved back to the
//! delivery queue, for one destination and from a point in time. Locally it works on the data dir of
//! `tributary serve` (safely beside a running server); with `--queue-url` and `--dlq-url` (a build with the `aws`
//! feature) on the SQS queues of a deployed stack.
//!
//! Nothing printed holds event content: destination, reason code, attempts, times, messageIds.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tributary_core::ports::Queue;
use tributary_deliver::redrive::{self, Filter, Report};
use tributary_local::runtime::{DataDir, DELIVERY_DLQ, DELIVERY_MAX_RECEIVE_COUNT, DELIVERY_QUEUE};
use tributary_local::sqlite_queue::{QueueOptions, SqliteQueue};

#[derive(Args)]
pub struct RedriveArgs {
    /// Only deliveries to this destination (dead letters name theirs; a raw envelope is re-sent to this one only).
    #[arg(long)]
    destination: Option<String>,
    /// Only deliveries given up on at or after this instant (RFC 3339) or UTC day (YYYY-MM-DD).
    #[arg(long, value_parser = parse_since)]
    since: Option<i64>,
    /// List what would be moved, move nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// The data dir of `tributary serve`.
    #[arg(long, default_value = ".tributary")]
    data_dir: PathBuf,
    /// The delivery queue of a deployed stack (with --dlq-url; needs a build with `--features aws`).
    #[arg(long, requires = "dlq_url")]
    queue_url: Option<String>,
    /// The delivery DLQ of a deployed stack.
    #[arg(long, requires = "queue_url")]
    dlq_url: Option<String>,
}

/// Epoch milliseconds of an RFC 3339 instant or the start of a UTC day.
fn parse_since(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let t = OffsetDateTime::parse(text, &Rfc3339).or_else(|_| {
        let day = time::macros::format_description!("[year]-[month]-[day]");
        time::Date::parse(text, day).map(|d| d.midnight().assume_utc())
    });
    t.map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .map_err(|_| format!("expected YYYY-MM-DD or an RFC 3339 timestamp, got {text:?}"))
}

pub fn run(args: RedriveArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let filter = Filter { destination: args.destination.clone(), since_ms: args.since };
        let report = match (&args.queue_url, &args.dlq_url) {
            (Some(queue), Some(dlq)) => on_aws(queue, dlq, &filter, args.dry_run).await?,
            _ => {
                let data = DataDir(args.data_dir.clone());
                if !data.queues().is_file() {
                    anyhow::bail!(
                        "{}: no queues here (pass --data-dir, the one `tributary serve` uses)",
                        data.queues().display()
                    );
                }
                let open = |name: &str, options: QueueOptions| {
                    SqliteQueue::open(&data.queues(), name, options)
                        .map_err(|e| anyhow::anyhow!("{}: queue {name}: {e}", data.queues().display()))
                };
                let queue = open(
                    DELIVERY_QUEUE,
                    QueueOptions { dead_letter: Some((DELIVERY_DLQ.to_string(), DELIVERY_MAX_RECEIVE_COUNT)) },
                )?;
                let dlq = open(DELIVERY_DLQ, QueueOptions::default())?;
                sweep(&dlq, &queue, &filter, args.dry_run).await?
            }
        };
        print(&report, args.dry_run, args.json)?;
        Ok(ExitCode::SUCCESS)
    })
}

async fn sweep<Q: Queue>(dlq: &Q, queue: &Q, filter: &Filter, dry_run: bool) -> anyhow::Result<Report> {
    redrive::run(dlq, queue, filter, dry_run).await.map_err(|e| anyhow::anyhow!("redrive stopped: {e}"))
}

#[cfg(feature = "aws")]
async fn on_aws(queue: &str, dlq: &str, filter: &Filter, dry_run: bool) -> anyhow::Result<Report> {
    let clients = tributary_aws::AwsClients::from_env().await;
    sweep(&clients.sqs_queue(dlq), &clients.sqs_queue(queue), filter, dry_run).await
}

#[cfg(not(feature = "aws"))]
async fn on_aws(_queue: &str, _dlq: &str, _filter: &Filter, _dry_run: bool) -> anyhow::Result<Report> {
    anyhow::bail!("this build has no AWS support: build with `cargo build -p tributary-cli --features aws`")
}

fn print(report: &Report, dry_run: bool, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    for e in report.entries.iter().filter(|e| e.selected) {
        let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(e.at_ms) * 1_000_000)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_default();
        println!(
            "{at}  {:<20} {:<28} attempts={:<3} events={} {}",
            e.destination.as_deref().unwrap_or("(any)"),
            e.reason.as_deref().unwrap_or("(moved by the queue)"),
            e.attempts.map(|a| a.to_string()).unwrap_or_default(),
            e.events,
            e.message_ids.join(","),
        );
    }
    let verb = if dry_run { "would move" } else { "moved" };
    println!(
        "{verb} {} message(s); {} left in the DLQ; {} unreadable",
        if dry_run { report.entries.iter().filter(|e| e.selected).count() } else { report.moved },
        report.kept.saturating_sub(if dry_run { report.entries.iter().filter(|e| e.selected).count() } else { 0 }),
        report.unreadable
    );
    Ok(())
}
