//! A tenant's jobs that wait on its own locks on the worker pool (`strata_sched::blocking`,
//! declared by `registry::lock_slot` and `IndexLock`): while one of tenant X's writes holds
//! X's write order and X's other writes wait for it, as many as the pool lets one tenant's
//! jobs hold threads, tenant Y's search must still run.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use strata_auth::{OperatorScope, TenantScope};
use strata_sched::{FairScheduler, SchedulerConfig};
use strata_types::{
    CollectionName, Metric, NewRecord, RecordId, RequestScope, SearchRequest, TenantId,
};

use crate::test_support::admin_scope;
use crate::{Engine, EngineConfig};

/// Far beyond any wait of a working pool, however loaded the machine: only a pool whose
/// workers all sleep behind X's lock reaches it, and the test then fails rather than hangs.
const NEVER: Duration = Duration::from_secs(60);

fn name() -> CollectionName {
    CollectionName::parse("vec").unwrap()
}

fn record(i: usize) -> NewRecord {
    NewRecord {
        id: Some(RecordId::parse(format!("r{i}")).unwrap()),
        modality: Some(name()),
        vector: Some(vec![1.0, i as f32 * 0.1, 0.0, 0.0]),
        ..Default::default()
    }
}

/// A tenant with a few records and its index loaded.
fn tenant(engine: &Engine, id: &str) -> TenantScope {
    let tenant = TenantId::parse(id).unwrap();
    engine
        .create_tenant(&OperatorScope::for_tests(), &tenant, None)
        .unwrap();
    let scope = admin_scope(engine, id);
    engine
        .create_collection(&scope, &name(), 4, Metric::L2)
        .unwrap();
    let records = (0..10).map(record).collect();
    engine
        .put(&scope, &RequestScope::default(), records)
        .unwrap();
    search(engine, &scope);
    scope
}

fn search(engine: &Engine, scope: &TenantScope) -> usize {
    let s = SearchRequest {
        vector: Some(vec![1.0, 0.0, 0.0, 0.0]),
        k: 3,
        modality: Some(name()),
        include: Some(vec![]),
        ..Default::default()
    };
    let found = engine.search(scope, &RequestScope::default(), &s).unwrap();
    found.hits.len()
}

#[test]
fn another_tenants_search_runs_while_one_tenants_writes_hold_every_worker() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(Engine::open(dir.path(), EngineConfig::default()).unwrap());
    let x = tenant(&engine, "acme");
    let y = tenant(&engine, "other");
    // X's first write stops between its commit and its apply, holding X's write order.
    let (reached_tx, reached) = mpsc::channel::<()>();
    let (release, release_rx) = mpsc::channel::<()>();
    let (reached_tx, release_rx) = (Mutex::new(reached_tx), Mutex::new(release_rx));
    let held = Arc::new(AtomicBool::new(false));
    let first = AtomicBool::new(false);
    let x_key = x.key();
    let hook_held = Arc::clone(&held);
    *crate::registry::lock(&engine.indexes.after_commit) = Some(Arc::new(move |key| {
        if key == x_key && !first.swap(true, Ordering::SeqCst) {
            hook_held.store(true, Ordering::SeqCst);
            crate::registry::lock(&reached_tx).send(()).unwrap();
            let _ = crate::registry::lock(&release_rx).recv_timeout(NEVER);
            hook_held.store(false, Ordering::SeqCst);
        }
    }));
    let pool = FairScheduler::<&'static str>::new(SchedulerConfig {
        workers: 2,
        // The holder blocks in a hook, not a declared wait: a long job would give way by
        // itself and hide a broken managed wait. Only the declared wait may free a place.
        long_job_after: Duration::ZERO,
        ..SchedulerConfig::default()
    })
    .unwrap();
    let write = |i: usize| {
        let (engine, x) = (Arc::clone(&engine), x.clone());
        pool.submit(&"acme", 1, move || {
            engine.put(&x, &RequestScope::default(), vec![record(i)])
        })
        .unwrap()
    };
    let holder = write(100);
    reached
        .recv_timeout(NEVER)
        .expect("x's first write never committed");
    // X's other writes wait for X's write order: three of them on threads (the other worker
    // and spares; with the holder, as many threads as one tenant's jobs may hold), the rest
    // queued behind them.
    let waiters: Vec<_> = (101..107).map(write).collect();
    while pool.queued() > 3 {
        std::thread::yield_now();
    }
    std::thread::sleep(Duration::from_millis(50));
    let (found_tx, found) = mpsc::channel();
    let (e, y2, held2) = (Arc::clone(&engine), y.clone(), Arc::clone(&held));
    let y_search = pool
        .submit(&"other", 1, move || {
            let hits = search(&e, &y2);
            found_tx.send((hits, held2.load(Ordering::SeqCst))).unwrap();
        })
        .unwrap();
    let answered = found.recv_timeout(NEVER);
    release.send(()).unwrap();
    let (hits, x_still_held) = answered.expect("y's search never ran while x's lock was held");
    assert_eq!(hits, 3);
    assert!(
        x_still_held,
        "y's search ran only after x's lock was released"
    );
    y_search.wait_blocking().unwrap();
    holder.wait_blocking().unwrap().unwrap();
    for waiter in waiters {
        waiter.wait_blocking().unwrap().unwrap();
    }
    // Every one of X's writes is applied, in order, to its loaded index.
    assert_eq!(search(&engine, &x), 3);
    assert_eq!(
        engine.count(&x, &RequestScope::default(), None).unwrap(),
        17
    );
}
