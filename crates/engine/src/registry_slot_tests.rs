//! A search reaches its tenant through one slot look-up (`IndexRegistry::slot`): the LRU
//! stamp it leaves, the integrity state read without the tracker's lock, the health the
//! sample reuses while the index is unchanged, and a slot a purge forgot.

use std::sync::atomic::Ordering;

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

/// A config under which tenant `a` turns critical after one search: every search is far
/// over a contract of a nanosecond, and one sample is enough.
fn hair_trigger_for_a() -> EngineConfig {
    let mut config = EngineConfig::default();
    config.integrity.tenants.insert(
        "a".into(),
        IntegrityPolicy {
            latency_contract_ms: 1e-6,
            consecutive: 1,
            cooldown_ms: 0,
            ..IntegrityPolicy::default()
        },
    );
    config
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
    slot.counters.last_used.load(Ordering::Relaxed)
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
    let config = hair_trigger_for_a();
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
    use crate::test_support::{DIM, clustered_tenant};
    let dir = tempfile::tempdir().unwrap();
    let (engine, a) = clustered_tenant(dir.path(), Metric::L2, 1100);
    let query = strata_index::testdata::queries(1, DIM as usize, 10, 1, 2).remove(0);
    let search = || {
        let s = SearchRequest {
            vector: Some(query.clone()),
            k: 5,
            modality: Some(vec_name()),
            include: Some(vec![]),
            ..Default::default()
        };
        engine.search(&a, &RequestScope::default(), &s).unwrap();
    };
    let op = OperatorScope::for_tests();
    search();
    engine.wait_for_graph_builds();
    search();
    let slot = engine.indexes.get(a.key()).unwrap();
    assert_eq!(slot.integrity.health_read_at(), slot.index.writes());
    // The built graph was sampled, and that sample is the reported connectivity.
    let reached = slot
        .with_tracker(|t| t.reach.get(&vec_name()).map(|s| s.reachable))
        .expect("the built graph's reachability is sampled");
    let report = engine.integrity(&op, a.tenant()).unwrap();
    assert_eq!(report.connectivity, reached);
    assert_eq!(report.deleted_fraction, 0.0);
    // Deletes leave their nodes in the graph: its health changes with the index.
    for i in 0..100 {
        let id = RecordId::parse(format!("r{i}")).unwrap();
        engine.delete(&a, &RequestScope::default(), &id).unwrap();
    }
    assert_ne!(slot.integrity.health_read_at(), slot.index.writes());
    search();
    assert_eq!(slot.integrity.health_read_at(), slot.index.writes());
    let in_index = slot
        .index
        .read()
        .unwrap()
        .as_ref()
        .unwrap()
        .deleted_fraction();
    let reported = engine.integrity(&op, a.tenant()).unwrap().deleted_fraction;
    assert!(reported > 0.0, "deletions reported: {reported}");
    assert_eq!(reported, in_index);
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

#[test]
fn a_stamp_never_goes_backwards() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scopes) = open(dir.path(), EngineConfig::default(), &["a"]);
    let a = &scopes[0];
    let slot = engine.indexes.get(a.key()).unwrap();
    // A use whose later stamp was stored first, by another thread: this one's earlier
    // stamp must not replace it.
    let later = engine.indexes.clock.load(Ordering::Relaxed) + 100;
    slot.counters.last_used.store(later, Ordering::Relaxed);
    engine.indexes.mark_used(&slot);
    assert_eq!(slot.counters.last_used.load(Ordering::Relaxed), later);
}

