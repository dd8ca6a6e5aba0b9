//! The tenant registry, as the operator sees it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use strata_auth::{OperatorScope, TenantScope};
use strata_store::{Reads, StoreError, TenantKey, TenantMeta, Vacuumed, Writer};
use strata_types::{Collection, Millis, TenantId, now_millis};

use crate::integrity::{IntegrityPolicy, IntegrityPolicyInput};
use crate::isolation::{IndexParams, IsolationLevel};
use crate::lifecycle::{TenantLimits, TenantProfile, TenantStatus, init_usage, usage};
use crate::vacuum_record::{Erasure, VacuumFigures};
use crate::{Engine, EngineError};
use crate::{audit, hierarchy, tenant_metadata};

/// A tenant as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TenantInfo {
    pub id: TenantId,
    pub display_name: Option<String>,
    #[schema(value_type = i64)]
    pub created_at: Millis,
    /// When its registry entry last changed (profile, limits, status, level, metadata); its
    /// creation time until then, and for entries stored before this was kept.
    #[schema(value_type = i64)]
    pub updated_at: Millis,
    pub status: TenantStatus,
    /// When it was soft-deleted; it is purged once the retention period has passed.
    #[schema(value_type = Option<i64>)]
    pub deleted_at: Option<Millis>,
    pub limits: TenantLimits,
    pub weight: u32,
    /// Its isolation level (`shared` unless created at or migrated to another).
    pub isolation: IsolationLevel,
    /// Its own graph parameters, if any (used at `partition` and `dedicated`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index_params: Option<IndexParams>,
    /// Filled in by [`Engine::tenant`]; lists leave it out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<TenantUsage>,
    /// Its parent tenant, if any (see `docs/shared-knowledge.md`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub parent: Option<TenantId>,
    /// Its direct children; filled in by [`Engine::tenant`], lists leave it out.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<String>>)]
    pub children: Option<Vec<TenantId>>,
    /// Its own integrity thresholds, if the operator set any; absent: the configuration's
    /// (`GET .../integrity` shows the policy in force and where it comes from). Also left
    /// out when its stored policy is unreadable (logged; the tenant's requests are refused
    /// until `PATCH` with `integrity_policy: null` or a valid policy replaces it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub integrity_policy: Option<IntegrityPolicy>,
    /// The operator's metadata of the tenant (a JSON object, `{}` if none); filled in by
    /// [`Engine::tenant`], creation and [`Engine::update_tenant`], left out of lists (which
    /// would otherwise carry up to 16 KiB per tenant) and of everything a tenant sees. Also
    /// left out when its stored row is damaged (logged, and named by verify): `PATCH` with
    /// `metadata: null` then clears it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
}

/// A tenant's usage against its quotas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TenantUsage {
    pub records: u64,
    pub vectors: u64,
    pub storage_bytes: u64,
    pub collections: u64,
}

impl TryFrom<&TenantMeta> for TenantInfo {
    type Error = EngineError;
    fn try_from(m: &TenantMeta) -> Result<Self, EngineError> {
        Ok(TenantInfo::of(m, TenantProfile::of(m)?))
    }
}

impl TenantInfo {
    /// Tenant `m` described from its profile `p`, decoded from it already.
    pub(crate) fn of(m: &TenantMeta, p: TenantProfile) -> TenantInfo {
        let integrity_policy = policy_for_display(&p, &m.id);
        TenantInfo {
            id: m.id.clone(),
            display_name: p.display_name,
            created_at: m.created_at,
            updated_at: p.updated_at.unwrap_or(m.created_at),
            status: p.status,
            deleted_at: p.deleted_at,
            limits: p.limits,
            weight: p.weight,
            isolation: p.isolation,
            index_params: p.index_params,
            usage: None,
            parent: p.parent,
            children: None,
            integrity_policy,
            metadata: None,
        }
    }
}

/// Changes to a tenant's profile; absent fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TenantUpdate {
    /// The new display name; `null` removes it. Absent: unchanged.
    #[serde(deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub display_name: Option<Option<String>>,
    pub limits: Option<TenantLimits>,
    pub weight: Option<u32>,
    /// The new parent tenant; `null` removes it. Absent: unchanged.
    #[serde(deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub parent: Option<Option<TenantId>>,
    /// A JSON merge patch (RFC 7396) of the metadata: named keys change, a `null` removes
    /// one, the others stay; `null` removes it all. Absent: unchanged.
    #[serde(deserialize_with = "present")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// The tenant's own integrity thresholds: fields left out keep the values of the policy
    /// in force (its own, else the configuration's); `null` clears them (the configuration's
    /// apply again) without reading the stored one. Absent: unchanged.
    #[serde(deserialize_with = "present")]
    pub integrity_policy: Option<Option<IntegrityPolicyInput>>,
    /// A JSON merge patch of the limits (named limits change, `null` removes one), applied to
    /// the limits as stored, in the update's own transaction: two operators patching different
    /// limits of one tenant at once both keep their change (read first and written whole,
    /// one was lost). The API's `PATCH`; `limits` replaces them whole.
    #[serde(skip)]
    pub limits_patch: Option<Map<String, Value>>,
}

