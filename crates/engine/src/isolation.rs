//! Isolation levels (`shared`, `partition`, `dedicated`) and online migration between them.
//!
//! A tenant's level lives in its profile (the registry entry). `shared` tenants are loaded on
//! demand, evictable, and use the server's index parameters. `partition` tenants are pinned
//! (never evicted by residency) and may carry their own HNSW parameters, used whenever their
//! graphs are (re)built. `dedicated` tenants are pinned too, with their own parameters, and their
//! data lives in its own storage file (see `dedicated`).
//!
//! shared ↔ partition moves no data: one transaction changes the level (and audits it in the
//! tenant's log and the server's), then the loaded indexes are pinned or unpinned and, when the
//! graph parameters change, the background graph builder rebuilds the graphs while searches
//! keep using the old ones (exactly as before the migration) until each new graph is swapped
//! in. To or from `dedicated` the data moves too, online (see `dedicated`), and the level
//! changes in the same transaction that ends the move.

use serde::{Deserialize, Serialize};
use strata_auth::OperatorScope;
use strata_index::HnswParams;
use strata_store::{Reads, TenantKey};
use strata_types::{Millis, TenantId};

use crate::dedicated::MigrationJob;
use crate::lifecycle::{TenantProfile, TenantStatus, usage};
use crate::{Engine, EngineError, audit};

/// How a tenant is isolated from the others on this node.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum IsolationLevel {
    /// Loaded on demand, evictable, the server's index parameters.
    #[default]
    Shared,
    /// Always resident once loaded (never evicted), its own index parameters.
    Partition,
    /// Its own storage file in its own directory, its own index parameters, never evicted.
    Dedicated,
}

impl IsolationLevel {
    pub fn is_shared(&self) -> bool {
        *self == IsolationLevel::Shared
    }

    /// Whether residency must never evict the tenant.
    pub fn pinned(&self) -> bool {
        !self.is_shared()
    }
}

/// A tenant's own HNSW parameters; an absent one is the server default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct IndexParams {
    /// Graph connectivity (edges per node), 2 to 256. Default 16.
    #[schema(minimum = 2, maximum = 256)]
    pub m: Option<u32>,
    /// Candidate list while inserting, 1 to 4096. Default 128.
    #[schema(minimum = 1, maximum = 4096)]
    pub ef_construction: Option<u32>,
    /// Default search beam for queries that give no `ef`, 1 to 4096. Default 64.
    #[schema(minimum = 1, maximum = 4096)]
    pub ef_search: Option<u32>,
}

const MAX_EF: u32 = 4096;

impl IndexParams {
    pub fn is_empty(&self) -> bool {
        *self == IndexParams::default()
    }

    /// Checks each parameter; the error names the field (`index_params.m`, ...).
    pub fn validate(&self) -> Result<(), EngineError> {
        let check = |name: &str, v: Option<u32>, lo: u32, hi: u32| match v {
            Some(v) if !(lo..=hi).contains(&v) => Err(EngineError::BadRequest(format!(
                "index_params.{name}: must be {lo} to {hi}, not {v}"
            ))),
            _ => Ok(()),
        };
        check("m", self.m, 2, 256)?;
        check("ef_construction", self.ef_construction, 1, MAX_EF)?;
        check("ef_search", self.ef_search, 1, MAX_EF)
    }

    /// The parameters graphs are built and searched with.
    pub(crate) fn effective(&self) -> HnswParams {
        let d = HnswParams::default();
        HnswParams {
            m: self.m.map_or(d.m, |v| v as usize),
            ef_construction: self
                .ef_construction
                .map_or(d.ef_construction, |v| v as usize),
            ef_search: self.ef_search.map_or(d.ef_search, |v| v as usize),
            // An operator's `ef_search` is used exactly; the default may be raised by the
            // graph's calibration (`strata_index::hnsw_calibrate`).
            auto_ef: self.ef_search.is_none(),
        }
    }
}

/// The parameters a tenant's graphs use at its level: `shared` ignores its own.
pub(crate) fn effective_params(profile: &TenantProfile) -> HnswParams {
    match profile.isolation {
        IsolationLevel::Shared => HnswParams::default(),
        _ => profile.index_params.unwrap_or_default().effective(),
    }
}

/// `[engine.isolation]`: automatic promotion, and how many data moves may run at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IsolationConfig {
    /// A `shared` tenant holding at least this many vectors is promoted to `partition` by the
    /// periodic sweep; 0 (the default) turns automatic promotion off.
    pub promote_partition_vectors: u64,
    /// Data moves (to or from `dedicated`) that may run at once on the server; one more is
    /// refused with `409 CONFLICT` until one ends. Each copies a whole tenant through the
    /// main file's single writer, so more at once mostly slows every writer. Default 1 (0
    /// counts as 1).
    pub max_concurrent_moves: usize,
    /// Whether the server, once started, resumes in the background every data move that a
    /// crash or shutdown cut short (its status `interrupted`), from a clean copy, within
    /// `max_concurrent_moves`. Default `true`; `false` leaves them `interrupted` until an
    /// operator migrates the tenant again (or cancels them).
    pub resume_interrupted_migrations: bool,
}

