use proptest::prelude::*;
use serde_json::{json, Map, Value};

use super::*;
use crate::config::{load, DataPartyClass};
use crate::profile::{ConsentEntry, ConsentPurpose, ConsentSettings, ProfileDoc, Stamp, TraitEntry};

/// Day 20_000 (2024-10-04), at noon UTC.
const TODAY: i64 = 20_000;
const NOW: i64 = TODAY * DAY_MS + 12 * 3_600_000;

fn consent_settings() -> ConsentSettings {
    ConsentSettings {
        purposes: ["advertising", "analytics"]
            .iter()
            .map(|id| ConsentPurpose { id: (*id).to_string(), aliases: Vec::new() })
            .collect(),
        ..ConsentSettings::default()
    }
}

fn config(id: &str, rule: &str) -> AudienceConfig {
    let rule: Rule = serde_yaml_ng::from_str(rule).unwrap_or_else(|e| panic!("{rule}: {e}"));
    AudienceConfig {
        id: AudienceId::try_from(id.to_string()).expect("id"),
        name: None,
        description: None,
        rule,
        destinations: Vec::new(),
    }
}

fn set_of(rules: &[&str]) -> AudienceSet {
    let configs: Vec<_> = rules.iter().enumerate().map(|(i, r)| config(&format!("a{i}"), r)).collect();
    AudienceSet::compile(&configs, &consent_settings()).unwrap_or_else(|e| panic!("{rules:?}: {e:?}"))
}

fn audience(rule: &str) -> CompiledAudience {
    set_of(&[rule]).audiences()[0].clone()
}

/// The errors compiling `rule` gives, as `path: message`.
fn errors(rule: &str) -> Vec<String> {
    match AudienceSet::compile(&[config("a", rule)], &consent_settings()) {
        Ok(_) => Vec::new(),
        Err(errs) => errs.iter().map(ToString::to_string).collect(),
    }
}

fn stamp() -> Stamp {
    Stamp { ts: 1, received: 1, source: "web".into(), message_id: "m".into() }
}

fn with_trait(mut p: ProfileDoc, name: &str, value: Value, class: DataPartyClass) -> ProfileDoc {
    p.traits.insert(name.into(), TraitEntry { value, at: stamp(), class, set_once: false });
    p
}

fn with(name: &str, value: Value) -> ProfileDoc {
    with_trait(ProfileDoc::default(), name, value, DataPartyClass::FirstParty)
}

/// `YYYY-MM-DD` of a day number.
fn date(day: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(day * 86_400).expect("in range");
    t.date().to_string()
}

fn member(a: &CompiledAudience, p: &ProfileDoc) -> bool {
    a.evaluate(p, NOW).member
}

// ---------------------------------------------------------------------------------------------------------------
// Trait operators

