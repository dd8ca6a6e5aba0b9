//! A large request body (over 64 KiB, parsed and converted in a pool job) that names another
//! tenant or a scope outside its credential's binding is refused exactly as a small body with
//! the same fields: the same status and error, and the same security event in the audit log,
//! even when something else about the request (a repeated key, a malformed `Idempotency-Key`)
//! is wrong too. On every body route, a body naming another tenant is that security event before
//! anything else about the request is judged: its scope fields' values, the id in its path, its
//! query string.

mod common;

use common::{OPERATOR_KEY, Server};
use serde_json::{Value, json};

/// Content per record of a large body: three of them make a body past the 64 KiB a body is
/// parsed inline up to, each within the 64 KiB a record's content may hold.
const PADDING: usize = 30 * 1024;

/// A batch body of `records` records (their content padded to `pad` bytes) with `scope`'s
/// fields at its top level, as JSON text, so a test may repeat a key in it.
fn batch(records: usize, pad: usize, scope: &str) -> String {
    let content = format!("note {}", "x".repeat(pad));
    let one = json!({ "content": content, "metadata": { "pad": "y".repeat(pad / 8) } });
    let list = vec![one; records];
    format!(r#"{{{scope}"records":{}}}"#, Value::Array(list))
}

fn small(scope: &str) -> String {
    batch(1, 16, scope)
}

fn large(scope: &str) -> String {
    let body = batch(3, PADDING, scope);
    assert!(body.len() > 64 * 1024, "a large body: {} bytes", body.len());
    body
}

/// The rows of `action` filed under acme.
fn events(server: &Server, action: &str) -> usize {
    let (s, v) = server.get(
        &format!("/v1/admin/audit?action={action}&tenant=acme&limit=1000"),
        OPERATOR_KEY,
    );
    assert_eq!(s, 200, "{v}");
    v["rows"].as_array().expect("rows").len()
}

/// What a client and an operator see of one refused write: its status, its error (code and
/// message) and how many rows of `action` it added to the audit log.
fn refusal(
    server: &Server,
    key: &str,
    headers: &[(&str, &str)],
    body: String,
    action: &str,
) -> (u16, Value, usize) {
    sent(server, "POST", "/v1/memories", key, headers, body, action)
}

/// [`refusal`] of a request to any body route.
fn sent(
    server: &Server,
    method: &str,
    path: &str,
    key: &str,
    headers: &[(&str, &str)],
    body: String,
    action: &str,
) -> (u16, Value, usize) {
    let before = events(server, action);
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    let (status, text) = server.send_raw_with(method, path, key, &all, body.into());
    let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let error = json!({
        "code": answer["error"]["code"],
        "message": answer["error"]["message"],
    });
    (status, error, events(server, action) - before)
}

/// One refused write, sent once with a small body and once with a large one.
struct Case<'a> {
    what: &'a str,
    key: &'a str,
    headers: Vec<(&'a str, &'a str)>,
    /// The scope fields, as JSON text that opens the body.
    scope: &'a str,
    /// The error code expected (always with `403`).
    code: &'a str,
    /// The audit action of the security event it is.
    action: &'a str,
}

#[test]
fn a_large_body_is_refused_like_a_small_one_with_the_same_fields() {
    let server = Server::start();
    server.tenant("acme");
    server.tenant("globex");
    let rw = json!(["read", "write"]);
    let key = server.key("acme", json!({ "permissions": rw }));
    let domain_key = server.key("acme", json!({ "permissions": rw, "domains": ["support"] }));
    let bound_key = server.key(
        "acme",
        json!({ "permissions": rw, "user_tokens": ["u:alice"] }),
    );
    // Past the 255 characters a key may have.
    let bad_key = "k".repeat(300);
    let mismatch = "security.tenant_mismatch";
    let forbidden = "security.scope_forbidden";

    let case = |what, key, headers, scope, code, action| Case {
        what,
        key,
        headers,
        scope,
        code,
        action,
    };
    let cases = [
        case(
            "a foreign tenant_id",
            &key,
            vec![],
            r#""tenant_id":"globex","#,
            "TENANT_MISMATCH",
            mismatch,
        ),
        case(
            "a forbidden domain",
            &domain_key,
            vec![],
            r#""memory_domain":"billing","#,
            "SCOPE_FORBIDDEN",
            forbidden,
        ),
        case(
            "forbidden user tokens",
            &bound_key,
            vec![],
            r#""user_tokens":["u:bob"],"#,
            "SCOPE_FORBIDDEN",
            forbidden,
        ),
        case(
            "a foreign tenant_id and a malformed Idempotency-Key",
            &key,
            vec![("idempotency-key", &bad_key)],
            r#""tenant_id":"globex","#,
            "TENANT_MISMATCH",
            mismatch,
        ),
        case(
            "a repeated foreign tenant_id and a malformed Idempotency-Key",
            &key,
            vec![("idempotency-key", &bad_key)],
            r#""tenant_id":"acme","tenant_id":"globex","#,
            "TENANT_MISMATCH",
            mismatch,
        ),
    ];
    for c in cases {
        let of_small = refusal(&server, c.key, &c.headers, small(c.scope), c.action);
        let of_large = refusal(&server, c.key, &c.headers, large(c.scope), c.action);
        let what = c.what;
        assert_eq!(
            (of_small.0, of_small.1["code"].as_str(), of_small.2),
            (403, Some(c.code), 1),
            "{what}, small body: {of_small:?}"
        );
        assert_eq!(
            of_large, of_small,
            "{what}: the large body against the small"
        );
    }

    // Nothing was written by any of them.
    let (s, v) = server.get("/v1/memories/list", &key);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["records"].as_array().map(Vec::len), Some(0), "{v}");
}

