//! A bounded pool of OS threads running blocking jobs from many tenants, dispatched by
//! [`FairQueue`] (weighted start-time fair queueing, charged by each job's measured CPU time)
//! so one tenant's flood, or its costlier requests, cannot starve others.
//!
//! Jobs are closures; the caller awaits the result through a tokio oneshot ([`JobHandle`]),
//! so async request handlers never block a runtime thread on search or indexing work. Workers
//! share one mutex-protected queue: a dispatch is a heap pop of a few hundred nanoseconds,
//! small against the millisecond-scale jobs this pool exists for, and a single queue is what
//! makes the global fair order possible.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::aside::{self, HelperSpec};
use crate::blocking::{Pool, set_worker};
use crate::cpu::{take_job_cpu_adjustment, thread_cpu_ns};
use crate::error::SchedError;
use crate::executor::{Deliver, Executor, Work};
use crate::fair_queue::{Charge, Discipline, FairQueue, Lane, QueueFull};
use crate::idle_poll::{IdlePoll, PollState};
use crate::long_jobs::{self, LongJobs, Watch};
use crate::priority::BackgroundPriority;
use crate::shares::{CpuShares, Placement, SHARE_WINDOW, Standing};

/// A type-erased job (runs the caller's closure and delivers its result), and whether a
/// background worker may run it.
struct Job {
    run: Work,
    demotable: bool,
    /// [`Demotable::ReadOnly`]: while the pool drains, the background workers take only
    /// these (a [`Demotable::WritesInForeground`] job would need a job after it to write).
    read_only: bool,
}

/// Whether a job may run on a background worker when its tenant is over its CPU share.
/// Chosen by the submitter, which knows what the job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Demotable {
    /// Never (the default): the job may write. A write on a low-priority thread could hold
    /// the storage write lock, or lead a group commit, while normal threads keep it off the
    /// CPU, and every tenant waiting on that lock would stall behind it.
    #[default]
    Never,
    /// The job only reads (a search, get, scan, count, recall): it holds nothing other
    /// tenants wait for, so it may be slowed down.
    ReadOnly,
    /// The job writes only where [`crate::on_background_worker`] is false, and hands what it
    /// would write to a [`Demotable::Never`] job of its own otherwise: placed like
    /// [`Demotable::ReadOnly`], so a flooding tenant's checks, parses and embeddings before
    /// its writes run at low priority while its writes stay on normal threads.
    WritesInForeground,
}

impl Demotable {
    /// Whether a job of this kind may run on a background worker.
    fn may_demote(self) -> bool {
        match self {
            Demotable::Never => false,
            Demotable::ReadOnly | Demotable::WritesInForeground => true,
        }
    }
}

/// Pool size, queue bounds and ordering.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Shared worker threads (at least 1): they run every tenant's jobs in the fair order.
    pub workers: usize,
    /// Reserved worker threads, on top of `workers`: they run only jobs submitted in
    /// [`Lane::Reserved`], so those tenants' latency does not depend on how busy the shared
    /// workers are. They idle (no CPU) while no such job waits. 0 disables the lane: its jobs
    /// then run on the shared workers like any other.
    pub reserved_workers: usize,
    /// Background worker threads, on top of `workers`, at the lowest OS priority
    /// (`background_priority`). While they exist, the read-only jobs of a tenant with more
    /// jobs pending than `workers` that used more than its fair share of the pool's recent CPU
    /// (see [`crate::shares`]) run only on them, and the `workers` run only the others': a
    /// light tenant's job then preempts a flooding tenant's at the OS level instead of waiting
    /// in the run queue behind it. A tenant busy alone is within its share and keeps the
    /// normal workers, and so does one without such a backlog. 0 disables the split, and so does a
    /// priority that could not be lowered ([`FairScheduler::priority_error`] says why).
    pub background_workers: usize,
    /// How low background workers run.
    pub background_priority: BackgroundPriority,
    /// Run once by each background worker when it starts, after its priority was lowered:
    /// the caller marks the thread for its own rules (the server marks it as one that must
    /// never write to storage, so a job that would is caught in tests).
    pub background_thread_start: Option<fn()>,
    /// Jobs queued (not yet running) across all tenants before `Overloaded`.
    pub max_queue: usize,
    /// Jobs queued for one tenant before `TenantQueueFull`.
    pub max_queue_per_tenant: usize,
    /// Fair (production) or FIFO (baseline for benchmarks).
    pub discipline: Discipline,
    /// Start with dispatch paused until [`FairScheduler::resume`]: lets tests queue a whole
    /// submission sequence and then observe the order it is dispatched in.
    pub start_paused: bool,
    /// Worker thread name (shown by debuggers and `top -H`).
    pub thread_name: String,
    /// What a job is charged against its tenant's share.
    pub charging: Charging,
    /// A job running longer than this while another tenant's job waits for its kind of thread
    /// gives up its place to a spare thread ([`crate::long_jobs`]); zero turns it off.
    pub long_job_after: Duration,
    /// How long a worker that finished a job watches the queue before it sleeps, so that a
    /// job queued meanwhile starts without waking a thread ([`crate::idle_poll`]); zero turns
    /// it off. At most one worker polls at a time.
    pub idle_poll: Duration,
    /// Poll after every job even while polls keep finding nothing (by default they then
    /// become rare): a poll keeps its core out of the idle state, which on a virtual machine
    /// makes a client slower than the window faster, for up to the window of CPU per job.
    pub idle_poll_always: bool,
    /// While background workers exist: a normal worker running a job of a tenant over its
    /// share of the CPU ([`CpuShares::over_cpu_share`]) hands the stretches of computing the job
    /// sets aside ([`crate::compute_aside`]) to a helper thread at `background_priority` (`nice
    /// 19` where that is `SCHED_IDLE`), so that such a tenant's writes compute their index work
    /// at about the priority its reads run at. Off: they compute on the worker.
    pub compute_aside: bool,
}

/// The default [`SchedulerConfig::long_job_after`]: well above a typical search (under 1 ms)
/// and a short embedding, so only the jobs that would make others wait for tens of
/// milliseconds give way, and short enough that a waiting tenant's latency stays near it.
pub const DEFAULT_LONG_JOB_AFTER: Duration = Duration::from_millis(10);

/// What a job is charged against its tenant's share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Charging {
    /// The CPU time the worker thread spent on it (production): a tenant whose requests cost
    /// 10× more gets a tenth as many of them through, not 10× the CPU.
    #[default]
    CpuTime,
    /// One unit per job whatever it cost: dispatch order is then a pure function of the
    /// submission sequence, which tests of the order rely on.
    PerJob,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            workers: std::thread::available_parallelism().map_or(2, usize::from),
            reserved_workers: 0,
            background_workers: 0,
            background_priority: BackgroundPriority::Nice19,
            background_thread_start: None,
            max_queue: 10_000,
            max_queue_per_tenant: 1_000,
            discipline: Discipline::Fair,
            start_paused: false,
            thread_name: "strata-sched".to_owned(),
            charging: Charging::CpuTime,
            long_job_after: DEFAULT_LONG_JOB_AFTER,
            idle_poll: crate::idle_poll::default_idle_poll(),
            idle_poll_always: false,
            compute_aside: true,
        }
    }
}

/// Queue and lifecycle flags, under one mutex.
struct State<K> {
    queue: FairQueue<K, Job>,
    charging: Charging,
    accepting: bool,
    paused: bool,
    live_workers: usize,
    /// Threads of each kind (indexed by `Kind as usize`): how many there are, and how many may
    /// run jobs at once (see `crate::blocking`).
    lanes: [Threads; 3],
    /// Times a shared worker found jobs queued and none it may run ([`FairScheduler::idle_looks`]).
    idle_looks: u64,
    /// Whether reserved workers exist (else the reserved lane is the shared one).
    has_reserved: bool,
    /// Recent CPU per tenant, when background workers exist: where each job should run.
    shares: Option<Shares<K>>,
    /// Running jobs, for the watchdog that lets long ones give way (`crate::long_jobs`).
    long_jobs: LongJobs<K>,
    /// Threads each tenant's jobs hold, by kind (indexed by `Kind as usize`): running, waiting
    /// or long. A tenant holds at most [`tenant_threads`] of a kind (see [`thread_cap`]);
    /// entries leave at zero, so the maps hold only tenants with a job started.
    held: [HashMap<K, usize>; 3],
    /// The worker watching the queue before it sleeps, if one is (`crate::idle_poll`).
    poll: PollState,
}

/// Threads a kind of `size` may have, spares included. Spares start when jobs wait
/// (`crate::blocking`) or run long (`crate::long_jobs`), and one tenant's jobs may hold at most
/// [`tenant_threads`] of them: the last `size` are for the other tenants. Without that share
/// left, a tenant whose writes queued on one of its own locks (its write order while a write
/// applied to a graph being built, 70–120 ms on 384-dimensional vectors) had every thread asleep
/// in its jobs, and another tenant's 0.5 ms search waited as long (docs/benchmarks.md, 6 Dec).
fn thread_cap(size: usize) -> usize {
    3 * size
}

/// Threads of a kind of `size` one tenant's jobs may hold at once: twice the size, as many as
/// the whole kind could have before others' share was kept (a tenant writing alone keeps
/// every thread it had for its writes to share a commit).
fn tenant_threads(size: usize) -> usize {
    2 * size
}

