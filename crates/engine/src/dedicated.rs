//! The `dedicated` isolation level: a tenant whose data lives in its own storage file (see
//! `strata_store`'s placement), and online migration of a tenant's data into and out of it.
//!
//! A migration copies the tenant's key range in chunks while the tenant is served from where
//! it is (reads and writes go on), then holds the tenant's write order only for the flip: a
//! catch-up of what changed since the copy began, plus the registry change, in one main-file
//! transaction (see `Store::flip_in` / `Store::flip_out`). The store records the keys the
//! tenant writes from the copy's start (`Store::track_writes`), so the catch-up, and with it
//! the pause of every writer of the main file, grows with the writes made during the copy,
//! not with the tenant's size. The data is copied byte for byte,
//! so the loaded indexes, saved snapshots and search images (matched by the data version
//! stored in the range) stay valid. After a crash the tenant is whole on the side its registry
//! entry names; [`attach_files`] removes what a migration left on the other side.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use strata_auth::OperatorScope;
use strata_store::{CopyTarget, Reads, Store, TenantKey};
use strata_types::{Millis, TenantId};

use crate::isolation::IsolationLevel;
use crate::lifecycle::TenantProfile;
use crate::registry::lock;
use crate::{Engine, EngineError};

/// Keys copied per chunk: each chunk is one short transaction on each side, so the tenant's
/// own writes interleave with the copy.
const CHUNK_KEYS: usize = 1_000;

/// Opens the file of every tenant registered at `dedicated` and routes to it, then removes
/// what an interrupted migration, creation or purge left behind: files of tenants that are not
/// dedicated, and main-file keys of tenants that are. Runs at start, before any request.
///
/// Decoding every registry row made the start take time in proportion to the tenants on disk
/// (0.45 s at 100,000). So: when the last start found no tenant at `dedicated` and no commit
/// has made one so since (a mark in the main file), and no tenant directory is on disk, no row
/// is read; otherwise only the rows that mention `dedicated` (a profile at that level holds
/// the word) are decoded, and when every directory belongs to a tenant so found nothing else is
/// left to remove. Anything else (a leftover directory, a retired file's tombstone, a candidate
/// row that does not decode) reads every row, as [`attach_files_scanning`] says.
pub(crate) fn attach_files(store: &Store) -> Result<(), EngineError> {
    let (dirs, tombstones) = store.tenant_dirs()?;
    // The last start found no tenant at `dedicated`, and no commit has made one so since: no
    // row needs reading. Judged by the mark in the main file, not by the directories on disk
    // (a tenants directory missing or unmounted must fail the start, as a dedicated tenant's
    // missing file does below, not route its tenants to the main file).
    if dirs.is_empty() && !tombstones && store.has_no_dedicated_tenants()? {
        remove_orphan_derived(store);
        return Ok(());
    }
    let mut dedicated = Vec::new();
    for (_, row) in store.rows_marked(strata_store::RowMark::Dedicated)? {
        let Ok(meta) = row else {
            return attach_files_scanning(store);
        };
        match TenantProfile::of(&meta).map(|p| p.isolation) {
            Ok(IsolationLevel::Dedicated) => dedicated.push(meta.key),
            Ok(_) => {}
            Err(_) => return attach_files_scanning(store),
        }
    }
    let found: HashSet<TenantKey> = dedicated.iter().copied().collect();
    if tombstones || dirs.iter().any(|k| !found.contains(k)) {
        return attach_files_scanning(store);
    }
    if dedicated.is_empty() && dirs.is_empty() && !tombstones {
        store.note_no_dedicated_tenants()?;
    }
    for key in dedicated {
        store.attach_dedicated(key)?;
        store.erase_main_range(key)?;
    }
    remove_orphan_derived(store);
    Ok(())
}

/// Removes the derived files of tenants no longer registered (a crash between a purge and its
/// removal of them): a registered tenant has its usage row, in its own file once attached,
/// until its erasure, so a tenant whose erasure is owed counts as gone. The look-ups are of
/// the tenants with derived files alone. Only rebuilds are at stake: a failure is logged and
/// does not stop the start.
fn remove_orphan_derived(store: &Store) {
    let registered = (|| -> Result<HashSet<TenantKey>, EngineError> {
        let owed: HashSet<TenantKey> = store.owed_erasures()?.keys.into_iter().collect();
        let r = store.read()?;
        let mut registered = HashSet::new();
        for key in store.derived_keys()? {
            if !owed.contains(&key) && r.blob(key, crate::lifecycle::USAGE_BLOB)?.is_some() {
                registered.insert(key);
            }
        }
        Ok(registered)
    })();
    match registered {
        Ok(registered) => drop(store.remove_orphan_derived(&registered)),
        Err(e) => {
            tracing::warn!(error = %e, "start: derived files of purged tenants not looked for")
        }
    }
}

