//! The error contract over real HTTP: stable shape and codes, request ids, body limits, names
//! validated with the field named, and foreign ids indistinguishable from missing ones.

mod common;

use common::{OPERATOR_KEY, Server, code};
use serde_json::{Value, json};

#[test]
fn errors_have_the_stable_shape() {
    let server = Server::start();
    server.tenant("acme");
    let k = server.key("acme", json!({}));

    let (s, v) = server.call("GET", "/nope", Some(&k), &[], None);
    assert_eq!((s, code(&v)), (404, "NOT_FOUND"), "{v}");
    let (s, v) = server.call("PUT", "/v1/search", Some(&k), &[], None);
    assert_eq!((s, code(&v)), (405, "METHOD_NOT_ALLOWED"), "{v}");

    // Invalid names are 400 with the field named, from every source.
    for (path, headers, body, field) in [
        (
            "/v1/memories/list",
            vec![("x-strata-domain", "no spaces")],
            json!({}),
            "memory_domain",
        ),
        (
            "/v1/memories/list",
            vec![],
            json!({"run_id": "a/b"}),
            "run_id",
        ),
        (
            "/v1/memories/list",
            vec![],
            json!({"user_tokens": ["u alice"]}),
            "user_tokens",
        ),
        (
            "/v1/memories",
            vec![],
            json!({"content": "x", "kind": "bad kind"}),
            "kind",
        ),
        (
            "/v1/memories",
            vec![],
            json!({"content": "x", "memory_scope": ""}),
            "memory_scope",
        ),
    ] {
        let (s, v) = server.call("POST", path, Some(&k), &headers, Some(&body));
        assert_eq!((s, code(&v)), (400, "BAD_REQUEST"), "{body}: {v}");
        let message = v["error"]["message"].as_str().unwrap_or("");
        assert!(
            message.contains(field),
            "message does not name {field}: {message}"
        );
    }
    let (s, v) = server.call(
        "GET",
        "/v1/memories/list?memory_scope=a%20b",
        Some(&k),
        &[],
        None,
    );
    assert_eq!((s, code(&v)), (400, "BAD_REQUEST"), "{v}");
    let (s, v) = server.post("/v1/memories/list", &k, json!({"surprise": 1}));
    assert_eq!(
        (s, code(&v)),
        (400, "BAD_REQUEST"),
        "unknown fields are refused: {v}"
    );
}

