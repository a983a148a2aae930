use serde_json::{json, Map, Value};
use time::macros::datetime;

use super::super::{parse_body, process, Limits, Processed, RequestContext, Route};

const RECEIVED: &str = "2025-01-01T12:00:10.000Z";

fn ctx() -> RequestContext {
    RequestContext {
        received_at: datetime!(2025-01-01 12:00:10 UTC),
        source_ip: Some("198.51.100.7".into()),
        user_agent: Some("analytics-python/2.3.4".into()),
    }
}

fn run_with(route: Route, body: Value, limits: &Limits) -> Processed {
    process(route, body, &ctx(), limits).expect("request accepted")
}

fn run(route: Route, body: Value) -> Processed {
    run_with(route, body, &Limits::default())
}

/// The single accepted event.
fn one(route: Route, body: Value) -> Map<String, Value> {
    let mut p = run(route, body);
    assert!(p.rejected.is_empty(), "unexpected rejection {:?}", p.rejected);
    assert_eq!(p.accepted.len(), 1);
    p.accepted.remove(0)
}

fn batch_one(item: Value) -> Map<String, Value> {
    one(Route::Batch, json!({"batch": [item]}))
}

/// The code of the single rejection.
fn rejected(route: Route, body: Value) -> &'static str {
    let p = run(route, body);
    assert!(p.accepted.is_empty(), "unexpectedly accepted: {:?}", p.accepted);
    assert_eq!(p.rejected.len(), 1);
    p.rejected[0].code
}

fn request_error(route: Route, body: Value, limits: &Limits) -> &'static str {
    let e = process(route, body, &ctx(), limits).expect_err("request refused");
    assert_eq!(e.status, 400);
    e.code
}

#[test]
fn single_route_rejections() {
    let cases: Vec<(Route, Value, &str)> = vec![
        (Route::Track, json!({}), "missing_id"),
        (Route::Track, json!({"event": "E", "userId": null, "anonymousId": ""}), "missing_id"),
        (Route::Identify, json!({"traits": {"email": "x"}}), "missing_id"),
        (Route::Track, json!({"userId": "u"}), "missing_event"),
        (Route::Track, json!({"userId": "u", "event": null}), "missing_event"),
        (Route::Track, json!({"userId": "u", "event": ""}), "missing_event"),
        (Route::Track, json!({"userId": "u", "event": 5}), "invalid_field"),
        (Route::Track, json!({"userId": "u", "event": {"n": 1}}), "invalid_field"),
        (Route::Track, json!({"userId": true, "event": "E"}), "invalid_field"),
        (Route::Track, json!({"userId": ["u"], "event": "E"}), "invalid_field"),
        (Route::Track, json!({"userId": {"id": 1}, "event": "E"}), "invalid_field"),
        (Route::Track, json!({"userId": "u", "anonymousId": false, "event": "E"}), "invalid_field"),
        (Route::Alias, json!({"userId": "u"}), "missing_previous_id"),
        (Route::Alias, json!({"userId": "u", "previousId": ""}), "missing_previous_id"),
        (Route::Alias, json!({"userId": "u", "previousId": null}), "missing_previous_id"),
        (Route::Alias, json!({"userId": "u", "previousId": true}), "invalid_field"),
        (Route::Alias, json!({"anonymousId": "a", "previousId": "p"}), "missing_id"),
        (Route::Alias, json!({"previousId": "p"}), "missing_id"),
        (Route::Group, json!({"userId": "u"}), "missing_group_id"),
        (Route::Group, json!({"userId": "u", "groupId": ""}), "missing_group_id"),
        (Route::Group, json!({"userId": "u", "groupId": null}), "missing_group_id"),
        (Route::Group, json!({"userId": "u", "groupId": [1]}), "invalid_field"),
        (Route::Group, json!({"groupId": "g"}), "missing_id"),
        (Route::Page, json!({"userId": "u", "name": {"a": 1}}), "invalid_field"),
        (Route::Screen, json!({"userId": "u", "name": true}), "invalid_field"),
        (Route::Identify, json!({"userId": "u", "traits": "x"}), "invalid_field"),
        (Route::Identify, json!({"userId": "u", "traits": [1]}), "invalid_field"),
        (Route::Page, json!({"userId": "u", "properties": []}), "invalid_field"),
        (Route::Page, json!({"userId": "u", "context": 1}), "invalid_field"),
        (Route::Page, json!({"userId": "u", "integrations": true}), "invalid_field"),
        (Route::Page, json!({"userId": "u", "messageId": "m".repeat(101)}), "invalid_field"),
        (Route::Page, json!({"userId": "u", "messageId": true}), "invalid_field"),
        (Route::Page, json!({"userId": "u", "messageId": {"id": 1}}), "invalid_field"),
    ];
    for (route, body, want) in cases {
        let text = body.to_string();
        assert_eq!(rejected(route, body), want, "{route:?} {text}");
    }
}

