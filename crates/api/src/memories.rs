//! Memory routes: write (single or batch), get, patch, delete by id or filter, list, count.

use axum::Json;
use axum::extract::{FromRequest, FromRequestParts, RawQuery, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;
use strata_engine::{Answered, Idempotency, Page, PutOutcome};
use strata_types::{
    Filter, Include, NewRecord, RecordId, RecordPatch, RequestScope, TenantId, TokenSelector,
};
use tracing::Instrument;
use utoipa::ToSchema;

use crate::bodies::{
    BatchOutcome, Counted, Deleted, RecordScopeFields, ScopeFields, WriteResponse,
};
use crate::edge::TenantAuth;
use crate::idempotency;
use crate::input::{PathParam, QueryInput, SCOPE_KEYS, ScopeParts, check_body_tenant, from_map};
use crate::json_body::JsonBody;
use crate::keys_in_flight::Claim;
use crate::put_steps::put_in_steps;
use crate::record_body::{INCLUDE_DOC, RecordBody, RecordFields, RecordPage};
use crate::scan_steps::{MeteredPage, run_in_steps};
use crate::{ApiError, AppState};

/// Page size of a list when the request names none.
const DEFAULT_LIMIT: usize = 100;
/// The largest page (`strata_engine`'s bound): a larger `limit` is refused there, so an
/// estimate never counts more records.
const MAX_PAGE: usize = 1000;

/// In a single-record write, `user_tokens`, `run_id` and `memory_scope` belong to the record;
/// only these body fields are request scope.
const RECORD_BODY_SCOPE_KEYS: &[&str] = &["tenant_id", "memory_domain", "user_match"];

fn bad(e: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest(e.to_string())
}

fn record_id(s: String) -> Result<RecordId, ApiError> {
    RecordId::parse(s).map_err(bad)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Batch {
    /// Written atomically: all or none. At least one record, each id at most once.
    #[schema(min_items = 1)]
    records: Vec<NewRecord>,
}

/// One record with the request's scope fields.
#[derive(ToSchema)]
#[allow(dead_code)] // The documented shape of a body the handler reads in two steps.
struct OneRecordWrite {
    #[serde(flatten)]
    record: NewRecord,
    #[serde(flatten)]
    scope: RecordScopeFields,
}

/// A batch with the request's scope fields.
#[derive(ToSchema)]
#[allow(dead_code)] // The documented shape of a body the handler reads in two steps.
struct BatchWrite {
    #[serde(flatten)]
    batch: Batch,
    #[serde(flatten)]
    scope: ScopeFields,
}

/// A write: one record, or `{"records": [...]}`.
#[derive(ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // The documented shape of a body the handler reads in two steps.
enum WriteBody {
    One(OneRecordWrite),
    Batch(BatchWrite),
}

/// Writes one record, or a batch as `{"records": [...]}`, atomically. A client id that names an
/// existing record replaces it; a credential bound to user tokens may replace only a record
/// whose tokens are a non-empty subset of its own (`403 SCOPE_FORBIDDEN` for a tenant-shared or
/// co-owned one).
#[utoipa::path(post, path = "/v1/memories", tag = "memories", operation_id = "write_memories",
    params(("Idempotency-Key" = Option<String>, Header,
        description = "Names this write (1 to 255 visible ASCII characters, e.g. a UUID): a retry with the same key and request within 24 hours gets the first answer back, with `Idempotent-Replayed: true`, and writes nothing; a retry sent while the first still runs waits for its answer; the same key with another request is `409 CONFLICT`; two copies of the header are `400 BAD_REQUEST`. Once the whole request has reached the server, the write runs to its end even if the client hangs up.")),
    request_body = WriteBody,
    responses(
        (status = 201, description = "Written; at least one record is new", body = WriteResponse),
        (status = 200, description = "Written; every record replaced or deduplicated an existing one", body = WriteResponse)),
    security(("bearer" = [])))]
