//! The profile API handler over an in-memory table seeded with the layout helpers: a profile with a merged one,
//! looked up every way, paged, and refused every way, with no identifier value ever echoed in an error; every
//! profile read audited (fail closed), the scopes of every route, and the suppression routes.

use std::collections::BTreeMap;
use std::sync::Arc;

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use serde_json::{json, Map, Value};
use std::sync::Mutex;
use time::macros::datetime;
use time::OffsetDateTime;
use tributary_core::config::{DataPartyClass, WorkspaceConfig};
use tributary_core::delivery::{receipt_key, Receipt, ReceiptStatus};
use tributary_core::governance::stats;
use tributary_core::identity::{IdType, Identifier};

use tributary_core::dsr::{tombstone_attrs, AuditRow};
use tributary_core::ports::{Condition, Item, ItemKey, PortError, TableStore, WriteOp};
use tributary_core::profile::layout;
use tributary_core::profile::{ConsentEntry, EventRow, LedgerOp, LedgerRow, ProfileDoc, Stamp, TraitEntry};
use tributary_profile_api::ProfileApi;

const READER_KEY: &str = "reader-secret-key";
const ADMIN_KEY: &str = "admin-secret-key";
const DSR_KEY: &str = "dsr-secret-key";
const ROOT: &str = "prof_root0000000000000000001";
const LOSER: &str = "prof_loser000000000000000002";
const T0: i64 = 1_741_608_000_000; // 2025-03-10T12:00:00Z

use tributary_core::testing::{FaultyTable, MemoryTable as MemTable};

fn workspace() -> WorkspaceConfig {
    let sha = |k: &str| tributary_core::sha256_hex(k.as_bytes());
    let text = format!(
        "workspace: test\n\
         management_keys:\n\
         \x20 - {{id: reader, key_sha256: {}, scopes: [\"profiles:read\"]}}\n\
         \x20 - {{id: admin, key_sha256: {}, scopes: [admin]}}\n\
         \x20 - {{id: dsr, key_sha256: {}, scopes: [dsr]}}\n\
         sources:\n\
         \x20 - {{id: web, write_key_sha256: [\"{}\"]}}\n\
         \x20 - {{id: app, write_key_sha256: [\"{}\"]}}\n\
         profiles:\n\
         \x20 default_country_code: \"44\"\n",
        sha(READER_KEY),
        sha(ADMIN_KEY),
        sha(DSR_KEY),
        sha("web-write-key"),
        sha("app-write-key"),
    );
    tributary_core::config::load(&text).expect("test workspace is valid")
}

fn id(kind: IdType, raw: &str) -> Identifier {
    Identifier::new(kind, raw, None).unwrap()
}

fn ledger(table: &MemTable, profile: &str, op: LedgerOp, message_id: &str, at: i64, n: usize) {
    let row =
        LedgerRow { op, source: "web".into(), message_id: message_id.into(), rule: "test".into(), event_ts: at, at };
    let hash = layout::message_hash("web", message_id);
    table.put(ItemKey::new(layout::profile_pk(profile), layout::ledger_sk(at, &hash, n)), row.to_attrs());
}

fn link(table: &MemTable, profile: &str, identifier: &Identifier, message_id: &str, at: i64) {
    table.put(layout::identity_key(identifier), layout::identity_attrs(identifier, profile));
    let op = LedgerOp::Link { kind: identifier.kind.name().into_owned(), value: identifier.value.clone() };
    ledger(table, profile, op, message_id, at, 0);
}

fn event(table: &MemTable, profile: &str, message_id: &str, ts: i64) {
    let row = EventRow {
        source: "web".into(),
        message_id: message_id.into(),
        kind: "track".into(),
        name: Some("Song Played".into()),
        ts,
        received: ts + 250,
        event: json!({"type": "track", "event": "Song Played", "messageId": message_id}),
        truncated: false,
    };
    let hash = layout::message_hash("web", message_id);
    table.put(ItemKey::new(layout::profile_pk(profile), layout::event_sk(ts, &hash)), row.to_attrs());
}

/// Ann's profile: the root (user id, email, phone, traits, consent) and a merged anonymous profile (anonymous id,
/// device id), with events on both partitions.
fn seeded() -> MemTable {
    let table = MemTable::default();
    let mut root = ProfileDoc { created_at: T0, members: vec![LOSER.into()], events: 6, ..Default::default() };
    root.first_seen = T0;
    root.last_seen = T0 + 6_000;
    root.counts = BTreeMap::from([("user_id".into(), 1), ("email".into(), 1), ("anonymous_id".into(), 1)]);
    root.traits.insert(
        "plan".into(),
        TraitEntry {
            value: json!("pro"),
            at: Stamp { ts: T0 + 3_000, received: T0 + 3_100, source: "web".into(), message_id: "m-plan".into() },
            class: DataPartyClass::FirstParty,
            set_once: false,
        },
    );
    root.traits.insert(
        "signup_channel".into(),
        TraitEntry {
            value: json!("ads"),
            at: Stamp { ts: T0 + 1_000, received: T0 + 1_100, source: "crm".into(), message_id: "m-sc".into() },
            class: DataPartyClass::SecondParty,
            set_once: true,
        },
    );
    root.consent.insert(
        "marketing".into(),
        ConsentEntry {
            granted: false,
            at: Stamp { ts: T0 + 5_000, received: T0 + 5_100, source: "web".into(), message_id: "m-c".into() },
        },
    );
    table.put(layout::profile_key(ROOT), root.to_attrs());
    let loser = ProfileDoc { created_at: T0 + 500, merged_into: Some(ROOT.into()), ..Default::default() };
    table.put(layout::profile_key(LOSER), loser.to_attrs());

    ledger(&table, ROOT, LedgerOp::Create, "m1", T0, 1);
    link(&table, ROOT, &id(IdType::UserId, "u-42"), "m1", T0);
    link(&table, LOSER, &id(IdType::AnonymousId, "anon-9"), "m2", T0 + 500);
    link(&table, LOSER, &id(IdType::Email, "ann+news@example.com"), "m2", T0 + 501);
    link(&table, ROOT, &id(IdType::Phone, "+447700900123"), "m3", T0 + 2_000);
    let merge = LedgerOp::Merge { loser: LOSER.into(), via_kind: "email".into(), via_hash: "ab".repeat(32) };
    ledger(&table, ROOT, merge, "m4", T0 + 4_000, 1);
    ledger(&table, LOSER, LedgerOp::MergedInto { survivor: ROOT.into() }, "m4", T0 + 4_000, 2);
    for (profile, message_id, ts) in [
        (ROOT, "e1", T0 + 1_000),
        (LOSER, "e2", T0 + 2_000),
        (ROOT, "e3", T0 + 3_000),
        (LOSER, "e4", T0 + 4_000),
        (ROOT, "e5", T0 + 5_000),
    ] {
        event(&table, profile, message_id, ts);
    }
    table
}

fn api(table: MemTable) -> ProfileApi<MemTable> {
    ProfileApi::new(table, Arc::new(workspace()))
}