/// One kind of worker thread's counts.
#[derive(Debug, Clone, Copy, Default)]
struct Threads {
    /// Configured threads: at most this many run a job outside a declared wait.
    size: usize,
    /// Threads alive, spares included (at most [`thread_cap`]).
    threads: usize,
    /// Running a job, not in a declared wait.
    running: usize,
    /// Running a job, in a declared wait.
    waiting: usize,
    /// Running a job that ran long and gave up its place (`crate::long_jobs`), not in a wait.
    long: usize,
    /// Of `running`, the jobs that started in a place a long job gave up (closed to that
    /// job's tenant): the others fill the normal places, `size - long` of them.
    given: usize,
}

impl Threads {
    /// Threads asleep (waiting for work or for a free place).
    fn asleep(&self) -> usize {
        self.threads - self.running - self.waiting - self.long
    }

    /// Whether every normal place is taken, so a free place is one a long job gave up: not
    /// for the tenant of a long job of this kind (`crate::long_jobs`).
    fn only_given_free(&self) -> bool {
        self.running - self.given + self.long >= self.size
    }

    /// Places free: `size` less the jobs running outside a wait that kept their place (those
    /// in given places included; a long job's place is the given one).
    fn free(&self) -> usize {
        self.size.saturating_sub(self.running)
    }
}

/// Where a job of a kind stands in its kind's counts ([`Threads`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Not a running job: before it starts, after it ends.
    Out,
    /// Running outside a wait, in a place a long job gave up if `given`.
    Running { given: bool },
    /// In a declared wait.
    Waiting,
    /// Ran long and gave up its place, not in a wait.
    Long,
}

/// A job of `kind` moves between slots: the one place the counts of [`Threads`] change, so
/// they cannot drift from the jobs really running. Its long-job record (if tracked) must say
/// the same already; a debug build checks that they match after every move. When a long job
/// stops counting as one (it ends or begins a wait), the place it gave is no longer there: a
/// job that started in it fills a normal place now, so `given` never exceeds `long`.
fn move_job<K: Eq + Clone>(state: &mut State<K>, kind: Kind, from: Slot, to: Slot) {
    let lane = &mut state.lanes[kind as usize];
    for (slot, add) in [(from, false), (to, true)] {
        let (count, given) = match slot {
            Slot::Out => continue,
            Slot::Running { given } => (&mut lane.running, given),
            Slot::Waiting => (&mut lane.waiting, false),
            Slot::Long => (&mut lane.long, false),
        };
        if add {
            *count += 1;
            lane.given += usize::from(given);
        } else {
            *count -= 1;
            lane.given -= usize::from(given);
        }
    }
    while lane.given > lane.long && state.long_jobs.ungive(kind) {
        lane.given -= 1;
    }
    debug_assert_counts(state, kind);
}

/// Debug builds: the counts of `kind` are what the long-job records say (all of them when
/// tracked; with tracking off nothing is long nor given), and `given <= long`.
fn debug_assert_counts<K: Eq + Clone>(state: &State<K>, kind: Kind) {
    if cfg!(debug_assertions) {
        let lane = state.lanes[kind as usize];
        let counted = [lane.running, lane.waiting, lane.long, lane.given];
        if state.long_jobs.on() {
            assert_eq!(
                counted,
                state.long_jobs.counts(kind),
                "{kind:?} counts drifted"
            );
        } else {
            assert_eq!(
                (lane.long, lane.given),
                (0, 0),
                "{kind:?}: long jobs are off"
            );
        }
        assert!(lane.given <= lane.long, "{kind:?}: {lane:?}");
    }
}

/// The CPU shares and when their window last turned.
struct Shares<K> {
    usage: CpuShares<K>,
    rotated: Instant,
    /// Jobs running on shared workers, by a number the worker holds: charged as they run, so
    /// a tenant whose jobs each take longer than the windows is not invisible until they end.
    /// Empty under `Charging::PerJob`, whose charges must not depend on timing.
    running: HashMap<u64, Running<K>>,
    next_running: u64,
    charge_running: bool,
}

/// A running job's tenant, and how much of its wall time was charged up to when.
struct Running<K> {
    key: K,
    since: Instant,
    charged_ns: u64,
}

impl<K: Hash + Eq + Clone> Shares<K> {
    fn new(charging: Charging, workers: usize) -> Self {
        Self {
            usage: CpuShares::new(u32::try_from(workers).unwrap_or(u32::MAX)),
            rotated: Instant::now(),
            running: HashMap::new(),
            next_running: 0,
            charge_running: charging == Charging::CpuTime,
        }
    }

    /// Turns the window if it is due (twice or more forgets everything older), then charges
    /// the running jobs' wall time since the last tick to the current window: a job's CPU
    /// time can only be read by its own thread, and wall time is at least that.
    fn tick(&mut self, now: Instant) {
        let mut turns = 0;
        while now.saturating_duration_since(self.rotated) >= SHARE_WINDOW && turns < 2 {
            self.usage.rotate();
            self.rotated += SHARE_WINDOW;
            turns += 1;
        }
        if now.saturating_duration_since(self.rotated) >= SHARE_WINDOW {
            self.rotated = now;
        }
        for job in self.running.values_mut() {
            let ns = u64::try_from(now.saturating_duration_since(job.since).as_nanos())
                .unwrap_or(u64::MAX);
            self.usage.charge(&job.key, ns);
            job.charged_ns = job.charged_ns.saturating_add(ns);
            job.since = now;
        }
    }

    /// A shared worker starts a job of `key`: the number to pass to [`Shares::ended`].
    fn started(&mut self, key: &K, now: Instant) -> Option<u64> {
        if !self.charge_running {
            return None;
        }
        let id = self.next_running;
        self.next_running += 1;
        let job = Running {
            key: key.clone(),
            since: now,
            charged_ns: 0,
        };
        self.running.insert(id, job);
        Some(id)
    }

    /// The job `id` ended after using `cpu_ns`: its tenant is charged what the ticks did not
    /// charge already.
    fn ended(&mut self, key: &K, id: Option<u64>, cpu_ns: u64) {
        let charged = id
            .and_then(|id| self.running.remove(&id))
            .map_or(0, |job| job.charged_ns);
        self.usage.finished(key, cpu_ns.saturating_sub(charged));
    }
}

/// Jobs that ran long and gave up their place, by the kind of thread they ran on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LongJobSpares {
    /// On the shared, normal-priority workers.
    pub shared: u64,
    /// On the background workers.
    pub background: u64,
    /// On the reserved lane's workers.
    pub reserved: u64,
}

/// The kind of a worker thread: which jobs it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Shared, normal priority: the fair order (only tenants within their share while
    /// background workers exist).
    Foreground,
    /// Shared, lowest priority: the fair order among tenants over their share.
    Background,
    /// Reserved-lane jobs only, normal priority.
    Reserved,
}

/// What the workers and the handle share.
struct Shared<K> {
    state: Mutex<State<K>>,
    /// Signalled when a job is queued, dispatch resumes, or shutdown begins.
    work: Condvar,
    /// The same for reserved workers, when a job is queued in the reserved lane.
    reserved_work: Condvar,
    /// The same for background workers, when a job over its tenant's share is queued.
    background_work: Condvar,
    /// Signalled when a worker exits.
    exited: Condvar,
    /// Wakes the long-job watchdog: a job may have to be timed, or shutdown began.
    watch: Condvar,
    /// Every thread started, joined at shutdown (spares are started by workers).
    handles: Mutex<Vec<JoinHandle<()>>>,
    /// How to start a spare thread.
    thread_name: String,
    background_priority: BackgroundPriority,
    background_thread_start: Option<fn()>,
    /// Normal workers set an over-share tenant's computing aside (`crate::aside`).
    compute_aside: bool,
    spares_started: std::sync::atomic::AtomicUsize,
    idle_poll: IdlePoll,
}

impl<K> Shared<K> {
    /// Locks the state. Jobs never run under this lock and the queue code does not panic on
    /// valid input, so a poisoned lock still guards consistent data and is recovered.
    fn lock(&self) -> MutexGuard<'_, State<K>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn signal(&self, kind: Kind) -> &Condvar {
        match kind {
            Kind::Foreground => &self.work,
            Kind::Background => &self.background_work,
            Kind::Reserved => &self.reserved_work,
        }
    }

    /// Wakes a thread of `kind` for a place freed or a turn passed on: one asleep, or the
    /// poller (`crate::idle_poll`), which is not on the condition variable. A poller of
    /// another kind ends its poll for nothing, on these rare paths only.
    fn wake_one(&self, kind: Kind) {
        self.idle_poll.nudge();
        self.signal(kind).notify_one();
    }

    fn lock_handles(&self) -> MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.handles.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A job of `kind` gave up its place (a declared wait, or a job that ran long): whether a
/// spare must start to take it, counted already. A thread asleep takes the freed place when
/// woken; with none, a spare is started (it stays for later ones), unless the kind has all the
/// threads it may have. `filled` places of the kind were freed just before in the same turn
/// of the lock, each handed to a thread asleep (or a spare) that does not run yet: those
/// threads are not there for this place.
fn place_freed<K>(state: &mut State<K>, kind: Kind, filled: usize) -> bool {
    let accepting = state.accepting;
    let lane = &mut state.lanes[kind as usize];
    let spare = lane.asleep() <= filled && lane.threads < thread_cap(lane.size) && accepting;
    if spare {
        lane.threads += 1;
        state.live_workers += 1;
    }
    spare
}

