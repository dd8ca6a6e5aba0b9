//! Resuming moves a crash cut short, and cancelling moves, against the engine itself: the
//! tenant is whole on exactly one side at every step, its answers do not move, and its status
//! goes interrupted → running → done (or → cancelled).
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use strata_auth::OperatorScope;
use strata_types::TenantId;

use super::*;
use crate::dedicated::Phase;
use crate::isolation::{IsolationConfig, MigrateRequest, MigrationState};
use crate::test_support::{admin_scope, answers};
use crate::{EngineConfig, MigrationJob};

fn config(max_moves: usize, resume: bool) -> EngineConfig {
    EngineConfig {
        isolation: IsolationConfig {
            max_concurrent_moves: max_moves,
            resume_interrupted_migrations: resume,
            ..Default::default()
        },
        ..Default::default()
    }
}

use crate::test_support::filled_tenant as fill;

/// Asks for `target` with the tenant's own graph parameters; the job is a data move's.
fn migrate(
    engine: &Engine,
    id: &TenantId,
    target: IsolationLevel,
) -> Result<Option<MigrationJob>, EngineError> {
    let req = MigrateRequest {
        target,
        index_params: None,
        dry_run: false,
    };
    let (_, job) = engine.start_migration(&OperatorScope::for_tests(), id, req)?;
    Ok(job)
}

fn start(engine: &Engine, id: &TenantId, target: IsolationLevel) -> MigrationJob {
    migrate(engine, id, target).unwrap().expect("a data move")
}

/// What a crash mid-copy leaves: the row says running, and (ended in memory only, so that
/// dropping the job records nothing) no move runs.
fn crash_mid_copy(engine: &Engine, id: &TenantId, target: IsolationLevel) {
    let job = start(engine, id, target);
    job.copy.end(Phase::Failed, None);
    drop(job);
}

/// What a restart does: the engine closed, then opened again on the same directory, with
/// resumption configured as `resume`.
fn restart(engine: Engine, dir: &std::path::Path, resume: bool) -> Engine {
    drop(engine);
    Engine::open(dir, config(1, resume)).unwrap()
}

fn state(engine: &Engine, id: &TenantId) -> MigrationStatus {
    engine.migration(&OperatorScope::for_tests(), id).unwrap()
}

fn verify_clean(engine: &Engine, id: &TenantId) -> crate::VerifyReport {
    let report = engine
        .verify_tenant(&OperatorScope::for_tests(), id)
        .unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.usage_stored, report.usage_recounted);
    report
}

#[test]
fn a_move_cut_short_by_a_crash_is_resumed_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), config(1, true)).unwrap();
    let (a, b) = (fill(&engine, "a", 300), fill(&engine, "b", 100));
    let before = answers(&engine, &admin_scope(&engine, "a"));
    crash_mid_copy(&engine, &a, IsolationLevel::Dedicated);
    crash_mid_copy(&engine, &b, IsolationLevel::Dedicated);

    let engine = restart(engine, dir.path(), true);
    assert_eq!(state(&engine, &a).state, MigrationState::Interrupted);
    let op = OperatorScope::for_tests();
    let mut ended = engine.resume_interrupted_migrations(&op).unwrap();
    ended.sort_by(|x, y| x.0.as_str().cmp(y.0.as_str()));
    assert_eq!(
        ended,
        vec![(a.clone(), Resumed::Done), (b.clone(), Resumed::Done)]
    );
    for id in [&a, &b] {
        let s = state(&engine, id);
        assert!(
            matches!(s.state, MigrationState::Done | MigrationState::Rebuilding),
            "{s:?}"
        );
        assert_eq!(s.level, IsolationLevel::Dedicated);
        assert!(s.error.is_none(), "{s:?}");
        assert!(verify_clean(&engine, id).dedicated_file);
    }
    assert_eq!(answers(&engine, &admin_scope(&engine, "a")), before);
    // Nothing is left to resume.
    assert!(
        engine
            .resume_interrupted_migrations(&op)
            .unwrap()
            .is_empty()
    );

    // Out of the file, cut short and resumed the same way; switched off, it stays cut short.
    crash_mid_copy(&engine, &a, IsolationLevel::Partition);
    let engine = restart(engine, dir.path(), false);
    assert!(
        engine
            .resume_interrupted_migrations(&op)
            .unwrap()
            .is_empty()
    );
    assert_eq!(state(&engine, &a).state, MigrationState::Interrupted);
    assert_eq!(state(&engine, &a).level, IsolationLevel::Dedicated);
    let engine = restart(engine, dir.path(), true);
    assert_eq!(
        engine.resume_interrupted_migrations(&op).unwrap(),
        vec![(a.clone(), Resumed::Done)]
    );
    assert_eq!(state(&engine, &a).level, IsolationLevel::Partition);
    assert!(!verify_clean(&engine, &a).dedicated_file);
    assert_eq!(answers(&engine, &admin_scope(&engine, "a")), before);
}

