//! Evictions taken off threads that must not write.
//!
//! A read that loads a cold tenant may push the loaded indexes over the residency budget.
//! Evicting a tenant whose indexes changed since their last snapshot saves that snapshot
//! first (a storage write: redb's write lock, a group commit, an fsync), and even a clean
//! eviction holds the victim's locks while its indexes are dropped. The worker pool's
//! background workers run at the lowest OS priority and must never write
//! (`strata_store::writes_allowed_here`), nor hold another tenant's locks while the OS keeps
//! them off the CPU. So on such a thread the registry evicts nothing: it hands the whole
//! enforcement to this thread, at normal priority, naming the tenant it is serving so that
//! tenant is not chosen, and then waits (holding no lock, at most [`BACKPRESSURE`]) until this
//! thread is idle or the total is under the budget. The budget is exceeded only until this
//! thread has run; while a busy victim keeps it exceeded, this thread tries again.

use std::collections::HashSet;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use strata_store::{Store, TenantKey};

use crate::Engine;
use crate::registry::{IndexRegistry, lock};

/// How long a reader that handed its enforcement off waits for it, at most: long enough for
/// the evictor to drop a few tenants, short enough that a stuck eviction costs one request
/// little.
pub(crate) const BACKPRESSURE: Duration = Duration::from_millis(50);

/// How long the thread waits before trying again when a busy victim kept the total over the
/// budget.
const RETRY: Duration = Duration::from_millis(5);

/// The normal-priority thread that does the evictions a read may not do itself.
#[derive(Default)]
pub(crate) struct Evictor {
    signal: Arc<Signal>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// What the thread and the registry share.
#[derive(Default)]
struct Signal {
    state: Mutex<State>,
    /// Signalled when work is asked for, when it finishes, and at shutdown.
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// An enforcement was asked for.
    wanted: bool,
    /// An enforcement is under way.
    running: bool,
    /// Set (under the lock, so that no wake-up is missed) to stop the thread.
    stop: bool,
    /// Tenants the askers are serving: never chosen by the next enforcement.
    protect: HashSet<TenantKey>,
}

impl Signal {
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn wait<'a>(&self, state: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.changed.wait(state).unwrap_or_else(|e| e.into_inner())
    }
}

impl Evictor {
    /// Starts the thread; it holds the registry weakly and the store strongly until
    /// [`Evictor::shutdown`]. An error if the thread cannot be started: without it, reads
    /// on threads that must not write could never bring the indexes under the budget.
    pub fn start(registry: &Arc<IndexRegistry>, store: Arc<Store>) -> std::io::Result<()> {
        let weak = Arc::downgrade(registry);
        registry.evictor.spawn(move |protect| {
            weak.upgrade()
                .is_some_and(|registry| registry.enforce_budget_now(&store, protect))
        })
    }

    /// Starts the thread running `enforce` (which returns whether to try again) for each
    /// request.
    fn spawn(
        &self,
        enforce: impl FnMut(&HashSet<TenantKey>) -> bool + Send + 'static,
    ) -> std::io::Result<()> {
        let signal = Arc::clone(&self.signal);
        let handle = std::thread::Builder::new()
            .name("strata-evictor".into())
            .spawn(move || run(&signal, enforce))?;
        *lock(&self.thread) = Some(handle);
        Ok(())
    }

    /// Asks the thread to bring the loaded indexes under the budget (once, however often
    /// asked before it runs), leaving `keep` (the tenant being served) loaded. Never blocks
    /// on the thread.
    pub fn request(&self, keep: Option<TenantKey>) {
        let mut state = self.signal.state();
        state.wanted = true;
        state.protect.extend(keep);
        drop(state);
        self.signal.changed.notify_all();
    }

