//! A background build catches up with what its tenant wrote meanwhile with no lock held, and
//! replays only a bounded remainder under the tenant's index lock; the installed graph then
//! answers as if it had been built from the final data.

use std::sync::mpsc::channel;
use std::time::Duration;

use strata_auth::OperatorScope;
use strata_types::{
    Metric, NewRecord, RecordId, RecordPatch, RequestScope, SearchRequest, TenantId,
};

use strata_sched::BackgroundPriority;

use super::{REPLAY_UNDER_LOCK, REPLAY_UNDER_LOCK_MIN, per_slot, replay_under_lock};
use crate::registry::lock;
use crate::test_support::{DIM, admin_scope, put_clustered, vec_name};
use strata_store::TenantKey;

/// An engine on `dir` with tenant `acme` and its `vec` collection filled past the graph
/// threshold, the builder's hooks set before the first build begins.
fn tenant_with_hooks(
    dir: &std::path::Path,
    after_bulk: Box<dyn FnMut() + Send>,
    after_round: Option<Box<dyn FnMut() + Send>>,
) -> (crate::Engine, strata_auth::TenantScope) {
    tenant_with_hooks_in(dir, crate::EngineConfig::default(), after_bulk, after_round)
}

/// [`tenant_with_hooks`] on an engine opened with `config`.
fn tenant_with_hooks_in(
    dir: &std::path::Path,
    config: crate::EngineConfig,
    after_bulk: Box<dyn FnMut() + Send>,
    after_round: Option<Box<dyn FnMut() + Send>>,
) -> (crate::Engine, strata_auth::TenantScope) {
    let engine = crate::Engine::open(dir, config).unwrap();
    *lock(&engine.indexes.builder.after_bulk) = Some(after_bulk);
    *lock(&engine.indexes.builder.after_round) = after_round;
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
    (engine, scope)
}

/// `n` new records `{prefix}0`, `{prefix}1`, … of seeded vectors, in one batch; their vectors.
fn put_new(
    engine: &crate::Engine,
    scope: &strata_auth::TenantScope,
    prefix: &str,
    n: usize,
    seed: u64,
) -> Vec<Vec<f32>> {
    let vectors = strata_index::testdata::clustered(n, DIM as usize, 10, seed);
    let records = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| NewRecord {
            id: Some(RecordId::parse(format!("{prefix}{i}")).unwrap()),
            modality: Some(vec_name()),
            vector: Some(v.clone()),
            ..Default::default()
        })
        .collect();
    engine
        .put(scope, &RequestScope::default(), records)
        .unwrap();
    vectors
}

/// [`tenant_with_hooks_in`] with the builder held after its bulk insert, before its catch-up
/// (the hook is installed before the data crosses the graph threshold), until the returned
/// sender sends.
fn held_after_bulk(
    dir: &std::path::Path,
    config: crate::EngineConfig,
) -> (
    crate::Engine,
    strata_auth::TenantScope,
    std::sync::mpsc::Sender<()>,
) {
    let (bulk_done, at_bulk) = channel();
    let (writes_done, wait_writes) = channel::<()>();
    let (engine, scope) = tenant_with_hooks_in(
        dir,
        config,
        Box::new(move || {
            let _ = bulk_done.send(());
            let _ = wait_writes.recv();
        }),
        None,
    );
    at_bulk
        .recv_timeout(Duration::from_secs(120))
        .expect("the build reached its catch-up");
    (engine, scope, writes_done)
}

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
    let (engine, scope, writes_done) = held_after_bulk(dir.path(), crate::EngineConfig::default());

    // More than the lock's share: 400 new records, 50 deleted, 50 given new vectors.
    let new = put_new(&engine, &scope, "n", 400, 7);
    let moved = strata_index::testdata::clustered(50, DIM as usize, 10, 8);
    let req = RequestScope::default();
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
    // Text only: their nodes stay (no tombstone).
    for i in 200..250 {
        let id = RecordId::parse(format!("r{i}")).unwrap();
        let patch = RecordPatch {
            content: Some(format!("note {i}")),
            ..Default::default()
        };
        engine.patch(&scope, &req, &id, patch).unwrap();
    }
    writes_done.send(()).unwrap();
    engine.wait_for_graph_builds();

    let (rounds, replayed, bound) = *lock(&engine.indexes.builder.last_install);
    assert!(rounds >= 1, "no catch-up round ran");
    assert!(
        replayed <= bound && bound <= REPLAY_UNDER_LOCK,
        "{replayed} slots replayed under the lock, {bound} allowed"
    );
    let stats = engine.index_stats(&scope).unwrap();
    let vec = stats.iter().find(|s| s.collection == vec_name()).unwrap();
    assert!(vec.graph, "{vec:?}");
    assert_eq!(vec.vectors, 1_100 - 50 + 400, "{vec:?}");
    // The deleted and the moved vectors' old nodes are tombstones, as when replayed at once;
    // the records whose text alone changed kept theirs.
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