pub async fn create(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    // A keyed write runs to its end even when its client has gone (a retry then finds its
    // answer): the whole request, its authentication and body included, runs on a task of its
    // own, so no await a hang-up would cancel (a small body can be read whole, and the hang-up
    // seen, while the credential is still being checked) drops it.
    if !req.headers().contains_key(idempotency::HEADER) {
        return create_request(state, req).await;
    }
    // Its timeline (`X-Strata-Timing`) goes with it, and comes back with its answer.
    let write = create_request(state, req).instrument(tracing::Span::current());
    crate::timing::spawn_carrying(write)
        .await
        .map_err(|e| ApiError::Internal(format!("write task: {e}")))?
}

/// [`create`]'s extractors and handler, in order: credential and admission, the body read
/// whole, its parse and conversion (in the tenant's pool share when large), then the write.
async fn create_request(state: AppState, req: Request) -> Result<Response, ApiError> {
    let (mut parts, body) = req.into_parts();
    let auth = TenantAuth::from_request_parts(&mut parts, &state).await?;
    let headers = parts.headers.clone();
    let raw_query = parts.uri.query().map(str::to_owned);
    let body = JsonBody::from_request(Request::from_parts(parts, body), &state).await?;
    create_parsed(state, auth, headers, raw_query, body).await
}

/// A write's body converted: its key with the fingerprint, its scope fields, its records.
struct WriteInput {
    /// Handed back unchecked, like `records`: the request's scope is checked first.
    idem: Result<Option<Idempotency>, ApiError>,
    batch: bool,
    scope: ScopeParts,
    /// Handed back unchecked: the request's scope is checked first.
    records: Result<Vec<NewRecord>, ApiError>,
}

/// Converts a write's body, where it is parsed: the fingerprint hashes the whole body, and a
/// batch's records carry up to its whole size in metadata. A body naming another tenant is
/// refused before either (`check_body_tenant`); a malformed `Idempotency-Key` (the
/// fingerprint's error) is handed back, to be refused after the request's scope is checked.
fn convert_write(
    tenant: Option<TenantId>,
    fingerprint: Result<Option<idempotency::Fingerprint>, ApiError>,
    mut body: serde_json::Map<String, Value>,
) -> Result<WriteInput, ApiError> {
    if let Some(tenant) = &tenant {
        check_body_tenant(&body, tenant)?;
    }
    let idem = fingerprint.and_then(|f| f.map(|f| f.of_body(&body)).transpose());
    let batch = body.contains_key("records");
    let keys = if batch {
        SCOPE_KEYS
    } else {
        RECORD_BODY_SCOPE_KEYS
    };
    let scope = ScopeParts::take_from_body(&mut body, keys)?;
    let records = if batch {
        from_map::<Batch>(body).map(|b| b.records)
    } else {
        from_map::<NewRecord>(body).map(|r| vec![r])
    };
    Ok(WriteInput {
        idem,
        batch,
        scope,
        records,
    })
}

