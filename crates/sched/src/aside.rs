//! Computing of a tenant over its share, set aside at the background priority.
//!
//! A tenant over its share of the pool has its *reads* run by the background workers, at the
//! lowest OS priority, so another tenant's job takes the core from them at once. Its writes
//! cannot move there: a write holds locks every tenant's writes take (the store's), and a
//! low-priority thread preempted under such a lock holds them all up (see `crate::executor`).
//! Yet most of a vector write's CPU on the pool is not under such a lock: it is the insert
//! of its vector into the tenant's graph, after the commit, under the tenant's own index lock
//! (about 0.3 ms at 384 dimensions, over half of the write's pool time). Run at normal
//! priority, those inserts took the cores from a light tenant's searches while another tenant
//! flooded with writes (docs/benchmarks.md, 6 Dec: the victim's p99 under a flood at ten times
//! its rate 2.4–3.5 ms, alone 1.5).
//!
//! So a job of a foreground worker whose tenant the pool found over its share of the CPU when
//! it popped it (`CpuShares::over_cpu_share`: the background workers' rule without their
//! backlog, since a flood paced below the pool's speed, one write at a time, still keeps most
//! of the cores) may hand a stretch of computing to [`compute_aside`]: a helper thread of
//! that worker's, at the background priority (`nice 19`, never `SCHED_IDLE`), runs it while the job waits in a declared wait (the pool may
//! run another job in the worker's place meanwhile). Its CPU time is charged to the job. Any
//! other caller — a job of a tenant within its share, a background or reserved worker, any
//! thread outside the pool — runs it on its own thread as before, so a server with one busy
//! tenant computes exactly as it did.
//!
//! What may be handed over: computing that takes no lock another tenant's request takes. The
//! helper may be kept off the CPU for as long as normal threads keep the cores busy, and
//! whatever the job holds meanwhile is held that long: the tenant's own index lock is the
//! point (its own requests wait, nobody else's, and engine threads that want that lock wait
//! as long as `nice 19` takes); a lock of the store or of the engine's registries is not
//! allowed. The engine hands over a write's apply to the tenant's loaded indexes
//! (`IndexRegistry::apply_aside`).

use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::mpsc::{Sender, sync_channel};
use std::thread::JoinHandle;

use crate::cpu::{adjust_job_cpu, thread_cpu_ns};
use crate::priority::{BackgroundPriority, lower_for_background};

/// A stretch of computing as the helper runs it.
type Stretch = Box<dyn FnOnce() + Send + 'static>;

/// How a foreground worker starts its helper, when its jobs first need one.
#[derive(Clone, Copy)]
pub(crate) struct HelperSpec {
    pub priority: BackgroundPriority,
    /// Run on the helper after its priority was lowered (the pool's background-thread hook).
    pub on_start: Option<fn()>,
}

/// The priority of the helpers when the background workers run at `background`: never
/// `SCHED_IDLE`, which may keep a thread off the CPU indefinitely, since the job waiting for the
/// helper holds its tenant's index lock, and the engine's own threads (the checkpointer, the
/// graph builder) wait on that lock too; `nice 19` still runs the helper in bounded time.
pub(crate) fn helper_priority(background: BackgroundPriority) -> BackgroundPriority {
    match background {
        BackgroundPriority::Idle | BackgroundPriority::Nice19 => BackgroundPriority::Nice19,
        BackgroundPriority::Unchanged => BackgroundPriority::Unchanged,
    }
}

/// Lowers the calling thread for the requests of tenants over their share (the server's
/// over-share lane of async threads) when the background workers run at `background`: to
/// [`helper_priority`], never `SCHED_IDLE`, since those threads take locks every request takes
/// (the pool's, the metrics'), and a thread held off the CPU indefinitely would hold them all;
/// `nice 19` still runs it in bounded time. Also asks for the shortest time slice. Fails, and
/// changes nothing, at `Unchanged` or where the OS refuses.
pub fn lower_for_over_share(background: BackgroundPriority) -> std::io::Result<()> {
    lower_for_background(helper_priority(background))
}

/// A worker's helper thread, started at its first stretch.
enum Helper {
    NotStarted(HelperSpec, String),
    Running {
        stretches: Option<Sender<Stretch>>,
        thread: Option<JoinHandle<()>>,
    },
    /// Its thread or its priority was refused: stretches run on the worker's own thread.
    Unavailable,
}

