//! A save holds the tenant's locks only for its capture: the tenant writes while the files
//! are synced and the rows committed, those writes are found after a reload from the snapshot
//! and the change log, and a save cut short between its files and its rows leaves a tenant
//! that loads.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Duration;

use strata_auth::{OperatorScope, TenantScope};
use strata_types::{Metric, NewRecord, RecordId, RequestScope, SearchRequest, TenantId};

use super::SaveStage;
use crate::registry::lock;
use crate::test_support::{DIM, answers, clustered_tenant, vec_name};
use crate::{Engine, EngineConfig, EngineError};

/// Tenant `acme` with a graph past the threshold, built and saved by the builder.
fn tenant_with_graph(dir: &std::path::Path) -> (Engine, TenantScope) {
    let (engine, scope) = clustered_tenant(dir, Metric::Cosine, 1_100);
    engine.index_stats(&scope).unwrap();
    engine.wait_for_graph_builds();
    assert!(has_graph(&engine, &scope));
    (engine, scope)
}

fn has_graph(engine: &Engine, scope: &TenantScope) -> bool {
    let stats = engine.index_stats(scope).unwrap();
    stats.iter().any(|s| s.collection == vec_name() && s.graph)
}

fn put_one(engine: &Engine, scope: &TenantScope, id: &str, v: &[f32]) {
    let record = NewRecord {
        id: Some(RecordId::parse(id).unwrap()),
        modality: Some(vec_name()),
        vector: Some(v.to_vec()),
        ..Default::default()
    };
    engine
        .put(scope, &RequestScope::default(), vec![record])
        .unwrap();
}

fn top_hit(engine: &Engine, scope: &TenantScope, v: &[f32]) -> String {
    let s = SearchRequest {
        vector: Some(v.to_vec()),
        k: 1,
        modality: Some(vec_name()),
        ..Default::default()
    };
    let r = engine.search(scope, &RequestScope::default(), &s).unwrap();
    r.hits[0].id.to_string()
}

fn is_dirty(engine: &Engine, scope: &TenantScope) -> bool {
    let slot = engine.indexes.get(scope.key()).unwrap();
    let guard = slot.index.read().unwrap();
    guard.as_ref().unwrap().is_dirty()
}

fn verify_clean(engine: &Engine) {
    let report = engine
        .verify_tenant(
            &OperatorScope::for_tests(),
            &TenantId::parse("acme").unwrap(),
        )
        .unwrap();
    assert!(report.ok && report.indexes_loaded, "{report:?}");
}

fn derived_files(engine: &Engine, scope: &TenantScope) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(engine.store.derived_dir(scope.key()))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn load_from_image(engine: &Engine, scope: &TenantScope) -> bool {
    let stats = engine.index_stats(scope).unwrap();
    stats.iter().all(|s| s.loaded_from_image)
}

/// Makes the slot's next save stop once it has captured: the first receiver hears that it
/// did, and it goes on when the returned sender sends (or is dropped), or after `at_most`.
fn pause_at_capture(
    slot: &crate::registry::TenantSlot,
    at_most: Duration,
) -> (Receiver<()>, Sender<()>) {
    let (captured_tx, captured) = channel();
    let (go, go_rx) = channel::<()>();
    let go_rx = std::sync::Mutex::new(go_rx);
    *lock(&slot.save_hook) = Some(Box::new(move |stage| {
        if stage == SaveStage::Captured {
            captured_tx.send(()).unwrap();
            let _ = lock(&go_rx).recv_timeout(at_most);
        }
        Ok(())
    }));
    (captured, go)
}

/// Runs `save` (a save or an eviction of the tenant) on its own thread, pauses it once it has
/// captured, writes record `during` meanwhile, and lets it go on: panics if the write waited
/// for the save. Returns what `save` returned.
fn write_during_a_paused_save<T: Send>(
    engine: &Engine,
    scope: &TenantScope,
    during: &[f32],
    save: impl FnOnce() -> T + Send,
) -> T {
    let slot = engine.indexes.get(scope.key()).unwrap();
    let (captured, go) = pause_at_capture(&slot, Duration::from_secs(60));
    let saved = std::thread::scope(|s| {
        let saver = s.spawn(save);
        captured.recv_timeout(Duration::from_secs(60)).unwrap();
        let (done_tx, done) = channel();
        s.spawn(move || {
            put_one(engine, scope, "during", during);
            done_tx.send(()).unwrap();
        });
        // Before the fix a save held the tenant's write order through its files and
        // transaction: this write waited for it, and here for ever.
        let written = done.recv_timeout(Duration::from_secs(30));
        go.send(()).unwrap();
        assert!(written.is_ok(), "the write waited for the save");
        saver.join().unwrap()
    });
    *lock(&slot.save_hook) = None;
    saved
}

