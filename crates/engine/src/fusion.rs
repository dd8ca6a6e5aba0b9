//! Hybrid search: one ranking from the vector and the text channel's candidates.
//!
//! Weighted fusion gives `alpha · vector + (1 − alpha) · text`, each channel brought into
//! [0, 1] first. How depends on whether the channel's scores mean something on their own:
//! - on a `cosine` collection both channels are put on an absolute scale, so that a fused score
//!   says how well a record matches, not only how it ranks among this query's candidates, and
//!   `min_score` can tell "no relevant memory" from a weak best match. The vector channel is
//!   the cosine similarity clamped to [0, 1] (below 0 is as unrelated as 0); the text channel
//!   is BM25 saturated as `bm25 / (bm25 + BM25_PIVOT)`, the `saturation` function Lucene's
//!   rank features use, so it rises with the match and never reaches 1.
//! - on `dot` and `l2` collections the vector score has no scale (a dot product or a distance
//!   grows with the vectors' norms), so both channels are min-max normalised over their own
//!   candidates, as before: the best candidate of any query scores near the top, and a fused
//!   score ranks hits within one search but says nothing across searches.
//!
//! Measured on the conversational-memory recall set (`docs/benchmarks.md`, 1 Dec 2026): the
//! absolute scale kept recall@5 / @10 of the default search and put every real question's best
//! hit above every off-topic question's, which min-max normalisation could not.
//!
//! Reciprocal rank fusion is unchanged: its scores are sums of `1 / (k + rank)`, ranks only.

use std::collections::HashMap;

use strata_index::{Hit, Metric};
use strata_types::{Fusion, HitExplain};

use crate::search::Ranked;

/// The BM25 score at which the text channel's part is one half. The best BM25 hit of a question
/// from the recall set scored 3.4–13.1 tenant-wide (median 5.5) and 0.04–5.4 among one user's
/// memories (median 2.0); an off-topic question's best, matching only words such as "what" or
/// "the", scored up to 6.6 tenant-wide. Pivots of 3 to 6 ranked alike on the set (recall@5
/// within 0.02) and separated the off-topic questions alike; 4 is the smallest with the best
/// recall@5, so the text channel keeps the most weight (`docs/benchmarks.md`).
pub(crate) const BM25_PIVOT: f64 = 4.0;

/// Fuses the two channels' rankings; ties break by slot, so results are deterministic. Each
/// hit's explanation carries the channels' own scores (cosine, dot product, negative distance
/// or BM25) and ranks, from which its fused score follows by the rules in the module docs.
/// `completion`: the scores a channel gives the other channel's candidates that its own list
/// left out (see [`Completion`]); they enter a weighted fusion on the absolute scale only.
pub(crate) fn fuse(
    vector: &[Hit],
    text: &[Hit],
    completion: &Completion,
    fusion: Fusion,
    metric: Metric,
) -> Vec<Ranked> {
    let mut by_slot: HashMap<u32, HitExplain> = HashMap::new();
    for (i, h) in vector.iter().enumerate() {
        let e = by_slot.entry(h.slot).or_default();
        (e.vector_score, e.vector_rank) = (Some(h.score), Some(i + 1));
    }
    for (i, h) in text.iter().enumerate() {
        let e = by_slot.entry(h.slot).or_default();
        (e.text_score, e.text_rank) = (Some(h.score), Some(i + 1));
    }
    if completion.applies(fusion, metric) {
        for h in &completion.vector {
            if let Some(e) = by_slot.get_mut(&h.slot) {
                e.vector_score.get_or_insert(h.score);
            }
        }
        for h in &completion.text {
            if let Some(e) = by_slot.get_mut(&h.slot) {
                e.text_score.get_or_insert(h.score);
            }
        }
    }
    let (vnorm, tnorm) = match metric {
        Metric::Cosine => (Scale::Cosine, Scale::Saturated),
        Metric::Dot | Metric::L2 => (Scale::min_max(vector), Scale::min_max(text)),
    };
    let mut out: Vec<Ranked> = by_slot
        .into_iter()
        .map(|(slot, explain)| {
            let score = match fusion {
                Fusion::Rrf { k } => {
                    let rrf =
                        |rank: Option<usize>| rank.map_or(0.0, |r| 1.0 / (k as f32 + r as f32));
                    rrf(explain.vector_rank) + rrf(explain.text_rank)
                }
                Fusion::Weighted { alpha } => {
                    let alpha = f64::from(alpha);
                    let part = |scale: &Scale, score: Option<f32>| {
                        score.map_or(0.0, |s| scale.apply(f64::from(s)))
                    };
                    (alpha * part(&vnorm, explain.vector_score)
                        + (1.0 - alpha) * part(&tnorm, explain.text_score))
                        as f32
                }
            };
            Ranked {
                slot,
                score,
                explain,
            }
        })
        .collect();
    out.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.slot.cmp(&b.slot)));
    out
}

