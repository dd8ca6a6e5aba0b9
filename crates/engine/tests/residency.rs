//! Residency under a memory budget: with many tenants and a budget for a few, resident bytes
//! stay under the budget, least recently used tenants are evicted and reloaded, and every
//! tenant's answers are identical before and after; pinned tenants stay; a write while a
//! tenant is evicted is caught up from the change log at the reload (`tests/changelog.rs`
//! compares such reloads with a never-evicted tenant at length).

mod common;

use std::path::Path;

use serde_json::json;
use strata_auth::{OperatorScope, TenantScope};
use strata_engine::{Engine, EngineConfig, ResidencyConfig};
use strata_types::*;

/// High, so that few records make a graph: a collection gets one once vectors × dimensions
/// reach three quarters of the planner's exact-scan budget (1.5M floats). 1,200 × 1,536
/// (1.84M) is past that line but under the budget itself (2M), so every search here is an
/// exact scan and answers compare bit for bit whether or not the graph is in place.
const DIM: usize = 1536;
const TENANTS: usize = 8;
/// Past the graph threshold, so each tenant has a graph to snapshot and restore.
const RECORDS: usize = 1_200;

fn name() -> CollectionName {
    CollectionName::parse("vec").unwrap()
}

fn tenant_id(t: usize) -> TenantId {
    TenantId::parse(format!("t{t}")).unwrap()
}

fn open(dir: &Path, residency: ResidencyConfig) -> Engine {
    Engine::open(
        dir,
        EngineConfig {
            residency,
            ..EngineConfig::default()
        },
    )
    .unwrap()
}

fn scope(engine: &Engine, t: usize) -> TenantScope {
    TenantScope::for_tests(
        &engine.tenant_meta(&tenant_id(t)).unwrap(),
        common::full_grant(),
    )
}

fn vec_stats(engine: &Engine, t: usize) -> strata_engine::IndexStats {
    engine
        .index_stats(&scope(engine, t))
        .unwrap()
        .into_iter()
        .find(|s| s.collection == name())
        .unwrap()
}

fn populate(engine: &Engine) {
    let op = OperatorScope::for_tests();
    for t in 0..TENANTS {
        engine.create_tenant(&op, &tenant_id(t), None).unwrap();
        let scope = scope(engine, t);
        engine
            .create_collection(&scope, &name(), DIM as u32, Metric::Cosine)
            .unwrap();
        let data = strata_index::testdata::clustered(RECORDS, DIM, 20, t as u64);
        let records: Vec<NewRecord> = data
            .iter()
            .enumerate()
            .map(|(i, v)| NewRecord {
                id: Some(RecordId::parse(format!("r{i}")).unwrap()),
                modality: Some(name()),
                vector: Some(v.clone()),
                content: Some(format!("note {i} about topic {} and {}", i % 7, i % 13)),
                metadata: json!({"bucket": i % 10}).as_object().cloned().unwrap(),
                ..Default::default()
            })
            .collect();
        for batch in records.chunks(600) {
            engine
                .put(&scope, &RequestScope::default(), batch.to_vec())
                .unwrap();
        }
    }
}

/// Vector, filtered and text answers of tenant `t`, as (id, score bits) lists.
fn answers(engine: &Engine, t: usize) -> Vec<Vec<(String, u32)>> {
    let scope = scope(engine, t);
    let queries = strata_index::testdata::queries(5, DIM, 20, t as u64, 99);
    let mut requests: Vec<SearchRequest> = queries
        .iter()
        .map(|q| SearchRequest {
            vector: Some(q.clone()),
            k: 10,
            modality: Some(name()),
            ..Default::default()
        })
        .collect();
    requests.push(SearchRequest {
        vector: Some(queries[0].clone()),
        k: 5,
        modality: Some(name()),
        filter: Some(Filter::parse(&json!({"bucket": 3})).unwrap()),
        ..Default::default()
    });
    requests.push(SearchRequest {
        query: Some("topic 3".into()),
        k: 10,
        modality: Some(name()),
        ..Default::default()
    });
    requests
        .iter()
        .map(|s| {
            engine
                .search(&scope, &RequestScope::default(), s)
                .unwrap()
                .hits
                .into_iter()
                .map(|h| (h.id.to_string(), h.score.to_bits()))
                .collect()
        })
        .collect()
}

