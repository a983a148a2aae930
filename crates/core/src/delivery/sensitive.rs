//! Scrubbing of sensitive properties before events reach an ad platform.
//!
//! Two things are removed, each as the whole property that holds it:
//! - properties whose *name* is in the sensitive dictionary: the workspace's own `sensitive_properties` plus, for a
//!   restricted industry, a default dictionary (a health workspace telling Meta that someone bought "insulin" is
//!   exactly what the platforms' health and finance policies forbid). Names match at any depth, ignoring case and
//!   separators, so `creditScore`, `credit_score` and `Credit Score` are one name;
//! - properties whose *value* holds a payment card number (Luhn-checked), a US SSN or an IBAN (mod-97-checked), found
//!   with the governance detectors ([`crate::governance::pii::detect`]), whatever the industry: an ad platform
//!   never needs one, and a card in a free-text field is the classic leak.
//!
//! Scanned: `properties`, `traits`, `context.traits`, `context.page`, `context.campaign` and `context.referrer`
//! (the free-text parts of an event, as in governance), at any depth. Identifiers (`userId`, `anonymousId`) and
//! request metadata are not touched; hashing handles identifiers.

use std::collections::BTreeSet;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::governance::pii::{self, PiiKind};

/// Most names in `sensitive_properties`.
pub const MAX_SENSITIVE_PROPERTIES: usize = 1_000;
/// Longest name in `sensitive_properties`, in bytes.
pub const MAX_NAME_BYTES: usize = 128;

/// The value patterns that remove a property.
const PATTERNS: [PiiKind; 3] = [PiiKind::Card, PiiKind::NationalId, PiiKind::Iban];

/// The `context` keys scanned besides `traits`.
const CONTEXT_KEYS: [&str; 4] = ["traits", "page", "campaign", "referrer"];

/// An industry whose data the ad platforms restrict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RestrictedIndustry {
    /// Health care, pharmacy, wellness: conditions, treatments, medications.
    Health,
    /// Banking, lending, insurance, investments: balances, scores, account numbers.
    Finance,
}

impl RestrictedIndustry {
    pub fn as_str(self) -> &'static str {
        match self {
            RestrictedIndustry::Health => "health",
            RestrictedIndustry::Finance => "finance",
        }
    }

    /// The property names removed by default for this industry.
    pub fn default_dictionary(self) -> &'static [&'static str] {
        match self {
            RestrictedIndustry::Health => HEALTH,
            RestrictedIndustry::Finance => FINANCE,
        }
    }
}

const HEALTH: &[&str] = &[
    "diagnosis",
    "diagnoses",
    "diagnosis_code",
    "icd_code",
    "icd10",
    "condition",
    "conditions",
    "medical_condition",
    "health_condition",
    "disease",
    "illness",
    "symptom",
    "symptoms",
    "medication",
    "medications",
    "prescription",
    "prescriptions",
    "drug",
    "dosage",
    "treatment",
    "therapy",
    "medical_procedure",
    "allergy",
    "allergies",
    "pregnancy",
    "pregnant",
    "blood_type",
    "blood_pressure",
    "bmi",
    "hiv_status",
    "mental_health",
    "disability",
    "lab_result",
    "test_result",
    "medical_record_number",
    "mrn",
    "patient_id",
    "health_insurance",
    "insurance_member_id",
    "ssn",
    "social_security_number",
];

const FINANCE: &[&str] = &[
    "account_balance",
    "balance",
    "credit_score",
    "credit_rating",
    "credit_limit",
    "income",
    "annual_income",
    "household_income",
    "salary",
    "net_worth",
    "debt",
    "debt_amount",
    "loan_amount",
    "loan_status",
    "mortgage_balance",
    "bankruptcy",
    "account_number",
    "bank_account",
    "routing_number",
    "iban",
    "card_number",
    "credit_card",
    "cvv",
    "tax_id",
    "portfolio_value",
    "ssn",
    "social_security_number",
];

/// What is scrubbed before an ad platform sees an event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SensitivePolicy {
    /// The workspace's industry when the ad platforms restrict it (`health`, `finance`): adds that industry's
    /// default dictionary of sensitive property names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restricted_industry: Option<RestrictedIndustry>,
    /// Further property names to remove, at any depth; case and `_`, `-`, `.` and spaces are ignored.
    pub sensitive_properties: Vec<String>,
}

/// A problem in a [`SensitivePolicy`]; names the index, never the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SensitiveError {
    #[error("sensitive_properties[{0}] must hold a letter or digit and be at most 128 bytes")]
    InvalidName(usize),
    #[error("sensitive_properties lists more than 1000 names")]
    TooManyNames,
}