#[test]
fn single_route_accepts_minimal_messages() {
    let cases: Vec<(Route, Value)> = vec![
        (Route::Track, json!({"userId": "u", "event": "E"})),
        (Route::Track, json!({"anonymousId": "a", "event": "E"})),
        (Route::Identify, json!({"userId": "u"})),
        (Route::Page, json!({"anonymousId": "a"})),
        (Route::Screen, json!({"anonymousId": "a", "name": "Main"})),
        (Route::Group, json!({"userId": "u", "groupId": "g"})),
        (Route::Alias, json!({"userId": "u", "previousId": "p"})),
        // Exactly 100 characters is allowed.
        (Route::Page, json!({"userId": "u", "messageId": "m".repeat(100)})),
        (Route::Page, json!({"userId": "u", "messageId": "é".repeat(100)})),
    ];
    for (route, body) in cases {
        let e = one(route, body);
        assert_eq!(e["type"], json!(route.as_str()));
    }
}

#[test]
fn batch_item_rejections() {
    let cases: Vec<(Value, &str)> = vec![
        (json!(1), "invalid_event"),
        (json!("track"), "invalid_event"),
        (Value::Null, "invalid_event"),
        (json!([{"type": "track"}]), "invalid_event"),
        (json!({"userId": "u", "event": "E"}), "missing_type"),
        (json!({"type": null, "userId": "u"}), "missing_type"),
        (json!({"type": "", "userId": "u"}), "missing_type"),
        (json!({"type": "Track", "userId": "u", "event": "E"}), "unknown_type"),
        (json!({"type": "purchase", "userId": "u"}), "unknown_type"),
        (json!({"type": 3, "userId": "u"}), "unknown_type"),
        (json!({"type": "track", "event": "E"}), "missing_id"),
        (json!({"type": "track", "userId": "u"}), "missing_event"),
    ];
    for (item, want) in cases {
        let text = item.to_string();
        assert_eq!(rejected(Route::Batch, json!({"batch": [item]})), want, "{text}");
    }
}

#[test]
fn request_errors() {
    let d = Limits::default();
    let cases: Vec<(Route, Value, Limits, &str)> = vec![
        (Route::Batch, json!([]), d, "invalid_body"),
        (Route::Track, json!("x"), d, "invalid_body"),
        (Route::Batch, json!({}), d, "invalid_batch"),
        (Route::Batch, json!({"batch": null}), d, "invalid_batch"),
        (Route::Batch, json!({"batch": {"type": "track"}}), d, "invalid_batch"),
        (Route::Import, json!({"batch": "x"}), d, "invalid_batch"),
        (Route::Batch, json!({"batch": [], "context": "x"}), d, "invalid_batch"),
        (Route::Batch, json!({"batch": [], "integrations": [1]}), d, "invalid_batch"),
        (Route::Batch, json!({"batch": [{}, {}, {}]}), Limits { max_batch_events: 2, ..d }, "batch_too_large"),
    ];
    for (route, body, limits, want) in cases {
        let text = body.to_string();
        assert_eq!(request_error(route, body, &limits), want, "{route:?} {text}");
    }
    // At the bound is fine; an empty batch is fine.
    let p = run_with(Route::Batch, json!({"batch": [{}, {}]}), &Limits { max_batch_events: 2, ..d });
    assert_eq!(p.rejected.len(), 2);
    let p = run(Route::Batch, json!({"batch": []}));
    assert!(p.accepted.is_empty() && p.rejected.is_empty());
}

#[test]
fn rejections_carry_position_and_usable_message_id() {
    let p = run(
        Route::Batch,
        json!({"batch": [
            {"type": "track", "userId": "u", "event": "E", "messageId": "ok-1"},
            {"type": "track", "userId": "u", "messageId": "bad-2"},
            {"type": "track", "anonymousId": 5},
            {"type": "identify", "messageId": 77},
            {"type": "identify", "userId": "u", "messageId": "x".repeat(101)},
            "nope",
            {"type": "page", "userId": "u", "messageId": "ok-7"},
        ]}),
    );
    let ids: Vec<&str> = p.accepted.iter().map(|e| e["messageId"].as_str().unwrap()).collect();
    assert_eq!(ids, vec!["ok-1", "ok-7"]);
    let got: Vec<(usize, Option<&str>, &str)> =
        p.rejected.iter().map(|r| (r.index, r.message_id.as_deref(), r.code)).collect();
    assert_eq!(
        got,
        vec![
            (1, Some("bad-2"), "missing_event"),
            (2, None, "missing_event"),
            (3, Some("77"), "missing_id"),
            (4, None, "invalid_field"),
            (5, None, "invalid_event"),
        ]
    );
    let p = run(Route::Track, json!({"userId": "u", "messageId": "single"}));
    assert_eq!((p.rejected[0].index, p.rejected[0].message_id.as_deref()), (0, Some("single")));
}

