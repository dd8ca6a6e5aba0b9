//! A domain-limited key and a principal-bound key cannot widen their scope through body
//! fields, headers or query parameters: every attempt is `403 SCOPE_FORBIDDEN`, while the
//! scope they were granted keeps working.

mod common;

use common::{Server, code};
use serde_json::{Value, json};

struct Setup {
    server: Server,
    domain_key: String,
    bound_key: String,
}

fn setup() -> Setup {
    let server = Server::start();
    server.tenant("acme");
    let rw = json!(["read", "write"]);
    let domain_key = server.key("acme", json!({"permissions": rw, "domains": ["support"]}));
    let bound_key = server.key(
        "acme",
        json!({"permissions": rw, "user_tokens": ["u:alice"]}),
    );
    Setup {
        server,
        domain_key,
        bound_key,
    }
}

/// One request: method, path, headers, body.
type Attempt = (
    &'static str,
    String,
    Vec<(&'static str, &'static str)>,
    Option<Value>,
);

fn expect_forbidden(server: &Server, key: &str, attempts: Vec<Attempt>) {
    for (method, path, headers, body) in attempts {
        let (s, v) = server.call(method, &path, Some(key), &headers, body.as_ref());
        assert_eq!(
            (s, code(&v)),
            (403, "SCOPE_FORBIDDEN"),
            "{method} {path} {headers:?} {body:?}: {v}"
        );
    }
}

#[test]
fn domain_limited_key_stays_in_its_domains() {
    let Setup {
        server, domain_key, ..
    } = setup();
    let k = &domain_key;
    // Its own domain works, named or not.
    let (s, v) = server.post(
        "/v1/memories",
        k,
        json!({"id": "r1", "content": "support note"}),
    );
    assert_eq!(s, 201, "{v}");
    let (s, v) = server.call(
        "GET",
        "/v1/memories/r1",
        Some(k),
        &[("x-strata-domain", "support")],
        None,
    );
    assert_eq!(s, 200, "{v}");

    let other = || json!({"memory_domain": "billing"});
    let h = vec![("x-strata-domain", "billing")];
    let attempts: Vec<Attempt> = vec![
        // Body fields.
        (
            "POST",
            "/v1/memories".into(),
            vec![],
            Some(json!({"content": "x", "memory_domain": "billing"})),
        ),
        (
            "POST",
            "/v1/memories".into(),
            vec![],
            Some(json!({"records": [{"content": "x"}], "memory_domain": "billing"})),
        ),
        ("POST", "/v1/memories/list".into(), vec![], Some(other())),
        ("POST", "/v1/memories/count".into(), vec![], Some(other())),
        (
            "POST",
            "/v1/memories/delete".into(),
            vec![],
            Some(json!({"all": true, "memory_domain": "billing"})),
        ),
        (
            "POST",
            "/v1/search".into(),
            vec![],
            Some(json!({"query": "x", "memory_domain": "billing"})),
        ),
        (
            "PATCH",
            "/v1/memories/r1".into(),
            vec![],
            Some(json!({"content": "y", "memory_domain": "billing"})),
        ),
        // Moving its record out of its domains.
        (
            "PATCH",
            "/v1/memories/r1".into(),
            vec![],
            Some(json!({"move_to_domain": "billing"})),
        ),
        // Headers.
        (
            "POST",
            "/v1/memories".into(),
            h.clone(),
            Some(json!({"content": "x"})),
        ),
        ("GET", "/v1/memories/r1".into(), h.clone(), None),
        ("DELETE", "/v1/memories/r1".into(), h.clone(), None),
        ("GET", "/v1/memories/list".into(), h.clone(), None),
        (
            "POST",
            "/v1/search".into(),
            h.clone(),
            Some(json!({"query": "x"})),
        ),
        // Query parameters.
        (
            "GET",
            "/v1/memories/list?memory_domain=billing".into(),
            vec![],
            None,
        ),
        (
            "GET",
            "/v1/memories/r1?memory_domain=billing".into(),
            vec![],
            None,
        ),
        (
            "DELETE",
            "/v1/memories/r1?memory_domain=billing".into(),
            vec![],
            None,
        ),
        (
            "POST",
            "/v1/memories/count?memory_domain=billing".into(),
            vec![],
            Some(json!({})),
        ),
        (
            "POST",
            "/v1/search?memory_domain=billing".into(),
            vec![],
            Some(json!({"query": "x"})),
        ),
    ];
    expect_forbidden(&server, k, attempts);

    // Header and body that disagree are a bad request, not a silent pick.
    let (s, v) = server.call(
        "POST",
        "/v1/memories/list",
        Some(k),
        &[("x-strata-domain", "support")],
        Some(&other()),
    );
    assert_eq!((s, code(&v)), (400, "BAD_REQUEST"), "{v}");
    // Nothing leaked or changed: the record is still there.
    let (s, v) = server.get("/v1/memories/r1", k);
    assert_eq!(
        (s, v["content"].as_str()),
        (200, Some("support note")),
        "{v}"
    );
}