/// [`attach_files`] reading every registry row: a registry entry that does not decode must not
/// stop the start (that tenant's operations are refused, the others serve) nor lose its data:
/// its file, if it has one, is opened, and when a row does not even yield its storage key
/// nothing is deleted at all.
fn attach_files_scanning(store: &Store) -> Result<(), EngineError> {
    let mut keep = HashSet::new();
    let mut dedicated = Vec::new();
    let mut all_known = true;
    // Every registered tenant: derived files of any other are a purge's leftovers.
    let mut registered = HashSet::new();
    for (_, row) in store.read()?.tenants_page(None, usize::MAX)? {
        let Ok(meta) = row else {
            all_known = false;
            continue;
        };
        registered.insert(meta.key);
        match TenantProfile::of(&meta).map(|p| p.isolation) {
            Ok(IsolationLevel::Dedicated) => dedicated.push(meta.key),
            Ok(_) => {}
            // Undecidable: keep whichever side it has; its requests fail as corrupt anyway.
            Err(_) if store.has_dedicated_dir(meta.key) => {
                store.attach_dedicated(meta.key)?;
                keep.insert(meta.key);
            }
            Err(_) => {}
        }
    }
    for key in dedicated {
        store.attach_dedicated(key)?;
        keep.insert(key);
        store.erase_main_range(key)?;
    }
    if all_known {
        store.remove_orphan_files(&keep)?;
        // Derived files only save rebuilds: failing to remove them must not stop the start.
        let _ = store.remove_orphan_derived(&registered);
    }
    Ok(())
}

/// The error of a data move that an operator cancelled before its flip.
fn cancelled(from: IsolationLevel) -> EngineError {
    EngineError::IdConflict(cancelled_error(from))
}

pub(crate) fn cancelled_error(from: IsolationLevel) -> String {
    format!(
        "the migration was cancelled by an operator before its flip; the tenant stayed at {}",
        level_name(from)
    )
}

/// A level as the API spells it, for error messages.
pub(crate) fn level_name(level: IsolationLevel) -> String {
    serde_json::to_value(level)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{level:?}"))
}

/// Where a data migration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Copying,
    CatchingUp,
    /// Flipped (the tenant is at its new level); the old side is being removed, with the
    /// tenant's migration slot still held.
    CleaningUp,
    Done,
    Failed,
    /// Stopped by a server shutdown before its flip.
    Interrupted,
    /// Stopped by an operator before its flip (`Engine::cancel_migration`).
    Cancelled,
}

impl Phase {
    /// Whether the move still holds the tenant's migration slot.
    pub fn running(self) -> bool {
        matches!(self, Phase::Copying | Phase::CatchingUp | Phase::CleaningUp)
    }
}

/// The progress of one tenant's data migration.
pub(crate) struct DataMove {
    /// The tenant moving, as named when its move started.
    pub tenant: TenantId,
    pub phase: Mutex<Phase>,
    pub copied: AtomicU64,
    pub total: u64,
    pub error: Mutex<Option<String>>,
    pub from: IsolationLevel,
    pub to: IsolationLevel,
    pub started_at: Millis,
    /// Set (with `phase` locked, while `Copying`) by an operator's cancel: the copy stops at
    /// its next chunk, and the move checks it (with `phase` locked) before its flip.
    pub cancel: AtomicBool,
    /// Which run of the move this is (see `StoredMigration::attempt`).
    pub attempt: u8,
}

impl DataMove {
    pub fn running(&self) -> bool {
        lock(&self.phase).running()
    }

    /// Ends the move in `phase` (with `error`, if any), unless it has ended already.
    pub(crate) fn end(&self, phase: Phase, error: Option<String>) {
        let mut now = lock(&self.phase);
        if now.running() {
            if error.is_some() {
                *lock(&self.error) = error;
            }
            *now = phase;
        }
    }
}

