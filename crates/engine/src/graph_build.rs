//! Background HNSW builds, so that no request pays for building a graph.
//!
//! A collection that reaches `GRAPH_MIN_FLOATS` (vectors × dimensions, tied to the planner's
//! exact-scan budget), or is loaded that large without a current snapshot of its graph, is
//! queued here and searched by exact scan (the planner's exact path) until its graph is ready.
//! One thread builds, one tenant at a time, the smallest waiting first (by its loaded bytes), so
//! that a long tail of small tenants does not wait out a huge tenant's build queued before them
//! (a tenant waiting longer than [`MAX_WAIT`] goes first, so a large one is not put off for
//! good):
//! 1. under the tenant's index lock, mark the collection as building (from then on every
//!    changed slot is logged in `CollectionIndex::building`) and list its vector slots;
//! 2. copy vectors in chunks, each under a short read lock, and insert them into a new graph
//!    with no lock held: the tenant's searches and writes go on meanwhile;
//! 3. catch up with the slots logged meanwhile in rounds: each takes the log under a short
//!    write lock and replays it into the new graph with no lock held (copying vectors under
//!    short read locks), until what is logged takes about [`REPLAY_UNDER_LOCK_FOR`] to replay
//!    at the last round's pace (at most [`REPLAY_UNDER_LOCK`] slots), or, once a round no
//!    longer shrank it, is at most [`REPLAY_UNDER_LOCK`] slots;
//! 4. under the index lock again, replay that remainder and install the graph
//!    (`CollectionIndex::install_graph`), then save the tenant's snapshot so the next load
//!    restores the graph instead of building it.
//!
//! Step 3 is why a tenant writing fast while its graph is built does not stall the server:
//! replaying everything it wrote during the build (tens of thousands of inserts) under its
//! index lock held its writes and searches for seconds, and the pool workers running them,
//! so every other tenant's requests waited too. A tenant that writes faster than the rounds
//! replay (its writes are cheap while it has no graph) would keep this one thread on it: after
//! [`MAX_ROUNDS_NOT_SHRINKING`] rounds whose log did not shrink, the build gives way and the
//! tenant is queued again behind the others, its collection searched exactly meanwhile.
//!
//! A load that restores a graph from a snapshot older than the records and finds many vectors
//! changed since sets the graph aside as a seed (`CollectionIndex::seed`, [`catch_up_later`]):
//! its build skips steps 1 and 2 and catches the seed up from the log its load began.
//!
//! If the tenant is evicted or the collection dropped meanwhile, the build is abandoned: the
//! collection will be queued again by its next load. So the residency budget evicts the
//! tenant being built last, after every other tenant it can evict at that moment: under a tight budget with many tenants
//! in turn, a large tenant evicted before each of its builds ended never had a graph, and
//! every search of it scanned exactly.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use strata_index::{Calibration, CalibrationSettings, HnswIndex, HnswParams};
use strata_sched::BackgroundPriority;
use strata_store::{Store, TenantKey};
use strata_types::CollectionName;

use crate::EngineError;
use crate::collection_index::replay_slot;
use crate::index_save::save_slot;
use crate::registry::{IndexRegistry, TenantSlot, lock};

/// Vectors copied per read lock.
const CHUNK: usize = 2048;

/// How long a build may hold the tenant's index write lock to replay what was logged since its
/// last round before it installs its graph (step 4): every write of the tenant waits for it,
/// and holds a pool thread meanwhile. With 256 slots at a time, 384-dimensional inserts held
/// a tenant writing 1,000 records a second for 70–120 ms, every pool thread asleep in its
/// writes, and another tenant's searches queued that long (docs/benchmarks.md, 6 Dec).
const REPLAY_UNDER_LOCK_FOR: Duration = Duration::from_millis(2);

/// Logged slots a build replays under the lock at most, however cheap its inserts; more are
/// caught up first with no lock held (step 3).
pub(crate) const REPLAY_UNDER_LOCK: usize = 256;