#[test]
fn principal_bound_key_cannot_speak_for_others() {
    let Setup {
        server, bound_key, ..
    } = setup();
    let k = &bound_key;
    let (s, v) = server.post(
        "/v1/memories",
        k,
        json!({"id": "r1", "content": "alice's note"}),
    );
    assert_eq!((s, v["created"].as_bool()), (201, Some(true)), "{v}");
    let (s, v) = server.get("/v1/memories/r1?user_tokens=u:alice", k);
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["user_tokens"],
        json!(["u:alice"]),
        "records default to the key's principal"
    );

    let bob = || json!(["u:bob"]);
    let star = || json!(["*"]);
    let attempts: Vec<Attempt> = vec![
        // Body fields: reading, counting, searching or deleting as someone else, or as everyone.
        (
            "POST",
            "/v1/memories/list".into(),
            vec![],
            Some(json!({"user_tokens": bob()})),
        ),
        (
            "POST",
            "/v1/memories/list".into(),
            vec![],
            Some(json!({"user_tokens": star()})),
        ),
        (
            "POST",
            "/v1/memories/list".into(),
            vec![],
            Some(json!({"user_tokens": ["u:alice", "u:bob"]})),
        ),
        (
            "POST",
            "/v1/memories/count".into(),
            vec![],
            Some(json!({"user_tokens": star()})),
        ),
        (
            "POST",
            "/v1/search".into(),
            vec![],
            Some(json!({"query": "note", "user_tokens": bob()})),
        ),
        (
            "POST",
            "/v1/search".into(),
            vec![],
            Some(json!({"query": "note", "user_tokens": star()})),
        ),
        (
            "POST",
            "/v1/memories/delete".into(),
            vec![],
            Some(json!({"all": true, "user_tokens": bob()})),
        ),
        // Writing records for someone else, or shared with the whole tenant.
        (
            "POST",
            "/v1/memories".into(),
            vec![],
            Some(json!({"content": "x", "user_tokens": bob()})),
        ),
        (
            "POST",
            "/v1/memories".into(),
            vec![],
            Some(json!({"content": "x", "user_tokens": []})),
        ),
        (
            "POST",
            "/v1/memories".into(),
            vec![],
            Some(json!({"records": [{"content": "x"}], "user_tokens": bob()})),
        ),
        (
            "PATCH",
            "/v1/memories/r1".into(),
            vec![],
            Some(json!({"user_tokens": bob()})),
        ),
        // Query parameters.
        (
            "GET",
            "/v1/memories/list?user_tokens=u:bob".into(),
            vec![],
            None,
        ),
        (
            "GET",
            "/v1/memories/list?user_tokens=*".into(),
            vec![],
            None,
        ),
        (
            "GET",
            "/v1/memories/r1?user_tokens=u:bob".into(),
            vec![],
            None,
        ),
        (
            "DELETE",
            "/v1/memories/r1?user_tokens=*".into(),
            vec![],
            None,
        ),
        (
            "POST",
            "/v1/search?user_tokens=u:bob".into(),
            vec![],
            Some(json!({"query": "note"})),
        ),
    ];
    expect_forbidden(&server, k, attempts);
    let (s, v) = server.get("/v1/memories/r1", k);
    assert_eq!(
        (s, v["content"].as_str()),
        (200, Some("alice's note")),
        "{v}"
    );
}

