//! `include` on the routes that answer records (`GET /v1/memories/{id}`, `GET` and
//! `POST /v1/memories/list`, `PATCH /v1/memories/{id}`, evidence): every record carries its
//! `id`; by default the whole record without its vector; `vector` only when asked (then `null`
//! for a record without one); `[]` ids only; an unknown name is `400`. Exports stay complete.

mod common;

use common::{OPERATOR_KEY, Server, code};
use serde_json::{Value, json};

fn setup() -> (Server, String) {
    let server = Server::start();
    server.tenant("acme");
    let key = server.key("acme", json!({"permissions": ["read", "write", "admin"]}));
    let (s, v) = server.post(
        "/v1/collections",
        &key,
        json!({"name": "v", "dim": 3, "metric": "cosine"}),
    );
    assert_eq!(s, 201, "{v}");
    let (s, v) = server.post(
        "/v1/memories",
        &key,
        json!({"records": [
            {"id": "a", "modality": "v", "content": "alpha", "vector": [3.0, 0.0, 0.0],
             "metadata": {"n": 1}},
            {"id": "b", "content": "no vector here"},
        ]}),
    );
    assert_eq!(s, 201, "{v}");
    (server, key)
}

fn keys(record: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = record
        .as_object()
        .unwrap_or_else(|| panic!("a record: {record}"))
        .keys()
        .map(String::as_str)
        .collect();
    k.sort();
    k
}

/// Every field of a stored record but its vector.
const WHOLE: [&str; 13] = [
    "confidence",
    "content",
    "created_at",
    "expires_at",
    "id",
    "kind",
    "memory_domain",
    "memory_scope",
    "metadata",
    "modality",
    "run_id",
    "updated_at",
    "user_tokens",
];

fn get(server: &Server, key: &str, path: &str) -> Value {
    let (s, v) = server.get(path, key);
    assert_eq!(s, 200, "{path}: {v}");
    v
}

fn list(server: &Server, key: &str, body: Value) -> Value {
    let (s, v) = server.post("/v1/memories/list", key, body);
    assert_eq!(s, 200, "{v}");
    v
}

#[test]
fn a_record_by_id_comes_without_its_vector_unless_asked() {
    let (server, key) = setup();

    let a = get(&server, &key, "/v1/memories/a");
    assert_eq!(keys(&a), WHOLE, "{a}");
    assert_eq!(
        (&a["content"], &a["modality"]),
        (&json!("alpha"), &json!("v"))
    );

    let a = get(&server, &key, "/v1/memories/a?include=record,vector");
    let mut with_vector = WHOLE.to_vec();
    with_vector.push("vector");
    with_vector.sort();
    assert_eq!(keys(&a), with_vector);
    assert_eq!(a["vector"], json!([3.0, 0.0, 0.0]));

    let a = get(&server, &key, "/v1/memories/a?include=vector");
    assert_eq!(a, json!({"id": "a", "vector": [3.0, 0.0, 0.0]}));
    // Asked for and absent: `null`, not missing.
    let b = get(&server, &key, "/v1/memories/b?include=vector,content");
    assert_eq!(
        b,
        json!({"id": "b", "content": "no vector here", "vector": null})
    );
    // Percent-encoded commas are commas.
    let a = get(&server, &key, "/v1/memories/a?include=content%2Cmetadata");
    assert_eq!(
        a,
        json!({"id": "a", "content": "alpha", "metadata": {"n": 1}})
    );
    assert_eq!(
        get(&server, &key, "/v1/memories/a?include="),
        json!({"id": "a"})
    );
}

