//! Long jobs give way: a job that has run longer than `long_job_after` while a job of another
//! tenant waits for its kind of thread stops counting against the pool's size, so a spare
//! thread of that kind (the ones [`crate::blocking`] starts for declared waits) runs the
//! waiting job. Nothing is preempted: the long job goes on, and for as long as the spare's job
//! lasts the kind runs one job more than its size, as after a declared wait.
//!
//! Why: the pool has as many workers as cores, and a job of one tenant can take 50–100 ms (an
//! embedding of a long query, a large search or count). Two such jobs on a 2-core pool made
//! every other tenant's 0.3 ms search wait for one of them to end: hundreds of milliseconds of
//! queue wait. With this, another tenant's job waits at most about the threshold, and shares
//! the core with the long job through the OS scheduler instead of waiting behind it.
//!
//! A flooding tenant gains nothing from it: the place a long job gave up goes only to jobs of
//! tenants with no long job of that kind running (see [`LongJobs::is_long`]), so a tenant
//! whose long jobs fill every worker still runs on as many workers as before, and its own
//! queued jobs wait for them. The normal places (the kind's size less its long jobs) stay open
//! to every tenant, whatever runs in the given ones: a tenant with one long job is not shut
//! out of them by another tenant's jobs in the place it gave up. Each job is marked long at
//! most once.
//!
//! The threshold is wall time, less the time in declared waits: a job kept off the CPU by
//! the OS, or blocked in an fsync or on the storage write lock without declaring it, counts
//! as running. (A CPU clock per job thread would not count those; it is not done.)
//!
//! The long job calls nothing while it runs, so a watchdog thread per pool notices it: it
//! sleeps on a condvar until the earliest moment a running job can pass the threshold, and
//! only while the queue is not empty; with an empty queue (or nothing running) it sleeps until
//! a submit of a job that cannot start at once (its kind has no free place or no thread asleep)
//! or a job start that leaves jobs queued wakes it, so an idle or lightly loaded pool (a job
//! at a time, each taken by an idle worker) pays nothing for it.

use std::cell::Cell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::scheduler::Kind;

thread_local! {
    /// The job this pool thread is running, when long jobs are tracked: a declared wait
    /// (`crate::blocking`) must know whether its job already gave up its place.
    static CURRENT: Cell<Option<u64>> = const { Cell::new(None) };
}

/// The job the calling thread runs, if it is a tracked pool job.
pub(crate) fn current() -> Option<u64> {
    CURRENT.get()
}

/// Marks the calling thread as running job `id` until dropped. Jobs catch their panics, but a
/// guard clears it on any way out all the same: a stale id would make a later declared wait
/// act on another job's record.
pub(crate) struct Running(());

impl Running {
    pub(crate) fn set(id: Option<u64>) -> Self {
        CURRENT.set(id);
        Running(())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        CURRENT.set(None);
    }
}

/// A running job, as the watchdog sees it.
struct Active<K> {
    key: K,
    kind: Kind,
    /// When it started, less the time it spent in declared waits: it has run `now - since`.
    since: Instant,
    /// In a wait: how long it had run when the wait began.
    ran: Duration,
    /// It gave up its place (counted in `Threads::long`, not `running`): never again.
    long: bool,
    /// In a declared wait: its place is given up already (`Threads::waiting`).
    waiting: bool,
    /// It runs in a place a long job gave up (counted in `Threads::given` while it counts as
    /// running): the places left are the normal ones, open to every tenant.
    given: bool,
}

/// What a job's record says when it ends or a declared wait of it begins or ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Place {
    /// It gave up its place (ran long): counted in `Threads::long`.
    pub(crate) long: bool,
    /// It runs in a place a long job gave up: counted in `Threads::given` too.
    pub(crate) given: bool,
}