/// Logged slots a build may replay under the lock however dear its inserts (or before it has
/// timed one): a round replays in a time that lets about its own length arrive, so a few is
/// where a tenant writing steadily leaves the rounds, not an empty log.
const REPLAY_UNDER_LOCK_MIN: usize = 8;

/// The logged slots a build replays under the lock (step 4), given the wall time one slot took
/// its last catch-up round with no lock held: as many as [`REPLAY_UNDER_LOCK_FOR`] holds,
/// within [`REPLAY_UNDER_LOCK_MIN`] and [`REPLAY_UNDER_LOCK`]. Inserts timed at the background
/// priority on a busy machine take longer than the same inserts under the lock, at the normal
/// one; a round's slots that were removed, not inserted again, took less.
fn replay_under_lock(per_insert: Option<Duration>) -> usize {
    let fits = per_insert.map_or(REPLAY_UNDER_LOCK_MIN, |each| {
        let each = each.as_nanos().max(1);
        usize::try_from(REPLAY_UNDER_LOCK_FOR.as_nanos() / each).unwrap_or(usize::MAX)
    });
    fits.clamp(REPLAY_UNDER_LOCK_MIN, REPLAY_UNDER_LOCK)
}

/// One slot's wall time in a round that replayed `slots` distinct slots in `took` (`None` for
/// none).
fn per_slot(took: Duration, slots: usize) -> Option<Duration> {
    let n = u32::try_from(slots).ok().filter(|&n| n > 0)?;
    Some(took / n)
}

/// Changed records below which a load inserts their vectors into the graph it restores,
/// whatever the graph's size: a few milliseconds.
const INLINE_CATCH_UP_MIN: usize = 64;

/// About how many vectors one can copy in the time one is inserted into a graph (see
/// [`catch_up_later`]).
const INSERT_COST_IN_COPIES: usize = 400;

/// Whether a load that restores a graph of `vectors` from a snapshot older than the records
/// should leave its `changed` records (deletes and text-only changes counted too: the log
/// does not say which changed a vector) to the background builder (`CollectionIndex::seed`)
/// rather than insert their vectors itself, in the request that asked for the tenant: when
/// inserting them costs more than copying the graph's vectors out for the exact scans that
/// serve until the builder is done. A crash can leave up to the change log's cap (100,000 by default)
/// behind: inserted by the load, that was the first search's wait.
pub(crate) fn catch_up_later(changed: usize, vectors: usize) -> bool {
    changed > INLINE_CATCH_UP_MIN && changed.saturating_mul(INSERT_COST_IN_COPIES) > vectors
}

/// Catch-up rounds in a row whose log did not shrink after which a build gives way (see
/// `build_and_install`).
const MAX_ROUNDS_NOT_SHRINKING: usize = 3;

/// How long a tenant waits for its build before it goes ahead of smaller ones.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(60);

/// Tenants waiting for a build, each with when it was queued, in the order queued.
#[derive(Default)]
struct Waiting {
    keys: Vec<(TenantKey, Instant)>,
    /// Until shutdown.
    closed: bool,
}

impl Waiting {
    /// The next tenant to build among those `cost` prices (`None`: not priced, left for the
    /// next pick): the first to have waited [`MAX_WAIT`], else the cheapest (the first queued
    /// among equals).
    fn pick(&self, now: Instant, cost: impl Fn(TenantKey) -> Option<u64>) -> Option<TenantKey> {
        if let Some((key, _)) = self.keys.iter().find(|(key, since)| {
            now.saturating_duration_since(*since) >= MAX_WAIT && cost(*key).is_some()
        }) {
            return Some(*key);
        }
        let mut best: Option<(u64, TenantKey)> = None;
        for (key, _) in &self.keys {
            let Some(c) = cost(*key) else { continue };
            if best.is_none_or(|(b, _)| c < b) {
                best = Some((c, *key));
            }
        }
        best.map(|(_, key)| key)
    }
}

