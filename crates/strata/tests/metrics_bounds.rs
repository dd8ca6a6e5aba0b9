//! What bounds the metrics, against the real binary: made-up methods and paths add no series,
//! a tenant's figures live and die with its incarnation (a re-created id starts from zero, a
//! purged tenant leaves `/metrics`), and one tenant whose profile does not decode is named
//! instead of failing the scrape and the dashboard's stats.

mod common;

use std::collections::BTreeSet;

use common::{OPERATOR_KEY, Server};
use serde_json::json;

/// Distinct `(method, route)` label pairs of `strata_http_requests_total`.
fn route_labels(text: &str) -> BTreeSet<(String, String)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("strata_http_requests_total{method=\""))
        .filter_map(|r| {
            let (method, rest) = r.split_once('"')?;
            let route = rest.strip_prefix(",route=\"")?.split('"').next()?;
            Some((method.to_owned(), route.to_owned()))
        })
        .collect()
}

#[test]
fn made_up_methods_and_paths_add_no_series() {
    let server = Server::start();
    server.tenant("acme");
    let key = server.key("acme", json!({"permissions": ["read", "write", "admin"]}));
    for i in 0..40 {
        // Without a key, on a real route and on made-up paths, and with one.
        let method = format!("FROB{i}");
        server.call(&method, "/v1/stats", None, &[], None);
        server.call(&method, &format!("/nowhere/{i}"), None, &[], None);
        server.call("GET", &format!("/v1/made-up-{i}"), None, &[], None);
        server.call(&method, "/v1/stats", Some(&key), &[], None);
    }
    let labels = route_labels(&server.metrics());
    let methods: BTreeSet<&str> = labels.iter().map(|(m, _)| m.as_str()).collect();
    assert!(
        methods.is_subset(&BTreeSet::from([
            "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "other"
        ])),
        "{methods:?}"
    );
    assert!(methods.contains("other"), "{labels:?}");
    let routes: BTreeSet<&str> = labels.iter().map(|(_, r)| r.as_str()).collect();
    assert!(
        routes
            .iter()
            .all(|r| !r.contains("nowhere") && !r.contains("made-up")),
        "{routes:?}"
    );
    assert!(labels.len() < 12, "{labels:?}");
}

#[test]
fn a_recreated_tenant_starts_from_zero_and_a_purged_one_leaves_metrics() {
    let server = Server::start();
    server.tenant("acme");
    let old = server.key("acme", json!({"permissions": ["read", "write", "admin"]}));
    for i in 0..5 {
        let (s, v) = server.post(
            "/v1/memories",
            &old,
            json!({"id": format!("m{i}"), "content": "x"}),
        );
        assert_eq!(s, 201, "{v}");
    }
    assert!(
        server
            .metrics()
            .contains("strata_tenant_records{tenant=\"acme\"} 5\n")
    );
    let (s, v) = server.hard_delete("acme");
    assert_eq!(s, 200, "{v}");
    let text = server.metrics();
    assert!(
        !text.contains("tenant=\"acme\""),
        "a purged tenant leaves /metrics"
    );

    server.tenant("acme");
    let new = server.key(
        "acme",
        json!({"permissions": ["read", "write", "admin", "all_principals"]}),
    );
    let (s, v) = server.get("/v1/stats", &new);
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["requests"], 0,
        "the old incarnation's traffic is not ours: {v}"
    );
    assert_eq!(v["responses"]["2xx"], 0, "{v}");
    assert_eq!(v["usage"]["records"], 0, "{v}");
    assert_eq!(v["residency"]["loads"], 0, "{v}");
    assert_eq!(v["integrity"], "normal", "{v}");
    let text = server.metrics();
    assert!(
        text.contains("strata_tenant_request_duration_seconds_count{tenant=\"acme\"} 1\n"),
        "only the new incarnation's one request"
    );
}

#[test]
fn a_tenant_whose_profile_does_not_decode_is_named_not_fatal() {
    use strata_store::Reads;
    let mut server = Server::start();
    server.tenant("acme");
    server.tenant("broken");
    server.stop();
    let store =
        strata_store::Store::open(&server.dir.path().join("data").join(strata_engine::DB_FILE))
            .expect("store");
    store
        .write(|w| {
            let id = strata_types::TenantId::parse("broken").expect("id");
            let mut meta = w.tenant(&id)?.expect("meta");
            meta.profile = json!({"status": "on-holiday", "weight": 1, "limits": {}})
                .as_object()
                .cloned()
                .expect("object");
            w.put_tenant(&meta)
        })
        .expect("tamper");
    drop(store);
    server.restart();

    let text = server.metrics();
    assert!(text.contains("strata_tenants_unreadable 1\n"), "{text}");
    assert!(text.contains("strata_tenant_records{tenant=\"acme\"} 0\n"));
    let (s, v) = server.get("/v1/admin/stats", OPERATOR_KEY);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["unreadable_tenants"], json!(["broken"]), "{v}");
    let ids: Vec<&str> = v["tenants"]
        .as_array()
        .expect("tenants")
        .iter()
        .filter_map(|t| t["tenant"].as_str())
        .collect();
    assert_eq!(ids, ["acme"]);
}

#[test]
fn admin_stats_pages_through_every_tenant_once() {
    let server = Server::start();
    for i in 0..5 {
        server.tenant(&format!("t{i}"));
    }
    let mut seen = Vec::new();
    let mut path = "/v1/admin/stats?limit=2".to_owned();
    let mut pages = 0;
    loop {
        let (s, v) = server.get(&path, OPERATOR_KEY);
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["tenant_count"], 5, "{v}");
        assert_eq!(v["tenants_by_integrity"]["normal"], 5, "{v}");
        let page = v["tenants"].as_array().expect("tenants");
        assert!(page.len() <= 2, "{v}");
        seen.extend(
            page.iter()
                .filter_map(|t| t["tenant"].as_str().map(str::to_owned)),
        );
        pages += 1;
        match v["next_after"].as_str() {
            Some(next) => path = format!("/v1/admin/stats?limit=2&after={next}"),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ["t0", "t1", "t2", "t3", "t4"]);
    let (s, v) = server.get("/v1/admin/stats", OPERATOR_KEY);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["tenants"].as_array().map(Vec::len), Some(5));
    assert!(v.get("next_after").is_none(), "{v}");
    for bad in [
        "limit=0",
        "limit=10001",
        "limit=two",
        "after=Bad%20Id",
        "page=2",
    ] {
        let (s, v) = server.get(&format!("/v1/admin/stats?{bad}"), OPERATOR_KEY);
        assert_eq!((s, common::code(&v)), (400, "BAD_REQUEST"), "{bad}: {v}");
        let field = bad.split('=').next().unwrap_or("");
        assert!(v.to_string().contains(field), "{bad}: names the field: {v}");
    }
}
