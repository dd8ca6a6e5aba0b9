//! A named grantee's consent to a share (`docs/shared-knowledge.md`, "Consent").
//!
//! Publishing to a tenant by name only *offers* the domain: the owner's request writes the
//! pointer row in the grantee's range (`crate::shares`), and nothing more happens until the
//! grantee accepts. Accepting writes an acceptance row beside the pointer (blob
//! `share:accepted:<owner>/<id>`); declining, at any time, deletes both, so an accepted share
//! can be given up later the same way. The owner's revoke deletes both too.
//!
//! Why consent: without it any tenant could place its records in another tenant's
//! `include_shared: "all"` searches (content the victim's agent would trust), and enough empty
//! offers would push such searches over the per-search grant limit. An offer is therefore
//! read by nothing but the grantee's listing and these two routes: searches start from the
//! acceptance rows.
//!
//! Accepting or declining speaks for the whole tenant, so it takes an `admin` credential
//! bound to neither user tokens nor domains.

use serde::{Deserialize, Serialize};
use strata_auth::{Permission, TenantScope};
use strata_store::codec::{decode_json, encode_json};
use strata_store::{Reads, StoreError, TenantKey, Writer};
use strata_types::{Millis, TenantId, now_millis};

use crate::audit::{self, tenant_event};
use crate::shares::{
    IN_PREFIX, IncomingShare, OwnerMust, Pointer, ShareState, foreign_event, in_name, out_name,
    standing, verify,
};
use crate::tenants::check_live;
use crate::{Engine, EngineError};

pub(crate) const ACCEPTED_PREFIX: &str = "share:accepted:";

/// The acceptance row in a named grantee's range. Every field is required when read back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Acceptance {
    owner: TenantId,
    share: String,
    accepted_at: Millis,
    accepted_by: String,
}

fn accepted_name(owner: &TenantId, id: &str) -> String {
    format!("{ACCEPTED_PREFIX}{owner}/{id}")
}

/// Whether a blob name is an acceptance row, and its value decodes; for tenant verification.
pub(crate) fn check_blob(name: &str, bytes: &[u8]) -> Option<Result<(), StoreError>> {
    name.starts_with(ACCEPTED_PREFIX)
        .then(|| decode_json::<Acceptance>(bytes).map(|_| ()))
}

/// Where the grantee in range `grantee` stands on `owner`'s share `id` by name: offered (a
/// pointer), accepted (a pointer and an acceptance), or nothing. An acceptance without its
/// pointer is nothing: the offer is what the owner still makes.
pub(crate) fn named_state(
    r: &impl Reads,
    grantee: TenantKey,
    owner: &TenantId,
    id: &str,
) -> Result<Option<ShareState>, EngineError> {
    if r.blob(grantee, &in_name(owner, id))?.is_none() {
        return Ok(None);
    }
    Ok(Some(
        if r.blob(grantee, &accepted_name(owner, id))?.is_some() {
            ShareState::Accepted
        } else {
            ShareState::Offered
        },
    ))
}

/// The (owner, share) pairs of the grantee's pointer rows (`prefix` [`IN_PREFIX`]) or of its
/// acceptance rows ([`ACCEPTED_PREFIX`]); each row must decode.
pub(crate) fn named_candidates(
    r: &impl Reads,
    grantee: TenantKey,
    prefix: &str,
) -> Result<Vec<(TenantId, String)>, EngineError> {
    let mut out = Vec::new();
    for (_, bytes) in r.blobs_named(grantee, prefix)? {
        if prefix == ACCEPTED_PREFIX {
            let a: Acceptance = decode_json(&bytes)?;
            out.push((a.owner, a.share));
        } else {
            let p: Pointer = decode_json(&bytes)?;
            out.push((p.owner, p.share));
        }
    }
    Ok(out)
}

/// Deletes the grantee's pointer and acceptance rows of `owner`'s share `id`.
pub(crate) fn delete_named(
    w: &mut Writer<'_>,
    grantee: TenantKey,
    owner: &TenantId,
    id: &str,
) -> Result<(), EngineError> {
    w.delete_blob(grantee, &in_name(owner, id))?;
    w.delete_blob(grantee, &accepted_name(owner, id))?;
    Ok(())
}

