//! Memory intelligence over HTTP against the real binary: confidence and evidence, links,
//! recall with spreading activation, confidence and recency in ranking, and that all of it
//! survives patches and export/import and respects visibility.

mod common;

use common::{OPERATOR_KEY, Server, code};
use serde_json::{Value, json};

const ALL: &[&str] = &["read", "write", "admin", "all_principals"];

fn unit(i: usize) -> Vec<f32> {
    let mut v = vec![0.0; 4];
    v[i % 4] = 1.0;
    v
}

/// A tenant with a 4-dimensional collection `c` (initial confidence 0.8).
fn setup(server: &Server, tenant: &str) -> String {
    server.tenant(tenant);
    let key = server.key(tenant, json!({ "permissions": ALL }));
    let (s, v) = server.post(
        "/v1/collections",
        &key,
        json!({"name": "c", "dim": 4, "initial_confidence": 0.8}),
    );
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["initial_confidence"], 0.8, "{v}");
    key
}

fn put(server: &Server, key: &str, records: Value) {
    let (s, v) = server.post("/v1/memories", key, json!({ "records": records }));
    assert!(s == 201 || s == 200, "{v}");
}

fn link(server: &Server, key: &str, source: &str, target: &str) -> (u16, Value) {
    server.post(
        "/v1/links",
        key,
        json!({"source": source, "target": target, "relation": "next", "user_tokens": ["*"]}),
    )
}

fn ids(v: &Value) -> Vec<String> {
    v["hits"]
        .as_array()
        .unwrap_or_else(|| panic!("hits in {v}"))
        .iter()
        .map(|h| h["id"].as_str().expect("id").to_owned())
        .collect()
}

#[test]
fn evidence_updates_confidence_by_the_documented_rule() {
    let server = Server::start();
    let key = setup(&server, "acme");
    put(
        &server,
        &key,
        json!([
            {"id": "m", "modality": "c", "vector": unit(0), "content": "the sky is green"},
            {"id": "secret", "modality": "c", "vector": unit(1), "user_tokens": ["u:alice"]},
        ]),
    );
    let (_, rec) = server.get("/v1/memories/m", &key);
    assert_eq!(rec["confidence"]["value"], 0.8, "collection default: {rec}");
    // A confidence given without its value would have quietly meant 0.5 over the
    // collection's 0.8: it is refused, naming the missing field; counters default to 0.
    for confidence in [json!({}), json!({"evidence_count": 3})] {
        let (s, v) = server.post(
            "/v1/memories",
            &key,
            json!({"id": "nov", "modality": "c", "vector": unit(2), "confidence": confidence}),
        );
        assert_eq!(s, 400, "{v}");
        assert!(v.to_string().contains("value"), "{v}");
    }
    let (s, v) = server.post(
        "/v1/memories",
        &key,
        json!({"id": "nov", "modality": "c", "vector": unit(2), "confidence": {"value": 0.3}}),
    );
    assert_eq!(s, 201, "{v}");
    let (_, v) = server.get("/v1/memories/nov", &key);
    assert_eq!(
        v["confidence"],
        json!({"value": 0.3, "evidence_count": 0, "corroborations": 0, "contradictions": 0}),
        "{v}"
    );
    let (s, v) = server.call("DELETE", "/v1/memories/nov", Some(&key), &[], None);
    assert_eq!(s, 200, "{v}");

    let evidence = |body: Value| server.post("/v1/memories/m/evidence", &key, body);
    let (s, v) = evidence(json!({"corroborate": true}));
    assert_eq!(s, 200, "{v}");
    let c = &v["confidence"];
    let expect = (0.8 * 2.0 + 1.0) / 3.0;
    assert!((c["value"].as_f64().unwrap() - expect).abs() < 1e-9, "{v}");
    assert_eq!(
        (c["evidence_count"].as_u64(), c["corroborations"].as_u64()),
        (Some(1), Some(1))
    );
    let (_, v) = evidence(json!({"contradict": true}));
    let expect = (expect * 3.0) / 4.0;
    assert!(
        (v["confidence"]["value"].as_f64().unwrap() - expect).abs() < 1e-9,
        "{v}"
    );
    assert_eq!(v["confidence"]["contradictions"], 1);
    let (_, v) = evidence(json!({"signal": 0.25}));
    let expect = (expect * 4.0 + 0.25) / 5.0;
    assert!(
        (v["confidence"]["value"].as_f64().unwrap() - expect).abs() < 1e-9,
        "{v}"
    );
    assert_eq!(v["confidence"]["evidence_count"], 3);

    // Bad evidence is a 400 naming the field.
    for bad in [
        json!({}),
        json!({"signal": 1.5}),
        json!({"signal": 0.5, "corroborate": true}),
        json!({"corroborate": false}),
        json!({"weight": 1}),
    ] {
        let (s, v) = evidence(bad.clone());
        assert_eq!((s, code(&v)), (400, "BAD_REQUEST"), "{bad}: {v}");
    }
    let (s, v) = evidence(json!({"signal": 2}));
    assert!(
        v["error"]["message"].as_str().unwrap().contains("signal"),
        "{s} {v}"
    );
    // Missing and invisible ids alike are 404; a read-only key is refused.
    for path in ["/v1/memories/nope/evidence", "/v1/memories/secret/evidence"] {
        let (s, v) = server.post(path, &key, json!({"corroborate": true}));
        assert_eq!((s, code(&v)), (404, "NOT_FOUND"), "{path}: {v}");
    }
    let reader = server.key("acme", json!({"permissions": ["read"]}));
    let (s, v) = server.post(
        "/v1/memories/m/evidence",
        &reader,
        json!({"corroborate": true}),
    );
    assert_eq!((s, code(&v)), (403, "FORBIDDEN"), "{v}");
    // A client-set confidence must be a confidence.
    let (s, v) = server.post(
        "/v1/memories",
        &key,
        json!({"modality": "c", "vector": unit(2), "confidence": {"value": 1.5}}),
    );
    assert_eq!((s, code(&v)), (400, "BAD_REQUEST"), "{v}");
    let (s, v) = server.post(
        "/v1/collections",
        &key,
        json!({"name": "c2", "dim": 4, "initial_confidence": -0.1}),
    );
    assert_eq!((s, code(&v)), (400, "BAD_REQUEST"), "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("initial_confidence")
    );

    // Kept across a patch, and filterable.
    let (s, v) = server.call(
        "PATCH",
        "/v1/memories/m",
        Some(&key),
        &[],
        Some(&json!({"content": "the sky is blue", "metadata": {"checked": true}})),
    );
    assert_eq!(s, 200, "{v}");
    assert!(
        (v["confidence"]["value"].as_f64().unwrap() - expect).abs() < 1e-9,
        "{v}"
    );
    assert_eq!(v["confidence"]["evidence_count"], 3);
    let (_, v) = server.post(
        "/v1/memories/count",
        &key,
        json!({"filter": {"confidence": {"$lt": 0.7}}, "user_tokens": ["*"]}),
    );
    assert_eq!(v["count"], 1, "{v}");
}

