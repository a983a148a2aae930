//! OpenDSR 2.0 requests: parsing and strict validation of `POST /opendsr/v2/requests` (and the legacy OpenGDPR
//! `POST /opengdpr_requests`), with subject identities given as the spec's array or as mParticle's dictionary.
//!
//! Validation collects every problem in one pass so a controller fixes its request once. Messages name the field
//! (`subject_identities[1].identity_format`) and never echo an identity value.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::identity::{IdType, Identifier, RejectReason};

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Most subject identities in one request (array and extension identities together).
pub const MAX_IDENTITIES: usize = 32;
/// Most `status_callback_urls`.
pub const MAX_CALLBACK_URLS: usize = 10;
/// Longest callback URL.
pub const MAX_URL_BYTES: usize = 2048;
/// Longest `group_id` (mParticle).
pub const MAX_GROUP_ID_BYTES: usize = 128;
/// The extension key mParticle's controllers use (`skip_waiting_period`, extra identities).
pub const MPARTICLE_EXTENSION: &str = "opendsr.mparticle.com";

/// The regulation a request is made under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Regulation {
    Gdpr,
    Ccpa,
}

/// What the subject asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestType {
    Erasure,
    Access,
    Portability,
}

impl RequestType {
    pub const ALL: [RequestType; 3] = [RequestType::Erasure, RequestType::Access, RequestType::Portability];

    pub fn as_str(self) -> &'static str {
        match self {
            RequestType::Erasure => "erasure",
            RequestType::Access => "access",
            RequestType::Portability => "portability",
        }
    }
}

/// How an identity value is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityFormat {
    Raw,
    Sha256,
    Md5,
    Sha1,
}

impl IdentityFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityFormat::Raw => "raw",
            IdentityFormat::Sha256 => "sha256",
            IdentityFormat::Md5 => "md5",
            IdentityFormat::Sha1 => "sha1",
        }
    }

    fn parse(s: &str) -> Option<IdentityFormat> {
        Some(match s {
            "raw" => IdentityFormat::Raw,
            "sha256" => IdentityFormat::Sha256,
            "md5" => IdentityFormat::Md5,
            "sha1" => IdentityFormat::Sha1,
            _ => return None,
        })
    }
}

/// Which route a request came in on: the legacy OpenGDPR route does not require `regulation` (it predates it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    V2,
    LegacyV1,
}

/// The spec's identity types (§5.1) that name a device; they are matched against `context.device.id`.
const DEVICE_TYPES: [&str; 9] = [
    "android_advertising_id",
    "android_id",
    "fire_advertising_id",
    "ios_advertising_id",
    "ios_vendor_id",
    "microsoft_advertising_id",
    "microsoft_publisher_id",
    "roku_advertising_id",
    "roku_publisher_id",
];

/// Every identity type and format this processor can look a subject up by, as discovery lists them. md5 and sha1
/// are absent: no identifier is stored in those forms, so a request using them could never be honoured.
pub fn supported_identities() -> Vec<(&'static str, IdentityFormat)> {
    let mut out = vec![
        ("controller_customer_id", IdentityFormat::Raw),
        ("email", IdentityFormat::Raw),
        ("email", IdentityFormat::Sha256),
        ("phone_number", IdentityFormat::Raw),
        ("phone_number", IdentityFormat::Sha256),
    ];
    out.extend(DEVICE_TYPES.iter().map(|t| (*t, IdentityFormat::Raw)));
    // Tributary's own identifier names, for controllers that know them.
    out.extend([("anonymous_id", IdentityFormat::Raw), ("user_id", IdentityFormat::Raw)]);
    out
}

