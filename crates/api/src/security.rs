//! The security-audit middleware: every authentication failure (`401`) and every security event
//! (`TENANT_MISMATCH`, `SCOPE_FORBIDDEN`, and `FORBIDDEN`: a credential without the
//! permission the route needs) becomes one audit row and one WARN line (target
//! `security`), with the actor the edge learned, the client address and the request id, within
//! the bounds of `security_throttle`: past a burst and a steady rate per audit log and kind of
//! event, events are counted and summarised instead of written one by one.
//!
//! Mutations and admin actions are audited by the engine in their own transactions; these
//! events change nothing, so they are recorded here, after the response is known. An admitted
//! row is written before the response leaves, so a client that reads the audit log next finds
//! it; a suppressed one costs no storage write and no log line.
//!
//! A failed authentication never spends the tenant's request tokens (`max_qps`), even when the
//! token names one of its keys: whoever does not hold a tenant's key must not be able to use up
//! its quota. It is recorded in that tenant's audit log, within that log's own bounds.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::{Value, json};
use strata_auth::KeyTenant;
use strata_engine::AuditEvent;
use strata_types::{Millis, TenantId, now_millis};

use crate::AppState;
use crate::edge::{Who, WhoSlot, request_context};
use crate::error::SecurityMark;
use crate::security_throttle::{AuditLog, Suppressed, Verdict};

/// Longest client message copied into a row's detail.
const MAX_MESSAGE: usize = 200;

/// The actor of the summary rows this middleware writes.
const SUMMARY_ACTOR: &str = "system:audit";

/// The outcome of a summary row.
const SUMMARY_OUTCOME: &str = "SUPPRESSED";

pub(crate) async fn audit_security_events(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let slot = WhoSlot::default();
    req.extensions_mut().insert(Arc::clone(&slot));
    let context = request_context(req.headers(), req.extensions());
    let method = req.method().to_string();
    // The route template, not the path: a path can carry ids the row has no business holding.
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "-".to_owned(), |m| m.as_str().to_owned());
    let response = next.run(req).await;
    let Some(mark) = response.extensions().get::<SecurityMark>().cloned() else {
        return response;
    };
    let who = slot
        .lock()
        .ok()
        .and_then(|mut g| g.take())
        .unwrap_or_else(|| Who {
            actor: "anonymous".into(),
            ..Who::default()
        });
    let (tenant, log) = audit_log_of(&state, &who);
    let now = now_millis();
    let Verdict::Record(suppressed) =
        state
            .security
            .admit(log, tenant.as_ref(), mark.action, Instant::now(), now)
    else {
        return response;
    };
    if let Some(s) = &suppressed {
        log_summary(mark.action, s);
    }
    let message: String = mark.message.chars().take(MAX_MESSAGE).collect();
    log_event(&mark, tenant.as_ref(), &who, &route, &message);
    let mut detail = json!({
        "method": method,
        "route": route,
        "message": message,
    });
    if let Some(reason) = &who.reason {
        detail["reason"] = Value::String(reason.to_string());
    }
    let summary = suppressed.map(|s| summary_event(mark.action, s));
    let event = AuditEvent {
        tenant,
        actor: who.actor,
        action: mark.action.to_owned(),
        outcome: mark.code.to_owned(),
        client: context.client,
        request_id: context.request_id,
        detail,
    };
    let recorded = state
        .run(move |engine| {
            // The summary first: its events happened before this one.
            if let Some(summary) = summary {
                engine.record_audit(summary)?;
            }
            Ok(engine.record_audit(event)?)
        })
        .await;
    if let Err(e) = recorded {
        // The refusal stands either way; losing its audit row must not turn it into a 500.
        tracing::error!(target: "security", error = ?e, action = mark.action, "audit row not recorded");
    }
    response
}