impl<K: Hash + Eq + Clone + Send + 'static> Shared<K> {
    /// After [`place_freed`]: wakes a thread of `kind` or starts the spare.
    fn fill_place(self: &Arc<Self>, kind: Kind, spare: bool) {
        if !spare {
            self.wake_one(kind);
            return;
        }
        let n = self
            .spares_started
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("{}-s{n}", self.thread_name);
        if start_thread(self, kind, name, None).is_err() {
            // The OS refused a thread: the job goes on without a spare, as before there were.
            let mut state = self.lock();
            state.lanes[kind as usize].threads -= 1;
            state.live_workers -= 1;
            // A shutdown may be waiting for the live count to reach zero.
            self.exited.notify_all();
        }
    }
}

impl<K: Hash + Eq + Clone + Send + 'static> Pool for Shared<K> {
    fn wait_begins(self: Arc<Self>, kind: Kind) {
        let spare = {
            let mut state = self.lock();
            // A job that ran long gave its place already: its wait frees nothing more.
            let place = state
                .long_jobs
                .set_waiting(long_jobs::current(), true, Instant::now());
            if place.long {
                move_job(&mut state, kind, Slot::Long, Slot::Waiting);
                return;
            }
            let from = Slot::Running { given: place.given };
            move_job(&mut state, kind, from, Slot::Waiting);
            place_freed(&mut state, kind, 0)
        };
        self.fill_place(kind, spare);
    }

    fn wait_ends(&self, kind: Kind) {
        let mut state = self.lock();
        let id = long_jobs::current();
        let place = state.long_jobs.set_waiting(id, false, Instant::now());
        let to = if place.long {
            Slot::Long
        } else {
            Slot::Running { given: place.given }
        };
        move_job(&mut state, kind, Slot::Waiting, to);
        // It runs again: it may run long while others wait, and sooner than the watchdog's
        // deadline (it had run before its wait); and it takes a place back, which a stalled
        // job may now have to give.
        let due = state.long_jobs.due(id);
        let wake_watchdog = due.is_some() && !state.queue.is_empty() && state.long_jobs.wake(due);
        drop(state);
        if wake_watchdog {
            self.watch.notify_one();
        }
    }
}

/// The watchdog of long jobs (see `crate::long_jobs`): sleeps until the earliest moment a
/// running job can pass the threshold while jobs are queued, then lets each job past it give
/// up its place while more queued jobs could take a place of its kind than there are places
/// free. Exits when shutdown begins (no spare starts after that anyway).
fn watchdog<K: Hash + Eq + Clone + Send + 'static>(shared: &Arc<Shared<K>>) {
    let mut state = shared.lock();
    loop {
        if !state.accepting {
            return;
        }
        let now = Instant::now();
        let mut fills: Vec<(Kind, bool)> = Vec::new();
        let mut stalled = false;
        let next = if state.paused || state.queue.is_empty() {
            None
        } else {
            let (past, next) = state.long_jobs.past(now);
            for (id, kind, key) in past {
                // Places free already (freed in this turn, or earlier and not yet taken) go
                // to queued jobs first: giving one more is worth it only for a job left over.
                let free = state.lanes[kind as usize].free();
                if takers(&state, kind, Some(&key), true, free) <= free {
                    stalled = true;
                    continue;
                }
                let place = state.long_jobs.give_way(id);
                move_job(
                    &mut state,
                    kind,
                    Slot::Running { given: place.given },
                    Slot::Long,
                );
                let filled = fills.iter().filter(|(k, _)| *k == kind).count();
                fills.push((kind, place_freed(&mut state, kind, filled)));
            }
            next
        };
        state.long_jobs.stalled = stalled;
        if !fills.is_empty() {
            state.long_jobs.watch = Watch::Awake;
            drop(state);
            for (kind, spare) in fills {
                shared.fill_place(kind, spare);
            }
            state = shared.lock();
            continue;
        }
        state.long_jobs.watch = next.map_or(Watch::Parked, Watch::Until);
        state = match next {
            None => shared.watch.wait(state).unwrap_or_else(|p| p.into_inner()),
            Some(at) => {
                shared
                    .watch
                    .wait_timeout(state, at.saturating_duration_since(now))
                    .unwrap_or_else(|p| p.into_inner())
                    .0
            }
        };
        // Woken or timed out: it looks at everything again before it sleeps.
        state.long_jobs.watch = Watch::Awake;
    }
}

/// Queued jobs a thread of `kind` could run in a free place of its kind, counted up to just
/// past `limit` (see [`FairQueue::queued_where`]): jobs of its lane, in the set of shared
/// workers their tenant's placement sends them to, not of `except`'s tenant and, when
/// `given_place`, not of a tenant with a long job of that kind (the place a long job gave up
/// is closed to them). So a reserved worker's long job gives way for the reserved lane's
/// jobs only, and with background workers the foreground and background ones for their own
/// tenants. By the rule [`pop`] takes them by ([`takes`]), so a worker woken for a count
/// above 0 finds one.
fn takers<K: Hash + Eq + Clone>(
    state: &State<K>,
    kind: Kind,
    except: Option<&K>,
    given_place: bool,
    limit: usize,
) -> usize {
    let State {
        queue,
        long_jobs,
        shares,
        accepting,
        lanes,
        held,
        ..
    } = state;
    let usage = shares.as_ref().map(|s| &s.usage);
    let holds = Holds::of(held, lanes, kind);
    let may = takes(kind, given_place, *accepting, usage, long_jobs, holds);
    queue.queued_where(except, lane_of(kind), limit, may)
}

/// The lane a `kind` of worker takes its jobs from.
fn lane_of(kind: Kind) -> Lane {
    match kind {
        Kind::Reserved => Lane::Reserved,
        Kind::Foreground | Kind::Background => Lane::Shared,
    }
}

/// Threads of a kind each tenant's jobs hold, and the most one may (see [`thread_cap`]).
#[derive(Clone, Copy)]
struct Holds<'a, K> {
    held: &'a HashMap<K, usize>,
    most: usize,
}

impl<'a, K: Hash + Eq> Holds<'a, K> {
    /// The holds of `kind` (from [`State::held`] and [`State::lanes`], passed apart so that a
    /// caller may hold the queue mutably meanwhile).
    fn of(held: &'a [HashMap<K, usize>; 3], lanes: &[Threads; 3], kind: Kind) -> Self {
        Holds {
            held: &held[kind as usize],
            most: tenant_threads(lanes[kind as usize].size),
        }
    }

    /// Whether `key`'s jobs may take one more thread of the kind.
    fn room(&self, key: &K) -> bool {
        self.held.get(key).is_none_or(|&n| n < self.most)
    }
}

/// Which queued jobs a `kind` of worker may run, the one rule of [`pop`] and [`takers`]: none
/// of a tenant whose jobs hold as many threads of the kind as one may (`holds`); in a
/// place a long job `given` up, none of that job's tenant; while the split is on (`shares`,
/// and `accepting`), the read-only jobs of a tenant placed in the background are the
/// background workers' and the rest the normal workers'; without it everything is the normal
/// workers', and background workers (turned off) take nothing; while draining (not
/// accepting), placements no longer count and background workers still take only read-only
/// jobs ([`Demotable::ReadOnly`]: a job that writes in the foreground would need another job,
/// which a draining pool no longer accepts).
fn takes<'a, K: Hash + Eq + Clone>(
    kind: Kind,
    given: bool,
    accepting: bool,
    shares: Option<&'a CpuShares<K>>,
    long_jobs: &'a LongJobs<K>,
    holds: Holds<'a, K>,
) -> impl Fn(&K, &Job) -> bool + 'a {
    let split = shares.filter(|_| accepting);
    let turned_off = kind == Kind::Background && shares.is_none();
    move |key, job| {
        let open = holds.room(key) && (!given || !long_jobs.is_long(kind, key));
        let background =
            || job.demotable && split.is_none_or(|s| s.placement(key) == Placement::Background);
        open && match kind {
            Kind::Reserved => true,
            Kind::Foreground => split.is_none() || !background(),
            Kind::Background => !turned_off && background() && (split.is_some() || job.read_only),
        }
    }
}

/// Starts a worker thread of `kind` for `shared`, counted already in its state. A background
/// worker starts its low-priority thread first (`crate::executor`: the worker's own thread
/// keeps normal priority for the pool's lock) and reports how lowering its priority went on
/// `lowered` (the first ones, whose failure turns the split off); a spare whose priority could
/// not be lowered exits.
fn start_thread<K: Hash + Eq + Clone + Send + 'static>(
    shared: &Arc<Shared<K>>,
    kind: Kind,
    name: String,
    lowered: Option<std::sync::mpsc::Sender<std::io::Result<()>>>,
) -> std::io::Result<()> {
    let thread_shared = Arc::clone(shared);
    // Held until the handle is in the list: the thread, counted live already, may run and
    // exit at once (a spare finding its job taken), and shutdown takes the list only once
    // every live thread exited, so it must find this one's handle there to join it.
    let mut handles = shared.lock_handles();
    let low_name = format!("{name}-low");
    let handle = std::thread::Builder::new().name(name).spawn(move || {
        let shared = thread_shared;
        let mut executor = None;
        if kind == Kind::Background {
            let started = Executor::start(
                low_name,
                shared.background_priority,
                shared.background_thread_start,
            );
            let result = match started {
                Ok((started, lowered)) => {
                    executor = Some(started);
                    lowered
                }
                Err(e) => Err(e),
            };
            let failed = result.is_err();
            match lowered {
                Some(tx) => {
                    let _ = tx.send(result);
                }
                None if failed => {
                    let mut state = shared.lock();
                    state.lanes[kind as usize].threads -= 1;
                    state.live_workers -= 1;
                    drop(state);
                    shared.exited.notify_all();
                    return;
                }
                None => {}
            }
        }
        set_worker(Arc::clone(&shared) as Arc<dyn Pool>, kind);
        if kind == Kind::Foreground && shared.compute_aside {
            let spec = HelperSpec {
                priority: aside::helper_priority(shared.background_priority),
                on_start: shared.background_thread_start,
            };
            aside::set_foreground_worker(spec, format!("{}-aside", shared.thread_name));
        }
        worker(&shared, kind, executor.as_ref());
    })?;
    handles.push(handle);
    Ok(())
}