#[test]
fn rejection_messages_never_quote_values() {
    let secret = "ann.secret@example.com";
    let bodies = vec![
        json!({"type": "track", "userId": {"email": secret}}),
        json!({"type": "track", "userId": secret}),
        json!({"type": secret, "userId": "u"}),
        json!({"type": "group", "userId": "u", "groupId": [secret]}),
        json!({"type": "identify", "userId": "u", "traits": secret}),
        json!({"type": "track", "userId": "u", "event": [secret]}),
        json!({"type": "track", "userId": "u", "event": "E", "messageId": secret.repeat(10)}),
        json!({"type": "track", "userId": "u", "event": "E", "properties": {"p": secret.repeat(2000)}}),
        json!(secret),
    ];
    let p = run(Route::Batch, json!({ "batch": bodies }));
    assert_eq!(p.rejected.len(), 9);
    for r in &p.rejected {
        assert!(!r.message.contains("secret"), "{}: {}", r.code, r.message);
        assert!(!r.message.is_empty());
    }
}

#[test]
fn identifier_coercion() {
    let cases: Vec<(Value, Option<&str>)> = vec![
        (json!("abc"), Some("abc")),
        (json!(42), Some("42")),
        (json!(-7), Some("-7")),
        (json!(42.0), Some("42")),
        (json!(4.5), Some("4.5")),
        (json!(18446744073709551615u64), Some("18446744073709551615")),
        (json!(""), None),
        (Value::Null, None),
    ];
    for (value, want) in cases {
        let text = value.to_string();
        let e = one(Route::Track, json!({"userId": value, "anonymousId": "a", "event": "E"}));
        assert_eq!(e.get("userId").and_then(Value::as_str), want, "userId {text}");
        if want.is_none() {
            assert!(!e.contains_key("userId"), "null/empty userId key removed");
        }
    }
    let e = one(Route::Group, json!({"anonymousId": 9, "groupId": 12}));
    assert_eq!((e["anonymousId"].clone(), e["groupId"].clone()), (json!("9"), json!("12")));
    let e = one(Route::Alias, json!({"userId": 1, "previousId": 2.0}));
    assert_eq!((e["userId"].clone(), e["previousId"].clone()), (json!("1"), json!("2")));
    let e = one(Route::Page, json!({"userId": "u", "name": 404, "messageId": 123}));
    assert_eq!((e["name"].clone(), e["messageId"].clone()), (json!("404"), json!("123")));
    let e = one(Route::Page, json!({"userId": "u", "name": null}));
    assert!(!e.contains_key("name"));
}

#[test]
fn null_objects_are_removed() {
    let e = one(
        Route::Identify,
        json!({"userId": "u", "traits": null, "properties": null, "integrations": null, "context": null}),
    );
    assert!(!e.contains_key("traits"));
    assert!(!e.contains_key("properties"));
    assert!(!e.contains_key("integrations"));
    // context is re-created by enrichment.
    assert_eq!(e["context"], json!({"ip": "198.51.100.7", "userAgent": "analytics-python/2.3.4"}));
}

#[test]
fn single_route_type_comes_from_route() {
    let e = one(Route::Page, json!({"type": "track", "userId": "u"}));
    assert_eq!(e["type"], json!("page"));
    let e = one(Route::Identify, json!({"type": 5, "userId": "u"}));
    assert_eq!(e["type"], json!("identify"));
}

#[test]
fn write_key_is_never_kept() {
    let e = one(Route::Track, json!({"writeKey": "wk", "userId": "u", "event": "E"}));
    assert!(!e.contains_key("writeKey"));
    let p = run(
        Route::Import,
        json!({"writeKey": "wk", "batch": [
            {"type": "track", "userId": "u", "event": "E", "writeKey": "wk2"},
            {"type": "identify", "userId": "u", "writeKey": "wk3"},
        ]}),
    );
    assert_eq!(p.accepted.len(), 2);
    for e in &p.accepted {
        assert!(!e.contains_key("writeKey"));
        assert!(!serde_json::to_string(e).unwrap().contains("wk"));
    }
}

