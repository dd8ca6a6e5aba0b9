//! Numeric hygiene for vectors: which `f32` vectors Strata accepts, stored or queried, so that
//! every score between two of them is a finite `f32`.
//!
//! The one rule: every component is finite and the vector's euclidean (L2) norm is at most
//! [`MAX_VECTOR_NORM`]. Why that bound: for accepted `a` and `b`, Cauchy–Schwarz gives
//! `|a·b| ≤ ‖a‖‖b‖ ≤ 1e30`, and the triangle inequality gives `‖a − b‖² ≤ (‖a‖ + ‖b‖)² ≤ 4e30`;
//! squared norms and single products are at most `1e30` as well. `f32::MAX` is about `3.4e38`,
//! so eight orders of magnitude remain for rounding, which grows at most like `n · ε` with the
//! dimension `n` (below 256 even for a dimension of `u32::MAX`): every dot product, squared L2
//! distance and norm the kernels compute in `f32`, in any summation order, stays finite. The
//! bound is dimension-free, so it holds whatever `max_dim` a server configures, and it is
//! fifteen orders of magnitude above the unit-scale vectors embedding models produce.

use crate::RecordError;

/// The largest euclidean norm an accepted vector may have; it bounds every component too.
pub const MAX_VECTOR_NORM: f64 = 1e15;

/// The largest `f32` within [`MAX_VECTOR_NORM`] (the cast rounds 1e15 down to
/// 999,999,986,991,104): a component's magnitude is within the bound exactly when it is at
/// most this.
const LARGEST_COMPONENT: f32 = MAX_VECTOR_NORM as f32;

/// Independent partial sums in [`squared_norm`]: one sum would be a chain of dependent `f64`
/// additions, about four cycles per component (a 128-d query's check was ~1 % of a search's
/// time, docs/benchmarks.md, issue 15); eight vectorise and overlap.
const LANES: usize = 8;

/// The squared euclidean norm of `v`, in `f64`: each square is exact there, and the sum (in
/// [`LANES`] partial sums, so not in index order) is within a relative `n · 2⁻⁵³` of the true
/// one. Finite for every finite `f32` vector of any length that fits in memory.
pub fn squared_norm(v: &[f32]) -> f64 {
    let mut lanes = [0.0f64; LANES];
    let mut chunks = v.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane += f64::from(x) * f64::from(x);
        }
    }
    for (lane, &x) in lanes.iter_mut().zip(chunks.remainder()) {
        *lane += f64::from(x) * f64::from(x);
    }
    lanes.iter().sum()
}

/// Checks a vector's values against the rule above (its dimension is checked against its
/// collection by [`crate::check_vector`]).
///
/// The error names the first component that is not finite or that alone exceeds the bound
/// (`vector[i]`), else the whole vector (`vector`) when only the norm is too large. The norm is
/// computed in `f64` ([`squared_norm`]), where it cannot overflow or underflow for any finite
/// `f32` input; a norm within its rounding of the bound is computed again as one running sum
/// in index order, so every vector gets the decision it always got.
pub fn check_vector_values(vector: &[f32]) -> Result<(), RecordError> {
    // A fold, not `all`: no early exit, so it vectorises. False for a NaN as well as for an
    // infinity or a component past the bound.
    let within = vector
        .iter()
        .fold(true, |ok, &x| ok & (x.abs() <= LARGEST_COMPONENT));
    if !within && let Some(bad) = first_bad_component(vector) {
        return Err(bad);
    }
    let mut norm = squared_norm(vector).sqrt();
    // Within rounding of the bound, the decision is the running sum's in index order, as it
    // always was: a vector accepted once (an export of it, say) is accepted again.
    let margin = MAX_VECTOR_NORM * (vector.len() as f64 + 8.0) * f64::EPSILON;
    if (norm - MAX_VECTOR_NORM).abs() <= margin {
        norm = running_squared_norm(vector).sqrt();
    }
    if norm > MAX_VECTOR_NORM {
        return Err(RecordError::VectorNormTooLarge { norm });
    }
    Ok(())
}

