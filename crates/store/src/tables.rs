//! Transactions over the three tables, with typed reads and writes.

use std::path::Path;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

pub(crate) mod erase;

use redb::{
    Database, ReadOnlyTable, ReadableDatabase, ReadableTable, Table, TableDefinition,
    WriteTransaction,
};
use sha2::{Digest, Sha256};
use strata_types::{Collection, CollectionName, Domain, Millis, Record, RecordId, TenantId};

use crate::StoreError;
use crate::codec::{
    ChangeOp, MetadataJson, RemovedRecord, decode_json, decode_record, decode_removed_record,
    encode_json, encode_record_with,
};
use crate::db::{Committed, Db, Open, WriteTxn};
use crate::deferred_sync::{FileSync, write_path};
use crate::file_writes::{FileWrites, TableTag, Tracked};
use crate::group_commit::{GroupCommit, Seq};
use crate::keys::{self, ScopeField, TenantKey};
use crate::opened::Opened;
use crate::placement::Files;
use crate::recovery::{FileOptions, OpenReport, RepairWatch};
use crate::registry::{StoredMeta, TenantMeta};
use crate::row_log::{Logged, RowLog};

pub(crate) const DATA: TableDefinition<&[u8], &[u8]> = TableDefinition::new("data");
pub(crate) const REGISTRY: TableDefinition<&str, &[u8]> = TableDefinition::new("registry");
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Credentials by id (API keys and the like), as opaque bytes owned by the auth crate.
pub(crate) const CREDENTIALS: TableDefinition<&str, &[u8]> = TableDefinition::new("credentials");
const NEXT_TENANT_KEY: &str = "next_tenant_key";
/// When the last tenant purge committed (ms since the epoch).
const LAST_PURGE_MS: &str = "last_purge_ms";
/// 1 while an erasure's compaction has not run yet (see the engine's `owed_compaction`).
pub(crate) const COMPACTION_OWED: &str = "compaction_owed";
/// 0 once a start found no tenant at `dedicated`; 1 from the commit that makes one so (a
/// creation at the level, a flip into a tenant's own file). Absent: not known (a file from
/// before the mark), which a start finds out. Lets a start skip the registry when no tenant
/// can be at `dedicated` (`Store::has_no_dedicated_tenants`).
pub(crate) const DEDICATED_SEEN: &str = "dedicated_seen";

/// The database. Cheap to share behind an `Arc`; every method takes `&self`.
pub struct Store {
    /// Transactions begin under the read lock; compaction and a vacuum, which need no
    /// transaction in flight, take the write lock (a vacuum swaps the database and its file).
    pub(crate) db: Arc<RwLock<Db>>,
    /// The main file, which a vacuum rewrites (see `vacuum`).
    pub(crate) path: std::path::PathBuf,
    /// How the main file is opened, which a vacuum's new database is too.
    options: FileOptions,
    /// What opening the main file took at start (a vacuum's new file has its own report).
    opened: OpenReport,
    /// Vacuums that rewrote the main file since the store opened.
    pub(crate) vacuums: std::sync::atomic::AtomicU64,
    /// Concurrent writes share fsyncs (see `group_commit`); on by default.
    grouped: AtomicBool,
    pub(crate) group: Arc<GroupCommit>,
    /// Tenant writes of concurrent callers batched into one transaction (see `batched_write`).
    pub(crate) batch: crate::batched_write::MainBatcher,
    /// Whether [`Store::write_batched_for`] batches at all; on by default.
    pub(crate) batching: AtomicBool,
    /// How long each durable commit took (with group commit, each shared sync), for the
    /// metrics endpoint.
    pub(crate) commits: Arc<crate::stats::LatencyHistogram>,
    /// Dedicated tenants' own files, by storage key (see `placement`).
    pub(crate) placement: crate::placement::Placement,
    /// Entries each tenant's change log keeps at most (see `changelog`).
    change_log_cap: std::sync::atomic::AtomicU64,
    /// Tenants whose written keys are recorded for a migration's catch-up (see `tracking`).
    pub(crate) tracking: crate::tracking::Tracking,
    /// The main file's written keys, recorded while a vacuum copies it (see `file_writes`).
    pub(crate) file_writes: FileWrites,
    /// One vacuum at a time: the written keys are recorded for one.
    pub(crate) vacuuming: std::sync::Mutex<()>,
    /// Main databases a vacuum swapped out, until no snapshot reads them (see `retired`).
    pub(crate) retired: crate::retired::Retired,
    /// Bumped after every commit that wrote the registry (see [`Store::registry_epoch`]).
    registry_epoch: std::sync::atomic::AtomicU64,
    /// Held for writing by a backup from its snapshots until it has linked the derived files
    /// into its staging directory (`backup`): meanwhile [`Store::retain_derived`] deletes
    /// nothing, so every file the snapshots' rows name is still there to link; the tenant's
    /// next save deletes them.
    pub(crate) derived_gate: std::sync::RwLock<()>,
    /// The main file's row log (see `row_log`), and the thread that checkpoints it.
    pub(crate) log: Option<Arc<RowLog>>,
    checkpointer: Option<std::thread::JoinHandle<()>>,
    /// The thread that syncs the row log for awaited writes (`row_log::flusher`).
    flusher: Option<std::thread::JoinHandle<()>>,
    /// Row log entries the open applied: writes acknowledged after the last checkpoint.
    log_replayed: u64,
}

impl Drop for Store {
    /// Stops the checkpoints, then makes everything logged durable in the main file, so the
    /// next open replays nothing.
    fn drop(&mut self) {
        let Some(log) = &self.log else {
            return;
        };
        log.stop_flusher();
        log.stop_checkpoints();
        for thread in [self.flusher.take(), self.checkpointer.take()]
            .into_iter()
            .flatten()
        {
            let _ = thread.join();
        }
        if refuse_after_failed_sync(&self.db().sync).is_ok()
            && let Err(e) = sync(&self.db, &self.commits)
        {
            tracing::warn!(error = %e, "closing the store: the last checkpoint failed; the next start replays the row log");
        }
    }
}

impl Store {
    /// When the last tenant purge committed, if any ever did: the engine creates no tenant in
    /// that second after a restart, so a token minted for a purged tenant never meets a new one
    /// of the same id (see the engine's `recent_purges`).
    pub fn last_purge_at(&self) -> Result<Option<Millis>, StoreError> {
        // A handle on the database, so that a vacuum's swap leaves it open for this read.
        let main = self.db().clone();
        let txn = main.begin_read()?;
        let meta = txn.open_table(META)?;
        meta.get(LAST_PURGE_MS)?
            .map(|v| {
                Millis::try_from(v.value()).map_err(|_| {
                    StoreError::Corrupt(format!(
                        "meta {LAST_PURGE_MS}: {} is out of range",
                        v.value()
                    ))
                })
            })
            .transpose()
    }

    /// Whether an erasure's compaction is still owed (see [`Writer::set_compaction_owed`]).
    /// Whether a start found no tenant at `dedicated` and none has been made so since (see
    /// `DEDICATED_SEEN`): then no registry row needs reading to route the tenants.
    pub fn has_no_dedicated_tenants(&self) -> Result<bool, StoreError> {
        let main = self.db().clone();
        let txn = main.begin_read()?;
        let meta = txn.open_table(META)?;
        Ok(meta.get(DEDICATED_SEEN)?.map(|v| v.value()) == Some(0))
    }

    /// Records, durably, that a start found no tenant at `dedicated` (every registry row read,
    /// or every row that could be at it).
    pub fn note_no_dedicated_tenants(&self) -> Result<(), StoreError> {
        let _writing = crate::deferred_sync::write_path();
        let db = self.db();
        let txn = db.begin_write()?;
        txn.open_table(META)?.insert(DEDICATED_SEEN, 0)?;
        txn.commit()?;
        Ok(())
    }

    pub fn compaction_owed(&self) -> Result<bool, StoreError> {
        // A handle on the database, so that a vacuum's swap leaves it open for this read.
        let main = self.db().clone();
        let txn = main.begin_read()?;
        let meta = txn.open_table(META)?;
        match meta.get(COMPACTION_OWED)?.map(|v| v.value()) {
            None | Some(0) => Ok(false),
            Some(1) => Ok(true),
            Some(other) => Err(StoreError::Corrupt(format!(
                "meta {COMPACTION_OWED}: {other} is neither 0 nor 1"
            ))),
        }
    }

    /// Why the main data file failed (a full disk, an I/O error), if it did: every write is
    /// then refused until the server restarts; reads of cached pages go on. (A dedicated
    /// tenant's file that fails refuses that tenant's writes alone.) Does not wait for a
    /// compaction or vacuum holding the database's write lock (a metrics scrape must not hang
    /// for the length of one): neither runs on a failed file, so the answer is then `None`.
    pub fn failure(&self) -> Option<String> {
        match self.db.try_read() {
            Ok(db) => db.sync.failure(),
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner().sync.failure(),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }
}

/// A write that has committed and is visible to readers, but is not yet known to be durable.
/// [`Pending::wait_durable`] blocks until it is; acknowledge the write only after that. It owns
/// what it needs, so the wait can happen on another thread than the write.
#[must_use = "a write is not durable until wait_durable returns Ok"]
pub struct Pending {
    /// `None` when the write committed with its own fsync (group commit off).
    pub(crate) waiting: Option<Waiting>,
    /// When the write's rows went to the row log: it is durable once the log is synced past
    /// them (and a durable commit holds the unlogged commits before it, see `row_log`).
    pub(crate) logged: Option<(Arc<RowLog>, Logged)>,
}

/// What a pending write needs to wait for, or lead, a sync.
pub(crate) struct Waiting {
    pub(crate) seq: Seq,
    /// The database and its file's syncs, read together under one guard: a vacuum may have
    /// swapped them since the write committed.
    pub(crate) db: Arc<RwLock<Db>>,
    pub(crate) group: Arc<GroupCommit>,
    pub(crate) commits: Arc<crate::stats::LatencyHistogram>,
}

impl Pending {
    /// What a write committed as `committed` waits for: the row log, the group's durable
    /// commit (`waiting`, `None` without group commit), or nothing.
    pub(crate) fn after(
        committed: Committed,
        waiting: Option<Waiting>,
        log: Option<&Arc<RowLog>>,
    ) -> Pending {
        match committed {
            Committed::Synced => Pending {
                waiting: None,
                logged: None,
            },
            Committed::Unsynced => Pending {
                waiting,
                logged: None,
            },
            Committed::Logged(l) => Pending {
                waiting,
                logged: log.map(|log| (Arc::clone(log), l)),
            },
        }
    }

