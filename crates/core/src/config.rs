//! The workspace configuration: one YAML (or JSON) file naming sources, their write keys (as SHA-256 hashes),
//! limits and rate limits, and the management keys. A JSON Schema is generated from these types
//! (`tributary config schema`), and [`load`] reports problems with the file's line numbers.

use std::collections::BTreeSet;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ingest::Limits;

/// A string newtype's schema: a string matching `pattern` (the same rule its `TryFrom` enforces).
macro_rules! string_schema {
    ($ty:ty, $name:literal, $pattern:literal) => {
        impl JsonSchema for $ty {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                $name.into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({ "type": "string", "pattern": $pattern })
            }
        }
    };
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceConfig {
    /// Human name of the workspace.
    pub workspace: String,
    /// Where events come from. Each source has its own write keys, limits and data-party class.
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
    /// Keys for the management APIs (profiles, DSR, admin), stored as SHA-256 hashes.
    #[serde(default)]
    pub management_keys: Vec<ManagementKey>,
    /// Identity resolution rules per identifier type (priority, values per profile, blocked values).
    #[serde(default)]
    pub identity: crate::identity::IdentityRules,
    /// Profile bounds, retention and `set_once` traits.
    #[serde(default)]
    pub profiles: crate::profile::ProfileSettings,
    /// Consent purposes and how consent signals map onto them.
    #[serde(default)]
    pub consent: crate::profile::ConsentSettings,
    /// Where stitched events are sent: webhooks, Meta CAPI, Google Ads, S3 exports. Each declares the consent
    /// purposes it needs; nothing is sent without them.
    #[serde(default)]
    pub destinations: Vec<crate::delivery::DestinationConfig>,
    /// Retries, the SSRF allow-list and sensitive-data scrubbing for all destinations.
    #[serde(default)]
    pub delivery: crate::delivery::DeliverySettings,
    /// Audiences: named rules over traits, recent events, consent and identifiers, evaluated per profile.
    #[serde(default)]
    pub audiences: Vec<crate::audience::AudienceConfig>,
    /// Data subject requests (OpenDSR): the processor domain and controller id in answers, the waiting period and
    /// the promised completion time.
    #[serde(default)]
    pub dsr: crate::dsr::DsrSettings,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Stable identifier: lowercase letters, digits, `-` and `_`, at most 64 characters.
    pub id: SourceId,
    #[serde(default)]
    pub name: Option<String>,
    /// SHA-256 (lowercase hex) of each write key accepted for this source. The keys themselves are never stored.
    pub write_key_sha256: Vec<Sha256Hex>,
    /// Who collected the data: 0P (declared by the person), 1P (our own), 2P (a partner's), 3P (a broker's).
    #[serde(default = "default_class")]
    pub class: DataPartyClass,
    #[serde(default)]
    pub limits: Limits,
    /// Requests per second accepted from this source (per running instance), with a burst allowance.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// A disabled source answers 404 `source_disabled`, as RudderStack's gateway does.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// JSON Schemas of the source's track events and identify traits, and what to do with unplanned events and
    /// violations (allow, drop_properties, quarantine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking_plan: Option<crate::governance::TrackingPlan>,
    /// PII detection (emails, phones, cards, IBANs, national ids, IP addresses in free text), its action (allow,
    /// hash, redact, drop_event) and allow-list minimization, applied before anything is queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pii: Option<crate::governance::policy::PiiPolicy>,
    /// How the rows of this source's import files (S3 objects under `imports/<source-id>/`) become events: the
    /// file format, which column is which identifier or typed trait, and the event each row becomes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import: Option<crate::import::ImportMapping>,
    /// The lawful basis (GDPR Art. 6) on which the partner or broker collected the data and shares it with us.
    /// Required for 2P and 3P sources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent_basis: Option<ConsentBasis>,
    /// The consent purposes (ids from `consent.purposes`) this source's data may be used for: delivery sends its
    /// events only to destinations whose purposes are all in this list. An empty list allows only essential
    /// destinations (those declaring no purposes). Required for 2P and 3P sources; unset, nothing is restricted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permitted_purposes: Option<Vec<String>>,
}

