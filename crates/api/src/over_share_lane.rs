//! Async threads of their own for the requests of tenants over their share of the CPU.
//!
//! The pool's fair queue and its background workers order and demote a flooding tenant's
//! *jobs*, but every request also costs CPU on the async threads before and after its job:
//! the key check, the body's parse, the answer's encoding, the wait for durability. Those
//! threads serve every tenant's tasks in the order they became ready, so under a flood of
//! vector writes (about 150 µs of async-thread CPU each, a quarter of it parsing 384 numbers)
//! another tenant's request waited behind dozens of the flooding tenant's in the same run
//! queue: its p99 rose 11–16× while its jobs themselves were served fairly
//! (docs/benchmarks.md).
//!
//! So a connection whose latest request came from a tenant that the pool found over its share
//! of the CPU (`strata_sched::JobHandle::over_share`: the rule that moves its reads to the
//! background workers, without their backlog, since a flood paced below what the server can do
//! has a request or two pending and still takes most of the cores) is served on a second
//! runtime, [`OverShareLane`]: reading its requests' heads and bodies, the requests themselves,
//! writing the answers ([`OverShareLane::serve`]). Each of its wake-ups goes to the runtime
//! its tenant belongs on at that moment (`roaming`), so it moves between two polls, and a
//! tenant whose flag lapsed is served on the main runtime at its next request without a lane
//! thread running first. The OS then sees two sets of threads: the lane's, busy with the flooding
//! tenant's work, and the main runtime's, mostly asleep, which a light tenant's request wakes.
//! Only the socket's readiness is still reported by the main runtime's IO driver. Moving only
//! the requests, with the connections' reads, parsing and writes left on the main async
//! threads, left a third of a flood of vector writes' async work there (about 90 µs per write
//! against 255 on the lane, 7 Dec).
//!
//! The binary runs the lane's threads at the background priority (`[scheduler]
//! lower_over_share_requests`, `strata_sched::lower_for_over_share`): at the same priority as
//! the main runtime's, the flooding tenant's parsing, key checks and answers shared the cores
//! evenly with a light tenant's search and its request's own async work, and under a flood of
//! vector writes at ten times its rate that tenant's p99 was 1.5–1.7× its p99 alone; lowered,
//! 1.35–1.37× (docs/benchmarks.md, 6 Dec). Never `SCHED_IDLE`: a lane thread takes locks
//! every request takes (the pool's, the metrics'), and at `nice 19` one preempted under such a
//! lock still runs again in bounded time; the threads waiting for the lock sleep meanwhile,
//! which leaves it the core. What a request on the lane starts runs on the main runtime
//! ([`spawn_blocking`], [`spawn`]): blocking work may hold the store's locks (a security
//! event's audit record, an operator's migration, backup or purge on a connection that carried
//! a flooding tenant), and a thread inherits its creator's priority, so no thread is started
//! from the lane's. The engine's own threads start with the engine, and the pool's spares and
//! helpers are started by its workers.
//!
//! The flag is per tenant, set at each of its submissions to the pool, and lapses two share
//! windows (200 ms) after the latest submission that found the tenant over: a tenant whose
//! flood ends is back on the main runtime at its next submission or within 200 ms, whichever
//! comes first. A tenant alone is never over its share, so a server with one busy tenant
//! serves it on the main runtime as before. The rule is the background workers' accounting:
//! without background workers (`[scheduler] background_workers = 0`, or a priority that could
//! not be lowered) nobody is over and the lane stays idle.
//!
//! Where the choice is wrong: it is made before the request's credential is checked (checking
//! it is part of the work to move), from the connection's previous request. A connection that
//! has carried two tenants' requests (a proxy's) is never moved, but the first request of the
//! second tenant still runs where the first tenant's would; an operator's request on a
//! connection that carried one tenant's runs where that tenant's would. A poll that writes an
//! answer and finds the next request already read serves it where it is.

mod roaming;

use std::future::Future;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use strata_sched::SHARE_WINDOW;

use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use roaming::{Roaming, Side};

