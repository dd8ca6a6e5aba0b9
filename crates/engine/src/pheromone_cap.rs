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

use std::collections::{BTreeMap, HashMap, HashSet};
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

    /// The tokens, as stored with a pheromone.
    pub(crate) fn tokens(&self) -> &[UserToken] {
        &self.0
    }

    /// Estimated heap bytes of one set's allocation: the token list with its reference
    /// counts, and each token's own text.
    fn heap_bytes(&self) -> usize {
        const PER_ALLOCATION: usize = 16;
        PER_ALLOCATION
            + 16
            + self
                .0
                .iter()
                .map(|t| std::mem::size_of::<UserToken>() + t.heap_bytes())
                .sum::<usize>()
    }
}

/// The owners of a namespace's pheromones, both ways: each record's set, and each set's
/// records (so the cap reads one set's members, not the whole namespace). A set is held once,
/// however many records share it.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct OwnerSets {
    of: HashMap<RecordId, Owners>,
    members: HashMap<Owners, HashSet<RecordId>>,
}

impl OwnerSets {
    /// Records `id` as owned by `owners`, moving it out of the set it was in.
    pub(crate) fn insert(&mut self, id: RecordId, owners: Owners) {
        if self.of.get(&id) == Some(&owners) {
            return;
        }
        self.remove(&id);
        // The set's one shared copy, when another record holds it already.
        let owners = match self.members.get_key_value(&owners) {
            Some((held, _)) => held.clone(),
            None => owners,
        };
        self.members
            .entry(owners.clone())
            .or_default()
            .insert(id.clone());
        self.of.insert(id, owners);
    }

    pub(crate) fn remove(&mut self, id: &RecordId) {
        if let Some(old) = self.of.remove(id)
            && let Some(set) = self.members.get_mut(&old)
        {
            set.remove(id);
            if set.is_empty() {
                self.members.remove(&old);
            }
        }
    }

    pub(crate) fn get(&self, id: &RecordId) -> Option<&Owners> {
        self.of.get(id)
    }

    fn members(&self, owners: &Owners) -> impl Iterator<Item = &RecordId> {
        self.members.get(owners).into_iter().flatten()
    }

    fn len_of(&self, owners: &Owners) -> usize {
        self.members.get(owners).map_or(0, HashSet::len)
    }

    /// Heap bytes of the distinct sets (their entries are counted per pheromone).
    pub(crate) fn sets_heap_bytes(&self) -> usize {
        self.members.keys().map(Owners::heap_bytes).sum()
    }
}

/// What the cap asks of one owner set that feedback wrote to: drop `beyond` of its older
/// pheromones, weakest first (`candidates`, ties by id, so every copy of the state picks the
/// same), each once [`confirm_drops`] has found it still in the set.
pub(crate) struct Excess {
    owners: Owners,
    beyond: usize,
    candidates: Vec<RecordId>,
}

/// The owner sets that feedback which wrote `written` (each with its record's owners, as the
/// feedback's transaction read them, in `owners`) takes past `max_pheromones`, read from the
/// loaded namespace: what is over, and which of the set's pheromones not just written may go.
/// Pheromones of other owner sets are neither counted nor candidates.
pub(crate) fn beyond_cap(
    ns: &Namespace,
    written: &BTreeMap<RecordId, StoredPheromone>,
    owners: &HashMap<RecordId, Owners>,
    cfg: &AdaptiveConfig,
    now: Millis,
) -> Vec<Excess> {
    // Per owner set written to: the pheromones this feedback adds to it (new ones, or ones
    // whose record came into the set since the namespace was loaded).
    let mut added: HashMap<&Owners, usize> = HashMap::new();
    for (id, o) in owners {
        if written.contains_key(id) {
            let joins = ns.owners.get(id) != Some(o);
            *added.entry(o).or_default() += usize::from(joins);
        }
    }
    let mut excess = Vec::new();
    for (set, joining) in added {
        let total = ns.owners.len_of(set) + joining;
        if total <= cfg.max_pheromones {
            continue;
        }
        let mut older: Vec<(f64, &RecordId)> = ns
            .owners
            .members(set)
            .filter(|id| !written.contains_key(*id))
            .filter_map(|id| Some((cfg.strength_at(ns.pheromones.get(id)?, now), id)))
            .collect();
        older.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(b.1)));
        excess.push(Excess {
            owners: set.clone(),
            beyond: total - cfg.max_pheromones,
            candidates: older.into_iter().map(|(_, id)| id.clone()).collect(),
        });
    }
    excess
}

