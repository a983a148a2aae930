//! Tributary's pure domain: the Segment-spec event model, the ingest pipeline (parse, validate, normalize, enrich,
//! pack), the workspace configuration and the port traits that adapters implement. No async runtime, no AWS, no I/O.

pub mod audience;
pub mod benchmark;
pub mod config;
pub mod delivery;
pub mod dsr;
pub mod event;
pub mod governance;
pub mod identity;
pub mod import;
pub mod ingest;
pub mod lambda;
pub mod metrics;
pub mod ports;
pub mod profile;

#[cfg(any(test, feature = "test-util"))]
pub mod testing;

/// Stable `tracing` field names, so logs can be queried the same way in every function.
pub mod fields {
    pub const SOURCE_ID: &str = "source_id";
    pub const ROUTE: &str = "route";
    pub const ACCEPTED: &str = "accepted";
    pub const REJECTED: &str = "rejected";
    pub const STATUS: &str = "status";
    pub const CODE: &str = "code";
    pub const MESSAGE_ID_HASH: &str = "message_id_hash";
}

/// SHA-256 of `value` as lowercase hex: the only form in which identifiers and keys appear in logs and config.
pub fn sha256_hex(value: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(value))
}
