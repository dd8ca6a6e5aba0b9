//! Strata's engine: tenants, collections and records, with the isolation rules of
//! `docs/isolation.md` enforced in one place ([`visibility`]).
//!
//! Every data-touching method takes a [`TenantScope`] (or an [`OperatorScope`] for the tenant
//! registry), which only `strata-auth` can construct. No method takes a raw tenant id from a
//! request. Methods block on storage; async callers run them on a blocking pool.

mod adaptive;
mod adaptive_cache;
#[cfg(test)]
mod adaptive_sweep_tests;
mod admission;
mod audit;
mod audit_retention;
mod backup;
#[cfg(test)]
mod blocking_pool_tests;
#[cfg(test)]
mod boost_pool_tests;
#[cfg(test)]
mod bound_credential_tests;
mod calibrate;
mod collection_delete;
mod collection_index;
mod collections;
mod config;
mod connectivity;
mod dedicated;
mod delete_steps;
mod durability;
mod embedding;
mod epoch_map;
mod error;
mod evictor;
mod evidence;
mod expiry_plan;
mod expiry_sweep;
mod feedback;
mod fusion;
mod graph_build;
mod graph_file;
mod hierarchy;
mod hits;
mod idempotency;
#[cfg(test)]
mod ids_only_pool_tests;
mod image_beside_graph;
mod image_check;
mod import_recovery;
mod index_lock;
mod index_save;
mod integrity;
mod isolation;
mod lifecycle;
mod links;
mod liveness;
mod migration_resume;
mod migration_status;
mod name_bitmaps;
#[cfg(test)]
mod narrative_principal_tests;
#[cfg(test)]
mod over_share_apply_tests;
#[cfg(test)]
mod over_share_embed_tests;
mod owed_compaction;
mod pheromone_cap;
#[cfg(test)]
mod pheromone_cap_tests;
mod plan;
#[cfg(test)]
mod purge_detail_tests;
#[cfg(test)]
mod purge_erasure_tests;
#[cfg(test)]
mod purge_sweep_tests;
mod put_steps;
mod ranking;
mod recall;
#[cfg(test)]
mod recall_cap_tests;
mod recent_purges;
mod records;
mod reembed;
mod reembed_record;
mod registry;
mod repair;
mod replay;
mod rerank;
mod residency;
mod scan;
mod scan_steps;
#[cfg(test)]
mod scan_steps_tests;
mod scope_names;
mod search;
mod search_image;
mod search_retry;
#[cfg(test)]
mod search_retry_tests;
#[cfg(test)]
mod search_stress_tests;
mod share_consent;
mod share_read_memo;
#[cfg(test)]
mod shared_write_tests;
mod shares;
mod slot_doc;
mod slot_integrity;
mod slot_retirement;
mod snapshot;
mod stats;
mod storage_cache;
mod tenant_index;
mod tenant_metadata;
mod tenants;
#[cfg(test)]
mod test_support;
mod transfer;
mod transfer_line;
#[cfg(test)]
mod transfer_tests;
mod vacuum_record;
mod verify;
mod visibility;
mod whole_tenant;
mod write_memo;
mod write_order;
#[cfg(test)]
mod write_window_tests;

use std::path::Path;
use std::sync::Arc;