/// The pheromones to drop for `excess`. The namespace's owner sets were read when it was
/// loaded; a pheromone gone since, or whose record's tokens changed (a write the cache has not
/// caught up with yet), would stand in the wrong set there. So each candidate is confirmed, by
/// `still_owned`, in the feedback's own transaction: one that is no longer in the set is not
/// dropped, and counts as one fewer over the cap (the set was that much smaller than counted).
pub(crate) fn confirm_drops<E>(
    excess: Vec<Excess>,
    mut still_owned: impl FnMut(&RecordId, &Owners) -> Result<bool, E>,
) -> Result<Vec<RecordId>, E> {
    let mut dropped = Vec::new();
    for Excess {
        owners,
        mut beyond,
        candidates,
    } in excess
    {
        for id in candidates {
            if beyond == 0 {
                break;
            }
            if still_owned(&id, &owners)? {
                dropped.push(id);
            }
            beyond -= 1;
        }
    }
    dropped.sort();
    Ok(dropped)
}

/// [`beyond_cap`] then [`confirm_drops`], for a caller that may confirm under the lock.
#[cfg(test)]
fn weakest_beyond_cap<E>(
    ns: &Namespace,
    written: &BTreeMap<RecordId, StoredPheromone>,
    owners: &HashMap<RecordId, Owners>,
    cfg: &AdaptiveConfig,
    now: Millis,
    still_owned: impl FnMut(&RecordId, &Owners) -> Result<bool, E>,
) -> Result<Vec<RecordId>, E> {
    confirm_drops(beyond_cap(ns, written, owners, cfg, now), still_owned)
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

    #[test]
    fn a_record_is_in_one_set_and_each_set_is_held_once() {
        let mut sets = OwnerSets::default();
        sets.insert(id("x"), owners(&["u:a"]));
        sets.insert(id("y"), owners(&["u:a"]));
        assert_eq!(sets.len_of(&owners(&["u:a"])), 2);
        assert_eq!(sets.members.len(), 1);
        // Moving x to Bob leaves it in his set alone.
        sets.insert(id("x"), owners(&["u:b"]));
        assert_eq!(sets.len_of(&owners(&["u:a"])), 1);
        assert_eq!(sets.len_of(&owners(&["u:b"])), 1);
        assert_eq!(sets.get(&id("x")), Some(&owners(&["u:b"])));
        sets.remove(&id("y"));
        assert_eq!(sets.len_of(&owners(&["u:a"])), 0);
        assert!(
            !sets.members.contains_key(&owners(&["u:a"])),
            "an empty set is not kept"
        );
    }

    /// A record the loaded namespace still has in the set, but whose tokens changed since (the
    /// feedback's transaction reads them anew), is not dropped, and the set counts one fewer.
    #[test]
    fn a_pheromone_whose_record_left_the_set_is_passed_over() {
        let alice = owners(&["u:alice"]);
        let mut ns = Namespace::default();
        for (name, strength) in [("moved", 1.0), ("weak", 2.0), ("strong", 3.0)] {
            ns.pheromones.insert(id(name), pheromone(strength));
            ns.owners.insert(id(name), alice.clone());
        }
        let written = BTreeMap::from([(id("new"), pheromone(1.0))]);
        let written_owners = HashMap::from([(id("new"), alice.clone())]);
        let still = |id: &RecordId, _: &Owners| Ok::<_, ()>(id.as_str() != "moved");
        // Counted from the cache, the set holds 4 against a cap of 3; in truth 3: none goes.
        let dropped = weakest_beyond_cap(&ns, &written, &written_owners, &cfg(3), 0, still);
        assert_eq!(dropped.unwrap(), Vec::<RecordId>::new());
        // Against a cap of 2 one goes, and it is the weakest that is still in the set.
        let dropped = weakest_beyond_cap(&ns, &written, &written_owners, &cfg(2), 0, still);
        assert_eq!(dropped.unwrap(), vec![id("weak")]);
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
            let dropped = weakest_beyond_cap(&ns, &written, &written_owners, &cfg(cap), 0, |_, _| {
                Ok::<_, ()>(true)
            })
            .unwrap();
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
                    .filter(|d| ns.owners.get(d) == Some(set))
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
