//! A fixed array of mutex-protected hash maps, chosen by key hash, shared by the rate limiter
//! and the in-flight counter.
//!
//! Why sharded mutexes rather than one lock or lock-free maps: every operation here is a few
//! nanoseconds of arithmetic on one small entry, so an uncontended futex mutex (~15-20 ns pair)
//! is cheap, and sharding keeps two threads working on different tenants off each other's lock
//! and cache line. Same-tenant contention is inherent (they share one bucket) and is measured
//! in `benches/admission.rs`.

use std::hash::{BuildHasher, Hash};
use std::sync::{Mutex, MutexGuard};

use foldhash::fast::RandomState;

/// Number of shards: a power of two, comfortably above the core counts Strata runs on, so two
/// busy tenants rarely share a lock.
const SHARDS: usize = 64;

/// `SHARDS` independently locked values of `T` (each typically holds a hash map).
pub(crate) struct Sharded<T> {
    /// Chooses the shard. Its random seed differs from the one in each shard's map, so keys in
    /// one shard do not all share the hash bits that hashbrown probes with.
    picker: RandomState,
    shards: Box<[Padded<Mutex<T>>]>,
}

/// Aligns each shard to its own cache-line pair so neighbouring locks do not false-share.
#[repr(align(128))]
struct Padded<T>(T);

impl<T> Sharded<T> {
    pub(crate) fn new(mut make: impl FnMut() -> T) -> Self {
        let shards = (0..SHARDS).map(|_| Padded(Mutex::new(make()))).collect();
        Self {
            picker: RandomState::default(),
            shards,
        }
    }

    /// The shard index for `key`.
    pub(crate) fn index<K: Hash + ?Sized>(&self, key: &K) -> usize {
        // Top bits of the hash: foldhash mixes them best.
        (self.picker.hash_one(key) >> (64 - SHARDS.trailing_zeros())) as usize
    }

    /// Locks shard `index`. A poisoned lock is recovered: every critical section in this crate
    /// leaves its entry consistent before anything that could panic, so the data is usable.
    pub(crate) fn lock(&self, index: usize) -> MutexGuard<'_, T> {
        match self.shards[index % SHARDS].0.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Number of shards, for sweeps that visit all of them.
    pub(crate) fn count(&self) -> usize {
        self.shards.len()
    }
}
