//! The row log: a write of the main file is durable once its rows are in an append-only log,
//! not once the storage engine has committed durably.
//!
//! With group commit alone, every group of writes ended in a durable redb commit: the copies of
//! every B-tree page the group changed (about 11 pages, 45 KiB, per single-record write), written
//! in place and synced, under redb's write lock. Here the transactions of the main file's
//! [`crate::Writer`] (every tenant write, batched or not) commit without syncing and hand their
//! rows (each key written with its final value, or its removal) to this log, in commit order;
//! the writer is acknowledged once the log is synced past its entry, which one waiter at a time
//! does for every entry buffered (one `fdatasync` of a few KiB per write, appended in place).
//! A background thread checkpoints: a durable redb commit, every [`CHECKPOINT_EVERY`] or
//! [`CHECKPOINT_BYTES`] of log, after which the log's older file is free to reuse.
//!
//! **Invariants.**
//! - Every commit of the main file goes through [`crate::db::WriteTxn`], which writes in the
//!   same transaction the log's position: a logged transaction its own sequence number
//!   (`row_log_lsn`), any other one the count of such unlogged commits (`row_log_unlogged`).
//!   So the durable state always says exactly which logged transactions it holds, whoever made
//!   it durable (a checkpoint, a group's sync, a compaction).
//! - Sequence numbers are given under one lock held from before a commit to after its entry is
//!   buffered, so the log's order is the commit order, with no gap (a failed commit takes none).
//! - An entry records the unlogged commits before it. It is acknowledged only once a durable
//!   commit holds them too (an unlogged write, such as a tenant's creation, waits for a durable
//!   commit of its own, and a logged write after it waits for that as well), and it is
//!   replayed only onto a state that holds exactly them: a logged write is never replayed onto
//!   a state missing an unlogged one it followed.
//! - At open, the entries after the durable state's number, of the epoch that state records,
//!   are applied in order in one durable transaction, up to the first that does not decode, does
//!   not follow, or needs unlogged commits the state lacks (none of those was acknowledged);
//!   the epoch then changes (to a random value, which a backup's copy of the main file also
//!   gets), so whatever the files still hold is never read again, nor replayed into a copy.
//! - The log is two files used in turn. A checkpoint first moves appends to the other file,
//!   then commits durably: everything in the file it left is then in the main file, and only
//!   then may the next checkpoint move appends back to it. Files are overwritten in place,
//!   never shortened (an in-place `fdatasync` costs half an append's), except by a scrub.
//! - A purge's vacuum scrubs the log (two checkpoints, each file emptied once left), so no
//!   purged tenant's row outlives the purge in it; so does every start, once the files are
//!   replayed, so that a crash between a purge's vacuum and its scrub leaves nothing either.

mod flusher;
mod format;
mod replay;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::task::Waker;
use std::time::{Duration, Instant};

use redb::WriteTransaction;

pub(crate) use format::{begin_entry, encode_row};
pub(crate) use replay::open;

use crate::StoreError;
use crate::tables::META;

/// The durable state's last logged transaction, in the `meta` table.
pub(crate) const LOG_LSN: &str = "row_log_lsn";
/// How many unlogged transactions the durable state holds, in the `meta` table.
pub(crate) const LOG_UNLOGGED: &str = "row_log_unlogged";
/// The open of the store whose entries the log's files hold, in the `meta` table.
pub(crate) const LOG_EPOCH: &str = "row_log_epoch";

/// A checkpoint at least this often while anything is logged: bounds the log a restart
/// replays and the storage engine's memory of pages committed without syncing.
pub(crate) const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);
/// A checkpoint as soon as this much is logged since the last one.
pub(crate) const CHECKPOINT_BYTES: u64 = 16 << 20;
/// A file left by a checkpoint is written with zeros up to twice what its round held (at most
/// this), so that its next round's appends overwrite in place: on the disks measured, an
/// `fdatasync` of data appended past a file's end costs twice one of data written in place.
const MAX_PREWRITTEN: u64 = 2 * CHECKPOINT_BYTES;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves its state whole (plain stores after the fallible work).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a durable state holds of the log: its last logged transaction and its count of
/// unlogged ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Mark {
    pub(crate) lsn: u64,
    pub(crate) unlogged: u64,
}

