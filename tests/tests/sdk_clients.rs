//! The official Segment and RudderStack server-side SDKs, unmodified and with default settings, against a real
//! `tributary serve`: every event arrives intact, the clock-skew correction holds, and the clients never retry.
//!
//! Needs the clients that `scripts/test.sh` installs: `TRIBUTARY_PYTHON` (a python with segment-analytics-python
//! and rudder-sdk-python) and `TRIBUTARY_NODE_MODULES` (node_modules with @segment/analytics-node and
//! @rudderstack/rudder-sdk-node). Built only with the `sdk-clients` feature; without those variables the tests
//! fail, they never skip. The client scripts live in `tests/sdk/`.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tributary_tests::sdk::{pretty, python_command, required_env, run_client};
use tributary_tests::support::{Serve, TEST_MANAGEMENT_KEY, TEST_WRITE_KEY};

/// How long one client script may run: default clients retry for minutes, so a hang means a server bug.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);
const CONSUME_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Runtime {
    Python,
    Node,
}

/// One client configuration and what it is known to send (reference/wire-protocols.md §2.6).
struct Variant {
    /// Also the prefix of every id the script sends, so ids never collide between variants.
    prefix: &'static str,
    runtime: Runtime,
    script: &'static str,
    /// Arguments before the common ones (which SDK a shared script drives).
    script_args: &'static [&'static str],
    gzip_flag: bool,
    /// `Content-Encoding: gzip` expected on every request.
    gzip: bool,
    content_type: &'static str,
    user_agent_prefix: &'static str,
}

#[tokio::test]
async fn segment_python_plain() {
    run(Variant {
        prefix: "segpy",
        runtime: Runtime::Python,
        script: "python_client.py",
        script_args: &["--sdk", "segment"],
        gzip_flag: false,
        gzip: false,
        content_type: "application/json",
        user_agent_prefix: "analytics-python/",
    })
    .await;
}

#[tokio::test]
async fn segment_python_gzip() {
    run(Variant {
        prefix: "segpygz",
        runtime: Runtime::Python,
        script: "python_client.py",
        script_args: &["--sdk", "segment"],
        gzip_flag: true,
        gzip: true,
        content_type: "application/json",
        user_agent_prefix: "analytics-python/",
    })
    .await;
}

/// gzip by default; identify traits arrive only in `context.traits`.
#[tokio::test]
async fn rudder_python() {
    run(Variant {
        prefix: "rudpy",
        runtime: Runtime::Python,
        script: "python_client.py",
        script_args: &["--sdk", "rudder"],
        gzip_flag: false,
        gzip: true,
        content_type: "application/json",
        user_agent_prefix: "analytics-python/",
    })
    .await;
}

#[tokio::test]
async fn segment_node() {
    run(Variant {
        prefix: "segnode",
        runtime: Runtime::Node,
        script: "segment_node.mjs",
        script_args: &[],
        gzip_flag: false,
        gzip: false,
        content_type: "application/json",
        user_agent_prefix: "analytics-node-next/",
    })
    .await;
}

/// The interesting one: gzip by default, and axios labels the gzipped body as a form
/// (`application/x-www-form-urlencoded`); it also sends its own `originalTimestamp` (call time) beside the
/// explicit `timestamp`.
#[tokio::test]
async fn rudder_node() {
    run(Variant {
        prefix: "rudnode",
        runtime: Runtime::Node,
        script: "rudder_node.mjs",
        script_args: &[],
        gzip_flag: false,
        gzip: true,
        content_type: "application/x-www-form-urlencoded",
        user_agent_prefix: "analytics-node/",
    })
    .await;
}

