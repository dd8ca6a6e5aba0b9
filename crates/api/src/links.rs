//! Link routes (`POST /v1/links`, `POST /v1/links/delete`, `GET /v1/memories/{id}/links`)
//! and `POST /v1/recall`, which spreads activation over them.

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use strata_engine::RecordLinks;
use strata_types::{Link, LinkRef, NewLink, RECALL_KEYS, RecallParams, RecordId, SearchRequest};
use utoipa::ToSchema;

use crate::answer_budget::Shape;
use crate::answer_size::Carried;
use crate::bodies::{Deleted, RecallAnswer, ScopeFields};
use crate::edge::TenantAuth;
use crate::input::{PathParam, QueryInput, SCOPE_KEYS, ScopeParts, from_map};
use crate::json_body::{JsonBody, Scoped};
use crate::{ApiError, AppState};

/// A new link with the request's scope fields.
#[derive(ToSchema)]
#[allow(dead_code)] // The documented shape of a body the handler reads in two steps.
struct NewLinkBody {
    #[serde(flatten)]
    link: NewLink,
    #[serde(flatten)]
    scope: ScopeFields,
}

/// Links two records the request can see (`source` → `target`, a `relation` label, a `weight`
/// in (0, 1]); linking them again with the same relation replaces the weight. An end that is
/// missing, foreign or invisible is `404`. A credential bound to user tokens must be able to
/// write one end at least (its tokens a non-empty subset of the credential's): a link between
/// two tenant-shared or co-owned records is `403 SCOPE_FORBIDDEN`.
#[utoipa::path(post, path = "/v1/links", tag = "links", operation_id = "create_link",
    request_body = NewLinkBody,
    responses((status = 201, description = "The link", body = Link)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    auth: TenantAuth,
    RawQuery(q): RawQuery,
    body: JsonBody,
) -> Result<(StatusCode, Json<Link>), ApiError> {
    let body = body.scoped::<NewLink>(&state, SCOPE_KEYS).await?;
    let req = auth.scope_of_parts(q.as_deref(), body.scope)?;
    let new = body.rest?;
    let scope = auth.scope;
    let link = state
        .run_tenant(&auth.admitted, move |e| Ok(e.link(&scope, &req, new)?))
        .await?;
    Ok((StatusCode::CREATED, Json(link)))
}

/// Which link to remove, with the request's scope fields.
#[derive(ToSchema)]
#[allow(dead_code)] // The documented shape of a body the handler reads in two steps.
struct LinkRefBody {
    #[serde(flatten)]
    link: LinkRef,
    #[serde(flatten)]
    scope: ScopeFields,
}

/// Removes the link `source` → `target` with `relation`. A missing link, or an end the
/// request cannot see, is `404`; for a credential bound to user tokens, a link neither end of
/// which it may write is `403 SCOPE_FORBIDDEN`.
#[utoipa::path(post, path = "/v1/links/delete", tag = "links", operation_id = "delete_link",
    request_body = LinkRefBody,
    responses((status = 200, description = "Removed (`deleted` is 1)", body = Deleted)),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    auth: TenantAuth,
    RawQuery(q): RawQuery,
    body: JsonBody,
) -> Result<Json<Deleted>, ApiError> {
    let body = body.scoped::<LinkRef>(&state, SCOPE_KEYS).await?;
    let req = auth.scope_of_parts(q.as_deref(), body.scope)?;
    let which = body.rest?;
    let scope = auth.scope;
    state
        .run_tenant(&auth.admitted, move |e| Ok(e.unlink(&scope, &req, &which)?))
        .await?;
    Ok(Json(Deleted { deleted: 1 }))
}

/// A record's links both ways, leaving out those whose other end the request cannot see.
#[utoipa::path(get, path = "/v1/memories/{id}/links", tag = "links", operation_id = "list_links",
    params(("id" = RecordId, Path, description = "record id")),
    responses((status = 200, description = "Outgoing and incoming links", body = RecordLinks)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    auth: TenantAuth,
    PathParam(id): PathParam,
    RawQuery(q): RawQuery,
) -> Result<Json<RecordLinks>, ApiError> {
    let id = RecordId::parse(id).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let q = QueryInput::parse(q.as_deref(), &[])?;
    let req = auth.request_scope(ScopeParts::default(), q.scope)?;
    let scope = auth.scope;
    let links = state
        .run_tenant(&auth.admitted, move |e| {
            Ok(e.record_links(&scope, &req, &id)?)
        })
        .await?;
    Ok(Json(links))
}

/// A recall: a search body, the spreading parameters and the request's scope fields.
#[derive(ToSchema)]
#[allow(dead_code)] // The documented shape of a body the handler reads in three steps.
struct RecallBody {
    #[serde(flatten)]
    search: SearchRequest,
    #[serde(flatten)]
    spreading: RecallParams,
    #[serde(flatten)]
    scope: ScopeFields,
}

/// Searches (any mode, the same body as `/v1/search`), then spreads activation from the best
/// hits over links, hop by hop, through records the request can see only. Each hit says how it
/// was reached (`"via": "seed"` or the path of links) and its activation.
#[utoipa::path(post, path = "/v1/recall", tag = "search", operation_id = "recall",
    request_body = RecallBody,
    responses((status = 200, description = "Hits by activation, best first", body = RecallAnswer)),
    security(("bearer" = [])))]
pub async fn recall(
    State(state): State<AppState>,
    auth: TenantAuth,
    RawQuery(q): RawQuery,
    body: JsonBody,
) -> Result<Response, ApiError> {
    let body = body
        .convert_own(&state, |mut body| {
            let scope = ScopeParts::take_from_body(&mut body, SCOPE_KEYS)?;
            let mut spreading = serde_json::Map::new();
            for key in RECALL_KEYS {
                if let Some(v) = body.remove(*key) {
                    spreading.insert((*key).to_owned(), v);
                }
            }
            let rest = from_map::<RecallParams>(spreading)
                .and_then(|params| Ok((params, from_map::<SearchRequest>(body)?)));
            Ok(Scoped { scope, rest })
        })
        .await?;
    let req = auth.scope_of_parts(q.as_deref(), body.scope)?;
    let (params, search) = body.rest?;
    // Up to `k` hits, with their vectors when asked: reserved in the tenant's answer budget
    // before the recall runs (`answer_budget`), as a search's answer is.
    let shape = Shape::of_search(&search);
    let mut hold = state.reserve_answer(&auth.admitted, search.k, shape)?;
    let scope = auth.scope;
    // Like search: the whole recall, seed search and spreading, runs on the fair pool in the
    // tenant's share, and hits are projected to `include` and serialised there.
    let bytes = state
        .run_tenant_read(&auth.admitted, move |e| {
            let response = e.recall(&scope, &req, &search, &params)?;
            let hits = response.hits.len();
            // Measured as fetched, before they are encoded, as a search's hits are.
            let carried = Carried::of_search(&search);
            hold.fetched(response.hits.iter().map(|h| carried.recall_hit(h)).sum())?;
            let buf = serde_json::to_vec(&RecallAnswer::project(response, &search))
                .map_err(|e| ApiError::Internal(format!("serialising a recall answer: {e}")))?;
            hold.into_body(buf, hits, shape)
        })
        .await?;
    Ok(([(CONTENT_TYPE, "application/json")], bytes).into_response())
}
