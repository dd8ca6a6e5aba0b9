//! The retention sweep purges a tenant only as it found it due: still the same incarnation,
//! still soft-deleted since the same time. It reads the registry first and purges each tenant
//! later in its own transaction, so a restore, a restore and a new delete, or a purge and a
//! re-creation of the same id in between must keep the tenant that is there now.

use strata_auth::OperatorScope;
use strata_types::TenantId;

use crate::lifecycle::{TenantProfile, TenantStatus};
use crate::test_support::engine_with_tenant;
use crate::{Engine, EngineError};

/// The tenant's storage key and the time of its soft delete, as the sweep reads them.
fn as_found(engine: &Engine, id: &TenantId) -> (strata_store::TenantKey, i64) {
    let meta = engine.tenant_meta(id).unwrap();
    let at = TenantProfile::of(&meta).unwrap().deleted_at.unwrap();
    (meta.key, at)
}

fn status(engine: &Engine, id: &TenantId) -> TenantStatus {
    TenantProfile::of(&engine.tenant_meta(id).unwrap())
        .unwrap()
        .status
}

#[test]
fn the_sweep_keeps_a_tenant_restored_or_replaced_after_it_was_found_due() {
    let (_dir, engine, _scope) = engine_with_tenant("gone");
    let op = OperatorScope::for_tests();
    let id = TenantId::parse("gone").unwrap();
    engine.delete_tenant(&op, &id).unwrap();
    let (key, at) = as_found(&engine, &id);

    // Restored after the sweep's read: kept, active.
    engine.restore_tenant(&op, &id).unwrap();
    let refused = engine.erase_incarnation(&op, &id, key, Some(at));
    assert!(
        matches!(refused, Err(EngineError::IdConflict(_))),
        "{refused:?}"
    );
    assert_eq!(status(&engine, &id), TenantStatus::Active);

    // Restored and deleted again: its retention starts again, so it is kept.
    std::thread::sleep(std::time::Duration::from_millis(3));
    engine.delete_tenant(&op, &id).unwrap();
    assert_ne!(as_found(&engine, &id).1, at);
    let refused = engine.erase_incarnation(&op, &id, key, Some(at));
    assert!(
        matches!(refused, Err(EngineError::IdConflict(_))),
        "{refused:?}"
    );
    assert_eq!(status(&engine, &id), TenantStatus::Deleted);

    // Purged and created again under the same id: the new tenant is kept.
    let (key, at) = as_found(&engine, &id);
    engine.purge_tenant(&op, &id).unwrap();
    engine.create_tenant(&op, &id, None).unwrap();
    let refused = engine.erase_incarnation(&op, &id, key, Some(at));
    assert!(
        matches!(refused, Err(EngineError::IdConflict(_))),
        "{refused:?}"
    );
    assert_eq!(status(&engine, &id), TenantStatus::Active);

    // Found due and unchanged: purged.
    engine.delete_tenant(&op, &id).unwrap();
    let (key, at) = as_found(&engine, &id);
    engine.erase_incarnation(&op, &id, key, Some(at)).unwrap();
    assert!(matches!(
        engine.tenant_meta(&id),
        Err(EngineError::TenantNotFound(_))
    ));
}

/// A tenant whose profile does not decode is left out of the sweep (its deletion time is
/// unknown), and the tenants that are due are purged all the same: a purge reads only the
/// `parent` field of the other tenants' profiles (it once decoded each whole, so one damaged
/// row stopped every purge).
#[test]
fn an_undecodable_profile_keeps_only_its_own_tenant_from_the_sweep() {
    let (_dir, engine, _scope) = engine_with_tenant("due");
    let op = OperatorScope::for_tests();
    let (due, odd) = (
        TenantId::parse("due").unwrap(),
        TenantId::parse("odd").unwrap(),
    );
    engine.create_tenant(&op, &odd, None).unwrap();
    engine.delete_tenant(&op, &due).unwrap();
    let mut meta = engine.tenant_meta(&odd).unwrap();
    meta.profile
        .insert("status".into(), serde_json::json!({"not": "a status"}));
    engine.store.write(|w| w.put_tenant(&meta)).unwrap();
    assert!(TenantProfile::of(&engine.tenant_meta(&odd).unwrap()).is_err());

    let purged = engine.purge_deleted_tenants(&op, 0).unwrap();
    assert_eq!(purged, vec![due.clone()]);
    assert!(matches!(
        engine.tenant_meta(&due),
        Err(EngineError::TenantNotFound(_))
    ));
    assert!(engine.tenant_meta(&odd).is_ok());
}