/// The pool's running jobs of every kind, for the watchdog, under the pool's lock.
pub(crate) struct LongJobs<K> {
    /// `None`: off, nothing is tracked.
    after: Option<Duration>,
    active: HashMap<u64, Active<K>>,
    next_id: u64,
    /// The watchdog sleeps with no deadline: a submit or a job start that may give it one
    /// must wake it.
    pub(crate) parked: bool,
    /// Times a parked watchdog was woken ([`Self::unpark`]): what a lightly loaded pool pays.
    pub(crate) unparked: u64,
    /// Jobs that gave up their place, by kind (`Kind as usize`).
    given_way: [u64; 3],
}

impl<K: Eq + Clone> LongJobs<K> {
    /// `after` zero turns it off.
    pub(crate) fn new(after: Duration) -> Self {
        Self {
            after: (!after.is_zero()).then_some(after),
            active: HashMap::new(),
            next_id: 0,
            parked: true,
            unparked: 0,
            given_way: [0; 3],
        }
    }

    /// A `kind` thread starts a job of `key`, in a place a long job gave up if `given`: its
    /// number for [`Self::ended`] (`None` when off).
    pub(crate) fn started(
        &mut self,
        key: &K,
        kind: Kind,
        now: Instant,
        given: bool,
    ) -> Option<u64> {
        self.after?;
        let id = self.next_id;
        self.next_id += 1;
        let job = Active {
            key: key.clone(),
            kind,
            since: now,
            ran: Duration::ZERO,
            long: false,
            waiting: false,
            given,
        };
        self.active.insert(id, job);
        Some(id)
    }

    /// Job `id` ended: whether it had given up its place, or ran in a given one.
    pub(crate) fn ended(&mut self, id: Option<u64>) -> Place {
        id.and_then(|id| self.active.remove(&id))
            .map_or_else(Place::default, |job| Place {
                long: job.long,
                given: job.given,
            })
    }

    /// Job `id` begins (`true`) or ends a declared wait: whether it had given up its place
    /// already (then the wait frees nothing, and its end takes nothing back), and whether it
    /// runs in a given place. The time in the wait does not count toward the threshold.
    pub(crate) fn set_waiting(&mut self, id: Option<u64>, waiting: bool, now: Instant) -> Place {
        match id.and_then(|id| self.active.get_mut(&id)) {
            Some(job) => {
                if waiting {
                    job.ran = now.saturating_duration_since(job.since);
                } else if job.waiting {
                    job.since = now.checked_sub(job.ran).unwrap_or(now);
                }
                job.waiting = waiting;
                Place {
                    long: job.long,
                    given: job.given,
                }
            }
            None => Place::default(),
        }
    }

    /// Whether `key` has a job of `kind` that gave up its place: a thread taking that place
    /// must not run `key`'s jobs, or a flooding tenant would gain threads. The normal places
    /// stay open to it.
    pub(crate) fn is_long(&self, kind: Kind, key: &K) -> bool {
        self.active
            .values()
            .any(|job| job.long && job.kind == kind && job.key == *key)
    }

    /// Whether a job not yet long nor waiting runs: something the watchdog may have to time.
    pub(crate) fn any_timed(&self) -> bool {
        self.active.values().any(|job| !job.long && !job.waiting)
    }

    /// Marks long every job that has run `after` or more, outside a declared wait, while
    /// `others_queued(kind, key)` (a job of another tenant waits that a thread of the job's
    /// kind could run); calls `gave_way(kind, given)` for
    /// each (`given`: it ran in a place a long job gave up, which it gives back now).
    /// Returns when the next job can pass the threshold, if one can (a job past it with only
    /// its own tenant's jobs queued waits for a submit to be looked at again).
    pub(crate) fn scan(
        &mut self,
        now: Instant,
        mut others_queued: impl FnMut(Kind, &K) -> bool,
        mut gave_way: impl FnMut(Kind, bool),
    ) -> Option<Instant> {
        let after = self.after?;
        let mut next: Option<Instant> = None;
        for job in self.active.values_mut() {
            if job.long || job.waiting {
                continue;
            }
            let due = job.since + after;
            if due > now {
                next = Some(next.map_or(due, |n| n.min(due)));
            } else if others_queued(job.kind, &job.key) {
                job.long = true;
                let given = std::mem::take(&mut job.given);
                self.given_way[job.kind as usize] += 1;
                gave_way(job.kind, given);
            }
        }
        next
    }