#[test]
fn a_small_budget_keeps_resident_bytes_under_it_and_answers_identical() {
    let dir = tempfile::tempdir().unwrap();
    let op = OperatorScope::for_tests();

    // Without a budget: every tenant loaded, graphs built, the reference answers.
    let engine = open(dir.path(), ResidencyConfig::default());
    populate(&engine);
    let mut per_tenant = 0;
    for t in 0..TENANTS {
        engine.index_stats(&scope(&engine, t)).unwrap();
        engine.wait_for_graph_builds();
        let r = engine.residency(&op, &tenant_id(t)).unwrap();
        assert!(
            r.resident && r.resident_bytes > 0 && r.graph_builds_pending == 0,
            "{r:?}"
        );
        per_tenant = per_tenant.max(r.resident_bytes);
    }
    let reference: Vec<_> = (0..TENANTS).map(|t| answers(&engine, t)).collect();
    let summary = engine.residency_summary(&op);
    assert_eq!(summary.resident_tenants, TENANTS as u64);
    assert_eq!(summary.evictions, 0);
    drop(engine);

    // A budget for about three tenants, with t0 pinned.
    let budget = per_tenant * 3 + per_tenant / 2;
    let engine = open(
        dir.path(),
        ResidencyConfig {
            memory_budget_bytes: budget,
            pinned: vec![tenant_id(0)],
        },
    );
    for round in 0..3 {
        for (t, expected) in reference.iter().enumerate() {
            assert_eq!(&answers(&engine, t), expected, "round {round}, tenant t{t}");
            let s = engine.residency_summary(&op);
            assert!(
                s.resident_bytes <= budget,
                "round {round}, t{t}: {} resident > budget {budget}",
                s.resident_bytes
            );
            assert!(s.resident_tenants <= 4, "{s:?}");
        }
    }
    let pinned = engine.residency(&op, &tenant_id(0)).unwrap();
    assert!(
        pinned.pinned && pinned.resident && pinned.evictions == 0,
        "{pinned:?}"
    );
    assert_eq!(pinned.loads, 1, "a pinned tenant is loaded once");
    for t in 1..TENANTS {
        let r = engine.residency(&op, &tenant_id(t)).unwrap();
        assert!(r.loads >= 3 && r.evictions >= 2, "t{t}: {r:?}");
        // Reloads restore the graph saved at eviction: nothing to build.
        assert_eq!(r.graph_builds_pending, 0, "t{t}: {r:?}");
    }
    let stats = vec_stats(&engine, TENANTS - 1);
    assert!(stats.graph && stats.restored_from_snapshot, "{stats:?}");
    // Reloads read no record: text, fields and vectors come from the search image saved at
    // eviction.
    assert!(stats.loaded_from_image, "{stats:?}");
}

