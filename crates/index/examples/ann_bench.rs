//! ANN benchmark driver: writes the seeded data set as fvecs/ivecs for peer libraries, then
//! measures Strata's HNSW (build time, QPS and recall@10 with 1 and 2 threads) as JSON lines.
//!
//! Usage: `cargo run --release -p strata-index --example ann_bench -- [--n 100000]
//! [--dim 128] [--clusters 100] [--queries 1000] [--efs 16,32,64,128] [--build-threads 2]
//! [--out DIR]`.
//! Uses L2, the metric every peer supports the same way. Ground truth is an exact scan.

use std::io::Write;
use std::time::Instant;

use strata_index::{Hit, HnswIndex, HnswParams, Metric, exact_top_k, kernels, testdata};

const K: usize = 10;
const SEED: u64 = 42;

struct Args {
    n: usize,
    dim: usize,
    clusters: usize,
    queries: usize,
    efs: Vec<usize>,
    build_threads: usize,
    out: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        n: 100_000,
        dim: 128,
        clusters: 100,
        queries: 1000,
        efs: vec![16, 32, 64, 128],
        // As the peers in `bench/ann/compare.py`.
        build_threads: 2,
        out: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let num = || value.parse::<usize>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--n" => args.n = num()?,
            "--dim" => args.dim = num()?,
            "--clusters" => args.clusters = num()?,
            "--queries" => args.queries = num()?,
            "--efs" => {
                args.efs = value
                    .split(',')
                    .map(|s| s.parse().map_err(|e| format!("--efs: {e}")))
                    .collect::<Result<_, _>>()?
            }
            "--build-threads" => args.build_threads = num()?,
            "--out" => args.out = Some(value),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(args)
}

fn write_fvecs(path: &str, rows: &[Vec<f32>]) -> std::io::Result<()> {
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    for r in rows {
        w.write_all(&(r.len() as u32).to_le_bytes())?;
        for x in r {
            w.write_all(&x.to_le_bytes())?;
        }
    }
    w.flush()
}

fn write_ivecs(path: &str, rows: &[Vec<Hit>]) -> std::io::Result<()> {
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    for r in rows {
        w.write_all(&(r.len() as u32).to_le_bytes())?;
        for h in r {
            w.write_all(&h.slot.to_le_bytes())?;
        }
    }
    w.flush()
}

/// Runs `f` over `items` split across `threads` scoped threads; returns the outputs in order
/// and the CPU time the threads spent, in seconds (0 where the OS does not report it).
fn parallel<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> R + Sync,
) -> (Vec<R>, f64) {
    let chunk = items.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| {
                s.spawn(|| {
                    let start = thread_cpu_ns();
                    let out = part.iter().map(&f).collect::<Vec<R>>();
                    (out, thread_cpu_ns().saturating_sub(start))
                })
            })
            .collect();
        let mut cpu_ns = 0;
        let mut outputs = Vec::with_capacity(items.len());
        for h in handles {
            let (out, ns) = h.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
            outputs.extend(out);
            cpu_ns += ns;
        }
        (outputs, cpu_ns as f64 / 1e9)
    })
}