    /// Blocks until no enforcement is asked for or running, or the thread stopped, or
    /// `done()` holds (checked at each wake-up), or `limit` passed (`None`: no limit).
    pub fn wait_idle_or(&self, limit: Option<Duration>, done: impl Fn() -> bool) {
        let deadline = limit.map(|l| Instant::now() + l);
        let signal = &self.signal;
        let mut state = signal.state();
        while (state.wanted || state.running) && !state.stop && !done() {
            state = match deadline {
                None => signal.wait(state),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return;
                    }
                    // Woken at the latest every millisecond to look at `done` again: the
                    // thread signals only when it finishes, the total falls per victim.
                    let slice = (deadline - now).min(Duration::from_millis(1));
                    signal
                        .changed
                        .wait_timeout(state, slice)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }

    /// Blocks until no enforcement is asked for or running (for tests).
    pub fn wait_idle(&self) {
        self.wait_idle_or(None, || false);
    }

    /// Stops the thread and waits for it, so that the store it holds is released with the
    /// engine.
    pub fn shutdown(&self) {
        self.signal.state().stop = true;
        self.signal.changed.notify_all();
        if let Some(handle) = lock(&self.thread).take() {
            let _ = handle.join();
        }
    }
}

fn run(signal: &Signal, mut enforce: impl FnMut(&HashSet<TenantKey>) -> bool) {
    loop {
        let protect = {
            let mut state = signal.state();
            while !state.wanted && !state.stop {
                state = signal.wait(state);
            }
            if state.stop {
                return;
            }
            state.wanted = false;
            state.running = true;
            std::mem::take(&mut state.protect)
        };
        // A panic while evicting must not end the thread (every later hand-off would wait
        // for nobody) nor leave it marked running (waiters would wait out their limit).
        let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| enforce(&protect)))
            .unwrap_or(false);
        let mut state = signal.state();
        state.running = false;
        if again && !state.stop {
            // A busy victim kept the total over the budget: nobody else may ask again, so
            // this thread does, after a pause that lets the victim's request finish.
            state.wanted = true;
            state.protect.extend(protect);
            drop(state);
            signal.changed.notify_all();
            let state = signal.state();
            if !state.stop {
                let _ = signal
                    .changed
                    .wait_timeout(state, RETRY)
                    .unwrap_or_else(|e| e.into_inner());
            }
            continue;
        }
        drop(state);
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;

    use super::*;

    /// Runs `f` on a thread and fails if it does not finish within 10 s (a hang).
    fn within_10s(f: impl FnOnce() + Send + 'static) {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            f();
            let _ = tx.send(());
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("hung: a wake-up was missed");
    }

    #[test]
    fn shutdown_never_misses_its_wake_up() {
        within_10s(|| {
            for i in 0..2_000 {
                let evictor = Evictor::default();
                evictor.spawn(|_| false).unwrap();
                if i % 2 == 0 {
                    evictor.request(None);
                }
                evictor.shutdown();
            }
        });
    }

    #[test]
    fn a_panicking_enforcement_leaves_the_thread_serving_and_idle() {
        let calls = Arc::new(AtomicUsize::new(0));
        let evictor = Evictor::default();
        let seen = Arc::clone(&calls);
        evictor
            .spawn(move |_| {
                if seen.fetch_add(1, Ordering::SeqCst) == 0 {
                    panic!("first enforcement fails");
                }
                false
            })
            .unwrap();
        let evictor = Arc::new(evictor);
        let e = Arc::clone(&evictor);
        within_10s(move || {
            e.request(None);
            e.wait_idle();
            e.request(None);
            e.wait_idle();
        });
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        evictor.shutdown();
    }

    #[test]
    fn an_enforcement_left_over_budget_by_a_busy_victim_is_tried_again() {
        let calls = Arc::new(AtomicUsize::new(0));
        let evictor = Evictor::default();
        let seen = Arc::clone(&calls);
        // The first two runs skip a busy victim (try again); the third gets under the budget.
        evictor
            .spawn(move |_| seen.fetch_add(1, Ordering::SeqCst) < 2)
            .unwrap();
        let evictor = Arc::new(evictor);
        let e = Arc::clone(&evictor);
        within_10s(move || {
            e.request(None);
            e.wait_idle();
        });
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        evictor.shutdown();
    }

    #[test]
    fn the_tenant_a_reader_serves_is_protected_until_it_is_enforced() {
        let (tx, rx) = mpsc::channel();
        let evictor = Evictor::default();
        evictor
            .spawn(move |protect| {
                let _ = tx.send(protect.clone());
                false
            })
            .unwrap();
        evictor.request(Some(TenantKey::SERVER));
        let protected = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(protected.contains(&TenantKey::SERVER));
        evictor.wait_idle();
        evictor.request(None);
        assert!(rx.recv_timeout(Duration::from_secs(10)).unwrap().is_empty());
        evictor.shutdown();
    }

