//! `POST /v1/search`: the scope fields and a search request in one body.

use axum::Json;
use axum::extract::{RawQuery, State};
use strata_types::SearchRequest;
use utoipa::ToSchema;

use crate::bodies::{ScopeFields, SearchAnswer};
use crate::edge::TenantAuth;
use crate::input::{JsonObject, from_map_naming};
use crate::{ApiError, AppState};

/// A search with the request's scope fields.
#[derive(ToSchema)]
#[allow(dead_code)] // The documented shape of a body the handler reads in two steps.
struct SearchBody {
    #[serde(flatten)]
    search: SearchRequest,
    #[serde(flatten)]
    scope: ScopeFields,
}

/// Vector, text or hybrid search over one collection; scope applies before top-k.
#[utoipa::path(post, path = "/v1/search", tag = "search", operation_id = "search",
    request_body = SearchBody,
    responses((status = 200, description = "Hits, best first", body = SearchAnswer)),
    security(("bearer" = [])))]
pub async fn search(
    State(state): State<AppState>,
    auth: TenantAuth,
    RawQuery(q): RawQuery,
    JsonObject(mut body): JsonObject,
) -> Result<Json<SearchAnswer>, ApiError> {
    let req = auth.scope_of_body(q.as_deref(), &mut body)?;
    let search: SearchRequest = from_map_naming(body)?;
    let scope = auth.scope;
    // Hits are cut down to what `include` asks for on the pool, and serialised straight
    // from these typed structs.
    let answer = state
        .run_tenant(&auth.admitted, move |e| {
            let response = e.search(&scope, &req, &search)?;
            Ok(SearchAnswer::project(response, &search))
        })
        .await?;
    Ok(Json(answer))
}
