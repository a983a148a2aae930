//! Which S3 object an `ObjectCreated` notification announces, and where the import of that object keeps its state.
//!
//! Partner and broker files land under `imports/<source-id>/<name>`; the source comes from the key, the format
//! from the name (`.csv`, `.tsv`, `.jsonl`, `.ndjson`, each optionally `.gz`). Keys in S3 notifications are
//! form-encoded (`+` is a space, `%XX` a byte), so they are decoded before anything else.
//!
//! The state of one object version — running, done or failed, with the checkpoint a continuation resumes from —
//! is one item keyed by a hash of the object's identity, so a duplicate notification finds it and does nothing.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{FileId, Format};
use crate::config::SourceId;
use crate::ports::ItemKey;

/// Every import object's key starts with this.
pub const IMPORTS_PREFIX: &str = "imports/";
/// Longest object key handled (S3's own limit is 1024 bytes).
pub const MAX_KEY_BYTES: usize = 1024;

/// An object to import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportObject {
    pub file: FileId,
    pub size: u64,
    pub source_id: SourceId,
    /// The key below `imports/<source-id>/`.
    pub name: String,
    /// The name ends in `.gz`.
    pub gzip: bool,
    /// From the name; `None` when the extension says nothing (the source's mapping decides).
    pub format: Option<Format>,
}

/// Why a notification names nothing to import. Never quotes the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectError {
    #[error("the key is not form-encoded UTF-8")]
    BadEncoding,
    #[error("the key is longer than 1024 bytes")]
    TooLong,
    #[error("the key is not under imports/<source-id>/")]
    NotAnImport,
    #[error("the source id in the key is not a valid source id")]
    InvalidSource,
    #[error("the key names a folder, not a file")]
    Folder,
}

/// Decodes a key as S3 event notifications carry it (`application/x-www-form-urlencoded`: `+` is a space).
pub fn decode_notification_key(raw: &str) -> Result<String, ObjectError> {
    if raw.len() > MAX_KEY_BYTES * 3 {
        return Err(ObjectError::TooLong);
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or(ObjectError::BadEncoding)?;
                let s = std::str::from_utf8(hex).map_err(|_| ObjectError::BadEncoding)?;
                out.push(u8::from_str_radix(s, 16).map_err(|_| ObjectError::BadEncoding)?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    let key = String::from_utf8(out).map_err(|_| ObjectError::BadEncoding)?;
    if key.len() > MAX_KEY_BYTES {
        return Err(ObjectError::TooLong);
    }
    Ok(key)
}

/// The import a notification announces: `raw_key` as the notification carries it (encoded).
pub fn import_object(
    bucket: &str,
    raw_key: &str,
    version: Option<&str>,
    size: u64,
) -> Result<ImportObject, ObjectError> {
    let key = decode_notification_key(raw_key)?;
    let rest = key.strip_prefix(IMPORTS_PREFIX).ok_or(ObjectError::NotAnImport)?;
    let (source, name) = rest.split_once('/').ok_or(ObjectError::NotAnImport)?;
    let source_id = SourceId::try_from(source.to_string()).map_err(|_| ObjectError::InvalidSource)?;
    if name.is_empty() || name.ends_with('/') {
        return Err(ObjectError::Folder);
    }
    let lower = name.to_ascii_lowercase();
    let (base, gzip) = match lower.strip_suffix(".gz") {
        Some(base) => (base.to_string(), true),
        None => (lower, false),
    };
    let format = match base.rsplit_once('.').map(|(_, ext)| ext) {
        Some("csv" | "tsv" | "txt") => Some(Format::Csv),
        Some("jsonl" | "ndjson") => Some(Format::Jsonl),
        _ => None,
    };
    Ok(ImportObject {
        file: FileId { bucket: bucket.to_string(), key: key.clone(), version: version.map(str::to_string) },
        size,
        source_id,
        name: name.to_string(),
        gzip,
        format,
    })
}

/// Where an import stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportStatus {
    Running,
    Done,
    Failed,
}

/// The state of one object version's import: the checkpoint a continuation resumes from and the counts so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportState {
    pub status: ImportStatus,
    pub source_id: String,
    pub file: FileId,
    /// Byte offset of the next record (in the decompressed stream for `.gz` files, which resume by re-reading).
    pub offset: u64,
    /// Rows read so far (the header is not a row).
    pub rows: u64,
    pub accepted: u64,
    pub rejected: u64,
    /// How many times the import was handed to a continuation.
    pub continuations: u32,
    /// Epoch milliseconds.
    pub started_at: i64,
    pub updated_at: i64,
    /// CSV: the header names and delimiter, which resuming mid-file needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<(Vec<String>, u8)>,
    /// Why the import failed (a stable code and a message without values from the file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The object's size in bytes (compressed for `.gz`).
    #[serde(default)]
    pub size: u64,
    /// The key below `imports/<source-id>/`.
    #[serde(default)]
    pub name: String,
    /// Rejected rows per reason.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub reasons: std::collections::BTreeMap<String, u64>,
    /// Rejected rows listed in the reject report so far (the report lists at most a bounded number).
    #[serde(default)]
    pub listed: u64,
    /// Until when (epoch milliseconds) a running invocation holds the import; 0 when none does. A notification
    /// or continuation that finds it held does nothing; one that finds it free resumes from the checkpoint.
    #[serde(default)]
    pub lease_until: i64,
    /// When the import finished (epoch milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<i64>,
}

