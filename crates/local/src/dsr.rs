//! What `tributary serve` adds around the DSR functions: the signing key kept in the data dir, result links signed
//! with a local secret (standing in for S3 presigned URLs), the route that serves them, and a webhook sink that
//! honours forwarded deletions.

use std::path::Path;

use anyhow::Context as _;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use tributary_core::dsr::ResultLinks;
use tributary_core::ports::{Condition, PortError, TableStore, WriteOp};

/// The signing key and certificate of the local processor: made once (self-signed for `domain`), then kept.
pub fn signing_pem(data_dir: &Path, domain: &str) -> anyhow::Result<String> {
    let path = data_dir.join("dsr-signing.pem");
    if let Ok(text) = std::fs::read_to_string(&path) {
        return Ok(text);
    }
    let pem = tributary_dsr_api::generate_self_signed(domain).map_err(anyhow::Error::msg)?;
    write_private(&path, pem.as_bytes())?;
    Ok(pem)
}

/// The secret local result links are signed with, kept next to the key.
pub fn links_secret(data_dir: &Path) -> anyhow::Result<Vec<u8>> {
    let path = data_dir.join("results-links.key");
    if let Ok(bytes) = std::fs::read(&path) {
        if bytes.len() >= 32 {
            return Ok(bytes);
        }
    }
    let secret: Vec<u8> = (0..4).flat_map(|_| *uuid::Uuid::new_v4().as_bytes()).collect();
    write_private(&path, &secret)?;
    Ok(secret)
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("restricting {}", path.display()))?;
    }
    Ok(())
}

/// Links to `GET /_local/results/<key>?expires=<ms>&sig=<hex>`, valid until `expires`: an HMAC over the key and
/// the expiry, so a link cannot be made to last longer or point elsewhere.
#[derive(Clone)]
pub struct LocalLinks {
    base_url: String,
    secret: Vec<u8>,
}

impl LocalLinks {
    pub fn new(base_url: impl Into<String>, secret: Vec<u8>) -> LocalLinks {
        LocalLinks { base_url: base_url.into(), secret }
    }

    fn signature(&self, key: &str, expires_ms: i64) -> Option<String> {
        // HMAC accepts keys of any length; `None` is never expected.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret).ok()?;
        mac.update(key.as_bytes());
        mac.update(b"\n");
        mac.update(expires_ms.to_string().as_bytes());
        Some(hex::encode(mac.finalize().into_bytes()))
    }

    /// Checks a link's parts: `Ok` when it was made here and has not expired at `now_ms`.
    pub fn check(&self, key: &str, expires_ms: i64, signature: &str, now_ms: i64) -> Result<(), &'static str> {
        let Some(want) = self.signature(key, expires_ms) else { return Err("bad_signature") };
        if !tributary_core::config::constant_time_eq(want.as_bytes(), signature.as_bytes()) {
            return Err("bad_signature");
        }
        if now_ms >= expires_ms {
            return Err("link_expired");
        }
        Ok(())
    }
}

impl ResultLinks for LocalLinks {
    async fn link(&self, key: &str, expires_at_ms: i64) -> Result<String, PortError> {
        tributary_core::ports::validate_object_key(key)?;
        let sig = self
            .signature(key, expires_at_ms)
            .ok_or_else(|| PortError::Invalid("the link secret cannot key an HMAC".into()))?;
        Ok(format!("{}/_local/results/{key}?expires={expires_at_ms}&sig={sig}", self.base_url))
    }
}

/// A forwarded deletion reaching the local sink: every stored delivery that mentions one of the identifiers it
/// names is deleted, as a destination that supports deletion would. Returns how many went. The deletion itself is
/// not stored (it names the person).
pub async fn sink_delete<T: TableStore>(table: &T, deletion: &Value) -> Result<usize, PortError> {
    let mut needles: Vec<String> = Vec::new();
    let mut push = |v: Option<&Value>| {
        if let Some(s) = v.and_then(Value::as_str).map(|s| s.trim().to_lowercase()).filter(|s| s.len() >= 3) {
            needles.push(s);
        }
    };
    push(deletion.get("userId"));
    push(deletion.get("anonymousId"));
    push(deletion.pointer("/traits/email"));
    push(deletion.pointer("/traits/phone"));
    if let Some(ids) = deletion.pointer("/context/identities").and_then(Value::as_array) {
        for id in ids {
            push(id.get("value"));
        }
    }
    if needles.is_empty() {
        return Ok(0);
    }
    let mut gone = 0;
    let mut after: Option<String> = None;
    loop {
        let page = table.query("sink", "", after.as_deref(), 1000).await?;
        for item in &page.items {
            let text = Value::Object(item.attrs.clone()).to_string().to_lowercase();
            if needles.iter().any(|n| text.contains(n.as_str())) {
                table.write(WriteOp::Delete { key: item.key.clone(), condition: Condition::None }).await?;
                gone += 1;
            }
        }
        match page.next {
            Some(n) => after = Some(n),
            None => return Ok(gone),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn links_verify_and_expire() {
        let links = LocalLinks::new("http://127.0.0.1:1", vec![7; 32]);
        let url = links.link("dsr-results/a.tar.gz", 5_000).await.expect("link");
        let sig = url.rsplit_once("sig=").map(|(_, s)| s.to_string()).expect("sig");
        assert!(url.starts_with("http://127.0.0.1:1/_local/results/dsr-results/a.tar.gz?expires=5000&sig="));
        assert_eq!(links.check("dsr-results/a.tar.gz", 5_000, &sig, 4_999), Ok(()));
        assert_eq!(links.check("dsr-results/a.tar.gz", 5_000, &sig, 5_000), Err("link_expired"));
        assert_eq!(links.check("dsr-results/a.tar.gz", 9_000, &sig, 1), Err("bad_signature"), "expiry is signed");
        assert_eq!(links.check("dsr-results/b.tar.gz", 5_000, &sig, 1), Err("bad_signature"), "key is signed");
        let other = LocalLinks::new("http://127.0.0.1:1", vec![8; 32]);
        assert_eq!(other.check("dsr-results/a.tar.gz", 5_000, &sig, 1), Err("bad_signature"));
    }
}
