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
//! The copy runs while every tenant reads and writes; only the swap stops them, for a time
//! that grows with what was written during the copy, not with the file:
//! 1. the written keys of every table begin to be recorded (`file_writes`: every write path of
//!    the main file goes through a table that records them), and once the write transactions
//!    under way have ended a read snapshot is copied into `<main file>.vacuum` beside it, in
//!    a fresh database, its commits durable (fsync);
//! 2. without the lock, the keys written meanwhile are brought to their current value (or
//!    removed) in the new file from a newer snapshot, and the new file is compacted;
//! 3. under the main database's write lock (no transaction begins meanwhile, none is under
//!    way), the keys written since step 2 are brought up to date the same way; then the new
//!    file is renamed over the main file, the directory synced, and the new database takes
//!    the old one's place. Past the recording's memory cap (a copy during which about a
//!    million keys were written) steps 1 and 2 are tried again with a fresh recording, up to
//!    three copies in all; after that step 3 copies the whole file instead, as every vacuum
//!    once did (logged as a warning): slower, never a lost write.
//!
//! A read snapshot keeps a handle on the database it reads (`db`): one begun before the swap
//! goes on reading the old file, as an older snapshot; the old database (and its file, which no
//! name reaches any more) is closed after the last of them has ended, by the next commit or
//! vacuum (`retired`), never on a reader's thread. So the vacuum waits for no reader.
//!
//! What the new file holds: the rows alive in the snapshot, and the later writes. A row erased
//! before the vacuum began (a purge's, which vacuums after its erasure) is in no snapshot, so
//! no byte of it reaches the new file. A row erased while the copy runs is removed from the
//! new file by the catch-up, but the new database may keep its old bytes in a freed page or a
//! page's unused tail; such an erasure, when it is a purge's, is followed by that purge's own
//! vacuum, which waits for this one (vacuums run one at a time) and copies from a snapshot
//! without the row.
//!
//! A purge erases its tenant's range after its own transaction, in short transactions
//! (`owed_erasure`); a vacuum first finishes every such erasure still owed, before it copies,
//! so that its new file holds none of a purged range whatever cut the erasure short.
//!
//! The record of a vacuum owed (`Writer::set_compaction_owed`, set by an erasure in its own
//! transaction) is settled here, at the swap, and only when no write of it was recorded during
//! the copy: the new file then holds it cleared. One set during the copy is an erasure whose
//! bytes may be in the new file's free pages; it stays set, for that erasure's own vacuum (or
//! the next start) to settle ([`Vacuumed::Done`]'s `settled`). A caller that cleared it after
//! the vacuum instead could clear an erasure's record before the erasure's own vacuum ran.
//!
//! A crash before the rename leaves the main file whole, and perhaps a partial new file, which
//! the next open deletes without reading it ([`remove_leftover`]); after the rename the main
//! file is the complete new one. Every write committed before the swap is in the new file,
//! even one whose group's fsync had not run yet: the copy and the catch-ups read the latest
//! commits, and their own commits are durable.

use std::path::{Path, PathBuf};

use redb::{
    Database, Durability, Key, MultimapTableHandle, ReadOnlyTable, ReadTransaction,
    ReadableDatabase, ReadableTable, Table, TableDefinition, TableHandle, Value,
};

use crate::db::{Db, Open};
use crate::deferred_sync::write_path;
use crate::file_writes::{Recording, TableTag};
use crate::tables::{
    COMPACTION_OWED, CREDENTIALS, DATA, META, REGISTRY, open_database, refuse_after_failed_sync,
};
use crate::{Store, StoreError};

/// Online copies tried before a vacuum copies the whole file under the write lock, when each
/// one saw more keys written than its recording keeps.
const ONLINE_TRIES: u32 = 3;

/// The new file's name is the main file's with this appended.
const SUFFIX: &str = ".vacuum";

/// Bytes (keys and values) copied per transaction into the new file: bounds the engine's write
/// buffer whatever the file's size.
const CHUNK_BYTES: usize = 32 << 20;

/// How a vacuum ended, when nothing failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vacuumed {
    /// The main file is a new one, holding the live rows and nothing else.
    Done {
        /// Whether the new file holds no vacuum owed: true unless an erasure recorded one
        /// while the copy ran (see the module's documentation), which its own vacuum settles.
        settled: bool,
    },
}

