//! Which keys of the main file changed while a vacuum copied it, so that the vacuum's swap
//! applies only those to the new file instead of copying the whole file under the lock that
//! stops every tenant.
//!
//! Every write to a table of the main file goes through a [`Tracked`] table (the
//! [`crate::Writer`]'s four tables) or records its keys itself (a migration's chunk copied into
//! the main file, the erasure of a moved tenant's main range). Nothing enforces it: a write
//! transaction of the main file still opens a writable table directly, and [`Tracked::new`]
//! takes no recording (`None`, meant for a dedicated file) as readily for the main file. A new
//! write path of the main file must record its keys the same way; the vacuum tests that write
//! through every path while a copy runs and compare both files at the swap are what catch one
//! that does not. [`Tracked`] itself gives no mutable access to the table it wraps, so a write
//! through one is always recorded.
//! While a vacuum copies, each written key is recorded with its table's tag; a key recorded
//! more than needed only costs the vacuum one look-up (the catch-up copies the key's current
//! value, or its absence, from the main file), a key missed would be a lost write.

use std::borrow::Borrow;
use std::ops::RangeBounds;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use redb::{AccessGuard, Key, ReadableTable, StorageError, Table, Value};

use crate::tracking::Written;

/// The tag recorded before a key, naming its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum TableTag {
    Data = 0,
    Registry = 1,
    Meta = 2,
    Credentials = 3,
}

impl TableTag {
    pub(crate) fn of_byte(b: u8) -> Option<TableTag> {
        match b {
            0 => Some(TableTag::Data),
            1 => Some(TableTag::Registry),
            2 => Some(TableTag::Meta),
            3 => Some(TableTag::Credentials),
            _ => None,
        }
    }
}

/// The main file's written keys while a vacuum copies it (see the module's documentation).
#[derive(Default)]
pub(crate) struct FileWrites {
    /// Whether a vacuum records now: writes skip the lock while it is false.
    active: AtomicBool,
    written: RwLock<Option<Arc<Written>>>,
    /// The memory a recording's keys may take; 0 for the default (`tracking::MAX_BYTES`).
    /// Lowered only by tests, to reach the vacuum's fallback.
    cap: AtomicUsize,
}

impl FileWrites {
    /// Starts recording; the set is handed to the one vacuum that runs (the store runs one at
    /// a time). Recording stops when the returned guard drops.
    pub(crate) fn start(&self) -> Recording<'_> {
        let written = Arc::new(match self.cap.load(Ordering::Relaxed) {
            0 => Written::new(),
            cap => Written::with_cap(cap),
        });
        *self.written.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&written));
        self.active.store(true, Ordering::SeqCst);
        Recording {
            file: self,
            written,
        }
    }

    /// Makes later recordings give up past `cap` bytes of keys.
    #[cfg(test)]
    pub(crate) fn set_cap(&self, cap: usize) {
        self.cap.store(cap, Ordering::Relaxed);
    }

    /// Whether a vacuum records the written keys now.
    fn recording(&self) -> bool {
        self.active.load(Ordering::SeqCst)
    }

    /// Records that `key` of table `tag` is written, if a vacuum is copying.
    pub(crate) fn record(&self, tag: TableTag, key: &[u8]) {
        if !self.recording() {
            return;
        }
        let written = self.written.read().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = written.as_ref() {
            let mut tagged = Vec::with_capacity(key.len() + 1);
            tagged.push(tag as u8);
            tagged.extend_from_slice(key);
            w.record(&tagged);
        }
    }
}

/// A vacuum's recording of the main file's writes, until dropped.
pub(crate) struct Recording<'s> {
    file: &'s FileWrites,
    pub(crate) written: Arc<Written>,
}

impl Drop for Recording<'_> {
    fn drop(&mut self) {
        self.file.active.store(false, Ordering::SeqCst);
        *self.file.written.write().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// A table of a write transaction whose writes are recorded for a vacuum under way (`file`
/// is `None` for a dedicated tenant's file, which no vacuum copies). Reads go to the table
/// itself (`Deref`); there is no mutable access but through the methods below.
pub(crate) struct Tracked<'txn, K: Key + 'static, V: Value + 'static> {
    table: Table<'txn, K, V>,
    tag: TableTag,
    file: Option<&'txn FileWrites>,
    /// Calls that changed (or may have changed) the table: whether a failed closure of a
    /// batch left anything in its transaction (`batched_write`).
    changes: u64,
    /// The keys written, when the transaction's rows go to the row log (see `row_log`).
    logged: Option<Vec<Box<[u8]>>>,
}

