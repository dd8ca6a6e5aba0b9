//! Concurrent small writes of one tenant (`IndexRegistry::write_shared`, `crate::write_order`):
//! they share storage transactions, and reach the loaded index in commit order, so the index
//! always ends as storage is.

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use strata_auth::{OperatorScope, TenantScope};
use strata_types::{
    CollectionName, Metric, NewRecord, RecordId, RequestScope, SearchRequest, TenantId,
};

use crate::test_support::pause_next_write;
use crate::{Engine, EngineConfig};

fn name() -> CollectionName {
    CollectionName::parse("vec").unwrap()
}

fn id(i: usize) -> RecordId {
    RecordId::parse(format!("r{i}")).unwrap()
}

fn record(i: usize, vector: Vec<f32>) -> NewRecord {
    NewRecord {
        id: Some(id(i)),
        modality: Some(name()),
        vector: Some(vector),
        ..Default::default()
    }
}

/// A tenant with `n` records and its index loaded.
fn loaded(dir: &std::path::Path, n: usize) -> (Engine, TenantScope) {
    loaded_with(dir, n, EngineConfig::default())
}

fn loaded_with(dir: &std::path::Path, n: usize, config: EngineConfig) -> (Engine, TenantScope) {
    let engine = Engine::open(dir, config).unwrap();
    let scope = crate::test_support::created_tenant(&engine, "acme");
    engine
        .create_collection(&scope, &name(), 4, Metric::L2)
        .unwrap();
    let records = (0..n)
        .map(|i| record(i, vec![1.0, i as f32 * 0.1, 0.0, 0.0]))
        .collect();
    engine
        .put(&scope, &RequestScope::default(), records)
        .unwrap();
    search(&engine, &scope, &[1.0, 0.0, 0.0, 0.0], 1);
    (engine, scope)
}

fn search(engine: &Engine, scope: &TenantScope, vector: &[f32], k: usize) -> Vec<String> {
    let s = SearchRequest {
        vector: Some(vector.to_vec()),
        k,
        modality: Some(name()),
        include: Some(vec![]),
        ..Default::default()
    };
    let found = engine.search(scope, &RequestScope::default(), &s).unwrap();
    found.hits.iter().map(|h| h.id.to_string()).collect()
}

/// The tenant's loaded index agrees with storage (ids, fields and vectors) and its usage
/// with a recount; the records stored.
fn assert_index_is_storage(engine: &Engine) -> u64 {
    let report = engine
        .verify_tenant(
            &OperatorScope::for_tests(),
            &TenantId::parse("acme").unwrap(),
        )
        .unwrap();
    assert!(report.indexes_loaded);
    assert!(report.ok, "{:?}", report.problems);
    report.records
}

#[test]
fn concurrent_writes_of_one_tenant_share_storage_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = loaded(dir.path(), 10);
    let (batches, writes) = engine.store.write_batches();
    std::thread::scope(|s| {
        for t in 0..8 {
            let (engine, scope) = (&engine, &scope);
            s.spawn(move || {
                for i in 0..100 {
                    let n = 1000 + t * 100 + i;
                    let one = vec![record(n, vec![0.0, 1.0, n as f32, 0.0])];
                    engine.put(scope, &RequestScope::default(), one).unwrap();
                }
            });
        }
    });
    let (batches, writes) = (
        engine.store.write_batches().0 - batches,
        engine.store.write_batches().1 - writes,
    );
    assert_eq!(writes, 800);
    // With the tenant's writes ordered one at a time around their commits, each batch held
    // one of them: 800 batches.
    assert!(
        batches < writes,
        "{batches} transactions for {writes} writes of one tenant"
    );
    assert_eq!(assert_index_is_storage(&engine), 810);
}

/// The first of two writes of one record is held between its commit and its apply; the
/// second commits meanwhile (nothing of the first holds it back) but is applied only after
/// the first: the index ends with the second's vector, as storage does.
#[test]
fn a_later_commit_waits_for_an_earlier_ones_apply() {
    later_commit_waits_for_earlier_apply(EngineConfig::default());
}

/// The same without batching: each write its own transaction, its place drawn inside it.
#[test]
fn a_later_commit_waits_for_an_earlier_ones_apply_unbatched() {
    later_commit_waits_for_earlier_apply(EngineConfig {
        batch_writes: false,
        ..EngineConfig::default()
    });
}

fn later_commit_waits_for_earlier_apply(config: EngineConfig) {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = loaded_with(dir.path(), 10, config);
    let (first, second) = (vec![0.0, 0.0, 5.0, 0.0], vec![0.0, 0.0, 0.0, 5.0]);
    let (reached, release) = pause_next_write(&engine);
    let put = |v: &Vec<f32>| {
        let one = vec![record(0, v.clone())];
        engine.put(&scope, &RequestScope::default(), one)
    };
    let stored = || {
        engine
            .get(&scope, &RequestScope::default(), &id(0))
            .unwrap()
            .vector
    };
    std::thread::scope(|s| {
        let w1 = s.spawn(|| put(&first));
        reached.recv_timeout(Duration::from_secs(60)).unwrap();
        assert_eq!(stored().as_ref(), Some(&first));
        let w2 = s.spawn(|| put(&second));
        let since = Instant::now();
        while stored().as_ref() != Some(&second) && since.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(
            stored().as_ref(),
            Some(&second),
            "the second write committed"
        );
        std::thread::sleep(Duration::from_millis(30));
        assert!(!w2.is_finished(), "applied before the first write's apply");
        let slot = engine.indexes.get(scope.key()).unwrap();
        let (drawn, done) = slot.order.tickets();
        assert_eq!(drawn - done, 2, "both drew their places, neither is done");
        release.send(()).unwrap();
        w1.join().unwrap().unwrap();
        w2.join().unwrap().unwrap();
    });
    *crate::registry::lock(&engine.indexes.after_commit) = None;
    assert_index_is_storage(&engine);
    assert_eq!(search(&engine, &scope, &second, 1), ["r0"]);
}

/// Puts (shared), deletes (holding the order), unloads (holding it to drop the index) and
/// searches of one tenant's overlapping records, from several threads: the index ends as
/// storage is, and every search answers.
#[test]
fn shared_and_ordered_writes_of_one_tenant_leave_the_index_as_storage() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = loaded(dir.path(), 40);
    std::thread::scope(|s| {
        for t in 0..6u64 {
            let (engine, scope) = (&engine, &scope);
            s.spawn(move || {
                let mut rng = rand::rngs::StdRng::seed_from_u64(t);
                for _ in 0..150 {
                    let i = rng.random_range(0..40);
                    match rng.random_range(0..10) {
                        0 => match engine.delete(scope, &RequestScope::default(), &id(i)) {
                            Ok(()) | Err(crate::EngineError::NotFound) => {}
                            Err(e) => panic!("{e}"),
                        },
                        1 if t == 0 => engine.indexes.unload(scope.key()),
                        2 | 3 => {
                            let v = [rng.random(), rng.random(), rng.random(), rng.random()];
                            search(engine, scope, &v, 5);
                        }
                        _ => {
                            let v = vec![rng.random(), rng.random(), rng.random(), t as f32];
                            let one = vec![record(i, v)];
                            engine.put(scope, &RequestScope::default(), one).unwrap();
                        }
                    }
                }
            });
        }
    });
    // Loaded again if the last unload left it out.
    search(&engine, &scope, &[1.0, 0.0, 0.0, 0.0], 1);
    assert_index_is_storage(&engine);
    let slot = engine.indexes.get(scope.key()).unwrap();
    let (drawn, done) = slot.order.tickets();
    assert_eq!(drawn, done);
}
