//! Online shared → partition migration with new graph parameters: the dry run's estimate
//! against the real rebuild time, and the tenant's own searches (latency, and answers equal to
//! those before the migration) while the rebuild runs.
//!
//! Run: `cargo bench -p strata-engine --bench migration` (env `VECTORS`, default 20,000
//! vectors of 128 dimensions in one tenant; the partition parameters are m = 32,
//! ef_construction = 200).

use std::time::{Duration, Instant};

use strata_auth::{Grant, OperatorScope, Permission, Permissions, TenantScope};
use strata_engine::{
    Engine, EngineConfig, IndexParams, IsolationLevel, MigrateRequest, MigrationState,
};
use strata_types::{
    CollectionName, Metric, NewRecord, RecordId, RequestScope, SearchRequest, TenantId,
};

const DIM: usize = 128;

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn name() -> CollectionName {
    CollectionName::parse("vec").expect("name")
}

fn queries() -> Vec<SearchRequest> {
    strata_index::testdata::queries(50, DIM, 20, 1, 2)
        .into_iter()
        .map(|q| SearchRequest {
            vector: Some(q),
            k: 10,
            modality: Some(name()),
            ..Default::default()
        })
        .collect()
}

fn answers(engine: &Engine, scope: &TenantScope, lat: &mut Vec<Duration>) -> Vec<Vec<String>> {
    queries()
        .iter()
        .map(|q| {
            let t = Instant::now();
            let r = engine
                .search(scope, &RequestScope::default(), q)
                .expect("search");
            lat.push(t.elapsed());
            r.hits.into_iter().map(|h| h.id.to_string()).collect()
        })
        .collect()
}

fn main() {
    let n: usize = std::env::var("VECTORS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let dir = tempfile::tempdir().expect("dir");
    let engine = Engine::open(dir.path(), EngineConfig::default()).expect("open");
    let op = OperatorScope::for_tests();
    let id = TenantId::parse("acme").expect("id");
    engine.create_tenant(&op, &id, None).expect("tenant");
    let grant = Grant {
        // `all_principals`: the index and adaptive figures count every principal's records.
        permissions: Permissions::of(&[
            Permission::Read,
            Permission::Write,
            Permission::Admin,
            Permission::AllPrincipals,
        ]),
        user_tokens: None,
        domains: None,
    };
    let scope = TenantScope::for_tests(&engine.tenant_meta(&id).expect("meta"), grant);
    engine
        .create_collection(&scope, &name(), DIM as u32, Metric::Cosine)
        .expect("collection");
    let data = strata_index::testdata::clustered(n, DIM, 20, 1);
    for (c, part) in data.chunks(1000).enumerate() {
        let records = part
            .iter()
            .enumerate()
            .map(|(i, v)| NewRecord {
                id: Some(RecordId::parse(format!("r{}", c * 1000 + i)).expect("id")),
                modality: Some(name()),
                vector: Some(v.clone()),
                ..Default::default()
            })
            .collect();
        engine
            .put(&scope, &RequestScope::default(), records)
            .expect("put");
    }
    engine.index_stats(&scope).expect("load");
    let t = Instant::now();
    engine.wait_for_graph_builds();
    println!(
        "initial graph build (m 16, ef_construction 128): {:.0} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );

    let mut alone = Vec::new();
    let before = answers(&engine, &scope, &mut alone);
    for _ in 0..4 {
        answers(&engine, &scope, &mut alone);
    }
    alone.sort();

    let params = IndexParams {
        m: Some(32),
        ef_construction: Some(200),
        ef_search: None,
    };
    let req = |dry_run| MigrateRequest {
        target: IsolationLevel::Partition,
        index_params: Some(params),
        dry_run,
    };
    let plan = engine.migrate_tenant(&op, &id, req(true)).expect("dry run");
    println!(
        "dry run: rebuild_vectors {}, estimated {:?} ms at {:.0} vectors/s",
        plan.rebuild_vectors,
        plan.estimated_ms,
        plan.measured_vectors_per_sec.unwrap_or(0.0)
    );
    let t = Instant::now();
    engine
        .migrate_tenant(&op, &id, req(false))
        .expect("migrate");
    let level_changed = t.elapsed();
    let mut during = Vec::new();
    let mut rounds = 0;
    let mut changed = 0;
    while engine.migration(&op, &id).expect("status").state == MigrationState::Rebuilding {
        if answers(&engine, &scope, &mut during) != before {
            changed += 1;
        }
        rounds += 1;
    }
    let rebuilt = t.elapsed();
    during.sort();
    let mut after = Vec::new();
    let same_after = answers(&engine, &scope, &mut after) == before;
    println!(
        "level change committed in {:.2} ms",
        level_changed.as_secs_f64() * 1000.0
    );
    println!(
        "rebuild (m 32, ef_construction 200): {:.0} ms",
        rebuilt.as_secs_f64() * 1000.0
    );
    println!(
        "search alone: p50 {:.3} ms p99 {:.3} ms ({} searches)",
        percentile(&alone, 0.5),
        percentile(&alone, 0.99),
        alone.len()
    );
    if !during.is_empty() {
        println!(
            "search during rebuild: p50 {:.3} ms p99 {:.3} ms ({} searches, {} of {} rounds with other answers)",
            percentile(&during, 0.5),
            percentile(&during, 0.99),
            during.len(),
            changed,
            rounds
        );
    }
    println!("answers after equal answers before: {same_after}");
}
