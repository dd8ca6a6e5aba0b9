//! The one mapping from errors to HTTP: status, stable `code` and the body
//! `{"error":{"code":"…","message":"…"}}`.
//!
//! Codes are part of the API contract: clients branch on them, so they never change meaning.
//! 5xx bodies say only "internal error"; the detail goes to the log, inside the request's span
//! (which carries the request id the client also got in `x-request-id`).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
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
    /// A request named a tenant other than its credential's (docs/isolation.md, rule 1).
    #[error("{0}")]
    TenantMismatch(String),
    /// A request asked for more than its credential grants (docs/isolation.md, rule 2).
    #[error("{0}")]
    ScopeForbidden(String),
    /// Invalid input; the message names the field.
    #[error("{0}")]
    BadRequest(String),
    /// Missing, foreign or invisible, all alike (docs/isolation.md, rule 5).
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// A merge patch of a tenant's metadata whose stored row is damaged; `null` replaces it.
    #[error("{0}")]
    MetadataDamaged(String),
    /// The tenant's stored integrity policy is unreadable; its requests are refused until an
    /// operator replaces it (`null` or a valid policy).
    #[error("{0}")]
    IntegrityPolicyDamaged(String),
    /// The tenant is suspended by its operator; its data is kept.
    #[error("{0}")]
    TenantSuspended(String),
    /// The tenant is under stress or critical: this (expensive) search is shed; retry smaller or later.
    #[error("{0}")]
    TenantStressed(String),
    /// The tenant is in a critical state: its writes are refused until it recovers.
    #[error("{0}")]
    TenantCritical(String),
    /// A write would exceed a quota; the message names the resource.
    #[error("{0}")]
    QuotaExceeded(String),
    /// The tenant's token bucket is empty; retry after the given time.
    #[error("rate limit exceeded; retry in {retry_after_ms} ms")]
    RateLimited { retry_after_ms: u64 },
    /// The tenant already has `max_concurrent` requests in flight.
    #[error("{0}")]
    ConcurrencyLimited(String),
    /// The tenant's unread answers hold `max_answer_bytes_per_tenant` bytes
    /// (`answer_budget`); retry once its clients have read them.
    #[error("{0}")]
    AnswerMemoryLimited(String),
    /// The shared worker pool's queue is full; retry shortly.
    #[error("{0}")]
    Overloaded(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The request's body (or the rest of its head) did not arrive in time.
    #[error("{0}")]
    RequestTimeout(String),
    /// The request target is longer than the server accepts.
    #[error("{0}")]
    UriTooLong(String),
    /// The request line and headers together are larger than the server accepts.
    #[error("{0}")]
    HeadersTooLarge(String),
    /// The body is in a form the server does not read: a `Content-Encoding` other than
    /// `identity`. The message names the coding.
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    NotImplemented(String),
    #[error("the server is not ready")]
    Unavailable,
    /// The data directory failed (a full disk, an I/O error); the message says how, never
    /// anything of a tenant's.
    #[error("{0}")]
    StorageUnavailable(String),
    /// Something below the API failed. The detail is logged, never sent.
    #[error("internal error")]
    Internal(String),
}

/// The error body every refusal carries: `{"error": {"code", "message", "retry_after_ms"?}}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable: clients branch on it. See `ERROR_CODES` for the status of each.
    #[schema(value_type = ErrorCode)]
    pub code: &'static str,
    /// For people: names the field or resource at fault; never internal detail.
    pub message: String,
    /// On refusals worth retrying (`429`, `503 OVERLOADED`): how long to wait, also sent as
    /// `Retry-After` in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

/// The stable error codes, as the OpenAPI document lists them.
#[derive(utoipa::ToSchema)]
#[allow(dead_code, clippy::upper_case_acronyms)] // Names are the wire strings; never built.
#[schema(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    Forbidden,
    TenantMismatch,
    ScopeForbidden,
    TenantSuspended,
    TenantStressed,
    TenantCritical,
    QuotaExceeded,
    RateLimited,
    ConcurrencyLimited,
    AnswerMemoryLimited,
    Overloaded,
    NotFound,
    MethodNotAllowed,
    Conflict,
    MetadataDamaged,
    IntegrityPolicyDamaged,
    PayloadTooLarge,
    RequestTimeout,
    UriTooLong,
    HeadersTooLarge,
    UnsupportedMediaType,
    Internal,
    NotImplemented,
    Unavailable,
}