/// A fixed pool of worker threads with weighted fair queueing across tenants.
///
/// Dropping it shuts down gracefully (see [`FairScheduler::shutdown`]), which blocks until
/// queued jobs have run: drop it from a blocking context, never from a job.
pub struct FairScheduler<K> {
    shared: Arc<Shared<K>>,
    /// Why the background workers' priority could not be lowered, if it could not.
    priority_error: Option<String>,
    /// Background workers running (0 when off or when their priority could not be lowered).
    background_workers: usize,
}

impl<K: Hash + Eq + Clone + Send + 'static> FairScheduler<K> {
    /// Starts `config.workers` threads. Fails only if the OS refuses a thread.
    pub fn new(config: SchedulerConfig) -> std::io::Result<Self> {
        let shared_workers = config.workers.max(1);
        let background = config.background_workers;
        let workers = shared_workers + background + config.reserved_workers;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: FairQueue::new(
                    config.discipline,
                    config.max_queue,
                    config.max_queue_per_tenant,
                ),
                charging: config.charging,
                accepting: true,
                paused: config.start_paused,
                live_workers: workers,
                lanes: [
                    Threads {
                        size: shared_workers,
                        threads: shared_workers,
                        ..Threads::default()
                    },
                    Threads {
                        size: background,
                        threads: background,
                        ..Threads::default()
                    },
                    Threads {
                        size: config.reserved_workers,
                        threads: config.reserved_workers,
                        ..Threads::default()
                    },
                ],
                idle_looks: 0,
                has_reserved: config.reserved_workers > 0,
                shares: (background > 0).then(|| Shares::new(config.charging, shared_workers)),
                long_jobs: LongJobs::new(config.long_job_after),
                held: Default::default(),
                poll: PollState::new(config.idle_poll_always),
            }),
            work: Condvar::new(),
            reserved_work: Condvar::new(),
            background_work: Condvar::new(),
            exited: Condvar::new(),
            watch: Condvar::new(),
            handles: Mutex::new(Vec::with_capacity(workers)),
            thread_name: config.thread_name.clone(),
            background_priority: config.background_priority,
            background_thread_start: config.background_thread_start,
            compute_aside: config.compute_aside && background > 0,
            spares_started: Default::default(),
            idle_poll: IdlePoll::new(config.idle_poll),
        });
        let mut this = Self {
            shared,
            priority_error: None,
            background_workers: background,
        };
        // Each background worker reports whether its priority was lowered before it takes
        // work, so the caller learns of a failure from `new` and can log it its own way.
        let (lowered_tx, lowered) = std::sync::mpsc::channel();
        for i in 0..workers {
            let (name, kind) = if i < shared_workers {
                (format!("{}-{i}", config.thread_name), Kind::Foreground)
            } else if i < shared_workers + background {
                (
                    format!("{}-b{}", config.thread_name, i - shared_workers),
                    Kind::Background,
                )
            } else {
                (
                    format!(
                        "{}-r{}",
                        config.thread_name,
                        i - shared_workers - background
                    ),
                    Kind::Reserved,
                )
            };
            let lowered_tx = (kind == Kind::Background).then(|| lowered_tx.clone());
            if let Err(e) = start_thread(&this.shared, kind, name, lowered_tx) {
                // The threads that did start would wait for work forever; count the
                // missing ones as exited, then dropping `this` shuts the rest down.
                this.shared.lock().live_workers -= workers - i;
                return Err(e);
            }
        }
        drop(lowered_tx);
        if !config.long_job_after.is_zero() {
            // Not counted in `live_workers`: it runs no job, and exits as shutdown begins.
            let shared = Arc::clone(&this.shared);
            let handle = std::thread::Builder::new()
                .name(format!("{}-watch", config.thread_name))
                .spawn(move || watchdog(&shared))?;
            this.shared.lock_handles().push(handle);
        }
        this.priority_error = lowered
            .iter()
            .find_map(Result::err)
            .map(|e| format!("could not lower the background workers' OS priority: {e}"));
        if this.priority_error.is_some() {
            // At normal priority they would only be extra threads competing for the cores:
            // turn the split off, and the background workers exit (see `worker`).
            this.shared.lock().shares = None;
            this.shared.background_work.notify_all();
            this.background_workers = 0;
        }
        Ok(this)
    }

    /// Why the pool runs without the background workers it was asked for, if it does: for the
    /// caller to log once.
    pub fn priority_error(&self) -> Option<&str> {
        self.priority_error.as_deref()
    }

    /// Background workers running: 0 when off or when their priority could not be lowered.
    pub fn background_workers(&self) -> usize {
        self.background_workers
    }

    /// Worker threads alive, the spares started for declared waits included
    /// ([`crate::blocking`]): at most three times the configured ones, of which one tenant's
    /// jobs hold at most two thirds.
    pub fn threads(&self) -> usize {
        self.shared.lock().live_workers
    }

    /// Times a shared worker (normal or background) found jobs queued but none it may run
    /// (all of the other set's tenants) and went back to sleep, since the pool started. A few
    /// per share window while a tenant is over its share; one per job would be futile
    /// wake-ups, each taking a core from whatever ran there.
    pub fn idle_looks(&self) -> u64 {
        self.shared.lock().idle_looks
    }

    /// Polls of the queue by an idle worker before it slept ([`crate::idle_poll`]) since the
    /// pool started: (those after which it started a job at once, those after which it did
    /// not).
    pub fn idle_polls(&self) -> (u64, u64) {
        self.shared.lock().poll.counts()
    }

    /// Jobs that ran long and gave up their place to another tenant's job
    /// ([`crate::long_jobs`]) since the pool started.
    pub fn long_job_spares(&self) -> LongJobSpares {
        let [shared, background, reserved] = self.shared.lock().long_jobs.given_way();
        LongJobSpares {
            shared,
            background,
            reserved,
        }
    }

    /// Queues `f` for tenant `key` with fair-share `weight` (≥ 1; 0 counts as 1). Rejections
    /// are immediate: `Overloaded`, `TenantQueueFull` or `ShuttingDown`. Dropping the returned
    /// handle before the job starts cancels it (a worker skips it).
    pub fn submit<F, R>(&self, key: &K, weight: u32, f: F) -> Result<JobHandle<R>, SchedError>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        self.submit_in(key, weight, Lane::Shared, f)
    }

    /// [`submit`](Self::submit) in a [`Lane`]: a [`Lane::Reserved`] job is offered to the
    /// shared workers in the fair order and to the reserved workers, whichever is free first.
    /// Passed per call like the weight, so a changed tenant record applies to its next job.
    pub fn submit_in<F, R>(
        &self,
        key: &K,
        weight: u32,
        lane: Lane,
        f: F,
    ) -> Result<JobHandle<R>, SchedError>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        self.submit_with(key, weight, lane, Demotable::Never, f)
    }

    /// [`submit_in`](Self::submit_in), saying whether the job may run on a background worker
    /// ([`Demotable`]). A job in [`Lane::Reserved`] never does, whatever `demotable` says: a
    /// `dedicated` tenant's work keeps normal priority.
    pub fn submit_with<F, R>(
        &self,
        key: &K,
        weight: u32,
        lane: Lane,
        demotable: Demotable,
        f: F,
    ) -> Result<JobHandle<R>, SchedError>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let run: Work = Box::new(move || -> Deliver {
            if tx.is_closed() {
                return Box::new(|| ());
            }
            let result =
                catch_unwind(AssertUnwindSafe(f)).map_err(|payload| SchedError::Panicked {
                    message: panic_message(payload.as_ref()),
                });
            // Sent by the worker's own thread, at normal priority (`crate::executor`). The
            // caller may have stopped waiting; nothing to do then.
            Box::new(move || {
                let _ = tx.send(result);
            })
        });
        let job = Job {
            run,
            demotable: demotable.may_demote() && lane == Lane::Shared,
            read_only: demotable == Demotable::ReadOnly,
        };
        let demotable = job.demotable;
        let (woken, claimed, over_share) = {
            let mut state = self.shared.lock();
            if !state.accepting {
                return Err(SchedError::ShuttingDown);
            }
            let was_empty = state.queue.is_empty();
            let lane = if state.has_reserved {
                lane
            } else {
                Lane::Shared
            };
            state
                .queue
                .push_in(key, weight, lane, job)
                .map_err(|e| match e {
                    QueueFull::Total { queued } => SchedError::Overloaded { queued },
                    QueueFull::Tenant { queued } => SchedError::TenantQueueFull { queued },
                })?;
            let (standing, became) = match state.shares.as_mut() {
                Some(shares) => {
                    shares.tick(Instant::now());
                    let became = shares.usage.submitted(key, weight);
                    (shares.usage.standing(key), became)
                }
                None => (Standing::default(), false),
            };
            let (backlog, over_share) = (standing.backlog, standing.over_cpu);
            let background = standing.placement() == Placement::Background && demotable;
            // Only a tenant with a backlog can have its jobs moved to the background before
            // they are popped; waking a background worker for anyone else's is futile. The job
            // that gives a tenant its backlog wakes one whatever the job (a write too: the
            // tenant's next read may be demoted): background workers asleep while nobody had
            // one wait untimed, and from then on they look again after each window while
            // anyone has one (see `worker`), so a job demoted after its submit is found within
            // a window. Otherwise the other set is woken only when this job makes the queue
            // non-empty: a normal worker may then be asleep without a deadline, and one that
            // finds jobs queued but none it may run wakes the background set and looks again
            // after a window. Waking the other set on every submit while this one was busy
            // woke a normal worker for each job of a flood, to find nothing it could run:
            // thousands of wake-ups a second, each one preempting a light tenant's job
            // (docs/benchmarks.md, 5 Dec).
            let wake_both = state.shares.is_some()
                && ((was_empty && (background || (backlog && demotable))) || became);
            // A running job may now have another tenant's job waiting behind it: the
            // watchdog, asleep without a deadline, must time it. Only when this job cannot
            // start at once (its kind has no free place or no thread asleep): one that can is
            // taken by a worker, and a start that leaves jobs queued wakes the watchdog
            // itself (see `worker`), so a lightly loaded pool pays no wake-up per job.
            let target = if background {
                Kind::Background
            } else {
                Kind::Foreground
            };
            // A tenant whose jobs hold all the threads of a kind one may gets none woken for
            // this job: the thread that ends one of them takes the next. Woken, a sleeper would
            // find nothing it may run, once per job of a flood.
            let has_room = [target, Kind::Reserved]
                .map(|kind| Holds::of(&state.held, &state.lanes, kind).room(key));
            let room = |kind: Kind| has_room[usize::from(kind == Kind::Reserved)];
            let can_start = |kind: Kind| {
                let lane = state.lanes[kind as usize];
                room(kind) && lane.running < lane.size && lane.asleep() > 0
            };
            let starts = !state.paused
                && (can_start(target) || (lane == Lane::Reserved && can_start(Kind::Reserved)));
            if !starts {
                let due = state.long_jobs.earliest_due();
                if due.is_some() && state.long_jobs.wake(due) {
                    self.shared.watch.notify_one();
                }
            }
            // Who is woken for this job: one worker of the set it belongs to now, the other set
            // too if `wake_both`, and a reserved worker for a reserved-lane job.
            let reserved = lane == Lane::Reserved;
            let other = match target {
                Kind::Background => Kind::Foreground,
                _ => Kind::Background,
            };
            let woken = [
                Some(target).filter(|&kind| room(kind)),
                wake_both.then_some(other),
                reserved
                    .then_some(Kind::Reserved)
                    .filter(|&kind| room(kind)),
            ];
            // A worker polling for a job of a kind woken takes this one: its poll ends, and
            // the wake-up, which would find the queue empty, is skipped (`crate::idle_poll`).
            if woken
                .into_iter()
                .flatten()
                .any(|kind| state.poll.wants(kind))
            {
                self.shared.idle_poll.nudge();
            }
            let on_cpu = || self.shared.idle_poll.on_cpu();
            let claimed = if state.poll.claim(target, on_cpu) {
                Some(target)
            } else {
                (reserved && state.poll.claim(Kind::Reserved, on_cpu)).then_some(Kind::Reserved)
            };
            (woken, claimed, over_share)
        };
        // Wake one worker of the set the job belongs to now. Waking the other set too, on
        // every submit, cost a futile wake-up per job (a context switch and a turn on the
        // state lock, thousands of times a second while one tenant floods). But the placement
        // can change before the pop (a completion or a turning window moves the shares), and a
        // worker of the other set asleep on an empty queue would not look again: so both sets
        // are woken when this job makes the queue non-empty, if its tenant has a backlog
        // (without one, its jobs stay in the foreground). A woken worker that finds nothing
        // it may run while the queue is not empty wakes the other set itself and looks again
        // every share window (see `worker`).
        for kind in woken.into_iter().flatten() {
            if claimed != Some(kind) {
                self.shared.signal(kind).notify_one();
            }
        }
        Ok(JobHandle { rx, over_share })
    }

    /// Runs `f` on the pool for tenant `key` and waits for its result without blocking the
    /// async runtime. Submission happens when the future is first polled.
    pub async fn run<F, R>(&self, key: &K, weight: u32, f: F) -> Result<R, SchedError>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        self.submit(key, weight, f)?.await
    }

    /// [`run`](Self::run) in a [`Lane`] (see [`submit_in`](Self::submit_in)).
    pub async fn run_in<F, R>(
        &self,
        key: &K,
        weight: u32,
        lane: Lane,
        f: F,
    ) -> Result<R, SchedError>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        self.submit_in(key, weight, lane, f)?.await
    }

    /// [`run`](Self::run) in a [`Lane`], saying whether the job may run on a background
    /// worker (see [`submit_with`](Self::submit_with)).
    pub async fn run_with<F, R>(
        &self,
        key: &K,
        weight: u32,
        lane: Lane,
        demotable: Demotable,
        f: F,
    ) -> Result<R, SchedError>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        self.submit_with(key, weight, lane, demotable, f)?.await
    }

    /// Stops dispatching (queued jobs wait; running ones finish). For tests and maintenance.
    pub fn pause(&self) {
        self.shared.lock().paused = true;
    }

    /// Resumes dispatching after [`pause`](Self::pause) or `start_paused`.
    pub fn resume(&self) {
        let mut state = self.shared.lock();
        state.paused = false;
        // A worker may have begun its poll before a pause.
        self.shared.idle_poll.nudge();
        // The watchdog parks while paused: jobs queued meanwhile behind long ones need it.
        let wake_watchdog = state.long_jobs.wake(None);
        drop(state);
        if wake_watchdog {
            self.shared.watch.notify_one();
        }
        self.shared.work.notify_all();
        self.shared.reserved_work.notify_all();
        self.shared.background_work.notify_all();
    }

    /// Jobs queued (not yet running) across all tenants.
    pub fn queued(&self) -> usize {
        self.shared.lock().queue.len()
    }

    /// Jobs queued for `key`: a per-tenant load signal.
    pub fn queued_for(&self, key: &K) -> usize {
        self.shared.lock().queue.tenant_len(key)
    }
}

