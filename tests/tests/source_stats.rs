//! Governance counters end to end: a governed source's events through `tributary serve`, then the counters read
//! back through the management API (`GET /v1/sources/web/stats`) and the CLI (`tributary sources stats web`).

use std::process::{Command, Output};

use serde_json::{json, Value};
use tributary_tests::support::{test_config, tributary_bin, Serve, TEST_MANAGEMENT_KEY, TEST_WRITE_KEY};

const EMAIL: &str = "jake.peterson@example.com";

/// [`test_config`] with a tracking plan that quarantines unplanned events and a PII policy that hashes emails on `web`.
fn governed_config() -> String {
    let base = test_config();
    let anchor = "    class: \"1P\"\n";
    assert!(base.contains(anchor), "test_config() changed shape:\n{base}");
    base.replace(
        anchor,
        r#"    class: "1P"
    tracking_plan:
      version: "2025-03-01"
      events:
        Order Completed:
          type: object
          properties:
            total: { type: number }
        Note Written:
          type: object
      unplanned: quarantine
    pii:
      detect: [email]
      action: hash
"#,
    )
}

fn cli(args: &[&str]) -> Output {
    Command::new(tributary_bin()).args(args).output().unwrap_or_else(|e| panic!("running tributary {args:?}: {e}"))
}

fn expected_events() -> Value {
    json!([
        {"name": "Note Written", "accepted": 1, "dropped_properties": 0, "quarantined": 0, "pii_actioned": 1,
         "dropped": 0},
        {"name": "Order Completed", "accepted": 1, "dropped_properties": 0, "quarantined": 0, "pii_actioned": 0,
         "dropped": 0},
        {"name": "Secret Thing", "accepted": 0, "dropped_properties": 0, "quarantined": 1, "pii_actioned": 0,
         "dropped": 0},
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn governed_events_are_counted_and_reported_by_the_api_and_the_cli() {
    let serve = Serve::start_with_config(&governed_config());
    let base = serve.base_url().to_string();
    let http = serve.http().clone();

    let batch = json!({"batch": [
        {"type": "track", "userId": "u1", "event": "Order Completed", "messageId": "m-planned",
         "properties": {"total": 10}},
        {"type": "track", "userId": "u1", "event": "Secret Thing", "messageId": "m-unplanned"},
        {"type": "track", "userId": "u1", "event": "Note Written", "messageId": "m-email",
         "properties": {"note": format!("write to {EMAIL}")}},
    ]});
    let resp = http
        .post(format!("{base}/v1/batch"))
        .basic_auth(TEST_WRITE_KEY, Some(""))
        .json(&batch)
        .send()
        .await
        .expect("POST /v1/batch");
    assert_eq!(resp.status(), 200);
    let out: Value = resp.json().await.expect("JSON answer");
    assert_eq!((out["accepted"].clone(), out["quarantined"].clone()), (json!(2), json!(1)), "{out}");

    // The counters are written before the 200, so they are readable at once.
    let stats_url = format!("{base}/v1/sources/web/stats");
    let resp = http.get(&stats_url).bearer_auth(TEST_MANAGEMENT_KEY).send().await.expect("GET stats");
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.expect("body");
    assert!(!text.to_lowercase().contains("jake"), "no event value in the report: {text}");
    let api: Value = serde_json::from_str(&text).expect("JSON report");
    assert_eq!(api["source"], "web");
    assert_eq!(api["events"], expected_events(), "{api}");
    assert_eq!(
        api["totals"],
        json!({"accepted": 2, "dropped_properties": 0, "quarantined": 1, "pii_actioned": 1, "dropped": 0})
    );

    // The management API's refusals, through the local front.
    let resp = http.get(&stats_url).send().await.expect("GET stats");
    assert_eq!(resp.status(), 401);
    let resp = http.get(format!("{base}/v1/sources/nope/stats")).bearer_auth(TEST_MANAGEMENT_KEY).send().await;
    assert_eq!(resp.expect("GET stats").status(), 404);
    let resp = http.get(format!("{stats_url}?since=yesterday")).bearer_auth(TEST_MANAGEMENT_KEY).send().await;
    assert_eq!(resp.expect("GET stats").status(), 400);

    // The CLI reads the same counters from the data directory, while the server keeps running.
    let data_dir = serve.data_dir().to_str().expect("UTF-8 path").to_string();
    let config = serve.config_path().to_str().expect("UTF-8 path").to_string();
    let out = cli(&["sources", "stats", "web", "--json", "--data-dir", &data_dir, "--config", &config]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    let report: Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("--json output is not JSON ({e}):\n{stdout}"));
    assert_eq!(report["source"], "web");
    assert_eq!(report["events"], api["events"]);
    assert_eq!(report["totals"], api["totals"]);

    let out = cli(&["sources", "stats", "web", "--data-dir", &data_dir, "--since", "2000-01-01T00:00:00Z"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let total = stdout.lines().find(|l| l.starts_with("total")).unwrap_or_else(|| panic!("no total row:\n{stdout}"));
    assert_eq!(total.split_whitespace().collect::<Vec<_>>(), ["total", "2", "0", "1", "1", "0", "0"], "{stdout}");
    assert!(stdout.contains("Secret Thing") && !stdout.to_lowercase().contains("jake"), "{stdout}");

    let out = cli(&["sources", "stats", "nope", "--data-dir", &data_dir, "--config", &config]);
    assert!(!out.status.success(), "an id the workspace does not have is an error");
    let out = cli(&["sources", "stats", "web", "--data-dir", &data_dir, "--until", "soon"]);
    assert!(!out.status.success(), "a bad time is an error");
}