/// An API Gateway HTTP API (payload 2.0) event, shaped like `events/apigw/*.json`.
fn request(method: &str, raw_path: &str, query: &str, auth: Option<&str>) -> ApiGatewayV2httpRequest {
    let mut headers = json!({"host": "abc123.execute-api.us-east-1.amazonaws.com", "user-agent": "curl/8.5.0"});
    if let Some(a) = auth {
        headers["authorization"] = json!(a);
    }
    serde_json::from_value(json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": raw_path,
        "rawQueryString": query,
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "abc123",
            "http": {"method": method, "path": raw_path, "protocol": "HTTP/1.1", "sourceIp": "198.51.100.23",
                     "userAgent": "curl/8.5.0"},
            "requestId": "JKJaXmPLvHcESHA=",
            "routeKey": "$default",
            "stage": "$default",
            "time": "10/Mar/2025:12:00:00 +0000",
            "timeEpoch": 1741608000000u64
        },
        "isBase64Encoded": false
    }))
    .expect("valid API Gateway v2 event")
}

fn get(path: &str) -> ApiGatewayV2httpRequest {
    request("GET", path, "", Some(&format!("Bearer {READER_KEY}")))
}

fn body_json(resp: &ApiGatewayV2httpResponse) -> Value {
    match &resp.body {
        Some(Body::Text(t)) => serde_json::from_str(t).expect("JSON body"),
        other => panic!("unexpected body {other:?}"),
    }
}

fn body_text(resp: &ApiGatewayV2httpResponse) -> &str {
    match &resp.body {
        Some(Body::Text(t)) => t,
        _ => "",
    }
}

