//! The BERT encoder's forward pass, mean pooling and L2 normalisation: the computation
//! sentence-transformers runs for all-MiniLM-L6-v2, written for CPU inference.
//!
//! Sequences are packed end to end instead of padded to a common length: the dense layers run
//! as one GEMM over every token of the batch, and attention runs per sequence over exactly its
//! own tokens. That gives the same numbers as a padded batch with an attention mask (padding
//! only ever receives zero attention weight) without computing on padding at all.

use std::ops::Range;

use crate::weights::{Bert, FFN, HEAD_DIM, HEADS, HIDDEN, LN_EPS, Layer, LayerNorm};

/// Embeds each token sequence (already truncated, ids below the vocabulary size) into a unit
/// vector of `HIDDEN` floats, using up to `threads` threads (the caller's included).
pub(crate) fn encode(bert: &Bert, seqs: &[&[u32]], threads: usize) -> Vec<Vec<f32>> {
    let starts: Vec<usize> = seqs
        .iter()
        .scan(0, |acc, s| {
            let start = *acc;
            *acc += s.len();
            Some(start)
        })
        .collect();
    let total: usize = seqs.iter().map(|s| s.len()).sum();
    let even = even_bounds(total, threads);
    let by_seq = seq_bounds(&starts, total, threads);

    let mut x = vec![0.0f32; total * HIDDEN];
    for (seq, &start) in seqs.iter().zip(&starts) {
        embed_tokens(
            bert,
            seq,
            &mut x[start * HIDDEN..(start + seq.len()) * HIDDEN],
        );
    }
    let mut qkv = vec![0.0f32; total * 3 * HIDDEN];
    let mut ctx = vec![0.0f32; total * HIDDEN];
    for layer in &bert.layers {
        for_chunks(&even, &mut qkv, 3 * HIDDEN, |rows, out| {
            layer
                .qkv
                .forward(&x[rows.start * HIDDEN..rows.end * HIDDEN], out);
        });
        for_chunks(&by_seq, &mut ctx, HIDDEN, |rows, out| {
            for (seq, &start) in seqs.iter().zip(&starts) {
                if start >= rows.start && start < rows.end {
                    let (a, len) = (start - rows.start, seq.len());
                    attention(
                        &qkv[start * 3 * HIDDEN..(start + len) * 3 * HIDDEN],
                        &mut out[a * HIDDEN..(a + len) * HIDDEN],
                        len,
                    );
                }
            }
        });
        for_chunks(&even, &mut x, HIDDEN, |rows, xs| {
            feed_forward(layer, &ctx[rows.start * HIDDEN..rows.end * HIDDEN], xs);
        });
    }
    seqs.iter()
        .zip(&starts)
        .map(|(seq, &start)| mean_pool_normalised(&x[start * HIDDEN..(start + seq.len()) * HIDDEN]))
        .collect()
}

/// Word + position + token-type embeddings, then LayerNorm, for one sequence.
fn embed_tokens(bert: &Bert, ids: &[u32], out: &mut [f32]) {
    for (pos, (&id, row)) in ids.iter().zip(out.chunks_exact_mut(HIDDEN)).enumerate() {
        let word = &bert.word[id as usize * HIDDEN..][..HIDDEN];
        let position = &bert.position[pos * HIDDEN..][..HIDDEN];
        for (i, o) in row.iter_mut().enumerate() {
            *o = word[i] + position[i] + bert.token_type0[i];
        }
        layer_norm(row, &bert.emb_ln);
    }
}