impl Default for IsolationConfig {
    fn default() -> Self {
        IsolationConfig {
            promote_partition_vectors: 0,
            max_concurrent_moves: 1,
            resume_interrupted_migrations: true,
        }
    }
}

/// `POST /v1/admin/tenants/{id}/migrate`.
#[derive(Debug, Clone, PartialEq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MigrateRequest {
    pub target: IsolationLevel,
    /// The tenant's own index parameters at the target level (ignored by `shared`); absent:
    /// keep the ones it has.
    #[serde(default)]
    pub index_params: Option<IndexParams>,
    /// Only report what the migration would do.
    #[serde(default)]
    pub dry_run: bool,
}

/// What a migration moves and costs (the dry-run report, also returned when it starts).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct MigrationReport {
    pub from: IsolationLevel,
    pub to: IsolationLevel,
    pub dry_run: bool,
    /// Whether stored data moves (only to or from `dedicated`, its own file).
    pub moves_data: bool,
    /// Records, vectors and stored bytes that move (0 when no data moves).
    pub records: u64,
    pub vectors: u64,
    pub bytes: u64,
    /// Whether graphs are rebuilt in the background because the graph parameters change.
    pub rebuilds_indexes: bool,
    /// Vectors in the graphs to rebuild.
    pub rebuild_vectors: u64,
    /// Estimated duration, from this server's measured graph build rate scaled to the new
    /// parameters (`m × ef_construction`); `null` before it has built any graph.
    #[schema(value_type = Option<i64>)]
    pub estimated_ms: Option<u64>,
    /// Graph build rate behind the estimate (vectors per second at the new parameters).
    pub measured_vectors_per_sec: Option<f64>,
    pub index_params: IndexParams,
}

/// `GET /v1/admin/tenants/{id}/migration`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct MigrationStatus {
    /// The tenant's level now.
    pub level: IsolationLevel,
    /// `none` (never migrated), `copying` (data moving to or from the tenant's own file; the
    /// old level serves meanwhile), `catching_up` (the final flip: the tenant's writes wait
    /// for it), `cleaning_up` (flipped: the tenant serves at its new level while its old copy
    /// is removed; another migration of it is still refused), `rebuilding` (level changed, graphs being rebuilt in the background; searches
    /// use the old graphs meanwhile), `done`, `failed` (see `error`; the tenant stays whole
    /// at its old level), `interrupted` (a server shutdown or crash stopped it before its
    /// flip: the tenant stays whole at its old level; the next start resumes it unless
    /// `engine.isolation.resume_interrupted_migrations` is off) or `cancelled` (an operator
    /// stopped it before its flip, or cancelled an interrupted one: the tenant stays whole at
    /// its old level and it is not resumed). Kept across restarts.
    pub state: MigrationState,
    pub from: Option<IsolationLevel>,
    pub to: Option<IsolationLevel>,
    #[schema(value_type = Option<i64>)]
    pub started_at: Option<Millis>,
    /// When the last migration ended (absent while it runs, and for one a crash cut short).
    #[schema(value_type = Option<i64>)]
    pub finished_at: Option<Millis>,
    /// Collections waiting for a graph build, whatever its cause.
    pub graph_builds_pending: u32,
    /// Whether the last migration moved stored data (to or from `dedicated`).
    pub moves_data: bool,
    /// Storage keys copied so far by the last data migration, of `keys_total` (counted when
    /// the copy began, and grown with the copy when the catch-up copies the tenant's writes
    /// made meanwhile: `keys_copied` never exceeds it).
    pub keys_copied: u64,
    pub keys_total: u64,
    /// Why the last data migration failed.
    pub error: Option<String>,
    /// Whether the server will resume this `interrupted` move by itself (in the background
    /// once started, when a move slot is free; a soft-deleted tenant's once it is restored):
    /// wait for it rather than asking again. False
    /// for moves an older version left, for one whose runs crashed the server 3 times (it is
    /// then `failed`), and when `engine.isolation.resume_interrupted_migrations` is off.
    pub will_resume: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MigrationState {
    None,
    Copying,
    CatchingUp,
    CleaningUp,
    /// Done, and some of the tenant's loaded graphs, built with other parameters, wait for
    /// their rebuild with the new ones (they serve meanwhile). Other graph builds (a
    /// compaction, a collection grown past the graph threshold) count in
    /// `graph_builds_pending` only.
    Rebuilding,
    Done,
    Failed,
    Interrupted,
    Cancelled,
}