#[test]
fn the_least_recently_searched_tenant_is_evicted_however_often_the_other_searched() {
    let dir = tempfile::tempdir().unwrap();
    // The bytes one tenant's index holds, from an engine without a budget.
    let one = {
        let (engine, scopes) = open(dir.path(), EngineConfig::default(), &["a", "b", "c"]);
        let bytes: Vec<u64> = scopes
            .iter()
            .map(|s| {
                search(&engine, s).unwrap();
                engine.indexes.residency(s.key(), s.tenant()).resident_bytes
            })
            .collect();
        assert!(bytes.iter().all(|b| *b > 0), "{bytes:?}");
        *bytes.iter().max().unwrap()
    };
    let mut config = EngineConfig::default();
    // Room for two tenants, not three.
    config.residency.memory_budget_bytes = one * 5 / 2;
    let engine = Engine::open(dir.path(), config).unwrap();
    let [a, b, c] = ["a", "b", "c"].map(|t| admin_scope(&engine, t));
    // `a` is used last before `c`; its repeated searches leave its stamp as it is.
    for scope in [&a, &b, &a, &a, &a] {
        search(&engine, scope).unwrap();
    }
    search(&engine, &c).unwrap();
    let resident = |s: &TenantScope| engine.indexes.residency(s.key(), s.tenant()).resident;
    assert!(!resident(&b), "b, the least recently used, is evicted");
    assert!(resident(&a));
    assert!(resident(&c));
}

#[test]
fn a_critical_tenant_that_recovers_has_its_writes_accepted_again() {
    let dir = tempfile::tempdir().unwrap();
    let config = hair_trigger_for_a();
    let (engine, scopes) = open(dir.path(), config, &["a"]);
    let a = &scopes[0];
    search(&engine, a).unwrap();
    assert_eq!(
        engine.indexes.integrity_state(a.key()),
        IntegrityState::Critical
    );
    let late = |i: usize| {
        let record = NewRecord {
            id: Some(RecordId::parse(format!("late{i}")).unwrap()),
            modality: Some(vec_name()),
            vector: Some(vec![0.0, 1.0]),
            ..Default::default()
        };
        engine.put(a, &RequestScope::default(), vec![record])
    };
    assert!(matches!(late(0), Err(EngineError::TenantCritical(_))));
    // The slow searches' average forgotten, as if fast ones followed: the refused write's
    // own sample takes the tenant back to normal, and the write goes through.
    let slot = engine.indexes.get(a.key()).unwrap();
    slot.with_tracker(|t| t.latency_ms = 0.0);
    late(1).unwrap();
    assert_eq!(
        engine.indexes.integrity_state(a.key()),
        IntegrityState::Normal
    );
    late(2).unwrap();
}

#[test]
fn the_queue_path_moves_the_lock_free_state_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = EngineConfig::default();
    config.integrity.tenants.insert(
        "a".into(),
        IntegrityPolicy {
            queue_depth_limit: 1,
            consecutive: 1,
            cooldown_ms: 0,
            ..IntegrityPolicy::default()
        },
    );
    let (engine, scopes) = open(dir.path(), config, &["a"]);
    let a = &scopes[0];
    let waited = std::time::Duration::ZERO;
    engine.observe_queue(a, 10, waited);
    assert_eq!(
        engine.indexes.integrity_state(a.key()),
        IntegrityState::Stress
    );
    // The queue drained.
    engine.observe_queue(a, 0, waited);
    assert_eq!(
        engine.indexes.integrity_state(a.key()),
        IntegrityState::Normal
    );
}

/// The slot map is read under a sharded lock and written only for a new tenant: threads that
/// meet a tenant at once must still all get the one slot the map keeps (a second slot would
/// split the tenant's index, write order and integrity state).
#[test]
fn threads_that_meet_a_tenant_at_once_share_one_slot() {
    const THREADS: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let (engine, scopes) = open(dir.path(), EngineConfig::default(), &["a"]);
    let a = &scopes[0];
    // Two threads that both missed it under the read lock: the second to take the write lock
    // gets the first one's slot, not a slot of its own (deterministically, the race below).
    engine.indexes.forget(a.key());
    let first = engine.indexes.new_slot(a.key(), a.tenant());
    let second = engine.indexes.new_slot(a.key(), a.tenant());
    assert!(std::sync::Arc::ptr_eq(&first, &second));
    for _ in 0..50 {
        engine.indexes.forget(a.key());
        let barrier = std::sync::Barrier::new(THREADS);
        let slots: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        engine.indexes.slot(a.key(), a.tenant())
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let kept = engine.indexes.get(a.key()).unwrap();
        for slot in &slots {
            assert!(std::sync::Arc::ptr_eq(slot, &kept));
        }
    }
}

