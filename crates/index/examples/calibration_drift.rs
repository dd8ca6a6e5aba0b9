//! Diagnostic: how far recall drifts below the calibration target as a graph grows by inserts
//! after its calibration (why the engine measures a graph again once it has grown by a
//! quarter). Builds a graph of `--n` seeded uniform random vectors (the data on which
//! calibration matters), calibrates it, then inserts more and, at each size, measures recall@10
//! of fresh queries at the calibration's `ef` (stale) and at the `ef` a new calibration finds.
//!
//! Usage: `cargo run --release -p strata-index --example calibration_drift -- [--n 3000]
//! [--dim 256] [--queries 200]`. Prints JSON lines.

use strata_index::{CalibrationSettings, HnswIndex, HnswParams, Metric, exact_top_k, testdata};

const K: usize = 10;
const SEED: u64 = 42;
/// Sizes measured, as multiples of `--n` (in quarters).
const QUARTERS: [usize; 5] = [4, 5, 6, 7, 8];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (mut n, mut dim, mut queries) = (3_000usize, 256usize, 200usize);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--n" => n = value.parse()?,
            "--dim" => dim = value.parse()?,
            "--queries" => queries = value.parse()?,
            _ => return Err(format!("unknown flag {flag}").into()),
        }
    }
    let metric = Metric::Cosine;
    let data = testdata::uniform(n * 2, dim, SEED);
    let fresh = testdata::uniform(queries, dim, SEED + 1);
    let mut index = HnswIndex::new(dim, metric, HnswParams::default())?;
    let mut inserted = 0;
    let mut calibrated_ef = 0;
    for quarters in QUARTERS {
        let size = n * quarters / 4;
        for (i, v) in data.iter().enumerate().take(size).skip(inserted) {
            index.insert(i as u32, v)?;
        }
        inserted = size;
        if quarters == 4 {
            index.calibrate(CalibrationSettings::default());
            calibrated_ef = index.default_ef();
        }
        let recall = |ef: usize| -> Result<f64, Box<dyn std::error::Error>> {
            let mut found = 0;
            for q in &fresh {
                let all = data[..size]
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (i as u32, v.as_slice()));
                let want: Vec<u32> = exact_top_k(metric, q, all, K)
                    .iter()
                    .map(|h| h.slot)
                    .collect();
                let hits = index.search(q, K, Some(ef))?;
                found += hits.iter().filter(|h| want.contains(&h.slot)).count();
            }
            Ok(found as f64 / (K * fresh.len()) as f64)
        };
        let now = index
            .measure(CalibrationSettings::default())
            .map_or(calibrated_ef, |c| c.ef);
        println!(
            "{{\"size\":{size},\"growth\":{:.2},\"calibrated_ef\":{calibrated_ef},\"stale_recall\":{:.4},\"fresh_ef\":{now},\"fresh_recall\":{:.4}}}",
            quarters as f64 / 4.0,
            recall(calibrated_ef)?,
            recall(now)?
        );
    }
    Ok(())
}
