//! The tenant hierarchy (organisation → team): each tenant may have one `parent`, set only by
//! the operator, at creation or by updating the tenant.
//!
//! The hierarchy grants nothing by itself. Its one effect is on shares published "to all
//! children" (`crate::shares`): a tenant whose `parent` is the owner is a grantee of them for
//! as long as it stays the owner's child. A parent that is suspended or (soft-)deleted is not
//! live, so its grants stop working at once, children's own data untouched; purging a parent
//! clears its children's `parent`, so a tenant later created with the same id never inherits
//! them.

use serde::Serialize;
use strata_auth::OperatorScope;
use strata_store::{Reads, Writer};
use strata_types::TenantId;

use crate::lifecycle::{TenantProfile, TenantStatus};
use crate::{Engine, EngineError};

/// How deep a hierarchy may be; guards the walk up to the root against a corrupt loop.
const MAX_DEPTH: usize = 64;

/// One tenant in the tree, for the admin API and `strata tenant tree`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TenantNode {
    pub id: TenantId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<TenantId>,
    /// Its direct children, by id.
    pub children: Vec<TenantId>,
}

/// Checks that `child` may get `parent`: another tenant, registered and not deleted, and not
/// one of `child`'s own descendants (no cycles). Errors name the `parent` field.
pub(crate) fn check_parent(
    r: &impl Reads,
    child: &TenantId,
    parent: &TenantId,
) -> Result<(), EngineError> {
    if parent == child {
        return Err(EngineError::BadRequest(
            "parent: a tenant cannot be its own parent".into(),
        ));
    }
    let mut at = parent.clone();
    for _ in 0..MAX_DEPTH {
        let meta = r.tenant(&at)?.ok_or_else(|| {
            EngineError::BadRequest(format!("parent: tenant {at} does not exist"))
        })?;
        let profile = TenantProfile::of(&meta)?;
        if at == *parent && profile.status == TenantStatus::Deleted {
            return Err(EngineError::BadRequest(format!(
                "parent: tenant {parent} is deleted"
            )));
        }
        match profile.parent {
            Some(up) if up == *child => {
                return Err(EngineError::BadRequest(format!(
                    "parent: {parent} is a descendant of {child}; the hierarchy would have a cycle"
                )));
            }
            Some(up) => at = up,
            None => return Ok(()),
        }
    }
    Err(EngineError::BadRequest(format!(
        "parent: the hierarchy above {parent} is deeper than {MAX_DEPTH}"
    )))
}

/// Whether tenant `meta`'s stored profile names `id` as its parent, read from that one field:
/// another field of the profile that does not decode (damage, a newer version) does not hide a
/// child from its parent's purge or listing, nor stop either for every other tenant.
pub(crate) fn names_parent(meta: &strata_store::TenantMeta, id: &TenantId) -> bool {
    meta.profile
        .get("parent")
        .and_then(serde_json::Value::as_str)
        == Some(id.as_str())
}

/// The direct children of `id`, in id order. Scans the registry: the hierarchy is an operator
/// view, read rarely.
pub(crate) fn children(r: &impl Reads, id: &TenantId) -> Result<Vec<TenantId>, EngineError> {
    let mut out = Vec::new();
    for meta in r.tenants()? {
        if names_parent(&meta, id) {
            out.push(meta.id);
        }
    }
    Ok(out)
}

/// Clears the `parent` of every child of `id`, inside the purge of `id`. A child whose profile
/// does not decode loses its parent too, that field alone cleared (the rest is left for the
/// operator to repair): a parent pointer left behind would name whichever tenant is created
/// under the purged id next.
pub(crate) fn orphan_children(w: &mut Writer<'_>, id: &TenantId) -> Result<(), EngineError> {
    for mut meta in w.tenants()? {
        if !names_parent(&meta, id) {
            continue;
        }
        match TenantProfile::of(&meta) {
            Ok(mut profile) => {
                profile.parent = None;
                meta.profile = profile.to_map_at(strata_types::now_millis());
            }
            Err(_) => {
                meta.profile
                    .insert("parent".into(), serde_json::Value::Null);
            }
        }
        w.put_tenant(&meta)?;
    }
    Ok(())
}

impl Engine {
    /// Every tenant with its parent and children, in id order.
    pub fn tenant_tree(&self, _op: &OperatorScope) -> Result<Vec<TenantNode>, EngineError> {
        let mut nodes = std::collections::BTreeMap::new();
        for meta in self.store.read()?.tenants()? {
            // The parent field alone (as `names_parent` reads it): one tenant's damaged
            // profile does not hide the whole tree.
            let parent = meta
                .profile
                .get("parent")
                .and_then(serde_json::Value::as_str)
                .and_then(|p| TenantId::parse(p).ok());
            nodes.insert(
                meta.id.clone(),
                TenantNode {
                    id: meta.id,
                    parent,
                    children: Vec::new(),
                },
            );
        }
        let links: Vec<(TenantId, TenantId)> = nodes
            .values()
            .filter_map(|n| n.parent.clone().map(|p| (p, n.id.clone())))
            .collect();
        for (parent, child) in links {
            if let Some(p) = nodes.get_mut(&parent) {
                p.children.push(child);
            }
        }
        // Ids come out of the map in order, and children were pushed in that order.
        let nodes: Vec<TenantNode> = nodes.into_values().collect();
        Ok(nodes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, Value};
    use strata_store::TenantKey;

    fn meta(profile: &str) -> strata_store::TenantMeta {
        let map: Map<String, Value> = serde_json::from_str(profile).unwrap();
        strata_store::TenantMeta {
            id: TenantId::parse("team").unwrap(),
            key: TenantKey::SERVER,
            created_at: 1,
            profile: map,
        }
    }

    /// A profile stored before the hierarchy existed (no `parent`) is a tenant without one;
    /// a parent is stored as one more field, and an ill-formed one is corrupt, never `None`.
    #[test]
    fn profile_parent_is_pinned_and_decodes_closed() {
        // As stored (the profile map keeps its keys sorted).
        const OLD: &str = r#"{"deleted_at":null,"display_name":null,"limits":{"burst":null,"max_collections":null,"max_concurrent":null,"max_qps":null,"max_spreading_depth":null,"max_storage_bytes":null,"max_vectors":null},"status":"active","weight":1}"#;
        const CHILD: &str = r#"{"deleted_at":null,"display_name":null,"limits":{"burst":null,"max_collections":null,"max_concurrent":null,"max_qps":null,"max_spreading_depth":null,"max_storage_bytes":null,"max_vectors":null},"parent":"org","status":"active","weight":1}"#;
        let old = TenantProfile::of(&meta(OLD)).unwrap();
        assert_eq!(old.parent, None);
        assert_eq!(serde_json::to_string(&old.to_map()).unwrap(), OLD);
        let child = TenantProfile {
            parent: Some(TenantId::parse("org").unwrap()),
            ..old
        };
        assert_eq!(serde_json::to_string(&child.to_map()).unwrap(), CHILD);
        assert_eq!(TenantProfile::of(&meta(CHILD)).unwrap(), child);
        let bad = CHILD.replace(r#""org""#, r#""not a name""#);
        assert!(TenantProfile::of(&meta(&bad)).is_err());
    }
}
