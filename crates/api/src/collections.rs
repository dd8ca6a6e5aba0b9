//! Collection routes: list, create, delete (the last two need `admin`).

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use strata_types::{CollectionName, Metric};

use crate::edge::TenantAuth;
use crate::input::{JsonObject, PathParam, QueryInput, ScopeParts, from_map};
use crate::{ApiError, AppState};

fn bad(e: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest(e.to_string())
}

/// Collections are tenant-wide, so of the scope fields only `tenant_id` (checked) matters.
fn check_scope(
    auth: &TenantAuth,
    body: Option<&mut serde_json::Map<String, Value>>,
    q: Option<&str>,
) -> Result<(), ApiError> {
    let q = QueryInput::parse(q, &[])?;
    let parts = match body {
        Some(b) => ScopeParts::take_from_body(b, &["tenant_id"])?,
        None => ScopeParts::default(),
    };
    auth.request_scope(parts, q.scope).map(|_| ())
}

/// The tenant's collections.
#[utoipa::path(get, path = "/v1/collections", tag = "collections",
    responses((status = 200, description = "`{collections: [...]}`")),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    auth: TenantAuth,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, ApiError> {
    check_scope(&auth, None, q.as_deref())?;
    let scope = auth.scope;
    let list = state
        .run_tenant(&auth.admitted, move |e| Ok(e.collections(&scope)?))
        .await?;
    Ok(Json(json!({ "collections": list })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewCollection {
    name: String,
    dim: u32,
    #[serde(default = "cosine")]
    metric: Metric,
}

fn cosine() -> Metric {
    Metric::Cosine
}

/// Creates a collection (`name`, `dim`, `metric`: cosine, dot or l2).
#[utoipa::path(post, path = "/v1/collections", tag = "collections",
    request_body(content = serde_json::Value, description = "`{name, dim, metric}`"),
    responses((status = 201, description = "The collection")),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    auth: TenantAuth,
    RawQuery(q): RawQuery,
    JsonObject(mut body): JsonObject,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    check_scope(&auth, Some(&mut body), q.as_deref())?;
    let new: NewCollection = from_map(body)?;
    let name = CollectionName::parse_field("name", new.name).map_err(bad)?;
    let scope = auth.scope;
    let c = state
        .run_tenant(&auth.admitted, move |e| {
            Ok(e.create_collection(&scope, &name, new.dim, new.metric)?)
        })
        .await?;
    Ok((StatusCode::CREATED, Json(json!(c))))
}

/// Deletes a collection and every record in it.
#[utoipa::path(delete, path = "/v1/collections/{name}", tag = "collections",
    params(("name" = String, Path, description = "collection name")),
    responses((status = 200, description = "`{deleted_records: n}`")),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    auth: TenantAuth,
    PathParam(name): PathParam,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, ApiError> {
    check_scope(&auth, None, q.as_deref())?;
    let name = CollectionName::parse_field("name", name).map_err(bad)?;
    let scope = auth.scope;
    let n = state
        .run_tenant(&auth.admitted, move |e| {
            Ok(e.delete_collection(&scope, &name)?)
        })
        .await?;
    Ok(Json(json!({ "deleted_records": n })))
}
