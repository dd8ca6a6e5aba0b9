//! Residency and verification over HTTP: a server with a small memory budget and several
//! tenants keeps resident bytes under the budget, evicts and reloads tenants with identical
//! answers, reports it per tenant, and `verify` is clean for every tenant, before and after a
//! restart.

mod common;

use common::{OPERATOR_KEY, Server, code};
use serde_json::{Value, json};

const TENANTS: usize = 5;
/// Room for two of these tenants (about 210 KB each as accounted, overheads included: the
/// pinned one and the one being served) but not three, so serving them in turn evicts.
const BUDGET: u64 = 500_000;

fn vector(t: usize, i: usize) -> Vec<f32> {
    (0..384)
        .map(|d| (((t * 7919 + i * 104_729 + d * 31) % 1000) as f32 / 1000.0) - 0.5)
        .collect()
}

fn answers(server: &Server, key: &str, t: usize) -> Vec<Value> {
    let mut out = Vec::new();
    for body in [
        json!({"vector": vector(t, 3), "k": 5}),
        json!({"query": "topic 2", "k": 5}),
        json!({"vector": vector(t, 8), "query": "note", "k": 5}),
    ] {
        let (s, v) = server.post("/v1/search", key, body);
        assert_eq!(s, 200, "{v}");
        let hits: Vec<Value> = v["hits"]
            .as_array()
            .expect("hits")
            .iter()
            .map(|h| {
                assert!(h["id"].is_string(), "a hit without its id: {h}");
                json!([h["id"], h["score"]])
            })
            .collect();
        assert!(!hits.is_empty(), "{v}");
        out.push(Value::Array(hits));
    }
    out
}

fn verify_all(server: &Server) {
    for t in 0..TENANTS {
        let (s, v) = server.post(
            &format!("/v1/admin/tenants/t{t}/verify"),
            OPERATOR_KEY,
            json!({}),
        );
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["ok"], true, "t{t}: {v}");
        assert_eq!(v["records"], 60, "t{t}: {v}");
        assert_eq!(v["usage_stored"], v["usage_recounted"], "t{t}: {v}");
    }
}

#[test]
fn a_small_budget_evicts_and_reloads_with_identical_answers() {
    let budget = BUDGET.to_string();
    let mut server = Server::start_with(&[
        (
            "STRATA__ENGINE__RESIDENCY__MEMORY_BUDGET_BYTES",
            budget.as_str(),
        ),
        ("STRATA__ENGINE__RESIDENCY__PINNED", "[\"t0\"]"),
    ]);
    let mut keys = Vec::new();
    for t in 0..TENANTS {
        server.tenant(&format!("t{t}"));
        let key = server.key(&format!("t{t}"), json!({}));
        let records: Vec<Value> = (0..60)
            .map(|i| {
                json!({"id": format!("r{i}"), "content": format!("note {i} on topic {}", i % 5),
                       "vector": vector(t, i)})
            })
            .collect();
        let (s, v) = server.post("/v1/memories", &key, json!({ "records": records }));
        assert_eq!(s, 201, "{v}");
        keys.push(key);
    }
    let reference: Vec<_> = keys
        .iter()
        .enumerate()
        .map(|(t, key)| answers(&server, key, t))
        .collect();
    for round in 0..3 {
        for (t, (key, expected)) in keys.iter().zip(&reference).enumerate() {
            assert_eq!(&answers(&server, key, t), expected, "round {round}, t{t}");
            let (s, v) = server.get("/v1/admin/residency", OPERATOR_KEY);
            assert_eq!(s, 200, "{v}");
            assert_eq!(v["memory_budget_bytes"], BUDGET);
            let resident = v["resident_bytes"].as_u64().expect("resident_bytes");
            assert!(resident <= BUDGET, "round {round}, t{t}: {v}");
        }
    }
    let (s, v) = server.get("/v1/admin/residency", OPERATOR_KEY);
    assert_eq!(s, 200);
    assert!(v["evictions"].as_u64().expect("evictions") > 0, "{v}");
    assert_eq!(v["tenants"].as_array().expect("tenants").len(), TENANTS);

    let (s, pinned) = server.get("/v1/admin/tenants/t0/residency", OPERATOR_KEY);
    assert_eq!(s, 200, "{pinned}");
    assert_eq!(
        (&pinned["pinned"], &pinned["resident"], &pinned["evictions"]),
        (&json!(true), &json!(true), &json!(0)),
        "{pinned}"
    );
    let (s, other) = server.get("/v1/admin/tenants/t4/residency", OPERATOR_KEY);
    assert_eq!(s, 200, "{other}");
    assert!(other["loads"].as_u64().expect("loads") >= 2, "{other}");
    assert!(other["resident_bytes"].is_u64(), "{other}");

    // Unknown and malformed tenant ids.
    let (s, v) = server.get("/v1/admin/tenants/nobody/residency", OPERATOR_KEY);
    assert_eq!(s, 404, "{v}");
    let (s, v) = server.post("/v1/admin/tenants/nobody/verify", OPERATOR_KEY, json!({}));
    assert_eq!(s, 404, "{v}");
    let (s, v) = server.post("/v1/admin/tenants/Bad%20Id/verify", OPERATOR_KEY, json!({}));
    assert_eq!((s, code(&v)), (400, "BAD_REQUEST"), "{v}");

    verify_all(&server);
    server.restart();
    verify_all(&server);
    for (t, (key, expected)) in keys.iter().zip(&reference).enumerate() {
        assert_eq!(&answers(&server, key, t), expected, "after restart, t{t}");
    }
    verify_all(&server);
}

