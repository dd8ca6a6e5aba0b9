//! Reading requests: JSON bodies with a size limit, query strings, and the scope fields that
//! may arrive through the body, the query string or the `X-Strata-Domain` header.
//!
//! Scope fields are gathered from every source, checked for agreement, and parsed once into a
//! [`RequestScope`]. Whether that scope is allowed is the engine's decision, not ours.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use strata_auth::TenantScope;
use strata_types::{Domain, MemoryScope, RequestScope, RunId, TenantId, TokenSelector, UserMatch};

use crate::edge::{TenantAuth, check_tenant, check_tenant_id};
use crate::tenant_bodies::{BodyTenant, Counted, OverBudget, Reservation};

pub use crate::json_body::JsonObject;
use crate::{ApiError, AppState};

/// A body read whole (within `max_body_bytes`) but not yet parsed: a handler parses it with
/// [`parse_object_within`] inside its pool job, so the parsing of a flooding tenant's bodies is
/// charged to that tenant's fair share instead of delaying every tenant on the async threads.
pub struct JsonBytes(pub Bytes);

impl FromRequest<AppState> for JsonBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let max = state.config.max_body_bytes;
        // Refused before a byte of it is read (and the connection then closed): a client
        // waiting to send a body the server will refuse anyway should learn so at once.
        if declared_length(req.headers()).is_some_and(|len| len > max as u64) {
            return Err(ApiError::PayloadTooLarge(format!(
                "body: larger than {max} bytes"
            )));
        }
        // A tenant's bodies in memory stay within its budget (`tenant_bodies`): one of known
        // length is reserved before a byte is read. Operator routes carry no tenant.
        let tenant = req.extensions().get::<BodyTenant>().cloned();
        let known = axum::body::HttpBody::size_hint(req.body()).exact();
        // One of unknown length (chunked) is counted as it arrives (`tenant_bodies`).
        let mut over = None;
        let req = match (&tenant, known) {
            (Some(t), Some(len)) => {
                t.hold(reserve(state, t, len)?);
                req
            }
            (Some(t), None) => {
                t.hold(reserve(state, t, 0)?);
                req.map(|body| {
                    let counted = Counted::new(body, t.clone());
                    over = Some(std::sync::Arc::clone(&counted.over));
                    axum::body::Body::new(counted)
                })
            }
            (None, _) => req,
        };
        // `Bytes` honours the router's DefaultBodyLimit; only its rejection is re-dressed.
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            let refused = over.as_ref().and_then(|o| {
                o.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take()
            });
            if let Some(o) = refused {
                over_budget(o)
            } else if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge(format!(
                    "body: larger than {} bytes",
                    state.config.max_body_bytes
                ))
            } else {
                ApiError::BadRequest(format!("body: {}", e.body_text()))
            }
        })?;
        if let (Some(t), Some(_)) = (&tenant, known) {
            t.shrink_to(bytes.len() as u64);
        }
        crate::timing::mark(crate::timing::Stage::BodyRead);
        Ok(JsonBytes(bytes))
    }
}

/// Reserves `bytes` of the tenant's body budget, or refuses the request.
fn reserve(state: &AppState, t: &BodyTenant, bytes: u64) -> Result<Reservation, ApiError> {
    state.bodies.reserve(t.key, bytes).map_err(over_budget)
}

fn over_budget(o: OverBudget) -> ApiError {
    ApiError::ConcurrencyLimited(format!(
        "body: this tenant's request bodies in progress ({} bytes) and {} bytes more of this \
         one would pass its limit of {} bytes (server.max_body_bytes_per_tenant); retry when \
         its requests finish",
        o.held, o.wanted, o.max
    ))
}

/// Most keys of one object in a request body, at least. The largest objects a request may
/// carry are a record's metadata (by default at most 16,384 bytes as JSON, so fewer than 3,000
/// keys) and a filter (1,024 clauses); a body of one object of a million keys took seconds to
/// parse before its metadata was refused as too large.
const MIN_OBJECT_KEYS: usize = 16_384;

/// Bodies up to this size are parsed on the async thread that read them (see `JsonBody`).
pub(crate) const PARSE_INLINE_BYTES: usize = 64 * 1024;

/// Most keys of one object in a request body under `limits`: never fewer than a record's
/// largest metadata can hold (each key takes at least four bytes of it: `"k":0,`).
pub(crate) fn max_object_keys(limits: &strata_types::RecordLimits) -> usize {
    (limits.max_metadata_bytes / 4).max(MIN_OBJECT_KEYS)
}

/// Fewest JSON values a body may hold, whatever the limits.
const MIN_BODY_VALUES: usize = 1 << 20;

/// Values one record may hold besides its vector, metadata and user tokens: its other fields,
/// with room to spare.
const RECORD_OTHER_VALUES: usize = 64;

/// Most JSON values (every scalar, array and object; keys are not counted) in one request
/// body under `limits`: a full batch of records each carrying the largest vector, the largest
/// metadata (a value takes two bytes of it at least: `0,`) and every user token. No request
/// body has a use for more; a parse past it is refused as soon as its value too many is read.
pub(crate) fn max_body_values(limits: &strata_types::RecordLimits) -> usize {
    let per_record = (limits.max_dim as usize)
        .saturating_add(limits.max_metadata_bytes / 2)
        .saturating_add(limits.max_user_tokens)
        .saturating_add(RECORD_OTHER_VALUES);
    limits
        .max_batch
        .saturating_mul(per_record)
        .max(MIN_BODY_VALUES)
}