/// A logged transaction, as its writer waits for it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Logged {
    pub(crate) lsn: u64,
    /// The unlogged commits before it, which must be durable too before it is acknowledged.
    pub(crate) needs: u64,
}

/// The two files and where appends go.
struct Files {
    /// Syncs of the log so far.
    syncs: u64,
    /// Tests make the next sync fail.
    #[cfg(test)]
    fail_next: bool,
    files: [File; 2],
    paths: [PathBuf; 2],
    active: usize,
    offset: u64,
    /// The last entry written to each file in its current round (0: none).
    last_in: [u64; 2],
    /// The bytes each file's last finished round held.
    round_bytes: [u64; 2],
}

impl Files {
    fn append(&mut self, bytes: &[u8], last: u64) -> std::io::Result<()> {
        let file = &self.files[self.active];
        file.write_all_at(bytes, self.offset)?;
        #[cfg(test)]
        if std::mem::take(&mut self.fail_next) {
            return Err(std::io::Error::other("a sync failed for a test"));
        }
        file.sync_data()?;
        self.syncs += 1;
        self.offset += bytes.len() as u64;
        self.last_in[self.active] = last;
        Ok(())
    }

    /// Moves appends to the other file if a durable state at `durable` holds all it has.
    fn rotate(&mut self, durable: u64) -> bool {
        let other = 1 - self.active;
        if self.last_in[other] > durable {
            return false;
        }
        self.round_bytes[self.active] = self.offset;
        self.active = other;
        self.offset = 0;
        self.last_in[other] = 0;
        true
    }
}

/// Entries committed and not yet handed to a flush.
#[derive(Default)]
struct Buf {
    bytes: Vec<u8>,
    last: u64,
    /// Bytes buffered since the store opened, and at the last checkpoint's start.
    total: u64,
    at_checkpoint: u64,
}

#[derive(Default)]
struct Flushed {
    /// Every entry up to this one is synced in a file.
    synced: u64,
    /// A flush failed: nothing logged since is known to be durable, and the store's writes are
    /// refused until a restart.
    failed: Option<(std::io::ErrorKind, String)>,
    /// The last entry an awaited wait ([`flusher::LogFlushed`]) is for: the flusher thread syncs while
    /// it is past `synced`.
    wanted: u64,
    /// The tasks awaiting entries, each with the entry it waits for; woken by whoever settles
    /// a flush past it (or any failure).
    wakers: Vec<(u64, Waker)>,
    /// The flusher thread has stopped (the store closes): an await flushes on its own thread.
    flusher_stopped: bool,
}

impl Flushed {
    /// The wakers of the tasks whose entries are now synced, or of every task once a flush
    /// failed (each then reads the failure).
    fn take_ready(&mut self) -> Vec<Waker> {
        let synced = self.synced;
        let failed = self.failed.is_some();
        self.wakers
            .extract_if(.., |(lsn, _)| failed || *lsn <= synced)
            .map(|(_, waker)| waker)
            .collect()
    }
}

#[derive(Default)]
struct Wake {
    asked: bool,
    stop: bool,
    /// Tests hold checkpoints, to see what the log alone brings back.
    #[cfg(test)]
    held: bool,
    /// Tests make the checkpoints' flushes of the log fail.
    #[cfg(test)]
    fail_flushes: bool,
}

