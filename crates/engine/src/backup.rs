//! Online backups of the whole data directory, started by an operator and run one at a time
//! in the background (`strata_store`'s `backup` module says what the copy holds).
//!
//! A backup is named (its directory under the server's backup directory); this server keeps
//! the progress and outcome of the backups it ran since it started, and answers a name it
//! did not run from the directory: a directory with that name is a whole backup (a partial
//! one has another name until it is complete).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::json;
use strata_auth::OperatorScope;
use strata_store::{BackedUp, BackupProgress, PARTIAL_SUFFIX, bytes_under, partial_dir_of};
#[cfg(test)]
use strata_types::TenantId;
use strata_types::{BackupName, Millis, now_millis};

use crate::audit::AuditEvent;
use crate::{Engine, EngineError};

/// Backups whose outcome this server keeps in memory (the newest); older ones are still
/// answered from their directories.
const KEPT_RUNS: usize = 64;

/// Where a backup is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BackupState {
    /// Copying; the directory has its partial name until it is complete.
    Running,
    /// Complete: the directory holds a data directory a server can start on.
    Done,
    /// Stopped by an error (see `error`); nothing is left under its name.
    Failed,
    /// Cut short by a crash or a kill (a server that did not run it found its partial
    /// directory, `<name>.partial`): no backup; delete that directory to use the name again.
    Interrupted,
}

/// `GET /v1/admin/backups/{name}`: a backup's progress, or how it ended.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct BackupStatus {
    #[schema(value_type = String)]
    pub name: BackupName,
    pub state: BackupState,
    /// The backup's directory, as the server sees it.
    pub path: String,
    /// When this server started it; absent for a backup it did not run (found on disk).
    #[schema(value_type = Option<i64>)]
    pub started_at: Option<Millis>,
    #[schema(value_type = Option<i64>)]
    pub finished_at: Option<Millis>,
    /// Rows of every table of every database file in the backup's snapshot, once taken.
    pub rows_total: Option<u64>,
    /// Rows copied so far.
    pub rows_copied: Option<u64>,
    /// While it runs, the step under way: `snapshot`, `index_files`, `copying` (the rows),
    /// `compacting` (the new files: rows all copied, not yet done) or `syncing`.
    pub phase: Option<String>,
    /// Dedicated tenants' database files in the backup (`done` only).
    pub dedicated_files: Option<u64>,
    /// Derived index files copied (`done` only); one missing is rebuilt on load.
    pub index_files: Option<u64>,
    /// Bytes of the backup's files (`done` only; a backup found on disk: their total now).
    pub bytes: Option<u64>,
    /// Why it failed.
    pub error: Option<String>,
}

/// One backup this server ran.
struct Run {
    name: BackupName,
    path: PathBuf,
    started_at: Millis,
    progress: BackupProgress,
    outcome: Mutex<Option<(Millis, Result<BackedUp, String>)>>,
}

impl Run {
    fn status(&self) -> BackupStatus {
        let outcome = self.outcome.lock().unwrap_or_else(|e| e.into_inner());
        let total = self.progress.rows_total();
        let mut s = BackupStatus {
            name: self.name.clone(),
            state: BackupState::Running,
            path: self.path.display().to_string(),
            started_at: Some(self.started_at),
            finished_at: None,
            rows_total: (total > 0).then_some(total),
            rows_copied: Some(self.progress.rows_copied()),
            phase: Some(self.progress.phase().to_owned()),
            dedicated_files: None,
            index_files: None,
            bytes: None,
            error: None,
        };
        match &*outcome {
            None => {}
            Some((at, Ok(done))) => {
                s.phase = None;
                s.state = BackupState::Done;
                s.finished_at = Some(*at);
                s.dedicated_files = Some(done.dedicated_files);
                s.index_files = Some(done.index_files);
                s.bytes = Some(done.bytes);
            }
            Some((at, Err(e))) => {
                s.phase = None;
                s.state = BackupState::Failed;
                s.finished_at = Some(*at);
                s.error = Some(e.clone());
            }
        }
        s
    }

    /// Whether it ended done and its directory is still there: a failed one left nothing,
    /// and one whose directory the operator deleted is gone; either name may be used again.
    fn ended_well(&self) -> bool {
        matches!(
            &*self.outcome.lock().unwrap_or_else(|e| e.into_inner()),
            Some((_, Ok(_)))
        ) && self.path.symlink_metadata().is_ok()
    }

    /// Whether it ended done and its directory was deleted since.
    fn deleted(&self) -> bool {
        matches!(
            &*self.outcome.lock().unwrap_or_else(|e| e.into_inner()),
            Some((_, Ok(_)))
        ) && self.path.symlink_metadata().is_err()
    }

