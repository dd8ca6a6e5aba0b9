//! The route table `(method, path, permission)` drives three tests against the real binary:
//! every route rejects missing and bad credentials; a key of tenant B gets nothing of tenant A
//! through any route; and the table lists exactly the routes the router serves.

mod common;

use std::collections::BTreeSet;

use common::table::{Perm::*, ROUTES, concrete, probe_body, valid_body};
use common::{OPERATOR_KEY, Server, code};
use serde_json::{Value, json};

fn table() -> BTreeSet<(String, String)> {
    ROUTES
        .iter()
        .map(|(m, p, _)| (m.to_string(), p.to_string()))
        .collect()
}

#[test]
fn table_lists_exactly_the_served_routes() {
    let served: BTreeSet<(String, String)> = strata_api::served_routes().into_iter().collect();
    assert_eq!(table(), served, "route table and router disagree");

    // And the live binary's OpenAPI document, generated from the same registrations, agrees.
    let server = Server::start();
    let (s, doc) = server.call("GET", "/openapi.json", None, &[], None);
    assert_eq!(s, 200);
    let mut live = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            live.insert((method.to_uppercase(), path.clone()));
        }
    }
    assert_eq!(table(), live, "route table and /openapi.json disagree");
}

#[test]
fn every_route_rejects_missing_and_bad_credentials() {
    let server = Server::start();
    server.tenant("acme");
    let revoked = server.key("acme", json!({"permissions": ["read", "write", "admin"]}));
    let id = revoked.split('_').nth(1).expect("key id").to_owned();
    let (s, _) = server.call(
        "DELETE",
        &format!("/v1/admin/keys/{id}"),
        Some(OPERATOR_KEY),
        &[],
        None,
    );
    assert_eq!(s, 200);
    let well_formed_unknown = format!("sk_{}_{}", "0".repeat(16), "0".repeat(64));
    let bad_headers: Vec<Option<String>> = vec![
        None,
        Some("Bearer ".into()),
        Some("Bearer not-a-key".into()),
        Some(format!("Bearer {well_formed_unknown}")),
        Some(format!("Bearer {revoked}")),
        Some("Bearer eyJhbGciOiJIUzI1NiJ9.e30.c2ln".into()),
        Some(format!("Basic {OPERATOR_KEY}")),
    ];
    for (method, path, perm) in ROUTES {
        let path = concrete(path);
        if *perm == Public {
            let (s, v) = server.call(method, &path, None, &[], None);
            assert_eq!(s, 200, "{method} {path} should be public: {v}");
            continue;
        }
        for header in &bad_headers {
            let headers: Vec<(&str, &str)> = header
                .as_deref()
                .map(|h| vec![("authorization", h)])
                .unwrap_or_default();
            let (s, v) = server.call(method, &path, None, &headers, probe_body(method).as_ref());
            assert_eq!(
                (s, code(&v)),
                (401, "UNAUTHORIZED"),
                "{method} {path} with {header:?}: {v}"
            );
        }
    }
}

/// What tenant A holds before B starts probing.
fn seed_tenant_a(server: &Server) -> String {
    server.tenant("tenant-a");
    let a = server.key(
        "tenant-a",
        json!({"permissions": ["read", "write", "admin", "all_principals"]}),
    );
    let (s, v) = server.post(
        "/v1/memories",
        &a,
        json!({"records": [
            {"id": "a-rec", "content": "tenant A secret alpha"},
            {"id": "a-private", "content": "tenant A private alpha", "user_tokens": ["u:alice"]},
        ]}),
    );
    assert_eq!(s, 201, "{v}");
    let (s, v) = server.post("/v1/collections", &a, json!({"name": "a-coll", "dim": 4}));
    assert_eq!(s, 201, "{v}");
    let (s, v) = server.post(
        "/v1/links",
        &a,
        json!({"source": "a-rec", "target": "a-private", "relation": "next", "user_tokens": ["*"]}),
    );
    assert_eq!(s, 201, "{v}");
    a
}

/// A's state, as A sees it, to compare before and after B's probes.
fn snapshot_a(server: &Server, a: &str) -> Value {
    let (_, list) = server.post("/v1/memories/list", a, json!({"user_tokens": ["*"]}));
    let (_, cols) = server.get("/v1/collections", a);
    let (_, links) = server.get("/v1/memories/a-rec/links?user_tokens=*", a);
    let (_, rec) = server.get("/v1/memories/a-rec", a);
    json!({"records": list["records"], "collections": cols["collections"], "links": links,
        "confidence": rec["confidence"]})
}

fn mentions_a(v: &Value) -> bool {
    let text = v.to_string();
    text.contains("tenant A") || text.contains("a-coll") || text.contains("tenant-a")
}

