//! Re-embedding a collection over HTTP with the real binary (issue #9): a collection of client
//! vectors (`embedder` none, its own dimension) is planned, re-embedded online to the built-in
//! model and switched in one transaction; afterwards text-only writes and query-only searches
//! work there and the old model's vectors are refused. A SIGKILL in the middle leaves it whole on
//! its old model, and nothing acknowledged is lost.

mod common;

use std::time::{Duration, Instant};

use common::{Server, code, embedder_env, model_dir};
use serde_json::{Value, json};

const MODEL: &str = "sentence-transformers/all-MiniLM-L6-v2";
const OLD_DIM: usize = 8;
const TARGET: &str = "Alice takes oat milk in her coffee";

fn start_with_embedder() -> Server {
    let dir = model_dir();
    let env = embedder_env(&dir);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Server::start_with(&env)
}

/// A tenant with an admin key and a `notes` collection of `n` records, each with content and
/// an 8-dimensional client vector of the client's own model (`TARGET` is `note-0`).
fn seeded(server: &Server, n: usize) -> String {
    server.tenant("acme");
    let key = server.key(
        "acme",
        json!({"permissions": ["read", "write", "admin", "all_principals"]}),
    );
    let (s, v) = server.post(
        "/v1/collections",
        &key,
        json!({"name": "notes", "dim": OLD_DIM}),
    );
    assert_eq!(s, 201, "{v}");
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let records: Vec<Value> = chunk
            .iter()
            .map(|&i| {
                let content = if i == 0 {
                    TARGET.to_owned()
                } else {
                    format!(
                        "note {i}: the meeting about project {} moved to room {}",
                        i % 37,
                        i % 11
                    )
                };
                let mut vector = vec![0.1f32; OLD_DIM];
                vector[i % OLD_DIM] = 1.0;
                json!({"id": format!("note-{i}"), "modality": "notes", "content": content,
                       "vector": vector, "vector_model": "acme/own-model"})
            })
            .collect();
        let (s, v) = server.post("/v1/memories", &key, json!({ "records": records }));
        assert_eq!(s, 201, "{v}");
    }
    key
}

fn status(server: &Server, key: &str) -> Value {
    status_of(server, key, "notes")
}

fn status_of(server: &Server, key: &str, collection: &str) -> Value {
    let (s, v) = server.get(&format!("/v1/collections/{collection}/reembed"), key);
    assert_eq!(s, 200, "{v}");
    v
}

fn wait_done(server: &Server, key: &str) -> Value {
    wait_done_of(server, key, "notes")
}

fn wait_done_of(server: &Server, key: &str, collection: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let v = status_of(server, key, collection);
        match v["state"].as_str() {
            Some("done") => return v,
            Some("running") if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50))
            }
            _ => panic!("re-embed did not finish: {v}"),
        }
    }
}

fn notes(server: &Server, key: &str) -> Value {
    let (s, v) = server.get("/v1/collections", key);
    assert_eq!(s, 200, "{v}");
    v["collections"]
        .as_array()
        .expect("collections")
        .iter()
        .find(|c| c["name"] == "notes")
        .cloned()
        .expect("notes collection")
}

/// Every record `note-0..n` is there with its content and a vector of dimension `dim`.
fn all_vectors_have_dim(server: &Server, key: &str, n: usize, dim: usize) {
    for i in 0..n {
        let (s, v) = server.get(&format!("/v1/memories/note-{i}?include=record,vector"), key);
        assert_eq!(s, 200, "note-{i}: {v}");
        assert!(v["content"].is_string(), "{v}");
        assert_eq!(
            v["vector"].as_array().map(Vec::len),
            Some(dim),
            "note-{i} is not on one model: {v}"
        );
    }
}

