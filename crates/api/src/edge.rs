//! Authentication at the edge: extractors that turn the `Authorization` header into a tenant
//! or operator handle, and enforce that the tenant comes from the credential alone.
//!
//! The handles leave here carrying the request's [`RequestContext`] (request id and client
//! address), so the audit rows the engine writes say where a request came from; and the
//! extractors note who the credential is in the request's [`WhoSlot`], so the security-audit
//! middleware (`security.rs`) can attribute a refusal that happens later.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{Extensions, HeaderMap, HeaderValue};
use strata_auth::{AuthError, OperatorScope, Principal, RequestContext, TenantScope};
use strata_types::{Domain, TenantId};

use crate::admission::Admitted;
use crate::credential_check::Credential;
use crate::{ApiError, AppState};

/// The request id header the router assigns (or keeps from the client).
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// A fresh request id (a UUIDv7, so ids sort by time), for requests that arrive without one
/// and for refusals written before a request reaches the router.
pub(crate) fn new_request_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Longest request id a client may choose (the OpenAPI document says the same).
pub(crate) const MAX_REQUEST_ID: usize = 200;
/// The pattern of a client's request id in the OpenAPI document: what [`usable_request_id`]
/// accepts, 1 to [`MAX_REQUEST_ID`] visible ASCII characters.
pub(crate) const REQUEST_ID_PATTERN: &str = "^[!-~]{1,200}$";

/// Whether a client's request id can be kept: 1 to [`MAX_REQUEST_ID`] visible ASCII
/// characters. Anything else (empty, too long, spaces, bytes outside ASCII) could not be
/// echoed, logged and recorded as the same text, so it is replaced, never refused: a request
/// id is advisory.
pub(crate) fn usable_request_id(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    (1..=MAX_REQUEST_ID).contains(&bytes.len()) && bytes.iter().all(u8::is_ascii_graphic)
}

/// Keeps a client's request id only if it is usable, and only its first copy; otherwise
/// removes it, so the router makes one exactly as for a request that sent none. Runs before
/// anything reads the id, so the echoed header, the log lines and the audit row agree.
pub(crate) async fn keep_usable_request_id(
    mut req: axum::extract::Request,
) -> axum::extract::Request {
    let headers = req.headers_mut();
    let first = headers.get(REQUEST_ID_HEADER).cloned();
    headers.remove(REQUEST_ID_HEADER);
    if let Some(id) = first.filter(usable_request_id) {
        headers.insert(REQUEST_ID_HEADER, id);
    }
    req
}

/// Who a request's credential is, as far as the edge learned it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Who {
    /// The credential's tenant; `None` for operators and refused credentials.
    pub tenant: Option<TenantId>,
    /// The credential's tenant incarnation, which per-tenant metrics are keyed by.
    pub tenant_key: Option<strata_store::TenantKey>,
    /// Key id (`key:<id>`), JWT subject (`jwt:<sub>`), or `anonymous`.
    pub actor: String,
    /// Why a credential was refused (the authenticator's log-only reason).
    pub reason: Option<std::borrow::Cow<'static, str>>,
    /// The key id a refused token claims, if it is shaped like an API key.
    pub claimed_key: Option<String>,
}

/// Per-request slot the extractors fill with [`Who`]; the middleware reads it afterwards.
pub(crate) type WhoSlot = Arc<Mutex<Option<Who>>>;

fn note(extensions: &Extensions, who: Who) {
    if let Some(slot) = extensions.get::<WhoSlot>()
        && let Ok(mut guard) = slot.lock()
    {
        *guard = Some(who);
    }
}

/// Where a request came from: the router's request id and the peer address. The address is
/// the TCP peer; a proxy's `X-Forwarded-For` is not trusted, since any client can send one.
pub(crate) fn request_context(headers: &HeaderMap, extensions: &Extensions) -> RequestContext {
    let request_id = headers
        .get(REQUEST_ID_HEADER)
        .filter(|v| usable_request_id(v))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // In-process tests serve without connection info; their rows simply have no client.
    let client = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.to_string());
    RequestContext { request_id, client }
}

