//! Identity resolution groundwork, all pure: identifier types and normalization ([`identifier`]), extraction from a
//! normalized Segment event ([`extract`]), the per-type rules ([`rules`]) and the in-memory reference model of the
//! identity graph ([`model`]) that the real stores are tested against.

pub mod identifier;
pub mod model;
pub mod plan;
pub mod rules;

pub use identifier::{extract, ExtractOptions, Extracted, IdType, Identifier, InvalidIdType, RejectReason};
pub use model::{Outcome, ProfileId, ReferenceGraph, Refusal, RefusalReason};
pub use rules::{CompiledRules, IdentityRules, RulesError, TypeRule};

#[cfg(test)]
mod tests;