/// Asserts an error answer: status, JSON `{"code","message"}`, and none of `secrets` in it.
fn assert_error(resp: &ApiGatewayV2httpResponse, status: i64, code: &str, secrets: &[&str]) {
    let body = body_json(resp);
    assert_eq!(resp.status_code, status, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert!(body["message"].is_string(), "{body}");
    assert_eq!(resp.headers.get("content-type").unwrap(), "application/json");
    for s in secrets {
        assert!(!body_text(resp).to_lowercase().contains(&s.to_lowercase()), "{body} echoes {s:?}");
    }
}

#[tokio::test]
async fn profile_lists_identities_of_both_merged_profiles_and_traits_with_provenance() {
    let api = api(seeded());
    let resp = api.handle(get("/v1/profiles/user_id:u-42")).await;
    assert_eq!(resp.status_code, 200, "{}", body_text(&resp));
    assert_eq!(resp.headers.get("cache-control").unwrap(), "no-store");
    let v = body_json(&resp);
    assert_eq!(v["profile_id"], ROOT);
    assert!(v.get("requested_profile_id").is_none());
    assert_eq!(v["merged_profiles"], json!([LOSER]));
    let ids: Vec<(&str, &str, &str)> = v["identities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["type"].as_str().unwrap(), i["value"].as_str().unwrap(), i["linked_to"].as_str().unwrap()))
        .collect();
    assert_eq!(
        ids,
        [
            ("anonymous_id", "anon-9", LOSER),
            ("email", "ann+news@example.com", LOSER),
            ("phone", "+447700900123", ROOT),
            ("user_id", "u-42", ROOT),
        ]
    );
    assert_eq!(v["identities"][3]["linked_at"], "2025-03-10T12:00:00Z");
    assert_eq!(v["identities"][3]["source"], "web");
    assert_eq!(v["identities"][3]["message_id"], "m1");
    assert_eq!(
        v["traits"]["plan"],
        json!({
            "value": "pro",
            "event_time": "2025-03-10T12:00:03Z",
            "received_at": "2025-03-10T12:00:03.1Z",
            "source": "web",
            "message_id": "m-plan",
            "class": "1P",
            "set_once": false
        })
    );
    assert_eq!(v["traits"]["signup_channel"]["class"], "2P");
    assert_eq!(v["traits"]["signup_channel"]["set_once"], true);
    assert_eq!(
        v["consent"]["marketing"],
        json!({"granted": false, "event_time": "2025-03-10T12:00:05Z", "source": "web"})
    );
    assert_eq!(v["merges"].as_array().unwrap().len(), 1);
    assert_eq!(v["merges"][0]["loser"], LOSER);
    assert_eq!(v["merges"][0]["into"], ROOT);
    assert_eq!(v["merges"][0]["via"], "email");
    assert_eq!(v["merges"][0]["at"], "2025-03-10T12:00:04Z");
    assert_eq!(v["event_count"], 6);
    assert_eq!(v["first_seen"], "2025-03-10T12:00:00Z");
    assert_eq!(v["counts"]["email"], 1);
    assert_eq!(v["audiences"], json!([]));
    assert_eq!(v["overflow"], json!({"traits": 0, "merges": 0, "identities": 0, "history": 0, "counters": 0}));
}

#[tokio::test]
async fn profile_shows_the_audiences_it_is_in() {
    let table = seeded();
    let membership = tributary_core::profile::membership::Membership {
        members: BTreeMap::from([("pro".to_string(), T0 + 9_000), ("eu".to_string(), T0)]),
        recheck_at: None,
        seq: 2,
    };
    table.put(tributary_core::profile::membership::membership_key(ROOT), membership.to_attrs());
    let api = api(table);
    let resp = api.handle(get("/v1/profiles/user_id:u-42")).await;
    assert_eq!(resp.status_code, 200, "{}", body_text(&resp));
    assert_eq!(
        body_json(&resp)["audiences"],
        json!([
            {"id": "eu", "entered_at": "2025-03-10T12:00:00Z"},
            {"id": "pro", "entered_at": "2025-03-10T12:00:09Z"},
        ])
    );
}

#[tokio::test]
async fn every_spelling_of_an_identifier_finds_the_root() {
    let api = api(seeded());
    for path in [
        // Percent-encoded, other case, spaces around: normalized as ingest does.
        "/v1/profiles/email:ANN%2BNews%40Example.COM",
        "/v1/profiles/email:%20Ann%2Bnews@example.com%20",
        // HTTP APIs may hand over `rawPath` decoded: a literal `+` is not a space in a path.
        "/v1/profiles/email:ann+news@example.com",
        // A stage prefix.
        "/prod/v1/profiles/anonymous_id:anon-9",
        // A national phone number, with the workspace's default country code.
        "/v1/profiles/phone:07700%20900123",
        "/v1/profiles/phone:+44%207700%20900123/",
    ] {
        let resp = api.handle(get(path)).await;
        assert_eq!(resp.status_code, 200, "{path}: {}", body_text(&resp));
        assert_eq!(body_json(&resp)["profile_id"], ROOT, "{path}");
    }
    // Hashed forms match only what was linked in hashed form (none here).
    let hashed = tributary_core::sha256_hex(b"ann+news@example.com");
    let resp = api.handle(get(&format!("/v1/profiles/email_sha256:{hashed}"))).await;
    assert_error(&resp, 404, "profile_not_found", &[&hashed]);
}

#[tokio::test]
async fn a_merged_profile_id_gives_the_root() {
    let api = api(seeded());
    let resp = api.handle(get(&format!("/v1/profiles/profile_id:{LOSER}"))).await;
    assert_eq!(resp.status_code, 200, "{}", body_text(&resp));
    let v = body_json(&resp);
    assert_eq!(v["profile_id"], ROOT);
    assert_eq!(v["requested_profile_id"], LOSER);
    assert_eq!(v["identities"].as_array().unwrap().len(), 4);

    let resp = api.handle(get(&format!("/v1/profiles/profile_id:{ROOT}"))).await;
    assert_eq!(body_json(&resp)["profile_id"], ROOT);
}

#[tokio::test]
async fn events_page_newest_first_across_merged_profiles() {
    let api = api(seeded());
    let auth = format!("Bearer {READER_KEY}");
    let mut seen = Vec::new();
    let mut query = "limit=2".to_string();
    for _ in 0..10 {
        let resp =
            api.handle(request("GET", "/v1/profiles/email:ann%2Bnews%40example.com/events", &query, Some(&auth))).await;
        assert_eq!(resp.status_code, 200, "{}", body_text(&resp));
        let page = body_json(&resp);
        let events = page["events"].as_array().unwrap();
        assert!(events.len() <= 2);
        for e in events {
            assert_eq!(e["type"], "track");
            assert_eq!(e["event"]["event"], "Song Played");
            seen.push(e["message_id"].as_str().unwrap().to_string());
        }
        match page["next"].as_str() {
            // Cursors hold `#`, which a client percent-encodes.
            Some(next) => query = format!("limit=2&cursor={}", next.replace('#', "%23")),
            None => break,
        }
    }
    assert_eq!(seen, ["e5", "e4", "e3", "e2", "e1"]);

    let resp = api.handle(get("/v1/profiles/user_id:u-42/events")).await;
    let page = body_json(&resp);
    assert_eq!(page["events"].as_array().unwrap().len(), 5);
    assert_eq!(page["next"], Value::Null);

    // A huge limit is clamped, not refused.
    let resp = api.handle(request("GET", "/v1/profiles/user_id:u-42/events", "limit=100000", Some(&auth))).await;
    assert_eq!(resp.status_code, 200);

    for (query, code) in
        [("limit=abc", "invalid_limit"), ("limit=-1", "invalid_limit"), ("cursor=l%230", "invalid_cursor")]
    {
        let resp = api.handle(request("GET", "/v1/profiles/user_id:u-42/events", query, Some(&auth))).await;
        assert_error(&resp, 400, code, &["u-42"]);
    }
}

#[tokio::test]
async fn management_keys_are_checked() {
    let api = api(seeded());
    let path = "/v1/profiles/email:ann%2Bnews%40example.com";
    for auth in [
        None,
        Some("Bearer wrong-key".to_string()),
        Some("Bearer ".to_string()),
        Some(format!("Basic {READER_KEY}")),
        Some(READER_KEY.to_string()),
    ] {
        let resp = api.handle(request("GET", path, "", auth.as_deref())).await;
        assert_error(&resp, 401, "unauthorized", &["ann", "news@", READER_KEY]);
        assert_eq!(resp.headers.get("www-authenticate").unwrap(), "Bearer", "{auth:?}");
    }
    let resp = api.handle(request("GET", path, "", Some(&format!("Bearer {DSR_KEY}")))).await;
    assert_error(&resp, 403, "forbidden", &["ann", "news@"]);
    // An unauthenticated caller learns nothing about a bad lookup either.
    let resp = api.handle(request("GET", "/v1/profiles/bogus", "", None)).await;
    assert_error(&resp, 401, "unauthorized", &[]);

    for auth in [format!("Bearer {ADMIN_KEY}"), format!("bearer  {READER_KEY} ")] {
        let resp = api.handle(request("GET", path, "", Some(&auth))).await;
        assert_eq!(resp.status_code, 200, "{auth}: {}", body_text(&resp));
    }
}

#[tokio::test]
async fn refusals_carry_codes_and_never_the_identifier() {
    let api = api(seeded());
    let resp = api.handle(get("/v1/profiles/email:nobody%40example.com")).await;
    assert_error(&resp, 404, "profile_not_found", &["nobody"]);
    let resp = api.handle(get("/v1/profiles/user_id:ghost-user/events")).await;
    assert_error(&resp, 404, "profile_not_found", &["ghost-user"]);
    let resp = api.handle(get("/v1/profiles/profile_id:prof_nothere")).await;
    assert_error(&resp, 404, "profile_not_found", &["prof_nothere"]);

    for (path, secret) in [
        ("/v1/profiles/email:secret-not-an-email", "secret-not-an-email"),
        ("/v1/profiles/emial:secret%40example.com", "secret@example.com"),
        ("/v1/profiles/secret-no-colon", "secret-no-colon"),
        ("/v1/profiles/phone:secret-12", "secret-12"),
        ("/v1/profiles/email:%FF%FEsecret", "secret"),
        ("/v1/profiles/email_sha256:secretsecret", "secretsecret"),
        ("/v1/profiles/profile_id:secret%20id", "secret id"),
        ("/v1/profiles/ext:*:secret-ext", "secret-ext"),
    ] {
        let resp = api.handle(get(path)).await;
        assert_error(&resp, 400, "invalid_lookup", &[secret]);
    }

    for path in ["/v1/profiles", "/v1/profiles/", "/v1/track", "/", "/v2/profiles/user_id:u-42"] {
        let resp = api.handle(get(path)).await;
        assert_error(&resp, 404, "not_found", &[]);
    }
    for method in ["POST", "DELETE", "PUT", "HEAD"] {
        let resp =
            api.handle(request(method, "/v1/profiles/user_id:u-42", "", Some(&format!("Bearer {READER_KEY}")))).await;
        assert_error(&resp, 405, "method_not_allowed", &["u-42"]);
        assert_eq!(resp.headers.get("allow").unwrap(), "GET");
    }
}

#[tokio::test]
async fn store_failures_map_to_503_and_500() {
    let table = Faulty::new(seeded());
    let api = ProfileApi::new(table.clone(), Arc::new(workspace()));
    // Reads fail, the audit log still takes rows: the failure is answered (and audited).
    table.fail_reads(Some(PortError::Throttled("slow down".into())));
    let resp = api.handle(get("/v1/profiles/user_id:u-42")).await;
    assert_error(&resp, 503, "unavailable", &["u-42"]);
    assert_eq!(resp.headers.get("retry-after").unwrap(), "1");

    table.fail_reads(Some(PortError::Invalid("bad request".into())));
    let resp = api.handle(get("/v1/profiles/user_id:u-42/events")).await;
    assert_error(&resp, 500, "internal", &["u-42"]);
    // Two rows (the same millisecond, maybe: their order is the nonces').
    let mut outcomes: Vec<String> = audit_rows(table.inner()).iter().map(|r| r.outcome.clone()).collect();
    outcomes.sort();
    assert_eq!(outcomes, ["500", "503"]);

    // An undecodable document is a 500 that does not name the lookup.
    table.fail_reads(None);
    let mut bad = Map::new();
    bad.insert("created_at".into(), json!("not a number"));
    table.inner().put(layout::profile_key(ROOT), bad);
    let resp = api.handle(get("/v1/profiles/email:ann%2Bnews%40example.com")).await;
    assert_error(&resp, 500, "internal", &["ann"]);

    // With the whole table down, the audit row cannot be written either: the answer says so.
    table.inner().fail_with(Some(PortError::Unavailable("down".into())));
    let resp = api.handle(get("/v1/profiles/user_id:u-42")).await;
    assert_error(&resp, 503, "audit_unavailable", &["u-42"]);
}

// ---------------------------------------------------------------------------------------------------------------
// GET /v1/sources/{id}/stats
// ---------------------------------------------------------------------------------------------------------------

const STATS_NOW: OffsetDateTime = datetime!(2025-03-10 12:30 UTC);

/// Counters of `source` for `name` in the hour of `at`, as ingest leaves them.
fn stat(table: &MemTable, source: &str, at: OffsetDateTime, name: &str, counts: Value) {
    let Value::Object(mut attrs) = counts else { panic!("counts are an object") };
    attrs.insert("name".into(), json!(name));
    table.put(stats::key(source, at, name), attrs);
}

/// `web`: two names over several hours, `app`: one; all around [`STATS_NOW`].
fn stats_seeded() -> MemTable {
    let table = seeded();
    stat(&table, "web", datetime!(2025-03-08 12:00 UTC), "Order Completed", json!({"accepted": 1000}));
    stat(&table, "web", datetime!(2025-03-09 13:05 UTC), "Order Completed", json!({"accepted": 5, "pii_actioned": 2}));
    stat(&table, "web", datetime!(2025-03-10 09:59 UTC), "Order Completed", json!({"accepted": 3, "quarantined": 1}));
    stat(
        &table,
        "web",
        datetime!(2025-03-10 12:10 UTC),
        "Order Completed",
        json!({"dropped_properties": 4, "accepted": 4}),
    );
    stat(&table, "web", datetime!(2025-03-10 10:00 UTC), "Secret Thing", json!({"quarantined": 7}));
    stat(
        &table,
        "web",
        datetime!(2025-03-10 11:00 UTC),
        "(identify)",
        json!({"accepted": 2, "dropped": 1, "pii_actioned": 1}),
    );
    stat(&table, "app", datetime!(2025-03-10 11:00 UTC), "Order Completed", json!({"accepted": 99}));
    table
}

fn stats_api(table: MemTable) -> ProfileApi<MemTable> {
    api(table).with_clock(|| STATS_NOW)
}

fn stats_get(path: &str, query: &str) -> ApiGatewayV2httpRequest {
    request("GET", path, query, Some(&format!("Bearer {READER_KEY}")))
}

#[tokio::test]
async fn source_stats_sum_the_last_24_hours_by_event_name() {
    let api = stats_api(stats_seeded());
    let resp = api.handle(stats_get("/v1/sources/web/stats", "")).await;
    assert_eq!(resp.status_code, 200, "{}", body_text(&resp));
    assert_eq!(resp.headers.get("content-type").unwrap(), "application/json");
    assert_eq!(
        body_json(&resp),
        json!({
            "source": "web",
            "since": "2025-03-09T12:30:00Z",
            "until": "2025-03-10T12:30:00Z",
            "events": [
                {"name": "(identify)", "accepted": 2, "dropped_properties": 0, "quarantined": 0, "pii_actioned": 1,
                 "dropped": 1},
                {"name": "Order Completed", "accepted": 12, "dropped_properties": 4, "quarantined": 1,
                 "pii_actioned": 2, "dropped": 0},
                {"name": "Secret Thing", "accepted": 0, "dropped_properties": 0, "quarantined": 7, "pii_actioned": 0,
                 "dropped": 0},
            ],
            "totals": {"accepted": 14, "dropped_properties": 4, "quarantined": 8, "pii_actioned": 3, "dropped": 1},
        })
    );
}

#[tokio::test]
async fn source_stats_take_an_rfc3339_window() {
    let api = stats_api(stats_seeded());
    // Hours overlapping [10:00, 11:00) only; a `+` offset may arrive encoded or turned into a space.
    for query in [
        "since=2025-03-10T10:00:00Z&until=2025-03-10T11:00:00Z",
        "since=2025-03-10T12:00:00%2B02:00&until=2025-03-10T13:00:00%2B02:00",
        "since=2025-03-10T12:00:00+02:00&until=2025-03-10T11:00:00Z",
    ] {
        let resp = api.handle(stats_get("/v1/sources/web/stats", query)).await;
        assert_eq!(resp.status_code, 200, "{query}: {}", body_text(&resp));
        let v = body_json(&resp);
        assert_eq!(
            (v["since"].as_str(), v["until"].as_str()),
            (Some("2025-03-10T10:00:00Z"), Some("2025-03-10T11:00:00Z"))
        );
        assert_eq!(v["events"].as_array().unwrap().len(), 1, "{query}: {v}");
        assert_eq!(v["events"][0]["name"], "Secret Thing");
        assert_eq!(v["totals"]["quarantined"], 7);
    }
    // Only `since`: up to now. Another source: only its own counters. A window with nothing: empty, not 404.
    let resp = api.handle(stats_get("/v1/sources/web/stats", "since=2025-03-01T00:00:00Z")).await;
    assert_eq!(body_json(&resp)["totals"]["accepted"], 1014);
    let resp = api.handle(stats_get("/v1/sources/app/stats", "")).await;
    assert_eq!(body_json(&resp)["totals"]["accepted"], 99);
    let resp =
        api.handle(stats_get("/v1/sources/app/stats/", "since=2020-01-01T00:00:00Z&until=2020-01-02T00:00:00Z")).await;
    let v = body_json(&resp);
    assert_eq!((v["events"].clone(), v["totals"]["accepted"].clone()), (json!([]), json!(0)));
}

#[tokio::test]
async fn source_stats_refuse_bad_times_unknown_sources_and_strangers() {
    let api = stats_api(stats_seeded());
    for query in [
        "since=yesterday",
        "until=2025-03-10",
        "since=2025-03-10T12:00:00Z&until=2025-03-10T12:00:00Z",
        "since=2025-03-11T00:00:00Z&until=2025-03-10T00:00:00Z",
        "since=2025-03-10T12:00:00Z&until=1741608000",
    ] {
        let resp = api.handle(stats_get("/v1/sources/web/stats", query)).await;
        assert_error(&resp, 400, "invalid_time", &["yesterday", "1741608000"]);
    }
    let resp = api.handle(stats_get("/v1/sources/nope/stats", "")).await;
    assert_error(&resp, 404, "source_not_found", &["nope"]);
    let resp = api.handle(stats_get("/v1/sources/web%FF/stats", "")).await;
    assert_error(&resp, 404, "source_not_found", &[]);
    for path in ["/v1/sources/web", "/v1/sources/web/stats/more", "/v1/sources//stats"] {
        assert_error(&api.handle(stats_get(path, "")).await, 404, "not_found", &[]);
    }

    // Authentication comes first: a stranger learns nothing about which sources exist.
    for auth in [None, Some("Bearer wrong-key".to_string())] {
        for path in ["/v1/sources/web/stats", "/v1/sources/nope/stats"] {
            let resp = api.handle(request("GET", path, "", auth.as_deref())).await;
            assert_error(&resp, 401, "unauthorized", &[]);
        }
    }
    let resp = api.handle(request("GET", "/v1/sources/web/stats", "", Some(&format!("Bearer {DSR_KEY}")))).await;
    assert_error(&resp, 403, "forbidden", &[]);
    let resp = api.handle(request("GET", "/v1/sources/web/stats", "", Some(&format!("Bearer {ADMIN_KEY}")))).await;
    assert_eq!(resp.status_code, 200, "{}", body_text(&resp));
    let resp = api.handle(request("POST", "/v1/sources/web/stats", "", Some(&format!("Bearer {ADMIN_KEY}")))).await;
    assert_error(&resp, 405, "method_not_allowed", &[]);
}

#[tokio::test]
async fn source_stats_store_failures_map_to_503_and_500() {
    let table = stats_seeded();
    let api = stats_api(table.clone());
    table.fail_with(Some(PortError::Unavailable("down".into())));
    let resp = api.handle(stats_get("/v1/sources/web/stats", "")).await;
    assert_error(&resp, 503, "unavailable", &[]);
    assert_eq!(resp.headers.get("retry-after").unwrap(), "1");
    table.fail_with(Some(PortError::Invalid("bad".into())));
    let resp = api.handle(stats_get("/v1/sources/web/stats", "")).await;
    assert_error(&resp, 500, "internal", &[]);
}

fn receipt(table: &MemTable, profile: &str, dest: &str, message_id: &str, status: ReceiptStatus, error: Option<&str>) {
    let r = Receipt {
        d: dest.into(),
        m: message_id.into(),
        src: "web".into(),
        t: "track".into(),
        name: Some("Song Played".into()),
        s: status,
        n: if error.is_some() { 3 } else { 1 },
        r: 1,
        e: error.map(str::to_string),
        first: T0,
        at: T0 + 1_000,
    };
    table.put(receipt_key(Some(profile), dest, message_id), r.to_attrs());
}

#[tokio::test]
async fn deliveries_list_receipts_of_the_root_and_merged_profiles_page_by_page() {
    let table = seeded();
    receipt(&table, ROOT, "hook", "e1", ReceiptStatus::Delivered, None);
    receipt(&table, LOSER, "hook", "e2", ReceiptStatus::Delivered, None);
    receipt(&table, ROOT, "meta", "e1", ReceiptStatus::Failed, Some("http_400"));
    let api = api(table);
    let auth = format!("Bearer {READER_KEY}");
    let mut seen = Vec::new();
    let mut query = "limit=2".to_string();
    for _ in 0..5 {
        let resp = api.handle(request("GET", "/v1/profiles/user_id:u-42/deliveries", &query, Some(&auth))).await;
        assert_eq!(resp.status_code, 200, "{}", body_text(&resp));
        let page = body_json(&resp);
        seen.extend(page["deliveries"].as_array().unwrap().iter().cloned());
        match page["next"].as_str() {
            Some(next) => query = format!("limit=2&cursor={}", next.replace('#', "%23")),
            None => break,
        }
    }
    let mut got: Vec<(String, String, String)> = seen
        .iter()
        .map(|d| {
            let s = |k: &str| d[k].as_str().unwrap_or_default().to_string();
            (s("destination"), s("messageId"), s("status"))
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("hook".to_string(), "e1".to_string(), "delivered".to_string()),
            ("hook".to_string(), "e2".to_string(), "delivered".to_string()),
            ("meta".to_string(), "e1".to_string(), "failed".to_string()),
        ]
    );
    let failed = seen.iter().find(|d| d["destination"] == "meta").unwrap();
    assert_eq!(failed["lastError"], "http_400");
    assert_eq!(failed["attempts"], 3);
    assert_eq!(failed["event"], "Song Played");

    let resp = api.handle(request("GET", "/v1/profiles/user_id:u-42/deliveries", "", None)).await;
    assert_error(&resp, 401, "unauthorized", &["u-42"]);
    let resp = api.handle(request("GET", "/v1/profiles/user_id:u-42/deliveries", "cursor=e%230", Some(&auth))).await;
    assert_error(&resp, 400, "invalid_cursor", &["u-42"]);
}

// ---------------------------------------------------------------------------------------------------------------
// GET /v1/sources/{id}/imports
// ---------------------------------------------------------------------------------------------------------------

fn import_state(
    table: &MemTable,
    source: &str,
    key: &str,
    started_at: i64,
    status: tributary_core::import::ImportStatus,
) {
    use tributary_core::import::{import_object, state_key, ImportState};
    let object = import_object("drop", key, Some("v1"), 100).expect("import key");
    let mut state = ImportState::start(&object, started_at);
    state.status = status;
    state.rows = 10;
    state.accepted = 9;
    state.rejected = 1;
    state.reasons.insert("bad_email".into(), 1);
    let Value::Object(attrs) = serde_json::to_value(&state).expect("state") else { panic!("object") };
    table.put(state_key(source, &object.file), attrs);
}

#[tokio::test]
async fn source_imports_are_listed_newest_first_with_counts() {
    use tributary_core::import::ImportStatus;
    let table = seeded();
    import_state(&table, "web", "imports/web/old.csv", T0, ImportStatus::Done);
    import_state(&table, "web", "imports/web/new.csv.gz", T0 + 60_000, ImportStatus::Running);
    import_state(&table, "app", "imports/app/other.csv", T0, ImportStatus::Failed);
    let api = api(table);

    let resp = api.handle(get("/v1/sources/web/imports")).await;
    assert_eq!(resp.status_code, 200, "{}", body_text(&resp));
    let body = body_json(&resp);
    assert_eq!(body["sourceId"], "web");
    let files: Vec<&str> =
        body["imports"].as_array().expect("imports").iter().filter_map(|i| i["file"].as_str()).collect();
    assert_eq!(files, ["imports/web/new.csv.gz", "imports/web/old.csv"], "newest first, this source only");
    let old = &body["imports"][1];
    assert_eq!(
        (old["status"].as_str(), old["rows"].as_u64(), old["rejected"].as_u64()),
        (Some("done"), Some(10), Some(1))
    );
    assert_eq!(old["reasons"]["bad_email"], 1);
    assert_eq!(old["rejectsReport"], "import-reports/web/old.csv.rejects.csv");
    assert_eq!(old["startedAt"], "2025-03-10T12:00:00Z");

    let one =
        api.handle(request("GET", "/v1/sources/web/imports", "limit=1", Some(&format!("Bearer {ADMIN_KEY}")))).await;
    assert_eq!(body_json(&one)["imports"].as_array().map(Vec::len), Some(1));
    assert_error(
        &api.handle(request("GET", "/v1/sources/web/imports", "limit=0", Some(&format!("Bearer {ADMIN_KEY}")))).await,
        400,
        "invalid_limit",
        &[],
    );
    assert_error(&api.handle(get("/v1/sources/nope/imports")).await, 404, "source_not_found", &[]);
    assert_error(&api.handle(request("GET", "/v1/sources/web/imports", "", None)).await, 401, "unauthorized", &[]);
    assert_error(
        &api.handle(request("GET", "/v1/sources/web/imports", "", Some(&format!("Bearer {DSR_KEY}")))).await,
        403,
        "forbidden",
        &[],
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Audit log, scopes, suppressions
// ---------------------------------------------------------------------------------------------------------------

/// A table that fails on demand: reads with one error, writes of audit rows with another, and that can slip a
/// write in right before the next transaction (a concurrent writer winning a race).
type Faulty = FaultyTable<MemTable>;

/// Fails (`Some`) or lets through (`None`) every write of an audit row.
fn fail_audit(table: &Faulty, error: Option<PortError>) {
    table.fail_writes_with_prefix("audit#", error);
}

/// Every audit row in the table, in key order (oldest first).
fn audit_rows(table: &MemTable) -> Vec<AuditRow> {
    audit_items(table).iter().map(|i| AuditRow::from_attrs(&i.attrs).expect("an audit row")).collect()
}

fn audit_items(table: &MemTable) -> Vec<Item> {
    table.items().into_iter().filter(|i| i.key.pk.starts_with("audit#")).collect()
}

/// Asserts no audit row holds any of `secrets` (case-insensitively), in any attribute or key.
fn assert_audit_holds_no(table: &MemTable, secrets: &[&str]) {
    for item in audit_items(table) {
        let text = format!("{:?} {}", item.key, Value::Object(item.attrs.clone())).to_lowercase();
        for s in secrets {
            assert!(!text.contains(&s.to_lowercase()), "an audit row holds {s:?}: {text}");
        }
    }
}

fn target(key: &str) -> String {
    format!("sha256:{}", tributary_core::sha256_hex(key.as_bytes()))
}

const AUDIT_NOW: OffsetDateTime = datetime!(2025-03-10 12:30 UTC);
const AUDIT_NOW_MS: i64 = 1_741_609_800_000;

fn audited_api(table: MemTable) -> ProfileApi<MemTable> {
    api(table).with_clock(|| AUDIT_NOW)
}

fn with_key(method: &str, path: &str, query: &str, key: &str) -> ApiGatewayV2httpRequest {
    request(method, path, query, Some(&format!("Bearer {key}")))
}

#[tokio::test]
async fn every_profile_read_is_audited_by_hash_before_it_is_answered() {
    let table = seeded();
    let api = audited_api(table.clone());
    let cases = [
        (
            "/v1/profiles/email:ANN%2BNews%40Example.COM",
            ADMIN_KEY,
            "admin",
            "profile.read",
            "email:ann+news@example.com",
            200,
        ),
        ("/v1/profiles/user_id:u-42/events", READER_KEY, "reader", "profile.events", "user_id:u-42", 200),
        (
            "/v1/profiles/phone:07700%20900123/deliveries",
            READER_KEY,
            "reader",
            "profile.deliveries",
            "phone:+447700900123",
            200,
        ),
        (
            "/v1/profiles/email:nobody%40example.com",
            READER_KEY,
            "reader",
            "profile.read",
            "email:nobody@example.com",
            404,
        ),
        (
            "/v1/profiles/profile_id:prof_loser000000000000000002",
            READER_KEY,
            "reader",
            "profile.read",
            "profile_id:prof_loser000000000000000002",
            200,
        ),
        (
            "/v1/profiles/emial:secret%40example.com",
            READER_KEY,
            "reader",
            "profile.read",
            "emial:secret@example.com",
            400,
        ),
    ];
    for (n, (path, key, actor, action, lookup, status)) in cases.iter().enumerate() {
        let resp = api.handle(with_key("GET", path, "", key)).await;
        assert_eq!(resp.status_code, i64::from(*status), "{path}: {}", body_text(&resp));
        let rows = audit_rows(&table);
        assert_eq!(rows.len(), n + 1, "one row per read, {path}");
        let row = rows.iter().find(|r| r.target == target(lookup)).expect("the row of this read");
        assert_eq!(
            (row.actor.as_str(), row.action.as_str(), row.outcome.as_str(), row.at),
            (*actor, *action, status.to_string().as_str(), AUDIT_NOW_MS),
            "{path}"
        );
    }
    // Keyed by day and time, one nonce each.
    for item in audit_items(&table) {
        assert_eq!(item.key.pk, "audit#2025-03-10");
        assert!(item.key.sk.starts_with(&format!("{AUDIT_NOW_MS}#")), "{}", item.key.sk);
    }
    // Refused callers read nothing and are not audited (the request log has them).
    for (auth, status) in [(None, 401), (Some(format!("Bearer {DSR_KEY}")), 403)] {
        let resp = api.handle(request("GET", "/v1/profiles/user_id:u-42", "", auth.as_deref())).await;
        assert_eq!(resp.status_code, status);
    }
    assert_eq!(audit_rows(&table).len(), cases.len());
    assert_audit_holds_no(&table, &["ann", "news", "u-42", "nobody", "7700", "secret", "example.com"]);
}

#[tokio::test]
async fn an_audit_log_that_cannot_be_written_withholds_every_profile_read() {
    let table = Faulty::new(seeded());
    let api = ProfileApi::new(table.clone(), Arc::new(workspace()));
    for error in [PortError::Unavailable("down".into()), PortError::Invalid("bad".into())] {
        fail_audit(&table, Some(error));
        for path in [
            "/v1/profiles/user_id:u-42",
            "/v1/profiles/user_id:u-42/events",
            "/v1/profiles/user_id:u-42/deliveries",
            "/v1/profiles/user_id:nobody",
        ] {
            let resp = api.handle(get(path)).await;
            assert_error(&resp, 503, "audit_unavailable", &["u-42", ROOT, "Song Played", "pro"]);
            assert_eq!(resp.headers.get("retry-after").unwrap(), "1");
        }
        // A nonce already taken is never overwritten: the write is refused (and tried again, under another
        // nonce, at most a few times).
        fail_audit(&table, Some(PortError::ConditionFailed("taken".into())));
        assert_error(&api.handle(get("/v1/profiles/user_id:u-42")).await, 503, "audit_unavailable", &[]);
    }
    assert!(audit_rows(table.inner()).is_empty());
    // Routes that read no personal data do not need the audit log.
    let resp = api.handle(get("/v1/sources/web/imports")).await;
    assert_eq!(resp.status_code, 200, "{}", body_text(&resp));
    fail_audit(&table, None);
    assert_eq!(api.handle(get("/v1/profiles/user_id:u-42")).await.status_code, 200);
    assert_eq!(audit_rows(table.inner()).len(), 1);
}

#[tokio::test]
async fn every_route_checks_its_scope() {
    let table = seeded();
    table.put(layout::identity_key(&id(IdType::Email, "gone@example.com")), tombstone_attrs("email", "req-1", T0));
    let api = audited_api(table);
    let routes = [
        ("GET", "/v1/profiles/user_id:u-42"),
        ("GET", "/v1/profiles/user_id:u-42/events"),
        ("GET", "/v1/profiles/user_id:u-42/deliveries"),
        ("GET", "/v1/sources/web/stats"),
        ("GET", "/v1/sources/web/imports"),
        ("GET", "/v1/audit"),
        ("GET", "/v1/suppressions/email:gone%40example.com"),
        ("DELETE", "/v1/suppressions/email:gone%40example.com"),
    ];
    // (route, reader, dsr, admin): allowed or not. The DELETE comes last, so the GET still finds the tombstone.
    let allowed = [
        (true, false, true),
        (true, false, true),
        (true, false, true),
        (true, false, true),
        (true, false, true),
        (false, false, true),
        (false, true, true),
        (false, false, true),
    ];
    for ((method, path), (reader, dsr, admin)) in routes.iter().zip(allowed) {
        for auth in [None, Some("Bearer unknown-key".to_string()), Some("Basic whatever".to_string())] {
            let resp = api.handle(request(method, path, "", auth.as_deref())).await;
            assert_error(&resp, 401, "unauthorized", &["gone", "u-42"]);
            assert_eq!(resp.headers.get("www-authenticate").unwrap(), "Bearer");
        }
        for (key, ok) in [(READER_KEY, reader), (DSR_KEY, dsr), (ADMIN_KEY, admin)] {
            let resp = api.handle(with_key(method, path, "", key)).await;
            if ok {
                assert_eq!(resp.status_code, 200, "{method} {path} with {key}: {}", body_text(&resp));
            } else {
                assert_error(&resp, 403, "forbidden", &["gone", "u-42"]);
            }
        }
    }
    // Methods a route does not answer.
    let resp = api.handle(with_key("DELETE", "/v1/audit", "", ADMIN_KEY)).await;
    assert_error(&resp, 405, "method_not_allowed", &[]);
    assert_eq!(resp.headers.get("allow").unwrap(), "GET");
    let resp = api.handle(with_key("POST", "/v1/suppressions/email:gone%40example.com", "", ADMIN_KEY)).await;
    assert_error(&resp, 405, "method_not_allowed", &["gone"]);
    assert_eq!(resp.headers.get("allow").unwrap(), "GET, DELETE");
}

#[tokio::test]
async fn the_audit_log_lists_one_day_oldest_first_page_by_page() {
    let table = seeded();
    let clock = Arc::new(Mutex::new(AUDIT_NOW));
    let tick = clock.clone();
    let api = api(table.clone()).with_clock(move || *tick.lock().unwrap());
    for (n, path) in
        ["/v1/profiles/user_id:u-42", "/v1/profiles/user_id:u-42/events", "/v1/profiles/anonymous_id:anon-9"]
            .iter()
            .enumerate()
    {
        *clock.lock().unwrap() = AUDIT_NOW + time::Duration::seconds(n as i64);
        assert_eq!(api.handle(get(path)).await.status_code, 200);
    }
    // The next day: another partition.
    *clock.lock().unwrap() = AUDIT_NOW + time::Duration::days(1);
    assert_eq!(api.handle(get("/v1/profiles/user_id:u-42/deliveries")).await.status_code, 200);

    let mut seen = Vec::new();
    let mut query = "date=2025-03-10&limit=2".to_string();
    for _ in 0..5 {
        let resp = api.handle(with_key("GET", "/v1/audit", &query, ADMIN_KEY)).await;
        assert_eq!(resp.status_code, 200, "{}", body_text(&resp));
        let page = body_json(&resp);
        assert_eq!(page["date"], "2025-03-10");
        let rows = page["rows"].as_array().expect("rows");
        assert!(rows.len() <= 2);
        seen.extend(rows.iter().cloned());
        match page["next"].as_str() {
            Some(next) => query = format!("date=2025-03-10&limit=2&cursor={}", next.replace('#', "%23")),
            None => break,
        }
    }
    let actions: Vec<&str> = seen.iter().map(|r| r["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["profile.read", "profile.events", "profile.read"], "oldest first");
    assert_eq!(seen[0]["target"], target("user_id:u-42"));
    assert_eq!(seen[2]["target"], target("anonymous_id:anon-9"));
    assert_eq!(seen[1]["at"], "2025-03-10T12:30:01Z");
    assert_eq!(seen[0]["actor"], "reader");
    assert_eq!(seen[0]["outcome"], "200");

    // No date: today (by the clock). A day without rows: empty. A huge limit is clamped.
    let resp = api.handle(with_key("GET", "/v1/audit", "", ADMIN_KEY)).await;
    let page = body_json(&resp);
    assert_eq!(page["date"], "2025-03-11");
    assert_eq!(page["rows"].as_array().map(Vec::len), Some(1));
    assert_eq!(page["rows"][0]["action"], "profile.deliveries");
    let resp = api.handle(with_key("GET", "/v1/audit", "date=2020-01-01&limit=100000", ADMIN_KEY)).await;
    assert_eq!(body_json(&resp), json!({"date": "2020-01-01", "rows": [], "next": null}));

    for (query, code) in [
        ("date=yesterday", "invalid_date"),
        ("date=2025-13-01", "invalid_date"),
        ("date=2025-03-10T00:00:00Z", "invalid_date"),
        ("limit=abc", "invalid_limit"),
        ("cursor=e%230", "invalid_cursor"),
        ("cursor=1741609800000%23a%20b", "invalid_cursor"),
    ] {
        let resp = api.handle(with_key("GET", "/v1/audit", query, ADMIN_KEY)).await;
        assert_error(&resp, 400, code, &[]);
    }
    // Listing the log is not itself a read of personal data: no row for it.
    assert_eq!(audit_rows(&table).len(), 4);
}

/// Tombstones of `id` (and its hashed form, when `hashed`) as erasure leaves them, over whatever was there.
fn erase(table: &MemTable, identifier: &Identifier, request: &str, hashed: bool) {
    let mut forms = vec![identifier.clone()];
    if hashed {
        forms.push(identifier.hashed());
    }
    for form in forms {
        table.put(layout::identity_key(&form), tombstone_attrs(&form.kind.name(), request, T0 + 60_000));
    }
}

const REQUEST_ID: &str = "a7c5e3d0-1b2f-4c6d-8e9f-0a1b2c3d4e5f";

#[tokio::test]
async fn a_suppression_is_found_by_any_spelling_and_by_its_hashed_form() {
    let table = seeded();
    let erased = id(IdType::Email, "erased@example.com");
    erase(&table, &erased, REQUEST_ID, true);
    // Only the hashed form of another email was erased (a controller that only had the hash).
    let hashed_only = id(IdType::Email, "hashonly@example.com");
    table.put(layout::identity_key(&hashed_only.hashed()), tombstone_attrs("email_sha256", "req-h", T0));
    let api = audited_api(table.clone());

    for (path, key) in [
        ("/v1/suppressions/email:Erased%40Example.COM", DSR_KEY),
        ("/v1/suppressions/email:%20erased@example.com%20", ADMIN_KEY),
    ] {
        let resp = api.handle(with_key("GET", path, "", key)).await;
        assert_eq!(resp.status_code, 200, "{path}: {}", body_text(&resp));
        assert_eq!(resp.headers.get("cache-control").unwrap(), "no-store");
        assert_eq!(
            body_json(&resp),
            json!({
                "suppressed": true,
                "request": REQUEST_ID,
                "at": "2025-03-10T12:01:00Z",
                "identifiers": [
                    {"type": "email", "request": REQUEST_ID, "at": "2025-03-10T12:01:00Z"},
                    {"type": "email_sha256", "request": REQUEST_ID, "at": "2025-03-10T12:01:00Z"},
                ],
            })
        );
    }
    let resp = api
        .handle(with_key("GET", &format!("/v1/suppressions/email_sha256:{}", erased.hashed().value), "", DSR_KEY))
        .await;
    assert_eq!(body_json(&resp)["request"], REQUEST_ID);
    let resp = api.handle(with_key("GET", "/v1/suppressions/email:hashonly%40example.com", "", DSR_KEY)).await;
    assert_eq!(resp.status_code, 200, "{}", body_text(&resp));
    assert_eq!(body_json(&resp)["request"], "req-h");
    assert_eq!(body_json(&resp)["identifiers"][0]["type"], "email_sha256");

    // Live identities and unknown ones are not suppressed; a profile id is not an identifier.
    for path in [
        "/v1/suppressions/user_id:u-42",
        "/v1/suppressions/email:ann%2Bnews%40example.com",
        "/v1/suppressions/email:nobody%40example.com",
    ] {
        let resp = api.handle(with_key("GET", path, "", DSR_KEY)).await;
        assert_error(&resp, 404, "not_suppressed", &["u-42", "ann", "nobody"]);
    }
    let resp = api.handle(with_key("GET", &format!("/v1/suppressions/profile_id:{ROOT}"), "", DSR_KEY)).await;
    assert_error(&resp, 400, "invalid_lookup", &[ROOT]);
    let resp = api.handle(with_key("GET", "/v1/suppressions/email:not-an-email-secret", "", DSR_KEY)).await;
    assert_error(&resp, 400, "invalid_lookup", &["not-an-email-secret"]);

    // Every lookup is audited, by hash.
    let rows = audit_rows(&table);
    assert_eq!(rows.len(), 9);
    assert!(rows.iter().all(|r| r.action == "suppression.read"));
    let erased_reads: Vec<&AuditRow> = rows.iter().filter(|r| r.target == target("email:erased@example.com")).collect();
    assert_eq!(erased_reads.len(), 2);
    assert_eq!(erased_reads.iter().filter(|r| r.actor == "dsr").count(), 1);
    assert_audit_holds_no(&table, &["erased", "hashonly", "u-42", "ann", "nobody", "not-an-email", "example.com"]);
}

#[tokio::test]
async fn lifting_a_suppression_deletes_only_its_tombstones_and_is_audited() {
    let table = seeded();
    let erased = id(IdType::Email, "erased@example.com");
    erase(&table, &erased, REQUEST_ID, true);
    let api = audited_api(table.clone());
    let path = "/v1/suppressions/email:ERASED%40example.com";

    let resp = api.handle(with_key("DELETE", path, "", DSR_KEY)).await;
    assert_error(&resp, 403, "forbidden", &["erased"]);
    let resp = api.handle(with_key("DELETE", path, "", READER_KEY)).await;
    assert_error(&resp, 403, "forbidden", &["erased"]);

    let resp = api.handle(with_key("DELETE", path, "", ADMIN_KEY)).await;
    assert_eq!(resp.status_code, 200, "{}", body_text(&resp));
    assert_eq!(
        body_json(&resp),
        json!({"lifted": [
            {"type": "email", "request": REQUEST_ID, "at": "2025-03-10T12:01:00Z"},
            {"type": "email_sha256", "request": REQUEST_ID, "at": "2025-03-10T12:01:00Z"},
        ]})
    );
    for form in [erased.clone(), erased.hashed()] {
        assert!(table.get(&layout::identity_key(&form)).await.unwrap().is_none(), "{:?}", form.kind);
    }
    let rows = audit_rows(&table);
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].actor.as_str(), rows[0].action.as_str(), rows[0].target.clone(), rows[0].outcome.as_str()),
        ("admin", "suppression.lift", target("email:erased@example.com"), "200")
    );

    // Nothing left to lift: 404, audited too.
    let resp = api.handle(with_key("GET", path, "", ADMIN_KEY)).await;
    assert_error(&resp, 404, "not_suppressed", &["erased"]);
    let resp = api.handle(with_key("DELETE", path, "", ADMIN_KEY)).await;
    assert_error(&resp, 404, "not_suppressed", &["erased"]);
    assert_eq!(audit_rows(&table).iter().filter(|r| r.action == "suppression.lift").count(), 2);

    // A live identity item is never deleted: not even one whose hashed form is a tombstone.
    let resp = api.handle(with_key("DELETE", "/v1/suppressions/user_id:u-42", "", ADMIN_KEY)).await;
    assert_error(&resp, 404, "not_suppressed", &["u-42"]);
    let ann = id(IdType::Email, "ann+news@example.com");
    table.put(layout::identity_key(&ann.hashed()), tombstone_attrs("email_sha256", "req-2", T0));
    let resp = api.handle(with_key("DELETE", "/v1/suppressions/email:ann%2Bnews%40example.com", "", ADMIN_KEY)).await;
    assert_eq!(resp.status_code, 200, "{}", body_text(&resp));
    assert_eq!(body_json(&resp)["lifted"].as_array().map(Vec::len), Some(1));
    assert_eq!(body_json(&resp)["lifted"][0]["type"], "email_sha256");
    let live = table.get(&layout::identity_key(&ann)).await.unwrap().expect("the live item stays");
    assert_eq!(layout::identity_profile(&live.attrs), Some(LOSER));
    assert!(table.get(&layout::identity_key(&id(IdType::UserId, "u-42"))).await.unwrap().is_some());
    assert_audit_holds_no(&table, &["erased", "ann", "u-42", "example.com"]);
}

#[tokio::test]
async fn a_lift_never_deletes_an_item_that_changed_since_it_was_read() {
    let table = Faulty::new(seeded());
    let erased = id(IdType::Email, "raced@example.com");
    erase(table.inner(), &erased, REQUEST_ID, true);
    let api = ProfileApi::new(table.clone(), Arc::new(workspace()));
    // Between the lift's read and its transaction, the hashed form's item becomes something else (version 2).
    let key = layout::identity_key(&erased.hashed());
    let relinked =
        Item { key: key.clone(), attrs: layout::identity_attrs(&erased.hashed(), ROOT), version: 2, expires_at: None };
    table.before_next_transaction(move |inner| async move {
        inner
            .write(WriteOp::Put { item: relinked, condition: Condition::VersionIs(1) })
            .await
            .expect("the slipped-in write");
    });
    let resp = api.handle(with_key("DELETE", "/v1/suppressions/email:raced%40example.com", "", ADMIN_KEY)).await;
    assert_eq!(resp.status_code, 200, "{}", body_text(&resp));
    assert_eq!(
        body_json(&resp)["lifted"],
        json!([{"type": "email", "request": REQUEST_ID, "at": "2025-03-10T12:01:00Z"}])
    );
    let item = table.inner().get(&key).await.unwrap().expect("kept");
    assert_eq!(layout::identity_profile(&item.attrs), Some(ROOT));
    assert_eq!(audit_rows(table.inner()).len(), 1, "the failed attempt left no row");

    // If the audit row cannot be written, nothing is lifted.
    erase(table.inner(), &erased, REQUEST_ID, false);
    fail_audit(&table, Some(PortError::Unavailable("down".into())));
    let resp = api.handle(with_key("DELETE", "/v1/suppressions/email:raced%40example.com", "", ADMIN_KEY)).await;
    assert_error(&resp, 503, "audit_unavailable", &["raced"]);
    assert!(table.inner().get(&layout::identity_key(&erased)).await.unwrap().is_some(), "the tombstone stays");
}

#[tokio::test]
async fn after_a_lift_new_events_stitch_again() {
    use tributary_core::metrics::MemoryMetrics;
    use tributary_core::testing::CountingQueue;
    use tributary_stitch::{Applied, Stitch, StitchSettings};

    let table = MemTable::default();
    let workspace = Arc::new(workspace());
    let stitch = Stitch::new(
        table.clone(),
        CountingQueue::default(),
        Arc::new(MemoryMetrics::default()),
        workspace.clone(),
        StitchSettings::default(),
    )
    .expect("rules compile");
    let api = ProfileApi::new(table.clone(), workspace.clone());
    let erased = id(IdType::Email, "comeback@example.com");
    erase(&table, &erased, REQUEST_ID, true);
    let event = json!({
        "type": "identify", "messageId": "m-back", "userId": "u-back",
        "timestamp": "2025-03-10T12:00:00.000Z", "receivedAt": "2025-03-10T12:00:00.100Z",
        "traits": {"email": "comeback@example.com"}, "context": {}
    });
    let event = event.as_object().expect("object");
    assert_eq!(stitch.apply_event(&workspace.sources[0], event).await.expect("apply"), Applied::Suppressed);
    assert_error(&api.handle(get("/v1/profiles/user_id:u-back")).await, 404, "profile_not_found", &["u-back"]);

    let resp = api.handle(with_key("DELETE", "/v1/suppressions/email:comeback%40example.com", "", ADMIN_KEY)).await;
    assert_eq!(resp.status_code, 200, "{}", body_text(&resp));
    let applied = stitch.apply_event(&workspace.sources[0], event).await.expect("apply");
    assert!(matches!(applied, Applied::Stitched { created: true, linked: 3, .. }), "{applied:?}");
    let resp = api.handle(get("/v1/profiles/email:comeback%40example.com")).await;
    assert_eq!(resp.status_code, 200, "{}", body_text(&resp));
    let profile = body_json(&resp);
    let values: Vec<&str> =
        profile["identities"].as_array().unwrap().iter().filter_map(|i| i["value"].as_str()).collect();
    assert!(values.contains(&"comeback@example.com"), "{values:?}");
    assert_error(&api.handle(get("/v1/suppressions/email:comeback%40example.com")).await, 403, "forbidden", &[]);
    let resp = api.handle(with_key("GET", "/v1/suppressions/email:comeback%40example.com", "", DSR_KEY)).await;
    assert_error(&resp, 404, "not_suppressed", &["comeback"]);
}
