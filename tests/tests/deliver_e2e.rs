//! Delivery end to end through `tributary serve` with a real SDK (segment-analytics-python): an identified user's
//! purchase reaches the webhook with the profile context, and a user who denied the advertising purpose reaches
//! only the analytics destination.
//!
//! The test runs its own webhook receiver (`/ads` needs the `advertising` purpose and asks for the profile's
//! traits, `/analytics` needs `analytics`), sends two shoppers' identify + `Order Completed` through
//! `tests/sdk/python_consent.py`, and checks what each path received, once each, and the receipts the profile API
//! shows.
//!
//! Needs `TRIBUTARY_PYTHON`: a python with segment-analytics-python (`.test-tools/venv/bin/python`, exported by
//! `scripts/test.sh`). Without it the test fails, it never skips.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::post;
use axum::Router;
use serde_json::Value;
use tributary_tests::sdk::{pretty, python_command, run_client};
use tributary_tests::support::{Serve, TEST_MANAGEMENT_KEY, TEST_WRITE_KEY};

const SCRIPT: &str = "python_consent.py";
const PREFIX: &str = "consent";
/// How long the client script may run: default clients retry for minutes, so a hang means a server bug.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long delivery may take to reach the receiver and write its receipts.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(20);
const ADS_SECRET: &str = "ads-signing-secret";

/// One request the receiver answered.
#[derive(Debug, Clone)]
struct Delivery {
    path: String,
    headers: BTreeMap<String, String>,
    body: Value,
    /// The body as received (what the signature covers).
    raw: Vec<u8>,
}

impl Delivery {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// The events the body carries: the event itself, or each of `{"batch":[…]}`.
    fn events(&self) -> Vec<&Value> {
        match self.body.get("batch").and_then(Value::as_array) {
            Some(batch) => batch.iter().collect(),
            None => vec![&self.body],
        }
    }
}

type Log = Arc<Mutex<Vec<Delivery>>>;

/// A webhook receiver on a loopback port: `POST /ads` and `POST /analytics` answer 200 and record the request.
async fn start_receiver() -> (String, Log) {
    async fn record(State(log): State<Log>, uri: Uri, headers: HeaderMap, body: Bytes) -> StatusCode {
        let headers = headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let raw = body.to_vec();
        let body =
            serde_json::from_slice(&raw).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&raw).into_owned()));
        log.lock().expect("receiver log").push(Delivery { path: uri.path().to_owned(), headers, body, raw });
        StatusCode::OK
    }
    let log: Log = Arc::default();
    let app = Router::new().route("/ads", post(record)).route("/analytics", post(record)).with_state(log.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the webhook receiver");
    let url = format!("http://127.0.0.1:{}", listener.local_addr().expect("receiver address").port());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, log)
}

