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

impl TryFrom<String> for SourceId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if ok {
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
        if s.write_key_sha256.is_empty() {
            err(line(s.id.as_str()), format!("sources[{i}].write_key_sha256: a source needs at least one write key"));
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
                if !cfg.sources.iter().any(|c| c.id.as_str() == s) {
                    err(at, format!("destinations[{i}].sources[{k}]: no source {s:?} in this workspace"));
                }
            }
        }
    }
    if let Err(m) = cfg.delivery.check() {
        err(line("delivery:"), format!("delivery: {m}"));
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

impl WorkspaceConfig {
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