#[test]
fn the_tenant_writes_while_its_save_syncs_and_the_writes_survive_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = tenant_with_graph(dir.path());
    let q = strata_index::testdata::queries(2, DIM as usize, 10, 1, 2);
    put_one(&engine, &scope, "before", &q[0]);
    let saved = write_during_a_paused_save(&engine, &scope, &q[1], || engine.persist_indexes());
    assert_eq!(saved.unwrap(), 1);
    let slot = engine.indexes.get(scope.key()).unwrap();
    // Written after the capture: not in the snapshot, so the index is still worth saving.
    assert!(is_dirty(&engine, &scope));
    let expected = answers(&engine, &scope);
    drop(slot);
    drop(engine);

    // No save after the write: the load replays it from the change log over the snapshot.
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    let scope = crate::test_support::admin_scope(&engine, "acme");
    assert!(load_from_image(&engine, &scope));
    assert!(has_graph(&engine, &scope));
    assert_eq!(top_hit(&engine, &scope, &q[0]), "before");
    assert_eq!(top_hit(&engine, &scope, &q[1]), "during");
    assert_eq!(answers(&engine, &scope), expected);
    verify_clean(&engine);
}

#[test]
fn a_save_cut_short_between_its_files_and_its_rows_leaves_a_tenant_that_loads() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = tenant_with_graph(dir.path());
    cut_short_then_load(dir.path(), engine, scope, 1);
}

/// The same with an image large enough to be a file of its own (`search_image`): the save cut
/// short leaves its new graph and image files named by no row and the old ones named, the load
/// takes the old image from its file, and the next save deletes every file no row names.
#[test]
fn a_save_cut_short_keeps_the_named_image_file() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = clustered_tenant(dir.path(), Metric::Cosine, 0);
    crate::test_support::put_clustered_with(&engine, &scope, 1_100, |i| {
        Some(
            (0..40)
                .map(|j| format!("w{i}x{j}"))
                .collect::<Vec<_>>()
                .join(" "),
        )
    });
    engine.index_stats(&scope).unwrap();
    engine.wait_for_graph_builds();
    engine.persist_indexes().unwrap();
    assert!(
        derived_files(&engine, &scope)
            .iter()
            .any(|n| n.ends_with(".image"))
    );
    cut_short_then_load(dir.path(), engine, scope, 2);
}

/// A write, then a save of the tenant cut short between its files and its rows; then, in a
/// new engine, the load and the next save. `per_save`: files a save writes (a graph, and an
/// image when it is a file).
fn cut_short_then_load(dir: &std::path::Path, engine: Engine, scope: TenantScope, per_save: usize) {
    let named = derived_files(&engine, &scope);
    assert_eq!(named.len(), per_save, "{named:?}");
    let q = strata_index::testdata::queries(1, DIM as usize, 10, 1, 2);
    put_one(&engine, &scope, "later", &q[0]);
    let slot = engine.indexes.get(scope.key()).unwrap();
    *lock(&slot.save_hook) = Some(Box::new(|stage| match stage {
        SaveStage::FilesDurable => Err(EngineError::Index("cut short".into())),
        SaveStage::Captured => Ok(()),
    }));
    assert!(engine.persist_indexes().is_err());
    *lock(&slot.save_hook) = None;
    // The new files are on disk, named by no row; the old ones are still named.
    let files = derived_files(&engine, &scope);
    assert_eq!(files.len(), 2 * per_save, "{files:?}");
    assert!(named.iter().all(|n| files.contains(n)), "{files:?}");
    // Nothing captured was saved: still worth a save.
    assert!(is_dirty(&engine, &scope));
    let expected = answers(&engine, &scope);
    drop(slot);
    drop(engine);

    let engine = Engine::open(dir, EngineConfig::default()).unwrap();
    let scope = crate::test_support::admin_scope(&engine, "acme");
    // The old snapshot and image, and the log after them.
    assert!(load_from_image(&engine, &scope));
    assert_eq!(top_hit(&engine, &scope, &q[0]), "later");
    assert_eq!(answers(&engine, &scope), expected);
    verify_clean(&engine);
    // The next save deletes the files no row names.
    engine.wait_for_graph_builds();
    assert_eq!(engine.persist_indexes().unwrap(), 1);
    let files = derived_files(&engine, &scope);
    assert_eq!(files.len(), per_save, "{files:?}");
    assert!(named.iter().all(|n| !files.contains(n)), "{files:?}");
    verify_clean(&engine);
}

