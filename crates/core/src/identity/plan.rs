//! Merge planning against a snapshot of the stored graph: the pure step of the stitch function.
//!
//! The stitcher reads, for one event, the profile each identifier points to (followed to its root) and the roots'
//! counts; [`plan`] decides what to link, what to merge and what to refuse; the stitcher writes that as one
//! conditional transaction and, if any condition fails (another worker got there first), reads again and re-plans.
//! The decision rules are those of [`super::model`] (see its documentation), plus the per-profile bounds on merged
//! profiles and identifiers, and a bound on identifiers per event so one transaction always fits.

use std::collections::BTreeMap;

use super::identifier::{IdType, Identifier};
use super::rules::CompiledRules;

/// Most identifiers of one event that take part in resolution (highest priority first); the rest are refused
/// as [`Refused::TooManyIdentifiers`]. Bounds the transaction: every identifier costs at most three operations.
pub const MAX_EVENT_IDENTIFIERS: usize = 24;

/// What the planner needs to know about a root profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootInfo {
    /// Creation (ingest) time in ms; the oldest root survives a merge, ties broken by id.
    pub created_at: i64,
    /// Identifiers per type over the profile and its members.
    pub counts: BTreeMap<IdType, u32>,
    /// Profiles already merged into it.
    pub members: u32,
}

impl RootInfo {
    fn total(&self) -> u64 {
        self.counts.values().map(|&n| u64::from(n)).sum()
    }
}

/// Per-profile bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub max_merges: u32,
    pub max_identities: u32,
}

/// The stored graph as the event sees it.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Root profile of each identifier that is already linked.
    pub linked: BTreeMap<Identifier, String>,
    /// Every root named in `linked`.
    pub roots: BTreeMap<String, RootInfo>,
}

/// Why a link was not made.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Refused {
    /// The profile already holds `max_per_profile` values of this type.
    LimitExceeded { kind: String },
    /// The identifier belongs to `other`, and merging it would exceed the limit of `kind`.
    MergeRefused { other: String, kind: String },
    /// Merging `other` would exceed the bound on merged profiles.
    MergeLimit { other: String },
    /// The link (or merging `other`) would exceed the bound on identifiers per profile.
    IdentityLimit { other: Option<String> },
    /// The event carried more than [`MAX_EVENT_IDENTIFIERS`] usable identifiers.
    TooManyIdentifiers,
}

impl Refused {
    /// Stable reason name, as stored in refusal records.
    pub fn reason(&self) -> &'static str {
        match self {
            Refused::LimitExceeded { .. } => "limit_exceeded",
            Refused::MergeRefused { .. } => "merge_refused",
            Refused::MergeLimit { .. } => "merge_limit",
            Refused::IdentityLimit { .. } => "identity_limit",
            Refused::TooManyIdentifiers => "too_many_identifiers",
        }
    }
}

/// The profile an event attaches to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Existing(String),
    New,
}

/// What to write for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub target: Target,
    /// Roots merged into the target, oldest first, each with the identifier that brought it in.
    pub losers: Vec<(String, Identifier)>,
    /// Identifiers to link to the target, in priority order.
    pub new_ids: Vec<Identifier>,
    pub refused: Vec<(Identifier, Refused)>,
    /// Identifiers dropped as blocked values.
    pub blocked: Vec<Identifier>,
}