#[test]
fn tenant_b_gets_nothing_of_tenant_a() {
    let server = Server::start();
    let a = seed_tenant_a(&server);
    let before = snapshot_a(&server, &a);
    server.tenant("tenant-b");
    // B's key is as strong as a tenant key gets.
    let b = server.key(
        "tenant-b",
        json!({"permissions": ["read", "write", "admin", "all_principals"]}),
    );
    let all = json!({"user_tokens": ["*"]});
    for (method, path, perm) in ROUTES {
        let concrete_path = concrete(path);
        let p = concrete_path.as_str();
        match (*method, *path) {
            (_, "/healthz" | "/readyz" | "/openapi.json" | "/dashboard") => {
                let (_, v) = server.call(method, p, Some(&b), &[], None);
                assert!(!mentions_a(&v), "{method} {p}: {v}");
            }
            ("GET" | "PATCH" | "DELETE", "/v1/memories/{id}") => {
                for q in ["", "?user_tokens=*"] {
                    let body = (*method == "PATCH").then(|| json!({"content": "B was here"}));
                    let (s, v) =
                        server.call(method, &format!("{p}{q}"), Some(&b), &[], body.as_ref());
                    assert_eq!((s, code(&v)), (404, "NOT_FOUND"), "{method} {p}{q}: {v}");
                }
            }
            ("POST", "/v1/memories") => {
                let (s, v) = server.post(
                    p,
                    &b,
                    json!({"content": "B's own", "user_tokens": ["u:alice"]}),
                );
                assert_eq!(s, 201, "{v}");
            }
            ("POST", "/v1/memories/delete") => {
                let (s, v) = server.post(p, &b, json!({"filter": {}, "user_tokens": ["*"]}));
                assert_eq!(s, 200, "{v}");
            }
            (_, "/v1/memories/list") => {
                let (s, v) = if *method == "GET" {
                    server.get(&format!("{p}?user_tokens=*"), &b)
                } else {
                    server.post(p, &b, all.clone())
                };
                assert_eq!(s, 200, "{v}");
                assert!(!mentions_a(&v), "{method} {p}: {v}");
            }
            ("POST", "/v1/memories/count") => {
                let (s, v) = server.post(p, &b, all.clone());
                assert_eq!(s, 200, "{v}");
                assert!(v["count"].as_u64().unwrap_or(99) <= 1, "count sees A: {v}");
            }
            ("POST", "/v1/search") => {
                let (s, v) = server.post(
                    p,
                    &b,
                    json!({"query": "tenant alpha secret private", "user_tokens": ["*"], "k": 50}),
                );
                assert_eq!(s, 200, "{v}");
                assert!(!mentions_a(&v), "search sees A: {v}");
            }
            ("POST", "/v1/feedback") => {
                // A's ids are ignored exactly like missing ones, and A's state is untouched.
                let (s, v) = server.post(p, &b, json!({"ids": ["a-rec", "a-private"], "shown": ["a-rec"], "user_tokens": ["*"]}));
                assert_eq!(s, 200, "{v}");
                let (_, missing) = server.post(
                    p,
                    &b,
                    json!({"ids": ["zz-1", "zz-2"], "shown": ["zz-1"], "user_tokens": ["*"]}),
                );
                assert_eq!(v, missing);
                let (_, stats) = server.get("/v1/stats", &a);
                assert_eq!(stats["adaptive"], json!([]), "{stats}");
            }
            ("POST", "/v1/memories/{id}/evidence") | ("GET", "/v1/memories/{id}/links") => {
                // A's record is missing for B, whatever principals B speaks for.
                for q in ["", "?user_tokens=*"] {
                    let body = (*method == "POST").then(|| json!({"corroborate": true}));
                    let (s, v) =
                        server.call(method, &format!("{p}{q}"), Some(&b), &[], body.as_ref());
                    assert_eq!((s, code(&v)), (404, "NOT_FOUND"), "{method} {p}{q}: {v}");
                }
            }
            ("POST", "/v1/links") | ("POST", "/v1/links/delete") => {
                // Neither linking A's records nor linking B's own to one of A's, nor removing
                // A's link: all look like missing ids.
                let (s, v) =
                    server.post("/v1/memories", &b, json!({"id": "b-own", "content": "B"}));
                assert!(s == 201 || s == 200, "{v}");
                for (source, target) in [
                    ("a-rec", "a-private"),
                    ("b-own", "a-rec"),
                    ("a-rec", "b-own"),
                ] {
                    let body = json!({"source": source, "target": target, "relation": "next",
                        "user_tokens": ["*"]});
                    let (s, v) = server.post(p, &b, body);
                    assert_eq!((s, code(&v)), (404, "NOT_FOUND"), "{method} {p}: {v}");
                }
            }
            ("POST", "/v1/recall") => {
                let (s, v) = server.post(
                    p,
                    &b,
                    json!({"query": "tenant alpha secret private", "user_tokens": ["*"], "k": 50}),
                );
                assert_eq!(s, 200, "{v}");
                assert!(!mentions_a(&v), "recall sees A: {v}");
            }
            ("GET", "/v1/collections") => {
                let (s, v) = server.get(p, &b);
                assert_eq!(s, 200, "{v}");
                assert!(!mentions_a(&v), "{v}");
            }
            ("DELETE", "/v1/collections/{name}") | ("GET", "/v1/collections/{name}/reembed") => {
                let (s, v) = server.call(method, p, Some(&b), &[], None);
                assert_eq!((s, code(&v)), (404, "NOT_FOUND"), "{v}");
            }
            ("POST", "/v1/collections/{name}/reembed") => {
                // A's collection is not B's to plan or re-embed.
                for body in [json!({"dry_run": true}), json!({})] {
                    let (s, v) = server.post(p, &b, body);
                    assert_eq!((s, code(&v)), (404, "NOT_FOUND"), "{v}");
                }
            }
            ("POST", "/v1/collections") => {
                // B may create a collection of the same name: it is B's own.
                let (s, v) = server.post(p, &b, json!({"name": "b-coll", "dim": 4}));
                assert_eq!(s, 201, "{v}");
            }
            ("GET", "/v1/audit") => {
                // B's own log only: none of A's rows, whatever B asks for.
                let (s, v) = server.get(p, &b);
                assert_eq!(s, 200, "{v}");
                assert!(!mentions_a(&v), "B's audit view shows A: {v}");
                let rows = v["rows"].as_array().expect("rows");
                assert!(
                    rows.iter().all(|r| r["tenant"] == "tenant-b"),
                    "B's audit view: {v}"
                );
                let (s, v) = server.get(&format!("{p}?tenant=tenant-a"), &b);
                assert_eq!((s, code(&v)), (403, "SCOPE_FORBIDDEN"), "{v}");
            }
            ("GET", "/v1/stats") => {
                // B's own figures only.
                let (s, v) = server.get(p, &b);
                assert_eq!(s, 200, "{v}");
                assert_eq!(v["tenant"], "tenant-b", "{v}");
                assert!(!mentions_a(&v), "B's stats show A: {v}");
            }
            ("GET", "/metrics") => {
                let (s, v) = server.get(p, &b);
                assert_eq!((s, code(&v)), (403, "FORBIDDEN"), "{v}");
            }
            (_, path) if path.starts_with("/v1/admin/") => {
                assert_eq!(*perm, Operator);
                let body = probe_body(method);
                let (s, v) = server.call(
                    method,
                    &concrete(path).replace("a-rec", "tenant-a"),
                    Some(&b),
                    &[],
                    body.as_ref(),
                );
                assert_eq!((s, code(&v)), (403, "FORBIDDEN"), "{method} {path}: {v}");
            }
            other => panic!("route {other:?} has no cross-tenant probe: add one"),
        }
        // Naming tenant A explicitly is refused on every tenant route.
        if matches!(perm, Read | Write | Admin) {
            let header = [("x-tenant-id", "tenant-a")];
            let (s, v) = server.call(method, p, Some(&b), &header, probe_body(method).as_ref());
            assert_eq!((s, code(&v)), (403, "TENANT_MISMATCH"), "{method} {p}: {v}");
            if let Some(mut body) = probe_body(method) {
                body["tenant_id"] = json!("tenant-a");
                let (s, v) = server.call(method, p, Some(&b), &[], Some(&body));
                assert_eq!((s, code(&v)), (403, "TENANT_MISMATCH"), "{method} {p}: {v}");
            }
        }
    }
    // Writing A's ids as B creates B's own records; A's stay untouched.
    let (s, v) = server.post(
        "/v1/memories",
        &b,
        json!({"records": [
        {"id": "a-rec", "content": "B's own"}, {"id": "a-private", "content": "B's own"}]}),
    );
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        snapshot_a(&server, &a),
        before,
        "tenant A changed while B probed"
    );
    assert!(
        server.log().contains("tenant mismatch"),
        "tenant mismatch not logged as a security event"
    );
}

