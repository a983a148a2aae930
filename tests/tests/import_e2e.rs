//! Imports end to end through `tributary serve`: profiles made from raw emails by the `web` source are enriched by a
//! broker file of SHA-256-hashed emails put through `tributary import`, and the profile API shows the broker's
//! traits with their class (3P) and source.

use std::time::Duration;

use serde_json::{json, Value};
use tributary_tests::support::{eventually, test_config, Serve, TEST_MANAGEMENT_KEY, TEST_WRITE_KEY};

const TIMEOUT: Duration = Duration::from_secs(60);

fn config() -> String {
    test_config().replace(
        "management_keys:",
        r#"  - id: broker
    name: Data broker (tests)
    write_key_sha256: []
    class: "3P"
    consent_basis: legitimate_interests
    permitted_purposes: []
    import:
      format: csv
      columns:
        hashed_email: { identifier: email_sha256 }
        income: { type: number }
        segment: { type: string }
      event: { type: identify }
management_keys:"#,
    )
}

async fn profile(serve: &Serve, email: &str) -> Option<Value> {
    let url = format!("{}/v1/profiles/email:{}", serve.base_url(), email.replace('@', "%40"));
    let resp = serve.http().get(&url).bearer_auth(TEST_MANAGEMENT_KEY).send().await.expect("GET profile");
    (resp.status().as_u16() == 200).then_some(resp.json().await.expect("JSON profile"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_file_of_hashed_emails_enriches_profiles_made_from_raw_emails() {
    let serve = Serve::start_with_config(&config());
    let people = ["ann@example.com", "bob@example.com"];
    let batch: Vec<Value> = people
        .iter()
        .enumerate()
        .map(|(i, email)| {
            json!({"type": "identify", "userId": format!("u-{i}"), "messageId": format!("web-{i}"),
                   "traits": {"email": email, "plan": "pro"}})
        })
        .collect();
    let resp = serve
        .http()
        .post(format!("{}/v1/batch", serve.base_url()))
        .basic_auth(TEST_WRITE_KEY, Some(""))
        .json(&json!({ "batch": batch }))
        .send()
        .await
        .expect("POST /v1/batch");
    assert_eq!(resp.status().as_u16(), 200);
    for email in people {
        eventually("the web profile", TIMEOUT, async || profile(&serve, email).await).await;
    }

    // The broker's file: the same people as SHA-256 of their emails (as brokers send them), one stranger, one bad row.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("enrichment.csv");
    let hash = |e: &str| tributary_core::sha256_hex(e.as_bytes());
    let text = format!(
        "hashed_email,income,segment\n{},52000,affluent\n{},61000.5,young\n{},1,stranger\nnot-a-hash,5,bad\n",
        hash("ann@example.com"),
        hash("bob@example.com"),
        hash("nobody@example.com")
    );
    std::fs::write(&file, text).expect("write broker file");

    let out = serve.import(&file, "broker");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("import done: imports/broker/enrichment.csv (broker)"), "{stdout}");
    assert!(stdout.contains("rows 4  accepted 3  rejected 1"), "{stdout}");
    assert!(stdout.contains("not_sha256: 1"), "{stdout}");
    for email in people {
        assert!(!stdout.contains(email) && !stdout.contains(&hash(email)), "the summary names no one: {stdout}");
    }

    // The rows were applied before the command returned: the profiles carry the broker's traits, as 3P.
    let ann = profile(&serve, "ann@example.com").await.expect("ann");
    let income = &ann["traits"]["income"];
    assert_eq!(income["value"], 52000, "{ann}");
    assert_eq!(income["class"], "3P", "{ann}");
    assert_eq!(income["source"], "broker", "{ann}");
    assert_eq!(ann["traits"]["plan"]["class"], "1P", "the web source's traits keep theirs: {ann}");
    let bob = profile(&serve, "bob@example.com").await.expect("bob");
    assert_eq!(bob["traits"]["segment"]["value"], "young", "{bob}");
    assert_eq!(bob["traits"]["income"]["value"], 61000.5, "{bob}");

    let report =
        std::fs::read_to_string(serve.data_dir().join("objects/import-reports/broker/enrichment.csv.rejects.csv"))
            .expect("reject report");
    assert_eq!(report, "row,column,reason\n4,hashed_email,not_sha256\n");
}
