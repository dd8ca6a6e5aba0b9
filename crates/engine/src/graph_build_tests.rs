//! A background build catches up with what its tenant wrote meanwhile with no lock held, and
//! replays only a bounded remainder under the tenant's index lock; the installed graph then
//! answers as if it had been built from the final data.

use std::sync::mpsc::channel;
use std::time::Duration;

use strata_auth::OperatorScope;
use strata_types::{
    Metric, NewRecord, RecordId, RecordPatch, RequestScope, SearchRequest, TenantId,
};

use super::REPLAY_UNDER_LOCK;
use crate::registry::lock;
use crate::test_support::{DIM, admin_scope, put_clustered, vec_name};

fn top_hit(engine: &crate::Engine, scope: &strata_auth::TenantScope, v: &[f32]) -> String {
    let s = SearchRequest {
        vector: Some(v.to_vec()),
        k: 1,
        modality: Some(vec_name()),
        ..Default::default()
    };
    let r = engine.search(scope, &RequestScope::default(), &s).unwrap();
    r.hits[0].id.to_string()
}

#[test]
fn writes_during_a_build_are_caught_up_outside_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    // The builder stops after its bulk insert until the writes below are done; the hook is
    // installed before the data crosses the graph threshold.
    let (bulk_done, at_bulk) = channel();
    let (writes_done, wait_writes) = channel::<()>();
    let engine = crate::Engine::open(dir.path(), crate::EngineConfig::default()).unwrap();
    *lock(&engine.indexes.builder.after_bulk) = Some(Box::new(move || {
        let _ = bulk_done.send(());
        let _ = wait_writes.recv();
    }));
    let id = TenantId::parse("acme").unwrap();
    engine
        .create_tenant(&OperatorScope::for_tests(), &id, None)
        .unwrap();
    let scope = admin_scope(&engine, "acme");
    engine
        .create_collection(&scope, &vec_name(), DIM, Metric::Cosine)
        .unwrap();
    // Loaded first, so the writes that cross the threshold queue the build.
    engine.index_stats(&scope).unwrap();
    put_clustered(&engine, &scope, 1_100);
    at_bulk
        .recv_timeout(Duration::from_secs(120))
        .expect("the build reached its catch-up");

    // More than the lock's share: 400 new records, 50 deleted, 50 given new vectors.
    let extra = strata_index::testdata::clustered(450, DIM as usize, 10, 7);
    let (new, moved) = extra.split_at(400);
    let records = new
        .iter()
        .enumerate()
        .map(|(i, v)| NewRecord {
            id: Some(RecordId::parse(format!("n{i}")).unwrap()),
            modality: Some(vec_name()),
            vector: Some(v.clone()),
            ..Default::default()
        })
        .collect();
    let req = RequestScope::default();
    engine.put(&scope, &req, records).unwrap();
    for i in 0..50 {
        let id = RecordId::parse(format!("r{i}")).unwrap();
        engine.delete(&scope, &req, &id).unwrap();
    }
    for (i, v) in moved.iter().enumerate() {
        let id = RecordId::parse(format!("r{}", 100 + i)).unwrap();
        let patch = RecordPatch {
            vector: Some(v.clone()),
            ..Default::default()
        };
        engine.patch(&scope, &req, &id, patch).unwrap();
    }
    writes_done.send(()).unwrap();
    engine.wait_for_graph_builds();

    let (rounds, replayed) = *lock(&engine.indexes.builder.last_install);
    assert!(rounds >= 1, "no catch-up round ran");
    assert!(
        replayed <= REPLAY_UNDER_LOCK,
        "{replayed} slots replayed under the lock"
    );
    let stats = engine.index_stats(&scope).unwrap();
    let vec = stats.iter().find(|s| s.collection == vec_name()).unwrap();
    assert!(vec.graph, "{vec:?}");
    assert_eq!(vec.vectors, 1_100 - 50 + 400, "{vec:?}");
    // The deleted and the moved vectors' old nodes are tombstones, as when replayed at once.
    assert_eq!(vec.graph_deleted, 100, "{vec:?}");

    // The graph answers with the data as it is now.
    for (i, v) in new.iter().enumerate().step_by(20) {
        assert_eq!(top_hit(&engine, &scope, v), format!("n{i}"));
    }
    for (i, v) in moved.iter().enumerate().step_by(5) {
        assert_eq!(top_hit(&engine, &scope, v), format!("r{}", 100 + i));
    }
    let old = strata_index::testdata::clustered(1_100, DIM as usize, 10, 1);
    for (i, v) in old.iter().enumerate().take(50).step_by(5) {
        assert_ne!(
            top_hit(&engine, &scope, v),
            format!("r{i}"),
            "a deleted record"
        );
    }
}

/// The residency figures (metrics, admin stats) are read without the tenant's index lock: a
/// long install or save holding it does not hold a scrape.
#[test]
fn residency_figures_do_not_wait_for_the_index_lock() {
    let dir = tempfile::tempdir().unwrap();
    let engine = crate::Engine::open(dir.path(), crate::EngineConfig::default()).unwrap();
    let id = TenantId::parse("acme").unwrap();
    engine
        .create_tenant(&OperatorScope::for_tests(), &id, None)
        .unwrap();
    let scope = admin_scope(&engine, "acme");
    engine.index_stats(&scope).unwrap();
    let engine = std::sync::Arc::new(engine);
    let slot = engine.indexes.get(scope.key()).expect("loaded");
    let held = slot.index.write().unwrap();
    let (tx, rx) = channel();
    let reader = {
        let engine = engine.clone();
        let key = scope.key();
        std::thread::spawn(move || {
            let residency = engine.indexes.residency(key, &id);
            let vectors = engine.indexes.graph_vectors(key);
            let _ = tx.send((residency.resident, vectors));
        })
    };
    let (resident, vectors) = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the figures waited for the index lock");
    assert!(resident);
    assert_eq!(vectors, Some(0));
    drop(held);
    reader.join().unwrap();
}
