//! The expiry sweep and the deletes and writes that meet records past their `expires_at`.

use std::time::Duration;

use strata_auth::{OperatorScope, TenantScope};
use strata_store::{AdaptiveReads, ExpiryReads, Reads};
use strata_types::{
    CollectionName, Domain, FeedbackRequest, Filter, Metric, NewLink, NewRecord, RecordId,
    RequestScope, TenantId, TokenSelector, UserToken, now_millis, related,
};

use crate::lifecycle::{TenantLimits, usage};
use crate::test_support::admin_scope;
use crate::{Engine, EngineConfig, EngineError, IsolationLevel, TenantUpdate};

/// How long the expiring records of these tests live.
const TTL_MS: i64 = 300;

fn acme() -> TenantId {
    TenantId::parse("acme").unwrap()
}

fn id(s: &str) -> RecordId {
    RecordId::parse(s).unwrap()
}

fn notes() -> CollectionName {
    CollectionName::parse("notes").unwrap()
}

fn everyone() -> RequestScope {
    RequestScope {
        user_tokens: Some(TokenSelector::AllPrincipals),
        ..Default::default()
    }
}

/// The request of end user `u`.
fn user(u: &str) -> RequestScope {
    RequestScope {
        user_tokens: Some(TokenSelector::Tokens(vec![UserToken::parse(u).unwrap()])),
        ..Default::default()
    }
}

/// Record `name` of collection `notes`, expiring `TTL_MS` from now when `expires`.
fn record(name: &str, expires: bool) -> NewRecord {
    NewRecord {
        id: Some(id(name)),
        modality: Some(notes()),
        vector: Some(vec![1.0, name.len() as f32]),
        content: Some(format!("note {name}")),
        expires_at: expires.then(|| now_millis() + TTL_MS),
        ..Default::default()
    }
}

/// Tenant `acme` with a two-dimensional `notes` collection; its admin scope.
fn tenant(dir: &std::path::Path) -> (Engine, TenantScope) {
    tenant_at(dir, IsolationLevel::Shared)
}

/// [`tenant`] at isolation level `level`.
fn tenant_at(dir: &std::path::Path, level: IsolationLevel) -> (Engine, TenantScope) {
    let engine = Engine::open(dir, EngineConfig::default()).unwrap();
    engine
        .create_tenant_at(&OperatorScope::for_tests(), &acme(), None, level, None)
        .unwrap();
    let scope = admin_scope(&engine, "acme");
    engine
        .create_collection(&scope, &notes(), 2, Metric::Cosine)
        .unwrap();
    (engine, scope)
}

fn wait_past_ttl() {
    std::thread::sleep(Duration::from_millis(TTL_MS as u64 + 100));
}

fn stored_records(engine: &Engine, scope: &TenantScope) -> u64 {
    usage(&engine.store.read().unwrap(), scope.key())
        .unwrap()
        .records
}

fn has_pheromone(engine: &Engine, scope: &TenantScope, name: &str) -> bool {
    let r = engine.store.read().unwrap();
    r.pheromone(scope.key(), &Domain::default_domain(), &id(name))
        .unwrap()
        .is_some()
}

fn reinforce(engine: &Engine, scope: &TenantScope, req: &RequestScope, name: &str) {
    let f = FeedbackRequest {
        ids: vec![id(name)],
        ..Default::default()
    };
    engine.feedback(scope, req, &f).unwrap();
}

fn assert_verified(engine: &Engine) {
    let report = engine
        .verify_tenant(&OperatorScope::for_tests(), &acme())
        .unwrap();
    assert!(report.ok, "{:?}", report.problems);
}

/// Whether the tenant's expiry index holds its older records too (the backfill ended).
fn index_built(engine: &Engine, scope: &TenantScope) -> bool {
    engine
        .store
        .read()
        .unwrap()
        .expiry_built(scope.key())
        .unwrap()
}

fn sweep(engine: &Engine) -> crate::ExpirySweep {
    engine
        .sweep_expired(&OperatorScope::for_tests(), || false)
        .unwrap()
}