/// A smoke test, not a proof (it passes with a mutex-guarded slot map too, and a lost race
/// may not show in one run): searches on two threads while the tenant's slot is forgotten (a
/// purge); once `forget` has returned, the forgotten slot's index is empty and stays so,
/// whatever the searches that looked it up before were doing; later searches use a new slot.
#[test]
fn no_search_loads_a_forgotten_slot_after_the_forget_returned() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scopes) = open(dir.path(), EngineConfig::default(), &["a"]);
    let a = &scopes[0];
    search(&engine, a).unwrap();
    let old = engine.indexes.get(a.key()).unwrap();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let forgotten = std::sync::atomic::AtomicBool::new(false);
    // Searches that began after the forget: counted apart, so that every run has some
    // however far the searchers got before the forget (on a loaded machine, they may have
    // done any number of searches before this thread is scheduled again).
    let after_forget = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                while after_forget.load(Ordering::Relaxed) < 200 {
                    let began_after = forgotten.load(Ordering::Acquire);
                    match search(&engine, a) {
                        Ok(_) | Err(EngineError::TenantNotFound(_)) => {}
                        Err(e) => panic!("search failed: {e}"),
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                    if began_after {
                        after_forget.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        // Forget while both threads are searching.
        while done.load(Ordering::Relaxed) < 50 {
            std::thread::yield_now();
        }
        engine.indexes.forget(a.key());
        // Told before the check, so that a failing check ends the searchers rather than
        // leaving them waiting for the forget forever.
        forgotten.store(true, Ordering::Release);
        assert!(old.index.read().unwrap().is_none());
    });
    assert!(old.index.read().unwrap().is_none());
    let new = engine.indexes.get(a.key()).unwrap();
    assert!(!std::sync::Arc::ptr_eq(&old, &new));
    assert!(new.index.read().unwrap().is_some());
}

/// A `partition` tenant is pinned from its creation: the residency API says so before its
/// indexes ever load, and an eviction chosen before it was pinned (the victims are picked
/// without the tenant's locks) leaves it loaded.
#[test]
fn a_partition_tenant_is_pinned_before_its_first_load_and_never_evicted() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    let op = OperatorScope::for_tests();
    let id = TenantId::parse("p").unwrap();
    engine
        .create_tenant_at(&op, &id, None, crate::IsolationLevel::Partition, None)
        .unwrap();
    let scope = admin_scope(&engine, "p");
    engine
        .create_collection(&scope, &vec_name(), 2, Metric::L2)
        .unwrap();
    put(&engine, &scope, 0);
    let residency = engine.residency(&op, &id).unwrap();
    assert!(residency.pinned && !residency.resident, "{residency:?}");
    search(&engine, &scope).unwrap();
    let slot = engine.indexes.get(scope.key()).unwrap();
    assert!(!engine.indexes.try_evict(&engine.store, scope.key(), &slot));
    let residency = engine.residency(&op, &id).unwrap();
    assert!(residency.pinned && residency.resident, "{residency:?}");
    assert_eq!(residency.evictions, 0);
}

/// Evictions choose among the loaded tenants, which the registry keeps apart from every
/// tenant seen since the start: a load, an eviction and a purge each move a tenant in or out.
#[test]
fn the_loaded_tenants_are_kept_apart_for_evictions() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scopes) = open(dir.path(), EngineConfig::default(), &["a", "b", "c"]);
    let keys = |ss: &[&TenantScope]| {
        ss.iter()
            .map(|s| s.key())
            .collect::<std::collections::HashSet<_>>()
    };
    let [a, b, c] = [&scopes[0], &scopes[1], &scopes[2]];
    // Written, not searched: each has a slot, none is loaded.
    assert!(engine.indexes.get(c.key()).is_some());
    assert_eq!(engine.indexes.resident_keys(), keys(&[]));
    search(&engine, a).unwrap();
    search(&engine, b).unwrap();
    assert_eq!(engine.indexes.resident_keys(), keys(&[a, b]));
    let slot = engine.indexes.get(a.key()).unwrap();
    assert!(engine.indexes.try_evict(&engine.store, a.key(), &slot));
    assert_eq!(engine.indexes.resident_keys(), keys(&[b]));
    engine
        .purge_tenant(&OperatorScope::for_tests(), b.tenant())
        .unwrap();
    assert_eq!(engine.indexes.resident_keys(), keys(&[]));
}

