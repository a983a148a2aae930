//! Imports from files (S3 objects later): the pure core that turns the rows of a CSV or JSON Lines file into
//! normalized-shaped Segment events.
//!
//! Flow for one file: [`ImportMapping::check`] (once per source) → [`Rows::new`] over any `BufRead` (the S3 stream
//! and gunzip are wrapped around it by the caller) → [`CheckedMapping::check_header`] → [`CheckedMapping::for_file`]
//! → for each row, [`FileMapping::event`], an [`ImportEvent`] that serializes straight to JSON ([`row_to_event`]
//! gives one row's event as a JSON object). Problems with one row are [`RowReject`]s (row number, mapped column,
//! reason) and never stop the file; only I/O failures and an unusable CSV header are [`ImportError`]s.
//!
//! Nothing here quotes a value from the file: rejects and errors name a row, a column of the mapping (or a header
//! position) and a reason, because import files are full of personal data.

mod event;
mod mapping;
pub mod object;
mod rows;

pub use event::{EventBuffers, ImportEvent};
pub use mapping::{
    row_to_event, CheckedMapping, ColumnMapping, EventSpec, FileMapping, ImportMapping, MappingError, TraitMapping,
    TraitType, LIBRARY_NAME,
};
pub use object::{
    encode_notification_key, file_hash, import_object, source_pk, source_states, state_key, ImportObject, ImportState,
    ImportStatus, ObjectError, IMPORTS_PREFIX,
};
pub use rows::{Cell, Column, Format, Header, ParseOptions, Row, Rows, MAX_COLUMNS, MAX_RECORD_BYTES};

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The reasons a row is rejected. Stable names: they are counted and reported per file.
pub mod reason {
    /// The record is longer than [`super::ParseOptions::max_record_bytes`]; it is skipped without being buffered.
    pub const LINE_TOO_LONG: &str = "line_too_long";
    /// The record has more fields (CSV) or keys (JSON) than [`super::ParseOptions::max_columns`].
    pub const TOO_MANY_COLUMNS: &str = "too_many_columns";
    /// The record is not valid UTF-8.
    pub const INVALID_UTF8: &str = "invalid_utf8";
    /// A quoted CSV field is not closed, or its closing quote is followed by something other than a delimiter or
    /// the end of the line.
    pub const BROKEN_QUOTING: &str = "broken_quoting";
    /// A CSV record whose number of fields differs from the header's (its values cannot be told apart safely).
    pub const WRONG_COLUMN_COUNT: &str = "wrong_column_count";
    /// A JSON Lines line that is not JSON.
    pub const INVALID_JSON: &str = "invalid_json";
    /// A JSON Lines line that is JSON but not an object.
    pub const NOT_AN_OBJECT: &str = "not_an_object";
    /// An `email` column whose value is not an email address.
    pub const BAD_EMAIL: &str = "bad_email";
    /// A `phone` column whose value does not normalize to E.164.
    pub const BAD_PHONE: &str = "bad_phone";
    /// An `*_sha256` column whose value is not 64 hex characters (optionally prefixed with `sha256:`).
    pub const NOT_SHA256: &str = "not_sha256";
    /// A `user_id` or `ext:<name>` value longer than the identifier limit.
    pub const ID_TOO_LONG: &str = "id_too_long";
    /// No identifier column of the row has a value.
    pub const NO_IDENTIFIER: &str = "no_identifier";
    /// A value that cannot be read as the column's type.
    pub const WRONG_TYPE: &str = "wrong_type";
    /// A `date` trait or timestamp that does not match its format.
    pub const BAD_DATE: &str = "bad_date";
    /// A mapped column absent from the CSV header, or a required column (event name, timestamp) without a value.
    pub const MISSING_COLUMN: &str = "missing_column";
    /// The source's PII policy drops events holding the detected data (`action: drop_event`).
    pub const PII_DROPPED: &str = "pii_dropped";
    /// The event breaks the source's tracking plan, which quarantines such events (a file is fixed and sent
    /// again instead).
    pub const TRACKING_PLAN: &str = "tracking_plan";
}

/// One row that did not become an event. Never carries a value from the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("row {row}{}: {reason}", column.as_ref().map(|c| format!(", column `{c}`")).unwrap_or_default())]
pub struct RowReject {
    /// 1-based: the first record after the CSV header, or the first line of a JSON Lines file, is row 1.
    pub row: u64,
    /// The mapped column at fault, when there is one (parser rejects have none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// One of the [`reason`] constants.
    pub reason: &'static str,
}

impl RowReject {
    pub(crate) fn new(row: u64, reason: &'static str) -> Self {
        RowReject { row, column: None, reason }
    }

    pub(crate) fn at(row: u64, column: &str, reason: &'static str) -> Self {
        RowReject { row, column: Some(column.to_string()), reason }
    }
}

/// A problem with the whole file: reading failed, or the CSV header is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("reading the file failed: {0}")]
    Io(#[from] std::io::Error),
    /// `reason` is one of the parser's [`reason`]s or `empty_header`, `duplicate_column`. `column` is a 1-based
    /// position: a header may turn out to be data, so its names are not repeated.
    #[error("unusable CSV header: {reason}{}", column.map(|c| format!(" (column {c})")).unwrap_or_default())]
    Header { reason: &'static str, column: Option<usize> },
    #[error("CSV delimiter must be ',', ';' or a tab")]
    UnsupportedDelimiter,
    #[error("resuming a CSV file needs its header")]
    MissingHeader,
}

/// The object a file was read from. With the row number, it names an imported event for good.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileId {
    pub bucket: String,
    pub key: String,
    /// The S3 version id; `None` for an unversioned bucket.
    pub version: Option<String>,
}

