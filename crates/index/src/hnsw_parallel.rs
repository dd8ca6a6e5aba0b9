//! The parallel build of an HNSW graph: [`crate::HnswIndex::insert_batch`] with `threads > 1`.
//!
//! How: the batch's nodes are first appended on the calling thread (vectors, labels, levels,
//! empty link lists), so no array moves while the threads run. Each thread then takes the
//! next unlinked node from a shared counter and links it exactly as the serial insert does
//! (`Graph::link`): greedy descent to the node's level, a beam search of width
//! `ef_construction` per level, the neighbour heuristic, back links pruned by the heuristic.
//!
//! Concurrency, and why it cannot deadlock:
//! - Vectors, labels, levels and tombstone flags are only read while the threads run.
//! - Each node's link lists are guarded by its lock (one of [`MAX_STRIPES`] striped locks,
//!   so a small batch into a big graph allocates few), held only while they are read (the
//!   walk copies the unvisited neighbours out) or rewritten, and never two at a time.
//! - The entry point and top level sit behind one lock; a node that raises the top level holds
//!   it for its whole insert (about one node in `m`, and only the first of each new level
//!   raises it), as hnswlib does, so no thread starts from an entry whose links are not set.
//! - A node can be reached through a back link on an upper level before its own links on a
//!   lower level are set; another thread may then link to it there, so the node's own list is
//!   merged with the back links it already holds rather than overwritten.
//!
//! The result is the serial algorithm on another interleaving of the inserts: the graph
//! differs from run to run, so tests check recall floors, not identity.

use std::cmp::Reverse;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::hnsw_graph::{Graph, select_diverse};
use crate::hnsw_scratch::{Near, Scratch, with_scratch};

/// Most link locks a build allocates (a power of two): beyond this many, two threads almost
/// never want the same lock at once, and more would only cost memory.
const MAX_STRIPES: usize = 1 << 16;

/// Entry point and top level of the graph while the threads run.
#[derive(Clone, Copy)]
struct Top {
    entry: Option<u32>,
    max_level: usize,
}

/// The graph's arrays as the linking threads see them: raw pointers for the link lists they
/// write, the graph's read-only fields for everything else.
struct Build<'g> {
    g: &'g Graph,
    /// Start of the level-0 rows (`g.rows`), as `u32` words.
    words: *mut u32,
    /// Per node, the start of its upper-level lists (`g.upper[node]`).
    upper: Vec<*mut u32>,
    /// Lock `node & mask` guards `node`'s link lists on every level.
    locks: Vec<Mutex<()>>,
    mask: usize,
    top: Mutex<Top>,
    ef_construction: usize,
}

// SAFETY: the raw pointers address the graph's row and upper-list buffers, which are
// allocated before the threads start and neither moved nor freed until they are joined (the
// `&mut Graph` they come from is held by `link_parallel` all that time). Link words are read
// and written only under the owning node's lock; vector words are never written while the
// threads run.
unsafe impl Sync for Build<'_> {}

/// Links the appended, not yet linked nodes `first..g.nodes()` on `threads` threads.
pub(crate) fn link_parallel(g: &mut Graph, first: u32, ef_construction: usize, threads: usize) {
    let end = g.nodes();
    let stripes = end.next_power_of_two().min(MAX_STRIPES);
    let words = g.rows.as_mut_ptr().cast::<u32>();
    let upper = g.upper.iter_mut().map(|u| u.as_mut_ptr()).collect();
    let top = Top {
        entry: g.entry,
        max_level: g.max_level,
    };
    let b = Build {
        g: &*g,
        words,
        upper,
        locks: (0..stripes).map(|_| Mutex::new(())).collect(),
        mask: stripes - 1,
        top: Mutex::new(top),
        ef_construction,
    };
    let next = AtomicUsize::new(first as usize);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let node = next.fetch_add(1, Ordering::Relaxed);
                    if node >= end {
                        break;
                    }
                    b.insert(node as u32);
                }
            });
        }
    });
    let top = *b.top.lock().unwrap_or_else(PoisonError::into_inner);
    drop(b);
    g.entry = top.entry;
    g.max_level = top.max_level;
}