fn default_class() -> DataPartyClass {
    DataPartyClass::FirstParty
}
fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DataPartyClass {
    #[serde(rename = "0P")]
    ZeroParty,
    #[serde(rename = "1P")]
    FirstParty,
    #[serde(rename = "2P")]
    SecondParty,
    #[serde(rename = "3P")]
    ThirdParty,
}

impl DataPartyClass {
    /// 2P and 3P: data collected by someone else, which must come with a consent basis and permitted purposes.
    pub fn is_external(self) -> bool {
        matches!(self, DataPartyClass::SecondParty | DataPartyClass::ThirdParty)
    }

    /// The name used in config: `0P`, `1P`, `2P` or `3P`.
    pub fn as_str(self) -> &'static str {
        match self {
            DataPartyClass::ZeroParty => "0P",
            DataPartyClass::FirstParty => "1P",
            DataPartyClass::SecondParty => "2P",
            DataPartyClass::ThirdParty => "3P",
        }
    }
}

/// The lawful basis for processing (GDPR Art. 6(1)) on which a partner or broker collected the data and shares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConsentBasis {
    /// (a) The person consented to the processing for the stated purposes.
    Consent,
    /// (b) Needed to perform a contract with the person (or steps they asked for before one).
    Contract,
    /// (c) Needed to comply with a legal obligation.
    LegalObligation,
    /// (d) Needed to protect someone's vital interests.
    VitalInterests,
    /// (e) Needed for a task in the public interest or in the exercise of official authority.
    PublicTask,
    /// (f) Needed for legitimate interests not overridden by the person's interests, rights and freedoms.
    LegitimateInterests,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained requests per second (> 0).
    pub requests_per_second: f64,
    /// Requests that may arrive at once above the sustained rate (≥ 1).
    #[serde(default = "default_burst")]
    pub burst: u32,
}

fn default_burst() -> u32 {
    100
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ManagementKey {
    /// Name shown in the audit log.
    pub id: String,
    pub key_sha256: Sha256Hex,
    pub scopes: Vec<Scope>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    #[serde(rename = "profiles:read")]
    ProfilesRead,
    Dsr,
    Admin,
}

/// A source identifier, checked when the file is read.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SourceId(String);

string_schema!(SourceId, "SourceId", r"^[a-z0-9][a-z0-9_-]{0,63}$");

impl SourceId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The rule of source and audience ids: 1-64 of `a-z`, `0-9`, `-`, `_`, starting with a letter or digit.
pub(crate) fn is_valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

impl TryFrom<String> for SourceId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if is_valid_id(&s) {
            Ok(SourceId(s))
        } else {
            Err(format!("invalid source id {s:?}: use 1-64 of a-z, 0-9, '-', '_', starting with a letter or digit"))
        }
    }
}

impl From<SourceId> for String {
    fn from(s: SourceId) -> String {
        s.0
    }
}

impl std::fmt::Display for SourceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// 64 lowercase hex characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sha256Hex(String);

string_schema!(Sha256Hex, "Sha256Hex", r"^[0-9a-f]{64}$");

