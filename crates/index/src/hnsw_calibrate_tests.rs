//! Unit tests of `hnsw_calibrate.rs`: where the ladder stops, that it never lowers the
//! configured beam, that an operator's `ef_search` wins, and how the result is persisted.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::error::IndexError;
use crate::hnsw::HnswParams;
use crate::metric::Metric;
use crate::testdata;

fn uniform(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| (0..dim).map(|_| rng.random::<f32>()).collect())
        .collect()
}

fn build(vectors: &[Vec<f32>], params: HnswParams) -> HnswIndex {
    let mut g = HnswIndex::new(vectors[0].len(), Metric::L2, params).expect("new");
    let items: Vec<(u32, &[f32])> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| (i as u32, v.as_slice()))
        .collect();
    g.insert_batch(&items, 2).expect("insert_batch");
    g
}

/// A sparse graph (`m` 4, narrow construction beam) on uniform 32-d data: hard enough that
/// the default beam misses the target, small enough for a debug build.
fn hard() -> HnswIndex {
    let params = HnswParams {
        m: 4,
        ef_construction: 16,
        ef_search: 16,
        ..HnswParams::default()
    };
    build(&uniform(3_000, 32, 7), params)
}

#[test]
fn hard_data_raises_the_default_beam() {
    let mut g = hard();
    assert_eq!(g.default_ef(), 16);
    let c = g
        .calibrate(CalibrationSettings::default())
        .expect("calibrated");
    assert!(c.ef > 16 && c.steps > 1, "{c:?}");
    assert_eq!(g.default_ef(), c.ef);
    assert_eq!(g.calibrated().map(|c| c.at_len), Some(3_000));
}

#[test]
fn an_unreachable_target_stops_at_the_cap() {
    let mut g = hard();
    let settings = CalibrationSettings {
        target: 1.01,
        cap: 200,
        ..CalibrationSettings::default()
    };
    let c = g.calibrate(settings).expect("calibrated");
    // 64 (the built-in default, whatever is configured), then the ladder's steps above it
    // and below the cap (96 128 192), then the cap.
    assert_eq!((c.ef, c.steps), (200, 5), "{c:?}");
    assert!(c.recall < 1.01);
    assert_eq!(g.default_ef(), 200);
}

#[test]
fn easy_data_keeps_the_configured_beam_and_none_is_lowered() {
    let vectors = testdata::clustered(3_000, 32, 20, 3);
    let mut g = build(&vectors, HnswParams::default());
    let c = g
        .calibrate(CalibrationSettings::default())
        .expect("calibrated");
    assert_eq!((c.ef, c.steps), (64, 1), "{c:?}");
    assert!(c.recall >= 0.95, "{c:?}");
    assert_eq!(g.default_ef(), 64);
    // A wider configured beam is never lowered; the measurement starts from 64 whatever is
    // configured, so it stays true once the configured beam changes again.
    g.set_ef_search(300, true);
    let c = g
        .calibrate(CalibrationSettings::default())
        .expect("calibrated");
    assert_eq!((c.ef, c.steps), (64, 1), "{c:?}");
    assert_eq!(g.default_ef(), 300);
    g.set_ef_search(100, true);
    assert_eq!(g.default_ef(), 100);
}

#[test]
fn an_operator_chosen_beam_is_used_exactly() {
    let mut g = hard();
    let c = g
        .calibrate(CalibrationSettings::default())
        .expect("calibrated");
    assert!(c.ef > 16);
    g.set_ef_search(16, false);
    assert_eq!(g.default_ef(), 16);
    // Switched back to automatic: the calibration kept is forgotten, to be measured again.
    g.set_ef_search(16, true);
    assert_eq!(g.calibrated(), None);
    assert_eq!(g.default_ef(), 16);
    assert_eq!(g.calibrate(CalibrationSettings::default()), Some(c));
    assert_eq!(g.default_ef(), c.ef);
}

/// With an operator's `ef_search` nothing is measured, so nothing stale is kept for when the
/// operator clears it; a ladder that started from the operator's beam (1000 here) would have
/// kept 1000 as the default once the operator went back to automatic.
#[test]
fn an_operator_chosen_beam_is_not_calibrated() {
    let mut g = hard();
    g.set_ef_search(1000, false);
    assert_eq!(g.calibrate(CalibrationSettings::default()), None);
    assert_eq!(g.calibrated(), None);
    g.set_ef_search(16, true);
    assert_eq!(g.default_ef(), 16);
    let c = g
        .calibrate(CalibrationSettings::default())
        .expect("calibrated");
    assert!(c.ef < 1000, "{c:?}");
}

/// 15 distinct vectors, each stored 200 times (identical texts embed identically): every
/// query has 199 exact duplicates, more than the beam holds, so its true top-10 is any 10 of
/// them. Counted by id, the brute force's 10 (the lowest ids) are rarely the ones the beam
/// kept, and the ladder climbed to the cap (1024, recall 0.83).
#[test]
fn duplicates_keep_the_configured_beam() {
    let distinct = uniform(15, 16, 11);
    let vectors: Vec<Vec<f32>> = (0..200).flat_map(|_| distinct.iter().cloned()).collect();
    let mut g = build(&vectors, HnswParams::default());
    let c = g
        .calibrate(CalibrationSettings::default())
        .expect("calibrated");
    assert_eq!((c.ef, c.steps), (64, 1), "{c:?}");
    assert_eq!(g.default_ef(), 64);
}

#[test]
fn within_counts_ties_and_nothing_farther() {
    assert!(within(0.0, 0.0));
    assert!(within(2.0, 2.0));
    assert!(within(2.0 + 1e-6, 2.0));
    assert!(!within(2.1, 2.0));
    assert!(!within(0.01, 0.0));
}

