//! Operator routes under `/v1/admin`: tenants and API keys. Every handler takes an
//! [`OperatorAuth`], so a tenant credential never reaches one.

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use serde::Deserialize;
use strata_auth::{KeyInfo, KeyTenant, NewKey, Permission, Permissions, Rotation};
use strata_engine::{
    IndexParams, IntegrityPolicyInput, IsolationLevel, NewTenantSpec, TenantInfo, TenantLimits,
};
use strata_types::{Domain, MAX_RECORD_TIME, Millis, TenantId, UserToken, now_millis};
use utoipa::ToSchema;

use crate::bodies::{CreatedKey, Keys, RotatedKey, TenantTree, Tenants};
use crate::edge::OperatorAuth;
use crate::input::{JsonObject, PathParam, QueryInput, from_map};
use crate::{ApiError, AppState};

fn bad(e: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest(e.to_string())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewTenant {
    #[schema(value_type = TenantId)]
    id: String,
    /// At most 256 bytes.
    #[schema(max_length = 256)]
    display_name: Option<String>,
    // These two are taken out of the body first (`isolation::level_fields`, whose errors
    // name the field); they are here for the schema and for `deny_unknown_fields`.
    /// `shared` (the default), `partition`, or `dedicated` (its data in its own storage
    /// file, created before the tenant is registered).
    #[allow(dead_code)]
    #[schema(value_type = Option<crate::isolation::RequestedLevel>)]
    isolation: Option<IsolationLevel>,
    /// The tenant's own graph parameters (used at `partition` and `dedicated`).
    #[allow(dead_code)]
    index_params: Option<IndexParams>,
    /// Its parent tenant, which must exist (see `docs/shared-knowledge.md`).
    #[schema(value_type = Option<TenantId>)]
    parent: Option<String>,
    /// Its limits from the start (absent ones: unlimited); `PATCH` changes them later.
    limits: Option<TenantLimits>,
    /// Fair-share weight in scheduling, at least 1 (default 1).
    #[schema(minimum = 1)]
    weight: Option<u32>,
    /// The operator's metadata of the tenant: a JSON object of at most 64 keys, 16 KiB
    /// encoded and 8 levels of nesting. Shown by the admin routes only, never to the tenant.
    #[schema(value_type = Option<Object>)]
    metadata: Option<serde_json::Value>,
    /// The tenant's own integrity thresholds, over the server configuration's (fields left
    /// out take the configuration's values for the tenant); absent: the configuration's
    /// apply.
    integrity_policy: Option<IntegrityPolicyInput>,
}

/// Registers a tenant with the server's default collections.
#[utoipa::path(post, path = "/v1/admin/tenants", tag = "admin", operation_id = "create_tenant",
    request_body = NewTenant,
    responses((status = 201, description = "The tenant", body = TenantInfo)),
    security(("bearer" = [])))]
pub async fn create_tenant(
    State(state): State<AppState>,
    OperatorAuth(op): OperatorAuth,
    JsonObject(body): JsonObject,
) -> Result<(StatusCode, Json<TenantInfo>), ApiError> {
    let mut body = body;
    let (isolation, index_params) = crate::isolation::level_fields(&mut body)?;
    let new: NewTenant = from_map(body)?;
    let id = crate::tenant_ids::new_tenant_id(new.id)?;
    let parent = crate::lifecycle::parent_field(new.parent)?;
    let metadata = match new.metadata {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Object(m)) => Some(m),
        Some(_) => return Err(bad("metadata: must be a JSON object")),
    };
    let spec = NewTenantSpec {
        display_name: new.display_name,
        isolation,
        index_params,
        parent,
        limits: new.limits,
        weight: new.weight,
        metadata,
        integrity_policy: new.integrity_policy,
    };
    let info = state
        .run(move |e| Ok(e.create_tenant_with(&op, &id, spec)?))
        .await?;
    tracing::info!(target: "audit", tenant = %info.id, "tenant created");
    Ok((StatusCode::CREATED, Json(info)))
}

