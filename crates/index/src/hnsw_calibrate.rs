//! Calibration of a graph's default search beam: the `ef` at which the graph reaches a target
//! recall on the data it holds.
//!
//! Why: the recall an HNSW graph reaches at a given `ef` depends on the data. On text
//! embeddings and clustered data the default `ef` (64) gives recall@10 ≥ 0.95; on uniformly
//! random 128-d vectors (intrinsic dimension as high as the ambient one) it gives about 0.4,
//! and a user who does not know HNSW just sees wrong neighbours. So after a graph is built,
//! a seeded sample of its own vectors is used as queries, their exact top-k is found by brute
//! force over the graph's vectors (the query itself left out), and the beam is widened along
//! [`LADDER`] until the mean recall reaches the target. Each query's graph search leaves its
//! own node out (never entered nor expanded), so it finds its neighbours as a fresh query does. The result only ever raises the
//! configured default (never lowers it) and is ignored where an operator chose `ef_search`
//! (`HnswParams::auto_ef`).
//!
//! Cost: `queries × n` distance evaluations for the brute force (64 × 100k = 6.4M at 128-d,
//! a fraction of a second on one core, against tens of seconds for building such a graph),
//! plus `queries` graph searches per step tried.

use rand::SeedableRng;
use rand::seq::index::sample;
use rand_chacha::ChaCha8Rng;

use crate::hnsw::HnswIndex;

/// The beams tried, in order (those at or below the configured default are skipped).
pub const LADDER: [usize; 9] = [64, 96, 128, 192, 256, 384, 512, 768, 1024];

/// Largest `ef` a calibration may pick, and may be recorded in a graph's bytes. Beyond it a
/// query costs about as much as an exact scan of a 100k-vector collection on which the
/// planner's graph would pay, so the graph keeps its best effort rather than more.
pub const MAX_CALIBRATED_EF: usize = 1024;

/// How a calibration runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CalibrationSettings {
    /// Mean recall@k wanted on the sample. Default 0.95.
    pub target: f64,
    /// Results per query measured (recall@k). Default 10.
    pub k: usize,
    /// Sampled vectors used as queries. Default 64.
    pub queries: usize,
    /// Widest `ef` tried; at most [`MAX_CALIBRATED_EF`]. Default [`MAX_CALIBRATED_EF`].
    pub cap: usize,
    /// Seed of the sample, so a graph's calibration is repeatable.
    pub seed: u64,
}

impl Default for CalibrationSettings {
    fn default() -> Self {
        CalibrationSettings {
            target: 0.95,
            k: 10,
            queries: 64,
            cap: MAX_CALIBRATED_EF,
            seed: 0x005e_edef,
        }
    }
}

/// A calibration's result, kept with the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Calibrated {
    /// The beam found: the smallest step reaching the target, or the cap.
    pub ef: usize,
    /// Live vectors the graph held when it was measured (the engine measures again once the
    /// graph has grown well past this).
    pub at_len: usize,
}

impl Calibrated {
    /// Decodes the 8 header bytes (`ef`, `at_len`, u32 LE each); `ef` 0 is "not calibrated".
    /// An `ef` above [`MAX_CALIBRATED_EF`] was never written: the bytes are damaged.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Option<Self>, &'static str> {
        let word = |i: usize| {
            let mut w = [0u8; 4];
            w.copy_from_slice(&bytes[i..i + 4]);
            u32::from_le_bytes(w) as usize
        };
        match (word(0), word(4)) {
            (0, 0) => Ok(None),
            (0, _) => Err("calibration: a vector count without an ef"),
            // A calibration needs a sample of live vectors: it never measured none.
            (_, 0) => Err("calibration: an ef without a vector count"),
            (ef, _) if ef > MAX_CALIBRATED_EF => Err("calibration: ef above the cap"),
            (ef, at_len) => Ok(Some(Calibrated { ef, at_len })),
        }
    }
}

/// What one calibration measured: the `ef` picked and the mean recall at it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Calibration {
    pub ef: usize,
    pub recall: f64,
    /// `ef`s tried (the last is `ef`).
    pub steps: usize,
}