impl Sha256Hex {
    pub fn of(secret: &str) -> Self {
        Sha256Hex(crate::sha256_hex(secret.as_bytes()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Sha256Hex {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            Ok(Sha256Hex(s))
        } else {
            Err("expected a SHA-256 as 64 lowercase hex characters (e.g. `printf %s KEY | sha256sum`)".to_string())
        }
    }
}

impl From<Sha256Hex> for String {
    fn from(s: Sha256Hex) -> String {
        s.0
    }
}

/// A problem in a config file, with the 1-based line (and column) where it was found when known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", location.map(|(l, c)| format!("line {l}, column {c}: ")).unwrap_or_default())]
pub struct ConfigError {
    pub location: Option<(usize, usize)>,
    pub message: String,
}

/// Parses and checks a workspace file (YAML; JSON is YAML too). Every problem found after parsing is reported,
/// not only the first.
pub fn load(text: &str) -> Result<WorkspaceConfig, Vec<ConfigError>> {
    let cfg: WorkspaceConfig = serde_yaml_ng::from_str(text).map_err(|e| {
        vec![ConfigError { location: e.location().map(|l| (l.line(), l.column())), message: e.to_string() }]
    })?;
    let errors = check(&cfg, text);
    if errors.is_empty() {
        Ok(cfg)
    } else {
        Err(errors)
    }
}

/// Cross-field checks that the types alone cannot express.
fn check(cfg: &WorkspaceConfig, text: &str) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let mut err = |location: Option<(usize, usize)>, message: String| errors.push(ConfigError { location, message });
    let line = |needle: &str| find_line(text, needle);
    let mut ids = BTreeSet::new();
    let mut keys = BTreeSet::new();
    for (i, s) in cfg.sources.iter().enumerate() {
        if !ids.insert(s.id.as_str()) {
            err(line(s.id.as_str()), format!("sources[{i}].id: duplicate source id {:?}", s.id.as_str()));
        }
        if s.id.as_str() == crate::audience::AUDIENCE_SOURCE {
            err(
                line(s.id.as_str()),
                format!("sources[{i}].id: {:?} is reserved for audience events", crate::audience::AUDIENCE_SOURCE),
            );
        }
        // A source that only sends files (an import mapping) needs no write key.
        if s.write_key_sha256.is_empty() && s.import.is_none() {
            err(
                line(s.id.as_str()),
                format!("sources[{i}].write_key_sha256: a source needs at least one write key, or an import mapping"),
            );
        }
        for (k, key) in s.write_key_sha256.iter().enumerate() {
            if !keys.insert(key.as_str()) {
                err(line(key.as_str()), format!("sources[{i}].write_key_sha256[{k}]: write key used by two sources"));
            }
        }
        if let Err(m) = s.limits.check() {
            err(line(s.id.as_str()), format!("sources[{i}].limits: {m}"));
        }
        if let Some(r) = s.rate_limit {
            if !(r.requests_per_second.is_finite() && r.requests_per_second > 0.0) || r.burst == 0 {
                err(
                    line(s.id.as_str()),
                    format!("sources[{i}].rate_limit: requests_per_second must be > 0 and burst ≥ 1"),
                );
            }
        }
        // Governance settings are found from the source's own line on, so another source's plan with the same
        // event name is not picked; the source line itself is the fallback.
        let in_source = |needle: &str| {
            let from = find_line(text, s.id.as_str()).map_or(0, |(line, _)| line - 1);
            let rest = text.lines().skip(from).collect::<Vec<_>>().join("\n");
            find_line(&rest, needle).map(|(line, col)| (line + from, col)).or_else(|| line(s.id.as_str()))
        };
        if let Some(plan) = &s.tracking_plan {
            if let Err(e) = plan.compile() {
                // The event name (quoted or not in YAML), or `identify`.
                let name =
                    plan.events.keys().find(|n| e.path == format!("events.{}", serde_json::Value::from(n.as_str())));
                err(
                    in_source(name.map_or("identify:", String::as_str)),
                    format!("sources[{i}].tracking_plan.{}: invalid JSON Schema: {}", e.path, e.message),
                );
            }
        }
        if s.pii.as_ref().is_some_and(|p| p.detect.is_empty()) {
            err(in_source("detect:"), format!("sources[{i}].pii.detect: list at least one detector"));
        }
        // Someone else's data comes with the basis it was collected on and what it may be used for.
        if s.class.is_external() {
            let class = s.class.as_str();
            if s.consent_basis.is_none() {
                err(
                    line(s.id.as_str()),
                    format!(
                        "sources[{i}].consent_basis: missing; 2P and 3P sources need the lawful basis on which the \
                         data was collected and shared (this source is {class})"
                    ),
                );
            }
            if s.permitted_purposes.is_none() {
                err(
                    line(s.id.as_str()),
                    format!(
                        "sources[{i}].permitted_purposes: missing; 2P and 3P sources need the consent purposes their \
                         data may be used for ([] for essential destinations only; this source is {class})"
                    ),
                );
            }
        }
        if let Some(purposes) = &s.permitted_purposes {
            let at = in_source("permitted_purposes:");
            let mut seen = BTreeSet::new();
            for (p, purpose) in purposes.iter().enumerate() {
                if !cfg.consent.purposes.iter().any(|c| &c.id == purpose) {
                    err(
                        at,
                        format!(
                            "sources[{i}].permitted_purposes[{p}]: {purpose:?} is not a purpose in consent.purposes"
                        ),
                    );
                } else if !seen.insert(purpose.as_str()) {
                    err(at, format!("sources[{i}].permitted_purposes[{p}]: {purpose:?} is listed more than once"));
                }
            }
        }
        if let Some(mapping) = &s.import {
            if let Err(e) = mapping.check() {
                err(in_source("import:"), format!("sources[{i}].import: {}", e.0));
            }
        }
    }
    if let Err(e) = cfg.identity.compile() {
        err(line("identity:"), format!("identity: {e}"));
    }
    if let Err(m) = cfg.profiles.check() {
        err(line("profiles:"), format!("profiles: {m}"));
    }
    if let Err(m) = cfg.consent.check() {
        err(line("consent:"), format!("consent: {m}"));
    }
    let mut dids = BTreeSet::new();
    for (i, d) in cfg.destinations.iter().enumerate() {
        let at = line(&format!("id: {}", d.id)).or_else(|| line(&d.id));
        if !dids.insert(d.id.as_str()) {
            err(at, format!("destinations[{i}].id: duplicate destination id {:?}", d.id));
        }
        if let Err(e) = d.check() {
            err(at, format!("destinations[{i}]: {e}"));
        }
        // A purpose nobody can grant would silently send nothing.
        for (p, purpose) in d.purposes.iter().enumerate() {
            if !cfg.consent.purposes.iter().any(|c| &c.id == purpose) {
                err(at, format!("destinations[{i}].purposes[{p}]: {purpose:?} is not a purpose in consent.purposes"));
            }
        }
        if let Some(sources) = &d.sources {
            for (k, s) in sources.iter().enumerate() {
                if s != crate::audience::AUDIENCE_SOURCE && !cfg.sources.iter().any(|c| c.id.as_str() == s) {
                    err(at, format!("destinations[{i}].sources[{k}]: no source {s:?} in this workspace"));
                }
            }
        }
    }
    if let Err(m) = cfg.delivery.check() {
        err(line("delivery:"), format!("delivery: {m}"));
    }
    if let Err(m) = cfg.dsr.check() {
        err(line("dsr:"), format!("dsr: {m}"));
    }
    for (i, a) in cfg.audiences.iter().enumerate() {
        let at = line(&format!("id: {}", a.id));
        for (k, d) in a.destinations.iter().enumerate() {
            match cfg.destinations.iter().find(|x| &x.id == d) {
                None => err(at, format!("audiences[{i}].destinations[{k}]: no destination {d:?} in this workspace")),
                // Its filter would drop every audience event: say so rather than send nothing.
                Some(x) if x.sources.as_ref().is_some_and(|s| !s.iter().any(|s| s == crate::audience::AUDIENCE_SOURCE)) => err(
                    at,
                    format!(
                        "audiences[{i}].destinations[{k}]: destination {d:?} takes only the sources it lists; add {:?} to its sources",
                        crate::audience::AUDIENCE_SOURCE
                    ),
                ),
                Some(_) => {}
            }
        }
    }
    if let Err(errors) = crate::audience::AudienceSet::from_config(cfg) {
        // The audience's `id:` line, searched from the `audiences:` section on so a source with the same id is not
        // picked; the section line itself is the fallback.
        let section = find_line(text, "audiences:");
        let from = section.map_or(0, |(line, _)| line - 1);
        let rest = text.lines().skip(from).collect::<Vec<_>>().join("\n");
        for e in errors {
            let at = e
                .audience
                .and_then(|i| cfg.audiences.get(i))
                .and_then(|a| find_line(&rest, &format!("id: {}", a.id)))
                .map(|(line, col)| (line + from, col))
                .or(section);
            err(at, e.to_string());
        }
    }
    let mut mids = BTreeSet::new();
    for (i, m) in cfg.management_keys.iter().enumerate() {
        if !mids.insert(m.id.as_str()) {
            err(line(&m.id), format!("management_keys[{i}].id: duplicate key id {:?}", m.id));
        }
        if m.scopes.is_empty() {
            err(line(&m.id), format!("management_keys[{i}].scopes: a key needs at least one scope"));
        }
    }
    errors
}

/// Best-effort line of the first occurrence of `needle` in the file, for semantic errors.
fn find_line(text: &str, needle: &str) -> Option<(usize, usize)> {
    text.lines().enumerate().find_map(|(n, line)| line.find(needle).map(|c| (n + 1, c + 1)))
}

/// The JSON Schema of the workspace file, generated from the types above.
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(WorkspaceConfig)).unwrap_or(serde_json::Value::Null)
}