/// A workspace with one 1P source, the two purposes (with the Segment category names as aliases) and the two
/// webhooks on `receiver`.
fn config(receiver: &str) -> String {
    let write_key = tributary_core::sha256_hex(TEST_WRITE_KEY.as_bytes());
    let management_key = tributary_core::sha256_hex(TEST_MANAGEMENT_KEY.as_bytes());
    format!(
        r#"workspace: tributary-deliver-e2e
sources:
  - id: web
    name: Web (tests)
    write_key_sha256:
      - "{write_key}"
    class: "1P"
management_keys:
  - id: tests
    key_sha256: "{management_key}"
    scopes: ["profiles:read", "dsr", "admin"]
consent:
  purposes:
    - id: advertising
      aliases: [Advertising]
    - id: analytics
      aliases: [Analytics]
destinations:
  - id: ads
    kind: webhook
    purposes: [advertising]
    transport:
      url: "{receiver}/ads"
      secret: "{ADS_SECRET}"
      profile_traits: true
  - id: analytics
    kind: webhook
    purposes: [analytics]
    transport:
      url: "{receiver}/analytics"
delivery:
  allow_private_hosts: ["127.0.0.1"]
  backoff_base_ms: 200
  backoff_max_ms: 1000
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identified_purchase_reaches_the_webhook_with_its_profile_and_a_denial_keeps_ads_out() {
    let (receiver, log) = start_receiver().await;
    let cfg = config(&receiver);
    tributary_core::config::load(&cfg).expect("the test workspace must load");
    let server = Serve::start_with_config(&cfg);

    // The script blocks; the receiver must keep answering meanwhile (delivery starts before the client is done).
    let base = server.base_url().to_owned();
    let summary = tokio::task::spawn_blocking(move || run_script(&base)).await.expect("the script runner panicked");
    let user = |key: &str| -> (String, String, Vec<String>) {
        let u = &summary["users"][key];
        let ids = u["messageIds"].as_array().expect("messageIds").iter().filter_map(Value::as_str);
        (
            u["userId"].as_str().expect("userId").to_owned(),
            u["email"].as_str().expect("email").to_owned(),
            ids.map(str::to_owned).collect(),
        )
    };
    let (a, a_email, a_ids) = user("a");
    let (b, _, b_ids) = user("b");
    let (a_track, b_track) = (format!("{a}-track"), format!("{b}-track"));
    assert!(a_ids.contains(&a_track) && b_ids.contains(&b_track), "{summary}");

    // What each path must end up with: A's two events at both, B's two at analytics only.
    let mut expected: BTreeMap<&str, Vec<&String>> = BTreeMap::new();
    expected.insert("/ads", a_ids.iter().collect());
    expected.insert("/analytics", a_ids.iter().chain(&b_ids).collect());
    let received = |path: &str| -> Vec<Delivery> {
        log.lock().expect("receiver log").iter().filter(|d| d.path == path).cloned().collect()
    };
    let message_ids = |deliveries: &[Delivery]| -> Vec<String> {
        deliveries.iter().flat_map(|d| d.events()).filter_map(|e| e["messageId"].as_str().map(str::to_owned)).collect()
    };
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    loop {
        let done = expected.iter().all(|(path, want)| {
            let got = message_ids(&received(path));
            want.iter().all(|id| got.contains(id))
        });
        if done {
            break;
        }
        if Instant::now() >= deadline {
            let all = log.lock().expect("receiver log").clone();
            panic!(
                "within {DELIVERY_TIMEOUT:?} expected {expected:?}; the receiver got:\n{}\nconsumed by the pipeline:\n{}",
                all.iter().map(|d| format!("{} {}", d.path, d.body)).collect::<Vec<_>>().join("\n"),
                pretty(&server.consumed().await)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The profile API: A's profile id, and every receipt delivered where it went (B's nowhere near ads).
    let get = |path: String| {
        let server = &server;
        async move {
            let url = format!("{}{path}", server.base_url());
            let resp = server.http().get(&url).bearer_auth(TEST_MANAGEMENT_KEY).send().await.expect("GET");
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.expect("JSON body"))
        }
    };
    let (status, profile) = get(format!("/v1/profiles/user_id:{a}")).await;
    assert_eq!(status, 200, "{profile}");
    let a_profile = profile["profile_id"].as_str().expect("profile_id").to_owned();
    let want_receipts = |ids: &[String], dests: &[&str]| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> =
            dests.iter().flat_map(|d| ids.iter().map(move |m| (d.to_string(), m.clone()))).collect();
        v.sort();
        v
    };
    let deliveries_of = |user: String| {
        let get = &get;
        async move {
            let (status, body) = get(format!("/v1/profiles/user_id:{user}/deliveries")).await;
            assert_eq!(status, 200, "{body}");
            let rows = body["deliveries"].as_array().unwrap_or_else(|| panic!("no deliveries array: {body}")).clone();
            let mut delivered: Vec<(String, String)> = rows
                .iter()
                .filter(|r| r["status"] == "delivered")
                .map(|r| (r["destination"].as_str().unwrap_or("").into(), r["messageId"].as_str().unwrap_or("").into()))
                .collect();
            delivered.sort();
            (rows, delivered)
        }
    };
    let (a_want, b_want) = (want_receipts(&a_ids, &["ads", "analytics"]), want_receipts(&b_ids, &["analytics"]));
    let ((a_rows, a_delivered), (b_rows, b_delivered)) = loop {
        let (a_got, b_got) = (deliveries_of(a.clone()).await, deliveries_of(b.clone()).await);
        if a_got.1 == a_want && b_got.1 == b_want {
            break (a_got, b_got);
        }
        if Instant::now() >= deadline {
            panic!(
                "receipts within {DELIVERY_TIMEOUT:?}: A {:?} (want {a_want:?}), B {:?} (want {b_want:?})\nA: {}\nB: {}",
                a_got.1,
                b_got.1,
                pretty(&a_got.0),
                pretty(&b_got.0)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(a_rows.len(), a_want.len(), "one receipt per (destination, event) of A: {}", pretty(&a_rows));
    assert_eq!(b_rows.len(), b_want.len(), "B has no ads receipt at all: {}", pretty(&b_rows));
    assert_eq!(a_delivered, a_want);
    assert_eq!(b_delivered, b_want);
    for row in a_rows.iter().chain(&b_rows) {
        assert_eq!(row["attempts"], 1, "delivered at the first attempt: {row}");
    }

    // Anything sent twice would have arrived by now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ads = received("/ads");
    let analytics = received("/analytics");
    let shown = |d: &[Delivery]| d.iter().map(|d| format!("{:?} {}", d.headers, d.body)).collect::<Vec<_>>().join("\n");

    // Once per destination: as many requests as events, each with its own Idempotency-Key (the messageId).
    for (path, deliveries) in [("/ads", &ads), ("/analytics", &analytics)] {
        let mut ids = message_ids(deliveries);
        ids.sort();
        let mut want: Vec<String> = expected[path].iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(ids, want, "{path}: every event exactly once:\n{}", shown(deliveries));
        let mut keys: Vec<&str> = deliveries.iter().filter_map(|d| d.header("idempotency-key")).collect();
        keys.sort();
        let n = keys.len();
        keys.dedup();
        assert_eq!(
            (n, keys.len()),
            (deliveries.len(), deliveries.len()),
            "{path}: distinct keys:\n{}",
            shown(deliveries)
        );
        let dest = path.trim_start_matches('/');
        for d in deliveries.iter() {
            assert_eq!(d.header("x-tributary-destination"), Some(dest), "{path}: {:?}", d.headers);
            let [event] = d.events()[..] else { panic!("{path}: one event per request (batch_size 1): {}", d.body) };
            assert_eq!(d.header("idempotency-key"), event["messageId"].as_str(), "{path}: {:?} {}", d.headers, d.body);
            let signature = d.header("x-tributary-signature");
            if dest == "ads" {
                let sig = signature.unwrap_or_else(|| panic!("/ads has a signing secret: {:?}", d.headers));
                // `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>` over the body as it arrived.
                let t: i64 = sig
                    .strip_prefix("t=")
                    .and_then(|rest| rest.split(',').next())
                    .and_then(|t| t.parse().ok())
                    .unwrap_or_else(|| panic!("/ads signature {sig:?} has no t=<unix seconds>"));
                assert_eq!(sig, tributary_deliver::payload::signature(ADS_SECRET, t, &d.raw), "/ads signature");
                let age = time::OffsetDateTime::now_utc().unix_timestamp() - t;
                assert!((0..120).contains(&age), "/ads signature timestamp {t} is {age} s old");
            } else {
                assert!(signature.is_none(), "{path} has no secret, so no signature: {:?}", d.headers);
            }
        }
    }

    // The denial kept every one of B's events away from ads, and analytics saw B.
    for event in ads.iter().flat_map(|d| d.events()) {
        assert_eq!(event["userId"], a.as_str(), "only A reaches ads:\n{}", shown(&ads));
    }
    let find = |deliveries: &[Delivery], id: &str| -> Value {
        deliveries
            .iter()
            .flat_map(|d| d.events())
            .find(|e| e["messageId"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no {id}:\n{}", shown(deliveries)))
    };

    // A's purchase at ads: the event as sent, plus the profile (id and its traits from the identify).
    let purchase = find(&ads, &a_track);
    assert_eq!(purchase["type"], "track", "{purchase}");
    assert_eq!(purchase["event"], "Order Completed", "{purchase}");
    assert_eq!(purchase["userId"], a.as_str(), "{purchase}");
    assert_eq!(purchase["properties"]["revenue"].as_f64(), Some(42.5), "{purchase}");
    assert_eq!(purchase["properties"]["currency"], "EUR", "{purchase}");
    assert_eq!(purchase["properties"]["products"].as_array().map(Vec::len), Some(2), "{purchase}");
    assert_eq!(purchase["context"]["consent"]["categoryPreferences"]["Advertising"], true, "{purchase}");
    let profile = &purchase["context"]["profile"];
    assert_eq!(profile["id"], a_profile.as_str(), "context.profile.id is A's profile: {purchase}");
    assert_eq!(profile["traits"]["email"], a_email.as_str(), "the profile's traits: {purchase}");
    assert_eq!(profile["traits"]["name"], "Ada Allowed", "the profile's traits: {purchase}");

    // Both purchases at analytics, with the profile id but no traits (not asked for).
    for (id, user, revenue) in [(&a_track, &a, 42.5), (&b_track, &b, 17.0)] {
        let purchase = find(&analytics, id);
        assert_eq!(purchase["event"], "Order Completed", "{purchase}");
        assert_eq!(purchase["userId"], user.as_str(), "{purchase}");
        assert_eq!(purchase["properties"]["revenue"].as_f64(), Some(revenue), "{purchase}");
        let profile = &purchase["context"]["profile"];
        assert!(profile["id"].is_string(), "context.profile.id: {purchase}");
        assert!(profile.get("traits").is_none(), "analytics did not ask for traits: {purchase}");
    }
    assert_eq!(find(&analytics, &a_track)["context"]["profile"]["id"], a_profile.as_str());
    assert_ne!(find(&analytics, &b_track)["context"]["profile"]["id"], a_profile.as_str(), "B is another profile");
}

/// Runs the client script against `host`; panics (with its output) unless it exits 0 within [`SCRIPT_TIMEOUT`].
/// Returns the JSON summary, the last line of its stdout.
fn run_script(host: &str) -> Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sdk").join(SCRIPT);
    let mut cmd = python_command();
    cmd.arg(&script).args(["--host", host, "--write-key", TEST_WRITE_KEY, "--prefix", PREFIX]);
    run_client(cmd, SCRIPT, SCRIPT_TIMEOUT)
}
