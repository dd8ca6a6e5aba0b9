//! What an operator sees of vacuums (the main file rewritten without what erasures left in it):
//! an info line per vacuum that ran, with its duration and the file's size before and after,
//! and the figures `/metrics` and the admin stats show. Kept beside the store's vacuum, not in
//! it: the store rewrites the file, the engine knows why it asked and who waits for it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use strata_store::{Store, StoreError, Vacuumed};

/// Where a purge's erasure stands once its answer is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Erasure {
    /// Committed, and the main data file was rewritten without the erased bytes. A read begun
    /// before the rewrite's swap finishes on the old file, unlinked, which holds them until
    /// that read ends.
    Done,
    /// Committed (no read sees the data again), but the file may still hold its rows, not yet
    /// erased, or their bytes, until the owed vacuum runs: the erasure or the rewrite failed
    /// (a full disk, an I/O error) and is retried.
    /// `/metrics` (`strata_erasure_pending`) and the admin stats say when it has run.
    Pending,
}

/// Vacuums of the main data file since the server started, and whether one is owed now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct VacuumFigures {
    /// Vacuums that rewrote the main file.
    pub runs: u64,
    /// Their summed duration, in seconds.
    pub seconds_total: f64,
    /// The latest one's duration, in seconds (0 before the first).
    pub last_seconds: f64,
    /// An erasure is not finished: a purged tenant's rows (unreachable) or erased bytes may
    /// still be in the data file, until its vacuum runs; or an owed erasure's row does not
    /// decode (logged as an error), and an operator must look.
    pub erasure_pending: bool,
}

