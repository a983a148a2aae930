//! Audience definitions as written in the workspace file (`audiences:`): an id, a name and a rule tree.
//!
//! A rule is one YAML mapping whose keys say what it is:
//!
//! ```yaml
//! audiences:
//!   - id: eu-repeat-buyers
//!     name: EU repeat buyers
//!     rule:
//!       all:
//!         - { trait: plan, in: [pro, enterprise] }
//!         - { trait: income, gt: 50000, classes: [0P, 1P] }   # ignore brokers' (2P/3P) values
//!         - { performed: Order Completed, where: { currency: EUR }, at_least: 2, in_last_days: 30 }
//!         - { not: { consent: advertising } }
//!         - any:
//!             - { has_identifier: email }
//!             - { trait: last_login, within_last_days: 7 }
//! ```
//!
//! The shape (one kind per mapping, one operator per trait condition) is checked when the file is parsed; ranges,
//! consent purposes and limits when it is compiled ([`super::AudienceSet::compile`]).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Number, Value};

use crate::config::DataPartyClass;
use crate::identity::IdType;

/// One audience: a named rule evaluated per profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AudienceConfig {
    /// Stable identifier: lowercase letters, digits, `-` and `_`, at most 64 characters.
    pub id: AudienceId,
    /// Human name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What the audience is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Who is in the audience.
    pub rule: Rule,
    /// Destinations told of every change as an `Audience Entered` / `Audience Exited` event (consent and the
    /// destination's filters apply as to any event). Empty: the audience is only computed and shown on profiles.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destinations: Vec<String>,
}

/// An audience identifier, checked when the file is read (the same rules as a source id).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AudienceId(String);

impl AudienceId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl JsonSchema for AudienceId {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "AudienceId".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "pattern": r"^[a-z0-9][a-z0-9_-]{0,63}$" })
    }
}

impl TryFrom<String> for AudienceId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if crate::config::is_valid_id(&s) {
            Ok(AudienceId(s))
        } else {
            Err(format!("invalid audience id {s:?}: use 1-64 of a-z, 0-9, '-', '_', starting with a letter or digit"))
        }
    }
}

impl From<AudienceId> for String {
    fn from(id: AudienceId) -> String {
        id.0
    }
}

impl std::fmt::Display for AudienceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A string, number or boolean from the config: an operand of a trait condition or a `where` filter value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Value", into = "Value")]
pub enum Scalar {
    String(String),
    Number(Number),
    Bool(bool),
}

impl JsonSchema for Scalar {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Scalar".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A string, number or boolean.",
            "type": ["string", "number", "boolean"]
        })
    }
}

impl TryFrom<Value> for Scalar {
    type Error = String;
    fn try_from(v: Value) -> Result<Self, String> {
        match v {
            Value::String(s) => Ok(Scalar::String(s)),
            Value::Number(n) => Ok(Scalar::Number(n)),
            Value::Bool(b) => Ok(Scalar::Bool(b)),
            _ => Err("expected a string, number or boolean".into()),
        }
    }
}

impl From<Scalar> for Value {
    fn from(s: Scalar) -> Value {
        match s {
            Scalar::String(s) => Value::String(s),
            Scalar::Number(n) => Value::Number(n),
            Scalar::Bool(b) => Value::Bool(b),
        }
    }
}

/// Who is in an audience: a tree of `all` / `any` / `not` over conditions on traits, events, consent and
/// identifiers. Each mapping is exactly one of:
///
/// - `all: [rules]`, `any: [rules]`, `not: rule`;
/// - `trait: <name>` with one operator: `equals`, `not_equals`, `in`, `contains`, `gt`, `gte`, `lt`, `lte`,
///   `exists`, `within_last_days` or `within_next_days`, and optionally `classes` (e.g. `[0P, 1P]`: values from
///   other data-party classes count as absent);
/// - `performed: <event name>` with `in_last_days` (1–365), optionally `where` (property equality filters),
///   `at_least` (default 1, or 0 when only `at_most` is given) and `at_most`;
/// - `consent: <purpose>` (the purpose is granted);
/// - `has_identifier: <type>` (the profile holds an identifier of that type: `email`, `user_id`, …).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(into = "RuleSpec")]
pub enum Rule {
    /// Every rule holds (and).
    All(Vec<Rule>),
    /// At least one rule holds (or).
    Any(Vec<Rule>),
    /// The rule does not hold.
    Not(Box<Rule>),
    Trait(TraitCondition),
    Performed(EventCondition),
    /// The profile's consent for this purpose (an id in `consent.purposes`) is granted.
    Consent(String),
    /// The profile holds at least one identifier of this type.
    HasIdentifier(IdType),
}

