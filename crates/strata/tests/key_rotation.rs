//! Key rotation over HTTP: the successor works at once with the old key's grant, the old key
//! keeps working through its grace period and then stops, both changes are audited in the
//! tenant's log, and a revoked key is not rotated. Also through `strata key rotate`.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{OPERATOR_KEY, Server};
use serde_json::{Value, json};

fn rotate(server: &Server, id: &str, body: Value) -> (u16, Value) {
    server.post(&format!("/v1/admin/keys/{id}/rotate"), OPERATOR_KEY, body)
}

fn works(server: &Server, secret: &str) -> bool {
    match server.get("/v1/memories/list", secret).0 {
        200 => true,
        401 => false,
        other => panic!("unexpected status {other}"),
    }
}

#[test]
fn a_rotated_key_works_through_its_grace_and_its_successor_at_once() {
    let server = Server::start();
    server.tenant("acme");
    let (s, old) = server.post(
        "/v1/admin/keys",
        OPERATOR_KEY,
        json!({"tenant": "acme", "name": "ingest", "permissions": ["read", "write"],
               "user_tokens": ["u:alice"], "domains": ["support"]}),
    );
    assert_eq!(s, 201, "{old}");
    let old_id = old["id"].as_str().expect("id");
    let old_secret = old["key"].as_str().expect("key");

    let (s, new) = rotate(&server, old_id, json!({"grace_secs": 2}));
    assert_eq!(s, 201, "{new}");
    let new_secret = new["key"].as_str().expect("key");
    assert_ne!(new["id"], old["id"]);
    for field in [
        "tenant",
        "name",
        "permissions",
        "user_tokens",
        "domains",
        "expires_at",
    ] {
        assert_eq!(new[field], old[field], "{field}: {new}");
    }
    assert_eq!(new["replaces"]["id"], old["id"], "{new}");
    let deadline = new["replaces"]["expires_at"].as_i64().expect("a deadline");
    assert!(works(&server, new_secret) && works(&server, old_secret));
    // The successor's binding is the old key's: it may not widen to another domain.
    let (s, v) = server.get("/v1/memories/list?memory_domain=other", new_secret);
    assert_eq!(s, 403, "{v}");

    // Both changes in the tenant's audit log, without a secret.
    let (s, audit) = server.get("/v1/admin/audit?tenant=acme&limit=100", OPERATOR_KEY);
    assert_eq!(s, 200, "{audit}");
    let rows = audit["rows"].as_array().expect("rows");
    let of = |action: &str| rows.iter().filter(|r| r["action"] == action).count();
    assert_eq!((of("key.rotate"), of("key.create")), (1, 2), "{audit}");
    let rotated = rows.iter().find(|r| r["action"] == "key.rotate").unwrap();
    assert_eq!(rotated["detail"]["key"], old["id"]);
    assert_eq!(rotated["detail"]["expires_at"], json!(deadline));
    assert_eq!(
        rotated["detail"]["revoked_at"],
        Value::Null,
        "a grace, not a revocation"
    );
    assert!(!audit.to_string().contains(&new_secret[20..]));

    // The grace ends: the old key stops, the new one goes on.
    let until = Instant::now() + Duration::from_secs(30);
    while works(&server, old_secret) {
        assert!(Instant::now() < until, "the old key outlived its grace");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(common::now_ms() >= deadline);
    assert!(works(&server, new_secret));

    // A key past its end is not rotated; neither is a missing one.
    let (s, v) = rotate(&server, old_id, json!({}));
    assert_eq!((s, common::code(&v)), (409, "CONFLICT"), "{v}");
    let (s, v) = rotate(&server, "0123456789abcdef", json!({}));
    assert_eq!((s, common::code(&v)), (404, "NOT_FOUND"), "{v}");
    let (s, v) = rotate(
        &server,
        new["id"].as_str().unwrap(),
        json!({"grace_secs": -1}),
    );
    assert_eq!((s, common::code(&v)), (400, "BAD_REQUEST"), "{v}");
    let (s, v) = rotate(&server, new["id"].as_str().unwrap(), json!({"grace": 5}));
    assert_eq!((s, common::code(&v)), (400, "BAD_REQUEST"), "{v}");
    // A grace is bounded: a rotated key that lived on for years would not be rotated.
    let (s, v) = rotate(
        &server,
        new["id"].as_str().unwrap(),
        json!({"grace_secs": 30 * 86_400 + 1}),
    );
    assert_eq!((s, common::code(&v)), (400, "BAD_REQUEST"), "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("grace_secs: "),
        "{v}"
    );
}

#[test]
fn the_cli_rotates_and_grace_zero_revokes_at_once() {
    let server = Server::start();
    server.tenant("acme");
    let (s, old) = server.post("/v1/admin/keys", OPERATOR_KEY, json!({"tenant": "acme"}));
    assert_eq!(s, 201, "{old}");
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args([
            "key",
            "rotate",
            old["id"].as_str().unwrap(),
            "--grace-secs",
            "0",
        ])
        .args(["--server", &server.url])
        .env("STRATA_KEY", OPERATOR_KEY)
        .output()
        .expect("run strata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(new["replaces"]["revoked_at"].is_i64(), "{new}");
    assert!(!works(&server, old["key"].as_str().unwrap()));
    // The audit row says the old key was revoked, not given a grace.
    let (s, audit) = server.get("/v1/admin/audit?tenant=acme&limit=100", OPERATOR_KEY);
    assert_eq!(s, 200, "{audit}");
    let rotated = audit["rows"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["action"] == "key.rotate"))
        .expect("a key.rotate row");
    assert_eq!(
        rotated["detail"]["revoked_at"],
        new["replaces"]["revoked_at"]
    );
    assert!(works(&server, new["key"].as_str().unwrap()));
}
