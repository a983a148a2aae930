//! `tributary bench table [FILES...]`: the result lines (`bench-result {json}`, tributary_core::benchmark) of saved
//! benchmark outputs gathered into one table, as `scripts/bench.sh` prints it. Every other line of those outputs
//! (each benchmark's own report) is passed over. Missed targets are reported, not an error: benchmarks inform, the
//! tests gate.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use tributary_core::benchmark::{BenchRow, LINE_PREFIX};

/// Reads every file (standard input for none or `-`) and prints their rows in one table. A file without a single
/// row is an error: its benchmark failed or printed nothing to gather.
pub fn run(files: &[PathBuf]) -> anyhow::Result<()> {
    let stdin = [PathBuf::from("-")];
    let files = if files.is_empty() { &stdin[..] } else { files };
    let mut rows = Vec::new();
    for file in files {
        let (name, text) = read(file)?;
        let (found, unreadable) = rows_of(&text);
        for line in unreadable {
            eprintln!("{name}:{line}: a `{}` line that is not a result row; skipped", LINE_PREFIX.trim_end());
        }
        anyhow::ensure!(!found.is_empty(), "{name}: no benchmark result lines (`{LINE_PREFIX}{{...}}`) in it");
        rows.extend(found);
    }
    print!("{}", render(&rows));
    Ok(())
}

/// The name to report the input by, and its text (bytes that are not UTF-8 become U+FFFD: a result line is JSON).
fn read(file: &Path) -> anyhow::Result<(String, String)> {
    let mut bytes = Vec::new();
    let name = if file == Path::new("-") {
        std::io::stdin().read_to_end(&mut bytes).context("reading standard input")?;
        "standard input".to_string()
    } else {
        bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        file.display().to_string()
    };
    Ok((name, String::from_utf8_lossy(&bytes).into_owned()))
}

/// The rows of a benchmark's output, and the (1-based) numbers of lines that carry the prefix but do not parse.
fn rows_of(text: &str) -> (Vec<BenchRow>, Vec<usize>) {
    let (mut rows, mut unreadable) = (Vec::new(), Vec::new());
    for (n, line) in text.lines().enumerate() {
        match BenchRow::parse(line) {
            Some(row) => rows.push(row),
            None if line.starts_with(LINE_PREFIX.trim_end()) => unreadable.push(n + 1),
            None => {}
        }
    }
    (rows, unreadable)
}

const HEADERS: [&str; 7] = ["bench", "measure", "ours", "baseline", "ratio", "target", "met"];
/// Columns aligned right (figures); the others align left.
const RIGHT: [bool; 7] = [false, false, true, false, true, false, false];
const NONE: &str = "—";

/// The table (a Markdown table, aligned, so that it reads in a terminal and pastes into the README) and a last line
/// counting the targets met and missed.
pub fn render(rows: &[BenchRow]) -> String {
    let cells: Vec<[String; 7]> = rows.iter().map(cells_of).collect();
    let mut widths = HEADERS.map(|h| h.chars().count());
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String; 7]| {
        let mut out = String::from("|");
        for ((cell, width), right) in cells.iter().zip(widths).zip(RIGHT) {
            let pad = " ".repeat(width - cell.chars().count());
            let (l, r) = if right { (pad.as_str(), "") } else { ("", pad.as_str()) };
            out.push_str(&format!(" {l}{cell}{r} |"));
        }
        out.push('\n');
        out
    };
    let mut out = line(&HEADERS.map(String::from));
    out.push('|');
    for (width, right) in widths.iter().zip(RIGHT) {
        // Markdown's alignment marker takes one of the dashes, so the rule is as wide as the column.
        out.push_str(&format!("{}{}|", "-".repeat(width + 1), if right { ":" } else { "-" }));
    }
    out.push('\n');
    for row in &cells {
        out.push_str(&line(row));
    }
    let count = |met: Option<bool>| rows.iter().filter(|r| r.met == met).count();
    // "Not checked": no target, or no ratio to check it on (a zero baseline).
    out.push_str(&format!(
        "results: {}, targets met: {}, missed: {}, not checked: {}\n",
        rows.len(),
        count(Some(true)),
        count(Some(false)),
        count(None)
    ));
    out
}

fn cells_of(row: &BenchRow) -> [String; 7] {
    let baseline = match (&row.baseline_name, row.baseline) {
        (Some(name), Some(v)) => format!("{name}: {}", figure(v)),
        (Some(name), None) => name.clone(),
        (None, Some(v)) => figure(v),
        (None, None) => NONE.into(),
    };
    [
        row.bench.clone(),
        row.measure.clone(),
        format!("{} {}", figure(row.ours), row.unit),
        baseline,
        row.ratio.map_or(NONE.into(), |r| format!("{r:.2}")),
        row.target.clone().unwrap_or_else(|| NONE.into()),
        match row.met {
            Some(true) => "yes".into(),
            Some(false) => "NO".into(),
            None => NONE.into(),
        },
    ]
}

