//! The media type of request bodies: a route that reads a JSON body refuses a body labelled as
//! something else with `415 UNSUPPORTED_MEDIA_TYPE`, before a byte of it is read.
//!
//! Why: a body sent as `text/plain` or a form and read as JSON anyway means a client and a
//! proxy in front could disagree on what the request was. A body without any `Content-Type`
//! is still read (many clients omit it), and so is a request without a body whatever its label
//! (`curl -d ''` and Java's `HttpURLConnection` label an empty body as a form): there is
//! nothing to disagree on. Which routes read which kind of body comes from the route
//! registrations themselves (their OpenAPI request bodies). What guarantees a new route is not
//! forgotten is a test: every route taking `POST`, `PUT` or `PATCH` must declare its request
//! body or be on the list of routes without one.

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::body::HttpBody;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderMap, Method, header};
use utoipa::openapi::RefOr;

use crate::ApiError;
use crate::input::declared_length;
use crate::transfer::NDJSON;

/// What a route reads its body as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    /// One JSON document: `application/json` or `application/<anything>+json`.
    Json,
    /// JSON lines (an import): `application/x-ndjson` or another name of it
    /// ([`JSON_LINES_TYPES`]), or a JSON type.
    JsonLines,
}

/// The names JSON lines go by besides `application/x-ndjson`: JSON Lines' own, and an older one.
const JSON_LINES_TYPES: [&str; 2] = ["application/jsonl", "application/x-jsonlines"];

/// Longest part of a refused media type quoted back to the client.
const MAX_QUOTED_TYPE: usize = 64;

/// The body kinds of the routes that read a body, by route, then method: looked up by the
/// matched route's text, without copying it.
type BodyKinds = HashMap<String, Vec<(Method, BodyKind)>>;

/// Builds the table of body routes, once: `crate::router::router` calls it at start-up, so no
/// request pays for walking the OpenAPI document.
pub(crate) fn build_body_kinds() {
    body_kinds();
}

/// The body kind of every `(method, route)` that reads a body.
fn body_kinds() -> &'static BodyKinds {
    static KINDS: OnceLock<BodyKinds> = OnceLock::new();
    KINDS.get_or_init(|| {
        let mut kinds = BodyKinds::new();
        for (path, item) in &crate::router::openapi().paths.paths {
            let ops = [
                (Method::GET, &item.get),
                (Method::POST, &item.post),
                (Method::PUT, &item.put),
                (Method::PATCH, &item.patch),
                (Method::DELETE, &item.delete),
            ];
            for (method, op) in ops {
                let Some(body) = op.as_ref().and_then(|op| op.request_body.as_ref()) else {
                    continue;
                };
                let lines = matches!(body, RefOr::T(b) if b.content.contains_key(NDJSON));
                let kind = if lines {
                    BodyKind::JsonLines
                } else {
                    BodyKind::Json
                };
                kinds.entry(path.clone()).or_default().push((method, kind));
            }
        }
        kinds
    })
}

/// The refusal of a request whose route reads a JSON body but whose `Content-Type` names
/// another type; `None` for every other request (no body route, no body, no `Content-Type`,
/// JSON).
pub(crate) fn unsupported_type(req: &Request) -> Option<ApiError> {
    if !has_body(req) {
        return None;
    }
    let route = req.extensions().get::<MatchedPath>()?;
    let kind = kind_of(req.method(), route.as_str())?;
    refusal(kind, req.headers())
}

/// Whether a request carries a body: not when it declares `Content-Length: 0` or its body has
/// already ended (no `Content-Length` and no chunks).
fn has_body<B: HttpBody>(req: &axum::http::Request<B>) -> bool {
    declared_length(req.headers()) != Some(0) && !req.body().is_end_stream()
}

fn kind_of(method: &Method, route: &str) -> Option<BodyKind> {
    body_kinds()
        .get(route)?
        .iter()
        .find(|(m, _)| m == method)
        .map(|(_, kind)| *kind)
}

fn refusal(kind: BodyKind, headers: &HeaderMap) -> Option<ApiError> {
    // Every copy must be acceptable: a client and a proxy may read different ones.
    let refused = headers
        .get_all(header::CONTENT_TYPE)
        .iter()
        .find(|v| !accepted(kind, essence(v.as_bytes())))?;
    let shown: String = String::from_utf8_lossy(refused.as_bytes())
        .escape_debug()
        .take(MAX_QUOTED_TYPE)
        .collect();
    let wanted = match kind {
        BodyKind::Json => "application/json",
        BodyKind::JsonLines => "application/x-ndjson",
    };
    Some(ApiError::UnsupportedMediaType(format!(
        "Content-Type \"{shown}\": this route reads a JSON body; send it as {wanted}"
    )))
}

/// The type and subtype of a media type, without its parameters (`; charset=utf-8`).
fn essence(value: &[u8]) -> &[u8] {
    let end = value.iter().position(|b| *b == b';').unwrap_or(value.len());
    value[..end].trim_ascii()
}

fn accepted(kind: BodyKind, essence: &[u8]) -> bool {
    is_json(essence) || (kind == BodyKind::JsonLines && is_json_lines(essence))
}

fn is_json_lines(essence: &[u8]) -> bool {
    std::iter::once(NDJSON)
        .chain(JSON_LINES_TYPES)
        .any(|t| essence.eq_ignore_ascii_case(t.as_bytes()))
}

