//! A storage backend that lets a group-commit leader take its fsync outside redb's write lock.
//!
//! redb syncs the file inside a durable commit, while it holds its single write lock, so every
//! write of the next group waits out the whole fsync instead of committing meanwhile. With this
//! backend the leader runs its durable commit inside [`FileSync::deferring`]: the `sync_data`
//! of that commit only records that the file owes a sync, the commit returns and releases the
//! lock, and the leader then syncs the file itself ([`FileSync::sync_owed`]) before it
//! acknowledges anything the commit covers. A commit in two phases (one that records the
//! allocator state, see `recovery`) syncs twice: its first sync is owed too, and paid inside
//! the commit by the header's write that follows it (the rule below), so only the last one is
//! left for after the lock. Every other `sync_data` (non-grouped writes,
//! repair, shutdown) syncs at once, as redb's own file backend does.
//!
//! Only a thread inside one of the store's write paths (marked with [`write_path`]) pays an
//! owed sync when it writes. A read that misses a full page cache may write back pages a
//! non-durable commit left buffered; while a sync is owed, that write-back fails with
//! `WouldBlock` instead of making the reader (another tenant's search) wait out an fsync.
//! redb (4.6, `cached_file.rs`) does such a write-back best effort: a failure keeps the page
//! buffered, is not latched as an I/O failure, and the read evicts a read-cache page instead.
//!
//! Why this keeps redb's crash guarantee: once a durable commit returns, redb may reuse pages
//! that only the previous durable commit referenced. Were such a page overwritten on disk before
//! the new header is durable, a power loss could leave the old header pointing at overwritten
//! pages. So while a sync is owed, every write and length change that would reach the file
//! performs that sync first, or (outside the write paths) is refused: nothing written after a
//! deferred commit reaches the disk ahead of it. Non-durable commits keep their pages in redb's write buffer, so they rarely write to the
//! file at all and run freely during the fsync; the next durable commit's first write waits for
//! it (in practice it is over by then: a group commits one sync at a time).
//!
//! A sync or write that fails (a full disk, an I/O error) poisons the backend: every later
//! write and sync fails, so redb refuses further commits until the file is reopened (the kernel may have dropped the pages that did
//! not reach the disk, and retrying the sync would falsely report them durable). A commit
//! without syncing may not touch the file at all, so the store also asks
//! [`FileSync::failed`] before each write and its commit.
//!
//! A thread that drops the last handle on a database after a leader panicked with a sync owed
//! pays it first ([`FileSync::settle_before_close`], from `Store`'s and a dedicated file's
//! drop), so redb's close can write its shutdown state.

use std::cell::Cell;
use std::fs::File;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

/// The error of redb's backend I/O methods (without its experimental API).
type BackendIoError = std::io::Error;

thread_local! {
    /// The backend whose next `sync_data` on this thread is deferred (its address), or 0.
    static DEFERRING: Cell<usize> = const { Cell::new(0) };
    /// How many of the store's write paths this thread is inside (they may nest).
    static WRITING: Cell<u32> = const { Cell::new(0) };
}

/// Marks the current thread as inside one of the store's write paths (a write transaction,
/// a group's sync, compaction, a file's close) until dropped: its writes to a file pay an
/// owed sync. Hold it across the whole transaction, its commit and its drop (an abort).
#[must_use = "the thread is marked only while the guard lives"]
pub(crate) struct WritePath {
    /// Not `Send`: the mark is the creating thread's.
    _thread: std::marker::PhantomData<*const ()>,
}

pub(crate) fn write_path() -> WritePath {
    crate::thread_writes::check_write_allowed();
    closing_path()
}

/// Whether this thread is inside one of the store's write paths: a write transaction (whose
/// storage write lock every other writer of the file waits for), its commit or a group's sync.
/// For the engine's check that slow work (a forward pass) never runs there.
pub fn in_write_path() -> bool {
    WRITING.get() > 0
}

/// [`write_path`] for the leader of a batch of writes, which runs the writes of other callers:
/// each was checked against `crate::thread_writes` on its own caller's thread before it was
/// queued, and the leader itself is one of those callers.
pub(crate) fn batch_write_path() -> WritePath {
    closing_path()
}

