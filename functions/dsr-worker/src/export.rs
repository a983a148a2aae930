//! Access and portability exports: everything the platform holds about a subject, as JSON Lines files in one
//! `.tar.gz` archive.
//!
//! | file | one line per |
//! |---|---|
//! | `profile.jsonl` | profile tree (the profile API's view: traits with provenance, identities, consent, merges, audiences) |
//! | `identities.jsonl` | identifier linked to the subject (type, value, when, by which event) |
//! | `traits.jsonl` | trait, with its value, event time, source and data-party class |
//! | `consent.jsonl` | consent signal an event carried (history), then the current state per purpose |
//! | `events.jsonl` | stored event, newest first |
//! | `audiences.jsonl` | audience the subject is in |
//! | `deliveries.jsonl` | delivery receipt (destination, event, status, attempts) |
//! | `ledger.jsonl` | identity ledger row (links, merges) |
//! | `imports.jsonl` | event that came from a partner or broker file (import provenance) |
//!
//! plus `manifest.json` with the counts. `results_count` is the number of lines over all files.

use std::collections::BTreeMap;

use flate2::write::GzEncoder;
use flate2::Compression;
use serde_json::{json, Value};
use tributary_core::config::WorkspaceConfig;
use tributary_core::delivery::envelope::RECEIPT_PREFIX;
use tributary_core::delivery::Receipt;
use tributary_core::dsr::rfc3339;
use tributary_core::import::LIBRARY_NAME;
use tributary_core::ports::TableStore;
use tributary_core::profile::layout::{self, EVENT_PREFIX, LEDGER_PREFIX};
use tributary_core::profile::read::{self, Lookup, ReadError};
use tributary_core::profile::{consent, EventRow, LedgerRow};

use crate::subject::Subject;

const PAGE: usize = 500;
/// The files of an export, in archive order.
pub const FILES: [&str; 9] =
    ["profile", "identities", "traits", "consent", "events", "audiences", "deliveries", "ledger", "imports"];

/// A built export.
#[derive(Debug, Clone, PartialEq)]
pub struct Export {
    /// The `.tar.gz` archive.
    pub archive: Vec<u8>,
    /// Lines per file.
    pub counts: BTreeMap<&'static str, u64>,
}

impl Export {
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }
}