/// A purge that overtakes a save between its capture and its commit waits for it, so no graph
/// file of the erased tenant is written after its files were deleted: the save fails its
/// commit (the tenant is gone) without error, and the tenant's directory stays gone.
#[test]
fn a_purge_during_a_save_leaves_no_file_of_the_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = tenant_with_graph(dir.path());
    let q = strata_index::testdata::queries(1, DIM as usize, 10, 1, 2);
    put_one(&engine, &scope, "later", &q[0]);
    let derived = engine.store.derived_dir(scope.key());
    assert!(derived.exists());
    let slot = engine.indexes.get(scope.key()).unwrap();
    // The save waits at its capture until the purge has ended, or half a second: a purge
    // that waits for the save (as it must) cannot end first.
    let (captured, purged_tx) = pause_at_capture(&slot, Duration::from_millis(500));
    std::thread::scope(|s| {
        let saver = s.spawn(|| engine.persist_indexes());
        captured.recv_timeout(Duration::from_secs(60)).unwrap();
        let purge = engine.purge_tenant(
            &OperatorScope::for_tests(),
            &TenantId::parse("acme").unwrap(),
        );
        let _ = purged_tx.send(());
        assert!(purge.is_ok(), "{purge:?}");
        // Overtaken by the purge: nothing saved, and no error.
        assert_eq!(saver.join().unwrap().unwrap(), 0);
    });
    assert!(
        !derived.exists(),
        "the erased tenant's graph file was written after its purge: {:?}",
        std::fs::read_dir(&derived).map(|d| d.count())
    );
}

/// An eviction saves as any save does: the tenant's locks only for the capture. Its writes
/// go on while the evicted indexes' files reach the disk, and the index changed again by them
/// is still dropped (the change log holds them): the next load replays them.
#[test]
fn the_tenant_writes_while_its_eviction_saves_and_the_writes_survive_it() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = tenant_with_graph(dir.path());
    let q = strata_index::testdata::queries(2, DIM as usize, 10, 1, 2);
    put_one(&engine, &scope, "before", &q[0]);
    let slot = engine.indexes.get(scope.key()).unwrap();
    let evicted = write_during_a_paused_save(&engine, &scope, &q[1], || {
        engine.indexes.try_evict(&engine.store, scope.key(), &slot)
    });
    assert!(evicted, "the eviction gave up");
    assert!(
        slot.index.read().unwrap().is_none(),
        "the indexes are still loaded"
    );
    assert_eq!(
        slot.counters
            .evictions
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    drop(slot);
    // Loaded again from the saved image, with the write made during the save replayed.
    assert_eq!(top_hit(&engine, &scope, &q[1]), "during");
    assert!(load_from_image(&engine, &scope));
    assert_eq!(top_hit(&engine, &scope, &q[0]), "before");
    // The reloaded indexes agree with storage, record for record.
    verify_clean(&engine);
}

/// An eviction waits for no lock of its victim: with the victim's index held (a graph
/// install, a write's apply), it gives up at once rather than wait, changed index or not.
#[test]
fn an_eviction_gives_up_on_a_victim_whose_index_is_held() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = tenant_with_graph(dir.path());
    let q = strata_index::testdata::queries(1, DIM as usize, 10, 1, 2);
    put_one(&engine, &scope, "changed", &q[0]);
    let slot = engine.indexes.get(scope.key()).unwrap();
    let held = slot.index.write().unwrap();
    let (done_tx, done) = channel();
    std::thread::scope(|s| {
        let (engine, scope, slot) = (&engine, &scope, &slot);
        s.spawn(move || {
            let evicted = engine.indexes.try_evict(&engine.store, scope.key(), slot);
            done_tx.send(evicted).unwrap();
        });
        let answer = done.recv_timeout(Duration::from_secs(30));
        drop(held);
        assert_eq!(answer, Ok(false), "the eviction waited for the held index");
    });
    assert!(slot.index.read().unwrap().is_some(), "evicted while busy");
}

