//! The security-audit middleware: every authentication failure (`401`) and every security event
//! (`TENANT_MISMATCH`, `SCOPE_FORBIDDEN`) becomes one audit row, with the actor the edge
//! learned, the client address and the request id.
//!
//! Mutations and admin actions are audited by the engine in their own transactions; these
//! events change nothing, so they are recorded here, after the response is known. The row is
//! written before the response leaves, so a client that reads the audit log next finds it, and
//! a flood of bad credentials is slowed by its own audit writes rather than queued behind them.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::{Value, json};
use strata_auth::KeyTenant;
use strata_engine::AuditEvent;

use crate::AppState;
use crate::edge::{Who, WhoSlot, request_context};
use crate::error::SecurityMark;

/// Longest client message copied into a row's detail.
const MAX_MESSAGE: usize = 200;

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
    let mut detail = json!({
        "method": method,
        "route": route,
        "message": mark.message.chars().take(MAX_MESSAGE).collect::<String>(),
    });
    if let Some(reason) = who.reason {
        detail["reason"] = Value::String(reason.to_owned());
    }
    let event = AuditEvent {
        tenant: who.tenant,
        actor: who.actor,
        action: mark.action.to_owned(),
        outcome: mark.code.to_owned(),
        client: context.client,
        request_id: context.request_id,
        detail,
    };
    let claimed_key = who.claimed_key;
    let auth = Arc::clone(&state.auth);
    let recorded = state
        .run(move |engine| {
            let mut event = event;
            // A refused API key still names its row: file the failure in that tenant's log, so
            // the tenant can see its keys being tried. An unknown id goes to the server's log.
            if event.tenant.is_none()
                && let Some(id) = claimed_key
            {
                let op = auth.system_operator("audit");
                if let Ok(info) = strata_auth::key(engine.credentials(), &op, &id)
                    && let KeyTenant::Tenant(t) = info.tenant
                {
                    event.tenant = Some(t);
                }
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
