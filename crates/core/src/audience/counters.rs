//! Per-profile event counters: how many events of each counted kind a profile performed on each UTC day.
//!
//! Only the counter keys that configured audiences use are counted ([`super::AudienceSet::counter_keys`]), and
//! each key keeps only the days its longest window can still see, so the profile item stays small. The flip side:
//! a condition added to the config counts from the time it is deployed; events before that are not counted.
//!
//! Stored in the profile document as `{"<key>": {"<day number>": n}}`, e.g.
//! `{"Order Completed#a1b2c3d4": {"20100": 2, "20103": 1}}`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Milliseconds in a UTC day: day numbers are `ms.div_euclid(DAY_MS)`.
pub const DAY_MS: i64 = 86_400_000;

/// A suggested `max_keys` for [`EventCounters::record`]: the most counter keys one profile holds. A profile item
/// is at most 400 KB in DynamoDB; 100 keys over a year of daily counts stays well inside it for real traffic.
pub const MAX_COUNTER_KEYS: usize = 100;

/// The UTC day number of an instant in epoch milliseconds.
pub fn day_of(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS)
}

/// The day an event is counted on: its event time's UTC day, but never after the processing day, so a client with
/// a clock in the future can neither prune the counters early nor put counts in days no window has reached.
pub fn event_day(event_ms: i64, processing_ms: i64) -> i64 {
    day_of(event_ms.min(processing_ms))
}

/// Counter key → UTC day number → events counted that day.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventCounters(BTreeMap<String, BTreeMap<i64, u64>>);

impl EventCounters {
    pub fn new() -> Self {
        EventCounters::default()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Keys currently held.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// Counts one event of `key` on `day`. First drops, for every key, the days more than `keep_days` before `day`
    /// (no window ending on `day` or the day before can see them), and keys left without days. A key not yet held
    /// is refused when `max_keys` keys are already held: then nothing is counted and the answer is `false`, for the
    /// caller to count as an overflow.
    pub fn record(&mut self, key: &str, day: i64, keep_days: i64, max_keys: usize) -> bool {
        let oldest = day.saturating_sub(keep_days.max(1));
        self.0.retain(|_, days| {
            days.retain(|d, n| *d >= oldest && *n > 0);
            !days.is_empty()
        });
        if !self.0.contains_key(key) && self.0.len() >= max_keys {
            return false;
        }
        let n = self.0.entry(key.to_string()).or_default().entry(day).or_insert(0);
        *n = n.saturating_add(1);
        true
    }

    /// Events of `key` counted from `from_day` to `to_day`, both included.
    pub fn count(&self, key: &str, from_day: i64, to_day: i64) -> u64 {
        if from_day > to_day {
            return 0;
        }
        self.0.get(key).map_or(0, |days| days.range(from_day..=to_day).fold(0u64, |sum, (_, n)| sum.saturating_add(*n)))
    }

    /// The days of `key` with their counts, oldest first.
    pub fn days(&self, key: &str) -> impl Iterator<Item = (i64, u64)> + '_ {
        self.0.get(key).into_iter().flat_map(|days| days.iter().map(|(d, n)| (*d, *n)))
    }

    /// Keeps only the keys for which `keep` holds: drops the counters of conditions no longer configured, so they
    /// do not hold places under `max_keys`.
    pub fn retain_keys(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.0.retain(|k, _| keep(k));
    }

    /// Adds `other`'s counts (a merged profile's) to these. Keys past `max_keys` are left out; the answer is how
    /// many were.
    pub fn merge(&mut self, other: &EventCounters, max_keys: usize) -> usize {
        let mut refused = 0;
        for (key, days) in &other.0 {
            if !self.0.contains_key(key) && self.0.len() >= max_keys {
                refused += 1;
                continue;
            }
            let mine = self.0.entry(key.clone()).or_default();
            for (day, n) in days {
                let sum = mine.entry(*day).or_insert(0);
                *sum = sum.saturating_add(*n);
            }
        }
        refused
    }
}
