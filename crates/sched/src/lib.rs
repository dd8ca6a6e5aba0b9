//! Strata's per-tenant admission control and fair scheduling: token-bucket rate limits,
//! in-flight caps and a bounded worker pool with weighted fair queueing across tenants.
//!
//! The crate knows nothing about HTTP or about Strata's tenant records: tenants are an opaque
//! key type `K: Hash + Eq + Clone` chosen by the caller (a `u64`, a tenant id newtype, …), and
//! limits and weights are passed in on every call, so a changed tenant record takes effect on
//! the next request without any cache to invalidate.
//!
//! A request typically goes through three gates, cheapest first:
//!
//! 1. [`RateLimiter::check`]: per-tenant token bucket (`max_qps`, `burst`) → `429` with
//!    [`RetryAfter`].
//! 2. [`InFlight::try_acquire`]: per-tenant concurrency cap (`max_concurrent`) → [`Busy`]; the
//!    returned [`Permit`] is held for the life of the request and releases on drop.
//! 3. [`FairScheduler::run`]: blocking search / indexing work on a bounded pool of threads,
//!    dispatched by start-time fair queueing ([`FairQueue`]) so a flooding tenant cannot starve
//!    the others; each job is charged the CPU time it used, so a tenant with costlier
//!    requests gets fewer of them, not more CPU.
//!
//! Invariants:
//! - No I/O, no HTTP, no dependency on other workspace crates.
//! - Memory is bounded by *active* tenants: idle token buckets are evicted, in-flight entries
//!   vanish when their last permit drops, idle scheduler entries are swept.
//! - Dispatch order is a pure function of the submission sequence (keys, weights, order) and
//!   the measured costs. Which *thread* runs a job (normal or lowest OS priority, when the pool
//!   has background workers) also depends on each tenant's recent CPU ([`shares`]).

#![warn(missing_docs)]

mod aside;
pub mod blocking;
mod cpu;
mod error;
mod executor;
pub mod fair_queue;
pub mod idle_poll;
pub mod inflight;
pub mod long_jobs;
mod lowered;
mod priority;
pub mod rate;
pub mod scheduler;
mod shard;
pub mod shares;
pub mod slice;

pub use aside::{compute_aside, lower_for_over_share, sets_aside};
pub use blocking::{blocking, on_background_worker};
pub use cpu::{adjust_job_cpu, job_cpu_adjustment, take_job_cpu_adjustment, thread_cpu_ns};
pub use error::{Busy, LimitsError, RetryAfter, SchedError};
pub use fair_queue::{Charge, DEFAULT_COST_NS, Discipline, FairQueue, Lane, QueueFull};
pub use idle_poll::{DEFAULT_IDLE_POLL, default_idle_poll};
pub use inflight::{InFlight, Permit};
pub use lowered::run_lowered;
pub use priority::BackgroundPriority;
pub use rate::{Limits, MAX_RETRY_AFTER_MS, RateLimiter};
pub use scheduler::{
    Charging, DEFAULT_LONG_JOB_AFTER, Demotable, FairScheduler, JobHandle, LongJobSpares,
    SchedulerConfig,
};
pub use shares::{CpuShares, Placement, SHARE_WINDOW, Standing};
