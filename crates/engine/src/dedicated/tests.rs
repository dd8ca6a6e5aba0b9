//! Migrations through every level against the engine itself: answers, usage and the
//! verify report do not move; the data is on one side only; a restart keeps it there.
use strata_auth::OperatorScope;
use strata_types::Metric;

use super::*;
use crate::isolation::{MigrateRequest, MigrationState};
use crate::test_support::{admin_scope, answers, put_clustered, vec_name};
use crate::{EngineConfig, IsolationLevel};

/// A purge waits for no migration: while one is moving the tenant's data it is refused,
/// and no migration starts while a purge runs (it holds the same lock as `start`).
#[test]
fn a_purge_is_refused_while_a_migration_moves_the_data() {
    let copies = Copies::default();
    let (key, id) = (TenantKey::SERVER, TenantId::parse("t").unwrap());
    let ran = copies.excluding(key, &id, || Ok(1)).unwrap();
    assert_eq!(ran, 1);
    let levels = (IsolationLevel::Shared, IsolationLevel::Dedicated);
    let running = copies.start(key, &id, 10, levels, 1, 1, || Ok(())).unwrap();
    let refused = copies.excluding(key, &id, || Ok(2));
    assert!(
        matches!(refused, Err(EngineError::IdConflict(_))),
        "{refused:?}"
    );
    *lock(&running.phase) = Phase::Done;
    assert_eq!(copies.excluding(key, &id, || Ok(3)).unwrap(), 3);
}

/// The cheap look a waiting resumption takes agrees with what `start` refuses.
#[test]
fn a_free_slot_is_seen_without_starting_a_move() {
    let copies = Copies::default();
    let (a, b) = (TenantKey::SERVER, TenantKey::for_tests(7));
    let id = TenantId::parse("t").unwrap();
    assert!(copies.slot_free(a, 1) && copies.slot_free(b, 1));
    let levels = (IsolationLevel::Shared, IsolationLevel::Dedicated);
    let running = copies.start(a, &id, 10, levels, 1, 1, || Ok(())).unwrap();
    // The tenant's own move runs; the server's one slot is taken; two slots leave one.
    assert!(!copies.slot_free(a, 2));
    assert!(!copies.slot_free(b, 1) && !copies.slot_free(b, 0));
    assert!(copies.slot_free(b, 2));
    *lock(&running.phase) = Phase::Cancelled;
    assert!(copies.slot_free(a, 1) && copies.slot_free(b, 1));
}

fn migrate(engine: &Engine, id: &TenantId, target: IsolationLevel) -> crate::MigrationReport {
    engine
        .migrate_tenant(
            &OperatorScope::for_tests(),
            id,
            MigrateRequest {
                target,
                index_params: None,
                dry_run: false,
            },
        )
        .unwrap()
}

fn verify_clean(engine: &Engine, id: &TenantId) -> crate::VerifyReport {
    let report = engine
        .verify_tenant(&OperatorScope::for_tests(), id)
        .unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.usage_stored, report.usage_recounted);
    report
}

fn tenants_dir(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join(strata_store::TENANTS_DIR)).map_or(0, |d| d.count())
}

