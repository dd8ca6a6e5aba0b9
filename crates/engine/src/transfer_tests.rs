//! An import against a tenant purged and created again while it ran: it fails, the new
//! tenant is left intact, and nothing the import wrote stays under its own storage key (the
//! purge that replaced it erased only what had been written by then).

use strata_auth::OperatorScope;
use strata_types::{NewRecord, RequestScope, TenantId};

use crate::test_support::admin_scope;
use crate::{Engine, EngineConfig, ExportLine, NewTenantSpec};

#[test]
fn a_failed_import_leaves_no_key_under_its_own_storage_key() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    let op = OperatorScope::for_tests();
    let acme = TenantId::parse("acme").unwrap();
    engine.create_tenant(&op, &acme, None).unwrap();
    let scope = admin_scope(&engine, "acme");
    let records = (0..3)
        .map(|i| NewRecord {
            content: Some(format!("kept {i}")),
            vector: Some(vec![0.1 * i as f32 + 0.1; 384]),
            ..Default::default()
        })
        .collect();
    engine
        .put(&scope, &RequestScope::default(), records)
        .unwrap();
    let mut lines: Vec<ExportLine> = Vec::new();
    engine
        .export_tenant(&op, &acme, |l| {
            lines.push(l.clone());
            Ok(())
        })
        .unwrap();

    let copy = TenantId::parse("copy").unwrap();
    let mut old_key = None;
    let during = lines.into_iter().enumerate().map(|(n, line)| {
        if n == 1 {
            // The import has created its tenant; it is purged and its id given to a new one
            // before the import writes its collections, records and audit rows.
            old_key = Some(engine.tenant_meta(&copy).unwrap().key);
            engine.purge_tenant(&op, &copy).unwrap();
            let spec = NewTenantSpec {
                display_name: Some("the new one".into()),
                ..Default::default()
            };
            engine.create_tenant_with(&op, &copy, spec).unwrap();
        }
        Ok(line)
    });
    assert!(engine.import_tenant(&op, &copy, during).is_err());
    let old_key = old_key.expect("the import reached its second line");

    // Nothing of the import's incarnation is left, in either check of its range.
    assert_eq!(engine.store.main_keys(old_key).unwrap(), 0);
    let r = engine.store.read().unwrap();
    assert_eq!(strata_store::check_tenant(&r, old_key).unwrap().keys, 0);
    drop(r);

    // The new incarnation is whole and verifies clean.
    let new = engine.tenant_meta(&copy).unwrap();
    assert_ne!(new.key, old_key);
    let info = engine.tenant(&op, &copy).unwrap();
    assert_eq!(info.display_name.as_deref(), Some("the new one"));
    let report = engine.verify_tenant(&op, &copy).unwrap();
    assert!(report.ok && report.keys > 0, "{report:?}");
    assert!(engine.verify_tenant(&op, &acme).unwrap().ok);
}
