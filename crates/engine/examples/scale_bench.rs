//! Many tenants on one node: start-up time, resident bytes under a budget, cold and warm
//! searches, and how well the residency estimate matches the process's resident set.
//!
//! Three modes:
//!
//! `fleet` (the default): writes `--tenants` tenants (default 100,000; `--million` makes it
//! 1,000,000) straight through the engine in-process, `--active` of them (10,000) with
//! `--active-records` short 384-dim records each, and `--big` tenants of `--big-records`
//! (2,000) records whose graphs the background builder builds and saves. Then, each time on a
//! freshly opened engine over the same directory (run it twice with the same `--dir` for RSS
//! figures from a process that did not write the fleet):
//! 1. start: the time `Engine::open` takes, and then the first search of one tenant;
//! 2. active set: every active tenant searched once under a `--budget` (1 GiB) residency
//!    budget, then the warm search latency over random active tenants, resident bytes and
//!    bytes per resident tenant, and the process's RSS growth against the estimate;
//! 3. cold: under a budget of one byte every request is a cold tenant's first; the first
//!    search of a `--big-records` tenant.
//!
//! `memory`: `--vectors` (200,000) 384-dim vectors spread over `--split` tenants (1 or 100),
//! written, graphs built, saved; then, in a second run over the same `--dir` (a fresh
//! process, so nothing of the writes is left in its heap), every tenant loaded and the RSS
//! growth compared with the estimate and with the raw vector bytes.
//!
//! `scrape`: over a fleet the `fleet` mode wrote (same `--dir`), the node's periodic work
//! `--rounds` (5) times each on one engine: the usage report a `/metrics` scrape asks for, and
//! passes of the expiry sweep (the first is a full pass, the later ones visit the tenants due).
//!
//! `touch`: over a fleet the `fleet` mode wrote (same `--dir`), each of its `--tenants` searched
//! once under a budget of one byte (each load evicts the one before), then the memory the
//! engine holds for them, before and after the passes that drop idle tenants' slots.
//!
//! `start`: over a fleet the `fleet` mode wrote (same `--dir`), `--dedicated` (3) of its idle
//! tenants moved to `dedicated` once, then `Engine::open` timed `--rounds` times, each on a
//! fresh engine: the start with tenants in files of their own among all the others.
//!
//! Run: `cargo run --release -p strata-engine --example scale_bench -- [fleet|memory|scrape|start|touch]
//! [--tenants N] [--million] [--active N] [--active-records N] [--big N] [--big-records N]
//! [--budget BYTES] [--threads N] [--vectors N] [--split N] [--cache BYTES] [--rounds N]
//! [--dedicated N] [--dir PATH]`
//! (`--cache`: the store's page cache of the measured engines, default 64 MiB). With `--dir` the
//! data directory is kept (and reused if it holds a fleet already), e.g. to time the server's
//! own start on it.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use strata_auth::{OperatorScope, TenantScope};
use strata_engine::{Engine, EngineConfig, ResidencyConfig};
use strata_types::{CollectionName, NewRecord, RecordId, RequestScope, SearchRequest, TenantId};

const DIM: usize = 384;