#[test]
fn a_tenant_moves_through_every_level_and_its_answers_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    let op = OperatorScope::for_tests();
    let id = TenantId::parse("acme").unwrap();
    let other = TenantId::parse("other").unwrap();
    for t in [&id, &other] {
        engine.create_tenant(&op, t, None).unwrap();
        let scope = admin_scope(&engine, t.as_str());
        engine
            .create_collection(
                &scope,
                &vec_name(),
                crate::test_support::DIM,
                Metric::Cosine,
            )
            .unwrap();
        put_clustered(&engine, &scope, 600);
    }
    let scope = admin_scope(&engine, "acme");
    let before = answers(&engine, &scope);
    let other_before = answers(&engine, &admin_scope(&engine, "other"));
    let usage = engine.tenant(&op, &id).unwrap().usage;

    let dry = engine
        .migrate_tenant(
            &op,
            &id,
            MigrateRequest {
                target: IsolationLevel::Dedicated,
                index_params: None,
                dry_run: true,
            },
        )
        .unwrap();
    assert!(dry.moves_data && dry.records == 600 && dry.vectors == 600 && dry.bytes > 0);
    assert_eq!(dry.estimated_ms, None, "no copy measured yet");
    assert!(!engine.store.is_dedicated(scope.key()));

    let report = migrate(&engine, &id, IsolationLevel::Dedicated);
    assert!(report.moves_data && !report.dry_run);
    assert!(engine.store.is_dedicated(scope.key()));
    assert_eq!(engine.store.main_keys(scope.key()).unwrap(), 0);
    assert_eq!(tenants_dir(dir.path()), 1);
    let status = engine.migration(&op, &id).unwrap();
    assert_eq!(status.level, IsolationLevel::Dedicated);
    assert!(matches!(
        status.state,
        MigrationState::Done | MigrationState::Rebuilding
    ));
    assert!(status.moves_data && status.keys_copied >= status.keys_total);
    assert_eq!(answers(&engine, &scope), before);
    assert_eq!(engine.tenant(&op, &id).unwrap().usage, usage);
    assert!(verify_clean(&engine, &id).dedicated_file);
    // Its writes now go to its own file, and it keeps answering.
    put_clustered(&engine, &scope, 600);
    assert_eq!(answers(&engine, &scope), before);
    assert_eq!(engine.store.main_keys(scope.key()).unwrap(), 0);
    // A second dry run is estimated from the copy just measured.
    let dry = engine
        .migrate_tenant(
            &op,
            &id,
            MigrateRequest {
                target: IsolationLevel::Partition,
                index_params: None,
                dry_run: true,
            },
        )
        .unwrap();
    assert!(dry.moves_data && dry.estimated_ms.is_some(), "{dry:?}");

    // A restart finds it in its own file.
    engine.persist_indexes().unwrap();
    drop(engine);
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    assert!(engine.store.is_dedicated(scope.key()));
    assert_eq!(answers(&engine, &scope), before);
    verify_clean(&engine, &id);

    migrate(&engine, &id, IsolationLevel::Partition);
    assert!(!engine.store.is_dedicated(scope.key()));
    assert_eq!(tenants_dir(dir.path()), 0, "its file is deleted");
    assert_eq!(answers(&engine, &scope), before);
    assert!(!verify_clean(&engine, &id).dedicated_file);
    migrate(&engine, &id, IsolationLevel::Shared);
    assert_eq!(answers(&engine, &scope), before);
    verify_clean(&engine, &id);
    // The other tenant never noticed.
    assert_eq!(
        answers(&engine, &admin_scope(&engine, "other")),
        other_before
    );
    verify_clean(&engine, &other);
    // Audited in the tenant's log across both files.
    let log = engine
        .own_audit_rows(
            &scope,
            &crate::AuditQuery {
                action: Some("tenant.migrate".into()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(log.len(), 3, "{log:?}");
}

/// Two migrations planned from the same level: the second finds the tenant moved by the
/// first and is refused as a conflict, in either direction, without touching its data.
#[test]
fn a_migration_planned_before_another_moved_the_tenant_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    let op = OperatorScope::for_tests();
    let id = crate::test_support::filled_tenant(&engine, "acme", 50);
    let scope = admin_scope(&engine, "acme");
    let before = answers(&engine, &scope);
    let key = scope.key();
    let profile = |level| {
        let mut p = TenantProfile::of(&engine.tenant_meta(&id).unwrap()).unwrap();
        p.isolation = level;
        p
    };
    let conflict = |from, to| {
        let next = profile(to);
        match engine.move_data(&op, &id, key, from, &next) {
            Err(EngineError::IdConflict(_)) => {}
            other => panic!("expected a conflict, got {other:?}"),
        }
    };

    migrate(&engine, &id, IsolationLevel::Dedicated);
    let status = engine.migration(&op, &id).unwrap();
    // In: planned from `shared` after the tenant moved into its file.
    conflict(IsolationLevel::Shared, IsolationLevel::Dedicated);
    assert!(engine.store.is_dedicated(key));
    assert_eq!(answers(&engine, &scope), before);
    verify_clean(&engine, &id);
    // The refused migration did not replace the status of the one that ran.
    let after = engine.migration(&op, &id).unwrap();
    assert_eq!(after.state, status.state);
    assert_eq!((after.from, after.to), (status.from, status.to));
    assert_eq!(after.started_at, status.started_at);

    migrate(&engine, &id, IsolationLevel::Shared);
    // Out: planned from `dedicated` after the tenant moved back.
    conflict(IsolationLevel::Dedicated, IsolationLevel::Shared);
    assert!(!engine.store.is_dedicated(key));
    assert!(engine.store.main_keys(key).unwrap() > 0);
    assert_eq!(answers(&engine, &scope), before);
    verify_clean(&engine, &id);
    drop(engine);
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    assert_eq!(answers(&engine, &admin_scope(&engine, "acme")), before);
}

#[test]
fn a_tenant_created_dedicated_lives_in_its_own_file_until_purged() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    let op = OperatorScope::for_tests();
    let id = TenantId::parse("big").unwrap();
    engine
        .create_tenant_at(&op, &id, None, IsolationLevel::Dedicated, None)
        .unwrap();
    let scope = admin_scope(&engine, "big");
    assert!(engine.store.is_dedicated(scope.key()));
    engine
        .create_collection(
            &scope,
            &vec_name(),
            crate::test_support::DIM,
            Metric::Cosine,
        )
        .unwrap();
    put_clustered(&engine, &scope, 50);
    assert_eq!(engine.store.main_keys(scope.key()).unwrap(), 0);
    verify_clean(&engine, &id);
    // Creating it again fails and leaves its file alone.
    assert!(matches!(
        engine.create_tenant_at(&op, &id, None, IsolationLevel::Dedicated, None),
        Err(EngineError::TenantExists(_))
    ));
    assert_eq!(tenants_dir(dir.path()), 1);
    assert!(answers(&engine, &scope).iter().all(|a| a.len() == 5));

    engine.purge_tenant(&op, &id).unwrap();
    assert_eq!(tenants_dir(dir.path()), 0);
    assert!(!engine.store.is_dedicated(scope.key()));
}

