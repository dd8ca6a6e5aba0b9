//! A purge's audit row names what was erased (the records and storage bytes of the tenant's
//! usage), for a tenant in the shared file and for one with its own; a usage row that does not
//! decode is said to be unreadable, and does not stop the erasure.

use serde_json::{Value, json};
use strata_auth::OperatorScope;
use strata_types::{NewRecord, RequestScope, TenantId};

use crate::test_support::admin_scope;
use crate::{AuditQuery, Engine, EngineConfig, IsolationLevel};

fn tenant_with_three_records(engine: &Engine, id: &str, level: IsolationLevel) -> TenantId {
    let tenant = TenantId::parse(id).unwrap();
    engine
        .create_tenant_at(&OperatorScope::for_tests(), &tenant, None, level, None)
        .unwrap();
    let records = (0..3)
        .map(|i| NewRecord {
            content: Some(format!("erased {i}")),
            ..Default::default()
        })
        .collect();
    engine
        .put(&admin_scope(engine, id), &RequestScope::default(), records)
        .unwrap();
    tenant
}

fn purge_detail(engine: &Engine, tenant: &TenantId) -> Value {
    let op = OperatorScope::for_tests();
    engine.purge_tenant(&op, tenant).unwrap();
    let q = AuditQuery {
        tenant: Some(tenant.clone()),
        action: Some("tenant.purge".into()),
        ..Default::default()
    };
    let rows = engine.audit_rows(&op, &q).unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    rows[0].detail.clone()
}

#[test]
fn a_purge_row_names_the_records_and_bytes_erased_shared_or_dedicated() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    for (id, level) in [
        ("shared", IsolationLevel::Shared),
        ("own", IsolationLevel::Dedicated),
    ] {
        let tenant = tenant_with_three_records(&engine, id, level);
        let detail = purge_detail(&engine, &tenant);
        assert_eq!(detail["records"], json!(3), "{id}: {detail}");
        assert!(detail["storage_bytes"].as_u64() > Some(0), "{id}: {detail}");
    }
}

#[test]
fn a_purge_whose_usage_does_not_decode_says_so_and_still_erases() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    let tenant = tenant_with_three_records(&engine, "acme", IsolationLevel::Shared);
    let key = engine.tenant_meta(&tenant).unwrap().key;
    engine
        .store
        .write(|w| w.put_blob(key, crate::lifecycle::USAGE_BLOB, &[0xff]))
        .unwrap();
    let detail = purge_detail(&engine, &tenant);
    assert_eq!(detail, json!({"usage": "unreadable"}));
    assert!(
        engine.tenant_meta(&tenant).is_err(),
        "the tenant was erased"
    );
}

/// The server keeps the `tenant.purge` row of every tenant purged under an id: a later purge
/// of the same id erases the server log's other rows about it, not the earlier purges.
#[test]
fn a_purge_keeps_the_rows_of_earlier_purges_of_the_same_id() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    let op = OperatorScope::for_tests();
    for _ in 0..2 {
        let tenant = tenant_with_three_records(&engine, "again", IsolationLevel::Shared);
        engine.purge_tenant(&op, &tenant).unwrap();
    }
    let q = AuditQuery {
        tenant: Some(TenantId::parse("again").unwrap()),
        action: Some("tenant.purge".into()),
        ..Default::default()
    };
    assert_eq!(engine.audit_rows(&op, &q).unwrap().len(), 2);
}
