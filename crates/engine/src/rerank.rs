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
//! where `base` is its retrieval score normalised over the pool ([`BaseScale`]: min-max when
//! the pool is full, 1 when all are equal), `narrative` the cosine similarity (clamped to [0, 1]) of its vector to the
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

/// How a candidate's retrieval score becomes `base`, in [0, 1]: `(score − min) / span`.
///
/// In a full pool (`nominal` candidates, [`pool_size`]) `span` is the pool's own range, so
/// the best candidate has 1 and the last 0. A smaller pool (a tenant or a filter with few
/// records) is no such sample: min-max over two near-tied candidates would still give them 1
/// and 0, and no feedback could ever lift the second over the first. So the span is at least
/// the best score's magnitude (its distance from "no relevance", 0) times the share of the
/// pool left empty: two near ties stay near in `base`, a clearly better best stays clearly
/// better, and as the pool fills the span tends to the plain range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct BaseScale {
    min: f64,
    span: f64,
}

impl BaseScale {
    pub(crate) fn of(scores: impl Iterator<Item = f32> + Clone, nominal: usize) -> BaseScale {
        let (n, min, max) = scores.fold((0usize, f64::INFINITY, f64::NEG_INFINITY), |acc, s| {
            let s = f64::from(s);
            (acc.0 + 1, acc.1.min(s), acc.2.max(s))
        });
        let empty_share = if nominal > 1 && n < nominal {
            (nominal - n) as f64 / (nominal - 1) as f64
        } else {
            0.0
        };
        let span = (max - min).max(max.abs() * empty_share);
        // A lone candidate or an all-equal pool (span 0) reaches past `max`: every base is 1.
        let min = if span > 0.0 { max - span } else { max };
        BaseScale { min, span }
    }

    pub(crate) fn base(&self, score: f32) -> f32 {
        if self.span > 0.0 && self.span.is_finite() {
            ((f64::from(score) - self.min) / self.span).clamp(0.0, 1.0) as f32
        } else {
            1.0
        }
    }
}

/// Re-scores `ranked` (best first, all visible) in place and re-sorts it. `nominal` is the
/// pool size the search drew for ([`pool_size`], or more for a retried search).
pub(crate) fn rerank(
    ranked: &mut [Ranked],
    nominal: usize,
    ci: &CollectionIndex,
    collection: &CollectionName,
    a: &Adaptive<'_>,
) {
    let scale = BaseScale::of(ranked.iter().map(|r| r.score), nominal);
    let ns = lock(a.ns);
    let narrative = a
        .principal
        .and_then(|p| ns.narrative(p, collection))
        .map(|n| n.vector.as_slice());
    let w = a.weights;
    for (i, r) in ranked.iter_mut().enumerate() {
        let base = scale.base(r.score);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn bases(scores: &[f32], nominal: usize) -> Vec<f32> {
        let scale = BaseScale::of(scores.iter().copied(), nominal);
        scores.iter().map(|&s| scale.base(s)).collect()
    }

    #[test]
    fn a_full_pool_is_min_max() {
        assert_eq!(bases(&[0.75, 0.5, 0.25], 3), vec![1.0, 0.5, 0.0]);
        assert_eq!(bases(&[-1.0, -2.0, -3.0], 2), vec![1.0, 0.5, 0.0]);
    }

    #[test]
    fn near_ties_in_a_small_pool_stay_near_and_a_clear_best_stays_clear() {
        // Two near ties of 50: min-max would give them 1 and 0.
        let near = bases(&[0.564, 0.551], 50);
        assert!(near[0] == 1.0 && near[1] > 0.97, "{near:?}");
        // So the default pheromone weight (up to 0.3) can lift the second over the first.
        assert!(near[1] + 0.25 > near[0]);
        // A clearly better best keeps a gap feedback does not close.
        let clear = bases(&[0.8, 0.1], 50);
        assert!(clear[0] - clear[1] > 0.8, "{clear:?}");
        // Distances (L2 scores are negative) behave the same way.
        let l2 = bases(&[-0.50, -0.52], 50);
        assert!(l2[1] > 0.95, "{l2:?}");
    }

    #[test]
    fn ties_and_lone_candidates_are_one() {
        assert_eq!(bases(&[0.4, 0.4], 50), vec![1.0, 1.0]);
        assert_eq!(bases(&[0.0], 50), vec![1.0]);
        assert_eq!(bases(&[0.0, 0.0], 2), vec![1.0, 1.0]);
        assert_eq!(bases(&[], 50), Vec::<f32>::new());
    }

    #[test]
    fn the_order_is_kept() {
        let scores = [3.0, 2.5, 2.5, 1.0, -4.0];
        for nominal in [1, 5, 6, 50, 500] {
            let b = bases(&scores, nominal);
            assert!(b.windows(2).all(|w| w[0] >= w[1]), "{nominal}: {b:?}");
            assert!(
                b.iter().all(|x| (0.0..=1.0).contains(x)),
                "{nominal}: {b:?}"
            );
        }
    }
}