#[test]
fn operator_key_cannot_touch_tenant_data_routes() {
    let server = Server::start();
    for (method, path, perm) in ROUTES {
        if matches!(perm, Read | Write | Admin) {
            let (s, v) = server.call(
                method,
                &concrete(path),
                Some(OPERATOR_KEY),
                &[],
                probe_body(method).as_ref(),
            );
            assert_eq!((s, code(&v)), (403, "FORBIDDEN"), "{method} {path}: {v}");
        }
    }
}

#[test]
fn permissions_in_the_table_are_enforced() {
    let server = Server::start();
    server.tenant("acme");
    let read_only = server.key("acme", json!({"permissions": ["read"]}));
    let write_only = server.key("acme", json!({"permissions": ["write"]}));
    for (method, path, perm) in ROUTES {
        let p = concrete(path);
        // A well-formed body, so the permission is what fails.
        let body = valid_body(method, path);
        let probe = |key: &str| server.call(method, &p, Some(key), &[], body.as_ref());
        match perm {
            Write | Admin => {
                let (s, v) = probe(&read_only);
                assert_eq!(
                    (s, code(&v)),
                    (403, "FORBIDDEN"),
                    "{method} {p} as read-only: {v}"
                );
            }
            Read => {
                let (s, v) = probe(&write_only);
                assert_eq!(
                    (s, code(&v)),
                    (403, "FORBIDDEN"),
                    "{method} {p} as write-only: {v}"
                );
            }
            Public | Operator => {}
        }
    }
}
