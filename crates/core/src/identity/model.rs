//! The reference model of identity resolution: a plain in-memory union-find applying [`CompiledRules`]. The real
//! stores (DynamoDB, SQLite) are tested against it, so it favours obviousness over speed.
//!
//! ## Matching (Segment-style flat matching with priority trust)
//!
//! For one event, after blocked identifiers are dropped ([`CompiledRules::split_blocked`]), the identifiers are taken
//! in priority order (1 first; ties keep the event's order, which [`super::extract`] fixes) and each is *trusted* or
//! *refused* against a growing candidate profile:
//!
//! - an identifier already linked to a profile brings that whole profile into the candidate, unless the union would
//!   hold more values of some type than its `max_per_profile` (e.g. two user ids): then the identifier is refused
//!   (it stays on its own profile; this event does not link it) and a [`RefusalReason::MergeRefused`] is recorded;
//! - an identifier not linked yet is added, unless its type is already at its maximum in the candidate: then it is
//!   refused ([`RefusalReason::LimitExceeded`]).
//!
//! Then: no profile in the candidate → a new profile with the trusted identifiers; one → the new identifiers are
//! linked to it; several → they are merged into the oldest (smallest creation `event_seq`, then creation order),
//! the others get `merged_into` (union-find parent) and the new identifiers are linked to the survivor. The event
//! belongs to the resulting profile. Refusals are recorded on it.
//!
//! So the event always attaches to the profile of its highest-priority identifier. In the shared-device case
//! (`{user_id B, anonymous_id X}` where X already belongs to user A's profile) user B's id is trusted first, X would
//! bring a second user id and is refused: B gets a profile of its own and X stays with A.
//!
//! ## Order dependence
//!
//! While no limit is hit, the partition is the connected components of "appeared in the same event", which does not
//! depend on the order events are applied in (tested). It does depend on order when a limit is hit, as in Segment:
//!
//! - a shared identifier (family device, shared anonymousId) stays with the user who was seen with it *first*;
//! - the first `max_per_profile` values of a type linked to a profile win, later ones are refused;
//! - whether two profiles can merge depends on what each holds at that moment, so a refused merge may have
//!   succeeded had an event with a limiting identifier come later;
//! - which profile survives a merge (the oldest) and profile ids depend on order, never the partition by itself.
//!
//! Comparisons of a real store with this model under shuffled or concurrent delivery must therefore either avoid
//! limit conflicts in the generated data, or compare with the model applied in the order the store committed.

use std::collections::{BTreeMap, BTreeSet};

use super::identifier::{IdType, Identifier};
use super::rules::CompiledRules;

/// A profile of the reference graph (its creation index). Merged profiles keep their id and point to a survivor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProfileId(pub usize);

/// Why an identifier of an event was not linked.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum RefusalReason {
    /// The profile already holds `max_per_profile` values of this type.
    LimitExceeded { kind: IdType },
    /// The identifier belongs to `other`, and merging `other` in would exceed the limit of `kind`.
    MergeRefused { other: ProfileId, kind: IdType },
}

/// A link that was not made, recorded on the profile the event attached to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Refusal {
    pub event_seq: u64,
    pub identifier: Identifier,
    pub reason: RefusalReason,
}

/// What one [`ReferenceGraph::apply`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The profile the event belongs to; `None` when it had no usable identifier.
    pub profile: Option<ProfileId>,
    /// Whether that profile was created by this event.
    pub created: bool,
    /// Identifiers newly linked to the profile.
    pub linked: Vec<Identifier>,
    /// Profiles merged into `profile` by this event, oldest first.
    pub merged: Vec<ProfileId>,
    /// Identifiers dropped as blocked values.
    pub blocked: Vec<Identifier>,
    /// Links not made because of a limit.
    pub refused: Vec<Refusal>,
}

#[derive(Debug, Clone)]
struct Profile {
    created_seq: u64,
    parent: usize,
    /// Only meaningful on a root: every identifier of the profile and the profiles merged into it.
    ids: BTreeSet<Identifier>,
    refusals: Vec<Refusal>,
}

/// In-memory identity graph: identifier → profile, profile → `merged_into` (union-find with path compression).
#[derive(Debug, Clone)]
pub struct ReferenceGraph {
    rules: CompiledRules,
    profiles: Vec<Profile>,
    index: BTreeMap<Identifier, usize>,
}

impl ReferenceGraph {
    pub fn new(rules: CompiledRules) -> ReferenceGraph {
        ReferenceGraph { rules, profiles: Vec::new(), index: BTreeMap::new() }
    }

    pub fn rules(&self) -> &CompiledRules {
        &self.rules
    }