/// Every status and code the API returns, for documentation and tests.
pub const ERROR_CODES: &[(u16, &str)] = &[
    (400, "BAD_REQUEST"),
    (401, "UNAUTHORIZED"),
    (403, "FORBIDDEN"),
    (403, "TENANT_MISMATCH"),
    (403, "SCOPE_FORBIDDEN"),
    (403, "TENANT_SUSPENDED"),
    (503, "TENANT_STRESSED"),
    (503, "TENANT_CRITICAL"),
    (403, "QUOTA_EXCEEDED"),
    (429, "RATE_LIMITED"),
    (429, "CONCURRENCY_LIMITED"),
    (429, "ANSWER_MEMORY_LIMITED"),
    (503, "OVERLOADED"),
    (404, "NOT_FOUND"),
    (405, "METHOD_NOT_ALLOWED"),
    (409, "CONFLICT"),
    (409, "METADATA_DAMAGED"),
    (409, "INTEGRITY_POLICY_DAMAGED"),
    (413, "PAYLOAD_TOO_LARGE"),
    (408, "REQUEST_TIMEOUT"),
    (414, "URI_TOO_LONG"),
    (431, "HEADERS_TOO_LARGE"),
    (415, "UNSUPPORTED_MEDIA_TYPE"),
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
            ApiError::MetadataDamaged(_) => (StatusCode::CONFLICT, "METADATA_DAMAGED"),
            ApiError::IntegrityPolicyDamaged(_) => {
                (StatusCode::CONFLICT, "INTEGRITY_POLICY_DAMAGED")
            }
            ApiError::TenantSuspended(_) => (StatusCode::FORBIDDEN, "TENANT_SUSPENDED"),
            ApiError::TenantStressed(_) => (StatusCode::SERVICE_UNAVAILABLE, "TENANT_STRESSED"),
            ApiError::TenantCritical(_) => (StatusCode::SERVICE_UNAVAILABLE, "TENANT_CRITICAL"),
            ApiError::QuotaExceeded(_) => (StatusCode::FORBIDDEN, "QUOTA_EXCEEDED"),
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED"),
            ApiError::ConcurrencyLimited(_) => {
                (StatusCode::TOO_MANY_REQUESTS, "CONCURRENCY_LIMITED")
            }
            // 429, not 503: the tenant's own clients hold the memory, and reading their answers
            // frees it; other tenants are served meanwhile.
            ApiError::AnswerMemoryLimited(_) => {
                (StatusCode::TOO_MANY_REQUESTS, "ANSWER_MEMORY_LIMITED")
            }
            ApiError::Overloaded(_) => (StatusCode::SERVICE_UNAVAILABLE, "OVERLOADED"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE"),
            ApiError::RequestTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "REQUEST_TIMEOUT"),
            ApiError::UriTooLong(_) => (StatusCode::URI_TOO_LONG, "URI_TOO_LONG"),
            ApiError::HeadersTooLarge(_) => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "HEADERS_TOO_LARGE",
            ),
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE")
            }
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
            ApiError::NotImplemented(_) => (StatusCode::NOT_IMPLEMENTED, "NOT_IMPLEMENTED"),
            ApiError::Unavailable | ApiError::StorageUnavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE")
            }
        }
    }

    /// The generic not-found error: the same body for missing, foreign and invisible ids.
    pub fn not_found() -> Self {
        ApiError::NotFound("not found".into())
    }
}

