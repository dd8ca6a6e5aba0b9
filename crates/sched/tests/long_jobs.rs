//! Long jobs give way (`strata_sched::long_jobs`): while every worker runs a long job of one
//! tenant, another tenant's job runs on a spare thread; the long jobs' own tenant gains no
//! thread from it; shutdown joins every thread while jobs run long.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use strata_sched::{FairScheduler, JobHandle, Lane, LongJobSpares, SchedulerConfig};

const WORKERS: usize = 2;

/// How long a spinning job spins at most if nothing releases it: far beyond any dispatch
/// delay on a loaded machine, so reaching it means the pool never ran the releasing job.
const GIVE_UP: Duration = Duration::from_secs(10);

fn pool_of(config: SchedulerConfig) -> Arc<FairScheduler<&'static str>> {
    Arc::new(FairScheduler::new(config).unwrap())
}

/// A pool of `WORKERS` shared workers whose jobs give way after `long_job_after`.
fn pool(long_job_after: Duration) -> Arc<FairScheduler<&'static str>> {
    pool_of(SchedulerConfig {
        workers: WORKERS,
        long_job_after,
        ..SchedulerConfig::default()
    })
}

/// What the spinning jobs share with the test.
#[derive(Default)]
struct Spin {
    /// Set by the job that releases the spinners.
    release: AtomicBool,
    /// Spinners started, and spinning now.
    started: AtomicUsize,
    spinning: AtomicUsize,
}

/// A job of `key` that busy-loops (no declared wait, nothing the pool sees) until released or
/// `GIVE_UP` passes; returns whether it was released.
fn spinner(
    pool: &FairScheduler<&'static str>,
    key: &'static str,
    spin: &Arc<Spin>,
) -> JobHandle<bool> {
    let spin = Arc::clone(spin);
    pool.submit(&key, 1, move || {
        spin.spinning.fetch_add(1, Ordering::SeqCst);
        spin.started.fetch_add(1, Ordering::SeqCst);
        let end = Instant::now() + GIVE_UP;
        while !spin.release.load(Ordering::SeqCst) && Instant::now() < end {
            std::hint::spin_loop();
        }
        spin.spinning.fetch_sub(1, Ordering::SeqCst);
        spin.release.load(Ordering::SeqCst)
    })
    .unwrap()
}

/// Waits until `n` spinners (or jobs counting themselves in `spin.started`) have started;
/// fails the test, naming `what`, if they have not within `GIVE_UP`.
fn wait_started(spin: &Spin, n: usize, what: &str) {
    let end = Instant::now() + GIVE_UP;
    while spin.started.load(Ordering::SeqCst) < n {
        assert!(Instant::now() < end, "{what} never started");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A [`pool`] with a spinner of "a" running on every worker: the set-up of most tests here.
fn a_spinning_on_every_worker(
    long_job_after: Duration,
) -> (
    Arc<FairScheduler<&'static str>>,
    Arc<Spin>,
    Vec<JobHandle<bool>>,
) {
    let pool = pool(long_job_after);
    let spin = Arc::new(Spin::default());
    let jobs = (0..WORKERS).map(|_| spinner(&pool, "a", &spin)).collect();
    wait_started(&spin, WORKERS, "the spinners");
    (pool, spin, jobs)
}

/// Releases the spinners and checks each was released, not given up on.
fn release(spin: &Spin, jobs: Vec<JobHandle<bool>>) {
    spin.release.store(true, Ordering::SeqCst);
    for h in jobs {
        assert_eq!(h.wait_blocking(), Ok(true), "a spinner gave up");
    }
}

#[test]
fn another_tenants_job_runs_while_every_worker_runs_a_long_job() {
    let (pool, spin, a) = a_spinning_on_every_worker(Duration::from_millis(10));
    let s = Arc::clone(&spin);
    let b = pool
        .submit(&"b", 1, move || {
            let spinning = s.spinning.load(Ordering::SeqCst);
            s.release.store(true, Ordering::SeqCst);
            spinning
        })
        .unwrap();
    assert_eq!(
        b.wait_blocking(),
        Ok(WORKERS),
        "b ran only once a's jobs ended"
    );
    for h in a {
        assert_eq!(
            h.wait_blocking(),
            Ok(true),
            "a's job gave up before b's job ran"
        );
    }
    // One job queued: one place given, however many long jobs were past the threshold (a
    // second place would have started a spare for nothing).
    assert_eq!(
        pool.long_job_spares(),
        LongJobSpares {
            shared: 1,
            ..LongJobSpares::default()
        }
    );
}

#[test]
fn no_place_is_given_for_a_tenant_that_may_not_take_it() {
    let pool = pool_of(SchedulerConfig {
        workers: 1,
        long_job_after: Duration::from_millis(20),
        ..SchedulerConfig::default()
    });
    let spin = Arc::new(Spin::default());
    let a1 = spinner(&pool, "a", &spin);
    wait_started(&spin, 1, "a's job");
    // b's job is queued: a's gives way, and b's runs on a spare in the place a's gave up.
    let b1 = spinner(&pool, "b", &spin);
    wait_started(&spin, 2, "b's job");
    assert_eq!(pool.long_job_spares().shared, 1);
    // a's second job is queued behind b's long one: a has a long job running, so it may not
    // take a place b's job would give up, and b's must not give way for it (the place would
    // stay empty). Ten thresholds leave the watchdog time to do it wrong.
    let a2 = pool.submit(&"a", 1, || ()).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        pool.long_job_spares().shared,
        1,
        "b's job gave way for a's, which may not take its place"
    );
    release(&spin, vec![a1, b1]);
    a2.wait_blocking().unwrap();
}

#[test]
fn the_long_jobs_tenant_gains_no_thread() {
    let (pool, spin, a) = a_spinning_on_every_worker(Duration::from_millis(10));
    // a's third job, queued before b's: it must wait for one of a's workers (it says whether
    // they were released when it started) even though b's job gets a spare.
    let s = Arc::clone(&spin);
    let a3 = pool
        .submit(&"a", 1, move || s.release.load(Ordering::SeqCst))
        .unwrap();
    let (ran, b_ran) = mpsc::channel();
    let b = pool.submit(&"b", 1, move || ran.send(()).unwrap()).unwrap();
    b_ran.recv_timeout(GIVE_UP).expect("b's job never ran");
    b.wait_blocking().unwrap();
    // Room for a wrongly started a3 to run on the thread b's job left (it would see both
    // spinners running); a pool that works keeps it queued whatever the delay.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        pool.queued_for(&"a"),
        1,
        "a's third job started beside its two"
    );
    spin.release.store(true, Ordering::SeqCst);
    assert_eq!(
        a3.wait_blocking(),
        Ok(true),
        "a's third job ran beside its two"
    );
    release(&spin, a);
}

