//! `POST /v1/feedback`: what an agent used and was shown, which trains adaptive reranking for
//! the caller's (tenant, domain) (`docs/adaptive-reranking.md`).

use axum::Json;
use axum::extract::{RawQuery, State};
use strata_types::{FeedbackAnswer, FeedbackRequest};
use utoipa::ToSchema;

use crate::bodies::ScopeFields;
use crate::edge::TenantAuth;
use crate::input::SCOPE_KEYS;
use crate::json_body::JsonBody;
use crate::{ApiError, AppState};

/// Feedback with the request's scope fields.
#[derive(ToSchema)]
#[allow(dead_code)] // The documented shape of a body the handler reads in two steps.
struct FeedbackBody {
    #[serde(flatten)]
    feedback: FeedbackRequest,
    #[serde(flatten)]
    scope: ScopeFields,
}

/// Reinforces the records an agent used (`ids`), wears down those it was shown and did not use
/// (`shown`), and moves the caller's own narrative vector in the domain toward the context
/// (`vector` or `query`): the narrative of its principal (its user tokens after binding), which
/// only searches speaking for the same principal read. Ids the caller cannot see are ignored
/// like missing ones. Needs `write`.
#[utoipa::path(post, path = "/v1/feedback", tag = "search", operation_id = "feedback",
    request_body = FeedbackBody,
    responses((status = 200, description = "Feedback recorded", body = FeedbackAnswer)),
    security(("bearer" = [])))]
pub async fn feedback(
    State(state): State<AppState>,
    auth: TenantAuth,
    RawQuery(q): RawQuery,
    body: JsonBody,
) -> Result<Json<FeedbackAnswer>, ApiError> {
    let body = body.scoped::<FeedbackRequest>(&state, SCOPE_KEYS).await?;
    let req = auth.scope_of_parts(q.as_deref(), body.scope)?;
    let feedback = body.rest?;
    let scope = auth.scope;
    let answer = state
        .run_tenant(&auth.admitted, move |e| {
            Ok(e.feedback(&scope, &req, &feedback)?)
        })
        .await?;
    Ok(Json(answer))
}