/// Resumption takes a move slot like any move: while an operator's move holds the only one,
/// the cut-short move waits (still `interrupted`), then runs.
#[test]
fn resumption_waits_for_a_free_move_slot() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), config(1, true)).unwrap();
    let (a, b) = (fill(&engine, "a", 100), fill(&engine, "b", 100));
    crash_mid_copy(&engine, &a, IsolationLevel::Dedicated);
    let engine = restart(engine, dir.path(), true);
    let holder = start(&engine, &b, IsolationLevel::Dedicated);
    let op = OperatorScope::for_tests();
    std::thread::scope(|s| {
        let resumer = s.spawn(|| engine.resume_interrupted_migrations(&op).unwrap());
        // However long it is given, it cannot start while the slot is held.
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(state(&engine, &a).state, MigrationState::Interrupted);
        assert!(!resumer.is_finished());
        holder.run(&engine).unwrap();
        let ended = resumer.join().unwrap();
        assert_eq!(ended, vec![(a.clone(), Resumed::Done)]);
    });
    assert_eq!(state(&engine, &a).level, IsolationLevel::Dedicated);
    verify_clean(&engine, &a);
    verify_clean(&engine, &b);
}

/// The outcomes of the tenant's `tenant.migrate` audit rows, oldest first.
fn migrate_outcomes(engine: &Engine, id: &TenantId) -> Vec<String> {
    let q = crate::AuditQuery {
        tenant: Some(id.clone()),
        action: Some("tenant.migrate".into()),
        ..Default::default()
    };
    let rows = engine.audit_rows(&OperatorScope::for_tests(), &q).unwrap();
    rows.into_iter().rev().map(|r| r.outcome).collect()
}

#[test]
fn a_cancelled_interrupted_move_is_not_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), config(1, true)).unwrap();
    let a = fill(&engine, "a", 100);
    let op = OperatorScope::for_tests();
    // Nothing to cancel yet, said as such (not wrapped in a record id's message).
    let nothing = engine.cancel_migration(&op, &a).unwrap_err();
    assert!(matches!(nothing, EngineError::IdConflict(_)));
    assert!(!nothing.to_string().starts_with("id "), "{nothing}");
    crash_mid_copy(&engine, &a, IsolationLevel::Dedicated);
    let engine = restart(engine, dir.path(), true);
    let s = engine.cancel_migration(&op, &a).unwrap();
    assert_eq!(s.state, MigrationState::Cancelled, "{s:?}");
    assert_eq!(migrate_outcomes(&engine, &a), ["cancelled"]);
    assert_eq!(s.level, IsolationLevel::Shared);
    assert!(s.finished_at.is_some() && s.error.is_some(), "{s:?}");
    assert!(
        engine
            .resume_interrupted_migrations(&op)
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        engine.cancel_migration(&op, &a),
        Err(EngineError::IdConflict(_))
    ));
    let engine = restart(engine, dir.path(), true);
    assert_eq!(state(&engine, &a).state, MigrationState::Cancelled);
    assert!(!verify_clean(&engine, &a).dedicated_file);
    assert!(matches!(
        engine.cancel_migration(&op, &TenantId::parse("nobody").unwrap()),
        Err(EngineError::TenantNotFound(_))
    ));
}

