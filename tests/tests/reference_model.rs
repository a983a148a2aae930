//! The synthetic people generator (`tributary_tests::people`) and the reference profile model
//! (`tributary_tests::reference`) that the profile stores are compared with: the generator emits valid normalized
//! events whose identity partition is the truth, and the reference is deterministic, order independent (without
//! limit conflicts) and idempotent under redelivery.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use serde_json::{json, Map, Value};
use tributary_core::config::DataPartyClass;
use tributary_core::identity::{
    extract, CompiledRules, ExtractOptions, IdType, Identifier, IdentityRules, RefusalReason,
};
use tributary_core::ingest::timestamp::{format_timestamp, parse_timestamp};
use tributary_core::ingest::{process, Limits, RequestContext, Route};
use tributary_core::profile::{ProfileSettings, Stamp};
use tributary_tests::people::{
    class_of, consent_settings, generate, shuffled, with_redeliveries, GenEvent, PeopleSpec, Person, Stream, APP,
    BROKER, JUNK_VALUES, SET_ONCE_TRAIT, WEB,
};
use tributary_tests::reference::{consent_signals, purpose_of, stamp, RefProfile, Reference};

fn settings() -> ProfileSettings {
    ProfileSettings { set_once: vec![SET_ONCE_TRAIT.to_string()], ..ProfileSettings::default() }
}

fn reference() -> Reference {
    Reference::new(&IdentityRules::default(), &settings(), &consent_settings())
}

fn run(events: &[GenEvent]) -> Reference {
    let mut r = reference();
    for e in events {
        r.apply(&e.source, class_of(&e.source), &e.event);
    }
    r
}

fn spec(seed: u64, shared_devices: bool) -> PeopleSpec {
    PeopleSpec { people: 40, seed, shared_devices, ..PeopleSpec::default() }
}

/// The usable (extracted, not blocked) identifiers of an event under the default rules.
fn usable(event: &Map<String, Value>) -> Vec<Identifier> {
    static RULES: OnceLock<CompiledRules> = OnceLock::new();
    let rules = RULES.get_or_init(|| IdentityRules::default().compile().unwrap());
    rules.split_blocked(&extract(event, &ExtractOptions::default()).ids).0
}

fn id(kind: IdType, value: &str) -> Identifier {
    Identifier { kind, value: value.to_string() }
}

#[test]
fn generator_is_deterministic_per_seed() {
    let spec = spec(7, true);
    let stream = generate(&spec);
    assert_eq!(generate(&spec), stream);
    assert_ne!(generate(&PeopleSpec { seed: 8, ..spec.clone() }).events, stream.events);
    assert_eq!(shuffled(&stream, 3), shuffled(&stream, 3));
    assert_ne!(shuffled(&stream, 3), shuffled(&stream, 4));
    assert_eq!(with_redeliveries(&stream.events, 0.2, 5), with_redeliveries(&stream.events, 0.2, 5));
}

