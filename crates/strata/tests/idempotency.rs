//! `Idempotency-Key` on `POST /v1/memories`: a retry gets the first answer back and writes
//! nothing, also after the server was killed between the write and the retry; the same key
//! with another request is refused; keys are validated.

mod common;

use common::{Server, code};
use serde_json::{Value, json};

fn count(server: &Server, key: &str) -> u64 {
    let (status, v) = server.post("/v1/memories/count", key, json!({}));
    assert_eq!(status, 200, "{v}");
    v["count"].as_u64().expect("count")
}

/// Sends a write with an `Idempotency-Key`; returns the status, the body and whether the
/// answer was marked as replayed.
fn write(server: &Server, key: &str, idem: &str, body: &Value) -> (u16, Value, bool) {
    let res = reqwest::blocking::Client::new()
        .post(format!("{}/v1/memories", server.url))
        .bearer_auth(key)
        .header("idempotency-key", idem)
        .json(body)
        .send()
        .expect("request");
    let status = res.status().as_u16();
    let replayed = res
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true");
    (status, res.json().unwrap_or(Value::Null), replayed)
}

#[test]
fn a_retried_write_is_answered_once_and_written_once() {
    let mut server = Server::start();
    server.tenant("acme");
    let key = server.key("acme", json!({"permissions": ["read", "write"]}));
    let note = json!({"content": "the user prefers green tea", "vector": vec![0.1f32; 384]});

    let (status, first, replayed) = write(&server, &key, "7d3f-retry-1", &note);
    assert_eq!((status, replayed), (201, false), "{first}");
    assert!(first["id"].is_string(), "{first}");
    let (status, again, replayed) = write(&server, &key, "7d3f-retry-1", &note);
    assert_eq!((status, replayed), (201, true));
    assert_eq!(again, first);
    assert_eq!(count(&server, &key), 1);

    // The same key for another request: refused, nothing written.
    let other = json!({"content": "another note", "vector": vec![0.2f32; 384]});
    let (status, err, _) = write(&server, &key, "7d3f-retry-1", &other);
    assert_eq!((status, code(&err)), (409, "CONFLICT"), "{err}");
    assert_eq!(count(&server, &key), 1);

    // A batch under its own key, then a kill: the retry after the restart is still answered
    // from the kept answer.
    let batch = json!({"records": [
        {"content": "first of a batch", "vector": vec![0.3f32; 384]},
        {"content": "second of a batch", "vector": vec![0.4f32; 384]},
    ]});
    let (status, kept, _) = write(&server, &key, "batch-2", &batch);
    assert_eq!(status, 201, "{kept}");
    assert_eq!(kept["results"].as_array().map(Vec::len), Some(2), "{kept}");
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &server.pid().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    server.wait_exit(std::time::Duration::from_secs(10));
    server.restart();
    let (status, replay, replayed) = write(&server, &key, "batch-2", &batch);
    assert_eq!((status, replayed), (201, true));
    assert_eq!(replay, kept);
    assert_eq!(count(&server, &key), 3);

    // Keys are kept per grant: another principal's key of the same name neither shows that
    // it was used (no 409) nor blocks the write.
    let alice = server.key(
        "acme",
        json!({"permissions": ["read", "write"], "user_tokens": ["u:alice"]}),
    );
    let hers = json!({"content": "alice's note", "user_tokens": ["u:alice"],
                      "vector": vec![0.5f32; 384]});
    let (status, v, replayed) = write(&server, &alice, "7d3f-retry-1", &hers);
    assert_eq!((status, replayed), (201, false), "{v}");
    assert_ne!(v["id"], first["id"]);

    // Another tenant's identical key and body is its own write.
    server.tenant("globex");
    let globex = server.key("globex", json!({"permissions": ["read", "write"]}));
    let (status, theirs, replayed) = write(&server, &globex, "7d3f-retry-1", &note);
    assert_eq!((status, replayed), (201, false));
    assert_ne!(theirs["id"], first["id"]);

    // The operator can verify the kept answers decode.
    let (status, report) = server.post(
        "/v1/admin/tenants/acme/verify",
        common::OPERATOR_KEY,
        json!({}),
    );
    assert_eq!(status, 200);
    assert_eq!(report["ok"], true, "{report}");
}

