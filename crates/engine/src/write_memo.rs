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

#[cfg(test)]
mod tests {
    use super::*;
    use strata_auth::Grant;
    use strata_store::{Store, TenantMeta};
    use strata_types::TenantId;

    /// A store holding tenant `acme` whose profile does not decode (an unknown status), and
    /// scopes for that incarnation and for another one of the same id.
    fn damaged() -> (tempfile::TempDir, Store, TenantScope, TenantScope) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let id = TenantId::parse("acme").unwrap();
        let profile = serde_json::json!({"status": "mangled", "weight": 1});
        let meta = store
            .write(|w| w.create_tenant(&id, 0, profile.as_object().cloned().unwrap()))
            .unwrap();
        // A key this fresh registry never minted: another incarnation's.
        let other = TenantMeta {
            key: TenantKey::for_tests(u64::MAX),
            ..meta.clone()
        };
        assert_ne!(other.key, meta.key);
        let this = TenantScope::for_tests(&meta, Grant::read_write());
        let stale = TenantScope::for_tests(&other, Grant::read_write());
        (dir, store, this, stale)
    }

    /// The order matters: a credential of another incarnation (a purged tenant's, say) learns
    /// only "not found", never that the current row is damaged; the row's own incarnation is
    /// told it is corrupt. Both through the memo (twice: decoded, then memoised) and through
    /// the plain check it stands for.
    #[test]
    fn another_incarnation_is_not_found_before_a_damaged_profile_is_reported() {
        let (_dir, store, this, stale) = damaged();
        let memo = DecodeMemo::default();
        let r = store.read().unwrap();
        for _ in 0..2 {
            let e = check_live(&r, &stale, &memo).err().expect("refused");
            assert!(matches!(e, EngineError::TenantNotFound(_)), "{e:?}");
            let e = check_live(&r, &this, &memo).err().expect("refused");
            assert!(
                matches!(e, EngineError::Store(StoreError::Corrupt(_))),
                "{e:?}"
            );
        }
        let e = crate::tenants::check_live(&r, &stale).expect_err("refused");
        assert!(matches!(e, EngineError::TenantNotFound(_)), "{e:?}");
        let e = crate::tenants::check_live(&r, &this).expect_err("refused");
        assert!(
            matches!(e, EngineError::Store(StoreError::Corrupt(_))),
            "{e:?}"
        );
    }
}
