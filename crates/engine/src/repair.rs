//! An operator's repair of a tenant whose records were damaged on disk (bit rot, a bad disk, a
//! stray write behind a stopped server): each record whose stored bytes no longer decode is
//! refused wherever it is read, which fails every request that meets it (a list, a count, an
//! export, a search loading the tenant). `verify` names them; a repair removes them, with
//! every entry naming them, so that the rest of the tenant serves again without restoring a
//! backup. What they held is lost either way: nothing can tell their true bytes.

use serde::Serialize;
use strata_auth::OperatorScope;
use strata_store::Reads;
use strata_store::codec::encode_json;
use strata_types::{CollectionName, RecordId, TenantId};

use crate::lifecycle::{USAGE_BLOB, recount_usage};
use crate::{Engine, EngineError, audit};

/// What [`Engine::repair_tenant`] did.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RepairReport {
    #[schema(value_type = String)]
    pub tenant: TenantId,
    /// Records removed because their stored bytes did not decode (none: nothing was damaged,
    /// and nothing was written but the audit row).
    #[schema(value_type = Vec<String>)]
    pub removed: Vec<RecordId>,
}

impl Engine {
    /// Removes the tenant's records whose stored bytes do not decode, and everything that
    /// names them (scope, expiry and dedup entries, pheromones, links), recounts its usage
    /// from what remains, and drops its loaded indexes and adaptive state, which reload from
    /// storage (saved images, behind the data version the repair moves, catch up through the
    /// change log). Runs in the tenant's write order, so no write of it interleaves. Audited as
    /// `tenant.repair`, naming the removed ids. Refused while a migration moves the tenant's
    /// data.
    pub fn repair_tenant(
        &self,
        op: &OperatorScope,
        id: &TenantId,
    ) -> Result<RepairReport, EngineError> {
        let key = self.tenant_meta(id)?.key;
        let removed = self.migrations.excluding(key, id, || {
            self.indexes.write(&self.store, key, id, |stage| {
                let removed = self.store.write(|w| {
                    let removed = repair_txn(w, op, id, key);
                    stage.set(removed.is_ok());
                    removed
                })?;
                Ok((removed, Vec::new()))
            })
        })?;
        if !removed.is_empty() {
            // Loaded with the damaged records in them: the next request loads them again.
            self.indexes.unload(key);
            self.adaptive.forget_tenant(key);
        }
        Ok(RepairReport {
            tenant: id.clone(),
            removed,
        })
    }
}

/// The repair's one transaction; returns the ids it removed.
fn repair_txn(
    w: &mut strata_store::Writer<'_>,
    op: &OperatorScope,
    id: &TenantId,
    key: strata_store::TenantKey,
) -> Result<Vec<RecordId>, EngineError> {
    if w.tenant(id)?.is_none_or(|now| now.key != key) {
        return Err(EngineError::TenantNotFound(id.clone()));
    }
    let damaged = strata_store::damaged_records(&*w, key)?;
    if !damaged.is_empty() {
        let collections: Vec<CollectionName> =
            w.collections(key)?.into_iter().map(|c| c.name).collect();
        w.remove_damaged_records(key, &damaged, &collections)?;
        let usage = recount_usage(&*w, key)?;
        w.put_blob(key, USAGE_BLOB, &encode_json(&usage)?)?;
        // Saved images and snapshots match the data version: moved, they load behind it and
        // replay the change log, which logged each removal.
        crate::snapshot::bump_version(w, key)?;
    }
    let mut event = audit::operator_event(op, id, "tenant.repair");
    event.detail = serde_json::json!({ "removed": damaged });
    audit::append(w, key, event)?;
    Ok(damaged)
}
