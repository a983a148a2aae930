//! Chaos: `tributary serve` taking a stream of events from four concurrent clients while
//! (a) 10 % of its profile-table calls fail (`TRIBUTARY_FAULTS`, crates/local/src/faults.rs: throttles,
//!     outages, replies lost after the write landed, slow calls), and queue and object calls fail now and then too;
//! (b) the webhook destination answers 503 for a stretch (at least [`OUTAGE`], past its retries: deliveries go to
//!     the DLQ);
//! (c) the server is killed with SIGKILL mid-stream and started again on the same data.
//!
//! The clients behave like the SDKs: a request that gets no 200 is sent again, the same body, until it does. Then,
//! after the pipeline drained and both DLQs were redriven (`tributary redrive`, `tributary redrive --events`):
//! - every event answered with a 200 is in its profile's history exactly once (profile API);
//! - each profile's traits are the reference model's (tests/src/reference.rs) for the same events;
//! - every such event reached the webhook (at least once; once per messageId, which is the idempotency key a
//!   destination dedups on);
//! - both DLQs are empty.
//!
//! The stream is the identity generator's (tests/src/people.rs): devices, logins, aliases, a data broker's hashed
//! emails and consent changes, in an order-independent mix. The test command runs 200 people (about 3,400 events,
//! two to three minutes); the longer run, about 50,000 events, is
//! `TRIBUTARY_CHAOS_PEOPLE=3000 cargo test -p tributary-tests --test chaos -- --nocapture`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::{json, Value};
use tributary_core::identity::{extract, ExtractOptions, IdType, Identifier};
use tributary_tests::erasure::Receiver;
use tributary_tests::people::{self, PeopleSpec, APP, BROKER, SET_ONCE_TRAIT, WEB};
use tributary_tests::stitching;
use tributary_tests::support::{tributary_bin, Serve, TEST_MANAGEMENT_KEY};

const CLIENTS: usize = 4;
/// Events per request (at most; a request carries one source's events).
const PER_REQUEST: usize = 10;
/// Profile-table calls that fail, and queue and object-store calls.
const FAULTS: &str = "table=0.1,queue=0.02,objects=0.05,delay_ms=20";
/// The destination stays down at least this long.
const OUTAGE: Duration = Duration::from_secs(8);
/// How long the whole run may take before the test gives up.
const DEADLINE: Duration = Duration::from_secs(900);

fn write_key(source: &str) -> String {
    format!("chaos-{source}-key")
}

fn workspace(hook: &str) -> String {
    let key = |s: &str| tributary_core::sha256_hex(write_key(s).as_bytes());
    format!(
        r#"workspace: chaos
consent:
  purposes:
    - {{ id: advertising, aliases: [Advertising, C0004] }}
    - {{ id: analytics, aliases: [Analytics, C0002] }}
sources:
  - {{ id: {WEB}, write_key_sha256: ["{web}"], class: 1P }}
  - {{ id: {APP}, write_key_sha256: ["{app}"], class: 1P }}
  - {{ id: {BROKER}, write_key_sha256: ["{broker}"], class: 3P, consent_basis: consent, permitted_purposes: [] }}
profiles:
  set_once: [{SET_ONCE_TRAIT}]
management_keys:
  - id: tests
    key_sha256: "{management}"
    scopes: ["profiles:read", "dsr", "admin"]
destinations:
  - id: hook
    kind: webhook
    essential: true
    transport: {{ url: "{hook}" }}
delivery:
  allow_private_hosts: ["127.0.0.1"]
  # Quick retries, so that the outage sends deliveries to the DLQ within the test (a redrive brings them back).
  backoff_base_ms: 200
  backoff_max_ms: 2000
  max_attempts: 5
"#,
        web = key(WEB),
        app = key(APP),
        broker = key(BROKER),
        management = tributary_core::sha256_hex(TEST_MANAGEMENT_KEY.as_bytes()),
    )
}

/// What the destination accepted: each messageId answered 200, with how many times.
fn accepted_ids(hook: &Receiver) -> HashMap<String, u32> {
    let mut ids: HashMap<String, u32> = HashMap::new();
    for p in hook.posts().iter().filter(|p| p.status == 200) {
        *ids.entry(p.json()["messageId"].as_str().unwrap_or_default().to_string()).or_default() += 1;
    }
    ids
}

/// One request: the source, its events.
type Request = (String, Vec<Value>);

