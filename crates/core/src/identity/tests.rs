use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use super::*;

fn id(kind: IdType, raw: &str) -> Identifier {
    Identifier::new(kind, raw, Some("1")).expect("valid identifier")
}

fn user(v: &str) -> Identifier {
    id(IdType::UserId, v)
}

fn anon(v: &str) -> Identifier {
    id(IdType::AnonymousId, v)
}

fn email(v: &str) -> Identifier {
    id(IdType::Email, v)
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => panic!("not an object"),
    }
}

fn graph() -> ReferenceGraph {
    ReferenceGraph::new(IdentityRules::default().compile().unwrap())
}

fn set(ids: &[Identifier]) -> BTreeSet<Identifier> {
    ids.iter().cloned().collect()
}

// ---------------------------------------------------------------- identifier types

#[test]
fn type_names_round_trip() {
    let types = [
        (IdType::UserId, "user_id"),
        (IdType::AnonymousId, "anonymous_id"),
        (IdType::Email, "email"),
        (IdType::Phone, "phone"),
        (IdType::DeviceId, "device_id"),
        (IdType::EmailSha256, "email_sha256"),
        (IdType::PhoneSha256, "phone_sha256"),
        (IdType::External("braze_id".into()), "ext:braze_id"),
        (IdType::External("ios.idfa".into()), "ext:ios.idfa"),
        (IdType::External("*".into()), "ext:*"),
    ];
    for (kind, name) in types {
        assert_eq!(kind.to_string(), name);
        assert_eq!(name.parse::<IdType>().unwrap(), kind);
        let json = serde_json::to_value(&kind).unwrap();
        assert_eq!(json, json!(name));
        assert_eq!(serde_json::from_value::<IdType>(json).unwrap(), kind);
    }
    assert_eq!("ext:Braze_ID".parse::<IdType>().unwrap(), IdType::External("braze_id".into()));
    for bad in
        ["", "userId", "USER_ID", "ext:", "ext:a b", "ext:_x", "ext:a*", "sha256", &format!("ext:{}", "a".repeat(65))]
    {
        assert!(bad.parse::<IdType>().is_err(), "{bad:?} should not parse");
    }
    assert_eq!(IdType::external(" GA_Client_Id "), Some(IdType::External("ga_client_id".into())));
    assert_eq!(IdType::external("*"), None);
}

#[test]
fn email_normalization_table() {
    let cases: &[(&str, Result<&str, RejectReason>)] = &[
        ("  Ada@Example.COM ", Ok("ada@example.com")),
        ("first.last+tag@gmail.com", Ok("first.last+tag@gmail.com")),
        ("F.I.R.S.T@GMail.com", Ok("f.i.r.s.t@gmail.com")),
        ("a@b.co", Ok("a@b.co")),
        ("", Err(RejectReason::Empty)),
        ("   ", Err(RejectReason::Empty)),
        ("ada", Err(RejectReason::InvalidEmail)),
        ("@example.com", Err(RejectReason::InvalidEmail)),
        ("ada@localhost", Err(RejectReason::InvalidEmail)),
        ("ada@@example.com", Err(RejectReason::InvalidEmail)),
        ("a@b@example.com", Err(RejectReason::InvalidEmail)),
        ("ada @example.com", Err(RejectReason::InvalidEmail)),
        ("ada@.example.com", Err(RejectReason::InvalidEmail)),
        ("ada@example.com.", Err(RejectReason::InvalidEmail)),
        ("ada@example..com", Err(RejectReason::InvalidEmail)),
    ];
    for (raw, want) in cases {
        let got = Identifier::new(IdType::Email, raw, None).map(|i| i.value);
        assert_eq!(got, want.map(str::to_string), "email {raw:?}");
    }
    let long = format!("{}@example.com", "a".repeat(250));
    assert_eq!(Identifier::new(IdType::Email, &long, None), Err(RejectReason::TooLong));
}

