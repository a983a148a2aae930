//! Unified profiles: how the identity graph, profiles, the ledger, per-profile event history and dedup records are
//! laid out in one [`crate::ports::TableStore`] table ([`layout`]), how traits ([`traits`]) and consent
//! ([`consent`]) resolve, the workspace settings that govern them ([`settings`]) and the read path shared by the
//! profile API and later the DSR and audience functions ([`read`]).
//!
//! ## Why one table
//! Identities, profiles, ledger rows, events and dedup records live in one DynamoDB table (`pk`/`sk`), as on the
//! embedded SQLite store. A merge or an event touches several kinds at once and must do so in one conditional
//! transaction; one table keeps that transaction, the IAM policy, encryption, point-in-time recovery and the
//! contract suite to one resource, and costs nothing extra (DynamoDB bills per item, not per table).

pub mod changes;
pub mod consent;
pub mod layout;
pub mod membership;
pub mod read;
pub mod settings;
pub mod traits;

pub use layout::{
    ConsentEntry, DedupRow, EventRow, LedgerOp, LedgerRow, Overflow, ProfileDoc, RefusalRecord, Stamp, TraitEntry,
};
pub use settings::{ConsentPurpose, ConsentSettings, ProfileSettings};
