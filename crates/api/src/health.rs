//! Liveness, readiness and the OpenAPI document: the routes that need no credential.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::{Extension, Json};

use crate::bodies::Status;
use crate::{ApiError, AppState};

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "health", operation_id = "healthz",
    responses((status = 200, description = "The server is up", body = Status)))]
pub async fn healthz() -> Json<Status> {
    Json(Status { status: "ok" })
}

/// Readiness: storage answers and the server is not draining.
#[utoipa::path(get, path = "/readyz", tag = "health", operation_id = "readyz",
    responses((status = 200, description = "Ready", body = Status)))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Status>, ApiError> {
    if !state.is_ready() {
        return Err(ApiError::Unavailable);
    }
    // A failed data file says why (a full disk), so that an operator's probe shows it.
    state
        .run(|e| Ok(e.check_storage()?))
        .await
        .map_err(|e| match e {
            ApiError::StorageUnavailable(_) => e,
            _ => ApiError::Unavailable,
        })?;
    Ok(Json(Status { status: "ready" }))
}

/// This API's OpenAPI 3.1 document, generated from the handlers.
#[utoipa::path(get, path = "/openapi.json", tag = "health", operation_id = "openapi",
    responses((status = 200, description = "The OpenAPI document", body = serde_json::Value,
        content_type = "application/json")))]
pub async fn openapi_json(Extension(doc): Extension<OpenApiDocument>) -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json")], doc.0)
}

/// The OpenAPI document, serialised once when the router is built: it is served to anyone,
/// without a credential, so a request for it must cost a reference count, not a copy of the
/// document and its serialisation on the threads that serve every tenant.
#[derive(Clone)]
pub struct OpenApiDocument(pub Bytes);

impl OpenApiDocument {
    pub fn of(doc: &serde_json::Value) -> OpenApiDocument {
        OpenApiDocument(Bytes::from(
            serde_json::to_vec(doc).expect("invariant: a JSON value serialises"),
        ))
    }
}