/// The key id of a token shaped like an API key (`sk_<16 hex>_<64 hex>`). The id is not
/// secret (it names the stored row), so it may be logged; the rest of the token never is.
fn claimed_key_id(token: &str) -> Option<String> {
    let rest = token.strip_prefix(strata_auth::KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let ok = id.len() == 16
        && secret.len() == 64
        && id
            .bytes()
            .chain(secret.bytes())
            .all(|b| b.is_ascii_hexdigit());
    ok.then(|| id.to_owned())
}

/// Header naming the domain of a request (docs/isolation.md).
pub const DOMAIN_HEADER: &str = "x-strata-domain";
/// Header some clients send to name a tenant. Only checked, never trusted.
pub const TENANT_HEADER: &str = "x-tenant-id";

/// A request authenticated with a tenant credential.
pub struct TenantAuth {
    pub scope: TenantScope,
    /// The domain from `X-Strata-Domain`, if sent.
    pub header_domain: Option<Domain>,
    /// Admission: the tenant's pool share and, while the request lives, its in-flight slot.
    pub admitted: Admitted,
    /// Most user tokens the request may name (`engine.limits.max_user_tokens`).
    pub max_user_tokens: usize,
    /// Checked again before each further step of a request that runs in steps.
    pub(crate) credential: Credential,
}

impl TenantAuth {
    /// What a stepped request runs before each of its steps after the first
    /// (`crate::scan_steps::run_in_steps`): its credential checked again.
    pub(crate) fn recheck(&self) -> impl Fn(&AppState) -> Result<(), ApiError> + use<> {
        let (credential, scope) = (self.credential.clone(), self.scope.clone());
        move |state| credential.check(state, &scope)
    }
}

/// A request authenticated with an operator credential.
pub struct OperatorAuth(pub OperatorScope);

/// The one value of a header that may be given at most once. A repeated one is refused, not
/// resolved: a proxy in front may read the other copy than we would, and a request that says
/// two things is refused rather than guessed at (as a query parameter given twice is).
pub(crate) fn single_header<'a>(
    headers: &'a HeaderMap,
    name: &str,
    label: &str,
) -> Result<Option<&'a HeaderValue>, ApiError> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(ApiError::BadRequest(format!(
            "header {label}: given more than once"
        )));
    }
    Ok(first)
}

pub(crate) fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let value = single_header(
        headers,
        axum::http::header::AUTHORIZATION.as_str(),
        "Authorization",
    )?
    .ok_or(ApiError::Unauthorized)?
    .to_str()
    .map_err(|_| ApiError::Unauthorized)?;
    let (scheme, token) = value.split_once(' ').ok_or(ApiError::Unauthorized)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::Unauthorized);
    }
    Ok(token.trim())
}

pub(crate) async fn principal(parts: &Parts, state: &AppState) -> Result<Principal, ApiError> {
    let token = match bearer(&parts.headers) {
        Ok(t) => t.to_owned(),
        Err(e) => {
            note(
                &parts.extensions,
                Who {
                    actor: "anonymous".into(),
                    reason: Some("missing or malformed authorization header".into()),
                    ..Who::default()
                },
            );
            return Err(e);
        }
    };
    let claimed_key = claimed_key_id(&token);
    // Inline, not on a blocking pool: a key check is one read of memory-mapped storage and a
    // SHA-256 (microseconds), and a shared pool queue here would let a flooding tenant's
    // authentications delay everyone else's before fair scheduling can apply.
    let result = state.auth.authenticate(state.engine.credentials(), &token);
    let context = request_context(&parts.headers, &parts.extensions);
    if result.is_ok() {
        // Stage timings are answered only to a caller whose credential was accepted.
        crate::timing::authenticated();
    }
    match result {
        Ok(Principal::Tenant(scope)) => {
            note(
                &parts.extensions,
                Who {
                    tenant: Some(scope.tenant().clone()),
                    tenant_key: Some(scope.key()),
                    actor: scope.actor().to_owned(),
                    ..Who::default()
                },
            );
            Ok(Principal::Tenant(scope.with_context(context)))
        }
        Ok(Principal::Operator(op)) => {
            note(
                &parts.extensions,
                Who {
                    actor: op.actor().to_owned(),
                    ..Who::default()
                },
            );
            Ok(Principal::Operator(op.with_context(context)))
        }
        Err(e) => {
            let reason = match &e {
                AuthError::Unauthorized(r) => Some(r.clone()),
                _ => None,
            };
            note(
                &parts.extensions,
                Who {
                    actor: claimed_key
                        .as_ref()
                        .map_or_else(|| "anonymous".to_owned(), |id| format!("key:{id}")),
                    reason,
                    claimed_key,
                    ..Who::default()
                },
            );
            Err(e.into())
        }
    }
}

