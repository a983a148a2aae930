use serde_json::{json, Value};

use super::request::{parse_create, Api, FieldError, IdentityFormat};
use super::*;
use crate::identity::IdType;

const ID: &str = "a7551968-d5d6-44b2-9831-815ac9017798";

fn good() -> Value {
    json!({
        "regulation": "gdpr",
        "subject_request_id": ID,
        "subject_request_type": "erasure",
        "submitted_time": "2018-10-02T15:00:00Z",
        "subject_identities": [
            {"identity_type": "email", "identity_value": " JohnDoe@Example.com ", "identity_format": "raw"}
        ],
        "api_version": "2.0",
        "status_callback_urls": ["https://examplecontroller.com/opendsr/callbacks"],
        "extensions": {"example-processor.com": {"foo-processor-custom-id": 123456}},
    })
}

fn parse(v: &Value, api: Api) -> Result<CreateRequest, Vec<FieldError>> {
    parse_create(&serde_json::to_vec(v).expect("json"), api, Some("1"))
}

/// Applies `edit` to the good request and returns the problems found (none when it is valid).
fn problems(edit: impl FnOnce(&mut serde_json::Map<String, Value>), api: Api) -> Vec<(String, &'static str)> {
    let mut v = good();
    edit(v.as_object_mut().expect("object"));
    match parse(&v, api) {
        Ok(_) => Vec::new(),
        Err(errs) => errs.into_iter().map(|e| (e.location, e.reason)).collect(),
    }
}

#[test]
fn the_spec_example_parses_and_normalizes_the_identity() {
    let r = parse(&good(), Api::V2).expect("valid");
    assert_eq!(r.subject_request_id, ID);
    assert_eq!(r.kind, RequestType::Erasure);
    assert_eq!(r.regulation, Regulation::Gdpr);
    assert_eq!(r.api_version.as_deref(), Some("2.0"));
    assert_eq!(r.status_callback_urls, ["https://examplecontroller.com/opendsr/callbacks"]);
    assert_eq!(r.identities.len(), 1);
    assert_eq!(r.identities[0].identifier.kind, IdType::Email);
    assert_eq!(r.identities[0].identifier.value, "johndoe@example.com");
    assert!(!r.skip_waiting_period);
}

