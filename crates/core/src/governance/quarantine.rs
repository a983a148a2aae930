//! Quarantined events: the record ingest stores for an event its source's tracking plan holds back, and where it is
//! stored. Pure: building keys and records only; the handler does the `put`.
//!
//! Key: `quarantine/<source>/<YYYY-MM-DD>/<message_hash>.json`, partitioned by source and UTC day of `receivedAt` so
//! a redrive or an expiry rule can work one source-day at a time, and named by
//! [`message_hash`](crate::profile::layout::message_hash) so that no event value (a messageId may be an email)
//! appears in a key. The key is deterministic, so a retried request overwrites the same object instead of adding one.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::{Date, Month, OffsetDateTime, UtcOffset};

use super::plan::Violation;
use crate::config::SourceId;

/// Version of the [`QuarantineRecord`] format.
pub const RECORD_VERSION: u32 = 1;

/// First segment of every quarantine key.
const ROOT: &str = "quarantine";

/// One quarantined event, stored as JSON at [`key`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QuarantineRecord {
    /// Format version ([`RECORD_VERSION`]).
    pub v: u32,
    pub source_id: String,
    pub message_id: String,
    /// RFC 3339, as in the event.
    pub received_at: String,
    /// Version of the tracking plan that held the event back, so a redrive knows which plan it failed.
    pub plan_version: String,
    pub violations: Vec<Violation>,
    /// SHA-256 of each identifier of the event (`type:value`, normalized, as the identity graph keys them): how an
    /// erasure request finds a subject's held events without reading every event.
    #[serde(default)]
    pub subjects: Vec<String>,
    /// The normalized event, after minimization and PII processing (what would have been queued).
    pub event: Value,
}

impl QuarantineRecord {
    /// The record of `event`, received at `received_at`. `messageId` and `receivedAt` are read from the event (ingest
    /// sets both); a missing `receivedAt` falls back to `received_at`.
    pub fn new(
        source_id: &str,
        received_at: OffsetDateTime,
        plan_version: String,
        violations: Vec<Violation>,
        event: Map<String, Value>,
    ) -> Self {
        let message_id = event.get("messageId").and_then(Value::as_str).unwrap_or_default().to_owned();
        let received = match event.get("receivedAt").and_then(Value::as_str) {
            Some(s) => s.to_owned(),
            None => received_at
                .to_offset(UtcOffset::UTC)
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
        };
        let subjects = crate::identity::extract(&event, &crate::identity::ExtractOptions::default())
            .ids
            .iter()
            .map(|id| crate::sha256_hex(id.key().as_bytes()))
            .collect();
        QuarantineRecord {
            v: RECORD_VERSION,
            source_id: source_id.to_owned(),
            message_id,
            received_at: received,
            plan_version,
            violations,
            subjects,
            event: Value::Object(event),
        }
    }
}

/// `quarantine/<source>/`: every quarantined event of a source.
pub fn prefix(source_id: &str) -> String {
    format!("{ROOT}/{source_id}/")
}

/// `quarantine/<source>/<YYYY-MM-DD>/<message_hash>.json`.
pub fn key(source_id: &str, received_day: Date, message_hash: &str) -> String {
    format!("{}{}/{message_hash}.json", prefix(source_id), day_string(received_day))
}

/// The key of the event `message_id` of `source_id` received at `received_at` (its UTC day).
pub fn key_for(source_id: &str, received_at: OffsetDateTime, message_id: &str) -> String {
    let day = received_at.to_offset(UtcOffset::UTC).date();
    key(source_id, day, &crate::profile::layout::message_hash(source_id, message_id))
}

/// The parts of a key written by [`key`]: source, day and message hash. `None` for anything else.
pub fn parse_key(key: &str) -> Option<(String, Date, String)> {
    let mut parts = key.split('/');
    let (root, source, day, file) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if root != ROOT || parts.next().is_some() {
        return None;
    }
    SourceId::try_from(source.to_owned()).ok()?;
    let day = parse_day(day)?;
    let hash = file.strip_suffix(".json")?;
    let is_hash = hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    is_hash.then(|| (source.to_owned(), day, hash.to_owned()))
}

// Written by hand rather than with a format description: it cannot fail, so `key` needs no Result.
fn day_string(d: Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

fn parse_day(s: &str) -> Option<Date> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = s.get(r)?;
        part.bytes().all(|c| c.is_ascii_digit()).then(|| part.parse().ok())?
    };
    let year = i32::try_from(num(0..4)?).ok()?;
    let month = Month::try_from(u8::try_from(num(5..7)?).ok()?).ok()?;
    let day = u8::try_from(num(8..10)?).ok()?;
    Date::from_calendar_date(year, month, day).ok()
}

