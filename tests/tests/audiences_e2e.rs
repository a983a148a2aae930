//! Audiences end to end through `tributary serve`: a profile enters an audience when a trait changes and when it
//! performs an event, exits when the event's time window passes (the local audience clock is moved ahead with
//! `POST /_local/audiences/refresh`), each change reaches the connected webhook exactly once, and a profile that
//! denied advertising never reaches the advertising destination.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tributary_tests::erasure::Receiver;
use tributary_tests::support::{Serve, TEST_MANAGEMENT_KEY, TEST_WRITE_KEY};

fn config(receiver: &str) -> String {
    let write_key = tributary_core::sha256_hex(TEST_WRITE_KEY.as_bytes());
    let management_key = tributary_core::sha256_hex(TEST_MANAGEMENT_KEY.as_bytes());
    format!(
        r#"workspace: tributary-audiences-e2e
sources:
  - id: web
    write_key_sha256: ["{write_key}"]
    class: "1P"
management_keys:
  - id: tests
    key_sha256: "{management_key}"
    scopes: ["profiles:read", "dsr", "admin"]
consent:
  purposes:
    - {{ id: advertising, aliases: [Advertising] }}
    - {{ id: analytics, aliases: [Analytics] }}
destinations:
  - id: crm
    kind: webhook
    purposes: [analytics]
    event_names: [Audience Entered, Audience Exited]
    transport: {{ url: "{receiver}/crm" }}
  - id: ads
    kind: webhook
    purposes: [advertising]
    event_names: [Audience Entered, Audience Exited]
    transport: {{ url: "{receiver}/ads" }}
audiences:
  - id: pro
    name: Pro plan
    rule: {{ trait: plan, equals: pro }}
    destinations: [crm, ads]
  - id: recent-viewers
    rule: {{ performed: Viewed, in_last_days: 2 }}
    destinations: [crm]
delivery:
  allow_private_hosts: ["127.0.0.1"]
  backoff_base_ms: 200
  backoff_max_ms: 1000
"#
    )
}

async fn send(server: &Serve, batch: Value) {
    let url = format!("{}/v1/batch", server.base_url());
    let resp = server.http().post(&url).basic_auth(TEST_WRITE_KEY, Some("")).json(&batch).send().await.expect("POST");
    assert_eq!(resp.status().as_u16(), 200, "{}", resp.text().await.unwrap_or_default());
}

fn consent(ads: bool) -> Value {
    json!({ "consent": { "categoryPreferences": { "Advertising": ads, "Analytics": true } } })
}

/// Runs the audience refresh now, the audience clock moved ahead by `advance_ms`; the run's report.
async fn refresh(server: &Serve, advance_ms: i64) -> Value {
    let url = format!("{}/_local/audiences/refresh", server.base_url());
    let resp = server.http().post(&url).json(&json!({ "advance_ms": advance_ms })).send().await.expect("POST");
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.expect("JSON");
    assert_eq!(status, 200, "{body}");
    body
}

/// Waits until the profile API shows `user` with `n` events (stitched), so a refresh sees them.
async fn wait_stitched(server: &Serve, user: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.profile_events(user).await.is_none_or(|e| e.len() < n) {
        assert!(Instant::now() < deadline, "{user}'s {n} events were not stitched in time");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The (path, event, audience, userId) of everything received, once `n` have arrived and nothing more comes.
async fn received(hooks: &Receiver, n: usize) -> Vec<(String, String, String, String)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = hooks.posts().len();
        if got >= n || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Anything extra (a repeat) would arrive within the retry backoff.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut all: Vec<_> = hooks
        .posts()
        .iter()
        .map(|p| {
            let e = p.json();
            let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
            (p.path.clone(), s(&e["event"]), s(&e["properties"]["audience_key"]), s(&e["userId"]))
        })
        .collect();
    all.sort();
    all
}

fn row(path: &str, event: &str, audience: &str, user: &str) -> (String, String, String, String) {
    (path.into(), event.into(), audience.into(), user.into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memberships_follow_traits_and_time_and_consent_keeps_ads_out() {
    let hooks = Receiver::start().await;
    let cfg = config(hooks.url());
    tributary_core::config::load(&cfg).expect("the test workspace must load");
    // The local schedule stays out of the way (an hour): the test runs each refresh itself and reads its report.
    let server = Serve::start_with_env(&cfg, &[("TRIBUTARY_AUDIENCE_INTERVAL_SECS", "3600")]);

    // Ann allows advertising, Bob does not; both are on the pro plan.
    let at = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).expect("now");
    send(
        &server,
        json!({ "batch": [
            { "type": "identify", "userId": "ann", "traits": { "plan": "pro" }, "context": consent(true),
              "timestamp": at },
            { "type": "identify", "userId": "bob", "traits": { "plan": "pro" }, "context": consent(false),
              "timestamp": at },
        ]}),
    )
    .await;
    wait_stitched(&server, "ann", 1).await;
    wait_stitched(&server, "bob", 1).await;
    let report = refresh(&server, 0).await;
    assert_eq!(report["entered"], 2, "{report}");
    assert_eq!(
        received(&hooks, 3).await,
        [
            row("/ads", "Audience Entered", "pro", "ann"),
            row("/crm", "Audience Entered", "pro", "ann"),
            row("/crm", "Audience Entered", "pro", "bob"),
        ],
        "Bob denied advertising: the ads webhook never hears of him"
    );
    hooks.clear();

    // Ann views a page: she enters the 2-day audience. Bob leaves the pro plan.
    send(
        &server,
        json!({ "batch": [
            { "type": "track", "userId": "ann", "event": "Viewed", "context": consent(true), "timestamp": at },
            { "type": "identify", "userId": "bob", "traits": { "plan": "free" }, "context": consent(false),
              "timestamp": at },
        ]}),
    )
    .await;
    wait_stitched(&server, "ann", 2).await;
    wait_stitched(&server, "bob", 2).await;
    let report = refresh(&server, 0).await;
    assert_eq!((report["entered"].as_u64(), report["exited"].as_u64()), (Some(1), Some(1)), "{report}");
    assert_eq!(
        received(&hooks, 2).await,
        [row("/crm", "Audience Entered", "recent-viewers", "ann"), row("/crm", "Audience Exited", "pro", "bob")]
    );
    hooks.clear();

    // Nothing new: a run changes nothing.
    let report = refresh(&server, 0).await;
    assert_eq!((report["entered"].as_u64(), report["exited"].as_u64()), (Some(0), Some(0)), "{report}");

    // Three days later the view is out of the window: Ann exits with no event of hers.
    let report = refresh(&server, 3 * 86_400_000).await;
    assert_eq!((report["due"].as_u64(), report["exited"].as_u64()), (Some(1), Some(1)), "{report}");
    assert_eq!(received(&hooks, 1).await, [row("/crm", "Audience Exited", "recent-viewers", "ann")]);

    // The profile API shows what Ann is in now.
    let url = format!("{}/v1/profiles/user_id:ann", server.base_url());
    let profile: Value =
        server.http().get(&url).bearer_auth(TEST_MANAGEMENT_KEY).send().await.expect("GET").json().await.expect("JSON");
    let audiences: Vec<&str> =
        profile["audiences"].as_array().expect("audiences").iter().filter_map(|a| a["id"].as_str()).collect();
    assert_eq!(audiences, ["pro"], "{profile}");
}