/// A cancel answered while its move was still removing its copy holds across a crash that
/// cuts the move short before it records its end: the start neither resumes the move nor
/// loses the cancel.
#[test]
fn a_cancel_holds_when_a_crash_stops_its_move_before_the_move_records_it() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), config(1, true)).unwrap();
    let a = fill(&engine, "a", 100);
    let scope = admin_scope(&engine, "a");
    let before = answers(&engine, &scope);
    let op = OperatorScope::for_tests();
    let job = start(&engine, &a, IsolationLevel::Dedicated);
    let copy = std::sync::Arc::clone(&job.copy);
    std::thread::scope(|s| {
        let cancel = s.spawn(|| engine.cancel_migration(&op, &a));
        let deadline = Instant::now() + Duration::from_secs(60);
        while !copy.cancel.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "the cancel never landed");
            std::thread::sleep(Duration::from_millis(1));
        }
        // The process dies here: the move never writes its end (ended in memory only, so
        // that dropping the job records nothing).
        job.copy.end(Phase::Failed, None);
        drop(job);
        cancel.join().unwrap().unwrap();
    });
    let engine = restart(engine, dir.path(), true);
    assert_eq!(
        stored_row(&engine, &a).state,
        StoredMigrationState::Cancelled
    );
    assert!(
        engine
            .resume_interrupted_migrations(&op)
            .unwrap()
            .is_empty()
    );
    let s = state(&engine, &a);
    assert_eq!(
        (s.state, s.level),
        (MigrationState::Cancelled, IsolationLevel::Shared)
    );
    assert!(s.error.unwrap().contains("cancelled"));
    assert_eq!(migrate_outcomes(&engine, &a), ["cancelled"]);
    assert!(!verify_clean(&engine, &a).dedicated_file);
    assert_eq!(answers(&engine, &admin_scope(&engine, "a")), before);
}

/// Start-up skips a soft-deleted tenant's cut-short move; restoring the tenant resumes it
/// (the API runs `resume_migration_of` after a restore), and only once.
#[test]
fn a_deleted_tenants_cut_short_move_resumes_once_it_is_restored() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), config(1, true)).unwrap();
    let a = fill(&engine, "a", 200);
    let before = answers(&engine, &admin_scope(&engine, "a"));
    let op = OperatorScope::for_tests();
    crash_mid_copy(&engine, &a, IsolationLevel::Dedicated);
    engine.delete_tenant(&op, &a).unwrap();

    let engine = restart(engine, dir.path(), true);
    assert_eq!(
        engine.resume_interrupted_migrations(&op).unwrap(),
        vec![(a.clone(), Resumed::Skipped)]
    );
    assert_eq!(state(&engine, &a).state, MigrationState::Interrupted);
    // Deleted: nothing runs.
    assert_eq!(
        engine.resume_migration_of(&op, &a).unwrap(),
        Some(Resumed::Skipped)
    );
    engine.restore_tenant(&op, &a).unwrap();
    assert_eq!(
        engine.resume_migration_of(&op, &a).unwrap(),
        Some(Resumed::Done)
    );
    let s = state(&engine, &a);
    assert_eq!(s.level, IsolationLevel::Dedicated, "{s:?}");
    assert!(verify_clean(&engine, &a).dedicated_file);
    assert_eq!(answers(&engine, &admin_scope(&engine, "a")), before);
    assert_eq!(engine.resume_migration_of(&op, &a).unwrap(), None);

    // Switched off, a restore leaves the cut-short move as it is.
    crash_mid_copy(&engine, &a, IsolationLevel::Partition);
    let engine = restart(engine, dir.path(), false);
    assert_eq!(engine.resume_migration_of(&op, &a).unwrap(), None);
    assert_eq!(state(&engine, &a).state, MigrationState::Interrupted);
    assert_eq!(state(&engine, &a).level, IsolationLevel::Dedicated);
}