/// A build's computing (its bulk insert, its catch-up's inserts) runs on threads at the
/// background priority, which take no lock a request takes; on an engine left at the process's
/// priority (a library user's default), on the builder's own thread.
#[test]
fn a_builds_computing_runs_on_threads_at_the_background_priority() {
    for (priority, thread) in [
        (BackgroundPriority::Nice19, "strata-graph-insert"),
        (BackgroundPriority::Unchanged, "strata-graph-build"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::EngineConfig {
            background_priority: priority,
            ..crate::EngineConfig::default()
        };
        let (engine, scope, writes_done) = held_after_bulk(dir.path(), config);
        let bulk = lock(&engine.indexes.builder.computed_on).len();
        // More than the lock's share, so a catch-up round replays them.
        let new = put_new(&engine, &scope, "n", REPLAY_UNDER_LOCK + 100, 7);
        writes_done.send(()).unwrap();
        engine.wait_for_graph_builds();

        let (rounds, ..) = *lock(&engine.indexes.builder.last_install);
        assert!(rounds >= 1, "no catch-up round ran");
        let on = lock(&engine.indexes.builder.computed_on).clone();
        assert!(bulk >= 1 && on.len() > bulk, "bulk {bulk}, all {on:?}");
        assert!(
            on.iter().all(|name| name.as_deref() == Some(thread)),
            "{priority:?}: {on:?}"
        );
        for (i, v) in new.iter().enumerate().step_by(40) {
            assert_eq!(top_hit(&engine, &scope, v), format!("n{i}"));
        }
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

/// What a build replays under the tenant's index lock is bounded by time, from its last
/// catch-up round's time per slot: a few dear inserts, many cheap ones, never past the cap, and
/// a few before any round was timed.
#[test]
fn the_replay_under_the_lock_is_as_long_as_its_inserts_fit_in_two_milliseconds() {
    let us = Duration::from_micros;
    assert_eq!(replay_under_lock(None), REPLAY_UNDER_LOCK_MIN);
    assert_eq!(replay_under_lock(Some(us(20))), 100);
    assert_eq!(replay_under_lock(Some(us(250))), REPLAY_UNDER_LOCK_MIN);
    assert_eq!(replay_under_lock(Some(us(100_000))), REPLAY_UNDER_LOCK_MIN);
    assert_eq!(replay_under_lock(Some(Duration::ZERO)), REPLAY_UNDER_LOCK);
    assert_eq!(
        replay_under_lock(Some(Duration::from_nanos(10))),
        REPLAY_UNDER_LOCK
    );

    assert_eq!(per_slot(Duration::from_millis(30), 1_000), Some(us(30)));
    assert_eq!(per_slot(Duration::from_millis(30), 0), None);
}

enum Hook {
    Bulk,
    Round,
}

/// A tenant that writes more in each round than the round replayed: after three rounds whose
/// log did not shrink the build gives way and is queued again; the next build, with the writes
/// over, installs a graph holding everything.
#[test]
fn a_build_outrun_by_its_tenant_gives_way_and_finishes_later() {
    let dir = tempfile::tempdir().unwrap();
    let (event, events) = channel();
    let (go, wait_go) = channel::<()>();
    let wait_go = std::sync::Arc::new(std::sync::Mutex::new(wait_go));
    let hook = |kind: fn() -> Hook| -> Box<dyn FnMut() + Send> {
        let (event, wait_go) = (event.clone(), wait_go.clone());
        Box::new(move || {
            let _ = event.send(kind());
            let _ = lock(&wait_go).recv();
        })
    };
    let (engine, scope) =
        tenant_with_hooks(dir.path(), hook(|| Hook::Bulk), Some(hook(|| Hook::Round)));
    let mut written = Vec::new();
    let (mut bulks, mut rounds) = (0, 0);
    while bulks < 2 {
        match events
            .recv_timeout(Duration::from_secs(120))
            .expect("a hook")
        {
            Hook::Bulk => bulks += 1,
            Hook::Round => rounds += 1,
        }
        // Each write logs as many slots as the last round took: the log never shrinks.
        if bulks == 1 {
            let prefix = format!("w{rounds}_");
            let n = REPLAY_UNDER_LOCK + 10;
            let vectors = put_new(&engine, &scope, &prefix, n, 100 + rounds as u64);
            written.extend(
                vectors
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| (format!("{prefix}{i}"), v)),
            );
        }
        go.send(()).unwrap();
    }
    drop(go);
    engine.wait_for_graph_builds();
    assert_eq!(
        engine
            .indexes
            .builder
            .gave_way
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // Three whose log did not shrink; one more when the first log also held the end of
    // the initial fill (the build may begin before its last batch).
    assert!(
        (3..=4).contains(&rounds),
        "{rounds} rounds before giving way"
    );
    let stats = engine.index_stats(&scope).unwrap();
    let vec = stats.iter().find(|s| s.collection == vec_name()).unwrap();
    assert!(vec.graph, "{vec:?}");
    assert_eq!(vec.vectors, 1_100 + written.len() as u64, "{vec:?}");
    for (id, v) in written.iter().step_by(97) {
        assert_eq!(&top_hit(&engine, &scope, v), id);
    }
}

/// The index figures of the `vec` collection.
fn vec_stats(engine: &crate::Engine, scope: &strata_auth::TenantScope) -> crate::IndexStats {
    let stats = engine.index_stats(scope).unwrap();
    stats
        .into_iter()
        .find(|s| s.collection == vec_name())
        .unwrap()
}

/// A saved graph 300 changed records behind: `acme`'s 1,100 records saved with their graph,
/// then 250 new records `n…` (their vectors returned) and 50 deleted (`r0`–`r49`) with the
/// tenant not loaded, and the process gone before the next save.
fn graph_saved_behind(dir: &std::path::Path) -> Vec<Vec<f32>> {
    let (engine, _) = tenant_with_hooks(dir, Box::new(|| {}), None);
    engine.wait_for_graph_builds();
    engine.persist_indexes().unwrap();
    drop(engine);
    let engine = crate::Engine::open(dir, crate::EngineConfig::default()).unwrap();
    let scope = admin_scope(&engine, "acme");
    let new = put_new(&engine, &scope, "n", 250, 7);
    let req = RequestScope::default();
    for i in 0..50 {
        let id = RecordId::parse(format!("r{i}")).unwrap();
        engine.delete(&scope, &req, &id).unwrap();
    }
    new
}

/// An engine on `dir` whose builder stops at the start of each build's catch-up: the first
/// receiver hears it got there, and it goes on when the sender sends (or is dropped).
fn engine_holding_builds(
    dir: &std::path::Path,
) -> (
    crate::Engine,
    std::sync::mpsc::Receiver<()>,
    std::sync::mpsc::Sender<()>,
) {
    let engine = crate::Engine::open(dir, crate::EngineConfig::default()).unwrap();
    let (started, at_start) = channel();
    let (go, wait_go) = channel::<()>();
    *lock(&engine.indexes.builder.after_bulk) = Some(Box::new(move || {
        let _ = started.send(());
        let _ = wait_go.recv();
    }));
    (engine, at_start, go)
}

#[test]
fn a_graph_restored_far_behind_its_records_is_caught_up_by_the_builder_not_the_load() {
    let dir = tempfile::tempdir().unwrap();
    let new = graph_saved_behind(dir.path());

    // The builder is held at the start of its catch-up until the searches below are done.
    let (engine, at_start, go) = engine_holding_builds(dir.path());
    let scope = admin_scope(&engine, "acme");
    let stats = vec_stats(&engine, &scope);
    assert!(stats.loaded_from_image, "{stats:?}");
    assert!(!stats.graph, "the load inserted the changes: {stats:?}");
    assert_eq!(stats.vectors, 1_300);
    at_start
        .recv_timeout(Duration::from_secs(120))
        .expect("the builder took the graph set aside");
    // Answered exactly meanwhile, the changes included.
    for (i, v) in new.iter().enumerate().step_by(25) {
        assert_eq!(top_hit(&engine, &scope, v), format!("n{i}"));
    }
    go.send(()).unwrap();
    engine.wait_for_graph_builds();

    let stats = vec_stats(&engine, &scope);
    assert!(stats.graph && !stats.restored_from_snapshot, "{stats:?}");
    assert_eq!(stats.vectors, 1_300);
    // The deleted vectors are the restored graph's tombstones: it was caught up, not rebuilt
    // (a build would have measured its speed, too).
    assert_eq!(stats.graph_deleted, 50, "{stats:?}");
    assert!(
        engine
            .indexes
            .builder
            .vectors_per_sec(strata_index::HnswParams::default())
            .is_none(),
        "a whole graph was built"
    );
    for (i, v) in new.iter().enumerate().step_by(25) {
        assert_eq!(top_hit(&engine, &scope, v), format!("n{i}"));
    }
    let report = engine
        .verify_tenant(&OperatorScope::for_tests(), scope.tenant())
        .unwrap();
    assert!(report.ok && report.indexes_loaded, "{report:?}");
    let answers = crate::test_support::answers(&engine, &scope);
    drop(engine);

    // Saved once caught up: the next load restores it as it is.
    let engine = crate::Engine::open(dir.path(), crate::EngineConfig::default()).unwrap();
    let scope = admin_scope(&engine, "acme");
    let stats = vec_stats(&engine, &scope);
    assert!(stats.graph && stats.restored_from_snapshot, "{stats:?}");
    assert_eq!(crate::test_support::answers(&engine, &scope), answers);
}

#[test]
fn a_graph_restored_a_few_changes_behind_takes_them_at_the_load() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, _) = tenant_with_hooks(dir.path(), Box::new(|| {}), None);
    engine.wait_for_graph_builds();
    engine.persist_indexes().unwrap();
    drop(engine);
    let engine = crate::Engine::open(dir.path(), crate::EngineConfig::default()).unwrap();
    let scope = admin_scope(&engine, "acme");
    let new = put_new(&engine, &scope, "n", 20, 7);
    drop(engine);

    let engine = crate::Engine::open(dir.path(), crate::EngineConfig::default()).unwrap();
    let scope = admin_scope(&engine, "acme");
    let stats = vec_stats(&engine, &scope);
    assert!(stats.graph && stats.restored_from_snapshot, "{stats:?}");
    assert_eq!(stats.vectors, 1_120);
    for (i, v) in new.iter().enumerate().step_by(5) {
        assert_eq!(top_hit(&engine, &scope, v), format!("n{i}"));
    }
}

/// [`graph_saved_behind`] loaded by an [`engine_holding_builds`]: the load set the graph
/// aside and the builder holds it, stopped before its catch-up.
fn catching_up(
    dir: &std::path::Path,
) -> (
    crate::Engine,
    strata_auth::TenantScope,
    Vec<Vec<f32>>,
    std::sync::mpsc::Receiver<()>,
    std::sync::mpsc::Sender<()>,
) {
    let new = graph_saved_behind(dir);
    let (engine, at_start, go) = engine_holding_builds(dir);
    let scope = admin_scope(&engine, "acme");
    assert!(!vec_stats(&engine, &scope).graph);
    at_start
        .recv_timeout(Duration::from_secs(120))
        .expect("the builder took the graph set aside");
    (engine, scope, new, at_start, go)
}

#[test]
fn a_graph_being_caught_up_is_not_saved_over_and_survives_a_restart_before_its_install() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope, new, _at_start, go) = catching_up(dir.path());
    let files = engine.store.derived_dir(scope.key());
    let graph_files = || {
        std::fs::read_dir(&files)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".hnsw")
            })
            .count()
    };
    assert_eq!(graph_files(), 1);
    // Neither a checkpoint nor a shutdown's save writes over the last save while its graph is
    // caught up: it would name no graph and delete that one's file.
    assert_eq!(engine.checkpoint_indexes(1).unwrap(), 0);
    assert_eq!(engine.persist_indexes().unwrap(), 0);
    assert_eq!(graph_files(), 1);
    // Stopped before the install: the build is abandoned.
    engine
        .indexes
        .builder
        .stop
        .store(true, std::sync::atomic::Ordering::Relaxed);
    drop(go);
    drop(engine);

    // The next load catches the same saved graph up again, from the change log.
    let engine = crate::Engine::open(dir.path(), crate::EngineConfig::default()).unwrap();
    let scope = admin_scope(&engine, "acme");
    let stats = vec_stats(&engine, &scope);
    assert!(stats.loaded_from_image && !stats.graph, "{stats:?}");
    engine.wait_for_graph_builds();
    let stats = vec_stats(&engine, &scope);
    assert!(stats.graph && stats.graph_deleted == 50, "{stats:?}");
    assert!(
        engine
            .indexes
            .builder
            .vectors_per_sec(strata_index::HnswParams::default())
            .is_none(),
        "a whole graph was built"
    );
    for (i, v) in new.iter().enumerate().step_by(25) {
        assert_eq!(top_hit(&engine, &scope, v), format!("n{i}"));
    }
}

