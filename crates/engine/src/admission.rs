//! The per-tenant figures the HTTP layer needs on every request (rate and concurrency limits,
//! fair-share weight), cached in memory so admission control never waits on storage.

use std::collections::HashMap;
use std::sync::RwLock;

use strata_auth::TenantScope;
use strata_store::{Reads, TenantKey};

use crate::isolation::IsolationLevel;
use crate::lifecycle::{TenantLimits, TenantProfile};
use crate::{Engine, EngineError};

/// What admission control needs to know about a tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct Admission {
    pub limits: TenantLimits,
    /// Fair-share weight, at least 1.
    pub weight: u32,
    /// Whether the tenant's work runs in the worker pool's reserved lane (`dedicated` tenants).
    pub reserved: bool,
}

/// Cached admissions by storage key; entries are dropped whenever a profile changes.
#[derive(Default)]
pub(crate) struct AdmissionCache {
    by_key: RwLock<HashMap<TenantKey, Admission>>,
}

impl AdmissionCache {
    pub fn invalidate(&self, key: TenantKey) {
        self.by_key
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
    }
}

impl Engine {
    /// The caller's tenant's limits and weight, from memory after the first request.
    pub fn admission(&self, scope: &TenantScope) -> Result<Admission, EngineError> {
        let cache = &self.admissions.by_key;
        if let Some(a) = cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&scope.key())
        {
            return Ok(a.clone());
        }
        let meta = self.store.read()?.tenant(scope.tenant())?;
        let meta = meta
            .filter(|m| m.key == scope.key())
            .ok_or_else(|| EngineError::TenantNotFound(scope.tenant().clone()))?;
        let p = TenantProfile::of(&meta)?;
        let admission = Admission {
            limits: p.limits,
            weight: p.weight.max(1),
            reserved: p.isolation == IsolationLevel::Dedicated,
        };
        cache
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(scope.key(), admission.clone());
        Ok(admission)
    }
}
