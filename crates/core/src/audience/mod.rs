//! Audiences: the rule language, all pure. Audiences are defined in the workspace file (`audiences:`) and
//! evaluated per profile by the scheduled audience refresh (`functions/audiences`), which sends each change to the
//! audience's `destinations` as an `Audience Entered` / `Audience Exited` event.
//!
//! - [`rule`]: the config types ([`AudienceConfig`], [`Rule`]) and their YAML spelling, e.g.
//!   `{ trait: plan, equals: pro }`, `{ performed: Order Completed, where: { currency: EUR }, at_least: 2,
//!   in_last_days: 30 }`, `{ not: { consent: advertising } }`, `{ has_identifier: email }`.
//! - [`compile`]: [`AudienceSet::compile`] checks every audience (errors carry the path of the bad rule, such as
//!   `audiences[2].rule.all[1].any[0]`) and compiles it once into a [`CompiledAudience`].
//! - [`eval`]: [`CompiledAudience::evaluate`] answers membership at a time `now` with a [`Verdict`] whose
//!   `recheck_at` is the earliest time the answer could change without new data, so only due profiles are
//!   re-evaluated; [`CompiledAudience::evaluate_conditions`] and [`CompiledAudience::labels`] explain it per
//!   condition, without values.
//! - [`counters`]: [`EventCounters`], the per-profile daily counts that `performed` conditions read. Stitch
//!   counts a track event under [`AudienceSet::counter_keys`], keeping [`AudienceSet::keep_days`] days. Only
//!   conditions configured at the time are counted: a new condition counts from when it is deployed.
//!
//! Days are UTC day numbers (`ms.div_euclid(86_400_000)`). An event window of D days on day T covers days
//! `T-D+1 ..= T`.

/// The source id audience events are delivered under: a destination with a `sources` filter lists it to take
/// them. No configured source may use it.
pub const AUDIENCE_SOURCE: &str = "audiences";

pub mod compile;
pub mod counters;
pub mod eval;
pub mod rule;

pub use compile::{counter_key, AudienceError, AudienceSet, CompiledAudience};
pub use counters::{day_of, event_day, EventCounters, DAY_MS, MAX_COUNTER_KEYS};
pub use eval::Verdict;
pub use rule::{AudienceConfig, AudienceId, EventCondition, Rule, Scalar, TraitCondition, TraitOp};

#[cfg(test)]
mod tests;
