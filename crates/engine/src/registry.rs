//! The loaded tenant indexes, by storage key: loading on first use, applying committed writes
//! in commit order, and keeping the total under the residency budget by evicting the least
//! recently used tenants (see `crate::residency`).
//!
//! Locks of one tenant's slot: `order` (`crate::write_order`) orders its writes, loads and
//! evictions; `index` guards the loaded indexes. A write is in the order from before its
//! storage commit until its changes are applied (writes of one tenant may be in flight
//! together, applied in commit order), and loading and eviction hold the order exclusively,
//! once no write is in flight, so the in-memory indexes see committed writes in commit order,
//! a load never misses one, and an eviction never drops a change that is not in storage.
//! Eviction only ever *tries* the locks of other tenants, so a request never waits for
//! another tenant's work.
//!
//! A search looks its tenant's slot up once ([`IndexRegistry::slot`]) and reaches everything
//! else through it: the index, the integrity state (an atomic copy, no lock) and the sample
//! after the search (the tracker's lock alone while the index has not changed since its
//! health was last read). The slot map is behind a sharded read-write lock (a reader writes
//! only its own shard), so two threads searching one tenant write few lines they share.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{
    Arc, Mutex, MutexGuard, PoisonError, RwLockReadGuard, RwLockWriteGuard, TryLockError,
};

use crossbeam_utils::sync::{ShardedLock, ShardedLockReadGuard, ShardedLockWriteGuard};

use strata_store::{Reads, Store, TenantKey};
use strata_types::TenantId;

use crate::EngineError;
use crate::graph_build::GraphBuilder;
use crate::index_lock::IndexLock;
use crate::integrity::{IndexHealth, IntegrityState, Tracker};
use crate::residency::{
    ResidencyConfig, ResidencySummary, SlotCounters, TenantResidency, TenantResidencyRow,
};
use crate::slot_integrity::SlotIntegrity;
use crate::tenant_index::{Change, TenantIndex};
use crate::write_order::{InFlight, WriteOrder};

/// A test's hook between a write's commit and its apply.
#[cfg(test)]
pub(crate) type CommitHook = Arc<dyn Fn(TenantKey) + Send + Sync>;

/// One tenant's slot in the registry.
pub(crate) struct TenantSlot {
    pub id: TenantId,
    /// Its storage key: the registry's resident set names slots by it.
    key: TenantKey,
    pub order: WriteOrder,
    pub index: IndexLock,
    pub counters: SlotCounters,
    /// Reached through `with_tracker`, which keeps the lock-free copy of the state current.
    integrity: SlotIntegrity,
    /// Pinned by its isolation level (`partition`, `dedicated`): never evicted. Learnt from
    /// the profile at each load and set by level changes.
    pub level_pinned: AtomicBool,
    /// Held through a whole save of the tenant's indexes (`crate::index_save`), which holds
    /// `order` and the index lock only for its capture: one save at a time, taken before
    /// either of those.
    pub saving: Mutex<()>,
    /// Run at each stage of a save (`crate::index_save::SaveStage`); an error fails the save
    /// there, as a crash would cut it short.
    #[cfg(test)]
    #[allow(clippy::type_complexity)]
    pub save_hook: Mutex<
        Option<Box<dyn FnMut(crate::index_save::SaveStage) -> Result<(), EngineError> + Send>>,
    >,
}

impl TenantSlot {
    /// Runs the save hook, if a test set one.
    #[cfg(test)]
    pub fn run_save_hook(&self, stage: crate::index_save::SaveStage) -> Result<(), EngineError> {
        match lock(&self.save_hook).as_mut() {
            Some(hook) => hook(stage),
            None => Ok(()),
        }
    }

    /// Whether its integrity tracker is at rest (`crate::integrity::Tracker::at_rest`).
    pub fn integrity_at_rest(&self) -> bool {
        self.integrity.at_rest()
    }

    /// The tenant's integrity state as of its tracker's last change, read without its lock.
    pub fn integrity_state(&self) -> IntegrityState {
        self.integrity.state()
    }

    /// Runs `f` on the tenant's integrity tracker under its lock; the lock-free copy of the
    /// state is updated from the tracker on the way out.
    pub fn with_tracker<R>(&self, f: impl FnOnce(&mut Tracker) -> R) -> R {
        self.integrity.with_tracker(f)
    }

