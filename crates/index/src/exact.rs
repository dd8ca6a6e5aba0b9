//! Exact (brute-force) top-k search and the [`Hit`] type every search in this crate returns.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::metric::Metric;

/// One search result: a slot and its score (higher is better).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    /// The slot the engine assigned to the record.
    pub slot: u32,
    /// The score; higher is better, see [`Metric::score`].
    pub score: f32,
}

/// The one ranking order of this crate: score descending, then slot ascending.
/// `Ordering::Less` means `a` ranks before (is better than) `b`.
pub fn rank_order(a: &Hit, b: &Hit) -> Ordering {
    b.score.total_cmp(&a.score).then(a.slot.cmp(&b.slot))
}

/// Sorts hits into the crate's ranking order (see [`rank_order`]).
pub fn sort_hits(hits: &mut [Hit]) {
    hits.sort_unstable_by(rank_order);
}

/// Heap entry ordered so that the heap's maximum is the *worst* kept hit.
struct Worst(Hit);

impl PartialEq for Worst {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Worst {}
impl PartialOrd for Worst {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Worst {
    fn cmp(&self, other: &Self) -> Ordering {
        rank_order(&self.0, &other.0)
    }
}

/// Keeps the best `k` hits seen so far in a bounded binary heap: O(n log k) for n offers.
pub struct TopK {
    k: usize,
    heap: BinaryHeap<Worst>,
}

impl TopK {
    /// A collector for at most `k` hits.
    pub fn new(k: usize) -> Self {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k.min(4096) + 1),
        }
    }

    /// Offers a hit; NaN scores are ignored so that they can never rank.
    #[inline]
    pub fn push(&mut self, hit: Hit) {
        if self.k == 0 || hit.score.is_nan() {
            return;
        }
        if self.heap.len() < self.k {
            self.heap.push(Worst(hit));
            return;
        }
        let Some(mut worst) = self.heap.peek_mut() else {
            return;
        };
        if rank_order(&hit, &worst.0) == Ordering::Less {
            *worst = Worst(hit);
        }
    }

    /// The kept hits, best first.
    pub fn into_sorted(self) -> Vec<Hit> {
        // `into_sorted_vec` sorts ascending by `Worst`'s order, which is best first.
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|w| w.0)
            .collect()
    }
}

/// Scores every candidate against `query` with `metric` and returns the best `k`, sorted by
/// score descending with ties broken by slot ascending. Every candidate gets a finite score
/// (see [`Metric::finite_score`]), so `min(k, candidates)` hits come back. Candidate vectors
/// must have the query's length.
pub fn exact_top_k<'a>(
    metric: Metric,
    query: &[f32],
    candidates: impl Iterator<Item = (u32, &'a [f32])>,
    k: usize,
) -> Vec<Hit> {
    top_k_by(candidates, k, |v| metric.score(query, v))
}

/// The best `k` of `candidates` by `score`, in the crate's ranking order.
fn top_k_by<'a>(
    candidates: impl Iterator<Item = (u32, &'a [f32])>,
    k: usize,
    score: impl Fn(&[f32]) -> f32,
) -> Vec<Hit> {
    if k == 0 {
        return Vec::new();
    }
    let mut top = TopK::new(k);
    for (slot, v) in candidates {
        top.push(Hit {
            slot,
            score: score(v),
        });
    }
    top.into_sorted()
}

/// A query made ready to score vectors prepared for an index of its metric
/// ([`Metric::normalize_for_index`]: unit length for cosine), as the engine keeps them. For
/// cosine the query is normalised once, so a vector costs one dot product, the score the graph
/// gives it too, rather than a dot product and two norms (the norms were most of a small
/// tenant's exact scan: docs/benchmarks.md, "Exact scans score prepared vectors").
pub struct PreparedQuery<'q> {
    metric: Metric,
    vector: Cow<'q, [f32]>,
    dot: crate::kernels::Kernel,
}

impl<'q> PreparedQuery<'q> {
    /// `query` made ready for vectors prepared for `metric`.
    pub fn new(metric: Metric, query: &'q [f32]) -> Self {
        let vector = if metric.needs_normalization() {
            let mut v = query.to_vec();
            metric.normalize_for_index(&mut v);
            Cow::Owned(v)
        } else {
            Cow::Borrowed(query)
        };
        PreparedQuery {
            metric,
            vector,
            dot: crate::kernels::dot_kernel(),
        }
    }

    /// The score of the prepared vector `v`, finite as [`Metric::score`]'s is.
    #[inline]
    pub fn score(&self, v: &[f32]) -> f32 {
        match self.metric {
            Metric::Cosine | Metric::Dot => self.metric.finite_score((self.dot)(&self.vector, v)),
            Metric::L2 => self.metric.score(&self.vector, v),
        }
    }
}