/// The beams a calibration tries from the configured `base`: `base` itself, the [`LADDER`]'s
/// steps above it and below the cap, then the cap (`cap` is clamped to [`MAX_CALIBRATED_EF`]).
pub fn beams(base: usize, cap: usize) -> Vec<usize> {
    let cap = cap.clamp(1, MAX_CALIBRATED_EF);
    let mut efs = vec![base];
    efs.extend(LADDER.iter().copied().filter(|&ef| ef > base && ef < cap));
    if cap > base {
        efs.push(cap);
    }
    efs
}

/// Tries [`beams`] in order, measuring each with `recall_at`, and stops at the first that
/// reaches `settings.target` (or at the last). Callers that cannot hold the graph for the
/// whole measurement (the engine, which measures a live graph in short locked steps) bring
/// their own `recall_at`, which answers `None` when the measurement is to stop (the server
/// shuts down, the graph went away): then nothing was measured, and `None` is returned.
pub fn climb(
    base: usize,
    settings: &CalibrationSettings,
    mut recall_at: impl FnMut(usize) -> Option<f64>,
) -> Option<Calibration> {
    let mut last = Calibration {
        ef: base,
        recall: 0.0,
        steps: 0,
    };
    for (i, ef) in beams(base, settings.cap).into_iter().enumerate() {
        let recall = recall_at(ef)?;
        last = Calibration {
            ef,
            recall,
            steps: i + 1,
        };
        if recall >= settings.target {
            break;
        }
    }
    Some(last)
}

/// `count` distinct positions in `0..len`, fixed by `seed` (the sampled queries).
pub fn sample_positions(len: usize, count: usize, seed: u64) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    sample(&mut rng, len, count.min(len)).into_vec()
}

/// Vectors of the brute force between two checks of a calibration's stop predicate: 64
/// queries × 1,024 vectors, a few milliseconds at 768 dimensions.
const STOP_CHECK_VECTORS: usize = 1024;

impl HnswIndex {
    /// Measures the `ef` at which this graph reaches `settings.target` mean recall@k on a
    /// sample of its own vectors, starting at the built-in default (64), and remembers it (see
    /// the module docs). `None` (nothing remembered) when the graph holds too few live vectors
    /// for a sample (`queries + k` of them), or an operator chose `ef_search` (`auto_ef` off).
    pub fn calibrate(&mut self, settings: CalibrationSettings) -> Option<Calibration> {
        self.calibrate_until(settings, &|| false)
    }

    /// [`Self::calibrate`], given up (nothing remembered, `None`) as soon as `stop` answers
    /// `true`; it is asked between chunks of the brute force and before each graph search.
    pub fn calibrate_until(
        &mut self,
        settings: CalibrationSettings,
        stop: &dyn Fn() -> bool,
    ) -> Option<Calibration> {
        let found = self.measure_until(settings, stop)?;
        // A default above the cap is kept by `default_ef` anyway; the bytes record at most it.
        self.set_calibration(found, self.len());
        Some(found)
    }

    /// Remembers `c`, measured by [`Self::measure`] when the graph held `len` live vectors.
    pub fn set_calibration(&mut self, c: Calibration, len: usize) {
        self.set_calibrated(Some(Calibrated {
            ef: c.ef.min(MAX_CALIBRATED_EF),
            at_len: len,
        }));
    }

    /// [`Self::calibrate`]'s measurement, without remembering it (it takes `&self`, so a
    /// caller may measure under a read lock and store the result later).
    pub fn measure(&self, settings: CalibrationSettings) -> Option<Calibration> {
        self.measure_until(settings, &|| false)
    }

