//! Running the official SDK client scripts (`tests/sdk/*`) from the tests: the interpreter from the environment
//! `scripts/test.sh` exports, a timeout, and the JSON summary each script prints last.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The value of `name`; panics naming `what` it must hold when unset (these tests never skip).
pub fn required_env(name: &str, what: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set: it must name {what}. Run ./scripts/test.sh, which installs the SDK clients and \
             exports it (these tests never skip)."
        ),
    }
}

/// `$TRIBUTARY_PYTHON` (the test venv's python with the Segment and RudderStack SDKs), unbuffered.
pub fn python_command() -> Command {
    let python = required_env(
        "TRIBUTARY_PYTHON",
        "a python with segment-analytics-python and rudder-sdk-python (.test-tools/venv/bin/python)",
    );
    let mut cmd = Command::new(python);
    cmd.env("PYTHONDONTWRITEBYTECODE", "1").env("PYTHONUNBUFFERED", "1");
    cmd
}

/// Runs a client script; panics (with its output) unless it exits 0 within `timeout` and its last stdout line is
/// a JSON summary with no `errors`. Returns that summary. `script` names it in messages.
pub fn run_client(cmd: Command, script: &str, timeout: Duration) -> Value {
    let (status, stdout, stderr) = run_with_timeout(cmd, timeout);
    let shown = format!("--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}");
    let Some(status) = status else {
        panic!("{script} did not finish within {timeout:?} (killed); a client retrying?\n{shown}");
    };
    assert!(status.success(), "{script} failed ({status}): the client reported errors\n{shown}");
    let last = stdout.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default();
    let summary: Value = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("{script}: last stdout line is not the JSON summary ({e})\n{shown}"));
    let errors = summary["errors"].as_array().map(Vec::len).unwrap_or(0);
    assert_eq!(errors, 0, "{script}: the client reported errors\n{shown}");
    summary
}

/// Runs `cmd` with piped output; `None` as status if it had to be killed after `timeout`.
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> (Option<std::process::ExitStatus>, String, String) {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("could not start {cmd:?}: {e}"));
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let err = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    (status, out.join().unwrap_or_default(), err.join().unwrap_or_default())
}

/// Values as pretty JSON, for assertion messages.
pub fn pretty(values: &[Value]) -> String {
    serde_json::to_string_pretty(values).unwrap_or_else(|_| format!("{values:?}"))
}
