//! Operator routes for isolation levels: migrate a tenant between `shared`, `partition` and
//! `dedicated` (or report what a migration would do), and follow its progress.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use strata_engine::{
    IndexParams, IsolationLevel, MigrateRequest, MigrationReport, MigrationState, MigrationStatus,
    RunningMigration,
};
use strata_types::TenantId;
use utoipa::ToSchema;

use crate::edge::OperatorAuth;
use crate::input::{JsonObject, PathParam};
use crate::{ApiError, AppState};

/// The levels a request may ask for, as the OpenAPI document states them. (The bodies are
/// read by [`field`]; these types only describe them.)
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub(crate) enum RequestedLevel {
    /// Loaded on demand, evictable, the server's index parameters.
    Shared,
    /// Never evicted, its own index parameters.
    Partition,
    /// As `partition`, and its data in its own storage file in its own directory.
    Dedicated,
}

/// The body of `POST /v1/admin/tenants/{id}/migrate`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(crate) struct MigrateBody {
    target: RequestedLevel,
    /// The tenant's own graph parameters at the target level (kept, not used, at `shared`);
    /// absent: keep the ones it has.
    index_params: Option<IndexParams>,
    /// Only report what the migration would do.
    dry_run: Option<bool>,
    /// To or from `dedicated` (the data moves): answer once the data has moved (`200`)
    /// instead of at once with `202 Accepted`. Default `false`. Other migrations always answer
    /// once done.
    wait: Option<bool>,
}

fn tenant_id(id: String) -> Result<TenantId, ApiError> {
    TenantId::parse_field("id", id).map_err(|e| ApiError::BadRequest(e.to_string()))
}

/// One field of a body, its error naming it (serde's own messages do not say which field).
pub(crate) fn field<T: DeserializeOwned>(
    body: &mut Map<String, Value>,
    name: &str,
) -> Result<Option<T>, ApiError> {
    match body.remove(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => crate::input::from_value_at(name, &v).map(Some),
    }
}

/// The level fields of a tenant-creation body: `isolation` and `index_params`.
pub(crate) fn level_fields(
    body: &mut Map<String, Value>,
) -> Result<(IsolationLevel, Option<IndexParams>), ApiError> {
    Ok((
        field(body, "isolation")?.unwrap_or_default(),
        field(body, "index_params")?,
    ))
}

/// Migrates a tenant to another isolation level, or with `dry_run` reports what that would
/// move and cost. shared ↔ partition moves no data and is done when this answers (`200`): the
/// level changes at once, graphs whose parameters change are rebuilt in the background while
/// the old ones serve. To or from `dedicated` the tenant's data moves between the main file
/// and its own, online, in the background: this answers `202 Accepted` with the report and a
/// `Location` header naming `GET .../migration`, where the copy's progress shows (`copying`,
/// `catching_up`, `cleaning_up`, then `done`, `failed` or `interrupted`). It is copied in chunks while the
/// tenant keeps serving reads and writes, then a short final catch-up (the tenant's writes
/// wait for it) flips the level in one transaction, and the old copy is removed
/// (`cleaning_up`, the tenant already serving at its new level). With `"wait": true` the
/// answer (`200`) comes once the data has moved. While a data move of the tenant runs, any
/// other migration of it (even one changing only `index_params`) answers `409 CONFLICT`, and
/// so does a data move beyond the server's `engine.isolation.max_concurrent_moves` (default
/// 1). A migration to the level the tenant has, changing nothing, answers the report and
/// records nothing.
#[utoipa::path(post, path = "/v1/admin/tenants/{id}/migrate", tag = "admin",
    operation_id = "migrate_tenant",
    params(("id" = TenantId, Path, description = "tenant id")),
    request_body = MigrateBody,
    responses(
        (status = 200, description = "What the migration moves and costs; without `dry_run` it has happened (graph rebuilds may still run in the background)", body = MigrationReport),
        (status = 202, description = "A data move (to or from `dedicated`) started in the background; `Location` names its status", body = MigrationReport,
            headers(("Location" = String, description = "`/v1/admin/tenants/{id}/migration`")))),
    security(("bearer" = [])))]
