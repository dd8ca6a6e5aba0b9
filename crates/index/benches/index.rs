//! divan benchmarks: distance kernels, exact scan, HNSW build and search (latency, QPS, recall).
//!
//! Run with `cargo bench -p strata-index`. The HNSW data set size comes from `STRATA_BENCH_N`
//! (default 100 000 vectors × 128 dims, clustered, seeded). Recall@10 against an exact scan is
//! printed on stderr once per `ef`, since divan itself only measures time; QPS per thread is
//! the inverse of the reported per-query time (with 2 threads, aggregate QPS is twice that).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use divan::{Bencher, black_box};
use strata_index::{
    HnswIndex, HnswParams, Metric, exact_top_k, exact_top_k_prepared, kernels, testdata,
};

const SEED: u64 = 42;
const CLUSTERS: usize = 100;
const HNSW_DIM: usize = 128;
const K: usize = 10;

fn main() {
    eprintln!("SIMD kernels in use: {}", kernels::simd_in_use());
    divan::main();
}

fn bench_n() -> usize {
    std::env::var("STRATA_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000)
}

fn pair(dim: usize) -> (Vec<f32>, Vec<f32>) {
    let v = testdata::clustered(2, dim, 2, SEED);
    (v[0].clone(), v[1].clone())
}

#[divan::bench_group]
mod kernel {
    use super::*;

    const DIMS: [usize; 2] = [128, 384];

    #[divan::bench(args = DIMS)]
    fn dot(b: Bencher, dim: usize) {
        let (x, y) = pair(dim);
        b.bench(|| kernels::dot(black_box(&x), black_box(&y)));
    }

    #[divan::bench(args = DIMS)]
    fn dot_scalar(b: Bencher, dim: usize) {
        let (x, y) = pair(dim);
        b.bench(|| kernels::scalar::dot(black_box(&x), black_box(&y)));
    }

    #[divan::bench(args = DIMS)]
    fn l2_squared(b: Bencher, dim: usize) {
        let (x, y) = pair(dim);
        b.bench(|| kernels::l2_squared(black_box(&x), black_box(&y)));
    }

    #[divan::bench(args = DIMS)]
    fn cosine(b: Bencher, dim: usize) {
        let (x, y) = pair(dim);
        b.bench(|| kernels::cosine_similarity(black_box(&x), black_box(&y)));
    }

    #[divan::bench(args = DIMS)]
    fn cosine_scalar(b: Bencher, dim: usize) {
        let (x, y) = pair(dim);
        b.bench(|| kernels::scalar::cosine_similarity(black_box(&x), black_box(&y)));
    }
}

/// What every query and written vector pays before any distance: the value check (finite,
/// bounded norm) and, for a cosine collection, the normalisation. Dimensions of common
/// embedding models.
#[divan::bench_group]
mod vector_checks {
    use super::*;

    const DIMS: [usize; 3] = [128, 384, 1536];

    #[divan::bench(args = DIMS)]
    fn check_values(b: Bencher, dim: usize) {
        let (x, _) = pair(dim);
        b.bench(|| strata_types::check_vector_values(black_box(&x)));
    }

    #[divan::bench(args = DIMS)]
    fn normalize(b: Bencher, dim: usize) {
        let (x, _) = pair(dim);
        b.with_inputs(|| x.clone())
            .bench_local_refs(|v| strata_index::metric::normalize(black_box(v)));
    }
}

/// Exact top-10 over 10 000 × 128 vectors.
#[divan::bench(args = [Metric::Cosine, Metric::Dot, Metric::L2])]
fn exact_scan_10k(b: Bencher, metric: Metric) {
    let data = testdata::clustered(10_000, 128, CLUSTERS, SEED);
    let q = testdata::queries(1, 128, CLUSTERS, SEED, SEED + 1).remove(0);
    b.bench(|| {
        exact_top_k(
            metric,
            black_box(&q),
            data.iter()
                .enumerate()
                .map(|(i, v)| (i as u32, v.as_slice())),
            K,
        )
    });
}

/// A small tenant's cosine exact scan as the engine runs it: 2,000 × 384 vectors in one flat
/// copy, scored raw by the full cosine (`exact_top_k`) and prepared, unit length, by one dot
/// product each (`exact_top_k_prepared`, the engine's).
#[divan::bench_group]
mod exact_scan_2k_384 {
    use super::*;

    const N: usize = 2_000;
    const DIM: usize = 384;

    fn flat(prepared: bool) -> (Vec<f32>, Vec<f32>) {
        let mut data = testdata::clustered(N, DIM, CLUSTERS, SEED).concat();
        if prepared {
            data.chunks_exact_mut(DIM)
                .for_each(|v| Metric::Cosine.normalize_for_index(v));
        }
        let q = testdata::queries(1, DIM, CLUSTERS, SEED, SEED + 1).remove(0);
        (data, q)
    }

    #[divan::bench]
    fn plain(b: Bencher) {
        let (data, q) = flat(false);
        b.bench(|| {
            let rows = (0u32..).zip(data.chunks_exact(DIM));
            exact_top_k(Metric::Cosine, black_box(&q), rows, K)
        });
    }

    #[divan::bench]
    fn prepared(b: Bencher) {
        let (data, q) = flat(true);
        b.bench(|| {
            let rows = (0u32..).zip(data.chunks_exact(DIM));
            exact_top_k_prepared(Metric::Cosine, black_box(&q), rows, K)
        });
    }
}

/// The HNSW data set, its queries and the L2 ground truth, made once.
struct Fixture {
    data: Vec<Vec<f32>>,
    queries: Vec<Vec<f32>>,
    truth: Vec<Vec<u32>>,
    index: HnswIndex,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let n = bench_n();
        let data = testdata::clustered(n, HNSW_DIM, CLUSTERS, SEED);
        let queries = testdata::queries(1000, HNSW_DIM, CLUSTERS, SEED, SEED + 1);
        let truth = queries
            .iter()
            .map(|q| {
                let it = data
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (i as u32, v.as_slice()));
                exact_top_k(Metric::L2, q, it, K)
                    .iter()
                    .map(|h| h.slot)
                    .collect()
            })
            .collect();
        let index = build(&data);
        Fixture {
            data,
            queries,
            truth,
            index,
        }
    })
}

