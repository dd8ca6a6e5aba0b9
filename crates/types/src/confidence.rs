//! How evidence moves a memory's confidence: a Beta-Bernoulli update with pseudo-counts.
//!
//! A memory's confidence is the mean of a Beta(α, β) belief that it is true. A collection's
//! initial value `p₀` (0.5 unless the collection says otherwise) is the prior mean, held with
//! the weight of [`PRIOR_STRENGTH`] observations: α₀ = p₀·n₀, β₀ = (1 − p₀)·n₀. Each piece of
//! evidence is one (possibly fractional) Bernoulli observation `x ∈ [0, 1]`: it adds `x` to α
//! and `1 − x` to β. `corroborate` is `x = 1`, `contradict` is `x = 0`, `signal` is any `x`.
//! After `n` observations α + β = n₀ + n, so the posterior mean needs only the current value
//! and the evidence count:
//!
//! ```text
//! value' = (value · (n₀ + n) + x) / (n₀ + n + 1)
//! ```
//!
//! The new value is a convex combination of the old value and `x`, so it stays in [0, 1], and
//! it rises strictly with `x`. Early evidence moves it a lot, later evidence less: a memory
//! corroborated 20 times is not undone by one contradiction.

use serde::{Deserialize, Serialize};

use crate::Confidence;

/// The weight of the prior, in observations: the initial value counts as two pieces of
/// evidence (the Laplace rule when it is 0.5), so the first corroboration of a fresh memory
/// moves it from 0.5 to 0.667, not to 1.
pub const PRIOR_STRENGTH: f64 = 2.0;

/// One piece of evidence about a memory.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Evidence {
    /// An observation `x ∈ [0, 1]`: how strongly this evidence supports the memory.
    Signal(f64),
    /// Full support (`x = 1`); counted in `corroborations`.
    Corroborate,
    /// Full contradiction (`x = 0`); counted in `contradictions`.
    Contradict,
}

/// The body of `POST /v1/memories/{id}/evidence`: exactly one of the three fields.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct EvidenceRequest {
    /// How strongly the evidence supports the memory, 0 (contradicts) to 1 (confirms).
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub signal: Option<f64>,
    /// `true`: the memory was confirmed (a signal of 1, counted in `corroborations`).
    pub corroborate: Option<bool>,
    /// `true`: the memory was contradicted (a signal of 0, counted in `contradictions`).
    pub contradict: Option<bool>,
}

/// Evidence that does not say one thing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EvidenceError(pub String);

impl EvidenceRequest {
    /// The one piece of evidence the body gives.
    pub fn evidence(&self) -> Result<Evidence, EvidenceError> {
        let given = [
            self.signal.map(Evidence::Signal),
            (self.corroborate == Some(true)).then_some(Evidence::Corroborate),
            (self.contradict == Some(true)).then_some(Evidence::Contradict),
        ];
        let mut given = given.into_iter().flatten();
        let (Some(e), None) = (given.next(), given.next()) else {
            return Err(EvidenceError(
                "signal: give exactly one of signal (0 to 1), corroborate: true or \
                 contradict: true"
                    .into(),
            ));
        };
        if let Evidence::Signal(x) = e
            && !(0.0..=1.0).contains(&x)
        {
            return Err(EvidenceError(format!("signal: {x} is not between 0 and 1")));
        }
        Ok(e)
    }
}

impl Confidence {
    /// A fresh memory's confidence in a collection whose initial value is `value`.
    pub fn initial(value: f64) -> Confidence {
        Confidence {
            value,
            ..Confidence::default()
        }
    }

    /// The posterior after one more piece of evidence (see the module docs for the rule).
    /// A stored value outside [0, 1] (not writable through the API) is clamped first, so the
    /// result is always in [0, 1].
    pub fn with_evidence(self, evidence: Evidence) -> Confidence {
        let x = match evidence {
            Evidence::Signal(x) => x.clamp(0.0, 1.0),
            Evidence::Corroborate => 1.0,
            Evidence::Contradict => 0.0,
        };
        let prior = self.value.clamp(0.0, 1.0);
        let weight = PRIOR_STRENGTH + f64::from(self.evidence_count);
        let value = ((prior * weight + x) / (weight + 1.0)).clamp(0.0, 1.0);
        // Past the counters' range the evidence still moves the value, but no counter does:
        // a corroboration or contradiction counted without its piece of evidence would make
        // the counters no longer add up.
        let counted = u32::from(self.evidence_count < u32::MAX);
        Confidence {
            value,
            evidence_count: self.evidence_count + counted,
            corroborations: self
                .corroborations
                .saturating_add(counted * u32::from(matches!(evidence, Evidence::Corroborate))),
            contradictions: self
                .contradictions
                .saturating_add(counted * u32::from(matches!(evidence, Evidence::Contradict))),
        }
    }
}

