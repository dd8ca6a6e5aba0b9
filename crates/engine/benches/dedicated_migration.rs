//! Online migration of a tenant's data into its own file and back (shared → dedicated →
//! shared): how long each move takes, the tenant's own searches and writes meanwhile
//! (latency, the longest pause, and answers equal to those before), and another tenant's
//! writes meanwhile (the flip holds the main file's write lock, which they need too).
//!
//! Run: `cargo bench -p strata-engine --bench dedicated_migration` (env `RECORDS`, default
//! 20,000 records with 128-dimensional vectors and a line of text, in one tenant).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use strata_auth::{Grant, OperatorScope, Permission, Permissions, TenantScope};
use strata_engine::{Engine, EngineConfig, IsolationLevel, MigrateRequest};
use strata_types::{
    CollectionName, Metric, NewRecord, RecordId, RequestScope, SearchRequest, TenantId,
};

const DIM: usize = 128;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    ms(sorted[((sorted.len() as f64 - 1.0) * p).round() as usize])
}

fn name() -> CollectionName {
    CollectionName::parse("vec").expect("name")
}

fn queries() -> Vec<SearchRequest> {
    strata_index::testdata::queries(20, DIM, 20, 1, 2)
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

/// Writes one record at a time into `collection` until `stop`; the latency of each write.
fn write_loop(
    engine: &Engine,
    scope: &TenantScope,
    collection: &CollectionName,
    prefix: &str,
    data: &[Vec<f32>],
    stop: &AtomicBool,
) -> Vec<Duration> {
    let mut lat = Vec::new();
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        engine
            .put(
                scope,
                &RequestScope::default(),
                vec![NewRecord {
                    id: Some(RecordId::parse(format!("{prefix}{i}")).expect("id")),
                    modality: Some(collection.clone()),
                    vector: Some(data[i % data.len()].clone()),
                    ..Default::default()
                }],
            )
            .expect("write during migration");
        lat.push(t.elapsed());
        i += 1;
    }
    lat
}

fn print_writes(who: &str, mut writes: Vec<Duration>) {
    writes.sort();
    println!(
        "  {who} writes during: p50 {:.3} ms p99 {:.3} ms max {:.1} ms ({} acknowledged)",
        percentile(&writes, 0.5),
        percentile(&writes, 0.99),
        percentile(&writes, 1.0),
        writes.len()
    );
}

fn main() {
    let n: usize = std::env::var("RECORDS")
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
    let scope = TenantScope::for_tests(&engine.tenant_meta(&id).expect("meta"), grant.clone());
    engine
        .create_collection(&scope, &name(), DIM as u32, Metric::Cosine)
        .expect("collection");
    // The writer writes into its own collection, so the searched answers stay comparable.
    let side = CollectionName::parse("side").expect("name");
    engine
        .create_collection(&scope, &side, DIM as u32, Metric::Cosine)
        .expect("collection");
    // Another tenant, writing during the moves.
    let other_id = TenantId::parse("other").expect("id");
    engine.create_tenant(&op, &other_id, None).expect("tenant");
    let other_scope =
        TenantScope::for_tests(&engine.tenant_meta(&other_id).expect("meta"), grant.clone());
    engine
        .create_collection(&other_scope, &side, DIM as u32, Metric::Cosine)
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
                content: Some(format!("memory {} of the benchmark tenant", c * 1000 + i)),
                ..Default::default()
            })
            .collect();
        engine
            .put(&scope, &RequestScope::default(), records)
            .expect("put");
    }
    engine.index_stats(&scope).expect("load");
    engine.wait_for_graph_builds();
    let mut alone = Vec::new();
    let before = answers(&engine, &scope, &mut alone);
    for _ in 0..9 {
        answers(&engine, &scope, &mut alone);
    }
    alone.sort();
    println!(
        "{n} records; search alone: p50 {:.3} ms p99 {:.3} ms ({} searches)",
        percentile(&alone, 0.5),
        percentile(&alone, 0.99),
        alone.len()
    );

    for target in [IsolationLevel::Dedicated, IsolationLevel::Shared] {
        let plan = engine
            .migrate_tenant(
                &op,
                &id,
                MigrateRequest {
                    target,
                    index_params: None,
                    dry_run: true,
                },
            )
            .expect("dry run");
        let stop = AtomicBool::new(false);
        let (prefix, other_prefix) = (format!("w{target:?}"), format!("o{target:?}"));
        let (took, during, writes, changed, rounds) = std::thread::scope(|s| {
            let searcher = s.spawn(|| {
                let (mut lat, mut changed, mut rounds) = (Vec::new(), 0, 0);
                while !stop.load(Ordering::Relaxed) {
                    if answers(&engine, &scope, &mut lat) != before {
                        changed += 1;
                    }
                    rounds += 1;
                }
                (lat, changed, rounds)
            });
            let writer = s.spawn(|| write_loop(&engine, &scope, &side, &prefix, &data, &stop));
            let other =
                s.spawn(|| write_loop(&engine, &other_scope, &side, &other_prefix, &data, &stop));
            std::thread::sleep(Duration::from_millis(200));
            let t = Instant::now();
            engine
                .migrate_tenant(
                    &op,
                    &id,
                    MigrateRequest {
                        target,
                        index_params: None,
                        dry_run: false,
                    },
                )
                .expect("migrate");
            let took = t.elapsed();
            std::thread::sleep(Duration::from_millis(200));
            stop.store(true, Ordering::Relaxed);
            let (during, changed, rounds) = searcher.join().expect("searcher");
            let writes = (
                writer.join().expect("writer"),
                other.join().expect("other writer"),
            );
            (took, during, writes, changed, rounds)
        });
        let mut during = during;
        during.sort();
        println!(
            "to {target:?}: {} keys, {:.1} MB moved in {:.0} ms (dry run estimated {:?} ms)",
            engine.migration(&op, &id).expect("status").keys_total,
            plan.bytes as f64 / 1e6,
            ms(took),
            plan.estimated_ms
        );
        println!(
            "  search during: p50 {:.3} ms p99 {:.3} ms max {:.1} ms ({} searches, {} of {} rounds with other answers)",
            percentile(&during, 0.5),
            percentile(&during, 0.99),
            percentile(&during, 1.0),
            during.len(),
            changed,
            rounds
        );
        print_writes("its", writes.0);
        print_writes("another tenant's", writes.1);
        let report = engine.verify_tenant(&op, &id).expect("verify");
        assert!(report.ok, "{report:?}");
    }
    let mut after = Vec::new();
    println!(
        "answers after equal answers before: {}",
        answers(&engine, &scope, &mut after) == before
    );
}
