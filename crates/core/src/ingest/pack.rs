//! PLACEHOLDER (helper replaces): packing into queue messages.
use serde::{Deserialize, Serialize};

use super::RequestError;

pub const ENVELOPE_VERSION: u32 = 1;

/// The body of one events-queue message: a source and up to a few hundred normalized events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    pub v: u32,
    pub source_id: String,
    pub events: Vec<serde_json::Value>,
}

pub fn pack(
    source_id: &str,
    events: &[serde_json::Map<String, serde_json::Value>],
    _max_message_bytes: usize,
) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            serde_json::to_string(&Envelope {
                v: ENVELOPE_VERSION,
                source_id: source_id.to_string(),
                events: vec![serde_json::Value::Object(e.clone())],
            })
            .unwrap_or_default()
        })
        .collect()
}

pub fn gunzip_bounded(bytes: &[u8], max: usize) -> Result<Vec<u8>, RequestError> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| RequestError::bad_request("invalid_gzip", e.to_string()))?;
    Ok(out)
}
