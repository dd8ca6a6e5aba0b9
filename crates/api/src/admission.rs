//! Admission control at the edge: each tenant's token bucket (`max_qps`, `burst`) and in-flight
//! cap (`max_concurrent`), checked right after authentication, and the fair scheduler that runs
//! every tenant's engine work on one bounded pool.

use std::sync::Arc;
use std::time::Instant;

use strata_auth::TenantScope;
use strata_engine::Engine;
use strata_sched::{
    FairScheduler, InFlight, Limits, Permit, RateLimiter, SchedError, SchedulerConfig,
};
use strata_store::TenantKey;

use crate::ApiError;
use crate::metrics::{Metrics, Queued, TenantSeries, thread_cpu_time};

/// Settings of the shared worker pool.
#[derive(Debug, Clone, Copy)]
pub struct PoolConfig {
    /// Worker threads for engine work; 0 means one per CPU.
    pub workers: usize,
    /// Jobs waiting across all tenants before new ones are refused with 503.
    pub max_queue: usize,
    /// Jobs one tenant may have waiting before its new ones are refused with 503.
    pub max_queue_per_tenant: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            workers: 0,
            max_queue: 10_000,
            max_queue_per_tenant: 1_000,
        }
    }
}

/// The admission state shared by all requests.
pub(crate) struct Gate {
    limiter: RateLimiter<TenantKey>,
    in_flight: InFlight<TenantKey>,
    pool: FairScheduler<TenantKey>,
    workers: usize,
    metrics: Arc<Metrics>,
}

/// What a request was admitted with: its tenant's place in the pool, and (while it lives) its
/// in-flight slot.
pub struct Admitted {
    key: TenantKey,
    weight: u32,
    /// Where the tenant's queue depth, queue wait and CPU time are counted.
    series: Arc<TenantSeries>,
    /// Whose integrity state its queue depth and wait feed (`Engine::observe_queue`).
    scope: TenantScope,
    _permit: Option<Permit<TenantKey>>,
}

impl Gate {
    pub fn new(config: PoolConfig, metrics: Arc<Metrics>) -> std::io::Result<Gate> {
        let defaults = SchedulerConfig::default();
        // One per CPU by default: more workers than cores would let a flooding tenant's
        // running jobs share the CPU with (and so slow) everyone else's. Writes wait for
        // their fsync off the pool (see `run`), so workers never idle through one.
        let workers = if config.workers == 0 {
            defaults.workers
        } else {
            config.workers
        };
        let pool = FairScheduler::new(SchedulerConfig {
            workers,
            max_queue: config.max_queue,
            max_queue_per_tenant: config.max_queue_per_tenant,
            thread_name: "strata-worker".into(),
            ..defaults
        })?;
        Ok(Gate {
            limiter: RateLimiter::new(),
            in_flight: InFlight::new(),
            pool,
            workers,
            metrics,
        })
    }

    /// Checks the tenant's rate and concurrency limits for one request.
    pub fn admit(&self, engine: &Engine, scope: &TenantScope) -> Result<Admitted, ApiError> {
        // Served from memory after the tenant's first request.
        let admission = engine.admission(scope)?;
        let key = scope.key();
        if let Some(qps) = admission.limits.max_qps {
            let limits = Limits::new(qps, admission.limits.burst).map_err(|e| {
                ApiError::Internal(format!(
                    "tenant {} has invalid rate limits: {e}",
                    scope.tenant()
                ))
            })?;
            self.limiter
                .check(&key, &limits, Instant::now())
                .map_err(|r| ApiError::RateLimited {
                    retry_after_ms: r.millis,
                })?;
        }
        let permit = match admission.limits.max_concurrent {
            Some(max) => Some(self.in_flight.try_acquire(&key, max).map_err(|b| {
                ApiError::ConcurrencyLimited(format!(
                    "{} requests in flight; the limit is {}",
                    b.in_flight, b.max
                ))
            })?),
            None => None,
        };
        Ok(Admitted {
            key,
            weight: admission.weight,
            series: self.metrics.tenant(scope.key(), scope.tenant()),
            scope: scope.clone(),
            _permit: permit,
        })
    }

    /// The tenant's place in the pool for work that outlives its request.
    pub fn admit_background(
        &self,
        engine: &Engine,
        scope: &TenantScope,
    ) -> Result<Admitted, ApiError> {
        Ok(Admitted {
            key: scope.key(),
            weight: engine.admission(scope)?.weight,
            series: self.metrics.tenant(scope.key(), scope.tenant()),
            scope: scope.clone(),
            _permit: None,
        })
    }

    /// Runs `f` on the pool, in the tenant's fair share. Its writes are acknowledged (this
    /// returns) only once durable, but the wait for their fsync happens off the pool, so a
    /// worker goes on to the next job meanwhile and concurrent requests' writes share fsyncs.
    pub async fn run<T, F>(
        &self,
        admitted: &Admitted,
        engine: Arc<Engine>,
        f: F,
    ) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&Engine) -> Result<T, ApiError> + Send + 'static,
    {
        let queued = Queued::new(Arc::clone(&admitted.series));
        let metrics = Arc::clone(&self.metrics);
        // The tenant's own queue, as this request joins it: an integrity signal.
        let depth = self.pool.queued_for(&admitted.key);
        let (submitted, scope) = (Instant::now(), admitted.scope.clone());
        let (result, durable) = self
            .pool
            .run(&admitted.key, admitted.weight, move || {
                engine.observe_queue(&scope, depth, submitted.elapsed());
                let series = queued.start();
                let _busy = metrics.busy();
                let cpu = thread_cpu_time();
                let result = engine.deferring_durability(|| f(&engine));
                series.charge_cpu(thread_cpu_time().saturating_sub(cpu));
                result
            })
            .await
            .map_err(|e| match e {
                SchedError::Overloaded { .. } | SchedError::TenantQueueFull { .. } => {
                    ApiError::Overloaded(e.to_string())
                }
                SchedError::ShuttingDown => ApiError::Unavailable,
                SchedError::Panicked { message } => {
                    ApiError::Internal(format!("engine work panicked: {message}"))
                }
                other => ApiError::Internal(other.to_string()),
            })?;
        if !durable.is_empty() {
            // Even when `f` failed after a write had committed: nothing is answered before
            // what was written is durable.
            tokio::task::spawn_blocking(move || durable.wait())
                .await
                .map_err(|e| ApiError::Internal(format!("durability wait: {e}")))??;
        }
        result
    }

    /// Worker threads of the pool.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Stops taking work and waits (up to `timeout`) for queued work to finish.
    pub fn shutdown(&self, timeout: std::time::Duration) -> bool {
        self.pool.shutdown_timeout(timeout)
    }
}