#[test]
fn the_sweep_removes_expired_records_with_their_usage_links_and_pheromones() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = tenant(dir.path());
    let batch = vec![
        record("a", true),
        record("b", true),
        record("c", true),
        record("keep", false),
    ];
    engine.put(&scope, &everyone(), batch).unwrap();
    let link = NewLink {
        source: id("keep"),
        target: id("a"),
        relation: related(),
        weight: 1.0,
    };
    engine.link_batch(&scope, &everyone(), vec![link]).unwrap();
    reinforce(&engine, &scope, &everyone(), "a");
    assert_eq!(sweep(&engine).records, 0, "nothing is due yet");
    wait_past_ttl();
    assert_eq!(stored_records(&engine, &scope), 4, "hidden, still stored");

    let swept = sweep(&engine);
    assert_eq!((swept.records, swept.tenants, swept.more), (3, 1, false));
    assert_eq!(stored_records(&engine, &scope), 1);
    assert!(!has_pheromone(&engine, &scope, "a"));
    let links = engine
        .record_links(&scope, &everyone(), &id("keep"))
        .unwrap();
    assert!(
        links.outgoing.is_empty(),
        "the link to a swept record went with it"
    );
    let r = engine.store.read().unwrap();
    assert!(r.stored_record(scope.key(), &id("a")).unwrap().is_none());
    assert!(
        r.expired_entries(scope.key(), i64::MAX, 10)
            .unwrap()
            .is_empty()
    );
    drop(r);
    assert_verified(&engine);
    assert_eq!(sweep(&engine), crate::ExpirySweep::default());
}

#[test]
fn records_stored_before_the_expiry_index_are_entered_once_and_swept() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = tenant(dir.path());
    let batch = vec![record("old", true), record("later", false)];
    engine.put(&scope, &everyone(), batch).unwrap();
    engine
        .store
        .write(|w| w.forget_expiry_index_for_tests(scope.key()))
        .unwrap();
    // A tenant without its index complete verifies clean: the entries may be missing.
    assert_verified(&engine);
    wait_past_ttl();
    assert_eq!(sweep(&engine).records, 1);
    assert!(index_built(&engine, &scope));
    assert_eq!(stored_records(&engine, &scope), 1);
    assert_verified(&engine);
}

#[test]
fn a_stale_expiry_entry_fails_verify_and_the_sweep_drops_it() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = tenant(dir.path());
    engine
        .put(&scope, &everyone(), vec![record("a", false)])
        .unwrap();
    // An entry for a record that does not expire, as a damaged file could hold.
    let at = now_millis() + TTL_MS;
    engine
        .store
        .write(|w| w.put_expiry_entry_for_tests(scope.key(), at, &id("a")))
        .unwrap();
    let report = engine
        .verify_tenant(&OperatorScope::for_tests(), &acme())
        .unwrap();
    assert!(!report.ok);
    wait_past_ttl();
    assert_eq!(sweep(&engine).records, 0);
    assert_eq!(stored_records(&engine, &scope), 1, "the record stays");
    let r = engine.store.read().unwrap();
    assert!(
        r.expired_entries(scope.key(), i64::MAX, 10)
            .unwrap()
            .is_empty()
    );
    drop(r);
    assert_verified(&engine);
}

#[test]
fn a_delete_by_id_or_filter_takes_an_expired_record_within_its_scope() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = tenant(dir.path());
    let of = |name: &str, u: &str| NewRecord {
        user_tokens: Some(vec![UserToken::parse(u).unwrap()]),
        ..record(name, true)
    };
    let batch = vec![of("a1", "u:a"), of("a2", "u:a"), of("b1", "u:b")];
    engine.put(&scope, &everyone(), batch).unwrap();
    wait_past_ttl();
    assert!(matches!(
        engine.get(&scope, &user("u:a"), &id("a1")),
        Err(EngineError::NotFound)
    ));
    // Another user's expired record is still out of reach.
    assert!(matches!(
        engine.delete(&scope, &user("u:b"), &id("a1")),
        Err(EngineError::NotFound)
    ));
    engine.delete(&scope, &user("u:a"), &id("a1")).unwrap();
    // Forgetting end user u:a leaves none of their records, expired or not.
    let all = Filter::parse(&serde_json::json!({})).unwrap();
    assert_eq!(engine.delete_where(&scope, &user("u:a"), &all).unwrap(), 1);
    assert_eq!(stored_records(&engine, &scope), 1, "u:b's record stays");
    let r = engine.store.read().unwrap();
    assert!(r.stored_record(scope.key(), &id("a2")).unwrap().is_none());
    drop(r);
    assert_verified(&engine);
}

#[test]
fn a_write_over_an_expired_id_is_a_fresh_record() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = tenant(dir.path());
    let old = NewRecord {
        user_tokens: Some(vec![UserToken::parse("u:a").unwrap()]),
        confidence: Some(strata_types::Confidence::initial(0.9)),
        ..record("r", true)
    };
    engine
        .put(&scope, &everyone(), vec![old, record("keep", false)])
        .unwrap();
    let link = NewLink {
        source: id("r"),
        target: id("keep"),
        relation: related(),
        weight: 1.0,
    };
    engine.link_batch(&scope, &everyone(), vec![link]).unwrap();
    reinforce(&engine, &scope, &user("u:a"), "r");
    assert!(has_pheromone(&engine, &scope, "r"));
    wait_past_ttl();

    let new = NewRecord {
        user_tokens: Some(vec![UserToken::parse("u:b").unwrap()]),
        ..record("r", false)
    };
    let out = engine.put(&scope, &user("u:b"), vec![new]).unwrap();
    assert!(out[0].created, "a new record, not a replacement");
    assert!(
        !has_pheromone(&engine, &scope, "r"),
        "no pheromone inherited"
    );
    let fresh = engine.get(&scope, &user("u:b"), &id("r")).unwrap();
    assert_ne!(fresh.confidence.value, 0.9, "no confidence inherited");
    let links = engine.record_links(&scope, &everyone(), &id("r")).unwrap();
    assert!(links.outgoing.is_empty() && links.incoming.is_empty());
    assert_verified(&engine);
}

