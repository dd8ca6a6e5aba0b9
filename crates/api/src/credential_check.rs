//! A stepped request's credential, checked again before each of its steps after the first. A
//! count, a listing or a delete by filter over many records runs as many pool jobs, for
//! seconds or minutes behind its tenant's other requests (`scan_steps`); authentication alone
//! judged the credential once, when the request arrived. Checked again, a key revoked or
//! expired meanwhile (or a tenant purged, whose keys go with it) stops the request at its next
//! step: a delete deletes at most one more chunk.

use std::sync::Arc;

use strata_auth::{Principal, TenantScope};

use crate::{ApiError, AppState};

/// The bearer token a tenant request authenticated with. Its secret is never printed.
#[derive(Clone)]
pub(crate) struct Credential(Arc<str>);

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credential(..)")
    }
}

impl Credential {
    pub(crate) fn new(token: &str) -> Credential {
        Credential(token.into())
    }

    /// `Ok` while the token still authenticates as a credential of `scope`'s tenant, the same
    /// incarnation; `Unauthorized` (as at arrival) otherwise. One read of the credentials
    /// table and a SHA-256, as authentication is: done inline, like it.
    pub(crate) fn check(&self, state: &AppState, scope: &TenantScope) -> Result<(), ApiError> {
        match state.auth.authenticate(state.engine.credentials(), &self.0) {
            Ok(Principal::Tenant(now)) if now.key() == scope.key() => Ok(()),
            _ => Err(ApiError::Unauthorized),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use strata_auth::{Authenticator, KeyTenant, NewKey, OperatorScope, Permissions};
    use strata_engine::Stepped::{Done, More};
    use strata_engine::{Engine, EngineConfig, EngineError, Stepped};
    use strata_types::TenantId;

    use super::*;
    use crate::scan_steps::{Steps, run_in_steps};
    use crate::state::ApiConfig;

    /// A tenant `acme` and a read-write key of it: the state, the key's id and its token.
    fn state_with_key(dir: &std::path::Path) -> (AppState, String, String) {
        let engine = Arc::new(Engine::open(dir, EngineConfig::default()).unwrap());
        let auth = Arc::new(Authenticator::new(&Default::default(), None).unwrap());
        let state = AppState::new(engine, auth, ApiConfig::default()).unwrap();
        let id = TenantId::parse("acme").unwrap();
        let op = OperatorScope::for_tests();
        state.engine.create_tenant(&op, &id, None).unwrap();
        let new = NewKey {
            tenant: KeyTenant::Tenant(id),
            name: None,
            permissions: Permissions::read_write(),
            user_tokens: None,
            domains: None,
            expires_at: None,
        };
        let e = &state.engine;
        let key = (state.auth)
            .create_key(e.credentials(), &op, new, &e.key_audit(&op))
            .unwrap();
        (state, key.info.id, key.secret)
    }

    fn scope_of(state: &AppState, token: &str) -> TenantScope {
        match state.auth.authenticate(state.engine.credentials(), token) {
            Ok(Principal::Tenant(scope)) => scope,
            _ => panic!("the key authenticates"),
        }
    }

    /// Three steps; the first revokes `key`.
    struct RevokesInItsFirstStep {
        auth: Arc<strata_auth::Authenticator>,
        key: String,
        steps: Arc<AtomicU32>,
    }

    impl Steps for RevokesInItsFirstStep {
        type Answer = ();

        fn step(self, e: &Engine) -> Result<Stepped<Self, ()>, EngineError> {
            if self.steps.fetch_add(1, Ordering::SeqCst) == 0 {
                let op = OperatorScope::for_tests();
                let audit = e.key_audit(&op);
                self.auth
                    .revoke_key(e.credentials(), &op, &self.key, &audit)
                    .unwrap();
            }
            if self.steps.load(Ordering::SeqCst) == 3 {
                return Ok(Done(()));
            }
            Ok(More(Box::new(self)))
        }
    }

    #[tokio::test]
    async fn a_key_revoked_part_way_stops_a_stepped_request_at_its_next_step() {
        let dir = tempfile::tempdir().unwrap();
        let (state, key, token) = state_with_key(dir.path());
        let scope = scope_of(&state, &token);
        let credential = Credential::new(&token);
        credential.check(&state, &scope).unwrap();
        let admitted = state.admit(&scope).unwrap();
        let steps = Arc::new(AtomicU32::new(0));
        let op = RevokesInItsFirstStep {
            auth: Arc::clone(&state.auth),
            key,
            steps: Arc::clone(&steps),
        };
        let recheck = |s: &AppState| credential.check(s, &scope);
        let answer = run_in_steps(&state, &admitted, recheck, move |_| Ok(op)).await;
        assert!(matches!(answer, Err(ApiError::Unauthorized)), "{answer:?}");
        assert_eq!(steps.load(Ordering::SeqCst), 1, "no step after the revoke");
    }
}