    /// Returns once the write is on disk, sharing one fsync with every other write committed
    /// meanwhile; an error means the write is not known to be durable.
    pub fn wait_durable(self) -> Result<(), StoreError> {
        let Some(w) = self.waiting else {
            return Ok(());
        };
        if let Some((log, logged)) = self.logged {
            if let Err(e) = log.wait_flushed(logged.lsn, &w.commits) {
                return Err(log_failed(&w, &e));
            }
            if log.durable().unlogged >= logged.needs {
                return Ok(());
            }
            // An unlogged commit before it is not durable yet (rare: a tenant's move between
            // files, an erasure): the group's sync, a durable commit of the main file, makes
            // it so.
        }
        w.group.wait_durable(w.seq, || sync(&w.db, &w.commits))
    }

    /// [`Pending::wait_durable`]'s wait for the row log, as a future that holds no thread
    /// while it waits: the log's flusher thread syncs for it. Returns what is left to wait for
    /// with [`Pending::wait_durable`], on a thread: a write that was not logged (a dedicated
    /// tenant's file, a transaction too large for the log), or a logged one whose unlogged
    /// commits before it are not durable yet (rare); `None` when the write is durable.
    pub async fn wait_logged(self) -> Result<Option<Pending>, StoreError> {
        let Pending { waiting, logged } = self;
        let Some(w) = waiting else {
            return Ok(None);
        };
        let Some((log, logged)) = logged else {
            return Ok(Some(Pending {
                waiting: Some(w),
                logged: None,
            }));
        };
        if let Err(e) = log.flushed(logged.lsn, &w.commits).await {
            return Err(log_failed(&w, &e));
        }
        if log.durable().unlogged >= logged.needs {
            return Ok(None);
        }
        Ok(Some(Pending {
            waiting: Some(w),
            logged: None,
        }))
    }
}

/// The row log failed to sync a write: entries taken from its buffer did not reach the disk,
/// so no write may commit now, or a later entry could be acknowledged after a lost one.
fn log_failed(w: &Waiting, e: &std::io::Error) -> StoreError {
    read_db(&w.db).sync.fail(e);
    StoreError::Unavailable(format!(
        "writing the row log: {}",
        crate::error::describe_io(e)
    ))
}

pub(crate) fn read_db(db: &RwLock<Db>) -> RwLockReadGuard<'_, Db> {
    // A panic while holding the lock cannot leave the database half-changed: redb's own
    // transactions guarantee that.
    db.read().unwrap_or_else(|e| e.into_inner())
}

/// One durable commit of an empty transaction, which flushes and syncs every commit before it.
/// Its fsync happens after the commit has released redb's write lock (see `deferred_sync`), so
/// the next group's writes commit while the disk syncs this one's. Returns how long the fsync
/// itself took (not the wait for the write lock before it), which paces the next group.
pub(crate) fn sync(
    db: &RwLock<Db>,
    commits: &crate::stats::LatencyHistogram,
) -> Result<std::time::Duration, StoreError> {
    let _writing = write_path();
    let started = std::time::Instant::now();
    // The file this commit went to, whatever a vacuum swaps in after the guard is released (a
    // vacuum's own commit is durable, and covers every commit before it).
    let (file, log, mark) = {
        let db = read_db(db);
        let txn = db.begin_write()?;
        let mark = txn.commit_empty_deferred(&db.sync)?;
        (db.sync.clone(), db.log.clone(), mark)
    };
    let syncing = std::time::Instant::now();
    file.sync_owed()
        .map_err(|e| StoreError::Unavailable(crate::error::describe_io(&e)))?;
    let took = syncing.elapsed();
    if let (Some(log), Some(mark)) = (log, mark) {
        log.durable_at(mark);
    }
    commits.observe(started.elapsed());
    Ok(took)
}

/// The four tables of a main-file write transaction, each recording its written keys for a
/// vacuum under way (see `file_writes`).
pub(crate) struct MainTables<'txn> {
    pub(crate) data: DataTable<'txn>,
    pub(crate) registry: Tracked<'txn, &'static str, &'static [u8]>,
    pub(crate) meta: Tracked<'txn, &'static str, u64>,
    pub(crate) credentials: Tracked<'txn, &'static str, &'static [u8]>,
}

impl<'txn> MainTables<'txn> {
    /// The tables of `txn`, for a write whose rows never go to the row log (its commit is
    /// `WriteTxn::commit`).
    pub(crate) fn open(
        txn: &'txn WriteTxn,
        file: &'txn FileWrites,
    ) -> Result<MainTables<'txn>, StoreError> {
        MainTables::open_keeping_keys(txn, file, false)
    }

    /// The tables of the `Writer` of a write committed with `WriteTxn::commit_logged`: when
    /// `txn` logs (see `row_log`), each keeps its written keys for the log's entry.
    pub(crate) fn open_logged(
        txn: &'txn WriteTxn,
        file: &'txn FileWrites,
    ) -> Result<MainTables<'txn>, StoreError> {
        MainTables::open_keeping_keys(txn, file, txn.logs())
    }

    fn open_keeping_keys(
        txn: &'txn WriteTxn,
        file: &'txn FileWrites,
        keep: bool,
    ) -> Result<MainTables<'txn>, StoreError> {
        fn tracked<'txn, K: redb::Key + 'static, V: redb::Value + 'static>(
            txn: &'txn WriteTxn,
            def: TableDefinition<K, V>,
            tag: TableTag,
            file: &'txn FileWrites,
            keep: bool,
        ) -> Result<Tracked<'txn, K, V>, StoreError> {
            let table = Tracked::new(txn.open_table(def)?, tag, Some(file));
            Ok(if keep { table.logging() } else { table })
        }
        Ok(MainTables {
            data: tracked(txn, DATA, TableTag::Data, file, keep)?,
            registry: tracked(txn, REGISTRY, TableTag::Registry, file, keep)?,
            meta: tracked(txn, META, TableTag::Meta, file, keep)?,
            credentials: tracked(txn, CREDENTIALS, TableTag::Credentials, file, keep)?,
        })
    }
}

/// A table of a dedicated tenant's file, which no vacuum copies: its writes are not recorded.
pub(crate) fn untracked<'txn, K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &'txn WriteTransaction,
    def: TableDefinition<K, V>,
    tag: TableTag,
) -> Result<Tracked<'txn, K, V>, StoreError> {
    Ok(Tracked::new(txn.open_table(def)?, tag, None))
}

/// Refuses a write to a file whose sync or write has failed: redb never sees a failed sync
/// when it commits with `Durability::None`, so without this check later writes would commit
/// and become visible although nothing written to the file since is known to reach the disk.
pub(crate) fn refuse_after_failed_sync(file: &FileSync) -> Result<(), StoreError> {
    match file.failure() {
        Some(why) => Err(StoreError::Unavailable(format!(
            "{why}; writes are refused until the server is restarted"
        ))),
        None => Ok(()),
    }
}

/// The store's page cache when not configured: enough for the pages a few cold-tenant loads
/// and the hot write path touch, small beside the residency budget it adds to.
pub const DEFAULT_CACHE_BYTES: usize = 64 << 20;

/// Creates the tables a file holds, so that every later transaction can open them.
pub(crate) fn init_tables(db: &Open) -> Result<(), StoreError> {
    let txn = db.begin_write()?;
    txn.open_table(DATA)?;
    txn.open_table(REGISTRY)?;
    txn.open_table(META)?;
    txn.open_table(CREDENTIALS)?;
    txn.commit()?;
    Ok(())
}

/// Opens or creates a database file with a page cache of at most `options.cache_bytes`
/// (redb's own default is 1 GiB, which would sit outside every memory figure the server
/// reports). Its [`FileSync`] takes a group commit's fsync outside redb's write lock; its
/// durable commits record the allocator state from `options.fast_recovery_from_bytes` on
/// (see `recovery`), and a full repair at this open is logged.
pub(crate) fn open_database(path: &Path, options: FileOptions) -> Result<Db, StoreError> {
    let started = std::time::Instant::now();
    // As redb's own `create` opens it, behind the backend that can defer a commit's fsync.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|source| StoreError::Io {
            path: path.display().to_string(),
            source,
        })?;
    let (backend, sync) = crate::deferred_sync::backend(file)?;
    let watch = RepairWatch::new(path);
    let db = Database::builder()
        .set_cache_size(options.cache_bytes)
        .set_repair_callback(watch.callback(sync.file_len()))
        .create_with_backend(backend)?;
    let opened = watch.finish(started.elapsed());
    let db = Db::new(db, sync, options.fast_recovery_from_bytes, opened);
    init_tables(&db)?;
    Ok(db)
}

impl Store {
    /// Opens or creates the database file at `path` with the default page cache
    /// ([`DEFAULT_CACHE_BYTES`]). After a crash redb repairs the file on open; the last durable
    /// commit is what remains. Dedicated tenants' files (in `tenants/` beside it) are opened
    /// by [`Store::attach_dedicated`].
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    /// [`Store::open`] with a page cache of at most `cache_bytes` for the main file; each
    /// dedicated tenant's file gets a quarter of it (at least 4 MiB, at most all of it).
    pub fn open_with_cache(path: &Path, cache_bytes: usize) -> Result<Store, StoreError> {
        Store::open_with(path, FileOptions::with_cache(cache_bytes))
    }