pub async fn migrate(
    State(state): State<AppState>,
    OperatorAuth(op): OperatorAuth,
    PathParam(id): PathParam,
    JsonObject(mut body): JsonObject,
) -> Result<Response, ApiError> {
    let id = tenant_id(id)?;
    let target = field(&mut body, "target")?
        .ok_or_else(|| ApiError::BadRequest("target: required".into()))?;
    let index_params = field(&mut body, "index_params")?;
    let dry_run = field(&mut body, "dry_run")?.unwrap_or(false);
    let wait = field(&mut body, "wait")?.unwrap_or(false);
    if let Some(extra) = body.keys().next() {
        return Err(ApiError::BadRequest(format!("{extra}: unknown field")));
    }
    let req = MigrateRequest {
        target,
        index_params,
        dry_run,
    };
    let status_url = format!("/v1/admin/tenants/{id}/migration");
    // Started and run by one blocking task, which a client that hangs up does not cancel: a
    // move registered and recorded as running always runs to its end. The report comes back
    // as soon as the move is started.
    let engine = state.engine.clone();
    let id_for_log = id.clone();
    let (started_tx, started) = tokio::sync::oneshot::channel();
    let running = crate::over_share_lane::spawn_blocking(move || {
        let (report, job) = match engine.start_migration(&op, &id, req) {
            Ok(started) => started,
            Err(e) => {
                let _ = started_tx.send(Err(e));
                return Ok(());
            }
        };
        let moves = job.is_some();
        let _ = started_tx.send(Ok((report, moves)));
        let Some(job) = job else { return Ok(()) };
        let ran = job.run(&engine).map(|_| ());
        // Nobody may wait for it (`202`): its outcome is in the status, and in the log.
        if let Err(e) = &ran {
            tracing::warn!(tenant = %id_for_log, error = %e, "data migration ended without moving the tenant");
        }
        ran
    });
    let (report, moves) = started
        .await
        .map_err(|_| ApiError::Internal("the migration task ended without an answer".into()))??;
    if !moves {
        return Ok(Json(report).into_response());
    }
    if wait {
        running
            .await
            .map_err(|e| ApiError::Internal(format!("migration task failed: {e}")))??;
        return Ok(Json(report).into_response());
    }
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, status_url)],
        Json(report),
    )
        .into_response())
}

/// A tenant's level and its last migration: a data move's progress while it runs, else how
/// the last migration ended (kept across restarts; `interrupted` for one a shutdown or crash
/// stopped before its flip).
#[utoipa::path(get, path = "/v1/admin/tenants/{id}/migration", tag = "admin",
    operation_id = "tenant_migration",
    params(("id" = TenantId, Path, description = "tenant id")),
    responses((status = 200, description = "Level and migration progress", body = MigrationStatus)),
    security(("bearer" = [])))]
pub async fn status(
    State(state): State<AppState>,
    OperatorAuth(op): OperatorAuth,
    PathParam(id): PathParam,
) -> Result<Json<MigrationStatus>, ApiError> {
    let id = tenant_id(id)?;
    let s = state.run(move |e| Ok(e.migration(&op, &id)?)).await?;
    Ok(Json(s))
}

/// The data moves running on this server now (to or from `dedicated`), each tenant with its
/// status as `GET /v1/admin/tenants/{id}/migration` answers it, by tenant id. Moves between
/// `shared` and `partition` move no data and are not listed (they are done when their request
/// answers; their graphs rebuild in the background).
#[utoipa::path(get, path = "/v1/admin/migrations", tag = "admin",
    operation_id = "running_migrations",
    responses((status = 200, description = "The data moves running now", body = RunningMigrations)),
    security(("bearer" = [])))]
pub async fn running(
    State(state): State<AppState>,
    OperatorAuth(op): OperatorAuth,
) -> Result<Json<RunningMigrations>, ApiError> {
    let migrations = state.run(move |e| Ok(e.running_migrations(&op)?)).await?;
    Ok(Json(RunningMigrations { migrations }))
}

/// `GET /v1/admin/migrations`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct RunningMigrations {
    pub migrations: Vec<RunningMigration>,
}

/// Cancels a tenant's data move (to or from `dedicated`) and answers its status afterwards,
/// `cancelled`. A move copying now stops at its next chunk and removes its partial copy (this
/// answers once that is done, or `202 Accepted` with the live status if that takes longer
/// than a minute: the cancel holds, poll the status until it says `cancelled`); a move a
/// crash or shutdown cut short (`interrupted`, which the server otherwise resumes once
/// started) is marked so and not resumed. Either way the tenant stays whole at its old level.
/// A move past its copy (`catching_up` or `cleaning_up`) will complete: `409 CONFLICT`
/// (migrate the tenant back once it has ended), as when the tenant has no move to cancel.
#[utoipa::path(delete, path = "/v1/admin/tenants/{id}/migration", tag = "admin",
    operation_id = "cancel_tenant_migration",
    params(("id" = TenantId, Path, description = "tenant id")),
    responses(
        (status = 200, description = "Cancelled: the status afterwards (`cancelled`, the tenant at its old level); `409 CONFLICT` when there is no move to cancel or it is past its copy", body = MigrationStatus),
        (status = 202, description = "Cancel accepted, the move still removing its partial copy: the live status (`copying`); poll `GET /v1/admin/tenants/{id}/migration` until it says `cancelled`", body = MigrationStatus)),
    security(("bearer" = [])))]
pub async fn cancel(
    State(state): State<AppState>,
    OperatorAuth(op): OperatorAuth,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    let id = tenant_id(id)?;
    // On a blocking thread of its own, not a pool worker: it waits for the move it stopped
    // to clean up.
    let engine = state.engine.clone();
    let s = crate::over_share_lane::spawn_blocking(move || engine.cancel_migration(&op, &id))
        .await
        .map_err(|e| ApiError::Internal(format!("cancel task failed: {e}")))??;
    // Still under way: the move stops at its next chunk, later than the cancel waited.
    let ended = !matches!(
        s.state,
        MigrationState::Copying | MigrationState::CatchingUp | MigrationState::CleaningUp
    );
    let code = if ended {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((code, Json(s)).into_response())
}
