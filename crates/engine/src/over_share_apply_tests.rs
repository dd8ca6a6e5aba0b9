//! A write of a tenant over its share of the pool applies its changes to the tenant's index,
//! its graph insert included, at the background priority, on its worker's helper thread
//! (`strata_sched::compute_aside`, `IndexRegistry::apply_aside`), and the index it hands back
//! answers as before; another tenant's write applies on the worker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_auth::TenantScope;
use strata_sched::{Demotable, FairScheduler, Lane, SchedulerConfig};
use strata_store::TenantKey;
use strata_types::{Metric, NewRecord, RecordId, RequestScope, SearchRequest};

use crate::registry::lock;
use crate::test_support::{DIM, put_clustered, tenant_with_collection, vec_name};
use crate::{Engine, EngineConfig};

fn has_graph(engine: &Engine, scope: &TenantScope) -> bool {
    let stats = engine.index_stats(scope).unwrap();
    stats.iter().any(|c| c.collection == vec_name() && c.graph)
}

fn spin(d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        std::hint::spin_loop();
    }
}

/// A record of `vec` whose vector is 1 at `i` and -1 at the other end.
fn record(id: &str, i: usize) -> (NewRecord, Vec<f32>) {
    let mut vector = vec![0.0f32; DIM as usize];
    vector[i] = 1.0;
    vector[DIM as usize - 1 - i] = -1.0;
    let record = NewRecord {
        id: Some(RecordId::parse(id).unwrap()),
        modality: Some(vec_name()),
        vector: Some(vector.clone()),
        ..Default::default()
    };
    (record, vector)
}

fn write(
    pool: &FairScheduler<TenantKey>,
    engine: &Arc<Engine>,
    scope: &TenantScope,
    record: NewRecord,
) {
    let (engine, scope_) = (Arc::clone(engine), scope.clone());
    pool.submit_with(&scope.key(), 1, Lane::Shared, Demotable::Never, move || {
        engine.put(&scope_, &RequestScope::default(), vec![record])
    })
    .unwrap()
    .wait_blocking()
    .unwrap()
    .unwrap();
}

#[test]
fn an_over_share_tenants_write_applies_on_the_helper_and_its_graph_answers() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    let x = tenant_with_collection(&engine, "acme", Metric::Cosine);
    // Loaded first, so that the writes crossing the threshold queue a graph build; the writes
    // below insert into that graph.
    engine.index_stats(&x).unwrap();
    put_clustered(&engine, &x, 1_100);
    engine.wait_for_graph_builds();
    assert!(has_graph(&engine, &x));
    let y = tenant_with_collection(&engine, "other", Metric::Cosine);
    engine.index_stats(&y).unwrap();
    let engine = Arc::new(engine);
    let pool = FairScheduler::<TenantKey>::new(SchedulerConfig {
        workers: 1,
        background_workers: 1,
        thread_name: "over-share-test".into(),
        ..SchedulerConfig::default()
    })
    .unwrap();
    if pool.background_workers() == 0 {
        return; // No lower priority on this platform: nothing is set aside.
    }
    let aside_on = || std::mem::take(&mut *lock(&engine.indexes.applied_aside_on));
    let mut seen = None;
    // The shares are counted over windows of wall-clock time: a few tries.
    for attempt in 0..5 {
        // Y uses a little CPU, then X much more: X is over its share while Y is active.
        for (key, ms) in [(y.key(), 1), (x.key(), 30)] {
            pool.submit_with(&key, 1, Lane::Shared, Demotable::Never, move || {
                spin(Duration::from_millis(ms))
            })
            .unwrap()
            .wait_blocking()
            .unwrap();
        }
        let (new, vector) = record(&format!("new{attempt}"), attempt);
        write(&pool, &engine, &x, new);
        let on = aside_on();
        let (other, _) = record(&format!("y{attempt}"), attempt);
        write(&pool, &engine, &y, other);
        assert_eq!(aside_on(), [], "Y, within its share, applies on the worker");
        if !on.is_empty() {
            seen = Some((on, attempt, vector));
            break;
        }
    }
    let (on, attempt, vector) = seen.expect("X's apply never ran on the helper");
    assert_eq!(on, [Some("over-share-test-aside".to_owned())]);
    // The index went back with the vector in its graph.
    assert!(has_graph(&engine, &x));
    let s = SearchRequest {
        vector: Some(vector),
        k: 1,
        modality: Some(vec_name()),
        include: Some(vec![]),
        ..Default::default()
    };
    let hits = engine
        .search(&x, &RequestScope::default(), &s)
        .unwrap()
        .hits;
    let top = hits.first().map(|h| h.id.as_str().to_owned());
    assert_eq!(top, Some(format!("new{attempt}")));
}