impl Helper {
    /// The channel to the running helper, starting it first if it is not yet running.
    fn stretches(&mut self) -> Option<&Sender<Stretch>> {
        if let Helper::NotStarted(spec, name) = self {
            *self = start(*spec, std::mem::take(name));
        }
        match self {
            Helper::Running { stretches, .. } => stretches.as_ref(),
            _ => None,
        }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        if let Helper::Running { stretches, thread } = self {
            // Its channel closed, the helper's loop ends.
            stretches.take();
            if let Some(thread) = thread.take() {
                let _ = thread.join();
            }
        }
    }
}

fn start(spec: HelperSpec, name: String) -> Helper {
    let (stretches, rx) = std::sync::mpsc::channel::<Stretch>();
    let (lowered_tx, lowered_rx) = sync_channel(1);
    let spawned = std::thread::Builder::new().name(name).spawn(move || {
        let lowered = lower_for_background(spec.priority);
        if let (Ok(()), Some(on_start)) = (&lowered, spec.on_start) {
            on_start();
        }
        let ok = lowered.is_ok();
        let _ = lowered_tx.send(ok);
        if ok {
            for stretch in rx {
                stretch();
            }
        }
    });
    let Ok(thread) = spawned else {
        return Helper::Unavailable;
    };
    if lowered_rx.recv() == Ok(true) {
        Helper::Running {
            stretches: Some(stretches),
            thread: Some(thread),
        }
    } else {
        let _ = thread.join();
        Helper::Unavailable
    }
}

thread_local! {
    /// The calling foreground worker's helper (`None` on any other thread).
    static HELPER: RefCell<Option<Helper>> = const { RefCell::new(None) };
    /// The job this thread runs is of a tenant over its share, and may set computing aside.
    static OVER_SHARE: Cell<bool> = const { Cell::new(false) };
}

/// Marks the calling thread as a foreground worker whose over-share jobs set computing aside
/// on a helper named `name`, started as `spec` says at the first need.
pub(crate) fn set_foreground_worker(spec: HelperSpec, name: String) {
    HELPER.with(|h| *h.borrow_mut() = Some(Helper::NotStarted(spec, name)));
}

/// While alive, the job the calling thread runs is of a tenant over its share.
pub(crate) struct OverShareJob(());

impl OverShareJob {
    pub(crate) fn set(over: bool) -> Self {
        OVER_SHARE.set(over);
        OverShareJob(())
    }
}

impl Drop for OverShareJob {
    fn drop(&mut self) {
        OVER_SHARE.set(false);
    }
}

/// Whether [`compute_aside`] would hand computing to a helper: the calling thread is a
/// foreground worker running a job of a tenant over its share. A caller whose computing needs
/// preparing to be handed over (data moved out from under a lock) asks first.
pub fn sets_aside() -> bool {
    OVER_SHARE.get() && HELPER.with(|h| !matches!(*h.borrow(), None | Some(Helper::Unavailable)))
}

