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
//! A job gives way only for a job that can take its place: while more queued jobs of other
//! tenants with no long job of its kind (of its lane, and of its set of shared workers) wait
//! than its kind has places free. A place freed earlier and not yet taken, or one that only
//! a long job's tenant would take, is not given again: a second spare would start for
//! nothing. A job past the threshold that did not give way is looked at again on the next job
//! start, resume from a wait or submit that cannot start at once.
//!
//! The counts of a kind's places (`Threads` in the scheduler) change in one function only,
//! `move_job`, after the job's record here: debug builds check after every change that they
//! are what the records say, and that the places given never outnumber the long jobs (when a
//! long job ends or begins a wait, a job that took the place it gave now fills a normal one).
//! A place freed while the threads woken for earlier ones are still on their way is taken by
//! the first of them to start a job: with a place still free, a job queued for it and no
//! thread asleep, it starts a spare for it.
//!
//! The threshold is wall time, less the time in declared waits: a job kept off the CPU by
//! the OS, or blocked in an fsync or on the storage write lock without declaring it, counts
//! as running. (A CPU clock per job thread would not count those; it is not done.)
//!
//! The long job calls nothing while it runs, so a watchdog thread per pool notices it: it
//! sleeps on a condvar until the earliest moment a running job can pass the threshold, and
//! only while the queue is not empty ([`Watch`] says which, under the pool's lock). A job
//! that starts with jobs queued, or resumes after a declared wait (its deadline is then its
//! resume less the time it had run), wakes it only if its deadline comes before the one the
//! watchdog sleeps until; with an empty queue (or nothing running) it sleeps until a submit
//! of a job that cannot start at once (its kind has no free place or no thread asleep) or a
//! job start that leaves jobs queued wakes it, so an idle or lightly loaded pool (a job at a
//! time, each taken by an idle worker) pays nothing for it.

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

/// What the watchdog is doing, for whoever may have to wake it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Watch {
    /// Asleep with no deadline: a job that may have to be timed must wake it.
    Parked,
    /// Asleep until then: only a job due earlier must wake it.
    Until(Instant),
    /// Looking at the jobs (or woken and about to): it will see every change made meanwhile.
    Awake,
}

