//! `tributary quarantine list|show|redrive`: the events a source's tracking plan held back in the local data dir
//! (`<data-dir>/objects/quarantine/<source>/<day>/<hash>.json`), and their redrive into the events queue once the
//! plan accepts them. Works beside a running `tributary serve` (the queue file is shared safely).
//!
//! `list` never prints event values: days, message-id hashes, violation kinds and paths, plan versions. `show`
//! prints one record in full, for the operator who asks for it (the event in it was minimized and PII-processed by
//! ingest before it was held).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::json;
use tributary_core::config::{SourceConfig, WorkspaceConfig};
use tributary_core::governance::policy::Governance;
use tributary_core::governance::Violation;
use tributary_local::dir_store::DirStore;
use tributary_local::quarantine::{self as held_events, HeldKey, ReadError, RedriveOptions, Since};
use tributary_local::runtime::{DataDir, EVENTS_DLQ, EVENTS_QUEUE, MAX_RECEIVE_COUNT};
use tributary_local::sqlite_queue::{QueueOptions, SqliteQueue};

/// Hex digits of a message hash shown by `list` (enough to be unique in practice, and accepted by `show`).
const SHORT_HASH: usize = 16;

#[derive(Subcommand)]
pub enum QuarantineCommand {
    /// List a source's held events: day, message-id hash, violations, plan version (never event values).
    List {
        #[command(flatten)]
        scope: Scope,
        /// Print a JSON array of the records' metadata (without the events) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print one held event's record in full (JSON), found by a prefix of its message-id hash.
    Show {
        /// The first hex digits of the message-id hash, as `list` prints them.
        hash_prefix: String,
        #[command(flatten)]
        scope: Scope,
    },
    /// Re-check held events against the source's current plan: queue those that pass, keep those that still
    /// violate it, delete those its policy drops.
    Redrive {
        #[command(flatten)]
        scope: Scope,
    },
}

#[derive(Args)]
pub struct Scope {
    /// The source whose held events to work on.
    #[arg(long)]
    source: String,
    /// Only events received from this day (YYYY-MM-DD, UTC) or instant (RFC 3339) on.
    #[arg(long, value_parser = parse_since)]
    since: Option<Since>,
    /// The workspace file `tributary serve` runs with; without it, the demo workspace of the data dir.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The data dir of `tributary serve`.
    #[arg(long, default_value = ".tributary")]
    data_dir: PathBuf,
}

fn parse_since(text: &str) -> Result<Since, String> {
    Since::parse(text).ok_or_else(|| format!("expected YYYY-MM-DD or an RFC 3339 timestamp, got {text:?}"))
}

pub fn run(command: QuarantineCommand) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        match command {
            QuarantineCommand::List { scope, json } => list(&scope, json).await,
            QuarantineCommand::Show { hash_prefix, scope } => show(&scope, &hash_prefix).await,
            QuarantineCommand::Redrive { scope } => redrive(&scope).await,
        }
    })
}

/// The checked scope: the source's configuration and the object store of the data dir.
struct Context {
    source: SourceConfig,
    /// Where the workspace came from, for messages (`FILE` or `the demo workspace of DIR`).
    origin: String,
    data: DataDir,
    store: DirStore,
}

impl Context {
    fn open(scope: &Scope) -> anyhow::Result<Context> {
        let data = DataDir(scope.data_dir.clone());
        if !data.0.is_dir() {
            anyhow::bail!(
                "data dir {} does not exist (pass --data-dir, the one `tributary serve` uses)",
                data.0.display()
            );
        }
        let (workspace, origin) = workspace(scope, &data)?;
        let Some(source) = workspace.sources.iter().find(|s| s.id.as_str() == scope.source) else {
            let known: Vec<&str> = workspace.sources.iter().map(|s| s.id.as_str()).collect();
            anyhow::bail!("{origin}: no source {:?} (its sources: {})", scope.source, known.join(", "));
        };
        let store = DirStore::open(&data.objects())
            .map_err(|e| anyhow::anyhow!("{}: cannot open the object store: {e}", data.objects().display()))?;
        Ok(Context { source: source.clone(), origin, data, store })
    }

    fn source_id(&self) -> &str {
        self.source.id.as_str()
    }

