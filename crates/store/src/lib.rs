//! Strata's embedded, durable storage on [redb].
//!
//! Layout: a `registry` table of tenants by name, a `meta` table of counters, and one `data`
//! table holding every piece of per-tenant state. Every `data` key starts with the tenant's
//! 8-byte [`TenantKey`] (built only in the private `keys` module), so a tenant's data is one contiguous key range:
//! a prefix scan exports it and a range delete erases it.
//!
//! Writes go through [`Store::write`], which commits durably (fsync) before returning `Ok`, or
//! not at all. Concurrent writes share fsyncs (group commit): each commits its own transaction,
//! then waits for one sync that covers every write committed meanwhile.

mod adaptive;
mod backup;
pub use backup::{BackedUp, BackupProgress, PARTIAL_SUFFIX, bytes_under, partial_dir_of};
mod batch;
mod batched_write;
mod changelog;
pub mod codec;
mod collection_deleting;
mod credentials;
mod damaged;
pub use damaged::damaged_records;
mod db;
mod decode_memo;
mod deferred_sync;
mod derived;
mod disk_room;
mod error;
mod expiry;
mod file_writes;
mod group_commit;
mod idempotency;
mod integrity_check;
mod keys;
mod links;
mod main_file_guard;
mod migration_row;
mod opened;
mod owed_erasure;
mod registry_marks;
pub use owed_erasure::{ErasurePass, OwedErasures};
mod placement;
mod recovery;
pub use recovery::{DEFAULT_FAST_RECOVERY_FROM_BYTES, FileOptions, OpenReport};
pub use registry_marks::RowMark;
mod registry;
mod retired;
mod row_log;
pub mod stats;
mod tables;
mod tenant_metadata;
mod thread_writes;
mod tracking;
mod vacuum;
mod verify;

pub use adaptive::{AdaptiveItem, AdaptiveReads, AdaptiveRow, NarrativePrincipal, PrincipalTokens};
pub use changelog::{ChangeLogReads, DEFAULT_CHANGE_LOG_CAP};
pub use codec::{
    ChangeEntry, ChangeHead, ChangeMark, ChangeOp, RecordScope, StoredIndexParams, StoredLevel,
    StoredMigration, StoredMigrationState,
};
pub use collection_deleting::{DeletingReads, HiddenMemo};
pub use credentials::{CredentialStore, Owner, StoredCredential};
pub use decode_memo::{DecodeMemo, MemoReads};
pub use deferred_sync::in_write_path;
pub use derived::DERIVED_DIR;
pub use error::StoreError;
pub use expiry::ExpiryReads;
pub use idempotency::{IdempotencyRow, has_stale_idempotency_rows};
pub use integrity_check::{FileCheck, FileState, check_files};
pub use keys::{ScopeField, TenantKey};
pub use links::LinkReads;
pub use migration_row::last_migration;
pub use placement::{
    CopyTarget, DEDICATED_FILE, DedicatedFile, RangeSize, RetiredFile, TENANTS_DIR,
};
pub use registry::TenantMeta;
pub use tables::{DEFAULT_CACHE_BYTES, Pending, Reader, Reads, Store, Writer};
pub use tenant_metadata::tenant_metadata;
/// The bounds of a tenant's metadata and its depth measure.
pub mod tenant_metadata_bounds {
    pub use crate::tenant_metadata::{MAX_BYTES, MAX_DEPTH, MAX_KEYS, depth_of};
}
pub use thread_writes::{
    NoWrites, forbid_writes_on_this_thread, writes_allowed_here, writes_on_forbidden_threads,
};
pub use tracking::WriteTracker;
pub use vacuum::Vacuumed;
pub use verify::{KeyCheck, check_tenant};

/// A fresh store holding one live tenant, for the unit tests of rows in a tenant's range.
#[cfg(test)]
pub(crate) mod test_tenant {
    use crate::{Store, TenantKey};

    pub(crate) fn store_with_tenant(name: &str) -> (tempfile::TempDir, Store, TenantKey) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let id = strata_types::TenantId::parse(name).unwrap();
        let t = store
            .write(|w| w.create_tenant(&id, 0, Default::default()))
            .unwrap()
            .key;
        (dir, store, t)
    }

    /// Registers tenant `id`; its storage key.
    pub(crate) fn tenant(store: &Store, id: &str) -> TenantKey {
        store
            .write(|w| {
                w.create_tenant(
                    &strata_types::TenantId::parse(id).unwrap(),
                    0,
                    Default::default(),
                )
                .map(|m| m.key)
            })
            .unwrap()
    }

    /// Writes blob `name` of tenant `t` (in whichever file holds it) and waits until durable.
    pub(crate) fn put(store: &Store, t: TenantKey, name: &str, v: &[u8]) {
        let ((), pending) = store
            .write_pending_for(t, |w| w.put_blob(t, name, v))
            .unwrap();
        pending.wait_durable().unwrap();
    }
}
