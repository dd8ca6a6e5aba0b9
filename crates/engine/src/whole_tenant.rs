//! Operations that span the whole tenant — every domain and every principal — and so need a
//! credential that speaks for the whole tenant (docs/isolation.md, rules 2 and 3).
//!
//! A credential bound to domains or user tokens may narrow a request, never widen it. Deleting
//! or creating a collection, re-embedding one, reading the audit log or the tenant's usage
//! figures act on, or count, records of every domain and principal; scoping them exactly to a
//! binding is not possible (a collection is one object for every domain; an audit row names
//! ids whose records may since have moved or gone), so a bound credential is refused with
//! `ScopeForbidden` rather than answered with figures it must not see.
//!
//! Being unbound is not enough for an operation that changes, names or counts the records of
//! every principal: a credential without `all_principals` never sees a principal's private
//! records, so it may neither delete them with their collection, re-embed them, read the audit
//! rows that name them, nor count them (rule 4: a count is a channel). Such an operation also
//! needs `all_principals` ([`Reach::EveryPrincipal`]); creating a collection changes and counts
//! no record ([`Reach::NoRecord`]).

use strata_auth::{Permission, TenantScope};

use crate::EngineError;

/// What a whole-tenant operation reaches besides the tenant's own objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reach {
    /// No record: it neither changes, names nor counts one (creating a collection).
    NoRecord,
    /// The records of every principal, private ones included: so it also needs
    /// `all_principals`, the permission that sees them.
    EveryPrincipal,
}

/// Checks that `scope` holds `permission` (`PermissionDenied` otherwise, as everywhere), is
/// bound to neither domains nor user tokens (`ScopeForbidden`) and, when the operation reaches
/// every principal's records, holds `all_principals` (`PermissionDenied`); `what` names the
/// operation for the error message.
pub(crate) fn require_whole_tenant(
    scope: &TenantScope,
    permission: Permission,
    reach: Reach,
    what: &str,
) -> Result<(), EngineError> {
    let grant = scope.grant();
    if !grant.permissions.has(permission) {
        return Err(EngineError::PermissionDenied(permission));
    }
    let bound = match (&grant.domains, &grant.user_tokens) {
        (None, None) => None,
        (Some(_), None) => Some("domains"),
        (None, Some(_)) => Some("user tokens"),
        (Some(_), Some(_)) => Some("domains and user tokens"),
    };
    if let Some(bound) = bound {
        return Err(EngineError::ScopeForbidden(format!(
            "{what} spans the whole tenant; a credential bound to {bound} cannot do it"
        )));
    }
    if reach == Reach::EveryPrincipal && !grant.permissions.has(Permission::AllPrincipals) {
        return Err(EngineError::PermissionDenied(Permission::AllPrincipals));
    }
    Ok(())
}

/// Whether `scope` may read the tenant's usage figures: what `own_usage` requires.
pub(crate) fn may_read_usage(scope: &TenantScope) -> bool {
    require_whole_tenant(scope, Permission::Admin, Reach::EveryPrincipal, "usage").is_ok()
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
        let admin = [
            Permission::Read,
            Permission::Admin,
            Permission::AllPrincipals,
        ];
        for reach in [Reach::NoRecord, Reach::EveryPrincipal] {
            let got =
                require_whole_tenant(&scope(&admin, None, None), Permission::Admin, reach, "x");
            assert!(got.is_ok(), "{reach:?}: {got:?}");
            for (domains, tokens) in [
                (Some("public"), None),
                (None, Some("u:carol")),
                (Some("public"), Some("u:carol")),
            ] {
                let got = require_whole_tenant(
                    &scope(&admin, domains, tokens),
                    Permission::Admin,
                    reach,
                    "x",
                );
                assert!(
                    matches!(got, Err(EngineError::ScopeForbidden(_))),
                    "{reach:?} {domains:?} {tokens:?}: {got:?}"
                );
            }
        }
        // The permission is checked first, and answers as it always did.
        let got = require_whole_tenant(
            &scope(&[Permission::Read], Some("public"), None),
            Permission::Admin,
            Reach::NoRecord,
            "x",
        );
        assert!(matches!(
            got,
            Err(EngineError::PermissionDenied(Permission::Admin))
        ));
    }

    #[test]
    fn reaching_every_principals_records_also_needs_all_principals() {
        let admin = scope(&[Permission::Read, Permission::Admin], None, None);
        assert!(require_whole_tenant(&admin, Permission::Admin, Reach::NoRecord, "x").is_ok());
        let got = require_whole_tenant(&admin, Permission::Admin, Reach::EveryPrincipal, "x");
        assert!(
            matches!(
                got,
                Err(EngineError::PermissionDenied(Permission::AllPrincipals))
            ),
            "{got:?}"
        );
        // A bound credential is told about its binding, whatever else it lacks.
        let bound = scope(&[Permission::Read, Permission::Admin], Some("public"), None);
        let got = require_whole_tenant(&bound, Permission::Admin, Reach::EveryPrincipal, "x");
        assert!(
            matches!(got, Err(EngineError::ScopeForbidden(_))),
            "{got:?}"
        );
    }
}
