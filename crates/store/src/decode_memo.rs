//! Decoded copies of small stored values read by every write, kept by their stored bytes.
//!
//! Every tenant write reads its tenant's registry row (the liveness check) and, for a record,
//! its collection's configuration, and both are JSON: decoding them was about 4 % of the CPU
//! of a durable single-record write, all of it in the serial part of a batch (see the
//! benchmarks). A [`DecodeMemo`] keeps the last decoded value of each key beside the bytes it
//! was decoded from. A read still fetches the stored bytes in its own transaction (so it sees
//! its own writes, and a suspend that committed before it); only when they equal the kept
//! bytes does it reuse the decoded value. The value is a function of the bytes alone, so the
//! answer is exactly what decoding would give: a changed row is decoded afresh, and a row that
//! does not decode is an error every time (never kept).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use redb::ReadableTable;
use strata_types::{Collection, CollectionName, TenantId};

use crate::StoreError;
use crate::codec::decode_json;
use crate::keys::{self, TenantKey};
use crate::registry::{StoredMeta, TenantMeta};
use crate::tables::Reads;

/// Keys a memo keeps at most; past it the memo starts over (a server with more tenants
/// writing at once than this decodes some rows again, as it did before the memo).
const MAX_ENTRIES: usize = 4096;

/// Each key's decoded value, with the stored bytes it was decoded from.
type Entries<T> = HashMap<Box<[u8]>, (Box<[u8]>, Arc<T>)>;

/// Decoded values by key, each with the stored bytes it was decoded from. Share one per
/// store (or engine) and kind of value.
pub struct DecodeMemo<T> {
    entries: Mutex<Entries<T>>,
}