/// A graph the load set aside, while the builder catches it up, still counts against the
/// memory budget: out of its tenant's own count (which a write recomputes) and in flight.
#[test]
fn a_graph_being_caught_up_counts_against_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope, _new, _at_start, go) = catching_up(dir.path());
    let op = OperatorScope::for_tests();
    // A write recomputes the tenant's own count, from an index that no longer holds the seed.
    put_new(&engine, &scope, "w", 5, 77);
    let own = engine
        .residency(&op, scope.tenant())
        .unwrap()
        .resident_bytes;
    let total = engine.residency_summary(&op).resident_bytes;
    assert!(
        total > own,
        "the graph in the builder's hands is counted: {total} total, {own} the tenant's own"
    );
    drop(go);
}

#[test]
fn a_catch_up_whose_tenant_was_reloaded_meanwhile_leaves_the_new_index_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope, new, at_start, go) = catching_up(dir.path());
    // Evicted (its save skipped: the graph is being caught up) and loaded again: a second
    // seed and log, of the same collection name, in a new index.
    let slot = engine.indexes.get(scope.key()).unwrap();
    assert!(engine.indexes.try_evict(&engine.store, scope.key(), &slot));
    assert!(!vec_stats(&engine, &scope).graph);
    // The first build goes on, finds its index gone, and stops; the second one installs.
    go.send(()).unwrap();
    at_start
        .recv_timeout(Duration::from_secs(120))
        .expect("the builder took the second load's graph");
    go.send(()).unwrap();
    engine.wait_for_graph_builds();
    let stats = vec_stats(&engine, &scope);
    assert!(stats.graph && stats.vectors == 1_300, "{stats:?}");
    {
        let guard = slot.index.read().unwrap();
        let ci = &guard.as_ref().unwrap().collections[&vec_name()];
        assert!(ci.seed.is_none() && ci.building.is_none() && !ci.catching_up);
    }
    for (i, v) in new.iter().enumerate().step_by(25) {
        assert_eq!(top_hit(&engine, &scope, v), format!("n{i}"));
    }
    let report = engine
        .verify_tenant(&OperatorScope::for_tests(), scope.tenant())
        .unwrap();
    assert!(report.ok && report.indexes_loaded, "{report:?}");
}

