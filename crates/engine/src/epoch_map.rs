//! Registry facts kept in memory per tenant, valid for one registry epoch
//! ([`strata_store::Store::registry_epoch`]): what tenant liveness (`liveness`) and admission
//! control (`admission`) remember so that a request does not read the tenant's registry row.
//!
//! A fact is remembered under the epoch read *before* the storage snapshot it was read from
//! began, and served only while the store's epoch still holds that value. The store bumps
//! the epoch after every commit that writes a registry row, before that write returns, so:
//! - a registry commit made after the filling snapshot began moves the epoch past the fact's
//!   tag, and the fact is not served once that bump happened, which is before the write that
//!   changed the row returns (a fill that read before a change and inserts after it is never
//!   served);
//! - a registry commit made before the snapshot began is in the snapshot.
//!
//! The whole map belongs to one epoch: a newer epoch's first fill empties it. The map is
//! bounded too: with a million tenants it must not grow without limit, so when it holds
//! [`MAX_ENTRIES`] a new fact empties it first (the next request of each tenant refills its
//! entry from storage, which is what every request cost before the map). Emptied maps are
//! dropped after the lock is released, so no request waits on freeing them.
//!
//! Every request reads the map, often several threads for one tenant at once; it changes only
//! on a miss. Its lock is sharded (`crossbeam_utils::sync::ShardedLock`), so a reader writes
//! only its own thread's shard, not a reader count every thread writes.

use std::collections::HashMap;
use std::sync::PoisonError;

use crossbeam_utils::sync::ShardedLock;

use strata_store::TenantKey;

/// At most this many tenants' facts per map. An entry is about a hundred bytes at most (plus a
/// tenant id's characters), so a full map is about ten megabytes; a deployment whose tenants
/// active within one registry epoch exceed it pays a registry read per tenant and refill.
pub(crate) const MAX_ENTRIES: usize = 100_000;

/// Facts by tenant storage key, as of one registry epoch.
pub(crate) struct EpochMap<V> {
    inner: ShardedLock<Known<V>>,
    cap: usize,
}

struct Known<V> {
    /// The registry epoch the entries were read under.
    epoch: u64,
    /// Keyed by storage keys the registry mints, so a fast hash (see the crate's manifest).
    by_key: HashMap<TenantKey, V, foldhash::fast::RandomState>,
}

impl<V> Default for EpochMap<V> {
    fn default() -> Self {
        EpochMap::with_cap(MAX_ENTRIES)
    }
}

impl<V> EpochMap<V> {
    /// A map that empties itself before it would hold more than `cap` entries.
    pub fn with_cap(cap: usize) -> Self {
        EpochMap {
            inner: ShardedLock::new(Known {
                epoch: 0,
                by_key: HashMap::default(),
            }),
            cap: cap.max(1),
        }
    }

    /// `f` of the fact remembered for `key`, if it was read under epoch `now` (the store's
    /// epoch, read after the caller's own snapshot began, or just now when it has none).
    pub fn get<R>(&self, now: u64, key: TenantKey, f: impl FnOnce(&V) -> R) -> Option<R> {
        let known = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        if known.epoch != now {
            return None;
        }
        known.by_key.get(&key).map(f)
    }

    /// Remembers `value` for `key`, read from a snapshot that began after the registry epoch
    /// read `read_at`. A fact older than the map's epoch is dropped; a newer epoch replaces
    /// every entry of the older one.
    pub fn remember(&self, read_at: u64, key: TenantKey, value: V) {
        let mut known = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        if read_at < known.epoch {
            return;
        }
        let mut emptied = None;
        if read_at > known.epoch {
            emptied = Some(std::mem::take(&mut known.by_key));
            known.epoch = read_at;
        } else if known.by_key.len() >= self.cap && !known.by_key.contains_key(&key) {
            emptied = Some(std::mem::take(&mut known.by_key));
        }
        known.by_key.insert(key, value);
        drop(known);
        // Freed outside the lock: dropping a large map takes a while.
        drop(emptied);
    }

    /// Drops what is remembered for `key`, if anything.
    pub fn forget(&self, key: TenantKey) {
        let removed = self
            .inner
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .by_key
            .remove(&key);
        drop(removed);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .by_key
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: u64) -> TenantKey {
        TenantKey::for_tests(k)
    }

    #[test]
    fn a_fact_serves_only_under_its_own_epoch() {
        let map = EpochMap::default();
        assert_eq!(map.get(0, key(1), |v: &u32| *v), None);
        map.remember(3, key(1), 7);
        assert_eq!(map.get(3, key(1), |v| *v), Some(7));
        // A registry change since the fill: not served.
        assert_eq!(map.get(4, key(1), |v| *v), None);
        assert_eq!(map.get(3, key(2), |v| *v), None);
    }

    #[test]
    fn a_late_fill_from_an_older_epoch_is_dropped_and_a_newer_one_empties_the_map() {
        let map = EpochMap::default();
        map.remember(5, key(1), "a");
        // A fill that read the epoch before a change finished after it.
        map.remember(4, key(2), "stale");
        assert_eq!(map.get(4, key(2), |v| *v), None);
        assert_eq!(map.get(5, key(2), |v| *v), None);
        map.remember(6, key(2), "b");
        assert_eq!(map.get(6, key(2), |v| *v), Some("b"));
        assert_eq!(
            map.get(6, key(1), |v| *v),
            None,
            "epoch 5's entries are gone"
        );
        assert_eq!(map.len(), 1);
    }

    #[test]
    fn the_map_never_holds_more_than_its_cap() {
        let map = EpochMap::with_cap(3);
        for k in 0..10 {
            map.remember(1, key(k), k);
            assert!(map.len() <= 3, "{} entries after {k}", map.len());
            assert_eq!(map.get(1, key(k), |v| *v), Some(k), "the newest is kept");
        }
        // Refreshing an entry of a full map keeps the others.
        let held = map.len();
        map.remember(1, key(9), 90);
        assert_eq!(map.len(), held);
        assert_eq!(map.get(1, key(9), |v| *v), Some(90));
    }

    #[test]
    fn forget_drops_one_entry() {
        let map = EpochMap::default();
        map.remember(1, key(1), 1);
        map.remember(1, key(2), 2);
        map.forget(key(1));
        assert_eq!(map.get(1, key(1), |v| *v), None);
        assert_eq!(map.get(1, key(2), |v| *v), Some(2));
    }
}
