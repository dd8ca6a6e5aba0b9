//! An open database together with the store's handle on its file's syncs.
//!
//! They are one value behind one lock, so whoever holds a database's guard syncs that very
//! file: a vacuum (see `vacuum`) swaps the main file's database for one over a new file, and
//! every commit and fsync after it must reach the new file, never the one it replaced.
//!
//! A [`Db`] is a shared handle: a read snapshot keeps one, so that the database it reads stays
//! open after a vacuum swapped it out (closing it would end the snapshot's reads with an
//! error); the database closes when its last handle goes, which for one a vacuum swapped out
//! is the store's (see `retired`), so that a reader's thread never closes it.

use std::ops::Deref;
use std::sync::Arc;

use redb::{Database, StorageError, TransactionError, WriteTransaction};

use crate::StoreError;
use crate::deferred_sync::FileSync;
use crate::recovery::OpenReport;
use crate::row_log::{Logged, Mark, RowLog};

#[derive(Clone)]
pub(crate) struct Db {
    open: Arc<Open>,
}

pub(crate) struct Open {
    database: Database,
    /// The file's syncs (see `deferred_sync`).
    pub(crate) sync: FileSync,
    /// From this file length on, durable commits record the allocator state (see `recovery`).
    fast_recovery_from: Option<u64>,
    /// How the open went.
    pub(crate) opened: OpenReport,
    /// The main file's row log (see `row_log`); `None` for a dedicated tenant's file.
    pub(crate) log: Option<Arc<RowLog>>,
}

impl Db {
    pub(crate) fn new(
        database: Database,
        sync: FileSync,
        fast_recovery_from: Option<u64>,
        opened: OpenReport,
    ) -> Db {
        Db {
            open: Arc::new(Open {
                database,
                sync,
                fast_recovery_from,
                opened,
                log: None,
            }),
        }
    }

    /// Makes every later commit of this database keep `log`'s bookkeeping (see `row_log`);
    /// only while it has no other handle.
    pub(crate) fn attach_log(&mut self, log: Arc<RowLog>) -> Result<(), StoreError> {
        match Arc::get_mut(&mut self.open) {
            Some(open) => {
                open.log = Some(log);
                Ok(())
            }
            None => Err(StoreError::Engine(
                "the row log was attached to a database already shared".into(),
            )),
        }
    }

    /// Whether this is the database's only handle (no read snapshot holds it).
    pub(crate) fn is_last_handle(&self) -> bool {
        Arc::strong_count(&self.open) == 1
    }

    /// The database for what needs it alone (compaction); `None` while another handle (a read
    /// snapshot's) shares it.
    pub(crate) fn only_handle(&mut self) -> Option<&mut Database> {
        Arc::get_mut(&mut self.open).map(|o| &mut o.database)
    }
}

impl Deref for Db {
    type Target = Open;

    fn deref(&self) -> &Open {
        &self.open
    }
}

impl Open {
    /// Begins a write transaction, which commits durably unless made non-durable with
    /// [`crate::recovery::set_non_durable`]; on a file of at least the fast-recovery length its
    /// durable commit records the allocator state (see `recovery`). It shadows
    /// [`Database::begin_write`] for whoever holds a [`Db`], so the store's writes begin here;
    /// `recovery` lists the few durable commits that do not.
    pub(crate) fn begin_write(&self) -> Result<WriteTxn, TransactionError> {
        let mut txn = self.database.begin_write()?;
        let quick_repair = self
            .fast_recovery_from
            .is_some_and(|from| self.sync.file_len() >= from);
        if quick_repair {
            txn.set_quick_repair(true);
        }
        Ok(WriteTxn {
            txn,
            log: self.log.clone(),
            durable: true,
            quick_repair,
            sync: self.sync.clone(),
        })
    }
}

/// A write transaction of the store: redb's, whose commit keeps the row log's bookkeeping
/// when its file has one (see `row_log`: every commit of the main file records the log's
/// position). Reads and table openings go to redb's transaction (`Deref`); committing and
/// aborting only through the methods here, which shadow redb's.
pub(crate) struct WriteTxn {
    txn: WriteTransaction,
    log: Option<Arc<RowLog>>,
    /// Whether the commit syncs (see [`crate::recovery::set_non_durable`]).
    durable: bool,
    /// Whether a durable commit records the allocator state (see `recovery`).
    quick_repair: bool,
    /// The file's syncs.
    sync: FileSync,
}