#[test]
fn bad_keys_are_refused_naming_the_header() {
    let server = Server::start();
    server.tenant("acme");
    let key = server.key("acme", json!({"permissions": ["read", "write"]}));
    let note = json!({"content": "x", "vector": vec![0.1f32; 384]});
    for bad in ["", &"k".repeat(256), "two words"] {
        let (status, err, _) = write(&server, &key, bad, &note);
        assert_eq!(status, 400, "{bad:?}: {err}");
        assert!(
            err["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("Idempotency-Key")),
            "{err}"
        );
    }
    assert_eq!(count(&server, &key), 0);
}

/// A keyed write whose client hangs up the moment it has sent the whole request still runs to
/// its end (`docs/durability.md`): it detaches once its body is read, before the parse or any
/// other wait a hang-up could cancel.
#[test]
fn a_keyed_write_whose_client_hangs_up_at_once_is_still_written() {
    use std::io::Write;
    let server = Server::start();
    server.tenant("acme");
    let key = server.key("acme", json!({"permissions": ["read", "write"]}));
    let body = json!({"records": (0..50)
        .map(|i| json!({"content": format!("note {i}"), "vector": vec![0.1f32; 384]}))
        .collect::<Vec<_>>()})
    .to_string();
    let request = format!(
        "POST /v1/memories HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\
         Idempotency-Key: gone-at-once-1\r\n\r\n{body}",
        body.len()
    );
    let mut socket = std::net::TcpStream::connect(server.addr()).expect("connect");
    socket.write_all(request.as_bytes()).expect("send");
    drop(socket);
    // Written in the end, however long that takes; a dropped write never is.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while count(&server, &key) < 50 {
        assert!(
            std::time::Instant::now() < deadline,
            "the keyed write was dropped with its client"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(count(&server, &key), 50);
}

#[test]
fn two_idempotency_keys_are_refused() {
    let server = Server::start();
    server.tenant("acme");
    let key = server.key("acme", json!({"permissions": ["read", "write"]}));
    let res = reqwest::blocking::Client::new()
        .post(format!("{}/v1/memories", server.url))
        .bearer_auth(&key)
        .header("idempotency-key", "k-1")
        .header("idempotency-key", "k-2")
        .json(&json!({"content": "x", "vector": vec![0.1f32; 384]}))
        .send()
        .expect("request");
    assert_eq!(res.status().as_u16(), 400);
    let err: Value = res.json().expect("json");
    assert_eq!(
        err["error"]["message"],
        "header Idempotency-Key: given more than once"
    );
    assert_eq!(count(&server, &key), 0);
}

/// Only `POST /v1/memories` keeps answers: every other write refuses an `Idempotency-Key`
/// (its retry would apply again: a second share, a second reinforcement), before it writes
/// anything; reads let it through.
#[test]
fn writes_that_keep_no_answer_refuse_the_header() {
    let server = Server::start();
    server.tenant("acme");
    server.tenant("globex");
    let key = server.key("acme", json!({"permissions": ["read", "write", "admin"]}));
    let (status, v) = server.post("/v1/memories", &key, json!({"id": "m1", "content": "tea"}));
    assert_eq!(status, 201, "{v}");
    let client = reqwest::blocking::Client::new();
    let keyed = |method: reqwest::Method, path: &str, body: Value| {
        let res = client
            .request(method, format!("{}{path}", server.url))
            .bearer_auth(&key)
            .header("idempotency-key", "retry-1")
            .json(&body)
            .send()
            .expect("request");
        (
            res.status().as_u16(),
            res.json::<Value>().unwrap_or(Value::Null),
        )
    };
    for (path, body) in [
        (
            "/v1/shares",
            json!({"domain": "default", "tenants": ["globex"]}),
        ),
        ("/v1/feedback", json!({"ids": ["m1"], "query": "tea"})),
        ("/v1/memories/m1/evidence", json!({"corroborate": true})),
    ] {
        let (status, err) = keyed(reqwest::Method::POST, path, body);
        assert_eq!((status, code(&err)), (400, "BAD_REQUEST"), "{path}: {err}");
        assert!(
            err["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("Idempotency-Key")),
            "{err}"
        );
    }
    let (status, err) = keyed(
        reqwest::Method::PATCH,
        "/v1/memories/m1",
        json!({"content": "x"}),
    );
    assert_eq!(status, 400, "{err}");
    // A method the route does not serve is still 405.
    let (status, err) = keyed(reqwest::Method::PUT, "/v1/memories", json!({}));
    assert_eq!(status, 405, "{err}");
    // Nothing was written: no share, the record as it was.
    let (status, shares) = server.get("/v1/shares", &key);
    assert_eq!(status, 200, "{shares}");
    assert_eq!(
        shares["shares"].as_array().map(Vec::len),
        Some(0),
        "{shares}"
    );
    let (status, m1) = server.get("/v1/memories/m1", &key);
    assert_eq!((status, &m1["content"]), (200, &json!("tea")), "{m1}");
    // Reads with the header are answered, those sent as a `POST` too.
    let (status, v) = keyed(reqwest::Method::GET, "/v1/memories/m1", Value::Null);
    assert_eq!(status, 200, "{v}");
    let (status, v) = keyed(reqwest::Method::POST, "/v1/search", json!({"query": "tea"}));
    assert_eq!(status, 200, "{v}");
    let (status, v) = keyed(reqwest::Method::POST, "/v1/memories/count", json!({}));
    assert_eq!(status, 200, "{v}");

    // The credential is judged first, as on every route: none, or a wrong one, is a 401, and
    // a header naming another tenant a 403 (a security event), whatever the header.
    for (auth, tenant, expected) in [
        (None, None, (401, "UNAUTHORIZED")),
        (Some("not-a-key"), None, (401, "UNAUTHORIZED")),
        (Some(key.as_str()), Some("globex"), (403, "TENANT_MISMATCH")),
    ] {
        let mut req = client
            .post(format!("{}/v1/links", server.url))
            .header("idempotency-key", "retry-2")
            .json(&json!({"from": "m1", "to": "m1", "relation": "r"}));
        if let Some(auth) = auth {
            req = req.bearer_auth(auth);
        }
        if let Some(tenant) = tenant {
            req = req.header("x-tenant-id", tenant);
        }
        let res = req.send().expect("request");
        let status = res.status().as_u16();
        let err = res.json::<Value>().unwrap_or(Value::Null);
        assert_eq!((status, code(&err)), expected, "{auth:?} {tenant:?}: {err}");
    }
}