#[test]
fn message_id_generation() {
    fn is_uuid_version(s: &str, v: usize) -> bool {
        uuid::Uuid::parse_str(s).map(|u| u.get_version_num() == v).unwrap_or(false)
    }
    let with_time = json!({"type": "track", "userId": "u", "event": "E", "properties": {"a": [1, {"b": 2}]},
                           "timestamp": "2025-01-01T12:00:00.000+00:00", "messageId": null});
    let id = |batch: Value| {
        let p = run(Route::Batch, batch);
        assert!(p.rejected.is_empty());
        p.accepted[0]["messageId"].as_str().unwrap().to_string()
    };
    let a = id(json!({"batch": [with_time.clone()], "sentAt": "2025-01-01T12:00:01Z"}));
    assert!(is_uuid_version(&a, 5), "{a}");
    // A retry (new sentAt, different receivedAt/IP) yields the same id.
    let b = id(json!({"batch": [with_time.clone()], "sentAt": "2025-01-01T12:00:09Z"}));
    assert_eq!(a, b);
    let mut retry = with_time.clone();
    retry["sentAt"] = json!("2025-01-01T12:00:30Z");
    let ctx2 = RequestContext { source_ip: Some("192.0.2.1".into()), ..ctx() };
    let p = process(Route::Batch, json!({ "batch": [retry] }), &ctx2, &Limits::default()).unwrap();
    assert_eq!(p.accepted[0]["messageId"].as_str().unwrap(), a);
    // Key order does not matter (canonical JSON).
    let reordered: Value = serde_json::from_str(
        r#"{"timestamp":"2025-01-01T12:00:00.000+00:00","properties":{"a":[1,{"b":2}]},"event":"E","userId":"u","type":"track"}"#,
    )
    .unwrap();
    assert_eq!(id(json!({ "batch": [reordered] })), a);
    // Empty string counts as missing; originalTimestamp counts as explicit time.
    let mut empty = with_time.clone();
    empty["messageId"] = json!("");
    assert_eq!(id(json!({ "batch": [empty] })), a);
    // Any content change gives another id.
    let mut changed = with_time.clone();
    changed["properties"]["a"][0] = json!(2);
    assert_ne!(id(json!({ "batch": [changed] })), a);
    let mut later = with_time.clone();
    later["timestamp"] = json!("2025-01-01T12:00:00.001+00:00");
    assert_ne!(id(json!({ "batch": [later] })), a);
    let node = json!({"type": "track", "userId": "u", "event": "E", "originalTimestamp": "2025-01-01T12:00:00.000Z"});
    let n1 = id(json!({ "batch": [node.clone()] }));
    assert!(is_uuid_version(&n1, 5));
    assert_eq!(n1, id(json!({ "batch": [node] })));
    // Without client time: random v4 ids, different each time.
    let plain = json!({"type": "track", "userId": "u", "event": "E"});
    let r1 = id(json!({ "batch": [plain.clone()] }));
    let r2 = id(json!({ "batch": [plain] }));
    assert!(is_uuid_version(&r1, 4) && is_uuid_version(&r2, 4));
    assert_ne!(r1, r2);
    // A given id is kept verbatim.
    let e = batch_one(json!({"type": "track", "userId": "u", "event": "E", "messageId": "node-next-1-abc"}));
    assert_eq!(e["messageId"], json!("node-next-1-abc"));
}

