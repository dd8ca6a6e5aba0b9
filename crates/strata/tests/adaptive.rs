//! Adaptive reranking over HTTP: `POST /v1/feedback` raises a used record in its domain's
//! `rerank: "adaptive"` searches, `explain` shows the channels, the state survives a restart,
//! the tenant's stats show it per domain, bad input is a 400 naming the field, and one end
//! user's feedback context never shows in another's scores.

mod common;

use common::{Server, code};
use serde_json::{Value, json};

fn setup(server: &Server) -> String {
    server.tenant("acme");
    let key = server.key(
        "acme",
        json!({"permissions": ["read", "write", "admin", "all_principals"]}),
    );
    let (s, v) = server.post("/v1/collections", &key, json!({"name": "v", "dim": 3}));
    assert_eq!(s, 201, "{v}");
    for (domain, prefix) in [("dialog", ""), ("support", "s-")] {
        let mut records: Vec<Value> = (0..6)
            .map(|i| json!({"id": format!("{prefix}near-{i}"), "modality": "v", "vector": [1.0, 0.1 * i as f64, 0.0]}))
            .collect();
        records.push(
            json!({"id": format!("{prefix}target"), "modality": "v", "vector": [1.0, 0.0, 1.0]}),
        );
        records.push(
            json!({"id": format!("{prefix}far"), "modality": "v", "vector": [-1.0, 0.0, 0.2]}),
        );
        let (s, v) = server.post(
            "/v1/memories",
            &key,
            json!({"records": records, "memory_domain": domain}),
        );
        assert_eq!(s, 201, "{v}");
    }
    key
}

fn search(server: &Server, key: &str, domain: &str) -> Vec<Value> {
    let (s, v) = server.post(
        "/v1/search",
        key,
        json!({"modality": "v", "vector": [1.0, 0.0, 0.0], "k": 3, "rerank": "adaptive",
               "explain": true, "include": [], "memory_domain": domain}),
    );
    assert_eq!(s, 200, "{v}");
    v["hits"].as_array().expect("hits").clone()
}

fn ids(hits: &[Value]) -> Vec<&str> {
    hits.iter()
        .map(|h| h["id"].as_str().unwrap_or("?"))
        .collect()
}

#[test]
fn feedback_raises_a_record_in_its_domain_and_survives_a_restart() {
    let mut server = Server::start();
    let key = setup(&server);
    assert!(!ids(&search(&server, &key, "dialog")).contains(&"target"));
    for _ in 0..4 {
        let (s, v) = server.post(
            "/v1/feedback",
            &key,
            json!({"ids": ["target", "no-such-id"], "shown": ["near-0"], "modality": "v",
                   "vector": [1.0, 0.0, 0.9], "memory_domain": "dialog"}),
        );
        assert_eq!(s, 200, "{v}");
        assert_eq!(
            v,
            json!({"memory_domain": "dialog", "narrative_updated": true})
        );
    }
    let raised = search(&server, &key, "dialog");
    assert_eq!(ids(&raised)[0], "target", "{raised:?}");
    let explain = &raised[0]["explain"]["adaptive"];
    for field in ["base", "narrative", "pheromone", "base_score", "base_rank"] {
        assert!(explain[field].is_number(), "{field}: {explain}");
    }
    assert!(
        explain["pheromone"].as_f64().unwrap_or(0.0) > 0.1,
        "{explain}"
    );
    // Another domain of the same tenant is untouched.
    assert!(!ids(&search(&server, &key, "support")).contains(&"s-target"));

    let (s, stats) = server.get("/v1/stats", &key);
    assert_eq!(s, 200, "{stats}");
    let dialog = &stats["adaptive"][0];
    assert_eq!(
        (
            dialog["memory_domain"].as_str(),
            dialog["pheromones"].as_u64(),
            dialog["narratives"].as_u64()
        ),
        (Some("dialog"), Some(1), Some(1)),
        "{stats}"
    );
    assert!(dialog["bytes"].as_u64().unwrap_or(0) > 0);

    server.restart();
    let reloaded = search(&server, &key, "dialog");
    assert_eq!(ids(&reloaded), ids(&raised));
    // Equal up to the pheromone's decay in the moments the restart took.
    let pheromone = |hits: &[Value]| {
        (hits[0]["explain"]["adaptive"]["pheromone"]
            .as_f64()
            .unwrap_or(0.0)
            * 1e4)
            .round()
    };
    assert_eq!(pheromone(&reloaded), pheromone(&raised));
}

#[test]
fn bad_feedback_and_rerank_input_is_a_400_naming_the_field() {
    let server = Server::start();
    let key = setup(&server);
    let cases = [
        ("/v1/feedback", json!({}), "ids"),
        ("/v1/feedback", json!({"ids": "target"}), "ids"),
        ("/v1/feedback", json!({"ids": ["bad id!"]}), "ids"),
        (
            "/v1/feedback",
            json!({"ids": ["target"], "modality": "v", "vector": [1.0]}),
            "vector",
        ),
        (
            "/v1/feedback",
            json!({"ids": ["target"], "modality": "v", "vector": [0.0, 0.0, 0.0]}),
            "vector: a zero vector",
        ),
        (
            "/v1/feedback",
            json!({"ids": ["target"], "bogus": 1}),
            "bogus",
        ),
        (
            "/v1/search",
            json!({"vector": [1, 0, 0], "modality": "v", "rerank": "magic"}),
            "rerank",
        ),
        (
            "/v1/search",
            json!({"vector": [1, 0, 0], "modality": "v", "rerank_weights": {"base": 1}}),
            "rerank_weights",
        ),
        (
            "/v1/search",
            json!({"vector": [1, 0, 0], "modality": "v", "rerank": "adaptive", "rerank_weights": {"pheromone": -1}}),
            "rerank_weights.pheromone",
        ),
        (
            "/v1/search",
            json!({"vector": [1, 0, 0], "modality": "v", "rerank": "adaptive",
                   "rerank_weights": {"base": 0, "narrative": 0, "pheromone": 0}}),
            "at least one weight",
        ),
    ];
    for (path, body, field) in cases {
        let (s, v) = server.post(path, &key, body.clone());
        assert_eq!((s, code(&v)), (400, "BAD_REQUEST"), "{body}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap_or("").contains(field),
            "{body}: {v}"
        );
    }
}