#[test]
fn start_up_keeps_each_tenant_on_the_side_its_registry_names() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    let op = OperatorScope::for_tests();
    let (a, b) = (TenantId::parse("a").unwrap(), TenantId::parse("b").unwrap());
    engine.create_tenant(&op, &a, None).unwrap();
    engine
        .create_tenant_at(&op, &b, None, IsolationLevel::Dedicated, None)
        .unwrap();
    let (ka, kb) = (
        admin_scope(&engine, "a").key(),
        admin_scope(&engine, "b").key(),
    );
    // What a crash mid-migration leaves: a file for shared `a`, and a partial copy of
    // dedicated `b` in the main file.
    drop(engine.store.create_dedicated(ka).unwrap());
    engine
        .store
        .copy_chunk(kb, CopyTarget::Main, None, 2)
        .unwrap();
    assert!(engine.store.main_keys(kb).unwrap() > 0);
    drop(engine);
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    assert!(!engine.store.has_dedicated_dir(ka));
    assert_eq!(engine.store.main_keys(kb).unwrap(), 0);
    assert!(engine.store.is_dedicated(kb));
    verify_clean(&engine, &a);
    verify_clean(&engine, &b);
}

/// Tenant `id`'s scope, with a collection of 20 records, and its answers.
fn with_records(engine: &Engine, id: &str) -> (strata_auth::TenantScope, Vec<Vec<String>>) {
    let scope = admin_scope(engine, id);
    engine
        .create_collection(
            &scope,
            &vec_name(),
            crate::test_support::DIM,
            Metric::Cosine,
        )
        .unwrap();
    put_clustered(engine, &scope, 20);
    let before = answers(engine, &scope);
    (scope, before)
}

/// What a start must get past: `damaged`'s registry row as bytes that do not decode, and
/// derived files of a key no tenant holds (a crash between a purge and their removal), whose
/// key it returns.
fn leave_damage(engine: &Engine, damaged: &TenantId) -> TenantKey {
    let gone = TenantKey::for_tests(999_999);
    std::fs::create_dir_all(engine.store.derived_dir(gone)).unwrap();
    std::fs::write(engine.store.derived_dir(gone).join("graph"), b"x").unwrap();
    engine
        .store
        .write(|w| w.put_registry_bytes_for_tests(damaged, b"{\"key\":"))
        .unwrap();
    gone
}