#[test]
fn confidence_weight_and_recency_rerank_with_explain() {
    let server = Server::start();
    let key = setup(&server, "acme");
    // Same direction, so the vector channel ties; "sure" has higher confidence; "new" is newer.
    put(
        &server,
        &key,
        json!([
            {"id": "old", "modality": "c", "vector": [1.0, 0.1, 0.0, 0.0], "confidence": {"value": 0.2}},
            {"id": "sure", "modality": "c", "vector": [1.0, 0.12, 0.0, 0.0], "confidence": {"value": 0.99}},
        ]),
    );
    std::thread::sleep(std::time::Duration::from_millis(1200));
    put(
        &server,
        &key,
        json!([{"id": "new", "modality": "c", "vector": [1.0, 0.14, 0.0, 0.0], "confidence": {"value": 0.2}}]),
    );
    let search = |extra: Value| {
        let mut body =
            json!({"vector": [1.0, 0.1, 0.0, 0.0], "modality": "c", "k": 3, "explain": true});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (s, v) = server.post("/v1/search", &key, body);
        assert_eq!(s, 200, "{v}");
        v
    };
    assert_eq!(ids(&search(json!({})))[0], "old");
    let v = search(json!({"confidence_weight": 0.9}));
    assert_eq!(ids(&v)[0], "sure", "{v}");
    let e = &v["hits"][0]["explain"];
    assert!(
        (e["confidence"].as_f64().unwrap() - 0.99).abs() < 1e-6,
        "{v}"
    );
    assert!(e["base_score"].is_number(), "{v}");
    let v = search(json!({"recency_half_life_secs": 0.5}));
    assert_eq!(ids(&v)[0], "new", "{v}");
    let f = v["hits"][1]["explain"]["recency_factor"].as_f64().unwrap();
    assert!(f < 0.5, "over a second old at half-life 0.5 s: {v}");
    for bad in [
        json!({"confidence_weight": 1.5}),
        json!({"recency_half_life_secs": 0}),
    ] {
        let mut body = json!({"vector": [1.0, 0.0, 0.0, 0.0], "modality": "c"});
        for (k, v) in bad.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (s, v) = server.post("/v1/search", &key, body);
        assert_eq!((s, code(&v)), (400, "BAD_REQUEST"), "{v}");
    }
    // A collection's default half-life applies when the search names none.
    let (s, v) = server.post(
        "/v1/collections",
        &key,
        json!({"name": "fresh", "dim": 4, "recency_half_life_secs": 0.5}),
    );
    assert_eq!(s, 201, "{v}");
    put(
        &server,
        &key,
        json!([{"id": "f-old", "modality": "fresh", "vector": [1.0, 0.0, 0.0, 0.0]}]),
    );
    std::thread::sleep(std::time::Duration::from_millis(1200));
    put(
        &server,
        &key,
        json!([{"id": "f-new", "modality": "fresh", "vector": [1.0, 0.3, 0.0, 0.0]}]),
    );
    let (_, v) = server.post(
        "/v1/search",
        &key,
        json!({"vector": [1.0, 0.0, 0.0, 0.0], "modality": "fresh", "k": 2, "explain": true}),
    );
    assert_eq!(ids(&v), ["f-new", "f-old"], "{v}");
}

