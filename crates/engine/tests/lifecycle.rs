//! Tenant lifecycle, quotas, and physical erasure on hard delete.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;
use strata_auth::{OperatorScope, TenantScope};
use strata_engine::{
    AuditQuery, Engine, EngineError, ExportLine, IntegrityPolicyInput, IsolationLevel,
    MigrateRequest, TenantLimits, TenantStatus, TenantUpdate,
};
use strata_types::*;

fn op() -> OperatorScope {
    OperatorScope::for_tests()
}

fn rec(v: serde_json::Value) -> NewRecord {
    serde_json::from_value(v).unwrap()
}

fn req() -> RequestScope {
    RequestScope::default()
}

#[test]
fn suspend_blocks_every_data_operation_and_resume_restores_them() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = common::open_with_tenant(dir.path(), "acme", common::full_grant());
    let id = engine
        .put(&scope, &req(), vec![rec(json!({"content": "kept"}))])
        .unwrap()[0]
        .id
        .clone();
    let tenant = scope.tenant().clone();
    assert_eq!(
        engine.suspend_tenant(&op(), &tenant).unwrap().status,
        TenantStatus::Suspended
    );
    let suspended = |r: Result<(), EngineError>| {
        assert!(matches!(r, Err(EngineError::TenantSuspended(_))), "{r:?}")
    };
    suspended(engine.get(&scope, &req(), &id).map(|_| ()));
    suspended(
        engine
            .put(&scope, &req(), vec![rec(json!({"content": "x"}))])
            .map(|_| ()),
    );
    suspended(engine.count(&scope, &req(), None).map(|_| ()));
    suspended(engine.delete(&scope, &req(), &id));
    suspended(engine.collections(&scope).map(|_| ()));
    let s = SearchRequest {
        query: Some("kept".into()),
        ..Default::default()
    };
    suspended(engine.search(&scope, &req(), &s).map(|_| ()));
    engine.resume_tenant(&op(), &tenant).unwrap();
    assert_eq!(
        engine.get(&scope, &req(), &id).unwrap().content.as_deref(),
        Some("kept")
    );
    assert_eq!(engine.search(&scope, &req(), &s).unwrap().hits.len(), 1);
}

#[test]
fn soft_delete_hides_restore_brings_back_and_retention_purges() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = common::open_with_tenant(dir.path(), "acme", common::full_grant());
    let id = engine
        .put(&scope, &req(), vec![rec(json!({"content": "kept"}))])
        .unwrap()[0]
        .id
        .clone();
    let tenant = scope.tenant().clone();
    let info = engine.delete_tenant(&op(), &tenant).unwrap();
    assert_eq!(info.status, TenantStatus::Deleted);
    assert!(info.deleted_at.is_some());
    assert!(matches!(
        engine.get(&scope, &req(), &id),
        Err(EngineError::TenantNotFound(_))
    ));
    // It exists, deleted: changing its status or placement asks for a restore first (409),
    // not "does not exist".
    let restore_first = |r: Result<(), EngineError>| match r {
        Err(EngineError::IdConflict(m)) => assert!(m.contains("restore it first"), "{m}"),
        other => panic!("{other:?}"),
    };
    restore_first(engine.suspend_tenant(&op(), &tenant).map(drop));
    restore_first(engine.resume_tenant(&op(), &tenant).map(drop));
    // Within the retention period nothing is purged, and restore brings the data back.
    assert!(
        engine
            .purge_deleted_tenants(&op(), 60_000)
            .unwrap()
            .is_empty()
    );
    engine.restore_tenant(&op(), &tenant).unwrap();
    assert_eq!(
        engine.get(&scope, &req(), &id).unwrap().content.as_deref(),
        Some("kept")
    );
    // Deleted again and past retention: purged for good.
    engine.delete_tenant(&op(), &tenant).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    assert_eq!(
        engine.purge_deleted_tenants(&op(), 1).unwrap(),
        vec![tenant.clone()]
    );
    assert!(matches!(
        engine.tenant(&op(), &tenant),
        Err(EngineError::TenantNotFound(_))
    ));
    assert!(matches!(
        engine.restore_tenant(&op(), &tenant),
        Err(EngineError::TenantNotFound(_))
    ));
    // A tenant re-created under the same id starts empty, and the old scope stays dead.
    engine.create_tenant(&op(), &tenant, None).unwrap();
    let fresh = TenantScope::for_tests(&engine.tenant_meta(&tenant).unwrap(), common::full_grant());
    assert_eq!(engine.count(&fresh, &req(), None).unwrap(), 0);
    assert!(matches!(
        engine.count(&scope, &req(), None),
        Err(EngineError::TenantNotFound(_))
    ));
}

/// Each purge rewrites the main file into a new one (a vacuum, which blocks every request for
/// a time that grows with the file), so a sweep rewrites it once, after its last purge.
#[test]
fn a_sweep_that_purges_many_tenants_rewrites_the_main_file_once() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = common::open_with_tenant(dir.path(), "acme", common::full_grant());
    engine
        .put(&scope, &req(), vec![rec(json!({"content": "acme's"}))])
        .unwrap();
    let ids: Vec<TenantId> = ["acme", "globex", "initech"]
        .iter()
        .map(|id| TenantId::parse(id).unwrap())
        .collect();
    for id in &ids[1..] {
        engine.create_tenant(&op(), id, None).unwrap();
    }
    for id in &ids {
        engine.delete_tenant(&op(), id).unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(5));
    let before = engine.vacuums();
    let mut purged = engine.purge_deleted_tenants(&op(), 1).unwrap();
    purged.sort();
    assert_eq!(purged, ids);
    assert_eq!(engine.vacuums(), before + 1);
    // Nothing to purge: no rewrite.
    assert!(engine.purge_deleted_tenants(&op(), 1).unwrap().is_empty());
    assert_eq!(engine.vacuums(), before + 1);
    // A hard delete rewrites it too.
    let solo = TenantId::parse("solo").unwrap();
    engine.create_tenant(&op(), &solo, None).unwrap();
    engine.purge_tenant(&op(), &solo).unwrap();
    assert_eq!(engine.vacuums(), before + 2);
}

fn limited(dir: &std::path::Path, limits: TenantLimits) -> (Engine, TenantScope) {
    let (engine, scope) = common::open_with_tenant(dir, "acme", common::full_grant());
    engine
        .update_tenant(
            &op(),
            scope.tenant(),
            TenantUpdate {
                limits: Some(limits),
                ..Default::default()
            },
        )
        .unwrap();
    (engine, scope)
}

#[test]
fn concurrent_writers_never_overshoot_the_vector_quota() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = limited(
        dir.path(),
        TenantLimits {
            max_vectors: Some(50),
            ..Default::default()
        },
    );
    let (ok, refused) = (AtomicUsize::new(0), AtomicUsize::new(0));
    std::thread::scope(|s| {
        for t in 0..8 {
            let (engine, scope, ok, refused) = (&engine, &scope, &ok, &refused);
            s.spawn(move || {
                for i in 0..20 {
                    let r = NewRecord {
                        vector: Some(common::vector(384, t * 100 + i)),
                        ..Default::default()
                    };
                    match engine.put(scope, &req(), vec![r]) {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(EngineError::QuotaExceeded {
                            resource: "max_vectors",
                            limit: 50,
                            used: Some(50),
                        }) => refused.fetch_add(1, Ordering::Relaxed),
                        Err(e) => panic!("{e}"),
                    };
                }
            });
        }
    });
    assert_eq!(ok.load(Ordering::Relaxed), 50);
    assert_eq!(refused.load(Ordering::Relaxed), 110);
    let usage = engine.tenant(&op(), scope.tenant()).unwrap().usage.unwrap();
    assert_eq!((usage.vectors, usage.records), (50, 50));
    // A batch that would cross the line is refused whole; deleting makes room again.
    let batch = (0..2)
        .map(|i| NewRecord {
            vector: Some(common::vector(384, 9000 + i)),
            ..Default::default()
        })
        .collect();
    // The refusal says how much room was left: none.
    assert_eq!(
        engine.put(&scope, &req(), batch).unwrap_err().to_string(),
        "quota exceeded: max_vectors: 50 used of 50"
    );
    let one = common::all_records(&engine, &scope, "default")[0]
        .id
        .clone();
    engine.delete(&scope, &req(), &one).unwrap();
    engine
        .put(
            &scope,
            &req(),
            vec![NewRecord {
                vector: Some(common::vector(384, 1)),
                ..Default::default()
            }],
        )
        .unwrap();
    // Text-only records do not count against max_vectors.
    engine
        .put(&scope, &req(), vec![rec(json!({"content": "no vector"}))])
        .unwrap();
}

