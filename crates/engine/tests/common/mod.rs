//! Helpers shared by the engine's integration tests.
#![allow(dead_code)]

use std::path::Path;

use strata_auth::{Grant, OperatorScope, Permission, Permissions, TenantScope};
use strata_engine::{Engine, EngineConfig, ExportLine, Page};
use strata_types::{Domain, Record, RequestScope, TenantId, TokenSelector};

/// Opens an engine on `dir` and returns it with a scope for `tenant`, creating the tenant if
/// it does not exist yet.
pub fn open_with_tenant(dir: &Path, tenant: &str, grant: Grant) -> (Engine, TenantScope) {
    let engine = Engine::open(dir, EngineConfig::default()).expect("open engine");
    let id = TenantId::parse(tenant).expect("tenant id");
    if engine.tenant_meta(&id).is_err() {
        engine
            .create_tenant(&OperatorScope::for_tests(), &id, None)
            .expect("create tenant");
    }
    let scope = TenantScope::for_tests(&engine.tenant_meta(&id).expect("meta"), grant);
    (engine, scope)
}

/// A grant that can read and write and see every principal.
pub fn full_grant() -> Grant {
    Grant {
        permissions: Permissions::of(&[
            Permission::Read,
            Permission::Write,
            Permission::Admin,
            Permission::AllPrincipals,
        ]),
        user_tokens: None,
        domains: None,
    }
}

/// Every record of `domain`, for every principal, via paginated scans.
pub fn all_records(engine: &Engine, scope: &TenantScope, domain: &str) -> Vec<Record> {
    let req = RequestScope {
        user_tokens: Some(TokenSelector::AllPrincipals),
        memory_domain: Some(Domain::parse(domain).expect("domain")),
        ..Default::default()
    };
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = engine
            .scan(scope, &req, None, Page { after, limit: 1000 })
            .expect("scan");
        out.extend(page.records);
        match page.next {
            Some(n) => after = Some(n),
            None => return out,
        }
    }
}

/// A deterministic unit-length pseudo-random vector.
pub fn vector(dim: usize, seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v: Vec<f32> = (0..dim)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-6);
    v.iter_mut().for_each(|a| *a /= norm);
    v
}

/// Sets its flag when dropped: threads that loop until told to stop are told so even when
/// the thread driving the test panics, so joining them ends and the panic fails the test
/// (instead of the test hanging on threads that never stop).
pub struct StopOnDrop<'a>(pub &'a std::sync::atomic::AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The tenant line an export begins with: tenant `id` with default limits and level.
pub fn tenant_line(id: &str) -> ExportLine {
    ExportLine::Tenant {
        id: TenantId::parse(id).expect("tenant id"),
        display_name: None,
        created_at: 0,
        limits: Default::default(),
        weight: 1,
        isolation: Default::default(),
        index_params: None,
        metadata: None,
        integrity_policy: None,
        end_line: false,
    }
}

/// An expiry a moment ahead, for a record a test wants expired: a write refuses an
/// `expires_at` that is already past. [`wait_past`] it before looking.
pub fn expiring_soon() -> strata_types::Millis {
    // Ahead by more than a preempted test thread on a busy machine can lose before the write
    // reads the clock.
    strata_types::now_millis() + 250
}

/// Returns once `t` has passed.
pub fn wait_past(t: strata_types::Millis) {
    while strata_types::now_millis() <= t {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
