//! Where each tenant's data lives: the main file, or (a `dedicated` tenant) its own file,
//! `tenants/<key in hex>/data.redb` beside the main one.
//!
//! The registry, credentials and server-wide meta stay in the main file. A dedicated tenant's
//! whole key range lives in its own file and nowhere else: [`Store::read`] and
//! [`Store::write_pending_for`] route by tenant key, so engine code reads and writes a
//! dedicated tenant exactly as any other.
//!
//! Moving a tenant between files (an online migration) copies its range in chunks while it is
//! served from the old side, then, in the tenant's write order, catches up what changed since
//! (the keys written since the copy began, recorded by [`Store::track_writes`]; without a
//! tracker the whole range compared, [`catch_up`]) and flips in one main-file transaction,
//! under the routing lock so that no snapshot or write sees the routing and the main file
//! disagree:
//! - into its own file ([`Store::flip_in`]): the file is synced first; the main transaction
//!   changes the registry; the tenant's main range is erased afterwards
//!   ([`Store::erase_main_range`], in short transactions);
//! - out of it ([`Store::flip_out`]): the main transaction writes the catch-up and changes the
//!   registry; the file is deleted afterwards.
//!
//! A crash leaves the tenant whole on the side its registry entry names; start-up then deletes
//! orphan files ([`Store::remove_orphan_files`]) and main ranges of dedicated tenants
//! ([`Store::erase_main_range`]).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, Table};

use crate::group_commit::GroupCommit;
use crate::keys::{self, TenantKey};
use crate::opened::Opened;
use crate::tables::{DATA, Registry, Route, Writer, open_database, prefix_range, read_db};
use crate::tracking::{WriteTracker, catch_up_keys};
use crate::{Store, StoreError};

/// The directory beside the main file that holds dedicated tenants' directories.
pub const TENANTS_DIR: &str = "tenants";
/// A dedicated tenant's file, inside its directory.
pub const DEDICATED_FILE: &str = "data.redb";

/// Keys [`Store::erase_main_range`] removes per transaction.
const ERASE_CHUNK_KEYS: usize = 4_096;

/// The page cache each dedicated file gets (unless the main file's is smaller).
pub(crate) const DEDICATED_FILE_CACHE_BYTES: usize = 16 << 20;

/// The page cache of one dedicated file, given the main file's: a fixed
/// [`DEDICATED_FILE_CACHE_BYTES`], at most the main file's. Not a share of the main file's:
/// that default grows with the machine's memory, and the process holds one such cache per
/// dedicated tenant, so a share would multiply it by the number of dedicated tenants.
pub(crate) fn dedicated_cache_bytes(main: usize) -> usize {
    DEDICATED_FILE_CACHE_BYTES.min(main)
}

/// One dedicated tenant's open file, with its own group commit.
pub(crate) struct FileDb {
    pub(crate) db: Arc<RwLock<Database>>,
    /// The file's syncs (see `deferred_sync`).
    pub(crate) sync: crate::deferred_sync::FileSync,
    pub(crate) group: Arc<GroupCommit>,
    dir: PathBuf,
}

impl Drop for FileDb {
    /// See `FileSync::settle_before_close`.
    fn drop(&mut self) {
        self.sync.settle_before_close();
    }
}

/// The routing table: which tenants live in their own file.
pub(crate) struct Placement {
    root: PathBuf,
    /// Copied on change (rare), so that a snapshot or a write takes it in O(1).
    files: RwLock<Arc<Files>>,
    /// The page cache of each dedicated file: a share of the main file's (see
    /// [`dedicated_cache_bytes`]).
    cache_bytes: usize,
}

pub(crate) type Files = BTreeMap<TenantKey, Arc<FileDb>>;

impl Placement {
    pub(crate) fn beside(main: &Path, cache_bytes: usize) -> Placement {
        let dir = main.parent().unwrap_or_else(|| Path::new("."));
        Placement {
            root: dir.join(TENANTS_DIR),
            files: RwLock::default(),
            cache_bytes: dedicated_cache_bytes(cache_bytes),
        }
    }

    /// Held while a snapshot begins its main transaction, so that it sees the routing and the
    /// main file from the same side of any flip. Lock order: the main database's guard first,
    /// then this lock, then a dedicated file's guard (see [`Store::read`]).
    pub(crate) fn lock_read(&self) -> RwLockReadGuard<'_, Arc<Files>> {
        // The map is changed in single statements; a panic cannot leave it half-changed.
        self.files.read().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_write(&self) -> RwLockWriteGuard<'_, Arc<Files>> {
        self.files.write().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn get(&self, t: TenantKey) -> Option<Arc<FileDb>> {
        self.lock_read().get(&t).cloned()
    }

    /// The routing now; take it under the main write transaction (or with the main snapshot,
    /// under [`Placement::lock_read`]) so that it agrees with the main file.
    pub(crate) fn snapshot(&self) -> Arc<Files> {
        Arc::clone(&self.lock_read())
    }

    /// The directory of derived files (`crate::derived`), beside this one.
    pub(crate) fn derived_root(&self) -> PathBuf {
        self.root.with_file_name(crate::derived::DERIVED_DIR)
    }

    fn dir_of(&self, t: TenantKey) -> PathBuf {
        self.root.join(format!("{:016x}", t.raw()))
    }
}

/// A dedicated tenant's file that exists but is not routed to yet: being filled by a
/// migration, or created for a tenant whose registry row is not committed yet.
pub struct DedicatedFile {
    key: TenantKey,
    file: Arc<FileDb>,
}

impl DedicatedFile {
    pub fn key(&self) -> TenantKey {
        self.key
    }
}

/// Where a chunk copy writes: a file being filled, or the main file.
pub enum CopyTarget<'a> {
    File(&'a DedicatedFile),
    Main,
}

/// Keys and bytes (key plus value) of one tenant's range.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RangeSize {
    pub keys: u64,
    pub bytes: u64,
}

fn already_dedicated(t: TenantKey) -> StoreError {
    StoreError::Engine(format!(
        "tenant key {} already lives in its own file",
        t.raw()
    ))
}

fn not_dedicated(t: TenantKey) -> StoreError {
    StoreError::Engine(format!(
        "tenant key {} does not live in its own file",
        t.raw()
    ))
}

fn io(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Makes a directory's entries (a created or removed child) durable.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| io(dir, e))
}

/// The tenant a directory named by [`Placement::dir_of`] (or the derived files' directory of
/// a tenant) belongs to: 16 hex digits of its storage key; anything else is not ours.
/// The suffix of a retired file's directory renamed for deletion (see `delete_retired`).
const TOMBSTONE: &str = ".retired";

/// The tenant of a retired directory renamed for deletion (`<key>.retired`).
fn tombstone_key(name: &std::ffi::OsStr) -> Option<TenantKey> {
    let n = name.to_str()?.strip_suffix(TOMBSTONE)?;
    tenant_dir_key(std::ffi::OsStr::new(n))
}

/// Which file a directory holds (device and inode of its storage file), to tell a retired
/// file from a new one created at the same path since.
fn file_identity(dir: &std::path::Path) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(dir.join(DEDICATED_FILE)).ok()?;
        Some((m.dev(), m.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        None
    }
}