/// The main file's row log (see the module's documentation).
pub(crate) struct RowLog {
    epoch: u64,
    /// Held from before a commit of the main file to after its bookkeeping: the last logged
    /// transaction's number and the count of unlogged ones.
    order: Mutex<Mark>,
    buf: Mutex<Buf>,
    /// Held by the one flushing (a waiter, or a checkpoint rotating).
    files: Mutex<Files>,
    flushed: Mutex<Flushed>,
    flushed_cv: Condvar,
    /// Wakes the flusher thread (on `flushed`'s lock): an awaited entry is past `synced`.
    flush_cv: Condvar,
    /// What the last durable commit known to be synced holds.
    durable: Mutex<Mark>,
    checkpointing: Mutex<()>,
    wake: Mutex<Wake>,
    wake_cv: Condvar,
    /// Fails the main file's syncs (set by the store once it holds the file): called when a
    /// checkpoint's flush or durable commit fails, before the log itself is failed, so that
    /// no write commits (and is read) after a failure that it could not be made durable
    /// through.
    fail_main: std::sync::OnceLock<FailMain>,
}

/// What fails the main file's syncs (see `RowLog::fail_main`).
type FailMain = Box<dyn Fn(&std::io::Error) + Send + Sync>;

/// Writes zeros into `file` from its end up to twice `round` bytes (at most
/// [`MAX_PREWRITTEN`]), and syncs them: the file's next round then overwrites in place. Zeros
/// end a chain (see `format`), so they are never read as entries.
fn prewrite(file: &File, round: u64) -> std::io::Result<()> {
    let target = (round.saturating_mul(2))
        .min(MAX_PREWRITTEN)
        .next_multiple_of(64 << 10);
    let mut len = file.metadata()?.len();
    if len >= target {
        return Ok(());
    }
    let zeros = vec![0u8; 1 << 20];
    while len < target {
        let n = (target - len).min(zeros.len() as u64);
        file.write_all_at(&zeros[..n as usize], len)?;
        len += n;
    }
    file.sync_data()
}

/// An epoch no start has used (random: a copy of a main file, such as a backup's, carries
/// its source's epoch until it is given a new one, and two servers' epochs must not meet).
pub(crate) fn fresh_epoch(previous: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    loop {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(previous);
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.write_u32(std::process::id());
        let epoch = h.finish();
        if epoch != 0 && epoch != previous {
            return epoch;
        }
    }
}

/// Gives the main file copy `db` (a backup's) an epoch of its own (see [`fresh_epoch`]).
pub(crate) fn new_epoch_in(db: &redb::Database) -> Result<(), StoreError> {
    use redb::ReadableTable;
    let txn = db.begin_write()?;
    {
        let mut meta = txn.open_table(META)?;
        let previous = meta.get(LOG_EPOCH)?.map_or(0, |v| v.value());
        meta.insert(LOG_EPOCH, fresh_epoch(previous))?;
    }
    txn.commit()?;
    Ok(())
}

/// The log's rows in the `meta` table, tagged as the vacuum's recording tags its keys (see
/// `file_writes`): a vacuum's swap copies them into the new file.
pub(crate) fn tagged_meta_keys() -> impl Iterator<Item = Vec<u8>> {
    [LOG_LSN, LOG_UNLOGGED, LOG_EPOCH].into_iter().map(|k| {
        let mut tagged = vec![crate::file_writes::TableTag::Meta as u8];
        tagged.extend_from_slice(k.as_bytes());
        tagged
    })
}

/// The log's two files beside the main file at `main`.
pub(crate) fn paths_of(main: &Path) -> [PathBuf; 2] {
    let name = main.file_name().map(|n| n.to_string_lossy().into_owned());
    let name = name.unwrap_or_else(|| "data".into());
    [0, 1].map(|i| main.with_file_name(format!("{name}.rowlog-{i}")))
}