#[test]
fn trait_operators_table() {
    // (rule, trait value or None for missing, expected)
    let cases: &[(&str, Option<Value>, bool)] = &[
        ("{ trait: plan, equals: pro }", Some(json!("pro")), true),
        ("{ trait: plan, equals: pro }", Some(json!("Pro")), false),
        ("{ trait: plan, equals: pro }", Some(json!(5)), false),
        ("{ trait: plan, equals: pro }", None, false),
        ("{ trait: plan, equals: pro }", Some(Value::Null), false),
        ("{ trait: n, equals: 5 }", Some(json!(5.0)), true),
        ("{ trait: n, equals: 5 }", Some(json!("5")), false),
        ("{ trait: b, equals: true }", Some(json!(true)), true),
        ("{ trait: b, equals: true }", Some(json!("true")), false),
        ("{ trait: big, equals: 9007199254740993 }", Some(json!(9_007_199_254_740_993u64)), true),
        ("{ trait: big, equals: 9007199254740993 }", Some(json!(9_007_199_254_740_992u64)), false),
        ("{ trait: plan, not_equals: free }", Some(json!("pro")), true),
        ("{ trait: plan, not_equals: free }", Some(json!("free")), false),
        ("{ trait: plan, not_equals: free }", Some(json!(3)), true),
        ("{ trait: plan, not_equals: free }", None, false),
        ("{ trait: plan, in: [pro, enterprise] }", Some(json!("enterprise")), true),
        ("{ trait: plan, in: [pro, enterprise] }", Some(json!("free")), false),
        ("{ trait: plan, in: [pro, 3] }", Some(json!(3)), true),
        ("{ trait: plan, in: [pro, enterprise] }", Some(json!(["pro"])), false),
        ("{ trait: plan, in: [pro, enterprise] }", None, false),
        ("{ trait: tags, contains: vip }", Some(json!(["a", "vip"])), true),
        ("{ trait: tags, contains: vip }", Some(json!(["a", "vipx"])), false),
        ("{ trait: tags, contains: 3 }", Some(json!([1, 3.0])), true),
        ("{ trait: note, contains: vip }", Some(json!("a vip customer")), true),
        ("{ trait: note, contains: vip }", Some(json!("a VIP customer")), false),
        ("{ trait: note, contains: vip }", Some(json!({ "vip": true })), false),
        ("{ trait: note, contains: vip }", None, false),
        ("{ trait: ltv, gt: 100 }", Some(json!(100.5)), true),
        ("{ trait: ltv, gt: 100 }", Some(json!(100)), false),
        ("{ trait: ltv, gte: 100 }", Some(json!(100)), true),
        ("{ trait: ltv, lt: 100 }", Some(json!(-3)), true),
        ("{ trait: ltv, lt: 100 }", Some(json!(100)), false),
        ("{ trait: ltv, lte: 100 }", Some(json!(100.0)), true),
        ("{ trait: ltv, lte: 100 }", Some(json!(100.01)), false),
        ("{ trait: ltv, gt: 100 }", Some(json!("200")), false),
        ("{ trait: ltv, gt: 100 }", None, false),
        ("{ trait: ltv, gt: -1.5 }", Some(json!(-1)), true),
        // Dates and timestamps compare as instants (a bare date is midnight UTC).
        ("{ trait: birthday, lt: 2000-01-01 }", Some(json!("1999-12-31")), true),
        ("{ trait: birthday, lt: 2000-01-01 }", Some(json!("2000-01-01")), false),
        ("{ trait: birthday, lte: 2000-01-01 }", Some(json!("2000-01-01T00:00:00Z")), true),
        ("{ trait: birthday, lte: 2000-01-01 }", Some(json!("2000-01-01T00:00:01Z")), false),
        ("{ trait: seen, gt: \"2024-01-01T12:00:00Z\" }", Some(json!("2024-01-01T13:30:00+01:00")), true),
        ("{ trait: seen, gte: \"2024-01-01T12:00:00Z\" }", Some(json!("2024-01-01T13:00:00+01:00")), true),
        ("{ trait: seen, gt: \"2024-01-01T12:00:00Z\" }", Some(json!("2024-01-01T13:00:00+01:00")), false),
        ("{ trait: birthday, lt: 2000-01-01 }", Some(json!("not a date")), false),
        ("{ trait: birthday, lt: 2000-01-01 }", Some(json!(19_990_101)), false),
        ("{ trait: plan, exists: true }", Some(json!("")), true),
        ("{ trait: plan, exists: true }", Some(Value::Null), false),
        ("{ trait: plan, exists: true }", None, false),
        ("{ trait: plan, exists: false }", None, true),
        ("{ trait: plan, exists: false }", Some(Value::Null), true),
        ("{ trait: plan, exists: false }", Some(json!(0)), false),
    ];
    for (rule, value, want) in cases {
        let a = audience(rule);
        let p = match value {
            Some(v) => with(rule.split(&[':', ','][..]).nth(1).unwrap_or_default().trim(), v.clone()),
            None => ProfileDoc::default(),
        };
        let v = a.evaluate(&p, NOW);
        assert_eq!(v.member, *want, "{rule} with {value:?}");
        assert_eq!(v.recheck_at, None, "{rule}: no time dependence");
    }
}

#[test]
fn classes_hide_traits_from_other_classes() {
    let a = audience("{ trait: income, gt: 50000, classes: [0P, 1P] }");
    let absent = audience("{ trait: income, exists: false, classes: [0P, 1P] }");
    let any_class = audience("{ trait: income, gt: 50000 }");
    for (class, seen) in [
        (DataPartyClass::ZeroParty, true),
        (DataPartyClass::FirstParty, true),
        (DataPartyClass::SecondParty, false),
        (DataPartyClass::ThirdParty, false),
    ] {
        let p = with_trait(ProfileDoc::default(), "income", json!(60_000), class);
        assert_eq!(member(&a, &p), seen, "{class:?}");
        // A value from another class counts as absent.
        assert_eq!(member(&absent, &p), !seen, "{class:?}");
        assert!(member(&any_class, &p), "{class:?}");
    }
}

#[test]
fn consent_and_identifiers() {
    let ads = audience("{ consent: advertising }");
    let no_ads = audience("{ not: { consent: advertising } }");
    let email = audience("{ has_identifier: email }");
    let ext = audience("{ has_identifier: ext:Braze_ID }");
    let mut p = ProfileDoc::default();
    assert!(!member(&ads, &p) && member(&no_ads, &p) && !member(&email, &p));
    p.consent.insert("advertising".into(), ConsentEntry { granted: false, at: stamp() });
    assert!(!member(&ads, &p) && member(&no_ads, &p));
    p.consent.insert("advertising".into(), ConsentEntry { granted: true, at: stamp() });
    assert!(member(&ads, &p) && !member(&no_ads, &p));
    p.counts.insert("email".into(), 0);
    assert!(!member(&email, &p));
    p.counts.insert("email".into(), 2);
    p.counts.insert("ext:braze_id".into(), 1);
    assert!(member(&email, &p) && member(&ext, &p));
    assert_eq!(ext.labels(), ["has_identifier ext:braze_id"]);
}