/// The pool's running jobs of every kind, for the watchdog, under the pool's lock.
pub(crate) struct LongJobs<K> {
    /// `None`: off, nothing is tracked.
    after: Option<Duration>,
    active: HashMap<u64, Active<K>>,
    next_id: u64,
    pub(crate) watch: Watch,
    /// A job past the threshold did not give way because no queued job could take its place:
    /// any start, resume or submit may change that, and wakes the watchdog to look again.
    pub(crate) stalled: bool,
    /// Times a sleeping watchdog was woken ([`Self::wake`]): what a lightly loaded pool pays.
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
            watch: Watch::Parked,
            stalled: false,
            unparked: 0,
            given_way: [0; 3],
        }
    }

    /// Whether jobs are tracked at all.
    pub(crate) fn on(&self) -> bool {
        self.after.is_some()
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

    /// When job `id` passes the threshold, if it is timed (running, not long, not waiting).
    pub(crate) fn due(&self, id: Option<u64>) -> Option<Instant> {
        let after = self.after?;
        let job = self.active.get(&id?)?;
        (!job.long && !job.waiting).then(|| job.since + after)
    }

    /// Whether `key` has a job of `kind` that gave up its place: a thread taking that place
    /// must not run `key`'s jobs, or a flooding tenant would gain threads. The normal places
    /// stay open to it.
    pub(crate) fn is_long(&self, kind: Kind, key: &K) -> bool {
        self.active
            .values()
            .any(|job| job.long && job.kind == kind && job.key == *key)
    }

    /// When the first timed job (not long nor waiting) passes the threshold, if one runs.
    pub(crate) fn earliest_due(&self) -> Option<Instant> {
        let after = self.after?;
        self.active
            .values()
            .filter(|job| !job.long && !job.waiting)
            .map(|job| job.since + after)
            .min()
    }

    /// The timed jobs that have run `after` or more at `now`, longest first, with their kind
    /// and tenant; and when the next of the others passes it, if one can.
    pub(crate) fn past(&self, now: Instant) -> (Vec<(u64, Kind, K)>, Option<Instant>) {
        let Some(after) = self.after else {
            return (Vec::new(), None);
        };
        let mut past = Vec::new();
        let mut next: Option<Instant> = None;
        for (&id, job) in &self.active {
            if job.long || job.waiting {
                continue;
            }
            let due = job.since + after;
            if due > now {
                next = Some(next.map_or(due, |n| n.min(due)));
            } else {
                past.push((job.since, id, job.kind, job.key.clone()));
            }
        }
        past.sort_by_key(|&(since, id, ..)| (since, id));
        let past = past
            .into_iter()
            .map(|(_, id, kind, key)| (id, kind, key))
            .collect();
        (past, next)
    }

    /// Job `id` (timed, past the threshold) gives up its place, once: whether it ran in a
    /// place a long job gave up, which it gives back now.
    pub(crate) fn give_way(&mut self, id: u64) -> Place {
        let Some(job) = self.active.get_mut(&id) else {
            return Place::default();
        };
        debug_assert!(!job.long && !job.waiting, "only a timed job gives way");
        job.long = true;
        self.given_way[job.kind as usize] += 1;
        Place {
            long: false,
            given: std::mem::take(&mut job.given),
        }
    }

    /// A long job of `kind` ended or began a wait, so one place fewer is given: a job that
    /// started in a given place now fills a normal one. Clears one such job's mark; whether
    /// there was one.
    pub(crate) fn ungive(&mut self, kind: Kind) -> bool {
        let job = self
            .active
            .values_mut()
            .find(|job| job.kind == kind && job.given && !job.long && !job.waiting);
        job.map(|job| job.given = false).is_some()
    }

    /// What the records say the counts of `kind` are: `[running, waiting, long, given]`, as
    /// `Threads` counts them (checked in debug builds after every change).
    pub(crate) fn counts(&self, kind: Kind) -> [usize; 4] {
        let mut counts = [0; 4];
        for job in self.active.values().filter(|job| job.kind == kind) {
            match (job.waiting, job.long) {
                (true, _) => counts[1] += 1,
                (false, true) => counts[2] += 1,
                (false, false) => {
                    counts[0] += 1;
                    counts[3] += usize::from(job.given);
                }
            }
        }
        counts
    }

    /// The watchdog must look at the running jobs because a job passes the threshold at
    /// `due` (`None`: at once, or a queued job may now take a stalled one's place): whether it
    /// sleeps past that and must be notified (then it counts as awake from now on).
    pub(crate) fn wake(&mut self, due: Option<Instant>) -> bool {
        let wake = match (self.watch, due) {
            (Watch::Awake, _) => false,
            (Watch::Parked, _) => true,
            (Watch::Until(_), _) if self.stalled => true,
            (Watch::Until(at), Some(due)) => due < at,
            (Watch::Until(_), None) => true,
        };
        if wake {
            self.watch = Watch::Awake;
            self.unparked += 1;
        }
        wake
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

    /// The ids of the jobs past the threshold at `now`, and the next deadline.
    fn past(jobs: &LongJobs<&'static str>, now: Instant) -> (Vec<u64>, Option<Instant>) {
        let (past, next) = jobs.past(now);
        (past.into_iter().map(|(id, ..)| id).collect(), next)
    }

    #[test]
    fn off_tracks_nothing() {
        let mut jobs = LongJobs::new(Duration::ZERO);
        assert_eq!(
            jobs.started(&1, Kind::Foreground, Instant::now(), false),
            None
        );
        assert_eq!(jobs.ended(None), Place::default());
        assert_eq!(jobs.earliest_due(), None);
    }

    #[test]
    fn a_job_past_the_threshold_gives_way_once() {
        let mut jobs = LongJobs::new(10 * MS);
        let t0 = Instant::now();
        let a = jobs.started(&"a", Kind::Foreground, t0, true);
        // Not due yet: the deadline is its start plus the threshold.
        assert_eq!(past(&jobs, t0 + 5 * MS), (vec![], Some(t0 + 10 * MS)));
        assert_eq!(jobs.due(a), Some(t0 + 10 * MS));
        assert_eq!(past(&jobs, t0 + 11 * MS), (vec![a.unwrap()], None));
        // It gives back the given place it ran in, and is timed no more.
        let place = jobs.give_way(a.unwrap());
        assert_eq!(
            place,
            Place {
                long: false,
                given: true
            }
        );
        assert_eq!(past(&jobs, t0 + 12 * MS), (vec![], None));
        assert_eq!((jobs.due(a), jobs.earliest_due()), (None, None));
        assert!(jobs.is_long(Kind::Foreground, &"a"));
        assert!(!jobs.is_long(Kind::Reserved, &"a") && !jobs.is_long(Kind::Foreground, &"b"));
        assert_eq!(jobs.given_way(), [1, 0, 0]);
        assert_eq!(jobs.counts(Kind::Foreground), [0, 0, 1, 0]);
        assert!(jobs.ended(a).long);
        assert!(!jobs.is_long(Kind::Foreground, &"a"));
        assert_eq!(jobs.counts(Kind::Foreground), [0; 4]);
    }

    #[test]
    fn the_longest_running_job_comes_first() {
        let mut jobs = LongJobs::new(10 * MS);
        let t0 = Instant::now();
        let b = jobs.started(&"b", Kind::Foreground, t0 + 2 * MS, false);
        let a = jobs.started(&"a", Kind::Foreground, t0, false);
        let ids = [a.unwrap(), b.unwrap()];
        assert_eq!(past(&jobs, t0 + 20 * MS), (ids.to_vec(), None));
    }

    #[test]
    fn a_waiting_job_is_not_timed_and_keeps_its_mark() {
        let mut jobs = LongJobs::new(10 * MS);
        let t0 = Instant::now();
        let a = jobs.started(&"a", Kind::Foreground, t0, false);
        assert!(!jobs.set_waiting(a, true, t0).long);
        assert_eq!(past(&jobs, t0 + 20 * MS), (vec![], None));
        assert_eq!(jobs.counts(Kind::Foreground), [0, 1, 0, 0]);
        assert!(!jobs.set_waiting(a, false, t0).long);
        assert_eq!(past(&jobs, t0 + 20 * MS).0, [a.unwrap()]);
        jobs.give_way(a.unwrap());
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
        assert_eq!(jobs.due(a), Some(t0 + 32 * MS));
        assert_eq!(past(&jobs, t0 + 31 * MS), (vec![], Some(t0 + 32 * MS)));
        assert_eq!(past(&jobs, t0 + 32 * MS).0, [a.unwrap()]);
    }

    #[test]
    fn the_watchdog_is_woken_only_for_a_deadline_before_its_own() {
        let mut jobs = LongJobs::<&str>::new(10 * MS);
        let t0 = Instant::now();
        assert!(jobs.wake(Some(t0)), "parked: any deadline wakes it");
        assert!(!jobs.wake(None), "awake: it will see the change");
        jobs.watch = Watch::Until(t0 + 10 * MS);
        assert!(!jobs.wake(Some(t0 + 10 * MS)));
        assert!(jobs.wake(Some(t0 + 9 * MS)));
        jobs.watch = Watch::Until(t0 + 10 * MS);
        jobs.stalled = true;
        assert!(
            jobs.wake(Some(t0 + 20 * MS)),
            "a stalled job must be looked at again"
        );
        assert_eq!(jobs.unparked, 3);
    }

    #[test]
    fn a_job_in_a_given_place_is_ungiven_once() {
        let mut jobs = LongJobs::new(10 * MS);
        let t0 = Instant::now();
        let b = jobs.started(&"b", Kind::Foreground, t0, true);
        assert_eq!(jobs.counts(Kind::Foreground), [1, 0, 0, 1]);
        assert!(jobs.ungive(Kind::Foreground));
        assert!(!jobs.ungive(Kind::Foreground));
        assert_eq!(jobs.ended(b), Place::default());
    }
}
