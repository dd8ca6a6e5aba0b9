//! A vacuum: the main file rewritten into a new one, so that no old copy of an erased row is
//! left anywhere in it.
//!
//! Why compaction is not enough: the storage engine (redb 4.6, `PagedCachedFile::write`) builds
//! a new page in the cached buffer of the freed page at the same offset without clearing it,
//! so the part of a live page its new contents leave unused can keep an older copy of a row (a
//! purged tenant's registry row, rewritten many times). Compaction moves and frees pages, but
//! those bytes sit inside live ones. A new database over a new file starts with an empty
//! cache: every page it writes is built from zeros or from its own writes of the rows alive
//! when it is written, so an erased row reaches it through no path.
//!
//! Under the main database's write lock (no transaction begins meanwhile), and only when no
//! read transaction is in flight (a long export holds one: the vacuum then reports
//! [`Vacuumed::ReadersInFlight`] and is tried again later, as compaction is):
//! 1. every table is copied into `<main file>.vacuum` beside it, in a fresh database, its
//!    commits durable (fsync);
//! 2. that file is renamed over the main file, and the directory synced;
//! 3. the new database takes the old one's place under the lock; the old one closes (what it
//!    writes while closing reaches the old file, which no name reaches any more).
//!
//! A crash before the rename leaves the main file whole, and perhaps a partial new file, which
//! the next open deletes without reading it ([`remove_leftover`]); after the rename the main
//! file is the complete new one. Every write committed before the vacuum is in the new file,
//! even one whose group's fsync had not run yet: the copy reads the latest commit, and its own
//! commits are durable.

use std::path::{Path, PathBuf};

use redb::{
    Database, Durability, Key, MultimapTableHandle, ReadTransaction, ReadableDatabase,
    ReadableTable, TableDefinition, TableHandle, Value,
};

use crate::deferred_sync::write_path;
use crate::tables::{CREDENTIALS, DATA, META, REGISTRY, open_database, refuse_after_failed_sync};
use crate::{Store, StoreError};

/// The new file's name is the main file's with this appended.
const SUFFIX: &str = ".vacuum";

/// Bytes (keys and values) copied per transaction into the new file: bounds the engine's write
/// buffer whatever the file's size.
const CHUNK_BYTES: usize = 32 << 20;

/// How a vacuum ended, when nothing failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vacuumed {
    /// The main file is a new one, holding the live rows and nothing else.
    Done,
    /// A read transaction was in flight (a long export): nothing changed; try again later.
    ReadersInFlight,
}

/// The new file a vacuum of the main file at `path` writes.
fn new_file_of(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(SUFFIX);
    path.with_file_name(name)
}

fn io(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Before the main file at `path` is opened: deletes what a vacuum cut short by a crash left
/// (its new file, never renamed, so never the data). Never opened: it may be partial.
pub(crate) fn remove_leftover(path: &Path) -> Result<(), StoreError> {
    let leftover = new_file_of(path);
    match std::fs::remove_file(&leftover) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(&leftover, e)),
    }
}

