//! The observability routes: `GET /metrics` (Prometheus text, for operators or a scraper's own
//! token), `GET /v1/stats` (a tenant's own figures, with its admin key), `GET /v1/admin/stats`
//! (every tenant's figures as JSON, for the dashboard) and `GET /dashboard` (the page itself).

use axum::Json;
use axum::extract::{FromRequestParts, RawQuery, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::response::{Html, IntoResponse, Response};
use std::collections::HashSet;
use std::time::Instant;
use strata_auth::{OperatorScope, Principal};
use strata_engine::{IntegrityCounts, ResidencySummary, TenantFigures, UsageReport};
use strata_store::TenantKey;
use strata_store::stats::{BUCKETS_SECS, HistogramSnapshot};
use strata_types::TenantId;

use crate::bodies::{LatencySummary, ServerStats, TenantStats};
use crate::edge::{OperatorAuth, TenantAuth, bearer, principal};
use crate::exposition::{Exposition, INTEGRITY_STATES, TenantRow, integrity_name, render};
use crate::input::{QueryInput, ScopeParts};
use crate::metrics::{REFUSALS, resident_bytes};
use crate::{ApiError, AppState};

/// The dashboard: one page, its CSS and JS inline, compiled into the binary.
const DASHBOARD: &str = include_str!("dashboard.html");

/// A request allowed to read `/metrics`: the `[metrics] token`, or an operator credential.
pub struct MetricsAuth(OperatorScope);

/// Compares secrets without an early exit, so timing does not reveal a matching prefix.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl FromRequestParts<AppState> for MetricsAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let (Some(token), Ok(given)) = (&state.config.metrics.token, bearer(&parts.headers))
            && same_secret(token, given)
        {
            return Ok(MetricsAuth(state.auth.system_operator("metrics")));
        }
        match principal(parts, state).await? {
            Principal::Operator(op) => Ok(MetricsAuth(op)),
            Principal::Tenant(_) => Err(ApiError::Forbidden(
                "metrics need an operator credential or the metrics token".into(),
            )),
        }
    }
}

/// Prometheus text exposition of the server's and every tenant's figures. Tenants beyond
/// `[metrics] tenant_label_cap` (those at `shared` that are the least active) are summed under
/// `tenant="(other)"`.
#[utoipa::path(get, path = "/metrics", tag = "observability", operation_id = "metrics",
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain", body = String)),
    security(("bearer" = [])))]
pub async fn metrics(
    State(state): State<AppState>,
    MetricsAuth(op): MetricsAuth,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    QueryInput::parse(q.as_deref(), &[])?;
    let (report, residency, _, rows) = registry(&state, op, None, usize::MAX).await?;
    let m = &state.metrics;
    let routes = m.routes();
    let suppressed = state.security.suppressed_counts();
    let text = render(&Exposition {
        folded: &m.folded,
        routes: &routes,
        tenants: &rows,
        unreadable: report.unreadable.len(),
        residency_budget_bytes: residency.memory_budget_bytes,
        residency_resident_bytes: residency.resident_bytes,
        cap: state.config.metrics.tenant_label_cap,
        pinned: &state.config.metrics.pinned_tenants,
        server: m.server(),
        workers: state.pool_workers(),
        background_workers: state.pool_background_workers(),
        long_job_spares: state.pool_long_job_spares(),
        idle_looks: state.pool_idle_looks(),
        idle_polls: state.pool_idle_polls(),
        forbidden_writes: strata_engine::storage_writes_on_forbidden_threads(),
        storage_failed: state.engine.storage_failure().is_some(),
        storage_open: state.engine.storage_open_report(),
        search_recheck_drops: state.engine.search_recheck_drops(),
        security_events_suppressed: &suppressed,
        commits: state.engine.commit_latency(),
        write_batches: state.engine.write_batches(),
        log_replayed: state.engine.storage_log_entries_replayed(),
        vacuums: state.engine.vacuum_figures(),
        resident_bytes: resident_bytes(),
    });
    Ok((
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        text,
    )
        .into_response())
}