/// The largest transaction whose rows go to the row log (see [`WriteTxn::commit_logged`]).
pub(crate) const MAX_LOGGED_BYTES: usize = 1 << 20;

/// How a write transaction of the store committed, and what makes it durable.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Committed {
    /// Its rows are in the row log: durable once the log is synced past them.
    Logged(Logged),
    /// Its commit synced the file.
    Synced,
    /// Durable at the next durable commit of its file (the group's).
    Unsynced,
}

impl WriteTxn {
    /// Commits, not logged.
    pub(crate) fn commit(self) -> Result<(), StoreError> {
        match &self.log {
            Some(log) => log.commit_unlogged(self.txn, self.durable),
            None => Ok(self.txn.commit()?),
        }
    }

    /// Commits a non-durable transaction whose rows `rows` (see `row_log::format`) go to the
    /// row log. Rows past [`MAX_LOGGED_BYTES`] are not logged: the transaction commits durably
    /// instead (a batch of a thousand records writes its pages once, where logging it would
    /// write it twice, to the log and at the next checkpoint). Without a log, or for a durable
    /// transaction, it commits as [`WriteTxn::commit`] does.
    pub(crate) fn commit_logged(
        mut self,
        rows: Option<&mut [u8]>,
    ) -> Result<Committed, StoreError> {
        match (&self.log, rows) {
            (Some(log), Some(rows)) if !self.durable && rows.len() <= MAX_LOGGED_BYTES => {
                log.commit_logged(self.txn, rows).map(Committed::Logged)
            }
            (Some(log), _) if !self.durable => {
                // Its sync after redb's write lock is released, as a group's is.
                self.txn.set_durability(redb::Durability::Immediate)?;
                self.txn.set_quick_repair(self.quick_repair);
                let mark = log.commit_unlogged_deferred(self.txn, &self.sync)?;
                self.sync
                    .sync_owed()
                    .map_err(|e| StoreError::Unavailable(crate::error::describe_io(&e)))?;
                log.durable_at(mark);
                Ok(Committed::Synced)
            }
            _ => {
                let durable = self.durable;
                self.commit()?;
                Ok(match durable {
                    true => Committed::Synced,
                    false => Committed::Unsynced,
                })
            }
        }
    }

    /// Whether [`WriteTxn::commit_logged`] would log: the file has a log and the commit does
    /// not sync.
    pub(crate) fn logs(&self) -> bool {
        self.log.is_some() && !self.durable
    }

    /// Commits a transaction that wrote nothing, durably, inside `deferring` (which owes the
    /// sync to later); returns what the log holds with it, if the file has a log.
    pub(crate) fn commit_empty_deferred(self, file: &FileSync) -> Result<Option<Mark>, StoreError> {
        let WriteTxn { txn, log, .. } = self;
        match log {
            Some(log) => Ok(Some(log.commit_empty(|| file.deferring(|| txn.commit()))?)),
            None => {
                file.deferring(|| txn.commit())?;
                Ok(None)
            }
        }
    }

    pub(crate) fn abort(self) -> Result<(), StorageError> {
        self.txn.abort()
    }

    /// Makes the commit not sync (see [`crate::recovery::set_non_durable`]).
    pub(crate) fn set_non_durable(&mut self) -> Result<(), redb::SetDurabilityError> {
        self.txn.set_durability(redb::Durability::None)?;
        // redb reads the allocator state's setting only in a durable commit: off, so that
        // the transaction says what it does.
        self.txn.set_quick_repair(false);
        self.durable = false;
        Ok(())
    }

    /// Sets redb's durability, which this transaction follows.
    pub(crate) fn set_durability(
        &mut self,
        durability: redb::Durability,
    ) -> Result<(), redb::SetDurabilityError> {
        self.txn.set_durability(durability)?;
        self.durable = !matches!(durability, redb::Durability::None);
        Ok(())
    }
}

impl Deref for WriteTxn {
    type Target = WriteTransaction;

    fn deref(&self) -> &WriteTransaction {
        &self.txn
    }
}

impl std::ops::DerefMut for WriteTxn {
    fn deref_mut(&mut self) -> &mut WriteTransaction {
        &mut self.txn
    }
}

impl Deref for Open {
    type Target = Database;

    fn deref(&self) -> &Database {
        &self.database
    }
}

impl Drop for Open {
    /// The database closes when this, its last handle, goes (the fields drop after this runs);
    /// see [`FileSync::settle_before_close`].
    fn drop(&mut self) {
        self.sync.settle_before_close();
    }
}
