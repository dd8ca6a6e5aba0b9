//! The similarity metrics an index can use, and the one scoring convention: higher is better.

use serde::{Deserialize, Serialize};

use crate::kernels;

/// How two vectors are compared. Serialised in lowercase (`"cosine"`, `"dot"`, `"l2"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Cosine similarity; the HNSW index stores normalised vectors for it.
    Cosine,
    /// Raw inner product (maximum inner product search).
    Dot,
    /// Euclidean distance.
    L2,
}

impl Metric {
    /// Scores `b` against the query `a`; HIGHER IS BETTER for every metric:
    /// cosine similarity for [`Metric::Cosine`], the dot product for [`Metric::Dot`] and the
    /// negative euclidean distance `-sqrt(l2_squared)` for [`Metric::L2`].
    ///
    /// The score is always finite (see [`Metric::finite_score`]), so every candidate can rank.
    #[inline]
    pub fn score(self, a: &[f32], b: &[f32]) -> f32 {
        let raw = match self {
            Metric::Cosine => kernels::cosine_similarity(a, b),
            Metric::Dot => kernels::dot(a, b),
            Metric::L2 => -kernels::l2_squared(a, b).sqrt(),
        };
        self.finite_score(raw)
    }

    /// Brings a raw score into the metric's finite range: cosine into `[-1, 1]`, others into
    /// `[f32::MIN, f32::MAX]` (an overflow saturates), NaN to the lowest score, and `-0.0` to `0.0`.
    ///
    /// Why not drop non-finite scores: a dropped candidate makes a search return fewer than
    /// `k` hits while `k` records exist. Vectors that pass `strata-types` validation never
    /// produce one (their norms are bounded); this is the defence for anything that did not.
    #[inline]
    pub fn finite_score(self, raw: f32) -> f32 {
        let (lowest, highest) = match self {
            Metric::Cosine => (-1.0, 1.0),
            Metric::Dot | Metric::L2 => (f32::MIN, f32::MAX),
        };
        if raw.is_nan() {
            lowest
        } else if raw == 0.0 {
            // An exact l2 match scores `-sqrt(0)`, which is `-0.0` and would be written as
            // such in a response: every zero score is the one zero.
            0.0
        } else {
            raw.clamp(lowest, highest)
        }
    }

    /// Whether vectors must be normalised before they enter an index of this metric.
    pub fn needs_normalization(self) -> bool {
        matches!(self, Metric::Cosine)
    }

    /// Normalises `v` in place to unit length if this metric is [`Metric::Cosine`], so that
    /// cosine similarity becomes a plain dot product. Zero vectors stay zero. Other metrics
    /// leave `v` unchanged.
    pub fn normalize_for_index(self, v: &mut [f32]) {
        if self.needs_normalization() {
            normalize(v);
        }
    }

