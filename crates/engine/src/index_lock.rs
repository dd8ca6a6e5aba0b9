//! The lock around one tenant's loaded indexes, with a count of its write acquisitions.
//!
//! A search's integrity sample (`IndexRegistry::integrity_sample`) feeds the tenant's index
//! health to its tracker. Health can only change when the indexes do, and every change takes
//! the write lock, so a sample whose tracker saw the current count reuses the health it holds
//! instead of taking the read lock again: one shared lock word fewer written per search.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{
    LockResult, RwLock, RwLockReadGuard, RwLockWriteGuard, TryLockError, TryLockResult,
};

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
    /// Takes the read lock; a wait for it (a load, a write's apply or a save's capture holds
    /// it) is declared to the worker pool (`strata_sched::blocking`), which meanwhile lets
    /// another thread run other tenants' jobs. An uncontended read costs one try.
    pub fn read(&self) -> LockResult<RwLockReadGuard<'_, Option<TenantIndex>>> {
        match self.lock.try_read() {
            Ok(guard) => Ok(guard),
            Err(TryLockError::Poisoned(e)) => Err(e),
            Err(TryLockError::WouldBlock) => strata_sched::blocking(|| self.lock.read()),
        }
    }

    /// Takes the write lock, declaring a wait for it as [`IndexLock::read`] does.
    pub fn write(&self) -> LockResult<RwLockWriteGuard<'_, Option<TenantIndex>>> {
        let guard = match self.lock.try_write() {
            Ok(guard) => Ok(guard),
            Err(TryLockError::Poisoned(e)) => Err(e),
            Err(TryLockError::WouldBlock) => strata_sched::blocking(|| self.lock.write()),
        };
        self.writes.fetch_add(1, Ordering::AcqRel);
        guard
    }

    pub fn try_read(&self) -> TryLockResult<RwLockReadGuard<'_, Option<TenantIndex>>> {
        self.lock.try_read()
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
    use std::sync::Arc;
    use std::sync::TryLockError;
    use std::sync::atomic::{AtomicBool, AtomicUsize};

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

    #[test]
    fn a_panicking_writer_poisons_until_cleared_and_readers_do_not() {
        let l = Arc::new(IndexLock::default());
        let reader = Arc::clone(&l);
        let _ = std::thread::spawn(move || {
            let _g = reader.read();
            panic!("reader panics");
        })
        .join();
        assert!(!l.is_poisoned());
        assert!(l.write().is_ok());
        let writer = Arc::clone(&l);
        let _ = std::thread::spawn(move || {
            let _g = writer.write();
            panic!("writer panics");
        })
        .join();
        assert!(l.is_poisoned());
        assert!(l.read().is_err());
        assert!(matches!(l.try_write(), Err(TryLockError::Poisoned(_))));
        l.clear_poison();
        assert!(l.read().is_ok());
        assert!(l.write().is_ok());
    }

    /// The lock excludes as a read-write lock must: a writer never overlaps a reader
    /// on any thread's shard, nor another writer. Each writer makes a counter odd, then even
    /// again, within one hold; a reader that ever sees it odd overlapped a writer, and a
    /// final count short of twice the writes means two writers overlapped.
    #[test]
    fn readers_on_many_threads_never_see_a_write_in_progress() {
        const WRITERS: usize = 2;
        const WRITES: usize = 2_000;
        let l = Arc::new(IndexLock::default());
        let done = Arc::new(AtomicBool::new(false));
        let torn = Arc::new(AtomicUsize::new(0));
        let reads = Arc::new(AtomicUsize::new(0));
        let counter = Arc::new(AtomicU64::new(0));
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    while !done.load(Ordering::Acquire) {
                        let _g = l.read().unwrap();
                        // Even outside a writer's hold, by the writers' protocol below.
                        if counter.load(Ordering::Acquire) % 2 == 1 {
                            torn.fetch_add(1, Ordering::Relaxed);
                        }
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
            let writers: Vec<_> = (0..WRITERS)
                .map(|_| {
                    s.spawn(|| {
                        for _ in 0..WRITES {
                            let _g = l.write().unwrap();
                            counter.fetch_add(1, Ordering::AcqRel);
                            std::hint::spin_loop();
                            counter.fetch_add(1, Ordering::AcqRel);
                        }
                    })
                })
                .collect();
            for w in writers {
                w.join().unwrap();
            }
            done.store(true, Ordering::Release);
        });
        assert_eq!(torn.load(Ordering::Relaxed), 0);
        assert_eq!(
            counter.load(Ordering::Relaxed),
            (2 * WRITERS * WRITES) as u64
        );
        assert_eq!(l.writes(), (WRITERS * WRITES) as u64);
        assert!(reads.load(Ordering::Relaxed) > 0);
    }
}
