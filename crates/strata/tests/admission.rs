//! Admission control over HTTP: per-tenant rate limits (429 RATE_LIMITED with Retry-After and
//! retry_after_ms) and in-flight caps (429 CONCURRENCY_LIMITED), each touching only its tenant.

mod common;

use common::{OPERATOR_KEY, Server, code};
use serde_json::{Value, json};

const ALL: &[&str] = &["read", "write", "admin"];

#[test]
fn an_empty_token_bucket_answers_429_with_retry_after_and_spares_other_tenants() {
    let server = Server::start();
    server.tenant("acme");
    server.tenant("globex");
    let acme = server.key("acme", json!({ "permissions": ALL }));
    let globex = server.key("globex", json!({ "permissions": ALL }));
    server.limit("acme", json!({"max_qps": 0.5, "burst": 2}));

    let statuses: Vec<u16> = (0..2)
        .map(|_| server.get("/v1/collections", &acme).0)
        .collect();
    assert_eq!(statuses, [200, 200]);
    let res = reqwest::blocking::Client::new()
        .get(format!("{}/v1/collections", server.url))
        .bearer_auth(&acme)
        .send()
        .unwrap();
    assert_eq!(res.status().as_u16(), 429);
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body: Value = res.json().unwrap();
    assert_eq!(code(&body), "RATE_LIMITED");
    let ms = body["error"]["retry_after_ms"].as_u64().unwrap();
    assert!((1..=2000).contains(&ms), "{body}");
    assert!(
        retry >= 1 && retry * 1000 >= ms,
        "Retry-After {retry} s vs {ms} ms"
    );

    // Another tenant is untouched, and so are operator routes.
    for _ in 0..5 {
        assert_eq!(server.get("/v1/collections", &globex).0, 200);
    }
    assert_eq!(server.get("/v1/admin/tenants/acme", OPERATOR_KEY).0, 200);
    // Lifting the limit takes effect on the next request.
    server.limit("acme", json!({"max_qps": null, "burst": null}));
    assert_eq!(server.get("/v1/collections", &acme).0, 200);
}

#[test]
fn the_in_flight_cap_refuses_excess_concurrent_requests() {
    let server = Server::start();
    server.tenant("acme");
    let acme = server.key("acme", json!({ "permissions": ALL }));
    server.limit("acme", json!({"max_concurrent": 1}));
    // Durable batch writes take long enough to overlap. The cap is checked before the body is
    // read; the server then discards the small unread body, so the connection stays usable.
    let batch = |t: usize, i: usize| {
        let records: Vec<Value> = (0..20)
            .map(|j| json!({"content": format!("t{t} b{i} r{j}"), "vector": vec![((t * 7 + i * 3 + j) % 11) as f32 + 1.0; 384]}))
            .collect();
        json!({ "records": records })
    };
    // Connections are reused across refusals: one closed after a 429 that did not say so
    // would fail the next request sent on it.
    let client = reqwest::blocking::Client::new();
    let post = |body: Value| {
        let res = client
            .post(format!("{}/v1/memories", server.url))
            .bearer_auth(&acme)
            .json(&body)
            .send()
            .unwrap();
        (
            res.status().as_u16(),
            res.json::<Value>().unwrap_or(Value::Null),
        )
    };
    let results: Vec<(u16, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let post = &post;
                s.spawn(move || (0..6).map(|i| post(batch(t, i))).collect::<Vec<_>>())
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let refused = results
        .iter()
        .filter(|(s, v)| *s == 429 && code(v) == "CONCURRENCY_LIMITED")
        .count();
    let ok = results.iter().filter(|(s, _)| *s == 201).count();
    assert_eq!(
        ok + refused,
        results.len(),
        "only successes and concurrency refusals: {results:?}"
    );
    assert!(refused > 0 && ok > 0, "{ok} written, {refused} refused");
}

/// Admission is decided from the headers: a rate-limited tenant's search is refused 429 before
/// its body is read or parsed, so even an invalid body gets the cheap refusal; once admitted,
/// a search body (now parsed on the worker pool) is still checked with 400s naming the field.
#[test]
fn search_is_admitted_from_its_headers_and_its_body_still_checked() {
    let server = Server::start();
    server.tenant("acme");
    let acme = server.key("acme", json!({ "permissions": ALL }));
    let post_raw = |body: &'static str| {
        let res = reqwest::blocking::Client::new()
            .post(format!("{}/v1/search", server.url))
            .bearer_auth(&acme)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .unwrap();
        let status = res.status().as_u16();
        (status, res.json::<Value>().unwrap_or(Value::Null))
    };
    let (status, body) = post_raw("{\"vector\": [0.1,");
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("body: invalid JSON"),
        "{body}"
    );
    let (status, body) = post_raw("{\"text\": \"hello\", \"k\": \"ten\"}");
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().starts_with("k:"),
        "{body}"
    );
    let (status, body) = post_raw("{\"text\": \"hello\", \"k\": 3, \"tenant_id\": \"globex\"}");
    assert_eq!(status, 403, "{body}");
    assert_eq!(code(&body), "TENANT_MISMATCH");

    server.limit("acme", json!({"max_qps": 0.01, "burst": 1}));
    let (status, _) = post_raw("{\"text\": \"hello\", \"k\": 3}");
    assert_ne!(status, 429, "the burst admits one request");
    let (status, body) = post_raw("{\"vector\": [0.1,");
    assert_eq!(status, 429, "{body}");
    assert_eq!(code(&body), "RATE_LIMITED");
}