impl ImportState {
    /// A new running import of `object`, started at `now`.
    pub fn start(object: &ImportObject, now: i64) -> ImportState {
        ImportState {
            status: ImportStatus::Running,
            source_id: object.source_id.as_str().to_string(),
            file: object.file.clone(),
            offset: 0,
            rows: 0,
            accepted: 0,
            rejected: 0,
            continuations: 0,
            started_at: now,
            updated_at: now,
            header: None,
            error: None,
            size: object.size,
            name: object.name.clone(),
            reasons: Default::default(),
            listed: 0,
            lease_until: 0,
            finished_at: None,
        }
    }

    /// Whether a notification for this object version has anything left to do (a finished import is a no-op).
    pub fn is_finished(&self) -> bool {
        matches!(self.status, ImportStatus::Done | ImportStatus::Failed)
    }
}

/// The key of an object version's import state: one partition per source (so a source's imports are listed with
/// one query), sorted by a hash of the object's identity — never the key itself in the item's key.
pub fn state_key(source_id: &str, file: &FileId) -> ItemKey {
    ItemKey::new(source_pk(source_id), format!("f#{}", file_hash(file)))
}

/// The partition holding a source's import states.
pub fn source_pk(source_id: &str) -> String {
    format!("imp#{source_id}")
}

/// A short stable name of an object version (logs and status URLs use it instead of the key).
pub fn file_hash(file: &FileId) -> String {
    let mut h = Sha256::new();
    for part in [file.bucket.as_str(), file.key.as_str(), file.version.as_deref().unwrap_or("\u{0}none")] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..16])
}

/// Most import states [`source_states`] returns.
pub const MAX_LISTED_STATES: usize = 1000;

/// The imports of a source, newest first (at most `limit`, itself at most [`MAX_LISTED_STATES`]). States that do
/// not parse are left out.
pub async fn source_states<T: crate::ports::TableStore>(
    table: &T,
    source_id: &str,
    limit: usize,
) -> Result<Vec<ImportState>, crate::ports::PortError> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    // Sorted by a hash, not by time: read them all (bounded), then sort.
    loop {
        let page = table.query(&source_pk(source_id), "f#", after.as_deref(), 100).await?;
        out.extend(
            page.items.into_iter().filter_map(|i| serde_json::from_value(serde_json::Value::Object(i.attrs)).ok()),
        );
        match page.next {
            Some(next) if out.len() < MAX_LISTED_STATES => after = Some(next),
            _ => break,
        }
    }
    out.sort_by(|a: &ImportState, b: &ImportState| b.started_at.cmp(&a.started_at).then(a.file.key.cmp(&b.file.key)));
    out.truncate(limit.min(MAX_LISTED_STATES));
    Ok(out)
}