#[test]
fn every_event_is_a_normalized_event() {
    for seed in 1..=3 {
        let stream = generate(&spec(seed, true));
        let mut message_ids = BTreeSet::new();
        let mut types: BTreeMap<String, usize> = BTreeMap::new();
        let mut sources = BTreeSet::new();
        let (mut junk_only, mut junk_mixed, mut broker, mut segment_consent, mut rudder_consent) = (0, 0, 0, 0, 0);
        let mut stamps: BTreeMap<(String, String), usize> = BTreeMap::new();
        let mut timestamps: BTreeMap<String, usize> = BTreeMap::new();
        let mut last_received = String::new();
        for GenEvent { source, event } in &stream.events {
            sources.insert(source.clone());
            let kind = event["type"].as_str().unwrap().to_string();
            *types.entry(kind.clone()).or_default() += 1;
            let message_id = event["messageId"].as_str().unwrap();
            assert!(message_ids.insert(message_id.to_string()), "duplicate messageId {message_id}");

            // Ingest given the same event as a client sent it (without the fields ingest sets) gives it back.
            let mut raw = event.clone();
            raw.remove("timestamp");
            let received = raw.remove("receivedAt").unwrap();
            let received_at = parse_timestamp(received.as_str().unwrap()).unwrap();
            let ctx = RequestContext { received_at, source_ip: None, user_agent: None };
            let out = process(Route::Batch, json!({ "batch": [raw] }), &ctx, &Limits::default()).unwrap();
            assert!(out.rejected.is_empty(), "{:?}", out.rejected);
            assert_eq!(out.accepted, vec![event.clone()], "not what ingest emits");

            for key in ["timestamp", "receivedAt", "originalTimestamp", "sentAt"] {
                let text = event[key].as_str().unwrap();
                assert_eq!(format_timestamp(parse_timestamp(text).unwrap()), text, "{key} is not RFC 3339 UTC ms");
            }
            assert_ne!(event["timestamp"], event["receivedAt"]);
            let received = event["receivedAt"].as_str().unwrap().to_string();
            assert!(received >= last_received, "events are in arrival order");
            last_received = received;
            *timestamps.entry(event["timestamp"].as_str().unwrap().to_string()).or_default() += 1;
            let ts_received =
                (event["timestamp"].as_str().unwrap().into(), event["receivedAt"].as_str().unwrap().into());
            *stamps.entry(ts_received).or_default() += 1;

            assert!(event["context"].is_object());
            match kind.as_str() {
                "track" => {
                    assert!(event["event"].is_string());
                    assert!(event["properties"].is_object());
                }
                "page" | "screen" => assert!(event["properties"].is_object()),
                "identify" => assert!(event["traits"].is_object()),
                "alias" => {
                    assert_eq!(event["previousId"], event["anonymousId"]);
                    assert!(event["userId"].is_string());
                }
                other => panic!("unexpected type {other}"),
            }

            let usable = usable(event);
            let all = extract(event, &ExtractOptions::default());
            if usable.is_empty() {
                for key in ["userId", "anonymousId"] {
                    let value = event.get(key).and_then(Value::as_str).unwrap_or("");
                    assert!(JUNK_VALUES.contains(&value), "event without a usable identifier: {event:?}");
                }
                junk_only += 1;
            } else if usable.len() < all.ids.len() || !all.rejected.is_empty() {
                junk_mixed += 1;
            }
            if source == BROKER {
                broker += 1;
                assert!(event.get("userId").is_none());
                assert!(usable.iter().any(|i| i.kind == IdType::EmailSha256));
                assert!(!usable.iter().any(|i| i.kind == IdType::Email), "the broker only has hashed emails");
            }
            let context = event["context"].as_object().unwrap();
            segment_consent += usize::from(context.contains_key("consent"));
            rudder_consent += usize::from(context.contains_key("consentManagement"));
        }
        assert_eq!(sources, BTreeSet::from([WEB.to_string(), APP.to_string(), BROKER.to_string()]));
        for kind in ["page", "screen", "track", "identify", "alias"] {
            assert!(types.get(kind).copied().unwrap_or(0) > 0, "seed {seed}: no {kind}");
        }
        for (what, n) in [
            ("junk-only", junk_only),
            ("junk mixed with real ids", junk_mixed),
            ("broker", broker),
            ("Segment consent", segment_consent),
            ("RudderStack consent", rudder_consent),
            ("timestamp collisions", timestamps.values().filter(|&&n| n > 1).count()),
            ("timestamp+receivedAt collisions", stamps.values().filter(|&&n| n > 1).count()),
        ] {
            assert!(n > 0, "seed {seed}: no {what}");
        }
    }
}