/// The queue of tenants waiting for a graph build, and the thread that builds.
pub(crate) struct GraphBuilder {
    waiting: Mutex<Waiting>,
    /// Signalled when a tenant is queued, and at shutdown.
    queued: Condvar,
    /// The tenant the builder works on now (its builds, their save and calibration), which the
    /// budget evicts last (see `IndexRegistry::enforce_budget_now`): an eviction abandons the
    /// build, and a tenant evicted again before every rebuild would never get its graph.
    pub(crate) building: Mutex<Option<TenantKey>>,
    /// Jobs queued or running, for `wait_idle`.
    busy: Mutex<usize>,
    idle: Condvar,
    pub(crate) stop: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// The tenants whose builds started, in order (tests read it).
    #[cfg(test)]
    pub(crate) started: Mutex<Vec<TenantKey>>,
    /// Work done (vectors × m × ef_construction of each build: an insert's cost grows about
    /// with both) and seconds spent by finished builds, for migration estimates.
    measured: Mutex<(f64, f64)>,
    /// Run after a build's bulk insert, before its catch-up, and after each catch-up round
    /// (tests write there).
    #[cfg(test)]
    pub(crate) after_bulk: Mutex<Option<Box<dyn FnMut() + Send>>>,
    #[cfg(test)]
    pub(crate) after_round: Mutex<Option<Box<dyn FnMut() + Send>>>,
    /// Builds that gave way to other tenants' because their tenant wrote faster than they
    /// caught up (see `build_and_install`).
    pub(crate) gave_way: AtomicU64,
    /// The last install's figures: catch-up rounds, slots replayed under the lock, and how many
    /// it could have replayed there (what the tests check the catch-up by).
    pub(crate) last_install: Mutex<(usize, usize, usize)>,
    /// The priority a build's computing runs at ([`GraphBuilder::compute`]).
    priority: BackgroundPriority,
    /// The thread each stretch of computing ran on, by name, in order (tests read it).
    #[cfg(test)]
    pub(crate) computed_on: Mutex<Vec<Option<String>>>,
}

impl GraphBuilder {
    pub fn new(priority: BackgroundPriority) -> Self {
        GraphBuilder {
            waiting: Mutex::default(),
            queued: Condvar::new(),
            building: Mutex::new(None),
            busy: Mutex::new(0),
            idle: Condvar::new(),
            stop: AtomicBool::new(false),
            thread: Mutex::new(None),
            #[cfg(test)]
            started: Mutex::default(),
            measured: Mutex::new((0.0, 0.0)),
            #[cfg(test)]
            after_bulk: Mutex::default(),
            #[cfg(test)]
            after_round: Mutex::default(),
            gave_way: AtomicU64::new(0),
            last_install: Mutex::default(),
            priority,
            #[cfg(test)]
            computed_on: Mutex::default(),
        }
    }

