//! Reading the audit log: `GET /v1/admin/audit` for operators (any tenant's rows and the
//! server's), `GET /v1/audit` for a tenant's own rows (needs the key's `admin` permission).

use axum::Json;
use axum::extract::{RawQuery, State};
use strata_engine::{AuditCursor, AuditQuery, AuditRow};
use strata_types::{RequestScope, TenantId};

use crate::bodies::AuditRows;
use crate::edge::{OperatorAuth, TenantAuth, check_tenant};
use crate::input::{QueryInput, ScopeParts};
use crate::{ApiError, AppState};

const PARAMS: &[&str] = &["tenant", "action", "since", "until", "limit", "before"];

fn bad(e: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest(e.to_string())
}

fn number<T: std::str::FromStr>(q: &QueryInput, key: &str) -> Result<Option<T>, ApiError> {
    q.get(key)
        .map(|v| {
            v.parse()
                .map_err(|_| bad(format!("{key}: expected a whole number")))
        })
        .transpose()
}

fn audit_query(q: &QueryInput) -> Result<AuditQuery, ApiError> {
    Ok(AuditQuery {
        tenant: q
            .get("tenant")
            .map(|t| TenantId::parse_field("tenant", t))
            .transpose()
            .map_err(bad)?,
        action: q.get("action").map(str::to_owned),
        since: number(q, "since")?,
        until: number(q, "until")?,
        limit: number(q, "limit")?,
        before: q.get("before").map(AuditCursor::parse).transpose()?,
    })
}

/// A page of rows, with where the next one starts when this one is full (more may follow).
fn page(rows: Vec<AuditRow>, query: &AuditQuery) -> AuditRows {
    let full = rows.len() == query.limit.unwrap_or(strata_engine::DEFAULT_AUDIT_ROWS);
    let next = rows
        .last()
        .filter(|_| full)
        .map(|row| AuditCursor::of(row).to_string());
    AuditRows { rows, next }
}

/// Audit rows of every tenant and the server, newest first; filter by `tenant`, `action`,
/// `since` and `until` (ms since the epoch, `until` exclusive), at most `limit` (≤ 1000).
#[utoipa::path(get, path = "/v1/admin/audit", tag = "admin", operation_id = "admin_audit",
    params(("tenant" = Option<TenantId>, Query, description = "one tenant's rows"),
        ("action" = Option<String>, Query, description = "e.g. memory.put, tenant.suspend, auth.failure"),
        ("since" = Option<i64>, Query, description = "rows at or after this time (ms)"),
        ("until" = Option<i64>, Query, description = "rows before this time (ms)"),
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "at most this many, 1 to 1000 (default 100)"),
        ("before" = Option<String>, Query, description = "the rows after this place in the listing: the `next` of the page before")),
    responses((status = 200, description = "Audit rows, newest first", body = AuditRows)),
    security(("bearer" = [])))]
pub async fn admin_audit(
    State(state): State<AppState>,
    OperatorAuth(op): OperatorAuth,
    RawQuery(q): RawQuery,
) -> Result<Json<AuditRows>, ApiError> {
    let q = QueryInput::parse(q.as_deref(), PARAMS)?;
    if q.scope != ScopeParts::default() {
        return Err(bad("the audit log takes no scope fields"));
    }
    let query = audit_query(&q)?;
    let asked = query.clone();
    let rows = state.run(move |e| Ok(e.audit_rows(&op, &query)?)).await?;
    Ok(Json(page(rows, &asked)))
}

/// The tenant's own audit rows, newest first, with the same filters (a `tenant` other than
/// the credential's is `403 TENANT_MISMATCH`, like a `tenant_id`). Needs `admin` and `all_principals` and a credential bound to
/// neither domains nor user tokens: rows are about every domain and principal and name record
/// ids; a bound one is `403 SCOPE_FORBIDDEN`, one without `all_principals` `403 FORBIDDEN`.
#[utoipa::path(get, path = "/v1/audit", tag = "audit", operation_id = "own_audit",
    params(("tenant" = Option<TenantId>, Query, description = "the credential's own tenant (any other is 403 TENANT_MISMATCH)"),
        ("tenant_id" = Option<TenantId>, Query, description = "the same, as every tenant route takes it"),
        ("action" = Option<String>, Query, description = "e.g. memory.put"),
        ("since" = Option<i64>, Query, description = "rows at or after this time (ms)"),
        ("until" = Option<i64>, Query, description = "rows before this time (ms)"),
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "at most this many, 1 to 1000 (default 100)"),
        ("before" = Option<String>, Query, description = "the rows after this place in the listing: the `next` of the page before")),
    responses((status = 200, description = "The tenant's audit rows, newest first", body = AuditRows)),
    security(("bearer" = [])))]
pub async fn own_audit(
    State(state): State<AppState>,
    auth: TenantAuth,
    RawQuery(q): RawQuery,
) -> Result<Json<AuditRows>, ApiError> {
    let q = QueryInput::parse(q.as_deref(), PARAMS)?;
    // A `tenant` naming another tenant is a request for another tenant's data: refused as
    // every route refuses one (and recorded as a security event), before anything else.
    if let Some(t) = q.get("tenant") {
        check_tenant(&auth.scope, t, "the query string's tenant")?;
    }
    // `tenant_id` is checked against the credential like on every tenant route; the other
    // scope fields mean nothing here, and a field silently ignored would mislead.
    let scope = auth.request_scope(ScopeParts::default(), q.scope.clone())?;
    if scope != RequestScope::default() || auth.header_domain.is_some() {
        return Err(bad("the audit log takes no scope fields"));
    }
    let query = audit_query(&q)?;
    let asked = query.clone();
    let tenant = auth.scope;
    let rows = state
        .run_tenant(&auth.admitted, move |e| {
            Ok(e.own_audit_rows(&tenant, &query)?)
        })
        .await?;
    Ok(Json(page(rows, &asked)))
}