#[test]
fn phone_normalization_table() {
    let cases: &[(&str, Option<&str>, Result<&str, RejectReason>)] = &[
        ("+1 (415) 555-2671", None, Ok("+14155552671")),
        ("0044 20 7946 0958", None, Ok("+442079460958")),
        ("+44 20.7946.0958", None, Ok("+442079460958")),
        ("415-555-2671", Some("1"), Ok("+14155552671")),
        ("1 415 555 2671", Some("1"), Ok("+14155552671")),
        ("(415) 555 2671", Some("1"), Ok("+14155552671")),
        ("020 7946 0958", Some("44"), Ok("+442079460958")),
        ("06 12 34 56 78", Some("33"), Ok("+33612345678")),
        ("06 1234 5678", Some("39"), Ok("+390612345678")),
        ("415-555-2671", None, Err(RejectReason::MissingCountryCode)),
        ("415-555-2671", Some("0"), Err(RejectReason::MissingCountryCode)),
        ("415-555-2671", Some("+1"), Err(RejectReason::MissingCountryCode)),
        ("415-555-2671", Some("1234"), Err(RejectReason::MissingCountryCode)),
        ("", Some("1"), Err(RejectReason::Empty)),
        ("call me", Some("1"), Err(RejectReason::InvalidPhone)),
        ("+1 415 555 2671 x12", None, Err(RejectReason::InvalidPhone)),
        ("+1-415-555-2671+", None, Err(RejectReason::InvalidPhone)),
        ("++14155552671", None, Err(RejectReason::InvalidPhone)),
        ("+1234567", None, Err(RejectReason::InvalidPhone)),
        ("+1234567890123456", None, Err(RejectReason::InvalidPhone)),
        ("+0 415 555 2671", None, Err(RejectReason::InvalidPhone)),
        ("+", None, Err(RejectReason::InvalidPhone)),
        ("000", None, Err(RejectReason::InvalidPhone)),
    ];
    for (raw, cc, want) in cases {
        let got = Identifier::new(IdType::Phone, raw, *cc).map(|i| i.value);
        assert_eq!(got, want.map(str::to_string), "phone {raw:?} with {cc:?}");
    }
}

#[test]
fn id_normalization_and_sha256_input() {
    assert_eq!(Identifier::new(IdType::UserId, "  U-42 ", None).unwrap().value, "U-42");
    assert_eq!(Identifier::new(IdType::DeviceId, " \t", None), Err(RejectReason::Empty));
    assert_eq!(Identifier::new(IdType::AnonymousId, &"x".repeat(256), None).unwrap().value.len(), 256);
    assert_eq!(Identifier::new(IdType::AnonymousId, &"x".repeat(257), None), Err(RejectReason::TooLong));
    assert_eq!(Identifier::new(IdType::External("braze_id".into()), " B1 ", None).unwrap().value, "B1");

    let hex = crate::sha256_hex(b"ada@example.com");
    let upper = format!(" {} ", hex.to_uppercase());
    assert_eq!(Identifier::new(IdType::EmailSha256, &upper, None).unwrap().value, hex);
    for bad in ["ada@example.com", &hex[..63], &format!("{}g", &hex[..63]), &format!("{hex}0")] {
        assert_eq!(Identifier::new(IdType::EmailSha256, bad, None), Err(RejectReason::NotSha256), "{bad:?}");
        assert_eq!(Identifier::new(IdType::PhoneSha256, bad, None), Err(RejectReason::NotSha256), "{bad:?}");
    }
}

#[test]
fn hashed_forms_match_broker_hashes() {
    let raw = email("  Ada@Example.com");
    let hashed = raw.hashed();
    assert_eq!(hashed.kind, IdType::EmailSha256);
    assert_eq!(hashed.value, crate::sha256_hex(b"ada@example.com"));
    // A broker hashing the normalized email in upper-case hex still matches.
    let broker = Identifier::new(IdType::EmailSha256, &crate::sha256_hex(b"ada@example.com").to_uppercase(), None);
    assert_eq!(broker.unwrap(), hashed);

    let phone = id(IdType::Phone, "+1 (415) 555-2671");
    assert_eq!(phone.hashed(), Identifier { kind: IdType::PhoneSha256, value: crate::sha256_hex(b"+14155552671") });
    assert_eq!(user("u1").hashed(), user("u1"));
    assert_eq!(hashed.hashed(), hashed);
}

#[test]
fn keys_round_trip_and_display_hides_values() {
    let cases = [email("ada@example.com"), user("u:1"), id(IdType::External("braze_id".into()), "b:2")];
    for i in &cases {
        assert_eq!(Identifier::from_key(&i.key(), None).unwrap(), *i);
    }
    assert_eq!(Identifier::from_key("email: Ada@Example.com", None).unwrap(), email("ada@example.com"));
    assert_eq!(Identifier::from_key("nope", None), Err(RejectReason::InvalidType));
    assert_eq!(Identifier::from_key("ext:*:1", None), Err(RejectReason::InvalidType));
    assert_eq!(Identifier::from_key("userId:1", None), Err(RejectReason::InvalidType));
    let shown = email("ada@example.com").to_string();
    assert!(shown.starts_with("email:sha256:") && !shown.contains("ada"), "{shown}");
}

// ---------------------------------------------------------------- extraction

fn extract_default(event: Value) -> Extracted {
    extract(&obj(event), &ExtractOptions { default_country_code: Some("1".into()), include_hashed: true })
}

