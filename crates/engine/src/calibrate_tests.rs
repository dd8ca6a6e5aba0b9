//! A graph that grew since its calibration is measured again in short locked steps, and the
//! new result replaces the old one; a stop, or the tenant's eviction meanwhile, keeps nothing.

use rand::{Rng, SeedableRng};
use strata_auth::OperatorScope;
use strata_index::{Calibrated, Calibration};
use strata_types::{Metric, NewRecord, RecordId, RequestScope, TenantId};

use crate::test_support::{admin_scope, vec_name};

/// An engine whose tenant `acme` holds 6,000 uniformly random 256-d vectors (the data on
/// which the default beam misses the target, past the graph threshold of 1.5M floats), its
/// graph built and then marked as calibrated at half its size with the default beam, so it
/// wants measuring again.
fn grown() -> (tempfile::TempDir, crate::Engine, strata_auth::TenantScope) {
    let dir = tempfile::tempdir().unwrap();
    let engine = crate::Engine::open(dir.path(), crate::EngineConfig::default()).unwrap();
    let id = TenantId::parse("acme").unwrap();
    engine
        .create_tenant(&OperatorScope::for_tests(), &id, None)
        .unwrap();
    let scope = admin_scope(&engine, "acme");
    engine
        .create_collection(&scope, &vec_name(), 256, Metric::Cosine)
        .unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    for batch in 0..6 {
        let records = (0..1_000)
            .map(|i| NewRecord {
                id: Some(RecordId::parse(format!("r{batch}-{i}")).unwrap()),
                modality: Some(vec_name()),
                vector: Some((0..256).map(|_| rng.random_range(-1.0f32..1.0)).collect()),
                ..Default::default()
            })
            .collect();
        engine
            .put(&scope, &RequestScope::default(), records)
            .unwrap();
    }
    engine.index_stats(&scope).unwrap();
    engine.wait_for_graph_builds();
    let slot = engine.indexes.get(scope.key()).unwrap();
    let mut guard = slot.index.write().unwrap();
    let index = guard.as_mut().unwrap();
    // So that a save (an eviction's) keeps the stale calibration set below.
    index.mark_dirty();
    let ci = index.collections.get_mut(&vec_name());
    let g = ci.unwrap().graph.as_mut().unwrap();
    assert_eq!(g.len(), 6_000);
    let stale = Calibration {
        ef: 64,
        recall: 1.0,
        steps: 1,
    };
    g.set_calibration(stale, 3_000);
    drop(guard);
    (dir, engine, scope)
}

/// The calibration `acme`'s graph holds now.
fn calibrated(engine: &crate::Engine, scope: &strata_auth::TenantScope) -> Calibrated {
    let slot = engine.indexes.get(scope.key()).unwrap();
    let guard = slot.index.read().unwrap();
    let ci = &guard.as_ref().unwrap().collections[&vec_name()];
    ci.graph.as_ref().unwrap().calibrated().unwrap()
}

#[test]
fn a_grown_graph_is_measured_again() {
    let (_dir, engine, scope) = grown();
    let slot = engine.indexes.get(scope.key()).unwrap();
    super::calibrate_collection(&engine.indexes, &slot, &vec_name(), &|| false);
    let c = calibrated(&engine, &scope);
    assert_eq!(c.at_len, 6_000, "{c:?}");
    assert!(c.ef > 64, "{c:?}");
    // Measured at its size now: not wanted again until it grows by a quarter.
    let guard = slot.index.read().unwrap();
    let ci = &guard.as_ref().unwrap().collections[&vec_name()];
    assert_eq!(ci.graph.as_ref().unwrap().default_ef(), c.ef);
    assert!(!ci.wants_calibration());
}

/// A stop asked for before the measurement, during its brute force (6,000 vectors: three
/// chunks) or at its first graph search keeps nothing, and returns at once.
#[test]
fn a_stop_keeps_the_graph_as_it_was() {
    let (_dir, engine, scope) = grown();
    let slot = engine.indexes.get(scope.key()).unwrap();
    let before = calibrated(&engine, &scope);
    for n in [0, 1, 3] {
        let calls = std::cell::Cell::new(0usize);
        let stop = || {
            calls.set(calls.get() + 1);
            calls.get() > n
        };
        let started = std::time::Instant::now();
        super::calibrate_collection(&engine.indexes, &slot, &vec_name(), &stop);
        assert_eq!(
            calls.get(),
            n + 1,
            "stopped at the first check that said so"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert_eq!(calibrated(&engine, &scope), before, "stop after {n} checks");
    }
    // The builder's own flag, set at shutdown, stops it the same way.
    engine
        .indexes
        .builder
        .stop
        .store(true, std::sync::atomic::Ordering::Relaxed);
    crate::graph_build::calibrate_grown(&engine.indexes, &slot);
    assert_eq!(calibrated(&engine, &scope), before);
}

/// The tenant evicted and loaded again while its graph is measured: the graph loaded is not
/// the one measured, and the result is not kept in it.
#[test]
fn an_eviction_meanwhile_keeps_nothing() {
    let (_dir, engine, scope) = grown();
    let slot = engine.indexes.get(scope.key()).unwrap();
    // The builder measures a reloaded graph that wants it: not in this test.
    engine
        .indexes
        .builder
        .stop
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let before = calibrated(&engine, &scope);
    let calls = std::cell::Cell::new(0usize);
    let evict_once = || {
        calls.set(calls.get() + 1);
        if calls.get() == 2 {
            assert!(engine.indexes.try_evict(&engine.store, scope.key(), &slot));
            engine.index_stats(&scope).unwrap();
        }
        false
    };
    super::calibrate_collection(&engine.indexes, &slot, &vec_name(), &evict_once);
    assert_eq!(
        calls.get(),
        2,
        "the measurement ended at the next look at the index"
    );
    let residency = engine.indexes.residency(scope.key(), scope.tenant());
    assert_eq!(residency.evictions, 1);
    // The eviction saved the stale calibration, and the reload restored it; kept, the new
    // measurement would say 6,000 vectors.
    assert_eq!(calibrated(&engine, &scope), before);
}
