//! Diagnostic: recall@10 and queries per CPU-second of a graph given as `HnswIndex::to_bytes`
//! output, on the data set `ann_bench --out DIR` wrote, with a histogram of how many of its
//! 10 true neighbours each query found. A graph built by hnswlib can be searched by this
//! crate's code after `bench/ann/hnswlib_graph.py` converted it: that separates what the
//! graph does from what the search does (see docs/benchmarks.md, issue 15).
//!
//! Usage: `graph_recall DATA_DIR GRAPH_FILE [EF,EF,...]`; with `GRAPH_FILE` missing, builds
//! the graph on one thread from `DATA_DIR/base.fvecs` and writes it there first.

use std::time::Instant;

use strata_index::{HnswIndex, HnswParams, Metric};

const K: usize = 10;

/// Rows of an fvecs/ivecs file as raw 32-bit words (each row: its length, then the values).
fn read_rows(path: &str) -> Result<Vec<Vec<u32>>, Box<dyn std::error::Error>> {
    let bytes = std::fs::read(path)?;
    let words: Vec<u32> = bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let dim = *words.first().ok_or(format!("{path} is empty"))? as usize;
    Ok(words
        .chunks_exact(dim + 1)
        .map(|r| r[1..].to_vec())
        .collect())
}

fn floats(rows: Vec<Vec<u32>>) -> Vec<Vec<f32>> {
    rows.into_iter()
        .map(|r| r.into_iter().map(f32::from_bits).collect())
        .collect()
}

/// Nanoseconds the calling thread has run (Linux `schedstat`); 0 elsewhere.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(data), Some(graph)) = (args.get(1), args.get(2)) else {
        return Err("usage: graph_recall DATA_DIR GRAPH_FILE [EF,EF,...]".into());
    };
    let efs: Vec<usize> = args
        .get(3)
        .map_or("16,24,32,48,64,96", String::as_str)
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let base = floats(read_rows(&format!("{data}/base.fvecs"))?);
    let queries = floats(read_rows(&format!("{data}/query.fvecs"))?);
    let truth = read_rows(&format!("{data}/gt.ivecs"))?;
    let dim = base.first().ok_or("no base vectors")?.len();
    let params = HnswParams::default();
    let index = if std::path::Path::new(graph).exists() {
        HnswIndex::from_bytes(&std::fs::read(graph)?, dim, Metric::L2, params)?
    } else {
        let mut index = HnswIndex::new(dim, Metric::L2, params)?;
        let items: Vec<(u32, &[f32])> = (0u32..).zip(base.iter().map(Vec::as_slice)).collect();
        index.insert_batch(&items, 1)?;
        std::fs::write(graph, index.to_bytes()?)?;
        index
    };
    println!("ef | recall@10 | queries per CPU-second | queries finding 0, 1, ..., 10 of 10");
    for ef in efs {
        // The best of three passes: the machine may be shared.
        let mut best_ns = u64::MAX;
        for _ in 0..3 {
            let start = thread_cpu_ns();
            for q in &queries {
                std::hint::black_box(index.search(q, K, Some(ef))?);
            }
            best_ns = best_ns.min(thread_cpu_ns().saturating_sub(start).max(1));
        }
        let t = Instant::now();
        let (mut found, mut histogram) = (0usize, [0usize; K + 1]);
        for (q, true_ids) in queries.iter().zip(&truth) {
            let hits = index.search(q, K, Some(ef))?;
            let n = hits
                .iter()
                .filter(|h| true_ids[..K].contains(&h.slot))
                .count();
            found += n;
            histogram[n] += 1;
        }
        println!(
            "{ef} | {:.4} | {:.0} | {histogram:?} ({:.2} s wall)",
            found as f64 / (K * queries.len()) as f64,
            queries.len() as f64 / (best_ns as f64 / 1e9),
            t.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