impl SensitivePolicy {
    pub fn check(&self) -> Result<(), SensitiveError> {
        if self.sensitive_properties.len() > MAX_SENSITIVE_PROPERTIES {
            return Err(SensitiveError::TooManyNames);
        }
        match self.sensitive_properties.iter().position(|n| n.len() > MAX_NAME_BYTES || fold(n).is_empty()) {
            Some(i) => Err(SensitiveError::InvalidName(i)),
            None => Ok(()),
        }
    }

    /// The dictionary, folded once, for scrubbing many events.
    pub fn compile(&self) -> Scrubber {
        let industry = self.restricted_industry.map_or(&[][..], RestrictedIndustry::default_dictionary);
        let names = industry
            .iter()
            .copied()
            .chain(self.sensitive_properties.iter().map(String::as_str))
            .map(fold)
            .filter(|n| !n.is_empty())
            .collect();
        Scrubber { names }
    }
}

/// A compiled [`SensitivePolicy`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scrubber {
    names: BTreeSet<String>,
}

impl Scrubber {
    /// Whether a property of this name is removed.
    pub fn is_sensitive_name(&self, name: &str) -> bool {
        self.names.contains(&fold(name))
    }

    /// Removes sensitive properties from the scanned parts of `event` (see the module docs) and returns how many
    /// properties were removed.
    pub fn scrub(&self, event: &mut Map<String, Value>) -> usize {
        // Iterative walk, so nesting depth cannot exhaust the stack.
        let mut stack: Vec<&mut Value> = Vec::new();
        for (key, value) in event.iter_mut() {
            match key.as_str() {
                "properties" | "traits" => stack.push(value),
                "context" => {
                    if let Value::Object(context) = value {
                        stack.extend(
                            context.iter_mut().filter(|(k, _)| CONTEXT_KEYS.contains(&k.as_str())).map(|(_, v)| v),
                        );
                    }
                }
                _ => {}
            }
        }
        let mut removed = 0;
        while let Some(value) = stack.pop() {
            match value {
                Value::Object(map) => {
                    let before = map.len();
                    map.retain(|k, v| !(self.is_sensitive_name(k) || holds_pattern(v)));
                    removed += before - map.len();
                    stack.extend(map.values_mut());
                }
                Value::Array(items) => stack.extend(items.iter_mut()),
                _ => {}
            }
        }
        removed
    }
}

/// Removes the properties `policy` classes as sensitive from `event` and returns how many were removed. Compiles
/// the policy on every call; use [`SensitivePolicy::compile`] and [`Scrubber::scrub`] for many events.
pub fn scrub(event: &mut Map<String, Value>, policy: &SensitivePolicy) -> usize {
    policy.compile().scrub(event)
}

/// Lowercase letters and digits only: `Credit-Score`, `credit_score` and `creditScore` fold alike.
fn fold(name: &str) -> String {
    name.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect()
}