/// `limits` with the merge patch `patch` applied (see [`TenantUpdate::limits_patch`]).
fn merge_limits(
    limits: &TenantLimits,
    patch: &Map<String, Value>,
) -> Result<TenantLimits, EngineError> {
    serde_json::from_value(Value::Object(limits_merged(limits, patch)))
        .map_err(|e| EngineError::BadRequest(format!("limits: {e}")))
}

/// `limits` as a JSON object with the merge patch `patch` applied, not yet read back (the
/// API reads it to name a bad field; the engine to apply it).
pub fn limits_merged(limits: &TenantLimits, patch: &Map<String, Value>) -> Map<String, Value> {
    let mut merged = match serde_json::to_value(limits) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    for (k, v) in patch {
        // A removed limit serialises as `null`, which reads back as "no limit".
        merged.insert(k.clone(), v.clone());
    }
    merged
}

/// A field that is present, even as `null` (`Some(None)`), told from an absent one (`None`).
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// The stored form of an operator's policy completed from `base`, validated first.
fn own_policy(
    input: &IntegrityPolicyInput,
    base: &IntegrityPolicy,
) -> Result<serde_json::Value, EngineError> {
    let policy = input.complete(base);
    policy
        .validate_new()
        .map_err(|e| EngineError::BadRequest(format!("integrity_policy.{e}")))?;
    Ok(crate::integrity::encode_stored(&policy))
}

/// A tenant's own policy for an admin answer: left out (logged) when unreadable, so that
/// one damaged policy fails no answer about the tenant or any other.
fn policy_for_display(p: &TenantProfile, id: &TenantId) -> Option<IntegrityPolicy> {
    match p.own_integrity_policy(id) {
        Ok(policy) => policy,
        Err(e) => {
            tracing::warn!(tenant = %id, error = %e, "integrity policy left out: unreadable");
            None
        }
    }
}

const MAX_DISPLAY_NAME: usize = 256;

/// A new tenant as the operator describes it; absent fields take the defaults (`shared`, no
/// limits, weight 1, no parent).
#[derive(Debug, Clone, Default)]
pub struct NewTenantSpec {
    pub display_name: Option<String>,
    pub isolation: IsolationLevel,
    pub index_params: Option<IndexParams>,
    pub parent: Option<TenantId>,
    pub limits: Option<TenantLimits>,
    pub weight: Option<u32>,
    /// The operator's metadata (bounded, see `crate::tenant_metadata`).
    pub metadata: Option<Map<String, Value>>,
    /// Its own integrity thresholds (absent: the configuration's); fields left out take the
    /// configuration's values for it.
    pub integrity_policy: Option<IntegrityPolicyInput>,
}

/// Lowest `limits.max_qps`: one request in about 17 minutes.
const MIN_QPS: f64 = 0.001;
/// Highest `limits.max_qps`.
const MAX_QPS: f64 = 1e9;

/// The checks a profile's operator-given fields pass, at creation and on update alike.
/// A display name fits its bound (the one check an import makes of it, see `transfer`).
pub(crate) fn check_display_name_length(display_name: Option<&str>) -> Result<(), EngineError> {
    if display_name.is_some_and(|n| n.len() > MAX_DISPLAY_NAME) {
        return Err(EngineError::BadRequest(format!(
            "display_name: at most {MAX_DISPLAY_NAME} bytes"
        )));
    }
    Ok(())
}

/// A `burst` is the size of the `max_qps` token bucket: without a rate there is no bucket
/// (`crates/api/src/admission.rs` admits every request), so a burst alone would be stored and
/// shown, yet never hold. An update's limits are whole (the API merges a `PATCH` into the
/// limits in force first), so one that removes `max_qps` while a burst stays is refused here
/// too: clearing the burst behind the operator's back would surprise more than a 400 that says
/// to remove both.
/// Imports skip this check (`transfer`): exports of earlier versions may carry such limits,
/// which are kept as they were, still without effect.
fn check_burst_has_rate(limits: Option<&TenantLimits>) -> Result<(), EngineError> {
    if limits.is_some_and(|l| l.burst.is_some() && l.max_qps.is_none()) {
        return Err(EngineError::BadRequest(
            "limits.burst: needs limits.max_qps (a burst is the size of its token bucket)".into(),
        ));
    }
    Ok(())
}