#[test]
fn combinators() {
    let a = audience(
        "all:\n  - { trait: plan, equals: pro }\n  - any:\n      - { has_identifier: email }\n      - { not: { consent: \
         advertising } }\n",
    );
    let pro = with("plan", json!("pro"));
    assert!(member(&a, &pro), "pro, no consent recorded");
    let mut p = pro.clone();
    p.consent.insert("advertising".into(), ConsentEntry { granted: true, at: stamp() });
    assert!(!member(&a, &p), "pro with ads consent and no email");
    p.counts.insert("email".into(), 1);
    assert!(member(&a, &p));
    assert!(!member(&a, &with("plan", json!("free"))));
    assert_eq!(a.evaluate_conditions(&p, NOW), [true, true, true]);
    assert_eq!(a.labels(), ["trait plan equals", "has_identifier email", "consent advertising"]);

    let merged = ProfileDoc { merged_into: Some("other".into()), ..pro };
    assert_eq!(a.evaluate(&merged, NOW), Verdict { member: false, recheck_at: None });
    assert_eq!(a.evaluate_conditions(&merged, NOW), [false, false, false]);
}

// ---------------------------------------------------------------------------------------------------------------
// Time windows

#[test]
fn within_last_days_boundaries_and_recheck() {
    let a = audience("{ trait: last_order, within_last_days: 7 }");
    // Days TODAY-6 ..= TODAY are in; the verdict changes at the midnight the day leaves the window.
    for (day, want, recheck) in [
        (TODAY, true, Some(TODAY + 7)),
        (TODAY - 6, true, Some(TODAY + 1)),
        (TODAY - 7, false, None),
        (TODAY + 1, false, Some(TODAY + 1)),
        (TODAY + 3, false, Some(TODAY + 3)),
    ] {
        let v = a.evaluate(&with("last_order", json!(date(day))), NOW);
        assert_eq!(v, Verdict { member: want, recheck_at: recheck.map(|d| d * DAY_MS) }, "day {}", day - TODAY);
    }
    // Timestamps count by their UTC day, whatever their offset.
    let late = with("last_order", json!(format!("{}T23:30:00-02:00", date(TODAY - 7))));
    assert!(member(&a, &late), "2024-09-28T01:30Z is on day TODAY-6");
    assert!(!member(&a, &with("last_order", json!("yesterday"))));
    assert!(!member(&a, &with("last_order", json!(TODAY))));
}

#[test]
fn within_next_days_boundaries_and_recheck() {
    let a = audience("{ trait: renewal, within_next_days: 14 }");
    // Days TODAY ..= TODAY+13 are in.
    for (day, want, recheck) in [
        (TODAY, true, Some(TODAY + 1)),
        (TODAY + 13, true, Some(TODAY + 14)),
        (TODAY + 14, false, Some(TODAY + 1)),
        (TODAY + 20, false, Some(TODAY + 7)),
        (TODAY - 1, false, None),
    ] {
        let v = a.evaluate(&with("renewal", json!(date(day))), NOW);
        assert_eq!(v, Verdict { member: want, recheck_at: recheck.map(|d| d * DAY_MS) }, "day {}", day - TODAY);
    }
}

fn counted(key: &str, days: &[(i64, u64)]) -> ProfileDoc {
    let mut p = ProfileDoc::default();
    for (day, n) in days {
        for _ in 0..*n {
            assert!(p.counters.record(key, *day, 400, MAX_COUNTER_KEYS));
        }
    }
    p
}

#[test]
fn event_counts_move_out_of_the_window() {
    let a = audience("{ performed: Order Completed, at_least: 2, in_last_days: 30 }");
    assert_eq!(a.labels(), ["performed Order Completed ≥2 in 30d"]);
    // Two orders: 29 days ago and 10 days ago. The older one leaves the window at the start of TODAY+1.
    let p = counted("Order Completed", &[(TODAY - 29, 1), (TODAY - 10, 1)]);
    let v = a.evaluate(&p, NOW);
    assert_eq!(v, Verdict { member: true, recheck_at: Some((TODAY + 1) * DAY_MS) });
    assert!(a.evaluate(&p, (TODAY + 1) * DAY_MS - 1).member);
    assert!(!a.evaluate(&p, (TODAY + 1) * DAY_MS).member);
    // Then nothing can bring it back without new events.
    assert_eq!(a.evaluate(&p, (TODAY + 1) * DAY_MS).recheck_at, None);

    // Leaving days that do not change the verdict are skipped: three orders, the verdict flips when the second
    // oldest leaves.
    let p = counted("Order Completed", &[(TODAY - 29, 1), (TODAY - 20, 1), (TODAY - 5, 1)]);
    assert_eq!(a.evaluate(&p, NOW), Verdict { member: true, recheck_at: Some((TODAY + 10) * DAY_MS) });

    // Not yet a member: only new events can change that.
    let p = counted("Order Completed", &[(TODAY - 3, 1)]);
    assert_eq!(a.evaluate(&p, NOW), Verdict { member: false, recheck_at: None });

    // A day after today (a skewed clock) enters the window when its day comes.
    let p = counted("Order Completed", &[(TODAY - 3, 1), (TODAY + 2, 1)]);
    assert_eq!(a.evaluate(&p, NOW), Verdict { member: false, recheck_at: Some((TODAY + 2) * DAY_MS) });
    assert!(a.evaluate(&p, (TODAY + 2) * DAY_MS).member);
}

