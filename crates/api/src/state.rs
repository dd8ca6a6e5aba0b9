//! What every handler shares: the engine, the authenticator and the readiness flag.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use strata_auth::{Authenticator, TenantScope};
use strata_engine::Engine;
use strata_sched::Demotable;
use strata_types::TenantId;

use crate::ApiError;
use crate::admission::{Admitted, Gate, PoolConfig, Share};
use crate::answer_budget::{AnswerBudget, AnswerHold, Shape};
use crate::keys_in_flight::KeysInFlight;
use crate::metrics::{Metrics, MetricsConfig};
use crate::parse_slots::{ParseSlot, ParseSlots};
use crate::security_throttle::{SecurityEventLimits, SecurityThrottle};
use crate::tenant_bodies::TenantBodies;

/// Settings of the HTTP layer.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Largest request body accepted, in bytes; larger bodies get `413 PAYLOAD_TOO_LARGE`.
    pub max_body_bytes: usize,
    /// Bytes of request bodies one tenant may hold in memory at once (see `tenant_bodies`);
    /// a body past it is refused unread with `429 CONCURRENCY_LIMITED`. 0: four times
    /// `max_body_bytes`; never less than `max_body_bytes`.
    pub max_body_bytes_per_tenant: u64,
    /// Largest body of `POST /v1/admin/tenants/{id}/import`, in bytes. Separate from
    /// `max_body_bytes` because an import carries a whole tenant and is read as a stream.
    pub max_import_bytes: u64,
    /// How long a soft-deleted tenant stays restorable, in seconds; the default of
    /// `POST /v1/admin/tenants/purge-deleted`.
    pub retention_secs: u64,
    /// The worker pool that runs every tenant's engine work with fair queueing.
    pub pool: PoolConfig,
    /// How long a request body may take to arrive, before the allowance below; a body still
    /// arriving after its deadline is answered `408 REQUEST_TIMEOUT`.
    pub body_read_timeout: Duration,
    /// The upload rate a long body must keep up: every this many bytes received extend its
    /// deadline by one second, so a large upload at a reasonable rate finishes while a trickle
    /// does not. 0: no extension.
    pub body_min_bytes_per_sec: u64,
    /// Longest request target (path and query) accepted; longer is `414 URI_TOO_LONG`.
    pub max_uri_bytes: usize,
    /// Who may scrape `/metrics` and how many tenants get their own label there.
    pub metrics: MetricsConfig,
    /// How many security events each audit log records (`security_throttle`).
    pub security_events: SecurityEventLimits,
    /// Bytes one tenant's answers may hold until their clients read them (`answer_budget`);
    /// a request past it is refused before its answer is fetched, `429 ANSWER_MEMORY_LIMITED`.
    /// 0: no limit.
    pub max_answer_bytes_per_tenant: u64,
    /// Bytes all tenants' answers may hold together; past it, `503 OVERLOADED`. 0: no limit.
    pub max_answer_bytes: u64,
    /// Where `POST /v1/admin/backups` writes backups, each in a directory of its own.
    pub backup_dir: std::path::PathBuf,
}

impl Default for ApiConfig {
    fn default() -> Self {
        // A full batch of 1000 records with 384-dimensional vectors is ~4 MB of JSON.
        ApiConfig {
            max_body_bytes: 16 * 1024 * 1024,
            max_body_bytes_per_tenant: 0,
            max_import_bytes: 1024 * 1024 * 1024,
            retention_secs: 7 * 24 * 3600,
            pool: PoolConfig::default(),
            body_read_timeout: Duration::from_secs(30),
            body_min_bytes_per_sec: 16 * 1024,
            max_uri_bytes: 8 * 1024,
            metrics: MetricsConfig::default(),
            security_events: SecurityEventLimits::default(),
            // Six pages of 1,000 records with 4,096-dimension vectors (~43 MB each) per tenant,
            // four tenants' worth for the server.
            max_answer_bytes_per_tenant: 256 * 1024 * 1024,
            max_answer_bytes: 1024 * 1024 * 1024,
            backup_dir: std::path::PathBuf::from("./backups"),
        }
    }
}

/// Shared state of the router: one reference to [`AppShared`], so cheap to clone. Axum clones the
/// state for every handler and extractor that asks for it; as a struct of a dozen `Arc`s and a
/// configuration with a path in it, each clone was a dozen reference counts shared by every
/// async thread and an allocation, 1.5 % of a search's server CPU (docs/benchmarks.md,
/// "Exact scans score prepared vectors").
#[derive(Clone)]
pub struct AppState(Arc<AppShared>);

impl std::ops::Deref for AppState {
    type Target = AppShared;

    fn deref(&self) -> &AppShared {
        &self.0
    }
}