#[test]
fn extract_analytics_js_identify() {
    let out = extract_default(json!({
        "type": "identify", "userId": "u1", "anonymousId": "a1", "messageId": "m",
        "traits": {"email": " Ada@Example.com", "phone": "+1 415 555 2671", "name": "Ada"},
        "context": {"library": {"name": "analytics.js"}, "traits": {"email": "other@example.com"}}
    }));
    let e = email("ada@example.com");
    let p = id(IdType::Phone, "+14155552671");
    assert_eq!(out.ids, vec![user("u1"), anon("a1"), e.clone(), e.hashed(), p.clone(), p.hashed()]);
    assert!(out.rejected.is_empty());
}

#[test]
fn extract_track_reads_context_traits_not_properties() {
    let out = extract_default(json!({
        "type": "track", "event": "Order Completed", "anonymousId": "a1",
        "properties": {"email": "prop@example.com"},
        "traits": {"email": "ignored@example.com"},
        "context": {"traits": {"email": "ctx@example.com"}}
    }));
    let e = email("ctx@example.com");
    assert_eq!(out.ids, vec![anon("a1"), e.clone(), e.hashed()]);
}

#[test]
fn extract_group_ignores_group_traits() {
    let out = extract_default(json!({
        "type": "group", "userId": "u1", "groupId": "g1", "traits": {"email": "billing@acme.com"}, "context": {}
    }));
    assert_eq!(out.ids, vec![user("u1")]);
}

#[test]
fn extract_rudder_identify_with_context_traits_only() {
    // rudder-sdk-python: identify traits only in context.traits (ingest copies them, but extract also falls back).
    let out = extract_default(json!({
        "type": "identify", "userId": "u1", "context": {"traits": {"email": "r@example.com", "phone": "415.555.2671"}}
    }));
    let e = email("r@example.com");
    let p = id(IdType::Phone, "+14155552671");
    assert_eq!(out.ids, vec![user("u1"), e.clone(), e.hashed(), p.clone(), p.hashed()]);
}

#[test]
fn extract_mobile_screen_with_device_and_external_ids() {
    // analytics-ios / analytics-android / analytics-kotlin shape.
    let broker_hash = crate::sha256_hex(b"ada@example.com");
    let out = extract_default(json!({
        "type": "screen", "anonymousId": "A-1", "name": "Home",
        "context": {
            "device": {"id": "dev-1", "advertisingId": "ad-1"},
            "externalIds": [
                {"id": "b-1", "type": "braze_id", "collection": "users", "encoding": "none"},
                {"id": broker_hash.to_uppercase(), "type": "email", "encoding": "sha256"},
                {"id": "acct-1", "type": "account_id", "collection": "accounts"},
                {"id": 42, "type": "GA_Client_Id"},
                {"id": "x", "type": "user_id", "encoding": "sha256"},
                {"id": "x", "type": "braze_id", "encoding": "base64"},
                {"id": "x", "type": "bad type"},
                {"id": "x"},
                {"type": "braze_id"},
                "not-an-object",
                {"id": "not-hex", "type": "phone", "encoding": "sha256"}
            ]
        }
    }));
    assert_eq!(
        out.ids,
        vec![
            anon("A-1"),
            id(IdType::DeviceId, "dev-1"),
            id(IdType::External("braze_id".into()), "b-1"),
            Identifier { kind: IdType::EmailSha256, value: broker_hash },
            id(IdType::External("ga_client_id".into()), "42"),
        ]
    );
    let invalid = IdType::External("invalid".into());
    assert_eq!(
        out.rejected,
        vec![
            (IdType::UserId, RejectReason::UnsupportedEncoding),
            (IdType::External("braze_id".into()), RejectReason::UnsupportedEncoding),
            (invalid.clone(), RejectReason::InvalidType),
            (invalid.clone(), RejectReason::InvalidType),
            (IdType::External("braze_id".into()), RejectReason::Malformed),
            (invalid, RejectReason::Malformed),
            (IdType::PhoneSha256, RejectReason::NotSha256),
        ]
    );
}

#[test]
fn extract_rejections_never_carry_values() {
    let out = extract_default(json!({
        "type": "identify", "userId": "u1",
        "traits": {"email": "secret-not-an-email", "phone": {"n": 1}},
        "context": {"device": {"id": "   "}}
    }));
    assert_eq!(out.ids, vec![user("u1")]);
    assert_eq!(
        out.rejected,
        vec![
            (IdType::Email, RejectReason::InvalidEmail),
            (IdType::Phone, RejectReason::NotAString),
            (IdType::DeviceId, RejectReason::Empty),
        ]
    );
    assert!(!format!("{:?}", out.rejected).contains("secret"));
}

