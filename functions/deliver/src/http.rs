//! The HTTP sender: webhooks, Meta Conversions API and Google Ads, over one shared client.
//!
//! Reasons are stable codes (`http_<status>`, `timeout`, `connect`, `ssrf_refused`, …) and never hold a URL, a
//! token or a response body: they end up in receipts, metrics and the DLQ.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Response, Url};
use serde_json::Value;
use tributary_core::delivery::{DestinationConfig, DestinationKind};

use crate::payload;
use crate::ssrf::{self, Guard};
use crate::types::{Outbound, SendResult};

/// Most of a response body read: enough for an error object, bounded against hostile endpoints.
const BODY_LIMIT: usize = 64 * 1024;
/// Longest `Retry-After` honoured (SQS's longest visibility timeout).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(12 * 3600);
const META_BASE: &str = "https://graph.facebook.com/v21.0";
const GOOGLE_BASE: &str = "https://googleads.googleapis.com/v17";
/// Meta's rate-limit error codes (answered with HTTP 400).
const META_THROTTLE_CODES: [i64; 5] = [4, 17, 32, 613, 80004];

/// Sends batches to HTTP destinations. Build once and share: it holds the connection pool.
#[derive(Debug, Clone)]
pub struct HttpSender {
    client: reqwest::Client,
    guard: Arc<Guard>,
}

/// A request ready to go: where, what and which headers.
struct Prepared {
    url: Url,
    body: Vec<u8>,
    headers: HeaderMap,
}

impl HttpSender {
    /// `allow_private_hosts`: `delivery.allow_private_hosts` (names or IP literals the SSRF guard lets through).
    pub fn new(allow_private_hosts: &[String]) -> Result<HttpSender, String> {
        let guard = Arc::new(Guard::new(allow_private_hosts));
        let client = ssrf::guarded_client_builder(&guard)
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(64)
            .user_agent(concat!("tributary-deliver/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|_| "http_client_build_failed".to_string())?;
        Ok(HttpSender { client, guard })
    }

    /// Sends one batch to `dest` (webhook, meta_capi or google_ads).
    pub async fn send(&self, dest: &DestinationConfig, batch: &[Outbound]) -> SendResult {
        let prepared = match dest.kind {
            DestinationKind::Webhook => webhook_request(dest, batch),
            DestinationKind::MetaCapi => meta_request(dest, batch),
            DestinationKind::GoogleAds => google_request(dest, batch),
            DestinationKind::S3Export => Err("unsupported_kind".to_string()),
        };
        let prepared = match prepared.and_then(|p| self.guard.check_url(&p.url).map(|()| p)) {
            Ok(p) => p,
            Err(reason) => return SendResult::Rejected { reason },
        };
        let sent = self
            .client
            .post(prepared.url)
            .headers(prepared.headers)
            .body(prepared.body)
            .timeout(dest.transport.timeout())
            .send()
            .await;
        let result = match sent {
            Ok(response) => classify(dest.kind, response).await,
            Err(err) => classify_error(&err),
        };
        if let Some(reason) = result.reason() {
            tracing::debug!(destination = %dest.id, kind = %dest.kind, reason, events = batch.len(), "send failed");
        }
        result
    }
}

fn webhook_request(dest: &DestinationConfig, batch: &[Outbound]) -> Result<Prepared, String> {
    let url = dest.transport.url.as_deref().filter(|u| !u.trim().is_empty()).ok_or("missing_url")?;
    let url = Url::parse(url.trim()).map_err(|_| "invalid_url")?;
    let body = payload::webhook_body(batch);
    let mut headers = json_headers();
    headers.insert("idempotency-key", header(&payload::idempotency_key(batch))?);
    headers.insert("x-tributary-destination", header(&dest.id)?);
    // The source, when the whole request comes from one (always for single-event bodies).
    if let Some(first) = batch.first().filter(|f| batch.iter().all(|o| o.source_id == f.source_id)) {
        headers.insert("x-tributary-source", header(&first.source_id)?);
    }
    if let Some(secret) = dest.transport.secret.as_deref().filter(|s| !s.is_empty()) {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let ts = i64::try_from(now).unwrap_or(i64::MAX);
        headers.insert("x-tributary-signature", header(&payload::signature(secret, ts, &body))?);
    }
    Ok(Prepared { url, body, headers })
}

fn meta_request(dest: &DestinationConfig, batch: &[Outbound]) -> Result<Prepared, String> {
    let t = &dest.transport;
    let account = account(t.account.as_deref(), false)?;
    let token = t.secret.as_deref().filter(|s| !s.is_empty()).ok_or("missing_secret")?;
    let mut url = api_url(t.url.as_deref(), META_BASE, &[&account, "events"])?;
    // Meta takes the token in the query string; the URL is never logged nor put in a reason.
    url.query_pairs_mut().append_pair("access_token", token);
    let body = payload::meta_body(batch, t.test_event_code.as_deref());
    Ok(Prepared { url, body: to_vec(&body), headers: json_headers() })
}

fn google_request(dest: &DestinationConfig, batch: &[Outbound]) -> Result<Prepared, String> {
    let t = &dest.transport;
    let account = account(t.account.as_deref(), true)?;
    let token = t.secret.as_deref().filter(|s| !s.is_empty()).ok_or("missing_secret")?;
    let developer = t.developer_token.as_deref().filter(|s| !s.is_empty()).ok_or("missing_developer_token")?;
    let action = t.conversion_action.as_deref().filter(|s| !s.is_empty()).ok_or("missing_conversion_action")?;
    let url = api_url(t.url.as_deref(), GOOGLE_BASE, &["customers", &format!("{account}:uploadClickConversions")])?;
    let mut headers = json_headers();
    headers.insert(AUTHORIZATION, sensitive(&format!("Bearer {token}"))?);
    headers.insert(HeaderName::from_static("developer-token"), sensitive(developer)?);
    Ok(Prepared { url, body: to_vec(&payload::google_body(batch, action)), headers })
}

/// The account id as a path segment: Meta's pixel id or Google's customer id (dashes dropped, as the Google Ads
/// UI shows them).
fn account(account: Option<&str>, strip_dashes: bool) -> Result<String, String> {
    let raw = account.map(str::trim).filter(|a| !a.is_empty()).ok_or("missing_account")?;
    let id: String = raw.chars().filter(|c| !(strip_dashes && *c == '-')).collect();
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        return Err("invalid_account".into());
    }
    Ok(id)
}

fn api_url(base: Option<&str>, default: &str, segments: &[&str]) -> Result<Url, String> {
    let base = base.map(str::trim).filter(|b| !b.is_empty()).unwrap_or(default);
    let mut url = Url::parse(base).map_err(|_| "invalid_url")?;
    url.path_segments_mut().map_err(|()| "invalid_url")?.pop_if_empty().extend(segments);
    Ok(url)
}

fn json_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h
}

