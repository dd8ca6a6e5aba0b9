//! Per-tenant token buckets: `max_qps` tokens per second, capacity `burst`.
//!
//! Why hand-written rather than `governor`: governor's keyed limiter holds one quota for all
//! keys, so per-tenant plans would need one limiter per tenant inside a map of our own, and a
//! changed plan would mean replacing that tenant's limiter (losing its state). Here the limits
//! are an argument of every [`RateLimiter::check`], so a changed tenant record applies on the
//! next check with the bucket's tokens carried over, and the map is the same sharded map the
//! in-flight counter uses. Measured with `cargo bench -p strata-sched --bench admission` on
//! the shared 2-core VM (medians over three runs): a check costs 21-36 ns single-threaded,
//! 35-42 ns per thread with two threads on different tenants and 33-90 ns with two threads on
//! the same tenant (plus ~29 ns if the caller reads `Instant::now()` for it). That is the range
//! DEPENDENCIES.md reports for governor's keyed check (40-50 ns) and far under the 1 µs budget,
//! so a dependency would buy nothing.
//!
//! Limits are an argument of each check and apply from that check on: the time since the
//! previous check accrues at the rate in force during it, a lowered burst clamps at once, and a
//! refusal quotes the wait at the new rate.
//!
//! Buckets start full. A bucket that has refilled to capacity is indistinguishable from a
//! missing one, so eviction removes exactly those and never changes a decision (one exception,
//! on the generous side: a tenant whose burst was raised while idle restarts full at the new
//! burst). Shards sweep themselves when they have doubled since their last sweep (amortised
//! O(1) per new tenant), and [`RateLimiter::evict_idle`] sweeps on demand. Memory therefore
//! stays within about twice the number of tenants active within their last `burst / max_qps`
//! seconds.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Instant;

use foldhash::fast::RandomState;

use crate::error::{LimitsError, RetryAfter};
use crate::shard::Sharded;

/// A shard is never swept below this many buckets, so a handful of tenants cost no sweeps.
const MIN_SWEEP: usize = 64;

/// Tolerance for floating-point drift in the token count: refills computed from many small
/// elapsed intervals may land a hair below a whole token when exactly one has accrued.
const EPSILON: f64 = 1e-9;

/// Longest wait a refusal quotes: one day. A rate so low that one token takes longer is
/// quoted as this, so no arithmetic on the wait (milliseconds, the `Retry-After` seconds, a
/// client's own sums) can overflow.
pub const MAX_RETRY_AFTER_MS: u64 = 24 * 60 * 60 * 1000;

/// A tenant's rate limit: `max_qps` tokens per second, at most `burst` stored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    max_qps: f64,
    burst: u32,
}

impl Limits {
    /// Validated limits. `burst` defaults to `max(1, ceil(max_qps))`: one second's worth.
    pub fn new(max_qps: f64, burst: Option<u32>) -> Result<Self, LimitsError> {
        if !(max_qps.is_finite() && max_qps > 0.0) {
            return Err(LimitsError::Rate(max_qps));
        }
        // `as` saturates for floats above u32::MAX, which is the sensible cap anyway.
        let burst = burst.unwrap_or_else(|| (max_qps.ceil() as u32).max(1));
        if burst == 0 {
            return Err(LimitsError::Burst);
        }
        Ok(Self { max_qps, burst })
    }

    /// `max_qps` with the default burst.
    pub fn per_second(max_qps: f64) -> Result<Self, LimitsError> {
        Self::new(max_qps, None)
    }

    /// Tokens added per second.
    pub fn max_qps(&self) -> f64 {
        self.max_qps
    }

    /// Bucket capacity.
    pub fn burst(&self) -> u32 {
        self.burst
    }
}

/// One tenant's bucket with the limits in force since its last check.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
    rate: f64,
    cap: f64,
}

impl Bucket {
    fn full(limits: &Limits, now: Instant) -> Self {
        Self {
            tokens: f64::from(limits.burst),
            last: now,
            rate: limits.max_qps,
            cap: f64::from(limits.burst),
        }
    }