    /// A read on a thread that must not write evicts nothing itself, not even a tenant that
    /// needs no save: it would hold that tenant's locks at the lowest priority.
    #[test]
    fn a_read_on_a_thread_that_must_not_write_evicts_nothing_itself() {
        use strata_auth::OperatorScope;
        use strata_types::{Metric, NewRecord, RecordId, RequestScope, SearchRequest, TenantId};

        let dir = tempfile::tempdir().unwrap();
        let config = crate::EngineConfig {
            residency: crate::ResidencyConfig {
                memory_budget_bytes: 1,
                pinned: Vec::new(),
            },
            ..crate::EngineConfig::default()
        };
        let engine = Engine::open(dir.path(), config).unwrap();
        let op = OperatorScope::for_tests();
        let name = crate::test_support::vec_name();
        let search = |t: &str| {
            let req = SearchRequest {
                vector: Some(vec![1.0, 0.5, 0.25, 0.0]),
                k: 3,
                modality: Some(name.clone()),
                ..Default::default()
            };
            let scope = crate::test_support::admin_scope(&engine, t);
            engine
                .search(&scope, &RequestScope::default(), &req)
                .unwrap()
                .hits
                .len()
        };
        for t in ["t0", "t1"] {
            engine
                .create_tenant(&op, &TenantId::parse(t).unwrap(), None)
                .unwrap();
            let scope = crate::test_support::admin_scope(&engine, t);
            engine
                .create_collection(&scope, &name, 4, Metric::Cosine)
                .unwrap();
            let records = (0..5)
                .map(|i| NewRecord {
                    id: Some(RecordId::parse(format!("r{i}")).unwrap()),
                    modality: Some(name.clone()),
                    vector: Some(vec![1.0, i as f32, 0.5, 0.25]),
                    ..Default::default()
                })
                .collect();
            engine
                .put(&scope, &RequestScope::default(), records)
                .unwrap();
        }
        assert_eq!(search("t0"), 3);
        engine.wait_for_evictions();
        // t0 is loaded and clean (saved): evicting it needs no write.
        engine.persist_indexes().unwrap();
        let t0 = TenantId::parse("t0").unwrap();
        assert!(engine.residency(&op, &t0).unwrap().resident);
        // Without an evictor, nothing serves the hand-off: whatever is evicted now was
        // evicted by the reader itself.
        engine.indexes.evictor.shutdown();
        let hits = std::thread::scope(|s| {
            s.spawn(|| {
                crate::forbid_storage_writes_on_this_thread();
                search("t1")
            })
            .join()
            .unwrap()
        });
        assert_eq!(hits, 3);
        let r0 = engine.residency(&op, &t0).unwrap();
        assert!(r0.resident && r0.evictions == 0, "{r0:?}");
        // A normal thread enforces the budget itself (a write to loaded t1 does).
        let more = vec![NewRecord {
            id: Some(RecordId::parse("r9").unwrap()),
            modality: Some(name.clone()),
            vector: Some(vec![0.5, 1.0, 0.5, 0.25]),
            ..Default::default()
        }];
        let scope = crate::test_support::admin_scope(&engine, "t1");
        engine.put(&scope, &RequestScope::default(), more).unwrap();
        let r0 = engine.residency(&op, &t0).unwrap();
        assert!(!r0.resident && r0.evictions == 1, "{r0:?}");
    }

    #[test]
    fn a_bounded_wait_returns_within_its_limit_or_when_done() {
        // No thread: a request is never served, so only the limit or `done` ends the wait.
        let evictor = Evictor::default();
        evictor.request(None);
        let start = Instant::now();
        evictor.wait_idle_or(Some(Duration::from_millis(30)), || false);
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(30) && waited < Duration::from_secs(5));
        // `done` ends it long before its limit (a minute, so that a loaded machine's delays
        // cannot be mistaken for the limit).
        let start = Instant::now();
        evictor.wait_idle_or(Some(Duration::from_secs(60)), || true);
        assert!(start.elapsed() < Duration::from_secs(30));
    }
}
