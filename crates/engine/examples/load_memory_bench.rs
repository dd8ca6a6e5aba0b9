//! Load time and resident memory of one large tenant: writes `RECORDS` clustered vectors of
//! 384 dimensions (with a short text each) into one collection, lets the background builder
//! build and save the graph, then reopens the data directory and times the first load and the
//! first search, twice: from the persisted search image (the cheap load), and after one more
//! write (the image is stale, so the load rebuilds from the records). The process's resident
//! set size (`VmRSS`, and its peak `VmHWM`, from `/proc/self/status`) is printed at each step.
//!
//! Run: `cargo run --release -p strata-engine --example load_memory_bench` (env `RECORDS`,
//! default 200000; `DIM`, default 384).

use std::time::Instant;

use strata_auth::{Grant, OperatorScope, Permission, Permissions, TenantScope};
use strata_engine::{Engine, EngineConfig};
use strata_types::{
    CollectionName, Metric, NewRecord, RecordId, RequestScope, SearchRequest, TenantId,
};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `VmRSS` and `VmHWM` of this process in MB (Linux).
fn rss() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    format!(
        "rss {:.0} MB (peak {:.0} MB)",
        field("VmRSS:"),
        field("VmHWM:")
    )
}

fn scope(engine: &Engine) -> TenantScope {
    let grant = Grant {
        permissions: Permissions::of(&[
            Permission::Read,
            Permission::Write,
            Permission::Admin,
            Permission::AllPrincipals,
        ]),
        user_tokens: None,
        domains: None,
    };
    let id = TenantId::parse("big").expect("id");
    TenantScope::for_tests(&engine.tenant_meta(&id).expect("meta"), grant)
}

fn name() -> CollectionName {
    CollectionName::parse("vec").expect("name")
}

fn first_search(engine: &Engine, scope: &TenantScope, dim: usize, what: &str) {
    let start = Instant::now();
    let stats = engine.index_stats(scope).expect("load");
    let load = start.elapsed();
    let q = strata_index::testdata::queries(1, dim, 100, 7, 1).remove(0);
    let start = Instant::now();
    let hits = engine
        .search(
            scope,
            &RequestScope::default(),
            &SearchRequest {
                vector: Some(q),
                k: 10,
                modality: Some(name()),
                ..Default::default()
            },
        )
        .expect("search")
        .hits
        .len();
    println!(
        "{what}: load {:.1} ms, then first search {:.2} ms ({hits} hits); {}; {:?}",
        load.as_secs_f64() * 1000.0,
        start.elapsed().as_secs_f64() * 1000.0,
        rss(),
        stats
    );
}

fn main() {
    let records = env("RECORDS", 200_000);
    let dim = env("DIM", 384);
    let dir = tempfile::tempdir().expect("tempdir");
    println!(
        "{records} records x {dim} dims ({:.0} MB of raw vectors); start: {}",
        (records * dim * 4) as f64 / 1e6,
        rss()
    );

    let engine = Engine::open(dir.path(), EngineConfig::default()).expect("open");
    let id = TenantId::parse("big").expect("id");
    engine
        .create_tenant(&OperatorScope::for_tests(), &id, None)
        .expect("tenant");
    let scope = scope(&engine);
    engine
        .create_collection(&scope, &name(), dim as u32, Metric::Cosine)
        .expect("collection");
    let start = Instant::now();
    let data = strata_index::testdata::clustered(records, dim, 100, 7);
    for (c, part) in data.chunks(1000).enumerate() {
        let batch = part
            .iter()
            .enumerate()
            .map(|(i, v)| NewRecord {
                id: Some(RecordId::parse(format!("r{}", c * 1000 + i)).expect("id")),
                modality: Some(name()),
                vector: Some(v.clone()),
                content: Some(format!("note {} about topic {}", c * 1000 + i, i % 17)),
                ..Default::default()
            })
            .collect();
        engine
            .put(&scope, &RequestScope::default(), batch)
            .expect("put");
    }
    drop(data);
    println!(
        "written in {:.1} s; {}",
        start.elapsed().as_secs_f64(),
        rss()
    );
    let start = Instant::now();
    engine.index_stats(&scope).expect("load");
    engine.wait_for_graph_builds();
    let resident = engine
        .residency(&OperatorScope::for_tests(), &id)
        .expect("residency")
        .resident_bytes;
    println!(
        "loaded and graph built in {:.1} s; estimated resident bytes {:.0} MB; {}",
        start.elapsed().as_secs_f64(),
        resident as f64 / 1e6,
        rss()
    );
    engine.persist_indexes().expect("persist");
    drop(engine);

    // A fresh process state as far as the engine goes: reopen, load from what was saved.
    let engine = Engine::open(dir.path(), EngineConfig::default()).expect("reopen");
    let scope = self::scope(&engine);
    println!("reopened: {}", rss());
    first_search(&engine, &scope, dim, "cold load (persisted form)");
    let resident = engine
        .residency(&OperatorScope::for_tests(), &id)
        .expect("residency")
        .resident_bytes;
    println!(
        "estimated resident bytes after the cold load {:.0} MB",
        resident as f64 / 1e6
    );
    let q = strata_index::testdata::queries(1, dim, 100, 7, 2).remove(0);
    engine
        .put(
            &scope,
            &RequestScope::default(),
            vec![NewRecord {
                id: Some(RecordId::parse("one-more").expect("id")),
                modality: Some(name()),
                vector: Some(q),
                ..Default::default()
            }],
        )
        .expect("put");
    drop(engine);

    // The write above was never followed by a save: the load must rebuild from the records.
    let engine = Engine::open(dir.path(), EngineConfig::default()).expect("reopen");
    let scope = self::scope(&engine);
    first_search(
        &engine,
        &scope,
        dim,
        "cold load after a write (rebuilt from records)",
    );
}
