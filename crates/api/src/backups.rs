//! Operator routes for online backups of the whole data directory: start one, follow it.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use strata_engine::BackupStatus;
use utoipa::ToSchema;

use crate::edge::OperatorAuth;
use crate::input::{JsonObject, PathParam};
use crate::isolation::field;
use crate::{ApiError, AppState};

/// The body of `POST /v1/admin/backups`; `{}` takes every default.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(crate) struct BackupBody {
    /// The backup's directory under the server's `backup_dir` (`[a-zA-Z0-9_.-]`, 1 to 64
    /// characters, not starting with a dot nor ending in `.partial`); absent: the time, such as
    /// `2026-12-03T12-30-05.123Z`.
    name: Option<String>,
    /// Answer once the backup has ended (`200`, its final status) instead of at once with
    /// `202 Accepted`. Default `false`.
    wait: Option<bool>,
}

/// Backs up the whole data directory while the server serves: a consistent copy of every
/// tenant as of the moment it starts (every write acknowledged before this request is in
/// it), written into `<backup_dir>/<name>`, a directory a server starts on as its data
/// directory. It runs in the background: this answers `202 Accepted` with its status and a
/// `Location` naming `GET /v1/admin/backups/{name}`, where its progress shows (`running`
/// with its `phase`, then `done` or `failed`); with `"wait": true` the answer (`200`) comes once it has ended.
/// The directory has the name `<name>.partial` until the copy is complete and durable, so a
/// directory named `<name>` is always a whole backup. One backup runs at a time: another,
/// or a name already used, answers `409 CONFLICT`. Recorded in the server's audit log
/// (`backup.create`) once it has ended.
#[utoipa::path(post, path = "/v1/admin/backups", tag = "admin",
    operation_id = "create_backup",
    request_body = BackupBody,
    responses(
        (status = 200, description = "With `wait`: the backup has ended; `state` says how (`done` or `failed`)", body = BackupStatus),
        (status = 202, description = "The backup started in the background; `Location` names its status", body = BackupStatus,
            headers(("Location" = String, description = "`/v1/admin/backups/{name}`")))),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    OperatorAuth(op): OperatorAuth,
    JsonObject(mut body): JsonObject,
) -> Result<Response, ApiError> {
    let name: Option<String> = field(&mut body, "name")?;
    let wait = field(&mut body, "wait")?.unwrap_or(false);
    if let Some(extra) = body.keys().next() {
        return Err(ApiError::BadRequest(format!("{extra}: unknown field")));
    }
    let dir = state.config.backup_dir.clone();
    let engine = state.engine.clone();
    let (started_tx, started) = tokio::sync::oneshot::channel();
    // Started and run by one blocking task, which a client that hangs up does not cancel.
    let running = crate::over_share_lane::spawn_blocking(move || {
        let job = match engine.start_backup(&op, &dir, name.as_deref()) {
            Ok((status, job)) => {
                let _ = started_tx.send(Ok(status));
                job
            }
            Err(e) => {
                let _ = started_tx.send(Err(e));
                return None;
            }
        };
        Some(job.run(&engine))
    });
    let status = started
        .await
        .map_err(|_| ApiError::Internal("the backup task ended without an answer".into()))??;
    if wait {
        let ended = running
            .await
            .map_err(|e| ApiError::Internal(format!("backup task failed: {e}")))?
            .ok_or_else(|| ApiError::Internal("the backup task did not run".into()))?;
        return Ok(Json(ended).into_response());
    }
    let location = format!("/v1/admin/backups/{}", status.name.as_str());
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(status),
    )
        .into_response())
}

/// A backup's status: one this server ran since it started (`running`, `done` or `failed`,
/// with its progress in rows), else one found whole in the backup directory (`done`, with
/// its size), else one a crash cut short (`interrupted`: its `<name>.partial` directory is
/// left). `404` for a name with none of these, or whose backup was deleted since.
#[utoipa::path(get, path = "/v1/admin/backups/{name}", tag = "admin",
    operation_id = "backup_status",
    params(("name" = String, Path, description = "the backup's name")),
    responses((status = 200, description = "Progress or outcome", body = BackupStatus)),
    security(("bearer" = [])))]
pub async fn status(
    State(state): State<AppState>,
    OperatorAuth(op): OperatorAuth,
    PathParam(name): PathParam,
) -> Result<Json<BackupStatus>, ApiError> {
    let dir = state.config.backup_dir.clone();
    let s = state
        .run(move |e| Ok(e.backup_status(&op, &dir, &name)?))
        .await?;
    Ok(Json(s))
}