/// What [`AppState`] shares.
pub struct AppShared {
    pub engine: Arc<Engine>,
    pub auth: Arc<Authenticator>,
    pub config: ApiConfig,
    /// Live figures for `/metrics`, the dashboard and `GET /v1/stats`.
    pub metrics: Arc<Metrics>,
    gate: Arc<Gate>,
    /// Each tenant's bodies in memory, against `max_body_bytes_per_tenant`.
    pub(crate) bodies: Arc<TenantBodies>,
    /// Each tenant's answers in memory until read, against `max_answer_bytes_per_tenant`.
    pub(crate) answers: Arc<AnswerBudget>,
    /// Bounds the audit rows and log lines of security events.
    pub(crate) security: Arc<SecurityThrottle>,
    /// Writes running under an `Idempotency-Key`, which a retry of them waits for.
    pub(crate) keys_in_flight: Arc<KeysInFlight>,
    /// Large bodies parsing at once (`parse_slots`).
    parse_slots: Arc<ParseSlots>,
    ready: Arc<AtomicBool>,
}

/// Whether a tenant's job may move to the background workers while the tenant is over its CPU
/// share: one that only reads, unless it holds a parse slot (`parse_slots`), which every
/// tenant's large bodies wait for: at the background priority, behind a flooding tenant's
/// other jobs, it would keep them waiting for minutes.
pub(crate) fn job_demotable(read_only: bool, holds_parse_slot: bool) -> Demotable {
    if read_only && !holds_parse_slot {
        Demotable::ReadOnly
    } else {
        Demotable::Never
    }
}

impl AppState {
    /// Fails if the worker threads cannot be started or the security-event limits cannot be a
    /// token bucket.
    pub fn new(
        engine: Arc<Engine>,
        auth: Arc<Authenticator>,
        config: ApiConfig,
    ) -> std::io::Result<Self> {
        let metrics = Arc::new(Metrics::default());
        let max_body = config.max_body_bytes as u64;
        let per_tenant = match config.max_body_bytes_per_tenant {
            0 => max_body.saturating_mul(4),
            n => n,
        };
        let security = SecurityThrottle::new(config.security_events)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let gate = Arc::new(Gate::new(config.pool, Arc::clone(&metrics))?);
        let answers = AnswerBudget::new(
            config.max_answer_bytes_per_tenant,
            config.max_answer_bytes,
            &engine.config().limits,
        );
        Ok(AppState(Arc::new(AppShared {
            bodies: TenantBodies::new(per_tenant, max_body),
            answers,
            security: Arc::new(security),
            keys_in_flight: Arc::default(),
            engine,
            auth,
            parse_slots: Arc::new(ParseSlots::new(gate.workers())),
            gate,
            metrics,
            config,
            ready: Arc::new(AtomicBool::new(true)),
        })))
    }

    /// Checks the tenant's rate and concurrency limits for one request.
    pub(crate) fn admit(&self, scope: &TenantScope) -> Result<Admitted, ApiError> {
        self.gate.admit(&self.engine, scope)
    }

    /// Admission for background work a request started (a re-embed): the tenant's pool share,
    /// without an in-flight slot or a rate token, since it outlives the request.
    pub(crate) fn admit_background(&self, scope: &TenantScope) -> Result<Admitted, ApiError> {
        self.gate.admit_background(&self.engine, scope)
    }

    /// Runs a tenant's engine work on the shared pool, in its fair share, always on a
    /// normal-priority worker: it may write.
    pub(crate) async fn run_tenant<T, F>(&self, admitted: &Admitted, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&Engine) -> Result<T, ApiError> + Send + 'static,
    {
        self.run_tenant_as(admitted, Demotable::Never, f).await
    }