pub(crate) fn check_profile_fields(
    display_name: Option<&str>,
    weight: Option<u32>,
    limits: Option<&TenantLimits>,
) -> Result<(), EngineError> {
    check_display_name_length(display_name)?;
    // Shown in listings, logs and the dashboard: as a JWT's subject, nothing that could
    // forge or hide text there (a newline, a NUL, a bidirectional override).
    if display_name.is_some_and(|n| n.chars().any(strata_types::forges_text)) {
        return Err(EngineError::BadRequest(
            "display_name: no control, zero-width or bidirectional formatting characters".into(),
        ));
    }
    if weight == Some(0) {
        return Err(EngineError::BadRequest("weight: must be at least 1".into()));
    }
    // Bounded both ways: a subnormal rate would make one request's wait overflow every
    // clock, and a rate past any server's reach is no limit at all (`null` says that).
    if limits
        .and_then(|l| l.max_qps)
        .is_some_and(|q| !(MIN_QPS..=MAX_QPS).contains(&q))
    {
        return Err(EngineError::BadRequest(format!(
            "limits.max_qps: must be between {MIN_QPS} and {MAX_QPS} requests per second \
             (null removes the limit)"
        )));
    }
    // Zero would not mean "no limit" but "nothing, ever": every request of the tenant refused.
    // A limit is removed with `null`.
    for (name, value) in [
        ("burst", limits.and_then(|l| l.burst)),
        ("max_concurrent", limits.and_then(|l| l.max_concurrent)),
    ] {
        if value == Some(0) {
            return Err(EngineError::BadRequest(format!(
                "limits.{name}: must be at least 1 (null removes the limit)"
            )));
        }
    }
    // No recall spreads further than this, whatever the limit says: a larger one would be
    // stored and shown, yet never hold.
    if let Some(depth) = limits.and_then(|l| l.max_spreading_depth)
        && depth > strata_types::MAX_RECALL_DEPTH
    {
        return Err(EngineError::BadRequest(format!(
            "limits.max_spreading_depth: at most {} hops, the deepest any recall spreads \
             (null: the default, {})",
            strata_types::MAX_RECALL_DEPTH,
            strata_types::DEFAULT_MAX_SPREADING_DEPTH
        )));
    }
    Ok(())
}

impl Engine {
    /// Registers a tenant and creates the server's default collections for it.
    pub fn create_tenant(
        &self,
        op: &OperatorScope,
        id: &TenantId,
        display_name: Option<String>,
    ) -> Result<TenantInfo, EngineError> {
        self.create_tenant_at(op, id, display_name, IsolationLevel::Shared, None)
    }

    /// [`Engine::create_tenant`] at an isolation level, with its own graph parameters.
    pub fn create_tenant_at(
        &self,
        op: &OperatorScope,
        id: &TenantId,
        display_name: Option<String>,
        isolation: IsolationLevel,
        index_params: Option<IndexParams>,
    ) -> Result<TenantInfo, EngineError> {
        self.create_tenant_under(op, id, display_name, isolation, index_params, None)
    }

    /// [`Engine::create_tenant_at`] as a child of `parent` (which must exist).
    pub fn create_tenant_under(
        &self,
        op: &OperatorScope,
        id: &TenantId,
        display_name: Option<String>,
        isolation: IsolationLevel,
        index_params: Option<IndexParams>,
        parent: Option<TenantId>,
    ) -> Result<TenantInfo, EngineError> {
        let spec = NewTenantSpec {
            display_name,
            isolation,
            index_params,
            parent,
            ..NewTenantSpec::default()
        };
        self.create_tenant_with(op, id, spec)
    }