/// A condition on one trait's value.
#[derive(Debug, Clone, PartialEq)]
pub struct TraitCondition {
    /// The trait's name.
    pub name: String,
    pub op: TraitOp,
    /// Only values set by sources of these data-party classes are seen; others count as absent. `None`: all.
    pub classes: Option<Vec<DataPartyClass>>,
}

/// A trait condition's operator. A missing (or `null`) trait makes every operator false except `exists: false`.
#[derive(Debug, Clone, PartialEq)]
pub enum TraitOp {
    /// The value equals this one (numbers compare as numbers, strings exactly).
    Equals(Scalar),
    /// The value is present and does not equal this one.
    NotEquals(Scalar),
    /// The value equals one of these.
    In(Vec<Scalar>),
    /// A string value contains this substring, or an array value contains this element.
    Contains(Scalar),
    /// Number against number; an ISO-8601 date or timestamp against a date or timestamp value, as instants
    /// (a bare date is midnight UTC).
    Gt(Scalar),
    Gte(Scalar),
    Lt(Scalar),
    Lte(Scalar),
    /// `true`: the value is present; `false`: it is absent.
    Exists(bool),
    /// The value is a date or timestamp whose UTC day is one of the last N days (today included).
    WithinLastDays(u32),
    /// The value is a date or timestamp whose UTC day is one of the next N days (today included).
    WithinNextDays(u32),
}

impl TraitOp {
    /// The operator's name as written in the config.
    pub fn name(&self) -> &'static str {
        match self {
            TraitOp::Equals(_) => "equals",
            TraitOp::NotEquals(_) => "not_equals",
            TraitOp::In(_) => "in",
            TraitOp::Contains(_) => "contains",
            TraitOp::Gt(_) => "gt",
            TraitOp::Gte(_) => "gte",
            TraitOp::Lt(_) => "lt",
            TraitOp::Lte(_) => "lte",
            TraitOp::Exists(_) => "exists",
            TraitOp::WithinLastDays(_) => "within_last_days",
            TraitOp::WithinNextDays(_) => "within_next_days",
        }
    }
}

/// A condition on how often the profile performed a track event in a window of days.
#[derive(Debug, Clone, PartialEq)]
pub struct EventCondition {
    /// The track event's name (`event`).
    pub event: String,
    /// Only events whose top-level `properties` equal these values are counted.
    pub filter: BTreeMap<String, Scalar>,
    /// Fewest events (default 1; 0 when only `at_most` is given).
    pub at_least: Option<u32>,
    /// Most events.
    pub at_most: Option<u32>,
    /// The window: today and the days before it, N in all (1–365).
    pub in_last_days: u32,
}

impl EventCondition {
    /// `at_least` as evaluated: 1 by default, 0 when only `at_most` is given.
    pub fn min_count(&self) -> u32 {
        self.at_least.unwrap_or(if self.at_most.is_some() { 0 } else { 1 })
    }
}