/// The new file a vacuum of the main file at `path` writes.
pub(crate) fn new_file_of(path: &Path) -> PathBuf {
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
    /// Rewrites the main file into a new one (see the module's documentation). Reads and
    /// writes of the main file go on while it copies; they pause only for the swap, which
    /// applies the keys written during the copy. Dedicated tenants' files are not touched.
    pub fn vacuum(&self) -> Result<Vacuumed, StoreError> {
        self.vacuum_hooked(Hooks::default())
    }

    /// [`Store::vacuum`], running `during_copy` once the copy of the snapshot is written and
    /// before its catch-up (in the first online copy only), and `before_swap` with the old and the new database once the new
    /// one is complete, under the lock: what tests use to write while the copy is under way
    /// and to compare both files.
    #[cfg(test)]
    pub(crate) fn vacuum_with(
        &self,
        during_copy: impl FnOnce(),
        before_swap: impl FnOnce(&Database, &Database),
    ) -> Result<Vacuumed, StoreError> {
        let mut during_copy = Some(during_copy);
        self.vacuum_hooked(Hooks {
            during_copy: Some(Box::new(move || {
                if let Some(hook) = during_copy.take() {
                    hook();
                }
            })),
            before_swap: Some(Box::new(before_swap)),
            ..Hooks::default()
        })
    }

    fn vacuum_hooked(&self, mut hooks: Hooks<'_>) -> Result<Vacuumed, StoreError> {
        // One at a time: the written keys are recorded for one vacuum. A purge that erased
        // rows while another vacuum copied waits here, and its own vacuum then copies from a
        // snapshot without them.
        let _one = self.vacuuming.lock().unwrap_or_else(|e| e.into_inner());
        // A purge's range still owed its erasure (a crash or failure cut it short) is erased
        // first, in short transactions: the new file must hold none of it.
        self.erase_owed_ranges_holding_guard(crate::owed_erasure::ERASE_CHUNK_KEYS, &mut || {})?;
        let _writing = write_path();
        refuse_after_failed_sync(&self.db().sync)?;
        let new_path = new_file_of(&self.path);
        // A leftover of an earlier vacuum that failed: never data.
        remove_leftover(&self.path)?;
        // An old file whose last reader has ended since: its disk blocks go before this copy
        // needs room.
        self.retired.close_unread();
        // A copy that filled the disk would fail the tenants' writes (`disk_room`).
        crate::disk_room::require_room(self.data_dir(), self.db().sync.file_len(), "a vacuum")?;
        let mut tries = 0;
        let (recording, copied) = loop {
            tries += 1;
            let recording = self.file_writes.start();
            run(&mut hooks.after_start);
            match self.copy_and_catch_up(&new_path, &recording, &mut hooks) {
                Ok(Some(copied)) => break (recording, Some(copied)),
                // Too many keys written during this copy (a burst of writes, most often):
                // another online copy, with a fresh recording, before the whole copy under
                // the lock that stops every tenant.
                Ok(None) if tries < ONLINE_TRIES => {
                    drop(recording);
                    remove_leftover(&self.path)?;
                }
                Ok(None) => break (recording, None),
                Err(e) => {
                    // The main file is untouched; the partial copy goes (or, if even that
                    // fails, at the next vacuum or start).
                    let _ = std::fs::remove_file(&new_path);
                    return Err(copy_failed(e));
                }
            }
        };
        run(&mut hooks.before_lock);
        // The swap: no transaction of the main file begins until the new database is in place.
        let mut db = self.db.write().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = refuse_after_failed_sync(&db.sync) {
            drop(copied);
            let _ = std::fs::remove_file(&new_path);
            return Err(e);
        }
        // The keys written since the last catch-up, by transactions that have all ended (each
        // holds the database's guard until its commit).
        let fresh = match (copied, recording.written.take()) {
            (Some((fresh, owed_written)), Some(keys)) => {
                // Settled only if no erasure set the record since the snapshot: one that did
                // may have left bytes in the new file's free pages.
                let settled = !owed_written && !keys.contains(&owed_key());
                // The row log's position, which every commit writes beside its rows.
                let mut keys = keys;
                keys.extend(crate::row_log::tagged_meta_keys());
                db.begin_read()
                    .map_err(StoreError::from)
                    .and_then(|src| catch_up(&src, &fresh, &keys, settled))
                    .map(|_| (fresh, settled))
            }
            // Too many keys were written during the copy to keep them: the whole file is
            // copied again, under the lock, as every vacuum once did; its snapshot holds
            // every erasure, so the record is settled.
            (copied, _) => {
                tracing::warn!(
                    tries,
                    "vacuum: too many keys written during each online copy to keep them; \
                     copying the whole file under the write lock (every tenant waits)"
                );
                run(&mut hooks.whole_copy);
                drop(copied);
                let _ = std::fs::remove_file(&new_path);
                self.write_new_file(&db, &new_path).and_then(|fresh| {
                    catch_up(&db.begin_read()?, &fresh, &[], true).map(|_| (fresh, true))
                })
            }
        };
        drop(recording);
        let (mut fresh, settled) = match fresh {
            Ok(fresh) => fresh,
            Err(e) => {
                let _ = std::fs::remove_file(&new_path);
                return Err(copy_failed(e));
            }
        };
        if let Some(before_swap) = hooks.before_swap.take() {
            before_swap(&db, &fresh);
        }
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
        // Every commit from now on keeps the log's bookkeeping in the new file; it holds the
        // log's position as the old one did (copied under this lock).
        let attached = match &self.log {
            Some(log) => fresh.attach_log(std::sync::Arc::clone(log)),
            None => Ok(()),
        };
        let old = std::mem::replace(&mut *db, fresh);
        if let Err(e) = &attached {
            db.sync.fail(&std::io::Error::other(e.to_string()));
        }
        if let Err(e) = &dir_synced {
            // A crash could still bring the old file back under the name, without every write
            // committed from now on: refuse them until a restart.
            db.sync.fail(e);
        }
        drop(db);
        // A snapshot begun on the old database before the swap keeps reading it (an older
        // snapshot, as any other) until it ends. Closed here when none does (closing writes
        // to the old file only), else by a later commit once they have ended (`retired`).
        self.retired.park(old);
        self.retired.close_unread();
        // The file now refuses writes until a restart (above): a retry could not help.
        dir_synced.map_err(|e| {
            StoreError::Unavailable(format!(
                "syncing the data directory after the vacuum: {}",
                crate::error::describe_io(&e)
            ))
        })?;
        attached?;
        self.vacuums
            .fetch_add(1, std::sync::atomic::Ordering::Release);
        // The row log may still hold rows the vacuum was for (a purged tenant's): emptied.
        if let Some(log) = &self.log {
            // A failed flush or durable commit in it fails the main file (`RowLog::on_failure`).
            log.scrub(&|| crate::tables::sync(&self.db, &self.commits).map(|_| ()))?;
        }
        Ok(Vacuumed::Done { settled })
    }

    /// How many vacuums rewrote the main file since the store opened.
    pub fn vacuums(&self) -> u64 {
        self.vacuums.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The unlocked part of a vacuum: the new file at `path` written from a snapshot of the
    /// main file, then caught up with the keys written meanwhile, while every reader and
    /// writer goes on. With the new database, whether the record of a vacuum owed was written
    /// meanwhile. `None` when too many keys were written to keep them (the swap then copies
    /// the whole file).
    fn copy_and_catch_up(
        &self,
        path: &Path,
        recording: &Recording<'_>,
        hooks: &mut Hooks<'_>,
    ) -> Result<Option<(Db, bool)>, StoreError> {
        // The snapshot begins once every write transaction under way has ended: one that
        // recorded nothing (it wrote before the recording began) is in the snapshot.
        self.wait_for_writes_under_way()?;
        let src = self.db().begin_read()?;
        let mut fresh = open_database(path, self.file_options())?;
        let dir = self.data_dir();
        copy_tables(&src, &fresh, &|_| {
            crate::disk_room::keep_reserve(dir, "a vacuum")
        })?;
        if let Some(during_copy) = hooks.during_copy.as_mut() {
            during_copy();
        }
        drop(src);
        // A first catch-up without the lock, so that the swap applies only what was written
        // during this one. The keys are taken before the snapshot is: a write that recorded a
        // key before it was taken commits before the snapshot begins (the wait), one that
        // records it after is caught up at the swap.
        let Some(keys) = recording.written.take() else {
            return Ok(None);
        };
        self.wait_for_writes_under_way()?;
        let src = self.db().begin_read()?;
        catch_up(&src, &fresh, &keys, false)?;
        drop(src);
        compact_new(&mut fresh)?;
        Ok(Some((fresh, keys.contains(&owed_key()))))
    }

    /// Returns once every write transaction of the main file begun before it has ended (a
    /// write transaction begins only once the previous one has ended).
    fn wait_for_writes_under_way(&self) -> Result<(), StoreError> {
        let _writing = write_path();
        self.db().begin_write()?.abort()?;
        Ok(())
    }

    /// Copies every table of `old` into a new database at `path`, durably: the whole copy,
    /// under the caller's lock.
    fn write_new_file(&self, old: &Database, path: &Path) -> Result<Db, StoreError> {
        let mut fresh = open_database(path, self.file_options())?;
        let dir = self.data_dir();
        copy_tables(&old.begin_read()?, &fresh, &|_| {
            crate::disk_room::keep_reserve(dir, "a vacuum")
        })?;
        compact_new(&mut fresh)?;
        Ok(fresh)
    }
}

/// What tests run at the steps of a vacuum (none, outside tests): to write while it copies,
/// and to compare the old and the new file before the swap.
#[derive(Default)]
pub(crate) struct Hooks<'h> {
    /// Once the keys are recorded, before the snapshot is taken.
    pub(crate) after_start: Option<Box<dyn FnOnce() + 'h>>,
    /// Once the snapshot is copied, before the first catch-up: in each online copy.
    pub(crate) during_copy: Option<Box<dyn FnMut() + 'h>>,
    /// After the first catch-up, before the lock is taken.
    pub(crate) before_lock: Option<Box<dyn FnOnce() + 'h>>,
    /// When the whole file is copied under the lock (every online copy saw too many writes).
    pub(crate) whole_copy: Option<Box<dyn FnOnce() + 'h>>,
    /// With the old and the new database, under the lock, before the rename.
    pub(crate) before_swap: Option<Box<Compare<'h>>>,
}