    /// Runs a stretch of a build's computing, which takes no lock a request takes, at the
    /// background priority (`strata_sched::run_lowered`): a build uses only the CPU requests
    /// leave. Its steps under the tenant's index lock stay on the building thread, at normal
    /// priority, so that a build preempted for the requests never holds them up.
    pub(crate) fn compute<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        strata_sched::run_lowered("strata-graph-insert", self.priority, || {
            #[cfg(test)]
            lock(&self.computed_on).push(std::thread::current().name().map(str::to_owned));
            f()
        })
    }

    /// Starts the building thread; it holds the store, and the registry while it waits for a
    /// tenant or builds, until [`GraphBuilder::shutdown`] (which `Engine`'s drop calls).
    pub fn start(registry: &Arc<IndexRegistry>, store: Arc<Store>) {
        let mut thread = lock(&registry.builder.thread);
        if thread.is_some() || lock(&registry.builder.waiting).closed {
            return;
        }
        let weak = Arc::downgrade(registry);
        let handle = std::thread::Builder::new()
            .name("strata-graph-build".into())
            .spawn(move || run(weak, store));
        if let Ok(handle) = handle {
            *thread = Some(handle);
        }
    }

    /// Queues the tenant's wanted graphs (once, however often asked before it runs).
    pub fn request(&self, key: TenantKey) {
        let mut waiting = lock(&self.waiting);
        if waiting.closed || waiting.keys.iter().any(|(k, _)| *k == key) {
            return;
        }
        waiting.keys.push((key, Instant::now()));
        drop(waiting);
        *lock(&self.busy) += 1;
        self.queued.notify_one();
    }

    /// The next tenant to build, once one is queued; `None` at shutdown. `cost` is read
    /// without the queue's lock held (it takes the registry's).
    fn next(&self, cost: impl Fn(TenantKey) -> u64) -> Option<TenantKey> {
        let mut waiting = lock(&self.waiting);
        loop {
            if waiting.closed {
                return None;
            }
            if !waiting.keys.is_empty() {
                break;
            }
            waiting = self.queued.wait(waiting).unwrap_or_else(|e| e.into_inner());
        }
        let keys: Vec<TenantKey> = waiting.keys.iter().map(|(k, _)| *k).collect();
        drop(waiting);
        let costs: Vec<(TenantKey, u64)> = keys.iter().map(|k| (*k, cost(*k))).collect();
        let mut waiting = lock(&self.waiting);
        let cost_of = |k: TenantKey| costs.iter().find(|(c, _)| *c == k).map(|(_, cost)| *cost);
        // Only this thread takes keys out: every one listed is still queued; one queued
        // meanwhile is not priced yet, and waits for the next pick.
        let key = waiting.pick(Instant::now(), cost_of)?;
        waiting.keys.retain(|(k, _)| *k != key);
        Some(key)
    }

    /// Vectors per second a build with `params` would reach, from the builds this server has
    /// finished (scaled by `m × ef_construction`); `None` before the first.
    pub fn vectors_per_sec(&self, params: HnswParams) -> Option<f64> {
        let (work, secs) = *lock(&self.measured);
        let per_vector = (params.m * params.ef_construction) as f64;
        (work > 0.0 && secs > 0.0).then(|| work / secs / per_vector)
    }

    /// Blocks until every queued build has finished (for tests and benchmarks).
    pub fn wait_idle(&self) {
        let mut busy = lock(&self.busy);
        while *busy > 0 {
            busy = self.idle.wait(busy).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn done(&self) {
        let mut busy = lock(&self.busy);
        *busy = busy.saturating_sub(1);
        if *busy == 0 {
            self.idle.notify_all();
        }
    }

    /// Stops the thread (abandoning a build in progress) and waits for it, so that the store
    /// it holds is released with the engine.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Relaxed);
        {
            let mut waiting = lock(&self.waiting);
            waiting.closed = true;
            waiting.keys.clear();
        }
        self.queued.notify_all();
        if let Some(handle) = lock(&self.thread).take() {
            let _ = handle.join();
        }
        *lock(&self.busy) = 0;
        self.idle.notify_all();
    }
}

fn run(registry: Weak<IndexRegistry>, store: Arc<Store>) {
    loop {
        let key = {
            let Some(registry) = registry.upgrade() else {
                return;
            };
            // A tenant's loaded bytes stand for its build's cost: vectors are most of them.
            let cost = |k: TenantKey| {
                registry
                    .get(k)
                    .map_or(0, |s| s.counters.bytes.load(Ordering::Relaxed))
            };
            match registry.builder.next(cost) {
                Some(key) => key,
                None => return,
            }
        };
        let Some(registry) = registry.upgrade() else {
            return;
        };
        #[cfg(test)]
        lock(&registry.builder.started).push(key);
        if !registry.builder.stop.load(Ordering::Relaxed)
            && let Some(slot) = registry.get(key)
        {
            let _building = Building::mark(&registry.builder, key);
            let _ = build_tenant(&registry, &store, key, &slot);
        }
        registry.builder.done();
    }
}

/// Marks a tenant as the one being built ([`GraphBuilder::building`]) until dropped, a panic's
/// unwinding included, so that a failed build never leaves its tenant evicted last for good.
struct Building<'a>(&'a GraphBuilder);