/// What the parse of one request body may build.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyBounds {
    /// Most keys of one object (`max_object_keys`).
    pub max_keys: usize,
    /// Most values in the whole body (`max_body_values`).
    pub max_values: usize,
    /// Most elements of one array (`max_array_items`).
    pub max_items: usize,
    /// Most bytes of memory the parse may build, as estimated (`unique_keys`).
    pub max_bytes: usize,
}

/// Fewest elements one array of a body may hold, whatever the limits.
const MIN_ARRAY_ITEMS: usize = 16_384;

/// Most elements of one array in a request body under `limits`: the longest any request has a
/// use for is a vector, an array in a record's metadata (a value takes two bytes of it at
/// least) or a batch of records; the lists of ids, filters' `$in` and the like are shorter.
/// A batch of 5.6 million empty records was built in full before its size was checked.
pub(crate) fn max_array_items(limits: &strata_types::RecordLimits) -> usize {
    (limits.max_dim as usize)
        .max(limits.max_metadata_bytes / 2)
        .max(limits.max_batch)
        .max(MIN_ARRAY_ITEMS)
}

/// The bounds of a request body's parse under `limits`.
pub(crate) fn body_bounds(limits: &strata_types::RecordLimits) -> BodyBounds {
    BodyBounds {
        max_keys: max_object_keys(limits),
        max_values: max_body_values(limits),
        max_items: max_array_items(limits),
        // What the values' bound (a full batch of the largest records) takes in value slots,
        // and a quarter more for what keys and small objects add to a body that uses it in
        // full: about 470 MiB under the default limits, where 16 MiB of small objects nested
        // within the bounds of arrays and keys built 2.4 GB.
        max_bytes: max_body_values(limits).saturating_mul(std::mem::size_of::<Value>() * 5 / 4),
    }
}

/// Parses the body of a request by a credential of `tenant` as a JSON object; an empty body
/// reads as `{}`. A body with a repeated key is refused, except that one in which any
/// `tenant_id` (any copy, at any depth) names another tenant is `TENANT_MISMATCH` (a security
/// event), as it would be if the body had no repeat. (Requests use [`parse_object_within`].)
#[cfg(test)]
pub(crate) fn parse_object_of(
    bytes: &[u8],
    tenant: Option<&TenantId>,
) -> Result<Map<String, Value>, ApiError> {
    let bounds = BodyBounds {
        max_keys: MIN_OBJECT_KEYS,
        max_values: usize::MAX,
        max_items: usize::MAX,
        max_bytes: usize::MAX,
    };
    parse_object_within(bytes, tenant, bounds)
}

/// `parse_object_of` (its rules above) with an object of more than `bounds.max_keys` keys
/// refused as soon as its key too many is read, and a body of more than `bounds.max_values`
/// values as soon as its value too many is.
pub(crate) fn parse_object_within(
    bytes: &[u8],
    tenant: Option<&TenantId>,
    bounds: BodyBounds,
) -> Result<Map<String, Value>, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    // Repeated keys are refused in the same pass (`unique_keys`), and so is an object of more
    // keys than any request has a use for, as soon as its first key too many is read.
    let parsed = crate::unique_keys::from_slice_within(
        bytes,
        bounds.max_keys,
        bounds.max_values,
        bounds.max_items,
        bounds.max_bytes,
    );
    match parsed {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::BadRequest("body: expected a JSON object".into())),
        Err(e) if crate::unique_keys::is_too_many_values(&e) => Err(ApiError::BadRequest(format!(
            "body: more than {} JSON values, the most one request body may hold (a full \
                 batch of records at the largest vector and metadata the engine.limits allow)",
            bounds.max_values
        ))),
        Err(e) if crate::unique_keys::is_too_large_a_parse(&e) => {
            Err(ApiError::BadRequest(format!("body: {e}")))
        }
        Err(e) => {
            // Whichever key is repeated: the refusal must not hide a tenant named anywhere.
            if let Some(tenant) = tenant
                && crate::unique_keys::is_repeated_key(&e)
            {
                for named in crate::unique_keys::every_string_of(bytes, "tenant_id") {
                    check_tenant_id(tenant, &named, "body field tenant_id")?;
                }
            }
            Err(ApiError::BadRequest(format!(
                "body: invalid JSON: {e}{}",
                escape_hint(&e.to_string())
            )))
        }
    }
}

/// What serde_json's message about a `\u` escape leaves unsaid: its usual cause is half of a
/// surrogate pair (a client that split a UTF-16 string, an emoji cut in two), which no JSON
/// string may hold alone.
fn escape_hint(message: &str) -> &'static str {
    if message.contains("hex escape") || message.contains("surrogate") {
        " (a \\uD800-\\uDBFF escape must be followed by a \\uDC00-\\uDFFF one: text is \
         UTF-8, and half of a surrogate pair is no character)"
    } else {
        ""
    }
}

/// Refuses a body whose `tenant_id` names a tenant other than the credential's `tenant`, with
/// the refusal the request's scope check gives it (`request_scope_of`, whose `check_tenant`
/// words it the same): a conversion calls it first, so a large body naming another tenant is
/// not converted (its records, its fingerprint) only to be refused. A `tenant_id` that is not a
/// string is left to that check too.
///
/// Checked where a record's fields sit too: in the body's `metadata`, and in each of its
/// `records` and their `metadata`. A `tenant_id` there is refused anyway (an unknown field, a
/// metadata key shadowing a scope field), but one naming another tenant is the attempt the
/// spec's first rule names, so it is a `403 TENANT_MISMATCH` and a security event wherever a
/// record could carry it. Deeper metadata is the client's own data (a customer's id is no
/// claim on a Strata tenant) and is not read.
pub(crate) fn check_body_tenant(
    body: &Map<String, Value>,
    tenant: &TenantId,
) -> Result<(), ApiError> {
    check_record_tenant(body, tenant, "tenant_id")?;
    if let Some(Value::Array(records)) = body.get("records") {
        for (i, record) in records.iter().enumerate() {
            if let Value::Object(record) = record {
                check_record_tenant(record, tenant, &format!("records[{i}].tenant_id"))?;
            }
        }
    }
    Ok(())
}

