//! The reports of one import, next to nothing of the file itself: `import-reports/<source-id>/<file>.rejects.csv`
//! (row number, mapped column, reason — never a value) and `<file>.summary.json` (status and counts).
//!
//! Rejects are written as parts while the file is read (one per checkpoint, named by the row the part starts
//! after, so a run that is repeated from a checkpoint overwrites its own part) and joined into the report when
//! the import ends.

use serde::Serialize;
use tributary_core::import::{ImportState, ImportStatus, RowReject};

/// Where the reports of every import live.
pub const REPORTS_PREFIX: &str = "import-reports/";

/// `import-reports/<source-id>/<name>` plus a suffix.
pub fn report_key(source_id: &str, name: &str, suffix: &str) -> String {
    format!("{REPORTS_PREFIX}{source_id}/{name}{suffix}")
}

/// The prefix of the reject parts of one import.
pub fn parts_prefix(state: &ImportState) -> String {
    report_key(&state.source_id, &state.name, ".rejects.parts/")
}

/// The key of the part holding the rejects read after row `after`.
pub fn part_key(state: &ImportState, after: u64) -> String {
    format!("{}{after:012}.csv", parts_prefix(state))
}

pub const REJECTS_HEADER: &str = "row,column,reason\n";

/// Reject lines without the header (the column is a name from the mapping; it is quoted when it needs to be).
pub fn reject_lines(rejects: &[RowReject]) -> Vec<u8> {
    let mut w =
        csv::WriterBuilder::new().has_headers(false).terminator(csv::Terminator::Any(b'\n')).from_writer(vec![]);
    for r in rejects {
        // Writing to memory cannot fail; a failed line is left out rather than panicking.
        let _ = w.write_record([r.row.to_string().as_str(), r.column.as_deref().unwrap_or(""), r.reason]);
    }
    w.into_inner().unwrap_or_default()
}

/// The summary written when an import ends.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary<'a> {
    pub source_id: &'a str,
    pub file: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<&'a str>,
    pub status: ImportStatus,
    pub rows: u64,
    pub accepted: u64,
    pub rejected: u64,
    /// Rows skipped because an identifier of theirs is suppressed (the subject erased). Counted apart from the
    /// rejects: the reject report lists none of them.
    pub suppressed: u64,
    pub reasons: &'a std::collections::BTreeMap<String, u64>,
    /// Rejected rows listed in the reject report (it lists at most a bounded number; the counts are complete).
    pub rejects_listed: u64,
    pub rejects_report: &'a str,
    pub continuations: u32,
    pub started_at: String,
    pub finished_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
}

impl<'a> Summary<'a> {
    pub fn of(state: &'a ImportState, rejects_report: &'a str) -> Summary<'a> {
        Summary {
            source_id: &state.source_id,
            file: &state.file.key,
            version: state.file.version.as_deref(),
            status: state.status,
            rows: state.rows,
            accepted: state.accepted,
            rejected: state.rejected,
            // Kept beside the state (see `SUPPRESSED_ROWS_ATTR`); the caller sets it.
            suppressed: 0,
            reasons: &state.reasons,
            rejects_listed: state.listed,
            rejects_report,
            continuations: state.continuations,
            started_at: tributary_core::profile::read::rfc3339(state.started_at).unwrap_or_default(),
            finished_at: tributary_core::profile::read::rfc3339(state.finished_at.unwrap_or(state.updated_at))
                .unwrap_or_default(),
            error: state.error.as_deref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reject_lines_quote_what_needs_it_and_carry_no_values() {
        let rejects = [
            RowReject { row: 3, column: Some("email".into()), reason: "bad_email" },
            RowReject { row: 9, column: None, reason: "broken_quoting" },
            RowReject { row: 12, column: Some("a,b".into()), reason: "wrong_type" },
        ];
        let text = String::from_utf8(reject_lines(&rejects)).unwrap();
        assert_eq!(text, "3,email,bad_email\n9,,broken_quoting\n12,\"a,b\",wrong_type\n");
    }
}