#[test]
fn expired_records_hold_quota_until_swept() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = tenant(dir.path());
    let limits = TenantLimits {
        max_vectors: Some(2),
        ..Default::default()
    };
    let update = TenantUpdate {
        limits: Some(limits),
        ..Default::default()
    };
    engine
        .update_tenant(&OperatorScope::for_tests(), &acme(), update)
        .unwrap();
    let batch = vec![record("a", true), record("b", true)];
    engine.put(&scope, &everyone(), batch).unwrap();
    wait_past_ttl();
    let more = || engine.put(&scope, &everyone(), vec![record("c", false)]);
    assert!(matches!(more(), Err(EngineError::QuotaExceeded { .. })));
    sweep(&engine);
    more().unwrap();
}

#[test]
fn the_sweep_skips_a_suspended_tenant_until_it_is_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = tenant(dir.path());
    engine
        .put(&scope, &everyone(), vec![record("a", true)])
        .unwrap();
    wait_past_ttl();
    let op = OperatorScope::for_tests();
    engine.suspend_tenant(&op, &acme()).unwrap();
    assert_eq!(sweep(&engine).records, 0);
    assert_eq!(stored_records(&engine, &scope), 1);
    engine.resume_tenant(&op, &acme()).unwrap();
    assert_eq!(sweep(&engine).records, 1);
    assert_eq!(stored_records(&engine, &scope), 0);
}

#[test]
fn the_sweep_reaches_a_dedicated_tenants_own_file() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = tenant_at(dir.path(), IsolationLevel::Dedicated);
    assert!(engine.store.is_dedicated(scope.key()));
    let batch = vec![record("a", true), record("keep", false)];
    engine.put(&scope, &everyone(), batch).unwrap();
    engine
        .store
        .write(|w| w.forget_expiry_index_for_tests(scope.key()))
        .unwrap();
    wait_past_ttl();
    assert_eq!(sweep(&engine).records, 1);
    assert_eq!(stored_records(&engine, &scope), 1);
    assert!(index_built(&engine, &scope));
    assert_verified(&engine);
}

/// A tenant's expiry index is complete from its creation, at any level: a sweep never enters
/// a new tenant's records with a write of its own (at 100,000 new tenants, the first pass
/// took minutes of durable writes).
#[test]
fn a_new_tenants_expiry_index_is_complete_from_its_creation() {
    for level in [
        IsolationLevel::Shared,
        IsolationLevel::Partition,
        IsolationLevel::Dedicated,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (engine, scope) = tenant_at(dir.path(), level);
        assert!(index_built(&engine, &scope), "{level:?}");
    }
}

#[test]
fn older_records_are_entered_page_by_page_to_the_last() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = tenant(dir.path());
    // Five records, three with an expiry; pages of two end with a page of one.
    let batch = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|n| record(n, *n != "b" && *n != "d"))
        .collect();
    engine.put(&scope, &everyone(), batch).unwrap();
    engine
        .store
        .write(|w| w.forget_expiry_index_for_tests(scope.key()))
        .unwrap();
    let meta = engine.tenant_meta(&acme()).unwrap();
    assert_eq!(engine.enter_older_expiries_by(&meta, 2).unwrap(), 3);
    let r = engine.store.read().unwrap();
    assert!(r.expiry_built(scope.key()).unwrap());
    assert_eq!(
        r.expired_entries(scope.key(), i64::MAX, 10).unwrap().len(),
        3
    );
    drop(r);
    assert_verified(&engine);
    // Pages that end exactly at the last record still mark the index complete.
    engine
        .store
        .write(|w| w.forget_expiry_index_for_tests(scope.key()))
        .unwrap();
    assert_eq!(engine.enter_older_expiries_by(&meta, 5).unwrap(), 3);
    assert!(index_built(&engine, &scope));
    assert_verified(&engine);
}

/// A pass asked to stop (a server shutting down) ends before its next tenant, leaving the
/// records for a later pass.
#[test]
fn a_pass_asked_to_stop_ends_before_its_next_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = tenant(dir.path());
    engine
        .put(&scope, &everyone(), vec![record("a", true)])
        .unwrap();
    wait_past_ttl();
    let stopped = engine
        .sweep_expired(&OperatorScope::for_tests(), || true)
        .unwrap();
    assert_eq!(stopped.records, 0);
    assert_eq!(stored_records(&engine, &scope), 1);
    assert_eq!(sweep(&engine).records, 1);
    assert_eq!(stored_records(&engine, &scope), 0);
}