#[test]
fn clock_skew_and_timestamps() {
    struct Case {
        name: &'static str,
        item: Value,
        batch_sent_at: Option<&'static str>,
        timestamp: &'static str,
        original: Option<&'static str>,
        sent: Option<&'static str>,
    }
    let cases = vec![
        Case {
            name: "python: client 5 s behind the server",
            item: json!({"timestamp": "2025-01-01T12:00:00.000+00:00"}),
            batch_sent_at: Some("2025-01-01T12:00:05.123456+00:00"),
            timestamp: "2025-01-01T12:00:04.876Z",
            original: Some("2025-01-01T12:00:00.000Z"),
            sent: Some("2025-01-01T12:00:05.123Z"),
        },
        Case {
            name: "client clock one hour behind",
            item: json!({"timestamp": "2025-01-01T10:59:59.500Z"}),
            batch_sent_at: Some("2025-01-01T11:00:00.000Z"),
            timestamp: "2025-01-01T12:00:09.500Z",
            original: Some("2025-01-01T10:59:59.500Z"),
            sent: Some("2025-01-01T11:00:00.000Z"),
        },
        Case {
            name: "client clock ahead, offsets",
            item: json!({"timestamp": "2025-01-01T14:00:00+0100"}),
            batch_sent_at: Some("2025-01-01T14:30:00+01:00"),
            timestamp: "2025-01-01T11:30:10.000Z",
            original: Some("2025-01-01T13:00:00.000Z"),
            sent: Some("2025-01-01T13:30:00.000Z"),
        },
        Case {
            name: "item sentAt wins over batch sentAt",
            item: json!({"timestamp": "2025-01-01T12:00:00Z", "sentAt": "2025-01-01T12:00:02Z"}),
            batch_sent_at: Some("2025-01-01T12:00:09Z"),
            timestamp: "2025-01-01T12:00:08.000Z",
            original: Some("2025-01-01T12:00:00.000Z"),
            sent: Some("2025-01-01T12:00:02.000Z"),
        },
        Case {
            name: "node: originalTimestamp without timestamp",
            item: json!({"originalTimestamp": "2025-01-01T12:00:00.250Z", "sentAt": "2025-01-01T12:00:01.250Z"}),
            batch_sent_at: None,
            timestamp: "2025-01-01T12:00:09.000Z",
            original: Some("2025-01-01T12:00:00.250Z"),
            sent: Some("2025-01-01T12:00:01.250Z"),
        },
        Case {
            name: "timestamp wins over originalTimestamp",
            item: json!({"timestamp": "2025-01-01T12:00:00Z", "originalTimestamp": "2020-01-01T00:00:00Z"}),
            batch_sent_at: None,
            timestamp: "2025-01-01T12:00:00.000Z",
            original: Some("2025-01-01T12:00:00.000Z"),
            sent: None,
        },
        Case {
            name: "unparseable timestamp falls through to originalTimestamp",
            item: json!({"timestamp": "yesterday", "originalTimestamp": "2025-01-01T11:00:00Z"}),
            batch_sent_at: None,
            timestamp: "2025-01-01T11:00:00.000Z",
            original: Some("2025-01-01T11:00:00.000Z"),
            sent: None,
        },
        Case {
            name: "only timestamp known",
            item: json!({"timestamp": "2015-2-02T00:30:08.276Z"}),
            batch_sent_at: None,
            timestamp: "2015-02-02T00:30:08.276Z",
            original: Some("2015-02-02T00:30:08.276Z"),
            sent: None,
        },
        Case {
            name: "only sentAt known",
            item: json!({}),
            batch_sent_at: Some("2025-01-01T12:00:00Z"),
            timestamp: RECEIVED,
            original: None,
            sent: Some("2025-01-01T12:00:00.000Z"),
        },
        Case {
            name: "nothing known",
            item: json!({}),
            batch_sent_at: None,
            timestamp: RECEIVED,
            original: None,
            sent: None,
        },
        Case {
            name: "garbage everywhere falls back to receivedAt",
            item: json!({"timestamp": 1735732800, "originalTimestamp": "soon", "sentAt": true}),
            batch_sent_at: Some("not a date"),
            timestamp: RECEIVED,
            original: None,
            sent: None,
        },
        Case {
            name: "absurd skew out of range keeps the original time",
            item: json!({"timestamp": "9999-01-01T00:00:00Z"}),
            batch_sent_at: Some("0001-01-01T00:00:00Z"),
            timestamp: "9999-01-01T00:00:00.000Z",
            original: Some("9999-01-01T00:00:00.000Z"),
            sent: Some("0001-01-01T00:00:00.000Z"),
        },
    ];
    for c in cases {
        let mut item = c.item;
        item["type"] = json!("track");
        item["userId"] = json!("u");
        item["event"] = json!("E");
        let mut body = json!({ "batch": [item] });
        if let Some(s) = c.batch_sent_at {
            body["sentAt"] = json!(s);
        }
        let e = one(Route::Batch, body);
        assert_eq!(e["timestamp"], json!(c.timestamp), "{}: timestamp", c.name);
        assert_eq!(e.get("originalTimestamp").and_then(Value::as_str), c.original, "{}: originalTimestamp", c.name);
        assert_eq!(e.get("sentAt").and_then(Value::as_str), c.sent, "{}: sentAt", c.name);
        assert_eq!(e["receivedAt"], json!(RECEIVED), "{}: receivedAt", c.name);
    }
}

#[test]
fn batch_context_and_integrations_merge() {
    let p = run(
        Route::Batch,
        json!({
            "context": {"device": {"type": "phone"}, "library": {"name": "batch-lib"}, "ip": "203.0.113.9"},
            "integrations": {"All": true, "Mixpanel": false},
            "batch": [
                {"type": "track", "userId": "u", "event": "E"},
                {"type": "track", "userId": "u", "event": "E",
                 "context": {"library": {"name": "own-lib"}, "locale": "de-DE"},
                 "integrations": {"Mixpanel": true, "Salesforce": false}},
                {"type": "identify", "userId": "u", "context": null, "integrations": null},
            ]
        }),
    );
    assert!(p.rejected.is_empty());
    let [a, b, c] = &p.accepted[..] else { panic!("three events") };
    assert_eq!(
        Value::Object(a["context"].as_object().unwrap().clone()),
        json!({"device": {"type": "phone"}, "library": {"name": "batch-lib"}, "ip": "203.0.113.9",
               "userAgent": "analytics-python/2.3.4"})
    );
    assert_eq!(a["integrations"], json!({"All": true, "Mixpanel": false}));
    // Shallow merge: the item's own top-level keys win whole.
    assert_eq!(
        b["context"],
        json!({"device": {"type": "phone"}, "library": {"name": "own-lib"}, "locale": "de-DE",
               "ip": "203.0.113.9", "userAgent": "analytics-python/2.3.4"})
    );
    assert_eq!(b["integrations"], json!({"All": true, "Mixpanel": true, "Salesforce": false}));
    assert_eq!(c["context"]["device"], json!({"type": "phone"}));
    assert_eq!(c["integrations"], json!({"All": true, "Mixpanel": false}));
}

