//! Adaptive state against writes that race it: the retention sweep deletes what it found
//! stale only if it is still stale in the transaction that deletes it (feedback that
//! reinforced a pheromone between the sweep's read and its write was answered as kept, and
//! stays), and feedback blends into the narrative as stored, not as cached.

use strata_auth::OperatorScope;
use strata_types::{FeedbackRequest, NewRecord, RecordId, RequestScope, TenantId};

use crate::adaptive::AdaptiveConfig;
use crate::{Engine, EngineConfig};

fn req() -> RequestScope {
    serde_json::from_value(serde_json::json!({"memory_domain": "d1"})).unwrap()
}

fn reinforce(engine: &Engine, scope: &strata_auth::TenantScope) {
    let f = FeedbackRequest {
        ids: vec![RecordId::parse("target").unwrap()],
        shown: vec![
            RecordId::parse("other").unwrap(),
            RecordId::parse("target").unwrap(),
        ],
        ..Default::default()
    };
    engine.feedback(scope, &req(), &f).unwrap();
}

/// An engine whose pheromones decay below the sweep's floor within a few hundred ms.
fn fast_decaying_engine(dir: &std::path::Path) -> Engine {
    let config = EngineConfig {
        adaptive: AdaptiveConfig {
            half_life_secs: 0.05,
            min_strength: 0.5,
            ..AdaptiveConfig::default()
        },
        ..EngineConfig::default()
    };
    Engine::open(dir, config).unwrap()
}

/// Tenant `name` with a `target` and an `other` record, `target` reinforced once.
fn reinforced_tenant(engine: &Engine, name: &str) -> strata_auth::TenantScope {
    let op = OperatorScope::for_tests();
    engine
        .create_tenant(&op, &TenantId::parse(name).unwrap(), None)
        .unwrap();
    let scope = crate::test_support::admin_scope(engine, name);
    let records = ["target", "other"]
        .into_iter()
        .map(|r| NewRecord {
            id: Some(RecordId::parse(r).unwrap()),
            content: Some(format!("the {r} note")),
            ..Default::default()
        })
        .collect();
    engine.put(&scope, &req(), records).unwrap();
    reinforce(engine, &scope);
    scope
}

#[test]
fn feedback_between_the_sweeps_read_and_its_write_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let engine = fast_decaying_engine(dir.path());
    let op = OperatorScope::for_tests();
    let scope = reinforced_tenant(&engine, "acme");
    let count = |engine: &Engine| -> u64 {
        engine
            .adaptive_stats(&scope)
            .unwrap()
            .iter()
            .map(|s| s.pheromones)
            .sum()
    };
    assert_eq!(count(&engine), 1);
    // Decayed far below the floor by the time the sweep reads it...
    std::thread::sleep(std::time::Duration::from_millis(300));
    let now = strata_types::now_millis();
    let swept = engine
        .sweep_adaptive_of(scope.key(), now, &mut || reinforce(&engine, &scope))
        .unwrap();
    // ... and reinforced before its write: kept.
    assert_eq!(swept.pheromones, 0);
    assert_eq!(count(&engine), 1);
    // Left alone, it decays and goes.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let swept = engine.sweep_adaptive(&op).unwrap();
    assert_eq!(swept.pheromones, 1);
    assert_eq!(count(&engine), 0);
}

/// Feedback blends its context into the narrative as stored, not as the namespace cache last
/// saw it: a narrative deleted meanwhile (by the sweep, or with its collection) starts afresh
/// instead of coming back blended.
#[test]
fn feedback_blends_into_the_narrative_as_stored() {
    use strata_store::AdaptiveReads;
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    let op = OperatorScope::for_tests();
    engine
        .create_tenant(&op, &TenantId::parse("acme").unwrap(), None)
        .unwrap();
    let scope = crate::test_support::admin_scope(&engine, "acme");
    let small = strata_types::CollectionName::parse("small").unwrap();
    engine
        .create_collection(&scope, &small, 4, strata_types::Metric::Cosine)
        .unwrap();
    let alice: RequestScope = serde_json::from_value(
        serde_json::json!({"memory_domain": "d1", "user_tokens": ["u:alice"]}),
    )
    .unwrap();
    let record = NewRecord {
        id: Some(RecordId::parse("a").unwrap()),
        modality: Some(small.clone()),
        vector: Some(vec![1.0, 0.0, 0.0, 0.0]),
        ..Default::default()
    };
    engine.put(&scope, &alice, vec![record]).unwrap();
    let feedback = |v: Vec<f32>| FeedbackRequest {
        ids: vec![RecordId::parse("a").unwrap()],
        vector: Some(v),
        modality: Some(small.clone()),
        ..Default::default()
    };
    engine
        .feedback(&scope, &alice, &feedback(vec![1.0, 0.0, 0.0, 0.0]))
        .unwrap();
    let domain = strata_types::Domain::parse("d1").unwrap();
    let stored = |engine: &Engine| {
        let r = engine.store.read().unwrap();
        r.adaptive_rows(scope.key(), Some(&domain))
            .unwrap()
            .into_iter()
            .find_map(|row| match row.item {
                strata_store::AdaptiveItem::Narrative(_, _, n) => Some(n),
                _ => None,
            })
    };
    let first = stored(&engine).expect("a narrative");
    assert_eq!(first.updates, 1);
    // Deleted in storage behind the cache's back, as a sweep's write does before it forgets.
    let principal = {
        let r = engine.store.read().unwrap();
        r.adaptive_rows(scope.key(), Some(&domain))
            .unwrap()
            .into_iter()
            .find_map(|row| match row.item {
                strata_store::AdaptiveItem::Narrative(p, ..) => Some(p),
                _ => None,
            })
            .unwrap()
    };
    engine
        .store
        .write(|w| w.delete_narrative(scope.key(), &domain, &principal, &small))
        .unwrap();
    engine
        .feedback(&scope, &alice, &feedback(vec![0.0, 1.0, 0.0, 0.0]))
        .unwrap();
    let second = stored(&engine).expect("a narrative");
    assert_eq!(second.updates, 1, "the deleted narrative came back blended");
    assert!(second.vector[0].abs() < 1e-6, "{:?}", second.vector);
}

/// The sweep leaves a suspended tenant's state as it is, as the expiry sweep leaves its
/// records, and sweeps it again once it is resumed; the other tenants are swept meanwhile.
#[test]
fn the_sweep_passes_over_a_suspended_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let engine = fast_decaying_engine(dir.path());
    let op = OperatorScope::for_tests();
    for name in ["acme", "paused"] {
        reinforced_tenant(&engine, name);
    }
    let paused = TenantId::parse("paused").unwrap();
    engine.suspend_tenant(&op, &paused).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(
        engine.sweep_adaptive(&op).unwrap().pheromones,
        1,
        "acme's only"
    );
    engine.resume_tenant(&op, &paused).unwrap();
    assert_eq!(
        engine.sweep_adaptive(&op).unwrap().pheromones,
        1,
        "paused's, once resumed"
    );
}
