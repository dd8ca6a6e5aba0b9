//! Searches racing tenant lifecycle changes: the engine keeps tenants' liveness in memory
//! (`liveness`), and a search that starts after a suspend, soft delete or purge has returned
//! must still be refused, never answered from a stale entry. Each kind of search checks
//! liveness its own way: a query the engine may embed reads its collection first (a snapshot
//! of its own), while a vector search and a `mode: "text"` search check the tenant from memory
//! (`check_readable`) and then read everything from the one snapshot their hits come from.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use serde_json::json;
use strata_auth::OperatorScope;
use strata_engine::{Engine, EngineError};
use strata_types::{NewRecord, RequestScope, SearchMode, SearchRequest, TenantId};

fn op() -> OperatorScope {
    OperatorScope::for_tests()
}

/// A query without a mode: the engine would embed it if it had an embedder.
fn text_search() -> SearchRequest {
    SearchRequest {
        query: Some("kept".into()),
        ..Default::default()
    }
}

/// The stored record's own vector: nothing to embed.
fn vector_search() -> SearchRequest {
    SearchRequest {
        vector: Some(common::vector(DIM, 1)),
        ..Default::default()
    }
}

/// BM25 only: nothing to embed either.
fn text_mode_search() -> SearchRequest {
    SearchRequest {
        query: Some("kept".into()),
        mode: Some(SearchMode::Text),
        ..Default::default()
    }
}

/// The dimension of the default `text` collection.
const DIM: usize = 384;

/// What the searchers saw, over every cycle.
#[derive(Default)]
struct Seen {
    /// Searches answered while the tenant was live throughout.
    answered: AtomicUsize,
    /// Searches refused with the expected error while the change held throughout.
    refused: AtomicUsize,
    /// Searches that began after the change returned, ended before it was undone, and were
    /// answered anyway (or refused with another error): must stay 0.
    wrong: AtomicUsize,
}

/// Phases of one cycle, as `phase % 4`: live (the undo returned), change in flight, changed
/// (the change returned, the undo not called yet), undo in flight.
const LIVE: u64 = 0;
const CHANGED: u64 = 2;

/// Runs two searcher threads, each sending `request` again and again, while the main thread
/// applies `change` and `undo` `cycles` times.
/// A search whose phase was the same before and after it ran began after `change` returned
/// and ended before `undo` was called (it must be refused as `refused` says), or ran while the
/// tenant was live throughout (it must be answered).
fn race(
    engine: Arc<Engine>,
    scope: strata_auth::TenantScope,
    request: SearchRequest,
    cycles: u64,
    change: impl Fn(&Engine, &TenantId),
    undo: impl Fn(&Engine, &TenantId),
    refused: fn(&EngineError) -> bool,
) -> Arc<Seen> {
    let phase = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Seen::default());
    let searchers: Vec<_> = (0..2)
        .map(|_| {
            let (engine, scope, request) = (Arc::clone(&engine), scope.clone(), request.clone());
            let (phase, stop, seen) = (Arc::clone(&phase), Arc::clone(&stop), Arc::clone(&seen));
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let before = phase.load(Ordering::SeqCst);
                    let r = engine.search(&scope, &RequestScope::default(), &request);
                    let after = phase.load(Ordering::SeqCst);
                    if before != after {
                        continue;
                    }
                    match (before % 4, &r) {
                        (CHANGED, Err(e)) if refused(e) => {
                            seen.refused.fetch_add(1, Ordering::SeqCst)
                        }
                        (CHANGED, _) => seen.wrong.fetch_add(1, Ordering::SeqCst),
                        (LIVE, Ok(a)) => {
                            assert_eq!(a.hits.len(), 1);
                            seen.answered.fetch_add(1, Ordering::SeqCst)
                        }
                        (LIVE, Err(e)) => panic!("a live tenant's search failed: {e}"),
                        // A change or its undo in flight: either answer is right.
                        _ => 0,
                    };
                }
            })
        })
        .collect();
    let tenant = scope.tenant().clone();
    // Should a change panic, the searchers stop instead of spinning on behind the failure.
    let _stop = common::StopOnDrop(&stop);
    for _ in 0..cycles {
        // Let the searchers fill the in-memory entry before each change.
        std::thread::sleep(std::time::Duration::from_millis(2));
        phase.fetch_add(1, Ordering::SeqCst);
        change(&engine, &tenant);
        phase.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(std::time::Duration::from_millis(2));
        phase.fetch_add(1, Ordering::SeqCst);
        undo(&engine, &tenant);
        phase.fetch_add(1, Ordering::SeqCst);
    }
    stop.store(true, Ordering::SeqCst);
    for s in searchers {
        s.join().unwrap();
    }
    seen
}

