//! What the worker sends over HTTP: status callbacks (OpenDSR §8.5), a signed POST to each of the request's
//! `status_callback_urls`, and erasures forwarded to webhook destinations. Both go through the same SSRF guard as
//! every destination (no redirects, no proxy, private addresses only when allow-listed).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use tributary_core::delivery::{DestinationConfig, DestinationKind};
use tributary_deliver::http::HttpSender;
use tributary_deliver::ssrf::{guarded_client_builder, is_refusal, Guard};
use tributary_deliver::types::{Outbound, SendResult};

/// Why a forwarded deletion did not arrive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardError {
    /// The destination kind has no deletion call.
    NotSupported,
    /// Worth trying again (5xx, 429, timeouts).
    Retry(String),
    /// Refused for good (other 4xx, an address the guard refuses).
    Rejected(String),
}

/// The worker's HTTP port.
pub trait Http: Send + Sync {
    /// Sends one callback; `Ok(status)` when the controller answered, `Err(code)` when it could not be reached or
    /// the URL was refused. Codes are stable and never hold the URL.
    fn post_callback(
        &self,
        url: &str,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    ) -> impl Future<Output = Result<u16, String>> + Send;

    /// Sends a deletion event to a destination, the way deliveries reach it (same auth, signing and guard).
    fn forward_deletion(
        &self,
        dest: &DestinationConfig,
        message_id: &str,
        event: Map<String, Value>,
    ) -> impl Future<Output = Result<(), ForwardError>> + Send;
}

/// The real [`Http`]: reqwest behind the guarded resolver, and the deliver function's own sender for webhooks.
#[derive(Debug, Clone)]
pub struct HttpClient {
    client: reqwest::Client,
    guard: Arc<Guard>,
    destinations: HttpSender,
}

impl HttpClient {
    /// `allow_private_hosts`: the workspace's `delivery.allow_private_hosts`.
    pub fn new(allow_private_hosts: &[String]) -> Result<HttpClient, String> {
        let guard = Arc::new(Guard::new(allow_private_hosts));
        let client = guarded_client_builder(&guard)
            .timeout(Duration::from_secs(15))
            .user_agent(concat!("tributary-dsr/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|_| "http_client_build_failed".to_string())?;
        Ok(HttpClient { client, guard, destinations: HttpSender::new(allow_private_hosts)? })
    }
}

impl Http for HttpClient {
    async fn post_callback(
        &self,
        url: &str,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    ) -> Result<u16, String> {
        let parsed = reqwest::Url::parse(url).map_err(|_| "invalid_url".to_string())?;
        self.guard.check_url(&parsed)?;
        let mut req = self.client.post(parsed).header("content-type", "application/json").body(body);
        for (name, value) in headers {
            req = req.header(name, value);
        }
        match req.send().await {
            Ok(resp) => Ok(resp.status().as_u16()),
            Err(e) if e.is_timeout() => Err("timeout".into()),
            Err(e) if is_refusal(&e) => Err("ssrf_refused".into()),
            Err(_) => Err("connect_failed".into()),
        }
    }

    async fn forward_deletion(
        &self,
        dest: &DestinationConfig,
        message_id: &str,
        event: Map<String, Value>,
    ) -> Result<(), ForwardError> {
        if dest.kind != DestinationKind::Webhook {
            return Err(ForwardError::NotSupported);
        }
        let outbound = Outbound {
            message_id: message_id.to_string(),
            source_id: "dsr".into(),
            event: Arc::new(tributary_deliver::event::Event::from_map(event)),
            user_data: None,
            profile: None,
        };
        match self.destinations.send(dest, &[outbound]).await {
            SendResult::Delivered => Ok(()),
            SendResult::Retry { reason, .. } => Err(ForwardError::Retry(reason)),
            SendResult::Rejected { reason } => Err(ForwardError::Rejected(reason)),
        }
    }
}
