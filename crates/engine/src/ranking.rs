//! Confidence and recency in ranking (`docs/memory-intelligence.md`):
//!
//! ```text
//! score = ((1 − w) · n + w · c) · r        r = 0.5^(age / h)
//! ```
//!
//! `n` is the hit's score (a channel's or the fused one) min-max normalised over the ranked
//! candidates into [0.5, 1] (1 when they all tie): the weakest candidate keeps half the
//! relevance of the best rather than none, so confidence and recency can lift it, `c` the record's confidence, `w` the request's
//! `confidence_weight` (0 when absent), `age` the time since the record's `created_at` (never
//! negative; `r` never below 2^-126, see [`RECENCY_FLOOR`]) and `h` the recency half-life (the request's, else the collection's; no decay
//! when neither is set). The candidates are at least 50 per channel, so a confident or recent
//! record a little below the top `k` can rise into it. Only visible records are candidates, so
//! nothing the caller cannot see moves the normalisation.

use strata_types::{Millis, SearchRequest};

use crate::EngineError;

/// The smallest recency factor (2^-126, ~1.2e-38): records older than ~126 half-lives share
/// it.
pub(crate) const RECENCY_FLOOR: f32 = f32::MIN_POSITIVE;

/// What to fold into a search's ranking.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Boost {
    confidence_weight: f32,
    half_life_ms: Option<f64>,
    now: Millis,
}

/// One hit's parts of the boosted score, for `explain`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Boosted {
    pub score: f32,
    pub confidence: Option<f32>,
    pub recency: Option<f32>,
}

impl Boost {
    /// The boost a request asks for (with `half_life_secs` the effective half-life), or
    /// `None` when it changes nothing.
    pub fn of(s: &SearchRequest, half_life_secs: Option<f64>, now: Millis) -> Option<Boost> {
        let w = s.confidence_weight.unwrap_or(0.0);
        if w == 0.0 && half_life_secs.is_none() {
            return None;
        }
        Some(Boost {
            confidence_weight: w,
            half_life_ms: half_life_secs.map(|h| h * 1000.0),
            now,
        })
    }

    /// `n`, the normalised relevance in [0.5, 1], from a hit's score and the candidates'
    /// range.
    pub fn normalise(score: f32, min: f32, max: f32) -> f32 {
        if max > min {
            let unit = (f64::from(score) - f64::from(min)) / (f64::from(max) - f64::from(min));
            (0.5 + 0.5 * unit) as f32
        } else {
            1.0
        }
    }

    /// The boosted score of a hit with normalised relevance `n` on a record with this
    /// confidence value and creation time.
    pub fn apply(&self, n: f32, confidence: f64, created_at: Millis) -> Boosted {
        let w = self.confidence_weight;
        let confidence = (w > 0.0).then(|| confidence.clamp(0.0, 1.0) as f32);
        let relevance = (1.0 - w) * n + w * confidence.unwrap_or(0.0);
        let recency = self.half_life_ms.map(|h| {
            let age = self.now.saturating_sub(created_at).max(0) as f64;
            // Floored at the smallest normal `f32`: past ~126 half-lives the factor would
            // reach 0 (or lose its precision), every old record would score 0 and they would
            // come back in slot order. Floored, they rank below every newer record and by
            // relevance among themselves.
            (0.5f64.powf(age / h) as f32).max(RECENCY_FLOOR)
        });
        Boosted {
            score: relevance * recency.unwrap_or(1.0),
            confidence,
            recency,
        }
    }
}

/// Checks the request's ranking fields, naming the field.
pub(crate) fn check(s: &SearchRequest) -> Result<(), EngineError> {
    if let Some(w) = s.confidence_weight
        && !(0.0..=1.0).contains(&w)
    {
        return Err(EngineError::BadRequest(
            "confidence_weight: must be 0 to 1".into(),
        ));
    }
    if let Some(h) = s.recency_half_life_secs
        && !(h.is_finite() && h > 0.0)
    {
        return Err(EngineError::BadRequest(
            "recency_half_life_secs: must be a positive number of seconds".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_formula() {
        let s = SearchRequest {
            confidence_weight: Some(0.25),
            ..SearchRequest::default()
        };
        let b = Boost::of(&s, Some(10.0), 100_000).unwrap();
        // Age 20 s = two half-lives: a factor of 0.25.
        let out = b.apply(0.5, 0.9, 80_000);
        assert!((out.score - (0.75 * 0.5 + 0.25 * 0.9) * 0.25).abs() < 1e-6);
        assert_eq!(out.recency, Some(0.25));
        assert_eq!(out.confidence, Some(0.9));
        // A record from the future is not boosted above a fresh one.
        assert_eq!(b.apply(1.0, 1.0, 200_000).recency, Some(1.0));
        assert!(Boost::of(&SearchRequest::default(), None, 0).is_none());
        // Older than ~126 half-lives: the floor, and relevance still orders such records.
        let (old, older) = (b.apply(1.0, 0.9, -3_000_000), b.apply(0.6, 0.9, -3_000_000));
        assert_eq!(old.recency, Some(RECENCY_FLOOR));
        assert!(
            old.score > older.score && older.score > 0.0,
            "{old:?} {older:?}"
        );
        assert_eq!(Boost::normalise(3.0, 1.0, 5.0), 0.75);
        assert_eq!(Boost::normalise(1.0, 1.0, 5.0), 0.5);
        assert_eq!(Boost::normalise(3.0, 3.0, 3.0), 1.0);
    }
}
