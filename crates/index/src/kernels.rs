//! Distance kernels over `f32` slices: dot product, squared L2 and cosine similarity.
//!
//! On x86-64 the kernels use hand-written AVX-512 (dot, L2) or AVX2 + FMA code chosen at run
//! time; everywhere else, and on x86-64 CPUs without those features, they use a portable scalar
//! fallback. [`simd_level`] says which tier runs.
//!
//! Why hand-written `std::arch` rather than the `simsimd` crate: three kernels over `f32` are
//! about a hundred lines a tier, need no C compiler or build script, and keep the accumulation
//! order under our control (so the scalar/SIMD agreement tests below are meaningful). The
//! HNSW graph calls [`l2_squared_kernel`] / [`dot_kernel`] for every distance.
//!
//! All kernels work on the common prefix of their two arguments; callers are expected to pass
//! slices of equal length (checked by `debug_assert!`).

/// A distance kernel: plain function pointer, chosen once for the CPU (see [`dot_kernel`]).
pub type Kernel = fn(&[f32], &[f32]) -> f32;

/// The SIMD tier the kernels run on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimdLevel {
    /// AVX-512F for dot and L2 (AVX2 + FMA for cosine).
    Avx512,
    /// AVX2 + FMA.
    Avx2,
    /// Portable code (LLVM may still vectorise it for the build's baseline).
    Scalar,
}

/// Asks the CPU to start loading the cache line at `p` without waiting for it (no effect
/// where unsupported): for memory a caller will read soon, at an address it knows before it
/// needs the value, such as a graph node's links and vector, or the engine's record of a hit.
#[inline(always)]
pub fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint; it never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Dot product `sum(a[i] * b[i])`.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    match simd_level() {
        // SAFETY: the CPU supports the tier's features, detected at run time.
        SimdLevel::Avx512 => return unsafe { avx512::dot(a, b) },
        SimdLevel::Avx2 => return unsafe { avx2::dot(a, b) },
        SimdLevel::Scalar => {}
    }
    scalar::dot(a, b)
}

/// Squared euclidean distance `sum((a[i] - b[i])^2)`.
#[inline]
pub fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    match simd_level() {
        // SAFETY: the CPU supports the tier's features, detected at run time.
        SimdLevel::Avx512 => return unsafe { avx512::l2_squared(a, b) },
        SimdLevel::Avx2 => return unsafe { avx2::l2_squared(a, b) },
        SimdLevel::Scalar => {}
    }
    scalar::l2_squared(a, b)
}

/// [`dot`] as a function pointer to this CPU's tier, without the per-call dispatch: for callers
/// that evaluate millions of distances through one pointer (the HNSW graph).
pub fn dot_kernel() -> Kernel {
    #[cfg(target_arch = "x86_64")]
    match simd_level() {
        SimdLevel::Avx512 => return tiers::dot_avx512,
        SimdLevel::Avx2 => return tiers::dot_avx2,
        SimdLevel::Scalar => {}
    }
    scalar::dot
}

/// [`l2_squared`] as a function pointer to this CPU's tier; see [`dot_kernel`].
pub fn l2_squared_kernel() -> Kernel {
    #[cfg(target_arch = "x86_64")]
    match simd_level() {
        SimdLevel::Avx512 => return tiers::l2_avx512,
        SimdLevel::Avx2 => return tiers::l2_avx2,
        SimdLevel::Scalar => {}
    }
    scalar::l2_squared
}

/// Safe wrappers of each tier's kernels, handed out only after the tier was detected.
#[cfg(target_arch = "x86_64")]
mod tiers {
    use super::{avx2, avx512};