    /// [`Store::open`] with the given page cache and fast-recovery length (see
    /// [`FileOptions`]); dedicated tenants' files get the same length, and a share of the cache.
    pub fn open_with(path: &Path, options: FileOptions) -> Result<Store, StoreError> {
        crate::main_file_guard::check_before_open(path)?;
        crate::vacuum::remove_leftover(path)?;
        let mut db = open_database(path, options)?;
        let (log, replayed) = crate::row_log::open(path, &db)?;
        let log = Arc::new(log);
        db.attach_log(Arc::clone(&log))?;
        crate::main_file_guard::mark_after_open(path)?;
        let db = Arc::new(RwLock::new(db));
        let commits: Arc<crate::stats::LatencyHistogram> = Arc::default();
        // A weak reference: the database holds the log.
        let weak = Arc::downgrade(&db);
        log.on_failure(move |e| {
            if let Some(db) = weak.upgrade() {
                read_db(&db).sync.fail(e);
            }
        });
        let checkpointer = {
            let (log, db, commits) = (Arc::clone(&log), Arc::clone(&db), Arc::clone(&commits));
            std::thread::Builder::new()
                .name("strata-checkpoint".into())
                .spawn(move || {
                    let _writing = write_path();
                    log.run_checkpoints(&|| sync(&db, &commits).map(|_| ()));
                })
                .map_err(|source| StoreError::Io {
                    path: path.display().to_string(),
                    source,
                })?
        };
        let flusher = {
            let (log, db, commits) = (Arc::clone(&log), Arc::clone(&db), Arc::clone(&commits));
            std::thread::Builder::new()
                .name("strata-log-sync".into())
                .spawn(move || log.run_flusher(&commits, &|e| read_db(&db).sync.fail(e)))
        };
        let flusher = match flusher {
            Ok(thread) => thread,
            Err(source) => {
                // The checkpoint thread has started: stop it before giving up.
                log.stop_checkpoints();
                let _ = checkpointer.join();
                return Err(StoreError::Io {
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        let opened = read_db(&db).opened;
        let store = Store {
            opened,
            db,
            path: path.to_path_buf(),
            options,
            vacuums: 0.into(),
            grouped: AtomicBool::new(true),
            group: Arc::default(),
            batch: Default::default(),
            batching: AtomicBool::new(true),
            commits,
            placement: crate::placement::Placement::beside(path, options),
            change_log_cap: crate::changelog::DEFAULT_CHANGE_LOG_CAP.into(),
            tracking: Default::default(),
            file_writes: Default::default(),
            vacuuming: Default::default(),
            retired: Default::default(),
            registry_epoch: 0.into(),
            derived_gate: Default::default(),
            log: Some(Arc::clone(&log)),
            checkpointer: Some(checkpointer),
            flusher: Some(flusher),
            log_replayed: replayed.entries,
        };
        // Everything the log's files hold is in the main file now, durably (replayed, or
        // checkpointed before the stop): they are emptied. A crash between a purge's vacuum
        // and its own emptying of the log left the purged tenant's rows in a file, and the
        // vacuum owed, cleared with the vacuum's swap, does not ask this start for another.
        log.scrub(&|| sync(&store.db, &store.commits).map(|_| ()))?;
        Ok(store)
    }

    /// A counter bumped after every commit that wrote a registry row (tenant creation, a
    /// profile change such as suspend, resume or delete, a purge, a migration's flip), before
    /// that write returns. What was read from the registry while the counter held `e` (the
    /// counter read before the snapshot began) is current for as long as it still holds `e`,
    /// so an in-memory copy of registry facts tagged with it is never served stale once the
    /// write that changed them has returned.
    pub fn registry_epoch(&self) -> u64 {
        self.registry_epoch.load(Ordering::SeqCst)
    }

    /// Marks a commit that wrote (or may have written) the registry; call it after the commit,
    /// whether it succeeded or not.
    pub(crate) fn registry_committed(&self) {
        self.registry_epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// Caps each tenant's change log at `entries` (at least 1); appending beyond it drops the
    /// oldest entries, so an image older than them is rebuilt instead of replayed.
    pub fn set_change_log_cap(&self, entries: u64) {
        self.change_log_cap.store(entries.max(1), Ordering::Relaxed);
    }

    pub(crate) fn change_log_cap(&self) -> u64 {
        self.change_log_cap.load(Ordering::Relaxed)
    }

    /// Turns group commit on (the default) or off. Off, every write pays its own fsync while
    /// holding the storage engine's single write lock; only useful to measure the difference.
    pub fn set_group_commit(&self, on: bool) {
        self.grouped.store(on, Ordering::Relaxed);
    }

    /// Durations of the durable commits so far (each includes its `fsync`; with group commit,
    /// each is one sync shared by the writes it covered).
    pub fn commit_latency(&self) -> crate::stats::HistogramSnapshot {
        self.commits.snapshot()
    }

    pub(crate) fn file_options(&self) -> FileOptions {
        self.options
    }

    /// What opening the main file took when the store opened, and whether it had to be
    /// repaired in full (see `recovery`).
    pub fn open_report(&self) -> OpenReport {
        self.opened
    }

    /// Makes every write acknowledged so far durable in the main file itself (a durable commit
    /// of it), as the store's checkpoint thread does every few hundred milliseconds; the row
    /// log's older file is then free for reuse.
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        let _writing = write_path();
        refuse_after_failed_sync(&self.db().sync)?;
        match &self.log {
            Some(log) => log
                .checkpoint(&|| sync(&self.db, &self.commits).map(|_| ()))
                .map(|_| ()),
            None => sync(&self.db, &self.commits).map(|_| ()),
        }
    }

    /// How many transactions the open applied from the row log (see `row_log`): writes
    /// acknowledged after the main file's last checkpoint, which a crash or a kill left there.
    pub fn log_entries_replayed(&self) -> u64 {
        self.log_replayed
    }

    pub(crate) fn db(&self) -> RwLockReadGuard<'_, Db> {
        read_db(&self.db)
    }

    pub(crate) fn grouped(&self) -> bool {
        self.grouped.load(Ordering::Relaxed)
    }

    /// Rewrites the file so that freed pages are released and their old contents are gone
    /// from it. Waits for transactions in flight to finish; returns whether anything moved.
    pub fn compact(&self) -> Result<bool, StoreError> {
        let _writing = write_path();
        let mut db = self.db.write().unwrap_or_else(|e| e.into_inner());
        let mut compacted = false;
        // A read snapshot holding the database would make redb refuse too.
        let Some(database) = db.only_handle() else {
            return Err(redb::CompactionError::TransactionInProgress.into());
        };
        // redb compacts in steps; repeat until a pass moves nothing.
        while database.compact()? {
            compacted = true;
        }
        // redb's compaction commits record no allocator state: one more durable commit does,
        // on a file long enough for it (see `recovery`), so a crash now needs no full repair.
        if compacted {
            db.begin_write()?.commit()?;
        }
        Ok(compacted)
    }

    /// A consistent snapshot for reading: the main file's, begun under the routing lock with
    /// the routing it then takes (a migration changes the routing under that lock in the same
    /// step as its main-file commit, so a snapshot never routes a tenant to the side that
    /// lacks its data), plus one of a dedicated tenant's file, begun on its first read.
    ///
    /// Lock order, everywhere: the main database's guard, then the routing lock, then a
    /// dedicated file's guard. Flips hold the main guard while they take the routing lock for
    /// writing, and compaction's write lock on the main database blocks new readers while it
    /// waits; taking the routing lock first here could deadlock with both.
    pub fn read(&self) -> Result<Reader, StoreError> {
        let db = self.db();
        let routing = self.placement.lock_read();
        let txn = db.begin_read()?;
        // The routing as of the main snapshot; a dedicated file's own snapshot begins on the
        // first read of its tenant, so a read costs nothing per other dedicated tenant. (A
        // file that a flip out has left since is still open, and still holds the data.)
        let files = Arc::clone(&routing);
        drop(routing);
        let main = db.clone();
        drop(db);
        Ok(Reader {
            _main: main,
            data: txn.open_table(DATA)?,
            files,
            opened: Opened::default(),
            registry: txn.open_table(REGISTRY)?,
            credentials: txn.open_table(CREDENTIALS)?,
            deleting: Default::default(),
        })
    }

    /// Runs `f` in one write transaction. On `Ok` the transaction is committed and synced to
    /// disk before this returns; on `Err` nothing of it is applied, except as
    /// [`Store::write_pending`] says for a write that spans dedicated files.
    pub fn write<R, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&mut Writer<'_>) -> Result<R, E>,
    ) -> Result<R, E> {
        let (result, pending) = self.write_pending(f)?;
        pending.wait_durable()?;
        Ok(result)
    }

    /// Runs `f` in one write transaction and commits it, returning before the commit is
    /// necessarily durable, so the caller can release its own locks first and let other
    /// writers join the same fsync. Writes committed alongside it are not affected: each write
    /// is its own transaction.
    ///
    /// `f` may touch any tenant: the main file's transaction is joined by one in a dedicated
    /// tenant's file when `f` first touches that tenant, and those `f` wrote to commit (each
    /// with its own fsync) before the main one. When `f` fails nothing of it is applied; when
    /// a commit fails after `f` succeeded, the files committed before it keep `f`'s writes
    /// (there is no transaction across files). For one tenant's own writes use
    /// [`Store::write_pending_for`], which touches that tenant's file alone.
    pub fn write_pending<R, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&mut Writer<'_>) -> Result<R, E>,
    ) -> Result<(R, Pending), E> {
        self.write_main(None, f)
    }

    /// [`Store::write_pending`] for a write of tenant `t`'s own data: it runs in `t`'s own
    /// file when `t` is dedicated (with that file's group commit; the registry is then a
    /// snapshot of the main file, for liveness checks), in the main file otherwise. Touching
    /// another tenant's data, or the registry of a dedicated tenant's write, is an error.
    /// Call it in `t`'s write order, so that `t` cannot move between files meanwhile.
    pub fn write_pending_for<R, E: From<StoreError>>(
        &self,
        t: TenantKey,
        f: impl FnOnce(&mut Writer<'_>) -> Result<R, E>,
    ) -> Result<(R, Pending), E> {
        match self.placement.get(t) {
            Some(file) => self.write_dedicated(t, &file, f),
            None => self.write_main(Some(t), f),
        }
    }

    /// A write in the main file; `only` restricts it to that tenant's data (and the server's
    /// log), otherwise every dedicated file joins it.
    pub(crate) fn write_main<R, E: From<StoreError>>(
        &self,
        only: Option<TenantKey>,
        f: impl FnOnce(&mut Writer<'_>) -> Result<R, E>,
    ) -> Result<(R, Pending), E> {
        let _writing = write_path();
        refuse_after_failed_sync(&self.db().sync)?;
        let entered = self.grouped().then(|| self.group.enter());
        let db = self.db();
        let mut txn = db.begin_write().map_err(StoreError::from)?;
        if entered.is_some() {
            crate::recovery::set_non_durable(&mut txn).map_err(StoreError::from)?;
        }
        // Read after the main write lock is held: a migration's flip holds that lock too.
        let files = self.placement.snapshot();
        // A dedicated file's write transaction begins when `f` first touches its tenant.
        // That cannot deadlock: this write holds the main write lock, which a write in a
        // tenant's own file never waits for (it reads the registry from a snapshot, and its
        // group commit syncs only its own file), and every other holder of a file's write
        // lock (flips, creation) is serialised with this one by the main lock.
        let txns: FileTxns = Opened::default();
        let (route, lazy) = match only {
            Some(t) => (Route::Main(t, files.contains_key(&t)), None),
            None => (
                Route::Any,
                Some(LazyFiles {
                    files: &files,
                    txns: &txns,
                }),
            ),
        };
        let (result, dirty, registry_written, mut rows) = {
            let tables = MainTables::open_logged(&txn, &self.file_writes)?;
            let mut writer = Writer {
                data: tables.data,
                dedicated: Opened::default(),
                lazy,
                route,
                registry: Registry::Write(tables.registry),
                meta: tables.meta,
                credentials: tables.credentials,
                log_cap: self.change_log_cap(),
                tracking: &self.tracking,
                registry_written: false,
                wrote: 0,
            };
            let result = f(&mut writer);
            let registry_written = writer.registry_written;
            let dirty: Vec<TenantKey> = writer
                .dedicated
                .keys()
                .into_iter()
                .filter(|k| writer.dedicated.get(*k).is_some_and(|(_, d)| *d))
                .collect();
            let rows = match &result {
                Ok(_) => writer.log_rows()?,
                Err(_) => None,
            };
            (result, dirty, registry_written, rows)
        };
        // On error, dropping the uncommitted transactions aborts them.
        let r = result?;
        // Again: a sync may have failed while `f` ran. Before any file commits, so a refusal
        // applies nothing.
        refuse_after_failed_sync(&db.sync)?;
        for (key, ftxn) in txns.into_entries() {
            if dirty.contains(&key) {
                ftxn.commit()?;
            }
        }
        let started = std::time::Instant::now();
        let committed = txn.commit_logged(rows.as_deref_mut());
        // Whatever the commit returned: a commit that failed late (its sync, say) may still
        // have changed the registry, and a needless bump only costs a registry read.
        if registry_written {
            self.registry_committed();
        }
        let committed = committed?;
        if entered.is_none() {
            self.commits.observe(started.elapsed());
        }
        drop(db);
        // Out of the group's open set first: a sync starting meanwhile need not wait for the
        // close below.
        let waiting = entered.map(|e| Waiting {
            seq: e.committed(),
            db: Arc::clone(&self.db),
            group: Arc::clone(&self.group),
            commits: Arc::clone(&self.commits),
        });
        // A commit path, not a reader's: where a database a vacuum swapped out closes.
        self.retired.close_unread();
        Ok((r, Pending::after(committed, waiting, self.log.as_ref())))
    }

    /// A write of dedicated tenant `t` in its own file.
    pub(crate) fn write_dedicated<R, E: From<StoreError>>(
        &self,
        t: TenantKey,
        file: &crate::placement::FileDb,
        f: impl FnOnce(&mut Writer<'_>) -> Result<R, E>,
    ) -> Result<(R, Pending), E> {
        let _writing = write_path();
        refuse_after_failed_sync(&read_db(&file.db).sync)?;
        let entered = self.grouped().then(|| file.group.enter());
        // The registry `f` checks liveness against is a snapshot of the main file, taken
        // before this file's write lock is held (lock order: main, then file; and this write
        // must never hold the main write lock). Waiting for the file's lock can take long, so
        // a suspend, delete or purge may commit and return meanwhile: when the registry epoch
        // moved between the snapshot and the lock, start again with a fresh snapshot, so that
        // a write whose transaction begins after such a change returned always sees it. Each
        // retry needs a registry commit inside its short window, and those are operator
        // actions and tenant creations, so the loop ends.
        // Bindings drop in reverse order: the main database's handle after the registry
        // snapshot read from it.
        let (_main, registry, db, mut txn) = loop {
            let before = self.registry_epoch();
            // Kept for as long as the snapshot: a vacuum's swap leaves this database open.
            let main = self.db().clone();
            let registry = main
                .begin_read()
                .map_err(StoreError::from)?
                .open_table(REGISTRY)
                .map_err(StoreError::from)?;
            let db = read_db(&file.db);
            let txn = db.begin_write().map_err(StoreError::from)?;
            if self.registry_epoch() == before {
                break (main, registry, db, txn);
            }
            // Nothing written yet.
            txn.abort().map_err(StoreError::from)?;
        };
        if entered.is_some() {
            crate::recovery::set_non_durable(&mut txn).map_err(StoreError::from)?;
        }
        let result = {
            // A dedicated tenant's file: no vacuum copies it, nothing to record.
            let mut writer = Writer {
                data: untracked(&txn, DATA, TableTag::Data)?,
                dedicated: Opened::default(),
                lazy: None,
                route: Route::Home(t),
                registry: Registry::Read(registry),
                meta: untracked(&txn, META, TableTag::Meta)?,
                credentials: untracked(&txn, CREDENTIALS, TableTag::Credentials)?,
                log_cap: self.change_log_cap(),
                tracking: &self.tracking,
                registry_written: false,
                wrote: 0,
            };
            f(&mut writer)
        };
        let r = result?;
        // Again: a sync may have failed while `f` ran.
        refuse_after_failed_sync(&db.sync)?;
        let started = std::time::Instant::now();
        txn.commit()?;
        if entered.is_none() {
            self.commits.observe(started.elapsed());
        }
        drop(db);
        let waiting = entered.map(|e| Waiting {
            seq: e.committed(),
            db: Arc::clone(&file.db),
            group: Arc::clone(&file.group),
            commits: Arc::clone(&self.commits),
        });
        Ok((
            r,
            Pending {
                waiting,
                logged: None,
            },
        ))
    }
}

/// A read snapshot.
pub struct Reader {
    data: ReadOnlyTable<&'static [u8], &'static [u8]>,
    /// Dedicated tenants' files, as routed when the snapshot began.
    files: Arc<Files>,
    /// The `data` table of each dedicated file read so far, by its tenant's key.
    opened: Opened<TenantKey, ReadOnlyTable<&'static [u8], &'static [u8]>>,
    registry: ReadOnlyTable<&'static str, &'static [u8]>,
    credentials: ReadOnlyTable<&'static str, &'static [u8]>,
    deleting: crate::collection_deleting::DeletingMemo,
    /// The main database this snapshot reads: kept open by this handle after a vacuum swapped
    /// it out (an older snapshot, as any other). Declared last, so that it drops after the
    /// tables read from it (fields drop in declaration order).
    _main: Db,
}

/// Which tenants' data a [`Writer`] may touch in its own `data` table.
pub(crate) enum Route {
    /// Any tenant not in a joined dedicated file (a server-wide write).
    Any,
    /// Only this tenant (and the server's own log); with `true`, the tenant lives in its own
    /// file (as routed under the main write lock) and none of its keys are writable here.
    Main(TenantKey, bool),
    /// Only this dedicated tenant: the writer runs in its file.
    Home(TenantKey),
}

/// The registry as a writer sees it: its own table in the main file, or, for a dedicated
/// tenant's write in its own file, a snapshot of the main file's (read-only).
pub(crate) enum Registry<'txn> {
    Write(Tracked<'txn, &'static str, &'static [u8]>),
    Read(ReadOnlyTable<&'static str, &'static [u8]>),
}

pub(crate) type DataTable<'txn> = Tracked<'txn, &'static [u8], &'static [u8]>;

/// Dedicated files' write transactions begun by a server-wide write. A file's guard is held
/// only while its transaction begins: nothing takes a dedicated file's write lock (only the
/// main file is compacted).
type FileTxns = Opened<TenantKey, WriteTxn>;

/// The dedicated files a server-wide write may join, and those it has joined.
pub(crate) struct LazyFiles<'txn> {
    files: &'txn Files,
    txns: &'txn FileTxns,
}

/// The inside of a write transaction.
pub struct Writer<'txn> {
    /// The tables are [`Tracked`]: a vacuum copying the main file learns every key written.
    pub(crate) data: DataTable<'txn>,
    /// Joined dedicated files' `data` tables, with whether this write wrote to them.
    pub(crate) dedicated: Opened<TenantKey, (DataTable<'txn>, bool)>,
    /// For a server-wide write: the dedicated files it joins on first access.
    pub(crate) lazy: Option<LazyFiles<'txn>>,
    pub(crate) route: Route,
    pub(crate) registry: Registry<'txn>,
    pub(crate) meta: Tracked<'txn, &'static str, u64>,
    pub(crate) credentials: Tracked<'txn, &'static str, &'static [u8]>,
    /// The store's change log cap when this write began.
    pub(crate) log_cap: u64,
    /// Records the keys written to tenants that are migrating.
    pub(crate) tracking: &'txn crate::tracking::Tracking,
    /// Whether this write opened the registry for writing: its commit then bumps
    /// [`Store::registry_epoch`].
    pub(crate) registry_written: bool,
    /// Bytes of keys and values this write has written to tenant tables so far (a removal
    /// counts its key): whether a failed closure left anything behind in the transaction, and
    /// how large a batch's transaction has grown.
    pub(crate) wrote: u64,
}

impl Writer<'_> {
    /// The row log payload of this transaction's writes to the main file: every key written,
    /// with its value as the transaction now holds it (see `row_log`). Empty unless the tables
    /// keep their keys.
    pub(crate) fn log_rows(&mut self) -> Result<Option<Vec<u8>>, StoreError> {
        // Past the bound its rows would be too large to log (see `WriteTxn::commit_logged`):
        // not read back at all.
        if self.wrote > crate::db::MAX_LOGGED_BYTES as u64 {
            return Ok(None);
        }
        let mut out = crate::row_log::begin_entry();
        self.data.log_rows(&mut out)?;
        if let Registry::Write(t) = &mut self.registry {
            t.log_rows(&mut out)?;
        }
        self.meta.log_rows(&mut out)?;
        self.credentials.log_rows(&mut out)?;
        Ok(Some(out))
    }

    /// Changes made so far to the main file's tables in this transaction (every write goes
    /// through a [`Tracked`] table): a batch's leader compares it before and after a closure
    /// that failed, to know whether the closure left anything behind.
    pub(crate) fn changes(&self) -> u64 {
        let registry = match &self.registry {
            Registry::Write(t) => t.changes(),
            Registry::Read(_) => 0,
        };
        self.data.changes() + self.meta.changes() + self.credentials.changes() + registry
    }
}

fn misrouted(t: TenantKey) -> StoreError {
    StoreError::Engine(format!(
        "tenant key {} is not writable in this transaction (it lives in another file)",
        t.raw()
    ))
}

impl<'txn> Writer<'txn> {
    fn routes_here(&self, t: TenantKey) -> bool {
        match &self.route {
            Route::Any => !self.joins_lazily(t),
            // The server's own key never lives in a dedicated file.
            Route::Main(only, in_file) => (t == *only && !in_file) || t == TenantKey::SERVER,
            Route::Home(home) => t == *home,
        }
    }

    /// Whether `t` is a dedicated tenant whose file this server-wide write joins on access.
    fn joins_lazily(&self, t: TenantKey) -> bool {
        self.lazy.as_ref().is_some_and(|l| l.files.contains_key(&t))
    }

    /// Whether tenant `t` lives in a dedicated file of its own (as this write routes it).
    fn in_own_file(&self, t: TenantKey) -> bool {
        if self.dedicated.get(t).is_some() || self.joins_lazily(t) {
            return true;
        }
        match &self.route {
            Route::Home(home) => *home == t,
            Route::Main(only, in_file) => *only == t && *in_file,
            Route::Any => false,
        }
    }

    pub(crate) fn table(
        &self,
        t: TenantKey,
    ) -> Result<&Table<'txn, &'static [u8], &'static [u8]>, StoreError> {
        if let Some((table, _)) = self.dedicated.get(t) {
            return Ok(table);
        }
        if let Some(lazy) = &self.lazy
            && let Some(file) = lazy.files.get(&t)
        {
            let txns: &'txn FileTxns = lazy.txns;
            let txn = txns
                .get_or_try_insert(t, || Ok::<_, StoreError>(read_db(&file.db).begin_write()?))?;
            let table = untracked(txn, DATA, TableTag::Data)?;
            let (table, _) = self
                .dedicated
                .get_or_try_insert(t, || Ok::<_, StoreError>((table, false)))?;
            return Ok(table);
        }
        if self.routes_here(t) {
            Ok(&self.data)
        } else {
            Err(misrouted(t))
        }
    }
}

impl<'txn> Writer<'txn> {
    fn registry_write(
        &mut self,
    ) -> Result<&mut Tracked<'txn, &'static str, &'static [u8]>, StoreError> {
        self.registry_written = true;
        match &mut self.registry {
            Registry::Write(t) => Ok(t),
            Registry::Read(_) => Err(StoreError::Engine(
                "the registry is read-only in a dedicated tenant's own write".into(),
            )),
        }
    }

