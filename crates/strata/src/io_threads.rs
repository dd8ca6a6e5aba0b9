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
//! in shorter pieces. Older kernels accept the call and ignore the slice. Only the runtime's
//! worker threads ask for it (when they first go idle, see `main.rs`). The threads they start —
//! the runtime's blocking threads and any thread a request's handler spawns, which run long
//! jobs (data moves, imports, the engine's start-up) — begin at the default slice: the short
//! one is asked with `SCHED_FLAG_RESET_ON_FORK`, so the kernel does not pass it on.

/// The slice asked for by default, in microseconds: the shortest the kernel takes.
pub const DEFAULT_SLICE_US: u64 = 100;

pub use strata_sched::thread_slice::{SLICE_RANGE_US, set_current_thread_slice};