/// A running move is cancelled before its next chunk: its partial copy is removed and the
/// tenant stays whole where it was; one past its copy completes and the cancel is refused.
#[test]
fn a_running_move_is_cancelled_before_its_flip() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), config(1, true)).unwrap();
    let a = fill(&engine, "a", 300);
    let scope = admin_scope(&engine, "a");
    let before = answers(&engine, &scope);
    let op = OperatorScope::for_tests();
    for target in [IsolationLevel::Dedicated, IsolationLevel::Partition] {
        if target == IsolationLevel::Partition {
            engine
                .migrate_tenant(
                    &op,
                    &a,
                    MigrateRequest {
                        target: IsolationLevel::Dedicated,
                        index_params: None,
                        dry_run: false,
                    },
                )
                .unwrap();
        }
        let from = state(&engine, &a).level;
        let cancels = migrate_outcomes(&engine, &a)
            .iter()
            .filter(|o| *o == "cancelled")
            .count();
        let job = start(&engine, &a, target);
        let copy = std::sync::Arc::clone(&job.copy);
        let status = std::thread::scope(|s| {
            let cancel = s.spawn(|| engine.cancel_migration(&op, &a).unwrap());
            let deadline = Instant::now() + Duration::from_secs(60);
            while !copy.cancel.load(Ordering::SeqCst) {
                assert!(Instant::now() < deadline, "the cancel never landed");
                std::thread::sleep(Duration::from_millis(1));
            }
            assert!(matches!(job.run(&engine), Err(EngineError::IdConflict(_))));
            cancel.join().unwrap()
        });
        assert_eq!(status.state, MigrationState::Cancelled, "{status:?}");
        assert_eq!(status.level, from);
        assert!(status.error.unwrap().contains("cancelled"));
        let outcomes = migrate_outcomes(&engine, &a);
        assert_eq!(outcomes.last().map(String::as_str), Some("cancelled"));
        // Audited once: by the cancel, not again by the move it stopped.
        let now = outcomes.iter().filter(|o| *o == "cancelled").count();
        assert_eq!(now, cancels + 1, "{outcomes:?}");
        let report = verify_clean(&engine, &a);
        assert_eq!(report.dedicated_file, from == IsolationLevel::Dedicated);
        assert_eq!(answers(&engine, &scope), before);
        // Not resumed, and the slot is free for the next move.
        assert!(
            engine
                .resume_interrupted_migrations(&op)
                .unwrap()
                .is_empty()
        );
    }

    // Past the copy: refused; the move completes.
    let job = start(&engine, &a, IsolationLevel::Partition);
    *lock(&job.copy.phase) = Phase::CatchingUp;
    assert!(matches!(
        engine.cancel_migration(&op, &a),
        Err(EngineError::IdConflict(_))
    ));
    *lock(&job.copy.phase) = Phase::Copying;
    job.run(&engine).unwrap();
    assert_eq!(state(&engine, &a).level, IsolationLevel::Partition);
    verify_clean(&engine, &a);
    assert_eq!(answers(&engine, &scope), before);
}

/// Rewrites tenant `id`'s last-migration row with `f` (what an older version, or earlier
/// crashed runs, would have left).
fn edit_row(engine: &Engine, id: &TenantId, f: impl FnOnce(&mut StoredMigration)) {
    let key = engine.tenant_meta(id).unwrap().key;
    engine
        .store
        .write(|w| {
            let mut row = strata_store::last_migration(&*w, key)?.unwrap();
            f(&mut row);
            w.put_last_migration(key, &row)
        })
        .unwrap();
}