/// Data migrations since start, by tenant, and the copy rate they measured.
#[derive(Default)]
pub(crate) struct Copies {
    by_tenant: Mutex<HashMap<TenantKey, Arc<DataMove>>>,
    /// Bytes per second of the last finished data migration, for dry-run estimates.
    bytes_per_sec: Mutex<Option<f64>>,
    /// Set by [`Engine::stop_migrations`] (server shutdown): copies stop at their next chunk
    /// and no new one starts.
    stopping: AtomicBool,
    /// Moves registered (see [`Copies::started`]).
    started: AtomicU64,
}

impl Copies {
    /// Whether a data migration of any tenant is copying or flipping now.
    fn any_running(&self) -> bool {
        lock(&self.by_tenant).values().any(|c| c.running())
    }

    /// Forgets the move of `key` (the tenant was purged, or its move ended and is recorded in
    /// its row): the map holds only what the stored rows cannot say.
    pub fn forget(&self, key: TenantKey, copy: Option<&Arc<DataMove>>) {
        let mut map = lock(&self.by_tenant);
        if let Some(c) = map.get(&key)
            && !c.running()
            && copy.is_none_or(|copy| Arc::ptr_eq(c, copy))
        {
            map.remove(&key);
        }
    }

    /// Whether a server shutdown has stopped data moves (none starts any more).
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Whether a data move of tenant `key` could start now: none of it runs and fewer than
    /// `max_moves` run on the server. A cheap look (one lock) for a caller that waits for a
    /// slot; `start` decides.
    pub fn slot_free(&self, key: TenantKey, max_moves: usize) -> bool {
        let map = lock(&self.by_tenant);
        !map.get(&key).is_some_and(|c| c.running())
            && map.values().filter(|c| c.running()).count() < max_moves.max(1)
    }

    /// How many moves have been registered since the engine opened: a reader that saw no
    /// move running, and this count unchanged after its reads, read no move's work.
    pub fn started(&self) -> u64 {
        self.started.load(Ordering::SeqCst)
    }

    /// The tenants whose data moves now, by name.
    pub fn running(&self) -> Vec<TenantId> {
        let mut running: Vec<TenantId> = lock(&self.by_tenant)
            .values()
            .filter(|c| c.running())
            .map(|c| c.tenant.clone())
            .collect();
        running.sort();
        running
    }

    pub fn get(&self, key: TenantKey) -> Option<Arc<DataMove>> {
        lock(&self.by_tenant).get(&key).cloned()
    }

    pub fn bytes_per_sec(&self) -> Option<f64> {
        *lock(&self.bytes_per_sec)
    }

    /// Runs `f` (a purge of the tenant, or a level change that moves no data) unless a data
    /// migration of the tenant is running (`409`), holding the map's lock throughout so that
    /// none starts meanwhile: a migration copying keys while the tenant is erased could leave
    /// some of them behind, and a level or parameter change committed during a move would be
    /// overwritten by its flip.
    pub fn excluding<R>(
        &self,
        key: TenantKey,
        id: &TenantId,
        f: impl FnOnce() -> Result<R, EngineError>,
    ) -> Result<R, EngineError> {
        let map = lock(&self.by_tenant);
        if let Some(c) = map.get(&key)
            && c.running()
        {
            return Err(EngineError::IdConflict(format!(
                "tenant {id}: a migration is moving its data; try again once it has ended \
                 (GET /v1/admin/tenants/{id}/migration)"
            )));
        }
        let r = f();
        drop(map);
        r
    }