/// An engine on `dir` under a residency budget of `budget` bytes (0: none).
fn under_budget(dir: &std::path::Path, budget: u64) -> crate::Engine {
    let config = crate::EngineConfig {
        residency: crate::ResidencyConfig {
            memory_budget_bytes: budget,
            pinned: Vec::new(),
        },
        ..crate::EngineConfig::default()
    };
    crate::Engine::open(dir, config).unwrap()
}

/// Creates tenant `t` with 50 short records of 384 dimensions (no graph wanted).
fn small_tenant(engine: &crate::Engine, t: &str) {
    engine
        .create_tenant(
            &OperatorScope::for_tests(),
            &TenantId::parse(t).unwrap(),
            None,
        )
        .unwrap();
    let records = (0..50)
        .map(|i| NewRecord {
            id: Some(RecordId::parse(format!("r{i}")).unwrap()),
            content: Some(format!("note {i}")),
            vector: Some(vec![i as f32 + 1.0; 384]),
            ..Default::default()
        })
        .collect();
    engine
        .put(&admin_scope(engine, t), &RequestScope::default(), records)
        .unwrap();
}

/// Tenant `t`'s residency figures.
fn residency(engine: &crate::Engine, t: &str) -> crate::TenantResidency {
    engine
        .residency(&OperatorScope::for_tests(), &TenantId::parse(t).unwrap())
        .unwrap()
}

