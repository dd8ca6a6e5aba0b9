//! The authenticator: a bearer token in, a [`Principal`] out. It is the only production code
//! that constructs a [`TenantScope`] or an [`OperatorScope`].

use serde::{Deserialize, Serialize};
use strata_store::{CredentialStore, TenantKey};
use strata_types::{Domain, Millis, RecordLimits, TenantId, UserToken, forges_text, now_millis};

use crate::jwt::{JwtVerifier, looks_like_jwt};
use crate::keys::{self, CreatedKey, KeyAudit, KeyInfo, KeyTenant, NewKey, ct_eq, hash_token};
use crate::{AuthError, Grant, OperatorScope, Permission, Permissions, TenantScope};

/// Shortest operator key accepted from the environment, so a typo like `STRATA_OPERATOR_KEY=1`
/// cannot leave a fleet guarded by a guessable secret.
const MIN_ENV_OPERATOR_KEY: usize = 24;

/// Longest JWT `sub` accepted, in bytes.
const MAX_JWT_SUBJECT: usize = 256;

/// Most domains a key or a JWT may be bound to, as many as user tokens by default: a longer
/// list only makes every request's check longer, and a credential that needs more domains
/// than that is better left unbound (a binding names domains exactly; it covers no others).
pub const MAX_BOUND_DOMAINS: usize = 32;

/// Why a credential's bound list (`field`) is refused: more than `max` entries (the limit
/// named `limit`), or an entry listed twice, which an issuer or operator did not mean.
fn binding_problem<T: AsRef<str>>(
    field: &str,
    list: Option<&[T]>,
    max: usize,
    limit: &str,
) -> Option<String> {
    let list = list?;
    let field_noun = if field == "domains" {
        "domains"
    } else {
        "tokens"
    };
    if list.len() > max {
        return Some(format!(
            "{field}: {} {field_noun}, at most {max} ({limit})",
            list.len()
        ));
    }
    let mut seen = std::collections::HashSet::new();
    list.iter()
        .map(AsRef::as_ref)
        .find(|x| !seen.insert(*x))
        // Cut: a JWT's entries are not yet validated names, of any length.
        .map(|x| {
            let x: String = x.chars().take(64).collect();
            format!("{field}: {x:?} is listed more than once")
        })
}

/// Authentication settings (the `[auth]` section of the server config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Shared secret for HS256 JWTs (at least 32 bytes). Unset: HS256 tokens are refused.
    pub jwt_hs256_secret: Option<String>,
    /// Ed25519 public key in PEM for EdDSA JWTs. Unset: EdDSA tokens are refused.
    pub jwt_eddsa_public_key: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub jwt_leeway_secs: u64,
    /// When set, tokens must carry this `iss`.
    pub jwt_issuer: Option<String>,
    /// When set, tokens must carry this `aud`.
    pub jwt_audience: Option<String>,
}

impl AuthConfig {
    /// Whether the server verifies JWTs: a key for either algorithm is configured.
    pub fn verifies_jwts(&self) -> bool {
        self.jwt_hs256_secret.is_some() || self.jwt_eddsa_public_key.is_some()
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            jwt_hs256_secret: None,
            jwt_eddsa_public_key: None,
            jwt_leeway_secs: 5,
            jwt_issuer: None,
            jwt_audience: None,
        }
    }
}

/// Who a request is.
#[derive(Debug, Clone)]
pub enum Principal {
    /// A tenant's credential: may touch that tenant's data, within its grant.
    Tenant(TenantScope),
    /// An operator credential (tenant `*`, `admin`): may use the admin API.
    Operator(OperatorScope),
}

/// Verifies bearer tokens: API keys against the store, JWTs against configured keys.
pub struct Authenticator {
    jwt: JwtVerifier,
    /// SHA-256 of `STRATA_OPERATOR_KEY`, when the operator key comes from the environment.
    env_operator: Option<[u8; 32]>,
    /// Most user tokens a credential may be bound to: the records' and requests' limit
    /// (`engine.limits.max_user_tokens`), since a bound credential's tokens are its requests'.
    max_user_tokens: usize,
}

impl Authenticator {
    /// `env_operator_key` is the operator key taken from the environment, if any.
    pub fn new(config: &AuthConfig, env_operator_key: Option<&str>) -> Result<Self, AuthError> {
        let env_operator = match env_operator_key {
            Some(k) if k.len() < MIN_ENV_OPERATOR_KEY || k.chars().any(char::is_whitespace) => {
                return Err(AuthError::Config(format!(
                    "the operator key from the environment needs at least {MIN_ENV_OPERATOR_KEY} characters and no whitespace"
                )));
            }
            Some(k) => Some(hash_token(k)),
            None => None,
        };
        Ok(Authenticator {
            jwt: JwtVerifier::new(config)?,
            env_operator,
            max_user_tokens: RecordLimits::default().max_user_tokens,
        })
    }

