//! Identifier types, normalization and extraction from a normalized Segment event.
//!
//! Every identifier is normalized before it is matched: emails are trimmed and lowercased, phones are brought to
//! E.164, other ids are trimmed. Emails and phones also have a hashed form (`sha256` of the normalized value, as
//! lowercase hex) so that a broker's file of hashed emails matches the raw emails seen in events.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The longest identifier value accepted, in bytes (after normalization).
pub const MAX_VALUE_BYTES: usize = 256;
/// The longest external type name (`ext:<name>`), in bytes.
pub const MAX_EXTERNAL_NAME_BYTES: usize = 64;

/// The kind of an identifier. Names are stable: they appear in stored keys, the config and the profile API.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IdType {
    /// `user_id`
    UserId,
    /// `anonymous_id`
    AnonymousId,
    /// `email`
    Email,
    /// `phone` (E.164)
    Phone,
    /// `device_id` (`context.device.id`)
    DeviceId,
    /// `email_sha256`: lowercase hex SHA-256 of a normalized email.
    EmailSha256,
    /// `phone_sha256`: lowercase hex SHA-256 of an E.164 phone.
    PhoneSha256,
    /// `ext:<name>`, a custom `context.externalIds[].type`, lowercased. In rules, `ext:*` stands for every external
    /// type without a rule of its own.
    External(String),
}

impl IdType {
    /// The stable name (`user_id`, `ext:braze_id`, …).
    pub fn name(&self) -> std::borrow::Cow<'static, str> {
        match self {
            IdType::UserId => "user_id".into(),
            IdType::AnonymousId => "anonymous_id".into(),
            IdType::Email => "email".into(),
            IdType::Phone => "phone".into(),
            IdType::DeviceId => "device_id".into(),
            IdType::EmailSha256 => "email_sha256".into(),
            IdType::PhoneSha256 => "phone_sha256".into(),
            IdType::External(name) => format!("ext:{name}").into(),
        }
    }

    /// The hashed type for a type that has one (`email` → `email_sha256`, `phone` → `phone_sha256`).
    pub fn hashed_form(&self) -> Option<IdType> {
        match self {
            IdType::Email => Some(IdType::EmailSha256),
            IdType::Phone => Some(IdType::PhoneSha256),
            _ => None,
        }
    }

    /// The raw type a hashed type is derived from (`email_sha256` → `email`).
    pub fn raw_form(&self) -> Option<IdType> {
        match self {
            IdType::EmailSha256 => Some(IdType::Email),
            IdType::PhoneSha256 => Some(IdType::Phone),
            _ => None,
        }
    }

    /// An external type for a `context.externalIds[].type` (trimmed, lowercased), if the name is acceptable:
    /// 1–64 bytes of `a-z`, `0-9`, `_`, `.`, `-`, starting with a letter or digit.
    pub fn external(name: &str) -> Option<IdType> {
        let name = name.trim().to_ascii_lowercase();
        valid_external_name(&name).then_some(IdType::External(name))
    }
}

fn valid_external_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit() => {}
        _ => return false,
    }
    name.len() <= MAX_EXTERNAL_NAME_BYTES
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'))
}

impl fmt::Display for IdType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// Why an identifier type name could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("identifier type must be user_id, anonymous_id, email, phone, device_id, email_sha256, phone_sha256 or ext:<name> (name: a-z, 0-9, _ . -, at most 64 bytes)")]
pub struct InvalidIdType;

impl FromStr for IdType {
    type Err = InvalidIdType;

    /// Built-in names are exact; the `<name>` of `ext:<name>` is lowercased. `ext:*` is accepted (rules use it).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "user_id" => IdType::UserId,
            "anonymous_id" => IdType::AnonymousId,
            "email" => IdType::Email,
            "phone" => IdType::Phone,
            "device_id" => IdType::DeviceId,
            "email_sha256" => IdType::EmailSha256,
            "phone_sha256" => IdType::PhoneSha256,
            "ext:*" => IdType::External("*".to_string()),
            other => match other.strip_prefix("ext:") {
                Some(name) => {
                    let name = name.to_ascii_lowercase();
                    if !valid_external_name(&name) {
                        return Err(InvalidIdType);
                    }
                    IdType::External(name)
                }
                None => return Err(InvalidIdType),
            },
        })
    }
}