impl MigrationState {
    /// The states of a data move under way.
    pub fn is_running(self) -> bool {
        matches!(
            self,
            MigrationState::Copying | MigrationState::CatchingUp | MigrationState::CleaningUp
        )
    }
}

/// A data move under way: the tenant, and its status as `GET .../migration` answers it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RunningMigration {
    #[schema(value_type = String)]
    pub tenant: TenantId,
    pub status: MigrationStatus,
}

/// The data moves of this process, by tenant (the last migration of each tenant, ended, is in
/// its stored row; see `migration_status`).
pub(crate) type Migrations = crate::dedicated::Copies;

/// Whether a migration between these levels moves the tenant's stored data.
/// The audit action of an operator's migration (the promotion sweep's is `tenant.promote`).
pub(crate) const MIGRATE_ACTION: &str = "tenant.migrate";

pub(crate) fn moves_data(from: IsolationLevel, to: IsolationLevel) -> bool {
    (from == IsolationLevel::Dedicated) != (to == IsolationLevel::Dedicated)
}

impl Engine {
    /// Plans, or (without `dry_run`) performs, a migration between levels. To or from
    /// `dedicated` it returns once the data has moved (reads and writes go on meanwhile); see
    /// [`Engine::start_migration`] to run that move in the background.
    pub fn migrate_tenant(
        &self,
        op: &OperatorScope,
        id: &TenantId,
        req: MigrateRequest,
    ) -> Result<MigrationReport, EngineError> {
        let (report, job) = self.start_migration(op, id, req)?;
        if let Some(job) = job {
            job.run(self)?;
        }
        Ok(report)
    }

    /// Plans a migration and, without `dry_run`, starts it. shared ↔ partition is done when
    /// this returns (one transaction). To or from `dedicated` the move is checked, registered
    /// (another migration of the tenant is refused with a conflict until it ends) and recorded
    /// as running, and handed back as a [`MigrationJob`] to run, on any thread.
    pub fn start_migration(
        &self,
        op: &OperatorScope,
        id: &TenantId,
        req: MigrateRequest,
    ) -> Result<(MigrationReport, Option<MigrationJob>), EngineError> {
        self.start_migration_of(op, id, None, req)
    }

    /// Migrates the incarnation of tenant `id` stored under `key`, and no other: refused with
    /// a conflict when the id names another one (purged and created again). An import moves
    /// the tenant it created this way, never one that replaced it while it ran.
    pub(crate) fn migrate_incarnation(
        &self,
        op: &OperatorScope,
        id: &TenantId,
        key: TenantKey,
        req: MigrateRequest,
    ) -> Result<MigrationReport, EngineError> {
        let (report, job) = self.start_migration_of(op, id, Some(key), req)?;
        if let Some(job) = job {
            job.run(self)?;
        }
        Ok(report)
    }

