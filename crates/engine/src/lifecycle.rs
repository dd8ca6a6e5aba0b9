//! Tenant lifecycle and quotas: active → suspended → active, soft delete →
//! restore or purge after the retention period, hard delete with physical erasure.
//!
//! A tenant's profile (status, limits, weight, display name) lives in its registry entry.
//! Usage (records, vectors, bytes) is kept beside the tenant's data and updated in the same
//! transaction as every write, where quotas are checked: redb runs one write transaction at a
//! time, so concurrent writers can never overshoot a quota.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use strata_store::codec::{decode_json, encode_json};
use strata_store::{Reads, StoreError, TenantKey, TenantMeta, Writer};
use strata_types::{Millis, Record, TenantId};

use crate::EngineError;
use crate::integrity::IntegrityPolicy;
use crate::isolation::{IndexParams, IsolationLevel};
use crate::tenant_index::Change;

/// Where a tenant is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TenantLimits {
    pub max_vectors: Option<u64>,
    pub max_storage_bytes: Option<u64>,
    pub max_collections: Option<u64>,
    /// Sustained requests per second (token bucket rate), 0.001 to 1,000,000,000.
    #[schema(minimum = 0.001, maximum = 1_000_000_000.0)]
    pub max_qps: Option<f64>,
    /// Token bucket size; defaults to one second's worth of `max_qps`. Needs `max_qps`: a
    /// create or update with a burst alone is refused (imports keep one, still without effect).
    #[schema(minimum = 1)]
    pub burst: Option<u32>,
    /// Requests in flight at once.
    #[schema(minimum = 1)]
    pub max_concurrent: Option<u32>,
    /// The deepest a recall of the tenant spreads, 0 to 10; 3 when absent.
    #[schema(minimum = 0, maximum = 10)]
    pub max_spreading_depth: Option<u32>,
}

/// The engine-owned part of a registry entry. Every field but the optional ones must be
/// present when it is read back: a profile that does not decode is an error, never a default
/// (a suspended tenant must not come back active and unlimited).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantProfile {
    pub display_name: Option<String>,
    pub status: TenantStatus,
    pub deleted_at: Option<Millis>,
    /// The status a soft delete found (`active` or `suspended`), which a restore brings back:
    /// a suspended tenant deleted and restored is still suspended. Written only while deleted;
    /// absent in a profile deleted before it existed, which restores as `active`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_before_delete: Option<TenantStatus>,
    pub limits: TenantLimits,
    /// Fair-share weight in scheduling; at least 1.
    pub weight: u32,
    /// Absent in profiles stored before isolation levels existed, which are `shared`; not
    /// written for `shared`, so those profiles keep their stored form.
    #[serde(default, skip_serializing_if = "IsolationLevel::is_shared")]
    pub isolation: IsolationLevel,
    /// The tenant's own graph parameters (used at `partition` and `dedicated`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_params: Option<IndexParams>,
    /// The parent tenant (organisation → team), set by the operator; absent in profiles
    /// stored before the hierarchy existed, which have none (`crate::hierarchy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<TenantId>,
    /// The tenant's own integrity thresholds, over the configuration's
    /// (`IntegrityConfig::effective`); absent (profiles stored before it existed, or cleared
    /// by the operator): the configuration's. Kept as raw JSON, every field written, and
    /// decoded (closed) only where it is used (`own_integrity_policy`): a damaged one fails
    /// that tenant's requests, never the profile (lists, the hierarchy, the sweeps), and
    /// `integrity_policy: null` removes it without reading it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrity_policy: Option<Value>,
    /// When the registry entry last changed; absent in profiles stored before it existed,
    /// which read as their creation time (`TenantInfo::updated_at`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Millis>,
    /// Set while an import is creating the tenant (which stays suspended meanwhile) and cleared
    /// by the transaction that completes it: a tenant found so at start was cut short by a
    /// crash or shutdown and is discarded (`crate::import_recovery`). Written only when set.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub importing: bool,
    /// Set when an operator moved the tenant to `shared`: automatic promotion
    /// (`promote_partition_vectors`) leaves it there instead of undoing that choice at its
    /// next sweep. Cleared by any move to another level. Written only when set.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub kept_shared: bool,
}