    /// Registers a tenant as `spec` describes it, limits and weight included, in one
    /// transaction: there is no moment at which it exists without its limits.
    pub fn create_tenant_with(
        &self,
        op: &OperatorScope,
        id: &TenantId,
        spec: NewTenantSpec,
    ) -> Result<TenantInfo, EngineError> {
        let NewTenantSpec {
            display_name,
            isolation,
            index_params,
            parent,
            limits,
            weight,
            metadata,
            integrity_policy,
        } = spec;
        if let Some(p) = &index_params {
            p.validate()?;
        }
        check_profile_fields(display_name.as_deref(), weight, limits.as_ref())?;
        check_burst_has_rate(limits.as_ref())?;
        // Every tenant is created with the server's default collections: a quota below them
        // would start it past its own limit.
        let defaults = self.config.default_collections.len() as u64;
        if let Some(max) = limits.as_ref().and_then(|l| l.max_collections)
            && max < defaults
        {
            return Err(EngineError::BadRequest(format!(
                "limits.max_collections: {max} is below the {defaults} collections every tenant \
                 is created with (the server's default collections)"
            )));
        }
        let integrity_policy = integrity_policy
            .map(|input| own_policy(&input, self.config.integrity.configured(id)))
            .transpose()?;
        let metadata = metadata.unwrap_or_default();
        tenant_metadata::check(&metadata)?;
        // A JWT minted for an incarnation purged just before must not match this one.
        self.recent_purges.wait_to_create(id)?;
        let now = now_millis();
        let create = |w: &mut Writer<'_>| {
            if w.tenant(id)?.is_some() {
                return Err(EngineError::TenantExists(id.clone()));
            }
            if let Some(p) = &parent {
                hierarchy::check_parent(w, id, p)?;
            }
            let defaults = TenantProfile::default();
            let profile = TenantProfile {
                display_name,
                parent,
                isolation,
                index_params: index_params.filter(|p| !p.is_empty()),
                limits: limits.unwrap_or(defaults.limits.clone()),
                weight: weight.unwrap_or(defaults.weight),
                integrity_policy,
                ..defaults
            };
            // Its `updated_at` is its creation time until it changes.
            let meta = w.create_tenant(id, now, profile.to_map_at(now))?;
            init_usage(w, meta.key)?;
            w.put_tenant_metadata(meta.key, &metadata)?;
            let mut event = audit::operator_event(op, id, "tenant.create");
            if !isolation.is_shared() {
                // A level other than the default is a level change: the operator's log has it
                // too.
                event.detail = serde_json::json!({
                    "isolation": isolation,
                    "index_params": profile.index_params,
                });
                audit::append_to_both(w, meta.key, event)?;
            } else {
                audit::append(w, meta.key, event)?;
            }
            for c in &self.config.default_collections {
                let collection = Collection {
                    name: c.name.clone(),
                    dim: c.dim,
                    metric: c.metric,
                    created_at: now,
                    // Tenants created while the server runs without an embedder get a text
                    // collection without one: their text is searched by BM25 only.
                    embedder: self.loaded_embedder().filter(|_| c.embed).map(|(_, id)| id),
                    analyzer: c.analyzer,
                    memory: Default::default(),
                };
                w.put_collection(meta.key, &collection)?;
            }
            let mut info = TenantInfo::try_from(&meta)?;
            info.metadata = Some(metadata.clone());
            Ok::<_, EngineError>((info, meta.key))
        };
        if isolation == IsolationLevel::Dedicated {
            // Its own file exists, synced, before its registry row commits.
            self.store.write_creating_dedicated(create)
        } else {
            self.store.write(|w| create(w).map(|(info, _)| info))
        }
    }

    /// A tenant with its usage.
    pub fn tenant(&self, _op: &OperatorScope, id: &TenantId) -> Result<TenantInfo, EngineError> {
        let r = self.store.read()?;
        let meta = r
            .tenant(id)?
            .ok_or_else(|| EngineError::TenantNotFound(id.clone()))?;
        let u = usage(&r, meta.key)?;
        let mut info = TenantInfo::try_from(&meta)?;
        info.children = Some(hierarchy::children(&r, id)?);
        info.metadata = tenant_metadata::read_for_display(&r, id, meta.key)?;
        info.usage = Some(TenantUsage {
            records: u.records,
            vectors: u.vectors,
            storage_bytes: u.storage_bytes,
            collections: r.collections(meta.key)?.len() as u64,
        });
        Ok(info)
    }

    /// Changes a tenant's display name, limits, weight, parent, integrity policy or metadata,
    /// in one transaction.
    pub fn update_tenant(
        &self,
        op: &OperatorScope,
        id: &TenantId,
        update: TenantUpdate,
    ) -> Result<TenantInfo, EngineError> {
        check_profile_fields(
            update.display_name.as_ref().and_then(Option::as_deref),
            update.weight,
            update.limits.as_ref(),
        )?;
        check_burst_has_rate(update.limits.as_ref())?;
        // A `PATCH` moves `updated_at` when it changes the metadata, stored beside the
        // profile, even if nothing else.
        let (mut info, info_key) = self.change_profile_keyed(op, id, "tenant.update", |w, p| {
            if let Some(parent) = &update.parent {
                if let Some(parent) = parent {
                    hierarchy::check_parent(w, id, parent)?;
                }
                p.parent = parent.clone();
            }
            if let Some(n) = update.display_name {
                p.display_name = n;
            }
            if let Some(l) = update.limits {
                p.limits = l;
            }
            if let Some(patch) = &update.limits_patch {
                let merged = merge_limits(&p.limits, patch)?;
                check_profile_fields(None, None, Some(&merged))?;
                check_burst_has_rate(Some(&merged))?;
                p.limits = merged;
            }
            if let Some(weight) = update.weight {
                p.weight = weight;
            }
            match update.integrity_policy {
                None => {}
                // Removed without being read: the repair of an unreadable one.
                Some(None) => p.integrity_policy = None,
                Some(Some(input)) => {
                    // Completed from the policy in force; from the configuration's when the
                    // tenant's own is unreadable (this change replaces it).
                    let current = p.own_integrity_policy(id).ok().flatten();
                    let configured = self.config.integrity.configured(id);
                    let base = current.as_ref().unwrap_or(configured);
                    p.integrity_policy = Some(own_policy(&input, base)?);
                }
            }
            let mut beside = Vec::new();
            if let Some(patch) = update.metadata {
                let key = w
                    .tenant(id)?
                    .ok_or_else(|| EngineError::TenantNotFound(id.clone()))?
                    .key;
                if tenant_metadata::patch_stored(w, id, key, patch)? {
                    beside.push("metadata");
                }
            }
            Ok(beside)
        })?;
        info.metadata = tenant_metadata::read_for_display(&self.store.read()?, id, info_key)?;
        Ok(info)
    }
}

