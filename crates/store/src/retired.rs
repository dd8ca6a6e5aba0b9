//! Main databases a vacuum swapped out, kept until no read snapshot holds them and closed then
//! on a write path (a commit, the next vacuum), never on a reader's thread.
//!
//! Why: closing a database commits durably and syncs its file (redb 4.6 does so on drop), and
//! the old file, which no name reaches any more, keeps its page cache and disk blocks until
//! then. If the last reader's drop closed it, a search worker or an export's thread would pay
//! for that sync. A read snapshot keeps its database open (`db`), so one begun before the swap
//! (a long export) keeps the old file's blocks in use until it ends; the next commit after it
//! ends closes the file.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, TryLockError};

use crate::db::Db;

#[derive(Default)]
pub(crate) struct Retired {
    dbs: Mutex<Vec<Db>>,
    /// Whether `dbs` holds any: a commit looks at this alone when there is none.
    any: AtomicBool,
}

impl Retired {
    /// Keeps `db`, which a vacuum swapped out, until [`Retired::close_unread`] closes it.
    pub(crate) fn park(&self, db: Db) {
        let mut dbs = self.dbs.lock().unwrap_or_else(|e| e.into_inner());
        dbs.push(db);
        self.any.store(true, Ordering::SeqCst);
    }

    /// Closes the parked databases that no read snapshot holds any more, on this thread.
    /// Returns how many stay parked (held by a snapshot still in flight, or by a close under
    /// way on another thread).
    pub(crate) fn close_unread(&self) -> usize {
        if !self.any.load(Ordering::SeqCst) {
            return 0;
        }
        // Another write closing them already: this one does not wait for it.
        let mut dbs = match self.dbs.try_lock() {
            Ok(dbs) => dbs,
            // A list changed by single pushes and swaps: a panic cannot leave it half-made.
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => return 1,
        };
        // A parked database gains no handle: only the snapshots begun before the swap have
        // one, so a count of one (this list's) stays one.
        let (unread, held): (Vec<Db>, Vec<Db>) = std::mem::take(&mut *dbs)
            .into_iter()
            .partition(Db::is_last_handle);
        let left = held.len();
        *dbs = held;
        self.any.store(left > 0, Ordering::SeqCst);
        drop(dbs);
        // Closed outside the lock: another write need not wait for these syncs.
        drop(unread);
        left
    }

    /// How many databases are parked now.
    #[cfg(test)]
    pub(crate) fn parked(&self) -> usize {
        self.dbs.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}