    /// Returns once the tenant's writes committed so far are applied to its index, never
    /// waiting for writes that commit later (`crate::search_retry`). On the slot the caller
    /// holds: a look-up by key could make an empty slot for a purged tenant.
    pub fn wait_for_apply(&self) {
        self.order.wait_applied();
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing guarded by these mutexes can be left half-done by a panic.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// [`lock`] for a lock of one tenant's that may be held for long: its slot's write order and
/// `saving` (held by a load, a save's capture, an eviction, a level change) and an adaptive
/// namespace's load (`crate::adaptive_cache`). A wait for them is declared to the worker pool
/// (`strata_sched::blocking`), so that a tenant's jobs queued on its own lock do not hold every
/// pool worker while other tenants' requests wait. The uncontended case costs one try.
pub(crate) fn lock_slot<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.try_lock() {
        Ok(guard) => guard,
        Err(TryLockError::Poisoned(e)) => e.into_inner(),
        Err(TryLockError::WouldBlock) => strata_sched::blocking(|| lock(m)),
    }
}

/// Deletes the derived files of a tenant just loaded that no committed row names: what a
/// crash between a save's commit and its deletion of the old files leaves, or a deletion that
/// failed. Otherwise only the tenant's next save deletes them, which a tenant that is only
/// read never makes, and a large graph's file is hundreds of megabytes. A tenant without a
/// derived directory pays one `stat`; nothing is done while a save runs (it deletes them
/// itself, under the same lock).
fn delete_orphan_files(store: &Store, key: TenantKey, slot: &TenantSlot) {
    if !store.derived_dir(key).is_dir() {
        return;
    }
    let Some(_saving) = crate::index_save::try_lock(&slot.saving) else {
        return;
    };
    let _ = crate::index_save::delete_unnamed_files(store, key);
}

/// The registry's slots by storage key.
/// Keyed by storage keys the registry mints, so a fast hash (see the crate's manifest).
type SlotMap = HashMap<TenantKey, Arc<TenantSlot>, foldhash::fast::RandomState>;

/// Loaded tenant indexes, by storage key.
pub(crate) struct IndexRegistry {
    /// Read by every request, changed only when a tenant is first seen or purged: sharded
    /// (`crossbeam_utils::sync::ShardedLock`: a reader writes only its own thread's shard), so
    /// that concurrent look-ups of one tenant write no lock word they share. Through `slots`
    /// and `slots_mut`.
    tenants: ShardedLock<SlotMap>,
    budget: u64,
    pinned: HashSet<TenantId>,
    /// Estimated bytes of every loaded index; the sum of the slots' `bytes`.
    total: AtomicU64,
    /// The keys of the slots whose indexes are loaded: what an eviction chooses from. Every
    /// tenant used recently has a slot (`crate::slot_retirement`), and a budget kept full evicts after
    /// loads and growing writes: walking every slot there cost each such write time in
    /// proportion to all the tenants seen, not to those loaded. Kept by `account`.
    resident: Mutex<HashSet<TenantKey>>,
    /// Logical clock for least-recently-used order.
    pub(crate) clock: AtomicU64,
    /// What outlives the slots of idle tenants dropped (`crate::slot_retirement`). Lock
    /// order: after the slot map's lock.
    pub(crate) retired: Mutex<crate::slot_retirement::Retired>,
    pub builder: GraphBuilder,
    /// The tenants the expiry sweep visits: noted here, from each committed write's changes.
    pub(crate) expiring: crate::expiry_plan::ExpiryPlan,
    /// Finishes evictions that a thread which must not write could not (`crate::evictor`).
    pub evictor: crate::evictor::Evictor,
    /// Hits a search's defensive re-check dropped although the channels had passed them
    /// (`crate::search_retry`): an index bug made visible, never a race.
    recheck_drops: AtomicU64,
    /// Runs in a write between its commit and its apply, for tests of that window.
    #[cfg(test)]
    pub after_commit: Mutex<Option<CommitHook>>,
    /// The thread each apply set aside ran on, by name, in order (`apply_aside`).
    #[cfg(test)]
    pub applied_aside_on: Mutex<Vec<Option<String>>>,
    /// Runs once in a search across grants, after the grants were verified and before the
    /// owners' records are read, for tests of that window (`crate::shares`).
    #[cfg(test)]
    pub before_shared_read: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl IndexRegistry {
    pub fn new(config: &ResidencyConfig, builder: GraphBuilder) -> Self {
        IndexRegistry {
            tenants: ShardedLock::default(),
            budget: config.memory_budget_bytes,
            pinned: config.pinned_set(),
            total: AtomicU64::new(0),
            resident: Mutex::default(),
            clock: AtomicU64::new(0),
            retired: Mutex::default(),
            builder,
            expiring: Default::default(),
            evictor: crate::evictor::Evictor::default(),
            recheck_drops: AtomicU64::new(0),
            #[cfg(test)]
            after_commit: Mutex::default(),
            #[cfg(test)]
            applied_aside_on: Mutex::default(),
            #[cfg(test)]
            before_shared_read: Mutex::default(),
        }
    }

    /// The tenant's slot, made if it has none, marked as its most recent use. A request looks
    /// it up once and passes it on (`with_slot_index`, `integrity_sample`).
    pub fn slot(&self, key: TenantKey, id: &TenantId) -> Arc<TenantSlot> {
        let known = self.slots().get(&key).cloned();
        let slot = match known {
            Some(slot) => slot,
            None => self.new_slot(key, id),
        };
        self.mark_used(&slot);
        slot
    }

    /// The keys of the tenants whose indexes are loaded (tests).
    #[cfg(test)]
    pub fn resident_keys(&self) -> HashSet<TenantKey> {
        lock(&self.resident).clone()
    }

    /// The slot map under its read lock. Nothing in it can be left half-changed by a panic (an
    /// insert or a remove of one entry), so a poisoned lock is used as it is.
    pub(crate) fn slots(&self) -> ShardedLockReadGuard<'_, SlotMap> {
        self.tenants.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The slot map under its write lock (see `slots`).
    pub(crate) fn slots_mut(&self) -> ShardedLockWriteGuard<'_, SlotMap> {
        self.tenants.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the tenant is pinned by configuration (`[residency] pinned`).
    pub(crate) fn is_pinned(&self, id: &TenantId) -> bool {
        self.pinned.contains(id)
    }

    /// The tenant's slot, made under the write lock unless another thread made it first; a
    /// new slot takes back the counts of the tenant's dropped one (`crate::slot_retirement`).
    fn new_slot(&self, key: TenantKey, id: &TenantId) -> Arc<TenantSlot> {
        self.slots_mut()
            .entry(key)
            .or_insert_with(|| {
                let counters = lock(&self.retired).take(key).counters();
                Arc::new(TenantSlot {
                    id: id.clone(),
                    key,
                    order: WriteOrder::default(),
                    index: IndexLock::default(),
                    counters,
                    integrity: SlotIntegrity::default(),
                    level_pinned: AtomicBool::new(false),
                    saving: Mutex::new(()),
                    #[cfg(test)]
                    save_hook: Mutex::new(None),
                })
            })
            .clone()
    }

    /// Moves the slot to the front of the least-recently-used order. A slot already there
    /// (no other tenant used since) is left alone: the clock and its stamp are written only
    /// when the order changes, so the searches of one busy tenant do not all write the
    /// clock's cache line. Two tenants marked at once may stamp in either order, as before.
    /// A new slot's stamp is 0 (never used; the clock's first stamp is 1), which is never
    /// taken for the front even while the clock is still at 0.
    fn mark_used(&self, slot: &TenantSlot) {
        let stamp = slot.counters.last_used.load(Ordering::Relaxed);
        if stamp != 0 && stamp == self.clock.load(Ordering::Relaxed) {
            return;
        }
        let now = self.clock.fetch_add(1, Ordering::Relaxed) + 1;
        // The larger stamp wins: a use that took its stamp earlier but stores it later must
        // not move the slot back in the order.
        slot.counters.last_used.fetch_max(now, Ordering::Relaxed);
    }

    /// Counts hits a search's re-check dropped on resident state (`recheck_drops`), logged
    /// the first time.
    pub fn note_recheck_drops(&self, id: &TenantId, n: usize) {
        if self.recheck_drops.fetch_add(n as u64, Ordering::Relaxed) == 0 {
            tracing::error!(
                tenant = %id,
                dropped = n,
                "search re-check dropped hits its channels had passed: index disagreement"
            );
        }
    }

    /// Hits dropped by searches' re-checks since start (`note_recheck_drops`).
    pub fn recheck_drops(&self) -> u64 {
        self.recheck_drops.load(Ordering::Relaxed)
    }

    /// The tenant's integrity state (normal for a tenant not seen yet).
    pub fn integrity_state(&self, key: TenantKey) -> IntegrityState {
        self.get(key)
            .map_or(IntegrityState::Normal, |s| s.integrity_state())
    }

    /// Feeds one sample to the tenant's integrity state machine: a search's latency, if any,
    /// and the tenant's index health (the largest deleted fraction of its graphs).
    pub fn integrity_sample(
        &self,
        slot: &TenantSlot,
        policy: &crate::integrity::IntegrityPolicy,
        latency_ms: Option<f64>,
    ) {
        let now = strata_types::now_millis();
        let sample = |tracker: &mut Tracker| {
            let health = tracker.health;
            tracker.sample(policy, latency_ms, health, now);
        };
        // Health changes only with the index, and every change takes its write lock: while
        // none did since the tracker last read it, the health it holds is current.
        if slot
            .integrity
            .with_tracker_if_health_read_at(slot.index.writes(), sample)
            .is_some()
        {
            return;
        }
        // Lock order: the index (read) before the tracker, here and nowhere the other way.
        let guard = self.read_index(slot);
        // Stable while the read lock is held: the count of the index read below.
        let writes = slot.index.writes();
        slot.integrity
            .with_tracker_reading_health_at(writes, |tracker| {
                // An unloaded tenant keeps the health last seen: its graphs did not change
                // meanwhile.
                if let Some(ti) = guard.as_ref() {
                    tracker.health = IndexHealth {
                        deleted_fraction: ti.deleted_fraction(),
                        reachable: crate::connectivity::min_reachable(ti, &mut tracker.reach),
                    };
                }
                sample(tracker);
            });
    }

    /// Feeds one request's queue depth (at submission) and wait on the worker pool to the
    /// tenant's integrity state machine (see `Tracker::queue`).
    pub fn integrity_queue(
        &self,
        key: TenantKey,
        id: &TenantId,
        policy: &crate::integrity::IntegrityPolicy,
        depth: u64,
        wait_ms: f64,
    ) {
        let slot = self.get(key).unwrap_or_else(|| self.slot(key, id));
        slot.with_tracker(|t| t.queue(policy, depth, wait_ms, strata_types::now_millis()));
    }

    pub fn get(&self, key: TenantKey) -> Option<Arc<TenantSlot>> {
        self.slots().get(&key).cloned()
    }

    /// Moves the total by the bytes of a graph being built, not yet installed in any index:
    /// counted, so that the budget makes room for it rather than for what is loaded alone
    /// (a large tenant's build holds hundreds of MB for as long as it runs).
    pub(crate) fn charge_building(&self, before: u64, now: u64) {
        if now >= before {
            self.total.fetch_add(now - before, Ordering::Relaxed);
        } else {
            self.total.fetch_sub(before - now, Ordering::Relaxed);
        }
    }

    /// Brings the slot's byte count (and the total) in line with `index`. Call with the
    /// slot's index lock held.
    pub fn account(&self, slot: &TenantSlot, index: Option<&TenantIndex>) {
        let c = &slot.counters;
        let was = c.resident.swap(index.is_some(), Ordering::Relaxed);
        if was != index.is_some() {
            let mut resident = lock(&self.resident);
            if index.is_some() {
                resident.insert(slot.key);
            } else {
                resident.remove(&slot.key);
            }
        }
        let pending = index.map_or(0, |i| i.graphs_wanted().len());
        c.graphs_pending.store(
            u32::try_from(pending).unwrap_or(u32::MAX),
            Ordering::Relaxed,
        );
        c.graphs_stale.store(
            index.map_or(0, TenantIndex::graphs_stale),
            Ordering::Relaxed,
        );
        c.graph_ef_search.store(
            index.map_or(0, TenantIndex::graph_ef_search),
            Ordering::Relaxed,
        );
        c.graph_vectors.store(
            index.map_or(0, TenantIndex::graph_vectors),
            Ordering::Relaxed,
        );
        let now = index.map_or(0, crate::residency::accounted_bytes);
        let before = slot.counters.bytes.swap(now, Ordering::Relaxed);
        if now >= before {
            self.total.fetch_add(now - before, Ordering::Relaxed);
        } else {
            self.total.fetch_sub(before - now, Ordering::Relaxed);
        }
    }

    /// Runs a write `f` (which commits to storage and returns the changes it made) in the
    /// tenant's write order, then applies the changes to the tenant's indexes if they are
    /// loaded. If applying fails or panics, or the commit fails after `f`'s transaction body
    /// succeeded (`CommitStage`: a late failure may still have changed storage), or `f`
    /// panics, the indexes are dropped and rebuilt from storage on the next search: storage
    /// is the truth, indexes are derived.
    ///
    /// From before `f` runs until its changes are applied, the loaded index is marked
    /// `write_pending` (`crate::hits`): a search that holds it meanwhile reads its hits from
    /// storage, so a committed delete is never answered from the index before it is applied.
    /// With batched writes `f` returns only after the batch's leader committed this write,
    /// so the mark covers that commit too.
    pub fn write<R>(
        &self,
        store: &Store,
        key: TenantKey,
        id: &TenantId,
        f: impl FnOnce(&CommitStage) -> Result<(R, Vec<Change>), EngineError>,
    ) -> Result<R, EngineError> {
        let slot = self.slot(key, id);
        let (result, loaded) = {
            let _order = slot.order.exclusive();
            let mut window = WriteWindow::open(self, &slot);
            let stage = CommitStage::default();
            let (result, changes) = match f(&stage) {
                Ok(done) => done,
                // Nothing committed: the index still matches storage.
                Err(e) if !stage.reached() => {
                    window.close_unchanged();
                    return Err(e);
                }
                // The window's drop forgets the index.
                Err(e) => return Err(e),
            };
            self.after_commit(key);
            self.expiring.note_changes(key, id, &changes);
            let loaded = self.apply(store, key, &slot, changes, true);
            window.closed = true;
            (result, loaded)
        };
        if loaded {
            self.enforce_budget(store, Some(key));
        }
        Ok(result)
    }

    /// [`IndexRegistry::write`] for a write that does not hold the tenant's order while it
    /// commits (`crate::write_order`): any number of the tenant's shared writes may be in
    /// flight together, so they can share one storage transaction. `f` must call
    /// [`CommitStage::committing`] right before the commit that holds its write, under the
    /// storage write lock (`Store::write_batched_for_ordered` does), and nowhere else: that
    /// draws the write's place in the tenant's commit order, in which the changes are
    /// applied. An error of `f` after that leaves the index dropped, as `write` does.
    ///
    /// Only for a write whose every effect is inside its transaction: unlike `write`, nothing
    /// keeps the tenant's other writes from committing between the caller's steps before it.
    pub fn write_shared<R>(
        &self,
        store: &Store,
        key: TenantKey,
        id: &TenantId,
        f: impl FnOnce(&CommitStage) -> Result<(R, Vec<Change>), EngineError>,
    ) -> Result<R, EngineError> {
        let slot = self.slot(key, id);
        let (result, loaded) = {
            // The first write in flight marks the loaded index (`write_pending`), the last one
            // to finish clears the mark (`clear_pending` below).
            let flight = slot.order.enter(|| self.mark_pending(&slot, true));
            let mut window = SharedWindow {
                registry: self,
                slot: &slot,
                closed: false,
            };
            let stage = CommitStage {
                reached: AtomicBool::new(false),
                flight: Some(&flight),
            };
            let outcome = f(&stage);
            let clear_pending = || self.mark_pending(&slot, false);
            let (result, changes) = match outcome {
                Ok(done) => done,
                // No ticket: nothing of it was committed, the index still matches storage.
                Err(e) if !flight.drew() => {
                    window.closed = true;
                    drop(window);
                    flight.finish(clear_pending);
                    return Err(e);
                }
                // The window's drop forgets the index; the flight's waits for its turn.
                Err(e) => return Err(e),
            };
            self.after_commit(key);
            self.expiring.note_changes(key, id, &changes);
            flight.wait_turn();
            // Committed without a place in the order (`f` broke its contract): its changes
            // cannot be applied in order, so the window's drop forgets the index.
            debug_assert!(flight.drew(), "a shared write committed without its ticket");
            if !flight.drew() {
                return Ok(result);
            }
            let loaded = self.apply(store, key, &slot, changes, false);
            window.closed = true;
            drop(window);
            flight.finish(clear_pending);
            (result, loaded)
        };
        if loaded {
            self.enforce_budget(store, Some(key));
        }
        Ok(result)
    }

    /// Runs the test hook between a write's commit and its apply.
    fn after_commit(&self, key: TenantKey) {
        // Taken out of the lock first: a hook that pauses one write must not pause the others.
        #[cfg(test)]
        let hook = lock(&self.after_commit).clone();
        #[cfg(test)]
        if let Some(hook) = hook {
            hook(key);
        }
        #[cfg(not(test))]
        let _ = key;
    }

    /// Applies a committed write's changes to the tenant's loaded index, if it is loaded (a
    /// failed apply drops it), in the write's turn; `clear`: the write was the only one in
    /// flight, so the index's `write_pending` mark goes. Whether an index is loaded after.
    fn apply(
        &self,
        store: &Store,
        key: TenantKey,
        slot: &TenantSlot,
        changes: Vec<Change>,
        clear: bool,
    ) -> bool {
        let mut index = self.write_index(slot);
        if !changes.is_empty() && index.is_some() {
            let applied = if strata_sched::sets_aside() {
                self.apply_aside(store, key, &mut index, changes)
            } else {
                index
                    .as_mut()
                    .map_or(Ok(()), |ti| ti.apply(store, key, changes))
            };
            match index.as_ref() {
                Some(_) if applied.is_err() => *index = None,
                Some(ti) if ti.wants_builder() => self.builder.request(key),
                _ => {}
            }
        }
        if clear && let Some(ti) = index.as_ref() {
            ti.write_pending.store(false, Ordering::SeqCst);
        }
        self.account(slot, index.as_ref());
        index.is_some()
    }

    /// [`TenantIndex::apply`] for a write of a tenant over its share of the pool: the
    /// definitions it needs are read here, and the rest, memory only (a vector write's graph
    /// insert is most of its CPU on the pool), is computed at the background priority by the
    /// worker's helper thread (`strata_sched::compute_aside`), so that another tenant's search
    /// takes the core from it (docs/benchmarks.md, 6 Dec). The index leaves `index` for that
    /// time, under the tenant's index lock, which only the tenant's own requests and its
    /// background work wait on. An apply that panics takes the index with it, as it would
    /// poison the lock (the index is then loaded again when next needed).
    fn apply_aside(
        &self,
        store: &Store,
        key: TenantKey,
        index: &mut Option<TenantIndex>,
        changes: Vec<Change>,
    ) -> Result<(), EngineError> {
        let Some(ti) = index.as_ref() else {
            return Ok(());
        };
        let created = ti.created_collections(store, key, &changes)?;
        let mut ti = index.take().expect("invariant: checked above");
        let (ti, applied, _ran_on) = strata_sched::compute_aside(move || {
            let applied = ti.apply_read(changes, created);
            let ran_on = if cfg!(test) {
                std::thread::current().name().map(str::to_owned)
            } else {
                None
            };
            (ti, applied, ran_on)
        });
        #[cfg(test)]
        lock(&self.applied_aside_on).push(_ran_on);
        *index = Some(ti);
        applied
    }

    /// Marks or clears the loaded index's `write_pending` (through a read guard: searches
    /// holding the index go on, and see the mark from now).
    fn mark_pending(&self, slot: &TenantSlot, pending: bool) {
        if let Some(ti) = self.read_index(slot).as_ref() {
            ti.write_pending.store(pending, Ordering::SeqCst);
        }
    }

    /// The slot's index under its read lock. A lock poisoned by a panic while it was written
    /// may guard a half-changed index: it is dropped (reloaded from storage when next needed).
    pub fn read_index<'s>(&self, slot: &'s TenantSlot) -> RwLockReadGuard<'s, Option<TenantIndex>> {
        if slot.index.is_poisoned() {
            drop(self.write_index(slot));
        }
        slot.index.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The slot's index under its write lock; a poisoned one is dropped (see `read_index`).
    pub fn write_index<'s>(
        &self,
        slot: &'s TenantSlot,
    ) -> RwLockWriteGuard<'s, Option<TenantIndex>> {
        match slot.index.write() {
            Ok(guard) => guard,
            Err(poisoned) => {
                let mut guard = poisoned.into_inner();
                *guard = None;
                slot.index.clear_poison();
                self.account(slot, None);
                guard
            }
        }
    }

    /// Runs `f` with the tenant's indexes, loading them from storage first if needed.
    pub fn with_index<R>(
        &self,
        store: &Store,
        key: TenantKey,
        id: &TenantId,
        f: impl FnOnce(&TenantIndex) -> Result<R, EngineError>,
    ) -> Result<R, EngineError> {
        self.with_slot_index(store, key, &self.slot(key, id), f)
    }

    /// [`IndexRegistry::with_index`] on a slot the caller looked up already (`slot`). A slot
    /// the registry has forgotten since (the tenant was purged) is never loaded again: that
    /// is refused as the tenant not found.
    pub fn with_slot_index<R>(
        &self,
        store: &Store,
        key: TenantKey,
        slot: &Arc<TenantSlot>,
        f: impl FnOnce(&TenantIndex) -> Result<R, EngineError>,
    ) -> Result<R, EngineError> {
        let slot = slot.as_ref();
        {
            let guard = self.read_index(slot);
            if let Some(index) = guard.as_ref() {
                return f(index);
            }
        }
        let loaded_now = {
            let _order = slot.order.exclusive();
            let mut guard = self.write_index(slot);
            if guard.is_none() {
                self.install_loaded(store, key, slot, &mut guard)?;
                true
            } else {
                false
            }
        };
        if loaded_now {
            self.after_load(store, key, slot);
        }
        let guard = self.read_index(slot);
        match guard.as_ref() {
            Some(index) => f(index),
            // Evicted between the load and this read (only by a budget smaller than this one
            // tenant while another request ran): load again, once more.
            None => {
                drop(guard);
                let (result, reloaded) = {
                    let _order = slot.order.exclusive();
                    let mut guard = self.write_index(slot);
                    let reloaded = guard.is_none();
                    if reloaded {
                        self.install_loaded(store, key, slot, &mut guard)?;
                    }
                    let result = match guard.as_ref() {
                        Some(index) => f(index),
                        None => Err(EngineError::Index("tenant index missing after load".into())),
                    };
                    (result, reloaded)
                };
                // A reload is a load like the first: it counts against the budget, and
                // tidies the tenant's files.
                if reloaded {
                    self.after_load(store, key, slot);
                }
                result
            }
        }
    }

    /// Loads the tenant's indexes into its empty slot (`guard`, held with the slot's write
    /// order held exclusively) and counts them; a graph the loaded state still wants is asked of the builder, as
    /// nothing else would ask for it until the tenant's next write.
    fn install_loaded(
        &self,
        store: &Store,
        key: TenantKey,
        slot: &TenantSlot,
        guard: &mut Option<TenantIndex>,
    ) -> Result<(), EngineError> {
        let index = self.load(store, key, slot)?;
        if index.wants_builder() {
            self.builder.request(key);
        }
        *guard = Some(index);
        slot.counters.loads.fetch_add(1, Ordering::Relaxed);
        self.account(slot, guard.as_ref());
        Ok(())
    }

    /// What follows a load once the slot's locks are released: the budget, which the load
    /// may have passed, and files of the tenant that no saved state names.
    fn after_load(&self, store: &Store, key: TenantKey, slot: &TenantSlot) {
        self.enforce_budget(store, Some(key));
        delete_orphan_files(store, key, slot);
    }

    /// Loads the tenant's indexes with its isolation level's graph parameters, learning
    /// from its profile whether the level pins it. Call with the slot's order held, so
    /// a concurrent level change is applied after the load, to the loaded indexes.
    fn load(
        &self,
        store: &Store,
        key: TenantKey,
        slot: &TenantSlot,
    ) -> Result<TenantIndex, EngineError> {
        // A slot looked up before a purge forgot it: loading it would serve (and count) a
        // tenant the registry no longer holds.
        let registered = self
            .slots()
            .get(&key)
            .is_some_and(|s| std::ptr::eq(Arc::as_ptr(s), slot));
        if !registered {
            return Err(EngineError::TenantNotFound(slot.id.clone()));
        }
        let profile = match store.read()?.tenant(&slot.id)? {
            Some(meta) if meta.key == key => crate::lifecycle::TenantProfile::of(&meta)?,
            _ => return Err(EngineError::TenantNotFound(slot.id.clone())),
        };
        slot.level_pinned
            .store(pinned_by_level(&profile), Ordering::Relaxed);
        TenantIndex::load(store, key, crate::isolation::effective_params(&profile))
    }

    /// Applies a committed change of the tenant's level or status to its loaded state: pins
    /// or unpins it (see [`pinned_by_level`]) and hands its loaded graphs its level's
    /// parameters; graphs built with others are rebuilt in the background while they keep
    /// serving. Nothing for a tenant not loaded, whose load reads its profile.
    ///
    /// What is applied is the profile stored now, read under the tenant's write order, not
    /// the change its caller committed: two changes committed in one order may reach here in
    /// the other, and the later arrival would otherwise leave the earlier commit's level (a
    /// partition tenant unpinned, or a shared one pinned with a partition's parameters).
    pub fn apply_profile(&self, store: &Store, key: TenantKey) {
        let Some(slot) = self.get(key) else { return };
        let pinned = {
            let _order = slot.order.exclusive();
            let profile = match store.read().and_then(|r| r.tenant(&slot.id)) {
                Ok(Some(meta)) if meta.key == key => crate::lifecycle::TenantProfile::of(&meta),
                // Purged or replaced: nothing of this incarnation to apply.
                Ok(_) => return,
                Err(e) => Err(e.into()),
            };
            let profile = match profile {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(tenant = %slot.id, error = %e, "reading a changed tenant's profile failed; its loaded indexes keep their level until reloaded");
                    return;
                }
            };
            let pinned = pinned_by_level(&profile);
            slot.level_pinned.store(pinned, Ordering::Relaxed);
            let mut guard = self.write_index(&slot);
            if let Some(ti) = guard.as_mut() {
                ti.set_params(crate::isolation::effective_params(&profile));
                if ti.wants_builder() {
                    self.builder.request(key);
                }
            }
            self.account(&slot, guard.as_ref());
            pinned
        };
        if !pinned {
            self.enforce_budget(store, None);
        }
    }

    /// How many of the tenant's loaded graphs wait for a rebuild with its parameters (0 when
    /// it is not loaded).
    pub fn graphs_stale(&self, key: TenantKey) -> u32 {
        self.get(key)
            .map_or(0, |s| s.counters.graphs_stale.load(Ordering::Relaxed))
    }

    /// Vectors in the tenant's graphs, if it is loaded (from its counters: no lock waited for).
    pub fn graph_vectors(&self, key: TenantKey) -> Option<u64> {
        let c = &self.get(key)?.counters;
        c.resident
            .load(Ordering::Relaxed)
            .then(|| c.graph_vectors.load(Ordering::Relaxed))
    }

    fn over_budget(&self) -> bool {
        self.budget != 0 && self.total.load(Ordering::Relaxed) > self.budget
    }

    /// Evicts least recently used tenants until the loaded indexes fit the budget. `keep` (the
    /// tenant being served) and pinned tenants are never chosen, and the tenant whose graph is
    /// being built is chosen last; a tenant another thread is
    /// using is skipped rather than waited for. Call holding no slot lock. On a thread that
    /// must not write to storage (a low-priority background worker) nothing is evicted here:
    /// the evictor thread (`crate::evictor`) does it at normal priority, and this thread waits
    /// for it a little (`crate::evictor::BACKPRESSURE`), so that a flood of cold loads cannot
    /// outrun it.
    pub fn enforce_budget(&self, store: &Store, keep: Option<TenantKey>) {
        if !self.over_budget() {
            return;
        }
        if !strata_store::writes_allowed_here() {
            self.evictor.request(keep);
            self.evictor
                .wait_idle_or(Some(crate::evictor::BACKPRESSURE), || !self.over_budget());
            return;
        }
        // Victims busy just now (mid-search, mid-save) are tried again by the evictor thread,
        // rather than left over the budget until the next load or write.
        if self.enforce_budget_now(store, &keep.into_iter().collect()) {
            self.evictor.request(keep);
        }
    }

    /// [`IndexRegistry::enforce_budget`] on this thread, never choosing `protect`; whether a
    /// busy victim was skipped and the total is still over the budget (worth another try).
    pub fn enforce_budget_now(&self, store: &Store, protect: &HashSet<TenantKey>) -> bool {
        if !self.over_budget() {
            return false;
        }
        let resident: Vec<TenantKey> = lock(&self.resident).iter().copied().collect();
        let mut victims: Vec<(u64, TenantKey, Arc<TenantSlot>)> = {
            let slots = self.slots();
            resident
                .into_iter()
                .filter_map(|k| slots.get(&k).map(|s| (k, s)))
                .filter(|(k, s)| {
                    !protect.contains(k)
                        && s.counters.bytes.load(Ordering::Relaxed) > 0
                        && !self.pinned.contains(&s.id)
                        && !s.level_pinned.load(Ordering::Relaxed)
                })
                .map(|(k, s)| (s.counters.last_used.load(Ordering::Relaxed), k, s.clone()))
                .collect()
        };
        if victims.is_empty() {
            // Pinned tenants (and the one protected) fill the budget by themselves: every
            // other tenant's load evicts the rest again. Said, at most once a minute.
            static LAST_SAID: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
            let now = strata_types::now_millis();
            if now - LAST_SAID.load(Ordering::Relaxed) >= 60_000 {
                LAST_SAID.store(now, Ordering::Relaxed);
                tracing::warn!(
                    resident_bytes = self.total.load(Ordering::Relaxed),
                    budget = self.budget,
                    "the memory budget is exceeded by tenants that cannot be evicted (pinned, \
                     partition or dedicated, or in use); raise residency.memory_budget_bytes"
                );
            }
            return false;
        }
        // Least recently used first, but the tenant whose graph is being built last of all:
        // evicting it abandons its build (see `crate::graph_build`).
        let building = *lock(&self.builder.building);
        victims.sort_by_key(|(used, key, _)| (Some(*key) == building, *used));
        let mut skipped = false;
        for (_, key, slot) in victims {
            if !self.over_budget() {
                return false;
            }
            skipped |= !self.try_evict(store, key, &slot);
        }
        skipped && self.over_budget()
    }

    /// Saves the tenant's snapshot if it changed, then drops its indexes; does nothing if the
    /// tenant is busy (false), a save of it included. The save is `save_slot`'s: the tenant's
    /// locks are held only while it captures, not while the files reach the disk (an eviction
    /// that saved under them held the victim's writes, and so the pool's workers, for the whole
    /// save). A write between the save and the drop leaves the index changed again, and is in
    /// the change log after the saved sequence, which the next load replays; a failed save
    /// still evicts: the next load rebuilds from storage. The indexes are taken out under the
    /// locks and freed after they are released, so freeing a large tenant holds nobody up.
    pub(crate) fn try_evict(&self, store: &Store, key: TenantKey, slot: &TenantSlot) -> bool {
        match crate::index_save::try_save_slot(store, key, slot) {
            None => return false,
            Some(Err(e)) => {
                tracing::warn!(tenant = %slot.id, error = %e, "saving an evicted tenant's indexes failed; its next load rebuilds them");
            }
            Some(Ok(_)) => {}
        }
        let dropped = {
            let Some(_saving) = crate::index_save::try_lock(&slot.saving) else {
                return false;
            };
            let Some(_order) = slot.order.try_exclusive() else {
                return false;
            };
            // Checked again under the order: the victims were chosen without it, and a level
            // change that pinned the tenant since (a migration into `partition` or
            // `dedicated`, applied under the order) must not be undone by an eviction.
            if self.pinned.contains(&slot.id) || slot.level_pinned.load(Ordering::Relaxed) {
                return false;
            }
            let mut guard = match slot.index.try_write() {
                Ok(g) => g,
                Err(TryLockError::Poisoned(e)) => e.into_inner(),
                Err(TryLockError::WouldBlock) => return false,
            };
            if guard.is_none() {
                return true;
            }
            let dropped = guard.take();
            slot.counters.evictions.fetch_add(1, Ordering::Relaxed);
            self.account(slot, None);
            dropped
        };
        drop(dropped);
        true
    }

    /// Drops a live tenant's loaded indexes without saving them (they no longer match storage
    /// in a way no change describes, a repair's removal of records that did not decode): the
    /// next search loads them again, from a saved image caught up through the change log or
    /// from the records. Waits for the tenant's writes and searches under way; the slot stays,
    /// so a request holding it goes on (unlike [`IndexRegistry::forget`]).
    pub fn unload(&self, key: TenantKey) {
        let Some(slot) = self.get(key) else { return };
        let dropped = {
            let _saving = lock_slot(&slot.saving);
            let _order = slot.order.exclusive();
            let mut guard = self.write_index(&slot);
            let dropped = guard.take();
            self.account(&slot, None);
            dropped
        };
        drop(dropped);
    }

    /// Saves every loaded, changed tenant index; see `Engine::persist_indexes`.
    pub fn persist(&self, store: &Store) -> Result<usize, EngineError> {
        self.save_loaded(store, |_| true)
    }

    /// Saves the loaded tenant indexes holding at least `min_changes` record changes that no
    /// save has captured; see `Engine::checkpoint_indexes`.
    pub fn checkpoint(&self, store: &Store, min_changes: u64) -> Result<usize, EngineError> {
        self.save_loaded(store, |slot| {
            // Only resident tenants: a tenant being loaded holds its index lock for the whole
            // load (seconds for a large one), and has nothing unsaved yet.
            if !slot.counters.resident.load(Ordering::Relaxed) {
                return false;
            }
            // Waits for the index lock: a tenant that writes without pause holds it often, and
            // asking only when it was free (`try_read`) passed such a tenant over at many
            // checkpoints, the very tenant they are for. The wait is about one write's apply.
            let index = slot.index.read().unwrap_or_else(|e| e.into_inner());
            index
                .as_ref()
                .is_some_and(|i| i.unsaved_changes.load(Ordering::Relaxed) >= min_changes)
        })
    }

    /// Saves the loaded tenant indexes `wanted` picks that changed since their last save.
    fn save_loaded(
        &self,
        store: &Store,
        wanted: impl Fn(&TenantSlot) -> bool,
    ) -> Result<usize, EngineError> {
        // Listed first and asked after, with the slot map's lock released: `wanted` may wait
        // for a tenant's index lock, whose holder may want the map.
        let listed: Vec<(TenantKey, Arc<TenantSlot>)> =
            self.slots().iter().map(|(k, v)| (*k, v.clone())).collect();
        let loaded = listed.into_iter().filter(|(_, slot)| wanted(slot));
        // One tenant's failed save does not keep the others' from being saved (at shutdown,
        // the last chance): the first error is returned once all were tried.
        let (mut saved, mut first_error) = (0, None);
        for (key, slot) in loaded {
            match crate::index_save::save_slot(store, key, &slot) {
                Ok(true) => saved += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(tenant = %slot.id, error = %e, "saving a tenant's indexes failed");
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(saved),
        }
    }

    /// Runs `f` with one storage snapshot and the tenant's loaded indexes (if loaded), with
    /// the tenant's writes held back so that both reflect the same commits, and its saves
    /// too: a save commits rows naming new derived files and deletes the old ones with no
    /// other lock held, so the files the snapshot's rows name stay on disk while `f` reads
    /// them. Lock order as a save's: `saving`, then `order`, then the index.
    /// The slot is made if the tenant has none (never used, or dropped while idle): without
    /// it, a load and save starting meanwhile would not wait for `f`.
    pub fn with_consistent<R>(
        &self,
        store: &Store,
        key: TenantKey,
        id: &TenantId,
        f: impl FnOnce(&strata_store::Reader, Option<&TenantIndex>) -> Result<R, EngineError>,
    ) -> Result<R, EngineError> {
        let slot = self.slot(key, id);
        let _saving = lock_slot(&slot.saving);
        let _order = slot.order.exclusive();
        let guard = self.read_index(&slot);
        f(&store.read()?, guard.as_ref())
    }

    /// Tenants with a slot in each integrity state other than `normal`, for server-wide
    /// counts without reading the registry (a tenant without a slot is `normal`).
    pub fn integrity_counts(
        &self,
    ) -> std::collections::BTreeMap<crate::integrity::IntegrityState, u64> {
        let slots: Vec<Arc<TenantSlot>> = self.slots().values().cloned().collect();
        let mut out = std::collections::BTreeMap::new();
        for slot in slots {
            *out.entry(slot.integrity_state()).or_insert(0) += 1;
        }
        out
    }

    /// Forgets a tenant's indexes, after its data was erased. Returns once no save of them is
    /// under way, so the caller may delete the tenant's files: a save between its capture and
    /// its commit holds no index lock, and would otherwise write its graph file into the
    /// erased tenant's directory after the caller deleted it.
    pub fn forget(&self, key: TenantKey) {
        // The map's lock is released before waiting for the tenant's save and index, so other
        // tenants' look-ups do not wait too.
        let removed = {
            let mut slots = self.slots_mut();
            lock(&self.retired).take(key);
            slots.remove(&key)
        };
        if let Some(slot) = removed {
            // A later save of the slot (its `Arc` taken before the removal) then finds no
            // index and writes nothing.
            let _saving = lock_slot(&slot.saving);
            let mut guard = self.write_index(&slot);
            *guard = None;
            self.account(&slot, None);
        }
    }

    /// One tenant's residency, from its counters: never waits for the tenant's index lock, so
    /// the metrics and the admin figures answer while a tenant's graph is installed or saved.
    pub fn residency(&self, key: TenantKey, id: &TenantId) -> TenantResidency {
        let slot = {
            let slots = self.slots();
            match slots.get(&key) {
                Some(slot) => Arc::clone(slot),
                // A dropped slot's counts, read under the map's lock, so that a new slot
                // taking them meanwhile cannot make them read as zero.
                None => {
                    let counters = lock(&self.retired).of(key).counters();
                    return counters.snapshot(self.pinned.contains(id), false);
                }
            }
        };
        self.slot_residency(&slot)
    }

    fn slot_residency(&self, slot: &TenantSlot) -> TenantResidency {
        let pinned = self.pinned.contains(&slot.id) || slot.level_pinned.load(Ordering::Relaxed);
        let shedding = slot.integrity_state() != IntegrityState::Normal;
        slot.counters.snapshot(pinned, shedding)
    }

    /// The whole server's residency.
    pub fn summary(&self) -> ResidencySummary {
        // The dropped slots' counts read with the map, so that a slot dropped meanwhile is
        // counted once.
        let (slots, retired) = {
            let map = self.slots();
            let retired = lock(&self.retired).total();
            let slots: Vec<Arc<TenantSlot>> = map.values().cloned().collect();
            (slots, retired)
        };
        let mut s = ResidencySummary {
            memory_budget_bytes: self.budget,
            resident_bytes: self.total.load(Ordering::Relaxed),
            resident_tenants: 0,
            loads: retired.loads,
            evictions: retired.evictions,
            tenants: Vec::with_capacity(slots.len()),
        };
        let mut rows: Vec<(u64, TenantResidencyRow)> = Vec::with_capacity(slots.len());
        for slot in slots {
            let residency = self.slot_residency(&slot);
            s.resident_tenants += u64::from(residency.resident);
            s.loads += residency.loads;
            s.evictions += residency.evictions;
            let used = slot.counters.last_used.load(Ordering::Relaxed);
            rows.push((
                used,
                TenantResidencyRow {
                    id: slot.id.clone(),
                    residency,
                },
            ));
        }
        rows.sort_by_key(|r| std::cmp::Reverse(r.0));
        s.tenants = rows.into_iter().map(|(_, r)| r).collect();
        s
    }
}