/// The residency budget evicts the tenant whose graph is being built last: an eviction would
/// abandon the build, and under a tight budget such a tenant could be evicted before every
/// one of its builds ended. Here the building tenant is the least recently used of the three
/// loaded, and the budget holds two: the other one goes.
#[test]
fn the_tenant_being_built_is_evicted_last() {
    let tenants = ["t0", "t1", "t2"];
    let load = |engine: &crate::Engine, t: &str| {
        let scope = admin_scope(engine, t);
        engine.index_stats(&scope).unwrap();
    };
    // Three alike tenants, written with no budget; one's accounted bytes once loaded.
    let dir = tempfile::tempdir().unwrap();
    let engine = under_budget(dir.path(), 0);
    for t in tenants {
        small_tenant(&engine, t);
    }
    load(&engine, "t0");
    let one = residency(&engine, "t0").resident_bytes;
    assert!(one > 0);
    drop(engine);

    // Reopened under a budget of two and a half tenants, nothing loaded: t0 is loaded first,
    // so it is the least recently used when t2's load passes the budget.
    let engine = under_budget(dir.path(), one * 5 / 2);
    load(&engine, "t0");
    load(&engine, "t1");
    let t0 = engine
        .tenant_meta(&TenantId::parse("t0").unwrap())
        .unwrap()
        .key;
    *lock(&engine.indexes.builder.building) = Some(t0);
    load(&engine, "t2");
    engine.wait_for_evictions();
    let (r0, r1, r2) = (
        residency(&engine, "t0"),
        residency(&engine, "t1"),
        residency(&engine, "t2"),
    );
    assert!(
        r0.resident && r0.evictions == 0,
        "the tenant being built was evicted: {r0:?}"
    );
    assert!(!r1.resident && r1.evictions == 1, "{r1:?}");
    assert!(r2.resident, "{r2:?}");

    // Once its build is over, it is the least recently used again.
    *lock(&engine.indexes.builder.building) = None;
    load(&engine, "t1");
    engine.wait_for_evictions();
    let r0 = residency(&engine, "t0");
    assert!(!r0.resident && r0.evictions == 1, "{r0:?}");
}

