//! The router: every route, registered once through utoipa-axum so the OpenAPI document and
//! the list of served routes come from the same registrations; plus the middleware stack
//! (request ids, tracing spans, body deadline and limit, panic guard) and JSON fallbacks.

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::edge::REQUEST_ID_HEADER as REQUEST_ID;
use crate::{
    ApiError, AppState, admin, audit, backups, body_guard, collections, evidence, feedback, health,
    isolation, lifecycle, links, memories, metrics, observe, reembed, residency, search, security,
    shares, transfer,
};

fn api() -> OpenApiRouter<AppState> {
    // One `routes!` per path: utoipa-axum requires the handlers of one call to share a path.
    OpenApiRouter::new()
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::openapi_json))
        .routes(routes!(memories::create))
        .routes(routes!(memories::get, memories::patch, memories::delete))
        .routes(routes!(memories::delete_where))
        .routes(routes!(memories::list_get, memories::list_post))
        .routes(routes!(memories::count))
        .routes(routes!(search::search))
        .routes(routes!(evidence::add))
        .routes(routes!(links::create))
        .routes(routes!(links::delete))
        .routes(routes!(links::list))
        .routes(routes!(links::recall))
        .routes(routes!(feedback::feedback))
        .routes(routes!(shares::create, shares::list))
        .routes(routes!(shares::revoke))
        .routes(routes!(shares::incoming))
        .routes(routes!(shares::accept))
        .routes(routes!(shares::decline))
        .routes(routes!(admin::tenant_tree))
        .routes(routes!(collections::list, collections::create))
        .routes(routes!(collections::delete))
        .routes(routes!(reembed::start, reembed::status))
        .routes(routes!(admin::create_tenant, admin::list_tenants))
        .routes(routes!(
            admin::get_tenant,
            lifecycle::update_tenant,
            lifecycle::delete_tenant
        ))
        .routes(routes!(lifecycle::suspend_tenant))
        .routes(routes!(lifecycle::resume_tenant))
        .routes(routes!(lifecycle::restore_tenant))
        .routes(routes!(lifecycle::purge_deleted))
        .routes(routes!(transfer::export_tenant))
        .routes(routes!(transfer::import_tenant))
        .routes(routes!(audit::admin_audit))
        .routes(routes!(audit::own_audit))
        .routes(routes!(residency::summary))
        .routes(routes!(residency::tenant))
        .routes(routes!(residency::verify))
        .routes(routes!(residency::repair))
        .routes(routes!(residency::integrity))
        .routes(routes!(isolation::migrate))
        .routes(routes!(backups::create))
        .routes(routes!(backups::status))
        .routes(routes!(isolation::status, isolation::cancel))
        .routes(routes!(isolation::running))
        .routes(routes!(admin::create_key, admin::list_keys))
        .routes(routes!(admin::revoke_key))
        .routes(routes!(admin::rotate_key))
        .routes(routes!(observe::metrics))
        .routes(routes!(observe::own_stats))
        .routes(routes!(observe::admin_stats))
        .routes(routes!(observe::dashboard))
}

/// The OpenAPI document of every route as utoipa generates it; `crate::openapi::document`
/// completes it for serving.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api().into_openapi()
}

/// Every `(METHOD, path)` the router serves, derived from the registrations themselves.
pub fn served_routes() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (path, item) in &openapi().paths.paths {
        let ops = [
            ("GET", &item.get),
            ("POST", &item.post),
            ("PUT", &item.put),
            ("PATCH", &item.patch),
            ("DELETE", &item.delete),
            ("HEAD", &item.head),
            ("OPTIONS", &item.options),
            ("TRACE", &item.trace),
        ];
        for (method, op) in ops {
            if op.is_some() {
                out.push((method.to_owned(), path.clone()));
            }
        }
    }
    out.sort();
    out
}

/// A UUIDv7 for each request that arrives without a usable `x-request-id`.
#[derive(Clone, Copy, Default)]
struct MakeUuid;

impl MakeRequestId for MakeUuid {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&crate::edge::new_request_id())
            .ok()
            .map(RequestId::new)
    }
}

fn span_for(req: &Request) -> tracing::Span {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str)
        .unwrap_or("-");
    let request_id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    // `tenant` is filled in by the authentication extractor once the credential is known.
    tracing::info_span!(
        "request",
        method = %req.method(),
        route,
        request_id,
        tenant = tracing::field::Empty,
    )
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::Internal("handler panicked".into()).into_response()
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// The complete application.
pub fn router(state: AppState) -> Router {
    let doc = crate::health::OpenApiDocument::of(&crate::openapi::document_for(
        &state.engine.config().limits,
    ));
    crate::media_type::build_body_kinds();
    let (router, _) = api().split_for_parts();
    let request_id = HeaderName::from_static(REQUEST_ID);
    let max_body = state.config.max_body_bytes;
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(
            crate::idempotency::refuse_where_unkept,
        ))
        // Inside the security middleware, so it reads the credential that middleware's slot
        // learns; outside the handlers, so it times and counts every answer, refusals too.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::record_requests,
        ))
        // Inside the request-id layer, so the id it records is the one the client gets back.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            security::audit_security_events,
        ))
        .layer(axum::Extension(doc))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(CatchPanicLayer::custom(panic_response))
        // Inside the request-id layers, so its 408 and 414 answers carry the request's id.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            body_guard::guard_requests,
        ))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        // A 5xx answer is not logged as an error here: most are deliberate refusals (a tenant
        // shed in the stress or critical state, an overloaded pool: each one request, possibly
        // thousands a second, like a 429), and the failures an operator must see log
        // themselves at ERROR with their cause (`ApiError::Internal`, storage unavailable).
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(span_for)
                .on_failure(
                    tower_http::trace::DefaultOnFailure::new().level(tracing::Level::DEBUG),
                ),
        )
        .layer(SetRequestIdLayer::new(request_id, MakeUuid))
        // Outermost, so an unusable client id is gone before an id is made, echoed or logged.
        .layer(axum::middleware::map_request(
            crate::edge::keep_usable_request_id,
        ))
        .with_state(state)
}
