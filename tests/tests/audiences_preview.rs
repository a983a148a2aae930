//! `tributary audiences preview`: a definition evaluated against a data dir whose profile table is seeded directly
//! (root profiles as stitch writes them, with the `root` index attribute, plus one merged profile), printed as
//! JSON and as text, at two instants; and the errors for definitions that do not parse or check and for a data dir
//! with no profile table.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::{json, Value};
use tributary_core::audience::{counter_key, EventCounters, DAY_MS};
use tributary_core::config::DataPartyClass;
use tributary_core::ports::{Condition, Item, TableStore, WriteOp, ROOT_PROFILES};
use tributary_core::profile::layout::profile_key;
use tributary_core::profile::{ConsentEntry, ProfileDoc, Stamp, TraitEntry};
use tributary_local::runtime::{DataDir, PROFILES_TABLE};
use tributary_local::sqlite_table::SqliteTable;
use tributary_tests::support::tributary_bin;

/// 2025-03-10T12:00:00Z, the instant the preview is run at.
const AT: &str = "2025-03-10T12:00:00Z";
const AT_MS: i64 = 1_741_608_000_000;
const ORDER: &str = "Order Completed";

const WORKSPACE: &str =
    "workspace: preview-tests\nconsent:\n  purposes:\n    - id: advertising\n      aliases: [Advertising]\n";

const DEFINITION: &str = "\
id: eu-buyers
name: EU buyers
rule:
  all:
    - { trait: country, in: [DE, FR] }
    - { performed: Order Completed, at_least: 2, in_last_days: 30 }
    - any:
        - { consent: advertising }
        - { has_identifier: email }
";

fn stamp() -> Stamp {
    Stamp { ts: AT_MS - DAY_MS, received: AT_MS - DAY_MS, source: "web".into(), message_id: "m".into() }
}

/// A root profile with a country, orders on the given days before the preview's day, consent for advertising
/// (granted or not, or none) and email identifiers.
fn profile(country: &str, order_days_ago: &[i64], advertising: Option<bool>, emails: u32) -> ProfileDoc {
    let mut doc = ProfileDoc { created_at: AT_MS - 90 * DAY_MS, ..ProfileDoc::default() };
    doc.traits.insert(
        "country".into(),
        TraitEntry { value: json!(country), at: stamp(), class: DataPartyClass::FirstParty, set_once: false },
    );
    doc.traits.insert(
        "plan".into(),
        TraitEntry { value: json!("pro"), at: stamp(), class: DataPartyClass::FirstParty, set_once: false },
    );
    if let Some(granted) = advertising {
        doc.consent.insert("advertising".into(), ConsentEntry { granted, at: stamp() });
    }
    if emails > 0 {
        doc.counts.insert("email".into(), emails);
    }
    doc.counts.insert("anonymous_id".into(), 1);
    let key = counter_key(ORDER, &BTreeMap::new());
    let today = AT_MS.div_euclid(DAY_MS);
    let mut days: Vec<i64> = order_days_ago.iter().map(|ago| today - ago).collect();
    days.sort_unstable();
    let mut counters = EventCounters::new();
    for day in days {
        assert!(counters.record(&key, day, 365, 100));
    }
    doc.counters = counters;
    doc.events = order_days_ago.len() as u64;
    doc
}

/// Writes the profile document as stitch does: its attributes plus `root` (the root-profile index) when `root`.
async fn put(table: &SqliteTable, id: &str, doc: &ProfileDoc, root: bool) {
    let mut attrs = doc.to_attrs();
    if root {
        attrs.insert(ROOT_PROFILES.attribute.into(), Value::String(id.into()));
    }
    let item = Item { key: profile_key(id), attrs, version: 1, expires_at: None };
    table.write(WriteOp::Put { item, condition: Condition::None }).await.expect("seed the profile table");
}

/// The data dir: four root profiles, one merged profile and a document outside the index.
///
/// | profile | country | orders (days ago) | advertising | emails | member at AT | member a day later |
/// |---|---|---|---|---|---|---|
/// | p1 | DE | 1, 1, 5 | granted | 1 | yes | yes |
/// | p2 | FR | 40, 2 | refused | 1 | no (1 order in 30 days) | no |
/// | p3 | US | 0, 0 | granted | 0 | no (country) | no |
/// | p4 | DE | 29, 29 | none | 2 | yes (email) | no (the orders leave the window) |
async fn seed(dir: &Path) {
    let table = SqliteTable::open(&DataDir(dir.to_path_buf()).tables(), PROFILES_TABLE).expect("open the table");
    put(&table, "p1", &profile("DE", &[1, 1, 5], Some(true), 1), true).await;
    put(&table, "p2", &profile("FR", &[40, 2], Some(false), 1), true).await;
    put(&table, "p3", &profile("US", &[0, 0], Some(true), 0), true).await;
    put(&table, "p4", &profile("DE", &[29, 29], None, 2), true).await;
    // Merged into p1; it would be a member, and it still carries `root` as if the index had not caught up: it is
    // neither evaluated nor counted.
    let mut merged = profile("DE", &[1, 2, 3], Some(true), 1);
    merged.merged_into = Some("p1".into());
    put(&table, "p5", &merged, true).await;
    // A profile document without the index attribute (as a merged one is written): not listed at all.
    put(&table, "p6", &profile("DE", &[1, 2], Some(true), 1), false).await;
}

