//! The engine's errors. The HTTP layer maps each variant to a status and a stable code.

use strata_auth::Permission;
use strata_store::StoreError;
use strata_types::{CollectionName, FilterError, InvalidName, RecordError, TenantId};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Missing, foreign or invisible: the three look the same on purpose.
    #[error("not found")]
    NotFound,
    #[error(transparent)]
    InvalidName(#[from] InvalidName),
    /// One record (or patch) cannot be stored; the message starts with the field at fault.
    #[error("{}", .0.in_body())]
    InvalidRecord(#[from] RecordError),
    /// One record of a batch written in the `{"records": [...]}` form cannot be stored; the
    /// message starts with its path (`records[5].metadata: ...`).
    #[error("{}", error.at_record(*index))]
    InvalidRecordAt { index: usize, error: RecordError },
    #[error(transparent)]
    InvalidFilter(#[from] FilterError),
    #[error("{0}")]
    BadRequest(String),
    /// The request asked for more than the credential grants (docs/isolation.md, rule 2).
    #[error("scope forbidden: {0}")]
    ScopeForbidden(String),
    #[error("the credential lacks the {0:?} permission")]
    PermissionDenied(Permission),
    #[error("collection {0} does not exist")]
    CollectionNotFound(CollectionName),
    #[error("collection {0} already exists")]
    CollectionExists(CollectionName),
    /// A delete of the collection began and did not finish (a crash, or its client hung up):
    /// its name is taken until it does.
    #[error(
        "collection {0} has an unfinished delete; repeating the DELETE of collection {0} finishes it"
    )]
    CollectionDeleteUnfinished(CollectionName),
    #[error("tenant {0} already exists")]
    TenantExists(TenantId),
    #[error("tenant {0} does not exist")]
    TenantNotFound(TenantId),
    #[error("tenant {0} is suspended")]
    TenantSuspended(TenantId),
    /// The tenant is in integrity state `stress` or `critical`: its most expensive searches
    /// are shed.
    #[error(
        "tenant {0} is under integrity stress: searches with k above {max_k} or ef above {max_ef} are \
         shed until it recovers; retry smaller or later",
        max_k = crate::integrity::STRESS_MAX_K,
        max_ef = crate::integrity::STRESS_MAX_EF
    )]
    TenantStressed(TenantId),
    /// The tenant is in integrity state `critical`: its writes are refused until it recovers.
    #[error("tenant {0} is in a critical state: writes are refused until it recovers")]
    TenantCritical(TenantId),
    /// A write would take the tenant past a quota; nothing of it was applied. `used` is the
    /// usage before the write, so the message tells how much room was left; `None` when the
    /// caller may not read it (see [`EngineError::seen_by`]).
    #[error("quota exceeded: {resource}: {}", quota_usage(*limit, *used))]
    QuotaExceeded {
        resource: &'static str,
        limit: u64,
        used: Option<u64>,
    },
    /// A conflict with the state of the data: a client id naming a record the caller cannot
    /// see (another principal's, domain's or run's), or a migration or import in the way. The
    /// message says which.
    #[error("{0}")]
    IdConflict(String),
    /// Every data-move slot of the server is taken (`engine.isolation.max_concurrent_moves`):
    /// a migration that would move data is refused rather than queued; ask again once one has
    /// ended. A conflict like [`EngineError::IdConflict`], told apart so that a caller that
    /// may wait for a slot (a resumption, an import) waits for this and nothing else.
    #[error("{0}")]
    MoveSlotsBusy(String),
    /// A merge patch of a tenant's metadata whose stored row is damaged: there is nothing
    /// sound to merge into. The operator replaces it with `null` first (which never reads it).
    #[error(
        "tenant {0}: its stored metadata is damaged, so a merge patch cannot apply; send \
         \"metadata\": null first to replace it, then set the metadata again"
    )]
    MetadataDamaged(TenantId),
    /// The tenant's own integrity policy, as stored, does not decode closed (damage, or a
    /// newer version wrote it): the tenant's requests are refused until an operator
    /// replaces it, which never reads it.
    #[error(
        "tenant {0}: its stored integrity_policy is unreadable ({1}); an operator replaces it \
         with PATCH {{\"integrity_policy\": null}} or a valid policy"
    )]
    IntegrityPolicyDamaged(TenantId, String),
    /// An `Idempotency-Key` already answered a different request.
    #[error("Idempotency-Key {0} was used for a different request; use a new key")]
    IdempotencyKeyReused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The collection declares another embedding model than the server's: embedding with it
    /// would mix two models' vectors in one collection.
    #[error(
        "collection {collection} is embedded by {collection_model}, but this server runs \
         {server_model}; send vectors from the collection's model, or use another collection"
    )]
    ModelMismatch {
        collection: CollectionName,
        collection_model: String,
        server_model: String,
    },
    /// A re-embed cannot start or go on in the collection's current state (no embedder
    /// loaded, already on the model, records without content, one already running...).
    #[error("re-embed: {0}")]
    Reembed(String),
    /// The embedder failed on input it accepted (not the caller's fault).
    #[error("embedding: {0}")]
    Embedding(String),
    /// The request is valid but this server does not implement it yet (e.g. the dedicated
    /// isolation level).
    #[error("not implemented: {0}")]
    Unsupported(String),
    /// The server is shutting down: the work was stopped, or not started, and left nothing
    /// half-done; ask again once it is back.
    #[error("shutting down: {0}")]
    ShuttingDown(String),
    /// An in-memory index failed; storage is intact and the index is rebuilt.
    #[error("index: {0}")]
    Index(String),
}

/// The figures of a quota refusal's message. A refusal comes before the limit is reached as
/// often as at it (4 of 5 vectors used, and a batch of 2), so it says that the request would
/// pass it, not that it is reached.
fn quota_usage(limit: u64, used: Option<u64>) -> String {
    match used {
        Some(used) if used < limit => format!(
            "{used} used of {limit}; the request needs more than the {} left",
            limit - used
        ),
        Some(used) => format!("{used} used of {limit}"),
        None => format!("the request would pass the limit of {limit}"),
    }
}

impl EngineError {
    /// The error as `scope`'s caller may read it. A quota's usage counts the records (and
    /// links) of every principal and domain of the tenant, so a refusal shows it only to a
    /// credential that may read the tenant's usage figures (`GET /v1/stats`: `admin` and
    /// `all_principals`, bound to no domain or user token); anyone else would learn, from the
    /// count and how it moves, about records it cannot see. They get the limit alone.
    pub(crate) fn seen_by(self, scope: &strata_auth::TenantScope) -> Self {
        match self {
            EngineError::QuotaExceeded {
                resource,
                limit,
                used: Some(_),
            } if !crate::whole_tenant::may_read_usage(scope) => EngineError::QuotaExceeded {
                resource,
                limit,
                used: None,
            },
            e => e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::EngineError;

    #[test]
    fn a_quota_refusal_says_the_request_would_pass_the_limit_not_that_it_is_reached() {
        let refusal = |used| {
            EngineError::QuotaExceeded {
                resource: "max_vectors",
                limit: 5,
                used,
            }
            .to_string()
        };
        assert_eq!(
            refusal(Some(4)),
            "quota exceeded: max_vectors: 4 used of 5; the request needs more than the 1 left"
        );
        assert_eq!(refusal(Some(5)), "quota exceeded: max_vectors: 5 used of 5");
        assert_eq!(
            refusal(None),
            "quota exceeded: max_vectors: the request would pass the limit of 5"
        );
    }
}
