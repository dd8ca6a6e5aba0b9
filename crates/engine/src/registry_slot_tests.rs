//! A search reaches its tenant through one slot look-up (`IndexRegistry::slot`): the LRU
//! stamp it leaves, the integrity state read without the tracker's lock, the health the
//! sample reuses while the index is unchanged, and a slot a purge forgot.

use strata_auth::{OperatorScope, TenantScope};
use strata_types::{Metric, NewRecord, RecordId, RequestScope, SearchRequest, TenantId};

use crate::integrity::{IntegrityPolicy, IntegrityState};
use crate::test_support::{admin_scope, vec_name};
use crate::{Engine, EngineConfig, EngineError};

fn open(
    dir: &std::path::Path,
    config: EngineConfig,
    tenants: &[&str],
) -> (Engine, Vec<TenantScope>) {
    let engine = Engine::open(dir, config).unwrap();
    let scopes = tenants
        .iter()
        .map(|t| {
            let id = TenantId::parse(*t).unwrap();
            engine
                .create_tenant(&OperatorScope::for_tests(), &id, None)
                .unwrap();
            let scope = admin_scope(&engine, t);
            engine
                .create_collection(&scope, &vec_name(), 2, Metric::L2)
                .unwrap();
            put(&engine, &scope, 0);
            scope
        })
        .collect();
    (engine, scopes)
}

fn put(engine: &Engine, scope: &TenantScope, i: usize) {
    let record = NewRecord {
        id: Some(RecordId::parse(format!("r{i}")).unwrap()),
        modality: Some(vec_name()),
        vector: Some(vec![1.0, i as f32]),
        ..Default::default()
    };
    engine
        .put(scope, &RequestScope::default(), vec![record])
        .unwrap();
}

fn search(engine: &Engine, scope: &TenantScope) -> Result<usize, EngineError> {
    let s = SearchRequest {
        vector: Some(vec![1.0, 0.0]),
        k: 1,
        modality: Some(vec_name()),
        include: Some(vec![]),
        ..Default::default()
    };
    Ok(engine
        .search(scope, &RequestScope::default(), &s)?
        .hits
        .len())
}

fn stamp(engine: &Engine, scope: &TenantScope) -> u64 {
    let slot = engine.indexes.get(scope.key()).expect("slot");
    slot.counters
        .last_used
        .load(std::sync::atomic::Ordering::Relaxed)
}

#[test]
fn a_search_stamps_its_tenant_only_when_the_lru_order_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scopes) = open(dir.path(), EngineConfig::default(), &["a", "b"]);
    let (a, b) = (&scopes[0], &scopes[1]);
    search(&engine, a).unwrap();
    let first = stamp(&engine, a);
    // Already the most recent: the stamp (and the clock) stay as they are.
    search(&engine, a).unwrap();
    assert_eq!(stamp(&engine, a), first);
    // Another tenant's use moves it ahead, and the next use of `a` moves `a` ahead again:
    // the eviction order is the order of last use.
    search(&engine, b).unwrap();
    assert!(stamp(&engine, b) > stamp(&engine, a));
    search(&engine, a).unwrap();
    assert!(stamp(&engine, a) > stamp(&engine, b));
}

#[test]
fn the_integrity_state_read_without_a_lock_follows_the_tracker() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = EngineConfig::default();
    // Every search is far over a contract of a nanosecond: critical after one sample.
    config.integrity.tenants.insert(
        "a".into(),
        IntegrityPolicy {
            latency_contract_ms: 1e-6,
            consecutive: 1,
            cooldown_ms: 0,
            ..IntegrityPolicy::default()
        },
    );
    let (engine, scopes) = open(dir.path(), config, &["a", "b"]);
    let (a, b) = (&scopes[0], &scopes[1]);
    let slot = engine.indexes.slot(a.key(), a.tenant());
    assert_eq!(slot.integrity_state(), IntegrityState::Normal);
    search(&engine, a).unwrap();
    search(&engine, b).unwrap();
    assert_eq!(slot.integrity_state(), IntegrityState::Critical);
    assert_eq!(
        engine
            .integrity(&OperatorScope::for_tests(), a.tenant())
            .unwrap()
            .state,
        IntegrityState::Critical
    );
    // Writes read the copy too: the critical tenant's are refused, the other's are not.
    let record = NewRecord {
        id: Some(RecordId::parse("late").unwrap()),
        modality: Some(vec_name()),
        vector: Some(vec![0.0, 1.0]),
        ..Default::default()
    };
    assert!(matches!(
        engine.put(a, &RequestScope::default(), vec![record]),
        Err(EngineError::TenantCritical(_))
    ));
    assert_eq!(
        engine.indexes.integrity_state(b.key()),
        IntegrityState::Normal
    );
    put(&engine, b, 1);
}

#[test]
fn the_sample_reads_the_health_again_once_the_index_changed() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scopes) = open(dir.path(), EngineConfig::default(), &["a"]);
    let a = &scopes[0];
    search(&engine, a).unwrap();
    let slot = engine.indexes.get(a.key()).unwrap();
    let read_at = || {
        slot.health_read_at
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    assert_eq!(read_at(), slot.index.writes());
    // A write takes the index's write lock: the health held is stale until the next sample.
    put(&engine, a, 1);
    assert_ne!(read_at(), slot.index.writes());
    search(&engine, a).unwrap();
    assert_eq!(read_at(), slot.index.writes());
}

#[test]
fn a_slot_forgotten_by_a_purge_is_never_loaded_again() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scopes) = open(dir.path(), EngineConfig::default(), &["a"]);
    let a = &scopes[0];
    search(&engine, a).unwrap();
    // A search that looked the slot up just before the purge forgot it.
    let stale = engine.indexes.slot(a.key(), a.tenant());
    engine.indexes.forget(a.key());
    let loaded = engine
        .indexes
        .with_slot_index(&engine.store, a.key(), &stale, |_| Ok(()));
    assert!(matches!(loaded, Err(EngineError::TenantNotFound(_))));
    assert!(stale.index.read().unwrap().is_none());
    assert!(engine.indexes.get(a.key()).is_none());
}