#[test]
fn a_private_record_is_upserted_again_under_its_id_but_never_taken_over() {
    let server = Server::start();
    server.tenant("acme");
    let key = server.key("acme", json!({"permissions": ["read", "write"]}));
    let alice = json!({"id": "pref-1", "content": "oat milk", "user_tokens": ["u:alice"]});
    let (s, v) = server.post("/v1/memories", &key, alice.clone());
    assert_eq!((s, &v["created"]), (201, &json!(true)), "{v}");
    // The same write again (a retry, or the README run twice) replaces it.
    let (s, v) = server.post("/v1/memories", &key, alice);
    assert_eq!((s, &v["created"]), (200, &json!(false)), "{v}");
    // Bob's record may not take Alice's id over, nor may a record for nobody.
    for tokens in [json!(["u:bob"]), json!([])] {
        let body = json!({"id": "pref-1", "content": "mine now", "user_tokens": tokens});
        let (s, v) = server.post("/v1/memories", &key, body);
        assert_eq!((s, code(&v)), (409, "CONFLICT"), "{v}");
    }
    let (s, v) = server.get("/v1/memories/pref-1?user_tokens=u:alice", &key);
    assert_eq!((s, v["content"].as_str()), (200, Some("oat milk")), "{v}");
}

#[test]
fn a_patch_moves_a_record_between_domains_and_clears_fields() {
    let server = Server::start();
    server.tenant("acme");
    let admin = server.key("acme", json!({"permissions": ["read", "write"]}));
    let (s, v) = server.post(
        "/v1/memories",
        &admin,
        json!({"id": "m1", "content": "the invoice is due friday", "kind": "fact",
               "run_id": "r", "memory_scope": "ws", "expires_at": 4_000_000_000_000u64,
               "metadata": {"n": 1}, "memory_domain": "inbox"}),
    );
    assert_eq!(s, 201, "{v}");
    let (s, v) = server.call(
        "POST",
        "/v1/memories/m1/evidence",
        Some(&admin),
        &[("x-strata-domain", "inbox")],
        Some(&json!({"corroborate": true})),
    );
    assert_eq!(s, 200, "{v}");
    let before = server
        .call(
            "GET",
            "/v1/memories/m1",
            Some(&admin),
            &[("x-strata-domain", "inbox")],
            None,
        )
        .1;

    // `null` clears; absent keeps; the move keeps id, metadata, confidence and created_at.
    let (s, moved) = server.call(
        "PATCH",
        "/v1/memories/m1",
        Some(&admin),
        &[("x-strata-domain", "inbox")],
        Some(
            &json!({"move_to_domain": "archive", "run_id": null, "memory_scope": null,
                     "expires_at": null, "kind": null}),
        ),
    );
    assert_eq!(s, 200, "{moved}");
    assert_eq!(moved["memory_domain"], "archive");
    for field in ["run_id", "memory_scope", "expires_at", "kind"] {
        assert!(moved[field].is_null(), "{field} not cleared: {moved}");
    }
    for field in ["id", "content", "metadata", "confidence", "created_at"] {
        assert_eq!(moved[field], before[field], "{field} changed by the move");
    }

    // It is in the new domain only, in every channel.
    let get = |domain: &str| {
        server
            .call(
                "GET",
                "/v1/memories/m1",
                Some(&admin),
                &[("x-strata-domain", domain)],
                None,
            )
            .0
    };
    assert_eq!((get("inbox"), get("archive")), (404, 200));
    let hits = |domain: &str| {
        let (s, v) = server.post(
            "/v1/search",
            &admin,
            json!({"query": "invoice friday", "mode": "text", "memory_domain": domain}),
        );
        assert_eq!(s, 200, "{v}");
        v["hits"].as_array().unwrap().len()
    };
    assert_eq!((hits("inbox"), hits("archive")), (0, 1));

    // A value that cannot be cleared, or a bad target, is refused by name.
    let (s, v) = server.call(
        "PATCH",
        "/v1/memories/m1",
        Some(&admin),
        &[("x-strata-domain", "archive")],
        Some(&json!({"move_to_domain": "not a domain"})),
    );
    assert_eq!((s, code(&v)), (400, "BAD_REQUEST"), "{v}");
    assert!(v.to_string().contains("move_to_domain"), "{v}");
}

