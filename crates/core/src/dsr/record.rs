//! The stored state of a data subject request, its status machine, and the OpenDSR bodies built from it.
//!
//! Layout, in the profile table:
//!
//! | item | pk | sk | attributes |
//! |---|---|---|---|
//! | request | `dsr#<subject_request_id>` | `req` | [`DsrRecord`] |
//! | waiting request | `dsr#waiting` | `<not_before ms, 13 digits>#<id>` | `id` |
//! | audit row | `audit#<YYYY-MM-DD>` | `<at ms, 13 digits>#<nonce>` | [`AuditRow`] |
//!
//! A request never stores an identity value: only the identity items' keys (hashes) it resolves to. The encoded
//! request is answered once and not kept (the spec asks controllers not to store it either).

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::request::{CreateRequest, Regulation, RequestType};
use crate::identity::Identifier;
use crate::ports::ItemKey;

/// Sort key of a request item.
pub const REQUEST_SK: &str = "req";
/// Partition of the requests waiting for their waiting period to end.
pub const WAITING_PK: &str = "dsr#waiting";
/// First part of every audit partition key (one partition per UTC day).
pub const AUDIT_PK_PREFIX: &str = "audit#";
/// Most status changes kept on a request (a request has at most four).
const MAX_HISTORY: usize = 8;

/// Key of a request.
pub fn request_key(id: &str) -> ItemKey {
    ItemKey::new(format!("dsr#{id}"), REQUEST_SK)
}

/// Key of a request's entry in the waiting list.
pub fn waiting_key(not_before_ms: i64, id: &str) -> ItemKey {
    ItemKey::new(WAITING_PK, format!("{:013}#{id}", not_before_ms.max(0)))
}

/// OpenDSR's `request_status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestStatus {
    Pending,
    InProgress,
    Completed,
    Cancelled,
}

impl RequestStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestStatus::Pending => "pending",
            RequestStatus::InProgress => "in_progress",
            RequestStatus::Completed => "completed",
            RequestStatus::Cancelled => "cancelled",
        }
    }

    /// The spec's lifecycle: pending → in_progress → completed, or pending → cancelled.
    pub fn can_become(self, to: RequestStatus) -> bool {
        matches!(
            (self, to),
            (RequestStatus::Pending, RequestStatus::InProgress)
                | (RequestStatus::Pending, RequestStatus::Cancelled)
                | (RequestStatus::InProgress, RequestStatus::Completed)
        )
    }
}

/// One identity of the subject, as the identity graph keys it: the type name and the identity item's key. The
/// value itself is never stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectKey {
    /// Identifier type name (`email`, `email_sha256`, `user_id`, …).
    pub kind: String,
    /// Partition key of the identity item (`id#<sha256(type:value)>`).
    pub pk: String,
}

impl SubjectKey {
    pub fn of(id: &Identifier) -> SubjectKey {
        SubjectKey { kind: id.kind.name().into_owned(), pk: crate::profile::layout::identity_key(id).pk }
    }
}

/// One status change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusChange {
    pub status: RequestStatus,
    /// Epoch ms.
    pub at: i64,
}

/// What a request did to one store: the proof of an erasure, or the parts of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreReceipt {
    /// The store, e.g. `profiles`, `identities`, `events`, `ledger`, `receipts`, `quarantine`, `events-dlq`,
    /// `destination:<id>`.
    pub store: String,
    /// `deleted`, `rewritten`, `suppressed`, `exported`, `forwarded`, `not_supported` or `failed`.
    pub action: String,
    /// How many items (rows, objects, messages) it concerned.
    pub count: u64,
    /// Epoch ms.
    pub at: i64,
    /// A short note without personal data (an error code, an HTTP status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl StoreReceipt {
    pub fn new(store: impl Into<String>, action: &str, count: u64, at: i64) -> StoreReceipt {
        StoreReceipt { store: store.into(), action: action.to_string(), count, at, detail: None }
    }

    pub fn view(&self) -> Value {
        let mut v = json!({"store": self.store, "action": self.action, "count": self.count, "at": rfc3339(self.at)});
        if let Some(d) = &self.detail {
            v["detail"] = Value::String(d.clone());
        }
        v
    }
}

