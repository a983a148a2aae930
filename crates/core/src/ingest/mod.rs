//! The ingest pipeline, pure: bounded body decoding and JSON parsing, per-type validation, normalization,
//! enrichment and packing into queue messages. The `ingest` function and the local runtime wrap it with I/O.
//!
//! Flow for one request: [`gunzip_bounded`] (when `Content-Encoding: gzip`) → [`parse_body`] → [`process`] →
//! [`pack`].

mod json;
mod normalize;
mod pack;
pub mod sample;
pub mod timestamp;

pub use json::parse_body;
pub use normalize::process;
pub use pack::{gunzip_bounded, pack, Envelope, ENVELOPE_VERSION};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Bounds applied to every request of a source. Defaults mirror Segment's documented limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest serialized event, bytes (Segment: 32 KB).
    pub max_event_bytes: usize,
    /// Largest request body, bytes, checked before and after gunzip (Segment: 500 KB).
    pub max_request_bytes: usize,
    /// Most events in one batch request (Segment: 2,500).
    pub max_batch_events: usize,
    /// Deepest nesting of arrays and objects in a body.
    pub max_depth: usize,
    /// Longest string (key or value), bytes.
    pub max_string_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_event_bytes: 32 * 1024,
            max_request_bytes: 500 * 1024,
            max_batch_events: 2_500,
            max_depth: 32,
            max_string_bytes: 16 * 1024,
        }
    }
}

/// Hard ceilings that no configuration may exceed: they keep one request's memory bounded.
pub const CEILING: Limits = Limits {
    max_event_bytes: 1024 * 1024,
    max_request_bytes: 4 * 1024 * 1024,
    max_batch_events: 10_000,
    max_depth: 100,
    max_string_bytes: 1024 * 1024,
};

impl Limits {
    /// Each bound must be ≥ 1 and ≤ [`CEILING`].
    pub fn check(&self) -> Result<(), String> {
        let pairs = [
            ("max_event_bytes", self.max_event_bytes, CEILING.max_event_bytes),
            ("max_request_bytes", self.max_request_bytes, CEILING.max_request_bytes),
            ("max_batch_events", self.max_batch_events, CEILING.max_batch_events),
            ("max_depth", self.max_depth, CEILING.max_depth),
            ("max_string_bytes", self.max_string_bytes, CEILING.max_string_bytes),
        ];
        for (name, v, max) in pairs {
            if v == 0 || v > max {
                return Err(format!("{name} must be between 1 and {max}, got {v}"));
            }
        }
        Ok(())
    }

    /// The larger of each bound.
    pub fn widest(&self, other: &Limits) -> Limits {
        Limits {
            max_event_bytes: self.max_event_bytes.max(other.max_event_bytes),
            max_request_bytes: self.max_request_bytes.max(other.max_request_bytes),
            max_batch_events: self.max_batch_events.max(other.max_batch_events),
            max_depth: self.max_depth.max(other.max_depth),
            max_string_bytes: self.max_string_bytes.max(other.max_string_bytes),
        }
    }
}

/// The tracking routes. `Batch` and `Import` take `{"batch":[...]}`; the others take one message whose `type`
/// comes from the route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    Track,
    Identify,
    Page,
    Screen,
    Group,
    Alias,
    Batch,
    Import,
}

impl Route {
    /// Matches on the path's suffix so that an API Gateway stage prefix (`/prod/v1/batch`) still routes.
    pub fn from_path(path: &str) -> Option<Route> {
        let path = path.trim_end_matches('/');
        let (_, last) = path.rsplit_once("/v1/")?;
        Some(match last {
            "track" => Route::Track,
            "identify" => Route::Identify,
            "page" => Route::Page,
            "screen" => Route::Screen,
            "group" => Route::Group,
            "alias" => Route::Alias,
            "batch" => Route::Batch,
            "import" => Route::Import,
            _ => return None,
        })
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Route::Track => "track",
            Route::Identify => "identify",
            Route::Page => "page",
            Route::Screen => "screen",
            Route::Group => "group",
            Route::Alias => "alias",
            Route::Batch => "batch",
            Route::Import => "import",
        }
    }

    pub fn is_batch(&self) -> bool {
        matches!(self, Route::Batch | Route::Import)
    }
}

/// What the transport knows about the request, used for enrichment.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestContext {
    pub received_at: OffsetDateTime,
    /// Caller's address as seen by API Gateway (`requestContext.http.sourceIp`).
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
}

/// A whole request refused: the HTTP status and the `{"code","message"}` body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct RequestError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl RequestError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        RequestError { status: 400, code, message: message.into() }
    }
}

/// One event of a request that was not accepted. Messages never quote event values (no PII).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rejection {
    /// Position in the batch (0 for single-event routes).
    pub index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    pub code: &'static str,
    pub message: String,
}

/// The outcome of [`process`]: normalized events ready to pack, and the rejected ones.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Processed {
    pub accepted: Vec<serde_json::Map<String, serde_json::Value>>,
    pub rejected: Vec<Rejection>,
}

/// The write key a body carries (`writeKey` at the top level), if any.
pub fn body_write_key(body: &serde_json::Value) -> Option<&str> {
    body.get("writeKey").and_then(|v| v.as_str()).filter(|s| !s.is_empty())
}