/// The squared norm as one running sum in index order: the check's decision near the bound.
#[cold]
fn running_squared_norm(vector: &[f32]) -> f64 {
    let mut squares = 0.0f64;
    for &x in vector {
        squares += f64::from(x) * f64::from(x);
    }
    squares
}

/// The error for the first component of `vector` that is not finite or exceeds the bound
/// alone, if one does.
#[cold]
fn first_bad_component(vector: &[f32]) -> Option<RecordError> {
    vector.iter().enumerate().find_map(|(position, &x)| {
        if !x.is_finite() {
            Some(RecordError::NonFiniteVector { position })
        } else if x.abs() > LARGEST_COMPONENT {
            Some(RecordError::VectorComponentTooLarge { position, value: x })
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The largest `f32` that is still within the bound, and the smallest beyond it.
    fn edges() -> (f32, f32) {
        let inside = MAX_VECTOR_NORM as f32;
        let inside = if f64::from(inside) > MAX_VECTOR_NORM {
            inside.next_down()
        } else {
            inside
        };
        (inside, inside.next_up())
    }

    #[test]
    fn the_bound_is_tight_on_both_sides() {
        let (inside, outside) = edges();
        assert_eq!(inside, LARGEST_COMPONENT);
        assert!(f64::from(inside) <= MAX_VECTOR_NORM && f64::from(outside) > MAX_VECTOR_NORM);
        assert_eq!(check_vector_values(&[0.0, -inside]), Ok(()));
        assert_eq!(
            check_vector_values(&[0.0, -outside]),
            Err(RecordError::VectorComponentTooLarge {
                position: 1,
                value: -outside
            })
        );
        // Two components within the bound whose norm is not.
        assert!(matches!(
            check_vector_values(&[inside, inside]),
            Err(RecordError::VectorNormTooLarge { .. })
        ));
    }

    #[test]
    fn the_reported_vectors_are_refused_with_the_field_named() {
        let write = [3e38f32, -3e38, 3e38, -3e38];
        let err = check_vector_values(&write).unwrap_err();
        assert!(err.to_string().starts_with("vector[0]: "), "{err}");
        assert!(err.to_string().contains("1e15"), "{err}");
        let err = check_vector_values(&[f32::MAX; 4]).unwrap_err();
        assert!(err.to_string().starts_with("vector[0]: "), "{err}");
        let err = check_vector_values(&[1.0, f32::NAN]).unwrap_err();
        assert!(err.to_string().starts_with("vector[1]: "), "{err}");
        let err = check_vector_values(&[6e14; 4]).unwrap_err();
        assert!(err.to_string().starts_with("vector: "), "{err}");
        assert!(err.to_string().contains("1e15"), "{err}");
    }

    proptest! {
        /// The partial sums give the running sum's value up to its rounding, at every length
        /// (below, at and past a multiple of the lanes).
        #[test]
        fn squared_norm_is_the_sum_of_squares(v in proptest::collection::vec(-1e6f32..1e6, 0..70)) {
            let running: f64 = v.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
            let tolerance = running * 1e-14;
            prop_assert!((squared_norm(&v) - running).abs() <= tolerance);
        }
    }

    /// Vectors whose norm lies within rounding of the bound, where the partial sums and the
    /// running sum round apart: the decision is the running sum's, as before the partial sums.
    #[test]
    fn a_norm_at_the_bound_is_decided_as_the_running_sum_decides_it() {
        let head = [999_999_986_991_104.0f32, 161_139_015_680.0];
        let mut refused_before = head.to_vec();
        refused_before.push(7_211_649_536.0);
        refused_before.extend([9_873_176.0f32; 14]);
        let mut accepted_before = head.to_vec();
        accepted_before.push(7_211_725_824.0);
        accepted_before.extend([7_664_370.5f32; 22]);
        for (v, accepted) in [(refused_before, false), (accepted_before, true)] {
            let running: f64 = v.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
            assert_eq!(running.sqrt() <= MAX_VECTOR_NORM, accepted, "the model");
            assert_eq!(check_vector_values(&v).is_ok(), accepted, "{v:?}");
        }
    }

    #[test]
    fn tiny_and_zero_values_are_fine() {
        let tiny = f32::from_bits(1); // the smallest subnormal
        assert_eq!(check_vector_values(&[tiny, -tiny, 0.0, -0.0]), Ok(()));
        assert_eq!(check_vector_values(&[]), Ok(()));
    }

    /// Components from every region that matters: zeros, subnormals, ordinary values, values
    /// around the bound; with `bad`, also values beyond it, up to `f32::MAX`, and non-finite
    /// ones (rarely, so that long vectors are not all refused at their first component).
    fn component(bad: bool) -> BoxedStrategy<f32> {
        let (inside, outside) = edges();
        let good = prop_oneof![
            40 => -1.0f32..1.0,
            5 => Just(0.0f32),
            5 => Just(-0.0f32),
            5 => (1u32..0x0080_0000).prop_map(f32::from_bits),
            2 => Just(f32::MIN_POSITIVE),
            1 => Just(inside),
            1 => Just(-inside),
            1 => 1e13f32..1e15,
        ];
        if !bad {
            return good.boxed();
        }
        prop_oneof![
            120 => good,
            1 => Just(outside),
            1 => Just(-outside),
            1 => Just(f32::MAX),
            1 => Just(f32::MIN),
            1 => Just(f32::INFINITY),
            1 => Just(f32::NAN),
        ]
        .boxed()
    }

    /// Vectors short and long (past the default `max_dim` of 4096), with or without values
    /// that no vector may hold, and long ordinary vectors with one component at either side of
    /// the bound (the only way a long vector lands near it).
    fn vector() -> impl Strategy<Value = Vec<f32>> {
        let (inside, outside) = edges();
        let mixed = (
            any::<bool>(),
            prop_oneof![3 => 1usize..64, 1 => 1usize..4200],
        )
            .prop_flat_map(|(bad, n)| proptest::collection::vec(component(bad), n));
        let ordinary = prop_oneof![
            8 => -1.0f32..1.0,
            1 => Just(-0.0f32),
            1 => (1u32..0x0080_0000).prop_map(f32::from_bits),
        ];
        let edge = prop_oneof![Just(inside), Just(-inside), Just(outside), Just(-outside)];
        let near_bound = (
            proptest::collection::vec(ordinary, 1..4200),
            edge,
            any::<usize>(),
        )
            .prop_map(|(mut v, edge, at)| {
                let n = v.len();
                v[at % n] = edge;
                v
            });
        prop_oneof![mixed, near_bound]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// Accepted exactly when finite and within the bound; a refusal names the right field.
        #[test]
        fn accepts_exactly_the_bounded_finite_vectors(v in vector()) {
            let bad_component = v
                .iter()
                .position(|x| !x.is_finite() || f64::from(x.abs()) > MAX_VECTOR_NORM);
            let norm = v.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt();
            match (check_vector_values(&v), bad_component) {
                (Err(RecordError::NonFiniteVector { position }), Some(p)) => {
                    prop_assert_eq!(position, p);
                    prop_assert!(!v[p].is_finite());
                }
                (Err(RecordError::VectorComponentTooLarge { position, .. }), Some(p)) => {
                    prop_assert_eq!(position, p);
                }
                (Err(e @ RecordError::VectorNormTooLarge { .. }), None) => {
                    prop_assert!(norm > MAX_VECTOR_NORM);
                    prop_assert!(e.to_string().starts_with("vector: "));
                }
                (Ok(()), None) => {
                    prop_assert!(norm <= MAX_VECTOR_NORM);
                    // The promise the bound makes: f32 arithmetic on it stays finite.
                    let sq: f32 = v.iter().map(|x| x * x).sum();
                    prop_assert!(sq.is_finite() && (sq * 4.0).is_finite());
                }
                (got, expected) => prop_assert!(false, "{got:?} for bad component {expected:?}"),
            }
        }
    }
}
