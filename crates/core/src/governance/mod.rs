//! Data governance at the door (issue 10): PII detection and minimization over free-text values, and tracking-plan
//! validation of track/identify events. Everything here is pure: no I/O, no clock, no logging of raw values.
//!
//! - [`pii`]: detectors for emails, phone numbers, payment cards (Luhn), IBANs (mod-97), US SSNs and IP addresses, and
//!   [`pii::apply`] which hashes, redacts or flags them inside a JSON value.
//! - [`plan`]: a [`plan::TrackingPlan`] (JSON Schema per event name and for identify traits, plus policies) compiled
//!   once into a [`plan::CompiledPlan`] whose [`plan::CompiledPlan::check`] types the violations and decides what to
//!   do with the event.
//! - [`stats`]: per source, event name and hour, what governance did (the counters ingest keeps and the management
//!   API reports).

pub mod pii;
pub mod plan;
pub mod policy;
pub mod quarantine;
pub mod stats;

pub use pii::{apply, detect, Finding, PiiAction, PiiKind, PiiOutcome};
pub use plan::{CompiledPlan, Decision, PlanError, Policy, TrackingPlan, Verdict, Violation, ViolationKind};

#[cfg(test)]
mod tests;