/// serde's own messages do not say which field they are about; every body error does, by its
/// path from the body's root, on tenant and operator routes alike.
#[test]
fn body_errors_name_the_field_by_its_path() {
    let server = Server::start();
    server.tenant("acme");
    let k = server.key("acme", json!({"permissions": ["read", "write", "admin"]}));
    for (path, key, body, named) in [
        (
            "/v1/memories",
            k.as_str(),
            json!({"content": "x", "expires_at": "soon"}),
            "expires_at: ",
        ),
        (
            "/v1/memories",
            k.as_str(),
            json!({"records": [{"content": "a"}, {"content": "b", "expires_at": "soon"}]}),
            "records[1].expires_at: ",
        ),
        // A single record's refusal names its field too, as a batch's does.
        (
            "/v1/memories",
            k.as_str(),
            json!({"content": "z", "vector": [0.0, 0.5, 0.25]}),
            "vector: ",
        ),
        (
            "/v1/collections",
            k.as_str(),
            json!({"name": "c", "dim": "x"}),
            "dim: ",
        ),
        (
            "/v1/collections",
            k.as_str(),
            json!({"name": "c", "dim": 4, "initial_confidence": "x"}),
            "initial_confidence: ",
        ),
        (
            "/v1/search",
            k.as_str(),
            json!({"query": "q", "fusion": {"method": "rrf", "kk": 1}}),
            "fusion: unknown field `kk`",
        ),
        // A fusion's own fields are named in full.
        (
            "/v1/search",
            k.as_str(),
            json!({"query": "q", "fusion": {"method": "rrf", "k": -1}}),
            "fusion.k: -1 is negative; expected a whole number of 0 or more",
        ),
        (
            "/v1/search",
            k.as_str(),
            json!({"query": "q", "fusion": {"method": "weighted", "alpha": "x"}}),
            "fusion.alpha: ",
        ),
        (
            "/v1/search",
            k.as_str(),
            json!({"query": "q", "fusion": {"method": "rrf", "alpha": 0.5}}),
            "fusion: `alpha` is for method \"weighted\"",
        ),
        (
            "/v1/search",
            k.as_str(),
            json!({"query": "q", "fusion": {"method": "mean"}}),
            "fusion.method: unknown variant `mean`",
        ),
        (
            "/v1/admin/tenants",
            OPERATOR_KEY,
            json!({"id": "b", "limits": {"max_vectors": "ten"}}),
            "limits.max_vectors: ",
        ),
        (
            "/v1/admin/tenants",
            OPERATOR_KEY,
            json!({"id": "b", "limits": {"max_qps": 10, "burst": 0}}),
            "limits.burst: ",
        ),
        // A burst sizes the max_qps bucket: alone it would never hold.
        (
            "/v1/admin/tenants",
            OPERATOR_KEY,
            json!({"id": "b", "limits": {"burst": 5}}),
            "limits.burst: needs limits.max_qps",
        ),
        (
            "/v1/admin/tenants",
            OPERATOR_KEY,
            json!({"id": "b", "limits": {"max_concurrent": 0}}),
            "limits.max_concurrent: ",
        ),
        (
            "/v1/admin/tenants",
            OPERATOR_KEY,
            json!({"id": "b", "limits": {"max_spreading_depth": 4_000_000_000u32}}),
            "limits.max_spreading_depth: ",
        ),
        (
            "/v1/feedback",
            k.as_str(),
            json!({"ids": ["a"], "query": "  "}),
            "query: ",
        ),
        (
            "/v1/admin/keys",
            OPERATOR_KEY,
            json!({"tenant": "acme", "permissions": ["reed"]}),
            "permissions[0]: ",
        ),
        // A key that could never authenticate.
        (
            "/v1/admin/keys",
            OPERATOR_KEY,
            json!({"tenant": "acme", "expires_at": 1_000}),
            "expires_at: ",
        ),
        (
            "/v1/admin/keys",
            OPERATOR_KEY,
            json!({"tenant": "acme", "expires_in_secs": 0}),
            "expires_in_secs: ",
        ),
        // Expiries past 2^53 ms, which were stored saturated (as i64::MAX).
        (
            "/v1/admin/keys",
            OPERATOR_KEY,
            json!({"tenant": "acme", "expires_in_secs": 1_000_000_000_000_000_000u64}),
            "expires_in_secs: ",
        ),
        (
            "/v1/admin/keys",
            OPERATOR_KEY,
            json!({"tenant": "acme", "expires_at": (1u64 << 53) + 1}),
            "expires_at: ",
        ),
        // Ids no admin route could name afterwards: dot segments, which clients remove from
        // a URL, and the literal segment of `POST /v1/admin/tenants/purge-deleted`; creating
        // one by import is refused the same way.
        (
            "/v1/admin/tenants",
            OPERATOR_KEY,
            json!({"id": "."}),
            "id: ",
        ),
        (
            "/v1/admin/tenants",
            OPERATOR_KEY,
            json!({"id": ".."}),
            "id: ",
        ),
        (
            "/v1/admin/tenants",
            OPERATOR_KEY,
            json!({"id": "purge-deleted"}),
            "id: ",
        ),
        (
            "/v1/admin/tenants/purge-deleted/import",
            OPERATOR_KEY,
            json!({}),
            "id: ",
        ),
        // Record ids and collection names no URL could name: dot segments, and the literal
        // segments of the routes at `/v1/memories/{id}`.
        (
            "/v1/memories",
            k.as_str(),
            json!({"id": "..", "content": "x"}),
            "id: ",
        ),
        (
            "/v1/memories",
            k.as_str(),
            json!({"id": "list", "content": "x"}),
            "id: ",
        ),
        (
            "/v1/memories",
            k.as_str(),
            json!({"records": [{"id": "a", "content": "x"}, {"id": "count", "content": "y"}]}),
            "records[1].id: ",
        ),
        // One id twice in a batch: refused, not the earlier record silently replaced, whatever
        // the two records' principals.
        (
            "/v1/memories",
            k.as_str(),
            json!({"records": [
                {"id": "a", "content": "x"}, {"id": "b", "content": "y"}, {"id": "a", "content": "z"},
            ]}),
            "records[2].id: a is also the id of records[0]; a batch writes each id once",
        ),
        (
            "/v1/memories",
            k.as_str(),
            json!({"records": [
                {"id": "d", "content": "x", "user_tokens": ["u:a"]},
                {"id": "d", "content": "y", "user_tokens": ["u:b"]},
            ]}),
            "records[1].id: d is also the id of records[0]",
        ),
        // A batch of nothing is a caller's mistake, not a success that wrote nothing.
        (
            "/v1/memories",
            k.as_str(),
            json!({"records": []}),
            "records: the batch is empty; send 1 to 1000 records",
        ),
        // A negative count says so in JSON's words, not the server's types.
        (
            "/v1/search",
            k.as_str(),
            json!({"query": "x", "k": -1}),
            "k: -1 is negative; expected a whole number",
        ),
        (
            "/v1/collections",
            k.as_str(),
            json!({"name": ".", "dim": 4}),
            "name: ",
        ),
    ] {
        let (s, v) = server.post(path, key, body.clone());
        assert_eq!((s, code(&v)), (400, "BAD_REQUEST"), "{body}: {v}");
        let message = v["error"]["message"].as_str().unwrap_or("");
        assert!(message.starts_with(named), "{body}: {message}");
    }
    // An unknown field's refusal lists every field the body may hold, the scope fields taken
    // out of it first included.
    for path in ["/v1/memories/list", "/v1/search", "/v1/memories/count"] {
        let (s, v) = server.post(path, &k, json!({"bogus": 1}));
        assert_eq!((s, code(&v)), (400, "BAD_REQUEST"), "{path}: {v}");
        let message = v["error"]["message"].as_str().unwrap_or("");
        assert!(
            message.starts_with("unknown field `bogus`")
                && message.ends_with(
                    "or a scope field: tenant_id, memory_domain, user_tokens, user_match, \
                     run_id, memory_scope"
                ),
            "{path}: {message}"
        );
    }
    // The refused tenants were not created, nor the key.
    let (s, v) = server.get("/v1/admin/tenants", OPERATOR_KEY);
    assert_eq!(s, 200, "{v}");
    let ids: Vec<&str> = v["tenants"]
        .as_array()
        .expect("tenants")
        .iter()
        .filter_map(|t| t["id"].as_str())
        .collect();
    assert_eq!(ids, ["acme"], "{v}");
    let (s, v) = server.get("/v1/admin/keys?tenant=acme", OPERATOR_KEY);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["keys"].as_array().map(Vec::len), Some(1), "{v}");
}

