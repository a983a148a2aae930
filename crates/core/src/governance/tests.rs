use serde_json::{json, Map, Value};

use super::pii::{self, PiiAction, PiiKind};
use super::plan::{self, Decision, Policy, TrackingPlan, ViolationKind};
use super::policy::{Governance, Governed, Outcome, PiiPolicy};

/// The substrings of `text` found as `kind` when detecting every kind.
fn found(text: &str, kind: PiiKind) -> Vec<&str> {
    pii::detect(text, &PiiKind::ALL).into_iter().filter(|f| f.kind == kind).map(|f| &text[f.start..f.end]).collect()
}

fn check_table(kind: PiiKind, cases: &[(&str, &[&str])]) {
    for (text, expected) in cases {
        assert_eq!(found(text, kind), *expected, "{kind} in {text:?}");
    }
}

#[test]
fn email_detector() {
    check_table(
        PiiKind::Email,
        &[
            ("contact ann@example.com today", &["ann@example.com"]),
            ("Ann.Lee+news@mail.example.co.uk.", &["Ann.Lee+news@mail.example.co.uk"]),
            ("<bob_o'neil@x-y.io>", &["neil@x-y.io"]),
            // No dot in the domain: a local mailbox, deliberately not an email.
            ("mail name@localhost now", &[]),
            ("root@server", &[]),
            ("no at sign example.com", &[]),
            ("a@b.c", &[]),
            ("@example.com", &[]),
            ("two: a@x.org, b@y.net", &["a@x.org", "b@y.net"]),
        ],
    );
}

#[test]
fn phone_detector() {
    check_table(
        PiiKind::Phone,
        &[
            ("call +44 20 7946 0958 now", &["+44 20 7946 0958"]),
            ("+1 (415) 555-2671", &["+1 (415) 555-2671"]),
            ("Berlin +49 30 901820.", &["+49 30 901820"]),
            ("+33.1.23.45.67.89", &["+33.1.23.45.67.89"]),
            ("+14155552671", &["+14155552671"]),
            ("+44 (0)20 7946 0958", &["+44 (0)20 7946 0958"]),
            // Not phone-shaped or not international.
            ("order 12345", &[]),
            ("on 2024-01-01", &[]),
            ("4155552671", &[]),
            ("+123", &[]),
            // Too many digits for E.164.
            ("+1 415 555 2671 1234 5", &[]),
            // Leading zero is not a country code.
            ("+0 20 7946 0958", &[]),
            ("x+44 20 7946 0958", &[]),
        ],
    );
}

#[test]
fn card_detector() {
    check_table(
        PiiKind::Card,
        &[
            ("card 4111 1111 1111 1111 exp", &["4111 1111 1111 1111"]),
            ("4111-1111-1111-1111", &["4111-1111-1111-1111"]),
            ("4111111111111111", &["4111111111111111"]),
            ("amex 3782 822463 10005", &["3782 822463 10005"]),
            ("5500000000000004;", &["5500000000000004"]),
            // Card followed by another group in the same digit run.
            ("4111 1111 1111 1111 2024", &["4111 1111 1111 1111"]),
            // Fails Luhn.
            ("4111 1111 1111 1112", &[]),
            ("1234567812345678", &[]),
            // Too short / too long / part of a token.
            ("411111111111", &[]),
            ("41111111111111111111111", &[]),
            ("ref A4111111111111111", &[]),
            ("2024-01-01", &[]),
        ],
    );
}

#[test]
fn iban_detector() {
    check_table(
        PiiKind::Iban,
        &[
            ("pay GB82 WEST 1234 5698 7654 32 please", &["GB82 WEST 1234 5698 7654 32"]),
            ("GB82WEST12345698765432", &["GB82WEST12345698765432"]),
            ("DE89 3704 0044 0532 0130 00 THANKS", &["DE89 3704 0044 0532 0130 00"]),
            // One digit changed: mod-97 fails.
            ("GB82 WEST 1234 5698 7654 33", &[]),
            ("GB83 WEST 1234 5698 7654 32", &[]),
            ("XGB82WEST12345698765432", &[]),
            ("GB82 WEST", &[]),
        ],
    );
}

#[test]
fn ssn_detector() {
    check_table(
        PiiKind::NationalId,
        &[
            ("ssn 123-45-6789.", &["123-45-6789"]),
            ("078-05-1120", &["078-05-1120"]),
            ("000-12-3456", &[]),
            ("666-12-3456", &[]),
            ("900-12-3456", &[]),
            ("999-12-3456", &[]),
            ("123-00-4567", &[]),
            ("123-45-0000", &[]),
            ("1123-45-6789", &[]),
            ("123-45-67890", &[]),
            ("123456789", &[]),
        ],
    );
}