    /// [`Engine::start_migration`], of the incarnation stored under `key` when one is given.
    /// Whatever it plans is tied to the storage key read here: the level change and the data
    /// move's registration each check again that the id still names it.
    fn start_migration_of(
        &self,
        op: &OperatorScope,
        id: &TenantId,
        key: Option<TenantKey>,
        req: MigrateRequest,
    ) -> Result<(MigrationReport, Option<MigrationJob>), EngineError> {
        if let Some(p) = &req.index_params {
            p.validate()?;
        }
        let meta = self.tenant_meta(id)?;
        if key.is_some_and(|k| k != meta.key) {
            return Err(replaced(id));
        }
        let profile = TenantProfile::of(&meta)?;
        if profile.status == TenantStatus::Deleted {
            return Err(crate::tenants::deleted(id));
        }
        let params = req
            .index_params
            .or(profile.index_params)
            .unwrap_or_default();
        let mut next = profile.clone();
        next.isolation = req.target;
        next.index_params = (!params.is_empty()).then_some(params);
        let (old, new) = (effective_params(&profile), effective_params(&next));
        let rebuild = old.m != new.m || old.ef_construction != new.ef_construction;
        let graph_vectors = self.indexes.graph_vectors(meta.key);
        let r = self.store.read()?;
        let u = usage(&r, meta.key)?;
        // Unloaded tenants are rebuilt at their next load only if their snapshot's
        // connectivity or construction beam differs, so count what their graphs would hold:
        // their vectors; none when even all of them in the widest collection would stay under
        // the graph threshold (such collections have no graph).
        let widest = r.collections(meta.key)?.iter().map(|c| c.dim).max();
        let unloaded = match widest {
            Some(dim) if crate::collection_index::graph_pays(u.vectors, dim as usize) => u.vectors,
            _ => 0,
        };
        drop(r);
        let rebuild_vectors = if rebuild {
            graph_vectors.unwrap_or(unloaded)
        } else {
            0
        };
        let rate = self.indexes.builder.vectors_per_sec(new);
        let moves = moves_data(profile.isolation, req.target);
        // Scanned once: the job's `keys_total` and copy rate use the same figures.
        let size = if moves {
            Some(self.store.range_size(meta.key)?)
        } else {
            None
        };
        let bytes = size.map_or(0, |s| s.bytes);
        let rebuild_ms = rate.map(|r| (rebuild_vectors as f64 / r * 1000.0).ceil() as u64);
        // A data move is estimated from the copy rate of the last one on this server.
        let copy_ms = match (moves, self.migrations.bytes_per_sec()) {
            (false, _) => Some(0),
            (true, Some(r)) => Some((bytes as f64 / r * 1000.0).ceil() as u64),
            (true, None) => None,
        };
        let report = MigrationReport {
            from: profile.isolation,
            to: req.target,
            dry_run: req.dry_run,
            moves_data: moves,
            records: if moves { u.records } else { 0 },
            vectors: if moves { u.vectors } else { 0 },
            bytes,
            rebuilds_indexes: rebuild && rebuild_vectors > 0,
            rebuild_vectors,
            estimated_ms: match (copy_ms, rebuild_ms) {
                (Some(c), Some(r)) => Some(c + r),
                (Some(c), None) if rebuild_vectors == 0 && moves => Some(c),
                (Some(_), None) => None,
                (None, _) => None,
            },
            measured_vectors_per_sec: rate,
            index_params: params,
        };
        // Nothing to change (same level, same parameters): answered, not recorded, so the
        // last-migration row keeps saying how the last real one went.
        let no_op =
            next.isolation == profile.isolation && next.index_params == profile.index_params;
        if req.dry_run {
            return Ok((report, None));
        }
        if no_op {
            // A data move that will take the tenant off this level (one under way before its
            // flip, or one cut short that the server will resume): "nothing to change" would
            // acknowledge a level it is about to leave. Like any change meanwhile, 409.
            if let Some(why) = self.move_pending_away(meta.key, next.isolation)? {
                return Err(EngineError::IdConflict(format!("tenant {id}: {why}")));
            }
            return Ok((report, None));
        }
        if let Some(size) = size {
            let job =
                self.start_data_move(op, id, meta.key, profile.isolation, &next, size, 1, || {
                    Ok(())
                })?;
            return Ok((report, Some(job)));
        }
        self.set_level(op, id, meta.key, next, MIGRATE_ACTION, |_| true)?;
        Ok((report, None))
    }

    /// Commits a profile with a new level (audited in the tenant's log and the server's, and
    /// recorded as its last migration, so whoever sees the new level sees the migration that
    /// brought it), then pins or unpins the tenant and hands its loaded graphs the new
    /// parameters. Refused (`409`) while a data move of the tenant runs: its flip would
    /// overwrite the change.
    /// `planned` is the storage key the change was planned on: the change is refused (`409`)
    /// if the id names another incarnation by the time it commits.
    ///
    /// `still` is asked, in the transaction, whether the stored profile still calls for the
    /// change (a sweep's promotion was planned from an earlier read: an operator's level
    /// change since then must not be overwritten); `IdConflict` when it does not.
    fn set_level(
        &self,
        op: &OperatorScope,
        id: &TenantId,
        planned: TenantKey,
        next: TenantProfile,
        action: &str,
        still: impl Fn(&TenantProfile) -> bool,
    ) -> Result<(), EngineError> {
        let key = self.migrations.excluding(planned, id, || {
            self.level_change_txn(op, id, planned, &next, action, &still)
        })?;
        // The level decides the tenant's pool lane (dedicated: reserved), read at admission.
        self.admissions.invalidate(key);
        self.indexes.apply_profile(&self.store, key);
        Ok(())
    }

    /// [`Engine::set_level`]'s transaction.
    fn level_change_txn(
        &self,
        op: &OperatorScope,
        id: &TenantId,
        planned: TenantKey,
        next: &TenantProfile,
        action: &str,
        still: &dyn Fn(&TenantProfile) -> bool,
    ) -> Result<TenantKey, EngineError> {
        self.store.write(|w| {
            let now = match w.tenant(id)? {
                Some(meta) if meta.key == planned => TenantProfile::of(&meta)?,
                Some(_) => return Err(replaced(id)),
                None => return Err(EngineError::TenantNotFound(id.clone())),
            };
            if !still(&now) {
                return Err(EngineError::IdConflict(format!(
                    "tenant {id}: its level or parameters changed meanwhile"
                )));
            }
            let from = now.isolation;
            // A level on the other side of a data move is only ever set by the move's flip.
            if moves_data(from, next.isolation) {
                return Err(EngineError::IdConflict(format!(
                    "tenant {id}: its level changed meanwhile; retry"
                )));
            }
            let row = crate::migration_status::level_change_row(from, next.isolation);
            self.level_txn(w, op, id, next, action, &row)
        })
    }

