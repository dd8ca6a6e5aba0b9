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

use redb::{Database, TransactionError, WriteTransaction};

use crate::deferred_sync::FileSync;
use crate::recovery::OpenReport;

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
            }),
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
    pub(crate) fn begin_write(&self) -> Result<WriteTransaction, TransactionError> {
        let mut txn = self.database.begin_write()?;
        if self
            .fast_recovery_from
            .is_some_and(|from| self.sync.file_len() >= from)
        {
            txn.set_quick_repair(true);
        }
        Ok(txn)
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
