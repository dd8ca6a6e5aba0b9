//! What the examples that write through the engine share: a tenant's scope, and vectors.

use strata_auth::{Grant, OperatorScope, Permission, Permissions, TenantScope};
use strata_engine::Engine;
use strata_types::TenantId;

/// A scope of tenant `id` that reads, writes and sees every principal (index figures need it),
/// creating the tenant if new.
pub fn scope(engine: &Engine, id: &TenantId) -> TenantScope {
    if engine.tenant_meta(id).is_err() {
        engine
            .create_tenant(&OperatorScope::for_tests(), id, None)
            .expect("tenant");
    }
    let grant = Grant {
        permissions: Permissions::of(&[
            Permission::Read,
            Permission::Write,
            Permission::AllPrincipals,
        ]),
        user_tokens: None,
        domains: None,
    };
    TenantScope::for_tests(&engine.tenant_meta(id).expect("meta"), grant)
}

/// A pseudo-random vector of `dim` dimensions fixed by `seed`.
// Each example compiles this module on its own; not all of them write vectors of their own.
#[allow(dead_code)]
pub fn vector(dim: usize, seed: u64) -> Vec<f32> {
    strata_index::testdata::uniform(1, dim, seed).remove(0)
}
