//! One tenant's write order (`TenantSlot::order`): its committed writes reach its loaded
//! indexes in commit order, and loads, evictions, saves and some writes hold the order
//! exclusively.
//!
//! Two kinds of holders:
//! - A *shared* write (a small record write, see `IndexRegistry::write_shared`) enters, runs
//!   its transaction while other shared writes of the tenant are in flight (so that they can
//!   share one storage transaction, like writes of different tenants), and draws a ticket
//!   right before its commit, under the storage write lock: tickets follow commit order.
//!   After its commit it waits for its turn (every earlier ticket done), applies its changes,
//!   and marks its ticket done. Every ticket drawn is marked done exactly once, whatever
//!   becomes of its write (an [`InFlight`] that is dropped does it), so no turn waits forever.
//!   A ticket done wakes the write whose turn comes next and no other: under a flood of one
//!   tenant's writes, waking every waiting write at each turn cost each write several thread
//!   switches, on the pool's threads at the normal priority.
//! - An *exclusive* holder waits until no shared write is in flight and keeps new ones from
//!   entering while it holds the order ([`Exclusive`]): meanwhile storage and the loaded
//!   indexes reflect the same commits, as a load, a save's capture or an eviction needs, and
//!   no write of the tenant commits, as a write that prepares outside its transaction needs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, TryLockError};

/// No ticket drawn.
const NONE: u64 = u64::MAX;

/// One tenant's write order.
#[derive(Default)]
pub(crate) struct WriteOrder {
    state: Mutex<State>,
    changed: Condvar,
    /// Tickets drawn so far: the next ticket.
    drawn: AtomicU64,
}

#[derive(Default)]
struct State {
    /// Shared writes entered and not yet finished.
    in_flight: u64,
    /// Exclusive holders waiting for the writes in flight to finish: no write enters
    /// meanwhile, so a stream of writes cannot keep them waiting.
    excluding: u64,
    /// Tickets below this are done.
    done: u64,
    /// Threads waiting on `changed` (to enter, to hold the order, for writes applied): a
    /// change wakes them only if there are any.
    waiters: u64,
    /// Writes waiting for their turn, each with its ticket and what wakes it alone. A handful
    /// at most (one tenant's writes in flight on the pool), so a list.
    turns: Vec<(u64, Arc<Condvar>)>,
    /// Wake-ups of turn waiters whose turn had not come, for tests.
    #[cfg(test)]
    early_wake_ups: u64,
}

/// The order held exclusively: no shared write is in flight or enters while this lives.
pub(crate) struct Exclusive<'o> {
    _state: MutexGuard<'o, State>,
}

