//! `POST /v1/search`: the scope fields and a search request in one body.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use strata_engine::Engine;
use strata_types::SearchRequest;
use utoipa::ToSchema;

use crate::answer_budget::Shape;
use crate::answer_size::Carried;
use crate::bodies::{ScopeFields, SearchAnswer};
use crate::edge::TenantAuth;
use crate::input::{
    JsonBytes, SCOPE_KEYS, ScopeSources, body_bounds, from_map, parse_object_within,
    scope_of_body_for,
};
use crate::{ApiError, AppState};

/// A search with the request's scope fields.
#[derive(ToSchema)]
#[allow(dead_code)] // The documented shape of a body the handler reads in two steps.
struct SearchBody {
    #[serde(flatten)]
    search: SearchRequest,
    #[serde(flatten)]
    scope: ScopeFields,
}

/// Vector, text or hybrid search over one collection; scope applies before top-k.
#[utoipa::path(post, path = "/v1/search", tag = "search", operation_id = "search",
    request_body = SearchBody,
    responses((status = 200, description = "Hits, best first", body = SearchAnswer)),
    security(("bearer" = [])))]
pub async fn search(
    State(state): State<AppState>,
    auth: TenantAuth,
    RawQuery(q): RawQuery,
    JsonBytes(body): JsonBytes,
) -> Result<Response, ApiError> {
    // Admitted from its headers alone (the `TenantAuth` extractor: credential, rate and
    // in-flight caps) before its body was read. The body is parsed on the pool, in the tenant's
    // fair share: a tenant flooding with large bodies pays for their parsing itself instead of
    // delaying every tenant's requests on the async threads. Hits are cut down to what
    // `include` asks for there too, and serialised straight from these typed structs.
    let TenantAuth {
        scope,
        header_domain,
        admitted,
        max_user_tokens,
        // A search is one job: authentication judged its credential.
        credential: _,
    } = auth;
    // A search across share grants writes audit rows, so it must not run at low priority
    // while holding the write lock; the body is not parsed yet, so decide conservatively.
    let read_only = !may_search_shared(&body);
    let bounds = body_bounds(&state.engine.config().limits);
    // A large body waits for a parse slot like every route's (`parse_slots`); its job owns it.
    let slot = state.parse_slot(scope.tenant(), body.len()).await?;
    let demotable = crate::state::job_demotable(read_only, slot.is_some());
    let answers = (Arc::clone(&state.answers), Arc::clone(admitted.answers()));
    let run = move |e: &Engine| {
        let parsed = parse_object_within(&body, Some(scope.tenant()), bounds);
        // The slot bounds parsing only; the search itself is the pool's to schedule.
        drop(slot);
        let mut body = parsed?;
        let sources = ScopeSources {
            header_domain: header_domain.as_ref(),
            raw_query: q.as_deref(),
            max_user_tokens,
        };
        let req = scope_of_body_for(&scope, sources, &mut body)?;
        let search: SearchRequest =
            from_map(body).map_err(|e| crate::json_body::naming_scope_fields_too(e, SCOPE_KEYS))?;
        // The answer's memory is reserved once `k` and `include` are known, before the search
        // (`answer_budget`): k hits with their vectors can be megabytes.
        let shape = Shape::of_search(&search);
        let (budget, tenant) = answers;
        let mut hold = budget.reserve(&tenant, tenant.estimate(&budget, search.k, shape))?;
        let response = e.search(&scope, &req, &search)?;
        let hits = response.hits.len();
        // `k` hits cannot be cut short: measured as fetched, they must fit before they are
        // encoded (a tenant's estimate may have been taught by smaller records).
        let carried = Carried::of_search(&search);
        hold.fetched(response.hits.iter().map(|h| carried.hit(h)).sum())?;
        // Serialised here, on the tenant's job, not on the async threads after it: a flooding
        // tenant's answers are then written in its own share (and at its priority) instead of
        // delaying every other tenant's requests on the threads that read them.
        let buf = serde_json::to_vec(&SearchAnswer::project(response, &search))
            .map_err(|e| ApiError::Internal(format!("serialising a search answer: {e}")))?;
        hold.into_body(buf, hits, shape)
    };
    let answer = state.run_tenant_as(&admitted, demotable, run).await;
    answer.map(|bytes| ([(CONTENT_TYPE, "application/json")], bytes).into_response())
}

/// Whether a search body might ask for `include_shared` (which writes audit rows): it names
/// the field, or has a `\u` escape that could spell it. False only when it surely does not.
/// Runs on the async threads before the body's job is queued, over bodies of up to 16 MiB:
/// a vectorised search, not a window compared at every byte (50-100 ms for such a body).
fn may_search_shared(body: &[u8]) -> bool {
    let has = |needle: &[u8]| memchr::memmem::find(body, needle).is_some();
    has(b"include_shared") || has(b"\\u")
}

#[cfg(test)]
mod tests {
    use super::may_search_shared;

    #[test]
    fn only_a_body_that_surely_does_not_search_shared_domains_is_read_only() {
        assert!(!may_search_shared(
            br#"{"collection":"c","text":"hi","k":3}"#
        ));
        assert!(may_search_shared(
            br#"{"collection":"c","include_shared":{}}"#
        ));
        // An escape could spell the field name: serde would decode it.
        assert!(may_search_shared(br#"{"include\u005fshared":{}}"#));
    }
}
