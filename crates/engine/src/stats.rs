//! Figures for observability (the metrics endpoint, the dashboard, a tenant's `GET /v1/stats`):
//! every tenant's usage read in one snapshot, a tenant's own usage, and the storage layer's
//! commit latencies. Counts and ids only: nothing of any tenant's data leaves here.
//!
//! Residency, integrity state and isolation level join [`TenantFigures`] when the engine keeps
//! them; the metrics exposition renders whatever this struct carries.

use strata_auth::{OperatorScope, Permission, TenantScope};
use strata_store::Reads;
use strata_store::stats::HistogramSnapshot;

use crate::lifecycle::usage;
use crate::tenants::{TenantInfo, TenantUsage};
use crate::{Engine, EngineError};

impl Engine {
    /// Every tenant (soft-deleted ones included, with their status) with its usage, read in
    /// one consistent snapshot, so a scrape costs one read transaction whatever the tenant count.
    pub fn usage_report(&self, _op: &OperatorScope) -> Result<Vec<TenantInfo>, EngineError> {
        let r = self.store.read()?;
        let mut out = Vec::new();
        for meta in r.tenants()? {
            let u = usage(&r, meta.key)?;
            let mut info = TenantInfo::try_from(&meta)?;
            info.usage = Some(TenantUsage {
                records: u.records,
                vectors: u.vectors,
                storage_bytes: u.storage_bytes,
                collections: r.collections(meta.key)?.len() as u64,
            });
            out.push(info);
        }
        Ok(out)
    }

    /// The caller's own tenant with its usage and limits; needs the `admin` permission.
    pub fn own_usage(&self, scope: &TenantScope) -> Result<TenantInfo, EngineError> {
        self.read_tenant(scope, Permission::Admin, |r| {
            let meta = r
                .tenant(scope.tenant())?
                .filter(|m| m.key == scope.key())
                .ok_or_else(|| EngineError::TenantNotFound(scope.tenant().clone()))?;
            let u = usage(r, meta.key)?;
            let mut info = TenantInfo::try_from(&meta)?;
            info.usage = Some(TenantUsage {
                records: u.records,
                vectors: u.vectors,
                storage_bytes: u.storage_bytes,
                collections: r.collections(meta.key)?.len() as u64,
            });
            Ok(info)
        })
    }

    /// Durations of every durable commit since the server started (each includes its fsync).
    pub fn commit_latency(&self) -> HistogramSnapshot {
        self.store.commit_latency()
    }
}