/// Each hit's id and narrative contribution under an adaptive search with `explain`.
fn narrative_of(server: &Server, key: &str) -> Vec<(String, Value)> {
    let (s, v) = server.post(
        "/v1/search",
        key,
        json!({"modality": "v", "vector": [1.0, 0.0, 0.0], "k": 10, "rerank": "adaptive",
               "explain": true, "include": [], "memory_domain": "family"}),
    );
    assert_eq!(s, 200, "{v}");
    let mut out: Vec<(String, Value)> = v["hits"]
        .as_array()
        .expect("hits")
        .iter()
        .map(|h| {
            let id = h["id"].as_str().unwrap_or("?").to_owned();
            (id, h["explain"]["adaptive"]["narrative"].clone())
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The black-box finding this guards against: Bob's feedback context (about a divorce) moved
/// the narrative score of Alice's record about her cousin the divorce lawyer, so Alice could
/// read what Bob had been asking through her own records. Narratives are per principal now:
/// Alice's scores stay bit-identical, and Bob's own searches follow his context.
#[test]
fn one_users_feedback_context_is_not_readable_through_another_users_scores() {
    let server = Server::start();
    server.tenant("acme");
    let admin = server.key(
        "acme",
        json!({"permissions": ["read", "write", "admin", "all_principals"]}),
    );
    let rw = json!(["read", "write"]);
    let alice = server.key(
        "acme",
        json!({"permissions": rw, "user_tokens": ["u:alice"]}),
    );
    let bob = server.key("acme", json!({"permissions": rw, "user_tokens": ["u:bob"]}));
    let (s, v) = server.post("/v1/collections", &admin, json!({"name": "v", "dim": 3}));
    assert_eq!(s, 201, "{v}");
    let record = |id: &str, content: &str, vector: [f64; 3], owner: Option<&str>| {
        let mut r = json!({"id": id, "modality": "v", "content": content, "vector": vector});
        if let Some(o) = owner {
            r["user_tokens"] = json!([o]);
        }
        r
    };
    let records = [
        record(
            "cousin",
            "my cousin is a family lawyer handling divorces",
            [0.2, 0.1, 1.0],
            Some("u:alice"),
        ),
        record(
            "recipes",
            "grandma's recipes",
            [1.0, 0.3, 0.0],
            Some("u:alice"),
        ),
        record(
            "garden",
            "tomatoes need sun",
            [1.0, 0.0, 0.1],
            Some("u:alice"),
        ),
        record(
            "bob-notes",
            "dentist on friday",
            [1.0, 0.2, 0.2],
            Some("u:bob"),
        ),
        record("legal-aid", "legal aid office hours", [0.3, 0.0, 1.0], None),
    ];
    let (s, v) = server.post(
        "/v1/memories",
        &admin,
        json!({"records": records, "memory_domain": "family", "user_tokens": ["*"]}),
    );
    assert_eq!(s, 201, "{v}");
    // Alice has a narrative of her own, far from Bob's context.
    let (s, v) = server.post(
        "/v1/feedback",
        &alice,
        json!({"modality": "v", "vector": [1.0, 0.0, 0.0], "memory_domain": "family"}),
    );
    assert_eq!((s, &v["narrative_updated"]), (200, &json!(true)), "{v}");
    let before = narrative_of(&server, &alice);
    assert!(before.iter().any(|(id, _)| id == "cousin"), "{before:?}");
    let bobs_before = narrative_of(&server, &bob);
    for _ in 0..5 {
        let (s, v) = server.post(
            "/v1/feedback",
            &bob,
            json!({"modality": "v", "vector": [0.0, 0.0, 1.0], "memory_domain": "family",
                   "query": "I want a divorce, how do I find a lawyer for child custody"}),
        );
        assert_eq!((s, &v["narrative_updated"]), (200, &json!(true)), "{v}");
    }
    assert_eq!(
        narrative_of(&server, &alice),
        before,
        "Alice's scores moved"
    );
    // Bob's own searches do follow his context.
    let legal = |n: &[(String, Value)]| {
        n.iter()
            .find(|(id, _)| id == "legal-aid")
            .and_then(|(_, v)| v.as_f64())
            .expect("legal-aid hit")
    };
    let bobs_after = narrative_of(&server, &bob);
    assert!(
        legal(&bobs_after) > legal(&bobs_before) + 0.05,
        "{bobs_before:?} → {bobs_after:?}"
    );
    // An unbound admin without tokens reads the namespace-wide narrative, which no bound
    // user's feedback moved.
    let wide = narrative_of(&server, &admin);
    assert!(
        wide.iter().all(|(_, v)| v.as_f64() == Some(0.0)),
        "{wide:?}"
    );
}