    /// The file of an object key, for messages.
    fn path_of(&self, key: &str) -> PathBuf {
        self.data.objects().join(key)
    }

    /// The source's held events (from `since`'s day on); keys that are not quarantine keys are reported.
    async fn held(&self, since: Option<Since>) -> anyhow::Result<Vec<HeldKey>> {
        let listing = held_events::list_held(&self.store, self.source_id(), since)
            .await
            .map_err(|e| anyhow::anyhow!("{}: cannot list held events: {e}", self.quarantine_dir().display()))?;
        self.warn_ignored(&listing.foreign);
        Ok(listing.held)
    }

    fn warn_ignored(&self, keys: &[String]) {
        for key in keys {
            eprintln!("warning: {}: not a quarantine record name; ignored", self.path_of(key).display());
        }
    }

    fn quarantine_dir(&self) -> PathBuf {
        self.path_of(tributary_core::governance::quarantine::prefix(self.source_id()).trim_end_matches('/'))
    }
}

/// The workspace of `--config`, or the demo workspace `serve` created in the data dir.
fn workspace(scope: &Scope, data: &DataDir) -> anyhow::Result<(WorkspaceConfig, String)> {
    if let Some(path) = &scope.config {
        let workspace = tributary_local::runtime::load_workspace(path)?;
        return Ok((workspace, path.display().to_string()));
    }
    // Without the keys file this data dir was served with a workspace file; making up new demo keys would not help.
    let keys = data.0.join("demo-keys.json");
    if !keys.is_file() {
        anyhow::bail!(
            "{}: no demo workspace in this data dir; pass --config FILE, the workspace `tributary serve` runs with",
            keys.display()
        );
    }
    let (workspace, _) = tributary_local::runtime::demo_workspace(data)?;
    Ok((workspace, format!("the demo workspace of {}", data.0.display())))
}