/// [`create`] once its body is read.
async fn create_parsed(
    state: AppState,
    auth: TenantAuth,
    headers: HeaderMap,
    raw_query: Option<String>,
    body: JsonBody,
) -> Result<Response, ApiError> {
    // Refusals come in `JsonBody`'s order whatever the body's size: its parse, a tenant it
    // names, the query string and scope, the `Idempotency-Key`, the records, then the engine's.
    let fingerprint = idempotency::Fingerprint::of_request(
        &headers,
        &auth,
        "POST /v1/memories",
        raw_query.as_deref(),
    );
    let tenant = body.tenant().cloned();
    let WriteInput {
        idem,
        batch,
        scope: parts,
        records,
    } = body
        .convert(&state, move |body| convert_write(tenant, fingerprint, body))
        .await?;
    let q = QueryInput::parse(raw_query.as_deref(), &[])?;
    let req = auth.request_scope(parts, q.scope)?;
    let idem = idem?;
    let records = records?;
    let req = speak_for_the_record(&auth, req, &records, batch);
    let scope = auth.scope;
    let Some(idem) = idem else {
        let outcomes = put_in_steps(
            &state,
            &auth.admitted,
            scope,
            req,
            records,
            batch,
            |e, s, r, p| Ok(e.finish_put(s, r, p)?),
        )
        .await?;
        let (status, body) = write_answer(batch, outcomes);
        return Ok((status, Json(body)).into_response());
    };
    // A retry of this request while it still runs is answered with its answer; past the
    // wait's bound, or when it ended without one, the retry runs (and writes at most once).
    let leader = match state.keys_in_flight.claim(scope.key(), &idem).await? {
        Claim::First(leader) => Some(leader),
        Claim::Waited(Some((status, answer))) => return Ok(idempotency::replay(status, answer)),
        Claim::Waited(None) => None,
    };
    // A retry of a write that has ended gets its kept answer before anything is embedded,
    // once durable (`Engine::kept_answer`): a job that may write, never moved to the
    // background workers, where it would hold the store's write lock at their priority.
    let kept = {
        let (scope, idem) = (scope.clone(), idem.clone());
        state
            .run_tenant(&auth.admitted, move |e| Ok(e.kept_answer(&scope, &idem)?))
            .await?
    };
    if let Some((status, answer)) = kept {
        if let Some(leader) = &leader {
            leader.answered(status, &answer);
        }
        return Ok(idempotency::replay(status, answer));
    }
    // On a task of its own, so that a client that times out and retries leaves it running:
    // the retry waits for its answer above instead of embedding the batch again.
    let admitted = auth.admitted;
    let answered = crate::timing::spawn_carrying(async move {
        let answered = put_in_steps(
            &state,
            &admitted,
            scope,
            req,
            records,
            batch,
            move |e, s, r, p| {
                Ok(e.finish_put_idempotent(s, r, p, &idem, |outcomes| {
                    let (status, body) = write_answer(batch, outcomes.to_vec());
                    let body = serde_json::to_value(body).unwrap_or(Value::Null);
                    (status.as_u16(), body)
                })?)
            },
        )
        .await?;
        if let Some(leader) = &leader {
            match &answered {
                Answered::Fresh(outcomes) => {
                    let (status, body) = write_answer(batch, outcomes.clone());
                    let body = serde_json::to_value(body).unwrap_or(Value::Null);
                    leader.answered(status.as_u16(), &body);
                }
                Answered::Replayed { status, answer } => leader.answered(*status, answer),
            }
        }
        Ok::<_, ApiError>(answered)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("write task: {e}")))??;
    Ok(match answered {
        Answered::Fresh(outcomes) => {
            let (status, body) = write_answer(batch, outcomes);
            (status, Json(body)).into_response()
        }
        Answered::Replayed { status, answer } => idempotency::replay(status, answer),
    })
}

