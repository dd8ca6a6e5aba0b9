//! The ids a new tenant may not take: those the admin routes could not name afterwards.

use strata_types::TenantId;

use crate::ApiError;

/// `.` and `..` are dot segments, which clients (and the CLI) remove from a URL before it is
/// sent, so `/v1/admin/tenants/..` never reaches the tenant. Every other entry is a literal
/// segment at the `{id}` position of `/v1/admin/tenants/...`: a path naming such a tenant
/// reaches that route instead (`GET` and `DELETE` of `/v1/admin/tenants/purge-deleted`
/// answer 405). The test below keeps the list equal to the router's literal segments there.
pub(crate) const UNROUTABLE_TENANT_IDS: &[&str] = &[".", "..", "purge-deleted"];

/// The id of a tenant about to be created (`POST /v1/admin/tenants`, an import), refused
/// with `400 BAD_REQUEST` naming `id` when no admin route could name it. Only creation
/// checks: a tenant that already has such an id (made before this check) keeps being served
/// where it can be.
pub(crate) fn new_tenant_id(id: String) -> Result<TenantId, ApiError> {
    let id = TenantId::parse_field("id", id).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    if UNROUTABLE_TENANT_IDS.contains(&id.as_str()) {
        return Err(ApiError::BadRequest(format!(
            "id: {:?} is reserved: the admin routes could not name a tenant of that id",
            id.as_str()
        )));
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// A route added at the `{id}` position (say `/v1/admin/tenants/stats`) must be added to
    /// the list, and a route removed taken out of it.
    #[test]
    fn the_reserved_ids_are_the_routers_literal_segments_and_the_dot_segments() {
        let literal: BTreeSet<String> = crate::router::served_routes()
            .into_iter()
            .filter_map(|(_, path)| {
                let seg = path.strip_prefix("/v1/admin/tenants/")?.split('/').next()?;
                (!seg.starts_with('{')).then(|| seg.to_owned())
            })
            .collect();
        let listed: BTreeSet<String> = UNROUTABLE_TENANT_IDS
            .iter()
            .filter(|id| !matches!(**id, "." | ".."))
            .map(|id| (*id).to_owned())
            .collect();
        assert_eq!(literal, listed);
    }

    /// Record ids are reserved the same way, in `strata_types` (a write's body refuses them
    /// as it is parsed): the literal segments at `/v1/memories/{id}` and the dot segments.
    #[test]
    fn the_reserved_record_ids_are_the_routers_literal_segments_and_the_dot_segments() {
        let literal = |prefix: &str| -> BTreeSet<String> {
            crate::router::served_routes()
                .into_iter()
                .filter_map(|(_, path)| {
                    let seg = path.strip_prefix(prefix)?.split('/').next()?;
                    (!seg.starts_with('{')).then(|| seg.to_owned())
                })
                .collect()
        };
        let listed: BTreeSet<String> = strata_types::RESERVED_RECORD_IDS
            .iter()
            .filter(|id| !matches!(**id, "." | ".."))
            .map(|id| (*id).to_owned())
            .collect();
        assert_eq!(literal("/v1/memories/"), listed);
        // A collection's name has no literal neighbour: only dot segments are refused.
        assert_eq!(literal("/v1/collections/"), BTreeSet::new());
    }

    #[test]
    fn reserved_ids_are_refused_naming_id_and_others_pass() {
        for id in UNROUTABLE_TENANT_IDS {
            match new_tenant_id((*id).to_owned()) {
                Err(ApiError::BadRequest(m)) => assert!(m.starts_with("id: "), "{m}"),
                other => panic!("{id}: {other:?}"),
            }
        }
        for id in ["acme", "purge-deleted-2", "...", ".hidden"] {
            assert_eq!(new_tenant_id(id.to_owned()).unwrap().as_str(), id);
        }
    }
}