/// Encodes a key as S3 event notifications carry it (form encoding: unreserved characters and `/` as they are,
/// a space as `+`, every other byte as `%XX`), for notifications made locally.
pub fn encode_notification_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notification_keys_are_form_decoded() {
        assert_eq!(decode_notification_key("imports/crm/Q4+file%2B1.csv").unwrap(), "imports/crm/Q4 file+1.csv");
        assert_eq!(decode_notification_key("a%C3%A9").unwrap(), "aé");
        for bad in ["a%", "a%4", "a%zz", "a%FF"] {
            assert_eq!(decode_notification_key(bad), Err(ObjectError::BadEncoding), "{bad}");
        }
        assert_eq!(decode_notification_key(&"a".repeat(1025)), Err(ObjectError::TooLong));
    }

    #[test]
    fn objects_under_imports_name_their_source_and_format() {
        let o = import_object("partner-drop", "imports/crm/2026/11/Q4+list.csv.gz", Some("v1"), 42).unwrap();
        assert_eq!(o.source_id.as_str(), "crm");
        assert_eq!(o.name, "2026/11/Q4 list.csv.gz");
        assert_eq!((o.gzip, o.format), (true, Some(Format::Csv)));
        assert_eq!(
            o.file,
            FileId {
                bucket: "partner-drop".into(),
                key: "imports/crm/2026/11/Q4 list.csv.gz".into(),
                version: Some("v1".into())
            }
        );
        for (name, gzip, format) in [
            ("a.TSV", false, Some(Format::Csv)),
            ("a.jsonl", false, Some(Format::Jsonl)),
            ("a.ndjson.gz", true, Some(Format::Jsonl)),
            ("a.parquet", false, None),
            ("noext", false, None),
        ] {
            let o = import_object("b", &format!("imports/broker/{name}"), None, 1).unwrap();
            assert_eq!((o.gzip, o.format), (gzip, format), "{name}");
        }
    }

    #[test]
    fn other_keys_are_refused_without_quoting_them() {
        for (key, err) in [
            ("exports/crm/a.csv", ObjectError::NotAnImport),
            ("imports/a.csv", ObjectError::NotAnImport),
            ("imports/Bad Source/a.csv", ObjectError::InvalidSource),
            ("imports/crm/", ObjectError::Folder),
            ("imports/crm/sub/", ObjectError::Folder),
        ] {
            let got = import_object("b", key, None, 0);
            assert_eq!(got, Err(err.clone()), "{key}");
            assert!(!err.to_string().contains("crm"));
        }
    }

    #[test]
    fn state_keys_tell_versions_apart_and_hide_the_key() {
        let file = |v: Option<&str>| FileId {
            bucket: "b".into(),
            key: "imports/crm/ann@example.com.csv".into(),
            version: v.map(str::to_string),
        };
        let key = |v| state_key("crm", &file(v));
        let (a, b, none) = (key(Some("1")), key(Some("2")), key(None));
        assert!(a != b && a != none && b != none);
        assert_eq!(a, key(Some("1")));
        assert_eq!(a.pk, "imp#crm", "one partition per source");
        assert!(!a.sk.contains("example") && a.sk.starts_with("f#"));
        assert_ne!(key(Some("")), none, "an empty version id is not the absent one");
    }

    #[test]
    fn encoded_keys_decode_to_themselves() {
        for key in ["imports/crm/Q4 list+1.csv", "imports/crm/é ü/a%b.csv.gz", "imports/x/plain-file_1.csv"] {
            let enc = encode_notification_key(key);
            assert!(!enc.contains(' '));
            assert_eq!(decode_notification_key(&enc).unwrap(), key);
        }
        assert_eq!(encode_notification_key("imports/a b/c+d"), "imports/a+b/c%2Bd");
    }

    #[test]
    fn state_round_trips_and_knows_when_it_is_finished() {
        let o = import_object("b", "imports/crm/a.csv", None, 10).unwrap();
        let mut s = ImportState::start(&o, 5);
        assert!(!s.is_finished());
        s.header = Some((vec!["email".into(), "plan".into()], b';'));
        let back: ImportState = serde_json::from_value(serde_json::to_value(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        s.status = ImportStatus::Done;
        assert!(s.is_finished());
    }
}
