//! Operator routes for a tenant's lifecycle: change its profile and limits,
//! suspend, resume, soft delete, restore, hard delete, and purge soft-deleted tenants whose
//! retention period is over. The engine writes each action's audit row.

use axum::Json;
use axum::extract::{RawQuery, State};
use serde::Deserialize;
use serde_json::{Map, Value};
use strata_engine::{
    Engine, IntegrityPolicyInput, OperatorScope, TenantInfo, TenantLimits, TenantUpdate,
};
use strata_types::TenantId;
use utoipa::ToSchema;

use crate::bodies::{HardDeleted, Purged, TenantDeleted};
use crate::edge::OperatorAuth;
use crate::input::{JsonObject, PathParam, QueryInput, from_map};
use crate::{ApiError, AppState};

fn tenant_id(id: String) -> Result<TenantId, ApiError> {
    TenantId::parse_field("id", id).map_err(|e| ApiError::BadRequest(e.to_string()))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ProfilePatch {
    /// At most 256 bytes; `null` removes it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 256)]
    display_name: Option<Option<String>>,
    /// A JSON merge patch of the limits: named limits change, `null` removes one, the others
    /// stay.
    #[schema(value_type = Option<TenantLimits>)]
    limits: Option<Map<String, Value>>,
    /// Fair-share weight in scheduling, at least 1.
    #[schema(minimum = 1)]
    weight: Option<u32>,
    /// The parent tenant (it must exist, and not be a descendant); `null` removes it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<TenantId>)]
    parent: Option<Option<String>>,
    /// A JSON merge patch (RFC 7396) of the operator's metadata: named keys change (objects
    /// merged), a `null` removes one, the others stay; `null` removes it all. The result is
    /// bounded like at creation (64 keys, 16 KiB, 8 levels).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
    /// The tenant's own integrity thresholds: fields left out keep the values of the policy
    /// in force (the tenant's own, else the server configuration's); `null` clears them, so
    /// the configuration's apply again (and repairs an unreadable stored policy).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<IntegrityPolicyInput>)]
    integrity_policy: Option<Option<IntegrityPolicyInput>>,
}

/// A field that is present, even as `null` (`Some(None)`, or `Some(Value::Null)` for a raw
/// JSON value), told from an absent one (`None`).
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// `parent` of a create or update body, validated with errors naming the field.
pub(crate) fn parent_field(parent: Option<String>) -> Result<Option<TenantId>, ApiError> {
    parent
        .map(|p| TenantId::parse_field("parent", p))
        .transpose()
        .map_err(|e| ApiError::BadRequest(e.to_string()))
}

/// Applies a merge patch to `current`, a bad field refused by its name (`limits.max_qps: ...`).
/// A PATCH checks its patch's shape with it; the engine applies the patch to the stored
/// limits in its own transaction (`TenantUpdate::limits_patch`).
fn merge_limits(
    current: &TenantLimits,
    patch: Map<String, Value>,
) -> Result<TenantLimits, ApiError> {
    let merged = strata_engine::limits_merged(current, &patch);
    crate::input::from_value_at("limits", &Value::Object(merged))
}

/// Changes a tenant's display name, limits (merge patch), scheduling weight, parent, integrity
/// policy (replaced whole; `null` clears it) or metadata (merge patch).
#[utoipa::path(patch, path = "/v1/admin/tenants/{id}", tag = "admin", operation_id = "update_tenant",
    params(("id" = TenantId, Path, description = "tenant id")),
    request_body = ProfilePatch,
    responses((status = 200, description = "The tenant, with its usage", body = TenantInfo)),
    security(("bearer" = [])))]
pub async fn update_tenant(
    State(state): State<AppState>,
    OperatorAuth(op): OperatorAuth,
    PathParam(id): PathParam,
    JsonObject(body): JsonObject,
) -> Result<Json<TenantInfo>, ApiError> {
    let id = tenant_id(id)?;
    let patch: ProfilePatch = from_map(body)?;
    let parent = patch.parent.map(parent_field).transpose()?;
    // The patch's own shape is checked here, so a bad one is refused naming its field; it is
    // merged into the limits as stored in the update's transaction (`limits_patch`).
    if let Some(p) = &patch.limits {
        merge_limits(&TenantLimits::default(), p.clone())?;
    }
    let info = state
        .run(move |e| {
            let update = TenantUpdate {
                display_name: patch.display_name,
                limits: None,
                weight: patch.weight,
                parent,
                metadata: patch.metadata,
                integrity_policy: patch.integrity_policy,
                limits_patch: patch.limits,
            };
            e.update_tenant(&op, &id, update)?;
            Ok(e.tenant(&op, &id)?)
        })
        .await?;
    Ok(Json(info))
}

/// Runs one lifecycle transition and answers with the tenant.
async fn transition(
    state: &AppState,
    op: OperatorScope,
    id: String,
    f: fn(&Engine, &OperatorScope, &TenantId) -> Result<TenantInfo, strata_engine::EngineError>,
) -> Result<Json<TenantInfo>, ApiError> {
    let id = tenant_id(id)?;
    let info = state.run(move |e| Ok(f(e, &op, &id)?)).await?;
    Ok(Json(info))
}

/// Suspends a tenant: each of its data operations then fails with `403 TENANT_SUSPENDED`.
#[utoipa::path(post, path = "/v1/admin/tenants/{id}/suspend", tag = "admin", operation_id = "suspend_tenant",
    params(("id" = TenantId, Path, description = "tenant id")),
    responses((status = 200, description = "The tenant", body = TenantInfo)),
    security(("bearer" = [])))]