struct Args {
    mode: String,
    tenants: usize,
    active: usize,
    active_records: usize,
    big: usize,
    big_records: usize,
    budget: u64,
    threads: usize,
    vectors: usize,
    split: usize,
    /// `[engine] storage_cache_bytes` of the measured engines.
    cache: u64,
    /// Repetitions of each measurement of `scrape` and `start`.
    rounds: usize,
    /// Tenants `start` moves to `dedicated`.
    dedicated: usize,
    dir: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        mode: "fleet".into(),
        tenants: 100_000,
        active: 10_000,
        active_records: 10,
        big: 20,
        big_records: 2_000,
        budget: 1 << 30,
        threads: 64,
        vectors: 200_000,
        split: 1,
        cache: strata_store::DEFAULT_CACHE_BYTES as u64,
        rounds: 5,
        dedicated: 3,
        dir: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "fleet" | "memory" | "scrape" | "start" | "touch" => {
                a.mode = flag;
                continue;
            }
            "--million" => {
                a.tenants = 1_000_000;
                continue;
            }
            _ => {}
        }
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        if flag == "--dir" {
            a.dir = Some(value);
            continue;
        }
        let v = value.parse::<u64>().map_err(|e| format!("{flag}: {e}"))?;
        let n = v as usize;
        match flag.as_str() {
            "--tenants" => a.tenants = n,
            "--active" => a.active = n,
            "--active-records" => a.active_records = n,
            "--big" => a.big = n,
            "--big-records" => a.big_records = n,
            "--budget" => a.budget = v,
            "--threads" => a.threads = n.max(1),
            "--vectors" => a.vectors = n,
            "--split" => a.split = n.max(1),
            "--cache" => a.cache = v,
            "--rounds" => a.rounds = n.max(1),
            "--dedicated" => a.dedicated = n,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if a.active + a.big > a.tenants {
        return Err("--active plus --big must not exceed --tenants".into());
    }
    Ok(a)
}

/// Bytes the allocator has handed out and not had back (glibc's `mallinfo2`: `uordblks`, plus
/// `hblkhd` for blocks mapped on their own); 0 elsewhere.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn heap_in_use() -> u64 {
    #[repr(C)]
    struct MallInfo2 {
        fields: [usize; 10],
    }
    unsafe extern "C" {
        fn mallinfo2() -> MallInfo2;
    }
    // SAFETY: `mallinfo2` takes nothing and returns the struct by value.
    let m = unsafe { mallinfo2() };
    (m.fields[7] + m.fields[4]) as u64
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn heap_in_use() -> u64 {
    0
}

/// `VmRSS` of this process in bytes (Linux).
fn rss() -> u64 {
    status_bytes("VmRSS:")
}

/// A size field of `/proc/self/status` in bytes (Linux; 0 elsewhere).
fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The process's CPU time so far, user and system, in seconds (Linux; zeros elsewhere): on a
/// shared machine a load's wall time mostly measures the wait for a core, its CPU time does not.
fn cpu() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) closed by the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name, in clock
    // ticks of 1/100 s (`CLK_TCK` on Linux).
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 100.0
    };
    (ticks(11), ticks(12))
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

fn open(dir: &Path, budget: u64, cache: u64) -> Engine {
    Engine::open(
        dir,
        EngineConfig {
            storage_cache_bytes: cache,
            residency: ResidencyConfig {
                memory_budget_bytes: budget,
                pinned: vec![],
            },
            ..EngineConfig::default()
        },
    )
    .expect("open")
}

fn id(t: usize) -> TenantId {
    TenantId::parse(format!("t{t}")).expect("id")
}

fn scope(engine: &Engine, t: usize) -> TenantScope {
    common::scope(engine, &id(t))
}

fn text() -> CollectionName {
    CollectionName::parse("text").expect("name")
}

fn records(t: usize, n: usize) -> Vec<NewRecord> {
    strata_index::testdata::clustered(n, DIM, 50, t as u64)
        .into_iter()
        .enumerate()
        .map(|(i, v)| NewRecord {
            id: Some(RecordId::parse(format!("r{i}")).expect("id")),
            modality: Some(text()),
            vector: Some(v),
            content: Some(format!("memory {i} of tenant {t} about topic {}", i % 7)),
            ..Default::default()
        })
        .collect()
}

/// `n` queries from tenant `t`'s distribution (drawing them costs milliseconds, so they are
/// drawn once, before any timing).
fn queries(t: usize, n: usize) -> Vec<SearchRequest> {
    strata_index::testdata::queries(n, DIM, 50, t as u64, 1)
        .into_iter()
        .map(|v| SearchRequest {
            vector: Some(v),
            k: 10,
            modality: Some(text()),
            ..Default::default()
        })
        .collect()
}

/// One search's latency (the tenant look-up that authentication does is not timed).
fn search(engine: &Engine, scope: &TenantScope, q: &SearchRequest) -> Duration {
    let start = Instant::now();
    engine
        .search(scope, &RequestScope::default(), q)
        .expect("search");
    start.elapsed()
}