/// Set by a write's closure once its transaction body succeeded (and cleared when a batched
/// write runs it again): an error after that came from the commit, which may have changed
/// storage although it failed. A shared write (`IndexRegistry::write_shared`) also draws its
/// ticket through it, right before its commit (`CommitStage::committing`).
#[derive(Default)]
pub(crate) struct CommitStage<'f> {
    reached: AtomicBool,
    flight: Option<&'f InFlight<'f>>,
}

impl CommitStage<'_> {
    pub fn set(&self, reached: bool) {
        self.reached.store(reached, Ordering::SeqCst);
    }

    fn reached(&self) -> bool {
        self.reached.load(Ordering::SeqCst)
    }

    /// To be called right before the commit that holds the write, under the storage write
    /// lock (`Store::write_batched_for_ordered`): a shared write draws its place in the
    /// tenant's commit order. Nothing for a write that holds the order.
    pub fn committing(&self) {
        if let Some(flight) = self.flight {
            flight.draw();
        }
    }
}

/// A shared write's commit-to-apply window (`IndexRegistry::write_shared`), as
/// [`WriteWindow`] is an ordered write's: dropped open, it drops the index, which is then
/// reloaded from storage once no write is in flight.
struct SharedWindow<'r> {
    registry: &'r IndexRegistry,
    slot: &'r TenantSlot,
    closed: bool,
}