#[test]
fn storage_and_collection_quotas_name_their_resource() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = limited(
        dir.path(),
        TenantLimits {
            max_storage_bytes: Some(2_000),
            max_collections: Some(4),
            ..Default::default()
        },
    );
    engine
        .put(
            &scope,
            &req(),
            vec![rec(json!({"content": "x".repeat(1000)}))],
        )
        .unwrap();
    let used = engine
        .tenant(&op(), scope.tenant())
        .unwrap()
        .usage
        .unwrap()
        .storage_bytes;
    let err = engine
        .put(
            &scope,
            &req(),
            vec![rec(json!({"content": "y".repeat(1000)}))],
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::QuotaExceeded {
                resource: "max_storage_bytes",
                limit: 2000,
                used: Some(u),
            } if u == used
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "quota exceeded: max_storage_bytes: {used} used of 2000; the request needs more \
             than the {} left",
            2000 - used
        )
    );
    engine
        .create_collection(
            &scope,
            &CollectionName::parse("fourth").unwrap(),
            4,
            Metric::Dot,
        )
        .unwrap();
    let err = engine
        .create_collection(
            &scope,
            &CollectionName::parse("fifth").unwrap(),
            4,
            Metric::Dot,
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::QuotaExceeded {
                resource: "max_collections",
                limit: 4,
                used: Some(4),
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "quota exceeded: max_collections: 4 used of 4"
    );
    assert_eq!(
        engine
            .tenant(&op(), scope.tenant())
            .unwrap()
            .usage
            .unwrap()
            .collections,
        4
    );
}

/// A deleted collection's records give back their usage: the counters equal a recount, and
/// the quota they took is free again.
#[test]
fn deleting_a_collection_gives_back_its_records_usage() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = limited(
        dir.path(),
        TenantLimits {
            max_vectors: Some(3),
            ..Default::default()
        },
    );
    let name = CollectionName::parse("v4").unwrap();
    let put = |content: &str| {
        engine.put(
            &scope,
            &req(),
            vec![rec(
                json!({"modality": "v4", "content": content, "vector": [1.0, 0.0, 0.0, 0.0]}),
            )],
        )
    };
    for round in 0..2 {
        engine
            .create_collection(&scope, &name, 4, Metric::Cosine)
            .unwrap();
        for i in 0..3 {
            put(&format!("round {round} record {i}")).unwrap();
        }
        assert!(matches!(
            put("one too many"),
            Err(EngineError::QuotaExceeded {
                resource: "max_vectors",
                ..
            })
        ));
        assert_eq!(engine.delete_collection(&scope, &name).unwrap(), 3);
        let usage = engine.tenant(&op(), scope.tenant()).unwrap().usage.unwrap();
        assert_eq!(
            (usage.records, usage.vectors, usage.storage_bytes),
            (0, 0, 0),
            "round {round}"
        );
        let report = engine.verify_tenant(&op(), scope.tenant()).unwrap();
        assert!(report.ok, "round {round}: {report:?}");
    }
}

const CANARY: &str = "CANARY-7f3a9c2e-only-ever-written-by-acme-tenant";

/// The files under `dir` holding `needle`. The engine's background work (index saves, a
/// vacuum) writes temporary files and renames or removes them meanwhile: one gone between the
/// listing and its read held nothing that stays.
fn files_containing(dir: &std::path::Path, needle: &[u8]) -> Vec<String> {
    let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    let mut hits = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if gone(&e) => return hits,
        Err(e) => panic!("{}: {e}", dir.display()),
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            hits.extend(files_containing(&path, needle));
            continue;
        }
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if gone(&e) => continue,
            Err(e) => panic!("{}: {e}", path.display()),
        };
        if bytes.windows(needle.len()).any(|w| w == needle) {
            hits.push(path.display().to_string());
        }
    }
    hits
}

/// Waits until no file under `dir` holds the canary: at once after a purge, unless a
/// background reader (an index save) held a snapshot just then, when the compaction is owed
/// and runs within moments.
fn no_canary_left(dir: &std::path::Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let left = files_containing(dir, &CANARY.as_bytes()[..20]);
        if left.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "canary bytes remain after the purge: {left:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn hard_delete_leaves_no_byte_of_the_tenant_in_the_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, acme) = common::open_with_tenant(dir.path(), "acme", common::full_grant());
    drop(engine);
    let (engine, other) = common::open_with_tenant(dir.path(), "globex", common::full_grant());
    let acme = TenantScope::for_tests(
        &engine.tenant_meta(acme.tenant()).unwrap(),
        common::full_grant(),
    );
    // The canary goes everywhere acme's data can be: ids, content, metadata, run ids, tokens,
    // collection names, index snapshots.
    let collection = CollectionName::parse(format!("c-{}", &CANARY[..20])).unwrap();
    engine
        .create_collection(&acme, &collection, 8, Metric::Cosine)
        .unwrap();
    let scope: RequestScope = serde_json::from_value(
        json!({"user_tokens": [format!("u:{}", &CANARY[..30])], "run_id": &CANARY[..40]}),
    )
    .unwrap();
    for batch in 0..5 {
        let records = (0..300)
            .map(|i| NewRecord {
                id: Some(RecordId::parse(format!("{}-{batch}-{i}", &CANARY[..40])).unwrap()),
                content: Some(format!("{CANARY} memory {i}")),
                metadata: json!({"note": CANARY}).as_object().cloned().unwrap(),
                vector: Some(common::vector(384, batch * 1000 + i)),
                ..Default::default()
            })
            .collect();
        engine.put(&acme, &scope, records).unwrap();
    }
    engine
        .put(
            &acme,
            &req(),
            vec![NewRecord {
                modality: Some(collection),
                vector: Some(vec![1.0; 8]),
                ..Default::default()
            }],
        )
        .unwrap();
    engine
        .search(
            &acme,
            &scope,
            &SearchRequest {
                query: Some("memory".into()),
                ..Default::default()
            },
        )
        .unwrap();
    engine.persist_indexes().unwrap();
    engine
        .put(
            &other,
            &req(),
            vec![rec(json!({"content": "globex stays"}))],
        )
        .unwrap();
    assert!(
        !files_containing(dir.path(), CANARY.as_bytes()).is_empty(),
        "the canary must be on disk before the delete"
    );

    engine.purge_tenant(&op(), acme.tenant()).unwrap();
    no_canary_left(dir.path());
    assert_eq!(engine.count(&other, &req(), None).unwrap(), 1);
    drop(engine);
    let (engine, other) = common::open_with_tenant(dir.path(), "globex", common::full_grant());
    assert_eq!(
        common::all_records(&engine, &other, "default")[0]
            .content
            .as_deref(),
        Some("globex stays")
    );
}

/// A dedicated tenant's own file goes whole with it, but its registry row (metadata included)
/// lives in the main file, rewritten at every profile change and every step of its
/// migration: none of those copies may outlive the purge in pages that compaction left free
/// among other tenants' data.
#[test]
fn a_purged_dedicated_tenant_leaves_no_copy_of_its_registry_row_in_the_main_file() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, acme) = common::open_with_tenant(dir.path(), "acme", common::full_grant());
    drop(engine);
    let (engine, other) = common::open_with_tenant(dir.path(), "globex", common::full_grant());
    // Other tenants' data around acme's rows, so that freed pages sit among live ones.
    for batch in 0..4 {
        let records = (0..300)
            .map(|i| rec(json!({"content": format!("globex {batch} {i} {}", "pad ".repeat(40))})))
            .collect();
        engine.put(&other, &req(), records).unwrap();
    }
    let id = acme.tenant().clone();
    for round in 0..3 {
        let update: TenantUpdate =
            serde_json::from_value(json!({"metadata": {"team": format!("{CANARY} {round}")}}))
                .unwrap();
        engine.update_tenant(&op(), &id, update).unwrap();
    }
    let acme = TenantScope::for_tests(&engine.tenant_meta(&id).unwrap(), common::full_grant());
    let records = (0..50)
        .map(|i| rec(json!({"content": format!("acme {i}")})))
        .collect();
    engine.put(&acme, &req(), records).unwrap();
    engine
        .migrate_tenant(
            &op(),
            &id,
            MigrateRequest {
                target: IsolationLevel::Dedicated,
                index_params: None,
                dry_run: false,
            },
        )
        .unwrap();
    assert!(!files_containing(dir.path(), CANARY.as_bytes()).is_empty());
    engine.purge_tenant(&op(), &id).unwrap();
    no_canary_left(dir.path());
    assert_eq!(engine.count(&other, &req(), None).unwrap(), 1200);
}