/// [`check_body_tenant`] of one object: its `tenant_id` and its `metadata`'s.
fn check_record_tenant(
    fields: &Map<String, Value>,
    tenant: &TenantId,
    source: &str,
) -> Result<(), ApiError> {
    if let Some(Value::String(named)) = fields.get("tenant_id") {
        check_tenant_id(tenant, named, source)?;
    }
    if let Some(Value::Object(metadata)) = fields.get("metadata")
        && let Some(Value::String(named)) = metadata.get("tenant_id")
    {
        check_tenant_id(tenant, named, "metadata.tenant_id")?;
    }
    Ok(())
}

/// The body length a request declares in `Content-Length`, if it declares one.
pub(crate) fn declared_length(headers: &axum::http::HeaderMap) -> Option<u64> {
    headers
        .get(axum::http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// One path parameter, with the API's error shape on failure.
pub struct PathParam(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for PathParam {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(s)| PathParam(s))
            .map_err(|e| ApiError::BadRequest(format!("path: {}", e.body_text())))
    }
}

/// Deserialises `map` into `T`; an error names the field at fault by its path in the body
/// (`expires_at`, `records[2].vector`, `limits.max_vectors`).
pub(crate) fn from_map<T: DeserializeOwned>(map: Map<String, Value>) -> Result<T, ApiError> {
    // One pass over the owned body, its strings moved rather than copied (a write's content
    // may be megabytes); tracking the path costs a few words per nesting level.
    serde_path_to_error::deserialize(Value::Object(map))
        .map_err(|e| ApiError::BadRequest(naming_the_field("", &e)))
}

/// Deserialises `value`, found at `at` in the body (`""` for the body itself); an error names
/// the field at fault by its path from the body's root. For small parts of a body: it reads
/// from a borrow, copying strings.
pub(crate) fn from_value_at<T: DeserializeOwned>(at: &str, value: &Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value)
        .map_err(|e| ApiError::BadRequest(naming_the_field(at, &e)))
}

/// The error's message prefixed with the path of its field, below `at`.
///
/// - An unknown field's path ends in the field itself, which the message names already: that
///   last segment is left out (only when it is that key; serde buffers some values first, and
///   their paths stop at the container).
/// - A validating type names a field of its own (`tenant_id: character '/' is not in …`,
///   whatever field it was read from); that name gives way to the path. serde's own messages
///   never start with a bare `name: `.
/// - A message about the body itself (`unknown field` at the root) stays as it is.
fn naming_the_field(at: &str, e: &serde_path_to_error::Error<serde_json::Error>) -> String {
    use serde_path_to_error::Segment;
    let message = e.inner().to_string();
    let mut segments: Vec<&Segment> = e.path().iter().collect();
    if let Some(Segment::Map { key }) = segments.last()
        && message.starts_with(&format!("unknown field `{key}`"))
    {
        segments.pop();
    }
    let mut path = at.to_owned();
    for segment in segments {
        match segment {
            Segment::Seq { index } => path.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
            }
            Segment::Unknown => {}
        }
    }
    let message = plain_expectation(&message);
    if path.is_empty() {
        return message;
    }
    let own = message
        .split_once(": ")
        .filter(|(head, _)| {
            !head.is_empty() && head.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        })
        .map_or(message.as_str(), |(_, rest)| rest);
    format!("{path}: {own}")
}

/// serde's message with the Rust type it expected (`expected usize`, `expected struct
/// Confidence`) said in JSON's words, and a negative count said to be one: a client sees the
/// wire format, not this server's types.
fn plain_expectation(message: &str) -> String {
    // Only serde's own form (`invalid type: …, expected …`): other messages may end in what
    // the caller sent (an unknown filter operator, say), which is not rewritten.
    let serdes = message.starts_with("invalid type: ") || message.starts_with("invalid value: ");
    let Some((head, expected)) = message.rsplit_once(", expected ").filter(|_| serdes) else {
        return message.to_owned();
    };
    let unsigned = |max: &str| format!("a whole number from 0 to {max}");
    let plain = match expected {
        "usize" | "u64" => "a whole number of 0 or more".to_owned(),
        "u32" => unsigned("4294967295"),
        "u16" => unsigned("65535"),
        "u8" => unsigned("255"),
        "isize" | "i64" => "a whole number".to_owned(),
        "i32" => "a whole number from -2147483648 to 2147483647".to_owned(),
        "f32" | "f64" => "a number".to_owned(),
        "a sequence" => "an array".to_owned(),
        "a map" => "an object".to_owned(),
        other if other.starts_with("struct ") => "an object".to_owned(),
        _ => return message.to_owned(),
    };
    // Said without the type's upper bound, which is rarely the field's own (`depth` takes 0
    // to 10 in a u32): the field's range check says that once the number is not negative.
    if (plain.starts_with("a whole number from 0") || plain.ends_with("0 or more"))
        && let Some(n) = head.strip_prefix("invalid value: integer `-")
    {
        return format!(
            "-{} is negative; expected a whole number of 0 or more",
            n.trim_end_matches('`')
        );
    }
    format!("{head}, expected {plain}")
}

