//! Data subject requests end to end through `tributary serve`.
//!
//! Ann browses on a phone and a laptop, logs in on both (which merges them), and a partner file names her; her
//! events reach two webhooks. Bob does much the same. Then:
//! - an access request for Bob gives an export that holds what the profile API shows plus his history, behind a
//!   link that stops working;
//! - an erasure of Ann **by email only** completes with a receipt per store, signed callbacks and a deletion
//!   forwarded to the webhooks that had her; afterwards no table, queue or file of the server holds any of her
//!   identifiers, raw or hashed, new events and partner rows of hers are dropped, and Bob is untouched.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use tributary_tests::erasure::{
    ann_traces, assert_receipts, receipts, untar, Receiver, ANN_EMAIL, ANN_LAPTOP, ANN_PHONE, ANN_USER, BOB_ANON,
    BOB_EMAIL, BOB_USER,
};
use tributary_tests::support::{eventually, test_config, Serve, PARTNER_SOURCE, TEST_MANAGEMENT_KEY, TEST_WRITE_KEY};

const TIMEOUT: Duration = Duration::from_secs(60);

fn config(receiver: &str) -> String {
    test_config().replace("management_keys:", &format!("{PARTNER_SOURCE}management_keys:")).replace(
        "delivery:",
        &format!(
            r#"  - id: crm
    kind: webhook
    essential: true
    transport: {{ url: "{receiver}/crm" }}
consent:
  purposes: [{{ id: analytics }}]
dsr:
  processor_domain: dsr.tributary.test
  controller_id: acme-controller
delivery:"#
        ),
    )
}

async fn send(serve: &Serve, events: Vec<Value>) {
    let resp = serve
        .http()
        .post(format!("{}/v1/batch", serve.base_url()))
        .basic_auth(TEST_WRITE_KEY, Some(""))
        .json(&json!({ "batch": events }))
        .send()
        .await
        .expect("POST /v1/batch");
    assert_eq!(resp.status().as_u16(), 200, "{}", resp.text().await.unwrap_or_default());
}

async fn get(serve: &Serve, path: &str) -> (u16, Value) {
    let resp = serve
        .http()
        .get(format!("{}{path}", serve.base_url()))
        .bearer_auth(TEST_MANAGEMENT_KEY)
        .send()
        .await
        .expect("GET");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn import(serve: &Serve, name: &str, csv: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join(name);
    std::fs::write(&file, csv).expect("write partner file");
    serve.import(&file, "partner");
}

/// Posts a request; checks the answer is signed by the key of discovery's certificate. Returns (status, body).
async fn dsr(serve: &Serve, cert: &str, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = serve.http().request(method, format!("{}{path}", serve.base_url())).bearer_auth(TEST_MANAGEMENT_KEY);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("DSR request");
    let status = resp.status().as_u16();
    let domain = resp.headers().get("x-opendsr-processor-domain").and_then(|v| v.to_str().ok()).map(str::to_string);
    let sig = resp.headers().get("x-opendsr-signature").and_then(|v| v.to_str().ok()).map(str::to_string);
    let raw = resp.bytes().await.expect("body");
    assert_eq!(domain.as_deref(), Some("dsr.tributary.test"));
    tributary_dsr_api::verify(cert, &raw, &sig.expect("signed")).expect("the answer's signature verifies");
    (status, serde_json::from_slice(&raw).expect("JSON answer"))
}

fn request(kind: &str, identities: Value, callback: &str) -> (String, Value) {
    let id = uuid::Uuid::new_v4().to_string();
    let body = json!({
        "regulation": "gdpr", "subject_request_id": id, "subject_request_type": kind,
        "submitted_time": "2026-11-30T10:00:00Z", "api_version": "2.0",
        "subject_identities": identities, "status_callback_urls": [callback],
    });
    (id, body)
}

async fn wait_completed(serve: &Serve, cert: &str, id: &str) -> Value {
    eventually("the request to complete", TIMEOUT, async || {
        let (status, body) = dsr(serve, cert, reqwest::Method::GET, &format!("/opendsr/v2/requests/{id}"), None).await;
        assert_eq!(status, 200, "{body}");
        (body["request_status"] == "completed").then_some(body)
    })
    .await
}

/// Every row of every table of every SQLite file in the data dir, and every object file (gzip opened), as
/// lowercase text, each line prefixed with where it was found.
fn everything_stored(data: &Path) -> String {
    let mut out = String::new();
    for db in ["tables.sqlite", "queues.sqlite"] {
        let conn = rusqlite::Connection::open(data.join(db)).expect("open sqlite");
        let tables: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
            .expect("list tables")
            .query_map([], |r| r.get(0))
            .expect("tables")
            .collect::<Result<_, _>>()
            .expect("names");
        for t in tables {
            let mut stmt = conn.prepare(&format!("SELECT * FROM \"{t}\"")).expect("select");
            let n = stmt.column_count();
            let rows = stmt
                .query_map([], |r| {
                    let mut line = String::new();
                    for i in 0..n {
                        let v: rusqlite::types::Value = r.get(i)?;
                        match v {
                            rusqlite::types::Value::Text(s) => line.push_str(&s),
                            rusqlite::types::Value::Blob(b) => line.push_str(&String::from_utf8_lossy(&b)),
                            rusqlite::types::Value::Integer(x) => line.push_str(&x.to_string()),
                            _ => {}
                        }
                        line.push(' ');
                    }
                    Ok(line)
                })
                .expect("rows");
            for row in rows {
                out.push_str(&format!("{db}/{t}: {}\n", row.expect("row").to_lowercase().replace('\n', " ")));
            }
        }
    }
    let mut stack = vec![data.join("objects")];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let bytes = std::fs::read(&path).expect("read object");
            let text = if bytes.starts_with(&[0x1f, 0x8b]) {
                let mut s = Vec::new();
                let _ = flate2::read::GzDecoder::new(bytes.as_slice()).read_to_end(&mut s);
                // Exports are tar archives: their text is readable as it is.
                String::from_utf8_lossy(&s).into_owned()
            } else {
                String::from_utf8_lossy(&bytes).into_owned()
            };
            out.push_str(&format!("{}: {}\n", path.display(), text.to_lowercase().replace('\n', " ")));
        }
    }
    out
}