pub use adaptive::AdaptiveConfig;
pub use admission::Admission;
pub use audit::{
    AuditCursor, AuditEvent, AuditQuery, AuditRow, DEFAULT_AUDIT_ROWS, ImportedFrom, MAX_AUDIT_ROWS,
};
pub use backup::{BackupJob, BackupState, BackupStatus, check_backup_dir};
pub use collection_delete::PendingCollectionDelete;
pub use collections::CollectionSpec;
pub use config::{DefaultCollection, EngineConfig};
pub use dedicated::MigrationJob;
pub use delete_steps::PendingDelete;
pub use durability::Durable;
pub use error::EngineError;
pub use evictor::{
    forbid_storage_writes_on_this_thread, storage_writes_allowed_here,
    storage_writes_on_forbidden_threads,
};
pub use expiry_sweep::ExpirySweep;
pub use feedback::{AdaptiveSweep, MAX_FEEDBACK_IDS};
pub use hierarchy::TenantNode;
pub use idempotency::{Answered, IDEMPOTENCY_RETENTION_MS, Idempotency};
pub use integrity::{
    EffectivePolicy, IntegrityConfig, IntegrityPolicy, IntegrityPolicyInput, IntegrityState,
    PolicySource, StoredIntegrityPolicy, TenantIntegrity, Transition,
};
pub use isolation::{
    IndexParams, IsolationConfig, IsolationLevel, MigrateRequest, MigrationReport, MigrationState,
    MigrationStatus, RunningMigration,
};
pub use lifecycle::{TenantLimits, TenantStatus};
pub use links::{MAX_LINKS_PER_RECORD, MAX_STORED_LINKS_PER_RECORD, RecordLinks};
pub use migration_resume::Resumed;
pub use put_steps::PendingPut;
pub use records::PutOutcome;
pub use reembed::{ReembedPlan, ReembedState, ReembedStatus};
pub use repair::RepairReport;
pub use residency::{ResidencyConfig, ResidencySummary, TenantResidency, TenantResidencyRow};
pub use scan::{Page, ScanPage, Vectors};
pub use scan_steps::{PendingCount, PendingPage, Stepped};
pub use shares::{GrantVia, IncomingShare, MAX_GRANTEES, NewShare, Share, ShareState};
pub use stats::{IntegrityCounts, TenantFigures, UsageReport};
pub use strata_auth::{OperatorScope, TenantScope};
pub use strata_embed::Embedder;
pub use tenants::{NewTenantSpec, TenantInfo, TenantUpdate, TenantUsage, limits_merged};
pub use transfer::{ExportLine, LineCounts};
pub use transfer_line::KnownFields;
pub use vacuum_record::{Erasure, VacuumFigures};
pub use verify::{UsageCounts, VerifyReport};

use registry::IndexRegistry;
use strata_auth::Permission;
use strata_store::{CredentialStore, Pending, Reader, Store, Writer};
use tenant_index::Change;

/// What a write changed, for its audit row: counts and (up to 100) record ids, never content.
fn change_summary(changes: &[Change]) -> serde_json::Value {
    let (mut upserted, mut removed, mut ids) = (0, 0, Vec::new());
    for c in changes {
        let id = match c {
            Change::Upsert { record, .. } => {
                upserted += 1;
                &record.id
            }
            Change::Remove(r) => {
                removed += 1;
                &r.record.id
            }
            Change::DropCollection(_) => continue,
        };
        if ids.len() < 100 && !ids.contains(&id.as_str()) {
            ids.push(id.as_str());
        }
    }
    serde_json::json!({"upserted": upserted, "removed": removed, "ids": ids})
}

/// In-memory index figures of one collection.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct IndexStats {
    pub collection: strata_types::CollectionName,
    pub records: u64,
    pub vectors: u64,
    /// Whether the collection is large enough to be searched on an HNSW graph.
    pub graph: bool,
    /// Whether the graph was restored from a snapshot rather than rebuilt.
    pub restored_from_snapshot: bool,
    /// Whether the collection was loaded from its persisted search image (records, vectors,
    /// text and field indexes decoded whole) rather than by reading and indexing its records.
    pub loaded_from_image: bool,
    /// Vectors deleted from the graph since it was built or restored (tombstones it still
    /// holds); past a fifth of its nodes the graph is rebuilt without them in the background.
    pub graph_deleted: u64,
    /// The beam a query that gives no `ef` is searched with on the graph: the configured
    /// `ef_search`, raised by the graph's calibration where it misses the target recall;
    /// `None` without a graph.
    pub ef_search: Option<usize>,
}

/// The file inside the data directory that holds everything but dedicated tenants' data
/// (which lives in `tenants/<key>/data.redb` beside it).
pub const DB_FILE: &str = "strata.redb";

pub use strata_store::{FileCheck, FileState};

