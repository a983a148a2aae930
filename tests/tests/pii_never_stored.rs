//! A source with `pii: {detect: [email, phone], action: hash}` never stores a raw email or phone anywhere: after
//! events carrying them in traits, properties, page URLs and the user id went through `tributary serve` (ingest,
//! quarantine, events queue, stitch, profile table, delivery queue), no file of the data directory holds them, in
//! any case. The hashed email still identifies the person: the profile is found by `email_sha256`.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use tributary_tests::support::{test_config, Serve, TEST_MANAGEMENT_KEY, TEST_WRITE_KEY};

const EMAIL: &str = "Raw.Person+cdp@Example.org";
const SECOND_EMAIL: &str = "someone.else@example.net";
const PHONE: &str = "+44 20 7946 0958";

fn config() -> String {
    test_config().replace(
        "    class: \"1P\"\n",
        r#"    class: "1P"
    pii:
      detect: [email, phone]
      action: hash
    tracking_plan:
      version: v1
      events:
        Order Completed: { type: object }
      unplanned: quarantine
"#,
    )
}

/// Every file under `dir`, recursively.
fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[tokio::test]
async fn hashed_pii_never_reaches_any_store() {
    let server = Serve::start_with_config(&config());
    let batch = json!({"batch": [
        {"type": "identify", "userId": "u-1", "messageId": "p1",
         "traits": {"email": EMAIL, "phone": PHONE, "name": "Pat"}},
        {"type": "track", "userId": "u-1", "event": "Order Completed", "messageId": "p2",
         "properties": {"note": format!("call me on {PHONE} or write to {SECOND_EMAIL}"), "total": 3}},
        {"type": "page", "userId": "u-1", "name": "Account", "messageId": "p3",
         "context": {"page": {"url": format!("https://shop.example.com/account?email={SECOND_EMAIL}")}}},
        {"type": "track", "userId": "u-1", "event": "Unplanned Thing", "messageId": "p4",
         "properties": {"contact": EMAIL}},
        {"type": "track", "userId": SECOND_EMAIL, "event": "Order Completed", "messageId": "p5"},
    ]});
    let resp = server
        .http()
        .post(format!("{}/v1/batch", server.base_url()))
        .basic_auth(TEST_WRITE_KEY, Some(""))
        .json(&batch)
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status().as_u16(), 200);
    let body: Value = resp.json().await.expect("JSON");
    assert_eq!(body["quarantined"], 1, "{body}");

    // Four events reach delivery (the unplanned one is held in quarantine).
    let consumed = server.wait_consumed(4, Duration::from_secs(30)).await;
    assert_eq!(consumed.len(), 4, "{consumed:?}");

    // The person is still one profile, found through the hash of the normalized email.
    let hash = tributary_core::sha256_hex(EMAIL.trim().to_lowercase().as_bytes());
    let profile: Value = server
        .http()
        .get(format!("{}/v1/profiles/email_sha256:{hash}", server.base_url()))
        .bearer_auth(TEST_MANAGEMENT_KEY)
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON");
    assert_eq!(profile["traits"]["name"]["value"], "Pat", "{profile}");
    assert_eq!(profile["traits"]["email"]["value"], format!("sha256:{hash}"), "{profile}");

    // Nothing in any store holds a raw value, in any case; the quarantine object exists and is hashed too.
    let mut all = Vec::new();
    files(server.data_dir(), &mut all);
    assert!(all.iter().any(|p| p.to_string_lossy().contains("quarantine")), "quarantine object expected: {all:?}");
    let needles: Vec<String> = [EMAIL, SECOND_EMAIL, "7946 0958", "2079460958"]
        .iter()
        .flat_map(|n| [n.to_string(), n.to_lowercase()])
        .collect();
    for path in &all {
        let bytes = std::fs::read(path).expect("read");
        let text = String::from_utf8_lossy(&bytes).to_lowercase();
        for needle in &needles {
            assert!(!text.contains(&needle.to_lowercase()), "{} holds a raw value ({needle:?})", path.display());
        }
    }
}