fn report(what: &str, mut samples: Vec<Duration>) {
    if samples.is_empty() {
        return;
    }
    samples.sort();
    let at = |p: f64| {
        let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
        samples[i].as_secs_f64() * 1000.0
    };
    println!(
        "{what}: n = {}, p50 = {:.3} ms, p99 = {:.3} ms, max = {:.3} ms",
        samples.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    );
}

/// Runs `f(i)` for every `i` in `0..n` on `threads` threads. Tenant creations commit durably
/// one by one, so many threads are what lets them share fsyncs (group commit).
fn parallel(n: usize, threads: usize, f: impl Fn(usize) + Sync) {
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads.min(n.max(1)) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    f(i);
                }
            });
        }
    });
}

/// Creates tenants `t0..t{n}` and writes `records(t, per)` into each of `with_data`.
fn generate(dir: &Path, n: usize, with_data: &[(std::ops::Range<usize>, usize)], threads: usize) {
    let engine = open(dir, 0, strata_store::DEFAULT_CACHE_BYTES as u64);
    let op = OperatorScope::for_tests();
    let start = Instant::now();
    parallel(n, threads, |t| {
        engine.create_tenant(&op, &id(t), None).expect("tenant");
    });
    println!(
        "created {n} tenants in {:.1} s ({} threads)",
        start.elapsed().as_secs_f64(),
        threads
    );
    for (range, per) in with_data {
        let start = Instant::now();
        let count = range.len();
        let first = range.start;
        parallel(count, threads, |i| {
            let t = first + i;
            let scope = scope(&engine, t);
            for part in records(t, *per).chunks(1000) {
                // Returns once committed; the shared fsync is waited for below, off the
                // write lock, so concurrent tenants' writes share it.
                let (result, durable) = engine.deferring_durability(|| {
                    engine.put(&scope, &RequestScope::default(), part.to_vec())
                });
                result.expect("put");
                durable.wait().expect("durable");
            }
        });
        println!(
            "wrote {per} records into each of {count} tenants in {:.1} s",
            start.elapsed().as_secs_f64()
        );
    }
    // Load the tenants with data once, so the background builder builds (and saves) the
    // graphs that are due, then save every index.
    let start = Instant::now();
    for (range, _) in with_data {
        for t in range.clone() {
            engine.index_stats(&scope(&engine, t)).expect("load");
        }
        engine.wait_for_graph_builds();
        engine.persist_indexes().expect("persist");
    }
    println!(
        "loaded, built graphs and saved in {:.1} s",
        start.elapsed().as_secs_f64()
    );
}

/// What a node's periodic work costs over a fleet written by `fleet` (same `--dir`): the
/// usage report a `/metrics` scrape asks for, and passes of the expiry sweep, `--rounds`
/// times each on one engine.
fn scrape(a: &Args, dir: &Path) {
    assert!(
        dir.join("scale_bench.fleet").exists(),
        "no fleet in {}: run the fleet mode with this --dir first",
        dir.display()
    );
    let engine = open(dir, a.budget, a.cache);
    let op = OperatorScope::for_tests();
    let ms = |t: Duration| format!("{:.0} ms", t.as_secs_f64() * 1000.0);
    let report: Vec<String> = (0..a.rounds)
        .map(|_| {
            let start = Instant::now();
            let report = engine.usage_report(&op).expect("usage report");
            assert!(!report.tenants.is_empty());
            ms(start.elapsed())
        })
        .collect();
    println!(
        "usage report (a metrics scrape's engine part): {}",
        report.join(" · ")
    );
    let sweeps: Vec<String> = (0..a.rounds)
        .map(|_| {
            let start = Instant::now();
            engine.sweep_expired(&op, || false).expect("expiry sweep");
            ms(start.elapsed())
        })
        .collect();
    println!("expiry sweep passes: {}", sweeps.join(" · "));
}

