//! The per-tenant figures needed on every request (rate and concurrency limits, fair-share
//! weight, the tenant's own integrity policy), cached in memory so admission control and the
//! integrity samples never wait on storage.

use strata_auth::TenantScope;
use strata_store::{Reads, TenantKey};

use crate::epoch_map::EpochMap;
use std::sync::Arc;

use crate::integrity::EffectivePolicy;
use crate::isolation::IsolationLevel;
use crate::lifecycle::{TenantLimits, TenantProfile, TenantStatus};
use crate::{Engine, EngineError};

/// What admission control needs to know about a tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct Admission {
    pub limits: TenantLimits,
    /// Fair-share weight, at least 1.
    pub weight: u32,
    /// Whether the tenant's work runs in the worker pool's reserved lane (`dedicated` tenants).
    pub reserved: bool,
    /// The integrity policy the tenant is held to and its source (its own over the
    /// configuration's, see `IntegrityConfig::effective`), worked out when the entry is
    /// filled; shared between the entry and the admissions cloned from it.
    pub integrity: Arc<EffectivePolicy>,
}

/// Cached admissions by storage key, each valid for the registry epoch it was read under
/// (`crate::epoch_map`): a fill that read the registry before a profile change committed is
/// never served after that change returned, even when it lands after the change's
/// `invalidate`.
#[derive(Default)]
pub(crate) struct AdmissionCache {
    by_key: EpochMap<Admission>,
}

impl AdmissionCache {
    /// Drops `key`'s entry now. The registry epoch already keeps a changed profile from being
    /// served; this only frees the entry early.
    pub fn invalidate(&self, key: TenantKey) {
        self.by_key.forget(key);
    }
}

impl Engine {
    /// The caller's tenant's limits and weight, from memory after the first request while no
    /// registry row changed.
    pub fn admission(&self, scope: &TenantScope) -> Result<Admission, EngineError> {
        let cache = &self.admissions.by_key;
        // Read before the snapshot: the entry it fills is then never served once a change
        // committed after the snapshot began has returned.
        let before = self.store.registry_epoch();
        if let Some(a) = cache.get(before, scope.key(), Admission::clone) {
            return Ok(a);
        }
        let admission = self.admission_from_storage(scope)?;
        cache.remember(before, scope.key(), admission.clone());
        Ok(admission)
    }

    /// The tenant's admission as its registry row says now.
    fn admission_from_storage(&self, scope: &TenantScope) -> Result<Admission, EngineError> {
        let meta = self.store.read()?.tenant(scope.tenant())?;
        let meta = meta
            .filter(|m| m.key == scope.key())
            .ok_or_else(|| EngineError::TenantNotFound(scope.tenant().clone()))?;
        let p = TenantProfile::of(&meta)?;
        // Refused here, at admission, before any route's own checks: a suspended or deleted
        // tenant answers every credential of it the same, whatever the credential may do
        // (a read-only key of a deleted tenant reads 404 on an admin route, not 403).
        match p.status {
            TenantStatus::Active => {}
            TenantStatus::Suspended => {
                return Err(EngineError::TenantSuspended(scope.tenant().clone()));
            }
            TenantStatus::Deleted => {
                return Err(EngineError::TenantNotFound(scope.tenant().clone()));
            }
        }
        // A policy of its own that does not decode fails here: this tenant's requests are
        // refused (naming the repair) until an operator replaces it; no other tenant reads it.
        let own = p.own_integrity_policy(scope.tenant())?;
        Ok(Admission {
            limits: p.limits,
            weight: p.weight.max(1),
            reserved: p.isolation == IsolationLevel::Dedicated,
            integrity: Arc::new(self.config.integrity.effective(scope.tenant(), own)),
        })
    }

    /// The integrity policy the caller's tenant is held to, from its cached admission (only
    /// that field is copied out of the cache: a reference count).
    pub(crate) fn integrity_policy(
        &self,
        scope: &TenantScope,
    ) -> Result<EffectivePolicy, EngineError> {
        let before = self.store.registry_epoch();
        // Copied out (a few numbers, no heap), not shared: a reference count taken per
        // search would be a write to the entry's line by every thread searching the tenant.
        if let Some(p) = self.admissions.by_key.get(before, scope.key(), |a| {
            EffectivePolicy::clone(&a.integrity)
        }) {
            return Ok(p);
        }
        self.admission(scope)
            .map(|a| Arc::unwrap_or_clone(a.integrity))
    }
}

#[cfg(test)]
mod tests {
    use strata_auth::OperatorScope;

    use crate::tenants::TenantUpdate;
    use crate::{Engine, EngineConfig};

    /// The interleaving review found, played step by step: a request reads the tenant's
    /// limits, an operator changes them (its `invalidate` runs), and only then does the
    /// request fill the cache with what it read. The next admission must see the new limits.
    #[test]
    fn a_fill_that_read_before_a_limits_change_is_not_served_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
        let op = OperatorScope::for_tests();
        let id = strata_types::TenantId::parse("acme").unwrap();
        engine.create_tenant(&op, &id, None).unwrap();
        let scope = crate::test_support::admin_scope(&engine, "acme");

        // The request: the epoch, then its snapshot of the old limits.
        let before = engine.store.registry_epoch();
        let stale = engine.admission_from_storage(&scope).unwrap();
        assert_eq!(stale.weight, 1);
        // The operator's change returns (invalidating the entry, which is not there yet).
        let update = TenantUpdate {
            weight: Some(7),
            ..Default::default()
        };
        engine.update_tenant(&op, &id, update).unwrap();
        // The request's late fill.
        engine
            .admissions
            .by_key
            .remember(before, scope.key(), stale);

        assert_eq!(engine.admission(&scope).unwrap().weight, 7);
        // Served from memory from then on, still the new figures.
        assert_eq!(engine.admission(&scope).unwrap().weight, 7);
        assert_eq!(engine.admissions.by_key.len(), 1);
    }
}