/// Every scope field a request may carry, plus `tenant_id`, which is only ever checked.
pub(crate) const SCOPE_KEYS: &[&str] = &[
    "tenant_id",
    "memory_domain",
    "user_tokens",
    "user_match",
    "run_id",
    "memory_scope",
];

/// Scope fields as they arrived, not yet parsed.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct ScopeParts {
    /// Every tenant the request names, from every source: each is checked against the
    /// credential before anything else is looked at, so a mismatch is never hidden behind a
    /// disagreement or a repeat.
    tenant_id: Vec<String>,
    memory_domain: Option<String>,
    user_tokens: Option<Vec<String>>,
    user_match: Option<String>,
    run_id: Option<String>,
    memory_scope: Option<String>,
}

fn string_field(field: &str, v: Value) -> Result<String, ApiError> {
    match v {
        Value::String(s) => Ok(s),
        _ => Err(ApiError::BadRequest(format!("{field}: expected a string"))),
    }
}

impl ScopeParts {
    /// Removes the scope fields named in `keys` from a body.
    pub fn take_from_body(map: &mut Map<String, Value>, keys: &[&str]) -> Result<Self, ApiError> {
        let mut parts = ScopeParts::default();
        for key in keys {
            let Some(v) = map.remove(*key) else { continue };
            if v.is_null() {
                continue;
            }
            if *key == "user_tokens" {
                let list = match v {
                    Value::Array(items) => items
                        .into_iter()
                        .map(|i| string_field("user_tokens", i))
                        .collect::<Result<Vec<_>, _>>()?,
                    _ => {
                        return Err(ApiError::BadRequest(
                            "user_tokens: expected an array of strings".into(),
                        ));
                    }
                };
                parts.user_tokens = Some(list);
            } else {
                parts.set(key, string_field(key, v)?)?;
            }
        }
        Ok(parts)
    }

    fn set(&mut self, key: &str, value: String) -> Result<(), ApiError> {
        let slot = match key {
            "tenant_id" => {
                self.tenant_id.push(value);
                return Ok(());
            }
            "memory_domain" => &mut self.memory_domain,
            "user_match" => &mut self.user_match,
            "run_id" => &mut self.run_id,
            "memory_scope" => &mut self.memory_scope,
            _ => return Err(ApiError::BadRequest(format!("unknown parameter {key}"))),
        };
        *slot = Some(value);
        Ok(())
    }

    /// Joins the scope fields of two sources. A field given by both must agree: a request that
    /// says two different things is refused rather than guessed at.
    fn merge(self, other: ScopeParts, what: &str) -> Result<ScopeParts, ApiError> {
        fn pick<T: PartialEq>(
            a: Option<T>,
            b: Option<T>,
            field: &str,
            what: &str,
        ) -> Result<Option<T>, ApiError> {
            match (a, b) {
                (Some(a), Some(b)) if a != b => Err(ApiError::BadRequest(format!(
                    "{field}: {what} give different values"
                ))),
                (a, b) => Ok(a.or(b)),
            }
        }
        let mut tenant_id = self.tenant_id;
        tenant_id.extend(other.tenant_id);
        Ok(ScopeParts {
            tenant_id,
            memory_domain: pick(
                self.memory_domain,
                other.memory_domain,
                "memory_domain",
                what,
            )?,
            user_tokens: pick(self.user_tokens, other.user_tokens, "user_tokens", what)?,
            user_match: pick(self.user_match, other.user_match, "user_match", what)?,
            run_id: pick(self.run_id, other.run_id, "run_id", what)?,
            memory_scope: pick(self.memory_scope, other.memory_scope, "memory_scope", what)?,
        })
    }
}

/// A query string: its scope fields and the route's own parameters.
#[derive(Debug, Default)]
pub(crate) struct QueryInput {
    pub scope: ScopeParts,
    pub rest: Vec<(String, String)>,
}

impl QueryInput {
    /// Parses a raw query string. `user_tokens` may repeat or be comma-separated (an empty
    /// value names none, an empty token among others is refused); parameters
    /// other than scope fields must be in `allowed`.
    pub fn parse(raw: Option<&str>, allowed: &[&str]) -> Result<Self, ApiError> {
        let uri = format!("/?{}", raw.unwrap_or(""));
        let uri: axum::http::Uri = uri
            .parse()
            .map_err(|_| ApiError::BadRequest("query string: malformed".into()))?;
        let axum::extract::Query(pairs) =
            axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&uri)
                .map_err(|e| ApiError::BadRequest(format!("query string: {}", e.body_text())))?;
        let mut out = QueryInput::default();
        let mut seen_scope: Vec<String> = Vec::new();
        for (k, v) in pairs {
            if k == "user_tokens" {
                let list = out.scope.user_tokens.get_or_insert_with(Vec::new);
                // An empty value names no principals; an empty token between commas is a
                // mistake, refused as an empty token in a body's list is.
                if !v.is_empty() {
                    if v.split(',').any(str::is_empty) {
                        return Err(ApiError::BadRequest(
                            "user_tokens: an empty token in the comma-separated list (name \
                             each token, or send user_tokens= alone for none)"
                                .into(),
                        ));
                    }
                    list.extend(v.split(',').map(str::to_owned));
                }
            } else if k == "tenant_id" {
                // Kept with its repeats: they are checked against the credential first.
                out.scope.set(&k, v)?;
            } else if SCOPE_KEYS.contains(&k.as_str()) {
                // Repeated, even with the same value, like the route's own parameters.
                if seen_scope.contains(&k) {
                    return Err(ApiError::BadRequest(format!("{k}: given twice")));
                }
                out.scope.set(&k, v)?;
                seen_scope.push(k);
            } else if allowed.contains(&k.as_str()) {
                if out.rest.iter().any(|(seen, _)| *seen == k) {
                    return Err(ApiError::BadRequest(format!("{k}: given twice")));
                }
                out.rest.push((k, v));
            } else {
                return Err(ApiError::BadRequest(format!("unknown query parameter {k}")));
            }
        }
        Ok(out)
    }

    /// The value of a route parameter (each is given at most once).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.rest
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn bad(e: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest(e.to_string())
}