/// The tenant an event is filed under, and its log: the credential's tenant; for a refused
/// API key whose id names a stored key, that key's tenant, so the tenant can see its keys
/// being tried; otherwise none, and the server's own log.
fn audit_log_of(state: &AppState, who: &Who) -> (Option<TenantId>, AuditLog) {
    if let (Some(t), Some(key)) = (&who.tenant, who.tenant_key) {
        return (Some(t.clone()), AuditLog::Tenant(key));
    }
    if let Some(id) = &who.claimed_key {
        // Inline, like authentication itself: two reads of memory-mapped storage. A failed
        // read files the event in the server's log rather than losing it.
        let creds = state.engine.credentials();
        let op = state.auth.system_operator("audit");
        if let Ok(info) = strata_auth::key(creds, &op, id)
            && let KeyTenant::Tenant(t) = info.tenant
            && let Ok(Some(meta)) = creds.tenant(&t)
        {
            return (Some(t), AuditLog::key_tried(meta.key, id));
        }
    }
    (None, AuditLog::Server)
}

/// Writes (row and line) the summaries of suppressed events that no later event carried: those
/// whose bucket admits again, or with `drain` every one (at shutdown). The server runs it
/// periodically, so a flood's last count reaches its tenant's log soon after the flood ends.
pub async fn flush_security_summaries(state: &AppState, drain: bool) {
    let due = state.security.due(Instant::now(), drain);
    if due.is_empty() {
        return;
    }
    let mut rows = Vec::new();
    for (log, action, mut s) in due {
        // Written late, a tenant's summary must not land in a later incarnation of its id (a
        // row is filed by tenant id): one whose tenant was purged or re-created since goes to
        // the server's log, which operators read.
        if let (Some(key), Some(id)) = (log.tenant(), &s.tenant)
            && !matches!(state.engine.credentials().tenant(id), Ok(Some(meta)) if meta.key == key)
        {
            s.tenant = None;
        }
        log_summary(action, &s);
        rows.push(summary_event(action, s));
    }
    let recorded = state
        .run(move |engine| {
            for row in rows {
                engine.record_audit(row)?;
            }
            Ok(())
        })
        .await;
    if let Err(e) = recorded {
        tracing::error!(target: "security", error = ?e, "summary audit rows not recorded");
    }
}

/// The row standing for the events of one kind that were suppressed before this one.
fn summary_event(action: &'static str, s: Suppressed) -> AuditEvent {
    let detail = json!({
        "suppressed": s.count,
        "since": s.since,
        "until": s.until,
        "message": summary_text(action, &s),
    });
    AuditEvent {
        tenant: s.tenant,
        actor: SUMMARY_ACTOR.to_owned(),
        action: action.to_owned(),
        outcome: SUMMARY_OUTCOME.to_owned(),
        client: None,
        request_id: None,
        detail,
    }
}

fn summary_text(action: &str, s: &Suppressed) -> String {
    format!(
        "{} more {action} events suppressed since {} (ms since the epoch)",
        s.count, s.since
    )
}

fn log_summary(action: &str, s: &Suppressed) {
    let tenant = s.tenant.as_ref().map_or("-", TenantId::as_str);
    let (since, until): (Millis, Millis) = (s.since, s.until);
    tracing::warn!(
        target: "security",
        action,
        tenant,
        suppressed = s.count,
        since,
        until,
        "{}",
        summary_text(action, s)
    );
}

/// The WARN line of an admitted event. Only names the edge learned and the client's message
/// (which names a field or a source, never a secret) go into it.
fn log_event(
    mark: &SecurityMark,
    tenant: Option<&TenantId>,
    who: &Who,
    route: &str,
    message: &str,
) {
    let tenant = tenant.map_or("-", TenantId::as_str);
    let actor = who.actor.as_str();
    let reason = who.reason.as_deref().unwrap_or("-");
    match mark.action {
        "auth.failure" => {
            tracing::warn!(target: "security", tenant, actor, reason, route, "credential refused")
        }
        "security.tenant_mismatch" => {
            tracing::warn!(target: "security", tenant, actor, route, message, "tenant mismatch")
        }
        _ => tracing::warn!(
            target: "security",
            action = mark.action,
            tenant,
            actor,
            route,
            message,
            "security event"
        ),
    }
}