    /// The most user tokens a key or a JWT may be bound to (by default the records' default
    /// limit). A key binding more is refused at creation; a JWT binding more is refused.
    pub fn with_max_user_tokens(mut self, max: usize) -> Self {
        self.max_user_tokens = max;
        self
    }

    /// Prepares the credentials at start: gives key rows from older versions the tenant
    /// incarnation they belong to, then creates the operator key on first start, when none is
    /// stored and none came from the environment. Returns the new key, which the caller shows
    /// once; `None` when nothing was created.
    pub fn bootstrap_operator(
        &self,
        creds: CredentialStore<'_>,
    ) -> Result<Option<CreatedKey>, AuthError> {
        keys::upgrade_legacy(creds)?;
        // Asked even with an operator key from the environment: the first ask builds the
        // credentials' owner index of an older data directory, which tenant erasure relies on.
        let stored = keys::has_operator_key(creds)?;
        if self.env_operator.is_some() || stored {
            return Ok(None);
        }
        let new = NewKey {
            tenant: KeyTenant::Operator,
            name: Some("operator (created at first start)".into()),
            permissions: Permissions::of(&[
                Permission::Read,
                Permission::Write,
                Permission::Admin,
                Permission::AllPrincipals,
            ]),
            user_tokens: None,
            domains: None,
            expires_at: None,
        };
        // No audit row: no operator acted (the server's own start, before any operator
        // exists), and the start is in the server's log.
        keys::create_unchecked(creds, new, &|_, _, _, _| Ok(())).map(Some)
    }

    /// An operator scope for the server's own scheduled work (the retention sweep), which runs
    /// without a request and so without a credential. `job` is a fixed name, never request
    /// data, and becomes the actor (`system:<job>`) of the audit rows the work writes.
    pub fn system_operator(&self, job: &'static str) -> OperatorScope {
        OperatorScope::new(format!("system:{job}"))
    }

    /// Verifies a bearer token (the part after `Bearer `).
    pub fn authenticate(
        &self,
        creds: CredentialStore<'_>,
        token: &str,
    ) -> Result<Principal, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Unauthorized("empty bearer token".into()));
        }
        if let Some(expected) = &self.env_operator
            && ct_eq(&hash_token(token), expected)
        {
            return Ok(Principal::Operator(OperatorScope::new(
                "operator:env".into(),
            )));
        }
        if looks_like_jwt(token) {
            return self.authenticate_jwt(creds, token);
        }
        let (info, owner) = keys::verify(creds, token, now_millis())?;
        let actor = format!("key:{}", info.id);
        match &info.tenant {
            KeyTenant::Operator if info.permissions.has(Permission::Admin) => {
                Ok(Principal::Operator(OperatorScope::new(actor)))
            }
            KeyTenant::Operator => {
                Err(AuthError::Unauthorized("operator key without admin".into()))
            }
            KeyTenant::Tenant(t) => {
                tenant_scope(creds, t, Incarnation::Key(owner), info.grant(), actor)
            }
        }
    }

    fn authenticate_jwt(
        &self,
        creds: CredentialStore<'_>,
        token: &str,
    ) -> Result<Principal, AuthError> {
        if !self.jwt.enabled() {
            return Err(AuthError::Unauthorized("no jwt keys configured".into()));
        }
        let claims = self.jwt.verify(token)?;
        let permissions = claims.permissions.unwrap_or_else(Permissions::read_write);
        // The subject becomes the actor of every audit row and log line the token causes: a
        // long or multi-line one would bloat them or forge lines, so it is a bad credential.
        if let Some(sub) = &claims.sub
            && (sub.len() > MAX_JWT_SUBJECT || sub.chars().any(forges_text))
        {
            return Err(AuthError::Unauthorized(
                "jwt sub is too long or has control characters".into(),
            ));
        }
        let actor = format!("jwt:{}", claims.sub.as_deref().unwrap_or("-"));
        // Claims come from a trusted issuer but are still names from outside: parse them, and
        // treat a bad one as a bad credential rather than a bad request.
        let bad = |_| AuthError::Unauthorized("jwt claim is not a valid name".into());
        // Checked before parsing: the token's own size is the only other bound on the lists.
        // (A repeated name that is not a valid one is refused as invalid by the parse.)
        let max_user_tokens = self.max_user_tokens;
        if let Some(why) = binding_problem(
            "user_tokens",
            claims.user_tokens.as_deref(),
            max_user_tokens,
            "engine.limits.max_user_tokens",
        )
        .or_else(|| {
            binding_problem(
                "domains",
                claims.domains.as_deref(),
                MAX_BOUND_DOMAINS,
                "the most domains a credential binds",
            )
        }) {
            return Err(AuthError::Unauthorized(format!("jwt {why}").into()));
        }
        let user_tokens = claims
            .user_tokens
            .map(|v| v.into_iter().map(UserToken::parse).collect())
            .transpose()
            .map_err(bad)?;
        let domains = claims
            .domains
            .map(|v| v.into_iter().map(Domain::parse).collect())
            .transpose()
            .map_err(bad)?;
        if claims.tenant == "*" {
            return if permissions.has(Permission::Admin) {
                Ok(Principal::Operator(OperatorScope::new(actor)))
            } else {
                Err(AuthError::Unauthorized("operator jwt without admin".into()))
            };
        }
        let tenant = TenantId::parse(claims.tenant).map_err(bad)?;
        let grant = Grant {
            permissions,
            user_tokens,
            domains,
        };
        // A tenant token must say when it was issued, so it can be tied to one incarnation.
        let iat = claims
            .iat
            .ok_or(AuthError::Unauthorized("jwt lacks a required claim".into()))?;
        tenant_scope(creds, &tenant, Incarnation::IssuedAt(iat), grant, actor)
    }

    /// Mints a key (see [`keys::create_key`]), writing `audit`'s row with it.
    pub fn create_key(
        &self,
        store: CredentialStore<'_>,
        op: &OperatorScope,
        new: NewKey,
        audit: &KeyAudit<'_>,
    ) -> Result<CreatedKey, AuthError> {
        if let Some(why) = binding_problem(
            "user_tokens",
            new.user_tokens.as_deref(),
            self.max_user_tokens,
            "engine.limits.max_user_tokens",
        )
        .or_else(|| {
            binding_problem(
                "domains",
                new.domains.as_deref(),
                MAX_BOUND_DOMAINS,
                "the most domains a credential binds",
            )
        }) {
            return Err(AuthError::BadRequest(why));
        }
        keys::create_key(store, op, new, audit)
    }

    pub fn list_keys(
        &self,
        store: CredentialStore<'_>,
        op: &OperatorScope,
        tenant: Option<&KeyTenant>,
    ) -> Result<Vec<KeyInfo>, AuthError> {
        keys::list_keys(store, op, tenant)
    }

    /// Revokes a key (see [`keys::revoke_key`]), writing `audit`'s row with it.
    pub fn revoke_key(
        &self,
        store: CredentialStore<'_>,
        op: &OperatorScope,
        id: &str,
        audit: &KeyAudit<'_>,
    ) -> Result<KeyInfo, AuthError> {
        keys::revoke_key(store, op, id, audit)
    }

    /// Rotates a key (see [`keys::rotate_key`]), writing `audit`'s rows with it.
    pub fn rotate_key(
        &self,
        store: CredentialStore<'_>,
        op: &OperatorScope,
        id: &str,
        rotation: keys::Rotation,
        audit: &KeyAudit<'_>,
    ) -> Result<keys::RotatedKey, AuthError> {
        keys::rotate_key(store, op, id, rotation, audit)
    }

    /// Whose key `id` is, if it is a key.
    pub fn key_tenant(
        &self,
        store: CredentialStore<'_>,
        _op: &OperatorScope,
        id: &str,
    ) -> Result<Option<KeyTenant>, AuthError> {
        keys::key_tenant(store, id)
    }
}

