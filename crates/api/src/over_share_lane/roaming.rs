//! A connection served by two tasks, one on each runtime, with each of its wake-ups sent to
//! the side its tenant belongs on at that moment.
//!
//! Moving the connection future itself between the runtimes (a task on the lane that polls it
//! until its tenant is back within its share, then hands it back) left the decision to the
//! side that held it: a keep-alive connection parked on the lane when its tenant's flood ended
//! was woken there by its next request, and a lane thread (at `nice 19`, busy with another
//! tenant's flood) had to run before the request could go back to the main runtime. Here the
//! connection sits in one place both tasks reach, and the waker its polls hand out asks
//! `over` when it is woken, on whatever thread wakes it (the IO driver, a timer, the end of a
//! job), so a wake-up after the flag lapsed goes straight to the main runtime.
//!
//! Only one side polls at a time (a `try_lock`): a wake-up that finds the other side polling
//! leaves a mark the poller reads after it lets go, and routes again. The wakers handed to the
//! connection hold the shared state weakly, so a connection whose tasks are gone is dropped
//! with them (a socket's registration would otherwise keep it alive through its own waker).

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering, fence};
use std::sync::{Arc, Mutex, PoisonError, TryLockError, Weak};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// The side of the lane a connection's poll runs on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Side {
    Main,
    Lane,
}

type Connection = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What both tasks of a connection share.
pub(super) struct Roaming {
    /// `None` once the connection has ended (or panicked).
    conn: Mutex<Option<Connection>>,
    /// Whether it has ended, read without the lock: a side that only looks must not hold the
    /// lock while the other side tries it (that side would leave a mark nobody reads).
    ended: AtomicBool,
    /// A wake-up that found the other side polling: the poller routes again when it lets go.
    missed: AtomicBool,
    main: AtomicWaker,
    lane: AtomicWaker,
    /// Whether the lane's task exists to be woken (`LANE_NOT_STARTED`, …): until it does, the
    /// main task starts it; once it is gone (its runtime shut down), the connection stays on
    /// the main runtime.
    lane_state: AtomicU8,
    over: Box<dyn Fn() -> bool + Send + Sync>,
    /// A panic of the connection's, for the main task to resume.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    /// The waker the connection's polls get: routes each wake-up (holds `self` weakly).
    router: Waker,
}

const LANE_NOT_STARTED: u8 = 0;
const LANE_RUNNING: u8 = 1;
const LANE_GONE: u8 = 2;

/// The connection's waker.
struct Router(Weak<Roaming>);

/// The lane side's task. However it ends (the connection's end, its runtime shutting down, a
/// panic), the main task is told, and serves the connection from then on if it is still open.
pub(super) struct LaneTask(Arc<Roaming>);

impl Future for LaneTask {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.poll_side(Side::Lane, cx)
    }
}

impl Drop for LaneTask {
    fn drop(&mut self) {
        self.0.lane_state.store(LANE_GONE, Ordering::Release);
        self.0.main.wake();
    }
}

impl Wake for Router {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(roaming) = self.0.upgrade() {
            roaming.wake(roaming.belongs());
        }
    }
}

impl Roaming {
    pub(super) fn new<F, O>(conn: F, over: O) -> Arc<Self>
    where
        F: Future<Output = ()> + Send + 'static,
        O: Fn() -> bool + Send + Sync + 'static,
    {
        Arc::new_cyclic(|weak| Roaming {
            conn: Mutex::new(Some(Box::pin(conn))),
            ended: AtomicBool::new(false),
            missed: AtomicBool::new(false),
            main: AtomicWaker::new(),
            lane: AtomicWaker::new(),
            lane_state: AtomicU8::new(LANE_NOT_STARTED),
            over: Box::new(over),
            panic: Mutex::new(None),
            router: Waker::from(Arc::new(Router(weak.clone()))),
        })
    }

    /// Where the connection belongs now.
    pub(super) fn belongs(&self) -> Side {
        if self.lane_state.load(Ordering::Acquire) != LANE_GONE && (self.over)() {
            Side::Lane
        } else {
            Side::Main
        }
    }

    fn wake(&self, side: Side) {
        match side {
            // Until the lane's task exists, the main task is the one that starts it.
            Side::Lane if self.lane_state.load(Ordering::Acquire) == LANE_RUNNING => {
                self.lane.wake();
            }
            Side::Lane | Side::Main => self.main.wake(),
        }
    }

    /// The lane's task for this connection; the main task spawns it on the lane's runtime
    /// and may wake it from then on.
    pub(super) fn lane_task(self: &Arc<Self>) -> LaneTask {
        self.lane_state.store(LANE_RUNNING, Ordering::Release);
        LaneTask(Arc::clone(self))
    }

    pub(super) fn take_panic(&self) -> Option<Box<dyn Any + Send>> {
        self.panic
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// One poll of `side`'s task: polls the connection if it belongs there, or passes the
    /// wake-up on. Ready once the connection has ended.
    pub(super) fn poll_side(&self, side: Side, cx: &mut Context<'_>) -> Poll<()> {
        match side {
            Side::Main => self.main.register(cx.waker()),
            Side::Lane => self.lane.register(cx.waker()),
        }
        loop {
            let belongs = self.belongs();
            if belongs != side {
                self.wake(belongs);
                return self.ended_or_pending();
            }
            // Marked before trying, so a poller that is about to let go sees it after. The
            // fences pair the mark and the lock (a store, then a load of another location, on
            // each side), which `SeqCst` on the mark alone does not order.
            self.missed.store(true, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            let mut held = match self.conn.try_lock() {
                Ok(held) => held,
                Err(TryLockError::WouldBlock) => return Poll::Pending,
                // A panic while dropping it left it poisoned; the connection is gone.
                Err(TryLockError::Poisoned(_)) => {
                    self.end();
                    return Poll::Ready(());
                }
            };
            self.missed.store(false, Ordering::SeqCst);
            let Some(conn) = held.as_mut() else {
                return Poll::Ready(());
            };
            let polled = std::panic::catch_unwind(AssertUnwindSafe(|| {
                conn.as_mut().poll(&mut Context::from_waker(&self.router))
            }));
            match polled {
                Ok(Poll::Pending) => {}
                Ok(Poll::Ready(())) => {
                    *held = None;
                    drop(held);
                    self.end();
                    return Poll::Ready(());
                }
                Err(panic) => {
                    *self.panic.lock().unwrap_or_else(PoisonError::into_inner) = Some(panic);
                    *held = None;
                    drop(held);
                    self.end();
                    return Poll::Ready(());
                }
            }
            drop(held);
            fence(Ordering::SeqCst);
            if !self.missed.swap(false, Ordering::SeqCst) {
                return Poll::Pending;
            }
            // A wake-up came while this side polled: route it now.
        }
    }

    fn ended_or_pending(&self) -> Poll<()> {
        if self.ended.load(Ordering::Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Marks the connection ended and wakes both tasks, so both finish.
    fn end(&self) {
        self.ended.store(true, Ordering::Release);
        self.main.wake();
        self.lane.wake();
    }
}
