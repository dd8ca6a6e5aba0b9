//! Erasing a storage key's whole range: a purged tenant's ([`Writer::erase_tenant`]), or
//! what a writer that still held a purged tenant's key wrote after the purge
//! ([`Writer::erase_unregistered`]).

use super::{Reads, RegistryRow, Route, Writer};
use crate::keys::{self, TenantKey};
use crate::{StoreError, TenantMeta};

impl Writer<'_> {
    /// Removes the tenant from the registry with every credential issued for it, and owes the
    /// erasure of its data range to [`crate::Store::erase_owed_ranges`], which erases it in
    /// short transactions (`crate::owed_erasure`). A dedicated tenant's data is left in its
    /// own file, as [`Writer::erase_tenant`] leaves it; what a migration may have left of it
    /// in the main file (never live data, and little) is erased here.
    pub fn unregister_tenant_owing_erasure(&mut self, meta: &TenantMeta) -> Result<(), StoreError> {
        self.unregister_tenant(meta)?;
        if self.in_own_file(meta.key) {
            return self.erase_range(meta.key);
        }
        self.meta
            .insert(crate::owed_erasure::owed_row(meta.key).as_str(), 1)?;
        Ok(())
    }

    /// Erases every key of storage key `t`, which no registry row may name: the rows a writer
    /// that still held `t` (an import) wrote after its tenant was purged, perhaps with its id
    /// given to a new tenant since. Storage keys are never reused, so `t` belongs to that
    /// purged incarnation alone; a registry row that names it, or one that does not decode
    /// (and so might), refuses the erasure.
    pub fn erase_unregistered(&mut self, t: TenantKey) -> Result<(), StoreError> {
        if let Some(raw) = tenant_naming(&self.tenants_page(None, usize::MAX)?, t)? {
            return Err(StoreError::Engine(format!(
                "storage key {} is tenant {raw}'s: not erased",
                t.raw()
            )));
        }
        self.erase_range(t)
    }

    /// Erases every key of tenant `t`'s range (see [`Writer::erase_tenant`] for a dedicated
    /// tenant's own file).
    pub(super) fn erase_range(&mut self, t: TenantKey) -> Result<(), StoreError> {
        let start = keys::tenant_all(t);
        let range = |start: &[u8]| -> Vec<u8> { keys::prefix_end(start).unwrap_or_default() };
        if self.in_own_file(t) {
            // Its keys live in its file, deleted whole once no registry row names it. The
            // main file holds none of them but what a migration may have left there (never
            // live data): erased too, so that no byte of the tenant outlives it.
            if !matches!(self.route, Route::Home(_)) {
                let end = range(&start);
                if end.is_empty() {
                    self.data.retain_in(start.as_slice().., |_, _| false)?;
                } else {
                    self.data
                        .retain_in(start.as_slice()..end.as_slice(), |_, _| false)?;
                }
            }
            return Ok(());
        }
        let end = range(&start);
        if end.is_empty() {
            self.table_mut(t)?
                .retain_in(start.as_slice().., |_, _| false)?;
        } else {
            self.table_mut(t)?
                .retain_in(start.as_slice()..end.as_slice(), |_, _| false)?;
        }
        Ok(())
    }
}

/// The id of the registry row among `rows` that names storage key `t`, if any. A row that does
/// not decode might name it: an erasure on its word is refused, as corrupt.
pub(crate) fn tenant_naming(
    rows: &[RegistryRow],
    t: TenantKey,
) -> Result<Option<String>, StoreError> {
    for (raw, row) in rows {
        match row {
            Ok(meta) if meta.key == t => return Ok(Some(raw.clone())),
            Ok(_) => {}
            Err(e) => {
                return Err(StoreError::Corrupt(format!(
                    "registry row {raw:?} does not decode ({e}): storage key {} not erased",
                    t.raw()
                )));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use strata_types::TenantId;

    use crate::{Reads, Store, StoreError, TenantKey};

    /// A store with tenants `acme` and `globex`, each with a row under its key, and a row
    /// under a storage key no registry row names (7).
    fn store_with_rows() -> (tempfile::TempDir, Store, TenantKey, TenantKey) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("main.redb")).unwrap();
        let (acme, globex) = store
            .write(|w| {
                let mut keys = Vec::new();
                for id in ["acme", "globex"] {
                    let id = TenantId::parse(id).unwrap();
                    let key = w.create_tenant(&id, 1, Default::default())?.key;
                    w.put_blob(key, "note", b"kept")?;
                    keys.push(key);
                }
                w.put_blob(abandoned(), "note", b"left behind")?;
                Ok::<_, StoreError>((keys[0], keys[1]))
            })
            .unwrap();
        (dir, store, acme, globex)
    }

    fn abandoned() -> TenantKey {
        TenantKey::from_raw(7)
    }

    #[test]
    fn an_unregistered_key_is_erased_and_nothing_else() {
        let (_dir, store, acme, globex) = store_with_rows();
        assert_eq!(store.main_keys(abandoned()).unwrap(), 1);
        store.write(|w| w.erase_unregistered(abandoned())).unwrap();
        assert_eq!(store.main_keys(abandoned()).unwrap(), 0);
        let r = store.read().unwrap();
        for t in [acme, globex] {
            assert_eq!(r.blob(t, "note").unwrap().as_deref(), Some(&b"kept"[..]));
        }
    }

    #[test]
    fn a_key_a_registry_row_names_is_refused_and_kept() {
        let (_dir, store, acme, _) = store_with_rows();
        let before = store.main_keys(acme).unwrap();
        let e = store.write(|w| w.erase_unregistered(acme)).unwrap_err();
        assert!(e.to_string().contains("acme"), "{e}");
        assert_eq!(store.main_keys(acme).unwrap(), before);
        let r = store.read().unwrap();
        assert!(
            r.tenant(&TenantId::parse("acme").unwrap())
                .unwrap()
                .is_some()
        );
        assert_eq!(r.blob(acme, "note").unwrap().as_deref(), Some(&b"kept"[..]));
    }

    /// A registry row that does not decode might name the key: nothing is erased.
    #[test]
    fn a_damaged_registry_row_elsewhere_refuses_the_erase() {
        let (_dir, store, _, _) = store_with_rows();
        store
            .write(|w| {
                w.registry_write()?.insert("globex", &b"{\"key\":"[..])?;
                Ok::<_, StoreError>(())
            })
            .unwrap();
        let e = store
            .write(|w| w.erase_unregistered(abandoned()))
            .unwrap_err();
        assert!(matches!(e, StoreError::Corrupt(_)), "{e:?}");
        assert!(e.to_string().contains("globex"), "{e}");
        assert_eq!(store.main_keys(abandoned()).unwrap(), 1);
    }
}
