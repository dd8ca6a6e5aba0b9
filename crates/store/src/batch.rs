//! Combining: concurrent callers hand their jobs to one leader, who runs a whole batch at once.
//!
//! Every caller queues its job and waits. When no leader is at work, one waiting caller
//! becomes the leader: it takes every queued job (its own among them, at most
//! [`MAX_BATCH`]), runs them together, records each job's outcome and wakes the others; then
//! the next caller still queued leads the next batch. So jobs that arrive while a batch runs
//! form the next one, a lone caller runs its own job at once, and no thread waits for a timer.
//!
//! The store uses it to run the writes of many callers in one redb write transaction (see
//! [`crate::Store::write_batched_for`]): one transaction open and commit, and one set of table
//! opens, for the whole batch, instead of one per write.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

/// The most jobs one batch takes: a bound on one transaction's size and on how long the
/// leader's own caller waits for the others' jobs.
pub(crate) const MAX_BATCH: usize = 64;

pub(crate) struct Batcher<J, O> {
    state: Mutex<Queue<J, O>>,
    changed: Condvar,
    /// Batches run and jobs taken so far, for the metrics and benchmarks.
    batches: AtomicU64,
    jobs: AtomicU64,
}

struct Queue<J, O> {
    next_id: u64,
    /// Jobs no leader has taken yet, in arrival order.
    waiting: VecDeque<(u64, J)>,
    /// Outcomes of taken jobs, until their callers collect them.
    done: HashMap<u64, O>,
    leading: bool,
}

impl<J, O> Default for Batcher<J, O> {
    fn default() -> Self {
        Batcher {
            state: Mutex::new(Queue {
                next_id: 0,
                waiting: VecDeque::new(),
                done: HashMap::new(),
                leading: false,
            }),
            changed: Condvar::new(),
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
    /// batch gets `lost()`. A caller whose job is queued behind a full batch may lead more
    /// than one batch before its own job is taken.
    pub(crate) fn submit(
        &self,
        job: J,
        mut run: impl FnMut(Vec<J>) -> Vec<O>,
        lost: impl Fn() -> O,
    ) -> O {
        let mut q = self.lock();
        let id = q.next_id;
        q.next_id += 1;
        q.waiting.push_back((id, job));
        loop {
            if let Some(outcome) = q.done.remove(&id) {
                return outcome;
            }
            if !q.leading {
                // This job is not done and no leader is at work, so no leader has taken it:
                // a leader records its batch's outcomes before it lets go of the lead.
                q.leading = true;
                let take = q.waiting.len().min(MAX_BATCH);
                let (ids, jobs): (Vec<u64>, Vec<J>) = q.waiting.drain(..take).unzip();
                drop(q);
                self.batches.fetch_add(1, Ordering::Relaxed);
                self.jobs.fetch_add(take as u64, Ordering::Relaxed);
                let outcomes = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(jobs)))
                    .ok()
                    .filter(|o| o.len() == ids.len());
                q = self.lock();
                match outcomes {
                    Some(outcomes) => q.done.extend(ids.into_iter().zip(outcomes)),
                    None => q.done.extend(ids.into_iter().map(|id| (id, lost()))),
                }
                q.leading = false;
                self.changed.notify_all();
                continue;
            }
            q = self.changed.wait(q).unwrap_or_else(|e| e.into_inner());
        }
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