    /// [`Self::measure`], given up (`None`) as soon as `stop` answers `true`. Why: the brute
    /// force is `queries × n` distances (10–20 s at 1M × 768) on the engine's one builder
    /// thread, and a shutdown, or the tenant's eviction, must not wait for it.
    pub fn measure_until(
        &self,
        settings: CalibrationSettings,
        stop: &dyn Fn() -> bool,
    ) -> Option<Calibration> {
        // An operator's `ef_search` is used exactly: nothing to measure.
        if !self.params().auto_ef {
            return None;
        }
        let g = &self.graph;
        let k = settings.k.max(1);
        let live: Vec<u32> = (0..g.nodes() as u32)
            .filter(|&n| g.deleted[n as usize] == 0)
            .collect();
        if settings.queries == 0 || live.len() < settings.queries + k {
            return None;
        }
        let picked: Vec<u32> = sample_positions(live.len(), settings.queries, settings.seed)
            .into_iter()
            .map(|i| live[i])
            .collect();
        let exact = self.kth_all(&picked, &live, k, stop)?;
        // From the built-in default, not the configured one: the result is kept with the
        // graph and outlives a change of `ef_search`, and `default_ef` never goes below the
        // configured beam anyway.
        let base = crate::hnsw::HnswParams::default().ef_search;
        climb(base, &settings, |ef| {
            self.recall_at(ef, k, &picked, &exact, stop)
        })
    }

    /// For each node of `picked`, the distance to its `k`-th nearest live node by brute
    /// force, itself left out; `None` if `stop` answered `true`. The live nodes are walked a
    /// chunk at a time for all the queries, so each chunk's vectors are read from memory once.
    fn kth_all(
        &self,
        picked: &[u32],
        live: &[u32],
        k: usize,
        stop: &dyn Fn() -> bool,
    ) -> Option<Vec<f32>> {
        let g = &self.graph;
        let mut best: Vec<Vec<f32>> = vec![Vec::with_capacity(k + 1); picked.len()];
        for chunk in live.chunks(STOP_CHECK_VECTORS) {
            if stop() {
                return None;
            }
            for (&q, best) in picked.iter().zip(best.iter_mut()) {
                let query = g.vector(q);
                for &n in chunk {
                    if n == q {
                        continue;
                    }
                    let d = g.distance(query, g.vector(n));
                    if best.len() == k && d >= best[k - 1] {
                        continue;
                    }
                    let at = best.partition_point(|&bd| bd <= d);
                    best.insert(at, d);
                    best.truncate(k);
                }
            }
        }
        Some(
            best.iter()
                .map(|b| b.last().copied().unwrap_or(f32::INFINITY))
                .collect(),
        )
    }

    /// Mean recall@k of graph searches at `ef` for the sampled nodes, against the distance
    /// `kth` of each one's `k`-th true neighbour; `None` if `stop` answered `true`. Each
    /// search leaves its own node out of the graph (`Graph::search_without`): walking
    /// through it, whose links lead straight to its neighbours, overstated the recall fresh
    /// queries get (on 20k uniform 128-d cosine vectors: 0.95 measured at `ef` 256, where
    /// fresh queries got 0.87; `docs/benchmarks.md`).
    fn recall_at(
        &self,
        ef: usize,
        k: usize,
        picked: &[u32],
        kth: &[f32],
        stop: &dyn Fn() -> bool,
    ) -> Option<f64> {
        let g = &self.graph;
        let mut found_total = 0usize;
        for (&q, &limit) in picked.iter().zip(kth) {
            if stop() {
                return None;
            }
            let near = g.search_without(g.vector(q), ef.max(k), q, |n| g.deleted[n as usize] == 0);
            found_total += near
                .iter()
                .take(k)
                .filter(|n| within(n.dist, limit))
                .count();
        }
        Some(found_total as f64 / (k * picked.len()).max(1) as f64)
    }
}

/// Whether a hit at distance `d` is as near as the `k`-th true neighbour at `limit`. A hit
/// counts by its distance, not its id: among equally near vectors (duplicates: identical
/// texts embed identically) the true top-k is any k of them, and counting ids would hold a
/// query with more than k duplicates below the target at every beam, up to the cap. The
/// tolerance absorbs the rounding of distances computed in another order.
pub fn within(d: f32, limit: f32) -> bool {
    d <= limit + 1e-5 * limit.abs().max(1.0)
}

#[cfg(test)]
#[path = "hnsw_calibrate_tests.rs"]
mod tests;