/// A test's look at the old and the new database before the swap.
type Compare<'h> = dyn FnOnce(&Database, &Database) + 'h;

/// Runs `hook`, if there is one, once.
fn run(hook: &mut Option<Box<dyn FnOnce() + '_>>) {
    if let Some(hook) = hook.take() {
        hook();
    }
}

/// Compacts the new file, which nothing else reads yet: the copy's own transactions leave free
/// pages and regions grown ahead of need.
fn compact_new(fresh: &mut Db) -> Result<(), StoreError> {
    let Some(database) = fresh.only_handle() else {
        return Err(StoreError::Engine(
            "a vacuum's new database is shared before its swap".into(),
        ));
    };
    while database.compact()? {}
    Ok(())
}

/// Copies every table of snapshot `src` into `fresh`, telling `copied` the rows of each
/// chunk as it commits; an error from `copied` stops the copy with that error.
pub(crate) fn copy_tables(
    src: &ReadTransaction,
    fresh: &Database,
    copied: &dyn Fn(u64) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    // The tables the main file holds; a file holding any other is refused, as the copy would
    // lose it.
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
    copy_table(src, fresh, DATA, copied)?;
    copy_table(src, fresh, REGISTRY, copied)?;
    copy_table(src, fresh, META, copied)?;
    copy_table(src, fresh, CREDENTIALS, copied)?;
    Ok(())
}

