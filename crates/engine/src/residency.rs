//! Residency: which tenants' indexes are in memory, what they cost, and the budget that
//! bounds them.
//!
//! Each loaded tenant's indexes are accounted in estimated bytes
//! (`CollectionIndex::resident_bytes`). When the total passes the configured budget, the
//! least recently used tenants that are neither pinned nor busy are evicted: their index
//! snapshot is saved first (so reloading restores the graph instead of rebuilding it), then
//! their indexes are dropped. The next request of an evicted tenant loads it again.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use strata_types::TenantId;

/// Heap a loaded tenant holds beyond what its collections' estimates count: its registry
/// slot, tracker and maps, the default collections' empty indexes, and the allocator's own
/// overhead. Measured against the process's resident set by `scale_bench`
/// (`docs/benchmarks.md`): without it, 10,000 loaded tenants of 10 records each took 1.9 times
/// their estimate. That calibration (10,000 here, 1,000 per record below: 20,000 bytes of
/// overhead for a 10-record tenant) was not re-run when the per-record figure fell; this one
/// follows it instead, so a 10-record tenant is still accounted 20,000 (18,000 + 10 × 200).
const TENANT_OVERHEAD_BYTES: u64 = 18_000;
/// Heap per loaded record beyond its estimate (allocator headers and rounding of its small
/// allocations: id string, posting and field-index entries), measured the same way. With
/// scope names interned per collection and BM25's term lists in one arena, 240 made the
/// estimate 1.02 × the RSS growth for 100 tenants of 2,000 and 1.03 × for one tenant of
/// 200,000; 200 brings the many-tenant case to the RSS growth, so it is not under-accounted,
/// and leaves the one-tenant case ~1 % over. History: 240 before the interning, 365 with a
/// lean part of each record (`SlotDoc`), 1,000 while collections kept whole records.
const RECORD_OVERHEAD_BYTES: u64 = 200;

/// The bytes a loaded tenant is accounted for against the budget: its collections' estimates
/// plus the measured fixed and per-record overheads above.
pub(crate) fn accounted_bytes(ti: &crate::tenant_index::TenantIndex) -> u64 {
    let records: u64 = ti.collections.values().map(|c| c.live.len()).sum();
    ti.resident_bytes() + TENANT_OVERHEAD_BYTES + records * RECORD_OVERHEAD_BYTES
}

/// `[engine.residency]`: the memory budget for loaded tenant indexes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResidencyConfig {
    /// Estimated bytes all loaded tenant indexes may hold together; 0 means no budget (every
    /// tenant stays loaded once used). Pinned tenants count against it but are never evicted.
    pub memory_budget_bytes: u64,
    /// Tenants never evicted: loaded on first use, then kept.
    pub pinned: Vec<TenantId>,
}

impl ResidencyConfig {
    pub(crate) fn pinned_set(&self) -> HashSet<TenantId> {
        self.pinned.iter().cloned().collect()
    }
}

/// One tenant's residency, for the admin API and metrics (`Engine::residency`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TenantResidency {
    /// Whether the tenant's indexes are loaded now.
    pub resident: bool,
    /// Estimated bytes of its loaded indexes (0 when not resident).
    pub resident_bytes: u64,
    /// Times its indexes were loaded since the server started.
    pub loads: u64,
    /// Times its indexes were evicted to keep within the budget since the server started.
    pub evictions: u64,
    /// Whether it is pinned (never evicted).
    pub pinned: bool,
    /// Collections waiting for a background graph build (searched exactly meanwhile).
    pub graph_builds_pending: u32,
    /// The search beam (`ef`) a search that gives none walks now on its loaded graphs, the
    /// widest if several: `graph_ef_search_calibrated`, capped at 256 while the tenant's
    /// integrity state is `stress` or `critical` (which shed wider beams); 0 when no graph is
    /// loaded.
    pub graph_ef_search: u32,
    /// The default beam its loaded graphs are calibrated to, whatever the integrity state:
    /// the configured `ef_search`, raised where the graph's calibration found that it misses
    /// the target recall on the data stored; 0 when no graph is loaded.
    pub graph_ef_search_calibrated: u32,
}

/// The whole server's residency (`Engine::residency_summary`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ResidencySummary {
    /// The configured budget in bytes; 0: none.
    pub memory_budget_bytes: u64,
    /// Estimated bytes of every loaded tenant's indexes.
    pub resident_bytes: u64,
    /// Tenants loaded now.
    pub resident_tenants: u64,
    /// Loads and evictions since the server started, over every tenant.
    pub loads: u64,
    pub evictions: u64,
    /// Every tenant loaded or used recently (a tenant idle for a minute or two drops out,
    /// `crate::slot_retirement`, its loads and evictions still counted above), most recently
    /// used first.
    pub tenants: Vec<TenantResidencyRow>,
}

/// One tenant's line of [`ResidencySummary`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TenantResidencyRow {
    pub id: TenantId,
    #[serde(flatten)]
    pub residency: TenantResidency,
}

/// Counters of one tenant's registry slot. `bytes`, `resident`, `graphs_pending`,
/// `graphs_stale`, `graph_vectors` and `graph_ef_search` change only under the slot's index write lock (`IndexRegistry::account`),
/// so they match the loaded indexes as of their last change; they are read without that
/// lock, so a scrape of the figures never waits for a tenant's index work (a graph install,
/// a save).
#[derive(Default)]
pub(crate) struct SlotCounters {
    pub bytes: AtomicU64,
    pub resident: AtomicBool,
    pub graphs_pending: AtomicU32,
    /// Of those, the graphs built with other parameters than the tenant's (`graphs_stale`).
    pub graphs_stale: AtomicU32,
    pub graph_vectors: AtomicU64,
    pub graph_ef_search: AtomicU32,
    pub loads: AtomicU64,
    pub evictions: AtomicU64,
    /// A logical clock value of the last use: larger is more recent.
    pub last_used: AtomicU64,
}

impl SlotCounters {
    /// `shedding`: the tenant's integrity state is not `normal`, so a search's default beam is
    /// capped (`crate::integrity::STRESS_MAX_EF`, as `Engine::search` caps it).
    pub fn snapshot(&self, pinned: bool, shedding: bool) -> TenantResidency {
        let calibrated = self.graph_ef_search.load(Ordering::Relaxed);
        let cap = u32::try_from(crate::integrity::STRESS_MAX_EF).unwrap_or(u32::MAX);
        TenantResidency {
            resident: self.resident.load(Ordering::Relaxed),
            resident_bytes: self.bytes.load(Ordering::Relaxed),
            loads: self.loads.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            pinned,
            graph_builds_pending: self.graphs_pending.load(Ordering::Relaxed),
            graph_ef_search: if shedding {
                calibrated.min(cap)
            } else {
                calibrated
            },
            graph_ef_search_calibrated: calibrated,
        }
    }
}
