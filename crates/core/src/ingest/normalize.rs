//! Validation, normalization and enrichment of tracking messages.
//!
//! One request becomes a list of accepted events (JSON objects, unknown keys preserved) and a list of rejected
//! ones. Only a body that is unusable as a whole (not a batch, too many events) is an error for the request.
//!
//! Per event, in order: shape and `writeKey` removal → `messageId` → `type` → identifiers and the type's
//! required fields → object fields → batch `context`/`integrations` merge → identify traits from
//! `context.traits` → `messageId` generation → timestamps (skew correction) → enrichment (`context.ip`,
//! `context.userAgent`) → size bound.

use std::io;

use serde_json::{Map, Number, Value};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::json::kind_of;
use super::timestamp::{format_timestamp, parse_timestamp};
use super::{Limits, Processed, Rejection, RequestContext, RequestError, Route};
use crate::event::MessageType;

/// Longest `messageId` kept, in characters (Segment: "fewer than 100 characters").
const MAX_MESSAGE_ID_CHARS: usize = 100;

/// Validates and normalizes the events of one request.
///
/// Request errors (400): `invalid_body` (not an object), `invalid_batch` (no `batch` array, or batch-level
/// `context`/`integrations` not objects), `batch_too_large`. Per-event rejections: `invalid_event`,
/// `missing_type`, `unknown_type`, `invalid_field`, `missing_id`, `missing_event`, `missing_previous_id`,
/// `missing_group_id`, `event_too_large`.
pub fn process(route: Route, body: Value, ctx: &RequestContext, limits: &Limits) -> Result<Processed, RequestError> {
    let Value::Object(mut top) = body else {
        return Err(RequestError::bad_request(
            "invalid_body",
            format!("request body must be a JSON object, got {}", kind_of(&body)),
        ));
    };
    let env = Env {
        received_at: ctx.received_at,
        received_at_text: format_timestamp(ctx.received_at),
        source_ip: ctx.source_ip.as_deref().filter(|s| !s.is_empty()),
        user_agent: ctx.user_agent.as_deref().filter(|s| !s.is_empty()),
        max_event_bytes: limits.max_event_bytes,
    };

    if let Some(kind) = route_type(route) {
        top.insert("type".to_string(), Value::String(kind.as_str().to_string()));
        let mut out = Processed::default();
        match normalize_event(Value::Object(top), &Batch::default(), &env) {
            Ok(event) => out.accepted.push(event),
            Err(r) => out.rejected.push(r.at(0)),
        }
        return Ok(out);
    }

    let items = match top.remove("batch") {
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(RequestError::bad_request(
                "invalid_batch",
                format!("`batch` must be an array, got {}", kind_of(&other)),
            ))
        }
        None => return Err(RequestError::bad_request("invalid_batch", "request body has no `batch` array")),
    };
    if items.len() > limits.max_batch_events {
        return Err(RequestError::bad_request(
            "batch_too_large",
            format!("batch has {} events; the limit is {}", items.len(), limits.max_batch_events),
        ));
    }
    let batch = Batch {
        context: batch_object(&mut top, "context")?,
        integrations: batch_object(&mut top, "integrations")?,
        sent_at: top.get("sentAt").and_then(Value::as_str).and_then(parse_timestamp),
    };

    let mut out = Processed { accepted: Vec::with_capacity(items.len()), rejected: Vec::new() };
    for (index, item) in items.into_iter().enumerate() {
        match normalize_event(item, &batch, &env) {
            Ok(event) => out.accepted.push(event),
            Err(r) => out.rejected.push(r.at(index)),
        }
    }
    Ok(out)
}

/// The type a single-event route forces; `None` for the batch routes.
fn route_type(route: Route) -> Option<MessageType> {
    Some(match route {
        Route::Track => MessageType::Track,
        Route::Identify => MessageType::Identify,
        Route::Page => MessageType::Page,
        Route::Screen => MessageType::Screen,
        Route::Group => MessageType::Group,
        Route::Alias => MessageType::Alias,
        Route::Batch | Route::Import => return None,
    })
}

/// What the request (not the event) contributes.
struct Env<'a> {
    received_at: OffsetDateTime,
    received_at_text: String,
    source_ip: Option<&'a str>,
    user_agent: Option<&'a str>,
    max_event_bytes: usize,
}

