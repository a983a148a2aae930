//! Shared pieces of the end-to-end tests that reach outside the platform: a webhook receiver that records every
//! POST (destinations, DSR callbacks), the two people of the erasure tests and the forms in which a store could hold Ann's identifiers,
//! opening an export archive, and reading every version of every object of a bucket.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::Router;
use serde_json::Value;
use tributary_aws::S3Store;
use tributary_core::ports::ObjectStore;

pub const ANN_EMAIL: &str = "ann.erasable@example.com";
pub const ANN_USER: &str = "user-ann-4711";
pub const ANN_PHONE: &str = "anon-ann-phone-7f3a";
pub const ANN_LAPTOP: &str = "anon-ann-laptop-c21e";
pub const BOB_EMAIL: &str = "bob.keeper@example.com";
pub const BOB_USER: &str = "user-bob-0815";
pub const BOB_ANON: &str = "anon-bob-9d9d";

/// Ann's identifiers in every form a store could hold them: as sent and normalized (lowercase), and the SHA-256
/// hex of each.
pub fn ann_traces() -> Vec<String> {
    let mut out = Vec::new();
    for v in [ANN_EMAIL, ANN_USER, ANN_PHONE, ANN_LAPTOP] {
        out.push(v.to_lowercase());
        out.push(tributary_core::sha256_hex(v.as_bytes()));
    }
    out
}

/// A completed request's receipts, from its OpenDSR status: store → (action, count).
pub fn receipts(status: &Value, processor_domain: &str) -> BTreeMap<String, (String, u64)> {
    status["extensions"][processor_domain]["receipts"]
        .as_array()
        .expect("the status lists receipts")
        .iter()
        .map(|r| {
            let text = |f: &str| r[f].as_str().unwrap_or("").to_string();
            (text("store"), (text("action"), r["count"].as_u64().unwrap_or(0)))
        })
        .collect()
}

/// Asserts each (store, action, at least this count) is among `receipts`.
pub fn assert_receipts(receipts: &BTreeMap<String, (String, u64)>, expected: &[(&str, &str, u64)]) {
    for (store, action, at_least) in expected {
        let got = receipts.get(*store).unwrap_or_else(|| panic!("no receipt for {store}: {receipts:?}"));
        assert_eq!(got.0, *action, "{store}: {receipts:?}");
        assert!(got.1 >= *at_least, "{store}: {receipts:?}");
    }
}

/// One POST the receiver got, and the status it answered.
#[derive(Debug, Clone)]
pub struct Posted {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub status: u16,
}

impl Posted {
    /// The body as JSON (`Null` when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// A webhook endpoint on loopback: every POST, to any path, is recorded and answered 200.
pub struct Receiver {
    url: String,
    log: Arc<Mutex<Vec<Posted>>>,
}

/// Decides the status of each POST (the receiver's switch: a destination that is down, or that refuses one event).
type Answer = Arc<dyn Fn(&Posted) -> StatusCode + Send + Sync>;

impl Receiver {
    /// A receiver that answers every POST 200.
    pub async fn start() -> Receiver {
        Receiver::answering(|_| StatusCode::OK).await
    }

    /// A receiver that answers each POST what `answer` says (it sees the path, headers and body); every POST is
    /// logged with its answer.
    pub async fn answering(answer: impl Fn(&Posted) -> StatusCode + Send + Sync + 'static) -> Receiver {
        type Shared = (Arc<Mutex<Vec<Posted>>>, Answer);
        async fn record(State((log, answer)): State<Shared>, uri: Uri, headers: HeaderMap, body: Bytes) -> StatusCode {
            let mut posted = Posted { path: uri.path().to_string(), headers, body, status: 0 };
            let status = answer(&posted);
            posted.status = status.as_u16();
            log.lock().expect("receiver log").push(posted);
            status
        }
        let log: Arc<Mutex<Vec<Posted>>> = Arc::default();
        let answer: Answer = Arc::new(answer);
        let app = Router::new().fallback(axum::routing::post(record)).with_state((log.clone(), answer));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the receiver");
        let url = format!("http://127.0.0.1:{}", listener.local_addr().expect("receiver address").port());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { url, log }
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Everything received so far, in order.
    pub fn posts(&self) -> Vec<Posted> {
        self.log.lock().expect("receiver log").clone()
    }

    /// Forgets what was received so far.
    pub fn clear(&self) {
        self.log.lock().expect("receiver log").clear();
    }

    /// What was posted to `path`.
    pub fn to(&self, path: &str) -> Vec<Posted> {
        self.posts().into_iter().filter(|p| p.path == path).collect()
    }
}

/// The files of a `.tar.gz` export, by name.
pub fn untar(bytes: &[u8]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    for entry in archive.entries().expect("archive entries") {
        let mut entry = entry.expect("archive entry");
        let name = entry.path().expect("entry path").to_string_lossy().into_owned();
        let mut text = String::new();
        entry.read_to_string(&mut text).expect("UTF-8 entry");
        out.insert(name, text);
    }
    out
}

/// Every version of every object in `store`, earlier ones included (`ListObjectVersions`, then `GetObject` by
/// version id; delete markers hold no bytes), one lowercase line each: `<label>/<key> (current|earlier <version
/// id>): <text>`, gzip opened (so export archives read as tar text) and newlines as spaces. A versioned bucket
/// keeps what a delete or a rewrite replaced, so a scan of current objects alone would miss it.
pub async fn every_object_version(store: &S3Store, label: &str) -> Vec<String> {
    let mut out = Vec::new();
    for v in store.all_versions("").await.expect("list the bucket's versions") {
        if v.delete_marker {
            continue;
        }
        let bytes = store
            .get_version(&v.key, &v.version_id)
            .await
            .expect("get an object version")
            .unwrap_or_else(|| panic!("{label}/{}: listed version {} cannot be read", v.key, v.version_id));
        let text = if bytes.starts_with(&[0x1f, 0x8b]) {
            let mut plain = Vec::new();
            flate2::read::GzDecoder::new(bytes.as_slice()).read_to_end(&mut plain).expect("gunzip");
            String::from_utf8_lossy(&plain).into_owned()
        } else {
            String::from_utf8_lossy(&bytes).into_owned()
        };
        let which = if v.latest { "current".to_string() } else { format!("earlier {}", v.version_id) };
        out.push(format!("{label}/{} ({which}): {}", v.key, text.to_lowercase().replace('\n', " ")));
    }
    out
}
