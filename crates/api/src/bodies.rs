//! The JSON bodies of the API that are not engine or vocabulary types: response envelopes the
//! handlers return, and the scope fields a body may carry. Every type here derives its OpenAPI
//! schema, and the handlers serialise exactly these types, so the published document and the
//! answers cannot drift apart.

use serde::Serialize;
use strata_auth::KeyInfo;
use strata_engine::{AuditRow, PutOutcome, TenantInfo};
use strata_types::{Collection, Domain, MemoryScope, RunId, TenantId, TokenSelector, UserMatch};
use utoipa::ToSchema;

/// Scope fields a body may carry (they may also come from the query string, and the domain
/// from `X-Strata-Domain`; sources that disagree are `400`). They only ever narrow what the
/// credential grants.
#[derive(ToSchema)]
#[allow(dead_code)] // Documents what `ScopeParts` reads; never built.
pub struct ScopeFields {
    /// Checked only: a tenant other than the credential's is `403 TENANT_MISMATCH`.
    tenant_id: Option<TenantId>,
    /// The domain; `default` when absent.
    memory_domain: Option<Domain>,
    /// Who is asking. Absent: the credential's bound principals, or none (then only records
    /// without tokens are visible).
    user_tokens: Option<TokenSelector>,
    /// `any` (default): a record is visible when it shares a token with the request; `all`:
    /// when the request holds every token of the record.
    user_match: Option<UserMatch>,
    run_id: Option<RunId>,
    memory_scope: Option<MemoryScope>,
}

/// The scope fields of a single-record write or a patch: there `user_tokens`, `run_id` and
/// `memory_scope` are the record's own fields (put them in the query string to scope the
/// request itself).
#[derive(ToSchema)]
#[allow(dead_code)] // Documents what `ScopeParts` reads; never built.
pub struct RecordScopeFields {
    /// Checked only: a tenant other than the credential's is `403 TENANT_MISMATCH`.
    tenant_id: Option<TenantId>,
    memory_domain: Option<Domain>,
    user_match: Option<UserMatch>,
}

/// The answer to a batch write: one outcome per record, in order.
#[derive(Serialize, ToSchema)]
pub struct BatchOutcome {
    pub results: Vec<PutOutcome>,
}

/// The answer to a write: one outcome for a single record, `{results}` for a batch.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum WriteResponse {
    One(PutOutcome),
    Batch(BatchOutcome),
}

/// How many records a delete removed.
#[derive(Serialize, ToSchema)]
pub struct Deleted {
    pub deleted: u64,
}

/// How many visible records match.
#[derive(Serialize, ToSchema)]
pub struct Counted {
    pub count: u64,
}

#[derive(Serialize, ToSchema)]
pub struct Collections {
    pub collections: Vec<Collection>,
}

/// How many records went with a deleted collection.
#[derive(Serialize, ToSchema)]
pub struct CollectionDeleted {
    pub deleted_records: u64,
}

#[derive(Serialize, ToSchema)]
pub struct Tenants {
    pub tenants: Vec<TenantInfo>,
}

/// The answer to a hard delete: the tenant is gone.
#[derive(Serialize, ToSchema)]
pub struct HardDeleted {
    pub id: TenantId,
    pub purged: bool,
}

/// The answer to a tenant delete: the soft-deleted tenant, or `{id, purged: true}`.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum TenantDeleted {
    Soft(TenantInfo),
    Hard(HardDeleted),
}

/// Tenants a purge erased.
#[derive(Serialize, ToSchema)]
pub struct Purged {
    pub purged: Vec<TenantId>,
}

#[derive(Serialize, ToSchema)]
pub struct Keys {
    pub keys: Vec<KeyInfo>,
}

/// A new key: its info, and the secret, shown in this answer only.
#[derive(Serialize, ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub info: KeyInfo,
    /// The bearer token (`sk_…`). Only its hash is stored.
    pub key: String,
}

/// Audit rows, newest first.
#[derive(Serialize, ToSchema)]
pub struct AuditRows {
    pub rows: Vec<AuditRow>,
}

/// A health answer.
#[derive(Serialize, ToSchema)]
pub struct Status {
    /// `ok` (`/healthz`) or `ready` (`/readyz`).
    pub status: &'static str,
}