/// A body opening with `scope`, then `fields` (JSON text, each field followed by a comma, or
/// empty), then three strings of `pad` bytes under keys no route knows: never read, as the
/// body's tenant is refused first.
fn padded(scope: &str, fields: &str, pad: usize) -> String {
    let pad = Value::String("x".repeat(pad));
    format!(r#"{{{scope}{fields}"pad0":{pad},"pad1":{pad},"pad2":{pad}}}"#)
}

#[test]
fn a_body_naming_another_tenant_is_refused_before_anything_else_is_judged() {
    let server = Server::start();
    server.tenant("acme");
    server.tenant("globex");
    let key = server.key("acme", json!({ "permissions": ["read", "write"] }));
    let (s, v) = server.post(
        "/v1/memories",
        &key,
        json!({ "id": "m", "content": "a note" }),
    );
    assert_eq!(s, 201, "{v}");
    let repeated = r#""tenant_id":"acme","tenant_id":"globex","#;
    let foreign = r#""tenant_id":"globex","#;
    let foreign_bad_domain = r#""tenant_id":"globex","memory_domain":5,"#;
    // (method, path with its query string, the scope fields, the route's fields)
    let cases = [
        ("PATCH", "/v1/memories/m?include=bogus", repeated, ""),
        ("PATCH", "/v1/memories/m?include=bogus", foreign, ""),
        ("PATCH", "/v1/memories/a%20b", foreign, ""),
        (
            "POST",
            "/v1/memories/m/evidence?include=bogus",
            repeated,
            r#""corroborate":true,"#,
        ),
        (
            "POST",
            "/v1/memories/m/evidence?include=bogus",
            foreign,
            r#""corroborate":true,"#,
        ),
        ("POST", "/v1/memories/list", foreign_bad_domain, ""),
        ("POST", "/v1/memories/count", foreign_bad_domain, ""),
        (
            "POST",
            "/v1/memories/delete",
            foreign_bad_domain,
            r#""all":true,"#,
        ),
        (
            "POST",
            "/v1/recall",
            foreign_bad_domain,
            r#""query":"note","#,
        ),
        ("POST", "/v1/recall?bogus=1", foreign, r#""query":"note","#),
        (
            "POST",
            "/v1/search",
            foreign_bad_domain,
            r#""query":"note","#,
        ),
        ("POST", "/v1/search?bogus=1", foreign, r#""query":"note","#),
    ];
    let mismatch = "security.tenant_mismatch";
    for (method, path, scope, fields) in cases {
        let what = format!("{method} {path} with {scope}{fields}");
        let body = padded(scope, fields, 16);
        let of_small = sent(&server, method, path, &key, &[], body, mismatch);
        let body = padded(scope, fields, PADDING);
        assert!(body.len() > 64 * 1024, "a large body: {} bytes", body.len());
        let of_large = sent(&server, method, path, &key, &[], body, mismatch);
        assert_eq!(
            (of_small.0, of_small.1["code"].as_str(), of_small.2),
            (403, Some("TENANT_MISMATCH"), 1),
            "{what}, small body: {of_small:?}"
        );
        assert_eq!(
            of_large, of_small,
            "{what}: the large body against the small"
        );
    }

    // The record is as it was written.
    let (s, v) = server.get("/v1/memories/m", &key);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["content"], "a note", "{v}");
}