#[test]
fn without_shared_devices_each_person_is_one_profile() {
    for seed in 1..=5 {
        let stream = generate(&spec(seed, false));
        let r = run(&stream.events);
        assert_eq!(r.partition(), stream.truth_partition(), "seed {seed}");
        assert_eq!(r.profiles().len(), stream.truth.len());
        let mut brokered = 0;
        for person in &stream.truth {
            let user = r.profile_of(&id(IdType::UserId, &person.user_ids[0])).unwrap();
            let p = r.graph().profile_of(&id(IdType::UserId, &person.user_ids[0])).unwrap();
            assert!(r.graph().refusals(p).is_empty(), "seed {seed}: a limit was hit");
            for broker_id in &person.broker_anonymous_ids {
                brokered += 1;
                assert!(user.ids.contains(&id(IdType::AnonymousId, broker_id)), "broker record not joined");
            }
            // Every person logged in with an email, and every trait has a stamp from one of their events.
            assert!(user.traits.contains_key("email"));
            assert!(user.traits.contains_key(SET_ONCE_TRAIT));
        }
        assert!(brokered > 0);
    }
}

#[test]
fn shared_device_stays_with_its_owner() {
    let mut families = 0;
    for seed in 1..=5 {
        let stream = generate(&spec(seed, true));
        let r = run(&stream.events);
        assert_eq!(r.partition(), stream.truth_partition(), "seed {seed}");
        for (i, person) in stream.truth.iter().enumerate() {
            let Some(borrowed) = &person.borrowed else { continue };
            families += 1;
            let owner = &stream.truth[borrowed.owner];
            assert_ne!(borrowed.owner, i);
            let graph = r.graph();
            let mine = graph.profile_of(&id(IdType::UserId, &person.user_ids[0])).unwrap();
            let theirs = graph.profile_of(&id(IdType::UserId, &owner.user_ids[0])).unwrap();
            assert_ne!(mine, theirs, "seed {seed}: family members merged");
            assert_eq!(graph.profile_of(&id(IdType::AnonymousId, &borrowed.anonymous_id)), Some(theirs));
            assert_eq!(graph.profile_of(&id(IdType::DeviceId, &borrowed.device_id)), Some(theirs));
            assert!(graph
                .refusals(mine)
                .iter()
                .any(|f| matches!(&f.reason, RefusalReason::MergeRefused { kind: IdType::UserId, .. })));
        }
    }
    assert!(families > 0);
}

type Resolved = (BTreeMap<String, (Value, Stamp)>, BTreeMap<String, (bool, Stamp)>);

/// Per person, the traits and consent computed straight from all of their events (no merges involved).
/// `usable[i]` holds the usable identifiers of `stream.events[i]`.
fn brute_force(stream: &Stream, usable: &[Vec<Identifier>], person: &Person) -> Resolved {
    let ids = person.identifiers();
    let once = settings().set_once;
    let mut traits: BTreeMap<String, (Value, Stamp)> = BTreeMap::new();
    let mut consent: BTreeMap<String, (bool, Stamp)> = BTreeMap::new();
    for (e, usable) in stream.events.iter().zip(usable) {
        if !usable.iter().any(|i| ids.contains(i)) {
            continue;
        }
        let at = stamp(&e.source, &e.event);
        if e.event["type"] == "identify" {
            for (name, value) in e.event["traits"].as_object().unwrap() {
                let better = match traits.get(name) {
                    None => true,
                    Some((_, old)) if once.contains(name) => at < *old,
                    Some((_, old)) => at > *old,
                };
                if better {
                    traits.insert(name.clone(), (value.clone(), at.clone()));
                }
            }
        }
        for (purpose, granted) in consent_signals(&e.event, &consent_settings()) {
            let better = match consent.get(&purpose) {
                None => true,
                Some((g, old)) => (at.ts, !granted, &at) > (old.ts, !*g, old),
            };
            if better {
                consent.insert(purpose, (granted, at.clone()));
            }
        }
    }
    (traits, consent)
}