impl Drop for SharedWindow<'_> {
    fn drop(&mut self) {
        if !self.closed {
            let mut guard = self.registry.write_index(self.slot);
            *guard = None;
            self.registry.account(self.slot, None);
        }
    }
}

/// A write's commit-to-apply window on one tenant's loaded index (`IndexRegistry::write`):
/// opening it marks the index `write_pending`; closing it (after the apply) is the write's
/// business. Dropped open, on an error after the commit stage or while unwinding from a
/// panic, it drops the index, which is then reloaded from storage.
struct WriteWindow<'r> {
    registry: &'r IndexRegistry,
    slot: &'r TenantSlot,
    closed: bool,
}

impl<'r> WriteWindow<'r> {
    fn open(registry: &'r IndexRegistry, slot: &'r TenantSlot) -> Self {
        registry.mark_pending(slot, true);
        WriteWindow {
            registry,
            slot,
            closed: false,
        }
    }

    /// Closes the window of a write that committed nothing.
    fn close_unchanged(&mut self) {
        self.registry.mark_pending(self.slot, false);
        self.closed = true;
    }
}

impl Drop for WriteWindow<'_> {
    fn drop(&mut self) {
        if !self.closed {
            let mut guard = self.registry.write_index(self.slot);
            *guard = None;
            self.registry.account(self.slot, None);
        }
    }
}
#[cfg(test)]
#[path = "registry_slot_tests.rs"]
mod tests;

/// Whether a tenant's level keeps its indexes resident: `partition` and `dedicated` do, unless
/// the tenant is soft-deleted. A deleted tenant serves nothing, so its memory must not hold
/// the budget against live tenants until it is purged or restored.
pub(crate) fn pinned_by_level(profile: &crate::lifecycle::TenantProfile) -> bool {
    profile.isolation.pinned() && profile.status != crate::lifecycle::TenantStatus::Deleted
}
