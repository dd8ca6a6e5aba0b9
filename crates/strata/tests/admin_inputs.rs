//! Operator input over HTTP against the real binary: what the admin routes refuse and how
//! they answer, found by an operator's black-box test.

mod common;

use common::{OPERATOR_KEY, Server, code};
use serde_json::{Value, json};

fn admin(server: &Server, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    server.call(method, path, Some(OPERATOR_KEY), &[], body.as_ref())
}

/// A display name is shown in listings, logs and the dashboard: a control, zero-width or
/// bidirectional formatting character is refused as in a JWT's subject, at creation, on update
/// and in an import's tenant line.
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

    // An import's tenant line is checked as a create is.
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
    lines[0]["display_name"] = json!("Acme\nInc.");
    let body: Vec<String> = lines.iter().map(Value::to_string).collect();
    let (s, text) = server.send_raw(
        "POST",
        "/v1/admin/tenants/copy/import",
        OPERATOR_KEY,
        "application/x-ndjson",
        body.join("\n").into_bytes(),
    );
    assert_eq!(s, 400, "{text}");
    assert!(text.contains("import line 1: display_name"), "{text}");
}