/// Every tenant, without metadata (`GET /v1/admin/tenants/{id}` shows it).
#[utoipa::path(get, path = "/v1/admin/tenants", tag = "admin", operation_id = "list_tenants",
    responses((status = 200, description = "Every tenant, without metadata", body = Tenants)),
    security(("bearer" = [])))]
pub async fn list_tenants(
    State(state): State<AppState>,
    OperatorAuth(op): OperatorAuth,
) -> Result<Json<Tenants>, ApiError> {
    let list = state.run(move |e| Ok(e.tenants(&op)?)).await?;
    Ok(Json(Tenants { tenants: list }))
}

/// Every tenant with its parent and children: the hierarchy.
#[utoipa::path(get, path = "/v1/admin/tenant-tree", tag = "admin", operation_id = "tenant_tree",
    responses((status = 200, description = "Every tenant with its parent and children", body = TenantTree)),
    security(("bearer" = [])))]
pub async fn tenant_tree(
    State(state): State<AppState>,
    OperatorAuth(op): OperatorAuth,
) -> Result<Json<TenantTree>, ApiError> {
    let tenants = state.run(move |e| Ok(e.tenant_tree(&op)?)).await?;
    Ok(Json(TenantTree { tenants }))
}

/// One tenant, with its usage, parent and children.
#[utoipa::path(get, path = "/v1/admin/tenants/{id}", tag = "admin", operation_id = "get_tenant",
    params(("id" = TenantId, Path, description = "tenant id")),
    responses((status = 200, description = "The tenant, with its usage", body = TenantInfo)),
    security(("bearer" = [])))]
pub async fn get_tenant(
    State(state): State<AppState>,
    OperatorAuth(op): OperatorAuth,
    PathParam(id): PathParam,
) -> Result<Json<TenantInfo>, ApiError> {
    let id = TenantId::parse_field("id", id).map_err(bad)?;
    let info = state.run(move |e| Ok(e.tenant(&op, &id)?)).await?;
    Ok(Json(info))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewKeyBody {
    /// Tenant id, or `*` for another operator key.
    #[schema(value_type = KeyTenant)]
    tenant: String,
    /// At most 256 bytes.
    #[schema(max_length = 256)]
    name: Option<String>,
    /// Absent: `read` and `write`.
    permissions: Option<Vec<Permission>>,
    /// Bind the key to these principals: requests may name only a subset. At most
    /// `max_user_tokens` (32 by default), none twice.
    user_tokens: Option<Vec<UserToken>>,
    /// Bind the key to these domains: at most 32, none twice.
    #[schema(max_items = 32)]
    domains: Option<Vec<Domain>>,
    /// Expiry in milliseconds since the Unix epoch, at most 2^53; give at most one of the two.
    #[schema(value_type = Option<i64>, maximum = 9007199254740992_i64)]
    expires_at: Option<Millis>,
    /// Expiry in seconds from now (at least 1), landing no later than 2^53 ms since the epoch.
    #[schema(minimum = 1)]
    expires_in_secs: Option<u64>,
}

/// A new key's expiry from `expires_at` or `expires_in_secs` (at most one), no later than
/// [`MAX_RECORD_TIME`] (2^53 ms): a later one would have been stored saturated, as a time
/// that JSON clients reading numbers as doubles cannot hold exactly.
fn key_expiry(at: Option<Millis>, in_secs: Option<u64>) -> Result<Option<Millis>, ApiError> {
    let too_late = |field: &str| {
        ApiError::BadRequest(format!(
            "{field}: the key would expire after {MAX_RECORD_TIME} milliseconds since the Unix \
             epoch (2^53, the year 287,396), the latest time Strata stores; for a key that \
             never expires, leave expires_at and expires_in_secs out"
        ))
    };
    match (at, in_secs) {
        (Some(_), Some(_)) => Err(bad("expires_at, expires_in_secs: give at most one")),
        // A key that could never authenticate is a mistake, not a request.
        (Some(t), None) if t <= now_millis() => Err(bad("expires_at: must be in the future")),
        (Some(t), None) if t > MAX_RECORD_TIME => Err(too_late("expires_at")),
        (Some(t), None) => Ok(Some(t)),
        (None, Some(0)) => Err(bad("expires_in_secs: must be at least 1")),
        (None, Some(secs)) => match now_millis().checked_add(secs_to_millis(secs)) {
            Some(t) if t <= MAX_RECORD_TIME => Ok(Some(t)),
            _ => Err(too_late("expires_in_secs")),
        },
        (None, None) => Ok(None),
    }
}

fn secs_to_millis(secs: u64) -> i64 {
    i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}

/// Mints an API key. The secret (`key`) is in this response only.
#[utoipa::path(post, path = "/v1/admin/keys", tag = "admin", operation_id = "create_key",
    request_body = NewKeyBody,
    responses((status = 201, description = "The key's info plus `key`, the secret, shown once", body = CreatedKey)),
    security(("bearer" = [])))]