    /// The `data` table that holds tenant `t`'s keys in this transaction, for writing; it
    /// records the keys written while `t` is migrating (see `tracking`).
    pub(crate) fn table_mut(
        &mut self,
        t: TenantKey,
    ) -> Result<crate::tracking::TenantTable<'_, 'txn>, StoreError> {
        let written = self.tracking.of(t);
        // Routes (and joins a dedicated file) first; then the same table again, borrowed
        // beside the byte count.
        self.untracked_table_mut(t)?;
        let Writer {
            data,
            dedicated,
            wrote,
            ..
        } = self;
        let table = match dedicated.get_mut(t) {
            Some((table, dirty)) => {
                *dirty = true;
                table
            }
            None => data,
        };
        Ok(crate::tracking::TenantTable {
            table,
            written,
            wrote,
        })
    }

    fn untracked_table_mut(&mut self, t: TenantKey) -> Result<&mut DataTable<'txn>, StoreError> {
        if self.dedicated.get(t).is_some() || self.joins_lazily(t) {
            // Joins the file if this write has not yet.
            self.table(t)?;
            return match self.dedicated.get_mut(t) {
                Some((table, dirty)) => {
                    *dirty = true;
                    Ok(table)
                }
                None => Err(misrouted(t)),
            };
        }
        if self.routes_here(t) {
            Ok(&mut self.data)
        } else {
            Err(misrouted(t))
        }
    }
}

