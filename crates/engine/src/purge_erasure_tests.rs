//! A purge erases its tenant's range after its own transaction, in short transactions
//! (`strata_store::Store::erase_owed_ranges`, run by the vacuum that follows): when the purge
//! returns nothing of the range is left, and an erasure cut short (a crash after the purge's
//! transaction) is finished when the engine opens again.

use strata_auth::OperatorScope;
use strata_store::Reads;
use strata_types::{NewRecord, RequestScope, TenantId};

use crate::test_support::admin_scope;
use crate::{Engine, EngineConfig, IsolationLevel};

fn tenant_with_records(engine: &Engine, id: &str, n: usize) -> TenantId {
    let tenant = TenantId::parse(id).unwrap();
    engine
        .create_tenant_at(
            &OperatorScope::for_tests(),
            &tenant,
            None,
            IsolationLevel::Shared,
            None,
        )
        .unwrap();
    let records = (0..n)
        .map(|i| NewRecord {
            content: Some(format!("{id} {i}")),
            ..Default::default()
        })
        .collect();
    engine
        .put(&admin_scope(engine, id), &RequestScope::default(), records)
        .unwrap();
    tenant
}

fn verify_clean(engine: &Engine, id: &TenantId) {
    let report = engine
        .verify_tenant(&OperatorScope::for_tests(), id)
        .unwrap();
    assert!(report.ok, "{:?}", report.problems);
}

#[test]
fn a_purge_returns_with_its_range_erased_and_nothing_owed() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    let doomed = tenant_with_records(&engine, "doomed", 50);
    let kept = tenant_with_records(&engine, "kept", 5);
    let key = engine.tenant_meta(&doomed).unwrap().key;
    assert!(engine.store.main_keys(key).unwrap() > 50);
    engine
        .purge_tenant(&OperatorScope::for_tests(), &doomed)
        .unwrap();
    assert_eq!(engine.store.main_keys(key).unwrap(), 0);
    assert_eq!(engine.store.owed_erasures().unwrap().keys, []);
    assert!(engine.tenant_meta(&doomed).is_err());
    verify_clean(&engine, &kept);
}

#[test]
fn an_erasure_a_crash_cut_short_is_finished_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let (key, kept) = {
        let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
        let doomed = tenant_with_records(&engine, "doomed", 30);
        let kept = tenant_with_records(&engine, "kept", 5);
        // The purge's transaction alone: the crash came before its first chunk.
        let key = engine
            .store
            .write(|w| {
                let meta = w.tenant(&doomed)?.expect("registered");
                w.unregister_tenant_owing_erasure(&meta)?;
                Ok::<_, strata_store::StoreError>(meta.key)
            })
            .unwrap();
        assert!(engine.store.main_keys(key).unwrap() > 30);
        (key, kept)
    };
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    assert_eq!(engine.store.main_keys(key).unwrap(), 0);
    assert_eq!(engine.store.owed_erasures().unwrap().keys, []);
    verify_clean(&engine, &kept);
}

/// An owed row that does not decode neither stops the engine from opening nor the erasure of
/// a good one beside it; it is reported as an erasure still pending.
#[test]
fn a_malformed_owed_row_does_not_stop_the_open() {
    let dir = tempfile::tempdir().unwrap();
    let (key, kept) = {
        let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
        let doomed = tenant_with_records(&engine, "doomed", 30);
        let kept = tenant_with_records(&engine, "kept", 5);
        let key = engine
            .store
            .write(|w| {
                let meta = w.tenant(&doomed)?.expect("registered");
                w.unregister_tenant_owing_erasure(&meta)?;
                w.put_meta_for_tests("erasure.owed:not-a-key", 1)?;
                Ok::<_, strata_store::StoreError>(meta.key)
            })
            .unwrap();
        (key, kept)
    };
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    assert_eq!(engine.store.main_keys(key).unwrap(), 0);
    let owed = engine.store.owed_erasures().unwrap();
    assert_eq!(owed.keys, []);
    assert_eq!(owed.malformed.len(), 1, "{owed:?}");
    assert!(engine.vacuum_figures().erasure_pending);
    // Later vacuums run too, the row still reported.
    engine.vacuum().unwrap();
    assert!(engine.vacuum_figures().erasure_pending);
    verify_clean(&engine, &kept);
}