impl Serialize for IdType {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.name())
    }
}

impl<'de> Deserialize<'de> for IdType {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for IdType {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "IdType".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^(user_id|anonymous_id|email|phone|device_id|email_sha256|phone_sha256|ext:\\*|ext:[A-Za-z0-9][A-Za-z0-9_.-]{0,63})$"
        })
    }
}

/// Why a value was not accepted as an identifier. Never carries the value itself (it may be personal data).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// Not a string (or, for ids and phones, an integer).
    NotAString,
    /// Empty after trimming.
    Empty,
    /// Longer than [`MAX_VALUE_BYTES`] after normalization.
    TooLong,
    /// Not `local@domain.tld`.
    InvalidEmail,
    /// Not a phone number that normalizes to `+` and 8–15 digits (first digit non-zero).
    InvalidPhone,
    /// A national phone number (no `+` or `00`) and no valid default country calling code configured.
    MissingCountryCode,
    /// A `*_sha256` value that is not 64 hex characters.
    NotSha256,
    /// An `externalIds[]` entry whose `type` is missing or not an acceptable name.
    InvalidType,
    /// An `externalIds[]` entry that is not an object or has no `id`.
    Malformed,
    /// An `externalIds[]` `encoding` other than none/`sha256`, or `sha256` on a type other than email/phone.
    UnsupportedEncoding,
    /// A value rewritten by the PII `redact` action (`[REDACTED:<kind>]`): it no longer tells people apart, and
    /// as an identifier it would link every redacted person into one profile.
    Redacted,
}

impl RejectReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            RejectReason::NotAString => "not_a_string",
            RejectReason::Empty => "empty",
            RejectReason::TooLong => "too_long",
            RejectReason::InvalidEmail => "invalid_email",
            RejectReason::InvalidPhone => "invalid_phone",
            RejectReason::MissingCountryCode => "missing_country_code",
            RejectReason::NotSha256 => "not_sha256",
            RejectReason::InvalidType => "invalid_type",
            RejectReason::Malformed => "malformed",
            RejectReason::UnsupportedEncoding => "unsupported_encoding",
            RejectReason::Redacted => "redacted",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A normalized identifier. Build it with [`Identifier::new`] so that `value` is always normalized.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Identifier {
    pub kind: IdType,
    pub value: String,
}

impl Identifier {
    /// Normalizes `raw` for `kind`. `default_country_code` (digits, e.g. `"1"` or `"44"`) is used for phone numbers
    /// written without `+`/`00`; without it such numbers are rejected.
    pub fn new(kind: IdType, raw: &str, default_country_code: Option<&str>) -> Result<Identifier, RejectReason> {
        let value = match &kind {
            IdType::Email => normalize_email(raw)?,
            IdType::Phone => normalize_phone(raw, default_country_code)?,
            IdType::EmailSha256 | IdType::PhoneSha256 => normalize_sha256(raw)?,
            IdType::UserId | IdType::AnonymousId | IdType::DeviceId | IdType::External(_) => normalize_id(raw)?,
        };
        Ok(Identifier { kind, value })
    }

    /// The hashed form of an email or phone (`email_sha256` / `phone_sha256`, value = lowercase hex SHA-256 of the
    /// normalized value). Types without a hashed form (including the hashed types themselves) return a clone.
    pub fn hashed(&self) -> Identifier {
        match self.kind.hashed_form() {
            Some(kind) => Identifier { kind, value: crate::sha256_hex(self.value.as_bytes()) },
            None => self.clone(),
        }
    }

    /// `<type>:<value>`, as used by the profile API (`email:ada@example.com`, `ext:braze_id:42`).
    pub fn key(&self) -> String {
        format!("{}:{}", self.kind, self.value)
    }

    /// Parses and normalizes a [`Identifier::key`]. For `ext:<name>:<value>` the name ends at the second `:`.
    pub fn from_key(key: &str, default_country_code: Option<&str>) -> Result<Identifier, RejectReason> {
        let (kind, value) = match key.strip_prefix("ext:") {
            Some(rest) => {
                let (name, value) = rest.split_once(':').ok_or(RejectReason::InvalidType)?;
                (format!("ext:{name}"), value)
            }
            None => {
                let (kind, value) = key.split_once(':').ok_or(RejectReason::InvalidType)?;
                (kind.to_string(), value)
            }
        };
        let kind: IdType = kind.parse().map_err(|_| RejectReason::InvalidType)?;
        if kind == IdType::External("*".to_string()) {
            return Err(RejectReason::InvalidType);
        }
        Identifier::new(kind, value, default_country_code)
    }
}

