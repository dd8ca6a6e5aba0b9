//! The graph's default search beam is calibrated on the data stored: uniformly random
//! vectors (hard for HNSW: recall@10 about 0.4 at the default `ef` 64 on 100k × 128) reach the
//! target recall without the user choosing an `ef`, and clustered data keeps the default.

mod common;

use std::collections::HashSet;

use rand::{Rng, SeedableRng};
use strata_auth::TenantScope;
use strata_engine::{Engine, IndexStats};
use strata_types::*;

const DIM: usize = 128;
const N: usize = 20_000;

fn req() -> RequestScope {
    RequestScope::default()
}

fn vec_name() -> CollectionName {
    CollectionName::parse("vec").unwrap()
}

fn uniform(n: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| (0..DIM).map(|_| rng.random_range(-1.0f32..1.0)).collect())
        .collect()
}

/// A tenant whose cosine collection `vec` holds `data` (record `r{i}` holds `data[i]`), its
/// graph built by the background builder as a server does between writes and searches.
fn loaded(data: &[Vec<f32>]) -> (tempfile::TempDir, Engine, TenantScope) {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = common::open_with_tenant(dir.path(), "acme", common::full_grant());
    engine
        .create_collection(&scope, &vec_name(), DIM as u32, Metric::Cosine)
        .unwrap();
    for (chunk_no, chunk) in data.chunks(1000).enumerate() {
        let records = chunk
            .iter()
            .enumerate()
            .map(|(j, v)| NewRecord {
                id: Some(RecordId::parse(format!("r{}", chunk_no * 1000 + j)).unwrap()),
                modality: Some(vec_name()),
                vector: Some(v.clone()),
                ..Default::default()
            })
            .collect();
        engine.put(&scope, &req(), records).unwrap();
    }
    engine.index_stats(&scope).unwrap();
    engine.wait_for_graph_builds();
    (dir, engine, scope)
}

fn vec_stats(engine: &Engine, scope: &TenantScope) -> IndexStats {
    let stats = engine.index_stats(scope).unwrap();
    stats
        .into_iter()
        .find(|s| s.collection == vec_name())
        .unwrap()
}

/// Mean recall@10 of searches at `ef` (`None`: the default) for `queries`, against brute
/// force; also checks that each answers with exactly 10 hits, exactly or on the graph as
/// `exact` says.
fn recall(
    engine: &Engine,
    scope: &TenantScope,
    data: &[Vec<f32>],
    queries: &[Vec<f32>],
    ef: Option<usize>,
    exact: bool,
) -> f64 {
    let mut found = 0;
    for q in queries {
        let s = SearchRequest {
            vector: Some(q.clone()),
            k: 10,
            modality: Some(vec_name()),
            ef,
            ..Default::default()
        };
        let r = engine.search(scope, &req(), &s).unwrap();
        assert_eq!(r.hits.len(), 10);
        assert_eq!(r.exact, exact, "exact scan or graph at ef {ef:?}");
        let all = data
            .iter()
            .enumerate()
            .map(|(i, v)| (i as u32, v.as_slice()));
        let truth = strata_index::exact_top_k(strata_index::Metric::Cosine, q, all, 10);
        let want: HashSet<String> = truth.iter().map(|h| format!("r{}", h.slot)).collect();
        found += r
            .hits
            .iter()
            .filter(|h| want.contains(h.id.as_str()))
            .count();
    }
    found as f64 / (10 * queries.len()) as f64
}

#[test]
fn uniform_random_vectors_reach_the_recall_target_at_the_default_search() {
    let started = std::time::Instant::now();
    let data = uniform(N, 11);
    let (_dir, engine, scope) = loaded(&data);
    let built = started.elapsed();
    let ef = vec_stats(&engine, &scope).ef_search;
    assert!(ef.is_some_and(|ef| ef >= 128), "calibrated beam {ef:?}");
    let queries = uniform(50, 12);
    // The graph's own recall at its calibrated beam (a request `ef` keeps the planner's
    // budget, so 20k vectors are searched on the graph).
    let got = recall(&engine, &scope, &data, &queries, ef, false);
    // A default search: at a calibrated beam of 128 or more the planner's budget is at least
    // twice 2,000,000 floats, so the 2,560,000 of 20k × 128 are scanned exactly.
    let default = recall(&engine, &scope, &data, &queries, None, true);
    println!(
        "uniform {N} x {DIM}: default ef {ef:?}, graph recall@10 {got:.4} over 50 queries, \
         default search (exact) {default:.4} (load and build {built:?}, total {:?})",
        started.elapsed()
    );
    assert!(got >= 0.9, "recall@10 {got}");
    assert!(default >= 0.999, "recall@10 {default}");
}

#[test]
fn clustered_vectors_keep_the_configured_default() {
    let data = strata_index::testdata::clustered(N, DIM, 100, 7);
    let (_dir, engine, scope) = loaded(&data);
    assert_eq!(vec_stats(&engine, &scope).ef_search, Some(64));
    let queries = strata_index::testdata::queries(50, DIM, 100, 7, 99);
    let got = recall(&engine, &scope, &data, &queries, None, false);
    assert!(got >= 0.95, "recall@10 {got}");
}
