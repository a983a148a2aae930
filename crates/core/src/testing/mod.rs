//! Contract suites for the ports (feature `test-util`). Every adapter runs the same suite; if two adapters
//! disagree, the suite says which.
//!
//! The suites must pass on the embedded adapters and on real SQS/S3/DynamoDB (via the moto emulator), so they only
//! rely on what those services promise: visibility timeouts in whole seconds, no FIFO order on standard queues,
//! messages that may arrive split across receives, approximate counts that are exact on an idle queue. Each suite
//! takes a few seconds, not minutes.

mod counting_queue;
mod faulty_table;
mod imports;
mod memory_objects;
mod memory_table;
mod object_store;
mod queue;
mod table_store;

pub use counting_queue::CountingQueue;
pub use faulty_table::{Call, FaultyTable, Method};
pub use imports::{gzip, partner_csv, partner_row, IMPORT_WORKSPACE, PARTNER_HEADER};
pub use memory_objects::{MemoryObjects, StoredVersion};
pub use memory_table::MemoryTable;
pub use object_store::{object_store_contract, object_store_versions_contract};
pub use queue::{queue_contract, queue_dlq_contract};
pub use table_store::{table_store_contract, table_store_contract_with, ContractOptions};

/// Deterministic pseudo-random bytes (xorshift), so large payloads are not trivially compressible or periodic
/// and a failure is reproducible.
pub(crate) fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Wall-clock now as epoch milliseconds (the unit of `sent_timestamp_ms`).
pub(crate) fn now_epoch_ms() -> i64 {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}