/// Whether two byte strings are equal, in time that depends only on their length (for comparing secrets' hashes).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

impl WorkspaceConfig {
    /// The management key whose SHA-256 is `presented`'s. Every configured key is compared, in constant time, so
    /// timing says nothing about which hash prefix matched.
    pub fn management_key(&self, presented: &str) -> Option<&ManagementKey> {
        let hash = crate::sha256_hex(presented.as_bytes());
        let mut found = None;
        for key in &self.management_keys {
            if constant_time_eq(hash.as_bytes(), key.key_sha256.as_str().as_bytes()) && found.is_none() {
                found = Some(key);
            }
        }
        found
    }

    /// The source a write key belongs to, comparing SHA-256 hashes.
    pub fn source_for_write_key(&self, write_key: &str) -> Option<&SourceConfig> {
        let h = crate::sha256_hex(write_key.as_bytes());
        self.sources.iter().find(|s| s.write_key_sha256.iter().any(|k| k.as_str() == h))
    }

    /// The loosest limits of all sources: what may be read before the source is known (body write key).
    pub fn widest_limits(&self) -> Limits {
        self.sources.iter().map(|s| s.limits).fold(Limits::default(), |a, b| a.widest(&b))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn management_keys_are_found_by_hash_and_compared_whole() {
        assert!(super::constant_time_eq(b"abcd", b"abcd"));
        assert!(!super::constant_time_eq(b"abcd", b"abce"));
        assert!(!super::constant_time_eq(b"abcd", b"abc"));
        let text = GOOD
            .replace("2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25c", &crate::sha256_hex(b"mk-ops"));
        let cfg = load(&text).expect("loads");
        assert_eq!(cfg.management_key("mk-ops").map(|k| k.id.as_str()), Some("ops"));
        assert!(cfg.management_key("MK-OPS").is_none());
        assert!(cfg.management_key("secret").is_none(), "a write key is not a management key");
        assert!(cfg.management_key("").is_none());
    }

    use super::*;

    const GOOD: &str = r#"
workspace: demo
sources:
  - id: web
    write_key_sha256:
      - 2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b
    class: 1P
    rate_limit: { requests_per_second: 50, burst: 10 }
management_keys:
  - id: ops
    key_sha256: 2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25c
    scopes: [profiles:read, dsr]
"#;

    #[test]
    fn loads_a_good_file_and_finds_sources_by_key() {
        let cfg = load(GOOD).expect("valid");
        assert_eq!(cfg.sources[0].id.as_str(), "web");
        assert_eq!(cfg.sources[0].limits, Limits::default());
        // sha256("secret")
        assert_eq!(cfg.source_for_write_key("secret").map(|s| s.id.as_str()), Some("web"));
        assert!(cfg.source_for_write_key("other").is_none());
        assert_eq!(cfg.management_keys[0].scopes, vec![Scope::ProfilesRead, Scope::Dsr]);
    }

    #[test]
    fn type_errors_carry_the_line() {
        let bad = GOOD.replace("class: 1P", "class: 4P");
        let errs = load(&bad).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].location.map(|l| l.0), Some(7), "{errs:?}");
        let bad = GOOD.replace("2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b", "nothex");
        let errs = load(&bad).unwrap_err();
        assert_eq!(errs[0].location.map(|l| l.0), Some(6), "{errs:?}");
        assert!(errs[0].to_string().starts_with("line 6"), "{}", errs[0]);
        let bad = GOOD.replace("burst: 10", "burst: 10, brust: 3");
        assert!(load(&bad).unwrap_err()[0].message.contains("brust"));
    }

    #[test]
    fn semantic_errors_are_all_reported_with_lines() {
        let bad = format!(
            "{GOOD}  - id: ops\n    key_sha256: 2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25c\n    scopes: []\n"
        );
        let errs = load(&bad).unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs.iter().all(|e| e.location.is_some()));
        assert!(errs[0].message.contains("duplicate key id"));
        assert!(errs[1].message.contains("at least one scope"));
    }

    /// GOOD with a tracking plan (and PII policy) inserted into its source.
    fn with_plan(plan: &str) -> String {
        let line = "    rate_limit: { requests_per_second: 50, burst: 10 }\n";
        GOOD.replace(line, &format!("{line}{plan}"))
    }

    const PLAN: &str = r#"    tracking_plan:
      version: "2025-01"
      unplanned: quarantine
      violations: drop_properties
      events:
        "Order Completed":
          type: object
          properties: { total: { type: number } }
        Signed Up: { type: object }
      identify: { type: object, required: [email] }
    pii:
      detect: [email, phone]
      action: hash
      allow_properties: [total, email]