    /// Applies one event's identifiers (see the module documentation). `event_seq` orders profiles by age and is
    /// recorded with refusals; duplicates in `ids` are ignored.
    pub fn apply(&mut self, event_seq: u64, ids: &[Identifier]) -> Outcome {
        let mut unique: Vec<Identifier> = Vec::with_capacity(ids.len());
        for id in ids {
            if !unique.contains(id) {
                unique.push(id.clone());
            }
        }
        let (usable, blocked) = self.rules.split_blocked(&unique);
        let mut order: Vec<(u32, usize)> =
            usable.iter().enumerate().map(|(i, id)| (self.rules.priority(&id.kind), i)).collect();
        order.sort();

        let mut group: Vec<usize> = Vec::new();
        let mut counts: BTreeMap<IdType, u32> = BTreeMap::new();
        let mut new_ids: Vec<Identifier> = Vec::new();
        let mut refused: Vec<Refusal> = Vec::new();
        for (_, i) in order {
            let id = &usable[i];
            match self.index.get(id).copied() {
                Some(p) => {
                    let root = self.find(p);
                    if group.contains(&root) {
                        continue;
                    }
                    let theirs = type_counts(&self.profiles[root].ids);
                    let conflict = theirs.iter().find(|(kind, n)| {
                        let ours = counts.get(*kind).copied().unwrap_or(0);
                        ours > 0 && ours + **n > self.rules.max_per_profile(kind)
                    });
                    match conflict {
                        Some((kind, _)) => refused.push(Refusal {
                            event_seq,
                            identifier: id.clone(),
                            reason: RefusalReason::MergeRefused { other: ProfileId(root), kind: kind.clone() },
                        }),
                        None => {
                            for (kind, n) in theirs {
                                *counts.entry(kind).or_default() += n;
                            }
                            group.push(root);
                        }
                    }
                }
                None => {
                    let n = counts.entry(id.kind.clone()).or_default();
                    if *n < self.rules.max_per_profile(&id.kind) {
                        *n += 1;
                        new_ids.push(id.clone());
                    } else {
                        refused.push(Refusal {
                            event_seq,
                            identifier: id.clone(),
                            reason: RefusalReason::LimitExceeded { kind: id.kind.clone() },
                        });
                    }
                }
            }
        }

        let mut outcome = Outcome { blocked, ..Outcome::default() };
        if group.is_empty() && new_ids.is_empty() {
            return outcome;
        }
        let survivor = match group.iter().copied().min_by_key(|&p| (self.profiles[p].created_seq, p)) {
            Some(oldest) => oldest,
            None => {
                self.profiles.push(Profile {
                    created_seq: event_seq,
                    parent: self.profiles.len(),
                    ids: BTreeSet::new(),
                    refusals: Vec::new(),
                });
                outcome.created = true;
                self.profiles.len() - 1
            }
        };
        let mut losers: Vec<usize> = group.into_iter().filter(|&p| p != survivor).collect();
        losers.sort_by_key(|&p| (self.profiles[p].created_seq, p));
        for loser in &losers {
            let ids = std::mem::take(&mut self.profiles[*loser].ids);
            let refusals = std::mem::take(&mut self.profiles[*loser].refusals);
            self.profiles[*loser].parent = survivor;
            self.profiles[survivor].ids.extend(ids);
            self.profiles[survivor].refusals.extend(refusals);
        }
        for id in &new_ids {
            self.index.insert(id.clone(), survivor);
            self.profiles[survivor].ids.insert(id.clone());
        }
        self.profiles[survivor].refusals.extend(refused.iter().cloned());
        outcome.profile = Some(ProfileId(survivor));
        outcome.linked = new_ids;
        outcome.merged = losers.into_iter().map(ProfileId).collect();
        outcome.refused = refused;
        outcome
    }

    /// The root of `p`, compressing the path on the way.
    fn find(&mut self, p: usize) -> usize {
        let root = self.root(p);
        let mut p = p;
        while p != root {
            let next = self.profiles[p].parent;
            self.profiles[p].parent = root;
            p = next;
        }
        root
    }

    fn root(&self, mut p: usize) -> usize {
        while self.profiles[p].parent != p {
            p = self.profiles[p].parent;
        }
        p
    }

    /// The current profile of an identifier, following merges.
    pub fn profile_of(&self, id: &Identifier) -> Option<ProfileId> {
        self.index.get(id).map(|&p| ProfileId(self.root(p)))
    }

    /// The profile `p` was merged into, or `p` itself.
    pub fn resolve(&self, p: ProfileId) -> Option<ProfileId> {
        (p.0 < self.profiles.len()).then(|| ProfileId(self.root(p.0)))
    }

    /// Every identifier of the (resolved) profile.
    pub fn identifiers(&self, p: ProfileId) -> Option<&BTreeSet<Identifier>> {
        self.resolve(p).map(|r| &self.profiles[r.0].ids)
    }

    /// Links refused on the (resolved) profile, including those of profiles merged into it.
    pub fn refusals(&self, p: ProfileId) -> &[Refusal] {
        self.resolve(p).map(|r| self.profiles[r.0].refusals.as_slice()).unwrap_or(&[])
    }

    /// The `event_seq` that created the profile.
    pub fn created_seq(&self, p: ProfileId) -> Option<u64> {
        self.profiles.get(p.0).map(|profile| profile.created_seq)
    }

    /// The identifier sets of the live (not merged) profiles, sorted: a canonical form for comparing partitions.
    pub fn partition(&self) -> Vec<BTreeSet<Identifier>> {
        let mut out: Vec<BTreeSet<Identifier>> = (0..self.profiles.len())
            .filter(|&p| self.profiles[p].parent == p && !self.profiles[p].ids.is_empty())
            .map(|p| self.profiles[p].ids.clone())
            .collect();
        out.sort();
        out
    }
}

fn type_counts(ids: &BTreeSet<Identifier>) -> BTreeMap<IdType, u32> {
    let mut counts = BTreeMap::new();
    for id in ids {
        *counts.entry(id.kind.clone()).or_default() += 1;
    }
    counts
}
