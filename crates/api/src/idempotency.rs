//! The `Idempotency-Key` request header of writes (`POST /v1/memories`): a client that names
//! a write may retry it after a lost answer and gets the first answer back, marked with
//! `Idempotent-Replayed: true`, instead of a second write. The engine keeps the answer in the
//! write's own transaction (`strata_engine::Idempotency`).
//!
//! No other route keeps answers, so every other write refuses the header
//! ([`refuse_where_unkept`]): a client that sends it there expects a retry to apply once, and
//! a second share, feedback or evidence row it did not ask for is worse than a clear `400`.

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use strata_engine::Idempotency;

use crate::ApiError;
use crate::edge::TenantAuth;

pub(crate) const HEADER: &str = "idempotency-key";
const REPLAYED: &str = "idempotent-replayed";
/// A key as the engine accepts it (1 to 255 visible ASCII characters), for the OpenAPI
/// document.
pub(crate) const KEY_PATTERN: &str = "^[!-~]{1,255}$";

/// The request's `Idempotency-Key`, if it has one. Two copies are refused, even equal ones: a
/// proxy in front may read the other copy than we would, so the write could be applied twice.
fn key_of(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = crate::edge::single_header(headers, HEADER, "Idempotency-Key")? else {
        return Ok(None);
    };
    value.to_str().map(Some).map_err(|_| {
        ApiError::BadRequest("Idempotency-Key: expected visible ASCII characters".into())
    })
}

/// What a keyed request's fingerprint is made of besides its body, read from its headers and
/// credential: the body is hashed later, where it is converted (`Fingerprint::of_body`), off
/// the async threads for a large one.
pub(crate) struct Fingerprint {
    key: String,
    /// The credential's grant, which keys are kept per.
    grant: String,
    /// The hash of everything but the body.
    head: Sha256,
}

/// What a grant entitles, as text that two equal grants share whatever order their lists were
/// given in: a JWT refreshed with the same claims in another order is the same caller, and its
/// retry must find the key its first try stored.
fn canonical_grant(grant: &strata_auth::Grant) -> String {
    fn set<T: AsRef<str>>(list: Option<&Vec<T>>) -> Option<Vec<&str>> {
        list.map(|items| {
            let mut names: Vec<&str> = items.iter().map(AsRef::as_ref).collect();
            names.sort_unstable();
            names.dedup();
            names
        })
    }
    format!(
        "{:?} {:?} {:?}",
        grant.permissions,
        set(grant.user_tokens.as_ref()),
        set(grant.domains.as_ref())
    )
}

impl Fingerprint {
    /// The request's key with what its fingerprint covers besides the body: its route and
    /// query, the credential's grant and the domain header — so a retry matches only the same
    /// request from an equally entitled caller. `None` without the header.
    pub(crate) fn of_request(
        headers: &HeaderMap,
        auth: &TenantAuth,
        route: &str,
        query: Option<&str>,
    ) -> Result<Option<Fingerprint>, ApiError> {
        let Some(key) = key_of(headers)? else {
            return Ok(None);
        };
        // A malformed key is an error here; the write refuses it after its body's tenant
        // check (`JsonBody`'s order), so a body naming another tenant is still that event.
        Idempotency::new(key, String::new())?;
        let grant = canonical_grant(auth.scope.grant());
        let mut head = Sha256::new();
        for part in [route, query.unwrap_or(""), &grant] {
            head.update(part.as_bytes());
            head.update([0]);
        }
        if let Some(domain) = &auth.header_domain {
            head.update(domain.as_str().as_bytes());
        }
        head.update([0]);
        Ok(Some(Fingerprint {
            key: key.to_owned(),
            grant,
            head,
        }))
    }

    /// The request's key with the fingerprint of what it asks, its body included.
    pub(crate) fn of_body(self, body: &Map<String, Value>) -> Result<Idempotency, ApiError> {
        // Keys are kept per grant: another principal's use of a key neither shows nor blocks.
        let namespace = Sha256::digest(self.grant.as_bytes())
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect::<String>();
        let mut hash = self.head;
        // `Map` keeps keys sorted, so equal bodies serialise to equal bytes.
        let body = serde_json::to_vec(body).map_err(|e| ApiError::Internal(e.to_string()))?;
        hash.update(&body);
        let fingerprint = hash
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>();
        Ok(Idempotency::new(&self.key, fingerprint)?.among(&namespace))
    }
}

/// The one route that keeps answers by `Idempotency-Key`.
const KEPT_ON: (&str, &str) = ("POST", "/v1/memories");

/// `POST` routes that only read (their body is a query): a retry is harmless.
const POSTED_READS: [&str; 5] = [
    "/v1/search",
    "/v1/recall",
    "/v1/memories/count",
    "/v1/memories/list",
    "/v1/admin/tenants/{id}/verify",
];

/// Why a request's `Idempotency-Key` is refused on its route, set by [`refuse_where_unkept`]
/// and answered by the authentication extractors once the credential is known
/// ([`refuse_unkept`]): a request without a valid credential is a `401` and one naming another
/// tenant a `403`, whatever its headers, as on every route.
#[derive(Clone)]
pub(crate) struct UnkeptKey(String);