/// The status and body of a write's answer: `201` when a record is new, else `200`; one
/// outcome for a single-record write, a list for a batch.
fn write_answer(batch: bool, outcomes: Vec<PutOutcome>) -> (StatusCode, WriteResponse) {
    let status = if outcomes.iter().any(|o| o.created) {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let body = match (batch, outcomes.first()) {
        (false, Some(one)) => WriteResponse::One(one.clone()),
        _ => WriteResponse::Batch(BatchOutcome { results: outcomes }),
    };
    (status, body)
}

/// The request scope of a single-record write by a credential bound to no principals that
/// names none for the request: it speaks for the record's own principals, as if they were in
/// the query string. Without this, writing Alice's private record again under its id (an
/// idempotent retry) would be refused as a conflict, since a request for nobody cannot see
/// Alice's record. It grants nothing new: an unbound credential may name any principals, and a
/// record of other principals under that id stays out of reach (`409`).
fn speak_for_the_record(
    auth: &TenantAuth,
    mut req: RequestScope,
    records: &[NewRecord],
    batch: bool,
) -> RequestScope {
    let unbound = auth.scope.grant().user_tokens.is_none();
    if let ([record], false, true, None) = (records, batch, unbound, &req.user_tokens)
        && let Some(tokens) = record.user_tokens.as_ref().filter(|t| !t.is_empty())
    {
        req.user_tokens = Some(TokenSelector::Tokens(tokens.clone()));
    }
    req
}

/// A record by id, with what `include` names: by default the whole record without its vector
/// (`include=record,vector` for the vector too). A foreign or invisible id is `404` like a
/// missing one.
#[utoipa::path(get, path = "/v1/memories/{id}", tag = "memories", operation_id = "get_memory",
    params(("id" = RecordId, Path, description = "record id"),
        ("include" = Option<Vec<Include>>, Query, style = Form, explode = false,
            description = INCLUDE_DOC)),
    responses((status = 200, description = "The record, with what `include` names", body = RecordBody)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    auth: TenantAuth,
    PathParam(id): PathParam,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let id = record_id(id)?;
    let q = QueryInput::parse(q.as_deref(), &[INCLUDE])?;
    let fields = RecordFields::from_query(q.get(INCLUDE))?;
    let req = auth.request_scope(ScopeParts::default(), q.scope)?;
    let scope = auth.scope;
    // One record with its vector can be half a megabyte of JSON (64 KiB of escaped content,
    // 4,096 dimensions): counted in the tenant's answer memory like a page's, so a tenant
    // asking for many on connections it reads slowly is refused before it holds them all.
    let shape = fields.shape();
    let hold = state.reserve_answer(&auth.admitted, 1, shape)?;
    let bytes = state
        .run_tenant_read(&auth.admitted, move |e| {
            let record = e.get_with(&scope, &req, &id, fields.vectors())?;
            let buf = serde_json::to_vec(&RecordBody::project(record, fields))
                .map_err(|e| ApiError::Internal(format!("serialising a record: {e}")))?;
            hold.into_body(buf, 1, shape)
        })
        .await?;
    Ok(([(CONTENT_TYPE, "application/json")], bytes).into_response())
}

/// The query parameter that names what a record answer carries.
pub(crate) const INCLUDE: &str = "include";

/// Fields to change, with the request's scope fields.
#[derive(ToSchema)]
#[allow(dead_code)] // The documented shape of a body the handler reads in two steps.
struct PatchBody {
    #[serde(flatten)]
    patch: RecordPatch,
    #[serde(flatten)]
    scope: RecordScopeFields,
}

/// Changes a record; `metadata` merges as a JSON merge patch. Answers the new version like
/// `GET` does: by default the whole record without its vector (`include=record,vector` for the
/// vector too). A credential bound to user tokens may change only a record whose tokens are a
/// non-empty subset of its own: a tenant-shared or co-owned record it can see is
/// `403 SCOPE_FORBIDDEN`, one it cannot see `404`.
#[utoipa::path(patch, path = "/v1/memories/{id}", tag = "memories", operation_id = "update_memory",
    params(("id" = RecordId, Path, description = "record id"),
        ("include" = Option<Vec<Include>>, Query, style = Form, explode = false,
            description = INCLUDE_DOC)),
    request_body = PatchBody,
    responses((status = 200, description = "The new version, with what `include` names", body = RecordBody)),
    security(("bearer" = [])))]
pub async fn patch(
    State(state): State<AppState>,
    auth: TenantAuth,
    PathParam(id): PathParam,
    RawQuery(q): RawQuery,
    body: JsonBody,
) -> Result<Json<RecordBody>, ApiError> {
    // `user_tokens`, `run_id` and `memory_scope` in the body are the record's new values.
    // Split first: a body naming another tenant is refused before the id and the query
    // string are judged, whatever the body's size (`JsonBody`).
    let body = body
        .scoped::<RecordPatch>(&state, RECORD_BODY_SCOPE_KEYS)
        .await?;
    let id = record_id(id)?;
    let q = QueryInput::parse(q.as_deref(), &[INCLUDE])?;
    let fields = RecordFields::from_query(q.get(INCLUDE))?;
    let req = auth.request_scope(body.scope, q.scope)?;
    let patch = body.rest?;
    let scope = auth.scope;
    let record = state
        .run_tenant(&auth.admitted, move |e| {
            Ok(e.patch(&scope, &req, &id, patch)?)
        })
        .await?;
    // The patch read the vector anyway, to write the record again.
    Ok(Json(RecordBody::project(record, fields)))
}