/// A budget no tenant fits in: each load evicts the tenant loaded before it.
fn one_tenant_at_a_time(mut config: EngineConfig) -> EngineConfig {
    config.residency.memory_budget_bytes = 1;
    config
}

#[test]
fn an_idle_evicted_tenants_slot_is_dropped_and_its_counts_outlive_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = one_tenant_at_a_time(EngineConfig::default());
    let (engine, scopes) = open(dir.path(), config, &["a", "b"]);
    let (a, b) = (&scopes[0], &scopes[1]);
    let op = OperatorScope::for_tests();
    assert_eq!(search(&engine, a).unwrap(), 1);
    search(&engine, b).unwrap();
    engine.wait_for_evictions();
    let a_before = engine.indexes.residency(a.key(), a.tenant());
    assert!(!a_before.resident && a_before.loads >= 1 && a_before.evictions >= 1);
    let before = engine.residency_summary(&op);

    assert_eq!(
        engine.retire_idle_tenants(),
        0,
        "the first pass only marks the clock"
    );
    assert_eq!(
        engine.retire_idle_tenants(),
        1,
        "a is idle and holds nothing; b is loaded"
    );
    assert!(engine.indexes.get(a.key()).is_none());
    assert!(engine.indexes.get(b.key()).is_some());
    // Its lifelong counts are still reported, for it and in the server's sums.
    assert_eq!(engine.indexes.residency(a.key(), a.tenant()), a_before);
    let after = engine.residency_summary(&op);
    assert_eq!(
        (after.loads, after.evictions),
        (before.loads, before.evictions)
    );
    assert_eq!(after.tenants.len(), 1);

    // It comes back as it was, its counts going on from where they were.
    assert_eq!(search(&engine, a).unwrap(), 1);
    put(&engine, a, 1);
    let a_again = engine.indexes.residency(a.key(), a.tenant());
    assert_eq!(a_again.loads, a_before.loads + 1);
    assert_eq!(a_again.evictions, a_before.evictions);
    assert_eq!(
        engine.residency_summary(&op).loads,
        before.loads + 1,
        "the counts handed back to its slot are not counted twice"
    );
}

#[test]
fn a_slot_held_used_since_the_last_pass_loaded_or_not_at_rest_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let config = one_tenant_at_a_time(hair_trigger_for_a());
    let (engine, scopes) = open(dir.path(), config, &["a", "b", "c", "d"]);
    let (a, b, c, d) = (&scopes[0], &scopes[1], &scopes[2], &scopes[3]);
    for s in [a, c, d, b] {
        search(&engine, s).unwrap();
    }
    engine.wait_for_evictions();
    assert_eq!(
        engine.indexes.integrity_state(a.key()),
        IntegrityState::Critical
    );
    let held = engine.indexes.get(c.key()).expect("c's slot");
    assert_eq!(
        engine.retire_idle_tenants(),
        0,
        "the first pass only marks the clock"
    );
    // d is used again (and loaded, which evicts b): of the four, only b has been idle since.
    search(&engine, d).unwrap();
    engine.wait_for_evictions();
    assert_eq!(engine.retire_idle_tenants(), 1);
    assert!(
        engine.indexes.get(b.key()).is_none(),
        "b: idle, evicted, at rest"
    );
    assert!(
        engine.indexes.get(a.key()).is_some(),
        "a: its tracker left normal, so dropping it would lift its gate"
    );
    assert!(engine.indexes.get(c.key()).is_some(), "c: its slot is held");
    assert!(
        engine.indexes.get(d.key()).is_some(),
        "d: used since, and loaded"
    );
    assert_eq!(
        engine.indexes.integrity_state(a.key()),
        IntegrityState::Critical
    );
    drop(held);
    // Once let go and idle for a whole pass, c goes too; a stays while it is critical.
    assert_eq!(engine.retire_idle_tenants(), 1);
    assert!(engine.indexes.get(c.key()).is_none());
    assert!(engine.indexes.get(a.key()).is_some());
}