/// The scores each channel gives the candidates only the other channel found.
///
/// Each channel hands fusion its best few dozen candidates (`HYBRID_DEPTH`, or more for a
/// larger `k`). A record in one list and not the other used to get 0 for the other channel,
/// so its fused score depended on how long the lists were, that is on `k`: a record fifth by
/// vector and 60th by text was left out of a `k = 10` answer that the same search at
/// `k = 100` scored above the tenth hit, and a `min_score` cut kept it or not by `k`. On the
/// absolute scale a channel's score means something alone, so the missing one is computed
/// exactly (a cosine against the record's vector, the record's BM25 for the query under the
/// same statistics), and a record's fused score is the same whatever `k` asked for. Min-max
/// scales (`dot`, `l2`) and RRF rank within the lists by design: a record below a list's
/// lowest candidate would scale to 0 there anyway, so they take no completion.
#[derive(Debug, Default)]
pub(crate) struct Completion {
    /// Vector scores of text candidates outside the vector list (records with a vector).
    pub vector: Vec<Hit>,
    /// BM25 scores of vector candidates outside the text list (records sharing a term).
    pub text: Vec<Hit>,
}

impl Completion {
    /// Whether a fusion uses completed scores: weighted, on the absolute scale.
    pub fn applies(&self, fusion: Fusion, metric: Metric) -> bool {
        matches!(fusion, Fusion::Weighted { .. }) && metric == Metric::Cosine
    }

    /// Scores what each list left out of the other's candidates. `vector_score` gives the
    /// vector channel's score of the listed slots (skipping those without a vector),
    /// `text_score` the text channel's of one slot.
    pub fn compute(
        vector: &[Hit],
        text: &[Hit],
        vector_score: impl FnOnce(&[u32]) -> Result<Vec<Hit>, crate::EngineError>,
        text_score: impl Fn(u32) -> Option<f32>,
    ) -> Result<Self, crate::EngineError> {
        let in_vector: std::collections::HashSet<u32> = vector.iter().map(|h| h.slot).collect();
        let in_text: std::collections::HashSet<u32> = text.iter().map(|h| h.slot).collect();
        let only_text: Vec<u32> = text
            .iter()
            .map(|h| h.slot)
            .filter(|s| !in_vector.contains(s))
            .collect();
        let text = vector
            .iter()
            .filter(|h| !in_text.contains(&h.slot))
            .filter_map(|h| {
                text_score(h.slot).map(|score| Hit {
                    slot: h.slot,
                    score,
                })
            })
            .collect();
        Ok(Self {
            vector: vector_score(&only_text)?,
            text,
        })
    }
}

/// The highest fused score a record in neither list could have, for a weighted fusion on the
/// absolute scale whose lists were cut at `depth` (`None` for another fusion, or when neither
/// list was cut, so that every candidate was ranked). Such a record scores at most a cut
/// list's last score in that channel, and nothing in a channel whose list holds every
/// candidate: when the hits a search needs all score at least this much, no record outside
/// the lists belongs among them (Fagin's threshold algorithm).
pub(crate) fn unseen_bound(
    vector: &[Hit],
    text: &[Hit],
    depth: usize,
    fusion: Fusion,
    metric: Metric,
) -> Option<f32> {
    let Fusion::Weighted { alpha } = fusion else {
        return None;
    };
    if metric != Metric::Cosine || (vector.len() < depth && text.len() < depth) {
        return None;
    }
    let last = |hits: &[Hit], scale: &Scale| {
        (hits.len() >= depth)
            .then(|| hits.last().map(|h| scale.apply(f64::from(h.score))))
            .flatten()
            .unwrap_or(0.0)
    };
    let alpha = f64::from(alpha);
    Some(
        (alpha * last(vector, &Scale::Cosine) + (1.0 - alpha) * last(text, &Scale::Saturated))
            as f32,
    )
}