    /// Tokens the bucket holds at `now` under the limits in force since its last check.
    fn level_at(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        (self.tokens + elapsed * self.rate).min(self.cap)
    }

    fn take(&mut self, limits: &Limits, now: Instant) -> Result<(), RetryAfter> {
        // The interval since the last check accrued at the limits in force during it; new
        // limits apply from this check on: a lowered burst clamps at once, a raised one adds
        // its increase at once (an operator raising a throttled tenant's limit expects its
        // next request through, not a wait at the old rate), the retry-after uses the new
        // rate. Crediting the old rate, and adding only the burst's increase, is also what
        // makes eviction (judged on the stored limits) never change a decision: a full bucket
        // of the old burst plus the increase is a full bucket of the new one.
        self.tokens = self.level_at(now);
        self.rate = limits.max_qps;
        let cap = f64::from(limits.burst);
        if cap > self.cap {
            self.tokens += cap - self.cap;
        }
        self.cap = cap;
        self.tokens = self.tokens.min(self.cap);
        // Threads may pass slightly out-of-order `now`s; never move the clock backwards or a
        // later check would refill the same interval twice.
        self.last = self.last.max(now);
        if self.tokens >= 1.0 - EPSILON {
            self.tokens = (self.tokens - 1.0).max(0.0);
            Ok(())
        } else {
            Err(RetryAfter {
                millis: wait_millis(1.0 - self.tokens, self.rate),
            })
        }
    }
}

/// Milliseconds until `missing` tokens accrue at `rate` per second, rounded up so that waiting
/// exactly that long is enough, at least 1 and at most [`MAX_RETRY_AFTER_MS`] (a subnormal
/// rate makes the quotient infinite).
fn wait_millis(missing: f64, rate: f64) -> u64 {
    let millis = (missing / rate * 1000.0).ceil();
    // `min` also turns a NaN into the cap; the cast is then exact.
    millis.min(MAX_RETRY_AFTER_MS as f64).max(1.0) as u64
}

/// One shard: its buckets and the size at which it is next swept.
struct Shard<K> {
    buckets: HashMap<K, Bucket, RandomState>,
    sweep_at: usize,
}

impl<K: Hash + Eq> Shard<K> {
    /// Drops every bucket that has refilled by `now`; returns how many went.
    fn sweep(&mut self, now: Instant) -> usize {
        let before = self.buckets.len();
        self.buckets
            .retain(|_, b| b.level_at(now) < b.cap - EPSILON);
        self.sweep_at = (2 * self.buckets.len()).max(MIN_SWEEP);
        before - self.buckets.len()
    }
}

/// Per-tenant token buckets keyed by the caller's tenant key.
pub struct RateLimiter<K> {
    shards: Sharded<Shard<K>>,
}