/// Purges acme while an export of globex streams (holding a read snapshot) and while its
/// vacuum cannot write its new file (a directory stands where it would be created, so the
/// vacuum is owed); returns once the export has ended, with globex's scope and the directory,
/// whose removal lets the owed vacuum run.
fn purge_acme_during_an_export(dir: &std::path::Path) -> (Engine, TenantScope, std::path::PathBuf) {
    let (engine, acme) = common::open_with_tenant(dir, "acme", common::full_grant());
    drop(engine);
    let (engine, other) = common::open_with_tenant(dir, "globex", common::full_grant());
    let blocker = dir.join(format!("{}.vacuum", strata_engine::DB_FILE));
    std::fs::create_dir(&blocker).unwrap();
    let acme = TenantScope::for_tests(
        &engine.tenant_meta(acme.tenant()).unwrap(),
        common::full_grant(),
    );
    let records = (0..200)
        .map(|i| rec(json!({"content": format!("{CANARY} memory {i}")})))
        .collect();
    engine.put(&acme, &req(), records).unwrap();
    engine
        .put(&other, &req(), vec![rec(json!({"content": "globex"}))])
        .unwrap();
    let (started_tx, started) = std::sync::mpsc::channel::<()>();
    let (release, release_rx) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|s| {
        let (engine, other) = (&engine, &other);
        let exporting = s.spawn(move || {
            let mut first = true;
            engine.export_tenant(&op(), other.tenant(), |_| {
                if std::mem::take(&mut first) {
                    started_tx.send(()).unwrap();
                    release_rx.recv().unwrap();
                }
                Ok(())
            })
        });
        started.recv().unwrap();
        engine.purge_tenant(&op(), acme.tenant()).unwrap();
        assert!(matches!(
            engine.tenant_meta(acme.tenant()),
            Err(EngineError::TenantNotFound(_))
        ));
        release.send(()).unwrap();
        exporting.join().unwrap().unwrap();
    });
    // The vacuum failed: the purge is done, its bytes are still in the file, the vacuum owed.
    assert!(!files_containing(dir, &CANARY.as_bytes()[..20]).is_empty());
    (engine, other, blocker)
}

/// A purge during a long export whose vacuum fails succeeds, and its bytes leave the data
/// directory once the vacuum can run (the owed vacuum's retries).
#[test]
fn a_purge_during_a_long_export_succeeds_and_its_bytes_go_when_the_export_ends() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, other, blocker) = purge_acme_during_an_export(dir.path());
    std::fs::remove_dir(&blocker).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !files_containing(dir.path(), &CANARY.as_bytes()[..20]).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the purged tenant's bytes stayed after the export ended"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(engine.count(&other, &req(), None).unwrap(), 1);
}

/// An engine closed while a compaction is still owed runs it on its way out, so a restart
/// never leaves a purged tenant's bytes behind.
#[test]
fn a_compaction_still_owed_runs_when_the_engine_closes() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, _, blocker) = purge_acme_during_an_export(dir.path());
    // Past the retry thread's first try (which fails), so that the close's try is the one
    // that runs.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(!files_containing(dir.path(), &CANARY.as_bytes()[..20]).is_empty());
    std::fs::remove_dir(&blocker).unwrap();
    drop(engine);
    let left = files_containing(dir.path(), &CANARY.as_bytes()[..20]);
    assert!(left.is_empty(), "canary bytes remain after close: {left:?}");
    let store = strata_store::Store::open(&dir.path().join(strata_engine::DB_FILE)).unwrap();
    assert!(
        !store.compaction_owed().unwrap(),
        "the close's vacuum settled what was owed"
    );
    drop(store);
    let (engine, other) = common::open_with_tenant(dir.path(), "globex", common::full_grant());
    assert_eq!(engine.count(&other, &req(), None).unwrap(), 1);
}

#[test]
fn export_then_import_into_a_new_tenant_reproduces_search_results() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, acme) = common::open_with_tenant(dir.path(), "acme", common::full_grant());
    engine
        .update_tenant(
            &op(),
            acme.tenant(),
            TenantUpdate {
                limits: Some(TenantLimits {
                    max_vectors: Some(10_000),
                    ..Default::default()
                }),
                weight: Some(3),
                ..Default::default()
            },
        )
        .unwrap();
    engine
        .create_collection(
            &acme,
            &CollectionName::parse("small").unwrap(),
            8,
            Metric::L2,
        )
        .unwrap();
    let alice: RequestScope =
        serde_json::from_value(json!({"user_tokens": ["u:alice"], "memory_domain": "dialog"}))
            .unwrap();
    let records: Vec<NewRecord> = (0..1500)
        .map(|i| NewRecord {
            content: Some(format!(
                "memory {i} about {}",
                ["tea", "coffee", "oslo"][i as usize % 3]
            )),
            vector: Some(common::vector(384, i)),
            metadata: json!({"i": i}).as_object().cloned().unwrap(),
            ..Default::default()
        })
        .collect();
    for chunk in records.chunks(500) {
        engine.put(&acme, &alice, chunk.to_vec()).unwrap();
    }
    engine
        .put(
            &acme,
            &req(),
            vec![NewRecord {
                modality: Some(CollectionName::parse("small").unwrap()),
                vector: Some(vec![0.5; 8]),
                ..Default::default()
            }],
        )
        .unwrap();

    let mut jsonl = Vec::new();
    let lines = engine
        .export_tenant(&op(), acme.tenant(), |line| {
            serde_json::to_writer(&mut jsonl, line).unwrap();
            jsonl.push(b'\n');
            Ok(())
        })
        .unwrap();
    // The tenant line, 4 collections, 1501 records, the audit rows of tenant.create,
    // tenant.update, collection.create, the 4 writes and the export itself, and the end line.
    assert_eq!(lines, 1 + 4 + 1501 + 8 + 1);

    let copy = TenantId::parse("acme-copy").unwrap();
    let parsed = jsonl
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| Ok(serde_json::from_slice(l).unwrap()));
    let info = engine.import_tenant(&op(), &copy, parsed).unwrap();
    assert_eq!(info.weight, 3);
    assert_eq!(info.limits.max_vectors, Some(10_000));
    assert_eq!(info.usage.unwrap().vectors, 1501);
    let copy_scope =
        TenantScope::for_tests(&engine.tenant_meta(&copy).unwrap(), common::full_grant());

    let strip = |r: &SearchResponse| {
        r.hits
            .iter()
            .map(|h| (h.id.clone(), h.score, h.record.as_ref().unwrap().created_at))
            .collect::<Vec<_>>()
    };
    for q in 0..5 {
        let s = SearchRequest {
            vector: Some(common::vector(384, 10_000 + q)),
            query: Some("tea".into()),
            k: 10,
            ..Default::default()
        };
        let a = engine.search(&acme, &alice, &s).unwrap();
        let b = engine.search(&copy_scope, &alice, &s).unwrap();
        assert_eq!(a.hits.len(), 10);
        assert_eq!(strip(&a), strip(&b), "query {q}");
    }
    assert_eq!(
        common::all_records(&engine, &copy_scope, "dialog"),
        common::all_records(&engine, &acme, "dialog")
    );
    // The audit history came along, followed by the import itself.
    let history = engine
        .audit_rows(
            &op(),
            &AuditQuery {
                tenant: Some(copy.clone()),
                ..Default::default()
            },
        )
        .unwrap();
    let actions: Vec<&str> = history.iter().rev().map(|r| r.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "tenant.create",
            "tenant.update",
            "collection.create",
            "memory.put",
            "memory.put",
            "memory.put",
            "memory.put",
            "tenant.export",
            "tenant.import"
        ]
    );

    // A broken import leaves no tenant behind.
    let bad = vec![
        Ok(ExportLine::Collection(Collection { name: CollectionName::parse("v").unwrap(), dim: 2, metric: Metric::Dot, created_at: 0, embedder: None, analyzer: Default::default(), memory: Default::default() })),
        Ok(serde_json::from_value(json!({"type": "record", "id": "x", "modality": "v", "kind": null, "content": null, "vector": [1.0], "user_tokens": [], "memory_domain": "default", "run_id": null, "memory_scope": null, "metadata": {}, "created_at": 0, "updated_at": 0, "expires_at": null, "confidence": {"value": 0.5}})).unwrap()),
    ];
    let broken = TenantId::parse("broken").unwrap();
    assert!(matches!(
        engine.import_tenant(&op(), &broken, bad),
        Err(EngineError::BadRequest(_))
    ));
    assert!(matches!(
        engine.tenant(&op(), &broken),
        Err(EngineError::TenantNotFound(_))
    ));
}

#[test]
fn admission_follows_limit_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = common::open_with_tenant(dir.path(), "acme", common::full_grant());
    let a = engine.admission(&scope).unwrap();
    assert_eq!((a.limits.max_qps, a.weight), (None, 1));
    let limits = TenantLimits {
        max_qps: Some(5.0),
        max_concurrent: Some(2),
        ..Default::default()
    };
    engine
        .update_tenant(
            &op(),
            scope.tenant(),
            TenantUpdate {
                limits: Some(limits.clone()),
                weight: Some(4),
                ..Default::default()
            },
        )
        .unwrap();
    let a = engine.admission(&scope).unwrap();
    assert_eq!((a.limits, a.weight), (limits, 4));
    engine.purge_tenant(&op(), scope.tenant()).unwrap();
    assert!(matches!(
        engine.admission(&scope),
        Err(EngineError::TenantNotFound(_))
    ));
}