/// After the first pass, a pass reads the expiry index of the tenants planned with records
/// due alone: twenty tenants without an expiry cost it nothing, and a record written with
/// one after the first pass is swept all the same.
#[test]
fn passes_after_the_first_visit_only_the_tenants_with_records_due() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = tenant(dir.path());
    let op = OperatorScope::for_tests();
    for i in 0..20 {
        let other = TenantId::parse(format!("t{i}")).unwrap();
        engine.create_tenant(&op, &other, None).unwrap();
        let s = admin_scope(&engine, other.as_str());
        engine
            .create_collection(&s, &notes(), 2, Metric::Cosine)
            .unwrap();
        engine
            .put(&s, &everyone(), vec![record("x", false)])
            .unwrap();
    }
    engine
        .put(&scope, &everyone(), vec![record("a", false)])
        .unwrap();
    let first = sweep(&engine);
    assert_eq!((first.visited, first.records), (21, 0));
    assert_eq!(engine.indexes.expiring.len(), 0);
    assert_eq!(sweep(&engine).visited, 0);
    // Written after the first pass: planned by its write's note.
    engine
        .put(&scope, &everyone(), vec![record("b", true)])
        .unwrap();
    assert_eq!(engine.indexes.expiring.len(), 1);
    // Nothing due yet: no tenant's index is read.
    assert_eq!(sweep(&engine).visited, 0);
    wait_past_ttl();
    let due = sweep(&engine);
    assert_eq!((due.visited, due.records), (1, 1));
    assert_eq!(stored_records(&engine, &scope), 1);
    assert_eq!(engine.indexes.expiring.len(), 0);
    assert_eq!(sweep(&engine).visited, 0);
}

/// A patch that gives a record an expiry after the first pass (a write that holds its
/// tenant's order, not a batched one) plans its tenant too.
#[test]
fn a_patch_that_adds_an_expiry_plans_its_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = tenant(dir.path());
    engine
        .put(&scope, &everyone(), vec![record("a", false)])
        .unwrap();
    assert_eq!(sweep(&engine).visited, 1);
    assert_eq!(engine.indexes.expiring.len(), 0);
    let patch = strata_types::RecordPatch {
        expires_at: Some(Some(now_millis() + TTL_MS)),
        ..Default::default()
    };
    engine.patch(&scope, &everyone(), &id("a"), patch).unwrap();
    assert_eq!(engine.indexes.expiring.len(), 1);
    wait_past_ttl();
    let swept = sweep(&engine);
    assert_eq!((swept.visited, swept.records), (1, 1));
    assert_eq!(stored_records(&engine, &scope), 0);
}

/// A tenant from before the expiry index, suspended: the full pass cannot enter its records
/// (only an active tenant's are), so it stays planned and is swept once resumed.
#[test]
fn a_suspended_tenant_without_a_complete_index_stays_planned() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = tenant(dir.path());
    engine
        .put(&scope, &everyone(), vec![record("a", true)])
        .unwrap();
    engine
        .store
        .write(|w| w.forget_expiry_index_for_tests(scope.key()))
        .unwrap();
    let op = OperatorScope::for_tests();
    engine.suspend_tenant(&op, &acme()).unwrap();
    wait_past_ttl();
    assert_eq!(sweep(&engine).records, 0);
    assert_eq!(sweep(&engine).records, 0);
    engine.resume_tenant(&op, &acme()).unwrap();
    assert_eq!(sweep(&engine).records, 1);
    assert_eq!(stored_records(&engine, &scope), 0);
    assert!(index_built(&engine, &scope));
}

/// An import writes its records behind the writes' notes: the next pass visits the imported
/// tenant, and sweeps what expired there.
#[test]
fn an_imported_tenants_expired_records_are_swept_by_the_next_pass() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, scope) = tenant(dir.path());
    let op = OperatorScope::for_tests();
    engine
        .put(&scope, &everyone(), vec![record("a", true)])
        .unwrap();
    sweep(&engine);
    let mut lines = Vec::new();
    engine
        .export_tenant(&op, &acme(), |l| {
            lines.push(l.clone());
            Ok(())
        })
        .unwrap();
    let copy = TenantId::parse("copy").unwrap();
    engine
        .import_tenant(&op, &copy, lines.into_iter().map(Ok))
        .unwrap();
    wait_past_ttl();
    let swept = sweep(&engine);
    assert_eq!((swept.visited, swept.records), (2, 2));
    let copy_scope = admin_scope(&engine, "copy");
    assert_eq!(stored_records(&engine, &copy_scope), 0);
}
