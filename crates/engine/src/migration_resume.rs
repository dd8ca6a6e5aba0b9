//! Data moves that did not run to their end: resuming, after a start, the ones a crash or a
//! shutdown cut short, and an operator's cancel of a move (running, or waiting to be resumed).
//!
//! A move cut short leaves its tenant whole on its old side (start-up removes the partial
//! copy, see `dedicated::attach_files`), so resuming is simply a new move from that side, from
//! a clean copy: the old side stays authoritative until the new move's flip. A tenant's
//! last-migration row says which moves were cut short: `running` with no move of it in this
//! process (a crash) or `interrupted` (a shutdown). Resuming waits for a free slot under
//! `engine.isolation.max_concurrent_moves`, and gives up on a tenant whose row or level
//! changed meanwhile (an operator migrated or cancelled it, or purged it).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use strata_auth::OperatorScope;
use strata_store::{Reads, StoredMigration, StoredMigrationState, TenantKey};
use strata_types::{TenantId, now_millis};

use crate::dedicated::{Phase, level_name};
use crate::isolation::{IsolationLevel, MigrationStatus, moves_data};
use crate::lifecycle::{TenantProfile, TenantStatus};
use crate::registry::lock;
use crate::{Engine, EngineError};

/// How long a resumption waiting for a free move slot first waits before it looks again;
/// each wait doubles, up to [`SLOT_POLL_MAX`] (an operator's move may hold the slot for hours).
const SLOT_POLL: Duration = Duration::from_millis(50);
const SLOT_POLL_MAX: Duration = Duration::from_secs(5);

/// How many runs of a move may end in a crash before it is no longer resumed: a copy that
/// gets the process killed (out of memory, say) would otherwise crash it at every start.
pub(crate) const MAX_ATTEMPTS: u8 = 3;

/// How long a cancel waits for the move it stopped to remove its partial copy and record
/// `cancelled` (one chunk of copying, then the clean-up).
const CANCEL_WAIT: Duration = Duration::from_secs(60);

/// How one cut-short move ended when resumed.
#[derive(Debug, PartialEq, Eq)]
pub enum Resumed {
    /// Moved: the tenant is at the level the cut-short move aimed for.
    Done,
    /// Run, and ended without moving the tenant (failed, cancelled or interrupted again); its
    /// status says why.
    NotMoved(String),
    /// Not run: the tenant was migrated, cancelled, deleted or purged since (or the server is
    /// shutting down).
    Skipped,
}

pub(crate) fn level(l: strata_store::StoredLevel) -> IsolationLevel {
    match l {
        strata_store::StoredLevel::Shared => IsolationLevel::Shared,
        strata_store::StoredLevel::Partition => IsolationLevel::Partition,
        strata_store::StoredLevel::Dedicated => IsolationLevel::Dedicated,
    }
}

/// Whether a stored row is a data move that was cut short (and so may be resumed or
/// cancelled), given whether a move of the tenant is running in this process.
fn cut_short(row: &StoredMigration, running_here: bool) -> bool {
    let stopped = match row.state {
        StoredMigrationState::Interrupted => true,
        StoredMigrationState::Running => !running_here,
        _ => false,
    };
    stopped && moves_data(level(row.from), level(row.to))
}

/// Whether this binary resumes a cut-short row: only rows written since moves are resumed
/// (`attempt` 1 or more; older binaries told their users to ask again, so theirs stay
/// `interrupted`).
pub(crate) fn resumable(row: &StoredMigration) -> bool {
    row.attempt >= 1
}

/// The run a resumption of `row` is: a run a crash cut short (the row still `running`)
/// counts; one an orderly shutdown stopped (`interrupted`) does not, so restarts alone never
/// use up a move's attempts.
fn next_attempt(row: &StoredMigration) -> u8 {
    match row.state {
        StoredMigrationState::Running => row.attempt.saturating_add(1),
        _ => row.attempt,
    }
}