/// A JWT names its tenant's incarnation only by `iat`, in whole seconds: an id purged just
/// before a restart is not created again in the second its purge committed in, although the
/// restarted engine no longer remembers which ids it purged.
#[test]
fn after_a_restart_an_id_is_not_created_again_in_its_purge_second() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = common::open_with_tenant(dir.path(), "acme", common::full_grant());
    // Late in a second would make the case rare; wait for the start of one instead.
    while now_millis() % 1000 > 100 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    engine.purge_tenant(&op(), scope.tenant()).unwrap();
    let purged = now_millis();
    drop(engine);
    let engine = Engine::open(dir.path(), strata_engine::EngineConfig::default()).unwrap();
    let created = engine
        .create_tenant(&op(), scope.tenant(), None)
        .unwrap()
        .created_at;
    assert!(
        created.div_euclid(1000) > purged.div_euclid(1000),
        "created at {created}, purged at {purged}"
    );
}

/// Rewrites stored state behind a closed engine, as disk corruption or a bad tool would.
fn tamper(dir: &std::path::Path, f: impl FnOnce(&mut strata_store::Writer<'_>)) {
    let store = strata_store::Store::open(&dir.join(strata_engine::DB_FILE)).unwrap();
    store
        .write(|w| {
            f(w);
            Ok::<_, strata_store::StoreError>(())
        })
        .unwrap();
}

fn is_corrupt<T: std::fmt::Debug>(r: Result<T, EngineError>) -> bool {
    matches!(
        r,
        Err(EngineError::Store(strata_store::StoreError::Corrupt(_)))
    )
}

#[test]
fn a_profile_that_does_not_decode_refuses_the_tenant_instead_of_reviving_it() {
    use strata_store::Reads;
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = common::open_with_tenant(dir.path(), "acme", common::full_grant());
    engine
        .put(&scope, &req(), vec![rec(json!({"content": "x"}))])
        .unwrap();
    engine.suspend_tenant(&op(), scope.tenant()).unwrap();
    drop(engine);
    let id = scope.tenant().clone();
    for garbled in [
        json!({"status": "on-holiday", "weight": 1, "limits": {}}),
        json!({"weight": 1, "limits": {}}),
        json!({"status": "suspended", "weight": "heavy", "limits": {}}),
    ] {
        tamper(dir.path(), |w| {
            let mut meta = w.tenant(&id).unwrap().unwrap();
            meta.profile = garbled.as_object().cloned().unwrap();
            w.put_tenant(&meta).unwrap();
        });
        let (engine, _) = common::open_with_tenant(dir.path(), "globex", common::full_grant());
        // Before, each of these read as an active, unlimited tenant.
        assert!(is_corrupt(engine.count(&scope, &req(), None)), "{garbled}");
        assert!(is_corrupt(engine.put(
            &scope,
            &req(),
            vec![rec(json!({"content": "y"}))]
        )));
        assert!(is_corrupt(engine.admission(&scope)));
        assert!(is_corrupt(engine.tenant(&op(), &id)));
        assert!(is_corrupt(engine.tenants(&op())));
    }
}

#[test]
fn usage_that_does_not_decode_refuses_writes_instead_of_switching_quotas_off() {
    use strata_store::Reads;
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = common::open_with_tenant(dir.path(), "acme", common::full_grant());
    engine
        .update_tenant(
            &op(),
            scope.tenant(),
            TenantUpdate {
                limits: Some(TenantLimits {
                    max_vectors: Some(1),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .unwrap();
    let one = || rec(json!({"content": "v", "vector": common::vector(384, 1)}));
    engine.put(&scope, &req(), vec![one()]).unwrap();
    drop(engine);
    let id = scope.tenant().clone();
    for bad in [&b"garbage"[..], b"\x01{\"records\":1}", b"\x07{}"] {
        tamper(dir.path(), |w| {
            let key = w.tenant(&id).unwrap().unwrap().key;
            w.put_blob(key, "usage", bad).unwrap();
        });
        let (engine, _) = common::open_with_tenant(dir.path(), "globex", common::full_grant());
        assert!(
            is_corrupt(engine.put(&scope, &req(), vec![one()])),
            "{bad:?}"
        );
        assert!(is_corrupt(engine.tenant(&op(), &id)));
    }
    // A missing usage value on a tenant with records is corrupt too, not zero.
    tamper(dir.path(), |w| {
        let key = w.tenant(&id).unwrap().unwrap().key;
        w.delete_blob(key, "usage").unwrap();
    });
    let (engine, _) = common::open_with_tenant(dir.path(), "globex", common::full_grant());
    assert!(is_corrupt(engine.put(&scope, &req(), vec![one()])));
}

/// An export carries the tenant's isolation level and graph parameters, and an import ends at
/// the same level (in its own file for `dedicated`) with the same answers.
#[test]
fn an_import_ends_at_the_exported_isolation_level_with_its_graph_parameters() {
    use strata_engine::{IndexParams, IsolationLevel};
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), strata_engine::EngineConfig::default()).unwrap();
    let params = IndexParams {
        m: Some(8),
        ef_construction: Some(64),
        ef_search: Some(48),
    };
    for (n, level) in [IsolationLevel::Dedicated, IsolationLevel::Partition]
        .into_iter()
        .enumerate()
    {
        let id = TenantId::parse(format!("src{n}")).unwrap();
        engine
            .create_tenant_at(&op(), &id, None, level, Some(params))
            .unwrap();
        let scope = TenantScope::for_tests(&engine.tenant_meta(&id).unwrap(), common::full_grant());
        let records: Vec<NewRecord> = (0..50)
            .map(|i| NewRecord {
                content: Some(format!("memory {i}")),
                vector: Some(common::vector(384, i)),
                ..Default::default()
            })
            .collect();
        engine.put(&scope, &req(), records).unwrap();
        let mut lines = Vec::new();
        engine
            .export_tenant(&op(), &id, |line| {
                lines.push(line.clone());
                Ok(())
            })
            .unwrap();
        let copy = TenantId::parse(format!("copy{n}")).unwrap();
        let info = engine
            .import_tenant(&op(), &copy, lines.into_iter().map(Ok))
            .unwrap();
        assert_eq!(info.isolation, level);
        assert_eq!(info.index_params, Some(params));
        assert_eq!(info.status, TenantStatus::Active);
        let copy_scope =
            TenantScope::for_tests(&engine.tenant_meta(&copy).unwrap(), common::full_grant());
        let s = SearchRequest {
            vector: Some(common::vector(384, 7)),
            k: 5,
            ..Default::default()
        };
        let ids = |r: SearchResponse| r.hits.into_iter().map(|h| h.id).collect::<Vec<_>>();
        assert_eq!(
            ids(engine.search(&scope, &req(), &s).unwrap()),
            ids(engine.search(&copy_scope, &req(), &s).unwrap())
        );
        let report = engine.verify_tenant(&op(), &copy).unwrap();
        assert!(report.ok, "{report:?}");
        assert_eq!(report.dedicated_file, level == IsolationLevel::Dedicated);
    }
}

/// A policy that moves at the first sample and holds the tenant to a latency no search meets.
fn hair_trigger() -> strata_engine::IntegrityPolicy {
    strata_engine::IntegrityPolicy {
        latency_contract_ms: 1e-9,
        consecutive: 1,
        cooldown_ms: 0,
        ..Default::default()
    }
}

fn set_policy(engine: &Engine, id: &TenantId, p: Option<strata_engine::IntegrityPolicy>) {
    let update = TenantUpdate {
        integrity_policy: Some(p.as_ref().map(IntegrityPolicyInput::from)),
        ..Default::default()
    };
    engine.update_tenant(&op(), id, update).unwrap();
}

/// The tenant's own policy (registry) wins over the configuration's override for it, which
/// wins over the configuration's default; `null` gives the tenant back to the configuration.
/// The own policy is the one its searches are sampled against, not only the one shown.
#[test]
fn the_tenants_own_integrity_policy_wins_and_clearing_it_returns_to_the_config() {
    use strata_engine::{IntegrityState, PolicySource};
    let dir = tempfile::tempdir().unwrap();
    let overridden = strata_engine::IntegrityPolicy {
        consecutive: 9,
        ..Default::default()
    };
    let mut config = strata_engine::EngineConfig::default();
    config
        .integrity
        .tenants
        .insert("acme".into(), overridden.clone());
    let engine = Engine::open(dir.path(), config).unwrap();
    let (acme, globex) = (
        TenantId::parse("acme").unwrap(),
        TenantId::parse("globex").unwrap(),
    );
    engine.create_tenant(&op(), &acme, None).unwrap();
    let spec = strata_engine::NewTenantSpec {
        integrity_policy: Some((&hair_trigger()).into()),
        ..Default::default()
    };
    let info = engine.create_tenant_with(&op(), &globex, spec).unwrap();
    assert_eq!(info.integrity_policy, Some(hair_trigger()));

    let shown = |id: &TenantId| {
        let i = engine.integrity(&op(), id).unwrap();
        (i.policy, i.policy_source)
    };
    assert_eq!(
        shown(&acme),
        (overridden.clone(), PolicySource::ConfigTenant)
    );
    assert_eq!(shown(&globex), (hair_trigger(), PolicySource::Tenant));
    set_policy(&engine, &acme, Some(hair_trigger()));
    assert_eq!(shown(&acme), (hair_trigger(), PolicySource::Tenant));
    assert_eq!(
        engine.tenant(&op(), &acme).unwrap().integrity_policy,
        Some(hair_trigger())
    );

    // One search of each tenant held to the hair trigger makes it critical.
    let search = |id: &TenantId| {
        let scope = TenantScope::for_tests(&engine.tenant_meta(id).unwrap(), common::full_grant());
        engine
            .put(&scope, &req(), vec![rec(json!({"content": "kept"}))])
            .unwrap();
        let s = SearchRequest {
            query: Some("kept".into()),
            ..Default::default()
        };
        engine.search(&scope, &req(), &s).unwrap();
        engine.integrity(&op(), id).unwrap().state
    };
    assert_eq!(search(&globex), IntegrityState::Critical);

    set_policy(&engine, &acme, None);
    assert_eq!(shown(&acme), (overridden, PolicySource::ConfigTenant));
    assert_eq!(engine.tenant(&op(), &acme).unwrap().integrity_policy, None);
    // Back on the configuration's policy (no latency contract): searches move nothing.
    assert_eq!(search(&acme), IntegrityState::Normal);
    let plain = TenantId::parse("plain").unwrap();
    engine.create_tenant(&op(), &plain, None).unwrap();
    assert_eq!(shown(&plain).1, PolicySource::ConfigDefault);
}

/// A change of the tenant's own policy reaches the policy its searches are sampled against
/// even after a search filled the admission cache with the old one.
#[test]
fn a_policy_change_replaces_the_cached_policy() {
    use strata_engine::IntegrityState;
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), Default::default()).unwrap();
    let id = TenantId::parse("acme").unwrap();
    let lenient = strata_engine::IntegrityPolicy {
        latency_contract_ms: 1e9,
        consecutive: 1,
        cooldown_ms: 0,
        ..Default::default()
    };
    let spec = strata_engine::NewTenantSpec {
        integrity_policy: Some((&lenient).into()),
        ..Default::default()
    };
    engine.create_tenant_with(&op(), &id, spec).unwrap();
    let scope = TenantScope::for_tests(&engine.tenant_meta(&id).unwrap(), common::full_grant());
    engine
        .put(&scope, &req(), vec![rec(json!({"content": "kept"}))])
        .unwrap();
    let search = || {
        let s = SearchRequest {
            query: Some("kept".into()),
            ..Default::default()
        };
        engine.search(&scope, &req(), &s).unwrap();
        engine.integrity(&op(), &id).unwrap().state
    };
    // Fills the cache with the lenient policy.
    assert_eq!(search(), IntegrityState::Normal);
    engine.admission(&scope).unwrap();
    set_policy(&engine, &id, Some(hair_trigger()));
    assert_eq!(search(), IntegrityState::Critical);
}

/// Every threshold is checked at creation and in a change, and the refusal names the field.
#[test]
fn an_integrity_policy_out_of_range_is_refused_naming_its_field() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = common::open_with_tenant(dir.path(), "acme", common::full_grant());
    let base = strata_engine::IntegrityPolicy::default();
    let cases = [
        (
            strata_engine::IntegrityPolicy {
                stress_exit: 2.0,
                ..base.clone()
            },
            "integrity_policy.stress_enter",
        ),
        (
            strata_engine::IntegrityPolicy {
                critical_exit: 5.0,
                ..base.clone()
            },
            "integrity_policy.critical_enter",
        ),
        (
            strata_engine::IntegrityPolicy {
                consecutive: 0,
                ..base.clone()
            },
            "integrity_policy.consecutive",
        ),
        (
            strata_engine::IntegrityPolicy {
                latency_contract_ms: -1.0,
                ..base.clone()
            },
            "integrity_policy.latency_contract_ms",
        ),
        (
            strata_engine::IntegrityPolicy {
                queue_wait_contract_ms: f64::INFINITY,
                ..base.clone()
            },
            "integrity_policy.queue_wait_contract_ms",
        ),
        (
            strata_engine::IntegrityPolicy {
                stress_exit: f64::NAN,
                ..base.clone()
            },
            "integrity_policy.stress_exit",
        ),
    ];
    for (n, (policy, field)) in cases.into_iter().enumerate() {
        let update = TenantUpdate {
            integrity_policy: Some(Some((&policy).into())),
            ..Default::default()
        };
        match engine.update_tenant(&op(), scope.tenant(), update) {
            Err(EngineError::BadRequest(m)) => assert!(m.starts_with(field), "{m}"),
            other => panic!("{field}: {other:?}"),
        }
        let spec = strata_engine::NewTenantSpec {
            integrity_policy: Some((&policy).into()),
            ..Default::default()
        };
        let id = TenantId::parse(format!("t{n}")).unwrap();
        match engine.create_tenant_with(&op(), &id, spec) {
            Err(EngineError::BadRequest(m)) => assert!(m.starts_with(field), "{m}"),
            other => panic!("{field}: {other:?}"),
        }
    }
    assert_eq!(
        engine
            .tenant(&op(), scope.tenant())
            .unwrap()
            .integrity_policy,
        None
    );
}

