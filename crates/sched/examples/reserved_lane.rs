//! Reserved-lane experiment: does a reserved (dedicated) tenant keep its latency while the
//! shared tenants flood the pool?
//!
//! Run with `cargo run --release -p strata-sched --example reserved_lane`.
//! Tenant D submits a steady open-loop stream of ~1 ms CPU jobs (`RL_D_RATE` per second,
//! default 200) in the reserved lane. Tenants A and C, when flooding, run `RL_CLIENTS` (default
//! 16 each) closed-loop submitters of `RL_FLOOD_MS` (default 10) ms jobs in the shared lane:
//! costlier work, like batch writes, which a fair queue alone still makes D wait behind (it
//! dispatches D's job next, but only when a shared worker finishes its current one). D's latency is submit →
//! job finished. The pool has `RL_WORKERS` (default 2) shared threads and `RL_RESERVED`
//! (default 1) reserved ones; the last scenario runs D in the shared lane for comparison. Each
//! run lasts `RL_SECS` (default 4) seconds.

use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use strata_sched::{FairScheduler, Lane, SchedulerConfig};

const FLOODERS: [u32; 2] = [1, 3];
const D: u32 = 4;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Busy CPU work for `d`, like a small search; returns when it finished.
fn spin(d: Duration) -> Instant {
    let end = Instant::now() + d;
    while Instant::now() < end {
        std::hint::spin_loop();
    }
    Instant::now()
}

/// D's sorted latencies and the flood's completed jobs per second.
fn run(flood: bool, d_lane: Lane) -> Result<(Vec<Duration>, f64), Box<dyn Error>> {
    let secs = env("RL_SECS", 4);
    let rate = env("RL_D_RATE", 200).max(1);
    let job = Duration::from_millis(1);
    let flood_job = Duration::from_millis(env("RL_FLOOD_MS", 10).max(1));
    let sched = Arc::new(FairScheduler::new(SchedulerConfig {
        workers: env("RL_WORKERS", 2) as usize,
        reserved_workers: env("RL_RESERVED", 1) as usize,
        max_queue: 100_000,
        max_queue_per_tenant: 10_000,
        ..SchedulerConfig::default()
    })?);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let clients = if flood { env("RL_CLIENTS", 16) } else { 0 };
    let flooders: Vec<_> = FLOODERS
        .iter()
        .flat_map(|&tenant| (0..clients).map(move |_| tenant))
        .map(|tenant| {
            let (sched, stop, done) = (sched.clone(), stop.clone(), done.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(h) = sched.submit(&tenant, 1, move || spin(flood_job)) {
                        let _ = h.wait_blocking();
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    // Let the backlog build before D starts measuring.
    std::thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    let before = done.load(Ordering::Relaxed);
    let period = Duration::from_secs_f64(1.0 / rate as f64);
    let mut pending = Vec::new();
    let mut next = start;
    while next < start + Duration::from_secs(secs) {
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let submitted = Instant::now();
        pending.push((
            submitted,
            sched.submit_in(&D, 1, d_lane, move || spin(job))?,
        ));
        next += period;
    }
    let mut latencies = Vec::with_capacity(pending.len());
    for (submitted, handle) in pending {
        latencies.push(handle.wait_blocking()? - submitted);
    }
    let flood_rate = (done.load(Ordering::Relaxed) - before) as f64 / secs as f64;
    stop.store(true, Ordering::Relaxed);
    for f in flooders {
        let _ = f.join();
    }
    sched.shutdown();
    latencies.sort();
    Ok((latencies, flood_rate))
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
}

fn main() -> Result<(), Box<dyn Error>> {
    println!(
        "pool {} shared + {} reserved workers, D {} jobs/s of 1 ms, 2 flooding tenants × {} \
         closed-loop clients of {} ms jobs, {} s per run",
        env("RL_WORKERS", 2),
        env("RL_RESERVED", 1),
        env("RL_D_RATE", 200),
        env("RL_CLIENTS", 16),
        env("RL_FLOOD_MS", 10),
        env("RL_SECS", 4)
    );
    println!(
        "{:<28} {:>6} {:>9} {:>9} {:>9} {:>12}",
        "scenario", "D n", "D p50 ms", "D p99 ms", "D max ms", "flood jobs/s"
    );
    let mut alone_p99 = f64::NAN;
    for (name, flood, lane) in [
        ("D alone (reserved lane)", false, Lane::Reserved),
        ("flood, D in reserved lane", true, Lane::Reserved),
        ("flood, D in shared lane", true, Lane::Shared),
    ] {
        let (lat, flood_rate) = run(flood, lane)?;
        let p99 = pct(&lat, 0.99);
        if !flood {
            alone_p99 = p99;
        }
        println!(
            "{:<28} {:>6} {:>9.2} {:>9.2} {:>9.2} {:>12.0}{}",
            name,
            lat.len(),
            pct(&lat, 0.5),
            p99,
            pct(&lat, 1.0),
            flood_rate,
            if flood {
                format!("   p99 = {:.2}x alone", p99 / alone_p99)
            } else {
                String::new()
            }
        );
    }
    Ok(())
}