impl<'a> Building<'a> {
    fn mark(builder: &'a GraphBuilder, key: TenantKey) -> Building<'a> {
        *lock(&builder.building) = Some(key);
        Building(builder)
    }
}

impl Drop for Building<'_> {
    fn drop(&mut self) {
        *lock(&self.0.building) = None;
    }
}

fn build_tenant(
    registry: &IndexRegistry,
    store: &Store,
    key: TenantKey,
    slot: &TenantSlot,
) -> Result<(), EngineError> {
    let wanted = {
        let guard = slot.index.read().unwrap_or_else(|e| e.into_inner());
        guard
            .as_ref()
            .map(|i| i.graphs_wanted())
            .unwrap_or_default()
    };
    let mut built = false;
    for name in wanted {
        built |= build_collection(registry, store, key, slot, &name)?;
    }
    if built {
        save_slot(store, key, slot)?;
        // An installed graph adds to the tenant's bytes (below the exact-scan budget its
        // vectors stay copied beside it): the budget is enforced here too, not only at the
        // next load or write, which a server serving searches of loaded tenants may not see.
        registry.enforce_budget(store, None);
    }
    calibrate_grown(registry, slot);
    Ok(())
}

/// Measures again the tenant's graphs that want it (`TenantIndex::calibrations_wanted`); a
/// shutdown does not wait for a measurement (seconds on a large graph).
pub(crate) fn calibrate_grown(registry: &IndexRegistry, slot: &TenantSlot) {
    let grown = {
        let guard = slot.index.read().unwrap_or_else(|e| e.into_inner());
        guard
            .as_ref()
            .map(|i| i.calibrations_wanted())
            .unwrap_or_default()
    };
    let stopping = || registry.builder.stop.load(Ordering::Relaxed);
    for name in grown {
        crate::calibrate::calibrate_collection(registry, slot, &name, &stopping);
    }
}

pub(crate) fn log_calibration(
    slot: &TenantSlot,
    name: &CollectionName,
    c: &Calibration,
    len: usize,
    took: std::time::Duration,
) {
    tracing::info!(
        tenant = %slot.id,
        collection = %name,
        vectors = len,
        ef = c.ef,
        recall = c.recall,
        steps = c.steps,
        ms = took.as_millis() as u64,
        "graph calibrated: default search beam for the target recall"
    );
}

/// The index a build began in, by its tenant's load count then (`counters.loads`, bumped
/// under the index lock by every load). A tenant reloaded since (evicted, or its index dropped
/// after a failed write) holds another index, whose collection of the same name has a log and
/// maybe a seed of its own: the build must neither read nor clear them.
#[derive(Clone, Copy)]
struct Began {
    loads: u64,
}

impl Began {
    fn now(slot: &TenantSlot) -> Began {
        Began {
            loads: slot.counters.loads.load(Ordering::Relaxed),
        }
    }

    /// Whether the slot still holds that index; ask under the index lock.
    fn same_index(self, slot: &TenantSlot) -> bool {
        slot.counters.loads.load(Ordering::Relaxed) == self.loads
    }
}

/// Builds and installs one collection's graph; `false` if abandoned. A build that does not
/// install stops the collection's log of changed slots, which would otherwise grow with every
/// write and keep the next build from starting, unless it put its seed back to be resumed.
/// A seed that is not put back is lost: the collection's next build starts from nothing, and
/// saves may go on (`CollectionIndex::catching_up`).
fn build_collection(
    registry: &IndexRegistry,
    store: &Store,
    key: TenantKey,
    slot: &TenantSlot,
    name: &CollectionName,
) -> Result<bool, EngineError> {
    let mut began = None;
    let out = build_and_install(registry, store, key, slot, name, &mut began);
    if !matches!(out, Ok(true))
        && let Some(began) = began
    {
        let mut guard = slot.index.write().unwrap_or_else(|e| e.into_inner());
        if began.same_index(slot)
            && let Some(ci) = guard.as_mut().and_then(|i| i.collections.get_mut(name))
            && ci.seed.is_none()
        {
            ci.building = None;
            ci.catching_up = false;
        }
    }
    out
}

