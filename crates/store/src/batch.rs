//! Combining: concurrent callers hand their jobs to one leader, who runs a whole batch at once.
//!
//! Every caller queues its job and waits. When no leader is at work, the caller becomes the
//! leader: it takes every queued job (its own first, at most [`MAX_BATCH`]) and runs them
//! together; then it hands the lead to the caller whose job is now first in the queue, runs
//! the batch's `after` step (the store syncs its row log there), and hands each of the
//! others its job's outcome. So jobs that arrive while a batch runs form the next one, which
//! runs while the previous leader's `after` step does; a lone caller runs its own job at
//! once; no thread waits for a timer; and every hand-over wakes the one caller it is for, once
//! (a shared condition variable woke every waiting caller at every batch, whose wake-ups cost
//! more CPU than the writes themselves at eight writers).
//!
//! The store uses it to run the writes of many callers in one redb write transaction (see
//! [`crate::Store::write_batched_for`]): one transaction open and commit, and one set of table
//! opens, for the whole batch, instead of one per write.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// The most jobs one batch takes: a bound on one transaction's size and on how long the
/// leader's own caller waits for the others' jobs.
pub(crate) const MAX_BATCH: usize = 64;

pub(crate) struct Batcher<J, O> {
    state: Mutex<Queue<J, O>>,
    /// Batches run and jobs taken so far, for the metrics and benchmarks.
    batches: AtomicU64,
    jobs: AtomicU64,
}

struct Queue<J, O> {
    /// Jobs no leader has taken yet, in arrival order, each with its caller's mailbox.
    waiting: VecDeque<(Arc<Mailbox<O>>, J)>,
    /// Whether a caller leads. While none does the queue is empty: a leader hands the lead on
    /// while jobs wait, and a caller queueing with no leader leads its own job.
    leading: bool,
}

/// Where a waiting caller is handed the lead or its job's outcome (each caller is handed one
/// of them, once: its job is first in the queue when it is handed the lead, and a leader's
/// own job is always in the batch it runs).
struct Mailbox<O> {
    handed: Mutex<Option<Handed<O>>>,
    arrived: Condvar,
}

enum Handed<O> {
    Lead,
    Outcome(O),
}

impl<O> Mailbox<O> {
    fn new() -> Self {
        Mailbox {
            handed: Mutex::new(None),
            arrived: Condvar::new(),
        }
    }

    fn hand(&self, what: Handed<O>) {
        *self.handed.lock().unwrap_or_else(|e| e.into_inner()) = Some(what);
        self.arrived.notify_one();
    }

    fn wait(&self) -> Handed<O> {
        let mut handed = self.handed.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(what) = handed.take() {
                return what;
            }
            handed = self.arrived.wait(handed).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl<J, O> Default for Batcher<J, O> {
    fn default() -> Self {
        Batcher {
            state: Mutex::new(Queue {
                waiting: VecDeque::new(),
                leading: false,
            }),
            batches: AtomicU64::new(0),
            jobs: AtomicU64::new(0),
        }
    }
}

impl<J, O> Batcher<J, O> {
    fn lock(&self) -> MutexGuard<'_, Queue<J, O>> {
        // Every change to the queue is a single statement under the lock (the jobs themselves
        // run outside it): a panic elsewhere cannot leave it half-changed.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many batches ran so far, and how many jobs they took.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.batches.load(Ordering::Relaxed),
            self.jobs.load(Ordering::Relaxed),
        )
    }

    /// Queues `job` and returns its outcome, once some leader (perhaps this caller) has run it
    /// in a batch. `run` gets the batch's jobs in arrival order and returns one outcome per
    /// job, in the same order; if it panics, or returns the wrong number, every job of the
    /// batch gets `lost()`.
    #[cfg(test)]
    pub(crate) fn submit(
        &self,
        job: J,
        run: impl FnOnce(Vec<J>) -> Vec<O>,
        lost: impl Fn() -> O,
    ) -> O {
        self.submit_then(job, run, |_| (), lost)
    }

