//! Erasing a subject from the stores that hold whole messages and files rather than keyed rows: dead-letter
//! queues, quarantined events, partner files, import reports and S3 export archives.
//!
//! Whether a message or file concerns the subject is decided by [`Matcher`]: any string in it that is one of the
//! subject's identifiers (as sent or normalized), the SHA-256 of one, or one of the subject's profile ids. A
//! batch of events or profile ids loses only the subject's entries; any other message or object that mentions the
//! subject goes whole. Line-oriented files (JSON Lines, CSV) lose the lines that mention the subject.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::time::Duration;

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use serde_json::Value;
use tributary_core::identity::{IdType, Identifier};
use tributary_core::ports::{ObjectStore, OutgoingMessage, PortError, Queue};
use tributary_core::sha256_hex;

use crate::subject::Subject;

/// Longest a message received for inspection stays hidden from other consumers.
const INSPECT_VISIBILITY: Duration = Duration::from_secs(120);
/// Most messages inspected per queue in one run; a larger DLQ fails the task, which is retried.
pub const MAX_QUEUE_MESSAGES: usize = 20_000;
/// Largest object inspected (bigger ones are files no DSR can rewrite in a Lambda's memory).
pub const MAX_OBJECT_BYTES: u64 = 512 * 1024 * 1024;
/// Longest string the matcher normalizes as an email or phone.
const MAX_CANDIDATE_BYTES: usize = 320;

/// Recognises the subject in stored text.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    /// Identifier values as stored (normalized), lowercased, and their SHA-256 hex.
    needles: BTreeSet<String>,
    profiles: BTreeSet<String>,
    default_country_code: Option<String>,
}

impl Matcher {
    pub fn new(subject: &Subject, default_country_code: Option<&str>) -> Matcher {
        let mut needles = BTreeSet::new();
        for id in &subject.identifiers {
            needles.insert(id.value.to_lowercase());
            needles.insert(sha256_hex(id.value.as_bytes()));
        }
        Matcher {
            needles,
            profiles: subject.profiles.clone(),
            default_country_code: default_country_code.map(str::to_string),
        }
    }

    /// Whether the matcher knows nothing to look for (a subject never seen).
    pub fn is_empty(&self) -> bool {
        self.needles.is_empty() && self.profiles.is_empty()
    }

    /// Whether `s` is one of the subject's identifiers (in any spelling normalization accepts), a hash of one, or
    /// one of its profile ids.
    pub fn mentions_str(&self, s: &str) -> bool {
        let t = s.trim();
        if t.is_empty() || t.len() > 4096 {
            return false;
        }
        if self.profiles.contains(t) || self.needles.contains(&t.to_lowercase()) {
            return true;
        }
        if t.len() <= MAX_CANDIDATE_BYTES {
            let cc = self.default_country_code.as_deref();
            if t.contains('@') {
                if let Ok(id) = Identifier::new(IdType::Email, t, cc) {
                    return self.needles.contains(&id.value);
                }
            } else if t.bytes().any(|b| b.is_ascii_digit()) && t.bytes().all(|b| b"0123456789+-() .".contains(&b)) {
                if let Ok(id) = Identifier::new(IdType::Phone, t, cc) {
                    return self.needles.contains(&id.value);
                }
            }
        }
        false
    }

    /// Whether any string (value or key) anywhere in `v` mentions the subject.
    pub fn mentions(&self, v: &Value) -> bool {
        match v {
            Value::String(s) => self.mentions_str(s),
            Value::Number(n) => self.mentions_str(&n.to_string()),
            Value::Array(a) => a.iter().any(|x| self.mentions(x)),
            Value::Object(o) => o.iter().any(|(k, x)| self.mentions_str(k) || self.mentions(x)),
            _ => false,
        }
    }

