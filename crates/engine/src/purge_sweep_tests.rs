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
