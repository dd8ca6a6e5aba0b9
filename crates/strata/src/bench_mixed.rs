//! `strata bench mixed`: a mixed multi-tenant workload against a running server, to size a
//! node. Many tenants (`mixed-0000`, …, created and filled on first use), activity spread over
//! them by a Zipf law (a few hot tenants, a long cold tail, as on a shared deployment), each
//! operation a write or a search. Closed loop: `clients` workers each send their next request
//! as soon as the last one is answered. Prints a live progress line on stderr (a line a second
//! when stderr is not a terminal) and a summary table (throughput, p50/p99 per operation and
//! per tenant class) on stdout.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

use crate::bench::{percentile, prepare, vector};
use crate::client::Client;
use crate::progress::Progress;

/// Settings of one run.
#[derive(Debug, Clone, clap::Args)]
pub struct MixedArgs {
    /// Tenants taking part.
    #[arg(long, default_value_t = 50)]
    pub tenants: usize,
    /// Concurrent clients (closed loop).
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Seconds of measured load.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Zipf exponent of tenant activity: 0 is uniform, 1 or more is a few hot tenants.
    #[arg(long, default_value_t = 1.1)]
    pub zipf: f64,
    /// Share of operations that are writes (one record each); the rest are searches.
    #[arg(long, default_value_t = 0.2)]
    pub write_ratio: f64,
    /// Records per tenant (384-dimensional vectors) written before the run.
    #[arg(long, default_value_t = 200)]
    pub records: usize,
    /// The tenants' names: `<tenant>-0000`, `<tenant>-0001`, … A run's writes stay in its
    /// tenants, so the next run on them starts from more records (and searches a little
    /// slower); a new name per run starts every run from `--records` each, so runs compare.
    #[arg(long, default_value = "mixed")]
    pub tenant: String,
}

/// Tenants by their rank in the Zipf law: the top 10 % are hot, the next 40 % warm.
fn class(rank: usize, tenants: usize) -> &'static str {
    let pct = rank * 100 / tenants.max(1);
    if pct < 10 {
        "hot"
    } else if pct < 50 {
        "warm"
    } else {
        "cold"
    }
}

/// Cumulative Zipf weights of ranks 0..n (rank r has weight 1 / (r + 1)^s).
fn zipf_cdf(n: usize, s: f64) -> Vec<f64> {
    let mut acc = 0.0;
    let mut cdf: Vec<f64> = (0..n)
        .map(|r| {
            acc += 1.0 / ((r + 1) as f64).powf(s);
            acc
        })
        .collect();
    for c in &mut cdf {
        *c /= acc;
    }
    cdf
}

/// A small deterministic generator (xorshift64*), one per client, so runs are repeatable.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn pick(cdf: &[f64], u: f64) -> usize {
    cdf.partition_point(|c| *c < u).min(cdf.len() - 1)
}

/// Latencies of answered requests and the count of failed ones, per (operation, class).
type Results = Mutex<BTreeMap<(&'static str, &'static str), (Vec<Duration>, u64)>>;

