//! Lowering a worker thread's OS priority, once, when it starts: background workers run jobs
//! of tenants over their CPU share, and a normal thread that wakes for another tenant's job
//! should take the core from them at once instead of waiting its turn.
//!
//! Priorities are fixed per thread because an unprivileged thread can lower its priority but
//! never raise it again (that needs `CAP_SYS_NICE`), so jobs move between thread sets rather
//! than threads changing priority.

/// How low a background worker runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackgroundPriority {
    /// Linux `SCHED_IDLE`: runs when nothing else wants the core, and a waking normal thread
    /// preempts it immediately. The strongest hint an unprivileged process can give, but a
    /// job holding a lock others wait for can be held off the CPU indefinitely by them.
    Idle,
    /// Nice 19 (the default): the lowest normal priority; still gets a small slice beside busy
    /// threads, so whatever it holds is released in bounded time.
    #[default]
    Nice19,
    /// Left at the process's priority. The pool then runs no background workers: without a
    /// lower priority they would only be extra threads competing for the cores.
    Unchanged,
}

/// Applies `priority` to the calling thread. Linux only. A failure (also `Unchanged`, and any
/// other platform) is returned for the caller, which then runs no background workers.
#[cfg(target_os = "linux")]
pub(crate) fn lower_current_thread(priority: BackgroundPriority) -> std::io::Result<()> {
    match priority {
        BackgroundPriority::Unchanged => {
            Err(std::io::Error::other("background_priority is unchanged"))
        }
        BackgroundPriority::Idle => {
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: pid 0 is the calling thread; `param` is a valid pointer for the call.
            let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
            if rc == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        }
        BackgroundPriority::Nice19 => {
            // On Linux, setpriority(PRIO_PROCESS, 0, …) applies to the calling thread only.
            // SAFETY: plain syscall with integer arguments.
            let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
            if rc == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        }
    }
}

/// Lowers the calling thread to `priority` and, if that worked, asks for the shortest time
/// slice (`crate::slice`): picked to run, a `nice 19` thread otherwise keeps the core for the
/// kernel's default slice before a normal thread that woke meanwhile gets it. Kernels without
/// custom slices accept and ignore the request; `SCHED_IDLE` has no slice.
pub(crate) fn lower_for_background(priority: BackgroundPriority) -> std::io::Result<()> {
    lower_current_thread(priority)?;
    let _ = crate::slice::set_current_thread_slice(crate::slice::DEFAULT_SLICE_US);
    Ok(())
}

/// Elsewhere thread priorities are left alone, so background workers are not used.
#[cfg(not(target_os = "linux"))]
pub(crate) fn lower_current_thread(_priority: BackgroundPriority) -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "thread priorities are only lowered on Linux",
    ))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_background_thread_really_runs_at_the_lowered_priority() {
        let policy = std::thread::spawn(|| {
            lower_current_thread(BackgroundPriority::Idle).unwrap();
            // SAFETY: pid 0 is the calling thread.
            unsafe { libc::sched_getscheduler(0) }
        })
        .join()
        .unwrap();
        assert_eq!(policy, libc::SCHED_IDLE);
        let nice = std::thread::spawn(|| {
            lower_current_thread(BackgroundPriority::Nice19).unwrap();
            // SAFETY: plain syscall with integer arguments.
            unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
        })
        .join()
        .unwrap();
        assert_eq!(nice, 19);
        // Not lowering is reported as such: the pool then runs no background workers.
        assert!(lower_current_thread(BackgroundPriority::Unchanged).is_err());
        // The test thread itself is untouched.
        // SAFETY: pid 0 is the calling thread.
        assert_eq!(unsafe { libc::sched_getscheduler(0) }, libc::SCHED_OTHER);
    }
}