async fn list(scope: &Scope, as_json: bool) -> anyhow::Result<ExitCode> {
    let ctx = Context::open(scope)?;
    let keys = ctx.held(scope.since).await?;
    let mut problems = 0;
    let mut rows = Vec::new();
    for key in &keys {
        match held_events::read_record(&ctx.store, ctx.source_id(), key).await {
            Ok(record) if scope.since.is_none_or(|s| s.admits(&record)) => rows.push((key, record)),
            Ok(_) | Err(ReadError::Gone) => {}
            Err(e) => {
                eprintln!("error: {}: {e}", ctx.path_of(&key.key).display());
                problems += 1;
            }
        }
    }
    if as_json {
        let out: Vec<_> = rows
            .iter()
            .map(|(key, r)| {
                json!({
                    "key": key.key,
                    "day": key.day.to_string(),
                    "messageHash": key.hash,
                    "sourceId": r.source_id,
                    "receivedAt": r.received_at,
                    "planVersion": r.plan_version,
                    "violations": r.violations,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for (key, r) in &rows {
            println!(
                "{}  {}  {}  plan {}",
                key.day,
                short(&key.hash),
                violations(&r.violations),
                printable(&r.plan_version)
            );
        }
        let since = scope.since.map(|s| format!(" since {s}")).unwrap_or_default();
        let unreadable = if problems == 0 { String::new() } else { format!(", {problems} unreadable (see above)") };
        println!("{} held event(s) of source {}{since}{unreadable}", rows.len(), ctx.source_id());
    }
    Ok(exit(problems))
}

async fn show(scope: &Scope, hash_prefix: &str) -> anyhow::Result<ExitCode> {
    let prefix = hash_prefix.trim().to_ascii_lowercase();
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        anyhow::bail!("{hash_prefix:?} is not a message-id hash prefix (hex digits, as `quarantine list` prints)");
    }
    let ctx = Context::open(scope)?;
    let keys = ctx.held(scope.since).await?;
    let matches: Vec<&HeldKey> = keys.iter().filter(|k| k.hash.starts_with(&prefix)).collect();
    let key = match matches.as_slice() {
        [] => anyhow::bail!("no held event of source {} has a message-id hash starting with {prefix}", ctx.source_id()),
        [one] => *one,
        many => {
            let shown: Vec<String> = many.iter().map(|k| format!("{} {}", k.day, short(&k.hash))).collect();
            anyhow::bail!("{prefix} matches {} held events; give more digits:\n  {}", many.len(), shown.join("\n  "))
        }
    };
    let record = held_events::read_record(&ctx.store, ctx.source_id(), key)
        .await
        .map_err(|e| anyhow::anyhow!("{}: {e}", ctx.path_of(&key.key).display()))?;
    println!("{}", serde_json::to_string_pretty(&record)?);
    Ok(ExitCode::SUCCESS)
}

async fn redrive(scope: &Scope) -> anyhow::Result<ExitCode> {
    let ctx = Context::open(scope)?;
    if !ctx.source.enabled {
        anyhow::bail!("{}: source {} is disabled; enable it before redriving its events", ctx.origin, ctx.source_id());
    }
    let governance = Governance::new(ctx.source.tracking_plan.as_ref(), ctx.source.pii.as_ref())
        .map_err(|e| anyhow::anyhow!("{}: source {}: {e}", ctx.origin, ctx.source_id()))?;
    let queues = ctx.data.queues();
    let options = QueueOptions { dead_letter: Some((EVENTS_DLQ.to_string(), MAX_RECEIVE_COUNT)) };
    let queue = SqliteQueue::open(&queues, EVENTS_QUEUE, options)
        .map_err(|e| anyhow::anyhow!("{}: cannot open the events queue: {e}", queues.display()))?;
    let plan = governance.plan_version().map_or_else(|| "no tracking plan".to_string(), |v| format!("plan {v}"));
    println!("redriving held events of source {} against {} ({})", ctx.source_id(), printable(&plan), ctx.origin);

    let report =
        held_events::redrive(&ctx.store, &queue, ctx.source_id(), &governance, scope.since, &RedriveOptions::default())
            .await
            .with_context(|| format!("{}: cannot list held events", ctx.quarantine_dir().display()))?;
    ctx.warn_ignored(&report.ignored);
    for s in &report.still_held {
        println!(
            "still violates: {}  {}  {}  plan {}",
            s.held.day,
            short(&s.held.hash),
            violations(&s.violations),
            printable(&s.plan_version)
        );
    }
    for (held, reason) in &report.dropped {
        println!("dropped: {}  {}  ({reason})", held.day, short(&held.hash));
    }
    for (key, why) in &report.errors {
        eprintln!("error: {}: {why}", ctx.path_of(key).display());
    }
    println!(
        "{} redriven, {} still held, {} dropped{}",
        report.redriven,
        report.still_held.len(),
        report.dropped.len(),
        if report.errors.is_empty() { String::new() } else { format!(", {} error(s)", report.errors.len()) }
    );
    Ok(exit(report.errors.len()))
}

fn exit(problems: usize) -> ExitCode {
    if problems == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn short(hash: &str) -> &str {
    hash.get(..SHORT_HASH).unwrap_or(hash)
}

/// `kind /path, kind /path`: violation types and JSON pointers, never values.
fn violations(list: &[Violation]) -> String {
    if list.is_empty() {
        return "no violations".into();
    }
    list.iter().map(|v| format!("{} {}", v.kind.as_str(), printable(&v.path))).collect::<Vec<_>>().join(", ")
}

/// Control characters escaped, so a property name or plan version cannot drive the terminal.
fn printable(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_output_helpers_show_no_values_and_no_control_characters() {
        use tributary_core::governance::ViolationKind;
        let v = vec![
            Violation { kind: ViolationKind::UnplannedEvent, path: "/event".into() },
            Violation { kind: ViolationKind::WrongType, path: "/properties/to\u{1b}[2J".into() },
        ];
        assert_eq!(violations(&v), "unplanned_event /event, wrong_type /properties/to\\u{1b}[2J");
        assert_eq!(violations(&[]), "no violations");
        assert_eq!(short("0123456789abcdef0123"), "0123456789abcdef");
        assert_eq!(short("abc"), "abc");
    }

    #[test]
    fn since_is_a_day_or_an_instant() {
        assert!(parse_since("2025-03-10").is_ok());
        assert!(parse_since("2025-03-10T12:00:00Z").is_ok());
        assert!(parse_since("last week").unwrap_err().contains("YYYY-MM-DD"));
    }
}
