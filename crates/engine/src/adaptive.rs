//! Adaptive reranking state of one (tenant, domain) namespace and its arithmetic: a narrative
//! vector per principal and collection (an exponential moving average of the feedback contexts
//! of callers speaking for that principal) and a pheromone per reinforced record (reinforced by use, decaying with time and with exposure). The
//! formulas are documented for users in `docs/adaptive-reranking.md`; storage is
//! `crates/store/src/adaptive.rs`, the in-memory cache `adaptive_cache.rs`, feedback and
//! upkeep `feedback.rs`, and the re-scoring of search candidates `rerank.rs`.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use strata_store::codec::{StoredNarrative, StoredPheromone};
use strata_store::{AdaptiveItem, NarrativePrincipal};
use strata_types::{CollectionName, Millis, RecordId};

use crate::pheromone_cap::{OwnerSets, Owners};

/// `[engine.adaptive]`: adaptive reranking settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdaptiveConfig {
    /// Namespaces kept in memory besides every tenant's `default` one (never evicted); beyond
    /// it the least recently used is dropped and reloaded from storage on next use.
    pub max_namespaces: usize,
    /// Weight of a new context in the narrative vector: `n ← (1 − alpha)·n + alpha·ĉ`.
    pub alpha: f32,
    /// A pheromone halves every this many seconds without reinforcement.
    pub half_life_secs: f64,
    /// Fraction of its strength a pheromone loses each time its record is shown but not used.
    pub exposure_decay: f64,
    /// Strength added by one use, and the most a pheromone can hold.
    pub reinforcement: f64,
    pub max_strength: f64,
    /// The retention sweep deletes pheromones decayed below this strength, and narratives not
    /// updated for `narrative_retention_secs`.
    pub min_strength: f64,
    pub narrative_retention_secs: u64,
    /// Pheromones kept per namespace and owner set (records with the same user tokens):
    /// feedback beyond it drops that set's weakest (`crate::pheromone_cap`).
    pub max_pheromones: usize,
    /// Narrative vectors kept per namespace, over all its principals and collections: feedback
    /// that starts one beyond it drops the least recently updated.
    pub max_narratives: usize,
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        AdaptiveConfig {
            max_namespaces: 1024,
            alpha: 0.2,
            half_life_secs: 7.0 * 24.0 * 3600.0,
            exposure_decay: 0.1,
            reinforcement: 1.0,
            max_strength: 20.0,
            min_strength: 0.01,
            narrative_retention_secs: 90 * 24 * 3600,
            max_pheromones: 10_000,
            max_narratives: 256,
        }
    }
}

impl AdaptiveConfig {
    pub(crate) fn validate(&self) -> Result<(), String> {
        let unit = |x: f64| x.is_finite() && (0.0..=1.0).contains(&x);
        if !(self.alpha > 0.0 && self.alpha <= 1.0) {
            return Err("engine.adaptive.alpha: must be above 0 and at most 1".into());
        }
        if !(self.half_life_secs.is_finite() && self.half_life_secs > 0.0) {
            return Err("engine.adaptive.half_life_secs: must be above 0".into());
        }
        if !unit(self.exposure_decay) {
            return Err("engine.adaptive.exposure_decay: must be 0 to 1".into());
        }
        let strengths = self.reinforcement.is_finite()
            && self.reinforcement > 0.0
            && self.max_strength.is_finite()
            && self.max_strength >= self.reinforcement;
        if !strengths {
            return Err(
                "engine.adaptive: reinforcement must be above 0 and max_strength at least it"
                    .into(),
            );
        }
        // Below one use's strength: at it or above, the sweep would delete every pheromone,
        // fresh ones included, at each pass.
        if !(self.min_strength.is_finite()
            && self.min_strength >= 0.0
            && self.min_strength < self.reinforcement)
        {
            return Err(
                "engine.adaptive.min_strength: must be 0 or more, and below reinforcement".into(),
            );
        }
        if self.max_pheromones == 0 {
            return Err("engine.adaptive.max_pheromones: must be at least 1".into());
        }
        if self.max_narratives == 0 {
            return Err("engine.adaptive.max_narratives: must be at least 1".into());
        }
        Ok(())
    }

    fn half_life_ms(&self) -> f64 {
        self.half_life_secs * 1000.0
    }

    /// A pheromone's strength at `now`: halved every half-life since it was last set.
    pub(crate) fn strength_at(&self, p: &StoredPheromone, now: Millis) -> f64 {
        let elapsed = now.saturating_sub(p.updated_at).max(0) as f64;
        p.strength * 0.5f64.powf(elapsed / self.half_life_ms())
    }