/// The count of every record of `domain`, as an unbound key with `all_principals` sees it.
fn count_all(server: &Server, full: &str, domain: &str) -> u64 {
    let body = json!({"user_tokens": ["*"], "memory_domain": domain});
    let (s, v) = server.post("/v1/memories/count", full, body);
    assert_eq!(s, 200, "{v}");
    v["count"].as_u64().expect("count")
}

/// An `admin` key bound to domains or to user tokens cannot act on, or read figures of, the
/// whole tenant: deleting or creating a collection, re-embedding, the audit log and the usage
/// figures are `403 SCOPE_FORBIDDEN`, and nothing is deleted.
#[test]
fn a_bound_admin_key_cannot_act_on_the_whole_tenant() {
    let server = Server::start();
    server.tenant("tw");
    let full = server.key(
        "tw",
        json!({"permissions": ["read", "write", "admin", "all_principals"]}),
    );
    let domain_admin = server.key(
        "tw",
        json!({"permissions": ["read", "admin"], "domains": ["public"]}),
    );
    let token_admin = server.key(
        "tw",
        json!({"permissions": ["read", "admin"], "user_tokens": ["u:carol"]}),
    );
    for body in [
        json!({"records": [{"id": "hr-1", "content": "salary"}], "memory_domain": "hr"}),
        json!({"records": [{"id": "hr-dave", "content": "review", "user_tokens": ["u:dave"]}],
               "memory_domain": "hr"}),
        json!({"id": "d-1", "content": "default note"}),
        json!({"records": [{"id": "pub-1", "content": "public note"}], "memory_domain": "public"}),
    ] {
        let (s, v) = server.post("/v1/memories", &full, body);
        assert_eq!(s, 201, "{v}");
    }
    for key in [&domain_admin, &token_admin] {
        let refused: Vec<Attempt> = vec![
            ("DELETE", "/v1/collections/text".into(), vec![], None),
            (
                "POST",
                "/v1/collections".into(),
                vec![],
                Some(json!({"name": "c2", "dim": 4})),
            ),
            (
                "POST",
                "/v1/collections/text/reembed".into(),
                vec![],
                Some(json!({"dry_run": true})),
            ),
            (
                "POST",
                "/v1/collections/text/reembed".into(),
                vec![],
                Some(json!({})),
            ),
            ("GET", "/v1/collections/text/reembed".into(), vec![], None),
            ("GET", "/v1/audit".into(), vec![], None),
            ("GET", "/v1/audit?action=memory.put".into(), vec![], None),
            ("GET", "/v1/stats".into(), vec![], None),
        ];
        expect_forbidden(&server, key, refused);
    }
    // Every record is still there, in every domain.
    assert_eq!(count_all(&server, &full, "hr"), 2);
    assert_eq!(count_all(&server, &full, "default"), 1);
    assert_eq!(count_all(&server, &full, "public"), 1);
    // The domain-bound key still reads its own domain.
    let (s, v) = server.post("/v1/memories/count", &domain_admin, json!({}));
    assert_eq!((s, v["count"].as_u64()), (200, Some(1)), "{v}");
    // An unbound admin key keeps the tenant-wide view.
    let (s, v) = server.get("/v1/audit?action=memory.put", &full);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["rows"].as_array().map(Vec::len), Some(4), "{v}");
    let (s, v) = server.get("/v1/stats", &full);
    assert_eq!((s, v["usage"]["records"].as_u64()), (200, Some(4)), "{v}");
    let (s, v) = server.call("DELETE", "/v1/collections/text", Some(&full), &[], None);
    assert_eq!((s, v["deleted_records"].as_u64()), (200, Some(4)), "{v}");
}