/// The identifier type an OpenDSR identity type and format is looked up as, or why it cannot be.
pub fn identifier_type(identity_type: &str, format: IdentityFormat) -> Result<IdType, String> {
    let kind = match identity_type {
        "controller_customer_id" | "customer_id" | "user_id" => IdType::UserId,
        "email" => IdType::Email,
        "phone_number" | "mobile_number" | "phone" => IdType::Phone,
        "anonymous_id" => IdType::AnonymousId,
        "device_id" => IdType::DeviceId,
        t if DEVICE_TYPES.contains(&t) => IdType::DeviceId,
        t => match t.strip_prefix("ext:").and_then(IdType::external) {
            Some(ext) => ext,
            None => return Err(format!("identity_type {t:?} is not supported (see the discovery document)")),
        },
    };
    match (format, kind.hashed_form()) {
        (IdentityFormat::Raw, _) => Ok(kind),
        (IdentityFormat::Sha256, Some(hashed)) => Ok(hashed),
        (f, _) => Err(format!(
            "identity_format {} is not supported for identity_type {identity_type:?}: no identifier of that type is \
             stored in that form (see the discovery document)",
            f.as_str()
        )),
    }
}

/// One subject identity, normalized as the identity graph stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectIdentity {
    /// The type as the controller named it.
    pub identity_type: String,
    pub format: IdentityFormat,
    pub identifier: Identifier,
}

/// A valid create request.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateRequest {
    pub regulation: Regulation,
    /// Lowercase UUID v4.
    pub subject_request_id: String,
    pub kind: RequestType,
    pub submitted_time: OffsetDateTime,
    pub identities: Vec<SubjectIdentity>,
    pub api_version: Option<String>,
    pub status_callback_urls: Vec<String>,
    /// mParticle's `skip_waiting_period` extension.
    pub skip_waiting_period: bool,
    /// mParticle's `group_id`.
    pub group_id: Option<String>,
}

/// One problem with a request: OpenDSR's `errors[]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// `required`, `invalid`, `unsupported`, `too_large` or `parse_error`.
    pub reason: &'static str,
    /// The field, e.g. `subject_identities[0].identity_value`.
    pub location: String,
    pub message: String,
}

impl FieldError {
    fn new(reason: &'static str, location: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError { reason, location: location.into(), message: message.into() }
    }
}

/// The OpenDSR error body (`{"error":{"code","message","errors":[{"domain","reason","message"}]}}`), plus the
/// platform's own `code`/`message` pair so every 4xx of the platform reads the same way.
pub fn error_body(status: u16, code: &str, message: &str, errors: &[FieldError]) -> Value {
    let errors: Vec<Value> = errors
        .iter()
        .map(|e| {
            serde_json::json!({
                "domain": "OpenDSR", "reason": e.reason, "location": e.location, "message": e.message,
            })
        })
        .collect();
    serde_json::json!({
        "code": code,
        "message": message,
        "error": {"code": status, "message": message, "errors": errors},
    })
}