/// A profile stored before policies and `updated_at` existed still reads, its `updated_at`
/// its creation time and no policy of its own.
#[test]
fn older_rows_without_a_policy_or_updated_at_keep_working() {
    use strata_store::Reads;
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = common::open_with_tenant(dir.path(), "acme", common::full_grant());
    drop(engine);
    let id = scope.tenant().clone();
    let old = json!({"status": "active", "weight": 1, "limits": {}, "display_name": null,
                     "deleted_at": null});
    tamper(dir.path(), |w| {
        let mut meta = w.tenant(&id).unwrap().unwrap();
        meta.profile = old.as_object().cloned().unwrap();
        w.put_tenant(&meta).unwrap();
    });
    let (engine, _) = common::open_with_tenant(dir.path(), "globex", common::full_grant());
    let info = engine.tenant(&op(), &id).unwrap();
    assert_eq!(
        (info.updated_at, info.integrity_policy),
        (info.created_at, None)
    );
    engine.count(&scope, &req(), None).unwrap();
}

/// A stored policy that does not decode closed (a field missing, one out of range, one
/// unknown: damage, or a newer version's) fails only its own tenant's requests, with an
/// error naming the repair; the tenant's profile, every other tenant, the lists and the
/// hierarchy still read; `integrity_policy: null` removes it without reading it.
#[test]
fn an_unreadable_stored_policy_blocks_only_its_tenant_until_replaced() {
    use strata_store::Reads;
    let damaged = [
        // Every field but one, written by the engine's rules otherwise.
        {
            let mut full = serde_json::to_value(strata_engine::IntegrityPolicy::default()).unwrap();
            full.as_object_mut().unwrap().remove("cooldown_ms");
            full
        },
        {
            let mut full = serde_json::to_value(strata_engine::IntegrityPolicy::default()).unwrap();
            full["stress_exit"] = json!(3.0);
            full
        },
        {
            let mut full = serde_json::to_value(strata_engine::IntegrityPolicy::default()).unwrap();
            full["from_a_newer_version"] = json!(1);
            full
        },
    ];
    for policy in damaged {
        let dir = tempfile::tempdir().unwrap();
        let (engine, scope) = common::open_with_tenant(dir.path(), "acme", common::full_grant());
        let globex = TenantId::parse("globex").unwrap();
        let spec = strata_engine::NewTenantSpec {
            parent: Some(scope.tenant().clone()),
            ..Default::default()
        };
        engine.create_tenant_with(&op(), &globex, spec).unwrap();
        drop(engine);
        let id = scope.tenant().clone();
        tamper(dir.path(), |w| {
            let mut meta = w.tenant(&id).unwrap().unwrap();
            meta.profile
                .insert("integrity_policy".into(), policy.clone());
            w.put_tenant(&meta).unwrap();
        });
        let engine = Engine::open(dir.path(), Default::default()).unwrap();

        // The tenant's own requests: refused, naming the repair.
        let refused = |e: EngineError| {
            let m = e.to_string();
            assert!(m.contains("integrity_policy") && m.contains("null"), "{m}");
        };
        refused(engine.admission(&scope).unwrap_err());
        let s = SearchRequest {
            query: Some("x".into()),
            ..Default::default()
        };
        refused(engine.search(&scope, &req(), &s).unwrap_err());
        refused(engine.integrity(&op(), &id).unwrap_err());
        // Everything else reads: its own view (the policy left out), the other tenant (whose
        // view lists its parent's children), the list.
        assert_eq!(engine.tenant(&op(), &id).unwrap().integrity_policy, None);
        assert_eq!(
            engine.tenant(&op(), &globex).unwrap().parent,
            Some(id.clone())
        );
        assert_eq!(engine.tenants(&op()).unwrap().len(), 2);
        engine.integrity(&op(), &globex).unwrap();
        // Verify reports it, naming the repair, and answers; the other tenant verifies clean.
        let report = engine.verify_tenant(&op(), &id).unwrap();
        assert!(!report.ok && report.problem_count == 1, "{report:?}");
        let p = &report.problems[0];
        assert!(p.contains("integrity_policy") && p.contains("null"), "{p}");
        assert!(engine.verify_tenant(&op(), &globex).unwrap().ok);

        // The repair: removed without being read, then the tenant works again.
        let repair = TenantUpdate {
            integrity_policy: Some(None),
            ..Default::default()
        };
        engine.update_tenant(&op(), &id, repair).unwrap();
        assert!(engine.verify_tenant(&op(), &id).unwrap().ok);
        engine.admission(&scope).unwrap();
        engine.search(&scope, &req(), &s).unwrap();
        assert_eq!(
            engine.integrity(&op(), &id).unwrap().policy_source,
            strata_engine::PolicySource::ConfigDefault
        );
    }
}