type IdIter<'a> = Box<dyn Iterator<Item = Result<RecordId, StoreError>> + 'a>;

pub(crate) mod sealed {
    use redb::ReadableTable;

    /// The raw tables behind [`super::Reads`]. In a private module, so no other crate can
    /// name it and reach a table past the typed methods (credentials above all, which only
    /// [`crate::CredentialStore`] touches).
    pub trait Tables {
        /// The `data` table holding tenant `t`'s keys (its own file's, if it is dedicated).
        fn data_table(
            &self,
            t: super::TenantKey,
        ) -> Result<&impl ReadableTable<&'static [u8], &'static [u8]>, super::StoreError>;
        /// Registry rows with ids after `after`, at most `limit`, in id order.
        fn registry_rows(
            &self,
            after: Option<&str>,
            limit: usize,
        ) -> Result<Vec<(String, Vec<u8>)>, super::StoreError>;
        fn registry_get(&self, id: &str) -> Result<Option<Vec<u8>>, super::StoreError>;
        fn registry_len(&self) -> Result<u64, super::StoreError>;
        fn credentials_table(&self) -> &impl ReadableTable<&'static str, &'static [u8]>;
        /// A snapshot's memo of the collections being deleted; none in a write transaction,
        /// whose own writes may change them.
        fn deleting_memo(&self) -> Option<&crate::collection_deleting::DeletingMemo> {
            None
        }
    }
}

use sealed::Tables;

/// One registry row as stored: its id, and its meta or why that does not decode.
pub type RegistryRow = (String, Result<TenantMeta, StoreError>);

/// Reads shared by snapshots and write transactions (which see their own writes).
#[allow(private_bounds)]
pub trait Reads: Tables {
    fn tenant(&self, id: &TenantId) -> Result<Option<TenantMeta>, StoreError> {
        let Some(v) = self.registry_get(id.as_str())? else {
            return Ok(None);
        };
        let stored: StoredMeta = decode_json(&v)?;
        Ok(Some(TenantMeta::from_stored(id.clone(), stored)))
    }

    fn tenants(&self) -> Result<Vec<TenantMeta>, StoreError> {
        let mut out = Vec::new();
        for (k, v) in self.registry_rows(None, usize::MAX)? {
            let id = TenantId::parse(&k).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            out.push(TenantMeta::from_stored(id, decode_json(&v)?));
        }
        Ok(out)
    }

    /// Up to `limit` tenants with ids after `after` (all from the start when `None`), in id
    /// order. Each row is decoded on its own and returned with its stored id, so one row that
    /// does not decode cannot hide the others from a caller that can carry on without it.
    fn tenants_page(
        &self,
        after: Option<&TenantId>,
        limit: usize,
    ) -> Result<Vec<RegistryRow>, StoreError> {
        Ok(decode_registry_rows(
            self.registry_rows(after.map(|a| a.as_str()), limit)?,
        ))
    }

    /// How many tenants are registered (soft-deleted ones included); reads keys only.
    fn tenant_count(&self) -> Result<u64, StoreError> {
        self.registry_len()
    }

    fn collection(
        &self,
        t: TenantKey,
        name: &CollectionName,
    ) -> Result<Option<Collection>, StoreError> {
        json_row(self.data_table(t)?, &keys::collection(t, name))
    }

    /// How many collections tenant `t` has: their keys counted, no row decoded nor copied
    /// (figures for observability, read for every tenant; a row that does not decode is
    /// reported by the tenant's own requests and `verify`).
    fn collection_count(&self, t: TenantKey) -> Result<u64, StoreError> {
        let prefix = keys::collections(t);
        let mut n = 0;
        for entry in self.data_table(t)?.range(prefix.as_slice()..)? {
            let (k, _) = entry?;
            if !k.value().starts_with(&prefix) {
                break;
            }
            n += 1;
        }
        Ok(n)
    }

    fn collections(&self, t: TenantKey) -> Result<Vec<Collection>, StoreError> {
        json_rows(self.data_table(t)?, &keys::collections(t))
    }

    /// Record `id`, unless its collection is being deleted (`crate::collection_deleting`).
    fn record(&self, t: TenantKey, id: &RecordId) -> Result<Option<Record>, StoreError> {
        let record = self.stored_record(t, id)?;
        crate::collection_deleting::unless_hidden(self, t, record)
    }

    /// [`Reads::record`] without the record's vector (`vector: None`), which it skips
    /// instead of copying.
    fn record_without_vector(
        &self,
        t: TenantKey,
        id: &RecordId,
    ) -> Result<Option<Record>, StoreError> {
        let v = self.data_table(t)?.get(keys::record(t, id).as_slice())?;
        let record = v
            .map(|v| crate::codec::decode_record_without_vector(v.value()))
            .transpose()?;
        crate::collection_deleting::unless_hidden(self, t, record)
    }

    /// The fields of record `id` that decide who may see it (see
    /// [`crate::codec::decode_record_scope`]), unless its collection is being deleted: for a
    /// visibility check over many records, which share `memo` (one transaction's walk).
    fn record_scope(
        &self,
        t: TenantKey,
        id: &RecordId,
        memo: &mut crate::HiddenMemo,
    ) -> Result<Option<crate::RecordScope>, StoreError> {
        let v = self.data_table(t)?.get(keys::record(t, id).as_slice())?;
        let Some(scope) = v
            .map(|v| crate::codec::decode_record_scope(v.value()))
            .transpose()?
        else {
            return Ok(None);
        };
        if memo.hides_collection(self, t, &scope.modality)? {
            return Ok(None);
        }
        Ok(Some(scope))
    }

