//! The route table `(method, path, permission)` every route test is driven by, shared so the
//! lifecycle tests can walk every data route too.

use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Perm {
    Public,
    Read,
    Write,
    Admin,
    /// `admin` and `all_principals`: the route changes, names or counts the records of every
    /// principal (docs/isolation.md).
    AdminAllPrincipals,
    Operator,
}

use Perm::*;

/// Every route, with the permission it needs.
pub const ROUTES: &[(&str, &str, Perm)] = &[
    ("GET", "/healthz", Public),
    ("GET", "/readyz", Public),
    ("GET", "/openapi.json", Public),
    ("POST", "/v1/memories", Write),
    ("GET", "/v1/memories/{id}", Read),
    ("PATCH", "/v1/memories/{id}", Write),
    ("DELETE", "/v1/memories/{id}", Write),
    ("POST", "/v1/memories/delete", Write),
    ("GET", "/v1/memories/list", Read),
    ("POST", "/v1/memories/list", Read),
    ("POST", "/v1/memories/count", Read),
    ("POST", "/v1/search", Read),
    ("POST", "/v1/memories/{id}/evidence", Write),
    ("GET", "/v1/memories/{id}/links", Read),
    ("POST", "/v1/links", Write),
    ("POST", "/v1/links/delete", Write),
    ("POST", "/v1/recall", Read),
    ("POST", "/v1/feedback", Write),
    ("GET", "/v1/collections", Read),
    ("POST", "/v1/collections", Admin),
    ("DELETE", "/v1/collections/{name}", AdminAllPrincipals),
    ("POST", "/v1/collections/{name}/reembed", AdminAllPrincipals),
    ("GET", "/v1/collections/{name}/reembed", AdminAllPrincipals),
    ("GET", "/v1/audit", AdminAllPrincipals),
    ("POST", "/v1/shares", Admin),
    ("GET", "/v1/shares", Admin),
    ("DELETE", "/v1/shares/{id}", Admin),
    ("GET", "/v1/shares/incoming", Read),
    ("POST", "/v1/shares/incoming/{id}/accept", Admin),
    ("POST", "/v1/shares/incoming/{id}/decline", Admin),
    ("GET", "/v1/admin/tenant-tree", Operator),
    ("POST", "/v1/admin/tenants", Operator),
    ("GET", "/v1/admin/tenants", Operator),
    ("GET", "/v1/admin/tenants/{id}", Operator),
    ("PATCH", "/v1/admin/tenants/{id}", Operator),
    ("DELETE", "/v1/admin/tenants/{id}", Operator),
    ("POST", "/v1/admin/tenants/{id}/suspend", Operator),
    ("POST", "/v1/admin/tenants/{id}/resume", Operator),
    ("POST", "/v1/admin/tenants/{id}/restore", Operator),
    ("GET", "/v1/admin/tenants/{id}/export", Operator),
    ("POST", "/v1/admin/tenants/{id}/import", Operator),
    ("POST", "/v1/admin/tenants/purge-deleted", Operator),
    ("GET", "/v1/admin/audit", Operator),
    ("GET", "/v1/admin/residency", Operator),
    ("GET", "/v1/admin/tenants/{id}/residency", Operator),
    ("POST", "/v1/admin/tenants/{id}/verify", Operator),
    ("POST", "/v1/admin/tenants/{id}/repair", Operator),
    ("GET", "/v1/admin/tenants/{id}/integrity", Operator),
    ("POST", "/v1/admin/tenants/{id}/migrate", Operator),
    ("GET", "/v1/admin/tenants/{id}/migration", Operator),
    ("DELETE", "/v1/admin/tenants/{id}/migration", Operator),
    ("GET", "/v1/admin/migrations", Operator),
    ("POST", "/v1/admin/backups", Operator),
    ("GET", "/v1/admin/backups/{name}", Operator),
    ("POST", "/v1/admin/keys", Operator),
    ("GET", "/v1/admin/keys", Operator),
    ("DELETE", "/v1/admin/keys/{id}", Operator),
    ("POST", "/v1/admin/keys/{id}/rotate", Operator),
    ("GET", "/v1/admin/stats", Operator),
    ("GET", "/v1/stats", AdminAllPrincipals),
    ("GET", "/metrics", Operator),
    ("GET", "/dashboard", Public),
];

/// Every route a tenant credential uses.
pub fn data_routes() -> impl Iterator<Item = (&'static str, &'static str, Perm)> {
    ROUTES
        .iter()
        .copied()
        .filter(|(_, _, p)| matches!(p, Read | Write | Admin | AdminAllPrincipals))
}

/// A concrete path for a templated one.
pub fn concrete(path: &str) -> String {
    path.replace("{id}", "a-rec").replace("{name}", "a-coll")
}

pub fn probe_body(method: &str) -> Option<Value> {
    (method != "GET" && method != "DELETE").then(|| json!({}))
}

/// A well-formed body for a route, so what fails is what the test is about.
pub fn valid_body(method: &str, path: &str) -> Option<Value> {
    match (method, path) {
        ("POST", "/v1/memories") | ("PATCH", "/v1/memories/{id}") => Some(json!({"content": "x"})),
        ("POST", "/v1/memories/delete") => Some(json!({"all": true})),
        ("POST", "/v1/search") | ("POST", "/v1/recall") => Some(json!({"query": "x"})),
        ("POST", "/v1/memories/{id}/evidence") => Some(json!({"corroborate": true})),
        ("POST", "/v1/links") | ("POST", "/v1/links/delete") => {
            Some(json!({"source": "a-rec", "target": "b-rec"}))
        }
        ("POST", "/v1/feedback") => Some(json!({"ids": ["x"]})),
        ("POST", "/v1/collections") => Some(json!({"name": "c1", "dim": 4})),
        ("POST", "/v1/collections/{name}/reembed") => Some(json!({"dry_run": true})),
        ("POST", "/v1/shares") => Some(json!({"domain": "default", "children": true})),
        (m, _) => probe_body(m),
    }
}