/// An access or portability export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportResult {
    /// Object key in the results bucket.
    pub key: String,
    /// Records in the export (OpenDSR's `results_count`).
    pub count: u64,
    /// When the link stops working, epoch ms.
    pub expires_at: i64,
}

/// A stored request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DsrRecord {
    pub id: String,
    pub regulation: Regulation,
    pub kind: RequestType,
    /// The controller's `submitted_time`, as sent (RFC 3339).
    pub submitted_time: String,
    /// Epoch ms.
    pub received: i64,
    /// Epoch ms.
    pub expected_completion: i64,
    pub status: RequestStatus,
    pub history: Vec<StatusChange>,
    pub subject: Vec<SubjectKey>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub callbacks: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    /// The management key that created it.
    pub created_by: String,
    /// Legacy OpenGDPR route: answers use `X-OpenGDPR-*` headers.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub legacy: bool,
    /// End of the waiting period (epoch ms); the worker starts no sooner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub receipts: Vec<StoreReceipt>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<ExportResult>,
    /// What the subject resolved to, saved before an erasure deletes anything: once identity items are tombstones
    /// the graph no longer leads to the profiles, and a retried run must still find them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<Resolution>,
}

/// The profiles and identity items a subject resolved to (ids and key hashes only).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    /// Every profile of every tree the subject's identities lead to (roots and merged ones).
    pub profiles: Vec<String>,
    /// Every identity item of those profiles, and of the subject's own identities.
    pub identities: Vec<SubjectKey>,
    /// Destinations that have delivery receipts for those profiles: the ones a deletion is forwarded to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destinations: Vec<String>,
}

/// A status change the lifecycle does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a request that is {from} cannot become {to}", from = .from.as_str(), to = .to.as_str())]
pub struct TransitionError {
    pub from: RequestStatus,
    pub to: RequestStatus,
}

impl DsrRecord {
    /// A new, pending request. `waiting_ms` is the configured waiting period (0: none, or skipped by the controller).
    pub fn new(
        req: &CreateRequest,
        created_by: &str,
        legacy: bool,
        now_ms: i64,
        completion_ms: i64,
        waiting_ms: i64,
    ) -> DsrRecord {
        DsrRecord {
            id: req.subject_request_id.clone(),
            regulation: req.regulation,
            kind: req.kind,
            submitted_time: req.submitted_time.format(&Rfc3339).unwrap_or_default(),
            received: now_ms,
            expected_completion: now_ms + completion_ms.max(0) + waiting_ms.max(0),
            status: RequestStatus::Pending,
            history: vec![StatusChange { status: RequestStatus::Pending, at: now_ms }],
            subject: req.identities.iter().map(|i| SubjectKey::of(&i.identifier)).collect(),
            callbacks: req.status_callback_urls.clone(),
            api_version: req.api_version.clone(),
            group_id: req.group_id.clone(),
            created_by: created_by.to_string(),
            legacy,
            not_before: (waiting_ms > 0).then(|| now_ms + waiting_ms),
            receipts: Vec::new(),
            result: None,
            resolved: None,
        }
    }

    /// Moves to `to`, recording when.
    pub fn transition(&mut self, to: RequestStatus, at_ms: i64) -> Result<(), TransitionError> {
        if !self.status.can_become(to) {
            return Err(TransitionError { from: self.status, to });
        }
        self.status = to;
        if self.history.len() < MAX_HISTORY {
            self.history.push(StatusChange { status: to, at: at_ms });
        }
        Ok(())
    }