/// How one channel's scores are brought into [0, 1]. In f64: with f32 scores near ±f32::MAX,
/// `max - min` would overflow to infinity in f32 and the quotient collapse to 0 or NaN.
enum Scale {
    /// Cosine similarity, clamped to [0, 1].
    Cosine,
    /// BM25 (never negative), as `bm25 / (bm25 + BM25_PIVOT)`.
    Saturated,
    /// Over the channel's candidates: the lowest 0, the highest 1 (all 1 when they tie).
    MinMax { min: f64, max: f64 },
}

impl Scale {
    fn min_max(hits: &[Hit]) -> Self {
        let (min, max) = hits
            .iter()
            .map(|h| f64::from(h.score))
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), s| {
                (lo.min(s), hi.max(s))
            });
        Scale::MinMax { min, max }
    }

    fn apply(&self, score: f64) -> f64 {
        match *self {
            Scale::Cosine => score.clamp(0.0, 1.0),
            // A BM25 score is never negative; the guard keeps the part in [0, 1) if one were.
            Scale::Saturated => {
                let s = score.max(0.0);
                s / (s + BM25_PIVOT)
            }
            Scale::MinMax { min, max } if max > min => (score - min) / (max - min),
            Scale::MinMax { .. } => 1.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hits(v: &[(u32, f32)]) -> Vec<Hit> {
        v.iter().map(|&(slot, score)| Hit { slot, score }).collect()
    }

    const DEFAULT: Fusion = Fusion::Weighted { alpha: 0.7 };

    #[test]
    fn rrf_rewards_agreement() {
        for metric in [Metric::Cosine, Metric::Dot, Metric::L2] {
            let fused = fuse(
                &hits(&[(1, 0.9), (2, 0.8)]),
                &hits(&[(2, 5.0), (3, 4.0)]),
                &Completion::default(),
                Fusion::Rrf { k: 60 },
                metric,
            );
            assert_eq!(fused[0].slot, 2);
            assert_eq!(fused[0].explain.vector_rank, Some(2));
            assert_eq!(fused[0].explain.text_rank, Some(1));
            assert!((fused[0].score - (1.0 / 62.0 + 1.0 / 61.0)).abs() < 1e-6);
        }
    }

    /// The user's report: a nonsense query's best candidate had cosine 0.164 and no word in
    /// common with any record, and min-max normalisation scored it 0.70 at alpha 0.7, above a
    /// real answer. On the absolute scale it scores 0.7 · 0.164.
    #[test]
    fn a_weak_best_match_scores_low_on_a_cosine_collection() {
        let fused = fuse(
            &hits(&[(1, 0.164), (2, 0.10), (3, 0.02)]),
            &[],
            &Completion::default(),
            DEFAULT,
            Metric::Cosine,
        );
        assert_eq!(fused[0].slot, 1);
        assert!(
            (fused[0].score - 0.7 * 0.164).abs() < 1e-6,
            "{}",
            fused[0].score
        );
        assert!(fused.iter().all(|r| r.score < 0.2));
    }

    /// A word match alone (a common word, a low BM25 score) does not lift a weak vector match
    /// near a strong one: the text part saturates instead of making the best text hit 1.
    #[test]
    fn a_common_word_match_adds_little_on_a_cosine_collection() {
        let weak = fuse(
            &hits(&[(1, 0.2)]),
            &hits(&[(1, 1.0)]),
            &Completion::default(),
            DEFAULT,
            Metric::Cosine,
        );
        let strong = fuse(
            &hits(&[(1, 0.7)]),
            &hits(&[(1, 8.0)]),
            &Completion::default(),
            DEFAULT,
            Metric::Cosine,
        );
        let want_weak = 0.7 * 0.2 + 0.3 * (1.0 / 5.0);
        let want_strong = 0.7 * 0.7 + 0.3 * (8.0 / 12.0);
        assert!(
            (weak[0].score - want_weak).abs() < 1e-6,
            "{}",
            weak[0].score
        );
        assert!(
            (strong[0].score - want_strong).abs() < 1e-6,
            "{}",
            strong[0].score
        );
        assert!(weak[0].score < 0.3 && strong[0].score > 0.6);
    }

    /// Scores on the absolute scale do not depend on the other candidates: adding a better
    /// record to a search leaves a hit's score as it was.
    #[test]
    fn cosine_scores_do_not_depend_on_the_other_candidates() {
        let alone = fuse(
            &hits(&[(1, 0.5)]),
            &hits(&[(1, 2.0)]),
            &Completion::default(),
            DEFAULT,
            Metric::Cosine,
        );
        let beside = fuse(
            &hits(&[(2, 0.9), (1, 0.5)]),
            &hits(&[(2, 9.0), (1, 2.0)]),
            &Completion::default(),
            DEFAULT,
            Metric::Cosine,
        );
        let of = |r: &[Ranked]| r.iter().find(|r| r.slot == 1).map(|r| r.score);
        assert_eq!(of(&alone), of(&beside));
        assert_eq!(beside[0].slot, 2);
    }

    /// Negative cosines count as 0, and every fused score stays in [0, 1].
    #[test]
    fn cosine_fusion_stays_in_the_unit_interval() {
        let fused = fuse(
            &hits(&[(1, 1.0), (2, -1.0)]),
            &hits(&[(1, f32::MAX), (2, 0.0)]),
            &Completion::default(),
            Fusion::Weighted { alpha: 0.5 },
            Metric::Cosine,
        );
        let scores: Vec<(u32, f32)> = fused.iter().map(|r| (r.slot, r.score)).collect();
        assert_eq!(scores, vec![(1, 1.0), (2, 0.0)]);
    }

    #[test]
    fn weighted_fusion_stays_finite_at_the_extremes() {
        for metric in [Metric::Dot, Metric::L2] {
            let fused = fuse(
                &hits(&[(1, f32::MAX), (2, f32::MIN), (3, 0.0)]),
                &hits(&[(2, 3.0), (3, 1.0)]),
                &Completion::default(),
                Fusion::Weighted { alpha: 0.5 },
                metric,
            );
            let scores: Vec<(u32, f32)> = fused.iter().map(|r| (r.slot, r.score)).collect();
            assert_eq!(scores, vec![(1, 0.5), (2, 0.5), (3, 0.25)]);
        }
    }

    /// Dot products and distances have no scale of their own: each channel is min-max
    /// normalised over its candidates there.
    #[test]
    fn weighted_sum_normalises_each_channel_on_dot_and_l2() {
        for metric in [Metric::Dot, Metric::L2] {
            let fused = fuse(
                &hits(&[(1, 0.9), (2, 0.1)]),
                &hits(&[(2, 10.0), (1, 0.0)]),
                &Completion::default(),
                Fusion::Weighted { alpha: 0.75 },
                metric,
            );
            assert_eq!(fused[0].slot, 1);
            assert!((fused[0].score - 0.75).abs() < 1e-6);
            assert!((fused[1].score - 0.25).abs() < 1e-6);
        }
    }

    /// The channels' own scores are what `explain` shows, whatever the scale of the fusion.
    #[test]
    fn explain_carries_the_channels_own_scores() {
        let fused = fuse(
            &hits(&[(1, 0.42)]),
            &hits(&[(1, 6.5)]),
            &Completion::default(),
            DEFAULT,
            Metric::Cosine,
        );
        assert_eq!(fused[0].explain.vector_score, Some(0.42));
        assert_eq!(fused[0].explain.text_score, Some(6.5));
    }
}