#[test]
fn ip_detector() {
    check_table(
        PiiKind::IpAddress,
        &[
            ("from 192.168.1.20 at", &["192.168.1.20"]),
            ("8.8.8.8", &["8.8.8.8"]),
            ("v6 2001:db8::8a2e:370:7334 ok", &["2001:db8::8a2e:370:7334"]),
            ("fe80::1", &["fe80::1"]),
            ("::ffff:192.0.2.1", &["::ffff:192.0.2.1"]),
            ("256.1.1.1", &[]),
            ("1.2.3", &[]),
            ("1.2.3.4.5", &[]),
            ("at 12:30:45", &[]),
            ("std::net::IpAddr", &[]),
            ("a::", &[]),
            ("2001:db8:::1", &[]),
        ],
    );
}

#[test]
fn detect_only_requested_kinds_sorted_non_overlapping() {
    let text = "ann@example.com paid with 4111 1111 1111 1111 from 10.0.0.1, ssn 123-45-6789";
    let all = pii::detect(text, &PiiKind::ALL);
    let kinds: Vec<PiiKind> = all.iter().map(|f| f.kind).collect();
    assert_eq!(kinds, [PiiKind::Email, PiiKind::Card, PiiKind::IpAddress, PiiKind::NationalId]);
    assert!(all.windows(2).all(|w| w[0].end <= w[1].start));
    let only_cards = pii::detect(text, &[PiiKind::Card]);
    assert_eq!(only_cards.len(), 1);
    assert_eq!(&text[only_cards[0].start..only_cards[0].end], "4111 1111 1111 1111");
    assert!(pii::detect(text, &[]).is_empty());
    // Multi-byte text around a finding: offsets stay on char boundaries.
    let text = "électronique: zoë@exämple.com ou zoe@example.fr";
    let f = pii::detect(text, &[PiiKind::Email]);
    assert_eq!(f.iter().map(|f| &text[f.start..f.end]).collect::<Vec<_>>(), ["zoe@example.fr"]);
}

#[test]
fn long_adversarial_strings_stay_fast() {
    // Long runs of short digit groups, dotted numbers and near-emails: linear scans, no findings.
    let digits = "1 ".repeat(50_000);
    let dots = "1.".repeat(50_000);
    let ats = "a.".repeat(50_000) + "@";
    let start = std::time::Instant::now();
    for text in [&digits, &dots, &ats] {
        let found = pii::detect(text, &PiiKind::ALL);
        assert!(found.iter().all(|f| f.kind != PiiKind::Email && f.kind != PiiKind::IpAddress), "{found:?}");
    }
    assert!(start.elapsed() < std::time::Duration::from_secs(10));
}

fn sample() -> Value {
    json!({
        "type": "track",
        "event": "Note Added",
        "properties": {
            "note": "write to Ann@Example.com or call +44 20 7946 0958",
            "tags": ["card 4111 1111 1111 1111", 42, null, {"deep": "ann@example.com"}],
            "ann@example.com": "key is not scanned",
            "count": 3
        }
    })
}

#[test]
fn apply_allow_counts_and_changes_nothing() {
    let mut v = sample();
    let out = pii::apply(&mut v, &PiiKind::ALL, PiiAction::Allow);
    assert_eq!(v, sample());
    assert!(!out.drop);
    assert_eq!(out.findings_by_kind.get(&PiiKind::Email), Some(&2));
    assert_eq!(out.findings_by_kind.get(&PiiKind::Phone), Some(&1));
    assert_eq!(out.findings_by_kind.get(&PiiKind::Card), Some(&1));
    assert_eq!(out.total(), 4);
}

