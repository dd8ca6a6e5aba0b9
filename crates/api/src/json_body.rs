//! A tenant's JSON body, read whole and converted to its handler's typed values where it is
//! parsed: a small body on the async thread that read it, a large one in one job in the
//! sender's fair share of the pool, its parse and its conversion together.
//!
//! Parsing a large body off the async threads is not enough: turning its map into typed values
//! (a batch's records with their metadata, a filter, the fingerprint of a keyed write) walks the
//! whole body again, and a body of 80 objects of 16k keys each cost seconds of it. With two
//! async threads, every tenant's requests stalled meanwhile.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use strata_types::TenantId;

use crate::admission::Share;
use crate::input::{
    JsonBytes, PARSE_INLINE_BYTES, ScopeParts, body_bounds, check_body_tenant, from_map,
    parse_object_within,
};
use crate::tenant_bodies::BodyTenant;
use crate::{ApiError, AppState};

/// A JSON object body, not yet converted. An empty body reads as `{}`. Its cheap refusals
/// (credential, admission, size) come first, from the headers; [`JsonBody::convert`] then
/// parses and converts it.
///
/// Whatever its size, a body meets its refusals in one order (a small body is parsed where it
/// was read, a large one in a pool job, and neither may change which refusal a client gets, nor
/// whether it is recorded as a security event):
/// 1. its parse: not JSON, or not an object, is `400`; a repeated key is `400` too, unless any
///    `tenant_id` in the body names another tenant, which is `403 TENANT_MISMATCH`;
/// 2. a body's `tenant_id` naming another tenant is `403 TENANT_MISMATCH`, whatever else is
///    wrong with the request (its other fields and their values, the id in its path, its query
///    string, its `Idempotency-Key`): a security event is never hidden behind a malformed
///    request;
/// 3. the query string (`400` when malformed, `403 TENANT_MISMATCH` when its `tenant_id`
///    names another tenant), the scope fields' values and agreement, then the route's own
///    headers (`Idempotency-Key`) and fields, each `400`;
/// 4. the engine's checks, among them a scope outside the credential's binding (`403
///    SCOPE_FORBIDDEN`).
///
/// What is judged before the body is parsed (its credential and admission, its size) does not
/// depend on how the body is parsed; and a body naming another tenant is refused before the
/// rest of it is converted (`scoped`, `convert_own`, the write's conversion, the search's
/// `scope_of_body_for`). A handler therefore splits its body before it judges its path's id
/// or its query string.
pub struct JsonBody {
    held: Held,
    /// The credential's tenant, which the body's `tenant_id` is checked against.
    tenant: Option<TenantId>,
}

enum Held {
    /// Parsed where it was read: small enough that its parse and conversion cost
    /// microseconds whatever its shape (its size bounds its keys and depth).
    Parsed(Map<String, Value>),
    /// Left as bytes, parsed and converted in one job (`AppState::parse_body`).
    Large { bytes: Bytes, share: Option<Share> },
}

impl FromRequest<AppState> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let tenant = req
            .extensions()
            .get::<BodyTenant>()
            .map(|t| t.tenant.clone());
        let share = req.extensions().get::<Share>().cloned();
        let JsonBytes(bytes) = JsonBytes::from_request(req, state).await?;
        if bytes.is_empty() {
            return Ok(JsonBody {
                held: Held::Parsed(Map::new()),
                tenant,
            });
        }
        // Parsed here, a small body saves every ordinary request a second trip through its
        // tenant's queue. Only a large one, which can cost seconds, is worth that trip.
        if bytes.len() <= PARSE_INLINE_BYTES {
            let bounds = body_bounds(&state.engine.config().limits);
            let map = parse_object_within(&bytes, tenant.as_ref(), bounds)?;
            return Ok(JsonBody {
                held: Held::Parsed(map),
                tenant,
            });
        }
        Ok(JsonBody {
            held: Held::Large { bytes, share },
            tenant,
        })
    }
}

impl JsonBody {
    /// The body converted by `convert`: at once for a body parsed where it was read, else in
    /// the same pool job as its parse, in the sender's share. Everything that walks the body
    /// belongs in `convert`, which also drops what it does not keep.
    pub(crate) async fn convert<T, F>(self, state: &AppState, convert: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(Map<String, Value>) -> Result<T, ApiError> + Send + 'static,
    {
        match self.held {
            Held::Parsed(map) => convert(map),
            Held::Large { bytes, share } => {
                state
                    .parse_body(share.as_ref(), self.tenant, bytes, convert)
                    .await
            }
        }
    }

    /// The credential's tenant, for a conversion that checks the body's `tenant_id` before
    /// converting the rest (`check_body_tenant`); `None` on an operator's route.
    pub(crate) fn tenant(&self) -> Option<&TenantId> {
        self.tenant.as_ref()
    }

    /// [`JsonBody::convert`] for a body that may name its tenant: a `tenant_id` naming another
    /// tenant is refused (`check_body_tenant`) before `convert` judges any field, so the
    /// security event is not hidden behind a malformed scope field or the rest of the body.
    pub(crate) async fn convert_own<T, F>(self, state: &AppState, convert: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(Map<String, Value>) -> Result<T, ApiError> + Send + 'static,
    {
        let tenant = self.tenant.clone();
        self.convert(state, move |body| {
            if let Some(tenant) = &tenant {
                check_body_tenant(&body, tenant)?;
            }
            convert(body)
        })
        .await
    }

    /// The scope fields named in `keys`, taken out of the body, and the rest of it read as
    /// `T`. A failure to read `T` is handed back, not returned: the handler checks the
    /// request's scope first, so a body naming another tenant is the security event it is
    /// whatever else is wrong with it. A body whose `tenant_id` names another tenant is
    /// refused before anything of it is converted, with the refusal that check would give.
    pub(crate) async fn scoped<T>(
        self,
        state: &AppState,
        keys: &'static [&'static str],
    ) -> Result<Scoped<T>, ApiError>
    where
        T: DeserializeOwned + Send + 'static,
    {
        let split = move |mut body: Map<String, Value>| {
            let scope = ScopeParts::take_from_body(&mut body, keys)?;
            Ok(Scoped {
                scope,
                rest: from_map(body).map_err(|e| naming_scope_fields_too(e, keys)),
            })
        };
        if keys.contains(&"tenant_id") {
            self.convert_own(state, split).await
        } else {
            self.convert(state, split).await
        }
    }
}

/// serde's refusal of an unknown field lists the fields of the body's own type, which lacks
/// the scope fields taken out first: the message names them too, so that it lists every field
/// the body may hold.
pub(crate) fn naming_scope_fields_too(e: ApiError, keys: &[&str]) -> ApiError {
    match e {
        ApiError::BadRequest(m) if m.starts_with("unknown field `") && m.contains("expected ") => {
            ApiError::BadRequest(format!("{m}, or a scope field: {}", keys.join(", ")))
        }
        other => other,
    }
}

/// A body's scope fields and the rest of it, read as `T` (or why it could not be).
pub(crate) struct Scoped<T> {
    pub scope: ScopeParts,
    pub rest: Result<T, ApiError>,
}

/// A JSON object body, parsed (in the sender's share when large) but not converted: for the
/// routes whose bodies are read by hand, such as the operator's.
pub struct JsonObject(pub Map<String, Value>);

impl FromRequest<AppState> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let body = JsonBody::from_request(req, state).await?;
        body.convert(state, Ok).await.map(JsonObject)
    }
}