fn stored_row(engine: &Engine, id: &TenantId) -> StoredMigration {
    let key = engine.tenant_meta(id).unwrap().key;
    strata_store::last_migration(&engine.store.read().unwrap(), key)
        .unwrap()
        .unwrap()
}

#[test]
fn old_rows_are_not_resumed_and_a_crash_loop_gives_up_after_three_runs() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), config(1, true)).unwrap();
    let a = fill(&engine, "a", 200);
    let before = answers(&engine, &admin_scope(&engine, "a"));
    let op = OperatorScope::for_tests();
    crash_mid_copy(&engine, &a, IsolationLevel::Dedicated);
    assert_eq!(stored_row(&engine, &a).attempt, 1);

    // Left by a version that did not resume moves (its users were told to ask again).
    edit_row(&engine, &a, |r| r.attempt = 0);
    let engine = restart(engine, dir.path(), true);
    assert!(!state(&engine, &a).will_resume);
    assert!(
        engine
            .resume_interrupted_migrations(&op)
            .unwrap()
            .is_empty()
    );
    assert_eq!(state(&engine, &a).state, MigrationState::Interrupted);

    // Its third run crashed too: not resumed again, and the status says why.
    edit_row(&engine, &a, |r| r.attempt = 3);
    assert!(!state(&engine, &a).will_resume);
    let ended = engine.resume_interrupted_migrations(&op).unwrap();
    assert!(
        matches!(&ended[..], [(t, Resumed::NotMoved(why))] if *t == a && why.contains("3 runs")),
        "{ended:?}"
    );
    let s = state(&engine, &a);
    assert_eq!(s.state, MigrationState::Failed);
    assert!(s.error.as_deref().unwrap().contains("3 runs"), "{s:?}");
    assert_eq!(s.level, IsolationLevel::Shared);
    assert!(!verify_clean(&engine, &a).dedicated_file);
    assert!(
        engine
            .resume_interrupted_migrations(&op)
            .unwrap()
            .is_empty()
    );

    // Its second run crashed: resumed as the third, which the row records.
    crash_mid_copy(&engine, &a, IsolationLevel::Dedicated);
    edit_row(&engine, &a, |r| r.attempt = 2);
    let engine = restart(engine, dir.path(), true);
    assert!(state(&engine, &a).will_resume);
    assert_eq!(
        engine.resume_interrupted_migrations(&op).unwrap(),
        vec![(a.clone(), Resumed::Done)]
    );
    assert_eq!(stored_row(&engine, &a).attempt, 3);
    assert_eq!(state(&engine, &a).level, IsolationLevel::Dedicated);
    assert_eq!(answers(&engine, &admin_scope(&engine, "a")), before);

    // Orderly shutdowns do not use attempts up: an interrupted third run is resumed.
    crash_mid_copy(&engine, &a, IsolationLevel::Partition);
    edit_row(&engine, &a, |r| {
        r.attempt = 3;
        r.state = StoredMigrationState::Interrupted;
        r.finished_at = Some(r.started_at);
    });
    let engine = restart(engine, dir.path(), true);
    assert!(state(&engine, &a).will_resume);
    assert_eq!(
        engine.resume_interrupted_migrations(&op).unwrap(),
        vec![(a.clone(), Resumed::Done)]
    );
    assert_eq!(state(&engine, &a).level, IsolationLevel::Partition);
}

