//! Workspace settings for profiles and consent (the `profiles:` and `consent:` sections of the workspace file).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How profiles are built and bounded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ProfileSettings {
    /// How long a processed event's dedup record is kept: a re-send within this window changes nothing.
    pub dedup_window_days: u32,
    /// How long events stay in a profile's history.
    pub history_retention_days: u32,
    /// Most events kept in one profile's history per UTC day; further ones update the profile but are only
    /// counted (`overflow.history`).
    pub history_per_day: u32,
    /// Most traits one profile holds; updates to further trait names are counted (`overflow.traits`).
    pub max_traits: u32,
    /// Largest trait value, serialized JSON bytes; larger values are refused and counted.
    pub max_trait_bytes: u32,
    /// Most profiles merged into one profile.
    pub max_merges: u32,
    /// Most identifiers one profile holds, over all types.
    pub max_identities: u32,
    /// Traits that keep their earliest value (by event time) instead of the latest.
    pub set_once: Vec<String>,
    /// Country calling code for phone numbers written without `+`/`00` (e.g. `"1"`); without it they are refused.
    pub default_country_code: Option<String>,
}

impl Default for ProfileSettings {
    fn default() -> Self {
        ProfileSettings {
            dedup_window_days: 30,
            history_retention_days: 90,
            history_per_day: 1_000,
            max_traits: 300,
            max_trait_bytes: 4_096,
            max_merges: 100,
            max_identities: 1_000,
            set_once: Vec::new(),
            default_country_code: None,
        }
    }
}

impl ProfileSettings {
    /// Cross-field checks; the message names the field.
    pub fn check(&self) -> Result<(), String> {
        let positive = [
            ("dedup_window_days", self.dedup_window_days),
            ("history_retention_days", self.history_retention_days),
            ("max_traits", self.max_traits),
            ("max_trait_bytes", self.max_trait_bytes),
            ("max_identities", self.max_identities),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        if self.max_traits > 10_000 || self.max_trait_bytes > 64 * 1024 {
            return Err("max_traits is at most 10000 and max_trait_bytes at most 65536 (a profile is one item)".into());
        }
        if self.max_identities > 10_000 || self.max_merges > 1_000 {
            return Err("max_identities is at most 10000 and max_merges at most 1000".into());
        }
        if let Some(cc) = &self.default_country_code {
            if cc.is_empty() || cc.len() > 3 || !cc.bytes().all(|b| b.is_ascii_digit()) || cc.starts_with('0') {
                return Err("default_country_code must be 1–3 digits without a leading 0 (e.g. \"1\", \"44\")".into());
            }
        }
        Ok(())
    }
}

/// Consent purposes and how incoming consent signals map onto them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ConsentSettings {
    /// The workspace's purposes. A category or consent id seen in events maps to the purpose that lists it in
    /// `aliases` (case-insensitive) or whose `id` it equals; unmapped ones are kept under their own lowercased name.
    pub purposes: Vec<ConsentPurpose>,
    /// Track event names that carry a consent change (their `properties` or `context` consent object is read
    /// like any other event's; listing them only marks them as consent events in the history).
    pub update_events: Vec<String>,
}

impl Default for ConsentSettings {
    fn default() -> Self {
        ConsentSettings {
            purposes: Vec::new(),
            update_events: vec!["Segment Consent Preference Updated".to_string(), "Consent Updated".to_string()],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsentPurpose {
    /// Purpose id (`advertising`, `analytics`, …): lowercase letters, digits, `_` and `-`.
    pub id: String,
    /// Category names and consent-manager ids that mean this purpose (`Advertising`, `C0004`, …).
    #[serde(default)]
    pub aliases: Vec<String>,
}

impl ConsentSettings {
    pub fn check(&self) -> Result<(), String> {
        let mut seen = std::collections::BTreeMap::new();
        for (i, p) in self.purposes.iter().enumerate() {
            let ok = !p.id.is_empty()
                && p.id.len() <= 64
                && p.id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
            if !ok {
                return Err(format!("purposes[{i}].id must be 1–64 of a-z, 0-9, _ and -"));
            }
            for name in std::iter::once(&p.id).chain(&p.aliases) {
                let key = name.trim().to_lowercase();
                if let Some(first) = seen.insert(key, i) {
                    if first != i {
                        return Err(format!("purposes[{i}]: {name:?} already names purposes[{first}]"));
                    }
                }
            }
        }
        Ok(())
    }
}