/// What ties a credential to one incarnation of its tenant (docs/isolation.md, rule 8): a tenant
/// deleted and created again under the same id is a new tenant, and nothing issued for the old
/// one may act on it.
enum Incarnation {
    /// An API key's row names the storage key of the incarnation it was minted for; storage
    /// keys are never reused.
    Key(TenantKey),
    /// A JWT's `iat` (seconds): it must not predate the second the incarnation was created
    /// in, without leeway, so a client may mint a token right after creating its tenant. A
    /// token of an earlier incarnation carries at latest the second its purge ended in, and the
    /// engine creates an id again only in a later second than that (`recent_purges`), so the
    /// two never meet.
    IssuedAt(i64),
}

impl Incarnation {
    fn matches(&self, key: TenantKey, created_at: Millis) -> bool {
        match *self {
            Incarnation::Key(owner) => owner == key,
            Incarnation::IssuedAt(iat) => iat >= created_at.div_euclid(1000),
        }
    }
}

/// Builds a tenant scope from the registry, so the scope carries the tenant's storage key. A
/// credential for a tenant that no longer exists, or for an earlier incarnation of it, is
/// simply invalid.
fn tenant_scope(
    creds: CredentialStore<'_>,
    tenant: &TenantId,
    incarnation: Incarnation,
    grant: Grant,
    actor: String,
) -> Result<Principal, AuthError> {
    let meta = creds.tenant(tenant)?.ok_or(AuthError::Unauthorized(
        "credential names an unknown tenant".into(),
    ))?;
    if !incarnation.matches(meta.key, meta.created_at) {
        return Err(AuthError::Unauthorized(
            "credential was issued for a deleted tenant of the same id".into(),
        ));
    }
    Ok(Principal::Tenant(TenantScope::new(&meta, grant, actor)))
}

#[cfg(test)]
#[path = "authenticator_tests.rs"]
mod tests;