#[test]
fn a_client_vector_collection_is_planned_then_reembedded_online_to_the_built_in_model() {
    let server = start_with_embedder();
    let key = seeded(&server, 40);

    // A vector-only record cannot be re-embedded: reported by the plan, refused by the start.
    let (s, v) = server.post(
        "/v1/memories",
        &key,
        json!({"id": "bare", "modality": "notes", "vector": vec![0.5f32; OLD_DIM]}),
    );
    assert_eq!(s, 201, "{v}");
    let (s, plan) = server.post(
        "/v1/collections/notes/reembed",
        &key,
        json!({"dry_run": true}),
    );
    assert_eq!(s, 200, "{plan}");
    assert_eq!(plan["vector_only_records"], 1, "{plan}");
    let (s, v) = server.post("/v1/collections/notes/reembed", &key, json!({}));
    assert_eq!((s, code(&v)), (409, "CONFLICT"), "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("no content"),
        "{v}"
    );
    let (s, v) = server.call("DELETE", "/v1/memories/bare", Some(&key), &[], None);
    assert_eq!(s, 200, "{v}");

    // The dry run: counts, bytes, a measured estimate, both models; nothing changes.
    let (s, plan) = server.post(
        "/v1/collections/notes/reembed",
        &key,
        json!({"dry_run": true}),
    );
    assert_eq!(s, 200, "{plan}");
    assert_eq!(plan["records"], 40, "{plan}");
    assert_eq!(plan["vector_only_records"], 0, "{plan}");
    assert!(plan["text_bytes"].as_u64().unwrap_or(0) > 40 * 20, "{plan}");
    assert!(
        plan["measured_texts_per_sec"].as_f64().unwrap_or(0.0) > 0.0,
        "{plan}"
    );
    assert!(
        plan["estimated_seconds"].as_f64().unwrap_or(0.0) > 0.0,
        "{plan}"
    );
    assert_eq!(plan["from_model"], Value::Null, "{plan}");
    assert_eq!(plan["to_model"]["model_id"], MODEL, "{plan}");
    assert_eq!(
        (plan["from_dim"].as_u64(), plan["to_dim"].as_u64()),
        (Some(8), Some(384))
    );
    assert_eq!(plan["already_current"], false, "{plan}");
    assert_eq!(status(&server, &key)["state"], "none");
    all_vectors_have_dim(&server, &key, 40, OLD_DIM);

    // Bad input names the field; a read-write key without admin is refused.
    let (s, v) = server.post(
        "/v1/collections/notes/reembed",
        &key,
        json!({"dry_run": "yes"}),
    );
    assert_eq!((s, code(&v)), (400, "BAD_REQUEST"), "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("dry_run"),
        "{v}"
    );
    let writer = server.key("acme", json!({"permissions": ["read", "write"]}));
    let (s, v) = server.post("/v1/collections/notes/reembed", &writer, json!({}));
    assert_eq!((s, code(&v)), (403, "FORBIDDEN"), "{v}");

    // The re-embed runs in the background while writes go on.
    let (s, v) = server.post("/v1/collections/notes/reembed", &key, json!({}));
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["state"], "running", "{v}");
    assert_eq!(v["records_total"], 40, "{v}");
    let (s, v) = server.post(
        "/v1/memories",
        &key,
        json!({"id": "note-40", "modality": "notes", "content": "Bob's flight lands at noon"}),
    );
    assert_eq!(s, 201, "{v}");
    let done = wait_done(&server, &key);
    assert_eq!(done["model"]["model_id"], MODEL, "{done}");
    assert!(
        done["records_embedded"].as_u64().unwrap_or(0) >= 41,
        "{done}"
    );
    // Progress never passes its total, however much the job met beyond its start.
    assert!(
        done["records_embedded"].as_u64() <= done["records_total"].as_u64(),
        "{done}"
    );
    let c = notes(&server, &key);
    assert_eq!(
        (c["dim"].as_u64(), &c["embedder"]["model_id"]),
        (Some(384), &json!(MODEL))
    );

    // Every record, including the one written during the job, is on the new model.
    all_vectors_have_dim(&server, &key, 41, 384);

    // Text-only writes are embedded; a query-only search finds the target by meaning.
    let (s, v) = server.post(
        "/v1/memories",
        &key,
        json!({"id": "new", "modality": "notes", "content": "Carol is allergic to peanuts"}),
    );
    assert_eq!(s, 201, "{v}");
    let (_, v) = server.get("/v1/memories/new?include=record,vector", &key);
    assert_eq!(v["vector"].as_array().map(Vec::len), Some(384), "{v}");
    let (s, v) = server.post(
        "/v1/search",
        &key,
        json!({"query": "what does Alice drink?", "modality": "notes", "k": 3}),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["mode"], "hybrid", "{v}");
    assert_eq!(v["hits"][0]["id"], "note-0", "{v}");

    // The old model's vectors are refused, whatever their dimension.
    for vector in [vec![0.1f32; OLD_DIM], vec![0.1f32; 384]] {
        let (s, v) = server.post(
            "/v1/memories",
            &key,
            json!({"modality": "notes", "content": "x", "vector": vector,
                   "vector_model": "acme/own-model"}),
        );
        assert!(
            s == 400 || s == 409,
            "an old-model vector was accepted: {s} {v}"
        );
    }

    // Nothing left to do: the plan says so and a second start is refused.
    let (_, plan) = server.post(
        "/v1/collections/notes/reembed",
        &key,
        json!({"dry_run": true}),
    );
    assert_eq!(plan["already_current"], true, "{plan}");
    let (s, v) = server.post("/v1/collections/notes/reembed", &key, json!({}));
    assert_eq!((s, code(&v)), (409, "CONFLICT"), "{v}");
}