/// Sends each request until it is answered 200; records the (source, messageId) of every event accepted.
async fn client(
    http: reqwest::Client,
    base: Arc<RwLock<String>>,
    requests: Vec<Request>,
    accepted: Arc<Mutex<BTreeSet<(String, String)>>>,
    sent: Arc<AtomicUsize>,
    retries: Arc<AtomicUsize>,
) {
    let deadline = Instant::now() + DEADLINE;
    for (source, events) in requests {
        let body = json!({ "batch": events });
        loop {
            assert!(Instant::now() < deadline, "a request was not accepted in time");
            let url = format!("{}/v1/batch", base.read().expect("base url"));
            let resp = http.post(&url).basic_auth(write_key(&source), Some("")).json(&body).send().await;
            match resp {
                Ok(r) if r.status() == 200 => {
                    let answer: Value = r.json().await.unwrap_or(Value::Null);
                    let rejected: BTreeSet<String> = answer["rejected"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|r| r["messageId"].as_str().map(str::to_string))
                        .collect();
                    assert!(rejected.is_empty(), "the generator's events are valid: {answer}");
                    let mut acc = accepted.lock().expect("accepted");
                    for e in &events {
                        acc.insert((source.clone(), e["messageId"].as_str().unwrap_or_default().to_string()));
                    }
                    break;
                }
                Ok(r) if r.status().is_client_error() && r.status() != 429 => {
                    panic!("{url}: {} for a valid batch: {}", r.status(), r.text().await.unwrap_or_default())
                }
                // 5xx, 429, a connection refused while the server restarts: back off and send the same body.
                _ => {
                    retries.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        sent.fetch_add(1, Ordering::SeqCst);
    }
}

/// Runs `tributary redrive ARGS --data-dir DIR` and returns its JSON report.
fn redrive(server: &Serve, args: &[&str]) -> Value {
    let out = Command::new(tributary_bin())
        .arg("redrive")
        .args(args)
        .args(["--json", "--data-dir"])
        .arg(server.data_dir())
        .output()
        .expect("run tributary redrive");
    assert!(out.status.success(), "tributary redrive {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("tributary redrive {args:?}: not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout))
    })
}

/// Messages a redrive report says are (still) in its DLQ.
fn in_dlq(report: &Value) -> usize {
    report["entries"].as_array().map_or(0, Vec::len)
}

/// `GET url` with the management key, sent again while the answer is a 5xx (the API's own table calls fail too,
/// on purpose): the status and JSON body.
async fn get_json(http: &reqwest::Client, url: &str) -> (u16, Value) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(resp) = http.get(url).bearer_auth(TEST_MANAGEMENT_KEY).send().await {
            let status = resp.status().as_u16();
            if status < 500 {
                return (status, resp.json().await.unwrap_or(Value::Null));
            }
        }
        assert!(Instant::now() < deadline, "GET {url}: no answer but 5xx for a minute");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every page of a profile's history (`{"events","next"}`), as `source/messageId` and the time the server
/// received the event (ms); `None` when 404.
async fn history(http: &reqwest::Client, base: &str, lookup: &str) -> Option<Vec<(String, i64)>> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{base}/v1/profiles/{lookup}/events?limit=100");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let (status, page) = get_json(http, &url).await;
        if status == 404 {
            return None;
        }
        assert_eq!(status, 200, "GET {url}: {page}");
        out.extend(page["events"].as_array().into_iter().flatten().filter_map(|e| {
            Some((format!("{}/{}", e["source"].as_str()?, e["message_id"].as_str()?), e["received"].as_i64()?))
        }));
        match page["next"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return Some(out),
        }
    }
}