    /// [`Batcher::submit`], with a step that the leader runs on its batch's outcomes after it
    /// has handed the lead on and before it hands them out: work that every job of the batch
    /// needs before its caller goes on, done once for all of them while the next batch runs.
    /// A panic in it is caught and ignored: the outcomes are handed out as they are, so what
    /// `after` does must be an advance on something each caller can still do itself.
    pub(crate) fn submit_then(
        &self,
        job: J,
        run: impl FnOnce(Vec<J>) -> Vec<O>,
        after: impl FnOnce(&[O]),
        lost: impl Fn() -> O,
    ) -> O {
        let mine = Arc::new(Mailbox::new());
        let leads = {
            let mut q = self.lock();
            q.waiting.push_back((Arc::clone(&mine), job));
            !std::mem::replace(&mut q.leading, true)
        };
        if !leads && let Handed::Outcome(outcome) = mine.wait() {
            return outcome;
        }
        // This caller leads, and its job is first in the queue (see `Queue::leading`).
        let (callers, jobs): (Vec<Arc<Mailbox<O>>>, Vec<J>) = {
            let mut q = self.lock();
            let take = q.waiting.len().min(MAX_BATCH);
            q.waiting.drain(..take).unzip()
        };
        debug_assert!(callers.first().is_some_and(|c| Arc::ptr_eq(c, &mine)));
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.jobs.fetch_add(callers.len() as u64, Ordering::Relaxed);
        let outcomes = std::panic::catch_unwind(AssertUnwindSafe(|| run(jobs)))
            .ok()
            .filter(|o| o.len() == callers.len());
        {
            let mut q = self.lock();
            match q.waiting.front() {
                Some((next, _)) => next.hand(Handed::Lead),
                None => q.leading = false,
            }
        }
        let outcomes = match outcomes {
            Some(outcomes) => {
                let _ = std::panic::catch_unwind(AssertUnwindSafe(|| after(&outcomes)));
                outcomes
            }
            None => callers.iter().map(|_| lost()).collect(),
        };
        let mut own = None;
        for (caller, outcome) in callers.iter().zip(outcomes) {
            if Arc::ptr_eq(caller, &mine) {
                own = Some(outcome);
            } else {
                caller.hand(Handed::Outcome(outcome));
            }
        }
        own.unwrap_or_else(lost)
    }
}