/// Batch-level fields that apply to every item.
#[derive(Default)]
struct Batch {
    context: Option<Map<String, Value>>,
    integrations: Option<Map<String, Value>>,
    sent_at: Option<OffsetDateTime>,
}

fn batch_object(top: &mut Map<String, Value>, key: &str) -> Result<Option<Map<String, Value>>, RequestError> {
    match top.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) if m.is_empty() => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(other) => Err(RequestError::bad_request(
            "invalid_batch",
            format!("batch-level `{key}` must be an object, got {}", kind_of(&other)),
        )),
    }
}

/// A rejection before its batch position is known.
struct Reject {
    message_id: Option<String>,
    code: &'static str,
    message: String,
}

impl Reject {
    fn at(self, index: usize) -> Rejection {
        Rejection { index, message_id: self.message_id, code: self.code, message: self.message }
    }
}

/// The event's own `messageId`, when it is usable (validated first, so later rejections can report it).
fn usable_message_id(m: &Map<String, Value>) -> Option<String> {
    match m.get("messageId") {
        Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= MAX_MESSAGE_ID_CHARS => Some(s.clone()),
        _ => None,
    }
}

fn reject(m: &Map<String, Value>, code: &'static str, message: impl Into<String>) -> Reject {
    Reject { message_id: usable_message_id(m), code, message: message.into() }
}

