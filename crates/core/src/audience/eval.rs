//! Evaluation of a compiled audience against one profile document at a given time.
//!
//! Besides the answer, evaluation says when the answer could next change without new data (`recheck_at`), so a
//! scheduler re-evaluates only the profiles that are due. Each condition knows exactly when it first flips (a day
//! of counts entering or leaving its window, a date trait entering or leaving its range; always at a UTC
//! midnight). The tree combines those times soundly: a true `all` holds until its first child flips, a false `all`
//! stays false at least until every false child has flipped (and forever if one never does); `any` is the dual.
//! The result may be earlier than the real change, never later.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use serde_json::Value;

use super::compile::{instant, num_cmp, Bound, CmpOp, CompiledAudience, Leaf, Node, TraitTest};
use super::counters::{day_of, DAY_MS};
use super::rule::Scalar;
use crate::profile::ProfileDoc;

/// Whether a profile is in an audience, and until when that answer holds without new data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub member: bool,
    /// The earliest time (epoch ms, after `now`) at which `member` could change with no new data; `None` when only
    /// new data (events, traits, consent, identifiers) can change it.
    pub recheck_at: Option<i64>,
}

/// A condition's value now and the first day (UTC day number, after today) on which it changes, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct State {
    value: bool,
    flips: Option<i64>,
}

impl State {
    const fn fixed(value: bool) -> State {
        State { value, flips: None }
    }
}

impl CompiledAudience {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The destinations its enter/exit events go to.
    pub fn destinations(&self) -> &[String] {
        &self.destinations
    }

    /// One label per condition, in definition order, naming what it tests but no value (`trait plan equals`,
    /// `performed Order Completed ≥2 in 30d`), for previews that print counts per condition.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Whether `profile` is a member at `now_ms`, and when to look again. A merged profile is a member of nothing.
    pub fn evaluate(&self, profile: &ProfileDoc, now_ms: i64) -> Verdict {
        if profile.merged_into.is_some() {
            return Verdict { member: false, recheck_at: None };
        }
        let today = day_of(now_ms);
        let states: Vec<State> = self.leaves.iter().map(|leaf| leaf_state(leaf, profile, today)).collect();
        let State { value, flips } = combine(&self.root, &states);
        Verdict { member: value, recheck_at: flips.map(|day| day.saturating_mul(DAY_MS)) }
    }

    /// Each condition's value at `now_ms`, in definition order (the order of [`CompiledAudience::labels`]). A merged
    /// profile meets none.
    pub fn evaluate_conditions(&self, profile: &ProfileDoc, now_ms: i64) -> Vec<bool> {
        if profile.merged_into.is_some() {
            return vec![false; self.leaves.len()];
        }
        let today = day_of(now_ms);
        self.leaves.iter().map(|leaf| leaf_state(leaf, profile, today).value).collect()
    }
}

fn combine(node: &Node, states: &[State]) -> State {
    match node {
        Node::Leaf(i) => states.get(*i).copied().unwrap_or(State::fixed(false)),
        Node::Not(child) => {
            let s = combine(child, states);
            State { value: !s.value, flips: s.flips }
        }
        Node::All(children) => junction(children, states, true),
        Node::Any(children) => junction(children, states, false),
    }
}

/// `all` (`and_ == true`) or `any`. The node has its absorbing value (false for `all`, true for `any`) while any
/// child does, so it keeps it until the last such child flips; otherwise it changes when the first child does.
fn junction(children: &[Node], states: &[State], and_: bool) -> State {
    let children: Vec<State> = children.iter().map(|c| combine(c, states)).collect();
    let absorbing = !and_;
    if children.iter().any(|c| c.value == absorbing) {
        let mut latest = Some(i64::MIN);
        for c in children.iter().filter(|c| c.value == absorbing) {
            latest = match (latest, c.flips) {
                (Some(a), Some(b)) => Some(a.max(b)),
                _ => None,
            };
        }
        State { value: absorbing, flips: latest }
    } else {
        State { value: !absorbing, flips: children.iter().filter_map(|c| c.flips).min() }
    }
}