    fn running(&self) -> bool {
        self.outcome
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
    }
}

/// The backups this server ran, by name, and which one runs.
#[derive(Default)]
pub(crate) struct Backups {
    runs: Mutex<BTreeMap<BackupName, Arc<Run>>>,
}

/// A started backup: run it (on a thread of its own) with [`BackupJob::run`].
pub struct BackupJob {
    run: Arc<Run>,
    actor: String,
    client: Option<String>,
    request_id: Option<String>,
}

/// Checks a backup's name: one path component of its own, never a partial directory's.
fn backup_name(name: &str) -> Result<BackupName, EngineError> {
    let parsed = BackupName::parse(name)?;
    if name.starts_with('.') || name.ends_with(PARTIAL_SUFFIX) {
        return Err(EngineError::BadRequest(format!(
            "name: {name:?} may not start with a dot nor end with {PARTIAL_SUFFIX}; pick \
             another"
        )));
    }
    Ok(parsed)
}

/// A name from the time, for a backup started without one: `2026-12-03T12-30-05.123Z`.
fn name_from_time(at: Millis) -> BackupName {
    let secs = at.div_euclid(1000);
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    let text = format!(
        "{y:04}-{m:02}-{d:02}T{:02}-{:02}-{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        at.rem_euclid(1000)
    );
    BackupName::parse(text).expect("invariant: a time's text is a valid name")
}

/// The civil date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Refuses a backup directory inside the data directory: the server's start-up would take a
/// backup under `tenants/` for an orphan tenant's file and delete it, and a copy of the data
/// directory would copy the backups too.
pub fn check_backup_dir(dir: &Path, data_dir: &Path) -> Result<(), EngineError> {
    let not_a_dir = |at: PathBuf| {
        EngineError::IdConflict(format!(
            "the backup directory {}: {} is not a directory; set server.backup_dir to a \
             directory (created when missing)",
            dir.display(),
            at.display()
        ))
    };
    // A data directory not made yet resolves by its names, as the backup directory does.
    let data = resolve(data_dir)?.unwrap_or_else(|at| at);
    let at = resolve(dir)?.map_err(not_a_dir)?;
    if at.starts_with(&data) {
        return Err(EngineError::IdConflict(format!(
            "the backup directory {} is inside the data directory {}; set server.backup_dir \
             outside it (best on another disk)",
            dir.display(),
            data_dir.display()
        )));
    }
    Ok(())
}

/// Where `path` leads, resolved component by component as the kernel would: what exists
/// through its symbolic links, the rest (which `create_dir_all` would make) by its names.
/// `Err(at)` when it leads through `at`, which is not a directory (a file, a broken link).
fn resolve(path: &Path) -> Result<Result<PathBuf, PathBuf>, EngineError> {
    use std::path::Component;
    let start = if path.is_absolute() {
        PathBuf::from("/")
    } else {
        std::env::current_dir().map_err(|e| {
            EngineError::Store(strata_store::StoreError::Io {
                path: ".".into(),
                source: e,
            })
        })?
    };
    let mut at = start.canonicalize().unwrap_or(start);
    for part in path.components() {
        match part {
            Component::Prefix(_) | Component::RootDir => at = PathBuf::from("/"),
            Component::CurDir => {}
            Component::ParentDir => {
                at.pop();
            }
            Component::Normal(name) => {
                at.push(name);
                if at.symlink_metadata().is_ok() {
                    at = match at.canonicalize() {
                        Ok(real) if real.is_dir() => real,
                        _ => return Ok(Err(at)),
                    };
                }
            }
        }
    }
    Ok(Ok(at))
}

fn not_found() -> EngineError {
    EngineError::NotFound
}

