//! Group commit: concurrent writers share one fsync.
//!
//! Every write commits its own redb transaction without syncing (`Durability::None`), so a
//! write that fails rolls back alone and never takes its neighbours with it. Its caller then
//! waits in [`GroupCommit::wait_durable`] until a durable commit (an empty transaction with
//! `Durability::Immediate`, which flushes and syncs every earlier commit) covers it. One waiter
//! at a time leads that sync; writers that commit while it is in flight wait for the next one,
//! so under load one fsync acknowledges a whole group, and a lone writer pays one fsync as
//! before.
//!
//! Before syncing, the leader waits for the writers that had already entered `write` when it
//! took the lead (they are at most one transaction each away from committing), so they share
//! its fsync instead of each starting another; writers entering later do not hold it back (only
//! the linger below waits for anyone who has not entered yet).
//!
//! The fsync itself runs outside the storage engine's write lock (see `deferred_sync`), so
//! writers commit while it is in flight. Left alone, that splits writers who loop (write, wait,
//! write again) into two cohorts taking turns, each fsync covering half of them. So a new
//! leader first lingers, at most a quarter of the last fsync's duration and never more than
//! [`MAX_LINGER`], until as many writers have entered since that sync ended as it acknowledged
//! (writers that were waiting on it, not commits nobody waited for): those are back within
//! microseconds when they loop, and then one fsync covers them all again. A lone writer, being
//! one of them, never lingers. Only the fsync itself is timed, so a stall before it (waiting
//! for a compaction or redb's write lock) does not lengthen the next linger.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::StoreError;

/// The longest a new leader lingers for writers to come back. Writers that loop are back
/// within microseconds; the cap keeps a slow disk's long fsync from making the next group wait
/// a quarter of it for writers that are not coming.
pub(crate) const MAX_LINGER: Duration = Duration::from_millis(2);

/// The position of a committed, not yet necessarily durable, write in commit-registration
/// order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Seq(u64);

/// A writer between entering `write` and registering its commit (or giving up).
pub(crate) struct Entered<'a> {
    group: &'a GroupCommit,
    ticket: u64,
    done: bool,
}

#[derive(Default)]
struct State {
    next_ticket: u64,
    /// Tickets of writers that entered and have not yet registered a commit or failed.
    open: BTreeSet<u64>,
    /// How many commits have registered; the last one's [`Seq`].
    committed: u64,
    /// Every commit with a `Seq` up to this one is durable.
    durable: u64,
    syncing: bool,
    /// The `Seq` of each writer waiting in `wait_durable` (with how many wait on it).
    waiting: BTreeMap<u64, u32>,
    /// How many waiting writers the last sync acknowledged, when it ended, and how long its
    /// fsync took.
    last_covered: u64,
    last_ended: Option<Instant>,
    last_took: Duration,
    /// Writers that entered since the last sync ended.
    entered_since_sync: u64,
    /// A sync that failed, with the last `Seq` it was meant to cover: those writes are not
    /// known to be durable, and storage refuses further writes until it is reopened.
    /// Whether it failed for the file (`StoreError::Unavailable`) is kept with it.
    failure: Option<(u64, String, bool)>,
}

pub(crate) struct GroupCommit {
    state: Mutex<State>,
    /// Signalled when a sync ends.
    changed: Condvar,
    /// Signalled when an open writer registers its commit or leaves, for the leader waiting
    /// for the writers on their way (one at a time). Apart from `changed`, so that each commit
    /// wakes only that leader, not every writer waiting for the sync in flight (with eight
    /// writers a commit used to wake up to seven threads that found nothing to do).
    settled: Condvar,
    /// Signalled when a writer enters, for the leader lingering (one at a time).
    entered: Condvar,
    max_linger: Duration,
}

impl Default for GroupCommit {
    fn default() -> Self {
        GroupCommit {
            state: Mutex::default(),
            changed: Condvar::new(),
            settled: Condvar::new(),
            entered: Condvar::new(),
            max_linger: MAX_LINGER,
        }
    }
}