impl RowLog {
    fn new(epoch: u64, durable: Mark, files: [File; 2], paths: [PathBuf; 2]) -> RowLog {
        RowLog {
            epoch,
            order: Mutex::new(durable),
            buf: Mutex::default(),
            files: Mutex::new(Files {
                syncs: 0,
                #[cfg(test)]
                fail_next: false,
                files,
                paths,
                active: 0,
                offset: 0,
                last_in: [0, 0],
                round_bytes: [0, 0],
            }),
            flushed: Mutex::new(Flushed {
                synced: durable.lsn,
                ..Flushed::default()
            }),
            flushed_cv: Condvar::new(),
            flush_cv: Condvar::new(),
            durable: Mutex::new(durable),
            checkpointing: Mutex::new(()),
            wake: Mutex::default(),
            wake_cv: Condvar::new(),
            fail_main: std::sync::OnceLock::new(),
        }
    }

    /// Sets what fails the main file's syncs (see `fail_main`); only the first call counts.
    pub(crate) fn on_failure(&self, fail_main: impl Fn(&std::io::Error) + Send + Sync + 'static) {
        let _ = self.fail_main.set(Box::new(fail_main));
    }

    fn fail_main(&self, why: &std::io::Error) {
        if let Some(fail) = self.fail_main.get() {
            fail(why);
        }
    }

    /// Commits `txn` as a logged transaction with `entry` (begun with [`begin_entry`], its
    /// rows after): its number is written in it, the entry sealed before the commit and
    /// buffered once it committed (nothing that can fail comes between).
    pub(crate) fn commit_logged(
        &self,
        txn: WriteTransaction,
        entry: &mut [u8],
    ) -> Result<Logged, StoreError> {
        let mut order = lock(&self.order);
        let lsn = order.lsn + 1;
        let needs = order.unlogged;
        format::seal_entry(entry, self.epoch, lsn, needs).map_err(StoreError::Engine)?;
        txn.open_table(META)?.insert(LOG_LSN, lsn)?;
        txn.commit()?;
        order.lsn = lsn;
        let ask = {
            let mut buf = lock(&self.buf);
            buf.bytes.extend_from_slice(entry);
            buf.last = lsn;
            buf.total += entry.len() as u64;
            buf.total - buf.at_checkpoint >= CHECKPOINT_BYTES
        };
        drop(order);
        if ask {
            self.ask_checkpoint();
        }
        Ok(Logged { lsn, needs })
    }

    /// Commits `txn`, which is not logged: it counts itself in the unlogged commits. A
    /// `durable` commit (synced before it returns) is then what the durable state holds.
    pub(crate) fn commit_unlogged(
        &self,
        txn: WriteTransaction,
        durable: bool,
    ) -> Result<(), StoreError> {
        let mut order = lock(&self.order);
        let unlogged = order.unlogged + 1;
        txn.open_table(META)?.insert(LOG_UNLOGGED, unlogged)?;
        txn.commit()?;
        order.unlogged = unlogged;
        if durable {
            self.durable_at(*order);
        }
        Ok(())
    }

    /// Commits `txn`, which is not logged and commits durably, inside `file`'s `deferring` (its
    /// sync owed to later); returns what the log holds with it, to pass to
    /// [`RowLog::durable_at`] once synced.
    pub(crate) fn commit_unlogged_deferred(
        &self,
        txn: WriteTransaction,
        file: &crate::deferred_sync::FileSync,
    ) -> Result<Mark, StoreError> {
        let mut order = lock(&self.order);
        let unlogged = order.unlogged + 1;
        txn.open_table(META)?.insert(LOG_UNLOGGED, unlogged)?;
        file.deferring(|| txn.commit())?;
        order.unlogged = unlogged;
        Ok(*order)
    }

    /// Runs `commit`, a durable commit of a transaction that wrote nothing whose sync comes
    /// later; returns what it holds, to pass to [`RowLog::durable_at`] once synced.
    pub(crate) fn commit_empty<E>(
        &self,
        commit: impl FnOnce() -> Result<(), E>,
    ) -> Result<Mark, E> {
        let order = lock(&self.order);
        commit()?;
        Ok(*order)
    }