/// An unbound `admin` key without `all_principals` never sees a principal's private records,
/// so it may not delete them with their collection, re-embed them, read the audit rows that
/// name them, nor count them: each is `403 FORBIDDEN` naming `all_principals`, and nothing
/// changes. It still creates a collection (no record in it); with `all_principals` the rest
/// works.
#[test]
fn an_unbound_admin_key_without_all_principals_cannot_reach_private_records() {
    let server = Server::start();
    server.tenant("tp");
    let full = server.key(
        "tp",
        json!({"permissions": ["read", "write", "admin", "all_principals"]}),
    );
    let admin = server.key("tp", json!({"permissions": ["read", "write", "admin"]}));
    let (s, v) = server.post(
        "/v1/memories",
        &full,
        json!({"records": [
            {"id": "shared-1", "content": "tenant-wide note"},
            {"id": "dave-private", "content": "dave's review", "user_tokens": ["u:dave"]},
        ]}),
    );
    assert_eq!(s, 201, "{v}");
    let refused: [(&str, &str, Option<Value>); 6] = [
        ("DELETE", "/v1/collections/text", None),
        (
            "POST",
            "/v1/collections/text/reembed",
            Some(json!({"dry_run": true})),
        ),
        ("POST", "/v1/collections/text/reembed", Some(json!({}))),
        ("GET", "/v1/collections/text/reembed", None),
        ("GET", "/v1/audit", None),
        ("GET", "/v1/stats", None),
    ];
    for (method, path, body) in &refused {
        let (s, v) = server.call(method, path, Some(&admin), &[], body.as_ref());
        assert_eq!((s, code(&v)), (403, "FORBIDDEN"), "{method} {path}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("all_principals")),
            "{method} {path}: {v}"
        );
        assert!(!v.to_string().contains("dave"), "{method} {path}: {v}");
    }
    // Nothing changed: the collection and both records, the private one included, are there.
    let (s, v) = server.get("/v1/collections", &full);
    assert_eq!(s, 200, "{v}");
    assert!(
        v["collections"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["name"] == "text")),
        "{v}"
    );
    assert_eq!(count_all(&server, &full, "default"), 2);
    let (s, v) = server.get("/v1/memories/dave-private?user_tokens=u:dave", &full);
    assert_eq!(s, 200, "{v}");
    // Creating a collection changes and counts no record: `admin` alone does it.
    let (s, v) = server.post("/v1/collections", &admin, json!({"name": "c2", "dim": 4}));
    assert_eq!(s, 201, "{v}");
    // With `all_principals` the same key's tenant-wide view works.
    let (s, v) = server.get("/v1/audit?action=memory.put", &full);
    assert_eq!(s, 200, "{v}");
    assert!(v.to_string().contains("dave-private"), "{v}");
    let (s, v) = server.get("/v1/stats", &full);
    assert_eq!((s, v["usage"]["records"].as_u64()), (200, Some(2)), "{v}");
    let (s, v) = server.call("DELETE", "/v1/collections/text", Some(&full), &[], None);
    assert_eq!((s, v["deleted_records"].as_u64()), (200, Some(2)), "{v}");
}