#[test]
fn a_stressed_tenant_sheds_its_expensive_searches_alone() {
    let server = Server::start_with(&[
        (
            "STRATA__ENGINE__INTEGRITY__TENANTS__HOT__LATENCY_CONTRACT_MS",
            "0.000001",
        ),
        (
            "STRATA__ENGINE__INTEGRITY__TENANTS__HOT__CRITICAL_ENTER",
            "1e15",
        ),
        (
            "STRATA__ENGINE__INTEGRITY__TENANTS__HOT__CRITICAL_EXIT",
            "1e14",
        ),
        ("STRATA__ENGINE__INTEGRITY__TENANTS__HOT__CONSECUTIVE", "2"),
        ("STRATA__ENGINE__INTEGRITY__TENANTS__HOT__COOLDOWN_MS", "0"),
        // `burning` goes past stress to critical, which must shed at least as much.
        (
            "STRATA__ENGINE__INTEGRITY__TENANTS__BURNING__LATENCY_CONTRACT_MS",
            "0.000001",
        ),
        (
            "STRATA__ENGINE__INTEGRITY__TENANTS__BURNING__CRITICAL_ENTER",
            "4.0",
        ),
        (
            "STRATA__ENGINE__INTEGRITY__TENANTS__BURNING__CRITICAL_EXIT",
            "2.5",
        ),
        (
            "STRATA__ENGINE__INTEGRITY__TENANTS__BURNING__CONSECUTIVE",
            "2",
        ),
        (
            "STRATA__ENGINE__INTEGRITY__TENANTS__BURNING__COOLDOWN_MS",
            "0",
        ),
    ]);
    let mut keys = Vec::new();
    for t in ["hot", "calm", "burning"] {
        server.tenant(t);
        let key = server.key(t, json!({}));
        let records: Vec<Value> = (0..60)
            .map(|i| json!({"content": format!("note {i} on the weather")}))
            .collect();
        let (s, v) = server.post("/v1/memories", &key, json!({ "records": records }));
        assert_eq!(s, 201, "{v}");
        keys.push(key);
    }
    for _ in 0..3 {
        for key in &keys {
            let (s, v) = server.post("/v1/search", key, json!({"query": "weather", "k": 5}));
            assert_eq!(s, 200, "{v}");
        }
    }
    let (s, hot) = server.get("/v1/admin/tenants/hot/integrity", OPERATOR_KEY);
    assert_eq!(s, 200, "{hot}");
    assert_eq!(hot["state"], "stress", "{hot}");
    assert_eq!(hot["transitions"][0]["to"], "stress", "{hot}");
    let (s, calm) = server.get("/v1/admin/tenants/calm/integrity", OPERATOR_KEY);
    assert_eq!(s, 200, "{calm}");
    assert_eq!(calm["state"], "normal", "{calm}");
    // Its requests went through the worker pool, which reported their queue wait (however
    // short) and depth; without a graph its connectivity is whole.
    assert!(
        calm["queue_wait_ms"].as_f64().is_some_and(|w| w > 0.0),
        "{calm}"
    );
    assert!(calm["queue_depth"].is_u64(), "{calm}");
    assert_eq!(calm["connectivity"], 1.0, "{calm}");

    let big = json!({"query": "weather", "k": 100});
    let (s, v) = server.post("/v1/search", &keys[0], big.clone());
    assert_eq!((s, code(&v)), (503, "TENANT_STRESSED"), "{v}");
    assert!(v["error"]["retry_after_ms"].is_u64(), "{v}");
    let (s, v) = server.post("/v1/search", &keys[0], json!({"query": "weather", "k": 5}));
    assert_eq!(s, 200, "{v}");
    let (s, v) = server.post("/v1/search", &keys[1], big.clone());
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["hits"].as_array().expect("hits").len(), 60);

    // Critical is worse than stress: the same k and ef caps, the same refusal; small
    // searches still go on.
    let (s, burning) = server.get("/v1/admin/tenants/burning/integrity", OPERATOR_KEY);
    assert_eq!(s, 200, "{burning}");
    assert_eq!(burning["state"], "critical", "{burning}");
    let wide = json!({"query": "weather", "k": 5, "ef": 300});
    for body in [big, wide] {
        let (s, v) = server.post("/v1/search", &keys[2], body);
        assert_eq!((s, code(&v)), (503, "TENANT_STRESSED"), "{v}");
    }
    let (s, v) = server.post("/v1/search", &keys[2], json!({"query": "weather", "k": 5}));
    assert_eq!(s, 200, "{v}");
}