    /// A durable commit holding `mark` is synced.
    pub(crate) fn durable_at(&self, mark: Mark) {
        let mut durable = lock(&self.durable);
        durable.lsn = durable.lsn.max(mark.lsn);
        durable.unlogged = durable.unlogged.max(mark.unlogged);
    }

    /// What the last durable commit known to be synced holds.
    pub(crate) fn durable(&self) -> Mark {
        *lock(&self.durable)
    }

    /// Returns once entry `lsn` is synced in a file, flushing every buffered entry if nobody
    /// else is. (A group commit whose leader waits for writers on their way and lingers for
    /// them was measured slower here: a flush is short, and the next one starts at once.)
    pub(crate) fn wait_flushed(
        &self,
        lsn: u64,
        syncs: &crate::stats::LatencyHistogram,
    ) -> std::io::Result<()> {
        let mut state = lock(&self.flushed);
        loop {
            if let Some((kind, why)) = &state.failed {
                return Err(std::io::Error::new(*kind, why.clone()));
            }
            if state.synced >= lsn {
                return Ok(());
            }
            match self.files.try_lock() {
                Ok(files) => {
                    drop(state);
                    // A failure is read from the state below, like another's.
                    let _ = self.flush_timed(files, syncs);
                    state = lock(&self.flushed);
                }
                Err(std::sync::TryLockError::Poisoned(_)) => {
                    return Err(std::io::Error::other("the row log's files were poisoned"));
                }
                Err(std::sync::TryLockError::WouldBlock) => {
                    state = self
                        .flushed_cv
                        .wait(state)
                        .unwrap_or_else(|e| e.into_inner());
                }
            }
        }
    }

    /// Releases the files' lock, and wakes the waiters that found it held (each looks again:
    /// it may flush now). The `flushed` lock is taken first, so a waiter between its look and
    /// its wait is not missed.
    fn release(&self, files: MutexGuard<'_, Files>) {
        drop(files);
        drop(lock(&self.flushed));
        self.flushed_cv.notify_all();
    }

    /// Fails the log: every later wait for it reports `why`, and the store refuses writes (its
    /// caller fails the main file's syncs).
    pub(crate) fn fail(&self, why: &StoreError) {
        let why = std::io::Error::other(why.to_string());
        self.settle_and_wake(Err(why));
    }

    /// Records a flush's outcome: the last entry now synced, or its failure, which every
    /// later wait reports.
    fn settle(state: &mut Flushed, flushed: std::io::Result<u64>) {
        match flushed {
            Ok(last) => state.synced = state.synced.max(last),
            Err(e) => {
                if state.failed.is_none() {
                    state.failed = Some((e.kind(), format!("{e}")));
                }
            }
        }
    }

    /// [`RowLog::settle`] under `flushed`'s lock, then wakes every waiter it concerns: the
    /// threads waiting in [`RowLog::wait_flushed`] and the tasks awaiting a [`flusher::LogFlushed`]
    /// (outside the lock).
    fn settle_and_wake(&self, flushed: std::io::Result<u64>) {
        let ready = {
            let mut state = lock(&self.flushed);
            Self::settle(&mut state, flushed);
            self.flushed_cv.notify_all();
            state.take_ready()
        };
        ready.into_iter().for_each(Waker::wake);
    }

    /// Flushes with `files` held, observes the sync's time in `syncs`, settles the outcome,
    /// then releases the files; returns the failure, if the flush failed.
    ///
    /// Settled before the files are released: a failed flush has taken its entries from the
    /// buffer, and the next holder of the files, finding it empty, settles `Ok` up to the last
    /// entry buffered; were that settled first, a waiter could read its lost entry as synced.
    /// Released with a second wake-up ([`RowLog::release`]): a waiter for a later entry, woken
    /// by the settling, finds the files still held and waits again, and only a wake-up after
    /// the release sends it to flush (without it, it slept until the next checkpoint's).
    fn flush_timed(
        &self,
        mut files: MutexGuard<'_, Files>,
        syncs: &crate::stats::LatencyHistogram,
    ) -> Option<std::io::Error> {
        let started = Instant::now();
        let flushed = self.flush(&mut files);
        let failure = match &flushed {
            Ok(_) => {
                syncs.observe(started.elapsed());
                None
            }
            Err(e) => Some(std::io::Error::new(e.kind(), e.to_string())),
        };
        self.settle_and_wake(flushed);
        self.release(files);
        failure
    }