impl Engine {
    /// Starts a backup of the whole data directory into `dir/<name>` (`name` absent: the
    /// time). One runs at a time: another while it runs, or a name already taken (a backup,
    /// or a partial one a crash left), is `IdConflict`. Returns its status, and the job to
    /// run; nothing is copied until [`BackupJob::run`].
    pub fn start_backup(
        &self,
        op: &OperatorScope,
        dir: &Path,
        name: Option<&str>,
    ) -> Result<(BackupStatus, BackupJob), EngineError> {
        if self.migrations.stopping() {
            return Err(EngineError::ShuttingDown(
                "the server is shutting down; back up after it restarts".into(),
            ));
        }
        let started_at = now_millis();
        let name = match name {
            Some(n) => backup_name(n)?,
            None => name_from_time(started_at),
        };
        let path = dir.join(name.as_str());
        let mut runs = self.backups.runs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(running) = runs.values().find(|r| r.running()) {
            return Err(EngineError::IdConflict(format!(
                "backup {} is running; one runs at a time",
                running.name
            )));
        }
        if runs.get(&name).is_some_and(|r| r.ended_well()) {
            return Err(EngineError::IdConflict(format!(
                "backup {name} was taken already; pick another name"
            )));
        }
        for taken in [path.clone(), partial_dir_of(&path)] {
            if taken.symlink_metadata().is_ok() {
                return Err(EngineError::IdConflict(format!(
                    "backup {name}: {} already exists; pick another name",
                    taken.display()
                )));
            }
        }
        check_backup_dir(dir, self.store.data_dir())?;
        let run = Arc::new(Run {
            name: name.clone(),
            path,
            started_at,
            progress: BackupProgress::default(),
            outcome: Mutex::new(None),
        });
        if runs.len() >= KEPT_RUNS
            && let Some(oldest) = runs
                .values()
                .min_by_key(|r| r.started_at)
                .map(|r| r.name.clone())
        {
            runs.remove(&oldest);
        }
        runs.insert(name, Arc::clone(&run));
        drop(runs);
        Ok((
            run.status(),
            BackupJob {
                run,
                actor: op.actor().to_owned(),
                client: op.context().client.clone(),
                request_id: op.context().request_id.clone(),
            },
        ))
    }

    /// A backup's status: one this server ran (running or ended; one whose directory was
    /// deleted since is `NotFound`), else one found complete in `dir`, else one a crash cut
    /// short (its partial directory left: `interrupted`).
    pub fn backup_status(
        &self,
        _op: &OperatorScope,
        dir: &Path,
        name: &str,
    ) -> Result<BackupStatus, EngineError> {
        let name = backup_name(name).map_err(|_| not_found())?;
        if let Some(run) = self
            .backups
            .runs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&name)
            .filter(|run| !run.deleted())
        {
            return Ok(run.status());
        }
        let path = dir.join(name.as_str());
        let partial = partial_dir_of(&path);
        let (state, error) = if path.join(crate::DB_FILE).is_file() {
            (BackupState::Done, None)
        } else if partial.symlink_metadata().is_ok() {
            let why = format!(
                "cut short by a crash or a kill; {} holds its partial copy, which is no backup: \
                 delete it to use the name again",
                partial.display()
            );
            (BackupState::Interrupted, Some(why))
        } else {
            return Err(not_found());
        };
        Ok(BackupStatus {
            name,
            state,
            path: path.display().to_string(),
            started_at: None,
            finished_at: None,
            rows_total: None,
            rows_copied: None,
            phase: None,
            dedicated_files: None,
            index_files: None,
            bytes: (state == BackupState::Done).then(|| bytes_under(&path)),
            error,
        })
    }
}

/// A backup's failure as its status says it: the store's errors name the data directory,
/// but a backup's I/O is mostly in the backup directory, whose path they carry.
fn backup_failure(e: strata_store::StoreError) -> String {
    use strata_store::StoreError;
    match e {
        StoreError::Io { path, source } => format!("{path}: {source}"),
        StoreError::Unavailable(why) => {
            why.replace("the data directory's disk", "the backup directory's disk")
        }
        other => other.to_string(),
    }
}

impl std::fmt::Debug for BackupJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupJob")
            .field("name", &self.run.name)
            .finish_non_exhaustive()
    }
}

