//! Residency figures: cold-tenant first search (a load from the persisted snapshot plus the
//! search), warm search, estimated resident bytes per tenant, and engine start-up time with
//! many tenants on disk.
//!
//! Run: `cargo bench -p strata-engine --bench residency` (env `TENANTS`, `RECORDS`,
//! `IDLE_TENANTS` scale it; defaults 20 tenants × 2,000 records of 384 dimensions with ~100
//! bytes of text, and 10,000 idle tenants).

use std::time::{Duration, Instant};

use strata_auth::{Grant, OperatorScope, Permission, Permissions, TenantScope};
use strata_engine::{Engine, EngineConfig, ResidencyConfig};
use strata_types::{CollectionName, NewRecord, RecordId, RequestScope, SearchRequest, TenantId};

const DIM: usize = 384;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn open(dir: &std::path::Path, budget: u64) -> Engine {
    Engine::open(
        dir,
        EngineConfig {
            residency: ResidencyConfig {
                memory_budget_bytes: budget,
                pinned: vec![],
            },
            ..EngineConfig::default()
        },
    )
    .expect("open")
}

fn scope(engine: &Engine, t: usize) -> TenantScope {
    let grant = Grant {
        // `all_principals`: the index and adaptive figures count every principal's records.
        permissions: Permissions::of(&[
            Permission::Read,
            Permission::Write,
            Permission::AllPrincipals,
        ]),
        user_tokens: None,
        domains: None,
    };
    let id = TenantId::parse(format!("t{t}")).expect("id");
    TenantScope::for_tests(&engine.tenant_meta(&id).expect("meta"), grant)
}

fn text() -> CollectionName {
    CollectionName::parse("text").expect("name")
}

fn query(t: usize, i: usize) -> SearchRequest {
    let data = strata_index::testdata::queries(1, DIM, 50, t as u64, i as u64);
    SearchRequest {
        vector: data.into_iter().next(),
        query: Some(format!("topic {}", i % 7)),
        k: 10,
        modality: Some(text()),
        ..Default::default()
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{what}: n = {}, p50 = {:.2} ms, p99 = {:.2} ms, max = {:.2} ms",
        samples.len(),
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        percentile(&samples, 1.0)
    );
}

fn main() {
    let (tenants, records) = (env("TENANTS", 20), env("RECORDS", 2000));
    let idle = env("IDLE_TENANTS", 10_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let op = OperatorScope::for_tests();

    let engine = open(dir.path(), 0);
    for t in 0..tenants {
        let id = TenantId::parse(format!("t{t}")).expect("id");
        engine.create_tenant(&op, &id, None).expect("tenant");
        let scope = scope(&engine, t);
        let data = strata_index::testdata::clustered(records, DIM, 50, t as u64);
        let batch: Vec<NewRecord> = data
            .into_iter()
            .enumerate()
            .map(|(i, v)| NewRecord {
                id: Some(RecordId::parse(format!("r{i}")).expect("id")),
                modality: Some(text()),
                vector: Some(v),
                content: Some(format!(
                    "memory {i} of tenant {t}: a note about topic {} and project {}",
                    i % 7,
                    i % 31
                )),
                ..Default::default()
            })
            .collect();
        for part in batch.chunks(1000) {
            engine
                .put(&scope, &RequestScope::default(), part.to_vec())
                .expect("put");
        }
        // Load once and let the background builder build and persist the graph.
        engine.index_stats(&scope).expect("load");
        engine.wait_for_graph_builds();
    }
    let per_tenant = engine
        .residency_summary(&op)
        .tenants
        .iter()
        .map(|r| r.residency.resident_bytes)
        .max()
        .unwrap_or(0);
    println!(
        "resident bytes per {records}-record tenant ({DIM} dims): {per_tenant} ({:.0} per record; raw vectors {} per record)",
        per_tenant as f64 / records as f64,
        DIM * 4
    );
    engine.persist_indexes().expect("persist");
    drop(engine);

    // Every request is a cold tenant's first: a budget of one byte evicts every other tenant
    // as soon as the next one loads. Load alone (`index_stats`), then first vector search and
    // first hybrid search.
    let engine = open(dir.path(), 1);
    let (mut load, mut cold_vector, mut cold_hybrid) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..5 {
        for t in 0..tenants {
            let scope = scope(&engine, t);
            let start = Instant::now();
            engine.index_stats(&scope).expect("load");
            load.push(start.elapsed());
        }
        for t in 0..tenants {
            let scope = scope(&engine, t);
            let mut q = query(t, round);
            q.query = None;
            let start = Instant::now();
            let r = engine
                .search(&scope, &RequestScope::default(), &q)
                .expect("search");
            cold_vector.push(start.elapsed());
            assert_eq!(r.hits.len(), 10);
        }
        for t in 0..tenants {
            let scope = scope(&engine, t);
            // Built before the clock starts: generating the query vector costs milliseconds.
            let q = query(t, round);
            let start = Instant::now();
            let r = engine
                .search(&scope, &RequestScope::default(), &q)
                .expect("search");
            cold_hybrid.push(start.elapsed());
            assert_eq!(r.hits.len(), 10);
        }
    }
    report(&format!("cold load alone, {records} records"), load);
    report(
        &format!("cold first vector search, {records} records"),
        cold_vector,
    );
    report(
        &format!("cold first hybrid search, {records} records"),
        cold_hybrid,
    );
    let s = engine.residency_summary(&op);
    println!(
        "loads {}, evictions {}, resident now {} bytes",
        s.loads, s.evictions, s.resident_bytes
    );
    drop(engine);

    let engine = open(dir.path(), 0);
    let scope0 = scope(&engine, 0);
    engine.index_stats(&scope0).expect("load");
    let (mut warm_vector, mut warm_hybrid) = (Vec::new(), Vec::new());
    for i in 0..200 {
        let mut q = query(0, i);
        q.query = None;
        let start = Instant::now();
        engine
            .search(&scope0, &RequestScope::default(), &q)
            .expect("search");
        warm_vector.push(start.elapsed());
        let hybrid = query(0, i);
        let start = Instant::now();
        engine
            .search(&scope0, &RequestScope::default(), &hybrid)
            .expect("search");
        warm_hybrid.push(start.elapsed());
    }
    report("warm vector search", warm_vector);
    report("warm hybrid search", warm_hybrid);
    drop(engine);

    // Start-up with many idle tenants on disk: opening the engine reads no tenant.
    let engine = open(dir.path(), 0);
    for t in tenants..tenants + idle {
        let id = TenantId::parse(format!("t{t}")).expect("id");
        engine.create_tenant(&op, &id, None).expect("tenant");
    }
    drop(engine);
    let start = Instant::now();
    let engine = open(dir.path(), 0);
    let opened = start.elapsed();
    let scope = scope(&engine, 0);
    engine
        .search(&scope, &RequestScope::default(), &query(0, 0))
        .expect("search");
    println!(
        "start with {} tenants on disk: open {:.1} ms, open + first search {:.1} ms",
        tenants + idle,
        opened.as_secs_f64() * 1000.0,
        start.elapsed().as_secs_f64() * 1000.0
    );
}