#[test]
fn shutdown_joins_every_thread_while_jobs_run_long() {
    let (pool, spin, a) = a_spinning_on_every_worker(Duration::from_millis(10));
    let (ran, b_ran) = mpsc::channel();
    let b = pool.submit(&"b", 1, move || ran.send(()).unwrap()).unwrap();
    b_ran.recv_timeout(GIVE_UP).expect("b's job never ran");
    assert!(pool.threads() > WORKERS && pool.threads() <= 3 * WORKERS);
    let stopper = {
        let pool = Arc::clone(&pool);
        std::thread::spawn(move || pool.shutdown())
    };
    spin.release.store(true, Ordering::SeqCst);
    stopper.join().unwrap();
    assert_eq!(pool.threads(), 0);
    b.wait_blocking().unwrap();
    for h in a {
        assert_eq!(h.wait_blocking(), Ok(true));
    }
}

#[test]
fn a_tenant_alone_runs_long_jobs_without_spares() {
    let (pool, spin, a) = a_spinning_on_every_worker(Duration::from_millis(10));
    let s = Arc::clone(&spin);
    let a3 = pool
        .submit(&"a", 1, move || s.release.load(Ordering::SeqCst))
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        pool.threads(),
        WORKERS,
        "a spare started with no other tenant waiting"
    );
    spin.release.store(true, Ordering::SeqCst);
    assert_eq!(a3.wait_blocking(), Ok(true));
    release(&spin, a);
    assert_eq!(pool.long_job_spares().shared, 0);
}

