//! Where audience memberships live in the profile table, next to the profile they belong to.
//!
//! | item | pk | sk | attributes |
//! |---|---|---|---|
//! | memberships of a profile | `p#<profile>` | `aud` | [`Membership`] |
//! | a profile due for re-evaluation | `aud#due#<shard>` | `<due ms, 13 digits>#<profile>` | none |
//! | the refresh's own state | `aud#run` | `state` | lease, full-pass progress, config fingerprint |
//!
//! Memberships sit in the profile's partition so the profile API reads them with the profile, and erasing the
//! partition erases them. The due items let a scheduled run find the few profiles whose membership may change with
//! time alone (a count leaving its window) by reading a short, time-ordered range instead of every profile; they
//! are spread over shards so no single partition takes every write.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ports::ItemKey;
use crate::profile::layout::profile_pk;

/// Sort key of a profile's membership item.
pub const MEMBERSHIP_SK: &str = "aud";
/// Partition-key prefix of due items; the shard number follows.
pub const DUE_PREFIX: &str = "aud#due#";
/// Shards of the due items.
pub const DUE_SHARDS: u32 = 16;
/// Key of the refresh's state item.
pub const RUN_PK: &str = "aud#run";
pub const RUN_SK: &str = "state";

/// A profile's audiences: which it is in, since when, and when time alone may change that.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// Audience id → when the profile entered it (ms).
    #[serde(default)]
    pub members: BTreeMap<String, i64>,
    /// The earliest time (ms) at which a membership may change without new data; it has a due item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recheck_at: Option<i64>,
    /// Bumped on every change; names the enter/exit events of that change, so a retried run sends the same ids.
    #[serde(default)]
    pub seq: u64,
}

impl Membership {
    pub fn to_attrs(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        }
    }

    pub fn from_attrs(attrs: &Map<String, Value>) -> Result<Membership, serde_json::Error> {
        serde_json::from_value(Value::Object(attrs.clone()))
    }
}

/// Key of a profile's membership item.
pub fn membership_key(profile: &str) -> ItemKey {
    ItemKey::new(profile_pk(profile), MEMBERSHIP_SK)
}

/// The due shard of a profile: stable, spread evenly.
pub fn due_shard(profile: &str) -> u32 {
    let digest = crate::sha256_hex(profile.as_bytes());
    u32::from_str_radix(&digest[..8], 16).unwrap_or(0) % DUE_SHARDS
}

/// Partition key of due shard `shard`.
pub fn due_pk(shard: u32) -> String {
    format!("{DUE_PREFIX}{shard}")
}

/// Key of the due item of `profile` at `at_ms`. Sort keys order by due time.
pub fn due_key(profile: &str, at_ms: i64) -> ItemKey {
    ItemKey::new(due_pk(due_shard(profile)), format!("{:013}#{profile}", at_ms.clamp(0, 9_999_999_999_999)))
}

/// The due time and profile of a due item's sort key.
pub fn parse_due_sk(sk: &str) -> Option<(i64, &str)> {
    let (at, profile) = sk.split_once('#')?;
    if profile.is_empty() {
        return None;
    }
    Some((at.parse().ok()?, profile))
}

/// The id of one enter or exit event: a hash of the profile, the audience, the direction and the membership
/// change's sequence number, so a run that is retried after sending sends the same ids (delivery drops repeats).
pub fn transition_message_id(profile: &str, audience: &str, entered: bool, seq: u64) -> String {
    let direction = if entered { "entered" } else { "exited" };
    let digest = crate::sha256_hex(format!("audience\0{profile}\0{audience}\0{direction}\0{seq}").as_bytes());
    format!("aud-{}", &digest[..32])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_keys_sort_by_time_and_read_back() {
        let a = due_key("prof_a", 5_000);
        let b = due_key("prof_a", 40_000);
        assert_eq!(a.pk, b.pk, "one profile, one shard");
        assert!(a.sk < b.sk);
        assert_eq!(parse_due_sk(&a.sk), Some((5_000, "prof_a")));
        assert_eq!(parse_due_sk("x#prof"), None);
        assert_eq!(parse_due_sk("0000000000001#"), None);
        let shards: std::collections::BTreeSet<u32> = (0..200).map(|i| due_shard(&format!("prof_{i}"))).collect();
        assert_eq!(shards.len(), DUE_SHARDS as usize, "profiles spread over every shard");
    }

    #[test]
    fn transition_ids_name_each_change_once() {
        let id = transition_message_id("prof_a", "vip", true, 3);
        assert_eq!(id, transition_message_id("prof_a", "vip", true, 3));
        assert_ne!(id, transition_message_id("prof_a", "vip", false, 3));
        assert_ne!(id, transition_message_id("prof_a", "vip", true, 4));
        assert_ne!(id, transition_message_id("prof_b", "vip", true, 3));
        assert_eq!(id.len(), 36);
    }

    #[test]
    fn membership_round_trips() {
        let m = Membership { members: BTreeMap::from([("vip".into(), 7)]), recheck_at: Some(9), seq: 2 };
        assert_eq!(Membership::from_attrs(&m.to_attrs()).unwrap(), m);
        assert_eq!(Membership::from_attrs(&Map::new()).unwrap(), Membership::default());
    }
}