/// The identifier the profile API looks a reference profile up by (a user id when it has one).
fn lookup_of(ids: &BTreeSet<Identifier>) -> Option<String> {
    let pick = |kind: IdType| ids.iter().find(|i| i.kind == kind);
    let id = pick(IdType::UserId).or_else(|| pick(IdType::AnonymousId))?;
    Some(format!("{}:{}", id.kind, id.value))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_pipeline_keeps_every_accepted_event_exactly_once_through_faults_an_outage_and_a_kill() {
    let started = Instant::now();
    let people: usize = std::env::var("TRIBUTARY_CHAOS_PEOPLE").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let stream = people::generate(&PeopleSpec { people, seed: 9, junk_ids: false, ..PeopleSpec::default() });
    let events = people::shuffled(&stream, 9);
    let total = events.len();

    // Requests: consecutive events of one source, at most PER_REQUEST, dealt round-robin to the clients.
    let mut requests: Vec<Request> = Vec::new();
    for e in &events {
        // Without `sentAt`, ingest keeps the event's own `timestamp` (with it, the time is corrected by the clock
        // skew between sentAt and the arrival, which depends on when the request happens to arrive).
        let mut event = e.event.clone();
        event.remove("sentAt");
        let event = Value::Object(event);
        match requests.last_mut() {
            Some((source, batch)) if *source == e.source && batch.len() < PER_REQUEST => batch.push(event),
            _ => requests.push((e.source.clone(), vec![event])),
        }
    }
    let n_requests = requests.len();
    let mut shares: Vec<Vec<Request>> = vec![Vec::new(); CLIENTS];
    for (i, r) in requests.into_iter().enumerate() {
        shares[i % CLIENTS].push(r);
    }

    // The destination answers 503 while `down`.
    let down = Arc::new(AtomicBool::new(false));
    let switch = down.clone();
    let hook = Receiver::answering(move |_| {
        if switch.load(Ordering::SeqCst) {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        }
    })
    .await;
    let hook_url = format!("{}/hook", hook.url());
    let config = workspace(&hook_url);
    let mut server = Serve::start_with_env(&config, &[("TRIBUTARY_FAULTS", FAULTS)]);
    let base = Arc::new(RwLock::new(server.base_url().to_string()));
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
    let accepted: Arc<Mutex<BTreeSet<(String, String)>>> = Arc::default();
    let (sent, retries) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let clients: Vec<_> = shares
        .into_iter()
        .map(|share| {
            tokio::spawn(client(http.clone(), base.clone(), share, accepted.clone(), sent.clone(), retries.clone()))
        })
        .collect();

    // The destination goes down at 20 % of the requests and comes back at 60 %; the server is killed at 40 %.
    let at = |share: f64| (n_requests as f64 * share) as usize;
    let wait_for = |n: usize| {
        let sent = sent.clone();
        async move {
            while sent.load(Ordering::SeqCst) < n {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait_for(at(0.2)).await;
    down.store(true, Ordering::SeqCst);
    let outage = Instant::now();
    wait_for(at(0.4)).await;
    tokio::task::block_in_place(|| server.restart());
    *base.write().expect("base url") = server.base_url().to_string();
    eprintln!(
        "chaos: killed with SIGKILL and restarted after {} of {n_requests} requests",
        sent.load(Ordering::SeqCst)
    );
    wait_for(at(0.6)).await;
    tokio::time::sleep(OUTAGE.saturating_sub(outage.elapsed())).await;
    down.store(false, Ordering::SeqCst);
    for c in clients {
        c.await.expect("a client");
    }
    let accepted = accepted.lock().expect("accepted").clone();
    assert_eq!(accepted.len(), total, "every event was accepted in the end");
    eprintln!(
        "chaos: {total} events in {n_requests} requests accepted after {} retries, in {:.0} s",
        retries.load(Ordering::SeqCst),
        started.elapsed().as_secs_f64()
    );

    // Drain: wait for the webhook to have every event, redriving both DLQs when progress stalls.
    let events_by_id: BTreeMap<String, &people::GenEvent> =
        events.iter().map(|e| (e.event["messageId"].as_str().unwrap_or_default().to_string(), e)).collect();
    let delivered = |hook: &Receiver| accepted_ids(hook).len();
    let deadline = started + DEADLINE;
    let (mut last, mut stalled_since) = (0, Instant::now());
    while delivered(&hook) < total {
        assert!(Instant::now() < deadline, "only {} of {total} events reached the webhook", delivered(&hook));
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = delivered(&hook);
        if now > last {
            (last, stalled_since) = (now, Instant::now());
        } else if stalled_since.elapsed() > Duration::from_secs(20) {
            let events = redrive(&server, &["--events", "--config", &server.config_path().display().to_string()]);
            let deliveries = redrive(&server, &[]);
            eprintln!(
                "chaos: {now} of {total} delivered; redrive moved {} event batches and {} deliveries",
                events["moved"], deliveries["moved"]
            );
            stalled_since = Instant::now();
            let hooked: BTreeSet<String> = accepted_ids(&hook).into_keys().collect();
            let missing: Vec<&people::GenEvent> =
                events_by_id.iter().filter(|(id, _)| !hooked.contains(*id)).map(|(_, e)| *e).take(2).collect();
            for e in missing {
                let ids = extract(&e.event, &ExtractOptions { default_country_code: None, include_hashed: true }).ids;
                let Some(id) = ids.first() else { continue };
                let url = format!("{}/v1/profiles/{}:{}/deliveries?limit=100", server.base_url(), id.kind, id.value);
                let receipts: Value = http
                    .get(&url)
                    .bearer_auth(TEST_MANAGEMENT_KEY)
                    .send()
                    .await
                    .expect("GET")
                    .json()
                    .await
                    .unwrap_or(Value::Null);
                let message = e.event["messageId"].as_str().unwrap_or_default();
                let mine: Vec<&Value> = receipts["deliveries"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|d| d.to_string().contains(message))
                    .collect();
                let history = history(&http, server.base_url(), &format!("{}:{}", id.kind, id.value)).await;
                let in_history = history.is_some_and(|h| h.iter().any(|(m, _)| m.ends_with(message)));
                eprintln!("chaos: not delivered {}/{message}: in history {in_history}, receipts {mine:?}", e.source);
            }
        }
    }
    // Whatever is left in the DLQs now would be a lost event; a last redrive finds nothing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let config_path = server.config_path().display().to_string();
    assert_eq!(in_dlq(&redrive(&server, &["--events", "--config", &config_path, "--dry-run"])), 0, "events DLQ");
    assert_eq!(in_dlq(&redrive(&server, &["--dry-run"])), 0, "delivery DLQ");

    // Every accepted event reached the webhook; nothing else did.
    let hook_accepted = accepted_ids(&hook);
    let hooked: BTreeSet<String> = hook_accepted.keys().cloned().collect();
    let sent_ids: BTreeSet<String> = accepted.iter().map(|(_, m)| m.clone()).collect();
    assert_eq!(hooked, sent_ids, "the webhook got exactly the accepted events (by messageId)");
    let extra: u32 = hook_accepted.values().map(|n| n - 1).sum();
    eprintln!(
        "chaos: webhook refused {} posts while down; {extra} repeats past the first (deduplicated by messageId)",
        hook.posts().iter().filter(|p| p.status == 503).count()
    );

    // Histories and traits against the reference model.
    let cfg = tributary_core::config::load(&config).unwrap_or_else(|e| panic!("chaos workspace: {e:?}"));
    let reference = stitching::reference_of(&cfg, &events);
    let options = ExtractOptions { default_country_code: None, include_hashed: true };
    // Each event's expected profile: the reference profile of its first identifier.
    let mut expected: BTreeMap<BTreeSet<Identifier>, BTreeSet<String>> = BTreeMap::new();
    for e in &events {
        let ids = extract(&e.event, &options).ids;
        let profile = ids.iter().find_map(|id| reference.profile_of(id)).expect("every generated event has an id");
        let message = e.event["messageId"].as_str().unwrap_or_default();
        expected.entry(profile.ids).or_default().insert(format!("{}/{message}", e.source));
    }
    let base_url = server.base_url().to_string();
    let mut received: HashMap<String, i64> = HashMap::new();
    let mut lookups = Vec::new();
    for profile in reference.profiles() {
        let Some(lookup) = lookup_of(&profile.ids) else { continue };
        let got = history(&http, &base_url, &lookup).await.unwrap_or_else(|| panic!("{lookup}: no profile"));
        let unique: BTreeSet<String> = got.iter().map(|(m, _)| m.clone()).collect();
        assert_eq!(unique.len(), got.len(), "{lookup}: an event is in the history twice");
        let want = expected.get(&profile.ids).cloned().unwrap_or_default();
        assert_eq!(unique, want, "{lookup}: the history is the profile's accepted events");
        received.extend(got);
        lookups.push((lookup, profile.ids));
    }

    // Traits: two identifies with the same `timestamp` are ordered by when the server received them, so the
    // reference is given the server's `receivedAt` of each event.
    let as_received: Vec<people::GenEvent> = events
        .iter()
        .map(|e| {
            let mut e = e.clone();
            let key = format!("{}/{}", e.source, e.event["messageId"].as_str().unwrap_or_default());
            if let Some(ms) = received.get(&key) {
                let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(*ms) * 1_000_000).expect("a time");
                let text = at.format(&time::format_description::well_known::Rfc3339).expect("RFC 3339");
                e.event.insert("receivedAt".into(), Value::String(text));
            }
            e
        })
        .collect();
    let reference = stitching::reference_of(&cfg, &as_received);
    let mut checked = 0;
    for (lookup, ids) in &lookups {
        let profile = ids.iter().find_map(|id| reference.profile_of(id)).expect("the same partition");
        let url = format!("{base_url}/v1/profiles/{lookup}");
        let (status, doc) = get_json(&http, &url).await;
        assert_eq!(status, 200, "GET {url}: {doc}");
        let traits: BTreeMap<String, Value> =
            doc["traits"].as_object().into_iter().flatten().map(|(k, v)| (k.clone(), v["value"].clone())).collect();
        let want: BTreeMap<String, Value> = profile.traits.iter().map(|(k, (v, _))| (k.clone(), v.clone())).collect();
        assert_eq!(traits, want, "{lookup}: traits");
        checked += 1;
    }
    assert!(checked * 10 >= reference.profiles().len() * 9, "most profiles have a user or anonymous id to look up");
    eprintln!("chaos: {checked} profiles checked; done in {:.0} s", started.elapsed().as_secs_f64());
}