pub async fn suspend_tenant(
    State(state): State<AppState>,
    OperatorAuth(op): OperatorAuth,
    PathParam(id): PathParam,
) -> Result<Json<TenantInfo>, ApiError> {
    transition(&state, op, id, Engine::suspend_tenant).await
}

/// Lifts a suspension.
#[utoipa::path(post, path = "/v1/admin/tenants/{id}/resume", tag = "admin", operation_id = "resume_tenant",
    params(("id" = TenantId, Path, description = "tenant id")),
    responses((status = 200, description = "The tenant", body = TenantInfo)),
    security(("bearer" = [])))]
pub async fn resume_tenant(
    State(state): State<AppState>,
    OperatorAuth(op): OperatorAuth,
    PathParam(id): PathParam,
) -> Result<Json<TenantInfo>, ApiError> {
    transition(&state, op, id, Engine::resume_tenant).await
}

/// Undoes a soft delete, within the retention period: the tenant gets back the status it had
/// when deleted (`suspended` stays suspended). A data move that a crash or shutdown
/// cut short while the tenant was deleted (start-up resumes only live tenants' moves) resumes
/// in the background: `GET .../migration` follows it.
#[utoipa::path(post, path = "/v1/admin/tenants/{id}/restore", tag = "admin", operation_id = "restore_tenant",
    params(("id" = TenantId, Path, description = "tenant id")),
    responses((status = 200, description = "The tenant", body = TenantInfo)),
    security(("bearer" = [])))]
pub async fn restore_tenant(
    State(state): State<AppState>,
    OperatorAuth(op): OperatorAuth,
    PathParam(id): PathParam,
) -> Result<Json<TenantInfo>, ApiError> {
    let restored = transition(&state, op.clone(), id, Engine::restore_tenant).await?;
    // Run by a blocking task of its own, which nobody waits for: its outcome is in the
    // migration status, and in the log.
    let (engine, id) = (state.engine.clone(), restored.0.id.clone());
    crate::over_share_lane::spawn_blocking(move || match engine.resume_migration_of(&op, &id) {
        Ok(None) => {}
        Ok(Some(how)) => {
            tracing::info!(tenant = %id, outcome = ?how, "resumed an interrupted migration of a restored tenant")
        }
        Err(e) => {
            tracing::warn!(tenant = %id, error = %e, "resuming the interrupted migration of a restored tenant failed")
        }
    });
    Ok(restored)
}

/// Soft-deletes a tenant (hidden, restorable until the retention period ends), or with
/// `?hard=true` erases it at once, compacting the data file so none of its bytes remain.
#[utoipa::path(delete, path = "/v1/admin/tenants/{id}", tag = "admin", operation_id = "delete_tenant",
    params(("id" = TenantId, Path, description = "tenant id"),
        ("hard" = Option<bool>, Query, description = "erase now instead of soft-deleting")),
    responses((status = 200, description = "The soft-deleted tenant, or `{id, purged: true, erasure: \"done\" | \"pending\"}`", body = TenantDeleted)),
    security(("bearer" = [])))]
pub async fn delete_tenant(
    State(state): State<AppState>,
    OperatorAuth(op): OperatorAuth,
    PathParam(id): PathParam,
    RawQuery(q): RawQuery,
) -> Result<Json<TenantDeleted>, ApiError> {
    let q = QueryInput::parse(q.as_deref(), &["hard"])?;
    let hard = match q.get("hard") {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(ApiError::BadRequest("hard: expected true or false".into())),
    };
    if !hard {
        let Json(info) = transition(&state, op, id, Engine::delete_tenant).await?;
        return Ok(Json(TenantDeleted::Soft(Box::new(info))));
    }
    let id = tenant_id(id)?;
    let shown = id.clone();
    let asof = std::time::Instant::now();
    let erasure = state.run(move |e| Ok(e.purge_tenant(&op, &id)?)).await?;
    // Its figures go with it; a tenant re-created under the id since keeps its own.
    state.metrics.forget(asof, |_, t| *t != shown);
    Ok(Json(TenantDeleted::Hard(HardDeleted {
        id: shown,
        purged: true,
        erasure,
    })))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PurgeBody {
    /// Absent: the server's configured retention.
    retention_secs: Option<u64>,
}

/// Purges every soft-deleted tenant deleted at least `retention_secs` ago (the server runs
/// this sweep itself, periodically, with its configured retention).
#[utoipa::path(post, path = "/v1/admin/tenants/purge-deleted", tag = "admin", operation_id = "purge_deleted_tenants",
    request_body = PurgeBody,
    responses((status = 200, description = "The tenants erased", body = Purged)),
    security(("bearer" = [])))]
pub async fn purge_deleted(
    State(state): State<AppState>,
    OperatorAuth(op): OperatorAuth,
    JsonObject(body): JsonObject,
) -> Result<Json<Purged>, ApiError> {
    let b: PurgeBody = from_map(body)?;
    let secs = b.retention_secs.unwrap_or(state.config.retention_secs);
    let ms = i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let asof = std::time::Instant::now();
    let purged = state
        .run(move |e| Ok(e.purge_deleted_tenants(&op, ms)?))
        .await?;
    state.metrics.forget(asof, |_, t| !purged.contains(t));
    Ok(Json(Purged { purged }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn limits_merge_like_a_merge_patch() {
        let current = TenantLimits {
            max_vectors: Some(10),
            max_collections: Some(3),
            ..Default::default()
        };
        let patch = json!({"max_vectors": 50, "max_collections": null});
        let merged = merge_limits(&current, patch.as_object().cloned().unwrap()).unwrap();
        assert_eq!(merged.max_vectors, Some(50));
        assert_eq!(merged.max_collections, None);
        let typo = json!({"max_vector": 1});
        assert!(merge_limits(&current, typo.as_object().cloned().unwrap()).is_err());
    }
}