#[test]
fn every_required_field_is_required_and_checked() {
    type Edit = fn(&mut serde_json::Map<String, Value>);
    let table: Vec<(&str, Edit, &str, &str)> = vec![
        ("no regulation", |m| drop(m.remove("regulation")), "regulation", "required"),
        ("unknown regulation", |m| drop(m.insert("regulation".into(), json!("lgpd"))), "regulation", "invalid"),
        ("regulation not a string", |m| drop(m.insert("regulation".into(), json!(1))), "regulation", "invalid"),
        ("no id", |m| drop(m.remove("subject_request_id")), "subject_request_id", "required"),
        (
            "id not a uuid",
            |m| drop(m.insert("subject_request_id".into(), json!("req-1"))),
            "subject_request_id",
            "invalid",
        ),
        (
            "id in upper case",
            |m| drop(m.insert("subject_request_id".into(), json!(ID.to_uppercase()))),
            "subject_request_id",
            "invalid",
        ),
        (
            "id of version 1",
            |m| drop(m.insert("subject_request_id".into(), json!("a7551968-d5d6-11e8-9831-815ac9017798"))),
            "subject_request_id",
            "invalid",
        ),
        ("no type", |m| drop(m.remove("subject_request_type")), "subject_request_type", "required"),
        (
            "unknown type",
            |m| drop(m.insert("subject_request_type".into(), json!("rectification"))),
            "subject_request_type",
            "invalid",
        ),
        ("no submitted_time", |m| drop(m.remove("submitted_time")), "submitted_time", "required"),
        (
            "submitted_time not RFC 3339",
            |m| drop(m.insert("submitted_time".into(), json!("02/10/2018"))),
            "submitted_time",
            "invalid",
        ),
        ("no identities", |m| drop(m.remove("subject_identities")), "subject_identities", "required"),
        (
            "empty identities",
            |m| drop(m.insert("subject_identities".into(), json!([]))),
            "subject_identities",
            "required",
        ),
        (
            "identities not a list",
            |m| drop(m.insert("subject_identities".into(), json!("x"))),
            "subject_identities",
            "invalid",
        ),
        (
            "identity not an object",
            |m| drop(m.insert("subject_identities".into(), json!(["x"]))),
            "subject_identities[0]",
            "invalid",
        ),
        (
            "identity without type",
            |m| {
                drop(m.insert(
                    "subject_identities".into(),
                    json!([{"identity_value": "a@b.co", "identity_format": "raw"}]),
                ))
            },
            "subject_identities[0].identity_type",
            "required",
        ),
        (
            "identity without value",
            |m| {
                drop(
                    m.insert(
                        "subject_identities".into(),
                        json!([{"identity_type": "email", "identity_format": "raw"}]),
                    ),
                )
            },
            "subject_identities[0].identity_value",
            "required",
        ),
        (
            "identity without format",
            |m| {
                drop(m.insert(
                    "subject_identities".into(),
                    json!([{"identity_type": "email", "identity_value": "a@b.co"}]),
                ))
            },
            "subject_identities[0].identity_format",
            "required",
        ),
        (
            "unknown format",
            |m| {
                drop(m.insert(
                    "subject_identities".into(),
                    json!([{"identity_type": "email", "identity_value": "a@b.co", "identity_format": "base64"}]),
                ))
            },
            "subject_identities[0].identity_format",
            "invalid",
        ),
        (
            "unknown identity type",
            |m| {
                drop(m.insert(
                    "subject_identities".into(),
                    json!([{"identity_type": "passport", "identity_value": "X1", "identity_format": "raw"}]),
                ))
            },
            "subject_identities[0].identity_type",
            "unsupported",
        ),
        (
            "md5 email (never stored)",
            |m| {
                drop(m.insert(
                    "subject_identities".into(),
                    json!([{"identity_type": "email", "identity_value": "0cc175b9c0f1b6a831c399e269772661", "identity_format": "md5"}]),
                ))
            },
            "subject_identities[0].identity_format",
            "unsupported",
        ),
        (
            "sha1 email (never stored)",
            |m| {
                drop(m.insert(
                    "subject_identities".into(),
                    json!([{"identity_type": "email", "identity_value": "86f7e437faa5a7fce15d1ddcb9eaeaea377667b8", "identity_format": "sha1"}]),
                ))
            },
            "subject_identities[0].identity_format",
            "unsupported",
        ),
        (
            "sha256 of a customer id (never stored)",
            |m| {
                drop(m.insert(
                    "subject_identities".into(),
                    json!([{"identity_type": "controller_customer_id", "identity_value": "a".repeat(64), "identity_format": "sha256"}]),
                ))
            },
            "subject_identities[0].identity_format",
            "unsupported",
        ),
        (
            "malformed sha256",
            |m| {
                drop(m.insert(
                    "subject_identities".into(),
                    json!([{"identity_type": "email", "identity_value": "abc", "identity_format": "sha256"}]),
                ))
            },
            "subject_identities[0].identity_value",
            "invalid",
        ),
        (
            "not an email",
            |m| {
                drop(m.insert(
                    "subject_identities".into(),
                    json!([{"identity_type": "email", "identity_value": "not-an-email", "identity_format": "raw"}]),
                ))
            },
            "subject_identities[0].identity_value",
            "invalid",
        ),
        (
            "value not a string",
            |m| {
                drop(m.insert(
                    "subject_identities".into(),
                    json!([{"identity_type": "email", "identity_value": 42, "identity_format": "raw"}]),
                ))
            },
            "subject_identities[0].identity_value",
            "invalid",
        ),
        (
            "too many identities",
            |m| {
                let many: Vec<Value> = (0..33)
                    .map(|i| json!({"identity_type": "controller_customer_id", "identity_value": format!("u{i}"), "identity_format": "raw"}))
                    .collect();
                drop(m.insert("subject_identities".into(), Value::Array(many)))
            },
            "subject_identities",
            "too_large",
        ),
        ("api_version malformed", |m| drop(m.insert("api_version".into(), json!("two"))), "api_version", "invalid"),
        (
            "callback not a list",
            |m| drop(m.insert("status_callback_urls".into(), json!("https://x.example"))),
            "status_callback_urls",
            "invalid",
        ),
        (
            "callback not http",
            |m| drop(m.insert("status_callback_urls".into(), json!(["ftp://x.example/cb"]))),
            "status_callback_urls[0]",
            "invalid",
        ),
        (
            "callback with credentials",
            |m| drop(m.insert("status_callback_urls".into(), json!(["https://user:pw@x.example/cb"]))),
            "status_callback_urls[0]",
            "invalid",
        ),
        (
            "too many callbacks",
            |m| {
                let urls: Vec<String> = (0..11).map(|i| format!("https://x.example/{i}")).collect();
                drop(m.insert("status_callback_urls".into(), json!(urls)))
            },
            "status_callback_urls",
            "too_large",
        ),
        ("extensions not an object", |m| drop(m.insert("extensions".into(), json!([]))), "extensions", "invalid"),
        (
            "skip_waiting_period not a bool",
            |m| drop(m.insert("extensions".into(), json!({"opendsr.mparticle.com": {"skip_waiting_period": "yes"}}))),
            "extensions.opendsr.mparticle.com.skip_waiting_period",
            "invalid",
        ),
        ("group_id empty", |m| drop(m.insert("group_id".into(), json!(""))), "group_id", "invalid"),
    ];
    for (name, edit, location, reason) in table {
        let found = problems(edit, Api::V2);
        assert!(
            found.iter().any(|(l, r)| l == location && *r == reason),
            "{name}: expected {reason} at {location}, got {found:?}"
        );
    }
}