fn run(args: &[&str]) -> Output {
    let out = Command::new(tributary_bin()).arg("audiences").arg("preview").args(args).output().expect("run tributary");
    eprintln!(
        "$ tributary audiences preview {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path.to_str().expect("utf-8 path").to_string()
}

#[tokio::test]
async fn preview_counts_members_and_conditions_without_personal_data() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    seed(&data).await;
    let workspace = write(tmp.path(), "workspace.yaml", WORKSPACE);
    let definition = write(tmp.path(), "eu-buyers.yaml", DEFINITION);
    let data = data.to_str().expect("utf-8 path");

    let out = run(&[&definition, "--config", &workspace, "--data-dir", data, "--at", AT, "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).expect("--json prints one JSON object");
    assert_eq!(
        report,
        json!({
            "audience": "eu-buyers",
            "name": "EU buyers",
            "at": AT,
            "evaluated": 4,
            "size": 2,
            "conditions": conditions_at_at(),
            "unreadable": 0,
        })
    );
    // Counts and labels only: no trait value, profile id or other personal data.
    let text = String::from_utf8_lossy(&out.stdout);
    for value in ["DE", "FR", "US", "pro", "p1", "p4"] {
        assert!(!text.contains(&format!("\"{value}\"")), "{value} printed: {text}");
    }

    // A day later p4's orders have left the 30-day window.
    let out = run(&[&definition, "--config", &workspace, "--data-dir", data, "--at", "2025-03-11", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(report["at"], "2025-03-11T00:00:00Z");
    assert_eq!((report["evaluated"].as_u64(), report["size"].as_u64()), (Some(4), Some(1)), "{report}");
    assert_eq!(report["conditions"][1]["met"], 2, "{report}");

    // The same as text.
    let out = run(&[&definition, "--config", &workspace, "--data-dir", data, "--at", AT]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "audience eu-buyers (EU buyers) at 2025-03-10T12:00:00Z",
            "profiles evaluated: 4",
            "audience size: 2 (50.0%)",
            "conditions (profiles meeting each):",
            "   1. 3  trait country in (75.0%)",
            "   2. 3  performed Order Completed ≥2 in 30d (75.0%)",
            "   3. 2  consent advertising (50.0%)",
            "   4. 3  has_identifier email (75.0%)",
        ],
        "{text}"
    );

    // The same definition as JSON reads the same.
    let json_definition = write(
        tmp.path(),
        "eu-buyers.json",
        &serde_json::to_string_pretty(&json!({
            "id": "eu-buyers",
            "name": "EU buyers",
            "rule": { "all": [
                { "trait": "country", "in": ["DE", "FR"] },
                { "performed": ORDER, "at_least": 2, "in_last_days": 30 },
                { "any": [ { "consent": "advertising" }, { "has_identifier": "email" } ] },
            ] },
        }))
        .expect("json"),
    );
    let out = run(&[&json_definition, "--config", &workspace, "--data-dir", data, "--at", AT, "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let again: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(again["size"], 2);
    assert_eq!(again["conditions"], conditions_at_at());
}

/// The conditions' labels and counts at [`AT`].
fn conditions_at_at() -> Value {
    json!([
        { "label": "trait country in", "met": 3 },
        { "label": "performed Order Completed ≥2 in 30d", "met": 3 },
        { "label": "consent advertising", "met": 2 },
        { "label": "has_identifier email", "met": 3 },
    ])
}

#[tokio::test]
async fn bad_definitions_and_missing_tables_are_reported() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    seed(&data).await;
    let workspace = write(tmp.path(), "workspace.yaml", WORKSPACE);
    let data = data.to_str().expect("utf-8 path");

    // An unknown trait operator: the parser's line and column, the path of the rule.
    let unknown_op = write(tmp.path(), "unknown-op.yaml", &DEFINITION.replace("in: [DE, FR]", "is: DE"));
    let out = run(&[&unknown_op, "--config", &workspace, "--data-dir", data, "--json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "nothing on stdout");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let first = stderr.lines().next().unwrap_or_default();
    assert!(first.starts_with(&format!("{unknown_op}:5:")), "{stderr}");
    assert!(first.contains(": rule.all[0]: unknown field `is`, expected one of"), "{stderr}");
    assert!(!first.contains("audiences[0]") && !first.contains(" at line "), "{stderr}");
    assert!(stderr.contains(&format!("{unknown_op}: 1 problem(s)")), "{stderr}");

    // A consent purpose the workspace does not have: found when the rule is compiled, so no line.
    let unknown_purpose =
        write(tmp.path(), "unknown-purpose.yaml", &DEFINITION.replace("consent: advertising", "consent: ads"));
    let out = run(&[&unknown_purpose, "--config", &workspace, "--data-dir", data]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{unknown_purpose}: rule.all[2].any[0]: unknown consent purpose \"ads\" (not in consent.purposes)"
        )),
        "{stderr}"
    );
    // Without the workspace there are no purposes at all: the good definition fails the same way.
    let definition = write(tmp.path(), "eu-buyers.yaml", DEFINITION);
    let out = run(&[&definition, "--data-dir", data]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("rule.all[2].any[0]: unknown consent purpose \"advertising\""), "{stderr}");
    assert!(stderr.contains("checked without a workspace"), "{stderr}");

    // YAML that does not parse: the line in the file.
    let broken = write(tmp.path(), "broken.yaml", "id: x\nrule:\n  all:\n    - { trait: a, exists: true\n");
    let out = run(&[&broken, "--data-dir", data]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(&format!(
            "{broken}:5:1: did not find expected ',' or '}}', while parsing a flow mapping at line 4 column 7\n"
        )),
        "{stderr}"
    );

    // A data dir without a profile table: said so, and nothing is created there.
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).expect("empty dir");
    let out = run(&[&definition, "--config", &workspace, "--data-dir", empty.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("tables.sqlite does not exist: no profile table in"), "{stderr}");
    assert_eq!(std::fs::read_dir(&empty).expect("read dir").count(), 0, "nothing may be created");
}
