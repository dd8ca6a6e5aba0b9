//! Collection routes: list, create, delete (the last two need `admin`).

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use serde::Deserialize;
use strata_engine::CollectionSpec;
use strata_types::{CollectionName, MemoryDefaults, Metric, TenantId, TextAnalyzer};
use tracing::Instrument;
use utoipa::ToSchema;

use crate::bodies::{CollectionDeleted, CollectionView, Collections};
use crate::edge::TenantAuth;
use crate::input::{PathParam, QueryInput, ScopeParts};
use crate::json_body::JsonBody;
use crate::scan_steps::run_in_steps;
use crate::{ApiError, AppState};

fn bad(e: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest(e.to_string())
}

/// Collections are tenant-wide, so of the scope fields only `tenant_id` (checked) matters.
pub(crate) fn check_scope(
    auth: &TenantAuth,
    body: Option<ScopeParts>,
    q: Option<&str>,
) -> Result<(), ApiError> {
    let q = QueryInput::parse(q, &[])?;
    auth.request_scope(body.unwrap_or_default(), q.scope)
        .map(|_| ())
}

/// The only scope field a body of these routes may carry: `tenant_id`, which is checked.
pub(crate) const TENANT_KEY: &[&str] = &["tenant_id"];

/// The tenant's collections.
#[utoipa::path(get, path = "/v1/collections", tag = "collections", operation_id = "list_collections",
    responses((status = 200, description = "The tenant's collections", body = Collections)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    auth: TenantAuth,
    RawQuery(q): RawQuery,
) -> Result<Json<Collections>, ApiError> {
    check_scope(&auth, None, q.as_deref())?;
    let scope = auth.scope;
    let list = state
        .run_tenant(&auth.admitted, move |e| Ok(e.collections(&scope)?))
        .await?;
    Ok(Json(Collections {
        collections: list.into_iter().map(CollectionView::from).collect(),
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewCollection {
    #[schema(value_type = CollectionName)]
    name: String,
    /// The dimension of every vector in it, 1 to `engine.limits.max_dim` (4096 unless the
    /// operator changed it; the served document states the configured bound).
    #[schema(minimum = 1, maximum = 4096)]
    dim: u32,
    #[serde(default = "cosine")]
    #[schema(default = "cosine")]
    metric: Metric,
    /// How text is analysed for keyword search: `standard`, `english` or `none`.
    #[serde(default)]
    #[schema(default = "standard")]
    analyzer: TextAnalyzer,
    // The memory defaults are listed one by one rather than flattened from `MemoryDefaults`:
    // serde reports an error inside a flattened struct at the body's root, without the field.
    /// The confidence of a new record that gives none, 0 to 1; 0.5 when absent.
    #[schema(minimum = 0.0, maximum = 1.0)]
    initial_confidence: Option<f64>,
    /// The recency half-life of searches that name none, in seconds; absent: no recency
    /// decay unless a search asks for it.
    #[schema(exclusive_minimum = 0.0)]
    recency_half_life_secs: Option<f64>,
    /// `true`: each new record written to a `run_id` of this collection is linked from the
    /// run's previous record (relation `next`, weight 1). Absent: no automatic links.
    link_runs: Option<bool>,
    /// `true`: the server's built-in model embeds this collection's text, as it does the
    /// default `text` collection's: a record with `content` and no `vector` is embedded, and a
    /// search with a `query` alone is embedded and runs hybrid. Needs the server's embedder and
    /// `dim` equal to its model's (384). Absent: the collection takes client vectors only.
    embed: Option<bool>,
}

/// A new collection; `tenant_id`, if given, is checked against the credential.
#[derive(ToSchema)]
#[allow(dead_code)] // The documented shape of a body the handler reads in two steps.
struct NewCollectionBody {
    #[serde(flatten)]
    collection: NewCollection,
    tenant_id: Option<TenantId>,
}

fn cosine() -> Metric {
    Metric::Cosine
}

/// Creates a collection (`name`, `dim`, `metric`: cosine, dot or l2; `analyzer`: standard,
/// english or none). Needs `admin` and a credential bound to neither domains nor user tokens
/// (a collection serves every domain and principal); a bound one is `403 SCOPE_FORBIDDEN`.
#[utoipa::path(post, path = "/v1/collections", tag = "collections", operation_id = "create_collection",
    request_body = NewCollectionBody,
    responses((status = 201, description = "The collection", body = CollectionView)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    auth: TenantAuth,
    RawQuery(q): RawQuery,
    body: JsonBody,
) -> Result<(StatusCode, Json<CollectionView>), ApiError> {
    let body = body.scoped::<NewCollection>(&state, TENANT_KEY).await?;
    check_scope(&auth, Some(body.scope), q.as_deref())?;
    let new = body.rest?;
    let name = CollectionName::parse_field("name", new.name).map_err(bad)?;
    // Dot segments: HTTP clients resolve them, so no URL could name the collection.
    if matches!(name.as_str(), "." | "..") {
        return Err(ApiError::BadRequest(format!(
            "name: {:?} is reserved: no URL path could name a collection of that name",
            name.as_str()
        )));
    }
    let scope = auth.scope;
    let c = state
        .run_tenant(&auth.admitted, move |e| {
            let spec = CollectionSpec {
                dim: new.dim,
                metric: new.metric,
                analyzer: new.analyzer,
                memory: MemoryDefaults {
                    initial_confidence: new.initial_confidence,
                    recency_half_life_secs: new.recency_half_life_secs,
                    link_runs: new.link_runs,
                },
                embed: new.embed.unwrap_or(false),
            };
            Ok(e.create_collection_full(&scope, &name, spec)?)
        })
        .await?;
    Ok((StatusCode::CREATED, Json(CollectionView::from(c))))
}

/// Deletes a collection and every record in it, of every domain and principal. Needs `admin`
/// and `all_principals` and a credential bound to neither domains nor user tokens; a bound one
/// is `403 SCOPE_FORBIDDEN`, one without `all_principals` (which cannot see the principals'
/// private records it would delete) `403 FORBIDDEN`, and either deletes nothing.
///
/// It runs in steps, so other tenants' writes go on meanwhile: first the collection is marked
/// as being deleted, and from then on it is missing (writes and searches naming it are
/// `404 COLLECTION_NOT_FOUND`, listings leave it out, its records are neither returned,
/// counted nor exported); then its records are deleted in transactions of up to 1,000 (with
/// their links); then the mark goes. Once begun it runs to its end even if the client hangs
/// up. An error part-way or a crash leaves it marked, its name refused to a create (`409`),
/// until the same `DELETE` is sent again: that finishes it, answering only the records it
/// deleted itself.
#[utoipa::path(delete, path = "/v1/collections/{name}", tag = "collections", operation_id = "delete_collection",
    params(("name" = CollectionName, Path, description = "collection name")),
    responses((status = 200, description = "How many records this request deleted", body = CollectionDeleted)),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    auth: TenantAuth,
    PathParam(name): PathParam,
    RawQuery(q): RawQuery,
) -> Result<Json<CollectionDeleted>, ApiError> {
    check_scope(&auth, None, q.as_deref())?;
    let name = CollectionName::parse_field("name", name).map_err(bad)?;
    let recheck = auth.recheck();
    let (scope, admitted) = (auth.scope, auth.admitted);
    // On a task of its own, which a client that hangs up does not cancel: a delete begun runs
    // to its end (a client's timeout on a large collection would otherwise leave it marked,
    // still counted in the usage, until someone repeated the DELETE). The task keeps the
    // request's admission, so the tenant's in-flight count still holds it meanwhile.
    let steps = async move {
        run_in_steps(&state, &admitted, recheck, move |e| {
            e.begin_delete_collection(&scope, &name)
        })
        .await
    };
    let n = crate::timing::spawn_carrying(steps.instrument(tracing::Span::current()))
        .await
        .map_err(|e| ApiError::Internal(format!("collection delete task: {e}")))??;
    Ok(Json(CollectionDeleted { deleted_records: n }))
}