/// Runs `f` at the background priority on the calling worker's helper when the job it runs is
/// of a tenant over its share ([`sets_aside`]), waiting for it in a declared wait and charging
/// its CPU time to the job; anywhere else, and when the helper cannot be started, runs `f` here.
/// A panic in `f` is resumed here.
///
/// `f` must take no lock another tenant's request takes (see the module docs).
pub fn compute_aside<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    if !OVER_SHARE.get() {
        return f();
    }
    let (done_tx, done_rx) = sync_channel(1);
    let stretch: Stretch = Box::new(move || {
        let before = thread_cpu_ns();
        let out = catch_unwind(AssertUnwindSafe(f));
        let cpu = before
            .zip(thread_cpu_ns())
            .map(|(b, a)| a.saturating_sub(b));
        let _ = done_tx.send((out, cpu));
    });
    // The stretch back when it could not be handed over: run here, at this thread's priority.
    let here = HELPER.with(|h| {
        let mut helper = h.borrow_mut();
        let Some(stretches) = helper.as_mut().and_then(Helper::stretches) else {
            return Some(stretch);
        };
        let refused = stretches.send(stretch).err()?;
        // The helper's thread ended (never expected: stretches catch their panics).
        *helper = Some(Helper::Unavailable);
        Some(refused.0)
    });
    let ran_here = here.is_some();
    let (out, cpu) = match here {
        Some(stretch) => {
            stretch();
            done_rx.recv()
        }
        None => crate::blocking(|| done_rx.recv()),
    }
    .expect("invariant: a stretch sends its outcome, panic or not");
    // CPU time spent here is the job's already.
    if let Some(ns) = cpu.filter(|_| !ran_here) {
        adjust_job_cpu(i64::try_from(ns).unwrap_or(i64::MAX));
    }
    out.unwrap_or_else(|panic| resume_unwind(panic))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn nice() -> i32 {
        // SAFETY: plain syscall with integer arguments; pid 0 is the calling thread.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
    }

    fn spin_cpu() -> u64 {
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(std::hint::black_box(i));
        }
        x
    }

    fn as_worker() {
        as_worker_at(BackgroundPriority::Nice19);
    }

    fn as_worker_at(priority: BackgroundPriority) {
        set_foreground_worker(
            HelperSpec {
                priority,
                on_start: None,
            },
            "aside-test".into(),
        );
    }

    #[test]
    fn helpers_never_run_at_the_idle_policy() {
        use BackgroundPriority::*;
        assert_eq!(helper_priority(Idle), Nice19);
        assert_eq!(helper_priority(Nice19), Nice19);
        assert_eq!(helper_priority(Unchanged), Unchanged);
    }

    /// A helper whose priority cannot be lowered is never used: the computing runs on the
    /// worker, is charged nothing on top of the worker's own clock, and no further stretch is
    /// offered to it.
    #[test]
    fn without_a_lower_priority_the_worker_computes_and_is_charged_nothing_more() {
        std::thread::spawn(|| {
            as_worker_at(BackgroundPriority::Unchanged);
            let me = std::thread::current().id();
            crate::cpu::take_job_cpu_adjustment();
            let _job = OverShareJob::set(true);
            let (thread, _) = compute_aside(|| (std::thread::current().id(), spin_cpu()));
            assert_eq!(thread, me);
            assert_eq!(crate::cpu::take_job_cpu_adjustment(), 0);
            assert!(!sets_aside(), "the helper is known to be unavailable");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn an_over_share_jobs_computing_runs_lowered_on_the_helper_and_is_charged_to_the_job() {
        std::thread::spawn(|| {
            as_worker();
            let (me, base) = (std::thread::current().id(), nice());
            crate::cpu::take_job_cpu_adjustment();
            let job = OverShareJob::set(true);
            assert!(sets_aside());
            let (thread, name, its_nice, _) = compute_aside(|| {
                let t = std::thread::current();
                (t.id(), t.name().map(str::to_owned), nice(), spin_cpu())
            });
            assert_ne!(thread, me, "ran on the helper");
            assert_eq!(name.as_deref(), Some("aside-test"));
            assert_eq!(its_nice, 19);
            assert_eq!(nice(), base, "the worker keeps its priority");
            let charged = crate::cpu::take_job_cpu_adjustment();
            assert!(charged > 0, "the helper's CPU is the job's: {charged}");
            // A second stretch reuses the same helper.
            let again = compute_aside(|| std::thread::current().id());
            assert_eq!(again, thread);
            drop(job);
            assert!(!sets_aside());
        })
        .join()
        .unwrap();
    }

    #[test]
    fn any_other_job_or_thread_computes_in_place() {
        std::thread::spawn(|| {
            let me = std::thread::current().id();
            // Not a worker: even a job flagged over its share runs here.
            let _job = OverShareJob::set(true);
            assert!(!sets_aside());
            assert_eq!(compute_aside(|| std::thread::current().id()), me);
            drop(_job);
            // A worker's job within its share.
            as_worker();
            let _job = OverShareJob::set(false);
            assert!(!sets_aside());
            assert_eq!(compute_aside(|| std::thread::current().id()), me);
            assert!(
                HELPER.with(|h| matches!(*h.borrow(), Some(Helper::NotStarted(..)))),
                "no helper started for nothing"
            );
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_panic_in_the_helper_reaches_the_job_and_the_helper_serves_on() {
        std::thread::spawn(|| {
            as_worker();
            let _job = OverShareJob::set(true);
            let caught = catch_unwind(|| compute_aside(|| -> u8 { panic!("inside") }));
            let message = caught.expect_err("the panic is resumed in the job");
            assert_eq!(message.downcast_ref::<&str>(), Some(&"inside"));
            assert_eq!(compute_aside(|| 7), 7);
        })
        .join()
        .unwrap();
    }
}