impl Default for TenantProfile {
    fn default() -> Self {
        TenantProfile {
            display_name: None,
            status: TenantStatus::Active,
            deleted_at: None,
            status_before_delete: None,
            limits: TenantLimits::default(),
            weight: 1,
            isolation: IsolationLevel::Shared,
            index_params: None,
            parent: None,
            integrity_policy: None,
            updated_at: None,
            importing: false,
            kept_shared: false,
        }
    }
}

impl TenantProfile {
    /// The profile of a registry entry. Fails closed: one that does not decode refuses the
    /// tenant's operations (`500 INTERNAL`, logged) until an operator repairs it.
    pub(crate) fn of(meta: &TenantMeta) -> Result<TenantProfile, EngineError> {
        // Deserialised from the stored map in place: every request checks liveness through
        // this, and cloning the map first cost a tree copy per search.
        let corrupt = |e: &dyn std::fmt::Display| {
            EngineError::Store(StoreError::Corrupt(format!(
                "tenant {}: profile: {e}",
                meta.id
            )))
        };
        TenantProfile::deserialize(&meta.profile).map_err(|e| corrupt(&e))
    }

    /// The tenant's own integrity policy, decoded closed and validated. One that does not
    /// decode, or breaks the policy's rules, was not written by this engine (damage, or a
    /// newer version): an error naming the repair, never fed to the state machine.
    pub(crate) fn own_integrity_policy(
        &self,
        id: &TenantId,
    ) -> Result<Option<IntegrityPolicy>, EngineError> {
        let Some(stored) = &self.integrity_policy else {
            return Ok(None);
        };
        crate::integrity::decode_stored(stored)
            .map(Some)
            .map_err(|why| EngineError::IntegrityPolicyDamaged(id.clone(), why))
    }

    /// The profile as written now: `updated_at` set to `now`. Every change of a registry
    /// entry's profile goes through this, so its `updated_at` follows every change.
    pub(crate) fn to_map_at(&self, now: Millis) -> Map<String, Value> {
        TenantProfile {
            updated_at: Some(now),
            ..self.clone()
        }
        .to_map()
    }

    pub(crate) fn to_map(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        }
    }
}

/// What a tenant holds. Stored beside its data; every field is required when read back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub records: u64,
    pub vectors: u64,
    /// Approximate stored bytes of records (content, vectors, metadata, ids).
    pub storage_bytes: u64,
}

pub(crate) const USAGE_BLOB: &str = "usage";

impl Usage {
    /// Counts one stored record, as writes charge it.
    pub(crate) fn count_record(&mut self, r: &Record) {
        self.records += 1;
        self.vectors += u64::from(r.vector.is_some());
        self.storage_bytes += record_bytes(r);
    }

    /// Counts one stored link, as writes charge it.
    pub(crate) fn count_link(&mut self, l: &strata_types::Link) {
        self.storage_bytes += crate::links::link_bytes(l);
    }
}

/// What the tenant's records and links hold, counted from storage (a usage row that drifted,
/// or one after removing rows no write path charged back).
pub(crate) fn recount_usage(r: &impl Reads, key: TenantKey) -> Result<Usage, EngineError> {
    let mut u = Usage::default();
    for rec in r.stored_records(key, None)? {
        u.count_record(&rec?);
    }
    for link in strata_store::LinkReads::all_links(r, key)? {
        u.count_link(&link?);
    }
    Ok(u)
}

/// Bytes a record is charged for.
pub(crate) fn record_bytes(r: &Record) -> u64 {
    // Counted, not built (see `strata_types::json_len`).
    record_bytes_with(r, strata_types::json_len(&r.metadata).unwrap_or(0))
}

/// [`record_bytes`] of a record whose metadata's JSON length is known: a written record's
/// metadata was encoded before its transaction (`strata_store::codec::MetadataJson`), and
/// measuring it again inside would hold the storage write lock for work proportional to its
/// bytes.
pub(crate) fn record_bytes_with(r: &Record, metadata: usize) -> u64 {
    let tokens: usize = r.user_tokens.iter().map(|t| t.as_str().len()).sum();
    (r.id.as_str().len()
        + r.content.as_ref().map_or(0, String::len)
        + r.vector.as_ref().map_or(0, |v| v.len() * 4)
        + metadata
        + tokens
        + 64) as u64
}