impl ApiError {
    /// The parts every rendering of this error shares: status, the JSON body, and for refusals
    /// a client should simply retry, how long to wait.
    fn parts(&self) -> (StatusCode, ErrorBody, Option<u64>) {
        let (status, code) = self.status_and_code();
        let message = self.public_message();
        // Refusals that a client should simply retry say when, in the header and the body.
        let retry_after_ms = match self {
            ApiError::RateLimited { retry_after_ms } => Some(*retry_after_ms),
            ApiError::ConcurrencyLimited(_)
            | ApiError::AnswerMemoryLimited(_)
            | ApiError::Overloaded(_) => Some(1000),
            ApiError::TenantStressed(_) | ApiError::TenantCritical(_) => Some(5000),
            _ => None,
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code,
                message,
                retry_after_ms,
            },
        };
        (status, body, retry_after_ms)
    }

    fn public_message(&self) -> String {
        match self {
            ApiError::Internal(detail) => {
                tracing::error!(detail = %detail, "internal error");
                "internal error".to_owned()
            }
            ApiError::StorageUnavailable(why) => {
                tracing::error!(detail = %why, "storage unavailable");
                why.clone()
            }
            other => other.to_string(),
        }
    }

    /// The error as a complete HTTP/1.1 response with `Connection: close`, for the few
    /// refusals written straight to a socket because no request reached the router: a
    /// connection over the cap, a request head that never finished, one hyper could not
    /// parse. Same body and headers as [`IntoResponse`], plus the given request id.
    pub fn to_http1(&self, request_id: &str) -> Vec<u8> {
        let (status, body, retry_after_ms) = self.parts();
        let body = serde_json::to_string(&body).unwrap_or_default();
        let mut head = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             connection: close\r\n{}: {}\r\ndate: {}\r\n",
            status.as_str(),
            status.canonical_reason().unwrap_or(""),
            body.len(),
            crate::edge::REQUEST_ID_HEADER,
            request_id,
            httpdate::fmt_http_date(std::time::SystemTime::now()),
        );
        if let Some(ms) = retry_after_ms {
            head.push_str(&format!("retry-after: {}\r\n", retry_seconds(ms)));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body.as_bytes());
        bytes
    }
}

/// `Retry-After` is in whole seconds, rounded up, and never 0.
fn retry_seconds(ms: u64) -> u64 {
    ms.div_ceil(1000).max(1)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body, retry_after_ms) = self.parts();
        let mark = SecurityMark::of(body.error.code, &body.error.message);
        let code = AnsweredCode(body.error.code);
        let mut response = (status, Json(body)).into_response();
        response.extensions_mut().insert(code);
        if let Some(ms) = retry_after_ms {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_seconds(ms)));
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

/// The stable code of an error response, for the metrics middleware to count refusals by.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AnsweredCode(pub &'static str);

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
            // A credential without the permission the route needs (a read-only key writing,
            // a tenant's key on an operator route, an operator's on a data route).
            "FORBIDDEN" => "security.permission_denied",
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
            | EngineError::InvalidRecordAt { .. }
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
            EngineError::TenantStressed(_) => ApiError::TenantStressed(e.to_string()),
            EngineError::TenantCritical(_) => ApiError::TenantCritical(e.to_string()),
            EngineError::QuotaExceeded { .. } => ApiError::QuotaExceeded(e.to_string()),
            EngineError::CollectionExists(_)
            | EngineError::CollectionDeleteUnfinished(_)
            | EngineError::TenantExists(_)
            | EngineError::IdConflict(_)
            | EngineError::MoveSlotsBusy(_)
            | EngineError::IdempotencyKeyReused(_)
            | EngineError::ModelMismatch { .. }
            | EngineError::Reembed(_) => ApiError::Conflict(e.to_string()),
            EngineError::MetadataDamaged(_) => ApiError::MetadataDamaged(e.to_string()),
            EngineError::IntegrityPolicyDamaged(..) => {
                ApiError::IntegrityPolicyDamaged(e.to_string())
            }
            EngineError::Store(s) => ApiError::from(s),
            EngineError::Index(m) => ApiError::Internal(format!("index: {m}")),
            EngineError::Embedding(m) => ApiError::Internal(format!("embedding: {m}")),
            EngineError::Unsupported(_) => ApiError::NotImplemented(e.to_string()),
            EngineError::ShuttingDown(_) => ApiError::Unavailable,
        }
    }
}