/// `admin`, bound to neither user tokens nor domains: consent is the whole tenant's.
fn require_tenant_admin(scope: &TenantScope) -> Result<(), EngineError> {
    let grant = scope.grant();
    if !grant.permissions.has(Permission::Admin) {
        return Err(EngineError::PermissionDenied(Permission::Admin));
    }
    if grant.user_tokens.is_some() || grant.domains.is_some() {
        return Err(EngineError::ScopeForbidden(
            "a credential bound to user tokens or domains cannot accept or decline shares: \
             it speaks for the whole tenant"
                .into(),
        ));
    }
    Ok(())
}

/// The owner of the share `id` offered to `scope`'s tenant by name, from its pointer rows.
fn offering_owner(w: &Writer<'_>, scope: &TenantScope, id: &str) -> Result<TenantId, EngineError> {
    named_candidates(w, scope.key(), IN_PREFIX)?
        .into_iter()
        .find(|(_, share)| share == id)
        .map(|(owner, _)| owner)
        .ok_or(EngineError::NotFound)
}

/// Appends `action` to the owner's log, if its incarnation still holds share `id` (a purged
/// owner's range is never written to).
fn audit_owner(
    w: &mut Writer<'_>,
    scope: &TenantScope,
    owner: &TenantId,
    id: &str,
    action: &str,
) -> Result<(), EngineError> {
    let Some(meta) = w.tenant(owner)? else {
        return Ok(());
    };
    if w.blob(meta.key, &out_name(id))?.is_none() {
        return Ok(());
    }
    let detail = serde_json::json!({"share": id, "grantee": scope.tenant()});
    audit::append(
        w,
        meta.key,
        foreign_event(scope, Some(meta.id), action, detail),
    )?;
    Ok(())
}

impl Engine {
    /// Accepts the share `id` offered to the caller's tenant by name (needs `admin`, unbound);
    /// from now on its searches may include it. Accepting an accepted share changes nothing.
    /// An id that is no live offer to the caller is `NotFound`.
    pub fn accept_share(
        &self,
        scope: &TenantScope,
        id: &str,
    ) -> Result<IncomingShare, EngineError> {
        require_tenant_admin(scope)?;
        self.store.write(|w| {
            check_live(w, scope)?;
            let owner = offering_owner(w, scope, id)?;
            let mut incoming = match verify(w, scope, &owner, id)? {
                Some(standing) => standing.incoming(),
                None => return Err(EngineError::NotFound),
            };
            if named_state(w, scope.key(), &owner, id)? == Some(ShareState::Accepted) {
                return Ok(incoming);
            }
            let row = Acceptance {
                owner: owner.clone(),
                share: id.to_owned(),
                accepted_at: now_millis(),
                accepted_by: scope.actor().to_owned(),
            };
            w.put_blob(scope.key(), &accepted_name(&owner, id), &encode_json(&row)?)?;
            let detail = serde_json::json!({"share": id, "owner": owner});
            audit::append(w, scope.key(), tenant_event(scope, "share.accept", detail))?;
            audit_owner(w, scope, &owner, id, "share.accepted")?;
            incoming.state = ShareState::Accepted;
            Ok(incoming)
        })
    }

    /// Declines the share `id` offered to the caller's tenant by name, or gives up one it
    /// accepted (needs `admin`, unbound): the offer is gone, its searches see nothing of it
    /// from the next request, and the owner's listing no longer names the tenant. A share
    /// held as a child is not the tenant's to decline (the operator set the hierarchy): it
    /// is `NotFound`, like an unknown id.
    pub fn decline_share(
        &self,
        scope: &TenantScope,
        id: &str,
    ) -> Result<IncomingShare, EngineError> {
        require_tenant_admin(scope)?;
        self.store.write(|w| {
            check_live(w, scope)?;
            let owner = offering_owner(w, scope, id)?;
            // A pointer whose share is gone (its owner purged, say) is listed nowhere and
            // read by nothing: not found, like an unknown id. An owner suspended or deleted
            // (restorable) still holds it: consent is withdrawn whatever the owner's state.
            let answer = standing(w, scope, &owner, id, OwnerMust::Exist)?
                .map(|standing| standing.incoming())
                .ok_or(EngineError::NotFound)?;
            delete_named(w, scope.key(), &owner, id)?;
            crate::shares::forget_grantee(w, &owner, id, scope.tenant())?;
            let detail = serde_json::json!({"share": id, "owner": owner});
            audit::append(w, scope.key(), tenant_event(scope, "share.decline", detail))?;
            audit_owner(w, scope, &owner, id, "share.declined")?;
            Ok(answer)
        })
    }
}

#[cfg(test)]
#[path = "share_consent_tests.rs"]
mod tests;
