//! A source's governance as applied in the ingest path: allow-list minimization, then PII detection and its action,
//! then the tracking plan. [`Governance`] is compiled once per source (schemas compiled, allow-list indexed) and
//! [`Governance::govern`] runs on every normalized event, in place.
//!
//! Which fields are scanned for PII: `properties`, `traits`, `context.traits`, `context.page`, `context.campaign`,
//! `context.referrer` (at any depth) and `userId`. Not scanned: `anonymousId` (a random device id, and rewriting it
//! would split anonymous profiles), `messageId`, `type`, `event`, timestamps and the other `context` keys, which are
//! request or SDK metadata (`context.ip` is the client address the gateway records, not free text).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::pii::{self, PiiAction, PiiKind, PiiOutcome};
use super::plan::{self, CompiledPlan, Decision, PlanError, TrackingPlan, Violation};

/// PII detection and minimization for one source (`sources[].pii` in the workspace file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PiiPolicy {
    /// Detectors to run over free text.
    pub detect: Vec<PiiKind>,
    /// What to do with what they find.
    #[serde(default)]
    pub action: PiiAction,
    /// Data minimization: when set, only these top-level `properties` / `traits` names are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_properties: Option<Vec<String>>,
}

/// What ingest must do with one event after governance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Queue the (possibly modified) event.
    Accept,
    /// Hold the (already minimized and PII-processed) event with its violations and the plan version.
    Quarantine { plan_version: String },
    /// Drop the event (`drop_event` PII action); `reason` is a stable code.
    Drop { reason: &'static str },
}

/// The result of [`Governance::govern`] for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Governed {
    pub outcome: Outcome,
    pub violations: Vec<Violation>,
    /// Properties/traits removed (allow-list minimization plus `drop_properties`).
    pub dropped_properties: usize,
    pub pii: PiiOutcome,
}

impl Governed {
    fn accept() -> Self {
        Governed { outcome: Outcome::Accept, violations: Vec::new(), dropped_properties: 0, pii: PiiOutcome::default() }
    }
}

/// The `context` keys scanned for PII (besides `traits`, handled with the top-level traits).
const SCANNED_CONTEXT_KEYS: [&str; 3] = ["page", "campaign", "referrer"];

/// The reason code of [`Outcome::Drop`] for the `drop_event` PII action.
pub const DROP_REASON_PII: &str = "pii";

#[derive(Debug)]
struct CompiledPii {
    detect: Vec<PiiKind>,
    action: PiiAction,
    allow: Option<BTreeSet<String>>,
}

/// A source's compiled governance.
#[derive(Debug, Default)]
pub struct Governance {
    plan: Option<CompiledPlan>,
    pii: Option<CompiledPii>,
}

impl Governance {
    /// Compiles the tracking plan (an invalid schema is refused with its path) and indexes the PII policy.
    pub fn new(plan: Option<&TrackingPlan>, pii: Option<&PiiPolicy>) -> Result<Governance, PlanError> {
        let plan = plan.map(TrackingPlan::compile).transpose()?;
        let pii = pii.map(|p| {
            let mut detect = p.detect.clone();
            detect.sort();
            detect.dedup();
            CompiledPii {
                detect,
                action: p.action,
                allow: p.allow_properties.as_ref().map(|names| names.iter().cloned().collect()),
            }
        });
        Ok(Governance { plan, pii })
    }

    /// Nothing configured: [`Governance::govern`] always accepts unchanged.
    pub fn is_noop(&self) -> bool {
        self.plan.is_none() && self.pii.is_none()
    }

    /// The compiled tracking plan, if the source has one.
    pub fn plan(&self) -> Option<&CompiledPlan> {
        self.plan.as_ref()
    }

    /// The tracking plan version, if the source has a plan.
    pub fn plan_version(&self) -> Option<&str> {
        self.plan.as_ref().map(CompiledPlan::version)
    }

    /// Applies minimization, PII and the tracking plan to a normalized Segment event, in that order, in place.
    pub fn govern(&self, event: &mut Map<String, Value>) -> Governed {
        let mut out = Governed::accept();
        if let Some(p) = &self.pii {
            if let Some(allow) = &p.allow {
                out.dropped_properties += minimize(event, allow);
            }
            out.pii = scan(event, &p.detect, p.action);
            if out.pii.drop {
                out.outcome = Outcome::Drop { reason: DROP_REASON_PII };
                return out;
            }
        }
        if let Some(plan) = &self.plan {
            let verdict = plan.check(event);
            out.violations = verdict.violations;
            match verdict.action {
                Decision::Pass | Decision::PassWithViolations => {}
                Decision::DropProperties(names) => out.dropped_properties += plan::remove_properties(event, &names),
                Decision::Quarantine => out.outcome = Outcome::Quarantine { plan_version: plan.version().to_owned() },
            }
        }
        out
    }
}

fn event_type(event: &Map<String, Value>) -> Option<&str> {
    event.get("type").and_then(Value::as_str)
}

/// Keeps only allowed top-level names: `properties` of track/page/screen, `traits` (and `context.traits`) of
/// identify. Returns the number of distinct names removed, so a `context.traits` that mirrors `traits` (ingest
/// copies them for SDKs that send only one) is not counted twice.
fn minimize(event: &mut Map<String, Value>, allow: &BTreeSet<String>) -> usize {
    let mut removed = BTreeSet::new();
    let mut retain = |map: Option<&mut Value>| {
        if let Some(Value::Object(m)) = map {
            m.retain(|k, _| {
                let keep = allow.contains(k);
                if !keep {
                    removed.insert(k.clone());
                }
                keep
            });
        }
    };
    match event_type(event) {
        Some("track" | "page" | "screen") => retain(event.get_mut("properties")),
        Some("identify") => {
            retain(event.get_mut("traits"));
            retain(event.get_mut("context").and_then(|c| c.get_mut("traits")));
        }
        _ => {}
    }
    removed.len()
}

/// Runs the detectors over the scanned fields (see the module docs) and applies the action.
fn scan(event: &mut Map<String, Value>, kinds: &[PiiKind], action: PiiAction) -> PiiOutcome {
    let mut total = PiiOutcome::default();
    if kinds.is_empty() {
        return total;
    }
    // An identical `context.traits` is a copy of `traits`: process it once and copy the result, so its findings are
    // not counted twice (the rewrite is deterministic, so the copy equals a second pass).
    let mirrored = matches!(
        (event.get("traits"), event.get("context").and_then(|c| c.get("traits"))),
        (Some(t), Some(c)) if t == c
    );
    for key in ["properties", "traits", "userId"] {
        if let Some(v) = event.get_mut(key) {
            merge(&mut total, pii::apply(v, kinds, action));
        }
    }
    let traits_copy = if mirrored { event.get("traits").cloned() } else { None };
    if let Some(Value::Object(context)) = event.get_mut("context") {
        match (traits_copy, context.get_mut("traits")) {
            (Some(copy), Some(slot)) => *slot = copy,
            (_, Some(v)) => merge(&mut total, pii::apply(v, kinds, action)),
            _ => {}
        }
        for key in SCANNED_CONTEXT_KEYS {
            if let Some(v) = context.get_mut(key) {
                merge(&mut total, pii::apply(v, kinds, action));
            }
        }
    }
    total
}

fn merge(into: &mut PiiOutcome, from: PiiOutcome) {
    for (kind, n) in from.findings_by_kind {
        *into.findings_by_kind.entry(kind).or_insert(0) += n;
    }
    into.drop |= from.drop;
}
