//! Admission control at the edge: each tenant's token bucket (`max_qps`, `burst`) and in-flight
//! cap (`max_concurrent`), checked right after authentication, and the fair scheduler that runs
//! every tenant's engine work on one bounded pool.

use std::sync::Arc;
use std::time::Instant;

use strata_auth::TenantScope;
use strata_engine::Engine;
use strata_sched::{
    BackgroundPriority, DEFAULT_LONG_JOB_AFTER, Demotable, FairScheduler, InFlight, Lane, Limits,
    LongJobSpares, Permit, RateLimiter, SchedError, SchedulerConfig,
};
use strata_store::TenantKey;

use crate::ApiError;
use crate::metrics::{Metrics, Queued, TenantSeries, thread_cpu_time};
use crate::tenant_bodies::BodySlot;
use crate::timing::{Stage, mark, mark_at};

/// Settings of the shared worker pool.
#[derive(Debug, Clone, Copy)]
pub struct PoolConfig {
    /// Worker threads for engine work; 0 means one per CPU.
    pub workers: usize,
    /// Jobs waiting across all tenants before new ones are refused with 503.
    pub max_queue: usize,
    /// Jobs one tenant may have waiting before its new ones are refused with 503.
    pub max_queue_per_tenant: usize,
    /// Workers, on top of `workers`, that run only `dedicated` tenants' jobs (the reserved
    /// lane); 0 disables the lane.
    pub reserved_workers: usize,
    /// Low-priority workers, on top of `workers`, that run the jobs of tenants with a backlog
    /// over their share of recent CPU while others are active
    /// (`SchedulerConfig::background_workers`); 0 (this struct's default) disables the split.
    /// The server turns them on by default (`[scheduler] background_workers`).
    pub background_workers: usize,
    /// How low the background workers run.
    pub background_priority: BackgroundPriority,
    /// A job running longer than this while another tenant's job waits gives up its place to
    /// a spare thread (`SchedulerConfig::long_job_after`); zero turns it off.
    pub long_job_after: std::time::Duration,
    /// How long a worker that finished a job watches the queue before it sleeps
    /// (`SchedulerConfig::idle_poll`); zero turns it off.
    pub idle_poll: std::time::Duration,
    /// Poll after every job even while polls find nothing
    /// (`SchedulerConfig::idle_poll_always`).
    pub idle_poll_always: bool,
    /// Normal workers compute an over-share tenant's index work at the background priority
    /// (`SchedulerConfig::compute_aside`).
    pub compute_aside: bool,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            workers: 0,
            max_queue: 10_000,
            max_queue_per_tenant: 1_000,
            reserved_workers: 1,
            background_workers: 0,
            background_priority: BackgroundPriority::Nice19,
            long_job_after: DEFAULT_LONG_JOB_AFTER,
            idle_poll: strata_sched::default_idle_poll(),
            idle_poll_always: false,
            compute_aside: true,
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

/// A tenant's place in the pool: what running a job in its fair share needs. Cloned into the
/// request by authentication, so the body extractor can parse the body in the tenant's share.
#[derive(Clone)]
pub(crate) struct Share {
    key: TenantKey,
    weight: u32,
    /// `dedicated` tenants run in the reserved lane (see `PoolConfig::reserved_workers`).
    lane: Lane,
    /// Where the tenant's queue depth, queue wait and CPU time are counted.
    series: Arc<TenantSeries>,
    /// Whose integrity state its queue depth and wait feed (`Engine::observe_queue`).
    scope: TenantScope,
}

/// What a request was admitted with: its tenant's place in the pool, and (while it lives) its
/// in-flight slot.
pub struct Admitted {
    pub(crate) share: Share,
    _permit: Option<Permit<TenantKey>>,
    /// The request body's share of the tenant's body budget (`tenant_bodies`), given back
    /// when the request's admission ends.
    pub(crate) body: BodySlot,
}

impl Admitted {
    /// What the tenant's answers hold (`answer_budget`).
    pub(crate) fn answers(&self) -> &Arc<crate::answer_budget::TenantAnswers> {
        &self.share.series.answers
    }