/// Multi-head self-attention of one sequence: `qkv` holds its `len` rows of fused
/// query|key|value projections, `out` receives its `len` rows of context (heads side by side).
fn attention(qkv: &[f32], out: &mut [f32], len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F, checked just above.
            return unsafe { attention_avx512(qkv, out, len) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports AVX2 and FMA, checked just above.
            return unsafe { attention_avx2(qkv, out, len) };
        }
    }
    attention_impl::<false>(qkv, out, len);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn attention_avx512(qkv: &[f32], out: &mut [f32], len: usize) {
    attention_impl::<true>(qkv, out, len);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn attention_avx2(qkv: &[f32], out: &mut [f32], len: usize) {
    attention_impl::<true>(qkv, out, len);
}

/// Per head and query: scaled dot products with every key, softmax, weighted sum of values.
/// Heads are 32 floats, contiguous within a row, so each step is a short vector loop.
#[inline(always)]
fn attention_impl<const FMA: bool>(qkv: &[f32], out: &mut [f32], len: usize) {
    let scale = 1.0 / (HEAD_DIM as f32).sqrt();
    let mut scores = vec![0.0f32; len];
    let head = |row: usize, offset: usize| -> &[f32; HEAD_DIM] {
        qkv[row * 3 * HIDDEN + offset..][..HEAD_DIM]
            .try_into()
            .expect("invariant: HEAD_DIM wide")
    };
    for h in 0..HEADS {
        let (q_at, k_at, v_at) = (
            h * HEAD_DIM,
            HIDDEN + h * HEAD_DIM,
            2 * HIDDEN + h * HEAD_DIM,
        );
        for i in 0..len {
            let q = head(i, q_at);
            for (j, s) in scores.iter_mut().enumerate() {
                *s = dot::<FMA>(q, head(j, k_at)) * scale;
            }
            softmax(&mut scores);
            let mut ctx = [0.0f32; HEAD_DIM];
            for (j, &p) in scores.iter().enumerate() {
                let v = head(j, v_at);
                for d in 0..HEAD_DIM {
                    ctx[d] = if FMA {
                        p.mul_add(v[d], ctx[d])
                    } else {
                        ctx[d] + p * v[d]
                    };
                }
            }
            out[i * HIDDEN + h * HEAD_DIM..][..HEAD_DIM].copy_from_slice(&ctx);
        }
    }
}

/// Dot product of two heads, in 16 independent lanes so it vectorises.
#[inline(always)]
fn dot<const FMA: bool>(a: &[f32; HEAD_DIM], b: &[f32; HEAD_DIM]) -> f32 {
    let mut lanes = [0.0f32; 16];
    for (ca, cb) in a.chunks_exact(16).zip(b.chunks_exact(16)) {
        for l in 0..16 {
            lanes[l] = if FMA {
                ca[l].mul_add(cb[l], lanes[l])
            } else {
                lanes[l] + ca[l] * cb[l]
            };
        }
    }
    lanes.iter().sum()
}

/// The rest of an encoder layer, row by row: attention output projection, residual and
/// LayerNorm, then the GELU feed-forward, residual and LayerNorm. `x` (the layer's input rows)
/// is overwritten with the layer's output.
fn feed_forward(layer: &Layer, ctx: &[f32], x: &mut [f32]) {
    let rows = x.len() / HIDDEN;
    let mut h = vec![0.0f32; rows * HIDDEN];
    layer.attn_out.forward(ctx, &mut h);
    for (hr, xr) in h.chunks_exact_mut(HIDDEN).zip(x.chunks_exact(HIDDEN)) {
        hr.iter_mut().zip(xr).for_each(|(a, b)| *a += b);
        layer_norm(hr, &layer.attn_ln);
    }
    let mut inner = vec![0.0f32; rows * FFN];
    layer.ffn_in.forward(&h, &mut inner);
    gelu_all(&mut inner);
    layer.ffn_out.forward(&inner, x);
    for (xr, hr) in x.chunks_exact_mut(HIDDEN).zip(h.chunks_exact(HIDDEN)) {
        xr.iter_mut().zip(hr).for_each(|(a, b)| *a += b);
        layer_norm(xr, &layer.ffn_ln);
    }
}

fn layer_norm(row: &mut [f32], ln: &LayerNorm) {
    let n = row.len() as f32;
    let mean = row.iter().sum::<f32>() / n;
    let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    let inv = 1.0 / (var + LN_EPS).sqrt();
    for ((v, g), b) in row.iter_mut().zip(&ln.gamma).zip(&ln.beta) {
        *v = (*v - mean) * inv * g + b;
    }
}

fn softmax(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    row.iter_mut().for_each(|v| *v /= sum);
}

/// The exact (erf) GELU that BERT was trained with, not the tanh approximation.
#[inline(always)]
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// erf as a rational function of `x` (Eigen's `generic_fast_erf_float`, also XLA's), within
/// a few 1e-7 of the true value: branch-free, so GELU over a whole row vectorises, where a libm
/// call per element cost a tenth of all embedding time.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    for c in [
        2.770_681_4e-8,
        -2.101_024e-6,
        -5.692_506_4e-5,
        -7.349_906_3e-4,
        -2.954_6e-3,
        -1.609_603_3e-2,
    ] {
        p = p * x2 + c;
    }
    let mut q = -1.456_607_2e-5_f32;
    for c in [-2.133_740_6e-4, -1.682_827e-3, -7.373_329e-3, -1.426_474e-2] {
        q = q * x2 + c;
    }
    x * p / q
}

