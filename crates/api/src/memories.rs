//! Memory routes: write (single or batch), get, patch, delete by id or filter, list, count.

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use strata_engine::Page;
use strata_types::{Filter, NewRecord, RecordId, RecordPatch};

use crate::edge::TenantAuth;
use crate::input::{JsonObject, PathParam, QueryInput, SCOPE_KEYS, ScopeParts, from_map};
use crate::{ApiError, AppState};

/// Page size of a list when the request names none.
const DEFAULT_LIMIT: usize = 100;

/// In a single-record write, `user_tokens`, `run_id` and `memory_scope` belong to the record;
/// only these body fields are request scope.
const RECORD_BODY_SCOPE_KEYS: &[&str] = &["tenant_id", "memory_domain", "user_match"];

fn bad(e: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest(e.to_string())
}

fn record_id(s: String) -> Result<RecordId, ApiError> {
    RecordId::parse(s).map_err(bad)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch {
    records: Vec<NewRecord>,
}

/// Writes one record, or a batch as `{"records": [...]}`, atomically.
#[utoipa::path(post, path = "/v1/memories", tag = "memories",
    request_body(content = serde_json::Value, description = "A record (`content`, `vector`, `user_tokens`, `metadata`, …) or `{\"records\": [...]}` with scope fields"),
    responses((status = 201, description = "Written: `{id, created, deduplicated}` or `{results: [...]}`")),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    auth: TenantAuth,
    RawQuery(q): RawQuery,
    JsonObject(mut body): JsonObject,
) -> Result<Response, ApiError> {
    let q = QueryInput::parse(q.as_deref(), &[])?;
    let batch = body.contains_key("records");
    let keys = if batch {
        SCOPE_KEYS
    } else {
        RECORD_BODY_SCOPE_KEYS
    };
    let parts = ScopeParts::take_from_body(&mut body, keys)?;
    let req = auth.request_scope(parts, q.scope)?;
    let records = if batch {
        from_map::<Batch>(body)?.records
    } else {
        vec![from_map::<NewRecord>(body)?]
    };
    let scope = auth.scope;
    let outcomes = state
        .run_tenant(&auth.admitted, move |e| Ok(e.put(&scope, &req, records)?))
        .await?;
    let status = if outcomes.iter().any(|o| o.created) {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let body = match (batch, outcomes.first()) {
        (false, Some(one)) => json!(one),
        _ => json!({ "results": outcomes }),
    };
    Ok((status, Json(body)).into_response())
}

/// A record by id; a foreign or invisible id is `404` like a missing one.
#[utoipa::path(get, path = "/v1/memories/{id}", tag = "memories",
    params(("id" = String, Path, description = "record id")),
    responses((status = 200, description = "The record"), (status = 404, description = "Not found")),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    auth: TenantAuth,
    PathParam(id): PathParam,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let id = record_id(id)?;
    let q = QueryInput::parse(q.as_deref(), &[])?;
    let req = auth.request_scope(ScopeParts::default(), q.scope)?;
    let scope = auth.scope;
    let record = state
        .run_tenant(&auth.admitted, move |e| Ok(e.get(&scope, &req, &id)?))
        .await?;
    Ok(Json(json!(record)))
}

/// Changes a record; `metadata` merges as a JSON merge patch.
#[utoipa::path(patch, path = "/v1/memories/{id}", tag = "memories",
    params(("id" = String, Path, description = "record id")),
    request_body(content = serde_json::Value, description = "Fields to change"),
    responses((status = 200, description = "The new version")),
    security(("bearer" = [])))]
pub async fn patch(
    State(state): State<AppState>,
    auth: TenantAuth,
    PathParam(id): PathParam,
    RawQuery(q): RawQuery,
    JsonObject(mut body): JsonObject,
) -> Result<Json<Value>, ApiError> {
    let id = record_id(id)?;
    let q = QueryInput::parse(q.as_deref(), &[])?;
    // `user_tokens`, `run_id` and `memory_scope` in the body are the record's new values.
    let parts = ScopeParts::take_from_body(&mut body, RECORD_BODY_SCOPE_KEYS)?;
    let req = auth.request_scope(parts, q.scope)?;
    let patch: RecordPatch = from_map(body)?;
    let scope = auth.scope;
    let record = state
        .run_tenant(&auth.admitted, move |e| {
            Ok(e.patch(&scope, &req, &id, patch)?)
        })
        .await?;
    Ok(Json(json!(record)))
}