/// The record of a vacuum owed as the file's writes record it (tagged, see `file_writes`).
fn owed_key() -> Vec<u8> {
    let mut key = vec![TableTag::Meta as u8];
    key.extend_from_slice(COMPACTION_OWED.as_bytes());
    key
}

/// Makes `fresh`'s rows of `keys` (each tagged with its table, see `file_writes`) what they
/// are in snapshot `src`: written, or removed when `src` lacks them; with `settle`, clears the
/// record of a vacuum owed in `fresh`. Returns how many rows changed. One durable transaction,
/// begun through the store's handle so that it records the allocator state of a large file (the
/// last durable commit before the swap, see `recovery`).
fn catch_up(
    src: &ReadTransaction,
    fresh: &Open,
    keys: &[Vec<u8>],
    settle: bool,
) -> Result<u64, StoreError> {
    let mut txn = fresh.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    let mut changed = 0;
    {
        let from = (
            src.open_table(DATA)?,
            src.open_table(REGISTRY)?,
            src.open_table(META)?,
            src.open_table(CREDENTIALS)?,
        );
        let mut to = (
            txn.open_table(DATA)?,
            txn.open_table(REGISTRY)?,
            txn.open_table(META)?,
            txn.open_table(CREDENTIALS)?,
        );
        for tagged in keys {
            let Some((&tag, key)) = tagged.split_first() else {
                return Err(StoreError::Engine("a vacuum recorded an empty key".into()));
            };
            // The text keys were recorded from `&str`s; checked, as decoding them unchecked
            // would panic on anything else.
            let text = || {
                std::str::from_utf8(key).map_err(|_| {
                    StoreError::Engine("a vacuum recorded a text key that is not UTF-8".into())
                })
            };
            let wrote = match TableTag::of_byte(tag) {
                Some(TableTag::Data) => same_as(&from.0, &mut to.0, key)?,
                Some(TableTag::Registry) => same_as(&from.1, &mut to.1, text()?.as_bytes())?,
                Some(TableTag::Meta) => same_as(&from.2, &mut to.2, text()?.as_bytes())?,
                Some(TableTag::Credentials) => same_as(&from.3, &mut to.3, text()?.as_bytes())?,
                None => {
                    return Err(StoreError::Engine(format!(
                        "a vacuum recorded a key of an unknown table, tag {tag}"
                    )));
                }
            };
            changed += u64::from(wrote);
        }
        // Written only when set, so that a file which never owed one stays as it was.
        if settle && to.2.get(COMPACTION_OWED)?.is_some_and(|v| v.value() != 0) {
            to.2.insert(COMPACTION_OWED, 0)?;
            changed += 1;
        }
    }
    txn.commit()?;
    Ok(changed)
}

