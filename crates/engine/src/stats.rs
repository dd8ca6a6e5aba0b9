//! Figures for observability (the metrics endpoint, the dashboard, a tenant's `GET /v1/stats`):
//! every tenant's usage, residency and integrity state read in one snapshot, a tenant's own,
//! and the storage layer's commit latencies. Counts and ids only: nothing of any tenant's data
//! leaves here.
//!
//! Isolation level joins [`TenantFigures`] once the engine keeps it per tenant.

use strata_auth::{OperatorScope, Permission, TenantScope};
use strata_store::stats::HistogramSnapshot;
use strata_store::{Reader, Reads, TenantKey, TenantMeta};
use strata_types::TenantId;

use crate::integrity::IntegrityState;
use crate::lifecycle::{TenantProfile, usage};
use crate::residency::TenantResidency;
use crate::tenants::{TenantInfo, TenantUsage};
use crate::whole_tenant::{Reach, require_whole_tenant};
use crate::{Engine, EngineError};

/// One tenant's figures, tied to its incarnation (`key`), so a tenant deleted and re-created
/// under the same id is a different tenant to whoever keeps figures about it.
#[derive(Debug, Clone)]
pub struct TenantFigures {
    pub key: TenantKey,
    pub info: TenantInfo,
    pub residency: TenantResidency,
    pub integrity: IntegrityState,
}

/// Tenants' figures in id order, plus the tenants whose stored profile or registry row does
/// not decode: those are left out and named (by their stored id), so one damaged tenant
/// cannot blind the operator to all the others.
#[derive(Debug, Clone, Default)]
pub struct UsageReport {
    pub tenants: Vec<TenantFigures>,
    pub unreadable: Vec<String>,
    /// The id to pass as `after` for the next page; `None` on the last.
    pub next_after: Option<TenantId>,
}

/// Registered tenants by integrity state, over the whole server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IntegrityCounts {
    pub normal: u64,
    pub stress: u64,
    pub critical: u64,
}

impl Engine {
    /// Every tenant (soft-deleted ones included, with their status) with its usage, read in
    /// one consistent snapshot, so a scrape costs one read transaction whatever the tenant count.
    pub fn usage_report(&self, op: &OperatorScope) -> Result<UsageReport, EngineError> {
        self.usage_page(op, None, usize::MAX)
    }

    /// Like [`Engine::usage_report`], for at most `limit` tenants with ids after `after`.
    pub fn usage_page(
        &self,
        _op: &OperatorScope,
        after: Option<&TenantId>,
        limit: usize,
    ) -> Result<UsageReport, EngineError> {
        let r = self.store.read()?;
        let mut out = UsageReport::default();
        // One more than asked, to know whether a next page exists.
        let mut rows = r.tenants_page(after, limit.saturating_add(1))?;
        if rows.len() > limit {
            rows.truncate(limit);
            out.next_after = rows.last().and_then(|(raw, _)| TenantId::parse(raw).ok());
        }
        for (raw, meta) in rows {
            match meta
                .map_err(EngineError::from)
                .and_then(|m| self.figures(&r, &m))
            {
                Ok(f) => out.tenants.push(f),
                // Only a row, profile or usage that does not decode is skipped; a failing read
                // of the store itself still fails the report. The tenant's own requests keep
                // reporting the corruption in full.
                Err(EngineError::Store(strata_store::StoreError::Corrupt(_))) => {
                    out.unreadable.push(raw);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Registered tenants by integrity state: the registry's key count and the in-memory
    /// states, so it costs no decoding however many tenants there are.
    pub fn integrity_counts(&self, _op: &OperatorScope) -> Result<IntegrityCounts, EngineError> {
        let total = self.store.read()?.tenant_count()?;
        let by_state = self.indexes.integrity_counts();
        let stress = by_state.get(&IntegrityState::Stress).copied().unwrap_or(0);
        let critical = by_state
            .get(&IntegrityState::Critical)
            .copied()
            .unwrap_or(0);
        Ok(IntegrityCounts {
            normal: total.saturating_sub(stress + critical),
            stress,
            critical,
        })
    }

    /// The caller's own tenant with its usage, limits, residency and integrity state; needs
    /// an unbound `admin` credential with `all_principals`: the figures count every domain and
    /// principal (`crate::whole_tenant`).
    pub fn own_usage(&self, scope: &TenantScope) -> Result<TenantFigures, EngineError> {
        require_whole_tenant(
            scope,
            Permission::Admin,
            Reach::EveryPrincipal,
            "reading the tenant's usage figures",
        )?;
        self.read_tenant(scope, Permission::Admin, |r| {
            let meta = r
                .tenant(scope.tenant())?
                .filter(|m| m.key == scope.key())
                .ok_or_else(|| EngineError::TenantNotFound(scope.tenant().clone()))?;
            self.figures(r, &meta)
        })
    }

    /// One tenant's figures. Read for every tenant at each scrape, so its profile is decoded
    /// once and its collections counted, not decoded.
    fn figures(&self, r: &Reader, meta: &TenantMeta) -> Result<TenantFigures, EngineError> {
        let u = usage(r, meta.key)?;
        let profile = TenantProfile::of(meta)?;
        let mut residency = self.indexes.residency(meta.key, &meta.id);
        residency.pinned |= crate::registry::pinned_by_level(&profile);
        let mut info = TenantInfo::of(meta, profile);
        info.usage = Some(TenantUsage {
            records: u.records,
            vectors: u.vectors,
            storage_bytes: u.storage_bytes,
            collections: r.collection_count(meta.key)?,
        });
        Ok(TenantFigures {
            key: meta.key,
            info,
            residency,
            integrity: self.indexes.integrity_state(meta.key),
        })
    }

    /// Durations of every durable commit since the server started (each includes its fsync).
    pub fn commit_latency(&self) -> HistogramSnapshot {
        self.store.commit_latency()
    }

    /// What opening the main data file took at start, and whether the storage engine had to
    /// read all of it to repair it after a crash (see `fast_recovery_from_bytes`).
    pub fn storage_open_report(&self) -> strata_store::OpenReport {
        self.store.open_report()
    }

    /// How many acknowledged transactions the start applied from the row log: writes made
    /// durable by the log after the main file's last checkpoint (`docs/durability.md`).
    pub fn storage_log_entries_replayed(&self) -> u64 {
        self.store.log_entries_replayed()
    }

    /// How many times a purge's vacuum rewrote the main data file since the server started.
    pub fn vacuums(&self) -> u64 {
        self.store.vacuums()
    }

    /// How many shared storage transactions small writes have been batched into since the
    /// server started, and how many writes they held (`docs/durability.md`).
    pub fn write_batches(&self) -> (u64, u64) {
        self.store.write_batches()
    }
}