#[test]
fn at_most_and_absence_of_events() {
    let none = audience("{ performed: Order Completed, at_most: 0, in_last_days: 30 }");
    assert_eq!(none.labels(), ["performed Order Completed ≤0 in 30d"]);
    let lapsed = counted("Order Completed", &[(TODAY - 29, 1)]);
    assert_eq!(none.evaluate(&lapsed, NOW), Verdict { member: false, recheck_at: Some((TODAY + 1) * DAY_MS) });
    assert_eq!(none.evaluate(&ProfileDoc::default(), NOW), Verdict { member: true, recheck_at: None });

    let some = audience("{ performed: Page Viewed, at_least: 2, at_most: 3, in_last_days: 7 }");
    assert_eq!(some.labels(), ["performed Page Viewed ≥2 ≤3 in 7d"]);
    for (n, want) in [(1, false), (2, true), (3, true), (4, false)] {
        assert_eq!(member(&some, &counted("Page Viewed", &[(TODAY, n)])), want, "{n}");
    }
    // Four views: 3 days ago and today (2 each). Under at_most until the older pair leaves... which makes 2: in.
    let p = counted("Page Viewed", &[(TODAY - 3, 2), (TODAY, 2)]);
    assert_eq!(some.evaluate(&p, NOW), Verdict { member: false, recheck_at: Some((TODAY + 4) * DAY_MS) });
    assert!(some.evaluate(&p, (TODAY + 4) * DAY_MS).member);
}

#[test]
fn recheck_combines_children_soundly() {
    let rule = "any:\n  - { has_identifier: email }\n  - { performed: Signed Up, in_last_days: 7 }\n";
    let a = audience(rule);
    let mut p = counted("Signed Up", &[(TODAY - 2, 1)]);
    // True through the event only: until it leaves.
    assert_eq!(a.evaluate(&p, NOW), Verdict { member: true, recheck_at: Some((TODAY + 5) * DAY_MS) });
    // True through a child that never changes: no recheck.
    p.counts.insert("email".into(), 1);
    assert_eq!(a.evaluate(&p, NOW), Verdict { member: true, recheck_at: None });

    // A false `all` stays false while a child that never changes is false.
    let b = audience("all:\n  - { consent: analytics }\n  - { trait: renewal, within_next_days: 3 }\n");
    let p = with("renewal", json!(date(TODAY + 10)));
    assert_eq!(b.evaluate(&p, NOW), Verdict { member: false, recheck_at: None });
    let mut p = p;
    p.consent.insert("analytics".into(), ConsentEntry { granted: true, at: stamp() });
    assert_eq!(b.evaluate(&p, NOW), Verdict { member: false, recheck_at: Some((TODAY + 8) * DAY_MS) });
    // `not` changes when its child does.
    let c = audience("{ not: { trait: renewal, within_next_days: 3 } }");
    assert_eq!(c.evaluate(&p, NOW), Verdict { member: true, recheck_at: Some((TODAY + 8) * DAY_MS) });
}

#[test]
fn recheck_at_is_never_late() {
    let a = audience(
        "all:\n  - { performed: Order Completed, at_least: 2, in_last_days: 14 }\n  - any:\n      - { trait: \
         last_login, within_last_days: 3 }\n      - { not: { trait: renewal, within_next_days: 5 } }\n",
    );
    let mut p = counted("Order Completed", &[(TODAY - 13, 1), (TODAY - 2, 2), (TODAY + 1, 1)]);
    p = with_trait(p, "last_login", json!(date(TODAY - 1)), DataPartyClass::FirstParty);
    p = with_trait(p, "renewal", json!(date(TODAY + 9)), DataPartyClass::FirstParty);
    let mut now = NOW;
    let mut changes = 0;
    for _ in 0..40 {
        let v = a.evaluate(&p, now);
        let Some(at) = v.recheck_at else { break };
        assert!(at > now);
        for t in [now + 1, (now + at) / 2, at - 1] {
            assert_eq!(a.evaluate(&p, t).member, v.member, "at {t}");
        }
        changes += usize::from(a.evaluate(&p, at).member != v.member);
        now = at;
    }
    assert!(changes >= 2, "the walk saw the verdict change: {changes}");
}

// ---------------------------------------------------------------------------------------------------------------
// Counters