fn touch(a: &Args, dir: &Path) {
    assert!(
        dir.join("scale_bench.fleet").exists(),
        "no fleet in {}: run the fleet mode with this --dir first",
        dir.display()
    );
    // A budget of one byte: no tenant stays loaded, so what grows is what the engine keeps
    // of every tenant it has seen.
    let engine = open(dir, 1, a.cache);
    let qs = queries(0, 16);
    let base = rss();
    let heap_base = heap_in_use();
    let start = Instant::now();
    for t in 0..a.tenants {
        search(&engine, &scope(&engine, t), &qs[t % qs.len()]);
    }
    let grown = rss().saturating_sub(base);
    let heap = heap_in_use().saturating_sub(heap_base);
    println!(
        "searched each of {} tenants once in {:.1} s: RSS grew {:.1} MB, {:.0} bytes per tenant; \
         heap in use grew {:.1} MB, {:.0} bytes per tenant",
        a.tenants,
        start.elapsed().as_secs_f64(),
        mb(grown),
        grown as f64 / a.tenants as f64,
        mb(heap),
        heap as f64 / a.tenants as f64
    );
    // Two passes of what the server runs every minute: the first marks the clock, the second
    // drops the slots of the tenants idle since.
    let start = Instant::now();
    let dropped = engine.retire_idle_tenants() + engine.retire_idle_tenants();
    let after = heap_in_use().saturating_sub(heap_base);
    println!(
        "two passes of Engine::retire_idle_tenants dropped {dropped} tenants in {:.1} ms: heap in \
         use now {:.1} MB above the start, {:.0} bytes per tenant searched",
        start.elapsed().as_secs_f64() * 1000.0,
        mb(after),
        after as f64 / a.tenants as f64
    );
    // Kept to the end of the process, so that a heap profiler sees what it holds as leaks.
    std::mem::forget(engine);
}

fn start(a: &Args, dir: &Path) {
    assert!(
        dir.join("scale_bench.fleet").exists(),
        "no fleet in {}: run the fleet mode with this --dir first",
        dir.display()
    );
    assert!(
        a.dedicated <= a.tenants,
        "--dedicated must not exceed --tenants"
    );
    // The last tenants are idle ones (the active and big ones come first).
    let moved = a.tenants - a.dedicated..a.tenants;
    let marker = dir.join("scale_bench.dedicated");
    if std::fs::read_to_string(&marker).ok().as_deref() != Some(a.dedicated.to_string().as_str()) {
        let engine = open(dir, a.budget, a.cache);
        let op = OperatorScope::for_tests();
        for t in moved.clone() {
            let req = strata_engine::MigrateRequest {
                target: strata_engine::IsolationLevel::Dedicated,
                index_params: None,
                dry_run: false,
            };
            engine
                .migrate_tenant(&op, &id(t), req)
                .expect("move to dedicated");
        }
        drop(engine);
        std::fs::write(&marker, a.dedicated.to_string()).expect("marker");
        println!("moved {} tenants to dedicated", a.dedicated);
    }
    let opens: Vec<String> = (0..a.rounds)
        .map(|_| {
            let start = Instant::now();
            let engine = open(dir, a.budget, a.cache);
            let took = start.elapsed();
            drop(engine);
            format!("{:.1} ms", took.as_secs_f64() * 1000.0)
        })
        .collect();
    println!(
        "Engine::open with {} tenants on disk, {} of them dedicated: {}",
        a.tenants,
        a.dedicated,
        opens.join(" · ")
    );
}

