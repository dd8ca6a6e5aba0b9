//! Waiting for the row log without a thread per waiter.
//!
//! [`RowLog::wait_flushed`] blocks its thread, and the first waiter to find no flush running
//! flushes for everyone. A server that waited that way on behalf of its requests held one
//! thread per write in flight, and every flush woke all of them: on a small machine, a flood
//! of writes from one tenant filled the run queue with those threads, and every other
//! tenant's request waited behind them for a core. A [`LogFlushed`] is a future instead: it
//! registers its task and the entry it waits for, and one thread per log (the flusher) syncs
//! whenever an awaited entry is past the last synced one, as a waiter would; whoever settles a
//! flush (the flusher, a blocking waiter, a checkpoint) wakes the tasks it made durable.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::{RowLog, lock};
use crate::stats::LatencyHistogram;

/// Resolves once entry `lsn` of the log is synced in a file; an error means it is not known to
/// be (a flush failed). Dropped early, it leaves the write committed and unacknowledged.
pub(crate) struct LogFlushed {
    log: Arc<RowLog>,
    lsn: u64,
    syncs: Arc<LatencyHistogram>,
    /// The waker registered by the last poll: still in the log's list while this is pending
    /// (an entry leaves it only when synced, failed or stopped, and the next poll then
    /// returns before registering), so a poll with a waker that wakes the same task adds none.
    registered: Option<std::task::Waker>,
}

impl Future for LogFlushed {
    type Output = std::io::Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let mut state = lock(&this.log.flushed);
        if let Some((kind, why)) = &state.failed {
            return Poll::Ready(Err(std::io::Error::new(*kind, why.clone())));
        }
        if state.synced >= this.lsn {
            return Poll::Ready(Ok(()));
        }
        if state.flusher_stopped {
            // Only while the store closes: no thread is left to flush for a task, so it syncs
            // on the thread that polls it (blocking that thread for one sync).
            drop(state);
            return Poll::Ready(this.log.wait_flushed(this.lsn, &this.syncs));
        }
        // Polled again with another task's waker (moved to another task), it registers that
        // one too; the older entry is dropped at the next flush (a spurious wake is harmless).
        if !this
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            state.wakers.push((this.lsn, cx.waker().clone()));
            this.registered = Some(cx.waker().clone());
        }
        if state.wanted < this.lsn {
            state.wanted = this.lsn;
            this.log.flush_cv.notify_one();
        }
        Poll::Pending
    }
}

impl RowLog {
    /// Entry `lsn`'s sync, to await (see the module's documentation); `syncs` times the flush
    /// it may have to make itself while the store closes.
    pub(crate) fn flushed(self: &Arc<Self>, lsn: u64, syncs: &Arc<LatencyHistogram>) -> LogFlushed {
        LogFlushed {
            log: Arc::clone(self),
            lsn,
            syncs: Arc::clone(syncs),
            registered: None,
        }
    }

    /// The flusher thread's loop: flushes every buffered entry whenever an awaited one is not
    /// synced yet, observing each sync's time in `syncs`, until stopped. A failed flush has
    /// failed the log (every wait reports it) and is handed to `failed`, which makes the store
    /// refuse writes at once, whether or not a task still awaits what it lost; the loop then
    /// only waits to be stopped.
    pub(crate) fn run_flusher(&self, syncs: &LatencyHistogram, failed: &dyn Fn(&std::io::Error)) {
        loop {
            {
                let mut state = lock(&self.flushed);
                while !state.flusher_stopped
                    && (state.failed.is_some() || state.wanted <= state.synced)
                {
                    state = self.flush_cv.wait(state).unwrap_or_else(|e| e.into_inner());
                }
                if state.flusher_stopped {
                    return;
                }
            }
            // Waits for a flush in progress (a blocking waiter's, a checkpoint's); the entries
            // it synced are then settled, and this flush finds fewer or none buffered.
            let files = lock(&self.files);
            if let Some(e) = self.flush_timed(files, syncs) {
                failed(&e);
            }
        }
    }