#[test]
fn extract_alias_previous_id() {
    // analytics.js alias: previousId is the anonymous id of the same event → collapses into anonymous_id.
    let out = extract_default(json!({"type": "alias", "userId": "u2", "previousId": "a1", "anonymousId": "a1"}));
    assert_eq!(out.ids, vec![user("u2"), anon("a1")]);
    // Server-side alias from an old user id.
    let out = extract_default(json!({"type": "alias", "userId": "u2", "previousId": "u1"}));
    assert_eq!(out.ids, vec![user("u2"), user("u1")]);
    // previousId on any other type is not an identifier.
    let out = extract_default(json!({"type": "track", "event": "E", "userId": "u2", "previousId": "u1"}));
    assert_eq!(out.ids, vec![user("u2")]);
}

#[test]
fn extract_dedups_and_can_skip_hashes() {
    let event = obj(json!({
        "type": "identify", "userId": "u1", "traits": {"email": "a@example.com"},
        "context": {"externalIds": [{"id": "A@EXAMPLE.COM", "type": "email"}, {"id": "u1", "type": "user_id"}]}
    }));
    let out = extract(&event, &ExtractOptions::default());
    let e = email("a@example.com");
    assert_eq!(out.ids, vec![user("u1"), e.clone(), e.hashed()]);
    let out = extract(&event, &ExtractOptions { include_hashed: false, ..ExtractOptions::default() });
    assert_eq!(out.ids, vec![user("u1"), e]);
    // Without a default country code, a national phone number is rejected.
    let out = extract(
        &obj(json!({"type": "identify", "userId": "u1", "traits": {"phone": 4155552671u64}})),
        &ExtractOptions::default(),
    );
    assert_eq!(out.rejected, vec![(IdType::Phone, RejectReason::MissingCountryCode)]);
}

#[test]
fn extract_reads_values_hashed_by_the_pii_hash_action() {
    let email_hex = crate::sha256_hex(b"ada@example.com");
    let phone_hex = crate::sha256_hex(b"+14155552671");
    let email_sha = Identifier { kind: IdType::EmailSha256, value: email_hex.clone() };
    let phone_sha = Identifier { kind: IdType::PhoneSha256, value: phone_hex.clone() };
    let out = extract_default(json!({
        "type": "identify", "userId": "u1",
        "traits": {"email": format!("sha256:{email_hex}"), "phone": format!(" sha256:{} ", phone_hex.to_uppercase())}
    }));
    assert_eq!(out.ids, vec![user("u1"), email_sha.clone(), phone_sha.clone()]);
    assert!(out.rejected.is_empty(), "{:?}", out.rejected);
    // Same on a track event's context.traits, and without hashed forms requested.
    let event = obj(json!({"type": "track", "event": "E", "anonymousId": "a1",
        "context": {"traits": {"email": format!("sha256:{email_hex}")}}}));
    let out = extract(&event, &ExtractOptions { include_hashed: false, ..ExtractOptions::default() });
    assert_eq!(out.ids, vec![anon("a1"), email_sha.clone()]);
    // externalIds: the prefixed form for email/phone types, with or without `encoding: sha256`.
    let out = extract_default(json!({"type": "track", "event": "E", "anonymousId": "a1", "context": {"externalIds": [
        {"id": format!("sha256:{email_hex}"), "type": "email"},
        {"id": format!("sha256:{phone_hex}"), "type": "phone", "encoding": "sha256"},
        {"id": format!("sha256:{email_hex}"), "type": "braze_id"}
    ]}}));
    assert_eq!(
        out.ids,
        vec![
            anon("a1"),
            email_sha.clone(),
            phone_sha,
            id(IdType::External("braze_id".into()), &format!("sha256:{email_hex}"))
        ]
    );
    assert!(out.rejected.is_empty(), "{:?}", out.rejected);
    // Not a full SHA-256: still an invalid email, never a hash. A hashed userId stays a user id.
    let out = extract_default(json!({"type": "identify", "userId": format!("sha256:{email_hex}"),
        "traits": {"email": format!("sha256:{}", &email_hex[..63]), "phone": "sha256:"}}));
    assert_eq!(out.ids, vec![user(&format!("sha256:{email_hex}"))]);
    assert_eq!(
        out.rejected,
        vec![(IdType::Email, RejectReason::InvalidEmail), (IdType::Phone, RejectReason::InvalidPhone)]
    );
}

#[test]
fn hashed_identify_through_governance_matches_the_raw_email_profile() {
    use crate::governance::policy::{Governance, PiiPolicy};
    use crate::governance::{PiiAction, PiiKind};
    let opts = ExtractOptions { default_country_code: Some("1".into()), include_hashed: true };
    let raw = obj(json!({"type": "identify", "userId": "u1",
        "traits": {"email": " Ada@Example.com ", "phone": "+1 415 555 2671"}}));
    let plain = extract(&raw, &opts);
    let policy =
        PiiPolicy { detect: vec![PiiKind::Email, PiiKind::Phone], action: PiiAction::Hash, allow_properties: None };
    let mut hashed = raw.clone();
    Governance::new(None, Some(&policy)).unwrap().govern(&mut hashed);
    let out = extract(&hashed, &opts);
    assert!(out.rejected.is_empty(), "{:?}", out.rejected);
    // Exactly the hashed identifiers of the raw event: the two profiles join.
    let e = email("ada@example.com");
    let p = id(IdType::Phone, "+14155552671");
    assert_eq!(plain.ids, vec![user("u1"), e.clone(), e.hashed(), p.clone(), p.hashed()]);
    assert_eq!(out.ids, vec![user("u1"), e.hashed(), p.hashed()]);
    let mut g = graph();
    let first = g.apply(1, &plain.ids).profile;
    assert_eq!(g.apply(2, &out.ids).profile, first);
}