/// The same with a real build: while the builder is between its bulk insert and its catch-up,
/// two small tenants' loads pass a budget that holds the building tenant and one of them. The
/// small one goes, and the build ends with its graph installed in the tenant it began in.
#[test]
fn loads_during_a_real_build_evict_another_tenant_and_the_graph_is_installed() {
    let op = OperatorScope::for_tests();
    // Small tenants s1 and s2, then acme past the graph threshold, loaded; returns once its
    // build is paused after the bulk insert, with the sender that lets it go on.
    let paused_build = |dir: &std::path::Path, budget: u64| {
        let engine = under_budget(dir, budget);
        for t in ["s1", "s2"] {
            small_tenant(&engine, t);
            engine.index_stats(&admin_scope(&engine, t)).unwrap();
        }
        let go_on = pause_a_build(&engine);
        (engine, go_on)
    };
    // The sizes at that point, with no budget: acme's with the graph it is building, which
    // the total counts until it is installed.
    let sizes = tempfile::tempdir().unwrap();
    let (acme, one_small) = {
        let (engine, go_on) = paused_build(sizes.path(), 0);
        let smalls =
            residency(&engine, "s1").resident_bytes + residency(&engine, "s2").resident_bytes;
        let sizes = (
            engine.residency_summary(&op).resident_bytes - smalls,
            residency(&engine, "s1").resident_bytes,
        );
        drop(go_on);
        sizes
    };
    assert!(acme > 0 && one_small > 0);

    // Again under a budget holding acme and one and a half small tenants.
    let dir = tempfile::tempdir().unwrap();
    let (engine, go_on) = paused_build(dir.path(), acme + one_small * 3 / 2);
    // acme, written last, is not the least recently used yet: these loads make it so.
    for t in ["s1", "s2"] {
        engine.index_stats(&admin_scope(&engine, t)).unwrap();
    }
    engine.wait_for_evictions();
    let r = residency(&engine, "acme");
    assert!(
        r.resident && r.evictions == 0,
        "the building tenant was evicted: {r:?}"
    );
    assert!(
        residency(&engine, "s1").evictions + residency(&engine, "s2").evictions >= 1,
        "nothing was evicted: the budget did not bind"
    );
    go_on.send(()).unwrap();
    engine.wait_for_graph_builds();
    let r = residency(&engine, "acme");
    assert!(
        r.resident && r.evictions == 0 && r.graph_ef_search > 0,
        "the graph was not installed: {r:?}"
    );
}

