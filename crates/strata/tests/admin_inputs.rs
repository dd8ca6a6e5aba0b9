//! Operator input over HTTP against the real binary: what the admin routes refuse and how
//! they answer, found by an operator's black-box test.

mod common;

use common::{OPERATOR_KEY, Server, code};
use serde_json::{Value, json};

fn admin(server: &Server, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    server.call(method, path, Some(OPERATOR_KEY), &[], body.as_ref())
}

/// A display name is shown in listings, logs and the dashboard: a control, zero-width or
/// bidirectional formatting character is refused as in a JWT's subject, at creation and on
/// update (an import restores what an earlier version stored).
#[test]
fn a_display_name_with_control_characters_is_refused() {
    let server = Server::start();
    let bad = ["Acme\nInc.", "Acme\u{0}", "Acme\u{202E}cnI", "\u{200B}Acme"];
    for name in bad {
        let (s, v) = admin(
            &server,
            "POST",
            "/v1/admin/tenants",
            Some(json!({"id": "acme", "display_name": name})),
        );
        assert_eq!((s, code(&v)), (400, "BAD_REQUEST"), "{name:?}: {v}");
        assert!(v.to_string().contains("display_name"), "{name:?}: {v}");
    }
    let (s, v) = admin(&server, "GET", "/v1/admin/tenants/acme", None);
    assert_eq!(s, 404, "a refused create left a tenant: {v}");
    let (s, v) = admin(
        &server,
        "POST",
        "/v1/admin/tenants",
        Some(json!({"id": "acme", "display_name": "Acme Inc. — Zürich"})),
    );
    assert_eq!(s, 201, "{v}");
    for name in bad {
        let (s, v) = admin(
            &server,
            "PATCH",
            "/v1/admin/tenants/acme",
            Some(json!({"display_name": name})),
        );
        assert_eq!((s, code(&v)), (400, "BAD_REQUEST"), "{name:?}: {v}");
    }
    let (_, v) = admin(&server, "GET", "/v1/admin/tenants/acme", None);
    assert_eq!(v["display_name"], "Acme Inc. — Zürich", "{v}");

    // An import restores the name as exported: earlier versions stored names like these, and
    // their backups must still restore.
    let (s, export) = server.send_raw(
        "GET",
        "/v1/admin/tenants/acme/export",
        OPERATOR_KEY,
        "application/json",
        Vec::new(),
    );
    assert_eq!(s, 200, "{export}");
    let mut lines: Vec<Value> = export
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    lines[0]["display_name"] = json!("Acme\tInc.");
    let body: Vec<String> = lines.iter().map(Value::to_string).collect();
    let (s, text) = server.send_raw(
        "POST",
        "/v1/admin/tenants/copy/import",
        OPERATOR_KEY,
        "application/x-ndjson",
        body.join("\n").into_bytes(),
    );
    assert_eq!(s, 201, "{text}");
    let (_, v) = admin(&server, "GET", "/v1/admin/tenants/copy", None);
    assert_eq!(v["display_name"], "Acme\tInc.", "{v}");
}

/// Listing the keys of a tenant that does not exist is `404` naming it, as every other admin
/// route naming a tenant answers, never an empty list that reads as "no keys".
#[test]
fn the_keys_of_a_tenant_that_does_not_exist_are_not_found() {
    let server = Server::start();
    let (s, v) = admin(&server, "GET", "/v1/admin/keys?tenant=nope", None);
    assert_eq!((s, code(&v)), (404, "NOT_FOUND"), "{v}");
    assert_eq!(v["error"]["message"], "tenant nope does not exist", "{v}");
    server.tenant("acme");
    let (s, v) = admin(&server, "GET", "/v1/admin/keys?tenant=acme", None);
    assert_eq!((s, v["keys"].clone()), (200, json!([])), "{v}");
    let key = server.key("acme", json!({"permissions": ["read"]}));
    assert!(!key.is_empty());
    let (s, v) = admin(&server, "GET", "/v1/admin/keys?tenant=acme", None);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["keys"].as_array().map(Vec::len), Some(1), "{v}");
    // A soft-deleted tenant still exists (restorable): its keys are listed.
    let (s, v) = admin(&server, "DELETE", "/v1/admin/tenants/acme", None);
    assert_eq!(s, 200, "{v}");
    let (s, v) = admin(&server, "GET", "/v1/admin/keys?tenant=acme", None);
    assert_eq!(s, 200, "{v}");
    // The operator's own keys are listed with `*`.
    let (s, v) = admin(&server, "GET", "/v1/admin/keys?tenant=*", None);
    assert_eq!(s, 200, "{v}");
}

