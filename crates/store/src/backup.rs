//! An online backup: a consistent copy of the data directory written while every tenant reads
//! and writes.
//!
//! One read snapshot of each database file, all begun under the routing lock (so no
//! migration's flip falls between them and the main file's), is copied row by row into a fresh
//! database at the same place under the destination: the main file, then each dedicated
//! tenant's `tenants/<key>/data.redb`. Every file thus holds exactly what was committed when
//! the backup began, and the copy is as consistent as the server after a crash at that instant
//! (a write committed then but not yet acknowledged may be in it; a write acknowledged before
//! it began always is). The snapshots hold their pages, so a busy server's files grow by what
//! it writes meanwhile, until the backup ends.
//!
//! Derived index files (`indexes/`) are copied afterwards as they are: they are never changed
//! in place, and one that is missing or does not match the row naming it only makes the
//! restored server rebuild that index.
//!
//! The copy is written under `<destination>.partial` and renamed to the destination once every
//! file and directory is durable, so a directory with the destination's name is always a whole
//! backup; a failed copy removes its partial directory, and one a crash cut short is left for
//! the operator (its name says what it is). Restoring is starting a server on the directory.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTableMetadata};

use crate::db::Db;
use crate::derived::DERIVED_DIR;
use crate::placement::{DEDICATED_FILE, TENANTS_DIR};
use crate::tables::{CREDENTIALS, DATA, META, REGISTRY};
use crate::{Store, StoreError};

/// Page cache of each database the backup writes: it only appends, in chunks.
const BACKUP_CACHE_BYTES: usize = 16 << 20;

/// The suffix of the directory a backup is written under until it is complete.
pub const PARTIAL_SUFFIX: &str = ".partial";

/// How far a backup has got, readable while it runs.
#[derive(Debug, Default)]
pub struct BackupProgress {
    rows_total: AtomicU64,
    rows_copied: AtomicU64,
}

impl BackupProgress {
    /// Rows of every table of every file in the snapshots; known once they are taken.
    pub fn rows_total(&self) -> u64 {
        self.rows_total.load(Ordering::Relaxed)
    }

    pub fn rows_copied(&self) -> u64 {
        self.rows_copied.load(Ordering::Relaxed)
    }

    pub(crate) fn copied(&self, rows: u64) {
        self.rows_copied.fetch_add(rows, Ordering::Relaxed);
    }
}

/// What a finished backup holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BackedUp {
    /// Rows copied, over every table of every database file.
    pub rows: u64,
    /// Dedicated tenants' database files copied (besides the main file).
    pub dedicated_files: u64,
    /// Derived index files copied.
    pub index_files: u64,
    /// Bytes of every file written.
    pub bytes: u64,
}