fn fleet(a: &Args, dir: &Path) {
    let active = 0..a.active;
    let big = a.active..a.active + a.big;
    let marker = dir.join("scale_bench.fleet");
    let expected = format!(
        "{} {} {} {} {}",
        a.tenants, a.active, a.active_records, a.big, a.big_records
    );
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(expected.as_str()) {
        println!("reusing the fleet in {}", dir.display());
    } else {
        generate(
            dir,
            a.tenants,
            &[
                (active.clone(), a.active_records),
                (big.clone(), a.big_records),
            ],
            a.threads,
        );
        std::fs::write(&marker, &expected).expect("marker");
    }
    let file = std::fs::metadata(dir.join(strata_engine::DB_FILE)).map_or(0, |m| m.len());
    println!("data file: {:.0} MB", mb(file));

    // 1. Start-up.
    let rss_before_open = rss();
    let start = Instant::now();
    let engine = open(dir, a.budget, a.cache);
    let opened = start.elapsed();
    let qs = queries(0, 256);
    let first = search(&engine, &scope(&engine, a.tenants - 1), &qs[0]);
    println!(
        "start with {} tenants on disk: open {:.2} ms, then one idle tenant's first search {:.2} ms",
        a.tenants,
        opened.as_secs_f64() * 1000.0,
        first.as_secs_f64() * 1000.0
    );

    // 2. The active set under the budget.
    let start = Instant::now();
    let scopes: Vec<TenantScope> = active.clone().map(|t| scope(&engine, t)).collect();
    println!(
        "looked up {} tenants in {:.2} s",
        scopes.len(),
        start.elapsed().as_secs_f64()
    );
    let rss_base = rss();
    let start = Instant::now();
    let mut cold_small = Vec::with_capacity(active.len());
    for (t, s) in scopes.iter().enumerate() {
        cold_small.push(search(&engine, s, &qs[t % qs.len()]));
    }
    println!(
        "first search of {} active tenants: {:.1} s",
        active.len(),
        start.elapsed().as_secs_f64()
    );
    report(
        &format!("cold first search, {}-record tenant", a.active_records),
        cold_small,
    );
    let op = OperatorScope::for_tests();
    let summary = engine.residency_summary(&op);
    let grown = rss().saturating_sub(rss_base);
    println!(
        "budget {:.0} MB: resident {:.1} MB in {} tenants ({:.0} bytes per resident tenant), \
         loads {}, evictions {}",
        mb(a.budget),
        mb(summary.resident_bytes),
        summary.resident_tenants,
        summary.resident_bytes as f64 / summary.resident_tenants.max(1) as f64,
        summary.loads,
        summary.evictions
    );
    println!(
        "RSS: {:.0} MB before open, {:.0} MB after open, {:.0} MB after the active set; growth \
         {:.1} MB = {:.2}x the estimate",
        mb(rss_before_open),
        mb(rss_base),
        mb(rss()),
        mb(grown),
        grown as f64 / summary.resident_bytes.max(1) as f64
    );
    let mut rng = StdRng::seed_from_u64(7);
    let warm: Vec<Duration> = (0..if scopes.is_empty() { 0 } else { 20_000 })
        .map(|i| {
            let s = &scopes[rng.random_range(0..scopes.len())];
            search(&engine, s, &qs[i % qs.len()])
        })
        .collect();
    report("warm search, random active tenant", warm);
    // What a `/metrics` scrape or `/v1/admin/stats` asks of the engine: every registered
    // tenant's row, usage and collections, read from one snapshot.
    let times: Vec<Duration> = (0..3)
        .map(|_| {
            let start = Instant::now();
            let report = engine.usage_report(&op).expect("usage report");
            assert_eq!(report.tenants.len(), a.tenants);
            start.elapsed()
        })
        .collect();
    println!(
        "usage report of {} tenants (the engine's part of a metrics scrape): {}",
        a.tenants,
        times
            .iter()
            .map(|t| format!("{:.0} ms", t.as_secs_f64() * 1000.0))
            .collect::<Vec<_>>()
            .join(" · ")
    );
    // What the server's expiry sweep (every minute by default) asks of the engine: a pass
    // over every tenant, none with records due.
    let times: Vec<Duration> = (0..3)
        .map(|_| {
            let start = Instant::now();
            let swept = engine.sweep_expired(&op, || false).expect("expiry sweep");
            assert_eq!(swept.records, 0);
            start.elapsed()
        })
        .collect();
    println!(
        "expiry sweep pass over {} tenants, nothing due: {}",
        a.tenants,
        times
            .iter()
            .map(|t| format!("{:.0} ms", t.as_secs_f64() * 1000.0))
            .collect::<Vec<_>>()
            .join(" · ")
    );
    drop(engine);

    // 3. Cold big tenants: a budget of one byte evicts every other tenant at each load.
    let engine = open(dir, 1, a.cache);
    let bigs: Vec<(TenantScope, Vec<SearchRequest>)> = big
        .clone()
        .map(|t| (scope(&engine, t), queries(t, 8)))
        .collect();
    let mut cold = Vec::new();
    for round in 0..5 {
        for (s, qs) in &bigs {
            cold.push(search(&engine, s, &qs[round]));
        }
    }
    report(
        &format!("cold first search, {}-record tenant", a.big_records),
        cold,
    );
    let Some((s, qs)) = bigs.first() else { return };
    let warm: Vec<Duration> = (0..2_000)
        .map(|i| search(&engine, s, &qs[i % qs.len()]))
        .collect();
    report(
        &format!("warm search, one {}-record tenant", a.big_records),
        warm,
    );
}

