//! HNSW graph connectivity, sampled cheaply: the fraction of a graph's nodes that a search
//! from its entry point reaches, estimated on a few evenly spaced nodes.
//!
//! A node is counted reachable when a search for its own vector returns it. A node that
//! greedy search cannot find from the entry point is lost to every query, whatever its
//! score: deletions (the graph keeps tombstones) and rebuilds with other parameters can cut
//! parts of a graph off. The figure feeds the tenant's integrity state (`crate::integrity`) as
//! index health. Sampling costs `SAMPLES` graph searches, so a graph is sampled again only
//! once it has changed by a tenth of its nodes (or was replaced), not at every search.

use std::collections::HashMap;

use strata_types::CollectionName;

use crate::collection_index::CollectionIndex;
use crate::tenant_index::TenantIndex;

/// Nodes searched per sample.
const SAMPLES: usize = 16;
/// Hits asked of each search: a node among this many counts as found, so near-duplicate
/// vectors do not count as lost.
const K: usize = 10;

/// The last sample of one collection's graph and the graph's shape when it was taken.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sample {
    nodes: u64,
    deleted: u64,
    pub reachable: f64,
}

impl Sample {
    /// Whether the graph changed enough (or was replaced: fewer deletions than sampled)
    /// since this sample to sample again.
    fn stale(&self, nodes: u64, deleted: u64) -> bool {
        let moved = nodes.abs_diff(self.nodes) + deleted.saturating_sub(self.deleted);
        deleted < self.deleted || moved >= (self.nodes / 10).max(1)
    }
}

/// The smallest reachable fraction over the tenant's graphs (1.0 without any), sampling the
/// graphs whose last sample in `cache` is missing or stale. Collections gone from `ti` are
/// dropped from the cache.
pub(crate) fn min_reachable(ti: &TenantIndex, cache: &mut HashMap<CollectionName, Sample>) -> f64 {
    cache.retain(|name, _| ti.collections.get(name).is_some_and(|c| c.graph.is_some()));
    let mut min: f64 = 1.0;
    for (name, c) in &ti.collections {
        let Some(g) = &c.graph else { continue };
        let (nodes, deleted) = (g.len() as u64, c.graph_deleted);
        let fresh = cache.get(name).filter(|s| !s.stale(nodes, deleted));
        let reachable = match fresh {
            Some(s) => s.reachable,
            None => {
                let reachable = sample(c);
                cache.insert(
                    name.clone(),
                    Sample {
                        nodes,
                        deleted,
                        reachable,
                    },
                );
                reachable
            }
        };
        min = min.min(reachable);
    }
    min
}

/// The fraction of up to `SAMPLES` evenly spaced graph nodes that a search for their own
/// vector finds. 1.0 for an empty graph; a search error counts the node as not found.
fn sample(c: &CollectionIndex) -> f64 {
    let Some(g) = &c.graph else { return 1.0 };
    let step = (c.with_vector.len() / SAMPLES as u64).max(1);
    let mut buf = vec![0.0; g.dim()];
    let (mut tried, mut found) = (0u32, 0u32);
    for i in 0..SAMPLES as u64 {
        let Some(slot) = u32::try_from(i * step)
            .ok()
            .and_then(|n| c.with_vector.select(n))
        else {
            break;
        };
        // A vector waiting for a background build is not in the graph yet.
        if !matches!(g.get(slot, &mut buf), Ok(true)) {
            continue;
        }
        tried += 1;
        // K hits that all score alike are duplicates of the node's vector (identical texts
        // embed identically); the node ties with them and its own place among them is a
        // matter of slot order, so it counts as found.
        let found_or_tied = |hits: &[strata_index::Hit]| {
            hits.iter().any(|h| h.slot == slot)
                || (hits.len() == K
                    && (hits[0].score - hits[K - 1].score).abs()
                        <= 1e-6 * hits[0].score.abs().max(1.0))
        };
        // At ef 64, the beam this check was tuned at, not the graph's calibrated default.
        if g.search(&buf, K, Some(64))
            .is_ok_and(|hits| found_or_tied(&hits))
        {
            found += 1;
        }
    }
    if tried == 0 {
        1.0
    } else {
        f64::from(found) / f64::from(tried)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_goes_stale_after_a_tenth_of_the_nodes_change_or_a_rebuild() {
        let s = Sample {
            nodes: 1000,
            deleted: 50,
            reachable: 1.0,
        };
        assert!(!s.stale(1000, 50));
        assert!(!s.stale(1099, 50));
        assert!(s.stale(1100, 50));
        assert!(s.stale(900, 50));
        assert!(s.stale(1000, 150));
        // Compaction rebuilt the graph: its tombstones are gone.
        assert!(s.stale(1000, 0));
    }
}
