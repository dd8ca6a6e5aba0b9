//! The retention sweep deletes adaptive state it found stale only if it is still stale in the
//! transaction that deletes it: feedback that reinforced a pheromone between the sweep's read
//! and its write was answered as kept, and stays.

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

#[test]
fn feedback_between_the_sweeps_read_and_its_write_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let config = EngineConfig {
        adaptive: AdaptiveConfig {
            half_life_secs: 0.05,
            min_strength: 0.5,
            ..AdaptiveConfig::default()
        },
        ..EngineConfig::default()
    };
    let engine = Engine::open(dir.path(), config).unwrap();
    let op = OperatorScope::for_tests();
    let id = TenantId::parse("acme").unwrap();
    engine.create_tenant(&op, &id, None).unwrap();
    let scope = crate::test_support::admin_scope(&engine, "acme");
    let records = ["target", "other"]
        .into_iter()
        .map(|name| NewRecord {
            id: Some(RecordId::parse(name).unwrap()),
            content: Some(format!("the {name} note")),
            ..Default::default()
        })
        .collect();
    engine.put(&scope, &req(), records).unwrap();
    reinforce(&engine, &scope);
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
