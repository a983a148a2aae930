//! Data subject requests (OpenDSR 2.0): request validation ([`request`]), the stored request and its lifecycle,
//! the audit log ([`record`]), the tasks the DSR queue carries, suppression of erased subjects, and the workspace's
//! `dsr:` settings.
//!
//! ## Suppression
//! Erasure does not delete a subject's identity items: it turns each into a tombstone that points at no profile
//! and names the request (`sup`). Stitch already reads the identity item of every identifier of every event, so an
//! event of an erased person is recognised at no extra cost and dropped; the tombstone's key is the identity
//! item's (a hash of `type:value`), so it holds no value. Lifting a suppression deletes the tombstones.

pub mod ports;
pub mod record;
pub mod request;
pub mod suppression;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use ports::{signature_headers, ResultLinks, Signer};
pub use record::{
    discovery_body, request_key, rfc3339, waiting_key, AuditRow, DsrRecord, ExportResult, RequestStatus, Resolution,
    StatusChange, StoreReceipt, SubjectKey, TransitionError,
};
pub use request::{parse_create, Api, CreateRequest, FieldError, IdentityFormat, Regulation, RequestType};

/// Attribute of a suppressed identity item: the request that erased it.
pub const SUPPRESSED_ATTR: &str = "sup";
/// Attribute of a suppressed identity item: when it was erased (epoch ms).
pub const SUPPRESSED_AT_ATTR: &str = "sup_at";
/// Longest waiting period (90 days).
pub const MAX_WAITING_DAYS: u32 = 90;
/// How long an export link works (OpenDSR results are fetched once; 7 days is the and mParticle's window).
pub const RESULTS_TTL_MS: i64 = 7 * 86_400_000;

/// Attributes of an identity item that marks an erased identifier.
pub fn tombstone_attrs(kind: &str, request_id: &str, at_ms: i64) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("t".into(), Value::String(kind.to_string()));
    m.insert(SUPPRESSED_ATTR.into(), Value::String(request_id.to_string()));
    m.insert(SUPPRESSED_AT_ATTR.into(), Value::from(at_ms));
    m
}

/// The request that suppressed an identity item, if it is a tombstone.
pub fn suppressed_by(attrs: &Map<String, Value>) -> Option<&str> {
    attrs.get(SUPPRESSED_ATTR).and_then(Value::as_str)
}

/// What the DSR queue carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "snake_case")]
pub enum DsrTask {
    /// Carry out a request (its waiting period over).
    Process { id: String },
    /// Tell one callback URL (by index in the request's list) about a status.
    Callback { id: String, status: RequestStatus, url: usize },
}

impl DsrTask {
    pub fn to_body(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The workspace's `dsr:` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DsrSettings {
    /// The domain this processor signs as (`X-OpenDSR-Processor-Domain`); also the key of its extensions.
    pub processor_domain: String,
    /// `controller_id` in answers: the workspace's name for the controller it serves.
    pub controller_id: String,
    /// Days a request stays pending (cancellable) before it is carried out; 0 (the default) starts at once.
    /// A controller may skip it per request (mParticle's `skip_waiting_period`).
    pub waiting_period_days: u32,
    /// Days promised in `expected_completion_time`, counted after any waiting period (GDPR allows one month).
    pub expected_completion_days: u32,
}

impl Default for DsrSettings {
    fn default() -> Self {
        DsrSettings {
            processor_domain: "tributary.local".into(),
            controller_id: "tributary".into(),
            waiting_period_days: 0,
            expected_completion_days: 30,
        }
    }
}

impl DsrSettings {
    pub fn check(&self) -> Result<(), String> {
        let d = &self.processor_domain;
        if d.is_empty()
            || d.len() > 253
            || !d.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'-' || c == b':')
        {
            return Err("processor_domain must be a domain name (letters, digits, '.', '-')".into());
        }
        if self.controller_id.is_empty() || self.controller_id.len() > 128 {
            return Err("controller_id must be 1 to 128 characters".into());
        }
        if self.waiting_period_days > MAX_WAITING_DAYS {
            return Err(format!("waiting_period_days must be at most {MAX_WAITING_DAYS}"));
        }
        if !(1..=90).contains(&self.expected_completion_days) {
            return Err("expected_completion_days must be 1..=90".into());
        }
        Ok(())
    }

    pub fn waiting_ms(&self) -> i64 {
        i64::from(self.waiting_period_days) * 86_400_000
    }

    pub fn completion_ms(&self) -> i64 {
        i64::from(self.expected_completion_days) * 86_400_000
    }
}

#[cfg(test)]
mod tests;
