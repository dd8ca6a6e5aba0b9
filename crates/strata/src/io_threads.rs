//! A short OS time slice for the async runtime's threads.
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
//! in shorter pieces. Older kernels accept the call and ignore the slice. Threads started from
//! an async thread inherit the slice (the evictor, the graph builder); the pool's workers,
//! started by the main thread, keep the default.

/// The slice asked for by default, in microseconds: the shortest the kernel takes.
pub const DEFAULT_SLICE_US: u64 = 100;

/// What the kernel accepts for a custom slice, in microseconds.
pub const SLICE_RANGE_US: std::ops::RangeInclusive<u64> = 100..=100_000;

/// Asks the OS to run the calling thread in slices of `us` microseconds.
#[cfg(target_os = "linux")]
pub fn shorten_current_thread_slice(us: u64) -> std::io::Result<()> {
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy: libc::SCHED_OTHER as u32,
        runtime_ns: us.saturating_mul(1000),
        ..SchedAttr::default()
    };
    // SAFETY: pid 0 is the calling thread; `attr` is a valid `sched_attr` of the size it
    // declares, alive for the call; flags 0.
    let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Elsewhere the OS's own slices are kept.
#[cfg(not(target_os = "linux"))]
pub fn shorten_current_thread_slice(_us: u64) -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "thread time slices are only set on Linux",
    ))
}

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

    /// The slice the kernel holds for the calling thread, read back with `sched_getattr`.
    fn current_slice_ns() -> u64 {
        let mut attr = SchedAttr::default();
        let size = std::mem::size_of::<SchedAttr>() as u32;
        // SAFETY: pid 0 is the calling thread; `attr` is writable for `size` bytes.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_sched_getattr,
                0,
                &mut attr as *mut SchedAttr,
                size,
                0,
            )
        };
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        attr.runtime_ns
    }

    #[test]
    fn a_thread_asks_for_a_short_slice_and_keeps_the_normal_policy() {
        std::thread::spawn(|| {
            shorten_current_thread_slice(DEFAULT_SLICE_US).unwrap();
            // Kernels before EEVDF's custom slices accept the call and report no slice.
            let slice = current_slice_ns();
            assert!(slice == DEFAULT_SLICE_US * 1000 || slice == 0, "{slice}");
            // SAFETY: plain syscall on the calling thread.
            let policy = unsafe { libc::sched_getscheduler(0) };
            assert_eq!(policy, libc::SCHED_OTHER);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn the_struct_has_the_kernels_size() {
        assert_eq!(std::mem::size_of::<SchedAttr>(), 56);
    }
}
