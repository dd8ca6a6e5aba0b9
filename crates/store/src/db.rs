//! An open database together with the store's handle on its file's syncs.
//!
//! They are one value behind one lock, so whoever holds a database's guard syncs that very
//! file: a vacuum (see `vacuum`) swaps the main file's database for one over a new file, and
//! every commit and fsync after it must reach the new file, never the one it replaced.

use std::ops::{Deref, DerefMut};

use redb::Database;

use crate::deferred_sync::FileSync;

pub(crate) struct Db {
    database: Database,
    /// The file's syncs (see `deferred_sync`).
    pub(crate) sync: FileSync,
}

impl Db {
    pub(crate) fn new(database: Database, sync: FileSync) -> Db {
        Db { database, sync }
    }
}

impl Deref for Db {
    type Target = Database;

    fn deref(&self) -> &Database {
        &self.database
    }
}

impl DerefMut for Db {
    fn deref_mut(&mut self) -> &mut Database {
        &mut self.database
    }
}

impl Drop for Db {
    /// The database closes when this, its last handle, goes (the fields drop after this runs);
    /// see [`FileSync::settle_before_close`].
    fn drop(&mut self) {
        self.sync.settle_before_close();
    }
}