impl WriteOrder {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A holder never leaves the state half-changed: each change is one field.
        crate::registry::lock_slot(&self.state)
    }

    /// Waits for a change of the state; declared to the worker pool as a wait.
    fn wait<'o>(&'o self, mut s: MutexGuard<'o, State>) -> MutexGuard<'o, State> {
        s.waiters += 1;
        let mut s =
            strata_sched::blocking(|| self.changed.wait(s).unwrap_or_else(PoisonError::into_inner));
        s.waiters -= 1;
        s
    }

    fn notify(&self, s: &State) {
        if s.waiters > 0 {
            self.changed.notify_all();
        }
    }

    /// Waits until ticket `t`'s turn: every ticket below it done.
    fn wait_for_turn(&self, t: u64) {
        let mut s = self.lock();
        if s.done >= t {
            return;
        }
        let turn = Arc::new(Condvar::new());
        s.turns.push((t, Arc::clone(&turn)));
        loop {
            s = strata_sched::blocking(|| turn.wait(s).unwrap_or_else(PoisonError::into_inner));
            if s.done >= t {
                break;
            }
            #[cfg(test)]
            {
                s.early_wake_ups += 1;
            }
        }
        s.turns.retain(|(ticket, _)| *ticket != t);
    }

    /// Holds the order exclusively, once the shared writes in flight have finished.
    pub fn exclusive(&self) -> Exclusive<'_> {
        let mut s = self.lock();
        if s.in_flight > 0 {
            s.excluding += 1;
            while s.in_flight > 0 {
                s = self.wait(s);
            }
            s.excluding -= 1;
            // Writes waiting to enter look again once this holder lets go.
            self.notify(&s);
        }
        Exclusive { _state: s }
    }

    /// [`WriteOrder::exclusive`] if it is free now: no other holder, no write in flight.
    pub fn try_exclusive(&self) -> Option<Exclusive<'_>> {
        let s = match self.state.try_lock() {
            Ok(s) => s,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        (s.in_flight == 0).then_some(Exclusive { _state: s })
    }

    /// Enters a shared write, once no exclusive holder holds or waits for the order. `first`
    /// runs under the order's lock if no other write is in flight (to mark the loaded index).
    pub fn enter(&self, first: impl FnOnce()) -> InFlight<'_> {
        let mut s = self.lock();
        while s.excluding > 0 {
            s = self.wait(s);
        }
        s.in_flight += 1;
        if s.in_flight == 1 {
            first();
        }
        InFlight {
            order: self,
            ticket: AtomicU64::new(NONE),
            finished: false,
        }
    }

    /// Returns once every write that had drawn its ticket when this was called is applied,
    /// and no exclusive holder holds the order: a wait for the writes committed so far, never
    /// for writes that commit later.
    pub fn wait_applied(&self) {
        self.wait_done(self.drawn.load(Ordering::SeqCst));
    }

    /// Returns once every ticket below `target` is done, and no exclusive holder holds the
    /// order.
    fn wait_done(&self, target: u64) {
        let mut s = self.lock();
        while s.done < target {
            s = self.wait(s);
        }
    }

    /// Tickets drawn so far and done so far, for tests.
    #[cfg(test)]
    pub fn tickets(&self) -> (u64, u64) {
        (self.drawn.load(Ordering::SeqCst), self.lock().done)
    }

    /// Wake-ups of writes waiting for their turn that found it had not come, for tests.
    #[cfg(test)]
    pub fn early_wake_ups(&self) -> u64 {
        self.lock().early_wake_ups
    }
}

/// A shared write in flight. Finish it with [`InFlight::finish`]; dropped unfinished, it
/// waits for its turn and finishes with nothing applied.
pub(crate) struct InFlight<'o> {
    order: &'o WriteOrder,
    ticket: AtomicU64,
    finished: bool,
}

impl InFlight<'_> {
    /// Draws this write's ticket. Call it once, right before the commit that holds the write,
    /// under the storage write lock (see `Store::write_batched_for_ordered`); any thread.
    pub fn draw(&self) {
        if self.ticket.load(Ordering::SeqCst) == NONE {
            let t = self.order.drawn.fetch_add(1, Ordering::SeqCst);
            self.ticket.store(t, Ordering::SeqCst);
        } else {
            debug_assert!(false, "a write's ticket drawn twice");
        }
    }

    /// Whether the write drew its ticket: it may have committed. Without one, nothing of it
    /// was committed.
    pub fn drew(&self) -> bool {
        self.ticket.load(Ordering::SeqCst) != NONE
    }

    /// Returns once every write committed before this one has finished (at once without a
    /// ticket).
    pub fn wait_turn(&self) {
        let t = self.ticket.load(Ordering::SeqCst);
        if t != NONE {
            self.order.wait_for_turn(t);
        }
    }

    /// Marks the write done, after [`InFlight::wait_turn`]; `last` runs under the order's
    /// lock if no other write is in flight now (to clear the loaded index's mark).
    pub fn finish(mut self, last: impl FnOnce()) {
        self.finish_with(last);
    }

    fn finish_with(&mut self, last: impl FnOnce()) {
        self.finished = true;
        let t = self.ticket.load(Ordering::SeqCst);
        let mut s = self.order.lock();
        if t != NONE {
            debug_assert_eq!(s.done, t, "a write finished out of its turn");
            s.done = t + 1;
            if let Some((_, next)) = s.turns.iter().find(|(ticket, _)| *ticket == t + 1) {
                next.notify_one();
            }
        }
        s.in_flight -= 1;
        if s.in_flight == 0 {
            last();
        }
        self.order.notify(&s);
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.wait_turn();
            self.finish_with(|| {});
        }
    }
}

#[cfg(test)]
#[path = "write_order_tests.rs"]
mod tests;
