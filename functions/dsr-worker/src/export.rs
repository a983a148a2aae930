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
use tributary_core::ports::{Item, TableStore};
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

/// Largest export, uncompressed. A subject past it (years of history at the per-day bound) fails the request loudly
/// (it is retried, then dead-lettered for a person to look at) instead of exhausting the function's memory.
pub const MAX_EXPORT_BYTES: usize = 256 * 1024 * 1024;

/// The export's files as they are written: JSON Lines per file, line counts, and the total size.
struct Files {
    data: BTreeMap<&'static str, (Vec<u8>, u64)>,
    /// Current consent states, written after the history.
    consent_current: Vec<u8>,
    bytes: usize,
    cap: usize,
}

impl Files {
    fn new() -> Files {
        Files::with_cap(MAX_EXPORT_BYTES)
    }

    fn with_cap(cap: usize) -> Files {
        Files {
            data: FILES.iter().map(|f| (*f, (Vec::new(), 0))).collect(),
            consent_current: Vec::new(),
            bytes: 0,
            cap,
        }
    }

    fn push(&mut self, file: &'static str, v: &Value) -> Result<(), ReadError> {
        let entry = self.data.entry(file).or_default();
        Self::write(&mut entry.0, v, &mut self.bytes, self.cap)?;
        entry.1 += 1;
        Ok(())
    }

    fn push_current_consent(&mut self, v: &Value) -> Result<(), ReadError> {
        Self::write(&mut self.consent_current, v, &mut self.bytes, self.cap)?;
        self.data.entry("consent").or_default().1 += 1;
        Ok(())
    }

    fn write(out: &mut Vec<u8>, v: &Value, bytes: &mut usize, cap: usize) -> Result<(), ReadError> {
        let before = out.len();
        serde_json::to_writer(&mut *out, v).map_err(|e| ReadError::Corrupt(format!("export line: {e}")))?;
        out.push(b'\n');
        *bytes += out.len() - before;
        if *bytes > cap {
            return Err(ReadError::Corrupt(format!("the export is larger than {cap} bytes")));
        }
        Ok(())
    }
}

