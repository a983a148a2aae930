//! `tributary audiences …`: audience tools on the local data directory of `tributary serve`.
//!
//! `tributary audiences preview FILE [--config WORKSPACE] [--data-dir DIR] [--at T] [--json]` evaluates one audience
//! definition (FILE, YAML or JSON, in the shape of an entry of the workspace file's `audiences:`) against every
//! root profile of the local profile table, at `--at` (default now), and prints how many profiles were evaluated,
//! how many are members and how many meet each condition. Nothing printed holds personal data: counts, and the
//! labels of the conditions, which name traits, events and purposes but no values.
//!
//! A definition is checked as the workspace would check it ([`parse_definition`]): its consent purposes and
//! destinations against `--config` (without it, a workspace with no purposes and no destinations).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tributary_core::audience::{AudienceConfig, AudienceSet, CompiledAudience};
use tributary_core::config::WorkspaceConfig;
use tributary_core::ports::{ItemKey, TableStore, ROOT_PROFILES};
use tributary_core::profile::layout::PROFILE_SK;
use tributary_core::profile::ProfileDoc;
use tributary_local::runtime::{load_workspace, DataDir, PROFILES_TABLE};
use tributary_local::sqlite_table::SqliteTable;

/// Profile keys read per page of the root-profile index.
const PAGE: usize = 500;

#[derive(Subcommand)]
pub enum AudiencesCommand {
    /// Evaluate one audience definition against the local profiles: profiles evaluated, audience size and, per
    /// condition, how many profiles meet it (no personal data is printed).
    Preview(PreviewArgs),
}

#[derive(Args)]
pub struct PreviewArgs {
    /// The audience definition (YAML or JSON): one entry of the workspace file's `audiences:` (id, name, rule, …).
    file: PathBuf,
    /// Workspace file: its consent purposes and destinations are what the definition may use.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The data directory of `tributary serve`.
    #[arg(long, default_value = ".tributary")]
    data_dir: PathBuf,
    /// Evaluate at this instant (RFC 3339) or the start of this UTC day (YYYY-MM-DD) instead of now.
    #[arg(long, value_parser = parse_at)]
    at: Option<OffsetDateTime>,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn run(command: AudiencesCommand) -> anyhow::Result<ExitCode> {
    match command {
        AudiencesCommand::Preview(args) => preview(&args),
    }
}

/// An RFC 3339 instant or the start of a UTC day.
fn parse_at(text: &str) -> Result<OffsetDateTime, String> {
    let text = text.trim();
    OffsetDateTime::parse(text, &Rfc3339)
        .or_else(|_| {
            let day = time::macros::format_description!("[year]-[month]-[day]");
            time::Date::parse(text, day).map(|d| d.midnight().assume_utc())
        })
        .map_err(|_| format!("expected an RFC 3339 timestamp or YYYY-MM-DD, got {text:?}"))
}

/// What a preview found: counts only.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Preview {
    /// Root profiles evaluated.
    evaluated: u64,
    /// Of those, members.
    size: u64,
    /// Per condition (definition order): its label and how many profiles meet it.
    conditions: Vec<(String, u64)>,
    /// Profile documents listed by the index that could not be read (skipped).
    unreadable: u64,
}