impl fmt::Display for Identifier {
    /// The type and a hash of the value, never the value: safe for logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hash = crate::sha256_hex(self.value.as_bytes());
        write!(f, "{}:sha256:{}", self.kind, &hash[..16])
    }
}

fn bounded(value: String) -> Result<String, RejectReason> {
    if value.is_empty() {
        Err(RejectReason::Empty)
    } else if value.len() > MAX_VALUE_BYTES {
        Err(RejectReason::TooLong)
    } else {
        Ok(value)
    }
}

fn normalize_id(raw: &str) -> Result<String, RejectReason> {
    bounded(raw.trim().to_string())
}

/// Trim + lowercase; exactly one `@`, a non-empty local part, a domain with a dot (not at either end, no `..`), no
/// whitespace or control characters. Provider-specific rules (gmail dots, `+tags`) are deliberately not applied.
fn normalize_email(raw: &str) -> Result<String, RejectReason> {
    let trimmed = raw.trim();
    if trimmed.is_ascii() {
        return normalize_ascii_email(trimmed);
    }
    normalize_email_general(trimmed)
}

/// [`normalize_email`] of trimmed ASCII text, in one pass over the bytes: ASCII lowercasing keeps the length, and
/// an ASCII byte is whitespace or a control character (as `char` sees it) exactly when it is below `!` or DEL.
fn normalize_ascii_email(trimmed: &str) -> Result<String, RejectReason> {
    if trimmed.is_empty() {
        return Err(RejectReason::Empty);
    }
    if trimmed.len() > MAX_VALUE_BYTES {
        return Err(RejectReason::TooLong);
    }
    let bytes = trimmed.as_bytes();
    let mut at = None;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            0..=b' ' | 0x7f => return Err(RejectReason::InvalidEmail),
            b'@' if at.is_some() => return Err(RejectReason::InvalidEmail),
            b'@' => at = Some(i),
            _ => {}
        }
    }
    let Some(at) = at else {
        return Err(RejectReason::InvalidEmail);
    };
    let domain = &bytes[at + 1..];
    let domain_ok = domain.contains(&b'.')
        && domain.first() != Some(&b'.')
        && domain.last() != Some(&b'.')
        && !domain.windows(2).any(|w| w == b"..");
    if at == 0 || !domain_ok {
        return Err(RejectReason::InvalidEmail);
    }
    Ok(trimmed.to_ascii_lowercase())
}

/// [`normalize_email`] of any trimmed text.
fn normalize_email_general(trimmed: &str) -> Result<String, RejectReason> {
    let value = bounded(trimmed.to_lowercase())?;
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(RejectReason::InvalidEmail);
    }
    let mut parts = value.split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(RejectReason::InvalidEmail);
    };
    let domain_ok =
        domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.') && !domain.contains("..");
    if local.is_empty() || !domain_ok {
        return Err(RejectReason::InvalidEmail);
    }
    Ok(value)
}

/// To E.164. Spaces, `-`, `.`, `(`, `)` are dropped; a leading `+` is kept; `00` at the start means `+`. A national
/// number gets `default_country_code` after one trunk `0` is dropped (except for Italy, `39`, whose numbers keep
/// it); with code `1`, an 11-digit national number starting with `1` already carries it. The result must be `+`
/// and 8–15 digits, the first non-zero.
fn normalize_phone(raw: &str, default_country_code: Option<&str>) -> Result<String, RejectReason> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(RejectReason::Empty);
    }
    let (plus, rest) = match raw.strip_prefix('+') {
        Some(rest) => (true, rest),
        None => (false, raw),
    };
    let mut digits = String::with_capacity(rest.len());
    for c in rest.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' | '.' | '(' | ')' => {}
            _ => return Err(RejectReason::InvalidPhone),
        }
    }
    let international = if plus {
        digits
    } else if let Some(after) = digits.strip_prefix("00") {
        after.to_string()
    } else {
        let code = default_country_code
            .filter(|c| (1..=3).contains(&c.len()) && c.bytes().all(|b| b.is_ascii_digit()) && !c.starts_with('0'))
            .ok_or(RejectReason::MissingCountryCode)?;
        if code == "1" && digits.len() == 11 && digits.starts_with('1') {
            digits
        } else {
            let national = match digits.strip_prefix('0') {
                Some(after) if code != "39" => after,
                _ => digits.as_str(),
            };
            format!("{code}{national}")
        }
    };
    let ok = (8..=15).contains(&international.len()) && !international.starts_with('0');
    if !ok {
        return Err(RejectReason::InvalidPhone);
    }
    Ok(format!("+{international}"))
}