/// Whether `value` is a confidence: a number in [0, 1].
pub fn check_confidence(field: &'static str, value: f64) -> Result<(), EvidenceError> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(EvidenceError(format!(
            "{field}: {value} is not between 0 and 1"
        )))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn conf(value: f64, n: u32) -> Confidence {
        Confidence {
            value,
            evidence_count: n,
            ..Confidence::default()
        }
    }

    #[test]
    fn counters_at_their_end_stay_consistent() {
        let full = Confidence {
            value: 0.9,
            evidence_count: u32::MAX,
            corroborations: u32::MAX,
            contradictions: 0,
        };
        let c = full.with_evidence(Evidence::Contradict);
        assert!(c.value < 0.9);
        assert_eq!(
            (c.evidence_count, c.corroborations, c.contradictions),
            (u32::MAX, u32::MAX, 0)
        );
    }

    #[test]
    fn first_corroboration_of_a_fresh_memory_is_laplace() {
        let c = Confidence::default().with_evidence(Evidence::Corroborate);
        assert!((c.value - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(
            (c.evidence_count, c.corroborations, c.contradictions),
            (1, 1, 0)
        );
        let c = c.with_evidence(Evidence::Contradict);
        assert!((c.value - 0.5).abs() < 1e-12);
        assert_eq!(
            (c.evidence_count, c.corroborations, c.contradictions),
            (2, 1, 1)
        );
        let c = c.with_evidence(Evidence::Signal(0.75));
        assert!((c.value - (0.5 * 4.0 + 0.75) / 5.0).abs() < 1e-12);
        assert_eq!(
            (c.evidence_count, c.corroborations, c.contradictions),
            (3, 1, 1)
        );
    }

    #[test]
    fn the_body_gives_exactly_one_piece_of_evidence() {
        let body = |v: serde_json::Value| serde_json::from_value::<EvidenceRequest>(v).unwrap();
        let e = |v| body(v).evidence();
        assert_eq!(
            e(serde_json::json!({"signal": 0.25})),
            Ok(Evidence::Signal(0.25))
        );
        assert_eq!(
            e(serde_json::json!({"corroborate": true})),
            Ok(Evidence::Corroborate)
        );
        assert_eq!(
            e(serde_json::json!({"contradict": true})),
            Ok(Evidence::Contradict)
        );
        for bad in [
            serde_json::json!({}),
            serde_json::json!({"signal": 1.5}),
            serde_json::json!({"signal": -0.1}),
            serde_json::json!({"signal": 0.5, "corroborate": true}),
            serde_json::json!({"corroborate": false}),
            serde_json::json!({"corroborate": true, "contradict": true}),
        ] {
            let err = e(bad.clone()).unwrap_err();
            assert!(err.0.starts_with("signal:"), "{bad}: {err}");
        }
        assert!(serde_json::from_value::<EvidenceRequest>(serde_json::json!({"x": 1})).is_err());
    }

    proptest! {
        /// Bounded: whatever the history, the value stays in [0, 1]; and monotone: a larger
        /// signal never gives a lower value.
        #[test]
        fn update_is_bounded_and_monotone_in_the_signal(
            value in 0.0f64..=1.0,
            n in 0u32..10_000,
            a in 0.0f64..=1.0,
            b in 0.0f64..=1.0,
            history in proptest::collection::vec(0.0f64..=1.0, 0..50),
        ) {
            let mut c = conf(value, n);
            for x in history {
                c = c.with_evidence(Evidence::Signal(x));
                prop_assert!((0.0..=1.0).contains(&c.value));
            }
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            let low = c.with_evidence(Evidence::Signal(lo));
            let high = c.with_evidence(Evidence::Signal(hi));
            prop_assert!((0.0..=1.0).contains(&low.value));
            prop_assert!((0.0..=1.0).contains(&high.value));
            prop_assert!(low.value <= high.value);
            if hi > lo {
                prop_assert!(low.value < high.value || (high.value - low.value).abs() < 1e-12);
            }
            // Corroboration is the largest signal, contradiction the smallest.
            let up = c.with_evidence(Evidence::Corroborate).value;
            let down = c.with_evidence(Evidence::Contradict).value;
            prop_assert!(down <= low.value && high.value <= up);
            prop_assert_eq!(low.evidence_count, c.evidence_count + 1);
        }
    }
}