#[test]
fn apply_hash_is_normalized_and_deterministic() {
    let mut v = sample();
    let out = pii::apply(&mut v, &[PiiKind::Email, PiiKind::Phone, PiiKind::Card], PiiAction::Hash);
    assert!(!out.drop);
    assert_eq!(out.total(), 4);
    let email_hash = format!("sha256:{}", crate::sha256_hex(b"ann@example.com"));
    let phone_hash = format!("sha256:{}", crate::sha256_hex(b"+442079460958"));
    let card_hash = format!("sha256:{}", crate::sha256_hex(b"4111111111111111"));
    let p = &v["properties"];
    assert_eq!(p["note"], json!(format!("write to {email_hash} or call {phone_hash}")));
    assert_eq!(p["tags"][0], json!(format!("card {card_hash}")));
    assert_eq!(p["tags"][1], json!(42));
    // `Ann@Example.com` and `ann@example.com` hash the same.
    assert_eq!(p["tags"][3]["deep"], json!(email_hash));
    assert_eq!(p["ann@example.com"], json!("key is not scanned"));
    let raw = serde_json::to_string(&v["properties"]["tags"]).unwrap() + p["note"].as_str().unwrap();
    assert!(!raw.contains("Example.com") && !raw.contains("4111") && !raw.contains("7946"));
    // Same input, same output.
    let mut again = sample();
    pii::apply(&mut again, &[PiiKind::Email, PiiKind::Phone, PiiKind::Card], PiiAction::Hash);
    assert_eq!(again, v);
    // Phone normalization: the `(0)` trunk prefix and separators go.
    let mut s = json!("+44 (0)20 7946-0958");
    pii::apply(&mut s, &[PiiKind::Phone], PiiAction::Hash);
    assert_eq!(s, json!(phone_hash));
    // IBAN normalization drops spaces.
    let mut s = json!("GB82 WEST 1234 5698 7654 32");
    pii::apply(&mut s, &[PiiKind::Iban], PiiAction::Hash);
    assert_eq!(s, json!(format!("sha256:{}", crate::sha256_hex(b"GB82WEST12345698765432"))));
}

#[test]
fn apply_redact_and_drop_event() {
    let mut v = sample();
    let out = pii::apply(&mut v, &[PiiKind::Email, PiiKind::Card], PiiAction::Redact);
    assert!(!out.drop);
    assert_eq!(v["properties"]["note"], json!("write to [REDACTED:email] or call +44 20 7946 0958"));
    assert_eq!(v["properties"]["tags"][0], json!("card [REDACTED:card]"));
    assert_eq!(v["properties"]["tags"][3]["deep"], json!("[REDACTED:email]"));

    let mut v = sample();
    let out = pii::apply(&mut v, &[PiiKind::Phone], PiiAction::DropEvent);
    assert!(out.drop);
    assert_eq!(out.findings_by_kind.get(&PiiKind::Phone), Some(&1));
    assert_eq!(v, sample());

    let mut clean = json!({"properties": {"note": "nothing here 12345"}});
    let out = pii::apply(&mut clean, &PiiKind::ALL, PiiAction::DropEvent);
    assert!(!out.drop);
    assert_eq!(out.total(), 0);
}

#[test]
fn pii_config_names_are_snake_case() {
    assert_eq!(serde_json::to_value(PiiKind::NationalId).unwrap(), json!("national_id"));
    assert_eq!(serde_json::to_value(PiiAction::DropEvent).unwrap(), json!("drop_event"));
    let k: PiiKind = serde_json::from_value(json!("ip_address")).unwrap();
    assert_eq!(k, PiiKind::IpAddress);
}

// ---- tracking plans ----

fn plan(unplanned: Policy, violations: Policy) -> TrackingPlan {
    serde_json::from_value(json!({
        "version": "v3",
        "events": {
            "Order Completed": {
                "type": "object",
                "properties": {
                    "order_id": {"type": "string"},
                    "total": {"type": "number"},
                    "address": {"type": "object", "properties": {"zip": {"type": "string"}}},
                    "currency": {"enum": ["EUR", "USD"]}
                },
                "required": ["order_id", "total"],
                "additionalProperties": false
            },
            "Signed Up": {"type": "object", "properties": {"plan": {"type": "string"}}}
        },
        "identify": {
            "type": "object",
            "properties": {"email": {"type": "string"}, "age": {"type": "integer"}},
            "required": ["email"]
        },
        "unplanned": unplanned,
        "violations": violations
    }))
    .unwrap()
}