/// A start decodes only the registry rows that mention `dedicated` when every tenant
/// directory on disk is one of theirs: the dedicated tenant's file is attached and a partial
/// copy of it in the main file erased, a shared tenant whose row does not decode does not stop
/// the start (no row but the candidates is decoded), and the derived files of a tenant no
/// longer registered are removed.
#[test]
fn a_start_attaches_the_files_of_the_rows_that_mention_dedicated() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    let op = OperatorScope::for_tests();
    let [plain, own, damaged] = ["plain", "own", "damaged"].map(|t| TenantId::parse(t).unwrap());
    engine.create_tenant(&op, &plain, None).unwrap();
    engine.create_tenant(&op, &damaged, None).unwrap();
    engine
        .create_tenant_at(&op, &own, None, IsolationLevel::Dedicated, None)
        .unwrap();
    let (scope, before) = with_records(&engine, "own");
    // What a crash mid-migration out of its file leaves: a partial copy in the main file.
    engine
        .store
        .copy_chunk(scope.key(), CopyTarget::Main, None, 2)
        .unwrap();
    assert!(engine.store.main_keys(scope.key()).unwrap() > 0);
    let gone = leave_damage(&engine, &damaged);
    drop(engine);
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    assert!(engine.store.is_dedicated(scope.key()));
    assert_eq!(engine.store.main_keys(scope.key()).unwrap(), 0);
    assert_eq!(answers(&engine, &scope), before);
    assert!(!engine.store.derived_dir(gone).exists());
    verify_clean(&engine, &plain);
    verify_clean(&engine, &own);
}

/// Without tenant directories a start reads only the rows that could be at `dedicated`, and
/// having found none, the next reads no registry row, until a tenant is made so: the shared
/// tenants serve as before, their derived files are kept, and those of a tenant no longer
/// registered are removed.
#[test]
fn a_start_without_tenant_directories_reads_no_registry_row() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    let op = OperatorScope::for_tests();
    let [plain, damaged] = ["plain", "damaged"].map(|t| TenantId::parse(t).unwrap());
    engine.create_tenant(&op, &plain, None).unwrap();
    engine.create_tenant(&op, &damaged, None).unwrap();
    let (scope, before) = with_records(&engine, "plain");
    std::fs::create_dir_all(engine.store.derived_dir(scope.key())).unwrap();
    let gone = leave_damage(&engine, &damaged);
    drop(engine);
    assert_eq!(tenants_dir(dir.path()), 0);
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    assert!(!engine.store.derived_dir(gone).exists());
    assert!(engine.store.derived_dir(scope.key()).exists());
    assert_eq!(answers(&engine, &scope), before);
    verify_clean(&engine, &plain);
    // That start read the rows that could be at `dedicated` and found none: the next reads
    // none, until a tenant is made so.
    assert!(engine.store.has_no_dedicated_tenants().unwrap());
    drop(engine);
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    assert_eq!(answers(&engine, &scope), before);
    let own = TenantId::parse("own").unwrap();
    engine
        .create_tenant_at(&op, &own, None, IsolationLevel::Dedicated, None)
        .unwrap();
    assert!(!engine.store.has_no_dedicated_tenants().unwrap());
}

/// A dedicated tenant whose file is missing at a start (its directory deleted, or the tenants
/// directory not mounted) fails the start, as before: its tenant must not be served, and
/// written to, from the main file.
#[test]
fn a_start_missing_a_dedicated_tenants_file_fails() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    let own = TenantId::parse("own").unwrap();
    engine
        .create_tenant_at(
            &OperatorScope::for_tests(),
            &own,
            None,
            IsolationLevel::Dedicated,
            None,
        )
        .unwrap();
    drop(engine);
    std::fs::remove_dir_all(dir.path().join(strata_store::TENANTS_DIR)).unwrap();
    assert!(Engine::open(dir.path(), EngineConfig::default()).is_err());
}

fn start(engine: &Engine, id: &TenantId, target: IsolationLevel) -> MigrationJob {
    let (report, job) = engine
        .start_migration(
            &OperatorScope::for_tests(),
            id,
            MigrateRequest {
                target,
                index_params: None,
                dry_run: false,
            },
        )
        .unwrap();
    assert!(report.moves_data);
    job.expect("a data move is handed back as a job")
}