fn io(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The directory `dest`'s backup is written under until it is complete.
pub fn partial_dir_of(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_owned();
    name.push(PARTIAL_SUFFIX);
    dest.with_file_name(name)
}

/// One database file's snapshot: the handle that keeps its database open, its transaction,
/// and where its copy goes (relative to the backup's directory).
struct Snapshot {
    _db: Db,
    txn: ReadTransaction,
    to: PathBuf,
}

impl Store {
    /// Writes a consistent copy of the data directory into `dest`, a directory that must not
    /// exist yet (nor its partial one); its parent is created if missing. See the module's
    /// documentation. Reads and writes go on meanwhile; `progress` counts the rows copied.
    /// `stop` is asked after each chunk: when it answers an error, the copy stops with it
    /// (a server shutting down), its partial directory removed.
    pub fn backup(
        &self,
        dest: &Path,
        progress: &BackupProgress,
        stop: &dyn Fn() -> Result<(), StoreError>,
    ) -> Result<BackedUp, StoreError> {
        let partial = partial_dir_of(dest);
        for taken in [dest, partial.as_path()] {
            if taken.exists() {
                return Err(io(
                    taken,
                    std::io::Error::new(std::io::ErrorKind::AlreadyExists, "already exists"),
                ));
            }
        }
        if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
        }
        // Created here, so never someone else's directory that the clean-up below removes.
        std::fs::create_dir(&partial).map_err(|e| io(&partial, e))?;
        match self.backup_into(&partial, progress, stop) {
            Ok(done) => {
                std::fs::rename(&partial, dest).map_err(|e| io(dest, e))?;
                sync_parent(dest)?;
                Ok(done)
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&partial);
                Err(e)
            }
        }
    }

    fn backup_into(
        &self,
        dir: &Path,
        progress: &BackupProgress,
        stop: &dyn Fn() -> Result<(), StoreError>,
    ) -> Result<BackedUp, StoreError> {
        let snapshots = self.backup_snapshots()?;
        let mut total = 0;
        for s in &snapshots {
            total += rows_of(&s.txn)?;
        }
        progress.rows_total.store(total, Ordering::Relaxed);
        let mut done = BackedUp {
            // Every snapshot after the first (the main file's) is a dedicated tenant's.
            dedicated_files: snapshots.len() as u64 - 1,
            ..BackedUp::default()
        };
        for s in snapshots {
            let path = dir.join(&s.to);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
            }
            let fresh = Database::builder()
                .set_cache_size(BACKUP_CACHE_BYTES)
                .create(&path)?;
            crate::vacuum::copy_tables(&s.txn, &fresh, &|rows| {
                progress.copied(rows);
                stop()
            })?;
            drop(fresh);
            sync_parent(&path)?;
            if s.to.parent().is_some_and(|p| !p.as_os_str().is_empty()) {
                sync_parent(path.parent().unwrap_or(dir))?;
            }
        }
        done.rows = progress.rows_copied();
        done.index_files = copy_derived(&self.placement.derived_root(), &dir.join(DERIVED_DIR))?;
        done.bytes = bytes_under(dir)?;
        sync_dir(dir)?;
        Ok(done)
    }

    fn main_file_name(&self) -> &std::ffi::OsStr {
        self.path.file_name().unwrap_or_default()
    }

    /// A read snapshot of the main file and of every dedicated tenant's file, begun under the
    /// routing lock (lock order as [`Store::read`]'s: the main database's guard, the routing,
    /// then each dedicated file's guard), so that they agree on where each tenant lives.
    fn backup_snapshots(&self) -> Result<Vec<Snapshot>, StoreError> {
        let main = self.db();
        let routing = self.placement.lock_read();
        let mut out = vec![Snapshot {
            txn: main.begin_read()?,
            _db: main.clone(),
            to: PathBuf::from(self.main_file_name()),
        }];
        for (key, file) in routing.iter() {
            let db = crate::tables::read_db(&file.db).clone();
            out.push(Snapshot {
                txn: db.begin_read()?,
                _db: db,
                to: Path::new(TENANTS_DIR)
                    .join(format!("{:016x}", key.raw()))
                    .join(DEDICATED_FILE),
            });
        }
        Ok(out)
    }
}

/// Rows in every table the copy takes.
fn rows_of(txn: &ReadTransaction) -> Result<u64, StoreError> {
    Ok(txn.open_table(DATA)?.len()?
        + txn.open_table(REGISTRY)?.len()?
        + txn.open_table(META)?.len()?
        + txn.open_table(CREDENTIALS)?.len()?)
}

/// Copies the derived files under `from` (`<tenant>/<file>`, temporaries left out) into `to`,
/// each synced; returns how many. A file removed while this runs is skipped: it was no
/// longer named by a row, or its index is rebuilt.
fn copy_derived(from: &Path, to: &Path) -> Result<u64, StoreError> {
    let tenants = match std::fs::read_dir(from) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io(from, e)),
    };
    let mut copied = 0;
    for tenant in tenants {
        let tenant = tenant.map_err(|e| io(from, e))?;
        if !tenant.file_type().map_err(|e| io(from, e))?.is_dir() {
            continue;
        }
        let files = match std::fs::read_dir(tenant.path()) {
            Ok(files) => files,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(&tenant.path(), e)),
        };
        let dir = to.join(tenant.file_name());
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        for file in files {
            let file = file.map_err(|e| io(&tenant.path(), e))?;
            let name = file.file_name();
            if name
                .to_string_lossy()
                .starts_with(crate::derived::TEMP_PREFIX)
            {
                continue;
            }
            let target = dir.join(&name);
            match std::fs::copy(file.path(), &target) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io(&target, e)),
            }
            std::fs::File::open(&target)
                .and_then(|f| f.sync_all())
                .map_err(|e| io(&target, e))?;
            copied += 1;
        }
        sync_dir(&dir)?;
    }
    if to.exists() {
        sync_dir(to)?;
    }
    Ok(copied)
}

/// Bytes of every file under `dir`.
fn bytes_under(dir: &Path) -> Result<u64, StoreError> {
    let mut bytes = 0;
    for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let entry = entry.map_err(|e| io(dir, e))?;
        let meta = entry.metadata().map_err(|e| io(&entry.path(), e))?;
        bytes += if meta.is_dir() {
            bytes_under(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(bytes)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(dir, e))
}

/// Makes the entry of `path` in its directory durable.
fn sync_parent(path: &Path) -> Result<(), StoreError> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => sync_dir(dir),
        _ => sync_dir(Path::new(".")),
    }
}

#[cfg(test)]
mod tests;
