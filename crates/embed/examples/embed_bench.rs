//! Embedder throughput and latency on a fixed set of sentences, for docs/benchmarks.md.
//!
//! ```text
//! scripts/fetch-model.sh
//! cargo run --release -p strata-embed --example embed_bench -- [--threads N] [--batch B] [--rounds R]
//! ```
//!
//! Prints sentences/s embedding one sentence per call and `B` per call, and the p50/p99
//! latency of a one-sentence call. `crates/embed/benches/st_bench.py` measures
//! sentence-transformers the same way on the same sentences.

use std::path::Path;
use std::time::Instant;

use strata_embed::Embedder;

fn main() -> anyhow::Result<()> {
    let mut threads = 1;
    let mut batch = 32;
    let mut rounds = 2;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value: usize = args
            .next()
            .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?
            .parse()?;
        match flag.as_str() {
            "--threads" => threads = value,
            "--batch" => batch = value,
            "--rounds" => rounds = value,
            _ => anyhow::bail!("unknown flag {flag}"),
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::var_os("STRATA_MODEL_DIR")
        .map(Into::into)
        .unwrap_or_else(|| root.join("../..").join(strata_embed::DEFAULT_MODEL_DIR));
    let text = std::fs::read_to_string(root.join("benches/sentences.txt"))?;
    let sentences: Vec<&str> = text.lines().collect();

    let embedder = Embedder::load(&dir)?.with_threads(threads);
    embedder.embed(&sentences[..batch.min(sentences.len())])?; // warm-up

    let mut latencies = Vec::new();
    let start = Instant::now();
    for _ in 0..rounds {
        for s in &sentences {
            let t = Instant::now();
            embedder.embed(&[s])?;
            latencies.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let single = latencies.len() as f64 / start.elapsed().as_secs_f64();

    let start = Instant::now();
    for _ in 0..rounds {
        for chunk in sentences.chunks(batch) {
            embedder.embed(chunk)?;
        }
    }
    let batched = (rounds * sentences.len()) as f64 / start.elapsed().as_secs_f64();

    latencies.sort_by(f64::total_cmp);
    let pct = |p: usize| latencies[(latencies.len() * p / 100).min(latencies.len() - 1)];
    println!(
        "strata-embed threads={threads} sentences={} single={single:.1}/s batch{batch}={batched:.1}/s \
         p50={:.2}ms p99={:.2}ms",
        sentences.len(),
        pct(50),
        pct(99)
    );
    Ok(())
}
