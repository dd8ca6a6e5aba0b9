//! A short OS time slice for a thread: the async runtime's threads, and the threads that run
//! the pool's background jobs.
//!
//! The server's async threads read requests, answer them and hand engine work to the worker
//! pool; the pool's workers run that work and keep the cores busy under load. Linux's EEVDF
//! scheduler (6.12 and newer) lets a thread ask for its own slice (`sched_attr.sched_runtime`
//! with the normal policy): a short one gives it an earlier virtual deadline, so when a
//! request's bytes arrive its async thread preempts a busy worker within a fraction of a
//! millisecond instead of waiting out the worker's default slice (1.4 ms on 2 cores). That wait
//! was a good part of a light tenant's latency while another tenant flooded the server
//! (docs/benchmarks.md, "Noisy neighbour: a short time slice for the async threads"). It needs
//! no privilege and leaves priorities alone: each thread keeps its fair share of the CPU, only
//! in shorter pieces. Older kernels accept the call and ignore the slice. Only the runtime's
//! worker threads ask for it (when they first go idle, see `main.rs`). The threads they start —
//! the runtime's blocking threads and any thread a request's handler spawns, which run long
//! jobs (data moves, imports, the engine's start-up) — begin at the default slice: the short
//! one is asked with `SCHED_FLAG_RESET_ON_FORK`, so the kernel does not pass it on.
//!
//! The pool's background workers ask for it too (`crate::executor`), for the other end of the
//! same wait: a thread at `nice 19` picked to run keeps the core for its whole slice before a
//! normal thread that wakes meanwhile gets it, and under a tenant's flood of jobs that ran for
//! milliseconds (embedding texts) another tenant's request met such a wait at each of its steps.

/// The slice asked for by default, in microseconds: the shortest the kernel takes.
pub const DEFAULT_SLICE_US: u64 = 100;

/// What the kernel accepts for a custom slice, in microseconds.
pub const SLICE_RANGE_US: std::ops::RangeInclusive<u64> = 100..=100_000;

/// Asks the OS to run the calling thread in slices of `us` microseconds (0: the kernel's
/// default slice again), keeping its policy and nice value as they are (a niced server stays
/// niced, and setting its own nice value again needs no privilege). A custom slice is not
/// inherited: threads the caller starts begin at the kernel's default (the reset-on-fork flag,
/// which also starts them at nice 0 if the server was given a negative nice value). Only the
/// normal and batch policies have a slice of their own; a thread under another policy is left
/// alone and the call says so.
#[cfg(target_os = "linux")]
pub fn set_current_thread_slice(us: u64) -> std::io::Result<()> {
    let mut attr = current_attr()?;
    let policy = attr.policy as libc::c_int;
    if policy != libc::SCHED_OTHER && policy != libc::SCHED_BATCH {
        return Err(std::io::Error::other(format!(
            "the thread runs under scheduling policy {policy}, which has no slice of its own"
        )));
    }
    attr.size = std::mem::size_of::<SchedAttr>() as u32;
    attr.runtime_ns = us.saturating_mul(1000);
    attr.flags = if us > 0 { RESET_ON_FORK } else { 0 };
    // SAFETY: pid 0 is the calling thread; `attr` is a valid `sched_attr` of the size it
    // declares, alive for the call; flags 0. Variadic arguments passed at the kernel's width.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_sched_setattr,
            0 as libc::c_long,
            &attr as *const SchedAttr,
            0 as libc::c_long,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The calling thread's scheduling attributes (`sched_getattr`).
#[cfg(target_os = "linux")]
fn current_attr() -> std::io::Result<SchedAttr> {
    let mut attr = SchedAttr::default();
    let size = std::mem::size_of::<SchedAttr>() as libc::c_long;
    // SAFETY: pid 0 is the calling thread; `attr` is writable for `size` bytes; flags 0.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_sched_getattr,
            0 as libc::c_long,
            &mut attr as *mut SchedAttr,
            size,
            0 as libc::c_long,
        )
    };
    if rc == 0 {
        Ok(attr)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Elsewhere the OS's own slices are kept.
#[cfg(not(target_os = "linux"))]
pub fn set_current_thread_slice(_us: u64) -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "thread time slices are only set on Linux",
    ))
}

/// `SCHED_FLAG_RESET_ON_FORK`: a thread's children start with the default slice (and a
/// non-negative nice value) instead of inheriting its own. libc does not define it.
#[cfg(target_os = "linux")]
const RESET_ON_FORK: u64 = 0x01;

/// The kernel's `struct sched_attr` (its first version, 48 bytes, plus the utilisation
/// clamps of the second, 56): libc does not define it.
#[cfg(target_os = "linux")]
#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime_ns: u64,
    deadline_ns: u64,
    period_ns: u64,
    util_min: u32,
    util_max: u32,
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_thread_asks_for_a_short_slice_and_keeps_its_policy_and_nice_value() {
        std::thread::spawn(|| {
            // A niced thread (raising one's own nice value needs no privilege) stays niced.
            // SAFETY: plain syscalls on the calling thread.
            let nice = (unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) } + 3).min(19);
            assert_eq!(unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) }, 0);
            set_current_thread_slice(DEFAULT_SLICE_US).unwrap();
            let attr = current_attr().unwrap();
            // Kernels before EEVDF's custom slices accept the call and report no slice.
            assert!(
                attr.runtime_ns == DEFAULT_SLICE_US * 1000 || attr.runtime_ns == 0,
                "{}",
                attr.runtime_ns
            );
            assert_eq!(attr.policy as libc::c_int, libc::SCHED_OTHER);
            assert_eq!(attr.nice, nice);
            assert_eq!(unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }, nice);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_thread_goes_back_to_the_default_slice() {
        std::thread::spawn(|| {
            // What the kernel reports for its default slice (0 before EEVDF's custom slices).
            let default = current_attr().unwrap().runtime_ns;
            set_current_thread_slice(DEFAULT_SLICE_US).unwrap();
            set_current_thread_slice(0).unwrap();
            assert_eq!(current_attr().unwrap().runtime_ns, default);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn threads_started_by_a_thread_with_a_short_slice_begin_at_the_default() {
        std::thread::spawn(|| {
            let default = current_attr().unwrap().runtime_ns;
            set_current_thread_slice(DEFAULT_SLICE_US).unwrap();
            let child = std::thread::spawn(|| current_attr().unwrap().runtime_ns)
                .join()
                .unwrap();
            assert_eq!(child, default);
            // The parent keeps its own.
            let own = current_attr().unwrap().runtime_ns;
            assert!(own == DEFAULT_SLICE_US * 1000 || own == 0, "{own}");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_thread_under_another_policy_is_left_alone() {
        std::thread::spawn(|| {
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: pid 0 is the calling thread; `param` is valid for the call.
            assert_eq!(
                unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) },
                0
            );
            assert!(set_current_thread_slice(DEFAULT_SLICE_US).is_err());
            assert_eq!(
                current_attr().unwrap().policy as libc::c_int,
                libc::SCHED_IDLE
            );
        })
        .join()
        .unwrap();
    }

    #[test]
    fn the_struct_has_the_kernels_size() {
        assert_eq!(std::mem::size_of::<SchedAttr>(), 56);
    }
}