fn engine_with_one_record() -> (tempfile::TempDir, Arc<Engine>, strata_auth::TenantScope) {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = common::open_with_tenant(dir.path(), "acme", common::full_grant());
    let record: NewRecord =
        serde_json::from_value(json!({"content": "kept", "vector": common::vector(DIM, 1)}))
            .unwrap();
    engine
        .put(&scope, &RequestScope::default(), vec![record])
        .unwrap();
    (dir, Arc::new(engine), scope)
}

fn check(seen: &Seen) {
    let (answered, refused, wrong) = (
        seen.answered.load(Ordering::SeqCst),
        seen.refused.load(Ordering::SeqCst),
        seen.wrong.load(Ordering::SeqCst),
    );
    assert_eq!(wrong, 0, "searches answered after the change returned");
    // Both sides were exercised: a race that never raced proves nothing.
    assert!(
        answered > 0 && refused > 0,
        "answered {answered}, refused {refused}"
    );
}

#[test]
fn no_search_started_after_a_suspend_returned_is_answered() {
    let (_dir, engine, scope) = engine_with_one_record();
    let seen = race(
        engine,
        scope,
        text_search(),
        40,
        |e, t| {
            e.suspend_tenant(&op(), t).unwrap();
        },
        |e, t| {
            e.resume_tenant(&op(), t).unwrap();
        },
        |e| matches!(e, EngineError::TenantSuspended(_)),
    );
    check(&seen);
}

#[test]
fn no_search_started_after_a_soft_delete_returned_is_answered() {
    let (_dir, engine, scope) = engine_with_one_record();
    let seen = race(
        engine,
        scope,
        text_search(),
        40,
        |e, t| {
            e.delete_tenant(&op(), t).unwrap();
        },
        |e, t| {
            e.restore_tenant(&op(), t).unwrap();
        },
        |e| matches!(e, EngineError::TenantNotFound(_)),
    );
    check(&seen);
}

#[test]
fn a_purged_tenant_is_refused_right_after_the_purge_even_when_recreated() {
    let (_dir, engine, scope) = engine_with_one_record();
    let tenant = scope.tenant().clone();
    // Known live in memory, then purged: the old credential's scope is refused at once.
    engine
        .search(&scope, &RequestScope::default(), &text_search())
        .unwrap();
    engine.purge_tenant(&op(), &tenant).unwrap();
    let refused = engine.search(&scope, &RequestScope::default(), &text_search());
    assert!(
        matches!(refused, Err(EngineError::TenantNotFound(_))),
        "{refused:?}"
    );
    // A new incarnation under the same id does not revive the old scope.
    engine.create_tenant(&op(), &tenant, None).unwrap();
    let refused = engine.search(&scope, &RequestScope::default(), &text_search());
    assert!(
        matches!(refused, Err(EngineError::TenantNotFound(_))),
        "{refused:?}"
    );
}

fn suspend_race(request: SearchRequest) {
    let (_dir, engine, scope) = engine_with_one_record();
    let seen = race(
        engine,
        scope,
        request,
        40,
        |e, t| {
            e.suspend_tenant(&op(), t).unwrap();
        },
        |e, t| {
            e.resume_tenant(&op(), t).unwrap();
        },
        |e| matches!(e, EngineError::TenantSuspended(_)),
    );
    check(&seen);
}

#[test]
fn no_vector_search_started_after_a_suspend_returned_is_answered() {
    suspend_race(vector_search());
}

#[test]
fn no_text_mode_search_started_after_a_suspend_returned_is_answered() {
    suspend_race(text_mode_search());
}

#[test]
fn no_vector_search_started_after_a_soft_delete_returned_is_answered() {
    let (_dir, engine, scope) = engine_with_one_record();
    let seen = race(
        engine,
        scope,
        vector_search(),
        40,
        |e, t| {
            e.delete_tenant(&op(), t).unwrap();
        },
        |e, t| {
            e.restore_tenant(&op(), t).unwrap();
        },
        |e| matches!(e, EngineError::TenantNotFound(_)),
    );
    check(&seen);
}

#[test]
fn a_purged_tenants_vector_and_text_mode_searches_are_refused_even_when_recreated() {
    let (_dir, engine, scope) = engine_with_one_record();
    for request in [vector_search(), text_mode_search()] {
        engine
            .search(&scope, &RequestScope::default(), &request)
            .unwrap();
    }
    engine.purge_tenant(&op(), scope.tenant()).unwrap();
    // A new incarnation under the same id does not revive the old scope either.
    engine.create_tenant(&op(), scope.tenant(), None).unwrap();
    for request in [vector_search(), text_mode_search()] {
        let refused = engine.search(&scope, &RequestScope::default(), &request);
        assert!(
            matches!(refused, Err(EngineError::TenantNotFound(_))),
            "{refused:?}"
        );
    }
}