#[test]
fn enrichment_from_transport() {
    let e = one(Route::Track, json!({"userId": "u", "event": "E"}));
    assert_eq!(e["context"], json!({"ip": "198.51.100.7", "userAgent": "analytics-python/2.3.4"}));
    let e =
        one(Route::Track, json!({"userId": "u", "event": "E", "context": {"ip": "203.0.113.1", "userAgent": "UA"}}));
    assert_eq!(e["context"], json!({"ip": "203.0.113.1", "userAgent": "UA"}));
    let e = one(Route::Track, json!({"userId": "u", "event": "E", "context": {"ip": "", "userAgent": null}}));
    assert_eq!(e["context"], json!({"ip": "198.51.100.7", "userAgent": "analytics-python/2.3.4"}));
    // Nothing known about the transport: context exists, nothing invented.
    let bare = RequestContext { received_at: datetime!(2025-01-01 12:00:10 UTC), source_ip: None, user_agent: None };
    let p = process(Route::Track, json!({"userId": "u", "event": "E"}), &bare, &Limits::default()).unwrap();
    assert_eq!(p.accepted[0]["context"], json!({}));
}

#[test]
fn unknown_keys_are_preserved() {
    let e = batch_one(json!({
        "type": "track", "userId": "u", "event": "E", "channel": "server", "version": 2,
        "_metadata": {"nodeVersion": "22.1.0", "jsRuntime": "node"},
        "properties": {"nested": {"deep": [1, 2, {"x": null}]}, "n": 1.5},
        "context": {"library": {"name": "x", "version": "1"}, "custom": [true]},
    }));
    assert_eq!(e["channel"], json!("server"));
    assert_eq!(e["version"], json!(2));
    assert_eq!(e["_metadata"], json!({"nodeVersion": "22.1.0", "jsRuntime": "node"}));
    assert_eq!(e["properties"], json!({"nested": {"deep": [1, 2, {"x": null}]}, "n": 1.5}));
    assert_eq!(e["context"]["custom"], json!([true]));
}

#[test]
fn event_size_bound() {
    let body =
        |pad: usize| json!({"userId": "u", "event": "E", "messageId": "m", "properties": {"p": "x".repeat(pad)}});
    let small = one(Route::Track, body(0));
    let base = serde_json::to_string(&small).unwrap().len();
    let limits = Limits { max_event_bytes: base + 10, ..Limits::default() };
    // Exactly at the bound: accepted, and the bound is on the normalized serialization.
    let p = run_with(Route::Track, body(10), &limits);
    assert_eq!(p.accepted.len(), 1);
    assert_eq!(serde_json::to_string(&p.accepted[0]).unwrap().len(), base + 10);
    let p = run_with(Route::Track, body(11), &limits);
    assert_eq!(p.rejected.len(), 1);
    assert_eq!(p.rejected[0].code, "event_too_large");
    assert_eq!(p.rejected[0].message_id.as_deref(), Some("m"));
    // A generated id is not reported as the item's own.
    let p = run_with(Route::Track, json!({"userId": "u", "event": "E", "properties": {"p": "x".repeat(500)}}), &limits);
    assert_eq!((p.rejected[0].code, p.rejected[0].message_id.clone()), ("event_too_large", None));
}