impl From<strata_store::StoreError> for ApiError {
    fn from(e: strata_store::StoreError) -> Self {
        match e {
            // Said to the client: a full disk is not the client's fault, but it is worth
            // knowing that retrying will not help until the operator acts.
            strata_store::StoreError::Unavailable(_) => ApiError::StorageUnavailable(e.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            // Logged by the security-audit middleware, within its bounds (`security.rs`).
            AuthError::Unauthorized(_) => ApiError::Unauthorized,
            AuthError::InvalidName(_) | AuthError::BadRequest(_) => {
                ApiError::BadRequest(e.to_string())
            }
            AuthError::TenantNotFound(_) => ApiError::NotFound(e.to_string()),
            AuthError::KeyNotFound => ApiError::NotFound("key not found".into()),
            AuthError::Conflict(m) => ApiError::Conflict(m),
            AuthError::Config(m) => ApiError::Internal(m),
            AuthError::Store(s) => ApiError::from(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
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
            EngineError::CollectionDeleteUnfinished(
                strata_types::CollectionName::parse("c").unwrap(),
            ),
            409,
            "CONFLICT",
        );
        check(
            EngineError::TenantSuspended(tenant()),
            403,
            "TENANT_SUSPENDED",
        );
        check(
            EngineError::TenantStressed(tenant()),
            503,
            "TENANT_STRESSED",
        );
        check(
            EngineError::TenantCritical(tenant()),
            503,
            "TENANT_CRITICAL",
        );
        check(
            EngineError::QuotaExceeded {
                resource: "max_vectors",
                limit: 1,
                used: Some(1),
            },
            403,
            "QUOTA_EXCEEDED",
        );
        check(EngineError::Index("x".into()), 500, "INTERNAL");
        check(EngineError::IdConflict("x".into()), 409, "CONFLICT");
        check(EngineError::MoveSlotsBusy("x".into()), 409, "CONFLICT");
        check(
            EngineError::MetadataDamaged(TenantId::parse("t").unwrap()),
            409,
            "METADATA_DAMAGED",
        );
        check(
            EngineError::IntegrityPolicyDamaged(TenantId::parse("t").unwrap(), "x".into()),
            409,
            "INTEGRITY_POLICY_DAMAGED",
        );
        check(EngineError::Reembed("x".into()), 409, "CONFLICT");
        check(
            EngineError::Unsupported("dedicated".into()),
            501,
            "NOT_IMPLEMENTED",
        );
        check(
            EngineError::Store(strata_store::StoreError::Engine("disk".into())),
            500,
            "INTERNAL",
        );
        // A failed data file is said, not hidden: retrying will not help until an operator acts.
        let full = ApiError::from(EngineError::Store(strata_store::StoreError::Unavailable(
            "the disk is full".into(),
        )));
        assert_eq!(full.status_and_code().1, "UNAVAILABLE");
        assert_eq!(
            full.public_message(),
            "storage unavailable: the disk is full"
        );
        check(
            AuthError::Store(strata_store::StoreError::Unavailable("x".into())),
            503,
            "UNAVAILABLE",
        );
    }

    #[test]
    fn auth_errors_map_to_stable_codes() {
        check(AuthError::Unauthorized("why".into()), 401, "UNAUTHORIZED");
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
    fn raw_answers_carry_the_same_body_and_close() {
        let bytes = ApiError::Overloaded("full".into()).to_http1("req-1");
        let text = String::from_utf8(bytes).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{head}"
        );
        let length = format!("content-length: {}", body.len());
        for line in [
            "content-type: application/json",
            "connection: close",
            "x-request-id: req-1",
            "retry-after: 1",
            &length,
        ] {
            assert!(
                head.split("\r\n").any(|l| l == line),
                "{line} missing: {head}"
            );
        }
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            v,
            json!({"error": {"code": "OVERLOADED", "message": "full", "retry_after_ms": 1000}})
        );
    }

    #[test]
    fn unauthorized_sets_www_authenticate() {
        let r = ApiError::Unauthorized.into_response();
        assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Bearer");
    }
}
