//! `POST /v1/memories/{id}/evidence`: one piece of evidence updates a record's confidence by
//! the Beta-Bernoulli rule documented in `docs/memory-intelligence.md`.

use axum::Json;
use axum::extract::{RawQuery, State};
use strata_types::{EvidenceRequest, Include, RecordId};
use utoipa::ToSchema;

use crate::bodies::ScopeFields;
use crate::edge::TenantAuth;
use crate::input::{PathParam, QueryInput, SCOPE_KEYS};
use crate::json_body::JsonBody;
use crate::memories::INCLUDE;
use crate::record_body::{INCLUDE_DOC, RecordBody, RecordFields};
use crate::{ApiError, AppState};

/// Evidence with the request's scope fields.
#[derive(ToSchema)]
#[allow(dead_code)] // The documented shape of a body the handler reads in two steps.
struct EvidenceBody {
    #[serde(flatten)]
    evidence: EvidenceRequest,
    #[serde(flatten)]
    scope: ScopeFields,
}

/// Adds evidence about a memory: `{"signal": x}` with x in [0, 1], `{"corroborate": true}` or
/// `{"contradict": true}`. Answers the record with its new confidence, like `GET` does: by
/// default the whole record without its vector (`include=record,vector` for the vector too).
/// A foreign or invisible id is `404` like a missing one; a credential bound to user tokens may
/// give evidence only on a record whose tokens are a non-empty subset of its own (a
/// tenant-shared or co-owned one is `403 SCOPE_FORBIDDEN`).
#[utoipa::path(post, path = "/v1/memories/{id}/evidence", tag = "memories",
    operation_id = "add_evidence",
    params(("id" = RecordId, Path, description = "record id"),
        ("include" = Option<Vec<Include>>, Query, style = Form, explode = false,
            description = INCLUDE_DOC)),
    request_body = EvidenceBody,
    responses((status = 200, body = RecordBody,
        description = "The record with its updated confidence, with what `include` names")),
    security(("bearer" = [])))]
pub async fn add(
    State(state): State<AppState>,
    auth: TenantAuth,
    PathParam(id): PathParam,
    RawQuery(q): RawQuery,
    body: JsonBody,
) -> Result<Json<RecordBody>, ApiError> {
    // Split first: a body naming another tenant is refused before the id and the query
    // string are judged, whatever the body's size (`JsonBody`).
    let body = body.scoped::<EvidenceRequest>(&state, SCOPE_KEYS).await?;
    let id = RecordId::parse(id).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let q = QueryInput::parse(q.as_deref(), &[INCLUDE])?;
    let fields = RecordFields::from_query(q.get(INCLUDE))?;
    let req = auth.request_scope(body.scope, q.scope)?;
    let evidence = body
        .rest?
        .evidence()
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let scope = auth.scope;
    let record = state
        .run_tenant(&auth.admitted, move |e| {
            Ok(e.add_evidence(&scope, &req, &id, evidence)?)
        })
        .await?;
    Ok(Json(RecordBody::project(record, fields)))
}