impl<K> FairScheduler<K> {
    /// Graceful shutdown: refuses new jobs, resumes dispatch if paused, lets the workers drain
    /// the queue, and joins them. Idempotent. Must not be called from inside a job.
    pub fn shutdown(&self) {
        self.shutdown_inner(None);
    }

    /// Like [`shutdown`](Self::shutdown) but gives up waiting after `timeout`; returns whether
    /// every worker finished (if not, the stragglers finish their queue in the background).
    pub fn shutdown_timeout(&self, timeout: Duration) -> bool {
        self.shutdown_inner(Some(Instant::now() + timeout))
    }

    fn shutdown_inner(&self, deadline: Option<Instant>) -> bool {
        let mut state = self.shared.lock();
        state.accepting = false;
        state.paused = false;
        self.shared.idle_poll.nudge();
        self.shared.work.notify_all();
        self.shared.reserved_work.notify_all();
        self.shared.background_work.notify_all();
        self.shared.watch.notify_all();
        while state.live_workers > 0 {
            state = match deadline {
                None => self
                    .shared
                    .exited
                    .wait(state)
                    .unwrap_or_else(|p| p.into_inner()),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return false;
                    }
                    self.shared
                        .exited
                        .wait_timeout(state, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
        drop(state);
        let handles: Vec<_> = self.shared.lock_handles().drain(..).collect();
        for handle in handles {
            // Workers catch job panics, so a join error would be a bug in `worker` itself;
            // there is nothing left to clean up either way.
            let _ = handle.join();
        }
        true
    }
}

impl<K> Drop for FairScheduler<K> {
    fn drop(&mut self) {
        self.shutdown_inner(None);
    }
}

/// A worker: take the fairest job it may run (a reserved worker: of the reserved lane; while
/// background workers exist, a foreground worker: of a tenant within its CPU share, a background
/// one: of a tenant over it), run it outside the lock, charge its tenant the CPU time it used
/// (wall-clock time where the platform cannot tell), repeat; exit once shutdown has begun and
/// there is nothing left it may run.
/// A worker's loop. A background worker runs its jobs on `executor`, its low-priority thread,
/// and keeps the pool's lock and the jobs' answers on its own (`crate::executor`).
fn worker<K: Hash + Eq + Clone + Send + 'static>(
    shared: &Arc<Shared<K>>,
    kind: Kind,
    executor: Option<&Executor>,
) {
    let signal = shared.signal(kind);
    // Whether this worker polled since its last job (it polls once per job: then it sleeps),
    // and whether its next look at the queue is the first after a poll (counted).
    let (mut polled, mut just_polled) = (false, false);
    let mut state = shared.lock();
    loop {
        // Full while as many jobs of this kind run outside a declared wait as it has
        // configured threads: this thread is a spare then, or a waiter woke while a spare ran.
        let lane = state.lanes[kind as usize];
        let full = lane.running >= lane.size;
        // The free place is one a long job gave up: not for its tenant (`crate::long_jobs`).
        // Jobs running in such places do not make the normal places look given.
        let given = lane.only_given_free();
        let popped = if state.paused || full {
            None
        } else {
            pop(&mut state, kind, given)
        };
        if just_polled {
            state.poll.counted(popped.is_some());
            just_polled = false;
        }
        if let Some((charge, job)) = popped {
            let now = Instant::now();
            let long_id = state.long_jobs.started(&charge.key, kind, now, given);
            move_job(&mut state, kind, Slot::Out, Slot::Running { given });
            *state.held[kind as usize]
                .entry(charge.key.clone())
                .or_default() += 1;
            // Others wait: this job needs timing if the watchdog sleeps past its deadline (or
            // a stalled job may have to give way now that this one took a free place).
            let wake_watchdog = !state.queue.is_empty() && {
                let due = state.long_jobs.due(long_id);
                due.is_some() && state.long_jobs.wake(due)
            };
            // Places freed together (two long jobs in one scan, or a wait beginning while a
            // woken thread is on its way) each woke a thread, but a thread woken and not yet
            // running still looks asleep, so fewer may have been woken than places freed:
            // pass the turn on while a place and a sleeper remain; with no sleeper left, and
            // a queued job that may take the place, start a spare for it (the place would
            // otherwise stay empty until a job ends). Only a kind with a job in a wait or
            // long has a free place and no sleeper: an idle or lightly loaded pool never
            // gets here.
            let lane = state.lanes[kind as usize];
            let more = lane.running < lane.size
                && !state.queue.is_empty()
                && takers(&state, kind, None, lane.only_given_free(), 0) > 0;
            let wake_another = more && lane.asleep() > 0;
            let spare = more && lane.asleep() == 0 && place_freed(&mut state, kind, 0);
            // Shares are of the shared workers' CPU: what a reserved worker spends is the
            // dedicated tenant's own and must not make the shared tenants look small.
            let running = match state.shares.as_mut() {
                Some(shares) if kind != Kind::Reserved => shares.started(&charge.key, now),
                _ => None,
            };
            // A normal worker's job of a tenant over its share of the CPU, backlog or not: its
            // computing set aside runs at the background priority (`crate::aside`).
            let over_share = kind == Kind::Foreground
                && state
                    .shares
                    .as_ref()
                    .is_some_and(|s| s.usage.over_cpu_share(&charge.key));
            drop(state);
            if wake_watchdog {
                shared.watch.notify_one();
            }
            if wake_another {
                shared.wake_one(kind);
            }
            if spare {
                shared.fill_place(kind, true);
            }
            let wall = Instant::now();
            // On this thread in both cases: a declared wait of the job is told to the pool here.
            let current = long_jobs::Running::set(long_id);
            let over_share = aside::OverShareJob::set(over_share);
            // Panics are caught inside the job, so neither can unwind.
            let (cpu, deliver) = match executor {
                Some(executor) => executor.run(job.run),
                None => run_here(job.run),
            };
            drop((current, over_share));
            deliver();
            let cost =
                cpu.unwrap_or_else(|| u64::try_from(wall.elapsed().as_nanos()).unwrap_or(u64::MAX));
            state = shared.lock();
            let place = state.long_jobs.ended(long_id);
            let from = if place.long {
                Slot::Long
            } else {
                Slot::Running { given: place.given }
            };
            move_job(&mut state, kind, from, Slot::Out);
            let held = &mut state.held[kind as usize];
            if let Some(n) = held.get_mut(&charge.key) {
                *n -= 1;
                if *n == 0 {
                    held.remove(&charge.key);
                }
            }
            let cost = match state.charging {
                Charging::CpuTime => cost,
                Charging::PerJob => charge.estimate_ns,
            };
            if let Some(shares) = state.shares.as_mut() {
                let shared_cpu = if kind == Kind::Reserved { 0 } else { cost };
                shares.ended(&charge.key, running, shared_cpu);
            }
            state.queue.complete(charge, cost);
            polled = false;
            continue;
        }
        // A reserved worker leaves the rest of the queue to the shared workers, which drain it;
        // a background worker is not needed once the split is off.
        let split_off = kind == Kind::Background && state.shares.is_none();
        if split_off || (!state.accepting && (kind == Kind::Reserved || state.queue.is_empty())) {
            state.live_workers -= 1;
            state.lanes[kind as usize].threads -= 1;
            let shutting_down = !state.accepting;
            drop(state);
            shared.exited.notify_all();
            if shutting_down {
                // A thread asleep because its kind was full would not look again: the ones
                // still running drain the queue, and each exit lets the sleepers see it empty.
                shared.work.notify_all();
                shared.reserved_work.notify_all();
                shared.background_work.notify_all();
            }
            return;
        }
        if full {
            // Not idle: a free place is taken by the thread that frees it (its next loop) or,
            // when a job's wait begins, by a thread woken then (`Pool::wait_begins`). Waking
            // the other set from here would ping-pong with it while the queue is not empty.
            state = signal.wait(state).unwrap_or_else(|p| p.into_inner());
            continue;
        }
        let others_waiting = state.shares.is_some() && !state.paused && !state.queue.is_empty();
        // A tenant with a backlog may cross its share when a window turns, with no submit or
        // completion to wake anyone: background workers then look again after each window.
        let backlog_somewhere = kind == Kind::Background
            && !state.paused
            && state.shares.as_ref().is_some_and(|s| s.usage.any_backlog());
        state = match (kind, others_waiting) {
            // Jobs wait that this worker may not run: wake one of the other set if it has a
            // free place, a thread asleep and a job it may take (all may have been asleep
            // when the job's tenant crossed its share), and look again after a window, when
            // shares may have moved without any push or completion. Only for a job the other
            // set may take: two workers that may run none of the queued jobs (one in a place a
            // long job gave up, with only that job's tenant queued) woke each other back and
            // forth, tens of thousands of times a second, while the long job ran.
            (Kind::Foreground | Kind::Background, true) => {
                state.idle_looks += 1;
                let other = match kind {
                    Kind::Foreground => Kind::Background,
                    _ => Kind::Foreground,
                };
                let lane = state.lanes[other as usize];
                if lane.running < lane.size
                    && lane.asleep() > 0
                    && takers(&state, other, None, lane.only_given_free(), 0) > 0
                {
                    shared.wake_one(other);
                }
                signal
                    .wait_timeout(state, SHARE_WINDOW)
                    .unwrap_or_else(|p| p.into_inner())
                    .0
            }
            (Kind::Background, false) if backlog_somewhere => {
                signal
                    .wait_timeout(state, SHARE_WINDOW)
                    .unwrap_or_else(|p| p.into_inner())
                    .0
            }
            // Nothing queued: watch the queue for a while before sleeping, unless another
            // worker does (`crate::idle_poll`). Back under the lock, the loop looks at the
            // queue whatever the poll saw, so a job handed to the poller is never left behind.
            _ if shared.idle_poll.polls(kind)
                && !polled
                && state.poll.free()
                && state.accepting
                && !state.paused
                && state.poll.take_turn() =>
            {
                state.poll.begin(kind);
                let seen = shared.idle_poll.seen();
                drop(state);
                shared.idle_poll.wait(seen);
                let mut state = shared.lock();
                state.poll.end();
                (polled, just_polled) = (true, true);
                state
            }
            _ => signal.wait(state).unwrap_or_else(|p| p.into_inner()),
        };
    }
}

/// Runs a job on the worker's own thread: its CPU time (`None` where it cannot be read) and
/// the sending of its result.
fn run_here(work: Work) -> (Option<u64>, Deliver) {
    let cpu = thread_cpu_ns();
    // Whatever an earlier job (or code outside any job) left is not this job's.
    take_job_cpu_adjustment();
    let deliver = work();
    // CPU time another thread spent for this job counts as its own, and time this thread
    // spent for other jobs does not (see `adjust_job_cpu`).
    let cost = cpu.zip(thread_cpu_ns()).map(|(before, after)| {
        after
            .saturating_sub(before)
            .saturating_add_signed(take_job_cpu_adjustment())
    });
    (cost, deliver)
}

/// The job `kind` of worker runs next, if any, of those [`takes`] allows (the fairest: the
/// fair queue's order).
fn pop<K: Hash + Eq + Clone>(
    state: &mut State<K>,
    kind: Kind,
    given: bool,
) -> Option<(Charge<K>, Job)> {
    let State {
        queue,
        shares,
        accepting,
        long_jobs,
        lanes,
        held,
        ..
    } = state;
    if *accepting && let Some(shares) = shares.as_mut() {
        shares.tick(Instant::now());
    }
    let usage = shares.as_ref().map(|s| &s.usage);
    let holds = Holds::of(held, lanes, kind);
    let may = takes(kind, given, *accepting, usage, long_jobs, holds);
    match kind {
        Kind::Reserved => queue.pop_reserved_where(may),
        Kind::Foreground => queue.pop_charged_where(may),
        Kind::Background => queue.pop_charged_aside(may),
    }
}

/// The text of a panic payload when it is a string.
fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// The pending result of a submitted job. Await it, or call
/// [`wait_blocking`](Self::wait_blocking) from a plain thread. Dropping it cancels the job if
/// it has not started.
pub struct JobHandle<R> {
    rx: oneshot::Receiver<Result<R, SchedError>>,
    over_share: bool,
}

impl<R> JobHandle<R> {
    /// Whether the job's tenant was over its share of the recent CPU when the job was
    /// submitted, backlog or not ([`CpuShares::over_cpu_share`]: the rule of `crate::shares`
    /// that sends a tenant's demotable jobs to the background workers, without its backlog),
    /// whatever this job is and whichever lane it runs in. Always false while the split is off
    /// (no background workers).
    ///
    /// [`CpuShares::over_cpu_share`]: crate::CpuShares::over_cpu_share
    pub fn over_share(&self) -> bool {
        self.over_share
    }

