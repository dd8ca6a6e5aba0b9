//! Per-thread working memory of HNSW searches and inserts: the visited set and the two heaps.
//!
//! Why per thread and reused: a search over a 100k-node graph touches a few thousand nodes;
//! allocating (or clearing) a visited set per search would cost more than the search itself.
//! The visited set is an *epoch-tagged* array: a node counts as visited when its tag equals the
//! current epoch, so starting a new search is one increment, and the array is cleared only when
//! the 16-bit epoch wraps (once every 65 535 searches).

use std::cell::RefCell;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// A node and its distance to the query (lower is closer).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Near {
    pub dist: f32,
    pub node: u32,
}

impl PartialEq for Near {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Near {}
impl PartialOrd for Near {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Near {
    /// By distance (NaN sorts as farthest under `total_cmp`), then node id, so equal distances
    /// break ties deterministically.
    fn cmp(&self, other: &Self) -> Ordering {
        self.dist
            .total_cmp(&other.dist)
            .then(self.node.cmp(&other.node))
    }
}

/// The epoch-tagged visited set.
#[derive(Default)]
pub(crate) struct Visited {
    tags: Vec<u16>,
    epoch: u16,
}

impl Visited {
    /// Starts a walk over `nodes` nodes with nothing visited.
    fn begin(&mut self, nodes: usize) {
        if self.tags.len() < nodes {
            // New tags are 0, never a current epoch (epochs start at 1).
            self.tags.resize(nodes, 0);
        }
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.tags.fill(0);
            self.epoch = 1;
        }
    }

    /// Marks `node` visited; `true` if it was not visited before in this walk.
    #[inline(always)]
    pub fn visit(&mut self, node: u32) -> bool {
        let tag = &mut self.tags[node as usize];
        if *tag == self.epoch {
            false
        } else {
            *tag = self.epoch;
            true
        }
    }
}

/// Working memory of one graph walk.
#[derive(Default)]
pub(crate) struct Scratch {
    pub visited: Visited,
    /// Nodes still to expand, closest on top.
    pub candidates: BinaryHeap<Reverse<Near>>,
    /// The best nodes kept so far, farthest on top (so it can be evicted).
    pub results: BinaryHeap<Near>,
    /// Neighbours of the node being expanded that were not visited before.
    pub fresh: Vec<u32>,
}

impl Scratch {
    /// Starts a walk over a graph of `nodes` nodes: nothing is visited, the heaps are empty.
    pub fn begin(&mut self, nodes: usize) {
        self.visited.begin(nodes);
        self.candidates.clear();
        self.results.clear();
        self.fresh.clear();
    }

    /// Marks `node` visited; `true` if it was not visited before in this walk.
    #[cfg(test)]
    pub fn visit(&mut self, node: u32) -> bool {
        self.visited.visit(node)
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Runs `f` with this thread's scratch; a nested call (a search from inside a search's
/// predicate) gets a fresh one instead of failing.
pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    let mut f = Some(f);
    let reused = SCRATCH.with(|cell| {
        let mut guard = cell.try_borrow_mut().ok()?;
        let f = f.take()?;
        Some(f(&mut guard))
    });
    match reused {
        Some(r) => r,
        None => match f.take() {
            Some(f) => f(&mut Scratch::default()),
            // `f` was taken only when the closure ran, and then `reused` is `Some`.
            None => unreachable!("scratch closure ran but returned nothing"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visited_set_resets_per_walk_and_survives_epoch_wrap() {
        let mut s = Scratch::default();
        s.begin(4);
        assert!(s.visit(2));
        assert!(!s.visit(2));
        for _ in 0..70_000 {
            s.begin(4);
            assert!(s.visit(2), "epoch {}", s.visited.epoch);
        }
        s.begin(8);
        assert!((0..8).all(|n| s.visit(n)));
        assert!((0..8).all(|n| !s.visit(n)));
    }

    #[test]
    fn nested_use_gets_its_own_scratch() {
        let inner = with_scratch(|outer| {
            outer.begin(2);
            outer.visit(1);
            with_scratch(|inner| {
                inner.begin(2);
                inner.visit(1)
            })
        });
        assert!(inner);
    }

    #[test]
    fn near_orders_by_distance_then_node_with_nan_last() {
        let mut v = [
            Near { dist: 2.0, node: 1 },
            Near {
                dist: f32::NAN,
                node: 0,
            },
            Near { dist: 1.0, node: 5 },
            Near { dist: 1.0, node: 3 },
        ];
        v.sort();
        let nodes: Vec<u32> = v.iter().map(|n| n.node).collect();
        assert_eq!(nodes, vec![3, 5, 1, 0]);
    }
}