    /// What to do with a message body or a whole JSON document.
    pub fn redact_json_text(&self, text: &str) -> Redaction {
        let Ok(mut v) = serde_json::from_str::<Value>(text) else {
            // Not JSON: look for the needles in the text itself.
            let lower = text.to_lowercase();
            return if self.needles.iter().any(|n| lower.contains(n.as_str()))
                || self.profiles.iter().any(|p| text.contains(p.as_str()))
            {
                Redaction::Drop
            } else {
                Redaction::Keep
            };
        };
        // Batches (events-queue envelopes, the profile change feed) lose only the subject's entries.
        if let Value::Object(obj) = &mut v {
            for list in ["events", "profiles"] {
                let Some(Value::Array(items)) = obj.get_mut(list) else { continue };
                let before = items.len();
                items.retain(|x| !self.mentions(x));
                let removed = before - items.len();
                if removed == 0 {
                    continue;
                }
                if items.is_empty() {
                    return Redaction::Drop;
                }
                return if self.mentions(&v) {
                    Redaction::Drop
                } else {
                    Redaction::Rewrite(serde_json::to_string(&v).unwrap_or_default())
                };
            }
        }
        if self.mentions(&v) {
            Redaction::Drop
        } else {
            Redaction::Keep
        }
    }
}

/// The fate of one message or document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redaction {
    Keep,
    Drop,
    /// Kept without the subject's entries.
    Rewrite(String),
}

/// What a purge did to one store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Purged {
    pub scanned: u64,
    pub deleted: u64,
    pub rewritten: u64,
    /// Earlier versions read (versioned buckets only).
    pub earlier_scanned: u64,
    /// Earlier versions and delete markers removed (versioned buckets only).
    pub earlier_removed: u64,
}

impl Purged {
    pub fn touched(&self) -> u64 {
        self.deleted + self.rewritten
    }
}

/// Removes the subject from every message of `queue` (a DLQ): matching messages are deleted, batches that also
/// hold others are sent again without the subject's entries. Messages that stay are made visible again at once.
pub async fn purge_queue<Q: Queue>(queue: &Q, matcher: &Matcher, empty_wait: Duration) -> Result<Purged, PortError> {
    let mut out = Purged::default();
    let mut kept: Vec<String> = Vec::new();
    let result = async {
        let mut empty = 0;
        loop {
            // Long polling: a short receive on SQS asks only some of its servers and can come back empty while
            // messages remain. Two empty long polls in a row mean the queue has nothing left to show.
            let got = queue.receive(10, INSPECT_VISIBILITY, empty_wait).await?;
            if got.is_empty() {
                empty += 1;
                if empty >= 2 {
                    return Ok(());
                }
                continue;
            }
            empty = 0;
            for m in got {
                out.scanned += 1;
                match matcher.redact_json_text(&m.body) {
                    Redaction::Keep => kept.push(m.receipt_handle),
                    Redaction::Drop => {
                        queue.delete(&m.receipt_handle).await?;
                        out.deleted += 1;
                    }
                    Redaction::Rewrite(body) => {
                        let failed = queue.send_batch(&[OutgoingMessage { id: "0".into(), body }]).await?;
                        if !failed.is_empty() {
                            return Err(PortError::Unavailable("the rewritten message was refused".into()));
                        }
                        queue.delete(&m.receipt_handle).await?;
                        out.rewritten += 1;
                    }
                }
            }
            if out.scanned as usize >= MAX_QUEUE_MESSAGES {
                return Err(PortError::Unavailable(format!(
                    "more than {MAX_QUEUE_MESSAGES} messages to inspect; the rest on retry"
                )));
            }
        }
    }
    .await;
    for handle in kept {
        // Best effort: a message left hidden comes back by itself when its visibility ends.
        let _ = queue.change_visibility(&handle, Duration::ZERO).await;
    }
    result.map(|()| out)
}

