//! Which events a destination receives: filters on source, event type and name, the data-party class, and consent.
//!
//! Consent fails closed. A destination declares the purposes it needs and an event goes only if every one of them
//! is granted; a purpose nobody has stated is a "no". Competitors do the opposite (Segment sends everywhere when an
//! event carries no consent object, and does not enforce consent for S3), which is why the only way out of the
//! consent check here is an explicit `essential: true` on a destination that declares no purposes, and ad
//! platforms cannot be essential at all.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::{DataPartyClass, SourceId};
use crate::event::MessageType;

/// Longest destination id and purpose name, in bytes.
pub const MAX_ID_BYTES: usize = 64;
/// Most entries in one filter list, purpose list or `drop_fields`.
pub const MAX_LIST_LEN: usize = 256;
/// Longest event name in `event_names` and longest JSON pointer in `drop_fields`, in bytes.
pub const MAX_ENTRY_BYTES: usize = 512;

/// Where a destination sends events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DestinationKind {
    /// An HTTP endpoint of the workspace's own.
    Webhook,
    /// Meta Conversions API.
    MetaCapi,
    /// Google Ads (enhanced conversions, Customer Match).
    GoogleAds,
    /// Files in an S3 bucket of the workspace's own.
    S3Export,
}

impl DestinationKind {
    pub const ALL: [DestinationKind; 4] =
        [DestinationKind::Webhook, DestinationKind::MetaCapi, DestinationKind::GoogleAds, DestinationKind::S3Export];

    /// The snake_case name used in config and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DestinationKind::Webhook => "webhook",
            DestinationKind::MetaCapi => "meta_capi",
            DestinationKind::GoogleAds => "google_ads",
            DestinationKind::S3Export => "s3_export",
        }
    }

    /// Whether the destination is a third party's ad platform: identifiers must be hashed, only 0P/1P data goes by
    /// default, sensitive properties are scrubbed, and it can never be essential.
    pub fn is_ad_platform(self) -> bool {
        matches!(self, DestinationKind::MetaCapi | DestinationKind::GoogleAds)
    }

    /// The data-party classes sent when `allowed_classes` is not set. Ad platforms get only data the person gave
    /// us or we collected ourselves: forwarding partners' or brokers' data to an ad platform is what regulators
    /// and the platforms' own terms object to.
    pub fn default_classes(self) -> &'static [DataPartyClass] {
        const OWN: [DataPartyClass; 2] = [DataPartyClass::ZeroParty, DataPartyClass::FirstParty];
        const ALL: [DataPartyClass; 4] = [
            DataPartyClass::ZeroParty,
            DataPartyClass::FirstParty,
            DataPartyClass::SecondParty,
            DataPartyClass::ThirdParty,
        ];
        if self.is_ad_platform() {
            &OWN
        } else {
            &ALL
        }
    }
}

impl std::fmt::Display for DestinationKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One destination: what it is, which events it takes and what is removed or hashed before they leave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    /// Stable identifier: 1–64 of a-z, 0-9, `-`, `_`, starting with a letter or digit.
    pub id: String,
    pub kind: DestinationKind,
    /// Consent purposes the destination needs (workspace purpose ids). An event is sent only if all are granted.
    #[serde(default)]
    pub purposes: Vec<String>,
    /// Sent without consent. Only for a destination that declares no purposes and is not an ad platform
    /// (strictly necessary processing, such as the workspace's own archive).
    #[serde(default)]
    pub essential: bool,
    /// Only these Segment types (`track`, `identify`, …); all when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_types: Option<Vec<String>>,
    /// Only events with these names (a track's `event`, a page's or screen's `name`; exact match). When set, events
    /// without a name (identify, group, alias) are not sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_names: Option<Vec<String>>,
    /// Only events from these source ids; all when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<String>>,
    /// Data-party classes sent. Default: 0P and 1P for ad platforms, all for webhooks and S3 exports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_classes: Option<Vec<DataPartyClass>>,
    /// JSON pointers (RFC 6901, e.g. `/context/ip`, `/properties/notes`) removed from every event before sending.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drop_fields: Vec<String>,
    /// Hash identifiers (email, phone) before sending. Default and required: on for ad platforms; default off
    /// for webhooks and S3 exports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hashing: Option<bool>,
    /// Where and how events are sent.
    #[serde(default)]
    pub transport: Transport,
}