/// A registry row whose profile does not decode, or which does not decode at all, is a
/// problem verify reports (naming the repair) rather than a verify that fails; another
/// tenant's damaged row does not fail the verify of a sound one.
#[test]
fn verify_reports_a_damaged_registry_row_instead_of_failing() {
    use strata_store::Reads;
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = common::open_with_tenant(dir.path(), "acme", common::full_grant());
    let (globex, initech) = (
        TenantId::parse("globex").unwrap(),
        TenantId::parse("initech").unwrap(),
    );
    engine.create_tenant(&op(), &globex, None).unwrap();
    engine.create_tenant(&op(), &initech, None).unwrap();
    drop(engine);
    let id = scope.tenant().clone();
    tamper(dir.path(), |w| {
        let mut meta = w.tenant(&id).unwrap().unwrap();
        meta.profile.insert("status".into(), json!("zombie"));
        w.put_tenant(&meta).unwrap();
        w.put_registry_bytes_for_tests(&globex, b"{\"key\":")
            .unwrap();
    });
    let engine = Engine::open(dir.path(), Default::default()).unwrap();

    let report = engine.verify_tenant(&op(), &id).unwrap();
    assert!(!report.ok && report.problem_count == 1, "{report:?}");
    assert!(report.problems[0].contains("profile"), "{report:?}");
    assert!(report.problems[0].contains("purge"), "{report:?}");

    let report = engine.verify_tenant(&op(), &globex).unwrap();
    assert!(!report.ok && report.problem_count == 1, "{report:?}");
    let p = &report.problems[0];
    assert!(p.starts_with("registry row does not decode ("), "{p}");
    assert!(
        p.ends_with(
            "): its storage key is unknown, so nothing else was checked; the tenant's \
             requests fail until the row is restored from a backup"
        ),
        "{p}"
    );
    assert!(!p.contains("  "), "{p}");

    let report = engine.verify_tenant(&op(), &initech).unwrap();
    assert!(report.ok, "{report:?}");
    assert!(
        report.warnings.iter().any(|w| w.contains("\"globex\"")),
        "{report:?}"
    );
}

/// A partial policy in a `PATCH` keeps the fields it leaves out at the values in force: the
/// configuration's latency contract survives a change of `consecutive` alone, and a later
/// partial change keeps the tenant's own fields.
#[test]
fn a_partial_policy_keeps_the_values_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = strata_engine::EngineConfig::default();
    config.integrity.default.latency_contract_ms = 40.0;
    let engine = Engine::open(dir.path(), config).unwrap();
    let id = TenantId::parse("acme").unwrap();
    engine.create_tenant(&op(), &id, None).unwrap();
    let patch = |input: IntegrityPolicyInput| {
        let update = TenantUpdate {
            integrity_policy: Some(Some(input)),
            ..Default::default()
        };
        engine
            .update_tenant(&op(), &id, update)
            .unwrap()
            .integrity_policy
            .unwrap()
    };
    let p = patch(IntegrityPolicyInput {
        consecutive: Some(2),
        ..Default::default()
    });
    assert_eq!((p.consecutive, p.latency_contract_ms), (2, 40.0));
    let p = patch(IntegrityPolicyInput {
        cooldown_ms: Some(5),
        ..Default::default()
    });
    assert_eq!(
        (p.consecutive, p.latency_contract_ms, p.cooldown_ms),
        (2, 40.0, 5)
    );
    assert_eq!(engine.integrity(&op(), &id).unwrap().policy, p);
}

/// `updated_at` is the creation time at first, and moves with every change of the registry
/// entry: a patch (metadata alone too), a suspension, a resumption, a level change.
#[test]
fn updated_at_follows_every_change_of_the_registry_entry() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), strata_engine::EngineConfig::default()).unwrap();
    let id = TenantId::parse("acme").unwrap();
    let created = engine.create_tenant(&op(), &id, None).unwrap();
    assert_eq!(created.updated_at, created.created_at);
    // Each change must land on a later millisecond to be told from the one before.
    let later = |before: Millis| {
        while now_millis() <= before {
            std::thread::yield_now();
        }
    };
    let mut last = created.updated_at;
    type Change<'a> = Box<dyn Fn() -> strata_engine::TenantInfo + 'a>;
    let changes: Vec<(&str, Change<'_>)> = vec![
        (
            "patch",
            Box::new(|| {
                let u = TenantUpdate {
                    weight: Some(2),
                    ..Default::default()
                };
                engine.update_tenant(&op(), &id, u).unwrap()
            }),
        ),
        (
            "metadata",
            Box::new(|| {
                let u = TenantUpdate {
                    metadata: Some(json!({"plan": "pro"})),
                    ..Default::default()
                };
                engine.update_tenant(&op(), &id, u).unwrap()
            }),
        ),
        (
            "suspend",
            Box::new(|| engine.suspend_tenant(&op(), &id).unwrap()),
        ),
        (
            "resume",
            Box::new(|| engine.resume_tenant(&op(), &id).unwrap()),
        ),
        (
            "level",
            Box::new(|| {
                let req = strata_engine::MigrateRequest {
                    target: strata_engine::IsolationLevel::Partition,
                    index_params: None,
                    dry_run: false,
                };
                engine.migrate_tenant(&op(), &id, req).unwrap();
                engine.tenant(&op(), &id).unwrap()
            }),
        ),
    ];
    for (what, change) in changes {
        later(last);
        let answered = change();
        let shown = engine.tenant(&op(), &id).unwrap();
        assert!(shown.updated_at > last, "{what}: {shown:?}");
        assert_eq!(answered.updated_at, shown.updated_at, "{what}");
        assert_eq!(shown.created_at, created.created_at, "{what}");
        last = shown.updated_at;
    }
}

/// A display name is set, kept by an update that does not name it, and removed by `null`.
#[test]
fn a_display_name_is_kept_unless_named_and_removed_by_null() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, acme) = common::open_with_tenant(dir.path(), "acme", common::full_grant());
    let set = TenantUpdate {
        display_name: Some(Some("Acme".into())),
        ..Default::default()
    };
    let info = engine.update_tenant(&op(), acme.tenant(), set).unwrap();
    assert_eq!(info.display_name.as_deref(), Some("Acme"));
    let other = TenantUpdate {
        weight: Some(2),
        ..Default::default()
    };
    let info = engine.update_tenant(&op(), acme.tenant(), other).unwrap();
    assert_eq!(info.display_name.as_deref(), Some("Acme"));
    let cleared: TenantUpdate = serde_json::from_value(json!({"display_name": null})).unwrap();
    assert_eq!(cleared.display_name, Some(None));
    let info = engine.update_tenant(&op(), acme.tenant(), cleared).unwrap();
    assert_eq!(info.display_name, None);
}