/// Refuses a request that names a tenant other than its credential's: a security event, which
/// the security-audit middleware records and logs (a client doing this is misconfigured or
/// probing). The claimed name is left out of both: it is the client's text, of any length.
pub(crate) fn check_tenant(
    scope: &TenantScope,
    claimed: &str,
    source: &str,
) -> Result<(), ApiError> {
    check_tenant_id(scope.tenant(), claimed, source)
}

/// [`check_tenant`] against a credential's tenant id.
pub(crate) fn check_tenant_id(
    tenant: &TenantId,
    claimed: &str,
    source: &str,
) -> Result<(), ApiError> {
    if claimed == tenant.as_str() {
        return Ok(());
    }
    Err(ApiError::TenantMismatch(format!(
        "{source} names a tenant other than the credential's"
    )))
}

impl FromRequestParts<AppState> for TenantAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let scope = match principal(parts, state).await? {
            Principal::Tenant(scope) => scope,
            Principal::Operator(_) => {
                return Err(ApiError::Forbidden(
                    "an operator credential has no tenant; use a tenant's key for data routes"
                        .into(),
                ));
            }
        };
        tracing::Span::current().record("tenant", scope.tenant().as_str());
        // Every copy of the tenant header is checked against the credential first, so a
        // mismatch is a security event whichever copy carries it; only then is a repeat refused.
        for v in parts.headers.get_all(TENANT_HEADER) {
            check_tenant(
                &scope,
                v.to_str().unwrap_or("\u{fffd}"),
                "header X-Tenant-ID",
            )?;
        }
        single_header(&parts.headers, TENANT_HEADER, "X-Tenant-ID")?;
        crate::idempotency::refuse_unkept(parts)?;
        let header_domain = match single_header(&parts.headers, DOMAIN_HEADER, "X-Strata-Domain")? {
            None => None,
            Some(v) => {
                let s = v.to_str().map_err(|_| {
                    ApiError::BadRequest("memory_domain: X-Strata-Domain is not ASCII".into())
                })?;
                Some(Domain::parse(s).map_err(|e| ApiError::BadRequest(e.to_string()))?)
            }
        };
        // The connection counts against its tenant's share of the server's connections
        // (absent when the router is called without the server, as in unit tests).
        let conn = parts
            .extensions
            .get::<std::sync::Arc<crate::tenant_connections::ConnectionTenant>>()
            .cloned();
        if let Some(conn) = &conn {
            conn.bind(scope.key()).map_err(|o| {
                ApiError::ConcurrencyLimited(format!(
                    "this tenant holds {} open connections, its limit \
                     (server.max_connections_per_tenant is {}); reuse them",
                    o.open, o.max
                ))
            })?;
        }
        // After the tenant checks, so a mismatched or malformed request costs no tokens.
        let admitted = state.admit(&scope)?;
        crate::timing::mark(crate::timing::Stage::Admitted);
        if let Some(conn) = &conn {
            // The connection's next request runs where this tenant's requests run now.
            conn.follow(admitted.over_share());
        }
        // Its body, if it has one, is counted against the tenant's share of body memory for as
        // long as the admission lives (the whole handler).
        parts.extensions.insert(crate::tenant_bodies::BodyTenant {
            tenant: scope.tenant().clone(),
            key: scope.key(),
            slot: std::sync::Arc::clone(&admitted.body),
        });
        // Its body is parsed in the tenant's share of the pool (`crate::json_body::JsonBody`).
        parts.extensions.insert(admitted.share.clone());
        // `principal` accepted this header's token.
        let credential = Credential::new(bearer(&parts.headers)?);
        Ok(TenantAuth {
            scope,
            header_domain,
            admitted,
            max_user_tokens: state.engine.config().limits.max_user_tokens,
            credential,
        })
    }
}

