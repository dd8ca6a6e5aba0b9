//! Slots of idle tenants are dropped, so that the memory a node holds for the tenants it has
//! served does not grow with every tenant ever touched since the start.
//!
//! Every tenant a request reached has a slot (`crate::registry::TenantSlot`: its write order,
//! index lock, counters and integrity tracker, about half a kilobyte), and eviction empties a
//! slot's indexes but kept the slot: a node serving a million tenants in turn held half a
//! gigabyte outside the residency budget for tenants long idle. A pass
//! ([`IndexRegistry::retire_idle_slots`], run by the server once a minute) drops the slots
//! that hold nothing a fresh slot would not, and that no request used since the previous pass:
//! - nothing loaded (not resident, no bytes, no graph build pending, no save under way), not
//!   pinned by its level or by configuration;
//! - its integrity tracker at rest: `normal`, no move under way, no transition to show, so
//!   dropping it never lifts a gate or hides a state change;
//! - no other holder of the slot (`Arc::strong_count` 1, checked under the map's write lock,
//!   through which alone a slot is handed out): no write waits in its order, no request holds
//!   its index lock.
//!
//! What a slot counts across its life (loads and evictions, reported per tenant and summed
//! over the server) is kept beside the map, a few words per retired tenant, and handed back to
//! the tenant's next slot, so those counters never go backwards. Tests:
//! `crates/engine/src/registry_slot_tests.rs`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use strata_store::TenantKey;

use crate::registry::{IndexRegistry, TenantSlot, lock};
use crate::residency::SlotCounters;

/// The lifelong counts of a tenant whose slot was dropped.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LifeCounts {
    pub loads: u64,
    pub evictions: u64,
}

/// What outlives dropped slots.
#[derive(Default)]
pub(crate) struct Retired {
    by_key: HashMap<TenantKey, LifeCounts, foldhash::fast::RandomState>,
    /// The sums of `by_key`, for the server's totals.
    total: LifeCounts,
    /// The registry's clock at the previous pass: a slot last used at or before it was not
    /// used since.
    last_mark: u64,
}

impl LifeCounts {
    /// A fresh slot's counters, starting from these counts.
    pub fn counters(self) -> SlotCounters {
        let counters = SlotCounters::default();
        counters.loads.store(self.loads, Ordering::Relaxed);
        counters.evictions.store(self.evictions, Ordering::Relaxed);
        counters
    }
}

impl Retired {
    /// The counts of a tenant without a slot (zero for one never retired).
    pub fn of(&self, key: TenantKey) -> LifeCounts {
        self.by_key.get(&key).copied().unwrap_or_default()
    }

    pub fn total(&self) -> LifeCounts {
        self.total
    }

    /// Takes a tenant's counts back for its new slot.
    pub fn take(&mut self, key: TenantKey) -> LifeCounts {
        let counts = self.by_key.remove(&key).unwrap_or_default();
        self.total.loads -= counts.loads;
        self.total.evictions -= counts.evictions;
        counts
    }

    fn keep(&mut self, key: TenantKey, slot: &TenantSlot) {
        let counts = LifeCounts {
            loads: slot.counters.loads.load(Ordering::Relaxed),
            evictions: slot.counters.evictions.load(Ordering::Relaxed),
        };
        if counts != LifeCounts::default() {
            self.total.loads += counts.loads;
            self.total.evictions += counts.evictions;
            self.by_key.insert(key, counts);
        }
    }
}

/// Slots removed under one hold of the map's write lock, so that look-ups of other tenants
/// wait at most for this many removals.
const CHUNK: usize = 1024;

impl IndexRegistry {
    /// Drops the slots of tenants idle since the previous pass that hold nothing a fresh slot
    /// would not (see the module). Returns how many were dropped. The first pass only marks
    /// the clock.
    pub fn retire_idle_slots(&self) -> usize {
        // The clock moves past the mark, so that any later use stamps its slot above it (a
        // use stamps only when the clock moved since the slot's last stamp).
        let mark = self.clock.fetch_add(1, Ordering::Relaxed);
        let since = std::mem::replace(&mut lock(&self.retired).last_mark, mark);
        let candidates: Vec<TenantKey> = self
            .slots()
            .iter()
            .filter(|(_, slot)| self.idle_since(slot, since))
            .map(|(key, _)| *key)
            .collect();
        let mut dropped = Vec::new();
        for chunk in candidates.chunks(CHUNK) {
            let mut slots = self.slots_mut();
            let mut retired = lock(&self.retired);
            for key in chunk {
                // Handed out only under the map's lock: a count of one now stays one.
                let holdable = slots
                    .get(key)
                    .is_some_and(|s| Arc::strong_count(s) == 1 && self.idle_since(s, since));
                if let Some(slot) = holdable.then(|| slots.remove(key)).flatten() {
                    retired.keep(*key, &slot);
                    dropped.push(slot);
                }
            }
        }
        // A map emptied of most of its slots gives its table back (it grew with the busiest
        // moment, and a `retain` keeps the capacity).
        if !dropped.is_empty() {
            let mut slots = self.slots_mut();
            if slots.capacity() > 4 * slots.len().max(1024) {
                slots.shrink_to_fit();
            }
        }
        // Freed here, after the locks.
        let n = dropped.len();
        drop(dropped);
        n
    }

    fn idle_since(&self, slot: &TenantSlot, since: u64) -> bool {
        let c = &slot.counters;
        c.last_used.load(Ordering::Relaxed) <= since
            && !c.resident.load(Ordering::Relaxed)
            && c.bytes.load(Ordering::Relaxed) == 0
            && c.graphs_pending.load(Ordering::Relaxed) == 0
            && !slot.level_pinned.load(Ordering::Relaxed)
            && !self.is_pinned(&slot.id)
            && slot.index.try_read().is_ok_and(|index| index.is_none())
            && slot.saving.try_lock().is_ok()
            && slot.integrity_at_rest()
    }
}