impl<'txn, K: Key + 'static, V: Value + 'static> Tracked<'txn, K, V> {
    pub(crate) fn new(
        table: Table<'txn, K, V>,
        tag: TableTag,
        file: Option<&'txn FileWrites>,
    ) -> Self {
        Tracked {
            table,
            tag,
            file,
            changes: 0,
            logged: None,
        }
    }

    /// Keeps the keys written, for [`Tracked::log_rows`].
    pub(crate) fn logging(mut self) -> Self {
        self.logged = Some(Vec::new());
        self
    }

    /// Appends to `out` (a row log payload) each key written, with its value as the
    /// transaction now holds it, or its removal.
    pub(crate) fn log_rows(&mut self, out: &mut Vec<u8>) -> Result<(), StorageError> {
        let Some(keys) = self.logged.as_mut() else {
            return Ok(());
        };
        keys.sort_unstable();
        keys.dedup();
        for key in keys.iter() {
            let value = self.table.get(K::from_bytes(key))?;
            match value {
                Some(v) => {
                    let v = v.value();
                    crate::row_log::encode_row(out, self.tag, key, Some(V::as_bytes(&v).as_ref()));
                }
                None => crate::row_log::encode_row(out, self.tag, key, None),
            }
        }
        Ok(())
    }

    /// How many inserts, removals and retains this table has had in its transaction.
    pub(crate) fn changes(&self) -> u64 {
        self.changes
    }

    fn record(&mut self, key: &[u8]) {
        if let Some(file) = self.file {
            file.record(self.tag, key);
        }
        if let Some(keys) = self.logged.as_mut() {
            keys.push(key.into());
        }
    }

    pub(crate) fn insert<'k, 'v>(
        &mut self,
        key: impl Borrow<K::SelfType<'k>>,
        value: impl Borrow<V::SelfType<'v>>,
    ) -> Result<Option<AccessGuard<'_, V>>, StorageError> {
        self.record(K::as_bytes(key.borrow()).as_ref());
        self.changes += 1;
        self.table.insert(key, value)
    }

    pub(crate) fn remove<'a>(
        &mut self,
        key: impl Borrow<K::SelfType<'a>>,
    ) -> Result<Option<AccessGuard<'_, V>>, StorageError> {
        self.record(K::as_bytes(key.borrow()).as_ref());
        self.changes += 1;
        self.table.remove(key)
    }

    /// Removes the entries of `range` for which `keep` is false.
    pub(crate) fn retain_in<'a, KR>(
        &mut self,
        range: impl RangeBounds<KR> + 'a,
        mut keep: impl FnMut(K::SelfType<'_>, V::SelfType<'_>) -> bool,
    ) -> Result<(), StorageError>
    where
        KR: Borrow<K::SelfType<'a>> + 'a,
    {
        let tag = self.tag;
        self.changes += 1;
        // Checked once, before the first key is read: a vacuum whose recording begins
        // meanwhile waits for this transaction before its snapshot, which then holds the
        // removals.
        let file = self.file.filter(|f| f.recording());
        let Tracked { table, logged, .. } = self;
        if file.is_none() && logged.is_none() {
            return table.retain_in(range, keep);
        }
        table.retain_in(range, |k, v| {
            let bytes = K::as_bytes(&k).as_ref().to_vec();
            let kept = keep(k, v);
            if !kept {
                if let Some(file) = file {
                    file.record(tag, &bytes);
                }
                if let Some(keys) = logged.as_mut() {
                    keys.push(bytes.into());
                }
            }
            kept
        })
    }
}

impl<'txn, K: Key + 'static, V: Value + 'static> std::ops::Deref for Tracked<'txn, K, V> {
    type Target = Table<'txn, K, V>;

    fn deref(&self) -> &Self::Target {
        &self.table
    }
}
