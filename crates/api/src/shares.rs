//! Shared knowledge routes (`docs/shared-knowledge.md`): an owner publishes a domain read-only
//! (`POST /v1/shares`, needs `admin`), lists (`GET /v1/shares`) and revokes
//! (`DELETE /v1/shares/{id}`) its shares; a grantee lists what it holds
//! (`GET /v1/shares/incoming`). Searches opt in with `include_shared`.

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use strata_engine::{IncomingShare, NewShare, Share};
use strata_types::RecordId;

use crate::bodies::{IncomingShares, Shares};
use crate::collections::{TENANT_KEY, check_scope};
use crate::edge::TenantAuth;
use crate::input::PathParam;
use crate::json_body::JsonBody;
use crate::{ApiError, AppState};

/// Publishes one of the caller's domains read-only to named tenants and/or all its children.
#[utoipa::path(post, path = "/v1/shares", tag = "shares", operation_id = "create_share",
    request_body = NewShare,
    responses((status = 201, description = "The share", body = Share)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    auth: TenantAuth,
    RawQuery(q): RawQuery,
    body: JsonBody,
) -> Result<(StatusCode, Json<Share>), ApiError> {
    let body = body.scoped::<NewShare>(&state, TENANT_KEY).await?;
    check_scope(&auth, Some(body.scope), q.as_deref())?;
    let new = body.rest?;
    let scope = auth.scope;
    let share = state
        .run_tenant(&auth.admitted, move |e| Ok(e.create_share(&scope, &new)?))
        .await?;
    Ok((StatusCode::CREATED, Json(share)))
}

/// The caller's outgoing shares.
#[utoipa::path(get, path = "/v1/shares", tag = "shares", operation_id = "list_shares",
    responses((status = 200, description = "The caller's shares", body = Shares)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    auth: TenantAuth,
    RawQuery(q): RawQuery,
) -> Result<Json<Shares>, ApiError> {
    check_scope(&auth, None, q.as_deref())?;
    let scope = auth.scope;
    let shares = state
        .run_tenant(&auth.admitted, move |e| Ok(e.shares(&scope)?))
        .await?;
    Ok(Json(Shares { shares }))
}

/// Revokes one of the caller's shares; its grantees' next request sees nothing of it.
#[utoipa::path(delete, path = "/v1/shares/{id}", tag = "shares", operation_id = "revoke_share",
    params(("id" = RecordId, Path, description = "share id")),
    responses((status = 200, description = "The revoked share", body = Share)),
    security(("bearer" = [])))]
pub async fn revoke(
    State(state): State<AppState>,
    auth: TenantAuth,
    PathParam(id): PathParam,
    RawQuery(q): RawQuery,
) -> Result<Json<Share>, ApiError> {
    check_scope(&auth, None, q.as_deref())?;
    let id = RecordId::parse_field("id", id).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let scope = auth.scope;
    let share = state
        .run_tenant(&auth.admitted, move |e| {
            Ok(e.revoke_share(&scope, id.as_str())?)
        })
        .await?;
    Ok(Json(share))
}

/// The live grants the caller's tenant holds: other tenants' domains it may search with
/// `include_shared`.
#[utoipa::path(get, path = "/v1/shares/incoming", tag = "shares", operation_id = "incoming_shares",
    responses((status = 200, description = "Live grants held", body = IncomingShares)),
    security(("bearer" = [])))]
pub async fn incoming(
    State(state): State<AppState>,
    auth: TenantAuth,
    RawQuery(q): RawQuery,
) -> Result<Json<IncomingShares>, ApiError> {
    check_scope(&auth, None, q.as_deref())?;
    let scope = auth.scope;
    let shares: Vec<IncomingShare> = state
        .run_tenant(&auth.admitted, move |e| Ok(e.incoming_shares(&scope)?))
        .await?;
    Ok(Json(IncomingShares { shares }))
}