#[test]
fn traits_and_consent_match_a_brute_force_per_person() {
    let stream = generate(&spec(11, false));
    let r = run(&stream.events);
    let usable: Vec<Vec<Identifier>> = stream.events.iter().map(|e| usable(&e.event)).collect();
    let mut purposes = BTreeSet::new();
    for person in &stream.truth {
        let profile = r.profile_of(&id(IdType::UserId, &person.user_ids[0])).unwrap();
        let (traits, consent) = brute_force(&stream, &usable, person);
        assert_eq!(profile.traits, traits);
        assert_eq!(profile.consent, consent);
        purposes.extend(consent.into_keys());
        if !person.broker_anonymous_ids.is_empty() {
            assert_eq!(profile.trait_classes["income_band"], DataPartyClass::ThirdParty);
        }
        assert_eq!(profile.trait_classes["plan"], DataPartyClass::FirstParty);
    }
    let expected: BTreeSet<String> = ["advertising", "analytics", "functional_cookies"].map(String::from).into();
    assert_eq!(purposes, expected);
}

#[test]
fn order_and_redelivery_do_not_change_the_result() {
    for seed in 1..=4 {
        let stream = generate(&spec(seed, false));
        let expected: Vec<RefProfile> = run(&stream.events).profiles();
        assert_eq!(run(&with_redeliveries(&stream.events, 0.25, seed)).profiles(), expected, "seed {seed}");
        for shuffle in 0..3 {
            let events = shuffled(&stream, seed * 100 + shuffle);
            let r = run(&events);
            assert_eq!(r.partition(), stream.truth_partition(), "seed {seed} shuffle {shuffle}");
            assert_eq!(r.profiles(), expected, "seed {seed} shuffle {shuffle}");
            let again = with_redeliveries(&events, 0.3, shuffle);
            assert!(again.len() > events.len());
            assert_eq!(run(&again).profiles(), expected, "seed {seed} shuffle {shuffle} with redeliveries");
        }
    }
}

// The reference's rules on hand-made events.

fn event(kind: &str, message_id: &str, ts: &str, received: &str, extra: Value) -> Map<String, Value> {
    let base = json!({
        "type": kind, "messageId": message_id, "anonymousId": "a1", "context": {},
        "timestamp": format!("2026-01-05T10:00:{ts}Z"), "receivedAt": format!("2026-01-05T10:00:{received}Z"),
    });
    let (Value::Object(mut m), Value::Object(extra)) = (base, extra) else { unreachable!() };
    m.extend(extra);
    m
}

fn traits_of(r: &Reference) -> BTreeMap<String, Value> {
    let profiles = r.profiles();
    assert_eq!(profiles.len(), 1);
    profiles[0].traits.iter().map(|(k, (v, _))| (k.clone(), v.clone())).collect()
}