/// The names of the profile fields that differ (`updated_at` aside), in name order.
fn profile_changes(before: &TenantProfile, after: &TenantProfile) -> Vec<String> {
    let (before, after) = (before.to_map(), after.to_map());
    let mut changed: Vec<String> = after
        .iter()
        .filter(|(field, to)| before.get(*field).unwrap_or(&Value::Null) != *to)
        .map(|(field, _)| field.clone())
        .chain(before.keys().filter(|f| !after.contains_key(*f)).cloned())
        .filter(|field| field != "updated_at")
        .collect();
    changed.sort();
    changed
}

/// What changing a soft-deleted tenant's status or placement answers: it exists (listed as
/// `deleted`, restorable), so not a 404, but it must be restored first.
pub(crate) fn deleted(id: &TenantId) -> EngineError {
    EngineError::IdConflict(format!(
        "tenant {id} is deleted; restore it first (POST /v1/admin/tenants/{id}/restore)"
    ))
}

impl Engine {
    /// Refuses, as [`Engine::suspend_tenant`] does, to act for a soft-deleted tenant: for an
    /// operator's request that would otherwise quietly prepare one (a new key for it).
    pub fn refuse_if_deleted(&self, _op: &OperatorScope, id: &TenantId) -> Result<(), EngineError> {
        let meta = self.tenant_meta(id)?;
        if TenantProfile::of(&meta)?.status == TenantStatus::Deleted {
            return Err(deleted(id));
        }
        Ok(())
    }

    /// Suspends a tenant: every data operation then fails with `TENANT_SUSPENDED`; its data is
    /// kept.
    pub fn suspend_tenant(
        &self,
        op: &OperatorScope,
        id: &TenantId,
    ) -> Result<TenantInfo, EngineError> {
        self.change_profile(op, id, "tenant.suspend", |p| match p.status {
            TenantStatus::Deleted => Err(deleted(id)),
            _ => {
                p.status = TenantStatus::Suspended;
                Ok(())
            }
        })
    }

    /// Lifts a suspension.
    pub fn resume_tenant(
        &self,
        op: &OperatorScope,
        id: &TenantId,
    ) -> Result<TenantInfo, EngineError> {
        self.change_profile(op, id, "tenant.resume", |p| match p.status {
            TenantStatus::Deleted => Err(deleted(id)),
            // Half its data may be missing: it becomes active when its import completes.
            _ if p.importing => Err(EngineError::IdConflict(format!(
                "tenant {id} is being imported; it becomes active when the import completes"
            ))),
            _ => {
                p.status = TenantStatus::Active;
                Ok(())
            }
        })
    }

    /// Soft delete: the tenant is hidden from its credentials and restorable until
    /// [`Engine::purge_deleted_tenants`] finds its retention period over.
    pub fn delete_tenant(
        &self,
        op: &OperatorScope,
        id: &TenantId,
    ) -> Result<TenantInfo, EngineError> {
        let now = now_millis();
        let info = self.change_profile(op, id, "tenant.delete", |p| {
            // Deleting again keeps what the first delete found.
            if p.status != TenantStatus::Deleted {
                p.status_before_delete = Some(p.status);
            }
            p.status = TenantStatus::Deleted;
            p.deleted_at.get_or_insert(now);
            Ok(())
        })?;
        // Its loaded indexes serve nothing now: evictable like any idle tenant's.
        if let Ok(meta) = self.tenant_meta(id) {
            self.indexes.apply_profile(&self.store, meta.key);
        }
        Ok(info)
    }

    /// Undoes a soft delete: the tenant comes back with the status it had when deleted, so a
    /// suspension survives a delete and restore.
    pub fn restore_tenant(
        &self,
        op: &OperatorScope,
        id: &TenantId,
    ) -> Result<TenantInfo, EngineError> {
        let info = self.change_profile(op, id, "tenant.restore", |p| match p.status {
            // A delete made during an import wins (the import fails and discards it); bringing
            // the tenant back would serve its half-loaded data.
            TenantStatus::Deleted if p.importing => Err(EngineError::IdConflict(format!(
                "tenant {id} was deleted while being imported; import it again"
            ))),
            TenantStatus::Deleted => {
                p.status = match p.status_before_delete.take() {
                    Some(TenantStatus::Suspended) => TenantStatus::Suspended,
                    // Deleted before the status was kept: it was most likely active.
                    _ => TenantStatus::Active,
                };
                p.deleted_at = None;
                Ok(())
            }
            _ => Err(EngineError::BadRequest(format!(
                "tenant {id} is not deleted"
            ))),
        })?;
        if let Ok(meta) = self.tenant_meta(id) {
            self.indexes.apply_profile(&self.store, meta.key);
        }
        Ok(info)
    }