pub async fn mixed(admin: Client, args: MixedArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.tenants > 0, "--tenants: at least 1");
    anyhow::ensure!(args.clients > 0, "--clients: at least 1");
    anyhow::ensure!(args.records > 0, "--records: at least 1");
    anyhow::ensure!(args.seconds > 0, "--seconds: at least 1");
    anyhow::ensure!(
        args.zipf.is_finite() && args.zipf >= 0.0,
        "--zipf: a number, not negative"
    );
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.write_ratio),
        "--write-ratio: between 0 and 1"
    );
    eprintln!(
        "preparing {} tenants ({}-0000…, at least {} records each)…",
        args.tenants, args.tenant, args.records
    );
    let mut progress = Progress::stderr();
    let mut tenants = Vec::with_capacity(args.tenants);
    // What the run starts from: earlier runs' writes stay in these tenants.
    let mut records_at_start = Vec::with_capacity(args.tenants);
    for i in 0..args.tenants {
        let id = format!("{}-{i:04}", args.tenant);
        let key = prepare(&admin, &id, args.records).await?;
        let client = Client::new(admin.server(), Some(key))?;
        // Load the tenant's index before timing anything.
        client
            .call(
                Method::POST,
                "/v1/search",
                Some(json!({"vector": vector(7), "k": 10})),
            )
            .await?;
        let count = client
            .call(Method::POST, "/v1/memories/count", Some(json!({})))
            .await?;
        records_at_start.push(count["count"].as_u64().unwrap_or(0));
        tenants.push(client);
        // Off a terminal every line stays: one per tenant would be too many.
        let ready = i + 1;
        if progress.is_live() || ready % 10 == 0 || ready == args.tenants {
            progress.show(&format!("  {ready}/{} tenants ready", args.tenants));
        }
    }
    progress.finish();
    let tenants = Arc::new(tenants);
    let cdf = Arc::new(zipf_cdf(args.tenants, args.zipf));
    let results: Arc<Results> = Arc::default();
    let (done, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();

    let workers: Vec<_> = (0..args.clients)
        .map(|c| {
            let (tenants, cdf, results) = (
                Arc::clone(&tenants),
                Arc::clone(&cdf),
                Arc::clone(&results),
            );
            let (done, failed, stop) = (Arc::clone(&done), Arc::clone(&failed), Arc::clone(&stop));
            let write_ratio = args.write_ratio;
            tokio::spawn(async move {
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (c as u64 + 1).wrapping_mul(0xBF58_476D));
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let rank = pick(&cdf, rng.next_f64());
                    let seed = (c as u64) << 40 | n;
                    let (op, path, body) = if rng.next_f64() < write_ratio {
                        let record = json!({"content": format!("mixed write {seed}"), "vector": vector(seed)});
                        ("write", "/v1/memories", record)
                    } else {
                        ("search", "/v1/search", json!({"vector": vector(seed), "k": 10}))
                    };
                    let t0 = Instant::now();
                    let ok = tenants[rank].call(Method::POST, path, Some(body)).await.is_ok();
                    let latency = t0.elapsed();
                    let key = (op, class(rank, tenants.len()));
                    let mut r = results.lock().unwrap_or_else(|e| e.into_inner());
                    let entry = r.entry(key).or_default();
                    if ok {
                        entry.0.push(latency);
                        done.fetch_add(1, Ordering::Relaxed);
                    } else {
                        entry.1 += 1;
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();

    // The live progress line, once a second.
    let end = started + Duration::from_secs(args.seconds);
    let mut last = (Instant::now(), 0u64);
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(1).min(end - Instant::now())).await;
        let now = Instant::now();
        let ops = done.load(Ordering::Relaxed);
        let rate = (ops - last.1) as f64 / (now - last.0).as_secs_f64().max(1e-9);
        last = (now, ops);
        progress.show(&format!(
            "  {:>4.0} s / {} s  {:>9} ops  {:>8.0} ops/s now  {} failed   ",
            started.elapsed().as_secs_f64(),
            args.seconds,
            ops,
            rate,
            failed.load(Ordering::Relaxed)
        ));
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    progress.finish();

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let r = results.lock().unwrap_or_else(|e| e.into_inner());
    let total: usize = r.values().map(|(l, _)| l.len()).sum();
    println!(
        "{} tenants (Zipf s = {}), {} clients, {:.0} % writes, {:.1} s: {:.0} ops/s answered, {} failed",
        args.tenants,
        args.zipf,
        args.clients,
        args.write_ratio * 100.0,
        elapsed,
        total as f64 / elapsed,
        failed.load(Ordering::Relaxed)
    );
    println!(
        "started from {} records in all, {} in the hottest tenant ({}-0000)",
        records_at_start.iter().sum::<u64>(),
        records_at_start.first().copied().unwrap_or(0),
        args.tenant
    );
    println!();
    println!("| operation | tenant class | ops | ops/s | failed | p50 (ms) | p99 (ms) |");
    println!("|---|---|---|---|---|---|---|");
    let mut by_op: BTreeMap<&str, (Vec<Duration>, u64)> = BTreeMap::new();
    for op in ["write", "search"] {
        for cls in ["hot", "warm", "cold"] {
            let Some((lat, fail)) = r.get(&(op, cls)) else {
                continue;
            };
            let mut lat = lat.clone();
            lat.sort();
            println!(
                "| {op} | {cls} | {} | {:.0} | {fail} | {:.2} | {:.2} |",
                lat.len(),
                lat.len() as f64 / elapsed,
                ms(percentile(&lat, 0.50)),
                ms(percentile(&lat, 0.99))
            );
            let all = by_op.entry(op).or_default();
            all.0.extend(lat);
            all.1 += fail;
        }
    }
    for (op, (mut lat, fail)) in by_op {
        lat.sort();
        println!(
            "| {op} | all | {} | {:.0} | {fail} | {:.2} | {:.2} |",
            lat.len(),
            lat.len() as f64 / elapsed,
            ms(percentile(&lat, 0.50)),
            ms(percentile(&lat, 0.99))
        );
    }
    anyhow::ensure!(
        total > 0,
        "every operation failed ({} of them): nothing was measured",
        failed.load(Ordering::Relaxed)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_favours_low_ranks_and_covers_all() {
        let cdf = zipf_cdf(100, 1.1);
        assert!((cdf[99] - 1.0).abs() < 1e-12);
        let mut rng = Rng(42);
        let mut hits = vec![0u32; 100];
        for _ in 0..100_000 {
            hits[pick(&cdf, rng.next_f64())] += 1;
        }
        assert!(hits[0] > hits[9] && hits[9] > hits[99], "{hits:?}");
        // Uniform when s = 0.
        let flat = zipf_cdf(4, 0.0);
        assert_eq!(flat, vec![0.25, 0.5, 0.75, 1.0]);
        assert_eq!(
            (class(0, 50), class(5, 50), class(25, 50)),
            ("hot", "warm", "cold")
        );
    }
}
