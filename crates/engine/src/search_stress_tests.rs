//! A tenant that sheds load (integrity `stress` or `critical`) refuses searches asking for an
//! `ef` above `STRESS_MAX_EF`; a search naming no `ef` must not walk a wider calibrated
//! default beam either. The beam walked is read from `plan::BEAMS`.

use std::time::Duration;

use strata_auth::{OperatorScope, TenantScope};
use strata_index::Calibration;
use strata_types::{Metric, RequestScope, SearchRequest, TenantId};

use crate::integrity::{IntegrityPolicy, IntegrityState, STRESS_MAX_EF};
use crate::plan::BEAMS;
use crate::test_support::{DIM, admin_scope, put_clustered, vec_name};
use crate::{Engine, EngineConfig};

/// 4,500 vectors of 2,048 dimensions: 9.2M floats, past the planner's exact-scan budget at a
/// beam of 256 (4 × 2M) and within it at 1024 (16 × 2M).
const N: usize = 4_500;

/// Tenant `acme`, whose queue alone can put it in `stress` (a depth of 2 is over its limit of
/// 1), with a graph over `N` clustered vectors calibrated to the widest beam, 1024.
fn calibrated_wide(dir: &std::path::Path) -> (Engine, TenantScope) {
    let mut config = EngineConfig::default();
    config.integrity.tenants.insert(
        "acme".into(),
        IntegrityPolicy {
            queue_depth_limit: 1,
            consecutive: 1,
            cooldown_ms: 0,
            ..IntegrityPolicy::default()
        },
    );
    let engine = Engine::open(dir, config).unwrap();
    let id = TenantId::parse("acme").unwrap();
    engine
        .create_tenant(&OperatorScope::for_tests(), &id, None)
        .unwrap();
    let scope = admin_scope(&engine, "acme");
    engine
        .create_collection(&scope, &vec_name(), DIM, Metric::L2)
        .unwrap();
    put_clustered(&engine, &scope, N);
    engine.index_stats(&scope).unwrap();
    engine.wait_for_graph_builds();
    let slot = engine.indexes.get(scope.key()).unwrap();
    let mut guard = slot.index.write().unwrap();
    let ci = guard.as_mut().unwrap().collections.get_mut(&vec_name());
    let g = ci.unwrap().graph.as_mut().unwrap();
    let wide = Calibration {
        ef: 1024,
        recall: 0.95,
        steps: 9,
    };
    g.set_calibration(wide, N);
    assert_eq!(g.default_ef(), 1024);
    engine.indexes.account(&slot, guard.as_ref());
    drop(guard);
    (engine, scope)
}

/// The search's answer and the beams its graph walks used.
fn search(engine: &Engine, scope: &TenantScope, ef: Option<usize>) -> (bool, usize, Vec<usize>) {
    let query = strata_index::testdata::queries(1, DIM as usize, 10, 1, 2).remove(0);
    let s = SearchRequest {
        vector: Some(query),
        k: 10,
        ef,
        modality: Some(vec_name()),
        include: Some(vec![]),
        ..Default::default()
    };
    BEAMS.with(|b| b.borrow_mut().clear());
    let r = engine.search(scope, &RequestScope::default(), &s).unwrap();
    (r.exact, r.hits.len(), BEAMS.with(|b| b.take()))
}

#[test]
fn a_shedding_tenant_walks_no_wider_default_beam_than_it_may_ask_for() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = calibrated_wide(dir.path());
    // Normal: the calibrated 1024 scales the exact-scan budget 16 times, past 9.2M floats.
    assert_eq!(search(&engine, &scope, None), (true, 10, vec![]));

    engine.observe_queue(&scope, 2, Duration::ZERO);
    assert_eq!(
        engine.indexes.integrity_state(scope.key()),
        IntegrityState::Stress
    );
    // Stressed: the default beam is capped, and the budget follows the capped beam (4 × 2M
    // floats, under 9.2M), so the graph answers at 256, not an exact scan priced for 1024.
    assert_eq!(
        search(&engine, &scope, None),
        (false, 10, vec![STRESS_MAX_EF])
    );
    // A request's own `ef` is used as asked (at most the cap, or refused).
    assert_eq!(search(&engine, &scope, Some(100)), (false, 10, vec![100]));
    assert_eq!(
        engine.indexes.integrity_state(scope.key()),
        IntegrityState::Stress,
        "the queue depth still holds it there"
    );
}

/// Under the cap, a predicate few slots pass still widens the walk (×4 up to 4096) and then
/// settles it exactly: never fewer than `need` when that many pass.
#[test]
fn the_capped_beam_still_widens_to_an_exact_scan() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = calibrated_wide(dir.path());
    let query = strata_index::testdata::queries(1, DIM as usize, 10, 1, 2).remove(0);
    // 9 slots in 4,500 pass.
    let passes = |slot: u32| slot.is_multiple_of(500);
    BEAMS.with(|b| b.borrow_mut().clear());
    let (hits, exact) = engine
        .indexes
        .with_index(&engine.store, scope.key(), scope.tenant(), |ti| {
            let ci = &ti.collections[&vec_name()];
            crate::plan::vector_top(
                ci,
                &ci.with_vector,
                false,
                &query,
                10,
                10,
                None,
                Some(STRESS_MAX_EF),
                &passes,
            )
        })
        .unwrap();
    assert_eq!(BEAMS.with(|b| b.take()), [256, 1024, 4096]);
    assert!(exact, "settled by an exact scan");
    assert_eq!(hits.len(), 9);
    assert!(hits.iter().all(|h| passes(h.slot)));
}

/// The residency view shows the beam a search naming no `ef` walks now: the calibrated one
/// while `normal`, capped while shedding, with the calibrated one beside it.
#[test]
fn the_residency_view_shows_the_default_beam_a_shedding_tenant_walks() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = calibrated_wide(dir.path());
    let op = OperatorScope::for_tests();
    let beams = |engine: &Engine| {
        let r = engine.residency(&op, scope.tenant()).unwrap();
        (r.graph_ef_search, r.graph_ef_search_calibrated)
    };
    assert_eq!(beams(&engine), (1024, 1024));
    engine.observe_queue(&scope, 2, Duration::ZERO);
    assert_eq!(
        engine.indexes.integrity_state(scope.key()),
        IntegrityState::Stress
    );
    assert_eq!(beams(&engine), (STRESS_MAX_EF as u32, 1024));
    // What the search really walks.
    assert_eq!(search(&engine, &scope, None).2, vec![STRESS_MAX_EF]);
    let row = engine.residency_summary(&op).tenants.remove(0);
    assert_eq!(row.residency.graph_ef_search, STRESS_MAX_EF as u32);
}