#[test]
fn lists_come_without_vectors_unless_asked_and_page_on_ids_alone() {
    let (server, key) = setup();

    for v in [
        list(&server, &key, json!({})),
        get(&server, &key, "/v1/memories/list"),
    ] {
        let records = v["records"].as_array().expect("records");
        assert_eq!(records.len(), 2, "{v}");
        for r in records {
            assert_eq!(keys(r), WHOLE, "{r}");
        }
    }

    for v in [
        list(&server, &key, json!({"include": ["record", "vector"]})),
        get(&server, &key, "/v1/memories/list?include=record,vector"),
    ] {
        assert_eq!(v["records"][0]["vector"], json!([3.0, 0.0, 0.0]), "{v}");
        assert_eq!(v["records"][1]["vector"], Value::Null, "{v}");
        assert!(v["records"][1].get("vector").is_some(), "{v}");
        assert_eq!(v["records"][1]["content"], "no vector here", "{v}");
    }

    // Ids only, and the cursor still pages.
    for v in [
        list(&server, &key, json!({"include": [], "limit": 1})),
        get(&server, &key, "/v1/memories/list?include=&limit=1"),
    ] {
        assert_eq!(v, json!({"records": [{"id": "a"}], "next": "a"}));
    }
    let rest = list(&server, &key, json!({"include": [], "after": "a"}));
    assert_eq!(rest, json!({"records": [{"id": "b"}], "next": null}));

    let v = list(
        &server,
        &key,
        json!({"include": ["content"], "filter": {"n": 1}}),
    );
    assert_eq!(v["records"], json!([{"id": "a", "content": "alpha"}]));
}

#[test]
fn an_unknown_include_is_refused_naming_the_known_ones() {
    let (server, key) = setup();
    let known = "expected content, metadata, vector or record";
    for path in [
        "/v1/memories/a?include=vectors",
        "/v1/memories/a?include=record,Vector",
        "/v1/memories/list?include=all",
    ] {
        let (s, v) = server.get(path, &key);
        assert_eq!((s, code(&v)), (400, "BAD_REQUEST"), "{path}: {v}");
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(message.starts_with("include: "), "{path}: {v}");
        assert!(message.contains(known), "{path}: {v}");
    }
    let (s, v) = server.post(
        "/v1/memories/list",
        &key,
        json!({"include": ["content", "vectors"]}),
    );
    assert_eq!((s, code(&v)), (400, "BAD_REQUEST"), "{v}");
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("include"), "{v}");
    assert!(message.contains(known), "{v}");
    // Not a list, or given twice in a query string.
    let (s, v) = server.post("/v1/memories/list", &key, json!({"include": "vector"}));
    assert_eq!(s, 400, "{v}");
    let (s, v) = server.get("/v1/memories/a?include=content&include=vector", &key);
    assert_eq!(s, 400, "{v}");
}

#[test]
fn a_patch_and_evidence_answer_like_a_get() {
    let (server, key) = setup();
    let (s, v) = server.call(
        "PATCH",
        "/v1/memories/a",
        Some(&key),
        &[],
        Some(&json!({"metadata": {"m": 2}})),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(keys(&v), WHOLE, "{v}");
    assert_eq!(v["metadata"], json!({"n": 1, "m": 2}));

    let (s, v) = server.call(
        "PATCH",
        "/v1/memories/a?include=vector",
        Some(&key),
        &[],
        Some(&json!({"metadata": {"m": 3}})),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v, json!({"id": "a", "vector": [3.0, 0.0, 0.0]}));

    let (s, v) = server.post(
        "/v1/memories/a/evidence",
        &key,
        json!({"corroborate": true}),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(keys(&v), WHOLE, "{v}");
    assert_eq!(v["confidence"]["corroborations"], 1, "{v}");
    let (s, v) = server.post(
        "/v1/memories/a/evidence?include=record,vector",
        &key,
        json!({"corroborate": true}),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["vector"], json!([3.0, 0.0, 0.0]), "{v}");
    assert_eq!(v["confidence"]["corroborations"], 2, "{v}");

    // A refused include changes nothing.
    let (s, v) = server.call(
        "PATCH",
        "/v1/memories/a?include=nope",
        Some(&key),
        &[],
        Some(&json!({"metadata": {"m": 4}})),
    );
    assert_eq!(s, 400, "{v}");
    let a = get(&server, &key, "/v1/memories/a?include=metadata");
    assert_eq!(a["metadata"], json!({"n": 1, "m": 3}));
}

#[test]
fn exports_keep_every_vector() {
    let (server, _key) = setup();
    let (s, body) = server.send_raw_with(
        "GET",
        "/v1/admin/tenants/acme/export",
        OPERATOR_KEY,
        &[],
        Vec::new(),
    );
    assert_eq!(s, 200, "{body}");
    let a = body
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("a JSON line"))
        .find(|l| l.to_string().contains("\"alpha\""))
        .expect("record a in the export");
    assert!(a.to_string().contains("[3.0,0.0,0.0]"), "{a}");
}