    /// The registry change of a level change, audited in the tenant's log and the server's,
    /// with `row` as the tenant's last migration (written where the tenant's keys go in `w`).
    pub(crate) fn level_txn(
        &self,
        w: &mut strata_store::Writer<'_>,
        op: &OperatorScope,
        id: &TenantId,
        next: &TenantProfile,
        action: &str,
        row: &strata_store::StoredMigration,
    ) -> Result<TenantKey, EngineError> {
        let mut meta = w
            .tenant(id)?
            .ok_or_else(|| EngineError::TenantNotFound(id.clone()))?;
        let current = TenantProfile::of(&meta)?;
        // Only the level and parameters change here (and whether an operator chose `shared`);
        // the rest is whatever is stored now.
        let profile = TenantProfile {
            isolation: next.isolation,
            index_params: next.index_params,
            kept_shared: next.isolation.is_shared() && action == MIGRATE_ACTION,
            ..current.clone()
        };
        meta.profile = profile.to_map_at(strata_types::now_millis());
        w.put_tenant(&meta)?;
        let mut event = audit::operator_event(op, id, action);
        event.detail = serde_json::json!({
            "from": current.isolation,
            "to": profile.isolation,
            "index_params": profile.index_params,
        });
        audit::append_to_both(w, meta.key, event)?;
        w.put_last_migration(meta.key, row)?;
        Ok(meta.key)
    }

    /// Why the tenant at `level` is about to leave it, if it is: a data move running towards
    /// another level and not yet flipped, or one cut short by a restart that will be resumed.
    fn move_pending_away(
        &self,
        key: TenantKey,
        level: IsolationLevel,
    ) -> Result<Option<String>, EngineError> {
        if let Some(m) = self.migrations.get(key)
            && m.running()
        {
            // After its flip the tenant is at `m.to` already and stays there.
            return Ok((m.to != level).then(|| "a migration is already running".to_owned()));
        }
        // The resumption moves the tenant only while it is still at the row's `from`.
        let resumes = strata_store::last_migration(&self.store.read()?, key)?.is_some_and(|row| {
            crate::migration_resume::level(row.from) == level
                && crate::migration_resume::will_resume(
                    &row,
                    self.config.isolation.resume_interrupted_migrations,
                )
        });
        Ok(resumes.then(|| {
            "a migration cut short by a restart will be resumed; cancel it first".to_owned()
        }))
    }

    /// The tenant's level and its last migration: a data move's live progress while one runs,
    /// else how the last one ended (kept across restarts).
    pub fn migration(
        &self,
        _op: &OperatorScope,
        id: &TenantId,
    ) -> Result<MigrationStatus, EngineError> {
        let meta = self.tenant_meta(id)?;
        let profile = TenantProfile::of(&meta)?;
        let pending = self.indexes.residency(meta.key, id).graph_builds_pending;
        let stale = self.indexes.graphs_stale(meta.key);
        let live = self.migrations.get(meta.key);
        let stored = strata_store::last_migration(&self.store.read()?, meta.key)?;
        let will_resume = stored.as_ref().is_some_and(|row| {
            crate::migration_resume::will_resume(
                row,
                self.config.isolation.resume_interrupted_migrations,
            )
        });
        let mut status = crate::migration_status::status(
            profile.isolation,
            pending,
            stale,
            live.as_deref(),
            stored,
        );
        status.will_resume = will_resume && status.state == MigrationState::Interrupted;
        Ok(status)
    }

    /// The data moves running now (to or from `dedicated`), each tenant with its status, by
    /// tenant id. A move that ended between the listing and its status read is left out.
    pub fn running_migrations(
        &self,
        op: &OperatorScope,
    ) -> Result<Vec<RunningMigration>, EngineError> {
        let mut out = Vec::new();
        for tenant in self.migrations.running() {
            let status = match self.migration(op, &tenant) {
                Ok(status) => status,
                // Purged since: its move is over.
                Err(EngineError::TenantNotFound(_)) => continue,
                // One tenant's unreadable row does not hide the others' moves.
                Err(e) => {
                    tracing::warn!(%tenant, error = %e, "a running move's status could not be read");
                    continue;
                }
            };
            if status.state.is_running() {
                out.push(RunningMigration { tenant, status });
            }
        }
        Ok(out)
    }