/// The `400` for an `Idempotency-Key` on a route that keeps no answers, if the request has one.
pub(crate) fn refuse_unkept(parts: &axum::http::request::Parts) -> Result<(), ApiError> {
    match parts.extensions.get::<UnkeptKey>() {
        Some(UnkeptKey(message)) => Err(ApiError::BadRequest(message.clone())),
        None => Ok(()),
    }
}

/// Middleware: a write to any other route than [`KEPT_ON`] that carries an `Idempotency-Key`
/// is marked to be refused once its credential is checked, before its body is read or
/// anything is written: the route would apply a retry again, not answer it. Reads,
/// [`POSTED_READS`] too, are let through (a retried read is harmless).
pub(crate) async fn refuse_where_unkept(
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let method = req.method();
    let writes = !(method == axum::http::Method::GET
        || method == axum::http::Method::HEAD
        || method == axum::http::Method::OPTIONS);
    if writes && req.headers().contains_key(HEADER) {
        let route = req
            .extensions()
            .get::<axum::extract::MatchedPath>()
            .map(|p| p.as_str().to_owned());
        // An unknown route, or a method the route does not serve, answers 404 or 405 as it
        // would without the header.
        if let Some(route) = route
            && served(method.as_str(), &route)
            && (method.as_str(), route.as_str()) != KEPT_ON
            && !(method == axum::http::Method::POST && POSTED_READS.contains(&route.as_str()))
        {
            let message = format!(
                "Idempotency-Key: only {} {} keeps answers to replay; {} {route} would apply a \
                 retry again, so send it without the header",
                KEPT_ON.0, KEPT_ON.1, method
            );
            req.extensions_mut().insert(UnkeptKey(message));
        }
    }
    next.run(req).await
}

/// Whether the router serves `method` on `route` (a matched path).
fn served(method: &str, route: &str) -> bool {
    static SERVED: std::sync::OnceLock<std::collections::HashSet<(String, String)>> =
        std::sync::OnceLock::new();
    SERVED
        .get_or_init(|| crate::router::served_routes().into_iter().collect())
        .contains(&(method.to_owned(), route.to_owned()))
}

/// The kept answer of an earlier request with the same key, as it was, marked as replayed.
pub(crate) fn replay(status: u16, answer: Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let mut response = (status, Json(answer)).into_response();
    response
        .headers_mut()
        .insert(REPLAYED, HeaderValue::from_static("true"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A grant's lists are sets: the same claims in another order (a refreshed JWT) keep the
    /// namespace its keys are stored under; another set does not.
    #[test]
    fn equal_grants_share_a_namespace_whatever_their_lists_order() {
        use strata_auth::{Grant, Permission, Permissions};
        use strata_types::{Domain, UserToken};
        let grant = |tokens: &[&str], domains: &[&str]| Grant {
            permissions: Permissions::of(&[Permission::Read, Permission::Write]),
            user_tokens: Some(
                tokens
                    .iter()
                    .map(|t| UserToken::parse(t).unwrap())
                    .collect(),
            ),
            domains: Some(domains.iter().map(|d| Domain::parse(d).unwrap()).collect()),
        };
        let first = canonical_grant(&grant(&["u:a", "u:b"], &["x", "y"]));
        assert_eq!(
            first,
            canonical_grant(&grant(&["u:b", "u:a"], &["y", "x", "y"]))
        );
        assert_ne!(first, canonical_grant(&grant(&["u:a"], &["x", "y"])));
        assert_ne!(first, canonical_grant(&grant(&["u:a", "u:b"], &["x"])));
        let unbound = Grant {
            user_tokens: None,
            ..grant(&[], &["x", "y"])
        };
        assert_ne!(
            canonical_grant(&unbound),
            canonical_grant(&grant(&[], &["x", "y"]))
        );
    }

    #[test]
    fn the_routes_named_here_are_served() {
        let served = crate::router::served_routes();
        let has = |m: &str, p: &str| served.iter().any(|(sm, sp)| sm == m && sp == p);
        assert!(has(KEPT_ON.0, KEPT_ON.1));
        for path in POSTED_READS {
            assert!(has("POST", path), "{path}");
        }
    }

    #[test]
    fn a_repeated_idempotency_key_is_refused() {
        let mut headers = HeaderMap::new();
        assert_eq!(key_of(&headers).expect("none"), None);
        headers.append(HEADER, HeaderValue::from_static("k1"));
        assert_eq!(key_of(&headers).expect("one"), Some("k1"));
        // Even the same key twice: the request is refused, not resolved to either copy.
        headers.append(HEADER, HeaderValue::from_static("k1"));
        match key_of(&headers) {
            Err(ApiError::BadRequest(m)) => {
                assert_eq!(m, "header Idempotency-Key: given more than once");
            }
            other => panic!("expected a 400, got {other:?}"),
        }
    }
}
