//! Managed blocking: a pool job about to wait for something another job of its own tenant holds
//! (a lock of the tenant's, a load of its indexes) declares the wait with [`blocking`], and
//! while it waits the pool lets another thread of the same kind run jobs in its place. Without
//! this, a tenant with as many such jobs as the pool has workers puts every worker to sleep on
//! its own lock, and every other tenant's requests queue until the lock is released.
//!
//! The pool stays at its size in *running* jobs: a worker takes a job only while fewer than
//! the configured number of its kind run outside a declared wait. A waiter that wakes goes on
//! with its job at once (nothing is preempted), so for as long as the spare's job lasts the
//! pool runs one job more than its size; then the spare finds the pool full and sleeps. Spare
//! threads are started only when a wait begins and no thread of the kind is asleep, at most
//! twice the kind's configured count (so a pool never has more than three times its threads),
//! and stay, asleep, until shutdown: a tenant whose writes contend all the time would otherwise
//! start a thread per wait. One tenant's jobs hold at most twice the configured count of
//! threads: however many of them wait, the last spares are left to the other tenants' jobs.
//!
//! A job that runs long without waiting gives up its place the same way, through a watchdog
//! instead of a call of its own (see [`crate::long_jobs`]); a declared wait of such a job frees
//! nothing more.
//!
//! The hook is a thread-local set by the pool on its own threads: code that may run on a pool
//! worker or anywhere else (the engine, its tests, a maintenance thread) calls [`blocking`]
//! without knowing the pool, and off a pool thread it only runs the closure. A background
//! worker's jobs run on its low-priority thread (`crate::executor`), which must not take the
//! pool's lock: there the hook relays the wait's start and end to the worker's own thread,
//! which tells the pool.

use std::cell::{Cell, RefCell};
use std::sync::Arc;

use crate::scheduler::Kind;

/// What [`blocking`] tells the pool that runs the calling thread.
pub(crate) trait Pool: Send + Sync {
    /// A job of a `kind` thread starts waiting: another thread may run in its place.
    fn wait_begins(self: Arc<Self>, kind: Kind);
    /// The wait is over: the job counts as running again.
    fn wait_ends(&self, kind: Kind);
}

/// Who a declared wait is told to.
#[derive(Clone)]
enum Declarer {
    /// The pool itself, by a worker's own thread of this kind.
    Pool(Arc<dyn Pool>, Kind),
    /// A background worker's thread, by its low-priority thread: the worker tells the pool
    /// ([`relay_wait`]).
    Relay(std::sync::mpsc::Sender<crate::executor::Event>),
}

impl Declarer {
    fn begins(&self) {
        match self {
            Declarer::Pool(pool, kind) => Arc::clone(pool).wait_begins(*kind),
            Declarer::Relay(tx) => {
                let _ = tx.send(crate::executor::Event::WaitBegins);
            }
        }
    }

    fn ends(&self) {
        match self {
            Declarer::Pool(pool, kind) => pool.wait_ends(*kind),
            Declarer::Relay(tx) => {
                let _ = tx.send(crate::executor::Event::WaitEnds);
            }
        }
    }
}

thread_local! {
    /// Who this thread's declared waits are told to: the pool it is a worker of, or the
    /// worker whose jobs it runs.
    static WORKER: RefCell<Option<Declarer>> = const { RefCell::new(None) };
    /// Inside a declared wait: a wait nested in it is already counted.
    static WAITING: Cell<bool> = const { Cell::new(false) };
    /// This thread runs a background worker's jobs (`crate::executor`).
    static LOW_PRIORITY: Cell<bool> = const { Cell::new(false) };
}

/// Marks the calling thread as a worker of `pool`.
pub(crate) fn set_worker(pool: Arc<dyn Pool>, kind: Kind) {
    WORKER.with(|w| *w.borrow_mut() = Some(Declarer::Pool(pool, kind)));
}

/// Marks the calling thread as the low-priority thread of a background worker: it runs the
/// worker's jobs, and its declared waits go to the worker as events on `events`.
pub(crate) fn set_executor(events: std::sync::mpsc::Sender<crate::executor::Event>) {
    LOW_PRIORITY.set(true);
    WORKER.with(|w| *w.borrow_mut() = Some(Declarer::Relay(events)));
}

/// On a background worker's own thread: tells the pool that the job its low-priority thread
/// runs began (`true`) or ended (`false`) a declared wait.
pub(crate) fn relay_wait(begins: bool) {
    let Some(pool @ Declarer::Pool(..)) = WORKER.with(|w| w.borrow().clone()) else {
        return;
    };
    if begins { pool.begins() } else { pool.ends() }
}

/// Whether the calling thread runs a pool's background jobs (at the lowest OS priority): a
/// [`crate::Demotable::WritesInForeground`] job asks before it writes.
pub fn on_background_worker() -> bool {
    LOW_PRIORITY.get()
}

/// Runs `f`, a wait for something another job may hold for long, as a declared wait: on a
/// worker of a [`crate::FairScheduler`], the pool runs other jobs meanwhile on another thread
/// (see the module docs); anywhere else, and inside another declared wait, it just runs `f`.
///
/// Costs a turn on the pool's lock at each end, so declare only waits that block: try the
/// lock first and call this only when it is taken. Do not declare waits that a spare thread
/// would only join (a lock every tenant shares): it would add a thread to the queue, not work.
/// A queue whose waiters are served together is another matter: a write waiting in the store's
/// batcher is declared, as the next job's write joins the same batch (one transaction more
/// full, not one more in line).
pub fn blocking<R>(f: impl FnOnce() -> R) -> R {
    if WAITING.get() {
        return f();
    }
    let Some(declarer) = WORKER.with(|w| w.borrow().clone()) else {
        return f();
    };
    /// Ends the wait however `f` ends, a panic included (the pool catches job panics, and the
    /// worker must count as running again when it returns to it).
    struct Ends(Declarer);
    impl Drop for Ends {
        fn drop(&mut self) {
            WAITING.set(false);
            self.0.ends();
        }
    }
    declarer.begins();
    WAITING.set(true);
    let _ends = Ends(declarer);
    f()
}
