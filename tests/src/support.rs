//! Helpers shared by the integration tests: the real `tributary` binary, a test workspace config, and
//! [`Serve`], a `tributary serve` child process with its own data directory.
//!
//! `tributary serve` contract relied on here:
//! - `tributary serve --config FILE --data-dir DIR --addr 127.0.0.1:0` prints exactly one line
//!   `tributary listening on http://127.0.0.1:PORT` on stdout once it accepts requests;
//! - `GET /_local/events` → `{"events":[{"sourceId":"web","event":{…normalized event…}}, …]}`: what the pipeline
//!   consumed from the events queue, in order;
//! - `GET /_local/requests` → `{"requests":[{"method","path","status","userAgent","contentType",
//!   "contentEncoding","auth"}, …]}`: every tracking request the server answered, in order.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The write key of the `web` source in [`test_config`].
pub const TEST_WRITE_KEY: &str = "test-write-key";
/// A management key of [`test_config`] with every scope.
pub const TEST_MANAGEMENT_KEY: &str = "test-management-key";

/// How long `tributary serve` may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const READY_PREFIX: &str = "tributary listening on ";

/// The `tributary` binary of the same target directory and profile as the running test.
///
/// `TRIBUTARY_BIN` overrides it. Otherwise it is `<target>/<profile>/tributary`, found from the test executable
/// (`<target>/<profile>/deps/<test>-<hash>`). If that file does not exist it is built once per test process with
/// `cargo build -p tributary-cli --bin tributary`. An existing binary is used as it is: `cargo test -p
/// tributary-tests` does not rebuild other packages' binaries, so build the workspace first (scripts/test.sh does).
pub fn tributary_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("TRIBUTARY_BIN") {
            return PathBuf::from(bin);
        }
        let exe = std::env::current_exe().expect("current_exe of the test");
        let mut profile_dir = exe.parent().expect("test executable has a parent directory").to_path_buf();
        if profile_dir.ends_with("deps") {
            profile_dir.pop();
        }
        let bin = profile_dir.join(format!("tributary{}", std::env::consts::EXE_SUFFIX));
        if !bin.exists() {
            build_tributary(&profile_dir);
            assert!(bin.exists(), "cargo build succeeded but {} does not exist", bin.display());
        }
        bin
    })
    .clone()
}