    /// Writes and syncs every buffered entry; returns the last one now synced.
    fn flush(&self, files: &mut Files) -> std::io::Result<u64> {
        let (bytes, last) = {
            let mut buf = lock(&self.buf);
            (std::mem::take(&mut buf.bytes), buf.last)
        };
        if !bytes.is_empty() {
            files.append(&bytes, last)?;
        }
        Ok(last)
    }

    /// Flushes, then moves appends to the other file when it may be reused; then runs
    /// `durable_commit` (a durable commit of the main file, which marks itself synced with
    /// [`RowLog::durable_at`]), after which the file left holds nothing the main file lacks.
    /// Returns the file left, if appends moved.
    pub(crate) fn checkpoint(
        &self,
        durable_commit: &dyn Fn() -> Result<(), StoreError>,
    ) -> Result<Option<usize>, StoreError> {
        let _one = lock(&self.checkpointing);
        let left = self.checkpoint_holding(durable_commit)?;
        if let Some((file, round, path)) = left.as_ref().and_then(|&l| self.prewrite_of(l)) {
            // Only speed is at stake: a file not prewritten is appended to.
            if let Err(e) = prewrite(&file, round) {
                tracing::warn!(file = %path.display(), error = %e, "row log: prewriting a file failed");
            }
        }
        Ok(left)
    }

    /// The file `left` (a clone of its handle, outside the files' lock), the bytes its last
    /// round held, and its path.
    fn prewrite_of(&self, left: usize) -> Option<(File, u64, PathBuf)> {
        let files = lock(&self.files);
        let of = files.files[left]
            .try_clone()
            .ok()
            .map(|file| (file, files.round_bytes[left], files.paths[left].clone()));
        self.release(files);
        of
    }

    /// [`RowLog::checkpoint`] for the holder of `checkpointing`.
    fn checkpoint_holding(
        &self,
        durable_commit: &dyn Fn() -> Result<(), StoreError>,
    ) -> Result<Option<usize>, StoreError> {
        {
            let mut buf = lock(&self.buf);
            buf.at_checkpoint = buf.total;
        }
        let left = {
            let mut files = lock(&self.files);
            let flushed = self.flush(&mut files);
            #[cfg(test)]
            let flushed = match lock(&self.wake).fail_flushes {
                true => Err(std::io::Error::other(
                    "a checkpoint's flush failed (a test)",
                )),
                false => flushed,
            };
            let failed = flushed
                .as_ref()
                .err()
                .map(|e| StoreError::Unavailable(format!("writing the row log: {e}")));
            if let Err(e) = &flushed {
                self.fail_main(e);
            }
            self.settle_and_wake(flushed);
            if let Some(e) = failed {
                self.release(files);
                return Err(e);
            }
            let was = files.active;
            let left = files.rotate(self.durable().lsn).then_some(was);
            self.release(files);
            left
        };
        // Whatever the commit left unsynced is not known to be on disk.
        durable_commit().inspect_err(|e| self.fail_main(&std::io::Error::other(e.to_string())))?;
        Ok(left)
    }

