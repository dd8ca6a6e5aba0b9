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
//! Derived index files (`indexes/`) are taken right after the snapshots, before the rows are
//! copied: linked into a staging directory beside them with their deletion held off from
//! before the snapshots until then, so every file a snapshot's row names is taken, then
//! hard-linked from there when the backup is on the same file system (they are never
//! changed in place, only replaced), else copied. One that is missing or does
//! not match the row naming it only makes the restored server rebuild that index.
//!
//! The copy is written under `<destination>.partial` (readable by the server's user only) and
//! renamed to the destination once every file and directory is durable, so a directory with
//! the destination's name is always a whole backup; a failed copy removes its partial
//! directory, and one a crash cut short is left for the operator (its name says what it is).
//! Restoring is starting a server on the directory.
//!
//! A tenant purged moments before may still have its file or rows in the snapshots (their
//! erasure runs after the purge's commit); nothing names them, and the restored server erases
//! them at its start, as a crash at that instant would have it do.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

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
    phase: AtomicU8,
}

/// The steps of a backup, in order, as [`BackupProgress::phase`] names them.
const PHASES: [&str; 5] = [
    "snapshot",
    "index_files",
    "copying",
    "compacting",
    "syncing",
];

impl BackupProgress {
    /// The step under way: `snapshot`, `index_files`, `copying` (the rows, counted by
    /// [`BackupProgress::rows_copied`]), `compacting` (the new files) or `syncing`.
    pub fn phase(&self) -> &'static str {
        PHASES[usize::from(self.phase.load(Ordering::Relaxed)).min(PHASES.len() - 1)]
    }

    fn enter(&self, phase: &str) {
        let i = PHASES.iter().position(|p| *p == phase).unwrap_or(0);
        self.phase.store(i as u8, Ordering::Relaxed);
    }

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
    /// exist yet (nor its partial one); its missing ancestors are created (and made durable).
    /// See the module's documentation. Reads and writes go on meanwhile; `progress` counts the
    /// rows copied. `stop` is asked between steps (each chunk of rows, each index file and
    /// each 8 MiB of one): when it answers an error, the copy stops with it (a server shutting
    /// down), its partial directory removed.
    pub fn backup(
        &self,
        dest: &Path,
        progress: &BackupProgress,
        stop: &dyn Fn() -> Result<(), StoreError>,
    ) -> Result<BackedUp, StoreError> {
        let partial = partial_dir_of(dest);
        for taken in [dest, partial.as_path()] {
            if taken.symlink_metadata().is_ok() {
                return Err(io(
                    taken,
                    std::io::Error::new(std::io::ErrorKind::AlreadyExists, "already exists"),
                ));
            }
        }
        if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            create_dir_all_durably(parent)?;
        }
        // A copy that filled the data directory's disk would fail the tenants' writes
        // (`disk_room`); one onto another disk is refused before it fails half-way.
        crate::disk_room::require_room(
            dest.parent().unwrap_or(Path::new(".")),
            self.backup_bytes(),
            "a backup",
        )?;
        // Created here, so never someone else's directory that the clean-up below removes;
        // readable by the server's user only, as the tenants' data in it is.
        private_dir(&partial)?;
        let done = match self.backup_into(&partial, progress, stop) {
            Ok(done) => done,
            Err(e) => return Err(cleaned_up(&partial, e)),
        };
        if let Err(e) = std::fs::rename(&partial, dest) {
            return Err(cleaned_up(&partial, io(dest, e)));
        }
        // The backup is whole under its name from here on: a failed sync of its name is told,
        // not a failure (the rename reaches the disk with the file system's next commit).
        if let Err(e) = sync_parent(dest) {
            tracing::warn!(backup = %dest.display(), error = %e, "backup: syncing its name failed");
        }
        Ok(done)
    }

    /// About how many bytes a backup writes: the data files' lengths (their copies hold no
    /// free pages, so no more) and the derived index files'.
    fn backup_bytes(&self) -> u64 {
        let files: u64 = self
            .placement
            .lock_read()
            .values()
            .map(|f| crate::tables::read_db(&f.db).sync.file_len())
            .sum();
        let derived = std::fs::read_dir(self.placement.derived_root())
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|tenant| {
                std::fs::read_dir(tenant.path())
                    .into_iter()
                    .flatten()
                    .flatten()
            })
            .filter_map(|file| file.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum::<u64>();
        self.db().sync.file_len() + files + derived
    }

    fn backup_into(
        &self,
        dir: &Path,
        progress: &BackupProgress,
        stop: &dyn Fn() -> Result<(), StoreError>,
    ) -> Result<BackedUp, StoreError> {
        // No derived file is deleted from before the snapshots until the files are linked
        // into a staging directory beside them (`Store::derived_gate`): an index save or a
        // collection's delete removes the files its rows no longer name, which may be files
        // the snapshots' rows name. The links are instant (one file system); the copy into
        // the backup, which may be minutes to another file system, reads the staged links
        // with deletions going on, so no save keeps a replaced graph's disk space meanwhile.
        let root = self.placement.derived_root();
        let staging = Staging(root.join(staging_name(dir)));
        let snapshots = {
            let _no_deletions = self
                .derived_gate
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let snapshots = self.backup_snapshots()?;
            progress.enter("index_files");
            copy_derived(&root, &staging.0, stop)?;
            snapshots
        };
        let index_files = copy_derived(&staging.0, &dir.join(DERIVED_DIR), stop)?;
        drop(staging);
        let mut total = 0;
        for s in &snapshots {
            total += rows_of(&s.txn)?;
        }
        progress.rows_total.store(total, Ordering::Relaxed);
        progress.enter("copying");
        let mut done = BackedUp {
            // Every snapshot after the first (the main file's) is a dedicated tenant's.
            dedicated_files: snapshots.len() as u64 - 1,
            index_files,
            ..BackedUp::default()
        };
        for s in snapshots {
            let path = dir.join(&s.to);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
            }
            let mut fresh = Database::builder()
                .set_cache_size(BACKUP_CACHE_BYTES)
                .create(&path)?;
            crate::vacuum::copy_tables(&s.txn, &fresh, &|rows| {
                progress.copied(rows);
                crate::disk_room::keep_reserve(dir, "a backup")?;
                stop()
            })?;
            drop(s);
            // A copy is no start of this server's: no row log file it is put beside (the
            // source's own, say, when the main file alone is restored) is ever replayed into it.
            crate::row_log::new_epoch_in(&fresh)?;
            // Written in order, the new file has few free pages; compaction releases them. One
            // call runs every pass, and is not interrupted: asked before it.
            stop()?;
            progress.enter("compacting");
            while fresh.compact()? {}
            drop(fresh);
            progress.enter("copying");
            sync_parent(&path)?;
            if let Some(sub) = path.parent().filter(|p| *p != dir) {
                // `tenants/<key>/`: its entry in `tenants/`, and that one's in the backup.
                sync_parent(sub)?;
                sync_parent(sub.parent().unwrap_or(dir))?;
            }
        }
        progress.enter("syncing");
        done.rows = progress.rows_copied();
        done.bytes = bytes_under(dir);
        sync_dir(dir)?;
        Ok(done)
    }

    fn main_file_name(&self) -> &std::ffi::OsStr {
        self.path.file_name().unwrap_or_default()
    }

    /// The directory holding the main file: the data directory.
    pub fn data_dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
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