#[test]
fn every_problem_is_reported_at_once_and_no_value_is_echoed() {
    let body = json!({
        "subject_request_id": "nope",
        "subject_identities": [
            {"identity_type": "email", "identity_value": "secret-person@@example.com", "identity_format": "raw"},
            {"identity_type": "phone_number", "identity_value": "+1 (415) 555-0199xx", "identity_format": "raw"}
        ],
    });
    let errs = parse(&body, Api::V2).expect_err("invalid");
    let locations: Vec<&str> = errs.iter().map(|e| e.location.as_str()).collect();
    for want in [
        "regulation",
        "subject_request_id",
        "subject_request_type",
        "submitted_time",
        "subject_identities[0].identity_value",
        "subject_identities[1].identity_value",
    ] {
        assert!(locations.contains(&want), "{want} missing from {locations:?}");
    }
    let text = serde_json::to_string(&request::error_body(400, "invalid_request", "bad", &errs)).expect("json");
    assert!(!text.contains("secret-person") && !text.contains("555"), "{text}");
}

#[test]
fn bodies_that_are_not_requests_are_refused() {
    for (body, reason) in [
        (b"{not json".to_vec(), "parse_error"),
        (b"[1,2]".to_vec(), "invalid"),
        (vec![b' '; request::MAX_BODY_BYTES + 1], "too_large"),
    ] {
        let errs = parse_create(&body, Api::V2, None).expect_err("refused");
        assert_eq!(errs[0].reason, reason);
        assert_eq!(errs[0].location, "body");
    }
}