fn memory(a: &Args, dir: &Path) {
    let per = a.vectors / a.split;
    let marker = dir.join("scale_bench.memory");
    let expected = format!("{} {}", a.vectors, a.split);
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(expected.as_str()) {
        println!("reusing the tenants in {}", dir.display());
    } else {
        generate(dir, a.split, &[(0..a.split, per)], a.threads.min(a.split));
        std::fs::write(&marker, &expected).expect("marker");
        println!("written; run again with the same --dir for figures from a fresh process");
        return;
    }
    let base = rss();
    let base_file = status_bytes("RssFile:");
    let engine = open(dir, 0, a.cache);
    let q = queries(0, 1).remove(0);
    let scopes: Vec<TenantScope> = (0..a.split).map(|t| scope(&engine, t)).collect();
    let (user, sys) = cpu();
    let start = Instant::now();
    for s in &scopes {
        search(&engine, s, &q);
    }
    let loaded = start.elapsed();
    let (user_after, sys_after) = cpu();
    let summary = engine.residency_summary(&OperatorScope::for_tests());
    let grown = rss().saturating_sub(base);
    // Pages of mapped graph files are shared with the OS page cache, not a second copy.
    let grown_file = status_bytes("RssFile:").saturating_sub(base_file);
    let raw = (per * a.split * DIM * 4) as u64;
    println!(
        "{} x {DIM} vectors in {} tenants: loaded in {:.2} s (CPU: {:.2} s user, {:.2} s system); \
         estimate {:.0} MB, RSS growth {:.0} MB ({:.2}x the estimate; {:.0} MB of it file pages \
         shared with the OS page cache); raw vectors {:.0} MB: estimate {:.2}x raw, RSS {:.2}x raw",
        per * a.split,
        a.split,
        loaded.as_secs_f64(),
        user_after - user,
        sys_after - sys,
        mb(summary.resident_bytes),
        mb(grown),
        grown as f64 / summary.resident_bytes.max(1) as f64,
        mb(grown_file),
        mb(raw),
        summary.resident_bytes as f64 / raw as f64,
        grown as f64 / raw as f64
    );
    // Warm searches of the loaded tenants: what reading each hit's record from storage costs.
    let qs = queries(0, 64);
    let warm: Vec<Duration> = (0..2_000)
        .map(|i| search(&engine, &scopes[i % scopes.len()], &qs[i % qs.len()]))
        .collect();
    report("warm search, loaded tenants", warm);
    // A load that rebuilt from the records (an image of an older format) saves the image
    // again, so the next run measures a load from it.
    let saved = engine.persist_indexes().expect("persist");
    println!("saved the indexes of {saved} tenants");
}

fn main() {
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("scale_bench: {e}");
            std::process::exit(2);
        }
    };
    let temp;
    let dir = match &a.dir {
        Some(d) => std::path::PathBuf::from(d),
        None => {
            temp = tempfile::tempdir().expect("tempdir");
            temp.path().to_path_buf()
        }
    };
    match a.mode.as_str() {
        "memory" => memory(&a, &dir),
        "scrape" => scrape(&a, &dir),
        "start" => start(&a, &dir),
        "touch" => touch(&a, &dir),
        _ => fleet(&a, &dir),
    }
}