    /// Blocks the current thread until the job finishes. Panics if called from within an
    /// async runtime (tokio's rule for `blocking_recv`); use `.await` there.
    pub fn wait_blocking(self) -> Result<R, SchedError> {
        self.rx.blocking_recv().unwrap_or(Err(SchedError::Dropped))
    }
}

impl<R> Future for JobHandle<R> {
    type Output = Result<R, SchedError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(SchedError::Dropped)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use super::*;

    /// While the split is on, both demotable kinds of job of a tenant over its share go to the
    /// background workers; while the pool drains, only read-only ones do: a job that writes in
    /// the foreground would need another job for its write, which a draining pool refuses.
    #[test]
    fn a_draining_pool_gives_its_background_workers_read_only_jobs_only() {
        let job = |demotable: Demotable| Job {
            run: Box::new(|| -> Deliver { Box::new(|| ()) }),
            demotable: demotable.may_demote(),
            read_only: demotable == Demotable::ReadOnly,
        };
        let long_jobs = LongJobs::new(Duration::from_secs(60));
        let nobody = HashMap::new();
        let holds = Holds {
            held: &nobody,
            most: 4,
        };
        let mut shares = CpuShares::new(0);
        // "a" floods (all the CPU, a job pending); "b" is active beside it.
        shares.submitted(&"a", 1);
        shares.submitted(&"b", 1);
        shares.finished(&"b", 1);
        shares.charge(&"a", 1_000_000);
        assert_eq!(shares.placement(&"a"), Placement::Background);
        let kinds = [
            Demotable::Never,
            Demotable::ReadOnly,
            Demotable::WritesInForeground,
        ];
        for (accepting, expected) in [(true, [false, true, true]), (false, [false, true, false])] {
            let may = takes(
                Kind::Background,
                false,
                accepting,
                Some(&shares),
                &long_jobs,
                holds,
            );
            let taken = kinds.map(|d| may(&"a", &job(d)));
            assert_eq!(taken, expected, "accepting: {accepting}");
            let may = takes(
                Kind::Foreground,
                false,
                accepting,
                Some(&shares),
                &long_jobs,
                holds,
            );
            let taken = kinds.map(|d| may(&"a", &job(d)));
            let foreground = expected.map(|background| !background || !accepting);
            assert_eq!(taken, foreground, "accepting: {accepting}");
        }
        // A tenant whose jobs hold as many threads of a kind as one may gets no more of them,
        // whatever its jobs; another still does.
        let full: HashMap<&str, usize> = [("a", 4), ("b", 3)].into_iter().collect();
        let holds = Holds {
            held: &full,
            most: 4,
        };
        for kind in [Kind::Foreground, Kind::Background, Kind::Reserved] {
            let may = takes(kind, false, true, None, &long_jobs, holds);
            assert_eq!(kinds.map(|d| may(&"a", &job(d))), [false; 3], "{kind:?}");
        }
        let may = takes(Kind::Foreground, false, true, None, &long_jobs, holds);
        assert!(may(&"b", &job(Demotable::Never)) && may(&"c", &job(Demotable::Never)));
    }

