//! The status of a tenant's last isolation-level migration: what `GET
//! /v1/admin/tenants/{id}/migration` answers. A data move under way in this process reports
//! its live progress; otherwise the tenant's last-migration row (kept in its own storage
//! range, see `strata_store::last_migration`) says how the last one ended, across restarts: a
//! row still saying `running` when no move of the tenant runs here was cut short by a crash.

use std::sync::atomic::Ordering;

use strata_store::{
    StoreError, StoredIndexParams, StoredLevel, StoredMigration, StoredMigrationState,
};
use strata_types::now_millis;

use crate::EngineError;
use crate::dedicated::{DataMove, Phase};
use crate::isolation::{IndexParams, IsolationLevel, MigrationState, MigrationStatus, moves_data};
use crate::registry::lock;

pub(crate) fn stored_level(l: IsolationLevel) -> StoredLevel {
    match l {
        IsolationLevel::Shared => StoredLevel::Shared,
        IsolationLevel::Partition => StoredLevel::Partition,
        IsolationLevel::Dedicated => StoredLevel::Dedicated,
    }
}

fn level(l: StoredLevel) -> IsolationLevel {
    match l {
        StoredLevel::Shared => IsolationLevel::Shared,
        StoredLevel::Partition => IsolationLevel::Partition,
        StoredLevel::Dedicated => IsolationLevel::Dedicated,
    }
}

/// A tenant's own graph parameters as a migration row keeps them; `None` (the server's
/// defaults) is kept as empty parameters, so that it is told from a row that kept none.
pub(crate) fn stored_params(p: Option<IndexParams>) -> StoredIndexParams {
    let p = p.unwrap_or_default();
    StoredIndexParams {
        m: p.m,
        ef_construction: p.ef_construction,
        ef_search: p.ef_search,
    }
}

/// The parameters a row kept (`None`: the row predates them); empty ones are none. Checked
/// like an operator's: a row that decodes but holds parameters out of range (damaged bytes,
/// say `m` = 4294967295, which would size a graph build past any memory) is
/// [`StoreError::Corrupt`], never used.
pub(crate) fn params_of(row: &StoredMigration) -> Result<Option<Option<IndexParams>>, EngineError> {
    let Some(p) = row.index_params else {
        return Ok(None);
    };
    let p = IndexParams {
        m: p.m,
        ef_construction: p.ef_construction,
        ef_search: p.ef_search,
    };
    p.validate().map_err(|e| {
        EngineError::Store(StoreError::Corrupt(format!(
            "last migration row: graph parameters out of range: {e}"
        )))
    })?;
    Ok(Some((!p.is_empty()).then_some(p)))
}

/// A move's progress as it is shown: keys copied, and of how many. The total is counted when
/// the move starts (`RangeSize::keys_to_move`, its own migration row included); keys the
/// tenant writes during the copy are copied too, so the total grows with the copy rather than
/// ever showing more keys copied than there are.
fn progress(copied: u64, total: u64) -> (u64, u64) {
    (copied, total.max(copied))
}

/// The row of a data move that keeps graph parameters `params` (`None`: those the tenant has
/// stored): running (`state: None`) or ended now in `state`.
pub(crate) fn row(
    copy: &DataMove,
    params: Option<StoredIndexParams>,
    state: Option<StoredMigrationState>,
    error: Option<String>,
) -> StoredMigration {
    let (keys_copied, keys_total) = progress(copy.copied.load(Ordering::Relaxed), copy.total);
    StoredMigration {
        from: stored_level(copy.from),
        to: stored_level(copy.to),
        state: state.unwrap_or(StoredMigrationState::Running),
        started_at: copy.started_at,
        finished_at: state.map(|_| now_millis().max(copy.started_at)),
        keys_copied,
        keys_total,
        error,
        attempt: copy.attempt,
        index_params: params,
    }
}

