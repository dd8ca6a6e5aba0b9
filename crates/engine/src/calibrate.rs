//! Calibrating a live graph's default search beam again: one that grew by
//! `RECALIBRATE_GROWTH` since it was calibrated (built at a collection's first
//! few thousand vectors, then grown by inserts), or was saved before calibrations were kept.
//!
//! The measurement is the index crate's (`strata_index::hnsw_calibrate`), but done in short
//! steps, each under the tenant's index read lock, as a graph build copies its vectors: the
//! sampled queries and then the vectors, a chunk at a time, are copied under the lock and the
//! brute force runs with no lock held; each graph search of the ladder takes the read lock for
//! itself. So the tenant's writes never wait for the whole measurement (about 64 × vectors
//! distance computations), only for one step of it. Writes made meanwhile only blur the
//! measurement a little (a vector changed between its copy and a search); the result is a
//! tuning of the default beam, not an answer.

use std::sync::atomic::Ordering;

use strata_index::hnsw_calibrate::{Calibration, CalibrationSettings, climb, sample_positions};
use strata_index::{Hit, exact::sort_hits, exact_top_k_prepared};
use strata_types::CollectionName;

use crate::collection_index::CollectionIndex;
use crate::registry::{IndexRegistry, TenantSlot};
use crate::tenant_index::TenantIndex;

/// Vectors copied per read lock.
const CHUNK: usize = 2048;

/// The tenant's index as the measurement began: one loaded since (the tenant was evicted, or
/// its index dropped, and loaded again) is another index, whose graph this measurement does
/// not describe.
struct Began<'a> {
    slot: &'a TenantSlot,
    loads: u64,
}

impl Began<'_> {
    /// Runs `f` on the collection under a short read lock; `None` if the tenant was evicted
    /// or purged (its index dropped, whether loaded again since or not) or the collection
    /// dropped meanwhile.
    fn with_collection<T>(
        &self,
        name: &CollectionName,
        f: impl FnOnce(&CollectionIndex) -> Option<T>,
    ) -> Option<T> {
        let guard = self.slot.index.read().unwrap_or_else(|e| e.into_inner());
        // Read under the lock: a reload sets the index and counts the load under the write lock.
        if self.slot.counters.loads.load(Ordering::Relaxed) != self.loads {
            return None;
        }
        guard
            .as_ref()
            .and_then(|i: &TenantIndex| i.collections.get(name))
            .and_then(f)
    }
}

/// Measures the collection's graph again and keeps the result (see the module docs); does
/// nothing if the graph no longer wants it or goes away meanwhile (the tenant evicted or
/// purged, the collection dropped), or once `stop` answers `true` (the server shuts down),
/// which is asked between chunks of the brute force and before each graph search.
pub(crate) fn calibrate_collection(
    registry: &IndexRegistry,
    slot: &TenantSlot,
    name: &CollectionName,
    stop: &dyn Fn() -> bool,
) {
    let started = std::time::Instant::now();
    let settings = CalibrationSettings::default();
    let k = settings.k;
    let began = Began {
        slot,
        loads: slot.counters.loads.load(Ordering::Relaxed),
    };
    let Some((slots, queries, len, metric)) = began.with_collection(name, |ci| {
        let g = ci.graph.as_ref().filter(|_| ci.wants_calibration())?;
        let slots: Vec<u32> = ci.with_vector.iter().collect();
        if slots.len() < settings.queries + k {
            return None;
        }
        let picked: Vec<u32> = sample_positions(slots.len(), settings.queries, settings.seed)
            .into_iter()
            .map(|i| slots[i])
            .collect();
        let queries = ci.vectors_of(&picked).ok()?;
        Some((slots, queries, g.len(), ci.metric))
    }) else {
        return;
    };
    // The exact top-k of each query, the query itself left out.
    let mut truth: Vec<Vec<Hit>> = vec![Vec::new(); queries.len()];
    for chunk in slots.chunks(CHUNK) {
        if stop() {
            return;
        }
        let Some(items) = began.with_collection(name, |ci| ci.vectors_of(chunk).ok()) else {
            return;
        };
        // On copies, with no lock held: at the background priority (`GraphBuilder::compute`).
        // The searches below stay on this thread, under the tenant's index read lock.
        registry.builder.compute(|| {
            for ((q_slot, q), best) in queries.iter().zip(truth.iter_mut()) {
                let others = items
                    .iter()
                    .filter(|(s, _)| s != q_slot)
                    .map(|(s, v)| (*s, v.as_slice()));
                best.extend(exact_top_k_prepared(metric, q, others, k));
                sort_hits(best);
                best.truncate(k);
            }
        });
    }
    // From the built-in default, as the index's own measurement does.
    let base = strata_index::HnswParams::default().ef_search;
    let c = climb(base, &settings, |ef| {
        let mut found = 0;
        for ((q_slot, q), best) in queries.iter().zip(&truth) {
            if stop() {
                return None;
            }
            // Leave one out, as the index's own measurement does: the query's node is never
            // entered nor expanded, so it is found as a fresh query's neighbours are.
            let hits = began.with_collection(name, |ci| {
                ci.graph
                    .as_ref()?
                    .search_without(q, k, Some(ef), *q_slot)
                    .ok()
            })?;
            // A hit counts by its score, not its slot: among duplicates of equal score the
            // true top-k is any k of them (see `strata_index::hnsw_calibrate::within`).
            let kth = best.last().map_or(f32::NEG_INFINITY, |b| b.score);
            found += hits.iter().filter(|h| as_near(h.score, kth)).count();
        }
        Some(found as f64 / (k * queries.len()).max(1) as f64)
    });
    let Some(c) = c else {
        return;
    };
    keep(registry, &began, name, c, len, started.elapsed());
}

/// Whether a hit scoring `score` is as near as the `k`-th true neighbour scoring `kth`
/// (higher is nearer), within the rounding of scores computed in another order.
fn as_near(score: f32, kth: f32) -> bool {
    score >= kth - 1e-5 * kth.abs().max(1.0)
}

/// Keeps `c` in the collection's graph under a short write lock, unless the index was loaded
/// again since the measurement began; the next save persists it.
fn keep(
    registry: &IndexRegistry,
    began: &Began<'_>,
    name: &CollectionName,
    c: Calibration,
    len: usize,
    took: std::time::Duration,
) {
    let slot = began.slot;
    let mut guard = slot.index.write().unwrap_or_else(|e| e.into_inner());
    if slot.counters.loads.load(Ordering::Relaxed) != began.loads {
        return;
    }
    let Some(index) = guard.as_mut() else {
        return;
    };
    let Some(g) = index
        .collections
        .get_mut(name)
        .and_then(|ci| ci.graph.as_mut())
    else {
        return;
    };
    g.set_calibration(c, len);
    index.mark_dirty();
    registry.account(slot, guard.as_ref());
    crate::graph_build::log_calibration(slot, name, &c, len, took);
}

#[cfg(test)]
#[path = "calibrate_tests.rs"]
mod tests;
