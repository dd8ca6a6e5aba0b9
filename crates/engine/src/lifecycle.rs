//! Tenant lifecycle and quotas (SPEC section 4): active → suspended → active, soft delete →
//! restore or purge after the retention period, hard delete with physical erasure.
//!
//! A tenant's profile (status, limits, weight, display name) lives in its registry entry.
//! Usage (records, vectors, bytes) is kept beside the tenant's data and updated in the same
//! transaction as every write, where quotas are checked: redb runs one write transaction at a
//! time, so concurrent writers can never overshoot a quota.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use strata_store::{Reads, StoreError, TenantKey, TenantMeta, Writer};
use strata_types::{Millis, Record};

use crate::EngineError;
use crate::tenant_index::Change;

/// Where a tenant is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantStatus {
    #[default]
    Active,
    /// Every data operation fails with `TENANT_SUSPENDED`; data is kept.
    Suspended,
    /// Soft-deleted: hidden, restorable until the retention period ends, then purged.
    Deleted,
}

/// Per-tenant limits; `None` means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantLimits {
    pub max_vectors: Option<u64>,
    pub max_storage_bytes: Option<u64>,
    pub max_collections: Option<u64>,
    /// Sustained requests per second (token bucket rate).
    pub max_qps: Option<f64>,
    /// Token bucket size; defaults to one second's worth of `max_qps`.
    pub burst: Option<u32>,
    /// Requests in flight at once.
    pub max_concurrent: Option<u32>,
    pub max_spreading_depth: Option<u32>,
}

/// The engine-owned part of a registry entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TenantProfile {
    pub display_name: Option<String>,
    pub status: TenantStatus,
    pub deleted_at: Option<Millis>,
    pub limits: TenantLimits,
    /// Fair-share weight in scheduling; at least 1.
    pub weight: u32,
}

impl Default for TenantProfile {
    fn default() -> Self {
        TenantProfile {
            display_name: None,
            status: TenantStatus::Active,
            deleted_at: None,
            limits: TenantLimits::default(),
            weight: 1,
        }
    }
}

impl TenantProfile {
    pub(crate) fn of(meta: &TenantMeta) -> TenantProfile {
        // A profile that no longer parses (it never should) falls back to defaults rather
        // than locking the tenant out; limits then read as unlimited.
        serde_json::from_value(Value::Object(meta.profile.clone())).unwrap_or_default()
    }

    pub(crate) fn to_map(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        }
    }
}

/// What a tenant holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Usage {
    pub records: u64,
    pub vectors: u64,
    /// Approximate stored bytes of records (content, vectors, metadata, ids).
    pub storage_bytes: u64,
}

const USAGE_BLOB: &str = "usage";

/// Bytes a record is charged for.
fn record_bytes(r: &Record) -> u64 {
    let metadata = serde_json::to_vec(&r.metadata).map_or(0, |v| v.len());
    let tokens: usize = r.user_tokens.iter().map(|t| t.as_str().len()).sum();
    (r.id.as_str().len()
        + r.content.as_ref().map_or(0, String::len)
        + r.vector.as_ref().map_or(0, |v| v.len() * 4)
        + metadata
        + tokens
        + 64) as u64
}

pub(crate) fn usage(r: &impl Reads, key: TenantKey) -> Result<Usage, StoreError> {
    Ok(r.blob(key, USAGE_BLOB)?
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default())
}

/// Applies the usage changes of a write and checks the quotas it could break. Runs inside the
/// write's transaction; an error aborts the whole write.
pub(crate) fn account(
    w: &mut Writer<'_>,
    key: TenantKey,
    limits: &TenantLimits,
    changes: &[Change],
) -> Result<(), EngineError> {
    let (mut records, mut vectors, mut bytes) = (0i64, 0i64, 0i64);
    for c in changes {
        let (sign, r) = match c {
            Change::Upsert(r) => (1, r),
            Change::Remove(r) => (-1, r),
            Change::DropCollection(_) => continue,
        };
        records += sign;
        vectors += sign * i64::from(r.vector.is_some());
        bytes += sign * record_bytes(r) as i64;
    }
    if records == 0 && vectors == 0 && bytes == 0 {
        return Ok(());
    }
    let old = usage(w, key)?;
    let apply = |v: u64, d: i64| v.saturating_add_signed(d);
    let new = Usage {
        records: apply(old.records, records),
        vectors: apply(old.vectors, vectors),
        storage_bytes: apply(old.storage_bytes, bytes),
    };
    if vectors > 0
        && let Some(max) = limits.max_vectors
        && new.vectors > max
    {
        return Err(EngineError::QuotaExceeded {
            resource: "max_vectors",
            limit: max,
        });
    }
    if bytes > 0
        && let Some(max) = limits.max_storage_bytes
        && new.storage_bytes > max
    {
        return Err(EngineError::QuotaExceeded {
            resource: "max_storage_bytes",
            limit: max,
        });
    }
    let bytes = serde_json::to_vec(&new).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(w.put_blob(key, USAGE_BLOB, &bytes)?)
}
