//! Evictions that need a storage write, taken off threads that must not write.
//!
//! A read that loads a cold tenant may push the loaded indexes over the residency budget, and
//! evicting a tenant whose indexes changed since their last snapshot saves that snapshot first:
//! a storage write (redb's write lock, a group commit, an fsync). The worker pool's background
//! workers run at the lowest OS priority and must never write (`strata_store::writes_allowed_here`):
//! holding the write lock there would stall every tenant behind a thread the OS keeps off the
//! CPU. So on such a thread the registry evicts only tenants it can drop without a write, and
//! hands the rest of the work to this thread, at normal priority, which enforces the budget
//! the usual way. The budget is then exceeded only until this thread has run.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;

use strata_store::Store;

use crate::Engine;
use crate::registry::{IndexRegistry, lock};

/// The normal-priority thread that finishes evictions a read could not do itself.
#[derive(Default)]
pub(crate) struct Evictor {
    signal: Arc<Signal>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// What the thread and the registry share.
#[derive(Default)]
struct Signal {
    /// `(wanted, running)`: an enforcement was asked for / is under way.
    state: Mutex<(bool, bool)>,
    /// Signalled when work is asked for, when it finishes, and at shutdown.
    changed: Condvar,
    stop: AtomicBool,
}

impl Evictor {
    /// Starts the thread; it holds the registry weakly and the store strongly until
    /// [`Evictor::shutdown`].
    pub fn start(registry: &Arc<IndexRegistry>, store: Arc<Store>) {
        let weak = Arc::downgrade(registry);
        let signal = Arc::clone(&registry.evictor.signal);
        let handle = std::thread::Builder::new()
            .name("strata-evictor".into())
            .spawn(move || run(&signal, &weak, &store));
        if let Ok(handle) = handle {
            *lock(&registry.evictor.thread) = Some(handle);
        }
    }

    /// Asks the thread to bring the loaded indexes under the budget (once, however often
    /// asked before it runs). Never blocks on the thread.
    pub fn request(&self) {
        lock(&self.signal.state).0 = true;
        self.signal.changed.notify_all();
    }

    /// Blocks until no enforcement is asked for or running (for tests).
    pub fn wait_idle(&self) {
        let signal = &self.signal;
        let mut state = lock(&signal.state);
        while (state.0 || state.1) && !signal.stop.load(Ordering::Relaxed) {
            state = signal
                .changed
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Stops the thread and waits for it, so that the store it holds is released with the
    /// engine.
    pub fn shutdown(&self) {
        self.signal.stop.store(true, Ordering::Relaxed);
        self.signal.changed.notify_all();
        if let Some(handle) = lock(&self.thread).take() {
            let _ = handle.join();
        }
    }
}

fn run(signal: &Signal, registry: &Weak<IndexRegistry>, store: &Store) {
    loop {
        {
            let mut state = lock(&signal.state);
            while !state.0 && !signal.stop.load(Ordering::Relaxed) {
                state = signal
                    .changed
                    .wait(state)
                    .unwrap_or_else(|e| e.into_inner());
            }
            if signal.stop.load(Ordering::Relaxed) {
                return;
            }
            *state = (false, true);
        }
        if let Some(registry) = registry.upgrade() {
            registry.enforce_budget(store, None);
        }
        lock(&signal.state).1 = false;
        signal.changed.notify_all();
    }
}

impl Engine {
    /// Blocks until the evictions handed off by reads on threads that must not write have
    /// run; for tests.
    pub fn wait_for_evictions(&self) {
        self.indexes.evictor.wait_idle();
    }
}

/// Marks the calling thread, for the rest of its life, as one that must never write to
/// storage: the worker pool's background (lowest-priority) workers. Reads on it still load
/// tenants; evictions that would need a snapshot saved are handed to the evictor thread.
pub fn forbid_storage_writes_on_this_thread() {
    // The mark is a thread-local flag; forgetting its guard keeps it for the thread's life.
    std::mem::forget(strata_store::forbid_writes_on_this_thread());
}

/// Whether the calling thread may write to storage (false on a background worker).
pub fn storage_writes_allowed_here() -> bool {
    strata_store::writes_allowed_here()
}

/// Storage writes attempted on threads that must not write, since the process started; each
/// also panics in debug builds. Always 0 unless a job that writes was run at low priority.
pub fn storage_writes_on_forbidden_threads() -> u64 {
    strata_store::writes_on_forbidden_threads()
}
