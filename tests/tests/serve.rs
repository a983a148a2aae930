//! `tributary serve` as a user runs it: acknowledged events survive SIGKILL, SIGTERM stops cleanly, the demo
//! workspace works, and `config check` names the file and line of each problem.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tributary_tests::support::{tributary_bin, Serve, TEST_WRITE_KEY};

async fn post_batch(http: &reqwest::Client, base: &str, batch: Vec<Value>) -> reqwest::Result<reqwest::StatusCode> {
    let resp = http
        .post(format!("{base}/v1/batch"))
        .basic_auth(TEST_WRITE_KEY, Some(""))
        .json(&json!({ "batch": batch, "sentAt": "2026-01-01T00:00:00.000Z" }))
        .send()
        .await?;
    Ok(resp.status())
}

fn batch(request: usize, size: usize) -> Vec<Value> {
    (0..size)
        .map(|i| {
            json!({"type": "track", "userId": format!("user-{request}"), "event": "Page Viewed",
                   "messageId": format!("kill-{request}-{i}"), "timestamp": "2026-01-01T00:00:00.000Z",
                   "properties": {"i": i}})
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_right_after_200_loses_no_acknowledged_event() {
    let mut serve = Serve::start();
    let http = serve.http().clone();
    let base = serve.base_url().to_string();

    // Four concurrent writers; the server is killed with SIGKILL as soon as the 40th request has its 200, while
    // the others are still in flight. Only the events of requests that got a 200 are owed.
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (http, base, acked, count) = (http.clone(), base.clone(), acked.clone(), count.clone());
        writers.push(tokio::spawn(async move {
            for r in 0..25 {
                let id = w * 100 + r;
                let events = batch(id, 20);
                let ids: Vec<String> = events.iter().map(|e| e["messageId"].as_str().unwrap().to_string()).collect();
                match post_batch(&http, &base, events).await {
                    Ok(s) if s == 200 => {
                        acked.lock().unwrap().extend(ids);
                        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    // Refused or cut off by the kill: not acknowledged, not owed.
                    _ => break,
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while count.load(std::sync::atomic::Ordering::SeqCst) < 40 {
        assert!(Instant::now() < deadline, "writers too slow");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    serve.kill9();
    for w in writers {
        w.await.unwrap();
    }
    let owed: HashSet<String> = acked.lock().unwrap().iter().cloned().collect();
    assert!(owed.len() >= 800, "at least 40 acknowledged requests of 20 events");

    serve.restart();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let consumed: HashSet<String> = serve
            .consumed()
            .await
            .iter()
            .map(|e| e["event"]["messageId"].as_str().unwrap_or_default().to_string())
            .collect();
        let missing: Vec<&String> = owed.iter().filter(|id| !consumed.contains(*id)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} acknowledged events lost after SIGKILL + restart, e.g. {:?}",
            missing.len(),
            owed.len(),
            &missing[..missing.len().min(5)]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A child process that is killed when the test ends, even by a panic.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `tributary serve` by hand (the test needs its pid and its stdout).
fn spawn_serve(args: &[&str]) -> (Killed, String, Vec<String>) {
    let mut child = Command::new(tributary_bin())
        .arg("serve")
        .args(args)
        .args(["--addr", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tributary serve");
    let stdout = child.stdout.take().unwrap();
    let child = Killed(child);
    let mut lines = BufReader::new(stdout).lines();
    let mut before = Vec::new();
    loop {
        let line = lines.next().expect("serve exited before it was ready").expect("stdout");
        if let Some(url) = line.strip_prefix("tributary listening on ") {
            std::thread::spawn(move || for _ in lines {});
            return (child, url.trim().to_string(), before);
        }
        before.push(line);
    }
}

#[tokio::test]
async fn demo_workspace_prints_its_keys_and_sigterm_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut child, base, banner) = spawn_serve(&["--data-dir", data.to_str().unwrap()]);
    let key_line = banner.iter().find(|l| l.contains("write key:")).expect("demo prints its write key");
    let write_key = key_line.rsplit(' ').next().unwrap().to_string();
    assert!(banner.iter().any(|l| l.contains("management key:")), "{banner:?}");

    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{base}/v1/track"))
        .basic_auth(&write_key, Some(""))
        .json(&json!({"userId": "demo-user", "event": "Tried Tributary", "messageId": "demo-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = http
        .post(format!("{base}/v1/track"))
        .basic_auth("not-the-key", Some(""))
        .json(&json!({"userId": "demo-user", "event": "E"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    let status = Command::new("kill").args(["-TERM", &child.0.id().to_string()]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "serve did not stop within 15 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "clean exit after SIGTERM, got {exit}");

    // A restart on the same data dir keeps the demo keys and the consumed event.
    let (_child, base, banner2) = spawn_serve(&["--data-dir", data.to_str().unwrap()]);
    assert!(banner2.iter().any(|l| l.ends_with(&write_key)), "same demo key after restart: {banner2:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let events: Value = http.get(format!("{base}/_local/events")).send().await.unwrap().json().await.unwrap();
        if events["events"].as_array().unwrap().iter().any(|e| e["event"]["messageId"] == "demo-1") {
            break;
        }
        assert!(Instant::now() < deadline, "demo-1 not consumed after restart: {events}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn config_check_names_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("workspace.yaml");
    std::fs::write(&bad, "workspace: w\nsources:\n  - id: web\n    write_key_sha256: [\"abc\"]\n    class: 1P\n")
        .unwrap();
    let out = Command::new(tributary_bin()).args(["config", "check"]).arg(&bad).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = format!("{}:4:", bad.display());
    assert!(stderr.contains(&expected), "expected `{expected}` in:\n{stderr}");
    assert!(stderr.contains("SHA-256"), "{stderr}");

    let good = dir.path().join("good.yaml");
    std::fs::write(&good, tributary_tests::support::test_config()).unwrap();
    let out = Command::new(tributary_bin()).args(["config", "check"]).arg(&good).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));

    let out = Command::new(tributary_bin()).args(["config", "schema"]).output().unwrap();
    let schema: Value = serde_json::from_slice(&out.stdout).expect("schema is JSON");
    assert!(schema["properties"]["sources"].is_object());
}
