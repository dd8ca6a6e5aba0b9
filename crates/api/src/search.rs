//! `POST /v1/search`: the scope fields and a search request in one body.

use axum::Json;
use axum::extract::{RawQuery, State};
use serde_json::{Value, json};
use strata_types::SearchRequest;

use crate::edge::TenantAuth;
use crate::input::{JsonObject, from_map};
use crate::{ApiError, AppState};

/// Vector, text or hybrid search over one collection; scope applies before top-k.
#[utoipa::path(post, path = "/v1/search", tag = "search",
    request_body(content = serde_json::Value, description = "`vector`, `query`, `k`, `modality`, `filter`, `min_score`, `mode`, `fusion`, `explain`, `ef`, with scope fields"),
    responses((status = 200, description = "`{hits, mode, exact}`")),
    security(("bearer" = [])))]
pub async fn search(
    State(state): State<AppState>,
    auth: TenantAuth,
    RawQuery(q): RawQuery,
    JsonObject(mut body): JsonObject,
) -> Result<Json<Value>, ApiError> {
    let req = auth.scope_of_body(q.as_deref(), &mut body)?;
    let search: SearchRequest = from_map(body)?;
    let scope = auth.scope;
    let response = state
        .run_tenant(
            &auth.admitted,
            move |e| Ok(e.search(&scope, &req, &search)?),
        )
        .await?;
    Ok(Json(json!(response)))
}
