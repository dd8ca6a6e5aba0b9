//! Diagnostic: does a graph's calibrated default beam (`hnsw_calibrate`) give the target
//! recall to queries the graph has never seen? Builds a graph of seeded uniform random vectors
//! (the data on which calibration matters), calibrates it, and measures recall@10 of fresh
//! queries (another seed of the same distribution) at the calibrated `ef` and at each step of
//! the ladder, against an exact scan.
//!
//! Usage: `cargo run --release -p strata-index --example calibration_recall -- [--n 20000]
//! [--dim 128] [--queries 1000] [--build-threads 1] [--metric l2|cosine]`. Prints JSON lines.

use std::time::Instant;

use strata_index::hnsw_calibrate::{LADDER, sample_positions};
use strata_index::{CalibrationSettings, HnswIndex, HnswParams, Metric, exact_top_k, testdata};

const K: usize = 10;
const SEED: u64 = 42;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (mut n, mut dim, mut queries, mut threads) = (20_000usize, 128usize, 1000usize, 1usize);
    let mut metric = Metric::L2;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--n" => n = value.parse()?,
            "--dim" => dim = value.parse()?,
            "--queries" => queries = value.parse()?,
            "--build-threads" => threads = value.parse()?,
            "--metric" if value == "l2" => metric = Metric::L2,
            "--metric" if value == "cosine" => metric = Metric::Cosine,
            _ => return Err(format!("unknown flag or value {flag} {value}").into()),
        }
    }
    let data = testdata::uniform(n, dim, SEED);
    let fresh = testdata::uniform(queries, dim, SEED + 1);
    let truth: Vec<Vec<u32>> = fresh
        .iter()
        .map(|q| {
            let all = data
                .iter()
                .enumerate()
                .map(|(i, v)| (i as u32, v.as_slice()));
            exact_top_k(metric, q, all, K)
                .iter()
                .map(|h| h.slot)
                .collect()
        })
        .collect();
    let mut index = HnswIndex::new(dim, metric, HnswParams::default())?;
    let items: Vec<(u32, &[f32])> = data
        .iter()
        .enumerate()
        .map(|(i, v)| (i as u32, v.as_slice()))
        .collect();
    let t = Instant::now();
    index.insert_batch(&items, threads)?;
    let build_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let c = index.calibrate(CalibrationSettings::default());
    let calibrate_s = t.elapsed().as_secs_f64();
    let recall = |ef: usize| -> Result<f64, Box<dyn std::error::Error>> {
        let mut found = 0;
        for (q, want) in fresh.iter().zip(&truth) {
            let hits = index.search(q, K, Some(ef))?;
            found += hits.iter().filter(|h| want.contains(&h.slot)).count();
        }
        Ok(found as f64 / (K * fresh.len()) as f64)
    };
    let ef = index.default_ef();
    println!(
        "{{\"event\":\"calibrated\",\"metric\":\"{metric:?}\",\"n\":{n},\"dim\":{dim},\"queries\":{queries},\"build_s\":{build_s:.2},\"calibrate_s\":{calibrate_s:.3},\"ef\":{ef},\"sample_recall\":{:.4},\"fresh_recall\":{:.4}}}",
        c.map_or(0.0, |c| c.recall),
        recall(ef)?
    );
    // The calibration's own sample (64 stored vectors, their exact top 10 without
    // themselves), searched two ways: walking through the query's own node and only dropping
    // it from the hits (how calibration measured before), and leaving it out of the graph
    // (`HnswIndex::search_without`, how it measures now). Recall counted by id here.
    let settings = CalibrationSettings::default();
    let sample = sample_positions(n, settings.queries, settings.seed);
    let sample_truth: Vec<Vec<u32>> = sample
        .iter()
        .map(|&p| {
            let others = data
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != p)
                .map(|(i, v)| (i as u32, v.as_slice()));
            exact_top_k(metric, &data[p], others, K)
                .iter()
                .map(|h| h.slot)
                .collect()
        })
        .collect();
    let sampled = |ef: usize, leave_out: bool| -> Result<f64, Box<dyn std::error::Error>> {
        let mut found = 0;
        for (&p, want) in sample.iter().zip(&sample_truth) {
            let slot = p as u32;
            let hits = if leave_out {
                index.search_without(&data[p], K, Some(ef), slot)?
            } else {
                index.search_filtered(&data[p], K, Some(ef), |s| s != slot)?
            };
            found += hits.iter().filter(|h| want.contains(&h.slot)).count();
        }
        Ok(found as f64 / (K * sample.len()) as f64)
    };
    for step in LADDER {
        println!(
            "{{\"event\":\"ladder\",\"ef\":{step},\"fresh_recall\":{:.4},\"sample_walking_through_itself\":{:.4},\"sample_left_out\":{:.4}}}",
            recall(step)?,
            sampled(step, false)?,
            sampled(step, true)?
        );
    }
    Ok(())
}
