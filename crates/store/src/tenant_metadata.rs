//! A tenant's operator metadata (free-form JSON an operator attaches to the tenant: team,
//! billing plan, ...), kept as one row in the tenant's own range rather than in its registry
//! row: every write decodes the registry row for its liveness check, and must not pay for
//! metadata it never looks at. Being in the tenant's range, the row moves with a data move
//! (copied, and caught up by the flip) and a purge erases it with the tenant.

use redb::ReadableTable;
use serde_json::{Map, Value};

use crate::StoreError;
use crate::codec::{decode_tenant_metadata, encode_tenant_metadata};
use crate::keys::{self, TenantKey};
use crate::tables::{Reads, Writer};

/// Tenant `t`'s metadata, where the tenant lives in this transaction; empty if it has none. A
/// row that does not decode is [`StoreError::Corrupt`].
pub fn tenant_metadata(r: &impl Reads, t: TenantKey) -> Result<Map<String, Value>, StoreError> {
    match r.data_table(t)?.get(keys::tenant_metadata(t).as_slice())? {
        Some(v) => decode_tenant_metadata(v.value()),
        None => Ok(Map::new()),
    }
}

impl Writer<'_> {
    /// Replaces tenant `t`'s metadata; an empty map removes the row. Goes through the tracked
    /// table, so a data move under way carries the change to the other side.
    pub fn put_tenant_metadata(
        &mut self,
        t: TenantKey,
        m: &Map<String, Value>,
    ) -> Result<(), StoreError> {
        let key = keys::tenant_metadata(t);
        let mut table = self.table_mut(t)?;
        if m.is_empty() {
            table.remove(key.as_slice())?;
        } else {
            table.insert(key.as_slice(), encode_tenant_metadata(m)?.as_slice())?;
        }
        Ok(())
    }

    /// Writes tenant `t`'s metadata row as the bytes given, for tests of damaged rows.
    #[cfg(feature = "test-support")]
    pub fn put_tenant_metadata_bytes_for_tests(
        &mut self,
        t: TenantKey,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        let key = keys::tenant_metadata(t);
        self.table_mut(t)?.insert(key.as_slice(), bytes)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Store, check_tenant};

    #[test]
    fn the_row_reads_back_verifies_clean_and_goes_when_emptied() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let id = strata_types::TenantId::parse("acme").unwrap();
        let t = store
            .write(|w| w.create_tenant(&id, 0, Default::default()))
            .unwrap()
            .key;
        assert!(
            tenant_metadata(&store.read().unwrap(), t)
                .unwrap()
                .is_empty()
        );
        let before = check_tenant(&store.read().unwrap(), t).unwrap().keys;
        let m = serde_json::json!({"plan": "pro"})
            .as_object()
            .cloned()
            .unwrap();
        store.write(|w| w.put_tenant_metadata(t, &m)).unwrap();
        let r = store.read().unwrap();
        assert_eq!(tenant_metadata(&r, t).unwrap(), m);
        let check = check_tenant(&r, t).unwrap();
        assert!(check.problems.is_empty(), "{check:?}");
        assert_eq!(check.keys, before + 1);
        drop(r);
        store
            .write(|w| w.put_tenant_metadata(t, &Map::new()))
            .unwrap();
        assert_eq!(
            check_tenant(&store.read().unwrap(), t).unwrap().keys,
            before
        );
    }
}