impl Build<'_> {
    fn lock(&self, node: u32) -> MutexGuard<'_, ()> {
        self.locks[node as usize & self.mask]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Most links `node`'s list holds on `level`.
    fn limit(&self, level: usize) -> usize {
        if level == 0 { self.g.m0 } else { self.g.m }
    }

    /// `node`'s list on `level`: a count word, then `limit(level)` link words.
    fn list(&self, node: u32, level: usize) -> *mut u32 {
        let g = self.g;
        if level == 0 {
            self.words.wrapping_add(node as usize * g.stride + g.dim)
        } else {
            self.upper[node as usize].wrapping_add((level - 1) * (1 + g.m))
        }
    }

    /// Calls `f` with `node`'s links on `level`, under the node's lock.
    fn with_links<R>(&self, node: u32, level: usize, f: impl FnOnce(&[u32]) -> R) -> R {
        let _guard = self.lock(node);
        let p = self.list(node, level);
        // SAFETY: `p` is the list of a node that has `level` (walks follow links of that
        // level only, which point at nodes that have it): a count word no larger than
        // `limit(level)`, then that many link words, all inside the buffers (see `Sync`).
        // The lock makes this thread the only one touching them until it is released.
        unsafe {
            let count = *p as usize;
            f(std::slice::from_raw_parts(p.add(1), count))
        }
    }

    /// Replaces `node`'s links on `level` by `links`; the caller holds the node's lock.
    fn write_links(&self, node: u32, level: usize, links: &[u32]) {
        debug_assert!(links.len() <= self.limit(level));
        let p = self.list(node, level);
        // SAFETY: as in `with_links`; `links` fits the list (at most `limit(level)` words),
        // and the caller's lock makes the write exclusive.
        unsafe {
            *p = links.len() as u32;
            std::ptr::copy_nonoverlapping(links.as_ptr(), p.add(1), links.len());
        }
    }

    /// The vector of `node`.
    fn vector(&self, node: u32) -> &[f32] {
        let at = node as usize * self.g.stride;
        // SAFETY: a row's first `dim` words are its vector, written before the threads
        // started and never while they run; f32 and u32 share size, alignment and validity.
        unsafe { std::slice::from_raw_parts(self.words.add(at).cast::<f32>(), self.g.dim) }
    }

    fn distance(&self, a: u32, b: u32) -> f32 {
        self.g.distance(self.vector(a), self.vector(b))
    }

    /// Links `node` (see the module docs).
    fn insert(&self, node: u32) {
        let level = self.g.levels[node as usize] as usize;
        let mut top = self.top.lock().unwrap_or_else(PoisonError::into_inner);
        let Top { entry, max_level } = *top;
        let Some(entry) = entry else {
            *top = Top {
                entry: Some(node),
                max_level: level,
            };
            return;
        };
        // Hold the lock for the whole insert only when this node becomes the new entry.
        let raised = if level > max_level {
            Some(top)
        } else {
            drop(top);
            None
        };
        let v = self.vector(node);
        let mut near = self.descend(v, entry, max_level, level);
        for lc in (0..=level.min(max_level)).rev() {
            let found = with_scratch(|s| self.walk(v, near, lc, s, node));
            // Only tombstones were reachable: link to the walk's start (as the serial insert).
            let found = if found.is_empty() { vec![near] } else { found };
            let chosen = select_diverse(&found, self.g.m, |a, b| self.distance(a, b));
            self.set_own(node, lc, &chosen);
            for &n in &chosen {
                self.link_back(n, node, lc);
            }
            near = found[0];
        }
        if let Some(mut top) = raised {
            *top = Top {
                entry: Some(node),
                max_level: level,
            };
        }
    }

    /// Greedy descent from `entry` through levels `top` down to `bottom + 1`.
    fn descend(&self, q: &[f32], mut entry: u32, top: usize, bottom: usize) -> Near {
        let mut dist = self.g.distance(q, self.vector(entry));
        for level in (bottom + 1..=top).rev() {
            let mut moved = true;
            while moved {
                moved = false;
                self.with_links(entry, level, |links| {
                    for &n in links {
                        let d = self.g.distance(q, self.vector(n));
                        if d < dist {
                            dist = d;
                            entry = n;
                            moved = true;
                        }
                    }
                });
            }
        }
        Near { dist, node: entry }
    }

    /// The beam search of `Graph::walk` on `level` with width `ef_construction`, reading
    /// links under their node's lock; returns the closest live nodes other than `node`,
    /// closest first.
    fn walk(&self, q: &[f32], entry: Near, level: usize, s: &mut Scratch, node: u32) -> Vec<Near> {
        let ef = self.ef_construction;
        let keep = |n: u32| self.g.deleted[n as usize] == 0 && n != node;
        s.begin(self.g.nodes());
        let Scratch {
            visited,
            candidates,
            results,
            fresh,
        } = s;
        visited.visit(entry.node);
        let mut bound = f32::INFINITY;
        if keep(entry.node) {
            results.push(entry);
            bound = entry.dist;
        }
        candidates.push(Reverse(entry));
        while let Some(Reverse(current)) = candidates.pop() {
            if current.dist > bound && results.len() >= ef {
                break;
            }
            fresh.clear();
            self.with_links(current.node, level, |links| {
                fresh.extend(links.iter().copied().filter(|&n| visited.visit(n)));
            });
            for &n in fresh.iter() {
                let d = self.g.distance(q, self.vector(n));
                if results.len() < ef || d < bound {
                    candidates.push(Reverse(Near { dist: d, node: n }));
                    if keep(n) {
                        results.push(Near { dist: d, node: n });
                        if results.len() > ef {
                            results.pop();
                        }
                        if let Some(worst) = results.peek() {
                            bound = worst.dist;
                        }
                    }
                }
            }
        }
        let mut found: Vec<Near> = results.drain().collect();
        found.sort_unstable();
        found
    }

    /// Sets the new `node`'s links on `level` to `chosen`, merged with any back links other
    /// threads added since the node became reachable (pruned by the heuristic if too many).
    fn set_own(&self, node: u32, level: usize, chosen: &[u32]) {
        let _guard = self.lock(node);
        let p = self.list(node, level);
        // SAFETY: as in `with_links`, under the node's lock.
        let current = unsafe { std::slice::from_raw_parts(p.add(1), *p as usize) };
        let mut links = chosen.to_vec();
        links.extend(current.iter().filter(|n| !chosen.contains(n)));
        if links.len() > self.limit(level) {
            links = self.prune(node, &links, level);
        }
        self.write_links(node, level, &links);
    }

    /// Adds `node` to `to`'s links on `level`, pruning them with the heuristic when full.
    fn link_back(&self, to: u32, node: u32, level: usize) {
        let _guard = self.lock(to);
        let p = self.list(to, level);
        // SAFETY: as in `with_links`, under `to`'s lock.
        let current = unsafe { std::slice::from_raw_parts(p.add(1), *p as usize) };
        if current.contains(&node) {
            return;
        }
        let mut links = current.to_vec();
        links.push(node);
        if links.len() > self.limit(level) {
            links = self.prune(to, &links, level);
        }
        self.write_links(to, level, &links);
    }

    /// The heuristic's choice among `links` for `base`'s list on `level`.
    fn prune(&self, base: u32, links: &[u32], level: usize) -> Vec<u32> {
        let mut all: Vec<Near> = links
            .iter()
            .map(|&n| Near {
                dist: self.distance(base, n),
                node: n,
            })
            .collect();
        all.sort_unstable();
        select_diverse(&all, self.limit(level), |a, b| self.distance(a, b))
    }
}