/// [`write_path`] for closing a file, which whatever thread drops the last handle on it
/// does (a reader's, say): not a write that thread chose, so not checked against
/// `crate::thread_writes`.
fn closing_path() -> WritePath {
    WRITING.set(WRITING.get() + 1);
    WritePath {
        _thread: std::marker::PhantomData,
    }
}

impl Drop for WritePath {
    fn drop(&mut self) {
        WRITING.set(WRITING.get() - 1);
    }
}

#[derive(Debug)]
struct Inner {
    /// redb's own file backend (another in tests).
    file: Box<dyn StorageBackend>,
    /// Set (under `state`) when a deferred sync is owed; read without the lock on every write,
    /// so that a write takes no lock when no sync is owed (two atomic loads).
    owed: AtomicBool,
    /// Set (under `state`, beside its reason) once a sync or write failed; read without the
    /// lock.
    failed: AtomicBool,
    /// The file's length as last set through this backend (redb grows and shrinks its file
    /// only with `set_len`), so that a transaction can ask it without a system call.
    len: AtomicU64,
    state: Mutex<State>,
    /// For tests of the store above: the fsyncs done, and whether the next one fails as a
    /// disk's would (after the deferred commit succeeded).
    #[cfg(test)]
    test_syncs: AtomicU64,
    #[cfg(test)]
    test_fail_next_sync: AtomicBool,
}

#[derive(Debug, Default)]
struct State {
    /// Why a sync or write failed; the file then accepts no more writes.
    failed: Option<String>,
}

/// The backend redb is given; [`FileSync`] is the store's handle on the same file.
#[derive(Debug)]
pub(crate) struct DeferredSyncBackend(Arc<Inner>);

/// The store's handle on a file's syncs.
#[derive(Debug, Clone)]
pub(crate) struct FileSync(Arc<Inner>);

/// Wraps `file` (opened read-write) in the backend, with the handle that syncs it.
pub(crate) fn backend(file: File) -> Result<(DeferredSyncBackend, FileSync), redb::DatabaseError> {
    Ok(wrap(Box::new(FileBackend::new(file)?)))
}

fn wrap(file: Box<dyn StorageBackend>) -> (DeferredSyncBackend, FileSync) {
    // A length that cannot be read is taken as 0: it only decides whether commits record the
    // allocator state (see `recovery`), and redb reports the unreadable file itself.
    let len = file.len().unwrap_or(0);
    let inner = Arc::new(Inner {
        file,
        owed: AtomicBool::new(false),
        failed: AtomicBool::new(false),
        len: AtomicU64::new(len),
        state: Mutex::default(),
        #[cfg(test)]
        test_syncs: AtomicU64::new(0),
        #[cfg(test)]
        test_fail_next_sync: AtomicBool::new(false),
    });
    (DeferredSyncBackend(Arc::clone(&inner)), FileSync(inner))
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is one field set in a single statement; a panic cannot leave it half-made.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn address(&self) -> usize {
        self as *const Inner as usize
    }

    /// Syncs the file if a sync is owed (or always, with `force`); fails once any sync failed.
    fn sync(&self, force: bool) -> Result<(), BackendIoError> {
        let mut st = self.lock();
        // Nothing owed: the last deferred commit's sync was paid, and succeeded (a failed one
        // stays owed), so its group is durable even if a later write failed the file.
        if !force && !self.owed.load(Ordering::Acquire) {
            return Ok(());
        }
        if let Some(why) = &st.failed {
            return Err(poisoned(why));
        }
        // The lock is held through the fsync: a write waiting for the owed sync must not pass
        // before it has finished.
        #[cfg(test)]
        let synced = if self.test_fail_next_sync.swap(false, Ordering::AcqRel) {
            Err(std::io::Error::from_raw_os_error(5))
        } else {
            self.test_syncs.fetch_add(1, Ordering::AcqRel);
            self.file.sync_data()
        };
        #[cfg(not(test))]
        let synced = self.file.sync_data();
        match synced {
            Ok(()) => {
                self.owed.store(false, Ordering::Release);
                Ok(())
            }
            Err(e) => {
                Self::latch(&mut st, &self.failed, &e);
                Err(e)
            }
        }
    }

    /// Records the first failure of the file; every later write and sync fails with it.
    fn latch(st: &mut State, failed: &AtomicBool, e: &BackendIoError) {
        if st.failed.is_none() {
            st.failed = Some(crate::error::describe_io(e));
        }
        failed.store(true, Ordering::Release);
    }

    /// A change to the file that failed fails every later one: redb itself refuses further
    /// commits after it, and the store must refuse its non-durable ones too.
    fn failing(&self, result: Result<(), BackendIoError>) -> Result<(), BackendIoError> {
        if let Err(e) = &result {
            Self::latch(&mut self.lock(), &self.failed, e);
        }
        result
    }

    /// What every change to the file does first: pay the sync a deferred commit owes, if this
    /// thread is in a write path; anyone else (a reader's write-back) is told to come back.
    fn barrier(&self) -> Result<(), BackendIoError> {
        // A reader on a thread that must not write (a lowest-priority worker) never writes
        // buffered pages back itself: that write would hold the file at that priority.
        if WRITING.get() == 0 && !crate::thread_writes::writes_allowed_here() {
            return Err(BackendIoError::new(
                std::io::ErrorKind::WouldBlock,
                "this thread must not write to storage",
            ));
        }
        if self.owed.load(Ordering::Acquire) {
            if WRITING.get() == 0 {
                return Err(BackendIoError::new(
                    std::io::ErrorKind::WouldBlock,
                    "a sync is owed, and only a writer pays it",
                ));
            }
            return self.sync(false);
        }
        if self.failed.load(Ordering::Acquire) {
            return Err(poisoned(self.lock().failed.as_deref().unwrap_or("?")));
        }
        Ok(())
    }
}