pub(crate) fn tenant_dir_key(name: &std::ffi::OsStr) -> Option<TenantKey> {
    name.to_str()
        .filter(|n| n.len() == 16)
        .and_then(|n| u64::from_str_radix(n, 16).ok())
        .map(TenantKey::from_raw)
}

fn open_file(dir: PathBuf, (db, sync): (Database, crate::deferred_sync::FileSync)) -> Arc<FileDb> {
    Arc::new(FileDb {
        db: Arc::new(RwLock::new(db)),
        sync,
        group: Arc::default(),
        dir,
    })
}

/// Makes `dst`'s copy of the range `prefix` equal to `src`'s, writing only the differences;
/// returns how many keys it wrote or removed.
pub(crate) fn catch_up(
    src: &impl ReadableTable<&'static [u8], &'static [u8]>,
    dst: &mut Table<'_, &'static [u8], &'static [u8]>,
    prefix: &[u8],
) -> Result<u64, StoreError> {
    let mut ops: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
    {
        let mut a = prefix_range(src, prefix)?;
        let mut b = prefix_range(&*dst, prefix)?;
        let (mut x, mut y) = (a.next().transpose()?, b.next().transpose()?);
        loop {
            match (x.take(), y.take()) {
                (None, None) => break,
                (Some((k, v)), None) => {
                    ops.push((k, Some(v)));
                    x = a.next().transpose()?;
                }
                (None, Some((k, _))) => {
                    ops.push((k, None));
                    y = b.next().transpose()?;
                }
                (Some((ka, va)), Some((kb, vb))) => match ka.cmp(&kb) {
                    std::cmp::Ordering::Less => {
                        ops.push((ka, Some(va)));
                        x = a.next().transpose()?;
                        y = Some((kb, vb));
                    }
                    std::cmp::Ordering::Greater => {
                        ops.push((kb, None));
                        x = Some((ka, va));
                        y = b.next().transpose()?;
                    }
                    std::cmp::Ordering::Equal => {
                        if va != vb {
                            ops.push((ka, Some(va)));
                        }
                        x = a.next().transpose()?;
                        y = b.next().transpose()?;
                    }
                },
            }
        }
    }
    for (k, v) in &ops {
        match v {
            Some(v) => dst.insert(k.as_slice(), v.as_slice())?,
            None => dst.remove(k.as_slice())?,
        };
    }
    Ok(ops.len() as u64)
}

/// The flip's catch-up of tenant `t`'s range: only the keys written since `since` began when
/// it has them (the copy started after it), else the whole range compared.
fn catch_up_since(
    since: Option<&WriteTracker<'_>>,
    t: TenantKey,
    src: &impl ReadableTable<&'static [u8], &'static [u8]>,
    dst: &mut Table<'_, &'static [u8], &'static [u8]>,
) -> Result<u64, StoreError> {
    let prefix = keys::tenant_all(t);
    match since.map(|s| s.take_keys_of(t)).transpose()?.flatten() {
        Some(written) => catch_up_keys(src, dst, &prefix, &written),
        None => catch_up(src, dst, &prefix),
    }
}

impl Store {
    /// Whether tenant `t` lives in its own file now.
    pub fn is_dedicated(&self, t: TenantKey) -> bool {
        self.placement.get(t).is_some()
    }

