//! Embedding over HTTP, shared fairly: a tenant's large text batches are embedded in steps,
//! each its own job in the tenant's fair share, so another tenant's cheap requests run between
//! them instead of waiting for whole batches; and a retry of a write still running under the
//! same `Idempotency-Key` waits for its answer instead of embedding everything again.
//! The embedder runs from the repository's model directory (`scripts/fetch-model.sh`).

mod common;

use std::time::{Duration, Instant};

use common::{Server, embedder_env, model_dir};
use serde_json::{Value, json};

/// Two shared workers, as on a small machine: two batches embedded whole would hold both.
fn start() -> Server {
    let dir = model_dir();
    let mut env = embedder_env(&dir);
    env.push(("STRATA__SERVER__WORKERS", "2".to_owned()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Server::start_with(&env)
}

fn tenant(server: &Server, id: &str) -> String {
    server.tenant(id);
    server.key(id, json!({"permissions": ["read", "write"]}))
}

/// A paragraph of about the model's 256 word pieces, different for each `i`: the costliest
/// text to embed.
fn paragraph(i: usize) -> String {
    (0..60)
        .map(|w| format!("entry{i} term{w} concerning subject{}", (i * 7 + w) % 13))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Paragraphs in each of the flooding tenant's batches: seconds of embedding.
const BATCH: usize = 24;

fn batch(from: usize, n: usize) -> Value {
    let records: Vec<Value> = (from..from + n)
        .map(|i| json!({ "content": paragraph(i) }))
        .collect();
    json!({ "records": records })
}

#[test]
fn a_tenants_large_text_batches_do_not_stall_another_tenants_searches() {
    let server = start();
    let flooder = tenant(&server, "flooder");
    let victim = tenant(&server, "victim");
    let (s, v) = server.post(
        "/v1/memories",
        &victim,
        json!({"content": "floor division rounds down"}),
    );
    assert_eq!(s, 201, "{v}");
    let search = json!({"query": "floor division", "k": 5, "mode": "text", "include": []});
    // Warm: the victim's index is loaded before the flood.
    assert_eq!(server.post("/v1/search", &victim, search.clone()).0, 200);

    let (flood, worst, searches) = std::thread::scope(|s| {
        let started = Instant::now();
        let batches: Vec<_> = (0..2)
            .map(|b| {
                let (server, key) = (&server, &flooder);
                s.spawn(move || {
                    let (status, v) = server.post("/v1/memories", key, batch(b * 100, BATCH));
                    assert_eq!(status, 201, "{v}");
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let (mut worst, mut searches) = (Duration::ZERO, 0);
        while batches.iter().any(|b| !b.is_finished()) {
            let t = Instant::now();
            let (status, v) = server.post("/v1/search", &victim, search.clone());
            assert_eq!(status, 200, "{v}");
            worst = worst.max(t.elapsed());
            searches += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
        for b in batches {
            b.join().expect("batch");
        }
        (started.elapsed(), worst, searches)
    });
    // Embedded whole, each batch held a worker for its whole embedding (seconds), and a
    // search waited for one to end; in steps, it waits for a step (tens of milliseconds).
    // The bound is relative: on a loaded machine every figure stretches alike.
    assert!(
        worst * 5 < flood,
        "a search took {worst:?} while the batches took {flood:?}"
    );
    assert!(
        searches >= 5,
        "the flood ended too soon to measure ({flood:?})"
    );
}

/// A tenant flooding text writes, with more of them pending than the pool has workers while
/// another tenant searches, has its embedding moved to the pool's low-priority workers; each
/// write's transaction still runs on a normal one. Every write is acknowledged and stored, and
/// none was attempted on a low-priority thread (in debug builds such a write panics, so the
/// write would fail; in any build the server counts it).
#[test]
fn a_flooding_tenants_text_writes_embed_at_low_priority_and_commit_on_normal_threads() {
    let server = start();
    let flooder = tenant(&server, "text-flooder");
    let victim = tenant(&server, "text-victim");
    let (s, v) = server.post("/v1/memories", &victim, json!({"content": "tea at noon"}));
    assert_eq!(s, 201, "{v}");
    let search = json!({"query": "tea", "k": 5, "mode": "text", "include": []});
    const WRITERS: usize = 6;
    const EACH: usize = 8;
    std::thread::scope(|s| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (server, key) = (&server, &flooder);
                s.spawn(move || {
                    for i in 0..EACH {
                        let body = json!({"content": paragraph(w * 100 + i)});
                        let (status, v) = server.post("/v1/memories", key, body);
                        assert_eq!(status, 201, "{v}");
                    }
                })
            })
            .collect();
        while writers.iter().any(|w| !w.is_finished()) {
            let (status, v) = server.post("/v1/search", &victim, search.clone());
            assert_eq!(status, 200, "{v}");
            std::thread::sleep(Duration::from_millis(10));
        }
        for w in writers {
            w.join().expect("writer");
        }
    });
    let (status, v) = server.post("/v1/memories/count", &flooder, json!({}));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["count"], json!(WRITERS * EACH), "{v}");
    let metrics = server.metrics();
    let on_background = metrics
        .lines()
        .find_map(|l| l.strip_prefix("strata_storage_writes_on_background_workers_total "))
        .expect("the counter is exported");
    assert_eq!(
        on_background, "0",
        "writes attempted on low-priority threads"
    );
}

fn cpu_seconds(server: &Server, tenant: &str) -> f64 {
    let text = server.metrics();
    let prefix = format!("strata_tenant_cpu_seconds_total{{tenant=\"{tenant}\"");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.rsplit_once(' '))
        .map(|(_, v)| v.parse().expect("number"))
        .unwrap_or(0.0)
}

/// Sends a write under `key`; returns the status, whether it was a replay, and the body.
fn write(server: &Server, api_key: &str, idem: &str, body: &Value) -> (u16, bool, Value) {
    send(server, api_key, idem, body, None).expect("write")
}

/// [`write`] that gives up after `timeout`, as a client with a short timeout does.
fn send(
    server: &Server,
    api_key: &str,
    idem: &str,
    body: &Value,
    timeout: Option<Duration>,
) -> reqwest::Result<(u16, bool, Value)> {
    let mut req = reqwest::blocking::Client::new()
        .post(format!("{}/v1/memories", server.url))
        .header("authorization", format!("Bearer {api_key}"))
        .header("idempotency-key", idem)
        .json(body);
    if let Some(t) = timeout {
        req = req.timeout(t);
    }
    let res = req.send()?;
    let status = res.status().as_u16();
    let replayed = res.headers().get("idempotent-replayed").is_some();
    Ok((status, replayed, res.json()?))
}

#[test]
fn a_retry_of_a_write_in_flight_waits_for_its_answer_instead_of_embedding_again() {
    let server = start();
    let key = tenant(&server, "acme");
    // What one batch costs, alone.
    let before = cpu_seconds(&server, "acme");
    assert_eq!(write(&server, &key, "alone", &batch(0, 30)).0, 201);
    let alone = cpu_seconds(&server, "acme") - before;

    let body = batch(100, 30);
    let before = cpu_seconds(&server, "acme");
    let (first, retry) = std::thread::scope(|s| {
        let first = s.spawn(|| write(&server, &key, "slow-1", &body));
        std::thread::sleep(Duration::from_millis(200));
        let retry = write(&server, &key, "slow-1", &body);
        (first.join().expect("first"), retry)
    });
    let twice = cpu_seconds(&server, "acme") - before;
    assert_eq!((first.0, first.1), (201, false), "{}", first.2);
    assert_eq!((retry.0, retry.1), (201, true), "{}", retry.2);
    assert_eq!(first.2, retry.2);
    // Embedded once: the pair costs about one batch, not two.
    assert!(
        twice < alone * 1.5,
        "the pair cost {twice:.2} CPU-seconds, one batch {alone:.2}"
    );
    // A retry after the write ended gets the kept answer without embedding anything.
    let before = cpu_seconds(&server, "acme");
    let late = write(&server, &key, "slow-1", &body);
    let after_the_end = cpu_seconds(&server, "acme") - before;
    assert_eq!((late.0, late.1, &late.2), (201, true, &first.2));
    assert!(
        after_the_end < alone / 4.0,
        "a late retry cost {after_the_end:.2} CPU-seconds, one batch {alone:.2}"
    );
    // Another request under the key is still refused.
    let (s, _, v) = write(&server, &key, "slow-1", &batch(200, 1));
    assert_eq!(s, 409, "{v}");
    let (s, count) = server.post("/v1/memories/count", &key, json!({}));
    assert_eq!((s, &count["count"]), (200, &json!(60)), "{count}");
}

#[test]
fn a_write_whose_client_timed_out_runs_on_and_its_retry_gets_the_answer() {
    let server = start();
    let key = tenant(&server, "acme");
    let body = batch(0, 20);
    // The client gives up long before the batch is embedded; the server carries on.
    let gave_up = send(
        &server,
        &key,
        "timed-out",
        &body,
        Some(Duration::from_millis(300)),
    );
    assert!(gave_up.is_err(), "the batch was answered within 300 ms");
    let (status, replayed, answer) = write(&server, &key, "timed-out", &body);
    assert_eq!((status, replayed), (201, true), "{answer}");
    assert_eq!(
        answer["results"].as_array().map(Vec::len),
        Some(20),
        "{answer}"
    );
    let (s, count) = server.post("/v1/memories/count", &key, json!({}));
    assert_eq!((s, &count["count"]), (200, &json!(20)), "{count}");
}

/// The value of `strata_pool_long_job_spares_total{kind="shared"}`.
fn long_job_spares(server: &Server) -> f64 {
    let text = server.metrics();
    text.lines()
        .find_map(|l| l.strip_prefix("strata_pool_long_job_spares_total{kind=\"shared\"} "))
        .map(|v| v.parse().expect("number"))
        .expect("no strata_pool_long_job_spares_total in /metrics")
}

/// A tenant whose searches embed long queries keeps both workers busy with jobs of tens of
/// milliseconds each; another tenant's searches queued meanwhile run on a spare thread as soon
/// as a running embedding has passed `[scheduler] long_job_after_ms`, and `/metrics` counts it.
/// (How much sooner they are answered is a figure for the benchmarks, not an assertion.)
#[test]
fn long_embedding_queries_give_their_place_to_another_tenants_searches() {
    let server = start();
    let flooder = tenant(&server, "flooder");
    let victim = tenant(&server, "victim");
    let (s, v) = server.post(
        "/v1/memories",
        &victim,
        json!({"content": "floor division"}),
    );
    assert_eq!(s, 201, "{v}");
    let search = json!({"query": "floor division", "k": 5, "mode": "text", "include": []});
    assert_eq!(server.post("/v1/search", &victim, search.clone()).0, 200);
    assert_eq!(long_job_spares(&server), 0.0);
    std::thread::scope(|s| {
        let flooders: Vec<_> = (0..4)
            .map(|c| {
                let (server, key) = (&server, &flooder);
                s.spawn(move || {
                    for i in 0..3 {
                        // About 3 KB: far longer to embed than the threshold.
                        let mut query = paragraph(c * 10 + i) + " " + &paragraph(c * 10 + i + 5);
                        query.truncate(3000);
                        let body = json!({"query": query, "k": 5, "mode": "vector"});
                        let (status, v) = server.post("/v1/search", key, body);
                        assert_eq!(status, 200, "{v}");
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        while flooders.iter().any(|f| !f.is_finished()) {
            let (status, v) = server.post("/v1/search", &victim, search.clone());
            assert_eq!(status, 200, "{v}");
            std::thread::sleep(Duration::from_millis(5));
        }
        for f in flooders {
            f.join().expect("flooder");
        }
    });
    assert!(long_job_spares(&server) >= 1.0);
}
