//! A vacuum that could not run when an erasure asked for it.
//!
//! A purge's erasure commits at once, but its bytes leave the data file only when the file is
//! rewritten into a new one (`Store::vacuum`), which can fail (no room for the new file, an
//! I/O error while writing it). Failing the purge then would report an erasure that did happen
//! as failed and leave nobody to finish it, so the vacuum is owed instead: the store records
//! it (so a restart before it runs vacuums at start), and one thread retries it, every
//! [`FIRST_RETRY`] at first and less often while it keeps failing, until it runs; the engine's
//! drop tries it a last time. (Named for the compaction it was before the vacuum replaced it;
//! the stored flag keeps that name.)

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use strata_store::{Store, StoreError, Vacuumed};

use crate::vacuum_record::{VacuumFigures, VacuumRecord};

/// How soon an owed vacuum is tried again, doubled after each failure up to [`LAST_RETRY`]
/// (a lasting cause, such as a failed file, must not take the database's lock every second).
const FIRST_RETRY: Duration = Duration::from_secs(1);
const LAST_RETRY: Duration = Duration::from_secs(60);

#[derive(Default)]
struct State {
    /// A compaction is owed (and a thread is trying it).
    owed: bool,
    /// The engine is closing: the thread ends.
    stop: bool,
    /// Counts [`OwedCompaction::owe`] calls: a vacuum that began after the last of them has
    /// done the owed work (see [`OwedCompaction::settled`]).
    owes: u64,
    /// Bumped when a vacuum other than the thread's settled what was owed: the thread started
    /// before it ends.
    generation: u64,
}

/// What was owed when a vacuum began ([`OwedCompaction::ticket`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket(u64);

pub(crate) struct OwedCompaction {
    state: Arc<(Mutex<State>, Condvar)>,
    /// Every vacuum of the main file runs through it (this thread's and the engine's).
    pub(crate) record: Arc<VacuumRecord>,
    /// Retry threads not yet joined: one runs at a time, but one a settled vacuum ended may
    /// still be finishing a vacuum of its own, which no request waits for.
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// The store the owed compaction is of, for the last try at the engine's drop.
    store: Mutex<Option<Weak<Store>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Flags and handles set in single statements; a panic cannot leave them half-made.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Vacuums `store`, which settles its record of an owed vacuum at the swap unless an erasure
/// set it again during the copy (then tried again: that erasure's bytes may be in the file).
fn compact_now(store: &Store, record: &VacuumRecord) -> Result<(), StoreError> {
    match record.vacuum(store, "owed")? {
        Vacuumed::Done { settled: true } => Ok(()),
        Vacuumed::Done { settled: false } => Err(StoreError::Engine(
            "an erasure committed during the vacuum's copy; it is vacuumed again".into(),
        )),
    }
}

impl OwedCompaction {
    /// Owes nothing yet; `file` is the main file its vacuums rewrite.
    pub(crate) fn new(file: PathBuf) -> OwedCompaction {
        OwedCompaction {
            state: Arc::default(),
            record: Arc::new(VacuumRecord::new(file)),
            threads: Mutex::default(),
            store: Mutex::default(),
        }
    }

    /// The vacuums run so far, and whether one is owed now (erased bytes still in the file).
    pub(crate) fn figures(&self) -> VacuumFigures {
        self.record.figures(lock(&self.state.0).owed)
    }

    /// Owes a compaction of `store`: recorded in it, and tried by a thread until it runs.
    /// Holding only a weak reference, the thread never keeps the store (and its file lock)
    /// alive.
    pub(crate) fn owe(&self, store: &Arc<Store>) {
        if let Err(e) = store.write(|w| w.set_compaction_owed(true)) {
            tracing::warn!(error = %e, "an owed compaction could not be recorded; it is still \
                tried until the server stops");
        }
        *lock(&self.store) = Some(Arc::downgrade(store));
        let mut st = lock(&self.state.0);
        st.owes += 1;
        if st.owed || st.stop {
            return;
        }
        st.owed = true;
        let generation = st.generation;
        drop(st);
        let (state, weak) = (Arc::clone(&self.state), Arc::downgrade(store));
        let record = Arc::clone(&self.record);
        let spawned = std::thread::Builder::new()
            .name("strata-compact".into())
            .spawn(move || retry(&state, &weak, &record, generation));
        match spawned {
            Ok(handle) => {
                // Threads that ended are joined; one still finishing its vacuum is kept, not
                // waited for: this runs on a purge's request.
                let mut threads = lock(&self.threads);
                let (ended, running): (Vec<_>, Vec<_>) =
                    threads.drain(..).partition(JoinHandle::is_finished);
                for old in ended {
                    let _ = old.join();
                }
                threads.extend(running);
                threads.push(handle);
            }
            Err(e) => {
                lock(&self.state.0).owed = false;
                tracing::warn!(error = %e, "cannot start the compaction thread; the next \
                    start compacts");
            }
        }
    }

