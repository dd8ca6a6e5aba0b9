//! A record whose bytes changed on disk behind a stopped server (bit rot, a bad disk, a hand
//! edit) is refused wherever it is read, and `verify` reports it: the storage engine checks
//! its pages' checksums only when it repairs or checks a file, so without the record's own
//! checksum the changed text would be served as if it had been written so.

mod common;

use common::{OPERATOR_KEY, Server, code};
use serde_json::json;

#[test]
fn a_record_changed_on_disk_is_refused_and_verify_says_so() {
    let mut server = Server::start();
    server.tenant("acme");
    let key = server.key("acme", json!({"permissions": ["read", "write"]}));
    let (s, v) = server.post(
        "/v1/memories",
        &key,
        json!({"id": "victim", "content": "pay 1000 dollars to the supplier"}),
    );
    assert_eq!(s, 201, "{v}");
    let (s, v) = server.post(
        "/v1/memories",
        &key,
        json!({"id": "bystander", "content": "the kettle is in the kitchen"}),
    );
    assert_eq!(s, 201, "{v}");
    server.stop();

    let file = server.dir.path().join("data").join("strata.redb");
    let mut bytes = std::fs::read(&file).expect("read the data file");
    let (from, to) = (b"1000 dollars".as_slice(), b"9999 dollars".as_slice());
    let at: Vec<usize> = bytes
        .windows(from.len())
        .enumerate()
        .filter(|(_, w)| *w == from)
        .map(|(i, _)| i)
        .collect();
    assert!(!at.is_empty(), "the content must be on disk");
    for i in at {
        bytes[i..i + to.len()].copy_from_slice(to);
    }
    std::fs::write(&file, bytes).expect("write the data file");

    server.restart();
    let (s, v) = server.get("/v1/memories/victim", &key);
    assert_eq!(
        (s, code(&v)),
        (500, "INTERNAL"),
        "the changed text was served: {v}"
    );
    assert!(!v.to_string().contains("9999"), "{v}");
    assert!(
        server.log().contains("checksum mismatch"),
        "{}",
        server.log()
    );
    let (s, v) = server.get("/v1/memories/bystander", &key);
    assert_eq!(
        (s, &v["content"]),
        (200, &json!("the kettle is in the kitchen")),
        "{v}"
    );
    let (s, report) = server.call(
        "POST",
        "/v1/admin/tenants/acme/verify",
        Some(OPERATOR_KEY),
        &[],
        Some(&json!({})),
    );
    assert_eq!((s, &report["ok"]), (200, &json!(false)), "{report}");
}