/// A key bound to `u:alice` reads tenant-shared and co-owned records but cannot rewrite, hide,
/// move, take over or delete them (`403 SCOPE_FORBIDDEN`); a delete by filter deletes only
/// Alice's own records; one it cannot see stays `404`.
#[test]
fn a_token_bound_key_cannot_rewrite_or_delete_records_it_may_only_read() {
    let server = Server::start();
    server.tenant("acme");
    let full = server.key(
        "acme",
        json!({"permissions": ["read", "write", "all_principals"]}),
    );
    let alice = server.key(
        "acme",
        json!({"permissions": ["read", "write"], "user_tokens": ["u:alice"]}),
    );
    let records = json!({"records": [
        {"id": "sh-a", "content": "shared a"},
        {"id": "shared-3", "content": "shared three"},
        {"id": "co", "content": "co-owned", "user_tokens": ["u:alice", "u:bob"]},
        {"id": "al", "content": "alice's", "user_tokens": ["u:alice"]},
        {"id": "bo", "content": "bob's", "user_tokens": ["u:bob"]},
    ]});
    let (s, v) = server.post("/v1/memories", &full, records);
    assert_eq!(s, 201, "{v}");
    // It sees the shared and co-owned records.
    let (s, v) = server.get("/v1/memories/sh-a", &alice);
    assert_eq!(s, 200, "{v}");
    let (s, v) = server.get("/v1/memories/co", &alice);
    assert_eq!(s, 200, "{v}");

    let refused: Vec<Attempt> = vec![
        (
            "PATCH",
            "/v1/memories/sh-a".into(),
            vec![],
            Some(json!({"content": "rewritten"})),
        ),
        (
            "PATCH",
            "/v1/memories/sh-a".into(),
            vec![],
            Some(json!({"user_tokens": ["u:alice"]})),
        ),
        (
            "PATCH",
            "/v1/memories/sh-a".into(),
            vec![],
            Some(json!({"move_to_domain": "alicedom"})),
        ),
        (
            "PATCH",
            "/v1/memories/co".into(),
            vec![],
            Some(json!({"user_tokens": ["u:alice"]})),
        ),
        ("DELETE", "/v1/memories/sh-a".into(), vec![], None),
        ("DELETE", "/v1/memories/co".into(), vec![], None),
        (
            "POST",
            "/v1/memories".into(),
            vec![],
            Some(json!({"id": "shared-3", "content": "mine", "user_tokens": ["u:alice"]})),
        ),
        (
            "POST",
            "/v1/memories".into(),
            vec![],
            Some(json!({"id": "co", "content": "mine", "user_tokens": ["u:alice"]})),
        ),
        (
            "POST",
            "/v1/memories/sh-a/evidence".into(),
            vec![],
            Some(json!({"contradict": true})),
        ),
        (
            "POST",
            "/v1/links".into(),
            vec![],
            Some(json!({"source": "sh-a", "target": "shared-3"})),
        ),
    ];
    expect_forbidden(&server, &alice, refused);
    // A record it cannot see is a missing id, as before.
    let (s, v) = server.call(
        "PATCH",
        "/v1/memories/bo",
        Some(&alice),
        &[],
        Some(&json!({"content": "x"})),
    );
    assert_eq!((s, code(&v)), (404, "NOT_FOUND"), "{v}");
    // A delete by filter deletes Alice's own record only, and says so.
    let (s, v) = server.post("/v1/memories/delete", &alice, json!({"all": true}));
    assert_eq!((s, v["deleted"].as_u64()), (200, Some(1)), "{v}");

    // Nothing else moved: the shared records are intact and shared, Bob keeps the co-owned one.
    let (s, v) = server.get("/v1/memories/sh-a", &full);
    assert_eq!((s, v["content"].as_str()), (200, Some("shared a")), "{v}");
    assert_eq!(
        (&v["user_tokens"], &v["memory_domain"]),
        (&json!([]), &json!("default"))
    );
    let (s, v) = server.get("/v1/memories/shared-3", &full);
    assert_eq!((s, &v["user_tokens"]), (200, &json!([])), "{v}");
    let (s, v) = server.get("/v1/memories/co?user_tokens=u:bob", &full);
    assert_eq!(
        (s, &v["user_tokens"]),
        (200, &json!(["u:alice", "u:bob"])),
        "{v}"
    );
    assert_eq!(count_all(&server, &full, "default"), 4);
}