/// The last migration is kept in the tenant's range: a restart reads `interrupted` for one
/// that was running (a crash), `done` for one that ended; a shutdown stops a copy cleanly.
#[test]
fn the_last_migration_survives_a_restart_and_a_shutdown_interrupts_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    let op = OperatorScope::for_tests();
    let id = crate::test_support::filled_tenant(&engine, "acme", 50);
    let scope = admin_scope(&engine, "acme");
    let before = answers(&engine, &scope);
    assert_eq!(
        engine.migration(&op, &id).unwrap().state,
        MigrationState::None
    );

    // Started and never run: what a crash mid-copy leaves.
    let job = start(&engine, &id, IsolationLevel::Dedicated);
    let running = engine.migration(&op, &id).unwrap();
    assert_eq!(running.state, MigrationState::Copying);
    assert!(running.keys_total > 0 && running.finished_at.is_none());
    // The server's list of running moves holds it, with the same status.
    assert_eq!(
        engine.running_migrations(&op).unwrap(),
        [crate::RunningMigration {
            tenant: id.clone(),
            status: running.clone()
        }]
    );
    // A second one is refused while it holds the tenant.
    assert!(matches!(
        engine.start_migration(
            &op,
            &id,
            MigrateRequest {
                target: IsolationLevel::Dedicated,
                index_params: None,
                dry_run: false
            }
        ),
        Err(EngineError::IdConflict(_))
    ));
    // What a crash leaves: the row says running (ended in memory only, so that dropping
    // the job writes nothing).
    job.copy.end(Phase::Failed, None);
    assert_eq!(engine.running_migrations(&op).unwrap(), []);
    drop(job);
    drop(engine);
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    let after_crash = engine.migration(&op, &id).unwrap();
    assert_eq!(after_crash.state, MigrationState::Interrupted);
    assert_eq!(after_crash.level, IsolationLevel::Shared);
    assert_eq!(
        (after_crash.from, after_crash.to),
        (
            Some(IsolationLevel::Shared),
            Some(IsolationLevel::Dedicated)
        )
    );
    assert!(after_crash.error.is_some());
    assert_eq!(tenants_dir(dir.path()), 0);
    verify_clean(&engine, &id);

    // Run to its end in the background, then restarted: `done`.
    let job = start(&engine, &id, IsolationLevel::Dedicated);
    std::thread::scope(|s| s.spawn(|| job.run(&engine)).join().unwrap()).unwrap();
    let done = engine.migration(&op, &id).unwrap();
    assert!(matches!(
        done.state,
        MigrationState::Done | MigrationState::Rebuilding
    ));
    assert!(done.finished_at >= done.started_at && done.keys_copied >= done.keys_total);
    engine.persist_indexes().unwrap();
    drop(engine);
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    let restarted = engine.migration(&op, &id).unwrap();
    assert_eq!(restarted.level, IsolationLevel::Dedicated);
    assert_eq!(
        (
            restarted.from,
            restarted.to,
            restarted.started_at,
            restarted.finished_at
        ),
        (done.from, done.to, done.started_at, done.finished_at)
    );
    assert!(matches!(
        restarted.state,
        MigrationState::Done | MigrationState::Rebuilding
    ));
    verify_clean(&engine, &id);

    // A shutdown stops the next copy before its first chunk: the tenant stays in its file.
    let job = start(&engine, &id, IsolationLevel::Shared);
    assert!(!engine.stop_migrations(std::time::Duration::from_millis(1)));
    assert!(matches!(
        job.run(&engine),
        Err(EngineError::ShuttingDown(_))
    ));
    assert!(engine.stop_migrations(std::time::Duration::from_millis(1)));
    let stopped = engine.migration(&op, &id).unwrap();
    assert_eq!(stopped.state, MigrationState::Interrupted, "{stopped:?}");
    assert!(stopped.finished_at.is_some());
    assert!(engine.store.is_dedicated(scope.key()));
    assert_eq!(engine.store.main_keys(scope.key()).unwrap(), 0);
    assert_eq!(answers(&engine, &scope), before);
    verify_clean(&engine, &id);
    // And none starts any more.
    assert!(matches!(
        engine.start_migration(
            &op,
            &id,
            MigrateRequest {
                target: IsolationLevel::Shared,
                index_params: None,
                dry_run: false
            }
        ),
        Err(EngineError::ShuttingDown(_))
    ));
    drop(engine);

    // A purge erases the row with the tenant's data.
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    let key = admin_scope(&engine, "acme").key();
    engine.purge_tenant(&op, &id).unwrap();
    assert!(
        strata_store::last_migration(&engine.store.read().unwrap(), key)
            .unwrap()
            .is_none()
    );
}

