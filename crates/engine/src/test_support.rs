//! Helpers shared by the engine's own unit tests that drive a whole `Engine` over a graph-sized
//! vector collection (residency, isolation levels).

use strata_auth::{Grant, Permission, Permissions, TenantScope};
use strata_types::{
    CollectionName, NewRecord, RecordId, RequestScope, SearchRequest, TenantId, UserToken,
};

use crate::Engine;

/// A scope of tenant `id` (which must exist) that speaks for the whole tenant: read, write,
/// admin and all_principals, bound to nothing (the index figures count every principal).
pub(crate) fn admin_scope(engine: &Engine, id: &str) -> TenantScope {
    scope_bound_to(engine, id, None)
}

/// A scope of tenant `id` (which must exist) with every permission, bound to the user tokens
/// `bound` (unbound when `None`).
pub(crate) fn scope_bound_to(engine: &Engine, id: &str, bound: Option<&[&str]>) -> TenantScope {
    let grant = Grant {
        permissions: Permissions::of(&[
            Permission::Read,
            Permission::Write,
            Permission::Admin,
            Permission::AllPrincipals,
        ]),
        user_tokens: bound.map(tokens),
        domains: None,
    };
    let id = TenantId::parse(id).unwrap();
    TenantScope::for_tests(&engine.tenant_meta(&id).unwrap(), grant)
}

/// User tokens from their names.
pub(crate) fn tokens(list: &[&str]) -> Vec<UserToken> {
    list.iter().map(|t| UserToken::parse(*t).unwrap()).collect()
}

/// A new engine in a temporary directory with one tenant, `id`, and its [`admin_scope`].
pub(crate) fn engine_with_tenant(id: &str) -> (tempfile::TempDir, Engine, TenantScope) {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), crate::EngineConfig::default()).unwrap();
    engine
        .create_tenant(
            &strata_auth::OperatorScope::for_tests(),
            &TenantId::parse(id).unwrap(),
            None,
        )
        .unwrap();
    let scope = admin_scope(&engine, id);
    (dir, engine, scope)
}

/// The dimension of the test collection: high, so that a graph needs few records. 1,100
/// vectors of 2,048 dimensions pass both the graph threshold
/// (`collection_index::GRAPH_MIN_FLOATS`) and the planner's exact-scan budget.
pub(crate) const DIM: u32 = 2048;

/// The test collection of `DIM`-dimensional clustered vectors.
pub(crate) fn vec_name() -> CollectionName {
    CollectionName::parse("vec").unwrap()
}

/// The ids answering five fixed queries (k = 5) against `vec`: equal before and after a change
/// means the change moved no answer.
pub(crate) fn answers(engine: &Engine, scope: &TenantScope) -> Vec<Vec<String>> {
    strata_index::testdata::queries(5, DIM as usize, 10, 1, 2)
        .into_iter()
        .map(|q| {
            let s = SearchRequest {
                vector: Some(q),
                k: 5,
                modality: Some(vec_name()),
                ..Default::default()
            };
            let r = engine.search(scope, &RequestScope::default(), &s).unwrap();
            r.hits.into_iter().map(|h| h.id.to_string()).collect()
        })
        .collect()
}

/// Creates tenant `name` with its `vec` collection holding `n` clustered vectors
/// ([`put_clustered`]); its id.
pub(crate) fn filled_tenant(engine: &Engine, name: &str, n: usize) -> strata_types::TenantId {
    let scope = tenant_with_collection(engine, name, strata_types::Metric::Cosine);
    put_clustered(engine, &scope, n);
    scope.tenant().clone()
}

/// Creates tenant `name`; its admin scope.
pub(crate) fn created_tenant(engine: &Engine, name: &str) -> TenantScope {
    engine
        .create_tenant(
            &strata_auth::OperatorScope::for_tests(),
            &TenantId::parse(name).unwrap(),
            None,
        )
        .unwrap();
    admin_scope(engine, name)
}

/// Creates tenant `name` and its empty `vec` collection under `metric`; the tenant's admin
/// scope.
pub(crate) fn tenant_with_collection(
    engine: &Engine,
    name: &str,
    metric: strata_types::Metric,
) -> TenantScope {
    let scope = created_tenant(engine, name);
    engine
        .create_collection(&scope, &vec_name(), DIM, metric)
        .unwrap();
    scope
}

/// Writes `n` seeded clustered `DIM`-dimensional vectors into `vec` as records `r0`, `r1`, …, in
/// batches of 500.
pub(crate) fn put_clustered(engine: &Engine, scope: &TenantScope, n: usize) {
    put_clustered_with(engine, scope, n, |_| None);
}

/// [`put_clustered`], record `i` with `content(i)` as its text.
pub(crate) fn put_clustered_with(
    engine: &Engine,
    scope: &TenantScope,
    n: usize,
    content: impl Fn(usize) -> Option<String>,
) {
    let data = strata_index::testdata::clustered(n, DIM as usize, 10, 1);
    for (c, part) in data.chunks(500).enumerate() {
        let records = part
            .iter()
            .enumerate()
            .map(|(i, v)| NewRecord {
                id: Some(RecordId::parse(format!("r{}", c * 500 + i)).unwrap()),
                modality: Some(vec_name()),
                vector: Some(v.clone()),
                content: content(c * 500 + i),
                ..Default::default()
            })
            .collect();
        engine
            .put(scope, &RequestScope::default(), records)
            .unwrap();
    }
}

/// An engine on `dir` with tenant `acme`, its `vec` collection under `metric` and
/// [`put_clustered`]'s `n` records in it; the tenant's admin scope.
pub(crate) fn clustered_tenant(
    dir: &std::path::Path,
    metric: strata_types::Metric,
    n: usize,
) -> (Engine, TenantScope) {
    let engine = Engine::open(dir, crate::EngineConfig::default()).unwrap();
    let scope = tenant_with_collection(&engine, "acme", metric);
    put_clustered(&engine, &scope, n);
    (engine, scope)
}

/// Holds the next write of any tenant between its commit and its apply until `release` is
/// sent (or 60 s pass, so a test that fails cannot hang); `reached` hears when it got there.
/// Later writes pass the hook at once.
pub(crate) fn pause_next_write(
    engine: &Engine,
) -> (std::sync::mpsc::Receiver<()>, std::sync::mpsc::Sender<()>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex, mpsc};
    let (reached_tx, reached) = mpsc::channel::<()>();
    let (release, release_rx) = mpsc::channel::<()>();
    let (reached_tx, release_rx) = (Mutex::new(reached_tx), Mutex::new(release_rx));
    let once = AtomicBool::new(false);
    *crate::registry::lock(&engine.indexes.after_commit) = Some(Arc::new(move |_| {
        if !once.swap(true, Ordering::SeqCst) {
            crate::registry::lock(&reached_tx).send(()).unwrap();
            let wait = std::time::Duration::from_secs(60);
            let _ = crate::registry::lock(&release_rx).recv_timeout(wait);
        }
    }));
    (reached, release)
}