#[test]
fn a_cancel_wins_over_a_shutdown_that_stops_the_same_copy() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), config(1, true)).unwrap();
    let a = fill(&engine, "a", 200);
    let job = start(&engine, &a, IsolationLevel::Dedicated);
    job.copy.cancel.store(true, Ordering::SeqCst);
    // Not all stopped: the move has not run yet.
    assert!(!engine.stop_migrations(Duration::ZERO));
    assert!(job.run(&engine).is_err());
    let s = state(&engine, &a);
    assert_eq!(s.state, MigrationState::Cancelled, "{s:?}");
    assert!(!s.will_resume);
    assert_eq!(s.level, IsolationLevel::Shared);
    assert!(!verify_clean(&engine, &a).dedicated_file);
    let engine = restart(engine, dir.path(), true);
    assert!(
        engine
            .resume_interrupted_migrations(&OperatorScope::for_tests())
            .unwrap()
            .is_empty()
    );
    assert_eq!(state(&engine, &a).state, MigrationState::Cancelled);
}

/// A cancel recorded just before a shutdown stops the copy on its own (the cancel's flag not
/// set yet): the move ends cancelled, its row as the cancel wrote it and audited once, and the
/// start does not resume it. And a cancel that finds the move just ended `interrupted` by a
/// shutdown records it cancelled.
#[test]
fn a_recorded_cancel_holds_when_a_shutdown_stops_the_copy_first() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), config(1, true)).unwrap();
    let a = fill(&engine, "a", 200);
    let op = OperatorScope::for_tests();
    let key = engine.tenant_meta(&a).unwrap().key;
    let job = start(&engine, &a, IsolationLevel::Dedicated);
    engine.record_cancel(&op, &a, key, &job.copy).unwrap();
    assert!(!engine.stop_migrations(Duration::ZERO));
    assert!(matches!(
        job.run(&engine),
        Err(EngineError::ShuttingDown(_))
    ));
    let s = state(&engine, &a);
    assert_eq!(
        (s.state, s.level),
        (MigrationState::Cancelled, IsolationLevel::Shared)
    );
    assert_eq!(
        stored_row(&engine, &a).state,
        StoredMigrationState::Cancelled
    );
    assert_eq!(migrate_outcomes(&engine, &a), ["cancelled"]);
    let engine = restart(engine, dir.path(), true);
    assert!(
        engine
            .resume_interrupted_migrations(&op)
            .unwrap()
            .is_empty()
    );
    assert_eq!(state(&engine, &a).state, MigrationState::Cancelled);
    assert!(!verify_clean(&engine, &a).dedicated_file);

    // The other order: the shutdown's `interrupted` row first, then the cancel.
    let job = start(&engine, &a, IsolationLevel::Dedicated);
    let copy = std::sync::Arc::clone(&job.copy);
    assert!(!engine.stop_migrations(Duration::ZERO));
    assert!(matches!(
        job.run(&engine),
        Err(EngineError::ShuttingDown(_))
    ));
    assert_eq!(
        stored_row(&engine, &a).state,
        StoredMigrationState::Interrupted
    );
    engine.record_cancel(&op, &a, key, &copy).unwrap();
    assert_eq!(
        stored_row(&engine, &a).state,
        StoredMigrationState::Cancelled
    );
    let engine = restart(engine, dir.path(), true);
    assert!(
        engine
            .resume_interrupted_migrations(&op)
            .unwrap()
            .is_empty()
    );
    assert_eq!(state(&engine, &a).state, MigrationState::Cancelled);
}

