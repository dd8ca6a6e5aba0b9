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

use redb::{ReadableDatabase, ReadableTable};

use crate::db::Db;
use crate::file_writes::{FileWrites, TableTag, Tracked};
use crate::group_commit::GroupCommit;
use crate::keys::{self, TenantKey};
use crate::opened::Opened;
use crate::recovery::FileOptions;
use crate::tables::{
    DATA, MainTables, Registry, Route, Writer, open_database, prefix_range, read_db, untracked,
};
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
    /// The database with its file's syncs (see `deferred_sync`).
    pub(crate) db: Arc<RwLock<Db>>,
    pub(crate) group: Arc<GroupCommit>,
    dir: PathBuf,
}

/// The routing table: which tenants live in their own file.
pub(crate) struct Placement {
    root: PathBuf,
    /// Copied on change (rare), so that a snapshot or a write takes it in O(1).
    files: RwLock<Arc<Files>>,
    /// How each dedicated file is opened: the main file's options with a share of its page
    /// cache (see [`dedicated_cache_bytes`]).
    options: FileOptions,
}

pub(crate) type Files = BTreeMap<TenantKey, Arc<FileDb>>;

impl Placement {
    pub(crate) fn beside(main: &Path, options: FileOptions) -> Placement {
        let dir = main.parent().unwrap_or_else(|| Path::new("."));
        Placement {
            root: dir.join(TENANTS_DIR),
            files: RwLock::default(),
            options: FileOptions {
                cache_bytes: dedicated_cache_bytes(options.cache_bytes),
                ..options
            },
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
    /// Whether the range holds the tenant's last-migration row (`migration_row`).
    pub migration_row: bool,
}

impl RangeSize {
    /// The keys a data move of this range copies: the range's, and the move's own
    /// last-migration row when the range has none yet. A move writes that row in the tenant's
    /// range as it starts, after its size was counted and before its copy, so without it a
    /// tenant's first move copied one key more than its total.
    pub fn keys_to_move(&self) -> u64 {
        self.keys + u64::from(!self.migration_row)
    }
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

fn open_file(dir: PathBuf, db: Db) -> Arc<FileDb> {
    Arc::new(FileDb {
        db: Arc::new(RwLock::new(db)),
        group: Arc::default(),
        dir,
    })
}

/// Makes `dst`'s copy of the range `prefix` equal to `src`'s, writing only the differences;
/// returns how many keys it wrote or removed.
pub(crate) fn catch_up(
    src: &impl ReadableTable<&'static [u8], &'static [u8]>,
    dst: &mut crate::tables::DataTable<'_>,
    prefix: &[u8],
) -> Result<u64, StoreError> {
    let mut ops: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
    {
        let mut a = prefix_range(src, prefix)?;
        let mut b = prefix_range(&**dst, prefix)?;
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
    dst: &mut crate::tables::DataTable<'_>,
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
        let db = open_database(&dir.join(DEDICATED_FILE), self.placement.options)?;
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
        let db = open_database(&path, self.placement.options)?;
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

    /// The keys of the tenant directories beside the main file, and whether a retired file's
    /// tombstone is among them: what [`Store::remove_orphan_files`] would look at, listed
    /// without a change.
    pub fn tenant_dirs(&self) -> Result<(Vec<TenantKey>, bool), StoreError> {
        let root = &self.placement.root;
        let entries = match std::fs::read_dir(root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), false)),
            Err(e) => return Err(io(root, e)),
        };
        let (mut keys, mut tombstones) = (Vec::new(), false);
        for entry in entries {
            let name = entry.map_err(|e| io(root, e))?.file_name();
            tombstones |= tombstone_key(&name).is_some();
            keys.extend(tenant_dir_key(&name));
        }
        Ok((keys, tombstones))
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
                crate::recovery::set_non_durable(&mut txn)?;
            }
            {
                let mut table = MainTables::open(&txn, &self.file_writes)?.data;
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
        // A handle on the database, so that a vacuum's swap leaves it open for this read.
        let main = self.db().clone();
        let table = main.begin_read()?.open_table(DATA)?;
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
        let migration_row = keys::last_migration(t);
        for entry in prefix_range(
            crate::tables::sealed::Tables::data_table(&r, t)?,
            &keys::tenant_all(t),
        )? {
            let (k, v) = entry?;
            size.keys += 1;
            size.bytes += (k.len() + v.len()) as u64;
            size.migration_row |= k.as_slice() == migration_row.as_slice();
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
        // A move copies a whole tenant onto the data disk: it stops, as a vacuum or a backup
        // does, before it takes the room the tenants' writes need.
        crate::disk_room::keep_reserve(self.data_dir(), "a data move")?;
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
        // Into the main file, the keys are recorded for a vacuum under way (see `file_writes`).
        let write = |db: &crate::db::Open, file: Option<&FileWrites>| -> Result<(), StoreError> {
            let _writing = crate::deferred_sync::write_path();
            let mut txn = db.begin_write()?;
            crate::recovery::set_non_durable(&mut txn)?;
            {
                let mut table = Tracked::new(txn.open_table(DATA)?, TableTag::Data, file);
                for (k, v) in &chunk {
                    table.insert(k.as_slice(), v.as_slice())?;
                }
            }
            txn.commit()?;
            Ok(())
        };
        match to {
            CopyTarget::File(f) => write(&read_db(&f.file.db), None)?,
            CopyTarget::Main => write(&self.db(), Some(&self.file_writes))?,
        }
        Ok((Some(last), chunk.len() as u64))
    }

    /// Runs `f`, which registers one new tenant (with [`Writer::create_tenant`]), so that the
    /// tenant lives in its own file from the start: the file is created for the key the
    /// registry will assign and synced with `f`'s writes of that tenant's data before the
    /// main-file transaction (its registry row) commits; the tenant is routed to it in the
    /// same step. If anything before that commit fails, the file is deleted (or, after a crash,
    /// at the next start: no registry row names it).
    ///
    /// The main-file transaction is held until that deletion is done: the key is the next one
    /// only while it is open, and another creation that took the same key meanwhile would have
    /// its new file deleted under it. A failed commit leaves the file: the registry row may
    /// have reached the disk all the same, and the next start deletes the file only if no row
    /// names it.
    pub fn write_creating_dedicated<R, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&mut Writer<'_>) -> Result<(R, TenantKey), E>,
    ) -> Result<R, E> {
        let _writing = crate::deferred_sync::write_path();
        let db = self.db();
        let mut txn = Some(db.begin_write().map_err(StoreError::from)?);
        let next = {
            let meta = (txn.as_ref().expect("just begun"))
                .open_table(crate::tables::META)
                .map_err(StoreError::from)?;
            crate::tables::next_tenant_key(&meta)?
        };
        let file = self.create_dedicated(next)?;
        let result = (|| {
            let fdb = read_db(&file.file.db);
            let ftxn = fdb.begin_write().map_err(StoreError::from)?;
            let r = {
                let tables =
                    MainTables::open(txn.as_ref().expect("not committed"), &self.file_writes)?;
                let mut writer = Writer {
                    data: tables.data,
                    dedicated: Opened::one(next, (untracked(&ftxn, DATA, TableTag::Data)?, true)),
                    lazy: None,
                    route: Route::Main(TenantKey::SERVER, false),
                    registry: Registry::Write(tables.registry),
                    meta: tables.meta,
                    credentials: tables.credentials,
                    log_cap: self.change_log_cap(),
                    tracking: &self.tracking,
                    registry_written: false,
                    wrote: 0,
                };
                // Before `f`: the transaction aborts with it if anything fails.
                writer.note_dedicated_tenant()?;
                let (r, key) = f(&mut writer)?;
                if key != next {
                    return Err(StoreError::Engine(
                        "a dedicated creation registered another key than planned".into(),
                    )
                    .into());
                }
                r
            };
            ftxn.commit()?;
            drop(fdb);
            let mut routing = self.placement.lock_write();
            let committed = txn.take().expect("committed once").commit();
            // Creations and flips change registry rows (maybe even when the commit failed).
            self.registry_committed();
            committed?;
            Arc::make_mut(&mut routing).insert(next, Arc::clone(&file.file));
            Ok(r)
        })();
        // Still open: the commit was not reached, so no row names the file.
        if result.is_err() && txn.is_some() {
            let _ = self.discard_dedicated(file);
        }
        drop(txn);
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
        let mut commit_reached = false;
        let result = self.flip_in_inner(&file, since, f, &mut commit_reached);
        // Not routed and its flip not committed: nothing refers to the file; one that cannot
        // be deleted now is deleted at the next start. A flip whose commit failed may have
        // reached the disk all the same, naming the file: the next start keeps the file if the
        // registry names it and deletes it if not (the tenant is then whole in the main file,
        // whose range is erased only after a flip that succeeded).
        if result.is_err() && !commit_reached {
            let _ = self.discard_dedicated(file);
        }
        result
    }

    fn flip_in_inner<R, E: From<StoreError>>(
        &self,
        file: &DedicatedFile,
        since: Option<&WriteTracker<'_>>,
        f: impl FnOnce(&mut Writer<'_>) -> Result<R, E>,
        commit_reached: &mut bool,
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
            let tables = MainTables::open(&txn, &self.file_writes)?;
            let mut ftable = untracked(&ftxn, DATA, TableTag::Data)?;
            let caught = catch_up_since(since, t, &*tables.data, &mut ftable)?;
            let mut writer = Writer {
                data: tables.data,
                dedicated: Opened::one(t, (ftable, true)),
                lazy: None,
                route: Route::Main(TenantKey::SERVER, false),
                registry: Registry::Write(tables.registry),
                meta: tables.meta,
                credentials: tables.credentials,
                log_cap: self.change_log_cap(),
                tracking: &self.tracking,
                registry_written: false,
                wrote: 0,
            };
            // Before `f`: the transaction aborts with it if anything fails.
            writer.note_dedicated_tenant()?;
            (f(&mut writer)?, caught)
        };
        ftxn.commit()?;
        drop(fdb);
        let mut routing = self.placement.lock_write();
        *commit_reached = true;
        let committed = txn.commit();
        // Creations and flips change registry rows (maybe even when the commit failed).
        self.registry_committed();
        committed?;
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
            let mut tables = MainTables::open(&txn, &self.file_writes)?;
            let caught = catch_up_since(since, t, &src, &mut tables.data)?;
            let mut writer = Writer {
                data: tables.data,
                dedicated: Opened::default(),
                lazy: None,
                // The tenant's keys go to the main file in this write.
                route: Route::Main(t, false),
                registry: Registry::Write(tables.registry),
                meta: tables.meta,
                credentials: tables.credentials,
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
            committed?;
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
mod tests;
