//! [`ObjectStore`] on an S3 bucket, optionally under a key prefix.
//!
//! Versioned buckets: `get`, `head` and `list` see current objects; the earlier versions an overwrite or a delete
//! leaves are reached with `ListObjectVersions`, read with `GetObject` and a version id, and removed with
//! `DeleteObjects` naming version ids (which deletes for good instead of adding a delete marker). On a bucket
//! without versioning the same calls see only each object's `null` version, which is current, so nothing is
//! earlier and nothing is removed.

use std::sync::Arc;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{BucketVersioningStatus, Delete, ObjectIdentifier, VersioningConfiguration};
use tributary_core::ports::{validate_object_key, EarlierVersion, ObjectMeta, ObjectStore, PortError};

use crate::billing::{Meters, S3Class};
use crate::error::{self, Facts, Kind, Transport};

/// Most entries of one listing page, and most versions one `DeleteObjects` call may name (S3's limit for both).
const MAX_PAGE: i32 = 1000;
/// Pages one version listing reads at most (a million entries at full pages), so a runaway listing ends.
const MAX_VERSION_PAGES: u32 = 1000;
/// List-then-delete rounds one [`ObjectStore::delete_earlier_versions`] runs at most (a million versions of one
/// key at full pages); past it the call fails, and calling it again carries on.
const MAX_REMOVAL_ROUNDS: u32 = 1000;

/// Objects in one bucket under one prefix. Keys given to and returned by the port are relative to the prefix.
#[derive(Clone, Debug)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    /// Empty, or ends with `/`.
    prefix: String,
    /// Entries per listing page (2..=1000; S3's maximum unless a test asks for small pages).
    page_size: i32,
    meters: Arc<Meters>,
}

/// One entry of a bucket's version listing, as [`S3Store::all_versions`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Version {
    /// Relative to the store's prefix.
    pub key: String,
    /// `null` for the version written while the bucket had no versioning.
    pub version_id: String,
    /// The current version of its key (a current delete marker: the object is deleted).
    pub latest: bool,
    pub delete_marker: bool,
    pub size: u64,
}

/// One page of a version listing: the entries (full keys) and the markers of the next page, if any.
struct VersionPage {
    entries: Vec<Listed>,
    next: Option<(String, Option<String>)>,
}

/// An entry of a version listing under its full key.
struct Listed {
    full_key: String,
    version_id: String,
    latest: bool,
    delete_marker: bool,
    size: u64,
}

