//! One line per benchmark result, so that every benchmark (the `tributary bench` commands, `bench-stitch`,
//! `bench-cost`, `cold-start`) can be gathered into one table by `scripts/bench.sh`. Each benchmark prints its own
//! human-readable report and then one [`BenchRow::line`] per figure it measured; the runner keeps only those
//! lines. Pure formatting: printing is the caller's.

use serde::{Deserialize, Serialize};

/// The prefix that marks a result line in a benchmark's standard output.
pub const LINE_PREFIX: &str = "bench-result ";

/// One measured figure, next to the baseline measured in the same run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchRow {
    /// The benchmark (`ingest`, `stitch`, `cold-start`, `cost`, …).
    pub bench: String,
    /// What was measured on our side (`parse+validate+normalize+pack`, `ingest init`, …).
    pub measure: String,
    /// Unit of `ours` and `baseline` (`events/s`, `ms`, `USD per million events`, …).
    pub unit: String,
    pub ours: f64,
    /// The baseline's name and figure, measured in the same run; `None` for a figure checked against a target only.
    pub baseline_name: Option<String>,
    pub baseline: Option<f64>,
    /// `ours / baseline`, or for a target-only figure `ours / target`.
    pub ratio: Option<f64>,
    /// The target as written in the issue (`ratio ≥ 0.5`, `≤ $0.50`).
    pub target: Option<String>,
    /// Whether the target is met; `None` when there is no target.
    pub met: Option<bool>,
}

impl BenchRow {
    /// A figure against a same-run baseline: the ratio is `ours / baseline`, and the target (if any) is a bound on
    /// it: `higher_is_better` means the ratio must be at least `bound`, otherwise at most.
    pub fn against(
        bench: &str,
        measure: &str,
        unit: &str,
        ours: f64,
        baseline_name: &str,
        baseline: f64,
        target: Option<(f64, bool)>,
    ) -> BenchRow {
        let ratio = (baseline != 0.0).then(|| ours / baseline);
        let (target, met) = judge(ratio, target);
        BenchRow {
            bench: bench.into(),
            measure: measure.into(),
            unit: unit.into(),
            ours,
            baseline_name: Some(baseline_name.into()),
            baseline: Some(baseline),
            ratio,
            target,
            met,
        }
    }

    /// The row with `ratio` in place of `ours / baseline`, judged against `target` as [`BenchRow::against`] does.
    /// For benchmarks that alternate the two sides round by round and report the median of the per-round ratios:
    /// a noisy moment hits both sides of one round, so that median moves less than the ratio of the two medians.
    pub fn with_ratio(self, ratio: f64, target: Option<(f64, bool)>) -> BenchRow {
        let (target, met) = judge(Some(ratio), target);
        BenchRow { ratio: Some(ratio), target, met, ..self }
    }

    /// A figure checked against a fixed target only (a cost, a memory ceiling): the ratio is `ours / bound`.
    pub fn target_only(
        bench: &str,
        measure: &str,
        unit: &str,
        ours: f64,
        bound: f64,
        higher_is_better: bool,
    ) -> BenchRow {
        BenchRow {
            bench: bench.into(),
            measure: measure.into(),
            unit: unit.into(),
            ours,
            baseline_name: None,
            baseline: None,
            ratio: (bound != 0.0).then(|| ours / bound),
            target: Some(format!("{} {bound}", if higher_is_better { "≥" } else { "≤" })),
            met: Some(beats(ours, bound, higher_is_better)),
        }
    }

    /// The line to print: [`LINE_PREFIX`] and the row as one line of JSON.
    pub fn line(&self) -> String {
        format!("{LINE_PREFIX}{}", serde_json::to_string(self).unwrap_or_default())
    }

    /// The row of a line printed by [`BenchRow::line`]; `None` for any other line.
    pub fn parse(line: &str) -> Option<BenchRow> {
        serde_json::from_str(line.trim_end().strip_prefix(LINE_PREFIX)?).ok()
    }
}

/// The target's text and whether `ratio` meets it (unknown without a ratio).
fn judge(ratio: Option<f64>, target: Option<(f64, bool)>) -> (Option<String>, Option<bool>) {
    match target {
        Some((bound, higher)) => {
            (Some(format!("ratio {} {bound}", if higher { "≥" } else { "≤" })), ratio.map(|r| beats(r, bound, higher)))
        }
        None => (None, None),
    }
}

fn beats(value: f64, bound: f64, higher_is_better: bool) -> bool {
    if higher_is_better {
        value >= bound
    } else {
        value <= bound
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_round_trips_through_its_line_and_other_lines_are_not_rows() {
        let row = BenchRow::against("ingest", "pipeline", "events/s", 500.0, "serde_json", 1000.0, Some((0.5, true)));
        assert_eq!(row.ratio, Some(0.5));
        assert_eq!(row.met, Some(true));
        assert_eq!(row.target.as_deref(), Some("ratio ≥ 0.5"));
        assert_eq!(BenchRow::parse(&row.line()), Some(row));
        assert_eq!(BenchRow::parse("ratio (tributary / baseline): 0.50"), None);
        assert_eq!(BenchRow::parse("bench-result {not json"), None);
    }

    #[test]
    fn targets_are_bounds_in_either_direction() {
        let slow = BenchRow::against("cold-start", "init", "ms", 3.0, "hello", 1.0, Some((2.0, false)));
        assert_eq!((slow.ratio, slow.met), (Some(3.0), Some(false)));
        let cheap = BenchRow::target_only("cost", "10 events/request", "USD/M events", 0.4, 0.5, false);
        assert_eq!(cheap.met, Some(true));
        assert!((cheap.ratio.unwrap_or_default() - 0.8).abs() < 1e-9);
        let none = BenchRow::against("x", "y", "z", 1.0, "b", 0.0, Some((1.0, true)));
        assert_eq!((none.ratio, none.met), (None, None));
        assert_eq!(none.target.as_deref(), Some("ratio ≥ 1"));
    }

    #[test]
    fn a_median_of_round_ratios_replaces_the_ratio_of_medians() {
        let row = BenchRow::against("deliver", "handler", "deliveries/s", 600.0, "loop", 1000.0, None)
            .with_ratio(0.75, Some((0.7, true)));
        assert_eq!((row.ratio, row.met, row.target.as_deref()), (Some(0.75), Some(true), Some("ratio ≥ 0.7")));
        assert_eq!((row.ours, row.baseline), (600.0, Some(1000.0)));
    }
}
