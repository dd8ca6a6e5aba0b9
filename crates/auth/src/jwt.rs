//! JWT verification against configured keys: HS256 with a shared secret and EdDSA (Ed25519)
//! with a public key.
//!
//! The verifying key is chosen by the token's `alg` header, and each key accepts exactly one
//! algorithm, so a token cannot pick how it is checked: `none` does not parse, an HS256 token
//! signed with the public key is checked against the HMAC secret (and fails), and any other
//! algorithm is refused. `exp` is required, and so are `iss` and `aud` when an issuer or an
//! audience is configured.

use std::borrow::Cow;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use strata_types::now_millis;

use crate::{AuthConfig, AuthError, Permissions};

/// Shortest HS256 secret accepted: RFC 7518 asks for a key at least as long as the hash.
const MIN_HS256_SECRET: usize = 32;

/// The most clock skew `jwt_leeway_secs` may grant: a hard-deleted tenant id waits that long
/// (and a second) before it can be created again.
const MAX_LEEWAY_SECS: u64 = 300;

/// The claims Strata reads. Unknown claims are ignored (issuers add their own), except one
/// spelled like a claim Strata reads but not exactly (see [`misspelt_claim`]).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Claims {
    /// Tenant id, or `*` for an operator token (which also needs `admin`).
    pub tenant: String,
    /// Absent or `null`: none (a label for the audit log only).
    #[serde(default)]
    pub sub: Option<String>,
    // The grants are `None` only when absent: a present `null` is refused (see [`present`]),
    // since an unbound `user_tokens` or `domains` grants every principal, and absent
    // `permissions` grant read and write.
    /// Absent: `read` and `write`, like a plain key.
    #[serde(default, deserialize_with = "present")]
    pub permissions: Option<Permissions>,
    #[serde(default, deserialize_with = "present")]
    pub user_tokens: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    pub domains: Option<Vec<String>>,
    /// Issued-at, in seconds. Required for tenant tokens: it ties the token to the tenant
    /// incarnation that existed when it was issued (a `null` one is then missing).
    #[serde(default)]
    pub iat: Option<i64>,
    /// Every other claim, by name only.
    #[serde(flatten)]
    others: std::collections::HashMap<String, serde::de::IgnoredAny>,
}

/// Decodes a claim that is present, refusing `null`: serde would read a `null` as `None`, the
/// same as an absent claim, and an absent `user_tokens` or `domains` leaves a token unbound.
/// An absent claim never reaches this (`#[serde(default)]` makes it `None`).
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    match Option::<T>::deserialize(d)? {
        Some(v) => Ok(Some(v)),
        None => Err(serde::de::Error::custom(NULL_CLAIM)),
    }
}

/// The reason logged for a token with a `null` claim.
const NULL_CLAIM: &str = "jwt has a grant set to null (permissions, user_tokens and domains \
                          must be left out or hold a value; a null binding is not read as \
                          unbound)";

/// The claims Strata reads, by name.
const READ_CLAIMS: [&str; 6] = [
    "tenant",
    "sub",
    "permissions",
    "user_tokens",
    "domains",
    "iat",
];

/// Longest part of a refused claim's name quoted in the log reason: the name is the issuer's
/// (or an attacker's) text, of any length.
const MAX_QUOTED_CLAIM: usize = 64;

/// A claim name reduced to what a near miss keeps of it: ASCII letters and digits only, lower
/// case (so case, `_`, `-`, spaces, zero-width and other unicode characters, punctuation all
/// vanish), without a leading `memory` (`memory_domains` is what Strata calls a domain in
/// requests) and without a plural `s` (`user_token`, `domain`, `permission`).
fn near_miss_form(name: &str) -> String {
    let folded: String = name
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let rest = folded.strip_prefix("memory").unwrap_or(&folded);
    rest.strip_suffix('s').unwrap_or(rest).to_owned()
}

/// A claim named like one Strata reads but spelled otherwise (`Domains`, `userTokens`,
/// `user_tokens ` with a trailing space, `user_token`, `memory_domains`): ignoring it would
/// fail open — a binding the issuer meant to set would be missing, and the token would act for
/// the whole tenant — so the token is refused. Claims of other meanings (`email`, `name`,
/// `scope`, `groups`) reduce to other forms and are ignored.
fn misspelt_claim(claims: &Claims) -> Option<&str> {
    let read: Vec<String> = READ_CLAIMS.iter().map(|r| near_miss_form(r)).collect();
    claims
        .others
        .keys()
        .find(|k| read.contains(&near_miss_form(k)))
        .map(String::as_str)
}

/// A claim's name as the log may show it: escaped (so a control or invisible character is
/// seen, not obeyed) and cut to [`MAX_QUOTED_CLAIM`] characters.
fn quoted(name: &str) -> String {
    let escaped: String = name.escape_debug().take(MAX_QUOTED_CLAIM).collect();
    format!("\"{escaped}\"")
}

/// The configured JWT keys.
pub(crate) struct JwtVerifier {
    hs256: Option<DecodingKey>,
    eddsa: Option<DecodingKey>,
    leeway_secs: u64,
    issuer: Option<String>,
    audience: Option<String>,
}

