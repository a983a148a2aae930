//! schemathesis (PyPI) against a real `tributary serve`, driven by the document the management API publishes at
//! `GET /openapi.json` (`schemas/openapi.json`): generated and mutated requests to every profile, source, audit,
//! suppression and OpenDSR route, with an admin key. It must find no server error (5xx), no answer whose status,
//! content type, headers or body the document does not allow, no invalid request that is accepted, and no route
//! that answers without a key.
//!
//! The document's examples name what this test stores first (a profile, a partner import, an erased email, a
//! subject request), so the examples phase reaches the 200 answers too, not only 404s.
//!
//! Needs `TRIBUTARY_PYTHON`: a python with schemathesis (scripts/test.sh's venv, `scripts/requirements-test.txt`).
//! Built only with the `sdk-clients` feature, like the other tests that drive Python tools; without the variable the
//! test fails, it never skips. `TRIBUTARY_SCHEMATHESIS_EXAMPLES=N` runs more cases per operation (default 100).

use std::time::Duration;

use serde_json::{json, Value};
use tributary_tests::sdk::{python_command, run_with_timeout};
use tributary_tests::support::{eventually, test_config, Serve, PARTNER_SOURCE, TEST_MANAGEMENT_KEY, TEST_WRITE_KEY};

/// The examples in `schemas/openapi.json` name these.
const USER_ID: &str = "schemathesis-user";
const USER_EMAIL: &str = "schemathesis-user@example.com";
const ERASED_EMAIL: &str = "schemathesis-erased@example.com";
const ERASURE_ID: &str = "5f0c2a4e-8b1d-4c6a-9e3f-7a2b1c0d9e8f";
/// Requests left pending (the workspace's waiting period), for the two cancel routes' examples.
const PENDING_IDS: [&str; 2] = ["9a1d6c3b-2e4f-4a7b-8c5d-0e1f2a3b4c5d", "3c4d5e6f-7a8b-4c9d-8e0f-1a2b3c4d5e6f"];

const TIMEOUT: Duration = Duration::from_secs(60);
/// The whole schemathesis run; it takes about a minute here.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);
/// Fixed, so that a failure can be replayed with the same cases (`--seed`).
const SEED: &str = "20261201";

fn config() -> String {
    test_config().replace("management_keys:", &format!("{PARTNER_SOURCE}management_keys:")).replace(
        "delivery:",
        r#"consent:
  purposes: [{ id: analytics }]
dsr:
  processor_domain: dsr.tributary.test
  controller_id: acme-controller
  waiting_period_days: 30
delivery:"#,
    )
}