/// segment-analytics-python, two devices: the anonymous laptop visitor who later logs in on a phone and then on
/// the laptop is one profile in the profile API, with both devices' identities, traits with provenance, the
/// consent given on the laptop, the merge in its history, and all five events.
#[tokio::test]
async fn segment_python_two_device_journey_is_one_profile() {
    let server = Serve::start();
    let v = Variant {
        prefix: "journey",
        runtime: Runtime::Python,
        script: "python_journey.py",
        script_args: &[],
        gzip_flag: false,
        gzip: false,
        content_type: "application/json",
        user_agent_prefix: "analytics-python/",
    };
    let summary = run_script(&v, server.base_url());
    let consumed = server.wait_consumed(5, CONSUME_TIMEOUT).await;
    assert_eq!(consumed.len(), 5, "all five events reach delivery:\n{}", pretty(&consumed));

    let server = &server;
    let get = |path: String| async move {
        let url = format!("{}{path}", server.base_url());
        let resp = server.http().get(&url).bearer_auth(TEST_MANAGEMENT_KEY).send().await.expect("GET");
        let status = resp.status().as_u16();
        (status, resp.json::<Value>().await.expect("JSON body"))
    };
    let user = summary["userId"].as_str().expect("userId");
    let (status, profile) = get(format!("/v1/profiles/user_id:{user}")).await;
    assert_eq!(status, 200, "{profile}");
    let profile_id = profile["profile_id"].as_str().expect("profile_id").to_string();

    // The same profile whichever device's id asks, and by (differently cased) email.
    for anon in summary["anonymousIds"].as_array().expect("ids") {
        let (status, other) = get(format!("/v1/profiles/anonymous_id:{}", anon.as_str().expect("id"))).await;
        assert_eq!(status, 200, "{other}");
        assert_eq!(other["profile_id"], profile_id.as_str(), "{anon} resolves to the merged profile");
    }
    let email = summary["email"].as_str().expect("email").to_uppercase();
    let (status, by_email) = get(format!("/v1/profiles/email:{email}")).await;
    assert_eq!((status, &by_email["profile_id"]), (200, &Value::from(profile_id.as_str())), "{by_email}");

    let identities = profile["identities"].as_array().expect("identities");
    let kinds: Vec<&str> = identities.iter().filter_map(|i| i["type"].as_str()).collect();
    for kind in ["user_id", "anonymous_id", "email", "email_sha256"] {
        assert!(kinds.contains(&kind), "identity type {kind} missing: {profile}");
    }
    assert_eq!(kinds.iter().filter(|k| **k == "anonymous_id").count(), 2, "both devices: {profile}");

    // Traits resolve by event time: the laptop's later identify set plan=pro; provenance is kept.
    let plan = &profile["traits"]["plan"];
    assert_eq!(plan["value"], "pro", "{profile}");
    assert_eq!(plan["source"], "web", "{profile}");
    assert_eq!(plan["class"], "1P", "{profile}");
    assert!(plan["event_time"].is_string(), "{profile}");
    assert_eq!(profile["traits"]["name"]["value"], "Sam Shopper", "{profile}");

    // Consent from the laptop's banner survives the merge.
    assert_eq!(profile["consent"]["advertising"]["granted"], true, "{profile}");
    assert_eq!(profile["consent"]["analytics"]["granted"], false, "{profile}");

    // The merge is in the history, naming the event that caused it: the laptop's login if the phone's batch
    // arrived first, the phone's login if the laptop's did (the two clients flush independently).
    let merges = profile["merges"].as_array().expect("merges");
    assert_eq!(merges.len(), 1, "{profile}");
    let cause = merges[0]["message_id"].as_str().unwrap_or_default();
    assert!(cause == "journey-4" || cause == "journey-5", "merge caused by {cause}: {profile}");

    let (status, events) = get(format!("/v1/profiles/user_id:{user}/events")).await;
    assert_eq!(status, 200, "{events}");
    let ids: Vec<&str> =
        events["events"].as_array().expect("events").iter().filter_map(|e| e["message_id"].as_str()).collect();
    assert_eq!(ids, vec!["journey-5", "journey-4", "journey-3", "journey-2", "journey-1"], "newest first: {events}");

    // No key, no profile.
    let resp =
        server.http().get(format!("{}/v1/profiles/user_id:{user}", server.base_url())).send().await.expect("GET");
    assert_eq!(resp.status().as_u16(), 401);
}