/// A resident tenant written past `index_checkpoint_changes` is saved by the periodic
/// checkpoint, not only at shutdown: the server says so in its log, and a SIGKILL after it
/// leaves a tenant that answers as before and verifies clean.
#[test]
fn resident_tenants_with_many_unsaved_changes_are_checkpointed() {
    let mut server = Server::start_with(&[
        ("STRATA__SERVER__INDEX_CHECKPOINT_INTERVAL_SECS", "1"),
        ("STRATA__SERVER__INDEX_CHECKPOINT_CHANGES", "50"),
    ]);
    server.tenant("t0");
    let key = server.key("t0", json!({}));
    // Loaded before the writes, so the writes are changes its indexes hold unsaved.
    let (s, v) = server.post("/v1/search", &key, json!({"query": "note", "k": 5}));
    assert_eq!(s, 200, "{v}");
    let records: Vec<Value> = (0..60)
        .map(|i| {
            json!({"id": format!("r{i}"), "content": format!("note {i} on topic {}", i % 5),
                   "vector": vector(0, i)})
        })
        .collect();
    let (s, v) = server.post("/v1/memories", &key, json!({ "records": records }));
    assert_eq!(s, 201, "{v}");
    let before = answers(&server, &key, 0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !server.log().contains("index checkpoint saved") {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint within 30 s:\n{}",
            server.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    server.kill();
    server.restart();
    assert_eq!(answers(&server, &key, 0), before);
    let (s, v) = server.post("/v1/admin/tenants/t0/verify", OPERATOR_KEY, json!({}));
    assert_eq!((s, &v["ok"]), (200, &json!(true)), "{v}");
}