    /// The pheromone after one use at `now`.
    pub(crate) fn reinforce(&self, p: Option<&StoredPheromone>, now: Millis) -> StoredPheromone {
        let (before, uses, exposures) = p.map_or((0.0, 0, 0), |p| {
            (self.strength_at(p, now), p.reinforcements, p.exposures)
        });
        StoredPheromone {
            strength: (before + self.reinforcement).min(self.max_strength),
            updated_at: now,
            reinforcements: uses.saturating_add(1),
            exposures,
        }
    }

    /// The pheromone after its record was shown at `now` and not used.
    pub(crate) fn expose(&self, p: &StoredPheromone, now: Millis) -> StoredPheromone {
        StoredPheromone {
            strength: self.strength_at(p, now) * (1.0 - self.exposure_decay),
            updated_at: now,
            reinforcements: p.reinforcements,
            exposures: p.exposures.saturating_add(1),
        }
    }

    /// The narrative after absorbing context `c` at `now` (`c` is normalised first, so every
    /// context weighs the same whatever its length).
    pub(crate) fn absorb(
        &self,
        n: Option<&StoredNarrative>,
        c: &[f32],
        now: Millis,
    ) -> Option<StoredNarrative> {
        let unit = normalised(c)?;
        let (vector, updates) = match n {
            Some(n) if n.vector.len() == unit.len() => {
                let a = self.alpha;
                let v = n
                    .vector
                    .iter()
                    .zip(&unit)
                    .map(|(old, new)| (1.0 - a) * old + a * new)
                    .collect();
                (v, n.updates.saturating_add(1))
            }
            // No narrative yet, or one of another dimension (the collection was re-created
            // or re-embedded): the context starts it afresh.
            _ => (unit, 1),
        };
        Some(StoredNarrative {
            vector,
            updates,
            updated_at: now,
        })
    }
}

/// `v / |v|`, or `None` for a zero vector, which has no direction to follow.
fn normalised(v: &[f32]) -> Option<Vec<f32>> {
    let norm = v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    (norm > 0.0 && norm.is_finite())
        .then(|| v.iter().map(|x| (f64::from(*x) / norm) as f32).collect())
}

/// Cosine similarity clamped to [0, 1]: dissimilar and opposite both mean "no boost".
pub(crate) fn similarity(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return 0.0;
    }
    let (mut dot, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (f64::from(*x), f64::from(*y));
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    ((dot / (na.sqrt() * nb.sqrt())) as f32).clamp(0.0, 1.0)
}

/// A pheromone strength as a signal in [0, 1] (below 1 for any strength up to far beyond the
/// default cap): `s / (1 + s)`, so the first uses count most.
pub(crate) fn pheromone_signal(strength: f64) -> f32 {
    let s = strength.max(0.0);
    (s / (1.0 + s)) as f32
}

/// One principal's narrative vectors, by collection.
pub(crate) type Narratives = HashMap<CollectionName, StoredNarrative>;

/// One namespace's state, as loaded from storage and kept in step with its feedback.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Namespace {
    /// By principal first: a search finds its caller's narrative with two map look-ups.
    pub narratives: HashMap<NarrativePrincipal, Narratives>,
    pub pheromones: HashMap<RecordId, StoredPheromone>,
    /// The owners of each pheromone's record and the members of each owner set, for the cap
    /// (`crate::pheromone_cap`): filled when the namespace is loaded for use, and by feedback
    /// for the pheromones it writes.
    pub owners: OwnerSets,
}

impl Namespace {
    pub(crate) fn from_items(items: impl IntoIterator<Item = AdaptiveItem>) -> Namespace {
        let mut ns = Namespace::default();
        for item in items {
            match item {
                AdaptiveItem::Narrative(p, c, n) => {
                    ns.narratives.entry(p).or_default().insert(c, n);
                }
                AdaptiveItem::Pheromone(id, p, owners) => {
                    if let Some(tokens) = owners {
                        ns.owners.insert(id.clone(), Owners::of(&tokens));
                    }
                    ns.pheromones.insert(id, p);
                }
            }
        }
        ns
    }

    /// The narrative `principal` reads and feeds for `collection`, if it has one.
    pub(crate) fn narrative(
        &self,
        principal: &NarrativePrincipal,
        collection: &CollectionName,
    ) -> Option<&StoredNarrative> {
        self.narratives.get(principal)?.get(collection)
    }

