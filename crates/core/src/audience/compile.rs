//! Checking and compiling audience definitions into the form the evaluator walks: a flat list of leaves (in
//! definition order) and a tree of indices over them, with operands parsed once (dates to instants, filters to
//! counter keys).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{Map, Number, Value};

use super::rule::{AudienceConfig, EventCondition, Rule, Scalar, TraitCondition, TraitOp};
use crate::config::{DataPartyClass, WorkspaceConfig};
use crate::identity::IdType;
use crate::ingest::timestamp::parse_timestamp;
use crate::profile::ConsentSettings;

/// Most audiences in a workspace.
pub const MAX_AUDIENCES: usize = 100;
/// Deepest rule tree: a bare condition is 1 level, `all: [condition]` 2.
pub const MAX_DEPTH: usize = 8;
/// Most conditions (leaves) in one audience's rule.
pub const MAX_CONDITIONS: usize = 64;
/// Longest event window, in days.
pub const MAX_EVENT_WINDOW_DAYS: u32 = 365;
/// Longest `within_last_days` / `within_next_days`: a century, enough for ages and anniversaries.
pub const MAX_TRAIT_WINDOW_DAYS: u32 = 36_500;
/// Most values in an `in` list.
pub const MAX_IN_VALUES: usize = 1_000;
/// Most properties in one `where` filter.
pub const MAX_FILTER_PROPERTIES: usize = 16;
/// Longest event name in a `performed` condition, in bytes.
pub const MAX_EVENT_NAME_BYTES: usize = 256;
/// Most distinct event counters over all audiences: every profile may hold one per counter, and the profile is
/// one item.
pub const MAX_COUNTERS: usize = super::counters::MAX_COUNTER_KEYS;

/// A problem in the audiences section. The message names config items (traits, events, purposes), never values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct AudienceError {
    /// Where: `audiences[2].rule.all[1].any[0]`.
    pub path: String,
    pub message: String,
    /// The index of the audience in `audiences`, when the problem is in one.
    pub audience: Option<usize>,
}

/// Every configured audience, compiled, with the index of the event counters they use.
#[derive(Debug, Clone, Default)]
pub struct AudienceSet {
    audiences: Vec<CompiledAudience>,
    /// Event name → the counters of that event (one per distinct `where` filter, or none).
    counters: HashMap<String, Vec<Counter>>,
    keep_days: i64,
}

#[derive(Debug, Clone)]
struct Counter {
    filter: Vec<(String, Scalar)>,
    key: String,
}

/// One audience, ready to evaluate.
#[derive(Debug, Clone)]
pub struct CompiledAudience {
    pub(super) id: String,
    pub(super) name: Option<String>,
    pub(super) destinations: Vec<String>,
    pub(super) root: Node,
    /// The conditions, in definition order (depth first, as written).
    pub(super) leaves: Vec<Leaf>,
    pub(super) labels: Vec<String>,
}

#[derive(Debug, Clone)]
pub(super) enum Node {
    All(Vec<Node>),
    Any(Vec<Node>),
    Not(Box<Node>),
    Leaf(usize),
}

#[derive(Debug, Clone)]
pub(super) enum Leaf {
    Trait { name: String, classes: Option<ClassSet>, test: TraitTest },
    Event { key: String, min: u64, max: Option<u64>, days: i64 },
    Consent(String),
    HasIdentifier(String),
}

/// Data-party classes as a bit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ClassSet(u8);

impl ClassSet {
    fn bit(class: DataPartyClass) -> u8 {
        match class {
            DataPartyClass::ZeroParty => 1,
            DataPartyClass::FirstParty => 2,
            DataPartyClass::SecondParty => 4,
            DataPartyClass::ThirdParty => 8,
        }
    }
    pub(super) fn contains(self, class: DataPartyClass) -> bool {
        self.0 & Self::bit(class) != 0
    }
}