fn poisoned(why: &str) -> BackendIoError {
    std::io::Error::other(format!(
        "an earlier write or sync of this file failed: {why}"
    ))
}

impl FileSync {
    /// Runs `commit` (one durable commit of this file) so that its fsync is owed instead of
    /// done; call [`FileSync::sync_owed`] after it, before acknowledging what it covers.
    pub(crate) fn deferring<R>(&self, commit: impl FnOnce() -> R) -> R {
        struct Restore(usize);
        impl Drop for Restore {
            fn drop(&mut self) {
                DEFERRING.set(self.0);
            }
        }
        let _restore = Restore(DEFERRING.replace(self.0.address()));
        commit()
    }

    /// Syncs the file if a deferred commit owes it; returns once everything written before the
    /// call is on disk (a sync done meanwhile by a write's barrier counts).
    pub(crate) fn sync_owed(&self) -> Result<(), BackendIoError> {
        self.0.sync(false)
    }

    /// Before the file's database is dropped (its close writes the allocator state and a
    /// header): pays a sync a panicking leader left owed, on this thread, whatever it is.
    pub(crate) fn settle_before_close(&self) {
        if self.0.owed.load(Ordering::Acquire) {
            let _writing = closing_path();
            // An error is left for the close to meet: the file refuses writes after it.
            let _ = self.0.sync(false);
        }
    }

    /// Fails the file as a failed sync would: every later write and sync is refused, until the
    /// file is reopened. For a failure around the file that the backend cannot see (a
    /// vacuum's directory sync).
    pub(crate) fn fail(&self, e: &std::io::Error) {
        Inner::latch(&mut self.0.lock(), &self.0.failed, e);
    }

    /// The fsyncs this file has done, for tests of the store above this backend.
    #[cfg(test)]
    pub(crate) fn syncs_for_test(&self) -> u64 {
        self.0.test_syncs.load(Ordering::Acquire)
    }

    /// Makes the file's next fsync fail (EIO) as a disk's would, for tests of the store above.
    #[cfg(test)]
    pub(crate) fn fail_next_sync_for_test(&self) {
        self.0.test_fail_next_sync.store(true, Ordering::Release);
    }

    /// What a failed sync leaves behind, for tests of the store above this backend.
    #[cfg(test)]
    pub(crate) fn fail_for_test(&self) {
        self.0.lock().failed = Some("disk on fire".into());
        self.0.failed.store(true, Ordering::Release);
    }

    /// The file's length in bytes, as redb last set it (or as it was opened).
    pub(crate) fn file_len(&self) -> u64 {
        self.0.len.load(Ordering::Relaxed)
    }