impl TenantAuth {
    /// The request scope of a route whose JSON body carries scope fields next to its own
    /// (`SCOPE_KEYS`), taken out of the body where it was converted (`JsonBody::scoped`):
    /// joins them with the query string's.
    pub(crate) fn scope_of_parts(
        &self,
        raw_query: Option<&str>,
        body: ScopeParts,
    ) -> Result<RequestScope, ApiError> {
        let q = QueryInput::parse(raw_query, &[])?;
        self.request_scope(body, q.scope)
    }

    /// Joins the scope fields of the body, the query string and the domain header, checks any
    /// named tenant against the credential, and parses the result.
    pub(crate) fn request_scope(
        &self,
        body: ScopeParts,
        query: ScopeParts,
    ) -> Result<RequestScope, ApiError> {
        request_scope_of(
            &self.scope,
            self.header_domain.as_ref(),
            self.max_user_tokens,
            body,
            query,
        )
    }
}

/// What a request's scope is read from besides its body, for a handler that has moved the
/// credential's scope and domain header into its pool job (to parse the body there).
pub(crate) struct ScopeSources<'a> {
    pub header_domain: Option<&'a Domain>,
    pub raw_query: Option<&'a str>,
    /// Most user tokens the request may name (`engine.limits.max_user_tokens`).
    pub max_user_tokens: usize,
}

/// [`TenantAuth::scope_of_parts`] for a handler that has moved the credential's scope and
/// domain header into its pool job (to parse the body there).
pub(crate) fn scope_of_body_for(
    scope: &TenantScope,
    sources: ScopeSources<'_>,
    body: &mut Map<String, Value>,
) -> Result<RequestScope, ApiError> {
    // A body naming another tenant is refused before the query string and the body's scope
    // fields are judged, as on every body route (`JsonBody`).
    check_body_tenant(body, scope.tenant())?;
    let q = QueryInput::parse(sources.raw_query, &[])?;
    let parts = ScopeParts::take_from_body(body, SCOPE_KEYS)?;
    request_scope_of(
        scope,
        sources.header_domain,
        sources.max_user_tokens,
        parts,
        q.scope,
    )
}