    /// Whether the pool found the tenant over its share at its latest job
    /// (`crate::over_share_lane`).
    pub(crate) fn over_share(&self) -> &Arc<crate::over_share_lane::OverShare> {
        &self.share.series.over_share
    }
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
            reserved_workers: config.reserved_workers,
            background_workers: config.background_workers,
            background_priority: config.background_priority,
            long_job_after: config.long_job_after,
            idle_poll: config.idle_poll,
            idle_poll_always: config.idle_poll_always,
            compute_aside: config.compute_aside,
            // A background worker runs at the lowest priority: a storage write there could
            // hold the write lock while normal threads keep it off the CPU. Routes send only
            // read-only work there (`Demotable`), and the store checks it on every write.
            background_thread_start: Some(strata_engine::forbid_storage_writes_on_this_thread),
            thread_name: "strata-worker".into(),
            ..defaults
        })?;
        if let Some(why) = pool.priority_error() {
            tracing::warn!("{why}; running without background workers");
        }
        Ok(Gate {
            limiter: RateLimiter::new(),
            in_flight: InFlight::new(),
            pool,
            workers,
            metrics,
        })
    }

    /// Drops the rate buckets that have refilled (they behave as missing ones): after a burst
    /// of many tenants their buckets would otherwise stay until new tenants arrive. Returns how
    /// many were dropped.
    pub fn sweep_idle_rates(&self) -> usize {
        self.limiter.evict_idle(Instant::now())
    }

    /// Checks the tenant's rate and concurrency limits for one request.
    pub fn admit(&self, engine: &Engine, scope: &TenantScope) -> Result<Admitted, ApiError> {
        // Served from memory after the tenant's first request.
        let admission = engine.admission(scope)?;
        let key = scope.key();
        // The in-flight cap first: a request it refuses spends no rate token (a client
        // retrying at its cap would otherwise drain its own bucket); a rate refusal then drops
        // the permit it took.
        // Counted without a cap too, so that a cap set while requests run sees them.
        let max = admission.limits.max_concurrent.unwrap_or(u32::MAX);
        let permit = self.in_flight.try_acquire(&key, max).map_err(|b| {
            ApiError::ConcurrencyLimited(format!(
                "{} requests in flight; the limit is {}",
                b.in_flight, b.max
            ))
        })?;
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
        Ok(Admitted {
            share: Share {
                key,
                weight: admission.weight,
                lane: lane_of(&admission),
                series: self.metrics.tenant(scope.key(), scope.tenant()),
                scope: scope.clone(),
            },
            _permit: Some(permit),
            body: BodySlot::default(),
        })
    }

    /// The tenant's place in the pool for work that outlives its request.
    pub fn admit_background(
        &self,
        engine: &Engine,
        scope: &TenantScope,
    ) -> Result<Admitted, ApiError> {
        let admission = engine.admission(scope)?;
        Ok(Admitted {
            share: Share {
                key: scope.key(),
                weight: admission.weight,
                lane: lane_of(&admission),
                series: self.metrics.tenant(scope.key(), scope.tenant()),
                scope: scope.clone(),
            },
            _permit: None,
            body: BodySlot::default(),
        })
    }

    /// Runs `f` on the pool, in the tenant's fair share. Its writes are acknowledged (this
    /// returns) only once durable, but the wait for their fsync happens off the pool, so a
    /// worker goes on to the next job meanwhile and concurrent requests' writes share fsyncs.
    /// `demotable` is the route's to say: [`Demotable::ReadOnly`] only for work that writes
    /// nothing (it may then run on a background worker while the tenant is over its share).
    pub async fn run<T, F>(
        &self,
        admitted: &Admitted,
        engine: Arc<Engine>,
        demotable: Demotable,
        f: F,
    ) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&Engine) -> Result<T, ApiError> + Send + 'static,
    {
        self.run_in(&admitted.share, engine, demotable, f).await
    }

    /// [`run`](Self::run) in a tenant's share, for work of a request before its handler has
    /// its admission (the body's parse, `crate::input`).
    pub(crate) async fn run_in<T, F>(
        &self,
        admitted: &Share,
        engine: Arc<Engine>,
        demotable: Demotable,
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
        mark_at(Stage::Queued, submitted);
        let map_err = |e: SchedError| match e {
            SchedError::Overloaded { .. } | SchedError::TenantQueueFull { .. } => {
                ApiError::Overloaded(e.to_string())
            }
            SchedError::ShuttingDown => ApiError::Unavailable,
            SchedError::Panicked { message } => {
                ApiError::Internal(format!("engine work panicked: {message}"))
            }
            other => ApiError::Internal(other.to_string()),
        };
        let job = self
            .pool
            .submit_with(
                &admitted.key,
                admitted.weight,
                admitted.lane,
                demotable,
                move || {
                    let started = Instant::now();
                    engine.observe_queue(&scope, depth, started - submitted);
                    let series = queued.start();
                    let _busy = metrics.busy();
                    let (cpu, moved) = (thread_cpu_time(), strata_sched::job_cpu_adjustment());
                    let (result, durable) = engine.deferring_durability(|| f(&engine));
                    // As the pool charges it: with the CPU other threads spent for this job
                    // (a batch leader applying its write) and without what this thread spent
                    // for others (the writes of a batch it led).
                    let moved = strata_sched::job_cpu_adjustment().saturating_sub(moved);
                    let spent = thread_cpu_time().saturating_sub(cpu).as_nanos() as i64;
                    let spent = spent.saturating_add(moved).max(0) as u64;
                    series.charge_cpu(std::time::Duration::from_nanos(spent));
                    (result, durable, (started, Instant::now()))
                },
            )
            .map_err(map_err)?;
        // Where the tenant's next requests run (`crate::over_share_lane`).
        admitted.series.over_share.set(job.over_share());
        let (result, durable, ran) = job.await.map_err(map_err)?;
        mark_at(Stage::Started, ran.0);
        mark_at(Stage::Done, ran.1);
        if !durable.is_empty() {
            // Even when `f` failed after a write had committed: nothing is answered before
            // what was written is durable. Awaited, not waited on a blocking thread: a thread
            // per write in flight, all woken by each sync, would crowd every other tenant's
            // requests off the cores during a flood of writes.
            let rest = durable.flushed().await?;
            if !rest.is_empty() {
                crate::over_share_lane::spawn_blocking(move || rest.wait())
                    .await
                    .map_err(|e| ApiError::Internal(format!("durability wait: {e}")))??;
            }
            mark(Stage::Durable);
        }
        result
    }

    /// Jobs of the tenant of `share` waiting in the pool.
    #[cfg(test)]
    pub(crate) fn queued_in(&self, share: &Share) -> usize {
        self.pool.queued_for(&share.key)
    }

    /// Shared worker threads of the pool (the reserved ones not counted).
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Background worker threads running (0 when off, or when their priority could not be
    /// lowered).
    pub fn background_workers(&self) -> usize {
        self.pool.background_workers()
    }

    /// Jobs that ran long and gave up their place to another tenant's job, by kind of worker.
    pub fn long_job_spares(&self) -> LongJobSpares {
        self.pool.long_job_spares()
    }

    /// Times a worker woke to find jobs queued and none it may run ([`FairScheduler::idle_looks`]).
    pub fn idle_looks(&self) -> u64 {
        self.pool.idle_looks()
    }

    /// Polls of the queue by an idle worker before it slept: (a job started right after, none)
    /// ([`FairScheduler::idle_polls`]).
    pub fn idle_polls(&self) -> (u64, u64) {
        self.pool.idle_polls()
    }

    /// Stops taking work and waits (up to `timeout`) for queued work to finish.
    pub fn shutdown(&self, timeout: std::time::Duration) -> bool {
        self.pool.shutdown_timeout(timeout)
    }
}