    /// Registers a new migration; refused while another one of the tenant is running, while
    /// `max_moves` data moves run on the server, or if `still_valid` (run once no other one
    /// is) fails: a migration that finished since the caller planned may have moved the
    /// tenant already.
    #[allow(clippy::too_many_arguments)] // One private entry, one caller (`start_data_move`).
    fn start(
        &self,
        key: TenantKey,
        id: &TenantId,
        total: u64,
        levels: (IsolationLevel, IsolationLevel),
        max_moves: usize,
        attempt: u8,
        still_valid: impl FnOnce() -> Result<(), EngineError>,
    ) -> Result<Arc<DataMove>, EngineError> {
        let mut map = lock(&self.by_tenant);
        if self.stopping.load(Ordering::SeqCst) {
            return Err(EngineError::ShuttingDown(
                "the server is shutting down; migrate after it restarts".into(),
            ));
        }
        if let Some(c) = map.get(&key)
            && c.running()
        {
            return Err(EngineError::IdConflict(format!(
                "tenant {id}: a migration is already running"
            )));
        }
        let running = map.values().filter(|c| c.running()).count();
        if running >= max_moves.max(1) {
            return Err(EngineError::MoveSlotsBusy(format!(
                "{running} data move(s) already running on this server (the limit, \
                 engine.isolation.max_concurrent_moves, is {}); try again once one has ended",
                max_moves.max(1)
            )));
        }
        // Under the map's lock: no other migration of the tenant can start, and every earlier
        // one has flipped (or failed) before it left the running phases.
        still_valid()?;
        let copy = Arc::new(DataMove {
            tenant: id.clone(),
            phase: Mutex::new(Phase::Copying),
            copied: AtomicU64::new(0),
            total,
            error: Mutex::new(None),
            from: levels.0,
            to: levels.1,
            started_at: strata_types::now_millis(),
            cancel: AtomicBool::new(false),
            attempt,
        });
        map.insert(key, Arc::clone(&copy));
        self.started.fetch_add(1, Ordering::SeqCst);
        Ok(copy)
    }
}

/// A data migration that has been checked, registered (a second one of the tenant is refused
/// until it ends) and recorded as running in the tenant's last-migration row, and is waiting
/// to be run: [`MigrationJob::run`] copies, flips and records the outcome. The API runs it on
/// a thread of its own and answers `202 Accepted` at once, or waits for it.
pub struct MigrationJob {
    op: OperatorScope,
    id: TenantId,
    key: TenantKey,
    next: TenantProfile,
    /// Whether its row keeps the graph parameters it lands with: only when they differ from
    /// the tenant's stored ones, which a resumed move otherwise lands with anyway. So a move
    /// that changes none writes a row of format 2, which the binary before format 3 reads.
    keep_params: bool,
    pub(crate) copy: Arc<DataMove>,
    /// Bytes of the range when the copy began, for the copy rate.
    bytes: u64,
    /// To record the outcome of a job dropped before it ended.
    store: Arc<Store>,
}

impl MigrationJob {
    /// The graph parameters its row keeps (see `keep_params`).
    fn row_params(&self) -> Option<strata_store::StoredIndexParams> {
        self.keep_params
            .then(|| crate::migration_status::stored_params(self.next.index_params))
    }

    /// Copies the tenant's data, flips it to its new level and records the outcome (also in
    /// its last-migration row); returns the keys caught up in the flip. A server shutdown
    /// under way stops the copy at its next chunk (`EngineError::ShuttingDown`), leaving the
    /// tenant whole where it was.
    pub fn run(self, engine: &Engine) -> Result<u64, EngineError> {
        engine.run_data_move(&self)
    }
}

impl Drop for MigrationJob {
    /// A job dropped before it ended (never run, or unwinding from a panic) must not hold the
    /// tenant's migration slot forever: it is marked failed, in memory and (best effort) in
    /// its row. Nothing routes to a partial copy before the flip, and the next start removes
    /// what it left.
    fn drop(&mut self) {
        if !self.copy.running() {
            return;
        }
        let error = if std::thread::panicking() {
            "the migration stopped on an internal error (a panic) before it ended"
        } else {
            "the migration was never run"
        };
        let row = crate::migration_status::row(
            &self.copy,
            self.row_params(),
            Some(strata_store::StoredMigrationState::Failed),
            Some(error.into()),
        );
        let (id, key) = (&self.id, self.key);
        let recorded = self.store.write(|w| {
            if w.tenant(id)?.is_some_and(|m| m.key == key) {
                w.put_last_migration(key, &row)?;
            }
            Ok::<_, EngineError>(())
        });
        let error = match recorded {
            Ok(()) => error.to_owned(),
            Err(e) => format!("{error} (recording it failed: {e})"),
        };
        self.copy.end(Phase::Failed, Some(error));
    }
}

