//! A write's commit-to-apply window (`IndexRegistry::write`, `TenantIndex::write_pending`):
//! a search that holds the index while a write has committed but not applied its changes must
//! answer as storage does, and a write that fails or panics there leaves no stale index.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strata_auth::{OperatorScope, TenantScope};
use strata_types::{
    CollectionName, Include, Metric, NewRecord, RecordId, RequestScope, SearchRequest,
    SearchResponse, TenantId,
};

use crate::test_support::admin_scope;
use crate::{Engine, EngineConfig, EngineError};

fn name() -> CollectionName {
    CollectionName::parse("vec").unwrap()
}

fn id(i: usize) -> RecordId {
    RecordId::parse(format!("r{i}")).unwrap()
}

/// A tenant with 20 records, `r0` nearest the query, and its index loaded.
fn loaded(dir: &std::path::Path) -> (Engine, TenantScope) {
    let engine = Engine::open(dir, EngineConfig::default()).unwrap();
    let tenant = TenantId::parse("acme").unwrap();
    engine
        .create_tenant(&OperatorScope::for_tests(), &tenant, None)
        .unwrap();
    let scope = admin_scope(&engine, "acme");
    engine
        .create_collection(&scope, &name(), 4, Metric::L2)
        .unwrap();
    let records = (0..20)
        .map(|i| NewRecord {
            id: Some(id(i)),
            modality: Some(name()),
            vector: Some(vec![1.0, i as f32 * 0.1, 0.0, 0.0]),
            ..Default::default()
        })
        .collect();
    engine
        .put(&scope, &RequestScope::default(), records)
        .unwrap();
    search_ids(&engine, &scope, Some(vec![]));
    (engine, scope)
}

/// The ids of the 5 nearest records, searched with `include`.
fn search_ids(engine: &Engine, scope: &TenantScope, include: Option<Vec<Include>>) -> Vec<String> {
    let s = SearchRequest {
        vector: Some(vec![1.0, 0.0, 0.0, 0.0]),
        k: 5,
        modality: Some(name()),
        include,
        ..Default::default()
    };
    let found = engine.search(scope, &RequestScope::default(), &s).unwrap();
    found.hits.iter().map(|h| h.id.to_string()).collect()
}

fn loaded_now(engine: &Engine, scope: &TenantScope) -> bool {
    let slot = engine.indexes.get(scope.key()).unwrap();
    engine.indexes.read_index(&slot).is_some()
}

#[test]
fn a_search_between_a_deletes_commit_and_its_apply_answers_as_storage() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = loaded(dir.path());
    let (reached_tx, reached) = mpsc::channel::<()>();
    let (release, release_rx) = mpsc::channel::<()>();
    let reached_tx = Mutex::new(reached_tx);
    let release_rx = Mutex::new(release_rx);
    let once = AtomicBool::new(false);
    *crate::registry::lock(&engine.indexes.after_commit) = Some(Arc::new(move |_| {
        if !once.swap(true, Ordering::SeqCst) {
            crate::registry::lock(&reached_tx).send(()).unwrap();
            crate::registry::lock(&release_rx).recv().unwrap();
        }
    }));
    /// Lets the writer go on however this test ends, so a failed check fails rather than hangs.
    struct Release(mpsc::Sender<()>);
    impl Drop for Release {
        fn drop(&mut self) {
            let _ = self.0.send(());
        }
    }
    std::thread::scope(|s| {
        let writer = s.spawn(|| engine.delete(&scope, &RequestScope::default(), &id(0)));
        let release = Release(release);
        reached.recv().unwrap();
        // Committed, not applied: storage already says the record is gone...
        let got = engine.get(&scope, &RequestScope::default(), &id(0));
        assert!(matches!(got, Err(EngineError::NotFound)), "{got:?}");
        // ...so no later search may return it, ids-only or with records.
        for include in [Some(vec![]), None] {
            let ids = search_ids(&engine, &scope, include.clone());
            assert!(!ids.contains(&"r0".to_string()), "{include:?}: {ids:?}");
            assert_eq!(ids.len(), 5, "{include:?}");
        }
        drop(release);
        writer.join().unwrap().unwrap();
    });
    // Applied: the mark is cleared and the index answers alone again.
    let slot = engine.indexes.get(scope.key()).unwrap();
    let guard = engine.indexes.read_index(&slot);
    assert!(!guard.as_ref().unwrap().write_pending());
    drop(guard);
    let ids = search_ids(&engine, &scope, Some(vec![]));
    assert_eq!(ids, ["r1", "r2", "r3", "r4", "r5"]);
}

#[test]
fn a_write_that_panics_after_its_commit_drops_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = loaded(dir.path());
    *crate::registry::lock(&engine.indexes.after_commit) = Some(Arc::new(|_| {
        panic!("a test panic between commit and apply")
    }));
    let deleted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        engine.delete(&scope, &RequestScope::default(), &id(0))
    }));
    assert!(deleted.is_err());
    *crate::registry::lock(&engine.indexes.after_commit) = None;
    // The commit stands; the index that missed it is gone and reloads from storage.
    assert!(!loaded_now(&engine, &scope));
    let ids = search_ids(&engine, &scope, Some(vec![]));
    assert_eq!(ids, ["r1", "r2", "r3", "r4", "r5"]);
    assert!(loaded_now(&engine, &scope));
}

#[test]
fn a_poisoned_index_lock_counts_as_not_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = loaded(dir.path());
    let slot = engine.indexes.get(scope.key()).unwrap();
    // A panic while the index is written (a half-made change) poisons its lock.
    let poisoned = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _guard = slot.index.write().unwrap();
        panic!("a test panic while the index is written");
    }));
    assert!(poisoned.is_err() && slot.index.is_poisoned());
    assert!(!loaded_now(&engine, &scope));
    assert!(!slot.index.is_poisoned());
    let ids = search_ids(&engine, &scope, Some(vec![]));
    assert_eq!(ids, ["r0", "r1", "r2", "r3", "r4"]);
    assert!(loaded_now(&engine, &scope));
}