#[test]
fn a_write_while_evicted_is_replayed_at_the_reload_from_the_change_log() {
    let dir = tempfile::tempdir().unwrap();
    let op = OperatorScope::for_tests();
    let engine = open(dir.path(), ResidencyConfig::default());
    populate(&engine);
    assert_eq!(vec_stats(&engine, 1).vectors, RECORDS as u64);
    vec_stats(&engine, 2);
    engine.wait_for_graph_builds();
    let per_tenant = engine.residency(&op, &tenant_id(1)).unwrap().resident_bytes;
    println!("resident bytes of a {RECORDS}-record tenant: {per_tenant}");
    drop(engine);

    // Room for one tenant: loading t2 evicts t1 (saving its snapshot). A quarter to spare,
    // not more: t1 rebuilt below holds no graph until the builder is done, and a budget with
    // room for that and t2 together would let t1 stay loaded.
    let budget = per_tenant + per_tenant / 4;
    let engine = open(
        dir.path(),
        ResidencyConfig {
            memory_budget_bytes: budget,
            pinned: vec![],
        },
    );
    let before = answers(&engine, 1);
    answers(&engine, 2);
    let r = engine.residency(&op, &tenant_id(1)).unwrap();
    assert!(!r.resident && r.evictions == 1, "{r:?}");
    assert!(engine.residency_summary(&op).resident_bytes <= budget);

    // A write to the evicted tenant: its image is behind storage, by one logged change.
    let q = strata_index::testdata::queries(5, DIM, 20, 1, 99)[0].clone();
    engine
        .put(
            &scope(&engine, 1),
            &RequestScope::default(),
            vec![NewRecord {
                id: Some(RecordId::parse("fresh").unwrap()),
                modality: Some(name()),
                vector: Some(q.clone()),
                ..Default::default()
            }],
        )
        .unwrap();
    let after = answers(&engine, 1);
    assert_eq!(after[0][0].0, "fresh", "the reload must see the new record");
    assert_eq!(&after[0][1..], &before[0][..9]);
    let stats = vec_stats(&engine, 1);
    assert!(
        stats.restored_from_snapshot && stats.loaded_from_image,
        "the image and graph are loaded and the new record replayed into them: {stats:?}"
    );
    assert_eq!(stats.vectors, RECORDS as u64 + 1);
    let report = engine.verify_tenant(&op, &tenant_id(1)).unwrap();
    assert!(report.ok && report.indexes_loaded, "{report:?}");

    // The caught-up indexes are saved at the next eviction; the reload after it is current
    // and answers the same.
    engine.wait_for_graph_builds();
    let after = answers(&engine, 1);
    answers(&engine, 2);
    assert!(!engine.residency(&op, &tenant_id(1)).unwrap().resident);
    assert_eq!(answers(&engine, 1), after);
    let stats = vec_stats(&engine, 1);
    assert!(
        stats.loaded_from_image && stats.restored_from_snapshot,
        "{stats:?}"
    );
    let report = engine.verify_tenant(&op, &tenant_id(1)).unwrap();
    assert!(report.ok && report.indexes_loaded, "{report:?}");
}

#[test]
fn a_graph_past_the_deleted_fraction_is_rebuilt_online_without_its_tombstones() {
    let dir = tempfile::tempdir().unwrap();
    let op = OperatorScope::for_tests();
    let engine = open(dir.path(), ResidencyConfig::default());
    populate(&engine);
    let scope = scope(&engine, 3);
    vec_stats(&engine, 3);
    engine.wait_for_graph_builds();
    assert!(vec_stats(&engine, 3).graph);

    // A fifth of the nodes deleted: not yet worth a rebuild.
    for i in 0..200 {
        engine
            .delete(
                &scope,
                &RequestScope::default(),
                &RecordId::parse(format!("r{i}")).unwrap(),
            )
            .unwrap();
    }
    engine.wait_for_graph_builds();
    let stats = vec_stats(&engine, 3);
    assert_eq!(
        (stats.graph_deleted, stats.vectors),
        (200, 1_000),
        "{stats:?}"
    );

    // Past it: the next write queues a rebuild; searches go on meanwhile.
    for i in 200..400 {
        engine
            .delete(
                &scope,
                &RequestScope::default(),
                &RecordId::parse(format!("r{i}")).unwrap(),
            )
            .unwrap();
        let r = engine
            .search(
                &scope,
                &RequestScope::default(),
                &SearchRequest {
                    vector: Some(strata_index::testdata::queries(1, DIM, 20, 3, i)[0].clone()),
                    k: 10,
                    modality: Some(name()),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(r.hits.len(), 10);
    }
    engine.wait_for_graph_builds();
    // 400 deletions in all, fewer tombstones left: the graph was rebuilt (once the fraction
    // passed a fifth), and holds only what was deleted since.
    let stats = vec_stats(&engine, 3);
    assert!(stats.graph && stats.graph_deleted < 200, "{stats:?}");
    assert!(stats.graph_deleted as f64 / (800 + stats.graph_deleted) as f64 <= 0.2);
    assert_eq!(stats.vectors, 800);
    let report = engine.verify_tenant(&op, &tenant_id(3)).unwrap();
    assert!(report.ok && report.indexes_loaded, "{report:?}");
}
