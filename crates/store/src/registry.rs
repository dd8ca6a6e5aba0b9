//! The tenant registry: tenant id → storage key and the engine's profile of the tenant.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use strata_types::{Millis, TenantId};

use crate::TenantKey;

/// A registered tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantMeta {
    pub id: TenantId,
    /// Storage prefix; minted by the registry, never deserialised from outside.
    pub key: TenantKey,
    pub created_at: Millis,
    /// Fields owned by the engine (status, limits, weight, …), stored as given.
    pub profile: Map<String, Value>,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct StoredMeta {
    pub key: u64,
    pub created_at: Millis,
    pub profile: Map<String, Value>,
}

impl TenantMeta {
    pub(crate) fn to_stored(&self) -> StoredMeta {
        StoredMeta {
            key: self.key.raw(),
            created_at: self.created_at,
            profile: self.profile.clone(),
        }
    }

    pub(crate) fn from_stored(id: TenantId, s: StoredMeta) -> Self {
        TenantMeta {
            id,
            key: TenantKey::from_raw(s.key),
            created_at: s.created_at,
            profile: s.profile,
        }
    }
}