/// Removes the subject from every object under `prefix`: `.json` documents that mention it are deleted, JSON
/// Lines and CSV files lose the lines that do (and go when nothing is left), anything else that mentions it is
/// deleted. Gzip (`.gz`) is read and written back. With `delete_whole_files`, a file that would be rewritten is
/// deleted instead (partner files).
///
/// In a store that keeps versions (a versioned S3 bucket) a delete or a rewrite leaves the old bytes behind as an
/// earlier version; every object changed here loses its earlier versions right after the change. Then the
/// earlier versions still stored under `prefix` are read, and an object any of whose earlier versions mentions the
/// subject loses them all: that finishes a run that stopped between a change and its clean-up (its retry finds
/// the current object already without the subject), and reaches versions other writers left (an overwritten
/// report, a redriven quarantine file).
pub async fn purge_objects<O: ObjectStore>(
    store: &O,
    prefix: &str,
    matcher: &Matcher,
    delete_whole_files: bool,
) -> Result<Purged, PortError> {
    let mut out = Purged::default();
    for meta in store.list(prefix).await? {
        check_size(meta.size, prefix)?;
        let Some(bytes) = store.get(&meta.key).await? else { continue };
        out.scanned += 1;
        let (verdict, gz) = judge(&meta.key, bytes, matcher)?;
        let verdict = match verdict {
            Redaction::Rewrite(_) if delete_whole_files => Redaction::Drop,
            v => v,
        };
        match verdict {
            Redaction::Keep => continue,
            Redaction::Drop => {
                store.delete(&meta.key).await?;
                out.deleted += 1;
            }
            Redaction::Rewrite(new) => {
                let bytes = if gz {
                    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
                    enc.write_all(new.as_bytes())
                        .and_then(|()| enc.finish())
                        .map_err(|e| PortError::Invalid(e.to_string()))?
                } else {
                    new.into_bytes()
                };
                store.put(&meta.key, bytes).await?;
                out.rewritten += 1;
            }
        }
        out.earlier_removed += store.delete_earlier_versions(&meta.key).await? as u64;
    }

    // Listed after the changes above, so it holds only what they did not clear.
    let earlier = store.list_earlier_versions(prefix).await?;
    let mut cleared: Option<&str> = None;
    for version in &earlier {
        if cleared == Some(version.key.as_str()) {
            continue;
        }
        check_size(version.size, prefix)?;
        let Some(bytes) = store.get_version(&version.key, &version.version_id).await? else { continue };
        out.earlier_scanned += 1;
        if judge(&version.key, bytes, matcher)?.0 != Redaction::Keep {
            out.earlier_removed += store.delete_earlier_versions(&version.key).await? as u64;
            cleared = Some(version.key.as_str());
        }
    }
    Ok(out)
}

fn check_size(size: u64, prefix: &str) -> Result<(), PortError> {
    if size > MAX_OBJECT_BYTES {
        return Err(PortError::Invalid(format!("an object under {prefix} is too large to inspect")));
    }
    Ok(())
}

/// What to do with the object (or earlier version) `key` holding `bytes`, and whether it was gzipped.
fn judge(key: &str, bytes: Vec<u8>, matcher: &Matcher) -> Result<(Redaction, bool), PortError> {
    let gz = bytes.starts_with(&[0x1f, 0x8b]);
    let plain = if gz {
        let mut s = Vec::new();
        GzDecoder::new(bytes.as_slice())
            .take(MAX_OBJECT_BYTES * 4)
            .read_to_end(&mut s)
            .map_err(|_| PortError::Invalid("a gzip object cannot be read".into()))?;
        s
    } else {
        bytes
    };
    let name = key.trim_end_matches(".gz");
    let text = String::from_utf8_lossy(&plain);
    let verdict = if name.ends_with(".jsonl") || name.ends_with(".ndjson") {
        redact_lines(&text, |line| matcher.redact_json_text(line) != Redaction::Keep)
    } else if name.ends_with(".csv") || name.ends_with(".tsv") {
        redact_lines(&text, |line| csv_line_mentions(line, matcher))
    } else {
        match matcher.redact_json_text(&text) {
            Redaction::Keep => Redaction::Keep,
            _ => Redaction::Drop,
        }
    };
    Ok((verdict, gz))
}

/// Keeps the lines `mentions` says nothing about (the first line of a CSV is its header and always stays).
fn redact_lines(text: &str, mentions: impl Fn(&str) -> bool) -> Redaction {
    let mut kept = String::with_capacity(text.len());
    let mut removed = 0usize;
    let mut data_lines = 0usize;
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches(['\n', '\r']);
        if !body.is_empty() && mentions(body) {
            removed += 1;
        } else {
            if !body.is_empty() {
                data_lines += 1;
            }
            kept.push_str(line);
        }
    }
    match removed {
        0 => Redaction::Keep,
        _ if data_lines == 0 => Redaction::Drop,
        _ => Redaction::Rewrite(kept),
    }
}