fn normalize_sha256(raw: &str) -> Result<String, RejectReason> {
    let value = raw.trim();
    if value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(value.to_ascii_lowercase())
    } else {
        Err(RejectReason::NotSha256)
    }
}

/// How identifiers are read out of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractOptions {
    /// Country calling code for phones written without `+`/`00` (e.g. `"1"`). `None`: such phones are rejected.
    pub default_country_code: Option<String>,
    /// Also emit `email_sha256` / `phone_sha256` for every raw email / phone, so hashed broker data can match.
    pub include_hashed: bool,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        ExtractOptions { default_country_code: None, include_hashed: true }
    }
}

/// The identifiers of one event, in a fixed order (see [`extract`]), without duplicates, plus what was rejected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extracted {
    pub ids: Vec<Identifier>,
    pub rejected: Vec<(IdType, RejectReason)>,
}

impl Extracted {
    fn push(&mut self, result: Result<Identifier, (IdType, RejectReason)>, include_hashed: bool) {
        match result {
            Ok(id) => {
                let hashed = (include_hashed && id.kind.hashed_form().is_some()).then(|| id.hashed());
                for id in std::iter::once(id).chain(hashed) {
                    if !self.ids.contains(&id) {
                        self.ids.push(id);
                    }
                }
            }
            Err(rejection) => self.rejected.push(rejection),
        }
    }
}

/// A string, or an integer written as one (ids are coerced to strings by ingest; phones may come as numbers).
fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) if n.is_u64() || n.is_i64() => Some(n.to_string()),
        _ => None,
    }
}

fn field(kind: IdType, value: Option<&Value>, cc: Option<&str>) -> Option<Result<Identifier, (IdType, RejectReason)>> {
    match value {
        None | Some(Value::Null) => None,
        Some(v) => Some(match text_of(v) {
            Some(s) if s.contains(REDACTION_MARKER) => Err((kind, RejectReason::Redacted)),
            Some(s) => match pre_hashed(&kind, &s) {
                Some(id) => Ok(id),
                None => Identifier::new(kind.clone(), &s, cc).map_err(|r| (kind, r)),
            },
            None => Err((kind, RejectReason::NotAString)),
        }),
    }
}

/// The start of what the PII `redact` action writes in place of a finding (`[REDACTED:email]`).
const REDACTION_MARKER: &str = "[REDACTED:";

/// An email or phone field holding `sha256:<64 hex>`, as the PII `hash` action writes it (the hash of the trimmed,
/// lowercased email or of the E.164 phone, i.e. the same value as our hashed identifiers): read as the hashed
/// identifier, not rejected as an invalid email or phone. The prefix is also tolerated on the hashed types.
fn pre_hashed(kind: &IdType, raw: &str) -> Option<Identifier> {
    let hashed = match kind {
        IdType::Email | IdType::Phone => kind.hashed_form()?,
        IdType::EmailSha256 | IdType::PhoneSha256 => kind.clone(),
        _ => return None,
    };
    let raw = raw.trim();
    let hex = raw.get(..7).filter(|p| p.eq_ignore_ascii_case("sha256:")).and(raw.get(7..))?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| Identifier { kind: hashed, value: hex.to_ascii_lowercase() })
}