/// Submits short jobs of `key` (about a millisecond each), keeping many queued, until `done`
/// is set or `for_at_most` passes.
fn flood(
    pool: &FairScheduler<&'static str>,
    key: &'static str,
    done: &AtomicBool,
    for_at_most: Duration,
) -> Vec<JobHandle<()>> {
    let end = Instant::now() + for_at_most;
    let mut jobs = Vec::new();
    while !done.load(Ordering::SeqCst) && Instant::now() < end {
        while pool.queued_for(&key) < 64 {
            jobs.push(
                pool.submit(&key, 1, || {
                    let end = Instant::now() + Duration::from_millis(1);
                    while Instant::now() < end {
                        std::hint::spin_loop();
                    }
                })
                .unwrap(),
            );
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    jobs
}

#[test]
fn a_tenant_with_a_long_job_keeps_its_normal_place_while_another_floods() {
    // Far above b's jobs (1 ms), so only a's first job gives way: one of b's giving way too
    // would reopen the places for a whenever it ended.
    let pool = pool(Duration::from_millis(50));
    let spin = Arc::new(Spin::default());
    let a1 = spinner(&pool, "a", &spin);
    wait_started(&spin, 1, "a's first job");
    let end = Instant::now() + GIVE_UP;
    // b floods: a's first job gives way, and b's jobs fill the other worker and the spare.
    // a's second job, queued then, needs only the normal place b's jobs take turns on: it
    // must get it in the fair order, not wait for a's first job to end (after the flood).
    let done = Arc::new(AtomicBool::new(false));
    let flooder = {
        let (pool, done) = (Arc::clone(&pool), Arc::clone(&done));
        std::thread::spawn(move || flood(&pool, "b", &done, Duration::from_secs(3)))
    };
    while pool.long_job_spares().shared < 1 {
        assert!(Instant::now() < end, "a's first job never gave way");
        std::thread::sleep(Duration::from_millis(1));
    }
    let (s, d) = (Arc::clone(&spin), Arc::clone(&done));
    let a2 = pool
        .submit(&"a", 1, move || {
            d.store(true, Ordering::SeqCst);
            !s.release.load(Ordering::SeqCst)
        })
        .unwrap();
    let b = flooder.join().unwrap();
    spin.release.store(true, Ordering::SeqCst);
    assert_eq!(
        a2.wait_blocking(),
        Ok(true),
        "a's short job waited for its long one while b flooded"
    );
    assert_eq!(a1.wait_blocking(), Ok(true));
    for h in b {
        h.wait_blocking().unwrap();
    }
}

#[test]
fn a_reserved_workers_long_job_does_not_give_way_for_a_shared_lane_job() {
    let pool = pool_of(SchedulerConfig {
        workers: 1,
        reserved_workers: 1,
        long_job_after: Duration::from_millis(10),
        ..SchedulerConfig::default()
    });
    let spin = Arc::new(Spin::default());
    // x's job on the shared worker, then r's (reserved lane) on the reserved one.
    let x = spinner(&pool, "x", &spin);
    wait_started(&spin, 1, "x's job");
    let s = Arc::clone(&spin);
    let r = pool
        .submit_in(&"r", 1, Lane::Reserved, move || {
            s.started.fetch_add(1, Ordering::SeqCst);
            while !s.release.load(Ordering::SeqCst) {
                std::hint::spin_loop();
            }
        })
        .unwrap();
    wait_started(&spin, 2, "r's job");
    // Both are past the threshold when b's shared-lane job is queued: x's gives way to it,
    // r's must not (no reserved worker could run b's job).
    std::thread::sleep(Duration::from_millis(30));
    let (ran, b_ran) = mpsc::channel();
    let b = pool.submit(&"b", 1, move || ran.send(()).unwrap()).unwrap();
    b_ran.recv_timeout(GIVE_UP).expect("b's job never ran");
    b.wait_blocking().unwrap();
    spin.release.store(true, Ordering::SeqCst);
    assert_eq!(x.wait_blocking(), Ok(true));
    r.wait_blocking().unwrap();
    let spares = pool.long_job_spares();
    assert_eq!((spares.shared, spares.reserved), (1, 0), "{spares:?}");
}

#[test]
fn two_long_jobs_giving_way_at_once_free_two_places() {
    // Far above the time a spare takes to start: only a's jobs are long enough to give way.
    let after = Duration::from_millis(200);
    let (pool, spin, a) = a_spinning_on_every_worker(after);
    // Both of a's jobs are past the threshold when b's job is queued: they give way in the
    // same scan, and b's and c's jobs must run side by side on the two places, not one
    // after the other once b's gave way in turn.
    std::thread::sleep(after + Duration::from_millis(50));
    let c_started = Arc::new(AtomicBool::new(false));
    let cs = Arc::clone(&c_started);
    let b = pool
        .submit(&"b", 1, move || {
            let end = Instant::now() + GIVE_UP;
            while !cs.load(Ordering::SeqCst) && Instant::now() < end {
                std::hint::spin_loop();
            }
        })
        .unwrap();
    let (p, s, cs) = (Arc::clone(&pool), Arc::clone(&spin), Arc::clone(&c_started));
    let c = pool
        .submit(&"c", 1, move || {
            cs.store(true, Ordering::SeqCst);
            (
                p.long_job_spares().shared,
                s.spinning.load(Ordering::SeqCst),
            )
        })
        .unwrap();
    assert_eq!(
        c.wait_blocking(),
        Ok((2, WORKERS)),
        "c's job ran only once b's gave way (or once a's ended)"
    );
    b.wait_blocking().unwrap();
    release(&spin, a);
}