/// A graph the builder installs counts against the budget at once: with only searches of
/// loaded tenants after it (no load or write to enforce the budget), the resident total stays
/// under the budget once the build is over, the least recently used tenant evicted for it.
#[test]
fn an_installed_graph_is_held_to_the_budget() {
    let tenants = ["t0", "t1", "acme"];
    let dir = tempfile::tempdir().unwrap();
    // 700 vectors of 2,048 dimensions each (1.43M floats): just below the graph threshold.
    let fill = |engine: &crate::Engine, t: &str, ids: &str, n: usize, seed: u64| {
        let scope = admin_scope(engine, t);
        let data = strata_index::testdata::clustered(n, DIM as usize, 10, seed);
        let records = data
            .into_iter()
            .enumerate()
            .map(|(i, v)| NewRecord {
                id: Some(RecordId::parse(format!("{ids}{i}")).unwrap()),
                modality: Some(vec_name()),
                vector: Some(v),
                ..Default::default()
            })
            .collect();
        engine
            .put(&scope, &RequestScope::default(), records)
            .unwrap();
    };
    let engine = under_budget(dir.path(), 0);
    for (seed, t) in tenants.into_iter().enumerate() {
        engine
            .create_tenant(
                &OperatorScope::for_tests(),
                &TenantId::parse(t).unwrap(),
                None,
            )
            .unwrap();
        let scope = admin_scope(&engine, t);
        engine
            .create_collection(&scope, &vec_name(), DIM, strata_types::Metric::Cosine)
            .unwrap();
        fill(&engine, t, "r", 700, seed as u64 + 1);
    }
    drop(engine);

    // Reopened under a budget that holds the three as they are, with a little room.
    let engine = under_budget(dir.path(), u64::MAX);
    for t in tenants {
        engine.index_stats(&admin_scope(&engine, t)).unwrap();
    }
    let loaded = engine
        .residency_summary(&OperatorScope::for_tests())
        .resident_bytes;
    drop(engine);
    let budget = loaded + loaded / 20;
    let engine = under_budget(dir.path(), budget);
    for t in tenants {
        engine.index_stats(&admin_scope(&engine, t)).unwrap();
    }
    // 100 more records take acme past the threshold: its graph is built in the background.
    fill(&engine, "acme", "x", 100, 9);
    engine.wait_for_graph_builds();
    assert!(vec_stats(&engine, &admin_scope(&engine, "acme")).graph);
    engine.wait_for_evictions();
    let summary = engine.residency_summary(&OperatorScope::for_tests());
    assert!(
        summary.resident_bytes <= budget,
        "{} resident over a budget of {budget}",
        summary.resident_bytes
    );
    assert!(
        !residency(&engine, "t0").resident,
        "the least recently used stayed"
    );
}

/// A tenant `id` with the `vec` collection, loaded, then filled with `n` clustered vectors
/// (past the graph threshold, which queues its build).
fn tenant_queued_for_a_build(engine: &crate::Engine, id: &str, n: usize) -> TenantKey {
    engine
        .create_tenant(
            &OperatorScope::for_tests(),
            &TenantId::parse(id).unwrap(),
            None,
        )
        .unwrap();
    let scope = admin_scope(engine, id);
    engine
        .create_collection(&scope, &vec_name(), DIM, Metric::Cosine)
        .unwrap();
    engine.index_stats(&scope).unwrap();
    put_clustered(engine, &scope, n);
    scope.key()
}