/// The pool lane of a tenant: `dedicated` tenants have a share of the pool reserved for them.
fn lane_of(admission: &strata_engine::Admission) -> Lane {
    if admission.reserved {
        Lane::Reserved
    } else {
        Lane::Shared
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;
    use strata_types::TenantId;

    fn admitted(gate: &Gate, engine: &Engine, n: u64, lane: Lane) -> Admitted {
        use strata_auth::{Permission, Permissions};
        admitted_with(gate, engine, n, lane, Permissions::of(&[Permission::Read]))
    }

    /// [`admitted`] with a credential of `permissions`.
    fn admitted_with(
        gate: &Gate,
        engine: &Engine,
        n: u64,
        lane: Lane,
        permissions: strata_auth::Permissions,
    ) -> Admitted {
        use strata_auth::{Grant, OperatorScope};
        let id = TenantId::parse(format!("t{n}")).expect("id");
        let op = OperatorScope::for_tests();
        if engine.tenant_meta(&id).is_err() {
            engine.create_tenant(&op, &id, None).expect("tenant");
        }
        let meta = engine.tenant_meta(&id).expect("meta");
        let grant = Grant {
            permissions,
            user_tokens: None,
            domains: None,
        };
        let scope = TenantScope::for_tests(&meta, grant);
        Admitted {
            share: Share {
                key: meta.key,
                weight: 1,
                lane,
                series: gate.metrics.tenant(meta.key, &id),
                scope,
            },
            _permit: None,
            body: BodySlot::default(),
        }
    }

    /// Through the same `Gate::run` every handler uses: with the one shared worker held by a
    /// flooding tenant, a reserved-lane (dedicated) tenant's request is still answered, and a
    /// shared tenant's is not until the flood lets go.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dedicated_tenant_is_served_while_the_shared_workers_are_busy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = Arc::new(
            Engine::open(dir.path(), strata_engine::EngineConfig::default()).expect("engine"),
        );
        let gate = Arc::new(
            Gate::new(
                PoolConfig {
                    workers: 1,
                    reserved_workers: 1,
                    // The held worker must not give its place to the shared tenant's job.
                    long_job_after: Duration::ZERO,
                    ..PoolConfig::default()
                },
                Arc::new(Metrics::default()),
            )
            .expect("pool"),
        );
        let (release, held) = std::sync::mpsc::channel::<()>();
        let held = Arc::new(Mutex::new(held));
        let flood = {
            let (gate, engine) = (Arc::clone(&gate), Arc::clone(&engine));
            tokio::spawn(async move {
                let a = admitted(&gate, &engine, 1, Lane::Shared);
                gate.run(&a, engine, Demotable::Never, move |_| {
                    // Holds the shared worker until `release` is dropped.
                    let _ = held.lock().expect("lock").recv();
                    Ok(())
                })
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let dedicated = admitted(&gate, &engine, 2, Lane::Reserved);
        let answer = tokio::time::timeout(
            Duration::from_secs(5),
            gate.run(&dedicated, Arc::clone(&engine), Demotable::Never, |_| Ok(7)),
        )
        .await;
        assert_eq!(
            answer.expect("the dedicated tenant waited").expect("run"),
            7
        );
        let shared = admitted(&gate, &engine, 3, Lane::Shared);
        let waiting = tokio::time::timeout(
            Duration::from_millis(200),
            gate.run(&shared, Arc::clone(&engine), Demotable::Never, |_| Ok(8)),
        )
        .await;
        assert!(
            waiting.is_err(),
            "a shared tenant ran on the reserved worker"
        );
        drop(release);
        flood.await.expect("join").expect("flood job");
        let gate2 = Arc::clone(&gate);
        tokio::task::spawn_blocking(move || gate2.shutdown(Duration::from_secs(5)))
            .await
            .expect("join");
    }

    /// A write's wait for durability holds no blocking thread: with the runtime's only one
    /// held, a write through `Gate::run` is still acknowledged. (Its wait used to take one, so
    /// a flood of writes held a thread per write in flight, and every sync woke them all.)
    #[test]
    fn a_writes_wait_for_durability_holds_no_blocking_thread() {
        use strata_types::{CollectionName, Metric, NewRecord, RecordId, RequestScope};
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let dir = tempfile::tempdir().expect("tempdir");
            let engine = Arc::new(
                Engine::open(dir.path(), strata_engine::EngineConfig::default()).expect("engine"),
            );
            let gate =
                Gate::new(PoolConfig::default(), Arc::new(Metrics::default())).expect("pool");
            let writer = admitted_with(
                &gate,
                &engine,
                1,
                Lane::Shared,
                strata_auth::Permissions::of(&[
                    strata_auth::Permission::Read,
                    strata_auth::Permission::Write,
                    strata_auth::Permission::Admin,
                ]),
            );
            let collection = CollectionName::parse("vec").expect("name");
            let scope = writer.share.scope.clone();
            engine
                .create_collection(&scope, &collection, 2, Metric::L2)
                .expect("collection");
            let (release, held) = std::sync::mpsc::channel::<()>();
            let (holding, blocked) = tokio::sync::oneshot::channel();
            let blocker = tokio::task::spawn_blocking(move || {
                let _ = holding.send(());
                let _ = held.recv();
            });
            blocked.await.expect("the blocking thread is held");
            let record = NewRecord {
                id: Some(RecordId::parse("r1").expect("id")),
                modality: Some(collection),
                vector: Some(vec![1.0, 0.0]),
                ..Default::default()
            };
            let write = gate.run(&writer, Arc::clone(&engine), Demotable::Never, move |e| {
                Ok(e.put(&scope, &RequestScope::default(), vec![record])?)
            });
            let answer = tokio::time::timeout(Duration::from_secs(30), write).await;
            let outcomes = answer
                .expect("the write waited for a blocking thread")
                .expect("put");
            assert_eq!(outcomes.len(), 1);
            drop(release);
            blocker.await.expect("join");
            tokio::task::spawn_blocking(move || gate.shutdown(Duration::from_secs(5)))
                .await
                .expect("join");
        });
    }

    /// Busy-waits `d` of CPU time on this thread.
    fn spin(d: Duration) {
        let end = std::time::Instant::now() + d;
        while std::time::Instant::now() < end {
            std::hint::spin_loop();
        }
    }

    /// Tenant 1 floods (8 jobs of 2 ms at a time, each marked `demotable`) beside tenant 2's
    /// light load, through `Gate::run`; how many of tenant 1's jobs ran on a background worker.
    async fn flood_through_the_gate(demotable: Demotable) -> usize {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = Arc::new(
            Engine::open(dir.path(), strata_engine::EngineConfig::default()).expect("engine"),
        );
        let gate = Arc::new(
            Gate::new(
                PoolConfig {
                    workers: 1,
                    reserved_workers: 0,
                    background_workers: 1,
                    ..PoolConfig::default()
                },
                Arc::new(Metrics::default()),
            )
            .expect("pool"),
        );
        assert_eq!(gate.background_workers(), 1);
        let end = std::time::Instant::now() + Duration::from_millis(1500);
        let a = Arc::new(admitted(&gate, &engine, 1, Lane::Shared));
        let flooders: Vec<_> = (0..8)
            .map(|_| {
                let (gate, engine, a) = (Arc::clone(&gate), Arc::clone(&engine), Arc::clone(&a));
                tokio::spawn(async move {
                    let mut moved = 0;
                    while std::time::Instant::now() < end {
                        let name = gate
                            .run(&a, Arc::clone(&engine), demotable, |_| {
                                spin(Duration::from_millis(2));
                                let name = std::thread::current().name().map(str::to_owned);
                                let low = strata_sched::on_background_worker();
                                Ok((name, strata_engine::storage_writes_allowed_here(), low))
                            })
                            .await
                            .expect("run");
                        let (name, writes_allowed, low) = name;
                        let background = name.is_some_and(|n| n.contains("-b"));
                        // A background worker is marked as one that must not write, and a job
                        // can tell where it runs (`Demotable::WritesInForeground`).
                        assert_eq!(writes_allowed, !background);
                        assert_eq!(low, background);
                        moved += usize::from(background);
                    }
                    moved
                })
            })
            .collect();
        let b = admitted(&gate, &engine, 2, Lane::Shared);
        while std::time::Instant::now() < end {
            let light = gate.run(&b, Arc::clone(&engine), Demotable::ReadOnly, |_| {
                spin(Duration::from_millis(1));
                Ok(())
            });
            light.await.expect("light job");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut moved = 0;
        for f in flooders {
            moved += f.await.expect("join");
        }
        let gate2 = Arc::clone(&gate);
        tokio::task::spawn_blocking(move || gate2.shutdown(Duration::from_secs(5)))
            .await
            .expect("join");
        moved
    }

    /// The route's word reaches the pool: work that may write stays on the normal workers
    /// however far its tenant is over its share; read-only work of that tenant moves.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_read_only_work_runs_on_background_workers() {
        assert_eq!(flood_through_the_gate(Demotable::Never).await, 0);
        assert!(flood_through_the_gate(Demotable::ReadOnly).await > 0);
        assert!(flood_through_the_gate(Demotable::WritesInForeground).await > 0);
    }

    /// A request that asked for its timings sees its pool stages: the wait in the queue (here
    /// behind a job holding the only worker) and its own job, each as long as it really was.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_timed_request_gets_its_queue_wait_and_its_job() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = Arc::new(
            Engine::open(dir.path(), strata_engine::EngineConfig::default()).expect("engine"),
        );
        let gate = Arc::new(
            Gate::new(
                PoolConfig {
                    workers: 1,
                    reserved_workers: 0,
                    // `b` must wait behind the holder, not take its place once it ran long.
                    long_job_after: Duration::ZERO,
                    ..PoolConfig::default()
                },
                Arc::new(Metrics::default()),
            )
            .expect("pool"),
        );
        // The holder's job says when it holds the only worker; `b` is submitted only then, so
        // it waits in the queue for the rest of the holder's job, whatever the scheduling.
        let (holding, held) = tokio::sync::oneshot::channel();
        let holder = {
            let (gate, engine) = (Arc::clone(&gate), Arc::clone(&engine));
            tokio::spawn(async move {
                let a = admitted(&gate, &engine, 1, Lane::Shared);
                gate.run(&a, engine, Demotable::Never, move |_| {
                    let _ = holding.send(());
                    std::thread::sleep(Duration::from_millis(150));
                    Ok(())
                })
                .await
            })
        };
        held.await.expect("the holder's job started");
        let b = admitted(&gate, &engine, 2, Lane::Shared);
        let (answer, header) =
            crate::timing::timed(crate::timing::Timeline::starting(None), async {
                crate::timing::authenticated();
                gate.run(&b, Arc::clone(&engine), Demotable::Never, |_| {
                    std::thread::sleep(Duration::from_millis(30));
                    Ok(5)
                })
                .await
            })
            .await;
        assert_eq!(answer.expect("run"), 5);
        holder.await.expect("join").expect("holder");
        let header = header.expect("timings").to_str().expect("ascii").to_owned();
        let dur = |name: &str| -> f64 {
            header
                .split(", ")
                .find_map(|p| p.strip_prefix(&format!("{name};dur=")))
                .unwrap_or_else(|| panic!("no {name} in {header}"))
                .parse()
                .expect("ms")
        };
        // Submitted right after the holder's job began, it waited for most of its 150 ms.
        assert!(dur("queue") >= 75.0, "{header}");
        assert!(dur("job") >= 30.0, "{header}");
        let gate2 = Arc::clone(&gate);
        tokio::task::spawn_blocking(move || gate2.shutdown(Duration::from_secs(5)))
            .await
            .expect("join");
    }

    /// An engine in `dir` with tenant `t1`, a gate, and a scope of the tenant's.
    fn gate_with_tenant(dir: &std::path::Path) -> (Engine, Gate, TenantScope) {
        let engine = Engine::open(dir, strata_engine::EngineConfig::default()).expect("engine");
        let gate = Gate::new(PoolConfig::default(), Arc::new(Metrics::default())).expect("pool");
        let scope = admitted(&gate, &engine, 1, Lane::Shared)
            .share
            .scope
            .clone();
        (engine, gate, scope)
    }

    /// Gives `scope`'s tenant `limits`, as an operator's `PATCH` does.
    fn set_limits(engine: &Engine, scope: &TenantScope, limits: strata_engine::TenantLimits) {
        let update = strata_engine::TenantUpdate {
            limits: Some(limits),
            ..Default::default()
        };
        engine
            .update_tenant(
                &strata_auth::OperatorScope::for_tests(),
                scope.tenant(),
                update,
            )
            .expect("limits");
    }

    /// A request refused by the in-flight cap spends no rate token: a client retrying while
    /// at its cap would otherwise drain its own bucket and be refused for a rate it never used.
    #[test]
    fn a_request_refused_for_concurrency_spends_no_rate_token() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine =
            Engine::open(dir.path(), strata_engine::EngineConfig::default()).expect("engine");
        let gate = Gate::new(PoolConfig::default(), Arc::new(Metrics::default())).expect("pool");
        let held = admitted(&gate, &engine, 1, Lane::Shared);
        let id = TenantId::parse("t1").expect("id");
        let limits = strata_engine::TenantLimits {
            // Three tokens, refilled once in a thousand seconds: none comes back in the test.
            max_qps: Some(0.001),
            burst: Some(3),
            max_concurrent: Some(1),
            ..Default::default()
        };
        let update = strata_engine::TenantUpdate {
            limits: Some(limits),
            ..Default::default()
        };
        engine
            .update_tenant(&strata_auth::OperatorScope::for_tests(), &id, update)
            .expect("limits");
        let scope = held.share.scope.clone();
        let first = gate.admit(&engine, &scope).expect("the first request");
        for _ in 0..5 {
            match gate.admit(&engine, &scope) {
                Err(ApiError::ConcurrencyLimited(_)) => {}
                Err(e) => panic!("refused for another reason: {e:?}"),
                Ok(_) => panic!("admitted over the in-flight cap"),
            }
        }
        drop(first);
        // The two tokens left after the first request are still there.
        drop(gate.admit(&engine, &scope).expect("a second request"));
        drop(gate.admit(&engine, &scope).expect("a third request"));
        assert!(matches!(
            gate.admit(&engine, &scope),
            Err(ApiError::RateLimited { .. })
        ));
        gate.shutdown(Duration::from_secs(5));
    }

    /// Requests admitted while a tenant had no in-flight cap count against one set while they
    /// run: the cap holds from the moment it is set, not once they have drained.
    #[test]
    fn a_cap_set_while_requests_run_counts_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (engine, gate, scope) = gate_with_tenant(dir.path());
        let mut running: Vec<Admitted> = (0..3)
            .map(|_| gate.admit(&engine, &scope).expect("no cap yet"))
            .collect();
        set_limits(
            &engine,
            &scope,
            strata_engine::TenantLimits {
                max_concurrent: Some(2),
                ..Default::default()
            },
        );
        for _ in 0..2 {
            assert!(matches!(
                gate.admit(&engine, &scope),
                Err(ApiError::ConcurrencyLimited(_))
            ));
            running.pop();
        }
        drop(gate.admit(&engine, &scope).expect("one of two in flight"));
        gate.shutdown(Duration::from_secs(5));
    }

    /// A tenant's rate bucket that has refilled is dropped by the periodic sweep.
    #[test]
    fn refilled_rate_buckets_are_swept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (engine, gate, scope) = gate_with_tenant(dir.path());
        set_limits(
            &engine,
            &scope,
            strata_engine::TenantLimits {
                max_qps: Some(1000.0),
                ..Default::default()
            },
        );
        drop(gate.admit(&engine, &scope).expect("admitted"));
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(gate.sweep_idle_rates(), 1);
        assert_eq!(gate.sweep_idle_rates(), 0);
        gate.shutdown(Duration::from_secs(5));
    }

    #[test]
    fn the_lane_follows_the_admission() {
        let mut a = strata_engine::Admission {
            limits: Default::default(),
            weight: 1,
            reserved: false,
            integrity: std::sync::Arc::new(strata_engine::EffectivePolicy {
                policy: Default::default(),
                source: strata_engine::PolicySource::ConfigDefault,
            }),
        };
        assert_eq!(lane_of(&a), Lane::Shared);
        a.reserved = true;
        assert_eq!(lane_of(&a), Lane::Reserved);
    }
}
