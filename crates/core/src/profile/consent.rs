//! Consent signals and their resolution.
//!
//! [`extract`] reads the consent an event carries (Segment's `categoryPreferences`, RudderStack's
//! `consentManagement`) and maps each category or consent id onto a workspace purpose. Within one event a
//! purpose that is both granted and denied is denied: the most restrictive reading is the safe one.
//!
//! [`apply`] and [`merge`] keep, per purpose, the greatest entry under [`precedence`]: later event time first,
//! then denied over granted, then the full [`Stamp`]. That is a total order, so neither arrival order nor merge
//! order changes the result, and a tie on event time resolves to the restrictive state.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::layout::{ConsentEntry, Stamp};
use super::settings::ConsentSettings;

/// Most purposes kept per profile.
pub const MAX_PURPOSES: usize = 64;

/// Longest purpose name derived from an unmapped category or consent id.
pub const MAX_PURPOSE_NAME: usize = 64;

/// The consent signals of one normalized event: purpose → granted.
///
/// Missing or oddly shaped consent objects yield nothing; at most [`MAX_PURPOSES`] purposes are returned, the
/// configured purposes first, then unmapped names in name order (so the choice does not depend on key order).
pub fn extract(event: &Map<String, Value>, settings: &ConsentSettings) -> BTreeMap<String, bool> {
    let names = NameMap::new(settings);
    let mut out = Signals::default();
    if let Some(context) = event.get("context").and_then(Value::as_object) {
        let prefs = context.get("consent").and_then(Value::as_object).and_then(|c| c.get("categoryPreferences"));
        read_category_preferences(prefs, &names, &mut out);
        read_consent_management(context.get("consentManagement"), &names, &mut out);
    }
    if is_update_event(event, settings) {
        if let Some(props) = event.get("properties").and_then(Value::as_object) {
            read_category_preferences(props.get("categoryPreferences"), &names, &mut out);
            read_consent_management(props.get("consentManagement"), &names, &mut out);
        }
    }
    out.into_map()
}

/// Whether `event` is a consent update track event named in `settings.update_events` (case-insensitive).
pub fn is_update_event(event: &Map<String, Value>, settings: &ConsentSettings) -> bool {
    let Some(name) = event.get("event").and_then(Value::as_str) else { return false };
    let name = name.trim().to_lowercase();
    settings.update_events.iter().any(|u| u.trim().to_lowercase() == name)
}

/// The order of two consent entries for the same purpose; the greater one is kept. Later event time first, then
/// denied over granted (a tie keeps the restrictive state), then the full stamp, so the order is total.
pub fn precedence(a: &ConsentEntry, b: &ConsentEntry) -> Ordering {
    a.at.ts.cmp(&b.at.ts).then_with(|| (!a.granted).cmp(&!b.granted)).then_with(|| a.at.cmp(&b.at))
}

/// Applies signals made at `at`. Returns whether anything stored changed.
pub fn apply(consent: &mut BTreeMap<String, ConsentEntry>, signals: &BTreeMap<String, bool>, at: &Stamp) -> bool {
    let mut changed = false;
    for (purpose, &granted) in signals {
        changed |= offer(consent, purpose, ConsentEntry { granted, at: at.clone() });
    }
    changed
}

/// Merges `other` into `into` (a profile merge). Returns whether `into` changed.
pub fn merge(into: &mut BTreeMap<String, ConsentEntry>, other: &BTreeMap<String, ConsentEntry>) -> bool {
    let mut changed = false;
    for (purpose, entry) in other {
        changed |= offer(into, purpose, entry.clone());
    }
    changed
}

/// Stores `entry` for `purpose` if it wins over the stored one, or if the purpose is new and there is room.
fn offer(consent: &mut BTreeMap<String, ConsentEntry>, purpose: &str, entry: ConsentEntry) -> bool {
    let room = consent.len() < MAX_PURPOSES;
    match consent.get_mut(purpose) {
        Some(stored) if precedence(&entry, stored) == Ordering::Greater => {
            *stored = entry;
            true
        }
        Some(_) => false,
        None if room => {
            consent.insert(purpose.to_string(), entry);
            true
        }
        None => false,
    }
}

/// Category names and consent ids (trimmed, lowercased) → purpose id.
struct NameMap<'a> {
    names: BTreeMap<String, &'a str>,
}

impl<'a> NameMap<'a> {
    fn new(settings: &'a ConsentSettings) -> Self {
        let mut names = BTreeMap::new();
        for p in &settings.purposes {
            for name in std::iter::once(&p.id).chain(&p.aliases) {
                // The first purpose to claim a name keeps it (the settings check refuses duplicates anyway).
                names.entry(name.trim().to_lowercase()).or_insert(p.id.as_str());
            }
        }
        NameMap { names }
    }