/// A child whose profile does not decode still loses its parent when the parent is purged (a
/// pointer left behind would name whichever tenant is created under that id next), and the
/// parent's purge is not stopped by it.
#[test]
fn a_damaged_child_loses_its_purged_parent() {
    let (_dir, engine, _scope) = engine_with_tenant("parent");
    let op = OperatorScope::for_tests();
    let (parent, child) = (
        TenantId::parse("parent").unwrap(),
        TenantId::parse("child").unwrap(),
    );
    engine.create_tenant(&op, &child, None).unwrap();
    let mut meta = engine.tenant_meta(&child).unwrap();
    meta.profile
        .insert("parent".into(), serde_json::json!("parent"));
    meta.profile
        .insert("weight".into(), serde_json::json!("heavy"));
    engine.store.write(|w| w.put_tenant(&meta)).unwrap();
    assert!(TenantProfile::of(&engine.tenant_meta(&child).unwrap()).is_err());
    assert_eq!(
        crate::hierarchy::children(&engine.store.read().unwrap(), &parent).unwrap(),
        vec![child.clone()]
    );
    engine.purge_tenant(&op, &parent).unwrap();
    let left = engine.tenant_meta(&child).unwrap();
    assert_eq!(left.profile.get("parent"), Some(&serde_json::Value::Null));
    assert_eq!(
        left.profile.get("weight"),
        Some(&serde_json::json!("heavy"))
    );
}

/// Two operators patching different limits of one tenant at once both keep their change:
/// each patch is merged into the limits as stored, in its own transaction (they were read,
/// then written whole, so one could be lost).
#[test]
fn concurrent_limit_patches_of_one_tenant_keep_both() {
    let (_dir, engine, _scope) = engine_with_tenant("acme");
    let id = TenantId::parse("acme").unwrap();
    let patch = |key: &str, n: u64| crate::TenantUpdate {
        limits_patch: Some(serde_json::json!({ key: n }).as_object().cloned().unwrap()),
        ..Default::default()
    };
    std::thread::scope(|s| {
        for key in ["max_vectors", "max_collections"] {
            let (engine, id) = (&engine, &id);
            s.spawn(move || {
                for n in 1..=60u64 {
                    engine
                        .update_tenant(&OperatorScope::for_tests(), id, patch(key, 1_000 + n))
                        .unwrap();
                }
            });
        }
    });
    let limits = engine
        .tenant(&OperatorScope::for_tests(), &id)
        .unwrap()
        .limits;
    assert_eq!(
        (limits.max_vectors, limits.max_collections),
        (Some(1_060), Some(1_060))
    );
    // A patch naming a limit with null removes it; a bad one is refused.
    let removed = crate::TenantUpdate {
        limits_patch: serde_json::json!({"max_vectors": null})
            .as_object()
            .cloned(),
        ..Default::default()
    };
    let info = engine
        .update_tenant(&OperatorScope::for_tests(), &id, removed)
        .unwrap();
    assert_eq!(
        (info.limits.max_vectors, info.limits.max_collections),
        (None, Some(1_060))
    );
    let burst_alone = crate::TenantUpdate {
        limits_patch: serde_json::json!({"burst": 5}).as_object().cloned(),
        ..Default::default()
    };
    assert!(matches!(
        engine.update_tenant(&OperatorScope::for_tests(), &id, burst_alone),
        Err(EngineError::BadRequest(m)) if m.starts_with("limits.burst")
    ));
}
