//! The forward pass of a tenant over its share of the pool runs at the background priority,
//! on its worker's helper thread (`strata_sched::compute_aside`, `embedding::forward_pass`),
//! for its text writes and its text searches alike, and embeds what the worker would have;
//! another tenant's passes run on the worker.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_auth::TenantScope;
use strata_embed::Embedder;
use strata_sched::{Demotable, FairScheduler, Lane, SchedulerConfig};
use strata_store::TenantKey;
use strata_types::{NewRecord, RecordId, RequestScope, SearchRequest};

use crate::embedding::PASSES_ON;
use crate::registry::lock;
use crate::test_support::created_tenant;
use crate::{Engine, EngineConfig};

/// The pool's thread name: the passes of this test are those on threads named from it.
const POOL: &str = "embed-aside-test";

fn spin(d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        std::hint::spin_loop();
    }
}

/// The threads of this test's pool that ran forward passes since the last call.
fn passes() -> Vec<String> {
    let mut all = lock(&PASSES_ON);
    let (ours, others): (Vec<String>, Vec<String>) =
        all.drain(..).partition(|name| name.starts_with(POOL));
    // Other tests' passes are left for them.
    *all = others;
    ours
}

fn on_pool<T: Send + 'static>(
    pool: &FairScheduler<TenantKey>,
    scope: &TenantScope,
    job: impl FnOnce() -> T + Send + 'static,
) -> T {
    pool.submit_with(&scope.key(), 1, Lane::Shared, Demotable::Never, job)
        .unwrap()
        .wait_blocking()
        .unwrap()
}

#[test]
fn an_over_share_tenants_forward_passes_run_on_the_helper() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/all-MiniLM-L6-v2");
    let embedder = Arc::new(Embedder::load(dir).expect("model files: run scripts/fetch-model.sh"));
    let data = tempfile::tempdir().unwrap();
    let mut engine = Engine::open(data.path(), EngineConfig::default()).unwrap();
    engine.set_embedder(Arc::clone(&embedder)).unwrap();
    let (x, y) = (
        created_tenant(&engine, "acme"),
        created_tenant(&engine, "other"),
    );
    let engine = Arc::new(engine);
    let pool = FairScheduler::<TenantKey>::new(SchedulerConfig {
        workers: 1,
        background_workers: 1,
        thread_name: POOL.into(),
        ..SchedulerConfig::default()
    })
    .unwrap();
    if pool.background_workers() == 0 {
        return; // No lower priority on this platform: nothing is set aside.
    }
    // A text of its own per attempt: equal texts would tie in the search below.
    const TEXTS: [&str; 5] = [
        "Alice takes oat milk in her coffee",
        "Bob rides his bicycle to work",
        "Carol grows tomatoes on the balcony",
        "Dan plays chess every Sunday",
        "Erin paints the harbour at dawn",
    ];
    let write = |scope: &TenantScope, id: String, text: &'static str| {
        let (engine, scope) = (Arc::clone(&engine), scope.clone());
        let record = NewRecord {
            id: Some(RecordId::parse(&id).unwrap()),
            content: Some(text.into()),
            ..Default::default()
        };
        move || engine.put(&scope, &RequestScope::default(), vec![record])
    };
    let search = |scope: &TenantScope, text: &'static str| {
        let (engine, scope) = (Arc::clone(&engine), scope.clone());
        let s = SearchRequest {
            query: Some(text.into()),
            k: 1,
            ..Default::default()
        };
        move || engine.search(&scope, &RequestScope::default(), &s)
    };
    let mut seen = None;
    // The shares are counted over windows of wall-clock time: a few tries.
    for (attempt, text) in TEXTS.into_iter().enumerate() {
        passes();
        // Y uses a little CPU, then X much more: X is over its share while Y is active.
        for (scope, ms) in [(&y, 1), (&x, 30)] {
            on_pool(&pool, scope, move || spin(Duration::from_millis(ms)));
        }
        on_pool(&pool, &x, write(&x, format!("x{attempt}"), text)).unwrap();
        let hits = on_pool(&pool, &x, search(&x, text)).unwrap().hits;
        let on = passes();
        on_pool(&pool, &y, write(&y, format!("y{attempt}"), text)).unwrap();
        let y_on = passes();
        assert!(
            !y_on.is_empty() && y_on.iter().all(|t| !t.ends_with("-aside")),
            "Y, within its share, embeds on the worker: {y_on:?}"
        );
        // The write's pass and the search's, both on the helper (X may drop within its share
        // between the two on a loaded machine: then another try).
        if on == [format!("{POOL}-aside"), format!("{POOL}-aside")] {
            seen = Some((hits, attempt));
            break;
        }
    }
    let (hits, attempt) = seen.expect("X's passes never both ran on the helper");
    // The vectors computed there are the embedder's: the search by the same text finds the
    // record written from it.
    assert_eq!(
        hits.first().map(|h| h.id.as_str().to_owned()),
        Some(format!("x{attempt}"))
    );
    let stored = engine
        .get(
            &x,
            &RequestScope::default(),
            &RecordId::parse(format!("x{attempt}")).unwrap(),
        )
        .unwrap();
    let want = embedder.embed(&[TEXTS[attempt]]).unwrap().remove(0);
    assert_eq!(stored.vector, Some(want));
}