    /// Taken before a vacuum begins, for [`OwedCompaction::settled`] once it has run.
    pub(crate) fn ticket(&self) -> Ticket {
        Ticket(lock(&self.state.0).owes)
    }

    /// A vacuum that began when `ticket` was taken has run: it rewrote the file after every
    /// erasure owed until then, so nothing is owed any more, unless an erasure owed its vacuum
    /// since (that one's bytes may be in the new file). The thread retrying stops.
    pub(crate) fn settled(&self, ticket: Ticket) {
        let mut st = lock(&self.state.0);
        if st.owes != ticket.0 || !st.owed {
            return;
        }
        st.owed = false;
        st.generation += 1;
        drop(st);
        self.state.1.notify_all();
    }

    /// Ends the thread (at the engine's drop) and tries an owed compaction a last time; if it
    /// still cannot run, the next start runs it.
    pub(crate) fn stop(&self) {
        let owed = {
            let mut st = lock(&self.state.0);
            st.stop = true;
            st.owed
        };
        self.state.1.notify_all();
        let threads = std::mem::take(&mut *lock(&self.threads));
        for handle in threads {
            let _ = handle.join();
        }
        let store = lock(&self.store).take().and_then(|w| w.upgrade());
        if let (true, Some(store)) = (owed, store)
            && let Err(e) = compact_now(&store, &self.record)
        {
            tracing::warn!(error = %e, "owed vacuum left for the next start");
        }
    }
}

fn retry(
    state: &(Mutex<State>, Condvar),
    store: &Weak<Store>,
    record: &VacuumRecord,
    generation: u64,
) {
    let mut wait = FIRST_RETRY;
    let mut st = lock(&state.0);
    loop {
        // Woken early by a stop or a settling vacuum; the condition is checked under the lock
        // before waiting, so a notice given while this thread was vacuuming is not lost.
        st = state
            .1
            .wait_timeout_while(st, wait, |s| !s.stop && s.generation == generation)
            .unwrap_or_else(|e| e.into_inner())
            .0;
        // Stopping, or another vacuum settled what this thread was started for.
        if st.stop || st.generation != generation {
            return;
        }
        let Some(store) = store.upgrade() else {
            st.owed = false;
            return;
        };
        let owes = st.owes;
        drop(st);
        let result = compact_now(&store, record);
        drop(store);
        st = lock(&state.0);
        match result {
            // An erasure owed its vacuum while this one ran: its bytes may be in the new file,
            // so this thread (still the one trying) goes on.
            Ok(()) if st.generation == generation && st.owes != owes => {
                wait = FIRST_RETRY;
            }
            Ok(()) => {
                tracing::info!("owed vacuum done: erased data has left the data file");
                // Unless settled meanwhile (a later owe then has its own thread).
                if st.generation == generation {
                    st.owed = false;
                }
                return;
            }
            // Tried again, less often each time: a lasting cause must not copy the file often.
            Err(e) => {
                tracing::debug!(error = %e, "owed vacuum not possible yet");
                wait = (wait * 2).min(LAST_RETRY);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store whose vacuums fail until the returned obstacle (a non-empty directory where the
    /// vacuum's new file goes) is removed.
    fn blocked_store(dir: &std::path::Path) -> (Arc<Store>, PathBuf, PathBuf) {
        let file = dir.join("main.redb");
        let store = Arc::new(Store::open(&file).expect("store"));
        let obstacle = dir.join("main.redb.vacuum");
        std::fs::create_dir_all(obstacle.join("inside")).expect("obstacle");
        (store, file, obstacle)
    }

    #[test]
    fn a_later_vacuum_that_ran_settles_what_was_owed() {
        let dir = tempfile::tempdir().expect("dir");
        let (store, file, obstacle) = blocked_store(dir.path());
        let owed = OwedCompaction::new(file);
        owed.owe(&store);
        assert!(owed.figures().erasure_pending);
        let ticket = owed.ticket();
        std::fs::remove_dir_all(&obstacle).expect("obstacle removed");
        assert!(matches!(
            owed.record.vacuum(&store, "test").unwrap(),
            Vacuumed::Done { .. }
        ));
        owed.settled(ticket);
        // At once, not when the thread next retries.
        assert!(!owed.figures().erasure_pending);
        owed.stop();
        assert_eq!(owed.figures().runs, 1, "the thread did not vacuum again");
    }

    #[test]
    fn a_vacuum_begun_before_an_owe_settles_nothing() {
        let dir = tempfile::tempdir().expect("dir");
        let (store, file, obstacle) = blocked_store(dir.path());
        let owed = OwedCompaction::new(file);
        let ticket = owed.ticket();
        owed.owe(&store);
        owed.settled(ticket);
        assert!(owed.figures().erasure_pending);
        std::fs::remove_dir_all(&obstacle).expect("obstacle removed");
        owed.stop();
    }
}