/// Deletes a record by id.
#[utoipa::path(delete, path = "/v1/memories/{id}", tag = "memories",
    params(("id" = String, Path, description = "record id")),
    responses((status = 200, description = "`{\"deleted\": 1}`")),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    auth: TenantAuth,
    PathParam(id): PathParam,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let id = record_id(id)?;
    let q = QueryInput::parse(q.as_deref(), &[])?;
    let req = auth.request_scope(ScopeParts::default(), q.scope)?;
    let scope = auth.scope;
    state
        .run_tenant(&auth.admitted, move |e| Ok(e.delete(&scope, &req, &id)?))
        .await?;
    Ok(Json(json!({ "deleted": 1 })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteWhere {
    filter: Filter,
}

/// Deletes every visible record matching `filter` (`{}` matches all), in one transaction.
#[utoipa::path(post, path = "/v1/memories/delete", tag = "memories",
    request_body(content = serde_json::Value, description = "`{\"filter\": {...}}` with scope fields"),
    responses((status = 200, description = "`{\"deleted\": n}`")),
    security(("bearer" = [])))]
pub async fn delete_where(
    State(state): State<AppState>,
    auth: TenantAuth,
    RawQuery(q): RawQuery,
    JsonObject(mut body): JsonObject,
) -> Result<Json<Value>, ApiError> {
    let req = auth.scope_of_body(q.as_deref(), &mut body)?;
    let DeleteWhere { filter } = from_map(body)?;
    let scope = auth.scope;
    let n = state
        .run_tenant(&auth.admitted, move |e| {
            Ok(e.delete_where(&scope, &req, &filter)?)
        })
        .await?;
    Ok(Json(json!({ "deleted": n })))
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct ListBody {
    filter: Option<Filter>,
    after: Option<RecordId>,
    limit: Option<usize>,
}

/// Lists visible records matching a filter, in id order, a page at a time (`after` = the
/// previous page's `next`). Query: scope fields, `filter` (JSON), `after`, `limit`.
#[utoipa::path(get, path = "/v1/memories/list", tag = "memories",
    responses((status = 200, description = "`{records, next}`")),
    security(("bearer" = [])))]
pub async fn list_get(
    State(state): State<AppState>,
    auth: TenantAuth,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let q = QueryInput::parse(q.as_deref(), &["filter", "after", "limit"])?;
    let list = ListBody {
        filter: q
            .get("filter")
            .map(|f| {
                let v: Value = serde_json::from_str(f).map_err(|e| bad(format!("filter: {e}")))?;
                Filter::parse(&v).map_err(bad)
            })
            .transpose()?,
        after: q
            .get("after")
            .map(|a| record_id(a.to_owned()))
            .transpose()?,
        limit: q
            .get("limit")
            .map(|l| l.parse().map_err(|_| bad("limit: expected a number")))
            .transpose()?,
    };
    let req = auth.request_scope(ScopeParts::default(), q.scope)?;
    list_records(state, auth, req, list).await
}

/// Like `GET /v1/memories/list`, with everything in the body.
#[utoipa::path(post, path = "/v1/memories/list", tag = "memories",
    request_body(content = serde_json::Value, description = "`{filter, after, limit}` with scope fields"),
    responses((status = 200, description = "`{records, next}`")),
    security(("bearer" = [])))]
pub async fn list_post(
    State(state): State<AppState>,
    auth: TenantAuth,
    RawQuery(q): RawQuery,
    JsonObject(mut body): JsonObject,
) -> Result<Json<Value>, ApiError> {
    let req = auth.scope_of_body(q.as_deref(), &mut body)?;
    let list: ListBody = from_map(body)?;
    list_records(state, auth, req, list).await
}

async fn list_records(
    state: AppState,
    auth: TenantAuth,
    req: strata_types::RequestScope,
    list: ListBody,
) -> Result<Json<Value>, ApiError> {
    let page = Page {
        after: list.after,
        limit: list.limit.unwrap_or(DEFAULT_LIMIT),
    };
    let scope = auth.scope;
    let page = state
        .run_tenant(&auth.admitted, move |e| {
            Ok(e.scan(&scope, &req, list.filter.as_ref(), page)?)
        })
        .await?;
    Ok(Json(json!(page)))
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct CountBody {
    filter: Option<Filter>,
}

/// Counts visible records matching a filter.
#[utoipa::path(post, path = "/v1/memories/count", tag = "memories",
    request_body(content = serde_json::Value, description = "`{filter}` with scope fields"),
    responses((status = 200, description = "`{\"count\": n}`")),
    security(("bearer" = [])))]
pub async fn count(
    State(state): State<AppState>,
    auth: TenantAuth,
    RawQuery(q): RawQuery,
    JsonObject(mut body): JsonObject,
) -> Result<Json<Value>, ApiError> {
    let req = auth.scope_of_body(q.as_deref(), &mut body)?;
    let CountBody { filter } = from_map(body)?;
    let scope = auth.scope;
    let n = state
        .run_tenant(&auth.admitted, move |e| {
            Ok(e.count(&scope, &req, filter.as_ref())?)
        })
        .await?;
    Ok(Json(json!({ "count": n })))
}
