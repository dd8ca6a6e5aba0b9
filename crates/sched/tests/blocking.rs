//! Managed blocking (`strata_sched::blocking`): jobs of one tenant waiting on something of its
//! own do not keep the other tenants' jobs from running, however many of them wait, the pool
//! never starts a job while as many as its size run outside a wait, its spare threads are
//! bounded, and shutdown joins them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use strata_sched::{FairScheduler, JobHandle, SchedulerConfig, blocking};

/// Long enough never to be reached by a pool that works, however loaded the machine: only a
/// pool whose workers all sleep on the gate gets there, and then the test fails rather than
/// hangs.
const NEVER: Duration = Duration::from_secs(60);

fn pool(workers: usize) -> Arc<FairScheduler<&'static str>> {
    Arc::new(
        FairScheduler::new(SchedulerConfig {
            workers,
            ..SchedulerConfig::default()
        })
        .unwrap(),
    )
}

/// A latch that jobs wait on until the test opens it, counting the jobs that wait.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    changed: Condvar,
    waiting: AtomicUsize,
}

impl Gate {
    /// The flag, whatever a failed check left it in (a drop opens the gate while unwinding).
    fn lock(&self) -> std::sync::MutexGuard<'_, bool> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait(&self) {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_all();
        let mut open = self.lock();
        while !*open {
            open = self.changed.wait(open).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn is_open(&self) -> bool {
        *self.lock()
    }

    fn open(&self) {
        *self.lock() = true;
        self.changed.notify_all();
    }

    /// Returns once `n` jobs wait (or have waited) on the gate.
    fn until_waiting(&self, n: usize) {
        let mut open = self.lock();
        while self.waiting.load(Ordering::SeqCst) < n {
            let (guard, timeout) = self
                .changed
                .wait_timeout(open, NEVER)
                .unwrap_or_else(|p| p.into_inner());
            open = guard;
            if timeout.timed_out() {
                drop(open);
                panic!("{n} jobs never waited on the gate");
            }
        }
    }
}

/// Opens the gate however the test ends, so a failed check fails rather than hangs.
struct OpenOnDrop(Arc<Gate>);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        self.0.open();
    }
}

/// `n` jobs of tenant "x" that each wait on `gate` as a declared wait.
fn waiters(pool: &FairScheduler<&'static str>, gate: &Arc<Gate>, n: usize) -> Vec<JobHandle<()>> {
    (0..n)
        .map(|_| {
            let gate = Arc::clone(gate);
            pool.submit(&"x", 1, move || blocking(|| gate.wait()))
                .unwrap()
        })
        .collect()
}

#[test]
fn a_job_of_another_tenant_runs_while_every_worker_waits_on_one_tenants_latch() {
    let pool = pool(2);
    let gate = Arc::new(Gate::default());
    let _open = OpenOnDrop(Arc::clone(&gate));
    let x = waiters(&pool, &gate, 2);
    gate.until_waiting(2);
    let (done, ran) = mpsc::channel();
    let g = Arc::clone(&gate);
    let y = pool
        .submit(&"y", 1, move || done.send(g.is_open()).unwrap())
        .unwrap();
    let gate_was_open = ran.recv_timeout(NEVER).expect("y's job never ran");
    assert!(!gate_was_open, "y's job ran only once x's latch opened");
    y.wait_blocking().unwrap();
    gate.open();
    for h in x {
        h.wait_blocking().unwrap();
    }
}