/// The bytes of a graph under construction, counted in the registry's total until it is
/// dropped or installed (where the tenant's own count takes it over).
struct InFlightBytes<'r> {
    registry: &'r IndexRegistry,
    charged: u64,
}

impl InFlightBytes<'_> {
    fn measure(&mut self, graph: &HnswIndex) {
        let now = graph.memory_bytes() as u64;
        self.registry.charge_building(self.charged, now);
        self.charged = now;
    }
}

impl Drop for InFlightBytes<'_> {
    fn drop(&mut self) {
        self.registry.charge_building(self.charged, 0);
    }
}

fn build_and_install(
    registry: &IndexRegistry,
    store: &Store,
    key: TenantKey,
    slot: &TenantSlot,
    name: &CollectionName,
    began_out: &mut Option<Began>,
) -> Result<bool, EngineError> {
    let Some(Start {
        slots,
        mut graph,
        seeded,
        began,
    }) = start_build(slot, name)?
    else {
        return Ok(false);
    };
    *began_out = Some(began);
    let started = std::time::Instant::now();
    let built_with = graph.params();
    graph
        .reserve(slots.len())
        .map_err(|e| EngineError::Index(e.to_string()))?;
    let mut building = InFlightBytes {
        registry,
        charged: 0,
    };
    if seeded {
        // The seed left the tenant's index for the builder: counted as in flight first, then
        // out of the tenant's own count (for a moment in both, never in neither), or a
        // tenant catching up a large graph would hold it outside the budget.
        building.measure(&graph);
        let guard = slot.index.write().unwrap_or_else(|e| e.into_inner());
        registry.account(slot, guard.as_ref());
    }
    for chunk in slots.chunks(CHUNK) {
        let Some(items) = copy_chunk(registry, slot, name, began, chunk)? else {
            return Ok(false);
        };
        let refs: Vec<(u32, &[f32])> = items.iter().map(|(s, v)| (*s, v.as_slice())).collect();
        // One thread: the build shares the machine with the requests it must not slow.
        registry
            .builder
            .compute(|| graph.insert_batch(&refs, 1))
            .map_err(|e| EngineError::Index(e.to_string()))?;
        // What it holds so far, and room made for it: the least recently used other tenants
        // go, as a load of this tenant would make them.
        building.measure(&graph);
        registry.enforce_budget(store, Some(key));
    }
    // The graph's default beam for the target recall, measured on the vectors just built
    // with no lock held (see `strata_index::hnsw_calibrate`); a rebuild measures again. Its
    // brute force takes seconds on a large graph: given up at once when the server shuts
    // down or the tenant is evicted, purged or reloaded, which the catch-up below then sees,
    // so nothing of it is kept. Asked between the measurement's steps at the background
    // priority, that check reads atomics only, no lock: a dropped collection is seen only by
    // the catch-up. A seed keeps the beam measured for it (measured again once it has grown,
    // `calibrate_grown`).
    let calibrating = std::time::Instant::now();
    let abandoned = || {
        registry.builder.stop.load(Ordering::Relaxed)
            || !began.same_index(slot)
            || !slot.counters.resident.load(Ordering::Relaxed)
    };
    if !seeded
        && let Some(c) = registry
            .builder
            .compute(|| graph.calibrate_until(CalibrationSettings::default(), &abandoned))
    {
        log_calibration(slot, name, &c, graph.len(), calibrating.elapsed());
    }
    #[cfg(test)]
    if let Some(hook) = lock(&registry.builder.after_bulk).as_mut() {
        hook();
    }
    // Removals replayed by the catch-up rounds: tombstones in the new graph (a seed's own
    // count from the start).
    let (mut removed, mut rounds) = (if seeded { graph.tombstones() as u64 } else { 0 }, 0);
    let (mut last_len, mut not_shrinking) = (usize::MAX, 0);
    // One slot's wall time in the last catch-up round, once one ran.
    let mut each: Option<Duration> = None;
    let mut guard = loop {
        if registry.builder.stop.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let mut guard = slot.index.write().unwrap_or_else(|e| e.into_inner());
        if !began.same_index(slot) {
            return Ok(false);
        }
        let Some(ci) = guard.as_mut().and_then(|i| i.collections.get_mut(name)) else {
            return Ok(false);
        };
        let logged = match &mut ci.building {
            None => return Ok(false),
            // Or, once a round no longer shrank the log, up to the cap: the rounds gain nothing
            // more, and giving way would throw the graph away.
            Some(log)
                if log.len() <= replay_under_lock(each)
                    || (log.len() <= REPLAY_UNDER_LOCK && log.len() >= last_len) =>
            {
                break guard;
            }
            Some(log) => {
                // The tenant writes faster than one thread replays (its writes are cheap
                // while it has no graph): give way to the other tenants' builds, and try
                // again from the back of the queue, the collection searched exactly meanwhile.
                not_shrinking = if log.len() >= last_len {
                    not_shrinking + 1
                } else {
                    0
                };
                if not_shrinking >= MAX_ROUNDS_NOT_SHRINKING {
                    // A seed goes back, caught up as far as it got, its log kept: the next
                    // try resumes it rather than build from nothing.
                    if seeded {
                        ci.seed = Some(graph);
                        // Back in the tenant's count (its in-flight charge ends with the
                        // build).
                        registry.account(slot, guard.as_ref());
                    }
                    drop(guard);
                    tracing::info!(
                        tenant = %slot.id,
                        collection = %name,
                        logged = last_len,
                        "graph build gave way: the tenant writes faster than the build catches \
                         up; queued again, its collection searched exactly meanwhile"
                    );
                    registry.builder.gave_way.fetch_add(1, Ordering::Relaxed);
                    registry.builder.request(key);
                    return Ok(false);
                }
                last_len = log.len();
                // Logging goes on into the emptied log while this round replays.
                std::mem::take(log)
            }
        };
        drop(guard);
        let logged = distinct(logged);
        let (replaying, replay_began) = (logged.len(), Instant::now());
        match catch_up(registry, slot, name, began, &mut graph, logged)? {
            Some(n) => removed += n,
            None => return Ok(false),
        }
        each = per_slot(replay_began.elapsed(), replaying).or(each);
        rounds += 1;
        #[cfg(test)]
        if let Some(hook) = lock(&registry.builder.after_round).as_mut() {
            hook();
        }
    };
    let Some(index) = guard.as_mut() else {
        return Ok(false);
    };
    let Some(ci) = index.collections.get_mut(name) else {
        return Ok(false);
    };
    let replayed = match ci.install_graph(graph, removed) {
        Ok(replayed) => replayed,
        Err(e) => {
            ci.building = None;
            return Err(e);
        }
    };
    let vectors = ci.with_vector.len();
    *lock(&registry.builder.last_install) = (rounds, replayed, replay_under_lock(each));
    index.mark_dirty();
    registry.account(slot, guard.as_ref());
    if seeded {
        tracing::info!(
            tenant = %slot.id,
            collection = %name,
            vectors,
            rounds,
            ms = started.elapsed().as_millis() as u64,
            "restored graph caught up with the records changed since its save, and installed"
        );
    }
    // A seed's catch-up is no build of `slots.len()` vectors: it would skew the estimates.
    if !seeded {
        let p = built_with;
        let mut m = lock(&registry.builder.measured);
        m.0 += (slots.len() * p.m * p.ef_construction) as f64;
        m.1 += started.elapsed().as_secs_f64();
    }
    Ok(true)
}