#[test]
fn counters_record_count_and_prune() {
    let mut c = EventCounters::new();
    assert!(c.is_empty());
    assert!(c.record("a", 100, 30, 2));
    assert!(c.record("a", 100, 30, 2));
    assert!(c.record("a", 110, 30, 2));
    assert!(c.record("b", 120, 30, 2));
    assert_eq!(c.count("a", 100, 110), 3);
    assert_eq!(c.count("a", 101, 110), 1);
    assert_eq!(c.count("a", 110, 100), 0);
    assert_eq!(c.count("zzz", 0, 1_000), 0);
    // A third key is refused; known keys are still counted.
    assert!(!c.record("c", 120, 30, 2));
    assert!(c.record("b", 120, 30, 2));
    assert_eq!(c.keys().collect::<Vec<_>>(), ["a", "b"]);
    // Day 140 drops days before 110 (and keys left empty then free a place).
    assert!(c.record("b", 140, 30, 2));
    assert_eq!(c.count("a", 0, 200), 1);
    assert!(c.record("b", 141, 30, 2));
    assert_eq!(c.count("a", 0, 200), 0);
    assert_eq!(c.keys().collect::<Vec<_>>(), ["b"]);
    assert!(c.record("c", 141, 30, 2));
    assert_eq!(c.days("b").collect::<Vec<_>>(), [(120, 2), (140, 1), (141, 1)]);

    // Compact JSON form; empty counters are left out of the profile document.
    assert_eq!(
        serde_json::to_value(&c).ok(),
        Some(json!({ "b": { "120": 2, "140": 1, "141": 1 }, "c": { "141": 1 } }))
    );
    let doc = ProfileDoc { counters: c.clone(), ..ProfileDoc::default() };
    let attrs = doc.to_attrs();
    assert_eq!(attrs["counters"]["b"]["120"], json!(2));
    assert_eq!(ProfileDoc::from_attrs(&attrs).ok(), Some(doc));
    let attrs = ProfileDoc::default().to_attrs();
    assert!(!attrs.contains_key("counters"));
    assert_eq!(ProfileDoc::from_attrs(&attrs).map(|d| d.counters.is_empty()).ok(), Some(true));

    // Merging adds counts and respects the key bound.
    let mut other = EventCounters::new();
    other.record("b", 141, 30, 10);
    other.record("d", 141, 30, 10);
    assert_eq!(c.merge(&other, 2), 1);
    assert_eq!(c.count("b", 141, 141), 2);
    c.retain_keys(|k| k != "b");
    assert_eq!(c.keys().collect::<Vec<_>>(), ["c"]);
}

#[test]
fn event_day_is_never_after_processing() {
    assert_eq!(event_day(TODAY * DAY_MS + 5, NOW), TODAY);
    assert_eq!(event_day((TODAY + 3) * DAY_MS, NOW), TODAY);
    assert_eq!(event_day((TODAY - 3) * DAY_MS, NOW), TODAY - 3);
    assert_eq!(day_of(-1), -1);
}

