//! A large tenant's first graph under eviction churn: does it get one, and what do its
//! searches cost meanwhile?
//!
//! One large tenant (`--big` records of 384 dimensions, 30,000 by default, enough for a graph)
//! and `--small` tenants (60) of 200 records are written with no budget, then the engine is
//! reopened under a residency budget of the large tenant plus `--room` (3) small ones, nothing
//! loaded and no graph built yet. A loop then searches the small tenants in turn and the large
//! one every `--every` (8) searches, for `--secs` (60) seconds: between two of its searches the
//! large tenant becomes the least recently used and the next small load passes the budget.
//! Prints when the large tenant's graph was installed (if it was), its loads and evictions,
//! and its search latency before and after the graph.
//!
//! Run: `cargo run --release -p strata-engine --example churn_bench -- --dir DIR [--big N]
//! [--small N] [--room N] [--every N] [--secs N] [--lose-graph]` (every run deletes `DIR` and
//! writes it afresh, in a few seconds). `--lose-graph` builds and saves the large tenant's graph
//! first, then deletes its file, so that its loads are expensive: the first rebuilds from its
//! records, later ones read its vectors from its search image.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use strata_auth::{OperatorScope, TenantScope};
use strata_engine::{Engine, EngineConfig, ResidencyConfig};
use strata_types::{NewRecord, RequestScope, SearchRequest, TenantId};

const DIM: usize = 384;
const SMALL_RECORDS: usize = 200;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str, default: usize| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .map_or(default, |v| v.parse().expect("a number"))
    };
    let dir = args
        .iter()
        .position(|a| a == "--dir")
        .and_then(|i| args.get(i + 1))
        .expect("--dir DIR is required");
    let dir = Path::new(dir);
    let (big, small) = (value("--big", 30_000), value("--small", 60));
    let (room, every, secs) = (value("--room", 3), value("--every", 8), value("--secs", 60));
    let op = OperatorScope::for_tests();

    // Written afresh by every run, and closed before any graph build could finish (a build
    // in progress is abandoned at shutdown): the large tenant starts with no graph saved.
    let _ = std::fs::remove_dir_all(dir);
    {
        let engine = Engine::open(dir, EngineConfig::default()).expect("open");
        let started = Instant::now();
        write(&engine, "big", big);
        for s in 0..small {
            write(&engine, &format!("small-{s}"), SMALL_RECORDS);
        }
        eprintln!("written in {:.1} s", started.elapsed().as_secs_f64());
    }
    // With `--lose-graph`, the large tenant's graph is built and saved, and its file then
    // deleted (a disk or an operator losing it): the first load finds the file missing and
    // rebuilds from the records, later ones read the vectors from the search image (tens of
    // megabytes through the database), and each queues a build again.
    if args.iter().any(|a| a == "--lose-graph") {
        {
            let engine = Engine::open(dir, EngineConfig::default()).expect("open");
            engine
                .index_stats(&common::scope(&engine, &id("big")))
                .expect("load");
            engine.wait_for_graph_builds();
            engine.persist_indexes().expect("persist");
        }
        std::fs::remove_dir_all(dir.join(strata_store::DERIVED_DIR)).expect("graph files");
    }
    // One tenant's accounted bytes of each kind, as loaded with no graph; the budget is set
    // against them.
    let (big_bytes, small_bytes) = {
        let engine = Engine::open(dir, EngineConfig::default()).expect("open");
        let bytes = |t: &str| {
            engine
                .index_stats(&common::scope(&engine, &id(t)))
                .expect("load");
            engine
                .residency(&op, &id(t))
                .expect("residency")
                .resident_bytes
        };
        (bytes("big"), bytes("small-0"))
    };
    let budget = big_bytes + room as u64 * small_bytes;
    let config = EngineConfig {
        residency: ResidencyConfig {
            memory_budget_bytes: budget,
            pinned: Vec::new(),
        },
        ..EngineConfig::default()
    };
    let engine = Engine::open(dir, config).expect("open");
    let big_scope = common::scope(&engine, &id("big"));
    let smalls: Vec<TenantScope> = (0..small)
        .map(|s| common::scope(&engine, &id(&format!("small-{s}"))))
        .collect();
    let query = SearchRequest {
        vector: Some(common::vector(DIM, u64::MAX)),
        k: 10,
        ..Default::default()
    };
    let (mut before, mut after) = (Vec::new(), Vec::new());
    let mut graph_at = None;
    // The large tenant's evictions before its graph was installed (each abandons a build).
    let mut evicted_before = 0;
    let started = Instant::now();
    let mut n = 0usize;
    while started.elapsed() < Duration::from_secs(secs as u64) {
        n += 1;
        let target = if n.is_multiple_of(every) {
            &big_scope
        } else {
            &smalls[n % small]
        };
        let t = Instant::now();
        engine
            .search(target, &RequestScope::default(), &query)
            .expect("search");
        let took = t.elapsed();
        if std::ptr::eq(target, &big_scope) {
            let r = engine.residency(&op, &id("big")).expect("residency");
            if graph_at.is_none() {
                if r.graph_ef_search > 0 {
                    graph_at = Some(started.elapsed());
                } else {
                    evicted_before = r.evictions;
                }
            }
            if graph_at.is_some() {
                &mut after
            } else {
                &mut before
            }
            .push(took);
        }
    }
    let r = engine.residency(&op, &id("big")).expect("residency");
    println!(
        "budget {budget} bytes (large tenant {big_bytes}, small {small_bytes}); {n} searches in {secs} s"
    );
    println!(
        "large tenant: graph {} (evicted {evicted_before} times before); loads {}, evictions {}",
        graph_at.map_or("never installed".to_owned(), |t| format!(
            "installed after {:.1} s",
            t.as_secs_f64()
        )),
        r.loads,
        r.evictions
    );
    for (name, mut v) in [("before its graph", before), ("with its graph", after)] {
        if v.is_empty() {
            println!("its searches {name}: none");
            continue;
        }
        v.sort();
        let pct = |p: f64| v[((v.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3;
        println!(
            "its searches {name}: {} , p50 {:.1} ms, p99 {:.1} ms",
            v.len(),
            pct(0.5),
            pct(0.99)
        );
    }
}

fn id(t: &str) -> TenantId {
    TenantId::parse(t).expect("id")
}

fn write(engine: &Engine, t: &str, n: usize) {
    let scope = common::scope(engine, &id(t));
    let data = strata_index::testdata::clustered(n, DIM, 50, 7);
    for part in data.chunks(1000) {
        let records = part
            .iter()
            .map(|v| NewRecord {
                vector: Some(v.clone()),
                content: Some("a short note".into()),
                ..Default::default()
            })
            .collect();
        engine
            .put(&scope, &RequestScope::default(), records)
            .expect("put");
    }
}
