//! Where request bodies are parsed: in the sending tenant's share of the pool, never on the
//! async threads that read every tenant's requests.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use strata_auth::{Authenticator, Grant, OperatorScope, Permissions, TenantScope};
use strata_engine::{Engine, EngineConfig};
use strata_types::TenantId;

use super::{ApiConfig, AppState};
use crate::admission::PoolConfig;
use crate::input::JsonObject;
use crate::tenant_bodies::{BodySlot, BodyTenant};

fn state_with_one_worker(dir: &std::path::Path) -> AppState {
    let engine = Arc::new(Engine::open(dir, EngineConfig::default()).expect("engine"));
    let auth = Arc::new(Authenticator::new(&Default::default(), None).expect("auth"));
    let config = ApiConfig {
        pool: PoolConfig {
            workers: 1,
            reserved_workers: 0,
            ..PoolConfig::default()
        },
        ..ApiConfig::default()
    };
    AppState::new(engine, auth, config).expect("state")
}

fn scope_of(state: &AppState, tenant: &str) -> TenantScope {
    let id = TenantId::parse(tenant).expect("id");
    let op = OperatorScope::for_tests();
    state.engine.create_tenant(&op, &id, None).expect("tenant");
    let meta = state.engine.tenant_meta(&id).expect("meta");
    let grant = Grant {
        permissions: Permissions::read_write(),
        user_tokens: None,
        domains: None,
    };
    TenantScope::for_tests(&meta, grant)
}

/// A tenant's body, as authentication leaves the request: with its tenant and its share.
fn request_of(
    scope: &TenantScope,
    share: &crate::admission::Share,
    body: impl Into<String>,
) -> Request {
    let mut req = Request::new(Body::from(body.into()));
    req.extensions_mut().insert(BodyTenant {
        tenant: scope.tenant().clone(),
        key: scope.key(),
        slot: BodySlot::default(),
    });
    req.extensions_mut().insert(share.clone());
    req
}

/// With the pool's only worker held by another tenant, a tenant's large body waits in that
/// tenant's own queue to be parsed, and is parsed once the worker is free: the parse is a job
/// in its share (on the old code it ran at once, on the async thread, and never queued).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_body_is_parsed_in_its_share_of_the_pool() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = state_with_one_worker(dir.path());
    let holder = state.admit(&scope_of(&state, "holder")).expect("admit");
    let sender_scope = scope_of(&state, "sender");
    let sender = state.admit(&sender_scope).expect("admit");

    let (started, held) = tokio::sync::oneshot::channel();
    let (release, wait) = std::sync::mpsc::channel::<()>();
    let hold = {
        let state = state.clone();
        tokio::spawn(async move {
            state
                .run_tenant(&holder, move |_| {
                    let _ = started.send(());
                    let _ = wait.recv();
                    Ok(())
                })
                .await
        })
    };
    held.await.expect("the holder's job started");

    // A small body is parsed at once, with no job: its size bounds its cost.
    let small = request_of(&sender_scope, &sender.share, r#"{"a":1}"#);
    let JsonObject(map) = JsonObject::from_request(small, &state)
        .await
        .expect("small");
    assert_eq!(map["a"], 1);
    let pad = "x".repeat(crate::input::PARSE_INLINE_BYTES);
    let large = format!(r#"{{"a":{{"b":[1,2]}},"pad":"{pad}"}}"#);
    let req = request_of(&sender_scope, &sender.share, large);
    let parse = {
        let state = state.clone();
        tokio::spawn(async move { JsonObject::from_request(req, &state).await })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while state.gate.queued_in(&sender.share) == 0 {
        assert!(
            !parse.is_finished(),
            "the body was parsed without a job in the sender's share"
        );
        assert!(Instant::now() < deadline, "the parse never queued");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!parse.is_finished());
    drop(release);
    hold.await.expect("join").expect("holder");
    let JsonObject(map) = parse.await.expect("join").expect("parsed");
    assert_eq!(map["a"]["b"][1], 2);
    drop(sender);
    let s = state.clone();
    tokio::task::spawn_blocking(move || s.shutdown_pool(Duration::from_secs(5)))
        .await
        .expect("join");
}

/// The parse in the pool keeps the parse's refusals: a repeated key naming another tenant is
/// still a tenant mismatch, and an empty body still reads as `{}` (without a job).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_parsed_in_the_pool_is_refused_as_before() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = state_with_one_worker(dir.path());
    let scope = scope_of(&state, "sender");
    let admitted = state.admit(&scope).expect("admit");
    let req = request_of(
        &scope,
        &admitted.share,
        r#"{"tenant_id":"other","tenant_id":"x"}"#,
    );
    let refused = JsonObject::from_request(req, &state)
        .await
        .err()
        .expect("refused");
    assert_eq!(refused.status_and_code().1, "TENANT_MISMATCH");
    let req = request_of(&scope, &admitted.share, "");
    let JsonObject(map) = JsonObject::from_request(req, &state).await.expect("empty");
    assert!(map.is_empty());
    // An operator's body (no tenant share) is parsed too.
    let JsonObject(map) = JsonObject::from_request(Request::new(Body::from(r#"{"k":1}"#)), &state)
        .await
        .expect("operator body");
    assert_eq!(map["k"], 1);
}