fn build_tributary(profile_dir: &Path) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-p", "tributary-cli", "--bin", "tributary"]);
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(other) => {
            cmd.args(["--profile", other]);
        }
    }
    if let Some(target_dir) = profile_dir.parent() {
        cmd.arg("--target-dir").arg(target_dir);
    }
    // Build from the workspace, whatever directory the test runner started the test in.
    cmd.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let out = cmd.output().unwrap_or_else(|e| panic!("could not run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A workspace config (YAML) with one first-party source `web` whose write key is [`TEST_WRITE_KEY`], no rate limit,
/// one management key [`TEST_MANAGEMENT_KEY`] with every scope, and one essential webhook destination: the
/// server's own sink.
pub fn test_config() -> String {
    let write_key = tributary_core::sha256_hex(TEST_WRITE_KEY.as_bytes());
    let management_key = tributary_core::sha256_hex(TEST_MANAGEMENT_KEY.as_bytes());
    format!(
        r#"workspace: tributary-tests
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
destinations:
  # Every event to the server's own webhook receiver (listed at /_local/events).
  - id: local-sink
    kind: webhook
    essential: true
    transport:
      url: "${{TRIBUTARY_LOCAL_URL}}/_local/sink"
delivery:
  allow_private_hosts: ["127.0.0.1"]
"#
    )
}

/// A second-party source `partner` without a write key that imports CSV files of `email,tier` as identify events,
/// as one YAML entry of a `sources:` list (indented as in [`test_config`]).
pub const PARTNER_SOURCE: &str = r#"  - id: partner
    write_key_sha256: []
    class: "2P"
    consent_basis: contract
    permitted_purposes: [analytics]
    import:
      format: csv
      columns:
        email: { identifier: email }
        tier: { type: string }
      event: { type: identify }
"#;

/// [`test_config`] plus a tracking plan for `web`, version `plan_version`, that declares `events` (any properties)
/// and quarantines unplanned track events.
pub fn quarantine_config(plan_version: &str, events: &[&str]) -> String {
    let events: String = events.iter().map(|e| format!("        {e}: {{ type: object }}\n")).collect();
    test_config().replace(
        "    class: \"1P\"\n",
        &format!(
            "    class: \"1P\"\n    tracking_plan:\n      version: \"{plan_version}\"\n      events:\n{events}      unplanned: quarantine\n"
        ),
    )
}

/// `tributary serve` running as a child process on a loopback port chosen by the OS, with its config file and
/// data directory in a temporary directory of its own (removed on drop). Dropping it kills the process.
pub struct Serve {
    child: Option<Child>,
    base_url: String,
    config_path: PathBuf,
    data_dir: PathBuf,
    http: reqwest::Client,
    /// Extra environment variables of the server process.
    env: Vec<(String, String)>,
    // Last, so the directory is removed after the child is gone.
    _dir: tempfile::TempDir,
}

impl Serve {
    /// Starts `tributary serve` with [`test_config`] and an empty data directory; returns once it is ready.
    pub fn start() -> Serve {
        Serve::start_with_config(&test_config())
    }

    /// Starts `tributary serve` with the given workspace config (YAML) and an empty data directory.
    pub fn start_with_config(config: &str) -> Serve {
        Serve::start_with_env(config, &[])
    }

    /// Like [`Serve::start_with_config`], with extra environment variables for the server process.
    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Serve {
        let dir = tempfile::Builder::new().prefix("tributary-test-").tempdir().expect("temporary directory");
        let config_path = dir.path().join("workspace.yaml");
        std::fs::write(&config_path, config).expect("write the workspace config");
        let data_dir = dir.path().join("data");
        std::fs::create_dir_all(&data_dir).expect("create the data directory");
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("HTTP client");
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut serve = Serve { child: None, base_url: String::new(), config_path, data_dir, http, env, _dir: dir };
        serve.spawn();
        serve
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The server's data directory (kept across [`Serve::restart`]).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The workspace config file the server was started with.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Kills the server with SIGKILL (no chance to flush or clean up) and waits for it to be gone.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            // `Child::kill` is SIGKILL on Unix; it fails only if the process was already reaped.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same config and data directory (the port may change). A server that is
    /// still running is killed with SIGKILL first.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Every event the pipeline has consumed so far: `GET /_local/events` → the `events` array, each entry
    /// `{"sourceId": "...", "event": {...normalized event...}}`.
    pub async fn consumed(&self) -> Vec<Value> {
        self.get_array("/_local/events", "events").await
    }

    /// Polls [`Serve::consumed`] until it holds at least `n` events; panics after `timeout`, showing what was
    /// consumed and which requests the server answered.
    pub async fn wait_consumed(&self, n: usize, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let events = self.consumed().await;
            if events.len() >= n {
                return events;
            }
            if Instant::now() >= deadline {
                let requests = self.requests().await;
                panic!(
                    "expected at least {n} consumed events within {timeout:?}, got {}:\n{}\nrequests answered:\n{}",
                    events.len(),
                    pretty(&events),
                    pretty(&requests)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every tracking request the server answered, in order: `GET /_local/requests` → the `requests` array, each
    /// `{"method","path","status","userAgent","contentType","contentEncoding","auth"}`.
    pub async fn requests(&self) -> Vec<Value> {
        self.get_array("/_local/requests", "requests").await
    }

    /// The message ids of `user_id:<user>`'s events through the profile API (newest first), or `None` while the
    /// profile does not exist (404).
    pub async fn profile_events(&self, user: &str) -> Option<Vec<String>> {
        let url = format!("{}/v1/profiles/user_id:{user}/events", self.base_url());
        let resp = self.http().get(&url).bearer_auth(TEST_MANAGEMENT_KEY).send().await.expect("GET events");
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.expect("JSON body");
        if status == 404 {
            return None;
        }
        assert_eq!(status, 200, "GET {url}: {body}");
        let events = body["events"].as_array().unwrap_or_else(|| panic!("GET {url}: no events array: {body}"));
        Some(events.iter().filter_map(|e| e["message_id"].as_str().map(str::to_owned)).collect())
    }

    /// Runs `tributary import FILE --source SOURCE` against this server's config and data dir (the CLI puts the file
    /// through the import path and returns once its rows are applied); the command's output.
    pub fn import(&self, file: &Path, source: &str) -> std::process::Output {
        let out = Command::new(tributary_bin())
            .arg("import")
            .arg(file)
            .args(["--source", source, "--config"])
            .arg(&self.config_path)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .output()
            .expect("run tributary import");
        assert!(
            out.status.success(),
            "tributary import failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// A ready-made HTTP client (30 s timeout) for requests of the test's own.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    async fn get_array(&self, path: &str, field: &str) -> Vec<Value> {
        let url = format!("{}{path}", self.base_url);
        let response = self.http.get(&url).send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = response.status();
        let body = response.text().await.unwrap_or_else(|e| panic!("GET {url}: reading the body: {e}"));
        assert!(status.is_success(), "GET {url}: {status}: {body}");
        let mut json: Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {url}: not JSON ({e}): {body}"));
        match json.get_mut(field).map(Value::take) {
            Some(Value::Array(items)) => items,
            _ => panic!("GET {url}: expected {{\"{field}\": [...]}}, got {body}"),
        }
    }

    fn spawn(&mut self) {
        let bin = tributary_bin();
        let mut cmd = Command::new(&bin);
        cmd.arg("serve")
            .arg("--config")
            .arg(&self.config_path)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--addr", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "warn");
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("could not start {}: {e}", bin.display()));
        let stdout = child.stdout.take().expect("piped stdout");

        // The reader thread hands over the ready line's URL, then keeps forwarding the server's stdout to stderr
        // until the process exits (so its output shows with the test's, and the pipe never fills up).
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match line.strip_prefix(READY_PREFIX) {
                    Some(url) if tx.is_some() => {
                        let _ = tx.take().expect("checked").send(url.trim().trim_end_matches('/').to_string());
                    }
                    _ => eprintln!("[tributary serve] {line}"),
                }
            }
        });

        match rx.recv_timeout(READY_TIMEOUT) {
            Ok(url) => {
                self.base_url = url;
                self.child = Some(child);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{} serve printed no `{READY_PREFIX}…` line within {READY_TIMEOUT:?}", bin.display());
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // stdout closed before the ready line: the server exited (or closed stdout).
                let status = match child.wait_timeout_or_kill(Duration::from_secs(5)) {
                    Some(status) => status.to_string(),
                    None => "still running with stdout closed; killed".to_string(),
                };
                panic!("{} serve stopped before it was ready ({status}); see its stderr above", bin.display());
            }
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.kill9();
    }
}

trait WaitTimeoutOrKill {
    fn wait_timeout_or_kill(&mut self, timeout: Duration) -> Option<std::process::ExitStatus>;
}

impl WaitTimeoutOrKill for Child {
    /// The exit status if the process ends within `timeout`; otherwise kills it and returns `None`.
    fn wait_timeout_or_kill(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                let _ = self.kill();
                let _ = self.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn pretty(values: &[Value]) -> String {
    serde_json::to_string_pretty(values).unwrap_or_else(|_| format!("{values:?}"))
}

/// Polls `f` every 200 ms until it gives a value; panics naming `what` after `timeout`.
pub async fn eventually<T>(what: &str, timeout: Duration, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An HTTP API request (payload format 2.0, the `$default` stage), as API Gateway hands it to a function.
pub fn http_request(
    method: &str,
    path: &str,
    authorization: &str,
    body: Option<String>,
) -> aws_lambda_events::apigw::ApiGatewayV2httpRequest {
    serde_json::from_value(serde_json::json!({
        "version": "2.0",
        "routeKey": format!("{method} {path}"),
        "rawPath": path,
        "rawQueryString": "",
        "headers": {
            "content-type": "application/json",
            "user-agent": "tributary-tests",
            "host": "abc123.execute-api.us-east-1.amazonaws.com",
            "authorization": authorization,
        },
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "abc123",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "198.51.100.23",
                "userAgent": "tributary-tests"
            },
            "requestId": uuid::Uuid::new_v4().simple().to_string(),
            "routeKey": format!("{method} {path}"),
            "stage": "$default",
            "time": "10/Mar/2025:12:00:00 +0000",
            "timeEpoch": 1741608000000_i64
        },
        "body": body,
        "isBase64Encoded": false
    }))
    .expect("an API Gateway request")
}

/// A function's HTTP answer body, base64 decoded when the function encoded it.
pub fn body_bytes(resp: &aws_lambda_events::apigw::ApiGatewayV2httpResponse) -> Vec<u8> {
    use base64::Engine as _;
    let raw = match &resp.body {
        Some(aws_lambda_events::encodings::Body::Text(s)) => s.as_bytes().to_vec(),
        Some(aws_lambda_events::encodings::Body::Binary(b)) => b.clone(),
        _ => Vec::new(),
    };
    if resp.is_base64_encoded {
        base64::engine::general_purpose::STANDARD.decode(&raw).expect("base64 body")
    } else {
        raw
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_config_is_a_valid_workspace() {
        let cfg = tributary_core::config::load(&test_config()).expect("test_config() must load");
        assert_eq!(cfg.sources.len(), 1);
        let web = &cfg.sources[0];
        assert_eq!(web.id.as_str(), "web");
        assert_eq!(web.write_key_sha256[0].as_str(), tributary_core::sha256_hex(TEST_WRITE_KEY.as_bytes()));
        assert_eq!(web.class, tributary_core::config::DataPartyClass::FirstParty);
        assert!(web.rate_limit.is_none());
        assert_eq!(cfg.management_keys.len(), 1);
    }

    #[tokio::test]
    async fn serve_starts_answers_and_restarts_on_the_same_data_dir() {
        let mut serve = Serve::start();
        let data_dir = serve.data_dir().to_path_buf();
        let health = |base: String| async move {
            let url = format!("{base}/health");
            reqwest::get(&url).await.unwrap_or_else(|e| panic!("GET {url}: {e}")).status()
        };
        assert!(health(serve.base_url().to_string()).await.is_success());
        assert!(serve.consumed().await.is_empty(), "a fresh data dir has consumed nothing");
        assert!(serve.requests().await.is_empty(), "no tracking request yet");

        serve.kill9();
        serve.restart();
        assert_eq!(serve.data_dir(), data_dir);
        assert!(health(serve.base_url().to_string()).await.is_success(), "answers again after restart");
    }
}