#[derive(Debug, Clone)]
pub(super) enum TraitTest {
    Equals(Scalar),
    NotEquals(Scalar),
    In(Vec<Scalar>),
    Contains(Scalar),
    Compare { op: CmpOp, bound: Bound },
    Exists(bool),
    WithinLastDays(i64),
    WithinNextDays(i64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CmpOp {
    Gt,
    Gte,
    Lt,
    Lte,
}

/// A comparison operand: a number, or an instant (nanoseconds since the epoch) from a date or timestamp.
#[derive(Debug, Clone)]
pub(super) enum Bound {
    Number(Number),
    Instant(i128),
}

impl AudienceSet {
    /// Checks and compiles the workspace's audiences.
    pub fn from_config(cfg: &WorkspaceConfig) -> Result<AudienceSet, Vec<AudienceError>> {
        AudienceSet::compile(&cfg.audiences, &cfg.consent)
    }

    /// Checks and compiles `audiences`; `consent` names the purposes a `consent` condition may use. Every problem
    /// is reported, not only the first.
    pub fn compile(audiences: &[AudienceConfig], consent: &ConsentSettings) -> Result<AudienceSet, Vec<AudienceError>> {
        let mut errors = Vec::new();
        if audiences.len() > MAX_AUDIENCES {
            errors.push(AudienceError {
                path: "audiences".into(),
                message: format!("at most {MAX_AUDIENCES} audiences (found {})", audiences.len()),
                audience: None,
            });
        }
        let mut set = AudienceSet::default();
        let mut ids = BTreeSet::new();
        for (i, a) in audiences.iter().enumerate() {
            if !ids.insert(a.id.as_str()) {
                errors.push(AudienceError {
                    path: format!("audiences[{i}].id"),
                    message: format!("duplicate audience id {:?}", a.id.as_str()),
                    audience: Some(i),
                });
            }
            let mut c = Compiler { audience: i, consent, leaves: Vec::new(), labels: Vec::new(), errors: &mut errors };
            let path = format!("audiences[{i}].rule");
            let root = c.node(&a.rule, &path, 1);
            let (leaves, labels) = (c.leaves, c.labels);
            if leaves.len() > MAX_CONDITIONS {
                errors.push(AudienceError {
                    path,
                    message: format!("at most {MAX_CONDITIONS} conditions in one audience (found {})", leaves.len()),
                    audience: Some(i),
                });
            }
            set.audiences.push(CompiledAudience {
                id: a.id.as_str().to_string(),
                name: a.name.clone(),
                destinations: a.destinations.clone(),
                root,
                leaves,
                labels,
            });
        }
        for a in audiences {
            set.index_counters(a);
        }
        let distinct: usize = set.counters.values().map(Vec::len).sum();
        if distinct > MAX_COUNTERS {
            errors.push(AudienceError {
                path: "audiences".into(),
                message: format!(
                    "at most {MAX_COUNTERS} distinct event counters (`performed` name and `where` filter pairs) over \
                     all audiences (found {distinct})"
                ),
                audience: None,
            });
        }
        if errors.is_empty() {
            Ok(set)
        } else {
            Err(errors)
        }
    }

    /// Registers the event counters of one audience's `performed` conditions.
    fn index_counters(&mut self, config: &AudienceConfig) {
        let mut conditions = Vec::new();
        collect_events(&config.rule, &mut conditions);
        for cond in conditions {
            self.keep_days = self.keep_days.max(i64::from(cond.in_last_days));
            let key = counter_key(&cond.event, &cond.filter);
            let counters = self.counters.entry(cond.event.clone()).or_default();
            if !counters.iter().any(|c| c.key == key) {
                let filter = cond.filter.iter().map(|(k, v)| (k.clone(), canonical(v))).collect();
                counters.push(Counter { filter, key });
            }
        }
    }

    pub fn audiences(&self) -> &[CompiledAudience] {
        &self.audiences
    }

    pub fn get(&self, id: &str) -> Option<&CompiledAudience> {
        self.audiences.iter().find(|a| a.id == id)
    }

    /// The counter keys a (normalized) track event increments: its `event` name's, once per configured `where`
    /// filter its `properties` match. Empty for other event types and events no audience counts.
    pub fn counter_keys(&self, event: &Map<String, Value>) -> Vec<String> {
        if event.get("type").and_then(Value::as_str) != Some("track") {
            return Vec::new();
        }
        let Some(counters) = event.get("event").and_then(Value::as_str).and_then(|name| self.counters.get(name)) else {
            return Vec::new();
        };
        let properties = event.get("properties").and_then(Value::as_object);
        counters
            .iter()
            .filter(|c| {
                c.filter
                    .iter()
                    .all(|(name, want)| properties.and_then(|p| p.get(name)).is_some_and(|v| want.matches(v)))
            })
            .map(|c| c.key.clone())
            .collect()
    }

    /// Whether some configured condition uses counter `key` (for [`super::EventCounters::retain_keys`]).
    pub fn is_counted(&self, key: &str) -> bool {
        let event = key.rsplit_once('#').map_or(key, |(name, _)| name);
        [key, event].iter().any(|name| self.counters.get(*name).is_some_and(|cs| cs.iter().any(|c| c.key == key)))
    }

    /// How many distinct counter keys the audiences use: the `max_keys` a profile needs.
    pub fn counter_count(&self) -> usize {
        self.counters.values().map(Vec::len).sum()
    }

    /// The longest `in_last_days` of any condition (0 when none): how many days of counts to keep.
    pub fn keep_days(&self) -> i64 {
        self.keep_days
    }
}

fn collect_events<'a>(rule: &'a Rule, out: &mut Vec<&'a EventCondition>) {
    match rule {
        Rule::All(rules) | Rule::Any(rules) => rules.iter().for_each(|r| collect_events(r, out)),
        Rule::Not(rule) => collect_events(rule, out),
        Rule::Performed(cond) => out.push(cond),
        Rule::Trait(_) | Rule::Consent(_) | Rule::HasIdentifier(_) => {}
    }
}

/// The counter key of a `performed` condition: the event name, plus `#` and the first 8 hex digits of the SHA-256
/// of the canonical filter (sorted property names, integral numbers written as integers) when it has one.
pub fn counter_key(event: &str, filter: &BTreeMap<String, Scalar>) -> String {
    if filter.is_empty() {
        return event.to_string();
    }
    let canonical: BTreeMap<&str, Value> =
        filter.iter().map(|(k, v)| (k.as_str(), Value::from(canonical(v)))).collect();
    let text = serde_json::to_string(&canonical).unwrap_or_default();
    format!("{event}#{}", &crate::sha256_hex(text.as_bytes())[..8])
}

/// `1.0` as `1`, so a filter's key does not depend on how an integral number was written.
fn canonical(v: &Scalar) -> Scalar {
    match v {
        Scalar::Number(n) if n.as_i64().is_none() && n.as_u64().is_none() => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 => Scalar::Number(Number::from(f as i64)),
            _ => v.clone(),
        },
        _ => v.clone(),
    }
}