/// A tenant created with its limits and weight has them from its first request.
#[test]
fn a_tenant_is_created_with_its_limits_and_weight() {
    let server = Server::start();
    let (s, v) = server.post(
        "/v1/admin/tenants",
        OPERATOR_KEY,
        json!({"id": "small", "limits": {"max_collections": 3}, "weight": 4}),
    );
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        (&v["limits"]["max_collections"], &v["weight"]),
        (&json!(3), &json!(4))
    );
    let k = server.key("small", json!({"permissions": ["read", "write", "admin"]}));
    let whole = server.key(
        "small",
        json!({"permissions": ["read", "write", "admin", "all_principals"]}),
    );
    // Its three default collections fill the quota already.
    let (s, v) = server.post("/v1/collections", &whole, json!({"name": "c", "dim": 4}));
    assert_eq!((s, code(&v)), (403, "QUOTA_EXCEEDED"), "{v}");
    // The refusal shows the limit and what is used of it, to a whole-tenant key; to one
    // without `all_principals`, the limit alone, as every quota refusal.
    assert_eq!(
        v["error"]["message"], "quota exceeded: max_collections: 3 used of 3",
        "{v}"
    );
    let (s, v) = server.post("/v1/collections", &k, json!({"name": "c", "dim": 4}));
    assert_eq!((s, code(&v)), (403, "QUOTA_EXCEEDED"), "{v}");
    assert_eq!(
        v["error"]["message"],
        "quota exceeded: max_collections: the request would pass the limit of 3",
        "{v}"
    );
    let (s, v) = server.post(
        "/v1/admin/tenants",
        OPERATOR_KEY,
        json!({"id": "zero", "weight": 0}),
    );
    assert_eq!((s, code(&v)), (400, "BAD_REQUEST"), "{v}");
}