/// Whether an S3 error says "no such object" or "no such version of it" (as opposed to "no such bucket", which is
/// a configuration error).
fn is_missing_object(code: Option<&str>, status: Option<u16>) -> bool {
    match code {
        Some("NoSuchKey") | Some("NotFound") | Some("NoSuchVersion") => true,
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

/// What the error code of one entry of a `DeleteObjects` answer means (the answer itself succeeded, so there is no
/// HTTP status to fall back on: an unknown code is taken as passing trouble).
fn delete_entry_code(code: &str) -> Option<Kind> {
    Some(match code {
        "SlowDown" => Kind::Throttled,
        "InternalError" | "ServiceUnavailable" | "OperationAborted" | "RequestTimeout" => Kind::Unavailable,
        "AccessDenied" | "InvalidArgument" | "InvalidRequest" | "MethodNotAllowed" | "NoSuchBucket" => Kind::Invalid,
        _ => return None,
    })
}

/// The error of a `DeleteObjects` entry that failed; its message and key are left out (keys may name people).
fn delete_entry_error(code: Option<&str>) -> PortError {
    let facts = Facts { code: code.map(str::to_owned), status: None, transport: Transport::Service };
    error::classify("s3", "DeleteObjects", &facts, delete_entry_code)
}

/// Sorts one listing page's entries of exactly `full_key` into its earlier versions (the current one stays) and
/// its delete markers, as (full key, version id). Returns whether the page reached past the key's entries (its
/// entries come first under a prefix equal to the key, so then none of them is on a later page).
fn sort_entries(
    entries: &[Listed],
    full_key: &str,
    versions: &mut Vec<(String, String)>,
    markers: &mut Vec<(String, String)>,
) -> bool {
    let mut past_key = false;
    for e in entries {
        if e.full_key != full_key {
            past_key = true;
        } else if e.delete_marker {
            markers.push((e.full_key.clone(), e.version_id.clone()));
        } else if !e.latest {
            versions.push((e.full_key.clone(), e.version_id.clone()));
        }
    }
    past_key
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
    pub(crate) fn new(client: aws_sdk_s3::Client, bucket: String, prefix: &str, meters: Arc<Meters>) -> Self {
        S3Store { client, bucket, prefix: normalise_prefix(prefix), page_size: MAX_PAGE, meters }
    }

    /// The same store with listing pages of `entries` (clamped to 2..=1000) instead of S3's 1000: tests use
    /// small pages to go through pagination without writing thousands of objects.
    pub fn with_page_size(mut self, entries: usize) -> Self {
        self.page_size = i32::try_from(entries).unwrap_or(MAX_PAGE).clamp(2, MAX_PAGE);
        self
    }

    /// Turns versioning on for the bucket, as the SAM template does for the archive and import buckets. For tests
    /// and local tooling; on AWS the template configures the buckets.
    #[tracing::instrument(skip_all, fields(bucket = %self.bucket))]
    pub async fn enable_versioning(&self) -> Result<(), PortError> {
        let conf = VersioningConfiguration::builder().status(BucketVersioningStatus::Enabled).build();
        self.meters.s3_call(S3Class::Write, 0);
        self.client
            .put_bucket_versioning()
            .bucket(&self.bucket)
            .versioning_configuration(conf)
            .send()
            .await
            .map_err(|e| error::s3("PutBucketVersioning", &e))?;
        Ok(())
    }

    /// Every version and delete marker of every key under `prefix` (relative to the store's prefix), current ones
    /// included, in S3's order (by key, newest first). For audits and tests that must see everything a bucket
    /// holds, not only current objects; read a version's bytes with
    /// [`get_version`](ObjectStore::get_version).
    #[tracing::instrument(skip_all, fields(bucket = %self.bucket, pages, entries))]
    pub async fn all_versions(&self, prefix: &str) -> Result<Vec<S3Version>, PortError> {
        let full_prefix = self.full_prefix(prefix)?;
        let mut out = Vec::new();
        let mut next = None;
        let mut pages = 0u32;
        loop {
            let page = self.versions_page(&full_prefix, next.take()).await?;
            pages += 1;
            out.extend(page.entries.into_iter().filter_map(|e| self.relative(e)));
            match page.next {
                Some(n) if pages < MAX_VERSION_PAGES => next = Some(n),
                Some(_) => return Err(self.too_many_pages()),
                None => break,
            }
        }
        let span = tracing::Span::current();
        span.record("pages", pages);
        span.record("entries", out.len());
        Ok(out)
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
        self.meters.s3_call(S3Class::Read, 0);
        let r = self.client.head_bucket().bucket(&self.bucket).send().await;
        tracing::debug!(ok = r.is_ok(), "Bucket connection warmed.");
    }

    fn full_key(&self, key: &str) -> Result<String, PortError> {
        validate_object_key(key)?;
        Ok(format!("{}{key}", self.prefix))
    }

    fn full_prefix(&self, prefix: &str) -> Result<String, PortError> {
        if prefix.chars().any(char::is_control) {
            return Err(PortError::Invalid("s3 list prefix holds control characters".into()));
        }
        Ok(format!("{}{prefix}", self.prefix))
    }

    /// A listed entry with its key made relative to the store's prefix (`None` if it is not under it).
    fn relative(&self, e: Listed) -> Option<S3Version> {
        let key = e.full_key.strip_prefix(&self.prefix)?.to_owned();
        Some(S3Version {
            key,
            version_id: e.version_id,
            latest: e.latest,
            delete_marker: e.delete_marker,
            size: e.size,
        })
    }

    fn too_many_pages(&self) -> PortError {
        PortError::Unavailable(format!("s3 ListObjectVersions: more than {MAX_VERSION_PAGES} pages"))
    }

    /// One page of `ListObjectVersions` under `full_prefix`, from `from` (key marker, version id marker).
    async fn versions_page(
        &self,
        full_prefix: &str,
        from: Option<(String, Option<String>)>,
    ) -> Result<VersionPage, PortError> {
        let (key_marker, version_marker) = match from {
            Some((k, v)) => (Some(k), v),
            None => (None, None),
        };
        self.meters.s3_call(S3Class::Write, 0);
        let out = self
            .client
            .list_object_versions()
            .bucket(&self.bucket)
            .prefix(full_prefix)
            .max_keys(self.page_size)
            .set_key_marker(key_marker)
            .set_version_id_marker(version_marker)
            .send()
            .await
            .map_err(|e| error::s3("ListObjectVersions", &e))?;
        let mut entries = Vec::with_capacity(out.versions().len() + out.delete_markers().len());
        for v in out.versions() {
            let (Some(key), Some(version_id)) = (v.key(), v.version_id()) else { continue };
            entries.push(Listed {
                full_key: key.to_owned(),
                version_id: version_id.to_owned(),
                latest: v.is_latest().unwrap_or(false),
                delete_marker: false,
                size: v.size().and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
            });
        }
        for m in out.delete_markers() {
            let (Some(key), Some(version_id)) = (m.key(), m.version_id()) else { continue };
            entries.push(Listed {
                full_key: key.to_owned(),
                version_id: version_id.to_owned(),
                latest: m.is_latest().unwrap_or(false),
                delete_marker: true,
                size: 0,
            });
        }
        let next = match out.next_key_marker() {
            Some(k) if out.is_truncated().unwrap_or(false) && !k.is_empty() => {
                Some((k.to_owned(), out.next_version_id_marker().filter(|v| !v.is_empty()).map(str::to_owned)))
            }
            _ => None,
        };
        Ok(VersionPage { entries, next })
    }

    /// Up to [`MAX_PAGE`] or so earlier versions of exactly `full_key` (the current one left out) and, when it has
    /// none, all of its delete markers. Listed from the start (`prefix` = the key) on every call: a listing resumed
    /// from markers could name versions deleted since.
    async fn earlier_of_key(
        &self,
        full_key: &str,
    ) -> Result<(Vec<(String, String)>, Vec<(String, String)>), PortError> {
        let (mut versions, mut markers) = (Vec::new(), Vec::new());
        let mut next = None;
        let mut pages = 0u32;
        loop {
            let page = self.versions_page(full_key, next.take()).await?;
            pages += 1;
            let past_key = sort_entries(&page.entries, full_key, &mut versions, &mut markers);
            if past_key || versions.len() >= MAX_PAGE as usize {
                return Ok((versions, markers));
            }
            match page.next {
                Some(n) if pages < MAX_VERSION_PAGES => next = Some(n),
                Some(_) => return Err(self.too_many_pages()),
                None => return Ok((versions, markers)),
            }
        }
    }

    /// Deletes these (full key, version id) pairs for good, in calls of at most [`MAX_PAGE`]. A version already
    /// gone is not an error.
    async fn delete_versions(&self, doomed: &[(String, String)]) -> Result<(), PortError> {
        let build_failed = |_| PortError::Invalid("s3 DeleteObjects: request could not be built".into());
        for chunk in doomed.chunks(MAX_PAGE as usize) {
            let objects = chunk
                .iter()
                .map(|(key, version_id)| ObjectIdentifier::builder().key(key).version_id(version_id).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(build_failed)?;
            // Quiet: the answer lists only the entries that failed.
            let delete = Delete::builder().set_objects(Some(objects)).quiet(true).build().map_err(build_failed)?;
            self.meters.s3_call(S3Class::Write, 0);
            let out = self
                .client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| error::s3("DeleteObjects", &e))?;
            let failed = out.errors().iter().find(|e| !is_missing_object(e.code(), None));
            if let Some(e) = failed {
                return Err(delete_entry_error(e.code()));
            }
        }
        Ok(())
    }

    async fn get_inner(
        &self,
        key: &str,
        range: Option<String>,
        version_id: Option<&str>,
    ) -> Result<Option<Vec<u8>>, PortError> {
        let full = self.full_key(key)?;
        let op = match (&range, version_id) {
            (Some(_), _) => "GetObject(range)",
            (None, Some(_)) => "GetObject(version)",
            (None, None) => "GetObject",
        };
        self.meters.s3_call(S3Class::Read, 0);
        let res = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(full)
            .set_range(range)
            .set_version_id(version_id.map(str::to_owned))
            .send()
            .await;
        let out = match res {
            Ok(out) => out,
            Err(e) => {
                let (code, status) = error::code_and_status(&e);
                if is_missing_object(code.as_deref(), status) {
                    return Ok(None);
                }
                // Asked for a delete marker by its id (405): it holds no bytes.
                if version_id.is_some() && (code.as_deref() == Some("MethodNotAllowed") || status == Some(405)) {
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
        self.meters.s3_call(S3Class::Write, bytes.len());
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
        self.get_inner(key, None, None).await
    }

    #[tracing::instrument(skip_all, fields(bucket = %self.bucket, start = start, end = ?end))]
    async fn get_range(&self, key: &str, start: u64, end: Option<u64>) -> Result<Option<Vec<u8>>, PortError> {
        match range_header(start, end) {
            Some(range) => self.get_inner(key, Some(range), None).await,
            // An empty range: only existence matters.
            None => Ok(self.head(key).await?.map(|_| Vec::new())),
        }
    }

    #[tracing::instrument(skip_all, fields(bucket = %self.bucket))]
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, PortError> {
        let full = self.full_key(key)?;
        self.meters.s3_call(S3Class::Read, 0);
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
        let full_prefix = self.full_prefix(prefix)?;
        let mut objects = Vec::new();
        let mut token: Option<String> = None;
        let mut pages = 0u32;
        loop {
            self.meters.s3_call(S3Class::Write, 0);
            let out = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&full_prefix)
                .max_keys(self.page_size)
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
        self.meters.s3_call(S3Class::Delete, 0);
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

    #[tracing::instrument(skip_all, fields(bucket = %self.bucket, pages, versions))]
    async fn list_earlier_versions(&self, prefix: &str) -> Result<Vec<EarlierVersion>, PortError> {
        let full_prefix = self.full_prefix(prefix)?;
        let mut out = Vec::new();
        let mut next = None;
        let mut pages = 0u32;
        loop {
            let page = self.versions_page(&full_prefix, next.take()).await?;
            pages += 1;
            for e in page.entries.into_iter().filter(|e| !e.latest && !e.delete_marker) {
                if let Some(v) = self.relative(e) {
                    out.push(EarlierVersion { key: v.key, version_id: v.version_id, size: v.size });
                }
            }
            match page.next {
                Some(n) if pages < MAX_VERSION_PAGES => next = Some(n),
                Some(_) => return Err(self.too_many_pages()),
                None => break,
            }
        }
        // S3 lists by key, newest first within a key; a stable sort keeps that if a page ever mixes them.
        out.sort_by(|a, b| a.key.cmp(&b.key));
        let span = tracing::Span::current();
        span.record("pages", pages);
        span.record("versions", out.len());
        Ok(out)
    }

    #[tracing::instrument(skip_all, fields(bucket = %self.bucket))]
    async fn get_version(&self, key: &str, version_id: &str) -> Result<Option<Vec<u8>>, PortError> {
        if version_id.is_empty() {
            return Err(PortError::Invalid("s3 GetObject(version): empty version id".into()));
        }
        self.get_inner(key, None, Some(version_id)).await
    }

    #[tracing::instrument(skip_all, fields(bucket = %self.bucket, rounds, removed))]
    async fn delete_earlier_versions(&self, key: &str) -> Result<usize, PortError> {
        let full = self.full_key(key)?;
        let mut removed = 0usize;
        let mut rounds = 0u32;
        let outcome = loop {
            if rounds == MAX_REMOVAL_ROUNDS {
                break Err(PortError::Unavailable(format!(
                    "s3 DeleteObjects: versions left after {MAX_REMOVAL_ROUNDS} rounds; call again to carry on"
                )));
            }
            rounds += 1;
            let (versions, markers) = match self.earlier_of_key(&full).await {
                Ok(found) => found,
                Err(e) => break Err(e),
            };
            // Delete markers go only once no earlier version is left: removing the marker of a deleted object
            // first would make its last bytes current again if the removal were cut short.
            let last = versions.is_empty();
            let doomed = if last { markers } else { versions };
            if let Err(e) = self.delete_versions(&doomed).await {
                break Err(e);
            }
            removed += doomed.len();
            if last {
                break Ok(removed);
            }
        };
        let span = tracing::Span::current();
        span.record("rounds", rounds);
        span.record("removed", removed);
        outcome
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

    fn listed(key: &str, version: &str, latest: bool, delete_marker: bool) -> Listed {
        Listed { full_key: key.into(), version_id: version.into(), latest, delete_marker, size: 1 }
    }

    #[test]
    fn removal_sorts_the_exact_keys_versions_from_its_markers() {
        let page = [
            listed("a/k", "v3", true, false),
            listed("a/k", "v2", false, false),
            listed("a/k", "v1", false, false),
            listed("a/k", "m1", false, true),
            listed("a/k.gz", "x2", false, false),
            listed("a/k/x", "y1", false, true),
        ];
        let pair = |v: &str| ("a/k".to_string(), v.to_string());
        let (mut versions, mut markers) = (Vec::new(), Vec::new());
        assert!(sort_entries(&page, "a/k", &mut versions, &mut markers), "the page shows longer keys: the key ended");
        assert_eq!(versions, vec![pair("v2"), pair("v1")], "the current version stays");
        assert_eq!(markers, vec![pair("m1")]);
        let (mut versions, mut markers) = (Vec::new(), Vec::new());
        let deleted = [listed("a/k", "m2", true, true), listed("a/k", "v1", false, false)];
        assert!(!sort_entries(&deleted, "a/k", &mut versions, &mut markers), "a full page of the key: read on");
        assert_eq!((versions, markers), (vec![pair("v1")], vec![pair("m2")]), "a current marker is removed too");
    }

    #[test]
    fn failed_delete_entries_are_classified_without_keys() {
        assert!(matches!(delete_entry_error(Some("SlowDown")), PortError::Throttled(_)));
        assert!(delete_entry_error(Some("InternalError")).is_retryable());
        assert!(delete_entry_error(None).is_retryable(), "no code: passing trouble");
        let denied = delete_entry_error(Some("AccessDenied"));
        assert!(matches!(denied, PortError::Invalid(_)), "{denied}");
        assert_eq!(denied.to_string(), "invalid request: s3 DeleteObjects: AccessDenied");
        assert!(is_missing_object(Some("NoSuchVersion"), None), "a version already gone is not a failure");
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