async fn run(v: Variant) {
    let server = Serve::start();
    let summary = run_script(&v, server.base_url());
    let p = v.prefix;
    let sent_timestamp = parse_time(
        summary["timestamp"].as_str().unwrap_or_else(|| panic!("{}: summary has no timestamp: {summary}", v.script)),
        "the script's explicit timestamp",
    );

    let consumed = server.wait_consumed(4, CONSUME_TIMEOUT).await;
    assert_eq!(consumed.len(), 4, "{p}: exactly 4 events expected (no duplicates), got:\n{}", pretty(&consumed));
    for entry in &consumed {
        assert_eq!(entry["sourceId"], "web", "{p}: every event comes from the `web` source: {entry}");
    }
    let event = |kind: &str| -> &Value {
        let id = format!("{p}-{kind}");
        let entry = consumed
            .iter()
            .find(|e| e["event"]["messageId"] == id.as_str())
            .unwrap_or_else(|| panic!("{p}: no consumed event with messageId {id}:\n{}", pretty(&consumed)));
        &entry["event"]
    };

    let identify = event("identify");
    let track = event("track");
    let page = event("page");
    let alias = event("alias");
    for (kind, e) in [("identify", identify), ("track", track), ("page", page), ("alias", alias)] {
        assert_eq!(e["type"], kind, "{p}: type of {kind}: {e}");
        assert_eq!(e["userId"], format!("{p}-user").as_str(), "{p}: userId of {kind}: {e}");
        check_timestamps(p, kind, e, sent_timestamp);
    }

    // identify: traits at the top level. rudder-sdk-python sends them only in `context.traits`; the normalized
    // identify must still carry them in `traits`, where identity resolution and trait resolution read them.
    let traits = &identify["traits"];
    assert_eq!(traits["email"], format!("{p}@example.com").as_str(), "{p}: identify traits.email: {identify}");
    assert_eq!(traits["name"], format!("{p} Tester").as_str(), "{p}: identify traits.name: {identify}");
    assert_eq!(traits["plan"], "enterprise", "{p}: identify traits.plan: {identify}");

    // track: event name, numbers as numbers, nested arrays of objects intact.
    assert_eq!(track["event"], "Order Completed", "{p}: track event: {track}");
    let props = &track["properties"];
    assert_eq!(props["revenue"].as_f64(), Some(42.5), "{p}: properties.revenue: {track}");
    assert_eq!(props["currency"], "EUR", "{p}: properties.currency: {track}");
    assert_eq!(props["orderId"], format!("{p}-order").as_str(), "{p}: properties.orderId: {track}");
    let products = props["products"].as_array().unwrap_or_else(|| panic!("{p}: properties.products: {track}"));
    assert_eq!(products.len(), 2, "{p}: two products: {track}");
    assert_eq!(products[0]["productId"], format!("{p}-sku-1").as_str(), "{p}: products[0]: {track}");
    assert_eq!(products[0]["price"].as_f64(), Some(2.5), "{p}: products[0].price: {track}");
    assert_eq!(products[0]["quantity"].as_i64(), Some(5), "{p}: products[0].quantity: {track}");
    assert_eq!(products[1]["productId"], format!("{p}-sku-2").as_str(), "{p}: products[1]: {track}");
    assert_eq!(products[1]["price"].as_f64(), Some(30.0), "{p}: products[1].price: {track}");

    // page: name and properties.
    assert_eq!(page["name"], "Pricing", "{p}: page name: {page}");
    assert_eq!(
        page["properties"]["url"],
        format!("https://example.com/{p}/pricing").as_str(),
        "{p}: page properties.url: {page}"
    );

    // alias: both ids.
    assert_eq!(alias["previousId"], format!("{p}-anon").as_str(), "{p}: alias previousId: {alias}");

    // The client saw success at once: every request it made was a 200 on /v1/batch (any other answer would have
    // made it retry or report an error), with the encoding and labelling this client is known to use.
    let requests = server.requests().await;
    assert!(!requests.is_empty(), "{p}: the server recorded no request");
    for r in &requests {
        let shown = pretty(&requests);
        assert_eq!(r["method"], "POST", "{p}: method: {shown}");
        assert_eq!(r["path"], "/v1/batch", "{p}: the SDKs only ever post to /v1/batch: {shown}");
        assert_eq!(r["status"], 200, "{p}: every answer must be 200 (anything else makes the SDK retry): {shown}");
        let content_type = r["contentType"].as_str().unwrap_or_default();
        assert!(
            content_type.starts_with(v.content_type),
            "{p}: Content-Type {content_type:?}, expected {:?}: {shown}",
            v.content_type
        );
        if v.gzip {
            assert_eq!(r["contentEncoding"], "gzip", "{p}: gzip expected: {shown}");
        } else {
            assert!(r["contentEncoding"].is_null(), "{p}: no Content-Encoding expected: {shown}");
        }
        // All five send `Authorization: Basic base64(writeKey:)` (segment-analytics-python 2.4.0 as well as the
        // body writeKey).
        assert_eq!(r["auth"], "basic", "{p}: auth: {shown}");
        let user_agent = r["userAgent"].as_str().unwrap_or_default();
        assert!(
            user_agent.starts_with(v.user_agent_prefix),
            "{p}: User-Agent {user_agent:?}, expected {}…: {shown}",
            v.user_agent_prefix
        );
    }
}