/// Names of the directories a backup links the derived files into, beside the tenants'
/// directories (so on their file system): never a tenant directory's name (16 hex digits).
pub(crate) const STAGING_PREFIX: &str = "backup-staging-";

/// The staging directory's name for a backup written into `dir` (its partial directory,
/// whose name is the backup's: one at a time per name).
fn staging_name(dir: &Path) -> String {
    format!(
        "{STAGING_PREFIX}{}",
        dir.file_name().unwrap_or_default().to_string_lossy()
    )
}

/// A staging directory, removed when dropped, the backup done or failed; one a crash left is
/// removed at the next start (`Store::remove_orphan_derived`).
struct Staging(PathBuf);

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Rows in every table the copy takes.
fn rows_of(txn: &ReadTransaction) -> Result<u64, StoreError> {
    Ok(txn.open_table(DATA)?.len()?
        + txn.open_table(REGISTRY)?.len()?
        + txn.open_table(META)?.len()?
        + txn.open_table(CREDENTIALS)?.len()?)
}

/// Copies the derived files under `from` (`<tenant>/<file>`, regular files only, temporaries
/// left out) into `to`: each hard-linked when `to` is on the same file system (a derived
/// file is never changed in place, only replaced), else copied and synced; returns how many.
/// A file removed meanwhile is skipped: it was no longer named by a row, or its index is
/// rebuilt.
fn copy_derived(
    from: &Path,
    to: &Path,
    stop: &dyn Fn() -> Result<(), StoreError>,
) -> Result<u64, StoreError> {
    let tenants = match std::fs::read_dir(from) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io(from, e)),
    };
    let mut copied = 0;
    for tenant in tenants {
        let tenant = tenant.map_err(|e| io(from, e))?;
        // Tenants' directories only: not another backup's staging directory.
        if !tenant.file_type().map_err(|e| io(from, e))?.is_dir()
            || crate::placement::tenant_dir_key(&tenant.file_name()).is_none()
        {
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
            stop()?;
            let file = file.map_err(|e| io(&tenant.path(), e))?;
            let name = file.file_name();
            let regular = file.file_type().is_ok_and(|t| t.is_file());
            if !regular
                || name
                    .to_string_lossy()
                    .starts_with(crate::derived::TEMP_PREFIX)
            {
                continue;
            }
            let target = dir.join(&name);
            let copy = match std::fs::hard_link(file.path(), &target) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
                Err(_) => copy_file(&file.path(), &target, stop),
            };
            copied += u64::from(copy?);
        }
        sync_dir(&dir)?;
    }
    if to.exists() {
        sync_dir(to)?;
    }
    Ok(copied)
}