#[test]
fn a_sigkill_mid_reembed_leaves_the_collection_whole_on_one_model() {
    let mut server = start_with_embedder();
    let n = 1500;
    let key = seeded(&server, n);
    let (s, v) = server.post("/v1/collections/notes/reembed", &key, json!({}));
    assert_eq!(s, 202, "{v}");
    // Kill once the job has staged some vectors but (with 1500 texts) long before it switches.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (embedded_before, job_before) = loop {
        let v = status(&server, &key);
        assert_eq!(v["state"], "running", "finished before the kill: {v}");
        let embedded = v["records_embedded"].as_u64().unwrap_or(0);
        if embedded > 0 {
            break (embedded, v["job"].as_u64().expect("a running job's id"));
        }
        assert!(Instant::now() < deadline, "no progress: {v}");
        std::thread::sleep(Duration::from_millis(20));
    };
    // A write acknowledged during the job must survive the crash.
    let (s, v) = server.post(
        "/v1/memories",
        &key,
        json!({"id": format!("note-{n}"), "modality": "notes", "content": "written mid-job",
               "vector": vec![0.3f32; OLD_DIM]}),
    );
    assert_eq!(s, 201, "{v}");
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &server.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success());
    server
        .wait_exit(Duration::from_secs(10))
        .expect("the server died");
    server.restart();

    // Whole on the old model: its declaration, its dimension, every vector.
    let c = notes(&server, &key);
    assert_eq!(
        (c["dim"].as_u64(), c.get("embedder")),
        (Some(OLD_DIM as u64), None),
        "{c}"
    );
    all_vectors_have_dim(&server, &key, n + 1, OLD_DIM);
    // The status says what happened to the job: interrupted, not resumed, nothing changed.
    let v = status(&server, &key);
    assert_eq!(v["state"], "failed", "{v}");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("interrupted")),
        "{v}"
    );
    assert_eq!(
        (&v["records_total"], &v["model"], &v["job"]),
        (&json!(n), &Value::Null, &json!(job_before)),
        "{v}"
    );
    // With the progress it had made, not the figures of its start: at least what it reported
    // before the kill (the write acknowledged after that made them durable), short of all.
    let embedded = v["records_embedded"].as_u64().unwrap();
    assert!(
        (embedded_before..n as u64).contains(&embedded),
        "{embedded_before} embedded before the kill: {v}"
    );

    // Started again, it completes: whole on the new model, under a job id of its own.
    let (s, v) = server.post("/v1/collections/notes/reembed", &key, json!({}));
    assert_eq!(s, 202, "{v}");
    assert!(v["job"].as_u64().unwrap() > job_before, "{v}");
    wait_done(&server, &key);
    all_vectors_have_dim(&server, &key, n + 1, 384);
    // Its result outlives a restart too.
    let done = status(&server, &key);
    server.restart();
    assert_eq!(status(&server, &key), done);
}

