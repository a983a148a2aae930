//! [`ResultLinks`] as S3 presigned `GetObject` URLs: the controller fetches a DSR export straight from the results
//! bucket until the link expires, without credentials of its own.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_s3::presigning::PresigningConfig;
use tributary_core::dsr::ResultLinks;
use tributary_core::ports::{validate_object_key, PortError};

use crate::error;

/// Longest life S3 allows a presigned URL signed with SigV4 (seven days).
pub const MAX_LINK_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

/// Presigned links to objects in one bucket under one prefix (keys are relative to it, as with
/// [`S3Store`](crate::S3Store)).
#[derive(Clone, Debug)]
pub struct S3Links {
    client: aws_sdk_s3::Client,
    bucket: String,
    /// Empty, or ends with `/`.
    prefix: String,
}

impl S3Links {
    pub(crate) fn new(client: aws_sdk_s3::Client, bucket: String, prefix: &str) -> Self {
        let p = prefix.trim_matches('/');
        let prefix = if p.is_empty() { String::new() } else { format!("{p}/") };
        S3Links { client, bucket, prefix }
    }

    /// A link to `key` that works for `lifetime` (at most [`MAX_LINK_LIFETIME`]) from now.
    async fn presign(&self, key: &str, lifetime: Duration) -> Result<String, PortError> {
        validate_object_key(key)?;
        let config = PresigningConfig::expires_in(lifetime.min(MAX_LINK_LIFETIME))
            .map_err(|e| PortError::Invalid(format!("s3 presign: {e}")))?;
        let presigned = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(format!("{}{key}", self.prefix))
            .presigned(config)
            .await
            .map_err(|e| error::s3("GetObject(presign)", &e))?;
        Ok(presigned.uri().to_string())
    }
}

/// The lifetime left until `expires_at_ms` (epoch ms) seen at `now`, whole seconds rounded down; `None` when less
/// than a second is left.
fn lifetime(expires_at_ms: i64, now: SystemTime) -> Option<Duration> {
    let now_ms = i64::try_from(now.duration_since(UNIX_EPOCH).ok()?.as_millis()).ok()?;
    let left_ms = expires_at_ms.checked_sub(now_ms)?;
    let secs = u64::try_from(left_ms / 1000).ok()?;
    (secs > 0).then(|| Duration::from_secs(secs))
}

impl ResultLinks for S3Links {
    #[tracing::instrument(skip_all, fields(bucket = %self.bucket))]
    async fn link(&self, key: &str, expires_at_ms: i64) -> Result<String, PortError> {
        let lifetime = lifetime(expires_at_ms, SystemTime::now())
            .ok_or_else(|| PortError::Invalid("the export's link has expired".into()))?;
        self.presign(key, lifetime).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client with fixed credentials: presigning is local computation, no request is sent.
    fn links(prefix: &str) -> S3Links {
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("eu-west-1"))
            .credentials_provider(aws_sdk_s3::config::Credentials::new("AKIDEXAMPLE", "secret", None, None, "test"))
            .build();
        S3Links::new(aws_sdk_s3::Client::from_conf(conf), "results".into(), prefix)
    }

    fn now_ms() -> i64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
    }

    #[test]
    fn lifetimes_round_down_and_end() {
        let now = UNIX_EPOCH + Duration::from_millis(1_000_000);
        assert_eq!(lifetime(1_000_000 + 3_600_500, now), Some(Duration::from_secs(3600)));
        assert_eq!(lifetime(1_000_000 + 999, now), None);
        assert_eq!(lifetime(1_000_000, now), None);
        assert_eq!(lifetime(0, now), None);
        assert_eq!(lifetime(i64::MIN, now), None);
    }

    #[tokio::test]
    async fn links_are_presigned_for_the_time_left_capped_at_seven_days() {
        let l = links("exports/");
        let url = l.link("dsr/a.json", now_ms() + 3_600_000 + 500).await.expect("link");
        assert!(url.contains("results"), "{url}");
        assert!(url.contains("exports/dsr/a.json"), "{url}");
        assert!(url.contains("X-Amz-Signature="), "{url}");
        let expires = url.split("X-Amz-Expires=").nth(1).and_then(|s| s.split('&').next()).expect("expiry");
        let expires: u64 = expires.parse().expect("number");
        assert!((3599..=3600).contains(&expires), "{url}");

        let url = l.link("dsr/a.json", now_ms() + 30 * 86_400_000).await.expect("link");
        assert!(url.contains("X-Amz-Expires=604800"), "{url}");
    }

    #[tokio::test]
    async fn expired_links_and_bad_keys_are_refused() {
        let l = links("");
        assert!(matches!(l.link("dsr/a.json", now_ms() - 1).await, Err(PortError::Invalid(_))));
        assert!(matches!(l.link("../a.json", now_ms() + 60_000).await, Err(PortError::Invalid(_))));
    }
}