impl Scalar {
    /// Whether a JSON value equals this one: strings and booleans exactly, numbers as numbers.
    pub(super) fn matches(&self, v: &Value) -> bool {
        match (self, v) {
            (Scalar::String(a), Value::String(b)) => a == b,
            (Scalar::Bool(a), Value::Bool(b)) => a == b,
            (Scalar::Number(a), Value::Number(b)) => num_cmp(a, b) == Some(std::cmp::Ordering::Equal),
            _ => false,
        }
    }
}

/// Numbers compared exactly when both are integers, as floats otherwise.
pub(super) fn num_cmp(a: &Number, b: &Number) -> Option<std::cmp::Ordering> {
    let int = |n: &Number| n.as_i64().map(i128::from).or_else(|| n.as_u64().map(i128::from));
    match (int(a), int(b)) {
        (Some(x), Some(y)) => Some(x.cmp(&y)),
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

/// An ISO-8601 date or timestamp as nanoseconds since the epoch.
pub(super) fn instant(s: &str) -> Option<i128> {
    parse_timestamp(s).map(|t| t.unix_timestamp_nanos())
}

struct Compiler<'a> {
    audience: usize,
    consent: &'a ConsentSettings,
    leaves: Vec<Leaf>,
    labels: Vec<String>,
    errors: &'a mut Vec<AudienceError>,
}

impl Compiler<'_> {
    fn error(&mut self, path: &str, message: String) {
        self.errors.push(AudienceError { path: path.to_string(), message, audience: Some(self.audience) });
    }

    fn node(&mut self, rule: &Rule, path: &str, depth: usize) -> Node {
        if depth > MAX_DEPTH {
            self.error(path, format!("rules nest at most {MAX_DEPTH} levels deep"));
            // A placeholder; the set is not returned when there is an error.
            return Node::All(Vec::new());
        }
        match rule {
            Rule::All(rules) | Rule::Any(rules) => {
                let kind = if matches!(rule, Rule::All(_)) { "all" } else { "any" };
                if rules.is_empty() {
                    self.error(path, format!("`{kind}` needs at least one rule"));
                }
                let children = rules
                    .iter()
                    .enumerate()
                    .map(|(i, r)| self.node(r, &format!("{path}.{kind}[{i}]"), depth + 1))
                    .collect();
                if kind == "all" {
                    Node::All(children)
                } else {
                    Node::Any(children)
                }
            }
            Rule::Not(rule) => Node::Not(Box::new(self.node(rule, &format!("{path}.not"), depth + 1))),
            Rule::Trait(cond) => {
                let leaf = self.trait_leaf(cond, path);
                self.push(leaf, trait_label(cond))
            }
            Rule::Performed(cond) => {
                let leaf = self.event_leaf(cond, path);
                self.push(leaf, event_label(cond))
            }
            Rule::Consent(purpose) => {
                if !self.consent.purposes.iter().any(|p| &p.id == purpose) {
                    self.error(path, format!("unknown consent purpose {purpose:?} (not in consent.purposes)"));
                }
                self.push(Leaf::Consent(purpose.clone()), format!("consent {purpose}"))
            }
            Rule::HasIdentifier(kind) => {
                if matches!(kind, IdType::External(name) if name == "*") {
                    self.error(path, "has_identifier takes one identifier type, not `ext:*`".into());
                }
                let name = kind.name().into_owned();
                self.push(Leaf::HasIdentifier(name.clone()), format!("has_identifier {name}"))
            }
        }
    }

    fn push(&mut self, leaf: Leaf, label: String) -> Node {
        self.leaves.push(leaf);
        self.labels.push(label);
        Node::Leaf(self.leaves.len() - 1)
    }

    fn trait_leaf(&mut self, cond: &TraitCondition, path: &str) -> Leaf {
        if !crate::profile::traits::valid_name(&cond.name) {
            self.error(path, "a trait name is 1-256 bytes".into());
        }
        let classes = cond.classes.as_ref().map(|classes| {
            let mut bits = 0u8;
            for class in classes {
                let bit = ClassSet::bit(*class);
                if bits & bit != 0 {
                    self.error(path, format!("classes lists {} more than once", class.as_str()));
                }
                bits |= bit;
            }
            if classes.is_empty() {
                self.error(path, "classes must list at least one class (0P, 1P, 2P, 3P)".into());
            }
            ClassSet(bits)
        });
        let op = cond.op.name();
        let test = match &cond.op {
            TraitOp::Equals(v) => TraitTest::Equals(v.clone()),
            TraitOp::NotEquals(v) => TraitTest::NotEquals(v.clone()),
            TraitOp::In(values) => {
                if values.is_empty() || values.len() > MAX_IN_VALUES {
                    self.error(path, format!("`in` takes 1 to {MAX_IN_VALUES} values"));
                }
                TraitTest::In(values.clone())
            }
            TraitOp::Contains(v) => TraitTest::Contains(v.clone()),
            TraitOp::Gt(v) | TraitOp::Gte(v) | TraitOp::Lt(v) | TraitOp::Lte(v) => {
                let cmp = match &cond.op {
                    TraitOp::Gt(_) => CmpOp::Gt,
                    TraitOp::Gte(_) => CmpOp::Gte,
                    TraitOp::Lt(_) => CmpOp::Lt,
                    _ => CmpOp::Lte,
                };
                let bound = match v {
                    Scalar::Number(n) => Some(Bound::Number(n.clone())),
                    Scalar::String(s) => instant(s).map(Bound::Instant),
                    Scalar::Bool(_) => None,
                };
                match bound {
                    Some(bound) => TraitTest::Compare { op: cmp, bound },
                    None => {
                        self.error(path, format!("`{op}` takes a number or an ISO-8601 date or timestamp"));
                        TraitTest::Exists(true)
                    }
                }
            }
            TraitOp::Exists(b) => TraitTest::Exists(*b),
            TraitOp::WithinLastDays(n) | TraitOp::WithinNextDays(n) => {
                if !(1..=MAX_TRAIT_WINDOW_DAYS).contains(n) {
                    self.error(path, format!("`{op}` must be 1-{MAX_TRAIT_WINDOW_DAYS}"));
                }
                if matches!(cond.op, TraitOp::WithinLastDays(_)) {
                    TraitTest::WithinLastDays(i64::from(*n))
                } else {
                    TraitTest::WithinNextDays(i64::from(*n))
                }
            }
        };
        Leaf::Trait { name: cond.name.clone(), classes, test }
    }

    fn event_leaf(&mut self, cond: &EventCondition, path: &str) -> Leaf {
        if cond.event.is_empty() || cond.event.len() > MAX_EVENT_NAME_BYTES {
            self.error(path, format!("an event name is 1-{MAX_EVENT_NAME_BYTES} bytes"));
        }
        if !(1..=MAX_EVENT_WINDOW_DAYS).contains(&cond.in_last_days) {
            self.error(path, format!("in_last_days must be 1-{MAX_EVENT_WINDOW_DAYS}"));
        }
        if cond.filter.len() > MAX_FILTER_PROPERTIES {
            self.error(path, format!("`where` takes at most {MAX_FILTER_PROPERTIES} properties"));
        }
        if cond.filter.keys().any(String::is_empty) {
            self.error(path, "`where` property names must not be empty".into());
        }
        let min = cond.min_count();
        match cond.at_most {
            Some(max) if min > max => {
                self.error(path, format!("at_least ({min}) is greater than at_most ({max})"));
            }
            None if min == 0 => {
                self.error(path, "at_least: 0 without at_most holds for every profile".into());
            }
            _ => {}
        }
        Leaf::Event {
            key: counter_key(&cond.event, &cond.filter),
            min: u64::from(min),
            max: cond.at_most.map(u64::from),
            days: i64::from(cond.in_last_days),
        }
    }
}

fn trait_label(cond: &TraitCondition) -> String {
    let op = match &cond.op {
        TraitOp::Exists(true) => "exists".to_string(),
        TraitOp::Exists(false) => "does not exist".to_string(),
        TraitOp::WithinLastDays(n) => format!("within last {n}d"),
        TraitOp::WithinNextDays(n) => format!("within next {n}d"),
        op => op.name().to_string(),
    };
    let classes = cond.classes.as_ref().map_or(String::new(), |classes| {
        format!(" ({})", classes.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(","))
    });
    format!("trait {} {op}{classes}", cond.name)
}

fn event_label(cond: &EventCondition) -> String {
    let filter = if cond.filter.is_empty() {
        String::new()
    } else {
        format!(" where {}", cond.filter.keys().map(String::as_str).collect::<Vec<_>>().join(","))
    };
    let min = cond.min_count();
    let count = match cond.at_most {
        Some(max) if min > 0 => format!("≥{min} ≤{max}"),
        Some(max) => format!("≤{max}"),
        None => format!("≥{min}"),
    };
    format!("performed {}{filter} {count} in {}d", cond.event, cond.in_last_days)
}