    /// Hard delete: erases its registry entry, then every byte of the tenant's data (in short
    /// transactions, at the start of the vacuum), and rewrites the main data file into a new
    /// one (the vacuum) so none of it remains on disk.
    /// Answers whether that rewrite ran ([`Erasure::Done`]) or is owed ([`Erasure::Pending`]:
    /// the erasure or the rewrite failed, a full disk say, and is retried; the tenant is
    /// unreachable either way, though its rows may still be in the file, not yet erased).
    pub fn purge_tenant(&self, op: &OperatorScope, id: &TenantId) -> Result<Erasure, EngineError> {
        let key = self.tenant_meta(id)?.key;
        self.purge_incarnation(op, id, key)
    }

    /// Purges tenant `id` only while it is still the incarnation stored under `key`: one
    /// purged and re-created meanwhile is left alone (`IdConflict`).
    pub(crate) fn purge_incarnation(
        &self,
        op: &OperatorScope,
        id: &TenantId,
        key: TenantKey,
    ) -> Result<Erasure, EngineError> {
        // Until it ends, and within the second it ends in, `id` is not created again.
        let _under_way = self.recent_purges.begin(id);
        self.erase_incarnation(op, id, key, None)?;
        let erasure = self.vacuum()?;
        self.note_purge_end(id);
        Ok(erasure)
    }

    /// [`Engine::purge_incarnation`] with its vacuum owed, not run: the erased bytes leave the
    /// data file when the background vacuum runs, soon after (`owed_compaction`). For the
    /// start, which must not wait for a rewrite of the whole file.
    pub(crate) fn purge_incarnation_vacuum_owed(
        &self,
        op: &OperatorScope,
        id: &TenantId,
        key: TenantKey,
    ) -> Result<(), EngineError> {
        let _under_way = self.recent_purges.begin(id);
        self.erase_incarnation(op, id, key, None)?;
        self.owed_compaction.owe(&self.store);
        self.note_purge_end(id);
        Ok(())
    }

    /// A purge without its vacuum, for a caller that purges several tenants and vacuums once.
    /// `deleted_at`: purge only a tenant still soft-deleted at that time (the retention sweep's
    /// condition, read before this; see [`Engine::purge_txn`]).
    pub(crate) fn erase_incarnation(
        &self,
        op: &OperatorScope,
        id: &TenantId,
        key: TenantKey,
        deleted_at: Option<Millis>,
    ) -> Result<(), EngineError> {
        let key = self
            .migrations
            .excluding(key, id, || self.purge_txn(op, id, key, deleted_at))?;
        // Its own file, if dedicated, goes whole once the registry no longer names it
        // (`erase_tenant` leaves it untouched, so that a crash cannot leave a registered
        // tenant without its data).
        self.forget_erased(key);
        Ok(())
    }

    /// The purge's transaction recorded its time before it committed; the end is later,
    /// perhaps in the next second, which a restart must also not create the id in.
    fn note_purge_end(&self, id: &TenantId) {
        if let Err(e) = self.store.write(|w| w.note_purge(now_millis())) {
            tracing::warn!(tenant = %id, error = %e, "the purge's end time was not recorded");
        }
    }

    /// The purge's one transaction: the tenant's registry entry, its credentials and the
    /// server log's rows about it go, and its data range is owed an erasure, which the vacuum
    /// after this commit runs in short transactions; the purge itself is logged. Returns its
    /// storage key, which must still be `key` (the incarnation the caller excluded migrations
    /// of). With `deleted_at`, the tenant must also still be soft-deleted since that time: the
    /// retention sweep chose it from an earlier read, and a restore (or a restore and a new
    /// delete, whose retention starts again) since then must keep it.
    fn purge_txn(
        &self,
        op: &OperatorScope,
        id: &TenantId,
        key: TenantKey,
        deleted_at: Option<Millis>,
    ) -> Result<TenantKey, EngineError> {
        self.store.write(|w| {
            let meta = w
                .tenant(id)?
                .ok_or_else(|| EngineError::TenantNotFound(id.clone()))?;
            if meta.key != key {
                return Err(EngineError::IdConflict(format!(
                    "tenant {id} was replaced during its purge; try again"
                )));
            }
            if let Some(at) = deleted_at {
                let p = TenantProfile::of(&meta)?;
                if p.status != TenantStatus::Deleted || p.deleted_at != Some(at) {
                    return Err(EngineError::IdConflict(format!(
                        "tenant {id} was restored since it was found due for purging"
                    )));
                }
            }
            let erased = erased_figures(w, id, meta.key)?;
            // Its data range is erased after this commits, in short transactions, by the
            // vacuum that follows (`Store::erase_owed_ranges`): nothing reaches it once its
            // registry row and credentials are gone, and the other tenants' writes do not
            // wait for the whole range under the write lock.
            w.unregister_tenant_owing_erasure(&meta)?;
            w.note_purge(now_millis())?;
            // Owed until the vacuum after this commit has run: a crash in between leaves the
            // erased bytes in the file, and the next start rewrites it without them.
            w.set_compaction_owed(true)?;
            hierarchy::orphan_children(w, id)?;
            // The tenant's own log is erased with it, and so are the server log's rows about
            // it; the purge itself (the id and how much was erased) is the server's to keep.
            audit::erase_server_rows_about(w, id)?;
            let mut event = audit::operator_event(op, id, "tenant.purge");
            event.detail = erased;
            audit::append(w, strata_store::TenantKey::SERVER, event)?;
            Ok::<_, EngineError>(meta.key)
        })
    }