    /// The metric's lowercase name, as serialised.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Cosine => "cosine",
            Metric::Dot => "dot",
            Metric::L2 => "l2",
        }
    }

    /// A stable one-byte code used in serialised indexes.
    pub(crate) fn code(self) -> u8 {
        match self {
            Metric::Cosine => 1,
            Metric::Dot => 2,
            Metric::L2 => 3,
        }
    }

    /// Inverse of [`Metric::code`].
    pub(crate) fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Metric::Cosine),
            2 => Some(Metric::Dot),
            3 => Some(Metric::L2),
            _ => None,
        }
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Scales `v` to unit euclidean length in place; a zero vector is left as it is.
///
/// The norm is computed in `f64`: in `f32` it overflows for components beyond ~1e19 and
/// underflows for tiny ones, and a vector left unnormalised would then score far outside
/// `[-1, 1]` in a cosine graph. In `f64` it is finite and non-zero for every finite non-zero
/// `f32` vector. Summed in partial sums (`squared_norm`): once per write or query, but a
/// single running sum cost about four cycles per component, ~0.45 µs at 384 dimensions.
pub fn normalize(v: &mut [f32]) {
    let norm = strata_types::squared_norm(v).sqrt();
    if norm > 0.0 && norm.is_finite() {
        // A multiplication by the reciprocal, not a division per component (several times
        // the cost): in `f64` the two differ by an ulp or so, which the rounding to `f32`
        // all but always removes.
        let scale = 1.0 / norm;
        v.iter_mut()
            .for_each(|x| *x = (f64::from(*x) * scale) as f32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::tests::{extreme_pair, extreme_vector};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// Whatever finite vectors come in (validated or not), every metric's score is finite
        /// and cosine stays in [-1, 1], so no candidate is lost and no `null` is serialised.
        #[test]
        fn every_score_is_finite((a, b) in extreme_pair()) {
            for m in [Metric::Cosine, Metric::Dot, Metric::L2] {
                let s = m.score(&a, &b);
                prop_assert!(s.is_finite(), "{m}: {s}");
                if m == Metric::Cosine {
                    prop_assert!((-1.0..=1.0).contains(&s), "{s}");
                }
            }
        }

        /// Normalising any finite non-zero vector gives a unit vector, however huge or tiny
        /// its components: a cosine graph never holds an unnormalised vector.
        #[test]
        fn normalize_reaches_unit_length(n in 1usize..4200, seed in any::<u64>()) {
            let mut v = extreme_vector(n, seed);
            let nonzero = v.iter().any(|x| *x != 0.0);
            normalize(&mut v);
            prop_assert!(v.iter().all(|x| x.is_finite()));
            let norm = v.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt();
            if nonzero {
                prop_assert!((norm - 1.0).abs() < 1e-3, "{norm}");
            } else {
                prop_assert_eq!(norm, 0.0);
            }
        }
    }

    #[test]
    fn finite_score_saturates_and_sinks_nan() {
        assert_eq!(Metric::Cosine.finite_score(1.000_001), 1.0);
        assert_eq!(Metric::Cosine.finite_score(f32::NAN), -1.0);
        assert_eq!(Metric::Dot.finite_score(f32::INFINITY), f32::MAX);
        assert_eq!(Metric::Dot.finite_score(f32::NAN), f32::MIN);
        assert_eq!(Metric::L2.finite_score(f32::NEG_INFINITY), f32::MIN);
        assert_eq!(Metric::L2.finite_score(-2.5), -2.5);
    }

    #[test]
    fn higher_is_better() {
        let q = [1.0, 0.0];
        let near = [0.9, 0.1];
        let far = [-1.0, 0.5];
        for m in [Metric::Cosine, Metric::Dot, Metric::L2] {
            assert!(m.score(&q, &near) > m.score(&q, &far), "{m}");
        }
    }

    #[test]
    fn l2_score_is_negative_distance() {
        assert_eq!(Metric::L2.score(&[0.0, 0.0], &[3.0, 4.0]), -5.0);
        assert_eq!(Metric::L2.score(&[1.0, 1.0], &[1.0, 1.0]), 0.0);
    }

    #[test]
    fn an_exact_match_scores_positive_zero() {
        // `-0.0 == 0.0`, so the sign is checked: it shows in a response as `-0.0`.
        let s = Metric::L2.score(&[1.0, 2.0], &[1.0, 2.0]);
        assert!(s == 0.0 && s.is_sign_positive(), "{s}");
        for m in [Metric::Cosine, Metric::Dot, Metric::L2] {
            assert!(m.finite_score(-0.0).is_sign_positive(), "{m}");
        }
        let s = Metric::Dot.score(&[1.0, 0.0], &[0.0, 1.0]);
        assert!(s.is_sign_positive(), "{s}");
    }

    #[test]
    fn serde_is_lowercase() {
        for (m, s) in [
            (Metric::Cosine, "\"cosine\""),
            (Metric::Dot, "\"dot\""),
            (Metric::L2, "\"l2\""),
        ] {
            assert_eq!(serde_json::to_string(&m).ok().as_deref(), Some(s));
            assert_eq!(serde_json::from_str::<Metric>(s).ok(), Some(m));
        }
        assert!(serde_json::from_str::<Metric>("\"Cosine\"").is_err());
    }

    #[test]
    fn codes_round_trip() {
        for m in [Metric::Cosine, Metric::Dot, Metric::L2] {
            assert_eq!(Metric::from_code(m.code()), Some(m));
        }
        assert_eq!(Metric::from_code(0), None);
    }

    #[test]
    fn normalization() {
        let mut v = [3.0, 4.0];
        Metric::Cosine.normalize_for_index(&mut v);
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
        let mut w = [3.0, 4.0];
        Metric::L2.normalize_for_index(&mut w);
        assert_eq!(w, [3.0, 4.0]);
        let mut z = [0.0; 4];
        normalize(&mut z);
        assert_eq!(z, [0.0; 4]);
    }
}
