//! Bounds on what one request may ask, against the real server: the user tokens a request
//! names (`max_user_tokens`), the content coding and media type of its body, and the rate
//! limit an operator may set (`limits.max_qps`) with the wait a refusal quotes.

mod common;

use common::{OPERATOR_KEY, Server, code};
use serde_json::{Value, json};

fn tokens(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("u:{i}")).collect()
}

fn message(v: &Value) -> &str {
    v["error"]["message"].as_str().unwrap_or("")
}

#[test]
fn every_request_names_at_most_max_user_tokens() {
    let server = Server::start();
    server.tenant("acme");
    let key = server.key(
        "acme",
        json!({"permissions": ["read", "write", "all_principals"]}),
    );
    for n in [32, 33, 200_000] {
        let list = tokens(n);
        let calls = [
            (
                "/v1/search",
                json!({"query": "x", "mode": "text", "user_tokens": list}),
            ),
            ("/v1/memories/count", json!({"user_tokens": list})),
            ("/v1/memories/list", json!({"user_tokens": list})),
            (
                "/v1/memories/delete",
                json!({"all": true, "user_tokens": list}),
            ),
        ];
        for (path, body) in calls {
            let (s, v) = server.post(path, &key, body);
            if n <= 32 {
                assert_eq!(s, 200, "{path} with {n}: {v}");
            } else {
                assert_eq!((s, code(&v)), (400, "BAD_REQUEST"), "{path} with {n}: {v}");
                // A list longer than any array a request has a use for is refused by the
                // body's parse already.
                let expected = if n > 16_384 {
                    "body: an array has more than 16384 elements".to_owned()
                } else {
                    format!("user_tokens: {n} tokens, at most 32")
                };
                assert!(message(&v).starts_with(&expected), "{path}: {v}");
            }
        }
    }
    // From the query string too.
    let query = tokens(33).join(",");
    let (s, v) = server.get(&format!("/v1/memories/list?user_tokens={query}"), &key);
    assert_eq!((s, code(&v)), (400, "BAD_REQUEST"), "{v}");
}

#[test]
fn a_body_with_a_content_coding_is_refused_unread() {
    let server = Server::start();
    server.tenant("acme");
    let key = server.key("acme", json!({}));
    let plain = br#"{"content": "stored despite its label"}"#.to_vec();
    // A gzip stream's first bytes: the body is refused for its label, never parsed.
    let gzipped = vec![0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03];
    for (coding, body) in [
        ("br", plain.clone()),
        ("gzip", gzipped),
        ("identity, deflate", plain.clone()),
    ] {
        let (s, text) = server.send_raw_with(
            "POST",
            "/v1/memories",
            &key,
            &[
                ("content-type", "application/json"),
                ("content-encoding", coding),
            ],
            body,
        );
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert_eq!(
            (s, code(&v)),
            (415, "UNSUPPORTED_MEDIA_TYPE"),
            "{coding}: {text}"
        );
        let last = coding.rsplit(", ").next().unwrap();
        assert!(message(&v).contains(&format!("\"{last}\"")), "{text}");
    }
    let (_, v) = server.post("/v1/memories/count", &key, json!({}));
    assert_eq!(v["count"], 0, "{v}");
    // `identity` is no coding at all.
    let (s, text) = server.send_raw_with(
        "POST",
        "/v1/memories",
        &key,
        &[
            ("content-type", "application/json"),
            ("content-encoding", "identity"),
        ],
        plain,
    );
    assert_eq!(s, 201, "{text}");
}

#[test]
fn max_qps_is_bounded_and_the_quoted_wait_is_sane() {
    let server = Server::start();
    server.tenant("acme");
    let patch = |limits: Value| {
        server.call(
            "PATCH",
            "/v1/admin/tenants/acme",
            Some(OPERATOR_KEY),
            &[],
            Some(&json!({ "limits": limits })),
        )
    };
    for q in [1e-300, 5e-324, 1e-9, 0.0009, 1e10, 1e308, 0.0] {
        let (s, v) = patch(json!({"max_qps": q, "burst": 1}));
        assert_eq!((s, code(&v)), (400, "BAD_REQUEST"), "{q}: {v}");
        assert!(message(&v).starts_with("limits.max_qps: "), "{v}");
    }
    let (s, v) = server.post(
        "/v1/admin/tenants",
        OPERATOR_KEY,
        json!({"id": "tiny", "limits": {"max_qps": 1e-300}}),
    );
    assert_eq!((s, code(&v)), (400, "BAD_REQUEST"), "{v}");
    // The lowest rate accepted: one request in 1000 seconds, and the refusal says so.
    let (s, v) = patch(json!({"max_qps": 0.001, "burst": 1}));
    assert_eq!(s, 200, "{v}");
    let key = server.key("acme", json!({}));
    assert_eq!(server.post("/v1/memories/count", &key, json!({})).0, 200);
    let (s, v) = server.post("/v1/memories/count", &key, json!({}));
    assert_eq!((s, code(&v)), (429, "RATE_LIMITED"), "{v}");
    let wait = v["error"]["retry_after_ms"].as_u64().unwrap();
    assert!((990_000..=1_000_000).contains(&wait), "{v}");
}