#[test]
fn extract_rejects_values_redacted_by_the_pii_redact_action() {
    let out = extract_default(json!({"type": "identify", "userId": "[REDACTED:email]", "anonymousId": "a1",
        "traits": {"email": "[REDACTED:email]", "phone": "call [REDACTED:phone]"},
        "context": {"externalIds": [{"id": "id [REDACTED:email]", "type": "braze_id"}]}}));
    assert_eq!(out.ids, vec![anon("a1")]);
    assert_eq!(
        out.rejected,
        vec![
            (IdType::UserId, RejectReason::Redacted),
            (IdType::Email, RejectReason::Redacted),
            (IdType::Phone, RejectReason::Redacted),
            (IdType::External("braze_id".into()), RejectReason::Redacted),
        ]
    );
    assert_eq!(RejectReason::Redacted.as_str(), "redacted");
    assert_eq!(serde_json::to_value(RejectReason::Redacted).unwrap(), json!("redacted"));
}

// ---------------------------------------------------------------- rules

#[test]
fn default_rules_priorities_and_limits() {
    let rules = IdentityRules::default().compile().unwrap();
    let ext = IdType::External("braze_id".into());
    let table = [
        (IdType::UserId, 1, 1),
        (IdType::Email, 2, 5),
        (IdType::EmailSha256, 2, 5),
        (IdType::Phone, 3, 5),
        (IdType::PhoneSha256, 3, 5),
        (ext, 4, 5),
        (IdType::DeviceId, 5, 5),
        (IdType::AnonymousId, 6, 5),
    ];
    for (kind, priority, max) in table {
        assert_eq!(rules.priority(&kind), priority, "{kind}");
        assert_eq!(rules.max_per_profile(&kind), max, "{kind}");
    }
}

#[test]
fn default_blocked_values() {
    let rules = IdentityRules::default().compile().unwrap();
    for kind in [IdType::UserId, IdType::AnonymousId, IdType::DeviceId, IdType::External("x".into())] {
        for junk in ["null", "NULL", "Undefined", "0", "-1", "anonymous", "None", "nil", "unknown", "000", "0-0", "--"]
        {
            assert!(rules.is_blocked(&id(kind.clone(), junk)), "{kind} {junk:?}");
        }
        for fine in ["u1", "10", "-2", "null1", "anonymous-42", "0a"] {
            assert!(!rules.is_blocked(&id(kind.clone(), fine)), "{kind} {fine:?}");
        }
    }
    assert!(rules.is_blocked(&Identifier { kind: IdType::UserId, value: String::new() }));
    // Hashes of blocked raw values are blocked for hashed types.
    let hashed_null = Identifier::new(IdType::EmailSha256, &crate::sha256_hex(b"null"), None).unwrap();
    assert!(rules.is_blocked(&hashed_null));
    assert!(!rules.is_blocked(&email("ada@example.com").hashed()));
}

#[test]
fn custom_blocked_values_and_patterns() {
    let mut config = IdentityRules::default();
    let email_rule = config.types.iter_mut().find(|r| r.kind == IdType::Email).unwrap();
    email_rule.blocked.push("Test@Example.com".into());
    email_rule.blocked_patterns.push("@(mailinator|example)\\.org$".into());
    let rules = config.compile().unwrap();
    assert!(rules.is_blocked(&email("test@example.com")));
    assert!(rules.is_blocked(&email("x@mailinator.org")));
    assert!(!rules.is_blocked(&email("x@mailinator.com")));
    assert!(rules.is_blocked(&email("test@example.com").hashed()), "hash of a blocked email is blocked");
    // The hashed form of a pattern-blocked email is dropped with it when both are in the same event.
    let raw = email("x@mailinator.org");
    let fine = email("ada@example.com");
    let (usable, blocked) = rules.split_blocked(&[raw.clone(), raw.hashed(), fine.clone(), fine.hashed()]);
    assert_eq!(usable, vec![fine.clone(), fine.hashed()]);
    assert_eq!(blocked, vec![raw.clone(), raw.hashed()]);
}