    /// Stops [`RowLog::run_flusher`]; tasks still waiting flush on their own thread when next
    /// polled (woken here).
    pub(crate) fn stop_flusher(&self) {
        let waiting = {
            let mut state = lock(&self.flushed);
            state.flusher_stopped = true;
            self.flush_cv.notify_one();
            std::mem::take(&mut state.wakers)
        };
        waiting.into_iter().for_each(|(_, waker)| waker.wake());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::task::{Wake, Waker};
    use std::thread::Thread;

    use super::*;
    use crate::keys::TenantKey;
    use crate::row_log::tests::held_store;
    use crate::{Pending, Store};

    const T: TenantKey = TenantKey::from_raw(7);

    /// Wakes the thread that polls, and says whether it was woken.
    struct Unpark {
        thread: Thread,
        woken: AtomicBool,
    }

    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.woken.store(true, Ordering::SeqCst);
            self.thread.unpark();
        }
    }

    /// Polls `future` on this thread until it is ready, parking between polls; a wake-up that
    /// never comes fails the test instead of hanging it.
    fn block_on<F: Future>(future: F) -> F::Output {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let unpark = Arc::new(Unpark {
            thread: std::thread::current(),
            woken: AtomicBool::new(false),
        });
        let waker = Waker::from(Arc::clone(&unpark));
        let mut cx = Context::from_waker(&waker);
        let mut future = std::pin::pin!(future);
        loop {
            if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                return out;
            }
            while !unpark.woken.swap(false, Ordering::SeqCst) {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                assert!(!left.is_zero(), "a task was never woken");
                std::thread::park_timeout(left);
            }
        }
    }

    fn put_pending(store: &Store, name: &str) -> Pending {
        store
            .write_batched_for(T, |w| w.put_blob(T, name, b"v"))
            .unwrap()
            .1
    }

    #[test]
    fn an_awaited_write_is_synced_by_the_flusher_without_a_waiting_thread() {
        let (_dir, store, log) = held_store();
        let syncs_before = log.syncs_for_test();
        let pending = put_pending(&store, "a");
        // Nothing syncs a committed entry until someone waits for it.
        assert_eq!(log.syncs_for_test(), syncs_before);
        let rest = block_on(pending.wait_logged()).unwrap();
        assert!(rest.is_none(), "a logged write needs nothing more");
        assert_eq!(
            log.syncs_for_test(),
            syncs_before + 1,
            "the flusher synced it"
        );
        assert!(lock(&log.flushed).wakers.is_empty());
    }

    #[test]
    fn a_task_polled_again_before_its_sync_registers_once() {
        let (_dir, store, log) = held_store();
        let pending = put_pending(&store, "a");
        let mut wait = std::pin::pin!(pending.wait_logged());
        // A waker of one task, whose clones wake it too (`will_wake`). Not `Waker::noop`: its
        // clone may point at another copy of its table, in another codegen unit, and then
        // reads as another task's.
        let waker = Waker::from(Arc::new(Unpark {
            thread: std::thread::current(),
            woken: AtomicBool::new(false),
        }));
        let mut cx = Context::from_waker(&waker);
        {
            // Holding the files, the flusher cannot sync between the polls.
            let _files = lock(&log.files);
            for _ in 0..3 {
                assert!(wait.as_mut().poll(&mut cx).is_pending());
            }
            assert_eq!(lock(&log.flushed).wakers.len(), 1, "one entry for one task");
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while wait.as_mut().poll(&mut cx).is_pending() {
            assert!(std::time::Instant::now() < deadline, "never synced");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    #[test]
    fn many_tasks_awaiting_at_once_are_all_woken_and_share_syncs() {
        let (_dir, store, log) = held_store();
        let syncs_before = log.syncs_for_test();
        let pendings: Vec<Pending> = (0..32)
            .map(|i| put_pending(&store, &format!("k{i}")))
            .collect();
        std::thread::scope(|s| {
            for pending in pendings {
                s.spawn(move || block_on(pending.wait_logged()).unwrap());
            }
        });
        let syncs = log.syncs_for_test() - syncs_before;
        assert!(
            (1..32).contains(&syncs),
            "{syncs} syncs for 32 writes committed before"
        );
    }

    #[test]
    fn a_failed_flush_fails_every_awaiting_task() {
        let (_dir, store, log) = held_store();
        log.fail_next_sync_for_test();
        // Committed together, so the one failing flush takes them all.
        let pendings: Vec<Pending> = (0..4)
            .map(|i| put_pending(&store, &format!("lost{i}")))
            .collect();
        std::thread::scope(|s| {
            for pending in pendings {
                s.spawn(move || {
                    let failed = block_on(pending.wait_logged());
                    assert!(failed.is_err(), "{:?}", failed.map(|r| r.is_some()));
                });
            }
        });
        // The store refuses writes after it, as after a blocking waiter's failed flush.
        let later = store.write_batched_for(T, |w| w.put_blob(T, "later", b"v"));
        assert!(later.is_err());
    }

    #[test]
    fn a_failed_flush_refuses_later_writes_when_nobody_awaits_what_it_lost() {
        let (_dir, store, log) = held_store();
        log.fail_next_sync_for_test();
        let pending = put_pending(&store, "lost");
        {
            // Awaited once (the flusher is asked), then dropped: its client went away.
            let mut wait = std::pin::pin!(pending.wait_logged());
            let mut cx = Context::from_waker(Waker::noop());
            assert!(wait.as_mut().poll(&mut cx).is_pending());
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let later = store.write_batched_for(T, |w| w.put_blob(T, "later", b"v"));
            if later.is_err() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the store still takes writes after its log failed"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn a_task_awaiting_after_the_flusher_stopped_flushes_on_its_own_thread() {
        let (_dir, store, log) = held_store();
        log.stop_flusher();
        let syncs_before = log.syncs_for_test();
        let pending = put_pending(&store, "late");
        assert!(block_on(pending.wait_logged()).unwrap().is_none());
        assert_eq!(log.syncs_for_test(), syncs_before + 1);
    }
}