/// Every row of `pk` under `prefix`, a page at a time, handed to `each` (so memory holds one page).
async fn for_each_row<T: TableStore>(
    table: &T,
    pk: &str,
    prefix: &str,
    mut each: impl FnMut(Item) -> Result<(), ReadError>,
) -> Result<(), ReadError> {
    let mut after: Option<String> = None;
    loop {
        let page = table.query(pk, prefix, after.as_deref(), PAGE).await?;
        for item in page.items {
            each(item)?;
        }
        match page.next {
            // A cursor that does not move forward would loop for ever; treat it as the end.
            Some(next) if after.as_deref().is_none_or(|a| next.as_str() > a) => after = Some(next),
            _ => return Ok(()),
        }
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
    let mut files = Files::new();
    let value = |v: Result<Value, serde_json::Error>| v.unwrap_or(Value::Null);

    for root in &subject.roots {
        let Some(resolved) = read::resolve(table, &Lookup::Profile(root.clone())).await? else { continue };
        let view = read::view(table, &resolved).await?;
        for id in &view.identities {
            files.push("identities", &value(serde_json::to_value(id)))?;
        }
        for (name, t) in &view.traits {
            let mut v = value(serde_json::to_value(t));
            v["name"] = json!(name);
            v["profile_id"] = json!(view.profile_id);
            files.push("traits", &v)?;
        }
        for a in &view.audiences {
            let mut v = value(serde_json::to_value(a));
            v["profile_id"] = json!(view.profile_id);
            files.push("audiences", &v)?;
        }
        for (purpose, c) in &view.consent {
            let mut v = value(serde_json::to_value(c));
            v["purpose"] = json!(purpose);
            v["current"] = json!(true);
            v["profile_id"] = json!(view.profile_id);
            files.push_current_consent(&v)?;
        }
        files.push("profile", &value(serde_json::to_value(&view)))?;
    }

    for profile in &subject.profiles {
        let pk = layout::profile_pk(profile);
        for_each_row(table, &pk, EVENT_PREFIX, |item| {
            let Ok(row) = EventRow::from_attrs(&item.attrs) else { return Ok(()) };
            if let Some(event) = row.event.as_object() {
                for (purpose, granted) in consent::extract(event, &workspace.consent) {
                    files.push(
                        "consent",
                        &json!({
                            "purpose": purpose, "granted": granted, "event_time": rfc3339(row.ts),
                            "source": row.source, "message_id": row.message_id, "profile_id": profile,
                        }),
                    )?;
                }
                let library = event.get("context").and_then(|c| c.get("library")).and_then(|l| l.get("name"));
                if library.and_then(Value::as_str) == Some(LIBRARY_NAME) {
                    files.push(
                        "imports",
                        &json!({
                            "source": row.source, "message_id": row.message_id, "event_time": rfc3339(row.ts),
                            "received_at": rfc3339(row.received), "type": row.kind, "profile_id": profile,
                        }),
                    )?;
                }
            }
            files.push(
                "events",
                &json!({
                    "profile_id": profile, "source": row.source, "message_id": row.message_id,
                    "received_at": rfc3339(row.received), "truncated": row.truncated, "event": row.event,
                }),
            )
        })
        .await?;
        for_each_row(table, &pk, RECEIPT_PREFIX, |item| {
            let Ok(r) = Receipt::from_attrs(&item.attrs) else { return Ok(()) };
            let mut v = r.view();
            v["profile_id"] = json!(profile);
            files.push("deliveries", &v)
        })
        .await?;
        for_each_row(table, &pk, LEDGER_PREFIX, |item| {
            let Ok(row) = LedgerRow::from_attrs(&item.attrs) else { return Ok(()) };
            let mut v = value(serde_json::to_value(&row));
            v["profile_id"] = json!(profile);
            v["at"] = json!(rfc3339(row.at));
            v["event_ts"] = json!(rfc3339(row.event_ts));
            files.push("ledger", &v)
        })
        .await?;
    }

    let counts: BTreeMap<&'static str, u64> =
        FILES.iter().map(|f| (*f, files.data.get(f).map_or(0, |(_, n)| *n))).collect();
    let manifest = json!({
        "subject_request_id": request_id,
        "generated_at": rfc3339(now_ms),
        "format": "JSON Lines, one file per kind of record",
        "files": counts.iter().map(|(f, n)| (format!("{f}.jsonl"), json!(n))).collect::<serde_json::Map<_, _>>(),
    });
    let archive = pack(files, &manifest, now_ms).map_err(|e| ReadError::Corrupt(format!("export archive: {e}")))?;
    Ok(Export { archive, counts })
}

fn pack(mut files: Files, manifest: &Value, now_ms: i64) -> std::io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::default()));
    let mut add = |name: String, data: &[u8]| -> std::io::Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(u64::try_from(now_ms / 1000).unwrap_or(0));
        tar.append_data(&mut header, name, data)
    };
    add("manifest.json".into(), &serde_json::to_vec_pretty(manifest).map_err(std::io::Error::other)?)?;
    // History first, current state after it.
    let current = std::mem::take(&mut files.consent_current);
    if let Some((consent, _)) = files.data.get_mut("consent") {
        consent.extend_from_slice(&current);
    }
    for f in FILES {
        add(format!("{f}.jsonl"), files.data.get(f).map(|(d, _)| d.as_slice()).unwrap_or_default())?;
    }
    tar.into_inner()?.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_export_past_its_bound_is_refused_and_consent_history_comes_before_the_state() {
        let mut files = Files::with_cap(100);
        files.push("events", &json!({"n": 1})).expect("fits");
        files.push_current_consent(&json!({"purpose": "ads", "current": true})).expect("fits");
        files.push("consent", &json!({"purpose": "ads", "granted": false})).expect("fits");
        let err = files.push("events", &json!({"pad": "x".repeat(40)})).expect_err("past the bound");
        assert!(err.to_string().contains("larger than 100 bytes"), "{err}");

        let mut files = Files::new();
        files.push_current_consent(&json!({"state": 1})).expect("line");
        files.push("consent", &json!({"history": 1})).expect("line");
        let counts: u64 = files.data["consent"].1;
        assert_eq!(counts, 2);
        let archive = pack(files, &json!({}), 0).expect("pack");
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(archive.as_slice()));
        let consent = tar
            .entries()
            .expect("entries")
            .filter_map(Result::ok)
            .find_map(|mut e| {
                let name = e.path().ok()?.to_string_lossy().into_owned();
                let mut text = String::new();
                std::io::Read::read_to_string(&mut e, &mut text).ok()?;
                (name == "consent.jsonl").then_some(text)
            })
            .expect("consent.jsonl");
        assert_eq!(consent, "{\"history\":1}\n{\"state\":1}\n");
    }
}
