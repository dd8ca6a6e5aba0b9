//! Authentication at the edge: extractors that turn the `Authorization` header into a tenant
//! or operator handle, and enforce that the tenant comes from the credential alone.

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use strata_auth::{OperatorScope, Principal, TenantScope};
use strata_types::Domain;

use crate::{ApiError, AppState};

/// Header naming the domain of a request (SPEC 1).
pub const DOMAIN_HEADER: &str = "x-strata-domain";
/// Header some clients send to name a tenant. Only checked, never trusted.
pub const TENANT_HEADER: &str = "x-tenant-id";

/// A request authenticated with a tenant credential.
pub struct TenantAuth {
    pub scope: TenantScope,
    /// The domain from `X-Strata-Domain`, if sent.
    pub header_domain: Option<Domain>,
}

/// A request authenticated with an operator credential.
pub struct OperatorAuth(pub OperatorScope);

fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or(ApiError::Unauthorized)?
        .to_str()
        .map_err(|_| ApiError::Unauthorized)?;
    let (scheme, token) = value.split_once(' ').ok_or(ApiError::Unauthorized)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::Unauthorized);
    }
    Ok(token.trim())
}

async fn principal(parts: &Parts, state: &AppState) -> Result<Principal, ApiError> {
    let token = bearer(&parts.headers)?.to_owned();
    let auth = state.auth.clone();
    // Key lookups read the store, so they run with the other blocking work.
    state
        .run(move |engine| Ok(auth.authenticate(engine.store(), &token)?))
        .await
}

/// Refuses a request that names a tenant other than its credential's, and records it as a
/// security event: a client doing this is misconfigured or probing.
pub(crate) fn check_tenant(
    scope: &TenantScope,
    claimed: &str,
    source: &str,
) -> Result<(), ApiError> {
    if claimed == scope.tenant().as_str() {
        return Ok(());
    }
    tracing::warn!(
        target: "security",
        tenant = %scope.tenant(),
        actor = scope.actor(),
        claimed,
        source,
        "tenant mismatch"
    );
    Err(ApiError::TenantMismatch(format!(
        "{source} names a tenant other than the credential's"
    )))
}

impl FromRequestParts<AppState> for TenantAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let scope = match principal(parts, state).await? {
            Principal::Tenant(scope) => scope,
            Principal::Operator(_) => {
                return Err(ApiError::Forbidden(
                    "an operator credential has no tenant; use a tenant's key for data routes"
                        .into(),
                ));
            }
        };
        tracing::Span::current().record("tenant", scope.tenant().as_str());
        if let Some(v) = parts.headers.get(TENANT_HEADER) {
            check_tenant(
                &scope,
                v.to_str().unwrap_or("\u{fffd}"),
                "header X-Tenant-ID",
            )?;
        }
        let header_domain = match parts.headers.get(DOMAIN_HEADER) {
            None => None,
            Some(v) => {
                let s = v.to_str().map_err(|_| {
                    ApiError::BadRequest("memory_domain: X-Strata-Domain is not ASCII".into())
                })?;
                Some(Domain::parse(s).map_err(|e| ApiError::BadRequest(e.to_string()))?)
            }
        };
        Ok(TenantAuth {
            scope,
            header_domain,
        })
    }
}

impl FromRequestParts<AppState> for OperatorAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match principal(parts, state).await? {
            Principal::Operator(op) => {
                tracing::Span::current().record("tenant", "*");
                Ok(OperatorAuth(op))
            }
            Principal::Tenant(scope) => {
                tracing::warn!(
                    target: "security",
                    tenant = %scope.tenant(),
                    actor = scope.actor(),
                    "tenant credential on an operator route"
                );
                Err(ApiError::Forbidden(
                    "this route needs an operator credential".into(),
                ))
            }
        }
    }
}
