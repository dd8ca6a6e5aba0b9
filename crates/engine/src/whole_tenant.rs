//! Operations that span the whole tenant — every domain and every principal — and so need a
//! credential that speaks for the whole tenant (docs/isolation.md, rule 2).
//!
//! A credential bound to domains or user tokens may narrow a request, never widen it. Deleting
//! or creating a collection, re-embedding one, reading the audit log or the tenant's usage
//! figures act on, or count, records of every domain and principal; scoping them exactly to a
//! binding is not possible (a collection is one object for every domain; an audit row names
//! ids whose records may since have moved or gone), so a bound credential is refused with
//! `ScopeForbidden` rather than answered with figures it must not see.

use strata_auth::{Permission, TenantScope};

use crate::EngineError;

/// Checks that `scope` holds `permission` (`PermissionDenied` otherwise, as everywhere) and is
/// bound to neither domains nor user tokens (`ScopeForbidden`); `what` names the operation for
/// the error message.
pub(crate) fn require_whole_tenant(
    scope: &TenantScope,
    permission: Permission,
    what: &str,
) -> Result<(), EngineError> {
    let grant = scope.grant();
    if !grant.permissions.has(permission) {
        return Err(EngineError::PermissionDenied(permission));
    }
    let bound = match (&grant.domains, &grant.user_tokens) {
        (None, None) => return Ok(()),
        (Some(_), None) => "domains",
        (None, Some(_)) => "user tokens",
        (Some(_), Some(_)) => "domains and user tokens",
    };
    Err(EngineError::ScopeForbidden(format!(
        "{what} spans the whole tenant; a credential bound to {bound} cannot do it"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_auth::{Grant, Permissions};
    use strata_store::{TenantKey, TenantMeta};
    use strata_types::{Domain, TenantId, UserToken};

    fn scope(
        permissions: &[Permission],
        domains: Option<&str>,
        tokens: Option<&str>,
    ) -> TenantScope {
        let grant = Grant {
            permissions: Permissions::of(permissions),
            domains: domains.map(|d| vec![Domain::parse(d).unwrap()]),
            user_tokens: tokens.map(|t| vec![UserToken::parse(t).unwrap()]),
        };
        let meta = TenantMeta {
            id: TenantId::parse("acme").unwrap(),
            key: TenantKey::for_tests(7),
            created_at: 0,
            profile: Default::default(),
        };
        TenantScope::for_tests(&meta, grant)
    }

    #[test]
    fn only_an_unbound_credential_with_the_permission_acts_on_the_whole_tenant() {
        let admin = [Permission::Read, Permission::Admin];
        assert!(require_whole_tenant(&scope(&admin, None, None), Permission::Admin, "x").is_ok());
        for (domains, tokens) in [
            (Some("public"), None),
            (None, Some("u:carol")),
            (Some("public"), Some("u:carol")),
        ] {
            let got = require_whole_tenant(&scope(&admin, domains, tokens), Permission::Admin, "x");
            assert!(
                matches!(got, Err(EngineError::ScopeForbidden(_))),
                "{domains:?} {tokens:?}: {got:?}"
            );
        }
        // The permission is checked first, and answers as it always did.
        let got = require_whole_tenant(
            &scope(&[Permission::Read], Some("public"), None),
            Permission::Admin,
            "x",
        );
        assert!(matches!(
            got,
            Err(EngineError::PermissionDenied(Permission::Admin))
        ));
    }
}