    /// The watchdog must look at the running jobs: whether it is parked and must be notified
    /// (then it counts as awake from now on).
    pub(crate) fn unpark(&mut self) -> bool {
        if !self.parked {
            return false;
        }
        self.parked = false;
        self.unparked += 1;
        true
    }

    /// Jobs that gave up their place so far, by kind.
    pub(crate) fn given_way(&self) -> [u64; 3] {
        self.given_way
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn off_tracks_nothing() {
        let mut jobs = LongJobs::new(Duration::ZERO);
        assert_eq!(
            jobs.started(&1, Kind::Foreground, Instant::now(), false),
            None
        );
        assert_eq!(jobs.ended(None), Place::default());
    }

    #[test]
    fn a_job_gives_way_once_only_when_another_tenant_waits() {
        let mut jobs = LongJobs::new(10 * MS);
        let t0 = Instant::now();
        let a = jobs.started(&"a", Kind::Foreground, t0, false);
        let mut gave = Vec::new();
        // Not due yet: the deadline is its start plus the threshold.
        let next = jobs.scan(t0 + 5 * MS, |_, _| true, |k, _| gave.push(k));
        assert_eq!(next, Some(t0 + 10 * MS));
        // Due, but only its own tenant waits: no deadline left, nothing given.
        assert_eq!(
            jobs.scan(t0 + 11 * MS, |_, _| false, |k, _| gave.push(k)),
            None
        );
        assert!(gave.is_empty() && jobs.any_timed());
        // Another tenant waits: it gives way, once.
        jobs.scan(t0 + 12 * MS, |_, k| *k == "a", |k, _| gave.push(k));
        jobs.scan(t0 + 13 * MS, |_, k| *k == "a", |k, _| gave.push(k));
        assert_eq!(gave, [Kind::Foreground]);
        assert!(jobs.is_long(Kind::Foreground, &"a"));
        assert!(!jobs.is_long(Kind::Reserved, &"a") && !jobs.is_long(Kind::Foreground, &"b"));
        assert_eq!(jobs.given_way(), [1, 0, 0]);
        assert!(jobs.ended(a).long);
        assert!(!jobs.is_long(Kind::Foreground, &"a"));
    }

    #[test]
    fn a_waiting_job_is_not_timed_and_keeps_its_mark() {
        let mut jobs = LongJobs::new(10 * MS);
        let t0 = Instant::now();
        let a = jobs.started(&"a", Kind::Foreground, t0, false);
        assert!(!jobs.set_waiting(a, true, t0).long);
        assert_eq!(
            jobs.scan(t0 + 20 * MS, |_, _| true, |_, _| panic!("waiting")),
            None
        );
        assert!(!jobs.set_waiting(a, false, t0).long);
        let mut gave = 0;
        jobs.scan(t0 + 20 * MS, |_, _| true, |_, _| gave += 1);
        assert_eq!(gave, 1);
        // A wait of a job that gave way frees nothing and takes nothing back.
        assert!(jobs.set_waiting(a, true, t0).long);
        assert!(jobs.set_waiting(a, false, t0).long);
        assert!(jobs.ended(a).long);
    }

    #[test]
    fn time_in_a_declared_wait_does_not_count() {
        let mut jobs = LongJobs::new(10 * MS);
        let t0 = Instant::now();
        let a = jobs.started(&"a", Kind::Foreground, t0, false);
        jobs.set_waiting(a, true, t0 + 8 * MS);
        jobs.set_waiting(a, false, t0 + 30 * MS);
        // It has run 9 ms of the 31: due 1 ms from now, not past the threshold.
        let next = jobs.scan(t0 + 31 * MS, |_, _| true, |_, _| panic!("gave way"));
        assert_eq!(next, Some(t0 + 32 * MS));
        let mut gave = 0;
        jobs.scan(t0 + 32 * MS, |_, _| true, |_, _| gave += 1);
        assert_eq!(gave, 1);
    }
}
