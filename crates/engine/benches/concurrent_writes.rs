//! Durable single-record writes with concurrent writers: without group commit, with it (each
//! write its own storage transaction), and with batched commits (concurrent writes sharing a
//! transaction too).
//!
//! Each writer is a thread with its own tenant (or all in one tenant, `same tenant` rows) and
//! calls `Engine::put` with one record (384-dimension vector, ~200 bytes of text) at a time,
//! as fast as acknowledgements come back; every acknowledged write is durable. Prints writes/s
//! and per-write latency (p50, p99) for 1, 8 and 32 writers, with the durable commits the row
//! made (each one fsync; with group commit, shared) and their mean duration, which shows what
//! the disk's fsync cost during that row (it varies by 10× from minute to minute on a shared
//! virtual disk).
//!
//! Also prints how many writes shared each storage transaction (batched commits; 1.0 when every
//! write had its own) and the process's CPU time per write (user + system, from
//! `/proc/self/stat`), which does not depend on the disk.
//!
//! Run: `cargo bench -p strata-engine --bench concurrent_writes` (`-- <seconds>` sets the time
//! per row, default 3). The data directories are temporary directories under `TMPDIR`.
//! `-- 5 8:8 8:1 batched` runs only the rows of 8 writers in 8 tenants and 8 writers in one
//! tenant, batched mode only (for profiling one row); any `W:T` picks rows (`8:2` is 8 writers
//! over 2 tenants), `batched` the mode.
//! `dedicated` moves every tenant into its own file first (isolation level `dedicated`), so each
//! tenant's writes commit and sync in their own file, beside the others'.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use strata_auth::{Grant, OperatorScope, Permission, Permissions, TenantScope};
use strata_engine::{Engine, EngineConfig, IsolationLevel, MigrateRequest};
use strata_types::{NewRecord, RequestScope, TenantId};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let secs: f64 = args.iter().find_map(|a| a.parse().ok()).unwrap_or(3.0);
    let picked: Vec<(usize, usize)> = args
        .iter()
        .filter_map(|a| {
            let (w, t) = a.split_once(':')?;
            Some((w.parse().ok()?, t.parse().ok()?))
        })
        .collect();
    let only_batched = args.iter().any(|a| a == "batched");
    let dedicated = args.iter().any(|a| a == "dedicated");
    let wanted = |writers: usize, tenants: usize, batched: bool| {
        (picked.is_empty() || picked.contains(&(writers, tenants))) && (batched || !only_batched)
    };
    println!(
        "| writers | tenants | group commit | batched | writes/s | p50 ms | p99 ms | writes per fsync | mean durable commit ms | writes per transaction | CPU µs per write |"
    );
    println!("|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|");
    // Group commit off; on, with each write its own transaction; on, with batched commits.
    let modes = [(false, false), (true, false), (true, true)];
    // Picked rows run in the order given, and may be any `W:T`, not only the default ones.
    let rows = match picked.is_empty() {
        true => vec![(1usize, 1usize), (8, 8), (32, 32), (8, 1)],
        false => picked.clone(),
    };
    for (writers, tenants) in rows {
        for (grouped, batched) in modes {
            if wanted(writers, tenants, batched) {
                row(writers, tenants, grouped, batched, dedicated, secs);
            }
        }
    }
}

fn row(writers: usize, tenants: usize, grouped: bool, batched: bool, dedicated: bool, secs: f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = EngineConfig {
        group_commit: grouped,
        batch_writes: batched,
        ..EngineConfig::default()
    };
    let engine = Arc::new(Engine::open(dir.path(), config).expect("open"));
    let scopes: Vec<TenantScope> = (0..tenants)
        .map(|t| tenant(&engine, t, dedicated))
        .collect();
    let commits_before = engine.commit_latency();
    let batches_before = engine.write_batches();
    let cpu_before = cpu_seconds();
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
    let cpu = cpu_seconds() - cpu_before;
    let batches = engine.write_batches();
    let (txns, in_batches) = (batches.0 - batches_before.0, batches.1 - batches_before.1);
    // Writes that did not go through a batch had a transaction each.
    let per_txn =
        all.len() as f64 / (txns + all.len() as u64 - in_batches.min(all.len() as u64)) as f64;
    let commits = engine.commit_latency();
    let syncs = commits.count() - commits_before.count();
    let sync_ms = (commits.sum_nanos - commits_before.sum_nanos) as f64 / 1e6 / syncs.max(1) as f64;
    all.sort();
    let pct = |p: f64| all[((all.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3;
    println!(
        "| {writers} | {tenants} | {} | {} | {:.0} | {:.2} | {:.2} | {:.1} | {sync_ms:.2} | {per_txn:.1} | {:.0} |",
        if grouped { "on" } else { "off" },
        if batched && grouped { "yes" } else { "no" },
        all.len() as f64 / elapsed,
        pct(0.5),
        pct(0.99),
        all.len() as f64 / syncs.max(1) as f64,
        cpu * 1e6 / all.len().max(1) as f64,
    );
}

/// User + system CPU time of this process so far, from `/proc/self/stat` (in clock ticks of
/// 10 ms, the usual `CLK_TCK`; enough over a row of seconds).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime: fields 14 and 15 of the line, so 11 and 12 after the name (state first).
    (ticks(11) + ticks(12)) / 100.0
}

fn tenant(engine: &Engine, n: usize, dedicated: bool) -> TenantScope {
    let id = TenantId::parse(format!("bench-{n}")).expect("id");
    let op = OperatorScope::for_tests();
    engine.create_tenant(&op, &id, None).expect("tenant");
    if dedicated {
        let to_own_file = MigrateRequest {
            target: IsolationLevel::Dedicated,
            index_params: None,
            dry_run: false,
        };
        engine
            .migrate_tenant(&op, &id, to_own_file)
            .expect("migrate");
    }
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