    /// Every record of the tenant in id order, starting after `after`, but those of a
    /// collection being deleted.
    fn records<'a>(
        &'a self,
        t: TenantKey,
        after: Option<&RecordId>,
    ) -> Result<Box<dyn Iterator<Item = Result<Record, StoreError>> + 'a>, StoreError> {
        let mut memo = crate::collection_deleting::HiddenMemo::default();
        Ok(Box::new(self.stored_records(t, after)?.filter_map(
            move |r| match r.and_then(|rec| Ok((memo.hides(self, t, &rec)?, rec))) {
                Ok((true, _)) => None,
                Ok((false, rec)) => Some(Ok(rec)),
                Err(e) => Some(Err(e)),
            },
        )))
    }

    /// Record `id` as stored, even one of a collection being deleted: for that delete and for
    /// the checks of every stored byte. Every other read goes through [`Reads::record`].
    fn stored_record(&self, t: TenantKey, id: &RecordId) -> Result<Option<Record>, StoreError> {
        let v = self.data_table(t)?.get(keys::record(t, id).as_slice())?;
        v.map(|v| decode_record(v.value())).transpose()
    }

    /// Every record of the tenant as stored, in id order after `after`, even those of a
    /// collection being deleted (see [`Reads::stored_record`]).
    fn stored_records<'a>(
        &'a self,
        t: TenantKey,
        after: Option<&RecordId>,
    ) -> Result<Box<dyn Iterator<Item = Result<Record, StoreError>> + 'a>, StoreError> {
        let (start, prefix) = record_bounds(t, after);
        let iter = bounded_range(self.data_table(t)?, &start, &prefix)?;
        Ok(Box::new(
            iter.map(|e| e.and_then(|(_, v)| decode_record(&v))),
        ))
    }

    /// [`Reads::stored_records`] without the records' vectors (`vector: None`), which it
    /// skips instead of copying: for a walk that needs only each record's id and fields.
    fn stored_records_without_vector<'a>(
        &'a self,
        t: TenantKey,
        after: Option<&RecordId>,
    ) -> Result<Box<dyn Iterator<Item = Result<Record, StoreError>> + 'a>, StoreError> {
        let (start, prefix) = record_bounds(t, after);
        let iter = bounded_range(self.data_table(t)?, &start, &prefix)?;
        Ok(Box::new(iter.map(|e| {
            e.and_then(|(_, v)| crate::codec::decode_record_without_vector(&v))
        })))
    }

    /// Ids in one scope-index list, in id order, starting after `after`.
    fn scope_ids<'a>(
        &'a self,
        t: TenantKey,
        domain: &Domain,
        field: ScopeField,
        value: &str,
        after: Option<&RecordId>,
    ) -> Result<IdIter<'a>, StoreError> {
        let list = keys::scope_list(t, domain, field, value);
        let start = match after {
            Some(id) => successor(keys::scope_entry(t, domain, field, value, id)),
            None => list.clone(),
        };
        let skip = list.len();
        let iter = bounded_range(self.data_table(t)?, &start, &list)?;
        Ok(Box::new(iter.map(move |e| {
            let (k, _) = e?;
            let id =
                std::str::from_utf8(&k[skip..]).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            RecordId::parse(id).map_err(|e| StoreError::Corrupt(e.to_string()))
        })))
    }

    /// The record that a run-level dedup key points to, if any.
    fn dedup_target(&self, t: TenantKey, record: &Record) -> Result<Option<RecordId>, StoreError> {
        let Some(key) = dedup_key(t, record) else {
            return Ok(None);
        };
        let Some(v) = self.data_table(t)?.get(key.as_slice())? else {
            return Ok(None);
        };
        let id = std::str::from_utf8(v.value()).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(Some(
            RecordId::parse(id).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        ))
    }

    /// Audit rows of the tenant with sequence numbers above `after`, oldest first.
    fn audit_rows(
        &self,
        t: TenantKey,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let prefix = keys::audit_log(t);
        let start = keys::audit_row(t, after.saturating_add(1));
        let mut out = Vec::new();
        for entry in bounded_range(self.data_table(t)?, &start, &prefix)?.take(limit) {
            let (k, v) = entry?;
            let seq = k[prefix.len()..]
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| StoreError::Corrupt("audit key".into()))?;
            out.push((seq, v));
        }
        Ok(out)
    }

    fn blob(&self, t: TenantKey, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .data_table(t)?
            .get(keys::blob(t, name).as_slice())?
            .map(|v| v.value().to_vec()))
    }

    /// Every blob of the tenant whose name starts with `prefix`, by name, with its name.
    fn blobs_named(
        &self,
        t: TenantKey,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let start = keys::blob(t, prefix);
        let skip = keys::blob(t, "").len();
        let mut out = Vec::new();
        for entry in prefix_range(self.data_table(t)?, &start)? {
            let (k, v) = entry?;
            let name = std::str::from_utf8(&k[skip..])
                .map_err(|e| StoreError::Corrupt(format!("blob name: {e}")))?;
            out.push((name.to_owned(), v));
        }
        Ok(out)
    }
}

impl Reads for Reader {}
impl Reads for Writer<'_> {}

impl Tables for Reader {
    fn data_table(
        &self,
        t: TenantKey,
    ) -> Result<&impl ReadableTable<&'static [u8], &'static [u8]>, StoreError> {
        match self.files.get(&t) {
            None => Ok(&self.data),
            Some(file) => self.opened.get_or_try_insert(t, || {
                let txn = read_db(&file.db).begin_read()?;
                Ok(txn.open_table(DATA)?)
            }),
        }
    }
    fn registry_rows(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        registry_rows(&self.registry, after, limit)
    }
    fn registry_get(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.registry.get(id)?.map(|v| v.value().to_vec()))
    }
    fn registry_len(&self) -> Result<u64, StoreError> {
        Ok(redb::ReadableTableMetadata::len(&self.registry)?)
    }
    fn credentials_table(&self) -> &impl ReadableTable<&'static str, &'static [u8]> {
        &self.credentials
    }
    fn deleting_memo(&self) -> Option<&crate::collection_deleting::DeletingMemo> {
        Some(&self.deleting)
    }
}

impl Tables for Writer<'_> {
    fn data_table(
        &self,
        t: TenantKey,
    ) -> Result<&impl ReadableTable<&'static [u8], &'static [u8]>, StoreError> {
        self.table(t)
    }
    fn registry_rows(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        match &self.registry {
            Registry::Write(t) => registry_rows(&**t, after, limit),
            Registry::Read(t) => registry_rows(t, after, limit),
        }
    }
    fn registry_get(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(match &self.registry {
            Registry::Write(t) => t.get(id)?.map(|v| v.value().to_vec()),
            Registry::Read(t) => t.get(id)?.map(|v| v.value().to_vec()),
        })
    }
    fn registry_len(&self) -> Result<u64, StoreError> {
        Ok(match &self.registry {
            Registry::Write(t) => redb::ReadableTableMetadata::len(&**t)?,
            Registry::Read(t) => redb::ReadableTableMetadata::len(t)?,
        })
    }
    fn credentials_table(&self) -> &impl ReadableTable<&'static str, &'static [u8]> {
        &*self.credentials
    }
}

/// Registry rows as stored (id, bytes), each decoded on its own.
pub(crate) fn decode_registry_rows(rows: Vec<(String, Vec<u8>)>) -> Vec<RegistryRow> {
    rows.into_iter()
        .map(|(raw, v)| {
            let meta = TenantId::parse(&raw)
                .map_err(|e| StoreError::Corrupt(e.to_string()))
                .and_then(|id| Ok(TenantMeta::from_stored(id, decode_json(&v)?)));
            (raw, meta)
        })
        .collect()
}

pub(crate) fn registry_rows(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    use std::ops::Bound;
    let start = after.map_or(Bound::Unbounded, Bound::Excluded);
    let mut out = Vec::new();
    for entry in table.range::<&str>((start, Bound::Unbounded))?.take(limit) {
        let (k, v) = entry?;
        out.push((k.value().to_owned(), v.value().to_vec()));
    }
    Ok(out)
}

impl<'txn> Writer<'txn> {
    /// Records that a tenant purge commits with this write, at `at` (see
    /// [`Store::last_purge_at`]).
    pub fn note_purge(&mut self, at: Millis) -> Result<(), StoreError> {
        self.meta
            .insert(LAST_PURGE_MS, u64::try_from(at).unwrap_or(0))?;
        Ok(())
    }

    /// Marks, in this transaction, that a tenant is at `dedicated` from its commit on (see
    /// `DEDICATED_SEEN`).
    pub(crate) fn note_dedicated_tenant(&mut self) -> Result<(), StoreError> {
        self.meta.insert(DEDICATED_SEEN, 1)?;
        Ok(())
    }

    /// Records that an erasure's vacuum has not run yet, so that a restart before it runs
    /// vacuums at start. Set in the erasure's own transaction; the vacuum that follows it
    /// clears it at its swap (`Store::vacuum`), which alone knows whether its new file could
    /// still hold the erased bytes.
    pub fn set_compaction_owed(&mut self, owed: bool) -> Result<(), StoreError> {
        self.meta.insert(COMPACTION_OWED, u64::from(owed))?;
        Ok(())
    }

    /// Registers a tenant under a fresh, never reused storage key.
    pub fn create_tenant(
        &mut self,
        id: &TenantId,
        created_at: Millis,
        profile: serde_json::Map<String, serde_json::Value>,
    ) -> Result<TenantMeta, StoreError> {
        let next = next_tenant_key(&*self.meta)?.raw();
        self.registry_write()?;
        self.meta.insert(NEXT_TENANT_KEY, next + 1)?;
        let meta = TenantMeta {
            id: id.clone(),
            key: TenantKey::from_raw(next),
            created_at,
            profile,
        };
        self.put_tenant(&meta)?;
        Ok(meta)
    }

    /// Writes tenant `id`'s registry row as the bytes given, for tests of damaged rows.
    #[cfg(feature = "test-support")]
    pub fn put_registry_bytes_for_tests(
        &mut self,
        id: &TenantId,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        self.registry_write()?.insert(id.as_str(), bytes)?;
        crate::registry_marks::note_row(&mut self.meta, id.as_str(), bytes)?;
        Ok(())
    }

    /// Writes the `meta` row `row` as the value given, for tests of damaged rows.
    #[cfg(feature = "test-support")]
    pub fn put_meta_for_tests(&mut self, row: &str, value: u64) -> Result<(), StoreError> {
        self.meta.insert(row, value)?;
        Ok(())
    }