fn leaf_state(leaf: &Leaf, profile: &ProfileDoc, today: i64) -> State {
    match leaf {
        Leaf::Consent(purpose) => State::fixed(profile.consent.get(purpose).is_some_and(|c| c.granted)),
        Leaf::HasIdentifier(kind) => State::fixed(profile.counts.get(kind).is_some_and(|n| *n > 0)),
        Leaf::Event { key, min, max, days } => event_state(profile, key, *min, *max, *days, today),
        Leaf::Trait { name, classes, test } => {
            // Absent: no entry, `null`, or set by a class the condition does not see.
            let value = profile
                .traits
                .get(name)
                .filter(|t| classes.is_none_or(|c| c.contains(t.class)))
                .map(|t| &t.value)
                .filter(|v| !v.is_null());
            trait_state(test, value, today)
        }
    }
}

fn event_state(profile: &ProfileDoc, key: &str, min: u64, max: Option<u64>, days: i64, today: i64) -> State {
    let holds = |n: u128| n >= u128::from(min) && max.is_none_or(|m| n <= u128::from(m));
    let counts: Vec<(i64, u64)> = profile.counters.days(key).filter(|(_, n)| *n > 0).collect();
    let in_window = |d: i64| d <= today && d > today.saturating_sub(days);
    let mut count: u128 = counts.iter().filter(|(d, _)| in_window(*d)).map(|(_, n)| u128::from(*n)).sum();
    let value = holds(count);
    // The window on day T is T-days+1 ..= T: a counted day k enters on day k and leaves on day k+days. Between
    // those days the count is constant, so only they are candidates; walk them in order until the answer flips.
    let mut candidates = BTreeSet::new();
    for (d, _) in &counts {
        if *d > today {
            candidates.insert(*d);
        }
        if let Some(leaves) = d.checked_add(days).filter(|l| *l > today) {
            candidates.insert(leaves);
        }
    }
    let at = |d: i64| counts.binary_search_by_key(&d, |(day, _)| *day).ok().map_or(0, |i| u128::from(counts[i].1));
    for day in candidates {
        count += at(day);
        count = count.saturating_sub(day.checked_sub(days).map_or(0, at));
        if holds(count) != value {
            return State { value, flips: Some(day) };
        }
    }
    State::fixed(value)
}

fn trait_state(test: &TraitTest, value: Option<&Value>, today: i64) -> State {
    let Some(v) = value else {
        return State::fixed(matches!(test, TraitTest::Exists(false)));
    };
    match test {
        TraitTest::Exists(want) => State::fixed(*want),
        TraitTest::Equals(s) => State::fixed(s.matches(v)),
        TraitTest::NotEquals(s) => State::fixed(!s.matches(v)),
        TraitTest::In(list) => State::fixed(list.iter().any(|s| s.matches(v))),
        TraitTest::Contains(s) => State::fixed(contains(v, s)),
        TraitTest::Compare { op, bound } => State::fixed(compare(v, bound).is_some_and(|o| op.accepts(o))),
        TraitTest::WithinLastDays(n) | TraitTest::WithinNextDays(n) => {
            let Some(day) = v.as_str().and_then(instant).map(|ns| ns.div_euclid(86_400_000_000_000)) else {
                return State::fixed(false);
            };
            // Days are within years 1..=9999, so they fit an i64 with room to add a century.
            let day = day as i64;
            // The range of days `today` may be in for the condition to hold.
            let (first, last) = match test {
                TraitTest::WithinLastDays(_) => (day, day + n - 1),
                _ => (day - n + 1, day),
            };
            if today < first {
                State { value: false, flips: Some(first) }
            } else if today <= last {
                State { value: true, flips: Some(last + 1) }
            } else {
                State::fixed(false)
            }
        }
    }
}

fn contains(v: &Value, s: &Scalar) -> bool {
    match (v, s) {
        (Value::String(hay), Scalar::String(needle)) => hay.contains(needle.as_str()),
        (Value::Array(items), _) => items.iter().any(|item| s.matches(item)),
        _ => false,
    }
}

/// The value against the bound: numbers with numbers, dates or timestamps with instants; `None` otherwise.
fn compare(v: &Value, bound: &Bound) -> Option<Ordering> {
    match (v, bound) {
        (Value::Number(n), Bound::Number(b)) => num_cmp(n, b),
        (Value::String(s), Bound::Instant(b)) => Some(instant(s)?.cmp(b)),
        _ => None,
    }
}

impl CmpOp {
    fn accepts(self, o: Ordering) -> bool {
        match self {
            CmpOp::Gt => o == Ordering::Greater,
            CmpOp::Gte => o != Ordering::Less,
            CmpOp::Lt => o == Ordering::Less,
            CmpOp::Lte => o != Ordering::Greater,
        }
    }
}