pub async fn create_key(
    State(state): State<AppState>,
    OperatorAuth(op): OperatorAuth,
    JsonObject(body): JsonObject,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    let b: NewKeyBody = from_map(body)?;
    let tenant = KeyTenant::try_from(b.tenant)?;
    let expires_at = key_expiry(b.expires_at, b.expires_in_secs)?;
    let new = NewKey {
        tenant,
        name: b.name,
        permissions: b
            .permissions
            .map(|p| Permissions::of(&p))
            .unwrap_or_else(Permissions::read_write),
        user_tokens: b.user_tokens,
        domains: b.domains,
        expires_at,
    };
    let auth = state.auth.clone();
    let created = state
        .run(move |e| {
            // A key for a soft-deleted tenant would work only after a restore: refused, as
            // suspending it is, rather than minted for nothing.
            if let KeyTenant::Tenant(t) = &new.tenant {
                e.refuse_if_deleted(&op, t)?;
            }
            Ok(auth.create_key(e.credentials(), &op, new, &e.key_audit(&op))?)
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            info: created.info,
            key: created.secret,
        }),
    ))
}

/// Every key (never their secrets), or one tenant's with `?tenant=`.
#[utoipa::path(get, path = "/v1/admin/keys", tag = "admin", operation_id = "list_keys",
    params(("tenant" = Option<KeyTenant>, Query, description = "only this tenant's keys (`*`: the operator's); a tenant that does not exist is 404")),
    responses((status = 200, description = "The keys, revoked ones included", body = Keys)),
    security(("bearer" = [])))]
pub async fn list_keys(
    State(state): State<AppState>,
    OperatorAuth(op): OperatorAuth,
    RawQuery(q): RawQuery,
) -> Result<Json<Keys>, ApiError> {
    let q = QueryInput::parse(q.as_deref(), &["tenant"])?;
    let tenant = q
        .get("tenant")
        .map(|t| KeyTenant::try_from(t.to_owned()))
        .transpose()?;
    let auth = state.auth.clone();
    let keys = state
        .run(move |e| Ok(auth.list_keys(e.credentials(), &op, tenant.as_ref())?))
        .await?;
    Ok(Json(Keys { keys }))
}

/// How long a rotated key keeps working by default: long enough to roll the new key out to
/// a fleet of clients, short enough that a leaked key does not live on for days.
const DEFAULT_ROTATION_GRACE_SECS: u64 = 3600;
/// The longest grace a rotation gives the old key: past it, a rotation would not retire it.
pub(crate) const MAX_ROTATION_GRACE_SECS: u64 = 30 * 86_400;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RotateKeyBody {
    /// How long the old key keeps working, in seconds (default 3600, at most 30 days); `0`
    /// revokes it at once. Never beyond the old key's own expiry.
    #[schema(maximum = 2_592_000)]
    grace_secs: Option<u64>,
    /// The new key's expiry in milliseconds since the Unix epoch; give at most one of the two.
    /// Absent: the old key's expiry (none if it had none).
    #[schema(value_type = Option<i64>, maximum = 9007199254740992_i64)]
    expires_at: Option<Millis>,
    #[schema(minimum = 1)]
    expires_in_secs: Option<u64>,
}