impl Engine {
    /// Moves tenant `id`'s data into its own file (`next` is `dedicated`) or out of it, then
    /// commits `next` as its profile in the same flip. Blocks until done; reads and writes of
    /// the tenant go on meanwhile except during the flip. Returns the keys caught up there.
    #[cfg(test)]
    pub(crate) fn move_data(
        &self,
        op: &OperatorScope,
        id: &TenantId,
        key: TenantKey,
        from: IsolationLevel,
        next: &TenantProfile,
    ) -> Result<u64, EngineError> {
        let size = self.store.range_size(key)?;
        self.start_data_move(op, id, key, from, next, size, 1, || Ok(()))?
            .run(self)
    }

    /// Checks and registers a data move of tenant `id` and records it as running (see
    /// [`MigrationJob`]). `from` is the level the caller planned from; if the stored level or
    /// the placement no longer match it (another migration moved the tenant since), this is
    /// refused as a conflict before anything is touched, and so it is if `still_valid` (run
    /// with the migration slots locked, after that check) fails. `attempt` is 1 for a move
    /// asked for, one more for each resumption of it.
    #[allow(clippy::too_many_arguments)] // One private entry, two callers.
    pub(crate) fn start_data_move(
        &self,
        op: &OperatorScope,
        id: &TenantId,
        key: TenantKey,
        from: IsolationLevel,
        next: &TenantProfile,
        size: strata_store::RangeSize,
        attempt: u8,
        still_valid: impl FnOnce() -> Result<(), EngineError>,
    ) -> Result<MigrationJob, EngineError> {
        let max_moves = self.config.isolation.max_concurrent_moves;
        let mut stored_params = None;
        // The total counts the row this move writes below as its copy will: done equals the
        // total at the end of a move no write overlapped.
        let copy = self.migrations.start(
            key,
            id,
            size.keys_to_move(),
            (from, next.isolation),
            max_moves,
            attempt,
            || {
                stored_params = self.check_level(id, key, from)?;
                still_valid()
            },
        )?;
        let job = MigrationJob {
            op: op.clone(),
            id: id.clone(),
            key,
            next: next.clone(),
            keep_params: next.index_params != stored_params,
            copy,
            bytes: size.bytes,
            store: Arc::clone(&self.store),
        };
        // Recorded while the job holds the tenant's migration slot (a purge waits for it), so
        // a restart after a crash from here on finds a running row and says `interrupted`.
        let row = crate::migration_status::row(&job.copy, job.row_params(), None, None);
        self.store.write(|w| {
            match w.tenant(id)? {
                Some(meta) if meta.key == key => {}
                _ => return Err(EngineError::TenantNotFound(id.clone())),
            }
            w.put_last_migration(key, &row)?;
            Ok::<_, EngineError>(())
        })?;
        Ok(job)
    }