fn event(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn kinds_and_paths(verdict: &plan::Verdict) -> Vec<(ViolationKind, &str)> {
    verdict.violations.iter().map(|v| (v.kind, v.path.as_str())).collect()
}

#[test]
fn valid_events_pass() {
    let p = plan(Policy::Quarantine, Policy::Quarantine).compile().unwrap();
    assert_eq!(p.version(), "v3");
    let e = event(json!({"type": "track", "event": "Order Completed", "properties": {"order_id": "o1", "total": 9.5}}));
    let v = p.check(&e);
    assert_eq!(v.action, Decision::Pass);
    assert!(v.violations.is_empty());
    // Other event types pass unchecked.
    for t in ["page", "screen", "group", "alias"] {
        assert_eq!(p.check(&event(json!({"type": t, "properties": {"x": 1}}))).action, Decision::Pass);
    }
    // Identify with valid traits.
    let e = event(json!({"type": "identify", "traits": {"email": "a@b.co", "age": 30}}));
    assert_eq!(p.check(&e).action, Decision::Pass);
}

#[test]
fn unplanned_event_follows_unplanned_policy() {
    let e = event(json!({"type": "track", "event": "Mystery", "properties": {"a": 1, "b": 2}}));
    let unplanned = [(ViolationKind::UnplannedEvent, "/event")];

    let v = plan(Policy::Allow, Policy::Quarantine).compile().unwrap().check(&e);
    assert_eq!(kinds_and_paths(&v), unplanned);
    assert_eq!(v.action, Decision::PassWithViolations);

    let v = plan(Policy::Quarantine, Policy::Allow).compile().unwrap().check(&e);
    assert_eq!(kinds_and_paths(&v), unplanned);
    assert_eq!(v.action, Decision::Quarantine);

    let v = plan(Policy::DropProperties, Policy::Allow).compile().unwrap().check(&e);
    assert_eq!(v.action, Decision::DropProperties(vec!["a".into(), "b".into()]));
    let mut e2 = e.clone();
    let Decision::DropProperties(names) = &v.action else { unreachable!() };
    assert_eq!(plan::remove_properties(&mut e2, names), 2);
    assert_eq!(e2["properties"], json!({}));
}

#[test]
fn violation_types_are_mapped_with_pointer_paths() {
    let p = plan(Policy::Allow, Policy::Allow).compile().unwrap();
    let e = event(json!({
        "type": "track", "event": "Order Completed",
        "properties": {"total": "12", "coupon": "X", "address": {"zip": 75001}, "currency": "GBP"}
    }));
    let v = p.check(&e);
    assert_eq!(v.action, Decision::PassWithViolations);
    let mut got = kinds_and_paths(&v);
    got.sort();
    assert_eq!(
        got,
        [
            (ViolationKind::MissingRequired, "/properties/order_id"),
            (ViolationKind::WrongType, "/properties/address/zip"),
            (ViolationKind::WrongType, "/properties/total"),
            (ViolationKind::AdditionalProperty, "/properties/coupon"),
            (ViolationKind::Other, "/properties/currency"),
        ]
    );
    // No values in violations.
    let text = serde_json::to_string(&v).unwrap();
    assert!(!text.contains("75001") && !text.contains("GBP") && !text.contains("\"12\""));

    // Missing `properties` is checked as an empty object.
    let v = p.check(&event(json!({"type": "track", "event": "Order Completed"})));
    assert_eq!(v.violations.len(), 2);
    assert!(v.violations.iter().all(|v| v.kind == ViolationKind::MissingRequired));

    // Identify traits.
    let v = p.check(&event(json!({"type": "identify", "traits": {"age": "old"}})));
    let mut got = kinds_and_paths(&v);
    got.sort();
    assert_eq!(got, [(ViolationKind::MissingRequired, "/traits/email"), (ViolationKind::WrongType, "/traits/age")]);
}

#[test]
fn violations_policy_quarantine_and_drop_properties() {
    let e = event(json!({
        "type": "track", "event": "Order Completed",
        "properties": {"order_id": "o1", "total": "12", "coupon": "X", "a/b": 1, "address": {"zip": 1}}
    }));
    let v = plan(Policy::Allow, Policy::Quarantine).compile().unwrap().check(&e);
    assert_eq!(v.action, Decision::Quarantine);
    assert_eq!(v.violations.len(), 4);

    let v = plan(Policy::Quarantine, Policy::DropProperties).compile().unwrap().check(&e);
    assert!(kinds_and_paths(&v).contains(&(ViolationKind::AdditionalProperty, "/properties/a~1b")));
    let expected: Vec<String> = ["a/b", "address", "coupon", "total"].map(String::from).to_vec();
    assert_eq!(v.action, Decision::DropProperties(expected.clone()));
    let mut e2 = e.clone();
    assert_eq!(plan::remove_properties(&mut e2, &expected), 4);
    assert_eq!(e2["properties"], json!({"order_id": "o1"}));

    // Only a missing required property: dropping cannot fix it, the event passes with the violation.
    let e = event(json!({"type": "track", "event": "Order Completed", "properties": {"order_id": "o1"}}));
    let v = plan(Policy::Allow, Policy::DropProperties).compile().unwrap().check(&e);
    assert_eq!(kinds_and_paths(&v), [(ViolationKind::MissingRequired, "/properties/total")]);
    assert_eq!(v.action, Decision::PassWithViolations);

    // Open schema: extra properties are fine.
    let e = event(json!({"type": "track", "event": "Signed Up", "properties": {"plan": "pro", "extra": true}}));
    assert_eq!(plan(Policy::Allow, Policy::DropProperties).compile().unwrap().check(&e).action, Decision::Pass);

    // Identify under drop_properties removes from traits.
    let mut e = event(json!({"type": "identify", "traits": {"email": "x@y.co", "age": "old"}}));
    let v = plan(Policy::Allow, Policy::DropProperties).compile().unwrap().check(&e);
    assert_eq!(v.action, Decision::DropProperties(vec!["age".into()]));
    assert_eq!(plan::remove_properties(&mut e, &["age".into()]), 1);
    assert_eq!(e["traits"], json!({"email": "x@y.co"}));
}

#[test]
fn identify_without_schema_passes() {
    let mut p = plan(Policy::Quarantine, Policy::Quarantine);
    p.identify = None;
    let p = p.compile().unwrap();
    assert_eq!(p.check(&event(json!({"type": "identify", "traits": {"age": "x"}}))).action, Decision::Pass);
}

#[test]
fn invalid_schema_is_refused_with_its_path() {
    let mut p = plan(Policy::Allow, Policy::Allow);
    p.events.insert("Order Completed".into(), json!({"type": "strng"}));
    let err = p.compile().unwrap_err();
    assert_eq!(err.path, r#"events."Order Completed""#);
    assert!(err.to_string().starts_with(r#"invalid JSON Schema at events."Order Completed": "#), "{err}");

    let mut p = plan(Policy::Allow, Policy::Allow);
    p.identify = Some(json!({"properties": {"age": {"minimum": "ten"}}}));
    assert_eq!(p.compile().unwrap_err().path, "identify");

    // Remote references are refused, never fetched.
    let mut p = plan(Policy::Allow, Policy::Allow);
    p.events.insert("Remote".into(), json!({"$ref": "https://example.com/schema.json"}));
    assert_eq!(p.compile().unwrap_err().path, "events.\"Remote\"");
}

#[test]
fn plan_config_shape() {
    let p: TrackingPlan = serde_json::from_value(json!({"version": "1"})).unwrap();
    assert_eq!(p.unplanned, Policy::Allow);
    assert_eq!(p.violations, Policy::Allow);
    assert!(p.events.is_empty() && p.identify.is_none());
    assert!(serde_json::from_value::<TrackingPlan>(json!({"version": "1", "unplanned": "drop_properties"})).is_ok());
    assert!(serde_json::from_value::<TrackingPlan>(json!({"version": "1", "unplanned": "block"})).is_err());
    assert!(serde_json::from_value::<TrackingPlan>(json!({"version": "1", "evnts": {}})).is_err());
}

// ---- governance (minimization, PII, plan) through `Governance::govern` ----

fn pii_policy(detect: &[PiiKind], action: PiiAction, allow: Option<&[&str]>) -> PiiPolicy {
    PiiPolicy {
        detect: detect.to_vec(),
        action,
        allow_properties: allow.map(|names| names.iter().map(|n| n.to_string()).collect()),
    }
}

fn govern(g: &Governance, v: Value) -> (Governed, Value) {
    let mut e = event(v);
    let out = g.govern(&mut e);
    (out, Value::Object(e))
}

fn email_hash(raw: &str) -> String {
    format!("sha256:{}", crate::sha256_hex(raw.trim().to_lowercase().as_bytes()))
}

#[test]
fn governance_noop_accepts_unchanged() {
    for g in [Governance::new(None, None).unwrap(), Governance::default()] {
        assert!(g.is_noop());
        assert_eq!(g.plan_version(), None);
        let original = json!({"type": "track", "event": "E", "userId": "ann@example.com",
            "properties": {"note": "ann@example.com", "card": "4111 1111 1111 1111"}});
        let (out, e) = govern(&g, original.clone());
        assert_eq!(e, original);
        assert_eq!(out.outcome, Outcome::Accept);
        assert!(out.violations.is_empty() && out.dropped_properties == 0 && out.pii.total() == 0);
    }
    let p = plan(Policy::Allow, Policy::Allow);
    assert!(!Governance::new(Some(&p), None).unwrap().is_noop());
    assert!(!Governance::new(None, Some(&pii_policy(&[PiiKind::Email], PiiAction::Allow, None))).unwrap().is_noop());
}

#[test]
fn governance_refuses_an_invalid_plan_with_its_path() {
    let mut p = plan(Policy::Allow, Policy::Allow);
    p.events.insert("Order Completed".into(), json!({"type": "strng"}));
    let err = Governance::new(Some(&p), None).unwrap_err();
    assert_eq!(err.path, r#"events."Order Completed""#);
}

#[test]
fn governance_plan_policies_table() {
    let unplanned = json!({"type": "track", "event": "Mystery", "properties": {"a": 1, "b": 2}});
    let invalid = json!({"type": "track", "event": "Order Completed",
        "properties": {"order_id": "o1", "total": "12", "coupon": "X"}});
    // (unplanned policy, violations policy, event, outcome, dropped, properties after, number of violations)
    let quarantined = Outcome::Quarantine { plan_version: "v3".into() };
    let cases = [
        (Policy::Allow, Policy::Quarantine, &unplanned, Outcome::Accept, 0, json!({"a": 1, "b": 2}), 1),
        (Policy::DropProperties, Policy::Quarantine, &unplanned, Outcome::Accept, 2, json!({}), 1),
        (Policy::Quarantine, Policy::Allow, &unplanned, quarantined.clone(), 0, json!({"a": 1, "b": 2}), 1),
        (
            Policy::Quarantine,
            Policy::Allow,
            &invalid,
            Outcome::Accept,
            0,
            json!({"order_id": "o1", "total": "12", "coupon": "X"}),
            2,
        ),
        (Policy::Quarantine, Policy::DropProperties, &invalid, Outcome::Accept, 2, json!({"order_id": "o1"}), 2),
        (
            Policy::Allow,
            Policy::Quarantine,
            &invalid,
            quarantined,
            0,
            json!({"order_id": "o1", "total": "12", "coupon": "X"}),
            2,
        ),
    ];
    for (unplanned_policy, violations_policy, input, outcome, dropped, properties, violations) in cases {
        let g = Governance::new(Some(&plan(unplanned_policy, violations_policy)), None).unwrap();
        assert_eq!(g.plan_version(), Some("v3"));
        let (out, e) = govern(&g, input.clone());
        let case = format!("{unplanned_policy:?}/{violations_policy:?} on {}", input["event"]);
        assert_eq!(out.outcome, outcome, "{case}");
        assert_eq!(out.dropped_properties, dropped, "{case}");
        assert_eq!(e["properties"], properties, "{case}");
        assert_eq!(out.violations.len(), violations, "{case}");
        assert_eq!(out.pii.total(), 0, "{case}");
    }
    // A valid event passes without violations.
    let g = Governance::new(Some(&plan(Policy::Quarantine, Policy::Quarantine)), None).unwrap();
    let ok = json!({"type": "track", "event": "Order Completed", "properties": {"order_id": "o1", "total": 1}});
    let (out, e) = govern(&g, ok.clone());
    assert_eq!((out.outcome, out.violations.len(), e), (Outcome::Accept, 0, ok));
}

#[test]
fn governance_pii_actions_table() {
    let input = json!({"type": "track", "event": "Note Added", "userId": "u1",
        "properties": {"note": "mail Ann@Example.com", "n": 1}});
    let cases = [
        (PiiAction::Allow, Outcome::Accept, json!("mail Ann@Example.com")),
        (PiiAction::Hash, Outcome::Accept, json!(format!("mail {}", email_hash("ann@example.com")))),
        (PiiAction::Redact, Outcome::Accept, json!("mail [REDACTED:email]")),
        (PiiAction::DropEvent, Outcome::Drop { reason: "pii" }, json!("mail Ann@Example.com")),
    ];
    for (action, outcome, note) in cases {
        let g = Governance::new(None, Some(&pii_policy(&[PiiKind::Email, PiiKind::Phone], action, None))).unwrap();
        let (out, e) = govern(&g, input.clone());
        assert_eq!(out.outcome, outcome, "{action:?}");
        assert_eq!(e["properties"]["note"], note, "{action:?}");
        assert_eq!(e["properties"]["n"], json!(1));
        assert_eq!(out.pii.findings_by_kind.get(&PiiKind::Email), Some(&1), "{action:?}");
        assert_eq!(out.pii.total(), 1, "{action:?}");
        assert_eq!(out.pii.drop, action == PiiAction::DropEvent);
    }
    // No finding: drop_event accepts.
    let g = Governance::new(None, Some(&pii_policy(&PiiKind::ALL, PiiAction::DropEvent, None))).unwrap();
    let (out, _) = govern(&g, json!({"type": "track", "event": "E", "properties": {"note": "nothing 12345"}}));
    assert_eq!(out.outcome, Outcome::Accept);
}

#[test]
fn governance_drop_event_stops_before_the_plan() {
    let g = Governance::new(
        Some(&plan(Policy::Quarantine, Policy::Quarantine)),
        Some(&pii_policy(&[PiiKind::Email], PiiAction::DropEvent, None)),
    )
    .unwrap();
    let (out, _) = govern(&g, json!({"type": "track", "event": "Mystery", "properties": {"to": "a@example.com"}}));
    assert_eq!(out.outcome, Outcome::Drop { reason: "pii" });
    assert!(out.violations.is_empty());
}

#[test]
fn governance_scans_free_text_fields_only() {
    let raw = "Ann@Example.com";
    let hashed = email_hash(raw);
    let g = Governance::new(
        None,
        Some(&pii_policy(&[PiiKind::Email, PiiKind::IpAddress, PiiKind::Phone], PiiAction::Hash, None)),
    )
    .unwrap();
    let (out, e) = govern(
        &g,
        json!({
            "type": "track", "event": "ann@example.com", "messageId": "ann@example.com",
            "userId": raw, "anonymousId": raw, "timestamp": "2025-01-01T00:00:00Z",
            "properties": {"note": format!("write to {raw}"), "nested": [{"x": raw}]},
            "context": {
                "ip": "203.0.113.9",
                "userAgent": "agent ann@example.com",
                "library": {"name": "ann@example.com"},
                "traits": {"email": raw},
                "page": {"url": "https://example.com/?e=ann@example.com", "referrer": ""},
                "campaign": {"content": "+44 20 7946 0958"},
                "referrer": {"id": "ann@example.com"}
            }
        }),
    );
    assert_eq!(out.outcome, Outcome::Accept);
    // Hashed: userId, properties (any depth), context.traits/page/campaign/referrer.
    assert_eq!(e["userId"], json!(hashed));
    assert_eq!(e["properties"]["note"], json!(format!("write to {hashed}")));
    assert_eq!(e["properties"]["nested"][0]["x"], json!(hashed));
    assert_eq!(e["context"]["traits"]["email"], json!(hashed));
    assert_eq!(e["context"]["page"]["url"], json!(format!("https://example.com/?e={hashed}")));
    assert_eq!(e["context"]["campaign"]["content"], json!(format!("sha256:{}", crate::sha256_hex(b"+442079460958"))));
    assert_eq!(e["context"]["referrer"]["id"], json!(hashed));
    // Untouched: anonymousId, messageId, event, timestamps, request metadata and SDK context.
    assert_eq!(e["anonymousId"], json!(raw));
    assert_eq!(e["messageId"], json!("ann@example.com"));
    assert_eq!(e["event"], json!("ann@example.com"));
    assert_eq!(e["context"]["ip"], json!("203.0.113.9"));
    assert_eq!(e["context"]["userAgent"], json!("agent ann@example.com"));
    assert_eq!(e["context"]["library"]["name"], json!("ann@example.com"));
    assert_eq!(out.pii.findings_by_kind.get(&PiiKind::Email), Some(&6));
    assert_eq!(out.pii.findings_by_kind.get(&PiiKind::Phone), Some(&1));
    assert_eq!(out.pii.findings_by_kind.get(&PiiKind::IpAddress), None);
    // Nothing the caller may log carries a raw value.
    assert!(!format!("{out:?}").to_lowercase().contains("example.com"));
}

#[test]
fn governance_identify_traits_mirrored_in_context_are_counted_once() {
    let g = Governance::new(None, Some(&pii_policy(&[PiiKind::Email], PiiAction::Hash, None))).unwrap();
    let traits = json!({"email": "ann@example.com", "name": "Ann"});
    let (out, e) =
        govern(&g, json!({"type": "identify", "userId": "u1", "traits": traits, "context": {"traits": traits}}));
    assert_eq!(out.pii.total(), 1);
    assert_eq!(e["traits"]["email"], json!(email_hash("ann@example.com")));
    assert_eq!(e["context"]["traits"], e["traits"]);
    // Different context traits are scanned on their own.
    let (out, e) = govern(
        &g,
        json!({"type": "identify", "userId": "u1", "traits": traits, "context": {"traits": {"email": "b@example.org"}}}),
    );
    assert_eq!(out.pii.total(), 2);
    assert_eq!(e["context"]["traits"]["email"], json!(email_hash("b@example.org")));
}

#[test]
fn governance_allow_list_minimization() {
    let g = Governance::new(None, Some(&pii_policy(&[PiiKind::Email], PiiAction::Allow, Some(&["plan", "email"]))))
        .unwrap();
    for t in ["track", "page", "screen"] {
        let (out, e) = govern(
            &g,
            json!({"type": t, "event": "E", "name": "N", "properties": {"plan": "pro", "secret": 1, "other": {"plan": 2}}}),
        );
        assert_eq!(e["properties"], json!({"plan": "pro"}), "{t}");
        assert_eq!(out.dropped_properties, 2, "{t}");
    }
    // Identify: traits and the same names of context.traits; a name removed from both counts once.
    let (out, e) = govern(
        &g,
        json!({"type": "identify", "userId": "u1",
            "traits": {"email": "a@example.com", "name": "Ann", "age": 3},
            "context": {"traits": {"email": "a@example.com", "name": "Ann", "ssn": "x"}, "ip": "203.0.113.9"}}),
    );
    assert_eq!(e["traits"], json!({"email": "a@example.com"}));
    assert_eq!(e["context"]["traits"], json!({"email": "a@example.com"}));
    assert_eq!(e["context"]["ip"], json!("203.0.113.9"));
    assert_eq!(out.dropped_properties, 3);
    // Other types (a group's traits describe the group) are not minimized.
    let group = json!({"type": "group", "groupId": "g", "traits": {"industry": "x"}, "properties": {"a": 1}});
    let (out, e) = govern(&g, group.clone());
    assert_eq!((e, out.dropped_properties), (group, 0));
    // Track events keep their context.traits.
    let (_, e) = govern(&g, json!({"type": "track", "event": "E", "context": {"traits": {"name": "Ann"}}}));
    assert_eq!(e["context"]["traits"], json!({"name": "Ann"}));
}

#[test]
fn governance_quarantines_the_minimized_and_hashed_event() {
    let g = Governance::new(
        Some(&plan(Policy::Quarantine, Policy::Quarantine)),
        Some(&pii_policy(&[PiiKind::Email], PiiAction::Hash, Some(&["order_id", "total", "note"]))),
    )
    .unwrap();
    let (out, e) = govern(
        &g,
        json!({"type": "track", "event": "Order Completed", "userId": "ann@example.com",
            "properties": {"order_id": "o1", "total": "12", "note": "ann@example.com", "coupon": "X"}}),
    );
    assert_eq!(out.outcome, Outcome::Quarantine { plan_version: "v3".into() });
    assert_eq!(out.dropped_properties, 1);
    assert_eq!(out.pii.total(), 2);
    // `coupon` went before the plan saw the event; `note` is not in the schema (additionalProperties: false).
    let mut got = out.violations.iter().map(|v| (v.kind, v.path.as_str())).collect::<Vec<_>>();
    got.sort();
    assert_eq!(
        got,
        [(ViolationKind::WrongType, "/properties/total"), (ViolationKind::AdditionalProperty, "/properties/note")]
    );
    let hashed = email_hash("ann@example.com");
    assert_eq!(e["userId"], json!(hashed));
    assert_eq!(e["properties"], json!({"order_id": "o1", "total": "12", "note": hashed}));
    // Minimization and drop_properties add up.
    let g = Governance::new(
        Some(&plan(Policy::Quarantine, Policy::DropProperties)),
        Some(&pii_policy(&[PiiKind::Email], PiiAction::Hash, Some(&["order_id", "total", "note"]))),
    )
    .unwrap();
    let (out, e) = govern(
        &g,
        json!({"type": "track", "event": "Order Completed",
            "properties": {"order_id": "o1", "total": "12", "note": "n", "coupon": "X"}}),
    );
    assert_eq!(out.outcome, Outcome::Accept);
    assert_eq!(out.dropped_properties, 3);
    assert_eq!(e["properties"], json!({"order_id": "o1"}));
}