/// Whether any field of one CSV line mentions the subject. Fields are split by the `csv` reader (quotes
/// honoured); a record spanning lines is judged line by line, which only ever removes more.
fn csv_line_mentions(line: &str, matcher: &Matcher) -> bool {
    let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(line.as_bytes());
    let mut record = csv::StringRecord::new();
    match reader.read_record(&mut record) {
        Ok(true) => record.iter().any(|f| matcher.mentions_str(f)),
        _ => matcher.mentions_str(line),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn subject() -> Subject {
        let mut s = Subject::default();
        for (kind, value) in
            [(IdType::Email, "ann@example.com"), (IdType::UserId, "u-ann"), (IdType::Phone, "+14155550100")]
        {
            let id = Identifier::new(kind, value, None).expect("id");
            s.identifiers.insert(id.hashed());
            s.identifiers.insert(id);
        }
        s.profiles.insert("prof_ann".into());
        s
    }

    #[test]
    fn the_matcher_knows_every_spelling_and_nothing_else() {
        let m = Matcher::new(&subject(), Some("1"));
        for yes in [
            "ann@example.com",
            " Ann@Example.COM ",
            "u-ann",
            "U-ANN",
            "+1 (415) 555-0100",
            "4155550100",
            "prof_ann",
            &sha256_hex(b"ann@example.com"),
            &sha256_hex(b"u-ann").to_uppercase(),
        ] {
            assert!(m.mentions_str(yes), "{yes}");
        }
        for no in ["bob@example.com", "u-ann2", "prof_bob", "", "example.com", "4155550101", "ann"] {
            assert!(!m.mentions_str(no), "{no}");
        }
        assert!(m.mentions(&json!({"context": {"traits": {"email": "ANN@example.com"}}})));
        assert!(m.mentions(&json!([1, {"x": ["u-ann"]}])));
        assert!(!m.mentions(&json!({"userId": "u-bob", "n": 4155550101u64})));
        assert!(m.mentions(&json!({"userId": "u-bob", "n": 4155550100u64})), "a phone written as a number");
    }

    #[test]
    fn batches_lose_only_the_subjects_entries() {
        let m = Matcher::new(&subject(), None);
        let envelope = json!({"v": 1, "sourceId": "web", "events": [
            {"userId": "u-ann", "messageId": "1"}, {"userId": "u-bob", "messageId": "2"}]});
        match m.redact_json_text(&envelope.to_string()) {
            Redaction::Rewrite(text) => {
                let v: Value = serde_json::from_str(&text).expect("json");
                assert_eq!(v["events"], json!([{"userId": "u-bob", "messageId": "2"}]));
                assert_eq!(v["sourceId"], "web");
            }
            other => panic!("{other:?}"),
        }
        let only_ann = json!({"v": 1, "sourceId": "web", "events": [{"userId": "u-ann"}]});
        assert_eq!(m.redact_json_text(&only_ann.to_string()), Redaction::Drop);
        let changes = json!({"v": 1, "profiles": ["prof_bob", "prof_ann"]});
        assert_eq!(
            m.redact_json_text(&changes.to_string()),
            Redaction::Rewrite(json!({"v": 1, "profiles": ["prof_bob"]}).to_string())
        );
        let dead_letter = json!({"envelope": {"profile": "prof_ann", "event": {"userId": "x"}}, "reason": "http_500"});
        assert_eq!(m.redact_json_text(&dead_letter.to_string()), Redaction::Drop);
        assert_eq!(m.redact_json_text(&json!({"events": [{"userId": "u-bob"}]}).to_string()), Redaction::Keep);
        assert_eq!(m.redact_json_text("plain text naming ANN@example.com"), Redaction::Drop);
        assert_eq!(m.redact_json_text("plain text naming nobody"), Redaction::Keep);
    }

    #[test]
    fn lines_files_lose_the_subjects_lines() {
        let m = Matcher::new(&subject(), None);
        let csv = "email,plan\nbob@example.com,free\n\"Ann@Example.com\",pro\nzed@example.com,\"a, b\"\n";
        assert_eq!(
            redact_lines(csv, |l| csv_line_mentions(l, &m)),
            Redaction::Rewrite("email,plan\nbob@example.com,free\nzed@example.com,\"a, b\"\n".into())
        );
        assert_eq!(redact_lines("a,b\nc,d\n", |l| csv_line_mentions(l, &m)), Redaction::Keep);
        let jsonl = "{\"userId\":\"u-ann\"}\n{\"userId\":\"u-bob\"}\n";
        assert_eq!(
            redact_lines(jsonl, |l| m.redact_json_text(l) != Redaction::Keep),
            Redaction::Rewrite("{\"userId\":\"u-bob\"}\n".into())
        );
        assert_eq!(
            redact_lines("{\"userId\":\"u-ann\"}\n", |l| m.redact_json_text(l) != Redaction::Keep),
            Redaction::Drop
        );
    }
}
