//! Tenants known to be live, in memory, so that a read of a tenant's data does not read and
//! decode the tenant's registry row every time (`Engine::read_tenant`).
//!
//! An entry says "tenant id X is registered under key K, neither suspended nor deleted" and is
//! tagged with [`strata_store::Store::registry_epoch`] as read *before* the storage snapshot
//! that established it began. The store bumps that epoch after every commit that writes a
//! registry row (suspend, resume, delete, restore, purge, creation, a migration's flip), before
//! the write returns. So:
//! - a commit made after the filling snapshot began bumps the epoch past the entry's tag, and
//!   the entry is no longer served once that bump happened, which is before the write that
//!   changed the tenant returns: a search that starts after a suspend returned reads the
//!   registry again and fails closed;
//! - a commit made before the snapshot began is in the snapshot.
//!
//! Any registry change empties the whole set (the epoch is server-wide): lifecycle changes are
//! rare beside reads, and the next read of each tenant refills its entry from storage, which
//! is what every read cost before this cache. The set is bounded (`crate::epoch_map`, which
//! holds the mechanism). Only live tenants are remembered; a refusal is always read from
//! storage.

use strata_auth::TenantScope;
use strata_types::TenantId;

use crate::epoch_map::EpochMap;

/// The tenants known live as of one registry epoch: live tenants' storage keys, with the id
/// each key is registered for (bounded and emptied as `epoch_map` says).
#[derive(Default)]
pub(crate) struct LiveTenants {
    by_key: EpochMap<TenantId>,
}

impl LiveTenants {
    /// Whether `scope`'s tenant is known live while the registry epoch is `now` (read after
    /// the caller's snapshot began).
    pub fn is_live(&self, now: u64, scope: &TenantScope) -> bool {
        self.by_key
            .get(now, scope.key(), |id| id == scope.tenant())
            .unwrap_or(false)
    }

    /// Remembers that `scope`'s tenant was found live in a snapshot that began after the
    /// registry epoch read `read_at`. An entry older than what is held is dropped; a newer
    /// epoch replaces every entry of the older one.
    pub fn remember(&self, read_at: u64, scope: &TenantScope) {
        self.by_key
            .remember(read_at, scope.key(), scope.tenant().clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_auth::Grant;
    use strata_store::{TenantKey, TenantMeta};

    fn scope(id: &str, key: u64) -> TenantScope {
        let meta = TenantMeta {
            id: TenantId::parse(id).unwrap(),
            key: TenantKey::for_tests(key),
            created_at: 0,
            profile: Default::default(),
        };
        TenantScope::for_tests(&meta, Grant::read_write())
    }

    #[test]
    fn an_entry_serves_only_its_own_epoch_key_and_id() {
        let live = LiveTenants::default();
        let a = scope("a", 1);
        assert!(!live.is_live(0, &a));
        live.remember(3, &a);
        assert!(live.is_live(3, &a));
        // A registry change since: the entry is not served.
        assert!(!live.is_live(4, &a));
        // Another incarnation's key, or another id under the same key, is not this entry.
        assert!(!live.is_live(3, &scope("a", 2)));
        assert!(!live.is_live(3, &scope("b", 1)));
    }

    #[test]
    fn a_late_fill_from_an_older_epoch_is_dropped_and_a_newer_one_clears() {
        let live = LiveTenants::default();
        let (a, b) = (scope("a", 1), scope("b", 2));
        live.remember(5, &a);
        // A search that read the epoch before the change finished its fill after it.
        live.remember(4, &b);
        assert!(!live.is_live(4, &b) && !live.is_live(5, &b));
        live.remember(6, &b);
        assert!(live.is_live(6, &b));
        assert!(!live.is_live(6, &a), "entries of epoch 5 are gone");
    }
}
