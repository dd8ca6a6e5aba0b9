//! `include` on `POST /v1/search`: hits always carry `id` and `score`, and `content`,
//! `metadata`, `vector` and `record` only when asked (`content` and `metadata` by default);
//! an included vector is the one stored, not the index's normalised copy.

mod common;

use common::{Server, code};
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
            {"id": "b", "modality": "v", "vector": [0.0, 2.0, 0.0]},
        ]}),
    );
    assert_eq!(s, 201, "{v}");
    (server, key)
}

fn search(server: &Server, key: &str, include: Option<Value>) -> Vec<Value> {
    let mut body = json!({"modality": "v", "vector": [1.0, 0.1, 0.0], "k": 2});
    if let Some(include) = include {
        body["include"] = include;
    }
    let (s, v) = server.post("/v1/search", key, body);
    assert_eq!(s, 200, "{v}");
    v["hits"].as_array().expect("hits").clone()
}

fn keys(hit: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = hit
        .as_object()
        .expect("hit")
        .keys()
        .map(String::as_str)
        .collect();
    k.sort();
    k
}

#[test]
fn hits_carry_what_include_asks_for() {
    let (server, key) = setup();

    let hits = search(&server, &key, None);
    assert_eq!(keys(&hits[0]), ["content", "id", "metadata", "score"]);
    assert_eq!(hits[0]["id"], "a");
    assert_eq!(hits[0]["content"], "alpha");
    assert_eq!(hits[0]["metadata"], json!({"n": 1}));
    // Included but absent is `null`, not missing.
    assert_eq!(hits[1]["content"], Value::Null);

    let hits = search(&server, &key, Some(json!([])));
    assert_eq!(keys(&hits[0]), ["id", "score"]);

    let hits = search(&server, &key, Some(json!(["vector"])));
    assert_eq!(keys(&hits[0]), ["id", "score", "vector"]);
    // The stored vector, not the unit vector the cosine index keeps.
    assert_eq!(hits[0]["vector"], json!([3.0, 0.0, 0.0]));
    assert_eq!(hits[1]["vector"], json!([0.0, 2.0, 0.0]));

    let hits = search(&server, &key, Some(json!(["record"])));
    assert_eq!(keys(&hits[0]), ["id", "record", "score"]);
    assert_eq!(hits[0]["record"]["content"], "alpha");
    assert_eq!(hits[0]["record"]["memory_domain"], "default");
    assert_eq!(hits[0]["record"]["vector"], Value::Null);

    let hits = search(&server, &key, Some(json!(["record", "vector"])));
    assert_eq!(hits[0]["record"]["vector"], json!([3.0, 0.0, 0.0]));
    assert_eq!(hits[0]["vector"], json!([3.0, 0.0, 0.0]));
}

#[test]
fn a_lean_answer_is_much_smaller_than_whole_records() {
    let (server, key) = setup();
    let size = |include: Value| {
        let body = json!({"modality": "v", "vector": [1.0, 0.1, 0.0], "k": 2, "include": include});
        server.post("/v1/search", &key, body).1.to_string().len()
    };
    let (lean, whole) = (size(json!([])), size(json!(["record"])));
    assert!(
        lean * 3 < whole,
        "ids and scores {lean} B, whole records {whole} B"
    );
}

#[test]
fn an_unknown_include_is_a_bad_request_naming_the_field() {
    let (server, key) = setup();
    for include in [json!(["contents"]), json!("content"), json!([1])] {
        let (s, v) = server.post(
            "/v1/search",
            &key,
            json!({"modality": "v", "vector": [1.0, 0.0, 0.0], "include": include}),
        );
        assert_eq!((s, code(&v)), (400, "BAD_REQUEST"), "{include}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("include"),
            "{include}: {v}"
        );
    }
}
