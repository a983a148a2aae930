//! [`ObjectStore`] on an S3 bucket, optionally under a key prefix.

use aws_sdk_s3::primitives::ByteStream;
use tributary_core::ports::{validate_object_key, ObjectMeta, ObjectStore, PortError};

use crate::error;

/// Objects in one bucket under one prefix. Keys given to and returned by the port are relative to the prefix.
#[derive(Clone, Debug)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    /// Empty, or ends with `/`.
    prefix: String,
}

/// Whether an S3 error says "no such object" (as opposed to "no such bucket", which is a configuration error).
fn is_missing_object(code: Option<&str>, status: Option<u16>) -> bool {
    match code {
        Some("NoSuchKey") | Some("NotFound") => true,
        Some(_) => false,
        None => status == Some(404),
    }
}

/// Normalises a store prefix: no leading or trailing `/`, then one trailing `/` unless empty.
fn normalise_prefix(prefix: &str) -> String {
    let p = prefix.trim_matches('/');
    if p.is_empty() {
        String::new()
    } else {
        format!("{p}/")
    }
}

/// The S3 `Range` header for `start..end` (end exclusive); `None` when the range is empty.
fn range_header(start: u64, end: Option<u64>) -> Option<String> {
    match end {
        None => Some(format!("bytes={start}-")),
        Some(end) if end > start => Some(format!("bytes={start}-{}", end - 1)),
        Some(_) => None,
    }
}

impl S3Store {
    pub(crate) fn new(client: aws_sdk_s3::Client, bucket: String, prefix: &str) -> Self {
        S3Store { client, bucket, prefix: normalise_prefix(prefix) }
    }

    /// The bucket name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The key prefix (empty, or ending with `/`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Opens a connection to this bucket's endpoint (with virtual-hosted addressing every bucket has its own host,
    /// which [`AwsClients::warm`](crate::AwsClients::warm) cannot know). Failures are ignored.
    #[tracing::instrument(skip_all, fields(bucket = %self.bucket))]
    pub async fn warm(&self) {
        let r = self.client.head_bucket().bucket(&self.bucket).send().await;
        tracing::debug!(ok = r.is_ok(), "Bucket connection warmed.");
    }

    fn full_key(&self, key: &str) -> Result<String, PortError> {
        validate_object_key(key)?;
        Ok(format!("{}{key}", self.prefix))
    }

    async fn get_inner(&self, key: &str, range: Option<String>) -> Result<Option<Vec<u8>>, PortError> {
        let full = self.full_key(key)?;
        let op = if range.is_some() { "GetObject(range)" } else { "GetObject" };
        let res = self.client.get_object().bucket(&self.bucket).key(full).set_range(range).send().await;
        let out = match res {
            Ok(out) => out,
            Err(e) => {
                let (code, status) = error::code_and_status(&e);
                if is_missing_object(code.as_deref(), status) {
                    return Ok(None);
                }
                // A range starting at or past the end of the object.
                if code.as_deref() == Some("InvalidRange") || status == Some(416) {
                    return Ok(Some(Vec::new()));
                }
                return Err(error::s3(op, &e));
            }
        };
        let bytes =
            out.body.collect().await.map_err(|_| PortError::Unavailable(format!("s3 {op}: body could not be read")))?;
        Ok(Some(bytes.into_bytes().to_vec()))
    }
}

impl ObjectStore for S3Store {
    #[tracing::instrument(skip_all, fields(bucket = %self.bucket, size = bytes.len()))]
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), PortError> {
        let full = self.full_key(key)?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(full)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| error::s3("PutObject", &e))?;
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(bucket = %self.bucket))]
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, PortError> {
        self.get_inner(key, None).await
    }

    #[tracing::instrument(skip_all, fields(bucket = %self.bucket, start = start, end = ?end))]
    async fn get_range(&self, key: &str, start: u64, end: Option<u64>) -> Result<Option<Vec<u8>>, PortError> {
        match range_header(start, end) {
            Some(range) => self.get_inner(key, Some(range)).await,
            // An empty range: only existence matters.
            None => Ok(self.head(key).await?.map(|_| Vec::new())),
        }
    }

    #[tracing::instrument(skip_all, fields(bucket = %self.bucket))]
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, PortError> {
        let full = self.full_key(key)?;
        match self.client.head_object().bucket(&self.bucket).key(full).send().await {
            Ok(out) => {
                let size = out.content_length().and_then(|n| u64::try_from(n).ok()).unwrap_or(0);
                Ok(Some(ObjectMeta { key: key.to_owned(), size }))
            }
            Err(e) => {
                let (code, status) = error::code_and_status(&e);
                if is_missing_object(code.as_deref(), status) {
                    Ok(None)
                } else {
                    Err(error::s3("HeadObject", &e))
                }
            }
        }
    }

    #[tracing::instrument(skip_all, fields(bucket = %self.bucket, pages, objects))]
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, PortError> {
        if prefix.chars().any(char::is_control) {
            return Err(PortError::Invalid("s3 list prefix holds control characters".into()));
        }
        let full_prefix = format!("{}{prefix}", self.prefix);
        let mut objects = Vec::new();
        let mut token: Option<String> = None;
        let mut pages = 0u32;
        loop {
            let out = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&full_prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| error::s3("ListObjectsV2", &e))?;
            pages += 1;
            for obj in out.contents() {
                let Some(key) = obj.key().and_then(|k| k.strip_prefix(&self.prefix)) else {
                    continue;
                };
                let size = obj.size().and_then(|n| u64::try_from(n).ok()).unwrap_or(0);
                objects.push(ObjectMeta { key: key.to_owned(), size });
            }
            match out.next_continuation_token() {
                Some(next) if out.is_truncated().unwrap_or(false) && !next.is_empty() => token = Some(next.to_owned()),
                _ => break,
            }
        }
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        let span = tracing::Span::current();
        span.record("pages", pages);
        span.record("objects", objects.len());
        Ok(objects)
    }

    #[tracing::instrument(skip_all, fields(bucket = %self.bucket))]
    async fn delete(&self, key: &str) -> Result<(), PortError> {
        let full = self.full_key(key)?;
        match self.client.delete_object().bucket(&self.bucket).key(full).send().await {
            Ok(_) => Ok(()),
            Err(e) => {
                let (code, status) = error::code_and_status(&e);
                if is_missing_object(code.as_deref(), status) {
                    Ok(())
                } else {
                    Err(error::s3("DeleteObject", &e))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_normalised() {
        assert_eq!(normalise_prefix(""), "");
        assert_eq!(normalise_prefix("/"), "");
        assert_eq!(normalise_prefix("imports"), "imports/");
        assert_eq!(normalise_prefix("/a/b/"), "a/b/");
    }

    #[test]
    fn ranges_are_inclusive_on_the_wire() {
        assert_eq!(range_header(0, None).as_deref(), Some("bytes=0-"));
        assert_eq!(range_header(2, Some(5)).as_deref(), Some("bytes=2-4"));
        assert_eq!(range_header(5, Some(5)), None);
        assert_eq!(range_header(6, Some(5)), None);
    }

    #[test]
    fn missing_object_is_not_missing_bucket() {
        assert!(is_missing_object(Some("NoSuchKey"), Some(404)));
        assert!(is_missing_object(Some("NotFound"), Some(404)));
        assert!(is_missing_object(None, Some(404)));
        assert!(!is_missing_object(Some("NoSuchBucket"), Some(404)));
        assert!(!is_missing_object(Some("AccessDenied"), Some(403)));
    }
}
