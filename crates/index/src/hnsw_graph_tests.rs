//! Unit tests of the graph walks on hand-built graphs, where the path a search must take is
//! known exactly.

use super::*;
use crate::kernels::scalar;

/// A 2-d L2 graph of the given points, levels and links (`links[i]` per level, level 0
/// first), entered at `entry`. Built directly, not by inserts, to fix its shape.
fn hand_built(points: &[[f32; 2]], links: &[Vec<Vec<u32>>], entry: u32) -> Graph {
    let mut g = Graph::new(2, 2, Space::L2, scalar::l2_squared);
    for (i, p) in points.iter().enumerate() {
        let node = g.append(i as u32, p);
        let level = links[i].len() - 1;
        g.levels[node as usize] = level as u8;
        g.upper_words -= g.upper[node as usize].len();
        g.upper[node as usize] = vec![0u32; level * (1 + g.m)].into_boxed_slice();
        g.upper_words += level * (1 + g.m);
        for (l, list) in links[i].iter().enumerate() {
            g.set_links(node, l, list);
        }
        g.max_level = g.max_level.max(level);
    }
    g.entry = Some(entry);
    g
}

/// The trap of a greedy descent. The query is at the origin; its nearest node is `T`, which
/// level 0 reaches only from `Y`. On level 1 the entry `E` links to `X` and `Y`; `X` is
/// closer, so a greedy descent stops at `X`, whose level-0 neighbourhood (`X` and the far `W`)
/// does not lead to `T`. A beam on level 1 also keeps `Y`, and a level-0 beam of width 2
/// started from both expands `Y` (closer than `W`) and finds `T`.
fn trap() -> Graph {
    const E: u32 = 0;
    const X: u32 = 1;
    const Y: u32 = 2;
    const W: u32 = 3;
    const T: u32 = 4;
    let points = [[10.0, 0.0], [2.0, 0.0], [3.0, 0.0], [20.0, 0.0], [0.5, 0.0]];
    let links = vec![
        vec![vec![], vec![X, Y]], // E: levels 0 and 1
        vec![vec![W], vec![E]],   // X: levels 0 and 1
        vec![vec![T], vec![E]],   // Y: levels 0 and 1
        vec![vec![X]],            // W
        vec![vec![Y]],            // T
    ];
    hand_built(&points, &links, E)
}

#[test]
fn search_enters_level_zero_from_more_than_the_greedy_path() {
    let g = trap();
    let found = g.search(&[0.0, 0.0], 2, |_| true);
    assert_eq!(found.first().map(|n| n.node), Some(4), "found {found:?}");
    // The greedy descent (what inserts use) does end at X: the trap is real.
    let greedy = g.descend(&[0.0, 0.0], 0, 100.0, 1, 0);
    assert_eq!(greedy.node, 1);
}

#[test]
fn walk_from_several_entries_keeps_the_best_and_routes_through_rejected_ones() {
    let g = trap();
    let q = [0.0, 0.0];
    let near = |node: u32| Near {
        dist: g.distance(&q, g.vector(node)),
        node,
    };
    with_scratch(|s| {
        // Duplicated entries count once; `Y` is rejected by `keep` but still leads to `T`.
        g.walk_from(&q, &[near(1), near(2), near(2)], 2, 0, s, |n| n != 2);
        let mut found: Vec<u32> = s.results.drain().map(|n| n.node).collect();
        found.sort_unstable();
        assert_eq!(found, vec![1, 4]);
    });
}

/// A path `E — A — T` on level 0: `T` is reachable only through `A`. A search by `A`'s own
/// vector that merely drops `A` from its results still walks through `A` and finds `T`;
/// leaving `A` out of the graph (a calibration's leave-one-out) never enters or expands it,
/// so `T` is out of reach, as it would be for a fresh query with no node of its own.
#[test]
fn a_node_left_out_is_never_entered_nor_expanded() {
    const E: u32 = 0;
    const A: u32 = 1;
    const T: u32 = 2;
    let points = [[10.0, 0.0], [0.0, 0.0], [1.0, 0.0]];
    let links = vec![vec![vec![A]], vec![vec![E, T]], vec![vec![A]]];
    let g = hand_built(&points, &links, E);
    let q = [0.0, 0.0];
    let nodes = |found: Vec<Near>| found.iter().map(|n| n.node).collect::<Vec<_>>();
    assert_eq!(nodes(g.search(&q, 3, |n| n != A)), [T, E]);
    assert_eq!(nodes(g.search_without(&q, 3, A, |_| true)), [E]);
    // The entry point left out: the walk starts from its neighbours instead.
    assert_eq!(nodes(g.search_without(&q, 3, E, |_| true)), [A, T]);
    // A graph of one node, left out: nothing to search.
    let one = hand_built(&[[0.0, 0.0]], &[vec![vec![]]], 0);
    assert!(one.search_without(&q, 3, 0, |_| true).is_empty());
}

/// The entry point left out on a graph with upper levels: the walk starts from its
/// neighbours on the highest level where it has any, and still finds the rest.
#[test]
fn leaving_out_the_entry_point_starts_below_it() {
    let g = trap();
    let entry = g.entry.unwrap();
    let found = g.search_without(&[0.0, 0.0], 4, entry, |_| true);
    let nodes: Vec<u32> = found.iter().map(|n| n.node).collect();
    assert!(!nodes.contains(&entry), "{nodes:?}");
    assert_eq!(
        nodes.first(),
        Some(&4),
        "the true nearest is still found: {nodes:?}"
    );
}
