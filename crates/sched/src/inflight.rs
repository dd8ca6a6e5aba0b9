//! Per-tenant concurrency caps with RAII permits.
//!
//! A tenant's entry exists only while it has a request in flight: the last [`Permit`] to drop
//! removes it, so memory is bounded by the number of requests in flight, with no sweeping.
//! Counting under the shard mutex (rather than an atomic per tenant) is what makes that removal
//! race-free: an acquire can never increment a counter that a concurrent release is deleting.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use foldhash::fast::RandomState;

use crate::error::Busy;
use crate::shard::Sharded;

type Counts<K> = HashMap<K, u32, RandomState>;

/// Per-tenant in-flight counters. Cheap to clone (shared state).
pub struct InFlight<K> {
    shards: Arc<Sharded<Counts<K>>>,
}

impl<K> Clone for InFlight<K> {
    fn clone(&self) -> Self {
        Self {
            shards: Arc::clone(&self.shards),
        }
    }
}

impl<K: Hash + Eq + Clone> Default for InFlight<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Hash + Eq + Clone> InFlight<K> {
    /// No requests in flight.
    pub fn new() -> Self {
        Self {
            shards: Arc::new(Sharded::new(
                || HashMap::with_hasher(RandomState::default()),
            )),
        }
    }

    /// Takes one of `key`'s `max` slots, or reports [`Busy`] if all are taken. The cap is an
    /// argument so a changed `max_concurrent` applies to the next acquire; lowering it below
    /// the current count refuses new work until enough permits drop.
    pub fn try_acquire(&self, key: &K, max: u32) -> Result<Permit<K>, Busy> {
        let shard = self.shards.index(key);
        let mut counts = self.shards.lock(shard);
        let in_flight = counts.get(key).copied().unwrap_or(0);
        if in_flight >= max {
            return Err(Busy { in_flight, max });
        }
        counts.insert(key.clone(), in_flight + 1);
        drop(counts);
        Ok(Permit {
            shards: Arc::clone(&self.shards),
            shard,
            key: key.clone(),
        })
    }

    /// Requests `key` has in flight now.
    pub fn in_flight(&self, key: &K) -> u32 {
        let shard = self.shards.index(key);
        self.shards.lock(shard).get(key).copied().unwrap_or(0)
    }

    /// Number of tenants with at least one request in flight.
    pub fn tenants(&self) -> usize {
        (0..self.shards.count())
            .map(|i| self.shards.lock(i).len())
            .sum()
    }
}

/// One slot of a tenant's in-flight cap; released when dropped. `Send`, so it can be held
/// across `.await` for the whole request.
pub struct Permit<K: Hash + Eq> {
    shards: Arc<Sharded<Counts<K>>>,
    shard: usize,
    key: K,
}

impl<K: Hash + Eq> Drop for Permit<K> {
    fn drop(&mut self) {
        let mut counts = self.shards.lock(self.shard);
        if let Some(n) = counts.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

impl<K: Hash + Eq + fmt::Debug> fmt::Debug for Permit<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit").field("key", &self.key).finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Barrier;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[test]
    fn cap_and_release_on_drop() {
        let inf = InFlight::new();
        let a = inf.try_acquire(&1u64, 2).unwrap();
        let b = inf.try_acquire(&1, 2).unwrap();
        assert_eq!(
            inf.try_acquire(&1, 2).unwrap_err(),
            Busy {
                in_flight: 2,
                max: 2
            }
        );
        assert!(
            inf.try_acquire(&2, 2).is_ok(),
            "other tenants are unaffected"
        );
        drop(a);
        assert_eq!(inf.in_flight(&1), 1);
        let c = inf.try_acquire(&1, 2).unwrap();
        drop((b, c));
        assert_eq!(inf.in_flight(&1), 0);
        assert_eq!(inf.tenants(), 0, "entries vanish with their last permit");
    }

    #[test]
    fn zero_cap_refuses_and_lowered_cap_applies() {
        let inf = InFlight::new();
        assert!(inf.try_acquire(&1u64, 0).is_err());
        let p: Vec<_> = (0..3).map(|_| inf.try_acquire(&1, 3).unwrap()).collect();
        assert_eq!(inf.try_acquire(&1, 1).unwrap_err().in_flight, 3);
        drop(p);
        assert!(inf.try_acquire(&1, 1).is_ok());
    }

    #[test]
    fn cap_never_exceeded_under_concurrent_acquire() {
        const THREADS: usize = 8;
        const MAX: u32 = 3;
        let inf = InFlight::new();
        let live = Arc::new(AtomicU32::new(0));
        let peak = Arc::new(AtomicU32::new(0));
        let barrier = Arc::new(Barrier::new(THREADS));
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let (inf, live, peak, barrier) =
                    (inf.clone(), live.clone(), peak.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let mut ok = 0;
                    for i in 0..20_000u32 {
                        // Two tenants interleaved, so shards see both acquire and release races.
                        let key = u64::from(i % 2);
                        if let Ok(permit) = inf.try_acquire(&key, MAX) {
                            if key == 0 {
                                let now = live.fetch_add(1, Ordering::SeqCst) + 1;
                                peak.fetch_max(now, Ordering::SeqCst);
                                std::hint::spin_loop();
                                live.fetch_sub(1, Ordering::SeqCst);
                            }
                            drop(permit);
                            ok += 1;
                        }
                    }
                    ok
                })
            })
            .collect();
        let admitted: u32 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert!(peak.load(Ordering::SeqCst) <= MAX);
        assert!(admitted > 0);
        assert_eq!(inf.tenants(), 0);
    }
}
