//! Re-embedding a collection with the server's model (needs `admin`): a dry-run plan, an
//! online re-embed that runs in the background, and its progress.

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use strata_auth::TenantScope;
use strata_engine::{ReembedPlan, ReembedStatus};
use strata_types::{CollectionName, TenantId};
use tracing::Instrument;
use utoipa::ToSchema;

use crate::admission::Admitted;
use crate::collections::{TENANT_KEY, check_scope};
use crate::edge::TenantAuth;
use crate::input::{PathParam, ScopeParts, from_map};
use crate::json_body::{JsonBody, Scoped};
use crate::{ApiError, AppState};

/// What `POST /v1/collections/{name}/reembed` is asked to do.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReembedRequest {
    /// `true`: only report what a re-embed would do and how long it would take.
    #[serde(default)]
    #[schema(default = false)]
    dry_run: bool,
    /// Checked against the credential, like on every route (taken out of the body by
    /// `check_scope` before the rest is read; here for the schema).
    #[allow(dead_code)]
    tenant_id: Option<TenantId>,
}

fn collection(name: String) -> Result<CollectionName, ApiError> {
    CollectionName::parse_field("name", name).map_err(|e| ApiError::BadRequest(e.to_string()))
}

/// Re-embeds a collection with the server's embedding model. With `dry_run`, answers `200`
/// with the plan (records, text bytes, estimated duration, old and new model). Otherwise starts
/// the re-embed and answers `202` at once: reads and writes keep working on the old vectors
/// until the collection switches to the new model in one transaction. Follow it with `GET`.
/// Needs `admin` and `all_principals` and a credential bound to neither domains nor user tokens
/// (a re-embed and its counts cover every record of the collection, private ones included); a
/// bound one is `403 SCOPE_FORBIDDEN`, one without `all_principals` `403 FORBIDDEN`, dry run
/// included.
#[utoipa::path(post, path = "/v1/collections/{name}/reembed", tag = "collections",
    operation_id = "reembed_collection",
    params(("name" = CollectionName, Path, description = "collection name")),
    request_body = ReembedRequest,
    responses(
        (status = 200, description = "Dry run: what a re-embed would do", body = ReembedPlan),
        (status = 202, description = "Started; the job's status", body = ReembedStatus)),
    security(("bearer" = [])))]
pub async fn start(
    State(state): State<AppState>,
    auth: TenantAuth,
    PathParam(name): PathParam,
    RawQuery(q): RawQuery,
    body: JsonBody,
) -> Result<Response, ApiError> {
    let body = body
        .convert_own(&state, |mut body| {
            let scope = ScopeParts::take_from_body(&mut body, TENANT_KEY)?;
            // Read by hand so a bad value names its field (serde's message does not).
            let rest = if body.get("dry_run").is_some_and(|v| !v.is_boolean()) {
                Err(ApiError::BadRequest(
                    "dry_run: expected true or false".into(),
                ))
            } else {
                from_map::<ReembedRequest>(body)
            };
            Ok(Scoped { scope, rest })
        })
        .await?;
    check_scope(&auth, Some(body.scope), q.as_deref())?;
    let req = body.rest?;
    let name = collection(name)?;
    let scope = auth.scope;
    if req.dry_run {
        let plan = state
            .run_tenant(&auth.admitted, move |e| Ok(e.reembed_plan(&scope, &name)?))
            .await?;
        return Ok(Json(plan).into_response());
    }
    // The job outlives the request, so it takes no in-flight slot, but each of its steps is
    // queued in the tenant's fair share. Admitted before the job exists, so a refusal here
    // cannot leave a job marked running with nothing to drive it.
    let admitted = state.admit_background(&scope)?;
    // Started and handed to its driver on a task of its own, which a client that hangs up does
    // not cancel: the start marks the job running, and a start cut off before its driver was
    // spawned left it marked running with nothing to drive it, refusing every later start
    // until a restart. The task keeps the request's admission meanwhile.
    let request = auth.admitted;
    let start = async move {
        let (job_scope, job_name) = (scope.clone(), name.clone());
        let status = state
            .run_tenant(&request, move |e| {
                Ok(e.reembed_start(&job_scope, &job_name)?)
            })
            .await?;
        let job = status
            .job
            .ok_or_else(|| ApiError::Internal("a started re-embed has no job id".into()))?;
        crate::over_share_lane::spawn(drive(state, admitted, scope, name, job));
        Ok::<_, ApiError>(status)
    };
    let status = crate::timing::spawn_carrying(start.instrument(tracing::Span::current()))
        .await
        .map_err(|e| ApiError::Internal(format!("re-embed start task: {e}")))??;
    Ok((StatusCode::ACCEPTED, Json(status)).into_response())
}

/// Runs a started re-embed to its end, one pool job per step.
async fn drive(
    state: AppState,
    admitted: Admitted,
    scope: TenantScope,
    name: CollectionName,
    job: u64,
) {
    loop {
        let (s, n) = (scope.clone(), name.clone());
        match state
            .run_tenant(&admitted, move |e| Ok(e.reembed_step(&s, &n, job)?))
            .await
        {
            Ok(true) => {}
            Ok(false) => break,
            Err(ApiError::Overloaded(_)) => {
                // The pool is full: wait for room rather than fail a long job.
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Err(e) => return abandon(&state, &scope, &name, job, &e),
        }
    }
    let (s, n) = (scope.clone(), name.clone());
    loop {
        let (s, n) = (s.clone(), n.clone());
        match state
            .run_tenant(&admitted, move |e| Ok(e.reembed_finish(&s, &n, job)?))
            .await
        {
            Ok(status) => {
                tracing::info!(collection = %name, records = status.records_embedded, "re-embed done");
                return;
            }
            Err(ApiError::Overloaded(_)) => {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Err(e) => return abandon(&state, &scope, &name, job, &e),
        }
    }
}

/// The engine marks its own failures; this covers the pool's (e.g. shutting down).
fn abandon(state: &AppState, scope: &TenantScope, name: &CollectionName, job: u64, e: &ApiError) {
    tracing::warn!(collection = %name, error = %e, "re-embed stopped");
    state
        .engine
        .reembed_abandon(scope, name, job, &format!("stopped: {e}"));
}

/// The progress of a collection's re-embed, or the result of its last one, kept across restarts
/// (one the server stopped while it ran reads `failed`, its error beginning `interrupted`;
/// `none` if none is known).
/// Needs `admin` and `all_principals` and a credential bound to neither domains nor user
/// tokens; a bound one is `403 SCOPE_FORBIDDEN`, one without `all_principals` `403 FORBIDDEN`.
#[utoipa::path(get, path = "/v1/collections/{name}/reembed", tag = "collections",
    operation_id = "reembed_status",
    params(("name" = CollectionName, Path, description = "collection name")),
    responses((status = 200, description = "The re-embed's progress", body = ReembedStatus)),
    security(("bearer" = [])))]
pub async fn status(
    State(state): State<AppState>,
    auth: TenantAuth,
    PathParam(name): PathParam,
    RawQuery(q): RawQuery,
) -> Result<Json<ReembedStatus>, ApiError> {
    check_scope(&auth, None, q.as_deref())?;
    let name = collection(name)?;
    let scope = auth.scope;
    let status = state
        .run_tenant(
            &auth.admitted,
            move |e| Ok(e.reembed_status(&scope, &name)?),
        )
        .await?;
    Ok(Json(status))
}