fn track(name: &str, properties: Value) -> Map<String, Value> {
    match json!({ "type": "track", "event": name, "properties": properties }) {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

#[test]
fn counter_keys_with_and_without_filters() {
    let set = set_of(&[
        "{ performed: Order Completed, in_last_days: 30 }",
        "{ performed: Order Completed, where: { currency: EUR }, at_least: 2, in_last_days: 90 }",
        // The same filter written differently is the same counter.
        "any:\n  - { performed: Order Completed, where: { currency: EUR }, in_last_days: 7 }\n  - { performed: \
         Order Completed, where: { total: 30.0, currency: EUR }, in_last_days: 7 }\n  - { performed: Order \
         Completed, where: { currency: EUR, total: 30 }, in_last_days: 7 }\n",
        "{ trait: plan, equals: pro }",
    ]);
    assert_eq!(set.keep_days(), 90);
    assert_eq!(set.counter_count(), 3);
    let eur = counter_key("Order Completed", &[("currency".to_string(), Scalar::String("EUR".into()))].into());
    assert!(eur.starts_with("Order Completed#") && eur.len() == "Order Completed#".len() + 8, "{eur}");
    let eur30 = counter_key(
        "Order Completed",
        &[("currency".to_string(), Scalar::String("EUR".into())), ("total".to_string(), Scalar::Number(30.into()))]
            .into(),
    );

    let keys = set.counter_keys(&track("Order Completed", json!({ "currency": "EUR", "total": 30 })));
    assert_eq!(keys, ["Order Completed", eur.as_str(), eur30.as_str()]);
    let keys = set.counter_keys(&track("Order Completed", json!({ "currency": "EUR", "total": 30.5 })));
    assert_eq!(keys, ["Order Completed", eur.as_str()]);
    let keys = set.counter_keys(&track("Order Completed", json!({ "currency": "USD" })));
    assert_eq!(keys, ["Order Completed"]);
    assert_eq!(set.counter_keys(&track("Order Completed", Value::Null)), ["Order Completed"]);
    assert!(set.counter_keys(&track("Signed Up", json!({}))).is_empty());
    let mut page = track("Order Completed", json!({}));
    page.insert("type".into(), json!("page"));
    assert!(set.counter_keys(&page).is_empty());

    assert!(set.is_counted("Order Completed") && set.is_counted(&eur) && !set.is_counted("Order Completed#00000000"));
    assert!(!set.is_counted("Signed Up"));

    // The audiences read what was counted under those keys.
    let a = &set.audiences()[1];
    let mut p = ProfileDoc::default();
    for e in [json!({ "currency": "EUR" }), json!({ "currency": "USD" }), json!({ "currency": "EUR" })] {
        for key in set.counter_keys(&track("Order Completed", e)) {
            assert!(p.counters.record(&key, TODAY - 1, set.keep_days(), MAX_COUNTER_KEYS));
        }
    }
    assert!(member(a, &p));
    assert_eq!(a.labels(), ["performed Order Completed where currency ≥2 in 90d"]);
    assert_eq!(p.counters.count("Order Completed", TODAY - 1, TODAY), 3);
}

// ---------------------------------------------------------------------------------------------------------------
// Config: syntax, checks, round trip

const WORKSPACE: &str = r#"
workspace: demo
consent:
  purposes:
    - { id: advertising }
    - { id: analytics }
audiences:
  - id: eu-repeat-buyers
    name: EU repeat buyers
    description: Two EUR orders in a month, reachable.
    rule:
      all:
        - { trait: plan, in: [pro, enterprise] }
        - { trait: income, gt: 50000, classes: [0P, 1P] }
        - { performed: Order Completed, where: { currency: EUR }, at_least: 2, in_last_days: 30 }
        - { not: { consent: advertising } }
        - any:
            - { has_identifier: email }
            - { trait: last_login, within_last_days: 7 }
            - { trait: birthday, lte: 2000-01-01 }
  - id: lapsed
    rule: { performed: Order Completed, at_most: 0, in_last_days: 90 }
"#;

#[test]
fn workspace_audiences_load_and_round_trip() {
    let cfg = load(WORKSPACE).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(cfg.audiences.len(), 2);
    let a = &cfg.audiences[0];
    assert_eq!((a.id.as_str(), a.name.as_deref()), ("eu-repeat-buyers", Some("EU repeat buyers")));
    let Rule::All(rules) = &a.rule else { panic!("all: {:?}", a.rule) };
    assert_eq!(
        rules[2],
        Rule::Performed(EventCondition {
            event: "Order Completed".into(),
            filter: [("currency".to_string(), Scalar::String("EUR".into()))].into(),
            at_least: Some(2),
            at_most: None,
            in_last_days: 30,
        })
    );
    assert_eq!(
        rules[1],
        Rule::Trait(TraitCondition {
            name: "income".into(),
            op: TraitOp::Gt(Scalar::Number(50_000.into())),
            classes: Some(vec![DataPartyClass::ZeroParty, DataPartyClass::FirstParty]),
        })
    );
    let yaml = serde_yaml_ng::to_string(&cfg).expect("serializes");
    assert_eq!(load(&yaml).ok(), Some(cfg.clone()), "{yaml}");
    let json = serde_json::to_string(&cfg).expect("serializes");
    assert_eq!(load(&json).ok(), Some(cfg.clone()));

    let set = AudienceSet::from_config(&cfg).expect("compiles");
    assert_eq!(set.audiences().len(), 2);
    assert_eq!(set.get("lapsed").map(|a| a.labels().len()), Some(1));
    assert_eq!(
        set.get("eu-repeat-buyers").map(CompiledAudience::labels),
        Some(
            &[
                "trait plan in",
                "trait income gt (0P,1P)",
                "performed Order Completed where currency ≥2 in 30d",
                "consent advertising",
                "has_identifier email",
                "trait last_login within last 7d",
                "trait birthday lte",
            ]
            .map(String::from)[..]
        )
    );
    // Without `audiences:` the list is empty.
    let bare = load("workspace: x\n").expect("valid");
    assert!(bare.audiences.is_empty());
}

#[test]
fn the_example_matches_the_json_schema() {
    let validator = jsonschema::options().build(&crate::config::json_schema()).expect("schema compiles");
    let doc: Value = serde_yaml_ng::from_str(WORKSPACE).expect("yaml");
    assert!(validator.is_valid(&doc), "{:?}", validator.iter_errors(&doc).map(|e| e.to_string()).collect::<Vec<_>>());
    // The schema catches the same shape mistakes editors should flag.
    for bad in ["{ trait: plan, equal: pro }", "{ performed: X, in_last_days: 0 }", "{ all: [] }", "{ consent: ~ }"] {
        let doc: Value = serde_yaml_ng::from_str(&WORKSPACE.replace("{ has_identifier: email }", bad)).expect("yaml");
        assert!(!validator.is_valid(&doc), "{bad}");
    }
}

#[test]
fn shape_errors_are_parse_errors_with_path_and_line() {
    let cases = [
        ("{ trait: plan, equals: pro, gt: 3 }", "a trait condition takes exactly one operator, not equals and gt"),
        ("{ trait: plan }", "a trait condition needs one of equals"),
        ("{ trait: plan, equals: pro, consent: ads }", "a rule is one of all, any, not"),
        ("{ trait: plan, equals: pro, in_last_days: 3 }", "a `trait` rule takes no in_last_days key"),
        ("{ consent: ads, classes: [1P] }", "a `consent` rule takes no classes key"),
        ("{ performed: Order Completed, at_least: 2 }", "a performed condition needs `in_last_days` (1-365)"),
        ("{ performed: Order Completed, equals: 2, in_last_days: 3 }", "a `performed` rule takes no equals key"),
        ("{}", "a rule needs one of all, any, not"),
        ("{ trait: plan, equals: [pro] }", "expected a string, number or boolean"),
        ("{ trait: plan, equals: ~ }", "expected a string, number or boolean"),
        ("{ trait: plan, equal: pro }", "unknown field `equal`"),
        ("{ has_identifier: mail }", "identifier type must be"),
        ("{ trait: plan, exists: true, classes: [4P] }", "4P"),
    ];
    for (bad, want) in cases {
        let text = WORKSPACE.replace("{ has_identifier: email }", bad);
        let errs = load(&text).expect_err(bad);
        assert_eq!(errs.len(), 1, "{bad}: {errs:?}");
        let m = &errs[0].message;
        assert!(m.starts_with("audiences[0].rule.all[4].any[0]") && m.contains(want), "{bad}: {m}");
        let line = text.lines().position(|l| l.contains(bad)).map(|n| n + 1);
        assert_eq!(errs[0].location.map(|l| l.0), line, "{bad}: {errs:?}");
    }
    let errs = load(&WORKSPACE.replace("id: lapsed", "id: Lapsed")).expect_err("bad id");
    assert!(errs[0].message.contains("invalid audience id"), "{errs:?}");
}

#[test]
fn check_errors_carry_the_rule_path() {
    let cases: &[(&str, &str)] = &[
        (
            "all: [{ trait: a, exists: true }, { any: [{ consent: ads }] }]",
            r#"audiences[0].rule.all[1].any[0]: unknown consent purpose "ads" (not in consent.purposes)"#,
        ),
        (
            "{ performed: X, at_least: 3, at_most: 2, in_last_days: 3 }",
            "audiences[0].rule: at_least (3) is greater than at_most (2)",
        ),
        ("{ performed: X, at_least: 0, in_last_days: 3 }", "audiences[0].rule: at_least: 0 without at_most"),
        ("{ not: { performed: X, in_last_days: 0 } }", "audiences[0].rule.not: in_last_days must be 1-365"),
        ("{ performed: X, in_last_days: 366 }", "audiences[0].rule: in_last_days must be 1-365"),
        ("{ performed: '', in_last_days: 3 }", "audiences[0].rule: an event name is 1-256 bytes"),
        ("{ performed: X, where: { '': 1 }, in_last_days: 3 }", "audiences[0].rule: `where` property names"),
        ("{ trait: a, exists: true, classes: [] }", "audiences[0].rule: classes must list at least one class"),
        ("{ trait: a, exists: true, classes: [1P, 3P, 1P] }", "audiences[0].rule: classes lists 1P more than once"),
        ("{ trait: a, in: [] }", "audiences[0].rule: `in` takes 1 to 1000 values"),
        ("{ trait: a, gt: true }", "audiences[0].rule: `gt` takes a number or an ISO-8601 date or timestamp"),
        ("{ trait: a, lte: soon }", "audiences[0].rule: `lte` takes a number or an ISO-8601 date or timestamp"),
        ("{ trait: a, within_last_days: 0 }", "audiences[0].rule: `within_last_days` must be 1-36500"),
        ("{ trait: a, within_next_days: 36501 }", "audiences[0].rule: `within_next_days` must be 1-36500"),
        ("{ trait: '', exists: true }", "audiences[0].rule: a trait name is 1-256 bytes"),
        ("{ has_identifier: 'ext:*' }", "audiences[0].rule: has_identifier takes one identifier type"),
        ("{ all: [] }", "audiences[0].rule: `all` needs at least one rule"),
        ("any: [{ all: [] }]", "audiences[0].rule.any[0]: `all` needs at least one rule"),
    ];
    for (rule, want) in cases {
        let errs = errors(rule);
        assert_eq!(errs.len(), 1, "{rule}: {errs:?}");
        assert!(errs[0].starts_with(want), "{rule}: {}", errs[0]);
    }

    // Several problems are all reported.
    let errs = errors("all: [{ consent: x }, { performed: Y, in_last_days: 400 }, { trait: a, in: [] }]");
    assert_eq!(errs.len(), 3, "{errs:?}");

    // Depth: 8 levels pass, 9 do not.
    let nest = |levels: usize| {
        (1..levels).fold("{ consent: analytics }".to_string(), |inner, _| format!("{{ not: {inner} }}"))
    };
    assert!(errors(&nest(8)).is_empty());
    let errs = errors(&nest(9));
    assert_eq!(errs, [format!("audiences[0].rule{}: rules nest at most 8 levels deep", ".not".repeat(8))]);

    // At most 64 conditions per audience.
    let many = |n: usize| format!("any: [{}]", vec!["{ consent: analytics }"; n].join(", "));
    assert!(errors(&many(64)).is_empty());
    assert_eq!(errors(&many(65)), ["audiences[0].rule: at most 64 conditions in one audience (found 65)"]);
}

#[test]
fn set_level_checks() {
    let rule = "{ consent: analytics }";
    let configs = vec![config("a", rule), config("b", rule), config("a", rule)];
    let errs = AudienceSet::compile(&configs, &consent_settings()).expect_err("duplicate");
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].to_string(), r#"audiences[2].id: duplicate audience id "a""#);
    assert_eq!(errs[0].audience, Some(2));

    let configs: Vec<_> = (0..101).map(|i| config(&format!("a{i}"), rule)).collect();
    let errs = AudienceSet::compile(&configs, &consent_settings()).expect_err("too many");
    assert_eq!(errs[0].to_string(), "audiences: at most 100 audiences (found 101)");

    let configs: Vec<_> =
        (0..101).map(|i| config(&format!("a{i}"), &format!("{{ performed: E{i}, in_last_days: 3 }}"))).collect();
    let errs = AudienceSet::compile(&configs[..100], &consent_settings()).map(|s| s.counter_count());
    assert_eq!(errs.ok(), Some(100));
    let errs = AudienceSet::compile(&configs, &consent_settings()).expect_err("too many");
    assert!(errs.iter().any(|e| e.message.starts_with("at most 100 distinct event counters")), "{errs:?}");
}

#[test]
fn config_check_errors_point_at_the_audience() {
    let text = WORKSPACE.replace("{ not: { consent: advertising } }", "{ not: { consent: ads } }");
    let errs = load(&text).expect_err("unknown purpose");
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(
        errs[0].message,
        r#"audiences[0].rule.all[3].not: unknown consent purpose "ads" (not in consent.purposes)"#
    );
    let line = text.lines().position(|l| l.contains("id: eu-repeat-buyers")).map(|n| n + 1);
    assert_eq!(errs[0].location.map(|l| l.0), line);

    let text = WORKSPACE.replace("at_most: 0, in_last_days: 90", "at_most: 0, in_last_days: 900");
    let errs = load(&text).expect_err("window");
    assert_eq!(errs[0].message, "audiences[1].rule: in_last_days must be 1-365");
    let line = text.lines().position(|l| l.contains("id: lapsed")).map(|n| n + 1);
    assert_eq!(errs[0].location.map(|l| l.0), line);
}

// ---------------------------------------------------------------------------------------------------------------
// Property: the verdict holds from `now` until `recheck_at` (or forever when it is None).

/// Rules over the keys and traits the generated profiles hold.
const PROPERTY_RULES: &[&str] = &[
    "{ performed: E, at_least: 2, in_last_days: 7 }",
    "{ performed: E, at_most: 1, in_last_days: 30 }",
    "{ performed: E, at_least: 1, at_most: 3, in_last_days: 14 }",
    "{ performed: F, where: { k: v }, at_least: 2, in_last_days: 60 }",
    "{ trait: d, within_last_days: 10 }",
    "{ trait: d, within_next_days: 20 }",
    "all: [{ performed: E, in_last_days: 7 }, { not: { trait: d, within_last_days: 30, classes: [1P] } }]",
    "any: [{ performed: F, where: { k: v }, at_most: 0, in_last_days: 3 }, { trait: d2, within_next_days: 5 }, \
     { consent: analytics }]",
    "all: [{ any: [{ performed: E, at_least: 3, in_last_days: 30 }, { trait: d, within_next_days: 40 }] }, { not: \
     { all: [{ trait: d2, within_last_days: 2 }, { performed: E, at_most: 2, in_last_days: 5 }] } }]",
    "{ not: { any: [{ trait: d, within_last_days: 1 }, { trait: d2, within_next_days: 1 }] } }",
];

fn class(n: u8) -> DataPartyClass {
    [DataPartyClass::ZeroParty, DataPartyClass::FirstParty, DataPartyClass::SecondParty, DataPartyClass::ThirdParty]
        [usize::from(n % 4)]
}

prop_compose! {
    fn arb_profile()(
        e in proptest::collection::vec((-120i64..60, 1u64..3), 0..8),
        f in proptest::collection::vec((-120i64..60, 1u64..3), 0..5),
        d in proptest::option::of((-100i64..100, 0u8..4)),
        d2 in proptest::option::of(-20i64..20),
        analytics in any::<bool>(),
    ) -> ProfileDoc {
        let mut p = ProfileDoc::default();
        let f_key = counter_key("F", &[("k".to_string(), Scalar::String("v".into()))].into());
        for (key, days) in [("E".to_string(), e), (f_key, f)] {
            for (day, n) in days {
                for _ in 0..n {
                    p.counters.record(&key, TODAY + day, 400, MAX_COUNTER_KEYS);
                }
            }
        }
        if let Some((day, c)) = d {
            p = with_trait(p, "d", json!(date(TODAY + day)), class(c));
        }
        if let Some(day) = d2 {
            p = with_trait(p, "d2", json!(format!("{}T23:59:59.999Z", date(TODAY + day))), DataPartyClass::FirstParty);
        }
        if analytics {
            p.consent.insert("analytics".into(), ConsentEntry { granted: true, at: stamp() });
        }
        p
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn verdict_holds_until_recheck_at(p in arb_profile(), offset in 0i64..DAY_MS, shift in -30i64..30) {
        let set = set_of(PROPERTY_RULES);
        let now = (TODAY + shift) * DAY_MS + offset;
        // Every flip of these rules happens within 400 days of now; the verdict depends only on the day.
        let horizon = now + 400 * DAY_MS;
        for a in set.audiences() {
            let v = a.evaluate(&p, now);
            let until = match v.recheck_at {
                Some(at) => {
                    prop_assert!(at > now && at % DAY_MS == 0, "{} recheck {at} at {now}", a.id());
                    at.min(horizon)
                }
                None => horizon,
            };
            prop_assert_eq!(a.evaluate(&p, until - 1).member, v.member, "{} just before {}", a.id(), until);
            let mut day_start = (now.div_euclid(DAY_MS) + 1) * DAY_MS;
            while day_start < until {
                prop_assert_eq!(a.evaluate(&p, day_start).member, v.member, "{} at {}", a.id(), day_start);
                day_start += DAY_MS;
            }
            prop_assert_eq!(a.evaluate_conditions(&p, now).len(), a.labels().len());
        }
    }
}
