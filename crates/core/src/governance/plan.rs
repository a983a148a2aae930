//! Tracking plans: a JSON Schema of `properties` per track event name and of `traits` for identify, with policies
//! for unplanned events and for schema violations.
//!
//! Schemas are compiled once ([`TrackingPlan::compile`]) with the `jsonschema` crate, built without its HTTP and file
//! resolvers, so a remote `$ref` is refused at compile time rather than fetched. [`CompiledPlan::check`] reports typed
//! violations that carry the JSON pointer of the offending field in the event (e.g. `/properties/total`) and never a
//! value, and decides what happens to the event:
//!
//! | situation | `allow` | `drop_properties` | `quarantine` |
//! |---|---|---|---|
//! | unplanned track event (`unplanned` policy) | pass, with the violation | drop all its properties | hold |
//! | schema violations (`violations` policy) | pass, with the violations | drop offending top-level properties | hold |
//!
//! Under `drop_properties`, the properties removed are the top-level properties that a violation points into:
//! undeclared ones when `additionalProperties` (or `unevaluatedProperties`) is false, and present ones whose value is
//! wrong (wrong type, or a nested violation inside them). A violation that removing properties cannot fix (a missing
//! required property) is still reported, and the event passes with it. Events other than track and identify, and
//! identify events when the plan has no `identify` schema, pass unchecked.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// What to do with an unplanned event or an event violating its schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Let the event through and record the violations.
    #[default]
    Allow,
    /// Remove unplanned or invalid properties, keep the rest of the event.
    DropProperties,
    /// Hold the whole event for later redrive.
    Quarantine,
}

/// A source's tracking plan as written in the workspace configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrackingPlan {
    /// Recorded with every quarantined event, so redrive can tell which plan rejected it.
    pub version: String,
    /// Track event name → JSON Schema of its `properties`.
    #[serde(default)]
    pub events: BTreeMap<String, Value>,
    /// JSON Schema of identify `traits`; `None` leaves identify unchecked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identify: Option<Value>,
    /// Policy for track events whose name is not in `events`.
    #[serde(default)]
    pub unplanned: Policy,
    /// Policy for events that violate their schema.
    #[serde(default)]
    pub violations: Policy,
}

/// A schema of the plan that could not be compiled. `path` names it (`events."Order Completed"` or `identify`);
/// `message` describes the schema problem (it quotes only the schema, never event data).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid JSON Schema at {path}: {message}")]
pub struct PlanError {
    pub path: String,
    pub message: String,
}

/// The type of a tracking-plan violation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ViolationKind {
    UnplannedEvent,
    MissingRequired,
    WrongType,
    AdditionalProperty,
    /// Any other schema keyword (enum, pattern, minimum, …).
    Other,
}

impl ViolationKind {
    /// The snake_case name, for metrics dimensions.
    pub fn as_str(self) -> &'static str {
        match self {
            ViolationKind::UnplannedEvent => "unplanned_event",
            ViolationKind::MissingRequired => "missing_required",
            ViolationKind::WrongType => "wrong_type",
            ViolationKind::AdditionalProperty => "additional_property",
            ViolationKind::Other => "other",
        }
    }
}

/// One violation: its type and the JSON pointer (RFC 6901) of the offending field in the event, e.g.
/// `/properties/total`, `/traits/address/zip`, or `/event` for an unplanned event. Never a value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    pub kind: ViolationKind,
    pub path: String,
}

/// What the ingest path must do with the event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// No violation.
    Pass,
    /// Violations recorded, event unchanged.
    PassWithViolations,
    /// Remove these top-level names from `properties` (track) or `traits` (identify), see [`remove_properties`].
    DropProperties(Vec<String>),
    /// Hold the whole event.
    Quarantine,
}

/// The result of [`CompiledPlan::check`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub violations: Vec<Violation>,
    pub action: Decision,
}

impl Verdict {
    fn pass() -> Self {
        Verdict { violations: Vec::new(), action: Decision::Pass }
    }
}

/// A tracking plan whose schemas are compiled and ready to check events.
pub struct CompiledPlan {
    version: String,
    events: BTreeMap<String, jsonschema::Validator>,
    identify: Option<jsonschema::Validator>,
    unplanned: Policy,
    violations: Policy,
}

impl std::fmt::Debug for CompiledPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledPlan")
            .field("version", &self.version)
            .field("events", &self.events.keys().collect::<Vec<_>>())
            .field("identify", &self.identify.is_some())
            .field("unplanned", &self.unplanned)
            .field("violations", &self.violations)
            .finish()
    }
}

fn compile_schema(path: impl FnOnce() -> String, schema: &Value) -> Result<jsonschema::Validator, PlanError> {
    jsonschema::options().build(schema).map_err(|e| PlanError { path: path(), message: e.to_string() })
}