/// A move asked for with its own graph parameters lands with them when a crash cut it short
/// and it is resumed; a row written before rows kept them lands with the tenant's stored ones.
#[test]
fn a_resumed_move_keeps_the_graph_parameters_it_was_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), config(1, true)).unwrap();
    let op = OperatorScope::for_tests();
    let a = fill(&engine, "a", 50);
    let asked = crate::isolation::IndexParams {
        m: Some(32),
        ef_construction: None,
        ef_search: Some(100),
    };
    let (_, job) = engine
        .start_migration(
            &op,
            &a,
            MigrateRequest {
                target: IsolationLevel::Dedicated,
                index_params: Some(asked),
                dry_run: false,
            },
        )
        .unwrap();
    let job = job.expect("a data move");
    job.copy.end(Phase::Failed, None);
    drop(job);
    assert_eq!(engine.tenant(&op, &a).unwrap().index_params, None);

    let engine = restart(engine, dir.path(), true);
    assert_eq!(
        engine.resume_interrupted_migrations(&op).unwrap(),
        vec![(a.clone(), Resumed::Done)]
    );
    let info = engine.tenant(&op, &a).unwrap();
    assert_eq!(info.isolation, IsolationLevel::Dedicated);
    assert_eq!(info.index_params, Some(asked));
    // The finished row keeps them too.
    assert_eq!(
        crate::migration_status::params_of(&stored_row(&engine, &a)).unwrap(),
        Some(Some(asked))
    );

    // Back out to `partition` with other parameters, cut short, and the row made one of
    // format 2 (no parameters kept): resumed with the tenant's stored ones.
    let other = crate::isolation::IndexParams {
        m: Some(8),
        ..Default::default()
    };
    let (_, job) = engine
        .start_migration(
            &op,
            &a,
            MigrateRequest {
                target: IsolationLevel::Partition,
                index_params: Some(other),
                dry_run: false,
            },
        )
        .unwrap();
    let job = job.expect("a data move");
    job.copy.end(Phase::Failed, None);
    drop(job);
    // A row without parameters is written in format 2, as the binary before format 3
    // wrote it.
    edit_row(&engine, &a, |row| row.index_params = None);
    let v2 = stored_row(&engine, &a);
    assert_eq!(strata_store::codec::encode_migration(&v2).unwrap()[0], 2);
    let engine = restart(engine, dir.path(), true);
    assert_eq!(
        engine.resume_interrupted_migrations(&op).unwrap(),
        vec![(a.clone(), Resumed::Done)]
    );
    let info = engine.tenant(&op, &a).unwrap();
    assert_eq!(info.isolation, IsolationLevel::Partition);
    assert_eq!(info.index_params, Some(asked));
}

/// A row that decodes but keeps graph parameters out of range (damaged bytes) is not
/// resumed: the move stays `interrupted` and the tenant where it was, untouched.
#[test]
fn a_cut_move_whose_row_keeps_parameters_out_of_range_is_not_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), config(1, true)).unwrap();
    let a = fill(&engine, "a", 50);
    crash_mid_copy(&engine, &a, IsolationLevel::Dedicated);
    edit_row(&engine, &a, |row| {
        row.index_params = Some(strata_store::StoredIndexParams {
            m: Some(u32::MAX),
            ..Default::default()
        })
    });
    let damaged = stored_row(&engine, &a);
    // Resumable but for its parameters, so it is not, and the status says so.
    assert!(!will_resume(&damaged, true));
    let e = crate::migration_status::params_of(&damaged).unwrap_err();
    assert!(e.to_string().contains("index_params.m"), "{e}");

    let engine = restart(engine, dir.path(), true);
    let before = state(&engine, &a);
    assert_eq!(before.state, MigrationState::Interrupted);
    assert!(!before.will_resume, "{before:?}");
    assert_eq!(
        engine
            .resume_interrupted_migrations(&OperatorScope::for_tests())
            .unwrap(),
        vec![]
    );
    let info = engine.tenant(&OperatorScope::for_tests(), &a).unwrap();
    assert_eq!(
        (info.isolation, info.index_params),
        (IsolationLevel::Shared, None)
    );
    assert_eq!(stored_row(&engine, &a), damaged);
}

