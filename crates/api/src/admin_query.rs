//! Admin routes refuse a query parameter they do not take, as tenant routes do
//! (`input::QueryInput`): a misspelt or misplaced parameter (`DELETE …?hrad=true`, `GET
//! /v1/admin/tenants/acme?hard=true`) silently ignored would do something else than the
//! operator asked. What each route takes is what its OpenAPI operation documents, so the
//! document and the server cannot disagree. Checked once the operator is authenticated
//! (`edge::OperatorAuth`): a request without a credential is a 401, whatever its query.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use axum::extract::MatchedPath;
use axum::http::request::Parts;
use serde_json::Value;

use crate::error::ApiError;

/// `(METHOD, route)` → the query parameters its operation documents.
type Taken = HashMap<(String, String), HashSet<String>>;

fn taken() -> &'static Taken {
    static TAKEN: OnceLock<Taken> = OnceLock::new();
    TAKEN.get_or_init(|| documented(&crate::openapi::document()))
}

fn documented(doc: &Value) -> Taken {
    let mut out = Taken::new();
    let Some(paths) = doc.get("paths").and_then(Value::as_object) else {
        return out;
    };
    for (path, item) in paths {
        let Some(item) = item.as_object() else {
            continue;
        };
        for (method, op) in item {
            let names = op
                .get("parameters")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "query")
                .filter_map(|p| p["name"].as_str().map(str::to_owned))
                .collect();
            out.insert((method.to_uppercase(), path.clone()), names);
        }
    }
    out
}

/// A request to an admin route with a query parameter the route does not take is
/// `400 BAD_REQUEST` naming it, before the handler reads anything else.
pub(crate) fn refuse_unknown_params(parts: &Parts) -> Result<(), ApiError> {
    let route = parts
        .extensions
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    if let (Some(route), Some(query)) = (route, parts.uri.query())
        && route.starts_with("/v1/admin")
        && let Some(names) = taken().get(&(parts.method.as_str().to_owned(), route.to_owned()))
        && let Some(unknown) = unknown_param(query, names)
    {
        let takes = if names.is_empty() {
            "none".to_owned()
        } else {
            let mut names: Vec<&str> = names.iter().map(String::as_str).collect();
            names.sort_unstable();
            names.join(", ")
        };
        return Err(ApiError::BadRequest(format!(
            "unknown query parameter {unknown} ({} {route} takes: {takes})",
            parts.method
        )));
    }
    Ok(())
}

/// The first parameter of `query` not in `names`. A query that does not parse is left to the
/// handler, whose own parsing names the fault.
fn unknown_param(query: &str, names: &HashSet<String>) -> Option<String> {
    let uri: axum::http::Uri = format!("/?{query}").parse().ok()?;
    let axum::extract::Query(pairs) =
        axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&uri).ok()?;
    pairs
        .into_iter()
        .map(|(k, _)| k)
        .find(|k| !names.contains(k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_admin_route_takes_what_it_documents() {
        let taken = taken();
        let get = |m: &str, p: &str| taken.get(&(m.to_owned(), p.to_owned())).unwrap();
        assert!(get("DELETE", "/v1/admin/tenants/{id}").contains("hard"));
        assert!(get("GET", "/v1/admin/tenants/{id}").is_empty());
        let names = get("GET", "/v1/admin/tenants/{id}");
        assert_eq!(unknown_param("hard=true", names).as_deref(), Some("hard"));
        let names = get("DELETE", "/v1/admin/tenants/{id}");
        assert_eq!(unknown_param("hard=true", names), None);
        assert_eq!(unknown_param("hrad=true", names).as_deref(), Some("hrad"));
        // Percent-encoded names are read decoded.
        assert_eq!(unknown_param("h%61rd=true", names), None);
    }
}