impl<T> Default for DecodeMemo<T> {
    fn default() -> Self {
        DecodeMemo {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<T> DecodeMemo<T> {
    /// The decoded value of `stored`, the bytes now stored under `key`: the kept one if it
    /// was decoded from the same bytes, else `decode(stored)`, then kept.
    pub(crate) fn get(
        &self,
        key: &[u8],
        stored: &[u8],
        decode: impl FnOnce(&[u8]) -> Result<T, StoreError>,
    ) -> Result<Arc<T>, StoreError> {
        if let Some((bytes, value)) = self.lock().get(key)
            && **bytes == *stored
        {
            return Ok(Arc::clone(value));
        }
        // Outside the lock: a decode is the slow part.
        let value = Arc::new(decode(stored)?);
        let mut entries = self.lock();
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(key) {
            entries.clear();
        }
        entries.insert(key.into(), (stored.into(), Arc::clone(&value)));
        Ok(value)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries<T>> {
        // Every change is one `insert` or `clear`: a panic elsewhere cannot leave it half-done.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Memoised reads of the registry and of collections, for every reader and writer.
#[allow(private_bounds)]
pub trait MemoReads: Reads {
    /// [`Reads::tenant`], then `make` of it, through `memo`: decoded (and `make` run) only
    /// when the tenant's registry row changed since `memo` last saw it.
    fn tenant_memo<T>(
        &self,
        id: &TenantId,
        memo: &DecodeMemo<T>,
        // A plain function, not a closure: the memo's value must follow from the stored
        // bytes alone, so its decoder can capture nothing of a request.
        make: fn(TenantMeta) -> Result<T, StoreError>,
    ) -> Result<Option<Arc<T>>, StoreError> {
        let Some(stored) = self.registry_get(id.as_str())? else {
            return Ok(None);
        };
        memo.get(id.as_str().as_bytes(), &stored, |bytes| {
            let stored: StoredMeta = decode_json(bytes)?;
            make(TenantMeta::from_stored(id.clone(), stored))
        })
        .map(Some)
    }

    /// [`Reads::collection`] through `memo`: decoded only when the stored configuration
    /// changed since `memo` last saw it.
    fn collection_memo(
        &self,
        t: TenantKey,
        name: &CollectionName,
        memo: &DecodeMemo<Collection>,
    ) -> Result<Option<Arc<Collection>>, StoreError> {
        let key = keys::collection(t, name);
        let Some(stored) = self.data_table(t)?.get(key.as_slice())? else {
            return Ok(None);
        };
        memo.get(&key, stored.value(), decode_json).map(Some)
    }
}

impl<R: Reads + ?Sized> MemoReads for R {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn the_same_bytes_decode_once_and_changed_bytes_again() {
        let memo = DecodeMemo::<u32>::default();
        let decodes = Cell::new(0);
        let decode = |b: &[u8]| {
            decodes.set(decodes.get() + 1);
            Ok(u32::from(b[0]))
        };
        assert_eq!(*memo.get(b"k", &[1], decode).unwrap(), 1);
        assert_eq!(*memo.get(b"k", &[1], decode).unwrap(), 1);
        assert_eq!(decodes.get(), 1);
        assert_eq!(*memo.get(b"k", &[2], decode).unwrap(), 2, "changed bytes");
        assert_eq!(*memo.get(b"other", &[1], decode).unwrap(), 1);
        assert_eq!(decodes.get(), 3);
    }

    #[test]
    fn a_value_that_does_not_decode_fails_every_time_and_is_not_kept() {
        let memo = DecodeMemo::<u32>::default();
        assert_eq!(*memo.get(b"k", &[1], |_| Ok(1)).unwrap(), 1);
        let corrupt = || Err(StoreError::Corrupt("bad".into()));
        for _ in 0..2 {
            assert!(memo.get(b"k", &[9], |_| corrupt()).is_err());
        }
        // The value kept from the good bytes is not served for the bad ones.
        assert!(memo.get(b"k", &[9], |_| corrupt()).is_err());
        assert_eq!(*memo.get(b"k", &[1], |_| Ok(5)).unwrap(), 1);
    }

    #[test]
    fn the_memo_starts_over_past_its_bound() {
        let memo = DecodeMemo::<usize>::default();
        for i in 0..MAX_ENTRIES + 10 {
            memo.get(&i.to_be_bytes(), &[0], |_| Ok(i)).unwrap();
        }
        assert!(memo.len() <= MAX_ENTRIES);
    }

    #[test]
    fn tenant_and_collection_reads_see_changes_in_the_same_transaction() {
        use crate::Store;
        use strata_types::{Collection, TenantId};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("main.redb")).unwrap();
        let id = TenantId::parse("acme").unwrap();
        let tenants = DecodeMemo::<TenantMeta>::default();
        let collections = DecodeMemo::<Collection>::default();
        let name = CollectionName::parse("text").unwrap();
        store
            .write(|w| -> Result<(), StoreError> {
                assert!(w.tenant_memo(&id, &tenants, Ok)?.is_none());
                let meta = w.create_tenant(&id, 1, Default::default())?;
                let got = w.tenant_memo(&id, &tenants, Ok)?.expect("created");
                assert_eq!(*got, meta);
                let mut c = Collection {
                    name: name.clone(),
                    dim: 4,
                    metric: strata_types::Metric::Cosine,
                    created_at: 1,
                    embedder: None,
                    analyzer: Default::default(),
                    memory: Default::default(),
                };
                w.put_collection(meta.key, &c)?;
                assert_eq!(
                    *w.collection_memo(meta.key, &name, &collections)?.unwrap(),
                    c
                );
                c.dim = 8;
                w.put_collection(meta.key, &c)?;
                assert_eq!(
                    w.collection_memo(meta.key, &name, &collections)?
                        .unwrap()
                        .dim,
                    8,
                    "the write's own change, not the kept value"
                );
                let mut changed = meta.clone();
                changed
                    .profile
                    .insert("status".into(), serde_json::json!("suspended"));
                w.put_tenant(&changed)?;
                let got = w.tenant_memo(&id, &tenants, Ok)?.expect("still there");
                assert_eq!(got.profile.get("status"), changed.profile.get("status"));
                Ok(())
            })
            .unwrap();
    }
}