impl FromRequestParts<AppState> for OperatorAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match principal(parts, state).await? {
            Principal::Operator(op) => {
                tracing::Span::current().record("tenant", "*");
                crate::idempotency::refuse_unkept(parts)?;
                crate::admin_query::refuse_unknown_params(parts)?;
                Ok(OperatorAuth(op))
            }
            // Audited and logged by the security middleware, within the tenant's bounds, as
            // every `FORBIDDEN` is.
            Principal::Tenant(_) => Err(ApiError::Forbidden(
                "this route needs an operator credential".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::header::AUTHORIZATION;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn refusal<T: std::fmt::Debug>(r: Result<T, ApiError>) -> (&'static str, String) {
        let e = r.unwrap_err();
        (e.status_and_code().1, e.to_string())
    }

    #[test]
    fn a_request_id_is_usable_only_as_1_to_200_visible_ascii_characters() {
        let usable = |b: &[u8]| usable_request_id(&HeaderValue::from_bytes(b).expect("value"));
        assert!(usable(b"a"));
        assert!(usable(b"ops-ticket-42:{x}~"));
        assert!(usable("r".repeat(MAX_REQUEST_ID).as_bytes()));
        assert!(!usable("r".repeat(MAX_REQUEST_ID + 1).as_bytes()));
        assert!(!usable(b""));
        assert!(!usable(b"two words"));
        assert!(!usable(b"tab\there"));
        assert!(!usable("caf\u{e9}-r1".as_bytes()));
        // The document's pattern states the same bound.
        assert!(REQUEST_ID_PATTERN.contains(&format!("{{1,{MAX_REQUEST_ID}}}")));
    }

    #[tokio::test]
    async fn an_unusable_request_id_is_removed_and_a_usable_one_kept_once() {
        let with = |values: &[&[u8]]| {
            let mut req = axum::extract::Request::new(axum::body::Body::empty());
            for v in values {
                req.headers_mut().append(
                    REQUEST_ID_HEADER,
                    HeaderValue::from_bytes(v).expect("value"),
                );
            }
            req
        };
        let ids = |req: &axum::extract::Request| -> Vec<Vec<u8>> {
            req.headers()
                .get_all(REQUEST_ID_HEADER)
                .iter()
                .map(|v| v.as_bytes().to_vec())
                .collect()
        };
        let kept = keep_usable_request_id(with(&[b"trace-1", b"trace-2"])).await;
        assert_eq!(ids(&kept), vec![b"trace-1".to_vec()]);
        for bad in [&b""[..], b"a b", "caf\u{e9}".as_bytes()] {
            let gone = keep_usable_request_id(with(&[bad, b"trace-2"])).await;
            assert!(ids(&gone).is_empty(), "{bad:?}");
        }
        assert!(ids(&keep_usable_request_id(with(&[])).await).is_empty());
    }

    #[test]
    fn a_repeated_authorization_header_is_refused_naming_it() {
        let one = headers(&[("authorization", "Bearer abc")]);
        assert_eq!(bearer(&one).unwrap(), "abc");
        for pair in [
            [
                ("authorization", "Bearer abc"),
                ("authorization", "Bearer def"),
            ],
            [
                ("authorization", "Bearer abc"),
                ("authorization", "Bearer abc"),
            ],
        ] {
            let (code, message) = refusal(bearer(&headers(&pair)));
            assert_eq!(code, "BAD_REQUEST");
            assert!(message.contains("Authorization"), "{message}");
        }
        assert_eq!(refusal(bearer(&HeaderMap::new())).0, "UNAUTHORIZED");
        assert_eq!(AUTHORIZATION.as_str(), "authorization");
    }

    #[test]
    fn single_header_takes_one_value_and_refuses_two() {
        let h = headers(&[(DOMAIN_HEADER, "a"), (TENANT_HEADER, "t")]);
        assert_eq!(
            single_header(&h, DOMAIN_HEADER, "X-Strata-Domain").unwrap(),
            Some(&HeaderValue::from_static("a"))
        );
        assert_eq!(single_header(&h, "x-other", "X-Other").unwrap(), None);
        let h = headers(&[(DOMAIN_HEADER, "a"), (DOMAIN_HEADER, "b")]);
        let (code, message) = refusal(single_header(&h, DOMAIN_HEADER, "X-Strata-Domain"));
        assert_eq!(code, "BAD_REQUEST");
        assert!(message.contains("X-Strata-Domain"), "{message}");
    }
}
