//! Identity rules per identifier type: priority, maximum values per profile, blocked values and patterns.
//!
//! [`IdentityRules`] is the configuration form (serde + JSON Schema, to live in the workspace config);
//! [`IdentityRules::compile`] checks it and gives [`CompiledRules`], which answers the questions the stitcher asks.

use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::identifier::{IdType, Identifier};

/// Values blocked for every type by default (compared case-insensitively, after normalization).
pub const DEFAULT_BLOCKED: [&str; 9] = ["null", "undefined", "0", "-1", "anonymous", "none", "nil", "unknown", ""];
/// Pattern blocked for every type by default: only zeros and dashes (`000-000`, `--`).
pub const DEFAULT_BLOCKED_PATTERN: &str = "^[0-]*$";
/// Priority of a type without a rule (and no `ext:*` rule for external types): below every configured type.
pub const FALLBACK_PRIORITY: u32 = u32::MAX;
/// Maximum values per profile of a type without a rule.
pub const FALLBACK_MAX_PER_PROFILE: u32 = 5;
/// Compiled size limit of one blocked pattern, so a configured regex cannot take unbounded memory.
const PATTERN_SIZE_LIMIT: usize = 1 << 20;

/// The identity rules of a workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentityRules {
    /// One rule per identifier type. `ext:*` applies to every external type without a rule of its own. A type with
    /// no rule at all gets the lowest priority, a maximum of 5 and the default blocked values.
    pub types: Vec<TypeRule>,
}

/// The rule for one identifier type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TypeRule {
    /// The identifier type (`user_id`, `email`, `ext:braze_id`, `ext:*`, …).
    pub kind: IdType,
    /// 1 is the highest. When an event's identifiers cannot all be linked, higher-priority ones win.
    pub priority: u32,
    /// How many distinct values of this type one profile may hold (at least 1).
    pub max_per_profile: u32,
    /// Values that never identify anyone, compared case-insensitively with the normalized value. For
    /// `email_sha256`/`phone_sha256`, the SHA-256 of the raw type's blocked values is blocked as well.
    #[serde(default)]
    pub blocked: Vec<String>,
    /// Regular expressions (Rust `regex` syntax) matched against the normalized value; any match blocks it.
    #[serde(default)]
    pub blocked_patterns: Vec<String>,
}

impl TypeRule {
    fn with_defaults(kind: IdType, priority: u32, max_per_profile: u32) -> TypeRule {
        TypeRule {
            kind,
            priority,
            max_per_profile,
            blocked: DEFAULT_BLOCKED.iter().map(|s| s.to_string()).collect(),
            blocked_patterns: vec![DEFAULT_BLOCKED_PATTERN.to_string()],
        }
    }
}

impl Default for IdentityRules {
    /// user_id 1 (max 1), email 2, phone 3, external 4, device_id 5, anonymous_id 6 (max 5 each); hashed types share
    /// their raw type's priority. Every type blocks [`DEFAULT_BLOCKED`] and [`DEFAULT_BLOCKED_PATTERN`].
    fn default() -> Self {
        let types = vec![
            TypeRule::with_defaults(IdType::UserId, 1, 1),
            TypeRule::with_defaults(IdType::Email, 2, 5),
            TypeRule::with_defaults(IdType::EmailSha256, 2, 5),
            TypeRule::with_defaults(IdType::Phone, 3, 5),
            TypeRule::with_defaults(IdType::PhoneSha256, 3, 5),
            TypeRule::with_defaults(IdType::External("*".to_string()), 4, 5),
            TypeRule::with_defaults(IdType::DeviceId, 5, 5),
            TypeRule::with_defaults(IdType::AnonymousId, 6, 5),
        ];
        IdentityRules { types }
    }
}

/// A rule set that cannot be compiled. `rule` is the index in [`IdentityRules::types`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RulesError {
    #[error("identity rule {rule} ({kind}): blocked pattern {pattern_index} is not a valid regex: {message}")]
    InvalidPattern { rule: usize, kind: IdType, pattern_index: usize, message: String },
    #[error("identity rule {rule} ({kind}): the type already has a rule (rule {first})")]
    DuplicateType { rule: usize, kind: IdType, first: usize },
    #[error("identity rule {rule} ({kind}): priority must be at least 1")]
    ZeroPriority { rule: usize, kind: IdType },
    #[error("identity rule {rule} ({kind}): max_per_profile must be at least 1")]
    ZeroMax { rule: usize, kind: IdType },
}

#[derive(Debug, Clone)]
struct Compiled {
    priority: u32,
    max_per_profile: u32,
    /// Lowercased blocked values (for hashed types, plus the hashes of the raw type's blocked values).
    blocked: BTreeSet<String>,
    patterns: Vec<regex::Regex>,
}

/// Checked rules, ready for matching.
#[derive(Debug, Clone)]
pub struct CompiledRules {
    by_type: BTreeMap<IdType, Compiled>,
    fallback: Compiled,
}