/// The tenant's usage. Fails closed: a value that does not decode is an error (quotas must
/// not silently read as zero). No value at all is zero only for a tenant without records
/// (tenants created before usage was written at creation); with records it is corrupt.
pub(crate) fn usage(r: &impl Reads, key: TenantKey) -> Result<Usage, StoreError> {
    match r.blob(key, USAGE_BLOB)? {
        Some(bytes) => decode_json(&bytes),
        // Every stored record, those of a collection being deleted too: they are charged.
        None if r.stored_records(key, None)?.next().is_none() => Ok(Usage::default()),
        None => Err(StoreError::Corrupt(
            "usage: missing for a tenant with records".into(),
        )),
    }
}

/// Writes a fresh tenant's zero usage, so that a missing value can be told from an empty one,
/// and marks its expiry index complete: it has no record yet, and every write from now on
/// keeps the index (without the mark, the next expiry sweep would enter the tenant's
/// records with a durable write of its own for each new tenant).
pub(crate) fn init_usage(w: &mut Writer<'_>, key: TenantKey) -> Result<(), StoreError> {
    w.put_blob(key, USAGE_BLOB, &encode_json(&Usage::default())?)?;
    w.mark_expiry_built(key)
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
        let (sign, charged, r) = match c {
            Change::Upsert {
                record,
                metadata_len,
            } => (1, record_bytes_with(record, *metadata_len), record),
            Change::Remove(r) => (-1, record_bytes_with(&r.record, r.metadata_len), &r.record),
            Change::DropCollection(_) => continue,
        };
        records += sign;
        vectors += sign * i64::from(r.vector.is_some());
        bytes += sign * charged as i64;
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
            used: Some(old.vectors),
        });
    }
    if bytes > 0
        && let Some(max) = limits.max_storage_bytes
        && new.storage_bytes > max
    {
        return Err(EngineError::QuotaExceeded {
            resource: "max_storage_bytes",
            limit: max,
            used: Some(old.storage_bytes),
        });
    }
    Ok(w.put_blob(key, USAGE_BLOB, &encode_json(&new)?)?)
}

/// Adds `delta` bytes that are not records' (links) to the tenant's usage, in the write's
/// transaction; a growth past `max_storage_bytes` fails the whole write.
pub(crate) fn charge_bytes(
    w: &mut Writer<'_>,
    key: TenantKey,
    limits: &TenantLimits,
    delta: i64,
) -> Result<(), EngineError> {
    let old = usage(w, key)?;
    let new = Usage {
        storage_bytes: old.storage_bytes.saturating_add_signed(delta),
        ..old
    };
    if delta > 0
        && let Some(max) = limits.max_storage_bytes
        && new.storage_bytes > max
    {
        return Err(EngineError::QuotaExceeded {
            resource: "max_storage_bytes",
            limit: max,
            used: Some(old.storage_bytes),
        });
    }
    Ok(w.put_blob(key, USAGE_BLOB, &encode_json(&new)?)?)
}

#[cfg(test)]
mod golden {
    //! The stored forms of the profile (inside the registry entry) and of usage, pinned: a
    //! change here breaks existing data directories.
    use super::*;