/// `/v1/admin/stats` pages: this many tenants unless `limit` says otherwise, and at most
/// [`MAX_PAGE`], so one dashboard poll is bounded whatever the tenant count.
const DEFAULT_PAGE: usize = 1000;
const MAX_PAGE: usize = 10_000;

type Registry = (
    UsageReport,
    ResidencySummary,
    IntegrityCounts,
    Vec<TenantRow>,
);

/// Registered tenants (at most `limit`, ids after `after`) with the live figures of their
/// current incarnation, the tenants left out, the server's residency and integrity counts.
/// When the whole registry was read, drops the series of tenants purged since they were last
/// seen, so neither memory nor the output keeps dead tenants.
async fn registry(
    state: &AppState,
    op: OperatorScope,
    after: Option<TenantId>,
    limit: usize,
) -> Result<Registry, ApiError> {
    let asof = Instant::now();
    let whole = after.is_none();
    let (mut report, residency, counts) = state
        .run(move |e| {
            Ok((
                e.usage_page(&op, after.as_ref(), limit)?,
                e.residency_summary(&op),
                e.integrity_counts(&op)?,
            ))
        })
        .await?;
    if whole && report.next_after.is_none() {
        let alive: HashSet<TenantKey> = report.tenants.iter().map(|t| t.key).collect();
        // A tenant whose profile does not decode is still registered: its series stays.
        let unreadable: HashSet<&str> = report.unreadable.iter().map(String::as_str).collect();
        state.metrics.forget(asof, |k, id| {
            alive.contains(&k) || unreadable.contains(id.as_str())
        });
    }
    let live = state.metrics.tenants();
    let rows = std::mem::take(&mut report.tenants)
        .into_iter()
        .map(|f| {
            let l = live.get(&f.key).copied().unwrap_or_default();
            row(f, l)
        })
        .collect();
    Ok((report, residency, counts, rows))
}

fn row(f: TenantFigures, live: crate::metrics::TenantSnapshot) -> TenantRow {
    TenantRow {
        info: f.info,
        live,
        residency: f.residency,
        integrity: f.integrity,
    }
}

fn summary(h: &HistogramSnapshot) -> LatencySummary {
    LatencySummary {
        count: h.count(),
        sum_seconds: h.sum_nanos as f64 / 1e9,
        p50_seconds: h.quantile(0.5),
        p99_seconds: h.quantile(0.99),
        buckets: h.buckets.to_vec(),
    }
}

fn tenant_stats(row: TenantRow) -> TenantStats {
    let TenantRow {
        info,
        live,
        residency,
        integrity,
    } = row;
    let s = &live;
    TenantStats {
        tenant: info.id,
        status: info.status,
        isolation: info.isolation,
        limits: info.limits,
        usage: info.usage,
        requests: s.requests(),
        responses: s
            .classes
            .iter()
            .enumerate()
            .map(|(i, n)| (format!("{}xx", i + 1), *n))
            .collect(),
        refusals: REFUSALS
            .iter()
            .zip(s.refusals)
            .map(|(c, n)| ((*c).to_owned(), n))
            .collect(),
        answer_bytes_held: s.answer_bytes,
        latency: summary(&s.latency),
        queue_wait: summary(&s.queue_wait),
        queue_depth: s.queued,
        cpu_seconds: s.cpu_nanos as f64 / 1e9,
        residency,
        integrity,
        adaptive: None,
    }
}

/// The calling tenant's own usage, limits and traffic; needs the `admin` and `all_principals`
/// permissions and a credential bound to neither domains nor user tokens (the figures count
/// every domain and principal); a bound one is `403 SCOPE_FORBIDDEN`, one without
/// `all_principals` `403 FORBIDDEN`.
#[utoipa::path(get, path = "/v1/stats", tag = "observability", operation_id = "own_stats",
    responses((status = 200, description = "The tenant's figures", body = TenantStats)),
    security(("bearer" = [])))]
