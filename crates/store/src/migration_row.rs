//! A tenant's last isolation-level migration, kept as one row in the tenant's own range: it
//! moves with the tenant's data (a data move copies it, and the flip rewrites it on the side the
//! tenant lands on) and a purge erases it with the tenant. The engine reads it to answer
//! `GET /v1/admin/tenants/{id}/migration` after a restart.

use redb::ReadableTable;

use crate::StoreError;
use crate::codec::{StoredMigration, decode_migration, encode_migration};
use crate::keys::{self, TenantKey};
use crate::tables::{Reads, Writer};

/// Tenant `t`'s last migration row, where the tenant lives in this transaction; `None` if it
/// was never migrated (or migrated before rows were kept). A row that does not decode is
/// [`StoreError::Corrupt`].
pub fn last_migration(r: &impl Reads, t: TenantKey) -> Result<Option<StoredMigration>, StoreError> {
    match r.data_table(t)?.get(keys::last_migration(t).as_slice())? {
        Some(v) => decode_migration(v.value()).map(Some),
        None => Ok(None),
    }
}

impl Writer<'_> {
    /// Replaces tenant `t`'s last migration row. Goes through the tracked table, so a data
    /// move under way carries the change to the other side.
    pub fn put_last_migration(
        &mut self,
        t: TenantKey,
        m: &StoredMigration,
    ) -> Result<(), StoreError> {
        self.table_mut(t)?.insert(
            keys::last_migration(t).as_slice(),
            encode_migration(m)?.as_slice(),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check_tenant;
    use crate::codec::{StoredLevel, StoredMigrationState};

    #[test]
    fn the_row_reads_back_and_verifies_clean() {
        let (_dir, store, t) = crate::test_tenant::store_with_tenant("acme");
        assert_eq!(last_migration(&store.read().unwrap(), t).unwrap(), None);
        let row = StoredMigration {
            from: StoredLevel::Shared,
            to: StoredLevel::Partition,
            state: StoredMigrationState::Running,
            started_at: 7,
            finished_at: None,
            keys_copied: 0,
            keys_total: 0,
            error: None,
            attempt: 1,
            index_params: None,
        };
        store.write(|w| w.put_last_migration(t, &row)).unwrap();
        let r = store.read().unwrap();
        assert_eq!(last_migration(&r, t).unwrap(), Some(row));
        let check = check_tenant(&r, t).unwrap();
        assert!(check.problems.is_empty(), "{check:?}");
    }
}