fn assert_no_trace_of_ann(data: &Path, when: &str) {
    let all = everything_stored(data);
    for t in ann_traces() {
        if let Some(line) = all.lines().find(|l| l.contains(t.as_str())) {
            panic!("{when}: {t} is still stored: {}", &line[..line.len().min(600)]);
        }
    }
    assert!(all.contains(&BOB_EMAIL.to_lowercase()), "{when}: the scan should see Bob (is it reading the stores?)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_person_is_gone_from_every_store_and_stays_gone() {
    let hooks = Receiver::start().await;
    let receiver = hooks.url().to_string();
    let serve = Serve::start_with_env(
        &config(&receiver),
        &[("TRIBUTARY_DSR_RESULTS_TTL_SECS", "5"), ("TRIBUTARY_DSR_SWEEP_SECS", "1")],
    );
    let consent = json!({"consent": {"categoryPreferences": {"analytics": true}}});
    send(
        &serve,
        vec![
            json!({"type": "page", "name": "Home", "anonymousId": ANN_PHONE, "messageId": "a1", "context": consent}),
            json!({"type": "track", "event": "Viewed", "anonymousId": ANN_LAPTOP, "messageId": "a2", "context": consent}),
            json!({"type": "identify", "userId": ANN_USER, "anonymousId": ANN_PHONE, "messageId": "a3",
                   "traits": {"email": ANN_EMAIL, "plan": "pro"}, "context": consent}),
            json!({"type": "identify", "userId": ANN_USER, "anonymousId": ANN_LAPTOP, "messageId": "a4", "context": consent}),
            json!({"type": "identify", "userId": BOB_USER, "anonymousId": BOB_ANON, "messageId": "b1",
                   "traits": {"email": BOB_EMAIL, "plan": "free"}, "context": consent}),
            json!({"type": "track", "event": "Viewed", "userId": BOB_USER, "messageId": "b2", "context": consent}),
        ],
    )
    .await;
    eventually("both people stitched", TIMEOUT, async || {
        let ann = serve.profile_events(ANN_USER).await?;
        let bob = serve.profile_events(BOB_USER).await?;
        (ann.len() == 4 && bob.len() == 2).then_some(())
    })
    .await;
    import(&serve, "partners.csv", &format!("email,tier\n{},gold\n{BOB_EMAIL},silver\n", ANN_EMAIL.to_uppercase()));
    eventually("the partner's tier on both profiles", TIMEOUT, async || {
        let (_, ann) = get(&serve, &format!("/v1/profiles/user_id:{ANN_USER}")).await;
        let (_, bob) = get(&serve, &format!("/v1/profiles/user_id:{BOB_USER}")).await;
        (ann["traits"]["tier"]["value"] == "gold" && bob["traits"]["tier"]["value"] == "silver").then_some(())
    })
    .await;
    // Every event reached both webhooks (the local sink and the CRM).
    serve.wait_consumed(8, TIMEOUT).await;
    eventually("the CRM deliveries", TIMEOUT, async || (hooks.to("/crm").len() >= 8).then_some(())).await;

    // Discovery names the certificate; every answer is signed with its key.
    let discovery: Value = serve
        .http()
        .get(format!("{}/opendsr/v2/discovery", serve.base_url()))
        .send()
        .await
        .expect("discovery")
        .json()
        .await
        .expect("JSON");
    let cert_url = discovery["processor_certificate"].as_str().expect("certificate URL").to_string();
    assert!(cert_url.starts_with(serve.base_url()), "{cert_url}");
    let cert = serve.http().get(&cert_url).send().await.expect("cert").text().await.expect("PEM");
    assert!(cert.contains("BEGIN CERTIFICATE") && !cert.contains("PRIVATE KEY"));
    let callback = format!("{receiver}/callbacks");

    // Access for Bob: everything the profile API shows, plus history, behind a link that expires.
    let (bob_req, body) = request(
        "access",
        json!([{"identity_type": "controller_customer_id", "identity_value": BOB_USER, "identity_format": "raw"}]),
        &callback,
    );
    let (status, created) = dsr(&serve, &cert, reqwest::Method::POST, "/opendsr/v2/requests", Some(body)).await;
    assert_eq!(status, 201, "{created}");
    let done = wait_completed(&serve, &cert, &bob_req).await;
    let url = done["results_url"].as_str().expect("a results link").to_string();
    let archive = serve.http().get(&url).send().await.expect("export");
    assert_eq!(archive.status().as_u16(), 200);
    let files = untar(&archive.bytes().await.expect("bytes"));
    let (_, bob_profile) = get(&serve, &format!("/v1/profiles/user_id:{BOB_USER}")).await;
    let exported: Value =
        serde_json::from_str(files["profile.jsonl"].lines().next().expect("a profile")).expect("JSON");
    for field in ["profile_id", "traits", "identities", "consent", "merges", "audiences"] {
        assert_eq!(exported[field], bob_profile[field], "{field}: the export shows what the profile API shows");
    }
    assert_eq!(files["events.jsonl"].lines().count(), 3, "his two events and the partner row");
    assert!(files["consent.jsonl"].lines().count() >= 2, "consent history and state");
    assert!(files["imports.jsonl"].contains("partner"), "import provenance");
    assert_eq!(
        done["results_count"].as_u64(),
        Some(files.iter().filter(|(k, _)| k.ends_with(".jsonl")).map(|(_, v)| v.lines().count() as u64).sum())
    );
    tokio::time::sleep(Duration::from_secs(6)).await;
    let expired = serve.http().get(&url).send().await.expect("export again");
    assert_eq!(expired.status().as_u16(), 403, "the link has expired");
    let (_, later) = dsr(&serve, &cert, reqwest::Method::GET, &format!("/opendsr/v2/requests/{bob_req}"), None).await;
    assert!(later.get("results_url").is_none(), "no link once it has expired: {later}");

    // Erasure of Ann, by email only.
    let (ann_req, body) = request(
        "erasure",
        json!([{"identity_type": "email", "identity_value": ANN_EMAIL, "identity_format": "raw"}]),
        &callback,
    );
    let (status, created) = dsr(&serve, &cert, reqwest::Method::POST, "/opendsr/v2/requests", Some(body)).await;
    assert_eq!(status, 201, "{created}");
    let done = wait_completed(&serve, &cert, &ann_req).await;
    let receipts = receipts(&done, "dsr.tributary.test");
    assert_receipts(
        &receipts,
        &[
            ("identities", "suppressed", 5),
            ("profiles", "deleted", 2),
            ("events", "deleted", 5),
            ("ledger", "deleted", 5),
            ("dedup_records", "deleted", 5),
            ("delivery_receipts", "deleted", 1),
            ("import_files", "deleted", 1),
            ("destination:crm", "forwarded", 1),
            ("destination:local-sink", "forwarded", 1),
        ],
    );
    for store in
        ["events-dlq", "delivery-dlq", "profile-changes-dlq", "delivery", "quarantine", "import_reports", "exports"]
    {
        assert!(receipts.contains_key(store), "{store} was searched: {receipts:?}");
    }

    // Callbacks for each change, signed; the CRM got a deletion naming Ann.
    let calls = eventually("the callbacks", TIMEOUT, async || {
        let calls: Vec<Value> = hooks
            .to("/callbacks")
            .iter()
            .map(|p| {
                let sig = p.headers.get("x-opendsr-signature").and_then(|v| v.to_str().ok()).unwrap_or("");
                tributary_dsr_api::verify(&cert, &p.body, sig).expect("callback signature verifies");
                p.json()
            })
            .collect();
        (calls.len() >= 4).then_some(calls)
    })
    .await;
    let statuses: Vec<(String, String)> = calls
        .iter()
        .map(|b| {
            (
                b["subject_request_id"].as_str().unwrap_or("").to_string(),
                b["request_status"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    for (id, status) in
        [(&bob_req, "in_progress"), (&bob_req, "completed"), (&ann_req, "in_progress"), (&ann_req, "completed")]
    {
        assert!(statuses.contains(&(id.clone(), status.to_string())), "{id} {status}: {statuses:?}");
    }
    let deletions: Vec<Value> = hooks.to("/crm").iter().map(|p| p.json()).filter(|e| e["type"] == "delete").collect();
    assert_eq!(deletions.len(), 1, "{deletions:?}");
    assert_eq!(deletions[0]["userId"], ANN_USER);
    assert_eq!(deletions[0]["context"]["dsr"]["subject_request_id"], ann_req.as_str());

    // No store of the server holds anything of Ann's (the CRM, a destination, got its deletion above).
    assert_no_trace_of_ann(serve.data_dir(), "after the erasure");
    let (status, _) = get(&serve, &format!("/v1/profiles/email:{}", ANN_EMAIL.replace('@', "%40"))).await;
    assert_eq!(status, 404);
    let (status, sup) = get(&serve, &format!("/v1/suppressions/email:{}", ANN_EMAIL.replace('@', "%40"))).await;
    assert_eq!(status, 200, "{sup}");
    assert_eq!(sup["request"], ann_req.as_str());

    // She comes back: new events and a partner row of hers are dropped; Bob's go on.
    send(
        &serve,
        vec![
            json!({"type": "track", "event": "Viewed", "anonymousId": ANN_PHONE, "messageId": "a5"}),
            json!({"type": "identify", "userId": ANN_USER, "messageId": "a6", "traits": {"email": ANN_EMAIL}}),
            json!({"type": "track", "event": "Viewed", "userId": BOB_USER, "messageId": "b3"}),
        ],
    )
    .await;
    import(&serve, "partners-2.csv", &format!("email,tier\n{ANN_EMAIL},platinum\n{BOB_EMAIL},gold\n"));
    eventually("Bob's new event and row", TIMEOUT, async || {
        let (_, bob) = get(&serve, &format!("/v1/profiles/user_id:{BOB_USER}")).await;
        let events = serve.profile_events(BOB_USER).await?;
        (events.len() == 5 && bob["traits"]["tier"]["value"] == "gold").then_some(())
    })
    .await;
    let (status, _) = get(&serve, &format!("/v1/profiles/user_id:{ANN_USER}")).await;
    assert_eq!(status, 404, "Ann stays gone");
    // The rest of the pipeline (delivery) settles, then the scan again: only the partner file itself names her,
    // and it goes with the next erasure of her — so look everywhere but the partner files.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all = everything_stored(serve.data_dir());
    for t in ann_traces() {
        if let Some(line) = all.lines().filter(|l| !l.contains("objects/imports/")).find(|l| l.contains(t.as_str())) {
            panic!("after she came back: {t} is stored: {}", &line[..line.len().min(600)]);
        }
    }
    let (_, bob) = get(&serve, &format!("/v1/profiles/user_id:{BOB_USER}")).await;
    assert_eq!(bob["traits"]["plan"]["value"], "free", "Bob is untouched: {bob}");
    assert_eq!(bob["traits"]["email"]["value"], BOB_EMAIL);
}