/// Whether a value holds a card, SSN or IBAN in a string or integer, directly or inside arrays. Objects are not
/// looked into here: their own keys are scrubbed one by one.
fn holds_pattern(value: &Value) -> bool {
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        let found = match v {
            Value::String(s) => !pii::detect(s, &PATTERNS).is_empty(),
            // A card number sent as a JSON number is still a card number.
            Value::Number(n) if n.is_u64() || n.is_i64() => !pii::detect(&n.to_string(), &PATTERNS).is_empty(),
            Value::Array(items) => {
                stack.extend(items.iter());
                false
            }
            _ => false,
        };
        if found {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    fn health() -> SensitivePolicy {
        SensitivePolicy { restricted_industry: Some(RestrictedIndustry::Health), sensitive_properties: vec![] }
    }

    #[test]
    fn removes_a_luhn_valid_card_and_keeps_a_luhn_invalid_number() {
        let mut event = obj(json!({
            "type": "track",
            "properties": {
                "note": "pay with 4111 1111 1111 1111 please",
                "card_as_number": 4111111111111111u64,
                "order_ref": "4111 1111 1111 1112",
                "order_number": 4111111111111112u64,
                "total": 12.5
            }
        }));
        assert_eq!(scrub(&mut event, &SensitivePolicy::default()), 2);
        assert_eq!(
            event["properties"],
            json!({ "order_ref": "4111 1111 1111 1112", "order_number": 4111111111111112u64, "total": 12.5 })
        );
    }

    #[test]
    fn removes_ssns_and_ibans_anywhere_in_the_scanned_parts() {
        let mut event = obj(json!({
            "type": "identify",
            "userId": "123-45-6789",
            "traits": {
                "tax": "SSN 123-45-6789",
                "date": "2024-01-01",
                "nested": { "iban": ["x", "GB82 WEST 1234 5698 7654 32"] }
            },
            "context": {
                "traits": { "ok": "fine" },
                "page": { "url": "https://example.com/?ssn=123-45-6789" },
                "ip": "192.0.2.1",
                "library": { "name": "4111111111111111" }
            }
        }));
        assert_eq!(scrub(&mut event, &SensitivePolicy::default()), 3);
        assert_eq!(
            Value::Object(event),
            json!({
                "type": "identify",
                "userId": "123-45-6789",
                "traits": { "date": "2024-01-01", "nested": {} },
                "context": {
                    "traits": { "ok": "fine" },
                    "page": {},
                    "ip": "192.0.2.1",
                    "library": { "name": "4111111111111111" }
                }
            })
        );
    }

    #[test]
    fn removes_dictionary_names_in_any_case_and_at_any_depth() {
        let mut event = obj(json!({
            "type": "track",
            "event": "Appointment Booked",
            "properties": {
                "Diagnosis": "flu",
                "MEDICATION": "x",
                "medicalCondition": "y",
                "visit": { "condition": "z", "clinic": "north", "items": [{ "Prescription": "p", "sku": "1" }] },
                "clinic": "north"
            },
            "traits": { "pregnant": true },
            "context": { "traits": { "Blood-Type": "0+", "name": "Ada" } }
        }));
        assert_eq!(scrub(&mut event, &health()), 7);
        assert_eq!(
            Value::Object(event),
            json!({
                "type": "track",
                "event": "Appointment Booked",
                "properties": { "visit": { "clinic": "north", "items": [{ "sku": "1" }] }, "clinic": "north" },
                "traits": {},
                "context": { "traits": { "name": "Ada" } }
            })
        );
    }

    #[test]
    fn industry_and_custom_dictionaries() {
        let event = obj(json!({
            "properties": { "creditScore": 700, "Account Balance": 5, "diagnosis": "x", "loyalty_tier": "gold" }
        }));
        // No industry: names stay (only patterns are scrubbed).
        let mut e = event.clone();
        assert_eq!(scrub(&mut e, &SensitivePolicy::default()), 0);
        let finance = SensitivePolicy { restricted_industry: Some(RestrictedIndustry::Finance), ..Default::default() };
        let mut e = event.clone();
        assert_eq!(scrub(&mut e, &finance), 2);
        assert_eq!(e["properties"], json!({ "diagnosis": "x", "loyalty_tier": "gold" }));
        let custom = SensitivePolicy { restricted_industry: None, sensitive_properties: vec!["Loyalty-Tier".into()] };
        let mut e = event;
        assert_eq!(scrub(&mut e, &custom), 1);
        assert!(e["properties"].get("loyalty_tier").is_none());
    }

    #[test]
    fn every_default_name_is_matched() {
        for industry in [RestrictedIndustry::Health, RestrictedIndustry::Finance] {
            let policy = SensitivePolicy { restricted_industry: Some(industry), sensitive_properties: vec![] };
            let s = policy.compile();
            for name in industry.default_dictionary() {
                assert!(s.is_sensitive_name(&name.to_uppercase()), "{name}");
            }
            assert!(!s.is_sensitive_name("sku"));
        }
    }

    #[test]
    fn check_and_config_shape() {
        assert_eq!(health().check(), Ok(()));
        let bad = SensitivePolicy { restricted_industry: None, sensitive_properties: vec!["ok".into(), " _-".into()] };
        assert_eq!(bad.check(), Err(SensitiveError::InvalidName(1)));
        let many = SensitivePolicy { restricted_industry: None, sensitive_properties: vec!["a".into(); 1001] };
        assert_eq!(many.check(), Err(SensitiveError::TooManyNames));
        let parsed: Result<SensitivePolicy, _> =
            serde_yaml_ng::from_str("restricted_industry: finance\nsensitive_properties: [x]\n");
        assert!(matches!(parsed, Ok(p) if p.restricted_industry == Some(RestrictedIndustry::Finance)));
        // A misspelled industry is refused, not silently ignored.
        assert!(serde_yaml_ng::from_str::<SensitivePolicy>("restricted_industry: helth\n").is_err());
        assert!(serde_yaml_ng::from_str::<SensitivePolicy>("industry: health\n").is_err());
    }

    #[test]
    fn deep_nesting_does_not_overflow() {
        let mut v = json!("4111 1111 1111 1111");
        for _ in 0..10_000 {
            // Built by hand: `json!` would serialize `v` again, recursively.
            let mut m = Map::new();
            m.insert("a".into(), v);
            v = Value::Object(m);
        }
        let mut event = Map::new();
        event.insert("properties".into(), v);
        assert_eq!(scrub(&mut event, &SensitivePolicy::default()), 1);
        // Dropping a deeply nested value is serde_json's business; keep it from recursing in this test.
        let mut stack = vec![event.remove("properties").unwrap_or(Value::Null)];
        while let Some(mut v) = stack.pop() {
            if let Value::Object(m) = &mut v {
                stack.extend(std::mem::take(m).into_iter().map(|(_, v)| v));
            }
        }
    }
}
