//! The profile change feed: stitch names the profiles an invocation changed on a queue, and the scheduled
//! audience refresh drains it to re-evaluate only those profiles.
//!
//! Why a queue and not an index item per change: a table item costs a write unit per event (more than the rest of
//! an event's delivery costs), while one queue message carries every profile a stitch invocation touched. The feed
//! is a hint, never the truth: a lost or late message only delays a change until the next full pass, which reads
//! every root profile.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::ports::OutgoingMessage;

/// Profile ids per message: at about 30 bytes each, far below SQS's 256 KiB whatever the id length.
pub const MAX_PROFILES_PER_MESSAGE: usize = 2_000;

/// The body of one change-feed message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileChanges {
    /// Always 1.
    pub v: u32,
    /// Profiles whose document changed (roots that took an event, and the profiles merged into them).
    pub profiles: Vec<String>,
}

impl ProfileChanges {
    /// The messages naming `profiles`, at most [`MAX_PROFILES_PER_MESSAGE`] each, ids `c0`, `c1`, ….
    pub fn messages(profiles: &BTreeSet<String>) -> Vec<OutgoingMessage> {
        let all: Vec<&String> = profiles.iter().collect();
        all.chunks(MAX_PROFILES_PER_MESSAGE)
            .enumerate()
            .map(|(n, chunk)| {
                let body = ProfileChanges { v: 1, profiles: chunk.iter().map(|p| p.to_string()).collect() };
                // Serializing strings into memory cannot fail.
                OutgoingMessage { id: format!("c{n}"), body: serde_json::to_string(&body).unwrap_or_default() }
            })
            .collect()
    }

    /// Reads a message body; `None` for anything that is not a change-feed message (it is dropped, not retried).
    pub fn parse(body: &str) -> Option<ProfileChanges> {
        serde_json::from_str::<ProfileChanges>(body).ok().filter(|c| c.v == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_split_and_read_back() {
        let profiles: BTreeSet<String> = (0..4_500).map(|i| format!("prof_{i:024}")).collect();
        let messages = ProfileChanges::messages(&profiles);
        assert_eq!(messages.len(), 3);
        assert_eq!(messages.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), ["c0", "c1", "c2"]);
        assert!(messages.iter().all(|m| m.body.len() < 256 * 1024));
        let back: BTreeSet<String> = messages
            .iter()
            .flat_map(|m| ProfileChanges::parse(&m.body).map(|c| c.profiles).unwrap_or_default())
            .collect();
        assert_eq!(back, profiles);
        assert!(ProfileChanges::messages(&BTreeSet::new()).is_empty());
    }

    #[test]
    fn foreign_bodies_are_not_change_messages() {
        assert_eq!(ProfileChanges::parse("{}"), None);
        assert_eq!(ProfileChanges::parse(r#"{"v":2,"profiles":[]}"#), None);
        assert_eq!(ProfileChanges::parse("not json"), None);
        assert!(ProfileChanges::parse(r#"{"v":1,"profiles":["prof_a"]}"#).is_some());
    }
}