    /// A job that can start at once does not wake the watchdog, even while another job runs.
    #[test]
    fn a_job_that_starts_at_once_does_not_wake_the_watchdog() {
        let pool = FairScheduler::new(SchedulerConfig {
            workers: 2,
            long_job_after: Duration::from_secs(60),
            ..SchedulerConfig::default()
        })
        .unwrap();
        let (started, release) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let (s, r) = (Arc::clone(&started), Arc::clone(&release));
        let a = pool
            .submit(&"a", 1, move || {
                s.store(true, Ordering::SeqCst);
                while !r.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
            .unwrap();
        while !started.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let before = pool.shared.lock().long_jobs.unparked;
        for _ in 0..10 {
            // A job's result arrives a moment before its worker frees the place: a submit
            // in between could not start at once (and rightly wakes the watchdog).
            while pool.shared.lock().lanes[Kind::Foreground as usize].running > 1 {
                std::thread::yield_now();
            }
            pool.submit(&"b", 1, || ())
                .unwrap()
                .wait_blocking()
                .unwrap();
        }
        let after = pool.shared.lock().long_jobs.unparked;
        release.store(true, Ordering::SeqCst);
        a.wait_blocking().unwrap();
        assert_eq!(
            after, before,
            "short jobs beside a running one woke the watchdog"
        );
    }

    /// A job queued while paused, behind long jobs on every worker, gets a place once
    /// dispatch resumes: the watchdog parked while paused must look again.
    #[test]
    fn resume_wakes_the_watchdog() {
        let pool = FairScheduler::new(SchedulerConfig {
            workers: 2,
            long_job_after: Duration::from_millis(10),
            ..SchedulerConfig::default()
        })
        .unwrap();
        let (started, release) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let give_up = Instant::now() + Duration::from_secs(10);
        let spinners: Vec<_> = (0..2)
            .map(|_| {
                let (s, r) = (Arc::clone(&started), Arc::clone(&release));
                pool.submit(&"a", 1, move || {
                    s.fetch_add(1, Ordering::SeqCst);
                    while !r.load(Ordering::SeqCst) && Instant::now() < give_up {
                        std::hint::spin_loop();
                    }
                    s.fetch_sub(1, Ordering::SeqCst);
                    r.load(Ordering::SeqCst)
                })
                .unwrap()
            })
            .collect();
        while started.load(Ordering::SeqCst) < 2 {
            std::thread::sleep(Duration::from_millis(1));
        }
        pool.pause();
        let (r, s) = (Arc::clone(&release), Arc::clone(&started));
        let b = pool
            .submit(&"b", 1, move || {
                let spinning = s.load(Ordering::SeqCst);
                r.store(true, Ordering::SeqCst);
                spinning
            })
            .unwrap();
        // The watchdog looked while paused, and parked.
        while pool.shared.lock().long_jobs.watch != Watch::Parked {
            std::thread::sleep(Duration::from_millis(1));
        }
        pool.resume();
        assert_eq!(b.wait_blocking(), Ok(2), "b ran only once a's jobs ended");
        for h in spinners {
            assert_eq!(h.wait_blocking(), Ok(true));
        }
    }

    /// How long a test job waits at most for what should release it: far beyond any dispatch
    /// delay on a loaded machine, so reaching it means the pool never ran the releasing job.
    const GIVE_UP: Duration = Duration::from_secs(10);

    /// Waits until `done` holds, failing the test (naming `what`) after `GIVE_UP`.
    fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let end = Instant::now() + GIVE_UP;
        while !done() {
            assert!(Instant::now() < end, "{what}: not within {GIVE_UP:?}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Busy-loops until `flag` is set or `GIVE_UP` passes; returns whether it was set.
    fn spin_until(flag: &AtomicBool) -> bool {
        let end = Instant::now() + GIVE_UP;
        while !flag.load(Ordering::SeqCst) && Instant::now() < end {
            std::hint::spin_loop();
        }
        flag.load(Ordering::SeqCst)
    }

    fn lane(pool: &FairScheduler<&'static str>) -> Threads {
        pool.shared.lock().lanes[Kind::Foreground as usize]
    }

    /// A long job that ends takes the place it gave with it: the job that took that place
    /// fills a normal one from then on, and `given` does not stay above `long`.
    #[test]
    fn a_long_job_that_ends_leaves_no_given_place_behind() {
        let pool = FairScheduler::new(SchedulerConfig {
            workers: 1,
            long_job_after: Duration::from_millis(20),
            ..SchedulerConfig::default()
        })
        .unwrap();
        let (a_go, b_go) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let go = Arc::clone(&a_go);
        let a = pool.submit(&"a", 1, move || spin_until(&go)).unwrap();
        wait_for("a's job starts", || lane(&pool).running == 1);
        let go = Arc::clone(&b_go);
        let b = pool.submit(&"b", 1, move || spin_until(&go)).unwrap();
        wait_for("b's job takes the place a's gave", || {
            lane(&pool).given == 1
        });
        a_go.store(true, Ordering::SeqCst);
        assert_eq!(a.wait_blocking(), Ok(true));
        wait_for("a's job ends", || lane(&pool).long == 0);
        let after = lane(&pool);
        b_go.store(true, Ordering::SeqCst);
        assert_eq!(b.wait_blocking(), Ok(true));
        assert_eq!(
            (after.running, after.long, after.given),
            (1, 0, 0),
            "{after:?}"
        );
    }

    /// Two waits begin while the spare the first one started is still on its way: the
    /// second finds the spare counted as asleep and notifies nobody. The spare, once it runs
    /// a job, must start another for the second place, or a queued job waits for a wait to
    /// end with a place free.
    #[test]
    fn a_place_freed_while_a_spare_is_on_its_way_is_filled() {
        let pool = FairScheduler::new(SchedulerConfig {
            workers: 2,
            long_job_after: Duration::ZERO,
            ..SchedulerConfig::default()
        })
        .unwrap();
        let waits: [Arc<AtomicBool>; 2] = Default::default();
        let released = Arc::new(AtomicBool::new(false));
        let js: Vec<_> = waits
            .iter()
            .map(|go| {
                let (go, released) = (Arc::clone(go), Arc::clone(&released));
                pool.submit(&"a", 1, move || {
                    spin_until(&go);
                    crate::blocking::blocking(|| spin_until(&released))
                })
                .unwrap()
            })
            .collect();
        wait_for("a's jobs start", || lane(&pool).running == 2);
        // x runs until y ran: y needs a place of its own.
        let y_ran = Arc::new(AtomicBool::new(false));
        let ran = Arc::clone(&y_ran);
        let x = pool.submit(&"b", 1, move || spin_until(&ran)).unwrap();
        let ran = Arc::clone(&y_ran);
        let y = pool
            .submit(&"b", 1, move || ran.store(true, Ordering::SeqCst))
            .unwrap();
        // Holding the thread list keeps the first spare from starting (see `start_thread`).
        let handles = pool.shared.lock_handles();
        waits[0].store(true, Ordering::SeqCst);
        wait_for("the first wait begins", || lane(&pool).threads == 3);
        waits[1].store(true, Ordering::SeqCst);
        wait_for("the second wait begins", || lane(&pool).waiting == 2);
        drop(handles);
        y.wait_blocking().unwrap();
        assert_eq!(x.wait_blocking(), Ok(true), "x ended before y ran");
        released.store(true, Ordering::SeqCst);
        for j in js {
            assert_eq!(j.wait_blocking(), Ok(true));
        }
    }

    /// A job that ran most of the threshold, waited, and runs on is timed from its resume:
    /// it gives way about when it passes the threshold, not at the watchdog's deadline of
    /// before (another job's, up to a whole threshold later).
    #[test]
    fn a_job_resumed_after_a_wait_is_timed_at_once() {
        let after = Duration::from_secs(1);
        let pool = Arc::new(
            FairScheduler::new(SchedulerConfig {
                workers: 1,
                long_job_after: after,
                ..SchedulerConfig::default()
            })
            .unwrap(),
        );
        let (waiting, released, resumed_flag, b_ran) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let resumed = Arc::new(Mutex::new(None));
        // j runs 90% of the threshold, waits until k releases it, then runs until b ran.
        let j = {
            let (waiting, released) = (Arc::clone(&waiting), Arc::clone(&released));
            let (resumed, resumed_flag, b_ran) = (
                Arc::clone(&resumed),
                Arc::clone(&resumed_flag),
                Arc::clone(&b_ran),
            );
            pool.submit(&"a", 1, move || {
                let end = Instant::now() + after * 9 / 10;
                while Instant::now() < end {
                    std::hint::spin_loop();
                }
                crate::blocking::blocking(|| {
                    waiting.store(true, Ordering::SeqCst);
                    spin_until(&released)
                });
                *resumed.lock().unwrap() = Some(Instant::now());
                resumed_flag.store(true, Ordering::SeqCst);
                spin_until(&b_ran)
            })
            .unwrap()
        };
        wait_for("j's wait begins", || waiting.load(Ordering::SeqCst));
        // k runs on the spare j's wait started, and gives the watchdog a deadline a whole
        // threshold away once b's job is queued behind it.
        let go = Arc::new(AtomicBool::new(false));
        let k = {
            let (go, released, resumed_flag) = (
                Arc::clone(&go),
                Arc::clone(&released),
                Arc::clone(&resumed_flag),
            );
            pool.submit(&"a", 1, move || {
                spin_until(&go);
                released.store(true, Ordering::SeqCst);
                spin_until(&resumed_flag)
            })
            .unwrap()
        };
        wait_for("k starts", || lane(&pool).running == 1);
        let ran = Arc::clone(&b_ran);
        let b = pool
            .submit(&"b", 1, move || {
                ran.store(true, Ordering::SeqCst);
                Instant::now()
            })
            .unwrap();
        wait_for("the watchdog sleeps until k's deadline", || {
            matches!(pool.shared.lock().long_jobs.watch, Watch::Until(_))
        });
        go.store(true, Ordering::SeqCst);
        let b_started = b.wait_blocking().unwrap();
        let resumed = resumed.lock().unwrap().expect("j resumed");
        assert_eq!((j.wait_blocking(), k.wait_blocking()), (Ok(true), Ok(true)));
        // j passed the threshold a tenth of it after resuming; the old deadline was a whole
        // threshold after k started, which was before j resumed.
        let late = b_started.saturating_duration_since(resumed);
        assert!(late < after / 2, "b waited {late:?} after j resumed");
    }

    /// A small seeded generator: the same jobs in the same order on every run.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            // xorshift64*
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
        }
    }

    fn spin_for(d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            std::hint::spin_loop();
        }
    }

    /// Many short, long and waiting jobs of several tenants, submitted from several threads:
    /// every move between running, waiting and long is checked against the records as it
    /// happens (debug builds, see `move_job`); once the pool is idle again every count is
    /// back to zero, and it runs exactly its size of jobs at once again, spares or not.
    #[test]
    fn counts_return_to_zero_and_the_pool_to_its_size_after_mixed_jobs() {
        const WORKERS: usize = 2;
        const SUBMITTERS: u64 = 3;
        const JOBS: u64 = 120;
        let pool = Arc::new(
            FairScheduler::new(SchedulerConfig {
                workers: WORKERS,
                long_job_after: Duration::from_millis(2),
                ..SchedulerConfig::default()
            })
            .unwrap(),
        );
        let done = Arc::new(AtomicUsize::new(0));
        let submitters: Vec<_> = (0..SUBMITTERS)
            .map(|seed| {
                let (pool, done) = (Arc::clone(&pool), Arc::clone(&done));
                std::thread::spawn(move || {
                    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (seed + 1));
                    let tenants = ["a", "b", "c", "d"];
                    let mut handles = Vec::new();
                    for _ in 0..JOBS {
                        let key = tenants[rng.below(4) as usize];
                        let ms = |rng: &mut Rng, n: u64| Duration::from_micros(rng.below(n * 1000));
                        let (before, wait, after) = match rng.below(4) {
                            0 => (ms(&mut rng, 1), None, Duration::ZERO),
                            1 => (ms(&mut rng, 8), None, Duration::ZERO),
                            2 => (ms(&mut rng, 1), Some(ms(&mut rng, 4)), ms(&mut rng, 1)),
                            _ => (ms(&mut rng, 6), Some(ms(&mut rng, 3)), ms(&mut rng, 6)),
                        };
                        let done = Arc::clone(&done);
                        // Kept: a handle dropped before its job starts cancels it.
                        handles.push(
                            pool.submit(&key, 1, move || {
                                spin_for(before);
                                if let Some(wait) = wait {
                                    crate::blocking::blocking(|| std::thread::sleep(wait));
                                }
                                spin_for(after);
                                done.fetch_add(1, Ordering::SeqCst);
                            })
                            .unwrap(),
                        );
                        std::thread::sleep(ms(&mut rng, 2));
                    }
                    handles
                })
            })
            .collect();
        let handles: Vec<_> = submitters
            .into_iter()
            .flat_map(|s| s.join().unwrap())
            .collect();
        let all = usize::try_from(SUBMITTERS * JOBS).unwrap();
        // Polled rather than awaited: a count that drifted panics a worker (debug builds),
        // and the test must fail, not hang.
        wait_for("every job ran", || done.load(Ordering::SeqCst) == all);
        for h in handles {
            h.wait_blocking().unwrap();
        }
        wait_for("every job ended", || {
            let state = pool.shared.lock();
            state.lanes[0].running + state.lanes[0].long + state.lanes[0].waiting == 0
        });
        let state = pool.shared.lock();
        let lane = state.lanes[Kind::Foreground as usize];
        assert_eq!(
            (lane.running, lane.waiting, lane.long, lane.given),
            (0, 0, 0, 0),
            "{lane:?}"
        );
        assert_eq!(state.long_jobs.counts(Kind::Foreground), [0; 4]);
        assert!(state.queue.is_empty());
        assert!(
            lane.threads >= WORKERS && lane.threads <= thread_cap(WORKERS),
            "{lane:?}"
        );
        assert!(
            state.held.iter().all(HashMap::is_empty),
            "threads still counted as held: {:?}",
            state.held.iter().map(HashMap::len).collect::<Vec<_>>()
        );
        drop(state);
        // One tenant's jobs, three times the size: never more than the size at once (spares
        // asleep stay asleep), and the size reached.
        let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let jobs: Vec<_> = (0..3 * WORKERS)
            .map(|_| {
                let (now, most) = (Arc::clone(&now), Arc::clone(&most));
                pool.submit(&"a", 1, move || {
                    let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(n, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(30));
                    now.fetch_sub(1, Ordering::SeqCst);
                })
                .unwrap()
            })
            .collect();
        for j in jobs {
            j.wait_blocking().unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), WORKERS);
    }
}
