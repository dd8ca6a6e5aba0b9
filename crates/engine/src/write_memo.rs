//! What every tenant write decodes from storage, memoised by its stored bytes (see
//! `strata_store::DecodeMemo`): the liveness check's registry row and profile, and the
//! collection a record is written to. Each write still reads the bytes in its own
//! transaction, so it sees exactly what it would without the memo; only the JSON decoding of
//! unchanged bytes is skipped.

use std::sync::Arc;

use strata_auth::TenantScope;
use strata_store::{DecodeMemo, MemoReads, Reads, StoreError, TenantKey};
use strata_types::Collection;

use crate::EngineError;
use crate::lifecycle::{TenantProfile, TenantStatus};

/// One engine's memos.
#[derive(Default)]
pub(crate) struct WriteMemos {
    pub(crate) live: DecodeMemo<LiveRow>,
    /// Shared with prepared writes, which outlive a borrow of the engine.
    pub(crate) collections: Arc<DecodeMemo<Collection>>,
}

/// A registry row, decoded as far as the liveness check needs.
pub(crate) struct LiveRow {
    key: TenantKey,
    pub(crate) profile: TenantProfile,
}

/// [`crate::tenants::check_live`] through the memo: the same answer and errors, for the row
/// as it is in this transaction.
pub(crate) fn check_live(
    r: &impl Reads,
    scope: &TenantScope,
    memo: &DecodeMemo<LiveRow>,
) -> Result<Arc<LiveRow>, EngineError> {
    let row = r.tenant_memo(scope.tenant(), memo, |meta| {
        let profile = TenantProfile::of(&meta).map_err(|e| match e {
            EngineError::Store(e) => e,
            other => StoreError::Corrupt(other.to_string()),
        })?;
        Ok(LiveRow {
            key: meta.key,
            profile,
        })
    })?;
    match row {
        Some(row) if row.key == scope.key() => match row.profile.status {
            TenantStatus::Active => Ok(row),
            TenantStatus::Suspended => Err(EngineError::TenantSuspended(scope.tenant().clone())),
            TenantStatus::Deleted => Err(EngineError::TenantNotFound(scope.tenant().clone())),
        },
        _ => Err(EngineError::TenantNotFound(scope.tenant().clone())),
    }
}