/// A move no write overlaps copies exactly the keys its total counted, the row it writes in
/// the tenant's range as it starts included: on a tenant's first move (no row yet) and on a
/// later one (its row replaced). The status caps the copied count at the total, so the move's
/// own figures are compared.
#[test]
fn a_move_without_concurrent_writes_copies_exactly_its_total() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    let op = OperatorScope::for_tests();
    let id = crate::test_support::filled_tenant(&engine, "acme", 45);
    for target in [IsolationLevel::Dedicated, IsolationLevel::Shared] {
        let job = start(&engine, &id, target);
        let copy = Arc::clone(&job.copy);
        std::thread::scope(|s| s.spawn(|| job.run(&engine)).join().unwrap()).unwrap();
        let copied = copy.copied.load(Ordering::Relaxed);
        assert_eq!(copied, copy.total, "to {target:?}: copied of total");
        let status = engine.migration(&op, &id).unwrap();
        assert_eq!(
            (status.keys_copied, status.keys_total),
            (copied, copied),
            "to {target:?}"
        );
    }
}

/// An import whose export names `dedicated` moves its tenant there once loaded; another
/// tenant's move holding the server's only slot at that moment makes it wait for the slot,
/// not throw away what it loaded.
#[test]
fn an_import_to_dedicated_waits_for_a_move_slot_another_move_holds() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    let op = OperatorScope::for_tests();
    let src = crate::test_support::filled_tenant(&engine, "src", 50);
    let scope = admin_scope(&engine, "src");
    migrate(&engine, &src, IsolationLevel::Dedicated);
    let mut lines = Vec::new();
    engine
        .export_tenant(&op, &src, |l| {
            lines.push(l.clone());
            Ok(())
        })
        .unwrap();

    // Another tenant's move holds the one slot (as a running one would) through the import's
    // load, and ends a moment later.
    let levels = (IsolationLevel::Shared, IsolationLevel::Dedicated);
    let other = TenantId::parse("other").unwrap();
    let holding = engine
        .migrations
        .start(
            TenantKey::for_tests(999_999),
            &other,
            1,
            levels,
            1,
            1,
            || Ok(()),
        )
        .unwrap();
    let copy = TenantId::parse("copy").unwrap();
    let imported = std::thread::scope(|s| {
        let import = s.spawn(|| engine.import_tenant(&op, &copy, lines.into_iter().map(Ok)));
        std::thread::sleep(std::time::Duration::from_millis(300));
        *lock(&holding.phase) = Phase::Done;
        import.join().unwrap()
    });
    let info = imported.unwrap();
    assert_eq!(info.isolation, IsolationLevel::Dedicated);
    assert_eq!(
        answers(&engine, &admin_scope(&engine, "copy")),
        answers(&engine, &scope)
    );
}

/// Verify reads the tenant's profile before its long checks; a move that flips the tenant
/// meanwhile must not be reported as data on the wrong side. The placement is judged on the
/// level read after making sure no move runs.
#[test]
fn placement_is_judged_on_the_level_read_after_a_move_that_ended_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    let id = crate::test_support::filled_tenant(&engine, "acme", 20);
    // What verify read first: the tenant still shared.
    let before = engine.tenant_meta(&id).unwrap();
    start(&engine, &id, IsolationLevel::Dedicated)
        .run(&engine)
        .unwrap();
    let mut report = crate::VerifyReport::empty(&id);
    engine.check_placement(&before, &mut report).unwrap();
    assert_eq!(report.problem_count, 0, "{report:?}");
    assert!(report.dedicated_file);
    verify_clean(&engine, &id);
}