    /// Creates tenant `t`'s own file (replacing any leftover at its place), durably: the file,
    /// its directory and their parents' entries are synced before this returns. The file is
    /// not routed to until [`Store::route_dedicated`] or [`Store::flip_in`].
    ///
    /// Refused for a tenant that is routed to its file now: the directory it would replace
    /// holds the tenant's live data.
    pub fn create_dedicated(&self, t: TenantKey) -> Result<DedicatedFile, StoreError> {
        if self.is_dedicated(t) {
            return Err(already_dedicated(t));
        }
        let root = &self.placement.root;
        let dir = self.placement.dir_of(t);
        {
            // Under the routing lock, as `delete_retired` renames a directory away under it.
            let _routing = self.placement.lock_write();
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(|e| io(&dir, e))?;
            }
            std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        }
        let db = open_database(&dir.join(DEDICATED_FILE), self.placement.cache_bytes)?;
        sync_dir(&dir)?;
        sync_dir(root)?;
        if let Some(parent) = root.parent() {
            sync_dir(parent)?;
        }
        Ok(DedicatedFile {
            key: t,
            file: open_file(dir, db),
        })
    }

    /// Routes a new tenant's file, once its registry row (at `dedicated`) is committed.
    pub fn route_dedicated(&self, file: DedicatedFile) {
        Arc::make_mut(&mut self.placement.lock_write()).insert(file.key, file.file);
    }

    /// Deletes a file that was never routed to (a migration or creation that failed). If the
    /// tenant is routed to a file of its own meanwhile (another migration moved it), the
    /// directory is that live file's and is left alone.
    pub fn discard_dedicated(&self, file: DedicatedFile) -> Result<(), StoreError> {
        let dir = file.file.dir.clone();
        let key = file.key;
        drop(file);
        if self.is_dedicated(key) {
            return Err(already_dedicated(key));
        }
        std::fs::remove_dir_all(&dir).map_err(|e| io(&dir, e))
    }

    /// Opens dedicated tenant `t`'s existing file and routes to it (at start). A missing file
    /// is an error: the registry says the tenant's data is there.
    pub fn attach_dedicated(&self, t: TenantKey) -> Result<(), StoreError> {
        let dir = self.placement.dir_of(t);
        let path = dir.join(DEDICATED_FILE);
        if !path.is_file() {
            return Err(StoreError::Corrupt(format!(
                "dedicated tenant file {} is missing",
                path.display()
            )));
        }
        // The storage engine would make an empty file a new, empty database: the tenant would
        // serve as if it had no data.
        if std::fs::metadata(&path).map_err(|e| io(&path, e))?.len() == 0 {
            return Err(StoreError::Corrupt(format!(
                "dedicated tenant file {} is empty; restore it from a backup",
                path.display()
            )));
        }
        let db = open_database(&path, self.placement.cache_bytes)?;
        Arc::make_mut(&mut self.placement.lock_write()).insert(t, open_file(dir, db));
        Ok(())
    }

    /// Stops routing to tenant `t`'s file and deletes it with its directory (after a purge or
    /// a migration out of `dedicated` committed). Snapshots still open keep reading it.
    pub fn remove_dedicated(&self, t: TenantKey) -> Result<(), StoreError> {
        let removed = Arc::make_mut(&mut self.placement.lock_write()).remove(&t);
        let dir = match removed {
            Some(file) => file.dir.clone(),
            None => self.placement.dir_of(t),
        };
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| io(&dir, e))?;
            sync_dir(&self.placement.root)?;
        }
        Ok(())
    }

    /// Deletes every tenant directory whose tenant is not in `keep` (leftovers of a purge, a
    /// failed creation or a migration interrupted by a crash). Returns their keys.
    pub fn remove_orphan_files(
        &self,
        keep: &HashSet<TenantKey>,
    ) -> Result<Vec<TenantKey>, StoreError> {
        let root = &self.placement.root;
        let entries = match std::fs::read_dir(root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(root, e)),
        };
        let mut removed = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io(root, e))?;
            let name = entry.file_name();
            // A retired file renamed for deletion (`delete_retired`) that a crash left.
            if tombstone_key(&name).is_some() {
                std::fs::remove_dir_all(entry.path()).map_err(|e| io(&entry.path(), e))?;
                continue;
            }
            // Only directories this store names; anything else is left alone.
            let Some(key) = tenant_dir_key(&name) else {
                continue;
            };
            if !keep.contains(&key) && self.placement.get(key).is_none() {
                std::fs::remove_dir_all(entry.path()).map_err(|e| io(&entry.path(), e))?;
                removed.push(key);
            }
        }
        if !removed.is_empty() {
            sync_dir(root)?;
        }
        Ok(removed)
    }

    /// Erases dedicated tenant `t`'s keys from the main file, durably; returns how many there
    /// were. At start, for each dedicated tenant: a migration out of its file that a crash
    /// interrupted leaves a partial copy there; likewise a migration out that failed.
    ///
    /// Erases nothing unless `t` lives in its own file, checked inside the main write
    /// transaction (every flip changes the routing while holding it): the main range of a
    /// tenant that is not dedicated is its live data.
    pub fn erase_main_range(&self, t: TenantKey) -> Result<u64, StoreError> {
        let _writing = crate::deferred_sync::write_path();
        let prefix = keys::tenant_all(t);
        let mut erased = 0;
        // In chunks, each its own short transaction, so that the other tenants' writes, which
        // wait for the main write lock, interleave with the erasure of a large range.
        loop {
            let db = self.db();
            let mut txn = db.begin_write()?;
            if !self.is_dedicated(t) {
                return Ok(erased);
            }
            let doomed = {
                let table = txn.open_table(DATA)?;
                prefix_range(&table, &prefix)?
                    .take(ERASE_CHUNK_KEYS)
                    .map(|e| e.map(|(k, _)| k))
                    .collect::<Result<Vec<_>, _>>()?
            };
            if doomed.is_empty() && erased == 0 {
                return Ok(0);
            }
            let last = doomed.len() < ERASE_CHUNK_KEYS;
            if !last {
                // The last chunk's durable commit syncs the earlier ones; a crash before it
                // leaves keys that the next start erases.
                txn.set_durability(Durability::None)?;
            }
            {
                let mut table = txn.open_table(DATA)?;
                for k in &doomed {
                    table.remove(k.as_slice())?;
                }
            }
            txn.commit()?;
            erased += doomed.len() as u64;
            if last {
                return Ok(erased);
            }
        }
    }

    /// How many keys of tenant `t` the main file holds (none for a dedicated tenant, whose
    /// data lives only in its own file, once a move in has erased its old main range).
    pub fn main_keys(&self, t: TenantKey) -> Result<u64, StoreError> {
        let table = self.db().begin_read()?.open_table(DATA)?;
        let mut n = 0;
        for entry in prefix_range(&table, &keys::tenant_all(t))? {
            entry?;
            n += 1;
        }
        Ok(n)
    }

    /// Where tenant `t`'s own file is, when it is `dedicated`.
    pub fn dedicated_file(&self, t: TenantKey) -> PathBuf {
        self.placement.dir_of(t).join(DEDICATED_FILE)
    }

    /// Whether a directory for tenant `t`'s own file exists on disk.
    pub fn has_dedicated_dir(&self, t: TenantKey) -> bool {
        self.placement.dir_of(t).exists()
    }

    /// Keys and bytes of tenant `t`'s range where it lives now.
    pub fn range_size(&self, t: TenantKey) -> Result<RangeSize, StoreError> {
        let r = self.read()?;
        let mut size = RangeSize::default();
        for entry in prefix_range(
            crate::tables::sealed::Tables::data_table(&r, t)?,
            &keys::tenant_all(t),
        )? {
            let (k, v) = entry?;
            size.keys += 1;
            size.bytes += (k.len() + v.len()) as u64;
        }
        Ok(size)
    }

    /// Starts recording which keys of tenant `t` change, for the catch-up of a migration:
    /// call it before the migration's first [`Store::copy_chunk`] and pass the tracker to the
    /// flip. Returns once every write transaction of the file `t` lives in that began before
    /// the tracking has ended, so each later change is either seen by the copy's chunks or
    /// recorded.
    pub fn track_writes(&self, t: TenantKey) -> Result<WriteTracker<'_>, StoreError> {
        let tracker = WriteTracker {
            store: self,
            tenant: t,
            written: self.tracking.start(t),
        };
        // A write transaction begins only once the previous one has ended.
        let _writing = crate::deferred_sync::write_path();
        match self.placement.get(t) {
            Some(file) => read_db(&file.db).begin_write()?.abort()?,
            None => self.db().begin_write()?.abort()?,
        }
        Ok(tracker)
    }

    /// Copies up to `limit` keys of tenant `t`'s range, from where it lives now to `to`,
    /// starting after key `after`; returns the last key copied (`None` once the range is
    /// exhausted) and how many were copied. Commits without its own fsync: the flip that ends
    /// the migration syncs. Chunks see different snapshots; the flip's catch-up reconciles.
    pub fn copy_chunk(
        &self,
        t: TenantKey,
        to: CopyTarget<'_>,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Option<Vec<u8>>, u64), StoreError> {
        let prefix = keys::tenant_all(t);
        let chunk: Vec<(Vec<u8>, Vec<u8>)> = {
            let r = self.read()?;
            let table = crate::tables::sealed::Tables::data_table(&r, t)?;
            let mut start = after.map_or_else(|| prefix.clone(), <[u8]>::to_vec);
            if after.is_some() {
                start.push(0);
            }
            let out: Result<Vec<_>, _> = table
                .range(start.as_slice()..)?
                .map(|e| {
                    e.map(|(k, v)| (k.value().to_vec(), v.value().to_vec()))
                        .map_err(StoreError::from)
                })
                .take_while(|e| e.as_ref().map_or(true, |(k, _)| k.starts_with(&prefix)))
                .take(limit)
                .collect();
            out?
        };
        let Some(last) = chunk.last().map(|(k, _)| k.clone()) else {
            return Ok((None, 0));
        };
        let write = |db: &Database| -> Result<(), StoreError> {
            let _writing = crate::deferred_sync::write_path();
            let mut txn = db.begin_write()?;
            txn.set_durability(Durability::None)?;
            {
                let mut table = txn.open_table(DATA)?;
                for (k, v) in &chunk {
                    table.insert(k.as_slice(), v.as_slice())?;
                }
            }
            txn.commit()?;
            Ok(())
        };
        match to {
            CopyTarget::File(f) => write(&read_db(&f.file.db))?,
            CopyTarget::Main => write(&self.db())?,
        }
        Ok((Some(last), chunk.len() as u64))
    }

    /// Runs `f`, which registers one new tenant (with [`Writer::create_tenant`]), so that the
    /// tenant lives in its own file from the start: the file is created for the key the
    /// registry will assign and synced with `f`'s writes of that tenant's data before the
    /// main-file transaction (its registry row) commits; the tenant is routed to it in the
    /// same step. If anything fails, the file is deleted (or, after a crash, at the next
    /// start: no registry row names it).
    pub fn write_creating_dedicated<R, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&mut Writer<'_>) -> Result<(R, TenantKey), E>,
    ) -> Result<R, E> {
        let _writing = crate::deferred_sync::write_path();
        let db = self.db();
        let txn = db.begin_write().map_err(StoreError::from)?;
        let next = {
            let meta = txn
                .open_table(crate::tables::META)
                .map_err(StoreError::from)?;
            crate::tables::next_tenant_key(&meta)?
        };
        let file = self.create_dedicated(next)?;
        let result = (|| {
            let fdb = read_db(&file.file.db);
            let ftxn = fdb.begin_write().map_err(StoreError::from)?;
            let r = {
                let mut writer = Writer {
                    data: txn.open_table(DATA).map_err(StoreError::from)?,
                    dedicated: Opened::one(
                        next,
                        (ftxn.open_table(DATA).map_err(StoreError::from)?, true),
                    ),
                    lazy: None,
                    route: Route::Main(TenantKey::SERVER, false),
                    registry: Registry::Write(
                        txn.open_table(crate::tables::REGISTRY)
                            .map_err(StoreError::from)?,
                    ),
                    meta: txn
                        .open_table(crate::tables::META)
                        .map_err(StoreError::from)?,
                    credentials: txn
                        .open_table(crate::tables::CREDENTIALS)
                        .map_err(StoreError::from)?,
                    log_cap: self.change_log_cap(),
                    tracking: &self.tracking,
                    registry_written: false,
                    wrote: 0,
                };
                let (r, key) = f(&mut writer)?;
                if key != next {
                    return Err(StoreError::Engine(
                        "a dedicated creation registered another key than planned".into(),
                    )
                    .into());
                }
                r
            };
            ftxn.commit().map_err(StoreError::from)?;
            drop(fdb);
            let mut routing = self.placement.lock_write();
            let committed = txn.commit();
            // Creations and flips change registry rows (maybe even when the commit failed).
            self.registry_committed();
            committed.map_err(StoreError::from)?;
            Arc::make_mut(&mut routing).insert(next, Arc::clone(&file.file));
            Ok(r)
        })();
        if result.is_err() {
            let _ = self.discard_dedicated(file);
        }
        result
    }

    /// Ends a migration into tenant `file.key()`'s own file. Call in the tenant's write order,
    /// after the chunk copies. Catches the file up with the main range, runs `f` (the registry
    /// change; the tenant's own keys it writes go to the file) and syncs the file; then one
    /// durable main-file transaction commits `f`'s main-file writes, and the tenant is routed
    /// to its file in the same step. On error the file is deleted and the tenant stays where
    /// it was. The tenant's main range is left for the caller to erase with
    /// [`Store::erase_main_range`], outside the tenant's write order: nothing reads it once
    /// the tenant is routed to its file, and what a crash leaves of it the next start erases.
    pub fn flip_in<R, E: From<StoreError>>(
        &self,
        file: DedicatedFile,
        since: Option<&WriteTracker<'_>>,
        f: impl FnOnce(&mut Writer<'_>) -> Result<R, E>,
    ) -> Result<(R, u64), E> {
        let result = self.flip_in_inner(&file, since, f);
        if result.is_err() {
            // Not routed: nothing refers to the file; one that cannot be deleted now is
            // deleted at the next start.
            let _ = self.discard_dedicated(file);
        }
        result
    }

    fn flip_in_inner<R, E: From<StoreError>>(
        &self,
        file: &DedicatedFile,
        since: Option<&WriteTracker<'_>>,
        f: impl FnOnce(&mut Writer<'_>) -> Result<R, E>,
    ) -> Result<(R, u64), E> {
        let t = file.key;
        let _writing = crate::deferred_sync::write_path();
        let db = self.db();
        let txn = db.begin_write().map_err(StoreError::from)?;
        // Checked under the main write transaction, which every routing change holds: a
        // tenant already in its own file must not be "caught up" from its (empty) main range.
        if self.is_dedicated(t) {
            return Err(already_dedicated(t).into());
        }
        let fdb = read_db(&file.file.db);
        let ftxn = fdb.begin_write().map_err(StoreError::from)?;
        let (r, caught) = {
            let data = txn.open_table(DATA).map_err(StoreError::from)?;
            let mut ftable = ftxn.open_table(DATA).map_err(StoreError::from)?;
            let caught = catch_up_since(since, t, &data, &mut ftable)?;
            let mut writer = Writer {
                data,
                dedicated: Opened::one(t, (ftable, true)),
                lazy: None,
                route: Route::Main(TenantKey::SERVER, false),
                registry: Registry::Write(
                    txn.open_table(crate::tables::REGISTRY)
                        .map_err(StoreError::from)?,
                ),
                meta: txn
                    .open_table(crate::tables::META)
                    .map_err(StoreError::from)?,
                credentials: txn
                    .open_table(crate::tables::CREDENTIALS)
                    .map_err(StoreError::from)?,
                log_cap: self.change_log_cap(),
                tracking: &self.tracking,
                registry_written: false,
                wrote: 0,
            };
            (f(&mut writer)?, caught)
        };
        ftxn.commit().map_err(StoreError::from)?;
        drop(fdb);
        let mut routing = self.placement.lock_write();
        let committed = txn.commit();
        // Creations and flips change registry rows (maybe even when the commit failed).
        self.registry_committed();
        committed.map_err(StoreError::from)?;
        Arc::make_mut(&mut routing).insert(t, Arc::clone(&file.file));
        Ok((r, caught))
    }

    /// Ends a migration of dedicated tenant `t` out of its own file. Call in the tenant's
    /// write order, after the chunk copies into the main file. One durable main-file
    /// transaction catches the main range up with the file and runs `f` (the registry change;
    /// the tenant's keys it writes go to the main file); the routing changes in the same step,
    /// then the file is deleted. See [`Store::flip_out_retiring`] to delete it later.
    pub fn flip_out<R, E: From<StoreError>>(
        &self,
        t: TenantKey,
        since: Option<&WriteTracker<'_>>,
        f: impl FnOnce(&mut Writer<'_>) -> Result<R, E>,
    ) -> Result<(R, u64), E> {
        let (r, caught, retired) = self.flip_out_retiring(t, since, f)?;
        // The flip is committed: a file that cannot be deleted now is an orphan, deleted at
        // the next start.
        let _ = self.delete_retired(retired);
        Ok((r, caught))
    }

    /// [`Store::flip_out`], except that the file, no longer routed to, is handed back instead
    /// of deleted: the caller deletes it with [`Store::delete_retired`] once it has released
    /// the tenant's write order, so that the tenant's writes (already going to the main file)
    /// do not wait for the file's close and unlink. A crash before that leaves a directory of
    /// a tenant that is not dedicated, which the next start deletes.
    pub fn flip_out_retiring<R, E: From<StoreError>>(
        &self,
        t: TenantKey,
        since: Option<&WriteTracker<'_>>,
        f: impl FnOnce(&mut Writer<'_>) -> Result<R, E>,
    ) -> Result<(R, u64, RetiredFile), E> {
        let _writing = crate::deferred_sync::write_path();
        let db = self.db();
        let txn = db.begin_write().map_err(StoreError::from)?;
        // Checked under the main write transaction, which every routing change holds.
        let Some(file) = self.placement.get(t) else {
            return Err(not_dedicated(t).into());
        };
        let r = {
            let src = read_db(&file.db)
                .begin_read()
                .map_err(StoreError::from)?
                .open_table(DATA)
                .map_err(StoreError::from)?;
            let mut data = txn.open_table(DATA).map_err(StoreError::from)?;
            let caught = catch_up_since(since, t, &src, &mut data)?;
            let mut writer = Writer {
                data,
                dedicated: Opened::default(),
                lazy: None,
                // The tenant's keys go to the main file in this write.
                route: Route::Main(t, false),
                registry: Registry::Write(
                    txn.open_table(crate::tables::REGISTRY)
                        .map_err(StoreError::from)?,
                ),
                meta: txn
                    .open_table(crate::tables::META)
                    .map_err(StoreError::from)?,
                credentials: txn
                    .open_table(crate::tables::CREDENTIALS)
                    .map_err(StoreError::from)?,
                log_cap: self.change_log_cap(),
                tracking: &self.tracking,
                registry_written: false,
                wrote: 0,
            };
            (f(&mut writer)?, caught)
        };
        {
            let mut routing = self.placement.lock_write();
            let committed = txn.commit();
            // Creations and flips change registry rows (maybe even when the commit failed).
            self.registry_committed();
            committed.map_err(StoreError::from)?;
            Arc::make_mut(&mut routing).remove(&t);
        }
        drop(db);
        let identity = file_identity(&file.dir);
        Ok((
            r.0,
            r.1,
            RetiredFile {
                key: t,
                file,
                identity,
            },
        ))
    }

    /// Closes and deletes a file a migration out of it left (see
    /// [`Store::flip_out_retiring`]), with its directory. Snapshots still open keep reading
    /// it. Refused (leaving it) if the tenant is routed to a file of its own again, or its
    /// directory holds another file now (a new move into `dedicated` created it): the
    /// directory is then that file's.
    ///
    /// Safe whatever the caller holds: under the routing lock (which every flip and every
    /// file creation take), the checks pass and the directory is renamed to a tombstone name
    /// no route or creation uses; the tombstone is then deleted outside it. A crash in
    /// between leaves a tombstone, deleted at the next start ([`Store::remove_orphan_files`]).
    pub fn delete_retired(&self, retired: RetiredFile) -> Result<(), StoreError> {
        let RetiredFile {
            key,
            file,
            identity,
        } = retired;
        let dir = file.dir.clone();
        drop(file);
        let tomb = dir.with_file_name(format!("{:016x}{TOMBSTONE}", key.raw()));
        if tomb.exists() {
            std::fs::remove_dir_all(&tomb).map_err(|e| io(&tomb, e))?;
        }
        {
            let routing = self.placement.lock_write();
            if routing.contains_key(&key) {
                return Err(already_dedicated(key));
            }
            if !dir.exists() {
                return Ok(());
            }
            if identity.is_some() && file_identity(&dir) != identity {
                return Err(already_dedicated(key));
            }
            std::fs::rename(&dir, &tomb).map_err(|e| io(&dir, e))?;
        }
        std::fs::remove_dir_all(&tomb).map_err(|e| io(&tomb, e))?;
        sync_dir(&self.placement.root)?;
        Ok(())
    }
}

/// A dedicated file that nothing routes to any more, waiting for [`Store::delete_retired`].
/// Dropped without it, the file stays on disk until the next start deletes it.
#[must_use = "delete it with Store::delete_retired"]
pub struct RetiredFile {
    key: TenantKey,
    file: Arc<FileDb>,
    /// The storage file it names (see `file_identity`).
    identity: Option<(u64, u64)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Reads;
    use strata_types::TenantId;

    fn tenant(store: &Store, id: &str) -> TenantKey {
        store
            .write(|w| {
                w.create_tenant(&TenantId::parse(id).unwrap(), 0, Default::default())
                    .map(|m| m.key)
            })
            .unwrap()
    }

    fn put(store: &Store, t: TenantKey, name: &str, v: &[u8]) {
        let ((), pending) = store
            .write_pending_for(t, |w| w.put_blob(t, name, v))
            .unwrap();
        pending.wait_durable().unwrap();
    }

    fn blobs(store: &Store, t: TenantKey) -> Vec<(String, Vec<u8>)> {
        store.read().unwrap().blobs_named(t, "").unwrap()
    }

    /// A record replaced by a server-wide write (an import) takes its old dedup row with it,
    /// in the tenant's own file: a later write of the old content in the run must not be
    /// answered "deduplicated" with a record that no longer holds it.
    #[test]
    fn a_server_wide_replacement_drops_the_old_dedup_row_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("main.redb")).unwrap();
        let b = tenant(&store, "b");
        store.route_dedicated(store.create_dedicated(b).unwrap());
        let mut rec: strata_types::Record = serde_json::from_value(serde_json::json!({
            "id": "r1", "modality": "text", "kind": null, "content": "old", "vector": null,
            "user_tokens": [], "memory_domain": "default", "run_id": "run",
            "memory_scope": null, "metadata": {}, "created_at": 1, "updated_at": 1,
            "expires_at": null,
            "confidence": {"value": 0.5, "evidence_count": 0, "corroborations": 0,
                           "contradictions": 0}
        }))
        .unwrap();
        let old = rec.clone();
        store.write(|w| w.put_record(b, &rec).map(drop)).unwrap();
        rec.content = Some("new".into());
        store.write(|w| w.put_record(b, &rec).map(drop)).unwrap();
        let r = store.read().unwrap();
        assert_eq!(r.dedup_target(b, &old).unwrap(), None);
        assert_eq!(r.dedup_target(b, &rec).unwrap(), Some(rec.id.clone()));
    }

    /// A dedicated file whose sync failed refuses its tenant's later writes; the main file
    /// and other tenants go on.
    #[test]
    fn a_failed_sync_of_a_dedicated_file_refuses_its_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("main.redb")).unwrap();
        let (a, b) = (tenant(&store, "a"), tenant(&store, "b"));
        store.route_dedicated(store.create_dedicated(b).unwrap());
        put(&store, b, "x", b"b1");
        store.placement.get(b).unwrap().sync.fail_for_test();
        let refused = store.write_pending_for(b, |w| w.put_blob(b, "y", b"b2"));
        assert!(refused.is_err());
        put(&store, a, "x", b"a1");
        assert_eq!(blobs(&store, b), vec![("x".into(), b"b1".to_vec())]);
        assert_eq!(blobs(&store, a), vec![("x".into(), b"a1".to_vec())]);
    }

    #[test]
    fn a_dedicated_tenants_reads_and_writes_go_to_its_own_file_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("main.redb")).unwrap();
        let (a, b) = (tenant(&store, "a"), tenant(&store, "b"));
        let file = store.create_dedicated(b).unwrap();
        store.route_dedicated(file);
        assert!(store.is_dedicated(b) && !store.is_dedicated(a));
        put(&store, a, "x", b"a1");
        put(&store, b, "x", b"b1");
        // A server-wide write reaches the dedicated file too.
        store.write(|w| w.put_blob(b, "y", b"b2")).unwrap();
        assert_eq!(store.main_keys(b).unwrap(), 0);
        assert_eq!(store.main_keys(a).unwrap(), 1);
        assert_eq!(
            blobs(&store, b),
            vec![("x".into(), b"b1".to_vec()), ("y".into(), b"b2".to_vec())]
        );
        assert_eq!(blobs(&store, a), vec![("x".into(), b"a1".to_vec())]);
        // One tenant's own write cannot reach another tenant, in either file.
        assert!(
            store
                .write_pending_for(a, |w| w.put_blob(b, "z", b""))
                .is_err()
        );
        assert!(
            store
                .write_pending_for(b, |w| w.put_blob(a, "z", b""))
                .is_err()
        );
        // Nor the registry from inside a dedicated tenant's file.
        let meta = store
            .read()
            .unwrap()
            .tenant(&TenantId::parse("b").unwrap())
            .unwrap()
            .unwrap();
        assert!(store.write_pending_for(b, |w| w.put_tenant(&meta)).is_err());
        // Liveness reads of the registry work there.
        let seen = store
            .write_pending_for(b, |w| w.tenant(&meta.id))
            .map(|(m, p)| {
                p.wait_durable().unwrap();
                m
            })
            .unwrap();
        assert_eq!(seen.map(|m| m.key), Some(b));
        // It survives a reopen once attached.
        drop(store);
        let store = Store::open(&dir.path().join("main.redb")).unwrap();
        store.attach_dedicated(b).unwrap();
        assert_eq!(blobs(&store, b).len(), 2);
        // A file found empty or missing is refused, never opened as a new, empty tenant.
        let file = store.placement.dir_of(b).join(DEDICATED_FILE);
        drop(store);
        assert!(file.is_file(), "{}", file.display());
        std::fs::File::create(&file).unwrap();
        let store = Store::open(&dir.path().join("main.redb")).unwrap();
        let err = store.attach_dedicated(b).unwrap_err().to_string();
        assert!(err.contains("is empty"), "{err}");
        std::fs::remove_file(&file).unwrap();
        let err = store.attach_dedicated(b).unwrap_err().to_string();
        assert!(err.contains("is missing"), "{err}");
    }

    fn migrate_in(store: &Store, t: TenantKey) {
        let file = store.create_dedicated(t).unwrap();
        let mut after = None;
        loop {
            let (last, _) = store
                .copy_chunk(t, CopyTarget::File(&file), after.as_deref(), 2)
                .unwrap();
            match last {
                Some(k) => after = Some(k),
                None => break,
            }
            // A write between chunks is caught up by the flip.
            put(store, t, "late", b"1");
        }
        store
            .flip_in(file, None, |w| w.put_blob(t, "flip", b"in"))
            .map_err(|e: StoreError| e)
            .unwrap();
        store.erase_main_range(t).unwrap();
    }

    /// Out of its file with the deletion left to the caller: the tenant reads and writes the
    /// main file at once while the old file still exists; deleting it later (or, after a
    /// crash, the start-up cleanup) removes it, and never a file the tenant lives in again.
    #[test]
    fn a_retired_file_is_deleted_after_the_flip_or_at_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("main.redb");
        let store = Store::open(&path).unwrap();
        let t = tenant(&store, "a");
        put(&store, t, "x", b"1");
        migrate_in(&store, t);
        let retire = |store: &Store| {
            let mut after = None;
            while let (Some(k), _) = store
                .copy_chunk(t, CopyTarget::Main, after.as_deref(), 3)
                .unwrap()
            {
                after = Some(k);
            }
            store
                .flip_out_retiring(t, None, |_| Ok::<_, StoreError>(()))
                .unwrap()
                .2
        };
        let retired = retire(&store);
        assert!(!store.is_dedicated(t) && store.has_dedicated_dir(t));
        put(&store, t, "after", b"2");
        assert_eq!(store.main_keys(t).unwrap(), blobs(&store, t).len() as u64);
        store.delete_retired(retired).unwrap();
        assert!(!store.has_dedicated_dir(t));
        assert_eq!(blobs(&store, t).len(), 4, "{:?}", blobs(&store, t));

        // Moved in again while an old retired handle waits: it is refused, the file kept.
        migrate_in(&store, t);
        let stale = retire(&store);
        migrate_in(&store, t);
        assert!(store.delete_retired(stale).is_err());
        assert!(store.is_dedicated(t) && store.has_dedicated_dir(t));

        // A new file created at the same path since (a move in, not routed yet): refused, its
        // directory kept.
        let stale = retire(&store);
        let fresh = store.create_dedicated(t).unwrap();
        assert!(store.delete_retired(stale).is_err());
        assert!(store.has_dedicated_dir(t));
        store.discard_dedicated(fresh).unwrap();
        assert!(!store.has_dedicated_dir(t));
        migrate_in(&store, t);

        // A crash between the flip and the deletion: the next start's cleanup removes it, and
        // a tombstone a crash left mid-deletion too.
        std::mem::forget(retire(&store));
        assert!(store.has_dedicated_dir(t));
        let tomb = store
            .placement
            .dir_of(t)
            .with_file_name(format!("{:016x}{TOMBSTONE}", t.raw()));
        std::fs::create_dir_all(&tomb).unwrap();
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.remove_orphan_files(&HashSet::new()).unwrap(), vec![t]);
        assert!(!store.has_dedicated_dir(t));
        assert!(!tomb.exists());
        assert_eq!(blobs(&store, t).len(), 4);
    }

    fn migrate_out(store: &Store, t: TenantKey) {
        let mut after = None;
        while let (Some(k), _) = store
            .copy_chunk(t, CopyTarget::Main, after.as_deref(), 3)
            .unwrap()
        {
            after = Some(k);
            store.write(|w| w.delete_blob(t, "late")).unwrap();
        }
        store
            .flip_out(t, None, |w| w.put_blob(t, "flip", b"out"))
            .map_err(|e: StoreError| e)
            .unwrap();
    }

    #[test]
    fn migrating_in_and_out_keeps_every_key_on_exactly_one_side() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("main.redb")).unwrap();
        let (a, b) = (tenant(&store, "a"), tenant(&store, "b"));
        for i in 0..9 {
            put(&store, b, &format!("k{i}"), format!("v{i}").as_bytes());
        }
        put(&store, a, "k", b"a");
        let mut want = blobs(&store, b);
        migrate_in(&store, b);
        want.push(("flip".into(), b"in".to_vec()));
        want.push(("late".into(), b"1".to_vec()));
        want.sort();
        assert!(store.is_dedicated(b));
        assert_eq!(store.main_keys(b).unwrap(), 0);
        assert_eq!(blobs(&store, b), want);
        assert!(store.has_dedicated_dir(b));

        migrate_out(&store, b);
        want.retain(|(n, _)| n != "late");
        want.iter_mut().find(|(n, _)| n == "flip").unwrap().1 = b"out".to_vec();
        assert!(!store.is_dedicated(b));
        assert!(!store.has_dedicated_dir(b));
        assert_eq!(blobs(&store, b), want);
        assert_eq!(blobs(&store, a), vec![("k".into(), b"a".to_vec())]);
    }

    #[test]
    fn stale_migration_steps_are_refused_and_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("main.redb")).unwrap();
        let (a, b) = (tenant(&store, "a"), tenant(&store, "b"));
        put(&store, a, "x", b"a1");
        put(&store, b, "x", b"b1");
        // A migration of `b` into its file planned before another one moved it there.
        let stale = store.create_dedicated(b).unwrap();
        migrate_in(&store, b);
        let want = blobs(&store, b);
        assert_eq!(want.len(), 3);
        // Its flip is refused, and discarding its file leaves the live one alone.
        assert!(
            store
                .flip_in(stale, None, |_| Ok::<_, StoreError>(()))
                .is_err()
        );
        assert!(store.is_dedicated(b) && store.has_dedicated_dir(b));
        // A fresh file for a routed tenant would replace the live one: refused.
        assert!(store.create_dedicated(b).is_err());
        assert_eq!(blobs(&store, b), want);
        // Flipping out a tenant that is not in a file, and erasing its main range, are refused
        // or do nothing: that range is its live data.
        assert!(
            store
                .flip_out(a, None, |_| Ok::<_, StoreError>(()))
                .is_err()
        );
        assert_eq!(store.erase_main_range(a).unwrap(), 0);
        assert_eq!(blobs(&store, a), vec![("x".into(), b"a1".to_vec())]);
        // The same after `b` moved back: its main range is live now.
        migrate_out(&store, b);
        let want = blobs(&store, b);
        assert_eq!(want.len(), 2, "x and flip; late was deleted");
        assert!(
            store
                .flip_out(b, None, |_| Ok::<_, StoreError>(()))
                .is_err()
        );
        assert_eq!(store.erase_main_range(b).unwrap(), 0);
        assert_eq!(blobs(&store, b), want);
        // A reopened store serves the same.
        drop(store);
        let store = Store::open(&dir.path().join("main.redb")).unwrap();
        assert_eq!(blobs(&store, b), want);
        assert_eq!(blobs(&store, a).len(), 1);
    }

    #[test]
    fn erasing_a_dedicated_tenant_leaves_its_file_to_be_deleted_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("main.redb")).unwrap();
        let (a, b) = (tenant(&store, "a"), tenant(&store, "b"));
        store.route_dedicated(store.create_dedicated(b).unwrap());
        put(&store, a, "x", b"1");
        put(&store, b, "x", b"1");
        let meta = |id: &str| {
            store
                .read()
                .unwrap()
                .tenant(&TenantId::parse(id).unwrap())
                .unwrap()
                .unwrap()
        };
        let mb = meta("b");
        store.write(|w| w.erase_tenant(&mb)).unwrap();
        // The registry row is gone, but nothing was written to the file: a crash now leaves
        // an orphan file (deleted at start), never a registered tenant without its data.
        assert!(store.read().unwrap().tenant(&mb.id).unwrap().is_none());
        assert_eq!(blobs(&store, b).len(), 1);
        store.remove_dedicated(b).unwrap();
        assert!(!store.has_dedicated_dir(b) && !store.is_dedicated(b));
        // A tenant in the main file is erased there.
        let ma = meta("a");
        store.write(|w| w.erase_tenant(&ma)).unwrap();
        assert_eq!(store.main_keys(a).unwrap(), 0);
    }

    /// A server-wide write or a read joins a dedicated file only when it touches its tenant: one
    /// that does not is not held up by a write in progress in that file.
    #[test]
    fn server_wide_writes_and_reads_join_only_the_files_they_touch() {
        use std::sync::mpsc::channel;
        use std::time::Duration;
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("main.redb")).unwrap());
        let (a, b) = (tenant(&store, "a"), tenant(&store, "b"));
        store.route_dedicated(store.create_dedicated(b).unwrap());
        put(&store, b, "x", b"1");
        let (inside_tx, inside) = channel();
        let (release, release_rx) = channel::<()>();
        let holder = {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let ((), pending) = store
                    .write_pending_for(b, |w| {
                        inside_tx.send(()).unwrap();
                        release_rx.recv().unwrap();
                        w.put_blob(b, "y", b"2")
                    })
                    .unwrap();
                pending.wait_durable().unwrap();
            })
        };
        // `b`'s file write lock is held now.
        inside.recv().unwrap();
        let (done_tx, done) = channel();
        let writer = {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                store.write(|w| w.put_blob(a, "x", b"1")).unwrap();
                let r = store.read().unwrap();
                done_tx
                    .send((
                        r.blobs_named(a, "").unwrap().len(),
                        store.main_keys(b).unwrap(),
                    ))
                    .unwrap();
            })
        };
        let finished = done.recv_timeout(Duration::from_secs(10));
        release.send(()).unwrap();
        holder.join().unwrap();
        writer.join().unwrap();
        assert_eq!(
            finished,
            Ok((1, 0)),
            "the server-wide write waited for b's file"
        );
        // A server-wide write that touches `b` joins its file.
        store.write(|w| w.put_blob(b, "z", b"3")).unwrap();
        assert_eq!(blobs(&store, b).len(), 3);
        assert_eq!(store.main_keys(b).unwrap(), 0);
    }

    #[test]
    fn orphan_files_and_main_ranges_are_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("main.redb")).unwrap();
        let (a, b) = (tenant(&store, "a"), tenant(&store, "b"));
        put(&store, a, "x", b"1");
        put(&store, b, "x", b"1");
        // An interrupted migration of `a` into its file: the file is an orphan.
        let orphan = store.create_dedicated(a).unwrap();
        drop(orphan);
        // `b` moved to its file, but a crash left a partial copy in the main file.
        let file = store.create_dedicated(b).unwrap();
        store.route_dedicated(file);
        let keep: HashSet<TenantKey> = [b].into_iter().collect();
        assert_eq!(store.remove_orphan_files(&keep).unwrap(), vec![a]);
        assert!(!store.has_dedicated_dir(a) && store.has_dedicated_dir(b));
        assert_eq!(store.erase_main_range(b).unwrap(), 1);
        assert_eq!(store.main_keys(b).unwrap(), 0);
        assert_eq!(store.main_keys(a).unwrap(), 1);
    }

    #[test]
    fn a_dedicated_file_gets_a_fixed_page_cache() {
        assert_eq!(dedicated_cache_bytes(64 << 20), 16 << 20);
        // However large the main file's cache (its default grows with the machine), each
        // dedicated file's stays fixed: a thousand dedicated tenants do not multiply it.
        assert_eq!(dedicated_cache_bytes(4 << 30), 16 << 20);
        assert_eq!(dedicated_cache_bytes(8 << 20), 8 << 20);
        assert_eq!(dedicated_cache_bytes(1 << 20), 1 << 20);
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_with_cache(&dir.path().join("main.redb"), 64 << 20).unwrap();
        assert_eq!(store.placement.cache_bytes, 16 << 20);
    }

    /// The main range left behind by a move into a file is erased in several transactions,
    /// all of it, and a tenant that is not dedicated keeps its range.
    #[test]
    fn a_large_main_range_is_erased_in_chunks_after_the_flip() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("main.redb")).unwrap();
        let (a, b) = (tenant(&store, "a"), tenant(&store, "b"));
        let n = ERASE_CHUNK_KEYS * 2 + 7;
        store
            .write(|w| {
                for i in 0..n {
                    w.put_blob(b, &format!("k{i}"), b"v")?;
                }
                w.put_blob(a, "k", b"v")
            })
            .unwrap();
        let before = store.main_keys(b).unwrap();
        assert!(before >= n as u64);
        assert_eq!(store.erase_main_range(b).unwrap(), 0, "b is not dedicated");
        migrate_in(&store, b);
        assert_eq!(store.main_keys(b).unwrap(), 0);
        assert_eq!(
            blobs(&store, b).len(),
            n + 2,
            "every blob, `late` and `flip`"
        );
        assert_eq!(store.main_keys(a).unwrap(), 1);
    }

    /// Tracking begins only once a write transaction already under way has ended, so the
    /// copy that follows sees that write.
    #[test]
    fn tracking_waits_for_a_write_already_under_way() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("main.redb")).unwrap();
        let t = tenant(&store, "t");
        put(&store, t, "a", b"1");
        let (inside, entered) = std::sync::mpsc::channel();
        let (release, go) = std::sync::mpsc::channel::<()>();
        let tracking = AtomicBool::new(false);
        let store = &store;
        let tracker = std::thread::scope(|s| {
            let writer = s.spawn(move || {
                let ((), pending) = store
                    .write_pending_for(t, |w| {
                        w.put_blob(t, "b", b"2")?;
                        inside.send(()).unwrap();
                        go.recv().unwrap();
                        Ok::<_, StoreError>(())
                    })
                    .unwrap();
                pending.wait_durable().unwrap();
            });
            entered.recv().unwrap();
            let starter = s.spawn(|| {
                let tracker = store.track_writes(t).unwrap();
                tracking.store(true, Ordering::SeqCst);
                tracker
            });
            std::thread::sleep(std::time::Duration::from_millis(100));
            assert!(!tracking.load(Ordering::SeqCst), "it waits for the write");
            release.send(()).unwrap();
            writer.join().unwrap();
            starter.join().unwrap()
        });
        let file = store.create_dedicated(t).unwrap();
        let mut after = None;
        while let (Some(k), _) = store
            .copy_chunk(t, CopyTarget::File(&file), after.as_deref(), 1)
            .unwrap()
        {
            after = Some(k);
            put(store, t, "c", b"3");
        }
        store
            .flip_in(file, Some(&tracker), |_| Ok::<_, StoreError>(()))
            .unwrap();
        let names: Vec<_> = blobs(store, t).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["a", "b", "c"]);
    }

    #[test]
    fn catch_up_writes_only_the_differences() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("t.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut src = txn.open_table(DATA).unwrap();
            let t = TenantKey::from_raw(7);
            let k = |n: &str| keys::blob(t, n);
            for (n, v) in [("a", "1"), ("b", "2"), ("d", "4")] {
                src.insert(k(n).as_slice(), v.as_bytes()).unwrap();
            }
            let dst_def: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("dst");
            let mut dst = txn.open_table(dst_def).unwrap();
            for (n, v) in [("a", "1"), ("b", "x"), ("c", "3")] {
                dst.insert(k(n).as_slice(), v.as_bytes()).unwrap();
            }
            // Another tenant's key in the destination is not touched.
            dst.insert(
                keys::blob(TenantKey::from_raw(8), "a").as_slice(),
                b"".as_slice(),
            )
            .unwrap();
            let n = catch_up(&src, &mut dst, &keys::tenant_all(t)).unwrap();
            assert_eq!(n, 3, "b changed, c removed, d added");
            let all: Vec<_> = dst
                .iter()
                .unwrap()
                .map(|e| {
                    let (k, v) = e.unwrap();
                    (k.value().to_vec(), v.value().to_vec())
                })
                .collect();
            assert_eq!(all.len(), 4);
            assert_eq!(catch_up(&src, &mut dst, &keys::tenant_all(t)).unwrap(), 0);
        }
    }

    /// One change of the property test below: a blob set (`Some`) or deleted (`None`).
    type Change = (u8, Option<u8>);

    fn apply(store: &Store, t: TenantKey, model: &mut BTreeMap<String, Vec<u8>>, c: &Change) {
        let name = format!("k{:02}", c.0);
        match c.1 {
            Some(v) => {
                put(store, t, &name, &[v]);
                model.insert(name, vec![v]);
            }
            None => {
                let ((), pending) = store
                    .write_pending_for(t, |w| w.delete_blob(t, &name))
                    .unwrap();
                pending.wait_durable().unwrap();
                model.remove(&name);
            }
        }
    }

    /// Moves `t` into its own file (or out of it) in chunks of `chunk` keys with a tracked
    /// catch-up, applying each batch of `between` after a chunk; the other tenant `u` writes
    /// too. Returns the flip's catch-up count.
    fn tracked_move(
        store: &Store,
        (t, u): (TenantKey, TenantKey),
        chunk: usize,
        between: &[Vec<Change>],
        model: &mut BTreeMap<String, Vec<u8>>,
    ) -> u64 {
        let into = !store.is_dedicated(t);
        let file = into.then(|| store.create_dedicated(t).unwrap());
        let tracker = store.track_writes(t).unwrap();
        let target = || match &file {
            Some(f) => CopyTarget::File(f),
            None => CopyTarget::Main,
        };
        let (mut after, mut batches) = (None, between.iter());
        while let (Some(k), _) = store
            .copy_chunk(t, target(), after.as_deref(), chunk)
            .unwrap()
        {
            after = Some(k);
            for c in batches.next().into_iter().flatten() {
                apply(store, t, model, c);
                put(store, u, "other", &[c.0]);
            }
        }
        for c in batches.flatten() {
            apply(store, t, model, c);
        }
        let caught = match file {
            Some(f) => store.flip_in(f, Some(&tracker), |_| Ok::<_, StoreError>(())),
            None => store.flip_out(t, Some(&tracker), |_| Ok::<_, StoreError>(())),
        }
        .unwrap()
        .1;
        store.erase_main_range(t).unwrap();
        caught
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

        /// A catch-up of only the keys written since the copy began leaves the tenant's range
        /// on its new side exactly as a model says, in both directions, whatever the writes
        /// between chunks (new keys before and after the copy's cursor, changes, deletes).
        #[test]
        fn a_tracked_catch_up_moves_every_change(
            initial in proptest::collection::vec((0u8..30, proptest::option::of(0u8..4)), 0..30),
            into in proptest::collection::vec(
                proptest::collection::vec((0u8..30, proptest::option::of(0u8..4)), 0..4), 0..10),
            out in proptest::collection::vec(
                proptest::collection::vec((0u8..30, proptest::option::of(0u8..4)), 0..4), 0..10),
            chunk in 1usize..6,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(&dir.path().join("main.redb")).unwrap();
            let (t, u) = (tenant(&store, "t"), tenant(&store, "u"));
            let mut model = BTreeMap::new();
            for c in &initial {
                apply(&store, t, &mut model, c);
            }
            let caught = tracked_move(&store, (t, u), chunk, &into, &mut model);
            let changes: usize = into.iter().map(Vec::len).sum();
            proptest::prop_assert!(caught <= changes as u64);
            proptest::prop_assert!(store.is_dedicated(t));
            proptest::prop_assert_eq!(store.main_keys(t).unwrap(), 0);
            let want: Vec<_> = model.clone().into_iter().collect();
            proptest::prop_assert_eq!(blobs(&store, t), want);

            tracked_move(&store, (t, u), chunk, &out, &mut model);
            proptest::prop_assert!(!store.is_dedicated(t));
            let want: Vec<_> = model.into_iter().collect();
            proptest::prop_assert_eq!(blobs(&store, t), want);
            proptest::prop_assert_eq!(store.tracking.of(t).map(|_| ()), None);
        }
    }
}