    /// Whether a sync or write of this file has failed: nothing written since is known to
    /// reach the disk, so the store refuses further writes, even non-durable ones (which redb
    /// would commit and make visible without touching the file, so without seeing the failure).
    pub(crate) fn failed(&self) -> bool {
        self.0.failed.load(Ordering::Acquire)
    }

    /// Why the file failed, if it did.
    pub(crate) fn failure(&self) -> Option<String> {
        if !self.failed() {
            return None;
        }
        self.0.lock().failed.clone()
    }
}

impl StorageBackend for DeferredSyncBackend {
    fn len(&self) -> Result<u64, BackendIoError> {
        self.0.file.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), BackendIoError> {
        self.0.file.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), BackendIoError> {
        self.0.barrier()?;
        self.0.failing(self.0.file.set_len(len))?;
        self.0.len.store(len, Ordering::Relaxed);
        Ok(())
    }

    fn sync_data(&self) -> Result<(), BackendIoError> {
        if DEFERRING.get() == self.0.address() {
            let st = self.0.lock();
            if let Some(why) = &st.failed {
                return Err(poisoned(why));
            }
            self.0.owed.store(true, Ordering::Release);
            return Ok(());
        }
        self.0.sync(true)
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), BackendIoError> {
        self.0.barrier()?;
        self.0.failing(self.0.file.write(offset, data))
    }