/// Deletes a record by id. A credential bound to user tokens may delete only a record whose
/// tokens are a non-empty subset of its own: a tenant-shared or co-owned record it can see is
/// `403 SCOPE_FORBIDDEN`, one it cannot see `404`.
#[utoipa::path(delete, path = "/v1/memories/{id}", tag = "memories", operation_id = "delete_memory",
    params(("id" = RecordId, Path, description = "record id")),
    responses((status = 200, description = "Deleted (`deleted` is 1)", body = Deleted)),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    auth: TenantAuth,
    PathParam(id): PathParam,
    RawQuery(q): RawQuery,
) -> Result<Json<Deleted>, ApiError> {
    let id = record_id(id)?;
    let q = QueryInput::parse(q.as_deref(), &[])?;
    let req = auth.request_scope(ScopeParts::default(), q.scope)?;
    let scope = auth.scope;
    state
        .run_tenant(&auth.admitted, move |e| Ok(e.delete(&scope, &req, &id)?))
        .await?;
    Ok(Json(Deleted { deleted: 1 }))
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(default, deny_unknown_fields)]
struct DeleteWhere {
    /// Which visible records to delete: required, and not `{}`, unless `all` is `true`.
    #[schema(default = json!(null))]
    filter: Option<Filter>,
    /// `true` deletes every visible record the request's scope reaches: the one way to mean
    /// it. A missing or empty `filter` without it is `400`, so a client that lost its filter
    /// deletes nothing.
    all: bool,
}

impl DeleteWhere {
    /// The filter to delete by, once the request said plainly what it means.
    fn filter(self) -> Result<Filter, ApiError> {
        let filter = self.filter.filter(|f| !f.matches_everything());
        match (filter, self.all) {
            (Some(f), false) => Ok(f),
            (None, true) => Ok(Filter::all()),
            (Some(_), true) => Err(bad(
                "all: true deletes every visible record in scope; leave filter out, or send \
                 the filter without all",
            )),
            (None, false) => Err(bad(
                "filter: a missing or empty filter would delete every visible record in scope; \
                 send a filter, or \"all\": true to mean every record",
            )),
        }
    }
}

/// A delete by filter, with the request's scope fields.
#[derive(ToSchema)]
#[allow(dead_code)] // The documented shape of a body the handler reads in two steps.
struct DeleteWhereBody {
    #[serde(flatten)]
    delete: DeleteWhere,
    #[serde(flatten)]
    scope: ScopeFields,
}

/// Deletes every visible record matching `filter`; a missing or empty filter is refused unless
/// `"all": true` says to delete every visible record in scope. For a credential bound to user
/// tokens, only those whose tokens are a non-empty subset of its own: tenant-shared and
/// co-owned records are left, and not counted in `deleted`. The matches are found on a
/// snapshot taken when the request starts (renewed as a count's is), then deleted in transactions of up to 1,000
/// records, each record checked again as it is deleted: records written (or written again)
/// after the request started are not deleted, nor is one changed meanwhile so that it no
/// longer matches. An error part-way, or a client that hangs up before the answer, leaves the
/// records of the transactions before it deleted; the error's answer does not say how many
/// those were, and the same request again deletes the rest (counting only those).
#[utoipa::path(post, path = "/v1/memories/delete", tag = "memories", operation_id = "delete_memories_where",
    request_body = DeleteWhereBody,
    responses((status = 200, description = "How many records were deleted", body = Deleted)),
    security(("bearer" = [])))]