/// `application/json`, or a structured suffix `application/<something>+json`, in any case.
fn is_json(essence: &[u8]) -> bool {
    const APPLICATION: &[u8] = b"application/";
    const SUFFIX: &[u8] = b"+json";
    if essence.eq_ignore_ascii_case(b"application/json") {
        return true;
    }
    let Some(subtype) = essence
        .get(..APPLICATION.len())
        .filter(|t| t.eq_ignore_ascii_case(APPLICATION))
        .map(|_| &essence[APPLICATION.len()..])
    else {
        return false;
    };
    subtype.len() > SUFFIX.len()
        && subtype[subtype.len() - SUFFIX.len()..].eq_ignore_ascii_case(SUFFIX)
        && !subtype.contains(&b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(kind: BodyKind, types: &[&'static str]) -> Option<String> {
        let mut headers = HeaderMap::new();
        for t in types {
            headers.append(header::CONTENT_TYPE, t.parse().expect("header value"));
        }
        refusal(kind, &headers).map(|e| {
            assert_eq!(e.status_and_code().1, "UNSUPPORTED_MEDIA_TYPE");
            e.to_string()
        })
    }

    #[test]
    fn json_types_in_any_case_and_with_parameters_are_accepted() {
        for t in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            " application/json ;charset=UTF-8",
            "application/merge-patch+json",
            "application/vnd.strata+JSON; v=1",
        ] {
            assert_eq!(refused(BodyKind::Json, &[t]), None, "{t}");
            assert_eq!(refused(BodyKind::JsonLines, &[t]), None, "{t}");
        }
    }

    #[test]
    fn a_missing_type_is_accepted() {
        assert_eq!(refused(BodyKind::Json, &[]), None);
        assert_eq!(refused(BodyKind::JsonLines, &[]), None);
    }

    #[test]
    fn other_types_are_refused_naming_the_type() {
        for t in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/xml",
            "multipart/form-data; boundary=x",
            "text/json",
            "application/+json",
            "application/jsonp",
            "",
        ] {
            let message = refused(BodyKind::Json, &[t]).unwrap_or_else(|| panic!("{t}"));
            assert!(message.contains(&format!("\"{t}\"")), "{message}");
        }
        // An import's JSON lines are only for the import.
        assert!(refused(BodyKind::Json, &["application/x-ndjson"]).is_some());
        assert_eq!(
            refused(BodyKind::JsonLines, &["application/x-ndjson"]),
            None
        );
        assert!(refused(BodyKind::JsonLines, &["text/csv"]).is_some());
    }

    #[test]
    fn an_import_takes_every_name_of_json_lines() {
        for t in [
            "application/x-ndjson",
            "application/jsonl",
            "Application/JSONL; charset=utf-8",
            "application/x-jsonlines",
        ] {
            assert_eq!(refused(BodyKind::JsonLines, &[t]), None, "{t}");
            assert!(refused(BodyKind::Json, &[t]).is_some(), "{t}");
        }
    }

    fn request(headers: &[(&'static str, &'static str)], body: &'static str) -> Request {
        let mut req = Request::new(axum::body::Body::from(body));
        for (name, value) in headers {
            req.headers_mut()
                .append(*name, value.parse().expect("header value"));
        }
        req
    }

    #[test]
    fn a_request_without_a_body_has_none_to_refuse() {
        let form = ("content-type", "application/x-www-form-urlencoded");
        // `curl -X POST -d ''`: a form label on nothing.
        assert!(!has_body(&request(&[form, ("content-length", "0")], "")));
        assert!(!has_body(&request(&[form], "")));
        assert!(has_body(&request(&[form], "a=1")));
        // A declared length is trusted only when it is zero: a body may still come.
        assert!(has_body(&request(&[form, ("content-length", "3")], "a=1")));
    }

    #[test]
    fn every_copy_of_the_header_must_be_json() {
        let two = ["application/json", "text/plain"];
        assert!(refused(BodyKind::Json, &two).is_some());
    }

    /// The routes taking `POST`, `PUT` or `PATCH` whose handlers read no body: their media
    /// type is not judged, so each must truly ignore its body (no body extractor).
    const ROUTES_WITHOUT_A_BODY: &[(&str, &str)] = &[
        ("POST", "/v1/admin/tenants/{id}/restore"),
        ("POST", "/v1/admin/tenants/{id}/resume"),
        ("POST", "/v1/admin/tenants/{id}/suspend"),
        ("POST", "/v1/admin/tenants/{id}/verify"),
        ("POST", "/v1/admin/tenants/{id}/repair"),
    ];

    #[test]
    fn every_route_that_may_take_a_body_declares_whether_it_reads_one() {
        let mut wrong = Vec::new();
        for (method, path) in crate::router::served_routes() {
            if !matches!(method.as_str(), "POST" | "PUT" | "PATCH") {
                continue;
            }
            let m: Method = method.parse().expect("method");
            let declared = kind_of(&m, &path).is_some();
            let listed = ROUTES_WITHOUT_A_BODY.contains(&(method.as_str(), path.as_str()));
            if declared == listed {
                wrong.push(format!(
                    "{method} {path} (declared {declared}, listed {listed})"
                ));
            }
        }
        assert!(
            wrong.is_empty(),
            "declare each route's request body in its OpenAPI registration, or list it among \
             the routes without a body: {wrong:?}"
        );
    }

    #[test]
    fn the_body_routes_come_from_the_registrations() {
        let kind = |method: Method, path: &str| kind_of(&method, path);
        assert_eq!(kind(Method::POST, "/v1/search"), Some(BodyKind::Json));
        assert_eq!(
            kind(Method::PATCH, "/v1/memories/{id}"),
            Some(BodyKind::Json)
        );
        assert_eq!(
            kind(Method::POST, "/v1/admin/tenants/{id}/import"),
            Some(BodyKind::JsonLines)
        );
        assert_eq!(kind(Method::GET, "/v1/memories/{id}"), None);
        assert_eq!(kind(Method::GET, "/metrics"), None);
    }
}
