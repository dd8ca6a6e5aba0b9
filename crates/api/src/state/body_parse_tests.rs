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
use crate::json_body::JsonBody;
use crate::tenant_bodies::{BodySlot, BodyTenant};

/// A pool of one worker. Long jobs do not give way (`long_job_after` zero): a test that holds
/// the worker with a job of one tenant relies on the other tenant's job waiting for it, and
/// with the default 10 ms threshold a spare thread would run that job as soon as the holder
/// counted as long, which on a loaded machine can happen before the test looks at the queue.
fn state_with_one_worker(dir: &std::path::Path) -> AppState {
    let engine = Arc::new(Engine::open(dir, EngineConfig::default()).expect("engine"));
    let auth = Arc::new(Authenticator::new(&Default::default(), None).expect("auth"));
    let config = ApiConfig {
        pool: PoolConfig {
            workers: 1,
            reserved_workers: 0,
            long_job_after: Duration::ZERO,
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

/// The name of the thread a conversion ran on.
fn converted_on(map: serde_json::Map<String, serde_json::Value>) -> (usize, String) {
    let name = std::thread::current().name().unwrap_or("").to_owned();
    (map.len(), name)
}

/// A large body is converted to its typed values in the same pool job as its parse (on a pool
/// worker, in the sender's share), never on the async thread that read it; a small one is
/// parsed and converted where it was read, with no job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_body_is_converted_on_a_pool_worker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = state_with_one_worker(dir.path());
    let scope = scope_of(&state, "sender");
    let admitted = state.admit(&scope).expect("admit");
    let small = request_of(&scope, &admitted.share, r#"{"a":1}"#);
    let body = JsonBody::from_request(small, &state).await.expect("small");
    let (keys, thread) = body
        .convert(&state, |m| Ok(converted_on(m)))
        .await
        .expect("small");
    assert_eq!(keys, 1);
    assert!(
        !thread.starts_with("strata-worker"),
        "a small body took a job: {thread}"
    );

    let pad = "x".repeat(crate::input::PARSE_INLINE_BYTES);
    let large = request_of(
        &scope,
        &admitted.share,
        format!(r#"{{"a":1,"pad":"{pad}"}}"#),
    );
    let body = JsonBody::from_request(large, &state).await.expect("large");
    let (keys, thread) = body
        .convert(&state, |m| Ok(converted_on(m)))
        .await
        .expect("large");
    assert_eq!(keys, 2);
    assert!(
        thread.starts_with("strata-worker"),
        "converted on {thread:?}"
    );
    // A refusal of the conversion is the request's answer, as it was on the async thread.
    let pad = "x".repeat(crate::input::PARSE_INLINE_BYTES);
    let large = request_of(&scope, &admitted.share, format!(r#"{{"pad":"{pad}"}}"#));
    let body = JsonBody::from_request(large, &state).await.expect("large");
    let refused = body
        .convert(&state, |_| -> Result<(), _> {
            Err(crate::ApiError::BadRequest("no".into()))
        })
        .await
        .expect_err("refused");
    assert_eq!(refused.status_and_code().1, "BAD_REQUEST");
    drop(admitted);
    let s = state.clone();
    tokio::task::spawn_blocking(move || s.shutdown_pool(Duration::from_secs(5)))
        .await
        .expect("join");
}

/// A body of more values than any request has a use for is refused by its parse, in the pool
/// for a large one, with a 400 naming the bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_past_the_bound_of_values_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine_config = EngineConfig {
        limits: strata_types::RecordLimits {
            max_batch: 1,
            ..Default::default()
        },
        ..EngineConfig::default()
    };
    let engine = Arc::new(Engine::open(dir.path(), engine_config).expect("engine"));
    let auth = Arc::new(Authenticator::new(&Default::default(), None).expect("auth"));
    let state = AppState::new(engine, auth, ApiConfig::default()).expect("state");
    let scope = scope_of(&state, "sender");
    let admitted = state.admit(&scope).expect("admit");
    let max = crate::input::max_body_values(&state.engine.config().limits);
    // `{"a":[[0,0,…],[0,…],…]}` of `values` values: the object, the outer array, and inner
    // arrays of at most 16,384 zeros (the most one array may hold), each array one value too.
    let body_of = |values: usize| {
        let mut left = values - 2;
        let mut inner = Vec::new();
        while left > 0 {
            let zeros = (left - 1).min(16_384);
            inner.push(format!("[{}]", vec!["0"; zeros].join(",")));
            left -= zeros + 1;
        }
        format!(r#"{{"a":[{}]}}"#, inner.join(","))
    };
    // Parsed as a large body is, in the sender's share (the extractor's own 2 MB default
    // limit, which the router lifts, would refuse these bodies first).
    let parse = |items: usize| {
        let bytes = axum::body::Bytes::from(body_of(items));
        let tenant = Some(scope.tenant().clone());
        state.parse_body(Some(&admitted.share), tenant, bytes, Ok)
    };
    let map = parse(max).await.expect("at the bound");
    assert!(map["a"].as_array().is_some_and(|a| !a.is_empty()));
    let refused = parse(max + 1).await.expect_err("refused");
    let (status, code) = refused.status_and_code();
    assert_eq!((status.as_u16(), code), (400, "BAD_REQUEST"));
    let message = refused.to_string();
    assert!(
        message.contains(&format!("more than {max} JSON values")),
        "{message}"
    );
}

/// A large body's parse slot is its job's: a client that hangs up while its body is parsed
/// does not free the slot for another multi-second parse while the first still runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parse_slot_is_held_until_its_job_ends_even_when_the_client_leaves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = state_with_one_worker(dir.path());
    let scope = scope_of(&state, "sender");
    let admitted = state.admit(&scope).expect("admit");
    assert_eq!(state.parse_slots.free(), 1);
    // Past the bodies that take their tenant's slot only.
    let pad = "x".repeat(crate::parse_slots::SHORT_PARSE_BYTES);
    let large = request_of(&scope, &admitted.share, format!(r#"{{"pad":"{pad}"}}"#));
    let body = JsonBody::from_request(large, &state).await.expect("large");
    let (started, running) = tokio::sync::oneshot::channel();
    let (release, wait) = std::sync::mpsc::channel::<()>();
    let (ended, job_ended) = tokio::sync::oneshot::channel();
    let client = {
        let state = state.clone();
        tokio::spawn(async move {
            body.convert(&state, move |_| {
                let _ = started.send(());
                let _ = wait.recv();
                let _ = ended.send(());
                Ok(())
            })
            .await
        })
    };
    running.await.expect("the parse job started");
    // The client hangs up: its request's future is dropped while the job runs.
    client.abort();
    let _ = client.await;
    assert_eq!(
        state.parse_slots.free(),
        0,
        "the running parse still holds its slot"
    );
    drop(release);
    job_ended.await.expect("the job ended");
    let deadline = Instant::now() + Duration::from_secs(30);
    while state.parse_slots.free() == 0 {
        assert!(Instant::now() < deadline, "the slot never came back");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(admitted);
    let s = state.clone();
    tokio::task::spawn_blocking(move || s.shutdown_pool(Duration::from_secs(5)))
        .await
        .expect("join");
}

/// A job holding a parse slot is never moved to the background workers, a search's no more
/// than a body's conversion; one that reads without a slot may be, one that writes never.
#[test]
fn a_job_holding_a_parse_slot_is_never_demoted() {
    use strata_sched::Demotable;
    assert!(matches!(
        super::job_demotable(true, false),
        Demotable::ReadOnly
    ));
    assert!(matches!(super::job_demotable(true, true), Demotable::Never));
    assert!(matches!(
        super::job_demotable(false, false),
        Demotable::Never
    ));
    assert!(matches!(
        super::job_demotable(false, true),
        Demotable::Never
    ));
}