#[cfg(test)]
mod tests {

    #[test]
    fn records_name_their_subjects_by_hash_only() {
        use crate::identity::{IdType, Identifier};
        let event = serde_json::json!({"type": "identify", "userId": "u1", "messageId": "m1",
            "traits": {"email": "Ann@Example.com"}});
        let event = event.as_object().cloned().unwrap_or_default();
        let record = QuarantineRecord::new("web", OffsetDateTime::UNIX_EPOCH, "v1".into(), Vec::new(), event);
        let hash = |id: Identifier| crate::sha256_hex(id.key().as_bytes());
        let email = Identifier::new(IdType::Email, "ann@example.com", None).expect("email");
        for expected in
            [hash(Identifier::new(IdType::UserId, "u1", None).expect("id")), hash(email.hashed()), hash(email)]
        {
            assert!(record.subjects.contains(&expected), "{:?}", record.subjects);
        }
        let json = serde_json::to_string(&record.subjects).unwrap_or_default();
        assert!(!json.contains("ann@") && !json.contains("u1\""), "subjects are hashes only: {json}");
    }
    use serde_json::json;
    use time::macros::{date, datetime};

    use super::*;
    use crate::governance::plan::ViolationKind;

    const HASH: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn keys_are_partitioned_by_source_and_day_and_round_trip() {
        let k = key("web", date!(2025 - 03 - 09), HASH);
        assert_eq!(k, format!("quarantine/web/2025-03-09/{HASH}.json"));
        assert!(k.starts_with(&prefix("web")));
        assert!(!k.starts_with(&prefix("we")), "a prefix names one source, not every source starting the same");
        assert_eq!(parse_key(&k), Some(("web".to_owned(), date!(2025 - 03 - 09), HASH.to_owned())));
        crate::ports::validate_object_key(&k).expect("a valid object key");
    }

    #[test]
    fn key_for_uses_the_utc_day_and_hides_the_message_id() {
        let at = datetime!(2025-03-10 01:30 +05:00); // 2025-03-09 20:30 UTC
        let k = key_for("web", at, "jake@example.com");
        let (source, day, hash) = parse_key(&k).expect("parses");
        assert_eq!((source.as_str(), day), ("web", date!(2025 - 03 - 09)));
        assert_eq!(hash, crate::profile::layout::message_hash("web", "jake@example.com"));
        assert!(!k.contains("jake") && !k.contains("example"), "{k}");
        assert_eq!(k, key_for("web", at, "jake@example.com"), "deterministic, so retried puts overwrite");
    }

    #[test]
    fn foreign_keys_do_not_parse() {
        for k in [
            "",
            "quarantine",
            "quarantine/web/2025-03-09",
            &format!("archive/web/2025-03-09/{HASH}.json"),
            &format!("quarantine/Web/2025-03-09/{HASH}.json"),
            &format!("quarantine/web/2025-3-9/{HASH}.json"),
            &format!("quarantine/web/2025-02-30/{HASH}.json"),
            &format!("quarantine/web/+025-03-09/{HASH}.json"),
            &format!("quarantine/web/2025-03-09/{HASH}.txt"),
            &format!("quarantine/web/2025-03-09/{}.json", &HASH[1..]),
            &format!("quarantine/web/2025-03-09/{}.json", HASH.to_uppercase()),
            &format!("quarantine/web/2025-03-09/{HASH}.json/x"),
        ] {
            assert_eq!(parse_key(k), None, "{k}");
        }
    }

    #[test]
    fn record_is_camel_case_json_with_the_event() {
        let event = json!({"type": "track", "event": "Unplanned", "messageId": "m-1",
                           "receivedAt": "2025-03-10T12:00:10.000Z", "properties": {}});
        let Value::Object(map) = event.clone() else { unreachable!() };
        let violations = vec![Violation { kind: ViolationKind::UnplannedEvent, path: "/event".into() }];
        let r = QuarantineRecord::new("web", datetime!(2025-03-10 12:00:10 UTC), "v7".into(), violations, map);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v,
            json!({"v": 1, "sourceId": "web", "messageId": "m-1", "receivedAt": "2025-03-10T12:00:10.000Z",
                   "planVersion": "v7", "violations": [{"kind": "unplanned_event", "path": "/event"}], "subjects": [],
                   "event": event})
        );
        assert_eq!(serde_json::from_value::<QuarantineRecord>(v).unwrap(), r);
    }

    #[test]
    fn record_falls_back_to_the_request_time() {
        let r = QuarantineRecord::new("web", datetime!(2025-03-10 13:00 +01:00), "v1".into(), vec![], Map::new());
        assert_eq!(r.received_at, "2025-03-10T12:00:00Z");
        assert_eq!(r.message_id, "");
    }
}