impl FileId {
    /// The `messageId` of row `row`: the first 32 hex characters of a SHA-256 over the file's identity and the row,
    /// so reprocessing the same object version yields the same ids (and dedup drops them), while a new version
    /// of the object is imported afresh. [`MessageIds`] gives the same ids for many rows of a file.
    pub fn message_id(&self, row: u64) -> String {
        MessageIds::new(self).get(row).as_str().to_string()
    }
}

/// The `messageId`s of one file's rows ([`FileId::message_id`]), with the file's part of the hash done once.
#[derive(Clone)]
pub struct MessageIds {
    /// The hash state after the file's identity: each row's id continues from a copy of it.
    file: Sha256,
}

impl MessageIds {
    pub fn new(file: &FileId) -> MessageIds {
        let mut hash = Sha256::new();
        hash.update(b"tributary-import:v1\0");
        hash.update(file.bucket.as_bytes());
        hash.update([0]);
        hash.update(file.key.as_bytes());
        hash.update([0]);
        // Tagged so that "no version" and an empty version id cannot collide.
        match &file.version {
            Some(v) => {
                hash.update(b"v");
                hash.update(v.as_bytes());
            }
            None => hash.update(b"-"),
        }
        hash.update([0]);
        MessageIds { file: hash }
    }

    /// The `messageId` of row `row`.
    pub fn get(&self, row: u64) -> MessageId {
        let mut hash = self.file.clone();
        let mut digits = [0u8; 20];
        hash.update(decimal(row, &mut digits));
        let digest = hash.finalize();
        let mut id = [0u8; 32];
        for (pair, byte) in id.chunks_exact_mut(2).zip(&digest) {
            pair[0] = HEX[usize::from(byte >> 4)];
            pair[1] = HEX[usize::from(byte & 0xf)];
        }
        MessageId(id)
    }
}

impl fmt::Debug for MessageIds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageIds").finish_non_exhaustive()
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// `n` in decimal, as `n.to_string()` writes it, in the tail of `buf` (`u64::MAX` has 20 digits).
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut start = buf.len();
    for slot in buf.iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        start -= 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[start..]
}

/// A row's `messageId`: 32 lowercase hex characters, held without an allocation.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageId([u8; 32]);

impl MessageId {
    pub fn as_str(&self) -> &str {
        // Only ever hex digits, which are ASCII.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for MessageId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(version: Option<&str>) -> FileId {
        FileId { bucket: "b".into(), key: "k/x.csv".into(), version: version.map(String::from) }
    }

    #[test]
    fn message_ids_are_deterministic_and_depend_on_every_part() {
        let id = file(Some("v1")).message_id(7);
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(id, file(Some("v1")).message_id(7));
        assert_ne!(id, file(Some("v1")).message_id(8));
        assert_ne!(id, file(Some("v2")).message_id(7));
        assert_ne!(file(None).message_id(7), file(Some("")).message_id(7));
        let other_key = FileId { key: "k/y.csv".into(), ..file(Some("v1")) };
        assert_ne!(id, other_key.message_id(7));
        // Separators keep bucket/key boundaries unambiguous.
        let a = FileId { bucket: "ab".into(), key: "c".into(), version: None };
        let b = FileId { bucket: "a".into(), key: "bc".into(), version: None };
        assert_ne!(a.message_id(1), b.message_id(1));
    }

    /// The ids as they were first defined: one hash over the whole message, the row in decimal.
    fn reference_id(file: &FileId, row: u64) -> String {
        let mut bytes = b"tributary-import:v1\0".to_vec();
        bytes.extend_from_slice(file.bucket.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(file.key.as_bytes());
        bytes.push(0);
        match &file.version {
            Some(v) => {
                bytes.push(b'v');
                bytes.extend_from_slice(v.as_bytes());
            }
            None => bytes.push(b'-'),
        }
        bytes.push(0);
        bytes.extend_from_slice(row.to_string().as_bytes());
        crate::sha256_hex(&bytes)[..32].to_string()
    }

    #[test]
    fn message_ids_match_their_definition() {
        let long_key = FileId { bucket: "b".into(), key: "k/".repeat(100), version: Some("v".repeat(70)) };
        for f in [file(Some("v1")), file(None), file(Some("")), long_key] {
            let ids = MessageIds::new(&f);
            for row in [0, 1, 9, 10, 99, 100, 12_345, 1 << 32, u64::MAX - 1, u64::MAX] {
                let expected = reference_id(&f, row);
                assert_eq!(ids.get(row).as_str(), expected, "{f:?} row {row}");
                assert_eq!(f.message_id(row), expected);
            }
        }
        assert_eq!(serde_json::to_value(MessageIds::new(&file(None)).get(3)).unwrap(), reference_id(&file(None), 3));
    }

    #[test]
    fn messages_name_no_values() {
        let r = RowReject::at(3, "email", reason::BAD_EMAIL);
        assert_eq!(r.to_string(), "row 3, column `email`: bad_email");
        assert_eq!(RowReject::new(4, reason::LINE_TOO_LONG).to_string(), "row 4: line_too_long");
        let e = ImportError::Header { reason: "duplicate_column", column: Some(2) };
        assert_eq!(e.to_string(), "unusable CSV header: duplicate_column (column 2)");
    }
}
