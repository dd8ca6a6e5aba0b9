//! Error and rejection types returned by the admission gates and the scheduler.

use std::time::Duration;

/// A rate-limited request: the tenant's bucket holds less than one token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rate limited; retry after {millis} ms")]
pub struct RetryAfter {
    /// Milliseconds until the bucket holds one whole token again, rounded up so that a client
    /// that waits exactly this long is admitted (if nobody else of its tenant spends the token).
    pub millis: u64,
}

impl RetryAfter {
    /// The wait as a [`Duration`].
    pub fn duration(self) -> Duration {
        Duration::from_millis(self.millis)
    }

    /// Whole seconds for the HTTP `Retry-After` header, rounded up (never 0, since the header
    /// cannot express sub-second waits and `0` would invite an immediate retry).
    pub fn secs_ceil(self) -> u64 {
        self.millis.div_ceil(1000).max(1)
    }
}

/// An invalid [`Limits`](crate::Limits) value.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum LimitsError {
    /// `max_qps` must be finite and greater than zero.
    #[error("max_qps must be finite and > 0, got {0}")]
    Rate(f64),
    /// `burst` must be at least 1, or no request could ever be admitted.
    #[error("burst must be >= 1")]
    Burst,
}

/// The tenant already has `max` requests in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("tenant has {in_flight} requests in flight (max {max})")]
pub struct Busy {
    /// Requests in flight when the acquire was refused.
    pub in_flight: u32,
    /// The cap that was applied.
    pub max: u32,
}

/// Why a job submitted to the [`FairScheduler`](crate::FairScheduler) produced no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchedError {
    /// The total queue (all tenants) is full.
    #[error("scheduler overloaded: {queued} jobs queued")]
    Overloaded {
        /// Jobs queued across all tenants.
        queued: usize,
    },
    /// This tenant's own queue is full; other tenants are unaffected.
    #[error("tenant queue full: {queued} jobs queued for this tenant")]
    TenantQueueFull {
        /// Jobs queued for this tenant.
        queued: usize,
    },
    /// The scheduler is shutting down and accepts no new work.
    #[error("scheduler is shutting down")]
    ShuttingDown,
    /// The job panicked; the worker survived.
    #[error("job panicked: {message}")]
    Panicked {
        /// The panic payload when it was a string, else a placeholder.
        message: String,
    },
    /// The job was dropped without running (only if a worker vanished; kept so the caller
    /// never hangs on a lost result).
    #[error("job was dropped before it ran")]
    Dropped,
}