    /// Empties both files (two checkpoints, each file emptied once left and held by the main
    /// file): what they held, a purged tenant's rows among it, is gone from the disk's files.
    pub(crate) fn scrub(
        &self,
        durable_commit: &dyn Fn() -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        // Held throughout: no other checkpoint moves appends back to a file before it is
        // emptied.
        let _one = lock(&self.checkpointing);
        let mut emptied = [false, false];
        // A checkpoint may not move (the other file not yet held durably): a few tries.
        for _ in 0..6 {
            if let Some(left) = self.checkpoint_holding(durable_commit)? {
                let files = lock(&self.files);
                let file = &files.files[left];
                let emptying = file.set_len(0).and_then(|()| file.sync_all());
                let path = files.paths[left].display().to_string();
                self.release(files);
                emptying.map_err(|source| StoreError::Io { path, source })?;
                emptied[left] = true;
            }
            if emptied == [true, true] {
                return Ok(());
            }
        }
        Err(StoreError::Engine(
            "the row log could not be emptied after a purge".into(),
        ))
    }

    /// Syncs of the log's files so far.
    #[cfg(test)]
    pub(crate) fn syncs_for_test(&self) -> u64 {
        let files = lock(&self.files);
        let syncs = files.syncs;
        self.release(files);
        syncs
    }

    /// Makes the log's next sync fail.
    #[cfg(test)]
    pub(crate) fn fail_next_sync_for_test(&self) {
        let mut files = lock(&self.files);
        files.fail_next = true;
        self.release(files);
    }

    /// Holds the checkpoint thread's checkpoints (while `on`).
    #[cfg(test)]
    pub(crate) fn hold_checkpoints(&self, on: bool) {
        lock(&self.wake).held = on;
        self.wake_cv.notify_one();
    }

    /// Makes the checkpoints' flushes of the log fail from now on, and asks for one.
    #[cfg(test)]
    pub(crate) fn fail_checkpoint_flushes(&self) {
        lock(&self.wake).fail_flushes = true;
        self.ask_checkpoint();
    }

    /// Whether a flush (or a checkpoint) has failed.
    #[cfg(test)]
    pub(crate) fn has_failed(&self) -> bool {
        lock(&self.flushed).failed.is_some()
    }

    fn ask_checkpoint(&self) {
        lock(&self.wake).asked = true;
        self.wake_cv.notify_one();
    }

    /// Stops [`RowLog::run_checkpoints`].
    pub(crate) fn stop_checkpoints(&self) {
        lock(&self.wake).stop = true;
        self.wake_cv.notify_one();
    }

    /// The checkpoint thread's loop: a checkpoint every [`CHECKPOINT_EVERY`] while anything
    /// was logged, or at once past [`CHECKPOINT_BYTES`], until stopped. A failed checkpoint,
    /// its flush of the log or its durable commit, has failed the main file's syncs (the store
    /// refuses writes before they commit, as after a failed flush of the flusher's); the loop
    /// ends.
    pub(crate) fn run_checkpoints(&self, durable_commit: &dyn Fn() -> Result<(), StoreError>) {
        let mut last = Instant::now();
        loop {
            {
                let mut wake = lock(&self.wake);
                while !wake.stop && !wake.asked {
                    let left = CHECKPOINT_EVERY.saturating_sub(last.elapsed());
                    if left.is_zero() {
                        break;
                    }
                    wake = self
                        .wake_cv
                        .wait_timeout(wake, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                if wake.stop {
                    return;
                }
                wake.asked = false;
            }
            last = Instant::now();
            #[cfg(test)]
            if lock(&self.wake).held {
                continue;
            }
            let logged_since = {
                let buf = lock(&self.buf);
                buf.total > buf.at_checkpoint || buf.last > self.durable().lsn
            };
            if !logged_since {
                continue;
            }
            if let Err(e) = self.checkpoint(durable_commit) {
                // Nothing may be acknowledged through a log no checkpoint empties any more,
                // nor committed (the main file was failed first): a write that commits is
                // read, and would be lost at a crash.
                self.fail_main(&std::io::Error::other(e.to_string()));
                self.fail(&e);
                tracing::error!(error = %e, "row log checkpoint failed; writes are refused until a restart");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests;