fn header(value: &str) -> Result<HeaderValue, String> {
    HeaderValue::from_str(value).map_err(|_| "invalid_header".to_string())
}

/// A header value kept out of `Debug` output.
fn sensitive(value: &str) -> Result<HeaderValue, String> {
    let mut v = header(value)?;
    v.set_sensitive(true);
    Ok(v)
}

fn to_vec(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec())
}

async fn classify(kind: DestinationKind, mut response: Response) -> SendResult {
    let status = response.status();
    let code = status.as_u16();
    if status.is_success() {
        read_limited(&mut response).await;
        return SendResult::Delivered;
    }
    let after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()));
    if matches!(code, 408 | 425 | 429) || status.is_server_error() {
        read_limited(&mut response).await;
        return SendResult::Retry { reason: format!("http_{code}"), after };
    }
    if kind == DestinationKind::MetaCapi && code == 400 {
        if let Some(reason) = read_limited(&mut response).await.and_then(|body| meta_transient(&body)) {
            return SendResult::Retry { reason: reason.into(), after };
        }
        return SendResult::Rejected { reason: "http_400".into() };
    }
    // 3xx lands here too: redirects are not followed (the target was never checked by the guard).
    read_limited(&mut response).await;
    SendResult::Rejected { reason: format!("http_{code}") }
}

/// Meta's 400 that is worth retrying: a rate-limit code, or an error Meta marks transient.
fn meta_transient(body: &[u8]) -> Option<&'static str> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let error = v.get("error")?;
    if error.get("code").and_then(Value::as_i64).is_some_and(|c| META_THROTTLE_CODES.contains(&c)) {
        return Some("meta_throttled");
    }
    (error.get("is_transient").and_then(Value::as_bool) == Some(true)).then_some("meta_transient")
}