    fn close(&self) -> Result<(), BackendIoError> {
        // A deferred commit whose leader never synced (it panicked) is synced before the file
        // is let go; an error here is redb's to report, and the file's lock is released anyway.
        let _writing = closing_path();
        let synced = self.0.sync(false);
        self.0.file.close()?;
        synced
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.0.file.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.0.file.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.0.file.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.0.file.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.0.file.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.0.file.query_lock_range(start, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::backends::InMemoryBackend;
    use redb::{Database, Durability, ReadableDatabase, ReadableTableMetadata, TableDefinition};

    const T: TableDefinition<u64, &[u8]> = TableDefinition::new("t");

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Op {
        Write,
        SetLen,
        Sync,
    }

    /// An in-memory file that logs what reaches it, and can be told to fail its syncs, or its
    /// writes as a full disk does.
    #[derive(Debug, Default)]
    struct Recording {
        mem: InMemoryBackend,
        log: Arc<Mutex<Vec<Op>>>,
        fail_syncs: Arc<AtomicBool>,
        disk_full: Arc<AtomicBool>,
    }

    impl StorageBackend for Recording {
        fn len(&self) -> Result<u64, BackendIoError> {
            self.mem.len()
        }
        fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), BackendIoError> {
            self.mem.read(offset, out)
        }
        fn set_len(&self, len: u64) -> Result<(), BackendIoError> {
            self.log.lock().unwrap().push(Op::SetLen);
            self.mem.set_len(len)
        }
        fn sync_data(&self) -> Result<(), BackendIoError> {
            if self.fail_syncs.load(Ordering::SeqCst) {
                return Err(std::io::Error::other("disk on fire"));
            }
            self.log.lock().unwrap().push(Op::Sync);
            Ok(())
        }
        fn write(&self, offset: u64, data: &[u8]) -> Result<(), BackendIoError> {
            if self.disk_full.load(Ordering::SeqCst) {
                return Err(std::io::Error::from_raw_os_error(28));
            }
            self.log.lock().unwrap().push(Op::Write);
            self.mem.write(offset, data)
        }
    }

    fn recording() -> (
        DeferredSyncBackend,
        FileSync,
        Arc<Mutex<Vec<Op>>>,
        Arc<AtomicBool>,
    ) {
        let file = Recording::default();
        let (log, fail) = (Arc::clone(&file.log), Arc::clone(&file.fail_syncs));
        let (backend, sync) = wrap(Box::new(file));
        (backend, sync, log, fail)
    }

    fn take(log: &Mutex<Vec<Op>>) -> Vec<Op> {
        std::mem::take(&mut *log.lock().unwrap())
    }

    #[test]
    fn a_deferred_sync_is_owed_until_synced_and_paid_once() {
        let (backend, sync, log, _) = recording();
        sync.deferring(|| backend.sync_data()).unwrap();
        assert_eq!(take(&log), vec![], "deferred: nothing synced yet");
        sync.sync_owed().unwrap();
        sync.sync_owed().unwrap();
        assert_eq!(
            take(&log),
            vec![Op::Sync],
            "one sync pays what is owed, once"
        );
        // Outside `deferring`, a sync is immediate, as with redb's own backend.
        backend.sync_data().unwrap();
        assert_eq!(take(&log), vec![Op::Sync]);
    }

    #[test]
    fn nothing_reaches_the_file_ahead_of_an_owed_sync() {
        let (backend, sync, log, _) = recording();
        let _writing = write_path();
        backend.set_len(32).unwrap();
        backend.write(0, &[1; 16]).unwrap();
        sync.deferring(|| backend.sync_data()).unwrap();
        backend.write(16, &[2; 16]).unwrap();
        sync.deferring(|| backend.sync_data()).unwrap();
        backend.set_len(64).unwrap();
        assert_eq!(
            take(&log),
            vec![
                Op::SetLen,
                Op::Write,
                Op::Sync,
                Op::Write,
                Op::Sync,
                Op::SetLen
            ]
        );
        // The write paid the debt: the leader's own sync then has nothing left to do.
        sync.sync_owed().unwrap();
        assert_eq!(take(&log), vec![]);
    }

    #[test]
    fn a_reader_on_a_thread_that_must_not_write_never_writes_back() {
        let (backend, _, log, _) = recording();
        std::thread::scope(|s| {
            s.spawn(|| {
                let _mark = crate::thread_writes::forbid_writes_on_this_thread();
                let err = backend.write(0, &[1; 16]).unwrap_err();
                assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
                assert_eq!(
                    backend.set_len(32).unwrap_err().kind(),
                    std::io::ErrorKind::WouldBlock
                );
            })
            .join()
            .unwrap();
        });
        assert_eq!(take(&log), vec![], "nothing reached the file");
        // Unmarked, with no sync owed, a reader's write-back goes through as before.
        backend.set_len(16).unwrap();
        backend.write(0, &[1; 16]).unwrap();
        assert_eq!(take(&log), vec![Op::SetLen, Op::Write]);
    }

    #[test]
    fn another_files_commit_is_not_deferred() {
        let (a, a_sync, a_log, _) = recording();
        let (b, _, b_log, _) = recording();
        a_sync.deferring(|| b.sync_data()).unwrap();
        assert_eq!(take(&b_log), vec![Op::Sync]);
        a.sync_data().unwrap();
        assert_eq!(take(&a_log), vec![Op::Sync]);
    }

    #[test]
    fn a_failed_sync_poisons_the_file() {
        let (backend, sync, _, fail) = recording();
        let _writing = write_path();
        assert!(!sync.failed());
        sync.deferring(|| backend.sync_data()).unwrap();
        fail.store(true, Ordering::SeqCst);
        assert!(sync.sync_owed().is_err());
        assert!(sync.failed());
        fail.store(false, Ordering::SeqCst);
        // The pages of the failed sync may be gone: nothing may claim durability after it.
        assert!(sync.sync_owed().is_err());
        assert!(backend.sync_data().is_err());
        assert!(backend.write(0, &[0; 8]).is_err());
        assert!(sync.deferring(|| backend.sync_data()).is_err());
    }

    /// A write that fails (a full disk) poisons the file as a failed sync does, and says why:
    /// redb refuses further commits after it, and so must the store's non-durable ones.
    #[test]
    fn a_failed_write_poisons_the_file_and_names_a_full_disk() {
        let file = Recording::default();
        let full = Arc::clone(&file.disk_full);
        let (backend, sync) = wrap(Box::new(file));
        let _writing = write_path();
        backend.set_len(8).unwrap();
        backend.write(0, &[0; 8]).unwrap();
        assert_eq!(sync.failure(), None);
        full.store(true, Ordering::SeqCst);
        assert!(backend.write(0, &[0; 8]).is_err());
        let why = sync.failure().expect("latched");
        assert!(why.contains("disk is full"), "{why}");
        // Space coming back does not make the file writable again: what the failed write
        // left unknown stays unknown until the file is reopened.
        full.store(false, Ordering::SeqCst);
        assert!(backend.write(0, &[0; 8]).is_err());
        assert!(backend.sync_data().is_err());
        // A group whose owed sync a write paid before the failure is durable: its leader is
        // told so, not that the file failed.
        let (backend, sync) = wrap(Box::new(Recording {
            disk_full: Arc::clone(&full),
            ..Recording::default()
        }));
        backend.set_len(8).unwrap();
        sync.deferring(|| backend.sync_data()).unwrap();
        backend.write(0, &[0; 8]).unwrap(); // pays the owed sync first
        full.store(true, Ordering::SeqCst);
        assert!(backend.write(0, &[0; 8]).is_err());
        assert!(sync.failed());
        sync.sync_owed().unwrap();
        full.store(false, Ordering::SeqCst);
        // A reader's refused write-back is not a failure of the file.
        let (backend, sync, _, _) = recording();
        backend.set_len(8).unwrap();
        sync.deferring(|| backend.sync_data()).unwrap();
        drop(_writing);
        let refused = backend.write(0, &[0; 8]).unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::WouldBlock);
        assert_eq!(sync.failure(), None);
    }

