//! What a running data move holds the tenant against: other level or parameter changes, the
//! promotion sweep, the purge sweep, more moves than the server allows; and what happens to
//! the slot and the status when a job ends without running, or changes nothing.
use strata_auth::OperatorScope;
use strata_types::TenantId;

use super::*;
use crate::isolation::{IndexParams, IsolationConfig, MigrateRequest, MigrationState};
use crate::test_support::{admin_scope, answers};
use crate::{EngineConfig, IsolationLevel};

fn request(target: IsolationLevel, index_params: Option<IndexParams>) -> MigrateRequest {
    MigrateRequest {
        target,
        index_params,
        dry_run: false,
    }
}

use crate::test_support::filled_tenant as fill;

fn start(engine: &Engine, id: &TenantId, target: IsolationLevel) -> MigrationJob {
    let (_, job) = engine
        .start_migration(&OperatorScope::for_tests(), id, request(target, None))
        .unwrap();
    job.expect("a data move")
}

/// An engine whose promotion sweep promotes a shared tenant from its first vector.
fn promoting_engine(dir: &std::path::Path) -> Engine {
    let config = EngineConfig {
        isolation: IsolationConfig {
            promote_partition_vectors: 1,
            ..IsolationConfig::default()
        },
        ..EngineConfig::default()
    };
    Engine::open(dir, config).unwrap()
}

fn conflict<T: std::fmt::Debug>(r: Result<T, EngineError>) -> String {
    match r {
        Err(EngineError::IdConflict(m)) => m,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

#[test]
fn a_running_move_refuses_other_level_and_parameter_changes_and_the_sweeps_skip_it() {
    let dir = tempfile::tempdir().unwrap();
    let engine = promoting_engine(dir.path());
    let op = OperatorScope::for_tests();
    let id = fill(&engine, "acme", 50);
    let scope = admin_scope(&engine, "acme");
    let before = answers(&engine, &scope);
    let job = start(&engine, &id, IsolationLevel::Dedicated);

    // shared → partition, and a same-level change of parameters only: both 409.
    conflict(engine.migrate_tenant(&op, &id, request(IsolationLevel::Partition, None)));
    let params = IndexParams {
        m: Some(8),
        ..IndexParams::default()
    };
    conflict(engine.migrate_tenant(&op, &id, request(IsolationLevel::Shared, Some(params))));
    // The level it is leaving, which it is still at: not "nothing to change", since the flip
    // will take it away (it was answered as done, and the tenant then ended elsewhere).
    conflict(engine.migrate_tenant(&op, &id, request(IsolationLevel::Shared, None)));
    // The promotion sweep skips it (and would promote it otherwise: it holds 50 vectors).
    assert!(engine.promote_tenants(&op).unwrap().is_empty());

    // The move finishes, at the level and parameters it was asked for.
    std::thread::scope(|s| s.spawn(|| job.run(&engine)).join().unwrap()).unwrap();
    let info = engine.tenant(&op, &id).unwrap();
    assert_eq!(
        (info.isolation, info.index_params),
        (IsolationLevel::Dedicated, None)
    );
    assert_eq!(answers(&engine, &scope), before);
    let done = engine.migration(&op, &id).unwrap();
    assert!(matches!(
        done.state,
        MigrationState::Done | MigrationState::Rebuilding
    ));
    // Ended and recorded: nothing of it is kept in memory.
    assert!(engine.migrations.get(scope.key()).is_none());

    // A migration that changes nothing is answered, not recorded.
    let report = engine
        .migrate_tenant(&op, &id, request(IsolationLevel::Dedicated, None))
        .unwrap();
    assert!(!report.moves_data);
    let again = engine.migration(&op, &id).unwrap();
    assert_eq!(
        (again.started_at, again.from, again.moves_data),
        (done.started_at, done.from, true)
    );
}

#[test]
fn the_purge_sweep_skips_a_tenant_whose_data_is_moving_and_purges_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    let op = OperatorScope::for_tests();
    let (a, b) = (fill(&engine, "a", 5), fill(&engine, "b", 5));
    let job = start(&engine, &a, IsolationLevel::Dedicated);
    engine.delete_tenant(&op, &a).unwrap();
    engine.delete_tenant(&op, &b).unwrap();
    assert_eq!(engine.purge_deleted_tenants(&op, 0).unwrap(), vec![b]);
    // A job dropped without running frees the slot, and says so.
    drop(job);
    let status = engine.migration(&op, &a).unwrap();
    assert_eq!(status.state, MigrationState::Failed, "{status:?}");
    assert!(status.error.unwrap().contains("never run"));
    assert_eq!(engine.purge_deleted_tenants(&op, 0).unwrap(), vec![a]);
}

#[test]
fn data_moves_beyond_the_servers_limit_are_refused_until_one_ends() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    let op = OperatorScope::for_tests();
    let (a, b) = (fill(&engine, "a", 5), fill(&engine, "b", 5));
    let job = start(&engine, &a, IsolationLevel::Dedicated);
    let refused = engine
        .start_migration(&op, &b, request(IsolationLevel::Dedicated, None))
        .map(|(report, _)| report);
    // Told apart from other conflicts: an import or a resumption waits for this one only.
    assert!(
        matches!(&refused, Err(EngineError::MoveSlotsBusy(m)) if m.contains("max_concurrent_moves")),
        "{refused:?}"
    );
    // A level change that moves no data is not a data move: allowed.
    engine
        .migrate_tenant(&op, &b, request(IsolationLevel::Partition, None))
        .unwrap();
    job.run(&engine).unwrap();
    start(&engine, &b, IsolationLevel::Dedicated)
        .run(&engine)
        .unwrap();
    assert_eq!(
        engine.tenant(&op, &b).unwrap().isolation,
        IsolationLevel::Dedicated
    );
}