/// Reads everything about `subject` and packs it.
pub async fn build<T: TableStore>(
    table: &T,
    subject: &Subject,
    workspace: &WorkspaceConfig,
    request_id: &str,
    now_ms: i64,
) -> Result<Export, ReadError> {
    let mut files: BTreeMap<&'static str, Vec<Value>> = FILES.iter().map(|f| (*f, Vec::new())).collect();
    fn push(files: &mut BTreeMap<&'static str, Vec<Value>>, file: &'static str, v: Value) {
        files.entry(file).or_default().push(v);
    }

    for root in &subject.roots {
        let Some(resolved) = read::resolve(table, &Lookup::Profile(root.clone())).await? else { continue };
        let view = read::view(table, &resolved).await?;
        for id in &view.identities {
            push(&mut files, "identities", serde_json::to_value(id).unwrap_or(Value::Null));
        }
        for (name, t) in &view.traits {
            let mut v = serde_json::to_value(t).unwrap_or(Value::Null);
            v["name"] = json!(name);
            v["profile_id"] = json!(view.profile_id);
            push(&mut files, "traits", v);
        }
        for a in &view.audiences {
            let mut v = serde_json::to_value(a).unwrap_or(Value::Null);
            v["profile_id"] = json!(view.profile_id);
            push(&mut files, "audiences", v);
        }
        let mut current: Vec<Value> = Vec::new();
        for (purpose, c) in &view.consent {
            let mut v = serde_json::to_value(c).unwrap_or(Value::Null);
            v["purpose"] = json!(purpose);
            v["current"] = json!(true);
            v["profile_id"] = json!(view.profile_id);
            current.push(v);
        }
        push(&mut files, "profile", serde_json::to_value(&view).unwrap_or(Value::Null));
        // History first (from the events below), current state after it.
        files.entry("consent_current").or_default().extend(current);
    }

    for profile in &subject.profiles {
        let pk = layout::profile_pk(profile);
        for item in read::query_all(table, &pk, EVENT_PREFIX, PAGE).await? {
            let Ok(row) = EventRow::from_attrs(&item.attrs) else { continue };
            if let Some(event) = row.event.as_object() {
                let signals = consent::extract(event, &workspace.consent);
                for (purpose, granted) in signals {
                    push(
                        &mut files,
                        "consent",
                        json!({
                            "purpose": purpose, "granted": granted, "event_time": rfc3339(row.ts),
                            "source": row.source, "message_id": row.message_id, "profile_id": profile,
                        }),
                    );
                }
                let library = event.get("context").and_then(|c| c.get("library")).and_then(|l| l.get("name"));
                if library.and_then(Value::as_str) == Some(LIBRARY_NAME) {
                    push(
                        &mut files,
                        "imports",
                        json!({
                            "source": row.source, "message_id": row.message_id, "event_time": rfc3339(row.ts),
                            "received_at": rfc3339(row.received), "type": row.kind, "profile_id": profile,
                        }),
                    );
                }
            }
            push(
                &mut files,
                "events",
                json!({
                    "profile_id": profile, "source": row.source, "message_id": row.message_id,
                    "received_at": rfc3339(row.received), "truncated": row.truncated, "event": row.event,
                }),
            );
        }
        for item in read::query_all(table, &pk, RECEIPT_PREFIX, PAGE).await? {
            if let Ok(r) = Receipt::from_attrs(&item.attrs) {
                let mut v = r.view();
                v["profile_id"] = json!(profile);
                push(&mut files, "deliveries", v);
            }
        }
        for item in read::query_all(table, &pk, LEDGER_PREFIX, PAGE).await? {
            if let Ok(row) = LedgerRow::from_attrs(&item.attrs) {
                let mut v = serde_json::to_value(&row).unwrap_or(Value::Null);
                v["profile_id"] = json!(profile);
                v["at"] = json!(rfc3339(row.at));
                v["event_ts"] = json!(rfc3339(row.event_ts));
                push(&mut files, "ledger", v);
            }
        }
    }
    let current = files.remove("consent_current").unwrap_or_default();
    files.entry("consent").or_default().extend(current);

    let counts: BTreeMap<&'static str, u64> =
        FILES.iter().map(|f| (*f, files.get(f).map_or(0, |v| v.len() as u64))).collect();
    let manifest = json!({
        "subject_request_id": request_id,
        "generated_at": rfc3339(now_ms),
        "format": "JSON Lines, one file per kind of record",
        "files": counts.iter().map(|(f, n)| (format!("{f}.jsonl"), json!(n))).collect::<serde_json::Map<_, _>>(),
    });
    let archive = pack(&files, &manifest, now_ms).map_err(|e| ReadError::Corrupt(format!("export archive: {e}")))?;
    Ok(Export { archive, counts })
}

fn pack(files: &BTreeMap<&'static str, Vec<Value>>, manifest: &Value, now_ms: i64) -> std::io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::default()));
    let mut add = |name: String, data: Vec<u8>| -> std::io::Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(u64::try_from(now_ms / 1000).unwrap_or(0));
        tar.append_data(&mut header, name, data.as_slice())
    };
    add("manifest.json".into(), serde_json::to_vec_pretty(manifest).map_err(std::io::Error::other)?)?;
    for f in FILES {
        let mut data = Vec::new();
        for line in files.get(f).map(Vec::as_slice).unwrap_or_default() {
            serde_json::to_writer(&mut data, line).map_err(std::io::Error::other)?;
            data.push(b'\n');
        }
        add(format!("{f}.jsonl"), data)?;
    }
    tar.into_inner()?.finish()
}