    /// With redb itself on top: grouped writes (non-durable commits, then a durable commit
    /// whose sync is deferred) never write to the file while a sync is owed, and every
    /// deferred commit's data reads back after its sync.
    #[test]
    fn redb_never_writes_ahead_of_a_deferred_sync() {
        let file = Recording::default();
        let log = Arc::clone(&file.log);
        let (backend, sync) = wrap(Box::new(file));
        let owed_log = Arc::new(Mutex::new(Vec::new()));
        let _writing = write_path();
        let db = Database::builder().create_with_backend(backend).unwrap();
        let mut key = 0u64;
        for round in 0..40 {
            for _ in 0..(round % 7 + 1) {
                let mut txn = db.begin_write().unwrap();
                txn.set_durability(Durability::None).unwrap();
                {
                    let mut t = txn.open_table(T).unwrap();
                    // Overwrites as well as inserts, so pages are freed and reused.
                    t.insert(key % 50, vec![round as u8; 700].as_slice())
                        .unwrap();
                    key += 1;
                }
                txn.commit().unwrap();
            }
            let before = log.lock().unwrap().len();
            let txn = db.begin_write().unwrap();
            sync.deferring(|| txn.commit()).unwrap();
            // The point the deferred commit reached: from here until a sync, no write.
            owed_log.lock().unwrap().push(log.lock().unwrap().len());
            assert!(
                log.lock().unwrap()[before..]
                    .iter()
                    .all(|op| *op != Op::Sync)
            );
            if round % 3 == 0 {
                // Sometimes the next group writes before the leader syncs: its writes must
                // pay the debt first.
                let mut txn = db.begin_write().unwrap();
                txn.set_durability(Durability::None).unwrap();
                txn.open_table(T)
                    .unwrap()
                    .insert(1000 + round, [9u8; 8].as_slice())
                    .unwrap();
                txn.commit().unwrap();
            }
            sync.sync_owed().unwrap();
        }
        let log = log.lock().unwrap().clone();
        for &at in owed_log.lock().unwrap().iter() {
            assert!(
                matches!(log.get(at), None | Some(Op::Sync)),
                "a write reached the file ahead of an owed sync: {:?}",
                &log[at..(at + 4).min(log.len())]
            );
        }
        let read = db.begin_read().unwrap();
        assert_eq!(read.open_table(T).unwrap().len().unwrap(), 50 + 14);
    }

    /// A commit that records the allocator state is written in two phases (see `recovery`):
    /// the slot it fills must be on disk before the header switches to it. Deferring its sync
    /// must not reorder that: the first phase's sync is paid, by the header's write, before
    /// that write reaches the file; only the last sync is left owed.
    #[test]
    fn a_two_phase_commit_syncs_before_switching_slots_and_defers_only_its_last_sync() {
        let file = Recording::default();
        let log = Arc::clone(&file.log);
        let (backend, sync) = wrap(Box::new(file));
        let _writing = write_path();
        let db = Database::builder().create_with_backend(backend).unwrap();
        let mut txn = db.begin_write().unwrap();
        txn.set_durability(Durability::None).unwrap();
        txn.open_table(T)
            .unwrap()
            .insert(1, [1u8; 700].as_slice())
            .unwrap();
        txn.commit().unwrap();
        let before = log.lock().unwrap().len();
        let mut txn = db.begin_write().unwrap();
        txn.set_quick_repair(true);
        sync.deferring(|| txn.commit()).unwrap();
        let ops = log.lock().unwrap()[before..].to_vec();
        assert_eq!(
            ops.iter().filter(|op| **op == Op::Sync).count(),
            1,
            "one sync inside the commit, the other owed: {ops:?}"
        );
        assert_eq!(
            &ops[ops.len() - 2..],
            &[Op::Sync, Op::Write],
            "the header switched slots without the slot on disk: {ops:?}"
        );
        sync.sync_owed().unwrap();
        assert_eq!(log.lock().unwrap().last(), Some(&Op::Sync));
    }