/// Parses and validates a create request. `default_country_code` is the workspace's, for national phone numbers.
pub fn parse_create(
    body: &[u8],
    api: Api,
    default_country_code: Option<&str>,
) -> Result<CreateRequest, Vec<FieldError>> {
    if body.len() > MAX_BODY_BYTES {
        return Err(vec![FieldError::new(
            "too_large",
            "body",
            format!("the body is larger than {MAX_BODY_BYTES} bytes"),
        )]);
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        vec![FieldError::new(
            "parse_error",
            "body",
            format!("the body is not valid JSON (line {}, column {})", e.line(), e.column()),
        )]
    })?;
    let Value::Object(obj) = value else {
        return Err(vec![FieldError::new("invalid", "body", "the body must be a JSON object")]);
    };
    let mut errs = Vec::new();

    let regulation = match obj.get("regulation") {
        None | Some(Value::Null) if api == Api::LegacyV1 => Some(Regulation::Gdpr),
        None | Some(Value::Null) => {
            errs.push(FieldError::new("required", "regulation", "regulation is required (gdpr or ccpa)"));
            None
        }
        Some(Value::String(s)) if s == "gdpr" => Some(Regulation::Gdpr),
        Some(Value::String(s)) if s == "ccpa" => Some(Regulation::Ccpa),
        Some(_) => {
            errs.push(FieldError::new("invalid", "regulation", "regulation must be \"gdpr\" or \"ccpa\""));
            None
        }
    };

    let subject_request_id = match obj.get("subject_request_id") {
        None | Some(Value::Null) => {
            errs.push(FieldError::new("required", "subject_request_id", "subject_request_id is required"));
            None
        }
        Some(Value::String(s)) if is_lowercase_uuid_v4(s) => Some(s.clone()),
        Some(_) => {
            errs.push(FieldError::new(
                "invalid",
                "subject_request_id",
                "subject_request_id must be a lowercase UUID v4, e.g. a7551968-d5d6-44b2-9831-815ac9017798",
            ));
            None
        }
    };

    let kind = match obj.get("subject_request_type") {
        None | Some(Value::Null) => {
            errs.push(FieldError::new("required", "subject_request_type", "subject_request_type is required"));
            None
        }
        Some(Value::String(s)) => match RequestType::ALL.into_iter().find(|k| k.as_str() == s) {
            Some(k) => Some(k),
            None => {
                errs.push(FieldError::new(
                    "invalid",
                    "subject_request_type",
                    "subject_request_type must be erasure, access or portability",
                ));
                None
            }
        },
        Some(_) => {
            errs.push(FieldError::new("invalid", "subject_request_type", "subject_request_type must be a string"));
            None
        }
    };

    let submitted_time = match obj.get("submitted_time") {
        None | Some(Value::Null) => {
            errs.push(FieldError::new("required", "submitted_time", "submitted_time is required (RFC 3339)"));
            None
        }
        Some(Value::String(s)) => match OffsetDateTime::parse(s, &Rfc3339) {
            Ok(t) => Some(t),
            Err(_) => {
                errs.push(FieldError::new(
                    "invalid",
                    "submitted_time",
                    "submitted_time must be an RFC 3339 time, e.g. 2018-10-02T15:00:00Z",
                ));
                None
            }
        },
        Some(_) => {
            errs.push(FieldError::new("invalid", "submitted_time", "submitted_time must be an RFC 3339 string"));
            None
        }
    };

    let api_version = match obj.get("api_version") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if is_api_version(s) => Some(s.clone()),
        Some(_) => {
            errs.push(FieldError::new("invalid", "api_version", "api_version must look like \"2.0\""));
            None
        }
    };

    let status_callback_urls = match obj.get("status_callback_urls") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(urls)) if urls.len() > MAX_CALLBACK_URLS => {
            errs.push(FieldError::new(
                "too_large",
                "status_callback_urls",
                format!("status_callback_urls lists more than {MAX_CALLBACK_URLS} URLs"),
            ));
            Vec::new()
        }
        Some(Value::Array(urls)) => {
            let mut out = Vec::new();
            for (i, u) in urls.iter().enumerate() {
                match u.as_str() {
                    Some(s) if is_callback_url(s) => {
                        if !out.iter().any(|o| o == s) {
                            out.push(s.to_string());
                        }
                    }
                    _ => errs.push(FieldError::new(
                        "invalid",
                        format!("status_callback_urls[{i}]"),
                        format!("a callback URL must be an absolute http(s) URL of at most {MAX_URL_BYTES} bytes"),
                    )),
                }
            }
            out
        }
        Some(_) => {
            errs.push(FieldError::new("invalid", "status_callback_urls", "status_callback_urls must be an array"));
            Vec::new()
        }
    };

    let group_id = match obj.get("group_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_GROUP_ID_BYTES => Some(s.clone()),
        Some(_) => {
            errs.push(FieldError::new(
                "invalid",
                "group_id",
                format!("group_id must be a string of 1 to {MAX_GROUP_ID_BYTES} bytes"),
            ));
            None
        }
    };

    let mut identities = Vec::new();
    let mut skip_waiting_period = false;
    let extension = match obj.get("extensions") {
        None | Some(Value::Null) => None,
        Some(Value::Object(ext)) => match ext.get(MPARTICLE_EXTENSION) {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(m),
            Some(_) => {
                errs.push(FieldError::new(
                    "invalid",
                    format!("extensions.{MPARTICLE_EXTENSION}"),
                    "an extension must be an object",
                ));
                None
            }
        },
        Some(_) => {
            errs.push(FieldError::new(
                "invalid",
                "extensions",
                "extensions must be an object keyed by processor domain",
            ));
            None
        }
    };
    if let Some(ext) = extension {
        match ext.get("skip_waiting_period") {
            None | Some(Value::Null) => {}
            Some(Value::Bool(b)) => skip_waiting_period = *b,
            Some(_) => errs.push(FieldError::new(
                "invalid",
                format!("extensions.{MPARTICLE_EXTENSION}.skip_waiting_period"),
                "skip_waiting_period must be true or false",
            )),
        }
    }

    match obj.get("subject_identities") {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) => {
            for (i, item) in list.iter().enumerate() {
                let at = format!("subject_identities[{i}]");
                match item {
                    Value::Object(m) => {
                        let ty = m.get("identity_type");
                        let val = m.get("identity_value");
                        let fmt = m.get("identity_format");
                        push_identity(&mut identities, &mut errs, &at, ty, val, fmt, "identity_", default_country_code);
                    }
                    _ => errs.push(FieldError::new("invalid", at, "an identity must be an object")),
                }
            }
        }
        Some(Value::Object(dict)) => {
            dictionary_identities(dict, "subject_identities", &mut identities, &mut errs, default_country_code)
        }
        Some(_) => errs.push(FieldError::new(
            "invalid",
            "subject_identities",
            "subject_identities must be an array of identities (or a dictionary keyed by identity type)",
        )),
    }
    if let Some(Value::Object(dict)) = extension.and_then(|e| e.get("subject_identities")) {
        let at = format!("extensions.{MPARTICLE_EXTENSION}.subject_identities");
        dictionary_identities(dict, &at, &mut identities, &mut errs, default_country_code);
    }
    if identities.is_empty() && !errs.iter().any(|e| e.location.starts_with("subject_identities")) {
        errs.push(FieldError::new("required", "subject_identities", "at least one subject identity is required"));
    }
    if identities.len() > MAX_IDENTITIES {
        errs.push(FieldError::new(
            "too_large",
            "subject_identities",
            format!("a request may name at most {MAX_IDENTITIES} identities"),
        ));
    }

    match (regulation, subject_request_id, kind, submitted_time) {
        (Some(regulation), Some(subject_request_id), Some(kind), Some(submitted_time)) if errs.is_empty() => {
            Ok(CreateRequest {
                regulation,
                subject_request_id,
                kind,
                submitted_time,
                identities,
                api_version,
                status_callback_urls,
                skip_waiting_period,
                group_id,
            })
        }
        _ => Err(errs),
    }
}