/// `timestamp = receivedAt − (sentAt − originalTimestamp)` from the event's own fields, and `timestamp` is the
/// explicit time the script sent (the client and server share a clock here, so the skew correction is ~0).
fn check_timestamps(p: &str, kind: &str, e: &Value, sent: OffsetDateTime) {
    let field = |name: &str| -> OffsetDateTime {
        let s = e[name].as_str().unwrap_or_else(|| panic!("{p}: {kind} has no {name} string: {e}"));
        parse_time(s, &format!("{p}: {kind}.{name}"))
    };
    let timestamp = field("timestamp");
    let received_at = field("receivedAt");
    let sent_at = field("sentAt");
    let original = field("originalTimestamp");
    let expected = received_at - (sent_at - original);
    // Tributary keeps milliseconds; each of the four fields may have been truncated on its own.
    let off = (timestamp - expected).abs();
    assert!(
        off <= time::Duration::milliseconds(2),
        "{p}: {kind}: timestamp {timestamp} != receivedAt − (sentAt − originalTimestamp) = {expected} (off by {off}): {e}"
    );
    let drift = (timestamp - sent).abs();
    assert!(
        drift <= time::Duration::seconds(2),
        "{p}: {kind}: timestamp {timestamp} is {drift} away from the explicit timestamp {sent} the client sent: {e}"
    );
}

fn parse_time(s: &str, what: &str) -> OffsetDateTime {
    OffsetDateTime::parse(s, &Rfc3339).unwrap_or_else(|err| panic!("{what}: {s:?} is not RFC 3339: {err}"))
}

/// Runs the client script against `host`; panics (with its output) unless it exits 0 within [`SCRIPT_TIMEOUT`].
/// Returns the JSON summary, the last line of its stdout.
fn run_script(v: &Variant, host: &str) -> Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sdk").join(v.script);
    let mut cmd = match v.runtime {
        Runtime::Python => python_command(),
        Runtime::Node => {
            let modules = PathBuf::from(required_env(
                "TRIBUTARY_NODE_MODULES",
                "node_modules with @segment/analytics-node and @rudderstack/rudder-sdk-node (tests/sdk/node/node_modules)",
            ));
            assert!(modules.is_dir(), "TRIBUTARY_NODE_MODULES={} is not a directory", modules.display());
            let mut cmd = Command::new("node");
            cmd.env("TRIBUTARY_NODE_MODULES", &modules).env("NODE_PATH", &modules);
            if let Some(dir) = modules.parent() {
                cmd.current_dir(dir);
            }
            cmd
        }
    };
    cmd.arg(&script).args(v.script_args).args(["--host", host, "--write-key", TEST_WRITE_KEY, "--prefix", v.prefix]);
    if v.gzip_flag {
        cmd.arg("--gzip");
    }
    run_client(cmd, v.script, SCRIPT_TIMEOUT)
}