/// A measured figure, to about three significant digits: whole numbers with thousands separators from 1,000 up
/// (rates), decimals below (milliseconds, MiB, dollars).
fn figure(v: f64) -> String {
    let a = v.abs();
    if !v.is_finite() {
        return NONE.into();
    }
    // Rounded first, so that 999.6 is grouped as 1,000 rather than printed as 1000.
    if a.round() >= 1000.0 {
        let digits = format!("{a:.0}");
        let mut grouped = String::new();
        for (i, d) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(d);
        }
        return if v < 0.0 { format!("-{grouped}") } else { grouped };
    }
    if a == 0.0 {
        return "0".into();
    }
    // Decimals for three significant digits (1.23, 12.3, 0.0123), none from 100 up; at most 9. One fewer when
    // rounding carries into a new digit (9.996 is 10.0, not 10.00).
    let decimals = (2 - a.log10().floor() as i32).clamp(0, 9) as usize;
    let carried = format!("{a:.decimals$}").parse::<f64>().is_ok_and(|r| r.log10().floor() > a.log10().floor());
    let decimals = if carried { decimals.saturating_sub(1) } else { decimals };
    format!("{v:.decimals$}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_one_aligned_table_with_a_count_of_targets() {
        let rows = [
            BenchRow::against(
                "ingest",
                "pipeline",
                "events/s",
                1_234_567.8,
                "serde_json",
                2_000_000.0,
                Some((0.5, true)),
            ),
            BenchRow::against(
                "cold-start",
                "ingest init, offline",
                "ms",
                3.456,
                "hello-lambda",
                1.5,
                Some((2.0, false)),
            ),
            BenchRow::target_only("import", "peak resident, 1024 MiB file", "MiB", 54.1, 64.0, false),
            BenchRow {
                bench: "stitch".into(),
                measure: "DynamoDB on moto".into(),
                unit: "USD per million events".into(),
                ours: 0.0123,
                baseline_name: None,
                baseline: None,
                ratio: None,
                target: None,
                met: None,
            },
        ];
        let expected = "\
| bench      | measure                      |                          ours | baseline              | ratio | target      | met |
|------------|------------------------------|------------------------------:|-----------------------|------:|-------------|-----|
| ingest     | pipeline                     |            1,234,568 events/s | serde_json: 2,000,000 |  0.62 | ratio ≥ 0.5 | yes |
| cold-start | ingest init, offline         |                       3.46 ms | hello-lambda: 1.50    |  2.30 | ratio ≤ 2   | NO  |
| import     | peak resident, 1024 MiB file |                      54.1 MiB | —                     |  0.85 | ≤ 64        | yes |
| stitch     | DynamoDB on moto             | 0.0123 USD per million events | —                     |     — | —           | —   |
results: 4, targets met: 2, missed: 1, not checked: 1
";
        assert_eq!(render(&rows), expected);
    }

    #[test]
    fn figures_keep_about_three_significant_digits() {
        let cases = [
            (12_345_678.4, "12,345,678"),
            (999.6, "1,000"),
            (1000.0, "1,000"),
            (123.4, "123"),
            (12.34, "12.3"),
            (1.234, "1.23"),
            (9.996, "10.0"),
            (0.01234, "0.0123"),
            (0.0, "0"),
            (-2500.0, "-2,500"),
            (f64::NAN, "—"),
        ];
        for (v, want) in cases {
            assert_eq!(figure(v), want, "{v}");
        }
    }

    #[test]
    fn only_result_lines_are_rows_and_broken_ones_are_counted() {
        let row = BenchRow::target_only("import", "peak", "MiB", 50.0, 64.0, false);
        let text = format!("bench import: 10 rows\n{}\nbench-result {{broken\nratio: 0.5\n", row.line());
        let (rows, unreadable) = rows_of(&text);
        assert_eq!(rows, vec![row]);
        assert_eq!(unreadable, vec![3]);
        assert_eq!(rows_of("no results here\n"), (vec![], vec![]));
    }

    #[test]
    fn a_file_without_rows_or_missing_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let empty = dir.path().join("deliver.txt");
        std::fs::write(&empty, "bench deliver: failed before any result\n").expect("write");
        let err = format!("{:#}", run(std::slice::from_ref(&empty)).expect_err("no rows"));
        assert!(err.contains(&empty.display().to_string()) && err.contains("no benchmark result lines"), "{err}");
        let missing = dir.path().join("missing.txt");
        let err = format!("{:#}", run(std::slice::from_ref(&missing)).expect_err("missing"));
        assert!(err.contains(&missing.display().to_string()), "{err}");
    }
}