#[cfg(test)]
impl<J, O> Batcher<J, O> {
    /// How many jobs wait for a leader, for tests that line writes up into one batch.
    pub(crate) fn queued(&self) -> usize {
        self.lock().waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn a_lone_caller_runs_its_own_job_at_once() {
        let b = Batcher::<u32, u32>::default();
        for i in 0..3 {
            assert_eq!(
                b.submit(i, |jobs| jobs.iter().map(|j| j * 10).collect(), || 0),
                i * 10
            );
        }
    }

    #[test]
    fn jobs_queued_while_a_batch_runs_form_the_next_one_and_each_gets_its_own_outcome() {
        let b = Arc::new(Batcher::<u64, u64>::default());
        let batches = Arc::new(Mutex::new(Vec::<usize>::new()));
        let in_first = Arc::new(std::sync::Barrier::new(2));
        let first = {
            let (b, batches, in_first) = (b.clone(), batches.clone(), in_first.clone());
            std::thread::spawn(move || {
                b.submit(
                    1000,
                    |jobs| {
                        batches.lock().unwrap().push(jobs.len());
                        in_first.wait();
                        // Others queue meanwhile.
                        std::thread::sleep(std::time::Duration::from_millis(100));
                        jobs
                    },
                    || u64::MAX,
                )
            })
        };
        in_first.wait();
        let others: Vec<_> = (0..8u64)
            .map(|i| {
                let (b, batches) = (b.clone(), batches.clone());
                std::thread::spawn(move || {
                    b.submit(
                        i,
                        |jobs| {
                            batches.lock().unwrap().push(jobs.len());
                            jobs.iter().map(|j| j + 1).collect()
                        },
                        || u64::MAX,
                    )
                })
            })
            .collect();
        assert_eq!(first.join().unwrap(), 1000);
        for (i, t) in others.into_iter().enumerate() {
            assert_eq!(t.join().unwrap(), i as u64 + 1);
        }
        let batches = batches.lock().unwrap().clone();
        assert_eq!(batches[0], 1);
        assert_eq!(batches.iter().sum::<usize>(), 9);
        assert!(
            batches.len() < 9,
            "the eight queued jobs shared batches: {batches:?}"
        );
    }

    #[test]
    fn the_next_batch_runs_during_the_after_step_and_followers_get_outcomes_after_it() {
        use std::sync::atomic::AtomicBool;
        use std::time::{Duration, Instant};
        let b = Arc::new(Batcher::<u64, u64>::default());
        let release_x = Arc::new(AtomicBool::new(false));
        let x_running = Arc::new(AtomicBool::new(false));
        let saw_r = Arc::new(AtomicBool::new(false));
        let after_done = Arc::new(AtomicBool::new(false));
        let r_ran = Arc::new(AtomicBool::new(false));
        let p_running = Arc::new(std::sync::Barrier::new(2));
        let wait_for = |flag: &AtomicBool| {
            let deadline = Instant::now() + Duration::from_secs(5);
            while !flag.load(Ordering::SeqCst) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            flag.load(Ordering::SeqCst)
        };
        // X leads a first batch and holds it until P and Q are queued behind it.
        let x = {
            let (b, release_x, x_running) = (b.clone(), release_x.clone(), x_running.clone());
            std::thread::spawn(move || {
                b.submit(
                    0,
                    |jobs| {
                        x_running.store(true, Ordering::SeqCst);
                        while !release_x.load(Ordering::SeqCst) {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        jobs
                    },
                    || u64::MAX,
                )
            })
        };
        assert!(wait_for(&x_running));
        // P and Q form the next batch (P leads it); its after step waits for R's batch,
        // which can run only if the lead was handed on before the step.
        let submit_pq = |job: u64| {
            let (b, after_done, r_ran, p_running, saw_r) = (
                b.clone(),
                after_done.clone(),
                r_ran.clone(),
                p_running.clone(),
                saw_r.clone(),
            );
            std::thread::spawn(move || {
                let got = b.submit_then(
                    job,
                    |jobs| {
                        p_running.wait();
                        jobs.iter().map(|j| j * 10).collect()
                    },
                    |_| {
                        let deadline = Instant::now() + Duration::from_secs(5);
                        while !r_ran.load(Ordering::SeqCst) && Instant::now() < deadline {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        saw_r.store(r_ran.load(Ordering::SeqCst), Ordering::SeqCst);
                        after_done.store(true, Ordering::SeqCst);
                    },
                    || u64::MAX,
                );
                (got, after_done.load(Ordering::SeqCst))
            })
        };
        let p = submit_pq(1);
        while b.queued() != 1 {
            std::thread::yield_now();
        }
        let q = submit_pq(2);
        while b.queued() != 2 {
            std::thread::yield_now();
        }
        release_x.store(true, Ordering::SeqCst);
        assert_eq!(x.join().unwrap(), 0);
        p_running.wait();
        let r = {
            let (b, r_ran) = (b.clone(), r_ran.clone());
            std::thread::spawn(move || {
                b.submit(
                    3,
                    |jobs| {
                        r_ran.store(true, Ordering::SeqCst);
                        jobs
                    },
                    || u64::MAX,
                )
            })
        };
        assert_eq!(r.join().unwrap(), 3);
        assert!(wait_for(&after_done));
        assert!(
            saw_r.load(Ordering::SeqCst),
            "the next batch ran while the previous one's after step waited for it"
        );
        assert_eq!(p.join().unwrap(), (10, true));
        assert_eq!(
            q.join().unwrap(),
            (20, true),
            "a follower is handed its outcome only after the batch's after step"
        );
    }

    #[test]
    fn a_panicking_batch_gives_every_job_the_lost_outcome_and_the_next_leader_carries_on() {
        let b = Arc::new(Batcher::<u32, Option<u32>>::default());
        let out = b.submit(1, |_| panic!("storage blew up"), || None);
        assert_eq!(out, None);
        let out = b.submit(2, |jobs| jobs.into_iter().map(Some).collect(), || None);
        assert_eq!(out, Some(2));
        let short = b.submit(3, |_| Vec::new(), || None);
        assert_eq!(
            short, None,
            "a batch answering too few outcomes loses them all"
        );
    }

    #[test]
    fn many_callers_all_get_their_outcomes() {
        let b = Arc::new(Batcher::<usize, usize>::default());
        let ran = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..16)
            .map(|t| {
                let (b, ran) = (b.clone(), ran.clone());
                std::thread::spawn(move || {
                    for i in 0..200 {
                        let job = t * 1000 + i;
                        let got = b.submit(
                            job,
                            |jobs| {
                                assert!(jobs.len() <= MAX_BATCH);
                                ran.fetch_add(jobs.len(), Ordering::SeqCst);
                                jobs.iter().map(|j| j * 2).collect()
                            },
                            || usize::MAX,
                        );
                        assert_eq!(got, job * 2);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(ran.load(Ordering::SeqCst), 16 * 200);
    }
}