/// Reads at most [`BODY_LIMIT`] bytes of the body (so small bodies leave the connection reusable). `None` when
/// the body is longer or could not be read.
async fn read_limited(response: &mut Response) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) if body.len() + chunk.len() <= BODY_LIMIT => body.extend_from_slice(&chunk),
            Ok(Some(_)) | Err(_) => return None,
            Ok(None) => return Some(body),
        }
    }
}

fn classify_error(err: &reqwest::Error) -> SendResult {
    let retry = |reason: &str| SendResult::Retry { reason: reason.into(), after: None };
    if ssrf::is_refusal(err) {
        SendResult::Rejected { reason: "ssrf_refused".into() }
    } else if err.is_timeout() {
        retry("timeout")
    } else if err.is_connect() {
        retry("connect")
    } else if err.is_builder() {
        SendResult::Rejected { reason: "invalid_request".into() }
    } else if err.is_redirect() {
        SendResult::Rejected { reason: "http_3xx_redirect".into() }
    } else {
        // Reset mid-request, a broken response and the like.
        retry("network")
    }
}

/// A `Retry-After` value (delay in seconds or an HTTP-date) as a delay from `now`, at most 12 hours. `None` for
/// anything else; a date in the past is a zero delay.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let delay = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Too many digits to fit is still "a long time".
        Duration::from_secs(value.parse::<u64>().unwrap_or(u64::MAX))
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Mutex;

    use axum::extract::{Request, State};
    use hmac::{Hmac, Mac};
    use serde_json::json;
    use sha2::Sha256;
    use tributary_core::delivery::Transport;

    use super::*;

    /// What the test server saw of one request.
    #[derive(Debug, Clone)]
    struct Seen {
        path: String,
        headers: axum::http::HeaderMap,
        body: Vec<u8>,
    }

    #[derive(Clone)]
    struct Reply {
        status: u16,
        headers: Vec<(&'static str, &'static str)>,
        body: &'static str,
        delay: Duration,
    }

    fn reply(status: u16) -> Reply {
        Reply { status, headers: vec![], body: "", delay: Duration::ZERO }
    }

    struct Server {
        reply: Reply,
        seen: Mutex<Vec<Seen>>,
    }

    async fn handle(State(server): State<Arc<Server>>, request: Request) -> axum::response::Response {
        let (parts, body) = request.into_parts();
        let body = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
        let path = parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default();
        server.seen.lock().unwrap().push(Seen { path, headers: parts.headers, body: body.to_vec() });
        tokio::time::sleep(server.reply.delay).await;
        let mut response = axum::response::Response::new(axum::body::Body::from(server.reply.body));
        *response.status_mut() = axum::http::StatusCode::from_u16(server.reply.status).unwrap();
        for (k, v) in &server.reply.headers {
            response.headers_mut().insert(*k, axum::http::HeaderValue::from_static(v));
        }
        response
    }

    async fn serve(reply: Reply) -> (SocketAddr, Arc<Server>) {
        let server = Arc::new(Server { reply, seen: Mutex::new(Vec::new()) });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().fallback(handle).with_state(Arc::clone(&server));
        tokio::spawn(async move { axum::serve(listener, app).await });
        (addr, server)
    }

    fn seen(server: &Server) -> Vec<Seen> {
        server.seen.lock().unwrap().clone()
    }

    fn dest(kind: DestinationKind, transport: Transport) -> DestinationConfig {
        DestinationConfig {
            id: "dest-1".into(),
            kind,
            purposes: vec!["advertising".into()],
            essential: false,
            event_types: None,
            event_names: None,
            sources: None,
            allowed_classes: None,
            drop_fields: vec![],
            hashing: None,
            transport,
        }
    }

    fn hook(url: String) -> DestinationConfig {
        dest(DestinationKind::Webhook, Transport { url: Some(url), ..Default::default() })
    }

    fn meta(base: String) -> DestinationConfig {
        let t = Transport {
            url: Some(base),
            account: Some("123".into()),
            secret: Some("meta-tok".into()),
            ..Default::default()
        };
        dest(DestinationKind::MetaCapi, t)
    }

    fn event(id: &str) -> Outbound {
        let Value::Object(event) = json!({
            "type": "track", "event": "Order Completed", "messageId": id,
            "timestamp": "2025-01-02T03:04:05Z", "properties": { "revenue": 10, "currency": "EUR" }
        }) else {
            unreachable!()
        };
        Outbound {
            message_id: id.into(),
            source_id: "web".into(),
            event: std::sync::Arc::new(event.into()),
            user_data: None,
            profile: None,
        }
    }

    fn local() -> HttpSender {
        HttpSender::new(&["127.0.0.1".into()]).unwrap()
    }

    #[tokio::test]
    async fn webhook_200_is_delivered_with_headers_and_a_verifiable_signature() {
        let (addr, server) = serve(reply(200)).await;
        let mut d = hook(format!("http://{addr}/in"));
        d.transport.secret = Some("whsec".into());
        let batch = [event("m-1")];
        assert_eq!(local().send(&d, &batch).await, SendResult::Delivered);
        let seen = seen(&server);
        assert_eq!(seen.len(), 1);
        let req = &seen[0];
        assert_eq!(req.path, "/in");
        assert_eq!(req.body, payload::webhook_body(&batch));
        let h = |name: &str| req.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        assert_eq!(h("content-type"), "application/json");
        assert_eq!(h("idempotency-key"), "m-1");
        assert_eq!(h("x-tributary-destination"), "dest-1");
        assert!(h("user-agent").starts_with("tributary-deliver/"));
        // Verify as a receiver would: t=<ts>,v1=<hex> over "<ts>." + body.
        let sig = h("x-tributary-signature");
        let (t, v1) = sig.split_once(",v1=").unwrap();
        let ts = t.strip_prefix("t=").unwrap();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        assert!(now.abs_diff(ts.parse::<u64>().unwrap()) < 60);
        let mut mac = Hmac::<Sha256>::new_from_slice(b"whsec").unwrap();
        mac.update(format!("{ts}.").as_bytes());
        mac.update(&req.body);
        mac.verify_slice(&hex::decode(v1).unwrap()).unwrap();
        // No secret, no signature; a batch gets the batch key.
        let batch = [event("m-1"), event("m-2")];
        d.transport.secret = None;
        assert_eq!(local().send(&d, &batch).await, SendResult::Delivered);
        let req = &seen_last(&server);
        assert!(req.headers.get("x-tributary-signature").is_none());
        assert_eq!(req.headers.get("idempotency-key").unwrap(), payload::idempotency_key(&batch).as_str());
    }

    fn seen_last(server: &Server) -> Seen {
        seen(server).pop().unwrap()
    }

    #[tokio::test]
    async fn statuses_are_classified() {
        let cases = [
            (reply(503), SendResult::Retry { reason: "http_503".into(), after: None }),
            (reply(500), SendResult::Retry { reason: "http_500".into(), after: None }),
            (reply(408), SendResult::Retry { reason: "http_408".into(), after: None }),
            (reply(425), SendResult::Retry { reason: "http_425".into(), after: None }),
            (
                Reply { headers: vec![("retry-after", "7")], ..reply(429) },
                SendResult::Retry { reason: "http_429".into(), after: Some(Duration::from_secs(7)) },
            ),
            (
                Reply { headers: vec![("retry-after", "soon")], ..reply(503) },
                SendResult::Retry { reason: "http_503".into(), after: None },
            ),
            (reply(204), SendResult::Delivered),
            (
                Reply { body: "bad thing: secret-echo", ..reply(400) },
                SendResult::Rejected { reason: "http_400".into() },
            ),
            (reply(401), SendResult::Rejected { reason: "http_401".into() }),
            (reply(404), SendResult::Rejected { reason: "http_404".into() }),
        ];
        for (r, expected) in cases {
            let status = r.status;
            let (addr, server) = serve(r).await;
            assert_eq!(local().send(&hook(format!("http://{addr}/")), &[event("m")]).await, expected, "{status}");
            assert_eq!(seen(&server).len(), 1);
        }
    }

    #[tokio::test]
    async fn redirects_are_refused_not_followed() {
        let (addr, server) = serve(Reply { headers: vec![("location", "/elsewhere")], ..reply(302) }).await;
        let r = local().send(&hook(format!("http://{addr}/in")), &[event("m")]).await;
        assert_eq!(r, SendResult::Rejected { reason: "http_302".into() });
        let seen = seen(&server);
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].path, "/in");
    }

    #[tokio::test]
    async fn an_unreachable_port_is_a_connect_retry() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let r = local().send(&hook(format!("http://{addr}/")), &[event("m")]).await;
        assert_eq!(r, SendResult::Retry { reason: "connect".into(), after: None });
    }

    #[tokio::test]
    async fn a_slow_server_is_a_timeout_retry() {
        let (addr, _server) = serve(Reply { delay: Duration::from_secs(5), ..reply(200) }).await;
        let mut d = hook(format!("http://{addr}/"));
        d.transport.timeout_ms = Some(200);
        let started = std::time::Instant::now();
        let r = local().send(&d, &[event("m")]).await;
        assert_eq!(r, SendResult::Retry { reason: "timeout".into(), after: None });
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn the_guard_refuses_internal_hosts_before_any_request() {
        let (addr, server) = serve(reply(200)).await;
        let port = addr.port();
        let closed = HttpSender::new(&[]).unwrap();
        let rejected = |reason: &str| SendResult::Rejected { reason: reason.into() };
        // An IP literal: refused by check_url.
        for url in [format!("http://127.0.0.1:{port}/"), format!("https://127.0.0.1:{port}/")] {
            assert_eq!(closed.send(&hook(url), &[event("m")]).await, rejected("ssrf_refused"));
        }
        // A name resolving to loopback: refused by the resolver (https, since plain http is refused earlier).
        let r = closed.send(&hook(format!("https://localhost:{port}/")), &[event("m")]).await;
        assert_eq!(r, rejected("ssrf_refused"));
        let r = closed.send(&hook(format!("http://localhost:{port}/")), &[event("m")]).await;
        assert_eq!(r, rejected("insecure_scheme"));
        let r = closed.send(&hook(format!("http://user:pw@example.com:{port}/")), &[event("m")]).await;
        assert_eq!(r, rejected("credentials_in_url"));
        let r = closed.send(&hook("not a url".into()), &[event("m")]).await;
        assert_eq!(r, rejected("invalid_url"));
        assert!(seen(&server).is_empty(), "the server must not have been reached");
        // Allow-listed by name: goes through the resolver and arrives.
        let open = HttpSender::new(&["LOCALHOST".into()]).unwrap();
        let r = open.send(&hook(format!("http://localhost:{port}/")), &[event("m")]).await;
        assert_eq!(r, SendResult::Delivered);
        assert_eq!(seen(&server).len(), 1);
    }

    #[tokio::test]
    async fn meta_sends_the_token_in_the_query_and_reads_throttling() {
        let (addr, server) = serve(reply(200)).await;
        let mut d = meta(format!("http://{addr}/v21.0/"));
        d.transport.test_event_code = Some("TEST1".into());
        let batch = [event("m-1"), event("m-2")];
        assert_eq!(local().send(&d, &batch).await, SendResult::Delivered);
        let req = seen_last(&server);
        assert_eq!(req.path, "/v21.0/123/events?access_token=meta-tok");
        let body: Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(body, payload::meta_body(&batch, Some("TEST1")));
        assert_eq!(body["data"].as_array().map(Vec::len), Some(2));

        let throttled = r#"{"error":{"message":"limit","code":17,"is_transient":true,"fbtrace_id":"x"}}"#;
        let transient = r#"{"error":{"message":"later","code":2,"is_transient":true}}"#;
        let invalid = r#"{"error":{"message":"Invalid parameter meta-tok","code":100,"is_transient":false}}"#;
        let cases = [
            (throttled, SendResult::Retry { reason: "meta_throttled".into(), after: None }),
            (transient, SendResult::Retry { reason: "meta_transient".into(), after: None }),
            (invalid, SendResult::Rejected { reason: "http_400".into() }),
            ("not json", SendResult::Rejected { reason: "http_400".into() }),
        ];
        for (body, expected) in cases {
            let (addr, _server) = serve(Reply { body, ..reply(400) }).await;
            assert_eq!(local().send(&meta(format!("http://{addr}")), &batch).await, expected, "{body}");
        }
        // Code 17 on a webhook is just a 400.
        let (addr, _server) = serve(Reply { body: throttled, ..reply(400) }).await;
        let r = local().send(&hook(format!("http://{addr}")), &batch).await;
        assert_eq!(r, SendResult::Rejected { reason: "http_400".into() });
    }

    #[tokio::test]
    async fn google_sends_bearer_and_developer_token() {
        let (addr, server) = serve(reply(200)).await;
        let t = Transport {
            url: Some(format!("http://{addr}/v17")),
            account: Some("123-456-7890".into()),
            secret: Some("oauth-tok".into()),
            developer_token: Some("dev-tok".into()),
            conversion_action: Some("customers/1234567890/conversionActions/9".into()),
            ..Default::default()
        };
        let d = dest(DestinationKind::GoogleAds, t);
        let mut e = event("m-1");
        e.user_data = Some(json!([{ "hashed_email": "ab" }]));
        assert_eq!(local().send(&d, std::slice::from_ref(&e)).await, SendResult::Delivered);
        let req = seen_last(&server);
        assert_eq!(req.path, "/v17/customers/1234567890:uploadClickConversions");
        assert_eq!(req.headers.get("authorization").unwrap(), "Bearer oauth-tok");
        assert_eq!(req.headers.get("developer-token").unwrap(), "dev-tok");
        let body: Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(body, payload::google_body(&[e], "customers/1234567890/conversionActions/9"));
    }

    #[tokio::test]
    async fn bad_configs_and_other_kinds_are_rejected_without_values() {
        let s = local();
        let e = [event("m")];
        let rejected = |reason: &str| SendResult::Rejected { reason: reason.into() };
        let export = dest(DestinationKind::S3Export, Transport::minimal(DestinationKind::S3Export));
        assert_eq!(s.send(&export, &e).await, rejected("unsupported_kind"));
        assert_eq!(s.send(&dest(DestinationKind::Webhook, Transport::default()), &e).await, rejected("missing_url"));
        let mut m = meta("https://graph.example".into());
        m.transport.account = Some("12/../../x".into());
        assert_eq!(s.send(&m, &e).await, rejected("invalid_account"));
        let mut m = meta("ftp://graph.example".into());
        assert_eq!(s.send(&m, &e).await, rejected("unsupported_scheme"));
        m.transport.secret = Some("tok\nen".into());
        m.transport.url = None;
        m.kind = DestinationKind::GoogleAds;
        m.transport.developer_token = Some("d".into());
        m.transport.conversion_action = Some("c".into());
        assert_eq!(s.send(&m, &e).await, rejected("invalid_header"));
        // A Meta connection failure names neither the URL nor the token.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let r = s.send(&meta(format!("http://{addr}")), &e).await;
        assert_eq!(r, SendResult::Retry { reason: "connect".into(), after: None });
    }

    #[test]
    fn retry_after_accepts_seconds_and_dates_and_ignores_garbage() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let in_90s = httpdate::fmt_http_date(now + Duration::from_secs(90));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(90));
        let far = httpdate::fmt_http_date(now + Duration::from_secs(30 * 24 * 3600));
        let cases: [(&str, Option<u64>); 10] = [
            ("7", Some(7)),
            (" 0 ", Some(0)),
            ("120", Some(120)),
            ("999999999999999999999999", Some(12 * 3600)),
            (&in_90s, Some(90)),
            (&past, Some(0)),
            (&far, Some(12 * 3600)),
            ("-5", None),
            ("1.5", None),
            ("soon", None),
        ];
        for (value, expected) in cases {
            assert_eq!(parse_retry_after(value, now), expected.map(Duration::from_secs), "{value}");
        }
        assert_eq!(parse_retry_after("", now), None);
        assert_eq!(parse_retry_after("Wed, 99 Oct 2015 07:28:00 GMT", now), None);
    }

    #[test]
    fn meta_transient_reads_codes_and_flags() {
        assert_eq!(meta_transient(br#"{"error":{"code":4}}"#), Some("meta_throttled"));
        assert_eq!(meta_transient(br#"{"error":{"code":80004,"is_transient":false}}"#), Some("meta_throttled"));
        assert_eq!(meta_transient(br#"{"error":{"code":1,"is_transient":true}}"#), Some("meta_transient"));
        assert_eq!(meta_transient(br#"{"error":{"code":190}}"#), None);
        assert_eq!(meta_transient(br#"{"error":"x"}"#), None);
        assert_eq!(meta_transient(b"[]"), None);
    }
}