/// What a build starts from, under the tenant's index lock: the slots to insert into a new
/// graph, from then on logging every changed slot for the catch-up; or a seed the load set
/// aside (`CollectionIndex::seed`), whose log runs since the load, with nothing to insert but
/// that log. `None` when no build is due or one is running.
fn start_build(slot: &TenantSlot, name: &CollectionName) -> Result<Option<Start>, EngineError> {
    let mut guard = slot.index.write().unwrap_or_else(|e| e.into_inner());
    let began = Began::now(slot);
    let Some(ci) = guard.as_mut().and_then(|i| i.collections.get_mut(name)) else {
        return Ok(None);
    };
    if let Some(seed) = ci.seed.take()
        && ci.building.is_some()
    {
        return Ok(Some(Start {
            slots: Vec::new(),
            graph: seed,
            seeded: true,
            began,
        }));
    }
    if !ci.wants_graph() || ci.building.is_some() {
        return Ok(None);
    }
    ci.building = Some(Vec::new());
    Ok(Some(Start {
        slots: ci.with_vector.iter().collect(),
        graph: ci.new_graph()?,
        seeded: false,
        began,
    }))
}

/// Where a build starts (see [`start_build`]).
struct Start {
    /// Slots whose vectors go into `graph` first: all of them for a new graph, none for a seed.
    slots: Vec<u32>,
    graph: HnswIndex,
    /// `graph` is a seed the load set aside.
    seeded: bool,
    began: Began,
}