/// Runs vacuums of one main file, counting and logging those that ran.
#[derive(Debug)]
pub(crate) struct VacuumRecord {
    /// The main file, whose size the log line gives.
    file: PathBuf,
    runs: AtomicU64,
    micros_total: AtomicU64,
    last_micros: AtomicU64,
    /// Owed-erasure rows that do not decode, as last counted: while any is left, an erasure
    /// counts as pending.
    malformed_owed: AtomicU64,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl VacuumRecord {
    pub(crate) fn new(file: PathBuf) -> VacuumRecord {
        VacuumRecord {
            file,
            runs: AtomicU64::new(0),
            micros_total: AtomicU64::new(0),
            last_micros: AtomicU64::new(0),
            malformed_owed: AtomicU64::new(0),
        }
    }

    fn file_bytes(&self) -> Option<u64> {
        std::fs::metadata(&self.file).ok().map(|m| m.len())
    }

    /// `store.vacuum()`, and when it ran, an info line (`why` says who asked) and the figures.
    pub(crate) fn vacuum(&self, store: &Store, why: &'static str) -> Result<Vacuumed, StoreError> {
        // A purged range owed its erasure is erased first (the vacuum would erase it anyway),
        // outside the figures: they time the rewrite, as they always have.
        let pass = store.erase_owed_ranges()?;
        self.note_malformed_owed(&pass.malformed);
        let before = self.file_bytes();
        let started = Instant::now();
        let out = store.vacuum();
        if matches!(out, Ok(Vacuumed::Done { .. })) {
            self.ran(started.elapsed());
            tracing::info!(
                why,
                duration_ms = started.elapsed().as_millis() as u64,
                file_bytes_before = before,
                file_bytes_after = self.file_bytes(),
                "vacuum done: the data file was rewritten without erased data"
            );
        }
        out
    }

    /// Logs each owed-erasure row that was skipped (it does not decode, or it names a storage
    /// key that cannot be a purged tenant's), and keeps their count for the figures: such a
    /// row names no range that can be trusted, so it is left for an operator rather than
    /// stopping the erasure of the others or the server's start.
    pub(crate) fn note_malformed_owed(&self, malformed: &[String]) {
        for row in malformed {
            tracing::error!(
                error = %row,
                "an owed erasure's row was skipped (it does not decode, or names a live or \
                 never-given storage key): nothing erased for it; the data file may still hold \
                 a purged tenant's rows (erasure pending until the row is removed)"
            );
        }
        self.malformed_owed
            .store(malformed.len() as u64, Ordering::Relaxed);
    }

    fn ran(&self, took: Duration) {
        self.runs.fetch_add(1, Ordering::Relaxed);
        self.micros_total.fetch_add(micros(took), Ordering::Relaxed);
        self.last_micros.store(micros(took), Ordering::Relaxed);
    }

    pub(crate) fn figures(&self, erasure_pending: bool) -> VacuumFigures {
        let secs = |m: u64| Duration::from_micros(m).as_secs_f64();
        VacuumFigures {
            runs: self.runs.load(Ordering::Relaxed),
            seconds_total: secs(self.micros_total.load(Ordering::Relaxed)),
            last_seconds: secs(self.last_micros.load(Ordering::Relaxed)),
            erasure_pending: erasure_pending || self.malformed_owed.load(Ordering::Relaxed) > 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vacuum_that_ran_is_counted_with_its_duration() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("main.redb");
        let store = Store::open(&file).expect("store");
        let record = VacuumRecord::new(file);
        assert_eq!(record.figures(false), VacuumFigures::default());
        assert!(matches!(
            record.vacuum(&store, "test").expect("vacuum"),
            Vacuumed::Done { .. }
        ));
        let f = record.figures(true);
        assert_eq!(f.runs, 1);
        assert!(
            f.seconds_total > 0.0 && f.last_seconds == f.seconds_total,
            "{f:?}"
        );
        assert!(f.erasure_pending);
    }

    /// A purge whose vacuum fails (here: its new file cannot be created, a directory holds the
    /// name) answers `Pending` and the figures say an erasure is owed; once the cause is gone,
    /// the owed vacuum runs and they say so.
    #[test]
    fn a_purge_whose_rewrite_fails_is_pending_until_the_owed_vacuum_runs() {
        use crate::{DB_FILE, Engine, EngineConfig, OperatorScope};
        use strata_types::TenantId;
        let dir = tempfile::tempdir().expect("dir");
        let engine = Engine::open(dir.path(), EngineConfig::default()).expect("engine");
        let op = OperatorScope::for_tests();
        let (a, b) = (TenantId::parse("a").unwrap(), TenantId::parse("b").unwrap());
        engine.create_tenant(&op, &a, None).unwrap();
        engine.create_tenant(&op, &b, None).unwrap();
        assert_eq!(engine.purge_tenant(&op, &a).unwrap(), Erasure::Done);
        let done = engine.vacuum_figures();
        assert!(done.runs >= 1 && !done.erasure_pending, "{done:?}");
        // The vacuum's new file is `<main file>.vacuum`; a non-empty directory there can be
        // neither removed as a leftover nor created over.
        let obstacle = dir.path().join(format!("{DB_FILE}.vacuum"));
        std::fs::create_dir_all(obstacle.join("inside")).expect("obstacle");
        assert_eq!(engine.purge_tenant(&op, &b).unwrap(), Erasure::Pending);
        assert!(engine.vacuum_figures().erasure_pending);
        assert_eq!(engine.vacuum_figures().runs, done.runs);
        assert!(engine.store.compaction_owed().unwrap());
        std::fs::remove_dir_all(&obstacle).expect("obstacle removed");
        let deadline = Instant::now() + Duration::from_secs(60);
        while engine.vacuum_figures().erasure_pending {
            assert!(Instant::now() < deadline, "the owed vacuum never ran");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(engine.vacuum_figures().runs, done.runs + 1);
        assert!(!engine.store.compaction_owed().unwrap());
    }

    #[test]
    fn an_erasure_serialises_as_done_or_pending() {
        assert_eq!(serde_json::to_value(Erasure::Done).unwrap(), "done");
        assert_eq!(serde_json::to_value(Erasure::Pending).unwrap(), "pending");
    }
}