#[test]
fn segment_python_shape() {
    // segment-analytics-python 2.3.4: userId/anonymousId keys always present, +00:00 timestamps (ms on the
    // event, µs on sentAt), writeKey in the body, empty integrations.
    let body = br#"{"batch": [{"integrations": {}, "anonymousId": null, "properties": {"revenue": 14.99},
        "timestamp": "2025-01-01T12:00:00.123+00:00", "context": {"library": {"name": "analytics-python",
        "version": "2.3.4"}}, "userId": "019mr8mf4r", "type": "track", "event": "Item Purchased",
        "messageId": "58524f3a-3b76-4eac-aa97-d88bccdf4f77"},
        {"integrations": {}, "anonymousId": "a-1", "timestamp": "2025-01-01T12:00:01.000+00:00",
        "context": {"library": {"name": "analytics-python", "version": "2.3.4"}}, "userId": null,
        "type": "identify", "traits": {"email": "jake@example.com"}, "messageId": "m-2"}],
        "sentAt": "2025-01-01T12:00:02.123456+00:00", "writeKey": "wk"}"#;
    let value = parse_body(body, &Limits::default()).unwrap();
    let p = run(Route::Batch, value);
    assert!(p.rejected.is_empty(), "{:?}", p.rejected);
    let [t, i] = &p.accepted[..] else { panic!("two events") };
    let expected_track = json!({
        "integrations": {},
        "properties": {"revenue": 14.99},
        "timestamp": "2025-01-01T12:00:07.999Z",
        "originalTimestamp": "2025-01-01T12:00:00.123Z",
        "sentAt": "2025-01-01T12:00:02.123Z",
        "receivedAt": RECEIVED,
        "context": {"library": {"name": "analytics-python", "version": "2.3.4"},
                    "ip": "198.51.100.7", "userAgent": "analytics-python/2.3.4"},
        "userId": "019mr8mf4r",
        "type": "track",
        "event": "Item Purchased",
        "messageId": "58524f3a-3b76-4eac-aa97-d88bccdf4f77",
    });
    // 12:00:10 - (02.123456 - 00.123) = 12:00:07.999544, truncated to ms.
    assert_eq!(Value::Object(t.clone()), expected_track);
    assert!(!i.contains_key("userId"));
    assert_eq!(i["anonymousId"], json!("a-1"));
    assert_eq!(i["traits"], json!({"email": "jake@example.com"}));
    // 12:00:10 - (02.123456 - 01.000) = 12:00:08.876544, truncated to ms.
    assert_eq!(i["timestamp"], json!("2025-01-01T12:00:08.876Z"));
}

#[test]
fn rudder_python_shape() {
    // rudder-sdk-python: identify traits only in context.traits, {"All": true} integrations, channel, no writeKey.
    let p = run(
        Route::Batch,
        json!({"batch": [{"integrations": {"All": true}, "anonymousId": null, "userId": "u-1",
            "context": {"traits": {"email": "ann@example.com", "name": "Ann"},
                        "library": {"name": "analytics-python", "version": "2.1.4"}},
            "timestamp": "2025-01-01T12:00:00.000123+00:00", "type": "identify", "channel": "server",
            "messageId": "r-1"}],
            "sentAt": "2025-01-01T12:00:00.500000+00:00"}),
    );
    let e = &p.accepted[0];
    assert_eq!(e["traits"], json!({"email": "ann@example.com", "name": "Ann"}));
    assert_eq!(e["context"]["traits"], json!({"email": "ann@example.com", "name": "Ann"}));
    assert_eq!(e["channel"], json!("server"));
    assert_eq!(e["timestamp"], json!("2025-01-01T12:00:09.500Z"));
    assert_eq!(e["originalTimestamp"], json!("2025-01-01T12:00:00.000Z"));
    // Top-level traits win over context.traits.
    let e = one(
        Route::Identify,
        json!({"userId": "u", "traits": {"plan": "pro"}, "context": {"traits": {"plan": "free"}}}),
    );
    assert_eq!(e["traits"], json!({"plan": "pro"}));
    // Only identify copies.
    let e = one(Route::Track, json!({"userId": "u", "event": "E", "context": {"traits": {"plan": "free"}}}));
    assert!(!e.contains_key("traits"));
}

#[test]
fn node_shapes() {
    // @segment/analytics-node: Z timestamps with ms, node-next message ids, _metadata, writeKey in body.
    let p = run(
        Route::Batch,
        json!({"batch": [{"type": "track", "event": "Signed Up", "userId": "u", "properties": {},
            "timestamp": "2025-01-01T11:59:59.000Z", "integrations": {},
            "messageId": "node-next-1735732799000-7f3c2a9e-7c4d-4a7c-9d62-1a0f0c9b7e11",
            "context": {"library": {"name": "@segment/analytics-node", "version": "3.1.0"}},
            "_metadata": {"nodeVersion": "22.11.0", "jsRuntime": "node"}}],
            "writeKey": "wk", "sentAt": "2025-01-01T12:00:00.000Z"}),
    );
    let e = &p.accepted[0];
    assert_eq!(e["timestamp"], json!("2025-01-01T12:00:09.000Z"));
    assert_eq!(e["messageId"], json!("node-next-1735732799000-7f3c2a9e-7c4d-4a7c-9d62-1a0f0c9b7e11"));
    assert_eq!(e["_metadata"]["jsRuntime"], json!("node"));
    // @rudderstack/rudder-sdk-node: originalTimestamp + sentAt on each message, a batch-level `timestamp`.
    let p = run(
        Route::Batch,
        json!({"batch": [{"type": "page", "name": "Home", "anonymousId": "a-1", "channel": "server",
            "originalTimestamp": "2025-01-01T12:00:00.000Z", "sentAt": "2025-01-01T12:00:03.000Z",
            "context": {"library": {"name": "analytics-node", "version": "3.0.12"}},
            "messageId": "9a8b7c6d-0000-4000-8000-000000000001"}],
            "timestamp": "2025-01-01T12:00:03.000Z", "sentAt": "2025-01-01T12:00:03.000Z"}),
    );
    let e = &p.accepted[0];
    assert_eq!(e["timestamp"], json!("2025-01-01T12:00:07.000Z"));
    assert_eq!(e["originalTimestamp"], json!("2025-01-01T12:00:00.000Z"));
    assert_eq!(e["name"], json!("Home"));
}

