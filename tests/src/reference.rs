//! The reference model of unified profiles: identity resolution by core's [`ReferenceGraph`], plus traits and
//! consent resolved per live profile by an implementation of the rules written independently of
//! `tributary_core::profile::{traits, consent}` (a store's dump is compared to it, so sharing code would hide bugs).
//!
//! Rules implemented here:
//! - an event is applied once per `(source, messageId)`: a redelivery changes nothing;
//! - traits come from identify `traits` only; per trait the greatest [`Stamp`] (`timestamp` ms, `receivedAt` ms,
//!   source, messageId) wins, a `set_once` trait keeps the smallest; bounds are not modelled;
//! - consent comes from `context.consent.categoryPreferences` (Segment) and `context.consentManagement`
//!   `allowedConsentIds`/`deniedConsentIds` (RudderStack), on any event. Names map to the configured purpose that
//!   lists them as an alias (case-insensitive) or has them as id, otherwise to themselves lowercased, trimmed, with
//!   spaces as `_`. Conflicting values for one purpose in one event mean denied. Per purpose the later `timestamp`
//!   wins; at equal timestamps denied wins; then the greater stamp;
//! - when the graph merges profiles, the survivor gets, per trait and purpose, the winner of both sides (the rules
//!   pick a maximum over a total order, so merges and arrival order do not change the result).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};
use tributary_core::config::DataPartyClass;
use tributary_core::identity::{
    extract, ExtractOptions, Identifier, IdentityRules, Outcome, ProfileId, ReferenceGraph,
};
use tributary_core::ingest::timestamp::parse_timestamp;
use tributary_core::profile::{ConsentSettings, ProfileSettings, Stamp};

/// One live profile of the reference.
#[derive(Debug, Clone, PartialEq)]
pub struct RefProfile {
    pub ids: BTreeSet<Identifier>,
    /// Trait name → winning value and the stamp of the event that set it.
    pub traits: BTreeMap<String, (Value, Stamp)>,
    /// Purpose → granted and the stamp of the deciding event.
    pub consent: BTreeMap<String, (bool, Stamp)>,
    /// Trait name → data-party class of the source that set the winning value.
    pub trait_classes: BTreeMap<String, DataPartyClass>,
}

#[derive(Debug, Clone)]
struct TraitValue {
    value: Value,
    at: Stamp,
    class: DataPartyClass,
}

#[derive(Debug, Clone, Default)]
struct State {
    traits: BTreeMap<String, TraitValue>,
    consent: BTreeMap<String, (bool, Stamp)>,
}

impl State {
    fn set_trait(&mut self, name: &str, incoming: TraitValue, set_once: bool) {
        match self.traits.get(name) {
            Some(current) if !trait_wins(&incoming.at, &current.at, set_once) => {}
            _ => {
                self.traits.insert(name.to_string(), incoming);
            }
        }
    }

    fn set_consent(&mut self, purpose: &str, granted: bool, at: &Stamp) {
        match self.consent.get(purpose) {
            Some((g, current)) if !consent_wins((granted, at), (*g, current)) => {}
            _ => {
                self.consent.insert(purpose.to_string(), (granted, at.clone()));
            }
        }
    }

    fn absorb(&mut self, other: State, set_once: &BTreeSet<String>) {
        for (name, value) in other.traits {
            let once = set_once.contains(&name);
            self.set_trait(&name, value, once);
        }
        for (purpose, (granted, at)) in other.consent {
            self.set_consent(&purpose, granted, &at);
        }
    }
}

/// Whether a trait set at `new` replaces one set at `old`.
fn trait_wins(new: &Stamp, old: &Stamp, set_once: bool) -> bool {
    if set_once {
        new < old
    } else {
        new > old
    }
}

/// Whether consent `new` replaces `old`: later event time, then denied over granted, then the greater stamp.
fn consent_wins(new: (bool, &Stamp), old: (bool, &Stamp)) -> bool {
    let key = |(granted, at): (bool, &Stamp)| (at.ts, !granted, at.clone());
    key(new) > key(old)
}

/// Identity graph, traits and consent, applied one event at a time.
#[derive(Debug, Clone)]
pub struct Reference {
    graph: ReferenceGraph,
    options: ExtractOptions,
    set_once: BTreeSet<String>,
    consent_settings: ConsentSettings,
    seen: BTreeSet<(String, String)>,
    seq: u64,
    /// Keyed by live (root) profile.
    states: BTreeMap<ProfileId, State>,
}

impl Reference {
    /// Panics when `rules` do not compile: a test's configuration is wrong.
    pub fn new(rules: &IdentityRules, settings: &ProfileSettings, consent: &ConsentSettings) -> Reference {
        let compiled = rules.compile().expect("identity rules compile");
        Reference {
            graph: ReferenceGraph::new(compiled),
            options: ExtractOptions {
                default_country_code: settings.default_country_code.clone(),
                include_hashed: true,
            },
            set_once: settings.set_once.iter().cloned().collect(),
            consent_settings: consent.clone(),
            seen: BTreeSet::new(),
            seq: 0,
            states: BTreeMap::new(),
        }
    }

