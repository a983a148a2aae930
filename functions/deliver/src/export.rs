//! `s3_export` destinations: JSON Lines objects under the destination's prefix, one object per batch.
//!
//! The key is `<prefix>/dt=<YYYY-MM-DD>/hour=<HH>/<sha256 of the batch's messageIds>.jsonl`: the same batch sent
//! again (a retry after the receipt could not be written) overwrites the same object instead of adding a copy.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};
use tributary_core::delivery::DestinationConfig;
use tributary_core::ports::ObjectStore;

use crate::{Outbound, SendResult};

/// One object store per export bucket.
pub struct ExportSender<E: ObjectStore> {
    stores: BTreeMap<String, E>,
    clock: fn() -> time::OffsetDateTime,
}

impl<E: ObjectStore> ExportSender<E> {
    /// `stores` maps each export bucket name to a store writing into it.
    pub fn new(stores: BTreeMap<String, E>) -> Self {
        ExportSender { stores, clock: time::OffsetDateTime::now_utc }
    }

    /// The object key a batch is written under at `now`.
    pub fn key(prefix: Option<&str>, batch: &[Outbound], now: time::OffsetDateTime) -> String {
        let mut h = Sha256::new();
        for o in batch {
            h.update(o.message_id.as_bytes());
            h.update(b"\n");
        }
        let prefix = prefix.map(|p| p.trim_end_matches('/')).filter(|p| !p.is_empty());
        let name = format!(
            "dt={:04}-{:02}-{:02}/hour={:02}/{}.jsonl",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            hex::encode(&h.finalize()[..16])
        );
        match prefix {
            Some(p) => format!("{p}/{name}"),
            None => name,
        }
    }

    /// One line per event: the prepared event, with `context.profile` when the destination asked for it.
    pub fn body(batch: &[Outbound]) -> Vec<u8> {
        let mut out = Vec::new();
        for o in batch {
            let start = out.len();
            match o.event.write_with_profile(o.profile.as_ref(), &mut out) {
                Ok(()) => out.push(b'\n'),
                Err(_) => out.truncate(start),
            }
        }
        out
    }

    pub async fn send(&self, dest: &DestinationConfig, batch: &[Outbound]) -> SendResult {
        let Some(store) = dest.transport.bucket.as_ref().and_then(|b| self.stores.get(b)) else {
            return SendResult::Rejected { reason: "export_bucket_not_configured".into() };
        };
        let key = Self::key(dest.transport.prefix.as_deref(), batch, (self.clock)());
        match store.put(&key, Self::body(batch)).await {
            Ok(()) => SendResult::Delivered,
            Err(e) if e.is_retryable() => SendResult::Retry { reason: "export_unavailable".into(), after: None },
            Err(_) => SendResult::Rejected { reason: "export_refused".into() },
        }
    }
}
