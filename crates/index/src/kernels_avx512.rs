//! AVX-512 kernels for dot products and squared L2 distances (`avx512f`).
//!
//! Why a third tier beside AVX2: on the benchmark machine (an AMD EPYC with AVX-512) hnswlib,
//! built from source for the host, runs 512-bit kernels, and the HNSW search spends about half
//! its time in the distance kernel. Sixteen lanes per instruction halve the loop iterations,
//! and masked loads finish a vector of any length without a scalar tail loop.
//!
//! Accumulation order: lane `j` of accumulator `0` sums elements `32 i + j`, accumulator `1`
//! elements `32 i + 16 + j`; the tail goes to accumulator `0`. The result therefore differs
//! from the AVX2 and scalar kernels in the last bits only; the agreement property tests in
//! `kernels.rs` bound the difference.

use std::arch::x86_64::*;

/// A mask selecting the first `rest` (< 16) lanes.
#[inline]
fn tail_mask(rest: usize) -> __mmask16 {
    debug_assert!(rest < 16);
    ((1u32 << rest) - 1) as __mmask16
}

/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
pub unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc0 = _mm512_setzero_ps();
    let mut acc1 = _mm512_setzero_ps();
    let mut i = 0;
    // SAFETY (all loads): i + 32 <= n, resp. i + 16 <= n, keeps every load inside both slices;
    // the masked load reads only the `n - i` lanes that are inside them.
    while i + 32 <= n {
        unsafe {
            acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)), acc0);
            acc1 = _mm512_fmadd_ps(
                _mm512_loadu_ps(pa.add(i + 16)),
                _mm512_loadu_ps(pb.add(i + 16)),
                acc1,
            );
        }
        i += 32;
    }
    if i + 16 <= n {
        unsafe {
            acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)), acc0);
        }
        i += 16;
    }
    if i < n {
        let m = tail_mask(n - i);
        unsafe {
            let x = _mm512_maskz_loadu_ps(m, pa.add(i));
            let y = _mm512_maskz_loadu_ps(m, pb.add(i));
            acc0 = _mm512_fmadd_ps(x, y, acc0);
        }
    }
    _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1))
}

/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
pub unsafe fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc0 = _mm512_setzero_ps();
    let mut acc1 = _mm512_setzero_ps();
    let mut i = 0;
    // SAFETY (all loads): as in `dot`.
    while i + 32 <= n {
        unsafe {
            let d0 = _mm512_sub_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)));
            let d1 = _mm512_sub_ps(
                _mm512_loadu_ps(pa.add(i + 16)),
                _mm512_loadu_ps(pb.add(i + 16)),
            );
            acc0 = _mm512_fmadd_ps(d0, d0, acc0);
            acc1 = _mm512_fmadd_ps(d1, d1, acc1);
        }
        i += 32;
    }
    if i + 16 <= n {
        unsafe {
            let d0 = _mm512_sub_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)));
            acc0 = _mm512_fmadd_ps(d0, d0, acc0);
        }
        i += 16;
    }
    if i < n {
        let m = tail_mask(n - i);
        unsafe {
            // Masked-out lanes load as 0 on both sides, so they add 0.
            let d = _mm512_sub_ps(
                _mm512_maskz_loadu_ps(m, pa.add(i)),
                _mm512_maskz_loadu_ps(m, pb.add(i)),
            );
            acc0 = _mm512_fmadd_ps(d, d, acc0);
        }
    }
    _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1))
}