#[test]
fn identity_shapes_and_formats() {
    let hashed = crate::sha256_hex(b"johndoe@example.com");
    // The spec's array, every supported type and format.
    let mut v = good();
    v["subject_identities"] = json!([
        {"identity_type": "email", "identity_value": hashed.to_uppercase(), "identity_format": "sha256"},
        {"identity_type": "controller_customer_id", "identity_value": " u-42 ", "identity_format": "raw"},
        {"identity_type": "ios_advertising_id", "identity_value": "6D92078A-8246-4BA4-AE5B-76104861E7DC", "identity_format": "raw"},
        {"identity_type": "phone_number", "identity_value": "(415) 555-0100", "identity_format": "raw"},
        {"identity_type": "anonymous_id", "identity_value": "anon-1", "identity_format": "raw"},
    ]);
    let r = parse(&v, Api::V2).expect("valid");
    let got: Vec<(IdType, &str, IdentityFormat)> =
        r.identities.iter().map(|i| (i.identifier.kind.clone(), i.identifier.value.as_str(), i.format)).collect();
    assert_eq!(
        got,
        vec![
            (IdType::EmailSha256, hashed.as_str(), IdentityFormat::Sha256),
            (IdType::UserId, "u-42", IdentityFormat::Raw),
            (IdType::DeviceId, "6D92078A-8246-4BA4-AE5B-76104861E7DC", IdentityFormat::Raw),
            (IdType::Phone, "+14155550100", IdentityFormat::Raw),
            (IdType::AnonymousId, "anon-1", IdentityFormat::Raw),
        ]
    );

    // mParticle's dictionary, plus identities and skip_waiting_period in its extension.
    let mut v = good();
    v["api_version"] = json!("3.0");
    v["group_id"] = json!("household-7");
    v["subject_identities"] = json!({
        "email": {"value": "JohnDoe@example.com", "encoding": "raw"},
        "controller_customer_id": {"value": "u-42", "encoding": "raw"},
    });
    v["extensions"] = json!({"opendsr.mparticle.com": {
        "skip_waiting_period": true,
        "subject_identities": {"mobile_number": {"value": "+44 20 7946 0958", "encoding": "raw"}},
    }});
    let r = parse(&v, Api::V2).expect("valid");
    let mut kinds: Vec<String> = r.identities.iter().map(|i| i.identifier.key()).collect();
    kinds.sort();
    assert_eq!(kinds, ["email:johndoe@example.com", "phone:+442079460958", "user_id:u-42"]);
    assert!(r.skip_waiting_period);
    assert_eq!(r.group_id.as_deref(), Some("household-7"));

    // The dictionary's fields are checked as strictly as the array's.
    let mut v = good();
    v["subject_identities"] = json!({"email": {"value": "a@b.co"}, "mpid": {"value": "1", "encoding": "raw"}, "x": 1});
    let errs = parse(&v, Api::V2).expect_err("invalid");
    let found: Vec<(&str, &str)> = errs.iter().map(|e| (e.location.as_str(), e.reason)).collect();
    assert!(found.contains(&("subject_identities.email.encoding", "required")), "{found:?}");
    assert!(
        found.contains(&("identity_type", "unsupported")) || found.iter().any(|(_, r)| *r == "unsupported"),
        "{found:?}"
    );
    assert!(found.contains(&("subject_identities.x", "invalid")), "{found:?}");

    // The same identity twice counts once.
    let mut v = good();
    v["subject_identities"] = json!([
        {"identity_type": "email", "identity_value": "a@b.co", "identity_format": "raw"},
        {"identity_type": "email", "identity_value": " A@B.co", "identity_format": "raw"},
    ]);
    assert_eq!(parse(&v, Api::V2).expect("valid").identities.len(), 1);
}

#[test]
fn the_legacy_route_does_not_require_a_regulation() {
    let mut v = good();
    v.as_object_mut().expect("object").remove("regulation");
    assert!(parse(&v, Api::V2).is_err());
    let r = parse(&v, Api::LegacyV1).expect("legacy accepts it");
    assert_eq!(r.regulation, Regulation::Gdpr);
    v["regulation"] = json!("ccpa");
    assert_eq!(parse(&v, Api::LegacyV1).expect("valid").regulation, Regulation::Ccpa);
    v["regulation"] = json!("hipaa");
    assert!(parse(&v, Api::LegacyV1).is_err());
}

#[test]
fn the_lifecycle_allows_only_the_specs_transitions() {
    use RequestStatus::*;
    let all = [Pending, InProgress, Completed, Cancelled];
    for from in all {
        for to in all {
            let allowed = matches!((from, to), (Pending, InProgress) | (Pending, Cancelled) | (InProgress, Completed));
            assert_eq!(from.can_become(to), allowed, "{from:?} → {to:?}");
        }
    }
    let req = parse(&good(), Api::V2).expect("valid");
    let mut rec = DsrRecord::new(&req, "ops", false, 1_000, 30 * 86_400_000, 0);
    assert_eq!(rec.status, Pending);
    assert!(rec.not_before.is_none());
    rec.transition(InProgress, 2_000).expect("start");
    let err = rec.transition(Cancelled, 3_000).expect_err("too late to cancel");
    assert_eq!(err.to_string(), "a request that is in_progress cannot become cancelled");
    rec.transition(Completed, 4_000).expect("finish");
    assert_eq!(
        rec.history.iter().map(|h| (h.status, h.at)).collect::<Vec<_>>(),
        [(Pending, 1_000), (InProgress, 2_000), (Completed, 4_000)]
    );
    assert_eq!(DsrRecord::from_attrs(&rec.to_attrs()).expect("round trip"), rec);
}