/// Records written while the server ran without its embedder have no vector; once the model
/// is back, the dry run counts them and a re-embed of the (current) collection gives them one,
/// so vector search finds them.
#[test]
fn a_reembed_gives_vectors_to_text_written_while_the_embedder_was_off() {
    let mut server = start_with_embedder();
    server.tenant("acme");
    let key = server.key(
        "acme",
        json!({"permissions": ["read", "write", "admin", "all_principals"]}),
    );
    let (s, v) = server.post(
        "/v1/memories",
        &key,
        json!({"id": "with-model", "content": "the kettle is in the kitchen"}),
    );
    assert_eq!(s, 201, "{v}");
    server.set_env("STRATA__EMBEDDER__ENABLED", "false");
    server.restart();
    let (s, v) = server.post(
        "/v1/memories",
        &key,
        json!({"id": "without-model", "content": TARGET}),
    );
    assert_eq!(s, 201, "{v}");
    server.set_env("STRATA__EMBEDDER__ENABLED", "true");
    server.restart();
    let (s, plan) = server.post(
        "/v1/collections/text/reembed",
        &key,
        json!({"dry_run": true}),
    );
    assert_eq!(s, 200, "{plan}");
    assert_eq!(
        (&plan["already_current"], &plan["records_without_vector"]),
        (&json!(false), &json!(1)),
        "{plan}"
    );
    let (s, v) = server.post("/v1/collections/text/reembed", &key, json!({}));
    assert!(s == 200 || s == 202, "{s} {v}");
    wait_done_of(&server, &key, "text");
    let (s, v) = server.get("/v1/memories/without-model?include=record,vector", &key);
    assert_eq!(
        (s, v["vector"].as_array().map(Vec::len)),
        (200, Some(384)),
        "{v}"
    );
    let (s, v) = server.post(
        "/v1/search",
        &key,
        json!({"query": "which drink does she prefer?", "mode": "vector", "k": 1}),
    );
    assert_eq!(
        (s, &v["hits"][0]["id"]),
        (200, &json!("without-model")),
        "{v}"
    );
    // Now there is nothing left to do.
    let (s, v) = server.post("/v1/collections/text/reembed", &key, json!({}));
    assert_eq!((s, code(&v)), (409, "CONFLICT"), "{v}");
}

/// A shutdown (SIGTERM) during a re-embed stops its driver at its next step: the worker pool
/// takes no more work once the server stops serving, so the job does not go on writing while
/// the indexes are saved and the engine closes (it once did, until the close gave up waiting
/// for the engine after 5 s). The collection stays whole on its old model, the job stopped.
#[test]
fn a_shutdown_mid_reembed_stops_its_steps_and_closes_in_order() {
    let mut server = start_with_embedder();
    let n = 1500;
    let key = seeded(&server, n);
    let (s, v) = server.post("/v1/collections/notes/reembed", &key, json!({}));
    assert_eq!(s, 202, "{v}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = status(&server, &key);
        assert_eq!(v["state"], "running", "finished before the shutdown: {v}");
        if v["records_embedded"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no progress: {v}");
        std::thread::sleep(Duration::from_millis(20));
    }
    server.terminate();
    server
        .wait_exit(Duration::from_secs(60))
        .expect("the server stopped");
    let log = server.log();
    assert!(
        !log.contains("engine still in use"),
        "the close waited out a job still running: {log}"
    );
    server.restart();
    let c = notes(&server, &key);
    assert_eq!(
        (c["dim"].as_u64(), c.get("embedder")),
        (Some(OLD_DIM as u64), None),
        "{c}"
    );
    all_vectors_have_dim(&server, &key, n, OLD_DIM);
    let v = status(&server, &key);
    assert_eq!(v["state"], "failed", "{v}");
}
