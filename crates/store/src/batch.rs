//! Combining: concurrent callers hand their jobs to one leader, who runs a whole batch at once.
//!
//! Every caller queues its job and waits. When no leader is at work, the caller becomes the
//! leader: it takes the queued jobs (at most [`MAX_BATCH`], from the front) and runs them
//! together; then it lets go of the lead, offers it to the caller whose job is now first in
//! the queue, and hands each of the others its job's outcome. So jobs that arrive while a
//! batch runs form the next one, a lone caller runs its own job at once, and no thread waits
//! for a timer.
//!
//! Every wake-up is for one caller: the one offered the lead, or one handed its outcome. (One
//! condition variable shared by every waiting caller woke all of them at every batch, to find
//! the one it was for: at eight durable writers those wake-ups cost a sixth of each write's
//! CPU and a seventh of the throughput, see docs/benchmarks.md.) The lead is offered, not
//! handed: a caller arriving while the offered one is still waking takes the lead itself
//! (its batch includes the offered caller's job). A lead handed to a thread not yet running
//! left every running caller queued behind it, which on a machine whose cores were all busy
//! (an HTTP server) cost 5–10 % of the writes and doubled a slow write's wait.
//!
//! The store uses it to run the writes of many callers in one redb write transaction (see
//! [`crate::Store::write_batched_for`]): one transaction open and commit, and one set of table
//! opens, for the whole batch, instead of one per write.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// The most jobs one batch takes: a bound on one transaction's size and on how long the
/// callers of its first jobs wait for the others'.
pub(crate) const MAX_BATCH: usize = 64;

pub(crate) struct Batcher<J, O> {
    state: Mutex<Queue<J, O>>,
    /// Batches run and jobs taken so far, for the metrics and benchmarks.
    batches: AtomicU64,
    jobs: AtomicU64,
    /// Wake-ups of waiting callers, for the test that each wakes one caller.
    #[cfg(test)]
    wake_ups: AtomicU64,
}

struct Queue<J, O> {
    /// Jobs no leader has taken yet, in arrival order, each with its caller's mailbox.
    waiting: VecDeque<(Arc<Mailbox<O>>, J)>,
    /// Whether a caller leads. A leader letting go while jobs wait offers the lead to the
    /// caller of the first one, so a queued job always has a leader at work or on its way:
    /// the offered caller, or whoever took the lead before it woke (who offers it in turn).
    leading: bool,
}

/// Where a waiting caller is offered the lead or handed its job's outcome.
struct Mailbox<O> {
    slot: Mutex<Slot<O>>,
    arrived: Condvar,
    /// How many times its caller woke, for the test that each wake-up is for one caller.
    #[cfg(test)]
    wake_ups: AtomicU64,
}

struct Slot<O> {
    /// The job's outcome; `Some(None)`: its batch failed (see [`Batcher::submit`]), and the
    /// caller makes its own `lost()`.
    outcome: Option<Option<O>>,
    /// The lead was offered: the caller looks whether it is still free and its job first.
    offered: bool,
}

enum Woke<O> {
    Offered,
    Done(Option<O>),
}