    /// Runs a registered data move to its end (see [`MigrationJob::run`]).
    fn run_data_move(&self, job: &MigrationJob) -> Result<u64, EngineError> {
        let copy = &job.copy;
        let started = std::time::Instant::now();
        // A panic must not hold the tenant's migration slot: it ends the move as failed.
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.move_data_inner(job)))
                .unwrap_or_else(|panic| {
                    let why = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    Err(EngineError::Index(format!(
                        "the migration stopped on an internal error (a panic: {why})"
                    )))
                });
        match result {
            Ok((caught, warning)) => {
                let secs = started.elapsed().as_secs_f64();
                if job.bytes > 0 && secs > 0.0 {
                    *lock(&self.migrations.bytes_per_sec) = Some(job.bytes as f64 / secs);
                }
                // The flip wrote the row (`done`); a clean-up warning goes into it with a
                // second short write. If that fails, the live status keeps showing it.
                let recorded = match &warning {
                    None => Ok(()),
                    Some(w) => self.record_warning(job, w),
                };
                let warning = match (warning, &recorded) {
                    (Some(w), Err(e)) => Some(format!("{w} (recording it failed: {e})")),
                    (w, _) => w,
                };
                copy.end(Phase::Done, warning);
                if recorded.is_ok() {
                    self.migrations.forget(job.key, Some(copy));
                }
                Ok(caught)
            }
            Err(e) => {
                // Recorded before the slot is released, so no purge runs between (the row
                // would be written into a tenant that no longer exists).
                // A cancel is set only while copying and stops the move before its flip
                // (see the copy loop): once set, the move ends `cancelled` whatever ended its
                // copy (a shutdown or an error meanwhile included), so that it is not resumed.
                let cancelled = copy.cancel.load(Ordering::SeqCst);
                let error = match &e {
                    _ if !cancelled => e.to_string(),
                    EngineError::IdConflict(_) => e.to_string(),
                    other => format!("{}; then: {other}", cancelled_error(copy.from)),
                };
                let interrupted = !cancelled && matches!(e, EngineError::ShuttingDown(_));
                let (state, phase) = if cancelled {
                    (
                        strata_store::StoredMigrationState::Cancelled,
                        Phase::Cancelled,
                    )
                } else if interrupted {
                    (
                        strata_store::StoredMigrationState::Interrupted,
                        Phase::Interrupted,
                    )
                } else {
                    (strata_store::StoredMigrationState::Failed, Phase::Failed)
                };
                let row = crate::migration_status::row(
                    copy,
                    job.row_params(),
                    Some(state),
                    Some(error.clone()),
                );
                // A move that ended without its flip is audited as the flip is, with how it
                // ended; one cut short by a shutdown is not over (it is resumed).
                let outcome = match phase {
                    Phase::Cancelled => Some("cancelled"),
                    Phase::Failed => Some("failed"),
                    _ => None,
                };
                let recorded = self.store.write(|w| {
                    match w.tenant(&job.id)? {
                        Some(meta) if meta.key == job.key => {
                            // A cancel recorded (and audited) itself as it was asked for, maybe
                            // just before the copy stopped for another reason (a shutdown, an
                            // error): the move ends cancelled, its row as the cancel wrote it,
                            // so that the start does not resume it.
                            let by_cancel = strata_store::last_migration(&*w, job.key)?
                                .is_some_and(|r| {
                                    r.state == strata_store::StoredMigrationState::Cancelled
                                        && r.started_at == copy.started_at
                                });
                            if by_cancel {
                                return Ok(true);
                            }
                            w.put_last_migration(job.key, &row)?;
                            if let Some(outcome) = outcome {
                                let mut event = crate::audit::operator_event(
                                    &job.op,
                                    &job.id,
                                    crate::isolation::MIGRATE_ACTION,
                                );
                                event.outcome = outcome.into();
                                event.detail = serde_json::json!({
                                    "to": job.next.isolation,
                                    "error": error,
                                });
                                crate::audit::append_to_both(w, job.key, event)?;
                            }
                            Ok(false)
                        }
                        _ => Ok::<_, EngineError>(false),
                    }
                });
                match recorded {
                    Ok(by_cancel) => {
                        let (phase, error) = match phase {
                            Phase::Cancelled => (phase, error),
                            _ if by_cancel => (
                                Phase::Cancelled,
                                format!("{}; then: {error}", cancelled_error(copy.from)),
                            ),
                            _ => (phase, error),
                        };
                        copy.end(phase, Some(error));
                        self.migrations.forget(job.key, Some(copy));
                    }
                    // Kept in memory: the status shows the real error while this process
                    // runs (after a restart the row still says running, read as interrupted).
                    Err(r) => copy.end(phase, Some(format!("{error} (recording it failed: {r})"))),
                }
                Err(e)
            }
        }
    }

    /// Writes a clean-up warning into the tenant's last-migration row, if it is still this
    /// move's.
    fn record_warning(&self, job: &MigrationJob, warning: &str) -> Result<(), EngineError> {
        self.store.write(|w| {
            if w.tenant(&job.id)?.is_none_or(|m| m.key != job.key) {
                return Ok(());
            }
            let Some(mut row) = strata_store::last_migration(&*w, job.key)? else {
                return Ok(());
            };
            if row.started_at == job.copy.started_at {
                row.error = Some(warning.to_owned());
                w.put_last_migration(job.key, &row)?;
            }
            Ok::<_, EngineError>(())
        })
    }

    /// Stops data migrations for a server shutdown: each stops at its next chunk (a flip
    /// already under way finishes), leaving its tenant whole where it was and its row saying
    /// `interrupted`; none starts from now on. A backup running stops too, at its next chunk
    /// (ending `failed`, its partial copy removed), and none starts. Returns whether all
    /// migrations had ended within `timeout`.
    pub fn stop_migrations(&self, timeout: std::time::Duration) -> bool {
        self.migrations.stopping.store(true, Ordering::SeqCst);
        let deadline = std::time::Instant::now() + timeout;
        while self.migrations.any_running() {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        true
    }

    /// Refuses (as a conflict) unless tenant `id` is stored at level `from` and its data is on
    /// the side that level names.
    /// Checks that the tenant is still at `from`; returns its stored graph parameters.
    fn check_level(
        &self,
        id: &TenantId,
        key: TenantKey,
        from: IsolationLevel,
    ) -> Result<Option<crate::isolation::IndexParams>, EngineError> {
        let meta = self.tenant_meta(id)?;
        // Planned on the incarnation stored under `key`; never moves one that replaced it.
        if meta.key != key {
            return Err(crate::isolation::replaced(id));
        }
        let profile = TenantProfile::of(&meta)?;
        let stored = profile.isolation;
        let in_file = self.store.is_dedicated(key);
        if stored != from || in_file != (from == IsolationLevel::Dedicated) {
            return Err(EngineError::IdConflict(format!(
                "tenant {id}: its level changed to {} since this migration was planned from \
                 {}; plan it again",
                level_name(stored),
                level_name(from)
            )));
        }
        Ok(profile.index_params)
    }

    /// The flip's registry change: refused unless the stored level is still `from`.
    fn flip_txn(
        &self,
        w: &mut strata_store::Writer<'_>,
        job: &MigrationJob,
    ) -> Result<TenantKey, EngineError> {
        let (op, id, from, next) = (&job.op, &job.id, job.copy.from, &job.next);
        let meta = w
            .tenant(id)?
            .ok_or_else(|| EngineError::TenantNotFound(id.clone()))?;
        let stored = TenantProfile::of(&meta)?.isolation;
        if stored != from {
            return Err(EngineError::IdConflict(format!(
                "tenant {id}: its level changed to {} during the migration",
                level_name(stored)
            )));
        }
        let row = crate::migration_status::row(
            &job.copy,
            job.row_params(),
            Some(strata_store::StoredMigrationState::Done),
            lock(&job.copy.error).clone(),
        );
        self.level_txn(w, op, id, next, crate::isolation::MIGRATE_ACTION, &row)
    }

    /// Copies, flips and cleans up; returns the keys caught up in the flip and a warning if
    /// the clean-up after it could not remove the old side (the next start does).
    fn move_data_inner(&self, job: &MigrationJob) -> Result<(u64, Option<String>), EngineError> {
        let (id, key, copy) = (&job.id, job.key, &*job.copy);
        let into = job.next.isolation == IsolationLevel::Dedicated;
        let file = if into {
            Some(self.store.create_dedicated(key)?)
        } else {
            None
        };
        let target = || match &file {
            Some(f) => CopyTarget::File(f),
            None => CopyTarget::Main,
        };
        // The flip catches up only what changed since here. Its destination holds nothing of
        // the tenant before the copy: a new file, or (out of a file) a main range that an
        // earlier failed move out may have left, erased first.
        let tracked = (|| {
            if !into {
                self.store.erase_main_range(key)?;
            }
            Ok::<_, EngineError>(self.store.track_writes(key)?)
        })();
        let tracker = match tracked {
            Ok(t) => t,
            Err(e) => {
                if let Some(f) = file {
                    let _ = self.store.discard_dedicated(f);
                }
                return Err(e);
            }
        };
        let copied = (|| {
            let mut after: Option<Vec<u8>> = None;
            loop {
                // The cancel first: an operator's cancel is final, a shutdown is not.
                if copy.cancel.load(Ordering::SeqCst) {
                    return Err(cancelled(copy.from));
                }
                if self.migrations.stopping.load(Ordering::SeqCst) {
                    return Err(EngineError::ShuttingDown(format!(
                        "the server shut down during the copy, before the flip; the tenant \
                         stayed at {}",
                        level_name(copy.from)
                    )));
                }
                let (last, n) =
                    self.store
                        .copy_chunk(key, target(), after.as_deref(), CHUNK_KEYS)?;
                copy.copied.fetch_add(n, Ordering::Relaxed);
                match last {
                    Some(k) => after = Some(k),
                    None => {
                        // Checked with the phase locked: a cancel either lands before this
                        // (and stops the move) or finds it past the copy (and is refused).
                        let mut phase = lock(&copy.phase);
                        if copy.cancel.load(Ordering::SeqCst) {
                            return Err(cancelled(copy.from));
                        }
                        *phase = Phase::CatchingUp;
                        return Ok::<_, EngineError>(());
                    }
                }
            }
        })();
        if let Err(e) = copied {
            // Nothing routes to the copy yet: remove it.
            match file {
                Some(f) => {
                    let _ = self.store.discard_dedicated(f);
                }
                None => {
                    // Outside the tenant's write order (its writers need not wait for the
                    // erase): the migration slot this move holds rules out a flip meanwhile,
                    // and `erase_main_range` erases only while the tenant lives in its file
                    // (the main range of one that does not is its live data).
                    let _ = self.store.erase_main_range(key);
                }
            }
            return Err(e);
        }
        let (caught, retired) = self.indexes.write(&self.store, key, id, |_| {
            let caught = match file {
                Some(f) => (
                    self.store
                        .flip_in(f, Some(&tracker), |w| self.flip_txn(w, job))?
                        .1,
                    None,
                ),
                None => {
                    let flipped = self
                        .store
                        .flip_out_retiring(key, Some(&tracker), |w| self.flip_txn(w, job));
                    if flipped.is_err() {
                        // The tenant still lives in its file (erase_main_range checks that
                        // under the main write transaction): drop the partial main copy.
                        let _ = self.store.erase_main_range(key);
                    }
                    let (_, caught, retired) = flipped?;
                    (caught, Some(retired))
                }
            };
            Ok((caught, Vec::new()))
        })?;
        // Flipped: the tenant serves from its new side at its new level.
        *lock(&copy.phase) = Phase::CleaningUp;
        self.indexes.apply_profile(&self.store, key);
        // The level decides the tenant's pool lane (dedicated: reserved).
        self.admissions.invalidate(key);
        // After the tenant's write order is released, its writes going to their new side
        // meanwhile: the old side is removed outside it (the migration slot still held). The
        // move has happened; what a failure here leaves, nothing reads, and the next start
        // removes it.
        let mut warning = None;
        if into {
            // Erased in short transactions that other writers interleave with.
            if let Err(e) = self.store.erase_main_range(key) {
                warning = Some(format!(
                    "moved; its old keys in the main file are erased at the next start ({e})"
                ));
            }
        }
        if let Some(retired) = retired
            && let Err(e) = self.store.delete_retired(retired)
        {
            warning = Some(format!(
                "moved; its old file is deleted at the next start ({e})"
            ));
        }
        Ok((caught, warning))
    }
}