pub async fn delete_where(
    State(state): State<AppState>,
    auth: TenantAuth,
    RawQuery(q): RawQuery,
    body: JsonBody,
) -> Result<Json<Deleted>, ApiError> {
    let body = body.scoped::<DeleteWhere>(&state, SCOPE_KEYS).await?;
    let req = auth.scope_of_parts(q.as_deref(), body.scope)?;
    let filter = body.rest?.filter()?;
    let recheck = auth.recheck();
    let scope = auth.scope;
    let n = run_in_steps(&state, &auth.admitted, recheck, move |e| {
        e.begin_delete_where(&scope, &req, filter)
    })
    .await?;
    Ok(Json(Deleted { deleted: n }))
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(default, deny_unknown_fields)]
struct ListBody {
    #[schema(default = json!(null))]
    filter: Option<Filter>,
    /// The previous page's `next`.
    after: Option<RecordId>,
    /// Page size, 1 to 1000; 100 when absent. A page of large records may hold fewer, within
    /// the tenant's answer memory; it still has its `next`.
    #[schema(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// What each record carries besides its `id`: `content`, `metadata`, `vector`, `record`
    /// (every field but the vector). Absent: `["record"]`, the whole record without its vector;
    /// `["record", "vector"]` for all of it; `[]` for ids only.
    #[schema(default = json!(["record"]))]
    include: Option<Vec<Include>>,
}

/// A listing, with the request's scope fields.
#[derive(ToSchema)]
#[allow(dead_code)] // The documented shape of a body the handler reads in two steps.
struct ListRequest {
    #[serde(flatten)]
    list: ListBody,
    #[serde(flatten)]
    scope: ScopeFields,
}

/// Lists visible records matching a filter, in id order, a page at a time (`after` = the
/// previous page's `next`, until it is `null`; a page of large records may hold fewer than
/// `limit`), each with what `include` names: by default the whole record without its vector. Query: scope fields, `filter` (JSON), `after`, `limit`, `include`. A
/// page is read from one snapshot (renewed, as a count's is, past 30 s or across a rewrite of
/// the data file); pages are not one snapshot with each other.
#[utoipa::path(get, path = "/v1/memories/list", tag = "memories", operation_id = "list_memories",
    params(
        ("filter" = Option<String>, Query, description = "a filter as JSON text"),
        ("after" = Option<RecordId>, Query, description = "the previous page's `next`"),
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "page size; 100 when absent. A page of large records may hold fewer, within the tenant's answer memory; it still has its `next`"),
        ("include" = Option<Vec<Include>>, Query, style = Form, explode = false,
            description = INCLUDE_DOC)),
    responses((status = 200, description = "One page of records", body = RecordPage)),
    security(("bearer" = [])))]
pub async fn list_get(
    State(state): State<AppState>,
    auth: TenantAuth,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let q = QueryInput::parse(q.as_deref(), &["filter", "after", "limit", INCLUDE])?;
    let fields = RecordFields::from_query(q.get(INCLUDE))?;
    let list = ListBody {
        filter: q
            .get("filter")
            .map(|f| {
                let v: Value = crate::unique_keys::from_slice(f.as_bytes())
                    .map_err(|e| bad(format!("filter: {e}")))?;
                Filter::parse(&v).map_err(bad)
            })
            .transpose()?,
        after: q
            .get("after")
            .map(|a| record_id(a.to_owned()))
            .transpose()?,
        limit: q
            .get("limit")
            .map(|l| l.parse().map_err(|_| bad("limit: expected a number")))
            .transpose()?,
        // Read above, as `fields`.
        include: None,
    };
    let req = auth.request_scope(ScopeParts::default(), q.scope)?;
    list_records(state, auth, req, list, fields).await
}

/// Like `GET /v1/memories/list`, with everything in the body (`include` as a JSON array).
#[utoipa::path(post, path = "/v1/memories/list", tag = "memories", operation_id = "list_memories_post",
    request_body = ListRequest,
    responses((status = 200, description = "One page of records", body = RecordPage)),
    security(("bearer" = [])))]