    // SAFETY (all four): `dot_kernel` / `l2_squared_kernel` return these only when
    // `simd_level` detected the tier's CPU features.
    pub fn dot_avx512(a: &[f32], b: &[f32]) -> f32 {
        unsafe { avx512::dot(a, b) }
    }
    pub fn l2_avx512(a: &[f32], b: &[f32]) -> f32 {
        unsafe { avx512::l2_squared(a, b) }
    }
    pub fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
        unsafe { avx2::dot(a, b) }
    }
    pub fn l2_avx2(a: &[f32], b: &[f32]) -> f32 {
        unsafe { avx2::l2_squared(a, b) }
    }
}

/// Cosine similarity `dot(a, b) / (|a| |b|)`, always finite and in `[-1, 1]`; 0 when either
/// vector is zero (or holds a NaN, which validated input never does).
#[inline]
pub fn cosine_similarity(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    if simd_level() != SimdLevel::Scalar {
        // SAFETY: both SIMD tiers include AVX2 and FMA, detected at run time.
        let (ab, aa, bb) = unsafe { avx2::dot_and_norms(a, b) };
        return finish_cosine(a, b, ab, aa, bb);
    }
    let (ab, aa, bb) = scalar::dot_and_norms(a, b);
    finish_cosine(a, b, ab, aa, bb)
}

/// Below this squared norm the `f32` sums may have lost precision to subnormal products, so the
/// cosine is recomputed in `f64`. 2^-100: a product that underflows errs by at most 2^-149, so
/// above it even 2^32 such errors move the cosine by less than 2^-17.
const WELL_SCALED_MIN: f32 = 7.888_609e-31;

/// Combines a dot product and two squared norms computed in `f32` into a cosine similarity
/// clamped to `[-1, 1]`. When the `f32` sums overflowed, underflowed or are too small to be
/// precise, the slices are scored again in `f64`, where no finite `f32` input can overflow or
/// underflow; that path is rare (vectors with components beyond ~1e19 or below ~1e-15).
fn finish_cosine(a: &[f32], b: &[f32], ab: f32, aa: f32, bb: f32) -> f32 {
    if ab.is_finite()
        && aa.is_finite()
        && bb.is_finite()
        && aa >= WELL_SCALED_MIN
        && bb >= WELL_SCALED_MIN
    {
        let denominator = aa.sqrt() * bb.sqrt();
        if denominator.is_finite() {
            return (ab / denominator).clamp(-1.0, 1.0);
        }
    }
    cosine_f64(a, b)
}

/// Cosine similarity computed in `f64`: exact enough for any finite `f32` input.
fn cosine_f64(a: &[f32], b: &[f32]) -> f32 {
    let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    let cosine = ab / (aa.sqrt() * bb.sqrt());
    if cosine.is_finite() {
        cosine.clamp(-1.0, 1.0) as f32
    } else {
        // A zero vector (0/0) has no direction; NaN input has none either.
        0.0
    }
}

/// Whether a SIMD tier is in use on this machine (for benchmark reports).
pub fn simd_in_use() -> bool {
    simd_level() != SimdLevel::Scalar
}

/// The tier this machine runs, detected once per process. AVX-512 is used only together with
/// AVX2 + FMA (which cosine still needs), as on every CPU that has it.
#[inline]
pub fn simd_level() -> SimdLevel {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static DETECTED: OnceLock<SimdLevel> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
            if avx2 && is_x86_feature_detected!("avx512f") {
                SimdLevel::Avx512
            } else if avx2 {
                SimdLevel::Avx2
            } else {
                SimdLevel::Scalar
            }
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        SimdLevel::Scalar
    }
}

#[cfg(target_arch = "x86_64")]
#[path = "kernels_avx512.rs"]
mod avx512;

/// Portable kernels. Eight independent accumulators let LLVM vectorise without reassociating.
pub mod scalar {
    const LANES: usize = 8;