/// How a destination is reached. Strings may hold `${NAME}`, read from the deliver function's environment when it
/// starts (so secrets stay out of the workspace file).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Transport {
    /// `webhook`: the URL events are POSTed to (required). `meta_capi` / `google_ads`: the API's base URL
    /// (default `https://graph.facebook.com/v21.0` / `https://googleads.googleapis.com/v17`), so tests can use a
    /// local server. `http` is allowed only for hosts in `delivery.allow_private_hosts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// `webhook`: the HMAC-SHA256 signing secret (header `X-Tributary-Signature: t=<unix>,v1=<hex>` over
    /// `<t>.<body>`). `meta_capi` / `google_ads`: the access token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// `meta_capi`: the pixel (dataset) id; `google_ads`: the customer id (digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// `google_ads`: the conversion action resource name (`customers/<id>/conversionActions/<id>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversion_action: Option<String>,
    /// `google_ads`: the developer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub developer_token: Option<String>,
    /// `meta_capi`: a test event code (events show in Events Manager's test tab only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_event_code: Option<String>,
    /// `s3_export`: the bucket, and the key prefix objects are written under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Events per request (or per exported object). Defaults: webhook 1 (the event is the body; more makes the
    /// body `{"batch":[…]}`), meta_capi 100 (max 1000), google_ads 100 (max 2000), s3_export 500 (max 10000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<u32>,
    /// Request timeout in milliseconds (default 10000, 100..=60000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u32>,
    /// Also send a `Consent Updated` track event whenever a profile's consent changes — whatever it now grants,
    /// so the destination learns of a withdrawal.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub consent_updates: bool,
    /// Add the profile (`context.profile = {id, traits}`) to every event; traits are limited to the data-party
    /// classes the destination allows.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub profile_traits: bool,
}

impl Transport {
    /// The batch size in force (see [`Transport::batch_size`]).
    pub fn batch_size(&self, kind: DestinationKind) -> usize {
        let (default, _) = batch_bounds(kind);
        self.batch_size.map_or(default, |b| b as usize)
    }

    /// The request timeout in force.
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(u64::from(self.timeout_ms.unwrap_or(10_000)))
    }

    fn check(&self, kind: DestinationKind) -> Result<(), DestinationError> {
        let need = |field: &'static str, v: &Option<String>| match v {
            Some(s) if !s.trim().is_empty() => Ok(()),
            _ => Err(DestinationError::Missing(field, kind)),
        };
        let refuse = |field: &'static str, v: bool| if v { Err(DestinationError::NotFor(field, kind)) } else { Ok(()) };
        match kind {
            DestinationKind::Webhook => {
                need("transport.url", &self.url)?;
                refuse("transport.account", self.account.is_some())?;
                refuse("transport.bucket", self.bucket.is_some())?;
            }
            DestinationKind::MetaCapi => {
                need("transport.account", &self.account)?;
                need("transport.secret", &self.secret)?;
                refuse("transport.bucket", self.bucket.is_some())?;
            }
            DestinationKind::GoogleAds => {
                need("transport.account", &self.account)?;
                need("transport.secret", &self.secret)?;
                need("transport.conversion_action", &self.conversion_action)?;
                need("transport.developer_token", &self.developer_token)?;
                refuse("transport.bucket", self.bucket.is_some())?;
            }
            DestinationKind::S3Export => {
                need("transport.bucket", &self.bucket)?;
                refuse("transport.url", self.url.is_some())?;
                refuse("transport.secret", self.secret.is_some())?;
            }
        }
        if let Some(url) = &self.url {
            if !(url.starts_with("https://") || url.starts_with("http://") || url.starts_with("${")) || url.len() > 2048
            {
                return Err(DestinationError::InvalidUrl);
            }
        }
        if kind != DestinationKind::GoogleAds && (self.conversion_action.is_some() || self.developer_token.is_some()) {
            return Err(DestinationError::NotFor("transport.conversion_action/developer_token", kind));
        }
        if kind != DestinationKind::MetaCapi && self.test_event_code.is_some() {
            return Err(DestinationError::NotFor("transport.test_event_code", kind));
        }
        if let Some(p) = &self.prefix {
            if p.len() > 512 || p.starts_with('/') || p.split('/').any(|s| s == "..") {
                return Err(DestinationError::InvalidPrefix);
            }
        }
        let (_, max) = batch_bounds(kind);
        if let Some(b) = self.batch_size {
            if b == 0 || b as usize > max {
                return Err(DestinationError::BatchSize(max));
            }
        }
        if let Some(t) = self.timeout_ms {
            if !(100..=60_000).contains(&t) {
                return Err(DestinationError::Timeout);
            }
        }
        Ok(())
    }
}

impl Transport {
    /// The least a `kind` destination needs (placeholder values; for tests and examples).
    pub fn minimal(kind: DestinationKind) -> Transport {
        let s = |v: &str| Some(v.to_string());
        match kind {
            DestinationKind::Webhook => Transport { url: s("https://hooks.example.com/t"), ..Default::default() },
            DestinationKind::MetaCapi => {
                Transport { account: s("1234567890"), secret: s("${META_TOKEN}"), ..Default::default() }
            }
            DestinationKind::GoogleAds => Transport {
                account: s("1234567890"),
                secret: s("${GOOGLE_TOKEN}"),
                conversion_action: s("customers/1234567890/conversionActions/1"),
                developer_token: s("${GOOGLE_DEV_TOKEN}"),
                ..Default::default()
            },
            DestinationKind::S3Export => Transport { bucket: s("exports"), ..Default::default() },
        }
    }
}