impl Store {
    /// Rewrites the main file into a new one (see the module's documentation). Blocks every
    /// transaction of the main file meanwhile, for a time proportional to its size; dedicated
    /// tenants' files are not touched.
    pub fn vacuum(&self) -> Result<Vacuumed, StoreError> {
        let _writing = write_path();
        let mut db = self.db.write().unwrap_or_else(|e| e.into_inner());
        refuse_after_failed_sync(&db.sync)?;
        // redb tells whether a read transaction is in flight only through compaction, which
        // refuses while one is; one step of it is the check (and leaves less to copy).
        match db.compact() {
            Ok(_) => {}
            Err(redb::CompactionError::TransactionInProgress) => {
                return Ok(Vacuumed::ReadersInFlight);
            }
            Err(e) => return Err(e.into()),
        }
        let new_path = new_file_of(&self.path);
        // A leftover of an earlier vacuum that failed: never data.
        remove_leftover(&self.path)?;
        let fresh = match self.write_new_file(&db, &new_path) {
            Ok(fresh) => fresh,
            Err(e) => {
                // The main file is untouched; the partial copy goes (or, if even that fails,
                // at the next vacuum or start).
                let _ = std::fs::remove_file(&new_path);
                return Err(copy_failed(e));
            }
        };
        // The new file holds every tenant's data and the credentials: it keeps the access the
        // operator gave the old one (created anew, it would have the default mode).
        if let Ok(meta) = std::fs::metadata(&self.path) {
            let _ = std::fs::set_permissions(&new_path, meta.permissions());
        }
        if let Err(e) = std::fs::rename(&new_path, &self.path) {
            drop(fresh);
            let _ = std::fs::remove_file(&new_path);
            return Err(io(&self.path, e));
        }
        // From here the main file's name reaches the new file: the new database must take the
        // old one's place whatever happens, or later writes would go to a file no name reaches.
        let dir_synced = sync_dir(&self.path);
        let old = std::mem::replace(&mut *db, fresh);
        if let Err(e) = &dir_synced {
            // A crash could still bring the old file back under the name, without every write
            // committed from now on: refuse them until a restart.
            db.sync.fail(e);
        }
        drop(db);
        // Closing the old database writes to the old file only.
        drop(old);
        // The file now refuses writes until a restart (above): a retry could not help.
        dir_synced.map_err(|e| {
            StoreError::Unavailable(format!(
                "syncing the data directory after the vacuum: {}",
                crate::error::describe_io(&e)
            ))
        })?;
        self.vacuums
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Vacuumed::Done)
    }

    /// How many vacuums rewrote the main file since the store opened.
    pub fn vacuums(&self) -> u64 {
        self.vacuums.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Copies every table of `old` into a new database at `path`, durably.
    fn write_new_file(&self, old: &Database, path: &Path) -> Result<crate::db::Db, StoreError> {
        let fresh = open_database(path, self.cache_bytes())?;
        let src = old.begin_read()?;
        // The tables the main file holds; a file holding any other is refused, as the copy
        // would lose it.
        let known = [
            DATA.name(),
            REGISTRY.name(),
            META.name(),
            CREDENTIALS.name(),
        ];
        for table in src.list_tables()? {
            if !known.contains(&table.name()) {
                return Err(StoreError::Corrupt(format!(
                    "the data file holds a table this version does not know, {:?}; not \
                     vacuumed, so as not to lose it",
                    table.name()
                )));
            }
        }
        if let Some(table) = src.list_multimap_tables()?.next() {
            return Err(StoreError::Corrupt(format!(
                "the data file holds a multimap table, {:?}; not vacuumed, so as not to lose it",
                table.name()
            )));
        }
        copy_table(&src, &fresh, DATA)?;
        copy_table(&src, &fresh, REGISTRY)?;
        copy_table(&src, &fresh, META)?;
        copy_table(&src, &fresh, CREDENTIALS)?;
        drop(src);
        // The copy's own transactions leave free pages and regions grown ahead of need; a
        // compaction of the new file (nothing reads it yet) returns them.
        let mut fresh = fresh;
        while fresh.compact()? {}
        Ok(fresh)
    }
}

/// A failed copy leaves the main file as it was: even a full disk or an I/O error while writing
/// the new file is not a failure of the main file ([`StoreError::Unavailable`] would refuse
/// every later write, and stop the next start), only a vacuum to try again later.
fn copy_failed(e: StoreError) -> StoreError {
    match e {
        StoreError::Unavailable(why) => {
            StoreError::Engine(format!("vacuum: writing the new data file: {why}"))
        }
        other => other,
    }
}

/// Copies table `def` from `src` into `dst`, in durable transactions of about [`CHUNK_BYTES`].
fn copy_table<K: Key + 'static, V: Value + 'static>(
    src: &ReadTransaction,
    dst: &Database,
    def: TableDefinition<K, V>,
) -> Result<(), StoreError> {
    let from = src.open_table(def)?;
    let mut rows = from.iter()?;
    let mut done = false;
    while !done {
        let mut txn = dst.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let mut to = txn.open_table(def)?;
            let mut bytes = 0;
            done = true;
            for row in rows.by_ref() {
                let (k, v) = row?;
                let (k, v) = (k.value(), v.value());
                bytes += K::as_bytes(&k).as_ref().len() + V::as_bytes(&v).as_ref().len();
                to.insert(k, v)?;
                if bytes >= CHUNK_BYTES {
                    done = false;
                    break;
                }
            }
        }
        txn.commit()?;
    }
    Ok(())
}

/// Makes a rename in the directory of `path` durable.
fn sync_dir(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::File::open(dir)?.sync_all(),
        _ => std::fs::File::open(".")?.sync_all(),
    }
}

#[cfg(test)]
mod tests;
