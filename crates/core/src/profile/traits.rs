//! Trait resolution.
//!
//! Per trait, the value with the greatest [`Stamp`] wins (event time, then ingest time, then source and message
//! id); a `set_once` trait keeps the value with the smallest stamp. Because the winner is the max (or min) over a
//! total order, applying identifies in any order, and merging profiles in any order, gives the same traits.
//!
//! An equal stamp means the same fact (the same delivery of the same message), so it never replaces what is
//! stored: re-applying an identify changes nothing. `null` is kept as a value with its stamp, not as a removal,
//! so that an older value arriving after the `null` cannot resurrect itself.

use std::collections::BTreeMap;
use std::io;

use serde_json::{Map, Value};

use super::layout::{Stamp, TraitEntry};
use super::settings::ProfileSettings;
use crate::config::DataPartyClass;

/// Longest trait name kept, in bytes.
pub const MAX_TRAIT_NAME_BYTES: usize = 256;

/// What applying one identify's traits did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Some stored trait changed (value or stamp).
    pub changed: bool,
    /// Trait updates refused by a bound (count, name length, value size).
    pub overflow: u64,
}

/// Whether a fact stamped `new` replaces one stamped `stored`: strictly later for ordinary traits, strictly
/// earlier for `set_once` ones. Strictness makes re-applying the same fact a no-op.
pub fn wins(new: &Stamp, stored: &Stamp, set_once: bool) -> bool {
    if set_once {
        new < stored
    } else {
        new > stored
    }
}

/// Whether `name` is a trait name a profile may hold (non-empty and at most [`MAX_TRAIT_NAME_BYTES`]).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_TRAIT_NAME_BYTES
}

/// Whether `value` serializes to at most `max_bytes` bytes of JSON. Counts without allocating and stops as
/// soon as the bound is passed, so a huge value costs no more than the bound.
pub fn value_fits(value: &Value, max_bytes: usize) -> bool {
    let mut counter = Counter { written: 0, max: max_bytes };
    serde_json::to_writer(&mut counter, value).is_ok()
}

/// An `io::Write` sink that only counts bytes and fails once past `max`.
struct Counter {
    written: usize,
    max: usize,
}

