//! `tributary quarantine` against a running `tributary serve`: an unplanned track is held by the source's tracking
//! plan, listed without its values, kept out of the profile; once the plan declares it, `quarantine redrive` puts it
//! into the events queue and it reaches the profile exactly once, however often redrive runs.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};
use tributary_tests::support::{quarantine_config, tributary_bin, Serve, TEST_WRITE_KEY};

const TIMEOUT: Duration = Duration::from_secs(30);
const PLANNED: &str = "Order Completed";
const UNPLANNED: &str = "Wishlist Viewed";

/// Runs `tributary quarantine <args> --source web --config … --data-dir …`.
fn quarantine(server: &Serve, args: &[&str]) -> Output {
    let out = Command::new(tributary_bin())
        .arg("quarantine")
        .args(args)
        .args(["--source", "web", "--config"])
        .arg(server.config_path())
        .arg("--data-dir")
        .arg(server.data_dir())
        .output()
        .expect("run tributary quarantine");
    eprintln!(
        "$ tributary quarantine {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout_of(out: &Output, what: &str) -> String {
    assert!(out.status.success(), "{what} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn listed(server: &Serve) -> Vec<Value> {
    let text = stdout_of(&quarantine(server, &["list", "--json"]), "quarantine list --json");
    match serde_json::from_str(&text) {
        Ok(Value::Array(records)) => records,
        _ => panic!("quarantine list --json printed no JSON array: {text}"),
    }
}

/// Polls the profile's events until `done` holds; panics with the last answer after [`TIMEOUT`].
async fn wait_events(server: &Serve, user: &str, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let ids = server.profile_events(user).await.unwrap_or_default();
        if done(&ids) {
            return ids;
        }
        assert!(Instant::now() < deadline, "profile of {user} never reached the expected events: {ids:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn count(ids: &[String], id: &str) -> usize {
    ids.iter().filter(|m| *m == id).count()
}

#[tokio::test]
async fn unplanned_track_is_held_then_redriven_once_after_the_plan_declares_it() {
    let server = Serve::start_with_config(&quarantine_config("1", &[PLANNED]));
    let (user, identify_id, track_id) = ("qr-user", "qr-identify", "qr-track");

    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{TEST_WRITE_KEY}:"));
    let body = json!({"batch": [
        {"type": "identify", "userId": user, "messageId": identify_id, "traits": {"plan": "pro"}},
        {"type": "track", "userId": user, "messageId": track_id, "event": UNPLANNED,
         "properties": {"sku": "qr-secret-sku"}},
    ]});
    let resp = server
        .http()
        .post(format!("{}/v1/batch", server.base_url()))
        .header("authorization", format!("Basic {auth}"))
        .json(&body)
        .send()
        .await
        .expect("POST /v1/batch");
    let status = resp.status().as_u16();
    let answer: Value = resp.json().await.expect("JSON answer");
    assert_eq!((status, &answer["accepted"], &answer["quarantined"]), (200, &json!(1), &json!(1)), "{answer}");
    server.wait_consumed(1, TIMEOUT).await;

    // Held, listed by hash with its violation and plan version, and no event value anywhere in the listing.
    let held = listed(&server);
    assert_eq!(held.len(), 1, "{held:?}");
    let hash = tributary_core::profile::layout::message_hash("web", track_id);
    assert_eq!(held[0]["messageHash"], hash.as_str(), "{held:?}");
    assert_eq!(held[0]["planVersion"], "1");
    assert_eq!(held[0]["violations"], json!([{"kind": "unplanned_event", "path": "/event"}]));
    assert!(held[0].get("event").is_none(), "--json leaves the event out: {held:?}");
    let text = stdout_of(&quarantine(&server, &["list"]), "quarantine list");
    assert!(text.contains(&hash[..16]) && text.contains("unplanned_event") && text.contains("plan 1"), "{text}");
    assert!(text.contains("1 held event"), "{text}");
    for value in [user, track_id, UNPLANNED, "qr-secret-sku"] {
        assert!(!text.contains(value) && !serde_json::to_string(&held).unwrap().contains(value), "{value} shown");
    }
    // `show` gives the whole record, the event included.
    let shown: Value = serde_json::from_str(&stdout_of(&quarantine(&server, &["show", &hash[..12]]), "show"))
        .expect("show prints JSON");
    assert_eq!(shown["event"]["event"], UNPLANNED, "{shown}");
    assert_eq!(shown["event"]["messageId"], track_id, "{shown}");

    // Not in the profile: it has the identify only.
    let ids = server.profile_events(user).await.expect("the identify made a profile");
    assert_eq!(ids, [identify_id], "the held track is not in the profile");

    // Under the same plan, redrive keeps it.
    let out = stdout_of(&quarantine(&server, &["redrive"]), "redrive under plan 1");
    assert!(out.contains("still violates") && out.contains("0 redriven, 1 still held, 0 dropped"), "{out}");
    assert_eq!(listed(&server).len(), 1);

    // The plan now declares the event: redrive queues it, and it reaches the profile exactly once.
    write(server.config_path(), &quarantine_config("2", &[PLANNED, UNPLANNED]));
    let out = stdout_of(&quarantine(&server, &["redrive"]), "redrive under plan 2");
    assert!(out.contains("1 redriven, 0 still held, 0 dropped"), "{out}");
    let ids = wait_events(&server, user, |ids| ids.iter().any(|m| m == track_id)).await;
    assert_eq!((count(&ids, track_id), count(&ids, identify_id)), (1, 1), "{ids:?}");
    assert!(listed(&server).is_empty(), "nothing is held any more");

    // Again: nothing to redrive, nothing doubles.
    let out = stdout_of(&quarantine(&server, &["redrive"]), "second redrive");
    assert!(out.contains("0 redriven, 0 still held, 0 dropped"), "{out}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ids = server.profile_events(user).await.expect("profile");
    assert_eq!((count(&ids, track_id), ids.len()), (1, 2), "{ids:?}");
    assert_eq!(server.consumed().await.len(), 2, "two events delivered in all");
}

#[test]
fn unknown_source_and_missing_data_dir_are_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config_path = dir.path().join("workspace.yaml");
    write(&config_path, &quarantine_config("1", &[PLANNED]));
    let run = |source: &str, data_dir: &Path| {
        let out = Command::new(tributary_bin())
            .args(["quarantine", "redrive", "--source", source, "--config"])
            .arg(&config_path)
            .arg("--data-dir")
            .arg(data_dir)
            .output()
            .expect("run tributary quarantine");
        assert!(!out.status.success(), "must fail: {out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run("nope", dir.path());
    assert!(err.contains(&config_path.display().to_string()) && err.contains("\"nope\""), "{err}");
    assert!(err.contains("web"), "names the sources there are: {err}");
    let missing = dir.path().join("no-such-dir");
    let err = run("web", &missing);
    assert!(err.contains(&missing.display().to_string()), "{err}");
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}