    pub fn put_tenant(&mut self, meta: &TenantMeta) -> Result<(), StoreError> {
        let row = encode_json(&meta.to_stored())?;
        self.registry_write()?
            .insert(meta.id.as_str(), row.as_slice())?;
        crate::registry_marks::note_row(&mut self.meta, meta.id.as_str(), &row)?;
        Ok(())
    }

    /// Removes the tenant from the registry and erases every key of its data and every
    /// credential issued for it.
    ///
    /// A dedicated tenant's data is left in its own file: the caller deletes that file with
    /// [`Store::remove_dedicated`] once this commits. Erasing it here would commit (durably,
    /// in the file) before the registry row goes; a crash in between would leave a registered
    /// tenant with no data, and the erase would hold the main write lock meanwhile. A crash
    /// after the commit leaves an orphan file, deleted at the next start.
    pub fn erase_tenant(&mut self, meta: &TenantMeta) -> Result<(), StoreError> {
        self.unregister_tenant(meta)?;
        self.erase_range(meta.key)
    }

    /// Removes the tenant's registry row and every credential issued for it: what makes its
    /// data reachable.
    fn unregister_tenant(&mut self, meta: &TenantMeta) -> Result<(), StoreError> {
        self.registry_write()?.remove(meta.id.as_str())?;
        crate::registry_marks::forget_row(&mut self.meta, meta.id.as_str())?;
        let owned = match crate::credentials::owned_ids(&*self.meta, meta.key)? {
            Some(ids) => ids,
            // A data directory whose owner index is not built yet: find them by a scan.
            None => {
                let mut ids = Vec::new();
                for entry in self.credentials.iter()? {
                    let (k, v) = entry?;
                    if crate::credentials::decode_row(v.value())?.owner == Some(meta.key) {
                        ids.push(k.value().to_owned());
                    }
                }
                ids
            }
        };
        for id in owned {
            crate::credentials::unindex_owner(&mut self.meta, meta.key, &id)?;
            // The row is what counts: an index entry that outlived its row, or a row that
            // belongs to someone else, removes nothing.
            let row = self
                .credentials
                .get(id.as_str())?
                .map(|v| v.value().to_vec());
            if let Some(row) = row
                && crate::credentials::decode_row(&row)?.owner == Some(meta.key)
            {
                self.credentials.remove(id.as_str())?;
            }
        }
        Ok(())
    }

    pub fn put_collection(&mut self, t: TenantKey, c: &Collection) -> Result<(), StoreError> {
        self.table_mut(t)?.insert(
            keys::collection(t, &c.name).as_slice(),
            encode_json(c)?.as_slice(),
        )?;
        Ok(())
    }

    pub fn delete_collection(
        &mut self,
        t: TenantKey,
        name: &CollectionName,
    ) -> Result<bool, StoreError> {
        Ok(self
            .table_mut(t)?
            .remove(keys::collection(t, name).as_slice())?
            .is_some())
    }

    /// Stores `record`, replacing any record with its id, and keeps the scope index, the
    /// expiry index and the dedup entry in step. Returns the record it replaced (its metadata
    /// not parsed, see [`RemovedRecord`]).
    pub fn put_record(
        &mut self,
        t: TenantKey,
        record: &Record,
    ) -> Result<Option<RemovedRecord>, StoreError> {
        self.put_record_encoded(t, record, &MetadataJson::of(&record.metadata)?)
    }

    /// [`Writer::put_record`] with the record's metadata encoded before the transaction (see
    /// [`MetadataJson`]).
    pub fn put_record_encoded(
        &mut self,
        t: TenantKey,
        record: &Record,
        metadata: &MetadataJson,
    ) -> Result<Option<RemovedRecord>, StoreError> {
        // The record row first: its insert returns the row it replaces, so a new record (the
        // common case) costs one lookup of its key, not a removal and then an insert.
        let encoded = encode_record_with(record, metadata)?;
        let old = self
            .table_mut(t)?
            .insert(keys::record(t, &record.id).as_slice(), encoded.as_slice())?
            .map(|bytes| decode_removed_record(bytes.value()))
            .transpose()?;
        if let Some(old) = &old {
            self.remove_record_entries(t, &old.record)?;
        }
        if let Some(old) = old.as_ref().map(|o| &o.record)
            && old.modality != record.modality
        {
            self.log_change(t, ChangeOp::Delete, &old.modality, &old.id)?;
        }
        self.log_change(t, ChangeOp::Upsert, &record.modality, &record.id)?;
        for key in scope_entries(t, record) {
            self.table_mut(t)?.insert(key.as_slice(), [].as_slice())?;
        }
        if let Some(key) = crate::expiry::entry(t, record) {
            self.table_mut(t)?.insert(key.as_slice(), [].as_slice())?;
        }
        if let Some(key) = dedup_key(t, record) {
            self.table_mut(t)?
                .insert(key.as_slice(), record.id.as_str().as_bytes())?;
        }
        Ok(old)
    }

    /// Deletes a record with its index entries, logging the change. Returns it (its metadata
    /// not parsed, see [`RemovedRecord`]), or `None` if there was none.
    pub fn delete_record(
        &mut self,
        t: TenantKey,
        id: &RecordId,
    ) -> Result<Option<RemovedRecord>, StoreError> {
        let old = match self.table_mut(t)?.remove(keys::record(t, id).as_slice())? {
            Some(bytes) => decode_removed_record(bytes.value())?,
            None => return Ok(None),
        };
        self.remove_record_entries(t, &old.record)?;
        self.log_change(t, ChangeOp::Delete, &old.record.modality, &old.record.id)?;
        Ok(Some(old))
    }

    /// Removes the scope-index and expiry-index entries of a record whose row is gone or
    /// replaced, and its dedup entry if that still points to it.
    fn remove_record_entries(&mut self, t: TenantKey, old: &Record) -> Result<(), StoreError> {
        let id = &old.id;
        for key in scope_entries(t, old) {
            self.table_mut(t)?.remove(key.as_slice())?;
        }
        if let Some(key) = crate::expiry::entry(t, old) {
            self.table_mut(t)?.remove(key.as_slice())?;
        }
        if let Some(key) = dedup_key(t, old) {
            // Another record with the same content may own the entry now; leave it alone.
            // Through the tenant's own table: in a server-wide write, a dedicated tenant's
            // rows are in its file, not in `data`.
            let ours = self
                .table(t)?
                .get(key.as_slice())?
                .is_some_and(|v| v.value() == id.as_str().as_bytes());
            if ours {
                self.table_mut(t)?.remove(key.as_slice())?;
            }
        }
        Ok(())
    }

    /// Appends a row to the tenant's audit log and returns its sequence number.
    pub fn append_audit(&mut self, t: TenantKey, row: &[u8]) -> Result<u64, StoreError> {
        let prefix = keys::audit_log(t);
        let seq = {
            let mut range = match keys::prefix_end(&prefix) {
                Some(end) => self.table(t)?.range(prefix.as_slice()..end.as_slice())?,
                None => self.table(t)?.range(prefix.as_slice()..)?,
            };
            match range.next_back() {
                Some(entry) => {
                    let (k, _) = entry?;
                    let bytes: [u8; 8] = k.value()[prefix.len()..]
                        .try_into()
                        .map_err(|_| StoreError::Corrupt("audit key".into()))?;
                    u64::from_be_bytes(bytes) + 1
                }
                None => 1,
            }
        };
        self.table_mut(t)?
            .insert(keys::audit_row(t, seq).as_slice(), row)?;
        Ok(seq)
    }

    /// Deletes the oldest rows of `t`'s audit log, from its start, while `stale` says so: at
    /// most `max` of them, and never the newest row (its sequence number is the base of the
    /// next row's: a log emptied would number its next row 1 again, and a client paging by
    /// cursor would meet positions it has seen). Returns how many it deleted and whether it
    /// stopped at `max` (more may be stale).
    pub fn trim_audit_log(
        &mut self,
        t: TenantKey,
        mut stale: impl FnMut(&[u8]) -> Result<bool, StoreError>,
        max: usize,
    ) -> Result<(usize, bool), StoreError> {
        let prefix = keys::audit_log(t);
        let newest = {
            let mut range = match keys::prefix_end(&prefix) {
                Some(end) => self.table(t)?.range(prefix.as_slice()..end.as_slice())?,
                None => self.table(t)?.range(prefix.as_slice()..)?,
            };
            match range.next_back() {
                Some(entry) => entry?.0.value().to_vec(),
                None => return Ok((0, false)),
            }
        };
        let mut doomed = Vec::new();
        let mut at_max = false;
        for entry in prefix_range(self.table(t)?, &prefix)? {
            let (k, v) = entry?;
            if k == newest || !stale(&v)? {
                break;
            }
            if doomed.len() == max {
                at_max = true;
                break;
            }
            doomed.push(k);
        }
        for k in &doomed {
            self.table_mut(t)?.remove(k.as_slice())?;
        }
        Ok((doomed.len(), at_max))
    }

    /// Erases the rows of `t`'s audit log for which `erase` says so (a purge erases the
    /// server log's rows about the purged tenant).
    pub fn erase_audit_rows(
        &mut self,
        t: TenantKey,
        mut erase: impl FnMut(&[u8]) -> Result<bool, StoreError>,
    ) -> Result<usize, StoreError> {
        let prefix = keys::audit_log(t);
        let mut doomed = Vec::new();
        for entry in prefix_range(self.table(t)?, &prefix)? {
            let (k, v) = entry?;
            if erase(&v)? {
                doomed.push(k);
            }
        }
        for k in &doomed {
            self.table_mut(t)?.remove(k.as_slice())?;
        }
        Ok(doomed.len())
    }

    pub fn put_blob(&mut self, t: TenantKey, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.table_mut(t)?
            .insert(keys::blob(t, name).as_slice(), bytes)?;
        Ok(())
    }

    pub fn delete_blob(&mut self, t: TenantKey, name: &str) -> Result<(), StoreError> {
        self.table_mut(t)?.remove(keys::blob(t, name).as_slice())?;
        Ok(())
    }
}