/// Plans one event with identifiers `ids` (extraction order) against `snapshot`. `None` when no identifier is
/// usable: the event belongs to no profile.
pub fn plan(ids: &[Identifier], rules: &CompiledRules, bounds: Bounds, snapshot: &Snapshot) -> Option<Plan> {
    let mut unique: Vec<Identifier> = Vec::with_capacity(ids.len());
    for id in ids {
        if !unique.contains(id) {
            unique.push(id.clone());
        }
    }
    let (usable, blocked) = rules.split_blocked(&unique);
    let mut order: Vec<(u32, usize)> = usable.iter().enumerate().map(|(i, id)| (rules.priority(&id.kind), i)).collect();
    order.sort();

    let mut group: Vec<(String, Identifier)> = Vec::new();
    let mut counts: BTreeMap<IdType, u32> = BTreeMap::new();
    let mut total: u64 = 0;
    let mut profiles: u64 = 0; // profiles in the group, members included
    let mut new_ids: Vec<Identifier> = Vec::new();
    let mut refused: Vec<(Identifier, Refused)> = Vec::new();
    for (n, (_, i)) in order.into_iter().enumerate() {
        let id = &usable[i];
        if n >= MAX_EVENT_IDENTIFIERS {
            refused.push((id.clone(), Refused::TooManyIdentifiers));
            continue;
        }
        match snapshot.linked.get(id) {
            Some(root) => {
                if group.iter().any(|(p, _)| p == root) {
                    continue;
                }
                let Some(info) = snapshot.roots.get(root) else {
                    // The stitcher always provides linked roots; an incomplete snapshot must not merge blindly.
                    refused.push((id.clone(), Refused::IdentityLimit { other: Some(root.clone()) }));
                    continue;
                };
                let conflict = info.counts.iter().find(|(k, n)| {
                    let ours = counts.get(*k).copied().unwrap_or(0);
                    ours > 0 && ours + **n > rules.max_per_profile(k)
                });
                if let Some((k, _)) = conflict {
                    let kind = k.name().into_owned();
                    refused.push((id.clone(), Refused::MergeRefused { other: root.clone(), kind }));
                } else if !group.is_empty() && profiles + u64::from(info.members) + 1 > u64::from(bounds.max_merges) + 1
                {
                    refused.push((id.clone(), Refused::MergeLimit { other: root.clone() }));
                } else if !group.is_empty() && total + info.total() > u64::from(bounds.max_identities) {
                    refused.push((id.clone(), Refused::IdentityLimit { other: Some(root.clone()) }));
                } else {
                    for (k, n) in &info.counts {
                        *counts.entry(k.clone()).or_default() += n;
                    }
                    total += info.total();
                    profiles += u64::from(info.members) + 1;
                    group.push((root.clone(), id.clone()));
                }
            }
            None => {
                let n = counts.entry(id.kind.clone()).or_default();
                if *n >= rules.max_per_profile(&id.kind) {
                    refused.push((id.clone(), Refused::LimitExceeded { kind: id.kind.name().into_owned() }));
                } else if total + 1 > u64::from(bounds.max_identities) {
                    refused.push((id.clone(), Refused::IdentityLimit { other: None }));
                } else {
                    *n += 1;
                    total += 1;
                    new_ids.push(id.clone());
                }
            }
        }
    }

    if group.is_empty() && new_ids.is_empty() {
        return None;
    }
    let survivor = group
        .iter()
        .map(|(p, _)| p)
        .min_by_key(|p| (snapshot.roots.get(*p).map(|r| r.created_at).unwrap_or(i64::MAX), (*p).clone()))
        .cloned();
    let target = match &survivor {
        Some(s) => Target::Existing(s.clone()),
        None => Target::New,
    };
    let mut losers: Vec<(String, Identifier)> =
        group.into_iter().filter(|(p, _)| Some(p) != survivor.as_ref()).collect();
    losers.sort_by_key(|(p, _)| (snapshot.roots.get(p).map(|r| r.created_at).unwrap_or(i64::MAX), p.clone()));
    Some(Plan { target, losers, new_ids, refused, blocked })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::IdentityRules;

    fn id(kind: IdType, v: &str) -> Identifier {
        Identifier::new(kind, v, None).expect("valid identifier")
    }

    fn root(created_at: i64, counts: &[(IdType, u32)], members: u32) -> RootInfo {
        RootInfo { created_at, counts: counts.iter().cloned().collect(), members }
    }

    const BOUNDS: Bounds = Bounds { max_merges: 100, max_identities: 1_000 };

    fn rules() -> CompiledRules {
        IdentityRules::default().compile().expect("default rules compile")
    }

    #[test]
    fn unknown_identifiers_make_a_new_profile_and_blocked_ones_are_dropped() {
        let ids = [id(IdType::UserId, "u1"), id(IdType::AnonymousId, "anonymous"), id(IdType::AnonymousId, "a1")];
        let p = plan(&ids, &rules(), BOUNDS, &Snapshot::default()).expect("a plan");
        assert_eq!(p.target, Target::New);
        assert_eq!(p.new_ids, vec![ids[0].clone(), ids[2].clone()]);
        assert_eq!(p.blocked, vec![ids[1].clone()]);
        assert!(p.losers.is_empty() && p.refused.is_empty());
        assert!(plan(&[id(IdType::UserId, "null")], &rules(), BOUNDS, &Snapshot::default()).is_none());
    }

    #[test]
    fn two_roots_merge_into_the_oldest_and_new_ids_link_to_it() {
        let (u, a, e) = (id(IdType::UserId, "u1"), id(IdType::AnonymousId, "a1"), id(IdType::Email, "x@y.co"));
        let mut snap = Snapshot::default();
        snap.linked.insert(u.clone(), "young".into());
        snap.linked.insert(a.clone(), "old".into());
        snap.roots.insert("young".into(), root(20, &[(IdType::UserId, 1)], 0));
        snap.roots.insert("old".into(), root(10, &[(IdType::AnonymousId, 1)], 3));
        let p = plan(&[u.clone(), a.clone(), e.clone()], &rules(), BOUNDS, &snap).expect("a plan");
        assert_eq!(p.target, Target::Existing("old".into()));
        assert_eq!(p.losers, vec![("young".to_string(), u)]);
        assert_eq!(p.new_ids, vec![e]);
    }

    #[test]
    fn a_second_user_id_is_refused_and_the_event_stays_with_the_higher_priority_match() {
        // Shared device: anonymous a1 already belongs to user u1's profile; u2 logs in on it.
        let (u2, a) = (id(IdType::UserId, "u2"), id(IdType::AnonymousId, "a1"));
        let mut snap = Snapshot::default();
        snap.linked.insert(a.clone(), "p1".into());
        snap.roots.insert("p1".into(), root(1, &[(IdType::UserId, 1), (IdType::AnonymousId, 1)], 0));
        let p = plan(&[u2.clone(), a.clone()], &rules(), BOUNDS, &snap).expect("a plan");
        assert_eq!(p.target, Target::New);
        assert_eq!(p.new_ids, vec![u2]);
        assert_eq!(p.refused, vec![(a, Refused::MergeRefused { other: "p1".into(), kind: "user_id".into() })]);
    }

    #[test]
    fn merge_and_identity_bounds_are_refused_not_exceeded() {
        let (u, a) = (id(IdType::UserId, "u1"), id(IdType::AnonymousId, "a1"));
        let mut snap = Snapshot::default();
        snap.linked.insert(u.clone(), "p1".into());
        snap.linked.insert(a.clone(), "p2".into());
        snap.roots.insert("p1".into(), root(1, &[(IdType::UserId, 1)], 60));
        snap.roots.insert("p2".into(), root(2, &[(IdType::AnonymousId, 1)], 40));
        let p = plan(&[u.clone(), a.clone()], &rules(), BOUNDS, &snap).expect("a plan");
        assert_eq!(p.refused, vec![(a.clone(), Refused::MergeLimit { other: "p2".into() })]);
        assert_eq!(p.target, Target::Existing("p1".into()));

        snap.roots.insert("p2".into(), root(2, &[(IdType::AnonymousId, 1)], 39));
        let p = plan(&[u.clone(), a.clone()], &rules(), BOUNDS, &snap).expect("a plan");
        assert_eq!(p.losers.len(), 1, "60 + 39 + 1 merged profiles is exactly the bound");

        let tight = Bounds { max_merges: 100, max_identities: 2 };
        snap.roots.insert("p1".into(), root(1, &[(IdType::UserId, 1), (IdType::DeviceId, 1)], 0));
        let p = plan(&[u.clone(), a.clone()], &rules(), tight, &snap).expect("a plan");
        assert_eq!(p.refused, vec![(a, Refused::IdentityLimit { other: Some("p2".into()) })]);
        let e = id(IdType::Email, "a@b.co");
        let p = plan(&[u, e.clone()], &rules(), tight, &snap).expect("a plan");
        assert_eq!(p.refused, vec![(e, Refused::IdentityLimit { other: None })]);
    }

    #[test]
    fn per_type_limits_and_the_per_event_bound_refuse_the_rest() {
        let anons: Vec<Identifier> = (0..7).map(|i| id(IdType::AnonymousId, &format!("a{i}"))).collect();
        let p = plan(&anons, &rules(), BOUNDS, &Snapshot::default()).expect("a plan");
        assert_eq!(p.new_ids.len(), 5);
        assert_eq!(p.refused.len(), 2);
        assert!(p.refused.iter().all(|(_, r)| r == &Refused::LimitExceeded { kind: "anonymous_id".into() }));

        let externals: Vec<Identifier> =
            (0..30).map(|i| id(IdType::External(format!("t{i}")), &format!("v{i}"))).collect();
        let p = plan(&externals, &rules(), BOUNDS, &Snapshot::default()).expect("a plan");
        assert_eq!(p.new_ids.len(), MAX_EVENT_IDENTIFIERS);
        assert_eq!(p.refused.iter().filter(|(_, r)| r == &Refused::TooManyIdentifiers).count(), 6);
    }
}