/// The runtime that serves the requests of tenants over their share. The binary builds it
/// (its threads, their names and their time slices are the binary's to choose) and keeps it
/// alive until the server has stopped.
#[derive(Clone, Debug)]
pub struct OverShareLane {
    runtime: Handle,
    /// The main runtime, where what a request on the lane starts runs ([`spawn_blocking`],
    /// [`spawn`]).
    main: Handle,
}

tokio::task_local! {
    /// The main runtime, for the requests the lane runs.
    static MAIN: Handle;
}

impl OverShareLane {
    /// A lane running its requests on `runtime`; what they start runs on `main`.
    pub fn new(runtime: Handle, main: Handle) -> Self {
        OverShareLane { runtime, main }
    }

    /// Serves `conn`, a connection, on the lane while `over` says its tenant is over its
    /// share, and on the calling runtime otherwise (`roaming`): each time the connection is
    /// woken (a request's bytes, its job's end, the socket writable again), `over` decides
    /// which side polls it next. A connection moves between two polls, with its request in
    /// flight if it has one, and a wake-up after its tenant's flag lapsed goes straight to
    /// the calling runtime, without a lane thread running first.
    ///
    /// The socket stays registered with the runtime that accepted it, whose IO driver still
    /// reports its readiness: on the lane, the lane's threads do the reads, the parsing, the
    /// request and the writes. Dropping the returned future drops the connection (the server's
    /// shutdown timeout). A panic of the connection's on the lane is resumed here; once the
    /// lane's runtime has shut down, the connection is served here.
    pub(crate) async fn serve<F, O>(self, conn: F, over: O)
    where
        F: Future<Output = ()> + Send + 'static,
        O: Fn() -> bool + Send + Sync + 'static,
    {
        let roaming = Roaming::new(conn, over);
        let mut lane_task: Option<AbortOnDrop<()>> = None;
        std::future::poll_fn(|cx| {
            if lane_task.is_none() && roaming.belongs() == Side::Lane {
                let task = MAIN.scope(self.main.clone(), roaming.lane_task());
                lane_task = Some(AbortOnDrop(self.runtime.spawn(task)));
            }
            roaming.poll_side(Side::Main, cx)
        })
        .await;
        if let Some(panic) = roaming.take_panic() {
            std::panic::resume_unwind(panic);
        }
    }
}

/// Whether the calling task is a connection on the lane: its requests are counted as the
/// lane's.
pub(crate) fn on_lane() -> bool {
    MAIN.try_with(|_| ()).is_ok()
}

/// `tokio::task::spawn_blocking` for request code. On the lane, whose threads may run at the
/// background priority, the closure runs on the main runtime's blocking threads, at the
/// process's priority: it may hold the store's locks (an audit record, an operator's migration
/// or backup), and a thread inherits its creator's priority, so the blocking thread is started
/// by a task of the main runtime rather than by the lane's thread. Like `spawn_blocking`, the
/// closure starts at once and runs to its end if the handle is dropped; its panic is the
/// handle's.
pub(crate) fn spawn_blocking<F, R>(f: F) -> JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    match MAIN.try_with(Handle::clone) {
        Err(_) => tokio::task::spawn_blocking(f),
        Ok(main) => main.spawn(async move {
            match tokio::task::spawn_blocking(f).await {
                Ok(out) => out,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(_) => panic!("a blocking task was cancelled: the server is stopping"),
            }
        }),
    }
}

/// `tokio::spawn` for what a request starts and does not wait for (a re-embed's driver): on
/// the main runtime, also from the lane, where it would stay after its tenant is back within
/// its share.
pub(crate) fn spawn<F>(fut: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match MAIN.try_with(Handle::clone) {
        Err(_) => tokio::spawn(fut),
        Ok(main) => main.spawn(fut),
    }
}

struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Whether a tenant was over its share at its latest submission to the pool, and when: one per
/// tenant, shared by its metric series (which the pool's submissions reach) and its
/// connections (which decide where a request runs).
#[derive(Debug, Default)]
pub(crate) struct OverShare {
    /// The time ([`now`], from 1) of the latest submission that found the tenant over its
    /// share; 0 when the latest found it within.
    since: AtomicU64,
}

