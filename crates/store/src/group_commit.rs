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
//! its fsync instead of each starting another; writers arriving later never delay it.
//!
//! The fsync itself runs outside the storage engine's write lock (see `deferred_sync`), so
//! writers commit while it is in flight. Left alone, that splits writers who loop (write, wait,
//! write again) into two cohorts taking turns, each fsync covering half of them. So a new
//! leader first lingers, at most a quarter of the last sync's duration, until as many writers
//! have entered since that sync ended as it acknowledged: those are back within microseconds
//! when they loop, and then one fsync covers them all again. A lone writer, being one of them,
//! never lingers.

use std::collections::BTreeSet;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::StoreError;

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
    /// How many commits the last sync covered, when it ended, and how long it took.
    last_covered: u64,
    last_ended: Option<Instant>,
    last_took: Duration,
    /// Writers that entered since the last sync ended.
    entered_since_sync: u64,
    /// A sync that failed, with the last `Seq` it was meant to cover: those writes are not
    /// known to be durable, and storage refuses further writes until it is reopened.
    failure: Option<(u64, String)>,
}

#[derive(Default)]
pub(crate) struct GroupCommit {
    state: Mutex<State>,
    /// Signalled when a sync ends and when an open writer registers or leaves.
    changed: Condvar,
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
        self.changed.notify_all();
        Entered {
            group: self,
            ticket,
            done: false,
        }
    }

    /// Blocks until the commit `seq` is durable, leading a sync (`sync` performs one durable
    /// commit) when none is in flight.
    pub(crate) fn wait_durable(
        &self,
        seq: Seq,
        sync: impl Fn() -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut st = self.lock();
        loop {
            if st.durable >= seq.0 {
                return Ok(());
            }
            if let Some((upto, why)) = &st.failure
                && *upto >= seq.0
            {
                return Err(StoreError::Engine(format!(
                    "commit not known to be durable: {why}"
                )));
            }
            if st.syncing {
                st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            st.syncing = true;
            if let Some(ended) = st.last_ended {
                let until = ended + st.last_took / 4;
                while st.entered_since_sync < st.last_covered {
                    let now = Instant::now();
                    if now >= until {
                        break;
                    }
                    st = self
                        .changed
                        .wait_timeout(st, until - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
            let horizon = st.next_ticket;
            while st.open.first().is_some_and(|t| *t < horizon) {
                st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            let target = st.committed;
            let started = Instant::now();
            drop(st);
            // A panic inside the storage engine must not leave `syncing` set, which would
            // hang every waiter; it fails the writes this sync was meant to cover instead.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(&sync))
                .unwrap_or_else(|_| Err(StoreError::Engine("sync panicked".into())));
            st = self.lock();
            st.syncing = false;
            st.last_covered = target.saturating_sub(st.durable);
            st.last_ended = Some(Instant::now());
            st.last_took = started.elapsed();
            st.entered_since_sync = 0;
            match result {
                Ok(()) => st.durable = st.durable.max(target),
                Err(e) => st.failure = Some((target, e.to_string())),
            }
            self.changed.notify_all();
        }
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
        self.group.changed.notify_all();
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
            self.group.changed.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn a_lone_writer_syncs_once_per_commit() {
        let g = GroupCommit::default();
        let syncs = AtomicU64::new(0);
        for _ in 0..3 {
            let seq = g.enter().committed();
            g.wait_durable(seq, || {
                syncs.fetch_add(1, Ordering::SeqCst);
                Ok(())
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
            Ok(())
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
                Ok(())
            })
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        // The leader cannot have synced: the open writer entered before it took the lead.
        assert_eq!(syncs.load(Ordering::SeqCst), 0);
        let second = late.committed();
        leader.join().unwrap().unwrap();
        assert_eq!(syncs.load(Ordering::SeqCst), 1);
        g.wait_durable(second, || panic!("already durable"))
            .unwrap();
    }

    #[test]
    fn writers_acknowledged_together_are_waited_for_when_they_come_back() {
        let g = Arc::new(GroupCommit::default());
        let syncs = Arc::new(AtomicU64::new(0));
        let slow_sync = |syncs: &AtomicU64| {
            syncs.fetch_add(1, Ordering::SeqCst);
            // A slow disk: the next leader may linger up to a quarter of this.
            std::thread::sleep(Duration::from_millis(800));
            Ok(())
        };
        let a = g.enter().committed();
        let b = g.enter().committed();
        g.wait_durable(b, || slow_sync(&syncs)).unwrap();
        g.wait_durable(a, || panic!("already durable")).unwrap();
        // Both were acknowledged by that sync; `a` comes back first and leads, `b` a moment
        // later: one sync covers both.
        let a2 = g.enter().committed();
        let (g2, s2) = (g.clone(), syncs.clone());
        let leader = std::thread::spawn(move || g2.wait_durable(a2, || slow_sync(&s2)));
        std::thread::sleep(Duration::from_millis(10));
        let b2 = g.enter().committed();
        leader.join().unwrap().unwrap();
        g.wait_durable(b2, || panic!("covered by the leader's sync"))
            .unwrap();
        assert_eq!(syncs.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_leader_lingers_no_longer_than_a_quarter_of_the_last_sync() {
        let g = GroupCommit::default();
        let a = g.enter().committed();
        let b = g.enter().committed();
        g.wait_durable(b, || {
            std::thread::sleep(Duration::from_millis(200));
            Ok(())
        })
        .unwrap();
        g.wait_durable(a, || Ok(())).unwrap();
        // Only one of the two comes back: the leader gives up on the other.
        let started = Instant::now();
        let a2 = g.enter().committed();
        g.wait_durable(a2, || Ok(())).unwrap();
        // A quarter of 200 ms is 50 ms; the margin is for a loaded machine.
        assert!(
            started.elapsed() < Duration::from_millis(180),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn a_writer_that_gives_up_does_not_hold_the_leader() {
        let g = GroupCommit::default();
        let seq = g.enter().committed();
        drop(g.enter());
        g.wait_durable(seq, || Ok(())).unwrap();
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
        g.wait_durable(next, || Ok(())).unwrap();
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
        assert!(g.wait_durable(seq, || Ok(())).is_err());
    }
}
