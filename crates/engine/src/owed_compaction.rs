//! Compaction that could not run when an erasure asked for it.
//!
//! A purge's erasure commits at once, but its bytes leave the data file only when the file is
//! compacted, and compaction needs a moment with no read transaction in flight. A long reader
//! (an export streaming any tenant) can hold one for minutes. Failing the purge then would
//! report an erasure that did happen as failed and leave nobody to finish it, so the compaction
//! is owed instead: one thread retries it every [`RETRY`] until it runs, and stops with the
//! engine.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use strata_store::Store;

/// How often an owed compaction is tried again.
const RETRY: Duration = Duration::from_secs(1);

#[derive(Default)]
struct State {
    /// A compaction is owed (and a thread is trying it).
    owed: bool,
    /// The engine is closing: the thread ends.
    stop: bool,
}

#[derive(Default)]
pub(crate) struct OwedCompaction {
    state: Arc<(Mutex<State>, Condvar)>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // Two flags set in single statements; a panic cannot leave them half-made.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl OwedCompaction {
    /// Owes a compaction of `store`: a thread tries it until it runs. Holding only a weak
    /// reference, it never keeps the store (and its file lock) alive.
    pub(crate) fn owe(&self, store: &Arc<Store>) {
        let mut st = lock(&self.state.0);
        if st.owed || st.stop {
            return;
        }
        st.owed = true;
        drop(st);
        let (state, store) = (Arc::clone(&self.state), Arc::downgrade(store));
        let spawned = std::thread::Builder::new()
            .name("strata-compact".into())
            .spawn(move || retry(&state, &store));
        match spawned {
            Ok(handle) => {
                let mut thread = self.thread.lock().unwrap_or_else(|e| e.into_inner());
                // A thread that ended (its compaction ran) is joined before it is replaced.
                if let Some(old) = thread.replace(handle) {
                    let _ = old.join();
                }
            }
            Err(e) => {
                lock(&self.state.0).owed = false;
                tracing::warn!(error = %e, "cannot start the compaction thread; freed pages \
                    keep their bytes until the next compaction");
            }
        }
    }

    /// Ends the thread (at the engine's drop); an owed compaction is left for the next start's
    /// next erasure.
    pub(crate) fn stop(&self) {
        lock(&self.state.0).stop = true;
        self.state.1.notify_all();
        if let Some(handle) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = handle.join();
        }
    }
}

fn retry(state: &(Mutex<State>, Condvar), store: &Weak<Store>) {
    let mut st = lock(&state.0);
    loop {
        st = state
            .1
            .wait_timeout(st, RETRY)
            .unwrap_or_else(|e| e.into_inner())
            .0;
        if st.stop {
            return;
        }
        let Some(store) = store.upgrade() else {
            st.owed = false;
            return;
        };
        drop(st);
        let result = store.compact();
        drop(store);
        st = lock(&state.0);
        match result {
            Ok(_) => {
                tracing::info!("owed compaction done: erased data has left the data file");
                st.owed = false;
                return;
            }
            // Most often a reader still in flight; tried again.
            Err(e) => tracing::debug!(error = %e, "owed compaction not possible yet"),
        }
    }
}
