//! Dense layers, `y = x · wᵀ + b`, on weights packed once at load time.
//!
//! A general GEMM library re-packs the weight matrix on every call; for the few token rows of a
//! sentence that copy costs as much as the arithmetic (it was a third of all time with both
//! `matrixmultiply` and `gemm`). Here the weights are laid out once in 16-column panels, and a
//! register-blocked kernel streams each panel past a handful of token rows. The kernel is
//! plain Rust over fixed-size arrays; compiling it under `target_feature` lets LLVM turn it into
//! AVX-512 or AVX2+FMA code, chosen once per call by run-time detection.

/// Output columns per panel: one AVX-512 register, two AVX2 registers.
const PANEL: usize = 16;

/// A linear layer's weights in panel order, with its bias.
pub(crate) struct Dense {
    /// `panels[p][k][j] = w[p·PANEL + j][k]`, flattened.
    panels: Vec<f32>,
    bias: Vec<f32>,
    inp: usize,
    out: usize,
}

impl Dense {
    /// Packs `w`, stored `out × inp` row-major as PyTorch saves it. `out` must be a multiple
    /// of 16, as every layer of this model is.
    pub fn new(w: &[f32], bias: Vec<f32>, out: usize, inp: usize) -> Self {
        assert!(
            out.is_multiple_of(PANEL) && w.len() == out * inp && bias.len() == out,
            "dense shape"
        );
        let mut panels = vec![0.0f32; out * inp];
        for (p, panel) in panels.chunks_exact_mut(PANEL * inp).enumerate() {
            for (k, col) in panel.chunks_exact_mut(PANEL).enumerate() {
                for (j, v) in col.iter_mut().enumerate() {
                    *v = w[(p * PANEL + j) * inp + k];
                }
            }
        }
        Self {
            panels,
            bias,
            inp,
            out,
        }
    }

    /// `y = x · wᵀ + b` for every row of `x` (`rows × inp`) into `y` (`rows × out`).
    pub fn forward(&self, x: &[f32], y: &mut [f32]) {
        let rows = x.len() / self.inp;
        assert!(
            x.len() == rows * self.inp && y.len() == rows * self.out,
            "dense io shape"
        );
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU supports AVX-512F, checked just above.
                return unsafe { self.forward_avx512(x, y) };
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                // SAFETY: the CPU supports AVX2 and FMA, checked just above.
                return unsafe { self.forward_avx2(x, y) };
            }
        }
        self.forward_portable(x, y);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn forward_avx512(&self, x: &[f32], y: &mut [f32]) {
        self.forward_blocked::<12, true>(x, y);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn forward_avx2(&self, x: &[f32], y: &mut [f32]) {
        self.forward_blocked::<6, true>(x, y);
    }

    /// The same arithmetic without fused multiply-add, for any CPU.
    fn forward_portable(&self, x: &[f32], y: &mut [f32]) {
        self.forward_blocked::<4, false>(x, y);
    }

    /// Panel by panel (it stays in L1), `ROWS` token rows at a time, then the leftover rows
    /// (fewer than `ROWS`) in blocks of 8, 4, 2 and 1.
    #[inline(always)]
    fn forward_blocked<const ROWS: usize, const FMA: bool>(&self, x: &[f32], y: &mut [f32]) {
        let rows = x.len() / self.inp;
        for (p, panel) in self.panels.chunks_exact(PANEL * self.inp).enumerate() {
            let bias: &[f32; PANEL] = self.bias[p * PANEL..][..PANEL]
                .try_into()
                .expect("invariant: PANEL wide");
            let mut r = 0;
            while r + ROWS <= rows {
                self.block::<ROWS, FMA>(panel, bias, x, y, r, p);
                r += ROWS;
            }
            // Leftover rows in halving blocks: a sentence is often a dozen rows plus a few,
            // and one row at a time would reload the panel for each.
            if rows - r >= 8 && ROWS > 8 {
                self.block::<8, FMA>(panel, bias, x, y, r, p);
                r += 8;
            }
            if rows - r >= 4 && ROWS > 4 {
                self.block::<4, FMA>(panel, bias, x, y, r, p);
                r += 4;
            }
            if rows - r >= 2 {
                self.block::<2, FMA>(panel, bias, x, y, r, p);
                r += 2;
            }
            if rows - r >= 1 {
                self.block::<1, FMA>(panel, bias, x, y, r, p);
            }
        }
    }

    /// Rows `r0..r0 + ROWS` of `y`, columns of panel `p`: `ROWS × 16` accumulators that LLVM
    /// keeps in registers.
    #[inline(always)]
    fn block<const ROWS: usize, const FMA: bool>(
        &self,
        panel: &[f32],
        bias: &[f32; PANEL],
        x: &[f32],
        y: &mut [f32],
        r0: usize,
        p: usize,
    ) {
        let inp = self.inp;
        let xs: [&[f32]; ROWS] = std::array::from_fn(|r| &x[(r0 + r) * inp..][..inp]);
        let mut acc = [[0.0f32; PANEL]; ROWS];
        for (k, w) in panel.chunks_exact(PANEL).enumerate() {
            let w: &[f32; PANEL] = w.try_into().expect("invariant: chunks are PANEL wide");
            for r in 0..ROWS {
                let a = xs[r][k];
                for j in 0..PANEL {
                    acc[r][j] = if FMA {
                        a.mul_add(w[j], acc[r][j])
                    } else {
                        acc[r][j] + a * w[j]
                    };
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            let out = &mut y[(r0 + r) * self.out + p * PANEL..][..PANEL];
            for j in 0..PANEL {
                out[j] = acc[j] + bias[j];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(w: &[f32], b: &[f32], x: &[f32], out: usize, inp: usize) -> Vec<f32> {
        let rows = x.len() / inp;
        let mut y = vec![0.0; rows * out];
        for r in 0..rows {
            for o in 0..out {
                y[r * out + o] = b[o]
                    + (0..inp)
                        .map(|k| x[r * inp + k] * w[o * inp + k])
                        .sum::<f32>();
            }
        }
        y
    }

    #[test]
    fn every_path_matches_the_naive_product() {
        let (out, inp) = (32, 40);
        let w: Vec<f32> = (0..out * inp)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
            .collect();
        let b: Vec<f32> = (0..out).map(|i| i as f32 / 10.0).collect();
        let dense = Dense::new(&w, b.clone(), out, inp);
        // Row counts below, at and past every block height, so leftovers are exercised too.
        for rows in [1, 3, 5, 6, 7, 11, 12, 13, 23, 25] {
            let x: Vec<f32> = (0..rows * inp)
                .map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0)
                .collect();
            let expected = naive(&w, &b, &x, out, inp);
            let mut y = vec![f32::NAN; rows * out];
            dense.forward(&x, &mut y);
            let mut portable = vec![f32::NAN; rows * out];
            dense.forward_portable(&x, &mut portable);
            for (got, want) in [(&y, &expected), (&portable, &expected)] {
                let diff = got
                    .iter()
                    .zip(want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f32::max);
                assert!(diff < 1e-4, "rows {rows}: differs by {diff}");
            }
        }
    }
}