    /// Purges every soft-deleted tenant whose deletion is older than `retention_ms`; returns
    /// those purged. One that cannot be purged now (a migration moves its data, or an error)
    /// is logged and left for the next run; the others are purged regardless. The main file
    /// is rewritten once, after the last of them, not once per tenant.
    pub fn purge_deleted_tenants(
        &self,
        op: &OperatorScope,
        retention_ms: Millis,
    ) -> Result<Vec<TenantId>, EngineError> {
        let now = now_millis();
        // Each with the incarnation and deletion time it was found due in: the purge checks
        // both again in its own transaction.
        let mut due = Vec::new();
        for m in self.store.read()?.tenants()? {
            // A profile that does not decode keeps only its own tenant from the sweep (its
            // deletion time is unknown); the others are purged when due.
            let p = match TenantProfile::of(&m) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(tenant = %m.id, error = %e, "retention sweep skipped a tenant");
                    continue;
                }
            };
            if p.status == TenantStatus::Deleted
                && let Some(at) = p.deleted_at
                && now.saturating_sub(at) >= retention_ms
            {
                due.push((m.id, m.key, at));
            }
        }
        // Until the vacuum has run, and within the second it ends in, no purged id is created
        // again.
        let mut under_way = Vec::new();
        // A tenant whose data a migration is moving answers 409: skipped until the next run,
        // the others purged regardless.
        let mut purged = Vec::new();
        for (id, key, deleted_at) in due {
            under_way.push(self.recent_purges.begin(&id));
            match self.erase_incarnation(op, &id, key, Some(deleted_at)) {
                Ok(()) => purged.push(id),
                Err(EngineError::IdConflict(why)) => {
                    tracing::info!(tenant = %id, %why, "purge skipped until the next run");
                }
                // Purged meanwhile (an operator's purge, another sweep): nothing left to do.
                Err(EngineError::TenantNotFound(_)) => {}
                Err(e) => {
                    tracing::warn!(tenant = %id, error = %e, "purge failed; tried again at the next run");
                }
            }
        }
        if let Some(last) = purged.last() {
            self.vacuum()?;
            self.note_purge_end(last);
        }
        drop(under_way);
        Ok(purged)
    }

    /// Rewrites the main file without what erasures left in it (`Store::vacuum`), or owes
    /// that to a thread that retries it (`owed_compaction`): answers which. Errors only when
    /// the file failed. The store settles the record of a vacuum owed itself, at its swap:
    /// clearing it here could clear the record of an erasure that committed during the copy,
    /// before that erasure's own vacuum (which follows this one) has run.
    pub(crate) fn vacuum(&self) -> Result<Erasure, EngineError> {
        let ticket = self.owed_compaction.ticket();
        match self.owed_compaction.record.vacuum(&self.store, "erasure") {
            Ok(Vacuumed::Done { settled }) => {
                // The store cleared its record of a vacuum owed (unless an erasure during the
                // copy set it again, whose own vacuum follows): so does the retrying thread.
                if settled {
                    self.owed_compaction.settled(ticket);
                }
                Ok(Erasure::Done)
            }
            // A failed data file will not vacuum later either.
            Err(e @ strata_store::StoreError::Unavailable(_)) => Err(e.into()),
            // Anything else (no room for the new file, say) is not retried at once: each try
            // copies the whole file.
            Err(e) => {
                tracing::warn!(error = %e, "vacuum failed; it is tried again later");
                self.owed_compaction.owe(&self.store);
                Ok(Erasure::Pending)
            }
        }
    }

    /// Vacuums since the engine opened, and whether an erasure's rewrite is owed now.
    pub fn vacuum_figures(&self) -> VacuumFigures {
        self.owed_compaction.figures()
    }

    fn change_profile(
        &self,
        op: &OperatorScope,
        id: &TenantId,
        action: &str,
        f: impl FnOnce(&mut TenantProfile) -> Result<(), EngineError>,
    ) -> Result<TenantInfo, EngineError> {
        // A status change that changes nothing (resuming an active tenant, suspending a
        // suspended one) is idempotent: it keeps `updated_at`.
        self.change_profile_keyed(op, id, action, |_, p| f(p).map(|()| Vec::new()))
            .map(|(info, _)| info)
    }

    /// [`Engine::change_profile`] with the transaction, for changes checked against other
    /// tenants (a new parent) or beside the profile (metadata: `f` returns the names of what
    /// it changed there); also returns the storage key. A change that leaves the profile and
    /// everything beside it as they were is not written (its `updated_at` kept). The audit
    /// row names the profile fields that changed, not their values: it is in the tenant's own
    /// log, which the tenant reads, and the operator's metadata is never the tenant's to see
    /// (nor that it changed: it is not named there).
    /// Reads nothing but the registry row: a damaged row beside it (metadata) must not block
    /// a suspension, a deletion or a limits change.
    fn change_profile_keyed(
        &self,
        op: &OperatorScope,
        id: &TenantId,
        action: &str,
        f: impl FnOnce(&mut Writer<'_>, &mut TenantProfile) -> Result<Vec<&'static str>, EngineError>,
    ) -> Result<(TenantInfo, TenantKey), EngineError> {
        self.store
            .write(|w| {
                let mut meta = w
                    .tenant(id)?
                    .ok_or_else(|| EngineError::TenantNotFound(id.clone()))?;
                let before = TenantProfile::of(&meta)?;
                let mut profile = before.clone();
                let beside = f(w, &mut profile)?;
                let changed = profile_changes(&before, &profile);
                if !beside.is_empty() || !changed.is_empty() {
                    meta.profile = profile.to_map_at(now_millis());
                    w.put_tenant(&meta)?;
                }
                let mut event = audit::operator_event(op, id, action);
                event.detail = serde_json::json!({ "changed": changed });
                audit::append(w, meta.key, event)?;
                Ok((TenantInfo::try_from(&meta)?, meta.key))
            })
            .inspect(|(_, key)| self.admissions.invalidate(*key))
    }

    /// Every tenant, from one snapshot; without metadata (see [`TenantInfo::metadata`]).
    pub fn tenants(&self, _op: &OperatorScope) -> Result<Vec<TenantInfo>, EngineError> {
        self.store
            .read()?
            .tenants()?
            .iter()
            .map(TenantInfo::try_from)
            .collect()
    }

    /// The registry entry the authentication layer builds scopes from.
    pub fn tenant_meta(&self, id: &TenantId) -> Result<TenantMeta, EngineError> {
        self.store
            .read()?
            .tenant(id)?
            .ok_or_else(|| EngineError::TenantNotFound(id.clone()))
    }
}

