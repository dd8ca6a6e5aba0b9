//! The lock around one tenant's loaded indexes, with a count of its write acquisitions.
//!
//! Every search takes this lock for reading, often from several threads at once. A plain
//! `RwLock` keeps one reader count, so each search writes the same cache line as every other
//! thread searching the tenant, and two threads ping-pong it. The lock is a `ShardedLock`
//! instead: a reader locks only its thread's shard (eight, cache-padded), a writer all of them,
//! so the semantics are a read-write lock's and a reader writes a line no other thread uses.
//!
//! A search's integrity sample (`IndexRegistry::integrity_sample`) feeds the tenant's index
//! health to its tracker. Health can only change when the indexes do, and every change takes
//! the write lock, so a sample whose tracker saw the current count reuses the health it holds
//! instead of taking the read lock again.
//!
//! Poisoning is kept here, as `std::sync::RwLock` has it (a writer that panicked marks the
//! lock until `clear_poison`): `ShardedLock` cannot clear its own mark, and the registry drops
//! a poisoned tenant's index once and then uses the lock again (`IndexRegistry::read_index`).

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{LockResult, PoisonError, TryLockError, TryLockResult};

use crossbeam_utils::sync::{ShardedLock, ShardedLockReadGuard, ShardedLockWriteGuard};

use crate::tenant_index::TenantIndex;

/// The slot's indexes under the read lock.
pub(crate) type IndexReadGuard<'a> = ShardedLockReadGuard<'a, Option<TenantIndex>>;

/// A lock on a tenant's `Option<TenantIndex>` that counts how often it was taken for writing.
pub(crate) struct IndexLock {
    lock: ShardedLock<Option<TenantIndex>>,
    /// Write acquisitions so far; bumped as soon as a writer holds the lock, so a value read
    /// under the read lock names exactly the indexes that reader sees.
    writes: AtomicU64,
    /// Set when a write guard is dropped while its thread panics, cleared by `clear_poison`.
    poisoned: AtomicBool,
}

impl Default for IndexLock {
    fn default() -> Self {
        Self {
            lock: ShardedLock::new(None),
            writes: AtomicU64::new(0),
            poisoned: AtomicBool::new(false),
        }
    }
}

/// The slot's indexes under the write lock; marks the lock poisoned if dropped in a panic.
pub(crate) struct IndexWriteGuard<'a> {
    guard: ShardedLockWriteGuard<'a, Option<TenantIndex>>,
    poisoned: &'a AtomicBool,
}

impl Deref for IndexWriteGuard<'_> {
    type Target = Option<TenantIndex>;

    fn deref(&self) -> &Self::Target {
        &self.guard
    }
}

impl DerefMut for IndexWriteGuard<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.guard
    }
}

impl Drop for IndexWriteGuard<'_> {
    fn drop(&mut self) {
        // Runs before the inner guard is released, so the next holder sees the mark.
        if std::thread::panicking() {
            self.poisoned.store(true, Ordering::Release);
        }
    }
}

impl IndexLock {
    pub fn read(&self) -> LockResult<IndexReadGuard<'_>> {
        // The shards' own poison is ignored: `poisoned` is the mark this lock keeps.
        let guard = self.lock.read().unwrap_or_else(PoisonError::into_inner);
        if self.is_poisoned() {
            Err(PoisonError::new(guard))
        } else {
            Ok(guard)
        }
    }

    pub fn write(&self) -> LockResult<IndexWriteGuard<'_>> {
        let guard = self.lock.write().unwrap_or_else(PoisonError::into_inner);
        self.writes.fetch_add(1, Ordering::AcqRel);
        self.wrap(guard)
    }

    pub fn try_write(&self) -> TryLockResult<IndexWriteGuard<'_>> {
        let guard = match self.lock.try_write() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => return Err(TryLockError::WouldBlock),
        };
        self.writes.fetch_add(1, Ordering::AcqRel);
        self.wrap(guard).map_err(TryLockError::Poisoned)
    }

    fn wrap<'a>(
        &'a self,
        guard: ShardedLockWriteGuard<'a, Option<TenantIndex>>,
    ) -> LockResult<IndexWriteGuard<'a>> {
        let guard = IndexWriteGuard {
            guard,
            poisoned: &self.poisoned,
        };
        if self.is_poisoned() {
            Err(PoisonError::new(guard))
        } else {
            Ok(guard)
        }
    }

    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    pub fn clear_poison(&self) {
        self.poisoned.store(false, Ordering::Release);
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
    use std::sync::atomic::AtomicUsize;

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
        assert!(matches!(l.try_write(), Err(TryLockError::WouldBlock)));
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

    /// The sharded lock excludes as a read-write lock must: a writer never overlaps a reader
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