    #[test]
    fn profile_and_usage_formats_are_pinned() {
        let profile = TenantProfile {
            display_name: Some("Acme".into()),
            status: TenantStatus::Suspended,
            deleted_at: None,
            limits: TenantLimits {
                max_vectors: Some(10),
                ..TenantLimits::default()
            },
            weight: 3,
            ..TenantProfile::default()
        };
        let json = serde_json::to_string(&profile.to_map()).unwrap();
        assert_eq!(
            json,
            r#"{"deleted_at":null,"display_name":"Acme","limits":{"burst":null,"max_collections":null,"max_concurrent":null,"max_qps":null,"max_spreading_depth":null,"max_storage_bytes":null,"max_vectors":10},"status":"suspended","weight":3}"#
        );
        // A profile stored before isolation levels existed is `shared`, with no parameters.
        let meta = |profile: &str| TenantMeta {
            id: strata_types::TenantId::parse("acme").unwrap(),
            key: TenantKey::SERVER,
            created_at: 0,
            profile: serde_json::from_str(profile).unwrap(),
        };
        let old = TenantProfile::of(&meta(&json)).unwrap();
        assert_eq!(old, profile);
        assert_eq!(old.isolation, IsolationLevel::Shared);
        // A partition tenant with its own parameters: pinned form, and it reads back.
        let partition = TenantProfile {
            isolation: IsolationLevel::Partition,
            index_params: Some(IndexParams {
                m: Some(32),
                ef_construction: None,
                ef_search: Some(100),
            }),
            ..TenantProfile::default()
        };
        let json = serde_json::to_string(&partition.to_map()).unwrap();
        assert_eq!(
            json,
            r#"{"deleted_at":null,"display_name":null,"index_params":{"ef_construction":null,"ef_search":100,"m":32},"isolation":"partition","limits":{"burst":null,"max_collections":null,"max_concurrent":null,"max_qps":null,"max_spreading_depth":null,"max_storage_bytes":null,"max_vectors":null},"status":"active","weight":1}"#
        );
        assert_eq!(TenantProfile::of(&meta(&json)).unwrap(), partition);
        // Closed: an unknown level or a malformed parameter is an error, never `shared`.
        for bad in [
            json.replace("\"partition\"", "\"isolated\""),
            json.replace("\"m\":32", "\"m\":\"x\""),
            json.replace("\"m\":32", "\"connectivity\":32"),
        ] {
            assert!(TenantProfile::of(&meta(&bad)).is_err(), "{bad}");
        }
        let usage = Usage {
            records: 1,
            vectors: 2,
            storage_bytes: 3,
        };
        assert_eq!(
            encode_json(&usage).unwrap(),
            b"\x01{\"records\":1,\"vectors\":2,\"storage_bytes\":3}"
        );
        assert_eq!(
            decode_json::<Usage>(b"{\"records\":1,\"vectors\":2,\"storage_bytes\":3}").unwrap(),
            usage
        );
    }
}

#[cfg(test)]
mod record_bytes_tests {
    use super::*;
    use serde_json::json;
    use strata_types::{CollectionName, Confidence, Domain, RecordId, UserToken};

    fn record(metadata: Value) -> Record {
        Record {
            id: RecordId::parse("r1").unwrap(),
            modality: CollectionName::parse("text").unwrap(),
            kind: None,
            content: Some("green tea in the morning".into()),
            vector: Some(vec![0.5; 8]),
            user_tokens: vec![UserToken::parse("u:a").unwrap()],
            memory_domain: Domain::default_domain(),
            run_id: None,
            memory_scope: None,
            metadata: metadata.as_object().cloned().unwrap(),
            created_at: 1,
            updated_at: 1,
            expires_at: None,
            confidence: Confidence::initial(0.5),
        }
    }

    /// `record_bytes` as it was, building the metadata's text.
    fn old_record_bytes(r: &Record) -> u64 {
        let metadata = serde_json::to_vec(&r.metadata).map_or(0, |v| v.len());
        let tokens: usize = r.user_tokens.iter().map(|t| t.as_str().len()).sum();
        (r.id.as_str().len()
            + r.content.as_ref().map_or(0, String::len)
            + r.vector.as_ref().map_or(0, |v| v.len() * 4)
            + metadata
            + tokens
            + 64) as u64
    }

    const METADATA: [&str; 3] = [
        r#"{}"#,
        r#"{"topic": "tea", "n": 3, "tags": ["a", "b"], "x": {"y": null}}"#,
        r#"{"naïve \"quoted\"": "line\nbreak ✓", "f": 0.1}"#,
    ];

    #[test]
    fn a_record_is_charged_what_it_was_charged_before() {
        for metadata in METADATA {
            let r = record(serde_json::from_str(metadata).unwrap());
            assert_eq!(record_bytes(&r), old_record_bytes(&r));
        }
        // Pinned: id 2 + content 24 + vector 32 + `{}` 2 + token 3 + 64.
        assert_eq!(record_bytes(&record(json!({}))), 127);
    }

    #[test]
    fn a_record_encoded_before_its_transaction_is_charged_the_same() {
        for metadata in METADATA {
            let r = record(serde_json::from_str(metadata).unwrap());
            let encoded = strata_store::codec::MetadataJson::of(&r.metadata).unwrap();
            assert_eq!(record_bytes_with(&r, encoded.len()), record_bytes(&r));
        }
    }
}
