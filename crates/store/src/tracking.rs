//! Which keys of a migrating tenant changed since its copy began, so that the flip that ends
//! the migration catches up only those instead of comparing the whole range on both sides.
//!
//! The flip runs in the tenant's write order and, moving into a dedicated file or out of
//! one, inside a main-file write transaction: every other tenant's writes wait for it. A
//! whole-range compare made that pause grow with the tenant (about half a second for 20,000
//! records); a catch-up of the written keys grows with the writes made during the copy.
//!
//! Every write of a tenant's keys goes through [`crate::Writer`]'s table for that tenant
//! ([`TenantTable`]), which records the key while the tenant is tracked. Tracking starts
//! before the copy's first chunk is read and waits for the write transactions already under
//! way ([`crate::Store::track_writes`]), so a change is either in a chunk's snapshot or in the
//! set. The set lives in memory: a crash ends the migration anyway (the tenant is whole on one
//! side and the migration is asked for again). Past [`MAX_KEYS`] keys the set gives up and the
//! flip compares the whole range, as it did before.

use std::collections::{BTreeSet, HashMap};
use std::ops::RangeBounds;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use redb::{AccessGuard, ReadableTable, StorageError, Table};

use crate::StoreError;
use crate::keys::TenantKey;

/// Keys a tracked tenant may change before the flip falls back to a whole-range compare
/// (about 64 MB of keys at the longest ones; the compare then costs what it always did).
pub(crate) const MAX_KEYS: usize = 500_000;

/// The keys written to one tracked tenant since tracking began, or `None` once more than
/// [`MAX_KEYS`] were.
#[derive(Default)]
pub(crate) struct Written {
    keys: Mutex<Option<BTreeSet<Vec<u8>>>>,
}

impl Written {
    fn new() -> Written {
        Written {
            keys: Mutex::new(Some(BTreeSet::new())),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<BTreeSet<Vec<u8>>>> {
        // A set of keys updated by single inserts: a panic elsewhere cannot half-change it.
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, key: &[u8]) {
        let mut keys = self.lock();
        if let Some(set) = keys.as_mut() {
            if set.len() >= MAX_KEYS {
                *keys = None;
            } else if !set.contains(key) {
                set.insert(key.to_vec());
            }
        }
    }

    /// The keys written so far, sorted; `None` when there were too many to keep.
    pub(crate) fn keys(&self) -> Option<Vec<Vec<u8>>> {
        self.lock().as_ref().map(|s| s.iter().cloned().collect())
    }
}

/// The tenants whose writes are tracked now.
#[derive(Default)]
pub(crate) struct Tracking {
    /// How many tenants are tracked: writes skip the map's lock while it is zero.
    active: AtomicUsize,
    /// Each tracked tenant's set, with how many trackers (migrations) hold it.
    tenants: Mutex<HashMap<TenantKey, (usize, Arc<Written>)>>,
}

impl Tracking {
    fn lock(&self) -> MutexGuard<'_, HashMap<TenantKey, (usize, Arc<Written>)>> {
        self.tenants.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts tracking tenant `t` (a second tracker of the same tenant shares the set).
    pub(crate) fn start(&self, t: TenantKey) -> Arc<Written> {
        let mut map = self.lock();
        let (trackers, written) = map.entry(t).or_insert_with(|| {
            self.active.fetch_add(1, Ordering::SeqCst);
            (0, Arc::new(Written::new()))
        });
        *trackers += 1;
        Arc::clone(written)
    }

    /// Ends one tracker of tenant `t`; tracking stops with the last.
    pub(crate) fn stop(&self, t: TenantKey) {
        let mut map = self.lock();
        if let Some((trackers, _)) = map.get_mut(&t) {
            *trackers -= 1;
            if *trackers == 0 {
                map.remove(&t);
                self.active.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    /// The set to record tenant `t`'s writes in, if it is tracked.
    pub(crate) fn of(&self, t: TenantKey) -> Option<Arc<Written>> {
        if self.active.load(Ordering::SeqCst) == 0 {
            return None;
        }
        self.lock().get(&t).map(|(_, w)| Arc::clone(w))
    }
}

/// Records which keys of one tenant change from its creation on, until dropped: what a
/// migration's flip catches up (see [`crate::Store::track_writes`]).
pub struct WriteTracker<'s> {
    pub(crate) store: &'s crate::Store,
    pub(crate) tenant: TenantKey,
    pub(crate) written: Arc<Written>,
}

impl WriteTracker<'_> {
    /// The tenant's keys written since the tracker began, sorted; `None` when they were too
    /// many to keep (the flip then compares the whole range).
    pub(crate) fn keys_of(&self, t: TenantKey) -> Result<Option<Vec<Vec<u8>>>, StoreError> {
        if t != self.tenant {
            return Err(StoreError::Engine(format!(
                "a tracker of tenant key {} used for tenant key {}",
                self.tenant.raw(),
                t.raw()
            )));
        }
        Ok(self.written.keys())
    }
}

impl Drop for WriteTracker<'_> {
    fn drop(&mut self) {
        self.store.tracking.stop(self.tenant);
    }
}

/// A tenant's `data` table inside a write transaction: writes go through it so that a
/// tracked tenant's changed keys are recorded. Reads go to the table itself (`Deref`).
pub(crate) struct TenantTable<'a, 'txn> {
    pub(crate) table: &'a mut Table<'txn, &'static [u8], &'static [u8]>,
    pub(crate) written: Option<Arc<Written>>,
}

impl<'txn> std::ops::Deref for TenantTable<'_, 'txn> {
    type Target = Table<'txn, &'static [u8], &'static [u8]>;

    fn deref(&self) -> &Self::Target {
        self.table
    }
}

impl TenantTable<'_, '_> {
    fn record(&self, key: &[u8]) {
        if let Some(w) = &self.written {
            w.record(key);
        }
    }

