//! The error contract over real HTTP: stable shape and codes, request ids, body limits, names
//! validated with the field named, and foreign ids indistinguishable from missing ones.

mod common;

use common::{Server, code};
use serde_json::json;

#[test]
fn errors_have_the_stable_shape() {
    let server = Server::start();
    server.tenant("acme");
    let k = server.key("acme", json!({}));

    let (s, v) = server.call("GET", "/nope", Some(&k), &[], None);
    assert_eq!((s, code(&v)), (404, "NOT_FOUND"), "{v}");
    let (s, v) = server.call("PUT", "/v1/search", Some(&k), &[], None);
    assert_eq!((s, code(&v)), (405, "METHOD_NOT_ALLOWED"), "{v}");

    // Invalid names are 400 with the field named, from every source.
    for (path, headers, body, field) in [
        (
            "/v1/memories/list",
            vec![("x-strata-domain", "no spaces")],
            json!({}),
            "memory_domain",
        ),
        (
            "/v1/memories/list",
            vec![],
            json!({"run_id": "a/b"}),
            "run_id",
        ),
        (
            "/v1/memories/list",
            vec![],
            json!({"user_tokens": ["u alice"]}),
            "user_tokens",
        ),
        (
            "/v1/memories",
            vec![],
            json!({"content": "x", "kind": "bad kind"}),
            "kind",
        ),
        (
            "/v1/memories",
            vec![],
            json!({"content": "x", "memory_scope": ""}),
            "memory_scope",
        ),
    ] {
        let (s, v) = server.call("POST", path, Some(&k), &headers, Some(&body));
        assert_eq!((s, code(&v)), (400, "BAD_REQUEST"), "{body}: {v}");
        let message = v["error"]["message"].as_str().unwrap_or("");
        assert!(
            message.contains(field),
            "message does not name {field}: {message}"
        );
    }
    let (s, v) = server.call(
        "GET",
        "/v1/memories/list?memory_scope=a%20b",
        Some(&k),
        &[],
        None,
    );
    assert_eq!((s, code(&v)), (400, "BAD_REQUEST"), "{v}");
    let (s, v) = server.post("/v1/memories/list", &k, json!({"surprise": 1}));
    assert_eq!(
        (s, code(&v)),
        (400, "BAD_REQUEST"),
        "unknown fields are refused: {v}"
    );
}

#[test]
fn request_ids_are_returned_and_kept() {
    let server = Server::start();
    let res = reqwest::blocking::get(format!("{}/healthz", server.url)).unwrap();
    let id = res.headers().get("x-request-id").expect("x-request-id");
    assert!(!id.is_empty());
    let res = reqwest::blocking::Client::new()
        .get(format!("{}/healthz", server.url))
        .header("x-request-id", "my-trace-1")
        .send()
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "my-trace-1");
}

#[test]
fn oversized_bodies_are_refused() {
    let server = Server::start();
    server.tenant("acme");
    let k = server.key("acme", json!({}));
    let huge = "x".repeat(17 * 1024 * 1024);
    let (s, v) = server.post("/v1/memories", &k, json!({ "content": huge }));
    assert_eq!((s, code(&v)), (413, "PAYLOAD_TOO_LARGE"), "{v}");
}

#[test]
fn foreign_ids_look_exactly_like_missing_ids() {
    let server = Server::start();
    server.tenant("a");
    server.tenant("b");
    let a = server.key("a", json!({}));
    let b = server.key("b", json!({}));
    let (s, _) = server.post(
        "/v1/memories",
        &a,
        json!({"id": "secret", "content": "a's"}),
    );
    assert_eq!(s, 201);
    let foreign = server.get("/v1/memories/secret", &b);
    let missing = server.get("/v1/memories/never-existed", &b);
    assert_eq!(foreign, missing);
    assert_eq!(foreign.0, 404);
}