/// How long a tenant counts as over its share after the latest submission that found it so:
/// the two windows the shares are counted over. A tenant that stops sending is back on the
/// main async threads within this, rather than until its next job (which could be a light
/// request long after a burst, arriving while another tenant floods the lane).
const FRESH: Duration = Duration::from_nanos(2 * SHARE_WINDOW.as_nanos() as u64);

impl OverShare {
    pub(crate) fn set(&self, over: bool) {
        self.set_at(over, now());
    }

    pub(crate) fn get(&self) -> bool {
        self.get_at(now())
    }

    fn set_at(&self, over: bool, now: u64) {
        // Only an approximate, advisory signal: no other memory is published with it.
        self.since
            .store(if over { now } else { 0 }, Ordering::Relaxed);
    }

    fn get_at(&self, now: u64) -> bool {
        let since = self.since.load(Ordering::Relaxed);
        since != 0 && now.saturating_sub(since) <= FRESH.as_nanos() as u64
    }
}

/// The process's monotonic clock in nanoseconds, from 1.
fn now() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX - 1) + 1
}

/// A lane on a runtime of its own for tests, shut down when dropped: dropping a runtime where
/// blocking is not allowed (a test's async body failing before its end) would panic, and a
/// panic while panicking aborts the whole test binary.
#[cfg(test)]
pub(crate) struct TestLane {
    runtime: Option<tokio::runtime::Runtime>,
    pub(crate) lane: OverShareLane,
}

#[cfg(test)]
impl TestLane {
    /// The lane's thread name.
    pub(crate) const THREAD: &str = "lane-test";

    pub(crate) fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(Self::THREAD)
            .enable_all()
            .build()
            .expect("a runtime");
        let lane = OverShareLane::new(runtime.handle().clone(), Handle::current());
        TestLane {
            runtime: Some(runtime),
            lane,
        }
    }
}