/// Makes `dst`'s row of `key` (as its table encodes it) what `src`'s is; returns whether that
/// changed `dst`.
fn same_as<K: Key + 'static, V: Value + 'static>(
    src: &ReadOnlyTable<K, V>,
    dst: &mut Table<'_, K, V>,
    key: &[u8],
) -> Result<bool, StoreError> {
    let k = K::from_bytes(key);
    let have = dst
        .get(&k)?
        .map(|v| V::as_bytes(&v.value()).as_ref().to_vec());
    match src.get(&k)? {
        Some(want) => {
            let want = want.value();
            if have.as_deref() == Some(V::as_bytes(&want).as_ref()) {
                return Ok(false);
            }
            dst.insert(&k, &want)?;
        }
        None => {
            if have.is_none() {
                return Ok(false);
            }
            dst.remove(&k)?;
        }
    }
    Ok(true)
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

/// Rows copied between two calls of a copy's `copied` (see [`copy_table`]).
const REPORT_ROWS: u64 = 8_192;

/// Copies table `def` from `src` into `dst`, in durable transactions of about [`CHUNK_BYTES`],
/// telling `copied` the rows as they are copied, every [`REPORT_ROWS`] and at each commit (its
/// error stops the copy; rows told but not yet committed then go with the transaction).
fn copy_table<K: Key + 'static, V: Value + 'static>(
    src: &ReadTransaction,
    dst: &Database,
    def: TableDefinition<K, V>,
    copied: &dyn Fn(u64) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let from = src.open_table(def)?;
    let mut rows = from.iter()?;
    let mut done = false;
    while !done {
        let mut txn = dst.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        let mut chunk_rows = 0;
        {
            let mut to = txn.open_table(def)?;
            let mut bytes = 0;
            done = true;
            for row in rows.by_ref() {
                let (k, v) = row?;
                let (k, v) = (k.value(), v.value());
                bytes += K::as_bytes(&k).as_ref().len() + V::as_bytes(&v).as_ref().len();
                to.insert(k, v)?;
                chunk_rows += 1;
                // Told as it goes, not only per chunk (which may hold a million small rows),
                // so that progress moves and a stop is heard within moments.
                if chunk_rows == REPORT_ROWS {
                    copied(chunk_rows)?;
                    chunk_rows = 0;
                }
                if bytes >= CHUNK_BYTES {
                    done = false;
                    break;
                }
            }
        }
        txn.commit()?;
        copied(chunk_rows)?;
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

#[cfg(test)]
mod online_tests;