/// Resuming an active tenant (or suspending a suspended one) changes nothing, so it answers
/// `200` and keeps `updated_at`; a real change moves it.
#[test]
fn a_resume_that_changes_nothing_keeps_updated_at() {
    let server = Server::start();
    server.tenant("acme");
    let updated_at = |v: &Value| v["updated_at"].as_i64().expect("updated_at");
    // Each step waits for the clock to move past the last change, so a change that touches
    // `updated_at` cannot leave it equal by chance.
    let later = || std::thread::sleep(std::time::Duration::from_millis(5));
    let (_, created) = admin(&server, "GET", "/v1/admin/tenants/acme", None);
    later();
    let (s, v) = admin(&server, "POST", "/v1/admin/tenants/acme/resume", None);
    assert_eq!((s, v["status"].as_str()), (200, Some("active")), "{v}");
    assert_eq!(updated_at(&v), updated_at(&created), "{v}");
    let (s, suspended) = admin(&server, "POST", "/v1/admin/tenants/acme/suspend", None);
    assert_eq!(s, 200, "{suspended}");
    assert!(updated_at(&suspended) > updated_at(&created), "{suspended}");
    later();
    let (s, v) = admin(&server, "POST", "/v1/admin/tenants/acme/suspend", None);
    assert_eq!(s, 200, "{v}");
    assert_eq!(updated_at(&v), updated_at(&suspended), "{v}");
    let (s, resumed) = admin(&server, "POST", "/v1/admin/tenants/acme/resume", None);
    assert_eq!(
        (s, resumed["status"].as_str()),
        (200, Some("active")),
        "{resumed}"
    );
    assert!(updated_at(&resumed) > updated_at(&suspended), "{resumed}");
    later();
    let (s, v) = admin(&server, "POST", "/v1/admin/tenants/acme/resume", None);
    assert_eq!(s, 200, "{v}");
    assert_eq!(updated_at(&v), updated_at(&resumed), "{v}");
    let (_, v) = admin(&server, "GET", "/v1/admin/tenants/acme", None);
    assert_eq!(updated_at(&v), updated_at(&resumed), "{v}");
}

/// An admin route refuses a query parameter it does not take, as tenant routes do: a
/// misplaced `hard=true` does not read a tenant, a misspelt one does not soft-delete it.
#[test]
fn an_admin_route_refuses_a_query_parameter_it_does_not_take() {
    let server = Server::start();
    server.tenant("acme");
    for (method, path, unknown) in [
        ("GET", "/v1/admin/tenants/acme?hard=true", "hard"),
        ("DELETE", "/v1/admin/tenants/acme?hrad=true", "hrad"),
        // The listing takes no paging: a `limit` would be ignored.
        ("GET", "/v1/admin/tenants?limit=5", "limit"),
        ("POST", "/v1/admin/tenants/acme/verify?fix=true", "fix"),
    ] {
        let (s, v) = admin(&server, method, path, None);
        assert_eq!((s, code(&v)), (400, "BAD_REQUEST"), "{method} {path}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(&format!("unknown query parameter {unknown}"))),
            "{method} {path}: {v}"
        );
    }
    // Only once the operator is known: without a credential it is a 401, as anywhere.
    let (s, v) = server.call("GET", "/v1/admin/tenants/acme?hard=true", None, &[], None);
    assert_eq!((s, code(&v)), (401, "UNAUTHORIZED"), "{v}");
    // Refused before it acted: the tenant is still there; what the route takes still works.
    let (s, v) = admin(&server, "GET", "/v1/admin/tenants/acme", None);
    assert_eq!((s, v["status"].as_str()), (200, Some("active")), "{v}");
    let (s, v) = admin(&server, "DELETE", "/v1/admin/tenants/acme?hard=true", None);
    assert!(s == 200 || s == 204, "{s} {v}");
}

/// The bodies the OpenAPI document marks optional may be left out: each is read as `{}`.
#[test]
fn the_optional_bodies_may_be_left_out() {
    let server = Server::start();
    server.tenant("acme");
    let key = server.key("acme", json!({"permissions": ["read", "write"]}));
    for path in ["/v1/memories/count", "/v1/memories/list"] {
        let (s, v) = server.call("POST", path, Some(&key), &[], None);
        assert_eq!(s, 200, "{path}: {v}");
    }
    let (s, v) = admin(&server, "PATCH", "/v1/admin/tenants/acme", None);
    assert_eq!(s, 200, "{v}");
    let (s, v) = admin(&server, "POST", "/v1/admin/tenants/purge-deleted", None);
    assert_eq!(s, 200, "{v}");
    let (_, keys) = admin(&server, "GET", "/v1/admin/keys?tenant=acme", None);
    let id = keys["keys"][0]["id"].as_str().expect("a key id").to_owned();
    let (s, v) = admin(
        &server,
        "POST",
        &format!("/v1/admin/keys/{id}/rotate"),
        None,
    );
    assert_eq!(s, 201, "{v}");
}
