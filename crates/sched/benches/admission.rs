//! divan benchmarks: per-request overhead of the admission path (rate-limit check, in-flight
//! acquire/release) and of the scheduler (queue operations, no-op job round trip).
//!
//! Run with `cargo bench -p strata-sched --bench admission`. Benches with `threads = [1, 2]`
//! run the same body on one and on two threads at once against one shared limiter: "distinct"
//! gives each thread its own tenant (shard contention only by chance), "same" makes both threads
//! hit one tenant's bucket (the worst case: they serialise on its lock). Shared state is built
//! before `bench` starts, so its setup never lands in a sample. The threaded benches fix 2000
//! iterations per sample: on this shared VM, divan's calibration otherwise sometimes settles
//! on 100-iteration samples after one preempted warm-up, and those report the preemption.

use std::cell::Cell;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use divan::{Bencher, black_box};
use strata_sched::{
    Discipline, FairQueue, FairScheduler, InFlight, Limits, RateLimiter, SchedulerConfig,
};

fn main() {
    divan::main();
}

/// A limit no benchmark loop can exhaust, so every check takes the admit path.
fn open_limits() -> Limits {
    Limits::new(1e12, Some(u32::MAX)).expect("valid limits")
}

static NEXT_TENANT: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// A tenant key of this thread's own.
    static MY_TENANT: Cell<u64> = Cell::new(NEXT_TENANT.fetch_add(1, Ordering::Relaxed));
}

fn my_tenant() -> u64 {
    MY_TENANT.with(Cell::get)
}

/// A limiter pre-filled with 10 000 tenants, so lookups run against a realistic map. Their
/// buckets are left empty at 1 token/s so the automatic sweep keeps them for the whole run.
fn populated_limiter() -> RateLimiter<u64> {
    let rl = RateLimiter::new();
    let lim = Limits::new(1.0, Some(1)).expect("valid limits");
    let now = Instant::now();
    for k in 1_000_000..1_010_000u64 {
        let _ = rl.check(&k, &lim, now);
    }
    assert_eq!(rl.len(), 10_000);
    rl
}

#[divan::bench(threads = [1, 2], sample_size = 2000)]
fn rate_check_distinct_tenants(b: Bencher) {
    static RL: LazyLock<RateLimiter<u64>> = LazyLock::new(populated_limiter);
    let (rl, lim, now) = (&*RL, open_limits(), Instant::now());
    b.bench(|| rl.check(black_box(&my_tenant()), &lim, now));
}

#[divan::bench(threads = [1, 2], sample_size = 2000)]
fn rate_check_same_tenant(b: Bencher) {
    static RL: LazyLock<RateLimiter<u64>> = LazyLock::new(populated_limiter);
    let (rl, lim, now) = (&*RL, open_limits(), Instant::now());
    b.bench(|| rl.check(black_box(&7), &lim, now));
}

/// The refusal path (computes a retry-after).
#[divan::bench]
fn rate_check_rejected(b: Bencher) {
    let rl = RateLimiter::new();
    let lim = Limits::new(1.0, Some(1)).expect("valid limits");
    let now = Instant::now();
    let _ = rl.check(&1u64, &lim, now);
    b.bench(|| rl.check(black_box(&1), &lim, now));
}

/// Reading the clock is part of a real check; measured separately so it can be added.
#[divan::bench]
fn instant_now() -> Instant {
    Instant::now()
}

#[divan::bench(threads = [1, 2], sample_size = 2000)]
fn inflight_acquire_release_distinct(b: Bencher) {
    static INF: LazyLock<InFlight<u64>> = LazyLock::new(InFlight::new);
    let inf = &*INF;
    b.bench(|| drop(inf.try_acquire(black_box(&my_tenant()), 64)));
}

#[divan::bench(threads = [1, 2], sample_size = 2000)]
fn inflight_acquire_release_same(b: Bencher) {
    static INF: LazyLock<InFlight<u64>> = LazyLock::new(InFlight::new);
    let inf = &*INF;
    b.bench(|| drop(inf.try_acquire(black_box(&7), 64)));
}

/// The whole admission gate of one request: clock, rate check, in-flight acquire and release.
#[divan::bench(threads = [1, 2], sample_size = 2000)]
fn admission_path(b: Bencher) {
    static RL: LazyLock<RateLimiter<u64>> = LazyLock::new(populated_limiter);
    static INF: LazyLock<InFlight<u64>> = LazyLock::new(InFlight::new);
    let (rl, inf, lim) = (&*RL, &*INF, open_limits());
    b.bench(|| {
        let key = my_tenant();
        let ok = rl.check(&key, &lim, Instant::now()).is_ok();
        // Released inside the timed body: a real request releases its permit, and returning it
        // would let divan defer the drop and pile up permits until the cap refuses them.
        let permit = inf.try_acquire(&key, 64);
        black_box(&permit);
        drop(permit);
        ok
    });
}

/// Queue operations alone: push one job and pop one, with 100 tenants backlogged.
#[divan::bench]
fn fair_queue_push_pop(b: Bencher) {
    let mut q = FairQueue::new(Discipline::Fair, usize::MAX, usize::MAX);
    for i in 0..10_000u64 {
        let _ = q.push(&(i % 100), 1 + (i % 3) as u32, i);
    }
    let mut i = 0u64;
    b.bench_local(|| {
        i += 1;
        let _ = q.push(&(i % 100), 1, i);
        black_box(q.pop())
    });
}

fn scheduler(workers: usize) -> FairScheduler<u64> {
    FairScheduler::new(SchedulerConfig {
        workers,
        ..SchedulerConfig::default()
    })
    .expect("spawn workers")
}

/// Latency of one no-op job: submit, wake a worker, run, deliver, wake the caller.
#[divan::bench(args = [1, 2])]
fn scheduler_roundtrip_noop(b: Bencher, workers: usize) {
    let s = scheduler(workers);
    b.bench_local(|| s.submit(&1, 1, || black_box(1)).map(|h| h.wait_blocking()));
}

/// Throughput: 1000 no-op jobs from 10 tenants submitted back to back, then awaited; the time
/// per item is the amortised enqueue + dispatch + delivery cost.
#[divan::bench(args = [1, 2])]
fn scheduler_batch_noop(b: Bencher, workers: usize) {
    let s = scheduler(workers);
    b.counter(divan::counter::ItemsCount::new(1000usize))
        .bench_local(|| {
            let handles: Vec<_> = (0..1000u64)
                .filter_map(|i| s.submit(&(i % 10), 1, || ()).ok())
                .collect();
            for h in handles {
                let _ = h.wait_blocking();
            }
        });
}