#[test]
fn output_is_deterministic_given_message_ids() {
    let body = json!({"batch": [{"type": "track", "userId": 1, "event": "E", "messageId": "x"}], "sentAt": "2025-01-01T12:00:00Z"});
    assert_eq!(run(Route::Batch, body.clone()), run(Route::Batch, body));
}

const KNOWN_REJECT_CODES: [&str; 9] = [
    "invalid_event",
    "missing_type",
    "unknown_type",
    "invalid_field",
    "missing_id",
    "missing_event",
    "missing_previous_id",
    "missing_group_id",
    "event_too_large",
];

#[test]
fn every_field_with_every_json_type_never_panics() {
    let hostile = vec![
        Value::Null,
        json!(true),
        json!(0),
        json!(-1.5),
        json!(1e300),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(""),
        json!("x"),
        json!("2025-13-45T99:99:99Z"),
        json!([]),
        json!([null]),
        json!({}),
        json!({"a": null}),
    ];
    let fields = [
        "type",
        "userId",
        "anonymousId",
        "event",
        "name",
        "previousId",
        "groupId",
        "messageId",
        "timestamp",
        "originalTimestamp",
        "sentAt",
        "receivedAt",
        "traits",
        "properties",
        "context",
        "integrations",
        "writeKey",
    ];
    let template = json!({"type": "track", "userId": "u", "anonymousId": "a", "event": "E", "name": "N",
        "previousId": "p", "groupId": "g", "messageId": "m", "timestamp": "2025-01-01T00:00:00Z",
        "context": {"traits": {"email": "e"}, "ip": "203.0.113.1"}});
    let routes = [Route::Track, Route::Identify, Route::Page, Route::Screen, Route::Group, Route::Alias];
    for field in fields {
        for value in &hostile {
            let mut item = template.clone();
            item[field] = value.clone();
            let batch = json!({"batch": [item.clone()], "sentAt": value.clone(), "context": {"x": 1}});
            let outcomes = std::iter::once(process(Route::Batch, batch, &ctx(), &Limits::default()))
                .chain(routes.iter().map(|r| process(*r, item.clone(), &ctx(), &Limits::default())));
            for outcome in outcomes {
                let p = outcome.expect("per-event problems are rejections, not request errors");
                assert_eq!(p.accepted.len() + p.rejected.len(), 1);
                for r in &p.rejected {
                    assert!(KNOWN_REJECT_CODES.contains(&r.code), "{field}: {}", r.code);
                }
                for e in &p.accepted {
                    // Whatever came in, what goes out is readable by consumers.
                    crate::event::Message::from_normalized(e).unwrap_or_else(|err| panic!("{field} = {value}: {err}"));
                    assert!(!e.contains_key("writeKey"));
                }
            }
        }
    }
}

#[test]
fn mangled_bodies_never_panic() {
    let body = br#"{"batch":[{"type":"track","userId":"u","event":"E","properties":{"a":[1,2.5,{"b":"c\u00e9"}]},
        "timestamp":"2025-01-01T12:00:00.000+00:00","messageId":"m-1"},{"type":"identify","anonymousId":7,
        "context":{"traits":{"email":"x@y.z"}}}],"sentAt":"2025-01-01T12:00:01Z","context":{"ip":"1.2.3.4"}}"#;
    let limits = Limits::default();
    let pipeline = |bytes: &[u8]| {
        if let Ok(v) = parse_body(bytes, &limits) {
            if let Ok(p) = process(Route::Batch, v, &ctx(), &limits) {
                let _ = crate::ingest::pack("s", &p.accepted, 300);
            }
        }
    };
    pipeline(body);
    for cut in 0..body.len() {
        pipeline(&body[..cut]);
    }
    let replacements: &[u8] = b"\"{}[],:\\n0-.e\xff\x00 ";
    let mut mutated = body.to_vec();
    for pos in 0..body.len() {
        for &r in replacements {
            mutated[pos] = r;
            pipeline(&mutated);
        }
        mutated[pos] = body[pos];
    }
}
