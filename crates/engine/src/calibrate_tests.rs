//! A graph that grew since its calibration is measured again in short locked steps, and the
//! new result replaces the old one.

use rand::{Rng, SeedableRng};
use strata_auth::OperatorScope;
use strata_index::Calibration;
use strata_types::{Metric, NewRecord, RecordId, RequestScope, TenantId};

use crate::test_support::{admin_scope, vec_name};

#[test]
fn a_grown_graph_is_measured_again() {
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
    // Uniformly random vectors (the data on which the default beam misses the target), past
    // the graph threshold (1.5M floats).
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
    let graph = |f: &mut dyn FnMut(&mut strata_index::HnswIndex)| {
        let mut guard = slot.index.write().unwrap();
        let ci = guard.as_mut().unwrap().collections.get_mut(&vec_name());
        f(ci.unwrap().graph.as_mut().unwrap());
    };
    // As if it had been calibrated at half its size with the default beam.
    let mut len = 0;
    graph(&mut |g| {
        len = g.len();
        let stale = Calibration {
            ef: 64,
            recall: 1.0,
            steps: 1,
        };
        g.set_calibration(stale, len / 2);
    });
    assert_eq!(len, 6_000);
    super::calibrate_collection(&engine.indexes, &slot, &vec_name());
    graph(&mut |g| {
        let c = g.calibrated().unwrap();
        assert_eq!(c.at_len, 6_000, "{c:?}");
        assert!(c.ef > 64, "{c:?}");
        assert_eq!(g.default_ef(), c.ef);
    });
    // Measured at its size now: not wanted again until it doubles.
    let guard = slot.index.read().unwrap();
    let ci = &guard.as_ref().unwrap().collections[&vec_name()];
    assert!(!ci.wants_calibration());
}
