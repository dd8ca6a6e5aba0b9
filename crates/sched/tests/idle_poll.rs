//! A worker that finished a job polls the queue before it sleeps (`strata_sched::idle_poll`):
//! jobs sent one after another are found by the poll, a worker polls at most once per job,
//! no job is ever left queued, polling off means no polls, and shutdown does not wait out a
//! poll. The pool's other tests (long jobs, background workers, pause, spares) run with
//! polling on too: it is the default.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use strata_sched::{FairScheduler, Lane, SchedulerConfig};

/// Far beyond any dispatch delay on a loaded machine: a job not run by then was left queued.
const GIVE_UP: Duration = Duration::from_secs(20);

fn pool(workers: usize, reserved: usize, idle_poll: Duration) -> FairScheduler<u32> {
    FairScheduler::new(SchedulerConfig {
        workers,
        reserved_workers: reserved,
        idle_poll,
        ..SchedulerConfig::default()
    })
    .unwrap()
}

/// Runs a job of tenant `key` in `lane` and waits for it, failing the test if it never runs.
fn run(pool: &FairScheduler<u32>, key: u32, lane: Lane) {
    let (tx, rx) = mpsc::channel();
    // The handle lives until the job ran: dropping it would cancel the job.
    let _handle = pool
        .submit_in(&key, 1, lane, move || tx.send(()).unwrap())
        .unwrap();
    rx.recv_timeout(GIVE_UP)
        .unwrap_or_else(|_| panic!("a job of {key} was left queued"));
}