/// The tenant's own integrity policy travels with its export; and an operator's `PATCH` that
/// commits while an import runs (the tenant exists, suspended) is superseded whole by the
/// import's activation, never half kept: before, its metadata survived (merged into the
/// imported keys) while its display name was lost. A `PATCH` after the import applies.
#[test]
fn an_import_lands_whole_over_a_patch_made_while_it_ran() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, acme) = common::open_with_tenant(dir.path(), "acme", common::full_grant());
    let exported = TenantUpdate {
        display_name: Some(Some("Acme".into())),
        metadata: Some(json!({"team": "search", "plan": "pro"})),
        integrity_policy: Some(Some((&hair_trigger()).into())),
        ..Default::default()
    };
    engine
        .update_tenant(&op(), acme.tenant(), exported)
        .unwrap();
    engine
        .put(&acme, &req(), vec![rec(json!({"content": "kept"}))])
        .unwrap();
    let mut lines = Vec::new();
    engine
        .export_tenant(&op(), acme.tenant(), |l| {
            lines.push(l.clone());
            Ok(())
        })
        .unwrap();

    let copy = TenantId::parse("copy").unwrap();
    let patched = std::cell::Cell::new(false);
    let during = lines.into_iter().enumerate().map(|(n, line)| {
        if n == 1 {
            // The tenant line has been read; the operator patches the tenant meanwhile.
            let u = TenantUpdate {
                display_name: Some(Some("mid-import".into())),
                metadata: Some(json!({"plan": null, "patched": true})),
                ..Default::default()
            };
            engine.update_tenant(&op(), &copy, u).unwrap();
            patched.set(true);
        }
        Ok(line)
    });
    let info = engine.import_tenant(&op(), &copy, during).unwrap();
    assert!(patched.get());
    let shown = engine.tenant(&op(), &copy).unwrap();
    assert_eq!(shown, info);
    assert_eq!(
        (shown.display_name.as_deref(), shown.metadata.clone()),
        (
            Some("Acme"),
            json!({"team": "search", "plan": "pro"})
                .as_object()
                .cloned()
        ),
        "the import's profile and metadata, whole"
    );
    assert_eq!(shown.integrity_policy, Some(hair_trigger()));
    assert_eq!(shown.status, TenantStatus::Active);

    let after = TenantUpdate {
        metadata: Some(json!({"patched": true})),
        ..Default::default()
    };
    let v = engine.update_tenant(&op(), &copy, after).unwrap();
    assert_eq!(
        v.metadata,
        json!({"team": "search", "plan": "pro", "patched": true})
            .as_object()
            .cloned()
    );
}

/// The export of a tenant with one record, for the import tests.
/// An import cut short (here by a panic of its line source, which, like a crash, skips the
/// failed import's own clean-up) leaves a suspended tenant with part of its data. It cannot be
/// resumed, and the next start discards it, so an import stays all or nothing.
#[test]
fn an_import_cut_short_is_discarded_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, acme) = common::open_with_tenant(dir.path(), "acme", common::full_grant());
    let records = (0..20)
        .map(|i| rec(json!({"content": format!("memory {i}")})))
        .collect();
    engine.put(&acme, &req(), records).unwrap();
    let lines = exported_lines(&engine, &acme);
    let held = engine.count(&acme, &req(), None).unwrap();
    let copy = TenantId::parse("copy").unwrap();
    let half = lines.len() / 2;
    let cut = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let source = lines.into_iter().enumerate().map(|(n, line)| {
            assert!(n < half, "the process stops here");
            Ok(line)
        });
        engine.import_tenant(&op(), &copy, source)
    }));
    assert!(cut.is_err());
    let left = engine.tenant(&op(), &copy).unwrap();
    assert_eq!(left.status, strata_engine::TenantStatus::Suspended);
    assert!(matches!(
        engine.resume_tenant(&op(), &copy),
        Err(EngineError::IdConflict(_))
    ));
    // Nor brought back by a delete and a restore.
    engine.delete_tenant(&op(), &copy).unwrap();
    assert!(matches!(
        engine.restore_tenant(&op(), &copy),
        Err(EngineError::IdConflict(_))
    ));
    drop(engine);
    let engine = Engine::open(dir.path(), strata_engine::EngineConfig::default()).unwrap();
    let runs = engine.vacuum_figures().runs;
    assert_eq!(
        engine.discard_interrupted_imports(&op()).unwrap(),
        std::slice::from_ref(&copy)
    );
    assert!(matches!(
        engine.tenant(&op(), &copy),
        Err(EngineError::TenantNotFound(_))
    ));
    // Its bytes leave the file in a vacuum the start does not wait for.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while engine.vacuum_figures().erasure_pending || engine.vacuum_figures().runs == runs {
        assert!(std::time::Instant::now() < deadline, "no vacuum ran");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The other tenant is untouched, and a completed import is not discarded.
    assert_eq!(engine.count(&acme, &req(), None).unwrap(), held);
    let lines = exported_lines(&engine, &acme);
    engine
        .import_tenant(&op(), &copy, lines.into_iter().map(Ok))
        .unwrap();
    assert!(
        engine
            .discard_interrupted_imports(&op())
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        engine.tenant(&op(), &copy).unwrap().status,
        strata_engine::TenantStatus::Active
    );
}

fn exported_lines(engine: &Engine, acme: &TenantScope) -> Vec<strata_engine::ExportLine> {
    engine
        .put(acme, &req(), vec![rec(json!({"content": "kept"}))])
        .unwrap();
    let mut lines = Vec::new();
    engine
        .export_tenant(&op(), acme.tenant(), |l| {
            lines.push(l.clone());
            Ok(())
        })
        .unwrap();
    lines
}

/// An export carries the tenant's own integrity policy whole, and an import decodes it
/// closed: today's export round-trips (through its JSON text, as the HTTP import reads it),
/// while a policy missing a field or carrying an unknown one is refused naming it, never
/// completed with defaults.
#[test]
fn an_imported_integrity_policy_is_decoded_closed() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, acme) = common::open_with_tenant(dir.path(), "acme", common::full_grant());
    set_policy(&engine, acme.tenant(), Some(hair_trigger()));
    let lines = exported_lines(&engine, &acme);
    let text: Vec<String> = lines
        .iter()
        .map(|l| serde_json::to_string(l).unwrap())
        .collect();
    let header: serde_json::Value = serde_json::from_str(&text[0]).unwrap();
    let written = header["integrity_policy"].as_object().unwrap();
    let full = serde_json::to_value(strata_engine::IntegrityPolicy::default()).unwrap();
    assert_eq!(written.len(), full.as_object().unwrap().len(), "{header}");

    let parsed = |text: &[String]| -> Vec<Result<strata_engine::ExportLine, EngineError>> {
        text.iter()
            .map(|t| Ok(serde_json::from_str(t).unwrap()))
            .collect()
    };
    let copy = TenantId::parse("copy").unwrap();
    engine.import_tenant(&op(), &copy, parsed(&text)).unwrap();
    assert_eq!(
        engine.tenant(&op(), &copy).unwrap().integrity_policy,
        Some(hair_trigger())
    );

    // A field left out, and one no version of the server writes.
    for (field, unknown) in [("cooldown_ms", false), ("from_a_newer_version", true)] {
        let mut header = header.clone();
        let policy = header["integrity_policy"].as_object_mut().unwrap();
        if unknown {
            policy.insert(field.into(), json!(1));
        } else {
            policy.remove(field);
        }
        let mut text = text.clone();
        text[0] = header.to_string();
        let bad = TenantId::parse("bad").unwrap();
        let e = engine
            .import_tenant(&op(), &bad, parsed(&text))
            .unwrap_err();
        let m = e.to_string();
        assert!(matches!(e, EngineError::BadRequest(_)), "{field}: {e:?}");
        assert!(m.starts_with("import line 1: integrity_policy"), "{m}");
        assert!(m.contains(field), "{m}");
        assert!(matches!(
            engine.tenant(&op(), &bad),
            Err(EngineError::TenantNotFound(_))
        ));
    }
}

/// A tenant purged and created again while an import of the same id ran is someone else's
/// tenant: the import fails and leaves it untouched (neither overwritten nor purged).
#[test]
fn an_import_never_lands_on_a_tenant_recreated_while_it_ran() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, acme) = common::open_with_tenant(dir.path(), "acme", common::full_grant());
    let lines = exported_lines(&engine, &acme);
    let copy = TenantId::parse("copy").unwrap();
    let during = lines.into_iter().enumerate().map(|(n, line)| {
        if n == 1 {
            engine.purge_tenant(&op(), &copy).unwrap();
            let spec = strata_engine::NewTenantSpec {
                display_name: Some("the new one".into()),
                ..Default::default()
            };
            engine.create_tenant_with(&op(), &copy, spec).unwrap();
        }
        Ok(line)
    });
    assert!(engine.import_tenant(&op(), &copy, during).is_err());
    let survivor = engine.tenant(&op(), &copy).unwrap();
    assert_eq!(survivor.display_name.as_deref(), Some("the new one"));
    assert_eq!(survivor.status, TenantStatus::Active);
    assert_eq!(survivor.usage.unwrap().records, 0);
}

/// A delete made while an import ran wins: the import fails and nothing of it remains.
#[test]
fn a_delete_made_while_an_import_ran_wins() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, acme) = common::open_with_tenant(dir.path(), "acme", common::full_grant());
    let lines = exported_lines(&engine, &acme);
    let copy = TenantId::parse("copy").unwrap();
    let during = lines.into_iter().enumerate().map(|(n, line)| {
        if n == 1 {
            engine.delete_tenant(&op(), &copy).unwrap();
        }
        Ok(line)
    });
    assert!(matches!(
        engine.import_tenant(&op(), &copy, during),
        Err(EngineError::TenantNotFound(_))
    ));
    assert!(matches!(
        engine.tenant(&op(), &copy),
        Err(EngineError::TenantNotFound(_))
    ));
}