pub async fn own_stats(
    State(state): State<AppState>,
    auth: TenantAuth,
    RawQuery(q): RawQuery,
) -> Result<Json<TenantStats>, ApiError> {
    // `tenant_id` is checked against the credential like on every tenant route; the other
    // scope fields mean nothing for tenant-wide figures, and one silently ignored would mislead.
    let q = QueryInput::parse(q.as_deref(), &[])?;
    let scope = auth.request_scope(ScopeParts::default(), q.scope)?;
    if scope != strata_types::RequestScope::default() || auth.header_domain.is_some() {
        return Err(ApiError::BadRequest(
            "the stats are tenant-wide and take no scope fields".into(),
        ));
    }
    let scope = auth.scope;
    let (own, adaptive) = state
        .run_tenant(&auth.admitted, move |e| {
            Ok((e.own_usage(&scope)?, e.adaptive_stats(&scope)?))
        })
        .await?;
    // Keyed by incarnation: a tenant re-created under an old id sees only its own traffic.
    let live = state.metrics.tenant_snapshot(own.key);
    let mut stats = tenant_stats(row(own, live));
    stats.adaptive = Some(adaptive);
    Ok(Json(stats))
}

/// The server's figures and one page of tenants' in id order (no label cap: this is JSON for
/// the dashboard). `next_after` is the `after` of the next page.
#[utoipa::path(get, path = "/v1/admin/stats", tag = "admin", operation_id = "admin_stats",
    params(
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 10000, description = "tenants per page, 1 to 10000 (default 1000)"),
        ("after" = Option<TenantId>, Query, description = "start after this tenant id (a previous page's `next_after`)")),
    responses((status = 200, description = "Server and per-tenant figures", body = ServerStats)),
    security(("bearer" = [])))]
pub async fn admin_stats(
    State(state): State<AppState>,
    OperatorAuth(op): OperatorAuth,
    RawQuery(q): RawQuery,
) -> Result<Json<ServerStats>, ApiError> {
    let q = QueryInput::parse(q.as_deref(), &["limit", "after"])?;
    let limit = match q.get("limit") {
        None => DEFAULT_PAGE,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "limit: expected a whole number from 1 to {MAX_PAGE}"
                ))
            })?,
    };
    let after = q
        .get("after")
        .map(|a| TenantId::parse_field("after", a))
        .transpose()
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let (adaptive_namespaces, adaptive_bytes, _, _) = state.engine.adaptive_totals(&op);
    let (report, residency, counts, rows) = registry(&state, op, after, limit).await?;
    let server = state.metrics.server();
    let tenants_by_integrity = INTEGRITY_STATES
        .iter()
        .zip([counts.normal, counts.stress, counts.critical])
        .map(|(s, n)| (integrity_name(*s).to_owned(), n))
        .collect();
    let tenants = rows.into_iter().map(tenant_stats).collect();
    Ok(Json(ServerStats {
        uptime_seconds: server.uptime_secs,
        bucket_bounds_seconds: BUCKETS_SECS.to_vec(),
        pool_workers: state.pool_workers(),
        pool_busy_workers: server.busy_workers,
        pool_busy_seconds: server.busy_nanos as f64 / 1e9,
        open_connections: server.open_connections,
        resident_bytes: resident_bytes(),
        commits: summary(&state.engine.commit_latency()),
        vacuums: state.engine.vacuum_figures(),
        residency_budget_bytes: residency.memory_budget_bytes,
        residency_resident_bytes: residency.resident_bytes,
        adaptive_namespaces,
        adaptive_bytes,
        tenants_by_integrity,
        unreadable_tenants: report.unreadable,
        tenant_count: counts.normal + counts.stress + counts.critical,
        next_after: report.next_after,
        tenants,
    }))
}

/// The operator dashboard: a single self-contained page; it asks for the operator key and
/// keeps it in the browser's session storage only.
#[utoipa::path(get, path = "/dashboard", tag = "observability", operation_id = "dashboard",
    responses((status = 200, description = "The dashboard page", content_type = "text/html", body = String)))]
pub async fn dashboard() -> Response {
    (
        [
            // The page loads nothing from elsewhere; say so to the browser too.
            (
                axum::http::header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
                 frame-ancestors 'none'",
            ),
            (axum::http::header::CACHE_CONTROL, "no-store"),
        ],
        Html(DASHBOARD),
    )
        .into_response()
}