impl Engine {
    /// The placement part of `verify_tenant`: the tenant's data is on exactly one side.
    ///
    /// The level and the placement are read after making sure that no move of the tenant
    /// runs, and the check stands only if none started meanwhile: the profile `verify_tenant`
    /// read before may be older than a move that has flipped the tenant since (it reported
    /// the data on the wrong side, for a move that had just ended well).
    pub(crate) fn check_placement(
        &self,
        meta: &strata_store::TenantMeta,
        report: &mut crate::VerifyReport,
    ) -> Result<(), EngineError> {
        let key = meta.key;
        let started = self.migrations.started();
        let moving = || self.migrations.get(key).is_some_and(|c| c.running());
        let not_checked = |report: &mut crate::VerifyReport| {
            report
                .warnings
                .push("a migration is moving its data: placement not checked".into());
        };
        if moving() {
            not_checked(report);
            return Ok(());
        }
        let Some(now) = self
            .store
            .read()?
            .tenant(&meta.id)?
            .filter(|m| m.key == key)
        else {
            return Ok(()); // Purged since: nothing left to place.
        };
        let dedicated = TenantProfile::of(&now)?.isolation == IsolationLevel::Dedicated;
        report.dedicated_file = self.store.is_dedicated(key);
        let stray = if dedicated {
            self.store.main_keys(key)?
        } else {
            0
        };
        let own_dir = !dedicated && self.store.has_dedicated_dir(key);
        if moving() || self.migrations.started() != started {
            not_checked(report);
            return Ok(());
        }
        if dedicated != report.dedicated_file {
            report.problem(format!(
                "level {} but its data is {}",
                if dedicated {
                    "dedicated"
                } else {
                    "not dedicated"
                },
                if report.dedicated_file {
                    "in its own file"
                } else {
                    "in the main file"
                }
            ));
        }
        if stray > 0 {
            report.problem(format!("{stray} of its keys are left in the main file"));
        }
        if own_dir {
            report.problem("a file of its own exists though it is not dedicated".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod guard_tests;