/// Rotates an API key: mints its successor, with the same tenant, name, permissions and
/// bindings (the secret, `key`, is in this response only), and lets the old key work for
/// `grace_secs` more (default 3600; `0` revokes it at once), so clients can move over without
/// an outage. One transaction, audited `key.rotate` (the old key with its new expiry) and
/// `key.create`. A revoked or expired key, or one already rotated, is `409 CONFLICT`.
#[utoipa::path(post, path = "/v1/admin/keys/{id}/rotate", tag = "admin", operation_id = "rotate_key",
    params(("id" = String, Path, description = "key id")),
    request_body = RotateKeyBody,
    responses((status = 201, description = "The new key's info plus `key`, the secret, shown once, and `replaces`, the old key as it is now", body = RotatedKey)),
    security(("bearer" = [])))]
pub async fn rotate_key(
    State(state): State<AppState>,
    OperatorAuth(op): OperatorAuth,
    PathParam(id): PathParam,
    JsonObject(body): JsonObject,
) -> Result<(StatusCode, Json<RotatedKey>), ApiError> {
    let b: RotateKeyBody = from_map(body)?;
    let grace = b.grace_secs.unwrap_or(DEFAULT_ROTATION_GRACE_SECS);
    if grace > MAX_ROTATION_GRACE_SECS {
        return Err(ApiError::BadRequest(format!(
            "grace_secs: at most {MAX_ROTATION_GRACE_SECS} (30 days): a rotated key stops \
             working; to keep a key, do not rotate it"
        )));
    }
    let rotation = Rotation {
        old_until: (grace > 0).then(|| now_millis().saturating_add(secs_to_millis(grace))),
        expires_at: key_expiry(b.expires_at, b.expires_in_secs)?,
    };
    let auth = state.auth.clone();
    let rotated = state
        .run(move |e| {
            // A successor for a soft-deleted tenant's key would work only after a restore:
            // refused, as minting one is.
            if let Some(KeyTenant::Tenant(t)) = auth.key_tenant(e.credentials(), &op, &id)? {
                e.refuse_if_deleted(&op, &t)?;
            }
            Ok(auth.rotate_key(e.credentials(), &op, &id, rotation, &e.key_audit(&op))?)
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(RotatedKey {
            info: rotated.created.info,
            key: rotated.created.secret,
            replaces: rotated.old,
        }),
    ))
}

/// Revokes a key at once.
#[utoipa::path(delete, path = "/v1/admin/keys/{id}", tag = "admin", operation_id = "revoke_key",
    params(("id" = String, Path, description = "key id")),
    responses((status = 200, description = "The revoked key's info", body = KeyInfo)),
    security(("bearer" = [])))]
pub async fn revoke_key(
    State(state): State<AppState>,
    OperatorAuth(op): OperatorAuth,
    PathParam(id): PathParam,
) -> Result<Json<KeyInfo>, ApiError> {
    let auth = state.auth.clone();
    let info = state
        .run(move |e| Ok(auth.revoke_key(e.credentials(), &op, &id, &e.key_audit(&op))?))
        .await?;
    Ok(Json(info))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_expiring_too_late_is_refused_in_one_readable_sentence() {
        let Err(ApiError::BadRequest(m)) = key_expiry(None, Some(u64::MAX)) else {
            panic!("expected a 400");
        };
        assert!(
            m.starts_with("expires_in_secs: the key would expire after"),
            "{m}"
        );
        assert!(!m.contains("  "), "{m}");
    }
}
