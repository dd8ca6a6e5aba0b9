//! Shared knowledge routes (`docs/shared-knowledge.md`): an owner publishes a domain read-only
//! (`POST /v1/shares`, needs `admin`), lists (`GET /v1/shares`) and revokes
//! (`DELETE /v1/shares/{id}`) its shares; a grantee lists what it holds or is offered
//! (`GET /v1/shares/incoming`) and accepts or declines an offer by name
//! (`POST /v1/shares/incoming/{id}/accept`, `…/decline`, needs `admin`). Searches opt in with
//! `include_shared`, and see accepted shares only.

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use strata_engine::{IncomingShare, NewShare, Share};
use strata_types::{RecordId, TenantId};

use crate::bodies::{IncomingShares, Shares};
use crate::collections::{TENANT_KEY, check_scope};
use crate::edge::TenantAuth;
use crate::input::PathParam;
use crate::json_body::JsonBody;
use crate::{ApiError, AppState};

/// Publishes one of the caller's domains read-only to named tenants and/or all its children.
#[utoipa::path(post, path = "/v1/shares", tag = "shares", operation_id = "create_share",
    request_body = NewShareBody,
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

/// The live grants the caller's tenant holds (`state: accepted`: other tenants' domains it may
/// search with `include_shared`) and the shares offered to it by name that it has not
/// accepted (`state: offered`: no search sees them).
#[utoipa::path(get, path = "/v1/shares/incoming", tag = "shares", operation_id = "incoming_shares",
    responses((status = 200, description = "Live grants and offers held", body = IncomingShares)),
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

/// Accepts a share offered to the caller's tenant by name: from the next request on, its
/// searches may include it. Needs `admin`, bound to neither user tokens nor domains.
#[utoipa::path(post, path = "/v1/shares/incoming/{id}/accept", tag = "shares",
    operation_id = "accept_share",
    request_body(content = Option<ConsentBodyDoc>, description = "Optional: no body, or `{}`"),
    params(("id" = RecordId, Path, description = "share id")),
    responses((status = 200, description = "The accepted share", body = IncomingShare)),
    security(("bearer" = [])))]
pub async fn accept(
    State(state): State<AppState>,
    auth: TenantAuth,
    PathParam(id): PathParam,
    RawQuery(q): RawQuery,
    body: JsonBody,
) -> Result<Json<IncomingShare>, ApiError> {
    consent(state, auth, id, q, body, |e, scope, id| {
        e.accept_share(scope, id)
    })
    .await
}

/// Declines a share offered to the caller's tenant by name, or gives up one it accepted: its
/// searches see nothing of it from the next request, and the owner no longer lists the tenant
/// as a grantee. A share held as a child is not the child's to decline (`404`). Needs `admin`,
/// bound to neither user tokens nor domains.
#[utoipa::path(post, path = "/v1/shares/incoming/{id}/decline", tag = "shares",
    operation_id = "decline_share",
    request_body(content = Option<ConsentBodyDoc>, description = "Optional: no body, or `{}`"),
    params(("id" = RecordId, Path, description = "share id")),
    responses((status = 200, description = "The declined share, as it stood", body = IncomingShare)),
    security(("bearer" = [])))]
pub async fn decline(
    State(state): State<AppState>,
    auth: TenantAuth,
    PathParam(id): PathParam,
    RawQuery(q): RawQuery,
    body: JsonBody,
) -> Result<Json<IncomingShare>, ApiError> {
    consent(state, auth, id, q, body, |e, scope, id| {
        e.decline_share(scope, id)
    })
    .await
}

/// The body of accepting and declining: none, or `{}` (a `tenant_id` in it must be the
/// caller's, as on every route).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentBody {}

/// [`ConsentBody`] as documented: with the `tenant_id` the handler takes out first.
#[derive(utoipa::ToSchema)]
#[schema(as = ConsentBody)]
#[allow(dead_code)] // The documented shape of a body the handler reads in two steps.
struct ConsentBodyDoc {
    /// Checked against the credential; another tenant is 403.
    tenant_id: Option<TenantId>,
}

/// A new share; `tenant_id`, if given, is checked against the credential.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // The documented shape of a body the handler reads in two steps.
struct NewShareBody {
    #[serde(flatten)]
    share: NewShare,
    tenant_id: Option<TenantId>,
}

/// What accepting and declining share: the checks (the body's `tenant_id` first, like every
/// route's), the share id, the engine call.
async fn consent(
    state: AppState,
    auth: TenantAuth,
    id: String,
    q: Option<String>,
    body: JsonBody,
    act: fn(
        &strata_engine::Engine,
        &strata_auth::TenantScope,
        &str,
    ) -> Result<IncomingShare, strata_engine::EngineError>,
) -> Result<Json<IncomingShare>, ApiError> {
    let body = body.scoped::<ConsentBody>(&state, TENANT_KEY).await?;
    check_scope(&auth, Some(body.scope), q.as_deref())?;
    body.rest?;
    let id = RecordId::parse_field("id", id).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let scope = auth.scope;
    let share = state
        .run_tenant(&auth.admitted, move |e| Ok(act(e, &scope, id.as_str())?))
        .await?;
    Ok(Json(share))
}
