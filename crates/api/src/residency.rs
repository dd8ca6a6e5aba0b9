//! Operator routes for one node's tenants: residency (which tenants' indexes are in memory,
//! what they cost, how often they were loaded and evicted under the memory budget),
//! integrity states and verification.

use axum::Json;
use axum::extract::State;
use strata_engine::{
    RepairReport, ResidencySummary, TenantIntegrity, TenantResidency, VerifyReport,
};
use strata_types::TenantId;

use crate::edge::OperatorAuth;
use crate::input::PathParam;
use crate::{ApiError, AppState};

/// The whole server's residency: budget, resident bytes, and every tenant used since start,
/// most recently used first.
#[utoipa::path(get, path = "/v1/admin/residency", tag = "admin", operation_id = "residency",
    responses((status = 200, description = "Residency over every tenant", body = ResidencySummary)),
    security(("bearer" = [])))]
pub async fn summary(
    State(state): State<AppState>,
    OperatorAuth(op): OperatorAuth,
) -> Result<Json<ResidencySummary>, ApiError> {
    let s = state.run(move |e| Ok(e.residency_summary(&op))).await?;
    Ok(Json(s))
}

/// One tenant's residency: loaded or not, estimated bytes, loads, evictions, pinned.
#[utoipa::path(get, path = "/v1/admin/tenants/{id}/residency", tag = "admin",
    operation_id = "tenant_residency",
    params(("id" = TenantId, Path, description = "tenant id")),
    responses((status = 200, description = "The tenant's residency", body = TenantResidency)),
    security(("bearer" = [])))]
pub async fn tenant(
    State(state): State<AppState>,
    OperatorAuth(op): OperatorAuth,
    PathParam(id): PathParam,
) -> Result<Json<TenantResidency>, ApiError> {
    let id = TenantId::parse_field("id", id).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let r = state.run(move |e| Ok(e.residency(&op, &id)?)).await?;
    Ok(Json(r))
}

/// Verifies one tenant: every stored key decodes and belongs to it, its loaded indexes agree
/// with storage, its usage counters equal a recount. Reports; repairs nothing.
#[utoipa::path(post, path = "/v1/admin/tenants/{id}/verify", tag = "admin",
    operation_id = "verify_tenant",
    params(("id" = TenantId, Path, description = "tenant id")),
    responses((status = 200, description = "The report; `ok` is false when a problem was found", body = VerifyReport)),
    security(("bearer" = [])))]
pub async fn verify(
    State(state): State<AppState>,
    OperatorAuth(op): OperatorAuth,
    PathParam(id): PathParam,
) -> Result<Json<VerifyReport>, ApiError> {
    let id = TenantId::parse_field("id", id).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let report = state.run(move |e| Ok(e.verify_tenant(&op, &id)?)).await?;
    Ok(Json(report))
}

/// Repairs a tenant whose records were damaged on disk: removes each record whose stored bytes
/// no longer decode (every request that met one failed; `verify` names them), with every entry
/// naming it, recounts the tenant's usage and reloads its indexes. Their content is lost: it
/// cannot be told from the damaged bytes. Audited as `tenant.repair`; `409` while a migration
/// moves the tenant's data.
#[utoipa::path(post, path = "/v1/admin/tenants/{id}/repair", tag = "admin",
    operation_id = "repair_tenant",
    params(("id" = TenantId, Path, description = "tenant id")),
    responses((status = 200, description = "The records removed (none when nothing was damaged)", body = RepairReport)),
    security(("bearer" = [])))]
pub async fn repair(
    State(state): State<AppState>,
    OperatorAuth(op): OperatorAuth,
    PathParam(id): PathParam,
) -> Result<Json<RepairReport>, ApiError> {
    let id = TenantId::parse_field("id", id).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let report = state.run(move |e| Ok(e.repair_tenant(&op, &id)?)).await?;
    Ok(Json(report))
}

/// One tenant's integrity state (`normal`, `stress`, `critical`), the signals behind it, its
/// policy and its recent transitions.
#[utoipa::path(get, path = "/v1/admin/tenants/{id}/integrity", tag = "admin",
    operation_id = "tenant_integrity",
    params(("id" = TenantId, Path, description = "tenant id")),
    responses((status = 200, description = "The tenant's integrity", body = TenantIntegrity)),
    security(("bearer" = [])))]
pub async fn integrity(
    State(state): State<AppState>,
    OperatorAuth(op): OperatorAuth,
    PathParam(id): PathParam,
) -> Result<Json<TenantIntegrity>, ApiError> {
    let id = TenantId::parse_field("id", id).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let report = state.run(move |e| Ok(e.integrity(&op, &id)?)).await?;
    Ok(Json(report))
}