/// Read through a map visitor rather than `#[serde(try_from)]`, so that a conversion error is raised inside the
/// rule's own mapping and the YAML error's path ends at the bad rule (`…all[1]`), not at the list holding it.
impl<'de> Deserialize<'de> for Rule {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Rule;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                write!(f, "a rule: a mapping with one of {KINDS}")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Rule, A::Error> {
                let spec = RuleSpec::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Rule::try_from(spec).map_err(serde::de::Error::custom)
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

/// The schema of a rule is that of the flat mapping it is written as.
impl JsonSchema for Rule {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Rule".into()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        RuleSpec::json_schema(generator)
    }
}

/// Who is in an audience. Each rule is exactly one of: `all: [rules]`, `any: [rules]`, `not: rule`; a trait
/// condition (`trait: <name>` with one operator, optionally `classes`); an event condition (`performed: <event>`
/// with `in_last_days`, optionally `where`, `at_least`, `at_most`); `consent: <purpose>`; `has_identifier: <type>`.
/// Example: `{ performed: Order Completed, where: { currency: EUR }, at_least: 2, in_last_days: 30 }`.
//
// A flat object rather than an enum, since YAML would need a tag (`!trait`) for that; [`Rule`]'s conversion checks
// the combination.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    /// Every rule in the list holds (and).
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Vec<Rule>", length(min = 1))]
    all: Option<Vec<Rule>>,
    /// At least one rule in the list holds (or).
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Vec<Rule>", length(min = 1))]
    any: Option<Vec<Rule>>,
    /// The rule does not hold.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Box<Rule>")]
    not: Option<Box<Rule>>,
    /// A trait condition on this trait, with exactly one operator.
    #[serde(default, deserialize_with = "present", rename = "trait", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    trait_name: Option<String>,
    /// Trait operator: the value equals this (numbers compare as numbers, strings exactly).
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Scalar")]
    equals: Option<Scalar>,
    /// Trait operator: the value is present and does not equal this.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Scalar")]
    not_equals: Option<Scalar>,
    /// Trait operator: the value equals one of these.
    #[serde(default, deserialize_with = "present", rename = "in", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Vec<Scalar>", length(min = 1, max = 1_000))]
    one_of: Option<Vec<Scalar>>,
    /// Trait operator: a string value contains this substring, or an array value this element.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Scalar")]
    contains: Option<Scalar>,
    /// Trait operator: greater than a number, or after an ISO-8601 date/timestamp (compared as instants).
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Scalar")]
    gt: Option<Scalar>,
    /// Trait operator: greater than or equal to a number, or at or after a date/timestamp.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Scalar")]
    gte: Option<Scalar>,
    /// Trait operator: less than a number, or before a date/timestamp.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Scalar")]
    lt: Option<Scalar>,
    /// Trait operator: less than or equal to a number, or at or before a date/timestamp.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Scalar")]
    lte: Option<Scalar>,
    /// Trait operator: `true` when the trait is present, `false` when it is absent.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "bool")]
    exists: Option<bool>,
    /// Trait operator: the trait is a date/timestamp whose UTC day is one of the last N days, today included.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u32", range(min = 1, max = 36_500))]
    within_last_days: Option<u32>,
    /// Trait operator: the trait is a date/timestamp whose UTC day is one of the next N days, today included.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u32", range(min = 1, max = 36_500))]
    within_next_days: Option<u32>,
    /// Trait conditions: only values from sources of these data-party classes are seen; others count as absent.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Vec<DataPartyClass>")]
    classes: Option<Vec<DataPartyClass>>,
    /// An event condition on this track event name, with `in_last_days`.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    performed: Option<String>,
    /// Event conditions: only events whose top-level properties equal these values are counted.
    #[serde(default, deserialize_with = "present", rename = "where", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "BTreeMap<String, Scalar>")]
    filter: Option<BTreeMap<String, Scalar>>,
    /// Event conditions: fewest events in the window (default 1, or 0 when only `at_most` is given).
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u32")]
    at_least: Option<u32>,
    /// Event conditions: most events in the window.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u32")]
    at_most: Option<u32>,
    /// Event conditions: the window, today and the days before it, N in all (1–365). Days are UTC.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u32", range(min = 1, max = 365))]
    in_last_days: Option<u32>,
    /// The profile's consent for this purpose (an id in `consent.purposes`) is granted.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    consent: Option<String>,
    /// The profile holds an identifier of this type (`email`, `phone`, `user_id`, `anonymous_id`, `ext:<name>`, …).
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "IdType")]
    has_identifier: Option<IdType>,
}