impl TrackingPlan {
    /// Compiles every schema. The first invalid one (in event-name order, then `identify`) is refused with its path.
    pub fn compile(&self) -> Result<CompiledPlan, PlanError> {
        let mut events = BTreeMap::new();
        for (name, schema) in &self.events {
            let v = compile_schema(|| format!("events.{}", serde_json::Value::String(name.clone())), schema)?;
            events.insert(name.clone(), v);
        }
        let identify = match &self.identify {
            Some(schema) => Some(compile_schema(|| "identify".to_owned(), schema)?),
            None => None,
        };
        Ok(CompiledPlan {
            version: self.version.clone(),
            events,
            identify,
            unplanned: self.unplanned,
            violations: self.violations,
        })
    }
}

/// Escapes one JSON pointer reference token (RFC 6901).
fn escape_token(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// The first reference token of a JSON pointer, unescaped (`/a~1b/c` → `a/b`).
fn first_token(pointer: &str) -> Option<String> {
    let rest = pointer.strip_prefix('/')?;
    let token = rest.split('/').next().unwrap_or_default();
    Some(token.replace("~1", "/").replace("~0", "~"))
}

impl CompiledPlan {
    /// The plan version, to store next to quarantined events.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Whether the plan declares this track event name.
    pub fn is_planned(&self, event_name: &str) -> bool {
        self.events.contains_key(event_name)
    }

    /// Checks a normalized Segment event (`type`, `event`, `properties`, `traits`).
    pub fn check(&self, event: &Map<String, Value>) -> Verdict {
        let (validator, field) = match event.get("type").and_then(Value::as_str) {
            Some("track") => {
                let name = event.get("event").and_then(Value::as_str);
                match name.and_then(|n| self.events.get(n)) {
                    Some(v) => (v, "properties"),
                    None => return self.unplanned_verdict(event),
                }
            }
            Some("identify") => match &self.identify {
                Some(v) => (v, "traits"),
                None => return Verdict::pass(),
            },
            _ => return Verdict::pass(),
        };
        let empty = Value::Object(Map::new());
        let instance = match event.get(field) {
            None | Some(Value::Null) => &empty,
            Some(v) => v,
        };
        // (violation, pointer relative to the instance)
        let mut found: Vec<(ViolationKind, String)> = Vec::new();
        for error in validator.iter_errors(instance) {
            let at = error.instance_path().as_str().to_owned();
            match error.kind() {
                jsonschema::error::ValidationErrorKind::Required { property } => {
                    let name = property.as_str().map(escape_token).unwrap_or_default();
                    found.push((ViolationKind::MissingRequired, format!("{at}/{name}")));
                }
                jsonschema::error::ValidationErrorKind::Type { .. } => found.push((ViolationKind::WrongType, at)),
                jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected }
                | jsonschema::error::ValidationErrorKind::UnevaluatedProperties { unexpected } => {
                    for name in unexpected {
                        found.push((ViolationKind::AdditionalProperty, format!("{at}/{}", escape_token(name))));
                    }
                }
                _ => found.push((ViolationKind::Other, at)),
            }
        }
        if found.is_empty() {
            return Verdict::pass();
        }
        let action = match self.violations {
            Policy::Allow => Decision::PassWithViolations,
            Policy::Quarantine => Decision::Quarantine,
            Policy::DropProperties => {
                let present = instance.as_object();
                let names: BTreeSet<String> = found
                    .iter()
                    .filter_map(|(_, p)| first_token(p))
                    .filter(|name| present.is_some_and(|m| m.contains_key(name)))
                    .collect();
                if names.is_empty() {
                    Decision::PassWithViolations
                } else {
                    Decision::DropProperties(names.into_iter().collect())
                }
            }
        };
        let violations =
            found.into_iter().map(|(kind, p)| Violation { kind, path: format!("/{field}{p}") }).collect::<Vec<_>>();
        Verdict { violations, action }
    }

    fn unplanned_verdict(&self, event: &Map<String, Value>) -> Verdict {
        let violations = vec![Violation { kind: ViolationKind::UnplannedEvent, path: "/event".to_owned() }];
        let action = match self.unplanned {
            Policy::Allow => Decision::PassWithViolations,
            Policy::Quarantine => Decision::Quarantine,
            Policy::DropProperties => {
                let names: Vec<String> = event
                    .get("properties")
                    .and_then(Value::as_object)
                    .map(|m| m.keys().cloned().collect())
                    .unwrap_or_default();
                if names.is_empty() {
                    Decision::PassWithViolations
                } else {
                    Decision::DropProperties(names)
                }
            }
        };
        Verdict { violations, action }
    }
}

/// Applies [`Decision::DropProperties`]: removes `names` from `properties` of a track event or `traits` of an
/// identify event. Returns how many were removed.
pub fn remove_properties(event: &mut Map<String, Value>, names: &[String]) -> usize {
    let field = match event.get("type").and_then(Value::as_str) {
        Some("identify") => "traits",
        _ => "properties",
    };
    match event.get_mut(field).and_then(Value::as_object_mut) {
        Some(map) => names.iter().filter(|n| map.remove(n.as_str()).is_some()).count(),
        None => 0,
    }
}
