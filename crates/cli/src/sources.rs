//! `tributary sources …`: per-source governance reports, read from the local data directory of `tributary serve`.
//!
//! `tributary sources stats ID [--since T] [--until T] [--data-dir DIR] [--config FILE] [--json]` prints, per event
//! name, how many of the source's events governance accepted, stripped of properties, quarantined, acted on for PII
//! and dropped over the window (the counters ingest keeps in the profile table, see
//! `tributary_core::governance::stats`), then the totals. `--json` prints the body `GET /v1/sources/{id}/stats`
//! answers.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use time::OffsetDateTime;
use tributary_core::governance::stats::{self, Counts, Report, Window, STORED_COUNTERS};
use tributary_local::runtime::{load_workspace, DataDir, PROFILES_TABLE};
use tributary_local::sqlite_table::SqliteTable;

#[derive(Subcommand)]
pub enum SourcesCommand {
    /// Per event name: events accepted, that lost properties, quarantined, with PII acted on, and dropped, over a
    /// window (counters are kept per hour: every hour overlapping the window counts).
    Stats {
        /// The source id.
        id: String,
        /// Start of the window, RFC 3339 (default: 24 hours before --until).
        #[arg(long)]
        since: Option<String>,
        /// End of the window, RFC 3339, exclusive (default: now).
        #[arg(long)]
        until: Option<String>,
        /// The data directory of `tributary serve`.
        #[arg(long, default_value = ".tributary")]
        data_dir: PathBuf,
        /// Workspace file; when given, the id must be one of its sources.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print the report as JSON (the body of `GET /v1/sources/{id}/stats`).
        #[arg(long)]
        json: bool,
    },
}

pub fn run(command: SourcesCommand) -> anyhow::Result<ExitCode> {
    match command {
        SourcesCommand::Stats { id, since, until, data_dir, config, json } => {
            let report = stats_report(&id, since.as_deref(), until.as_deref(), &data_dir, config.as_deref())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", render(&report));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn stats_report(
    id: &str,
    since: Option<&str>,
    until: Option<&str>,
    data_dir: &Path,
    config: Option<&Path>,
) -> anyhow::Result<Report> {
    if let Some(path) = config {
        let workspace = load_workspace(path)?;
        if !workspace.sources.iter().any(|s| s.id.as_str() == id) {
            anyhow::bail!("{}: no source has the id {id:?}", path.display());
        }
    }
    let window = Window::parse(since, until, OffsetDateTime::now_utc())?;
    let tables = DataDir(data_dir.to_path_buf()).tables();
    // Opening would create an empty database: say instead that the directory holds none.
    if !tables.exists() {
        anyhow::bail!(
            "{} does not exist: is {} the data directory of `tributary serve`? (--data-dir)",
            tables.display(),
            data_dir.display()
        );
    }
    let table = SqliteTable::open(&tables, PROFILES_TABLE).map_err(|e| anyhow::anyhow!("{}: {e}", tables.display()))?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime
        .block_on(stats::read(&table, id, &window))
        .map_err(anyhow::Error::from)
        .with_context(|| format!("reading the counters of source {id:?} from {}", tables.display()))
}

/// Event names come from clients: no control character reaches the terminal.
fn printable(name: &str) -> String {
    name.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

/// The report as an aligned table: a heading line, one row per event name, a total row.
fn render(report: &Report) -> String {
    let names: Vec<String> = report.events.iter().map(|e| printable(&e.name)).collect();
    let width = names.iter().map(|n| n.chars().count()).chain(["name".len(), "total".len()]).max().unwrap_or(5);
    let row = |name: &str, counts: &Counts| {
        let mut line = format!("{name:<width$}");
        // Every stored counter, `suppressed` (events of erased people dropped at ingest) included.
        for (header, value) in STORED_COUNTERS.iter().zip(counts.stored_values()) {
            line.push_str(&format!("  {value:>w$}", w = header.len()));
        }
        line.push('\n');
        line
    };
    let mut out =
        format!("source {}, {} to {} (whole hours overlapping it)\n", report.source, report.since, report.until);
    out.push_str(&format!("{:<width$}", "name"));
    for header in STORED_COUNTERS {
        out.push_str(&format!("  {header}"));
    }
    out.push('\n');
    for (name, e) in names.iter().zip(&report.events) {
        out.push_str(&row(name, &e.counts));
    }
    if report.events.is_empty() {
        out.push_str("(no events in this window)\n");
    }
    out.push_str(&row("total", &report.totals));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_core::governance::stats::EventStats;

    #[test]
    fn renders_an_aligned_table_with_totals() {
        let report = Report {
            source: "web".into(),
            since: "2025-03-09T12:30:00Z".into(),
            until: "2025-03-10T12:30:00Z".into(),
            events: vec![
                EventStats { name: "(identify)".into(), counts: Counts { accepted: 2, ..Counts::default() } },
                EventStats {
                    name: "Order\u{1b}[31mCompleted".into(),
                    counts: Counts {
                        accepted: 10,
                        quarantined: 3,
                        pii_actioned: 1,
                        suppressed: 2,
                        ..Counts::default()
                    },
                },
            ],
            totals: Counts { accepted: 12, quarantined: 3, pii_actioned: 1, suppressed: 2, ..Counts::default() },
        };
        let text = render(&report);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "source web, 2025-03-09T12:30:00Z to 2025-03-10T12:30:00Z (whole hours overlapping it)");
        assert_eq!(
            lines[1],
            "name                 accepted  dropped_properties  quarantined  pii_actioned  dropped  suppressed"
        );
        assert_eq!(
            lines[2],
            "(identify)                  2                   0            0             0        0           0"
        );
        assert_eq!(
            lines[3],
            "Order?[31mCompleted        10                   0            3             1        0           2"
        );
        assert_eq!(
            lines[4],
            "total                      12                   0            3             1        0           2"
        );
        assert_eq!(lines.len(), 5);

        let empty = Report { events: Vec::new(), totals: Counts::default(), ..report };
        let text = render(&empty);
        assert!(text.contains("(no events in this window)\ntotal"), "{text}");
    }

    #[test]
    fn a_missing_data_dir_or_unknown_source_is_an_error() {
        let dir = std::env::temp_dir().join(format!("tributary-sources-test-{}", std::process::id()));
        let e = stats_report("web", None, None, &dir, None).expect_err("no data dir");
        assert!(e.to_string().contains("does not exist"), "{e}");
        assert!(!dir.exists(), "nothing may be created");
        let e = stats_report("web", Some("yesterday"), None, &dir, None).expect_err("bad time");
        assert!(e.to_string().contains("RFC 3339"), "{e}");
    }
}