impl<O> Mailbox<O> {
    fn new() -> Self {
        Mailbox {
            slot: Mutex::new(Slot {
                outcome: None,
                offered: false,
            }),
            arrived: Condvar::new(),
            #[cfg(test)]
            wake_ups: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Slot<O>> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn offer(&self) {
        self.lock().offered = true;
        self.arrived.notify_one();
    }

    fn hand(&self, outcome: Option<O>) {
        self.lock().outcome = Some(outcome);
        self.arrived.notify_one();
    }

    /// Waits for an outcome or an offer (an outcome first, if both came).
    fn wait(&self) -> Woke<O> {
        let mut slot = self.lock();
        loop {
            if let Some(outcome) = slot.outcome.take() {
                return Woke::Done(outcome);
            }
            if std::mem::take(&mut slot.offered) {
                return Woke::Offered;
            }
            slot = self.arrived.wait(slot).unwrap_or_else(|e| e.into_inner());
            #[cfg(test)]
            self.wake_ups.fetch_add(1, Ordering::Relaxed);
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
            #[cfg(test)]
            wake_ups: AtomicU64::new(0),
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
    /// batch gets `lost()`. A caller whose job is queued behind a full batch may lead more
    /// than one batch before its own job is taken.
    pub(crate) fn submit(
        &self,
        job: J,
        mut run: impl FnMut(Vec<J>) -> Vec<O>,
        lost: impl Fn() -> O,
    ) -> O {
        let mine = Arc::new(Mailbox::new());
        let mut leads = {
            let mut q = self.lock();
            q.waiting.push_back((Arc::clone(&mine), job));
            !std::mem::replace(&mut q.leading, true)
        };
        loop {
            if !leads {
                // Declared to the worker pool: meanwhile another thread runs the next job,
                // which, if it is a write too, joins the next batch.
                let woke = strata_sched::blocking(|| mine.wait());
                #[cfg(test)]
                self.wake_ups
                    .fetch_add(mine.wake_ups.swap(0, Ordering::Relaxed), Ordering::Relaxed);
                match woke {
                    Woke::Done(outcome) => return outcome.unwrap_or_else(&lost),
                    Woke::Offered => {
                        let mut q = self.lock();
                        // Taken already if another caller took the lead first; then that
                        // leader runs this job, or offers the lead to whoever is first now.
                        let first = q
                            .waiting
                            .front()
                            .is_some_and(|(c, _)| Arc::ptr_eq(c, &mine));
                        if q.leading || !first {
                            continue;
                        }
                        q.leading = true;
                    }
                }
            }
            if let Some(own) = self.lead(&mine, &mut run) {
                return own.unwrap_or_else(&lost);
            }
            // This caller's job was not in the batch it led: it waits like the others.
            leads = false;
        }
    }

    /// Runs one batch as its leader, then lets go of the lead and hands out the outcomes.
    /// Returns the leader's own outcome if its job was in the batch (`Some(None)`: lost).
    fn lead(
        &self,
        mine: &Arc<Mailbox<O>>,
        run: &mut impl FnMut(Vec<J>) -> Vec<O>,
    ) -> Option<Option<O>> {
        let (callers, jobs): (Vec<Arc<Mailbox<O>>>, Vec<J>) = {
            let mut q = self.lock();
            let take = q.waiting.len().min(MAX_BATCH);
            q.waiting.drain(..take).unzip()
        };
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.jobs.fetch_add(callers.len() as u64, Ordering::Relaxed);
        let outcomes = std::panic::catch_unwind(AssertUnwindSafe(|| run(jobs)))
            .ok()
            .filter(|o| o.len() == callers.len());
        let next = {
            let mut q = self.lock();
            q.leading = false;
            q.waiting.front().map(|(next, _)| Arc::clone(next))
        };
        if let Some(next) = next {
            next.offer();
        }
        let mut own = None;
        let outcomes = outcomes.map_or_else(
            || callers.iter().map(|_| None).collect::<Vec<_>>(),
            |o| o.into_iter().map(Some).collect(),
        );
        for (caller, outcome) in callers.iter().zip(outcomes) {
            if Arc::ptr_eq(caller, mine) {
                own = Some(outcome);
            } else {
                caller.hand(outcome);
            }
        }
        own
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
    use std::collections::HashMap;
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
    fn more_callers_than_a_batch_takes_with_failing_batches_all_get_their_own_outcomes() {
        use std::sync::mpsc;
        use std::time::{Duration, Instant};
        const CALLERS: u64 = 3 * MAX_BATCH as u64 / 2;
        let b = Arc::new(Batcher::<u64, Option<u64>>::default());
        let batches = Arc::new(Mutex::new(Vec::<Vec<u64>>::new()));
        let run = {
            let batches = batches.clone();
            move |jobs: Vec<u64>| -> Vec<Option<u64>> {
                batches.lock().unwrap().push(jobs.clone());
                assert!(jobs.len() <= MAX_BATCH);
                // A batch holding a multiple of 7 fails: every job of it is lost.
                if jobs.iter().any(|j| *j % 7 == 0) {
                    panic!("storage failed the batch");
                }
                jobs.iter().map(|j| Some(j * 2)).collect()
            }
        };
        // The first job's batch holds the lead until every other caller is queued, so more
        // wait than one batch takes: a leader's own job may be left for a later batch.
        let (tx, rx) = mpsc::channel();
        {
            let (b, tx) = (b.clone(), tx.clone());
            std::thread::spawn(move || {
                let out = b.submit(
                    1,
                    |jobs| {
                        let deadline = Instant::now() + Duration::from_secs(10);
                        while b.queued() < CALLERS as usize - 1 && Instant::now() < deadline {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        jobs.iter().map(|j| Some(j * 2)).collect()
                    },
                    || None,
                );
                tx.send((1, out)).unwrap();
            });
        }
        while b.queued() != 0 || b.counts().0 == 0 {
            std::thread::yield_now();
        }
        for job in 2..=CALLERS {
            let (b, tx, run) = (b.clone(), tx.clone(), run.clone());
            std::thread::spawn(move || {
                let out = b.submit(job, run, || None);
                tx.send((job, out)).unwrap();
            });
        }
        let mut outcomes = HashMap::new();
        for _ in 0..CALLERS {
            let (job, out) = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("every caller gets an outcome: none waits forever");
            outcomes.insert(job, out);
        }
        let batches = batches.lock().unwrap().clone();
        let mut ran: Vec<u64> = batches.iter().flatten().copied().collect();
        ran.sort_unstable();
        assert_eq!(ran, (2..=CALLERS).collect::<Vec<_>>(), "each job ran once");
        assert!(batches.len() >= 2, "more callers than one batch takes");
        assert_eq!(outcomes[&1], Some(2));
        for batch in &batches {
            let failed = batch.iter().any(|j| *j % 7 == 0);
            for job in batch {
                let expected = (!failed).then_some(job * 2);
                assert_eq!(outcomes[job], expected, "job {job} of batch {batch:?}");
            }
        }
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
                                // Long enough for the others to queue behind the batch.
                                std::thread::sleep(std::time::Duration::from_micros(50));
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
        // Each wake-up is for one caller, which is woken about once per job (twice when
        // another caller took the lead it was offered). With one condition variable for all,
        // every batch woke every waiting caller: 5,690 wake-ups for these 3,200 jobs.
        let wake_ups = b.wake_ups.load(Ordering::SeqCst);
        assert!(
            wake_ups <= 16 * 200 * 5 / 4,
            "{wake_ups} wake-ups for {} jobs",
            16 * 200
        );
    }
}