/// Checks every page of the data files in the data directory `dir` (the server stopped), for
/// `strata check`; then, if the main file is usable, that every tenant it registers at
/// `dedicated` has its own file (only the registry knows which should be there).
pub fn check_data_dir(dir: &Path) -> Result<Vec<FileCheck>, EngineError> {
    let main = dir.join(DB_FILE);
    let mut checks = strata_store::check_files(&main)?;
    if !matches!(
        checks.first().map(|c| &c.state),
        Some(FileState::Sound | FileState::Repaired)
    ) {
        return Ok(checks);
    }
    let store = Store::open(&main)?;
    for (_, meta) in strata_store::Reads::tenants_page(&store.read()?, None, usize::MAX)? {
        let Ok(meta) = meta else { continue };
        if !matches!(
            lifecycle::TenantProfile::of(&meta).map(|p| p.isolation),
            Ok(IsolationLevel::Dedicated)
        ) {
            continue;
        }
        let path = store.dedicated_file(meta.key);
        if !path.is_file() {
            checks.push(FileCheck {
                path,
                state: FileState::Unusable(format!(
                    "missing: tenant {} is dedicated and its data file is not there",
                    meta.id
                )),
            });
        }
    }
    Ok(checks)
}

/// The engine over one data directory.
pub struct Engine {
    /// Shared with the background graph builder, which `Drop` stops first.
    store: Arc<Store>,
    config: EngineConfig,
    indexes: Arc<IndexRegistry>,
    admissions: admission::AdmissionCache,
    /// The built-in text embedder, when the server loaded one (see `embedding`).
    embedder: Option<Arc<Embedder>>,
    /// Collections being re-embedded with that embedder (see `reembed`).
    reembeds: reembed::Jobs,
    /// The last isolation-level migration of each tenant since start (see `isolation`).
    migrations: isolation::Migrations,
    /// The backups this server ran (see `backup`).
    backups: backup::Backups,
    /// Loaded adaptive reranking namespaces (see `adaptive_cache`).
    adaptive: adaptive_cache::AdaptiveCache,
    /// Tenants known live, so reads skip the registry row (see `liveness`).
    live: liveness::LiveTenants,
    /// Decoded registry rows and collections of recent writes (see `write_memo`).
    memos: write_memo::WriteMemos,
    /// Ids purged moments ago: creating one again waits for a new second (see
    /// `recent_purges`).
    recent_purges: recent_purges::RecentPurges,
    /// A compaction an erasure could not run at once (see `owed_compaction`).
    owed_compaction: owed_compaction::OwedCompaction,
    /// When each grantee's reads of a share last wrote to its owner's log (see
    /// `share_read_memo`).
    read_by:
        share_read_memo::ReadByMemo<(strata_store::TenantKey, strata_store::TenantKey, String)>,
    /// When each owner's unanswered offers last wrote a row into each grantee's log (see
    /// `shares::OfferRows`).
    offer_rows: shares::OfferRows,
}