/// A configuration's `critical_enter = inf` (never entered) survives being stored: a partial
/// `PATCH` keeps it (stored as `"inf"`, not the `null` serde_json writes for +inf, which the
/// closed decoder would refuse), the tenant is shown and searched, the API shows `"inf"`, and
/// an export of the policy imports back to the same policy. A row written as `null` by
/// earlier versions reads as +inf, for an enter threshold only.
#[test]
fn an_infinite_enter_threshold_is_stored_shown_and_exported() {
    use strata_store::Reads;
    let dir = tempfile::tempdir().unwrap();
    let mut config = strata_engine::EngineConfig::default();
    config.integrity.default.critical_enter = f64::INFINITY;
    let engine = Engine::open(dir.path(), config.clone()).unwrap();
    let id = TenantId::parse("acme").unwrap();
    engine.create_tenant(&op(), &id, None).unwrap();
    let update = TenantUpdate {
        integrity_policy: Some(Some(IntegrityPolicyInput {
            consecutive: Some(2),
            ..Default::default()
        })),
        ..Default::default()
    };
    let shown = engine.update_tenant(&op(), &id, update).unwrap();
    let p = shown.integrity_policy.clone().unwrap();
    assert_eq!((p.critical_enter, p.consecutive), (f64::INFINITY, 2));
    let json = serde_json::to_value(&shown).unwrap();
    assert_eq!(
        json["integrity_policy"]["critical_enter"],
        json!("inf"),
        "{json}"
    );
    assert_eq!(
        serde_json::to_value(engine.integrity(&op(), &id).unwrap().policy).unwrap()["critical_enter"],
        json!("inf")
    );
    assert_eq!(
        engine.tenant(&op(), &id).unwrap().integrity_policy,
        Some(p.clone())
    );
    let scope = TenantScope::for_tests(&engine.tenant_meta(&id).unwrap(), common::full_grant());
    engine.admission(&scope).unwrap();
    let s = SearchRequest {
        query: Some("x".into()),
        ..Default::default()
    };
    engine.search(&scope, &req(), &s).unwrap();
    assert!(engine.verify_tenant(&op(), &id).unwrap().ok);

    // Export → JSON text → import: the same policy.
    let text: Vec<String> = exported_lines(&engine, &scope)
        .iter()
        .map(|l| serde_json::to_string(l).unwrap())
        .collect();
    assert!(
        text[0].contains("\"critical_enter\":\"inf\""),
        "{}",
        text[0]
    );
    let lines = text.iter().map(|t| Ok(serde_json::from_str(t).unwrap()));
    let copy = TenantId::parse("copy").unwrap();
    engine.import_tenant(&op(), &copy, lines).unwrap();
    assert_eq!(
        engine.tenant(&op(), &copy).unwrap().integrity_policy,
        Some(p.clone())
    );

    // A row written by the earlier form: `null` for +inf reads back as +inf in an enter
    // threshold, and still refuses the tenant in an exit threshold.
    drop(engine);
    for (field, readable) in [("critical_enter", true), ("critical_exit", false)] {
        tamper(dir.path(), |w| {
            let mut meta = w.tenant(&id).unwrap().unwrap();
            let mut stored = meta.profile["integrity_policy"].clone();
            stored[field] = serde_json::Value::Null;
            meta.profile.insert("integrity_policy".into(), stored);
            w.put_tenant(&meta).unwrap();
        });
        let engine = Engine::open(dir.path(), config.clone()).unwrap();
        let got = engine.tenant(&op(), &id).unwrap().integrity_policy;
        if readable {
            assert_eq!(got, Some(p.clone()));
            engine.admission(&scope).unwrap();
        } else {
            assert_eq!(got, None);
            assert!(engine.admission(&scope).is_err());
        }
    }
}

/// A burst is the size of the `max_qps` bucket: alone it would be stored and never hold, so
/// creation and `PATCH` refuse it, naming the field, and a change that drops the rate under a
/// burst is refused too, leaving the limits in force as they were.
#[test]
fn a_burst_without_a_rate_is_refused_at_create_and_update() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = common::open_with_tenant(dir.path(), "acme", common::full_grant());
    let burst_alone = TenantLimits {
        burst: Some(5),
        ..Default::default()
    };
    let refused = |e: EngineError| matches!(&e, EngineError::BadRequest(m) if m.starts_with("limits.burst: needs limits.max_qps"));
    let new = TenantId::parse("solo").unwrap();
    let e = engine
        .create_tenant_with(
            &op(),
            &new,
            strata_engine::NewTenantSpec {
                limits: Some(burst_alone.clone()),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(refused(e));
    assert!(engine.tenant(&op(), &new).is_err(), "nothing was created");
    let with_rate = TenantLimits {
        max_qps: Some(5.0),
        burst: Some(5),
        ..Default::default()
    };
    let update = |limits: TenantLimits| {
        engine.update_tenant(
            &op(),
            scope.tenant(),
            TenantUpdate {
                limits: Some(limits),
                ..Default::default()
            },
        )
    };
    assert!(refused(update(burst_alone.clone()).unwrap_err()));
    update(with_rate.clone()).unwrap();
    // Dropping the rate while the burst stays: refused, the bucket left as it was.
    assert!(refused(update(burst_alone).unwrap_err()));
    assert_eq!(engine.admission(&scope).unwrap().limits, with_rate);
    // Dropping both removes the bucket.
    update(TenantLimits::default()).unwrap();
    assert_eq!(
        engine.admission(&scope).unwrap().limits,
        TenantLimits::default()
    );
}

/// A tenant change's audit row names the fields it changed, not their values, and never the
/// operator's metadata (the row is in the tenant's own log); a change that changes nothing
/// writes nothing but its row, which says so, and keeps `updated_at`.
#[test]
fn a_tenant_change_is_audited_with_what_it_changed() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), Default::default()).unwrap();
    let acme = TenantId::parse("acme").unwrap();
    engine.create_tenant(&op(), &acme, None).unwrap();
    let last_row = || {
        engine
            .audit_rows(
                &op(),
                &AuditQuery {
                    tenant: Some(acme.clone()),
                    ..Default::default()
                },
            )
            .unwrap()
            .remove(0)
    };
    let update = TenantUpdate {
        weight: Some(3),
        metadata: Some(json!({"plan": "gold"})),
        ..Default::default()
    };
    let changed = engine.update_tenant(&op(), &acme, update.clone()).unwrap();
    let row = last_row();
    assert_eq!(row.action, "tenant.update");
    assert_eq!(row.detail, json!({"changed": ["weight"]}));
    assert!(!row.detail.to_string().contains("gold"), "{:?}", row.detail);
    // The same again changes nothing, metadata included.
    let unchanged = engine.update_tenant(&op(), &acme, update).unwrap();
    assert_eq!(unchanged.updated_at, changed.updated_at);
    assert_eq!(last_row().detail, json!({"changed": []}));
    let limits = TenantUpdate {
        limits_patch: Some(json!({"max_vectors": 10}).as_object().unwrap().clone()),
        ..Default::default()
    };
    engine.update_tenant(&op(), &acme, limits).unwrap();
    assert_eq!(last_row().detail, json!({"changed": ["limits"]}));
    engine.suspend_tenant(&op(), &acme).unwrap();
    assert_eq!(last_row().detail, json!({"changed": ["status"]}));
}

/// A data directory given as a file is refused as such, not with the file system's "File
/// exists" from creating it.
#[test]
fn a_data_directory_that_is_a_file_is_refused_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data");
    std::fs::write(&file, b"x").unwrap();
    match Engine::open(&file, Default::default()) {
        Ok(_) => panic!("opened a file as the data directory"),
        Err(e) => assert!(e.to_string().contains("is a file, not a directory"), "{e}"),
    }
}

/// A tenant is created with the server's default collections, so a `max_collections` below
/// their number would start it past its own quota: refused, naming the field, and no tenant
/// is left.
#[test]
fn a_collection_quota_below_the_default_collections_is_refused_at_creation() {
    let dir = tempfile::tempdir().unwrap();
    let config = strata_engine::EngineConfig::default();
    let defaults = config.default_collections.len() as u64;
    let engine = Engine::open(dir.path(), config).unwrap();
    let id = TenantId::parse("small").unwrap();
    let spec = |max| strata_engine::NewTenantSpec {
        limits: Some(strata_engine::TenantLimits {
            max_collections: Some(max),
            ..Default::default()
        }),
        ..Default::default()
    };
    let err = engine
        .create_tenant_with(&op(), &id, spec(defaults - 1))
        .unwrap_err();
    assert!(
        matches!(&err, EngineError::BadRequest(m) if m.starts_with("limits.max_collections")),
        "{err}"
    );
    assert!(engine.tenant(&op(), &id).is_err());
    let info = engine
        .create_tenant_with(&op(), &id, spec(defaults))
        .unwrap();
    assert_eq!(info.limits.max_collections, Some(defaults));
}