/// A burst alone is refused, naming the field; so is a `PATCH` (a merge into the limits in
/// force) that removes `max_qps` while the burst stays, and the bucket in force stays as it was.
#[test]
fn a_patch_that_leaves_a_burst_without_a_rate_is_refused() {
    let server = Server::start();
    server.tenant("acme");
    let patch = |limits: Value| {
        server.call(
            "PATCH",
            "/v1/admin/tenants/acme",
            Some(OPERATOR_KEY),
            &[],
            Some(&json!({ "limits": limits })),
        )
    };
    let (s, v) = patch(json!({"burst": 3}));
    assert_eq!((s, code(&v)), (400, "BAD_REQUEST"), "{v}");
    assert!(
        message(&v).starts_with("limits.burst: needs limits.max_qps"),
        "{v}"
    );
    let (s, v) = patch(json!({"max_qps": 0.01, "burst": 1}));
    assert_eq!(s, 200, "{v}");
    let (s, v) = patch(json!({"max_qps": null}));
    assert_eq!((s, code(&v)), (400, "BAD_REQUEST"), "{v}");
    assert!(
        message(&v).starts_with("limits.burst: needs limits.max_qps"),
        "{v}"
    );
    // The rate still holds: one request, then 429.
    let key = server.key("acme", json!({}));
    assert_eq!(server.post("/v1/memories/count", &key, json!({})).0, 200);
    let (s, v) = server.post("/v1/memories/count", &key, json!({}));
    assert_eq!((s, code(&v)), (429, "RATE_LIMITED"), "{v}");
    // Both removed together: no bucket.
    let (s, v) = patch(json!({"max_qps": null, "burst": null}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (&v["limits"]["max_qps"], &v["limits"]["burst"]),
        (&Value::Null, &Value::Null)
    );
}

#[test]
fn a_json_route_refuses_a_body_labelled_as_another_type_unread() {
    let server = Server::start();
    server.tenant("acme");
    let key = server.key("acme", json!({}));
    let body = br#"{"content": "stored despite its label"}"#.to_vec();
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/xml",
        "application/x-ndjson",
    ] {
        let (s, text) = server.send_raw_with(
            "POST",
            "/v1/memories",
            &key,
            &[("content-type", ct)],
            body.clone(),
        );
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert_eq!(
            (s, code(&v)),
            (415, "UNSUPPORTED_MEDIA_TYPE"),
            "{ct}: {text}"
        );
        assert!(message(&v).contains(&format!("\"{ct}\"")), "{text}");
    }
    let (_, v) = server.post("/v1/memories/count", &key, json!({}));
    assert_eq!(v["count"], 0, "{v}");
    // JSON types with parameters or a `+json` suffix, and no type at all, are read.
    for headers in [
        vec![("content-type", "Application/JSON; charset=utf-8")],
        vec![("content-type", "application/merge-patch+json")],
        vec![],
    ] {
        let (s, text) = server.send_raw_with("POST", "/v1/memories", &key, &headers, body.clone());
        assert_eq!(s, 201, "{headers:?}: {text}");
    }
    // No body at all has no type to refuse, whatever its label: `curl -X POST -d ''` and
    // Java's HttpURLConnection label an empty body as a form (read as `{}`).
    let form = ("content-type", "application/x-www-form-urlencoded");
    let (s, text) = server.send_raw_with("POST", "/v1/memories/count", &key, &[form], Vec::new());
    assert_eq!(s, 200, "{text}");
    let (s, text) =
        server.send_raw_with("POST", "/v1/memories/count", &key, &[form], b"{}".to_vec());
    assert_eq!(s, 415, "{text}");
    // An import reads JSON lines, labelled as such or not labelled.
    let export = |id: &str| {
        let (s, text) = server.send_raw(
            "GET",
            &format!("/v1/admin/tenants/{id}/export"),
            OPERATOR_KEY,
            "application/json",
            Vec::new(),
        );
        assert_eq!(s, 200, "{text}");
        text
    };
    let lines = export("acme");
    let import = |id: &str, headers: &[(&str, &str)]| {
        server.send_raw_with(
            "POST",
            &format!("/v1/admin/tenants/{id}/import"),
            OPERATOR_KEY,
            headers,
            lines.clone().into_bytes(),
        )
    };
    let (s, text) = import("copy-a", &[("content-type", "text/csv")]);
    assert_eq!(s, 415, "{text}");
    let (s, text) = import("copy-a", &[("content-type", "application/x-ndjson")]);
    assert_eq!(s, 201, "{text}");
    let (s, text) = import("copy-b", &[]);
    assert_eq!(s, 201, "{text}");
    // JSON lines go by other names too.
    let (s, text) = import("copy-c", &[("content-type", "application/jsonl")]);
    assert_eq!(s, 201, "{text}");
}