#[test]
fn no_job_starts_while_as_many_as_the_pool_size_run_outside_a_wait() {
    const WORKERS: usize = 2;
    let pool = pool(WORKERS);
    let gate = Arc::new(Gate::default());
    let _open = OpenOnDrop(Arc::clone(&gate));
    // Three of x's jobs wait on the gate throughout: spares join the two workers, and threads
    // are left for the others' jobs.
    let x = waiters(&pool, &gate, 3);
    gate.until_waiting(3);
    // Jobs running outside a declared wait, as the jobs themselves count them: each counts
    // itself after the pool did and uncounts itself before, so this is never above the
    // pool's own count, which a job may start under only while it is below `WORKERS`.
    let running = Arc::new(AtomicUsize::new(0));
    let most_at_a_start = Arc::new(AtomicUsize::new(0));
    let (done, finished) = mpsc::channel();
    let tenants = ["a", "b", "c"];
    // Kept: a job whose handle is dropped before it starts is cancelled.
    let mut others = Vec::new();
    for i in 0..60 {
        let (running, most, done) = (running.clone(), most_at_a_start.clone(), done.clone());
        let job = pool.submit(&tenants[i % 3], 1, move || {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            if i % 4 == 0 {
                // A short wait of its own: another job may start meanwhile.
                running.fetch_sub(1, Ordering::SeqCst);
                blocking(|| std::thread::sleep(Duration::from_millis(2)));
                running.fetch_add(1, Ordering::SeqCst);
            }
            std::hint::black_box((0..20_000u64).sum::<u64>());
            running.fetch_sub(1, Ordering::SeqCst);
            done.send(()).unwrap();
        });
        others.push(job.unwrap());
    }
    for _ in 0..60 {
        finished
            .recv_timeout(NEVER)
            .expect("the other tenants' jobs did not all run while x's waited");
    }
    assert!(!gate.is_open());
    let most = most_at_a_start.load(Ordering::SeqCst);
    assert!(
        (1..=WORKERS).contains(&most),
        "{most} jobs ran at a job's start"
    );
    assert!(pool.threads() <= 3 * WORKERS, "{} threads", pool.threads());
    gate.open();
    for h in x.into_iter().chain(others) {
        h.wait_blocking().unwrap();
    }
}

#[test]
fn spare_threads_are_bounded_and_shutdown_joins_them() {
    const WORKERS: usize = 2;
    let pool = pool(WORKERS);
    let gate = Arc::new(Gate::default());
    let _open = OpenOnDrop(Arc::clone(&gate));
    let x = waiters(&pool, &gate, 6);
    // x's jobs hold as many threads as one tenant's may, twice the pool's size, all waiting
    // on the gate: the last two of them stay queued, and the spare started at the last wait
    // is left asleep for the others.
    gate.until_waiting(2 * WORKERS);
    assert_eq!(pool.threads(), 2 * WORKERS + 1);
    assert_eq!(pool.queued(), 2);
    // Shutdown waits for the queue to drain, which the gate holds up.
    let stopper = {
        let pool = Arc::clone(&pool);
        std::thread::spawn(move || pool.shutdown())
    };
    gate.open();
    stopper.join().unwrap();
    assert_eq!(pool.threads(), 0);
    for h in x {
        h.wait_blocking().unwrap();
    }
    assert_eq!(gate.waiting.load(Ordering::SeqCst), 6);
}

/// However many of one tenant's jobs wait on something of its own (a tenant's writes queued on
/// its write order while one of them applies to a graph being built), they hold at most twice
/// the pool's size of threads: another tenant's job runs at once, and more of it too.
#[test]
fn another_tenants_jobs_run_while_one_tenants_jobs_wait_on_every_thread_they_may_hold() {
    const WORKERS: usize = 2;
    let pool = pool(WORKERS);
    let gate = Arc::new(Gate::default());
    let _open = OpenOnDrop(Arc::clone(&gate));
    let x = waiters(&pool, &gate, 10);
    gate.until_waiting(2 * WORKERS);
    let (done, ran) = mpsc::channel();
    let y: Vec<_> = (0..5)
        .map(|_| {
            let (g, done) = (Arc::clone(&gate), done.clone());
            pool.submit(&"y", 1, move || done.send(g.is_open()).unwrap())
                .unwrap()
        })
        .collect();
    for _ in 0..5 {
        let gate_was_open = ran.recv_timeout(NEVER).expect("a job of y never ran");
        assert!(!gate_was_open, "y's job ran only once x's latch opened");
    }
    // Still no more of x's jobs than one tenant may hold: six queued behind the gate.
    assert_eq!(gate.waiting.load(Ordering::SeqCst), 2 * WORKERS);
    assert_eq!(pool.queued(), 6);
    assert!(pool.threads() <= 3 * WORKERS, "{} threads", pool.threads());
    for h in y {
        h.wait_blocking().unwrap();
    }
    gate.open();
    for h in x {
        h.wait_blocking().unwrap();
    }
    assert_eq!(gate.waiting.load(Ordering::SeqCst), 10);
}

#[test]
fn off_a_pool_thread_a_declared_wait_just_runs() {
    assert_eq!(blocking(|| 7), 7);
}
