//! Reads on a thread that must not write to storage (the worker pool's lowest-priority
//! background workers): they load cold tenants and answer exactly as elsewhere, and an
//! eviction their load needs that would save a snapshot (a storage write) is handed to the
//! engine's evictor thread instead of being done on them. A write on such a thread is caught:
//! it panics in debug builds and is counted in every build.

mod common;

use std::path::Path;

use serde_json::json;
use strata_auth::{OperatorScope, TenantScope};
use strata_engine::{Engine, EngineConfig, Page, ResidencyConfig};
use strata_types::*;

const DIM: usize = 16;
const RECORDS: usize = 60;

fn name() -> CollectionName {
    CollectionName::parse("vec").unwrap()
}

fn tenant_id(t: usize) -> TenantId {
    TenantId::parse(format!("t{t}")).unwrap()
}

fn scope(engine: &Engine, t: usize) -> TenantScope {
    TenantScope::for_tests(
        &engine.tenant_meta(&tenant_id(t)).unwrap(),
        common::full_grant(),
    )
}

fn records(t: usize, from: usize, n: usize) -> Vec<NewRecord> {
    (from..from + n)
        .map(|i| NewRecord {
            id: Some(RecordId::parse(format!("r{i}")).unwrap()),
            modality: Some(name()),
            vector: Some(common::vector(DIM, (t * 1000 + i) as u64)),
            content: Some(format!("note {i} about topic {}", i % 7)),
            metadata: json!({"bucket": i % 5}).as_object().cloned().unwrap(),
            ..Default::default()
        })
        .collect()
}

/// A budget of one byte: every load evicts every other unpinned tenant.
fn open(dir: &Path) -> Engine {
    Engine::open(
        dir,
        EngineConfig {
            residency: ResidencyConfig {
                memory_budget_bytes: 1,
                pinned: Vec::new(),
            },
            ..EngineConfig::default()
        },
    )
    .unwrap()
}

fn search(engine: &Engine, t: usize) -> Vec<(String, u32)> {
    let req = SearchRequest {
        vector: Some(common::vector(DIM, 7)),
        query: Some("topic 3".into()),
        k: 10,
        modality: Some(name()),
        ..Default::default()
    };
    engine
        .search(&scope(engine, t), &RequestScope::default(), &req)
        .unwrap()
        .hits
        .iter()
        .map(|h| (h.id.to_string(), h.score.to_bits()))
        .collect()
}

/// Every read route's engine call, on the calling thread.
fn every_read(engine: &Engine, t: usize) -> Vec<(String, u32)> {
    let (scope, req) = (scope(engine, t), RequestScope::default());
    let hits = search(engine, t);
    let id = RecordId::parse("r3").unwrap();
    assert_eq!(engine.get(&scope, &req, &id).unwrap().id, id);
    let page = Page {
        after: None,
        limit: 10,
    };
    assert_eq!(
        engine.scan(&scope, &req, None, page).unwrap().records.len(),
        10
    );
    assert_eq!(
        engine.count(&scope, &req, None).unwrap(),
        RECORDS as u64 + 5
    );
    let recall = SearchRequest {
        vector: Some(common::vector(DIM, 7)),
        k: 5,
        modality: Some(name()),
        ..Default::default()
    };
    let recalled = engine
        .recall(&scope, &req, &recall, &RecallParams::default())
        .unwrap();
    assert!(!recalled.hits.is_empty());
    hits
}

#[test]
fn reads_on_a_thread_that_must_not_write_hand_their_evictions_to_the_evictor() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    let op = OperatorScope::for_tests();
    for t in 0..2 {
        engine.create_tenant(&op, &tenant_id(t), None).unwrap();
        let scope = scope(&engine, t);
        engine
            .create_collection(&scope, &name(), DIM as u32, Metric::Cosine)
            .unwrap();
        engine
            .put(&scope, &RequestScope::default(), records(t, 0, RECORDS))
            .unwrap();
    }
    // Tenant 0 loaded, then changed: its snapshot must be saved before it may be evicted.
    let before = search(&engine, 0);
    engine
        .put(
            &scope(&engine, 0),
            &RequestScope::default(),
            records(0, RECORDS, 5),
        )
        .unwrap();
    engine
        .put(
            &scope(&engine, 1),
            &RequestScope::default(),
            records(1, RECORDS, 5),
        )
        .unwrap();
    let changed = search(&engine, 0);
    assert_ne!(before, changed);
    assert!(engine.residency(&op, &tenant_id(0)).unwrap().resident);
    let violations = strata_engine::storage_writes_on_forbidden_threads();

    // Tenant 1's reads load it on a marked thread; evicting tenant 0 needs a save, which
    // would panic there (debug builds) if the registry did it itself.
    let answers = std::thread::scope(|s| {
        s.spawn(|| {
            strata_engine::forbid_storage_writes_on_this_thread();
            assert!(!strata_engine::storage_writes_allowed_here());
            every_read(&engine, 1)
        })
        .join()
        .unwrap()
    });
    assert_eq!(answers.len(), 10);
    engine.wait_for_evictions();
    assert_eq!(
        strata_engine::storage_writes_on_forbidden_threads(),
        violations
    );
    let t0 = engine.residency(&op, &tenant_id(0)).unwrap();
    assert!(!t0.resident && t0.evictions == 1, "{t0:?}");
    // The tenant the read served was protected from the evictor it asked.
    assert!(engine.residency(&op, &tenant_id(1)).unwrap().resident);
    // The evictor saved tenant 0 before dropping it: a reload answers as before, and
    // tenant 1 answers the same from a normal thread.
    assert_eq!(search(&engine, 0), changed);
    assert_eq!(search(&engine, 1), answers);
}

#[test]
fn a_write_on_a_thread_that_must_not_write_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    let op = OperatorScope::for_tests();
    engine.create_tenant(&op, &tenant_id(0), None).unwrap();
    let scope = scope(&engine, 0);
    engine
        .create_collection(&scope, &name(), DIM as u32, Metric::Cosine)
        .unwrap();
    let before = strata_engine::storage_writes_on_forbidden_threads();
    // The check panics in debug builds; a write path that runs its transaction under
    // `catch_unwind` (the batched writes) turns that panic into the write's error.
    let failed = std::thread::scope(|s| {
        s.spawn(|| {
            strata_engine::forbid_storage_writes_on_this_thread();
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                engine.put(&scope, &RequestScope::default(), records(0, 0, 1))
            }))
            .map_or(true, |put| put.is_err())
        })
        .join()
        .unwrap()
    });
    assert_eq!(failed, cfg!(debug_assertions));
    assert!(strata_engine::storage_writes_on_forbidden_threads() > before);
    // The mark is the thread's: this one still writes.
    assert!(strata_engine::storage_writes_allowed_here());
    engine
        .put(&scope, &RequestScope::default(), records(0, 1, 1))
        .unwrap();
}