pub async fn list_post(
    State(state): State<AppState>,
    auth: TenantAuth,
    RawQuery(q): RawQuery,
    body: JsonBody,
) -> Result<Response, ApiError> {
    let body = body.scoped::<ListBody>(&state, SCOPE_KEYS).await?;
    let req = auth.scope_of_parts(q.as_deref(), body.scope)?;
    let list = body.rest?;
    let fields = RecordFields::named(list.include.as_deref());
    list_records(state, auth, req, list, fields).await
}

async fn list_records(
    state: AppState,
    auth: TenantAuth,
    req: strata_types::RequestScope,
    list: ListBody,
    fields: RecordFields,
) -> Result<Response, ApiError> {
    let page = Page {
        after: list.after,
        limit: list.limit.unwrap_or(DEFAULT_LIMIT),
    };
    // The answer's memory is reserved before its records are fetched, as an estimate: a
    // burst of requests for large pages is refused here, up front, once the tenant's unread
    // answers would pass its budget (`answer_budget`), not after the pages are in memory. The
    // fetch then keeps to the reservation: a page of records larger than the estimate stops
    // before the record that would pass it and comes back shorter, with its `next`.
    let shape = fields.shape();
    let hold = state.reserve_answer(&auth.admitted, page.limit.min(MAX_PAGE), shape)?;
    let recheck = auth.recheck();
    let scope = auth.scope;
    let vectors = fields.vectors();
    let (page, hold) = run_in_steps(&state, &auth.admitted, recheck, move |e| {
        Ok(MeteredPage {
            pending: e.begin_page(&scope, &req, list.filter, page, vectors)?,
            hold,
            fields,
            refused: None,
        })
    })
    .await??;
    // Serialised on a job of the tenant's, as a search answer is: a page of a thousand records
    // with their vectors is megabytes of JSON, and encoded on the async threads it delayed
    // every tenant's requests there (a black-box test saw another tenant's reads wait 0.3 s).
    // The body holds the reservation, moved to the buffer's real size, until it is freed.
    let bytes = state
        .run_tenant_read(&auth.admitted, move |_| {
            let records = page.records.len();
            let buf = serde_json::to_vec(&RecordPage::project(page, fields))
                .map_err(|e| ApiError::Internal(format!("serialising a page of records: {e}")))?;
            hold.into_body(buf, records, shape)
        })
        .await?;
    Ok(([(CONTENT_TYPE, "application/json")], bytes).into_response())
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(default, deny_unknown_fields)]
struct CountBody {
    #[schema(default = json!(null))]
    filter: Option<Filter>,
}

/// A count, with the request's scope fields.
#[derive(ToSchema)]
#[allow(dead_code)] // The documented shape of a body the handler reads in two steps.
struct CountRequest {
    #[serde(flatten)]
    count: CountBody,
    #[serde(flatten)]
    scope: ScopeFields,
}

/// Counts visible records matching a filter, on one snapshot taken when the request starts:
/// a record written while it counts is not counted, and one deleted meanwhile still is. A
/// count running past 30 s, or across a rewrite of the data file (a purge's vacuum), goes on
/// on a fresh snapshot: a record created or deleted meanwhile may then be counted or not.
#[utoipa::path(post, path = "/v1/memories/count", tag = "memories", operation_id = "count_memories",
    request_body = CountRequest,
    responses((status = 200, description = "How many visible records match", body = Counted)),
    security(("bearer" = [])))]
pub async fn count(
    State(state): State<AppState>,
    auth: TenantAuth,
    RawQuery(q): RawQuery,
    body: JsonBody,
) -> Result<Json<Counted>, ApiError> {
    let body = body.scoped::<CountBody>(&state, SCOPE_KEYS).await?;
    let req = auth.scope_of_parts(q.as_deref(), body.scope)?;
    let CountBody { filter } = body.rest?;
    let recheck = auth.recheck();
    let scope = auth.scope;
    let n = run_in_steps(&state, &auth.admitted, recheck, move |e| {
        e.begin_count(&scope, &req, filter)
    })
    .await?;
    Ok(Json(Counted { count: n }))
}

#[cfg(test)]
#[path = "memories/write_order_tests.rs"]
mod write_order_tests;