fn preview(args: &PreviewArgs) -> anyhow::Result<ExitCode> {
    let workspace = match &args.config {
        Some(path) => load_workspace(path)?,
        None => tributary_core::config::load("workspace: audience-preview\n")
            .map_err(|_| anyhow::anyhow!("the default workspace does not load"))?,
    };
    let text = std::fs::read_to_string(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let set = match parse_definition(&text, &workspace) {
        Ok(set) => set,
        Err(problems) => {
            let file = args.file.display();
            for p in &problems {
                match p.location {
                    Some((line, column)) => eprintln!("{file}:{line}:{column}: {}", p.message),
                    None => eprintln!("{file}: {}", p.message),
                }
            }
            eprintln!("{file}: {} problem(s)", problems.len());
            if args.config.is_none() {
                eprintln!("{file}: checked without a workspace (no consent purposes, no destinations): pass --config");
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    let audience = set.audiences().first().context("the definition compiled to no audience")?;

    let tables = DataDir(args.data_dir.clone()).tables();
    // Opening would create an empty database: say instead that the directory holds none.
    if !tables.is_file() {
        anyhow::bail!(
            "{} does not exist: no profile table in {} (pass --data-dir, the data directory of `tributary serve`)",
            tables.display(),
            args.data_dir.display()
        );
    }
    let table = SqliteTable::open(&tables, PROFILES_TABLE).map_err(|e| anyhow::anyhow!("{}: {e}", tables.display()))?;
    let at = args.at.unwrap_or_else(OffsetDateTime::now_utc);
    let now_ms = i64::try_from(at.unix_timestamp_nanos() / 1_000_000).context("--at is out of range")?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let result = runtime
        .block_on(evaluate(&table, audience, now_ms))
        .with_context(|| format!("reading the profiles in {}", tables.display()))?;
    let at_text = at.to_offset(time::UtcOffset::UTC).format(&Rfc3339).unwrap_or_default();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&to_json(audience, &at_text, &result))?);
    } else {
        print!("{}", render(audience, &at_text, &result));
    }
    Ok(ExitCode::SUCCESS)
}

/// Evaluates `audience` on every root profile: segment 0 of 1 of the root-profile index, page by page, each
/// document read whole. A document merged into another (which the index should not list) is skipped.
async fn evaluate<T: TableStore>(table: &T, audience: &CompiledAudience, now_ms: i64) -> anyhow::Result<Preview> {
    let mut preview = Preview {
        evaluated: 0,
        size: 0,
        conditions: audience.labels().iter().map(|l| (l.clone(), 0)).collect(),
        unreadable: 0,
    };
    let mut cursor: Option<String> = None;
    loop {
        let page = table.scan_index(&ROOT_PROFILES, 0, 1, cursor.as_deref(), PAGE).await?;
        for key in page.keys.iter().filter(|k| is_profile(k)) {
            let Some(item) = table.get(key).await? else {
                // Deleted (or expired) since the index listed it.
                continue;
            };
            let Ok(doc) = ProfileDoc::from_attrs(&item.attrs) else {
                preview.unreadable += 1;
                continue;
            };
            if doc.merged_into.is_some() {
                continue;
            }
            preview.evaluated += 1;
            if audience.evaluate(&doc, now_ms).member {
                preview.size += 1;
            }
            for ((_, met), holds) in preview.conditions.iter_mut().zip(audience.evaluate_conditions(&doc, now_ms)) {
                *met += u64::from(holds);
            }
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => return Ok(preview),
        }
    }
}

/// A profile document's key: `p#<id>` / `profile`.
fn is_profile(key: &ItemKey) -> bool {
    key.sk == PROFILE_SK && key.pk.starts_with("p#")
}

fn to_json(audience: &CompiledAudience, at: &str, p: &Preview) -> Value {
    json!({
        "audience": audience.id(),
        "name": audience.name(),
        "at": at,
        "evaluated": p.evaluated,
        "size": p.size,
        "conditions": p.conditions.iter().map(|(label, met)| json!({ "label": label, "met": met })).collect::<Vec<_>>(),
        "unreadable": p.unreadable,
    })
}

/// Labels and names come from the definition file: no control character reaches the terminal.
fn printable(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

fn percent(n: u64, of: u64) -> String {
    if of == 0 {
        String::new()
    } else {
        format!(" ({:.1}%)", n as f64 * 100.0 / of as f64)
    }
}

fn render(audience: &CompiledAudience, at: &str, p: &Preview) -> String {
    let name = audience.name().map(|n| format!(" ({})", printable(n))).unwrap_or_default();
    let mut out = format!("audience {}{name} at {at}\n", audience.id());
    out.push_str(&format!("profiles evaluated: {}\n", p.evaluated));
    out.push_str(&format!("audience size: {}{}\n", p.size, percent(p.size, p.evaluated)));
    out.push_str("conditions (profiles meeting each):\n");
    let width = p.conditions.iter().map(|(_, met)| met.to_string().len()).max().unwrap_or(1);
    for (i, (label, met)) in p.conditions.iter().enumerate() {
        out.push_str(&format!("  {:>2}. {met:>width$}  {}{}\n", i + 1, printable(label), percent(*met, p.evaluated)));
    }
    if p.unreadable > 0 {
        out.push_str(&format!("unreadable profile documents skipped: {}\n", p.unreadable));
    }
    out
}

/// A problem in the definition file, at a line and column of it when the YAML parser gave one.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Problem {
    location: Option<(usize, usize)>,
    /// `<path of the rule>: message`, the path relative to the definition (`rule.all[1]`).
    message: String,
}

/// Reads and checks one audience definition: its shape (with the line and column of a problem), its rules, and
/// the consent purposes and destinations it names against `workspace`, as `tributary config check` would. The
/// definition compiled, alone in its set.
fn parse_definition(definition: &str, workspace: &WorkspaceConfig) -> Result<AudienceSet, Vec<Problem>> {
    let definition = definition.trim_start_matches('\u{feff}');
    let blank = |line: &str| {
        let line = line.trim();
        line.is_empty() || line.starts_with('#') || line == "---"
    };
    if definition.lines().all(blank) {
        return Err(vec![Problem { location: None, message: "no audience definition (the file is empty)".into() }]);
    }
    let config: AudienceConfig = serde_yaml_ng::from_str(definition).map_err(|e| {
        let location = e.location().map(|l| (l.line(), l.column()));
        let mut message = e.to_string();
        // The location is printed in front.
        if let Some((line, column)) = location {
            message = message.replace(&format!(" at line {line} column {column}"), "");
        }
        vec![Problem { location, message }]
    })?;
    let (set, mut problems) = match AudienceSet::compile(std::slice::from_ref(&config), &workspace.consent) {
        Ok(set) => (Some(set), Vec::new()),
        Err(errors) => (
            None,
            errors
                .iter()
                .map(|e| {
                    let text = e.to_string();
                    let message = text.strip_prefix("audiences[0].").unwrap_or(&text).to_string();
                    Problem { location: None, message }
                })
                .collect(),
        ),
    };
    for (k, d) in config.destinations.iter().enumerate() {
        if !workspace.destinations.iter().any(|x| &x.id == d) {
            problems.push(Problem {
                location: None,
                message: format!("destinations[{k}]: no destination {d:?} in the workspace"),
            });
        }
    }
    match set {
        Some(set) if problems.is_empty() => Ok(set),
        _ => Err(problems),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace(extra: &str) -> WorkspaceConfig {
        tributary_core::config::load(&format!("workspace: t\n{extra}")).expect("workspace")
    }

    #[test]
    fn a_definition_parses_as_a_workspace_entry() {
        let ws = workspace("consent:\n  purposes: [{ id: advertising, aliases: [\"Werbung ✓\", \"😀\"] }]\n");
        let yaml = "---\n# EU buyers\nid: eu\nname: EU\nrule:\n  all:\n    - { trait: country, equals: DE }\n    - { consent: advertising }\n";
        let set = parse_definition(yaml, &ws).expect("parses");
        assert_eq!(set.audiences()[0].id(), "eu");
        let json = r#"{
  "id": "eu",
  "rule": { "any": [ { "trait": "country", "equals": "DE" }, { "has_identifier": "email" } ] }
}"#;
        assert_eq!(parse_definition(json, &ws).expect("json parses").audiences()[0].id(), "eu");
    }

    #[test]
    fn problems_point_into_the_file() {
        let ws = workspace("");
        let yaml =
            "id: eu\nrule:\n  all:\n    - { trait: country, equals: DE }\n    - { trait: country, matches: DE }\n";
        let problems = parse_definition(yaml, &ws).expect_err("unknown operator");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].location.map(|l| l.0), Some(5), "{problems:?}");
        assert!(problems[0].message.starts_with("rule.all[1]: unknown field `matches`"), "{problems:?}");
        assert!(!problems[0].message.contains("line"), "{problems:?}");

        let problems = parse_definition("id: eu\nrule: { consent: ads }\n", &ws).expect_err("unknown purpose");
        assert_eq!(
            problems,
            vec![Problem {
                location: None,
                message: "rule: unknown consent purpose \"ads\" (not in consent.purposes)".into()
            }]
        );

        let problems =
            parse_definition("id: eu\nrule:\n  all:\n  - { trait: a, exists: true\n", &ws).expect_err("yaml");
        assert_eq!(problems.len(), 1, "{problems:?}");
        let (line, _) = problems[0].location.expect("a syntax error has a location");
        assert!((4..=5).contains(&line), "{problems:?}");
    }
}
