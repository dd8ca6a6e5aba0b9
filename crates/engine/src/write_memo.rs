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

/// A registry row, decoded as far as the liveness check needs. The profile's decoding error is
/// kept (it follows from the bytes alone, like the profile) so that a credential of another
/// incarnation of the tenant id is told "not found" before a damaged profile is reported.
pub(crate) struct LiveRow {
    key: TenantKey,
    profile: Result<TenantProfile, String>,
}

impl LiveRow {
    /// The profile of a row [`check_live`] returned; it decoded.
    pub(crate) fn profile(&self) -> &TenantProfile {
        match &self.profile {
            Ok(p) => p,
            Err(_) => unreachable!("invariant: check_live returns only rows whose profile decoded"),
        }
    }
}

/// [`crate::tenants::check_live`] through the memo: the same answer and errors, for the row
/// as it is in this transaction.
pub(crate) fn check_live(
    r: &impl Reads,
    scope: &TenantScope,
    memo: &DecodeMemo<LiveRow>,
) -> Result<Arc<LiveRow>, EngineError> {
    let row = r.tenant_memo(scope.tenant(), memo, |meta| {
        Ok(LiveRow {
            key: meta.key,
            profile: TenantProfile::of(&meta).map_err(|e| match e {
                EngineError::Store(StoreError::Corrupt(m)) => m,
                other => other.to_string(),
            }),
        })
    })?;
    match row {
        // Another incarnation's row (or none) is "not found", whatever its profile holds.
        Some(row) if row.key == scope.key() => {
            let status = match &row.profile {
                Ok(p) => p.status,
                Err(m) => return Err(EngineError::Store(StoreError::Corrupt(m.clone()))),
            };
            match status {
                TenantStatus::Active => Ok(row),
                TenantStatus::Suspended => {
                    Err(EngineError::TenantSuspended(scope.tenant().clone()))
                }
                TenantStatus::Deleted => Err(EngineError::TenantNotFound(scope.tenant().clone())),
            }
        }
        _ => Err(EngineError::TenantNotFound(scope.tenant().clone())),
    }
}
