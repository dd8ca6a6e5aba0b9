//! The pheromone cap of a namespace, kept per owner set: feedback past `max_pheromones` drops
//! the weakest pheromones of records with the same owners (user tokens) as the records it
//! reinforced, never those of other owners.
//!
//! Why per owner set: a namespace holds the pheromones of every principal's records. With one
//! cap over all of them, Bob's feedback on his own private records dropped the weakest of the
//! namespace, Alice's private ones included: he could wipe her ranking signals and, watching
//! his own pheromones survive or go, learn that she had some and how strong they were. Whoever
//! can reinforce a record of an owner set sees every record of that set (a request speaking
//! for one of the owners, `user_match: "any"`), so within one set the cap shows and changes
//! nothing its callers could not see already; the tenant-shared records (no owners) are one set
//! that every caller shares by design. The memory the cap bounds is then per owner set: at
//! most one pheromone per record, and `max_pheromones` per set.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use strata_store::codec::StoredPheromone;
use strata_types::{Millis, RecordId, UserToken};

use crate::adaptive::{AdaptiveConfig, Namespace};

/// A record's owners as the cap groups them: its user tokens, sorted, without repeats (none
/// for a tenant-shared record).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Owners(Arc<[UserToken]>);

impl Owners {
    pub(crate) fn of(tokens: &[UserToken]) -> Owners {
        let mut sorted = tokens.to_vec();
        sorted.sort();
        sorted.dedup();
        Owners(sorted.into())
    }

    /// Estimated heap bytes: the token list (the names' own allocations are shared with the
    /// namespace's other entries only by chance, so they are counted).
    pub(crate) fn heap_bytes(&self) -> usize {
        16 + self
            .0
            .iter()
            .map(|t| std::mem::size_of::<UserToken>() + t.heap_bytes())
            .sum::<usize>()
    }
}

/// One owner set that feedback wrote to: how many pheromones it holds with the feedback's,
/// and its older ones (with their strength now), which may go.
#[derive(Default)]
struct SetCount<'a> {
    total: usize,
    older: Vec<(f64, &'a RecordId)>,
}

/// Pheromones to drop after feedback wrote `written` (each with its record's owners in
/// `owners`), so that no owner set it wrote to holds more than `max_pheromones`: the weakest
/// now of that set, of those not just written (ties by id, so every copy of the state picks
/// the same). Pheromones of other owner sets are never dropped, nor counted.
pub(crate) fn weakest_beyond_cap(
    ns: &Namespace,
    written: &BTreeMap<RecordId, StoredPheromone>,
    owners: &HashMap<RecordId, Owners>,
    cfg: &AdaptiveConfig,
    now: Millis,
) -> Vec<RecordId> {
    let new = written
        .keys()
        .filter(|id| !ns.pheromones.contains_key(*id))
        .count();
    // No set can be over the cap while the whole namespace is not.
    if ns.pheromones.len() + new <= cfg.max_pheromones {
        return Vec::new();
    }
    let mut sets: HashMap<&Owners, SetCount<'_>> = HashMap::new();
    for id in written.keys() {
        if let Some(o) = owners.get(id) {
            sets.entry(o).or_default().total += 1;
        }
    }
    for (id, o) in &ns.owners {
        if written.contains_key(id) {
            continue;
        }
        if let (Some(set), Some(p)) = (sets.get_mut(o), ns.pheromones.get(id)) {
            set.total += 1;
            set.older.push((cfg.strength_at(p, now), id));
        }
    }
    let mut dropped = Vec::new();
    for SetCount { total, mut older } in sets.into_values() {
        if total <= cfg.max_pheromones {
            continue;
        }
        older.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(b.1)));
        dropped.extend(
            older
                .into_iter()
                .take(total - cfg.max_pheromones)
                .map(|(_, id)| id.clone()),
        );
    }
    dropped.sort();
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(s: &str) -> RecordId {
        RecordId::parse(s).unwrap()
    }

    fn owners(list: &[&str]) -> Owners {
        let tokens: Vec<UserToken> = list.iter().map(|t| UserToken::parse(*t).unwrap()).collect();
        Owners::of(&tokens)
    }

    fn pheromone(strength: f64) -> StoredPheromone {
        StoredPheromone {
            strength,
            updated_at: 0,
            reinforcements: 1,
            exposures: 0,
        }
    }

    fn cfg(cap: usize) -> AdaptiveConfig {
        AdaptiveConfig {
            max_pheromones: cap,
            half_life_secs: 1e9,
            ..AdaptiveConfig::default()
        }
    }

    #[test]
    fn owners_are_a_set() {
        assert_eq!(owners(&["u:b", "u:a", "u:b"]), owners(&["u:a", "u:b"]));
        assert_ne!(owners(&["u:a"]), owners(&["u:a", "u:b"]));
        assert_ne!(owners(&[]), owners(&["u:a"]));
    }

    proptest! {
        /// Against a model: a namespace of pheromones in three owner sets and one feedback
        /// writing to some of them. Nothing of a set the feedback did not write to is dropped;
        /// each set written to ends at most at the cap (or at what the feedback itself wrote),
        /// and what goes is that set's weakest older ones.
        #[test]
        fn only_the_sets_written_to_lose_their_weakest(
            old in proptest::collection::vec((0usize..3, 1u32..50), 0..24),
            new in proptest::collection::vec((0usize..3, 1u32..50), 1..6),
            cap in 1usize..8,
        ) {
            let sets = [owners(&["u:alice"]), owners(&["u:bob"]), owners(&[])];
            let mut ns = Namespace::default();
            for (i, (set, strength)) in old.iter().enumerate() {
                let rid = id(&format!("old{i}"));
                ns.pheromones.insert(rid.clone(), pheromone(f64::from(*strength)));
                ns.owners.insert(rid, sets[*set].clone());
            }
            let mut written = BTreeMap::new();
            let mut written_owners = HashMap::new();
            for (i, (set, strength)) in new.iter().enumerate() {
                let rid = id(&format!("new{i}"));
                written.insert(rid.clone(), pheromone(f64::from(*strength)));
                written_owners.insert(rid, sets[*set].clone());
            }
            let dropped = weakest_beyond_cap(&ns, &written, &written_owners, &cfg(cap), 0);
            for (s, set) in sets.iter().enumerate() {
                let wrote = new.iter().filter(|(w, _)| *w == s).count();
                let mut olds: Vec<(u32, RecordId)> = old
                    .iter()
                    .enumerate()
                    .filter(|(_, (o, _))| *o == s)
                    .map(|(i, (_, st))| (*st, id(&format!("old{i}"))))
                    .collect();
                olds.sort();
                let gone: Vec<&RecordId> = dropped
                    .iter()
                    .filter(|d| ns.owners.get(*d) == Some(set))
                    .collect();
                let expect = if wrote == 0 {
                    0
                } else {
                    (olds.len() + wrote).saturating_sub(cap).min(olds.len())
                };
                prop_assert_eq!(gone.len(), expect, "set {}", s);
                let weakest: Vec<&RecordId> = olds.iter().take(expect).map(|(_, r)| r).collect();
                let mut gone_sorted = gone.clone();
                gone_sorted.sort();
                let mut weakest_sorted = weakest.clone();
                weakest_sorted.sort();
                prop_assert_eq!(gone_sorted, weakest_sorted);
            }
            prop_assert!(dropped.iter().all(|d| !written.contains_key(d)));
        }
    }
}
