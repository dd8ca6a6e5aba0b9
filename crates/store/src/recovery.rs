//! How a storage file comes back after a crash, and what keeps that quick for a large file.
//!
//! A file that was not closed cleanly (the process was killed, the machine lost power) is
//! repaired by redb when it is next opened: by default it reads every page of the file to check
//! the last commit and rebuild its allocator state. On a 1 GiB main file that took 0.5-2.8 s
//! with the file in the OS page cache and 2.1-5.3 s from the disk, and it grows with the file
//! (`docs/durability.md`), so a start after a crash would too.
//!
//! redb can instead record its allocator state in every durable commit ("quick repair"), which
//! the open after a crash loads instead of reading the file; that commit is then written in two
//! phases (a second fsync, before the commit slot is switched) and serialises the state, whose
//! size grows with the file. Only the last durable commit before a crash matters, and every
//! commit deletes the previous record, so the choice is made for every durable commit alike: a
//! file at least [`FileOptions::fast_recovery_from_bytes`] long records it, a smaller one
//! (whose repair is short) does not pay for it. Non-durable commits never record it (redb
//! reads the setting in durable commits only; see [`set_non_durable`]).
//!
//! A debug build gains nothing from it: there redb walks every page after loading the recorded
//! state, to check it (`mark_allocated_page_for_debug`), which takes as long as the repair.
//!
//! Commits that record no state although the file is long: redb's compaction's own commits
//! (`Store::compact` and a vacuum follow them with one that does), a copy into a vacuum's or a
//! backup's new file before its last commit, and any commit while redb has latched that its
//! allocator state needs a repair (after a transaction was dropped in a panic). A crash right
//! after one of those costs a full repair, never data.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redb::SetDurabilityError;

/// Files at least this long (512 MiB) record their allocator state in every durable commit. A
/// smaller file's full repair stays under about 1.5 s even from the disk, so a start after a
/// crash stays under 2 s either way; a larger one's grows with it (2.1-5.3 s at 1 GiB from the
/// disk), while recording the state cost eight concurrent single-record writers a quarter to a
/// half of their throughput (`docs/durability.md`).
pub const DEFAULT_FAST_RECOVERY_FROM_BYTES: u64 = 512 << 20;

/// How the store opens each of its files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileOptions {
    /// The main file's page cache (dedicated files get a share, see `placement`).
    pub cache_bytes: usize,
    /// From this file length on, every durable commit records redb's allocator state, so that
    /// the open after a crash loads it instead of reading the whole file (module docs); `None`:
    /// never.
    pub fast_recovery_from_bytes: Option<u64>,
}

impl FileOptions {
    /// The defaults, with a page cache of `cache_bytes`.
    pub fn with_cache(cache_bytes: usize) -> FileOptions {
        FileOptions {
            cache_bytes,
            fast_recovery_from_bytes: Some(DEFAULT_FAST_RECOVERY_FROM_BYTES),
        }
    }
}

/// What opening a file took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenReport {
    /// The whole open, repair included.
    pub took: Duration,
    /// Whether the storage engine had to read the whole file to repair it: the file was not
    /// closed cleanly and its last durable commit recorded no allocator state.
    pub full_repair: bool,
}

/// Makes `txn` commit without syncing. Every non-durable transaction of the store is made so
/// here. It also turns off the allocator state's record that [`crate::db::Open::begin_write`]
/// may have turned on: redb reads that setting only in a durable commit, so this changes
/// nothing today, but the transaction then says what it does.
pub(crate) fn set_non_durable(txn: &mut crate::db::WriteTxn) -> Result<(), SetDurabilityError> {
    txn.set_non_durable()
}

/// Watches an open for redb's full repair, and logs it: a start that reads a whole large file
/// takes long, and whoever waits for it should know why.
pub(crate) struct RepairWatch {
    repaired: Arc<AtomicBool>,
    file: String,
}

impl RepairWatch {
    pub(crate) fn new(file: &std::path::Path) -> RepairWatch {
        RepairWatch {
            repaired: Arc::default(),
            file: file.display().to_string(),
        }
    }

    /// The callback redb calls as a full repair starts and progresses.
    pub(crate) fn callback(&self, len: u64) -> impl Fn(&mut redb::RepairSession) + 'static {
        let (repaired, file) = (Arc::clone(&self.repaired), self.file.clone());
        move |_| {
            if !repaired.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    file = %file,
                    bytes = len,
                    "the storage file was not closed cleanly and its last commit recorded no \
                     allocator state: repairing it, which reads the whole file"
                );
            }
        }
    }

    /// The report of the open that took `took`.
    pub(crate) fn finish(self, took: Duration) -> OpenReport {
        let full_repair = self.repaired.load(Ordering::Relaxed);
        if full_repair {
            tracing::warn!(
                file = %self.file,
                seconds = took.as_secs_f64(),
                "the storage file is repaired"
            );
        }
        OpenReport { took, full_repair }
    }
}