/// An eviction's save that fails after its capture leaves the index changed, even when the
/// index is held at that moment by a holder that does not mark it changed itself (the graph
/// builder's start and catch-up rounds): otherwise every later save would pass the tenant
/// over, and only the change log would hold what its indexes have beyond their last save.
#[test]
fn a_failed_eviction_save_leaves_the_index_changed_though_it_was_held() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = tenant_with_graph(dir.path());
    let q = strata_index::testdata::queries(1, DIM as usize, 10, 1, 2);
    put_one(&engine, &scope, "changed", &q[0]);
    assert!(is_dirty(&engine, &scope));
    let slot = engine.indexes.get(scope.key()).unwrap();
    let (held_tx, held) = channel::<()>();
    let (release_tx, release) = channel::<()>();
    std::thread::scope(|s| {
        let holder = std::sync::Arc::clone(&slot);
        // Takes the index when asked, holds it a little, with no change made.
        s.spawn(move || {
            release.recv().unwrap();
            let guard = holder.index.write().unwrap();
            held_tx.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(30));
            drop(guard);
        });
        *lock(&slot.save_hook) = Some(Box::new(move |stage| match stage {
            SaveStage::FilesDurable => {
                release_tx.send(()).unwrap();
                held.recv().unwrap();
                Err(EngineError::Index("cut short".into()))
            }
            SaveStage::Captured => Ok(()),
        }));
        let saved = crate::index_save::try_save_slot(&engine.store, scope.key(), &slot);
        assert!(matches!(saved, Some(Err(_))), "{saved:?}");
    });
    *lock(&slot.save_hook) = None;
    assert!(
        is_dirty(&engine, &scope),
        "the failed save's capture lost the flag"
    );
}

/// Record changes the tenant's loaded indexes hold that no save captured.
fn unsaved(engine: &Engine, scope: &TenantScope) -> u64 {
    let slot = engine.indexes.get(scope.key()).unwrap();
    let guard = slot.index.read().unwrap();
    let index = guard.as_ref().unwrap();
    index
        .unsaved_changes
        .load(std::sync::atomic::Ordering::Relaxed)
}

#[test]
fn a_checkpoint_saves_tenants_with_enough_unsaved_changes_so_a_crash_replays_only_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = tenant_with_graph(dir.path());
    let fresh = strata_index::testdata::queries(13, DIM as usize, 10, 1, 5);
    for (i, v) in fresh.iter().enumerate().take(10) {
        put_one(&engine, &scope, &format!("f{i}"), v);
    }
    assert_eq!(unsaved(&engine, &scope), 10);
    assert_eq!(engine.checkpoint_indexes(11).unwrap(), 0, "not due yet");
    assert_eq!(unsaved(&engine, &scope), 10);
    assert_eq!(engine.checkpoint_indexes(10).unwrap(), 1);
    assert_eq!(unsaved(&engine, &scope), 0);
    assert!(!is_dirty(&engine, &scope));
    assert_eq!(
        engine.checkpoint_indexes(1).unwrap(),
        0,
        "nothing new to save"
    );
    for (i, v) in fresh.iter().enumerate().skip(10) {
        put_one(&engine, &scope, &format!("f{i}"), v);
    }
    // The process ends without a shutdown's save.
    drop(engine);

    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    let scope = crate::test_support::admin_scope(&engine, "acme");
    assert!(load_from_image(&engine, &scope));
    assert_eq!(
        unsaved(&engine, &scope),
        3,
        "the load replayed more than the last 3"
    );
    for (i, v) in fresh.iter().enumerate() {
        assert_eq!(top_hit(&engine, &scope, v), format!("f{i}"));
    }
    verify_clean(&engine);
}

#[test]
fn a_checkpoint_waits_for_a_write_holding_the_index_rather_than_pass_the_tenant_over() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = tenant_with_graph(dir.path());
    let fresh = strata_index::testdata::queries(5, DIM as usize, 10, 1, 6);
    for (i, v) in fresh.iter().enumerate() {
        put_one(&engine, &scope, &format!("w{i}"), v);
    }
    let slot = engine.indexes.get(scope.key()).unwrap();
    std::thread::scope(|s| {
        // A write applying its changes: the index's write lock, held a moment.
        let held = slot.index.write().unwrap();
        let checkpoint = s.spawn(|| engine.checkpoint_indexes(5).unwrap());
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            !checkpoint.is_finished(),
            "the checkpoint waits for the lock"
        );
        drop(held);
        assert_eq!(checkpoint.join().unwrap(), 1, "the busy tenant was saved");
    });
    assert_eq!(unsaved(&engine, &scope), 0);
    assert!(!is_dirty(&engine, &scope));
}