#[test]
fn rules_without_a_type_fall_back() {
    let rules = IdentityRules {
        types: vec![TypeRule {
            kind: IdType::UserId,
            priority: 1,
            max_per_profile: 2,
            blocked: vec![],
            blocked_patterns: vec![],
        }],
    }
    .compile()
    .unwrap();
    assert!(!rules.is_blocked(&user("null")), "user_id has its own (empty) block list");
    assert!(rules.is_blocked(&anon("null")), "types without a rule get the default block list");
    assert_eq!(rules.priority(&IdType::AnonymousId), rules::FALLBACK_PRIORITY);
    assert_eq!(rules.max_per_profile(&IdType::External("x".into())), 5);
    assert_eq!(rules.max_per_profile(&IdType::UserId), 2);
}

#[test]
fn invalid_rules_name_the_rule() {
    let mut config = IdentityRules::default();
    config.types[3].blocked_patterns.push("([unclosed".into());
    match config.compile() {
        Err(RulesError::InvalidPattern { rule: 3, kind: IdType::Phone, pattern_index: 1, message }) => {
            assert!(!message.is_empty())
        }
        other => panic!("unexpected {other:?}"),
    }
    let err = config.compile().unwrap_err().to_string();
    assert!(err.starts_with("identity rule 3 (phone)"), "{err}");

    let mut config = IdentityRules::default();
    config.types.push(config.types[0].clone());
    assert_eq!(config.compile().unwrap_err(), RulesError::DuplicateType { rule: 8, kind: IdType::UserId, first: 0 });
    let mut config = IdentityRules::default();
    config.types[1].priority = 0;
    assert_eq!(config.compile().unwrap_err(), RulesError::ZeroPriority { rule: 1, kind: IdType::Email });
    let mut config = IdentityRules::default();
    config.types[2].max_per_profile = 0;
    assert_eq!(config.compile().unwrap_err(), RulesError::ZeroMax { rule: 2, kind: IdType::EmailSha256 });
}

#[test]
fn rules_serde_and_schema() {
    let yaml = "types:\n  - kind: user_id\n    priority: 1\n    max_per_profile: 1\n  - kind: ext:*\n    priority: 2\n    max_per_profile: 3\n    blocked: [guest]\n    blocked_patterns: ['^tmp-']\n";
    let config: IdentityRules = serde_yaml_ng::from_str(yaml).unwrap();
    assert_eq!(config.types[1].kind, IdType::External("*".into()));
    assert!(config.types[0].blocked.is_empty());
    let rules = config.compile().unwrap();
    assert!(rules.is_blocked(&id(IdType::External("crm".into()), "tmp-1")));
    assert!(rules.is_blocked(&id(IdType::External("crm".into()), "Guest")));
    let back: IdentityRules = serde_json::from_value(serde_json::to_value(&config).unwrap()).unwrap();
    assert_eq!(back, config);
    assert!(serde_yaml_ng::from_str::<IdentityRules>(
        "types:\n  - kind: userId\n    priority: 1\n    max_per_profile: 1\n"
    )
    .is_err());
    assert!(serde_yaml_ng::from_str::<IdentityRules>("types: []\nextra: 1\n").is_err());

    let schema = serde_json::to_value(schemars::schema_for!(IdentityRules)).unwrap();
    let text = schema.to_string();
    assert!(text.contains("max_per_profile") && text.contains("ext:"), "{text}");
}

// ---------------------------------------------------------------- reference model

#[test]
fn model_a_anonymous_then_login_on_second_device_is_one_profile() {
    let mut g = graph();
    let first = g.apply(1, &[anon("a1")]);
    assert!(first.created);
    g.apply(2, &[user("u1"), anon("a1"), email("ada@example.com")]);
    let d2 = g.apply(3, &[anon("a2")]);
    assert!(d2.created);
    let login = g.apply(4, &[user("u1"), anon("a2")]);
    assert_eq!(login.profile, first.profile, "the oldest profile survives");
    assert_eq!(login.merged, vec![d2.profile.unwrap()]);
    assert!(login.linked.is_empty() && login.refused.is_empty());
    assert_eq!(g.partition(), vec![set(&[user("u1"), anon("a1"), anon("a2"), email("ada@example.com")])]);
    assert_eq!(g.profile_of(&anon("a2")), first.profile);
    assert_eq!(g.resolve(d2.profile.unwrap()), first.profile);
    assert_eq!(g.identifiers(d2.profile.unwrap()).unwrap().len(), 4);
}