fn normalize_event(item: Value, batch: &Batch, env: &Env) -> Result<Map<String, Value>, Reject> {
    let mut m = match item {
        Value::Object(m) => m,
        other => {
            return Err(Reject {
                message_id: None,
                code: "invalid_event",
                message: format!("batch item must be a JSON object, got {}", kind_of(&other)),
            })
        }
    };
    // A secret: never stored, never forwarded.
    m.remove("writeKey");

    // messageId: string (numbers coerced), at most 100 characters; null/"" means "generate one".
    let mut has_message_id = true;
    match m.get_mut("messageId") {
        None => has_message_id = false,
        Some(Value::Null) => {
            m.remove("messageId");
            has_message_id = false;
        }
        Some(Value::String(s)) if s.is_empty() => {
            m.remove("messageId");
            has_message_id = false;
        }
        Some(Value::String(s)) => {
            let chars = s.chars().count();
            if chars > MAX_MESSAGE_ID_CHARS {
                return Err(Reject {
                    message_id: None,
                    code: "invalid_field",
                    message: format!("`messageId` is {chars} characters; the limit is {MAX_MESSAGE_ID_CHARS}"),
                });
            }
        }
        Some(v @ Value::Number(_)) => {
            if let Value::Number(n) = v {
                *v = Value::String(number_to_string(n));
            }
        }
        Some(other) => {
            let kind = kind_of(other);
            return Err(Reject {
                message_id: None,
                code: "invalid_field",
                message: format!("`messageId` must be a string, got {kind}"),
            });
        }
    }

    let kind = match m.get("type") {
        None | Some(Value::Null) => return Err(reject(&m, "missing_type", "event has no `type`")),
        Some(Value::String(s)) if s.is_empty() => return Err(reject(&m, "missing_type", "event has no `type`")),
        Some(Value::String(s)) => match MessageType::from_name(s) {
            Some(k) => k,
            None => {
                return Err(reject(
                    &m,
                    "unknown_type",
                    "`type` must be one of track, identify, page, screen, group, alias",
                ))
            }
        },
        Some(other) => {
            let got = kind_of(other);
            return Err(reject(&m, "unknown_type", format!("`type` must be a string, got {got}")));
        }
    };

    let has_user = coerce_id(&mut m, "userId")?;
    let has_anonymous = coerce_id(&mut m, "anonymousId")?;
    match kind {
        MessageType::Alias => {
            if !coerce_id(&mut m, "previousId")? {
                return Err(reject(&m, "missing_previous_id", "alias event has no `previousId`"));
            }
            if !has_user {
                return Err(reject(&m, "missing_id", "alias event has no `userId`"));
            }
        }
        _ if !has_user && !has_anonymous => {
            return Err(reject(&m, "missing_id", "event has neither `userId` nor `anonymousId`"));
        }
        MessageType::Group => {
            if !coerce_id(&mut m, "groupId")? {
                return Err(reject(&m, "missing_group_id", "group event has no `groupId`"));
            }
        }
        MessageType::Track => match m.get("event") {
            Some(Value::String(s)) if !s.is_empty() => {}
            None | Some(Value::Null) | Some(Value::String(_)) => {
                return Err(reject(&m, "missing_event", "track event has no `event` name"));
            }
            Some(other) => {
                let got = kind_of(other);
                return Err(reject(&m, "invalid_field", format!("`event` must be a string, got {got}")));
            }
        },
        MessageType::Page | MessageType::Screen => {
            coerce_id(&mut m, "name")?;
        }
        MessageType::Identify => {}
    }

    for key in ["traits", "properties", "context", "integrations"] {
        match m.get(key) {
            None | Some(Value::Object(_)) => {}
            Some(Value::Null) => {
                m.remove(key);
            }
            Some(other) => {
                let got = kind_of(other);
                return Err(reject(&m, "invalid_field", format!("`{key}` must be an object, got {got}")));
            }
        }
    }

    // Batch-level context/integrations: the event's own keys win.
    if let Some(shared) = &batch.context {
        merge_under(&mut m, "context", shared);
    }
    if let Some(shared) = &batch.integrations {
        merge_under(&mut m, "integrations", shared);
    }

    // rudder-sdk-python sends identify traits only in context.traits.
    if kind == MessageType::Identify && !m.contains_key("traits") {
        if let Some(Value::Object(t)) = m.get("context").and_then(|c| c.get("traits")) {
            let traits = Value::Object(t.clone());
            m.insert("traits".to_string(), traits);
        }
    }

    if !has_message_id {
        let id = if has_client_time(&m) { derived_message_id(&m) } else { uuid::Uuid::new_v4().to_string() };
        m.insert("messageId".to_string(), Value::String(id));
    }

    // Timestamps: originalTimestamp = timestamp ?? originalTimestamp, sentAt = own ?? batch,
    // timestamp = receivedAt - (sentAt - originalTimestamp).
    let original = time_field(&m, "timestamp").or_else(|| time_field(&m, "originalTimestamp"));
    let sent = time_field(&m, "sentAt").or(batch.sent_at);
    let timestamp = match (original, sent) {
        (Some(o), Some(s)) => {
            env.received_at.checked_sub(s - o).filter(|t| (1..=9999).contains(&t.year())).unwrap_or(o)
        }
        (Some(o), None) => o,
        (None, _) => env.received_at,
    };
    m.insert("timestamp".to_string(), Value::String(format_timestamp(timestamp)));
    set_time(&mut m, "originalTimestamp", original);
    set_time(&mut m, "sentAt", sent);
    m.insert("receivedAt".to_string(), Value::String(env.received_at_text.clone()));

    // Enrichment from the transport.
    if !matches!(m.get("context"), Some(Value::Object(_))) {
        m.insert("context".to_string(), Value::Object(Map::new()));
    }
    if let Some(Value::Object(context)) = m.get_mut("context") {
        if let Some(ip) = env.source_ip {
            if !is_non_empty_string(context.get("ip")) {
                context.insert("ip".to_string(), Value::String(ip.to_string()));
            }
        }
        if let Some(ua) = env.user_agent {
            if !is_non_empty_string(context.get("userAgent")) {
                context.insert("userAgent".to_string(), Value::String(ua.to_string()));
            }
        }
    }

    let size = serialized_len(&m);
    if size > env.max_event_bytes {
        let message_id = if has_message_id { usable_message_id(&m) } else { None };
        return Err(Reject {
            message_id,
            code: "event_too_large",
            message: format!("event is {size} bytes after normalization; the limit is {}", env.max_event_bytes),
        });
    }
    Ok(m)
}

fn is_non_empty_string(v: Option<&Value>) -> bool {
    matches!(v, Some(Value::String(s)) if !s.is_empty())
}

/// Identifier-like fields: `null`/`""` → removed; number → string; string kept; anything else is refused.
/// Returns whether the field is present afterwards.
fn coerce_id(m: &mut Map<String, Value>, key: &str) -> Result<bool, Reject> {
    match m.get_mut(key) {
        None => Ok(false),
        Some(Value::Null) => {
            m.remove(key);
            Ok(false)
        }
        Some(Value::String(s)) if s.is_empty() => {
            m.remove(key);
            Ok(false)
        }
        Some(Value::String(_)) => Ok(true),
        Some(v @ Value::Number(_)) => {
            if let Value::Number(n) = v {
                *v = Value::String(number_to_string(n));
            }
            Ok(true)
        }
        Some(other) => {
            let got = kind_of(other);
            Err(reject(m, "invalid_field", format!("`{key}` must be a string or a number, got {got}")))
        }
    }
}

