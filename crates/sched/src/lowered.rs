//! Background computing at the background priority, by threads that also take locks.
//!
//! Work that no request waits for, such as a tenant's graph build, alternates short steps under
//! locks that requests take too (the tenant's index lock, the store) with long stretches of
//! computing on data only it holds (copied vectors inserted into a graph nobody searches yet).
//! The computing is nearly all of its CPU, and at normal priority it took a core from the
//! requests (a write flood's graph builds used one of two cores, docs/benchmarks.md, 6 Dec).
//! The whole task cannot run lowered: a `nice 19` thread preempted while it holds a lock keeps
//! every request that wants the lock waiting (see `executor`), and an unprivileged thread can
//! never raise its priority again for its locked steps. So the task's own thread stays at
//! normal priority for the locked steps and hands each stretch of computing to a short-lived
//! thread at the background priority, waiting for it. A stretch must take no lock a request
//! takes.

use std::sync::Mutex;

use crate::priority::{BackgroundPriority, lower_for_background};

/// Runs `f` on a thread named `name` at `priority` (and the shortest time slice), waiting for
/// it; a panic in `f` is resumed here. At [`BackgroundPriority::Unchanged`] `f` runs on the
/// calling thread, as it does when the OS refuses a thread; where the priority cannot be
/// lowered it runs on the new thread all the same.
///
/// A thread per call costs tens of microseconds: meant for stretches of milliseconds or more.
pub fn run_lowered<T: Send>(
    name: &str,
    priority: BackgroundPriority,
    f: impl FnOnce() -> T + Send,
) -> T {
    if priority == BackgroundPriority::Unchanged {
        return f();
    }
    // Kept here rather than moved into the thread, so that `f` is still at hand if the OS
    // refuses to start one.
    let work = Mutex::new(Some(f));
    let take = || work.lock().unwrap_or_else(|e| e.into_inner()).take();
    std::thread::scope(|scope| {
        let started = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn_scoped(scope, || {
                let _ = lower_for_background(priority);
                take().map(|f| f())
            });
        let ran = match started {
            Ok(thread) => thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            Err(_) => None,
        };
        match ran {
            Some(out) => out,
            None => take()
                .map(|f| f())
                .expect("invariant: `f` ran, here or there"),
        }
    })
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn nice() -> i32 {
        // SAFETY: plain syscall with integer arguments; pid 0 is the calling thread.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
    }

    #[test]
    fn the_work_runs_lowered_on_its_own_thread_and_its_result_comes_back() {
        let (caller, before) = (std::thread::current().id(), nice());
        let mut owned = vec![1, 2, 3];
        let (lowered, thread, name) =
            run_lowered("strata-test-low", BackgroundPriority::Nice19, || {
                // Borrows the caller's data: the caller waits for it.
                owned.push(4);
                let me = std::thread::current();
                (nice(), me.id(), me.name().map(str::to_owned))
            });
        assert_eq!(lowered, 19);
        assert_ne!(thread, caller);
        assert_eq!(name.as_deref(), Some("strata-test-low"));
        assert_eq!(owned, [1, 2, 3, 4]);
        assert_eq!(nice(), before, "the caller keeps its priority");
    }

    #[test]
    fn unchanged_runs_the_work_on_the_caller() {
        let caller = std::thread::current().id();
        let thread = run_lowered("strata-test-low", BackgroundPriority::Unchanged, || {
            std::thread::current().id()
        });
        assert_eq!(thread, caller);
    }

    #[test]
    fn a_panic_in_the_work_reaches_the_caller() {
        let out = std::panic::catch_unwind(|| {
            run_lowered("strata-test-low", BackgroundPriority::Nice19, || -> u8 {
                panic!("boom")
            })
        });
        let panic = out.expect_err("the panic is resumed");
        assert_eq!(panic.downcast_ref::<&str>(), Some(&"boom"));
    }
}