/// The row of a migration that moves no data, done in one transaction now. It keeps no
/// graph parameters (format 2): it is never resumed, and the tenant's profile has them.
pub(crate) fn level_change_row(from: IsolationLevel, to: IsolationLevel) -> StoredMigration {
    let now = now_millis();
    StoredMigration {
        from: stored_level(from),
        to: stored_level(to),
        state: StoredMigrationState::Done,
        started_at: now,
        finished_at: Some(now),
        keys_copied: 0,
        keys_total: 0,
        error: None,
        attempt: 1,
        index_params: None,
    }
}

/// The status from the live move (if one of the tenant is copying, flipping or cleaning up in
/// this process) or else from the stored row; a migration done is `rebuilding` while `stale`
/// of the tenant's graphs wait for a rebuild with its parameters (`pending` counts every build
/// wanted, a compaction's or a new collection's too, and is shown as is); a move of this process that has ended and is
/// the row's (same `started_at`, or no row) gives its own state and error over the row's (its
/// outcome may not have been recorded).
pub(crate) fn status(
    level_now: IsolationLevel,
    pending: u32,
    stale: u32,
    live: Option<&DataMove>,
    stored: Option<StoredMigration>,
) -> MigrationStatus {
    let running = live.and_then(|c| match *lock(&c.phase) {
        Phase::Copying => Some((c, MigrationState::Copying)),
        Phase::CatchingUp => Some((c, MigrationState::CatchingUp)),
        Phase::CleaningUp => Some((c, MigrationState::CleaningUp)),
        Phase::Done | Phase::Failed | Phase::Interrupted | Phase::Cancelled => None,
    });
    if let Some((c, state)) = running {
        let (keys_copied, keys_total) = progress(c.copied.load(Ordering::Relaxed), c.total);
        return MigrationStatus {
            level: level_now,
            state,
            from: Some(c.from),
            to: Some(c.to),
            started_at: Some(c.started_at),
            finished_at: None,
            graph_builds_pending: pending,
            moves_data: true,
            keys_copied,
            keys_total,
            error: lock(&c.error).clone(),
            will_resume: false,
        };
    }
    // An ended move of this process: its outcome, recorded or not.
    let ended = live.filter(|c| stored.as_ref().is_none_or(|r| r.started_at == c.started_at));
    let stored = match ended {
        Some(c) => {
            // A cancel recorded in the row wins over how the move itself ended (a shutdown
            // that stopped the copy just before the cancel took the phase lock): the row is
            // what a start acts on.
            let cancelled = stored
                .as_ref()
                .is_some_and(|r| r.state == StoredMigrationState::Cancelled);
            let state = match *lock(&c.phase) {
                _ if cancelled => StoredMigrationState::Cancelled,
                Phase::Done => StoredMigrationState::Done,
                Phase::Interrupted => StoredMigrationState::Interrupted,
                Phase::Cancelled => StoredMigrationState::Cancelled,
                _ => StoredMigrationState::Failed,
            };
            let error = lock(&c.error).clone();
            // Only the status is built from it, which does not show parameters: unknown here.
            let mut r = stored.unwrap_or_else(|| StoredMigration {
                index_params: None,
                ..row(c, None, Some(state), None)
            });
            r.state = state;
            r.finished_at = r
                .finished_at
                .or_else(|| Some(now_millis().max(c.started_at)));
            r.keys_copied = r.keys_copied.max(c.copied.load(Ordering::Relaxed));
            if error.is_some() && !cancelled {
                r.error = error;
            }
            Some(r)
        }
        None => stored,
    };
    let Some(row) = stored else {
        return MigrationStatus {
            level: level_now,
            state: MigrationState::None,
            from: None,
            to: None,
            started_at: None,
            finished_at: None,
            graph_builds_pending: pending,
            moves_data: false,
            keys_copied: 0,
            keys_total: 0,
            error: None,
            will_resume: false,
        };
    };
    let (from, to) = (level(row.from), level(row.to));
    // A row written before totals grew with the copy may say more copied than its total.
    let (keys_copied, keys_total) = progress(row.keys_copied, row.keys_total);
    let (state, error) = match row.state {
        StoredMigrationState::Done if stale > 0 => (MigrationState::Rebuilding, row.error),
        StoredMigrationState::Done => (MigrationState::Done, row.error),
        StoredMigrationState::Failed => (MigrationState::Failed, row.error),
        StoredMigrationState::Interrupted => (MigrationState::Interrupted, row.error),
        StoredMigrationState::Cancelled => (MigrationState::Cancelled, row.error),
        // Nothing of the tenant moves in this process: the one that ran it stopped mid-way.
        StoredMigrationState::Running => (
            MigrationState::Interrupted,
            Some(format!(
                "the server stopped while this migration ran; the tenant stayed at {}",
                serde_json::to_value(level_now)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            )),
        ),
    };
    MigrationStatus {
        level: level_now,
        state,
        from: Some(from),
        to: Some(to),
        started_at: Some(row.started_at),
        finished_at: row.finished_at,
        graph_builds_pending: pending,
        moves_data: moves_data(from, to),
        keys_copied,
        keys_total,
        error,
        will_resume: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(state: StoredMigrationState) -> StoredMigration {
        StoredMigration {
            from: StoredLevel::Shared,
            to: StoredLevel::Dedicated,
            state,
            started_at: 10,
            finished_at: (state != StoredMigrationState::Running).then_some(20),
            keys_copied: 5,
            keys_total: 4,
            error: None,
            attempt: 1,
            index_params: None,
        }
    }

    #[test]
    fn a_stored_row_still_running_reads_as_interrupted() {
        let s = status(
            IsolationLevel::Shared,
            0,
            0,
            None,
            Some(stored(StoredMigrationState::Running)),
        );
        assert_eq!(s.state, MigrationState::Interrupted);
        assert!(s.error.unwrap().contains("stayed at shared"));
        assert_eq!((s.started_at, s.finished_at), (Some(10), None));
        assert!(s.moves_data);
    }

    /// A move of this process that a shutdown ended `interrupted` just before a cancel
    /// recorded its row `cancelled`: the status says cancelled, as the row a start acts on.
    #[test]
    fn a_cancel_recorded_in_the_row_wins_over_the_moves_own_end() {
        let copy = DataMove {
            tenant: strata_types::TenantId::parse("a").unwrap(),
            phase: std::sync::Mutex::new(Phase::Interrupted),
            copied: std::sync::atomic::AtomicU64::new(3),
            total: 4,
            error: std::sync::Mutex::new(Some("the server is shutting down".into())),
            from: IsolationLevel::Shared,
            to: IsolationLevel::Dedicated,
            started_at: 10,
            cancel: std::sync::atomic::AtomicBool::new(true),
            attempt: 1,
        };
        let mut row = stored(StoredMigrationState::Cancelled);
        row.error = Some("cancelled by an operator".into());
        let s = status(IsolationLevel::Shared, 0, 0, Some(&copy), Some(row));
        assert_eq!(s.state, MigrationState::Cancelled, "{s:?}");
        assert_eq!(s.error.as_deref(), Some("cancelled by an operator"));
        assert!(!s.will_resume);
    }

    #[test]
    fn a_done_row_reads_as_rebuilding_while_graphs_wait_for_the_new_parameters() {
        let row = stored(StoredMigrationState::Done);
        let s = status(IsolationLevel::Dedicated, 2, 1, None, Some(row.clone()));
        assert_eq!(s.state, MigrationState::Rebuilding);
        // Builds unrelated to the migration (a compaction, a collection grown past the
        // graph threshold) are shown, and do not make it `rebuilding`.
        let s = status(IsolationLevel::Dedicated, 2, 0, None, Some(row.clone()));
        assert_eq!((s.state, s.graph_builds_pending), (MigrationState::Done, 2));
        let s = status(IsolationLevel::Dedicated, 0, 0, None, Some(row));
        assert_eq!(s.state, MigrationState::Done);
        // The row says 5 of 4 (a catch-up copied more than the count at the start): the
        // total grows with the copy, never fewer than copied.
        assert_eq!(
            (s.keys_copied, s.keys_total, s.finished_at),
            (5, 5, Some(20))
        );
        assert_eq!(progress(3, 10), (3, 10));
        let none = status(IsolationLevel::Shared, 0, 0, None, None);
        assert_eq!(none.state, MigrationState::None);
    }
}