/// Copies `from` into a new file `to` in chunks, asking `stop` between them, and syncs it;
/// false when `from` is gone.
fn copy_file(
    from: &Path,
    to: &Path,
    stop: &dyn Fn() -> Result<(), StoreError>,
) -> Result<bool, StoreError> {
    use std::io::{Read, Write};
    let mut src = match std::fs::File::open(from) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io(from, e)),
    };
    let mut dst = std::fs::File::create_new(to).map_err(|e| io(to, e))?;
    let mut buf = vec![0; 8 << 20];
    loop {
        let n = src.read(&mut buf).map_err(|e| io(from, e))?;
        if n == 0 {
            break;
        }
        dst.write_all(&buf[..n]).map_err(|e| io(to, e))?;
        stop()?;
    }
    dst.sync_all().map_err(|e| io(to, e))?;
    Ok(true)
}

/// `e`, once the partial directory is removed; a removal that failed is added to it (the
/// directory is left, and holds the name).
fn cleaned_up(partial: &Path, e: StoreError) -> StoreError {
    match std::fs::remove_dir_all(partial) {
        Ok(()) => e,
        Err(gone) if gone.kind() == std::io::ErrorKind::NotFound => e,
        Err(left) => StoreError::Engine(format!(
            "{e}; and its partial copy {} could not be removed ({left}): delete it",
            partial.display()
        )),
    }
}

/// Creates `dir` readable by the server's user only.
fn private_dir(dir: &Path) -> Result<(), StoreError> {
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|e| io(dir, e))
}

/// Creates `dir` and its missing ancestors, each made durable in its parent, so a backup
/// reported done survives a power loss with the directories above it.
fn create_dir_all_durably(dir: &Path) -> Result<(), StoreError> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_all_durably(parent)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => sync_parent(dir),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(io(dir, e)),
    }
}

/// Bytes of the files under `dir`, as far as they can be read (a file removed meanwhile counts
/// nothing): a figure to report, never a reason to fail.
pub fn bytes_under(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => bytes_under(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
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