/// Joins the scope fields of the body, the query string and the domain header, checks any named
/// tenant against the credential, and parses the result.
fn request_scope_of(
    scope: &TenantScope,
    header_domain: Option<&Domain>,
    max_user_tokens: usize,
    body: ScopeParts,
    query: ScopeParts,
) -> Result<RequestScope, ApiError> {
    // Every tenant named anywhere is checked against the credential before the sources are
    // compared, so a request naming another tenant is a security event (403 and an audit row)
    // even when it also disagrees with itself.
    for t in body.tenant_id.iter().chain(&query.tenant_id) {
        check_tenant(scope, t, "tenant_id")?;
    }
    if query.tenant_id.len() > 1 {
        return Err(ApiError::BadRequest("tenant_id: given twice".into()));
    }
    let mut parts = body.merge(query, "the body and the query string")?;
    if let Some(h) = header_domain {
        let from_header = ScopeParts {
            memory_domain: Some(h.as_str().to_owned()),
            ..ScopeParts::default()
        };
        parts = parts.merge(from_header, "X-Strata-Domain and the request")?;
    }
    // The records' limit holds for requests too: every token named is matched against every
    // candidate record, so an unbounded list is unbounded work per record (and memory).
    if let Some(n) = parts.user_tokens.as_ref().map(Vec::len)
        && n > max_user_tokens
    {
        return Err(bad(format!(
            "user_tokens: {n} tokens, at most {max_user_tokens} (engine.limits.max_user_tokens)"
        )));
    }
    Ok(RequestScope {
        user_tokens: parts
            .user_tokens
            .map(|t| TokenSelector::parse(&t))
            .transpose()
            .map_err(bad)?,
        user_match: match parts.user_match.as_deref() {
            None | Some("any") => UserMatch::Any,
            Some("all") => UserMatch::All,
            Some(_) => return Err(bad("user_match: expected \"any\" or \"all\"")),
        },
        memory_domain: parts
            .memory_domain
            .map(Domain::parse)
            .transpose()
            .map_err(bad)?,
        run_id: parts.run_id.map(RunId::parse).transpose().map_err(bad)?,
        memory_scope: parts
            .memory_scope
            .map(MemoryScope::parse)
            .transpose()
            .map_err(bad)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn body_scope_fields_are_taken_out() {
        let mut map = json!({"memory_domain": "d", "user_tokens": ["u:a"], "content": "x"})
            .as_object()
            .cloned()
            .unwrap();
        let parts = ScopeParts::take_from_body(&mut map, SCOPE_KEYS).unwrap();
        assert_eq!(parts.memory_domain.as_deref(), Some("d"));
        assert_eq!(parts.user_tokens, Some(vec!["u:a".to_owned()]));
        assert_eq!(map.len(), 1);
        let mut bad = json!({"user_tokens": "u:a"}).as_object().cloned().unwrap();
        assert!(ScopeParts::take_from_body(&mut bad, SCOPE_KEYS).is_err());
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)] // read only through `Debug` in the failure messages
    struct Item {
        expires_at: Option<i64>,
        id: Option<strata_types::TenantId>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        records: Vec<Item>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
    #[allow(dead_code)]
    enum Fusion {
        Rrf { k: Option<u32> },
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Tagged {
        fusion: Fusion,
    }

    fn message(r: Result<impl std::fmt::Debug, ApiError>) -> String {
        match r {
            Err(ApiError::BadRequest(m)) => m,
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn body_errors_name_the_field_by_its_path() {
        let body = |v: Value| v.as_object().cloned().unwrap();
        let m = message(from_map::<Body>(body(
            json!({"records": [{"expires_at": 1}, {"expires_at": "soon"}]}),
        )));
        assert!(m.starts_with("records[1].expires_at: invalid type"), "{m}");
        // A validating type's own message names its field once, not twice.
        let m = message(from_map::<Body>(body(json!({"records": [{"id": "a/b"}]}))));
        assert!(m.starts_with("records[0].id: character '/'"), "{m}");
        // An unknown field is named once, under its parent.
        let m = message(from_map::<Body>(body(json!({"record": []}))));
        assert!(m.starts_with("unknown field `record`"), "{m}");
        let m = message(from_map::<Body>(body(json!({"records": [{"ttl": 5}]}))));
        assert!(m.starts_with("records[0]: unknown field `ttl`"), "{m}");
        // A key with a dot in it is one segment, not two.
        let m = message(from_map::<Body>(body(json!({"records": [{"a.b": 5}]}))));
        assert!(m.starts_with("records[0]: unknown field `a.b`"), "{m}");
        // A value serde buffers first (an internally tagged enum) keeps its container's path.
        let m = message(from_map::<Tagged>(body(
            json!({"fusion": {"method": "rrf", "kk": 1}}),
        )));
        assert!(m.starts_with("fusion: unknown field `kk`"), "{m}");
        // A value found under a field of the body is named from the body's root.
        let m = message(from_value_at::<Item>("limits", &json!({"expires_at": 1.5})));
        assert!(m.starts_with("limits.expires_at: "), "{m}");
        let m = message(from_value_at::<i64>("weight", &json!("x")));
        assert!(m.starts_with("weight: "), "{m}");
    }

    #[test]
    fn half_a_surrogate_pair_is_named_as_such() {
        for bad in [r#"{"content":"bad \ud800 x"}"#, r#"{"content":"\udc00"}"#] {
            let m = message(parse_object_of(bad.as_bytes(), None));
            assert!(m.starts_with("body: invalid JSON: "), "{m}");
            assert!(m.contains("half of a surrogate pair"), "{bad}: {m}");
        }
        // A whole pair is a character.
        assert!(parse_object_of(r#"{"content":"\ud83d\ude00"}"#.as_bytes(), None).is_ok());
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Counted {
        k: usize,
        weight: Option<f32>,
        inner: Option<Item>,
        list: Option<Vec<u8>>,
    }

    #[test]
    fn body_errors_say_what_json_was_expected_not_the_servers_types() {
        let body = |v: Value| v.as_object().cloned().unwrap();
        let m = message(from_map::<Counted>(body(json!({"k": -1}))));
        assert_eq!(m, "k: -1 is negative; expected a whole number of 0 or more");
        let m = message(from_map::<Counted>(body(json!({"k": 5.5}))));
        assert_eq!(
            m,
            "k: invalid type: floating point `5.5`, expected a whole number of 0 or more"
        );
        let m = message(from_map::<Counted>(body(json!({"k": 1, "weight": "x"}))));
        assert_eq!(m, "weight: invalid type: string \"x\", expected a number");
        let m = message(from_map::<Counted>(body(json!({"k": 1, "inner": 2}))));
        assert_eq!(m, "inner: invalid type: integer `2`, expected an object");
        // A negative number in a field of a narrower type: not the type's upper bound, which
        // is rarely the field's own.
        let m = message(from_map::<Counted>(body(json!({"k": 1, "list": [-3]}))));
        assert_eq!(
            m,
            "list[0]: -3 is negative; expected a whole number of 0 or more"
        );
        let m = message(from_map::<Counted>(body(json!({"k": 1, "list": {}}))));
        assert_eq!(m, "list: invalid type: map, expected an array");
        let m = message(from_map::<Counted>(body(json!({"k": 1, "list": [300]}))));
        assert_eq!(
            m,
            "list[0]: invalid value: integer `300`, expected a whole number from 0 to 255"
        );
        // Messages naming no Rust type stay as they are.
        assert_eq!(
            plain_expectation("invalid type: null, expected a string"),
            "invalid type: null, expected a string"
        );
        // Nor does a message of another form, which may end in the caller's own text.
        assert_eq!(
            plain_expectation("filter: unknown operator $x, expected u8"),
            "filter: unknown operator $x, expected u8"
        );
    }

    #[test]
    fn query_strings_parse_with_repeats_and_commas() {
        let q = QueryInput::parse(
            Some("user_tokens=u:a,u:b&user_tokens=u:c&limit=5&memory_domain=d"),
            &["limit"],
        )
        .unwrap();
        assert_eq!(
            q.scope.user_tokens,
            Some(vec!["u:a".into(), "u:b".into(), "u:c".into()])
        );
        assert_eq!(q.get("limit"), Some("5"));
        // An empty value names none; an empty token among others is refused, as in a body.
        let q = QueryInput::parse(Some("user_tokens="), &[]).unwrap();
        assert_eq!(q.scope.user_tokens, Some(vec![]));
        for bad in ["u:a,,u:b", "u:a,", ",u:a", ","] {
            let m =
                message(QueryInput::parse(Some(&format!("user_tokens={bad}")), &[]).map(|_| ()));
            assert!(m.starts_with("user_tokens: an empty token"), "{bad}: {m}");
        }
        assert!(QueryInput::parse(Some("nope=1"), &[]).is_err());
        assert!(QueryInput::parse(Some("run_id=a&run_id=b"), &[]).is_err());
        // Even with the same value, like a route's own parameters.
        let m =
            message(QueryInput::parse(Some("memory_domain=a&memory_domain=a"), &[]).map(|_| ()));
        assert_eq!(m, "memory_domain: given twice");
    }

    fn scope_of(tenant: &str) -> TenantScope {
        use strata_auth::{Grant, Permissions};
        let meta = strata_store::TenantMeta {
            id: strata_types::TenantId::parse(tenant).unwrap(),
            key: strata_store::TenantKey::for_tests(1),
            created_at: 0,
            profile: Map::new(),
        };
        let grant = Grant {
            permissions: Permissions::read_write(),
            user_tokens: None,
            domains: None,
        };
        TenantScope::for_tests(&meta, grant)
    }

    fn code(r: Result<RequestScope, ApiError>) -> &'static str {
        match r {
            Ok(_) => "ok",
            Err(e) => e.status_and_code().1,
        }
    }

    #[test]
    fn a_tenant_named_where_a_record_sits_is_a_mismatch_and_deeper_metadata_is_not_read() {
        let tenant = TenantId::parse("ta").unwrap();
        let check =
            |body: serde_json::Value| match check_body_tenant(body.as_object().unwrap(), &tenant) {
                Ok(()) => "ok",
                Err(e) => e.status_and_code().1,
            };
        for body in [
            json!({"tenant_id": "tb"}),
            json!({"content": "x", "metadata": {"tenant_id": "tb"}}),
            json!({"records": [{"content": "x"}, {"content": "y", "tenant_id": "tb"}]}),
            json!({"records": [{"content": "x", "metadata": {"tenant_id": "tb"}}]}),
        ] {
            assert_eq!(check(body.clone()), "TENANT_MISMATCH", "{body}");
        }
        for body in [
            json!({"tenant_id": "ta", "records": [{"tenant_id": "ta"}]}),
            json!({"metadata": {"customer": {"tenant_id": "tb"}}}),
            json!({"records": [{"metadata": {"orders": [{"tenant_id": "tb"}]}}]}),
            json!({"records": "not a list", "metadata": 3}),
        ] {
            assert_eq!(check(body.clone()), "ok", "{body}");
        }
    }

    #[test]
    fn a_request_names_at_most_max_user_tokens() {
        let scope = scope_of("ta");
        let run = |n: usize, query: &str| {
            let tokens: Vec<String> = (0..n).map(|i| format!("u:{i}")).collect();
            let body = match n {
                0 => "{}".to_owned(),
                _ => json!({ "user_tokens": tokens }).to_string(),
            };
            let mut map = parse_object_of(body.as_bytes(), None).unwrap();
            let sources = ScopeSources {
                header_domain: None,
                raw_query: Some(query),
                max_user_tokens: 3,
            };
            scope_of_body_for(&scope, sources, &mut map)
        };
        assert_eq!(code(run(3, "")), "ok");
        for (n, query) in [(4, ""), (200_000, ""), (0, "user_tokens=u:a,u:b,u:c,u:d")] {
            let m = message(run(n, query));
            assert!(m.starts_with("user_tokens: 4 tokens") || n > 4, "{m}");
            assert!(m.contains("at most 3"), "{m}");
        }
    }

    #[test]
    fn every_named_tenant_is_checked_before_the_sources_are_compared() {
        let scope = scope_of("ta");
        let run = |body: &str, query: &str| {
            let mut map = parse_object_of(body.as_bytes(), None).unwrap();
            let sources = ScopeSources {
                header_domain: None,
                raw_query: Some(query),
                max_user_tokens: 32,
            };
            scope_of_body_for(&scope, sources, &mut map)
        };
        // A foreign tenant in either source, even with the sources also disagreeing.
        assert_eq!(
            code(run(r#"{"tenant_id":"tb"}"#, "tenant_id=tv")),
            "TENANT_MISMATCH"
        );
        assert_eq!(
            code(run(r#"{"tenant_id":"ta"}"#, "tenant_id=tv")),
            "TENANT_MISMATCH"
        );
        assert_eq!(
            code(run(r#"{"tenant_id":"tb"}"#, "tenant_id=ta")),
            "TENANT_MISMATCH"
        );
        assert_eq!(
            code(run(
                r#"{"tenant_id":"tb","memory_domain":"a"}"#,
                "memory_domain=b"
            )),
            "TENANT_MISMATCH"
        );
        // In any copy of a repeated query parameter, first or last.
        assert_eq!(
            code(run("{}", "tenant_id=ta&tenant_id=tb")),
            "TENANT_MISMATCH"
        );
        assert_eq!(
            code(run("{}", "tenant_id=tb&tenant_id=ta")),
            "TENANT_MISMATCH"
        );
        // The credential's own tenant: a repeat is still a request saying it twice.
        assert_eq!(code(run("{}", "tenant_id=ta&tenant_id=ta")), "BAD_REQUEST");
        assert_eq!(code(run(r#"{"tenant_id":"ta"}"#, "tenant_id=ta")), "ok");
        assert_eq!(code(run("{}", "")), "ok");
    }

    #[test]
    fn a_body_with_a_repeated_key_is_refused() {
        let m = message(parse_object_of(br#"{"a":1,"b":{"c":1,"c":2}}"#, None));
        assert!(
            m.starts_with("body: invalid JSON: duplicate key `c`"),
            "{m}"
        );
        assert!(parse_object_of(br#"{"a":1,"b":{"c":1},"c":2}"#, None).is_ok());
    }

    #[test]
    fn a_body_object_of_too_many_keys_is_refused() {
        let object = |n: usize| {
            let keys: Vec<String> = (0..n).map(|i| format!("\"k{i}\":1")).collect();
            format!("{{\"metadata\":{{{}}}}}", keys.join(","))
        };
        let ten_keys = BodyBounds {
            max_keys: 10,
            max_values: usize::MAX,
            max_items: usize::MAX,
            max_bytes: usize::MAX,
        };
        assert!(parse_object_within(object(10).as_bytes(), None, ten_keys).is_ok());
        let m = message(parse_object_within(object(11).as_bytes(), None, ten_keys));
        assert!(
            m.starts_with("body: invalid JSON: an object has more than 10 keys"),
            "{m}"
        );
        // The bound follows the metadata limit, and is never below its floor.
        let mut limits = strata_types::RecordLimits::default();
        assert_eq!(max_object_keys(&limits), MIN_OBJECT_KEYS);
        limits.max_metadata_bytes = 1 << 20;
        assert_eq!(max_object_keys(&limits), 1 << 18);
    }

    #[test]
    fn a_body_of_too_many_values_is_refused_naming_the_bound() {
        let bounds = BodyBounds {
            max_keys: 100,
            max_values: 4,
            max_items: usize::MAX,
            max_bytes: usize::MAX,
        };
        // The object, the array and two numbers: four values.
        assert!(parse_object_within(br#"{"a":[1,2]}"#, None, bounds).is_ok());
        let m = message(parse_object_within(br#"{"a":[1,2,3]}"#, None, bounds));
        assert!(
            m.starts_with("body: more than 4 JSON values, the most one request body may hold"),
            "{m}"
        );
        // The default bound holds a full batch of the largest records, and is never below
        // its floor.
        let mut limits = strata_types::RecordLimits::default();
        assert_eq!(max_body_values(&limits), 1000 * (4096 + 8192 + 32 + 64));
        limits.max_batch = 1;
        assert_eq!(max_body_values(&limits), MIN_BODY_VALUES);
    }

    /// An array longer than any request has a use for, and a body whose parse would take too
    /// much memory (small objects take far more per byte of text than values), are refused
    /// as soon as the parse passes the bound, not after building the whole body.
    #[test]
    fn a_body_too_large_to_parse_is_refused_before_it_is_built() {
        let limits = strata_types::RecordLimits::default();
        let bounds = body_bounds(&limits);
        assert_eq!(bounds.max_items, 16_384);
        let empties = |n: usize| format!("{{\"records\":[{}]}}", vec!["{}"; n].join(","));
        assert!(parse_object_within(empties(16_384).as_bytes(), None, bounds).is_ok());
        let m = message(parse_object_within(
            empties(16_385).as_bytes(),
            None,
            bounds,
        ));
        assert!(
            m.starts_with("body: an array has more than 16384 elements"),
            "{m}"
        );

        let small = BodyBounds {
            max_bytes: 64 * 1024,
            ..bounds
        };
        let objects = |n: usize| {
            let one = r#"{"metadata":{"a":0}}"#;
            format!("{{\"records\":[{}]}}", vec![one; n].join(","))
        };
        assert!(parse_object_within(objects(10).as_bytes(), None, small).is_ok());
        let m = message(parse_object_within(objects(100).as_bytes(), None, small));
        assert!(m.starts_with("body: the body would take more than"), "{m}");
        // A full batch of the largest vectors parses under the default bounds.
        let vector = format!("[{}]", vec!["0.5"; limits.max_dim as usize].join(","));
        let full = format!(
            "{{\"records\":[{}]}}",
            vec![format!("{{\"vector\":{vector}}}"); limits.max_batch].join(",")
        );
        assert!(parse_object_within(full.as_bytes(), None, bounds).is_ok());
    }

    #[test]
    fn a_route_parameter_given_twice_is_refused() {
        let m = message(QueryInput::parse(Some("limit=2&limit=3"), &["limit"]).map(|_| ()));
        assert_eq!(m, "limit: given twice");
        let q = QueryInput::parse(Some("limit=2&after=x"), &["limit", "after"]).unwrap();
        assert_eq!((q.get("limit"), q.get("after")), (Some("2"), Some("x")));
    }

    fn single(key: &str, value: &str) -> Result<ScopeParts, ApiError> {
        let mut p = ScopeParts::default();
        p.set(key, value.to_owned())?;
        Ok(p)
    }

    #[test]
    fn disagreeing_sources_are_refused() {
        let a = single("memory_domain", "a").unwrap();
        let b = single("memory_domain", "b").unwrap();
        assert!(a.clone().merge(b, "x").is_err());
        assert!(a.clone().merge(a.clone(), "x").is_ok());
    }
}