/// GELU over a slice, compiled for the widest vector unit available.
fn gelu_all(values: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F, checked just above.
            return unsafe { gelu_avx512(values) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { gelu_avx2(values) };
        }
    }
    values.iter_mut().for_each(|v| *v = gelu(*v));
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2")]
unsafe fn gelu_avx512(values: &mut [f32]) {
    values.iter_mut().for_each(|v| *v = gelu(*v));
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn gelu_avx2(values: &mut [f32]) {
    values.iter_mut().for_each(|v| *v = gelu(*v));
}

/// Mean of the token rows (every token counts: there is no padding), then L2 normalisation
/// with sentence-transformers' guard against a zero norm.
fn mean_pool_normalised(rows: &[f32]) -> Vec<f32> {
    let n = (rows.len() / HIDDEN) as f32;
    let mut v = vec![0.0f32; HIDDEN];
    for row in rows.chunks_exact(HIDDEN) {
        v.iter_mut().zip(row).for_each(|(a, b)| *a += b);
    }
    v.iter_mut().for_each(|a| *a /= n);
    let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|a| *a /= norm);
    v
}

/// Row boundaries splitting `rows` into up to `parts` nearly equal chunks.
fn even_bounds(rows: usize, parts: usize) -> Vec<usize> {
    let parts = parts.clamp(1, rows.max(1));
    (0..=parts).map(|i| rows * i / parts).collect()
}

/// Row boundaries at sequence starts, splitting `total` rows into up to `parts` chunks of
/// roughly equal token counts, so attention never straddles two threads.
fn seq_bounds(starts: &[usize], total: usize, parts: usize) -> Vec<usize> {
    let mut bounds: Vec<usize> = even_bounds(total, parts)
        .into_iter()
        .map(|b| starts.iter().copied().find(|&s| s >= b).unwrap_or(total))
        .collect();
    bounds[0] = 0;
    if let Some(last) = bounds.last_mut() {
        *last = total;
    }
    bounds.dedup();
    bounds
}

/// Runs `f(rows, out_rows)` for each chunk of rows between consecutive `bounds`, where
/// `out_rows` is that chunk's slice of `out` (`width` floats a row). The first chunk runs on
/// the calling thread and the others on scoped threads, so one chunk means no thread at all.
fn for_chunks<F>(bounds: &[usize], out: &mut [f32], width: usize, f: F)
where
    F: Fn(Range<usize>, &mut [f32]) + Sync,
{
    let mut pieces = Vec::with_capacity(bounds.len());
    let mut rest = out;
    for w in bounds.windows(2) {
        let (piece, tail) = rest.split_at_mut((w[1] - w[0]) * width);
        pieces.push((w[0]..w[1], piece));
        rest = tail;
    }
    let mut pieces = pieces.into_iter();
    let Some((first_rows, first_out)) = pieces.next() else {
        return;
    };
    std::thread::scope(|scope| {
        for (rows, piece) in pieces {
            let f = &f;
            scope.spawn(move || f(rows, piece));
        }
        f(first_rows, first_out);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_cover_every_row_once() {
        assert_eq!(even_bounds(10, 3), vec![0, 3, 6, 10]);
        assert_eq!(even_bounds(2, 4), vec![0, 1, 2]);
        assert_eq!(even_bounds(0, 2), vec![0, 0]);
        // Sequences of 2, 7 and 1 tokens: the split lands on a sequence start.
        assert_eq!(seq_bounds(&[0, 2, 9], 10, 2), vec![0, 9, 10]);
        assert_eq!(seq_bounds(&[0], 5, 3), vec![0, 5]);
    }

    #[test]
    fn softmax_and_gelu_match_known_values() {
        let mut row = [1.0, 2.0, 3.0];
        softmax(&mut row);
        let expected = [0.09003057, 0.24472847, 0.66524096];
        row.iter()
            .zip(expected)
            .for_each(|(a, b)| assert!((a - b).abs() < 1e-6, "{row:?}"));
        assert!((gelu(1.0) - 0.8413447).abs() < 1e-6);
        assert!((gelu(-3.0) + 0.004049694).abs() < 1e-6);
    }

    #[test]
    fn erf_is_within_a_few_ulp_of_libm() {
        let mut worst = 0.0f32;
        for i in -80_000..=80_000 {
            let x = i as f32 / 10_000.0;
            worst = worst.max((erf(x) - libm::erff(x)).abs());
        }
        assert!(worst < 5e-7, "max |erf - libm::erff| = {worst}");
        let mut values: Vec<f32> = (-300..300).map(|i| i as f32 / 50.0).collect();
        let expected: Vec<f32> = values.iter().map(|&x| gelu(x)).collect();
        gelu_all(&mut values);
        assert!(
            values
                .iter()
                .zip(&expected)
                .all(|(a, b)| (a - b).abs() < 1e-6)
        );
    }
}