/// mParticle's form: `{"email": {"value": "...", "encoding": "raw"}, ...}`.
fn dictionary_identities(
    dict: &Map<String, Value>,
    at: &str,
    identities: &mut Vec<SubjectIdentity>,
    errs: &mut Vec<FieldError>,
    default_country_code: Option<&str>,
) {
    for (ty, entry) in dict {
        let loc = format!("{at}.{ty}");
        match entry {
            Value::Object(m) => {
                let ty = Value::String(ty.clone());
                push_identity(
                    identities,
                    errs,
                    &loc,
                    Some(&ty),
                    m.get("value"),
                    m.get("encoding"),
                    "",
                    default_country_code,
                )
            }
            _ => errs.push(FieldError::new("invalid", loc, "an identity must be an object with value and encoding")),
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn push_identity(
    identities: &mut Vec<SubjectIdentity>,
    errs: &mut Vec<FieldError>,
    at: &str,
    ty: Option<&Value>,
    val: Option<&Value>,
    fmt: Option<&Value>,
    prefix: &str,
    default_country_code: Option<&str>,
) {
    let (type_field, value_field, format_field) = if prefix.is_empty() {
        ("identity_type".to_string(), format!("{at}.value"), format!("{at}.encoding"))
    } else {
        (format!("{at}.identity_type"), format!("{at}.identity_value"), format!("{at}.identity_format"))
    };
    let before = errs.len();
    let ty = match ty {
        Some(Value::String(s)) if !s.is_empty() => Some(s.as_str()),
        None | Some(Value::Null) => {
            errs.push(FieldError::new("required", type_field.clone(), "identity_type is required"));
            None
        }
        Some(_) => {
            errs.push(FieldError::new("invalid", type_field.clone(), "identity_type must be a non-empty string"));
            None
        }
    };
    let format = match fmt {
        Some(Value::String(s)) => match IdentityFormat::parse(s) {
            Some(f) => Some(f),
            None => {
                errs.push(FieldError::new(
                    "invalid",
                    format_field.clone(),
                    "the format must be raw, sha256, md5 or sha1",
                ));
                None
            }
        },
        None | Some(Value::Null) => {
            errs.push(FieldError::new(
                "required",
                format_field.clone(),
                "the identity's format is required (raw, sha256, md5 or sha1)",
            ));
            None
        }
        Some(_) => {
            errs.push(FieldError::new("invalid", format_field.clone(), "the format must be a string"));
            None
        }
    };
    let value = match val {
        Some(Value::String(s)) => Some(s.as_str()),
        None | Some(Value::Null) => {
            errs.push(FieldError::new("required", value_field.clone(), "the identity's value is required"));
            None
        }
        Some(_) => {
            errs.push(FieldError::new("invalid", value_field.clone(), "the identity's value must be a string"));
            None
        }
    };
    if errs.len() != before {
        return;
    }
    let (Some(ty), Some(format), Some(value)) = (ty, format, value) else { return };
    let kind = match identifier_type(ty, format) {
        Ok(k) => k,
        Err(message) => {
            let field = if message.starts_with("identity_type") { type_field } else { format_field };
            errs.push(FieldError::new("unsupported", field, message));
            return;
        }
    };
    match Identifier::new(kind.clone(), value, default_country_code) {
        Ok(identifier) => {
            if !identities.iter().any(|i: &SubjectIdentity| i.identifier == identifier) {
                identities.push(SubjectIdentity { identity_type: ty.to_string(), format, identifier });
            }
        }
        Err(reason) => errs.push(FieldError::new("invalid", value_field, value_problem(&kind, reason))),
    }
}

/// What is wrong with a value, without the value.
fn value_problem(kind: &IdType, reason: RejectReason) -> String {
    match reason {
        RejectReason::NotSha256 => "a sha256 value must be 64 hexadecimal characters".into(),
        RejectReason::InvalidEmail => "the value is not an email address".into(),
        RejectReason::InvalidPhone => {
            "the value is not a phone number (E.164: a plus sign, the country code and the number)".into()
        }
        RejectReason::MissingCountryCode => {
            "the phone number has no country code and the workspace sets no default (write it as +<country><number>)"
                .into()
        }
        RejectReason::TooLong => {
            format!("the value is longer than {} bytes", crate::identity::identifier::MAX_VALUE_BYTES)
        }
        RejectReason::Empty => "the value is empty".into(),
        other => format!("the value is not a valid {kind} ({other})"),
    }
}

/// A lowercase, hyphenated UUID of version 4 (the spec's "lowercase UUID v4 generated by the controller").
pub fn is_lowercase_uuid_v4(s: &str) -> bool {
    match uuid::Uuid::try_parse(s) {
        Ok(u) => u.get_version_num() == 4 && u.hyphenated().to_string() == s,
        Err(_) => false,
    }
}

fn is_api_version(s: &str) -> bool {
    match s.split_once('.') {
        Some((a, b)) => {
            s.len() <= 8
                && !a.is_empty()
                && !b.is_empty()
                && a.bytes().all(|c| c.is_ascii_digit())
                && b.bytes().all(|c| c.is_ascii_digit())
        }
        None => false,
    }
}

/// An absolute http(s) URL with a host, no whitespace or control characters, bounded. The SSRF guard decides at
/// send time whether its address may be reached.
pub fn is_callback_url(s: &str) -> bool {
    let rest = match s.strip_prefix("https://").or_else(|| s.strip_prefix("http://")) {
        Some(r) => r,
        None => return false,
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    s.len() <= MAX_URL_BYTES
        && !host.is_empty()
        && !host.contains('@')
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}
