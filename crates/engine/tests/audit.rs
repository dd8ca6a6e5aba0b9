//! The audit log: one row per mutation and admin action, with the right fields, and a tenant
//! never sees another tenant's rows.

mod common;

use serde_json::json;
use strata_auth::{OperatorScope, TenantScope};
use strata_engine::{AuditEvent, AuditQuery, AuditRow};
use strata_types::*;

fn rows_of(rows: &[AuditRow], action: &str) -> Vec<AuditRow> {
    rows.iter()
        .filter(|r| r.action == action)
        .cloned()
        .collect()
}

#[test]
fn each_kind_of_event_produces_exactly_one_row() {
    let dir = tempfile::tempdir().unwrap();
    let op = OperatorScope::for_tests();
    let (engine, acme) = common::open_with_tenant(dir.path(), "acme", common::full_grant());
    drop(engine);
    let (engine, globex) = common::open_with_tenant(dir.path(), "globex", common::full_grant());
    let acme = TenantScope::for_tests(
        &engine.tenant_meta(acme.tenant()).unwrap(),
        common::full_grant(),
    );
    let req = RequestScope::default();

    let id = engine
        .put(
            &acme,
            &req,
            vec![serde_json::from_value(json!({"content": "a"})).unwrap()],
        )
        .unwrap()[0]
        .id
        .clone();
    engine
        .patch(
            &acme,
            &req,
            &id,
            RecordPatch {
                content: Some("b".into()),
                ..Default::default()
            },
        )
        .unwrap();
    engine.delete(&acme, &req, &id).unwrap();
    engine
        .create_collection(&acme, &CollectionName::parse("c").unwrap(), 2, Metric::Dot)
        .unwrap();
    engine.suspend_tenant(&op, acme.tenant()).unwrap();
    engine.resume_tenant(&op, acme.tenant()).unwrap();
    engine
        .put(
            &globex,
            &req,
            vec![serde_json::from_value(json!({"content": "g"})).unwrap()],
        )
        .unwrap();
    engine
        .record_audit(AuditEvent {
            tenant: Some(acme.tenant().clone()),
            actor: "key-123".into(),
            action: "security.tenant_mismatch".into(),
            outcome: "TENANT_MISMATCH".into(),
            client: Some("127.0.0.1:5000".into()),
            request_id: Some("req-1".into()),
            detail: json!({"asked": "globex"}),
        })
        .unwrap();
    // Reads are not audited.
    engine
        .get(&acme, &RequestScope::default(), &id)
        .unwrap_err();

    let own = engine
        .own_audit_rows(&acme, &AuditQuery::default())
        .unwrap();
    for action in [
        "tenant.create",
        "memory.put",
        "memory.patch",
        "memory.delete",
        "collection.create",
        "tenant.suspend",
        "tenant.resume",
        "security.tenant_mismatch",
    ] {
        let rows = rows_of(&own, action);
        assert_eq!(rows.len(), 1, "{action}: {own:#?}");
        assert_eq!(rows[0].tenant.as_ref(), Some(acme.tenant()), "{action}");
        assert!(rows[0].at > 0 && rows[0].seq > 0);
    }
    assert_eq!(own.len(), 8, "{own:#?}");
    let put = &rows_of(&own, "memory.put")[0];
    assert_eq!((put.actor.as_str(), put.outcome.as_str()), ("test", "ok"));
    assert_eq!(put.detail["ids"], json!([id.as_str()]));
    let sec = &rows_of(&own, "security.tenant_mismatch")[0];
    assert_eq!(
        (sec.client.as_deref(), sec.request_id.as_deref()),
        (Some("127.0.0.1:5000"), Some("req-1"))
    );
    assert_eq!(rows_of(&own, "tenant.suspend")[0].actor, "test-operator");
    // Newest first.
    assert!(own.windows(2).all(|w| w[0].at >= w[1].at));

    // globex sees only its own.
    let theirs = engine
        .own_audit_rows(&globex, &AuditQuery::default())
        .unwrap();
    assert!(
        theirs
            .iter()
            .all(|r| r.tenant.as_ref() == Some(globex.tenant())),
        "{theirs:#?}"
    );
    assert_eq!(rows_of(&theirs, "memory.put").len(), 1);
    let asks_other = AuditQuery {
        tenant: Some(acme.tenant().clone()),
        ..Default::default()
    };
    assert!(engine.own_audit_rows(&globex, &asks_other).is_err());

    // The operator filters by tenant and action.
    let q = AuditQuery {
        tenant: Some(acme.tenant().clone()),
        action: Some("memory.put".into()),
        ..Default::default()
    };
    assert_eq!(engine.audit_rows(&op, &q).unwrap().len(), 1);
    let all_puts = AuditQuery {
        action: Some("memory.put".into()),
        ..Default::default()
    };
    assert_eq!(engine.audit_rows(&op, &all_puts).unwrap().len(), 2);
    let future = AuditQuery {
        since: Some(now_millis() + 60_000),
        ..Default::default()
    };
    assert!(engine.audit_rows(&op, &future).unwrap().is_empty());
    assert!(
        engine
            .audit_rows(
                &op,
                &AuditQuery {
                    limit: Some(0),
                    ..Default::default()
                }
            )
            .is_err()
    );

    // A purge erases the tenant's log; the purge itself stays in the server log.
    engine.purge_tenant(&op, acme.tenant()).unwrap();
    let after = engine
        .audit_rows(
            &op,
            &AuditQuery {
                tenant: Some(acme.tenant().clone()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        after.iter().map(|r| r.action.as_str()).collect::<Vec<_>>(),
        ["tenant.purge"]
    );
}

/// A link's rows name the links they put or deleted: links change no record, and rows that
/// counted record changes said nothing of them.
#[test]
fn link_rows_name_their_links() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, acme) = common::open_with_tenant(dir.path(), "acme", common::full_grant());
    let req = RequestScope::default();
    let records = ["a", "b", "c"]
        .map(|id| serde_json::from_value(json!({"id": id, "content": id})).unwrap())
        .to_vec();
    engine.put(&acme, &req, records).unwrap();
    let link = |from: &str, to: &str| -> strata_types::NewLink {
        serde_json::from_value(json!({"source": from, "target": to})).unwrap()
    };
    engine
        .link_batch(&acme, &req, vec![link("a", "b"), link("a", "c")])
        .unwrap();
    // Again: the same link, replaced.
    engine
        .link_batch(&acme, &req, vec![link("a", "b")])
        .unwrap();
    let which: strata_types::LinkRef =
        serde_json::from_value(json!({"source": "a", "target": "c", "relation": "related"}))
            .unwrap();
    engine.unlink(&acme, &req, &which).unwrap();

    let own = engine
        .own_audit_rows(&acme, &AuditQuery::default())
        .unwrap();
    let puts = rows_of(&own, "link.put");
    // Newest first.
    assert_eq!(puts[1].detail["added"], 2);
    assert_eq!(puts[1].detail["links"][1]["target"], "c");
    assert_eq!(
        (&puts[0].detail["added"], &puts[0].detail["replaced"]),
        (&json!(0), &json!(1))
    );
    let deleted = rows_of(&own, "link.delete");
    assert_eq!(
        deleted[0].detail,
        json!({"source": "a", "target": "c", "relation": "related"})
    );
}