    /// Narrative vectors over every principal.
    pub(crate) fn narrative_count(&self) -> usize {
        self.narratives.values().map(HashMap::len).sum()
    }

    pub(crate) fn set_narrative(
        &mut self,
        principal: NarrativePrincipal,
        collection: CollectionName,
        n: StoredNarrative,
    ) {
        self.narratives
            .entry(principal)
            .or_default()
            .insert(collection, n);
    }

    pub(crate) fn remove_narrative(
        &mut self,
        principal: &NarrativePrincipal,
        collection: &CollectionName,
    ) {
        if let Some(of) = self.narratives.get_mut(principal) {
            of.remove(collection);
            if of.is_empty() {
                self.narratives.remove(principal);
            }
        }
    }

    /// The narratives to drop so that, with `principal`'s for `collection` written, the
    /// namespace keeps at most `max_narratives`: the least recently updated of the others
    /// (ties by principal and collection, so every replica of the state picks the same).
    pub(crate) fn stalest_beyond_cap(
        &self,
        principal: &NarrativePrincipal,
        collection: &CollectionName,
        cap: usize,
    ) -> Vec<(NarrativePrincipal, CollectionName)> {
        let new = usize::from(self.narrative(principal, collection).is_none());
        let total = self.narrative_count() + new;
        if total <= cap {
            return Vec::new();
        }
        let mut others: Vec<(Millis, &NarrativePrincipal, &CollectionName)> = self
            .narratives
            .iter()
            .flat_map(|(p, of)| of.iter().map(move |(c, n)| (n.updated_at, p, c)))
            .filter(|(_, p, c)| (*p, *c) != (principal, collection))
            .collect();
        others.sort();
        others
            .into_iter()
            .take(total - cap)
            .map(|(_, p, c)| (p.clone(), c.clone()))
            .collect()
    }

    /// Estimated bytes in memory: vectors, names (each with its allocation, `heap_bytes`) and
    /// hash-map entries.
    pub(crate) fn bytes(&self) -> u64 {
        const ENTRY: usize = 48;
        let narratives: usize = self
            .narratives
            .iter()
            .map(|(p, of)| {
                let vectors: usize = of
                    .iter()
                    .map(|(c, n)| {
                        ENTRY
                            + c.heap_bytes()
                            + std::mem::size_of::<StoredNarrative>()
                            + n.vector.capacity() * 4
                    })
                    .sum();
                ENTRY + p.heap_bytes() + std::mem::size_of::<Narratives>() + vectors
            })
            .sum();
        let pheromones: usize = self
            .pheromones
            .keys()
            .map(|id| ENTRY + id.heap_bytes() + std::mem::size_of::<StoredPheromone>())
            .sum();
        // Counted for every pheromone, loaded or not (the stats read namespaces without
        // their owners): an owner entry and a set membership each.
        let owners = self.pheromones.len()
            * (2 * ENTRY + std::mem::size_of::<Owners>() + std::mem::size_of::<RecordId>())
            + self.owners.sets_heap_bytes();
        (std::mem::size_of::<Namespace>() + narratives + pheromones + owners) as u64
    }
}

/// One namespace's narratives, by principal and collection.
pub(crate) type NarrativesOf =
    std::collections::BTreeMap<(NarrativePrincipal, CollectionName), StoredNarrative>;