impl IdentityRules {
    /// Checks the rules (priority and max ≥ 1, one rule per type, valid regexes) and compiles them.
    pub fn compile(&self) -> Result<CompiledRules, RulesError> {
        let mut by_type = BTreeMap::new();
        let mut first_index = BTreeMap::new();
        for (rule, r) in self.types.iter().enumerate() {
            let kind = r.kind.clone();
            if let Some(&first) = first_index.get(&kind) {
                return Err(RulesError::DuplicateType { rule, kind, first });
            }
            if r.priority == 0 {
                return Err(RulesError::ZeroPriority { rule, kind });
            }
            if r.max_per_profile == 0 {
                return Err(RulesError::ZeroMax { rule, kind });
            }
            let patterns = compile_patterns(&r.blocked_patterns).map_err(|(pattern_index, message)| {
                RulesError::InvalidPattern { rule, kind: kind.clone(), pattern_index, message }
            })?;
            first_index.insert(kind.clone(), rule);
            by_type.insert(
                kind,
                Compiled {
                    priority: r.priority,
                    max_per_profile: r.max_per_profile,
                    blocked: r.blocked.iter().map(|b| b.trim().to_lowercase()).collect(),
                    patterns,
                },
            );
        }
        // A hashed type also blocks the hashes of its raw type's blocked values, so `sha256("null")` from a broker
        // is as useless as `null`.
        for (hashed, raw) in [(IdType::EmailSha256, IdType::Email), (IdType::PhoneSha256, IdType::Phone)] {
            let raw_blocked: Vec<String> = by_type
                .get(&raw)
                .map(|c| c.blocked.iter().map(|b| crate::sha256_hex(b.as_bytes())).collect())
                .unwrap_or_default();
            if let Some(c) = by_type.get_mut(&hashed) {
                c.blocked.extend(raw_blocked);
            }
        }
        let fallback = Compiled {
            priority: FALLBACK_PRIORITY,
            max_per_profile: FALLBACK_MAX_PER_PROFILE,
            blocked: DEFAULT_BLOCKED.iter().map(|s| s.to_string()).collect(),
            patterns: compile_patterns(&[DEFAULT_BLOCKED_PATTERN.to_string()]).expect("default pattern compiles"),
        };
        Ok(CompiledRules { by_type, fallback })
    }
}

fn compile_patterns(patterns: &[String]) -> Result<Vec<regex::Regex>, (usize, String)> {
    patterns.iter().enumerate().map(|(i, p)| compile_pattern(p).map_err(|e| (i, e))).collect()
}

/// Patterns compiled so far in this process, by source. Every type repeats [`DEFAULT_BLOCKED_PATTERN`] and a
/// function compiles its rules more than once (config checks, then the handler), so without it one cold start built
/// the same automaton about twenty times (~8 % of a function's init CPU). A `Regex` clone shares the compiled
/// program. Bounded: when full, further patterns are compiled without being kept.
static COMPILED: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<String, regex::Regex>>> =
    std::sync::LazyLock::new(Default::default);
const COMPILED_MAX: usize = 256;

fn compile_pattern(pattern: &str) -> Result<regex::Regex, String> {
    // A poisoned lock only means another thread panicked while holding it; the map is still consistent.
    let cached = COMPILED.lock().unwrap_or_else(|p| p.into_inner()).get(pattern).cloned();
    if let Some(regex) = cached {
        return Ok(regex);
    }
    let regex = regex::RegexBuilder::new(pattern).size_limit(PATTERN_SIZE_LIMIT).build().map_err(|e| e.to_string())?;
    let mut compiled = COMPILED.lock().unwrap_or_else(|p| p.into_inner());
    if compiled.len() < COMPILED_MAX {
        compiled.insert(pattern.to_string(), regex.clone());
    }
    Ok(regex)
}

impl CompiledRules {
    fn rule(&self, kind: &IdType) -> &Compiled {
        if let Some(c) = self.by_type.get(kind) {
            return c;
        }
        if matches!(kind, IdType::External(_)) {
            if let Some(c) = self.by_type.get(&IdType::External("*".to_string())) {
                return c;
            }
        }
        &self.fallback
    }

    /// Whether the (normalized) identifier is a blocked value of its type.
    pub fn is_blocked(&self, id: &Identifier) -> bool {
        let rule = self.rule(&id.kind);
        rule.blocked.contains(&id.value.to_lowercase()) || rule.patterns.iter().any(|p| p.is_match(&id.value))
    }

    /// 1 is the highest.
    pub fn priority(&self, kind: &IdType) -> u32 {
        self.rule(kind).priority
    }

    pub fn max_per_profile(&self, kind: &IdType) -> u32 {
        self.rule(kind).max_per_profile
    }

    /// Splits an event's identifiers into (usable, blocked), keeping their order. A hashed identifier derived from a
    /// blocked raw identifier of the same list is blocked too (patterns cannot see through a hash).
    pub fn split_blocked(&self, ids: &[Identifier]) -> (Vec<Identifier>, Vec<Identifier>) {
        let blocked_hashes: BTreeSet<Identifier> = ids
            .iter()
            .filter(|id| id.kind.hashed_form().is_some() && self.is_blocked(id))
            .map(|id| id.hashed())
            .collect();
        ids.iter().cloned().partition(|id| !(self.is_blocked(id) || blocked_hashes.contains(id)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_compile_once_and_errors_are_never_cached() {
        let a = compile_pattern("^tributary-rules-test-[0-9]+$").unwrap();
        let b = compile_pattern("^tributary-rules-test-[0-9]+$").unwrap();
        assert_eq!(a.as_str(), b.as_str());
        assert!(b.is_match("tributary-rules-test-42") && !b.is_match("tributary-rules-test-x"));
        for _ in 0..2 {
            let err = compile_pattern("([unclosed").unwrap_err();
            assert!(err.contains("unclosed"), "{err}");
        }
        let over = "a{1000}{1000}{1000}";
        assert!(compile_pattern(over).is_err(), "the size limit still applies");
        assert!(COMPILED.lock().unwrap().len() <= COMPILED_MAX);
    }
}
