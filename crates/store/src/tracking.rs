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
//! side and the migration is asked for again). Past [`MAX_BYTES`] the set gives up and the
//! flip compares the whole range, as it did before.

use std::collections::{BTreeSet, HashMap};
use std::ops::RangeBounds;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use redb::{AccessGuard, ReadableTable, StorageError, Table};

use crate::StoreError;
use crate::file_writes::Tracked;
use crate::keys::TenantKey;

/// Memory the keys of one tracked tenant may take (with a set entry's overhead, about 64
/// bytes each) before the flip falls back to a whole-range compare, which then costs what
/// it always did.
pub(crate) const MAX_BYTES: usize = 64 << 20;
const ENTRY_OVERHEAD: usize = 64;

/// The keys written to one tracked tenant since tracking began, or `None` once they took
/// more than [`MAX_BYTES`].
#[derive(Default)]
pub(crate) struct Written {
    keys: Mutex<Option<(BTreeSet<Vec<u8>>, usize)>>,
    /// The memory the keys may take ([`MAX_BYTES`] but in tests).
    cap: usize,
}

impl Written {
    pub(crate) fn new() -> Written {
        Written::with_cap(MAX_BYTES)
    }

    /// A set that gives up past `cap` bytes of keys.
    pub(crate) fn with_cap(cap: usize) -> Written {
        Written {
            keys: Mutex::new(Some((BTreeSet::new(), 0))),
            cap,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<(BTreeSet<Vec<u8>>, usize)>> {
        // A set of keys updated by single inserts: a panic elsewhere cannot half-change it.
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn record(&self, key: &[u8]) {
        let mut keys = self.lock();
        if let Some((set, bytes)) = keys.as_mut()
            && !set.contains(key)
        {
            *bytes += key.len() + ENTRY_OVERHEAD;
            if *bytes > self.cap {
                *keys = None;
            } else {
                set.insert(key.to_vec());
            }
        }
    }

    /// Takes the keys written so far, sorted (the set starts again empty); `None` when they
    /// were too many to keep.
    pub(crate) fn take(&self) -> Option<Vec<Vec<u8>>> {
        let mut keys = self.lock();
        let (set, _) = keys.as_mut()?;
        let taken = std::mem::take(set).into_iter().collect();
        *keys = Some((BTreeSet::new(), 0));
        Some(taken)
    }
}

/// The tenants whose writes are tracked now.
#[derive(Default)]
pub(crate) struct Tracking {
    /// How many tenants are tracked: writes skip the map's lock while it is zero.
    active: AtomicUsize,
    /// Each tracked tenant's set, with how many trackers (migrations) hold it. Every write
    /// of every tenant reads it while any tenant is tracked; only trackers write it.
    tenants: RwLock<HashMap<TenantKey, (usize, Arc<Written>)>>,
}

type Tenants = HashMap<TenantKey, (usize, Arc<Written>)>;

impl Tracking {
    fn lock(&self) -> std::sync::RwLockWriteGuard<'_, Tenants> {
        // Counts and sets changed in single statements: a panic elsewhere cannot half-change
        // them.
        self.tenants.write().unwrap_or_else(|e| e.into_inner())
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
        let map = self.tenants.read().unwrap_or_else(|e| e.into_inner());
        map.get(&t).map(|(_, w)| Arc::clone(w))
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
    /// Takes the tenant's keys written since the tracker began, sorted; `None` when they
    /// were too many to keep (the flip then compares the whole range).
    pub(crate) fn take_keys_of(&self, t: TenantKey) -> Result<Option<Vec<Vec<u8>>>, StoreError> {
        if t != self.tenant {
            return Err(StoreError::Engine(format!(
                "a tracker of tenant key {} used for tenant key {}",
                self.tenant.raw(),
                t.raw()
            )));
        }
        Ok(self.written.take())
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
    pub(crate) table: &'a mut Tracked<'txn, &'static [u8], &'static [u8]>,
    pub(crate) written: Option<Arc<Written>>,
    /// The writer's count of bytes written (see `Writer::wrote`).
    pub(crate) wrote: &'a mut u64,
}

impl<'txn> std::ops::Deref for TenantTable<'_, 'txn> {
    type Target = Table<'txn, &'static [u8], &'static [u8]>;

    fn deref(&self) -> &Self::Target {
        self.table
    }
}

impl TenantTable<'_, '_> {
    fn record(&mut self, key: &[u8]) {
        // Counted before the write, so that a write that fails half-way counts too.
        *self.wrote += key.len() as u64;
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
        *self.wrote += value.len() as u64;
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
        let wrote = &mut *self.wrote;
        self.table.retain_in(range, |k, v| {
            let kept = keep(k, v);
            if !kept {
                *wrote += k.len() as u64;
                if let Some(w) = &written {
                    w.record(k);
                }
            }
            kept
        })
    }
}

/// Makes `dst`'s values of `keys` equal to `src`'s (removing those `src` lacks); returns how
/// many it wrote or removed. The catch-up of a tracked migration; every key must lie in the
/// tenant's range `prefix`.
pub(crate) fn catch_up_keys(
    src: &impl ReadableTable<&'static [u8], &'static [u8]>,
    dst: &mut crate::tables::DataTable<'_>,
    prefix: &[u8],
    keys: &[Vec<u8>],
) -> Result<u64, StoreError> {
    let mut n = 0;
    for key in keys {
        if !key.starts_with(prefix) {
            return Err(StoreError::Engine(
                "a migration's catch-up met a key of another tenant".into(),
            ));
        }
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
        let key_len = 1000;
        let fits = MAX_BYTES / (key_len + ENTRY_OVERHEAD);
        for i in 0..fits as u64 {
            let mut key = vec![0u8; key_len];
            key[..8].copy_from_slice(&i.to_be_bytes());
            w.record(&key);
            // A key written again takes no more room.
            w.record(&key);
        }
        assert_eq!(w.take().map(|k| k.len()), Some(fits));
        // Taking empties the set, and the budget with it.
        for i in 0..fits as u64 {
            let mut key = vec![0u8; key_len];
            key[..8].copy_from_slice(&i.to_be_bytes());
            w.record(&key);
        }
        w.record(&[1; 1000]);
        assert_eq!(w.take(), None);
    }

    #[test]
    fn tracking_ends_with_its_last_tracker() {
        let tracking = Tracking::default();
        let t = TenantKey::from_raw(7);
        assert!(tracking.of(t).is_none());
        let a = tracking.start(t);
        let b = tracking.start(t);
        tracking.of(t).unwrap().record(b"k");
        assert!(Arc::ptr_eq(&a, &b));
        tracking.stop(t);
        assert!(tracking.of(t).is_some());
        assert_eq!(b.take(), Some(vec![b"k".to_vec()]));
        tracking.stop(t);
        assert!(tracking.of(t).is_none());
        assert_eq!(tracking.active.load(Ordering::SeqCst), 0);
    }
}
