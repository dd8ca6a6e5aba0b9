//! The calling thread's CPU time: what the pool charges a job, so that time a job spends
//! blocked (on an fsync, a lock) is not billed as if it had used a core.

use std::cell::Cell;

thread_local! {
    /// CPU time, in nanoseconds, to add to (or take from) the measured cost of the job this
    /// thread runs: work this thread did for another job, or another thread did for this one.
    static ADJUSTMENT: Cell<i64> = const { Cell::new(0) };
}

/// Moves `ns` nanoseconds of CPU time into (positive) or out of (negative) the cost charged to
/// the job the calling thread runs. For work done on one thread on behalf of a job running on
/// another: the storage layer's batched writes, where one caller's thread applies the writes
/// of many, move each write's CPU time from the thread that applied it to its own caller's.
pub fn adjust_job_cpu(ns: i64) {
    ADJUSTMENT.set(ADJUSTMENT.get().saturating_add(ns));
}

/// The calling thread's adjustment so far (see [`adjust_job_cpu`]), left in place for the pool
/// to take: what a job's own measurement of its CPU adds to the thread's clock.
pub fn job_cpu_adjustment() -> i64 {
    ADJUSTMENT.get()
}

/// Returns the calling thread's adjustment (see [`adjust_job_cpu`]) and resets it.
pub fn take_job_cpu_adjustment() -> i64 {
    ADJUSTMENT.replace(0)
}

/// Nanoseconds of CPU the calling thread has used, where the platform tells.
#[cfg(unix)]
pub fn thread_cpu_ns() -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, exclusive out-pointer for the duration of the call, which
    // writes only through it.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return None;
    }
    Some(u64::try_from(ts.tv_sec).ok()? * 1_000_000_000 + u64::try_from(ts.tv_nsec).ok()?)
}

/// Elsewhere the pool falls back to wall-clock time.
#[cfg(not(unix))]
pub fn thread_cpu_ns() -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_grows_with_work_but_not_with_sleep() {
        let Some(t0) = thread_cpu_ns() else { return };
        std::thread::sleep(std::time::Duration::from_millis(30));
        let t1 = thread_cpu_ns().unwrap();
        // Spin until the clock shows 20 ms of CPU; on a loaded machine that takes longer in
        // wall time, but it must come.
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while thread_cpu_ns().unwrap() - t1 < 20_000_000 {
            assert!(start.elapsed().as_secs() < 20, "CPU time does not advance");
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(1));
        }
        assert!(t1 - t0 < 10_000_000, "sleeping cost {} ns", t1 - t0);
    }
}