async fn post(serve: &Serve, path: &str, body: Value, management: bool) -> (u16, Value) {
    let req = serve.http().post(format!("{}{path}", serve.base_url())).json(&body);
    let req = if management { req.bearer_auth(TEST_MANAGEMENT_KEY) } else { req.basic_auth(TEST_WRITE_KEY, Some("")) };
    let resp = req.send().await.unwrap_or_else(|e| panic!("POST {path}: {e}"));
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn get(serve: &Serve, path: &str) -> (u16, Value) {
    let resp = serve
        .http()
        .get(format!("{}{path}", serve.base_url()))
        .bearer_auth(TEST_MANAGEMENT_KEY)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// What the document's examples name: a profile with history and deliveries, a partner import, an erased email (a
/// suppression), a completed subject request and two pending ones.
async fn seed(serve: &Serve) {
    let batch = json!({"batch": [
        {"type": "identify", "userId": USER_ID, "messageId": "st-1", "traits": {"email": USER_EMAIL, "plan": "pro"}},
        {"type": "track", "userId": USER_ID, "messageId": "st-2", "event": "Order Completed",
         "properties": {"total": 42}},
        {"type": "identify", "userId": "schemathesis-erased", "messageId": "st-3", "traits": {"email": ERASED_EMAIL}},
    ]});
    let (status, body) = post(serve, "/v1/batch", batch, false).await;
    assert_eq!(status, 200, "{body}");

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("partner.csv");
    std::fs::write(&file, "email,tier\npartner-1@example.com,gold\nnot-an-email,silver\n").expect("partner file");
    serve.import(&file, "partner");

    eventually("the profile and its deliveries", TIMEOUT, async || {
        let (status, body) = get(serve, &format!("/v1/profiles/user_id:{USER_ID}/deliveries")).await;
        (status == 200 && body["deliveries"].as_array().is_some_and(|d| d.len() >= 2)).then_some(())
    })
    .await;
    eventually("the erased person's profile", TIMEOUT, async || {
        (get(serve, &format!("/v1/profiles/email:{ERASED_EMAIL}")).await.0 == 200).then_some(())
    })
    .await;

    let request = |id: &str, kind: &str, email: &str| {
        json!({
            "regulation": "gdpr", "subject_request_id": id, "subject_request_type": kind,
            "submitted_time": "2026-11-30T10:00:00Z", "api_version": "2.0",
            "subject_identities": [{"identity_type": "email", "identity_value": email, "identity_format": "raw"}],
        })
    };
    for id in PENDING_IDS {
        let (status, body) = post(serve, "/opendsr/v2/requests", request(id, "access", USER_EMAIL), true).await;
        assert_eq!(status, 201, "{body}");
        let (status, body) = get(serve, &format!("/opendsr/v2/requests/{id}")).await;
        assert_eq!((status, body["request_status"].as_str()), (200, Some("pending")), "{body}");
    }
    let mut erasure = request(ERASURE_ID, "erasure", ERASED_EMAIL);
    erasure["extensions"] = json!({"opendsr.mparticle.com": {"skip_waiting_period": true}});
    let (status, body) = post(serve, "/opendsr/v2/requests", erasure, true).await;
    assert_eq!(status, 201, "{body}");
    eventually("the erasure to complete", TIMEOUT, async || {
        let (status, body) = get(serve, &format!("/opendsr/v2/requests/{ERASURE_ID}")).await;
        assert_eq!(status, 200, "{body}");
        (body["request_status"] == "completed").then_some(())
    })
    .await;
    let (status, body) = get(serve, &format!("/v1/suppressions/email:{ERASED_EMAIL}")).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = get(serve, "/v1/sources/partner/imports").await;
    assert!(status == 200 && body["imports"].as_array().is_some_and(|i| !i.is_empty()), "{status} {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_answer_outside_the_document() {
    let serve = Serve::start_with_config(&config());

    // The server publishes the checked-in document, without a key.
    let resp = serve.http().get(format!("{}/openapi.json", serve.base_url())).send().await.expect("GET /openapi.json");
    assert_eq!(resp.status().as_u16(), 200);
    let served: Value = resp.json().await.expect("JSON");
    let checked_in: Value = serde_json::from_str(tributary_profile_api::OPENAPI_DOCUMENT).expect("the document");
    // (Not assert_eq: the message would print both documents.)
    assert!(served == checked_in, "GET /openapi.json is not schemas/openapi.json: is the tributary binary stale?");

    seed(&serve).await;

    let examples = std::env::var("TRIBUTARY_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "100".into());
    let reports = tempfile::tempdir().expect("report dir");
    let mut cmd = python_command();
    // Its working directory is where schemathesis keeps its own state (`.schemathesis/`, `.hypothesis/`).
    cmd.current_dir(reports.path())
        .args(["-m", "schemathesis.cli", "--no-color", "run"])
        .arg(format!("{}/openapi.json", serve.base_url()))
        .args(["--url", serve.base_url()])
        .args(["--checks", "all"])
        // "A valid request is answered 2xx": two rules of the stats route are beyond a schema (`since` before
        // `until`, and before now when `until` is absent) and so are byte lengths (the document's maxLength counts
        // characters), so schemathesis would flag valid-looking requests the server rightly refuses with 400.
        .args(["--exclude-checks", "positive_data_acceptance"])
        .args(["--header", &format!("Authorization: Bearer {TEST_MANAGEMENT_KEY}")])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--max-examples", &examples, "--seed", SEED])
        .args(["--workers", "1", "--request-timeout", "30"])
        .args(["--report", "junit", "--report-junit-path"])
        .arg(reports.path().join("junit.xml"));
    let (status, out, err) = run_with_timeout(cmd, RUN_TIMEOUT);
    let shown = format!("--- schemathesis stdout ---\n{out}\n--- stderr ---\n{err}");
    let Some(status) = status else {
        panic!("schemathesis did not finish within {RUN_TIMEOUT:?} (killed)\n{shown}");
    };
    assert!(status.success(), "schemathesis found failures ({status})\n{shown}");
    println!("{out}");

    // It did test: every operation of the document ran (but `GET /openapi.json`, which schemathesis leaves out as
    // the document it was given), each with at least one case.
    let doc_ops: usize = checked_in["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .filter(|(path, _)| path.as_str() != "/openapi.json")
        .map(|(_, p)| p.as_object().map_or(0, |m| m.keys().filter(|k| k.as_str() != "parameters").count()))
        .sum();
    let junit = std::fs::read_to_string(reports.path().join("junit.xml")).expect("the junit report");
    let cases = junit.matches("<testcase").count();
    assert_eq!(cases, doc_ops, "schemathesis ran {cases} operations of the document's {doc_ops}\n{junit}");
    assert!(!junit.contains("<skipped"), "an operation was skipped\n{junit}");

    // And the server is still up and consistent afterwards.
    let (status, body) = get(&serve, &format!("/v1/profiles/user_id:{USER_ID}")).await;
    assert_eq!(status, 200, "{body}");
}