impl JwtVerifier {
    pub fn new(config: &AuthConfig) -> Result<Self, AuthError> {
        let hs256 = match &config.jwt_hs256_secret {
            Some(s) if s.len() < MIN_HS256_SECRET => {
                return Err(AuthError::Config(format!(
                    "jwt_hs256_secret: at least {MIN_HS256_SECRET} bytes"
                )));
            }
            Some(s) => Some(DecodingKey::from_secret(s.as_bytes())),
            None => None,
        };
        let eddsa = match &config.jwt_eddsa_public_key {
            Some(pem) => Some(DecodingKey::from_ed_pem(pem.as_bytes()).map_err(|e| {
                AuthError::Config(format!("jwt_eddsa_public_key: not an Ed25519 PEM key: {e}"))
            })?),
            None => None,
        };
        if config.jwt_leeway_secs > MAX_LEEWAY_SECS {
            return Err(AuthError::Config(format!(
                "jwt_leeway_secs: at most {MAX_LEEWAY_SECS} (a tenant id hard-deleted is created \
                 again only that long after, so that no token of the old tenant names the new one)"
            )));
        }
        Ok(JwtVerifier {
            hs256,
            eddsa,
            leeway_secs: config.jwt_leeway_secs,
            issuer: config.jwt_issuer.clone(),
            audience: config.jwt_audience.clone(),
        })
    }

    /// Whether any key is configured (otherwise every JWT is refused).
    pub fn enabled(&self) -> bool {
        self.hs256.is_some() || self.eddsa.is_some()
    }

    /// Verifies signature, algorithm and time claims, and returns the claims.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| AuthError::Unauthorized("malformed jwt or unsupported alg".into()))?;
        let (key, alg) = match header.alg {
            Algorithm::HS256 => (self.hs256.as_ref(), Algorithm::HS256),
            Algorithm::EdDSA => (self.eddsa.as_ref(), Algorithm::EdDSA),
            _ => (None, header.alg),
        };
        let key = key.ok_or(AuthError::Unauthorized("jwt alg not accepted".into()))?;
        // RFC 7515 section 4.1.11: a recipient that does not understand a `crit` extension
        // must reject the token. Strata understands none.
        if header.crit.is_some() {
            return Err(AuthError::Unauthorized(
                "jwt crit names an unknown extension".into(),
            ));
        }
        let mut v = Validation::new(alg);
        v.algorithms = vec![alg];
        v.leeway = self.leeway_secs;
        v.validate_exp = true;
        v.validate_nbf = true;
        // A configured issuer or audience is required, not merely checked when present: the
        // library skips the check of a claim that is absent, `null` or not a string, so a
        // token without one would pass as if it named the right one.
        let mut required = vec!["exp"];
        match &self.audience {
            Some(aud) => {
                v.set_audience(&[aud]);
                required.push("aud");
            }
            None => v.validate_aud = false,
        }
        if let Some(iss) = &self.issuer {
            v.set_issuer(&[iss]);
            required.push("iss");
        }
        v.set_required_spec_claims(&required);
        let claims = jsonwebtoken::decode::<Claims>(token, key, &v)
            .map(|d| d.claims)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                AuthError::Unauthorized(Cow::Borrowed(match e.kind() {
                    ErrorKind::Json(j) if j.to_string().contains(NULL_CLAIM) => NULL_CLAIM,
                    ErrorKind::ExpiredSignature => "expired jwt",
                    ErrorKind::InvalidSignature => "jwt signature does not verify",
                    ErrorKind::MissingRequiredClaim(c) => match c.as_str() {
                        "iss" => "jwt lacks the configured issuer (claim iss absent or not a string)",
                        "aud" => "jwt lacks the configured audience (claim aud absent or not a string or list)",
                        _ => "jwt lacks a required claim (exp)",
                    },
                    ErrorKind::InvalidIssuer => "jwt iss is not the configured issuer",
                    ErrorKind::InvalidAudience => "jwt aud does not name the configured audience",
                    ErrorKind::InvalidAlgorithm => "jwt alg not accepted",
                    _ => "invalid jwt",
                }))
            })?;
        if let Some(name) = misspelt_claim(&claims) {
            return Err(AuthError::Unauthorized(
                format!(
                    "jwt claim {} is spelled like one Strata reads but not exactly (claims are \
                     case-sensitive: tenant, sub, permissions, user_tokens, domains, iat)",
                    quoted(name)
                )
                .into(),
            ));
        }
        // A token issued in the future would match every later incarnation of its tenant.
        let now = (now_millis() / 1000).saturating_add(self.leeway_secs as i64);
        if claims.iat.is_some_and(|iat| iat > now) {
            return Err(AuthError::Unauthorized("jwt issued in the future".into()));
        }
        Ok(claims)
    }
}

/// Whether a bearer token is shaped like a JWT (three dot-separated parts).
pub(crate) fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}

#[cfg(test)]
#[path = "jwt_tests.rs"]
mod tests;