/// segment-analytics-python against a source whose tracking plan quarantines unplanned events: the unplanned track
/// is held (the client still sees success) and kept out of the profile; once the plan declares it,
/// `tributary quarantine redrive` brings it into the profile exactly once, and a second redrive changes nothing.
mod quarantine_redrive {
    use std::path::Path;
    use std::process::Output;

    use super::*;

    const UNPLANNED: &str = "Wishlist Viewed";

    fn quarantine(server: &Serve, args: &[&str]) -> Output {
        let out = Command::new(tributary_tests::support::tributary_bin())
            .arg("quarantine")
            .args(args)
            .args(["--source", "web", "--config"])
            .arg(server.config_path())
            .arg("--data-dir")
            .arg(server.data_dir())
            .output()
            .expect("run tributary quarantine");
        assert!(
            out.status.success(),
            "tributary quarantine {args:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn stdout(out: &Output) -> String {
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn count(ids: &[String], id: &str) -> usize {
        ids.iter().filter(|m| *m == id).count()
    }

    fn write(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    #[tokio::test]
    async fn segment_python_unplanned_track_is_held_then_redriven_once() {
        let server = Serve::start_with_config(&tributary_tests::support::quarantine_config("1", &["Order Completed"]));
        let v = Variant {
            prefix: "unplanned",
            runtime: Runtime::Python,
            script: "python_unplanned.py",
            script_args: &["--event", UNPLANNED],
            gzip_flag: false,
            gzip: false,
            content_type: "application/json",
            user_agent_prefix: "analytics-python/",
        };
        let summary = run_script(&v, server.base_url());
        let user = summary["userId"].as_str().expect("userId").to_owned();
        let (identify_id, track_id) = ("unplanned-identify", "unplanned-track");
        assert_eq!(summary["messageIds"], serde_json::json!([identify_id, track_id]), "{summary}");

        // The identify went through; the track is held, listed without its values.
        server.wait_consumed(1, CONSUME_TIMEOUT).await;
        let held: Value = serde_json::from_str(&stdout(&quarantine(&server, &["list", "--json"]))).expect("JSON");
        let held = held.as_array().expect("an array");
        assert_eq!(held.len(), 1, "{held:?}");
        let hash = tributary_core::profile::layout::message_hash("web", track_id);
        assert_eq!(held[0]["messageHash"], hash.as_str(), "{held:?}");
        assert_eq!(held[0]["violations"][0]["kind"], "unplanned_event", "{held:?}");
        let text = stdout(&quarantine(&server, &["list"]));
        assert!(text.contains(&hash[..16]) && !text.contains(&user) && !text.contains(UNPLANNED), "{text}");
        let ids = server.profile_events(&user).await.expect("the identify made a profile");
        assert_eq!(ids, [identify_id], "the held track is not in the profile");
        for r in server.requests().await {
            assert_eq!(r["status"], 200, "a quarantined event is a success for the client: {r}");
        }

        // The plan now declares it: redriven, and in the profile exactly once.
        write(server.config_path(), &tributary_tests::support::quarantine_config("2", &["Order Completed", UNPLANNED]));
        let out = stdout(&quarantine(&server, &["redrive"]));
        assert!(out.contains("1 redriven, 0 still held, 0 dropped"), "{out}");
        let deadline = Instant::now() + CONSUME_TIMEOUT;
        let ids = loop {
            let ids = server.profile_events(&user).await.unwrap_or_default();
            if ids.iter().any(|m| m == track_id) {
                break ids;
            }
            assert!(Instant::now() < deadline, "the redriven track never reached the profile: {ids:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!((count(&ids, track_id), count(&ids, identify_id)), (1, 1), "{ids:?}");

        // A second redrive finds nothing; nothing doubles.
        let out = stdout(&quarantine(&server, &["redrive"]));
        assert!(out.contains("0 redriven, 0 still held, 0 dropped"), "{out}");
        tokio::time::sleep(Duration::from_secs(1)).await;
        let ids = server.profile_events(&user).await.expect("profile");
        assert_eq!((count(&ids, track_id), ids.len()), (1, 2), "{ids:?}");
        assert_eq!(server.consumed().await.len(), 2, "two events delivered in all");
    }
}