/// The status of a move that ended shows its own outcome when the row could not say it, and
/// a panic ends it as failed with the slot freed.
#[test]
fn an_ended_move_shows_its_outcome_over_a_row_that_still_says_running() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    let op = OperatorScope::for_tests();
    let a = fill(&engine, "a", 5);
    let key = admin_scope(&engine, "a").key();
    let job = start(&engine, &a, IsolationLevel::Dedicated);
    // As if the failed row could not be written: ended in memory, the row saying running.
    job.copy.end(Phase::Failed, Some("the real error".into()));
    let status = engine.migration(&op, &a).unwrap();
    assert_eq!(status.state, MigrationState::Failed);
    assert_eq!(status.error.as_deref(), Some("the real error"));
    drop(job);

    // A panic while the job runs (unwinding through it): failed, recorded, slot freed.
    let job = start(&engine, &a, IsolationLevel::Dedicated);
    let copy = Arc::clone(&job.copy);
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _job = job;
        panic!("boom");
    }));
    assert!(unwound.is_err());
    assert!(!copy.running());
    let row = strata_store::last_migration(&engine.store.read().unwrap(), key)
        .unwrap()
        .unwrap();
    assert_eq!(row.state, strata_store::StoredMigrationState::Failed);
    assert!(row.error.unwrap().contains("panic"));
    start(&engine, &a, IsolationLevel::Dedicated)
        .run(&engine)
        .unwrap();
}

/// The promotion sweep plans from an earlier read of the registry: an operator's level change
/// between that read and the promotion's commit wins, and a later sweep leaves it too.
#[test]
fn a_promotion_planned_before_an_operators_level_change_leaves_that_change() {
    let dir = tempfile::tempdir().unwrap();
    let engine = promoting_engine(dir.path());
    let op = OperatorScope::for_tests();
    let id = fill(&engine, "acme", 50);
    let due = engine.due_for_promotion().unwrap();
    assert_eq!(due.len(), 1, "50 vectors: due for partition");

    // Meanwhile the operator keeps it shared, with parameters of its own.
    let params = IndexParams {
        m: Some(8),
        ..IndexParams::default()
    };
    engine
        .migrate_tenant(&op, &id, request(IsolationLevel::Shared, Some(params)))
        .unwrap();
    assert!(engine.promote(&op, due).unwrap().is_empty());
    let info = engine.tenant(&op, &id).unwrap();
    assert_eq!(
        (info.isolation, info.index_params),
        (IsolationLevel::Shared, Some(params))
    );
    assert!(engine.promote_tenants(&op).unwrap().is_empty());
}

/// A tenant `acme` of 50 records migrated to `partition` and loaded (so pinned).
fn loaded_partition_tenant(dir: &std::path::Path) -> (Engine, TenantId) {
    let engine = Engine::open(dir, EngineConfig::default()).unwrap();
    let op = OperatorScope::for_tests();
    let id = fill(&engine, "acme", 50);
    engine
        .migrate_tenant(&op, &id, request(IsolationLevel::Partition, None))
        .unwrap();
    answers(&engine, &admin_scope(&engine, "acme"));
    assert!(
        engine.residency(&op, &id).unwrap().pinned,
        "a loaded partition tenant is pinned"
    );
    (engine, id)
}

/// A soft-deleted tenant serves nothing, so a `partition` tenant's pin lapses with its delete
/// (its loaded indexes evictable like any idle tenant's) and comes back with its restore.
#[test]
fn a_deleted_partition_tenant_is_not_pinned_until_restored() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, id) = loaded_partition_tenant(dir.path());
    let op = OperatorScope::for_tests();
    let pinned = |engine: &Engine| engine.residency(&op, &id).unwrap().pinned;
    engine.delete_tenant(&op, &id).unwrap();
    assert!(!pinned(&engine), "deleted, it is not");
    engine.restore_tenant(&op, &id).unwrap();
    assert!(pinned(&engine), "restored, it is again");
}

/// Two level changes committed one after the other may apply to the loaded state in the other
/// order: whichever applies last applies the level stored now, not the one it committed.
#[test]
fn a_level_change_applied_late_leaves_the_level_stored_since() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, id) = loaded_partition_tenant(dir.path());
    let op = OperatorScope::for_tests();
    let pinned = |engine: &Engine| engine.residency(&op, &id).unwrap().pinned;

    // A second change, back to shared, commits; its apply has not run yet.
    let key = engine.tenant_meta(&id).unwrap().key;
    let mut shared =
        crate::lifecycle::TenantProfile::of(&engine.tenant_meta(&id).unwrap()).unwrap();
    shared.isolation = IsolationLevel::Shared;
    let row = crate::migration_status::level_change_row(
        IsolationLevel::Partition,
        IsolationLevel::Shared,
    );
    engine
        .store
        .write(|w| engine.level_txn(w, &op, &id, &shared, crate::isolation::MIGRATE_ACTION, &row))
        .unwrap();
    assert!(pinned(&engine), "not applied yet");

    // The first change's apply arrives now: the tenant takes the stored level, shared.
    engine.indexes.apply_profile(&engine.store, key);
    assert!(
        !pinned(&engine),
        "the level stored since is applied, not partition's"
    );
    engine.indexes.apply_profile(&engine.store, key);
    assert!(!pinned(&engine));
}