/// `42` → `"42"`, `42.0` → `"42"`, `4.5` → `"4.5"`.
fn number_to_string(n: &Number) -> String {
    if let Some(u) = n.as_u64() {
        return u.to_string();
    }
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    match n.as_f64() {
        // Integral floats within f64's exact integer range print without a fraction.
        Some(f) if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 => (f as i64).to_string(),
        _ => n.to_string(),
    }
}

/// Adds the shared object's keys that the event's own object (created if absent) does not have.
fn merge_under(m: &mut Map<String, Value>, key: &str, shared: &Map<String, Value>) {
    match m.get_mut(key) {
        Some(Value::Object(own)) => {
            for (k, v) in shared {
                if !own.contains_key(k) {
                    own.insert(k.clone(), v.clone());
                }
            }
        }
        _ => {
            m.insert(key.to_string(), Value::Object(shared.clone()));
        }
    }
}

fn time_field(m: &Map<String, Value>, key: &str) -> Option<OffsetDateTime> {
    m.get(key).and_then(Value::as_str).and_then(parse_timestamp)
}

fn set_time(m: &mut Map<String, Value>, key: &str, t: Option<OffsetDateTime>) {
    match t {
        Some(t) => {
            m.insert(key.to_string(), Value::String(format_timestamp(t)));
        }
        None => {
            // Absent, or present but unusable: a consumer only ever sees valid timestamps.
            m.remove(key);
        }
    }
}

/// Whether the client stated when the event happened (so a retry of the same body is recognisable).
fn has_client_time(m: &Map<String, Value>) -> bool {
    is_non_empty_string(m.get("timestamp")) || is_non_empty_string(m.get("originalTimestamp"))
}

/// A UUID derived from the event's canonical JSON (keys sorted at every level, no whitespace), leaving out the
/// fields that differ between two sends of the same event (`sentAt`, `receivedAt`). Version 5 layout, SHA-256
/// instead of SHA-1.
fn derived_message_id(m: &Map<String, Value>) -> String {
    let mut hasher = HashWriter(Sha256::new());
    hasher.0.update(b"tributary:messageId:v1\n");
    let mut keys: Vec<&String> =
        m.keys().filter(|k| !matches!(k.as_str(), "sentAt" | "receivedAt" | "messageId")).collect();
    keys.sort_unstable();
    hasher.0.update(b"{");
    for (i, k) in keys.into_iter().enumerate() {
        if i > 0 {
            hasher.0.update(b",");
        }
        canonical_str(&mut hasher, k);
        hasher.0.update(b":");
        if let Some(v) = m.get(k) {
            canonical(&mut hasher, v);
        }
    }
    hasher.0.update(b"}");
    let digest = hasher.0.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_sha1_bytes(bytes).into_uuid().to_string()
}

struct HashWriter(Sha256);

impl io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn canonical_str(h: &mut HashWriter, s: &str) {
    // Writing to a hasher cannot fail.
    let _ = serde_json::to_writer(&mut *h, s);
}

fn canonical(h: &mut HashWriter, v: &Value) {
    match v {
        Value::Object(o) => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort_unstable();
            h.0.update(b"{");
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    h.0.update(b",");
                }
                canonical_str(h, k);
                h.0.update(b":");
                if let Some(v) = o.get(k) {
                    canonical(h, v);
                }
            }
            h.0.update(b"}");
        }
        Value::Array(a) => {
            h.0.update(b"[");
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    h.0.update(b",");
                }
                canonical(h, v);
            }
            h.0.update(b"]");
        }
        scalar => {
            let _ = serde_json::to_writer(&mut *h, scalar);
        }
    }
}

/// Bytes of the compact JSON serialization, without building it.
fn serialized_len(m: &Map<String, Value>) -> usize {
    struct Counter(usize);
    impl io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
            self.0 += buf.len();
            Ok(())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut c = Counter(0);
    match serde_json::to_writer(&mut c, m) {
        Ok(()) => c.0,
        Err(_) => usize::MAX,
    }
}

#[cfg(test)]
mod tests;