impl io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written = self.written.saturating_add(buf.len());
        if self.written > self.max {
            return Err(io::Error::other("trait value too large"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Whether the settings make `name` a `set_once` trait.
fn set_once_in(settings: &ProfileSettings, name: &str) -> bool {
    settings.set_once.iter().any(|n| n == name)
}

/// Whether another trait name may be added to `traits` under `settings.max_traits`.
fn has_room(traits: &BTreeMap<String, TraitEntry>, settings: &ProfileSettings) -> bool {
    traits.len() < usize::try_from(settings.max_traits).unwrap_or(usize::MAX)
}

/// Applies `incoming` (an identify's `traits`) set at `at` by a source of class `class`.
///
/// Behaves exactly like merging in a profile that holds only this identify, so applies and merges can be
/// interleaved in any order.
pub fn apply(
    traits: &mut BTreeMap<String, TraitEntry>,
    incoming: &Map<String, Value>,
    at: &Stamp,
    class: DataPartyClass,
    settings: &ProfileSettings,
) -> Applied {
    let max_bytes = usize::try_from(settings.max_trait_bytes).unwrap_or(usize::MAX);
    let mut out = Applied::default();
    for (name, value) in incoming {
        if !valid_name(name) || !value_fits(value, max_bytes) {
            out.overflow += 1;
            continue;
        }
        let set_once = set_once_in(settings, name);
        let make = |set_once| TraitEntry { value: value.clone(), at: at.clone(), class, set_once };
        offer(traits, name, at, set_once, make, settings, &mut out);
    }
    out
}

/// Merges `other`'s traits into `into` (a profile merge).
///
/// A trait is `set_once` if the settings say so or either side recorded it as such (a profile written under an
/// older setting keeps its earliest value); the kept entry carries that flag.
pub fn merge(
    into: &mut BTreeMap<String, TraitEntry>,
    other: &BTreeMap<String, TraitEntry>,
    settings: &ProfileSettings,
) -> Applied {
    let mut out = Applied::default();
    for (name, theirs) in other {
        let set_once = theirs.set_once || set_once_in(settings, name);
        let make = |set_once| TraitEntry { set_once, ..theirs.clone() };
        offer(into, name, &theirs.at, set_once, make, settings, &mut out);
    }
    out
}

/// Offers one candidate entry (stamped `at`, built by `make` only if it is kept) for `name`. The trait is
/// `set_once` if the candidate or the stored entry says so; the kept entry records that, so the flag survives
/// later merges.
fn offer(
    traits: &mut BTreeMap<String, TraitEntry>,
    name: &str,
    at: &Stamp,
    set_once: bool,
    make: impl FnOnce(bool) -> TraitEntry,
    settings: &ProfileSettings,
    out: &mut Applied,
) {
    let room = has_room(traits, settings);
    match traits.get_mut(name) {
        Some(stored) => {
            let set_once = set_once || stored.set_once;
            if wins(at, &stored.at, set_once) {
                *stored = make(set_once);
                out.changed = true;
            } else if stored.set_once != set_once {
                stored.set_once = set_once;
                out.changed = true;
            }
        }
        None if room => {
            traits.insert(name.to_string(), make(set_once));
            out.changed = true;
        }
        None => out.overflow += 1,
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};
    use serde_json::json;

    use super::*;

    type Traits = BTreeMap<String, TraitEntry>;

    fn stamp(ts: i64, received: i64, source: &str, message_id: &str) -> Stamp {
        Stamp { ts, received, source: source.to_string(), message_id: message_id.to_string() }
    }

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    fn settings() -> ProfileSettings {
        ProfileSettings { set_once: vec!["first_touch".to_string()], ..ProfileSettings::default() }
    }

    /// One identify: its traits and stamp.
    #[derive(Clone)]
    struct Identify {
        traits: Map<String, Value>,
        at: Stamp,
    }

    fn apply_all(ids: &[&Identify], s: &ProfileSettings) -> Traits {
        let mut t = Traits::new();
        for id in ids {
            apply(&mut t, &id.traits, &id.at, DataPartyClass::FirstParty, s);
        }
        t
    }

    /// Every permutation of `0..n` (Heap's algorithm), for exhaustive order tests on small lists.
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

    fn value_of<'a>(t: &'a Traits, name: &str) -> Option<&'a Value> {
        t.get(name).map(|e| &e.value)
    }

    #[test]
    fn later_event_time_wins_regardless_of_arrival() {
        let s = settings();
        let old = stamp(1_000, 5_000, "web", "m1");
        let new = stamp(2_000, 4_000, "web", "m2");
        for order in [[&old, &new], [&new, &old]] {
            let mut t = Traits::new();
            for at in order {
                let plan = if *at == new { "pro" } else { "free" };
                apply(&mut t, &obj(json!({ "plan": plan })), at, DataPartyClass::FirstParty, &s);
            }
            assert_eq!(value_of(&t, "plan"), Some(&json!("pro")));
            assert_eq!(t["plan"].at, new);
        }
    }

    #[test]
    fn ties_break_on_received_then_source_then_message_id() {
        let s = settings();
        let cases = [
            (stamp(1, 10, "web", "m"), stamp(1, 20, "web", "m")),
            (stamp(1, 10, "android", "m"), stamp(1, 10, "web", "m")),
            (stamp(1, 10, "web", "a"), stamp(1, 10, "web", "b")),
        ];
        for (lo, hi) in cases {
            for order in [[(&lo, "lo"), (&hi, "hi")], [(&hi, "hi"), (&lo, "lo")]] {
                let mut t = Traits::new();
                for (at, v) in order {
                    apply(&mut t, &obj(json!({ "x": v })), at, DataPartyClass::FirstParty, &s);
                }
                assert_eq!(value_of(&t, "x"), Some(&json!("hi")), "{lo:?} vs {hi:?}");
            }
        }
    }

    #[test]
    fn set_once_keeps_earliest() {
        let s = settings();
        let early = stamp(1_000, 1_000, "web", "m1");
        let late = stamp(2_000, 2_000, "web", "m2");
        for order in [[(&early, "ad"), (&late, "seo")], [(&late, "seo"), (&early, "ad")]] {
            let mut t = Traits::new();
            for (at, v) in order {
                apply(&mut t, &obj(json!({ "first_touch": v, "last_touch": v })), at, DataPartyClass::FirstParty, &s);
            }
            assert_eq!(value_of(&t, "first_touch"), Some(&json!("ad")));
            assert!(t["first_touch"].set_once);
            assert_eq!(t["first_touch"].at, early);
            assert_eq!(value_of(&t, "last_touch"), Some(&json!("seo")));
            assert!(!t["last_touch"].set_once);
        }
    }

    #[test]
    fn reapplying_the_same_identify_changes_nothing() {
        let s = settings();
        let at = stamp(1_000, 1_001, "web", "m1");
        let traits = obj(json!({ "plan": "pro", "first_touch": "ad", "gone": null }));
        let mut t = Traits::new();
        let first = apply(&mut t, &traits, &at, DataPartyClass::FirstParty, &s);
        assert_eq!(first, Applied { changed: true, overflow: 0 });
        let snapshot = t.clone();
        let again = apply(&mut t, &traits, &at, DataPartyClass::FirstParty, &s);
        assert_eq!(again, Applied { changed: false, overflow: 0 });
        assert_eq!(t, snapshot);
        // An older identify does not change anything either.
        let older =
            apply(&mut t, &obj(json!({ "plan": "free" })), &stamp(1, 1, "web", "m0"), DataPartyClass::FirstParty, &s);
        assert!(!older.changed);
        assert_eq!(t, snapshot);
    }

    #[test]
    fn null_is_a_stamped_value() {
        let s = settings();
        let mut t = Traits::new();
        apply(&mut t, &obj(json!({ "phone": null })), &stamp(2, 2, "web", "b"), DataPartyClass::FirstParty, &s);
        apply(&mut t, &obj(json!({ "phone": "+15550100" })), &stamp(1, 1, "web", "a"), DataPartyClass::FirstParty, &s);
        assert_eq!(value_of(&t, "phone"), Some(&Value::Null));
    }

    #[test]
    fn class_and_stamp_are_kept_with_the_value() {
        let s = settings();
        let mut t = Traits::new();
        let a = stamp(1, 1, "crm", "a");
        let b = stamp(2, 2, "vendor", "b");
        apply(&mut t, &obj(json!({ "email": "a@x.io" })), &a, DataPartyClass::ZeroParty, &s);
        assert_eq!(t["email"].class, DataPartyClass::ZeroParty);
        assert_eq!(t["email"].at, a);
        apply(&mut t, &obj(json!({ "email": "b@x.io" })), &b, DataPartyClass::ThirdParty, &s);
        assert_eq!(
            t["email"],
            TraitEntry { value: json!("b@x.io"), at: b, class: DataPartyClass::ThirdParty, set_once: false }
        );
    }

    #[test]
    fn bounds_are_counted() {
        let s = ProfileSettings { max_traits: 2, max_trait_bytes: 10, ..settings() };
        let mut t = Traits::new();
        let long_name = "n".repeat(MAX_TRAIT_NAME_BYTES + 1);
        let ok_name = "n".repeat(MAX_TRAIT_NAME_BYTES);
        let incoming = obj(json!({
            "": 1,
            long_name.clone(): 1,
            ok_name.clone(): 1,
            "big": "0123456789",          // 12 bytes serialized
            "fits": "01234567",           // 10 bytes serialized
            "third": 3,                    // over the count bound
        }));
        let out = apply(&mut t, &incoming, &stamp(1, 1, "web", "a"), DataPartyClass::FirstParty, &s);
        assert!(out.changed);
        assert_eq!(out.overflow, 4, "{t:?}");
        assert_eq!(t.len(), 2);
        assert!(t.contains_key("fits"));
        assert!(t.contains_key(&ok_name));
        assert!(!t.contains_key(&long_name));
        // A full profile still updates the names it holds.
        let out = apply(
            &mut t,
            &obj(json!({ "fits": 2, "other": 1 })),
            &stamp(2, 2, "web", "b"),
            DataPartyClass::FirstParty,
            &s,
        );
        assert_eq!(out, Applied { changed: true, overflow: 1 });
        assert_eq!(value_of(&t, "fits"), Some(&json!(2)));
    }

    #[test]
    fn apply_honours_a_stored_set_once_flag() {
        // A profile merged in under an older setting recorded the trait as set_once: applies keep treating it so,
        // exactly as a merge would.
        let s = ProfileSettings::default();
        let early = stamp(1, 1, "web", "a");
        let mut t = Traits::from([(
            "src".to_string(),
            TraitEntry { value: json!("ad"), at: early.clone(), class: DataPartyClass::FirstParty, set_once: true },
        )]);
        let out =
            apply(&mut t, &obj(json!({ "src": "seo" })), &stamp(2, 2, "web", "b"), DataPartyClass::FirstParty, &s);
        assert!(!out.changed);
        assert_eq!(value_of(&t, "src"), Some(&json!("ad")));
        let out =
            apply(&mut t, &obj(json!({ "src": "mail" })), &stamp(0, 0, "web", "c"), DataPartyClass::FirstParty, &s);
        assert!(out.changed);
        assert_eq!(value_of(&t, "src"), Some(&json!("mail")));
        assert!(t["src"].set_once);
    }

    #[test]
    fn value_size_is_bounded_without_serializing_everything() {
        assert!(value_fits(&json!("ab"), 4));
        assert!(!value_fits(&json!("abc"), 4));
        let huge = Value::Array(vec![json!("x".repeat(1_000)); 10_000]);
        assert!(!value_fits(&huge, 4_096));
    }

    #[test]
    fn apply_order_never_matters() {
        let s = settings();
        let ids = [
            Identify { traits: obj(json!({ "plan": "free", "first_touch": "ad" })), at: stamp(10, 100, "web", "a") },
            Identify { traits: obj(json!({ "plan": "pro", "city": "Oslo" })), at: stamp(20, 90, "ios", "b") },
            Identify { traits: obj(json!({ "city": null, "first_touch": "seo" })), at: stamp(20, 90, "web", "c") },
            Identify { traits: obj(json!({ "plan": "team", "first_touch": "mail" })), at: stamp(10, 100, "web", "d") },
            Identify { traits: obj(json!({ "age": 40 })), at: stamp(5, 5, "crm", "e") },
        ];
        let reference = apply_all(&ids.iter().collect::<Vec<_>>(), &s);
        assert_eq!(value_of(&reference, "plan"), Some(&json!("pro")));
        assert_eq!(value_of(&reference, "city"), Some(&Value::Null));
        assert_eq!(value_of(&reference, "first_touch"), Some(&json!("ad")));
        for perm in permutations(ids.len()) {
            let ordered: Vec<&Identify> = perm.iter().map(|&i| &ids[i]).collect();
            assert_eq!(apply_all(&ordered, &s), reference, "order {perm:?}");
            // Split the identifies across two profiles at every point and merge both ways.
            for cut in 0..=ordered.len() {
                let (left, right) = ordered.split_at(cut);
                let a = apply_all(left, &s);
                let b = apply_all(right, &s);
                let mut ab = a.clone();
                merge(&mut ab, &b, &s);
                let mut ba = b.clone();
                merge(&mut ba, &a, &s);
                assert_eq!(ab, reference, "order {perm:?} cut {cut}");
                assert_eq!(ba, reference, "order {perm:?} cut {cut}");
            }
        }
    }

    /// Random identifies (with many ties on event and ingest time) spread over three profiles: every order of
    /// applies and every bracketing of merges yields the traits of applying everything to one profile.
    #[test]
    fn merge_is_commutative_and_associative() {
        let s = settings();
        let names = ["plan", "city", "first_touch", "age", "email"];
        let mut rng = StdRng::seed_from_u64(0x7472_6962);
        for round in 0..200 {
            let n = rng.random_range(1..12);
            let mut ids: Vec<Identify> = (0..n)
                .map(|i| {
                    let mut traits = Map::new();
                    for name in names {
                        if rng.random_bool(0.5) {
                            let v = if rng.random_bool(0.1) { Value::Null } else { json!(rng.random_range(0..5)) };
                            traits.insert(name.to_string(), v);
                        }
                    }
                    let source = ["web", "ios"][rng.random_range(0..2)];
                    let at = stamp(rng.random_range(0..3), rng.random_range(0..3), source, &format!("m{i}"));
                    Identify { traits, at }
                })
                .collect();
            let reference = apply_all(&ids.iter().collect::<Vec<_>>(), &s);
            ids.shuffle(&mut rng);
            let mut parts: [Vec<&Identify>; 3] = Default::default();
            for id in &ids {
                parts[rng.random_range(0..3)].push(id);
            }
            let [a, b, c] = parts.map(|p| apply_all(&p, &s));
            let merged = |x: &Traits, y: &Traits| {
                let mut out = x.clone();
                merge(&mut out, y, &s);
                out
            };
            let left = merged(&merged(&a, &b), &c);
            let right = merged(&a, &merged(&b, &c));
            let swapped = merged(&merged(&c, &a), &b);
            let reversed = merged(&c, &merged(&b, &a));
            assert_eq!(left, reference, "round {round}");
            assert_eq!(right, reference, "round {round}");
            assert_eq!(swapped, reference, "round {round}");
            assert_eq!(reversed, reference, "round {round}");
            // Merging in what is already there changes nothing.
            let mut again = left.clone();
            assert!(!merge(&mut again, &a, &s).changed);
            assert_eq!(again, left);
        }
    }

    #[test]
    fn merge_honours_set_once_from_either_side_and_counts_overflow() {
        let s = ProfileSettings { max_traits: 2, ..ProfileSettings::default() };
        let early = stamp(1, 1, "web", "a");
        let late = stamp(2, 2, "web", "b");
        let entry = |v: Value, at: &Stamp, set_once: bool| TraitEntry {
            value: v,
            at: at.clone(),
            class: DataPartyClass::FirstParty,
            set_once,
        };
        let mut into = Traits::from([("src".to_string(), entry(json!("seo"), &late, false))]);
        let other = Traits::from([
            ("src".to_string(), entry(json!("ad"), &early, true)),
            ("b".to_string(), entry(json!(1), &early, false)),
            ("c".to_string(), entry(json!(1), &early, false)),
        ]);
        let out = merge(&mut into, &other, &s);
        assert_eq!(out, Applied { changed: true, overflow: 1 });
        assert_eq!(into["src"], entry(json!("ad"), &early, true));
        assert_eq!(into.len(), 2);
        assert!(into.contains_key("b"));

        // The stored earliest value stays but takes the flag, so later merges keep treating it as set_once.
        let mut into = Traits::from([("src".to_string(), entry(json!("ad"), &early, false))]);
        let other = Traits::from([("src".to_string(), entry(json!("seo"), &late, true))]);
        assert!(merge(&mut into, &other, &s).changed);
        assert_eq!(into["src"], entry(json!("ad"), &early, true));
        assert!(!merge(&mut into, &other, &s).changed);
    }
}
