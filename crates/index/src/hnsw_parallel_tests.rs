//! Tests of the parallel build (`hnsw_parallel.rs`) through `HnswIndex::insert_batch`: the
//! graph's shape after racing threads, upserts in a parallel batch, and what stays serial.
//! The recall floor of a 2-thread build is in `hnsw_tests.rs` beside the serial one.

use std::collections::{HashSet, VecDeque};

use super::tests::build_with;
use super::*;
use crate::testdata;

/// Checks every structural invariant a walk relies on and returns the share of live nodes
/// reachable on level 0 from the entry point.
fn check_shape(index: &HnswIndex) -> f64 {
    let g = &index.graph;
    let nodes = g.nodes();
    let entry = g.entry.expect("a non-empty graph has an entry point");
    assert_eq!(
        g.levels[entry as usize] as usize, g.max_level,
        "entry is on the top level"
    );
    for node in 0..nodes as u32 {
        let level = g.levels[node as usize] as usize;
        assert!(level <= g.max_level, "node {node} above the top level");
        for l in 0..=level {
            let links = g.links(node, l);
            let limit = if l == 0 { g.m0 } else { g.m };
            assert!(
                links.len() <= limit,
                "node {node} level {l}: {} links",
                links.len()
            );
            let distinct: HashSet<u32> = links.iter().copied().collect();
            assert_eq!(
                distinct.len(),
                links.len(),
                "node {node} level {l}: duplicates"
            );
            for &n in links {
                assert!((n as usize) < nodes, "node {node} links to {n}");
                assert_ne!(n, node, "node {node} links to itself");
                assert!(
                    g.levels[n as usize] as usize >= l,
                    "{node}->{n} on level {l}"
                );
            }
        }
        if nodes > 1 {
            assert!(
                !g.links(node, 0).is_empty(),
                "node {node} has no level-0 link"
            );
        }
    }
    let mut seen = vec![false; nodes];
    let mut queue = VecDeque::from([entry]);
    seen[entry as usize] = true;
    while let Some(node) = queue.pop_front() {
        for &n in g.links(node, 0) {
            if !seen[n as usize] {
                seen[n as usize] = true;
                queue.push_back(n);
            }
        }
    }
    let live: Vec<u32> = g.slot_node.values().copied().collect();
    live.iter().filter(|&&n| seen[n as usize]).count() as f64 / live.len() as f64
}

/// Share of `vectors` whose own slot is the top hit when searched for.
fn self_recall(index: &HnswIndex, vectors: &[Vec<f32>], slots: impl Iterator<Item = u32>) -> f64 {
    let (mut found, mut asked) = (0, 0);
    for slot in slots {
        asked += 1;
        let hits = index
            .search(&vectors[slot as usize], 1, Some(64))
            .expect("search");
        found += usize::from(hits.first().map(|h| h.slot) == Some(slot));
    }
    found as f64 / asked as f64
}

/// Many small builds on 4 threads: the first inserts race for the entry point, new levels
/// and the same few link lists, which is where a locking mistake would show.
#[test]
fn racing_builds_keep_the_graph_well_formed() {
    for round in 0..6u64 {
        let vectors = testdata::clustered(3000, 16, 8, 100 + round);
        let index = build_with(Metric::L2, &vectors, 4);
        assert_eq!(index.len(), 3000);
        assert_eq!(index.tombstones(), 0);
        let reachable = check_shape(&index);
        assert!(reachable >= 0.99, "round {round}: {reachable} reachable");
        // The floor of every build of this crate (0.95): which interleaving the threads take
        // depends on the machine's load, and with 4 threads preempted on 2 busy cores a node is
        // often linked while its neighbours' lists are still being written (0.97 was seen
        // once in a full test run; 1.0 is typical).
        let recall = self_recall(&index, &vectors, (0..3000).step_by(10));
        assert!(recall >= 0.95, "round {round}: self-recall {recall}");
    }
}