#[test]
fn too_few_vectors_are_not_calibrated() {
    let mut g = build(&uniform(70, 8, 1), HnswParams::default());
    assert_eq!(g.calibrate(CalibrationSettings::default()), None);
    assert_eq!(g.calibrated(), None);
    assert_eq!(g.default_ef(), 64);
}

#[test]
fn the_calibration_is_persisted_and_decoded_closed() {
    let mut g = hard();
    let c = g
        .calibrate(CalibrationSettings::default())
        .expect("calibrated");
    let bytes = g.to_bytes().expect("to_bytes");
    let params = g.params();
    let back = HnswIndex::from_bytes(&bytes, 32, Metric::L2, params).expect("load");
    assert_eq!(back.calibrated(), g.calibrated());
    assert_eq!(back.default_ef(), c.ef);
    // An ef above the cap, or a count without an ef, was never written.
    let corrupt = |bytes: &[u8]| {
        matches!(
            HnswIndex::from_bytes(bytes, 32, Metric::L2, params),
            Err(IndexError::Corrupt { .. })
        )
    };
    let mut above = bytes.clone();
    above[13..17].copy_from_slice(&(MAX_CALIBRATED_EF as u32 + 1).to_le_bytes());
    assert!(corrupt(&above));
    let mut no_ef = bytes.clone();
    no_ef[13..17].copy_from_slice(&0u32.to_le_bytes());
    assert!(corrupt(&no_ef));
    // Nor an ef without a count, or a count above the graph's 3,000 nodes.
    let mut no_count = bytes.clone();
    no_count[17..21].copy_from_slice(&0u32.to_le_bytes());
    assert!(corrupt(&no_count));
    let mut too_many = bytes.clone();
    too_many[17..21].copy_from_slice(&3_001u32.to_le_bytes());
    assert!(corrupt(&too_many));
}

#[test]
fn a_version_2_graph_loads_uncalibrated() {
    let mut g = hard();
    g.calibrate(CalibrationSettings::default())
        .expect("calibrated");
    let v4 = g.to_bytes().expect("to_bytes");
    // Version 2: the header without the calibration's 8 bytes, the body in layout 1.
    let mut v2 = v4[..13].to_vec();
    v2[..8].copy_from_slice(b"STRHNSW2");
    v2.extend_from_slice(&g.body_layout_1());
    let back = HnswIndex::from_bytes(&v2, 32, Metric::L2, g.params()).expect("load v2");
    assert_eq!(back.calibrated(), None);
    assert_eq!(back.default_ef(), 16);
    assert_eq!(back.len(), g.len());
}

/// A stop asked for before the measurement, or during it (here: after the brute force's
/// first chunk, or at the first graph search), keeps nothing and returns at once.
#[test]
fn a_stop_keeps_nothing() {
    let mut g = hard();
    let calls = std::cell::Cell::new(0usize);
    let after = |n: usize| {
        let calls = &calls;
        move || {
            calls.set(calls.get() + 1);
            calls.get() > n
        }
    };
    // Before: asked once, at the first chunk.
    assert_eq!(
        g.calibrate_until(CalibrationSettings::default(), &after(0)),
        None
    );
    assert_eq!(calls.get(), 1);
    // During the brute force (3,000 vectors: three chunks), and at the first graph search.
    for n in [1, 3] {
        calls.set(0);
        assert_eq!(
            g.calibrate_until(CalibrationSettings::default(), &after(n)),
            None
        );
        assert_eq!(
            calls.get(),
            n + 1,
            "stopped at the first check that said so"
        );
    }
    assert_eq!(g.calibrated(), None);
    assert_eq!(g.default_ef(), 16);
    // Never asked to stop: the same graph is calibrated.
    calls.set(0);
    assert!(
        g.calibrate_until(CalibrationSettings::default(), &after(usize::MAX))
            .is_some()
    );
    assert!(
        calls.get() > 3,
        "asked between chunks and searches: {}",
        calls.get()
    );
    assert!(g.calibrated().is_some());
}

/// The climb stops, measuring nothing more, when a step is refused.
#[test]
fn a_refused_step_ends_the_climb_with_nothing() {
    let mut asked = Vec::new();
    let c = climb(64, &CalibrationSettings::default(), |ef| {
        asked.push(ef);
        (ef < 128).then_some(0.5)
    });
    assert_eq!(c, None);
    assert_eq!(asked, [64, 96, 128]);
}

/// The sampled queries leave their own node out of the graph: on the hard graph, the recall
/// measured walking through the query's node (only dropped from the hits, as before) is above
/// what the same queries get with it left out, which is what a fresh query sees.
#[test]
fn sampled_queries_leave_their_own_node_out() {
    let g = hard();
    let settings = CalibrationSettings::default();
    let live: Vec<u32> = (0..g.len() as u32).collect();
    let picked: Vec<u32> = sample_positions(live.len(), settings.queries, settings.seed)
        .into_iter()
        .map(|i| live[i])
        .collect();
    let kth = g
        .kth_all(&picked, &live, 10, &|| false)
        .expect("not stopped");
    let through_itself = |ef: usize| {
        let gr = &g.graph;
        let mut found = 0;
        for (&q, &limit) in picked.iter().zip(&kth) {
            let near = gr.search(gr.vector(q), ef, |n| n != q);
            found += near
                .iter()
                .take(10)
                .filter(|n| within(n.dist, limit))
                .count();
        }
        found as f64 / (10 * picked.len()) as f64
    };
    let left_out = |ef: usize| {
        g.recall_at(ef, 10, &picked, &kth, &|| false)
            .expect("measured")
    };
    for ef in [16, 32] {
        assert!(
            left_out(ef) < through_itself(ef),
            "ef {ef}: left out {} against {}",
            left_out(ef),
            through_itself(ef)
        );
    }
}