    /// [`run_tenant`](Self::run_tenant) with the job's [`Demotable`] chosen by the caller, who
    /// knows what it does.
    pub(crate) async fn run_tenant_as<T, F>(
        &self,
        admitted: &Admitted,
        demotable: Demotable,
        f: F,
    ) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&Engine) -> Result<T, ApiError> + Send + 'static,
    {
        let engine = Arc::clone(&self.engine);
        self.gate.run(admitted, engine, demotable, f).await
    }

    /// [`run_tenant`](Self::run_tenant) for work that writes nothing (a search, get, scan,
    /// count or recall): while the tenant is over its CPU share it may run on a background
    /// worker at low priority. Never pass work that can take the storage write lock.
    pub(crate) async fn run_tenant_read<T, F>(
        &self,
        admitted: &Admitted,
        f: F,
    ) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&Engine) -> Result<T, ApiError> + Send + 'static,
    {
        self.run_tenant_as(admitted, Demotable::ReadOnly, f).await
    }

    /// Parses a request body as a JSON object and converts it with `convert`, in one job off
    /// the async threads: in the tenant's fair share of the pool when a tenant sent it (parsing
    /// and converting write nothing, so the job may be demoted like a read), on the blocking
    /// pool for an operator's (a job holding a parse slot is not demoted). A body of a few
    /// megabytes can take seconds to parse, and as long
    /// again to convert to typed values; on the async threads that stalled every tenant's
    /// requests. A tenant's body first waits for a parse slot (`parse_slots`), so such jobs
    /// never hold every worker.
    pub(crate) async fn parse_body<T, F>(
        &self,
        share: Option<&Share>,
        tenant: Option<TenantId>,
        bytes: axum::body::Bytes,
        convert: F,
    ) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(serde_json::Map<String, serde_json::Value>) -> Result<T, ApiError>
            + Send
            + 'static,
    {
        let bounds = crate::input::body_bounds(&self.engine.config().limits);
        let slot = match (&tenant, share) {
            (Some(tenant), Some(_)) => self.parse_slot(tenant, bytes.len()).await?,
            _ => None,
        };
        let demotable = job_demotable(true, slot.is_some());
        let parse = move |_: &Engine| {
            // The slot is the job's: held until the parse ends (or the job is dropped unrun),
            // not until the client stops waiting for it.
            let _slot = slot;
            convert(crate::input::parse_object_within(
                &bytes,
                tenant.as_ref(),
                bounds,
            )?)
        };
        match share {
            Some(share) => {
                let engine = Arc::clone(&self.engine);
                self.gate.run_in(share, engine, demotable, parse).await
            }
            None => self.run(parse).await,
        }
    }

    /// A parse slot (`parse_slots`) for a body of `len` bytes sent by `tenant`, when it is
    /// large enough to be parsed in a job of its own; `None` for one parsed where it was read.
    /// The caller moves it into the job that parses the body.
    pub(crate) async fn parse_slot(
        &self,
        tenant: &TenantId,
        len: usize,
    ) -> Result<Option<ParseSlot>, ApiError> {
        if len <= crate::input::PARSE_INLINE_BYTES {
            return Ok(None);
        }
        // The wait shows in Server-Timing's `prepare` span (body read to job queued).
        self.parse_slots.acquire(tenant, len).await.map(Some)
    }

    /// Reserves the estimate of an answer of `records` records of `shape` in the tenant's
    /// answer budget (`answer_budget`), or refuses the request before its answer is fetched.
    pub(crate) fn reserve_answer(
        &self,
        admitted: &Admitted,
        records: usize,
        shape: Shape,
    ) -> Result<AnswerHold, ApiError> {
        let tenant = admitted.answers();
        let bytes = tenant.estimate(&self.answers, records, shape);
        self.answers.reserve(tenant, bytes)
    }

    /// Worker threads of the shared pool.
    pub fn pool_workers(&self) -> usize {
        self.gate.workers()
    }

    /// Jobs that ran long and gave up their place in the pool to another tenant's job.
    pub fn pool_long_job_spares(&self) -> strata_sched::LongJobSpares {
        self.gate.long_job_spares()
    }

    /// Times a pool worker woke to find jobs queued and none it may run.
    pub fn pool_idle_looks(&self) -> u64 {
        self.gate.idle_looks()
    }

    /// Polls of the queue by an idle worker before it slept: (a job started right after, none).
    pub fn pool_idle_polls(&self) -> (u64, u64) {
        self.gate.idle_polls()
    }

    /// Background worker threads of the pool running (0: off, or the OS priority could not
    /// be lowered).
    pub fn pool_background_workers(&self) -> usize {
        self.gate.background_workers()
    }

    /// Drops the tenants' rate buckets that have refilled (see `Gate::sweep_idle_rates`).
    pub fn sweep_idle_rates(&self) -> usize {
        self.gate.sweep_idle_rates()
    }

    /// Stops the worker pool after queued work finishes (or `timeout` passes).
    pub fn shutdown_pool(&self, timeout: std::time::Duration) -> bool {
        self.gate.shutdown(timeout)
    }

    /// Marks the server as draining: `/readyz` answers 503 so load balancers stop sending.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Runs blocking engine work on tokio's blocking pool (redb commits fsync).
    pub(crate) async fn run<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&Engine) -> Result<T, ApiError> + Send + 'static,
    {
        let engine = Arc::clone(&self.engine);
        crate::over_share_lane::spawn_blocking(move || f(&engine))
            .await
            .map_err(|e| ApiError::Internal(format!("blocking task failed: {e}")))?
    }
}

#[cfg(test)]
#[path = "state/body_parse_tests.rs"]
mod body_parse_tests;