#[cfg(test)]
impl TestLane {
    /// Shuts the lane's runtime down, as the server's end does.
    pub(crate) fn shut_down(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

#[cfg(test)]
impl Drop for TestLane {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    use tokio::sync::{mpsc, oneshot};

    use super::*;

    fn thread_name() -> Option<String> {
        std::thread::current().name().map(str::to_owned)
    }

    type Asks = mpsc::Sender<oneshot::Sender<Option<String>>>;

    /// A connection that answers each message with the name of the thread that polled it,
    /// and ends when the sender is dropped.
    fn naming_connection() -> (Asks, impl Future<Output = ()> + Send + 'static) {
        let (requests, mut incoming) = mpsc::channel::<oneshot::Sender<Option<String>>>(1);
        let conn = async move {
            while let Some(reply) = incoming.recv().await {
                let _ = reply.send(thread_name());
            }
        };
        (requests, conn)
    }

    /// One message to a [`naming_connection`]: the thread that answered it.
    async fn ask(requests: &Asks) -> Option<String> {
        let (tx, rx) = oneshot::channel();
        requests.send(tx).await.expect("the connection is open");
        tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .expect("answered")
            .expect("an answer")
    }

    /// Serves `fut` as the connection of a tenant always over its share; returns its output.
    async fn on_lane<T: Send + 'static>(
        lane: &OverShareLane,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> T {
        let (tx, rx) = oneshot::channel();
        lane.clone()
            .serve(
                async move {
                    let _ = tx.send(fut.await);
                },
                || true,
            )
            .await;
        rx.await.expect("the connection ended with its output")
    }

    #[tokio::test]
    async fn a_connection_runs_on_the_lanes_threads_only_while_its_tenant_is_over() {
        let test = TestLane::new();
        let name = on_lane(&test.lane, async { thread_name() }).await;
        assert_eq!(name.as_deref(), Some(TestLane::THREAD));
        let (tx, rx) = oneshot::channel();
        test.lane
            .clone()
            .serve(
                async move {
                    let _ = tx.send(thread_name());
                },
                || false,
            )
            .await;
        assert_ne!(rx.await.unwrap().as_deref(), Some(TestLane::THREAD));
    }

    /// A connection moves between two polls, as its tenant's flag says when it wakes, and
    /// takes the wakers of its waits with it: every message reaches it, on whichever side.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connection_follows_its_tenants_flag_and_loses_no_wake_up() {
        let test = TestLane::new();
        let over = Arc::new(AtomicBool::new(false));
        let (requests, conn) = naming_connection();
        let flag = Arc::clone(&over);
        // Whether the connection's latest poll has ended pending: a poll that answers one
        // message and finds the next already sent serves both where it is, so the flag is
        // changed only between polls.
        let parked = Arc::new(AtomicBool::new(false));
        let parks = Arc::clone(&parked);
        let mut conn = Box::pin(conn);
        let conn = std::future::poll_fn(move |cx| {
            parks.store(false, Ordering::SeqCst);
            let polled = conn.as_mut().poll(cx);
            parks.store(polled.is_pending(), Ordering::SeqCst);
            polled
        });
        let served = tokio::spawn(
            test.lane
                .clone()
                .serve(conn, move || flag.load(Ordering::SeqCst)),
        );
        for round in 0..20 {
            let on = round % 3 != 0;
            while !parked.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            over.store(on, Ordering::SeqCst);
            let name = ask(&requests).await;
            assert_eq!(
                name.as_deref() == Some(TestLane::THREAD),
                on,
                "round {round}"
            );
        }
        drop(requests);
        served.await.unwrap();
    }

    /// A connection parked on the lane whose tenant is back within its share is served on
    /// the main runtime at its next wake-up, even while every lane thread is busy: nothing on
    /// the lane has to run first.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wake_up_after_the_flag_lapsed_does_not_wait_for_the_lane() {
        let test = TestLane::new();
        let over = Arc::new(AtomicBool::new(true));
        let (requests, conn) = naming_connection();
        let flag = Arc::clone(&over);
        let served = tokio::spawn(
            test.lane
                .clone()
                .serve(conn, move || flag.load(Ordering::SeqCst)),
        );
        let first = ask(&requests).await;
        assert_eq!(first.as_deref(), Some(TestLane::THREAD));
        // The lane's only thread held until the end of the test.
        let release = Arc::new(AtomicBool::new(false));
        let held = Arc::clone(&release);
        let (busy_tx, busy) = oneshot::channel();
        test.lane.runtime.spawn(async move {
            let _ = busy_tx.send(());
            while !held.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        busy.await.unwrap();
        over.store(false, Ordering::SeqCst);
        let answer = tokio::time::timeout(Duration::from_secs(5), ask(&requests)).await;
        release.store(true, Ordering::SeqCst);
        let name = answer.expect("the wake-up waited for the busy lane");
        assert_ne!(name.as_deref(), Some(TestLane::THREAD));
        drop(requests);
        served.await.unwrap();
    }

    /// Wake-ups that race with the flag flipping (one side polling while the other is woken)
    /// are not lost: every message of a connection whose flag flips under it is answered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connection_whose_flag_flips_under_it_answers_every_message() {
        let test = TestLane::new();
        let over = Arc::new(AtomicBool::new(false));
        let (requests, mut incoming) = mpsc::channel::<oneshot::Sender<()>>(1);
        let flag = Arc::clone(&over);
        let served = tokio::spawn(test.lane.clone().serve(
            async move {
                while let Some(reply) = incoming.recv().await {
                    tokio::task::yield_now().await;
                    let _ = reply.send(());
                }
            },
            move || flag.load(Ordering::SeqCst),
        ));
        let stop = Arc::new(AtomicBool::new(false));
        let flipper = {
            let (over, stop) = (Arc::clone(&over), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    over.fetch_xor(true, Ordering::SeqCst);
                    std::thread::yield_now();
                }
            })
        };
        for i in 0..2_000 {
            let (tx, rx) = oneshot::channel();
            requests.send(tx).await.unwrap();
            tokio::time::timeout(Duration::from_secs(10), rx)
                .await
                .unwrap_or_else(|_| panic!("message {i} was not answered"))
                .unwrap();
        }
        stop.store(true, Ordering::SeqCst);
        flipper.join().unwrap();
        drop(requests);
        served.await.unwrap();
    }

    /// A connection on the lane when the lane's runtime shuts down goes on being served, on
    /// the calling runtime.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connection_outlives_the_lanes_runtime() {
        let mut test = TestLane::new();
        let (requests, conn) = naming_connection();
        let served = tokio::spawn(test.lane.clone().serve(conn, || true));
        assert_eq!(ask(&requests).await.as_deref(), Some(TestLane::THREAD));
        test.shut_down();
        // Every message is answered: by the lane's thread until its runtime has dropped the
        // lane's task (`shutdown_background` does not wait), then on the calling runtime.
        let mut on_main = false;
        for _ in 0..500 {
            if ask(&requests).await.as_deref() != Some(TestLane::THREAD) {
                on_main = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(on_main, "still served on a lane that shut down");
        drop(requests);
        served.await.unwrap();
    }

    #[tokio::test]
    async fn a_panic_on_the_lane_is_the_connections() {
        let test = TestLane::new();
        let lane = test.lane.clone();
        let served = tokio::spawn(async move {
            lane.serve(async { panic!("a bug in a connection") }, || true)
                .await
        });
        let e = served.await.unwrap_err();
        assert!(e.is_panic());
    }

    /// What a request on the lane starts, blocking work or a task it does not wait for, runs
    /// on the main runtime: the lane's threads may be lowered, and a thread they started would
    /// inherit their priority.
    #[tokio::test]
    async fn what_a_request_on_the_lane_starts_runs_on_the_main_runtime() {
        let test = TestLane::new();
        let (on_lane_thread, blocking, spawned, carried) = on_lane(&test.lane, async move {
            let blocking = spawn_blocking(thread_name).await.unwrap();
            let spawned = spawn(async move { thread_name() }).await.unwrap();
            // A keyed write's task, and the blocking wait for durability it may start.
            let carried = crate::timing::spawn_carrying(async move {
                (thread_name(), spawn_blocking(thread_name).await.unwrap())
            })
            .await
            .unwrap();
            (thread_name(), blocking, spawned, carried)
        })
        .await;
        assert_eq!(on_lane_thread.as_deref(), Some(TestLane::THREAD));
        assert_ne!(blocking.as_deref(), Some(TestLane::THREAD));
        assert_ne!(spawned.as_deref(), Some(TestLane::THREAD));
        assert_ne!(carried.0.as_deref(), Some(TestLane::THREAD));
        assert_ne!(carried.1.as_deref(), Some(TestLane::THREAD));
        // Off the lane, as tokio's own.
        let here = spawn_blocking(thread_name).await.unwrap();
        assert_ne!(here.as_deref(), Some(TestLane::THREAD));
    }

    /// A connection dropped while on the lane (the server's shutdown timeout) is dropped there
    /// too.
    #[tokio::test]
    async fn dropping_the_connection_cancels_its_task_on_the_lane() {
        struct Flag(Arc<AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let test = TestLane::new();
        let dropped = Arc::new(AtomicBool::new(false));
        let flag = Flag(Arc::clone(&dropped));
        let (started_tx, started) = oneshot::channel();
        let wait = test.lane.clone().serve(
            async move {
                let _flag = flag;
                let _ = started_tx.send(());
                std::future::pending::<()>().await
            },
            || true,
        );
        let mut wait = Box::pin(wait);
        tokio::select! {
            () = &mut wait => panic!("a pending connection ended"),
            _ = started => {}
        }
        drop(wait);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !dropped.load(Ordering::SeqCst) {
            assert!(
                std::time::Instant::now() < deadline,
                "the task was not cancelled"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[test]
    fn the_flag_follows_the_latest_submission_and_lapses() {
        let flag = OverShare::default();
        assert!(!flag.get());
        flag.set(true);
        assert!(flag.get());
        flag.set(false);
        assert!(!flag.get());
        let fresh = FRESH.as_nanos() as u64;
        flag.set_at(true, 1_000);
        assert!(flag.get_at(1_000 + fresh));
        assert!(!flag.get_at(1_001 + fresh), "no submission for two windows");
        flag.set_at(true, 1_000 + fresh);
        assert!(
            flag.get_at(1_000 + fresh + 1),
            "refreshed by each submission"
        );
    }
}