/// Nanoseconds the calling thread has run on a CPU (Linux `schedstat`); 0 elsewhere. The
/// machine may be shared, so queries per CPU-second are reported beside wall-clock QPS.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// CPU seconds the whole process (all threads) has run, user and system (Linux
/// `/proc/self/stat`, in clock ticks of 1/100 s); 0 elsewhere. Lets a build on several threads
/// be compared by the CPU it used as well as by its wall-clock time on a shared machine.
fn process_cpu_s() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    ticks as f64 / 100.0
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let t = Instant::now();
    let data = testdata::clustered(args.n, args.dim, args.clusters, SEED);
    let queries = testdata::queries(args.queries, args.dim, args.clusters, SEED, SEED + 1);
    let (truth, _): (Vec<Vec<Hit>>, f64) = parallel(&queries, 2, |q| {
        exact_top_k(
            Metric::L2,
            q,
            data.iter()
                .enumerate()
                .map(|(i, v)| (i as u32, v.as_slice())),
            K,
        )
    });
    eprintln!(
        "data + exact ground truth: {:.1} s (SIMD kernels: {})",
        t.elapsed().as_secs_f64(),
        kernels::simd_in_use()
    );
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir)?;
        write_fvecs(&format!("{dir}/base.fvecs"), &data)?;
        write_fvecs(&format!("{dir}/query.fvecs"), &queries)?;
        write_ivecs(&format!("{dir}/gt.ivecs"), &truth)?;
    }

    let params = HnswParams::default();
    let mut index = HnswIndex::new(args.dim, Metric::L2, params)?;
    let items: Vec<(u32, &[f32])> = data
        .iter()
        .enumerate()
        .map(|(i, v)| (i as u32, v.as_slice()))
        .collect();
    let t = Instant::now();
    let cpu = process_cpu_s();
    index.insert_batch(&items, args.build_threads)?;
    let build_s = t.elapsed().as_secs_f64();
    let build_cpu_s = process_cpu_s() - cpu;
    println!(
        "{{\"lib\":\"strata-index\",\"event\":\"build\",\"n\":{},\"dim\":{},\"m\":{},\"ef_construction\":{},\"build_threads\":{},\"build_s\":{build_s:.3},\"build_cpu_s\":{build_cpu_s:.3}}}",
        args.n, args.dim, params.m, params.ef_construction, args.build_threads
    );
    // What a calibration of the default beam costs on this graph (measured, not kept: the
    // searches below give their own `ef`).
    let t = Instant::now();
    let c = index.measure(strata_index::CalibrationSettings::default());
    println!(
        "{{\"lib\":\"strata-index\",\"event\":\"calibrate\",\"calibrate_s\":{:.3},\"ef\":{},\"recall_at_10\":{:.4},\"steps\":{}}}",
        t.elapsed().as_secs_f64(),
        c.map_or(0, |c| c.ef),
        c.map_or(0.0, |c| c.recall),
        c.map_or(0, |c| c.steps)
    );
    // What a cold load of the tenant pays for its graph: decoding the persisted bytes.
    let t = Instant::now();
    let bytes = index.to_bytes()?;
    let to_bytes_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let restored = HnswIndex::from_bytes(&bytes, args.dim, Metric::L2, params)?;
    let from_bytes_s = t.elapsed().as_secs_f64();
    assert_eq!(restored.len(), index.len());
    drop(restored);
    println!(
        "{{\"lib\":\"strata-index\",\"event\":\"bytes\",\"bytes\":{},\"to_bytes_s\":{to_bytes_s:.4},\"from_bytes_s\":{from_bytes_s:.4}}}",
        bytes.len()
    );

    for &ef in &args.efs {
        for threads in [1usize, 2] {
            // Warm-up pass, then the best of three timed passes over all queries (the
            // machine is shared, so the fastest pass is the least disturbed one).
            let (mut results, _) = parallel(&queries, threads, |q| index.search(q, K, Some(ef)));
            let (mut secs, mut cpu) = (f64::MAX, f64::MAX);
            for _ in 0..3 {
                let t = Instant::now();
                let (pass, pass_cpu) =
                    parallel(&queries, threads, |q| index.search(q, K, Some(ef)));
                secs = secs.min(t.elapsed().as_secs_f64());
                cpu = cpu.min(pass_cpu);
                results = pass;
            }
            let mut found = 0usize;
            for (r, gt) in results.iter().zip(&truth) {
                let hits = r.as_ref().map_err(|e| e.to_string())?;
                found += hits
                    .iter()
                    .filter(|h| gt.iter().any(|g| g.slot == h.slot))
                    .count();
            }
            let recall = found as f64 / (K * queries.len()) as f64;
            let qps = queries.len() as f64 / secs;
            let cpu_qps = queries.len() as f64 / cpu;
            println!(
                "{{\"lib\":\"strata-index\",\"event\":\"search\",\"ef\":{ef},\"threads\":{threads},\"qps\":{qps:.1},\"cpu_qps\":{cpu_qps:.1},\"recall_at_10\":{recall:.4}}}"
            );
        }
    }
    Ok(())
}