#[test]
fn request_ids_are_returned_and_kept() {
    let server = Server::start();
    let res = reqwest::blocking::get(format!("{}/healthz", server.url)).unwrap();
    let id = res.headers().get("x-request-id").expect("x-request-id");
    assert!(!id.is_empty());
    let res = reqwest::blocking::Client::new()
        .get(format!("{}/healthz", server.url))
        .header("x-request-id", "my-trace-1")
        .send()
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "my-trace-1");
}

#[test]
fn oversized_bodies_are_refused() {
    let server = Server::start();
    server.tenant("acme");
    let k = server.key("acme", json!({}));
    let huge = "x".repeat(17 * 1024 * 1024);
    let (s, v) = server.post("/v1/memories", &k, json!({ "content": huge }));
    assert_eq!((s, code(&v)), (413, "PAYLOAD_TOO_LARGE"), "{v}");
}

#[test]
fn foreign_ids_look_exactly_like_missing_ids() {
    let server = Server::start();
    server.tenant("a");
    server.tenant("b");
    let a = server.key("a", json!({}));
    let b = server.key("b", json!({}));
    let (s, _) = server.post(
        "/v1/memories",
        &a,
        json!({"id": "secret", "content": "a's"}),
    );
    assert_eq!(s, 201);
    let foreign = server.get("/v1/memories/secret", &b);
    let missing = server.get("/v1/memories/never-existed", &b);
    assert_eq!(foreign, missing);
    assert_eq!(foreign.0, 404);
}

