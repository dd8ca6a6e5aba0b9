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
//! So a request whose connection last served a tenant that the pool found over its share,
//! with a backlog (`strata_sched::JobHandle::over_share`, the same rule that moves its reads
//! to the background workers), runs as a task on a second runtime, [`OverShareLane`]. The
//! connection itself (reading the request's head and body, writing the answer) stays where it
//! was. The OS then sees two sets of threads: the lane's, busy with the flooding tenant's
//! work, and the main runtime's, mostly asleep, which a light tenant's request wakes and
//! which the OS runs at once because they slept. Both run at the same OS priority: an async
//! thread takes the pool's lock and others, and a lowered one preempted under a lock would
//! hold up every thread that needs it.
//!
//! The flag is per tenant and set at each of its submissions to the pool, so it lags by a
//! request: a tenant's first request after its flood ends may still run on the lane (idle by
//! then), and its submission clears the flag. A tenant alone is never over its share, so a
//! server with one busy tenant serves it on the main runtime as before.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::runtime::Handle;
use tokio::task::JoinHandle;

/// The runtime that serves the requests of tenants over their share. The binary builds it
/// (its threads, their names and their time slices are the binary's to choose) and keeps it
/// alive until the server has stopped.
#[derive(Clone, Debug)]
pub struct OverShareLane {
    runtime: Handle,
}

impl OverShareLane {
    pub fn new(runtime: Handle) -> Self {
        OverShareLane { runtime }
    }

    /// Runs `fut` as a task on the lane. Dropping the returned future aborts the task, as
    /// dropping `fut` itself would have cancelled it (a client gone before its answer).
    pub(crate) fn run<F>(
        &self,
        fut: F,
    ) -> impl Future<Output = Result<F::Output, Cancelled>> + use<F>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let task = AbortOnDrop(self.runtime.spawn(fut));
        async move {
            let mut task = task;
            (&mut task.0).await.map_err(|e| {
                if e.is_panic() {
                    // The router catches a handler's panic; one that escapes it is a bug
                    // and keeps its message in the log.
                    tracing::error!(error = %e, "a request task on the over-share lane panicked");
                }
                Cancelled
            })
        }
    }
}

/// A task on the lane ended without an answer: the lane's runtime is shutting down, or the
/// task panicked outside the router's own panic handling.
#[derive(Debug)]
pub(crate) struct Cancelled;

struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Whether a tenant was over its share at its latest submission to the pool: one per tenant,
/// shared by its metric series (which the pool's submissions reach) and its connections
/// (which decide where a request runs).
#[derive(Debug, Default)]
pub(crate) struct OverShare(AtomicBool);

impl OverShare {
    pub(crate) fn set(&self, over: bool) {
        // Only an approximate, advisory signal: no other memory is published with it.
        if self.0.load(Ordering::Relaxed) != over {
            self.0.store(over, Ordering::Relaxed);
        }
    }

    pub(crate) fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    fn lane_runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("lane-test")
            .enable_all()
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn a_future_runs_on_the_lanes_threads_and_returns_its_output() {
        let rt = lane_runtime();
        let lane = OverShareLane::new(rt.handle().clone());
        let name = lane
            .run(async { std::thread::current().name().map(str::to_owned) })
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("lane-test"));
        rt.shutdown_background();
    }

    /// A request dropped by its connection (the client gone) is cancelled on the lane too.
    #[tokio::test]
    async fn dropping_the_wait_cancels_the_task() {
        struct Flag(Arc<AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let rt = lane_runtime();
        let lane = OverShareLane::new(rt.handle().clone());
        let dropped = Arc::new(AtomicBool::new(false));
        let flag = Flag(Arc::clone(&dropped));
        let (started_tx, started) = tokio::sync::oneshot::channel();
        let wait = lane.run(async move {
            let _flag = flag;
            let _ = started_tx.send(());
            std::future::pending::<()>().await
        });
        let mut wait = Box::pin(wait);
        tokio::select! {
            _ = &mut wait => panic!("a pending task ended"),
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
        rt.shutdown_background();
    }

    #[test]
    fn the_flag_follows_the_latest_submission() {
        let flag = OverShare::default();
        assert!(!flag.get());
        flag.set(true);
        assert!(flag.get());
        flag.set(false);
        assert!(!flag.get());
    }
}