impl<K: Hash + Eq + Clone> Default for RateLimiter<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// An empty limiter.
    pub fn new() -> Self {
        Self {
            shards: Sharded::new(|| Shard {
                buckets: HashMap::with_hasher(RandomState::default()),
                sweep_at: MIN_SWEEP,
            }),
        }
    }

    /// Spends one of `key`'s tokens under `limits`, or says how long until one is available.
    /// A refused check spends nothing.
    pub fn check(&self, key: &K, limits: &Limits, now: Instant) -> Result<(), RetryAfter> {
        let mut shard = self.shards.lock(self.shards.index(key));
        if let Some(bucket) = shard.buckets.get_mut(key) {
            return bucket.take(limits, now);
        }
        if shard.buckets.len() >= shard.sweep_at {
            shard.sweep(now);
        }
        let mut bucket = Bucket::full(limits, now);
        let verdict = bucket.take(limits, now);
        shard.buckets.insert(key.clone(), bucket);
        verdict
    }

    /// Removes every bucket that has refilled to capacity by `now` (such a bucket behaves
    /// exactly like a missing one). Returns how many were removed. Optional: shards also sweep
    /// themselves as they grow; call this periodically to shrink after a burst of tenants.
    pub fn evict_idle(&self, now: Instant) -> usize {
        (0..self.shards.count())
            .map(|i| self.shards.lock(i).sweep(now))
            .sum()
    }

    /// Number of buckets currently held.
    pub fn len(&self) -> usize {
        (0..self.shards.count())
            .map(|i| self.shards.lock(i).buckets.len())
            .sum()
    }

    /// Whether no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_tiny_rate_quotes_at_most_a_day() {
        let rl = RateLimiter::new();
        let now = Instant::now();
        for qps in [1e-9, 1e-300, 5e-324, f64::MIN_POSITIVE] {
            let lim = Limits::new(qps, Some(1)).unwrap();
            let key = qps.to_bits();
            assert!(rl.check(&key, &lim, now).is_ok());
            let wait = rl.check(&key, &lim, now).unwrap_err();
            assert_eq!(wait.millis, MAX_RETRY_AFTER_MS, "{qps}");
            assert_eq!(wait.secs_ceil(), 24 * 60 * 60);
        }
        // A day's wait itself is quoted exactly; the cap only bounds.
        assert_eq!(wait_millis(1.0, 1.0 / 86_400.0), MAX_RETRY_AFTER_MS);
        assert_eq!(wait_millis(1.0, 0.5), 2000);
        assert_eq!(wait_millis(1e-12, 1e12), 1);
        assert_eq!(wait_millis(1.0, f64::NAN), MAX_RETRY_AFTER_MS);
    }

    /// Runs `n` checks at `now` and returns how many were admitted.
    fn admitted(rl: &RateLimiter<u64>, key: u64, lim: &Limits, now: Instant, n: usize) -> usize {
        (0..n).filter(|_| rl.check(&key, lim, now).is_ok()).count()
    }

    #[test]
    fn default_burst_is_one_second_of_rate() {
        assert_eq!(Limits::per_second(10.0).unwrap().burst(), 10);
        assert_eq!(Limits::per_second(2.5).unwrap().burst(), 3);
        assert_eq!(Limits::per_second(0.1).unwrap().burst(), 1);
        assert_eq!(Limits::new(10.0, Some(4)).unwrap().burst(), 4);
        assert_eq!(Limits::per_second(0.0), Err(LimitsError::Rate(0.0)));
        assert!(Limits::per_second(f64::NAN).is_err());
        assert!(Limits::per_second(f64::INFINITY).is_err());
        assert_eq!(Limits::new(1.0, Some(0)), Err(LimitsError::Burst));
    }

    #[test]
    fn burst_then_refill() {
        let rl = RateLimiter::new();
        let lim = Limits::new(10.0, Some(5)).unwrap();
        let t0 = Instant::now();
        assert_eq!(
            admitted(&rl, 1, &lim, t0, 20),
            5,
            "a fresh bucket admits its burst"
        );
        // 10/s: one token per 100 ms.
        assert_eq!(admitted(&rl, 1, &lim, t0 + ms(99), 5), 0);
        assert_eq!(admitted(&rl, 1, &lim, t0 + ms(100), 5), 1);
        assert_eq!(admitted(&rl, 1, &lim, t0 + ms(350), 5), 2);
        // Refill is capped at the burst however long the tenant was idle.
        assert_eq!(admitted(&rl, 1, &lim, t0 + ms(60_000), 20), 5);
    }

    #[test]
    fn retry_after_is_accurate_and_sufficient() {
        let rl = RateLimiter::new();
        let lim = Limits::new(4.0, Some(1)).unwrap(); // one token per 250 ms
        let t0 = Instant::now();
        assert!(rl.check(&7, &lim, t0).is_ok());
        assert_eq!(rl.check(&7, &lim, t0), Err(RetryAfter { millis: 250 }));
        let err = rl.check(&7, &lim, t0 + ms(100)).unwrap_err();
        assert_eq!(err.millis, 150);
        assert_eq!(err.secs_ceil(), 1);
        // Waiting exactly the advertised time is enough.
        assert!(rl.check(&7, &lim, t0 + ms(100) + err.duration()).is_ok());
    }

    #[test]
    fn tenants_are_independent() {
        let rl = RateLimiter::new();
        let lim = Limits::new(1.0, Some(2)).unwrap();
        let t0 = Instant::now();
        assert_eq!(admitted(&rl, 1, &lim, t0, 10), 2);
        assert_eq!(admitted(&rl, 2, &lim, t0, 10), 2);
    }

    #[test]
    fn limit_changes_apply_on_next_check() {
        let rl = RateLimiter::new();
        let t0 = Instant::now();
        let slow = Limits::new(1.0, Some(1)).unwrap();
        let fast = Limits::new(100.0, Some(10)).unwrap();
        assert!(rl.check(&1, &slow, t0).is_ok());
        // Raised: the burst's increase (9) is there at once; the next refusal quotes the new
        // rate (0.5 token accrued in 5 ms at 100/s, the missing 0.5 takes 5 ms)...
        assert_eq!(admitted(&rl, 1, &fast, t0, 20), 9);
        assert_eq!(rl.check(&1, &fast, t0 + ms(5)).unwrap_err().millis, 5);
        // ...and from that check on tokens accrue at it (2 by 20 ms: one spent, one left).
        assert!(rl.check(&1, &fast, t0 + ms(20)).is_ok());
        // Lowered again: the token left is clamped to the burst 1 and spent; then 0.5 token
        // accrues at 1/s by 520 ms, and the missing 0.5 takes 500 ms.
        assert!(rl.check(&1, &slow, t0 + ms(20)).is_ok());
        assert_eq!(rl.check(&1, &slow, t0 + ms(520)).unwrap_err().millis, 500);
        // Raised again: the idle second accrued under the 1/s plan (capped at its burst 1),
        // plus the increase to the new burst: 1 + 9...
        assert_eq!(admitted(&rl, 1, &fast, t0 + ms(1_520), 20), 10);
        // ...and the next interval refills up to the new burst.
        assert_eq!(admitted(&rl, 1, &fast, t0 + ms(2_000), 20), 10);

        // Lowered burst clamps stored tokens at once.
        let t1 = t0 + ms(5_000);
        let tight = Limits::new(100.0, Some(2)).unwrap();
        assert_eq!(admitted(&rl, 1, &tight, t1, 20), 2);
        // A raised burst on an empty bucket adds exactly the increase, not a full bucket.
        assert_eq!(admitted(&rl, 1, &fast, t1, 20), 8);
    }

    #[test]
    fn eviction_drops_only_refilled_buckets() {
        let rl = RateLimiter::new();
        let lim = Limits::new(10.0, Some(1)).unwrap();
        let t0 = Instant::now();
        for k in 0..100u64 {
            assert!(rl.check(&k, &lim, t0).is_ok());
        }
        assert_eq!(rl.len(), 100);
        assert_eq!(rl.evict_idle(t0 + ms(50)), 0, "nobody has refilled yet");
        assert!(rl.check(&0, &lim, t0 + ms(50)).is_err(), "state survived");
        // Key 0 spends its refilled token at 100 ms, so only it is still below capacity.
        assert!(rl.check(&0, &lim, t0 + ms(100)).is_ok());
        assert_eq!(rl.evict_idle(t0 + ms(100)), 99, "all but key 0 refilled");
        assert_eq!(rl.len(), 1);
        assert_eq!(rl.evict_idle(t0 + ms(1_000)), 1);
        assert!(rl.is_empty());
    }

    #[test]
    fn automatic_sweep_bounds_memory() {
        let rl = RateLimiter::new();
        let lim = Limits::new(1000.0, Some(1)).unwrap();
        let t0 = Instant::now();
        // Many one-off tenants, each idle (refilled) 1 ms after its only request.
        for k in 0..200_000u64 {
            let _ = rl.check(&k, &lim, t0 + Duration::from_micros(k * 10));
        }
        // Only tenants seen in the last ms are live (~100); the rest is sweep slack.
        assert!(rl.len() <= 64 * 64, "len {}", rl.len());
    }
}