    pub fn to_attrs(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        }
    }

    pub fn from_attrs(attrs: &Map<String, Value>) -> Result<DsrRecord, serde_json::Error> {
        DsrRecord::deserialize(attrs)
    }

    /// The fields every OpenDSR answer about this request carries.
    fn base_body(&self, controller_id: &str) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("controller_id".into(), json!(controller_id));
        m.insert("expected_completion_time".into(), json!(rfc3339(self.expected_completion)));
        m.insert("subject_request_id".into(), json!(self.id));
        if let Some(g) = &self.group_id {
            m.insert("group_id".into(), json!(g));
        }
        m
    }

    /// The 201 body of a create (§7.3). `encoded_request` is the base64 of the body received.
    pub fn created_body(&self, controller_id: &str, raw_request: &[u8]) -> Value {
        use base64::Engine;
        let mut m = self.base_body(controller_id);
        m.insert("received_time".into(), json!(rfc3339(self.received)));
        m.insert("encoded_request".into(), json!(base64::engine::general_purpose::STANDARD.encode(raw_request)));
        Value::Object(m)
    }

    /// The status body (§8). `results_url` is given by the caller (a presigned or locally signed link) while the
    /// export exists and has not expired; `processor_domain` keys the receipts extension.
    pub fn status_body(&self, controller_id: &str, results_url: Option<&str>, processor_domain: &str) -> Value {
        let mut m = self.base_body(controller_id);
        m.insert("request_status".into(), json!(self.status.as_str()));
        m.insert("api_version".into(), json!(self.api_version.as_deref().unwrap_or("2.0")));
        m.insert("subject_request_type".into(), json!(self.kind.as_str()));
        m.insert("received_time".into(), json!(rfc3339(self.received)));
        if let Some(r) = &self.result {
            if let Some(url) = results_url {
                m.insert("results_url".into(), json!(url));
            }
            m.insert("results_count".into(), json!(r.count));
        }
        let history: Vec<Value> =
            self.history.iter().map(|h| json!({"status": h.status.as_str(), "at": rfc3339(h.at)})).collect();
        let receipts: Vec<Value> = self.receipts.iter().map(StoreReceipt::view).collect();
        m.insert("extensions".into(), json!({ processor_domain: {"history": history, "receipts": receipts} }));
        Value::Object(m)
    }

    /// A callback body (§8.5) for one of the request's callback URLs.
    pub fn callback_body(&self, controller_id: &str, url: &str, results_url: Option<&str>) -> Value {
        let mut m = self.base_body(controller_id);
        m.insert("status_callback_url".into(), json!(url));
        m.insert("request_status".into(), json!(self.status.as_str()));
        if let Some(r) = &self.result {
            if let Some(u) = results_url {
                m.insert("results_url".into(), json!(u));
            }
            m.insert("results_count".into(), json!(r.count));
        }
        Value::Object(m)
    }
}

/// The discovery document (§6.3).
pub fn discovery_body(certificate_url: &str) -> Value {
    let identities: Vec<Value> = super::request::supported_identities()
        .into_iter()
        .map(|(t, f)| json!({"identity_type": t, "identity_format": f.as_str()}))
        .collect();
    json!({
        "api_version": "2.0",
        "supported_identities": identities,
        "supported_subject_request_types": RequestType::ALL.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
        "processor_certificate": certificate_url,
    })
}

/// One audit log row: who did what to which request or profile, when. Targets are request ids or hashes, never
/// an identity value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRow {
    /// Management key id, or `system` for the worker.
    pub actor: String,
    /// `dsr.create`, `dsr.status`, `dsr.cancel`, `dsr.start`, `dsr.complete`, `profile.read`,
    /// `profile.events`, `suppression.lift`, …
    pub action: String,
    /// A request id, a profile id, or `sha256:<hash>` of an identity looked up.
    pub target: String,
    /// HTTP status or outcome.
    pub outcome: String,
    /// Epoch ms.
    pub at: i64,
    /// A completed request's receipts, one per store (what, how many, when).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub receipts: Vec<StoreReceipt>,
}

impl AuditRow {
    /// The row's key: partition per UTC day, sort key by time then a nonce so concurrent rows never collide.
    pub fn key(&self, nonce: &str) -> ItemKey {
        let day = OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.at.max(0)) * 1_000_000)
            .map(|t| t.date().to_string())
            .unwrap_or_else(|_| "1970-01-01".into());
        ItemKey::new(format!("{AUDIT_PK_PREFIX}{day}"), format!("{:013}#{nonce}", self.at.max(0)))
    }

    pub fn to_attrs(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        }
    }

    pub fn from_attrs(attrs: &Map<String, Value>) -> Result<AuditRow, serde_json::Error> {
        AuditRow::deserialize(attrs)
    }
}

/// Epoch ms as RFC 3339 (UTC, seconds precision).
pub fn rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into())
}