/// [`exact_top_k`] over candidates prepared for an index of `metric`, each scored by
/// [`PreparedQuery::score`]. Every candidate gets a finite score, as in [`exact_top_k`].
pub fn exact_top_k_prepared<'a>(
    metric: Metric,
    query: &[f32],
    candidates: impl Iterator<Item = (u32, &'a [f32])>,
    k: usize,
) -> Vec<Hit> {
    let query = PreparedQuery::new(metric, query);
    top_k_by(candidates, k, |v| query.score(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check(metric: Metric, query: &[f32], data: &[Vec<f32>], k: usize, expect: &[u32]) {
        let hits = exact_top_k(
            metric,
            query,
            data.iter()
                .enumerate()
                .map(|(i, v)| (i as u32, v.as_slice())),
            k,
        );
        let slots: Vec<u32> = hits.iter().map(|h| h.slot).collect();
        assert_eq!(slots, expect, "{metric}");
    }

    #[test]
    fn orders_by_score_then_slot() {
        let data = vec![
            vec![1.0, 0.0],
            vec![0.0, 1.0],
            vec![1.0, 0.0],
            vec![2.0, 0.0],
        ];
        check(Metric::Dot, &[1.0, 0.0], &data, 3, &[3, 0, 2]);
        check(Metric::Cosine, &[1.0, 0.0], &data, 4, &[0, 2, 3, 1]);
        check(Metric::L2, &[1.0, 0.0], &data, 2, &[0, 2]);
        check(Metric::L2, &[1.0, 0.0], &data, 0, &[]);
        check(Metric::L2, &[1.0, 0.0], &data, 10, &[0, 2, 3, 1]);
    }

    #[test]
    fn nan_scores_rank_last_but_still_rank() {
        let data = vec![vec![f32::NAN, 0.0], vec![0.0, 1.0]];
        check(Metric::Dot, &[1.0, 1.0], &data, 2, &[1, 0]);
        check(Metric::L2, &[1.0, 1.0], &data, 2, &[1, 0]);
        check(Metric::Cosine, &[1.0, 1.0], &data, 2, &[1, 0]);
    }

    #[test]
    fn overflowing_scores_saturate_instead_of_vanishing() {
        // Unvalidated extremes: dot and L2 overflow f32, cosine's f32 norms overflow too.
        let data = [
            [3e38, -3e38, 3e38, -3e38],
            [1.0, 0.0, 0.0, 0.0],
            [f32::MAX; 4],
        ];
        for metric in [Metric::Cosine, Metric::Dot, Metric::L2] {
            for q in [[3e38f32; 4], [1.0, 0.0, 0.0, 0.0], [f32::MIN; 4]] {
                let hits = exact_top_k(
                    metric,
                    &q,
                    data.iter()
                        .enumerate()
                        .map(|(i, v)| (i as u32, v.as_slice())),
                    5,
                );
                assert_eq!(hits.len(), 3, "{metric} {q:?}");
                assert!(
                    hits.iter().all(|h| h.score.is_finite()),
                    "{metric} {hits:?}"
                );
            }
        }
    }

    proptest! {
        /// Over prepared candidates, the prepared scan ranks as the plain one does over the
        /// raw vectors, with scores within rounding of the cosine's, for every metric.
        #[test]
        fn prepared_scan_matches_the_plain_one(
            raw in proptest::collection::vec(proptest::collection::vec(-4.0f32..4.0, 8), 1..60),
            query in proptest::collection::vec(-4.0f32..4.0, 8),
            k in 1usize..12,
        ) {
            for metric in [Metric::Cosine, Metric::Dot, Metric::L2] {
                let prepared: Vec<Vec<f32>> = raw
                    .iter()
                    .map(|v| {
                        let mut v = v.clone();
                        metric.normalize_for_index(&mut v);
                        v
                    })
                    .collect();
                let rows = |d: &'_ [Vec<f32>]| -> Vec<(u32, Vec<f32>)> {
                    d.iter().enumerate().map(|(i, v)| (i as u32, v.clone())).collect()
                };
                let (raw_rows, prepared_rows) = (rows(&raw), rows(&prepared));
                let plain = exact_top_k(
                    metric,
                    &query,
                    raw_rows.iter().map(|(s, v)| (*s, v.as_slice())),
                    k,
                );
                let fast = exact_top_k_prepared(
                    metric,
                    &query,
                    prepared_rows.iter().map(|(s, v)| (*s, v.as_slice())),
                    k,
                );
                prop_assert_eq!(plain.len(), fast.len());
                for (p, f) in plain.iter().zip(&fast) {
                    // Equal up to rounding: a near-tie may swap two slots, never their scores.
                    prop_assert!((p.score - f.score).abs() < 1e-5, "{metric}: {p:?} {f:?}");
                }
                let scores = |h: &[Hit]| h.iter().map(|h| h.score).collect::<Vec<_>>();
                if metric != Metric::Cosine {
                    prop_assert_eq!(scores(&plain), scores(&fast));
                }
            }
        }

        #[test]
        fn matches_full_sort(
            scores in proptest::collection::vec(-3i32..3, 0..200),
            k in 0usize..20,
        ) {
            let mut top = TopK::new(k);
            let mut all: Vec<Hit> = scores
                .iter()
                .enumerate()
                .map(|(i, &s)| Hit { slot: i as u32, score: s as f32 })
                .collect();
            // Offer in reverse to show the result does not depend on arrival order.
            for h in all.iter().rev() {
                top.push(*h);
            }
            sort_hits(&mut all);
            all.truncate(k);
            prop_assert_eq!(top.into_sorted(), all);
        }
    }
}