impl Engine {
    /// Opens (creating if needed) the data directory `dir`.
    pub fn open(dir: &Path, config: EngineConfig) -> Result<Engine, EngineError> {
        config.validate()?;
        // Said plainly: creating it would fail with the file system's "File exists".
        if dir.exists() && !dir.is_dir() {
            return Err(EngineError::Store(strata_store::StoreError::Io {
                path: dir.display().to_string(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotADirectory,
                    "the data directory is a file, not a directory; give a directory (it is \
                     created if missing)",
                ),
            }));
        }
        let io = |path: &Path, source| {
            EngineError::Store(strata_store::StoreError::Io {
                path: path.display().to_string(),
                source,
            })
        };
        // The directories this start creates, so that their names are synced too: a power
        // loss after the first acknowledged writes must not take the new directory along.
        let created: Vec<&Path> = dir
            .ancestors()
            .take_while(|a| !a.as_os_str().is_empty() && !a.exists())
            .collect();
        std::fs::create_dir_all(dir).map_err(|source| io(dir, source))?;
        for made in created {
            let parent = match made.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            std::fs::File::open(parent)
                .and_then(|d| d.sync_all())
                .map_err(|source| io(parent, source))?;
        }
        // `usize::MAX` only on a 32-bit host asked for more than it can address.
        let cache = usize::try_from(config.storage_cache_bytes).unwrap_or(usize::MAX);
        let options = strata_store::FileOptions {
            cache_bytes: cache,
            fast_recovery_from_bytes: (config.fast_recovery_from_bytes > 0)
                .then_some(config.fast_recovery_from_bytes),
        };
        let store = Arc::new(Store::open_with(&dir.join(DB_FILE), options)?);
        dedicated::attach_files(&store)?;
        store.set_group_commit(config.group_commit);
        let jwt_leeway_secs = config.jwt_leeway_secs;
        store.set_write_batching(config.batch_writes);
        store.set_change_log_cap(config.change_log_cap);
        let indexes = Arc::new(IndexRegistry::new(
            &config.residency,
            graph_build::GraphBuilder::new(config.background_priority),
        ));
        graph_build::GraphBuilder::start(&indexes, Arc::clone(&store));
        if let Err(e) = evictor::Evictor::start(&indexes, Arc::clone(&store)) {
            indexes.builder.shutdown();
            return Err(EngineError::Index(format!(
                "cannot start the evictor thread: {e}"
            )));
        }
        let adaptive = adaptive_cache::AdaptiveCache::new(config.adaptive.max_namespaces);
        let last_purge = store.last_purge_at()?;
        let engine = Engine {
            store,
            config,
            indexes,
            admissions: admission::AdmissionCache::default(),
            embedder: None,
            reembeds: reembed::Jobs::default(),
            migrations: isolation::Migrations::default(),
            backups: backup::Backups::default(),
            adaptive,
            live: liveness::LiveTenants::default(),
            memos: Default::default(),
            recent_purges: recent_purges::RecentPurges::after_restart(last_purge, jwt_leeway_secs),
            owed_compaction: owed_compaction::OwedCompaction::new(dir.join(DB_FILE)),
            read_by: Default::default(),
            offer_rows: Default::default(),
        };
        // An erasure's vacuum that failed before the last stop (or that a crash cut short),
        // or a purged range whose erasure was cut short: run now, the vacuum erasing the range
        // first (or owed again, if it fails again).
        // An owed row that does not decode is logged and counted, not fatal: the server opens
        // and the other ranges are erased. The vacuum notes such rows itself (once).
        let owed = engine.store.owed_erasures()?;
        if engine.store.compaction_owed()? || !owed.keys.is_empty() {
            engine.vacuum()?;
        } else {
            engine
                .owed_compaction
                .record
                .note_malformed_owed(&owed.malformed);
        }
        Ok(engine)
    }

    /// Installs the built-in embedder: default collections marked `embed` are created with it
    /// for new tenants, and records and queries of collections that declare it are embedded.
    /// Fails if such a default collection's dimension is not the embedder's.
    pub fn set_embedder(&mut self, embedder: Arc<Embedder>) -> Result<(), EngineError> {
        for c in self.config.default_collections.iter().filter(|c| c.embed) {
            if c.dim as usize != embedder.dim() {
                return Err(EngineError::BadRequest(format!(
                    "default collection {}: embed = true needs dim {}, the embedder's, not {}",
                    c.name,
                    embedder.dim(),
                    c.dim
                )));
            }
        }
        self.embedder = Some(embedder);
        Ok(())
    }

    /// The loaded embedder, if any.
    pub fn embedder(&self) -> Option<&Arc<Embedder>> {
        self.embedder.as_ref()
    }