/// A key written with `null` is an error rather than absent: `equals: null` would otherwise read as "no operator".
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<Option<T>, D::Error> {
    T::deserialize(deserializer).map(Some)
}

const KINDS: &str = "all, any, not, trait, performed, consent or has_identifier";
const OPERATORS: &str =
    "equals, not_equals, in, contains, gt, gte, lt, lte, exists, within_last_days or within_next_days";

impl RuleSpec {
    /// The kind keys present, in the order they are documented.
    fn kinds(&self) -> Vec<&'static str> {
        let present = [
            ("all", self.all.is_some()),
            ("any", self.any.is_some()),
            ("not", self.not.is_some()),
            ("trait", self.trait_name.is_some()),
            ("performed", self.performed.is_some()),
            ("consent", self.consent.is_some()),
            ("has_identifier", self.has_identifier.is_some()),
        ];
        present.into_iter().filter_map(|(k, p)| p.then_some(k)).collect()
    }

    fn trait_keys(&self) -> Vec<&'static str> {
        let present = [
            ("equals", self.equals.is_some()),
            ("not_equals", self.not_equals.is_some()),
            ("in", self.one_of.is_some()),
            ("contains", self.contains.is_some()),
            ("gt", self.gt.is_some()),
            ("gte", self.gte.is_some()),
            ("lt", self.lt.is_some()),
            ("lte", self.lte.is_some()),
            ("exists", self.exists.is_some()),
            ("within_last_days", self.within_last_days.is_some()),
            ("within_next_days", self.within_next_days.is_some()),
        ];
        present.into_iter().filter_map(|(k, p)| p.then_some(k)).collect()
    }

    fn event_keys(&self) -> Vec<&'static str> {
        let present = [
            ("where", self.filter.is_some()),
            ("at_least", self.at_least.is_some()),
            ("at_most", self.at_most.is_some()),
            ("in_last_days", self.in_last_days.is_some()),
        ];
        present.into_iter().filter_map(|(k, p)| p.then_some(k)).collect()
    }
}