/// Whether the server will resume a move whose row is `row` (found cut short), given the
/// setting: the status says so, so that clients keep waiting for it. The same test as
/// start-up's (`cut_short_moves`): a row keeping graph parameters out of range is damaged,
/// left `interrupted` and never resumed, so it must not promise a resumption either.
pub(crate) fn will_resume(row: &StoredMigration, setting: bool) -> bool {
    setting
        && cut_short(row, false)
        && resumable(row)
        && next_attempt(row) <= MAX_ATTEMPTS
        && crate::migration_status::params_of(row).is_ok()
}

impl Engine {
    /// Every tenant whose last migration is a data move cut short, with that row. A tenant
    /// whose registry or migration row does not decode is logged and left out: it must not
    /// stop the others' moves from resuming.
    fn cut_short_moves(&self) -> Result<Vec<(TenantId, StoredMigration)>, EngineError> {
        let r = self.store.read()?;
        let mut found = Vec::new();
        // Each registry row decoded on its own (see `tenants_page`).
        for (raw, meta) in r.tenants_page(None, usize::MAX)? {
            let meta = match meta {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(tenant = %raw, error = %e, "not resuming a migration: unreadable tenant row");
                    continue;
                }
            };
            match self.cut_short_move(&r, meta.key) {
                Ok(Some(row)) => found.push((meta.id, row)),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(tenant = %meta.id, error = %e, "not resuming a migration: unreadable migration row");
                }
            }
        }
        Ok(found)
    }

    /// Tenant `key`'s last migration if it is a data move cut short that this binary resumes.
    /// Parameters out of range are a damaged row like one that does not decode: the move is
    /// left as it is (`interrupted`), for an operator to migrate again.
    fn cut_short_move(
        &self,
        r: &impl Reads,
        key: TenantKey,
    ) -> Result<Option<StoredMigration>, EngineError> {
        let running_here = self.migrations.get(key).is_some_and(|c| c.running());
        let row = strata_store::last_migration(r, key)?;
        if let Some(m) = &row {
            crate::migration_status::params_of(m)?;
        }
        Ok(row.filter(|row| cut_short(row, running_here) && resumable(row)))
    }

    /// Resumes tenant `id`'s data move if a crash or shutdown cut it short (see
    /// [`Engine::resume_interrupted_migrations`]) and the tenant is not deleted; blocks until
    /// it ends. Start-up skips soft-deleted tenants, so restoring one calls this: its move
    /// resumes then rather than at the next start. `None` when there is nothing to resume or
    /// resumption is switched off.
    pub fn resume_migration_of(
        &self,
        op: &OperatorScope,
        id: &TenantId,
    ) -> Result<Option<Resumed>, EngineError> {
        if !self.config.isolation.resume_interrupted_migrations {
            return Ok(None);
        }
        let key = self.tenant_meta(id)?.key;
        match self.cut_short_move(&self.store.read()?, key)? {
            Some(row) => self.resume_one(op, id, &row).map(Some),
            None => Ok(None),
        }
    }

    /// Resumes every data move a crash or shutdown cut short, each from a clean copy of its
    /// tenant's old side, at most `engine.isolation.max_concurrent_moves` at once (counting
    /// moves operators start meanwhile); blocks until all have ended. The server runs it in
    /// the background once started, when `engine.isolation.resume_interrupted_migrations` is
    /// on. A shutdown stops it (moves under way end `interrupted`, to be resumed at the next
    /// start). Returns each tenant found and how its move ended.
    pub fn resume_interrupted_migrations(
        &self,
        op: &OperatorScope,
    ) -> Result<Vec<(TenantId, Resumed)>, EngineError> {
        if !self.config.isolation.resume_interrupted_migrations {
            return Ok(Vec::new());
        }
        let queue: Mutex<VecDeque<_>> = Mutex::new(self.cut_short_moves()?.into());
        let workers = self
            .config
            .isolation
            .max_concurrent_moves
            .max(1)
            .min(lock(&queue).len());
        let ended = Mutex::new(Vec::new());
        let failed = Mutex::new(None);
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| {
                    loop {
                        let next = lock(&queue).pop_front();
                        let Some((id, row)) = next else { return };
                        match self.resume_one(op, &id, &row) {
                            Ok(how) => {
                                if how != Resumed::Skipped {
                                    tracing::info!(tenant = %id, outcome = ?how, "resumed an interrupted migration");
                                }
                                lock(&ended).push((id, how));
                            }
                            Err(e) => {
                                tracing::warn!(tenant = %id, error = %e, "resuming an interrupted migration failed");
                                lock(&failed).get_or_insert(e);
                            }
                        }
                    }
                });
            }
        });
        match failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(e),
            None => Ok(ended.into_inner().unwrap_or_else(|p| p.into_inner())),
        }
    }

    /// Resumes the move `row` records for tenant `id`, once a move slot is free, unless the
    /// tenant moved on since.
    fn resume_one(
        &self,
        op: &OperatorScope,
        id: &TenantId,
        row: &StoredMigration,
    ) -> Result<Resumed, EngineError> {
        let (from, to) = (level(row.from), level(row.to));
        let max_moves = self.config.isolation.max_concurrent_moves;
        let mut wait = SLOT_POLL;
        // Sized once, when a slot is first free: sizing reads the whole tenant range.
        let mut size = None;
        loop {
            if self.migrations.stopping() {
                return Ok(Resumed::Skipped);
            }
            let meta = match self.tenant_meta(id) {
                Ok(m) => m,
                Err(EngineError::TenantNotFound(_)) => return Ok(Resumed::Skipped),
                Err(e) => return Err(e),
            };
            let profile = TenantProfile::of(&meta)?;
            let key = meta.key;
            if profile.status == TenantStatus::Deleted
                || profile.isolation != from
                || !self.row_unchanged(key, row)?
            {
                return Ok(Resumed::Skipped);
            }
            // The graph parameters the cut move was asked to land with, kept in its row;
            // a row written before rows kept them lands with the tenant's stored ones.
            let index_params =
                crate::migration_status::params_of(row)?.unwrap_or(profile.index_params);
            let next = TenantProfile {
                isolation: to,
                index_params,
                ..profile
            };
            let attempt = next_attempt(row);
            if attempt > MAX_ATTEMPTS {
                return self.give_up(id, key, row);
            }
            if !self.migrations.slot_free(key, max_moves) {
                self.nap(wait);
                wait = (wait * 2).min(SLOT_POLL_MAX);
                continue;
            }
            let size = match size {
                Some(s) => s,
                None => *size.insert(self.store.range_size(key)?),
            };
            let started = self.start_data_move(op, id, key, from, &next, size, attempt, || {
                if self.row_unchanged(key, row)? {
                    Ok(())
                } else {
                    Err(EngineError::IdConflict(format!(
                        "tenant {id}: its last migration changed since it was found interrupted"
                    )))
                }
            });
            match started {
                Ok(job) => {
                    return Ok(match job.run(self) {
                        Ok(_) => Resumed::Done,
                        Err(e) => Resumed::NotMoved(e.to_string()),
                    });
                }
                // All move slots taken (or another move of the tenant runs, or it changed
                // since the checks above): the loop's checks decide whether to wait.
                Err(EngineError::IdConflict(_) | EngineError::MoveSlotsBusy(_)) => {
                    self.nap(wait);
                    wait = (wait * 2).min(SLOT_POLL_MAX);
                }
                // Purged meanwhile: nothing left to resume.
                Err(EngineError::ShuttingDown(_) | EngineError::TenantNotFound(_)) => {
                    return Ok(Resumed::Skipped);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Records that the move `row` records is not resumed again: its runs crashed the server
    /// `MAX_ATTEMPTS` times. The row becomes `failed`, saying so; the tenant stays whole at
    /// its old level.
    fn give_up(
        &self,
        id: &TenantId,
        key: TenantKey,
        row: &StoredMigration,
    ) -> Result<Resumed, EngineError> {
        let why = format!(
            "the server stopped without an orderly shutdown (a crash, or killed) during each \
             of this migration's {MAX_ATTEMPTS} runs; not resumed again (the tenant stayed at \
             {}): check the server's memory and logs, then migrate it again",
            level_name(level(row.from))
        );
        let marked = self.migrations.excluding(key, id, || {
            self.store.write(|w| {
                if w.tenant(id)?.is_none_or(|m| m.key != key)
                    || strata_store::last_migration(&*w, key)?.as_ref() != Some(row)
                {
                    return Ok(false);
                }
                let mut failed = row.clone();
                failed.state = StoredMigrationState::Failed;
                failed.finished_at = Some(now_millis().max(row.started_at));
                failed.error = Some(why.clone());
                w.put_last_migration(key, &failed)?;
                Ok::<_, EngineError>(true)
            })
        });
        match marked {
            Ok(true) => {
                tracing::warn!(tenant = %id, "{why}");
                Ok(Resumed::NotMoved(why))
            }
            // Changed since (migrated, cancelled or purged), or a move of it runs now.
            Ok(false) | Err(EngineError::IdConflict(_) | EngineError::TenantNotFound(_)) => {
                Ok(Resumed::Skipped)
            }
            Err(e) => Err(e),
        }
    }

    /// Sleeps `wait`, or less if a shutdown comes meanwhile (it waits for the resumption).
    fn nap(&self, wait: Duration) {
        let until = Instant::now() + wait;
        while !self.migrations.stopping() && Instant::now() < until {
            std::thread::sleep(SLOT_POLL.min(until.saturating_duration_since(Instant::now())));
        }
    }

    /// Whether tenant `key`'s last-migration row is still `row` (the move found cut short).
    fn row_unchanged(&self, key: TenantKey, row: &StoredMigration) -> Result<bool, EngineError> {
        Ok(strata_store::last_migration(&self.store.read()?, key)?.as_ref() == Some(row))
    }

    /// Cancels tenant `id`'s data move: one copying now stops at its next chunk, removes its
    /// partial copy and ends `cancelled` (this waits for that); one cut short by a crash or
    /// shutdown (`interrupted`, perhaps waiting to be resumed) is recorded `cancelled` and
    /// not resumed. Either way the tenant stays whole at its old level. A move past its copy
    /// (catching up, flipping or cleaning up) completes: refused with a conflict, and so is a
    /// tenant with no move to cancel. Returns the status after the cancel.
    pub fn cancel_migration(
        &self,
        op: &OperatorScope,
        id: &TenantId,
    ) -> Result<MigrationStatus, EngineError> {
        let key = self.tenant_meta(id)?.key;
        if let Some(c) = self.migrations.get(key) {
            let phase = lock(&c.phase);
            match *phase {
                Phase::Copying => {
                    // Recorded durably first, still under the phase lock (so before any
                    // flip): a crash from here on leaves the row `cancelled`, and the start
                    // neither resumes the move nor forgets the cancel a 202 promised. The
                    // move's own end writes its outcome over it.
                    self.record_cancel(op, id, key, &c)?;
                    // Under the phase lock: the move checks the flag under it before its flip.
                    c.cancel.store(true, Ordering::SeqCst);
                    drop(phase);
                    let deadline = Instant::now() + CANCEL_WAIT;
                    while c.running() && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    return self.migration(op, id);
                }
                Phase::CatchingUp | Phase::CleaningUp => {
                    return Err(EngineError::IdConflict(format!(
                        "tenant {id}: its migration is past its copy (flipping, or flipped and \
                         cleaning up) and will complete; migrate it back once it has ended"
                    )));
                }
                Phase::Done | Phase::Failed | Phase::Interrupted | Phase::Cancelled => {}
            }
        }
        // No move of the tenant runs here (and, under the slots' lock, none starts): one cut
        // short is marked so that it is not resumed.
        let marked = self.migrations.excluding(key, id, || {
            self.store.write(|w| {
                match w.tenant(id)? {
                    Some(meta) if meta.key == key => {}
                    _ => return Err(EngineError::TenantNotFound(id.clone())),
                }
                let row = strata_store::last_migration(&*w, key)?;
                let Some(mut row) = row.filter(|r| cut_short(r, false)) else {
                    return Err(EngineError::IdConflict(format!(
                        "tenant {id}: no migration of it is running or interrupted; nothing \
                         to cancel"
                    )));
                };
                row.state = StoredMigrationState::Cancelled;
                row.finished_at = Some(row.finished_at.unwrap_or(now_millis()).max(row.started_at));
                row.error = Some(format!(
                    "cancelled by an operator after it was interrupted; the tenant stayed at {}",
                    level_name(level(row.from))
                ));
                w.put_last_migration(key, &row)?;
                let mut event =
                    crate::audit::operator_event(op, id, crate::isolation::MIGRATE_ACTION);
                event.outcome = "cancelled".into();
                event.detail = serde_json::json!({
                    "to": level(row.to),
                    "error": row.error,
                });
                crate::audit::append_to_both(w, key, event)?;
                Ok::<_, EngineError>(())
            })
        });
        match marked {
            // A move of it registered between the look above and the slots' lock (the
            // resumption, or an operator's): it is copying now, so a second cancel stops it.
            Err(EngineError::IdConflict(_))
                if self.migrations.get(key).is_some_and(|c| c.running()) =>
            {
                Err(EngineError::IdConflict(format!(
                    "tenant {id}: a migration of it started just as it was cancelled; send the \
                     cancel again"
                )))
            }
            Err(e) => Err(e),
            Ok(()) => self.migration(op, id),
        }
    }
}

impl Engine {
    /// Marks tenant `key`'s running move `c` cancelled in its last-migration row, and audits
    /// the cancel; a row that is not that move's (never expected while it copies) is left.
    fn record_cancel(
        &self,
        op: &OperatorScope,
        id: &TenantId,
        key: TenantKey,
        c: &crate::dedicated::DataMove,
    ) -> Result<(), EngineError> {
        self.store.write(|w| {
            match w.tenant(id)? {
                Some(meta) if meta.key == key => {}
                _ => return Err(EngineError::TenantNotFound(id.clone())),
            }
            // Running, or ended `interrupted` just now by a shutdown that stopped the copy
            // before the cancel took the phase lock (that move would be resumed).
            let stopped = |s| {
                matches!(
                    s,
                    StoredMigrationState::Running | StoredMigrationState::Interrupted
                )
            };
            let Some(mut row) = strata_store::last_migration(&*w, key)?
                .filter(|r| stopped(r.state) && r.started_at == c.started_at)
            else {
                return Ok(());
            };
            let error = crate::dedicated::cancelled_error(c.from);
            row.state = StoredMigrationState::Cancelled;
            row.finished_at = Some(now_millis().max(row.started_at));
            row.keys_copied = row.keys_copied.max(c.copied.load(Ordering::Relaxed));
            row.error = Some(error.clone());
            w.put_last_migration(key, &row)?;
            let mut event = crate::audit::operator_event(op, id, crate::isolation::MIGRATE_ACTION);
            event.outcome = "cancelled".into();
            event.detail = serde_json::json!({ "to": c.to, "error": error });
            crate::audit::append_to_both(w, key, event)?;
            Ok::<_, EngineError>(())
        })
    }
}

#[cfg(test)]
mod tests;
