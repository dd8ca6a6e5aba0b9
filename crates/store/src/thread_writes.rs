//! Threads that must never write to storage: the worker pool's background workers, which run
//! at the lowest OS priority. A storage write there could hold redb's write lock, or lead a
//! group commit, while normal-priority threads keep it off the CPU, and every tenant waiting
//! on that lock would stall behind it (priority inversion). The pool marks those threads when
//! they start; every write path of the store checks the mark.
//!
//! A write on a marked thread is a bug in whoever sent a writing job there: debug builds (every
//! test) panic on it, so the test that exercised it fails; release builds let the write through
//! (it costs other tenants time, not data) and count it ([`writes_on_forbidden_threads`]).

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

thread_local! {
    /// Whether the calling thread must not write to storage.
    static FORBIDDEN: Cell<bool> = const { Cell::new(false) };
}

/// Writes attempted on marked threads since the process started.
static VIOLATIONS: AtomicU64 = AtomicU64::new(0);

/// Marks the calling thread as one that must not write to storage until the guard drops
/// (a background worker holds it for its whole life).
#[must_use = "the thread is marked only while the guard lives"]
pub struct NoWrites {
    before: bool,
    /// Not `Send`: the mark is the creating thread's.
    _thread: std::marker::PhantomData<*const ()>,
}

/// Marks the calling thread as one that must not write to storage (see [`NoWrites`]).
pub fn forbid_writes_on_this_thread() -> NoWrites {
    NoWrites {
        before: FORBIDDEN.replace(true),
        _thread: std::marker::PhantomData,
    }
}

impl Drop for NoWrites {
    fn drop(&mut self) {
        FORBIDDEN.set(self.before);
    }
}

/// Whether the calling thread may write to storage: false on a background worker.
pub fn writes_allowed_here() -> bool {
    !FORBIDDEN.get()
}

/// Storage writes attempted on threads marked by [`forbid_writes_on_this_thread`] since the
/// process started (each one also panics in debug builds).
pub fn writes_on_forbidden_threads() -> u64 {
    VIOLATIONS.load(Ordering::Relaxed)
}

/// Called at the start of every write path of the store.
pub(crate) fn check_write_allowed() {
    if FORBIDDEN.get() {
        VIOLATIONS.fetch_add(1, Ordering::Relaxed);
        if cfg!(debug_assertions) {
            panic!("a storage write on a thread that must not write (a low-priority worker)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marked_thread_writing_is_caught_and_the_mark_ends_with_its_guard() {
        std::thread::spawn(|| {
            assert!(writes_allowed_here());
            let before = writes_on_forbidden_threads();
            check_write_allowed();
            assert_eq!(writes_on_forbidden_threads(), before);
            {
                let _mark = forbid_writes_on_this_thread();
                assert!(!writes_allowed_here());
                let caught = std::panic::catch_unwind(check_write_allowed);
                assert_eq!(caught.is_err(), cfg!(debug_assertions));
                assert!(writes_on_forbidden_threads() > before);
            }
            assert!(writes_allowed_here());
        })
        .join()
        .unwrap();
    }
}
