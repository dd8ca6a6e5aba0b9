//! A data file that cannot grow, as on a full disk: the write that meets it fails with a clear
//! `503 UNAVAILABLE`, every later write is refused the same way until a restart (what the
//! failed write left on the disk cannot be known), reads go on, readiness says why, and after
//! a restart with room again nothing acknowledged is missing.
//!
//! The server runs under a file-size limit (`ulimit -f`, `SIGXFSZ` ignored), so a write past it
//! fails with `EFBIG` exactly where a full disk fails with `ENOSPC`.

mod common;

use std::time::Duration;

use common::{Server, code};
use serde_json::{Value, json};

fn message(v: &Value) -> &str {
    v["error"]["message"].as_str().unwrap_or("")
}

#[test]
fn a_full_disk_refuses_writes_clearly_keeps_reads_and_loses_nothing() {
    let mut server = Server::start_with_file_size_limit(8 << 20, &[]);
    server.tenant("acme");
    let key = server.key("acme", json!({}));
    let text = "a memory that takes room ".repeat(300);
    let mut acked: Vec<String> = Vec::new();
    let keyed_write = |idem: &str, body: &Value| {
        let headers = [("idempotency-key", idem)];
        server.call("POST", "/v1/memories", Some(&key), &headers, Some(body))
    };
    // Keyed writes: the one that fails is retried below with its key.
    let (status, refusal, failed) = loop {
        let body = json!({"content": format!("{text} {}", acked.len())});
        let idem = format!("write-{}", acked.len());
        let (s, v) = keyed_write(&idem, &body);
        if s != 201 {
            break (s, v, (idem, body));
        }
        acked.push(v["id"].as_str().expect("id").to_owned());
        assert!(acked.len() < 20_000, "the file never stopped growing");
    };
    assert!(acked.len() > 10, "writes failed from the start: {refusal}");
    assert_eq!((status, code(&refusal)), (503, "UNAVAILABLE"), "{refusal}");
    assert!(
        message(&refusal).starts_with("storage unavailable: "),
        "{refusal}"
    );

    // Its retry is refused too, never answered from what the failed write may have committed
    // without making it durable (a 201 here would acknowledge a write the restart can lose).
    let (idem, body) = failed;
    let (s, v) = keyed_write(&idem, &body);
    assert_eq!((s, code(&v)), (503, "UNAVAILABLE"), "{v}");

    // Every later write is refused the same way, saying what to do.
    let (s, v) = server.post("/v1/memories", &key, json!({"content": "later"}));
    assert_eq!((s, code(&v)), (503, "UNAVAILABLE"), "{v}");
    assert!(
        message(&v).contains("writes are refused until the server is restarted"),
        "{v}"
    );
    // Readiness says why, so that a probe takes the node out and an operator sees the cause.
    let (s, v) = server.call("GET", "/readyz", None, &[], None);
    assert_eq!((s, code(&v)), (503, "UNAVAILABLE"), "{v}");
    assert!(message(&v).contains("storage unavailable"), "{v}");
    let (s, text) = server.send_raw(
        "GET",
        "/metrics",
        common::OPERATOR_KEY,
        "text/plain",
        vec![],
    );
    assert_eq!(s, 200);
    assert!(text.contains("\nstrata_storage_failed 1\n"), "{text}");
    // Reads go on.
    let (s, v) = server.get(&format!("/v1/memories/{}", acked[0]), &key);
    assert_eq!(s, 200, "{v}");
    let (s, v) = server.post("/v1/search", &key, json!({"query": "memory", "k": 3}));
    assert_eq!(
        (s, v["hits"].as_array().map(Vec::len)),
        (200, Some(3)),
        "{v}"
    );

    // An operator makes room and restarts: everything acknowledged is there, writes work.
    server.terminate();
    assert!(server.wait_exit(Duration::from_secs(60)).is_some());
    server.lift_limits();
    server.restart();
    for id in &acked {
        let (s, v) = server.get(&format!("/v1/memories/{id}"), &key);
        assert_eq!(s, 200, "acknowledged {id} lost: {v}");
    }
    let (s, v) = server.post("/v1/memories", &key, json!({"content": "after"}));
    assert_eq!(s, 201, "{v}");
    assert_eq!(server.call("GET", "/readyz", None, &[], None).0, 200);
    let (s, v) = server.call(
        "POST",
        "/v1/admin/tenants/acme/verify",
        Some(common::OPERATOR_KEY),
        &[],
        Some(&json!({})),
    );
    assert_eq!((s, &v["ok"]), (200, &json!(true)), "{v}");
}