/// A parallel batch into a graph that already holds vectors: replaced slots become
/// tombstones, a slot given twice keeps its last vector, and every vector is found.
#[test]
fn parallel_batch_upserts_into_an_existing_graph() {
    let old = testdata::clustered(1000, 16, 8, 7);
    let new = testdata::clustered(1500, 16, 8, 8);
    let mut index = build_with(Metric::Cosine, &old, 1);
    let mut items: Vec<(u32, &[f32])> = new
        .iter()
        .enumerate()
        .map(|(i, v)| (500 + i as u32, v.as_slice()))
        .collect();
    // Slot 600 twice: the later occurrence (vector 0) wins.
    items.push((600, new[0].as_slice()));
    index.insert_batch(&items, 3).expect("insert_batch");
    assert_eq!(index.len(), 2000);
    assert_eq!(index.tombstones(), 500);
    let reachable = check_shape(&index);
    assert!(reachable >= 0.99, "{reachable} reachable");

    let mut stored = vec![0.0; 16];
    assert!(index.get(600, &mut stored).expect("get"));
    let mut expected = new[0].clone();
    Metric::Cosine.normalize_for_index(&mut expected);
    assert_eq!(stored, expected);

    // Every live slot's current vector finds it (old vectors of replaced slots are gone).
    let current = |slot: u32| -> &[f32] {
        if slot == 600 {
            &new[0]
        } else if slot >= 500 {
            &new[slot as usize - 500]
        } else {
            &old[slot as usize]
        }
    };
    let (mut found, mut asked) = (0, 0);
    for slot in (0..2000u32).step_by(7) {
        asked += 1;
        let hits = index.search(current(slot), 1, Some(64)).expect("search");
        found += usize::from(hits.first().map(|h| h.slot) == Some(slot));
    }
    let recall = found as f64 / asked as f64;
    assert!(recall >= 0.98, "self-recall {recall}");
}

/// An empty graph filled by one parallel batch with more threads than the cap: it starts
/// at most the cap, and the result is a working graph.
#[test]
fn more_threads_than_the_cap_still_build() {
    // L2, not dot product: under dot product a vector of small norm is nobody's nearest
    // neighbour, so even a serial build of this set leaves 0.5% of it unreachable on level 0,
    // and a parallel build of it left 5.5% in one loaded run (2 failures in 30). That the
    // threads make it worse under dot product is an open question, not what this test is
    // about; a parallel dot-product build's recall has its floor in `recall_floor_dot`.
    let vectors = testdata::clustered(600, 8, 4, 9);
    let index = build_with(Metric::L2, &vectors, 1000);
    assert_eq!(index.len(), 600);
    let reachable = check_shape(&index);
    assert!(reachable >= 0.99, "{reachable} reachable");
}

/// Serial builds, and batches too small to be worth threads, are deterministic: the same
/// inserts give the same bytes.
#[test]
fn serial_and_small_batches_are_deterministic() {
    let vectors = testdata::clustered(PARALLEL_MIN_BATCH - 1, 8, 4, 10);
    let a = build_with(Metric::L2, &vectors, 4)
        .to_bytes()
        .expect("bytes");
    let b = build_with(Metric::L2, &vectors, 4)
        .to_bytes()
        .expect("bytes");
    assert_eq!(a, b);
    let vectors = testdata::clustered(2000, 8, 4, 11);
    let a = build_with(Metric::L2, &vectors, 1)
        .to_bytes()
        .expect("bytes");
    let b = build_with(Metric::L2, &vectors, 1)
        .to_bytes()
        .expect("bytes");
    assert_eq!(a, b);
}

/// A parallel build's bytes decode (the format's validation checks every link) and the
/// restored graph answers as the original does.
#[test]
fn parallel_build_round_trips() {
    let vectors = testdata::clustered(2000, 16, 8, 12);
    let index = build_with(Metric::L2, &vectors, 2);
    let bytes = index.to_bytes().expect("bytes");
    let restored =
        HnswIndex::from_bytes(&bytes, 16, Metric::L2, HnswParams::default()).expect("restore");
    for q in vectors.iter().step_by(97) {
        assert_eq!(
            index.search(q, 10, None).expect("search"),
            restored.search(q, 10, None).expect("search")
        );
    }
}