#[test]
fn model_b_shared_anonymous_id_keeps_two_users_apart() {
    let mut g = graph();
    g.apply(1, &[anon("family-ipad")]);
    let a = g.apply(2, &[user("alice"), anon("family-ipad")]).profile.unwrap();
    let b = g.apply(3, &[user("bob"), anon("family-ipad")]);
    assert!(b.created, "bob gets a profile of his own");
    assert_ne!(b.profile, Some(a));
    assert_eq!(
        b.refused,
        vec![Refusal {
            event_seq: 3,
            identifier: anon("family-ipad"),
            reason: RefusalReason::MergeRefused { other: a, kind: IdType::UserId },
        }]
    );
    assert_eq!(g.refusals(b.profile.unwrap()), b.refused.as_slice());
    // Anonymous events from the shared device keep going to the first user seen with it; bob's stay with bob.
    assert_eq!(g.apply(4, &[anon("family-ipad")]).profile, Some(a));
    assert_eq!(g.apply(5, &[user("bob")]).profile, b.profile);
    assert_eq!(g.partition(), vec![set(&[user("alice"), anon("family-ipad")]), set(&[user("bob")])]);
}

#[test]
fn model_limit_on_new_identifiers_is_refused_and_recorded() {
    let mut g = graph();
    let p = g.apply(1, &[user("u1")]).profile;
    let emails: Vec<Identifier> = (0..7).map(|i| email(&format!("e{i}@example.com"))).collect();
    let mut ids = vec![user("u1")];
    ids.extend(emails.iter().cloned());
    let out = g.apply(2, &ids);
    assert_eq!(out.profile, p);
    assert_eq!(out.linked, emails[..5].to_vec(), "the first five in event order win");
    let refused: Vec<Identifier> = out.refused.iter().map(|r| r.identifier.clone()).collect();
    assert_eq!(refused, emails[5..].to_vec());
    assert!(out.refused.iter().all(|r| r.reason == RefusalReason::LimitExceeded { kind: IdType::Email }));
    // Alias between two user ids: refused under the default user_id limit of 1.
    let alias = g.apply(3, &[user("u2"), user("u1")]);
    assert!(alias.created);
    assert_eq!(alias.refused.len(), 1);
    assert_eq!(g.partition().len(), 2);
}

#[test]
fn model_c_hashed_broker_email_joins_raw_email_profile() {
    let mut g = graph();
    let opts = ExtractOptions { default_country_code: Some("1".into()), include_hashed: true };
    let web =
        extract(&obj(json!({"type": "identify", "userId": "u1", "traits": {"email": " Ada@Example.com"}})), &opts);
    let p = g.apply(1, &web.ids).profile;
    // A broker file row: only the hash (upper-case hex) and the broker's own id.
    let broker_hash = crate::sha256_hex(b"ada@example.com").to_uppercase();
    let row = extract(
        &obj(json!({"type": "identify", "anonymousId": "broker-row-9", "context": {"externalIds": [
            {"id": broker_hash, "type": "email", "encoding": "sha256"},
            {"id": "lr-123", "type": "liveramp_id"}
        ]}})),
        &opts,
    );
    let out = g.apply(2, &row.ids);
    assert_eq!(out.profile, p);
    assert!(!out.created);
    assert_eq!(g.partition().len(), 1);
    assert_eq!(g.profile_of(&id(IdType::External("liveramp_id".into()), "lr-123")), p);
}

#[test]
fn model_d_blocked_junk_ids_never_link() {
    let mut g = graph();
    let a = g.apply(1, &[user("alice"), anon("null"), id(IdType::DeviceId, "00000000-0000")]);
    let b = g.apply(2, &[user("bob"), anon("null"), id(IdType::DeviceId, "00000000-0000")]);
    assert_eq!(a.blocked.len(), 2);
    assert_ne!(a.profile, b.profile);
    let junk_only = g.apply(3, &[anon("undefined"), user("-1"), id(IdType::External("x".into()), "0")]);
    assert_eq!(junk_only.profile, None);
    assert_eq!(junk_only.blocked.len(), 3);
    assert_eq!(g.profile_of(&anon("null")), None);
    assert_eq!(g.partition(), vec![set(&[user("alice")]), set(&[user("bob")])]);
}

#[test]
fn model_e_one_event_merges_a_chain_of_three_profiles() {
    let mut g = graph();
    let p1 = g.apply(10, &[anon("a1")]).profile.unwrap();
    let p2 = g.apply(11, &[email("ada@example.com")]).profile.unwrap();
    let p3 = g.apply(12, &[user("u1"), id(IdType::DeviceId, "d1")]).profile.unwrap();
    let out = g.apply(13, &[id(IdType::DeviceId, "d1"), anon("a1"), email("ada@example.com"), anon("a9")]);
    assert_eq!(out.profile, Some(p1));
    assert_eq!(out.merged, vec![p2, p3]);
    assert_eq!(out.linked, vec![anon("a9")]);
    assert_eq!(
        g.partition(),
        vec![set(&[anon("a1"), anon("a9"), email("ada@example.com"), user("u1"), id(IdType::DeviceId, "d1")])]
    );
    for p in [p1, p2, p3] {
        assert_eq!(g.resolve(p), Some(p1));
    }
    assert_eq!(g.created_seq(p1), Some(10));
    // Deeper chains compress: merge the survivor into an older profile later (older by creation seq).
    let p0 = g.apply(5, &[user("u0")]).profile.unwrap();
    assert_eq!(g.created_seq(p0), Some(5));
    let out = g.apply(14, &[email("ada@example.com"), id(IdType::Phone, "+14155552671"), anon("a0")]);
    assert_eq!(out.profile, Some(p1));
    assert_eq!(g.partition().len(), 2);
}

