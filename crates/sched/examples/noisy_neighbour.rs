//! Noisy-neighbour experiment at the crate level: how much does tenant A flooding the pool
//! hurt tenant B's latency, under fair queueing versus a plain FIFO pool of the same size?
//!
//! Run with `cargo run --release -p strata-sched --example noisy_neighbour`.
//! Tenant B submits a steady open-loop stream of ~1 ms CPU jobs (`NN_B_RATE` per second,
//! default 200, a tenth of the pool's capacity). Tenant A, when flooding, runs `NN_A_CLIENTS`
//! (default 32) closed-loop submitters of the same jobs, far above its share. B's latency is
//! submit → job finished. Each of the four runs lasts `NN_SECS` (default 4) seconds on a pool of
//! `NN_WORKERS` (default 2) threads, plus `NN_BACKGROUND` (default 0) lower-priority workers that
//! run the jobs of a tenant over its CPU share (`SchedulerConfig::background_workers`; the jobs
//! here only compute, so they are submitted as `Demotable::ReadOnly`).

use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use strata_sched::{Demotable, Discipline, FairScheduler, Lane, SchedulerConfig};

const A: u32 = 1;
const B: u32 = 2;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Busy CPU work for `d`, like a small search.
fn spin(d: Duration) -> Instant {
    let end = Instant::now() + d;
    while Instant::now() < end {
        std::hint::spin_loop();
    }
    Instant::now()
}

struct Outcome {
    b_latencies: Vec<Duration>,
    a_jobs: u64,
}

fn run(discipline: Discipline, flood: bool) -> Result<Outcome, Box<dyn Error>> {
    let workers = env("NN_WORKERS", 2) as usize;
    let secs = env("NN_SECS", 4);
    let b_rate = env("NN_B_RATE", 200).max(1);
    let job = Duration::from_millis(1);
    let sched = Arc::new(FairScheduler::new(SchedulerConfig {
        workers,
        background_workers: env("NN_BACKGROUND", 0) as usize,
        discipline,
        max_queue: 100_000,
        max_queue_per_tenant: 10_000,
        ..SchedulerConfig::default()
    })?);
    let stop = Arc::new(AtomicBool::new(false));
    let a_jobs = Arc::new(AtomicU64::new(0));
    let flooders: Vec<_> = (0..if flood { env("NN_A_CLIENTS", 32) } else { 0 })
        .map(|_| {
            let (sched, stop, a_jobs) = (sched.clone(), stop.clone(), a_jobs.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(h) =
                        sched.submit_with(&A, 1, Lane::Shared, Demotable::ReadOnly, move || {
                            spin(job)
                        })
                    {
                        let _ = h.wait_blocking();
                        a_jobs.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    // Let A's backlog build before B starts measuring.
    std::thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    let a_before = a_jobs.load(Ordering::Relaxed);
    let period = Duration::from_secs_f64(1.0 / b_rate as f64);
    let mut pending = Vec::new();
    let mut next = start;
    while next < start + Duration::from_secs(secs) {
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let submitted = Instant::now();
        pending.push((
            submitted,
            sched.submit_with(&B, 1, Lane::Shared, Demotable::ReadOnly, move || spin(job))?,
        ));
        next += period;
    }
    let mut b_latencies = Vec::with_capacity(pending.len());
    for (submitted, handle) in pending {
        b_latencies.push(handle.wait_blocking()? - submitted);
    }
    let a_jobs = a_jobs.load(Ordering::Relaxed) - a_before;
    stop.store(true, Ordering::Relaxed);
    for f in flooders {
        let _ = f.join();
    }
    sched.shutdown();
    Ok(Outcome {
        b_latencies,
        a_jobs,
    })
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
}

fn main() -> Result<(), Box<dyn Error>> {
    println!(
        "pool {} + {} background workers, B {} jobs/s of 1 ms, A {} closed-loop clients, {} s per run",
        env("NN_WORKERS", 2),
        env("NN_BACKGROUND", 0),
        env("NN_B_RATE", 200),
        env("NN_A_CLIENTS", 32),
        env("NN_SECS", 4)
    );
    println!(
        "{:<6} {:<10} {:>6} {:>9} {:>9} {:>9} {:>9}",
        "pool", "scenario", "B n", "B p50 ms", "B p99 ms", "B max ms", "A jobs/s"
    );
    for discipline in [Discipline::Fair, Discipline::Fifo] {
        let mut alone_p99 = f64::NAN;
        for flood in [false, true] {
            let mut out = run(discipline, flood)?;
            out.b_latencies.sort();
            let lat = &out.b_latencies;
            let p99 = pct(lat, 0.99);
            if !flood {
                alone_p99 = p99;
            }
            println!(
                "{:<6} {:<10} {:>6} {:>9.2} {:>9.2} {:>9.2} {:>9.0}{}",
                format!("{discipline:?}"),
                if flood { "A floods" } else { "B alone" },
                lat.len(),
                pct(lat, 0.5),
                p99,
                pct(lat, 1.0),
                out.a_jobs as f64 / env("NN_SECS", 4) as f64,
                if flood {
                    format!("   p99 = {:.2}x alone", p99 / alone_p99)
                } else {
                    String::new()
                }
            );
        }
    }
    Ok(())
}