    /// The purpose `raw` names: a configured one, or its own normalized name, or none if that is not a usable
    /// purpose name.
    fn resolve(&self, raw: &str) -> Option<Purpose> {
        let key = raw.trim().to_lowercase();
        if let Some(id) = self.names.get(&key) {
            return Some(Purpose { unmapped: false, name: (*id).to_string() });
        }
        let name = key.replace(' ', "_");
        let ok = !name.is_empty()
            && name.len() <= MAX_PURPOSE_NAME
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.'));
        ok.then_some(Purpose { unmapped: true, name })
    }
}

/// A resolved purpose; configured purposes sort before unmapped names, so the per-event bound drops the latter.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Purpose {
    unmapped: bool,
    name: String,
}

/// The signals of one event, bounded to the [`MAX_PURPOSES`] smallest purposes. Keeping the smallest keys is
/// exact even while streaming: a key once evicted has `MAX_PURPOSES` smaller keys that stay, so it could never
/// have been kept.
#[derive(Default)]
struct Signals {
    map: BTreeMap<Purpose, bool>,
}

impl Signals {
    fn add(&mut self, names: &NameMap<'_>, raw: &str, granted: bool) {
        let Some(purpose) = names.resolve(raw) else { return };
        if self.map.len() >= MAX_PURPOSES && !self.map.contains_key(&purpose) {
            match self.map.last_key_value() {
                Some((last, _)) if purpose < *last => {
                    self.map.pop_last();
                }
                _ => return,
            }
        }
        // Denied wins within one event.
        let slot = self.map.entry(purpose).or_insert(granted);
        *slot = *slot && granted;
    }

    fn into_map(self) -> BTreeMap<String, bool> {
        self.map.into_iter().map(|(p, g)| (p.name, g)).collect()
    }
}

/// Segment: `{ "<category>": true|false }`; non-boolean values are ignored.
fn read_category_preferences(prefs: Option<&Value>, names: &NameMap<'_>, out: &mut Signals) {
    let Some(prefs) = prefs.and_then(Value::as_object) else { return };
    for (category, value) in prefs {
        if let Some(granted) = value.as_bool() {
            out.add(names, category, granted);
        }
    }
}

