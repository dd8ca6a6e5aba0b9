//! The one mapping from errors to HTTP: status, stable `code` and the body
//! `{"error":{"code":"…","message":"…"}}`.
//!
//! Codes are part of the API contract: clients branch on them, so they never change meaning.
//! 5xx bodies say only "internal error"; the detail goes to the log, inside the request's span
//! (which carries the request id the client also got in `x-request-id`).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use strata_auth::{AuthError, Permission};
use strata_engine::EngineError;

/// An error as the HTTP layer reports it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Missing, malformed, unknown, expired or revoked credential. One message for all, so a
    /// probe cannot tell them apart.
    #[error("missing or invalid credential")]
    Unauthorized,
    /// The credential is valid but lacks a permission, or is the wrong kind for the route.
    #[error("{0}")]
    Forbidden(String),
    /// A request named a tenant other than its credential's (SPEC 1, rule 1).
    #[error("{0}")]
    TenantMismatch(String),
    /// A request asked for more than its credential grants (SPEC 1, rule 2).
    #[error("{0}")]
    ScopeForbidden(String),
    /// Invalid input; the message names the field.
    #[error("{0}")]
    BadRequest(String),
    /// Missing, foreign or invisible, all alike (SPEC 1, rule 5).
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// The tenant is suspended by its operator; its data is kept.
    #[error("{0}")]
    TenantSuspended(String),
    /// A write would exceed a quota; the message names the resource.
    #[error("{0}")]
    QuotaExceeded(String),
    /// The tenant's token bucket is empty; retry after the given time.
    #[error("rate limit exceeded; retry in {retry_after_ms} ms")]
    RateLimited { retry_after_ms: u64 },
    /// The tenant already has `max_concurrent` requests in flight.
    #[error("{0}")]
    ConcurrencyLimited(String),
    /// The shared worker pool's queue is full; retry shortly.
    #[error("{0}")]
    Overloaded(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    NotImplemented(String),
    #[error("the server is not ready")]
    Unavailable,
    /// Something below the API failed. The detail is logged, never sent.
    #[error("internal error")]
    Internal(String),
}

/// Every status and code the API returns, for documentation and tests.
pub const ERROR_CODES: &[(u16, &str)] = &[
    (400, "BAD_REQUEST"),
    (401, "UNAUTHORIZED"),
    (403, "FORBIDDEN"),
    (403, "TENANT_MISMATCH"),
    (403, "SCOPE_FORBIDDEN"),
    (403, "TENANT_SUSPENDED"),
    (403, "QUOTA_EXCEEDED"),
    (429, "RATE_LIMITED"),
    (429, "CONCURRENCY_LIMITED"),
    (503, "OVERLOADED"),
    (404, "NOT_FOUND"),
    (405, "METHOD_NOT_ALLOWED"),
    (409, "CONFLICT"),
    (413, "PAYLOAD_TOO_LARGE"),
    (500, "INTERNAL"),
    (501, "NOT_IMPLEMENTED"),
    (503, "UNAVAILABLE"),
];