/// The storage key the registry assigns to the next tenant it creates.
pub(crate) fn next_tenant_key(
    meta: &impl ReadableTable<&'static str, u64>,
) -> Result<TenantKey, StoreError> {
    Ok(TenantKey::from_raw(
        meta.get(NEXT_TENANT_KEY)?.map(|v| v.value()).unwrap_or(1),
    ))
}

pub(crate) fn scope_entries(t: TenantKey, r: &Record) -> Vec<Vec<u8>> {
    let d = &r.memory_domain;
    let mut out = vec![keys::scope_entry(t, d, ScopeField::Domain, "", &r.id)];
    if let Some(run) = &r.run_id {
        out.push(keys::scope_entry(
            t,
            d,
            ScopeField::RunId,
            run.as_str(),
            &r.id,
        ));
    }
    if let Some(scope) = &r.memory_scope {
        out.push(keys::scope_entry(
            t,
            d,
            ScopeField::MemoryScope,
            scope.as_str(),
            &r.id,
        ));
    }
    if r.user_tokens.is_empty() {
        out.push(keys::scope_entry(t, d, ScopeField::Shared, "", &r.id));
    }
    for token in &r.user_tokens {
        out.push(keys::scope_entry(
            t,
            d,
            ScopeField::UserToken,
            token.as_str(),
            &r.id,
        ));
    }
    out
}

/// Records with content in a run are deduplicated on (collection, principals, local scope,
/// content): two writes that would produce indistinguishable memories share one id.
pub(crate) fn dedup_key(t: TenantKey, r: &Record) -> Option<Vec<u8>> {
    let run = r.run_id.as_ref()?;
    let content = r.content.as_ref()?;
    let mut h = Sha256::new();
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    };
    field(r.modality.as_str().as_bytes());
    field(
        r.memory_scope
            .as_ref()
            .map_or("", |s| s.as_str())
            .as_bytes(),
    );
    for token in &r.user_tokens {
        field(token.as_str().as_bytes());
    }
    field(b"\0content");
    field(content.as_bytes());
    Some(keys::dedup(
        t,
        &r.memory_domain,
        run.as_str(),
        &h.finalize(),
    ))
}

/// The smallest key strictly after `key`.
pub(crate) fn successor(mut key: Vec<u8>) -> Vec<u8> {
    key.push(0);
    key
}

pub(crate) type Entry = Result<(Vec<u8>, Vec<u8>), StoreError>;

pub(crate) fn prefix_range<'a>(
    table: &'a impl ReadableTable<&'static [u8], &'static [u8]>,
    prefix: &[u8],
) -> Result<impl Iterator<Item = Entry> + 'a, StoreError> {
    bounded_range(table, prefix, prefix)
}

/// Where tenant `t`'s record rows after `after` (all of them if `None`) begin, and the prefix
/// they share: the bounds of a [`bounded_range`] over them, in id order.
fn record_bounds(t: TenantKey, after: Option<&RecordId>) -> (Vec<u8>, Vec<u8>) {
    let prefix = keys::records(t);
    let start = match after {
        Some(id) => successor(keys::record(t, id)),
        None => prefix.clone(),
    };
    (start, prefix)
}

/// A row of `table` holding JSON, decoded (closed: a row that does not decode is an error).
pub(crate) fn json_row<T: serde::de::DeserializeOwned>(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    key: &[u8],
) -> Result<Option<T>, StoreError> {
    let v = table.get(key)?;
    v.map(|v| decode_json(v.value())).transpose()
}

/// Every row of `table` under `prefix`, each holding JSON, decoded in key order.
pub(crate) fn json_rows<T: serde::de::DeserializeOwned>(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    prefix: &[u8],
) -> Result<Vec<T>, StoreError> {
    prefix_range(table, prefix)?
        .map(|e| e.and_then(|(_, v)| decode_json(&v)))
        .collect()
}

/// Entries from `start` on while their key starts with `prefix`.
pub(crate) fn bounded_range<'a>(
    table: &'a impl ReadableTable<&'static [u8], &'static [u8]>,
    start: &[u8],
    prefix: &[u8],
) -> Result<impl Iterator<Item = Entry> + 'a, StoreError> {
    let prefix = prefix.to_vec();
    let range = table.range(start..)?;
    Ok(range
        .map(|e| {
            e.map(|(k, v)| (k.value().to_vec(), v.value().to_vec()))
                .map_err(StoreError::from)
        })
        .take_while(move |e| e.as_ref().map_or(true, |(k, _)| k.starts_with(&prefix))))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An audit log is trimmed from its start while rows are stale, a bounded number at a
    /// time, and never of its newest row.
    #[test]
    fn an_audit_log_is_trimmed_from_its_start_in_steps_keeping_its_newest_row() {
        let (_dir, store, t) = crate::test_tenant::store_with_tenant("acme");
        store
            .write(|w| {
                for at in [1, 2, 3, 4, 5, 9, 1, 2] {
                    w.append_audit(t, &[at])?;
                }
                Ok::<_, StoreError>(())
            })
            .unwrap();
        let stale = |row: &[u8]| Ok(row[0] < 5);
        let trim = |max| store.write(|w| w.trim_audit_log(t, stale, max)).unwrap();
        assert_eq!(trim(3), (3, true));
        assert_eq!(trim(3), (1, false), "stops at the first fresh row");
        let left: Vec<u8> = store
            .read()
            .unwrap()
            .audit_rows(t, 0, 100)
            .unwrap()
            .into_iter()
            .map(|(_, v)| v[0])
            .collect();
        assert_eq!(left, vec![5, 9, 1, 2]);
        // All stale: all but the newest go.
        let all = |_: &[u8]| Ok(true);
        let trimmed = store.write(|w| w.trim_audit_log(t, all, 100)).unwrap();
        assert_eq!(trimmed, (3, false));
        let left = store.read().unwrap().audit_rows(t, 0, 100).unwrap();
        assert_eq!(left, vec![(8, vec![2])]);
        let next = store.write(|w| w.append_audit(t, &[7])).unwrap();
        assert_eq!(next, 9);
    }

    /// Callers may leave a write's durability to the next synced commit (the audit rows of
    /// reads); a clean close must then still keep it (redb persists at close).
    #[test]
    fn a_write_nobody_waited_on_is_durable_once_the_store_closes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("main.redb");
        let t = TenantKey::from_raw(7);
        {
            let store = Store::open(&path).unwrap();
            assert!(store.grouped(), "group commit is the default");
            let ((), _not_awaited) = store
                .write_pending(|w| w.put_blob(t, "note", b"kept"))
                .unwrap();
        }
        // Reopened from the file alone: what the close synced is all there is.
        let store = Store::open(&path).unwrap();
        assert_eq!(
            store.read().unwrap().blob(t, "note").unwrap().as_deref(),
            Some(&b"kept"[..])
        );
    }

    /// A put that replaces a record (inserting its row first and taking the old one from that
    /// insert) leaves exactly the new record's scope entries and dedup entry.
    #[test]
    fn a_replacing_put_moves_the_scope_and_dedup_entries() {
        use strata_types::{Confidence, RunId, UserToken};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("main.redb")).unwrap();
        let t = TenantKey::from_raw(7);
        let record = |token: &str, run: &str, content: &str| Record {
            id: RecordId::parse("r1").unwrap(),
            modality: CollectionName::parse("text").unwrap(),
            kind: None,
            content: Some(content.into()),
            vector: None,
            user_tokens: vec![UserToken::parse(token).unwrap()],
            memory_domain: Domain::parse("default").unwrap(),
            run_id: Some(RunId::parse(run).unwrap()),
            memory_scope: None,
            metadata: Default::default(),
            created_at: 1,
            updated_at: 1,
            expires_at: None,
            confidence: Confidence::default(),
        };
        let (first, second) = (record("u:a", "run-a", "hi"), record("u:b", "run-b", "bye"));
        let replaced = store
            .write(|w| {
                assert_eq!(w.put_record(t, &first)?, None, "a new record");
                w.put_record(t, &second)
            })
            .unwrap();
        // The replaced record, its (empty) metadata given by length: `{}`.
        let removed = RemovedRecord {
            record: first.clone(),
            metadata_len: 2,
        };
        assert_eq!(replaced, Some(removed));
        let r = store.read().unwrap();
        let d = Domain::parse("default").unwrap();
        let ids = |field, value: &str| -> Vec<RecordId> {
            r.scope_ids(t, &d, field, value, None)
                .unwrap()
                .map(|id| id.unwrap())
                .collect()
        };
        assert!(ids(ScopeField::UserToken, "u:a").is_empty());
        assert!(ids(ScopeField::RunId, "run-a").is_empty());
        assert_eq!(ids(ScopeField::UserToken, "u:b"), vec![second.id.clone()]);
        assert_eq!(ids(ScopeField::RunId, "run-b"), vec![second.id.clone()]);
        assert_eq!(ids(ScopeField::Domain, ""), vec![second.id.clone()]);
        assert_eq!(r.dedup_target(t, &first).unwrap(), None);
        assert_eq!(r.dedup_target(t, &second).unwrap(), Some(second.id.clone()));
        assert_eq!(r.record(t, &second.id).unwrap(), Some(second));
    }

    /// After a failed fsync, redb (which never saw it: the grouped writes commit without
    /// syncing) would go on committing; the store refuses, before the write and again before
    /// its commit, so nothing becomes visible that is not known to reach the disk.
    #[test]
    fn a_failed_sync_refuses_later_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("main.redb")).unwrap();
        let t = TenantKey::from_raw(7);
        store.write(|w| w.put_blob(t, "before", b"1")).unwrap();
        // The failure comes while a write runs: its commit is refused.
        let during = store.write_pending(|w| {
            w.put_blob(t, "during", b"2")?;
            store.db().sync.fail_for_test();
            Ok::<_, StoreError>(())
        });
        assert!(during.is_err());
        let after = store.write_pending(|w| w.put_blob(t, "after", b"3"));
        let err = after.err().unwrap();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
        assert!(err.to_string().contains("disk on fire"), "{err}");
        assert_eq!(store.failure().as_deref(), Some("disk on fire"));
        let r = store.read().unwrap();
        assert_eq!(r.blob(t, "before").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(r.blob(t, "during").unwrap(), None);
        assert_eq!(r.blob(t, "after").unwrap(), None);
    }
}