/// `a`, `a and b`, `a, b and c`.
fn and_list(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

impl TryFrom<RuleSpec> for Rule {
    type Error = String;
    fn try_from(mut spec: RuleSpec) -> Result<Self, String> {
        let kinds = spec.kinds();
        let kind = match kinds.as_slice() {
            [kind] => *kind,
            [] => return Err(format!("a rule needs one of {KINDS}")),
            _ => return Err(format!("a rule is one of {KINDS}, not {}", and_list(&kinds))),
        };
        let trait_keys = spec.trait_keys();
        let event_keys = spec.event_keys();
        // Keys of another kind of rule: a misplaced operator would otherwise be silently ignored.
        let mut stray: Vec<&str> = Vec::new();
        if kind != "trait" {
            stray.extend(&trait_keys);
            if spec.classes.is_some() {
                stray.push("classes");
            }
        }
        if kind != "performed" {
            stray.extend(&event_keys);
        }
        if !stray.is_empty() {
            let s = if stray.len() == 1 { "" } else { "s" };
            return Err(format!("a `{kind}` rule takes no {} key{s}", and_list(&stray)));
        }
        Ok(match kind {
            "all" => Rule::All(spec.all.take().unwrap_or_default()),
            "any" => Rule::Any(spec.any.take().unwrap_or_default()),
            "not" => match spec.not.take() {
                Some(rule) => Rule::Not(rule),
                None => return Err(format!("a rule needs one of {KINDS}")),
            },
            "trait" => {
                let op = match trait_keys.as_slice() {
                    [_] => trait_op(&mut spec).ok_or_else(|| format!("a trait condition needs one of {OPERATORS}"))?,
                    [] => return Err(format!("a trait condition needs one of {OPERATORS}")),
                    _ => {
                        return Err(format!(
                            "a trait condition takes exactly one operator, not {} (combine conditions with `all`)",
                            and_list(&trait_keys)
                        ))
                    }
                };
                Rule::Trait(TraitCondition { name: spec.trait_name.unwrap_or_default(), op, classes: spec.classes })
            }
            "performed" => {
                let Some(in_last_days) = spec.in_last_days else {
                    return Err("a performed condition needs `in_last_days` (1-365)".into());
                };
                Rule::Performed(EventCondition {
                    event: spec.performed.unwrap_or_default(),
                    filter: spec.filter.unwrap_or_default(),
                    at_least: spec.at_least,
                    at_most: spec.at_most,
                    in_last_days,
                })
            }
            "consent" => Rule::Consent(spec.consent.unwrap_or_default()),
            _ => match spec.has_identifier {
                Some(kind) => Rule::HasIdentifier(kind),
                None => return Err(format!("a rule needs one of {KINDS}")),
            },
        })
    }
}

/// The one operator present in `spec`, taken out of it.
fn trait_op(spec: &mut RuleSpec) -> Option<TraitOp> {
    let op = if let Some(v) = spec.equals.take() {
        TraitOp::Equals(v)
    } else if let Some(v) = spec.not_equals.take() {
        TraitOp::NotEquals(v)
    } else if let Some(v) = spec.one_of.take() {
        TraitOp::In(v)
    } else if let Some(v) = spec.contains.take() {
        TraitOp::Contains(v)
    } else if let Some(v) = spec.gt.take() {
        TraitOp::Gt(v)
    } else if let Some(v) = spec.gte.take() {
        TraitOp::Gte(v)
    } else if let Some(v) = spec.lt.take() {
        TraitOp::Lt(v)
    } else if let Some(v) = spec.lte.take() {
        TraitOp::Lte(v)
    } else if let Some(v) = spec.exists {
        TraitOp::Exists(v)
    } else if let Some(v) = spec.within_last_days {
        TraitOp::WithinLastDays(v)
    } else {
        TraitOp::WithinNextDays(spec.within_next_days?)
    };
    Some(op)
}

impl From<Rule> for RuleSpec {
    fn from(rule: Rule) -> Self {
        match rule {
            Rule::All(rules) => RuleSpec { all: Some(rules), ..RuleSpec::default() },
            Rule::Any(rules) => RuleSpec { any: Some(rules), ..RuleSpec::default() },
            Rule::Not(rule) => RuleSpec { not: Some(rule), ..RuleSpec::default() },
            Rule::Trait(TraitCondition { name, op, classes }) => {
                let mut spec = RuleSpec { trait_name: Some(name), classes, ..RuleSpec::default() };
                match op {
                    TraitOp::Equals(v) => spec.equals = Some(v),
                    TraitOp::NotEquals(v) => spec.not_equals = Some(v),
                    TraitOp::In(v) => spec.one_of = Some(v),
                    TraitOp::Contains(v) => spec.contains = Some(v),
                    TraitOp::Gt(v) => spec.gt = Some(v),
                    TraitOp::Gte(v) => spec.gte = Some(v),
                    TraitOp::Lt(v) => spec.lt = Some(v),
                    TraitOp::Lte(v) => spec.lte = Some(v),
                    TraitOp::Exists(v) => spec.exists = Some(v),
                    TraitOp::WithinLastDays(v) => spec.within_last_days = Some(v),
                    TraitOp::WithinNextDays(v) => spec.within_next_days = Some(v),
                }
                spec
            }
            Rule::Performed(EventCondition { event, filter, at_least, at_most, in_last_days }) => RuleSpec {
                performed: Some(event),
                filter: (!filter.is_empty()).then_some(filter),
                at_least,
                at_most,
                in_last_days: Some(in_last_days),
                ..RuleSpec::default()
            },
            Rule::Consent(purpose) => RuleSpec { consent: Some(purpose), ..RuleSpec::default() },
            Rule::HasIdentifier(kind) => RuleSpec { has_identifier: Some(kind), ..RuleSpec::default() },
        }
    }
}