    /// Applies one normalized event from `source`. `None` for a redelivery (same source and messageId), which
    /// changes nothing; otherwise what the identity graph did.
    pub fn apply(&mut self, source: &str, class: DataPartyClass, event: &Map<String, Value>) -> Option<Outcome> {
        if let Some(message_id) = event.get("messageId").and_then(Value::as_str) {
            if !self.seen.insert((source.to_string(), message_id.to_string())) {
                return None;
            }
        }
        self.seq += 1;
        let ids = extract(event, &self.options).ids;
        let outcome = self.graph.apply(self.seq, &ids);
        let Some(profile) = outcome.profile else {
            return Some(outcome);
        };
        let mut state = self.states.remove(&profile).unwrap_or_default();
        for loser in &outcome.merged {
            if let Some(other) = self.states.remove(loser) {
                state.absorb(other, &self.set_once);
            }
        }

        let at = stamp(source, event);
        if event.get("type").and_then(Value::as_str) == Some("identify") {
            if let Some(traits) = event.get("traits").and_then(Value::as_object) {
                for (name, value) in traits {
                    let incoming = TraitValue { value: value.clone(), at: at.clone(), class };
                    state.set_trait(name, incoming, self.set_once.contains(name));
                }
            }
        }
        for (purpose, granted) in consent_signals(event, &self.consent_settings) {
            state.set_consent(&purpose, granted, &at);
        }
        self.states.insert(profile, state);
        Some(outcome)
    }

    /// The identity graph (for refusals, `profile_of`, …).
    pub fn graph(&self) -> &ReferenceGraph {
        &self.graph
    }

    /// The identifier sets of the live profiles, sorted.
    pub fn partition(&self) -> Vec<BTreeSet<Identifier>> {
        self.graph.partition()
    }

    /// Every live profile, sorted by identifiers.
    pub fn profiles(&self) -> Vec<RefProfile> {
        let mut out: Vec<RefProfile> = self.states.iter().map(|(&p, state)| self.profile(p, state)).collect();
        out.sort_by(|a, b| a.ids.cmp(&b.ids));
        out
    }

    /// The live profile holding `id`.
    pub fn profile_of(&self, id: &Identifier) -> Option<RefProfile> {
        let p = self.graph.profile_of(id)?;
        self.states.get(&p).map(|state| self.profile(p, state))
    }

    fn profile(&self, p: ProfileId, state: &State) -> RefProfile {
        RefProfile {
            ids: self.graph.identifiers(p).cloned().unwrap_or_default(),
            traits: state.traits.iter().map(|(k, t)| (k.clone(), (t.value.clone(), t.at.clone()))).collect(),
            consent: state.consent.clone(),
            trait_classes: state.traits.iter().map(|(k, t)| (k.clone(), t.class)).collect(),
        }
    }
}

/// The stamp of an event from `source`: `timestamp` and `receivedAt` in epoch ms (a missing `timestamp` falls back
/// to `receivedAt`, a missing `receivedAt` to 0; normalized events have both).
pub fn stamp(source: &str, event: &Map<String, Value>) -> Stamp {
    let millis = |key: &str| {
        let t = parse_timestamp(event.get(key)?.as_str()?)?;
        Some((t.unix_timestamp_nanos() / 1_000_000) as i64)
    };
    let received = millis("receivedAt").unwrap_or(0);
    Stamp {
        ts: millis("timestamp").unwrap_or(received),
        received,
        source: source.to_string(),
        message_id: event.get("messageId").and_then(Value::as_str).unwrap_or_default().to_string(),
    }
}

/// The purpose a category name or consent id stands for; `None` for a blank name.
pub fn purpose_of(name: &str, settings: &ConsentSettings) -> Option<String> {
    let lower = name.trim().to_lowercase();
    if lower.is_empty() {
        return None;
    }
    let configured = settings
        .purposes
        .iter()
        .find(|p| p.id == lower || p.aliases.iter().any(|alias| alias.trim().to_lowercase() == lower));
    Some(match configured {
        Some(purpose) => purpose.id.clone(),
        None => lower.replace(' ', "_"),
    })
}

/// The consent signals of an event (only the two shapes the generator emits): purpose → granted.
pub fn consent_signals(event: &Map<String, Value>, settings: &ConsentSettings) -> BTreeMap<String, bool> {
    let mut signals: BTreeMap<String, bool> = BTreeMap::new();
    let mut put = |name: &str, granted: bool| {
        if let Some(purpose) = purpose_of(name, settings) {
            // Both values for one purpose in one event: denied.
            signals.entry(purpose).and_modify(|g| *g &= granted).or_insert(granted);
        }
    };
    let Some(context) = event.get("context").and_then(Value::as_object) else {
        return signals;
    };
    let preferences = context.get("consent").and_then(|c| c.get("categoryPreferences")).and_then(Value::as_object);
    for (name, value) in preferences.into_iter().flatten() {
        if let Some(granted) = value.as_bool() {
            put(name, granted);
        }
    }
    if let Some(management) = context.get("consentManagement").and_then(Value::as_object) {
        for (key, granted) in [("allowedConsentIds", true), ("deniedConsentIds", false)] {
            for id in management.get(key).and_then(Value::as_array).into_iter().flatten() {
                if let Some(name) = id.as_str() {
                    put(name, granted);
                }
            }
        }
    }
    signals
}
