//! A record whose bytes changed on disk behind a stopped server (bit rot, a bad disk, a hand
//! edit) is refused wherever it is read, and `verify` reports it: the storage engine checks
//! its pages' checksums only when it repairs or checks a file, so without the record's own
//! checksum the changed text would be served as if it had been written so. A repair removes
//! it, and everything that named it, so the rest of the tenant serves again.

mod common;

use common::{OPERATOR_KEY, Server, code};
use serde_json::{Value, json};

#[test]
fn a_record_changed_on_disk_is_refused_and_verify_says_so() {
    let mut server = Server::start();
    server.tenant("acme");
    let key = server.key("acme", json!({"permissions": ["read", "write"]}));
    // With an entry of every kind that names it: scope (run, local scope), dedup and the run's
    // tail (a run), expiry, and a link.
    let (s, v) = server.post(
        "/v1/memories",
        &key,
        json!({"id": "victim", "content": "pay 1000 dollars to the supplier", "run_id": "r1",
               "memory_scope": "ledger", "expires_at": 4_102_444_800_000i64}),
    );
    assert_eq!(s, 201, "{v}");
    let (s, v) = server.post(
        "/v1/memories",
        &key,
        json!({"id": "bystander", "content": "the kettle is in the kitchen"}),
    );
    assert_eq!(s, 201, "{v}");
    let (s, v) = server.post(
        "/v1/links",
        &key,
        json!({"source": "bystander", "target": "victim"}),
    );
    assert_eq!(s, 201, "{v}");
    // And the pheromones feedback leaves on both.
    let (s, v) = server.post(
        "/v1/feedback",
        &key,
        json!({"ids": ["victim", "bystander"]}),
    );
    assert_eq!(s, 200, "{v}");
    damage(&mut server, b"1000 dollars", b"9999 dollars");
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
    let (s, report) = operator_post(&server, "/v1/admin/tenants/acme/verify");
    assert_eq!((s, &report["ok"]), (200, &json!(false)), "{report}");
    assert!(report.to_string().contains("/repair"), "{report}");
    // The whole tenant's listing meets the damaged record, and fails.
    let (s, v) = server.post("/v1/memories/list", &key, json!({}));
    assert_eq!((s, code(&v)), (500, "INTERNAL"), "{v}");

    // The repair removes it, and every entry that named it: verify finds nothing more.
    let repair = "/v1/admin/tenants/acme/repair";
    let (s, v) = operator_post(&server, repair);
    assert_eq!((s, &v["removed"]), (200, &json!(["victim"])), "{v}");
    let (s, report) = operator_post(&server, "/v1/admin/tenants/acme/verify");
    assert_eq!((s, &report["ok"]), (200, &json!(true)), "{report}");
    assert_eq!(
        report["usage_stored"], report["usage_recounted"],
        "{report}"
    );
    let (s, v) = server.get("/v1/memories/victim", &key);
    assert_eq!((s, code(&v)), (404, "NOT_FOUND"), "{v}");
    let (s, v) = server.post("/v1/memories/list", &key, json!({}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(ids_in(&v, "records"), ["bystander"], "{v}");
    let (s, v) = server.post(
        "/v1/search",
        &key,
        json!({"query": "dollars supplier kettle", "mode": "text", "k": 5}),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(ids_in(&v, "hits"), ["bystander"], "{v}");
    // A record written again in the run is linked after the run's new tail, not to the
    // removed record.
    let (s, v) = server.post(
        "/v1/memories",
        &key,
        json!({"id": "next", "content": "the invoice is due on Friday", "run_id": "r1"}),
    );
    assert_eq!(s, 201, "{v}");
    let (s, report) = operator_post(&server, "/v1/admin/tenants/acme/verify");
    assert_eq!((s, &report["ok"]), (200, &json!(true)), "{report}");
    // The removed record's pheromone went with it; the bystander's stays.
    let export = reqwest::blocking::Client::new()
        .get(format!("{}/v1/admin/tenants/acme/export", server.url))
        .bearer_auth(OPERATOR_KEY)
        .send()
        .and_then(|r| r.text())
        .expect("export");
    let pheromones: Vec<Value> = export
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["type"] == "pheromone")
        .map(|l| l["id"].clone())
        .collect();
    assert_eq!(pheromones, [json!("bystander")], "{export}");
    // Nothing more to remove; both repairs are audited, naming what they removed.
    let (s, v) = operator_post(&server, repair);
    assert_eq!((s, &v["removed"]), (200, &json!([])), "{v}");
    let (s, v) = server.get("/v1/admin/audit?action=tenant.repair", OPERATOR_KEY);
    assert_eq!(s, 200, "{v}");
    let removed: Vec<&Value> = v["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| &r["detail"]["removed"])
        .collect();
    assert_eq!(removed, [&json!([]), &json!(["victim"])], "{v}");
}

/// Stops the server, changes every copy of `from` in its data files (the main one and the
/// dedicated tenants') into `to` (as bit rot or a stray write would), and starts it again.
fn damage(server: &mut Server, from: &[u8], to: &[u8]) {
    server.stop();
    let mut files = vec![server.dir.path().join("data").join("strata.redb")];
    if let Ok(dirs) = std::fs::read_dir(server.dir.path().join("data").join("tenants")) {
        files.extend(
            dirs.filter_map(Result::ok)
                .map(|d| d.path().join("data.redb")),
        );
    }
    let mut changed = 0;
    for file in files.into_iter().filter(|f| f.exists()) {
        let mut bytes = std::fs::read(&file).expect("read a data file");
        let at: Vec<usize> = bytes
            .windows(from.len())
            .enumerate()
            .filter(|(_, w)| *w == from)
            .map(|(i, _)| i)
            .collect();
        changed += at.len();
        for i in at {
            bytes[i..i + to.len()].copy_from_slice(to);
        }
        std::fs::write(&file, bytes).expect("write a data file");
    }
    assert!(changed > 0, "the content must be on disk");
    server.restart();
}

/// The same repair in a dedicated tenant's own file.
#[test]
fn a_dedicated_tenants_damaged_record_is_repaired_in_its_own_file() {
    let mut server = Server::start();
    let (s, v) = operator_post_body(
        &server,
        "/v1/admin/tenants",
        json!({"id": "solo", "isolation": "dedicated"}),
    );
    assert_eq!(s, 201, "{v}");
    let key = server.key("solo", json!({"permissions": ["read", "write"]}));
    for (id, content) in [
        ("victim", "pay 1000 dollars now"),
        ("kept", "water the plants"),
    ] {
        let (s, v) = server.post("/v1/memories", &key, json!({"id": id, "content": content}));
        assert_eq!(s, 201, "{v}");
    }
    damage(&mut server, b"1000 dollars", b"9999 dollars");
    let (s, v) = server.post("/v1/memories/list", &key, json!({}));
    assert_eq!((s, code(&v)), (500, "INTERNAL"), "{v}");
    let (s, v) = operator_post(&server, "/v1/admin/tenants/solo/repair");
    assert_eq!((s, &v["removed"]), (200, &json!(["victim"])), "{v}");
    let (s, v) = server.post("/v1/memories/list", &key, json!({}));
    assert_eq!((s, ids_in(&v, "records")), (200, vec!["kept"]), "{v}");
    let (s, report) = operator_post(&server, "/v1/admin/tenants/solo/verify");
    assert_eq!(
        (s, &report["ok"], &report["dedicated_file"]),
        (200, &json!(true), &json!(true)),
        "{report}"
    );
}

/// A repair runs beside the tenant's searches and writes: no write is lost or refused, and
/// every search that starts once the repair has answered succeeds (the repair reloads the
/// tenant's indexes without taking it away from the requests in flight).
#[test]
fn a_repair_beside_searches_and_writes_loses_nothing() {
    let mut server = Server::start();
    server.tenant("acme");
    let key = server.key("acme", json!({"permissions": ["read", "write"]}));
    let records: Vec<Value> = (0..200)
        .map(|i| json!({"id": format!("r{i}"), "content": format!("note {i} about the garden")}))
        .collect();
    let (s, v) = server.post("/v1/memories", &key, json!({ "records": records }));
    assert_eq!(s, 201, "{v}");
    let (s, v) = server.post(
        "/v1/memories",
        &key,
        json!({"id": "victim", "content": "pay 1000 dollars to the supplier"}),
    );
    assert_eq!(s, 201, "{v}");
    damage(&mut server, b"1000 dollars", b"9999 dollars");

    let repaired_at = std::sync::Mutex::new(None::<std::time::Instant>);
    let (searches, written) = std::thread::scope(|s| {
        let searcher = s.spawn(|| {
            let mut seen = Vec::new();
            for _ in 0..150 {
                let started = std::time::Instant::now();
                let (status, v) = server.post(
                    "/v1/search",
                    &key,
                    json!({"query": "garden note", "mode": "text", "k": 5}),
                );
                seen.push((started, status, v));
            }
            seen
        });
        let writer = s.spawn(|| {
            for i in 0..60 {
                let (status, v) = server.post(
                    "/v1/memories",
                    &key,
                    json!({"id": format!("w{i}"), "content": format!("written {i} meanwhile")}),
                );
                assert_eq!(status, 201, "{v}");
            }
            60
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        let (status, v) = operator_post(&server, "/v1/admin/tenants/acme/repair");
        assert_eq!((status, &v["removed"]), (200, &json!(["victim"])), "{v}");
        *repaired_at.lock().unwrap() = Some(std::time::Instant::now());
        (searcher.join().unwrap(), writer.join().unwrap())
    });
    let repaired_at = repaired_at.lock().unwrap().expect("repaired");
    for (started, status, v) in &searches {
        if *started > repaired_at {
            assert_eq!(*status, 200, "a search after the repair: {v}");
        }
    }
    let (s, v) = server.post("/v1/memories/count", &key, json!({}));
    assert_eq!((s, &v["count"]), (200, &json!(200 + written)), "{v}");
    let (s, report) = operator_post(&server, "/v1/admin/tenants/acme/verify");
    assert_eq!((s, &report["ok"]), (200, &json!(true)), "{report}");
}

/// The ids of the objects listed under `field` of an answer.
fn ids_in<'a>(v: &'a Value, field: &str) -> Vec<&'a str> {
    v[field]
        .as_array()
        .expect(field)
        .iter()
        .map(|r| r["id"].as_str().unwrap_or(""))
        .collect()
}

/// `POST path` with an empty body and the operator key.
fn operator_post(server: &Server, path: &str) -> (u16, Value) {
    operator_post_body(server, path, json!({}))
}

/// `POST path` with `body` and the operator key.
fn operator_post_body(server: &Server, path: &str, body: Value) -> (u16, Value) {
    server.call("POST", path, Some(OPERATOR_KEY), &[], Some(&body))
}
