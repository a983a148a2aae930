//! A queue that takes every message, counts it and keeps nothing: for tests and benches whose subject sends to a
//! queue that is not itself under test.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::ports::{FailedEntry, OutgoingMessage, PortError, Queue, ReceivedMessage};

/// Counts what it is sent (clones share the count); receives nothing.
#[derive(Clone, Default)]
pub struct CountingQueue(Arc<AtomicU64>);

impl CountingQueue {
    /// Messages sent so far.
    pub fn sent(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Queue for CountingQueue {
    async fn send_batch(&self, messages: &[OutgoingMessage]) -> Result<Vec<FailedEntry>, PortError> {
        self.0.fetch_add(messages.len() as u64, Ordering::Relaxed);
        Ok(Vec::new())
    }
    async fn receive(&self, _: usize, _: Duration, _: Duration) -> Result<Vec<ReceivedMessage>, PortError> {
        Ok(Vec::new())
    }
    async fn delete(&self, _: &str) -> Result<(), PortError> {
        Ok(())
    }
    async fn change_visibility(&self, _: &str, _: Duration) -> Result<(), PortError> {
        Ok(())
    }
    async fn approximate_len(&self) -> Result<u64, PortError> {
        Ok(0)
    }
}
