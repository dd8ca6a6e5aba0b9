//! Operator routes under `/v1/admin`: tenants and API keys. Every handler takes an
//! [`OperatorAuth`], so a tenant credential never reaches one.

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use strata_auth::{KeyTenant, NewKey, Permission, Permissions};
use strata_types::{Domain, Millis, TenantId, UserToken, now_millis};

use crate::edge::OperatorAuth;
use crate::input::{JsonObject, PathParam, QueryInput, from_map};
use crate::{ApiError, AppState};

fn bad(e: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest(e.to_string())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTenant {
    id: String,
    display_name: Option<String>,
}

/// Registers a tenant with the server's default collections.
#[utoipa::path(post, path = "/v1/admin/tenants", tag = "admin",
    request_body(content = serde_json::Value, description = "`{id, display_name}`"),
    responses((status = 201, description = "The tenant")),
    security(("bearer" = [])))]
pub async fn create_tenant(
    State(state): State<AppState>,
    OperatorAuth(op): OperatorAuth,
    JsonObject(body): JsonObject,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let new: NewTenant = from_map(body)?;
    let id = TenantId::parse_field("id", new.id).map_err(bad)?;
    let info = state
        .run(move |e| Ok(e.create_tenant(&op, &id, new.display_name)?))
        .await?;
    tracing::info!(target: "audit", tenant = %info.id, "tenant created");
    Ok((StatusCode::CREATED, Json(json!(info))))
}

/// Every tenant.
#[utoipa::path(get, path = "/v1/admin/tenants", tag = "admin",
    responses((status = 200, description = "`{tenants: [...]}`")),
    security(("bearer" = [])))]
pub async fn list_tenants(
    State(state): State<AppState>,
    OperatorAuth(op): OperatorAuth,
) -> Result<Json<Value>, ApiError> {
    let list = state.run(move |e| Ok(e.tenants(&op)?)).await?;
    Ok(Json(json!({ "tenants": list })))
}

/// One tenant.
#[utoipa::path(get, path = "/v1/admin/tenants/{id}", tag = "admin",
    params(("id" = String, Path, description = "tenant id")),
    responses((status = 200, description = "The tenant")),
    security(("bearer" = [])))]
pub async fn get_tenant(
    State(state): State<AppState>,
    OperatorAuth(op): OperatorAuth,
    PathParam(id): PathParam,
) -> Result<Json<Value>, ApiError> {
    let id = TenantId::parse_field("id", id).map_err(bad)?;
    let info = state.run(move |e| Ok(e.tenant(&op, &id)?)).await?;
    Ok(Json(json!(info)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKeyBody {
    /// Tenant id, or `*` for another operator key.
    tenant: String,
    name: Option<String>,
    /// Absent: `read` and `write`.
    permissions: Option<Vec<Permission>>,
    user_tokens: Option<Vec<UserToken>>,
    domains: Option<Vec<Domain>>,
    expires_at: Option<Millis>,
    expires_in_secs: Option<u64>,
}

/// Mints an API key. The secret (`key`) is in this response only.
#[utoipa::path(post, path = "/v1/admin/keys", tag = "admin",
    request_body(content = serde_json::Value, description = "`{tenant, name, permissions, user_tokens, domains, expires_at | expires_in_secs}`"),
    responses((status = 201, description = "The key's info plus `key`, the secret, shown once")),
    security(("bearer" = [])))]
pub async fn create_key(
    State(state): State<AppState>,
    OperatorAuth(op): OperatorAuth,
    JsonObject(body): JsonObject,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let b: NewKeyBody = from_map(body)?;
    let tenant = KeyTenant::try_from(b.tenant)?;
    let expires_at = match (b.expires_at, b.expires_in_secs) {
        (Some(_), Some(_)) => {
            return Err(bad("expires_at, expires_in_secs: give at most one"));
        }
        (Some(t), None) => Some(t),
        (None, Some(secs)) => Some(
            now_millis()
                .saturating_add(i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)),
        ),
        (None, None) => None,
    };
    let new = NewKey {
        tenant,
        name: b.name,
        permissions: b
            .permissions
            .map(|p| Permissions::of(&p))
            .unwrap_or_else(Permissions::read_write),
        user_tokens: b.user_tokens,
        domains: b.domains,
        expires_at,
    };
    let auth = state.auth.clone();
    let created = state
        .run(move |e| Ok(auth.create_key(e.credentials(), &op, new)?))
        .await?;
    tracing::info!(target: "audit", key = %created.info.id, "api key created");
    let mut body = json!(created.info);
    body["key"] = Value::String(created.secret);
    Ok((StatusCode::CREATED, Json(body)))
}

/// Every key (never their secrets), or one tenant's with `?tenant=`.
#[utoipa::path(get, path = "/v1/admin/keys", tag = "admin",
    params(("tenant" = Option<String>, Query, description = "only this tenant's keys")),
    responses((status = 200, description = "`{keys: [...]}`")),
    security(("bearer" = [])))]
pub async fn list_keys(
    State(state): State<AppState>,
    OperatorAuth(op): OperatorAuth,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let q = QueryInput::parse(q.as_deref(), &["tenant"])?;
    let tenant = q
        .get("tenant")
        .map(|t| KeyTenant::try_from(t.to_owned()))
        .transpose()?;
    let auth = state.auth.clone();
    let keys = state
        .run(move |e| Ok(auth.list_keys(e.credentials(), &op, tenant.as_ref())?))
        .await?;
    Ok(Json(json!({ "keys": keys })))
}

/// Revokes a key at once.
#[utoipa::path(delete, path = "/v1/admin/keys/{id}", tag = "admin",
    params(("id" = String, Path, description = "key id")),
    responses((status = 200, description = "The revoked key's info")),
    security(("bearer" = [])))]
pub async fn revoke_key(
    State(state): State<AppState>,
    OperatorAuth(op): OperatorAuth,
    PathParam(id): PathParam,
) -> Result<Json<Value>, ApiError> {
    let auth = state.auth.clone();
    let info = state
        .run(move |e| Ok(auth.revoke_key(e.credentials(), &op, &id)?))
        .await?;
    tracing::info!(target: "audit", key = %info.id, "api key revoked");
    Ok(Json(json!(info)))
}