impl BackupJob {
    /// Copies the data directory (see the module's documentation) and records the outcome,
    /// in the status and in the server's audit log (`backup.create`). Returns the status
    /// at its end; a failure is in it, not an error.
    pub fn run(self, engine: &Engine) -> BackupStatus {
        let run = &self.run;
        let stopping = || {
            if engine.migrations.stopping() {
                Err(strata_store::StoreError::Engine(
                    "the server shut down during the backup; take it again once it is back".into(),
                ))
            } else {
                Ok(())
            }
        };
        // A panic in the copy must not leave the run `running` for the server's life (every
        // later backup refused): it ends the run failed, its partial copy removed.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            engine.store.backup(&run.path, &run.progress, &stopping)
        }))
        .unwrap_or_else(|_| {
            let partial = partial_dir_of(&run.path);
            let _ = std::fs::remove_dir_all(&partial);
            Err(strata_store::StoreError::Engine(
                "the backup stopped on an internal error (see the server's log)".into(),
            ))
        })
        .map_err(backup_failure);
        if let Err(e) = &outcome {
            tracing::warn!(backup = %run.name, path = %run.path.display(), error = %e, "backup failed");
        }
        let event = AuditEvent {
            tenant: None,
            actor: self.actor.clone(),
            action: "backup.create".into(),
            outcome: if outcome.is_ok() { "ok" } else { "error" }.into(),
            client: self.client.clone(),
            request_id: self.request_id.clone(),
            detail: json!({
                "name": run.name.as_str(),
                "path": run.path.display().to_string(),
                "error": outcome.as_ref().err(),
            }),
        };
        *run.outcome.lock().unwrap_or_else(|e| e.into_inner()) = Some((now_millis(), outcome));
        if let Err(e) = engine.record_audit(event) {
            tracing::warn!(backup = %run.name, error = %e, "backup: its audit row was not written");
        }
        run.status()
    }

    pub fn name(&self) -> &BackupName {
        &self.run.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AuditQuery;

    /// One backup at a time; a name is used once; the status follows the run, is answered
    /// from the directory by a server that did not run it, and the run is audited.
    #[test]
    fn backups_run_one_at_a_time_under_names_used_once() {
        let (dir, engine, _scope) = crate::test_support::engine_with_tenant("acme");
        let op = OperatorScope::for_tests();
        let outside = tempfile::tempdir().unwrap();
        let backups = outside.path().join("backups");
        let (status, job) = engine.start_backup(&op, &backups, Some("b1")).unwrap();
        assert_eq!(status.state, BackupState::Running);
        let busy = engine.start_backup(&op, &backups, Some("b2"));
        assert!(
            matches!(&busy, Err(EngineError::IdConflict(m)) if m.contains("b1 is running")),
            "{busy:?}"
        );
        let done = job.run(&engine);
        assert_eq!(done.state, BackupState::Done, "{done:?}");
        assert_eq!(done.rows_copied, done.rows_total);
        assert!(done.bytes.unwrap() > 0);
        assert_eq!(engine.backup_status(&op, &backups, "b1").unwrap(), done);
        let again = engine.start_backup(&op, &backups, Some("b1"));
        assert!(
            matches!(again, Err(EngineError::IdConflict(_))),
            "{again:?}"
        );
        assert!(matches!(
            engine.start_backup(&op, &backups, Some("x.partial")),
            Err(EngineError::BadRequest(_))
        ));
        assert!(matches!(
            engine.backup_status(&op, &backups, "never"),
            Err(EngineError::NotFound)
        ));
        // Without a name: the time's.
        let (unnamed, job) = engine.start_backup(&op, &backups, None).unwrap();
        assert!(unnamed.name.as_str().ends_with('Z'), "{:?}", unnamed.name);
        assert_eq!(job.run(&engine).state, BackupState::Done);

        let rows = engine
            .audit_rows(
                &op,
                &AuditQuery {
                    action: Some("backup.create".into()),
                    ..AuditQuery::default()
                },
            )
            .unwrap();
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert!(rows.iter().all(|r| r.outcome == "ok" && r.tenant.is_none()));
        drop(engine);

        // Another server on the same directories knows b1 from its directory only.
        let engine = Engine::open(dir.path(), crate::EngineConfig::default()).unwrap();
        let found = engine.backup_status(&op, &backups, "b1").unwrap();
        assert_eq!((found.state, found.started_at), (BackupState::Done, None));
        drop(engine);
        // And the backup is a data directory a server starts on.
        let restored = Engine::open(&backups.join("b1"), crate::EngineConfig::default()).unwrap();
        let acme = TenantId::parse("acme").unwrap();
        assert!(restored.tenant_meta(&acme).is_ok());
    }

    /// A shutdown stops a backup at its next chunk (it ends failed, nothing left under its
    /// name) and refuses new ones.
    #[test]
    fn a_shutdown_stops_a_backup_and_refuses_the_next() {
        let (_dir, engine, _scope) = crate::test_support::engine_with_tenant("acme");
        let op = OperatorScope::for_tests();
        let outside = tempfile::tempdir().unwrap();
        let backups = outside.path().join("backups");
        let (_, job) = engine.start_backup(&op, &backups, Some("b1")).unwrap();
        assert!(engine.stop_migrations(std::time::Duration::ZERO));
        let ended = job.run(&engine);
        assert_eq!(ended.state, BackupState::Failed, "{ended:?}");
        assert!(
            ended.error.as_deref().unwrap().contains("shut down"),
            "{ended:?}"
        );
        assert!(!backups.join("b1").exists() && !backups.join("b1.partial").exists());
        assert!(matches!(
            engine.start_backup(&op, &backups, Some("b2")),
            Err(EngineError::ShuttingDown(_))
        ));
    }

    /// A failed backup's name may be used again; a backup directory inside the data
    /// directory is refused, however it is spelled.
    #[test]
    fn a_failed_name_is_free_and_the_data_directory_is_no_place_for_backups() {
        let (dir, engine, _scope) = crate::test_support::engine_with_tenant("acme");
        let op = OperatorScope::for_tests();
        let outside = tempfile::tempdir().unwrap();
        let backups = outside.path().join("backups");
        let (_, job) = engine.start_backup(&op, &backups, Some("b1")).unwrap();
        let run = Arc::clone(&job.run);
        drop(job);
        *run.outcome.lock().unwrap() = Some((now_millis(), Err("disk full".into())));
        let (_, job) = engine.start_backup(&op, &backups, Some("b1")).unwrap();
        assert_eq!(job.run(&engine).state, BackupState::Done);
        // A backup the operator deleted is gone, and its name free.
        std::fs::remove_dir_all(backups.join("b1")).unwrap();
        assert!(matches!(
            engine.backup_status(&op, &backups, "b1"),
            Err(EngineError::NotFound)
        ));
        let (_, job) = engine.start_backup(&op, &backups, Some("b1")).unwrap();
        assert_eq!(job.run(&engine).state, BackupState::Done);
        // What a crash left is told as such, and holds its name until deleted.
        std::fs::create_dir(backups.join("b9.partial")).unwrap();
        let cut = engine.backup_status(&op, &backups, "b9").unwrap();
        assert_eq!(cut.state, BackupState::Interrupted, "{cut:?}");
        assert!(cut.error.unwrap().contains("b9.partial"));
        assert!(matches!(
            engine.start_backup(&op, &backups, Some("b9")),
            Err(EngineError::IdConflict(_))
        ));
        // A file is no backup directory, nor the way to one, nor a link that leads nowhere.
        std::fs::write(outside.path().join("file"), b"x").unwrap();
        std::os::unix::fs::symlink(outside.path().join("gone"), outside.path().join("dangling"))
            .unwrap();
        for bad in [
            outside.path().join("file"),
            outside.path().join("file").join("sub"),
            outside.path().join("dangling"),
        ] {
            assert!(
                matches!(
                    engine.start_backup(&op, &bad, Some("b2")),
                    Err(EngineError::IdConflict(m)) if m.contains("not a directory")
                ),
                "{bad:?}"
            );
        }

        // A data directory not made yet, named relatively, is resolved by its names too.
        let cwd = std::env::current_dir().unwrap();
        let not_yet = cwd.join("strata-test-no-such-data-dir");
        assert!(!not_yet.exists());
        assert!(matches!(
            check_backup_dir(
                &not_yet.join("backups"),
                Path::new("./strata-test-no-such-data-dir")
            ),
            Err(EngineError::IdConflict(m)) if m.contains("inside the data directory")
        ));
        assert!(check_backup_dir(&not_yet, Path::new("./strata-test-no-such-data-dir/x")).is_ok());

        for inside in [
            dir.path().to_path_buf(),
            dir.path().join("tenants"),
            dir.path().join("x").join("..").join("indexes").join("deep"),
            outside
                .path()
                .join("nowhere")
                .join("..")
                .join("..")
                .join(dir.path().file_name().unwrap())
                .join("bk"),
        ] {
            let refused = engine.start_backup(&op, &inside, Some("b2"));
            assert!(
                matches!(&refused, Err(EngineError::IdConflict(m)) if m.contains("inside the data directory")),
                "{inside:?}: {refused:?}"
            );
        }
    }

    #[test]
    fn a_time_names_a_backup_in_utc() {
        assert_eq!(name_from_time(0).as_str(), "1970-01-01T00-00-00.000Z");
        assert_eq!(
            name_from_time(1_796_300_405_123).as_str(),
            "2026-12-03T12-20-05.123Z"
        );
        assert_eq!(
            name_from_time(951_782_400_000).as_str(),
            "2000-02-29T00-00-00.000Z"
        );
    }

    #[test]
    fn a_backup_name_is_one_plain_path_component() {
        for bad in [
            "",
            ".",
            "..",
            "...",
            ".hidden",
            "a/b",
            "x.partial",
            "a b",
            &"n".repeat(65),
        ] {
            assert!(backup_name(bad).is_err(), "{bad:?}");
        }
        for good in ["nightly", "2026-12-03", "v1.2_b"] {
            assert_eq!(backup_name(good).unwrap().as_str(), good);
        }
    }
}