/// The tenant's profile, if it may be served: it must still be registered under the same
/// storage key (not purged, or purged and re-created, since the credential was checked), not
/// soft-deleted, and not suspended.
pub(crate) fn check_live(
    r: &impl Reads,
    scope: &TenantScope,
) -> Result<TenantProfile, EngineError> {
    match r.tenant(scope.tenant())? {
        Some(meta) if meta.key == scope.key() => {
            let profile = TenantProfile::of(&meta)?;
            match profile.status {
                TenantStatus::Active => Ok(profile),
                TenantStatus::Suspended => {
                    Err(EngineError::TenantSuspended(scope.tenant().clone()))
                }
                TenantStatus::Deleted => Err(EngineError::TenantNotFound(scope.tenant().clone())),
            }
        }
        _ => Err(EngineError::TenantNotFound(scope.tenant().clone())),
    }
}

impl Engine {
    /// Drops everything held in memory for a tenant whose rows were just erased, and deletes
    /// its files. The erase has committed: a file that cannot be deleted now (or a crash
    /// before this) is an orphan, deleted at the next start.
    pub(crate) fn forget_erased(&self, key: strata_store::TenantKey) {
        self.indexes.forget(key);
        self.migrations.forget(key, None);
        self.adaptive.forget_tenant(key);
        self.admissions.invalidate(key);
        let _ = self.store.remove_dedicated(key);
        let _ = self.store.remove_derived(key);
    }
}

/// What a purge's audit row says was erased: the records and storage bytes of the tenant's
/// usage. A usage row that does not decode does not stop the erasure (it is part of what is
/// erased): the row says `"usage": "unreadable"` and the log warns. Any other error (the file
/// failed) stops the purge.
fn erased_figures(
    w: &Writer<'_>,
    id: &TenantId,
    key: TenantKey,
) -> Result<serde_json::Value, EngineError> {
    match usage(w, key) {
        Ok(u) => Ok(serde_json::json!({
            "records": u.records,
            "storage_bytes": u.storage_bytes,
        })),
        // A figure of the audit row never stops a purge, the operator's way out of a damaged
        // tenant: a usage row that does not decode, or a dedicated tenant's own file that
        // failed (which the purge deletes whole). A failure of the main file surfaces in the
        // erasure's own writes.
        Err(e) => {
            let corrupt = matches!(e, StoreError::Corrupt(_));
            tracing::warn!(tenant = %id, error = %e, corrupt, "a purged tenant's usage could \
                not be read; its audit row says so");
            Ok(serde_json::json!({"usage": "unreadable"}))
        }
    }
}
