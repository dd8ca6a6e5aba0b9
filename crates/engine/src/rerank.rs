//! Adaptive reranking of a search's candidate pool (`rerank: "adaptive"`).
//!
//! The pool is the best `max(4·k, 50)` candidates the ordinary search found, every one of
//! them already visible to the caller and matching its filter, so reranking can neither add
//! an invisible record nor let one move a score. Each candidate is re-scored as
//!
//! ```text
//! score = w_base · base + w_narrative · narrative + w_pheromone · pheromone
//! ```
//!
//! where `base` is its retrieval score min-max normalised over the pool (1 when all are
//! equal), `narrative` the cosine similarity (clamped to [0, 1]) of its vector to the
//! collection's narrative vector of the caller's principal in the caller's (tenant, domain)
//! (`Visibility::narrative_principal`: another end user's contexts never move it), 0 without
//! either, and
//! `pheromone` its pheromone strength `s` now as `s / (1 + s)`, 0 without one. Ties keep the
//! retrieval order. Then the pool is cut to `k`.

use std::sync::Mutex;

use strata_store::NarrativePrincipal;
use strata_types::{AdaptiveExplain, CollectionName, Millis, RerankWeights};

use crate::adaptive::{AdaptiveConfig, Namespace, pheromone_signal, similarity};
use crate::collection_index::CollectionIndex;
use crate::registry::lock;
use crate::search::Ranked;

/// The candidate pool reranking draws from, for `k` hits.
pub(crate) fn pool_size(k: usize) -> usize {
    k.saturating_mul(4).max(50)
}

/// What reranking needs besides the candidates.
pub(crate) struct Adaptive<'a> {
    pub ns: &'a Mutex<Namespace>,
    /// Whose narrative the caller reads; `None` reads none.
    pub principal: Option<&'a NarrativePrincipal>,
    pub config: &'a AdaptiveConfig,
    pub weights: RerankWeights,
    pub now: Millis,
}

/// Re-scores `ranked` (best first, all visible) in place and re-sorts it.
pub(crate) fn rerank(
    ranked: &mut [Ranked],
    ci: &CollectionIndex,
    collection: &CollectionName,
    a: &Adaptive<'_>,
) {
    let (min, max) = ranked
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), r| {
            let s = f64::from(r.score);
            (lo.min(s), hi.max(s))
        });
    let ns = lock(a.ns);
    let narrative = a
        .principal
        .and_then(|p| ns.narrative(p, collection))
        .map(|n| n.vector.as_slice());
    let w = a.weights;
    for (i, r) in ranked.iter_mut().enumerate() {
        let base = if max > min {
            ((f64::from(r.score) - min) / (max - min)) as f32
        } else {
            1.0
        };
        let near = match narrative {
            // A vector the graph cannot hand back (a damaged index, rebuilt at the next
            // load) earns no narrative boost rather than failing the search.
            Some(n) if ci.with_vector.contains(r.slot) => {
                ci.vector(r.slot).map_or(0.0, |v| similarity(n, &v))
            }
            _ => 0.0,
        };
        let pheromone = ci
            .docs
            .get(r.slot as usize)
            .and_then(|d| d.as_ref())
            .and_then(|d| ns.pheromones.get(&d.id))
            .map_or(0.0, |p| pheromone_signal(a.config.strength_at(p, a.now)));
        let e = AdaptiveExplain {
            base_score: r.score,
            base_rank: i + 1,
            base: w.base * base,
            narrative: w.narrative * near,
            pheromone: w.pheromone * pheromone,
        };
        r.score = e.base + e.narrative + e.pheromone;
        r.explain.adaptive = Some(e);
    }
    drop(ns);
    // Stable: equal scores keep the retrieval order.
    ranked.sort_by(|x, y| y.score.total_cmp(&x.score));
}