impl ApiError {
    /// The table: each error's status and stable code.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "BAD_REQUEST"),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "FORBIDDEN"),
            ApiError::TenantMismatch(_) => (StatusCode::FORBIDDEN, "TENANT_MISMATCH"),
            ApiError::ScopeForbidden(_) => (StatusCode::FORBIDDEN, "SCOPE_FORBIDDEN"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "CONFLICT"),
            ApiError::TenantSuspended(_) => (StatusCode::FORBIDDEN, "TENANT_SUSPENDED"),
            ApiError::QuotaExceeded(_) => (StatusCode::FORBIDDEN, "QUOTA_EXCEEDED"),
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED"),
            ApiError::ConcurrencyLimited(_) => {
                (StatusCode::TOO_MANY_REQUESTS, "CONCURRENCY_LIMITED")
            }
            ApiError::Overloaded(_) => (StatusCode::SERVICE_UNAVAILABLE, "OVERLOADED"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
            ApiError::NotImplemented(_) => (StatusCode::NOT_IMPLEMENTED, "NOT_IMPLEMENTED"),
            ApiError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"),
        }
    }

    /// The generic not-found error: the same body for missing, foreign and invisible ids.
    pub fn not_found() -> Self {
        ApiError::NotFound("not found".into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = match &self {
            ApiError::Internal(detail) => {
                tracing::error!(detail = %detail, "internal error");
                "internal error".to_owned()
            }
            other => other.to_string(),
        };
        let mark = SecurityMark::of(code, &message);
        // Refusals that a client should simply retry say when, in the header and the body.
        let retry_after_ms = match &self {
            ApiError::RateLimited { retry_after_ms } => Some(*retry_after_ms),
            ApiError::ConcurrencyLimited(_) | ApiError::Overloaded(_) => Some(1000),
            _ => None,
        };
        let body = match retry_after_ms {
            Some(ms) => json!({"error": {"code": code, "message": message, "retry_after_ms": ms}}),
            None => json!({"error": {"code": code, "message": message}}),
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(ms) = retry_after_ms {
            let secs = ms.div_ceil(1000).max(1);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(mark) = mark {
            response.extensions_mut().insert(mark);
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Marks a response that refused a request for a reason the audit log must record: an
/// authentication failure or a security event. The security-audit middleware turns it into an
/// audit row; marking the response (rather than recording where the error is made) catches
/// these errors wherever they arise: in an extractor, a handler or the engine.
#[derive(Debug, Clone)]
pub(crate) struct SecurityMark {
    /// The audit action, e.g. `auth.failure`.
    pub action: &'static str,
    /// The error code, the row's outcome.
    pub code: &'static str,
    /// The message the client got: it names a field or a source, never a secret.
    pub message: String,
}

impl SecurityMark {
    fn of(code: &'static str, message: &str) -> Option<SecurityMark> {
        let action = match code {
            "UNAUTHORIZED" => "auth.failure",
            "TENANT_MISMATCH" => "security.tenant_mismatch",
            "SCOPE_FORBIDDEN" => "security.scope_forbidden",
            _ => return None,
        };
        Some(SecurityMark {
            action,
            code,
            message: message.to_owned(),
        })
    }
}

pub(crate) fn permission_name(p: Permission) -> &'static str {
    match p {
        Permission::Read => "read",
        Permission::Write => "write",
        Permission::Admin => "admin",
        Permission::AllPrincipals => "all_principals",
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        // Exhaustive on purpose: a new engine error must be placed in the table by a human.
        match e {
            EngineError::NotFound => ApiError::not_found(),
            EngineError::InvalidName(_)
            | EngineError::InvalidRecord(_)
            | EngineError::InvalidFilter(_)
            | EngineError::BadRequest(_) => ApiError::BadRequest(e.to_string()),
            EngineError::ScopeForbidden(m) => ApiError::ScopeForbidden(m),
            EngineError::PermissionDenied(p) => ApiError::Forbidden(format!(
                "the credential lacks the {} permission",
                permission_name(p)
            )),
            EngineError::CollectionNotFound(_) | EngineError::TenantNotFound(_) => {
                ApiError::NotFound(e.to_string())
            }
            EngineError::TenantSuspended(_) => ApiError::TenantSuspended(e.to_string()),
            EngineError::QuotaExceeded { .. } => ApiError::QuotaExceeded(e.to_string()),
            EngineError::CollectionExists(_)
            | EngineError::TenantExists(_)
            | EngineError::IdConflict(_) => ApiError::Conflict(e.to_string()),
            EngineError::Store(s) => ApiError::Internal(s.to_string()),
            EngineError::Index(m) => ApiError::Internal(format!("index: {m}")),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Unauthorized(reason) => {
                tracing::warn!(target: "security", reason, "credential refused");
                ApiError::Unauthorized
            }
            AuthError::InvalidName(_) | AuthError::BadRequest(_) => {
                ApiError::BadRequest(e.to_string())
            }
            AuthError::TenantNotFound(_) => ApiError::NotFound(e.to_string()),
            AuthError::KeyNotFound => ApiError::NotFound("key not found".into()),
            AuthError::Config(m) => ApiError::Internal(m),
            AuthError::Store(s) => ApiError::Internal(s.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_types::{InvalidName, TenantId};

    fn check(e: impl Into<ApiError>, status: u16, code: &str) {
        let e = e.into();
        let (s, c) = e.status_and_code();
        assert_eq!((s.as_u16(), c), (status, code), "{e:?}");
        assert!(
            ERROR_CODES.contains(&(status, code)),
            "{code} missing from ERROR_CODES"
        );
    }

    #[test]
    fn engine_errors_map_to_stable_codes() {
        let name = || InvalidName {
            field: "memory_domain",
            reason: "bad".into(),
        };
        let tenant = || TenantId::parse("t").unwrap();
        check(EngineError::NotFound, 404, "NOT_FOUND");
        check(EngineError::InvalidName(name()), 400, "BAD_REQUEST");
        check(EngineError::BadRequest("x".into()), 400, "BAD_REQUEST");
        check(
            EngineError::ScopeForbidden("x".into()),
            403,
            "SCOPE_FORBIDDEN",
        );
        check(
            EngineError::PermissionDenied(Permission::Write),
            403,
            "FORBIDDEN",
        );
        check(EngineError::TenantExists(tenant()), 409, "CONFLICT");
        check(
            EngineError::TenantSuspended(tenant()),
            403,
            "TENANT_SUSPENDED",
        );
        check(
            EngineError::QuotaExceeded {
                resource: "max_vectors",
                limit: 1,
            },
            403,
            "QUOTA_EXCEEDED",
        );
        check(EngineError::Index("x".into()), 500, "INTERNAL");
        check(EngineError::IdConflict("x".into()), 409, "CONFLICT");
        check(
            EngineError::Store(strata_store::StoreError::Engine("disk".into())),
            500,
            "INTERNAL",
        );
    }

    #[test]
    fn auth_errors_map_to_stable_codes() {
        check(AuthError::Unauthorized("why"), 401, "UNAUTHORIZED");
        check(AuthError::KeyNotFound, 404, "NOT_FOUND");
        check(AuthError::BadRequest("x".into()), 400, "BAD_REQUEST");
        check(AuthError::Config("x".into()), 500, "INTERNAL");
    }

    #[tokio::test]
    async fn bodies_have_the_stable_shape_and_hide_internals() {
        let cases = [
            (
                ApiError::Internal("disk /secret/path failed".into()),
                "internal error",
            ),
            (ApiError::not_found(), "not found"),
            (
                ApiError::BadRequest("memory_domain: bad".into()),
                "memory_domain: bad",
            ),
        ];
        for (e, message) in cases {
            let (_, code) = e.status_and_code();
            let response = e.into_response();
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
                .await
                .unwrap();
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(v, json!({"error": {"code": code, "message": message}}));
        }
    }

    #[test]
    fn unauthorized_sets_www_authenticate() {
        let r = ApiError::Unauthorized.into_response();
        assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Bearer");
    }
}