impl GroupCommit {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is a handful of counters updated in single statements; a panic elsewhere
        // cannot leave it half-changed.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks a writer as on its way to a commit, so a sync starting now waits for it.
    pub(crate) fn enter(&self) -> Entered<'_> {
        let mut st = self.lock();
        let ticket = st.next_ticket;
        st.next_ticket += 1;
        st.entered_since_sync += 1;
        st.open.insert(ticket);
        // A leader may be lingering for writers to come back.
        self.entered.notify_one();
        Entered {
            group: self,
            ticket,
            done: false,
        }
    }

    /// Blocks until the commit `seq` is durable, leading a sync (`sync` performs one durable
    /// commit and returns how long its fsync took) when none is in flight.
    pub(crate) fn wait_durable(
        &self,
        seq: Seq,
        sync: impl Fn() -> Result<Duration, StoreError>,
    ) -> Result<(), StoreError> {
        let mut st = self.lock();
        *st.waiting.entry(seq.0).or_default() += 1;
        let (mut st, result) = self.wait_locked(st, seq, sync);
        if let Some(n) = st.waiting.get_mut(&seq.0) {
            *n -= 1;
            if *n == 0 {
                st.waiting.remove(&seq.0);
            }
        }
        result
    }

    fn wait_locked<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        seq: Seq,
        sync: impl Fn() -> Result<Duration, StoreError>,
    ) -> (MutexGuard<'a, State>, Result<(), StoreError>) {
        loop {
            if st.durable >= seq.0 {
                return (st, Ok(()));
            }
            if let Some((upto, why, unavailable)) = &st.failure
                && *upto >= seq.0
            {
                let why = format!("commit not known to be durable: {why}");
                let e = match unavailable {
                    true => StoreError::Unavailable(why),
                    false => StoreError::Engine(why),
                };
                return (st, Err(e));
            }
            if st.syncing {
                st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            st.syncing = true;
            if let Some(ended) = st.last_ended {
                let until = ended + (st.last_took / 4).min(self.max_linger);
                while st.entered_since_sync < st.last_covered {
                    let now = Instant::now();
                    if now >= until {
                        break;
                    }
                    st = self
                        .entered
                        .wait_timeout(st, until - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
            let horizon = st.next_ticket;
            while st.open.first().is_some_and(|t| *t < horizon) {
                st = self.settled.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            let target = st.committed;
            drop(st);
            // A panic inside the storage engine must not leave `syncing` set, which would
            // hang every waiter; it fails the writes this sync was meant to cover instead.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(&sync))
                .unwrap_or_else(|_| Err(StoreError::Engine("sync panicked".into())));
            st = self.lock();
            st.syncing = false;
            // The writers it acknowledges together: a commit nobody waits on (yet) is not one
            // that will loop back.
            let waiting: u64 = st
                .waiting
                .range(..=target)
                .map(|(_, n)| u64::from(*n))
                .sum();
            st.last_covered = target.saturating_sub(st.durable).min(waiting);
            st.last_ended = Some(Instant::now());
            st.entered_since_sync = 0;
            match result {
                Ok(took) => {
                    st.last_took = took;
                    st.durable = st.durable.max(target);
                }
                Err(e) => {
                    st.last_took = Duration::ZERO;
                    let unavailable = matches!(e, StoreError::Unavailable(_));
                    let why = match e {
                        StoreError::Unavailable(why) => why,
                        other => other.to_string(),
                    };
                    st.failure = Some((target, why, unavailable));
                }
            }
            self.changed.notify_all();
        }
    }
}

#[cfg(test)]
impl GroupCommit {
    /// How many commits have registered so far.
    pub(crate) fn commits_registered(&self) -> u64 {
        self.lock().committed
    }

    /// How many writers are between entering and registering a commit.
    pub(crate) fn open_writers(&self) -> usize {
        self.lock().open.len()
    }
}

impl Entered<'_> {
    /// Registers the writer's commit, which has returned: any sync that starts from now on
    /// covers it.
    pub(crate) fn committed(mut self) -> Seq {
        self.done = true;
        let mut st = self.group.lock();
        st.open.remove(&self.ticket);
        st.committed += 1;
        let seq = Seq(st.committed);
        if st.syncing {
            // Only a leader can be waiting for it (and only while a sync is under way).
            self.group.settled.notify_all();
        }
        seq
    }
}

impl Drop for Entered<'_> {
    /// A writer that leaves without committing (its closure failed, or storage did) must not
    /// keep a leader waiting.
    fn drop(&mut self) {
        if !self.done {
            let mut st = self.group.lock();
            st.open.remove(&self.ticket);
            if st.syncing {
                self.group.settled.notify_all();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Generous: these tests wait on conditions, not on time, so that a loaded CI machine
    /// that deschedules a thread for a while slows them down without failing them.
    const DEADLINE: Duration = Duration::from_secs(60);

    /// Waits until `cond` holds of the group's state (polling; panics naming `what` after
    /// [`DEADLINE`]).
    fn wait_for(g: &GroupCommit, what: &str, cond: impl Fn(&State) -> bool) {
        let deadline = Instant::now() + DEADLINE;
        while !cond(&g.lock()) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// How many writers wait in `wait_durable`.
    fn waiters(st: &State) -> u32 {
        st.waiting.values().sum()
    }

    #[test]
    fn a_lone_writer_syncs_once_per_commit() {
        let g = GroupCommit::default();
        let syncs = AtomicU64::new(0);
        for _ in 0..3 {
            let seq = g.enter().committed();
            g.wait_durable(seq, || {
                syncs.fetch_add(1, Ordering::SeqCst);
                Ok(Duration::ZERO)
            })
            .unwrap();
        }
        assert_eq!(syncs.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn commits_registered_before_a_sync_share_it() {
        let g = GroupCommit::default();
        let a = g.enter().committed();
        let b = g.enter().committed();
        let syncs = AtomicU64::new(0);
        let sync = || {
            syncs.fetch_add(1, Ordering::SeqCst);
            Ok(Duration::ZERO)
        };
        g.wait_durable(b, sync).unwrap();
        g.wait_durable(a, sync).unwrap();
        assert_eq!(syncs.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn the_leader_waits_for_writers_already_on_their_way() {
        let g = Arc::new(GroupCommit::default());
        let syncs = Arc::new(AtomicU64::new(0));
        let first = g.enter().committed();
        let late = g.enter();
        let (g2, s2) = (g.clone(), syncs.clone());
        let leader = std::thread::spawn(move || {
            g2.wait_durable(first, || {
                s2.fetch_add(1, Ordering::SeqCst);
                Ok(Duration::ZERO)
            })
        });
        wait_for(&g, "the leader to take the lead", |st| st.syncing);
        // Time for a wrong leader to sync; it cannot have: the open writer entered before it
        // took the lead.
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(syncs.load(Ordering::SeqCst), 0);
        let second = late.committed();
        leader.join().unwrap().unwrap();
        assert_eq!(syncs.load(Ordering::SeqCst), 1);
        g.wait_durable(second, || panic!("already durable"))
            .unwrap();
    }

    #[test]
    fn writers_acknowledged_together_are_waited_for_when_they_come_back() {
        let syncs = Arc::new(AtomicU64::new(0));
        let g = Arc::new(lingering_long());
        // A slow disk: the next leader may linger up to a quarter of this, 15 s, far longer
        // than a loaded machine keeps the test's threads from running.
        const REPORTED: Duration = Duration::from_secs(60);
        // Both wait on the same sync: `a` leads it, `b` joins while it is in flight (the sync
        // holds until both wait, so that it acknowledges both however threads are scheduled).
        let a = g.enter().committed();
        let b = g.enter().committed();
        let both_wait = |g: &GroupCommit, syncs: &AtomicU64| {
            wait_for(g, "both writers to wait", |st| waiters(st) == 2);
            syncs.fetch_add(1, Ordering::SeqCst);
            Ok(REPORTED)
        };
        let (g2, s2) = (g.clone(), syncs.clone());
        let other = std::thread::spawn(move || g2.wait_durable(a, || both_wait(&g2, &s2)));
        g.wait_durable(b, || both_wait(&g, &syncs)).unwrap();
        other.join().unwrap().unwrap();
        assert_eq!(g.lock().last_covered, 2);
        // Both were acknowledged by that sync; `a` comes back first and leads (lingering), `b`
        // a moment later: one sync covers both.
        let a2 = g.enter().committed();
        let (g2, s2) = (g.clone(), syncs.clone());
        let leader = std::thread::spawn(move || {
            g2.wait_durable(a2, || {
                s2.fetch_add(1, Ordering::SeqCst);
                Ok(Duration::ZERO)
            })
        });
        wait_for(&g, "the leader to linger", |st| st.syncing);
        let b2 = g.enter().committed();
        leader.join().unwrap().unwrap();
        g.wait_durable(b2, || panic!("covered by the leader's sync"))
            .unwrap();
        assert_eq!(syncs.load(Ordering::SeqCst), 2);
    }

    /// A group commit whose linger is bounded by a quarter of the last fsync alone, so that
    /// tests of the linger do not depend on a loaded machine's scheduling within [`MAX_LINGER`].
    fn lingering_long() -> GroupCommit {
        GroupCommit {
            max_linger: Duration::from_secs(60),
            ..GroupCommit::default()
        }
    }

    /// Two writers wait on one sync whose fsync took `fsync` (as reported), after a stall of
    /// `stall` before it; then only one comes back. Returns how long it waits.
    fn one_comes_back(g: &GroupCommit, stall: Duration, fsync: Duration) -> Duration {
        let a = g.enter().committed();
        let b = g.enter().committed();
        // The sync holds until both wait on it, so that it acknowledges both however the
        // threads are scheduled.
        let sync = || {
            wait_for(g, "both writers to wait", |st| waiters(st) == 2);
            std::thread::sleep(stall);
            Ok(fsync)
        };
        std::thread::scope(|s| {
            let other = s.spawn(|| g.wait_durable(a, sync));
            g.wait_durable(b, sync).unwrap();
            other.join().unwrap().unwrap();
        });
        assert_eq!(g.lock().last_covered, 2);
        assert_eq!(g.lock().last_took, fsync, "only the fsync is timed");
        let started = Instant::now();
        let a2 = g.enter().committed();
        g.wait_durable(a2, || Ok(Duration::ZERO)).unwrap();
        started.elapsed()
    }

    // The bounds below leave the expected wait a margin of most of a second (a loaded
    // 2-core machine may deschedule a thread that long) and still sit well below what each
    // bug would cost.

    #[test]
    fn a_leader_lingers_no_longer_than_a_quarter_of_the_last_fsync() {
        // A quarter of 4 s is 1 s; lingering half of it would be 2 s, all of it 4 s.
        let waited = one_comes_back(&lingering_long(), Duration::ZERO, Duration::from_secs(4));
        assert!(waited < Duration::from_millis(1_800), "{waited:?}");
    }

    #[test]
    fn the_linger_is_capped_whatever_the_last_fsync_took() {
        // Capped, it lingers 2 ms; unbounded, a quarter of this would be 10 s.
        let g = GroupCommit::default();
        let waited = one_comes_back(&g, Duration::ZERO, Duration::from_secs(40));
        assert!(waited < Duration::from_secs(5), "{waited:?}");
    }

    #[test]
    fn a_stall_before_the_fsync_does_not_lengthen_the_linger() {
        // A compaction or redb's write lock held the sync up for 3 s; its fsync took 1 µs.
        // Timed with the stall, the linger would be 750 ms. `one_comes_back` also checks that
        // only the fsync was recorded, which does not depend on timing at all.
        let waited = one_comes_back(
            &lingering_long(),
            Duration::from_secs(3),
            Duration::from_micros(1),
        );
        assert!(waited < Duration::from_millis(500), "{waited:?}");
    }

    #[test]
    fn only_writers_that_waited_count_as_acknowledged_together() {
        let g = lingering_long();
        // Two commits, but only one writer waits: the other (a write nobody waits on, as for
        // audit rows) will not come back, so the next leader must not linger for it.
        let a = g.enter().committed();
        let _b = g.enter().committed();
        g.wait_durable(a, || Ok(Duration::from_secs(40))).unwrap();
        assert_eq!(g.lock().last_covered, 1);
        let started = Instant::now();
        let a2 = g.enter().committed();
        g.wait_durable(a2, || Ok(Duration::ZERO)).unwrap();
        // Counting both commits, it would linger 10 s.
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn a_writer_that_gives_up_does_not_hold_the_leader() {
        let g = GroupCommit::default();
        let seq = g.enter().committed();
        drop(g.enter());
        g.wait_durable(seq, || Ok(Duration::ZERO)).unwrap();
    }

    #[test]
    fn a_panicking_sync_fails_its_writes_and_hangs_nobody() {
        let g = GroupCommit::default();
        let seq = g.enter().committed();
        let err = g
            .wait_durable(seq, || panic!("redb assertion"))
            .unwrap_err();
        assert!(err.to_string().contains("sync panicked"), "{err}");
        // A later write gets a sync of its own.
        let next = g.enter().committed();
        g.wait_durable(next, || Ok(Duration::ZERO)).unwrap();
    }

    #[test]
    fn a_failed_sync_fails_the_writes_it_covered() {
        let g = GroupCommit::default();
        let seq = g.enter().committed();
        let err = g
            .wait_durable(seq, || Err(StoreError::Engine("disk on fire".into())))
            .unwrap_err();
        assert!(err.to_string().contains("disk on fire"), "{err}");
        // Asked again, the same write is still not known to be durable.
        assert!(g.wait_durable(seq, || Ok(Duration::ZERO)).is_err());
    }
}