#[test]
fn a_collection_created_after_the_load_is_searchable_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = loaded(dir.path());
    let late = CollectionName::parse("late").unwrap();
    engine
        .create_collection(&scope, &late, 4, Metric::L2)
        .unwrap();
    for include in [Some(vec![]), None] {
        let s = SearchRequest {
            vector: Some(vec![1.0, 0.0, 0.0, 0.0]),
            k: 5,
            modality: Some(late.clone()),
            include: include.clone(),
            ..Default::default()
        };
        let found = engine.search(&scope, &RequestScope::default(), &s).unwrap();
        assert!(found.hits.is_empty() && found.exact, "{include:?}");
        // A query of the wrong dimension is refused as it would be with records.
        let wrong = SearchRequest {
            vector: Some(vec![1.0, 0.0]),
            ..s
        };
        let refused = engine.search(&scope, &RequestScope::default(), &wrong);
        assert!(refused.is_err(), "{include:?}");
    }
    // An unknown collection is still not found.
    let s = SearchRequest {
        vector: Some(vec![1.0, 0.0, 0.0, 0.0]),
        k: 5,
        modality: Some(CollectionName::parse("never").unwrap()),
        include: Some(vec![]),
        ..Default::default()
    };
    let missing = engine.search(&scope, &RequestScope::default(), &s);
    assert!(
        matches!(missing, Err(EngineError::CollectionNotFound(_))),
        "{missing:?}"
    );
}

/// The beam policy (`crate::hits`): a first try ranks exactly k from the graph, with no spare
/// candidates. A hit whose record a write took out of sight between the graph walk and the
/// re-check on storage leaves that try short, and the search runs again with spares: both
/// include modes still answer k, the same k, without the deleted record.
#[test]
fn a_graph_search_that_loses_a_hit_after_the_walk_still_answers_k() {
    use crate::test_support::{DIM, clustered_tenant, vec_name};
    const K: usize = 5;
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = clustered_tenant(dir.path(), Metric::L2, 1100);
    let query = strata_index::testdata::queries(1, DIM as usize, 10, 1, 2).remove(0);
    // `ef = k`: the graph's beam is exactly k wide, so a lost hit has no spare behind it.
    let search = |include: Option<Vec<Include>>| {
        let s = SearchRequest {
            vector: Some(query.clone()),
            k: K,
            ef: Some(K),
            modality: Some(vec_name()),
            include,
            ..Default::default()
        };
        engine.search(&scope, &RequestScope::default(), &s).unwrap()
    };
    search(Some(vec![]));
    engine.wait_for_graph_builds();
    // Tries run by this thread's searches (`crate::search_retry`).
    let tries = |f: &dyn Fn() -> SearchResponse| {
        let at = crate::search_retry::ATTEMPTS.with(|n| n.get());
        let found = f();
        (found, crate::search_retry::ATTEMPTS.with(|n| n.get()) - at)
    };
    let (before, tried) = tries(&|| search(Some(vec![])));
    assert_eq!(tried, 1, "nothing races this search: one try");
    let (_, tried) = tries(&|| search(None));
    assert_eq!(tried, 1, "nothing races this search: one try");
    assert!(!before.exact, "the graph answers, not an exact scan");
    assert_eq!(before.hits.len(), K);
    let nearest = before.hits[0].id.clone();

    let (reached_tx, reached) = mpsc::channel::<()>();
    let (release, release_rx) = mpsc::channel::<()>();
    let reached_tx = Mutex::new(reached_tx);
    let release_rx = Mutex::new(release_rx);
    let once = AtomicBool::new(false);
    *crate::registry::lock(&engine.indexes.after_commit) = Some(Arc::new(move |_| {
        if !once.swap(true, Ordering::SeqCst) {
            crate::registry::lock(&reached_tx).send(()).unwrap();
            // Bounded: a search that waits for this write's apply (a last try) fails the
            // test on its count of tries instead of hanging it.
            let _ = crate::registry::lock(&release_rx).recv_timeout(Duration::from_secs(20));
        }
    }));
    struct Release(mpsc::Sender<()>);
    impl Drop for Release {
        fn drop(&mut self) {
            let _ = self.0.send(());
        }
    }
    std::thread::scope(|s| {
        let writer = s.spawn(|| engine.delete(&scope, &RequestScope::default(), &nearest));
        let release = Release(release);
        reached
            .recv_timeout(Duration::from_secs(60))
            .expect("the delete reached its commit");
        // Committed, not applied: the graph still ranks the deleted record first, and its
        // stored record is gone when the hits are checked. The first try is short; the
        // second ranks spares for the lost hit and answers k.
        let (lean, tried_lean) = tries(&|| search(Some(vec![])));
        let (full, tried_full) = tries(&|| search(None));
        assert_eq!(
            (tried_lean, tried_full),
            (2, 2),
            "a short first try, then a full one"
        );
        let ids = |r: &SearchResponse| -> Vec<String> {
            r.hits.iter().map(|h| h.id.to_string()).collect()
        };
        assert_eq!(ids(&lean), ids(&full));
        assert_eq!(lean.exact, full.exact);
        assert_eq!(lean.hits.len(), K, "{:?}", ids(&lean));
        assert!(!ids(&lean).contains(&nearest.to_string()));
        drop(release);
        writer.join().unwrap().unwrap();
    });
    *crate::registry::lock(&engine.indexes.after_commit) = None;
}