#[test]
fn links_join_visible_records_of_one_tenant_and_go_with_them() {
    let server = Server::start();
    let key = setup(&server, "acme");
    let other = setup(&server, "other");
    put(
        &server,
        &key,
        json!([
            {"id": "a", "modality": "c", "vector": unit(0)},
            {"id": "b", "modality": "c", "vector": unit(1)},
            {"id": "hidden", "modality": "c", "vector": unit(2), "user_tokens": ["u:bob"]},
        ]),
    );
    put(
        &server,
        &other,
        json!([{"id": "x", "modality": "c", "vector": unit(0)}]),
    );

    let (s, v) = link(&server, &key, "a", "b");
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        (v["relation"].as_str(), v["weight"].as_f64()),
        (Some("next"), Some(1.0))
    );
    // Another tenant's id, a missing id and a record the request cannot see are all 404.
    for (src, dst) in [("a", "x"), ("x", "a"), ("a", "nope")] {
        let (s, v) = link(&server, &key, src, dst);
        assert_eq!((s, code(&v)), (404, "NOT_FOUND"), "{src}->{dst}: {v}");
    }
    let (s, v) = server.post(
        "/v1/links",
        &key,
        json!({"source": "a", "target": "hidden", "user_tokens": ["u:alice"]}),
    );
    assert_eq!((s, code(&v)), (404, "NOT_FOUND"), "{v}");
    let (s, v) = link(&server, &key, "a", "hidden");
    assert_eq!(s, 201, "all principals see it: {v}");
    // Bad input names the field.
    for (bad, field) in [
        (json!({"source": "a", "target": "b", "weight": 0}), "weight"),
        (json!({"source": "a", "target": "a"}), "target"),
        (json!({"source": "a"}), "target"),
        (
            json!({"source": "a", "target": "b", "relation": "no spaces"}),
            "relation",
        ),
    ] {
        let (s, v) = server.post("/v1/links", &key, bad.clone());
        assert_eq!((s, code(&v)), (400, "BAD_REQUEST"), "{bad}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(field),
            "{bad}: {v}"
        );
    }

    // Listing leaves out links to records the request cannot see.
    let (s, v) = server.get("/v1/memories/a/links", &key);
    assert_eq!(s, 200, "{v}");
    let targets: Vec<&str> = v["outgoing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["target"].as_str().unwrap())
        .collect();
    assert_eq!(targets, ["b"], "{v}");
    let (_, v) = server.get("/v1/memories/a/links?user_tokens=*", &key);
    assert_eq!(v["outgoing"].as_array().unwrap().len(), 2, "{v}");
    let (_, v) = server.get("/v1/memories/b/links", &key);
    assert_eq!(v["incoming"][0]["source"], "a", "{v}");
    let (s, _) = server.get("/v1/memories/x/links", &key);
    assert_eq!(s, 404);

    // Removal: explicit, then with a record.
    let (s, v) = server.post(
        "/v1/links/delete",
        &key,
        json!({"source": "a", "target": "b", "relation": "next"}),
    );
    assert_eq!(s, 200, "{v}");
    let (s, v) = server.post(
        "/v1/links/delete",
        &key,
        json!({"source": "a", "target": "b", "relation": "next"}),
    );
    assert_eq!((s, code(&v)), (404, "NOT_FOUND"), "{v}");
    let (s, _) = link(&server, &key, "b", "a");
    assert_eq!(s, 201);
    let (s, _) = server.call("DELETE", "/v1/memories/b", Some(&key), &[], None);
    assert_eq!(s, 200);
    let (_, v) = server.get("/v1/memories/a/links?user_tokens=*", &key);
    assert_eq!(v["incoming"], json!([]), "deleted with its record: {v}");

    // Storage stays consistent (links counted in usage, mirrors in place).
    let (s, v) = server.post("/v1/admin/tenants/acme/verify", OPERATOR_KEY, json!({}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["problem_count"], 0, "{v}");
}

#[test]
fn links_count_against_max_storage_bytes() {
    let server = Server::start();
    let key = setup(&server, "acme");
    put(
        &server,
        &key,
        json!([
            {"id": "a", "modality": "c", "vector": unit(0)},
            {"id": "b", "modality": "c", "vector": unit(1)},
        ]),
    );
    let (_, stats) = server.get("/v1/stats", &key);
    let used = stats["usage"]["storage_bytes"]
        .as_u64()
        .unwrap_or_else(|| panic!("{stats}"));
    server.limit("acme", json!({"max_storage_bytes": used + 10}));
    let (s, v) = link(&server, &key, "a", "b");
    assert_eq!((s, code(&v)), (403, "QUOTA_EXCEEDED"), "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_storage_bytes")
    );
    server.limit("acme", json!({"max_storage_bytes": used + 1000}));
    let (s, v) = link(&server, &key, "a", "b");
    assert_eq!(s, 201, "{v}");
    let (_, stats) = server.get("/v1/stats", &key);
    assert!(
        stats["usage"]["storage_bytes"].as_u64().unwrap() > used,
        "{stats}"
    );
}