/// Of one namespace's narratives (an import's), those its cap keeps: every one when at most
/// `cap`, else the `cap` most recently updated, by the rule feedback follows
/// (`Namespace::stalest_beyond_cap`: the least recently updated go first, ties by principal
/// and collection).
pub(crate) fn newest_within_cap(
    narratives: NarrativesOf,
    cap: usize,
) -> Vec<((NarrativePrincipal, CollectionName), StoredNarrative)> {
    let mut all: Vec<_> = narratives.into_iter().collect();
    let beyond = all.len().saturating_sub(cap);
    if beyond == 0 {
        return all;
    }
    all.sort_by(|(a, na), (b, nb)| (na.updated_at, a).cmp(&(nb.updated_at, b)));
    all.split_off(beyond)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> AdaptiveConfig {
        AdaptiveConfig {
            half_life_secs: 10.0,
            ..AdaptiveConfig::default()
        }
    }

    #[test]
    fn pheromones_halve_every_half_life_and_cap() {
        let c = cfg();
        let p = c.reinforce(None, 0);
        assert_eq!(p.strength, 1.0);
        assert!((c.strength_at(&p, 10_000) - 0.5).abs() < 1e-9);
        assert!((c.strength_at(&p, 20_000) - 0.25).abs() < 1e-9);
        // A clock that went backwards does not grow a pheromone.
        assert_eq!(c.strength_at(&p, -5), 1.0);
        let mut q = p;
        for _ in 0..100 {
            q = c.reinforce(Some(&q), 0);
        }
        assert_eq!(q.strength, c.max_strength);
        assert_eq!(q.reinforcements, 101);
    }

    #[test]
    fn exposure_without_use_wears_a_pheromone_down() {
        let c = cfg();
        let p = c.reinforce(None, 0);
        let e = c.expose(&p, 0);
        assert!((e.strength - 0.9).abs() < 1e-9);
        assert_eq!(e.exposures, 1);
        assert!(pheromone_signal(e.strength) < pheromone_signal(p.strength));
    }

    #[test]
    fn the_narrative_is_a_moving_average_of_unit_contexts() {
        let c = cfg();
        let n = c.absorb(None, &[3.0, 0.0], 1).unwrap();
        assert_eq!(n.vector, vec![1.0, 0.0]);
        let n = c.absorb(Some(&n), &[0.0, 5.0], 2).unwrap();
        assert_eq!((n.vector, n.updates, n.updated_at), (vec![0.8, 0.2], 2, 2));
        assert!(c.absorb(None, &[0.0, 0.0], 1).is_none());
        // Another dimension starts afresh.
        let m = c
            .absorb(Some(&c.absorb(None, &[1.0], 1).unwrap()), &[0.0, 2.0], 3)
            .unwrap();
        assert_eq!((m.vector, m.updates), (vec![0.0, 1.0], 1));
    }

    #[test]
    fn similarity_and_signal_stay_in_the_unit_interval() {
        assert_eq!(similarity(&[1.0, 0.0], &[2.0, 0.0]), 1.0);
        assert_eq!(similarity(&[1.0, 0.0], &[-1.0, 0.0]), 0.0);
        assert_eq!(similarity(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
        assert_eq!(similarity(&[1.0], &[1.0, 0.0]), 0.0);
        assert_eq!(pheromone_signal(0.0), 0.0);
        assert_eq!(pheromone_signal(1.0), 0.5);
        assert!(pheromone_signal(20.0) < 1.0);
        assert!(pheromone_signal(f64::MAX) <= 1.0);
    }

    #[test]
    fn the_narrative_cap_drops_the_least_recently_updated_of_the_others() {
        let c = cfg();
        let text = CollectionName::parse("text").unwrap();
        let who =
            |s: &str| NarrativePrincipal::of_tokens([strata_types::UserToken::parse(s).unwrap()]);
        let mut ns = Namespace::default();
        for (i, p) in ["u:a", "u:b", "u:c"].iter().enumerate() {
            let n = c.absorb(None, &[1.0, 0.0], 10 - i as Millis).unwrap();
            ns.set_narrative(who(p), text.clone(), n);
        }
        ns.set_narrative(
            NarrativePrincipal::Shared,
            text.clone(),
            c.absorb(None, &[0.0, 1.0], 20).unwrap(),
        );
        assert_eq!(ns.narrative_count(), 4);
        // Updating an existing narrative at the cap drops nothing.
        assert!(ns.stalest_beyond_cap(&who("u:a"), &text, 4).is_empty());
        // A new one drops the stalest (u:c, updated at 8), never the one being written.
        assert_eq!(
            ns.stalest_beyond_cap(&who("u:d"), &text, 4),
            vec![(who("u:c"), text.clone())]
        );
        assert_eq!(
            ns.stalest_beyond_cap(&who("u:c"), &text, 2),
            vec![(who("u:b"), text.clone()), (who("u:a"), text.clone())]
        );
        ns.remove_narrative(&who("u:c"), &text);
        assert!(ns.narrative(&who("u:c"), &text).is_none());
        assert!(!ns.narratives.contains_key(&who("u:c")));
        assert_eq!(ns.narrative_count(), 3);
    }

    #[test]
    fn bad_settings_are_refused_with_their_name() {
        let bad = AdaptiveConfig {
            half_life_secs: 0.0,
            ..AdaptiveConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("half_life_secs"));
        let bad = AdaptiveConfig {
            max_narratives: 0,
            ..AdaptiveConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("max_narratives"));
        // A floor at one use's strength would sweep every pheromone at each pass.
        let bad = AdaptiveConfig {
            min_strength: AdaptiveConfig::default().reinforcement,
            ..AdaptiveConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("min_strength"));
        assert!(AdaptiveConfig::default().validate().is_ok());
    }
}