"#;

    #[test]
    fn tracking_plan_and_pii_are_accepted() {
        let cfg = load(&with_plan(PLAN)).expect("valid");
        let s = &cfg.sources[0];
        let plan = s.tracking_plan.as_ref().expect("plan");
        assert_eq!(plan.version, "2025-01");
        assert_eq!(plan.events.len(), 2);
        let pii = s.pii.as_ref().expect("pii");
        assert_eq!(pii.action, crate::governance::PiiAction::Hash);
        assert!(crate::governance::policy::Governance::new(Some(plan), Some(pii)).is_ok());
    }

    #[test]
    fn invalid_plan_schema_is_refused_with_its_path_and_line() {
        let bad = with_plan(&PLAN.replace("{ total: { type: number } }", "{ total: { type: nmber } }"));
        let errs = load(&bad).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        let prefix = r#"sources[0].tracking_plan.events."Order Completed": invalid JSON Schema: "#;
        assert!(errs[0].message.starts_with(prefix), "{}", errs[0]);
        let line = bad.lines().position(|l| l.contains("\"Order Completed\":")).unwrap() + 1;
        assert_eq!(errs[0].location.map(|l| l.0), Some(line), "{errs:?}");
        assert!(errs[0].to_string().starts_with(&format!("line {line}, column ")), "{}", errs[0]);

        // An unquoted name and the identify schema are found too.
        let bad = with_plan(&PLAN.replace("Signed Up: { type: object }", "Signed Up: { type: objekt }"));
        let errs = load(&bad).unwrap_err();
        assert!(errs[0].message.starts_with(r#"sources[0].tracking_plan.events."Signed Up": "#), "{}", errs[0]);
        let line = bad.lines().position(|l| l.contains("Signed Up:")).unwrap() + 1;
        assert_eq!(errs[0].location.map(|l| l.0), Some(line));
        let bad = with_plan(&PLAN.replace("required: [email]", "required: email"));
        let errs = load(&bad).unwrap_err();
        assert!(errs[0].message.starts_with("sources[0].tracking_plan.identify: invalid JSON Schema: "), "{}", errs[0]);
        let line = bad.lines().position(|l| l.contains("identify:")).unwrap() + 1;
        assert_eq!(errs[0].location.map(|l| l.0), Some(line));
    }

    #[test]
    fn plan_errors_point_into_their_own_source() {
        // Two sources with the same event name: the second source's bad schema is reported on its own lines.
        let second = r#"  - id: app
    write_key_sha256:
      - 2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25d
    tracking_plan:
      version: "1"
      events:
        "Order Completed": { type: nmber }
"#;
        let text = with_plan(PLAN).replace("management_keys:", &format!("{second}management_keys:"));
        let errs = load(&text).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].message.starts_with(r#"sources[1].tracking_plan.events."Order Completed""#));
        let line = text.lines().position(|l| l.contains(r#""Order Completed": { type: nmber }"#)).unwrap() + 1;
        assert_eq!(errs[0].location.map(|l| l.0), Some(line));
    }

    #[test]
    fn pii_needs_a_detector() {
        let bad = with_plan(&PLAN.replace("detect: [email, phone]", "detect: []"));
        let errs = load(&bad).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].message, "sources[0].pii.detect: list at least one detector");
        let line = bad.lines().position(|l| l.contains("detect: []")).unwrap() + 1;
        assert_eq!(errs[0].location.map(|l| l.0), Some(line), "{errs:?}");
        let errs = load(&with_plan(&PLAN.replace("action: hash", "action: shred"))).unwrap_err();
        assert!(errs[0].message.contains("shred") || errs[0].message.contains("action"), "{}", errs[0]);
    }

    /// GOOD with consent purposes and a 3P `broker` source whose settings are `extra` (indented under the source).
    fn with_broker(extra: &str) -> String {
        let broker = format!(
            "  - id: broker\n    write_key_sha256:\n      - \
             2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25e\n    class: 3P\n{extra}"
        );
        let consent = "consent:\n  purposes:\n    - { id: advertising }\n    - { id: analytics }\n";
        GOOD.replace("management_keys:", &format!("{broker}{consent}management_keys:"))
    }

    const BASIS: &str = "    consent_basis: consent\n";
    const PURPOSES: &str = "    permitted_purposes: [analytics]\n";
    const IMPORT: &str = r#"    import:
      format: csv
      columns:
        email: { identifier: email }
        email_sha256: { identifier: email_sha256 }
        income_usd: { type: number, trait: income }
      event: { type: identify }
"#;

    #[test]
    fn external_source_with_basis_purposes_and_import_is_accepted() {
        let cfg = load(&with_broker(&format!("{BASIS}{PURPOSES}{IMPORT}"))).expect("valid");
        let broker = &cfg.sources[1];
        assert_eq!(broker.class, DataPartyClass::ThirdParty);
        assert_eq!(broker.consent_basis, Some(ConsentBasis::Consent));
        assert_eq!(broker.permitted_purposes.as_deref(), Some(&["analytics".to_string()][..]));
        let mapping = broker.import.as_ref().expect("import mapping");
        assert_eq!(mapping.columns.len(), 3);
        assert!(mapping.check().is_ok());
        // 1P sources need none of it.
        assert!(cfg.sources[0].consent_basis.is_none() && cfg.sources[0].permitted_purposes.is_none());

        // Every lawful basis is spelled in snake_case; an empty list (essential destinations only) is accepted.
        for basis in
            ["consent", "contract", "legal_obligation", "vital_interests", "public_task", "legitimate_interests"]
        {
            let text = with_broker(&format!("    consent_basis: {basis}\n    permitted_purposes: []\n"));
            let cfg = load(&text).unwrap_or_else(|e| panic!("{basis}: {e:?}"));
            assert_eq!(serde_json::to_value(cfg.sources[1].consent_basis).ok(), Some(serde_json::json!(basis)));
        }
        assert!(load(&with_broker(&format!("    consent_basis: vibes\n{PURPOSES}"))).is_err());

        // The fields round-trip, and are left out of the output when unset.
        let again = load(&serde_yaml_ng::to_string(&cfg).expect("serializes")).expect("round trip");
        assert_eq!(again, cfg);
        let cfg = load(&with_broker(&format!("{BASIS}{PURPOSES}"))).expect("valid");
        let yaml = serde_yaml_ng::to_string(&cfg).expect("serializes");
        assert!(!yaml.contains("import:") && yaml.contains("permitted_purposes:"), "{yaml}");
        assert_eq!(yaml.matches("consent_basis:").count(), 1, "only the broker has one: {yaml}");
        let again = load(&serde_yaml_ng::to_string(&cfg).expect("serializes")).expect("round trip");
        assert_eq!(again, cfg);
    }

    #[test]
    fn a_source_that_only_sends_files_needs_no_write_key() {
        let keyless = |extra: &str| {
            with_broker(&format!("{BASIS}{PURPOSES}{extra}")).replace(
                "    write_key_sha256:\n      - 2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25e\n",
                "    write_key_sha256: []\n",
            )
        };
        assert!(load(&keyless(IMPORT)).is_ok());
        let errs = load(&keyless("")).unwrap_err();
        assert!(errs[0].message.contains("at least one write key, or an import mapping"), "{errs:?}");
    }

    #[test]
    fn external_source_needs_a_consent_basis() {
        let text = with_broker(PURPOSES);
        let errs = load(&text).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].message.starts_with("sources[1].consent_basis: missing; 2P and 3P sources need"),
            "{}",
            errs[0]
        );
        assert!(errs[0].message.ends_with("(this source is 3P)"), "{}", errs[0]);
        let line = text.lines().position(|l| l.contains("id: broker")).unwrap() + 1;
        assert_eq!(errs[0].location.map(|l| l.0), Some(line), "{errs:?}");
        // 2P too.
        let errs = load(&text.replace("class: 3P", "class: 2P")).unwrap_err();
        assert!(errs[0].message.starts_with("sources[1].consent_basis: missing"), "{}", errs[0]);
        assert!(errs[0].message.ends_with("(this source is 2P)"), "{}", errs[0]);
    }

    #[test]
    fn external_source_needs_permitted_purposes() {
        let errs = load(&with_broker(BASIS)).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].message.starts_with("sources[1].permitted_purposes: missing; 2P and 3P sources need"),
            "{}",
            errs[0]
        );
        // Both missing: both reported.
        let errs = load(&with_broker("")).unwrap_err();
        let fields: Vec<_> = errs.iter().map(|e| e.message.split(':').next().unwrap_or_default()).collect();
        assert_eq!(fields, ["sources[1].consent_basis", "sources[1].permitted_purposes"], "{errs:?}");
        // Not needed from 0P/1P sources, but checked when they have them.
        assert!(load(&with_broker("").replace("class: 3P", "class: 0P")).is_ok());
        assert!(load(&with_broker("").replace("class: 3P", "class: 1P")).is_ok());
        let errs =
            load(&with_broker("    permitted_purposes: [marketing]\n").replace("class: 3P", "class: 1P")).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].message.starts_with("sources[1].permitted_purposes[0]: "), "{}", errs[0]);
    }

    #[test]
    fn permitted_purposes_must_be_workspace_purposes_listed_once() {
        let text = with_broker(&format!("{BASIS}    permitted_purposes: [analytics, marketing, analytics]\n"));
        let errs = load(&text).unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert_eq!(
            errs[0].message,
            r#"sources[1].permitted_purposes[1]: "marketing" is not a purpose in consent.purposes"#
        );
        assert_eq!(errs[1].message, r#"sources[1].permitted_purposes[2]: "analytics" is listed more than once"#);
        let line = text.lines().position(|l| l.contains("permitted_purposes:")).unwrap() + 1;
        assert!(errs.iter().all(|e| e.location.map(|l| l.0) == Some(line)), "{errs:?}");
    }

    #[test]
    fn bad_import_mapping_is_refused_with_its_path() {
        // No identifier column.
        let no_id = IMPORT
            .replace("        email: { identifier: email }\n", "")
            .replace("        email_sha256: { identifier: email_sha256 }\n", "");
        let text = with_broker(&format!("{BASIS}{PURPOSES}{no_id}"));
        let errs = load(&text).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].message, "sources[1].import: at least one column must be mapped to an identifier");
        let line = text.lines().position(|l| l.contains("import:")).unwrap() + 1;
        assert_eq!(errs[0].location.map(|l| l.0), Some(line), "{errs:?}");
        // A date trait without a format; a shape error is a parse error with its line.
        let no_format = IMPORT.replace("{ type: number, trait: income }", "{ type: date, trait: income }");
        let errs = load(&with_broker(&format!("{BASIS}{PURPOSES}{no_format}"))).unwrap_err();
        assert_eq!(errs[0].message, "sources[1].import: column `income_usd`: a date trait needs a `format`");
        let unknown = IMPORT.replace("format: csv", "format: xlsx");
        let errs = load(&with_broker(&format!("{BASIS}{PURPOSES}{unknown}"))).unwrap_err();
        assert!(errs[0].location.is_some() && errs[0].message.contains("xlsx"), "{errs:?}");
    }

    #[test]
    fn committed_schema_file_is_current() {
        let committed: serde_json::Value =
            serde_json::from_str(include_str!("../../../schemas/workspace.schema.json")).expect("schema file is JSON");
        assert!(
            committed == json_schema(),
            "schemas/workspace.schema.json is stale: run `cargo run -p tributary-cli -- config schema > \
             schemas/workspace.schema.json`"
        );
    }

    #[test]
    fn schema_names_every_top_level_field() {
        let schema = json_schema();
        let props = schema["properties"].as_object().expect("object schema");
        for f in ["workspace", "sources", "management_keys"] {
            assert!(props.contains_key(f), "{f} missing from schema");
        }
    }
}