    /// The authentication layer's handle: credential rows and tenant look-ups, and nothing of
    /// any tenant's data (which only [`Engine::read_tenant`] and [`Engine::write_tenant`]
    /// reach).
    pub fn credentials(&self) -> CredentialStore<'_> {
        self.store.credentials()
    }

    /// Whether storage answers, for readiness probes.
    /// Why the main data file failed, if it did (see `StoreError::Unavailable`).
    pub fn storage_failure(&self) -> Option<String> {
        self.store.failure()
    }

    pub fn check_storage(&self) -> Result<(), EngineError> {
        if let Some(why) = self.store.failure() {
            return Err(strata_store::StoreError::Unavailable(format!(
                "{why}; writes are refused until the server is restarted"
            ))
            .into());
        }
        self.store.read()?;
        Ok(())
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Saves a snapshot of every loaded tenant index that changed since it was loaded or last
    /// saved, so the next start restores graphs instead of rebuilding them. Call on shutdown
    /// (and periodically); it blocks each tenant's writes only while that tenant is saved.
    /// Returns how many tenants were saved.
    pub fn persist_indexes(&self) -> Result<usize, EngineError> {
        self.indexes.persist(&self.store)
    }

    /// Saves the loaded tenant indexes that hold at least `min_changes` record changes no save
    /// has captured yet: a tenant that stays resident (pinned, or under no memory pressure) is
    /// otherwise saved only at eviction and clean shutdown, so a crash would leave its next
    /// load to replay everything it was written since (and its change log, trimmed by saves,
    /// would sit at its cap). The server runs this
    /// every `server.index_checkpoint_interval_secs`. Returns how many tenants were saved.
    pub fn checkpoint_indexes(&self, min_changes: u64) -> Result<usize, EngineError> {
        self.indexes.checkpoint(&self.store, min_changes.max(1))
    }

    /// Drops what the engine holds in memory for tenants idle since the previous call and
    /// holding nothing loaded (`crate::slot_retirement`), so that memory does not grow with
    /// every tenant served since the start. The server runs this every
    /// [`Engine::RETIRE_IDLE_EVERY`]; a tenant is dropped after one to two of those idle.
    /// Returns how many tenants were dropped.
    pub fn retire_idle_tenants(&self) -> usize {
        self.indexes.retire_idle_slots()
    }

    /// How often the server calls [`Engine::retire_idle_tenants`].
    pub const RETIRE_IDLE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

    /// Blocks until every background graph build queued so far has finished; for tests and
    /// benchmarks that want graphs in place before they measure.
    pub fn wait_for_graph_builds(&self) {
        self.indexes.builder.wait_idle();
    }

    /// One tenant's residency: whether its indexes are loaded, their estimated bytes, its
    /// loads and evictions. Cheap (no storage read beyond the tenant look-up); for the admin
    /// API and metrics.
    pub fn residency(
        &self,
        _op: &OperatorScope,
        id: &strata_types::TenantId,
    ) -> Result<TenantResidency, EngineError> {
        let meta = self.tenant_meta(id)?;
        Ok(self.residency_of(&meta))
    }

    /// [`Engine::residency`] of a tenant read from the registry: pinned by its stored level
    /// too, which its slot learns only when its indexes load.
    pub(crate) fn residency_of(&self, meta: &strata_store::TenantMeta) -> TenantResidency {
        let mut residency = self.indexes.residency(meta.key, &meta.id);
        residency.pinned |=
            lifecycle::TenantProfile::of(meta).is_ok_and(|p| registry::pinned_by_level(&p));
        residency
    }

    /// One tenant's integrity: state, the signals behind it, its policy and recent moves.
    pub fn integrity(
        &self,
        _op: &OperatorScope,
        id: &strata_types::TenantId,
    ) -> Result<TenantIntegrity, EngineError> {
        let meta = self.tenant_meta(id)?;
        let own = lifecycle::TenantProfile::of(&meta)?.own_integrity_policy(id)?;
        let effective = self.config.integrity.effective(id, own);
        let (policy, source) = (&effective.policy, effective.source);
        Ok(match self.indexes.get(meta.key) {
            Some(slot) => slot.with_tracker(|t| t.report(policy, source)),
            None => integrity::Tracker::default().report(policy, source),
        })
    }

    /// Residency over the whole server: budget, total, and every tenant loaded or used
    /// recently (`crate::slot_retirement`), with the loads and evictions of all since start.
    pub fn residency_summary(&self, _op: &OperatorScope) -> ResidencySummary {
        self.indexes.summary()
    }

    /// What the engine holds in memory for the caller's tenant, per collection; needs an unbound
    /// credential with `read` and `all_principals` (`crate::whole_tenant`).
    pub fn index_stats(&self, scope: &TenantScope) -> Result<Vec<IndexStats>, EngineError> {
        // Counts of every domain's and principal's records.
        whole_tenant::require_whole_tenant(
            scope,
            Permission::Read,
            whole_tenant::Reach::EveryPrincipal,
            "reading the index figures",
        )?;
        self.read_tenant(scope, Permission::Read, |_| Ok(()))?;
        self.indexes
            .with_index(&self.store, scope.key(), scope.tenant(), |ti| {
                let mut stats: Vec<IndexStats> = ti
                    .collections
                    .iter()
                    .map(|(name, ci)| IndexStats {
                        collection: name.clone(),
                        records: ci.live.len(),
                        vectors: ci.with_vector.len(),
                        graph: ci.graph.is_some(),
                        restored_from_snapshot: ci.restored,
                        loaded_from_image: ci.from_image,
                        graph_deleted: ci.graph_deleted,
                        ef_search: ci.graph.as_ref().map(|g| g.default_ef()),
                    })
                    .collect();
                stats.sort_by(|a, b| a.collection.cmp(&b.collection));
                Ok(stats)
            })
    }

    /// The one door for reads of a tenant's data, mirroring [`Engine::write_tenant`]: checks
    /// that the credential holds `permission` and that the tenant is live (registered under the
    /// scope's incarnation, neither suspended nor deleted), then runs `f` on one consistent
    /// snapshot.
    pub(crate) fn read_tenant<R>(
        &self,
        scope: &TenantScope,
        permission: Permission,
        f: impl FnOnce(&Reader) -> Result<R, EngineError>,
    ) -> Result<R, EngineError> {
        f(&self.tenant_snapshot(scope, permission)?)
    }

    /// [`Engine::read_tenant`]'s checks, then its storage snapshot, for a caller that keeps it
    /// across steps (`crate::scan_steps`).
    pub(crate) fn tenant_snapshot(
        &self,
        scope: &TenantScope,
        permission: Permission,
    ) -> Result<Reader, EngineError> {
        if !scope.grant().permissions.has(permission) {
            return Err(EngineError::PermissionDenied(permission));
        }
        // Liveness from memory while no registry row changed since it was read (`liveness`
        // says why that is never stale once a suspend, delete or purge has returned);
        // otherwise from this snapshot's registry, and remembered under the epoch read before
        // the snapshot began.
        let before = self.store.registry_epoch();
        let r = self.store.read()?;
        if !self.live.is_live(self.store.registry_epoch(), scope) {
            tenants::check_live(&r, scope)?;
            self.live.remember(before, scope);
        }
        Ok(r)
    }

    /// [`Engine::read_tenant`]'s checks alone: from memory while the tenant is known live
    /// (`liveness`), from a storage snapshot otherwise. For a request that checks the tenant
    /// before work that needs no snapshot yet.
    pub(crate) fn check_readable(
        &self,
        scope: &TenantScope,
        permission: Permission,
    ) -> Result<(), EngineError> {
        if !scope.grant().permissions.has(permission) {
            return Err(EngineError::PermissionDenied(permission));
        }
        if self.live.is_live(self.store.registry_epoch(), scope) {
            return Ok(());
        }
        self.read_tenant(scope, permission, |_| Ok(()))
    }

    /// Runs a write for one tenant: one durable transaction (after checking the tenant still
    /// exists), then the changes it reports are applied to the tenant's loaded indexes, in
    /// commit order. The tenant's write order is held only until the commit is applied, not
    /// while it waits for its fsync, so concurrent writes of one tenant share fsyncs like those
    /// of different tenants (group commit, see `Store::write_pending`); the call returns once
    /// the write is durable, or, inside [`Engine::deferring_durability`], once it committed.
    pub(crate) fn write_tenant<R>(
        &self,
        scope: &TenantScope,
        action: &str,
        f: impl FnOnce(&mut Writer<'_>, &mut Vec<Change>) -> Result<R, EngineError>,
    ) -> Result<R, EngineError> {
        self.write_tenant_inner(scope, action, true, |w, changes| Ok((f(w, changes)?, None)))
    }

    /// [`Engine::write_tenant`] for tenant state beside its records (adaptive reranking
    /// state): the same checks, one durable audited transaction, but no record changes, so the
    /// data version that index snapshots are matched against stays as it is. `f` returns its
    /// result and the detail of its audit row.
    pub(crate) fn write_tenant_state<R>(
        &self,
        scope: &TenantScope,
        action: &str,
        f: impl FnOnce(&mut Writer<'_>) -> Result<(R, serde_json::Value), EngineError>,
    ) -> Result<R, EngineError> {
        self.write_tenant_inner(scope, action, false, |w, _| {
            let (result, detail) = f(w)?;
            Ok((result, Some(detail)))
        })
    }

    fn write_tenant_inner<R>(
        &self,
        scope: &TenantScope,
        action: &str,
        records: bool,
        f: impl FnOnce(
            &mut Writer<'_>,
            &mut Vec<Change>,
        ) -> Result<(R, Option<serde_json::Value>), EngineError>,
    ) -> Result<R, EngineError> {
        self.write_in_order(scope, Order::Held, |stage, changes, touched| {
            // The tenant's own file when it is dedicated: one file per write.
            self.store.write_pending_for(scope.key(), |w| {
                let live = &self.memos.live;
                let done = tenant_transaction(w, scope, live, action, records, changes, touched, f);
                stage.set(done.is_ok());
                done
            })
        })
    }

    /// A transaction of the tenant that changes no record, run for its durability: answered
    /// once every commit before it is durable too (a kept answer it confirms, say). Admitted
    /// in any integrity state, since the write it answers for was made before; audited as
    /// `action` with `detail`.
    pub(crate) fn confirm_in_write<R>(
        &self,
        scope: &TenantScope,
        action: &str,
        detail: serde_json::Value,
        f: impl FnOnce(&mut Writer<'_>) -> Result<R, EngineError>,
    ) -> Result<R, EngineError> {
        self.write_in_order_admitted(scope, Order::Held, |stage, changes, touched| {
            self.store.write_pending_for(scope.key(), |w| {
                let live = &self.memos.live;
                let done =
                    tenant_transaction(w, scope, live, action, false, changes, touched, |w, _| {
                        Ok((f(w)?, Some(detail)))
                    });
                stage.set(done.is_ok());
                done
            })
        })
    }

    /// [`Engine::write_tenant`] with `prepare` run first, under the tenant's write-order lock
    /// but before the storage transaction opens: slow work that must see the tenant's records
    /// as the transaction will (no write of the tenant commits in between) without holding the
    /// storage write lock, which every tenant's writes wait for (a forward pass). Only this
    /// tenant's writes wait for `prepare`.
    pub(crate) fn write_tenant_prepared<P, R>(
        &self,
        scope: &TenantScope,
        action: &str,
        prepare: impl FnOnce() -> Result<P, EngineError>,
        f: impl FnOnce(&mut Writer<'_>, &mut Vec<Change>, P) -> Result<R, EngineError>,
    ) -> Result<R, EngineError> {
        self.write_in_order(scope, Order::Held, |stage, changes, touched| {
            let prepared = prepare()?;
            self.store.write_pending_for(scope.key(), |w| {
                let live = &self.memos.live;
                let done =
                    tenant_transaction(w, scope, live, action, true, changes, touched, |w, c| {
                        Ok((f(w, c, prepared)?, None))
                    });
                stage.set(done.is_ok());
                done
            })
        })
    }

    /// [`Engine::write_tenant`] for a small record write that may share its storage
    /// transaction with concurrent writes of any tenants, its own included
    /// (`Store::write_batched_for_ordered`, `crate::write_order`): the same checks, rows and
    /// index updates, but `f` may run more than once (again, on a state without a write that
    /// failed beside it); only its last run counts. Everything `f` reads, it reads in its
    /// transaction: other writes of the tenant may commit up to the moment it runs.
    pub(crate) fn write_tenant_batched<R: Send>(
        &self,
        scope: &TenantScope,
        action: &str,
        mut f: impl FnMut(&mut Writer<'_>, &mut Vec<Change>) -> Result<R, EngineError> + Send,
    ) -> Result<R, EngineError> {
        self.write_in_order(scope, Order::Shared, |stage, changes, touched| {
            let committing = || stage.committing();
            self.store.write_batched_for_ordered(
                scope.key(),
                |w| {
                    // A run again starts from nothing: the last run's changes were rolled back
                    // with its transaction.
                    changes.clear();
                    *touched = feedback::Touched::default();
                    let f = |w: &mut Writer<'_>, c: &mut Vec<Change>| Ok((f(w, c)?, None));
                    let live = &self.memos.live;
                    let done =
                        tenant_transaction(w, scope, live, action, true, changes, touched, f);
                    stage.set(done.is_ok());
                    done
                },
                &committing,
            )
        })
    }

    /// The frame of every tenant write: refused in the critical state; `commit` runs in the
    /// tenant's write order (`order`), collecting the index changes it made (applied after it
    /// commits) and the records it touched (whose adaptive state is forgotten); answered once
    /// durable.
    fn write_in_order<R>(
        &self,
        scope: &TenantScope,
        order: Order,
        commit: impl FnOnce(
            &registry::CommitStage,
            &mut Vec<Change>,
            &mut feedback::Touched,
        ) -> Result<(R, Pending), EngineError>,
    ) -> Result<R, EngineError> {
        self.refuse_critical(scope)?;
        self.write_in_order_admitted(scope, order, commit)
    }

    /// [`Engine::write_in_order`] past the integrity gate: for a transaction that writes no
    /// record (see [`Engine::confirm_in_write`]).
    fn write_in_order_admitted<R>(
        &self,
        scope: &TenantScope,
        order: Order,
        commit: impl FnOnce(
            &registry::CommitStage,
            &mut Vec<Change>,
            &mut feedback::Touched,
        ) -> Result<(R, Pending), EngineError>,
    ) -> Result<R, EngineError> {
        let mut touched = feedback::Touched::default();
        let (key, id) = (scope.key(), scope.tenant());
        let f = |stage: &registry::CommitStage| {
            let mut changes = Vec::new();
            let committed = commit(stage, &mut changes, &mut touched)?;
            Ok((committed, changes))
        };
        let written = match order {
            Order::Held => self.indexes.write(&self.store, key, id, f),
            Order::Shared => self.indexes.write_shared(&self.store, key, id, f),
        };
        let (result, pending) = written.map_err(|e| e.seen_by(scope))?;
        self.adaptive_forget(scope.key(), &touched);
        durability::wait_or_defer(pending)?;
        Ok(result)
    }

    /// Refuses a write of a tenant in the critical integrity state.
    fn refuse_critical(&self, scope: &TenantScope) -> Result<(), EngineError> {
        // A tenant without a slot was never sampled: normal.
        let Some(slot) = self.indexes.get(scope.key()) else {
            return Ok(());
        };
        if slot.integrity_state() == IntegrityState::Critical {
            // Still a sample: the state can only fall again if it keeps being fed.
            let policy = self.integrity_policy(scope)?;
            self.indexes.integrity_sample(&slot, &policy.policy, None);
            if slot.integrity_state() == IntegrityState::Critical {
                return Err(EngineError::TenantCritical(scope.tenant().clone()));
            }
        }
        Ok(())
    }
}

/// How a tenant write holds the tenant's write order (`crate::write_order`).
enum Order {
    /// Exclusively, from before its transaction until its changes are applied: no other
    /// write of the tenant commits meanwhile (a write that prepares outside its transaction).
    Held,
    /// Shared with the tenant's other shared writes, applied in commit order.
    Shared,
}

/// What every tenant write does inside its transaction: the liveness check, the write itself,
/// then the data version, the adaptive state of removed records, the usage accounting
/// against the tenant's limits, and the audit row.
#[allow(clippy::too_many_arguments)]
fn tenant_transaction<R>(
    w: &mut Writer<'_>,
    scope: &TenantScope,
    live: &strata_store::DecodeMemo<write_memo::LiveRow>,
    action: &str,
    records: bool,
    changes: &mut Vec<Change>,
    touched: &mut feedback::Touched,
    f: impl FnOnce(
        &mut Writer<'_>,
        &mut Vec<Change>,
    ) -> Result<(R, Option<serde_json::Value>), EngineError>,
) -> Result<R, EngineError> {
    let row = write_memo::check_live(w, scope, live)?;
    let (result, detail) = f(w, changes)?;
    // Only a write that changes the indexes makes saved snapshots and search images stale;
    // links, replays and no-op writes keep them, so the tenant's next load stays cheap.
    if records && !changes.is_empty() {
        snapshot::bump_version(w, scope.key())?;
    }
    // Deleted records take their adaptive state with them.
    feedback::forget_removed(w, scope.key(), changes, touched)?;
    lifecycle::account(w, scope.key(), &row.profile().limits, changes)?;
    let detail = detail.unwrap_or_else(|| change_summary(changes));
    audit::append(w, scope.key(), audit::tenant_event(scope, action, detail))?;
    Ok(result)
}

impl Drop for Engine {
    /// Stops the graph builder before the store closes, so the database file is released
    /// when the engine is.
    fn drop(&mut self) {
        self.indexes.builder.shutdown();
        self.indexes.evictor.shutdown();
        self.owed_compaction.stop();
    }
}