/// Waits until `done` holds, failing the test with `what` after `GIVE_UP`.
fn wait_until(what: &str, done: impl Fn() -> bool) {
    let end = Instant::now() + GIVE_UP;
    while !done() {
        assert!(Instant::now() < end, "{what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn jobs_sent_one_after_another_are_found_by_the_polling_worker() {
    // A window far longer than the test: the worker polls from one job to the next. One
    // worker: with two, the sleeping one may be woken (when the poller is off its CPU on a
    // loaded machine) and take the job first, which is right but not what is counted here.
    let pool = pool(1, 0, Duration::from_secs(30));
    for i in 0..20 {
        run(&pool, 1 + i % 3, Lane::Shared);
        // The job told this thread it ran before its worker was done with it: give the
        // worker time to begin its poll, or the next job is popped without one (not counted).
        std::thread::sleep(Duration::from_millis(5));
    }
    // Each job is queued while the worker polls, and starts right after (counted). Without
    // polling none would be counted.
    let (found, expired) = pool.idle_polls();
    assert!(
        found >= 15,
        "jobs started right after a poll: {found} of 20 ({expired} polls without)"
    );
    let t = Instant::now();
    pool.shutdown();
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "shutdown waited out the poll: {:?}",
        t.elapsed()
    );
}

#[test]
fn with_polling_off_no_worker_polls() {
    let pool = pool(2, 1, Duration::ZERO);
    for i in 0..20 {
        run(&pool, i, Lane::Shared);
        run(&pool, i, Lane::Reserved);
    }
    assert_eq!(pool.idle_polls(), (0, 0));
}

#[test]
fn a_poll_ends_after_its_window_and_the_worker_sleeps() {
    let pool = pool(1, 0, Duration::from_millis(2));
    // The poll of a worker that just started, then the one after its first job.
    wait_until("the first poll never ended", || pool.idle_polls().1 >= 1);
    run(&pool, 1, Lane::Shared);
    wait_until("the poll after a job never ended", || {
        pool.idle_polls().1 >= 2
    });
    // Asleep now: no more polls without a job.
    let after = pool.idle_polls();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(pool.idle_polls(), after);
    // And woken as before by the next job.
    run(&pool, 1, Lane::Shared);
}

/// A worker polls once per job it ran (and once when it starts), whatever ends its poll: a
/// reserved worker polling while only shared jobs arrive does not poll again and again for
/// jobs it never runs (keeping the poll from the shared worker that runs them); its poll
/// passes, and the shared worker's polls find the shared jobs.
#[test]
fn a_worker_polls_at_most_once_per_job() {
    let pool = pool(1, 1, Duration::from_millis(5));
    // The first poll (one worker's, when the pool starts) passes; then the reserved lane's job
    // is run by one of the workers, which polls next.
    wait_until("the first polls never ended", || pool.idle_polls().1 >= 1);
    run(&pool, 99, Lane::Reserved);
    for i in 0..200 {
        run(&pool, i % 7, Lane::Shared);
        // Time for the worker to begin its poll (see the test above).
        std::thread::sleep(Duration::from_micros(500));
    }
    let (found, expired) = pool.idle_polls();
    assert!(
        found + expired <= 201 + 2,
        "polls: {found} that found a job, {expired} that did not, for 201 jobs"
    );
    assert!(
        found >= 100,
        "shared jobs started right after the shared worker's poll: {found} of 200"
    );
}

/// A client whose requests come later than the window (a script that thinks between calls)
/// would have every poll pass for nothing: after a few such polls, the pool polls only now and
/// then.
#[test]
fn requests_slower_than_the_window_are_seldom_polled_for_unless_asked() {
    let polls = |always: bool| {
        let pool = FairScheduler::new(SchedulerConfig {
            workers: 1,
            reserved_workers: 0,
            idle_poll: Duration::from_micros(200),
            idle_poll_always: always,
            ..SchedulerConfig::default()
        })
        .unwrap();
        // Gaps a hundred times the window: a poll that lost its core to another thread for a
        // few milliseconds on a loaded machine still does not see the next job.
        for i in 0..60 {
            run(&pool, i % 3, Lane::Shared);
            std::thread::sleep(Duration::from_millis(20));
        }
        let (found, expired) = pool.idle_polls();
        found + expired
    };
    // Without the skips, a poll after every job: 61.
    let seldom = polls(false);
    assert!(seldom <= 30, "polls for 60 jobs 20 ms apart: {seldom}");
    // Asked to poll always: after every job (each counted when the next job arrives; the
    // 20 ms gaps are far beyond the window).
    let always = polls(true);
    assert!(
        always >= 50,
        "polls for 60 jobs 20 ms apart, always: {always}"
    );
}

/// Submitters on several threads, with gaps around the poll window, shared and reserved
/// lanes: every job runs, whichever worker polls or sleeps when it is queued. Each job is
/// waited for with a deadline, so a job left queued fails the test instead of hanging it.
#[test]
fn no_job_is_left_queued_while_workers_poll_and_sleep() {
    let pool = Arc::new(pool(2, 1, Duration::from_micros(200)));
    let submitters: Vec<_> = (0..4u32)
        .map(|s| {
            let pool = pool.clone();
            std::thread::spawn(move || {
                let mut pending = Vec::new();
                let mut x = u64::from(s) * 7919 + 1;
                for i in 0..300u32 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let lane = if x % 3 == 0 {
                        Lane::Reserved
                    } else {
                        Lane::Shared
                    };
                    let (tx, rx) = mpsc::channel();
                    let handle = pool
                        .submit_in(&(s * 1000 + i % 5), 1, lane, move || tx.send(()).unwrap())
                        .unwrap();
                    // Some waited for at once, the rest at the end (their handles kept: a
                    // dropped handle cancels its job).
                    if x % 4 == 0 {
                        rx.recv_timeout(GIVE_UP).expect("a job was left queued");
                    } else {
                        pending.push((handle, rx));
                    }
                    // Gaps shorter and longer than the window.
                    std::thread::sleep(Duration::from_micros(x % 400));
                }
                for (_handle, rx) in pending {
                    rx.recv_timeout(GIVE_UP).expect("a job was left queued");
                }
            })
        })
        .collect();
    for s in submitters {
        s.join().unwrap();
    }
    assert_eq!(pool.queued(), 0);
    assert!(
        pool.idle_polls().0 > 0,
        "some jobs started right after a poll"
    );
}