/// The slots of a log, each once, in slot order (a slot written twice is logged twice).
fn distinct(mut logged: Vec<u32>) -> Vec<u32> {
    logged.sort_unstable();
    logged.dedup();
    logged
}

/// Replays `logged` slots (written while the graph was built; distinct, in slot order, see
/// [`distinct`]) into `graph` with no lock held:
/// each slot is removed, then inserted again with the vector it holds now, copied under a
/// short read lock a chunk at a time. A slot written again after its copy is logged again and
/// replayed by a later round or by the install. Returns how many removals left a tombstone,
/// or `None` if the build was abandoned meanwhile.
fn catch_up(
    registry: &IndexRegistry,
    slot: &TenantSlot,
    name: &CollectionName,
    began: Began,
    graph: &mut HnswIndex,
    logged: Vec<u32>,
) -> Result<Option<u64>, EngineError> {
    let mut removed = 0;
    let mut held = vec![0.0; graph.dim()];
    for chunk in logged.chunks(CHUNK) {
        let Some(items) = copy_chunk(registry, slot, name, began, chunk)? else {
            return Ok(None);
        };
        // In slot order, as `chunk`.
        let replay = || {
            let mut items = items.into_iter().peekable();
            let mut removed = 0;
            for &s in chunk {
                let now = items.next_if(|(i, _)| *i == s).map(|(_, v)| v);
                removed += u64::from(replay_slot(graph, s, now.as_deref(), &mut held)?);
            }
            Ok::<_, EngineError>(removed)
        };
        removed += registry.builder.compute(replay)?;
    }
    Ok(Some(removed))
}

/// Slots with copies of their vectors.
type Copied = Vec<(u32, Vec<f32>)>;

/// Copies of the vectors `chunk`'s slots hold now (those that hold one, in `chunk`'s order),
/// under a short read lock; `None` when the build is to stop: the server is shutting down, or
/// the build was abandoned (the tenant evicted, the collection dropped).
fn copy_chunk(
    registry: &IndexRegistry,
    slot: &TenantSlot,
    name: &CollectionName,
    began: Began,
    chunk: &[u32],
) -> Result<Option<Copied>, EngineError> {
    if registry.builder.stop.load(Ordering::Relaxed) {
        return Ok(None);
    }
    let guard = slot.index.read().unwrap_or_else(|e| e.into_inner());
    if !began.same_index(slot) {
        return Ok(None);
    }
    match guard.as_ref().and_then(|i| i.collections.get(name)) {
        Some(ci) if ci.building.is_some() => ci.vectors_of(chunk).map(Some),
        _ => Ok(None),
    }
}

#[cfg(test)]
#[path = "graph_build_tests.rs"]
mod tests;