/// While one build runs, a large tenant queues before a small one: the small one is built
/// first, so a long tail of small tenants does not wait out a large build queued ahead of it.
#[test]
fn the_smallest_waiting_tenant_is_built_first() {
    let dir = tempfile::tempdir().unwrap();
    let (bulk_done, at_bulk) = channel();
    let (release, wait_release) = channel::<()>();
    let (engine, first) = tenant_with_hooks(
        dir.path(),
        Box::new(move || {
            let _ = bulk_done.send(());
            let _ = wait_release.recv();
        }),
        None,
    );
    at_bulk
        .recv_timeout(Duration::from_secs(120))
        .expect("the first build reached its catch-up");
    let large = tenant_queued_for_a_build(&engine, "large", 1_600);
    let small = tenant_queued_for_a_build(&engine, "small", 1_100);
    // Every later build passes the hook at once.
    drop(release);
    engine.wait_for_graph_builds();
    // The first tenant's own writes may queue it again behind its build: only the order of
    // the other two matters.
    let started: Vec<TenantKey> = lock(&engine.indexes.builder.started)
        .iter()
        .copied()
        .filter(|k| *k != first.key())
        .collect();
    assert_eq!(started, vec![small, large]);
}

#[test]
fn the_queue_picks_the_cheapest_then_the_first_queued_among_equals() {
    let now = std::time::Instant::now();
    let key = TenantKey::for_tests;
    let waiting = super::Waiting {
        keys: vec![(key(1), now), (key(2), now), (key(3), now), (key(4), now)],
        closed: false,
    };
    let cost =
        |k: TenantKey| Some([30, 10, 10, 20][(0..4).find(|i| key(i + 1) == k).unwrap() as usize]);
    assert_eq!(waiting.pick(now, cost), Some(key(2)));
    // One queued since the costs were read is not priced: it waits for the next pick.
    let unpriced = |k: TenantKey| (k != key(2) && k != key(3)).then(|| cost(k).unwrap());
    assert_eq!(waiting.pick(now, unpriced), Some(key(4)));
}

/// A tenant that waited past `MAX_WAIT` goes first whatever its cost: a stream of small
/// tenants cannot put a large one off for good.
#[test]
fn a_tenant_waiting_too_long_goes_before_cheaper_ones() {
    let now = std::time::Instant::now();
    let key = TenantKey::for_tests;
    let long_ago = now - super::MAX_WAIT - Duration::from_secs(1);
    let waiting = super::Waiting {
        keys: vec![(key(1), now), (key(2), long_ago), (key(3), long_ago)],
        closed: false,
    };
    // The cheapest is key 3, but key 2 waited longest.
    let cost = |k: TenantKey| Some(if k == key(3) { 1 } else { 50 });
    assert_eq!(waiting.pick(now, cost), Some(key(2)));
    assert_eq!(super::Waiting::default().pick(now, |_| Some(0)), None);
}

/// Tenant `acme`, loaded and written past the graph threshold; returns once its graph's build
/// is paused after the bulk insert, with the sender that lets it go on.
fn pause_a_build(engine: &crate::Engine) -> std::sync::mpsc::Sender<()> {
    let (bulk_done, at_bulk) = channel();
    let (go_on, wait) = channel::<()>();
    *lock(&engine.indexes.builder.after_bulk) = Some(Box::new(move || {
        let _ = bulk_done.send(());
        let _ = wait.recv();
    }));
    let scope = crate::test_support::tenant_with_collection(engine, "acme", Metric::Cosine);
    engine.index_stats(&scope).unwrap();
    put_clustered(engine, &scope, 1_100);
    at_bulk
        .recv_timeout(Duration::from_secs(120))
        .expect("the build reached its catch-up");
    go_on
}

/// A graph being built counts in the resident total before it is installed, so that the
/// budget makes room for it; once installed it is counted once, in its tenant's bytes.
#[test]
fn a_graph_being_built_counts_in_the_resident_total() {
    let op = OperatorScope::for_tests();
    let dir = tempfile::tempdir().unwrap();
    let engine = under_budget(dir.path(), 0);
    let go_on = pause_a_build(&engine);
    let loaded = |engine: &crate::Engine| {
        let summary = engine.residency_summary(&op);
        let tenants: u64 = summary
            .tenants
            .iter()
            .map(|t| t.residency.resident_bytes)
            .sum();
        (summary.resident_bytes, tenants)
    };
    let (total, tenants) = loaded(&engine);
    assert!(
        total > tenants,
        "the graph being built is not counted: {total} bytes in all, {tenants} in tenants"
    );
    go_on.send(()).unwrap();
    engine.wait_for_graph_builds();
    let (total, tenants) = loaded(&engine);
    assert_eq!(total, tenants, "counted twice, or not given back");
    assert!(residency(&engine, "acme").graph_ef_search > 0);
}
