//! Durable single-record writes with concurrent writers, with and without group commit.
//!
//! Each writer is a thread with its own tenant (or all in one tenant, `same tenant` rows) and
//! calls `Engine::put` with one record (384-dimension vector, ~200 bytes of text) at a time,
//! as fast as acknowledgements come back; every acknowledged write is durable. Prints writes/s
//! and per-write latency (p50, p99) for 1, 8 and 32 writers, with the durable commits the row
//! made (each one fsync; with group commit, shared) and their mean duration, which shows what
//! the disk's fsync cost during that row (it varies by 10× from minute to minute on a shared
//! virtual disk).
//!
//! Run: `cargo bench -p strata-engine --bench concurrent_writes` (`-- <seconds>` sets the time
//! per row, default 3).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use strata_auth::{Grant, OperatorScope, Permission, Permissions, TenantScope};
use strata_engine::{Engine, EngineConfig};
use strata_types::{NewRecord, RequestScope, TenantId};

fn main() {
    let secs: f64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(3.0);
    println!(
        "| writers | tenants | group commit | writes/s | p50 ms | p99 ms | writes per fsync | mean durable commit ms |"
    );
    println!("|---:|---:|---|---:|---:|---:|---:|---:|");
    for writers in [1usize, 8, 32] {
        for grouped in [false, true] {
            row(writers, writers, grouped, secs);
        }
    }
    for grouped in [false, true] {
        row(8, 1, grouped, secs);
    }
}

fn row(writers: usize, tenants: usize, grouped: bool, secs: f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = EngineConfig {
        group_commit: grouped,
        ..EngineConfig::default()
    };
    let engine = Arc::new(Engine::open(dir.path(), config).expect("open"));
    let scopes: Vec<TenantScope> = (0..tenants).map(|t| tenant(&engine, t)).collect();
    let commits_before = engine.commit_latency();
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let (engine, stop) = (engine.clone(), stop.clone());
            let scope = scopes[w % tenants].clone();
            std::thread::spawn(move || {
                let req = RequestScope::default();
                let mut latencies = Vec::new();
                let mut i = (w as u64) << 40;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let r = record(i);
                    let t = Instant::now();
                    engine.put(&scope, &req, vec![r]).expect("put");
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    let mut all: Vec<Duration> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("writer"))
        .collect();
    let elapsed = started.elapsed().as_secs_f64();
    let commits = engine.commit_latency();
    let syncs = commits.count() - commits_before.count();
    let sync_ms = (commits.sum_nanos - commits_before.sum_nanos) as f64 / 1e6 / syncs.max(1) as f64;
    all.sort();
    let pct = |p: f64| all[((all.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3;
    println!(
        "| {writers} | {tenants} | {} | {:.0} | {:.2} | {:.2} | {:.1} | {sync_ms:.2} |",
        if grouped { "on" } else { "off" },
        all.len() as f64 / elapsed,
        pct(0.5),
        pct(0.99),
        all.len() as f64 / syncs.max(1) as f64,
    );
}

fn tenant(engine: &Engine, n: usize) -> TenantScope {
    let id = TenantId::parse(format!("bench-{n}")).expect("id");
    engine
        .create_tenant(&OperatorScope::for_tests(), &id, None)
        .expect("tenant");
    let grant = Grant {
        permissions: Permissions::of(&[Permission::Read, Permission::Write]),
        user_tokens: None,
        domains: None,
    };
    TenantScope::for_tests(&engine.tenant_meta(&id).expect("meta"), grant)
}

fn record(i: u64) -> NewRecord {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let vector = (0..384)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    let text = format!(
        "memory {i}: the user mentioned that they prefer green tea in the morning, work remotely on Tuesdays and Thursdays, and would like summaries sent by email rather than chat. {i}"
    );
    NewRecord {
        content: Some(text),
        vector: Some(vector),
        ..Default::default()
    }
}