/// a → b → c → d, each on its own axis, so only `a` matches the query.
fn chain(server: &Server, key: &str) {
    put(
        server,
        key,
        json!([
            {"id": "a", "modality": "c", "vector": [1.0, 0.0, 0.0, 0.0], "content": "start"},
            {"id": "b", "modality": "c", "vector": [0.0, 1.0, 0.0, 0.0]},
            {"id": "c", "modality": "c", "vector": [0.0, 0.0, 1.0, 0.0]},
            {"id": "d", "modality": "c", "vector": [0.0, 0.0, 0.0, 1.0]},
        ]),
    );
    for (s, t) in [("a", "b"), ("b", "c"), ("c", "d")] {
        let (st, v) = link(server, key, s, t);
        assert_eq!(st, 201, "{v}");
    }
}

fn recall(server: &Server, key: &str, extra: Value) -> Value {
    let mut body = json!({"vector": [1.0, 0.0, 0.0, 0.0], "modality": "c", "k": 4, "seeds": 1,
        "threshold": 0.01});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (s, v) = server.post("/v1/recall", key, body);
    assert_eq!(s, 200, "{v}");
    v
}

#[test]
fn recall_spreads_along_links_up_to_the_tenant_depth() {
    let server = Server::start();
    let key = setup(&server, "acme");
    chain(&server, &key);
    let v = recall(&server, &key, json!({}));
    assert_eq!(ids(&v), ["a", "b", "c", "d"], "{v}");
    assert_eq!(v["depth"], 3, "the default cap: {v}");
    assert_eq!(v["hits"][0]["via"], "seed");
    let via = v["hits"][3]["via"].as_array().expect("path");
    let hops: Vec<(&str, &str)> = via
        .iter()
        .map(|s| (s["from"].as_str().unwrap(), s["to"].as_str().unwrap()))
        .collect();
    assert_eq!(hops, [("a", "b"), ("b", "c"), ("c", "d")], "{v}");
    let act: Vec<f64> = v["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["activation"].as_f64().unwrap())
        .collect();
    assert!(
        act.windows(2).all(|w| w[0] > w[1]),
        "decays per hop: {act:?}"
    );
    assert!(
        (act[1] - 0.7).abs() < 1e-6,
        "1 · decay 0.7 · w 1 / √1: {act:?}"
    );

    // The request's depth, and the tenant's cap over it.
    assert_eq!(ids(&recall(&server, &key, json!({"depth": 1}))), ["a", "b"]);
    server.limit("acme", json!({"max_spreading_depth": 2}));
    let v = recall(&server, &key, json!({"depth": 3}));
    assert_eq!(ids(&v), ["a", "b", "c"], "{v}");
    assert_eq!(
        (v["depth"].as_u64(), v["depth_capped"].as_bool()),
        (Some(2), Some(true))
    );
    // Relations filter which links are followed; thresholds stop weak activation.
    assert_eq!(
        ids(&recall(&server, &key, json!({"relations": ["causes"]}))),
        ["a"]
    );
    assert_eq!(
        ids(&recall(&server, &key, json!({"threshold": 0.6}))),
        ["a", "b"]
    );
    // Search alone finds only the seed's neighbourhood by vector.
    for (bad, field) in [
        (json!({"depth": 11}), "depth"),
        (json!({"decay": 0}), "decay"),
        (json!({"max_fanout": 0}), "max_fanout"),
        (json!({"seeds": 5}), "seeds"),
        (json!({"bogus": 1}), "bogus"),
    ] {
        let mut body = json!({"vector": [1.0, 0.0, 0.0, 0.0], "modality": "c", "k": 4});
        for (k, v) in bad.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (s, v) = server.post("/v1/recall", &key, body);
        assert_eq!((s, code(&v)), (400, "BAD_REQUEST"), "{bad}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(field),
            "{bad}: {v}"
        );
    }
}

#[test]
fn recall_never_returns_nor_crosses_an_invisible_or_expired_record() {
    let server = Server::start();
    let key = setup(&server, "acme");
    chain(&server, &key);
    // b becomes Bob's: for a request speaking for Alice it is neither a hit nor a bridge.
    let (s, v) = server.call(
        "PATCH",
        "/v1/memories/b",
        Some(&key),
        &[],
        Some(&json!({"user_tokens": ["u:bob"]})),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        ids(&recall(&server, &key, json!({"user_tokens": ["u:alice"]}))),
        ["a"]
    );
    assert_eq!(
        ids(&recall(&server, &key, json!({"user_tokens": ["u:bob"]}))),
        ["a", "b", "c", "d"]
    );
    // A filter is a visibility rule too: a record failing it is not a bridge.
    let v = recall(
        &server,
        &key,
        json!({"user_tokens": ["*"], "filter": {"content": {"$exists": true}}}),
    );
    assert_eq!(ids(&v), ["a"], "{v}");
    // Another domain is invisible.
    let (_, v) = server.post(
        "/v1/recall",
        &key,
        json!({"vector": [1.0, 0.0, 0.0, 0.0], "modality": "c", "memory_domain": "elsewhere"}),
    );
    assert_eq!(ids(&v), Vec::<String>::new(), "{v}");
    // An expired record is gone from recall as a hit and as a bridge.
    let soon = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        + 300;
    let (s, v) = server.call(
        "PATCH",
        "/v1/memories/c",
        Some(&key),
        &[],
        Some(&json!({"expires_at": soon})),
    );
    assert_eq!(s, 200, "{v}");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(
        ids(&recall(&server, &key, json!({"user_tokens": ["*"]}))),
        ["a", "b"]
    );
}

#[test]
fn confidence_and_links_survive_export_and_import() {
    let server = Server::start();
    let key = setup(&server, "acme");
    chain(&server, &key);
    let (s, _) = server.post(
        "/v1/memories/b/evidence",
        &key,
        json!({"corroborate": true}),
    );
    assert_eq!(s, 200);
    let (s, text) = server.send_raw(
        "GET",
        "/v1/admin/tenants/acme/export",
        OPERATOR_KEY,
        "application/json",
        Vec::new(),
    );
    assert_eq!(s, 200, "{text}");
    assert_eq!(
        text.lines()
            .filter(|l| l.contains("\"type\":\"link\""))
            .count(),
        3,
        "{text}"
    );
    let (s, v) = server.send_raw(
        "POST",
        "/v1/admin/tenants/copy/import",
        OPERATOR_KEY,
        "application/x-ndjson",
        text.clone().into_bytes(),
    );
    assert_eq!(s, 201, "{v}");
    let copy = server.key("copy", json!({ "permissions": ALL }));
    let (_, b) = server.get("/v1/memories/b", &copy);
    assert_eq!(b["confidence"]["corroborations"], 1, "{b}");
    assert_eq!(
        ids(&recall(&server, &copy, json!({}))),
        ["a", "b", "c", "d"]
    );
    let (s, v) = server.post("/v1/admin/tenants/copy/verify", OPERATOR_KEY, json!({}));
    assert_eq!((s, v["problem_count"].as_u64()), (200, Some(0)), "{v}");
    // A link to a record that is not in the import fails the whole import.
    let broken: String = text
        .lines()
        .filter(|l| !l.contains("\"id\":\"d\""))
        .collect::<Vec<_>>()
        .join("\n");
    let (s, v) = server.send_raw(
        "POST",
        "/v1/admin/tenants/broken/import",
        OPERATOR_KEY,
        "application/x-ndjson",
        broken.into_bytes(),
    );
    assert_eq!(s, 400, "{v}");
    let _: Value = serde_json::from_str(&v).unwrap_or(Value::Null);
}