    pub(crate) fn insert(
        &mut self,
        key: &[u8],
        value: &[u8],
    ) -> Result<Option<AccessGuard<'_, &'static [u8]>>, StorageError> {
        self.record(key);
        self.table.insert(key, value)
    }

    pub(crate) fn remove(
        &mut self,
        key: &[u8],
    ) -> Result<Option<AccessGuard<'_, &'static [u8]>>, StorageError> {
        self.record(key);
        self.table.remove(key)
    }

    /// Removes the entries of `range` for which `keep` is false.
    pub(crate) fn retain_in<'r>(
        &mut self,
        range: impl RangeBounds<&'r [u8]> + 'r,
        mut keep: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StorageError> {
        let written = self.written.clone();
        self.table.retain_in(range, |k, v| {
            let kept = keep(k, v);
            if !kept && let Some(w) = &written {
                w.record(k);
            }
            kept
        })
    }
}

/// Makes `dst`'s values of `keys` equal to `src`'s (removing those `src` lacks); returns how
/// many it wrote or removed. The catch-up of a tracked migration.
pub(crate) fn catch_up_keys(
    src: &impl ReadableTable<&'static [u8], &'static [u8]>,
    dst: &mut Table<'_, &'static [u8], &'static [u8]>,
    keys: &[Vec<u8>],
) -> Result<u64, StoreError> {
    let mut n = 0;
    for key in keys {
        let want = src.get(key.as_slice())?.map(|v| v.value().to_vec());
        let have = dst.get(key.as_slice())?.map(|v| v.value().to_vec());
        if want == have {
            continue;
        }
        match want {
            Some(v) => dst.insert(key.as_slice(), v.as_slice())?,
            None => dst.remove(key.as_slice())?,
        };
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_past_its_cap_gives_up_rather_than_missing_keys() {
        let w = Written::new();
        for i in 0..MAX_KEYS as u64 {
            w.record(&i.to_be_bytes());
        }
        assert_eq!(w.keys().map(|k| k.len()), Some(MAX_KEYS));
        w.record(b"one more");
        assert_eq!(w.keys(), None);
    }

    #[test]
    fn tracking_ends_with_its_last_tracker() {
        let tracking = Tracking::default();
        let t = TenantKey::from_raw(7);
        assert!(tracking.of(t).is_none());
        let a = tracking.start(t);
        let b = tracking.start(t);
        tracking.of(t).unwrap().record(b"k");
        assert_eq!(a.keys(), Some(vec![b"k".to_vec()]));
        tracking.stop(t);
        assert!(tracking.of(t).is_some());
        assert_eq!(b.keys(), Some(vec![b"k".to_vec()]));
        tracking.stop(t);
        assert!(tracking.of(t).is_none());
        assert_eq!(tracking.active.load(Ordering::SeqCst), 0);
    }
}