/// The outside finding, replayed: `[3e38, -3e38, ...]` was stored, then cosine scores of
/// ~1.9e38 ranked first, dot and L2 scores came back as `null`, and a `[3e38]*4` cosine query
/// found 1 of 20 records for k = 5. Now such vectors are refused, naming the field, by every
/// write path and by search, and ordinary and large-but-bounded vectors score as numbers.
#[test]
fn vectors_beyond_the_bound_are_refused_and_scores_are_numbers() {
    let server = Server::start();
    server.tenant("acme");
    let k = server.key("acme", json!({"permissions": ["read", "write", "admin"]}));
    let refused = |(s, v): (u16, serde_json::Value), field: &str| {
        assert_eq!((s, code(&v)), (400, "BAD_REQUEST"), "{v}");
        let message = v["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains(field), "does not name {field}: {message}");
        assert!(
            message.contains("1e15"),
            "does not state the bound: {message}"
        );
    };
    let finding = json!([3e38, -3e38, 3e38, -3e38]);
    let mut written = 0;
    for metric in ["cosine", "dot", "l2"] {
        let (s, v) = server.post(
            "/v1/collections",
            &k,
            json!({"name": metric, "dim": 4, "metric": metric}),
        );
        assert_eq!(s, 201, "{v}");
        let records: Vec<_> = (0..20)
            .map(|i| {
                let x = i as f32 / 10.0;
                json!({"id": format!("{metric}-{i}"), "modality": metric,
                       "vector": [1.0 + x, -x, 0.5, x * x]})
            })
            .collect();
        let (s, v) = server.post("/v1/memories", &k, json!({ "records": records }));
        assert_eq!(s, 201, "{v}");
        written += 20;

        // Writes: single, batch (all or nothing), patch.
        let bad = json!({"id": format!("{metric}-bad"), "modality": metric, "vector": finding});
        refused(server.post("/v1/memories", &k, bad.clone()), "vector[0]");
        let batch = json!({"records": [{"modality": metric, "vector": [1, 2, 3, 4]}, bad]});
        refused(server.post("/v1/memories", &k, batch), "vector[0]");
        let patch = json!({ "vector": [6e14, 6e14, 6e14, 6e14] });
        let path = format!("/v1/memories/{metric}-0");
        refused(
            server.call("PATCH", &path, Some(&k), &[], Some(&patch)),
            "vector:",
        );

        // Queries: the finding's, and one whose components pass but whose norm does not.
        for (vector, field) in [
            (json!([3e38, 3e38, 3e38, 3e38]), "vector[0]"),
            (json!([6e14, 6e14, 6e14, 6e14]), "vector:"),
        ] {
            let search = json!({"vector": vector, "k": 5, "modality": metric});
            refused(server.post("/v1/search", &k, search), field);
        }

        // Ordinary and large-but-bounded queries: k hits, every score a finite number.
        for vector in [
            json!([1.0, 0.0, 0.0, 0.0]),
            json!([4e14, -4e14, 4e14, -4e14]),
        ] {
            let search = json!({"vector": vector, "k": 5, "modality": metric, "explain": true});
            let (s, v) = server.post("/v1/search", &k, search);
            assert_eq!(s, 200, "{v}");
            let hits = v["hits"].as_array().expect("hits");
            assert_eq!(hits.len(), 5, "{metric}: {v}");
            for hit in hits {
                let score = hit["score"].as_f64().expect("score is a number");
                assert!(score.is_finite(), "{hit}");
                if metric == "cosine" {
                    assert!((-1.0..=1.0).contains(&score), "{hit}");
                }
            }
        }
    }
    let (s, v) = server.post("/v1/memories/count", &k, json!({}));
    assert_eq!((s, v["count"].as_u64()), (200, Some(written)), "{v}");

    // Import applies the same rule, naming the line and the field.
    let limits = json!({"max_vectors": null, "max_storage_bytes": null, "max_collections": null,
        "max_qps": null, "burst": null, "max_concurrent": null, "max_spreading_depth": null});
    let ndjson = [
        json!({"type": "tenant", "id": "copy", "display_name": null, "created_at": 0,
               "limits": limits, "weight": 1}),
        json!({"type": "collection", "name": "v", "dim": 4, "metric": "dot", "created_at": 0}),
        json!({"type": "record", "id": "x", "modality": "v", "kind": null, "content": null,
               "vector": finding, "user_tokens": [], "memory_domain": "default",
               "run_id": null, "memory_scope": null, "metadata": {}, "created_at": 0,
               "updated_at": 0, "expires_at": null, "confidence": {"value": 0.5}}),
    ]
    .map(|l| l.to_string())
    .join("\n");
    let (s, body) = server.send_raw(
        "POST",
        "/v1/admin/tenants/copy/import",
        common::OPERATOR_KEY,
        "application/x-ndjson",
        ndjson.into_bytes(),
    );
    refused(
        (s, serde_json::from_str(&body).unwrap_or_default()),
        "vector[0]",
    );
    assert!(body.contains("line 3"), "{body}");
}

/// The audit rows of `action` in `tenant`'s log, as the operator sees them.
fn audit_rows(server: &Server, tenant: &str, action: &str) -> usize {
    let (s, v) = server.get(
        &format!("/v1/admin/audit?tenant={tenant}&action={action}&limit=1000"),
        OPERATOR_KEY,
    );
    assert_eq!(s, 200, "{v}");
    v["rows"].as_array().expect("rows").len()
}

fn message(v: &serde_json::Value) -> &str {
    v["error"]["message"].as_str().unwrap_or("")
}

#[test]
fn a_header_given_twice_is_refused_and_a_foreign_tenant_in_any_copy_is_a_mismatch() {
    let server = Server::start();
    server.tenant("ta");
    server.tenant("tb");
    let key = server.key("ta", json!({}));
    // Another tenant in either copy: 403 and a security event, whichever comes first.
    for headers in [
        [("x-tenant-id", "ta"), ("x-tenant-id", "tb")],
        [("x-tenant-id", "tb"), ("x-tenant-id", "ta")],
    ] {
        let (s, v) = server.call("GET", "/v1/memories/list", Some(&key), &headers, None);
        assert_eq!((s, code(&v)), (403, "TENANT_MISMATCH"), "{headers:?}: {v}");
    }
    assert_eq!(audit_rows(&server, "ta", "security.tenant_mismatch"), 2);
    // Every copy right, or a repeated domain or credential: 400 naming the header.
    for (headers, name) in [
        (
            vec![("x-tenant-id", "ta"), ("x-tenant-id", "ta")],
            "X-Tenant-ID",
        ),
        (
            vec![("x-strata-domain", "a"), ("x-strata-domain", "b")],
            "X-Strata-Domain",
        ),
        (
            vec![("x-strata-domain", "a"), ("x-strata-domain", "a")],
            "X-Strata-Domain",
        ),
    ] {
        let (s, v) = server.call("GET", "/v1/memories/list", Some(&key), &headers, None);
        assert_eq!((s, code(&v)), (400, "BAD_REQUEST"), "{headers:?}: {v}");
        assert!(message(&v).contains(name), "{v}");
    }
    let bearer = format!("Bearer {key}");
    for headers in [
        [
            ("authorization", bearer.as_str()),
            ("authorization", "Bearer x"),
        ],
        [
            ("authorization", "Bearer x"),
            ("authorization", bearer.as_str()),
        ],
    ] {
        let (s, v) = server.call("GET", "/v1/memories/list", None, &headers, None);
        assert_eq!((s, code(&v)), (400, "BAD_REQUEST"), "{v}");
        assert!(message(&v).contains("Authorization"), "{v}");
    }
    // One of each still works.
    let one = [("x-tenant-id", "ta"), ("x-strata-domain", "a")];
    assert_eq!(
        server
            .call("GET", "/v1/memories/list", Some(&key), &one, None)
            .0,
        200
    );
}

#[test]
fn a_foreign_tenant_anywhere_is_a_mismatch_even_when_the_sources_also_disagree() {
    let server = Server::start();
    server.tenant("ta");
    let key = server.key("ta", json!({}));
    let body = |tenant: &str| json!({"query": "x", "tenant_id": tenant});
    for (query, tenant) in [("tv", "tb"), ("ta", "tb"), ("tb", "ta")] {
        let path = format!("/v1/search?tenant_id={query}");
        let (s, v) = server.post(&path, &key, body(tenant));
        assert_eq!(
            (s, code(&v)),
            (403, "TENANT_MISMATCH"),
            "{path} {tenant}: {v}"
        );
    }
    for query in ["tenant_id=ta&tenant_id=tb", "tenant_id=tb&tenant_id=ta"] {
        let (s, v) = server.get(&format!("/v1/memories/list?{query}"), &key);
        assert_eq!((s, code(&v)), (403, "TENANT_MISMATCH"), "{query}: {v}");
    }
    assert_eq!(audit_rows(&server, "ta", "security.tenant_mismatch"), 5);
    let (s, v) = server.get("/v1/memories/list?tenant_id=ta&tenant_id=ta", &key);
    assert_eq!((s, message(&v)), (400, "tenant_id: given twice"), "{v}");
    let (s, v) = server.get("/v1/memories/list?tenant_id=ta", &key);
    assert_eq!(s, 200, "{v}");
}

#[test]
fn a_body_with_a_repeated_key_at_any_depth_is_refused_naming_it() {
    let server = Server::start();
    server.tenant("ta");
    let key = server.key("ta", json!({"permissions": ["read", "write", "admin"]}));
    for (body, name) in [
        (
            r#"{"content":"dup","user_tokens":["u:alice"],"user_tokens":[]}"#,
            "user_tokens",
        ),
        (r#"{"content":"dup","metadata":{"a":{"b":1,"b":2}}}"#, "b"),
        (
            r#"{"records":[{"content":"ok"},{"content":"a","content":"b"}]}"#,
            "content",
        ),
    ] {
        let (s, text) = server.send_raw(
            "POST",
            "/v1/memories",
            &key,
            "application/json",
            body.as_bytes().to_vec(),
        );
        assert_eq!(s, 400, "{body}: {text}");
        assert!(text.contains(&format!("duplicate key `{name}`")), "{text}");
    }
    let (s, v) = server.get("/v1/memories/list", &key);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["records"], json!([]), "nothing was written: {v}");
}

#[test]
fn a_body_repeating_tenant_id_is_a_mismatch_if_any_copy_names_another_tenant() {
    let server = Server::start();
    server.tenant("ta");
    let key = server.key("ta", json!({}));
    // Either copy, on a route whose body is parsed before its handler and on search, whose
    // body is parsed inside its job.
    for (path, body) in [
        (
            "/v1/memories",
            r#"{"content":"x","tenant_id":"ta","tenant_id":"tb"}"#,
        ),
        (
            "/v1/memories",
            r#"{"content":"x","tenant_id":"tb","tenant_id":"ta"}"#,
        ),
        (
            "/v1/search",
            r#"{"query":"x","tenant_id":"tb","tenant_id":"ta"}"#,
        ),
        // Another key repeated first: the tenant named after it still counts.
        (
            "/v1/memories",
            r#"{"x":1,"x":2,"content":"x","tenant_id":"tb"}"#,
        ),
    ] {
        let (s, text) = server.send_raw(
            "POST",
            path,
            &key,
            "application/json",
            body.as_bytes().to_vec(),
        );
        assert_eq!(s, 403, "{path} {body}: {text}");
        assert!(text.contains("TENANT_MISMATCH"), "{text}");
    }
    assert_eq!(audit_rows(&server, "ta", "security.tenant_mismatch"), 4);
    // Both copies right: a repeated key like any other.
    let body = r#"{"content":"x","tenant_id":"ta","tenant_id":"ta"}"#;
    let (s, text) = server.send_raw(
        "POST",
        "/v1/memories",
        &key,
        "application/json",
        body.into(),
    );
    assert_eq!(s, 400, "{text}");
    assert!(text.contains("duplicate key `tenant_id`"), "{text}");
    let (s, v) = server.get("/v1/memories/list", &key);
    assert_eq!(
        (s, &v["records"]),
        (200, &json!([])),
        "nothing was written: {v}"
    );
}

#[test]
fn a_route_parameter_given_twice_is_refused() {
    let server = Server::start();
    server.tenant("ta");
    let key = server.key("ta", json!({}));
    let (s, v) = server.get("/v1/memories/list?limit=2&limit=3", &key);
    assert_eq!((s, message(&v)), (400, "limit: given twice"), "{v}");
    assert_eq!(server.get("/v1/memories/list?limit=2", &key).0, 200);
}

/// Blank text carries nothing to match: stored, it would be embedded (every blank string to
/// the same vector) and rank first for unrelated queries. Empty or whitespace-only `content`
/// and `query` are refused with the field named, on every path that takes them, and nothing
/// is written.
#[test]
fn blank_content_and_queries_are_refused_naming_the_field() {
    let server = Server::start();
    server.tenant("acme");
    let k = server.key("acme", json!({"permissions": ["read", "write"]}));
    let (s, v) = server.post(
        "/v1/memories",
        &k,
        json!({"id": "kept", "content": "oat milk"}),
    );
    assert_eq!(s, 201, "{v}");
    for (method, path, body, named) in [
        ("POST", "/v1/memories", json!({"content": ""}), "content: "),
        (
            "POST",
            "/v1/memories",
            json!({"content": "   "}),
            "content: ",
        ),
        (
            "POST",
            "/v1/memories",
            json!({"id": "kept", "content": " \n"}),
            "content: ",
        ),
        (
            "POST",
            "/v1/memories",
            json!({"records": [{"content": "a"}, {"content": "\t"}]}),
            "records[1].content: ",
        ),
        (
            "PATCH",
            "/v1/memories/kept",
            json!({"content": ""}),
            "content: ",
        ),
        ("POST", "/v1/search", json!({"query": ""}), "query: "),
        (
            "POST",
            "/v1/search",
            json!({"query": "  ", "k": 3}),
            "query: ",
        ),
        ("POST", "/v1/recall", json!({"query": " "}), "query: "),
    ] {
        let (s, v) = server.call(method, path, Some(&k), &[], Some(&body));
        assert_eq!((s, code(&v)), (400, "BAD_REQUEST"), "{body}: {v}");
        assert!(message(&v).starts_with(named), "{body}: {v}");
        assert!(message(&v).contains("whitespace"), "{body}: {v}");
    }
    let (s, v) = server.post("/v1/memories/count", &k, json!({}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["count"], 1, "only the first record was stored: {v}");
    let (s, v) = server.get("/v1/memories/kept", &k);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["content"], "oat milk", "{v}");
}

/// A patch's `null` clears only the fields that can be cleared; for the others it is refused
/// naming the field, and the record is left as it was, rather than silently kept.
#[test]
fn a_patch_null_for_a_field_that_cannot_be_cleared_is_refused_naming_it() {
    let server = Server::start();
    server.tenant("acme");
    let k = server.key("acme", json!({"permissions": ["read", "write"]}));
    let body = json!({"id": "kept", "content": "oat milk", "kind": "fact"});
    let (s, v) = server.post("/v1/memories", &k, body);
    assert_eq!(s, 201, "{v}");
    for field in [
        "content",
        "vector",
        "user_tokens",
        "confidence",
        "move_to_domain",
    ] {
        let body = json!({ field: null, "kind": null });
        let (s, v) = server.call("PATCH", "/v1/memories/kept", Some(&k), &[], Some(&body));
        assert_eq!((s, code(&v)), (400, "BAD_REQUEST"), "{body}: {v}");
        assert!(
            message(&v).starts_with(&format!("{field}: null cannot clear this field")),
            "{body}: {v}"
        );
    }
    let (s, v) = server.get("/v1/memories/kept", &k);
    assert_eq!(
        (s, &v["kind"]),
        (200, &json!("fact")),
        "nothing changed: {v}"
    );
    // A clearable field's null still clears it.
    let body = json!({"kind": null});
    let (s, v) = server.call("PATCH", "/v1/memories/kept", Some(&k), &[], Some(&body));
    assert_eq!((s, &v["kind"]), (200, &Value::Null), "{v}");
}

/// A zero query vector on a cosine collection is refused like a zero stored vector, naming the
/// field, in a search and a recall (a hybrid one too, whose text alone would have been a
/// query), on an empty collection and on one with records; on another metric (`dot`, `l2`) it
/// is a query like any other.
#[test]
fn a_zero_query_vector_on_a_cosine_collection_is_refused() {
    let server = Server::start();
    server.tenant("acme");
    let k = server.key("acme", json!({"permissions": ["read", "write", "admin"]}));
    for (name, metric) in [("img", "cosine"), ("raw", "dot"), ("geo", "l2")] {
        let (s, v) = server.post(
            "/v1/collections",
            &k,
            json!({"name": name, "dim": 3, "metric": metric}),
        );
        assert_eq!(s, 201, "{v}");
    }
    let zero = json!({"vector": [0.0, 0.0, 0.0], "modality": "img"});
    let hybrid = json!({
        "vector": [0.0, 0.0, 0.0], "query": "note", "mode": "hybrid", "modality": "img",
    });
    let others = ["raw", "geo"].map(|name| json!({"vector": [0.0, 0.0, 0.0], "modality": name}));
    for round in ["empty", "with a record"] {
        for path in ["/v1/search", "/v1/recall"] {
            for refused in [&zero, &hybrid] {
                let (s, v) = server.post(path, &k, refused.clone());
                assert_eq!(
                    (s, code(&v)),
                    (400, "BAD_REQUEST"),
                    "{round} {path} {refused}: {v}"
                );
                assert!(
                    message(&v).starts_with("vector: a zero vector has no direction"),
                    "{round} {path} {refused}: {v}"
                );
            }
            for other in &others {
                let (s, v) = server.post(path, &k, other.clone());
                assert_eq!(s, 200, "{round} {path} {other}: {v}");
            }
        }
        for name in ["img", "raw", "geo"] {
            let (s, v) = server.post(
                "/v1/memories",
                &k,
                json!({"modality": name, "vector": [1.0, 0.0, 0.0], "content": "a note"}),
            );
            assert_eq!(s, 201, "{v}");
        }
    }
}