/// RudderStack: `allowedConsentIds` / `deniedConsentIds`, entries as strings or `{ "consent": "<id>" }`.
/// `provider` and `resolutionStrategy` only tell destinations how to combine ids; they do not change which
/// ids are granted, so they are not read.
fn read_consent_management(mgmt: Option<&Value>, names: &NameMap<'_>, out: &mut Signals) {
    let Some(mgmt) = mgmt.and_then(Value::as_object) else { return };
    for (field, granted) in [("allowedConsentIds", true), ("deniedConsentIds", false)] {
        let Some(ids) = mgmt.get(field).and_then(Value::as_array) else { continue };
        for id in ids {
            let id = match id {
                Value::String(s) => Some(s.as_str()),
                Value::Object(o) => o.get("consent").and_then(Value::as_str),
                _ => None,
            };
            if let Some(id) = id {
                out.add(names, id, granted);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::profile::settings::ConsentPurpose;

    fn settings() -> ConsentSettings {
        ConsentSettings {
            purposes: vec![
                ConsentPurpose {
                    id: "advertising".into(),
                    aliases: vec!["Advertising".into(), "C0004".into(), "marketing".into()],
                },
                ConsentPurpose { id: "analytics".into(), aliases: vec!["Performance".into(), " C0002 ".into()] },
            ],
            ..ConsentSettings::default()
        }
    }

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    fn stamp(ts: i64, received: i64, message_id: &str) -> Stamp {
        Stamp { ts, received, source: "web".into(), message_id: message_id.into() }
    }

    fn signals(pairs: &[(&str, bool)]) -> BTreeMap<String, bool> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    fn entry(granted: bool, at: Stamp) -> ConsentEntry {
        ConsentEntry { granted, at }
    }

    fn permutations(n: usize) -> Vec<Vec<usize>> {
        fn heap(k: usize, a: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
            if k <= 1 {
                out.push(a.clone());
                return;
            }
            for i in 0..k {
                heap(k - 1, a, out);
                let j = if k.is_multiple_of(2) { i } else { 0 };
                a.swap(j, k - 1);
            }
        }
        let mut a: Vec<usize> = (0..n).collect();
        let mut out = Vec::new();
        heap(n, &mut a, &mut out);
        out
    }

    #[test]
    fn segment_category_preferences() {
        let event = obj(json!({
            "type": "track",
            "context": { "consent": { "categoryPreferences": {
                "Advertising": true, "Performance": false, "Functional": true, "weird": "yes", "n": 1
            } } }
        }));
        assert_eq!(
            extract(&event, &settings()),
            signals(&[("advertising", true), ("analytics", false), ("functional", true)])
        );
    }

    #[test]
    fn rudderstack_consent_management() {
        let event = obj(json!({
            "context": { "consentManagement": {
                "provider": "oneTrust",
                "resolutionStrategy": "and",
                "allowedConsentIds": ["C0004", { "consent": "C0002" }, "C0003", { "consent": 7 }, 12, null],
                "deniedConsentIds": [{ "consent": "C0003" }, "Strictly Necessary"]
            } }
        }));
        assert_eq!(
            extract(&event, &settings()),
            signals(&[("advertising", true), ("analytics", true), ("c0003", false), ("strictly_necessary", false)])
        );
    }

    #[test]
    fn aliases_map_case_insensitively_and_conflicts_deny() {
        let event = obj(json!({
            "context": {
                "consent": { "categoryPreferences": { " ADVERTISING ": true, "marketing": false, "c0002": true } },
            }
        }));
        assert_eq!(extract(&event, &settings()), signals(&[("advertising", false), ("analytics", true)]));
    }

    #[test]
    fn unmapped_names_are_normalized_or_dropped() {
        let long = "x".repeat(MAX_PURPOSE_NAME + 1);
        let event = obj(json!({
            "context": { "consent": { "categoryPreferences": {
                "  Social Media ": true,
                "v1.2-beta_x": false,
                "": true,
                "   ": true,
                "émail": true,
                "a/b": true,
                long: true,
            } } }
        }));
        assert_eq!(extract(&event, &settings()), signals(&[("social_media", true), ("v1.2-beta_x", false)]));
    }

    #[test]
    fn update_event_properties_are_read() {
        let s = settings();
        let props = json!({
            "categoryPreferences": { "Advertising": false },
            "consentManagement": { "allowedConsentIds": ["C0002"], "deniedConsentIds": [] }
        });
        let event = obj(json!({ "type": "track", "event": "consent updated", "properties": props }));
        assert_eq!(extract(&event, &s), signals(&[("advertising", false), ("analytics", true)]));
        // Context and properties together: denied wins on conflict.
        let event = obj(json!({
            "type": "track",
            "event": "Segment Consent Preference Updated",
            "properties": props,
            "context": { "consent": { "categoryPreferences": { "Advertising": true, "Performance": false } } }
        }));
        assert_eq!(extract(&event, &s), signals(&[("advertising", false), ("analytics", false)]));
        // Other events' properties are not consent.
        let event = obj(json!({ "type": "track", "event": "Order Completed", "properties": props }));
        assert!(extract(&event, &s).is_empty());
    }

    #[test]
    fn junk_shapes_yield_nothing_and_huge_maps_are_bounded() {
        let s = settings();
        for junk in [
            json!({ "context": [] }),
            json!({ "context": 5 }),
            json!({ "context": { "consent": [1, 2] } }),
            json!({ "context": { "consent": { "categoryPreferences": [true, false] } } }),
            json!({ "context": { "consent": { "categoryPreferences": "all" } } }),
            json!({ "context": { "consentManagement": [] } }),
            json!({ "context": { "consentManagement": { "allowedConsentIds": "C0004", "deniedConsentIds": {} } } }),
            json!({ "event": 42, "properties": { "categoryPreferences": { "a": true } } }),
            json!({ "event": "Consent Updated", "properties": [] }),
            json!({ "event": "Consent Updated", "properties": { "consentManagement": 1 } }),
        ] {
            assert!(extract(&obj(junk.clone()), &s).is_empty(), "{junk}");
        }
        let mut prefs = Map::new();
        for i in 0..10_000u32 {
            prefs.insert(format!("cat {i:05}"), Value::Bool(i.is_multiple_of(2)));
        }
        prefs.insert("zz advertising".into(), Value::Bool(true));
        prefs.insert("Advertising".into(), Value::Bool(true));
        let ids: Vec<Value> = (0..10_000).map(|i| json!(format!("id{i}"))).collect();
        let event = obj(json!({
            "context": {
                "consent": { "categoryPreferences": prefs },
                "consentManagement": { "allowedConsentIds": ids.clone(), "deniedConsentIds": ids }
            }
        }));
        let out = extract(&event, &s);
        assert_eq!(out.len(), MAX_PURPOSES);
        // Configured purposes are never crowded out by unmapped names.
        assert_eq!(out.get("advertising"), Some(&true));
        assert_eq!(out.get("cat_00000"), Some(&true));
        assert_eq!(out.get("cat_00001"), Some(&false));
    }

    #[test]
    fn latest_wins_regardless_of_arrival_order() {
        let s1 = (signals(&[("ads", true)]), stamp(1, 50, "a"));
        let s2 = (signals(&[("ads", false)]), stamp(2, 10, "b"));
        let s3 = (signals(&[("ads", true)]), stamp(3, 5, "c"));
        let all = [&s1, &s2, &s3];
        for perm in permutations(3) {
            let mut c = BTreeMap::new();
            for &i in &perm {
                apply(&mut c, &all[i].0, &all[i].1);
            }
            assert_eq!(c["ads"], entry(true, stamp(3, 5, "c")), "{perm:?}");
        }
    }

    #[test]
    fn tie_on_event_time_denies() {
        let grant = (signals(&[("ads", true)]), stamp(5, 99, "z"));
        let deny = (signals(&[("ads", false)]), stamp(5, 1, "a"));
        for order in [[&grant, &deny], [&deny, &grant]] {
            let mut c = BTreeMap::new();
            for (sig, at) in order {
                apply(&mut c, sig, at);
            }
            assert_eq!(c["ads"], entry(false, stamp(5, 1, "a")));
        }
    }

    #[test]
    fn identical_signal_changes_nothing_and_purposes_are_bounded() {
        let mut c = BTreeMap::new();
        let at = stamp(1, 1, "a");
        assert!(apply(&mut c, &signals(&[("ads", true)]), &at));
        assert!(!apply(&mut c, &signals(&[("ads", true)]), &at));
        assert!(!apply(&mut c, &signals(&[("ads", false)]), &stamp(0, 9, "old")));
        let many: BTreeMap<String, bool> = (0..100).map(|i| (format!("p{i:03}"), true)).collect();
        apply(&mut c, &many, &at);
        assert_eq!(c.len(), MAX_PURPOSES);
        // Stored purposes still update when full.
        assert!(apply(&mut c, &signals(&[("ads", false), ("new", true)]), &stamp(2, 2, "b")));
        assert_eq!(c.len(), MAX_PURPOSES);
        assert!(!c["ads"].granted);
        assert!(!c.contains_key("new"));
    }

    /// Four entries (two tied on event time with opposite states) spread over two or three profiles in every
    /// order and every split: each merge order keeps the same state.
    #[test]
    fn merge_order_never_matters() {
        let facts = [
            (signals(&[("ads", true), ("stats", true)]), stamp(10, 10, "a")),
            (signals(&[("ads", false)]), stamp(10, 20, "b")),
            (signals(&[("ads", true), ("stats", false)]), stamp(5, 30, "c")),
            (signals(&[("stats", true), ("mail", true)]), stamp(10, 5, "d")),
        ];
        let mut reference = BTreeMap::new();
        for (sig, at) in &facts {
            apply(&mut reference, sig, at);
        }
        assert_eq!(reference["ads"], entry(false, stamp(10, 20, "b")));
        assert_eq!(reference["stats"], entry(true, stamp(10, 10, "a")));
        assert_eq!(reference["mail"], entry(true, stamp(10, 5, "d")));
        let build = |idx: &[usize]| {
            let mut c = BTreeMap::new();
            for &i in idx {
                apply(&mut c, &facts[i].0, &facts[i].1);
            }
            c
        };
        for perm in permutations(facts.len()) {
            assert_eq!(build(&perm), reference, "{perm:?}");
            for cut in 0..=perm.len() {
                let (a, b) = (build(&perm[..cut]), build(&perm[cut..]));
                let mut ab = a.clone();
                merge(&mut ab, &b);
                let mut ba = b.clone();
                merge(&mut ba, &a);
                assert_eq!(ab, reference, "{perm:?} cut {cut}");
                assert_eq!(ba, reference, "{perm:?} cut {cut}");
                assert!(!merge(&mut ab, &a));
            }
            for cut2 in 1..perm.len() {
                let (a, rest) = perm.split_at(1);
                let (b, c) = rest.split_at(cut2 - 1);
                let (a, b, c) = (build(a), build(b), build(c));
                let mut left = a.clone();
                merge(&mut left, &b);
                merge(&mut left, &c);
                let mut bc = b.clone();
                merge(&mut bc, &c);
                let mut right = a.clone();
                merge(&mut right, &bc);
                let mut cba = c.clone();
                merge(&mut cba, &b);
                merge(&mut cba, &a);
                assert_eq!(left, reference);
                assert_eq!(right, reference);
                assert_eq!(cba, reference);
            }
        }
    }
}