    #[test]
    fn only_a_write_path_pays_an_owed_sync() {
        let (backend, sync, log, _) = recording();
        backend.set_len(16).unwrap();
        take(&log);
        sync.deferring(|| backend.sync_data()).unwrap();
        let refused = backend.write(0, &[1; 8]).unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::WouldBlock);
        assert_eq!(
            take(&log),
            vec![],
            "a reader's write-back neither syncs nor writes"
        );
        {
            let _writing = write_path();
            backend.write(0, &[1; 8]).unwrap();
        }
        assert_eq!(take(&log), vec![Op::Sync, Op::Write]);
        // Nothing owed: anyone writes.
        backend.write(8, &[2; 8]).unwrap();
        assert_eq!(take(&log), vec![Op::Write]);
    }

    /// A small page cache, pages a non-durable commit left buffered, and a sync owed: a reader
    /// on another thread whose misses would write those pages back reads everything right
    /// without paying the sync, and the owed sync stays the writer's.
    #[test]
    fn a_reader_on_a_full_cache_never_pays_an_owed_sync() {
        let file = Recording::default();
        let log = Arc::clone(&file.log);
        let (backend, sync) = wrap(Box::new(file));
        let _writing = write_path();
        let db = Arc::new(
            Database::builder()
                .set_cache_size(256 << 10)
                .create_with_backend(backend)
                .unwrap(),
        );
        // About 2 MiB of records, eight times the cache, so a full scan misses.
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(T).unwrap();
            for k in 0..3000u64 {
                t.insert(k, vec![(k % 251) as u8; 700].as_slice()).unwrap();
            }
        }
        txn.commit().unwrap();
        // The group's durable commit, its sync owed; then the next group's non-durable commit,
        // whose pages stay in redb's write buffer.
        let txn = db.begin_write().unwrap();
        sync.deferring(|| txn.commit()).unwrap();
        let mut txn = db.begin_write().unwrap();
        txn.set_durability(Durability::None).unwrap();
        {
            let mut t = txn.open_table(T).unwrap();
            for k in [7u64, 1500, 2999] {
                t.insert(k, [255u8; 700].as_slice()).unwrap();
            }
        }
        txn.commit().unwrap();
        assert!(
            sync.0.owed.load(Ordering::Acquire),
            "the premise: a sync is owed"
        );
        take(&log);
        let reader = {
            let db = Arc::clone(&db);
            std::thread::spawn(move || {
                let read = db.begin_read().unwrap();
                let t = read.open_table(T).unwrap();
                for pass in 0..2 {
                    for k in 0..3000u64 {
                        let want = if [7, 1500, 2999].contains(&k) {
                            255
                        } else {
                            (k % 251) as u8
                        };
                        let v = t.get(k).unwrap().unwrap();
                        assert_eq!(v.value(), [want; 700].as_slice(), "key {k}, pass {pass}");
                    }
                }
            })
        };
        reader.join().unwrap();
        assert!(
            sync.0.owed.load(Ordering::Acquire),
            "the reader paid the owed sync"
        );
        assert!(
            take(&log).iter().all(|op| *op != Op::Sync),
            "a sync ran while only the reader was at work"
        );
        // The writer pays it, and the file stays usable: a durable commit after it.
        sync.sync_owed().unwrap();
        assert_eq!(take(&log), vec![Op::Sync]);
        let txn = db.begin_write().unwrap();
        txn.open_table(T)
            .unwrap()
            .insert(5000, [1u8; 8].as_slice())
            .unwrap();
        txn.commit().unwrap();
        let read = db.begin_read().unwrap();
        assert_eq!(read.open_table(T).unwrap().len().unwrap(), 3001);
    }
}