    /// Scalar dot product.
    pub fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let mut acc = [0.0f32; LANES];
        let mut ca = a.chunks_exact(LANES);
        let mut cb = b.chunks_exact(LANES);
        for (x, y) in (&mut ca).zip(&mut cb) {
            for i in 0..LANES {
                acc[i] += x[i] * y[i];
            }
        }
        let mut sum: f32 = acc.iter().sum();
        for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
            sum += x * y;
        }
        sum
    }

    /// Scalar squared euclidean distance.
    pub fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let mut acc = [0.0f32; LANES];
        let mut ca = a.chunks_exact(LANES);
        let mut cb = b.chunks_exact(LANES);
        for (x, y) in (&mut ca).zip(&mut cb) {
            for i in 0..LANES {
                let d = x[i] - y[i];
                acc[i] += d * d;
            }
        }
        let mut sum: f32 = acc.iter().sum();
        for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
            let d = x - y;
            sum += d * d;
        }
        sum
    }

    /// Scalar `(dot(a, b), dot(a, a), dot(b, b))` in one pass.
    pub fn dot_and_norms(a: &[f32], b: &[f32]) -> (f32, f32, f32) {
        let (mut ab, mut aa, mut bb) = (0.0f32, 0.0f32, 0.0f32);
        for (x, y) in a.iter().zip(b) {
            ab += x * y;
            aa += x * x;
            bb += y * y;
        }
        (ab, aa, bb)
    }

    /// Scalar cosine similarity (same conventions as [`super::cosine_similarity`]).
    pub fn cosine_similarity(a: &[f32], b: &[f32]) -> f32 {
        let (ab, aa, bb) = dot_and_norms(a, b);
        super::finish_cosine(a, b, ab, aa, bb)
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// Sums the eight lanes of a 256-bit register.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps::<1>(v);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
        _mm_cvtss_f32(s)
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut i = 0;
        // SAFETY (all loads): i + 16 <= n, resp. i + 8 <= n, keeps every load inside both slices.
        while i + 16 <= n {
            unsafe {
                acc0 =
                    _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
                acc1 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(pa.add(i + 8)),
                    _mm256_loadu_ps(pb.add(i + 8)),
                    acc1,
                );
            }
            i += 16;
        }
        if i + 8 <= n {
            unsafe {
                acc0 =
                    _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
            }
            i += 8;
        }
        let mut sum = unsafe { hsum(_mm256_add_ps(acc0, acc1)) };
        for j in i..n {
            sum += a[j] * b[j];
        }
        sum
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut i = 0;
        // SAFETY (all loads): i + 16 <= n, resp. i + 8 <= n, keeps every load inside both slices.
        while i + 16 <= n {
            unsafe {
                let d0 = _mm256_sub_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)));
                let d1 = _mm256_sub_ps(
                    _mm256_loadu_ps(pa.add(i + 8)),
                    _mm256_loadu_ps(pb.add(i + 8)),
                );
                acc0 = _mm256_fmadd_ps(d0, d0, acc0);
                acc1 = _mm256_fmadd_ps(d1, d1, acc1);
            }
            i += 16;
        }
        if i + 8 <= n {
            unsafe {
                let d0 = _mm256_sub_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)));
                acc0 = _mm256_fmadd_ps(d0, d0, acc0);
            }
            i += 8;
        }
        let mut sum = unsafe { hsum(_mm256_add_ps(acc0, acc1)) };
        for j in i..n {
            let d = a[j] - b[j];
            sum += d * d;
        }
        sum
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_and_norms(a: &[f32], b: &[f32]) -> (f32, f32, f32) {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut ab = _mm256_setzero_ps();
        let mut aa = _mm256_setzero_ps();
        let mut bb = _mm256_setzero_ps();
        let mut i = 0;
        // SAFETY: i + 8 <= n keeps every load inside both slices.
        while i + 8 <= n {
            unsafe {
                let x = _mm256_loadu_ps(pa.add(i));
                let y = _mm256_loadu_ps(pb.add(i));
                ab = _mm256_fmadd_ps(x, y, ab);
                aa = _mm256_fmadd_ps(x, x, aa);
                bb = _mm256_fmadd_ps(y, y, bb);
            }
            i += 8;
        }
        let (mut sab, mut saa, mut sbb) = unsafe { (hsum(ab), hsum(aa), hsum(bb)) };
        for j in i..n {
            sab += a[j] * b[j];
            saa += a[j] * a[j];
            sbb += b[j] * b[j];
        }
        (sab, saa, sbb)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Reference in f64, to judge both implementations against the same truth.
    fn reference(a: &[f32], b: &[f32]) -> (f64, f64, f64) {
        let mut r = (0.0f64, 0.0f64, 0.0f64);
        for (&x, &y) in a.iter().zip(b) {
            let (x, y) = (f64::from(x), f64::from(y));
            r.0 += x * y;
            r.1 += (x - y) * (x - y);
            r.2 += x * x;
        }
        r
    }

    fn pair() -> impl Strategy<Value = (Vec<f32>, Vec<f32>)> {
        (1usize..1100).prop_flat_map(|n| {
            (
                proptest::collection::vec(-1.0f32..1.0, n),
                proptest::collection::vec(-1.0f32..1.0, n),
            )
        })
    }

    /// Every tier this CPU can run, as `(name, dot, l2_squared)`, scalar first: each is tested
    /// whichever one `simd_level` picks, so a machine with AVX-512 still tests AVX2.
    pub(crate) fn tiers_here() -> Vec<(&'static str, Kernel, Kernel)> {
        #[allow(unused_mut)]
        let mut found: Vec<(&'static str, Kernel, Kernel)> =
            vec![("scalar", scalar::dot, scalar::l2_squared)];
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
            if avx2 {
                found.push(("avx2", tiers::dot_avx2, tiers::l2_avx2));
            }
            if avx2 && is_x86_feature_detected!("avx512f") {
                found.push(("avx512", tiers::dot_avx512, tiers::l2_avx512));
            }
        }
        found
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn simd_and_scalar_agree((a, b) in pair()) {
            // Rounding error of a length-n f32 sum of terms bounded by 4 grows like n * eps.
            let tol = 1e-5 * a.len() as f32 + 1e-5;
            let (rdot, rl2, _) = reference(&a, &b);
            let tiers = tiers_here();
            let dispatched: (&str, Kernel, Kernel) = ("dispatched", dot, l2_squared);
            let pointers: (&str, Kernel, Kernel) = ("pointer", dot_kernel(), l2_squared_kernel());
            for (name, d, l) in tiers.into_iter().chain([dispatched, pointers]) {
                let (got_dot, got_l2) = (d(&a, &b), l(&a, &b));
                prop_assert!((got_dot - scalar::dot(&a, &b)).abs() <= tol, "{name}");
                prop_assert!((f64::from(got_dot) - rdot).abs() <= f64::from(tol), "{name}");
                prop_assert!((got_l2 - scalar::l2_squared(&a, &b)).abs() <= tol, "{name}");
                prop_assert!((f64::from(got_l2) - rl2).abs() <= f64::from(tol), "{name}");
            }
            prop_assert!((cosine_similarity(&a, &b) - scalar::cosine_similarity(&a, &b)).abs() <= 1e-4);
        }
    }

    /// Every length from 0 to 100 through every tier: the 32-, 16- and 8-wide blocks and the
    /// masked or scalar tails meet at these boundaries.
    #[test]
    fn every_tier_handles_every_tail_length() {
        for n in 0..=100usize {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let (rdot, rl2, _) = reference(&a, &b);
            for (name, d, l) in tiers_here() {
                assert!(
                    (f64::from(d(&a, &b)) - rdot).abs() < 1e-4,
                    "{name} dot n={n}"
                );
                assert!((f64::from(l(&a, &b)) - rl2).abs() < 1e-4, "{name} l2 n={n}");
            }
        }
    }

    #[test]
    fn the_chosen_tier_is_the_best_this_cpu_has() {
        let best = tiers_here().last().map(|t| t.0);
        let expected = match simd_level() {
            SimdLevel::Avx512 => "avx512",
            SimdLevel::Avx2 => "avx2",
            SimdLevel::Scalar => "scalar",
        };
        assert_eq!(best, Some(expected));
    }

    #[test]
    fn known_values() {
        let a = [1.0, 2.0, 3.0];
        let b = [4.0, -5.0, 6.0];
        assert_eq!(dot(&a, &b), 12.0);
        assert_eq!(l2_squared(&a, &b), 9.0 + 49.0 + 9.0);
        assert!((cosine_similarity(&a, &a) - 1.0).abs() < 1e-6);
        assert!((cosine_similarity(&a, &[-1.0, -2.0, -3.0]) + 1.0).abs() < 1e-6);
    }

    #[test]
    fn zero_vectors_have_zero_cosine() {
        assert_eq!(cosine_similarity(&[0.0; 20], &[1.0; 20]), 0.0);
        assert_eq!(scalar::cosine_similarity(&[0.0; 3], &[0.0; 3]), 0.0);
    }

    /// `n` components drawn from every region that breaks naive arithmetic: zeros of both
    /// signs, subnormals, the smallest normal, ordinary values, huge values up to `±f32::MAX`.
    /// Each vector draws from a random subset of those regions, so some are all tiny and some
    /// all huge. Built from a seed with xorshift rather than by proptest's own generators,
    /// which are unoptimised in test builds and took minutes at these lengths.
    pub(crate) fn extreme_vector(n: usize, seed: u64) -> Vec<f32> {
        let mut x = seed | 1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let unit = |r: u64| (r >> 40) as f32 / (1u64 << 24) as f32; // in [0, 1)
        let regions = (next() % 0xFFF) as u16 | 1; // region 0 (ordinary values) always in
        (0..n)
            .map(|_| {
                let r = next();
                let sign = if r & 1 == 0 { 1.0 } else { -1.0 };
                let mut region = (r >> 1) as u32 % 12;
                if regions & (1 << region) == 0 {
                    region = 0;
                }
                sign * match region {
                    0 => unit(r),
                    1 => 0.0,
                    2 => f32::from_bits((r >> 8) as u32 % 0x007F_FFFF + 1), // subnormal
                    3 => f32::MIN_POSITIVE,
                    4 => unit(r) * 1e-30,
                    5 => unit(r) * 1e20,
                    6 => 1e37 + unit(r) * 3e38,
                    7 => f32::MAX,
                    8 => 3e38,
                    9 => unit(r) * 1e15,
                    10 => f32::from_bits(1),
                    _ => unit(r) * 1e-3,
                }
            })
            .collect()
    }

    /// Two vectors of one length, up to past the default `max_dim` of 4096.
    pub(crate) fn extreme_pair() -> impl Strategy<Value = (Vec<f32>, Vec<f32>)> {
        (1usize..4200, any::<u64>(), any::<u64>())
            .prop_map(|(n, a, b)| (extreme_vector(n, a), extreme_vector(n, b)))
    }

    fn reference_cosine(a: &[f32], b: &[f32]) -> Option<f64> {
        let (ab, _, aa) = reference(a, b);
        let bb: f64 = b.iter().map(|&y| f64::from(y) * f64::from(y)).sum();
        (aa > 0.0 && bb > 0.0).then(|| ab / (aa.sqrt() * bb.sqrt()))
    }

    /// `v` scaled in `f64` to euclidean norm `norm` (unchanged if it is zero).
    fn with_norm(v: &[f32], norm: f64) -> Vec<f32> {
        let current = v
            .iter()
            .map(|&x| f64::from(x) * f64::from(x))
            .sum::<f64>()
            .sqrt();
        if current == 0.0 {
            return v.to_vec();
        }
        v.iter()
            .map(|&x| (f64::from(x) / current * norm) as f32)
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        /// Cosine is finite, in [-1, 1], and right, for every pair of finite vectors: huge
        /// components overflow the f32 norms, tiny ones underflow them.
        #[test]
        fn cosine_is_stable_for_any_finite_input((a, b) in extreme_pair()) {
            let expect = reference_cosine(&a, &b);
            for got in [cosine_similarity(&a, &b), scalar::cosine_similarity(&a, &b)] {
                prop_assert!(got.is_finite() && (-1.0..=1.0).contains(&got), "{got}");
                match expect {
                    None => prop_assert_eq!(got, 0.0),
                    // f32 rounding of n terms: well within 1e-3 for n < 4200.
                    Some(e) => prop_assert!((f64::from(got) - e).abs() <= 1e-3, "{got} vs {e}"),
                }
            }
        }

        /// Dot products and squared distances stay finite and accurate whenever the norms
        /// leave headroom: `(|a| + |b|)^2 <= 1e36`, two orders of magnitude below `f32::MAX`.
        /// (strata-types accepts norms up to 1e15, so its vectors have far more headroom.)
        #[test]
        fn bounded_norms_give_finite_dot_and_l2(
            (a, b) in extreme_pair(),
            log_na in -40.0f64..18.0,
            log_nb in -40.0f64..18.0,
        ) {
            let a = with_norm(&a, 10f64.powf(log_na));
            let b = with_norm(&b, 10f64.powf(log_nb));
            let (rdot, rl2, raa) = reference(&a, &b);
            let rbb: f64 = b.iter().map(|&y| f64::from(y) * f64::from(y)).sum();
            // Error bound of an f32 sum of n terms: n * eps * (sum of magnitudes), and the
            // magnitudes sum to at most |a||b|, resp. (|a| + |b|)^2.
            let n = a.len() as f64;
            // Each product that underflows errs by at most the smallest subnormal.
            let tol = |scale: f64| {
                2.0 * n * f64::from(f32::EPSILON) * scale + n * f64::from(f32::from_bits(1))
            };
            let nn = raa.sqrt() * rbb.sqrt();
            let span = (raa.sqrt() + rbb.sqrt()).powi(2);
            let results = tiers_here()
                .into_iter()
                .map(|(_, d, l)| (d(&a, &b), l(&a, &b)))
                .chain([(dot(&a, &b), l2_squared(&a, &b))]);
            for (dot, l2) in results {
                prop_assert!(dot.is_finite() && l2.is_finite(), "{dot} {l2}");
                prop_assert!((f64::from(dot) - rdot).abs() <= tol(nn), "{dot} vs {rdot}");
                prop_assert!((f64::from(l2) - rl2).abs() <= tol(span), "{l2} vs {rl2}");
            }
        }
    }

    #[test]
    fn cosine_of_the_reported_vectors() {
        // The finding: `[3e38]*4` overflowed the f32 norms and scored NaN or 0.
        let huge = [3e38f32; 4];
        let mixed = [3e38f32, -3e38, 3e38, -3e38];
        assert_eq!(cosine_similarity(&huge, &[1.0; 4]), 1.0);
        assert_eq!(cosine_similarity(&huge, &mixed), 0.0);
        assert_eq!(cosine_similarity(&mixed, &[-1.0, 1.0, -1.0, 1.0]), -1.0);
        let tiny = [f32::from_bits(1); 4];
        assert_eq!(cosine_similarity(&tiny, &[2.0; 4]), 1.0);
        assert_eq!(scalar::cosine_similarity(&tiny, &huge), 1.0);
    }

    #[test]
    fn empty_slices() {
        assert_eq!(dot(&[], &[]), 0.0);
        assert_eq!(l2_squared(&[], &[]), 0.0);
        assert_eq!(cosine_similarity(&[], &[]), 0.0);
    }

    #[test]
    fn reports_simd_use() {
        // Informational: the CI log shows which path the agreement test exercised.
        eprintln!("SIMD kernels in use: {:?}", simd_level());
    }
}