    /// Promotes every `shared` tenant holding at least `promote_partition_vectors` vectors to
    /// `partition` (audited as `tenant.promote`); run by the server's periodic sweep. Returns
    /// the promoted tenants; one whose data is being moved is skipped until the next sweep.
    pub fn promote_tenants(&self, op: &OperatorScope) -> Result<Vec<TenantId>, EngineError> {
        let due = self.due_for_promotion()?;
        self.promote(op, due)
    }

    /// The tenants [`Engine::promote_tenants`] promotes, with their profiles as read.
    pub(crate) fn due_for_promotion(
        &self,
    ) -> Result<Vec<(TenantId, TenantKey, TenantProfile)>, EngineError> {
        let threshold = self.config.isolation.promote_partition_vectors;
        if threshold == 0 {
            return Ok(Vec::new());
        }
        let mut due = Vec::new();
        {
            let r = self.store.read()?;
            for m in r.tenants()? {
                // A profile that does not decode keeps only its own tenant from promotion.
                let p = match TenantProfile::of(&m) {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(tenant = %m.id, error = %e, "promotion skipped a tenant");
                        continue;
                    }
                };
                // An operator's move to `shared` is not undone.
                if p.isolation.is_shared()
                    && !p.kept_shared
                    && p.status == TenantStatus::Active
                    && usage(&r, m.key)?.vectors >= threshold
                {
                    due.push((m.id, m.key, p));
                }
            }
        }
        Ok(due)
    }

    /// Promotes `due` ([`Engine::due_for_promotion`]), each tenant only if its profile is
    /// still as read when its promotion commits.
    pub(crate) fn promote(
        &self,
        op: &OperatorScope,
        due: Vec<(TenantId, TenantKey, TenantProfile)>,
    ) -> Result<Vec<TenantId>, EngineError> {
        let mut promoted = Vec::new();
        for (id, key, p) in due {
            let planned = p.clone();
            // Still as the sweep read it when the promotion commits: an operator's migration
            // or move to `shared` in between wins.
            let still = |now: &TenantProfile| {
                now.isolation == planned.isolation
                    && now.index_params == planned.index_params
                    && now.kept_shared == planned.kept_shared
                    && now.status == TenantStatus::Active
            };
            let next = TenantProfile {
                isolation: IsolationLevel::Partition,
                ..p
            };
            match self.set_level(op, &id, key, next, "tenant.promote", still) {
                Ok(()) => promoted.push(id),
                // A data move of the tenant runs (or it changed meanwhile): the next sweep
                // looks again.
                Err(EngineError::IdConflict(why)) => {
                    tracing::info!(tenant = %id, %why, "promotion skipped");
                }
                // Purged since the sweep read it: nothing to promote.
                Err(EngineError::TenantNotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(promoted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_validated_naming_the_field() {
        let bad = |p: IndexParams| match p.validate() {
            Err(EngineError::BadRequest(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(
            bad(IndexParams {
                m: Some(1),
                ..Default::default()
            })
            .starts_with("index_params.m:")
        );
        assert!(
            bad(IndexParams {
                ef_search: Some(0),
                ..Default::default()
            })
            .starts_with("index_params.ef_search:")
        );
        assert!(
            bad(IndexParams {
                ef_construction: Some(5000),
                ..Default::default()
            })
            .starts_with("index_params.ef_construction:")
        );
        let ok = IndexParams {
            m: Some(32),
            ef_construction: Some(200),
            ef_search: None,
        };
        ok.validate().unwrap();
        let e = ok.effective();
        assert_eq!((e.m, e.ef_construction, e.ef_search), (32, 200, 64));
    }

    #[test]
    fn shared_tenants_use_the_server_defaults() {
        let p = TenantProfile {
            index_params: Some(IndexParams {
                m: Some(8),
                ..Default::default()
            }),
            ..TenantProfile::default()
        };
        assert_eq!(effective_params(&p), HnswParams::default());
        let p = TenantProfile {
            isolation: IsolationLevel::Partition,
            ..p
        };
        assert_eq!(effective_params(&p).m, 8);
    }
}

#[cfg(test)]
mod engine_tests {
    //! Migration against the engine itself: the graphs really are rebuilt with the tenant's
    //! parameters (and back), answers do not move, a restored snapshot keeps them, and a
    //! partition tenant is never evicted.
    use strata_auth::TenantScope;
    use strata_types::Metric;

    use super::*;
    use crate::registry::lock;
    use crate::test_support::{admin_scope as scope, answers, put_clustered, vec_name};
    use crate::{EngineConfig, ResidencyConfig};

    fn fill(engine: &Engine, id: &str, n: usize, level: IsolationLevel) -> TenantScope {
        let op = OperatorScope::for_tests();
        let id_ = TenantId::parse(id).unwrap();
        engine
            .create_tenant_at(&op, &id_, None, level, None)
            .unwrap();
        let scope = scope(engine, id);
        engine
            .create_collection(
                &scope,
                &vec_name(),
                crate::test_support::DIM,
                Metric::Cosine,
            )
            .unwrap();
        put_clustered(engine, &scope, n);
        scope
    }

    /// A tenant too small for a graph has none to rebuild, loaded or not.
    #[test]
    fn a_dry_run_counts_no_rebuild_for_a_tenant_without_graphs() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
        // 50 × 2,048 floats: far under the graph threshold. Not searched, so not loaded.
        fill(&engine, "small", 50, IsolationLevel::Shared);
        let dry_run = |engine: &Engine| {
            engine
                .migrate_tenant(
                    &OperatorScope::for_tests(),
                    &TenantId::parse("small").unwrap(),
                    MigrateRequest {
                        target: IsolationLevel::Partition,
                        index_params: Some(IndexParams {
                            m: Some(8),
                            ef_construction: Some(64),
                            ef_search: None,
                        }),
                        dry_run: true,
                    },
                )
                .unwrap()
        };
        let unloaded = dry_run(&engine);
        assert_eq!(
            (unloaded.rebuild_vectors, unloaded.rebuilds_indexes),
            (0, false)
        );
        engine.index_stats(&scope(&engine, "small")).unwrap();
        let loaded = dry_run(&engine);
        assert_eq!(
            (loaded.rebuild_vectors, loaded.rebuilds_indexes),
            (0, false)
        );
    }

    /// Tenant `acme` migrated to `partition` with graph parameters `params`.
    fn acme_to_partition(engine: &Engine, params: IndexParams) -> MigrationReport {
        let req = MigrateRequest {
            target: IsolationLevel::Partition,
            index_params: Some(params),
            dry_run: false,
        };
        let id = TenantId::parse("acme").unwrap();
        engine
            .migrate_tenant(&OperatorScope::for_tests(), &id, req)
            .unwrap()
    }

    /// The loaded graph's parameters.
    fn graph_params(engine: &Engine, scope: &TenantScope) -> HnswParams {
        let slot = engine.indexes.get(scope.key()).unwrap();
        let guard = slot.index.read().unwrap();
        let ci = &guard.as_ref().unwrap().collections[&vec_name()];
        ci.graph.as_ref().unwrap().params()
    }

    #[test]
    fn migration_rebuilds_graphs_with_the_tenants_parameters_and_back() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
        let scope = fill(&engine, "acme", 1_100, IsolationLevel::Shared);
        let before = answers(&engine, &scope);
        engine.wait_for_graph_builds();
        assert_eq!(graph_params(&engine, &scope), HnswParams::default());
        assert_eq!(answers(&engine, &scope), before);

        let op = OperatorScope::for_tests();
        let id = TenantId::parse("acme").unwrap();
        let params = IndexParams {
            m: Some(8),
            ef_construction: Some(64),
            ef_search: Some(200),
        };
        let report = acme_to_partition(&engine, params);
        assert!(report.rebuilds_indexes);
        assert_eq!(report.rebuild_vectors, 1_100);
        // The search default applies at once; the rebuild is queued.
        assert_eq!(graph_params(&engine, &scope).ef_search, 200);
        assert_eq!(graph_params(&engine, &scope).m, 16);
        engine.wait_for_graph_builds();
        let built = graph_params(&engine, &scope);
        assert_eq!(
            (built.m, built.ef_construction, built.ef_search),
            (8, 64, 200)
        );
        assert_eq!(answers(&engine, &scope), before);
        assert_eq!(
            engine.migration(&op, &id).unwrap().state,
            MigrationState::Done
        );

        // A clean restart restores the rebuilt graph with its connectivity.
        engine.persist_indexes().unwrap();
        drop(engine);
        let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
        let scope = self::scope(&engine, "acme");
        assert_eq!(answers(&engine, &scope), before);
        engine.wait_for_graph_builds();
        assert_eq!(graph_params(&engine, &scope).m, 8);
        assert_eq!(graph_params(&engine, &scope).ef_search, 200);

        // Back to shared: the server's parameters again.
        engine
            .migrate_tenant(
                &op,
                &id,
                MigrateRequest {
                    target: IsolationLevel::Shared,
                    index_params: None,
                    dry_run: false,
                },
            )
            .unwrap();
        engine.wait_for_graph_builds();
        assert_eq!(graph_params(&engine, &scope), HnswParams::default());
        assert_eq!(answers(&engine, &scope), before);
        // The tenant keeps its own parameters for a later move back to partition.
        let info = engine.tenant(&op, &id).unwrap();
        assert_eq!(
            (info.isolation, info.index_params),
            (IsolationLevel::Shared, Some(params))
        );
    }

    /// `rebuilding` says that graphs wait for the tenant's new parameters, and ends with
    /// their rebuild.
    #[test]
    fn the_status_says_rebuilding_while_graphs_wait_for_the_new_parameters() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
        let scope = fill(&engine, "acme", 1_100, IsolationLevel::Shared);
        let before = answers(&engine, &scope);
        engine.wait_for_graph_builds();
        let op = OperatorScope::for_tests();
        let id = TenantId::parse("acme").unwrap();
        // The builder holds each build after its bulk insert until the sender is dropped.
        let (release, held) = std::sync::mpsc::channel::<()>();
        *lock(&engine.indexes.builder.after_bulk) = Some(Box::new(move || {
            let _ = held.recv();
        }));
        let params = IndexParams {
            m: Some(8),
            ef_construction: None,
            ef_search: None,
        };
        acme_to_partition(&engine, params);
        let status = engine.migration(&op, &id).unwrap();
        assert_eq!(status.state, MigrationState::Rebuilding, "{status:?}");
        assert!(status.graph_builds_pending > 0, "{status:?}");
        drop(release);
        engine.wait_for_graph_builds();
        assert_eq!(graph_params(&engine, &scope).m, 8);
        let status = engine.migration(&op, &id).unwrap();
        assert_eq!(status.state, MigrationState::Done, "{status:?}");
        assert_eq!(answers(&engine, &scope), before);
    }

    /// A migration that changes only the construction beam of a tenant not loaded: its saved
    /// graph records the beam it was built with, so the load rebuilds it with the new one.
    #[test]
    fn a_beam_only_migration_of_an_unloaded_tenant_rebuilds_its_graph_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
        let scope = fill(&engine, "acme", 1_100, IsolationLevel::Shared);
        let before = answers(&engine, &scope);
        engine.wait_for_graph_builds();
        engine.persist_indexes().unwrap();
        drop(engine);

        let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
        let id = TenantId::parse("acme").unwrap();
        let key = engine.tenant_meta(&id).unwrap().key;
        assert!(engine.indexes.get(key).is_none(), "loaded at start");
        let params = IndexParams {
            m: None,
            ef_construction: Some(40),
            ef_search: None,
        };
        let report = acme_to_partition(&engine, params);
        assert!(report.rebuilds_indexes);
        let scope = self::scope(&engine, "acme");
        assert_eq!(answers(&engine, &scope), before);
        engine.wait_for_graph_builds();
        assert!(
            lock(&engine.indexes.builder.started).contains(&key),
            "the graph was not rebuilt"
        );
        let built = graph_params(&engine, &scope);
        assert_eq!((built.m, built.ef_construction), (16, 40));
        assert_eq!(answers(&engine, &scope), before);
    }

    #[test]
    fn partition_tenants_are_never_evicted() {
        let dir = tempfile::tempdir().unwrap();
        let config = EngineConfig {
            residency: ResidencyConfig {
                memory_budget_bytes: 1,
                pinned: Vec::new(),
            },
            ..EngineConfig::default()
        };
        let engine = Engine::open(dir.path(), config).unwrap();
        let op = OperatorScope::for_tests();
        let a = fill(&engine, "a", 20, IsolationLevel::Shared);
        let p = fill(&engine, "p", 20, IsolationLevel::Partition);
        let b = fill(&engine, "b", 20, IsolationLevel::Shared);
        for scope in [&p, &a, &b, &a, &b] {
            engine.index_stats(scope).unwrap();
        }
        let id = |s: &str| TenantId::parse(s).unwrap();
        let residency = engine.residency(&op, &id("p")).unwrap();
        assert!(residency.pinned && residency.resident, "{residency:?}");
        assert_eq!(residency.evictions, 0);
        assert!(engine.residency(&op, &id("a")).unwrap().evictions > 0);

        // Demoted to shared, it is evictable again.
        engine
            .migrate_tenant(
                &op,
                &id("p"),
                MigrateRequest {
                    target: IsolationLevel::Shared,
                    index_params: None,
                    dry_run: false,
                },
            )
            .unwrap();
        engine.index_stats(&a).unwrap();
        let residency = engine.residency(&op, &id("p")).unwrap();
        assert!(!residency.pinned && !residency.resident, "{residency:?}");
    }
}

/// The refusal of a migration planned on an incarnation of `id` that is no longer the one
/// the id names.
pub(crate) fn replaced(id: &TenantId) -> EngineError {
    EngineError::IdConflict(format!(
        "tenant {id} was purged and created again since this migration was planned"
    ))
}