#[test]
fn model_merge_picks_the_oldest_and_refuses_conflicting_profiles() {
    let mut g = graph();
    let alice = g.apply(1, &[user("alice"), email("a@example.com")]).profile.unwrap();
    let bob = g.apply(2, &[user("bob"), id(IdType::DeviceId, "tv")]).profile.unwrap();
    let loose = g.apply(3, &[anon("x1")]).profile.unwrap();
    // alice's email (priority 2) is trusted before the TV (device, 5): bob's profile would bring a second user_id.
    let out = g.apply(4, &[id(IdType::DeviceId, "tv"), anon("x1"), email("a@example.com")]);
    assert_eq!(out.profile, Some(alice));
    assert_eq!(out.merged, vec![loose]);
    assert_eq!(
        out.refused,
        vec![Refusal {
            event_seq: 4,
            identifier: id(IdType::DeviceId, "tv"),
            reason: RefusalReason::MergeRefused { other: bob, kind: IdType::UserId },
        }]
    );
    assert_eq!(g.profile_of(&id(IdType::DeviceId, "tv")), Some(bob));
}

/// A tiny deterministic shuffle (no randomness crate in core).
fn permutations(n: usize, rounds: u64) -> Vec<Vec<usize>> {
    (0..rounds)
        .map(|seed| {
            let mut order: Vec<usize> = (0..n).collect();
            let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            for i in (1..n).rev() {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let j = (state >> 33) as usize % (i + 1);
                order.swap(i, j);
            }
            order
        })
        .collect()
}

#[test]
fn model_partition_is_order_independent_without_limit_conflicts() {
    let stream: Vec<Vec<Identifier>> = vec![
        vec![anon("a1")],
        vec![anon("a2"), id(IdType::DeviceId, "d2")],
        vec![user("u1"), anon("a1")],
        vec![user("u1"), anon("a2")],
        vec![email("ada@example.com"), email("ada@example.com").hashed(), id(IdType::DeviceId, "d2")],
        vec![email("ada@example.com").hashed(), id(IdType::External("crm".into()), "c1")],
        vec![user("u2"), anon("b1")],
        vec![anon("b2"), email("bo@example.com")],
        vec![user("u2"), email("bo@example.com"), anon("null")],
        vec![anon("c1")],
        vec![anon("undefined"), anon("c2")],
    ];
    let mut reference = graph();
    for (seq, ids) in stream.iter().enumerate() {
        reference.apply(seq as u64, ids);
    }
    let expected = reference.partition();
    assert_eq!(expected.len(), 4);
    for order in permutations(stream.len(), 50) {
        let mut g = graph();
        for (seq, &i) in order.iter().enumerate() {
            g.apply(seq as u64, &stream[i]);
        }
        assert_eq!(g.partition(), expected, "order {order:?}");
        assert!(order.iter().all(|&i| g.apply(99, &stream[i]).refused.is_empty()));
    }
}

#[test]
fn model_limits_make_the_shared_device_order_dependent() {
    let events = [vec![user("alice"), anon("ipad")], vec![user("bob"), anon("ipad")]];
    let mut forward = graph();
    let mut backward = graph();
    for (seq, ids) in events.iter().enumerate() {
        forward.apply(seq as u64, ids);
    }
    for (seq, ids) in events.iter().rev().enumerate() {
        backward.apply(seq as u64, ids);
    }
    assert_eq!(forward.partition(), vec![set(&[user("alice"), anon("ipad")]), set(&[user("bob")])]);
    assert_eq!(backward.partition(), vec![set(&[user("alice")]), set(&[user("bob"), anon("ipad")])]);
}

#[test]
fn model_is_deterministic_and_ignores_duplicates() {
    let run = || {
        let mut g = graph();
        let outcomes: Vec<Outcome> = vec![
            g.apply(1, &[anon("a1"), anon("a1"), email("x@example.com")]),
            g.apply(2, &[user("u1"), anon("a1")]),
            g.apply(3, &[user("u2"), email("x@example.com")]),
        ];
        (outcomes, g.partition())
    };
    let (first, partition) = run();
    assert_eq!(run(), (first.clone(), partition));
    assert_eq!(first[0].linked, vec![email("x@example.com"), anon("a1")], "priority order");
}
