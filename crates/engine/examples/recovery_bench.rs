//! A start after a crash on a large data file: how long `Engine::open` takes when the storage
//! engine must repair the file by reading all of it, against when the last durable commit
//! recorded its allocator state (`[engine] fast_recovery_from_bytes`), and what recording it
//! costs the writes that run until the crash.
//!
//! The first run fills `--dir` up to a main file of `--mb` MB (default 1,024): tenants of 2,000
//! records (384-dim vectors, ~200 bytes of text), written in batches of 500, then closed
//! cleanly. Each round then runs two children, one per setting, alternating: each opens the
//! directory with its setting, writes single records with 8 writers into 8 tenants (every write
//! acknowledged once durable, as `concurrent_writes` does) for `--window-ms` (2,000), and is
//! killed with `SIGKILL`. This process then times `Engine::open` over what the kill left (with
//! `--cold`, after dropping the OS page cache, which needs root), and a first search.
//!
//! Run: `cargo run --release -p strata-engine --example recovery_bench -- --dir DIR [--mb N]
//! [--rounds N] [--window-ms N] [--cold]`.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use strata_auth::TenantScope;
use strata_engine::{Engine, EngineConfig};
use strata_types::{NewRecord, RequestScope, SearchRequest, TenantId};

const DIM: usize = 384;
const WRITERS: usize = 8;
const PER_TENANT: usize = 2_000;

/// The two settings compared: every durable commit records the allocator state, or none does.
const SETTINGS: [(&str, u64); 2] = [("recorded", 1), ("not recorded", 0)];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let dir = PathBuf::from(value("--dir").expect("--dir DIR is required"));
    if let Some(setting) = value("--child") {
        child(&dir, setting.parse().expect("setting"));
        return;
    }
    let mb: u64 = value("--mb").map_or(1024, |v| v.parse().expect("--mb"));
    let rounds: usize = value("--rounds").map_or(3, |v| v.parse().expect("--rounds"));
    let window =
        Duration::from_millis(value("--window-ms").map_or(2000, |v| v.parse().expect("ms")));
    let cold = args.iter().any(|a| a == "--cold");
    fill(&dir, mb);
    println!(
        "| round | commits | writes/s before the kill (8 writers) | main file MB | Engine::open ms | full repair | first search ms |"
    );
    println!("|---:|---|---:|---:|---:|---|---:|");
    for round in 0..rounds {
        for (i, (name, _)) in SETTINGS.iter().enumerate() {
            let rate = run_child(&dir, i, window);
            if cold && std::fs::write("/proc/sys/vm/drop_caches", "3").is_err() {
                eprintln!("--cold: could not drop the page cache (needs root)");
            }
            let file_mb =
                std::fs::metadata(dir.join(strata_engine::DB_FILE)).map_or(0, |m| m.len()) >> 20;
            let started = Instant::now();
            let engine = Engine::open(&dir, EngineConfig::default()).expect("open");
            let opened = started.elapsed();
            let report = engine.storage_open_report();
            let started = Instant::now();
            let scope = common::scope(&engine, &tenant_id("fill", 0));
            let search = SearchRequest {
                vector: Some(common::vector(DIM, 7)),
                k: 10,
                ..Default::default()
            };
            engine
                .search(&scope, &RequestScope::default(), &search)
                .expect("search");
            let first = started.elapsed();
            println!(
                "| {round} | {name} | {rate:.0} | {file_mb} | {:.1} | {} | {:.1} |",
                opened.as_secs_f64() * 1e3,
                if report.full_repair { "yes" } else { "no" },
                first.as_secs_f64() * 1e3,
            );
            drop(engine);
        }
    }
}

/// Writes tenants of [`PER_TENANT`] records until the main file is `mb` MB (nothing if it is).
fn fill(dir: &Path, mb: u64) {
    let file = dir.join(strata_engine::DB_FILE);
    let len = || std::fs::metadata(&file).map_or(0, |m| m.len());
    if len() >= mb << 20 {
        return;
    }
    let engine = Engine::open(dir, EngineConfig::default()).expect("open");
    let started = Instant::now();
    let mut t = 0;
    while len() < mb << 20 {
        let id = tenant_id("fill", t);
        let scope = common::scope(&engine, &id);
        for batch in 0..PER_TENANT / 500 {
            let records = (0..500)
                .map(|i| record((t * PER_TENANT + batch * 500 + i) as u64))
                .collect();
            engine
                .put(&scope, &RequestScope::default(), records)
                .expect("put");
        }
        t += 1;
    }
    eprintln!(
        "filled {t} tenants of {PER_TENANT} records, {} MB, in {:.0} s",
        len() >> 20,
        started.elapsed().as_secs_f64()
    );
}

/// Runs a child with setting `i` for `window` after it is ready, kills it, and returns its
/// acknowledged writes per second.
fn run_child(dir: &Path, i: usize, window: Duration) -> f64 {
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .args([
            "--dir",
            &dir.display().to_string(),
            "--child",
            &i.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    while lines.next().expect("child ended").expect("line") != "READY" {}
    let ready = Instant::now();
    std::thread::sleep(window);
    child.kill().expect("SIGKILL");
    let elapsed = ready.elapsed();
    child.wait().expect("reap");
    let acked = lines
        .map_while(Result::ok)
        .filter_map(|l| l.strip_prefix("ACKED ").and_then(|n| n.parse::<u64>().ok()))
        .last()
        .unwrap_or(0);
    acked as f64 / elapsed.as_secs_f64()
}

/// The child: opens with setting `i` and writes until killed, printing its acknowledged
/// writes every 50 ms.
fn child(dir: &Path, i: usize) {
    let config = EngineConfig {
        fast_recovery_from_bytes: SETTINGS[i].1,
        ..EngineConfig::default()
    };
    let engine = Engine::open(dir, config).expect("open");
    let scopes: Vec<TenantScope> = (0..WRITERS)
        .map(|w| common::scope(&engine, &tenant_id("writes", w)))
        .collect();
    let acked = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    println!("READY");
    std::thread::scope(|s| {
        for (w, scope) in scopes.iter().enumerate() {
            let (engine, acked, stop) = (&engine, &acked, &stop);
            s.spawn(move || {
                let mut n = (w as u64) << 40;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    engine
                        .put(scope, &RequestScope::default(), vec![record(n)])
                        .expect("put");
                    acked.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        loop {
            std::thread::sleep(Duration::from_millis(50));
            println!("ACKED {}", acked.load(Ordering::Relaxed));
        }
    });
}

fn tenant_id(kind: &str, n: usize) -> TenantId {
    TenantId::parse(format!("{kind}-{n}")).expect("id")
}

fn record(i: u64) -> NewRecord {
    NewRecord {
        content: Some(format!(
            "memory {i}: the user mentioned that they prefer green tea in the morning, work \
             remotely on Tuesdays and Thursdays, and would like summaries sent by email. {i}"
        )),
        vector: Some(common::vector(DIM, i)),
        ..Default::default()
    }
}