#[test]
fn trait_ties_break_on_received_then_source_then_message_id_and_set_once_keeps_the_first() {
    let events = [
        ("web", event("identify", "m1", "00.000", "01.000", json!({"traits": {"plan": "a", SET_ONCE_TRAIT: "x"}}))),
        ("web", event("identify", "m2", "00.000", "02.000", json!({"traits": {"plan": "b", SET_ONCE_TRAIT: "y"}}))),
        ("app", event("identify", "m0", "00.000", "02.000", json!({"traits": {"plan": "c"}}))),
        ("web", event("identify", "m3", "00.000", "02.000", json!({"traits": {"plan": "d"}}))),
        // Later in event time but a track: its context traits are not profile traits.
        ("web", event("track", "m4", "09.000", "09.500", json!({"event": "E", "context": {"traits": {"plan": "z"}}}))),
    ];
    for order in [[0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [2, 4, 0, 3, 1]] {
        let mut r = reference();
        for i in order {
            let (source, e) = &events[i];
            assert!(r.apply(source, DataPartyClass::FirstParty, e).is_some());
        }
        // received 02.000 ties between m2, m0 (app) and m3: "web" > "app", then "m3" > "m2".
        assert_eq!(traits_of(&r), BTreeMap::from([("plan".into(), json!("d")), (SET_ONCE_TRAIT.into(), json!("x"))]));
        let (_, at) = &r.profiles()[0].traits["plan"];
        assert_eq!((at.source.as_str(), at.message_id.as_str()), ("web", "m3"));
    }
}

#[test]
fn consent_later_wins_ties_deny_and_names_map_to_purposes() {
    let settings = consent_settings();
    assert_eq!(purpose_of(" c0004 ", &settings).as_deref(), Some("advertising"));
    assert_eq!(purpose_of("ANALYTICS", &settings).as_deref(), Some("analytics"));
    assert_eq!(purpose_of(" Functional Cookies", &settings).as_deref(), Some("functional_cookies"));
    assert_eq!(purpose_of("  ", &settings), None);
    let both = json!({"context": {
        "consent": {"categoryPreferences": {"Advertising": true, "Analytics": true, "Other": "yes"}},
        "consentManagement": {"allowedConsentIds": ["C0002"], "deniedConsentIds": ["C0004", "Performance"]},
    }});
    let Value::Object(both) = both else { unreachable!() };
    assert_eq!(
        consent_signals(&both, &settings),
        BTreeMap::from([("advertising".into(), false), ("analytics".into(), true), ("performance".into(), false)])
    );

    let prefs = |ad: bool| json!({"context": {"consent": {"categoryPreferences": {"Advertising": ad}}}});
    let events = [
        event("page", "m1", "00.000", "05.000", prefs(true)),
        // Same event time, received earlier, but denied wins the tie.
        event("page", "m2", "00.000", "01.000", prefs(false)),
        event("page", "m3", "00.000", "09.000", prefs(true)),
    ];
    let later_grant = event("page", "m4", "00.001", "00.500", prefs(true));
    for order in [[0, 1, 2], [2, 1, 0], [1, 0, 2]] {
        let mut r = reference();
        for i in order {
            r.apply("web", DataPartyClass::FirstParty, &events[i]);
        }
        let (granted, at) = &r.profiles()[0].consent["advertising"];
        assert_eq!((*granted, at.message_id.as_str()), (false, "m2"));
        r.apply("web", DataPartyClass::FirstParty, &later_grant);
        let (granted, at) = &r.profiles()[0].consent["advertising"];
        assert_eq!((*granted, at.message_id.as_str()), (true, "m4"));
    }
}

#[test]
fn merges_combine_state_and_redeliveries_change_nothing() {
    let mut r = reference();
    let a = event("identify", "m1", "01.000", "01.100", json!({"traits": {"plan": "old", "age": 30}}));
    let mut b = event("identify", "m2", "02.000", "02.100", json!({"traits": {"plan": "new"}}));
    b.insert("anonymousId".into(), json!("a2"));
    let mut link = event("track", "m3", "00.500", "03.000", json!({"event": "Linked", "userId": "u1"}));
    link.insert("context".into(), json!({"consent": {"categoryPreferences": {"Analytics": true}}}));
    let mut link2 = link.clone();
    link2.insert("messageId".into(), json!("m4"));
    link2.insert("anonymousId".into(), json!("a2"));
    for e in [&a, &b, &link] {
        r.apply("web", DataPartyClass::FirstParty, e);
    }
    assert_eq!(r.partition().len(), 2);
    let merged = r.apply("web", DataPartyClass::FirstParty, &link2).unwrap();
    assert_eq!(merged.merged.len(), 1);
    let expected = r.profiles();
    assert_eq!(expected.len(), 1);
    assert_eq!(traits_of(&r), BTreeMap::from([("plan".into(), json!("new")), ("age".into(), json!(30))]));
    assert!(expected[0].consent["analytics"].0);

    // Redelivered: nothing happens. The same messageId from another source is another event.
    assert!(r.apply("web", DataPartyClass::FirstParty, &a).is_none());
    assert_eq!(r.profiles(), expected);
    let mut late = a.clone();
    late.insert("timestamp".into(), json!("2026-01-05T11:00:00.000Z"));
    assert!(r.apply("web", DataPartyClass::FirstParty, &late).is_none(), "dedup is by (source, messageId)");
    assert!(r.apply("app", DataPartyClass::SecondParty, &late).is_some());
    assert_eq!(traits_of(&r)["plan"], json!("old"));
    assert_eq!(r.profiles()[0].trait_classes["plan"], DataPartyClass::SecondParty);
}
