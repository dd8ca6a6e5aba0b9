//! The authenticated handles the engine accepts.

use strata_store::{TenantKey, TenantMeta};
use strata_types::TenantId;

use crate::Grant;

/// Proof that a request was authenticated for one tenant, with what the credential grants.
///
/// The fields are private and the constructor is crate-private: outside this crate a
/// `TenantScope` can only be received, never made, so no engine entry point can be reached with
/// a tenant taken from a request.
#[derive(Debug, Clone)]
pub struct TenantScope {
    context: RequestContext,
    tenant: TenantId,
    key: TenantKey,
    grant: Grant,
    actor: String,
}

impl TenantScope {
    pub(crate) fn new(meta: &TenantMeta, grant: Grant, actor: String) -> Self {
        TenantScope {
            context: RequestContext::default(),
            tenant: meta.id.clone(),
            key: meta.key,
            grant,
            actor,
        }
    }

    /// A scope for tests, without a credential.
    #[cfg(feature = "test-support")]
    pub fn for_tests(meta: &TenantMeta, grant: Grant) -> Self {
        Self::new(meta, grant, "test".into())
    }

    /// Attaches where the request came from, for audit rows. It grants nothing, so anyone
    /// holding a scope may set it.
    pub fn with_context(mut self, context: RequestContext) -> Self {
        self.context = context;
        self
    }

    pub fn context(&self) -> &RequestContext {
        &self.context
    }

    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// The tenant's storage prefix.
    pub fn key(&self) -> TenantKey {
        self.key
    }

    pub fn grant(&self) -> &Grant {
        &self.grant
    }

    /// Who is acting: a key id or a JWT subject, for audit.
    pub fn actor(&self) -> &str {
        &self.actor
    }
}

/// Where a request came from; carried by the scopes into audit rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestContext {
    pub request_id: Option<String>,
    /// The client's address as the server saw it.
    pub client: Option<String>,
}

/// Proof that a request carries an operator credential (tenant `*`, `admin`).
#[derive(Debug, Clone)]
pub struct OperatorScope {
    context: RequestContext,
    actor: String,
}

impl OperatorScope {
    pub(crate) fn new(actor: String) -> Self {
        OperatorScope {
            actor,
            context: RequestContext::default(),
        }
    }

    /// An operator scope for tests and for the server's own start-up work.
    #[cfg(feature = "test-support")]
    pub fn for_tests() -> Self {
        Self::new("test-operator".into())
    }

    pub fn actor(&self) -> &str {
        &self.actor
    }

    /// The operator acting inside tenant `meta`, for the server's own scheduled work on its
    /// records (the expiry sweep): unbound read and write over every principal, audited under
    /// this operator's actor. Only an operator scope, itself the proof of an operator
    /// credential or of the server's own work, makes one.
    pub fn acting_in(&self, meta: &TenantMeta) -> TenantScope {
        let grant = Grant {
            permissions: crate::Permissions::of(&[
                crate::Permission::Read,
                crate::Permission::Write,
                crate::Permission::AllPrincipals,
            ]),
            user_tokens: None,
            domains: None,
        };
        TenantScope::new(meta, grant, self.actor.clone()).with_context(self.context.clone())
    }

    /// Attaches where the request came from, for audit rows.
    pub fn with_context(mut self, context: RequestContext) -> Self {
        self.context = context;
        self
    }

    pub fn context(&self) -> &RequestContext {
        &self.context
    }
}