/// (default, maximum) events per request for a kind.
fn batch_bounds(kind: DestinationKind) -> (usize, usize) {
    match kind {
        DestinationKind::Webhook => (1, 100),
        DestinationKind::MetaCapi => (100, 1_000),
        DestinationKind::GoogleAds => (100, 2_000),
        DestinationKind::S3Export => (500, 10_000),
    }
}

/// A problem in a destination's config. Names the field and index, never the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DestinationError {
    #[error("id must be 1-64 of a-z, 0-9, '-', '_', starting with a letter or digit")]
    InvalidId,
    #[error("an essential destination must not declare purposes")]
    EssentialWithPurposes,
    #[error("an ad platform cannot be essential: declare the consent purposes it needs")]
    EssentialAdPlatform,
    #[error("a destination that is not essential must declare at least one consent purpose")]
    NoPurposes,
    #[error("purposes[{0}] must be 1-64 of a-z, 0-9, '_' and '-'")]
    InvalidPurpose(usize),
    #[error("purposes[{0}] is listed twice")]
    DuplicatePurpose(usize),
    #[error("{0} must list at least one entry (leave it out to allow all)")]
    EmptyList(&'static str),
    #[error("{0} lists more than 256 entries")]
    TooManyEntries(&'static str),
    #[error("event_types[{0}] must be one of track, identify, page, screen, group, alias")]
    InvalidEventType(usize),
    #[error("event_names[{0}] must be 1-512 bytes")]
    InvalidEventName(usize),
    #[error("sources[{0}] is not a valid source id")]
    InvalidSource(usize),
    #[error(
        "drop_fields[{0}] must be a JSON pointer below the root: '/' then '/'-separated keys, '~' only as ~0 or ~1"
    )]
    InvalidPointer(usize),
    #[error("hashing cannot be turned off for an ad platform")]
    HashingRequired,
    #[error("{0} is required for a {1} destination")]
    Missing(&'static str, DestinationKind),
    #[error("{0} does not apply to a {1} destination")]
    NotFor(&'static str, DestinationKind),
    #[error("transport.url must be an http:// or https:// URL of at most 2048 bytes")]
    InvalidUrl,
    #[error("transport.prefix must be a relative key prefix of at most 512 bytes without '..'")]
    InvalidPrefix,
    #[error("transport.batch_size must be 1..={0}")]
    BatchSize(usize),
    #[error("transport.timeout_ms must be 100..=60000")]
    Timeout,
}

impl DestinationConfig {
    /// Cross-field checks; the first problem found is returned.
    pub fn check(&self) -> Result<(), DestinationError> {
        if !valid_id(&self.id) {
            return Err(DestinationError::InvalidId);
        }
        match (self.essential, self.purposes.is_empty()) {
            (true, false) => return Err(DestinationError::EssentialWithPurposes),
            (true, true) if self.kind.is_ad_platform() => return Err(DestinationError::EssentialAdPlatform),
            (false, true) => return Err(DestinationError::NoPurposes),
            _ => {}
        }
        bounded_len("purposes", self.purposes.len())?;
        for (i, p) in self.purposes.iter().enumerate() {
            if !valid_purpose(p) {
                return Err(DestinationError::InvalidPurpose(i));
            }
            if self.purposes[..i].contains(p) {
                return Err(DestinationError::DuplicatePurpose(i));
            }
        }
        if let Some(types) = &self.event_types {
            non_empty("event_types", types.len())?;
            if let Some(i) = types.iter().position(|t| MessageType::from_name(t).is_none()) {
                return Err(DestinationError::InvalidEventType(i));
            }
        }
        if let Some(names) = &self.event_names {
            non_empty("event_names", names.len())?;
            if let Some(i) = names.iter().position(|n| n.is_empty() || n.len() > MAX_ENTRY_BYTES) {
                return Err(DestinationError::InvalidEventName(i));
            }
        }
        if let Some(sources) = &self.sources {
            non_empty("sources", sources.len())?;
            if let Some(i) = sources.iter().position(|s| SourceId::try_from(s.clone()).is_err()) {
                return Err(DestinationError::InvalidSource(i));
            }
        }
        if let Some(classes) = &self.allowed_classes {
            non_empty("allowed_classes", classes.len())?;
        }
        bounded_len("drop_fields", self.drop_fields.len())?;
        if let Some(i) = self.drop_fields.iter().position(|p| parse_pointer(p).is_none()) {
            return Err(DestinationError::InvalidPointer(i));
        }
        if self.kind.is_ad_platform() && self.hashing == Some(false) {
            return Err(DestinationError::HashingRequired);
        }
        self.transport.check(self.kind)
    }

    /// Whether identifiers are hashed before sending (always for ad platforms, whatever the config says).
    pub fn hashes(&self) -> bool {
        self.kind.is_ad_platform() || self.hashing.unwrap_or(false)
    }

    /// Whether events of data-party class `class` may go to this destination.
    pub fn allows_class(&self, class: DataPartyClass) -> bool {
        match &self.allowed_classes {
            Some(classes) => classes.contains(&class),
            None => self.kind.default_classes().contains(&class),
        }
    }

    /// Removes every `drop_fields` target present in `event` and returns how many were removed. A pointer into an
    /// array removes that element. Pointers that do not parse remove nothing ([`Self::check`] refuses them).
    pub fn apply_drop_fields(&self, event: &mut Map<String, Value>) -> usize {
        self.drop_fields.iter().filter_map(|p| parse_pointer(p)).filter(|tokens| remove_at(event, tokens)).count()
    }
}

fn non_empty(field: &'static str, len: usize) -> Result<(), DestinationError> {
    if len == 0 {
        return Err(DestinationError::EmptyList(field));
    }
    bounded_len(field, len)
}

fn bounded_len(field: &'static str, len: usize) -> Result<(), DestinationError> {
    if len > MAX_LIST_LEN {
        return Err(DestinationError::TooManyEntries(field));
    }
    Ok(())
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_BYTES
        && id.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// The rule of [`crate::profile::ConsentPurpose`] ids, so a destination can only name a purpose that can exist.
fn valid_purpose(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= MAX_ID_BYTES
        && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// The unescaped reference tokens of a JSON pointer that names something below the root.
fn parse_pointer(pointer: &str) -> Option<Vec<String>> {
    if pointer.len() > MAX_ENTRY_BYTES || pointer.len() < 2 {
        return None;
    }
    let rest = pointer.strip_prefix('/')?;
    rest.split('/').map(unescape_token).collect()
}

fn unescape_token(token: &str) -> Option<String> {
    let mut out = String::with_capacity(token.len());
    let mut chars = token.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// Removes the value at `tokens` (non-empty) below `event`; false when nothing is there.
fn remove_at(event: &mut Map<String, Value>, tokens: &[String]) -> bool {
    let Some((last, parents)) = tokens.split_last() else { return false };
    let Some((first, between)) = parents.split_first() else { return event.remove(last.as_str()).is_some() };
    let Some(mut current) = event.get_mut(first.as_str()) else { return false };
    for token in between {
        current = match current {
            Value::Object(map) => match map.get_mut(token.as_str()) {
                Some(v) => v,
                None => return false,
            },
            Value::Array(items) => match array_index(token).and_then(|i| items.get_mut(i)) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    match current {
        Value::Object(map) => map.remove(last.as_str()).is_some(),
        Value::Array(items) => match array_index(last) {
            Some(i) if i < items.len() => {
                items.remove(i);
                true
            }
            _ => false,
        },
        _ => false,
    }
}

/// An RFC 6901 array index: `0` or digits without a leading zero.
fn array_index(token: &str) -> Option<usize> {
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_digit()) || (token.len() > 1 && token.starts_with('0')) {
        return None;
    }
    token.parse().ok()
}

/// Why an event is not sent to a destination. The codes are stable: metrics and the delivery log use them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// A purpose the destination needs is granted nowhere (or the destination declares none and is not essential).
    ConsentMissing,
    /// A purpose the destination needs is denied by the profile or by the event.
    ConsentDenied,
    /// The event's data-party class is not allowed for the destination.
    ClassNotAllowed,
    /// The event's type is not in `event_types`.
    FilteredType,
    /// The event's name is not in `event_names`, or it has none.
    FilteredName,
    /// The event's source is not in `sources`.
    FilteredSource,
}

impl SkipReason {
    pub const ALL: [SkipReason; 6] = [
        SkipReason::ConsentMissing,
        SkipReason::ConsentDenied,
        SkipReason::ClassNotAllowed,
        SkipReason::FilteredType,
        SkipReason::FilteredName,
        SkipReason::FilteredSource,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::ConsentMissing => "consent_missing",
            SkipReason::ConsentDenied => "consent_denied",
            SkipReason::ClassNotAllowed => "class_not_allowed",
            SkipReason::FilteredType => "filtered_type",
            SkipReason::FilteredName => "filtered_name",
            SkipReason::FilteredSource => "filtered_source",
        }
    }
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The routing decision for one event and one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    Send,
    Skip(SkipReason),
}

/// Decides whether `event` (from source `source_id`, of data-party class `class`) goes to `dest`.
///
/// Checks, in order: source, type, name, class, consent; the first that fails is the reason, so the consent codes
/// count only events the destination would otherwise have received. For each purpose the destination needs, a
/// denial in the profile's or the event's own consent wins; otherwise a grant in either counts (the profile's
/// state already includes this event's signals unless the event has no profile); stated nowhere is a "no".
/// The destination is not re-checked, but an unchecked one still fails closed: a non-essential destination
/// without purposes, or an "essential" ad platform, sends nothing.
pub fn route(
    dest: &DestinationConfig,
    source_id: &str,
    class: DataPartyClass,
    event: &Map<String, Value>,
    profile_consent: &BTreeMap<String, bool>,
    event_consent: &BTreeMap<String, bool>,
) -> Route {
    if let Some(sources) = &dest.sources {
        if !sources.iter().any(|s| s == source_id) {
            return Route::Skip(SkipReason::FilteredSource);
        }
    }
    let event_type = event.get("type").and_then(Value::as_str);
    if let Some(types) = &dest.event_types {
        if !event_type.is_some_and(|t| types.iter().any(|allowed| allowed == t)) {
            return Route::Skip(SkipReason::FilteredType);
        }
    }
    if let Some(names) = &dest.event_names {
        if !event_name(event_type, event).is_some_and(|n| names.iter().any(|allowed| allowed == n)) {
            return Route::Skip(SkipReason::FilteredName);
        }
    }
    if !dest.allows_class(class) {
        return Route::Skip(SkipReason::ClassNotAllowed);
    }
    match consent(dest, profile_consent, event_consent) {
        None => Route::Send,
        Some(reason) => Route::Skip(reason),
    }
}

/// Whether a source's `permitted_purposes` let its events go to a destination that needs `dest_purposes`.
///
/// `None` (the source declares no restriction, as 0P/1P sources may) permits everything. Otherwise every purpose
/// the destination needs must be in the list. A destination that needs no purposes (an essential one) is always
/// permitted, so an empty list means "essential destinations only". This is only the source's side: the person's
/// consent is still checked by [`route`].
pub fn source_permits(permitted: Option<&[String]>, dest_purposes: &[String]) -> bool {
    match permitted {
        None => true,
        Some(list) => dest_purposes.iter().all(|p| list.contains(p)),
    }
}

/// A track's `event`, a page's or screen's `name`; other types have no name.
fn event_name<'a>(event_type: Option<&str>, event: &'a Map<String, Value>) -> Option<&'a str> {
    let key = match event_type? {
        "track" => "event",
        "page" | "screen" => "name",
        _ => return None,
    };
    event.get(key).and_then(Value::as_str)
}

/// `None` when the destination may receive the event as far as consent goes, else why not.
fn consent(
    dest: &DestinationConfig,
    profile: &BTreeMap<String, bool>,
    event: &BTreeMap<String, bool>,
) -> Option<SkipReason> {
    if dest.purposes.is_empty() {
        let exempt = dest.essential && !dest.kind.is_ad_platform();
        return (!exempt).then_some(SkipReason::ConsentMissing);
    }
    let mut missing = false;
    for purpose in &dest.purposes {
        let (p, e) = (profile.get(purpose).copied(), event.get(purpose).copied());
        if p == Some(false) || e == Some(false) {
            // A denial is the more useful reason to report, whatever else is missing.
            return Some(SkipReason::ConsentDenied);
        }
        missing |= p.is_none() && e.is_none();
    }
    missing.then_some(SkipReason::ConsentMissing)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn dest(kind: DestinationKind, purposes: &[&str], essential: bool) -> DestinationConfig {
        DestinationConfig {
            id: format!("{}-1", kind.as_str().replace('_', "-")),
            kind,
            purposes: purposes.iter().map(|p| p.to_string()).collect(),
            essential,
            event_types: None,
            event_names: None,
            sources: None,
            allowed_classes: None,
            drop_fields: Vec::new(),
            hashing: None,
            transport: Transport::minimal(kind),
        }
    }

    #[test]
    fn transports_need_their_own_fields_and_refuse_others() {
        for kind in DestinationKind::ALL {
            assert_eq!(Transport::minimal(kind).check(kind), Ok(()), "{kind}");
            assert!(matches!(Transport::default().check(kind), Err(DestinationError::Missing(..))), "{kind}");
        }
        let mut t = Transport::minimal(DestinationKind::Webhook);
        t.bucket = Some("b".into());
        assert_eq!(
            t.check(DestinationKind::Webhook),
            Err(DestinationError::NotFor("transport.bucket", DestinationKind::Webhook))
        );
        let mut t = Transport::minimal(DestinationKind::Webhook);
        t.url = Some("ftp://x".into());
        assert_eq!(t.check(DestinationKind::Webhook), Err(DestinationError::InvalidUrl));
        t.url = Some("${HOOK_URL}".into());
        assert_eq!(t.check(DestinationKind::Webhook), Ok(()));
        t.batch_size = Some(101);
        assert_eq!(t.check(DestinationKind::Webhook), Err(DestinationError::BatchSize(100)));
        let mut t = Transport::minimal(DestinationKind::S3Export);
        t.prefix = Some("a/../b".into());
        assert_eq!(t.check(DestinationKind::S3Export), Err(DestinationError::InvalidPrefix));
        assert_eq!(Transport::default().batch_size(DestinationKind::MetaCapi), 100);
    }

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    fn consent_of(pairs: &[(&str, bool)]) -> BTreeMap<String, bool> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    fn track(name: &str) -> Map<String, Value> {
        obj(json!({ "type": "track", "event": name, "messageId": "m1", "properties": {} }))
    }

    const NONE: &[&str] = &[];
    const ONE: &[&str] = &["advertising"];
    const TWO: &[&str] = &["advertising", "analytics"];

    #[derive(Debug, Clone, Copy)]
    enum State {
        Granted,
        Denied,
        Missing,
    }

    fn state_map(state: State, purposes: &[&str]) -> BTreeMap<String, bool> {
        match state {
            State::Granted => purposes.iter().map(|p| (p.to_string(), true)).collect(),
            State::Denied => purposes.iter().map(|p| (p.to_string(), false)).collect(),
            State::Missing => BTreeMap::new(),
        }
    }

    #[test]
    fn consent_matrix_nothing_is_sent_without_consent() {
        let event = track("Order Completed");
        let states = [State::Granted, State::Denied, State::Missing];
        for kind in DestinationKind::ALL {
            for (purposes, essential) in [(NONE, true), (NONE, false), (ONE, false), (TWO, false)] {
                let d = dest(kind, purposes, essential);
                for profile in states {
                    for ev in states {
                        // The consent maps speak about every purpose of the largest config, so "granted" for a
                        // one-purpose destination also grants purposes it does not need.
                        let (p, e) = (state_map(profile, TWO), state_map(ev, TWO));
                        let got = route(&d, "web", DataPartyClass::FirstParty, &event, &p, &e);
                        let expected = if purposes.is_empty() {
                            if essential && !kind.is_ad_platform() {
                                Route::Send
                            } else {
                                Route::Skip(SkipReason::ConsentMissing)
                            }
                        } else {
                            match (profile, ev) {
                                (State::Denied, _) | (_, State::Denied) => Route::Skip(SkipReason::ConsentDenied),
                                (State::Missing, State::Missing) => Route::Skip(SkipReason::ConsentMissing),
                                _ => Route::Send,
                            }
                        };
                        assert_eq!(
                            got, expected,
                            "{kind} purposes={purposes:?} essential={essential} profile={profile:?} event={ev:?}"
                        );
                        if got == Route::Send && !(essential && purposes.is_empty()) {
                            let granted =
                                |m: &BTreeMap<String, bool>| purposes.iter().all(|x| m.get(*x) == Some(&true));
                            assert!(granted(&p) || granted(&e), "sent without a grant");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn every_needed_purpose_must_be_granted_and_a_denial_anywhere_wins() {
        let d = dest(DestinationKind::S3Export, TWO, false);
        let e = track("x");
        let r = |p: &[(&str, bool)], ev: &[(&str, bool)]| {
            route(&d, "web", DataPartyClass::FirstParty, &e, &consent_of(p), &consent_of(ev))
        };
        // One of two granted: the other is missing.
        assert_eq!(r(&[("advertising", true)], &[]), Route::Skip(SkipReason::ConsentMissing));
        // Split across profile and event is enough.
        assert_eq!(r(&[("advertising", true)], &[("analytics", true)]), Route::Send);
        // The event denies what the profile grants, and the other way round.
        assert_eq!(
            r(&[("advertising", true), ("analytics", true)], &[("analytics", false)]),
            Route::Skip(SkipReason::ConsentDenied)
        );
        assert_eq!(
            r(&[("advertising", false), ("analytics", true)], &[("advertising", true)]),
            Route::Skip(SkipReason::ConsentDenied)
        );
        // Denied beats missing as the reported reason.
        assert_eq!(r(&[("analytics", false)], &[]), Route::Skip(SkipReason::ConsentDenied));
        // Unknown purposes grant nothing; names are exact.
        assert_eq!(
            r(&[("Advertising", true), ("ANALYTICS", true), ("other", true)], &[]),
            Route::Skip(SkipReason::ConsentMissing)
        );
    }

    #[test]
    fn third_party_data_does_not_reach_ad_platforms_by_default() {
        let identify = obj(json!({ "type": "identify", "userId": "u1", "traits": { "email": "a@example.com" } }));
        let granted = consent_of(&[("advertising", true)]);
        let none = BTreeMap::new();
        for kind in DestinationKind::ALL {
            let d = dest(kind, ONE, false);
            for class in [DataPartyClass::ZeroParty, DataPartyClass::FirstParty] {
                assert_eq!(route(&d, "crm", class, &identify, &granted, &none), Route::Send, "{kind}");
            }
            for class in [DataPartyClass::SecondParty, DataPartyClass::ThirdParty] {
                let expected =
                    if kind.is_ad_platform() { Route::Skip(SkipReason::ClassNotAllowed) } else { Route::Send };
                assert_eq!(route(&d, "broker", class, &identify, &granted, &none), expected, "{kind}");
            }
        }
        // An explicit list replaces the default, both ways.
        let mut meta = dest(DestinationKind::MetaCapi, ONE, false);
        meta.allowed_classes = Some(vec![DataPartyClass::ZeroParty]);
        assert_eq!(
            route(&meta, "web", DataPartyClass::FirstParty, &identify, &granted, &none),
            Route::Skip(SkipReason::ClassNotAllowed)
        );
        let mut hook = dest(DestinationKind::Webhook, ONE, false);
        hook.allowed_classes = Some(vec![DataPartyClass::FirstParty]);
        assert_eq!(
            route(&hook, "broker", DataPartyClass::ThirdParty, &identify, &granted, &none),
            Route::Skip(SkipReason::ClassNotAllowed)
        );
    }

    #[test]
    fn filters_on_source_type_and_name_come_before_consent() {
        let mut d = dest(DestinationKind::Webhook, ONE, false);
        d.sources = Some(vec!["web".into()]);
        d.event_types = Some(vec!["track".into(), "page".into()]);
        d.event_names = Some(vec!["Order Completed".into(), "Pricing".into()]);
        let granted = consent_of(&[("advertising", true)]);
        let none = BTreeMap::new();
        let r = |src: &str, e: &Map<String, Value>, c: &BTreeMap<String, bool>| {
            route(&d, src, DataPartyClass::FirstParty, e, c, &none)
        };
        assert_eq!(r("web", &track("Order Completed"), &granted), Route::Send);
        assert_eq!(r("web", &obj(json!({ "type": "page", "name": "Pricing" })), &granted), Route::Send);
        assert_eq!(r("ios", &track("Order Completed"), &granted), Route::Skip(SkipReason::FilteredSource));
        assert_eq!(r("web", &track("order completed"), &granted), Route::Skip(SkipReason::FilteredName));
        assert_eq!(r("web", &obj(json!({ "type": "track" })), &granted), Route::Skip(SkipReason::FilteredName));
        assert_eq!(
            r("web", &obj(json!({ "type": "identify", "event": "Order Completed" })), &granted),
            Route::Skip(SkipReason::FilteredType)
        );
        assert_eq!(
            r("web", &obj(json!({ "event": "Order Completed" })), &granted),
            Route::Skip(SkipReason::FilteredType)
        );
        // A filtered event is reported as filtered even without consent.
        assert_eq!(r("ios", &track("Order Completed"), &none), Route::Skip(SkipReason::FilteredSource));
        assert_eq!(r("web", &track("Order Completed"), &none), Route::Skip(SkipReason::ConsentMissing));
        // With only a name filter, unnamed types are not sent.
        let mut names_only = dest(DestinationKind::Webhook, ONE, false);
        names_only.event_names = Some(vec!["Order Completed".into()]);
        let identify = obj(json!({ "type": "identify", "traits": {} }));
        assert_eq!(
            route(&names_only, "web", DataPartyClass::FirstParty, &identify, &granted, &none),
            Route::Skip(SkipReason::FilteredName)
        );
    }

    #[test]
    fn reason_codes_are_stable() {
        let codes: Vec<&str> = SkipReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            codes,
            [
                "consent_missing",
                "consent_denied",
                "class_not_allowed",
                "filtered_type",
                "filtered_name",
                "filtered_source"
            ]
        );
        for r in SkipReason::ALL {
            assert_eq!(serde_json::to_value(r).ok(), Some(Value::from(r.as_str())));
        }
    }

    #[test]
    fn check_accepts_valid_and_refuses_inconsistent_configs() {
        for kind in DestinationKind::ALL {
            assert_eq!(dest(kind, ONE, false).check(), Ok(()), "{kind}");
            assert_eq!(dest(kind, NONE, false).check(), Err(DestinationError::NoPurposes));
            assert_eq!(dest(kind, ONE, true).check(), Err(DestinationError::EssentialWithPurposes));
        }
        assert_eq!(dest(DestinationKind::S3Export, NONE, true).check(), Ok(()));
        assert_eq!(dest(DestinationKind::Webhook, NONE, true).check(), Ok(()));
        assert_eq!(dest(DestinationKind::MetaCapi, NONE, true).check(), Err(DestinationError::EssentialAdPlatform));
        assert_eq!(dest(DestinationKind::GoogleAds, NONE, true).check(), Err(DestinationError::EssentialAdPlatform));

        let with = |f: &dyn Fn(&mut DestinationConfig)| {
            let mut d = dest(DestinationKind::MetaCapi, ONE, false);
            f(&mut d);
            d.check()
        };
        assert_eq!(with(&|d| d.id = "Meta".into()), Err(DestinationError::InvalidId));
        assert_eq!(with(&|d| d.id = "-meta".into()), Err(DestinationError::InvalidId));
        assert_eq!(with(&|d| d.id = "m".repeat(65)), Err(DestinationError::InvalidId));
        assert_eq!(with(&|d| d.purposes = vec!["ads".into(), "Ads ".into()]), Err(DestinationError::InvalidPurpose(1)));
        assert_eq!(
            with(&|d| d.purposes = vec!["ads".into(), "ads".into()]),
            Err(DestinationError::DuplicatePurpose(1))
        );
        assert_eq!(with(&|d| d.event_types = Some(vec![])), Err(DestinationError::EmptyList("event_types")));
        assert_eq!(
            with(&|d| d.event_types = Some(vec!["track".into(), "Track".into()])),
            Err(DestinationError::InvalidEventType(1))
        );
        assert_eq!(with(&|d| d.event_names = Some(vec!["".into()])), Err(DestinationError::InvalidEventName(0)));
        assert_eq!(with(&|d| d.sources = Some(vec!["Web App".into()])), Err(DestinationError::InvalidSource(0)));
        assert_eq!(with(&|d| d.allowed_classes = Some(vec![])), Err(DestinationError::EmptyList("allowed_classes")));
        assert_eq!(with(&|d| d.hashing = Some(false)), Err(DestinationError::HashingRequired));
        assert_eq!(with(&|d| d.hashing = Some(true)), Ok(()));
        for bad in ["", "/", "context/ip", "/a~2b", "/a~"] {
            assert_eq!(with(&|d| d.drop_fields = vec![bad.into()]), Err(DestinationError::InvalidPointer(0)), "{bad}");
        }
        assert_eq!(with(&|d| d.purposes = vec!["ads".into(); 257]), Err(DestinationError::TooManyEntries("purposes")));
    }

    #[test]
    fn source_permits_only_destinations_within_its_purposes() {
        let list = |l: &[&str]| l.iter().map(|p| p.to_string()).collect::<Vec<_>>();
        let (none, one, two) = (list(NONE), list(ONE), list(TWO));
        let analytics = list(&["analytics"]);
        // (source's permitted purposes, destination's purposes, permitted)
        type Case<'a> = (Option<&'a [String]>, &'a [String], bool);
        let table: [Case; 13] = [
            (None, &none, true),
            (None, &one, true),
            (None, &two, true),
            (Some(&none), &none, true),
            (Some(&none), &one, false),
            (Some(&none), &two, false),
            (Some(&one), &none, true),
            (Some(&one), &one, true),
            (Some(&one), &two, false),
            (Some(&one), &analytics, false),
            (Some(&two), &one, true),
            (Some(&two), &two, true),
            (Some(&analytics), &two, false),
        ];
        for (permitted, dest, expected) in table {
            assert_eq!(source_permits(permitted, dest), expected, "{permitted:?} → {dest:?}");
        }
    }

    #[test]
    fn errors_never_carry_values() {
        let mut d = dest(DestinationKind::Webhook, &["secret-purpose"], false);
        d.sources = Some(vec!["Secret Source".into()]);
        let message = d.check().map_err(|e| e.to_string()).err().unwrap_or_default();
        assert!(message.starts_with("sources[0]"), "{message}");
        assert!(!message.contains("Secret"), "{message}");
    }

    #[test]
    fn hashing_and_class_defaults_follow_the_kind() {
        for kind in DestinationKind::ALL {
            let mut d = dest(kind, ONE, false);
            assert_eq!(d.hashes(), kind.is_ad_platform(), "{kind}");
            d.hashing = Some(false);
            assert_eq!(d.hashes(), kind.is_ad_platform(), "{kind}: ad platforms always hash");
            d.hashing = Some(true);
            assert!(d.hashes());
        }
    }

    #[test]
    fn drop_fields_remove_pointer_targets() {
        let mut d = dest(DestinationKind::Webhook, ONE, false);
        d.drop_fields =
            vec!["/context/ip".into(), "/properties/a~1b".into(), "/properties/list/1".into(), "/missing/x".into()];
        d.drop_fields.push("/properties/list/01".into());
        d.drop_fields.push("/userId/deeper".into());
        let mut event = obj(json!({
            "userId": "u1",
            "context": { "ip": "192.0.2.1", "locale": "en" },
            "properties": { "a/b": 1, "list": ["x", "y", "z"] }
        }));
        assert_eq!(d.apply_drop_fields(&mut event), 3);
        assert_eq!(
            Value::Object(event),
            json!({ "userId": "u1", "context": { "locale": "en" }, "properties": { "list": ["x", "z"] } })
        );
        // Top-level keys too.
        d.drop_fields = vec!["/userId".into()];
        let mut event = obj(json!({ "userId": "u1", "type": "track" }));
        assert_eq!(d.apply_drop_fields(&mut event), 1);
        assert_eq!(Value::Object(event), json!({ "type": "track" }));
    }

    #[test]
    fn config_round_trips_and_refuses_unknown_fields() {
        let yaml = "id: meta-main\nkind: meta_capi\npurposes: [advertising]\n\
                    allowed_classes: [0P]\ndrop_fields: [/context/ip]\n\
                    transport: {account: \"123\", secret: \"${META_TOKEN}\"}\n";
        let d: Result<DestinationConfig, _> = serde_yaml_ng::from_str(yaml);
        let d = d.map_err(|e| e.to_string());
        assert!(matches!(&d, Ok(d) if d.kind == DestinationKind::MetaCapi && d.check().is_ok()), "{d:?}");
        let unknown: Result<DestinationConfig, _> = serde_yaml_ng::from_str("id: x\nkind: webhook\nurl: y\n");
        assert!(unknown.is_err());
        let schema = serde_json::to_value(schemars::schema_for!(DestinationConfig)).unwrap_or(Value::Null);
        assert_eq!(schema["additionalProperties"], json!(false));
    }
}