fn build(data: &[Vec<f32>]) -> HnswIndex {
    let mut index = HnswIndex::new(HNSW_DIM, Metric::L2, HnswParams::default()).expect("new");
    let items: Vec<(u32, &[f32])> = data
        .iter()
        .enumerate()
        .map(|(i, v)| (i as u32, v.as_slice()))
        .collect();
    index.insert_batch(&items, 2).expect("insert");
    index
}

/// Building the whole index once with 2 threads (one sample: it takes tens of seconds).
#[divan::bench(sample_count = 1, sample_size = 1)]
fn hnsw_build(b: Bencher) {
    let data = &fixture().data;
    b.bench(|| build(data));
}

/// One query per iteration, cycling through 1000 queries; `threads` searches run at once.
#[divan::bench(args = [16, 64, 128], threads = [1, 2])]
fn hnsw_search(b: Bencher, ef: usize) {
    let f = fixture();
    report_recall(f, ef);
    let next = AtomicUsize::new(0);
    b.bench(|| {
        let i = next.fetch_add(1, Ordering::Relaxed) % f.queries.len();
        f.index.search(&f.queries[i], K, Some(ef)).expect("search")
    });
}

/// Prints recall@10 for `ef` once per process.
fn report_recall(f: &Fixture, ef: usize) {
    static DONE: std::sync::Mutex<Vec<usize>> = std::sync::Mutex::new(Vec::new());
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if done.contains(&ef) {
        return;
    }
    done.push(ef);
    let mut found = 0;
    for (q, gt) in f.queries.iter().zip(&f.truth) {
        let hits = f.index.search(q, K, Some(ef)).expect("search");
        found += hits.iter().filter(|h| gt.contains(&h.slot)).count();
    }
    eprintln!(
        "hnsw n={} ef={ef}: recall@10 = {:.4}",
        f.data.len(),
        found as f64 / (K * f.queries.len()) as f64
    );
}