/// Reads the identifiers of a normalized Segment event (the output of [`crate::ingest::process`]), in this order:
///
/// 1. `userId` → `user_id`;
/// 2. alias only: `previousId`. Segment treats it as the *old* id of the user. Rule: it is an `anonymous_id` when it
///    equals the event's `anonymousId` (so it collapses into item 3), otherwise a `user_id`. Consequences: an alias
///    between two user ids needs a `user_id` limit of 2 or more to link (by default the link is refused and
///    recorded), and a server-side alias whose `previousId` is an anonymous id must also carry that `anonymousId`
///    to join the anonymous profile;
/// 3. `anonymousId` → `anonymous_id`;
/// 4. `email`, then `phone` from `traits` for identify (falling back per key to `context.traits`, which ingest
///    already copies for SDKs that only send those), from `context.traits` for every other type (a group's `traits`
///    describe the group, not the person);
/// 5. `context.device.id` → `device_id`;
/// 6. `context.externalIds[]` (`{id, type, collection?, encoding?}`): `type` `user_id`, `anonymous_id`, `email`,
///    `phone`, `device_id` map to the built-in types, anything else to `ext:<type>`; `encoding: "sha256"` is only
///    accepted for email/phone and gives `email_sha256`/`phone_sha256`. Entries whose `collection` is neither
///    absent nor `users` (e.g. `accounts`) identify something else than a person and are skipped silently.
///
/// With [`ExtractOptions::include_hashed`], each raw email/phone is followed by its hashed form. Missing and `null`
/// fields are skipped; present but unusable values are listed in `rejected` (type and reason only).
///
/// Values rewritten by a source's PII action: an email or phone (field or `externalIds[]` entry) of the form
/// `sha256:<64 hex>` (the `hash` action) is read as `email_sha256` / `phone_sha256` with that hex; any value holding
/// a `[REDACTED:<kind>]` marker (the `redact` action) is rejected as `redacted`.
pub fn extract(event: &Map<String, Value>, opts: &ExtractOptions) -> Extracted {
    let cc = opts.default_country_code.as_deref();
    let hashed = opts.include_hashed;
    let mut out = Extracted::default();
    let is_type = |t: &str| event.get("type").and_then(Value::as_str) == Some(t);

    if let Some(r) = field(IdType::UserId, event.get("userId"), cc) {
        out.push(r, hashed);
    }
    let anonymous = event.get("anonymousId").and_then(text_of);
    if is_type("alias") {
        let previous = event.get("previousId");
        let same_as_anonymous = anonymous.is_some() && previous.and_then(text_of) == anonymous;
        if !same_as_anonymous {
            if let Some(r) = field(IdType::UserId, previous, cc) {
                out.push(r, hashed);
            }
        }
    }
    if let Some(r) = field(IdType::AnonymousId, event.get("anonymousId"), cc) {
        out.push(r, hashed);
    }

    let context = event.get("context").and_then(Value::as_object);
    let context_traits = context.and_then(|c| c.get("traits")).and_then(Value::as_object);
    let own_traits = event.get("traits").and_then(Value::as_object);
    for (key, kind) in [("email", IdType::Email), ("phone", IdType::Phone)] {
        let value = if is_type("identify") {
            own_traits.and_then(|t| t.get(key)).or_else(|| context_traits.and_then(|t| t.get(key)))
        } else {
            context_traits.and_then(|t| t.get(key))
        };
        if let Some(r) = field(kind, value, cc) {
            out.push(r, hashed);
        }
    }

    let device = context.and_then(|c| c.get("device")).and_then(Value::as_object).and_then(|d| d.get("id"));
    if let Some(r) = field(IdType::DeviceId, device, cc) {
        out.push(r, hashed);
    }

    if let Some(Value::Array(entries)) = context.and_then(|c| c.get("externalIds")) {
        for entry in entries {
            if let Some(r) = external_id(entry, cc) {
                out.push(r, hashed);
            }
        }
    }
    out
}

