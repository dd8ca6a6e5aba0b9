//! The lock around one tenant's loaded indexes, with a count of its write acquisitions.
//!
//! A search's integrity sample (`IndexRegistry::integrity_sample`) feeds the tenant's index
//! health to its tracker. Health can only change when the indexes do, and every change takes
//! the write lock, so a sample whose tracker saw the current count reuses the health it holds
//! instead of taking the read lock again: one shared lock word fewer written per search.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LockResult, RwLock, RwLockReadGuard, RwLockWriteGuard, TryLockResult};

use crate::tenant_index::TenantIndex;

/// `RwLock<Option<TenantIndex>>` that counts how often it was taken for writing.
#[derive(Default)]
pub(crate) struct IndexLock {
    lock: RwLock<Option<TenantIndex>>,
    /// Write acquisitions so far; bumped as soon as a writer holds the lock, so a value read
    /// under the read lock names exactly the indexes that reader sees.
    writes: AtomicU64,
}

impl IndexLock {
    pub fn read(&self) -> LockResult<RwLockReadGuard<'_, Option<TenantIndex>>> {
        self.lock.read()
    }

    pub fn write(&self) -> LockResult<RwLockWriteGuard<'_, Option<TenantIndex>>> {
        let guard = self.lock.write();
        self.writes.fetch_add(1, Ordering::AcqRel);
        guard
    }

    pub fn try_write(&self) -> TryLockResult<RwLockWriteGuard<'_, Option<TenantIndex>>> {
        let guard = self.lock.try_write();
        if !matches!(guard, Err(std::sync::TryLockError::WouldBlock)) {
            self.writes.fetch_add(1, Ordering::AcqRel);
        }
        guard
    }

    pub fn is_poisoned(&self) -> bool {
        self.lock.is_poisoned()
    }

    pub fn clear_poison(&self) {
        self.lock.clear_poison();
    }

    /// Write acquisitions so far. Read while holding the read lock, it is stable; read
    /// without, it tells whether any writer took the lock since an earlier reading.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_write_acquisition_is_counted_and_reads_are_not() {
        let l = IndexLock::default();
        assert_eq!(l.writes(), 0);
        drop(l.read().unwrap());
        assert_eq!(l.writes(), 0);
        drop(l.write().unwrap());
        assert_eq!(l.writes(), 1);
        drop(l.try_write().unwrap());
        assert_eq!(l.writes(), 2);
        // A try that fails takes nothing and counts nothing.
        let reader = l.read().unwrap();
        assert!(l.try_write().is_err());
        drop(reader);
        assert_eq!(l.writes(), 2);
    }
}