/// A data move that changes no graph parameters keeps none in its row (format 2, which the
/// previous binary reads); one that changes them keeps them (format 3).
#[test]
fn only_a_move_that_changes_the_graph_parameters_keeps_them_in_its_row() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), config(1, true)).unwrap();
    let op = OperatorScope::for_tests();
    let a = fill(&engine, "a", 20);
    let migrate = |target, index_params| {
        let req = MigrateRequest {
            target,
            index_params,
            dry_run: false,
        };
        engine.migrate_tenant(&op, &a, req).unwrap();
        let row = stored_row(&engine, &a);
        let format = strata_store::codec::encode_migration(&row).unwrap()[0];
        (row.index_params, format)
    };
    assert_eq!(migrate(IsolationLevel::Dedicated, None), (None, 2));
    let asked = crate::isolation::IndexParams {
        m: Some(24),
        ..Default::default()
    };
    let (kept, format) = migrate(IsolationLevel::Shared, Some(asked));
    assert_eq!((kept.and_then(|p| p.m), format), (Some(24), 3));
    // The same parameters asked again change nothing: not kept.
    assert_eq!(migrate(IsolationLevel::Dedicated, Some(asked)), (None, 2));
}

/// The flip changes only the level and graph parameters: an operator's change committed
/// while the move is under way (name, limits, weight, metadata) is not lost, whether made
/// before the copy begins or while it runs (metadata patched in a loop: the last committed
/// value is the one that stays).
#[test]
fn profile_and_metadata_changes_made_during_a_data_move_survive_its_flip() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), config(1, true)).unwrap();
    let op = OperatorScope::for_tests();
    let a = fill(&engine, "a", 400);
    let job = start(&engine, &a, IsolationLevel::Dedicated);
    let limits = crate::lifecycle::TenantLimits {
        max_vectors: Some(10_000),
        ..Default::default()
    };
    let update = crate::TenantUpdate {
        display_name: Some(Some("Acme".into())),
        limits: Some(limits.clone()),
        weight: Some(4),
        metadata: Some(serde_json::json!({"n": -1})),
        ..Default::default()
    };
    engine.update_tenant(&op, &a, update).unwrap();

    let last = std::thread::scope(|s| {
        let moving = s.spawn(|| job.run(&engine));
        let mut last = -1;
        let mut n = 0;
        while !moving.is_finished() {
            let patch = crate::TenantUpdate {
                metadata: Some(serde_json::json!({ "n": n })),
                ..Default::default()
            };
            if engine.update_tenant(&op, &a, patch).is_ok() {
                last = n;
            }
            n += 1;
        }
        moving.join().unwrap().unwrap();
        last
    });
    let info = engine.tenant(&op, &a).unwrap();
    assert_eq!(info.isolation, IsolationLevel::Dedicated);
    assert_eq!(info.display_name.as_deref(), Some("Acme"));
    assert_eq!((info.limits, info.weight), (limits, 4));
    assert_eq!(info.metadata.unwrap()["n"], last);
    assert!(engine.verify_tenant(&op, &a).unwrap().ok);
}

/// A migration to the level a cut-short move will take the tenant off is not "nothing to
/// change" (the resumption would then move it anyway): refused until the move is cancelled.
#[test]
fn a_migration_to_the_level_a_pending_resumption_leaves_is_refused_until_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), config(1, true)).unwrap();
    let a = fill(&engine, "a", 100);
    let op = OperatorScope::for_tests();
    crash_mid_copy(&engine, &a, IsolationLevel::Dedicated);
    let engine = restart(engine, dir.path(), true);
    assert!(state(&engine, &a).will_resume);
    let stay = || migrate(&engine, &a, IsolationLevel::Shared);
    assert!(matches!(stay(), Err(EngineError::IdConflict(_))));
    engine.cancel_migration(&op, &a).unwrap();
    assert!(stay().unwrap().is_none());
    assert_eq!(state(&engine, &a).level, IsolationLevel::Shared);
}

/// Without resumption configured, a cut-short move stays as it is and nothing is pending.
#[test]
fn a_migration_to_the_current_level_answers_when_nothing_will_resume() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), config(1, false)).unwrap();
    let a = fill(&engine, "a", 100);
    crash_mid_copy(&engine, &a, IsolationLevel::Dedicated);
    let engine = restart(engine, dir.path(), false);
    assert!(
        migrate(&engine, &a, IsolationLevel::Shared)
            .unwrap()
            .is_none()
    );
}