fn external_id(entry: &Value, cc: Option<&str>) -> Option<Result<Identifier, (IdType, RejectReason)>> {
    let invalid = || IdType::External("invalid".to_string());
    let Some(entry) = entry.as_object() else {
        return Some(Err((invalid(), RejectReason::Malformed)));
    };
    match entry.get("collection") {
        None | Some(Value::Null) => {}
        Some(Value::String(c)) if c.eq_ignore_ascii_case("users") => {}
        Some(_) => return None,
    }
    let Some(type_name) = entry.get("type").and_then(Value::as_str) else {
        return Some(Err((invalid(), RejectReason::InvalidType)));
    };
    let type_name = type_name.trim().to_ascii_lowercase();
    let kind = match type_name.as_str() {
        "user_id" => IdType::UserId,
        "anonymous_id" => IdType::AnonymousId,
        "email" => IdType::Email,
        "phone" => IdType::Phone,
        "device_id" => IdType::DeviceId,
        other => match IdType::external(other) {
            Some(kind) => kind,
            None => return Some(Err((invalid(), RejectReason::InvalidType))),
        },
    };
    let kind = match entry.get("encoding").and_then(Value::as_str).map(|e| e.trim().to_ascii_lowercase()) {
        None => kind,
        Some(e) if e.is_empty() || e == "none" => kind,
        Some(e) if e == "sha256" => match kind.hashed_form() {
            Some(hashed) => hashed,
            None => return Some(Err((kind, RejectReason::UnsupportedEncoding))),
        },
        Some(_) => return Some(Err((kind, RejectReason::UnsupportedEncoding))),
    };
    match entry.get("id") {
        None | Some(Value::Null) => Some(Err((kind, RejectReason::Malformed))),
        value => field(kind, value, cc),
    }
}

#[cfg(test)]
mod normalize_tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    /// The general path (the function as first written) is the reference the ASCII path is held to.
    fn reference_email(raw: &str) -> Result<String, RejectReason> {
        normalize_email_general(raw.trim())
    }

    #[test]
    fn email_edge_cases_match_the_reference() {
        let long_local = format!("{}@example.com", "a".repeat(244));
        let cases = [
            "",
            " ",
            "\u{b}a@b.co\u{c}",
            "a@b.co\u{85}",
            "\u{a0}a@b.co",
            "a\u{0}@b.co",
            "a\u{7f}@b.co",
            "a\u{1f}@b.co",
            "a\t@b.co",
            "a@b\u{b}.co",
            "A@B.CO",
            "a+tag@b.co",
            "@b.co",
            "a@",
            "a@.",
            "a@b.",
            "a@.b",
            "a@b..c",
            "a@b.c.",
            "a@@b.co",
            "a@b@c.co",
            "É@b.co",
            "ǅ@b.co",
            "İ@b.co",
            "ß@EXAMPLE.com",
            "a@exämple.com",
            "a\u{2003}b@c.de",
            &long_local,
            &format!("{long_local}x"),
            &format!("  {long_local}  "),
            &format!("{}@b.co", "İ".repeat(120)),
        ];
        for raw in cases {
            assert_eq!(normalize_email(raw), reference_email(raw), "{raw:?}");
        }
    }

    #[test]
    fn email_matches_the_reference_on_generated_inputs() {
        const PIECES: &[&str] = &[
            "a", "Z", "q", "0", "9", ".", "..", "@", "@", "+", "+tag", "-", "_", " ", "\t", "\n", "\r", "\u{b}",
            "\u{c}", "\u{0}", "\u{1f}", "\u{7f}", "\u{85}", "\u{a0}", "\u{2003}", "\u{3000}", "É", "é", "ß", "İ", "ǅ",
            "Σ", "ﬃ", "日本", "😀", "example", "EXAMPLE", "com", ".com", "gmail", "\"", "\\",
        ];
        let mut rng = StdRng::seed_from_u64(0x5eed_e4a1);
        for _ in 0..200_000 {
            let n = rng.random_range(0..12);
            let mut raw = String::new();
            for _ in 0..n {
                raw.push_str(PIECES[rng.random_range(0..PIECES.len())]);
            }
            if rng.random_bool(0.05) {
                let pad = "x".repeat(rng.random_range(240..260));
                raw.insert_str(0, &pad);
            }
            assert_eq!(normalize_email(&raw), reference_email(&raw), "{raw:?}");
        }
        // Mostly well-formed addresses, so the accepting paths are exercised as much as the rejecting ones.
        for _ in 0..50_000 {
            let local: String = (0..rng.random_range(0..6)).map(|_| PIECES[rng.random_range(0..17)]).collect();
            let domain: String =
                (0..rng.random_range(0..6)).map(|_| PIECES[rng.random_range(0..PIECES.len())]).collect();
            let raw = format!("{local}@{domain}.com");
            assert_eq!(normalize_email(&raw), reference_email(&raw), "{raw:?}");
        }
    }
}