#[test]
fn a_stored_request_holds_no_identity_value() {
    let req = parse(&good(), Api::V2).expect("valid");
    let rec = DsrRecord::new(&req, "ops", false, 1_000, 86_400_000, 7 * 86_400_000);
    let text = serde_json::to_string(&rec.to_attrs()).expect("json");
    assert!(!text.to_lowercase().contains("johndoe"), "{text}");
    assert!(!text.contains(&crate::sha256_hex(b"johndoe@example.com")), "{text}");
    assert_eq!(rec.subject, vec![SubjectKey::of(&req.identities[0].identifier)]);
    assert_eq!(rec.not_before, Some(1_000 + 7 * 86_400_000));
    assert_eq!(rec.expected_completion, 1_000 + 8 * 86_400_000);
}

#[test]
fn answers_have_the_specs_fields() {
    let raw = serde_json::to_vec(&good()).expect("json");
    let req = parse_create(&raw, Api::V2, None).expect("valid");
    let mut rec = DsrRecord::new(&req, "ops", false, 1_538_492_401_000, 30 * 86_400_000, 0);
    let created = rec.created_body("ctrl", &raw);
    assert_eq!(created["controller_id"], "ctrl");
    assert_eq!(created["subject_request_id"], ID);
    assert_eq!(created["received_time"], "2018-10-02T15:00:01Z");
    assert_eq!(created["expected_completion_time"], "2018-11-01T15:00:01Z");
    use base64::Engine;
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(created["encoded_request"].as_str().expect("string"))
            .expect("b64"),
        raw
    );

    rec.transition(RequestStatus::InProgress, 1_538_492_402_000).expect("start");
    rec.transition(RequestStatus::Completed, 1_538_492_403_000).expect("done");
    rec.receipts.push(StoreReceipt::new("profiles", "deleted", 2, 1_538_492_403_000));
    rec.result = Some(ExportResult { key: "k".into(), count: 340, expires_at: 0 });
    let status = rec.status_body("ctrl", Some("https://p.example/r"), "p.example");
    assert_eq!(status["request_status"], "completed");
    assert_eq!(status["results_url"], "https://p.example/r");
    assert_eq!(status["results_count"], 340);
    assert_eq!(status["extensions"]["p.example"]["receipts"][0]["store"], "profiles");
    let cb = rec.callback_body("ctrl", "https://c.example/cb", None);
    assert_eq!(cb["status_callback_url"], "https://c.example/cb");
    assert_eq!(cb["request_status"], "completed");
    assert!(cb.get("results_url").is_none());

    let d = discovery_body("https://p.example/cert.pem");
    assert_eq!(d["processor_certificate"], "https://p.example/cert.pem");
    assert_eq!(d["supported_subject_request_types"], json!(["erasure", "access", "portability"]));
    let ids = d["supported_identities"].as_array().expect("list");
    assert!(ids.contains(&json!({"identity_type": "email", "identity_format": "sha256"})));
    assert!(!ids.iter().any(|i| i["identity_format"] == "md5"));
}

#[test]
fn tasks_and_tombstones_round_trip() {
    let t = DsrTask::Callback { id: ID.into(), status: RequestStatus::Completed, url: 1 };
    assert_eq!(serde_json::from_str::<DsrTask>(&t.to_body()).expect("parse"), t);
    let attrs = tombstone_attrs("email", ID, 5);
    assert_eq!(suppressed_by(&attrs), Some(ID));
    assert!(crate::profile::layout::identity_profile(&attrs).is_none());
}

#[test]
fn audit_rows_are_keyed_by_day_and_time() {
    let row = AuditRow {
        actor: "ops".into(),
        action: "dsr.create".into(),
        target: ID.into(),
        outcome: "201".into(),
        at: 1_538_492_401_000,
        receipts: Vec::new(),
    };
    let k = row.key("n1");
    assert_eq!(k.pk, "audit#2018-10-02");
    assert_eq!(k.sk, "1538492401000#n1");
    assert_eq!(AuditRow::from_attrs(&row.to_attrs()).expect("round trip"), row);
}
