//! Searching again when a try lost hits after the graph (the beam policy, `crate::hits`).
//!
//! A first try ranks exactly k. A write that committed but is not yet applied to the index
//! can take some of those hits out of sight when their stored records are read; the try then
//! holds fewer than k and is `short`. Each further try ranks `lost + SPARE_HITS` candidates
//! beyond k, where `lost` counts every hit the earlier tries lost, so a write hiding many hits
//! is not met with a fixed handful of spares. Before the last try the search waits for the
//! tenant's write in flight to be applied (`TenantSlot::wait_for_apply`), so that try
//! ranks from an index holding every write committed before it began, and can lose hits only
//! to a write that commits between that wait and its storage snapshot.

use crate::registry::TenantSlot;
use crate::search::{SPARE_HITS, Searched};
use crate::{Engine, EngineError};

/// How many times a search runs at most when concurrent writes keep taking its hits out of
/// sight.
pub(crate) const SEARCH_ATTEMPTS: usize = 4;

#[cfg(test)]
thread_local! {
    /// Tries run by this thread's searches, for tests that the first try is the only one
    /// when nothing races it.
    pub(crate) static ATTEMPTS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

impl Engine {
    /// Runs `attempt(extra)` (a try that ranks `extra` candidates beyond k) until it is not
    /// short or `SEARCH_ATTEMPTS` tries ran, on the index of the tenant of `slot`. A hit the
    /// last try's re-check dropped on resident state is an index disagreement, not a race: it
    /// is counted (`IndexRegistry::recheck_drops`).
    pub(crate) fn search_until_full<T>(
        &self,
        slot: &TenantSlot,
        mut attempt: impl FnMut(usize) -> Result<(Searched, T), EngineError>,
    ) -> Result<(Searched, T), EngineError> {
        let mut run = |extra: usize| {
            #[cfg(test)]
            ATTEMPTS.with(|n| n.set(n.get() + 1));
            attempt(extra)
        };
        let mut result = run(0)?;
        let mut lost = 0;
        for tried in 1..SEARCH_ATTEMPTS {
            if !result.0.short {
                break;
            }
            lost += result.0.lost;
            if tried + 1 == SEARCH_ATTEMPTS {
                slot.wait_for_apply();
            } else {
                std::thread::yield_now();
            }
            result = run(lost + SPARE_HITS)?;
        }
        if result.0.recheck_drops > 0 {
            self.indexes
                .note_recheck_drops(&slot.id, result.0.recheck_drops);
        }
        Ok(result)
    }
}

impl Engine {
    /// Hits searches' defensive re-checks dropped on resident state since start although
    /// their channels had passed them: an index disagreement (a bug), always 0 otherwise.
    pub fn search_recheck_drops(&self) -> u64 {
        self.indexes.recheck_drops()
    }
}
